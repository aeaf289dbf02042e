"""The queue on the local cloud: a batch beyond its parallelism waits, and each ending starts one more.

The trainer is played by the test (signed completions for boots it claims itself, on quiet VMs that
publish their ready elsewhere), so what is measured is the control plane's queue, exactly once under
duplicate and concurrent deliveries.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from sinergym_cloud import lifecycle, names
from sinergym_cloud.control import batches, launch, sweeper
from sinergym_cloud.gcp.runtime import Runtime
from sinergym_cloud.publisher import views
from tests.conftest import Cloud, wait_for
from tests.control_helpers import (
    QUIET_TEMPLATE,
    ZONE,
    completion,
    deliver,
    ensure_quiet_template,
    make_batch,
    mig_events,
    ppo,
    start_boot,
)


def states(rt: Runtime, batch_id: str) -> list[str]:
    return [s for _, s in sorted(batches.experiment_states(rt, batch_id).items())]


def live_vms(cloud: Cloud, batch_id: str, group: str) -> set[str]:
    prefix = names.instance_name(group, batch_id, 0).rsplit("-", 1)[0] + "-"
    return {k.split("/", 1)[1] for k in cloud.instances() if k.split("/", 1)[1].startswith(prefix)}


def test_a_batch_beyond_max_parallel_waits_queued_and_each_ending_starts_one_more(cloud: Cloud) -> None:
    ensure_quiet_template(cloud)
    rt = cloud.runtime()
    batch = make_batch(*(ppo(seed=i) for i in range(5)), template=QUIET_TEMPLATE, max_parallel=2)
    since = time.time()
    record = launch.launch(rt, batch)
    assert (record.parallelism, record.parallelism_reason) == (2, "max_parallel 2")
    assert states(rt, batch.batch_id) == ["pending", "pending", "queued", "queued", "queued"]
    mig = names.mig_name(batch.group_name, batch.batch_id)
    created = [e for e in mig_events(cloud, mig, since, "mig.createInstances")]
    assert created, "launch asked the group for the first VMs"
    wait_for(lambda: len(live_vms(cloud, batch.batch_id, batch.group_name)) == 2, 60, "two VMs")
    shown = views.batch_status(rt, batch.batch_id, with_compute=False, with_alerts=False)
    assert [e.state for e in shown.experiments].count("queued") == 3

    # A queued experiment is never timed out, however long it waits.
    later = time.time() + 10 * rt.settings.boot_timeout
    report: dict[str, Any] = {"retried": [], "failed": [], "requeued": [], "started": []}
    for index in (2, 3, 4):
        doc = rt.state.read(names.experiment_object(batch.batch_id, index))
        assert doc is not None
        assert doc.data["state"] == "queued"
    sweeper.sweep_batch(rt, batch.batch_id, later, {**report, "finalized": []})
    assert states(rt, batch.batch_id)[2:] == ["queued", "queued", "queued"]

    # Experiment 0 ends: its slot goes to experiment 2, once, however often the completion arrives.
    key0 = start_boot(rt, batch.batch_id, 0, boot_id="b0")
    done0 = completion(rt, batch.batch_id, 0, boot_id="b0")
    deliver(rt, done0, key0, owner="m0")
    deliver(rt, done0, key0, owner="m0")  # Pub/Sub's at-least-once redelivery
    assert states(rt, batch.batch_id) == ["succeeded", "pending", "pending", "queued", "queued"]

    # Experiments 1 and 2 end at the same moment: 3 and 4 each start exactly once.
    keys = {i: start_boot(rt, batch.batch_id, i, boot_id=f"b{i}") for i in (1, 2)}
    messages = {i: completion(rt, batch.batch_id, i, boot_id=f"b{i}") for i in (1, 2)}
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def end(i: int) -> None:
        barrier.wait()
        try:
            deliver(rt, messages[i], keys[i], owner=f"m{i}")
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=end, args=(i,)) for i in (1, 2, 1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert states(rt, batch.batch_id) == ["succeeded", "succeeded", "succeeded", "pending", "pending"]
    docs = {i: rt.state.read(names.experiment_object(batch.batch_id, i)) for i in range(5)}
    started_by = {i: d.data.get("started_by") for i, d in docs.items() if d is not None}
    assert started_by[0] == started_by[1] == "launch"
    assert sorted([started_by[2], started_by[3], started_by[4]]) == [0, 1, 2], "one start per ending"
    wait_for(lambda: len(live_vms(cloud, batch.batch_id, batch.group_name)) == 2, 60, "never more than two VMs")

    # The last two end; nothing is left queued, the batch finishes and its group goes.
    for i in (3, 4):
        deliver(rt, completion(rt, batch.batch_id, i, boot_id=f"b{i}"), start_boot(rt, batch.batch_id, i, f"b{i}"))
    assert states(rt, batch.batch_id) == ["succeeded"] * 5
    wait_for(lambda: f"{ZONE}/{mig}" not in cloud.migs(), 60, "group deleted")


def test_an_ending_hands_its_slot_on_in_the_write_that_ends_it_and_frees_its_vm_first(cloud: Cloud) -> None:
    ensure_quiet_template(cloud)
    rt = cloud.runtime()
    batch = make_batch(*(ppo(seed=i) for i in range(3)), template=QUIET_TEMPLATE, max_parallel=1)
    launch.launch(rt, batch)
    mig = names.mig_name(batch.group_name, batch.batch_id)
    ended = names.experiment_object(batch.batch_id, 0)
    written: list[dict[str, Any]] = []
    write = rt.state._write

    def recording(path: str, data: dict[str, Any], generation: int, metadata: Any) -> int | None:
        if path == ended:
            written.append(data)
        return write(path, data, generation, metadata)

    rt.state._write = recording  # type: ignore[method-assign]
    key = start_boot(rt, batch.batch_id, 0, boot_id="b0")
    written.clear()
    since = time.time()
    deliver(rt, completion(rt, batch.batch_id, 0, boot_id="b0"), key)

    assert states(rt, batch.batch_id) == ["succeeded", "pending", "queued"]
    first = written[0]
    assert (first["state"], first["handed_to"]) == ("succeeded", 1), "the choice rode in the completion's write"
    assert written[-1]["delete_requested_at"] is not None
    deleted = mig_events(cloud, mig, since, "mig.deleteInstances")
    created = mig_events(cloud, mig, since, "mig.createInstances")
    assert [e["instances"] for e in created] == [[names.instance_name(batch.group_name, batch.batch_id, 1)]]
    assert deleted and deleted[0]["t"] <= created[0]["t"], "the ended VM's removal was asked for first"


def test_a_sweep_between_a_promotion_and_its_vm_request_does_not_take_the_vm_for_vanished(cloud: Cloud) -> None:
    ensure_quiet_template(cloud)
    rt = cloud.runtime()
    batch = make_batch(ppo(seed=0), ppo(seed=1), template=QUIET_TEMPLATE, max_parallel=1)
    launch.launch(rt, batch)
    # Experiment 1 promoted, its VM not asked for yet (the function that promoted it is on its way).
    batches.transition(rt, batch.batch_id, 1, lambda r: lifecycle.promote(r, 0, time.time()))
    report: dict[str, Any] = {"retried": [], "failed": [], "requeued": [], "started": [], "finalized": []}
    sweeper.sweep_batch(rt, batch.batch_id, time.time(), report)
    assert report["retried"] == [] and states(rt, batch.batch_id)[1] == "pending"

    later = time.time() + rt.settings.call_deadline + 1  # the request never came: now it is lost
    sweeper.sweep_batch(rt, batch.batch_id, later, report)
    assert [r for r in report["retried"] if "vanished" in r] and states(rt, batch.batch_id)[1] == "pending"
    batches.cancel(rt, batch.batch_id)


def test_cancel_ends_the_queued_experiments_too(cloud: Cloud) -> None:
    ensure_quiet_template(cloud)
    rt = cloud.runtime()
    batch = make_batch(*(ppo(seed=i) for i in range(3)), template=QUIET_TEMPLATE, max_parallel=1)
    launch.launch(rt, batch)
    assert states(rt, batch.batch_id) == ["pending", "queued", "queued"]
    result = batches.cancel(rt, batch.batch_id)
    assert result["cancelled"] == [0, 1, 2]
    assert states(rt, batch.batch_id) == ["cancelled"] * 3


def test_a_vm_left_for_a_requeued_experiment_is_withdrawn_not_claimed(cloud: Cloud) -> None:
    """A queued experiment holds no VM slot. When the withdrawal of a requeued experiment's VM request
    did not reach Compute (a rate limit, an error), its VM boots once the quota is back: dispatch
    must not claim it (the batch would run beyond its parallelism), and the sweeper withdraws it.
    The soak's transition table (tests/soak) showed that claim_boot took a queued record."""
    from sinergym_cloud.control import dispatch
    from tests.control_helpers import quiet_ready

    ensure_quiet_template(cloud)
    rt = cloud.runtime()
    batch = make_batch(ppo(seed=0), ppo(seed=1), template=QUIET_TEMPLATE, max_parallel=1)
    launch.launch(rt, batch)
    mig = names.mig_name(batch.group_name, batch.batch_id)
    left = names.instance_name(batch.group_name, batch.batch_id, 1)
    rt.compute.create_instances(ZONE, mig, {left: names.instance_metadata(batch.batch_id, 1)})  # never withdrawn
    ready = quiet_ready(cloud, left)
    with pytest.raises(RuntimeError, match="is queued"):  # not claimed; redelivered, in case it is promoted
        dispatch.dispatch(rt, ready)
    assert states(rt, batch.batch_id) == ["pending", "queued"]
    report: dict[str, Any] = {"retried": [], "failed": [], "requeued": [], "started": [], "finalized": []}
    sweeper.sweep_batch(rt, batch.batch_id, time.time(), report)
    assert report["withdrawn"] == [f"{batch.batch_id}/1"]
    wait_for(lambda: left not in live_vms(cloud, batch.batch_id, batch.group_name), 60, "the left VM withdrawn")
    assert states(rt, batch.batch_id) == ["pending", "queued"]
    batches.cancel(rt, batch.batch_id)
