"""Several environments with the first one in the learner's process: ``LocalFirstVecEnv``.

SB3's SubprocVecEnv steps every environment in a worker process and the learner waits for all of
them: each step costs two hand-overs per worker (the action out, the observation back) on top of
the simulation, and the learner's core idles while they step. Here environment 0 runs in the
learner's process (a DummyVecEnv) and the others in workers (a SubprocVecEnv): the actions go out
to the workers first, the learner steps its own simulation meanwhile, then collects theirs. With
two environments on two cores that is one worker instead of two, and no core waits on a pipe
while there is a simulation step to take. docs/design.md has the figures.

EnergyPlus is not re-entrant, so a process holds one simulation: the learner's process holds
environment 0's, and evaluation runs in its own worker (trainer.evaluation).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvObs, VecEnvStepReturn


def _concat(space: gym.Space[Any], first: Any, rest: Any) -> Any:
    """The observations of environment 0 and of the workers, as one batch."""
    if isinstance(space, gym.spaces.Dict):
        return {key: np.concatenate([first[key], rest[key]]) for key in first}
    if isinstance(space, gym.spaces.Tuple):
        return tuple(np.concatenate([a, b]) for a, b in zip(first, rest, strict=True))
    return np.concatenate([first, rest])


class LocalFirstVecEnv(VecEnv):
    """Environment 0 in this process, environments 1..N-1 in SubprocVecEnv workers (N >= 2)."""

    def __init__(self, factories: Sequence[Callable[[], gym.Env]], start_method: str = "forkserver") -> None:
        if len(factories) < 2:
            raise ValueError(f"LocalFirstVecEnv needs two environments or more, got {len(factories)}")
        # The workers first: their simulations start while this process builds its own.
        self.remote = SubprocVecEnv(list(factories[1:]), start_method=start_method)
        try:
            self.local = DummyVecEnv([factories[0]])
        except BaseException:
            self.remote.close()
            raise
        super().__init__(len(factories), self.local.observation_space, self.local.action_space)

    # The two parts, by environment index.

    def _per_env(self, indices: VecEnvIndices, call: Callable[[VecEnv, list[int]], list[Any]]) -> list[Any]:
        """``call(part, its_indices)`` on this process's part and the workers', answers in the order asked."""
        wanted = list(self._get_indices(indices))
        answers: dict[int, Any] = {}
        if 0 in wanted:
            answers[0] = call(self.local, [0])[0]
        remote = [i - 1 for i in wanted if i > 0]
        if remote:
            answers.update({i + 1: value for i, value in zip(remote, call(self.remote, remote), strict=True)})
        return [answers[i] for i in wanted]

    # Stepping.

    def step_async(self, actions: np.ndarray) -> None:
        self.remote.step_async(actions[1:])
        self.local.step_async(actions[:1])

    def step_wait(self) -> VecEnvStepReturn:
        obs, rewards, dones, infos = self.local.step_wait()  # this process's simulation, while the workers step
        r_obs, r_rewards, r_dones, r_infos = self.remote.step_wait()
        if dones.any() or r_dones.any():  # the automatic resets' infos
            self.reset_infos = list(self.local.reset_infos) + list(self.remote.reset_infos)
        return (
            _concat(self.observation_space, obs, r_obs),
            np.concatenate([rewards, r_rewards]),
            np.concatenate([dones, r_dones]),
            list(infos) + list(r_infos),
        )

    def reset(self) -> VecEnvObs:
        self.local._seeds, self.remote._seeds = self._seeds[:1], self._seeds[1:]
        self.local._options, self.remote._options = self._options[:1], self._options[1:]
        self._reset_seeds()
        self._reset_options()
        first = self.local.reset()
        rest = self.remote.reset()
        self.reset_infos = list(self.local.reset_infos) + list(self.remote.reset_infos)
        return _concat(self.observation_space, first, rest)

    def close(self) -> None:
        try:
            self.local.close()
        finally:
            self.remote.close()

    def get_images(self) -> Sequence[np.ndarray | None]:
        return list(self.local.get_images()) + list(self.remote.get_images())

    # Attributes and methods of the environments.

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return self._per_env(indices, lambda part, idx: part.get_attr(attr_name, idx))

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        def set_on(part: VecEnv, idx: list[int]) -> list[None]:
            part.set_attr(attr_name, value, idx)
            return [None] * len(idx)

        self._per_env(indices, set_on)

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any
    ) -> list[Any]:
        return self._per_env(
            indices, lambda part, idx: part.env_method(method_name, *method_args, indices=idx, **method_kwargs)
        )

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return self._per_env(indices, lambda part, idx: part.env_is_wrapped(wrapper_class, idx))
