"""``python publisher.py``: the subcommands, and ``main``, the entry point of publisher.py and cloud_manager.py.

Each subcommand parses its own flags (``python publisher.py status -h``); anything that is not a
subcommand is the submit form, which takes the original cloud_manager.py flags.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable

from sinergym_cloud.contracts import Batch, event_schema
from sinergym_cloud.errors import BatchNotFound
from sinergym_cloud.publisher import target, views
from sinergym_cloud.publisher.arguments import EXIT_NOT_FOUND, EXIT_OK, add_batch_arguments, die, since_argument
from sinergym_cloud.publisher.render import print_json, render_status, wait
from sinergym_cloud.publisher.submit import submit


def _not_found(exc: BatchNotFound) -> int:
    print(f"publisher: {exc}", file=sys.stderr)
    return EXIT_NOT_FOUND


def status_command(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python publisher.py status", description="Show a batch's status.")
    add_batch_arguments(p, json_output=True)
    args = p.parse_args(argv)
    rt = target.runtime(args.project_id)
    try:
        info = views.batch_status(rt, args.batch_id, with_links=True)
    except BatchNotFound as exc:
        return _not_found(exc)
    if args.json:
        print_json(info)
    else:
        render_status(info)
    return EXIT_OK


def wait_command(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python publisher.py wait", description="Follow a batch until it ends.")
    add_batch_arguments(p, json_output=True)
    p.add_argument("--timeout", type=float, default=24 * 3600, help="give up after this many seconds")
    args = p.parse_args(argv)
    rt = target.runtime(args.project_id)
    try:
        return wait(rt, args.batch_id, args.timeout, args.json)
    except BatchNotFound as exc:
        return _not_found(exc)


def cancel_command(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="python publisher.py cancel",
        description="Cancel a batch: its experiments are marked cancelled, its instances and group deleted.",
    )
    add_batch_arguments(p)
    args = p.parse_args(argv)
    from sinergym_cloud.control import batches

    rt = target.runtime(args.project_id)
    try:
        result = batches.cancel(rt, args.batch_id)
    except BatchNotFound as exc:
        return _not_found(exc)
    print(
        f"batch {args.batch_id}: cancelled {len(result['cancelled'])} experiment(s); "
        f"deleted group(s) {', '.join(result['groups_deleted'])}"
    )
    return EXIT_OK


def tensorboard_command(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="python publisher.py tensorboard",
        description="Serve a batch's TensorBoard logs from the bucket while it trains (every experiment a run). "
        "Needs the viewer extra: pip install '.[viewer]' (TensorBoard and gcsfs).",
    )
    add_batch_arguments(p)
    p.add_argument("--port", type=int, default=6006, help="TensorBoard's port (default %(default)s)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    p.add_argument("--reload-interval", type=float, default=15, help="seconds between reads of the bucket")
    args = p.parse_args(argv)
    from sinergym_cloud import tensorboard

    rt = target.runtime(args.project_id)
    try:
        info = views.batch_status(rt, args.batch_id, with_compute=False, with_alerts=False)
    except BatchNotFound as exc:
        return _not_found(exc)
    runs = {tensorboard.run_name(e.index, e.name): e.tensorboard for e in info.experiments if e.tensorboard}
    if not runs:
        return die(
            f"no experiment of batch {args.batch_id} writes TensorBoard logs to a bucket "
            "(give it `tensorboard: ./tensorboard_log` or a gs:// path)"
        )
    command = tensorboard.command(runs, args.host, args.port, args.reload_interval)
    env = tensorboard.environment(rt.settings, os.environ)
    print(f"TensorBoard for batch {args.batch_id}: http://{args.host}:{args.port}/  ({len(runs)} run(s); Ctrl-C stops)")
    for name, uri in sorted(runs.items()):
        print(f"  {name}: {uri}")
    sys.stdout.flush()
    sys.stderr.flush()
    # This process becomes TensorBoard: a signal that stops the command stops the server (no orphan).
    os.execve(command[0], command, env)  # noqa: S606 - a fixed argv: this interpreter, TensorBoard's module
    return EXIT_OK  # not reached: execve does not return


def schema_command(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="python publisher.py schema",
        description="Print a contract's JSON Schema: the Batch (the experiment-batches topic), or with --events "
        "the messages of the batch-events topic.",
    )
    p.add_argument("--events", action="store_true", help="the batch-events messages (BatchEvent) instead")
    args = p.parse_args(argv)
    print(json.dumps(event_schema() if args.events else Batch.model_json_schema(), indent=2))
    return EXIT_OK


def best_command(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="python publisher.py best", description="Print a sweep's best trial as a batch-file entry."
    )
    add_batch_arguments(p)
    args = p.parse_args(argv)
    from sinergym_cloud.publisher import sweep_view

    code, text = sweep_view.best_command(target.runtime(args.project_id), args.batch_id)
    print(text, file=sys.stdout if code == EXIT_OK else sys.stderr)
    return code


def list_command(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="python publisher.py list",
        description="Every batch of the deployment: who sent it, when, its experiments by state, its VM-hours so far "
        "and its MLflow experiment, newest first (one listing of the batch index, however many batches ended).",
    )
    from sinergym_cloud.publisher import listing

    p.add_argument("--state", choices=listing.STATES, help="only batches running, queued (none runs), or ended")
    p.add_argument(
        "--since", type=since_argument, metavar="WHEN", help="only batches sent since: 7d, 12h, 30m, or a time"
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--reindex", action="store_true", help="first index batches made before the index (once)")
    p.add_argument(
        "--project_id", "-id", help="Google Cloud project (default GOOGLE_CLOUD_PROJECT; none means the local cloud)"
    )
    args = p.parse_args(argv)
    rt = target.runtime(args.project_id)
    if args.reindex:
        made = listing.reindex(rt)
        print(f"indexed {len(made)} batch(es) made before the index", file=sys.stderr)
    found = listing.lines(rt, state=args.state, since=args.since)
    if args.json:
        print(json.dumps([line.as_json() for line in found], indent=2))
    else:
        listing.render(found)
    return EXIT_OK


def logs_command(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="python publisher.py logs",
        description="An experiment's log: its VM's startup log and its trainer's output, per boot, read from the "
        "results bucket (kept after its VM is deleted). Without INDEX, every experiment of the batch.",
    )
    add_batch_arguments(p)
    p.add_argument("index", type=int, nargs="?", metavar="INDEX", help="the experiment (status shows #)")
    p.add_argument("--follow", "-f", action="store_true", help="print new output as it is stored, until it ends")
    p.add_argument("--since", type=since_argument, metavar="WHEN", help="only output since: 10m, 2h, or a time")
    args = p.parse_args(argv)
    from sinergym_cloud.publisher import logs_view

    rt = target.runtime(args.project_id)
    try:
        logs_view.show(rt, args.batch_id, args.index, follow=args.follow, since=args.since)
    except BatchNotFound as exc:
        return _not_found(exc)
    except ValueError as exc:
        return die(str(exc))
    except KeyboardInterrupt:
        return EXIT_OK
    return EXIT_OK


def retry_command(argv: list[str]) -> int:
    from sinergym_cloud.publisher import retry

    return retry.main(argv)


def report_command(argv: list[str]) -> int:
    from sinergym_cloud.publisher import report

    return report.main(argv, target.runtime)


SUBCOMMANDS: dict[str, Callable[[list[str]], int]] = {
    "list": list_command,
    "status": status_command,
    "logs": logs_command,
    "retry": retry_command,
    "cancel": cancel_command,
    "wait": wait_command,
    "report": report_command,
    "schema": schema_command,
    "tensorboard": tensorboard_command,
    "best": best_command,
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS:
        return SUBCOMMANDS[argv[0]](argv[1:])
    return submit(argv)
