"""``python publisher.py list``: every batch of the deployment, one line each.

Read from the batch index (control/batch_index.py): one listing of ``index/`` in the state bucket
gives every batch's summary line from its objects' metadata, however many batches ended; only a
batch the index calls active costs one more listing (its experiments' states and VM-hours so far).
``--reindex`` indexes batches made before the index existed (a read of each one's records, once).
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from sinergym_cloud import names
from sinergym_cloud.control import batch_index, batches
from sinergym_cloud.gcp.runtime import Runtime
from sinergym_cloud.records import LIVE, TERMINAL, FinalizeRecord, summarise
from sinergym_cloud.text import markup as m

STATES = ("running", "queued", "ended")


@dataclass(frozen=True)
class BatchLine:
    """One batch as ``list`` shows it (``--json`` prints these fields)."""

    batch_id: str
    state: str  # running (a VM asked for or working), queued (experiments wait, none runs), ended
    submitted_by: str
    submitted_at: float | None
    experiments: int
    counts: dict[str, int]
    vm_hours: float
    mlflow_experiment: str
    results: str
    outcome: str = ""  # an ended batch's: finished, cancelled or failed
    finished_at: float | None = None
    retry_of: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc.pop("extra")
        return doc


def live_state(counts: dict[str, int]) -> str:
    """An active batch's state from its experiments': running if one holds a VM slot, ended if every
    one has ended (its teardown is under way), else queued."""
    if any(counts.get(s) for s in LIVE):
        return "running"
    if counts and all(s in TERMINAL for s, n in counts.items() if n):
        return "ended"
    return "queued"


def lines(rt: Runtime, *, state: str | None = None, since: float | None = None) -> list[BatchLine]:
    """Every batch (newest first), optionally only those in ``state`` or submitted after ``since``."""
    now = time.time()
    found = []
    for entry in batch_index.read_listing(rt):
        submitted = entry.get("submitted_at")
        if since is not None and (submitted is None or submitted < since):
            continue
        common = {
            "batch_id": entry["batch_id"],
            "submitted_by": entry.get("submitted_by", ""),
            "submitted_at": submitted,
            "experiments": entry["experiments"],
            "mlflow_experiment": entry.get("mlflow_experiment", ""),
            "results": entry.get("results", ""),
            "retry_of": entry.get("retry_of", ""),
        }
        if entry.get("status") == "ended":
            line = BatchLine(
                state="ended",
                counts=entry["counts"],
                vm_hours=float(entry.get("vm_hours") or 0.0),
                outcome=entry.get("outcome", ""),
                finished_at=entry.get("finished_at"),
                **common,
            )
        else:
            summary = summarise(batches.experiment_listing(rt, entry["batch_id"]), now)
            line = BatchLine(state=live_state(summary.counts), counts=summary.counts, vm_hours=summary.vm_hours,
                             **common)  # fmt: skip
        if state is None or line.state == state:
            found.append(line)
    found.sort(key=lambda line: line.submitted_at or 0.0, reverse=True)
    return found


def reindex(rt: Runtime) -> list[str]:
    """Index every batch of the state bucket that has a launch record and no index object (batches
    from before the index). Returns the ids indexed."""
    indexed = {e["batch_id"] for e in batch_index.read_listing(rt)}
    iterator = rt.clients.storage.list_blobs(rt.settings.state_bucket, prefix="batches/", delimiter="/", timeout=60)
    for _ in iterator:  # the prefixes of a delimited listing arrive as its pages are read
        pass
    made = []
    for prefix in sorted(iterator.prefixes):
        batch_id = prefix.removeprefix("batches/").rstrip("/")
        if batch_id in indexed:
            continue
        launch = batches.read_launch(rt, batch_id)
        if launch is None:
            continue
        batch_index.launched(rt, launch)
        claim = rt.state.read(names.finalize_object(batch_id))
        listing = batches.experiment_listing(rt, batch_id)
        states = {meta.get("state", "") for meta, _ in listing.values()}
        if claim is not None and FinalizeRecord.model_validate(claim.data).alerted and states <= set(TERMINAL):
            done = FinalizeRecord.model_validate(claim.data)
            outcome = launch.status if launch.status in ("cancelled", "failed") else "finished"
            summary = summarise(listing, time.time())
            batch_index.finished(rt, launch, summary, outcome, done.finished_at or launch.created_at)
        made.append(batch_id)
    return made


def _when(at: float | None) -> str:
    return dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%d %H:%M") if at else "-"


def counts_text(counts: dict[str, int]) -> str:
    order = ["succeeded", "failed", "cancelled", "pruned", "running", "starting", "pending", "queued"]
    known = [s for s in order if counts.get(s)] + sorted(s for s in counts if s not in order and counts[s])
    return ", ".join(f"{counts[s]} {s}" for s in known) or "-"


def render(found: list[BatchLine], console: Any = None) -> None:
    """The table ``list`` prints (readable at 100 columns; the ids and addresses whole in --json)."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    table = Table(pad_edge=False, box=None, header_style="bold")
    for column, opts in (
        ("batch", {"overflow": "fold", "ratio": 3}),
        ("state", {"no_wrap": True}),
        ("experiments", {"overflow": "fold", "ratio": 3}),
        ("VM-h", {"no_wrap": True, "justify": "right"}),
        ("submitted (UTC)", {"no_wrap": True}),
        ("by", {"overflow": "fold", "ratio": 2}),
        ("MLflow experiment", {"overflow": "fold", "ratio": 3}),
    ):
        table.add_column(column, **opts)
    for line in found:
        state = line.state + (f" ({line.outcome})" if line.outcome and line.outcome != "finished" else "")
        batch = line.batch_id + (f" (retry of {line.retry_of})" if line.retry_of else "")
        table.add_row(
            m(batch),
            m(state),
            m(f"{line.experiments}: {counts_text(line.counts)}"),
            f"{line.vm_hours:.2f}",
            m(_when(line.submitted_at)),
            m(line.submitted_by or "-"),
            m(line.mlflow_experiment),
        )
    console.print(table)
    console.print(m(f"{len(found)} batch(es); details: python publisher.py status BATCH_ID"), style="dim")
