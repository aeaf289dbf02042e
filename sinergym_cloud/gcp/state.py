"""Control-plane state as JSON objects in Cloud Storage, written with generation preconditions.

Two kinds of object (see names.py for the layout):

- **claims** are created with ``if_generation_match=0``: of any number of concurrent creators,
  exactly one succeeds (the others get 412 Precondition Failed and learn who won);
- **status** objects are updated by compare-and-swap: read with its generation, write with
  ``if_generation_match=<generation>``, and on 412 read again and re-apply the change.

Each experiment has its own status object, so concurrent functions never contend on one document.
An experiment's state is also copied into the object's custom metadata, so one listing tells the
state of every experiment of a batch without reading each object.

Cloud Storage takes about one write per second to the same object name (faster ones get 429), so a
process spaces its own writes of one object by ``OBJECT_WRITE_SECONDS`` plus a little jitter
(the steps of one function's work on one record follow each other within milliseconds); writes of
the same object by different processes meet the 429, which the client library retries with backoff.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from google.api_core import exceptions
from google.cloud import storage

from sinergym_cloud.errors import Conflict
from sinergym_cloud.gcp import retry

log = logging.getLogger(__name__)
# One DEBUG line per state-object write attempt (the benchmark counts them: SINERGYM_DEBUG_LOGGERS).
writes = logging.getLogger(f"{__name__}.writes")

Doc = dict[str, Any]


@dataclass(frozen=True)
class Versioned:
    data: Doc
    generation: int
    metadata: dict[str, str]


# How long a document this process has just written is taken as current by its next
# compare-and-swap (see StateStore.update), and how many such documents are remembered.
FRESH_SECONDS = 5.0
FRESH_MAX = 256
# Cloud Storage's rate of writes to one object name (https://cloud.google.com/storage/quotas).
OBJECT_WRITE_SECONDS = 1.0


class StateStore:
    def __init__(self, client: storage.Client, bucket: str, deadline: float = 30.0) -> None:
        self.client = client
        self.bucket = client.bucket(bucket)
        self.deadline = deadline
        # path -> (when, the document as this process last wrote it, with its generation)
        self._written: dict[str, tuple[float, Versioned]] = {}
        # path -> when this process last wrote it (monotonic), to space its writes of one object
        self._last_write: dict[str, float] = {}
        self._pace_lock = threading.Lock()

    def read(self, path: str) -> Versioned | None:
        blob = self.bucket.blob(path)

        def get() -> Versioned | None:
            try:
                raw = blob.download_as_bytes(timeout=10)
            except exceptions.NotFound:
                return None
            return Versioned(json.loads(raw), int(blob.generation or 0), dict(blob.metadata or {}))

        return retry.call(get, what=f"read {path}", deadline=self.deadline)

    def create(self, path: str, data: Doc, metadata: dict[str, str] | None = None) -> bool:
        """Create ``path`` unless it exists. True if this call created it (won the claim)."""
        return self._write(path, data, 0, metadata) is not None

    def _write(self, path: str, data: Doc, generation: int, metadata: dict[str, str] | None) -> int | None:
        """Write if the object is at ``generation`` (0: absent). The new generation (0 if the
        service did not say), or None if the precondition failed."""
        blob = self.bucket.blob(path)
        if metadata:
            blob.metadata = metadata
        body = json.dumps(data, sort_keys=True, default=str)

        def put() -> int | None:
            before = self._pace(path)
            writes.debug("state write %s", path)
            try:
                blob.upload_from_string(
                    body, content_type="application/json", if_generation_match=generation, timeout=10, retry=None
                )
                self._wrote(path)
                return int(blob.generation or 0)
            except exceptions.PreconditionFailed:
                self._unpace(path, before)
                return None
            except exceptions.TooManyRequests:
                # The object was written less than a second ago. By someone else (a concurrent
                # compare-and-swap, a claim being taken): then this write's precondition fails
                # anyway, and reading tells so at once instead of after a backoff. Else: wait it out.
                self._unpace(path, before)
                if self._generation(path) != generation:
                    return None
                raise

        return retry.call(put, what=f"write {path}", deadline=self.deadline, initial=OBJECT_WRITE_SECONDS)

    def _generation(self, path: str) -> int:
        """The object's current generation (0: absent); reads are not held to the write rate."""
        blob = retry.call(lambda: self.bucket.get_blob(path, timeout=10), what=f"stat {path}", deadline=self.deadline)
        return int(blob.generation or 0) if blob is not None else 0

    def _pace(self, path: str) -> float | None:
        """Wait until this process's last write of ``path`` is ``OBJECT_WRITE_SECONDS`` (and a jitter of
        up to a tenth of it) behind, then count this write: the object's write rate stays under
        Cloud Storage's one per second whatever the caller does. Returns the write counted before,
        for ``_unpace`` when this one changed nothing (its precondition failed, or it was refused)."""
        while True:
            with self._pace_lock:
                now = time.monotonic()
                before = self._last_write.get(path)
                wait = (before if before is not None else -1e9) + OBJECT_WRITE_SECONDS - now
                if wait <= 0:
                    self._last_write[path] = now
                    if len(self._last_write) > 4 * FRESH_MAX:
                        self._last_write = {p: t for p, t in self._last_write.items() if now - t < OBJECT_WRITE_SECONDS}
                    return before
            time.sleep(wait + random.uniform(0, OBJECT_WRITE_SECONDS / 10))

    def _wrote(self, path: str) -> None:
        """The write of ``path`` was answered: the next one waits from now, not from when this one
        was sent. Cloud Storage counts arrivals, and on a loaded machine a request can reach it a
        good part of a second after it was counted here."""
        with self._pace_lock:
            self._last_write[path] = max(self._last_write.get(path, 0.0), time.monotonic())

    def _unpace(self, path: str, before: float | None) -> None:
        """A write that changed nothing does not count: a lost compare-and-swap is read and tried
        again at once, not a second later."""
        with self._pace_lock:
            if before is None:
                self._last_write.pop(path, None)
            else:
                self._last_write[path] = before

    def _fresh(self, path: str) -> Versioned | None:
        """The document this process wrote to ``path`` moments ago, if any (taken: used once)."""
        entry = self._written.pop(path, None)
        if entry is None or time.monotonic() - entry[0] > FRESH_SECONDS:
            return None
        return entry[1]

    def _remember(self, path: str, doc: Versioned) -> None:
        copy = Versioned(json.loads(json.dumps(doc.data, default=str)), doc.generation, doc.metadata)
        self._written[path] = (time.monotonic(), copy)
        while len(self._written) > FRESH_MAX:
            self._written.pop(next(iter(self._written)), None)

    def update(
        self,
        path: str,
        change: Callable[[Doc], Doc | None],
        metadata: Callable[[Doc], dict[str, str]] | None = None,
        attempts: int = 20,
        known: Versioned | None = None,
    ) -> Doc | None:
        """Apply ``change`` to the object by compare-and-swap and return the new document.

        ``change`` gets a copy of the current document and returns the new one, or None to leave it
        as it is (then the current document is returned). Returns None if the object does not exist.

        A document this process wrote moments ago (the steps of one function's work on one record
        follow each other) is taken as current without reading it again: the write's generation
        precondition still decides, and a 412 reads it and applies the change again as any lost
        race does. So only the first step of a chain pays the read. A change that finds nothing to
        do on such a document is tried again on the stored one. ``known``: the document as the caller
        read it moments ago (beside other work), taken the same way for the first attempt.
        """
        for _ in range(attempts):
            fresh = self._fresh(path) or known
            known = None  # the read ahead stands in for the first attempt only
            current = fresh or self.read(path)
            if current is None:
                return None
            new = change(json.loads(json.dumps(current.data)))
            if new is None:
                if fresh is not None:
                    continue  # "nothing to do" is decided on the stored document, not on a memory of it
                return current.data
            meta = metadata(new) if metadata else None
            generation = self._write(path, new, current.generation, meta)
            if generation is not None:
                if generation:
                    self._remember(path, Versioned(new, generation, meta or {}))
                return new
            log.debug("lost a compare-and-swap race on %s; retrying", path)
        raise Conflict(f"{path}: {attempts} compare-and-swap attempts lost to concurrent writers")

    def put(self, path: str, data: Doc, metadata: dict[str, str] | None = None) -> None:
        """Unconditional write (heartbeats and other last-writer-wins documents), with its custom
        metadata if given."""
        self._written.pop(path, None)
        blob = self.bucket.blob(path)
        if metadata:
            blob.metadata = metadata

        def write() -> None:
            self._pace(path)
            writes.debug("state write %s", path)
            blob.upload_from_string(json.dumps(data, default=str), content_type="application/json", timeout=10)
            self._wrote(path)

        retry.call(write, what=f"put {path}", deadline=self.deadline)

    def listing(self, prefix: str) -> Iterator[tuple[str, dict[str, str], Any]]:
        """(name, custom metadata, update time) of every object under ``prefix``."""

        def page() -> list[storage.Blob]:
            return list(self.client.list_blobs(self.bucket, prefix=prefix, timeout=30))

        for blob in retry.call(page, what=f"list {prefix}", deadline=self.deadline):
            yield blob.name, dict(blob.metadata or {}), blob.updated

    def delete(self, path: str) -> None:
        self._written.pop(path, None)
        self._pace(path)
        with contextlib.suppress(exceptions.NotFound):
            self.bucket.blob(path).delete(timeout=10)
