"""What the control plane tells other services on the ``batch-events`` topic (``BatchEvent``).

Three events, one JSON message each, told apart by ``event`` (and by the message attribute of the
same name, so a subscription can filter on it without reading the body):

- ``experiment.state_changed``: an experiment is ``queued``, ``requested`` (its VM is asked for, at
  launch, from the queue or for a retry), ``running`` (its trainer started), or ended ``succeeded``,
  ``failed`` (with the reason), ``cancelled`` or ``pruned``;
- ``batch.finished``: every experiment of the batch ended; counts by state, VM-hours, the estimated
  cost, where the outputs are, the MLflow experiment, and each failed experiment with its reason;
- ``batch.rejected``: a Batch message was refused (nothing was made for it), with the validation
  error and the fields it names, so a service that published it learns why.

Every message carries the attributes ``event``, ``state``, ``batch_id`` (when known) and, on an
experiment event, ``experiment_index``. ``event_id`` is the same for a repeated publication of the
same change (Pub/Sub delivers at least once): subscribers de-duplicate on it. ``schema_version`` 1.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from sinergym_cloud.contracts.base import MAX_EXPERIMENTS, BatchId

EXPERIMENT_STATES = ("queued", "requested", "running", "succeeded", "failed", "cancelled", "pruned")
ExperimentEventState = Literal["queued", "requested", "running", "succeeded", "failed", "cancelled", "pruned"]
MAX_FAILURES_LISTED = 50


class Strict(BaseModel):
    """Written only by the control plane, read by anyone: unknown fields are refused (as in every
    contract here), and ``event`` stays a plain discriminator (contracts.Strict's boolean check is a
    before-validator, which a discriminated union does not take)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class _Event(Strict):
    schema_version: Literal[1] = 1
    event_id: str = Field(max_length=200, description="The same for every publication of the same change.")
    time: dt.datetime = Field(description="When the change was recorded (UTC).")


class ExperimentChanged(_Event):
    """An experiment's state changed."""

    event: Literal["experiment.state_changed"] = "experiment.state_changed"
    batch_id: BatchId
    experiment_index: int = Field(ge=0, lt=MAX_EXPERIMENTS)
    experiment_name: str = Field(max_length=200)
    state: ExperimentEventState
    previous_state: ExperimentEventState | None = Field(None, description="None when the experiment was just made.")
    attempt: int = Field(0, ge=0, description="How many boots of it were started so far.")
    reason: str = Field("", max_length=4000, description="Why it ended failed, cancelled or pruned.")
    instance: str | None = None
    zone: str | None = None
    mlflow_run_id: str | None = None
    vm_hours: float | None = Field(None, ge=0, description="Its VM-hours, once it ended.")


class Failure(Strict):
    index: int = Field(ge=0, lt=MAX_EXPERIMENTS)
    name: str = Field(max_length=200)
    reason: str = Field("", max_length=1000)
    last_log_line: str = Field("", max_length=1000)


class Mlflow(Strict):
    experiment: str = Field(max_length=200, description="The MLflow experiment every run of the batch is in.")
    tracking_uri: str | None = Field(None, max_length=500, description="The deployment's MLflow server.")


class BatchFinished(_Event):
    """Every experiment of a batch ended (or the batch was cancelled, or its launch failed)."""

    event: Literal["batch.finished"] = "batch.finished"
    batch_id: BatchId
    state: Literal["finished", "cancelled", "failed"]
    experiments: int = Field(ge=0)
    counts: dict[str, int] = Field(description="Experiments by final state.")
    vm_hours: float = Field(ge=0)
    estimated_cost: float | None = Field(None, ge=0, description="VM-hours times SINERGYM_VM_HOUR_PRICE.")
    currency: str = "USD"
    output_prefix: str = Field(description="gs://BUCKET/BATCH/: every experiment's outputs and logs are below it.")
    mlflow: Mlflow
    failures: list[Failure] = Field(default_factory=list, max_length=MAX_FAILURES_LISTED)
    note: str = Field("", max_length=1000, description="What else to know, e.g. the VM-hour budget was reached.")
    retry_of: BatchId | None = None


class FieldError(Strict):
    field: str = Field(max_length=200, description="Dotted path of the field, e.g. experiments.0.algorithm.")
    message: str = Field(max_length=1000)


class BatchRejected(_Event):
    """A Batch message was refused: nothing was made for it (it is also dead-lettered)."""

    event: Literal["batch.rejected"] = "batch.rejected"
    batch_id: BatchId | None = Field(None, description="The message's batch id, when it had a valid one.")
    state: Literal["rejected"] = "rejected"
    message_id: str = Field("", max_length=200, description="The Pub/Sub message id of the refused message.")
    reason: str = Field(max_length=4000)
    errors: list[FieldError] = Field(default_factory=list, max_length=50)


BatchEvent = Annotated[ExperimentChanged | BatchFinished | BatchRejected, Field(discriminator="event")]
EVENTS: TypeAdapter[ExperimentChanged | BatchFinished | BatchRejected] = TypeAdapter(BatchEvent)


def event_schema() -> dict[str, object]:
    """The JSON Schema of every message on ``batch-events`` (``python publisher.py schema --events``)."""
    schema = EVENTS.json_schema()
    schema["title"] = "BatchEvent"
    schema["description"] = (__doc__ or "").split("\n\n")[0].replace("\n", " ")
    return schema
