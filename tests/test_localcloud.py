"""The local cloud, driven by the official Google client libraries, as the product drives Google Cloud."""

from __future__ import annotations

import getpass
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import paramiko
import pytest
from google.api_core import exceptions
from google.cloud import compute_v1, monitoring_v3

from localcloud import ports, procs
from localcloud.cloud import LocalCloud, Options
from sinergym_cloud import names
from sinergym_cloud.gcp import compute, metrics, ssh
from sinergym_cloud.gcp.compute import ComputeApi
from tests.conftest import REPO, Cloud, new_batch_id, wait_for

PROJECT = "local-project"
ZONE = "europe-west1-b"


def test_pubsub_publish_and_pull(cloud: Cloud) -> None:
    rt = cloud.runtime()
    topic = f"t-{new_batch_id()}"
    rt.clients.publisher.create_topic(name=rt.clients.topic_path(topic))
    sub = f"projects/{PROJECT}/subscriptions/{topic}-sub"
    rt.clients.subscriber.create_subscription(name=sub, topic=rt.clients.topic_path(topic))
    rt.clients.publish(topic, b"hello", kind="test")
    response = rt.clients.subscriber.pull(subscription=sub, max_messages=1, timeout=10)
    assert response.received_messages[0].message.data == b"hello"
    assert response.received_messages[0].message.attributes["kind"] == "test"


def test_open_publisher_connects_now_and_does_not_raise_when_it_cannot(cloud: Cloud) -> None:
    from sinergym_cloud.config import Settings
    from sinergym_cloud.gcp.clients import Clients

    assert Clients(Settings.from_env(dict(cloud.env))).open_publisher(timeout=30)  # True only once READY
    nowhere = {**cloud.env, "PUBSUB_EMULATOR_HOST": f"127.0.0.1:{ports.free_port()}"}  # nothing listens there
    started = time.monotonic()
    assert not Clients(Settings.from_env(nowhere)).open_publisher(timeout=0.5)
    assert time.monotonic() - started < 10  # it gave up at its timeout instead of waiting on


LEAN_TRAINER = """
import json, os, sys
import trainer.run
from sinergym_cloud.gcp.clients import Clients
from sinergym_cloud.config import Settings
clients = Clients(Settings.from_env(dict(os.environ)))
message_id = clients.publish(sys.argv[1], b"from a trainer")
clients.storage.bucket(sys.argv[2]).reload()
print(json.dumps({"id": message_id, "loaded": sorted(m for m in sys.modules if m.startswith("google.cloud."))}))
"""


