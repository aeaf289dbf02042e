"""A batch's status, gathered from the state bucket, Compute Engine and Monitoring."""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from sinergym_cloud import metrics, names, tensorboard
from sinergym_cloud.control import batches
from sinergym_cloud.errors import BatchNotFound
from sinergym_cloud.records import LIVE, TERMINAL, ExperimentRecord, FinalizeRecord, LaunchRecord
from sinergym_cloud.runtime import Runtime

log = logging.getLogger(__name__)


def mlflow_run_url(tracking_uri: str | None, run_id: str | None, experiment_id: str | None = None) -> str | None:
    if not tracking_uri or not run_id or not tracking_uri.startswith("http"):
        return None
    base = tracking_uri.rstrip("/")
    if experiment_id:
        return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"
    return f"{base}/#/runs/{run_id}"


def mlflow_experiment_url(
    tracking_uri: str | None, name: str, create: bool = False, timeout: float = 3.0
) -> str | None:
    """The MLflow UI address of experiment ``name`` (created first if ``create``), or None when the
    tracking server is not an http(s) server this machine reaches, or has no such experiment."""
    if not tracking_uri or not tracking_uri.startswith("http"):
        return None
    base = tracking_uri.rstrip("/")
    api = f"{base}/api/2.0/mlflow/experiments"
    try:
        query = urllib.parse.urlencode({"experiment_name": name})
        url = f"{api}/get-by-name?{query}"
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - http(s) only, checked above
            experiment_id = json.load(response)["experiment"]["experiment_id"]
    except urllib.error.HTTPError as exc:
        if exc.code != 404 or not create:
            return None
        body = json.dumps({"name": name}).encode()
        request = urllib.request.Request(  # noqa: S310 - http(s) only, checked above
            f"{api}/create", data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - as above
                experiment_id = json.load(response)["experiment_id"]
        except (OSError, ValueError, KeyError):  # a trainer created it meanwhile, or the server said no
            return mlflow_experiment_url(tracking_uri, name, create=False, timeout=timeout)
    except (OSError, ValueError, KeyError):  # not reachable from here (e.g. behind IAP): the caller prints the name
        return None
    return f"{base}/#/experiments/{experiment_id}"


_QUOTA_METRIC = re.compile(r"Quota '([A-Z0-9_]+)' exceeded")


def _clock(at: float | None) -> str:
    return dt.datetime.fromtimestamp(at, dt.UTC).strftime("%H:%M UTC") if at else "?"


def limits(launch: LaunchRecord) -> dict[str, Any]:
    """How many VMs the batch may run at once and why, and its VM-hour budget, as recorded."""
    return {
        "parallelism": launch.parallelism,
        "parallelism_reason": launch.parallelism_reason,
        "parallelism_launched": launch.parallelism_launched or launch.parallelism,
        "parallelism_lowered": launch.parallelism_lowered,
        "parallelism_lowered_at": launch.parallelism_lowered_at,
        "max_vm_hours": launch.max_vm_hours,
        "budget_reached": launch.budget_reached,
        "budget_reached_at": launch.budget_reached_at,
    }


def limit_notes(launch: LaunchRecord, counts: dict[str, int]) -> list[str]:
    """Why the batch runs fewer VMs than it has experiments, in words: "running 2 of 3 at once:
    quota INSTANCES exceeded at 12:03 UTC", "4 queued: at most 2 at once (max_parallel 2)", and
    whether the VM-hour budget stopped it."""
    notes = []
    live = sum(counts.get(s, 0) for s in LIVE)
    if launch.parallelism_lowered and launch.parallelism is not None:
        # Shown, never decided on: the quota's name is in Compute's message, the decision was on its code.
        found = _QUOTA_METRIC.search(launch.parallelism_lowered)
        what = f"quota {found.group(1)} exceeded" if found else launch.parallelism_lowered.split(": ", 1)[-1]
        asked = launch.parallelism_launched or launch.parallelism
        when = _clock(launch.parallelism_lowered_at)
        notes.append(f"running {launch.parallelism} of {asked} at once: {what} at {when} ({live} live now)")
    if counts.get("queued") and launch.parallelism is not None:
        notes.append(f"{counts['queued']} queued: at most {launch.parallelism} at once ({launch.parallelism_reason})")
    if launch.max_vm_hours is not None:
        if launch.budget_reached:
            notes.append(f"budget of {launch.max_vm_hours:g} VM-hours reached at {_clock(launch.budget_reached_at)}: "
                         f"{launch.budget_reached}")  # fmt: skip
        else:
            notes.append(f"budget: {launch.max_vm_hours:g} VM-hours")
    return notes


def batch_status(  # noqa: PLR0912 - one view assembled from every source
    rt: Runtime, batch_id: str, with_compute: bool = True, with_alerts: bool = True, with_links: bool = False
) -> dict[str, Any]:
    """Everything known about a batch. ``with_links`` also asks the MLflow server for the experiment's
    UI address (a network call: the status and report commands want it, polling loops do not)."""
    launch_doc = rt.state.read(names.launch_object(batch_id))
    if launch_doc is None:
        raise BatchNotFound(batch_id, f"gs://{rt.settings.state_bucket}")
    launch = LaunchRecord.model_validate(launch_doc.data)
    finalize_doc = rt.state.read(names.finalize_object(batch_id))
    finalize = FinalizeRecord.model_validate(finalize_doc.data) if finalize_doc else None
    experiments = []
    for index in sorted(batches.experiment_states(rt, batch_id)):
        doc = rt.state.read(names.experiment_object(batch_id, index))
        if doc is not None:
            experiments.append(ExperimentRecord.model_validate(doc.data))
    members: dict[str, Any] = {}
    groups = []
    if with_compute:
        for mig in launch.migs:
            found = rt.compute.members(launch.zone, mig)
            groups.append({"name": mig, "exists": found is not None, "instances": len(found or [])})
            for m in found or []:
                members[m.name] = {"status": m.status, "action": m.action, "errors": list(m.errors)}
    alerts: list[dict[str, Any]] = []
    if with_alerts:
        try:
            alerts = metrics.raised(rt.clients, batch_id)
        except Exception as exc:  # noqa: BLE001 - status must work without Monitoring access
            log.warning("could not read alerts from Monitoring: %s", exc)
    counts: dict[str, int] = {}
    for rec in experiments:
        counts[rec.state] = counts.get(rec.state, 0) + 1
    overall: str
    if launch.status in ("cancelled", "failed"):
        overall = launch.status
    elif finalize is not None and finalize.alerted:
        overall = "finished"
    elif launch.status == "launching":
        overall = "launching"
    else:
        overall = "running"
    tracking = rt.settings.mlflow_uri
    return {
        "batch_id": batch_id,
        "status": overall,
        "group": launch.group,
        "zone": launch.zone,
        "template": launch.template,
        "results": f"gs://{launch.results_bucket}/{batch_id}/",
        "mlflow_experiment": launch.mlflow_experiment,
        "mlflow_experiment_url": mlflow_experiment_url(tracking, launch.mlflow_experiment) if with_links else None,
        "created_at": launch.created_at,
        "launched_at": launch.launched_at,
        "finished_at": finalize.finished_at if finalize else None,
        "error": launch.error,
        "counts": counts,
        "limits": limits(launch),
        "limit_notes": limit_notes(launch, counts),
        "done": len(experiments) == launch.experiments and all(r.state in TERMINAL for r in experiments),
        "groups": groups,
        "alerts": alerts,
        "experiments": [
            {
                "index": r.index,
                "name": r.name,
                "environment": r.spec.environment,
                "algorithm": r.spec.algorithm,
                "seed": r.spec.seed,
                "episodes": r.spec.episodes,
                "state": r.state,
                "instance": r.instance,
                "instance_status": members.get(r.instance, {}).get("status", "" if with_compute else None),
                "instance_errors": members.get(r.instance, {}).get("errors", []),
                "attempts": r.attempts,
                "preemptions": r.preemptions,
                "failures": r.failures,
                "reason": r.reason,
                "mlflow_run_id": r.mlflow_run_id,
                "mlflow_url": mlflow_run_url(tracking, r.mlflow_run_id),
                "tensorboard": tensorboard.log_uri(r.spec.tensorboard, launch.results_bucket, batch_id, r.name),
                "outputs": r.output_uris,
                "metrics": r.metrics,
                "timesteps": r.timesteps,
                "created_at": r.created_at,
                "running_at": r.running_at,
                "finished_at": r.finished_at,
                "history": [e.model_dump() for e in r.history],
            }
            for r in experiments
        ],
    }
