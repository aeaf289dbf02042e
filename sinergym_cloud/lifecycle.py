"""An experiment's state machine: every transition of its record, as pure functions.

The functions (dispatch, cleanup, the sweeper, cancel, launch's rollback) each apply one of these
inside a compare-and-swap on the experiment's state object (``state.update``): the transition reads
the record as it is now, changes it or says it does not apply, and names the side effects the caller
performs after the write succeeded (remove the VM, recreate it, tear the batch down). Nothing here
talks to a cloud, so the whole table is unit-tested (tests/test_lifecycle.py).

States::

    queued ──promote──▶ pending ──claim_boot──▶ starting ──trainer_started──▶ running ──completed──▶ succeeded
                         ▲                                                     │
                         └── retried within the budget (failed, preempted, lost) ◀┘
    any live state ──force_terminal──▶ failed | cancelled;  over a budget ──▶ failed
    queued ──never_started──▶ cancelled (the batch's VM-hour budget is reached)
    starting | running ──pruned (a sweep's pruner, or a pruned completion)──▶ pruned

Two budgets: infrastructure losses (a preemption, a VM that vanished or never became ready) count
against ``max_preemptions``; trainer deaths (a failed completion, a silent trainer) against
``max_failures``. A ``fatal`` loss (over the maximum runtime) fails at once.

The queue (invariant 10, waiting is not failing): a batch runs at most ``parallelism`` experiments at
once; the others are ``queued``, asked nothing of Compute and never timed out. An experiment that
ends hands its VM slot to one queued experiment: ``hand_over`` records in the ended experiment's own
record which one (once, so duplicate deliveries agree), ``promote`` moves that one from queued to
pending (once, so two experiments that end together never start the same one). ``control/queue.py``
runs the two in that order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from sinergym_cloud.records import TERMINAL, ExperimentRecord, ExperimentState

Loss = Literal["infra", "trainer", "fatal"]
Effect = Literal[
    "settle",  # terminal: remove the VM through its group, report a failure; then finalize the batch
    "recreate",  # retried: ask the group for a fresh VM of the same name
    "request_vm",  # started from the queue: ask the group for the experiment's VM
    "release_vm",  # back to the queue: withdraw the VM request the group could not fulfil
]
BOOTED = ("starting", "running")  # a boot of the experiment is claimed and (about to be) training
NOBODY = -1  # ``handed_to`` of an experiment whose slot went to no one (nothing was queued, or fewer VMs now)


@dataclass(frozen=True)
class Budgets:
    max_failures: int
    max_preemptions: int


@dataclass
class Transition:
    """What a transition did to the record: whether it applied, and what the caller must do next."""

    applied: bool
    outcome: str = ""  # a word for logs and reports: "succeeded", "retried", "failed", ...
    effects: set[Effect] = field(default_factory=set)


NOT_APPLIED = Transition(applied=False, outcome="unchanged")


def _spend(rec: ExperimentRecord, loss: Loss, budgets: Budgets) -> tuple[bool, str]:
    """Count a loss against its budget. Returns (over the budget, how it is described when over)."""
    if loss == "infra":
        rec.preemptions += 1
        return rec.preemptions > budgets.max_preemptions, f"budget {budgets.max_preemptions}"
    if loss == "trainer":
        rec.failures += 1
        return rec.failures > budgets.max_failures, f"budget {budgets.max_failures}"
    return True, "fatal"


def _finish(rec: ExperimentRecord, state: ExperimentState, reason: str, now: float) -> None:
    rec.state = state
    rec.reason = reason
    rec.finished_at = now


def _retry(rec: ExperimentRecord) -> None:
    """Back to pending: the next boot (a recreated VM) claims it afresh and resumes from the checkpoint."""
    rec.state = "pending"
    rec.boot_id = None
    rec.quota_seen_at = None  # a fresh VM request: its refusals are counted afresh


def promote(rec: ExperimentRecord, by: int | str, now: float, where: tuple[str, str] | None = None) -> Transition:
    """A queued experiment gets a VM slot (from launch, or from the experiment ``by`` that ended).

    ``where``: the (zone, group) its VM is asked for in, if not the one it was queued for (the batch
    failed over to another zone meanwhile). Not a move: it never asked its first zone."""
    if rec.state != "queued":
        return NOT_APPLIED
    rec.state = "pending"
    rec.started_by = by
    rec.started_at = now
    rec.note("started", f"VM slot from {'launch' if by == 'launch' else f'experiment {by}'}")
    if where is not None and where[0] != rec.zone:
        rec.note("zone", f"starts in {where[0]}, where the batch runs since a failover (queued for {rec.zone})")
        rec.zone, rec.mig = where
    return Transition(applied=True, outcome="started", effects={"request_vm"})


def hand_over(rec: ExperimentRecord, to: int | None, *, expected: int | None) -> Transition:
    """Record who gets an ended experiment's VM slot (``NOBODY``: no one). Applies only if the record
    still names ``expected`` (None the first time), so concurrent deliveries settle on one choice, and
    a choice that another experiment's hand-over took first can be withdrawn (``to=None``)."""
    if not rec.terminal or rec.handed_to != expected or to == expected:
        return NOT_APPLIED
    rec.handed_to = to
    return Transition(applied=True, outcome="handed")


