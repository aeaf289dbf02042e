"""SB3's TensorBoard output without a flush of the event file at every dump.

SB3's ``TensorBoardOutputFormat.write`` ends every dump with ``SummaryWriter.flush()``, which waits
on the training thread until the event file's writer thread has written and flushed everything
queued. A dump comes every ``log_interval`` iterations, every five steps for A2C at the trainer's
default of 1, and each flush is a hand-over between two threads and a write to disk.

``pace`` wraps the writer of each TensorBoard output of a model's logger so that ``flush`` runs at
most once per ``every`` seconds; the scalars themselves are queued to the event file's writer
thread as before. ``flush`` forces the flush the trainer needs: before each sync of the event
files to the bucket, and before the final sync, so an upload holds every point written up to it.
"""

from __future__ import annotations

import threading
import time
from typing import Any

FLUSH_SECONDS = 5.0  # at most this old, a point reaches the event file on disk (TensorBoard's own: 120 s)


class PacedFlush:
    """A SummaryWriter whose ``flush`` runs at most once per ``every`` seconds; ``flush_now`` always does."""

    def __init__(self, writer: Any, every: float = FLUSH_SECONDS) -> None:
        self.writer = writer
        self.every = every
        self.last = time.monotonic()
        self.lock = threading.Lock()  # the background worker's flush_now may meet the training thread's

    def __getattr__(self, name: str) -> Any:  # add_scalar, add_text, file_writer, close...
        return getattr(self.writer, name)

    def flush(self) -> None:
        if time.monotonic() - self.last >= self.every:
            self.flush_now()

    def flush_now(self) -> None:
        with self.lock:
            self.writer.flush()
            self.last = time.monotonic()


def _tensorboard_outputs(model: Any) -> list[Any]:
    from stable_baselines3.common.logger import TensorBoardOutputFormat

    logger = getattr(model, "_logger", None)  # set by learn(); the ``logger`` property would raise before it
    return [f for f in getattr(logger, "output_formats", ()) if isinstance(f, TensorBoardOutputFormat)]


def pace(model: Any, every: float = FLUSH_SECONDS) -> int:
    """Pace the flushes of ``model``'s TensorBoard outputs (call once learn has set its logger up);
    how many outputs were paced."""
    outputs = _tensorboard_outputs(model)
    for output in outputs:
        if not isinstance(output.writer, PacedFlush):
            output.writer = PacedFlush(output.writer, every)
    return len(outputs)


def flush(model: Any) -> None:
    """Write everything ``model``'s TensorBoard outputs hold to their event files, now."""
    for output in _tensorboard_outputs(model):
        writer = output.writer
        (writer.flush_now if isinstance(writer, PacedFlush) else writer.flush)()
