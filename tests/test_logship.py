"""The VM agent's log shipper (sinergym_cloud/vm/logship.py): a real child process, real pipes, the
flush handshake the trainer uses before its completion; chunks stored in the local cloud's bucket
and read back as publisher.py logs reads them; the Cloud Logging request checked against Google's
discovery document of the Logging API."""

from __future__ import annotations

import json
import sys
import threading
import time
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from sinergym_cloud import names
from sinergym_cloud.gcp import logs as bucket_logs
from sinergym_cloud.gcp import tokens
from sinergym_cloud.vm import logship
from tests.conftest import Cloud, new_batch_id

TRAINER = """
import sys, time
from sinergym_cloud import logs
print("out 1", flush=True)
print("err 1", file=sys.stderr, flush=True)
time.sleep(1.5)
print("out 2 no newline", end="")
print("Traceback (most recent call last):", file=sys.stderr)
print("ValueError: boom", file=sys.stderr)
assert logs.request_flush(timeout=20), "the shipper answered"
print("after the flush", flush=True)
sys.exit(3)
"""


class Memory(logship.Store):
    """A store that keeps chunks in memory, slowly (a slow bucket must not hold the trainer up)."""

    def __init__(self) -> None:
        self.chunks: dict[int, tuple[bytes, dict[str, str]]] = {}
        self.cloud_logging = None
        self.lock = threading.Lock()

    def put(self, piece: logship.Piece) -> None:
        time.sleep(0.2)
        with self.lock:
            self.chunks[piece.seq] = (piece.data, piece.metadata)


def spec(tmp_path: Path, batch_id: str = "b-1", bucket: str = "bucket") -> Path:
    path = tmp_path / "spec.json"
    path.write_text(
        json.dumps(
            {
                "project": "local-project",
                "batch_id": batch_id,
                "experiment_index": 1,
                "experiment_name": "PPO-x-1",
                "results_bucket": bucket,
                "boot_id": "1234-1-abcd",
                "attempt": 1,
                "zone": "europe-west1-b",
            }
        )
    )
    return path


def test_output_is_shipped_in_order_the_flush_is_answered_and_the_exit_code_kept(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "startup.log").write_text("startup: booting\nstartup: sshd listens\n")
    store = Memory()
    env = {**__import__("os").environ, "SINERGYM_VM_HOME": str(home), "SINERGYM_LOG_CHUNK_SECONDS": "1"}
    code = logship.run(spec(tmp_path), [sys.executable, "-c", TRAINER], env=env, store=store)
    assert code == 3
    seqs = sorted(store.chunks)
    assert seqs[0] == 0 and store.chunks[0][1]["source"] == "startup"
    assert store.chunks[0][0].decode().startswith("startup: booting")
    text = "".join(store.chunks[s][0].decode() for s in seqs[1:])
    assert text.index("out 1") < text.index("ValueError: boom") < text.index("after the flush")
    assert "out 2 no newline" in text and "err 1" in text
    assert "sinergym-log-flush" not in text, "the marker is the shipper's, not the log's"
    assert store.chunks[seqs[-1]][1].get("final") == "true"
    assert all("final" not in store.chunks[s][1] for s in seqs[:-1])
    assert len(seqs) >= 3, "the output came in several chunks, a second or more apart"
    assert (tmp_path / "trainer.log").read_text().count("ValueError: boom") == 1, "the VM's own copy is kept"


LAST_WORD = """
from sinergym_cloud import logs
print("the traceback", flush=True)
assert logs.request_flush(timeout=20, final=True)
"""


def test_after_the_final_flush_nothing_more_is_stored_unless_printed(tmp_path: Path) -> None:
    """The flush before the completion is the run's last word: its chunk says final, and a trainer
    that prints nothing after it leaves the shipper nothing to store at exit (a VM deleted right after
    the completion stops at once)."""
    store = Memory()
    env = {**__import__("os").environ, "SINERGYM_VM_HOME": str(tmp_path), "SINERGYM_LOG_CHUNK_SECONDS": "1"}
    assert logship.run(spec(tmp_path), [sys.executable, "-c", LAST_WORD], env=env, store=store) == 0
    assert sorted(store.chunks) == [1], "no startup log on this VM, one chunk, nothing after"
    assert store.chunks[1] == (store.chunks[1][0], {**store.chunks[1][1], "final": "true"})
    assert store.chunks[1][0] == b"the traceback\n"


