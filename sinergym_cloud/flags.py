"""The original ``DRL_battery.py`` command-line flags, as one table.

Both the trainer's argparse front end and the legacy command parser of the control plane are built
from this table, so a flag cannot be accepted by one and refused by the other. Long and short
spellings are those of the original tool.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["bool", "int", "float", "str", "runperiod"]


@dataclass(frozen=True)
class Flag:
    """One command-line flag."""

    long: str
    short: str | None
    dest: str
    kind: Kind
    help: str
    # For hyperparameters: the algorithms whose constructor takes it. None = not a hyperparameter.
    algorithms: frozenset[str] | None = None


ON_POLICY = frozenset({"PPO", "A2C"})
OFF_POLICY = frozenset({"DQN", "DDPG", "SAC", "TD3"})
ALL = ON_POLICY | OFF_POLICY
ACTOR_CRITIC_OFF = frozenset({"DDPG", "SAC", "TD3"})

RUN_FLAGS: tuple[Flag, ...] = (
    Flag("--environment", "-env", "environment", "str", "Sinergym environment id, e.g. Eplus-5zone-hot-continuous-v1."),
    Flag("--episodes", "-ep", "episodes", "int", "Number of training episodes (default 1)."),
    Flag("--algorithm", "-alg", "algorithm", "str", "PPO, A2C, DQN, DDPG, SAC or TD3 (default PPO)."),
    Flag(
        "--reward",
        "-rw",
        "reward",
        "str",
        "linear (default), exponential, or a Sinergym reward class name such as HourlyLinearReward.",
    ),
    Flag(
        "--normalization", "-norm", "normalization", "bool", "Normalize observations (Sinergym NormalizeObservation)."
    ),
    Flag("--multiobs", "-mobs", "multiobs", "bool", "Stack observations (Sinergym MultiObsWrapper)."),
    Flag("--logger", "-log", "logger", "bool", "Log every step with Sinergym's LoggerWrapper and CSV monitors."),
    Flag(
        "--tensorboard",
        "-tens",
        "tensorboard",
        "str",
        "TensorBoard log directory: a local path or a gs:// URI (omit to disable).",
    ),
    Flag("--evaluation", "-eval", "evaluation", "bool", "Evaluate during training and keep the best model."),
    Flag("--eval_freq", "-evalf", "eval_freq", "int", "Evaluate every N training episodes (default 2)."),
    Flag("--eval_length", "-evall", "eval_length", "int", "Episodes per evaluation (default 2)."),
    Flag("--log_interval", "-inter", "log_interval", "int", "log_interval passed to SB3 learn() (default 1)."),
    Flag("--seed", "-sd", "seed", "int", "Random seed for the agent and the environment."),
    Flag("--remote_store", "-sto", "remote_store", "bool", "Upload every output to the results bucket."),
    Flag(
        "--mlflow_store",
        "-mlflow",
        "mlflow_store",
        "bool",
        "Also store the Sinergym output folder as MLflow artifacts.",
    ),
    Flag(
        "--group_name",
        "-group",
        "group_name",
        "str",
        "Instance group name (the original cloud_manager.py added it; kept for compatibility).",
    ),
    Flag(
        "--auto_delete",
        "-del",
        "auto_delete",
        "bool",
        "Accepted for compatibility and ignored: the cleanup function always removes the VM.",
    ),
    # Not in the original tool: what a short smoke run or a multi-core VM needs.
    Flag(
        "--runperiod",
        None,
        "runperiod",
        "runperiod",
        "Simulated period as D M Y D M Y, e.g. 1 1 1991 7 1 1991 for one week (default: the building's own).",
    ),
    Flag("--n-envs", None, "n_envs", "int", "Parallel simulations for PPO/A2C (default 1)."),
    Flag(
        "--checkpoint-every",
        None,
        "checkpoint_every",
        "int",
        "Save a resumable checkpoint every N episodes (default 1; 0 disables).",
    ),
)

HYPERPARAMETER_FLAGS: tuple[Flag, ...] = (
    Flag("--learning_rate", "-lr", "learning_rate", "float", "Learning rate.", ALL),
    Flag("--gamma", "-g", "gamma", "float", "Discount factor.", ALL),
    Flag("--n_steps", "-n", "n_steps", "int", "Steps per rollout and environment.", ON_POLICY),
    Flag("--gae_lambda", "-gl", "gae_lambda", "float", "GAE lambda.", ON_POLICY),
    Flag("--ent_coef", "-ec", "ent_coef", "float", "Entropy coefficient.", ON_POLICY | frozenset({"SAC"})),
    Flag("--vf_coef", "-v", "vf_coef", "float", "Value function coefficient.", ON_POLICY),
    Flag("--max_grad_norm", "-m", "max_grad_norm", "float", "Gradient clipping norm.", ON_POLICY | frozenset({"DQN"})),
    Flag("--rms_prop_eps", "-rms", "rms_prop_eps", "float", "RMSprop epsilon.", frozenset({"A2C"})),
    Flag("--buffer_size", "-bfs", "buffer_size", "int", "Replay buffer size.", OFF_POLICY),
    Flag("--learning_starts", "-ls", "learning_starts", "int", "Steps before learning starts.", OFF_POLICY),
    Flag("--tau", "-tu", "tau", "float", "Soft update coefficient.", OFF_POLICY),
    Flag("--sigma", "-sig", "sigma", "float", "Gaussian action noise std (DDPG/TD3/SAC).", ACTOR_CRITIC_OFF),
    Flag("--batch_size", None, "batch_size", "int", "Minibatch size.", frozenset({"PPO"}) | OFF_POLICY),
    Flag("--n_epochs", None, "n_epochs", "int", "Optimisation epochs per rollout.", frozenset({"PPO"})),
    Flag("--clip_range", None, "clip_range", "float", "PPO clipping range.", frozenset({"PPO"})),
    Flag("--train_freq", None, "train_freq", "int", "Update every N steps.", OFF_POLICY),
    Flag("--gradient_steps", None, "gradient_steps", "int", "Gradient steps per update.", OFF_POLICY),
    Flag(
        "--target_update_interval",
        None,
        "target_update_interval",
        "int",
        "Target network update interval.",
        frozenset({"DQN", "SAC"}),
    ),
    Flag("--exploration_fraction", None, "exploration_fraction", "float", "Exploration schedule.", frozenset({"DQN"})),
    Flag("--exploration_initial_eps", None, "exploration_initial_eps", "float", "Initial epsilon.", frozenset({"DQN"})),
    Flag("--exploration_final_eps", None, "exploration_final_eps", "float", "Final epsilon.", frozenset({"DQN"})),
    Flag("--policy_delay", None, "policy_delay", "int", "TD3 policy delay.", frozenset({"TD3"})),
    Flag("--target_policy_noise", None, "target_policy_noise", "float", "TD3 target noise.", frozenset({"TD3"})),
    Flag("--target_noise_clip", None, "target_noise_clip", "float", "TD3 target noise clip.", frozenset({"TD3"})),
)

ALL_FLAGS: tuple[Flag, ...] = RUN_FLAGS + HYPERPARAMETER_FLAGS

HYPERPARAMETERS: dict[str, Flag] = {f.dest: f for f in HYPERPARAMETER_FLAGS}


def by_spelling() -> dict[str, Flag]:
    """Every accepted spelling (long and short) to its flag."""
    table: dict[str, Flag] = {}
    for flag in ALL_FLAGS:
        table[flag.long] = flag
        if flag.short:
            table[flag.short] = flag
    return table
