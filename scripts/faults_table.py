"""Print the fault-injection figures table from the rows the fault suite wrote.

One row per scenario (the latest run of each): runs, outcomes, leaked instances, leaked groups,
lost outputs. Every leak and loss column must be 0; the exit code says whether it is.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
REPORT = Path(os.environ.get("SINERGYM_FAULTS_REPORT", REPO / "bench-results" / "faults.jsonl"))


def main() -> int:
    if not REPORT.exists():
        print(f"no fault-suite results in {REPORT}: run `make faults`")
        return 1
    latest: dict[str, dict[str, Any]] = {}  # one JSON row per scenario, as the fault suite wrote it
    for line in REPORT.read_text().splitlines():
        row = json.loads(line)
        latest[row["scenario"]] = row
    headers = ("scenario", "runs", "outcomes", "leaked instances", "leaked MIGs", "lost outputs")
    rows = [
        (
            str(r["scenario"]),
            str(r["runs"]),
            ", ".join(f"{v} {k}" for k, v in sorted(r["outcomes"].items())),
            str(r["leaked_instances"]),
            str(r["leaked_migs"]),
            str(r["lost_outputs"]),
        )
        for r in latest.values()
    ]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    print(line.format(*headers))
    print(line.format(*("-" * w for w in widths)))
    for row in rows:
        print(line.format(*row))
    bad = [r for r in latest.values() if r["leaked_instances"] or r["leaked_migs"] or r["lost_outputs"]]
    total = sum(int(str(r["runs"])) for r in latest.values())
    print(f"\n{len(latest)} scenarios, {total} runs; leaks and losses: {'NONE' if not bad else len(bad)}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
