"""How long the trainer's own work holds the training loop: its pauses.

The training thread runs SB3's loop; what the trainer adds on that thread (the per-step episode
bookkeeping, and at an episode's end the checkpoint's copy, queueing metrics and uploads) is a
pause of the learner. Evaluation episodes are not counted: they are simulation the experiment asked
for, not overhead, and are reported on their own (``evaluation_seconds``). Work on the background
worker is not a pause; it is counted there (trainer/background.py) and shows in steps/s.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


class PauseClock:
    """Sums the training thread's time in the trainer's own work and keeps the longest pause."""

    def __init__(self) -> None:
        self.step_seconds = 0.0  # per-step bookkeeping, summed
        self.episode_seconds = 0.0  # episode-end work, summed
        self.evaluation_seconds = 0.0
        self.longest = 0.0
        self.longest_what = ""
        self.episodes = 0

    def step(self, seconds: float) -> None:
        self.step_seconds += seconds
        if seconds > self.longest:
            self.longest, self.longest_what = seconds, "step bookkeeping"

    @contextmanager
    def episode_end(self) -> Iterator[None]:
        """Time an episode's end, less the evaluation inside it (``evaluation``)."""
        started = time.perf_counter()
        evaluated_before = self.evaluation_seconds
        try:
            yield
        finally:
            took = time.perf_counter() - started - (self.evaluation_seconds - evaluated_before)
            self.episodes += 1
            self.episode_seconds += took
            if took > self.longest:
                self.longest, self.longest_what = took, "episode end"

    @contextmanager
    def evaluation(self) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.evaluation_seconds += time.perf_counter() - started

    @property
    def total(self) -> float:
        return self.step_seconds + self.episode_seconds

    def metrics(self, learn_seconds: float) -> dict[str, float]:
        """The completion's figures: the longest pause, the total and its share of ``learn_seconds``
        (less evaluation, which is part of learn's wall time but not training)."""
        training = max(learn_seconds - self.evaluation_seconds, 1e-9)
        return {
            "trainer_pause_longest_seconds": self.longest,
            "trainer_pause_seconds": self.total,
            "trainer_pause_share_pct": 100.0 * self.total / training,
            "trainer_step_bookkeeping_seconds": self.step_seconds,
            "evaluation_seconds": self.evaluation_seconds,
        }
