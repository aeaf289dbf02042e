"""The exploration noise of an experiment (``algorithm_parameters.action_noise``), built on the VM.

The contract carries the noise as data (contracts.ActionNoise); only here, where the environment
exists, is its size known: a number or a one-value list is every action dimension's, a longer list
must have one value per dimension. The objects are Stable-Baselines3's own
(``stable_baselines3.common.noise``).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _sized(value: float | list[float], n_actions: int, what: str, environment: str) -> np.ndarray:
    values = [value] if not isinstance(value, list) else value
    if len(values) == 1:
        return np.full(n_actions, float(values[0]))
    if len(values) != n_actions:
        raise ValueError(
            f"algorithm_parameters.action_noise.{what} has {len(values)} values; "
            f"the action space of {environment} has {n_actions} dimensions"
        )
    return np.asarray(values, dtype=float)


def build(spec: dict[str, Any], n_actions: int, environment: str) -> Any:
    """SB3's NormalActionNoise or OrnsteinUhlenbeckActionNoise for an action space of ``n_actions``."""
    from stable_baselines3.common.noise import NormalActionNoise, OrnsteinUhlenbeckActionNoise

    mean = _sized(spec.get("mean", 0.0), n_actions, "mean", environment)
    sigma = _sized(spec["sigma"], n_actions, "sigma", environment)
    if spec["kind"] == "normal":
        return NormalActionNoise(mean=mean, sigma=sigma)
    extra: dict[str, Any] = {k: float(spec[k]) for k in ("theta", "dt") if spec.get(k) is not None}
    if spec.get("initial_noise") is not None:
        extra["initial_noise"] = _sized(spec["initial_noise"], n_actions, "initial_noise", environment)
    return OrnsteinUhlenbeckActionNoise(mean=mean, sigma=sigma, **extra)
