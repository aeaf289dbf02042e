"""Starting and stopping the local cloud's processes so that none is ever left behind.

Three layers, each a fallback for the one before:

1. every service runs in its own session (its own process group) and is stopped by signalling the
   group, SIGTERM then SIGKILL after a grace period;
2. every service has a pid file recording its pid *and* its start time, so a stop after a crash of
   whatever started it finds it again, and never signals an unrelated process that reused the pid;
3. every process the local cloud starts carries ``LOCALCLOUD_ID=<id>`` in its environment (the local
   VMs' sshd passes it on to SSH sessions with ``SetEnv``), so a final sweep of ``/proc`` finds
   even processes that left their group (a detached trainer, say).

Only processes we started are ever signalled.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import signal
import subprocess
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from sinergym_cloud.vm.procinfo import is_zombie, lower_priority, parent, start_time

log = logging.getLogger(__name__)

__all__ = ["is_zombie", "lower_priority", "start_time"]

MARKER = "LOCALCLOUD_ID"


@dataclass(frozen=True)
class PidRecord:
    """A process we started, identified by pid and start time together."""

    name: str
    pid: int
    start: int
    argv: tuple[str, ...] = ()

    def alive(self) -> bool:
        return start_time(self.pid) == self.start and not is_zombie(self.pid)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"name": self.name, "pid": self.pid, "start": self.start, "argv": self.argv}))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> PidRecord | None:
        try:
            data = json.loads(path.read_text())
            return cls(data["name"], int(data["pid"]), int(data["start"]), tuple(data.get("argv", ())))
        except (OSError, ValueError, KeyError):
            return None


def wait_exit(pid: int, timeout: float) -> bool:
    """Wait for ``pid`` to exit, without polling where the kernel can tell us (pidfd). True if gone."""
    deadline = time.monotonic() + timeout
    try:
        fd = os.pidfd_open(pid)
    except (OSError, AttributeError):
        fd = None
    if fd is not None:
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                ready, _, _ = select.select([fd], [], [], remaining)
                if ready:
                    _reap(pid)
                    return True
        finally:
            os.close(fd)
    while time.monotonic() < deadline:  # pragma: no cover - kernels without pidfd
        if start_time(pid) is None or is_zombie(pid):
            _reap(pid)
            return True
        time.sleep(0.05)
    return False


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (children first listed before their own children)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        ppid = parent(int(entry.name))
        if ppid is not None:
            children.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    frontier = [pid]
    while frontier:
        nxt = []
        for p in frontier:
            for c in children.get(p, []):
                found.append(c)
                nxt.append(c)
        frontier = nxt
    return found


# A VM is another machine: on Compute Engine its work never takes CPU from the functions, the
# brokers or the other VMs' control traffic. Here every VM shares the host's cores with them, so its
# processes run at a lower priority, and a wave of trainers starting cannot starve the control plane
# that tests and benchmarks time. Linux's autogroup scheduling (when enabled) weighs each session as
# one unit whatever its processes' nice values, so a VM's session group is lowered too, and the
# trainer, which the VM agent starts in a session of its own, is asked to do the same
# (SINERGYM_TRAINER_NICE in the VM's environment). Both use procinfo.lower_priority. The lowest
# priority, because each VM's session weighs on its own: twenty at nice 10 (weight 110 each) would
# outweigh a function's session (1024) two to one.
VM_NICE = 19


def kill_tree(pid: int, grace: float = 5.0, sig: int = signal.SIGTERM) -> None:
    """Signal ``pid``, its process group and all its descendants; SIGKILL whatever outlives ``grace``."""
    targets = [pid, *descendants(pid)]
    starts = {p: start_time(p) for p in targets}
    _signal_all(targets, sig, pgroup=pid)
    deadline = time.monotonic() + grace
    for p in targets:
        remaining = max(0.0, deadline - time.monotonic())
        if starts[p] is not None and start_time(p) == starts[p] and not wait_exit(p, remaining):
            break
    survivors = [p for p in [pid, *descendants(pid), *targets] if starts.get(p) is None or start_time(p) == starts[p]]
    if any(start_time(p) is not None and not is_zombie(p) for p in survivors):
        _signal_all(survivors, signal.SIGKILL, pgroup=pid)
        for p in survivors:
            wait_exit(p, 2.0)


def _signal_all(pids: Iterable[int], sig: int, pgroup: int | None = None) -> None:
    if pgroup is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if os.getpgid(pgroup) == pgroup:
                os.killpg(pgroup, sig)
    for p in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(p, sig)


def marked(cloud_id: str) -> list[int]:
    """Processes whose environment carries this local cloud's marker (never the caller itself)."""
    needle = f"{MARKER}={cloud_id}".encode()
    me = os.getpid()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def sweep(cloud_id: str, grace: float = 3.0) -> list[int]:
    """Stop every process still carrying the marker. Returns the pids that were found."""
    pids = [p for p in marked(cloud_id) if not is_zombie(p)]
    if not pids:
        return []
    log.info("sweeping %d leftover process(es): %s", len(pids), pids)
    _signal_all(pids, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for p in pids:
        wait_exit(p, max(0.0, deadline - time.monotonic()))
    rest = [p for p in marked(cloud_id) if not is_zombie(p)]
    _signal_all(rest, signal.SIGKILL)
    for p in rest:
        wait_exit(p, 2.0)
    return pids


class Service:
    """A daemon of the local cloud: its own session, a pid file, a log file."""

    def __init__(self, name: str, argv: Sequence[str], pid_dir: Path, log_dir: Path) -> None:
        self.name = name
        self.argv = tuple(argv)
        self.pid_file = pid_dir / f"{name}.json"
        self.log_file = log_dir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, env: Mapping[str, str], cwd: Path | None = None) -> PidRecord:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as out:
            self.process = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=dict(env),
                cwd=cwd,
                start_new_session=True,
            )
        record = PidRecord(self.name, self.process.pid, start_time(self.process.pid) or 0, self.argv)
        record.save(self.pid_file)
        return record

    def exited(self) -> int | None:
        """The exit code if the process has ended, else None."""
        return self.process.poll() if self.process else None

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.rstrip().splitlines()[-lines:])


def stop_recorded(pid_dir: Path, grace: float = 5.0, order: Sequence[str] = ()) -> list[str]:
    """Stop every process with a pid file under ``pid_dir``, removing the files.

    The services named in ``order`` are stopped first (the ones that talk to the others), then all
    the rest at once, each group in parallel, so a stop takes one grace period, not one per service.
    """
    files = sorted(pid_dir.glob("*.json")) if pid_dir.is_dir() else []
    first = [f for f in files if f.stem in order]
    rest = [f for f in files if f.stem not in order]
    stopped: list[str] = []
    for wave in (first, rest):
        records = [(path, PidRecord.load(path)) for path in wave]
        threads = []
        for _path, record in records:
            if record is not None and record.alive():
                t = threading.Thread(target=kill_tree, args=(record.pid, grace))
                t.start()
                threads.append(t)
                stopped.append(record.name)
        for t in threads:
            t.join()
        for path, _ in records:
            path.unlink(missing_ok=True)
    return stopped
