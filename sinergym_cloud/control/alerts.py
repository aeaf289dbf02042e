"""What on-call staff are told, and when: the labels of the points that fire the alert policies
(infra/monitoring/alert_policies.json renders them into each alert's documentation).

- **A batch finished** (once, from its teardown): counts by state, VM-hours and estimated cost, each
  failed experiment with its reason and last log line, and the commands to run.
- **An experiment failed** (once per failed experiment): its reason, its last log line, the commands.
- **A batch is failing** (at most once per batch): its failed share passed
  ``SINERGYM_FAILURE_RATE_THRESHOLD`` while it runs, so on-call hears of it now, not at its end.

Cloud Monitoring takes one point per time series per 5 s at most. The first two write one point per
series (the batch id, or the experiment, is a label). The third is decided from the batch's records
after each failure, and several experiments may fail in the same second: a create-only object
(``names.failing_object``) is the decision, so exactly one function writes its one point.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from sinergym_cloud import names, text
from sinergym_cloud.gcp import metrics
from sinergym_cloud.gcp.runtime import Runtime
from sinergym_cloud.records import BatchSummary, ExperimentRecord, Failed, LaunchRecord, summarise

log = logging.getLogger(__name__)

LABEL_LIMIT = 1024  # characters of a Monitoring label value


def cost(hours: float, price: float) -> str:
    return f"{hours * price:.2f} USD (at {price:g} USD per VM-hour)" if price > 0 else "not estimated"


def failures_text(failures: list[Failed], limit: int = LABEL_LIMIT) -> str:
    """Each failed experiment (index, reason, last log line) in one label, cut to fit it."""
    if not failures:
        return "none"
    parts = []
    for f in failures:
        part = f"#{f.index} {text.clean(f.reason, 200) or 'no reason given'}"
        if f.last_line:
            part += f" (last log line: {text.clean(f.last_line, 200)})"
        parts.append(part)
    joined = "; ".join(parts)
    return joined if len(joined) <= limit else joined[: limit - 30].rstrip() + f" ... {len(failures)} in all"


ALWAYS_COUNTED = ("succeeded", "failed", "cancelled")


def counts_text(counts: dict[str, int]) -> str:
    """``2 succeeded, 1 failed, 0 cancelled`` (then any other state that has experiments)."""
    order = [*ALWAYS_COUNTED, *sorted(s for s in counts if s not in ALWAYS_COUNTED and counts[s])]
    return ", ".join(f"{counts.get(state, 0)} {state}" for state in order)


def batch_labels(launch: LaunchRecord, summary: BatchSummary, price: float, note: str = "") -> dict[str, Any]:
    """Ten labels, Cloud Monitoring's limit per metric descriptor (the six the metric has had since
    its first version, so a deployed descriptor takes the new ones beside them)."""
    c = summary.counts
    if c.get("pruned"):
        note = f"{c['pruned']} pruned by the sweep's pruner. {note}"
    return {
        "batch_id": launch.batch_id,
        "group": launch.group,
        "succeeded": c.get("succeeded", 0),
        "failed": c.get("failed", 0),
        "cancelled": c.get("cancelled", 0),
        "note": note.strip(),
        "vm_hours": f"{summary.vm_hours:.3f}",
        "cost": cost(summary.vm_hours, price),
        "failures": failures_text(summary.failures),
        "results_path": f"{launch.results_bucket}/{launch.batch_id}",
    }


def batch_finished(rt: Runtime, launch: LaunchRecord, summary: BatchSummary, note: str) -> None:
    metrics.batch_finished(rt.clients, batch_labels(launch, summary, rt.settings.vm_hour_price, note))


def experiment_failed(rt: Runtime, rec: ExperimentRecord) -> None:
    last = next((line for line in reversed(rec.log_tail) if line.strip()), "")
    metrics.experiment_failed(
        rt.clients,
        {
            "batch_id": rec.batch_id,
            "experiment": rec.name,
            "index": rec.index,
            "reason": text.clean(rec.reason, 500) or "unknown",
            "last_line": text.clean(last, 500) or "none",
        },
    )


def check_failure_rate(rt: Runtime, batch_id: str, listing: dict[int, tuple[dict[str, str], float | None]]) -> bool:
    """After an experiment failed: page at once if the batch's failed share passed the threshold,
    once per batch (the create-only decision coalesces failures that come together). True if this
    call paged."""
    threshold = rt.settings.failure_rate_threshold
    if not listing or threshold >= 1:
        return False
    summary = summarise(listing, time.time())
    failed = summary.counts.get("failed", 0)
    rate = failed / len(listing)
    if rate <= threshold:
        return False
    decision = {"failed": failed, "experiments": len(listing), "rate": rate, "threshold": threshold}
    if not rt.state.create(names.failing_object(batch_id), {**decision, "at": time.time()}):
        return False  # another function paged for this batch already
    labels = {
        "batch_id": batch_id,
        "failed": failed,
        "experiments": len(listing),
        "rate": f"{rate:.0%}",
        "threshold": f"{threshold:.0%}",
        "counts": counts_text(summary.counts),
        "vm_hours": f"{summary.vm_hours:.3f}",
        "cost": cost(summary.vm_hours, rt.settings.vm_hour_price),
        "failures": failures_text(summary.failures),
    }
    metrics.batch_failing(rt.clients, labels, rate)
    log.warning("batch %s: %d of %d experiments failed (over %.0f%%): paged", batch_id, failed, len(listing),
                threshold * 100)  # fmt: skip
    return True
