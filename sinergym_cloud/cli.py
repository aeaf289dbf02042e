"""``python publisher.py``: send a batch of experiments, follow it, inspect it, cancel it.

Submitting takes the original cloud_manager.py flags (``--project_id/-id``, ``--zone/-zo``,
``--template_name/-tem``, ``--group_name/-group``, ``--experiment_commands/-cmds``) or a YAML batch
file, validates locally with the same code as the launch function, and publishes one message on
``experiment-batches``. With no project (no ``--project_id``, no ``GOOGLE_CLOUD_PROJECT``) it uses
the local cloud, starting it if needed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from sinergym_cloud import batchfile, capacity, config, contracts, legacy, names
from sinergym_cloud.contracts import Batch, Experiment, _summarise
from sinergym_cloud.errors import BadMessage, BatchNotFound
from sinergym_cloud.text import markup as m

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NOT_FOUND = 0, 1, 2, 3
STEPS_PER_SECOND = {"PPO": 340.0, "A2C": 340.0, "DQN": 250.0, "DDPG": 150.0, "SAC": 60.0, "TD3": 150.0}
STEPS_PER_HOUR = 4  # Sinergym's buildings mostly simulate 15-minute steps

SUBCOMMANDS = {"status", "cancel", "wait", "report", "schema", "tensorboard", "best"}

DESCRIPTION = """\
Send a batch of Sinergym experiments to run, one VM each, on Compute Engine or on the local cloud.

  submit (default)   python publisher.py -cmds 'python3 DRL_battery.py --environment ...' ... [--wait]
                     python publisher.py --batch-file study.yaml [--dry-run]
  status BATCH_ID    experiments, states, instances, MLflow runs, outputs, groups, alerts [--json]
  wait BATCH_ID      live progress until the batch ends (exit 0 only if every experiment succeeded or was pruned)
  cancel BATCH_ID    stop the experiments, delete the instances and the group
  report BATCH_ID    an HTML report with learning curves and costs
  tensorboard BATCH_ID  serve the batch's TensorBoard logs from the bucket, live (every experiment a run)
  schema             print the Batch JSON Schema (the contract of the experiment-batches topic)
  best BATCH_ID      a sweep's best trial as a batch-file entry, ready to rerun with more seeds
  (status, wait, cancel, report and tensorboard take --project_id/-id too; `python publisher.py status -h`)

