"""The Compute emulator held to Google's definition: the discovery document, Google's error shapes,
operations that only exist for accepted requests, asynchronous operation errors, and a product that
decides on error reasons, never on message text.

Bodies are fetched raw (``requests``), so what is checked is what the emulator sends, not what a
client library makes of it.
"""

from __future__ import annotations

import ast
import uuid
from collections.abc import Iterator
from importlib import metadata
from typing import Any

import pytest
from google.api_core import exceptions
from google.cloud import compute_v1

from localcloud.compute import discovery, server
from sinergym_cloud.gcp.compute import ComputeApi
from tests.conftest import REPO, Cloud, new_batch_id, wait_for

PROJECT = "local-project"
ZONE = "europe-west1-b"
TEMPLATE = "sinergym-template"

# Google's JSON error envelope (https://cloud.google.com/apis/design/errors#http_mapping): it is not a
# schema of the discovery document, so it is spelled out here.
ERROR_ENVELOPE = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "code": {"type": "integer", "format": "int32"},
                "message": {"type": "string"},
                "status": {"type": "string"},
                "errors": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "message": {"type": "string"},
                            "domain": {"type": "string"},
                            "reason": {"type": "string"},
                        },
                    },
                },
            },
        }
    },
}


def test_the_discovery_document_revision_is_pinned() -> None:
    # A new google-api-python-client may ship a new revision of Compute's API: this test fails then,
    # so the emulator is checked against it (and REVISION moved) in a reviewed change.
    assert metadata.version("google-api-python-client") == "2.202.0"
    assert discovery.document()["revision"] == discovery.REVISION


def test_every_route_is_a_compute_method_with_its_verb_and_path() -> None:
    served = [(verb, pattern, name) for verb, pattern, name, _ in server.ROUTES if not name.startswith("emulator.")]
    assert len(served) >= 25
    for verb, pattern, name in served:
        m = discovery.method(f"compute.{name}")
        assert m["httpMethod"] == verb, name
        sample = "/compute/v1/" + "".join(
            part if not part.startswith("{") else "x1" for part in _split_template(m["path"])
        )
        assert pattern.match(sample), (name, m["path"])
        assert discovery.method_for(verb, sample.removeprefix("/compute/v1/")) == m["id"]


def _split_template(path: str) -> Iterator[str]:
    rest = path
    while "{" in rest:
        head, _, tail = rest.partition("{")
        name, _, rest = tail.partition("}")
        yield head
        yield "{" + name + "}"
    yield rest


def test_the_validator_catches_what_google_would_never_send() -> None:
    # The check that every other test leans on must be able to fail.
    good = {"kind": "compute#operation", "id": "123", "status": "DONE", "progress": 100}
    assert discovery.problems(good, "Operation") == []
    assert discovery.problems({**good, "id": 123}, "Operation")  # int64 must be a string
    assert discovery.problems({**good, "status": "FINISHED"}, "Operation")  # not an enum value
    assert discovery.problems({**good, "progres": 1}, "Operation")  # no such field
    assert discovery.problems({"fingerprint": "local"}, "Metadata")  # not base64
    assert discovery.problems({"fingerprint": "bG9jYWw="}, "Metadata") == []
    assert discovery.problems({"items": {"zones/a": {"instances": [{"id": "x"}]}}}, "InstanceAggregatedList")


def _url(cloud: Cloud, path: str) -> str:
    return f"{cloud.compute_url}/compute/v1/projects/{PROJECT}/{path}"


