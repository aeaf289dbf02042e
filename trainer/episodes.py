"""Per-episode summaries from the step infos Sinergym returns, for any number of environments.

Works with and without Sinergym's LoggerWrapper: it reads the ``info`` of every step (Sinergym's
``total_power_demand``, ``total_temperature_violation``, ``comfort_term``, ``energy_term``,
``time_elapsed(hours)``) and the rewards, and summarises each finished episode.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from stable_baselines3.common.callbacks import BaseCallback


@dataclass
class _Accumulator:
    steps: int = 0
    reward: float = 0.0
    power: float = 0.0
    violation: float = 0.0
    violation_steps: int = 0
    comfort_term: float = 0.0
    energy_term: float = 0.0
    hours: float = 0.0
    rewards: list[float] = field(default_factory=list)

    def add(self, reward: float, info: dict[str, Any]) -> None:
        self.steps += 1
        self.reward += reward
        self.rewards.append(reward)
        power = float(info.get("total_power_demand", 0.0) or 0.0)
        violation = float(info.get("total_temperature_violation", 0.0) or 0.0)
        self.power += power
        self.violation += violation
        self.violation_steps += violation > 0
        self.comfort_term += float(info.get("comfort_term", 0.0) or 0.0)
        self.energy_term += float(info.get("energy_term", 0.0) or 0.0)
        self.hours = float(info.get("time_elapsed(hours)", self.hours) or self.hours)

    def summary(self) -> dict[str, float]:
        n = max(self.steps, 1)
        mean = self.reward / n
        std = math.sqrt(sum((r - mean) ** 2 for r in self.rewards) / n)
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
    """Calls ``on_episode(summary)`` at the end of every training episode; stops when ``stop()`` says so."""

    def __init__(self, on_episode: Callable[[dict[str, float]], None], stop: Callable[[], bool]) -> None:
        super().__init__(verbose=0)
        self.on_episode = on_episode
        self.stop = stop
        self.running: dict[int, _Accumulator] = {}

    def _on_step(self) -> bool:
        rewards = self.locals.get("rewards")
        infos = self.locals.get("infos") or []
        dones = self.locals.get("dones")
        for i, info in enumerate(infos):
            acc = self.running.setdefault(i, _Accumulator())
            done = bool(dones[i]) if dones is not None else False
            if done and "terminal_observation" in info and acc.steps == 0:
                continue
            acc.add(float(rewards[i]) if rewards is not None else 0.0, info)
            if done:
                summary = acc.summary()
                self.running[i] = _Accumulator()
                self.on_episode(summary)
        return not self.stop()
