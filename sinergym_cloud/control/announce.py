"""The ``batch-events`` topic: what the control plane tells other services (contracts.BatchEvent).

Published from the one place each change is decided:

- an experiment's state change, after the compare-and-swap that made it (``batches.transition``)
  or the creation of its record (launch, a rollback): ``experiment.state_changed``. Best effort: a
  publication that fails is logged and the work goes on, and a function that dies between its
  write and its publication loses that one event (the batch's end still comes, with the counts);
- a batch's end, inside its one-time teardown (``batches.finalize_if_done``), as a step of the
  teardown claim: published at least once, marked done in the claim, retried by whoever takes the
  claim over; ``batch.finished``;
- a Batch message launch refuses, beside its dead letter: ``batch.rejected``.

An experiment event is sent when its *public* state changes: ``pending`` and ``starting`` are both
``requested`` (a VM is asked for or booting), so a claim by dispatch says nothing, its trainer
starting says ``running``. Attribute values are cut to Pub/Sub's 1024 bytes.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import BaseModel

from sinergym_cloud import contracts, errors, names, text
from sinergym_cloud.contracts import BatchFinished, BatchRejected, ExperimentChanged, Failure, FieldError, Mlflow
from sinergym_cloud.contracts.events import MAX_FAILURES_LISTED
from sinergym_cloud.control.events import Delivery
from sinergym_cloud.errors import BadMessage
from sinergym_cloud.gcp.runtime import Runtime
from sinergym_cloud.records import BatchSummary, ExperimentRecord, LaunchRecord

log = logging.getLogger(__name__)

PUBLIC_STATE = {
    "queued": "queued",
    "pending": "requested",
    "starting": "requested",
    "running": "running",
    "succeeded": "succeeded",
    "failed": "failed",
    "cancelled": "cancelled",
    "pruned": "pruned",
}
ATTRIBUTE_BYTES = 1024  # Pub/Sub's limit on an attribute value


def public_state(state: str | None) -> str | None:
    return PUBLIC_STATE.get(state or "")


def attribute(value: Any) -> str:
    """A value as an attribute: one line, at most 1024 bytes of UTF-8 (cut on a character)."""
    flat = text.clean(value, ATTRIBUTE_BYTES)
    return flat.encode()[:ATTRIBUTE_BYTES].decode(errors="ignore")


def attributes(event: ExperimentChanged | BatchFinished | BatchRejected) -> dict[str, str]:
    """The message attributes subscribers filter on: ``event``, ``state``, ``batch_id``, and an
    experiment event's ``experiment_index`` (and ``reason``, when it ended with one)."""
    found = {"event": event.event, "state": event.state, "schema_version": str(event.schema_version)}
    if event.batch_id:
        found["batch_id"] = event.batch_id
    if isinstance(event, ExperimentChanged):
        found["experiment_index"] = str(event.experiment_index)
    reason = getattr(event, "reason", "")
    if reason:
        found["reason"] = attribute(reason)
    return found


def _utc(at: float | None = None) -> dt.datetime:
    return dt.datetime.fromtimestamp(time.time() if at is None else at, dt.UTC)


def experiment_event(
    rec: ExperimentRecord, previous: str | None, vm_hours: float | None = None, at: float | None = None
) -> ExperimentChanged:
    state = public_state(rec.state)
    assert state is not None, f"no public state for {rec.state}"
    ended = rec.state in ("succeeded", "failed", "cancelled", "pruned")
    return ExperimentChanged(
        event_id=f"{rec.batch_id}/{rec.index}/{rec.attempts}/{state}",
        time=_utc(at),
        batch_id=rec.batch_id,
        experiment_index=rec.index,
        experiment_name=rec.name[:200],
        state=state,
        previous_state=public_state(previous),
        attempt=rec.attempts,
        reason=text.clean(rec.reason, 4000) if ended else "",
        instance=rec.instance,
        zone=rec.zone,
        mlflow_run_id=rec.mlflow_run_id,
        vm_hours=vm_hours if ended else None,
    )


