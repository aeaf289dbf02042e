"""Why a batch runs fewer VMs than it has experiments: its recorded parallelism and budget, in words."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from sinergym_cloud.records import LIVE, LaunchRecord

_QUOTA_METRIC = re.compile(r"Quota '([A-Z0-9_]+)' exceeded")


def _clock(at: float | None) -> str:
    return dt.datetime.fromtimestamp(at, dt.UTC).strftime("%H:%M UTC") if at else "?"


def limits(launch: LaunchRecord) -> dict[str, Any]:
    """How many VMs the batch may run at once and why, and its VM-hour budget, as recorded."""
    return {
        "parallelism": launch.parallelism,
        "parallelism_reason": launch.parallelism_reason,
        "parallelism_launched": launch.parallelism_launched or launch.parallelism,
        "parallelism_lowered": launch.parallelism_lowered,
        "parallelism_lowered_at": launch.parallelism_lowered_at,
        "max_vm_hours": launch.max_vm_hours,
        "budget_reached": launch.budget_reached,
        "budget_reached_at": launch.budget_reached_at,
    }


def limit_notes(launch: LaunchRecord, counts: dict[str, int]) -> list[str]:
    """Why the batch runs fewer VMs than it has experiments, in words: "running 2 of 3 at once:
    quota INSTANCES exceeded at 12:03 UTC", "4 queued: at most 2 at once (max_parallel 2)", and
    whether the VM-hour budget stopped it."""
    notes = []
    live = sum(counts.get(s, 0) for s in LIVE)
    if launch.parallelism_lowered and launch.parallelism is not None:
        # Shown, never decided on: the quota's name is in Compute's message, the decision was on its code.
        found = _QUOTA_METRIC.search(launch.parallelism_lowered)
        what = f"quota {found.group(1)} exceeded" if found else launch.parallelism_lowered.split(": ", 1)[-1]
        asked = launch.parallelism_launched or launch.parallelism
        when = _clock(launch.parallelism_lowered_at)
        notes.append(f"running {launch.parallelism} of {asked} at once: {what} at {when} ({live} live now)")
    if counts.get("queued") and launch.parallelism is not None:
        notes.append(f"{counts['queued']} queued: at most {launch.parallelism} at once ({launch.parallelism_reason})")
    if launch.max_vm_hours is not None:
        if launch.budget_reached:
            when = _clock(launch.budget_reached_at)
            notes.append(f"budget of {launch.max_vm_hours:g} VM-hours reached at {when}: {launch.budget_reached}")
        else:
            notes.append(f"budget: {launch.max_vm_hours:g} VM-hours")
    return notes
