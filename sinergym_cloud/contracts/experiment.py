"""One experiment (``Experiment``): what the original tool's flags said, and what Sinergym's training
YAML adds (wrappers, environment arguments, an initial model), as data; and its stable name."""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from sinergym_cloud import catalog
from sinergym_cloud.contracts.base import BatchId, Label, SafePath, Strict, summarise
from sinergym_cloud.contracts.parameters import (
    NOISE_ALGORITHMS,
    AlgorithmParameters,
    ConfigValue,
    Hyperparameters,
    Identifier,
    NoiseVector,
    VariableName,
    hyperparameter_algorithms,
)
from sinergym_cloud.contracts.paths import PATH_FIELDS, path_problem
from sinergym_cloud.options import ON_POLICY, Option

V2_EXPERIMENT_FIELDS = ("label", "algorithm_parameters", "wrappers", "env_params", "initial_model")


class BoxSpace(Strict):
    """``gym.spaces.Box(low, high, shape, dtype)`` as data (a wrapper argument such as
    ProbabilisticContextWrapper's ``context_space``); the trainer builds the space."""

    low: NoiseVector
    high: NoiseVector
    shape: list[Annotated[int, Field(ge=1, le=1000)]] | None = Field(None, max_length=4)
    dtype: Literal["float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool"] = "float32"


class DiscreteSpace(Strict):
    """``gym.spaces.Discrete(n, start=...)`` as data."""

    n: int = Field(ge=1, le=1_000_000)
    start: int = Field(0, ge=-1_000_000, le=1_000_000)


SPACES: dict[str, type[Strict]] = {"gym.spaces.Box": BoxSpace, "gym.spaces.Discrete": DiscreteSpace}
# ``module:attr``: what Sinergym's script imports from a wrapper argument string.
_IMPORT_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_]*$")


def space_of(value: object) -> tuple[str, dict[str, object]] | None:
    """(``gym.spaces.Box``, its arguments) if ``value`` is a space given as data, else None."""
    if isinstance(value, dict) and len(value) == 1:
        ((key, arguments),) = value.items()
        if isinstance(key, str) and key.startswith("gym.spaces.") and isinstance(arguments, dict):
            return key, arguments
    return None


class Wrapper(Strict):
    """One of Sinergym's wrappers, by class name (catalog.WRAPPER_CLASSES), with its arguments."""

    name: str = Field(max_length=100, description="Class name in sinergym.utils.wrappers.")
    kwargs: dict[Identifier, ConfigValue] = Field(
        default_factory=dict,
        max_length=50,
        description='Its arguments as data; a gymnasium space as {"gym.spaces.Box": {low, high, shape, dtype}}.',
    )

    @field_validator("name")
    @classmethod
    def _allowed(cls, value: str) -> str:
        resolved = catalog.resolve_wrapper_class(value)
        if resolved is None:
            raise ValueError(f"wrapper {value!r}: {catalog.wrapper_refusal(value)}")
        return resolved

    @model_validator(mode="after")
    def _class_arguments(self) -> Wrapper:
        storage = self.kwargs.get("storage_class")
        if storage is not None and storage not in catalog.ARGUMENT_CLASSES:
            allowed = ", ".join(sorted(catalog.ARGUMENT_CLASSES))
            raise ValueError(f"{self.name}.storage_class {storage!r} is not allowed (allowed: {allowed})")
        for key, value in self.kwargs.items():
            if key != "storage_class" and isinstance(value, str) and _IMPORT_PATH.match(value):
                raise ValueError(
                    f"{self.name}.{key} {value!r}: names Python code to import, which a config cannot send"
                )
            space = space_of(value)
            if space is not None:
                kind, arguments = space
                if kind not in SPACES:
                    raise ValueError(f"{self.name}.{key}: {kind} is not a space this project builds (Box, Discrete)")
                try:
                    SPACES[kind].model_validate(arguments)
                except ValidationError as exc:
                    raise ValueError(f"{self.name}.{key} ({kind}): {summarise(exc)}") from None
        return self