Target: --project_id (or GOOGLE_CLOUD_PROJECT) means Google Cloud; without a project, or with the
local cloud's environment sourced (. .local/env), the local cloud is used and started if needed.
"""


def submit_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python publisher.py",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--project_id", "-id", help="Google Cloud project (omit to use the local cloud)")
    p.add_argument("--zone", "-zo", default=config.DEFAULT_ZONE, help="zone for the VMs (default %(default)s)")
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
    p.add_argument("--dry-run", action="store_true", help="validate and print the plan; publish nothing")
    p.add_argument("--wait", action="store_true", help="show live progress until the batch ends")
    p.add_argument("--timeout", type=float, default=24 * 3600, help="--wait gives up after this many seconds")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    return p


def build_batch(args: argparse.Namespace) -> Batch:
    fields: dict[str, Any] = {}
    if args.batch_file:
        try:
            fields = batchfile.load(args.batch_file)
        except batchfile.BatchFileError as exc:
            raise SystemExit(_die(str(exc))) from None
    if args.experiment_commands:
        experiments = list(fields.get("experiments", []))
        for n, command in enumerate(args.experiment_commands, 1):
            try:
                experiment, _group = legacy.parse_command(command)
            except legacy.LegacyCommandError as exc:
                raise SystemExit(_die(f"experiment command {n}: {exc}\n  {command}")) from None
            experiments.append(experiment)
        fields["experiments"] = experiments
    if getattr(args, "check", False):
        fields["experiments"] = [
            *fields.get("experiments", []),
            Experiment(environment="Eplus-5zone-hot-continuous-v1", mode="check"),
        ]
    if not fields.get("experiments"):
        raise SystemExit(_die("no experiments: give --experiment_commands/-cmds, --batch-file or --check"))
    for key, value in (
        ("zone", args.zone if args.zone != config.DEFAULT_ZONE or "zone" not in fields else None),
        ("template_name", args.template_name),
        ("group_name", args.group_name),
        ("batch_id", args.batch_id),
        ("results_bucket", args.results_bucket),
    ):
        if value:
            fields[key] = value
    if getattr(args, "max_parallel", None) is not None:
        fields["max_parallel"] = args.max_parallel
    if not fields.get("batch_id"):
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
        fields["batch_id"] = f"b-{stamp}-{secrets.token_hex(2)}"
    fields["submitted_at"] = dt.datetime.now(dt.UTC)
    fields["submitted_by"] = os.environ.get("USER", "")[:100] or None
    try:
        return Batch.model_validate(fields)
    except ValidationError as exc:
        raise SystemExit(_die(f"invalid batch: {_summarise(exc)}")) from None


def _die(message: str) -> int:
    print(f"publisher: {message}", file=sys.stderr)
    return EXIT_USAGE


def target_kind(project: str | None) -> str:
    """Which cloud a command talks to: "google", "emulated" (the local cloud's environment is
    sourced) or "local" (the local cloud of this checkout, started if needed)."""
    env = os.environ
    if env.get("PUBSUB_EMULATOR_HOST") and env.get("SINERGYM_COMPUTE_ENDPOINT"):
        return "emulated"
    if (project or env.get("GOOGLE_CLOUD_PROJECT")) and env.get("SINERGYM_TARGET") != "local":
        return "google"
    return "local"


def target_settings(project: str | None) -> tuple[config.Settings, bool]:
    """Settings for Google Cloud or the local cloud (started if needed). Returns (settings, local)."""
    env = dict(os.environ)
    kind = target_kind(project)
    if kind == "google":
        if project:
            env["GOOGLE_CLOUD_PROJECT"] = project
        return config.Settings.from_env(env), False
    if kind == "local":
        from localcloud.cloud import LocalCloud, StartupError

        cloud = LocalCloud()
        if not cloud.is_up():
            print("publisher: no project given: starting the local cloud (make local-down stops it)", file=sys.stderr)
        try:
            env.update(cloud.up(say=lambda s: print(f"  {s}", file=sys.stderr)))
        except StartupError as exc:
            raise SystemExit(_die(str(exc))) from None
    if project and project != env.get("GOOGLE_CLOUD_PROJECT"):
        print(
            f"publisher: local cloud: project {project!r} is served by {env.get('GOOGLE_CLOUD_PROJECT')!r}",
            file=sys.stderr,
        )
    return config.Settings.from_env(env), True


def estimate_hours(batch: Batch) -> list[float]:
    """Rough VM-hours per experiment: timesteps / typical steps per second on 2 vCPUs, plus boot."""
    hours = []
    for exp in batch.experiments:
        if exp.runperiod:
            d1, m1, y1, d2, m2, y2 = exp.runperiod
            days = (dt.date(y2, m2, d2) - dt.date(y1, m1, d1)).days + 1
        else:
            days = 365
        steps = exp.episodes * days * 24 * STEPS_PER_HOUR
        if exp.evaluation:
            steps += (exp.episodes // exp.eval_freq) * exp.eval_length * days * 24 * STEPS_PER_HOUR
        hours.append(steps / STEPS_PER_SECOND.get(exp.algorithm, 100.0) / 3600 + 3 / 60)
    return hours


def print_plan(
    batch: Batch,
    settings: config.Settings | None,
    template: dict[str, str] | None,
    as_json: bool,
    *,
    unread: str = "no cloud running (start it, or give --project_id)",
    parallel: capacity.Parallelism | None = None,
) -> None:
    """The plan of a batch. ``template`` is what the instance template says (machine type, provisioning
    model) when it could be read (else ``unread`` says why); ``settings`` is None when no cloud was asked."""
    from sinergym_cloud.control.launch import plan

    hours = estimate_hours(batch)
    if parallel is None:  # no quotas read: only max_parallel and the batch's size bound it
        parallel = capacity.parallelism(len(batch.experiments), None, None, batch.max_parallel)
    schedule = capacity.schedule(hours, parallel.value)
    groups = [{"name": g, "instances": len(ix)} for g, ix in plan(batch)]
    rows = [
        {
            "index": i,
            "instance": names.instance_name(batch.group_name, batch.batch_id, i),
            "environment": e.environment,
            "algorithm": e.algorithm,
            "episodes": e.episodes,
            "seed": e.seed,
            "estimated_vm_hours": round(h, 3),
            "command": legacy.render_command(e),
        }
        for i, (e, h) in enumerate(zip(batch.experiments, hours, strict=True))
    ]
    summary: dict[str, Any] = {
        "batch_id": batch.batch_id,
        "target": "local cloud" if settings is None or settings.local else f"project {settings.project}",
        "zone": batch.zone,
        "template": batch.template_name,
        "machine_type": template["machine_type"] if template else None,
        "provisioning": template["provisioning"] if template else None,
        "groups": groups,
        "vms": len(batch.experiments),
        "estimated_vm_hours": round(sum(hours), 2),
        "parallelism": parallel.value,
        "parallelism_reason": parallel.reason,
        "waves": schedule.waves,
        "estimated_makespan_hours": round(schedule.makespan_hours, 2),
        "experiments": rows,
    }
    if batch.sweep is not None:
        from sinergym_cloud import sweep_view

        summary["sweep"] = sweep_view.plan_summary(batch)
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if batch.sweep is not None:
        sweep_view.print_plan(console, summary["sweep"])
    table = Table(title=f"Plan for batch {batch.batch_id} ({summary['target']}, zone {batch.zone})")
    for column in ("#", "instance", "environment", "alg", "episodes", "seed", "≈VM-h"):
        table.add_column(column)
    for r in rows:
        table.add_row(
            str(r["index"]),
            str(r["instance"]),
            str(r["environment"]),
            str(r["algorithm"]),
            str(r["episodes"]),
            str(r["seed"]),
            f"{r['estimated_vm_hours']:.2f}",
        )
    console.print(table)
    machine = (
        f"{template['machine_type']}, {template['provisioning'].lower()}"
        if template
        else f"machine type not read: {unread}"
    )
    console.print(
        f"{len(rows)} VM(s) from template [bold]{batch.template_name}[/] ({machine}) in "
        f"{', '.join(f'{g["name"]} ({g["instances"]})' for g in groups)}; "
        f"estimated {summary['estimated_vm_hours']} VM-hours."
    )
    console.print(
        f"At most {parallel.value} at once ({m(parallel.reason)}): {schedule.waves} wave(s), "
        f"estimated makespan {schedule.makespan_hours:.2f} h; the rest wait, queued."
    )


def _parallelism(api: Any, batch: Batch) -> capacity.Parallelism | None:
    """The parallelism launch would use (quotas as Compute reports them now), or None if unread."""
    try:
        shape = api.vm_shape(batch.template_name, batch.zone)
        quotas = api.region_quotas(capacity.region_of(batch.zone))
    except Exception:  # noqa: BLE001 - a plan without quotas is still a plan; launch reads them again
        return None
    return capacity.parallelism(len(batch.experiments), shape, quotas, batch.max_parallel)


def _no_template(batch: Batch, settings: config.Settings, consequence: str = "nothing published") -> str:
    return (
        f"instance template {batch.template_name!r} does not exist in project {settings.project}: {consequence} "
        "(deploy infra/, or pass --template_name)"
    )


def dry_run(batch: Batch, project: str | None, as_json: bool) -> int:
    """Print the plan. The template is read (machine type) only where a cloud is there to ask without
    starting one: a project, or a local cloud that is already up. A sweep is planned as launch
    expands it: one experiment per trial and seed."""
    from sinergym_cloud import sweep

    try:
        batch = sweep.expand(batch)
    except ValueError as exc:
        return _die(str(exc))
    settings: config.Settings | None = None
    template = None
    parallel: capacity.Parallelism | None = None
    unread = "no cloud running (start it, or give --project_id)"
    reachable = target_kind(project) != "local"
    if not reachable:
        from localcloud.cloud import LocalCloud

        reachable = LocalCloud().is_up()  # then target_settings only reads its environment
    if reachable:
        settings, _ = target_settings(project)
        from sinergym_cloud.clients import Clients
        from sinergym_cloud.compute import ComputeApi

        try:
            api = ComputeApi(Clients(settings), settings.project, deadline=10)
            template = api.template_summary(batch.template_name)
            parallel = _parallelism(api, batch)
        except Exception as exc:  # noqa: BLE001 - a plan is still worth printing; say why the template is unread
            unread = _unread_reason(exc, settings)
            print(f"publisher: could not read the instance template: {unread}", file=sys.stderr)
        else:
            if template is None:
                print_plan(batch, settings, None, as_json)
                return _die(_no_template(batch, settings, "the batch would be rejected"))
    print_plan(batch, settings, template, as_json, unread=unread, parallel=parallel)
    return EXIT_OK


def _validate_as_launch(data: bytes, results_bucket: str) -> None:
    """What launch will do with the message: refuse it here, with launch's reason (a sweep's planned
    trial that is no valid experiment, too)."""
    from sinergym_cloud import sweep

    try:
        sweep.expand(contracts.parse(Batch, data)).check_paths(results_bucket)
    except (BadMessage, ValueError) as exc:
        raise SystemExit(_die(str(exc))) from None


def _unread_reason(exc: Exception, settings: config.Settings) -> str:
    """Why the template could not be read, said so a person knows what to do."""
    from google.auth import exceptions as auth_exceptions

    if isinstance(exc, auth_exceptions.DefaultCredentialsError):
        return (
            f"no Google Cloud credentials to read project {settings.project} "
            "(run `gcloud auth application-default login`, or set GOOGLE_APPLICATION_CREDENTIALS)"
        )
    return f"{type(exc).__name__}: {exc}"


def submit(argv: list[str]) -> int:
    args = submit_parser().parse_args(argv)
    batch = build_batch(args)
    if args.dry_run:
        return dry_run(batch, args.project_id, args.json)
    settings, local = target_settings(args.project_id)
    from sinergym_cloud.runtime import Runtime

    rt = Runtime.from_settings(settings)
    try:
        template = rt.compute.template_summary(batch.template_name)
    except Exception as exc:  # noqa: BLE001 - no credentials, no permission, no network: say which, no traceback
        return _die(f"could not read instance template {batch.template_name!r}: {type(exc).__name__}: {exc}")
    if template is None:
        return _die(_no_template(batch, settings))
    if rt.state.read(names.launch_object(batch.batch_id)) is not None:
        print(f"publisher: batch {batch.batch_id} already exists: not resubmitted (see `status {batch.batch_id}`)")
        return wait(rt, batch.batch_id, args.timeout, args.json) if args.wait else EXIT_OK
    data = contracts.dump(batch)
    _validate_as_launch(data, batch.results_bucket or settings.results_bucket)
    message_id = rt.clients.publish(
        names.TOPIC_BATCHES, data, batch_id=batch.batch_id, schema_version=str(batch.schema_version)
    )
    bucket = batch.results_bucket or settings.results_bucket
    from sinergym_cloud import status
    from sinergym_cloud.control.launch import mlflow_experiment

    experiment = mlflow_experiment(batch)
    mlflow = status.mlflow_experiment_url(settings.mlflow_uri, experiment, create=True) or (
        f"{settings.mlflow_uri or 'the MLFLOW_TRACKING_URI of the deployment'}  (experiment {experiment})"
    )
    if args.json and not args.wait:
        print(
            json.dumps(
                {"batch_id": batch.batch_id, "message_id": message_id, "results": f"gs://{bucket}/{batch.batch_id}/"}
            )
        )
    else:
        print(f"batch {batch.batch_id}: {len(batch.experiments)} experiment(s) submitted (message {message_id})")
        print(f"  results:  gs://{bucket}/{batch.batch_id}/")
        target = "" if local else f" --project_id {settings.project}"
        print(f"  MLflow:   {mlflow}")
        print(f"  status:   python publisher.py status {batch.batch_id}{target}")
        if local:
            print(f"  local cloud: . {_local_env_file()} to use its endpoints; make local-down to stop it")
    if args.wait:
        return wait(rt, batch.batch_id, args.timeout, args.json)
    return EXIT_OK


def _local_env_file() -> str:
    """The env file of the local cloud in use (LOCALCLOUD_DIR's), as short as it can be written."""
    from localcloud.cloud import LocalCloud

    path = LocalCloud().env_file
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _runtime(project: str | None = None) -> Any:
    from sinergym_cloud.runtime import Runtime

    settings, _ = target_settings(project or os.environ.get("GOOGLE_CLOUD_PROJECT"))
    return Runtime.from_settings(settings)


def add_batch_arguments(p: argparse.ArgumentParser, json_output: bool = False) -> None:
    """The arguments every batch subcommand shares: the batch id, the target, maybe --json."""
    p.add_argument("batch_id", help="the batch id printed when it was submitted")
    if json_output:
        p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "--project_id", "-id", help="Google Cloud project (default GOOGLE_CLOUD_PROJECT; none means the local cloud)"
    )


