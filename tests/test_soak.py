"""The seeded soak (tests/soak): its plan is the seed's alone, its transition table is the lifecycle's
own, its checker sees what it must, a short soak with a fixed seed breaks no invariant, and a build
broken on purpose is caught within the run."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sinergym_cloud import lifecycle
from sinergym_cloud.contracts import Experiment
from sinergym_cloud.lifecycle import Budgets, Ending, Transition, VerifiedBoot
from sinergym_cloud.records import ExperimentRecord
from tests.conftest import REPO
from tests.soak import plan, transitions
from tests.soak.checker import Checker, Observation
from tests.soak.ledger import BatchInfo, Clock, Injected, Ledger
from tests.soak.settings import Soak

SHORT_SEED = 20261206  # the short soak's seed in make test: replay it with python -m tests.soak --seed 20261206


# ------------------------------------------------------------------------------------------- plan
def test_the_same_seed_plans_the_same_faults_and_another_seed_others() -> None:
    one, again, other = (plan.plan(Soak(seed=s, minutes=10)) for s in (5, 5, 6))
    assert one == again and plan.digest(one) == plan.digest(again)
    assert plan.digest(one) != plan.digest(other)
    assert [f.at for f in one] == sorted(f.at for f in one)
    assert all(0 < f.at < Soak(seed=5, minutes=10).inject_until for f in one)


@pytest.mark.parametrize("seed", range(1, 21))
def test_ten_minutes_plan_thirty_faults_of_eight_kinds_three_at_once(seed: int) -> None:
    faults = plan.plan(Soak(seed=seed, minutes=10))
    assert len(faults) >= 30
    assert len({f.kind for f in faults}) >= 8
    assert plan.most_overlapping([(f.at, f.end) for f in faults]) >= 3


def test_no_faults_planned_without_the_nemesis() -> None:
    assert plan.plan(Soak(seed=1, minutes=10, faults=False)) == []


def test_most_overlapping_counts_windows_that_hold_together() -> None:
    assert plan.most_overlapping([(0, 10), (5, 6), (5.5, 20), (11, 12)]) == 3
    assert plan.most_overlapping([(0, 1), (1, 2)]) == 1  # one ends as the next begins


# ------------------------------------------------------------------------------- transitions
BOOT = {"queued": None, "pending": None, "starting": "b1", "running": "b1", "succeeded": "b1", "failed": "b1",
        "cancelled": None, "pruned": "b1"}  # fmt: skip
STATES = tuple(BOOT)


def record(state: str, **fields: Any) -> ExperimentRecord:
    return ExperimentRecord(batch_id="b", index=0, name="e", group="g", zone="z", mig="m", instance="g-0",
                            spec=Experiment(environment="Eplus-5zone-hot-continuous-v1"), state=state,  # type: ignore[arg-type]  # states as text
                            boot_id=BOOT[state], **fields)  # fmt: skip


def calls() -> list[Callable[[ExperimentRecord], Transition]]:
    """Every transition function of the lifecycle, with every budget outcome."""
    found: list[Callable[[ExperimentRecord], Transition]] = [
        lambda r: lifecycle.promote(r, 3, 1.0),
        lambda r: lifecycle.requeue(r, "quota"),
        lambda r: lifecycle.move(r, "z2", "m2", "stockout"),
        lambda r: lifecycle.claim_boot(r, VerifiedBoot("b2", vm_id="7"), 1.0, vm_recreated=True),
        lambda r: lifecycle.claim_boot(r, VerifiedBoot("b2", vm_id="7"), 1.0, vm_recreated=False),
        lambda r: lifecycle.trainer_started(r, r.boot_id or "b1", "started", 1.0),
        lambda r: lifecycle.pruned(r, r.boot_id or "b1", 2, {}, 1.0),
        lambda r: lifecycle.never_started(r, "budget", 1.0),
        lambda r: lifecycle.noted(r, "host-key-mismatch", "x"),
    ]
    budgets = Budgets(max_failures=1, max_preemptions=1)
    for spent in (0, 5):  # within the budget (retried), over it (failed)

        def over(r: ExperimentRecord, n: int = spent) -> None:
            r.failures = r.preemptions = n

        for status in ("succeeded", "failed", "preempted", "pruned"):
            found.append(lambda r, s=status, b=budgets, o=over: (o(r), lifecycle.completed(  # type: ignore[func-returns-value]
                r, Ending(status=s, boot_id=r.boot_id or "b1"), b, None, 1.0))[1])  # type: ignore[arg-type]  # fmt: skip
        for loss in ("infra", "trainer", "fatal"):
            found.append(lambda r, k=loss, b=budgets, o=over: (o(r), lifecycle.lost(  # type: ignore[func-returns-value]
                r, seen_boot=r.boot_id, seen_state=r.state, loss=k, reason="lost", budgets=b, vm_created=None, now=1.0))[1])  # type: ignore[arg-type]  # fmt: skip
    for state in ("cancelled", "failed"):
        found.append(lambda r, s=state: lifecycle.force_terminal(r, s, "why", 1.0))  # type: ignore[arg-type]
    return found


def test_the_soaks_transition_table_is_the_lifecycles_own() -> None:
    """Every transition a lifecycle function makes is in the checker's table, and every entry of the
    table is one a lifecycle function makes: the table cannot drift from the code."""
    made: set[tuple[str, str, str]] = set()
    for state in STATES:
        for call in calls():
            rec = record(state)
            before = len(rec.history)
            t = call(rec)
            if not t.applied:
                continue
            events = [h.event for h in rec.history[before:]]
            assert len(events) == 1, f"{state}: {events}"
            event = events[0]
            if event in transitions.NOTES:
                assert rec.state == state
                continue
            assert rec.state in transitions.TABLE[event].get(state, ()), (
                f"{event}: {state} -> {rec.state} not in the table"
            )
            made.add((event, state, rec.state))
    table = {(e, a, b) for e, moves in transitions.TABLE.items() for a, tos in moves.items() for b in tos}
    assert table == made, f"in the table, never made: {table - made}"


def test_replay_follows_a_legal_history_and_names_an_illegal_step() -> None:
    def rec(state: str, *events: str) -> dict[str, Any]:
        return {"state": state, "history": [{"event": e, "detail": "", "at": 0} for e in events]}

    assert transitions.replay(rec("succeeded", "started", "dispatch", "trainer", "completion:succeeded")) == ""
    assert transitions.replay(rec("pending", "dispatch", "trainer", "completion:preempted")) == ""
    assert transitions.replay(rec("cancelled", "cancelled")) == ""  # cut at launch by the budget
    assert "not legal from" in transitions.replay(rec("running", "trainer"))  # never claimed
    assert "not legal from succeeded" in transitions.replay(rec("running", "dispatch", "trainer",
                                                               "completion:succeeded", "dispatch"))  # fmt: skip
    assert "but it is running" in transitions.replay(rec("running", "dispatch"))
    assert "not in the lifecycle's table" in transitions.replay(rec("pending", "resurrected"))


# ----------------------------------------------------------------------------------- checker
class FakeView:
    def __init__(self) -> None:
        self.problems: list[str] = []
        self.runs: list[dict[str, str]] = []
        self.beat: float | None = None
        self.ready: list[dict[str, Any]] = []

    def events(self, since: float) -> list[dict[str, Any]]:
        return [e for e in self.ready if e["t"] >= since]

    def heartbeat(self, batch_id: str, experiment: str) -> float | None:
        return self.beat

    def output_problems(self, batch_id: str, experiment: str) -> list[str]:
        return self.problems

    def mlflow_runs(self, experiment: str, batch_id: str) -> list[dict[str, str]]:
        return self.runs


def checker(tmp_path: Path) -> tuple[Checker, Ledger, BatchInfo]:
    ledger = Ledger(1, tmp_path, Clock())
    ledger.clock.start()
    info = BatchInfo("b1", "parallel", 0, 3, max_parallel=2, max_vm_hours=0.1, estimate=0.05, submitted_at=0.0)
    ledger.add_batch(info)
    return Checker(Soak(seed=1, minutes=2), FakeView(), ledger), ledger, info  # type: ignore[arg-type]  # a fake view


def vm(status: str = "RUNNING", action: str = "NONE", created: float = 0.0) -> dict[str, Any]:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(created or time.time()))
    return {"status": status, "action": action, "created": stamp, "pid": 1}


def observation(instances: dict[str, Any] | None = None, records: dict[tuple[str, int], Any] | None = None,
                markers: list[Any] | None = None, alerts: list[Any] | None = None, t: float = 0.0) -> Observation:  # fmt: skip
    return Observation(t, instances or {}, records or {}, {"b1": {"status": "launched", "mlflow_experiment": "x"}}, {},
                       markers or [], alerts or [])  # fmt: skip


def test_the_checker_counts_live_vms_against_max_parallel_not_those_being_deleted(tmp_path: Path) -> None:
    c, ledger, info = checker(tmp_path)
    name = info.instance_prefix
    ok = {f"z/{name}0": vm(), f"z/{name}1": vm("STAGING"), f"z/{name}2": vm(action="DELETING"),
          f"z/{name}3": vm("STOPPING"), "z/other-0": vm()}  # fmt: skip
    c.max_parallel(observation(ok), info)
    assert ledger.violations == []
    c.max_parallel(observation({**ok, f"z/{name}4": vm("PROVISIONING")}), info)
    assert [v.invariant for v in ledger.violations] == ["max_parallel"]


def test_the_checker_sees_two_trainers_of_one_experiment_alive(tmp_path: Path) -> None:
    c, ledger, _ = checker(tmp_path)
    alive = {"batch_id": "b1", "index": 0, "boot_id": "x", "pid": 1, "zone": "z", "alive": True}
    c.one_trainer(observation(markers=[alive, {**alive, "boot_id": "y", "alive": False}]))
    assert ledger.violations == []
    c.one_trainer(observation(markers=[alive, {**alive, "boot_id": "y", "pid": 2}]))
    assert [v.invariant for v in ledger.violations] == ["one_trainer"]


def test_the_checker_sees_a_vm_left_running_after_its_experiment_ended(tmp_path: Path) -> None:
    c, ledger, info = checker(tmp_path)
    ended = {
        "state": "succeeded",
        "instance": f"{info.instance_prefix}0",
        "finished_at": time.time() - 600,
        "history": [],
    }
    c.lingers(observation({f"z/{info.instance_prefix}0": vm(action="DELETING")}), ("b1", 0), ended)
    assert ledger.violations == []
    c.lingers(observation({f"z/{info.instance_prefix}0": vm()}), ("b1", 0), ended)
    assert [v.invariant for v in ledger.violations] == ["vm_lingers"]


def test_the_checker_sees_an_experiment_stuck_unless_a_fault_held_it_back(tmp_path: Path) -> None:
    c, ledger, _ = checker(tmp_path)
    rec = {"state": "pending", "boot_id": None, "history": [], "zone": "z", "name": "e0"}
    bound = c.soak.boot_bound
    c.progress(observation(t=0.0), ("b1", 0), rec)
    ledger.injected.append(Injected(1, "zone_stockout", 5.0, 20.0))
    c.progress(observation(t=bound + 10), ("b1", 0), rec)  # held back by the stockout until t=20
    assert ledger.violations == []
    c.progress(observation(t=bound + 30), ("b1", 0), rec)
    assert [v.invariant for v in ledger.violations] == ["progress"]
    assert ledger.violations[0].faults == []  # the stockout had ended


def test_the_checker_lets_a_trainer_that_beats_run_as_long_as_it_needs(tmp_path: Path) -> None:
    c, ledger, _ = checker(tmp_path)
    view: FakeView = c.view  # type: ignore[assignment]  # the fake
    rec = {"state": "running", "boot_id": "x", "history": [], "zone": "z", "name": "e0"}
    bound = c.soak.silence_bound
    c.progress(observation(t=0.0), ("b1", 0), rec)
    view.beat = ledger.clock.origin + 2 * bound  # it beat a moment ago
    c.progress(observation(t=2 * bound + 5), ("b1", 0), rec)
    assert ledger.violations == []
    view.beat = ledger.clock.origin + 10.0  # silent since
    c.progress(observation(t=bound + 20), ("b1", 1), rec)
    c.progress(observation(t=bound + 20), ("b1", 0), rec)
    assert [(v.invariant, v.index) for v in ledger.violations] == [("progress", 0)]


def test_the_checker_sees_a_ready_vm_that_dispatch_never_claims(tmp_path: Path) -> None:
    c, ledger, info = checker(tmp_path)
    view: FakeView = c.view  # type: ignore[assignment]  # the fake
    up = {f"z/{info.instance_prefix}{i}": {**vm(), "boot_id": f"boot-{i}"} for i in (0, 1)}
    view.ready = [{"t": ledger.clock.origin + 1, "kind": "vm.ready", "instance": f"{info.instance_prefix}{i}",
                   "boot_id": f"boot-{i}"} for i in (0, 1)]  # fmt: skip
    claimed = {"state": "running", "history": [{"event": "dispatch", "detail": "boot boot-0", "at": 0}]}
    waiting = {"state": "pending", "history": []}
    records = {("b1", 0): claimed, ("b1", 1): waiting}
    c.dispatched(observation(up, records, t=5.0), [info])
    c.dispatched(observation(up, records, t=c.soak.dispatch_bound + 10), [info])
    assert [(v.invariant, v.index) for v in ledger.violations] == [("dispatched", 1)]


def test_the_checker_holds_the_budget_to_the_batch_plus_one_estimate(tmp_path: Path) -> None:
    c, ledger, info = checker(tmp_path)
    live = {("b1", i): {"state": "running", "instance": f"{info.instance_prefix}{i}"} for i in range(3)}
    c.budget(observation(records=dict(list(live.items())[:3])), info)  # 3 x 0.05 = 0.15 = 0.1 + 0.05
    assert ledger.violations == []
    c.lifetimes[(f"z/{info.instance_prefix}9", time.time() - 360)] = time.time()  # 0.1 h used by an ended one
    c.budget(observation(records=live), info)
    assert [v.invariant for v in ledger.violations] == ["budget"]


def test_the_checker_sees_outputs_that_do_not_match_and_two_mlflow_runs(tmp_path: Path) -> None:
    c, ledger, _ = checker(tmp_path)
    view: FakeView = c.view  # type: ignore[assignment]  # the fake
    view.problems = ["missing: gs://x/y"]
    c.outputs(("b1", 0), {"state": "succeeded", "name": "e0"})
    view.runs = [{"experiment_index": "1", "run_id": "r1"}, {"experiment_index": "1", "run_id": "r2"}]
    c.mlflow_once(observation(), c.ledger.known_batches()[0], final=False)
    assert [v.invariant for v in ledger.violations] == ["outputs", "mlflow_once"]


def test_the_checker_sees_two_alerts_for_one_batch(tmp_path: Path) -> None:
    c, ledger, info = checker(tmp_path)
    alert = {"metric": {"type": "custom.googleapis.com/sinergym/batch_finished", "labels": {"batch_id": "b1"}}}
    c.one_alert(observation(alerts=[alert]), [info])
    assert ledger.violations == []
    c.one_alert(observation(alerts=[alert, copy.deepcopy(alert)]), [info])
    assert [v.invariant for v in ledger.violations] == ["one_alert"]


def test_a_violation_is_logged_with_the_seed_the_time_and_the_faults_active(tmp_path: Path, capsys: Any) -> None:
    ledger = Ledger(42, tmp_path, Clock())
    ledger.clock.start()
    ledger.injected_fault(Injected(3, "gcs_errors", -1.0, 100.0, "Cloud Storage"))
    ledger.violation("k", "outputs", "missing", "b", 1)
    ledger.violation("k", "outputs", "missing again")  # the same finding: once
    out = capsys.readouterr().out
    assert "seed=42" in out and "VIOLATION outputs b/1: missing [faults: #3 gcs_errors]" in out
    lines = [json.loads(line) for line in (tmp_path / "soak.jsonl").read_text().splitlines()]
    assert [line["record"] for line in lines] == ["fault", "violation"] and all(line["seed"] == 42 for line in lines)


# ------------------------------------------------------------------------------- whole runs
def soak_json(output: str) -> dict[str, Any]:
    return dict(json.loads(output.strip().splitlines()[-1]))


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_a_short_soak_with_a_fixed_seed_breaks_no_invariant(tmp_path: Path) -> None:
    """About two minutes of batches under the seed's faults (make test); `make soak` runs the long one."""
    done = subprocess.run(
        [sys.executable, "-m", "tests.soak", "--seed", str(SHORT_SEED), "--minutes", "2", "--out", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=1400, check=False,
    )  # fmt: skip
    print(done.stdout[-6000:], done.stderr[-3000:])
    result = soak_json(done.stdout)
    assert result["violations"] == [] and done.returncode == 0
    assert result["seed"] == SHORT_SEED and result["faults"] >= 4 and len(result["fault_kinds"]) >= 4
    assert result["experiments"]["total"] >= 12
    assert result["plan"] == plan.digest(plan.plan(Soak(seed=SHORT_SEED, minutes=2)))
    planned = {f.number: f.kind for f in plan.plan(Soak(seed=SHORT_SEED, minutes=2))}
    assert all(planned[number] == kind for number, kind, _ in result["injected"])  # the plan's, fault by fault
    assert f"seed={SHORT_SEED}" in done.stdout and "FAULT #1" in done.stdout


BROKEN_CLEANUP = '''
"""A deliberately broken build for tests/test_soak.py: the cleanup function never deletes a VM."""
import sys

if "cleanup" in sys.argv:
    from sinergym_cloud.control import batches

    batches.remove_vm = lambda rt, rec: None
'''


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_checker_reports_a_cleanup_that_never_deletes_vms(tmp_path: Path) -> None:
    """The same soak against a build whose cleanup function's VM deletion is disabled (a
    sitecustomize on the function processes' path, through the local cloud's test-only function
    environment): the checker reports it within the run."""
    from tests.soak.__main__ import run

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "sitecustomize.py").write_text(BROKEN_CLEANUP)
    soak = Soak(seed=7, minutes=3, experiments=14, faults=False, out=tmp_path / "out",
                function_env={"PYTHONPATH": str(broken)}, stop_on_violation=True)  # fmt: skip
    result = run(soak)
    found = {v["invariant"] for v in result["violations"]}
    assert found & {"vm_lingers", "max_parallel"}, result["violations"]
    assert all(v["t"] < soak.duration for v in result["violations"])