Noise = float | tuple[float, float]
WeatherNoise = tuple[Noise, Noise, Noise]
WeatherNoiseClipped = tuple[Noise, Noise, Noise, tuple[float, float]]


class EnvParams(Strict):
    """Sinergym environment arguments beyond reward, seed and run period (Sinergym's ``env_params``)."""

    reward_kwargs: dict[Identifier, ConfigValue] | None = Field(None, max_length=50)
    weather_variability: dict[VariableName, WeatherNoise | WeatherNoiseClipped] | None = Field(
        None, max_length=20, description="variable: (sigma, mu, tau[, (low, high)]), each a number or a range."
    )
    timesteps_per_hour: int | None = Field(None, ge=1, le=60)
    deep_update: bool = Field(
        True, description="Merge reward_kwargs into the environment's defaults (Sinergym's env_deep_update)."
    )


class WandbArtifact(Strict):
    """A model stored as a W&B artifact (Sinergym's ``model`` with artifact_name)."""

    entity: Label
    project: Label
    artifact_name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,200}$")]
    artifact_type: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")] = "output"
    artifact_tag: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")] = "latest"
    model_path: SafePath = "Sinergym_output/evaluation/best_model.zip"


class InitialModel(Strict):
    """Where an experiment's starting policy comes from: exactly one of the three."""

    uri: SafePath | None = Field(None, description="gs://.../model.zip, or a local path (laptop runs only).")
    batch_id: BatchId | None = Field(None, description="With experiment: a previous batch's experiment.")
    experiment: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,200}$")] | None = Field(
        None, description="The experiment's name in that batch (status --json shows it)."
    )
    wandb: WandbArtifact | None = None

    @model_validator(mode="after")
    def _one_source(self) -> InitialModel:
        sources = [
            self.uri is not None,
            self.batch_id is not None or self.experiment is not None,
            self.wandb is not None,
        ]
        if sum(sources) != 1:
            raise ValueError("initial_model takes exactly one of uri, batch_id + experiment, wandb")
        if (self.batch_id is None) != (self.experiment is None):
            raise ValueError("initial_model: batch_id and experiment go together")
        if self.uri and ".." in self.uri.split("/"):
            raise ValueError("initial_model.uri must not contain '..'")
        return self


def _check_date(day: int, month: int, year: int) -> None:
    dt.date(year, month, day)  # raises ValueError with a clear message


