"""Control-plane state as JSON objects in Cloud Storage, written with generation preconditions.

Two kinds of object (see names.py for the layout):

- **claims** are created with ``if_generation_match=0``: of any number of concurrent creators,
  exactly one succeeds (the others get 412 Precondition Failed and learn who won);
- **status** objects are updated by compare-and-swap: read with its generation, write with
  ``if_generation_match=<generation>``, and on 412 read again and re-apply the change.

Each experiment has its own status object, so concurrent functions never contend on one document.
An experiment's state is also copied into the object's custom metadata, so one listing tells the
state of every experiment of a batch without reading each object.
"""

from __future__ import annotations

import contextlib
import json
import logging
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


class StateStore:
    def __init__(self, client: storage.Client, bucket: str, deadline: float = 30.0) -> None:
        self.client = client
        self.bucket = client.bucket(bucket)
        self.deadline = deadline

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
        return self._write(path, data, 0, metadata)

    def _write(self, path: str, data: Doc, generation: int, metadata: dict[str, str] | None) -> bool:
        blob = self.bucket.blob(path)
        if metadata:
            blob.metadata = metadata
        body = json.dumps(data, sort_keys=True, default=str)

        writes.debug("state write %s", path)

        def put() -> bool:
            try:
                blob.upload_from_string(
                    body, content_type="application/json", if_generation_match=generation, timeout=10
                )
                return True
            except exceptions.PreconditionFailed:
                return False

        return retry.call(put, what=f"write {path}", deadline=self.deadline)

    def update(
        self,
        path: str,
        change: Callable[[Doc], Doc | None],
        metadata: Callable[[Doc], dict[str, str]] | None = None,
        attempts: int = 20,
    ) -> Doc | None:
        """Apply ``change`` to the object by compare-and-swap and return the new document.

        ``change`` gets a copy of the current document and returns the new one, or None to leave it
        as it is (then the current document is returned). Returns None if the object does not exist.
        """
        for _ in range(attempts):
            current = self.read(path)
            if current is None:
                return None
            new = change(json.loads(json.dumps(current.data)))
            if new is None:
                return current.data
            if self._write(path, new, current.generation, metadata(new) if metadata else None):
                return new
            log.debug("lost a compare-and-swap race on %s; retrying", path)
        raise Conflict(f"{path}: {attempts} compare-and-swap attempts lost to concurrent writers")

    def put(self, path: str, data: Doc) -> None:
        """Unconditional write (heartbeats and other last-writer-wins documents)."""
        blob = self.bucket.blob(path)
        writes.debug("state write %s", path)
        retry.call(
            lambda: blob.upload_from_string(json.dumps(data, default=str), content_type="application/json", timeout=10),
            what=f"put {path}",
            deadline=self.deadline,
        )

    def listing(self, prefix: str) -> Iterator[tuple[str, dict[str, str], Any]]:
        """(name, custom metadata, update time) of every object under ``prefix``."""

        def page() -> list[storage.Blob]:
            return list(self.client.list_blobs(self.bucket, prefix=prefix, timeout=30))

        for blob in retry.call(page, what=f"list {prefix}", deadline=self.deadline):
            yield blob.name, dict(blob.metadata or {}), blob.updated

    def delete(self, path: str) -> None:
        with contextlib.suppress(exceptions.NotFound):
            self.bucket.blob(path).delete(timeout=10)
