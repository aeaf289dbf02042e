"""Per-episode summaries from the step infos Sinergym returns, for any number of environments.

Works with and without Sinergym's LoggerWrapper: it reads the ``info`` of every step (Sinergym's
``total_power_demand``, ``total_temperature_violation``, ``comfort_term``, ``energy_term``,
``time_elapsed(hours)``) and the rewards, and summarises each finished episode.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from stable_baselines3.common.callbacks import BaseCallback

from trainer.pauses import PauseClock


@dataclass
class _Accumulator:
    steps: int = 0
    reward: float = 0.0
    reward_squares: float = 0.0
    power: float = 0.0
    violation: float = 0.0
    violation_steps: int = 0
    comfort_term: float = 0.0
    energy_term: float = 0.0
    hours: float = 0.0

    def add(self, reward: float, info: dict[str, Any]) -> None:
        get = info.get
        self.steps += 1
        self.reward += reward
        self.reward_squares += reward * reward
        self.power += float(get("total_power_demand") or 0.0)
        violation = float(get("total_temperature_violation") or 0.0)
        self.violation += violation
        if violation > 0:
            self.violation_steps += 1
        self.comfort_term += float(get("comfort_term") or 0.0)
        self.energy_term += float(get("energy_term") or 0.0)
        self.hours = float(get("time_elapsed(hours)") or self.hours)

    def summary(self) -> dict[str, float]:
        n = max(self.steps, 1)
        mean = self.reward / n
        std = math.sqrt(max(self.reward_squares / n - mean * mean, 0.0))
        step_hours = self.hours / n if self.hours else 0.0
        return {
            "episode_reward": self.reward,
            "mean_reward": mean,
            "std_reward": std,
            "mean_reward_comfort_term": self.comfort_term / n,
            "mean_reward_energy_term": self.energy_term / n,
            "comfort_violation_time_pct": 100.0 * self.violation_steps / n,
            "mean_temperature_violation": self.violation / n,
            "mean_power_demand_w": self.power / n,
            "energy_kwh": self.power * step_hours / 1000.0,
            "length_timesteps": float(self.steps),
        }


class EpisodeCallback(BaseCallback):
    """Calls ``on_episode(summary)`` at the end of every training episode; stops when ``stop()`` says so.

    Its per-step work is what SB3 hands every callback (the step's rewards, dones and infos) added to
    a few sums, timed into ``clock`` (trainer/pauses.py) as the trainer's own pause of the loop."""

    def __init__(
        self,
        on_episode: Callable[[dict[str, float]], None],
        stop: Callable[[], bool],
        clock: PauseClock | None = None,
        on_start: Callable[[], object] | None = None,
    ) -> None:
        super().__init__(verbose=0)
        self.on_episode = on_episode
        self.stop = stop
        self.clock = clock or PauseClock()
        self.on_start = on_start  # once learn has set the model's logger up
        self.running: list[_Accumulator] = []

    def _on_training_start(self) -> None:
        if self.on_start is not None:
            self.on_start()

    def _on_step(self) -> bool:
        started = time.perf_counter()
        local = self.locals
        infos = local.get("infos") or ()
        rewards = local.get("rewards")
        dones = local.get("dones")
        running = self.running
        while len(running) < len(infos):
            running.append(_Accumulator())
        finished = []
        for i, info in enumerate(infos):
            acc = running[i]
            done = dones is not None and bool(dones[i])
            if done and acc.steps == 0 and "terminal_observation" in info:
                continue
            acc.add(float(rewards[i]) if rewards is not None else 0.0, info)
            if done:
                finished.append(acc.summary())
                running[i] = _Accumulator()
        self.clock.step(time.perf_counter() - started)
        for summary in finished:
            self.on_episode(summary)  # timed by the runner (PauseClock.episode_end)
        return not self.stop()
