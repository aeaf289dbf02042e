"""A batch's VM-hour budget (``max_vm_hours``), and the VM-hours it is held to.

Three numbers decide whether one more experiment may start:

- what the batch has used so far, counted as the report counts it (``vm_hours``: each VM from
  Compute Engine's creation time to its deletion request; a live VM until now);
- what the live experiments are still expected to use (their estimate less what they used);
- the estimate of the experiment that would start (``estimate_vm_hours``).

If their sum would pass the budget the experiment is not started, and neither is any experiment
after it: they end ``cancelled`` with a reason that begins with ``budget``. The estimate is the one
``--dry-run`` prints, so the plan and the run agree on what fits. Pure functions: the queue
(control/queue.py) and launch read the records and apply the verdict.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sinergym_cloud.contracts import Experiment

# Typical training speed on the template's 2 vCPUs (steps per second), and Sinergym's usual
# 15-minute step: rough, but the same figure for the plan and for the budget.
STEPS_PER_SECOND = {"PPO": 340.0, "A2C": 340.0, "DQN": 250.0, "DDPG": 150.0, "SAC": 60.0, "TD3": 150.0}
STEPS_PER_HOUR = 4
BOOT_HOURS = 3 / 60  # boot, dispatch, upload and deletion of one VM
REASON = "budget"  # what the reason of an experiment cancelled for the budget begins with


def estimate_vm_hours(exp: Experiment) -> float:
    """Rough VM-hours of one experiment: its timesteps at a typical speed, plus a VM's boot."""
    if exp.runperiod:
        d1, m1, y1, d2, m2, y2 = exp.runperiod
        days = (dt.date(y2, m2, d2) - dt.date(y1, m1, d1)).days + 1
    else:
        days = 365
    steps = exp.episodes * days * 24 * STEPS_PER_HOUR
    if exp.evaluation:
        steps += (exp.episodes // exp.eval_freq) * exp.eval_length * days * 24 * STEPS_PER_HOUR
    return steps / STEPS_PER_SECOND.get(exp.algorithm, 100.0) / 3600 + BOOT_HOURS


def never_asked(e: Mapping[str, Any]) -> bool:
    """An experiment that never had a VM asked for it (it waited queued until it ended, or its
    request was withdrawn before any VM came): it cost nothing. Records older than the queue have
    no ``started_by`` and were all asked for at launch."""
    return (
        e.get("state") == "queued" or ("started_by" in e and e["started_by"] is None and not e.get("vm_created"))
    ) and not e.get("attempts")


def vm_hours(e: Mapping[str, Any], now: float) -> tuple[float | None, float | None]:
    """(VM-hours, idle hours) of one experiment record (as a dict).

    Each VM of the experiment lives from its creation (Compute Engine's creationTimestamp, recorded
    per boot by cleanup and the sweeper) until the next VM of the same experiment was created (a
    preempted or failed VM is replaced) or, for the last, until its ``deleteInstances`` request.
    Experiments with no VM recorded fall back to when their VM was asked for (``started_at``, set
    when the queue gave them a slot; else the record's creation, written just before
    ``createInstances``), which also starts the count when fewer VMs than boots were recorded. An
    experiment that never had a VM asked for costs nothing. Training runs from the trainer's start
    to the end of the run; the rest is idle: booting, waiting to be dispatched, uploading, waiting
    to be deleted.
    """
    if never_asked(e):
        return 0.0, 0.0
    asked = e.get("started_at") or e.get("created_at")
    end = e.get("delete_requested_at") or e.get("finished_at") or now
    created = sorted(float(t) for t in (e.get("vm_created") or {}).values())
    if created and len(created) < int(e.get("attempts") or 0) and asked is not None:
        # A boot whose VM time could not be read (it vanished first): the time the VM was asked
        # for stands in for the first VM's, and a missing later one is covered by its predecessor.
        created.insert(0, float(asked))
    if created:
        lives = [b - a for a, b in itertools.pairwise(created)] + [end - created[-1]]
        alive = sum(max(0.0, life) for life in lives) / 3600
    elif asked is not None:
        alive = max(0.0, end - float(asked)) / 3600
    else:
        return None, None
    training = 0.0
    if e.get("running_at"):
        training = max(0.0, (e.get("finished_at") or now) - e["running_at"]) / 3600
    return alive, max(0.0, alive - training)


LIVE = ("pending", "starting", "running")


@dataclass(frozen=True)
class Verdict:
    """Whether one more experiment fits the budget, and the figures that decided it."""

    fits: bool
    limit: float
    used: float  # VM-hours so far, as the report counts them
    running: float  # still expected of the live experiments
    candidate: float  # the estimate of the one that would start

    @property
    def reason(self) -> str:
        return (
            f"{REASON}: starting it would pass the batch's {self.limit:g} VM-hours "
            f"({self.used:.3f} used, {self.running:.3f} expected of the running, {self.candidate:.3f} for it)"
        )


def check(limit: float, records: Iterable[Mapping[str, Any]], candidate: Experiment, now: float) -> Verdict:
    """May ``candidate`` start under a budget of ``limit`` VM-hours, given every record of the batch?"""
    used = running = 0.0
    for e in records:
        alive = vm_hours(e, now)[0] or 0.0
        used += alive
        if e.get("state") in LIVE:
            spec = Experiment.model_validate(e["spec"]) if isinstance(e.get("spec"), dict) else e["spec"]
            running += max(0.0, estimate_vm_hours(spec) - alive)
    want = estimate_vm_hours(candidate)
    return Verdict(fits=used + running + want <= limit, limit=limit, used=used, running=running, candidate=want)


def first_wave(limit: float | None, experiments: list[Experiment], parallel: int) -> int:
    """How many of the first ``parallel`` experiments launch may start within the budget (nothing is
    used yet): the count of those whose estimates, added in order, stay within it."""
    if limit is None:
        return min(parallel, len(experiments))
    total, fit = 0.0, 0
    for exp in experiments[:parallel]:
        total += estimate_vm_hours(exp)
        if total > limit:
            break
        fit += 1
    return fit
