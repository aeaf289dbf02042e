"""The Cloud Monitoring metrics that fire the on-call alerts (policies: infra/monitoring/)."""

from __future__ import annotations

import logging
import random
import time
from typing import Any

from google.api_core import exceptions
from google.cloud import monitoring_v3

from sinergym_cloud import names, text
from sinergym_cloud.gcp import retry
from sinergym_cloud.gcp.clients import Clients

log = logging.getLogger(__name__)


def _label(value: Any) -> str:
    # Label values are at most 1024 characters.
    return text.clean(value, 1024)


# Cloud Monitoring takes one point per time series per 5 s (https://cloud.google.com/monitoring/quotas).
SAMPLING_SECONDS = 5.0


def write(clients: Clients, metric_type: str, labels: dict[str, Any], value: float = 1.0) -> None:
    """Write one point of a gauge on the ``global`` resource.

    Each alert's series is its own (the batch or the experiment is a label), so a second point on one
    series comes only from a redelivery or a takeover that writes the same point again: Cloud
    Monitoring refuses it within 5 s of the first (``INVALID_ARGUMENT``), so the point is written
    once more after the sampling period, its time taken again (a repeated point opens no second
    incident)."""
    project = clients.settings.project
    series = monitoring_v3.TimeSeries()
    series.metric.type = metric_type
    for key, val in labels.items():
        series.metric.labels[key] = _label(val)
    series.resource.type = "global"
    series.resource.labels["project_id"] = project

    def create() -> None:
        now = time.time()
        seconds = int(now)
        point = monitoring_v3.Point(
            {
                "interval": {"end_time": {"seconds": seconds, "nanos": int((now - seconds) * 1e9)}},
                "value": {"double_value": value},
            }
        )
        series.points = [point]
        clients.metrics.create_time_series(name=f"projects/{project}", time_series=[series], timeout=20)

    def once_more_after_the_sampling_period() -> None:
        try:
            create()
        except exceptions.InvalidArgument:
            time.sleep(SAMPLING_SECONDS + random.uniform(0, 1))
            create()

    retry.call(once_more_after_the_sampling_period, what=f"write metric {metric_type}", deadline=60)
    log.info("metric %s written: %s", metric_type, labels)


def batch_finished(clients: Clients, labels: dict[str, Any]) -> None:
    """The point that fires the batch-finished alert; ``labels`` (control/alerts.py) are what its
    documentation shows on-call staff: counts, VM-hours and cost, the failures, what to run."""
    write(clients, names.METRIC_BATCH_FINISHED, labels)


def batch_failing(clients: Clients, labels: dict[str, Any], rate: float) -> None:
    """The point that pages at once: a batch's failed share passed the threshold (written once per
    batch: control/alerts.py coalesces the experiments that fail together)."""
    write(clients, names.METRIC_BATCH_FAILING, labels, value=rate)


def experiment_failed(clients: Clients, labels: dict[str, Any]) -> None:
    write(clients, names.METRIC_EXPERIMENT_FAILED, labels)


def instance_overdue(clients: Clients, batch_id: str, instance: str, hours: float) -> None:
    write(clients, names.METRIC_INSTANCE_OVERDUE, {"batch_id": batch_id, "instance": instance}, value=hours)


def raised(clients: Clients, batch_id: str, since_hours: float = 24 * 30) -> list[dict[str, Any]]:
    """The alert-firing points written for a batch (what on-call staff were told)."""
    project = clients.settings.project
    now = time.time()
    found: list[dict[str, Any]] = []
    metrics = (
        names.METRIC_BATCH_FINISHED,
        names.METRIC_BATCH_FAILING,
        names.METRIC_EXPERIMENT_FAILED,
        names.METRIC_INSTANCE_OVERDUE,
    )
    for metric in metrics:
        interval = monitoring_v3.TimeInterval(
            {"end_time": {"seconds": int(now) + 60}, "start_time": {"seconds": int(now - since_hours * 3600)}}
        )
        results = clients.metrics.list_time_series(
            request={
                "name": f"projects/{project}",
                "filter": f'metric.type = "{metric}" AND metric.labels.batch_id = "{batch_id}"',
                "interval": interval,
                "view": monitoring_v3.ListTimeSeriesRequest.TimeSeriesView.FULL,
            },
            timeout=20,
        )
        for series in results:
            for point in series.points:
                found.append(
                    {
                        "metric": metric.rsplit("/", 1)[-1],
                        "labels": dict(series.metric.labels),
                        "time": point.interval.end_time.isoformat() if point.interval.end_time else "",
                    }
                )
    return found
