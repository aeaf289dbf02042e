"""The sweep section and its planner (pure: Optuna on in-memory studies, no cloud)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from sinergym_cloud import sweep
from sinergym_cloud.contracts import Experiment
from sinergym_cloud.sweep import TrialResult
from sinergym_cloud.sweep_spec import Sweep, apply

TPE: dict[str, Any] = {
    "method": "tpe",
    "trials": 8,
    "seed": 3,
    "objective": {"metric": "final_mean_reward", "direction": "maximize"},
    "pruner": {"name": "median", "min_episodes": 2},
    "parameters": {
        "hyperparameters.learning_rate": {"loguniform": [1e-5, 1e-2]},
        "hyperparameters.n_steps": {"int": [64, 2048]},
        "hyperparameters.gamma": {"uniform": [0.9, 0.999]},
        "algorithm": {"choice": ["PPO", "A2C"]},
    },
}


def run_history(s: Sweep, n: int, value: Any) -> list[TrialResult]:
    """Propose ``n`` trials one after another, each completing with ``value(params)``."""
    history: list[TrialResult] = []
    for number in range(n):
        params, attrs = sweep.propose(s, number, history)
        v = value(params)
        history.append(TrialResult(number, params, "complete", [v], {1: v, 2: v}, attrs))
    return history


def test_the_same_seed_and_history_propose_the_same_trials_and_another_seed_others() -> None:
    s = Sweep.model_validate(TPE)
    score = lambda p: -abs(p["hyperparameters.gamma"] - 0.95)  # noqa: E731 - a toy objective
    first = [t.params for t in run_history(s, 8, score)]
    again = [t.params for t in run_history(s, 8, score)]
    assert first == again
    other = [t.params for t in run_history(Sweep.model_validate({**TPE, "seed": 4}), 8, score)]
    assert other != first
    # The order the parameters are written in (a stored batch's keys come back sorted) changes nothing.
    reordered = Sweep.model_validate({**TPE, "parameters": dict(reversed(list(TPE["parameters"].items())))})
    assert [t.params for t in run_history(reordered, 8, score)] == first
    # A study rebuilt from the first 5 records proposes trial 5 as it did the first time.
    history = run_history(s, 5, score)
    assert sweep.propose(s, 5, history)[0] == first[5]
    for params in first:
        assert 1e-5 <= params["hyperparameters.learning_rate"] <= 1e-2
        assert isinstance(params["hyperparameters.n_steps"], int)
        assert params["algorithm"] in ("PPO", "A2C")


def test_a_grid_is_planned_whole_every_point_once_in_the_same_order() -> None:
    s = Sweep.model_validate(
        {"parameters": {"algorithm": {"grid": ["PPO", "SAC"]}, "runperiod": {"grid": [[1, 1, 1991, 7, 1, 1991], None]}}}
    )
    assert (s.n_trials, s.experiments) == (4, 4)
    planned = sweep.plan(s)
    assert planned is not None
    assert sorted(map(str, planned)) == sorted(map(str, s.grid_points()))
    assert planned == sweep.plan(s)
    assert sweep.plan(Sweep.model_validate({**TPE, "pruner": None})) is None  # tpe learns: decided at run time
    random = Sweep.model_validate({**TPE, "method": "random", "pruner": None})
    assert sweep.plan(random) == sweep.plan(random)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"parameters": {"mode": {"choice": ["train", "check"]}}}, "parameters.mode"),
        ({"parameters": {"hyperparameters.gamma": {"uniform": [0.99, 0.9]}}}, "low 0.99 is above high 0.9"),
        ({"parameters": {"episodes": {"int": [1, 3], "choice": [1]}}}, "exactly one of"),
        ({"parameters": {"episodes": {"ranged": [1, 3]}}}, "ranged"),
        ({"trials": None}, "trials"),
        ({"objective": None, "pruner": None}, "objective"),
        ({"metrik": 1}, "metrik"),
        ({"objective": {"metric": "accuracy"}}, "accuracy"),
        ({"seeds": [1], "replicates": 2}, "seeds and replicates"),
        ({"method": "grid", "trials": None}, "parameters.hyperparameters.learning_rate"),
        ({"method": "bayes"}, "method"),
        (
            {"objectives": [{"metric": "final_energy_kwh"}, {"metric": "final_mean_reward"}], "objective": None},
            "pruner",
        ),
    ],
)
def test_a_bad_sweep_section_is_refused_with_the_key_named(change: dict[str, Any], named: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Sweep.model_validate({**TPE, **change})
    assert named in str(caught.value)


def test_replicates_run_each_point_with_its_own_seed() -> None:
    s = Sweep.model_validate({**TPE, "seeds": [11, 12]})
    assert s.experiments == 16
    assert [s.locate(i) for i in (0, 1, 2, 15)] == [(0, 0), (0, 1), (1, 0), (7, 1)]
    assert [s.replicate_seed(None, r) for r in (0, 1)] == [11, 12]
    counted = Sweep.model_validate({**TPE, "replicates": 3})
    assert [counted.replicate_seed(5, r) for r in range(3)] == [5, 6, 7]
    base = Experiment(environment="Eplus-5zone-hot-continuous-v1", algorithm="PPO", episodes=2)
    exp = apply(base, {"algorithm": "A2C", "hyperparameters.gamma": 0.95}, seed=12, label="trial-1")
    assert (exp.algorithm, exp.hyperparameters.gamma, exp.seed, exp.label) == ("A2C", 0.95, 12, "trial-1")


def test_the_median_pruner_prunes_a_trial_below_the_completed_ones_after_min_episodes() -> None:
    s = Sweep.model_validate(TPE)
    history = run_history(s, 3, lambda _: 1.0)
    params = history[0].params
    bad = TrialResult(3, params, "running", None, {1: 0.0})
    assert sweep.should_prune(s, history, bad)[0] is False, "not before min_episodes"
    bad.intermediate[2] = 0.0
    assert sweep.should_prune(s, history, bad)[0] is True
    good = TrialResult(4, params, "running", None, {1: 1.0, 2: 1.0})
    assert sweep.should_prune(s, history, good)[0] is False
    nobody_done = [TrialResult(t.number, t.params, "running", None, t.intermediate) for t in history]
    assert sweep.should_prune(s, nobody_done, bad)[0] is False, "min_trials: nothing completed yet"


def test_successive_halving_keeps_its_rungs_in_the_trial_records() -> None:
    s = Sweep.model_validate({**TPE, "pruner": {"name": "successive_halving", "min_episodes": 1}})
    history: list[TrialResult] = []
    for number in range(4):  # each trial's report passes the pruner, which keeps its rungs in the trial
        params, _ = sweep.propose(s, number, history)
        kept, attrs = sweep.should_prune(s, history, TrialResult(number, params, "running", None, {1: 1.0}))
        assert kept is False
        history.append(TrialResult(number, params, "complete", [1.0], {1: 1.0}, attrs))
    pruned, attrs = sweep.should_prune(s, history, TrialResult(4, history[0].params, "running", None, {1: 0.0}))
    assert pruned is True
    assert any(k.startswith("completed_rung_") for k in attrs)


def test_best_trial_and_the_pareto_front_of_two_objectives() -> None:
    s = Sweep.model_validate(TPE)
    history = run_history(s, 5, lambda p: p["hyperparameters.gamma"])
    assert [t.number for t in sweep.best(s, history)] == [max(history, key=lambda t: t.values or [0]).number]
    tied = [TrialResult(n, history[0].params, "complete", [1.0]) for n in range(3)]
    assert [t.number for t in sweep.best(s, tied)] == [0], "one best trial, the first of a tie"
    two = Sweep.model_validate(
        {
            **TPE,
            "method": "nsga2",
            "pruner": None,
            "objective": None,
            "objectives": [
                {"metric": "final_energy_kwh", "direction": "minimize"},
                {"metric": "final_comfort_violation_time_pct", "direction": "minimize"},
            ],
        }
    )
    p = history[0].params
    results = [
        TrialResult(0, p, "complete", [1.0, 5.0]),
        TrialResult(1, p, "complete", [2.0, 2.0]),
        TrialResult(2, p, "complete", [3.0, 3.0]),  # dominated by 1
        TrialResult(3, p, "complete", [5.0, 1.0]),
        TrialResult(4, p, "pruned", None, {1: 0.0}),
    ]
    assert [t.number for t in sweep.best(two, results)] == [0, 1, 3]
    proposed, _ = sweep.propose(two, 5, results)
    assert set(proposed) == set(two.parameters)