def test_chunks_in_the_bucket_read_back_in_order(cloud: Cloud, tmp_path: Path) -> None:
    rt = cloud.runtime()
    batch_id = new_batch_id("logs")
    # As on a VM: the trainer's account, and its experiment's storage token.
    rules = tokens.experiment_rules(cloud.settings.results_bucket, names.results_prefix(batch_id, "PPO-x-1"))
    env = {
        **__import__("os").environ,
        **cloud.env,
        **cloud.vm_identity(None, tmp_path / "storage-token.json", rules),
        "SINERGYM_VM_HOME": str(tmp_path),
        "SINERGYM_LOG_CHUNK_SECONDS": "1",
    }
    (tmp_path / "startup.log").write_text("startup: booting\n")
    path = spec(tmp_path, batch_id, cloud.settings.results_bucket)  # the local cloud made the bucket
    code = logship.run(path, [sys.executable, "-c", TRAINER], env=env)
    assert code == 3
    bucket = rt.clients.storage.bucket(cloud.settings.results_bucket)
    boots = bucket_logs.boots(bucket, batch_id, "PPO-x-1")
    assert [(b.attempt, b.boot_id, b.final) for b in boots] == [(1, "1234-1-abcd", True)]
    text = "".join(bucket_logs.read(bucket, c) for c in boots[0].chunks)
    assert text.startswith("startup: booting") and text.index("out 1") < text.index("ValueError: boom")
    assert bucket_logs.tail(bucket, batch_id, "PPO-x-1", 2) == ["ValueError: boom", "after the flush"]
    # Each chunk was written once: a second write of one name is refused, and counts as stored.
    first = boots[0].chunks[1]
    assert bucket_logs.write_chunk(bucket, first.name, b"again", {})
    assert bucket_logs.read(bucket, first) != "again"


def _problems(document: dict[str, Any], value: Any, schema: Any, where: str = "$") -> list[str]:
    spec_ = document["schemas"][schema] if isinstance(schema, str) else schema
    if "$ref" in spec_:
        return _problems(document, value, spec_["$ref"], where)
    kind = spec_.get("type")
    if kind == "object":
        if not isinstance(value, dict):
            return [f"{where}: not an object"]
        props, extra, found = spec_.get("properties", {}), spec_.get("additionalProperties"), []
        for key, item in value.items():
            if key in props:
                found += _problems(document, item, props[key], f"{where}.{key}")
            elif extra is not None:
                found += _problems(document, item, extra, f"{where}[{key}]")
            else:
                found.append(f"{where}.{key}: no such field")
        return found
    if kind == "array":
        return [p for i, v in enumerate(value) for p in _problems(document, v, spec_["items"], f"{where}[{i}]")]
    if kind == "string":
        return [] if isinstance(value, str) else [f"{where}: not a string"]
    if kind == "boolean":
        return [] if isinstance(value, bool) else [f"{where}: not a boolean"]
    return []


def test_the_cloud_logging_request_is_what_the_logging_api_takes() -> None:
    document = json.loads(
        (resources.files("googleapiclient") / "discovery_cache" / "documents" / "logging.v2.json").read_text()
    )
    writer = logship.CloudLogging(
        {
            "project": "my-project",
            "batch_id": "b-1",
            "experiment_index": 2,
            "experiment_name": "PPO-x-2",
            "boot_id": "8812345-1-abcd",
            "attempt": 1,
            "zone": "europe-west1-b",
        },
        session=object(),
    )
    body = writer.body([(1_700_000_000.25, "Traceback"), (1_700_000_000.5, "ValueError: boom")], "trainer")
    assert _problems(document, body, "WriteLogEntriesRequest") == []
    assert body["logName"] == "projects/my-project/logs/sinergym-trainer"
    assert body["resource"]["labels"]["instance_id"] == "8812345"
    assert body["labels"]["batch_id"] == "b-1" and body["labels"]["experiment_index"] == "2"
    assert body["entries"][0]["timestamp"] == "2023-11-14T22:13:20.250000Z"


@pytest.mark.parametrize(("value", "expected"), [("0.1", 1.0), ("3", 3.0), ("x", 5.0), (None, 5.0)])
def test_chunks_are_never_written_faster_than_once_a_second(value: str | None, expected: float) -> None:
    assert logship.chunk_seconds({"SINERGYM_LOG_CHUNK_SECONDS": value} if value else {}) == expected
