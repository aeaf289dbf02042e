"""The batch's queue: an experiment that ends gives its VM slot to the next queued one, exactly once.

Called by whatever ends an experiment (cleanup on a completion, the sweeper giving one up); there is
no polling loop. Two compare-and-swaps make it exact under duplicate and concurrent deliveries:

1. ``hand_over`` writes, in the ended experiment's own record, which queued experiment gets its
   slot. Duplicate deliveries of the same ending read the choice already made and agree on it. A
   completion makes that choice in the very write that ends the experiment, from a listing taken
   beside it (``hand_over_in_ending``): one write and three round trips fewer between an end and
   the next VM request.
2. ``promote`` moves that experiment from queued to pending. Two experiments that end at once may
   both choose the lowest queued one; only one promotion applies, and the other hand-over withdraws
   its choice and picks again.

The VM is asked for only while the promoted experiment is still pending (before any boot), so a late
duplicate never brings back a VM for an experiment that already ran.

A batch with a VM-hour budget (``max_vm_hours``) starts the chosen experiment only if it fits
(budget.py); if it does not, it and every other queued experiment end ``cancelled`` with the reason
``budget`` before the slot is handed to no one, so a redelivery finds nothing left to start.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future

from google.api_core import exceptions

from sinergym_cloud import budget, lifecycle, names
from sinergym_cloud.control import batches, sweeps
from sinergym_cloud.gcp.runtime import Runtime
from sinergym_cloud.gcp.state import Versioned
from sinergym_cloud.lifecycle import NOBODY
from sinergym_cloud.records import LIVE, ExperimentRecord, LaunchRecord

log = logging.getLogger(__name__)

MAX_ROUNDS = 50  # each lost race means another ended experiment took a queued one: bounded by the batch


def queued(states: dict[int, str]) -> list[int]:
    return sorted(i for i, s in states.items() if s == "queued")


def choose(launch: LaunchRecord, states: dict[int, str], taken: set[int], ended: int = 0) -> int:
    """The queued experiment an ended one's slot goes to, or NOBODY (none waits, or the batch now
    runs fewer VMs at once than it has live: a quota error lowered its parallelism).

    Endings that come together (a whole wave) would all choose the first queued one and then race
    for it, one compare-and-swap round each per loser: the ``ended`` experiment's index spreads
    them over the queue instead (a wave of P that ends together picks P different ones), at the
    price of a queue that is first-in-first-out only roughly."""
    if launch.status not in ("launching", "launched"):
        return NOBODY  # cancelled or failed: nothing more starts
    live = sum(1 for s in states.values() if s in LIVE)
    if launch.parallelism is not None and live >= launch.parallelism:
        return NOBODY
    waiting = [i for i in queued(states) if i not in taken]
    return waiting[ended % len(waiting)] if waiting else NOBODY


def _hand_over(
    to: int | None, expected: int | None, removed: bool = False
) -> Callable[[ExperimentRecord], lifecycle.Transition]:
    """The hand-over of an ended experiment's slot; ``removed``: its VM's removal has been asked
    for, marked in the same write (one write fewer than marking it apart)."""

    def step(r: ExperimentRecord) -> lifecycle.Transition:
        t = lifecycle.hand_over(r, to, expected=expected)
        if t.applied and removed:
            lifecycle.mark(r, "delete_requested_at", time.time())
        return t

    return step


def _promote(launch: LaunchRecord, by: int, target: int) -> Callable[[ExperimentRecord], lifecycle.Transition]:
    """The promotion of ``target``, its VM asked for in the zone queued experiments start in."""
    where = (launch.start_zone, launch.group_in(launch.start_zone, target))
    return lambda r: lifecycle.promote(r, by, time.time(), where)


Reads = dict[int, "Future[Versioned | None]"]


def hand_over_in_ending(
    rt: Runtime, rec: ExperimentRecord, launch: LaunchRecord | None, states: dict[int, str], reads: Reads
) -> None:
    """Inside the write that ends ``rec`` (a completion's compare-and-swap step): choose who gets its
    slot in that same write, from ``states`` (a listing taken beside it), and start reading the
    chosen record. On the way from an experiment's end to the next VM request this saves the
    hand-over's own write and the listing's and the read's round trips. Not for a batch with a
    budget (start_next checks the budget first) nor once a choice is recorded."""
    if launch is None or launch.max_vm_hours is not None or rec.handed_to is not None or not rec.terminal:
        return
    want = choose(launch, {**states, rec.index: rec.state}, set(), rec.index)
    if lifecycle.hand_over(rec, want, expected=None).applied and want != NOBODY and want not in reads:
        reads[want] = rt.soon(rt.state.read, names.experiment_object(rec.batch_id, want))


def follow_up(
    rt: Runtime, ended: ExperimentRecord, launch: LaunchRecord | None = None, reads: Reads | None = None
) -> int | None:
    """Everything an experiment's end asks of its batch, in the order that starts the next queued
    experiment soonest: the ended VM's removal requested beside the slot's hand-over, and done
    before the new VM is asked for (its quota is freed first); then the removal marked in the
    record and a failure reported (batches.settle). Returns the index started, or None. The batch's
    teardown is the caller's. ``reads``: records read ahead (hand_over_in_ending)."""
    removal = rt.soon(batches.remove_vm, rt, ended) if ended.delete_requested_at is None else None
    started, latest = _start_next(rt, ended, launch, removal, reads)
    if removal is not None:
        removal.result()
    batches.settle(rt, latest, removal_requested=True)
    return started


def end(
    rt: Runtime, ended: ExperimentRecord, owner: str, launch: LaunchRecord | None = None, reads: Reads | None = None
) -> None:
    """The one ending of an experiment, whatever ended it (a completion, the pruner, a trial that
    cannot run): ``follow_up``, then the batch's teardown if nothing was started in its place (a
    started one is live, so the batch cannot be done)."""
    if follow_up(rt, ended, launch, reads) is None:
        batches.finalize_if_done(rt, ended.batch_id, owner)


def start_next(rt: Runtime, ended: ExperimentRecord, launch: LaunchRecord | None = None) -> int | None:
    """Give ``ended``'s VM slot to the next queued experiment. Returns the index started, or None.

    ``launch``: the batch's launch record if the caller has just read it (one read fewer on the
    path from an experiment's end to the next VM request)."""
    return _start_next(rt, ended, launch)[0]


def _ahead(reads: Reads, index: int) -> Versioned | None:
    """The record read ahead for ``index`` (once), or None: read it as usual."""
    future = reads.pop(index, None)
    try:
        return future.result() if future is not None else None
    except Exception:  # noqa: BLE001 - a read ahead that failed is just read again
        return None


def _start_next(
    rt: Runtime,
    ended: ExperimentRecord,
    launch: LaunchRecord | None,
    removal: Future[None] | None = None,
    reads: Reads | None = None,
) -> tuple[int | None, ExperimentRecord]:
    """start_next, and the ended experiment's record as the hand-over left it. ``removal``: the
    ended VM's removal under way, waited for before a new VM is asked for."""
    assert ended.terminal, "only an ended experiment hands its slot on"
    bid = ended.batch_id
    reads = reads if reads is not None else {}
    if launch is None:
        launch = batches.read_launch(rt, bid)
        if launch is None:
            return None, ended
    rec: ExperimentRecord | None = ended
    taken: set[int] = set()
    for _ in range(MAX_ROUNDS):
        assert rec is not None
        target = rec.handed_to
        if target is None:
            want = choose(launch, batches.experiment_states(rt, bid), taken, ended.index)
            if want != NOBODY and launch.max_vm_hours is not None:
                want = within_budget(rt, launch, want)
            if removal is not None:
                removal.result()  # done before it is marked, in the hand-over's write
            rec, _ = batches.transition(rt, bid, ended.index, _hand_over(want, None, removal is not None))
            assert rec is not None, "the ended experiment's record exists"
            target = rec.handed_to
        if target is None or target == NOBODY:
            return None, rec
        promote = _promote(launch, ended.index, target)
        other, _ = batches.transition(rt, bid, target, promote, known=_ahead(reads, target))
        if other is not None and other.started_by == ended.index:
            if other.state == "pending":
                if removal is not None:
                    removal.result()
                request_vm(rt, launch, other)
            log.info("batch %s: experiment %d's slot went to experiment %d", bid, ended.index, target)
            return target, rec
        # Another ended experiment promoted it first: withdraw the choice and pick again.
        taken.add(target)
        rec, _ = batches.transition(rt, bid, ended.index, _hand_over(None, target))
    log.warning("batch %s: experiment %d could not hand its slot on after %d rounds", bid, ended.index, MAX_ROUNDS)
    assert rec is not None
    return None, rec


def request_vm(rt: Runtime, launch: LaunchRecord, rec: ExperimentRecord) -> None:
    """Ask the experiment's group for its VM (idempotent: an existing name is skipped). A sweep
    trial's parameters are in its record first (proposed now if they are not yet)."""
    rec = sweeps.ensure_params(rt, rec)
    if rec.terminal:  # a sweep trial that cannot run: its slot goes on at once
        start_next(rt, rec)
        batches.finalize_if_done(rt, rec.batch_id, owner=f"queue-{rec.batch_id}-{rec.index}")
        return
    wanted = {rec.instance: names.instance_metadata(rec.batch_id, rec.index)}
    try:
        rt.compute.create_instances(rec.zone, rec.mig, wanted)
    except exceptions.NotFound:
        # The group is gone: the batch was cancelled meanwhile (then so is the experiment, and nothing
        # is made again), or it was deleted by hand or the local cloud restarted: make it again, as
        # the sweeper does.
        now = rt.state.read(names.experiment_object(rec.batch_id, rec.index))
        if now is None or ExperimentRecord.model_validate(now.data).terminal:
            return
        rt.compute.ensure_group(rec.zone, rec.mig, launch.template, batch_id=rec.batch_id)
        rt.compute.create_instances(rec.zone, rec.mig, wanted)


def within_budget(rt: Runtime, launch: LaunchRecord, want: int) -> int:
    """``want`` if starting it keeps the batch within its VM-hour budget; else NOBODY, once every
    queued experiment has been cancelled for the budget and the launch record says when and why."""
    assert launch.max_vm_hours is not None
    bid = launch.batch_id
    docs = [
        d.data
        for i in sorted(batches.experiment_states(rt, bid))
        if (d := rt.state.read(names.experiment_object(bid, i)))
    ]
    candidate = next((d for d in docs if d["index"] == want), None)
    if candidate is None:
        return want
    verdict = budget.check(launch.max_vm_hours, docs, ExperimentRecord.model_validate(candidate).spec, time.time())
    if verdict.fits:
        return want
    stop_for_budget(rt, bid, verdict.reason)
    return NOBODY


def stop_for_budget(rt: Runtime, batch_id: str, reason: str) -> list[int]:
    """The budget is reached: say so in the launch record (once), and cancel what still waits.
    Returns the experiments cancelled now."""

    def reached(doc: dict[str, object]) -> dict[str, object] | None:
        if doc.get("budget_reached"):
            return None
        doc["budget_reached"] = reason[:500]
        doc["budget_reached_at"] = time.time()
        return doc

    rt.state.update(names.launch_object(batch_id), reached)
    cancelled = []
    for i in queued(batches.experiment_states(rt, batch_id)):
        _, t = batches.transition(rt, batch_id, i, lambda r: lifecycle.never_started(r, reason, time.time()))
        if t.applied:
            cancelled.append(i)
    if cancelled:
        log.warning("batch %s: %s; cancelled %s", batch_id, reason, cancelled)
    return cancelled
