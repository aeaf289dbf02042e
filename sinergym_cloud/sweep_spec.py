"""The ``sweep:`` section of a batch: a search space over Experiment fields, and how to search it.

Pure data and validation (no Optuna here: ``sweep.py`` plans with it). A sweep batch carries one
base Experiment; each trial is that experiment with the trial's parameters set (dotted paths into
the Experiment, e.g. ``algorithm``, ``hyperparameters.learning_rate``,
``env_params.reward_kwargs.energy_weight``), run once per seed (``seeds``, or ``replicates`` seeds
counted up from the base experiment's). Experiment ``i`` of the batch is trial ``i // replicates``,
replicate ``i % replicates``.

```yaml
sweep:
  method: tpe                       # grid | random | tpe | nsga2 (Optuna's samplers)
  trials: 8                         # grid: the grid's size unless given
  max_parallel: 2
  seed: 1                           # same seed, same history -> same proposals
  seeds: [1, 2]                     # or replicates: 2
  objective: {metric: best_eval_mean_reward, direction: maximize}   # or objectives: [two of them]
  pruner: {name: median, min_episodes: 2}                           # or successive_halving
  parameters:
    algorithm: {choice: [PPO, SAC]}
    hyperparameters.learning_rate: {loguniform: [1.0e-5, 1.0e-2]}
    hyperparameters.n_steps: {int: [256, 2048]}
    hyperparameters.gamma: {uniform: [0.9, 0.999]}
```
"""

from __future__ import annotations

import itertools
import json
import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_TRIALS = 1000
Method = Literal["grid", "random", "tpe", "nsga2"]
Direction = Literal["maximize", "minimize"]
KINDS = ("grid", "choice", "uniform", "loguniform", "int")
_ATTR = {"int": "int_range"}  # the field behind each kind (``int`` is a builtin's name)
# Experiment fields a sweep may vary (the rest say where outputs go, or what the run is).
SWEEPABLE = (
    "environment",
    "episodes",
    "algorithm",
    "reward",
    "runperiod",
    "hyperparameters",
    "algorithm_parameters",
    "env_params",
    "wrappers",
    "normalization",
    "n_envs",
    "eval_freq",
    "eval_length",
    "log_interval",
)
# Metrics a trial's Completion reports (trainer/run.py) that make sense as objectives; the value the
# trainer reports after each episode for pruning is the one named by INTERMEDIATE.
OBJECTIVE_METRICS = (
    "best_eval_mean_reward",
    "final_mean_reward",
    "final_episode_reward",
    "final_energy_kwh",
    "final_comfort_violation_time_pct",
    "final_mean_temperature_violation",
    "final_mean_power_demand_w",
    "final_mean_reward_comfort_term",
    "final_mean_reward_energy_term",
)
PATH = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+){0,3}$"


