"""sweeper: the scheduled safety net (Cloud Scheduler -> Pub/Sub -> this; a timer on the local cloud).

Completion messages drive the normal path. The sweeper catches what they cannot: a trainer that
went silent (killed, out of memory: no heartbeat for ``heartbeat_timeout``), a VM that never
became ready (``boot_timeout``: failed boot, quota, zone exhausted), a VM that vanished, a VM past
the maximum runtime, a launch that never finished, and a batch teardown whose owner crashed.

Last, it deletes orphan groups: a group (named by its description after its batch) whose batch is
no longer active or has no record at all, older than ``orphan_grace``. Such a group can outlive its
batch when a cancel's teardown runs while launch is still creating groups, or when state is lost.

Lost experiments are retried, resuming from their checkpoint, within two separate budgets: infra
losses (preemption, a vanished or never-ready VM) count against ``max_preemptions``, trainer
deaths against ``max_failures``. Beyond the budget the experiment fails with the reason, its VM is
removed through the group and on-call staff are alerted, through the same code as cleanup.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from sinergym_cloud import contracts, lifecycle, names, text
from sinergym_cloud.contracts import Batch, TokenRefresh
from sinergym_cloud.control import batches, launch, queue
from sinergym_cloud.control.events import Delivery
from sinergym_cloud.gcp import logs, metrics, tokens
from sinergym_cloud.gcp.runtime import Runtime
from sinergym_cloud.records import LIVE, TERMINAL, ExperimentRecord, LaunchRecord

log = logging.getLogger(__name__)


def handle(rt: Runtime, d: Delivery) -> None:
    report = sweep(rt)
    log.info("sweep: %s", report)


QUOTA_EXCEEDED = "QUOTA_EXCEEDED"  # Compute's error code in a group's creation attempts
STOCKOUT = "ZONE_RESOURCE_POOL_EXHAUSTED"  # the zone has no resources for the VM now
ORPHAN_GRACE = 600.0  # seconds a group of an inactive batch is left alone (a teardown in progress)


def sweep(
    rt: Runtime, now: float | None = None, only: set[str] | None = None, orphan_grace: float = ORPHAN_GRACE
) -> dict[str, Any]:
    """Sweep every active batch (or only the ones named), then orphan groups. Returns what was done."""
    now = time.time() if now is None else now
    report: dict[str, Any] = {
        "batches": 0,
        "retried": [],
        "failed": [],
        "finalized": [],
        "orphans": [],
        "requeued": [],
        "started": [],
        "moved": [],
        "withdrawn": [],
    }
    active = [name.removeprefix(names.ACTIVE_PREFIX) for name, _, _ in rt.state.listing(names.ACTIVE_PREFIX)]
    for batch_id in active:
        if only is not None and batch_id not in only:
            continue
        report["batches"] += 1
        try:
            sweep_batch(rt, batch_id, now, report)
        except Exception:
            log.exception("sweeping batch %s failed", batch_id)
    try:
        still = set(active) - set(report["finalized"])  # the batches finalized just now are over
        sweep_orphans(rt, now, still, only=only, grace=orphan_grace, report=report)
    except Exception:
        log.exception("sweeping orphan groups failed")
    return report


def sweep_orphans(
    rt: Runtime, now: float, active: set[str], *, only: set[str] | None, grace: float, report: dict[str, Any]
) -> None:
    """Delete the groups (and so their VMs) of batches that are over or unknown, in every zone used."""
    zones = {name.removeprefix(names.ZONES_PREFIX) for name, _, _ in rt.state.listing(names.ZONES_PREFIX)}
    for zone in sorted(zones):
        try:
            groups = rt.compute.list_groups(zone)
        except Exception:
            log.exception("could not list the groups of zone %s", zone)
            continue
        for group in groups:
            batch_id = names.batch_of_group(group.description, rt.settings.state_bucket)
            if batch_id is None or batch_id in active or (only is not None and batch_id not in only):
                continue
            try:
                if group.created is None or now - group.created < grace:
                    continue
                known = rt.state.read(names.launch_object(batch_id)) is not None
                why = "its batch is over" if known else "no record of its batch"
                if rt.compute.delete_group(zone, group.name):
                    log.warning("deleted orphan group %s/%s of batch %s: %s", zone, group.name, batch_id, why)
                    report["orphans"].append(f"{zone}/{group.name}: {why}")
            except Exception:  # one group must not stop the others; the next tick tries again
                log.exception("could not sweep group %s/%s", zone, group.name)


def sweep_batch(rt: Runtime, batch_id: str, now: float, report: dict[str, Any]) -> None:
    settings = rt.settings
    record = batches.read_launch(rt, batch_id)
    if record is None:
        return
    if record.status == "launching":
        if now - record.created_at > settings.boot_timeout:
            stored = rt.state.read(names.batch_object(batch_id))
            if stored is not None:
                reason = f"launch did not complete within {settings.boot_timeout:.0f}s"
                launch.rollback(rt, Batch.model_validate(stored.data["batch"]), reason)
                report["failed"].append(batch_id)
        return
    members = _members(rt, record)
    states = batches.experiment_states(rt, batch_id)
    for index, state in sorted(states.items()):
        if state == "queued":
            withdraw_queued(rt, record, index, members, report)
        if state in TERMINAL or state == "queued":
            continue  # a queued experiment asked for nothing yet: it is never timed out
        current = rt.state.read(names.experiment_object(batch_id, index))
        if current is None:
            continue
        rec = ExperimentRecord.model_validate(current.data)
        withdraw_left_behind(rt, rec, members)
        member = members.get((rec.zone, rec.instance))
        _sweep_experiment(rt, record, rec, member=member, states=states, now=now, report=report)
    report["started"] += [f"{batch_id}/{i}" for i in restart_queue(rt, record)]
    if batches.finalize_if_done(rt, batch_id, owner="sweeper"):
        report["finalized"].append(batch_id)


def _sweep_experiment(
    rt: Runtime,
    record: LaunchRecord,
    rec: ExperimentRecord,
    *,
    member: dict[str, Any] | None,
    states: dict[int, str],
    now: float,
    report: dict[str, Any],
) -> None:
    """One live experiment: moved on a stockout, requeued on quota, or lost (retried or failed)."""
    where = f"{rec.batch_id}/{rec.index}"
    if member is not None and rec.boot_id is None and STOCKOUT in member["codes"]:
        moved = failover(rt, record, rec, now)
        if moved:
            report.setdefault("moved", []).append(f"{where}: {moved}")
            return
    if member is not None and rec.boot_id is None and QUOTA_EXCEEDED in member["codes"]:
        if over_quota(rt, record, rec, member, states, now=now):
            report["requeued"].append(f"{where}: {QUOTA_EXCEEDED}")
        return  # waiting for quota is not failing: never timed out for it
    verdict = diagnose(rt, rec, record, member, now)
    if verdict is None:
        if rec.state == "running" and tokens.needs_refresh(rec.token_issued_at, rec.token_expires_at, now):
            ask_token_refresh(rt, rec)
            report.setdefault("tokens", []).append(where)
        return
    kind, reason = verdict
    outcome = lose(rt, rec, kind, reason, record.template, results_bucket=record.results_bucket)
    report["failed" if outcome == "failed" else "retried"].append(f"{where}: {reason}")


def _members(rt: Runtime, record: LaunchRecord) -> dict[tuple[str, str], dict[str, Any]]:
    """Every VM the batch's groups hold in every zone it uses, by (zone, name), as the groups report them."""
    members: dict[tuple[str, str], dict[str, Any]] = {}
    for zone, mig in record.groups():
        for m in rt.compute.members(zone, mig) or []:
            members[(zone, m.name)] = {
                "status": m.status,
                "action": m.action,
                "errors": m.errors,
                "codes": m.error_codes,
                "mig": mig,
            }
    return members


