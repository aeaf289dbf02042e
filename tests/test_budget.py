"""The VM-hour budget's arithmetic (pure functions): what the report counts, estimates, verdicts."""

from __future__ import annotations

import pytest

from sinergym_cloud import budget
from sinergym_cloud.contracts import Batch, Experiment

WEEK = (1, 1, 1991, 7, 1, 1991)


def exp(episodes: int = 1, algorithm: str = "PPO") -> Experiment:
    return Experiment(
        environment="Eplus-5zone-hot-continuous-v1", algorithm=algorithm, episodes=episodes, runperiod=WEEK
    )


def test_the_estimate_is_timesteps_at_a_typical_speed_plus_a_boot() -> None:
    one = budget.estimate_vm_hours(exp(1))
    assert one == pytest.approx(7 * 24 * 4 / 340 / 3600 + budget.BOOT_HOURS)
    assert budget.estimate_vm_hours(exp(10)) - budget.BOOT_HOURS == pytest.approx(10 * (one - budget.BOOT_HOURS))
    assert budget.estimate_vm_hours(exp(1, "SAC")) > one, "a slower algorithm is estimated longer"


def test_an_experiment_that_never_had_a_vm_costs_nothing() -> None:
    assert budget.vm_hours({"state": "queued", "created_at": 0.0}, now=3600.0) == (0.0, 0.0)
    cancelled_queued = {"state": "cancelled", "started_by": None, "created_at": 0.0, "finished_at": 7200.0}
    assert budget.vm_hours(cancelled_queued, now=9999.0) == (0.0, 0.0)
    # Started from the queue at t=1800: counted from then, not from the record's creation at launch.
    late = {"state": "running", "started_by": 0, "started_at": 1800.0, "created_at": 0.0}
    assert budget.vm_hours(late, now=3600.0)[0] == pytest.approx(0.5)
    # A record older than the queue (no started_by at all) was asked for at launch.
    assert budget.vm_hours({"state": "failed", "created_at": 0.0, "finished_at": 3600.0}, now=9999.0)[0] == 1.0


def test_the_verdict_adds_used_hours_the_rest_of_the_running_and_the_candidate() -> None:
    est = budget.estimate_vm_hours(exp(1))
    spec = exp(1).model_dump(mode="json")
    done = {"state": "succeeded", "started_by": "launch", "created_at": 0.0, "delete_requested_at": 360.0, "spec": spec}
    running = {"state": "running", "started_by": "launch", "created_at": 3000.0, "spec": spec}
    queued = {"state": "queued", "started_by": None, "created_at": 0.0, "spec": spec}
    v = budget.check(1.0, [done, running, queued], exp(1), now=3060.0)
    assert v.used == pytest.approx(0.1 + 60 / 3600)
    assert v.running == pytest.approx(est - 60 / 3600)
    assert v.candidate == pytest.approx(est)
    assert v.fits
    tight = budget.check(v.used + v.running + v.candidate - 0.001, [done, running, queued], exp(1), now=3060.0)
    assert not tight.fits
    assert tight.reason.startswith("budget: ")


def test_the_first_wave_is_cut_where_its_estimates_pass_the_budget() -> None:
    est = budget.estimate_vm_hours(exp(1))
    exps = [exp(1)] * 4
    assert budget.first_wave(None, exps, 3) == 3
    assert budget.first_wave(est * 2.5, exps, 3) == 2
    assert budget.first_wave(est * 10, exps, 3) == 3
    assert budget.first_wave(est / 2, exps, 3) == 0


def test_dry_run_plan_says_how_many_fit_the_budget(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from sinergym_cloud.publisher.plan import print_plan

    est = budget.estimate_vm_hours(exp(1))
    b = Batch(batch_id="b1", experiments=[exp(1)] * 5, max_vm_hours=est * 3.5, max_parallel=2)
    print_plan(b, None, None, as_json=True)
    plan = json.loads(capsys.readouterr().out)
    assert (plan["max_vm_hours"], plan["within_budget"]) == (pytest.approx(est * 3.5), 3)
    assert plan["estimated_vm_hours"] == pytest.approx(5 * est, abs=0.01)
    print_plan(b, None, None, as_json=False)
    assert "the first 3 of 5" in capsys.readouterr().out
