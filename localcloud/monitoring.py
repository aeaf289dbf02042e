"""A Cloud Monitoring emulator: the gRPC MetricService and AlertPolicyService calls the project uses.

``google-cloud-monitoring`` is gRPC-only, so this is a gRPC server on an insecure loopback channel,
serving the client library's own message types. It stores time series, and evaluates threshold
alert policies on every point written, the way Cloud Monitoring does for a ``duration: 0s``
condition: a series whose point crosses the threshold opens an incident (one per series and policy,
so a duplicated point does not alert twice), and the incident is delivered to the local sink: a
line in this process's log, a line in ``alerts.jsonl`` and, if configured, a POST to a webhook in
the shape of Cloud Monitoring's webhook notifications (``state`` ``open``, with the policy's
documentation, subject and links rendered for the series).

An incident closes, with a ``closed`` notification, when a point of its series no longer crosses the
threshold, or when the series has had no point for the policy's ``alert_strategy.auto_close``
(Cloud Monitoring's "the alert closes by itself"), checked every few seconds.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent import futures
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import requests
from google.api import metric_pb2
from google.cloud.monitoring_v3 import types
from google.protobuf import empty_pb2

from localcloud import limits
from localcloud.iam import Resource
from localcloud.identity import Gate

log = logging.getLogger("localcloud.monitoring")
AUTO_CLOSE_CHECK_SECONDS = 5.0

_TERM = re.compile(r'\s*(?P<field>[A-Za-z_.]+)\s*=\s*"(?P<value>[^"]*)"\s*(AND\s+|$)')


def parse_filter(expression: str) -> list[tuple[str, str]]:
    """``metric.type = "x" AND metric.labels.k = "v"`` as (field, value) pairs."""
    terms = []
    rest = expression.strip()
    while rest:
        m = _TERM.match(rest)
        if not m:
            raise ValueError(f"unsupported filter: {expression!r}")
        terms.append((m["field"].replace("metric.label.", "metric.labels."), m["value"]))
        rest = rest[m.end() :]
    return terms


def series_matches(terms: list[tuple[str, str]], series: dict[str, Any]) -> bool:
    for field, value in terms:
        if field == "metric.type":
            actual = series["metric"]["type"]
        elif field == "resource.type":
            actual = series["resource"]["type"]
        elif field.startswith("metric.labels."):
            actual = series["metric"]["labels"].get(field.removeprefix("metric.labels."))
        elif field.startswith("resource.labels."):
            actual = series["resource"]["labels"].get(field.removeprefix("resource.labels."))
        else:
            return False
        if actual != value:
            return False
    return True


COMPARE: dict[int, Callable[[float, float], bool]] = {
    types.ComparisonType.COMPARISON_GT: lambda a, b: a > b,
    types.ComparisonType.COMPARISON_GE: lambda a, b: a >= b,
    types.ComparisonType.COMPARISON_LT: lambda a, b: a < b,
    types.ComparisonType.COMPARISON_LE: lambda a, b: a <= b,
    types.ComparisonType.COMPARISON_EQ: lambda a, b: a == b,
    types.ComparisonType.COMPARISON_NE: lambda a, b: a != b,
}


def point_value(point: types.Point) -> float:
    value = point.value
    kind = types.TypedValue.pb(value).WhichOneof("value")
    if kind in ("int64_value", "double_value"):
        return float(getattr(value, kind))
    if kind == "bool_value":
        return 1.0 if value.bool_value else 0.0
    raise ValueError(f"unsupported point value type {kind}")


def substitute(text: str, series: dict[str, Any], value: float) -> str:
    """Cloud Monitoring's documentation variables: ${metric.label.KEY}, ${metric.type}, ..."""

    def lookup(m: re.Match[str]) -> str:
        key = m.group(1)
        if key.startswith("metric.label."):
            return str(series["metric"]["labels"].get(key.removeprefix("metric.label."), ""))
        if key.startswith("resource.label."):
            return str(series["resource"]["labels"].get(key.removeprefix("resource.label."), ""))
        if key == "metric.type":
            return str(series["metric"]["type"])
        if key == "value":
            return f"{value:g}"
        return m.group(0)

    return re.sub(r"\$\{([A-Za-z0-9_.]+)\}", lookup, text)


