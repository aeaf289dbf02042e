"""The VM agent's log shipper: runs the trainer and stores its output in the bucket while it trains.

``python -m sinergym_cloud.vm.logship --spec SPEC.json -- COMMAND...`` is what the VM agent starts
(detached) instead of the trainer itself. It runs COMMAND with stdout and stderr on one pipe and:

- keeps every byte in ``trainer.log`` beside the spec, on the VM's disk, as before;
- stores the VM's startup log (``$SINERGYM_VM_HOME/startup.log``) as the boot's chunk 0, then the
  trainer's output as chunks 1, 2, ... under ``gs://RESULTS/BATCH/EXPERIMENT/logs/<attempt>-<boot>/``
  (gcp/logs.py): a chunk every ``SINERGYM_LOG_CHUNK_SECONDS`` (5) with what arrived meanwhile,
  each a new object written once, so no object name is ever written twice, let alone once a second;
- on Google Cloud, also writes each chunk's lines to Cloud Logging (log ``sinergym-trainer``, the
  VM as its resource, the batch, experiment, boot and attempt as labels);
- answers the trainer's flush marker (sinergym_cloud/logs.py) once everything printed before it is
  stored, so a failure's traceback is in the bucket before the completion that deletes the VM; the
  flush before the completion is ``final`` (that chunk, and any after it, carry ``final``);
- when the trainer exits, stores what it printed after that (the boot's ``final`` chunk; an empty
  one if the trainer never said its last word, e.g. it crashed) and exits with its code. After a
  final flush with nothing more printed it stores nothing, and so stops at once when the VM is
  deleted: the VM's quota is given back as soon as it was before the shipper.

A SIGTERM (the VM being deleted or preempted) reaches the trainer from the VM's init; the shipper
keeps reading until the trainer has exited, so the trainer's last words (its checkpoint, its
completion) are stored too, within the VM's shutdown grace. Uploads run on their own thread: a slow
or failing bucket never blocks the trainer's writes. The same code runs on both clouds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import queue
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sinergym_cloud import logs, names

log = logging.getLogger("sinergym_cloud.vm.logship")

CHUNK_SECONDS = 5.0  # default of SINERGYM_LOG_CHUNK_SECONDS
MIN_CHUNK_SECONDS = 1.0  # never faster: each chunk is a new object, but the bucket still counts writes
MAX_CHUNK_BYTES = 1024 * 1024  # a chunk is cut early past this
MAX_LOG_BYTES = 200 * 1024 * 1024  # per boot; beyond it the log is cut, with a note
MIN_FLUSH_SECONDS = 1.0  # flush markers answered at most this often (a trainer printing markers in a loop)


def chunk_seconds(env: dict[str, str]) -> float:
    try:
        value = float(env.get("SINERGYM_LOG_CHUNK_SECONDS") or CHUNK_SECONDS)
    except ValueError:
        value = CHUNK_SECONDS
    return max(MIN_CHUNK_SECONDS, value)


@dataclass
class Piece:
    """One chunk to store, and who waits for it (a flush marker's answer)."""

    seq: int
    data: bytes
    metadata: dict[str, str]
    lines: list[tuple[float, str]] = field(default_factory=list)
    then: Callable[[], None] | None = None


class Store:
    """Where chunks go: the results bucket, and Cloud Logging on Google Cloud. Built on first use."""

    def __init__(self, spec: dict[str, Any], env: dict[str, str]) -> None:
        self.spec = spec
        self.env = env
        self._bucket: Any = None
        self.cloud_logging = None if _local(env) else CloudLogging.from_spec(spec)

    @property
    def bucket(self) -> Any:
        if self._bucket is None:
            from sinergym_cloud.config import Settings
            from sinergym_cloud.gcp.clients import Clients

            clients = Clients(Settings.from_env({**self.env, "GOOGLE_CLOUD_PROJECT": self.spec["project"]}))
            self._bucket = clients.storage.bucket(self.spec["results_bucket"])
        return self._bucket

    def name(self, seq: int) -> str:
        s = self.spec
        return names.log_chunk_object(s["batch_id"], s["experiment_name"], int(s.get("attempt", 1)), s["boot_id"], seq)

    def put(self, piece: Piece) -> None:
        from sinergym_cloud.gcp import logs as bucket_logs

        bucket_logs.write_chunk(self.bucket, self.name(piece.seq), piece.data, piece.metadata)
        if self.cloud_logging is not None and piece.lines:
            try:
                self.cloud_logging.write(piece.lines, piece.metadata.get("source", "trainer"))
            except Exception as exc:  # noqa: BLE001 - the bucket has the log; Cloud Logging is a second copy
                log.warning("Cloud Logging write failed: %s", exc)


def _local(env: dict[str, str]) -> bool:
    return bool(env.get("STORAGE_EMULATOR_HOST") or env.get("PUBSUB_EMULATOR_HOST"))


class CloudLogging:
    """``entries.write`` of Cloud Logging's REST API, with the VM's own credentials (its service
    account has roles/logging.logWriter)."""

    ENDPOINT = "https://logging.googleapis.com/v2/entries:write"

    def __init__(self, spec: dict[str, Any], session: Any = None, endpoint: str | None = None) -> None:
        self.spec = spec
        self._session = session
        self.endpoint = endpoint or os.environ.get("SINERGYM_LOGGING_ENDPOINT") or self.ENDPOINT

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> CloudLogging:
        return cls(spec)

    @property
    def session(self) -> Any:
        if self._session is None:
            import google.auth
            from google.auth.transport.requests import AuthorizedSession

            credentials, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/logging.write"])
            self._session = AuthorizedSession(credentials)
        return self._session

    def body(self, lines: list[tuple[float, str]], source: str) -> dict[str, Any]:
        s = self.spec
        instance_id = str(s.get("boot_id", "")).split("-", 1)[0]
        labels = {
            "batch_id": s["batch_id"],
            "experiment_index": str(s["experiment_index"]),
            "experiment": s["experiment_name"],
            "boot_id": s["boot_id"],
            "attempt": str(s.get("attempt", 1)),
            "source": source,
        }
        return {
            "logName": f"projects/{s['project']}/logs/{names.LOG_NAME}",
            "resource": {
                "type": "gce_instance",
                "labels": {"project_id": s["project"], "instance_id": instance_id, "zone": s.get("zone", "")},
            },
            "labels": labels,
            "partialSuccess": True,
            "entries": [
                {
                    "textPayload": text[:200_000],
                    "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + f".{int(at % 1 * 1e6):06d}Z",
                }
                for at, text in lines
            ],
        }

    def write(self, lines: list[tuple[float, str]], source: str) -> None:
        response = self.session.post(self.endpoint, json=self.body(lines, source), timeout=30)
        response.raise_for_status()


class Uploader(threading.Thread):
    """Stores pieces in order, on its own thread; a piece that fails waits and is tried again."""

    def __init__(self, store: Store) -> None:
        super().__init__(daemon=True, name="logship-upload")
        self.store = store
        self.pieces: queue.Queue[Piece | None] = queue.Queue()

    def run(self) -> None:
        while True:
            piece = self.pieces.get()
            if piece is None:
                return
            for attempt in range(1, 6):
                if piece.seq < 0:
                    break  # nothing to store: only an answer to give once what came before is stored
                try:
                    self.store.put(piece)
                    break
                except Exception as exc:  # noqa: BLE001 - a log chunk must never stop the trainer
                    log.warning("chunk %d: store failed (attempt %d): %s", piece.seq, attempt, exc)
                    time.sleep(min(30.0, 2.0**attempt))
            if piece.then is not None:
                piece.then()


class Shipper:
    """Reads the trainer's output and cuts it into chunks (see the module's docstring)."""

    def __init__(self, spec: dict[str, Any], workdir: Path, env: dict[str, str], store: Store | None = None) -> None:
        self.spec = spec
        self.workdir = workdir
        self.env = env
        self.every = chunk_seconds(env)
        self.uploader = Uploader(store or Store(spec, env))
        self.seq = 1
        self.pending = bytearray()
        self.pending_lines: list[tuple[float, str]] = []
        self.carry = b""
        self.first: float | None = None
        self.shipped = 0
        self.cut = False
        self.last_flush = 0.0
        self.finalized = False  # the trainer's final flush was stored: what follows is final too
        self.terminating = False  # the VM is being stopped (SIGTERM): close without lingering
        self.local = open(workdir / "trainer.log", "ab")  # noqa: SIM115 - closed in close()

    def start(self) -> None:
        self.uploader.start()
        startup = Path(self.env.get("SINERGYM_VM_HOME", "/var/lib/sinergym")) / "startup.log"
        try:
            data = startup.read_bytes()[-MAX_CHUNK_BYTES:]
        except OSError:
            return
        lines = [(time.time(), line) for line in data.decode("utf-8", errors="replace").splitlines()]
        self.uploader.pieces.put(Piece(0, data, self._meta("startup", time.time(), time.time()), lines))

    @staticmethod
    def _meta(source: str, first: float, last: float, final: bool = False) -> dict[str, str]:
        meta = {"source": source, "first": f"{first:.3f}", "last": f"{last:.3f}"}
        if final:
            meta["final"] = "true"
        return meta

    def feed(self, data: bytes) -> list[tuple[str, bool]]:
        """Take bytes read from the trainer; returns the flush markers found in them, in order."""
        self.local.write(data)
        self.local.flush()
        now = time.time()
        markers = []
        lines = (self.carry + data).split(b"\n")
        self.carry = lines.pop()
        for line in lines:
            found = logs.marker(line)
            if found is not None:
                markers.append(found)
                continue
            self._keep(line + b"\n", now)
        return markers

    def _keep(self, line: bytes, now: float) -> None:
        if self.cut:
            return
        if self.shipped + len(self.pending) + len(line) > MAX_LOG_BYTES:
            self.cut = True
            line = f"[logship: the log passed {MAX_LOG_BYTES} bytes; the rest is on the VM only]\n".encode()
        self.pending += line
        self.pending_lines.append((now, line.decode("utf-8", errors="replace").rstrip("\n")))
        self.first = self.first or now
        if len(self.pending) >= MAX_CHUNK_BYTES:
            self.ship()

    def due(self, now: float) -> bool:
        return self.first is not None and now - self.first >= self.every

    def ship(self, final: bool = False, then: Callable[[], None] | None = None) -> None:
        """Cut a chunk of what is pending (a partial last line too when ``final``) and queue it."""
        now = time.time()
        if final and self.carry:
            self._keep(self.carry + b"\n", now)
            self.carry = b""
        final = final or self.finalized
        if not self.pending and not (final and not self.finalized):
            if then is not None:  # nothing new: answer once what is queued is stored
                self.uploader.pieces.put(Piece(-1, b"", {}, then=then))
            return
        piece = Piece(
            self.seq,
            bytes(self.pending),
            self._meta("trainer", self.first or now, now, final),
            list(self.pending_lines),
            then,
        )
        self.seq += 1
        self.shipped += len(self.pending)
        self.pending.clear()
        self.pending_lines.clear()
        self.first = None
        self.finalized = self.finalized or final
        self.uploader.pieces.put(piece)

    def answer(self, token: str) -> Callable[[], None]:
        ack_dir = self.env.get(logs.ACK_DIR_ENV) or str(self.workdir)

        def done() -> None:
            with contextlib.suppress(OSError):
                logs.ack_file(ack_dir, token).touch()

        return done

    def close(self) -> None:
        """Store the rest (see the module's docstring) and stop; a VM being stopped waits only briefly
        for the last uploads (its init kills what is left after its shutdown grace anyway)."""
        self.ship(final=True)
        self.uploader.pieces.put(None)
        self.uploader.join(2.0 if self.terminating else 120.0)
        self.local.close()


def _read(fd: int, drain: bool) -> bytes:
    """What the pipe holds now (one read), or, once the trainer exited, all it still holds."""
    if not drain:
        return os.read(fd, 65536)
    os.set_blocking(fd, False)
    got = bytearray()
    with contextlib.suppress(BlockingIOError):
        while chunk := os.read(fd, 65536):
            got += chunk
    return bytes(got)


def run(spec_file: Path, command: list[str], env: dict[str, str] | None = None, store: Store | None = None) -> int:
    """Run ``command`` under the shipper; its exit code."""
    env = dict(os.environ if env is None else env)
    spec = json.loads(spec_file.read_text())
    workdir = spec_file.parent
    env[logs.ACK_DIR_ENV] = str(workdir)
    shipper = Shipper(spec, workdir, env, store)
    shipper.start()
    read_end, write_end = os.pipe()
    child = subprocess.Popen(command, cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=write_end,
                             stderr=write_end)  # fmt: skip
    os.close(write_end)
    # The VM's shutdown signals every process: the trainer checkpoints and reports; this one keeps
    # storing what it says until it has exited.
    signal.signal(signal.SIGTERM, lambda *_: setattr(shipper, "terminating", True))
    try:
        while True:
            timeout = shipper.every if shipper.first is None else max(0.0, shipper.first + shipper.every - time.time())
            ready, _, _ = select.select([read_end], [], [], min(timeout, 1.0))
            exited = child.poll() is not None
            if ready or exited:
                data = _read(read_end, drain=exited)
                for token, final in shipper.feed(data):
                    wait = MIN_FLUSH_SECONDS - (time.time() - shipper.last_flush)
                    if wait > 0:
                        time.sleep(wait)
                    shipper.last_flush = time.time()
                    shipper.ship(final=final, then=shipper.answer(token))
                if exited or not data:
                    break  # the trainer is gone (a process it left behind may hold the pipe: not waited for)
            if shipper.due(time.time()):
                shipper.ship()
    finally:
        os.close(read_end)
        code = child.wait()
        shipper.close()
    return code


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        print("usage: python -m sinergym_cloud.vm.logship --spec SPEC.json -- COMMAND...", file=sys.stderr)
        return 2
    split = argv.index("--")
    parser = argparse.ArgumentParser(prog="python -m sinergym_cloud.vm.logship")
    parser.add_argument("--spec", type=Path, required=True)
    args = parser.parse_args(argv[:split])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return run(args.spec, argv[split + 1 :])


if __name__ == "__main__":
    sys.exit(main())
