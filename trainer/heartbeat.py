"""The trainer's heartbeat: a small object in the results bucket, rewritten every 30 seconds.

The sweeper reads its age to tell a silent VM from a busy one, and ``publisher.py wait`` shows its
episode count. A missed beat is only logged: the next one is tried on time. It has a thread of its
own, not the background worker's queue: a beat must not wait behind a large checkpoint upload. One
object rewritten every ``SINERGYM_HEARTBEAT_SECONDS`` (30 s), never more than once a second
(storage.PACER: Cloud Storage's rate for one object name).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("trainer")


class Heartbeat:
    """Writes ``progress()`` (plus the time) to ``blob_name`` in ``bucket()`` until ``stop``."""

    def __init__(self, bucket: Callable[[], Any], blob_name: str, progress: Callable[[], dict[str, Any]]) -> None:
        self.bucket = bucket
        self.blob_name = blob_name
        self.progress = progress
        from trainer import storage

        self.pacer = storage.PACER
        self.every = max(float(os.environ.get("SINERGYM_HEARTBEAT_SECONDS", "30")), self.pacer.interval)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop beating; waits up to 15 s for a write under way."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=15)

    def _beat(self) -> None:
        while True:
            try:
                bucket = self.bucket()
                with self.pacer.write(bucket.name, self.blob_name):
                    bucket.blob(self.blob_name).upload_from_string(
                        json.dumps({"at": time.time(), **self.progress()}), content_type="application/json", timeout=10
                    )
            except Exception as exc:  # noqa: BLE001 - a missed heartbeat is retried at the next beat
                log.warning("heartbeat not written: %s", exc)
            if self._stop.wait(self.every):
                return
