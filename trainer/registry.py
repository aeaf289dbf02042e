"""Algorithms and their hyperparameters, rl-baselines3-zoo style.

``ALGOS`` maps a name to its Stable-Baselines3 class; ``hyperparameters`` reads
``hyperparams/<ALGO>.yml`` (keyed by environment id, with a ``default``) and lays the experiment's
explicit values over it.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import yaml

from sinergym_cloud import catalog
from sinergym_cloud.contracts import Experiment


def algos() -> dict[str, type[Any]]:
    """Imported lazily: torch is heavy, and ``--help`` should not wait for it.

    The names are the contract's (catalog.ALGORITHM_MODULES); sb3-contrib's only when installed.
    """
    from stable_baselines3 import A2C, DDPG, DQN, PPO, SAC, TD3

    table: dict[str, type[Any]] = {"PPO": PPO, "A2C": A2C, "DQN": DQN, "DDPG": DDPG, "SAC": SAC, "TD3": TD3}
    try:
        import sb3_contrib
    except ImportError:
        return table
    table.update({name: getattr(sb3_contrib, name) for name in catalog.CONTRIB_ALGORITHMS})
    if "ARS" in table:
        table["ARS"] = _ars(table["ARS"])
    return table


class _Stopped(Exception):
    """A callback asked ARS to stop in the middle of a candidate's evaluation."""


def _ars(base: type[Any]) -> type[Any]:
    """sb3-contrib's ARS with what its evaluation of candidates leaves out and SB3's own loops do:
    before each step's ``on_step`` the callback gets the step's locals (the rewards, dones and
    infos the trainer's episode summaries, checkpoints and sweep reports are counted from: without
    them an ARS run had no episode at all), and a callback that returns False stops ``learn`` at
    that step (a SIGTERM's stop, which ARS ignored until its last update). A stopped ``learn`` ends
    as SB3's own loops do, with the callback's ``on_training_end``; the policy is the last update's
    (candidates are evaluated on a copy), so the stop's checkpoint holds a whole model."""

    class ARS(base):  # type: ignore[misc]
        def _trigger_callback(self, _locals: dict[str, Any], _globals: dict[str, Any], callback: Any,
                              n_envs: int) -> None:  # fmt: skip
            callback.update_locals(_locals)
            self.num_timesteps += n_envs
            if not callback.on_step():
                raise _Stopped(callback)

        def learn(self, *args: Any, **kwargs: Any) -> Any:
            try:
                return super().learn(*args, **kwargs)
            except _Stopped as stopped:
                stopped.args[0].on_training_end()
                return self

    ARS.__qualname__ = ARS.__name__ = base.__name__
    ARS.__module__ = __name__
    return ARS


def load_table(algorithm: str) -> dict[str, dict[str, Any]]:
    text = resources.files("trainer").joinpath("hyperparams", f"{algorithm}.yml").read_text()
    table = yaml.safe_load(text) or {}
    if "default" not in table:
        raise ValueError(f"hyperparams/{algorithm}.yml has no `default` entry")
    return table


def hyperparameters(experiment: Experiment) -> dict[str, Any]:
    """The effective hyperparameters: YAML default, then the environment's entry, then the experiment.

    An experiment from a Sinergym config carries all its algorithm's arguments: those, and the
    library's defaults for the rest, as Sinergym's own script does (no YAML defaults).
    """
    if experiment.algorithm_parameters is not None:
        values = experiment.algorithm_parameters.given()
        values.update(experiment.hyperparameters.given())
        kwargs = values.get("policy_kwargs")
        if kwargs and "activation_fn" in kwargs:
            import torch

            values["policy_kwargs"] = {**kwargs, "activation_fn": getattr(torch.nn, kwargs["activation_fn"])}
        return values
    table = load_table(experiment.algorithm)
    values = dict(table["default"])
    values.update(table.get(experiment.environment, {}) or {})
    values.update(experiment.hyperparameters.given())
    return values
