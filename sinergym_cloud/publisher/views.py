"""A batch's status as typed views, gathered from the state bucket, Compute Engine and Monitoring.

``batch_status`` returns a ``BatchView``: what ``status`` prints, what ``wait`` polls and what the
report starts from. ``BatchView.as_json()`` is the ``status --json`` document (the same keys as the
fields below), so scripts that read that output see one stable shape.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from sinergym_cloud import names, tensorboard
from sinergym_cloud.control import batches
from sinergym_cloud.errors import BatchNotFound
from sinergym_cloud.gcp import metrics
from sinergym_cloud.gcp.runtime import Runtime
from sinergym_cloud.publisher import limits
from sinergym_cloud.records import TERMINAL, ExperimentRecord, FinalizeRecord

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


@dataclass(frozen=True)
class GroupView:
    """One instance group of the batch, as Compute Engine lists it now."""

    name: str
    exists: bool
    instances: int
    zone: str = ""


@dataclass(frozen=True)
class AlertView:
    """One point of the batch-finished metric that Monitoring raised an alert on."""

    metric: str
    labels: dict[str, str]
    time: str


@dataclass(frozen=True)
class ExperimentView:
    """One experiment: its spec's headline, its record's state and counters, and its VM as Compute sees it.

    ``instance_status`` is None when Compute was not asked (``with_compute=False``), "" when the VM is gone.
    """

    index: int
    name: str
    environment: str
    algorithm: str
    seed: int | None
    episodes: int
    state: str
    instance: str
    zone: str
    moved_from: list[str]
    instance_status: str | None
    instance_errors: list[str]
    attempts: int
    preemptions: int
    failures: int
    reason: str
    mlflow_run_id: str | None
    mlflow_url: str | None
    tensorboard: str | None
    outputs: list[str]
    metrics: dict[str, float]
    timesteps: int
    created_at: float
    running_at: float | None
    finished_at: float | None
    history: list[dict[str, Any]] = field(default_factory=list)
    # The last lines its log ended with (a failure's: from its completion, else from its log in the bucket).
    log_tail: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class BatchView:
    """Everything known about a batch; ``status`` is the batch's overall state (launching, running,
    finished, failed, cancelled) and ``done`` says every experiment reached a terminal state."""

    batch_id: str
    status: str
    group: str
    zone: str
    zones: list[str]
    template: str
    results: str
    mlflow_experiment: str
    mlflow_experiment_url: str | None
    created_at: float
    launched_at: float | None
    finished_at: float | None
    error: str
    counts: dict[str, int]
    limits: dict[str, Any]  # the parallelism and budget as recorded (publisher.limits)
    limit_notes: list[str]  # why fewer VMs run than there are experiments, in words
    done: bool
    groups: list[GroupView]
    alerts: list[AlertView]
    experiments: list[ExperimentView]
    sweep: dict[str, Any] | None = None  # a sweep's trials, best trial and pruning savings (sweep_view.py)
    submitted_by: str = ""
    retry_of: dict[str, Any] | None = None  # the batch and experiments this one reruns (publisher.py retry)

    @property
    def results_bucket(self) -> str:
        """The bucket of ``results`` (gs://BUCKET/BATCH/)."""
        return self.results.removeprefix("gs://").split("/", 1)[0]

    def as_json(self) -> dict[str, Any]:
        """The ``status --json`` document: every field, nested views as objects."""
        return asdict(self)

    def with_compute_of(self, earlier: BatchView) -> BatchView:
        """This view (read without Compute) with the groups and VM statuses of an ``earlier`` one that
        asked Compute: a poll that refreshes the records every few seconds and Compute less often."""
        seen = {e.instance: e for e in earlier.experiments}
        experiments = [
            replace(
                e, instance_status=seen[e.instance].instance_status, instance_errors=seen[e.instance].instance_errors
            )
            if e.instance_status is None and e.instance in seen
            else e
            for e in self.experiments
        ]
        return replace(self, groups=earlier.groups, experiments=experiments)


def batch_status(  # noqa: PLR0912 - one view assembled from every source
    rt: Runtime, batch_id: str, with_compute: bool = True, with_alerts: bool = True, with_links: bool = False
) -> BatchView:
    """Everything known about a batch. ``with_links`` also asks the MLflow server for the experiment's
    UI address, and reads the last log lines of a failed experiment whose record has none from the
    bucket (network calls: the status and report commands want them, polling loops do not)."""
    launch = batches.read_launch(rt, batch_id)
    if launch is None:
        raise BatchNotFound(batch_id, f"gs://{rt.settings.state_bucket}")
    finalize_doc = rt.state.read(names.finalize_object(batch_id))
    finalize = FinalizeRecord.model_validate(finalize_doc.data) if finalize_doc else None
    records = []
    for index in sorted(batches.experiment_states(rt, batch_id)):
        doc = rt.state.read(names.experiment_object(batch_id, index))
        if doc is not None:
            records.append(ExperimentRecord.model_validate(doc.data))
    members: dict[tuple[str, str], tuple[str, list[str]]] = {}  # (zone, instance) -> status, errors
    groups = []
    if with_compute:
        for zone, mig in launch.groups():
            found = rt.compute.members(zone, mig)
            if found is None and zone != launch.zone:
                continue  # a failover zone the batch did not need
            groups.append(GroupView(name=mig, zone=zone, exists=found is not None, instances=len(found or [])))
            for m in found or []:
                members[(zone, m.name)] = (m.status, list(m.errors))
    alerts: list[AlertView] = []
    if with_alerts:
        try:
            alerts = [AlertView(**a) for a in metrics.raised(rt.clients, batch_id)]
        except Exception as exc:  # noqa: BLE001 - status must work without Monitoring access
            log.warning("could not read alerts from Monitoring: %s", exc)
    counts: dict[str, int] = {}
    for rec in records:
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
    absent = "" if with_compute else None
    return BatchView(
        batch_id=batch_id,
        status=overall,
        group=launch.group,
        zone=launch.zone,
        zones=launch.all_zones,
        template=launch.template,
        results=f"gs://{launch.results_bucket}/{batch_id}/",
        mlflow_experiment=launch.mlflow_experiment,
        mlflow_experiment_url=mlflow_experiment_url(tracking, launch.mlflow_experiment) if with_links else None,
        created_at=launch.created_at,
        launched_at=launch.launched_at,
        finished_at=finalize.finished_at if finalize else None,
        error=launch.error,
        counts=counts,
        limits=limits.limits(launch),
        limit_notes=limits.limit_notes(launch, counts),
        done=len(records) == launch.experiments and all(r.state in TERMINAL for r in records),
        groups=groups,
        alerts=alerts,
        experiments=[
            ExperimentView(
                index=r.index,
                name=r.name,
                environment=r.spec.environment,
                algorithm=r.spec.algorithm,
                seed=r.spec.seed,
                episodes=r.spec.episodes,
                state=r.state,
                instance=r.instance,
                zone=r.zone,
                moved_from=list(r.moved_from),
                instance_status=members[(r.zone, r.instance)][0] if (r.zone, r.instance) in members else absent,
                instance_errors=members[(r.zone, r.instance)][1] if (r.zone, r.instance) in members else [],
                attempts=r.attempts,
                preemptions=r.preemptions,
                failures=r.failures,
                reason=r.reason,
                mlflow_run_id=r.mlflow_run_id,
                mlflow_url=mlflow_run_url(tracking, r.mlflow_run_id),
                tensorboard=tensorboard.log_uri(r.spec.tensorboard, launch.results_bucket, batch_id, r.name),
                outputs=r.output_uris,
                metrics=r.metrics,
                timesteps=r.timesteps,
                created_at=r.created_at,
                running_at=r.running_at,
                finished_at=r.finished_at,
                history=[e.model_dump() for e in r.history],
                log_tail=_tail(rt, launch.results_bucket, r) if with_links else list(r.log_tail),
            )
            for r in records
        ],
        sweep=_sweep(rt, batch_id, records),
        submitted_by=launch.submitted_by,
        retry_of=launch.retry_of,
    )


TAIL_LINES = 5  # of a failed experiment's log, in status


def _tail(rt: Runtime, bucket: str, rec: ExperimentRecord) -> list[str]:
    """A failed experiment's last log lines: its record's (the completion's), else its log's in the bucket."""
    if rec.state != "failed":
        return list(rec.log_tail)[-TAIL_LINES:]
    if rec.log_tail:
        return list(rec.log_tail)[-TAIL_LINES:]
    try:
        from sinergym_cloud.gcp import logs

        return logs.tail(rt.clients.storage.bucket(bucket), rec.batch_id, rec.name, TAIL_LINES)
    except Exception as exc:  # noqa: BLE001 - status must work without the results bucket
        log.info("no log tail for %s: %s", rec.name, exc)
        return []


def _sweep(rt: Runtime, batch_id: str, records: list[ExperimentRecord]) -> dict[str, Any] | None:
    """A sweep's trials, best trial and pruning savings (sweep_view.py); None without a sweep."""
    if not any(r.trial is not None for r in records):
        return None
    from sinergym_cloud.publisher import sweep_view  # Optuna is imported only for a sweep

    return sweep_view.status_of(rt, batch_id, records)
