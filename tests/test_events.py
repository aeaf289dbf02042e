"""The batch-events contract and what the control plane publishes on it, the alerts' labels, the
failure-rate page's coalescing, and the Monitoring emulator closing incidents by itself."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from localcloud import monitoring
from sinergym_cloud import contracts, names
from sinergym_cloud.contracts import BatchFinished, BatchRejected, ExperimentChanged, Mlflow, event_schema
from sinergym_cloud.control import alerts, announce
from sinergym_cloud.control.events import Delivery
from sinergym_cloud.errors import BadMessage
from sinergym_cloud.records import ExperimentRecord, Failed, object_metadata, summarise
from tests.conftest import Cloud, new_batch_id
from tests.control_helpers import ppo

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_events_schema_in_docs_matches_the_models() -> None:
    assert json.loads((DOCS / "events.schema.json").read_text()) == event_schema(), (
        "run: python publisher.py schema --events > docs/events.schema.json"
    )


def record(state: str = "failed", **fields: Any) -> ExperimentRecord:
    return ExperimentRecord(
        batch_id="b-1",
        index=1,
        name="PPO-x-1",
        group="g",
        zone="europe-west1-b",
        mig="g-abc",
        instance="g-abc-1",
        spec=ppo(),
        state=state,  # type: ignore[arg-type]
        attempts=1,
        **fields,
    )


def test_an_experiment_event_is_valid_against_the_schema_and_carries_its_attributes() -> None:
    rec = record(reason="ValueError: " + "x" * 3000, log_tail=["Traceback", "ValueError: boom"])
    event = announce.experiment_event(rec, "running", vm_hours=0.5)
    body = json.loads(contracts.dump(event))
    jsonschema.validate(body, event_schema())
    assert (body["state"], body["previous_state"], body["attempt"]) == ("failed", "running", 1)
    attrs = announce.attributes(event)
    assert attrs["event"] == "experiment.state_changed" and attrs["experiment_index"] == "1"
    assert attrs["batch_id"] == "b-1" and attrs["state"] == "failed"
    assert len(attrs["reason"].encode()) <= 1024, "attribute values are cut to Pub/Sub's 1024 bytes"
    multibyte = announce.attribute("é" * 1000)
    assert len(multibyte.encode()) <= 1024 and multibyte.strip("é") == ""


@pytest.mark.parametrize(
    ("before", "after", "announced"),
    [
        ("queued", "pending", "requested"),
        ("pending", "starting", None),  # a claim by dispatch: still requested
        ("starting", "running", "running"),
        ("running", "pending", "requested"),  # a retry on a fresh VM
        ("running", "failed", "failed"),
        ("queued", "cancelled", "cancelled"),
    ],
)
def test_only_public_state_changes_are_announced(before: str, after: str, announced: str | None) -> None:
    changes = announce.public_state(before) != announce.public_state(after)
    assert changes == (announced is not None)
    if announced:
        assert announce.public_state(after) == announced


def test_a_finished_and_a_rejected_event_are_valid_against_the_schema() -> None:
    finished = BatchFinished(
        event_id="b-1/finished",
        time="2026-12-04T10:00:00Z",  # type: ignore[arg-type]
        batch_id="b-1",
        state="finished",
        experiments=3,
        counts={"succeeded": 2, "failed": 1},
        vm_hours=0.1,
        estimated_cost=0.0025,
        output_prefix="gs://bucket/b-1/",
        mlflow=Mlflow(experiment="g.b-1", tracking_uri="http://mlflow:5000"),
    )
    rejected = BatchRejected(
        event_id="rejected/1",
        time="2026-12-04T10:00:00Z",  # type: ignore[arg-type]
        reason="invalid Batch: experiments.0.algorithm: Input should be ...",
        errors=[{"field": "experiments.0.algorithm", "message": "Input should be ..."}],  # type: ignore[list-item]
    )
    for event in (finished, rejected):
        jsonschema.validate(json.loads(contracts.dump(event)), event_schema())
    assert announce.attributes(rejected) == {"event": "batch.rejected", "state": "rejected", "schema_version": "1",
                                            "reason": rejected.reason}  # fmt: skip
    assert contracts.EVENTS.validate_json(contracts.dump(finished)) == finished
    with pytest.raises(ValueError):
        ExperimentChanged.model_validate({**json.loads(contracts.dump(finished)), "event": "experiment.state_changed"})


def test_a_rejection_names_the_batch_and_the_fields_of_the_message() -> None:
    data = json.dumps({"batch_id": "from-a-service", "experiments": [{"environment": "x", "algorithm": "NOPE"}]})
    try:
        contracts.parse(contracts.Batch, data.encode())
    except BadMessage as exc:
        error = exc
    assert [f for f, _ in error.fields] == ["experiments.0.environment", "experiments.0.algorithm"]
    assert announce._batch_id_of(Delivery("m1", data.encode())) == "from-a-service"
    assert announce._batch_id_of(Delivery("m1", b"not json", {"batch_id": "attr-id"})) == "attr-id"
    assert announce._batch_id_of(Delivery("m1", b'{"batch_id": "Bad Id!"}')) is None


def test_summary_from_the_listing_counts_vm_hours_and_failures() -> None:
    now = 10_000.0
    ended = object_metadata(
        {**record(reason="boom", log_tail=["a", "ValueError: boom"]).doc(), "started_at": 100.0, "finished_at": 3700.0},
        now=now,
    )
    assert ended["reason"] == "boom" and ended["last_line"] == "ValueError: boom"
    assert float(ended["vm_hours"]) == pytest.approx(1.0)
    live = {"state": "running", "vm_hours": "0.5"}
    summary = summarise({1: (ended, now - 10), 2: (live, now - 1800)}, now)
    assert summary.counts == {"failed": 1, "running": 1}
    assert summary.vm_hours == pytest.approx(1.0 + 0.5 + 0.5), "a live VM's hours grow since its object's last write"
    assert summary.failures == [Failed(1, "PPO-x-1", "boom", "ValueError: boom")]


def test_alert_labels_fit_monitoring_and_name_every_failure() -> None:
    failures = [Failed(i, f"n{i}", "RuntimeError: " + "y" * 150, "last " * 60) for i in range(20)]
    text = alerts.failures_text(failures)
    assert len(text) <= 1024 and text.startswith("#0 RuntimeError") and text.endswith("20 in all")
    assert alerts.counts_text({"succeeded": 2, "cancelled": 2}) == "2 succeeded, 0 failed, 2 cancelled"
    assert alerts.counts_text({"succeeded": 1, "pruned": 3}) == "1 succeeded, 0 failed, 0 cancelled, 3 pruned"


def test_the_failure_rate_pages_once_however_many_fail_together(cloud: Cloud) -> None:
    """Six experiments of ten fail in the same moment: every ending checks the rate, one writes the
    point (Monitoring takes one point per series per 5 s: two would be refused)."""
    rt = cloud.runtime()
    batch_id = new_batch_id("failing")
    listing = {
        i: ({"state": "failed" if i < 6 else "running", "name": f"e{i}", "reason": "boom"}, None) for i in range(10)
    }
    paged: list[bool] = []
    threads = [
        threading.Thread(target=lambda: paged.append(alerts.check_failure_rate(rt, batch_id, listing)))
        for _ in range(6)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert paged.count(True) == 1, paged
    raised = [a for a in cloud.alerts() if a["incident"]["metric"]["labels"].get("batch_id") == batch_id]
    assert len(raised) == 1
    incident = raised[0]["incident"]
    assert incident["policy_name"] == "Sinergym batch failing" and incident["severity"] == "CRITICAL"
    assert "6 of its 10 experiments (60%) have failed" in incident["documentation"]["content"]
    assert f"python publisher.py cancel {batch_id}" in incident["documentation"]["content"]
    assert rt.state.read(names.failing_object(batch_id)) is not None
    below = {i: ({"state": "failed" if i < 2 else "running"}, None) for i in range(10)}
    assert not alerts.check_failure_rate(rt, new_batch_id("fine"), below), "20 % is under the 25 % threshold"


def test_the_emulator_closes_an_incident_once_its_series_has_no_data_for_auto_close(tmp_path: Path) -> None:
    from google.cloud.monitoring_v3 import types

    store = monitoring.Store(tmp_path, webhook=None)
    store.create_policy(
        types.CreateAlertPolicyRequest(
            name="projects/p",
            alert_policy={
                "display_name": "finished",
                "documentation": {
                    "content": "batch ${metric.label.batch_id}",
                    "links": [{"display_name": "logs", "url": "https://x/?q=${metric.label.batch_id}"}],
                },
                "alert_strategy": {"auto_close": {"seconds": 1800}},
                "conditions": [{"condition_threshold": {"filter": 'metric.type = "m"', "comparison": "COMPARISON_GT"}}],
            },
        )
    )
    store.create_time_series(
        types.CreateTimeSeriesRequest(
            name="projects/p",
            time_series=[
                {"metric": {"type": "m", "labels": {"batch_id": "b7"}}, "points": [{"value": {"double_value": 1}}]}
            ],
        )
    )
    opened = json.loads((tmp_path / "alerts.jsonl").read_text().splitlines()[0])["incident"]
    assert opened["state"] == "open" and opened["documentation"]["links"] == [
        {"display_name": "logs", "url": "https://x/?q=b7"}
    ]
    assert store.close_stale(now=opened["started_at"] + 60) == [], "not yet: a minute without data"
    closed = store.close_stale(now=opened["started_at"] + 1801)
    assert [c["state"] for c in closed] == ["closed"]
    lines = [json.loads(line)["incident"] for line in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    assert [i["state"] for i in lines] == ["open", "closed"]
    assert store.close_stale(now=opened["started_at"] + 4000) == [], "closed once"


def test_the_event_example_in_the_docs_is_valid_against_the_schema() -> None:
    text = (DOCS / "batches.md").read_text()
    section = text[text.index("## Events: the batch-events topic") :]
    example = section[section.index("```json") + len("```json") : section.index("```", section.index("```json") + 7)]
    jsonschema.validate(json.loads(example), event_schema())


class _Failing:
    """A runtime whose Pub/Sub refuses every publication with ``error``."""

    def __init__(self, error: Exception) -> None:
        from sinergym_cloud.config import Settings

        self.settings = Settings(project="p")
        self.error = error
        self.clients = self

    def publish_many(self, topic: str, messages: list[Any], timeout: float) -> list[str]:
        raise self.error


@pytest.mark.parametrize(
    ("error", "raised"),
    [
        ("ServiceUnavailable", True),  # an outage: the teardown's claim retries
        ("PermissionDenied", True),  # a caller without the role (publisher.py cancel): the sweeper retries
        ("NotFound", False),  # no batch-events topic in this deployment: logged, the teardown goes on
    ],
)
def test_the_batch_end_is_retried_unless_pubsub_refuses_it_for_good(error: str, raised: bool) -> None:
    from google.api_core import exceptions

    event = BatchRejected(event_id="x", time="2026-12-04T10:00:00Z", reason="r")  # type: ignore[arg-type]
    rt: Any = _Failing(getattr(exceptions, error)("no"))
    if raised:
        with pytest.raises(exceptions.GoogleAPICallError):
            announce.publish(rt, [event], strict=True)
    else:
        announce.publish(rt, [event], strict=True)
    announce.publish(rt, [event])  # an experiment's event never raises
