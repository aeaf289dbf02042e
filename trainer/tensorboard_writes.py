"""SB3's TensorBoard points written by the trainer's background worker, not at every dump.

SB3's ``TensorBoardOutputFormat.write`` turns every dumped value into an event (torch's
``add_scalar``: a protobuf summary, an event, TensorBoard's pure-Python CRC; 35-45 µs a point here)
and ends every dump with ``SummaryWriter.flush()``, which waits on the training thread until the
event file's writer thread has written everything queued. A dump comes every ``log_interval``
iterations: every five steps for A2C at the trainer's default of 1, some eleven points each.

``defer`` wraps the writer of each TensorBoard output of a model's logger: on the training thread a
scalar is only appended to a deque (with its wall time, so TensorBoard shows when it was recorded)
and SB3's flush does nothing; ``write_out`` adds the points to the event file and flushes it. The
runner calls ``write_out`` on the background worker every ``WRITE_SECONDS``, before each sync of the
event files to the bucket, and before the final sync, so an upload holds every point recorded up
to it. Anything else SB3 writes (text, histograms, images) goes through at once, as before.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Any

WRITE_SECONDS = 5.0  # at most this old, a point reaches the event file on disk (TensorBoard's own flush: 120 s)


class DeferredScalars:
    """A SummaryWriter whose ``add_scalar`` only records the point and whose ``flush`` waits for
    ``write_out``; everything else is the writer's own."""

    def __init__(self, writer: Any) -> None:
        self.writer = writer
        # Appended on the training thread, taken on the worker: a deque's append and popleft are atomic.
        self.points: collections.deque[tuple[str, Any, int | None, float]] = collections.deque()
        self.lock = threading.Lock()  # one write_out at a time (the worker's, the final one)

    def __getattr__(self, name: str) -> Any:  # add_text, add_histogram, file_writer, close...
        return getattr(self.writer, name)

    def add_scalar(self, tag: str, scalar_value: Any, global_step: int | None = None, walltime: float | None = None,
                   **kwargs: Any) -> None:  # fmt: skip
        if kwargs:  # new_style or double_precision: not what SB3 asks for; written as asked
            self.writer.add_scalar(tag, scalar_value, global_step, walltime, **kwargs)
            return
        self.points.append((tag, scalar_value, global_step, time.time() if walltime is None else walltime))

    def flush(self) -> None:
        """SB3's flush after every dump: the points wait for ``write_out``."""

    def write_out(self) -> int:
        """Add the recorded points to the event file and flush it; how many points were written."""
        written = 0
        with self.lock:
            while self.points:
                tag, value, step, walltime = self.points.popleft()
                self.writer.add_scalar(tag, value, step, walltime)
                written += 1
            self.writer.flush()
        return written

    def close(self) -> None:
        self.write_out()
        self.writer.close()


def _tensorboard_outputs(model: Any) -> list[Any]:
    from stable_baselines3.common.logger import TensorBoardOutputFormat

    logger = getattr(model, "_logger", None)  # set by learn(); the ``logger`` property would raise before it
    return [f for f in getattr(logger, "output_formats", ()) if isinstance(f, TensorBoardOutputFormat)]


def defer(model: Any) -> int:
    """Defer the points of ``model``'s TensorBoard outputs (call once learn has set its logger up);
    how many outputs there are."""
    outputs = _tensorboard_outputs(model)
    for output in outputs:
        if not isinstance(output.writer, DeferredScalars):
            output.writer = DeferredScalars(output.writer)
    return len(outputs)


def write_out(model: Any) -> int:
    """Write every point ``model``'s TensorBoard outputs hold to their event files, now."""
    written = 0
    for output in _tensorboard_outputs(model):
        writer = output.writer
        if isinstance(writer, DeferredScalars):
            written += writer.write_out()
        else:
            writer.flush()
    return written