def series_key(series: dict[str, Any]) -> str:
    """A time series' identity: its metric type and labels, its resource type and labels."""
    metric = ",".join(f"{k}={v}" for k, v in sorted(series["metric"]["labels"].items()))
    resource = ",".join(f"{k}={v}" for k, v in sorted(series["resource"]["labels"].items()))
    return f"{series['metric']['type']}{{{metric}}} {series['resource']['type']}{{{resource}}}"


class Store:
    def __init__(self, state_dir: Path, webhook: str | None) -> None:
        self.state_dir = state_dir
        state_dir.mkdir(parents=True, exist_ok=True)
        self.series_file = state_dir / "timeseries.jsonl"
        self.alerts_file = state_dir / "alerts.jsonl"
        self.webhook = webhook
        self.lock = threading.Lock()
        self.points: list[dict[str, Any]] = []
        self.descriptors: dict[str, metric_pb2.MetricDescriptor] = {}
        self.policies: dict[str, types.AlertPolicy] = {}
        self.open_incidents: dict[tuple[str, str], dict[str, Any]] = {}
        # Google's limits (localcloud/limits.py): each series' newest point, and what was refused.
        self.limits = limits.Source()
        self.last_point: dict[str, float] = {}
        self.refused_file = state_dir / "refused.jsonl"
        self.last_arrival: dict[str, float] = {}  # series (as incidents name it) -> when its last point arrived

    # ---------------------------------------------------------------- metrics
    def create_time_series(self, request: types.CreateTimeSeriesRequest) -> None:
        """Store each point and evaluate the alert policies on it. With Google's limits on, a request
        of more than 200 series is refused whole, and a point less than 5 s after its series' last
        one (or older than it) is refused while the others are written, as Cloud Monitoring does:
        INVALID_ARGUMENT naming the series."""
        limits = self.limits.get()
        most = limits.monitoring_series_per_request
        if most is not None and len(request.time_series) > most:
            self._refused(f"{len(request.time_series)} series in one request")
            raise ValueError(
                f"Field timeSeries had an invalid value: a request may write at most {most} TimeSeries, "
                f"not {len(request.time_series)}."
            )
        notify = []
        refused: list[str] = []
        with self.lock:
            for i, ts in enumerate(request.time_series):
                if len(ts.points) != 1:
                    raise ValueError("each time series must have exactly one point")
                point = ts.points[0]
                series = {
                    "metric": {"type": ts.metric.type, "labels": dict(ts.metric.labels)},
                    "resource": {"type": ts.resource.type or "global", "labels": dict(ts.resource.labels)},
                }
                value = point_value(point)
                end = point.interval.end_time
                when: str = end.isoformat() if end else datetime.now(UTC).isoformat()
                key = series_key(series)
                at = end.timestamp() if end else time.time()
                why = self._too_soon(key, at, limits.monitoring_seconds_between_points)
                if why:
                    refused.append(f"{series['resource']['type']}{{}} timeSeries[{i}]: {key}: {why}")
                    continue
                self.last_point[key] = at
                self.last_arrival[json.dumps([series["metric"], series["resource"]], sort_keys=True)] = time.time()
                record = {
                    **series,
                    "value": value,
                    "time": when,
                    "received": time.time(),
                    "project": request.name,
                }
                self.points.append(record)
                with self.series_file.open("a") as f:
                    f.write(json.dumps(record) + "\n")
                notify.extend(self._evaluate(series, value, when))
        for incident in notify:
            self._deliver(incident)
        if refused:
            for line in refused:
                self._refused(line)
            raise ValueError("One or more TimeSeries could not be written: " + "; ".join(refused[:10]))

    def _too_soon(self, key: str, at: float, period: float | None) -> str:
        """Why a point at ``at`` may not be written to series ``key`` now ("" if it may)."""
        last = self.last_point.get(key)
        if last is None or period is None:
            return ""
        if at < last:
            return (
                "Points must be written in order. One or more of the points specified had an older start "
                "time than the most recent point."
            )
        if at - last < period:
            return (
                "One or more points were written more frequently than the maximum sampling period "
                "configured for the metric."
            )
        return ""

    def _refused(self, what: str) -> None:
        log.warning("refused (Google's limits): %s", what)
        with self.refused_file.open("a") as f:
            f.write(json.dumps({"time": time.time(), "what": what}) + "\n")

    def list_time_series(self, request: types.ListTimeSeriesRequest) -> types.ListTimeSeriesResponse:
        terms = parse_filter(request.filter)
        start = request.interval.start_time
        end = request.interval.end_time
        grouped: dict[str, dict[str, Any]] = {}
        with self.lock:
            points = list(self.points)
        for p in points:
            if not series_matches(terms, p):
                continue
            when = datetime.fromisoformat(p["time"])
            if start and when < start:
                continue
            if end and when > end:
                continue
            key = json.dumps([p["metric"], p["resource"]], sort_keys=True)
            grouped.setdefault(key, {"series": p, "points": []})["points"].append(p)
        response = types.ListTimeSeriesResponse()
        for group in grouped.values():
            s = group["series"]
            ts = types.TimeSeries(
                metric={"type": s["metric"]["type"], "labels": s["metric"]["labels"]},
                resource={"type": s["resource"]["type"], "labels": s["resource"]["labels"]},
            )
            for p in reversed(group["points"]):  # newest first, as Cloud Monitoring returns them
                when = datetime.fromisoformat(p["time"])
                ts.points.append(types.Point(interval={"end_time": when}, value={"double_value": p["value"]}))
            response.time_series.append(ts)
        return response

    def create_descriptor(self, request: types.CreateMetricDescriptorRequest) -> metric_pb2.MetricDescriptor:
        descriptor = request.metric_descriptor
        if not descriptor.type:
            raise ValueError("metric_descriptor.type is required")
        descriptor.name = f"{request.name}/metricDescriptors/{descriptor.type}"
        with self.lock:
            self.descriptors[descriptor.type] = descriptor
        return descriptor

    def list_descriptors(self, request: types.ListMetricDescriptorsRequest) -> types.ListMetricDescriptorsResponse:
        with self.lock:
            found = list(self.descriptors.values())
        if request.filter:
            m = re.search(r'metric\.type\s*=\s*starts_with\("([^"]*)"\)', request.filter)
            prefix = m.group(1) if m else ""
            found = [d for d in found if d.type.startswith(prefix)]
        return types.ListMetricDescriptorsResponse(metric_descriptors=found)

    # ---------------------------------------------------------------- alerts
    def create_policy(self, request: types.CreateAlertPolicyRequest) -> types.AlertPolicy:
        policy = request.alert_policy
        for condition in policy.conditions:
            parse_filter(condition.condition_threshold.filter)  # reject what we cannot evaluate
        policy.name = f"{request.name}/alertPolicies/{uuid.uuid4().hex[:16]}"
        if "enabled" not in policy:
            policy.enabled = True
        with self.lock:
            self.policies[policy.name] = policy
        return policy

    def list_policies(self, request: types.ListAlertPoliciesRequest) -> types.ListAlertPoliciesResponse:
        with self.lock:
            return types.ListAlertPoliciesResponse(alert_policies=list(self.policies.values()))

    def delete_policy(self, request: types.DeleteAlertPolicyRequest) -> None:
        with self.lock:
            if self.policies.pop(request.name, None) is None:
                raise KeyError(request.name)

    def _evaluate(self, series: dict[str, Any], value: float, when: str) -> list[dict[str, Any]]:
        fired = []
        series_key = json.dumps([series["metric"], series["resource"]], sort_keys=True)
        for policy in self.policies.values():
            if not policy.enabled:
                continue
            for condition in policy.conditions:
                threshold = condition.condition_threshold
                if not series_matches(parse_filter(threshold.filter), series):
                    continue
                compare = COMPARE.get(threshold.comparison)
                if compare is None:
                    continue
                key = (policy.name, series_key)
                violating = compare(value, threshold.threshold_value)
                if violating and key not in self.open_incidents:
                    documentation = policy.documentation
                    incident = {
                        "incident_id": uuid.uuid4().hex,
                        "policy_name": policy.display_name,
                        "condition_name": condition.display_name,
                        "state": "open",
                        "started_at": int(time.time()),
                        "observed_value": f"{value:g}",
                        "threshold_value": f"{threshold.threshold_value:g}",
                        "metric": series["metric"],
                        "resource": series["resource"],
                        "severity": types.AlertPolicy.Severity(policy.severity).name
                        if policy.severity
                        else "SEVERITY_UNSPECIFIED",
                        "documentation": {
                            "content": substitute(documentation.content, series, value),
                            "subject": substitute(documentation.subject, series, value),
                            "mime_type": documentation.mime_type or "text/markdown",
                            "links": [
                                {"display_name": link.display_name, "url": substitute(link.url, series, value)}
                                for link in documentation.links
                            ],
                        },
                        "auto_close_seconds": int(policy.alert_strategy.auto_close.total_seconds())
                        if "alert_strategy" in policy and "auto_close" in policy.alert_strategy
                        else None,
                        "series_key": series_key,
                        "summary": f"{condition.display_name or policy.display_name}: observed {value:g} "
                        f"for {series['metric']['type']} {series['metric']['labels']}",
                        "point_time": when,
                    }
                    self.open_incidents[key] = incident
                    fired.append(incident)
                elif not violating and key in self.open_incidents:
                    fired.append(self._closed(self.open_incidents.pop(key), "the condition is met no more"))
        return fired

    @staticmethod
    def _closed(incident: dict[str, Any], why: str) -> dict[str, Any]:
        ended = {**incident, "state": "closed", "ended_at": int(time.time())}
        ended["summary"] = f"{incident['summary']} (closed: {why})"
        return ended

    def close_stale(self, now: float | None = None) -> list[dict[str, Any]]:
        """Close (and deliver) every open incident whose series has had no point for its policy's
        auto_close; returns them."""
        now = time.time() if now is None else now
        closing = []
        with self.lock:
            for key, incident in list(self.open_incidents.items()):
                after = incident.get("auto_close_seconds")
                last = self.last_arrival.get(incident["series_key"], incident["started_at"])
                if after and now - last >= after:
                    closing.append(self._closed(self.open_incidents.pop(key), f"no data for {after}s"))
        for incident in closing:
            self._deliver(incident)
        return closing

    def _deliver(self, incident: dict[str, Any]) -> None:
        payload = {"version": "1.2", "incident": incident}
        with self.lock, self.alerts_file.open("a") as f:
            f.write(json.dumps(payload) + "\n")
        subject = incident["documentation"]["subject"] or incident["policy_name"]
        state = "ALERT" if incident["state"] == "open" else "CLOSED"
        print(f"{state} [{incident['severity']}] {subject}: {incident['summary']}", flush=True)
        if self.webhook:
            try:
                requests.post(self.webhook, json=payload, timeout=5).raise_for_status()
            except requests.RequestException as exc:
                log.warning("alert webhook %s failed: %s", self.webhook, exc)


