"""Evaluation during training: every ``eval_freq`` episodes, ``eval_length`` deterministic episodes on
a separate environment (with the training environment's normalization statistics, frozen), the
best model kept.

The evaluation environment lives in its own process: EnergyPlus keeps process-wide state
(Sinergym's simulator clears the runtime's callbacks of every simulation when one stops), so two
simulations in one process deadlock.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from sinergym_cloud.contracts import Experiment

log = logging.getLogger(__name__)


class Evaluator:
    """Evaluates ``experiment``'s model on an environment named ``name`` and keeps the best in ``directory``."""

    def __init__(
        self,
        experiment: Experiment,
        name: str,
        directory: Path,
        episode_len: int,
        *,
        record: Callable[[Mapping[str, float], int], None] | None = None,
        clock: Any = None,
    ) -> None:
        """``record(metrics, episode)`` takes the evaluation's MLflow points (the runner's batched
        ``tracking.Metrics.log``); without it they are logged at once. ``clock`` (trainer.pauses.PauseClock)
        counts the evaluation episodes apart from the trainer's own pauses."""
        self.experiment = experiment
        self.record = record
        self.clock = clock
        self.name = name
        self.episode_len = episode_len
        self.env: Any = None
        self.best: float | None = None
        self.dir = directory
        self.best_path = self.dir / "best_model.zip"

    def evaluate(self, model: Any, train_env: Any, episode: int) -> float:
        from stable_baselines3.common.evaluation import evaluate_policy

        from trainer import envs, tracking, wandb_setup

        if self.env is None:
            factory = functools.partial(envs.make_monitored, self.experiment, f"{self.name}-eval")
            self.env = envs.vectorize([factory], subprocess=True)
        if self.experiment.normalization:
            rms = train_env.env_method("get_wrapper_attr", "obs_rms", indices=[0])[0]
            self.env.env_method("set_wrapper_attr", "obs_rms", rms)
        with self.clock.evaluation() if self.clock is not None else contextlib.nullcontext():
            mean, std = evaluate_policy(
                model, self.env, n_eval_episodes=self.experiment.eval_length, deterministic=True
            )
        mean, std = float(mean), float(std)  # type: ignore[arg-type]  # scalars unless return_episode_rewards
        if self.record is not None:
            self.record({"eval/mean_reward": mean, "eval/std_reward": std}, episode)
        else:
            tracking.log_eval(mean, std, episode)
        wandb_setup.log_eval(mean, std, episode)
        log.info("evaluation after episode %d: mean reward %.2f (std %.2f)", episode, mean, std)
        if self.best is None or mean > self.best:
            self.best = mean
            self.dir.mkdir(parents=True, exist_ok=True)
            model.save(self.best_path)
        return mean

    def close(self) -> None:
        if self.env is not None:
            self.env.close()
