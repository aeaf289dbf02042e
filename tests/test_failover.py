"""Zone failover on the local cloud: a batch names several zones of one region, and an experiment
whose VM its zone cannot create (ZONE_RESOURCE_POOL_EXHAUSTED) for ``zone_failover_seconds`` moves
to the next zone: a group there named after the batch's group plus the zone, the same experiment
record, the move in the record and in status; every group of every zone goes at the end.

The trainer is played by the test (quiet VMs that announce themselves on a test topic), so what is
checked is the control plane's move, with the emulator's per-zone stockout.
"""

from __future__ import annotations

import time
from typing import Any

from sinergym_cloud import names
from sinergym_cloud.control import batches, launch, sweeper
from sinergym_cloud.gcp.runtime import Runtime
from sinergym_cloud.publisher import views
from sinergym_cloud.records import ExperimentRecord
from tests.conftest import Cloud, wait_for
from tests.control_helpers import (
    QUIET_TEMPLATE,
    ZONE,
    completion,
    deliver,
    ensure_quiet_template,
    make_batch,
    ppo,
    start_boot,
)

FREE_ZONE = "europe-west1-c"


def new_report() -> dict[str, Any]:
    return {"retried": [], "failed": [], "requeued": [], "started": [], "finalized": [], "moved": []}


def record_of(rt: Runtime, batch_id: str, index: int) -> ExperimentRecord:
    doc = rt.state.read(names.experiment_object(batch_id, index))
    assert doc is not None
    return ExperimentRecord.model_validate(doc.data)


def batch_vms(cloud: Cloud, batch_id: str, group: str) -> dict[str, str]:
    """zone/name -> status of the batch's VMs in every zone, from the emulator's own state."""
    prefix = names.instance_name(group, batch_id, 0).rsplit("-", 1)[0] + "-"
    return {k: v["status"] for k, v in cloud.instances().items() if k.split("/", 1)[1].startswith(prefix)}


def stocked_out(rt: Runtime, zone: str, mig: str, n: int) -> bool:
    found = rt.compute.members(zone, mig) or []
    return len(found) == n and all("ZONE_RESOURCE_POOL_EXHAUSTED" in m.error_codes for m in found)


def succeed_in_free_zone(rt: Runtime, bid: str, indices: list[int]) -> None:
    """Play each experiment's trainer in zone c (boot claimed, then a signed success)."""
    for i in indices:
        key = start_boot(rt, bid, i, boot_id=f"b{i}")
        done = completion(rt, bid, i, boot_id=f"b{i}").model_copy(update={"zone": FREE_ZONE})
        deliver(rt, done, key, owner=f"m{i}")


def nothing_left(cloud: Cloud, batch: Any, groups: set[str]) -> None:
    """The batch's groups in both zones deleted, and none of its VMs left."""
    wait_for(lambda: not (groups & set(cloud.migs())), 60, "both groups deleted")
    wait_for(lambda: batch_vms(cloud, batch.batch_id, batch.group_name) == {}, 60, "no VM left")


def test_zone_b_out_of_stock_zone_c_free_the_experiments_run_in_zone_c(cloud: Cloud) -> None:
    ensure_quiet_template(cloud)
    rt = cloud.runtime(zone_failover_seconds=3)
    cloud.emulator("config", {"zone_exhausted": [ZONE]})
    batch = make_batch(ppo(seed=1), ppo(seed=2), template=QUIET_TEMPLATE, zones=[ZONE, FREE_ZONE])
    bid = batch.batch_id
    launch.launch(rt, batch)
    mig = names.mig_name(batch.group_name, bid)
    moved_mig = names.zone_mig_name(mig, FREE_ZONE)
    assert moved_mig == f"{mig}-c"
    wait_for(lambda: stocked_out(rt, ZONE, mig, 2), 30, "both VMs refused by the zone out of stock")
    assert rt.state.read(names.zone_object(FREE_ZONE)) is not None, "the orphan sweep looks in every zone"

    # Not yet: a stockout shorter than zone_failover_seconds moves nothing.
    report = new_report()
    sweeper.sweep_batch(rt, bid, time.time(), report)
    assert report["moved"] == [] and report["failed"] == []
    assert {record_of(rt, bid, i).zone for i in (0, 1)} == {ZONE}

    # Past it: both move to zone c, once, however often the sweeper runs.
    later = time.time() + 5
    sweeper.sweep_batch(rt, bid, later, report)
    sweeper.sweep_batch(rt, bid, later, report)
    assert sorted(report["moved"]) == [f"{bid}/{i}: {ZONE} -> {FREE_ZONE}" for i in (0, 1)]
    assert report["failed"] == report["retried"] == []
    for i in (0, 1):
        rec = record_of(rt, bid, i)
        assert (rec.state, rec.zone, rec.mig, rec.moved_from) == ("pending", FREE_ZONE, moved_mig, [ZONE])
        assert rec.instance == names.instance_name(batch.group_name, bid, i)  # the same experiment, same name
        assert rec.history[-1].event == "moved" and "ZONE_RESOURCE_POOL_EXHAUSTED" in rec.history[-1].detail
    wait_for(
        lambda: (
            sorted(batch_vms(cloud, bid, batch.group_name).items())
            == [(f"{FREE_ZONE}/{names.instance_name(batch.group_name, bid, i)}", "RUNNING") for i in (0, 1)]
        ),
        60,
        "both VMs running in zone c and none left in zone b",
    )
    shown = views.batch_status(rt, bid, with_alerts=False)
    assert shown.zones == [ZONE, FREE_ZONE]
    assert [(e.zone, e.moved_from, e.instance_status) for e in shown.experiments] == [
        (FREE_ZONE, [ZONE], "RUNNING")
    ] * 2
    assert {(g.zone, g.name) for g in shown.groups} == {(ZONE, mig), (FREE_ZONE, moved_mig)}

    # The experiments run and succeed there; the batch ends and no group is left in either zone.
    succeed_in_free_zone(rt, bid, [0, 1])
    assert [s for _, s in sorted(batches.experiment_states(rt, bid).items())] == ["succeeded", "succeeded"]
    nothing_left(cloud, batch, {f"{ZONE}/{mig}", f"{FREE_ZONE}/{moved_mig}"})


