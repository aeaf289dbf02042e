"""Drawing a batch in the terminal: the status table (readable at 80 columns) and ``wait``'s live view."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from sinergym_cloud import names
from sinergym_cloud.errors import BatchNotFound
from sinergym_cloud.publisher import views
from sinergym_cloud.publisher.arguments import EXIT_FAILED, EXIT_OK
from sinergym_cloud.publisher.views import BatchView, ExperimentView
from sinergym_cloud.text import markup as m

if TYPE_CHECKING:
    from rich.table import Table

    from sinergym_cloud.gcp.runtime import Runtime


def short_run_id(run_id: str | None) -> str:
    """An MLflow run id as the status table shows it (the full id and link are in --json and the report)."""
    return run_id[:8] if run_id else "-"


def render_status(info: BatchView, console: Any = None) -> None:
    """The status of a batch, readable at 80 columns: short run ids, the long links elsewhere."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    counts = ", ".join(f"{v} {k}" for k, v in sorted(info.counts.items()))
    zones = ", ".join(info.zones or [info.zone])
    console.print(f"[bold]batch {m(info.batch_id)}[/]: {m(info.status)} ({m(counts)}) zone {m(zones)}")
    if info.retry_of:
        rerun = ", ".join(str(i) for i in info.retry_of.get("experiments", []))
        console.print(m(f"  a retry of batch {info.retry_of.get('batch_id')} (its experiment(s) {rerun})"))
    if info.error:
        console.print(f"  [red]{m(info.error, 1000)}[/]")
    for note in info.limit_notes:
        console.print(f"  [yellow]{m(note, 1000)}[/]")
    table = Table(pad_edge=False, box=None, header_style="bold")
    table.add_column("#", no_wrap=True)
    table.add_column("experiment", overflow="fold", ratio=3)
    table.add_column("state", no_wrap=True)
    table.add_column("VM", no_wrap=True)
    table.add_column("tries", no_wrap=True)
    table.add_column("run", no_wrap=True)
    table.add_column("note", overflow="fold", ratio=2)
    for e in info.experiments:
        note = e.reason or "; ".join(e.instance_errors)
        if e.moved_from:  # zone failover: where it runs now, and the zones it left
            note = f"in {e.zone} (moved from {', '.join(e.moved_from)})" + (f"; {note}" if note else "")
        environment = str(e.environment).removeprefix("Eplus-")
        table.add_row(
            m(e.index),
            m(f"{e.algorithm} {environment} s{e.seed}"),
            m(e.state),
            m(e.instance_status or "-"),
            m(f"{e.attempts} p{e.preemptions} f{e.failures}"),
            m(short_run_id(e.mlflow_run_id)),
            m(note),
        )
    console.print(table)
    console.print("[dim]run: MLflow run id (full ids and links: status --json, or the report)[/]")
    failed = [e for e in info.experiments if e.state == "failed"]
    for e in failed:
        console.print(f"[red]#{m(e.index)} failed[/]: {m(e.reason or 'no reason given', 1000)}")
        for line in e.log_tail:
            console.print(f"    [dim]{m(line, 300)}[/]")
    if failed:
        console.print(
            m(
                f"whole logs: python publisher.py logs {info.batch_id} INDEX; "
                f"rerun them: python publisher.py retry {info.batch_id} --failed"
            ),
            style="dim",
        )
    console.print(
        m(
            f"outputs: {info.results}   MLflow experiment: {info.mlflow_experiment}"
            + (f" ({info.mlflow_experiment_url})" if info.mlflow_experiment_url else "")
        )
    )
    for g in info.groups:
        where = f" in {g.zone}" if g.zone else ""
        state = f"exists, {g.instances} instance(s)" if g.exists else "deleted"
        console.print(m(f"group {g.name}{where}: {state}"))
    for a in info.alerts:
        console.print(m(f"alert raised: {a.metric} {a.labels} at {a.time}", 2000))
    if info.sweep:
        from sinergym_cloud.publisher import sweep_view

        sweep_view.print_trials(console, info.sweep)


