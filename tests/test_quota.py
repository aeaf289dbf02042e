"""The local cloud's quotas as Compute Engine's: ``regions.get`` quotas that move as VMs come and go,
counted in the template machine type's vCPUs, creations over quota retried by the group, a stockout
in one named zone, and launch taking its parallelism from them end to end (publisher -> launch ->
records).

The VMs are real local VMs of the quiet template (e2-standard-2, 2 vCPUs): they announce themselves
on a test topic, so no trainer runs. Limits are set relative to what the region already uses, so
VMs other tests left running do not change the outcome.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import requests

from sinergym_cloud import names
from sinergym_cloud.control import batches
from sinergym_cloud.gcp.compute import ComputeApi
from sinergym_cloud.publisher import views
from sinergym_cloud.records import LaunchRecord
from tests.conftest import REPO, Cloud, new_batch_id, wait_for
from tests.control_helpers import PROJECT, QUIET_TEMPLATE, ZONE, ensure_quiet_template

REGION = "europe-west1"
OTHER_ZONE = "europe-west1-c"


def quotas(api: ComputeApi) -> dict[str, tuple[float, float]]:
    """metric -> (limit, usage), read as the product reads them (``regions.get``)."""
    return {q.metric: (q.limit, q.usage) for q in api.region_quotas(REGION)}


def settled(cloud: Cloud) -> None:
    """No VM of an earlier test is still stopping (its quota usage would move under this test)."""
    wait_for(lambda: all(v["status"] != "STOPPING" for v in cloud.instances().values()), 60, "earlier VMs settled")


def member_states(api: ComputeApi, zone: str, group: str) -> dict[str, tuple[str, tuple[str, ...]]]:
    return {m.name: (m.status, m.error_codes) for m in api.members(zone, group) or []}


def test_quotas_count_the_machine_type_vcpus_and_move_as_vms_come_and_go(cloud: Cloud) -> None:
    ensure_quiet_template(cloud)
    api = ComputeApi(cloud.runtime().clients, PROJECT)
    shape = api.vm_shape(QUIET_TEMPLATE, ZONE)
    assert shape is not None and (shape.machine_type, shape.vcpus, shape.spot) == ("e2-standard-2", 2, False)
    settled(cloud)
    before = quotas(api)
    cpus, instances = before["CPUS"][1], before["INSTANCES"][1]
    cloud.emulator("config", {"quotas": {"CPUS": cpus + 5}})  # room for two VMs of 2 vCPUs, not three
    assert quotas(api)["CPUS"] == (cpus + 5, cpus)
    group = f"g-{new_batch_id()}"
    api.ensure_group(ZONE, group, QUIET_TEMPLATE)
    api.create_instances(ZONE, group, {f"{group}-{i}": {} for i in range(3)})

    def two_up_one_over() -> dict[str, tuple[str, tuple[str, ...]]] | None:
        found = member_states(api, ZONE, group)
        created = [n for n, (s, _) in found.items() if s]
        over = [n for n, (s, codes) in found.items() if not s and "QUOTA_EXCEEDED" in codes]
        return found if (len(created), len(over)) == (2, 1) else None

    found = wait_for(two_up_one_over, 60, "two VMs created and the third over quota")
    waiting = next(n for n, (s, _) in found.items() if not s)
    assert quotas(api)["CPUS"] == (cpus + 5, cpus + 4)
    assert quotas(api)["INSTANCES"][1] == instances + 2
    errors = list(cloud.runtime().clients.migs.list_errors(project=PROJECT, zone=ZONE, instance_group_manager=group))
    assert errors and {e.error.code for e in errors} == {"QUOTA_EXCEEDED"}
    assert "'CPUS'" in errors[-1].error.message and REGION in errors[-1].error.message
    # One VM goes: the group, which kept retrying, creates the waiting one in its place.
    first = next(n for n, (s, _) in found.items() if s)
    assert api.delete_instances(ZONE, group, [first])
    wait_for(lambda: member_states(api, ZONE, group).get(waiting, ("", ()))[0], 60, "the waiting VM created")
    wait_for(lambda: quotas(api)["CPUS"][1] == cpus + 4 and first not in member_states(api, ZONE, group), 60, "usage")
    # The group goes: so does its usage.
    assert api.delete_group(ZONE, group)
    wait_for(lambda: api.members(ZONE, group) is None, 60, "the group gone")
    assert quotas(api)["CPUS"][1] == cpus and quotas(api)["INSTANCES"][1] == instances


def test_spot_vms_count_against_preemptible_cpus_where_the_project_has_that_quota(cloud: Cloud) -> None:
    api = ComputeApi(cloud.runtime().clients, PROJECT)
    shape = api.vm_shape("sinergym-template", ZONE)
    assert shape is not None and shape.spot
    settled(cloud)
    before = quotas(api)
    assert before["PREEMPTIBLE_CPUS"][0] == 0  # Compute Engine's default: spot VMs use the CPU quota
    cloud.emulator("config", {"quotas": {"PREEMPTIBLE_CPUS": before["PREEMPTIBLE_CPUS"][1] + 2}})
    group = f"g-{new_batch_id()}"
    api.ensure_group(ZONE, group, "sinergym-template")
    api.create_instances(ZONE, group, {f"{group}-0": {}, f"{group}-1": {}})
    wait_for(
        lambda: sorted(codes for _, codes in member_states(api, ZONE, group).values()) == [(), ("QUOTA_EXCEEDED",)],
        60,
        "one spot VM, the other over PREEMPTIBLE_CPUS",
    )
    after = quotas(api)
    assert after["PREEMPTIBLE_CPUS"][1] == before["PREEMPTIBLE_CPUS"][1] + 2
    assert after["CPUS"][1] == before["CPUS"][1]  # counted once, against the spot quota
    assert api.delete_group(ZONE, group)
    wait_for(lambda: api.members(ZONE, group) is None, 60, "the group gone")


def test_a_stockout_is_per_zone_and_the_group_creates_once_it_ends(cloud: Cloud) -> None:
    ensure_quiet_template(cloud)
    api = ComputeApi(cloud.runtime().clients, PROJECT)
    cloud.emulator("config", {"zone_exhausted": [OTHER_ZONE]})
    group = f"g-{new_batch_id()}"
    for zone in (ZONE, OTHER_ZONE):
        api.ensure_group(zone, group, QUIET_TEMPLATE)
        api.create_instances(zone, group, {f"{group}-0": {}})
    wait_for(lambda: member_states(api, ZONE, group)[f"{group}-0"][0], 60, "the VM in the zone with stock")
    stuck = wait_for(lambda: member_states(api, OTHER_ZONE, group)[f"{group}-0"][1], 30, "the stockout error")
    assert stuck == ("ZONE_RESOURCE_POOL_EXHAUSTED",)
    assert member_states(api, OTHER_ZONE, group)[f"{group}-0"][0] == ""
    cloud.emulator("config", {"zone_exhausted": []})
    wait_for(lambda: member_states(api, OTHER_ZONE, group)[f"{group}-0"][0], 60, "the VM once the stockout ends")
    for zone in (ZONE, OTHER_ZONE):
        assert api.delete_group(zone, group)
        wait_for(lambda z=zone: api.members(z, group) is None, 60, f"the group gone from {zone}")


def test_quota_settings_that_compute_engine_could_not_have_are_refused(cloud: Cloud) -> None:
    url = f"{cloud.compute_url}/_emulator/config"
    for body, named in (
        ({"quotas": {"CPUS": -1}}, "CPUS"),
        ({"quotas": {"cpus": 4}}, "cpus"),
        ({"quotas": {"INSTANCES": 4}}, "quota_instances"),
        ({"quotas": [4]}, "quotas"),
        ({"zone_exhausted": "europe-west1-b"}, "zone_exhausted"),
    ):
        response = requests.post(url, json=body, timeout=10)
        assert response.status_code == 400, body
        assert named in response.json()["error"]["message"], (body, response.text)


def test_launch_takes_its_parallelism_from_the_region_quotas(cloud: Cloud) -> None:
    ensure_quiet_template(cloud)
    rt = cloud.runtime()
    api = ComputeApi(rt.clients, PROJECT)
    settled(cloud)
    cpus = quotas(api)["CPUS"][1]
    cloud.emulator("config", {"quotas": {"CPUS": cpus + 5}})  # two e2-standard-2 VMs
    batch_id = new_batch_id("quota")
    legacy = "python3 DRL_battery.py --environment Eplus-5zone-hot-continuous-v1 --algorithm PPO --seed {}"
    published = subprocess.run(
        [sys.executable, "publisher.py", "--batch-id", batch_id, "--template_name", QUIET_TEMPLATE,
         "-cmds", *(legacy.format(seed) for seed in (1, 2, 3))],
        cwd=REPO, env={**os.environ, **cloud.env}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert published.returncode == 0, published.stderr
    doc = wait_for(lambda: rt.state.read(names.launch_object(batch_id)), 60, "the launch record")
    record = LaunchRecord.model_validate(doc.data)
    assert record.parallelism == 2, record
    assert record.parallelism_reason.startswith("quota CPUS: 5 free / 2 vCPUs per VM (e2-standard-2)")

    def states() -> list[str]:
        return [s for _, s in sorted(batches.experiment_states(rt, batch_id).items())]

    wait_for(lambda: states() == ["pending", "pending", "queued"], 60, "two started, one queued")
    shown = views.batch_status(rt, batch_id, with_compute=False, with_alerts=False)
    assert [e.state for e in shown.experiments] == ["pending", "pending", "queued"]
    mig = names.mig_name(record.group, batch_id)
    wait_for(lambda: len(cloud.migs().get(f"{ZONE}/{mig}", [])) == 2, 60, "two VMs asked for")
    assert quotas(api)["CPUS"][1] == cpus + 4  # the two VMs, and no creation over quota
    batches.cancel(rt, batch_id)
    wait_for(lambda: f"{ZONE}/{mig}" not in cloud.migs(), 60, "the group deleted")


def test_launch_warns_of_an_experiment_with_more_simulations_than_its_vm_has_vcpus(
    cloud: Cloud, caplog: pytest.LogCaptureFixture
) -> None:
    from sinergym_cloud.contracts import Batch, Experiment
    from sinergym_cloud.control import launch

    ensure_quiet_template(cloud)
    experiments = [Experiment(environment="Eplus-5zone-hot-continuous-v1", n_envs=n) for n in (2, 4, 1)]
    batch = Batch(batch_id=new_batch_id(), template_name=QUIET_TEMPLATE, zone=ZONE, experiments=experiments)
    with caplog.at_level("WARNING", logger="sinergym_cloud.control.launch"):
        launch.decide_parallelism(cloud.runtime(), batch)
    assert "experiment(s) 1 ask for more simulations (--n-envs) than the 2 vCPUs of e2-standard-2" in caplog.text