def intermediate_key(metric: str) -> str:
    """The per-episode value of ``metric`` that the trainer reports for pruning: the evaluation's
    mean reward for ``best_eval_mean_reward``, the episode's summary value for ``final_*``."""
    if metric == "best_eval_mean_reward":
        return "eval_mean_reward"
    return metric.removeprefix("final_")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Param(_Strict):
    """One dimension of the search space: exactly one of the kinds."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, serialize_by_alias=True)

    grid: list[Any] | None = Field(None, min_length=1, max_length=100, description="Every value, in a grid.")
    choice: list[Any] | None = Field(None, min_length=1, max_length=100, description="One of these values.")
    uniform: tuple[float, float] | None = Field(None, description="[low, high], uniformly.")
    loguniform: tuple[float, float] | None = Field(None, description="[low, high], uniformly in log space.")
    int_range: tuple[int, int] | None = Field(None, alias="int", description="[low, high], an integer, both included.")

    @model_validator(mode="after")
    def _one_kind(self) -> Param:
        given = [k for k in KINDS if getattr(self, _ATTR.get(k, k)) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(KINDS)} (given: {', '.join(given) or 'none'})")
        for kind in ("uniform", "loguniform", "int"):
            bounds = getattr(self, _ATTR.get(kind, kind))
            if bounds is not None and not bounds[0] <= bounds[1]:
                raise ValueError(f"{kind}: low {bounds[0]} is above high {bounds[1]}")
        if self.loguniform is not None and self.loguniform[0] <= 0:
            raise ValueError("loguniform: low must be above 0")
        for kind in ("grid", "choice"):
            values = getattr(self, kind)
            if values is not None and len({json.dumps(v, sort_keys=True) for v in values}) != len(values):
                raise ValueError(f"{kind}: a value is listed twice")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in KINDS if getattr(self, _ATTR.get(k, k)) is not None)

    @property
    def values(self) -> list[Any] | None:
        """The values of a categorical dimension (grid or choice), else None."""
        return self.grid if self.grid is not None else self.choice

    def samples(self) -> list[Any]:
        """Values that stand for the dimension when checking it against the base experiment."""
        values = self.values
        if values is not None:
            return list(values)
        low, high = self.uniform or self.loguniform or self.int_range  # type: ignore[misc]  # one is set (_one_kind)
        return [low, high]


class Objective(_Strict):
    metric: str = Field(
        "best_eval_mean_reward",
        pattern=r"^[A-Za-z0-9_]{1,100}$",
        description=f"A metric of the trial's completion: {', '.join(OBJECTIVE_METRICS)}.",
    )
    direction: Direction = "maximize"

    @model_validator(mode="after")
    def _known(self) -> Objective:
        if self.metric not in OBJECTIVE_METRICS:
            known = ", ".join(OBJECTIVE_METRICS)
            raise ValueError(f"metric {self.metric!r} is not one the trainer reports (known: {known})")
        return self


class Pruner(_Strict):
    name: Literal["median", "successive_halving"]
    min_episodes: Annotated[int, Field(ge=1, le=10_000)] = Field(
        1, description="No trial is pruned before it has reported this many episodes."
    )
    min_trials: Annotated[int, Field(ge=0, le=1000)] = Field(
        1, description="median: no trial is pruned before this many trials completed."
    )


class Sweep(_Strict):
    """A search over the base experiment's fields (see the module docstring)."""

    method: Method = "grid"
    parameters: dict[Annotated[str, Field(pattern=PATH, max_length=120)], Param] = Field(
        default_factory=dict, max_length=30, description="Dotted Experiment paths; none: the base point, per seed."
    )
    trials: int | None = Field(None, ge=1, le=MAX_TRIALS, description="Points to run; a grid's size by default.")
    seeds: list[Annotated[int, Field(ge=0, le=2**32 - 1)]] | None = Field(None, min_length=1, max_length=100)
    replicates: int | None = Field(None, ge=1, le=100, description="Seeds per point, counted up from the base seed.")
    max_parallel: int | None = Field(None, ge=1, le=MAX_TRIALS * 100)
    objective: Objective | None = None
    objectives: list[Objective] | None = Field(None, min_length=2, max_length=2, description="Two, for a Pareto front.")
    pruner: Pruner | None = None
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Seeds Optuna's samplers: same seed, same proposals.")

    @model_validator(mode="after")
    def _consistent(self) -> Sweep:
        for path in self.parameters:
            root = path.split(".", 1)[0]
            if root not in SWEEPABLE:
                known = ", ".join(SWEEPABLE)
                raise ValueError(f"parameters.{path}: {root!r} is not a field a sweep varies (one of {known})")
        if self.seeds is not None and self.replicates is not None:
            raise ValueError("seeds and replicates: give one of them")
        if self.objective is not None and self.objectives is not None:
            raise ValueError("objective and objectives: give one of them")
        if self.method == "grid":
            continuous = [p for p, d in self.parameters.items() if d.values is None]
            if continuous:
                raise ValueError(f"parameters.{continuous[0]}: a grid takes grid or choice values, not a range")
            if self.trials is not None and self.trials > self.grid_size:
                raise ValueError(f"trials: {self.trials} is more than the grid's {self.grid_size} points")
            if self.grid_size > MAX_TRIALS:
                raise ValueError(f"parameters: the grid has {self.grid_size} points; at most {MAX_TRIALS}")
        elif self.trials is None:
            raise ValueError(f"trials: a {self.method} sweep needs the number of trials")
        if self.method in ("tpe", "nsga2") and not self.directions:
            raise ValueError(f"objective: a {self.method} sweep needs an objective to optimise")
        if self.pruner is not None and len(self.directions) != 1:
            raise ValueError("pruner: needs exactly one objective (Optuna's pruners are single-objective)")
        if self.experiments > MAX_TRIALS * 10:
            raise ValueError(f"trials x seeds: {self.experiments} experiments; at most {MAX_TRIALS * 10}")
        return self

    @property
    def grid_size(self) -> int:
        return math.prod(len(p.values or ()) for p in self.parameters.values())

    @property
    def n_trials(self) -> int:
        return self.trials if self.trials is not None else self.grid_size

    @property
    def n_replicates(self) -> int:
        return len(self.seeds) if self.seeds is not None else (self.replicates or 1)

    @property
    def experiments(self) -> int:
        return self.n_trials * self.n_replicates

    @property
    def goals(self) -> list[Objective]:
        if self.objectives is not None:
            return list(self.objectives)
        return [self.objective] if self.objective is not None else []

    @property
    def directions(self) -> list[Direction]:
        return [o.direction for o in self.goals]

    def replicate_seed(self, base_seed: int | None, replicate: int) -> int | None:
        """The seed of a point's ``replicate``-th run (None: the base experiment's seed, unreplicated)."""
        if self.seeds is not None:
            return self.seeds[replicate]
        if self.replicates is None:
            return base_seed
        return (base_seed or 0) + replicate

    def locate(self, index: int) -> tuple[int, int]:
        """(trial, replicate) of the batch's experiment ``index``."""
        return divmod(index, self.n_replicates)

    def grid_points(self) -> list[dict[str, Any]]:
        """Every point of a grid, in the order of the parameters as written (the first varies slowest)."""
        keys = list(self.parameters)
        axes = [self.parameters[k].values or [] for k in keys]
        return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*axes)]


def set_path(doc: dict[str, Any], path: str, value: Any) -> None:
    """Set ``value`` at a dotted ``path`` of a JSON document, making the mappings on the way."""
    *parents, leaf = path.split(".")
    node = doc
    for key in parents:
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            raise ValueError(f"{path}: {key} is not a mapping")
        node = child
    node[leaf] = value


def apply[E: BaseModel](base: E, params: dict[str, Any], seed: int | None, label: str | None = None) -> E:
    """The base experiment with a point's parameters and a replicate's seed set (validated)."""
    doc = base.model_dump(mode="json", exclude_none=True)
    for path, value in params.items():
        set_path(doc, path, value)
    if seed is not None:
        doc["seed"] = seed
    if label is not None:
        doc["label"] = label
    return type(base).model_validate(doc)


def trial_label(base_label: str | None, trial: int) -> str:
    """A trial's label (it prefixes its experiments' names): ``trial-<n>``, after the base's own."""
    return f"{base_label}-trial-{trial}"[-80:] if base_label else f"trial-{trial}"