def test_a_request_left_behind_is_withdrawn_and_cancel_deletes_the_groups_of_every_zone(cloud: Cloud) -> None:
    ensure_quiet_template(cloud)
    rt = cloud.runtime(zone_failover_seconds=0)
    cloud.emulator("config", {"zone_exhausted": [ZONE]})
    batch = make_batch(ppo(seed=3), template=QUIET_TEMPLATE, zones=[ZONE, FREE_ZONE])
    launch.launch(rt, batch)
    mig = names.mig_name(batch.group_name, batch.batch_id)
    wait_for(lambda: stocked_out(rt, ZONE, mig, 1), 30, "the VM refused")
    # The move's withdrawal of the old request fails: the request is left in zone b's group...
    cloud.emulator("faults", {"method": "instanceGroupManagers.deleteInstances", "code": 400, "reason": "invalid"})
    report = new_report()
    sweeper.sweep_batch(rt, batch.batch_id, time.time(), report)
    assert len(report["moved"]) == 1
    moved_mig = names.zone_mig_name(mig, FREE_ZONE)
    wait_for(lambda: f"{FREE_ZONE}/{moved_mig}" in cloud.migs(), 30, "the group in zone c")
    assert cloud.migs()[f"{ZONE}/{mig}"] == [names.instance_name(batch.group_name, batch.batch_id, 0)]
    # ... and the next sweep withdraws it, before zone b's stock could bring a second VM.
    sweeper.sweep_batch(rt, batch.batch_id, time.time(), report)
    wait_for(lambda: cloud.migs().get(f"{ZONE}/{mig}") == [], 30, "the request left in zone b withdrawn")
    assert len(report["moved"]) == 1 and report["failed"] == report["retried"] == []
    batches.cancel(rt, batch.batch_id)
    wait_for(lambda: not ({f"{ZONE}/{mig}", f"{FREE_ZONE}/{moved_mig}"} & set(cloud.migs())), 60, "both groups gone")
    assert record_of(rt, batch.batch_id, 0).state == "cancelled"


def test_after_a_failover_queued_experiments_start_in_the_zone_the_batch_moved_to(cloud: Cloud) -> None:
    ensure_quiet_template(cloud)
    rt = cloud.runtime(zone_failover_seconds=0)
    cloud.emulator("config", {"zone_exhausted": [ZONE]})
    batch = make_batch(ppo(seed=4), ppo(seed=5), template=QUIET_TEMPLATE, zones=[ZONE, FREE_ZONE], max_parallel=1)
    bid = batch.batch_id
    launch.launch(rt, batch)
    mig = names.mig_name(batch.group_name, bid)
    moved_mig = names.zone_mig_name(mig, FREE_ZONE)
    wait_for(lambda: stocked_out(rt, ZONE, mig, 1), 30, "experiment 0's VM refused by zone b")
    assert record_of(rt, bid, 1).state == "queued"
    report = new_report()
    sweeper.sweep_batch(rt, bid, time.time(), report)
    assert report["moved"] == [f"{bid}/0: {ZONE} -> {FREE_ZONE}"]
    succeed_in_free_zone(rt, bid, [0])

    # Experiment 1 was queued for zone b; it is asked for in zone c at once, not after another stockout.
    second = record_of(rt, bid, 1)
    assert (second.state, second.zone, second.mig, second.moved_from) == ("pending", FREE_ZONE, moved_mig, [])
    assert any(h.event == "zone" and FREE_ZONE in h.detail for h in second.history)
    instance = names.instance_name(batch.group_name, bid, 1)
    wait_for(
        lambda: batch_vms(cloud, bid, batch.group_name) == {f"{FREE_ZONE}/{instance}": "RUNNING"},
        60,
        "experiment 1's VM running in zone c, and no request for it in zone b",
    )
    assert instance not in (cloud.migs().get(f"{ZONE}/{mig}") or [])
    succeed_in_free_zone(rt, bid, [1])
    assert [s for _, s in sorted(batches.experiment_states(rt, bid).items())] == ["succeeded", "succeeded"]
    nothing_left(cloud, batch, {f"{ZONE}/{mig}", f"{FREE_ZONE}/{moved_mig}"})


