"""The handshake between a trainer and the VM agent that ships its log: "everything I printed is
stored" before the trainer reports its end.

On a VM the trainer runs under the agent's log shipper (``sinergym_cloud/vm/logship.py``), which
reads the trainer's stdout and stderr and stores them in the bucket in chunks every few seconds.
The trainer's completion makes cleanup delete the VM: what it printed just before (a failure's
traceback above all) must be stored first. So, just before it publishes its completion, the trainer
calls ``request_flush``: it writes a marker line into its own output and waits until the shipper,
reading that line in order after everything printed before it, has stored those lines and answered
with a file in ``SINERGYM_LOG_ACK_DIR``. Without a shipper (a laptop run) nothing is waited for.
A ``final`` flush (the one before the completion) marks the chunk as the run's last word, so a reader
following the log knows it has everything, and the shipper stores nothing more at exit unless the
trainer printed more.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sys
import time
from pathlib import Path

ACK_DIR_ENV = "SINERGYM_LOG_ACK_DIR"
MARKER = "\x1esinergym-log-flush "  # a record separator first: no line of a real log starts so


def ack_file(ack_dir: str | Path, token: str) -> Path:
    return Path(ack_dir) / f"log-flushed-{token}"


def marker(line: bytes) -> tuple[str, bool] | None:
    """(token, final) of a flush marker line, or None for any other line."""
    text = line.rstrip(b"\r\n").decode("utf-8", errors="replace")
    if not text.startswith(MARKER):
        return None
    token, _, rest = text[len(MARKER) :].partition(" ")
    if not token.isalnum() or len(token) > 64 or rest not in ("", "final"):
        return None
    return token, rest == "final"


def request_flush(timeout: float = 30.0, final: bool = False) -> bool:
    """Ask the log shipper to store everything printed so far and wait for it (at most ``timeout``
    seconds). ``final``: this is the run's last word (its completion follows). True if it answered;
    False without a shipper or without an answer in time."""
    ack_dir = os.environ.get(ACK_DIR_ENV)
    if not ack_dir:
        return False
    token = secrets.token_hex(8)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    try:
        os.write(2, f"{MARKER}{token}{' final' if final else ''}\n".encode())  # after all that was printed
    except OSError:
        return False
    answer = ack_file(ack_dir, token)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if answer.exists():
            answer.unlink(missing_ok=True)
            return True
        time.sleep(0.01)
    return False
