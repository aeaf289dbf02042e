"""Fault-injection suite plumbing: how many runs, and the figures table each scenario feeds.

``make test`` runs every scenario with few runs; ``make faults`` (SINERGYM_FAULTS_FULL=1) runs them
all with the full counts and prints the table (scripts/faults_table.py) from the rows written here.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from sinergym_cloud import names
from sinergym_cloud.contracts import Batch
from tests.conftest import REPO, Cloud
from trainer import storage as storage_check

FULL = os.environ.get("SINERGYM_FAULTS_FULL") == "1"
REPORT = Path(os.environ.get("SINERGYM_FAULTS_REPORT", REPO / "bench-results" / "faults.jsonl"))


def runs(fast: int, full: int) -> int:
    return full if FULL else fast


def leaks(cloud: Cloud, batches: list[Batch]) -> tuple[int, int]:
    """(instances, groups) still alive in the Compute emulator for these batches."""
    state = cloud.emulator("state")
    prefixes = {names.mig_name(b.group_name, b.batch_id) for b in batches}
    instances = sum(1 for v in state["instances"].values() if v["mig"] in prefixes)
    groups = sum(1 for key in state["migs"] if key.split("/", 1)[1] in prefixes)
    return instances, groups


def lost_outputs(cloud: Cloud, info: dict[str, Any]) -> int:
    """Succeeded experiments with remote_store whose outputs do not match their manifest."""
    rt = cloud.runtime()
    bucket = rt.clients.storage.bucket(rt.settings.results_bucket)
    lost = 0
    for e in info["experiments"]:
        if e["state"] == "succeeded" and e["outputs"]:
            prefix = names.results_prefix(info["batch_id"], e["name"])
            lost += bool(storage_check.verify_manifest(bucket, prefix))
    return lost


@pytest.fixture
def record() -> Any:
    """Append one scenario's figures to the table's data file."""

    def write(
        scenario: str, outcomes: Counter[str], leaked_instances: int = 0, leaked_migs: int = 0, lost: int = 0
    ) -> None:
        REPORT.parent.mkdir(parents=True, exist_ok=True)
        row = {
            "scenario": scenario,
            "runs": sum(outcomes.values()),
            "outcomes": dict(outcomes),
            "leaked_instances": leaked_instances,
            "leaked_migs": leaked_migs,
            "lost_outputs": lost,
            "at": time.time(),
            "full": FULL,
        }
        with REPORT.open("a") as f:
            f.write(json.dumps(row) + "\n")

    return write
