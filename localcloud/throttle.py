"""The counting behind the local cloud's limits (limits.py): token buckets per key, per-minute
windows synchronized on the minute, and the peaks a benchmark reads. Thread-safe; no I/O."""

from __future__ import annotations

import math
import threading
import time
from collections import Counter, defaultdict, deque


class Buckets:
    """A token bucket per key: ``burst`` tokens, refilled at ``rate`` per second. ``take`` spends
    one if there is one. Keys whose bucket is full again are forgotten, so memory follows what is
    busy, not every object ever written."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tokens: dict[str, tuple[float, float]] = {}  # key -> (tokens, when)
        self._swept = time.monotonic()

    def take(self, key: str, rate: float, burst: int, now: float | None = None) -> bool:
        """Spend a token if there is one; False (nothing spent) if there is none."""
        return self._change(key, rate, burst, now, spend=True, force=False)

    def available(self, key: str, rate: float, burst: int, now: float | None = None) -> bool:
        """Whether a token is there, spending none."""
        return self._change(key, rate, burst, now, spend=False, force=False)

    def spend(self, key: str, rate: float, burst: int, now: float | None = None) -> None:
        """Spend a token for something already done (none left: the bucket stays empty)."""
        self._change(key, rate, burst, now, spend=True, force=True)

    def _change(self, key: str, rate: float, burst: int, now: float | None, *, spend: bool, force: bool) -> bool:
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, when = self._tokens.get(key, (float(burst), now))
            tokens = min(float(burst), tokens + (now - when) * rate)
            ok = tokens >= 1.0
            if spend and (ok or force):
                tokens = max(0.0, tokens - 1.0)
            self._tokens[key] = (tokens, now)
            if now - self._swept > 10.0:
                self._sweep(now, rate, burst)
            return ok

    def _sweep(self, now: float, rate: float, burst: int) -> None:
        full = [k for k, (t, w) in self._tokens.items() if t + (now - w) * rate >= burst]
        for key in full:
            del self._tokens[key]
        self._swept = now


class MinuteWindows:
    """Requests per group in the current minute, the minute counted on the wall clock (Compute
    Engine refills a rate quota at the start of the next synchronized interval, not 60 s after the
    first request)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._minute = -1
        self._counts: Counter[str] = Counter()

    def take(self, group: str, limit: int, now: float | None = None) -> bool:
        minute = math.floor((time.time() if now is None else now) / 60.0)
        with self._lock:
            if minute != self._minute:
                self._minute, self._counts = minute, Counter()
            if self._counts[group] >= limit:
                return False
            self._counts[group] += 1
            return True


class Peaks:
    """The most events any one key had within ``window`` seconds (e.g. writes per object per
    second), and the key it was; recorded whether or not a limit is enforced."""

    def __init__(self, window: float) -> None:
        self.window = window
        self._lock = threading.Lock()
        self._recent: dict[str, deque[float]] = defaultdict(deque)
        self.peak = 0
        self.peak_key = ""

    def record(self, key: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            recent = self._recent[key]
            recent.append(now)
            while recent and now - recent[0] >= self.window:
                recent.popleft()
            if len(recent) > self.peak:
                self.peak, self.peak_key = len(recent), key
            if len(self._recent) > 100_000:  # keep only the keys seen within the window
                for k in [k for k, q in self._recent.items() if not q or now - q[-1] >= self.window]:
                    del self._recent[k]

    def reset(self) -> None:
        with self._lock:
            self._recent.clear()
            self.peak, self.peak_key = 0, ""