def status_command(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python publisher.py status", description="Show a batch's status.")
    add_batch_arguments(p, json_output=True)
    args = p.parse_args(argv)
    from sinergym_cloud import status

    rt = _runtime(args.project_id)
    try:
        info = status.batch_status(rt, args.batch_id, with_links=True)
    except BatchNotFound as exc:
        print(f"publisher: {exc}", file=sys.stderr)
        return EXIT_NOT_FOUND
    if args.json:
        print(json.dumps(info, indent=2, default=str))
    else:
        render_status(info)
    return EXIT_OK


def short_run_id(run_id: str | None) -> str:
    """An MLflow run id as the status table shows it (the full id and link are in --json and the report)."""
    return run_id[:8] if run_id else "-"


def render_status(info: dict[str, Any], console: Any = None) -> None:
    """The status of a batch, readable at 80 columns: short run ids, the long links elsewhere."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    counts = ", ".join(f"{v} {k}" for k, v in sorted(info["counts"].items()))
    console.print(f"[bold]batch {m(info['batch_id'])}[/]: {m(info['status'])} ({m(counts)}) zone {m(info['zone'])}")
    if info["error"]:
        console.print(f"  [red]{m(info['error'], 1000)}[/]")
    table = Table(pad_edge=False, box=None, header_style="bold")
    table.add_column("#", no_wrap=True)
    table.add_column("experiment", overflow="fold", ratio=3)
    table.add_column("state", no_wrap=True)
    table.add_column("VM", no_wrap=True)
    table.add_column("tries", no_wrap=True)
    table.add_column("run", no_wrap=True)
    table.add_column("note", overflow="fold", ratio=2)
    for e in info["experiments"]:
        note = e["reason"] or "; ".join(e["instance_errors"])
        environment = str(e["environment"]).removeprefix("Eplus-")
        table.add_row(
            m(e["index"]),
            m(f"{e['algorithm']} {environment} s{e['seed']}"),
            m(e["state"]),
            m(e["instance_status"] or "-"),
            m(f"{e['attempts']} p{e['preemptions']} f{e['failures']}"),
            m(short_run_id(e["mlflow_run_id"])),
            m(note),
        )
    console.print(table)
    console.print("[dim]run: MLflow run id (full ids and links: status --json, or the report)[/]")
    console.print(
        m(
            f"outputs: {info['results']}   MLflow experiment: {info['mlflow_experiment']}"
            + (f" ({info['mlflow_experiment_url']})" if info.get("mlflow_experiment_url") else "")
        )
    )
    for g in info["groups"]:
        console.print(
            m(f"group {g['name']}: {'exists, ' + str(g['instances']) + ' instance(s)' if g['exists'] else 'deleted'}")
        )
    for a in info["alerts"]:
        console.print(m(f"alert raised: {a['metric']} {a['labels']} at {a['time']}", 2000))
    if info.get("sweep"):
        from sinergym_cloud import sweep_view

        sweep_view.print_trials(console, info["sweep"])


def wait(rt: Any, batch_id: str, timeout: float, as_json: bool = False) -> int:
    """Live progress until the batch ends. Exit code 0 only if every experiment succeeded (or, a
    sweep's trial, was pruned)."""
    from rich.console import Console
    from rich.live import Live
    from rich.table import Table

    from sinergym_cloud import status

    console = Console(stderr=as_json)
    deadline = time.monotonic() + timeout
    started = time.time()

    def table(info: dict[str, Any]) -> Table:
        t = Table(title=m(f"batch {batch_id}: {info['status']}  ({time.time() - started:.0f}s)"))
        for column in ("#", "experiment", "instance", "state", "episode", "elapsed"):
            t.add_column(column)
        for e in info["experiments"]:
            since = e["running_at"] or e["created_at"]
            end = e["finished_at"] or time.time()
            episode = _episode(rt, info, e)
            t.add_row(
                m(e["index"]),
                m(f"{e['algorithm']} {e['environment']} s{e['seed']}"),
                m(f"{e['instance']} ({e['instance_status'] or '-'})"),
                m(e["state"]),
                m(episode),
                f"{end - since:.0f}s",
            )
        return t

    info = _first_status(rt, batch_id, deadline=min(deadline, time.monotonic() + 120))
    with Live(table(info), console=console, refresh_per_second=2, transient=False) as live:
        while True:
            finished = info["status"] in ("finished", "cancelled", "failed") and info["done"]
            if finished or time.monotonic() > deadline:
                break
            time.sleep(2)
            info = status.batch_status(rt, batch_id, with_alerts=False)
            live.update(table(info))
    info = status.batch_status(rt, batch_id, with_links=True)
    if as_json:
        print(json.dumps(info, indent=2, default=str))
    else:
        render_status(info)
    if not info["done"]:
        console.print(f"[yellow]gave up waiting after {timeout:.0f}s; the batch goes on[/]")
        return EXIT_FAILED
    ok = all(e["state"] in ("succeeded", "pruned") for e in info["experiments"])  # a pruned trial did its part
    return EXIT_OK if ok else EXIT_FAILED


def _first_status(rt: Any, batch_id: str, deadline: float) -> dict[str, Any]:
    """The batch's status, waiting a little for launch to record a batch that was just published."""
    from sinergym_cloud import status

    while True:
        try:
            return status.batch_status(rt, batch_id, with_alerts=False)
        except BatchNotFound:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _episode(rt: Any, info: dict[str, Any], e: dict[str, Any]) -> str:
    total = e["episodes"]
    if e["state"] == "succeeded":
        return f"{total}/{total}"
    if e["state"] != "running":
        return "-"
    bucket = info["results"].removeprefix("gs://").split("/", 1)[0]
    try:
        blob = rt.clients.storage.bucket(bucket).get_blob(
            names.heartbeat_object(info["batch_id"], e["name"]), timeout=5
        )
        beat = json.loads(blob.download_as_bytes(timeout=5)) if blob else {}
    except Exception:  # noqa: BLE001 - progress display only
        beat = {}
    return f"{beat.get('episodes', 0)}/{total}" if beat else f"?/{total}"


def wait_command(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python publisher.py wait", description="Follow a batch until it ends.")
    add_batch_arguments(p, json_output=True)
    p.add_argument("--timeout", type=float, default=24 * 3600, help="give up after this many seconds")
    args = p.parse_args(argv)
    rt = _runtime(args.project_id)
    try:
        return wait(rt, args.batch_id, args.timeout, args.json)
    except BatchNotFound as exc:
        print(f"publisher: {exc}", file=sys.stderr)
        return EXIT_NOT_FOUND


def cancel_command(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="python publisher.py cancel",
        description="Cancel a batch: its experiments are marked cancelled, its instances and group deleted.",
    )
    add_batch_arguments(p)
    args = p.parse_args(argv)
    from sinergym_cloud.control import batches

    rt = _runtime(args.project_id)
    try:
        result = batches.cancel(rt, args.batch_id)
    except BatchNotFound as exc:
        print(f"publisher: {exc}", file=sys.stderr)
        return EXIT_NOT_FOUND
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
    from sinergym_cloud import status, tensorboard

    rt = _runtime(args.project_id)
    try:
        info = status.batch_status(rt, args.batch_id, with_compute=False, with_alerts=False)
    except KeyError as exc:
        print(f"publisher: {exc.args[0]}", file=sys.stderr)
        return EXIT_NOT_FOUND
    runs = {
        tensorboard.run_name(e["index"], e["name"]): e["tensorboard"] for e in info["experiments"] if e["tensorboard"]
    }
    if not runs:
        return _die(
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
    print(json.dumps(Batch.model_json_schema(), indent=2))
    return EXIT_OK


def best_command(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="python publisher.py best", description="Print a sweep's best trial as a batch-file entry."
    )
    add_batch_arguments(p)
    args = p.parse_args(argv)
    from sinergym_cloud import sweep_view

    code, text = sweep_view.best_command(_runtime(args.project_id), args.batch_id)
    print(text, file=sys.stdout if code == EXIT_OK else sys.stderr)
    return code


def report_command(argv: list[str]) -> int:
    from sinergym_cloud import report

    return report.main(argv, _runtime)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS:
        command, rest = argv[0], argv[1:]
        handler = {
            "status": status_command,
            "cancel": cancel_command,
            "wait": wait_command,
            "report": report_command,
            "schema": schema_command,
            "tensorboard": tensorboard_command,
            "best": best_command,
        }[command]
        return handler(rest)
    return submit(argv)
