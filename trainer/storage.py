"""Uploading outputs to Cloud Storage and proving they arrived.

Every file is uploaded whole, then its MD5 as reported by Cloud Storage is compared with the local
one; a manifest (path, size, md5) is written last. The completion message is only sent after this
verification (invariant 5). TensorBoard cannot append to ``gs://`` without losing data, so event
files are written locally and synced as whole files (``Syncer``), by the trainer's background worker.

Cloud Storage takes about one write per second to the same object name and answers more with 429;
``PACER`` holds every write of the trainer (outputs, TensorBoard event files, checkpoints, the
heartbeat) to at most one per ``SINERGYM_OBJECT_WRITE_SECONDS`` (1 s) per object name.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from google.cloud import storage

from sinergym_cloud.errors import SinergymError
from sinergym_cloud.gcp import retry

log = logging.getLogger(__name__)


def md5_b64(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return base64.b64encode(digest.digest()).decode()


class VerificationError(SinergymError, RuntimeError):
    """An uploaded object does not match its local file."""


class Pacer:
    """At most one write per ``interval`` seconds to each object name, counted from the end of the
    previous write to the start of the next, whichever thread of this process writes."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()
        self.waited = 0.0  # seconds spent holding writes back, for the log

    @contextmanager
    def write(self, bucket: str, name: str) -> Iterator[None]:
        key = f"{bucket}/{name}"
        with self._lock:
            last = self._last.get(key)
        if last is not None:
            wait = last + self.interval - time.monotonic()
            if wait > 0:
                self.waited += wait
                time.sleep(wait)
        try:
            yield
        finally:
            with self._lock:
                self._last[key] = time.monotonic()
                if len(self._last) > 10_000:  # objects written long ago need no pacing
                    horizon = time.monotonic() - self.interval
                    self._last = {k: t for k, t in self._last.items() if t > horizon}


PACER = Pacer(float(os.environ.get("SINERGYM_OBJECT_WRITE_SECONDS", "1")))


def paced_write(bucket: storage.Bucket, name: str, fn: Callable[[], object]) -> None:
    """Run ``fn`` (a write of object ``name``) no sooner than the pacer allows."""
    with PACER.write(bucket.name, name):
        fn()


@dataclass(frozen=True)
class Uploaded:
    path: str
    size: int
    md5: str
    bucket: str | None = None  # set when the object is in another bucket than the manifest's


def upload_file(bucket: storage.Bucket, local: Path, name: str) -> Uploaded:
    expected = md5_b64(local)
    blob = bucket.blob(name)

    def put() -> None:
        paced_write(bucket, name, lambda: blob.upload_from_filename(str(local), timeout=120))
        if blob.md5_hash is None or blob.size is None:  # the upload's answer is the object's resource
            blob.reload(timeout=30)

    retry.call(put, what=f"upload {name}", deadline=300)
    if blob.md5_hash and blob.md5_hash != expected:
        raise VerificationError(f"gs://{bucket.name}/{name}: md5 {blob.md5_hash} != local {expected}")
    if blob.size is not None and blob.size != local.stat().st_size:
        raise VerificationError(f"gs://{bucket.name}/{name}: {blob.size} bytes != local {local.stat().st_size}")
    return Uploaded(name, local.stat().st_size, expected)


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def upload_tree(bucket: storage.Bucket, root: Path, prefix: str) -> list[Uploaded]:
    """Upload every file under ``root`` to ``prefix``, verified. Returns what was uploaded."""
    done = []
    for path in files_under(root):
        done.append(upload_file(bucket, path, prefix + path.relative_to(root).as_posix()))
    return done


def write_manifest(bucket: storage.Bucket, prefix: str, uploaded: Iterable[Uploaded]) -> str:
    manifest = [
        {"path": u.path, "size": u.size, "md5": u.md5} | ({"bucket": u.bucket} if u.bucket else {}) for u in uploaded
    ]
    name = prefix + "MANIFEST.json"
    blob = bucket.blob(name)
    data = json.dumps(manifest, indent=1)
    retry.call(
        lambda: paced_write(
            bucket, name, lambda: blob.upload_from_string(data, content_type="application/json", timeout=60)
        ),
        what=f"upload {name}",
        deadline=120,
    )
    return name


def verify_manifest(bucket: storage.Bucket, prefix: str) -> list[str]:
    """Problems found comparing the manifest with what the bucket holds (empty: all good)."""
    blob = bucket.get_blob(prefix + "MANIFEST.json", timeout=30)
    if blob is None:
        return [f"no manifest at gs://{bucket.name}/{prefix}MANIFEST.json"]
    problems = []
    for entry in json.loads(blob.download_as_bytes(timeout=30)):
        home = bucket.client.bucket(entry["bucket"]) if entry.get("bucket") else bucket
        stored = home.get_blob(entry["path"], timeout=30)
        where = f"gs://{home.name}/{entry['path']}"
        if stored is None:
            problems.append(f"missing: {where}")
        elif stored.md5_hash and stored.md5_hash != entry["md5"]:
            problems.append(f"corrupt: {where}")
    return problems


