"""What must hold once the workload has drained: every experiment ended, nothing left behind that the
product should have removed, one alert per batch that tells the truth, and the outputs and MLflow
runs of every experiment as they should be."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from sinergym_cloud import names
from tests.soak import transitions
from tests.soak.checker import Checker, Observation, finished_alerts
from tests.soak.observe import Unreadable


def wait_drained(checker: Checker, bound: float, say: Any) -> Observation | None:
    """Wait (up to ``bound`` seconds) until every experiment of every batch has ended and every
    batch-finished alert is out; the last observation."""
    deadline = time.monotonic() + bound
    obs = None
    while time.monotonic() < deadline:
        try:
            obs = checker.observe()
        except Unreadable:
            time.sleep(2)
            continue
        batches = checker.ledger.known_batches()
        open_ = [
            b.batch_id
            for b in batches
            if sum(
                1
                for (bid, _), r in obs.records.items()
                if bid == b.batch_id and transitions.terminal(str(r.get("state")))
            )
            < b.experiments
            or not finished_alerts(obs.alerts, b.batch_id)
        ]
        if not open_:
            return obs
        time.sleep(3)
    say(f"drain: not every batch ended within {bound:.0f}s")
    return obs


def wait_empty(checker: Checker, bound: float) -> Observation:
    """Wait (up to ``bound``) for Compute to hold no VM and no group (deletions take their grace
    period) and for no batch of the run to be marked active (a teardown ends with that mark's
    deletion, a moment after its alert)."""
    deadline = time.monotonic() + bound
    ours = {b.batch_id for b in checker.ledger.known_batches()}
    while True:
        obs = checker.observe()
        done = not obs.instances and not obs.migs and not set(checker.view.active_batches()) & ours
        if done or time.monotonic() > deadline:
            return obs
        time.sleep(2)


def check(checker: Checker, templates_before: list[str]) -> None:
    """The end-of-run invariants; each violation goes to the ledger."""
    ledger = checker.ledger
    obs = wait_empty(checker, 90.0)
    batches = ledger.known_batches()
    checker.checks["terminal"] += 1
    for b in batches:
        states = {i: str(r.get("state")) for (bid, i), r in obs.records.items() if bid == b.batch_id}
        missing = sorted(set(range(b.experiments)) - set(states))
        if missing:
            ledger.violation(
                f"terminal:missing:{b.batch_id}", "terminal", f"no record of experiments {missing}", b.batch_id
            )
        for i, state in sorted(states.items()):
            if not transitions.terminal(state):
                ledger.violation(f"terminal:{b.batch_id}:{i}", "terminal", f"still {state} at the end", b.batch_id, i)
        launch = obs.launches.get(b.batch_id, {})
        if launch.get("status") == "launching":
            ledger.violation(f"terminal:launch:{b.batch_id}", "terminal", "its launch never ended", b.batch_id)
    # Nothing left that the product should have removed.
    checker.checks["nothing_left"] += 1
    if obs.instances:
        ledger.violation(
            "nothing_left:vms", "nothing_left", f"{len(obs.instances)} VMs left: {sorted(obs.instances)[:10]}"
        )
    if obs.migs:
        ledger.violation("nothing_left:groups", "nothing_left", f"{len(obs.migs)} groups left: {sorted(obs.migs)[:10]}")
    templates = checker.view.templates()
    if templates != templates_before:
        ledger.violation("nothing_left:templates", "nothing_left", f"templates {templates}, before {templates_before}")
    ours = {b.batch_id for b in batches}
    active = sorted(set(checker.view.active_batches()) & ours)
    if active:
        ledger.violation("nothing_left:active", "nothing_left", f"batches still marked active: {active}")
    # One alert per batch, and it tells the truth.
    for b in batches:
        checker.checks["one_alert"] += 1
        found = finished_alerts(obs.alerts, b.batch_id)
        states = Counter(str(r.get("state")) for (bid, _), r in obs.records.items() if bid == b.batch_id)
        if len(found) != 1:
            ledger.violation(f"one_alert:{b.batch_id}", "one_alert", f"{len(found)} batch-finished alerts", b.batch_id)
            continue
        labels = found[0]["metric"]["labels"]
        said = {k: int(labels.get(k, 0)) for k in ("succeeded", "failed", "cancelled")}
        real = {k: states.get(k, 0) for k in said}
        if said != real:
            ledger.violation(
                f"alert_counts:{b.batch_id}", "one_alert", f"the alert says {said}, the records {real}", b.batch_id
            )
    # Outputs and MLflow runs of every experiment.
    for key, rec in obs.records.items():
        checker.outputs(key, rec)
    for b in batches:
        by_index = checker.mlflow_once(obs, b, final=True)
        for (bid, i), rec in obs.records.items():
            if bid != b.batch_id or rec.get("state") != "succeeded":
                continue
            runs = [r["run_id"] for r in by_index.get(i, [])]
            if runs != [rec.get("mlflow_run_id")]:
                ledger.violation(f"mlflow_once:final:{bid}:{i}", "mlflow_once",
                                 f"MLflow runs {runs}, the record names {rec.get('mlflow_run_id')}", bid, i)  # fmt: skip
    checker.one_trainer(obs)
    alive = [m for m in obs.markers if m["alive"]]
    if alive:
        ledger.violation("nothing_left:trainers", "nothing_left", f"{len(alive)} trainer processes alive at the end")


def experiments_by_state(obs: Observation | None, batches: list[str]) -> dict[str, int]:
    if obs is None:
        return {}
    return dict(Counter(str(r.get("state")) for (bid, _), r in obs.records.items() if bid in batches))


def records_of(obs: Observation | None) -> list[dict[str, Any]]:
    return list(obs.records.values()) if obs is not None else []


def instance_name(batch_id: str, index: int, group: str = "sinergym-group") -> str:
    return names.instance_name(group, batch_id, index)
