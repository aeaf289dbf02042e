"""LocalFirstVecEnv: environment 0 in the learner's process, the others in workers, and to SB3 the
same vectorized environment as DummyVecEnv (no EnergyPlus here: test_trainer runs two simulations)."""

from __future__ import annotations

import functools
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3.common.vec_env import DummyVecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnv

from trainer import envs
from trainer.vec_env import LocalFirstVecEnv

CARTPOLE = functools.partial(gym.make, "CartPole-v1")


def dict_cartpole() -> gym.Env:
    """CartPole whose observation is a Dict of two parts."""
    space = gym.spaces.Dict(
        {
            "cart": gym.spaces.Box(-np.inf, np.inf, (2,), np.float32),
            "pole": gym.spaces.Box(-np.inf, np.inf, (2,), np.float32),
        }
    )
    return gym.wrappers.TransformObservation(gym.make("CartPole-v1"), lambda o: {"cart": o[:2], "pole": o[2:]}, space)


@pytest.fixture
def three() -> Any:
    vec = LocalFirstVecEnv([CARTPOLE] * 3)
    yield vec
    vec.close()


def run(vec: VecEnv, steps: int) -> list[tuple[Any, ...]]:
    """The seeded episode trace of ``vec`` under a fixed action sequence."""
    vec.seed(7)
    trace: list[tuple[Any, ...]] = [(vec.reset().copy(), list(vec.reset_infos))]
    actions = np.random.default_rng(3).integers(0, 2, size=(steps, vec.num_envs))
    for step in range(steps):
        obs, rewards, dones, infos = vec.step(actions[step])
        ends = [info.get("terminal_observation") for info in infos]
        trace.append((obs.copy(), rewards.copy(), dones.copy(), [None if e is None else e.tolist() for e in ends]))
    return trace


def test_it_steps_as_dummy_vec_env_does(three: LocalFirstVecEnv) -> None:
    # Same seeds, same actions: the same observations, rewards, episode ends (CartPole's episodes
    # end at different steps in each environment, so automatic resets are covered) and terminal
    # observations, in environment order.
    dummy = DummyVecEnv([CARTPOLE] * 3)
    try:
        expected, got = run(dummy, 300), run(three, 300)
    finally:
        dummy.close()
    assert sum(int(step[2].sum()) for step in got[1:]) >= 6, "episodes ended along the way"
    for want, have in zip(expected, got, strict=True):
        for a, b in zip(want, have, strict=True):
            if isinstance(a, np.ndarray):
                np.testing.assert_array_equal(a, b)
            else:
                assert a == b


def test_environment_zero_is_in_this_process_and_indices_route(three: LocalFirstVecEnv) -> None:
    assert three.get_attr("unwrapped", indices=[0])[0] is three.local.envs[0].unwrapped
    assert three.get_attr("unwrapped", indices=[1])[0] is not three.local.envs[0].unwrapped  # a worker's copy
    for i in range(3):
        three.set_attr("marker", f"env{i}", indices=[i])
    assert three.get_attr("marker") == ["env0", "env1", "env2"]
    assert three.get_attr("marker", indices=[2, 0, 1]) == ["env2", "env0", "env1"]
    assert three.get_attr("marker", indices=2) == ["env2"]
    assert three.env_method("get_wrapper_attr", "marker", indices=[1, 0]) == ["env1", "env0"]
    assert three.env_is_wrapped(gym.wrappers.TimeLimit) == [True, True, True]
    assert three.env_is_wrapped(gym.wrappers.RecordVideo, indices=[0, 2]) == [False, False]
    assert three.num_envs == 3 and three.observation_space == three.local.observation_space


def test_dict_observations_are_batched_per_key() -> None:
    vec = LocalFirstVecEnv([dict_cartpole] * 2)
    try:
        vec.seed(1)
        obs = vec.reset()
        assert set(obs) == {"cart", "pole"} and obs["cart"].shape == (2, 2) and obs["pole"].shape == (2, 2)
        obs, rewards, dones, infos = vec.step(np.array([0, 1]))
        assert obs["pole"].shape == (2, 2) and rewards.shape == dones.shape == (2,) and len(infos) == 2
    finally:
        vec.close()


def test_it_closes_its_workers() -> None:
    vec = LocalFirstVecEnv([CARTPOLE] * 2)
    workers = list(vec.remote.processes)
    vec.close()
    for worker in workers:
        worker.join(timeout=30)
        assert not worker.is_alive()


def test_it_wants_two_environments_or_more() -> None:
    with pytest.raises(ValueError, match="two environments or more, got 1"):
        LocalFirstVecEnv([CARTPOLE])


def test_the_trainer_vectorizes_with_it() -> None:
    one = envs.vectorize([CARTPOLE])
    two = envs.vectorize([CARTPOLE] * 2)
    evaluation = envs.vectorize([CARTPOLE], subprocess=True)
    try:
        assert type(one).__name__ == "DummyVecEnv"
        assert isinstance(two, LocalFirstVecEnv)
        assert type(evaluation).__name__ == "SubprocVecEnv"  # evaluation's simulation has its own process
    finally:
        for vec in (one, two, evaluation):
            vec.close()
