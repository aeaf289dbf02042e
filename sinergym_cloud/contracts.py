"""The messages that cross a boundary: Batch, Experiment, InstanceReady, Completion.

Every message is a versioned pydantic model. Experiments are structured: no field is ever a shell
string, and every string field has a pattern that admits no shell metacharacter, so a message
cannot smuggle a command onto a VM even if some later code forgot to quote.

One module on purpose, though long: it is the whole wire contract (docs/batch.schema.json is
generated from it), and each field carries its bounds, its help and, for an option, its flag
(``options.Option``), so the contract reads in one place.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from sinergym_cloud import catalog, names, sweep_spec
from sinergym_cloud.errors import BadMessage
from sinergym_cloud.options import ACTOR_CRITIC_OFF, ALL, OFF_POLICY, ON_POLICY, Option, option_of
from sinergym_cloud.sweep_spec import Sweep

SCHEMA_VERSION = 1  # of InstanceReady
# Batch: 2 adds the Sinergym-config fields and max_parallel, 3 zones, max_vm_hours and the sweep; 1 and 2
# are still read (schema_versions()). Completion: 2 adds the status ``pruned``; 1 is still read.
# TrainerSpec: 2 adds the boot's keys, the queue's and the sweep's fields (TRAINER_SPEC_V2); 1 is still read.
MAX_EXPERIMENTS = 5000
MAX_ZONES = 8
MAX_MESSAGE_BYTES = 4 * 1024 * 1024

GceName = Annotated[str, Field(pattern=names.GCE_NAME.pattern, max_length=63)]
GroupName = Annotated[str, Field(pattern=names.GROUP_NAME.pattern, max_length=40)]
BatchId = Annotated[str, Field(pattern=names.BATCH_ID.pattern, max_length=63)]
Zone = Annotated[str, Field(pattern=r"^[a-z]+-[a-z]+[0-9]+-[a-z]$", max_length=40)]
BucketName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]{1,61}[a-z0-9]$")]
# A local directory or a gs:// URI: letters, digits and . _ - / only.
SafePath = Annotated[str, Field(pattern=r"^(gs://[a-z0-9][a-z0-9_.-]{1,61}[a-z0-9])?[A-Za-z0-9_./-]*$", max_length=512)]
Label = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:@ -]*$", max_length=200)]
ExperimentStatus = Literal["succeeded", "failed", "preempted", "pruned"]


class Strict(BaseModel):
    """Unknown fields are errors, not silently dropped: a typo must not change what runs.

    Booleans are not numbers either: ``"episodes": true`` is a mistake, not one episode.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_as_number(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, bool) and info.field_name:
            annotation = cls.model_fields[info.field_name].annotation
            if bool not in get_args(annotation) and annotation is not bool:
                raise ValueError(f"expected {getattr(annotation, '__name__', annotation)}, not a boolean")
        return value