def quota_seen(rec: ExperimentRecord, now: float) -> Transition:
    """The sweeper first sees the experiment's VM refused for quota: remember since when (once per
    VM request), so only a refusal that lasts lowers the batch's parallelism."""
    if rec.state != "pending" or rec.boot_id is not None or rec.quota_seen_at is not None:
        return NOT_APPLIED
    rec.quota_seen_at = now
    return Transition(applied=True, outcome="quota_seen")


def requeue(rec: ExperimentRecord, reason: str) -> Transition:
    """A VM that was asked for cannot be had for now (over quota): the experiment waits in the queue
    again instead of being timed out, and its VM request is withdrawn. Only before any boot of it."""
    if rec.state != "pending" or rec.boot_id is not None:
        return NOT_APPLIED
    rec.state = "queued"
    rec.started_by = None
    rec.started_at = None
    rec.quota_seen_at = None
    rec.note("requeued", reason)
    return Transition(applied=True, outcome="requeued", effects={"release_vm"})


def move(rec: ExperimentRecord, zone: str, mig: str, reason: str) -> Transition:
    """Zone failover: a VM that was asked for and that its zone cannot create (a stockout) is asked
    for in ``zone``'s group ``mig`` instead. Only before any boot of it; the same record (and so the
    same MLflow run) goes on, and the boot timeout counts from the move."""
    if rec.state != "pending" or rec.boot_id is not None or zone == rec.zone:
        return NOT_APPLIED
    rec.moved_from.append(rec.zone)
    rec.note("moved", f"{rec.zone} -> {zone}: {reason}")
    rec.zone, rec.mig = zone, mig
    return Transition(applied=True, outcome="moved", effects={"release_vm", "request_vm"})


def preemptions_in_zone(rec: ExperimentRecord) -> int:
    """How often the experiment's VM was preempted since it came to its current zone (its history
    after its last move or zone change)."""
    count = 0
    for event in reversed(rec.history):
        if event.event in ("moved", "zone"):
            break
        count += event.event == "completion:preempted"
    return count


def never_started(rec: ExperimentRecord, reason: str, now: float) -> Transition:
    """A queued experiment that will not be started (its batch's budget is reached): cancelled with
    the reason. Only while it is still queued: one that got a slot meanwhile runs to its end."""
    if rec.state != "queued":
        return NOT_APPLIED
    _finish(rec, "cancelled", reason, now)
    rec.note("cancelled", reason)
    return Transition(applied=True, outcome="cancelled")


@dataclass(frozen=True)
class VerifiedBoot:
    """What dispatch verified of a VM boot before claiming it (Compute's record of the VM, a verified
    SSH session), and the completion key it hands that boot, kept only as a hash (signing.py)."""

    boot_id: str
    vm_id: str | None = None
    vm_created_at: float | None = None
    completion_nonce: str | None = None
    completion_key_sha256: str | None = None


