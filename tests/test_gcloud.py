"""Google's own clients as test drivers: gcloud (where installed) and the discovery-based client.

These are the commands a person runs to look at a batch and repair it by hand. They parse every
response with Google's generated classes (base64 ``bytes``, enums, int64), ask for what the product
never does (aggregated lists, autoscalers, instance groups), and poll operations their own way, so
they catch what a product-shaped emulator would let through.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from google.oauth2.credentials import Credentials

from sinergym_cloud.gcp.compute import ComputeApi
from tests.conftest import Cloud, new_batch_id, wait_for

PROJECT = "local-project"
ZONE = "europe-west1-b"
TEMPLATE = "sinergym-template"

Gcloud = Callable[..., Any]


@pytest.fixture(scope="session")
def gcloud(cloud: Cloud, tmp_path_factory: pytest.TempPathFactory) -> Gcloud:
    """Run ``gcloud ARGS --format=json`` with the local cloud's environment and a throwaway config, as
    a project owner (the admin's credential: these tests make groups, which operators may not)."""
    binary = shutil.which("gcloud")
    assert binary is not None, "the tests that use this fixture are marked needs('gcloud')"
    config = tmp_path_factory.mktemp("gcloud-config")
    owner = config / "owner.token"
    owner.write_text(cloud.local.token("admin"))
    env = {
        **os.environ,
        **cloud.env,
        "CLOUDSDK_AUTH_ACCESS_TOKEN_FILE": str(owner),
        "CLOUDSDK_CONFIG": str(config),
        "CLOUDSDK_CORE_DISABLE_PROMPTS": "1",
        "CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK": "1",
        "CLOUDSDK_CORE_DISABLE_USAGE_REPORTING": "1",
    }

    def run(*args: str, ok: bool = True, fmt: str | None = "json") -> Any:
        argv = [binary, *args] + ([f"--format={fmt}"] if fmt else [])
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=180)
        if ok:
            assert done.returncode == 0, f"gcloud {' '.join(args)} failed:\n{done.stderr[-2000:]}"
        if not ok:
            return done
        return json.loads(done.stdout) if fmt == "json" and done.stdout.strip() else done.stdout

    return run


@pytest.mark.needs("gcloud")
def test_gcloud_looks_at_and_repairs_a_group(cloud: Cloud, gcloud: Gcloud) -> None:
    group = f"g-{new_batch_id()}"
    zone = ["--zone", ZONE]
    mig = ["compute", "instance-groups", "managed"]
    gcloud(*mig, "create", group, "--template", TEMPLATE, "--size", "1", *zone)
    gcloud(*mig, "wait-until", group, "--stable", "--timeout", "300", *zone, fmt=None)
    described = gcloud(*mig, "describe", group, *zone)
    assert described["name"] == group and described["targetSize"] == 1 and described["status"]["isStable"]
    listed = gcloud(*mig, "list", "--filter", f"name={group}")  # aggregated: no --zones
    assert [g["name"] for g in listed] == [group] and int(listed[0]["size"]) == 1  # gcloud prints it as text
    assert [g["name"] for g in gcloud(*mig, "list", "--zones", ZONE, "--filter", f"name={group}")] == [group]
    gcloud(*mig, "create-instance", group, "--instance", f"{group}-named", *zone)
    gcloud(*mig, "resize", group, "--size", "3", *zone)
    gcloud(*mig, "wait-until", group, "--stable", "--timeout", "300", *zone, fmt=None)
    members = gcloud(*mig, "list-instances", group, *zone)
    assert len(members) == 3 and f"{group}-named" in {m["instance"].rsplit("/", 1)[-1] for m in members}
    assert {m["instanceStatus"] for m in members} == {"RUNNING"}
    assert gcloud(*mig, "list-errors", group, *zone) == []
    gcloud(*mig, "delete-instances", group, "--instances", f"{group}-named", *zone)
    # A non-member: the operation fails, and gcloud reports Compute Engine's reason.
    refused = gcloud(*mig, "delete-instances", group, "--instances", f"{group}-stranger", *zone, ok=False)
    assert refused.returncode != 0 and "not a member" in refused.stderr
    assert gcloud(*mig, "describe", group, *zone)["targetSize"] == 2
    gcloud(*mig, "delete", group, *zone, fmt=None)
    assert ComputeApi(cloud.runtime().clients, PROJECT).members(ZONE, group) is None