def over_quota(
    rt: Runtime,
    launch_rec: LaunchRecord,
    rec: ExperimentRecord,
    member: dict[str, Any],
    states: dict[int, str],
    *,
    now: float,
) -> bool:
    """A VM the group cannot create for quota: run one experiment fewer at once, and put this one back
    in the queue (its VM request withdrawn), unless it is the batch's last live one, which waits for
    the group's retries. Only once the refusal has lasted ``quota_grace``: a VM being deleted holds
    its quota until it is gone, and the group's retry then succeeds. True if it was requeued."""
    live = sum(1 for s in states.values() if s in LIVE)
    if live <= 1:
        return False
    if rec.quota_seen_at is None:
        batches.transition(rt, rec.batch_id, rec.index, lambda r: lifecycle.quota_seen(r, now))
        return False
    if now - rec.quota_seen_at < rt.settings.quota_grace:
        return False
    why = next((e for e in member["errors"] if e.startswith(QUOTA_EXCEEDED)), QUOTA_EXCEEDED)
    lower_parallelism(rt, launch_rec.batch_id, live - 1, why)
    updated, t = batches.transition(rt, rec.batch_id, rec.index, lambda r: lifecycle.requeue(r, why))
    if not t.applied or updated is None:
        return False
    rt.compute.delete_instances(rec.zone, rec.mig, [rec.instance])
    states[rec.index] = "queued"
    log.warning("%s/%d back in the queue: %s", rec.batch_id, rec.index, why)
    return True


def waiting_since(rec: ExperimentRecord) -> float:
    """Since when a live experiment has waited for its VM: its creation, dispatch or last change."""
    return max(rec.created_at, rec.dispatched_at or 0.0, rec.history[-1].at if rec.history else 0.0)