class SharedParameters(Strict):
    """The algorithm arguments that ``Hyperparameters`` (the flags) and ``AlgorithmParameters`` (a
    Sinergym config's ``algorithm.parameters``) both take, with the same bounds: declared once here.
    The ``Option`` of each is its flag; its ``algorithms``, the ones that take it."""

    learning_rate: Annotated[float | None, Option("-lr", algorithms=ALL)] = Field(
        None, gt=0, le=10, description="Learning rate."
    )
    gamma: Annotated[float | None, Option("-g", algorithms=ALL)] = Field(
        None, ge=0, le=1, description="Discount factor."
    )
    n_steps: Annotated[int | None, Option("-n", algorithms=ON_POLICY)] = Field(
        None, ge=1, le=1_000_000, description="Steps per rollout and environment."
    )
    gae_lambda: Annotated[float | None, Option("-gl", algorithms=ON_POLICY)] = Field(
        None, ge=0, le=1, description="GAE lambda."
    )
    vf_coef: Annotated[float | None, Option("-v", algorithms=ON_POLICY)] = Field(
        None, ge=0, le=10, description="Value function coefficient."
    )
    max_grad_norm: Annotated[float | None, Option("-m", algorithms=ON_POLICY | {"DQN"})] = Field(
        None, gt=0, le=1000, description="Gradient clipping norm."
    )
    rms_prop_eps: Annotated[float | None, Option("-rms", algorithms=frozenset({"A2C"}))] = Field(
        None, gt=0, le=1, description="RMSprop epsilon."
    )
    buffer_size: Annotated[int | None, Option("-bfs", algorithms=OFF_POLICY)] = Field(
        None, ge=1, le=100_000_000, description="Replay buffer size."
    )
    learning_starts: Annotated[int | None, Option("-ls", algorithms=OFF_POLICY)] = Field(
        None, ge=0, le=100_000_000, description="Steps before learning starts."
    )
    tau: Annotated[float | None, Option("-tu", algorithms=OFF_POLICY)] = Field(
        None, ge=0, le=1, description="Soft update coefficient."
    )
    batch_size: Annotated[int | None, Option(algorithms=OFF_POLICY | {"PPO"})] = Field(
        None, ge=1, le=1_000_000, description="Minibatch size."
    )
    n_epochs: Annotated[int | None, Option(algorithms=frozenset({"PPO"}))] = Field(
        None, ge=1, le=10_000, description="Optimisation epochs per rollout."
    )
    clip_range: Annotated[float | None, Option(algorithms=frozenset({"PPO"}))] = Field(
        None, gt=0, le=10, description="PPO clipping range."
    )
    gradient_steps: Annotated[int | None, Option(algorithms=OFF_POLICY)] = Field(
        None, ge=-1, le=1_000_000, description="Gradient steps per update."
    )
    target_update_interval: Annotated[int | None, Option(algorithms=frozenset({"DQN", "SAC"}))] = Field(
        None, ge=1, le=100_000_000, description="Target network update interval."
    )
    exploration_fraction: Annotated[float | None, Option(algorithms=frozenset({"DQN"}))] = Field(
        None, ge=0, le=1, description="Exploration schedule."
    )
    exploration_initial_eps: Annotated[float | None, Option(algorithms=frozenset({"DQN"}))] = Field(
        None, ge=0, le=1, description="Initial epsilon."
    )
    exploration_final_eps: Annotated[float | None, Option(algorithms=frozenset({"DQN"}))] = Field(
        None, ge=0, le=1, description="Final epsilon."
    )
    policy_delay: Annotated[int | None, Option(algorithms=frozenset({"TD3"}))] = Field(
        None, ge=1, le=1000, description="TD3 policy delay."
    )
    target_policy_noise: Annotated[float | None, Option(algorithms=frozenset({"TD3"}))] = Field(
        None, ge=0, le=100, description="TD3 target noise."
    )
    target_noise_clip: Annotated[float | None, Option(algorithms=frozenset({"TD3"}))] = Field(
        None, ge=0, le=100, description="TD3 target noise clip."
    )


class Hyperparameters(SharedParameters):
    """Algorithm hyperparameters, one flag each. Unset ones come from the trainer's YAML defaults."""

    ent_coef: Annotated[float | None, Option("-ec", algorithms=ON_POLICY | {"SAC"})] = Field(
        None, ge=0, le=10, description="Entropy coefficient."
    )
    sigma: Annotated[float | None, Option("-sig", algorithms=ACTOR_CRITIC_OFF)] = Field(
        None, ge=0, le=100, description="Gaussian action noise std (DDPG/TD3/SAC)."
    )
    train_freq: Annotated[int | None, Option(algorithms=OFF_POLICY)] = Field(
        None, ge=1, le=1_000_000, description="Update every N steps."
    )

    def given(self) -> dict[str, float | int]:
        """The hyperparameters that were set explicitly."""
        return {k: v for k, v in self.model_dump().items() if v is not None}


def hyperparameter_algorithms(name: str) -> frozenset[str]:
    """The algorithms that take hyperparameter ``name`` (its field's ``Option``)."""
    option = option_of(Hyperparameters.model_fields[name])
    return option.algorithms or frozenset() if option else frozenset()


PATH_FIELDS = ("tensorboard",)  # the Experiment fields that name a place to write
_GS_URI = re.compile(r"^gs://(?P<bucket>[a-z0-9][a-z0-9_.-]{1,61}[a-z0-9])/(?P<path>.*)$")
PATH_RULE = "a relative path inside the run directory, or gs://<results bucket>/<batch id>/<experiment name>/..."


