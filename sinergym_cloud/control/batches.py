"""Operations on a whole batch that every function shares: experiment states, forcing an end,
settling a terminal experiment, tearing the batch down once, and cancelling it.

The batch teardown (delete the groups, write the batch-finished metric) must happen exactly once:
a create-only ``finalize.json`` claim with a lease decides who does it, and its owner (the message
id) lets a redelivery finish a crashed teardown. Each step is marked in the claim, so a takeover
redoes only what is missing.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from sinergym_cloud import lifecycle, names
from sinergym_cloud.control import alerts, announce, batch_index
from sinergym_cloud.errors import BatchNotFound
from sinergym_cloud.gcp.runtime import Runtime
from sinergym_cloud.gcp.state import Versioned
from sinergym_cloud.lifecycle import Transition
from sinergym_cloud.records import (
    TERMINAL,
    ExperimentRecord,
    ExperimentState,
    FinalizeRecord,
    LaunchRecord,
    summarise,
)
from sinergym_cloud.records import object_metadata as record_metadata

log = logging.getLogger(__name__)

FINALIZE_LEASE = 300.0


def transition(
    rt: Runtime,
    batch_id: str,
    index: int,
    step: Callable[[ExperimentRecord], Transition],
    known: Versioned | None = None,
) -> tuple[ExperimentRecord | None, Transition]:
    """Apply one lifecycle transition to an experiment's record by compare-and-swap.

    ``step`` runs on the record as it is now (again after each lost race); the record is written only
    if the transition applied. Returns the record as it then is (None if there is no such
    experiment) and the transition that decided it. ``known``: the record as the caller has just
    read it (StateStore.update). A change of state is announced on ``batch-events`` (announce.py)."""
    decided = [lifecycle.NOT_APPLIED]
    before = [""]

    def change(doc: dict[str, Any]) -> dict[str, Any] | None:
        rec = ExperimentRecord.model_validate(doc)
        before[0] = rec.state
        decided[0] = step(rec)
        return rec.doc() if decided[0].applied else None

    doc = rt.state.update(names.experiment_object(batch_id, index), change, metadata=record_metadata, known=known)
    rec = ExperimentRecord.model_validate(doc) if doc is not None else None
    if rec is not None and decided[0].applied and rec.state != before[0]:
        rt.later(announce.changed, rt, rec, before[0], time.time())  # off the path to the next VM request
    return rec, decided[0]


def read_launch(rt: Runtime, batch_id: str) -> LaunchRecord | None:
    """The batch's launch record, or None if it has none."""
    doc = rt.state.read(names.launch_object(batch_id))
    return LaunchRecord.model_validate(doc.data) if doc is not None else None


def vm_creation_time(rt: Runtime, zone: str, instance: str) -> float | None:
    """When the VM was created (Compute Engine's creationTimestamp), for the report's VM-hours;
    None if it is gone or cannot be read. Read when a VM's life ends: its completion, or the sweeper
    giving up on it."""
    try:
        return rt.compute.created_at(zone, instance)
    except Exception as exc:  # noqa: BLE001 - a missing cost figure must not stop the cleanup
        log.warning("could not read the creation time of %s: %s", instance, exc)
        return None


def move_to_next_zone(rt: Runtime, launch: LaunchRecord, rec: ExperimentRecord, why: str) -> str:
    """Zone failover: move a pending experiment to the batch's next zone, for ``why`` (its zone has
    not created its VM for a while, or preempts it again and again). Its record first (zone, group,
    the move in its history), then its VM, asked for in the group there, then the old request
    withdrawn; queued experiments start in the new zone from then on. Returns "zone -> zone" if it
    moved, "" otherwise (the last zone, or it boots meanwhile).

    A crash between the steps heals on the next sweep: the record names the new zone, whose group
    does not have the VM yet, so the experiment is retried there as a VM that vanished."""
    zones = launch.all_zones
    if rec.zone not in zones or rec.zone == zones[-1]:
        return ""
    old_zone, old_mig = rec.zone, rec.mig
    zone = zones[zones.index(rec.zone) + 1]
    mig = launch.group_in(zone, rec.index)
    updated, t = transition(rt, rec.batch_id, rec.index, lambda r: lifecycle.move(r, zone, mig, why))
    if not t.applied or updated is None:
        return ""
    rt.compute.ensure_group(zone, mig, launch.template, batch_id=rec.batch_id)
    rt.compute.create_instances(zone, mig, {rec.instance: names.instance_metadata(rec.batch_id, rec.index)})
    try:  # the request the old zone could not fulfil; its group goes with the batch in any case
        rt.compute.delete_instances(old_zone, old_mig, [rec.instance])
    except Exception:  # the move is done; the next sweep withdraws it (sweeper.withdraw_left_behind)
        log.exception("%s/%d: could not withdraw the VM request from %s/%s", rec.batch_id, rec.index, old_zone, old_mig)
    log.warning("%s/%d moved %s -> %s: %s", rec.batch_id, rec.index, old_zone, zone, why)
    advance_zone(rt, launch, zone)
    return f"{old_zone} -> {zone}"