def publish(rt: Runtime, events: Sequence[BaseModel], *, strict: bool = False) -> None:
    """Publish events on ``batch-events``, in as few requests as Pub/Sub takes. ``strict``: raise
    if Pub/Sub may take them later (the batch's end, whose claim retries: an outage, a caller without
    the permission); else, and for a refusal that will not change (no such topic: a deployment that
    has not applied it), log and go on: no event may hold a batch's teardown up for good."""
    if not events:
        return
    messages = [(contracts.dump(e), attributes(e)) for e in events]  # type: ignore[arg-type]
    try:
        rt.clients.publish_many(names.TOPIC_EVENTS, messages, timeout=min(30.0, rt.settings.call_deadline))
    except Exception as exc:
        if strict and errors.classify(exc) in ("transient", "unknown"):
            raise
        log.exception("could not publish %d event(s) on %s", len(events), names.TOPIC_EVENTS)


def changed(rt: Runtime, rec: ExperimentRecord, previous: str, at: float | None = None) -> None:
    """After a transition moved ``rec`` from ``previous`` (at ``at``): its event, if its public state
    changed. Published beside the caller's work (Runtime.later): events may arrive out of order, as
    Pub/Sub's do anyway; ``time`` and ``previous_state`` order them."""
    if public_state(rec.state) == public_state(previous) or public_state(rec.state) is None:
        return
    from sinergym_cloud import budget

    hours = budget.vm_hours(rec.doc(), time.time())[0] if rec.terminal else None
    publish(rt, [experiment_event(rec, previous, hours, at)])


def created(rt: Runtime, records: Iterable[ExperimentRecord]) -> None:
    """Experiments just made (launch's records, a rollback's): one event each, in one publication."""
    publish(rt, [experiment_event(r, None, 0.0 if r.terminal else None) for r in records])


def batch_outcome(launch: LaunchRecord) -> str:
    return launch.status if launch.status in ("cancelled", "failed") else "finished"


def finished(rt: Runtime, launch: LaunchRecord, summary: BatchSummary, note: str) -> None:
    """The batch's end (raises if Pub/Sub does not take it: the teardown is retried)."""
    price = rt.settings.vm_hour_price
    event = BatchFinished(
        event_id=f"{launch.batch_id}/finished",
        time=_utc(),
        batch_id=launch.batch_id,
        state=batch_outcome(launch),
        experiments=launch.experiments,
        counts=summary.counts,
        vm_hours=round(summary.vm_hours, 5),
        estimated_cost=round(summary.vm_hours * price, 4) if price > 0 else None,
        output_prefix=f"gs://{launch.results_bucket}/{launch.batch_id}/",
        mlflow=Mlflow(experiment=launch.mlflow_experiment, tracking_uri=rt.settings.mlflow_uri),
        failures=[
            Failure(index=f.index, name=f.name[:200], reason=f.reason[:1000], last_log_line=f.last_line[:1000])
            for f in summary.failures[:MAX_FAILURES_LISTED]
        ],
        note=note[:1000],
        retry_of=(launch.retry_of or {}).get("batch_id"),
    )
    publish(rt, [event], strict=True)


def rejected(rt: Runtime, d: Delivery, exc: BaseException) -> None:
    """A Batch message launch refused: who sent it learns why (the message is also dead-lettered)."""
    batch_id = _batch_id_of(d)
    fields = exc.fields if isinstance(exc, BadMessage) else []
    event = BatchRejected(
        event_id=f"rejected/{d.message_id or batch_id or 'unknown'}",
        time=_utc(),
        batch_id=batch_id,
        message_id=d.message_id[:200],
        reason=text.clean(str(exc), 4000),
        errors=[FieldError(field=text.clean(f, 200), message=text.clean(m, 1000)) for f, m in fields[:50]],
    )
    publish(rt, [event])


def _batch_id_of(d: Delivery) -> str | None:
    """The batch id a refused message names, if it names a valid one (its body, else its attribute)."""
    import json

    candidates: list[Any] = []
    try:
        raw = json.loads(d.data.decode("utf-8"))
        if isinstance(raw, dict):
            candidates.append(raw.get("batch_id"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        pass
    candidates.append(d.attributes.get("batch_id"))
    return next((c for c in candidates if isinstance(c, str) and names.BATCH_ID.match(c)), None)