def path_problem(value: str | None) -> str:
    """Why a path field's value is not acceptable in itself ("" if it is)."""
    if value is None:
        return ""
    if ".." in value.removeprefix("gs://").split("/"):
        return f"must not contain '..' (it must be {PATH_RULE})"
    if value.startswith("gs://"):
        m = _GS_URI.match(value)
        if m is None or len([p for p in m["path"].split("/") if p]) < 2:
            return f"{value[:80]!r} is not {PATH_RULE}"
        return ""
    if not value or value.startswith("/"):
        return f"{value[:80]!r} is not {PATH_RULE}"
    return ""


def path_outside(value: str | None, bucket: str | None, batch_id: str, experiment_name: str | None) -> str:
    """Why a gs:// path field points outside the experiment's own prefix ("" if it does not).

    IAM lets every trainer write under every batch prefix of the results bucket, so the control
    plane keeps each experiment's writes to ``gs://<results bucket>/<batch>/<experiment>/``."""
    if not value or not value.startswith("gs://"):
        return ""
    m = _GS_URI.match(value)
    if m is None:
        return f"{value[:80]!r} is not {PATH_RULE}"
    parts = [p for p in m["path"].split("/") if p]
    if bucket is not None and m["bucket"] != bucket:
        return f"must be in the results bucket {bucket}, not {m['bucket'][:63]}"
    if not parts or parts[0] != batch_id:
        return f"must be under the batch's own prefix gs://{m['bucket']}/{batch_id}/"
    if experiment_name is not None and (len(parts) < 2 or parts[1] != experiment_name):
        return f"must be under the experiment's own prefix gs://{m['bucket']}/{batch_id}/{experiment_name}/"
    return ""


# ----------------------------------------------------------------- schema version 2: Sinergym configs
# What Sinergym's own training YAML says beyond the original flags, as data (sinergym_cloud/
# sinergym_config.py maps the YAML onto these). Classes are names from catalog's allowlists, never
# import paths taken from a message; values are plain JSON scalars, lists and mappings.
ConfigString = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:@ /+()\[\]-]*$", max_length=200)]
Identifier = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=100)]
VariableName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_. ()-]{1,100}$")]
type ConfigValue = (
    bool
    | int
    | float
    | ConfigString
    | Annotated[list[ConfigValue], Field(max_length=1000)]
    | Annotated[dict[VariableName, ConfigValue], Field(max_length=200)]
    | None
)
V2_EXPERIMENT_FIELDS = ("label", "algorithm_parameters", "wrappers", "env_params", "initial_model")


