"""The end of a Sinergym episode without its 2 s wait (trainer/episode_end.py): the queue's rules
with a stand-in simulation thread, then a real EnergyPlus week stepped with and without it."""

from __future__ import annotations

import json
import queue
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import run_python
from trainer.episode_end import SimulationAwareQueue, end_without_waiting


class Simulator:
    """What the queue reads of Sinergym's EnergyPlus simulator: the flag and the thread."""

    def __init__(self, thread: threading.Thread | None = None) -> None:
        self.simulation_complete = False
        self.energyplus_thread = thread
        self.obs_queue: Any = None


def test_a_get_returns_what_is_put_while_it_waits() -> None:
    q = SimulationAwareQueue(Simulator(None), 1)  # no thread yet: nothing says the simulation has ended
    threading.Timer(0.1, lambda: q.put({"t": 1})).start()
    assert q.get(timeout=5) == {"t": 1}
    assert q.ended_early == 0


def test_a_get_gives_up_once_the_simulation_thread_has_ended() -> None:
    done = threading.Event()
    thread = threading.Thread(target=done.wait)
    thread.start()
    q = SimulationAwareQueue(Simulator(thread), 1)
    threading.Timer(0.1, done.set).start()
    with pytest.raises(queue.Empty):
        q.get(timeout=600)  # would hang the test for ten minutes without the thread check
    assert q.ended_early == 1


def test_the_simulation_complete_flag_ends_a_wait_and_an_item_put_before_the_end_is_not_lost() -> None:
    sim = Simulator(None)
    q = SimulationAwareQueue(sim, 1)
    sim.simulation_complete = True
    with pytest.raises(queue.Empty):
        q.get(timeout=600)
    q.put("last")
    assert q.get(timeout=600) == "last"


def test_a_running_simulation_keeps_sinergyms_timeout_and_non_blocking_gets_are_unchanged() -> None:
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        q = SimulationAwareQueue(Simulator(thread), 1)
        with pytest.raises(queue.Empty):
            q.get(timeout=0.1)  # times out as Queue.get does: the thread is alive
        with pytest.raises(queue.Empty):
            q.get(block=False)
        assert q.ended_early == 0
    finally:
        stop.set()
        thread.join()


def test_an_environment_without_sinergyms_queues_is_left_alone() -> None:
    class Plain:
        unwrapped = object()

    assert end_without_waiting(Plain()) is False


def test_the_replacement_is_shared_by_the_environment_and_its_simulator() -> None:
    sim = Simulator(None)
    original: queue.Queue[Any] = queue.Queue(maxsize=1)
    sim.obs_queue = original

    class Base:
        energyplus_simulator = sim
        obs_queue = original

        @property
        def unwrapped(self) -> Any:
            return self

    env = Base()
    assert end_without_waiting(env) is True
    assert isinstance(env.obs_queue, SimulationAwareQueue)
    assert sim.obs_queue is env.obs_queue
    assert end_without_waiting(env) is True  # twice changes nothing
    assert sim.obs_queue is env.obs_queue


STEP_A_WEEK = r"""
import json, sys, time
import numpy as np
from sinergym_cloud.contracts import Experiment
from trainer import envs, episode_end

patched = sys.argv[1] == "patched"
if not patched:
    episode_end.end_without_waiting = lambda env: False  # make_env as it was: Sinergym's own queue
    envs.end_without_waiting = episode_end.end_without_waiting
exp = Experiment.model_validate({"environment": "Eplus-5zone-hot-continuous-v1", "runperiod": (1, 1, 1991, 7, 1, 1991),
                                 "seed": 3, "normalization": False, "logger": False})
env = envs.make_env(exp, f"week-{sys.argv[1]}")
obs, _ = env.reset(seed=3)
action = np.zeros(env.action_space.shape, dtype=np.float32)
rows, last = [], None
while True:
    started = time.monotonic()
    obs, reward, terminated, truncated, info = env.step(action)
    last = time.monotonic() - started
    rows.append([obs.round(4).tolist(), round(float(reward), 6), terminated, truncated, info["timestep"]])
    if terminated or truncated:
        break
q = env.unwrapped.obs_queue
second, _ = env.reset(seed=3)  # the next episode runs on the same queue
obs2, *_ = env.step(action)
env.close()
print(json.dumps({"rows": rows, "last_step_seconds": last, "per_episode": env.unwrapped.timestep_per_episode,
                  "ended_early": getattr(q, "ended_early", None), "second_episode_steps": bool(len(obs2))}))
"""


def step_a_week(mode: str, cwd: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(run_python(STEP_A_WEEK, mode, cwd=cwd).strip().splitlines()[-1])
    return result


@pytest.mark.slow
def test_a_real_week_ends_as_sinergym_ends_it_without_the_wait(tmp_path: Path) -> None:
    patched = step_a_week("patched", tmp_path)
    sinergym = step_a_week("sinergym", tmp_path)
    print(
        f"last step: {patched['last_step_seconds']:.3f} s here, {sinergym['last_step_seconds']:.3f} s in Sinergym's own"
    )
    # The same episode, step for step: observations, rewards, flags and Sinergym's step counter.
    assert patched["rows"] == sinergym["rows"]
    rows = patched["rows"]
    assert len(rows) == patched["per_episode"]
    assert rows[-1][3] is True and not any(r[3] for r in rows[:-1])  # truncated at the last step only
    assert rows[-1][0] == rows[-2][0]  # the last observation repeated, as Sinergym does
    assert rows[-1][4] == rows[-2][4]  # its step counter rolled back: no real transition happened
    # The last step ended because the simulation had, not on Sinergym's 2 s timeout.
    assert patched["ended_early"] == 1
    assert sinergym["ended_early"] is None
    assert patched["second_episode_steps"]