def test_trainer_publishes_and_stores_without_loading_compute_or_monitoring(cloud: Cloud) -> None:
    # compute_v1 alone costs 1.3 s of CPU to import; fifty trainers starting at once on one machine
    # would pay it fifty times. A trainer only needs Pub/Sub and Storage.
    rt = cloud.runtime()
    topic = f"t-{new_batch_id()}"
    rt.clients.publisher.create_topic(name=rt.clients.topic_path(topic))
    out = subprocess.run(
        [sys.executable, "-c", LEAN_TRAINER, topic, rt.settings.state_bucket],
        env={**os.environ, **cloud.admin_env},  # what is loaded is the question here, not who may
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["id"]
    assert "google.cloud.pubsub_v1" in report["loaded"]
    assert "google.cloud.storage" in report["loaded"]
    assert not [m for m in report["loaded"] if m.startswith(("google.cloud.compute", "google.cloud.monitoring"))]


def test_push_delivers_a_cloudevent_to_the_function_which_dead_letters_a_bad_batch(cloud: Cloud) -> None:
    rt = cloud.runtime()
    rt.clients.publish(names.TOPIC_BATCHES, b'{"batch_id": "x", "experiments": "not a list"}', probe="push")
    letters = wait_for(lambda: cloud.dead_letters(names.TOPIC_BATCHES, wait=1), 30, "the dead letter")
    letter = next(m for m in letters if m["attributes"].get("probe") == "push")
    assert "experiments" in letter["attributes"]["dead_letter_reason"]
    assert letter["attributes"]["dead_letter_source_topic"] == names.TOPIC_BATCHES


def test_storage_crud_and_generation_preconditions(cloud: Cloud) -> None:
    client = cloud.runtime().clients.storage
    bucket = client.create_bucket(f"b-{new_batch_id()}")
    blob = bucket.blob("a/b.json")
    blob.upload_from_string("1", if_generation_match=0)
    generation = blob.generation
    with pytest.raises(exceptions.PreconditionFailed):
        bucket.blob("a/b.json").upload_from_string("2", if_generation_match=0)
    blob.upload_from_string("3", if_generation_match=generation)
    with pytest.raises(exceptions.PreconditionFailed):  # the generation we read is stale now
        bucket.blob("a/b.json").upload_from_string("4", if_generation_match=generation)
    assert bucket.blob("a/b.json").download_as_bytes() == b"3"
    assert [b.name for b in client.list_blobs(bucket, prefix="a/")] == ["a/b.json"]
    bucket.blob("a/b.json").delete()
    with pytest.raises(exceptions.NotFound):
        bucket.blob("a/b.json").download_as_bytes()


def _ssh_ok(cloud: Cloud, port: int, fingerprint: str) -> str:
    key = ssh.private_key(cloud.runtime().settings)
    result = ssh.run(
        "127.0.0.1",
        port,
        user=getpass.getuser(),
        key=key,
        expected_fingerprint=fingerprint,
        argv=["sh", "-c", "echo up $SINERGYM_VM_HOME"],
    )
    return result.stdout


def test_mig_round_trip_with_real_sshd(cloud: Cloud) -> None:
    rt = cloud.runtime()
    api = ComputeApi(rt.clients, PROJECT)
    group = f"g-{new_batch_id()}"
    assert api.ensure_group(ZONE, group, "sinergym-template") is True
    assert api.ensure_group(ZONE, group, "sinergym-template") is False  # 409 -> already there
    wanted = {f"{group}-{i}": {"sinergym-batch-id": "x", "sinergym-experiment-index": str(i)} for i in range(2)}
    first = f"{group}-0"
    assert api.create_instances(ZONE, group, {first: wanted[first]}) == [first]
    # The group refuses the name it has (409): listed, and only the missing one asked for.
    assert api.create_instances(ZONE, group, wanted) == [f"{group}-1"]
    assert api.create_instances(ZONE, group, wanted) == []  # idempotent
    members = wait_for(
        lambda: (m := api.members(ZONE, group)) and all(x.status == "RUNNING" and x.action == "NONE" for x in m) and m,
        30,
        "both VMs RUNNING",
    )
    assert sorted(m.name for m in members) == sorted(wanted)
    instance = rt.clients.instances.get(project=PROJECT, zone=ZONE, instance=f"{group}-0")
    metadata = {i.key: i.value for i in instance.metadata.items}
    assert metadata["sinergym-experiment-index"] == "0"
    assert metadata["created-by"].endswith(f"/instanceGroupManagers/{group}")
    vm = wait_for(lambda: (v := cloud.instances().get(f"{ZONE}/{group}-0")) and v["ready"] and v, 30, "VM ready")
    host_key = Path(vm["home"]) / "ssh_host_ed25519_key.pub"
    fingerprint = ssh.public_key_fingerprint(host_key.read_text())
    assert f"up {vm['home']}" in _ssh_ok(cloud, vm["ssh_port"], fingerprint)
    with pytest.raises(ssh.HostKeyMismatch):
        _ssh_ok(cloud, vm["ssh_port"], "SHA256:" + "A" * 43)
    # Compute's own record of the VM: its host key in the guest attributes (Google's response shape,
    # through the official client), its address and, on the emulator only, its sshd's port label.
    attrs = rt.clients.instances.get_guest_attributes(
        request=compute_v1.GetGuestAttributesInstanceRequest(
            project=PROJECT, zone=ZONE, instance=f"{group}-0", query_path="hostkeys/"
        )
    )
    assert attrs.query_path == "hostkeys/" and attrs.self_link.endswith(
        f"/instances/{group}-0/guestAttributes/hostkeys/"
    )
    items = [(i.namespace, i.key, i.value) for i in attrs.query_value.items]
    assert items == [("hostkeys", "ssh-ed25519", host_key.read_text().split()[1])]
    one = rt.clients.instances.get_guest_attributes(
        request=compute_v1.GetGuestAttributesInstanceRequest(
            project=PROJECT, zone=ZONE, instance=f"{group}-0", variable_key="hostkeys/ssh-ed25519"
        )
    )
    assert one.variable_value == items[0][2]
    with pytest.raises(exceptions.NotFound):
        rt.clients.instances.get_guest_attributes(
            request=compute_v1.GetGuestAttributesInstanceRequest(
                project=PROJECT, zone=ZONE, instance=f"{group}-0", variable_key="hostkeys/ssh-rsa"
            )
        )
    host = compute.describe_host(api, ZONE, f"{group}-0")
    assert host is not None and (host.group, host.address, host.ssh_port) == (group, "127.0.0.1", vm["ssh_port"])
    assert host.status == "RUNNING" and vm["boot_id"].startswith(f"{host.id}-")
    vm_pid = vm["pid"]
    assert api.delete_instances(ZONE, group, [f"{group}-0"])
    wait_for(lambda: {m.name for m in api.members(ZONE, group) or []} == {f"{group}-1"}, 30, "VM 0 removed")
    assert procs.start_time(vm_pid) is None or procs.is_zombie(vm_pid)
    with pytest.raises((OSError, paramiko.SSHException)):
        _ssh_ok(cloud, vm["ssh_port"], fingerprint)
    assert api.delete_group(ZONE, group) is True
    assert api.members(ZONE, group) is None
    assert api.delete_group(ZONE, group) is False  # already gone


def test_google_shaped_errors_surface_as_client_exceptions(cloud: Cloud) -> None:
    rt = cloud.runtime()
    with pytest.raises(exceptions.NotFound) as info:
        rt.clients.instances.get(project=PROJECT, zone=ZONE, instance="no-such-vm")
    assert "was not found" in str(info.value)
    with pytest.raises(exceptions.Conflict):
        rt.clients.templates.insert_unary(
            project=PROJECT, instance_template_resource=compute_v1.InstanceTemplate(name="sinergym-template")
        )
    with pytest.raises(exceptions.BadRequest, match="Invalid value"):
        rt.clients.migs.insert_unary(
            project=PROJECT,
            zone=ZONE,
            instance_group_manager_resource=compute_v1.InstanceGroupManager(
                name="Bad_Name", instance_template="global/instanceTemplates/sinergym-template"
            ),
        )
    cloud.emulator(
        "faults",
        {"method": "instanceGroupManagers.get", "code": 403, "reason": "quotaExceeded", "message": "Quota exceeded"},
    )
    with pytest.raises(exceptions.Forbidden, match="Quota"):
        rt.clients.migs.get(project=PROJECT, zone=ZONE, instance_group_manager="anything")


def test_operations_wait_and_filters(cloud: Cloud) -> None:
    rt = cloud.runtime()
    group = f"g-{new_batch_id()}"
    op = rt.clients.migs.insert_unary(
        project=PROJECT,
        zone=ZONE,
        instance_group_manager_resource=compute_v1.InstanceGroupManager(
            name=group,
            base_instance_name=group,
            instance_template="global/instanceTemplates/sinergym-template",
            target_size=1,
        ),
    )
    done = rt.clients.zone_operations.wait(project=PROJECT, zone=ZONE, operation=op.name)
    assert done.status == compute_v1.Operation.Status.DONE
    wait_for(
        lambda: rt.clients.migs.get(project=PROJECT, zone=ZONE, instance_group_manager=group).status.is_stable,
        30,
        "stable",
    )
    listed = rt.clients.instances.list(
        request=compute_v1.ListInstancesRequest(project=PROJECT, zone=ZONE, filter=f"name eq {group}-.*")
    )
    assert [i.name.startswith(group) for i in listed] == [True]
    ComputeApi(rt.clients, PROJECT).delete_group(ZONE, group)


def test_metric_written_and_alert_delivered(cloud: Cloud) -> None:
    rt = cloud.runtime()
    batch_id = new_batch_id()
    labels = {"batch_id": batch_id, "group": "g", "succeeded": 2, "failed": 1, "cancelled": 0, "note": ""}
    metrics.batch_finished(rt.clients, labels)
    metrics.batch_finished(rt.clients, labels)  # a duplicate point
    raised = metrics.raised(rt.clients, batch_id)
    assert len(raised) == 2 and raised[0]["labels"]["succeeded"] == "2"
    alerts = [a for a in cloud.alerts() if a["incident"]["metric"]["labels"].get("batch_id") == batch_id]
    assert len(alerts) == 1, "one alert per batch, however many points"
    incident = alerts[0]["incident"]
    assert incident["policy_name"] == "Sinergym batch finished"
    assert f"Batch `{batch_id}`" in incident["documentation"]["content"]
    assert "2 succeeded, 1 failed" in incident["documentation"]["content"]
    policies = list(rt.clients.alert_policies.list_alert_policies(name=f"projects/{PROJECT}"))
    assert {p.display_name for p in policies} >= {"Sinergym batch finished", "Sinergym experiment failed"}


def test_monitoring_rejects_what_it_cannot_evaluate(cloud: Cloud) -> None:
    rt = cloud.runtime()
    with pytest.raises(exceptions.InvalidArgument):
        rt.clients.alert_policies.create_alert_policy(
            name=f"projects/{PROJECT}",
            alert_policy=monitoring_v3.AlertPolicy(
                display_name="x", conditions=[{"condition_threshold": {"filter": "metric.type > 3"}}]
            ),
        )


def test_mlflow_run_logged_and_read_back(cloud: Cloud) -> None:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=cloud.env["MLFLOW_TRACKING_URI"])
    experiment_id = client.create_experiment(f"e-{new_batch_id()}")
    run = client.create_run(experiment_id, run_name="probe")
    client.log_param(run.info.run_id, "alpha", "0.5")
    client.log_metric(run.info.run_id, "reward", -3.5, step=1)
    client.set_terminated(run.info.run_id)
    back = client.get_run(run.info.run_id)
    assert back.data.params["alpha"] == "0.5" and back.data.metrics["reward"] == -3.5


