"""Linux process facts from /proc: a process is identified by its pid *and* its start time."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def _stat_fields(pid: int) -> list[str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after its closing ')'.
    return stat[stat.rindex(")") + 2 :].split()


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat), or None."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def cpu_seconds(pid: int) -> float:
    """The user and system CPU time the process has used so far (fields 14 and 15), or 0 if gone."""
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK") if fields else 0.0


def is_zombie(pid: int) -> bool:
    fields = _stat_fields(pid)
    return fields is None or fields[0] in ("Z", "X")


def parent(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[1]) if fields else None


def alive(pid: int, start: int) -> bool:
    """True if ``pid`` is still the process that started at ``start`` and has not exited."""
    return start_time(pid) == start and not is_zombie(pid)


def lower_priority(nice: int) -> None:
    """Run this process (and what it starts) at ``nice``, an absolute value (not added to an
    inherited one), and its session's autogroup too: Linux's autogroup scheduling, when enabled,
    weighs each session as one unit whatever its processes' nice values."""
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, 0, nice)
    with contextlib.suppress(OSError), open("/proc/self/autogroup", "w") as group:
        group.write(str(nice))