class PolicyKwargs(Strict):
    """SB3's ``policy_kwargs`` as far as a config may set them (no classes except an activation name)."""

    net_arch: list[Annotated[int, Field(ge=1, le=65536)]] | dict[Literal["pi", "vf", "qf"], list[int]] | None = None
    activation_fn: str | None = Field(None, description="torch.nn:ReLU, torch.nn.Tanh, ReLU, ...")
    ortho_init: bool | None = None
    log_std_init: float | None = Field(None, ge=-20, le=20)
    squash_output: bool | None = None
    share_features_extractor: bool | None = None
    n_critics: int | None = Field(None, ge=1, le=100)
    n_quantiles: int | None = Field(None, ge=1, le=10_000)
    lstm_hidden_size: int | None = Field(None, ge=1, le=65536)
    n_lstm_layers: int | None = Field(None, ge=1, le=100)

    @field_validator("activation_fn")
    @classmethod
    def _known_activation(cls, value: str | None) -> str | None:
        if value is None:
            return None
        module, name = catalog.split_class(value)
        if module not in ("", "torch.nn", "th.nn", "nn") or name not in catalog.ACTIVATIONS:
            raise ValueError(
                f"activation_fn {value!r} is not one of torch.nn's {', '.join(sorted(catalog.ACTIVATIONS))}"
            )
        return name

    def given(self) -> dict[str, Any]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class AlgorithmParameters(SharedParameters):
    """The keyword arguments of an SB3 / sb3-contrib algorithm, as Sinergym's ``algorithm.parameters``.

    When an experiment has these, they replace the trainer's YAML defaults (``trainer/hyperparams``):
    what the config does not set is the library's default, as with Sinergym's own script. The
    arguments it shares with ``Hyperparameters`` are declared once, in ``SharedParameters``.
    """

    policy: Literal["MlpPolicy", "MultiInputPolicy", "MlpLstmPolicy", "MultiInputLstmPolicy", "LinearPolicy"] | None = (
        None
    )
    clip_range_vf: float | None = Field(None, gt=0, le=1000)
    normalize_advantage: bool | None = None
    ent_coef: float | Annotated[str, Field(pattern=r"^auto(_[0-9.]+)?$")] | None = None
    use_sde: bool | None = None
    sde_sample_freq: int | None = Field(None, ge=-1, le=1_000_000)
    target_kl: float | None = Field(None, gt=0, le=100)
    stats_window_size: int | None = Field(None, ge=1, le=1_000_000)
    verbose: int | None = Field(None, ge=0, le=2)
    device: Literal["auto", "cpu", "cuda"] | None = None
    train_freq: int | tuple[int, Literal["step", "episode"]] | None = None
    optimize_memory_usage: bool | None = None
    target_entropy: float | Literal["auto"] | None = None
    use_sde_at_warmup: bool | None = None
    use_rms_prop: bool | None = None
    top_quantiles_to_drop_per_net: int | None = Field(None, ge=0, le=1000)
    n_critic_updates: int | None = Field(None, ge=1, le=1000)
    cg_max_steps: int | None = Field(None, ge=1, le=1000)
    cg_damping: float | None = Field(None, ge=0, le=10)
    line_search_shrinking_factor: float | None = Field(None, gt=0, lt=1)
    line_search_max_iter: int | None = Field(None, ge=1, le=1000)
    sub_sampling_factor: int | None = Field(None, ge=1, le=1000)
    n_delta: int | None = Field(None, ge=1, le=10_000)
    n_top: int | None = Field(None, ge=1, le=10_000)
    delta_std: float | None = Field(None, gt=0, le=100)
    zero_policy: bool | None = None
    alive_bonus_offset: float | None = Field(None, ge=-1e6, le=1e6)
    policy_kwargs: PolicyKwargs | None = None

    def given(self) -> dict[str, Any]:
        """The parameters set explicitly (policy_kwargs as a plain mapping)."""
        values = {k: v for k, v in self.model_dump().items() if v is not None and k != "policy_kwargs"}
        if self.policy_kwargs is not None and self.policy_kwargs.given():
            values["policy_kwargs"] = self.policy_kwargs.given()
        return values


class Wrapper(Strict):
    """One of Sinergym's wrappers, by class name (catalog.WRAPPER_CLASSES), with its arguments."""

    name: str = Field(max_length=100, description="Class name in sinergym.utils.wrappers.")
    kwargs: dict[Identifier, ConfigValue] = Field(default_factory=dict, max_length=50)

    @field_validator("name")
    @classmethod
    def _allowed(cls, value: str) -> str:
        resolved = catalog.resolve_wrapper_class(value)
        if resolved is None:
            raise ValueError(f"wrapper {value!r} is not one of Sinergym's wrappers")
        return resolved

    @model_validator(mode="after")
    def _class_arguments(self) -> Wrapper:
        storage = self.kwargs.get("storage_class")
        if storage is not None and storage not in catalog.ARGUMENT_CLASSES:
            allowed = ", ".join(sorted(catalog.ARGUMENT_CLASSES))
            raise ValueError(f"{self.name}.storage_class {storage!r} is not allowed (allowed: {allowed})")
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
        description="TensorBoard log directory: a path relative to the run directory, or "
        "gs://<results bucket>/<batch id>/<experiment name>/... (omit to disable).",
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
            raise ValueError(f"unknown Sinergym environment {value!r}")
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


