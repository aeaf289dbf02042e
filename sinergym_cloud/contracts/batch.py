"""The batch (``Batch``): the public contract of the ``experiment-batches`` topic."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from sinergym_cloud import names, sweep_spec
from sinergym_cloud.contracts.base import (
    MAX_EXPERIMENTS,
    MAX_ZONES,
    BatchId,
    BucketName,
    GceName,
    GroupName,
    Label,
    Strict,
    Zone,
    excerpt,
    summarise,
)
from sinergym_cloud.contracts.experiment import Experiment, experiment_name
from sinergym_cloud.contracts.paths import PATH_FIELDS, path_outside
from sinergym_cloud.errors import BadMessage
from sinergym_cloud.sweep_spec import Sweep


class RetryOf(Strict):
    """What a batch made by ``publisher.py retry`` reruns: experiments of an earlier batch."""

    batch_id: BatchId = Field(description="The batch whose experiments this one runs again.")
    experiments: list[int] = Field(
        min_length=1,
        max_length=MAX_EXPERIMENTS,
        description="Their indices in that batch, in the order of this batch's experiments.",
    )


class Batch(Strict):
    """A batch of experiments: one managed instance group, one VM per experiment.

    This is the public contract of the ``experiment-batches`` topic: any service may publish it.
    """

    schema_version: Literal[1, 2, 3, 4] = Field(
        3,
        description="1 to 3 are still read; 2 adds Sinergym-config fields and max_parallel, 3 zones, "
        "max_vm_hours and the sweep, 4 retry_of. A publisher writes the lowest version its fields need.",
    )
    batch_id: BatchId = Field(description="Caller-chosen id; resubmitting the same id is a no-op.")
    group_name: GroupName = "sinergym-group"
    zone: Zone = "europe-west1-b"
    template_name: GceName = "sinergym-template"
    results_bucket: BucketName | None = Field(None, description="Defaults to the deployment's results bucket.")
    experiments: list[Experiment] = Field(min_length=1, max_length=MAX_EXPERIMENTS)
    submitted_by: Label | None = None
    submitted_at: dt.datetime | None = None
    # Version 2: how much of the project the batch may use at once, and in all.
    max_parallel: int | None = Field(
        None,
        ge=1,
        le=MAX_EXPERIMENTS,
        description="At most this many VMs at once; the rest wait, queued. Default: what the region's quotas allow.",
    )
    # Version 3: zones of the region to fail over to, in order (the first is ``zone``).
    zones: list[Zone] | None = Field(
        None,
        min_length=1,
        max_length=MAX_ZONES,
        description="Zones of one region, tried in order: an experiment whose VM its zone cannot create "
        "(ZONE_RESOURCE_POOL_EXHAUSTED) moves to the next. The first is zone (set zone to it if omitted).",
    )

    @model_validator(mode="before")
    @classmethod
    def _zone_from_zones(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("zones") and "zone" not in data and isinstance(data["zones"], list):
            data = {**data, "zone": data["zones"][0]}
        return data

    @model_validator(mode="after")
    def _zones_of_one_region(self) -> Batch:
        if self.zones is None:
            return self
        if self.zones[0] != self.zone:
            raise ValueError(f"zones: the first zone must be zone {self.zone!r}, not {self.zones[0]!r}")
        if len(set(self.zones)) != len(self.zones):
            raise ValueError(f"zones: each zone once, not {self.zones}")
        region = self.zone.rsplit("-", 1)[0]
        others = [z for z in self.zones if z.rsplit("-", 1)[0] != region]
        if others:
            raise ValueError(f"zones: all in the region of {self.zone} ({region}), not {', '.join(others)}")
        return self

    @property
    def all_zones(self) -> list[str]:
        """The zones the batch may use, in order: ``zones``, or just ``zone``."""
        return list(self.zones) if self.zones else [self.zone]

    # Version 3: a budget. No experiment starts once the batch's VM-hours so far plus the estimates of
    # the running ones and of it would pass it; those left end cancelled with the reason "budget".
    max_vm_hours: float | None = Field(
        None,
        gt=0,
        le=1_000_000,
        description="VM-hour budget of the whole batch; experiments that would pass it are cancelled (budget).",
    )

    # Version 3: a search over the (one) experiment's fields; launch expands it into its trials.
    sweep: Sweep | None = Field(
        None,
        description="A sweep: `experiments` holds one base experiment; each trial sets the sweep's parameters on it.",
    )

    def _path_problems(self, results_bucket: str | None) -> list[str]:
        """``experiments.N.FIELD: why`` for each path field that would have its experiment write
        outside its own places (contracts.paths): names known only with ``submitted_at``."""
        submitted = self.submitted_at
        names_ = [experiment_name(e, submitted, i) if submitted else None for i, e in enumerate(self.experiments)]
        known = frozenset(n for n in names_ if n is not None)
        problems = []
        for i, (exp, name) in enumerate(zip(self.experiments, names_, strict=True)):
            for field_name in PATH_FIELDS:
                problem = path_outside(getattr(exp, field_name), results_bucket, self.batch_id, name, known - {name})
                if problem:
                    problems.append(f"experiments.{i}.{field_name}: {problem}")
        return problems

    # Version 4: a rerun of an earlier batch's experiments (publisher.py retry).
    retry_of: RetryOf | None = Field(None, description="The earlier batch and experiments this batch reruns.")

    @model_validator(mode="after")
    def _retry_matches(self) -> Batch:
        if self.retry_of is not None and len(self.retry_of.experiments) != len(self.experiments):
            raise ValueError(
                f"retry_of.experiments names {len(self.retry_of.experiments)} experiment(s); the batch has "
                f"{len(self.experiments)}"
            )
        return self

    @model_validator(mode="after")
    def _paths_in_own_prefix(self) -> Batch:
        problems = self._path_problems(self.results_bucket)
        if problems:
            raise ValueError(problems[0])
        return self

    def check_paths(self, results_bucket: str) -> None:
        """Raise BadMessage if a path field would have its experiment write outside its own places
        in ``results_bucket`` (the deployment's default bucket when the batch names none)."""
        assert self.submitted_at is not None
        problems = self._path_problems(results_bucket)
        if problems:
            where, _, why = problems[0].partition(": ")
            raise BadMessage(f"invalid Batch: {problems[0]}", fields=[(where, why)])

    @model_validator(mode="after")
    def _sweep_applies(self) -> Batch:
        if self.sweep is None:
            return self
        if self.schema_version < 3:
            raise ValueError("sweep needs schema_version 3")
        if len(self.experiments) not in (1, self.sweep.experiments):
            raise ValueError(f"a sweep takes one base experiment in `experiments`, not {len(self.experiments)}")
        base = self.experiments[0]
        for path, param in self.sweep.parameters.items():
            for value in param.samples():
                try:
                    sweep_spec.apply(base, {path: value}, None)
                except ValidationError as exc:
                    raise ValueError(f"sweep.parameters.{path} = {excerpt(value)}: {summarise(exc)}") from None
                except ValueError as exc:
                    raise ValueError(f"sweep.parameters.{path}: {exc}") from None
        return self

    @model_validator(mode="after")
    def _version_fields(self) -> Batch:
        if self.schema_version < 4 and self.retry_of is not None:
            raise ValueError("retry_of needs schema_version 4")
        if self.schema_version < 3 and self.zones is not None:
            raise ValueError("zones needs schema_version 3")
        if self.schema_version < 3 and self.max_vm_hours is not None:
            raise ValueError("max_vm_hours needs schema_version 3")
        if self.schema_version == 1:
            if self.max_parallel is not None:
                raise ValueError("max_parallel needs schema_version 2")
            for i, exp in enumerate(self.experiments):
                if exp.v2_fields:
                    raise ValueError(f"experiments.{i}: {', '.join(exp.v2_fields)} need schema_version 2")
        for i, exp in enumerate(self.experiments):
            model = exp.initial_model
            if model is not None and model.uri is not None and not model.uri.startswith("gs://"):
                raise ValueError(f"experiments.{i}.initial_model.uri: a VM cannot read a local path; give gs://")
        return self

    @property
    def mig_parts(self) -> int:
        return (len(self.experiments) - 1) // names.MIG_MAX_INSTANCES + 1
