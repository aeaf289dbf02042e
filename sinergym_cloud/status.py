"""A batch's status, gathered from the state bucket, Compute Engine and Monitoring."""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from sinergym_cloud import metrics, names, tensorboard
from sinergym_cloud.control import batches
from sinergym_cloud.errors import BatchNotFound
from sinergym_cloud.records import TERMINAL, ExperimentRecord, FinalizeRecord, LaunchRecord
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
        "sweep": _sweep(rt, batch_id, experiments),
    }


def _sweep(rt: Runtime, batch_id: str, experiments: list[ExperimentRecord]) -> dict[str, Any] | None:
    """A sweep's trials, best trial and pruning savings (sweep_view.py); None without a sweep."""
    if not any(r.trial is not None for r in experiments):
        return None
    from sinergym_cloud import sweep_view  # Optuna is imported only for a sweep

    return sweep_view.status_of(rt, batch_id, experiments)