class Batch(Strict):
    """A batch of experiments: one managed instance group, one VM per experiment.

    This is the public contract of the ``experiment-batches`` topic: any service may publish it.
    """

    schema_version: Literal[1, 2, 3] = Field(
        3,
        description="1 and 2 are still read; 2 adds Sinergym-config fields and max_parallel, 3 zones, "
        "max_vm_hours and the sweep.",
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

    @model_validator(mode="after")
    def _paths_in_own_prefix(self) -> Batch:
        for i, exp in enumerate(self.experiments):
            name = experiment_name(exp, self.submitted_at, i) if self.submitted_at else None
            for field_name in PATH_FIELDS:
                problem = path_outside(getattr(exp, field_name), self.results_bucket, self.batch_id, name)
                if problem:
                    raise ValueError(f"experiments.{i}.{field_name}: {problem}")
        return self

    def check_paths(self, results_bucket: str) -> None:
        """Raise BadMessage if a path field leaves its experiment's prefix in ``results_bucket``
        (the deployment's default bucket when the batch names none). Needs ``submitted_at``."""
        assert self.submitted_at is not None
        for i, exp in enumerate(self.experiments):
            name = experiment_name(exp, self.submitted_at, i)
            for field_name in PATH_FIELDS:
                problem = path_outside(getattr(exp, field_name), results_bucket, self.batch_id, name)
                if problem:
                    raise BadMessage(f"invalid Batch: experiments.{i}.{field_name}: {problem}")

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
                    raise ValueError(f"sweep.parameters.{path} = {excerpt(value)}: {_summarise(exc)}") from None
                except ValueError as exc:
                    raise ValueError(f"sweep.parameters.{path}: {exc}") from None
        return self

    @model_validator(mode="after")
    def _version_fields(self) -> Batch:
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


def _summarise(error: ValidationError) -> str:
    parts = []
    for item in error.errors()[:5]:
        message = item["msg"].removeprefix("Value error, ")[:300]
        where = ".".join(str(p)[:40] for p in item["loc"])[:120]
        parts.append(f"{where}: {message}" if where else message)
    more = error.error_count() - 5
    if more > 0:
        parts.append(f"... and {more} more")
    return "; ".join(parts)


def check_size(data: bytes | str) -> None:
    """Refuse a message over MAX_MESSAGE_BYTES before anything decodes it."""
    size = len(data)
    if size > MAX_MESSAGE_BYTES:
        raise BadMessage(f"message is {size} bytes; the limit is {MAX_MESSAGE_BYTES}")


def excerpt(value: Any, limit: int = 40) -> str:
    """A short, printable quote of a value for an error message (never the whole of it)."""
    if not isinstance(value, (str, int, float, bool)) or value is None:
        return f"a {type(value).__name__}"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def parse[M: BaseModel](model: type[M], data: bytes | str | dict[str, Any]) -> M:
    """Decode and validate a message, raising BadMessage with a reason a human can act on.

    Every decoding failure is a BadMessage (dead-lettered, never retried): invalid UTF-8, invalid
    JSON, JSON nested too deep for the parser (RecursionError), a message over the size limit."""
    if isinstance(data, bytes):
        check_size(data)
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadMessage(f"message is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    if isinstance(data, str):
        check_size(data)
        try:
            data = json.loads(data)
        except json.JSONDecodeError as exc:
            raise BadMessage(f"message is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
        except RecursionError:
            raise BadMessage("message is JSON nested too deeply to decode") from None
    if not isinstance(data, dict):
        raise BadMessage(f"message must be a JSON object, not {type(data).__name__}")
    accepted = schema_versions(model)
    version = data.get("schema_version", min(accepted, default=SCHEMA_VERSION))
    if accepted and (version not in accepted or isinstance(version, bool)):
        readable = " or ".join(str(v) for v in accepted)
        raise BadMessage(
            f"unsupported schema_version {excerpt(version)}; this deployment reads {model.__name__} version {readable}"
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise BadMessage(f"invalid {model.__name__}: {_summarise(exc)}") from None
    except RecursionError:
        raise BadMessage(f"invalid {model.__name__}: nested too deeply") from None


def schema_versions(model: type[BaseModel]) -> tuple[int, ...]:
    """The schema versions of a message this deployment reads (its ``schema_version`` literal)."""
    field = model.model_fields.get("schema_version")
    return tuple(sorted(v for v in get_args(field.annotation) if isinstance(v, int))) if field else ()


def dump(message: BaseModel) -> bytes:
    """The wire form of a message: compact JSON, unset optional fields left out."""
    return message.model_dump_json(exclude_none=True).encode()


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
    # The queue (issue 16): what gave the experiment its VM slot, and how long it waited queued for
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
