"""The sweep planner: Optuna's samplers and pruners on a study rebuilt from the trials' records.

No long-running controller and no database (ARCHITECTURE.md, invariant 11): each decision builds an
in-memory Optuna study, adds the trials that ended (``optuna.trial.create_trial`` with their
parameters, objective values, per-episode values and the sampler's own bookkeeping), and asks it
for one thing: the next trial's parameters, or whether a running trial is pruned.

Determinism: the sampler of trial ``n`` is seeded with ``sweep.seed + n``, so rebuilding the same
history proposes the same trial ``n`` again (a grid and a random sweep do not depend on the history
at all, and are planned whole at launch). Optuna is the sampler: this module writes none.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from sinergym_cloud.contracts import Batch
from sinergym_cloud.sweep_spec import Direction, Sweep, apply, trial_label

optuna.logging.set_verbosity(optuna.logging.WARNING)

TrialOutcome = Literal["complete", "pruned", "failed", "running"]
_STATES = {
    "complete": TrialState.COMPLETE,
    "pruned": TrialState.PRUNED,
    "failed": TrialState.FAIL,
    "running": TrialState.RUNNING,
}


@dataclass
class TrialResult:
    """What the records tell of one trial (one experiment of the sweep) for rebuilding the study."""

    number: int
    params: dict[str, Any]
    state: TrialOutcome
    values: list[float] | None = None
    intermediate: dict[int, float] = field(default_factory=dict)  # episode (1-based) -> value
    system_attrs: dict[str, Any] = field(default_factory=dict)


def _encode(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def distributions(sweep: Sweep) -> dict[str, BaseDistribution]:
    """Optuna's distribution for each parameter. Categorical values travel JSON-encoded, so a choice
    may be a list or a mapping (a run period, a weather variability). In the order of the paths, not
    as written: a stored batch's keys come back sorted, and Optuna samples in this order."""
    out: dict[str, BaseDistribution] = {}
    for path, p in sorted(sweep.parameters.items()):
        values = p.values
        if values is not None:
            out[path] = CategoricalDistribution([_encode(v) for v in values])
        elif p.uniform is not None:
            out[path] = FloatDistribution(*p.uniform)
        elif p.loguniform is not None:
            out[path] = FloatDistribution(*p.loguniform, log=True)
        else:
            assert p.int_range is not None
            out[path] = IntDistribution(*p.int_range)
    return out


def decode(sweep: Sweep, optuna_params: dict[str, Any]) -> dict[str, Any]:
    """A trial's parameters as Experiment values (categorical ones decoded)."""
    return {
        k: json.loads(v) if sweep.parameters[k].values is not None else v
        for k, v in optuna_params.items()
        if k in sweep.parameters
    }


def encode(sweep: Sweep, params: dict[str, Any]) -> dict[str, Any]:
    return {k: _encode(v) if sweep.parameters[k].values is not None else v for k, v in params.items()}


