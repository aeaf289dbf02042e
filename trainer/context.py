"""What a trainer run is (``Context``: the experiment, its identity, where its results go) and what
it produced (``Outcome``: the completion's status, reason, metrics, outputs).

Plain data, shared by the runner and its helpers (tracking, the completion, ``python -m trainer
evaluate``) without importing the runner.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field

from sinergym_cloud import contracts, names
from sinergym_cloud.contracts import Experiment, TrainerSpec

MANUAL_BATCH = "manual"


@dataclass
class Context:
    """Where the experiment runs and where its results go."""

    experiment: Experiment
    name: str
    batch_id: str = MANUAL_BATCH
    index: int = 0
    group: str = "sinergym-group"
    mlflow_experiment: str = "sinergym"
    results_bucket: str | None = None
    project: str | None = None
    instance: str | None = None
    zone: str | None = None
    boot_id: str | None = None
    attempt: int = 1
    started_by: str = "launch"  # the queue: what gave it its VM slot ("launch", "experiment 3")
    queued_seconds: float = 0.0  # how long it waited queued for that slot
    completion_key: str | None = None  # signs the Completion (from dispatch, over SSH)
    checkpoint_key: str | None = None  # signs and checks the checkpoints (from dispatch, over SSH)
    progress: bool = False  # a sweep trial with a pruner: report every episode (trainer/progress.py)
    trial: int | None = None  # a sweep trial's number, and its sweep's MLflow parent run
    mlflow_parent_run_id: str | None = None

    @classmethod
    def from_spec(cls, spec: TrainerSpec) -> Context:
        """The context of a run dispatch started on a VM, from its TrainerSpec."""
        return cls(
            experiment=spec.experiment,
            name=spec.experiment_name,
            batch_id=spec.batch_id,
            index=spec.experiment_index,
            group=spec.group_name,
            mlflow_experiment=spec.mlflow_experiment,
            results_bucket=spec.results_bucket,
            project=spec.project,
            instance=spec.instance,
            zone=spec.zone,
            boot_id=spec.boot_id,
            attempt=spec.attempt,
            started_by=spec.started_by,
            queued_seconds=spec.queued_seconds,
            completion_key=spec.completion_key,
            checkpoint_key=spec.checkpoint_key,
            progress=spec.progress,
            trial=spec.trial,
            mlflow_parent_run_id=spec.mlflow_parent_run_id,
        )

    @classmethod
    def local(cls, experiment: Experiment, now: dt.datetime, group: str | None = None) -> Context:
        """The context of a run on a laptop; --remote_store needs SINERGYM_RESULTS_BUCKET."""
        bucket = os.environ.get("SINERGYM_RESULTS_BUCKET")
        if experiment.remote_store and not bucket:
            raise SystemExit("--remote_store needs SINERGYM_RESULTS_BUCKET (the bucket for the outputs)")
        return cls(
            experiment=experiment,
            name=contracts.experiment_name(experiment, now, 0),
            batch_id=group or MANUAL_BATCH,
            group=group or "sinergym-group",
            mlflow_experiment=group or "sinergym",
            results_bucket=bucket,
            project=os.environ.get("GOOGLE_CLOUD_PROJECT"),
        )

    @property
    def on_vm(self) -> bool:
        """True when dispatch started us: publish a completion, keep a heartbeat and checkpoints."""
        return self.instance is not None

    @property
    def prefix(self) -> str:
        return names.results_prefix(self.batch_id, self.name)


@dataclass
class Outcome:
    status: str = "succeeded"
    reason: str = ""
    error_type: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    output_uris: list[str] = field(default_factory=list)
    mlflow_run_id: str | None = None
    timesteps: int = 0
    progress: dict[str, dict[str, float]] = field(default_factory=dict)  # a sweep trial's episode reports
