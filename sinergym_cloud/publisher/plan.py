"""``--dry-run``: what a batch would do (experiments, VMs, groups, machine type, VM-hours, parallelism,
waves, makespan), printed without publishing anything.

The template is read only where a cloud can be asked without starting one: a project, or a local cloud
that is already up.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from sinergym_cloud import budget, capacity, config, names
from sinergym_cloud.contracts import Batch
from sinergym_cloud.inputs import legacy
from sinergym_cloud.publisher.arguments import EXIT_OK, die
from sinergym_cloud.publisher.target import local_cloud, target_kind, target_settings
from sinergym_cloud.text import markup as m


def estimate_hours(batch: Batch) -> list[float]:
    """Rough VM-hours per experiment (budget.estimate_vm_hours: the figure the budget is held to)."""
    return [budget.estimate_vm_hours(exp) for exp in batch.experiments]


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
        "zones": batch.all_zones,
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
        **budget_plan(batch),
        "experiments": rows,
    }
    if batch.sweep is not None:
        from sinergym_cloud.publisher import sweep_view

        summary["sweep"] = sweep_view.plan_summary(batch)
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if batch.sweep is not None:
        sweep_view.print_plan(console, summary["sweep"])
    table = Table(title=f"Plan for batch {batch.batch_id} ({summary['target']}, zone {', '.join(batch.all_zones)})")
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
    if batch.max_vm_hours is not None:
        console.print(
            f"Budget {batch.max_vm_hours:g} VM-hours: the first {summary['within_budget']} of {len(rows)} "
            "experiment(s) fit the estimates; any experiment that would pass it is cancelled (budget), not started."
        )


def budget_plan(batch: Batch) -> dict[str, Any]:
    """The budget's part of the plan: how many experiments fit it, in order, by their estimates."""
    if batch.max_vm_hours is None:
        return {"max_vm_hours": None}
    fit = budget.first_wave(batch.max_vm_hours, batch.experiments, len(batch.experiments))
    return {"max_vm_hours": batch.max_vm_hours, "within_budget": fit}


def _parallelism(api: Any, batch: Batch) -> capacity.Parallelism | None:
    """The parallelism launch would use (quotas as Compute reports them now), or None if unread."""
    try:
        shape = api.vm_shape(batch.template_name, batch.zone)
        quotas = api.region_quotas(capacity.region_of(batch.zone))
    except Exception:  # noqa: BLE001 - a plan without quotas is still a plan; launch reads them again
        return None
    return capacity.parallelism(len(batch.experiments), shape, quotas, batch.max_parallel)


def no_template(batch: Batch, settings: config.Settings, consequence: str = "nothing published") -> str:
    """The message for an instance template that is not there, saying what to do."""
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
        return die(str(exc))
    settings: config.Settings | None = None
    template = None
    parallel: capacity.Parallelism | None = None
    unread = "no cloud running (start it, or give --project_id)"
    reachable = target_kind(project) != "local" or local_cloud().is_up()  # up: target_settings only reads its env
    if reachable:
        settings, _ = target_settings(project)
        from sinergym_cloud.gcp.clients import Clients
        from sinergym_cloud.gcp.compute import ComputeApi

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
                return die(no_template(batch, settings, "the batch would be rejected"))
    print_plan(batch, settings, template, as_json, unread=unread, parallel=parallel)
    return EXIT_OK


def _unread_reason(exc: Exception, settings: config.Settings) -> str:
    """Why the template could not be read, said so a person knows what to do."""
    from google.auth import exceptions as auth_exceptions

    if isinstance(exc, auth_exceptions.DefaultCredentialsError):
        return (
            f"no Google Cloud credentials to read project {settings.project} "
            "(run `gcloud auth application-default login`, or set GOOGLE_APPLICATION_CREDENTIALS)"
        )
    return f"{type(exc).__name__}: {exc}"