@pytest.mark.needs("gcloud")
def test_gcloud_instances_templates_and_operations(cloud: Cloud, gcloud: Gcloud) -> None:
    api = ComputeApi(cloud.runtime().clients, PROJECT)
    group = f"g-{new_batch_id()}"
    api.ensure_group(ZONE, group, TEMPLATE)
    api.create_instances(ZONE, group, {f"{group}-0": {"sinergym-batch-id": "b1"}})
    wait_for(lambda: (m := api.members(ZONE, group)) and m[0].status == "RUNNING", 120, "the VM running")
    for where in ([], ["--zones", ZONE]):
        found = gcloud("compute", "instances", "list", "--filter", f"name={group}-0", *where)
        assert [i["name"] for i in found] == [f"{group}-0"] and found[0]["status"] == "RUNNING"
    instance = gcloud("compute", "instances", "describe", f"{group}-0", "--zone", ZONE)
    metadata = {i["key"]: i["value"] for i in instance["metadata"]["items"]}
    assert metadata["sinergym-batch-id"] == "b1" and instance["disks"][0]["boot"] is True
    assert TEMPLATE in {t["name"] for t in gcloud("compute", "instance-templates", "list")}
    template = gcloud("compute", "instance-templates", "describe", TEMPLATE)
    assert template["properties"]["scheduling"]["provisioningModel"] == "SPOT"
    operations = gcloud("compute", "operations", "list", "--filter", f"targetLink~{group}")
    assert {o["operationType"] for o in operations} >= {
        "compute.instanceGroupManagers.insert",
        "compute.instanceGroupManagers.createInstances",
    }
    one = gcloud("compute", "operations", "describe", operations[0]["name"], "--zone", ZONE)
    assert one["status"] == "DONE" and one["progress"] == 100
    assert api.delete_group(ZONE, group)


@pytest.mark.needs("gcloud")
def test_gcloud_reads_region_quotas_zones_and_machine_types(cloud: Cloud, gcloud: Gcloud) -> None:
    # What a person checks before sizing a study: the region's quotas, as the product reads them too.
    cloud.emulator("config", {"quotas": {"CPUS": 24, "N2_CPUS": 24}, "quota_instances": 3})
    region = gcloud("compute", "regions", "describe", "europe-west1")
    found = {q["metric"]: q for q in region["quotas"]}
    assert (found["CPUS"]["limit"], found["N2_CPUS"]["limit"], found["INSTANCES"]["limit"]) == (24.0, 24.0, 3.0)
    assert found["CPUS"]["usage"] >= 0 and region["status"] == "UP"
    assert any(z.endswith(f"zones/{ZONE}") for z in region["zones"])
    assert "europe-west1" in {r["name"] for r in gcloud("compute", "regions", "list")}
    assert gcloud("compute", "zones", "describe", ZONE)["region"].endswith("regions/europe-west1")
    machine = gcloud("compute", "machine-types", "describe", "n2-highcpu-8", "--zone", ZONE)
    assert (machine["guestCpus"], machine["memoryMb"]) == (8, 8192)
    missing = gcloud("compute", "regions", "describe", "mars-north1", ok=False, fmt=None)
    assert missing.returncode != 0 and "mars-north1" in missing.stderr


@pytest.mark.needs("gcloud")
def test_gcloud_pubsub_publish_and_pull(cloud: Cloud, gcloud: Gcloud) -> None:
    rt = cloud.runtime()
    topic = f"t-{new_batch_id()}"
    rt.clients.publisher.create_topic(name=rt.clients.topic_path(topic))
    sub = f"{topic}-sub"
    rt.clients.subscriber.create_subscription(
        name=f"projects/{PROJECT}/subscriptions/{sub}", topic=rt.clients.topic_path(topic)
    )
    published = gcloud("pubsub", "topics", "publish", topic, "--message", "hello", "--attribute", "kind=probe")
    pulled = wait_for(
        lambda: gcloud("pubsub", "subscriptions", "pull", sub, "--auto-ack", "--limit", "10"), 30, "the message"
    )
    message = pulled[0]["message"]
    assert message["messageId"] == published["messageIds"][0]
    assert message["attributes"] == {"kind": "probe"} and message["data"] == "aGVsbG8="


@pytest.mark.needs("gcloud")
def test_gcloud_storage_ls_cp_cat_rm(cloud: Cloud, gcloud: Gcloud, tmp_path: Path) -> None:
    prefix = f"gs://{cloud.settings.results_bucket}/manual-{uuid.uuid4().hex[:8]}"
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "a.txt").write_text("alpha")
    (tmp_path / "d" / "sub" / "b.txt").write_text("beta")
    gcloud("storage", "cp", str(tmp_path / "d" / "a.txt"), f"{prefix}/a.txt", fmt=None)
    assert gcloud("storage", "cat", f"{prefix}/a.txt", fmt=None) == "alpha"
    gcloud("storage", "cp", "-r", str(tmp_path / "d"), f"{prefix}/tree", fmt=None)
    listed = gcloud("storage", "ls", "-r", f"{prefix}/tree", fmt=None).split()
    assert f"{prefix}/tree/sub/b.txt" in listed and f"{prefix}/tree/a.txt" in listed  # like cp -r to a new name
    gcloud("storage", "rm", f"{prefix}/a.txt", fmt=None)
    gone = gcloud("storage", "cat", f"{prefix}/a.txt", ok=False, fmt=None)
    assert gone.returncode != 0


