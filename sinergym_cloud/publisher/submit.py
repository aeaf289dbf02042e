"""Submitting a batch: build it from the flags or a batch file, validate it with the launch function's
own code, check the instance template exists, and publish one message on ``experiment-batches``.

Without a project (no ``--project_id``, no ``GOOGLE_CLOUD_PROJECT``) the local cloud is the target,
started if needed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import json
import os
import secrets
from typing import Any

from pydantic import ValidationError

from sinergym_cloud import config, contracts, names
from sinergym_cloud.contracts import Batch, Experiment, summarise
from sinergym_cloud.errors import BadMessage
from sinergym_cloud.inputs import batchfile, legacy
from sinergym_cloud.publisher.arguments import EXIT_OK, die, submit_parser
from sinergym_cloud.publisher.plan import dry_run, no_template
from sinergym_cloud.publisher.render import wait
from sinergym_cloud.publisher.target import local_env_file, target_settings


def _apply_zones(given: list[str], fields: dict[str, Any]) -> None:
    """``--zone``: one zone, or several of one region in failover order; a zone given on the command
    line wins over the batch file's, the default does not."""
    zones = [z for value in given for z in value.split(",") if z] or [config.DEFAULT_ZONE]
    if len(zones) > 1:
        fields["zones"] = zones
        fields.pop("zone", None)
    elif zones[0] != config.DEFAULT_ZONE:
        fields["zone"] = zones[0]
        fields.pop("zones", None)


def build_batch(args: argparse.Namespace) -> Batch:
    """The Batch the submit flags describe; exits with the reason (naming the bad input) if there is none."""
    fields: dict[str, Any] = {}
    if args.batch_file:
        try:
            fields = batchfile.load(args.batch_file)
        except batchfile.BatchFileError as exc:
            raise SystemExit(die(str(exc))) from None
    if args.experiment_commands:
        experiments = list(fields.get("experiments", []))
        for n, command in enumerate(args.experiment_commands, 1):
            try:
                experiment, _group = legacy.parse_command(command)
            except legacy.LegacyCommandError as exc:
                raise SystemExit(die(f"experiment command {n}: {exc}\n  {command}")) from None
            experiments.append(experiment)
        fields["experiments"] = experiments
    if getattr(args, "check", False):
        fields["experiments"] = [
            *fields.get("experiments", []),
            Experiment(environment="Eplus-5zone-hot-continuous-v1", mode="check"),
        ]
    if not fields.get("experiments"):
        raise SystemExit(die("no experiments: give --experiment_commands/-cmds, --batch-file or --check"))
    _apply_zones(args.zone, fields)
    for key, value in (
        ("template_name", args.template_name),
        ("group_name", args.group_name),
        ("batch_id", args.batch_id),
        ("results_bucket", args.results_bucket),
    ):
        if value:
            fields[key] = value
    fields.update(_limits(args))
    if not fields.get("batch_id"):
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
        fields["batch_id"] = f"b-{stamp}-{secrets.token_hex(2)}"
    fields["submitted_at"] = dt.datetime.now(dt.UTC)
    fields["submitted_by"] = submitter()
    try:
        return Batch.model_validate(fields)
    except ValidationError as exc:
        raise SystemExit(die(f"invalid batch: {summarise(exc)}")) from None


def submitter() -> str | None:
    """Who sends a batch from this machine (``submitted_by``: ``list`` shows it): the user's name."""
    try:
        user = os.environ.get("USER") or getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a bare container)
        return None
    cleaned = "".join(ch for ch in user if ch.isalnum() or ch in "_.:@ -")[:100]
    return cleaned or None


def _limits(args: argparse.Namespace) -> dict[str, Any]:
    """--max-parallel and --max-vm-hours, over what a batch file says."""
    flags = {"max_parallel": getattr(args, "max_parallel", None), "max_vm_hours": getattr(args, "max_vm_hours", None)}
    return {k: v for k, v in flags.items() if v is not None}