def sampler(sweep: Sweep, number: int) -> optuna.samplers.BaseSampler:
    """The sampler that proposes trial ``number``, seeded with the sweep's seed and the number."""
    seed = sweep.seed + number
    if sweep.method == "grid":
        grid = {path: [_encode(v) for v in (p.values or [])] for path, p in sorted(sweep.parameters.items())}
        return optuna.samplers.GridSampler(grid, seed=sweep.seed)  # one order for the whole sweep
    if sweep.method == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if sweep.method == "tpe":
        startup = max(1, min(10, sweep.n_trials // 2))  # Optuna's 10 would leave a short sweep all random
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, multivariate=True)
    population = max(2, min(50, sweep.max_parallel or sweep.n_trials // 2))
    return optuna.samplers.NSGAIISampler(seed=seed, population_size=population)


def rebuild(
    sweep: Sweep, history: list[TrialResult], chosen: optuna.samplers.BaseSampler | None = None
) -> optuna.Study:
    """An in-memory study holding the trials that ended (and, for pruning, the one running)."""
    directions: list[Direction] = sweep.directions or ["maximize"]
    study = optuna.create_study(sampler=chosen, directions=directions)
    dists = distributions(sweep)
    for t in sorted(history, key=lambda t: t.number):
        params = encode(sweep, t.params)
        complete = t.state == "complete" and t.values is not None and len(t.values) == len(directions)
        state = _STATES[t.state] if t.state != "complete" or complete else TrialState.FAIL
        study.add_trial(
            create_trial(
                params=params,
                distributions={k: dists[k] for k in params},
                values=t.values if complete else None,
                state=state,
                intermediate_values=t.intermediate if len(directions) == 1 else None,
                system_attrs={**t.system_attrs, "sweep_trial": t.number},
            )
        )
    return study


def propose(sweep: Sweep, number: int, history: list[TrialResult]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Trial ``number``'s parameters, and the sampler's bookkeeping to keep with them (a grid
    point's id, NSGA-II's generation), from the trials that ended before."""
    study = rebuild(sweep, history, sampler(sweep, number))
    trial = study.ask(distributions(sweep))
    attrs = {k: v for k, v in study.trials[-1].system_attrs.items() if k != "sweep_trial"}
    return decode(sweep, trial.params), attrs


def plan(sweep: Sweep) -> list[dict[str, Any]] | None:
    """Every trial's parameters, for a sweep that does not learn from its history (grid, random);
    None for one that does (tpe, nsga2: decided as trials end)."""
    if sweep.method == "grid" and not sweep.parameters:
        return [{} for _ in range(sweep.n_trials)]  # the base point alone (run per seed)
    if sweep.method == "grid":
        study = optuna.create_study(sampler=sampler(sweep, 0))
        dists = distributions(sweep)
        # Each ask takes a grid point no earlier ask took (they stay running): the sampler's order.
        return [decode(sweep, study.ask(dists).params) for _ in range(sweep.n_trials)]
    if sweep.method == "random":
        return [propose(sweep, n, [])[0] for n in range(sweep.n_trials)]
    return None


def pruner(sweep: Sweep) -> optuna.pruners.BasePruner:
    assert sweep.pruner is not None
    if sweep.pruner.name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=sweep.pruner.min_trials, n_warmup_steps=0)
    return optuna.pruners.SuccessiveHalvingPruner(min_resource=sweep.pruner.min_episodes)


def should_prune(sweep: Sweep, history: list[TrialResult], current: TrialResult) -> tuple[bool, dict[str, Any]]:
    """Whether the running trial ``current`` is pruned now, by the sweep's pruner, given the trials
    that ended; and the pruner's bookkeeping for it (successive halving's rungs) to keep."""
    if sweep.pruner is None or not current.intermediate:
        return False, current.system_attrs
    if max(current.intermediate) < sweep.pruner.min_episodes:
        return False, current.system_attrs
    others = [t for t in history if t.number != current.number and t.state != "running"]
    study = rebuild(sweep, [*others, TrialResult(**{**current.__dict__, "state": "running"})])
    frozen = next(t for t in study.trials if t.system_attrs.get("sweep_trial") == current.number)
    decided = pruner(sweep).prune(study, frozen)
    attrs = {k: v for k, v in study.trials[frozen.number].system_attrs.items() if k != "sweep_trial"}
    return bool(decided), attrs


def best(sweep: Sweep, results: list[TrialResult]) -> list[TrialResult]:
    """The best trial (one objective) or the Pareto front (two), among the completed trials."""
    n = len(sweep.directions)
    done = [r for r in results if r.state == "complete" and r.values is not None and len(r.values) == n]
    if not done or not sweep.directions:
        return []
    study = rebuild(sweep, done)
    # One objective: the best trial (the first of any tied); two: every trial on the Pareto front.
    chosen = study.best_trials if n > 1 else [study.best_trial]
    numbers = [t.system_attrs["sweep_trial"] for t in chosen]
    return sorted((r for r in done if r.number in numbers), key=lambda r: r.number)


def expand(batch: Batch) -> Batch:
    """A sweep batch as launch runs it: one experiment per trial and replicate (trial ``i //
    replicates``), each the base experiment with its trial's label and replicate's seed, and with its
    parameters where they are known now (grid, random); a tpe or nsga2 trial gets its parameters when
    it leaves the queue. ``max_parallel`` is the lower of the batch's and the sweep's.

    Raises ValueError naming the trial whose planned point is not a valid experiment."""
    s = batch.sweep
    if s is None:
        return batch
    base = batch.experiments[0]
    planned = plan(s)
    experiments = []
    for index in range(s.experiments):
        trial, replicate = s.locate(index)
        params = planned[trial] if planned is not None else {}
        try:
            exp = apply(base, params, s.replicate_seed(base.seed, replicate), trial_label(base.label, trial))
        except ValueError as exc:
            raise ValueError(f"sweep trial {trial} {json.dumps(params)[:300]}: {str(exc)[:500]}") from None
        experiments.append(exp.model_dump(mode="json", exclude_none=True))
    bounds = [b for b in (batch.max_parallel, s.max_parallel) if b is not None]
    doc = batch.model_dump(mode="json", exclude_none=True)
    doc.update(experiments=experiments, max_parallel=min(bounds) if bounds else None)
    return Batch.model_validate(doc)
