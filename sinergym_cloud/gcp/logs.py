"""An experiment's logs in the results bucket: written in numbered chunks by the VM agent, read by
``publisher.py logs``, ``status`` and the sweeper.

Layout (names.py): ``<batch>/<experiment>/logs/<attempt>-<boot id>/<seq>.log``, one folder per boot
of the experiment's VM. Chunk 0 is the VM's startup log; chunks 1, 2, ... are the trainer's stdout
and stderr, in order. Each chunk is created once (``if_generation_match=0``), never rewritten: Cloud
Storage takes about one write per second to one object name, and a chunk is written every few
seconds under a new name. A chunk's custom metadata says what it holds (``source``: startup or
trainer), the time of its first and last line, and ``final`` on the boot's last chunk (the trainer
exited and everything it printed is stored).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any

from google.api_core import exceptions

from sinergym_cloud import names
from sinergym_cloud.gcp import retry

log = logging.getLogger(__name__)

_CHUNK = re.compile(r"^(?P<attempt>[0-9]{3})-(?P<boot>[A-Za-z0-9-]{1,64})/(?P<seq>[0-9]{6})\.log$")


@dataclass(frozen=True)
class Chunk:
    name: str  # the object's name
    seq: int
    source: str  # "startup" or "trainer"
    first: float | None
    last: float | None
    final: bool
    size: int


@dataclass
class Boot:
    """One boot's log: its chunks in order."""

    attempt: int
    boot_id: str
    chunks: list[Chunk] = field(default_factory=list)

    @property
    def final(self) -> bool:
        return any(c.final for c in self.chunks)


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


def boots(bucket: Any, batch_id: str, experiment: str) -> list[Boot]:
    """Every boot's chunks, oldest boot first, from one listing of the experiment's ``logs/``."""
    prefix = names.logs_prefix(batch_id, experiment)

    def page() -> list[Any]:
        return list(bucket.client.list_blobs(bucket, prefix=prefix, timeout=30))

    found: dict[tuple[int, str], Boot] = {}
    for blob in retry.call(page, what=f"list {prefix}", deadline=60):
        m = _CHUNK.match(blob.name[len(prefix) :])
        if m is None:
            continue
        meta = dict(blob.metadata or {})
        key = (int(m["attempt"]), m["boot"])
        boot = found.setdefault(key, Boot(attempt=key[0], boot_id=key[1]))
        boot.chunks.append(
            Chunk(
                name=blob.name,
                seq=int(m["seq"]),
                source=meta.get("source", "trainer"),
                first=_float(meta.get("first")),
                last=_float(meta.get("last")),
                final=meta.get("final") == "true",
                size=int(blob.size or 0),
            )
        )
    ordered = [found[k] for k in sorted(found, key=lambda k: (k[0], min(c.first or 0 for c in found[k].chunks)))]
    for boot in ordered:
        boot.chunks.sort(key=lambda c: c.seq)
    return ordered


def read(bucket: Any, chunk: Chunk) -> str:
    raw: bytes = retry.call(
        lambda: bucket.blob(chunk.name).download_as_bytes(timeout=30), what=f"read {chunk.name}", deadline=60
    )
    return raw.decode("utf-8", errors="replace")


def tail(bucket: Any, batch_id: str, experiment: str, lines: int = 10) -> list[str]:
    """The last ``lines`` lines the experiment's latest boot printed (its trainer's, else its startup
    log's); [] if it has no log."""
    found = boots(bucket, batch_id, experiment)
    if not found:
        return []
    got: list[str] = []
    for chunk in reversed(found[-1].chunks):
        got = read(bucket, chunk).splitlines() + got
        if len([line for line in got if line.strip()]) >= lines:
            break
    return [line for line in got if line.strip()][-lines:]


def write_chunk(bucket: Any, name: str, data: bytes, metadata: dict[str, str], deadline: float = 30.0) -> bool:
    """Create one chunk (never overwrite: a chunk name is written once). True if it is stored now,
    by this call or by an earlier attempt whose answer was lost (412: it exists)."""

    def put() -> bool:
        blob = bucket.blob(name)
        blob.metadata = metadata
        try:
            blob.upload_from_string(data, content_type="text/plain; charset=utf-8", if_generation_match=0, timeout=30)
        except exceptions.PreconditionFailed:
            return True
        return True

    return bool(retry.call(put, what=f"write {name}", deadline=deadline))
