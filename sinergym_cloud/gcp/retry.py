"""Bounded retries with exponential backoff and a deadline (invariant 6: every wait has a timeout)."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable

from sinergym_cloud import errors
from sinergym_cloud.errors import is_transient

__all__ = ["call", "is_transient"]

log = logging.getLogger(__name__)


def call[T](
    fn: Callable[[], T],
    *,
    what: str,
    deadline: float = 60.0,
    initial: float = 0.25,
    maximum: float = 8.0,
    transient: Callable[[BaseException], bool] = is_transient,
    rate_limited: float | None = None,
) -> T:
    """Call ``fn`` until it succeeds, a non-transient error occurs, or ``deadline`` seconds pass.

    The last transient error is re-raised at the deadline, so the caller (a function) fails and
    Pub/Sub redelivers the message later: the retry budget of one invocation stays bounded.
    ``rate_limited`` (seconds) shortens the deadline once a refusal is a rate quota's
    (``rateLimitExceeded``): a per-minute quota is not back within seconds, and a function that
    waits it out holds one of its capped instances (see Settings.rate_limit_wait).
    """
    start = time.monotonic()
    end = start + deadline
    delay = initial
    attempt = 0
    while True:
        attempt += 1
        try:
            return fn()
        except Exception as exc:
            if not transient(exc):
                raise
            if rate_limited is not None and errors.reasons(exc) & errors.RATE_LIMIT_REASONS:
                end = min(end, start + rate_limited)
            remaining = end - time.monotonic()
            if remaining <= 0:
                log.warning("%s: giving up after %d attempts: %s", what, attempt, exc)
                raise
            pause = min(delay * (0.5 + random.random()), remaining, maximum)
            log.info("%s: transient error (%s), retry %d in %.2fs", what, type(exc).__name__, attempt, pause)
            time.sleep(pause)
            delay = min(delay * 2, maximum)