def print_json(info: BatchView) -> None:
    """The ``--json`` form of a batch's status."""
    print(json.dumps(info.as_json(), indent=2, default=str))


WAIT_POLL_SECONDS = 2.0
WAIT_COMPUTE_EVERY = 5  # polls: Compute is asked every 10 s


def wait(rt: Runtime, batch_id: str, timeout: float, as_json: bool = False) -> int:
    """Live progress until the batch ends. Exit code 0 only if every experiment succeeded."""
    from rich.console import Console
    from rich.live import Live

    console = Console(stderr=as_json)
    deadline = time.monotonic() + timeout
    started = time.time()
    info = _first_status(rt, batch_id, deadline=min(deadline, time.monotonic() + 120))
    polls = 0
    with Live(_progress(rt, info, started), console=console, refresh_per_second=2, transient=False) as live:
        while True:
            finished = info.status in ("finished", "cancelled", "failed") and info.done
            if finished or time.monotonic() > deadline:
                break
            time.sleep(WAIT_POLL_SECONDS)
            polls += 1
            # The records every poll; Compute (a listing per group, against the project's per-minute
            # list quota) every WAIT_COMPUTE_EVERY polls, its statuses carried between.
            if polls % WAIT_COMPUTE_EVERY == 0:
                info = views.batch_status(rt, batch_id, with_alerts=False)
            else:
                info = views.batch_status(rt, batch_id, with_compute=False, with_alerts=False).with_compute_of(info)
            live.update(_progress(rt, info, started))
    info = views.batch_status(rt, batch_id, with_links=True)
    if as_json:
        print_json(info)
    else:
        render_status(info)
    if not info.done:
        console.print(f"[yellow]gave up waiting after {timeout:.0f}s; the batch goes on[/]")
        return EXIT_FAILED
    ok = all(e.state in ("succeeded", "pruned") for e in info.experiments)  # a pruned trial did its part
    return EXIT_OK if ok else EXIT_FAILED


def _progress(rt: Runtime, info: BatchView, started: float) -> Table:
    """``wait``'s table: one row per experiment, with its episode from the trainer's heartbeat."""
    from rich.table import Table

    t = Table(
        title=m(f"batch {info.batch_id}: {info.status}  ({time.time() - started:.0f}s)"),
        caption=m("; ".join(info.limit_notes)) or None,
    )
    for column in ("#", "experiment", "instance", "state", "episode", "elapsed"):
        t.add_column(column)
    for e in info.experiments:
        since = e.running_at or e.created_at
        end = e.finished_at or time.time()
        t.add_row(
            m(e.index),
            m(f"{e.algorithm} {e.environment} s{e.seed}"),
            m(f"{e.instance} ({e.instance_status or '-'})"),
            m(e.state),
            m(_episode(rt, info, e)),
            f"{end - since:.0f}s",
        )
    return t


def _first_status(rt: Runtime, batch_id: str, deadline: float) -> BatchView:
    """The batch's status, waiting a little for launch to record a batch that was just published."""
    while True:
        try:
            return views.batch_status(rt, batch_id, with_alerts=False)
        except BatchNotFound:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _episode(rt: Runtime, info: BatchView, e: ExperimentView) -> str:
    total = e.episodes
    if e.state == "succeeded":
        return f"{total}/{total}"
    if e.state != "running":
        return "-"
    try:
        blob = rt.clients.storage.bucket(info.results_bucket).get_blob(
            names.heartbeat_object(info.batch_id, e.name), timeout=5
        )
        beat = json.loads(blob.download_as_bytes(timeout=5)) if blob else {}
    except Exception:  # noqa: BLE001 - progress display only
        beat = {}
    return f"{beat.get('episodes', 0)}/{total}" if beat else f"?/{total}"