def store_outputs(
    bucket: storage.Bucket, prefix: str, trees: Iterable[tuple[Path, str]], synced: Iterable[Uploaded] = ()
) -> str:
    """Upload every output under ``prefix`` and verify it against the manifest; the prefix's gs:// URI.

    ``trees`` are (local folder, sub-prefix) pairs, skipped when absent; ``synced`` are files already
    uploaded while training (a gs:// TensorBoard folder), listed in the manifest and verified too."""
    uploaded: list[Uploaded] = []
    for local, sub in trees:
        if local.exists():
            uploaded += upload_tree(bucket, local, prefix + sub)
    uploaded += synced
    write_manifest(bucket, prefix, uploaded)
    problems = verify_manifest(bucket, prefix)
    if problems:
        raise VerificationError("; ".join(problems[:5]))
    log.info("stored and verified %d file(s) under gs://%s/%s", len(uploaded), bucket.name, prefix)
    return f"gs://{bucket.name}/{prefix}"


def download_prefix(bucket: storage.Bucket, prefix: str, target: Path) -> list[Path]:
    """Download every object under ``prefix`` into ``target`` (keeping relative paths)."""
    got = []
    for blob in bucket.client.list_blobs(bucket, prefix=prefix, timeout=60):
        relative = blob.name[len(prefix) :]
        if not relative or relative.endswith("/"):
            continue
        local = target / relative
        local.parent.mkdir(parents=True, exist_ok=True)
        blob.download_to_filename(str(local), timeout=300)
        got.append(local)
    return got


class Syncer:
    """Uploads whole files of a growing directory (TensorBoard event files): the changed ones, every
    ``every`` seconds on the trainer's background worker, and all of them once more at ``close``.

    Each event file is one object rewritten as it grows: at most once per ``every`` (30 s by
    default, ``SINERGYM_UPLOAD_SECONDS``, never under the pacer's 1 s)."""

    def __init__(self, bucket: storage.Bucket, root: Path, prefix: str, every: float) -> None:
        self.bucket = bucket
        self.root = root
        self.prefix = prefix
        self.every = max(every, PACER.interval)
        self.sent: dict[Path, tuple[tuple[int, float], Uploaded]] = {}  # (size, mtime) when uploaded
        self.lock = threading.Lock()
        self.background: Any = None
        self.before_sync: Callable[[], object] | None = None  # e.g. flush the event files' writer

    def start(self, background: Any) -> None:
        """Sync every ``every`` seconds on ``background`` (trainer.background.Background)."""
        self.background = background
        background.every(self.every, f"tensorboard sync to gs://{self.bucket.name}/{self.prefix}", self._tick,
                         key=f"tensorboard:{self.prefix}")  # fmt: skip

    def _tick(self) -> None:
        try:
            self.sync()
        except Exception as exc:  # noqa: BLE001 - a missed sync is retried at the next interval
            log.warning("tensorboard sync to gs://%s/%s failed: %s", self.bucket.name, self.prefix, exc)

    def sync(self) -> list[Uploaded]:
        """Upload the files that changed since the last sync."""
        uploaded = []
        if self.before_sync is not None:
            self.before_sync()
        with self.lock:
            if not self.root.exists():
                return []
            for path in files_under(self.root):
                stat = path.stat()
                key = (stat.st_size, stat.st_mtime)
                if path in self.sent and self.sent[path][0] == key:
                    continue
                done = upload_file(self.bucket, path, self.prefix + path.relative_to(self.root).as_posix())
                uploaded.append(done)
                self.sent[path] = (key, done)
        return uploaded

    def close(self) -> list[Uploaded]:
        """Stop the periodic sync, do a final, complete one, and return every file as last uploaded
        (with the bucket's name, for a manifest kept in another bucket)."""
        if self.background is not None:
            self.background.cancel_periodic(f"tensorboard:{self.prefix}")
        self.sync()
        return [replace(u, bucket=self.bucket.name) for _, u in self.sent.values()]


def tensorboard_syncer(
    client: storage.Client,
    tb_dir: Path,
    target: str,
    results_bucket: str | None,
    *,
    batch_id: str,
    name: str,
    background: Any,
) -> tuple[Syncer, str]:
    """A Syncer of ``tb_dir``, started on ``background``, to where sinergym_cloud.tensorboard says the
    experiment's event files are (whole files, at a steady interval), and that folder's gs:// URI."""
    from sinergym_cloud import tensorboard

    # Validated (contracts.path_outside): a gs:// target is a folder of the results bucket, and the
    # experiment writes only into its own subfolder of it (contracts.run_folder).
    uri = tensorboard.log_uri(target, results_bucket, batch_id, name)
    assert uri is not None
    bucket_name, _, prefix = uri.removeprefix("gs://").partition("/")
    every = float(os.environ.get("SINERGYM_UPLOAD_SECONDS", "30"))
    syncer = Syncer(client.bucket(bucket_name), tb_dir, prefix, every)
    syncer.start(background)
    return syncer, f"gs://{bucket_name}/{prefix}"