# Each served method's IAM permission (https://cloud.google.com/monitoring/access-control).
PERMISSIONS = {
    "CreateTimeSeries": "monitoring.timeSeries.create",
    "CreateServiceTimeSeries": "monitoring.timeSeries.create",
    "ListTimeSeries": "monitoring.timeSeries.list",
    "CreateMetricDescriptor": "monitoring.metricDescriptors.create",
    "ListMetricDescriptors": "monitoring.metricDescriptors.list",
    "CreateAlertPolicy": "monitoring.alertPolicies.create",
    "ListAlertPolicies": "monitoring.alertPolicies.list",
    "DeleteAlertPolicy": "monitoring.alertPolicies.delete",
}


class Gatekeeper(grpc.ServerInterceptor):  # type: ignore[misc]  # grpc declares no types to mypy
    """Each call's credential must hold the method's permission (localcloud/identity.py), else
    ``PERMISSION_DENIED`` naming it, as Cloud Monitoring answers."""

    def __init__(self) -> None:
        self.gate = Gate(service="monitoring")

    def intercept_service(self, continuation: Any, handler_call_details: Any) -> Any:
        if not self.gate.enforced:
            return continuation(handler_call_details)
        method = handler_call_details.method.rsplit("/", 1)[-1]
        permission = PERMISSIONS.get(method, f"monitoring.{method}")
        authorization = dict(handler_call_details.invocation_metadata or ()).get("authorization")
        decision = self.gate.check(authorization, permission, Resource("project"), method)
        if decision.allowed:
            return continuation(handler_call_details)
        message = f"Permission {permission} denied (or the resource may not exist). {decision.why}"

        def deny(request: Any, context: grpc.ServicerContext) -> Any:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, message)

        return grpc.unary_unary_rpc_method_handler(deny)


