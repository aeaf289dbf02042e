"""The batch index: one object per batch (``index/<batch>``), its summary in its custom metadata.

``python publisher.py list`` is then one listing of ``index/``, however many batches ended, never a
read per batch. Each object is written twice: created at launch (who sent the batch, when, how many
experiments, its MLflow experiment) and rewritten at the batch's end by its one-time teardown
(counts, VM-hours, when it ended). Cloud Storage takes about one write per second to one object name:
two writes minutes apart, each by the one function that holds the moment (launch's claim, the
teardown's), never contend. A running batch's live counts come from its experiments' own listing
(``batches.experiment_listing``), read only for the batches the index says are still active.
"""

from __future__ import annotations

import logging
from typing import Any

from sinergym_cloud import names, text
from sinergym_cloud.gcp.runtime import Runtime
from sinergym_cloud.records import BatchSummary, LaunchRecord

log = logging.getLogger(__name__)


def fields(launch: LaunchRecord) -> dict[str, Any]:
    """What the index says of a batch from its launch record."""
    retry = launch.retry_of or {}
    return {
        "batch_id": launch.batch_id,
        "status": "active",
        "submitted_by": text.clean(launch.submitted_by, 200),
        "submitted_at": launch.submitted_at or launch.created_at,
        "experiments": launch.experiments,
        "mlflow_experiment": launch.mlflow_experiment,
        "group": launch.group,
        "zone": launch.zone,
        "results": f"gs://{launch.results_bucket}/{launch.batch_id}/",
        "retry_of": retry.get("batch_id", ""),
    }


def metadata(doc: dict[str, Any]) -> dict[str, str]:
    """The index object's custom metadata: every field as a string (counts as ``state=n,...``)."""
    out = {}
    for key, value in doc.items():
        if value is None or value == "":
            continue
        if key == "counts":
            out[key] = ",".join(f"{k}={v}" for k, v in sorted(value.items()))
        elif isinstance(value, float):
            out[key] = f"{value:.6f}".rstrip("0").rstrip(".")
        else:
            out[key] = str(value)
    return out


def parse_counts(value: str) -> dict[str, int]:
    counts = {}
    for part in filter(None, value.split(",")):
        state, _, n = part.partition("=")
        if n.isdigit():
            counts[state] = int(n)
    return counts


def launched(rt: Runtime, launch: LaunchRecord) -> None:
    """Create the batch's index object (once: a redelivery finds it made)."""
    doc = fields(launch)
    if rt.state.create(names.index_object(launch.batch_id), doc, metadata(doc)):
        log.info("batch %s indexed", launch.batch_id)


def finished(rt: Runtime, launch: LaunchRecord, summary: BatchSummary, outcome: str, finished_at: float) -> None:
    """Rewrite the batch's index object with its end: counts, VM-hours, outcome, when."""
    doc = {
        **fields(launch),
        "status": "ended",
        "outcome": outcome,
        "finished_at": finished_at,
        "counts": summary.counts,
        "vm_hours": round(summary.vm_hours, 5),
    }
    rt.state.put(names.index_object(launch.batch_id), doc, metadata=metadata(doc))


def read_listing(rt: Runtime) -> list[dict[str, Any]]:
    """Every batch's index entry, from one listing: the metadata of each object, typed back."""
    entries = []
    for name, meta, _ in rt.state.listing(names.INDEX_PREFIX):
        entry: dict[str, Any] = dict(meta)
        entry["batch_id"] = meta.get("batch_id") or name.removeprefix(names.INDEX_PREFIX)
        for key in ("submitted_at", "finished_at", "vm_hours"):
            if key in entry:
                try:
                    entry[key] = float(entry[key])
                except ValueError:
                    entry.pop(key)
        entry["experiments"] = int(meta["experiments"]) if meta.get("experiments", "").isdigit() else 0
        entry["counts"] = parse_counts(meta.get("counts", ""))
        entries.append(entry)
    return entries
