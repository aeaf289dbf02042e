"""``python publisher.py retry BATCH_ID [--failed] [--index N ...]``: run experiments of an ended batch
again, as a new batch linked to it.

Each chosen experiment is resubmitted exactly as it ran (its record's experiment: a sweep trial with
its parameters, a replicate with its seed); ``--new-seeds`` draws a new seed for each instead. The
new batch keeps the old one's group, zones, template and results bucket, carries ``retry_of`` (the
old batch and the indices, Batch schema 4) and is printed like a submission. A batch that still has
experiments running or queued is refused, with what it still runs: wait for it, or cancel it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import secrets
import sys

from sinergym_cloud import contracts, names
from sinergym_cloud.contracts import Batch, Experiment
from sinergym_cloud.control import batches
from sinergym_cloud.errors import BadMessage, BatchNotFound
from sinergym_cloud.gcp.runtime import Runtime
from sinergym_cloud.publisher import target
from sinergym_cloud.publisher.arguments import EXIT_NOT_FOUND, add_batch_arguments, die
from sinergym_cloud.publisher.plan import dry_run
from sinergym_cloud.publisher.submit import send, submitter
from sinergym_cloud.records import TERMINAL, ExperimentRecord

MAX_SEED = 2**31 - 1


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python publisher.py retry",
        description="Run experiments of an ended batch again, as a new batch linked to it (same configuration; "
        "new seeds only with --new-seeds). Choose them with --failed and/or --index.",
    )
    add_batch_arguments(p, json_output=True)
    p.add_argument("--failed", action="store_true", help="every experiment of the batch that failed")
    p.add_argument("--index", type=int, nargs="+", default=[], metavar="N", help="these experiments (status shows #)")
    p.add_argument("--new-seeds", action="store_true", help="a new random seed for each (default: its own seed)")
    p.add_argument("--batch-id", dest="new_batch_id", help="the new batch's id (default: BATCH_ID-r1, -r2, ...)")
    p.add_argument("--max-parallel", type=int, metavar="N", help="at most N VMs at once (default: the old batch's)")
    p.add_argument("--max-vm-hours", type=float, metavar="H", help="a VM-hour budget for the new batch")
    p.add_argument("--dry-run", action="store_true", help="print the new batch's plan; publish nothing")
    p.add_argument("--wait", action="store_true", help="follow the new batch until it ends")
    p.add_argument("--timeout", type=float, default=24 * 3600, help="--wait gives up after this many seconds")
    return p


class Refused(Exception):
    """The retry cannot be made as asked; the message says why and what to do."""


def still_running(states: dict[int, str], batch_id: str) -> str:
    """Why a batch cannot be retried yet, or "" when every experiment has ended."""
    waiting = {s: sum(1 for v in states.values() if v == s) for s in set(states.values()) - TERMINAL}
    if not waiting:
        return ""
    what = ", ".join(f"{n} {'queued' if s == 'queued' else s}" for s, n in sorted(waiting.items()))
    return (
        f"batch {batch_id} still has experiments that have not ended ({what}): wait for it "
        f"(python publisher.py wait {batch_id}) or cancel it (python publisher.py cancel {batch_id}), then retry"
    )


def choose(states: dict[int, str], failed: bool, indices: list[int], batch_id: str) -> list[int]:
    """The experiments to rerun, in order; Refused if none or an index the batch has not."""
    if not failed and not indices:
        counts = ", ".join(f"{sum(1 for v in states.values() if v == s)} {s}" for s in sorted(set(states.values())))
        raise Refused(f"choose what to rerun: --failed, or --index N ... (batch {batch_id}: {counts})")
    unknown = [i for i in indices if i not in states]
    if unknown:
        raise Refused(f"batch {batch_id} has experiments 0 to {len(states) - 1}, not {', '.join(map(str, unknown))}")
    chosen = set(indices) | ({i for i, s in states.items() if s == "failed"} if failed else set())
    if not chosen:
        raise Refused(f"batch {batch_id} has no failed experiment: nothing to retry (choose with --index N)")
    return sorted(chosen)


def next_id(rt: Runtime, batch_id: str) -> str:
    """``BATCH-r1``, ``-r2``, ...: the first that names no batch yet (cut to a batch id's 63 characters)."""
    for n in range(1, 1000):
        suffix = f"-r{n}"
        candidate = batch_id[: 63 - len(suffix)].rstrip("-") + suffix
        if rt.state.read(names.launch_object(candidate)) is None:
            return candidate
    raise Refused(f"batch {batch_id} was retried too often: give --batch-id")


def build(rt: Runtime, args: argparse.Namespace) -> Batch:
    """The new batch for ``args``; Refused or BatchNotFound."""
    old_id = args.batch_id
    launch = batches.read_launch(rt, old_id)
    stored = rt.state.read(names.batch_object(old_id))
    if launch is None or stored is None:
        raise BatchNotFound(old_id, f"gs://{rt.settings.state_bucket}")
    states = batches.experiment_states(rt, old_id)
    why = "" if launch.status != "launching" else f"batch {old_id} is still launching: wait for it, then retry"
    why = why or still_running(states, old_id)
    if why:
        raise Refused(why)
    chosen = choose(states, args.failed, args.index, old_id)
    old = Batch.model_validate(stored.data["batch"])
    experiments: list[Experiment] = []
    for index in chosen:
        doc = rt.state.read(names.experiment_object(old_id, index))
        assert doc is not None, "listed above"
        spec = ExperimentRecord.model_validate(doc.data).spec
        if args.new_seeds:
            spec = spec.model_copy(update={"seed": secrets.randbelow(MAX_SEED)})
        experiments.append(spec)
    fields = {
        "schema_version": 4,
        "batch_id": args.new_batch_id or next_id(rt, old_id),
        "group_name": old.group_name,
        "zone": old.zone,
        "zones": old.zones,
        "template_name": old.template_name,
        "results_bucket": old.results_bucket,
        "experiments": [e.model_dump(mode="json", exclude_none=True) for e in experiments],
        "max_parallel": args.max_parallel or old.max_parallel,
        "max_vm_hours": args.max_vm_hours,
        "submitted_by": submitter(),
        "submitted_at": dt.datetime.now(dt.UTC),
        "retry_of": {"batch_id": old_id, "experiments": chosen},
    }
    try:
        return contracts.parse(Batch, {k: v for k, v in fields.items() if v is not None})
    except BadMessage as exc:
        raise Refused(str(exc)) from None


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    settings, local = target.target_settings(args.project_id or os.environ.get("GOOGLE_CLOUD_PROJECT"))
    rt = Runtime.from_settings(settings)
    try:
        batch = build(rt, args)
    except BatchNotFound as exc:
        print(f"publisher: {exc}", file=sys.stderr)
        return EXIT_NOT_FOUND
    except Refused as exc:
        return die(str(exc))
    if args.dry_run:
        return dry_run(batch, args.project_id, args.json)
    return send(batch, settings, local, as_json=args.json, wait_timeout=args.timeout if args.wait else None)