def advance_zone(rt: Runtime, launch: LaunchRecord, zone: str) -> None:
    """Queued experiments of the batch start in ``zone`` from now on (only ever forward in the
    batch's zone list: two moves that race leave it at the later zone)."""
    zones = launch.all_zones

    def change(doc: dict[str, Any]) -> dict[str, Any] | None:
        current = str(doc.get("current_zone") or doc.get("zone") or "")
        if current in zones and zones.index(current) >= zones.index(zone):
            return None
        doc["current_zone"] = zone
        return doc

    rt.state.update(names.launch_object(launch.batch_id), change)


def remove_vm(rt: Runtime, rec: ExperimentRecord) -> None:
    """Ask the experiment's group to delete its VM (``deleteInstances``; idempotent)."""
    rt.compute.delete_instances(rec.zone, rec.mig, [rec.instance])
    log.info("%s %s: deleteInstances requested for %s", rec.batch_id, rec.state, rec.instance)


def settle(rt: Runtime, rec: ExperimentRecord, *, removal_requested: bool = False) -> None:
    """The follow-up of a terminal experiment: its VM removed through the group (``removal_requested``:
    the caller has just asked, see queue.follow_up), a failure reported.

    Each step is marked in the record when done, so a redelivery redoes only what is missing."""
    if rec.delete_requested_at is None:
        if not removal_requested:
            remove_vm(rt, rec)
        transition(rt, rec.batch_id, rec.index, lambda r: lifecycle.mark(r, "delete_requested_at", time.time()))
    if rec.state == "failed" and rec.alerted_at is None:
        alerts.experiment_failed(rt, rec)
        transition(rt, rec.batch_id, rec.index, lambda r: lifecycle.mark(r, "alerted_at", time.time()))
        alerts.check_failure_rate(rt, rec.batch_id, experiment_listing(rt, rec.batch_id))


def set_terminal(
    rt: Runtime, batch_id: str, index: int, state: ExperimentState, reason: str
) -> ExperimentRecord | None:
    """Force an experiment into a terminal state (cancel, rollback, sweeper), unless it already is.
    Returns the record if this call ended it."""
    rec, t = transition(rt, batch_id, index, lambda r: lifecycle.force_terminal(r, state, reason, time.time()))
    return rec if t.applied else None


Listing = dict[int, tuple[dict[str, str], float | None]]


def experiment_listing(rt: Runtime, batch_id: str) -> Listing:
    """Every experiment's object metadata (records.object_metadata: state, VM-hours, an end's reason
    and last log line) and update time, from one listing."""
    found: Listing = {}
    prefix = names.experiments_prefix(batch_id)
    for name, meta, updated in rt.state.listing(prefix):
        index = int(name[len(prefix) :].removesuffix(".json"))
        found[index] = (meta, updated.timestamp() if updated is not None else None)
    return found


def experiment_states(rt: Runtime, batch_id: str) -> dict[int, str]:
    """Every experiment's state, from one listing (the state is in each object's metadata)."""
    return {index: meta.get("state", "") for index, (meta, _) in experiment_listing(rt, batch_id).items()}


