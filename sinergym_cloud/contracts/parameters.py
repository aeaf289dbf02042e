"""An algorithm's arguments: one flag each (``Hyperparameters``), or all of them as a Sinergym
config gives them (``AlgorithmParameters``); the arguments both take are declared once
(``SharedParameters``), each with its bounds, its help and its flag (``options.Option``)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from sinergym_cloud import catalog
from sinergym_cloud.contracts.base import Strict
from sinergym_cloud.options import ACTOR_CRITIC_OFF, ALL, OFF_POLICY, ON_POLICY, Option, option_of


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


NoiseValue = Annotated[float, Field(ge=-1e6, le=1e6, allow_inf_nan=False)]
NoiseVector = NoiseValue | Annotated[list[NoiseValue], Field(min_length=1, max_length=1000)]
NOISE_ALGORITHMS = frozenset({"DDPG", "TD3", "SAC", "TQC", "CrossQ"})  # those whose constructor takes action_noise


class ActionNoise(Strict):
    """SB3's exploration noise (``stable_baselines3.common.noise``) as data; the trainer builds it on
    the VM, once the action space's size is known.

    A Sinergym config gives it as ``NormalActionNoise(mean=np.array([0]), sigma=np.array([0.1]))``
    (read by sinergym_cloud/inputs/expressions.py, never evaluated). ``mean``, ``sigma`` and
    ``initial_noise`` are a number or a list: a number or a one-value list applies to every action
    dimension (numpy broadcasts a one-value array the same way in Sinergym's own script); a longer
    list needs one value per dimension, which the trainer checks against the environment.
    """

    kind: Literal["normal", "ornstein_uhlenbeck"] = Field(
        description="normal: NormalActionNoise; ornstein_uhlenbeck: OrnsteinUhlenbeckActionNoise."
    )
    mean: NoiseVector = 0.0
    sigma: NoiseVector
    theta: float | None = Field(None, ge=0, le=1000, description="Ornstein-Uhlenbeck only (SB3's default 0.15).")
    dt: float | None = Field(None, gt=0, le=1000, description="Ornstein-Uhlenbeck only (SB3's default 0.01).")
    initial_noise: NoiseVector | None = Field(None, description="Ornstein-Uhlenbeck only.")

    @model_validator(mode="after")
    def _consistent(self) -> ActionNoise:
        sigmas = self.sigma if isinstance(self.sigma, list) else [self.sigma]
        if any(s < 0 for s in sigmas):
            raise ValueError("action_noise.sigma must not be negative")
        if self.kind == "normal":
            extra = [k for k in ("theta", "dt", "initial_noise") if getattr(self, k) is not None]
            if extra:
                raise ValueError(f"action_noise: {', '.join(extra)} belong to OrnsteinUhlenbeckActionNoise")
        sizes = {len(v) for v in (self.mean, self.sigma, self.initial_noise) if isinstance(v, list) and len(v) > 1}
        if len(sizes) > 1:
            raise ValueError(f"action_noise: mean, sigma and initial_noise have different sizes {sorted(sizes)}")
        return self


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
    action_noise: ActionNoise | None = Field(
        None, description="Exploration noise (DDPG, TD3, SAC, TQC, CrossQ); the trainer builds it on the VM."
    )

    def given(self) -> dict[str, Any]:
        """The parameters set explicitly (policy_kwargs and action_noise as plain mappings)."""
        nested = ("policy_kwargs", "action_noise")
        values = {k: v for k, v in self.model_dump().items() if v is not None and k not in nested}
        if self.policy_kwargs is not None and self.policy_kwargs.given():
            values["policy_kwargs"] = self.policy_kwargs.given()
        if self.action_noise is not None:
            values["action_noise"] = self.action_noise.model_dump(exclude_none=True)
        return values