@pytest.mark.needs("gcloud")
def test_env_file_points_tools_at_the_local_cloud(cloud: Cloud) -> None:
    text = (cloud.local.dir / "env").read_text()
    for key in ("PUBSUB_EMULATOR_HOST", "STORAGE_EMULATOR_HOST", "MLFLOW_TRACKING_URI", "SINERGYM_COMPUTE_ENDPOINT"):
        assert f"export {key}=" in text
    script = f". {cloud.local.dir / 'env'} && gcloud pubsub topics list --format='value(name)'"
    gcloud = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)
    assert gcloud.returncode == 0, gcloud.stderr[-2000:]
    assert f"projects/{PROJECT}/topics/{names.TOPIC_BATCHES}" in gcloud.stdout


def test_local_up_then_down_leaves_no_process(tmp_path: Path) -> None:
    """`make local-up` then `make local-down`, through the CLI, with the processes checked in /proc."""
    env = {
        **os.environ,
        "LOCALCLOUD_DIR": str(tmp_path / "lc"),
        "LOCALCLOUD_PORT_BASE": "0",
        "LOCALCLOUD_SWEEP_INTERVAL": "1",
    }
    up = subprocess.run(
        [sys.executable, "-m", "localcloud", "up"], env=env, capture_output=True, text=True, timeout=180
    )
    assert up.returncode == 0, up.stderr
    info = json.loads((tmp_path / "lc" / "cloud.json").read_text())
    running = procs.marked(info["id"])
    assert len(running) >= 9, "pubsub, gcs, mlflow, monitoring, compute, 4 functions, scheduler"
    down = subprocess.run(
        [sys.executable, "-m", "localcloud", "down"], env=env, capture_output=True, text=True, timeout=120
    )
    assert down.returncode == 0, down.stderr
    left = [p for p in procs.marked(info["id"]) if not procs.is_zombie(p)]
    assert left == [], f"processes left behind: {left}"
    assert not (tmp_path / "lc" / "env").exists()