class Recorder:
    """Fetches bodies raw and checks each against the schema of the method it came from."""

    def __init__(self, cloud: Cloud) -> None:
        self.cloud = cloud
        self.kinds: set[str] = set()

    def call(self, method_id: str, verb: str, path: str, *, status: int = 200, **kwargs: Any) -> Any:
        response = self.cloud.http.request(verb, _url(self.cloud, path), timeout=30, **kwargs)
        assert response.status_code == status, (method_id, response.status_code, response.text[:500])
        body = response.json()
        if status == 200:
            schema = discovery.response_schema(method_id)
            assert schema, method_id
            assert discovery.problems(body, schema) == [], (method_id, discovery.problems(body, schema))
            self.kinds.add(schema)
        else:
            assert discovery.problems(body, ERROR_ENVELOPE) == [], body
            assert body["error"]["code"] == status
            self.kinds.add(f"error {status}")
        return body

    def wait(self, op: dict[str, Any]) -> dict[str, Any]:
        scope = f"zones/{ZONE}" if op.get("zone") else "global"
        kind = "zoneOperations" if op.get("zone") else "globalOperations"
        return dict(self.call(f"compute.{kind}.wait", "POST", f"{scope}/operations/{op['name']}/wait"))


def test_every_response_kind_matches_the_discovery_document(cloud: Cloud) -> None:
    r = Recorder(cloud)
    group = f"g-{new_batch_id()}"
    base = f"zones/{ZONE}/instanceGroupManagers"
    r.call("compute.instanceTemplates.get", "GET", f"global/instanceTemplates/{TEMPLATE}")
    r.call("compute.instanceTemplates.list", "GET", "global/instanceTemplates")
    r.call("compute.instanceTemplates.aggregatedList", "GET", "aggregated/instanceTemplates")
    template = f"t-{new_batch_id()}"
    op = r.call(
        "compute.instanceTemplates.insert",
        "POST",
        "global/instanceTemplates",
        json={
            "name": template,
            "properties": {
                "machineType": "e2-small",
                "metadata": {"items": [{"key": "enable-guest-attributes", "value": "TRUE"}]},
            },
        },
    )
    assert r.wait(op)["status"] == "DONE"
    op = r.call(
        "compute.instanceGroupManagers.insert",
        "POST",
        base,
        json={"name": group, "baseInstanceName": group, "instanceTemplate": f"global/instanceTemplates/{TEMPLATE}"},
        params={"requestId": str(uuid.uuid4())},
    )
    assert op["status"] in ("RUNNING", "DONE") and "creationTimestamp" in op
    assert r.wait(op)["progress"] == 100
    op = r.call(
        "compute.instanceGroupManagers.createInstances",
        "POST",
        f"{base}/{group}/createInstances",
        json={"instances": [{"name": f"{group}-0", "preservedState": {"metadata": {"k": "v"}}}]},
    )
    r.wait(op)
    described = r.call("compute.instanceGroupManagers.get", "GET", f"{base}/{group}")
    assert described["status"]["stateful"]["hasStatefulConfig"] is True
    wait_for(
        lambda: r.call("compute.instanceGroupManagers.get", "GET", f"{base}/{group}")["status"]["isStable"],
        120,
        "the group stable",
        every=0.5,
    )
    r.call("compute.instanceGroupManagers.list", "GET", base)
    r.call("compute.instanceGroupManagers.aggregatedList", "GET", "aggregated/instanceGroupManagers")
    r.call("compute.instanceGroupManagers.listManagedInstances", "POST", f"{base}/{group}/listManagedInstances")
    r.call("compute.instanceGroupManagers.listErrors", "GET", f"{base}/{group}/listErrors")
    assert r.call("compute.instanceGroups.get", "GET", f"zones/{ZONE}/instanceGroups/{group}")["size"] == 1
    r.call("compute.instanceGroups.list", "GET", f"zones/{ZONE}/instanceGroups")
    r.call("compute.instanceGroups.aggregatedList", "GET", "aggregated/instanceGroups")
    instance = r.call("compute.instances.get", "GET", f"zones/{ZONE}/instances/{group}-0")
    assert instance["disks"][0]["boot"] is True and instance["serviceAccounts"]
    attributes = f"zones/{ZONE}/instances/{group}-0/getGuestAttributes"
    wait_for(
        lambda: cloud.http.get(_url(cloud, attributes), params={"queryPath": "hostkeys/"}, timeout=10).ok,
        60,
        "the VM's host keys in its guest attributes",
    )
    r.call("compute.instances.getGuestAttributes", "GET", attributes, params={"queryPath": "hostkeys/"})
    r.call("compute.instances.list", "GET", f"zones/{ZONE}/instances")
    r.call("compute.instances.aggregatedList", "GET", "aggregated/instances")
    r.call("compute.autoscalers.list", "GET", f"zones/{ZONE}/autoscalers")
    r.call("compute.autoscalers.aggregatedList", "GET", "aggregated/autoscalers")
    region = r.call("compute.regions.get", "GET", "regions/europe-west1")
    assert {"CPUS", "INSTANCES", "PREEMPTIBLE_CPUS"} <= {q["metric"] for q in region["quotas"]}
    assert any(z.endswith(f"/projects/{PROJECT}/zones/{ZONE}") for z in region["zones"])
    assert "europe-west1" in {i["name"] for i in r.call("compute.regions.list", "GET", "regions")["items"]}
    assert r.call("compute.zones.get", "GET", f"zones/{ZONE}")["region"].endswith("regions/europe-west1")
    r.call("compute.zones.list", "GET", "zones")
    machine = r.call("compute.machineTypes.get", "GET", f"zones/{ZONE}/machineTypes/n2-highcpu-8")
    assert (machine["guestCpus"], machine["memoryMb"], machine["zone"]) == (8, 8192, ZONE)
    listed = r.call("compute.machineTypes.list", "GET", f"zones/{ZONE}/machineTypes", params={"maxResults": "5"})
    assert len(listed["items"]) == 5 and "nextPageToken" in listed
    r.call("compute.zoneOperations.get", "GET", f"zones/{ZONE}/operations/{op['name']}")
    r.call("compute.zoneOperations.list", "GET", f"zones/{ZONE}/operations")
    r.call("compute.globalOperations.list", "GET", "global/operations")
    r.call("compute.globalOperations.aggregatedList", "GET", "aggregated/operations")
    r.wait(r.call("compute.instanceGroupManagers.resize", "POST", f"{base}/{group}/resize", params={"size": "1"}))
    op = r.call(
        "compute.instanceGroupManagers.recreateInstances",
        "POST",
        f"{base}/{group}/recreateInstances",
        json={"instances": [f"zones/{ZONE}/instances/{group}-0"]},
    )
    r.wait(op)
    op = r.call(
        "compute.instanceGroupManagers.deleteInstances",
        "POST",
        f"{base}/{group}/deleteInstances",
        json={"instances": [f"zones/{ZONE}/instances/{group}-0"], "skipInstancesOnValidationError": True},
    )
    r.wait(op)
    r.wait(r.call("compute.instanceGroupManagers.delete", "DELETE", f"{base}/{group}"))
    r.call(
        "compute.globalOperations.get",
        "GET",
        "global/operations/"
        + r.wait(r.call("compute.instanceTemplates.delete", "DELETE", f"global/instanceTemplates/{template}"))["name"],
    )
    # error envelopes
    r.call("compute.instances.get", "GET", f"zones/{ZONE}/instances/nope", status=404)
    r.call("compute.instanceGroupManagers.insert", "POST", base, json={"name": "Bad_Name"}, status=400)
    r.call("compute.instanceTemplates.insert", "POST", "global/instanceTemplates", json={"name": TEMPLATE}, status=409)
    r.call("compute.instances.delete", "DELETE", f"zones/{ZONE}/instances/nope", status=501)
    r.call("compute.regions.get", "GET", "regions/mars-north1", status=404)
    r.call("compute.machineTypes.get", "GET", f"zones/{ZONE}/machineTypes/n2-highcpu-7", status=404)
    served = {
        discovery.response_schema(f"compute.{name}")
        for _, _, name, _ in server.ROUTES
        if not name.startswith("emulator.") and name != "autoscalers.get"
    }
    assert served <= r.kinds, served - r.kinds
    assert {"error 400", "error 404", "error 409", "error 501"} <= r.kinds
    print(f"{len(r.kinds)} response kinds validated: {sorted(r.kinds)}")