def _validate_as_launch(data: bytes, results_bucket: str) -> None:
    """What launch will do with the message: refuse it here, with launch's reason (a sweep's planned
    trial that is no valid experiment, too)."""
    from sinergym_cloud import sweep

    try:
        sweep.expand(contracts.parse(Batch, data)).check_paths(results_bucket)
    except (BadMessage, ValueError) as exc:
        raise SystemExit(die(str(exc))) from None


def submit(argv: list[str]) -> int:
    """``python publisher.py [flags]``: publish a batch (or print its plan with --dry-run)."""
    args = submit_parser().parse_args(argv)
    batch = build_batch(args)
    if args.dry_run:
        return dry_run(batch, args.project_id, args.json)
    settings, local = target_settings(args.project_id)
    return send(batch, settings, local, as_json=args.json, wait_timeout=args.timeout if args.wait else None)


def send(
    batch: Batch, settings: config.Settings, local: bool, *, as_json: bool = False, wait_timeout: float | None = None
) -> int:
    """Publish ``batch`` on ``experiment-batches`` once the template is there and launch's own checks
    pass, and say where to follow it (a batch id that exists is not sent again). ``wait_timeout``: then
    follow it live until it ends (``--wait``)."""
    from sinergym_cloud.gcp.runtime import Runtime

    rt = Runtime.from_settings(settings)
    try:
        template = rt.compute.template_summary(batch.template_name)
    except Exception as exc:  # noqa: BLE001 - no credentials, no permission, no network: say which, no traceback
        return die(f"could not read instance template {batch.template_name!r}: {type(exc).__name__}: {exc}")
    if template is None:
        return die(no_template(batch, settings))
    if rt.state.read(names.launch_object(batch.batch_id)) is not None:
        print(f"publisher: batch {batch.batch_id} already exists: not resubmitted (see `status {batch.batch_id}`)")
        return wait(rt, batch.batch_id, wait_timeout, as_json) if wait_timeout is not None else EXIT_OK
    data = contracts.dump(batch)
    _validate_as_launch(data, batch.results_bucket or settings.results_bucket)
    message_id = rt.clients.publish(
        names.TOPIC_BATCHES, data, batch_id=batch.batch_id, schema_version=str(batch.schema_version)
    )
    bucket = batch.results_bucket or settings.results_bucket
    from sinergym_cloud.control.launch import mlflow_experiment
    from sinergym_cloud.publisher.views import mlflow_experiment_url

    experiment = mlflow_experiment(batch)
    mlflow = mlflow_experiment_url(settings.mlflow_uri, experiment, create=True) or (
        f"{settings.mlflow_uri or 'the MLFLOW_TRACKING_URI of the deployment'}  (experiment {experiment})"
    )
    if as_json and wait_timeout is None:
        print(
            json.dumps(
                {"batch_id": batch.batch_id, "message_id": message_id, "results": f"gs://{bucket}/{batch.batch_id}/"}
            )
        )
    else:
        retry = batch.retry_of
        what = f" (a retry of batch {retry.batch_id}, experiment(s) {_indices(retry.experiments)})" if retry else ""
        print(f"batch {batch.batch_id}: {len(batch.experiments)} experiment(s) submitted{what} (message {message_id})")
        print(f"  results:  gs://{bucket}/{batch.batch_id}/")
        target = "" if local else f" --project_id {settings.project}"
        print(f"  MLflow:   {mlflow}")
        print(f"  status:   python publisher.py status {batch.batch_id}{target}")
        print(f"  logs:     python publisher.py logs {batch.batch_id}{target} INDEX --follow")
        if local:
            print(f"  local cloud: . {local_env_file()} to use its endpoints; make local-down to stop it")
    if wait_timeout is not None:
        return wait(rt, batch.batch_id, wait_timeout, as_json)
    return EXIT_OK


def _indices(indices: list[int]) -> str:
    return ", ".join(str(i) for i in indices)