def test_down_after_a_crash_of_the_starter_still_stops_everything(tmp_path: Path) -> None:
    """Kill -9 whatever started the cloud, and a VM's init: pid files and the marker sweep still find all."""
    cloud = LocalCloud(tmp_path / "lc", Options(port_base=0, sweep_interval=0))
    env = cloud.up()
    cloud_id = cloud.info()["id"]  # type: ignore[index] - the cloud is up
    from sinergym_cloud.config import Settings
    from sinergym_cloud.gcp.clients import Clients

    try:
        api = ComputeApi(Clients(Settings.from_env({**env, "LOCALCLOUD_TOKEN": cloud.token("admin")})), PROJECT)
        api.ensure_group(ZONE, "crash", "sinergym-template")
        api.create_instances(
            ZONE, "crash", {"crash-0": {"sinergym-batch-id": "crash", "sinergym-experiment-index": "0"}}
        )
        state_url = f"{env['SINERGYM_COMPUTE_ENDPOINT']}/_emulator/state"
        import requests

        vm = wait_for(
            lambda: (
                (v := requests.get(state_url, timeout=5).json()["instances"].get(f"{ZONE}/crash-0"))
                and v["ready"]
                and v
            ),
            30,
            "VM up",
        )
    except BaseException:
        cloud.down()  # a failure before the crash below must not leave the cloud running
        raise
    # A process the VM started that left its process group (like a detached trainer).
    subprocess.run(["kill", "-9", str(procs.PidRecord.load(cloud.pid_dir / "compute.json").pid)], check=True)  # type: ignore[union-attr] - its pid file exists while the cloud is up
    os_pid = vm["pid"]
    assert procs.start_time(os_pid) is not None
    LocalCloud(tmp_path / "lc").down()
    time.sleep(0.2)
    left = [p for p in procs.marked(cloud_id) if not procs.is_zombie(p)]
    assert left == [], f"processes left behind: {left}"


