"""What Sinergym offers, known without importing it.

The control plane validates experiments before any VM exists, and it must not need Sinergym,
EnergyPlus or torch to do so. These tables were read off Sinergym 3.12.2's registry; a trainer test
compares them with the installed Sinergym so that a version bump cannot drift silently.
"""

from __future__ import annotations

SINERGYM_VERSION = "3.12.2"

ENVIRONMENTS: frozenset[str] = frozenset(
    {
        "Eplus-demo-v1",
        "Eplus-5zone-hot-continuous-v1",
        "Eplus-5zone-hot-discrete-v1",
        "Eplus-5zone-hot-continuous-stochastic-v1",
        "Eplus-5zone-hot-discrete-stochastic-v1",
        "Eplus-5zone-mixed-continuous-v1",
        "Eplus-5zone-mixed-discrete-v1",
        "Eplus-5zone-mixed-continuous-stochastic-v1",
        "Eplus-5zone-mixed-discrete-stochastic-v1",
        "Eplus-5zone-cool-continuous-v1",
        "Eplus-5zone-cool-discrete-v1",
        "Eplus-5zone-cool-continuous-stochastic-v1",
        "Eplus-5zone-cool-discrete-stochastic-v1",
        "Eplus-shop-hot-continuous-v1",
        "Eplus-shop-hot-discrete-v1",
        "Eplus-shop-hot-continuous-stochastic-v1",
        "Eplus-shop-hot-discrete-stochastic-v1",
        "Eplus-shop-mixed-continuous-v1",
        "Eplus-shop-mixed-discrete-v1",
        "Eplus-shop-mixed-continuous-stochastic-v1",
        "Eplus-shop-mixed-discrete-stochastic-v1",
        "Eplus-shop-cool-continuous-v1",
        "Eplus-shop-cool-discrete-v1",
        "Eplus-shop-cool-continuous-stochastic-v1",
        "Eplus-shop-cool-discrete-stochastic-v1",
        "Eplus-datacenter_cw-chicago-continuous-v1",
        "Eplus-datacenter_cw-chicago-discrete-v1",
        "Eplus-datacenter_cw-chicago-continuous-stochastic-v1",
        "Eplus-datacenter_cw-chicago-discrete-stochastic-v1",
        "Eplus-datacenter_cw-hot-continuous-v1",
        "Eplus-datacenter_cw-hot-discrete-v1",
        "Eplus-datacenter_cw-hot-continuous-stochastic-v1",
        "Eplus-datacenter_cw-hot-discrete-stochastic-v1",
        "Eplus-datacenter_cw-mixed-continuous-v1",
        "Eplus-datacenter_cw-mixed-discrete-v1",
        "Eplus-datacenter_cw-mixed-continuous-stochastic-v1",
        "Eplus-datacenter_cw-mixed-discrete-stochastic-v1",
        "Eplus-datacenter_cw-cool-continuous-v1",
        "Eplus-datacenter_cw-cool-discrete-v1",
        "Eplus-datacenter_cw-cool-continuous-stochastic-v1",
        "Eplus-datacenter_cw-cool-discrete-stochastic-v1",
        "Eplus-radiant-hot-discrete-v1",
        "Eplus-radiant-hot-discrete-stochastic-v1",
        "Eplus-radiant-mixed-discrete-v1",
        "Eplus-radiant-mixed-discrete-stochastic-v1",
        "Eplus-radiant-cool-discrete-v1",
        "Eplus-radiant-cool-discrete-stochastic-v1",
        "Eplus-radiant-stockholm-discrete-v1",
        "Eplus-radiant-stockholm-discrete-stochastic-v1",
        "Eplus-datacenter_dx-chicago-continuous-v1",
        "Eplus-datacenter_dx-chicago-discrete-v1",
        "Eplus-datacenter_dx-chicago-continuous-stochastic-v1",
        "Eplus-datacenter_dx-chicago-discrete-stochastic-v1",
        "Eplus-datacenter_dx-hot-continuous-v1",
        "Eplus-datacenter_dx-hot-discrete-v1",
        "Eplus-datacenter_dx-hot-continuous-stochastic-v1",
        "Eplus-datacenter_dx-hot-discrete-stochastic-v1",
        "Eplus-datacenter_dx-mixed-continuous-v1",
        "Eplus-datacenter_dx-mixed-discrete-v1",
        "Eplus-datacenter_dx-mixed-continuous-stochastic-v1",
        "Eplus-datacenter_dx-mixed-discrete-stochastic-v1",
        "Eplus-datacenter_dx-cool-continuous-v1",
        "Eplus-datacenter_dx-cool-discrete-v1",
        "Eplus-datacenter_dx-cool-continuous-stochastic-v1",
        "Eplus-datacenter_dx-cool-discrete-stochastic-v1",
        "Eplus-smalldatacenter-aurora-continuous-v1",
        "Eplus-smalldatacenter-aurora-continuous-stochastic-v1",
        "Eplus-smalldatacenter-hot-continuous-v1",
        "Eplus-smalldatacenter-hot-continuous-stochastic-v1",
        "Eplus-smalldatacenter-mixed-continuous-v1",
        "Eplus-smalldatacenter-mixed-continuous-stochastic-v1",
        "Eplus-smalldatacenter-cool-continuous-v1",
        "Eplus-smalldatacenter-cool-continuous-stochastic-v1",
        "Eplus-office-hot-continuous-v1",
        "Eplus-office-hot-discrete-v1",
        "Eplus-office-hot-continuous-stochastic-v1",
        "Eplus-office-hot-discrete-stochastic-v1",
        "Eplus-office-mixed-continuous-v1",
        "Eplus-office-mixed-discrete-v1",
        "Eplus-office-mixed-continuous-stochastic-v1",
        "Eplus-office-mixed-discrete-stochastic-v1",
        "Eplus-office-cool-continuous-v1",
        "Eplus-office-cool-discrete-v1",
        "Eplus-office-cool-continuous-stochastic-v1",
        "Eplus-office-cool-discrete-stochastic-v1",
        "Eplus-warehouse-hot-continuous-v1",
        "Eplus-warehouse-hot-discrete-v1",
        "Eplus-warehouse-hot-continuous-stochastic-v1",
        "Eplus-warehouse-hot-discrete-stochastic-v1",
        "Eplus-warehouse-mixed-continuous-v1",
        "Eplus-warehouse-mixed-discrete-v1",
        "Eplus-warehouse-mixed-continuous-stochastic-v1",
        "Eplus-warehouse-mixed-discrete-stochastic-v1",
        "Eplus-warehouse-cool-continuous-v1",
        "Eplus-warehouse-cool-discrete-v1",
        "Eplus-warehouse-cool-continuous-stochastic-v1",
        "Eplus-warehouse-cool-discrete-stochastic-v1",
        "Eplus-officegrid-hot-continuous-v1",
        "Eplus-officegrid-hot-discrete-v1",
        "Eplus-officegrid-hot-continuous-stochastic-v1",
        "Eplus-officegrid-hot-discrete-stochastic-v1",
        "Eplus-officegrid-mixed-continuous-v1",
        "Eplus-officegrid-mixed-discrete-v1",
        "Eplus-officegrid-mixed-continuous-stochastic-v1",
        "Eplus-officegrid-mixed-discrete-stochastic-v1",
        "Eplus-officegrid-cool-continuous-v1",
        "Eplus-officegrid-cool-discrete-v1",
        "Eplus-officegrid-cool-continuous-stochastic-v1",
        "Eplus-officegrid-cool-discrete-stochastic-v1",
    }
)

