"""The trainer's background worker: uploads, MLflow calls and checkpoint writes, off the training thread.

Users pay per VM-second and the simulation is the cost, so the training thread only hands work
over: the checkpoint's copy is taken there (trainer/checkpoint.py ``snapshot``), everything that
waits on a disk or a network (the checkpoint's files and signed meta.json, MLflow's metric batches,
the sweep's progress reports, the TensorBoard sync) runs here, on one thread, in the order it was
submitted: a checkpoint's files before its meta.json, an episode's progress report after its
checkpoint, as when they ran inline.

``submit`` never blocks a step. The queue is bounded without waiting: a task with a ``key``
replaces the pending (not yet started) task with the same key, because the newer one covers it (a
newer checkpoint supersedes one not yet uploaded; one pending MLflow flush or TensorBoard sync takes
everything up to it), and tasks without a key (one progress report per episode) are capped at
``max_pending``, beyond which the oldest is dropped and counted. ``every`` adds a periodic task.

``drain`` waits until everything submitted so far has run; the runner drains before it ends the
MLflow run and before the completion is published, on every path (SIGTERM included), so nothing
queued is lost. A ``critical`` task that fails (a checkpoint that could not be written) is raised on
the training thread by ``raise_failure``, which the runner calls after each episode and after the
drain: the run fails as it did when the checkpoint was written inline, one episode later at most.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


@dataclass
class _Task:
    what: str
    fn: Callable[[], object]
    key: str | None
    critical: bool


@dataclass
class _Periodic:
    what: str
    fn: Callable[[], object]
    key: str
    every: float
    due: float


@dataclass
class Stats:
    """What the worker did, for the completion's metrics and the bench."""

    submitted: int = 0
    done: int = 0
    coalesced: int = 0  # replaced by a newer task with the same key before they started
    dropped: int = 0  # keyless tasks dropped over max_pending
    failed: int = 0
    busy_seconds: float = 0.0
    # The worker thread's CPU time: what it took from the training thread's share of the
    # interpreter lock and of the cores (waits on the network or a disk are not in it).
    cpu_seconds: float = 0.0
    longest_seconds: float = 0.0
    longest_what: str = ""
    max_pending: int = 0
    failures: list[str] = field(default_factory=list)

    def metrics(self) -> dict[str, float]:
        return {
            "background_tasks": float(self.done),
            "background_coalesced": float(self.coalesced),
            "background_dropped": float(self.dropped),
            "background_failed": float(self.failed),
            "background_busy_seconds": self.busy_seconds,
            "background_cpu_seconds": self.cpu_seconds,
            "background_longest_task_seconds": self.longest_seconds,
            "background_max_pending": float(self.max_pending),
        }


class Background:
    """One worker thread running the trainer's submitted tasks in order (see the module docstring)."""

    def __init__(self, name: str = "trainer-background", max_pending: int = 1000) -> None:
        self.max_pending = max_pending
        self.stats = Stats()
        self._queue: collections.deque[_Task] = collections.deque()
        self._periodic: list[_Periodic] = []
        self._cond = threading.Condition()
        self._running: _Task | None = None
        self._stopping = False
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ training thread
    def submit(self, what: str, fn: Callable[[], object], *, key: str | None = None, critical: bool = False) -> None:
        """Queue ``fn`` (see the module docstring for ``key``); returns at once, whatever the worker does."""
        task = _Task(what, fn, key, critical)
        with self._cond:
            self.stats.submitted += 1
            if key is not None:
                for i, pending in enumerate(self._queue):
                    if pending.key == key:
                        self._queue[i] = task  # keeps its place: what was queued after it still runs after it
                        self.stats.coalesced += 1
                        self._cond.notify_all()
                        return
            elif sum(1 for t in self._queue if t.key is None) >= self.max_pending:
                oldest = next(t for t in self._queue if t.key is None)
                self._queue.remove(oldest)
                self.stats.dropped += 1
                log.warning("background queue full: %s dropped", oldest.what)
            self._queue.append(task)
            self.stats.max_pending = max(self.stats.max_pending, len(self._queue))
            self._cond.notify_all()

    def every(self, seconds: float, what: str, fn: Callable[[], object], *, key: str) -> None:
        """Submit ``fn`` every ``seconds`` (coalesced by ``key``: a slow run is never queued twice)."""
        with self._cond:
            self._periodic.append(_Periodic(what, fn, key, seconds, time.monotonic() + seconds))
            self._cond.notify_all()

    def cancel_periodic(self, key: str) -> None:
        with self._cond:
            self._periodic = [p for p in self._periodic if p.key != key]

    def raise_failure(self) -> None:
        """Raise the first failure of a critical task, on the caller's thread (the training thread)."""
        with self._cond:
            failure, self._failure = self._failure, None
        if failure is not None:
            raise failure

    def drain(self, timeout: float) -> bool:
        """Wait until every task submitted so far has run (periodic ones are not re-armed for it).
        False if ``timeout`` passed first; the worker goes on with what is left."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._queue or self._running is not None:
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    return False
                self._cond.wait(left)
        return True

    def pending(self) -> list[str]:
        with self._cond:
            return [t.what for t in ([self._running] if self._running else []) + list(self._queue)]

    def close(self, timeout: float) -> bool:
        """Stop the periodic tasks, drain, and stop the worker. False if something was left undone."""
        with self._cond:
            self._periodic.clear()
        drained = self.drain(timeout)
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if drained:
            self._thread.join(timeout=5)
        else:
            log.warning("background work left undone after %.0fs: %s", timeout, ", ".join(self.pending()) or "-")
        return drained

    # ------------------------------------------------------------------ worker thread
    def _next(self) -> _Task | None:
        with self._cond:
            while True:
                now = time.monotonic()
                for p in self._periodic:
                    if p.due <= now:
                        p.due = now + p.every
                        if not any(t.key == p.key for t in self._queue):
                            self._queue.append(_Task(p.what, p.fn, p.key, False))
                if self._queue:
                    self._running = self._queue.popleft()
                    return self._running
                if self._stopping:
                    return None
                wake = min((p.due for p in self._periodic), default=None)
                self._cond.wait(None if wake is None else max(0.0, wake - now))

    def _loop(self) -> None:
        while (task := self._next()) is not None:
            started, cpu = time.monotonic(), time.thread_time()
            try:
                task.fn()
            except BaseException as exc:  # noqa: BLE001 - a failed task is counted, logged, and raised if critical
                self._failed(task, exc)
            took, cpu = time.monotonic() - started, time.thread_time() - cpu
            log.debug("background: %s took %.3f s (%.3f s of CPU)", task.what, took, cpu)
            with self._cond:
                self.stats.done += 1
                self.stats.busy_seconds += took
                self.stats.cpu_seconds += cpu
                if took > self.stats.longest_seconds:
                    self.stats.longest_seconds, self.stats.longest_what = took, task.what
                self._running = None
                self._cond.notify_all()

    def _failed(self, task: _Task, exc: BaseException) -> None:
        log.warning("background: %s failed: %s: %s", task.what, type(exc).__name__, exc)
        with self._cond:
            self.stats.failed += 1
            self.stats.failures.append(f"{task.what}: {type(exc).__name__}: {exc}"[:500])
            if task.critical and self._failure is None:
                self._failure = exc