def test_an_unserved_method_fails_loudly_and_names_itself(cloud: Cloud) -> None:
    response = cloud.http.delete(_url(cloud, f"zones/{ZONE}/instances/some-vm"), timeout=10)
    assert response.status_code == 501
    error = response.json()["error"]
    assert error["errors"][0]["reason"] == "notImplemented"
    assert "compute.instances.delete" in error["message"]
    # Through Google's client, as the product would call it: not a NotFound it could take for "gone".
    with pytest.raises(exceptions.MethodNotImplemented):
        cloud.runtime().clients.instances.delete(project=PROJECT, zone=ZONE, instance="some-vm")
    # A path Compute Engine does not have at all stays a 404.
    assert cloud.http.get(_url(cloud, "noSuchCollection"), timeout=10).status_code == 404


def _ops(cloud: Cloud) -> list[dict[str, Any]]:
    return list(cloud.http.get(_url(cloud, f"zones/{ZONE}/operations"), timeout=10).json()["items"])


def test_rejected_requests_leave_no_operation_and_a_retry_gets_the_real_outcome(cloud: Cloud) -> None:
    base = _url(cloud, f"zones/{ZONE}/instanceGroupManagers")
    group = f"g-{new_batch_id()}"
    before = {o["name"] for o in _ops(cloud)}
    rid = str(uuid.uuid4())
    body = {"name": group, "baseInstanceName": group, "instanceTemplate": "global/instanceTemplates/missing"}
    assert cloud.http.post(base, json=body, params={"requestId": rid}, timeout=10).status_code == 404
    cloud.emulator("faults", {"method": "instanceGroupManagers.insert", "code": 503, "reason": "backendError"})
    body["instanceTemplate"] = f"global/instanceTemplates/{TEMPLATE}"
    assert cloud.http.post(base, json=body, params={"requestId": rid}, timeout=10).status_code == 503
    assert {o["name"] for o in _ops(cloud)} == before  # no ghost: nothing was accepted
    first = cloud.http.post(base, json=body, params={"requestId": rid}, timeout=10)
    assert first.status_code == 200
    again = cloud.http.post(base, json=body, params={"requestId": rid}, timeout=10)
    assert again.status_code == 200 and again.json()["name"] == first.json()["name"]
    assert [o for o in _ops(cloud) if o["name"] not in before] == [
        o for o in _ops(cloud) if o["name"] == first.json()["name"]
    ]
    assert ComputeApi(cloud.runtime().clients, PROJECT).delete_group(ZONE, group) is True