# Reward classes in sinergym.utils.rewards, by class name.
REWARD_CLASSES: frozenset[str] = frozenset(
    {
        "EnergyCostLinearReward",
        "ExpReward",
        "HourlyLinearReward",
        "LinearReward",
        "MultiZoneReward",
        "NormalizedLinearReward",
    }
)

ALGORITHMS: tuple[str, ...] = ("PPO", "A2C", "DQN", "DDPG", "SAC", "TD3")

# Which action spaces each algorithm can drive (Stable-Baselines3's own restrictions).
ALGORITHM_ACTION_SPACES: dict[str, frozenset[str]] = {
    "PPO": frozenset({"discrete", "continuous"}),
    "A2C": frozenset({"discrete", "continuous"}),
    "DQN": frozenset({"discrete"}),
    "DDPG": frozenset({"continuous"}),
    "SAC": frozenset({"continuous"}),
    "TD3": frozenset({"continuous"}),
    # sb3-contrib (Sinergym configs may name them as sb3_contrib:<Class>).
    "ARS": frozenset({"discrete", "continuous"}),
    "QRDQN": frozenset({"discrete"}),
    "TQC": frozenset({"continuous"}),
    "TRPO": frozenset({"discrete", "continuous"}),
    "CrossQ": frozenset({"continuous"}),
    "RecurrentPPO": frozenset({"discrete", "continuous"}),
}

# Short reward names of the original tool, mapped to Sinergym's classes.
REWARD_ALIASES: dict[str, str] = {"linear": "LinearReward", "exponential": "ExpReward"}

_BY_LOWER = {env_id.lower(): env_id for env_id in ENVIRONMENTS}


