"""The messages of a run: what a VM says (``InstanceReady``, ``Completion``, ``Progress``) and what
dispatch hands the trainer (``TrainerSpec``)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import Field, model_validator

from sinergym_cloud.contracts.base import (
    MAX_EXPERIMENTS,
    BatchId,
    BucketName,
    ExperimentStatus,
    GceName,
    GroupName,
    Strict,
    Zone,
)
from sinergym_cloud.contracts.experiment import Experiment
from sinergym_cloud.contracts.paths import PATH_FIELDS, path_outside


class InstanceReady(Strict):
    """Published by a VM once its trainer runtime is up and sshd listens.

    A hint, never proof (any VM can publish one): dispatch checks the instance and its boot with
    Compute and takes the address and host keys from there; ``address``, ``ssh_port`` and
    ``host_key_fingerprint`` are kept for compatibility and not believed."""

    schema_version: Literal[1] = 1
    instance: GceName
    zone: Zone
    mig: GceName
    batch_id: BatchId
    address: str = Field(pattern=r"^[0-9.]{7,15}$|^[0-9a-f:]{2,39}$")
    ssh_port: int = Field(22, ge=1, le=65535)
    host_key_fingerprint: str = Field(pattern=r"^SHA256:[A-Za-z0-9+/]{43}$")
    boot_id: str = Field(pattern=r"^[A-Za-z0-9-]{1,64}$", description="Changes at every boot of the VM.")


class TokenRefresh(Strict):
    """Published by the sweeper on the instance-ready topic (attribute ``kind=token-refresh``) when a
    running experiment's Cloud Storage token is past half its life: dispatch mints a fresh one and
    hands it to the boot's VM. Like InstanceReady a hint: dispatch checks the record and Compute."""

    schema_version: Literal[1] = 1
    batch_id: BatchId
    experiment_index: int = Field(ge=0, lt=MAX_EXPERIMENTS)
    boot_id: str = Field(pattern=r"^[A-Za-z0-9-]{1,64}$")


MAX_PROGRESS_EPISODES = 1000  # the last episodes a Completion repeats the reports of
Episode = Annotated[str, Field(pattern=r"^[1-9][0-9]{0,5}$")]
EpisodeMetrics = Annotated[dict[Annotated[str, Field(max_length=100)], float], Field(max_length=50)]


class Completion(Strict):
    """Published by the trainer when an experiment ends, on every path.

    It counts only with the ``signature`` attribute (signing.py) made with its boot's key."""

    schema_version: Literal[1, 2] = Field(2, description="1 is still read; 2 adds the status pruned.")
    batch_id: BatchId
    experiment_index: int = Field(ge=0, lt=MAX_EXPERIMENTS)
    experiment_name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,200}$")
    instance: GceName
    zone: Zone
    boot_id: str = Field(pattern=r"^[A-Za-z0-9-]{1,64}$")
    status: ExperimentStatus
    exit_reason: str = Field("", max_length=4000)
    error_type: str | None = Field(None, max_length=200)
    log_tail: list[Annotated[str, Field(max_length=1000)]] = Field(default_factory=list, max_length=50)
    metrics: dict[Annotated[str, Field(max_length=100)], float] = Field(default_factory=dict)
    output_uris: list[Annotated[str, Field(max_length=1000)]] = Field(default_factory=list, max_length=1000)
    mlflow_run_id: str | None = Field(None, pattern=r"^[A-Za-z0-9]{1,64}$")
    timesteps: int = Field(0, ge=0)
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    progress: dict[Episode, EpisodeMetrics] = Field(
        default_factory=dict,
        max_length=MAX_PROGRESS_EPISODES,
        description="A sweep trial's episode reports (episode -> its Progress metrics), again: a report "
        "delivered after the completion still reaches the pruner's history.",
    )

    @model_validator(mode="after")
    def _version_status(self) -> Completion:
        if self.schema_version == 1 and self.status == "pruned":
            raise ValueError("status pruned needs schema_version 2")
        return self


class Progress(Strict):
    """Published by a sweep trial's trainer after each episode, on the completions topic with the
    attribute ``kind=progress``, signed like its Completion: the episode's metrics (and, after an
    evaluation, ``eval_mean_reward``), which the sweep's pruner reads (control/sweeps.py). Sent after
    the episode's checkpoint is stored, so a trial pruned on it loses nothing."""

    schema_version: Literal[1] = 1
    kind: Literal["progress"] = "progress"
    batch_id: BatchId
    experiment_index: int = Field(ge=0, lt=MAX_EXPERIMENTS)
    instance: GceName
    zone: Zone
    boot_id: str = Field(pattern=r"^[A-Za-z0-9-]{1,64}$")
    episode: int = Field(ge=1, le=100_000)
    metrics: dict[Annotated[str, Field(max_length=100)], float] = Field(default_factory=dict, max_length=50)


# The TrainerSpec fields of schema version 2: a version-1 spec (an older dispatch) has none of them.
TRAINER_SPEC_V2 = (
    "started_by",
    "queued_seconds",
    "completion_key",
    "checkpoint_key",
    "progress",
    "trial",
    "mlflow_parent_run_id",
)


class TrainerSpec(Strict):
    """What dispatch hands the trainer on the VM (over SSH, on stdin): one experiment, in context."""

    schema_version: Literal[1, 2] = Field(
        2, description="1 is still read; 2 adds the boot's keys, the queue's and the sweep's fields."
    )
    project: str = Field(pattern=r"^[a-z][-a-z0-9]{4,28}[a-z0-9]$")
    batch_id: BatchId
    experiment_index: int = Field(ge=0, lt=MAX_EXPERIMENTS)
    experiment_name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,200}$")
    group_name: GroupName
    experiment: Experiment
    results_bucket: BucketName
    instance: GceName
    zone: Zone
    boot_id: str = Field(pattern=r"^[A-Za-z0-9-]{1,64}$")
    attempt: int = Field(1, ge=1)
    mlflow_experiment: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,200}$")
    # The queue: what gave the experiment its VM slot, and how long it waited queued for
    # it; the trainer tags its MLflow run with both. Defaults: started at launch, no wait.
    started_by: str = Field("launch", pattern=r"^(launch|experiment [0-9]{1,5})$")
    queued_seconds: float = Field(0.0, ge=0)
    # Handed over the verified SSH session only (signing.py): the trainer signs its Completion with
    # the first and its checkpoints with the second. None: an unsigned run, whose completion cleanup refuses.
    completion_key: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    checkpoint_key: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    # A sweep trial whose sweep has a pruner: publish a Progress after each episode.
    progress: bool = False
    # A sweep trial: its trial number, and the sweep's MLflow parent run (its run is a child).
    trial: int | None = Field(None, ge=0)
    mlflow_parent_run_id: str | None = Field(None, pattern=r"^[A-Za-z0-9]{1,64}$")

    @model_validator(mode="after")
    def _version_fields(self) -> TrainerSpec:
        if self.schema_version == 1:
            used = [f for f in TRAINER_SPEC_V2 if f in self.model_fields_set]
            if used:
                raise ValueError(f"{', '.join(used)} need schema_version 2")
        return self

    @model_validator(mode="after")
    def _paths_in_own_prefix(self) -> TrainerSpec:
        for field_name in PATH_FIELDS:
            value = getattr(self.experiment, field_name)
            problem = path_outside(value, self.results_bucket, self.batch_id, self.experiment_name)
            if problem:
                raise ValueError(f"experiment.{field_name}: {problem}")
        return self
