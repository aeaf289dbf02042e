"""The soak's ending: a table (faults by kind, experiments by end state, retries, p95 latencies, the
checks made, the violations) and, as the very last line, one JSON object a script can read."""

from __future__ import annotations

import json
import statistics
from collections import Counter
from typing import Any

from tests.soak.checker import Checker, Observation
from tests.soak.ledger import Ledger
from tests.soak.plan import KINDS, Fault, digest, most_overlapping
from tests.soak.workload import Workload


def p95(values: list[float]) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=20, method="inclusive")[-1]


def latencies(obs: Observation | None) -> dict[str, list[float]]:
    """Seconds between the steps the records keep, per experiment (and per batch for the teardown)."""
    out: dict[str, list[float]] = {"dispatch -> trainer running": [], "trainer end -> VM deletion asked": [],
                                   "experiment end -> VM deletion asked": [], "batch end -> teardown done": [],
                                   "launch record -> launched": []}  # fmt: skip
    if obs is None:
        return out
    for rec in obs.records.values():
        if rec.get("dispatched_at") and rec.get("running_at"):
            out["dispatch -> trainer running"].append(rec["running_at"] - rec["dispatched_at"])
        if rec.get("trainer_finished_at") and rec.get("delete_requested_at") and rec.get("state") == "succeeded":
            out["trainer end -> VM deletion asked"].append(rec["delete_requested_at"] - rec["trainer_finished_at"])
        if rec.get("finished_at") and rec.get("delete_requested_at") and rec.get("attempts"):
            out["experiment end -> VM deletion asked"].append(rec["delete_requested_at"] - rec["finished_at"])
    for bid, fin in obs.finalized.items():
        ends = [r.get("finished_at") or 0 for (b, _), r in obs.records.items() if b == bid]
        if fin.get("finished_at") and ends:
            out["batch end -> teardown done"].append(fin["finished_at"] - max(ends))
    for launch in obs.launches.values():
        if launch.get("launched_at"):
            out["launch record -> launched"].append(launch["launched_at"] - launch["created_at"])
    return out


def retries(obs: Observation | None, workload: Workload, ledger: Ledger) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for rec in obs.records.values() if obs is not None else []:
        counts["extra attempts (a VM boot claimed again)"] += max(0, int(rec.get("attempts") or 0) - 1)
        counts["preemptions and infra losses"] += int(rec.get("preemptions") or 0)
        counts["trainer failures"] += int(rec.get("failures") or 0)
        for event in rec.get("history") or []:
            if event.get("event") in ("requeued", "moved", "sweeper:retried"):
                counts[str(event["event"])] += 1
    counts["submissions retried"] = sum(max(0, b.submit_attempts - 1) for b in ledger.batches.values())
    counts["--wait publishers killed"] = workload.killed_waits
    return dict(counts)


def summary(
    ledger: Ledger, checker: Checker, workload: Workload, planned: list[Fault], obs: Observation | None, minutes: float
) -> dict[str, Any]:
    injected = ledger.injected
    ours = {b.batch_id for b in ledger.known_batches()}
    states = Counter(str(r.get("state")) for (bid, _), r in (obs.records.items() if obs else []) if bid in ours)
    return {
        "seed": ledger.seed,
        "minutes": minutes,
        "faults": len(injected),
        "fault_kinds": dict(sorted(Counter(f.kind for f in injected).items())),
        "experiments": {"total": sum(states.values()), **dict(sorted(states.items()))},
        "checks": {"ticks": checker.ticks, **dict(sorted(checker.checks.items()))},
        "violations": [
            {"t": v.t, "invariant": v.invariant, "detail": v.detail, "faults": v.faults, "seed": ledger.seed}
            | ({"batch": v.batch} if v.batch else {})
            | ({"index": v.index} if v.index is not None else {})
            for v in ledger.violations
        ],
        "plan": digest(planned),
        "overlapping": most_overlapping([(f.at, f.end) for f in injected]),
        "skipped": len(ledger.skipped),
        "injected": [[f.number, f.kind, f.at] for f in injected],
        "batches": len(ours),
    }


def table(result: dict[str, Any], ledger: Ledger, checker: Checker, workload: Workload, planned: list[Fault],
          obs: Observation | None) -> str:  # fmt: skip
    lines = [f"soak seed {result['seed']}: {result['minutes']:g} minutes, {result['batches']} batches, "
             f"{result['experiments'].get('total', 0)} experiments, plan {result['plan']}"]  # fmt: skip
    lines.append("")
    lines.append(f"{'fault':<26}{'planned':>8}{'injected':>9}{'skipped':>8}")
    plan_counts = Counter(f.kind for f in planned)
    done = Counter(f.kind for f in ledger.injected)
    skipped = Counter(s["kind"] for s in ledger.skipped)
    for kind in KINDS:
        if plan_counts[kind]:
            lines.append(f"{kind:<26}{plan_counts[kind]:>8}{done[kind]:>9}{skipped[kind]:>8}")
    lines.append(f"{'total':<26}{len(planned):>8}{len(ledger.injected):>9}{len(ledger.skipped):>8}"
                 f"   (at most {result['overlapping']} at once)")  # fmt: skip
    lines.append("")
    lines.append("experiments by end state: " + ", ".join(
        f"{k} {v}" for k, v in result["experiments"].items() if k != "total") or "none")  # fmt: skip
    lines.append("retries: " + ", ".join(f"{k} {v}" for k, v in retries(obs, workload, ledger).items()))
    lines.append("")
    lines.append(f"{'latency':<40}{'n':>5}{'p50 s':>9}{'p95 s':>9}")
    for name, values in latencies(obs).items():
        if values:
            lines.append(f"{name:<40}{len(values):>5}{statistics.median(values):>9.2f}{p95(values) or 0:>9.2f}")
    lines.append("")
    checks = ", ".join(f"{k} {v}" for k, v in result["checks"].items())
    lines.append(f"checks: {checks} (ticks unreadable: {checker.unreadable})")
    lines.append(f"violations: {len(result['violations'])}")
    for v in result["violations"]:
        where = f" {v.get('batch', '')}/{v.get('index', '')}" if "batch" in v else ""
        lines.append(
            f"  t={v['t']:+.1f}s {v['invariant']}{where}: {v['detail'][:300]} [faults: {', '.join(v['faults']) or 'none'}]"
        )
    return "\n".join(lines)


def last_line(result: dict[str, Any]) -> str:
    return json.dumps(result, separators=(",", ":"))