def test_a_spot_vm_preempted_again_and_again_fails_over_to_the_next_zone(cloud: Cloud) -> None:
    ensure_quiet_template(cloud)
    rt = cloud.runtime(zone_failover_preemptions=2)
    batch = make_batch(ppo(seed=6), template=QUIET_TEMPLATE, zones=[ZONE, FREE_ZONE])
    bid = batch.batch_id
    launch.launch(rt, batch)
    mig = names.mig_name(batch.group_name, bid)
    moved_mig = names.zone_mig_name(mig, FREE_ZONE)
    instance = names.instance_name(batch.group_name, bid, 0)
    wait_for(lambda: batch_vms(cloud, bid, batch.group_name) == {f"{ZONE}/{instance}": "RUNNING"}, 60, "VM in b")

    # Once: resumed where it is (the group recreates a preempted VM by itself).
    key = start_boot(rt, bid, 0, boot_id="b0")
    deliver(rt, completion(rt, bid, 0, "preempted", boot_id="b0"), key, owner="p0")
    rec = record_of(rt, bid, 0)
    assert (rec.state, rec.zone, rec.moved_from, rec.preemptions) == ("pending", ZONE, [], 1)

    # Twice in zone b: the experiment moves to zone c, the same record, the move in its history.
    key = start_boot(rt, bid, 0, boot_id="b1")
    deliver(rt, completion(rt, bid, 0, "preempted", boot_id="b1"), key, owner="p1")
    rec = record_of(rt, bid, 0)
    assert (rec.state, rec.zone, rec.mig, rec.moved_from) == ("pending", FREE_ZONE, moved_mig, [ZONE])
    assert rec.history[-1].event == "moved" and "preempted 2 times" in rec.history[-1].detail
    wait_for(
        lambda: batch_vms(cloud, bid, batch.group_name) == {f"{FREE_ZONE}/{instance}": "RUNNING"},
        60,
        "its VM running in zone c and gone from zone b",
    )
    key = start_boot(rt, bid, 0, boot_id="b2")
    deliver(rt, completion(rt, bid, 0, boot_id="b2").model_copy(update={"zone": FREE_ZONE}), key, owner="p2")
    assert record_of(rt, bid, 0).state == "succeeded"
    nothing_left(cloud, batch, {f"{ZONE}/{mig}", f"{FREE_ZONE}/{moved_mig}"})


def test_a_moved_experiment_is_dispatched_on_its_vm_in_the_new_zone(cloud: Cloud) -> None:
    """The VM a moved experiment gets in zone c announces itself with the zone's group; dispatch
    refused it (the instance keeps the name of the batch's group) until the sweeper gave the
    experiment up as never ready. The soak found it (seed 5: a two-zone batch under a stockout)."""
    from sinergym_cloud.control import dispatch
    from tests.control_helpers import quiet_ready

    ensure_quiet_template(cloud)
    rt = cloud.runtime(zone_failover_seconds=0)
    cloud.emulator("config", {"zone_exhausted": [ZONE]})
    batch = make_batch(ppo(seed=7), template=QUIET_TEMPLATE, zones=[ZONE, FREE_ZONE])
    bid = batch.batch_id
    launch.launch(rt, batch)
    mig = names.mig_name(batch.group_name, bid)
    wait_for(lambda: stocked_out(rt, ZONE, mig, 1), 30, "the VM refused by zone b")
    report = new_report()
    sweeper.sweep_batch(rt, bid, time.time(), report)
    assert report["moved"] == [f"{bid}/0: {ZONE} -> {FREE_ZONE}"]
    ready = quiet_ready(cloud, names.instance_name(batch.group_name, bid, 0))
    assert (ready.zone, ready.mig) == (FREE_ZONE, names.zone_mig_name(mig, FREE_ZONE))
    assert dispatch.dispatch(rt, ready) == "trainer started"
    rec = record_of(rt, bid, 0)
    assert (rec.state, rec.zone, rec.boot_id) == ("running", FREE_ZONE, ready.boot_id)
    batches.cancel(rt, bid)
    nothing_left(cloud, batch, {f"{ZONE}/{mig}", f"{FREE_ZONE}/{names.zone_mig_name(mig, FREE_ZONE)}"})