def finalize_if_done(rt: Runtime, batch_id: str, owner: str) -> bool:  # noqa: PLR0911 - one return per reason to stop
    """If no experiment of the batch is live, delete its groups and raise the alert, once. True if done."""
    launch = read_launch(rt, batch_id)
    if launch is None:
        return False
    if launch.status == "launching":
        return False
    listing = experiment_listing(rt, batch_id)
    states = {i: meta.get("state", "") for i, (meta, _) in listing.items()}
    if len(states) < launch.experiments or any(s not in TERMINAL for s in states.values()):
        return False
    counts = dict(Counter(states.values()))
    path = names.finalize_object(batch_id)
    now = time.time()
    claim = FinalizeRecord(owner=owner, lease_until=now + FINALIZE_LEASE, counts=counts)
    if not rt.state.create(path, claim.doc()):
        current = rt.state.read(path)
        if current is None:
            return False
        held = FinalizeRecord.model_validate(current.data)
        if _done(current.data):
            rt.state.delete(names.active_object(batch_id))
            return True
        if held.owner != owner and held.lease_until > now:
            log.info("batch %s: teardown is being done by %s", batch_id, held.owner)
            return False

        def take_over(doc: dict[str, Any]) -> dict[str, Any] | None:
            if _done(doc) or (doc["owner"] != owner and doc["lease_until"] > time.time()):
                raise _Lost
            doc["owner"] = owner
            doc["lease_until"] = time.time() + FINALIZE_LEASE
            return doc

        try:
            rt.state.update(path, take_over)
        except _Lost:
            return False
        claimed = rt.state.read(path)
        assert claimed is not None, "a claim just written cannot be missing"
        claim = FinalizeRecord.model_validate(claimed.data)
    if not claim.mig_deleted:
        for zone, mig in launch.groups():
            deleted = rt.compute.delete_group(zone, mig)
            log.info("batch %s: group %s/%s %s", batch_id, zone, mig, "deleted" if deleted else "was already gone")
        rt.state.update(path, lambda doc: {**doc, "mig_deleted": True})
    summary = summarise(listing, now)
    note = finish_note(launch)
    finished_at = claim.finished_at or time.time()
    if not claim.alerted:
        alerts.batch_finished(rt, launch, summary, note)
        rt.state.update(
            path,
            lambda doc: {
                **doc,
                "alerted": True,
                "finished_at": finished_at,
                "counts": counts,
                "vm_hours": round(summary.vm_hours, 5),
            },
        )
    batch_index.finished(rt, launch, summary, announce.batch_outcome(launch), finished_at)
    if claim.announced is False:
        announce.finished(rt, launch, summary, note)
        rt.state.update(path, lambda doc: {**doc, "announced": True})
    rt.state.delete(names.active_object(batch_id))
    log.info("batch %s finished: %s", batch_id, counts)
    return True


def _done(claim: dict[str, Any]) -> bool:
    """Every step of a teardown claim is done (a claim from before events has no ``announced``)."""
    return bool(claim.get("alerted")) and claim.get("announced") is not False


def finish_note(launch: LaunchRecord) -> str:
    """What the batch-finished alert adds to the counts: that the VM-hour budget stopped the batch."""
    if not launch.budget_reached:
        return ""
    return (
        f"The VM-hour budget of {launch.max_vm_hours:g} h was reached: experiments not started were cancelled "
        f"({launch.budget_reached}). "
    )


class _Lost(Exception):
    """Another owner holds the teardown claim (a private signal inside finalize_if_done)."""


def cancel(rt: Runtime, batch_id: str, reason: str = "cancelled by user") -> dict[str, Any]:
    """Stop a batch: no further launch, every live experiment cancelled, its groups and VMs deleted."""
    launch_doc = rt.state.read(names.launch_object(batch_id))
    if launch_doc is None:
        raise BatchNotFound(batch_id)

    def cancelled(doc: dict[str, Any]) -> dict[str, Any] | None:
        if doc["status"] in ("cancelled", "failed"):
            return None
        doc["status"] = "cancelled"
        doc["error"] = reason
        return doc

    launch = LaunchRecord.model_validate(rt.state.update(names.launch_object(batch_id), cancelled))
    changed = []
    for index, state in sorted(experiment_states(rt, batch_id).items()):
        if state not in TERMINAL and set_terminal(rt, batch_id, index, "cancelled", reason):
            changed.append(index)
    for zone, mig in launch.groups():
        rt.compute.delete_group(zone, mig)
    try:
        finalize_if_done(rt, batch_id, owner=f"cancel-{batch_id}")
    except Exception as exc:  # noqa: BLE001 - the experiments are cancelled and the groups gone already
        # e.g. the caller may not publish on batch-events: the sweeper takes the teardown's last steps
        # (the alert, the event, the index) over once its claim's lease runs out.
        log.warning("batch %s: the teardown's last steps are left to the sweeper: %s", batch_id, exc)
    return {"batch_id": batch_id, "cancelled": changed, "groups_deleted": launch.migs}