def test_startup_failure_names_the_part_that_failed(tmp_path: Path) -> None:
    cloud = LocalCloud(tmp_path / "lc", Options(port_base=0, sweep_interval=0))
    from localcloud import pubsub, services

    real = pubsub.argv
    pubsub.argv = lambda port: ["sh", "-c", "echo 'no java here' >&2; exit 3"]  # type: ignore[assignment] - a stand-in for the emulator's command
    try:
        with pytest.raises(services.StartupError) as info:
            cloud.up()
    finally:
        pubsub.argv = real  # type: ignore[assignment] - a stand-in for the emulator's command
    assert "pubsub exited with code 3" in str(info.value)
    assert "no java here" in str(info.value)
    assert cloud.running() == {}, "a failed start stops what it started"


def test_repo_root_is_importable() -> None:
    assert (REPO / "publisher.py").exists()


def test_free_ports_are_outside_the_ephemeral_range_where_outgoing_connections_take_theirs() -> None:
    import socket

    from localcloud.ports import LOW, ephemeral_start, free_port

    picked = {free_port() for _ in range(50)}
    assert all(LOW <= p < ephemeral_start() for p in picked), sorted(picked)
    for port in list(picked)[:5]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))  # free when picked
    assert len(picked) == 50, "a port is never handed out twice"