def resolve_environment(name: str) -> str | None:
    """The registered id for ``name``, or None.

    The original tool's documentation spells the 5-zone building ``Eplus-5Zone-...``; Sinergym 3
    registers ``Eplus-5zone-...``. Ids differ only in case, so a case-insensitive match is exact.
    """
    return _BY_LOWER.get(name.lower())


def action_space_kind(env_id: str) -> str:
    """``discrete`` or ``continuous``, read from the id as Sinergym names its environments."""
    return "discrete" if "-discrete" in env_id else "continuous"


def resolve_reward(name: str) -> str | None:
    """Sinergym's reward class name for ``name`` (an alias or a class name), or None."""
    if name in REWARD_ALIASES:
        return REWARD_ALIASES[name]
    return name if name in REWARD_CLASSES else None


# ------------------------------------------------------------------ Sinergym's training YAML
# The classes a Sinergym config may name as ``module:Class``. Nothing else is ever imported from a
# name in a message: the trainer looks each one up in these tables (tests compare them with the
# installed packages).
CONTRIB_ALGORITHMS: tuple[str, ...] = ("ARS", "QRDQN", "TQC", "TRPO", "CrossQ", "RecurrentPPO")

ALGORITHM_MODULES: dict[str, str] = {
    **{name: "stable_baselines3" for name in ALGORITHMS},
    **{name: "sb3_contrib" for name in CONTRIB_ALGORITHMS},
}

# Sinergym's wrappers (sinergym.utils.wrappers), by class name: those a config may name.
WRAPPER_CLASSES: frozenset[str] = frozenset(
    {
        "CSVLogger",
        "DatetimeWrapper",
        "DeltaTempWrapper",
        "DiscreteIncrementalWrapper",
        "EnergyCostWrapper",
        "IncrementalWrapper",
        "LoggerWrapper",
        "MultiObjectiveReward",
        "MultiObsWrapper",
        "NormalizeAction",
        "NormalizeObservation",
        "OfficeGridStorageSmoothingActionConstraintsWrapper",
        "PreviousObservationWrapper",
        "ProbabilisticContextWrapper",
        "ReduceObservationWrapper",
        "ScheduledContextWrapper",
        "WandBLogger",
        "WeatherForecastingWrapper",
    }
)
# The other classes of that module, and why a config cannot use them (the refusal says so).
REFUSED_WRAPPERS: dict[str, str] = {
    "BaseLoggerWrapper": "an abstract class: name LoggerWrapper",
    "DiscretizeEnv": "its action_mapping is a Python function, which a config cannot send "
    "(use a -discrete environment, or DiscreteIncrementalWrapper)",
}

# Classes a wrapper argument may name (LoggerWrapper's storage_class), by ``module:Class``.
ARGUMENT_CLASSES: frozenset[str] = frozenset({"sinergym.utils.logger:LoggerStorage"})

# Activation functions a policy_kwargs may name.
ACTIVATIONS: frozenset[str] = frozenset({"ReLU", "Tanh", "ELU", "LeakyReLU", "SiLU", "GELU", "Sigmoid"})


def split_class(reference: str) -> tuple[str, str]:
    """``module:Class`` (or ``module.Class``) as (module, Class)."""
    module, sep, name = reference.rpartition(":")
    if not sep:
        module, _, name = reference.rpartition(".")
    return module, name


def resolve_algorithm_class(reference: str) -> str | None:
    """The algorithm name for ``stable_baselines3:PPO`` / ``sb3_contrib:TQC`` / ``PPO``, or None."""
    module, name = split_class(reference)
    if name not in ALGORITHM_MODULES:
        return None
    return name if module in ("", ALGORITHM_MODULES[name]) else None


def resolve_wrapper_class(reference: str) -> str | None:
    module, name = split_class(reference)
    return name if module in ("", "sinergym.utils.wrappers") and name in WRAPPER_CLASSES else None


def wrapper_refusal(reference: str) -> str:
    """Why ``reference`` is not a wrapper a config may name."""
    module, name = split_class(reference)
    if module in ("", "sinergym.utils.wrappers") and name in REFUSED_WRAPPERS:
        return REFUSED_WRAPPERS[name]
    return f"not a wrapper of Sinergym {SINERGYM_VERSION} (sinergym.utils.wrappers), the version the trainer runs"


def environment_refusal(name: str) -> str:
    """Why ``name`` is not an environment id an experiment may name."""
    return f"unknown Sinergym environment {name!r} (not registered by Sinergym {SINERGYM_VERSION}, the trainer's)"


def resolve_reward_class(reference: str) -> str | None:
    module, name = split_class(reference)
    return name if module in ("", "sinergym.utils.rewards") and name in REWARD_CLASSES else None