class Experiment(Strict):
    """One training run: what the original tool's DRL_battery.py flags described, as data."""

    environment: Annotated[str, Option("-env")] = Field(
        max_length=100, description="Sinergym environment id, e.g. Eplus-5zone-hot-continuous-v1."
    )
    episodes: Annotated[int, Option("-ep")] = Field(
        1, ge=1, le=10_000, description="Number of training episodes (default 1)."
    )
    algorithm: Annotated[
        Literal["PPO", "A2C", "DQN", "DDPG", "SAC", "TD3", "ARS", "QRDQN", "TQC", "TRPO", "CrossQ", "RecurrentPPO"],
        Option("-alg"),
    ] = Field(
        "PPO",
        description="PPO, A2C, DQN, DDPG, SAC or TD3 (default PPO); (schema 2) an sb3-contrib one, "
        "ARS, QRDQN, TQC, TRPO, CrossQ or RecurrentPPO.",
    )
    reward: Annotated[str, Option("-rw")] = Field(
        "linear",
        max_length=60,
        description="linear (default), exponential, or a Sinergym reward class name such as HourlyLinearReward.",
    )
    normalization: Annotated[bool, Option("-norm")] = Field(
        False, description="Normalize observations (Sinergym NormalizeObservation)."
    )
    multiobs: Annotated[bool, Option("-mobs")] = Field(
        False, description="Stack observations (Sinergym MultiObsWrapper)."
    )
    logger: Annotated[bool, Option("-log")] = Field(
        False, description="Log every step with Sinergym's LoggerWrapper and CSV monitors."
    )
    tensorboard: Annotated[SafePath | None, Option("-tens")] = Field(
        None,
        description="TensorBoard log directory: a path relative to the run directory, or a gs:// folder of "
        "the results bucket (gs://<results bucket>/<batch id>/tb), where each experiment writes into "
        "<folder>/<experiment name>/ (omit to disable).",
    )
    evaluation: Annotated[bool, Option("-eval")] = Field(
        False, description="Evaluate during training and keep the best model."
    )
    eval_freq: Annotated[int, Option("-evalf")] = Field(
        2, ge=1, le=10_000, description="Evaluate every N training episodes (default 2)."
    )
    eval_length: Annotated[int, Option("-evall")] = Field(
        2, ge=1, le=1_000, description="Episodes per evaluation (default 2)."
    )
    log_interval: Annotated[int, Option("-inter")] = Field(
        1, ge=1, le=1_000_000, description="log_interval passed to SB3 learn() (default 1)."
    )
    seed: Annotated[int | None, Option("-sd")] = Field(
        None, ge=0, le=2**32 - 1, description="Random seed for the agent and the environment."
    )
    remote_store: Annotated[bool, Option("-sto")] = Field(
        False, description="Upload every output to the results bucket."
    )
    mlflow_store: Annotated[bool, Option("-mlflow")] = Field(
        False, description="Also store the Sinergym output folder as MLflow artifacts."
    )
    # Not in the original tool: what a short smoke run or a multi-core VM needs (long flags only).
    runperiod: Annotated[tuple[int, int, int, int, int, int] | None, Option()] = Field(
        None,
        description="Simulated period as D M Y D M Y, e.g. 1 1 1991 7 1 1991 for one week "
        "(default: the building's own).",
    )
    n_envs: Annotated[int, Option(long="--n-envs")] = Field(
        1, ge=1, le=64, description="Parallel simulations for PPO/A2C (default 1)."
    )
    checkpoint_every: Annotated[int, Option(long="--checkpoint-every")] = Field(
        1, ge=0, le=10_000, description="Save a resumable checkpoint every N episodes (default 1; 0 disables)."
    )
    checkpoint_min_seconds: Annotated[float, Option(long="--checkpoint-min-seconds")] = Field(
        60.0,
        ge=0,
        le=86_400,
        description="At least this many seconds between two checkpoints: a due one is skipped sooner "
        "(default 60; 0: every --checkpoint-every episodes). The stop's checkpoint (SIGTERM) is always saved.",
    )
    hyperparameters: Hyperparameters = Hyperparameters()
    mode: Literal["train", "check"] = Field(
        "train", description="check: run `python -m trainer check` on the VM instead of training."
    )
    # Schema version 2: what Sinergym's training YAML adds (see sinergym_cloud/inputs/sinergym_config.py).
    label: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,80}$")] | None = Field(
        None, description="A name of your own (Sinergym's experiment_name); it prefixes the experiment's name."
    )
    algorithm_parameters: AlgorithmParameters | None = Field(
        None, description="All the algorithm's arguments (replacing the trainer's YAML defaults)."
    )
    wrappers: list[Wrapper] | None = Field(
        None, max_length=30, description="Sinergym wrappers in order (replacing the wrapper flags)."
    )
    env_params: EnvParams | None = None
    initial_model: InitialModel | None = Field(None, description="Start from this model (fine-tune).")

    @field_validator("environment")
    @classmethod
    def _known_environment(cls, value: str) -> str:
        resolved = catalog.resolve_environment(value)
        if resolved is None:
            raise ValueError(catalog.environment_refusal(value))
        return resolved

    @field_validator("reward")
    @classmethod
    def _known_reward(cls, value: str) -> str:
        if catalog.resolve_reward(value) is None:
            known = ", ".join(sorted(catalog.REWARD_ALIASES) + sorted(catalog.REWARD_CLASSES))
            raise ValueError(f"unknown reward {value!r} (known: {known})")
        return value

    @field_validator("runperiod")
    @classmethod
    def _valid_period(cls, value: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if value is None:
            return None
        d1, m1, y1, d2, m2, y2 = value
        _check_date(d1, m1, y1)
        _check_date(d2, m2, y2)
        if (y2, m2, d2) < (y1, m1, d1):
            raise ValueError("runperiod ends before it starts")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Experiment:
        kind = catalog.action_space_kind(self.environment)
        if kind not in catalog.ALGORITHM_ACTION_SPACES[self.algorithm]:
            needs = " or ".join(sorted(catalog.ALGORITHM_ACTION_SPACES[self.algorithm]))
            raise ValueError(f"{self.algorithm} needs a {needs} action space; {self.environment} has a {kind} one")
        for name in self.hyperparameters.given():
            allowed = hyperparameter_algorithms(name)
            if self.algorithm not in allowed:
                takers = ", ".join(sorted(allowed))
                raise ValueError(f"hyperparameter {name} does not apply to {self.algorithm} (it applies to {takers})")
        if self.n_envs > 1 and self.algorithm not in ON_POLICY:
            raise ValueError(f"n_envs > 1 is supported for PPO and A2C, not {self.algorithm}")
        for field_name in PATH_FIELDS:
            problem = path_problem(getattr(self, field_name))
            if problem:
                raise ValueError(f"{field_name}: {problem}")
        self._consistent_v2()
        return self

    def _consistent_v2(self) -> None:
        if self.algorithm in catalog.CONTRIB_ALGORITHMS and self.hyperparameters.given():
            raise ValueError(f"{self.algorithm} takes algorithm_parameters, not hyperparameters")
        if self.algorithm_parameters is not None and self.algorithm_parameters.action_noise is not None:
            if self.algorithm not in NOISE_ALGORITHMS:
                takers = ", ".join(sorted(NOISE_ALGORITHMS))
                raise ValueError(
                    f"algorithm_parameters.action_noise: {self.algorithm} takes none (it applies to {takers})"
                )
            if self.hyperparameters.sigma is not None:
                raise ValueError("give the action noise once: sigma or algorithm_parameters.action_noise")
        if self.wrappers is not None:
            named = [w.name for w in self.wrappers]
            for flag, wrapper in (
                ("normalization", "NormalizeObservation"),
                ("logger", "LoggerWrapper"),
                ("multiobs", "MultiObsWrapper"),
            ):
                if getattr(self, flag) != (wrapper in named):
                    raise ValueError(f"with wrappers, {flag} must be {wrapper in named} ({wrapper} is listed or not)")
            if "WandBLogger" in named:
                if "LoggerWrapper" not in named[: named.index("WandBLogger")]:
                    raise ValueError("WandBLogger needs a LoggerWrapper before it in wrappers")
                if self.n_envs > 1:
                    raise ValueError("WandBLogger logs one simulation: it needs n_envs 1")

    @property
    def v2_fields(self) -> list[str]:
        """The schema-2 fields this experiment uses (a version-1 message may use none)."""
        used = [name for name in V2_EXPERIMENT_FIELDS if getattr(self, name) is not None]
        if self.algorithm in catalog.CONTRIB_ALGORITHMS:
            used.append(f"algorithm {self.algorithm}")
        return used

    @property
    def reward_class(self) -> str:
        resolved = catalog.resolve_reward(self.reward)
        assert resolved is not None  # checked by the validator
        return resolved


_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


def experiment_name(experiment: Experiment, submitted_at: dt.datetime, index: int) -> str:
    """A unique, filesystem- and URL-safe name, as the original built it, made stable.

    ``<ALG>-<env>-episodes-<n>[-seed-<s>]-<UTC time>-<index>``. The time is the batch's submission
    time, not the trainer's start time, so that a VM replacing a preempted one finds the same name
    (and so the same checkpoint and MLflow run).
    """
    stamp = submitted_at.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    name = f"{experiment.algorithm}-{experiment.environment}-episodes-{experiment.episodes}"
    if experiment.label:
        name = f"{experiment.label}-{name}"
    if experiment.seed is not None:
        name += f"-seed-{experiment.seed}"
    name += f"-{stamp}-{index}"
    return _SAFE_NAME.sub("-", name)