def claim_boot(rec: ExperimentRecord, boot: VerifiedBoot, now: float, *, vm_recreated: bool) -> Transition:
    """Dispatch takes the experiment for a VM boot it has verified. A boot is claimed once, and a boot
    that is starting or running is replaced only when Compute shows its VM was recreated. A queued
    experiment is never claimed: it holds no VM slot, so a VM of it is one whose request was
    withdrawn (requeued) without Compute hearing of it, and claiming it would run the experiment
    beside the batch's parallelism."""
    if rec.terminal or rec.state == "queued" or (rec.boot_id == boot.boot_id and rec.state in BOOTED):
        return NOT_APPLIED
    if rec.state in BOOTED and not vm_recreated:
        return NOT_APPLIED  # another boot was claimed meanwhile, on this same VM
    rec.state = "starting"
    rec.boot_id = boot.boot_id
    rec.attempts += 1
    rec.dispatched_at = now
    rec.vm_id = boot.vm_id
    rec.vm_created_at = boot.vm_created_at
    rec.completion_nonce = boot.completion_nonce
    rec.completion_key_sha256 = boot.completion_key_sha256
    rec.note("dispatch", f"boot {boot.boot_id}")
    return Transition(applied=True, outcome="starting")


def trainer_started(rec: ExperimentRecord, boot_id: str, answer: str, now: float) -> Transition:
    """The VM agent answered that the trainer of this boot runs."""
    if rec.boot_id != boot_id or rec.state != "starting":
        return NOT_APPLIED
    rec.state = "running"
    rec.running_at = now
    rec.note("trainer", answer)
    return Transition(applied=True, outcome="running")


@dataclass(frozen=True)
class Ending:
    """What a completion message reports about one boot's trainer (already checked against its contract)."""

    status: Literal["succeeded", "failed", "preempted", "pruned"]
    boot_id: str
    exit_reason: str = ""
    error_type: str = ""
    mlflow_run_id: str | None = None
    output_uris: tuple[str, ...] = ()
    metrics: dict[str, float] = field(default_factory=dict)
    timesteps: int = 0
    finished_at: float | None = None
    log_tail: tuple[str, ...] = ()  # the trainer's last log lines (a failure's), already cleaned


LOG_TAIL_KEPT = 10  # lines of a trainer's log tail an experiment's record keeps


def completed(rec: ExperimentRecord, end: Ending, budgets: Budgets, vm_created: float | None, now: float) -> Transition:
    """A trainer's completion: succeeded; failed (retried within ``max_failures``); preempted (the
    group recreates a preempted VM by itself, and its boot resumes, within ``max_preemptions``).

    A duplicate or late completion of a terminal experiment, or one from an earlier boot, changes
    nothing (the caller still makes sure a terminal experiment is settled)."""
    if rec.terminal:
        return Transition(applied=False, outcome="duplicate", effects={"settle"})
    if rec.state not in BOOTED or end.boot_id != rec.boot_id:
        return Transition(applied=False, outcome="stale")  # no boot of it runs, or another one does
    rec.vm_booted(end.boot_id, vm_created)
    rec.mlflow_run_id = end.mlflow_run_id or rec.mlflow_run_id
    rec.output_uris = list(end.output_uris) or rec.output_uris
    rec.metrics.update(end.metrics)
    rec.timesteps = max(rec.timesteps, end.timesteps)
    if end.finished_at is not None:
        rec.trainer_finished_at = end.finished_at
    if end.log_tail:
        rec.log_tail = list(end.log_tail)[-LOG_TAIL_KEPT:]
    t = Transition(applied=True)
    if end.status in ("succeeded", "pruned"):
        _finish(rec, end.status, "pruned by the sweep's pruner" if end.status == "pruned" else "", now)
        t.outcome = end.status
    elif end.status == "failed":
        over, _ = _spend(rec, "trainer", budgets)
        if over:
            reason = f"{end.error_type + ': ' if end.error_type else ''}{end.exit_reason}".strip() or "trainer failed"
            _finish(rec, "failed", reason, now)
            t.outcome = "failed"
        else:
            _retry(rec)
            t.outcome = "retried"
            t.effects.add("recreate")
    else:  # preempted
        over, budget = _spend(rec, "infra", budgets)
        if over:
            _finish(rec, "failed", f"preempted {rec.preemptions} times ({budget})", now)
            t.outcome = "failed"
        else:
            _retry(rec)  # no effect: the group recreates a preempted VM by itself
            t.outcome = "retried"
    if rec.terminal:
        t.effects.add("settle")
    rec.note(f"completion:{end.status}", end.exit_reason or end.status)
    return t