def failover(rt: Runtime, launch_rec: LaunchRecord, rec: ExperimentRecord, now: float) -> str:
    """Move an experiment whose zone has not been able to create its VM for ``zone_failover_seconds``
    (a stockout) to the batch's next zone (batches.move_to_next_zone). Returns "zone -> zone" if it
    moved, "" otherwise."""
    waited = now - waiting_since(rec)
    if waited < rt.settings.zone_failover_seconds:
        return ""
    return batches.move_to_next_zone(rt, launch_rec, rec, f"{STOCKOUT} for {waited:.0f}s")


def withdraw_left_behind(rt: Runtime, rec: ExperimentRecord, members: dict[tuple[str, str], dict[str, Any]]) -> None:
    """A VM request still open in a zone the experiment moved away from (its withdrawal failed):
    withdraw it now, before the zone's stock comes back and a second VM of the experiment boots."""
    for zone in dict.fromkeys(rec.moved_from):
        left = members.get((zone, rec.instance))
        if zone != rec.zone and left is not None and left["action"] != "DELETING":
            log.warning("%s/%d: withdrawing its VM request left in %s", rec.batch_id, rec.index, zone)
            rt.compute.delete_instances(zone, left["mig"], [rec.instance])


def withdraw_queued(
    rt: Runtime,
    record: LaunchRecord,
    index: int,
    members: dict[tuple[str, str], dict[str, Any]],
    report: dict[str, Any],
) -> None:
    """A queued experiment holds no VM slot: a VM request its group still has for it is one whose
    withdrawal failed after it was requeued (over quota). Withdraw it now, once the record, read
    again, still says queued: else, when the quota comes back, its VM would boot beside the
    batch's parallelism. (A promotion between that read and the withdrawal loses its VM request;
    the experiment is then retried as a VM that vanished.)"""
    instance = names.instance_name(record.group, record.batch_id, index)
    left = [(zone, m) for (zone, name), m in members.items() if name == instance and m["action"] != "DELETING"]
    if not left:
        return
    current = rt.state.read(names.experiment_object(record.batch_id, index))
    if current is None or current.data.get("state") != "queued":
        return
    for zone, member in left:
        log.warning("%s/%d is queued: withdrawing its VM request left in %s", record.batch_id, index, zone)
        rt.compute.delete_instances(zone, member["mig"], [instance])
        report.setdefault("withdrawn", []).append(f"{record.batch_id}/{index}")


def lower_parallelism(rt: Runtime, batch_id: str, value: int, why: str) -> None:
    """Run at most ``value`` experiments of the batch at once from now on (only ever lowered here)."""

    def change(doc: dict[str, Any]) -> dict[str, Any] | None:
        current = doc.get("parallelism")
        if current is not None and current <= value:
            return None
        if doc.get("parallelism_launched") is None:
            doc["parallelism_launched"] = current
        doc["parallelism"] = max(1, value)
        doc["parallelism_lowered"] = f"lowered to {max(1, value)} at run time: {why}"[:500]
        doc["parallelism_lowered_at"] = time.time()
        return doc

    rt.state.update(names.launch_object(batch_id), change)


def restart_queue(rt: Runtime, launch_rec: LaunchRecord) -> list[int]:
    """The queue's safety net: if experiments wait while the batch runs fewer than it may, an ended
    experiment's hand-over did not happen (its function crashed for good): do it now, the same way."""
    if launch_rec.status != "launched":
        return []
    fresh = batches.read_launch(rt, launch_rec.batch_id)
    limit = fresh.parallelism if fresh else launch_rec.parallelism
    states = batches.experiment_states(rt, launch_rec.batch_id)
    waiting = [i for i, s in states.items() if s == "queued"]
    live = sum(1 for s in states.values() if s in LIVE)
    if not waiting or (limit is not None and live >= limit):
        return []
    started = []
    for index in sorted(i for i, s in states.items() if s in TERMINAL):
        doc = rt.state.read(names.experiment_object(launch_rec.batch_id, index))
        if doc is None:
            continue
        rec = ExperimentRecord.model_validate(doc.data)
        if rec.handed_to is None:
            nxt = queue.start_next(rt, rec)
            if nxt is not None:
                started.append(nxt)
    return started


def ask_token_refresh(rt: Runtime, rec: ExperimentRecord) -> None:
    """Ask dispatch (the only one allowed to mint it) for a fresh storage token for the running boot."""
    assert rec.boot_id is not None, "a running experiment has a boot"
    ask = TokenRefresh(batch_id=rec.batch_id, experiment_index=rec.index, boot_id=rec.boot_id)
    rt.clients.publish(names.TOPIC_READY, contracts.dump(ask), 30.0, kind=names.TOKEN_REFRESH_KIND)
    log.info("%s: storage token past half its life: refresh asked", rec.name)