def test_the_fake_gcs_differences_the_front_bridges_are_real(cloud: Cloud) -> None:
    # Shown on fake-gcs-server itself, so that a version that fixes them makes this test fail
    # (and the front can stop bridging it).
    ports = cloud.local.info()["ports"]  # type: ignore[index]
    direct, front = f"http://127.0.0.1:{ports['gcs']}", f"http://127.0.0.1:{ports['gcs-front']}"
    bucket = cloud.settings.results_bucket
    for base in (direct, front):
        cloud.runtime().clients.storage.bucket(bucket).blob("probe/x").upload_from_string("x")
        deleted = cloud.http.delete(f"{base}/storage/v1/b/{bucket}/o/probe%2Fx", timeout=10)
        layout = cloud.http.get(f"{base}/storage/v1/b/{bucket}/storageLayout", timeout=10)
        if base == direct:
            assert (deleted.status_code, deleted.text.strip()) == (200, "null")
            assert layout.status_code == 404
        else:
            assert (deleted.status_code, deleted.content) == (204, b"")
            assert layout.status_code == 200 and layout.json()["hierarchicalNamespace"] == {"enabled": False}
    assert cloud.http.get(f"{front}/storage/v1/b/no-such-bucket/storageLayout", timeout=10).status_code == 404


def test_the_discovery_client_drives_the_group_round_trip(cloud: Cloud) -> None:
    from googleapiclient import discovery

    compute = discovery.build(
        "compute",
        "v1",
        credentials=Credentials(cloud.local.token("admin")),  # the harness acts as Terraform
        client_options={"api_endpoint": f"{cloud.compute_url}/compute/v1/"},
        static_discovery=True,
        cache_discovery=False,
    )
    group = f"g-{new_batch_id()}"
    migs = compute.instanceGroupManagers()

    def wait(op: dict[str, Any]) -> dict[str, Any]:
        done = compute.zoneOperations().wait(project=PROJECT, zone=ZONE, operation=op["name"]).execute()
        assert done["status"] == "DONE" and "error" not in done, done
        return dict(done)

    body = {"name": group, "baseInstanceName": group, "instanceTemplate": f"global/instanceTemplates/{TEMPLATE}"}
    wait(migs.insert(project=PROJECT, zone=ZONE, body=body, requestId=str(uuid.uuid4())).execute())
    wait(
        migs.createInstances(
            project=PROJECT,
            zone=ZONE,
            instanceGroupManager=group,
            body={"instances": [{"name": f"{group}-0", "preservedState": {"metadata": {"k": "v"}}}]},
        ).execute()
    )
    wait_for(
        lambda: migs.get(project=PROJECT, zone=ZONE, instanceGroupManager=group).execute()["status"]["isStable"],
        300,
        "the group stable",
        every=0.5,
    )
    managed = migs.listManagedInstances(project=PROJECT, zone=ZONE, instanceGroupManager=group).execute()
    assert [(m["name"], m["currentAction"]) for m in managed["managedInstances"]] == [(f"{group}-0", "NONE")]
    vm = compute.instances().get(project=PROJECT, zone=ZONE, instance=f"{group}-0").execute()
    assert vm["status"] == "RUNNING"
    wait(
        migs.deleteInstances(
            project=PROJECT,
            zone=ZONE,
            instanceGroupManager=group,
            body={"instances": [vm["selfLink"]], "skipInstancesOnValidationError": True},
        ).execute()
    )
    wait(migs.delete(project=PROJECT, zone=ZONE, instanceGroupManager=group).execute())
    aggregated = compute.instanceGroupManagers().aggregatedList(project=PROJECT).execute()
    assert group not in {
        g["name"] for scope in aggregated["items"].values() for g in scope.get("instanceGroupManagers", [])
    }


@pytest.mark.needs("gcloud")
def test_an_operators_gcloud_looks_but_makes_no_group(cloud: Cloud, tmp_path: Path) -> None:
    """With `. .local/env` alone (the operator's credential, operators.tf's grants): gcloud lists the
    groups; creating one is refused with Compute Engine's 403 naming the permission."""
    binary = shutil.which("gcloud")
    assert binary is not None
    env = {**os.environ, **cloud.env, "CLOUDSDK_CONFIG": str(tmp_path), "CLOUDSDK_CORE_DISABLE_PROMPTS": "1",
           "CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK": "1"}  # fmt: skip
    mig = [binary, "compute", "instance-groups", "managed"]
    listed = subprocess.run([*mig, "list", "--format=json"], env=env, capture_output=True, text=True, timeout=180)
    assert listed.returncode == 0, listed.stderr[-2000:]
    made = subprocess.run([*mig, "create", f"g-{new_batch_id()}", "--template", TEMPLATE, "--size", "1",
                           "--zone", ZONE], env=env, capture_output=True, text=True, timeout=180)  # fmt: skip
    assert made.returncode != 0 and "compute.instanceGroupManagers.create" in made.stderr, made.stderr[-2000:]