def lost(
    rec: ExperimentRecord,
    *,
    seen_boot: str | None,
    seen_state: str,
    loss: Loss,
    reason: str,
    budgets: Budgets,
    vm_created: float | None,
    now: float,
    log_tail: tuple[str, ...] = (),
) -> Transition:
    """The sweeper gives up on the boot it saw (``seen_boot`` in ``seen_state``): retried on a fresh VM
    within the loss's budget, or failed. If the record moved on meanwhile, nothing changes.
    ``log_tail``: the boot's last log lines, as its log in the bucket has them."""
    if rec.terminal or rec.state == "queued" or rec.boot_id != seen_boot or rec.state != seen_state:
        return NOT_APPLIED  # a queued experiment asked for nothing: it cannot be lost
    if log_tail:
        rec.log_tail = list(log_tail)[-LOG_TAIL_KEPT:]
    if rec.boot_id:
        rec.vm_booted(rec.boot_id, vm_created)
    over, _ = _spend(rec, loss, budgets)
    if over:
        _finish(rec, "failed", reason, now)
        t = Transition(applied=True, outcome="failed", effects={"settle"})
    else:
        _retry(rec)
        t = Transition(applied=True, outcome="retried", effects={"recreate"})
    rec.note(f"sweeper:{t.outcome}", reason)
    return t


def reported(rec: ExperimentRecord, boot_id: str, episode: int, value: float) -> Transition:
    """A sweep trial's trainer reported the objective after ``episode`` (its running boot only)."""
    if rec.terminal or rec.boot_id != boot_id or str(episode) in rec.intermediate:
        return NOT_APPLIED
    rec.intermediate[str(episode)] = value
    return Transition(applied=True, outcome="reported")


def reports_repeated(rec: ExperimentRecord, boot_id: str, values: dict[int, float]) -> None:
    """A sweep trial's completion repeats its episode reports: keep those whose Progress has not
    arrived yet (a report delivered after the completion finds the trial ended and counts no more).
    Part of the completion's transition, of its running boot only."""
    if rec.terminal or rec.boot_id != boot_id:
        return
    for episode, value in sorted(values.items()):
        rec.intermediate.setdefault(str(episode), float(value))


def pruned(rec: ExperimentRecord, boot_id: str, episode: int, attrs: dict[str, object], now: float) -> Transition:
    """The sweep's pruner stopped the trial after ``episode``: it ends ``pruned`` and its VM goes at
    once (the trainer's last checkpoint was written before it reported). Only the boot that reported, still live."""
    if rec.terminal or rec.boot_id != boot_id:
        return NOT_APPLIED
    rec.pruner_attrs = dict(attrs)
    _finish(rec, "pruned", f"pruned after episode {episode}", now)
    rec.note("pruned", f"after episode {episode}")
    return Transition(applied=True, outcome="pruned", effects={"settle"})


def force_terminal(rec: ExperimentRecord, state: ExperimentState, reason: str, now: float) -> Transition:
    """Cancel, roll back or give up on an experiment from outside its own life, unless it already ended."""
    assert state in TERMINAL, f"{state} is not a terminal state"
    if rec.terminal:
        return NOT_APPLIED
    _finish(rec, state, reason, now)
    rec.note(state, reason)
    return Transition(applied=True, outcome=state, effects={"settle"})


def noted(rec: ExperimentRecord, event: str, detail: str) -> Transition:
    """Something worth keeping in the experiment's history happened, without changing its state."""
    rec.note(event, detail)
    return Transition(applied=True, outcome="noted")


def token_handed(rec: ExperimentRecord, boot_id: str, issued: float, expires: float) -> Transition:
    """Dispatch handed the running boot ``boot_id`` a Cloud Storage token valid until ``expires``."""
    if rec.terminal or rec.boot_id != boot_id or (rec.token_expires_at or 0) >= expires:
        return NOT_APPLIED
    rec.token_issued_at, rec.token_expires_at = issued, expires
    return Transition(applied=True, outcome="token")


def mark(rec: ExperimentRecord, step: Literal["delete_requested_at", "alerted_at"], now: float) -> Transition:
    """Record that a follow-up step of a terminal experiment was done, once."""
    if getattr(rec, step) is not None:
        return NOT_APPLIED
    setattr(rec, step, now)
    return Transition(applied=True, outcome=step)
