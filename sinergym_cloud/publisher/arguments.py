"""The publisher's flags, exit codes and usage errors, shared by every subcommand.

Submitting takes the original cloud_manager.py flags (``--project_id/-id``, ``--zone/-zo``,
``--template_name/-tem``, ``--group_name/-group``, ``--experiment_commands/-cmds``) or a YAML batch file.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import sys
import time
from pathlib import Path

from sinergym_cloud import config

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NOT_FOUND = 0, 1, 2, 3

DESCRIPTION = """\
Send a batch of Sinergym experiments to run, one VM each, on Compute Engine or on the local cloud.

  submit (default)   python publisher.py -cmds 'python3 DRL_battery.py --environment ...' ... [--wait]
                     python publisher.py --batch-file study.yaml [--dry-run]
  list               every batch: who sent it, when, counts by state, VM-hours, MLflow experiment
                     [--state running|queued|ended] [--since 7d] [--json]
  status BATCH_ID    experiments, states, instances, MLflow runs, outputs, groups, alerts [--json]
  logs BATCH_ID [N]  an experiment's log (startup and trainer), kept after its VM [--follow] [--since 10m]
  wait BATCH_ID      live progress until the batch ends (exit 0 only if every experiment succeeded or was pruned)
  retry BATCH_ID     rerun experiments as a new batch linked to this one: --failed, --index N ... [--new-seeds]
  cancel BATCH_ID    stop the experiments, delete the instances and the group
  report BATCH_ID    an HTML report with learning curves and costs
  tensorboard BATCH_ID  serve the batch's TensorBoard logs from the bucket, live (every experiment a run)
  schema [--events]  print the Batch JSON Schema (experiment-batches), or the batch-events messages' schema
  best BATCH_ID      a sweep's best trial as a batch-file entry, ready to rerun with more seeds
  (every subcommand but schema takes --project_id/-id too; `python publisher.py status -h`)

Target: --project_id (or GOOGLE_CLOUD_PROJECT) means Google Cloud; without a project, or with the
local cloud's environment sourced (. .local/env), the local cloud is used and started if needed.
"""


_DURATION = re.compile(r"^(?P<n>[0-9]+(?:\.[0-9]+)?)(?P<unit>[smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def since(value: str, now: float | None = None) -> float:
    """``--since``: a duration back from now (``90s``, ``10m``, ``2h``, ``7d``) or a time (ISO 8601,
    UTC unless it says otherwise, e.g. ``2026-12-04T10:00``). The epoch seconds it names; ValueError
    naming the value otherwise."""
    now = time.time() if now is None else now
    m = _DURATION.match(value.strip())
    if m:
        return now - float(m["n"]) * _UNITS[m["unit"]]
    try:
        when = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(
            f"--since {value!r}: give a duration (90s, 10m, 2h, 7d) or a time (2026-12-04T10:00)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


def since_argument(value: str) -> float:
    """argparse's type for ``--since`` (its error names the value)."""
    try:
        return since(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def die(message: str) -> int:
    """Say what is wrong with the input on stderr; the usage exit code to return."""
    print(f"publisher: {message}", file=sys.stderr)
    return EXIT_USAGE


def submit_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python publisher.py",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--project_id", "-id", help="Google Cloud project (omit to use the local cloud)")
    p.add_argument(
        "--zone",
        "-zo",
        nargs="+",
        default=[config.DEFAULT_ZONE],
        metavar="ZONE",
        help=f"zone for the VMs (default {config.DEFAULT_ZONE}); several zones of one region (space- or "
        "comma-separated) are tried in order: a VM the zone cannot create, or a spot VM preempted there "
        "again and again, moves to the next",
    )
    p.add_argument("--template_name", "-tem", default=None, help="instance template (default sinergym-template)")
    p.add_argument(
        "--group_name", "-group", default=None, help="prefix of the group and VM names (default sinergym-group)"
    )
    p.add_argument(
        "--experiment_commands",
        "-cmds",
        nargs="+",
        metavar="COMMAND",
        help="experiments as original DRL_battery.py command strings (parsed, never run)",
    )
    p.add_argument("--batch-file", type=Path, help="a YAML batch (see README: 'Batch files')")
    p.add_argument(
        "--check",
        action="store_true",
        help="submit one runtime self-test experiment (EnergyPlus, bucket, MLflow, Pub/Sub) instead of training",
    )
    p.add_argument("--batch-id", help="your id for the batch; resubmitting an existing id does nothing")
    p.add_argument("--results-bucket", help="bucket for the outputs (default: the deployment's)")
    p.add_argument(
        "--max-parallel",
        type=int,
        metavar="N",
        help="run at most N experiments at once; the rest wait, queued (default: what the region's quotas allow)",
    )
    p.add_argument(
        "--max-vm-hours",
        type=float,
        metavar="H",
        help="VM-hour budget of the batch: experiments that would pass it are not started but cancelled (budget)",
    )
    p.add_argument("--dry-run", action="store_true", help="validate and print the plan; publish nothing")
    p.add_argument("--wait", action="store_true", help="show live progress until the batch ends")
    p.add_argument("--timeout", type=float, default=24 * 3600, help="--wait gives up after this many seconds")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    return p


def add_batch_arguments(p: argparse.ArgumentParser, json_output: bool = False) -> None:
    """The arguments every batch subcommand shares: the batch id, the target, maybe --json."""
    p.add_argument("batch_id", help="the batch id printed when it was submitted")
    if json_output:
        p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "--project_id", "-id", help="Google Cloud project (default GOOGLE_CLOUD_PROJECT; none means the local cloud)"
    )