def diagnose(
    rt: Runtime, rec: ExperimentRecord, record: LaunchRecord, member: dict[str, Any] | None, now: float
) -> tuple[lifecycle.Loss, str] | None:
    """Why a live experiment is lost, as (budget, reason), or None if it looks healthy."""
    s = rt.settings
    if now - rec.created_at > s.max_runtime_hours * 3600:
        metrics.instance_overdue(rt.clients, rec.batch_id, rec.instance, (now - rec.created_at) / 3600)
        return "fatal", f"exceeded the maximum runtime of {s.max_runtime_hours:g} h"
    if member is None:
        return _vanished(rec, now, s.call_deadline)
    if rec.state == "running":
        last = max(rec.running_at or 0.0, _heartbeat(rt, record.results_bucket, rec))
        if now - last > s.heartbeat_timeout:
            return "trainer", f"trainer silent for {now - last:.0f}s (no heartbeat)"
        return None
    since = waiting_since(rec)
    if now - since > s.boot_timeout:
        errors = "; ".join(member["errors"]) if member["errors"] else f"VM {member['status'] or 'not created'}"
        return "infra", f"VM not ready after {now - since:.0f}s ({errors})"
    return None


def _vanished(rec: ExperimentRecord, now: float, grace: float) -> tuple[lifecycle.Loss, str] | None:
    """A live experiment whose VM its groups do not list: lost, unless it has never booted and its
    record changed less than ``grace`` ago (the functions' call deadline). The function that
    promoted, moved or retried it asks the group right after that write, within its deadline, and
    the sweep listed the groups before it read the record: the VM is on its way, not vanished."""
    if rec.boot_id is None and now - waiting_since(rec) < grace:
        return None
    return "infra", "its VM vanished from the group"


def _heartbeat(rt: Runtime, bucket: str, rec: ExperimentRecord) -> float:
    blob = rt.clients.storage.bucket(bucket).get_blob(names.heartbeat_object(rec.batch_id, rec.name), timeout=10)
    return blob.updated.timestamp() if blob is not None and blob.updated else 0.0


def last_lines(rt: Runtime, results_bucket: str, rec: ExperimentRecord) -> tuple[str, ...]:
    """The last lines a lost boot logged (its log in the bucket), for the failure's reason; () if none
    or if the bucket cannot be read now (a missing tail must not stop the sweep)."""
    if not results_bucket or rec.boot_id is None:
        return ()
    try:
        found = logs.tail(rt.clients.storage.bucket(results_bucket), rec.batch_id, rec.name, lifecycle.LOG_TAIL_KEPT)
    except Exception as exc:  # noqa: BLE001 - the tail is a courtesy to whoever reads the failure
        log.info("%s/%d: no log tail read (%s)", rec.batch_id, rec.index, exc)
        return ()
    return tuple(text.clean(line, 300) for line in found)


def lose(
    rt: Runtime, rec: ExperimentRecord, kind: lifecycle.Loss, reason: str, template: str, *, results_bucket: str = ""
) -> str:
    """Retry a lost experiment within its budget, or fail it. Returns "retried", "failed" or "unchanged"."""
    s = rt.settings
    budgets = lifecycle.Budgets(max_failures=s.max_failures, max_preemptions=s.max_preemptions)
    vm_created = batches.vm_creation_time(rt, rec.zone, rec.instance) if rec.boot_id else None
    tail = last_lines(rt, results_bucket, rec)
    updated, t = batches.transition(
        rt,
        rec.batch_id,
        rec.index,
        lambda r: lifecycle.lost(
            r,
            seen_boot=rec.boot_id,
            seen_state=rec.state,
            loss=kind,
            reason=reason,
            budgets=budgets,
            vm_created=vm_created,
            now=time.time(),
            log_tail=tail,
        ),
    )
    if updated is None or not t.applied:
        return "unchanged"  # it moved on meanwhile
    outcome = t.outcome
    log.warning("%s/%d %s: %s", rec.batch_id, rec.index, outcome, reason)
    if outcome == "failed":
        queue.follow_up(rt, updated)
    # Resume on a fresh VM of the same name: its boot publishes instance-ready again. If the VM, or
    # its whole group, is gone (deleted by hand, or a restarted local cloud), they are made again.
    elif not rt.compute.recreate_instance(rec.zone, rec.mig, rec.instance):
        wanted = {rec.instance: names.instance_metadata(rec.batch_id, rec.index)}
        rt.compute.ensure_group(rec.zone, rec.mig, template, batch_id=rec.batch_id)
        rt.compute.create_instances(rec.zone, rec.mig, wanted)
    return outcome
