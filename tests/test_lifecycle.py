"""The experiment state machine, without a cloud: (state, event) -> (state, effects)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from sinergym_cloud import lifecycle
from sinergym_cloud.contracts import Experiment
from sinergym_cloud.lifecycle import Budgets, Ending, Transition, VerifiedBoot
from sinergym_cloud.records import ExperimentRecord

BUDGETS = Budgets(max_failures=1, max_preemptions=2)
NOW = 1_000_000.0


def record(state: str = "running", boot: str | None = "b1", **fields: Any) -> ExperimentRecord:
    return ExperimentRecord(
        batch_id="b",
        index=0,
        name="e",
        group="g",
        zone="z",
        mig="m",
        instance="g-0",
        spec=Experiment(environment="Eplus-5zone-hot-continuous-v1", algorithm="PPO"),
        state=state,  # type: ignore[arg-type]  # the table names states as text
        boot_id=boot,
        **fields,
    )


def end(status: str, boot: str = "b1", **fields: Any) -> Ending:
    return Ending(status=status, boot_id=boot, **fields)  # type: ignore[arg-type]  # the table names statuses


def complete(status: str, boot: str = "b1") -> Callable[[ExperimentRecord], Transition]:
    return lambda r: lifecycle.completed(r, end(status, boot), BUDGETS, None, NOW)


def claim(boot: str, recreated: bool = False) -> Callable[[ExperimentRecord], Transition]:
    return lambda r: lifecycle.claim_boot(r, VerifiedBoot(boot, vm_id="7"), NOW, vm_recreated=recreated)


def lose(kind: str, boot: str | None = "b1", state: str = "running") -> Callable[[ExperimentRecord], Transition]:
    return lambda r: lifecycle.lost(
        r,
        seen_boot=boot,
        seen_state=state,
        loss=kind,  # type: ignore[arg-type]  # the table names losses
        reason="lost",
        budgets=BUDGETS,
        vm_created=None,
        now=NOW,
    )


TABLE: list[tuple[str, dict[str, Any], Callable[[ExperimentRecord], Transition], str, bool, set[str]]] = [
    # (state, other fields), event -> new state, applied, effects
    ("pending", {"boot": None}, claim("b1"), "starting", True, set()),
    ("queued", {"boot": None}, claim("b1"), "queued", False, set()),  # a VM left for it is not its slot
    ("starting", {}, claim("b1"), "starting", False, set()),
    ("running", {}, claim("b1"), "running", False, set()),
    ("running", {}, claim("b2"), "running", False, set()),  # the same VM: a second boot is not believed
    ("running", {}, claim("b2", recreated=True), "starting", True, set()),
    ("succeeded", {}, claim("b2"), "succeeded", False, set()),
    ("starting", {}, lambda r: lifecycle.trainer_started(r, "b1", "started", NOW), "running", True, set()),
    ("starting", {}, lambda r: lifecycle.trainer_started(r, "b0", "started", NOW), "starting", False, set()),
    ("running", {}, complete("succeeded"), "succeeded", True, {"settle"}),
    ("running", {}, complete("failed"), "pending", True, {"recreate"}),
    ("running", {"failures": 1}, complete("failed"), "failed", True, {"settle"}),
    ("running", {}, complete("preempted"), "pending", True, set()),
    ("running", {"preemptions": 2}, complete("preempted"), "failed", True, {"settle"}),
    ("running", {}, complete("succeeded", boot="b0"), "running", False, set()),
    ("succeeded", {}, complete("failed"), "succeeded", False, {"settle"}),
    ("running", {}, lose("trainer"), "pending", True, {"recreate"}),
    ("running", {"failures": 1}, lose("trainer"), "failed", True, {"settle"}),
    ("starting", {}, lose("infra", state="starting"), "pending", True, {"recreate"}),
    ("running", {"preemptions": 2}, lose("infra"), "failed", True, {"settle"}),
    ("running", {}, lose("fatal"), "failed", True, {"settle"}),
    ("running", {}, lose("trainer", boot="b0"), "running", False, set()),
    ("starting", {}, lose("trainer"), "starting", False, set()),
    ("running", {}, lambda r: lifecycle.force_terminal(r, "cancelled", "user", NOW), "cancelled", True, {"settle"}),
    ("failed", {}, lambda r: lifecycle.force_terminal(r, "cancelled", "user", NOW), "failed", False, set()),
]


@pytest.mark.parametrize(("state", "fields", "event", "after", "applied", "effects"), TABLE)
def test_transition_table(
    state: str,
    fields: dict[str, Any],
    event: Callable[[ExperimentRecord], Transition],
    after: str,
    applied: bool,
    effects: set[str],
) -> None:
    fields = dict(fields)
    rec = record(state, fields.pop("boot", "b1"), **fields)
    before = rec.doc()
    t = event(rec)
    assert (rec.state, t.applied, t.effects) == (after, applied, effects)
    if not applied:
        assert rec.doc() == before, "a transition that does not apply leaves the record as it was"


def test_budgets_are_counted_once_per_loss_and_named_when_spent() -> None:
    rec = record("running")
    lifecycle.completed(rec, end("preempted"), BUDGETS, None, NOW)
    assert (rec.preemptions, rec.boot_id) == (1, None)
    claim("b2", recreated=True)(rec)
    lifecycle.completed(rec, end("preempted", boot="b2"), BUDGETS, None, NOW)
    claim("b3", recreated=True)(rec)
    t = lifecycle.completed(rec, end("preempted", boot="b3"), BUDGETS, None, NOW)
    assert (t.outcome, rec.state, rec.reason) == ("failed", "failed", "preempted 3 times (budget 2)")
    assert rec.attempts == 2 and rec.finished_at == NOW


def test_a_failed_trainer_reason_carries_its_error_type() -> None:
    rec = record("running", failures=1)
    lifecycle.completed(rec, end("failed", exit_reason="diverged", error_type="ValueError"), BUDGETS, None, NOW)
    assert rec.reason == "ValueError: diverged"


def test_completion_keeps_results_and_the_vm_time_of_its_boot() -> None:
    rec = record("running", dispatched_at=NOW - 10)
    e = end("succeeded", mlflow_run_id="r1", output_uris=("gs://x/b/e/a",), metrics={"m": 1.0}, timesteps=7)
    lifecycle.completed(rec, e, BUDGETS, NOW - 60, NOW)
    assert (rec.mlflow_run_id, rec.output_uris, rec.metrics, rec.timesteps) == ("r1", ["gs://x/b/e/a"], {"m": 1.0}, 7)
    assert rec.vm_created == {"b1": NOW - 60}
    assert rec.history[-1].event == "completion:succeeded"


def test_marks_are_set_once() -> None:
    rec = record("succeeded")
    assert lifecycle.mark(rec, "delete_requested_at", NOW).applied
    assert not lifecycle.mark(rec, "delete_requested_at", NOW + 1).applied
    assert rec.delete_requested_at == NOW


def test_the_queue_hands_a_slot_on_once() -> None:
    waiting = record("queued", None)
    assert lifecycle.promote(waiting, 3, NOW).effects == {"request_vm"}
    assert (waiting.state, waiting.started_by) == ("pending", 3)
    assert not lifecycle.promote(waiting, 4, NOW).applied, "a second ending never starts it again"
    ended = record("succeeded")
    assert lifecycle.hand_over(ended, 5, expected=None).applied
    assert not lifecycle.hand_over(ended, 6, expected=None).applied, "a duplicate delivery keeps the first choice"
    assert lifecycle.hand_over(ended, None, expected=5).applied and ended.handed_to is None  # withdrawn
    assert not lifecycle.hand_over(record("running"), 5, expected=None).applied, "only an ended experiment"


def test_requeue_only_before_any_boot() -> None:
    asked = record("pending", None, started_by="launch")
    t = lifecycle.requeue(asked, "QUOTA_EXCEEDED: CPUS")
    assert (asked.state, asked.started_by, t.effects) == ("queued", None, {"release_vm"})
    assert not lifecycle.requeue(record("starting"), "x").applied
    assert not lifecycle.requeue(record("pending", "b1"), "x").applied


def test_move_to_another_zone_only_before_any_boot() -> None:
    asked = record("pending", None)
    t = lifecycle.move(asked, "z2", "m-c", "ZONE_RESOURCE_POOL_EXHAUSTED for 300s")
    assert (asked.state, asked.zone, asked.mig, asked.moved_from) == ("pending", "z2", "m-c", ["z"])
    assert t.effects == {"release_vm", "request_vm"} and asked.history[-1].event == "moved"
    assert "z -> z2" in asked.history[-1].detail
    assert not lifecycle.move(asked, "z2", "m-c", "again").applied, "already there: a duplicate sweep does nothing"
    for state, boot in (("starting", "b1"), ("running", "b1"), ("queued", None), ("failed", None)):
        rec = record(state, boot)
        assert not lifecycle.move(rec, "z2", "m-c", "x").applied, state
        assert (rec.zone, rec.moved_from) == ("z", [])


def test_a_queued_experiment_the_budget_leaves_out_is_cancelled_only_while_queued() -> None:
    waiting = record("queued", None)
    t = lifecycle.never_started(waiting, "budget: 1 VM-hours", NOW)
    assert (t.applied, waiting.state, waiting.reason, waiting.finished_at) == (
        True,
        "cancelled",
        "budget: 1 VM-hours",
        NOW,
    )
    assert not t.effects, "no VM was ever asked for: nothing to remove"
    started = record("pending", None, started_by=2)
    assert not lifecycle.never_started(started, "budget", NOW).applied, "one that got a slot meanwhile runs"
    assert started.state == "pending"


def test_a_quota_refusal_is_timed_from_its_first_sighting_per_vm_request() -> None:
    asked = record("pending", None, started_by="launch")
    assert lifecycle.quota_seen(asked, NOW).applied and asked.quota_seen_at == NOW
    assert not lifecycle.quota_seen(asked, NOW + 5).applied, "the first sighting stands"
    lifecycle.requeue(asked, "QUOTA_EXCEEDED")
    assert asked.quota_seen_at is None, "a later request is timed afresh"
    assert not lifecycle.quota_seen(record("running"), NOW).applied, "only a VM not yet had"


def test_a_sweep_trial_is_pruned_once_by_its_running_boot_and_its_reports_are_kept_once() -> None:
    rec = record("running")
    assert lifecycle.reported(rec, "b1", 1, 0.5).applied
    assert not lifecycle.reported(rec, "b1", 1, 0.9).applied, "a duplicate report changes nothing"
    assert not lifecycle.reported(rec, "b0", 2, 0.9).applied, "an earlier boot's report is not this boot's"
    assert rec.intermediate == {"1": 0.5}
    assert not lifecycle.pruned(rec, "b0", 2, {}, NOW).applied
    t = lifecycle.pruned(rec, "b1", 2, {"completed_rung_0": 0.5}, NOW)
    assert (t.applied, t.effects, rec.state, rec.pruner_attrs) == (
        True,
        {"settle"},
        "pruned",
        {"completed_rung_0": 0.5},
    )
    assert rec.terminal and not lifecycle.pruned(rec, "b1", 3, {}, NOW).applied
    assert not lifecycle.reported(rec, "b1", 3, 0.1).applied, "nothing is kept of a pruned trial's later episodes"
    # The trainer's own pruned completion of an experiment the pruner already ended is a duplicate.
    assert complete("pruned")(rec).outcome == "duplicate"
    other = record("running")
    t = complete("pruned")(other)
    assert (t.outcome, other.state, t.effects) == ("pruned", "pruned", {"settle"})


def test_a_trials_completion_fills_in_the_reports_that_have_not_arrived_and_keeps_those_that_did() -> None:
    rec = record("running")
    assert lifecycle.reported(rec, "b1", 1, 0.5).applied
    lifecycle.reports_repeated(rec, "b0", {2: 0.1})
    assert rec.intermediate == {"1": 0.5}, "an earlier boot's completion repeats nothing into this boot"
    lifecycle.reports_repeated(rec, "b1", {1: 0.9, 2: 0.7, 3: 0.8})
    assert rec.intermediate == {"1": 0.5, "2": 0.7, "3": 0.8}, "a report that arrived is not overwritten"
    assert complete("succeeded")(rec).outcome == "succeeded"
    lifecycle.reports_repeated(rec, "b1", {4: 0.1})
    assert "4" not in rec.intermediate, "an ended trial keeps what it had"
