"""A sweep's decisions, made when something happens to one of its trials (no controller runs).

- When a trial is about to get a VM (launch's first wave, or the queue handing it an ended trial's
  slot), ``ensure_params`` makes sure its record holds its parameters first. A grid's and a random
  sweep's are planned at launch; a tpe or nsga2 trial's are proposed now, from a study rebuilt from
  the trials that ended (sweep.py). The proposal is written create-only (``names.trial_object``): a
  duplicate or concurrent delivery reads the one written first and never asks Optuna again, and the
  record gets it before its VM is asked for.
- When a trial's trainer reports an episode (``progress``, a signed Progress message on the
  completions topic), the value is kept in its record and the sweep's pruner decides on a study
  rebuilt from the records. A pruned trial ends ``pruned`` at once and ``progress`` returns it: the
  caller ends it as any ending (``queue.end``: its VM removed through its group, its slot to the
  next queued trial). This module never calls the queue, so the queue may call it (``ensure_params``).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from sinergym_cloud import lifecycle, names, sweep
from sinergym_cloud.contracts import Batch, Experiment, Progress
from sinergym_cloud.control import batches
from sinergym_cloud.errors import BadMessage
from sinergym_cloud.gcp.runtime import Runtime
from sinergym_cloud.records import LIVE, ExperimentRecord
from sinergym_cloud.sweep import TrialResult
from sinergym_cloud.sweep_spec import Sweep, apply, intermediate_key

log = logging.getLogger(__name__)


def batch_sweep(rt: Runtime, batch_id: str) -> tuple[Batch, Sweep] | None:
    """The accepted batch and its sweep, or None for a batch without one."""
    stored = rt.state.read(names.batch_object(batch_id))
    if stored is None:
        return None
    batch = Batch.model_validate(stored.data["batch"])
    return (batch, batch.sweep) if batch.sweep is not None else None


def repeated_reports(rt: Runtime, batch_id: str, progress: dict[str, dict[str, float]]) -> dict[int, float]:
    """The pruner's value of each episode a trial's completion repeats (``Completion.progress``):
    what its Progress reports said, for those delivered after the completion."""
    found = batch_sweep(rt, batch_id)
    if found is None or not found[1].goals:
        return {}
    key = intermediate_key(found[1].goals[0].metric)
    return {int(episode): metrics[key] for episode, metrics in progress.items() if key in metrics}


def records(rt: Runtime, batch_id: str) -> list[ExperimentRecord]:
    out = []
    for name, _, _ in rt.state.listing(names.experiments_prefix(batch_id)):
        doc = rt.state.read(name)
        if doc is not None:
            out.append(ExperimentRecord.model_validate(doc.data))
    return sorted(out, key=lambda r: r.index)


def objective_values(s: Sweep, rec: ExperimentRecord) -> list[float] | None:
    """The trial's objective value(s) from its completion's metrics; None if one is missing."""
    values = [rec.metrics.get(o.metric) for o in s.goals]
    return [float(v) for v in values if v is not None] if all(v is not None for v in values) else None


def result(s: Sweep, rec: ExperimentRecord) -> TrialResult | None:
    """What a record tells Optuna (None: a trial that has no parameters yet)."""
    if rec.params is None:
        return None
    values = objective_values(s, rec) if rec.state == "succeeded" else None
    if rec.state == "succeeded":
        state: sweep.TrialOutcome = "complete" if values is not None or not s.goals else "failed"
    elif rec.state == "pruned":
        state = "pruned"
    elif rec.state in LIVE:
        state = "running"
    else:
        state = "failed"
    return TrialResult(
        number=rec.index,
        params=dict(rec.params),
        state=state,
        values=values,
        intermediate={int(k): v for k, v in rec.intermediate.items()},
        system_attrs={**rec.sampler_attrs, **rec.pruner_attrs},
    )


def history(s: Sweep, recs: list[ExperimentRecord], *, ended_only: bool = True) -> list[TrialResult]:
    results = [r for r in (result(s, rec) for rec in recs) if r is not None]
    return [r for r in results if r.state != "running"] if ended_only else results


def ensure_params(rt: Runtime, rec: ExperimentRecord) -> ExperimentRecord:
    """The record with its trial's parameters set (proposed now if they are not yet). Idempotent.
    A record that comes back terminal is a trial whose parameters make no valid experiment: the
    caller asks no VM for it and hands its slot on (queue.start_next)."""
    if rec.trial is None or rec.params is not None:
        return rec
    found = batch_sweep(rt, rec.batch_id)
    if found is None:
        return rec
    _, s = found
    path = names.trial_object(rec.batch_id, rec.trial)
    stored = rt.state.read(path)
    if stored is None:
        params, attrs = sweep.propose(s, rec.trial, history(s, records(rt, rec.batch_id)))
        made = {"trial": rec.trial, "params": params, "sampler_attrs": attrs, "proposed_at": time.time()}
        if rt.state.create(path, made):
            log.info("batch %s: trial %d proposed %s", rec.batch_id, rec.trial, params)
        stored = rt.state.read(path)  # ours, or the proposal that was written first
        assert stored is not None, "a trial proposal is never deleted"
    proposal: dict[str, Any] = stored.data
    # The base experiment's seed and label of this replicate, then the trial's parameters. A
    # combination that is no valid experiment (n_steps with SAC) ends the trial failed, its
    # parameters kept (Optuna learns from it), with nothing to run or delete.
    try:
        spec: Experiment | None = apply(rec.spec, proposal["params"], None)
        invalid = ""
    except ValueError as exc:
        spec, invalid = None, f"trial {rec.trial}: its parameters are no valid experiment: {str(exc)[:400]}"

    def set_params(r: ExperimentRecord) -> lifecycle.Transition:
        if r.params is not None:
            return lifecycle.NOT_APPLIED
        r.params = dict(proposal["params"])
        r.sampler_attrs = dict(proposal.get("sampler_attrs") or {})
        r.note("trial", f"parameters {proposal['params']}"[:500])
        if spec is None:
            now = time.time()
            lifecycle.force_terminal(r, "failed", invalid, now)
            r.delete_requested_at = now  # no VM was asked for
            return lifecycle.Transition(applied=True, outcome="failed")
        r.spec = spec
        return lifecycle.Transition(applied=True, outcome="proposed")

    updated, _ = batches.transition(rt, rec.batch_id, rec.index, set_params)
    assert updated is not None
    return updated


def progress(rt: Runtime, p: Progress, authentic: Any) -> ExperimentRecord | None:
    """A trial's trainer reported an episode: keep the value, and prune the trial if the pruner says so.
    Returns the record if the trial is now pruned (by this report or a duplicate of it), for the
    caller to end it (``queue.end``); None otherwise.

    ``authentic(rec)`` says why the report does not come from the running boot ("" if it does)."""
    found = batch_sweep(rt, p.batch_id)
    if found is None:
        raise BadMessage(f"batch {p.batch_id} has no sweep: a progress report means nothing to it")
    _, s = found
    if not s.goals or s.pruner is None:
        return None
    key = intermediate_key(s.goals[0].metric)
    if key not in p.metrics:
        return None  # this episode had no evaluation: nothing for the pruner
    refusal: list[str] = []

    def report(rec: ExperimentRecord) -> lifecycle.Transition:
        refusal.clear()
        if rec.instance != p.instance:
            raise BadMessage(f"progress of experiment {p.experiment_index} names {p.instance}, not {rec.instance}")
        why = authentic(rec)
        if why:
            refusal.append(why)
            return lifecycle.NOT_APPLIED
        return lifecycle.reported(rec, p.boot_id, p.episode, float(p.metrics[key]))

    rec, _ = batches.transition(rt, p.batch_id, p.experiment_index, report)
    if rec is None:
        raise BadMessage(f"no experiment {p.experiment_index} in batch {p.batch_id}")
    if refusal:
        log.warning("refused a progress report of %s: %s", rec.instance, refusal[0])
        return None
    if rec.terminal or rec.params is None:
        return rec if rec.state == "pruned" else None
    current = result(s, rec)
    assert current is not None
    current.state = "running"
    decided, attrs = sweep.should_prune(s, history(s, records(rt, p.batch_id)), current)
    if not decided:
        if attrs != rec.pruner_attrs:
            batches.transition(rt, p.batch_id, rec.index, lambda r: _keep_attrs(r, attrs))
        return None
    ended, t = batches.transition(
        rt, p.batch_id, rec.index, lambda r: lifecycle.pruned(r, p.boot_id, p.episode, attrs, time.time())
    )
    assert ended is not None
    if t.applied:
        log.info("batch %s: trial %s (experiment %d) pruned after episode %d", p.batch_id, rec.trial, rec.index,
                 p.episode)  # fmt: skip
    return ended if ended.state == "pruned" else None


def _keep_attrs(rec: ExperimentRecord, attrs: dict[str, Any]) -> lifecycle.Transition:
    if rec.terminal:
        return lifecycle.NOT_APPLIED
    rec.pruner_attrs = dict(attrs)
    return lifecycle.Transition(applied=True, outcome="pruner")