def _unary(
    fn: Callable[[Any], Any], request_type: Any, response_serializer: Callable[[Any], bytes]
) -> grpc.RpcMethodHandler:
    def handler(request: Any, context: grpc.ServicerContext) -> Any:
        try:
            result = fn(request)
        except KeyError as exc:
            context.abort(grpc.StatusCode.NOT_FOUND, f"not found: {exc}")
        except ValueError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        return empty_pb2.Empty() if result is None else result

    return grpc.unary_unary_rpc_method_handler(
        handler, request_deserializer=request_type.deserialize, response_serializer=response_serializer
    )


def build_server(store: Store, port: int) -> tuple[grpc.Server, int]:
    empty = empty_pb2.Empty.SerializeToString
    metric = grpc.method_handlers_generic_handler(
        "google.monitoring.v3.MetricService",
        {
            "CreateTimeSeries": _unary(store.create_time_series, types.CreateTimeSeriesRequest, empty),
            "CreateServiceTimeSeries": _unary(store.create_time_series, types.CreateTimeSeriesRequest, empty),
            "ListTimeSeries": _unary(
                store.list_time_series, types.ListTimeSeriesRequest, types.ListTimeSeriesResponse.serialize
            ),
            "CreateMetricDescriptor": _unary(
                store.create_descriptor,
                types.CreateMetricDescriptorRequest,
                metric_pb2.MetricDescriptor.SerializeToString,
            ),
            "ListMetricDescriptors": _unary(
                store.list_descriptors,
                types.ListMetricDescriptorsRequest,
                types.ListMetricDescriptorsResponse.serialize,
            ),
        },
    )
    alerts = grpc.method_handlers_generic_handler(
        "google.monitoring.v3.AlertPolicyService",
        {
            "CreateAlertPolicy": _unary(
                store.create_policy, types.CreateAlertPolicyRequest, types.AlertPolicy.serialize
            ),
            "ListAlertPolicies": _unary(
                store.list_policies, types.ListAlertPoliciesRequest, types.ListAlertPoliciesResponse.serialize
            ),
            "DeleteAlertPolicy": _unary(store.delete_policy, types.DeleteAlertPolicyRequest, empty),
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16), interceptors=[Gatekeeper()])
    server.add_generic_rpc_handlers((metric, alerts))
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    return server, bound


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Cloud Monitoring emulator (MetricService, AlertPolicyService).")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--webhook", default=None, help="POST every alert to this URL too")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    store = Store(args.state_dir, args.webhook)
    server, port = build_server(store, args.port)
    server.start()
    log.info("monitoring emulator listening on 127.0.0.1:%d", port)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.wait(AUTO_CLOSE_CHECK_SECONDS):
        store.close_stale()
    server.stop(grace=2).wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