def test_delete_instances_of_a_non_member_fails_asynchronously(cloud: Cloud) -> None:
    rt = cloud.runtime()
    api = ComputeApi(rt.clients, PROJECT)
    group = f"g-{new_batch_id()}"
    api.ensure_group(ZONE, group, TEMPLATE)
    request = compute_v1.DeleteInstancesInstanceGroupManagerRequest(
        project=PROJECT,
        zone=ZONE,
        instance_group_manager=group,
        instance_group_managers_delete_instances_request_resource=compute_v1.InstanceGroupManagersDeleteInstancesRequest(
            instances=[f"zones/{ZONE}/instances/{group}-stranger"], skip_instances_on_validation_error=False
        ),
    )
    op = rt.clients.migs.delete_instances_unary(request=request)  # accepted: no synchronous error
    done = rt.clients.zone_operations.wait(project=PROJECT, zone=ZONE, operation=op.name)
    assert done.status == compute_v1.Operation.Status.DONE
    assert done.http_error_status_code == 400 and done.http_error_message == "BAD REQUEST"
    assert done.error.errors[0].code == "RESOURCE_NOT_FOUND"
    with pytest.raises(exceptions.BadRequest, match="RESOURCE_NOT_FOUND"):
        api.wait(op, ZONE)
    # The product's own path to a failed operation: recreating a VM the group does not have.
    assert api.recreate_instance(ZONE, group, f"{group}-stranger") is False
    failed = [o for o in _ops(cloud) if o.get("targetId") == str(done.target_id) and "error" in o]
    assert {o["operationType"] for o in failed} == {
        "compute.instanceGroupManagers.deleteInstances",
        "compute.instanceGroupManagers.recreateInstances",
    }
    assert rt.clients.migs.get(project=PROJECT, zone=ZONE, instance_group_manager=group).target_size == 0
    assert api.delete_group(ZONE, group) is True


