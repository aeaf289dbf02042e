"""HTTP front end of the Compute Engine emulator: ``/compute/v1/...`` plus ``/_emulator/...``.

``google-cloud-compute`` talks to it unchanged with ``client_options={"api_endpoint": URL}``.
The ``/_emulator`` routes are the emulator's own: health, a state snapshot, the event log used by
tests and benchmarks, settings (boot delay, failed boots, quotas, stockouts, grace periods),
injected faults and preemption. Over 400 lines because it is the one route table: a few lines per
served Compute method, each checked against the discovery document by the conformance tests.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from localcloud.compute import discovery, permissions, quota, rates
from localcloud.compute.errors import ApiError, invalid, not_found, not_implemented
from localcloud.compute.paging import filter_of, paginate
from localcloud.compute.resources import GOOGLE, Operation
from localcloud.compute.verbs import Cloud
from localcloud.identity import Gate
from localcloud.throttle import MinuteWindows

log = logging.getLogger("localcloud.compute")

P = r"/compute/v1/projects/(?P<project>[^/]+)"
Z = P + r"/zones/(?P<zone>[^/]+)"
G = Z + r"/instanceGroupManagers/(?P<mig>[^/]+)"

Handler = Callable[..., Any]
ROUTES: list[tuple[str, re.Pattern[str], str, str]] = []


def route(method: str, pattern: str, name: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        ROUTES.append((method, re.compile(pattern + r"/?$"), name, fn.__name__))
        return fn

    return register


class Api:
    """Each method takes (match groups, query, body) and returns a JSON-able dict."""

    def __init__(self, cloud: Cloud) -> None:
        self.cloud = cloud

    @staticmethod
    def op(op: Operation) -> dict[str, Any]:
        return op.to_json()

    # instance templates
    @route("POST", P + r"/global/instanceTemplates", "instanceTemplates.insert")
    def template_insert(self, g: dict[str, str], q: dict[str, str], body: dict[str, Any]) -> Any:
        return self.op(self.cloud.insert_template(g["project"], body, request_id=q.get("requestId")))

    @route("GET", P + r"/global/instanceTemplates/(?P<name>[^/]+)", "instanceTemplates.get")
    def template_get(self, g: dict[str, str], q: dict[str, str], body: Any) -> Any:
        return self.cloud.get_template(g["project"], g["name"])

    @route("GET", P + r"/global/instanceTemplates", "instanceTemplates.list")
    def template_list(self, g: dict[str, str], q: dict[str, str], body: Any) -> Any:
        return paginate(self.cloud.list_templates(g["project"]), q, "items", filter_of(q))

    @route("DELETE", P + r"/global/instanceTemplates/(?P<name>[^/]+)", "instanceTemplates.delete")
    def template_delete(self, g: dict[str, str], q: dict[str, str], body: Any) -> Any:
        return self.op(self.cloud.delete_template(g["project"], g["name"], request_id=q.get("requestId")))

    # managed instance groups
    @route("POST", Z + r"/instanceGroupManagers", "instanceGroupManagers.insert")
    def mig_insert(self, g: dict[str, str], q: dict[str, str], body: dict[str, Any]) -> Any:
        return self.op(self.cloud.insert_mig(g["project"], g["zone"], body, request_id=q.get("requestId")))

    @route("GET", Z + r"/instanceGroupManagers", "instanceGroupManagers.list")
    def mig_list(self, g: dict[str, str], q: dict[str, str], body: Any) -> Any:
        return paginate(self.cloud.list_migs(g["project"], g["zone"]), q, "items", filter_of(q))

    @route("GET", G, "instanceGroupManagers.get")
    def mig_get(self, g: dict[str, str], q: dict[str, str], body: Any) -> Any:
        return self.cloud.get_mig(g["project"], g["zone"], g["mig"])

    @route("DELETE", G, "instanceGroupManagers.delete")
    def mig_delete(self, g: dict[str, str], q: dict[str, str], body: Any) -> Any:
        return self.op(self.cloud.delete_mig(g["project"], g["zone"], g["mig"], request_id=q.get("requestId")))

    @route("POST", G + r"/resize", "instanceGroupManagers.resize")
    def mig_resize(self, g: dict[str, str], q: dict[str, str], body: Any) -> Any:
        if "size" not in q:
            raise ApiError(400, "required", "Required field 'size' not specified")
        try:
            size = int(q["size"])
        except ValueError:
            raise invalid(f"Invalid value for field 'size': '{q['size']}'") from None
        return self.op(self.cloud.resize(g["project"], g["zone"], g["mig"], size, request_id=q.get("requestId")))

    @route("POST", G + r"/createInstances", "instanceGroupManagers.createInstances")
    def mig_create_instances(self, g: dict[str, str], q: dict[str, str], body: dict[str, Any]) -> Any:
        return self.op(
            self.cloud.create_instances(g["project"], g["zone"], g["mig"], body, request_id=q.get("requestId"))
        )

    @route("POST", G + r"/deleteInstances", "instanceGroupManagers.deleteInstances")
    def mig_delete_instances(self, g: dict[str, str], q: dict[str, str], body: dict[str, Any]) -> Any:
        return self.op(
            self.cloud.delete_instances(g["project"], g["zone"], g["mig"], body, request_id=q.get("requestId"))
        )

    @route("POST", G + r"/recreateInstances", "instanceGroupManagers.recreateInstances")
    def mig_recreate_instances(self, g: dict[str, str], q: dict[str, str], body: dict[str, Any]) -> Any:
        return self.op(
            self.cloud.recreate_instances(g["project"], g["zone"], g["mig"], body, request_id=q.get("requestId"))
        )

    @route("POST", G + r"/listManagedInstances", "instanceGroupManagers.listManagedInstances")
    def mig_list_managed(self, g: dict[str, str], q: dict[str, str], body: Any) -> Any:
        if "orderBy" in q:
            raise invalid("orderBy is not supported by listManagedInstances")
        items = self.cloud.list_managed(g["project"], g["zone"], g["mig"])
        mig = self.cloud.get_mig(g["project"], g["zone"], g["mig"])
        if mig["listManagedInstancesResults"] == "PAGELESS":
            q = {k: v for k, v in q.items() if k not in ("maxResults", "pageToken")}
            return {"managedInstances": [i for i in items if filter_of(q)(i)]}
        return paginate(items, q, "managedInstances", filter_of(q))

    @route("GET", G + r"/listErrors", "instanceGroupManagers.listErrors")
    def mig_list_errors(self, g: dict[str, str], q: dict[str, str], body: Any) -> Any:
        if "filter" in q or "orderBy" in q:
            raise invalid("listErrors supports neither filter nor orderBy")
        return paginate(self.cloud.list_errors(g["project"], g["zone"], g["mig"]), q, "items", lambda i: True)

    # instance groups: every managed group has one (the product never makes unmanaged ones)
    @route("GET", Z + r"/instanceGroups/(?P<name>[^/]+)", "instanceGroups.get")
    def group_get(self, g: dict[str, str], q: dict[str, str], body: Any) -> Any:
        return self.cloud.get_group(g["project"], g["zone"], g["name"])

    @route("GET", Z + r"/instanceGroups", "instanceGroups.list")
    def group_list(self, g: dict[str, str], q: dict[str, str], body: Any) -> Any:
        return paginate(self.cloud.list_groups(g["project"], g["zone"]), q, "items", filter_of(q))

    @route("GET", P + r"/aggregated/instanceGroups", "instanceGroups.aggregatedList")
    def group_aggregated(self, g: dict[str, str], q: dict[str, str], body: Any) -> Any:
        scopes = self._zonal(g["project"], self.cloud.list_groups)
        return self.aggregated(g["project"], q, "instanceGroupAggregatedList", "instanceGroups", scopes)

    # instances
    @route("GET", Z + r"/instances/(?P<name>[^/]+)", "instances.get")
    def instance_get(self, g: dict[str, str], q: dict[str, str], body: Any) -> Any:
        return self.cloud.get_instance(g["project"], g["zone"], g["name"])

    @route("GET", Z + r"/instances/(?P<name>[^/]+)/getGuestAttributes", "instances.getGuestAttributes")
    def instance_guest_attributes(self, g: dict[str, str], q: dict[str, str], body: Any) -> Any:
        return self.cloud.get_guest_attributes(
            g["project"], g["zone"], g["name"], q.get("queryPath", ""), q.get("variableKey", "")
        )

    @route("GET", Z + r"/instances", "instances.list")
    def instance_list(self, g: dict[str, str], q: dict[str, str], body: Any) -> Any:
        return paginate(self.cloud.list_instances(g["project"], g["zone"]), q, "items", filter_of(q))

    # regions (their quotas move as VMs come and go), zones and machine types (quota.py)
    @route("GET", P + r"/regions/(?P<region>[^/]+)", "regions.get")
    def region_get(self, g: dict[str, str], q: dict[str, str], body: Any) -> Any:
        return self.cloud.region(g["project"], g["region"])

    @route("GET", P + r"/regions", "regions.list")
    def region_list(self, g: dict[str, str], q: dict[str, str], body: Any) -> Any:
        regions = [self.cloud.region(g["project"], r) for r in sorted(quota.REGIONS)]
        return paginate(regions, q, "items", filter_of(q))

    @route("GET", P + r"/zones/(?P<zone>[^/]+)", "zones.get")
    def zone_get(self, g: dict[str, str], q: dict[str, str], body: Any) -> Any:
        return quota.zone_json(g["project"], g["zone"])

    @route("GET", P + r"/zones", "zones.list")
    def zone_list(self, g: dict[str, str], q: dict[str, str], body: Any) -> Any:
        zones = [quota.zone_json(g["project"], z) for r in sorted(quota.REGIONS) for z in quota.zones_of(r)]
        return paginate(zones, q, "items", filter_of(q))

    @route("GET", Z + r"/machineTypes/(?P<name>[^/]+)", "machineTypes.get")
    def machine_type_get(self, g: dict[str, str], q: dict[str, str], body: Any) -> Any:
        return quota.machine_type_json(g["project"], g["zone"], g["name"])

    @route("GET", Z + r"/machineTypes", "machineTypes.list")
    def machine_type_list(self, g: dict[str, str], q: dict[str, str], body: Any) -> Any:
        quota.zone_json(g["project"], g["zone"])  # a zone that does not exist is a 404
        found = [quota.machine_type_json(g["project"], g["zone"], n) for n in quota.machine_type_names()]
        return paginate(found, q, "items", filter_of(q))

    # operations
    @route("GET", Z + r"/operations/(?P<op>[^/]+)", "zoneOperations.get")
    def zone_op_get(self, g: dict[str, str], q: dict[str, str], body: Any) -> Any:
        return self.op(self.cloud.get_op(g["project"], g["zone"], g["op"]))

    @route("POST", Z + r"/operations/(?P<op>[^/]+)/wait", "zoneOperations.wait")
    def zone_op_wait(self, g: dict[str, str], q: dict[str, str], body: Any) -> Any:
        return self.op(self.cloud.wait_op(g["project"], g["zone"], g["op"]))

    @route("GET", Z + r"/operations", "zoneOperations.list")
    def zone_op_list(self, g: dict[str, str], q: dict[str, str], body: Any) -> Any:
        return paginate(self.cloud.list_ops(g["project"], g["zone"]), q, "items", filter_of(q))

    @route("GET", P + r"/global/operations", "globalOperations.list")
    def global_op_list(self, g: dict[str, str], q: dict[str, str], body: Any) -> Any:
        return paginate(self.cloud.list_ops(g["project"], None), q, "items", filter_of(q))

    # aggregated lists: one scope per zone (plus "global" where the resource has one)
    def aggregated(
        self, project: str, q: dict[str, str], kind: str, key: str, per_scope: dict[str, list[dict[str, Any]]]
    ) -> dict[str, Any]:
        keep = filter_of(q)
        items: dict[str, Any] = {}
        for scope, found in per_scope.items():
            selected = [i for i in found if keep(i)]
            if selected:
                items[scope] = {key: selected}
            else:
                items[scope] = {
                    "warning": {
                        "code": "NO_RESULTS_ON_PAGE",
                        "message": f"There are no results for scope '{scope}' on this page.",
                        "data": [{"key": "scope", "value": scope}],
                    }
                }
        return {
            "kind": f"compute#{kind}",
            "id": f"projects/{project}/aggregated/{key}",
            "items": items,
            "selfLink": f"{GOOGLE}/projects/{project}/aggregated/{key}",
        }

    def _zonal(self, project: str, lister: Callable[[str, str], list[dict[str, Any]]]) -> dict[str, list[Any]]:
        return {f"zones/{z}": lister(project, z) for z in self.cloud.zones(project)}

    @route("GET", P + r"/aggregated/instances", "instances.aggregatedList")
    def instance_aggregated(self, g: dict[str, str], q: dict[str, str], body: Any) -> Any:
        scopes = self._zonal(g["project"], self.cloud.list_instances)
        return self.aggregated(g["project"], q, "instanceAggregatedList", "instances", scopes)

    @route("GET", P + r"/aggregated/instanceGroupManagers", "instanceGroupManagers.aggregatedList")
    def mig_aggregated(self, g: dict[str, str], q: dict[str, str], body: Any) -> Any:
        scopes = self._zonal(g["project"], self.cloud.list_migs)
        return self.aggregated(g["project"], q, "instanceGroupManagerAggregatedList", "instanceGroupManagers", scopes)

    @route("GET", P + r"/aggregated/instanceTemplates", "instanceTemplates.aggregatedList")
    def template_aggregated(self, g: dict[str, str], q: dict[str, str], body: Any) -> Any:
        scopes = {"global": self.cloud.list_templates(g["project"])}
        return self.aggregated(g["project"], q, "instanceTemplateAggregatedList", "instanceTemplates", scopes)

    @route("GET", P + r"/aggregated/operations", "globalOperations.aggregatedList")
    def op_aggregated(self, g: dict[str, str], q: dict[str, str], body: Any) -> Any:
        project = g["project"]
        scopes = {"global": self.cloud.list_ops(project, None)}
        scopes |= {f"zones/{z}": self.cloud.list_ops(project, z) for z in self.cloud.zones(project)}
        return self.aggregated(project, q, "operationAggregatedList", "operations", scopes)

    # autoscalers: the local cloud has none (the product never creates one), so the lists are empty
    # and every autoscaler is not found; gcloud asks before it describes or deletes a group.
    @route("GET", Z + r"/autoscalers", "autoscalers.list")
    def autoscaler_list(self, g: dict[str, str], q: dict[str, str], body: Any) -> Any:
        return paginate([], q, "items", filter_of(q))

    @route("GET", Z + r"/autoscalers/(?P<name>[^/]+)", "autoscalers.get")
    def autoscaler_get(self, g: dict[str, str], q: dict[str, str], body: Any) -> Any:
        raise not_found(f"projects/{g['project']}/zones/{g['zone']}/autoscalers/{g['name']}")

    @route("GET", P + r"/aggregated/autoscalers", "autoscalers.aggregatedList")
    def autoscaler_aggregated(self, g: dict[str, str], q: dict[str, str], body: Any) -> Any:
        scopes: dict[str, list[dict[str, Any]]] = {f"zones/{z}": [] for z in self.cloud.zones(g["project"])}
        return self.aggregated(g["project"], q, "autoscalerAggregatedList", "autoscalers", scopes)

    @route("GET", P + r"/global/operations/(?P<op>[^/]+)", "globalOperations.get")
    def global_op_get(self, g: dict[str, str], q: dict[str, str], body: Any) -> Any:
        return self.op(self.cloud.get_op(g["project"], None, g["op"]))

    @route("POST", P + r"/global/operations/(?P<op>[^/]+)/wait", "globalOperations.wait")
    def global_op_wait(self, g: dict[str, str], q: dict[str, str], body: Any) -> Any:
        return self.op(self.cloud.wait_op(g["project"], None, g["op"]))

    # the emulator's own
    @route("GET", r"/_emulator/health", "emulator.health")
    def health(self, g: dict[str, str], q: dict[str, str], body: Any) -> Any:
        return {"ok": True}

    @route("GET", r"/_emulator/state", "emulator.state")
    def state(self, g: dict[str, str], q: dict[str, str], body: Any) -> Any:
        return self.cloud.snapshot()

    @route("GET", r"/_emulator/events", "emulator.events")
    def events(self, g: dict[str, str], q: dict[str, str], body: Any) -> Any:
        since = float(q.get("since", 0))
        with self.cloud.lock:
            return {"events": [e for e in self.cloud.events if e["t"] >= since]}

    @route("GET", r"/_emulator/calls", "emulator.calls")
    def calls(self, g: dict[str, str], q: dict[str, str], body: Any) -> Any:
        """Compute API calls served so far, by method (the benchmark's calls-per-experiment figure),
        and those refused by a rate quota."""
        with self.cloud.lock:
            return {"calls": dict(self.cloud.calls), "refused": dict(self.cloud.refused)}

    @route("POST", r"/_emulator/config", "emulator.config")
    def config(self, g: dict[str, str], q: dict[str, str], body: dict[str, Any]) -> Any:
        with self.cloud.lock:
            self.cloud.settings.update(body)
            return dict(self.cloud.settings.__dict__)

    @route("POST", r"/_emulator/faults", "emulator.faults")
    def faults(self, g: dict[str, str], q: dict[str, str], body: dict[str, Any]) -> Any:
        if body.get("clear"):
            with self.cloud.lock:
                self.cloud.faults.clear()
        else:
            self.cloud.add_fault(body)
        return {"ok": True}

    @route(
        "POST",
        r"/_emulator/projects/(?P<project>[^/]+)/zones/(?P<zone>[^/]+)/instances/(?P<name>[^/]+)/preempt",
        "emulator.preempt",
    )
    def preempt(self, g: dict[str, str], q: dict[str, str], body: Any) -> Any:
        """Preempt a RUNNING VM with the spot notice (SIGTERM, ``preempt_grace``), or with
        ``?notice=false`` without it: every process of the guest killed at once."""
        notice = q.get("notice", "true").lower() not in ("false", "0", "no")
        return self.cloud.preempt(g["project"], g["zone"], g["name"], notice)


class RequestHandler(BaseHTTPRequestHandler):
    server_version = "localcloud-compute/1"
    protocol_version = "HTTP/1.1"
    api: Api
    windows = MinuteWindows()
    gate = Gate(service="compute")
    strict = False  # check every response against Google's discovery document (LOCALCLOUD_STRICT)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - BaseHTTPRequestHandler's name
        log.debug("%s " + format, self.address_string(), *args)

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            found = next(
                (
                    (m, name, handler)
                    for verb, pattern, name, handler in ROUTES
                    if verb == method and (m := pattern.match(url.path))
                ),
                None,
            )
            if found is None:
                path = url.path.removeprefix("/compute/v1/")
                unserved = discovery.method_for(method, path) if url.path.startswith("/compute/v1/") else None
                raise not_implemented(unserved) if unserved else not_found(path)
            m, route_name, handler_name = found
            try:
                body = json.loads(raw) if raw else {}
            except json.JSONDecodeError:
                raise invalid("Invalid JSON payload received.") from None
            if not route_name.startswith("emulator."):
                self._authorized(route_name, m.groupdict(), body, url.path)
                self._within_rate_quota(route_name, m.groupdict().get("project", ""))
                with self.api.cloud.lock:
                    self.api.cloud.calls[route_name] += 1
                self.api.cloud.check_fault(route_name)
            result = getattr(self.api, handler_name)(m.groupdict(), query, body)
            if self.strict and not route_name.startswith("emulator."):
                schema = discovery.response_schema(f"compute.{route_name}")
                wrong = discovery.problems(result, schema) if schema else []
                if wrong:
                    log.error("%s answered a body outside %s: %s", route_name, schema, wrong)
                    raise ApiError(500, "backendError", f"{route_name} answered outside {schema}: {wrong[:5]}")
            self._reply(200, result)
        except ApiError as exc:
            self._reply(exc.code, exc.body())
        except Exception as exc:
            log.exception("internal error on %s %s", method, self.path)
            self._reply(500, ApiError(500, "backendError", f"Internal error: {exc}").body())

    def _authorized(self, method: str, groups: dict[str, str], body: Any, path: str) -> None:
        """Refuse the call (403 ``forbidden``) unless the caller holds every permission it needs."""
        authorization = self.headers.get("Authorization")
        permissions.authorize(
            self.gate, self.api.cloud, method, groups=groups, body=body, path=path, authorization=authorization
        )

    def _within_rate_quota(self, method: str, project: str) -> None:
        """Count the call against its quota group's minute (Google's limits on), or refuse it."""
        quotas = self.api.cloud.google.get().compute_requests_per_minute
        group = rates.group(method)
        limit = quotas.get(group) if quotas else None
        if limit is not None and not self.windows.take(f"{project}/{group}", limit):
            with self.api.cloud.lock:
                self.api.cloud.refused[method] += 1
            raise rates.exceeded(group, limit, project)

    def _reply(self, code: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128


def serve(port: int, state_dir: Path, vm_env: dict[str, str]) -> None:
    cloud = Cloud(state_dir, vm_env)
    strict = os.environ.get("LOCALCLOUD_STRICT", "") not in ("", "0", "false")
    handler = type("Handler", (RequestHandler,), {"api": Api(cloud), "strict": strict})
    server = Server(("127.0.0.1", port), handler)
    stop = threading.Event()

    def on_term(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    log.info("compute emulator listening on 127.0.0.1:%d", server.server_address[1])
    stop.wait()
    log.info("stopping: shutting down %d VM(s)", len(cloud.instances))
    server.shutdown()
    cloud.shutdown()


# What a local VM's runtime gets, like a Compute Engine VM's metadata and container env.
VM_ENV_KEYS = (
    "LOCALCLOUD_ID",
    "LOCALCLOUD_DIR",
    "GOOGLE_CLOUD_PROJECT",
    "PUBSUB_EMULATOR_HOST",
    "LOCALCLOUD_PUBSUB_REST_HOST",
    "STORAGE_EMULATOR_HOST",
    "MLFLOW_TRACKING_URI",
    "SINERGYM_COMPUTE_ENDPOINT",
    "SINERGYM_MONITORING_ENDPOINT",
    "SINERGYM_STATE_BUCKET",
    "SINERGYM_RESULTS_BUCKET",
    "SINERGYM_HEARTBEAT_SECONDS",
    "SINERGYM_UPLOAD_SECONDS",
    "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT",
    "SINERGYM_TRAINER_MODULE",
    # bench/workload.py's script (how long it works, the objective per episode, duplicated messages).
    "BENCH_WORK_SECONDS",
    "BENCH_OBJECTIVE",
    "BENCH_EPISODE_SECONDS",
    "BENCH_DUPLICATE",
    "BENCH_SCHEDULE",
    "BENCH_LIKE_TRAINER",
    "BENCH_MARKERS",
    "BENCH_FAIL",
    # How often a VM's log shipper stores a chunk (sinergym_cloud/vm/logship.py).
    "SINERGYM_LOG_CHUNK_SECONDS",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Compute Engine REST emulator whose instances are local VMs.")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--state-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    vm_env = {k: os.environ[k] for k in VM_ENV_KEYS if k in os.environ}
    if os.environ.get("LOCALCLOUD_VM_TOKEN"):  # the VMs' service account (the trainer's)
        vm_env["LOCALCLOUD_TOKEN"] = os.environ["LOCALCLOUD_VM_TOKEN"]
    serve(args.port, args.state_dir, vm_env)
    return 0


if __name__ == "__main__":
    sys.exit(main())
