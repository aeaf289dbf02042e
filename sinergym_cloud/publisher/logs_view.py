"""``python publisher.py logs BATCH_ID [INDEX] [--follow] [--since ...]``: an experiment's log, read from
the results bucket, where the VM agent stores it in chunks while the experiment trains
(sinergym_cloud/vm/logship.py, gcp/logs.py). It outlives the VM.

Each boot of the experiment's VM (a retry, a resume after a preemption) has its own log: the VM's
startup log, then the trainer's stdout and stderr. They are printed oldest first, a header before
each boot when there are several. ``--follow`` prints new chunks as they are stored (a few seconds
apart) and returns once the experiment has ended and its last chunk is stored. ``--since`` keeps the
chunks written after a time (a chunk is a few seconds of output: the granularity).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from sinergym_cloud import names
from sinergym_cloud.control import batches
from sinergym_cloud.errors import BatchNotFound
from sinergym_cloud.gcp import logs
from sinergym_cloud.gcp.runtime import Runtime
from sinergym_cloud.records import ExperimentRecord

POLL_SECONDS = 2.0
# After the experiment ended, how long --follow waits for its boot's final chunk (the VM may be
# deleted before its shipper stored what the trainer printed after its completion).
END_GRACE_SECONDS = 15.0


@dataclass
class Cursor:
    """What one experiment's log has printed so far (chunk names), and the boot it is on."""

    rec: ExperimentRecord
    seen: set[str] = field(default_factory=set)
    boot: str = ""
    ended_at: float | None = None


def experiments(rt: Runtime, batch_id: str, index: int | None) -> tuple[str, list[ExperimentRecord]]:
    """(results bucket, the experiment records asked for); BatchNotFound, or ValueError for an index
    the batch has not."""
    launch = batches.read_launch(rt, batch_id)
    if launch is None:
        raise BatchNotFound(batch_id, f"gs://{rt.settings.state_bucket}")
    wanted = [index] if index is not None else list(range(launch.experiments))
    if index is not None and not 0 <= index < launch.experiments:
        raise ValueError(f"batch {batch_id} has experiments 0 to {launch.experiments - 1}, not {index}")
    found = []
    for i in wanted:
        doc = rt.state.read(names.experiment_object(batch_id, i))
        if doc is not None:
            found.append(ExperimentRecord.model_validate(doc.data))
    return launch.results_bucket, found


def _refresh(rt: Runtime, rec: ExperimentRecord) -> ExperimentRecord:
    doc = rt.state.read(names.experiment_object(rec.batch_id, rec.index))
    return ExperimentRecord.model_validate(doc.data) if doc is not None else rec


def show(
    rt: Runtime,
    batch_id: str,
    index: int | None,
    *,
    follow: bool = False,
    since: float | None = None,
    out: TextIO = sys.stdout,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Print the log(s); with ``follow``, until each experiment asked for has ended. Returns how many
    chunks were printed."""
    bucket_name, recs = experiments(rt, batch_id, index)
    bucket = rt.clients.storage.bucket(bucket_name)
    cursors = [Cursor(rec) for rec in recs]
    several = len(cursors) > 1
    printed = 0
    while True:
        for cursor in cursors:
            printed += _print_new(bucket, cursor, since, several, out)
        if not follow:
            break
        now = time.time()
        open_ = []
        for cursor in cursors:
            cursor.rec = _refresh(rt, cursor.rec)
            if cursor.rec.terminal and cursor.ended_at is None:
                cursor.ended_at = now
            if not _done(bucket, cursor, now):
                open_.append(cursor)
        if not open_:
            # One last look: chunks stored between the listing and the record saying it ended.
            for cursor in cursors:
                printed += _print_new(bucket, cursor, since, several, out)
            break
        cursors_left = {id(c) for c in open_}
        cursors = [c for c in cursors if id(c) in cursors_left] if several else cursors
        sleep(POLL_SECONDS)
    if printed == 0 and not follow:
        names_ = ", ".join(f"{r.index} ({r.state})" for r in recs)
        print(f"no log stored yet for experiment(s) {names_} of batch {batch_id}", file=sys.stderr)
    return printed


def _done(bucket: Any, cursor: Cursor, now: float) -> bool:
    """Ended, and its latest boot's final chunk printed (or the grace for it is over)."""
    if cursor.ended_at is None:
        return False
    found = logs.boots(bucket, cursor.rec.batch_id, cursor.rec.name)
    if found and found[-1].final and all(c.name in cursor.seen for c in found[-1].chunks):
        return True
    return not found or now - cursor.ended_at > END_GRACE_SECONDS


def _print_new(bucket: Any, cursor: Cursor, since: float | None, several: bool, out: TextIO) -> int:
    rec = cursor.rec
    found = logs.boots(bucket, rec.batch_id, rec.name)
    printed = 0
    for boot in found:
        fresh = [c for c in boot.chunks if c.name not in cursor.seen]
        for chunk in fresh:
            cursor.seen.add(chunk.name)
            if since is not None and (chunk.last or chunk.first or 0) < since:
                continue
            text = logs.read(bucket, chunk)
            key = f"{boot.attempt}-{boot.boot_id}"
            if key != cursor.boot and (len(found) > 1 or several):
                who = f"experiment {rec.index} ({rec.name}), " if several else ""
                out.write(f"==> {who}boot {boot.boot_id} (attempt {boot.attempt}) <==\n")
            cursor.boot = key
            if text:
                out.write(text if text.endswith("\n") else text + "\n")
            out.flush()
            printed += 1
    return printed