def test_a_group_being_deleted_is_recognised_by_its_reason(cloud: Cloud) -> None:
    rt = cloud.runtime()
    api = ComputeApi(rt.clients, PROJECT)
    group = f"g-{new_batch_id()}"
    api.ensure_group(ZONE, group, TEMPLATE)
    api.create_instances(ZONE, group, {f"{group}-0": {}})
    wait_for(lambda: (m := api.members(ZONE, group)) and m[0].status == "RUNNING", 120, "the VM running")
    rt.clients.migs.delete_unary(project=PROJECT, zone=ZONE, instance_group_manager=group)
    with pytest.raises(exceptions.BadRequest) as info:
        rt.clients.migs.delete_unary(project=PROJECT, zone=ZONE, instance_group_manager=group)
    assert [e["reason"] for e in info.value.errors] == ["resourceNotReady"]
    assert "being deleted" not in str(info.value)  # nothing for a message matcher to find
    assert api.delete_group(ZONE, group) is False  # decided on the reason
    wait_for(lambda: api.members(ZONE, group) is None, 60, "the group gone")


PRODUCT = ("sinergym_cloud", "functions", "trainer")


def message_matches(source: str) -> list[int]:
    """Lines where an ``except ... as e`` handler inspects ``str(e)``, ``e.message`` or ``e.args`` to
    decide something (a comparison, ``in``, ``startswith``, a regular expression)."""
    found = []
    for handler in ast.walk(ast.parse(source)):
        if not isinstance(handler, ast.ExceptHandler) or not handler.name:
            continue
        name = handler.name

        def is_text(node: ast.AST, name: str = name) -> bool:
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("str", "repr"):
                return any(isinstance(a, ast.Name) and a.id == name for a in node.args)
            if isinstance(node, ast.Attribute) and node.attr in ("message", "args", "details"):
                return isinstance(node.value, ast.Name) and node.value.id == name
            return False

        for node in (n for stmt in handler.body for n in ast.walk(stmt)):
            if isinstance(node, ast.Compare) and any(is_text(x) for x in [node.left, *node.comparators]):
                found.append(node.lineno)
            elif isinstance(node, ast.Call):
                func = node.func
                method = isinstance(func, ast.Attribute) and func.attr in ("startswith", "endswith", "find", "index")
                if (method and is_text(func.value)) or (
                    isinstance(func, ast.Attribute)
                    and isinstance(func.value, ast.Name)
                    and func.value.id == "re"
                    and any(is_text(a) for a in node.args)
                ):
                    found.append(node.lineno)
    return found


def test_message_matcher_finds_what_it_is_for() -> None:
    bad = "try:\n    f()\nexcept E as exc:\n    if 'being deleted' in str(exc):\n        pass\n"
    assert message_matches(bad) == [4]
    assert message_matches("try:\n    f()\nexcept E as e:\n    ok = re.search('x', str(e))\n") == [4]
    assert message_matches("try:\n    f()\nexcept E as e:\n    log(str(e))\n") == []


def test_product_code_never_decides_on_error_message_text() -> None:
    offenders = []
    for package in PRODUCT:
        for path in sorted((REPO / package).rglob("*.py")):
            offenders += [f"{path.relative_to(REPO)}:{line}" for line in message_matches(path.read_text())]
    assert offenders == [], "decide on codes and reasons (exc.errors[].reason, exc.code), not on message text"
