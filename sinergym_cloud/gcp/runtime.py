"""What a function or a command needs to act: settings, clients, the state store, the compute API.

Built once per process (module-level and lazy in the function entry points), passed to core code.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_all
from dataclasses import dataclass, field
from typing import ParamSpec, TypeVar

from sinergym_cloud.config import Settings
from sinergym_cloud.gcp.clients import Clients
from sinergym_cloud.gcp.compute import ComputeApi
from sinergym_cloud.gcp.state import StateStore

P = ParamSpec("P")
R = TypeVar("R")

# Calls that need not wait for each other (a read beside a write, a VM's removal beside the next
# one's hand-over) go to one pool per process. The clients are already shared by the function's
# request threads, so they are shared with these too. A completion has up to four such calls in
# flight, and the local cloud's function processes serve ten requests at once.
BACKGROUND_THREADS = 32
# How long a function retries a Compute call its rate quota refused (Settings.rate_limit_wait):
# then the message is nacked, the instance is free for the next one, and Pub/Sub redelivers it after
# its backoff, when the minute's quota may be back.
FUNCTION_RATE_LIMIT_WAIT = 5.0


@dataclass
class Runtime:
    settings: Settings
    clients: Clients
    # Work started with ``later``: what the function waits for before it answers (``drain``).
    _pending: set[Future[object]] = field(default_factory=set, repr=False)
    _pending_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @functools.cached_property
    def state(self) -> StateStore:
        return StateStore(self.clients.storage, self.settings.state_bucket, self.settings.call_deadline)

    @functools.cached_property
    def compute(self) -> ComputeApi:
        return ComputeApi(
            self.clients,
            self.settings.project,
            self.settings.call_deadline,
            rate_limit_wait=self.settings.rate_limit_wait,
        )

    @functools.cached_property
    def _pool(self) -> ThreadPoolExecutor:
        return ThreadPoolExecutor(max_workers=BACKGROUND_THREADS, thread_name_prefix="sinergym-bg")

    def soon(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> Future[R]:
        """Start ``fn(*args, **kwargs)`` beside the caller's own calls; its ``result()`` waits for it
        and raises what it raised."""
        return self._pool.submit(fn, *args, **kwargs)

    def later(self, fn: Callable[P, object], *args: P.args, **kwargs: P.kwargs) -> None:
        """Start ``fn`` beside the caller's work, off its path, and forget it until ``drain``: for what
        nobody waits on (an event for other services). A function drains before it answers, since a
        Cloud Function's CPU is only sure while it serves a request."""
        future: Future[object] = self.soon(fn, *args, **kwargs)
        with self._pending_lock:
            self._pending.add(future)
        future.add_done_callback(self._done)

    def _done(self, future: Future[object]) -> None:
        with self._pending_lock:
            self._pending.discard(future)

    def drain(self, timeout: float = 30.0) -> None:
        """Wait (at most ``timeout`` seconds) for the work ``later`` started."""
        with self._pending_lock:
            pending = set(self._pending)
        if pending:
            wait_all(pending, timeout=timeout)

    @classmethod
    def from_settings(cls, settings: Settings) -> Runtime:
        return cls(settings, Clients(settings))


@functools.cache
def get() -> Runtime:
    """A function's runtime, from the environment (a Compute rate-limit refusal is waited out for
    FUNCTION_RATE_LIMIT_WAIT unless SINERGYM_RATE_LIMIT_WAIT says otherwise).
    ``SINERGYM_DEBUG_LOGGERS`` (comma-separated logger names) turns those loggers to DEBUG, e.g.
    ``sinergym_cloud.gcp.state.writes`` for the benchmark's count of state-object writes."""
    for name in filter(None, (n.strip() for n in os.environ.get("SINERGYM_DEBUG_LOGGERS", "").split(","))):
        logging.getLogger(name).setLevel(logging.DEBUG)
    settings = Settings.from_env()
    if settings.rate_limit_wait is None:
        settings = dataclasses.replace(settings, rate_limit_wait=FUNCTION_RATE_LIMIT_WAIT)
    return Runtime.from_settings(settings)
