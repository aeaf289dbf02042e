"""The state and behaviour of the Compute Engine emulator.

Resources have Google's JSON shapes (see ../shared/reference/compute-rest.md), operations Google's
semantics: a managed instance group's insert/createInstances/deleteInstances operation is DONE as
soon as the change is scheduled, while the VMs go through PROVISIONING, STAGING, RUNNING (or
STOPPING, TERMINATED) in the background, watched through listManagedInstances.

An operation exists only for an accepted request (a rejected one records nothing, so a retry with
the same ``requestId`` is judged afresh, and a retry of an accepted one gets its operation back).
Failures Compute Engine reports on the operation (deleteInstances of a non-member) end it DONE with
``error`` and ``httpErrorStatusCode``. How long operations run and VMs take to boot comes from the
settings (localcloud/profiles.py: the fast default, or Compute Engine's times).

Each VM is a real local process tree (see localcloud/vm.py). Everything here runs under one lock;
VM boots and shutdowns run on their own threads and take the lock only to change state.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import hashlib
import itertools
import json
import logging
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from localcloud import procs
from localcloud.compute import filters
from sinergym_cloud import names

log = logging.getLogger(__name__)

GOOGLE = "https://www.googleapis.com/compute/v1"
NAME = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
PROJECT_NUMBER = "123456789012"
SSH_PORT_LABEL = "localcloud-ssh-port"
GUEST_ATTRIBUTE = re.compile(
    r"^GUEST-ATTRIBUTE (?P<namespace>[a-z0-9-]{1,64})/(?P<key>[A-Za-z0-9@._-]{1,64}) (?P<value>\S{1,4096})$"
)


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def new_id() -> str:
    return str(random.randint(10**18, 9 * 10**18))


def fingerprint(*parts: Any) -> str:
    """A Compute Engine fingerprint: 8 bytes, base64 (``format: byte`` in the discovery document),
    derived from the content it fingerprints so that it changes when the content does."""
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).digest()[:8]
    return base64.b64encode(digest).decode()


HTTP_ERROR_MESSAGES = {
    400: "BAD REQUEST",
    403: "FORBIDDEN",
    404: "NOT FOUND",
    409: "CONFLICT",
    412: "PRECONDITION FAILED",
    429: "TOO MANY REQUESTS",
    500: "INTERNAL SERVER ERROR",
    503: "SERVICE UNAVAILABLE",
}


class ApiError(Exception):
    """An error answered in Google's envelope: ``{"error": {"code", "message", "errors": [...]}}``."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "code": self.code,
                "message": self.message,
                "errors": [{"message": self.message, "domain": "global", "reason": self.reason}],
            }
        }


def not_found(path: str) -> ApiError:
    return ApiError(404, "notFound", f"The resource '{path}' was not found")


def already_exists(path: str) -> ApiError:
    return ApiError(409, "alreadyExists", f"The resource '{path}' already exists")


def invalid(message: str) -> ApiError:
    return ApiError(400, "invalid", message)


def not_implemented(method: str) -> ApiError:
    return ApiError(501, "notImplemented", f"the local cloud does not emulate {method}")


@dataclass(frozen=True)
class OpError:
    """Why an operation failed, in the operation's own shape: an HTTP status plus Compute's error
    code (``RESOURCE_NOT_FOUND``, ``QUOTA_EXCEEDED``, ...), unlike the request envelope's reasons."""

    http_code: int
    code: str
    message: str


def check_name(field_name: str, value: Any, max_length: int = 63) -> str:
    if not isinstance(value, str) or not value:
        raise ApiError(400, "required", f"Required field '{field_name}' not specified")
    if len(value) > max_length or not NAME.match(value):
        raise invalid(
            f"Invalid value for field '{field_name}': '{value}'. Must be a match of regex "
            "'(?:[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?)'"
        )
    return value


def last_segment(url: str, kind: str) -> str:
    """The resource name from a full URL, a ``projects/...`` path or a short form."""
    parts = url.rstrip("/").split("/")
    if len(parts) < 2 or parts[-2] != kind:
        raise invalid(f"Invalid value for field 'resource': '{url}'. The URL is malformed.")
    return parts[-1]


@dataclass
class Operation:
    project: str
    zone: str | None
    op_type: str
    target_link: str
    target_id: str
    name: str = field(default_factory=lambda: f"operation-{int(time.time() * 1000)}-{secrets.token_hex(6)}")
    id: str = field(default_factory=new_id)
    status: str = "RUNNING"
    progress: int = 0
    insert_time: str = field(default_factory=now)
    end_time: str | None = None
    error: OpError | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def finish(self, error: OpError | None = None) -> None:
        self.error = error
        self.progress = 100
        self.status = "DONE"
        self.end_time = now()
        self.done.set()

    def to_json(self) -> dict[str, Any]:
        scope = f"zones/{self.zone}" if self.zone else "global"
        body: dict[str, Any] = {
            "kind": "compute#operation",
            "id": self.id,
            "name": self.name,
            "operationType": self.op_type,
            "targetLink": self.target_link,
            "targetId": self.target_id,
            "status": self.status,
            "user": "local@localcloud",
            "progress": self.progress,
            "creationTimestamp": self.insert_time,
            "insertTime": self.insert_time,
            "startTime": self.insert_time,
            "selfLink": f"{GOOGLE}/projects/{self.project}/{scope}/operations/{self.name}",
        }
        if self.zone:
            body["zone"] = f"{GOOGLE}/projects/{self.project}/zones/{self.zone}"
        if self.end_time:
            body["endTime"] = self.end_time
        if self.error:
            body["error"] = {"errors": [{"code": self.error.code, "message": self.error.message}]}
            body["httpErrorStatusCode"] = self.error.http_code
            body["httpErrorMessage"] = HTTP_ERROR_MESSAGES.get(self.error.http_code, "BAD REQUEST")
        return body


@dataclass
class Vm:
    project: str
    zone: str
    name: str
    mig: str | None
    template: dict[str, Any]
    template_url: str
    preserved: dict[str, str]
    id: str = field(default_factory=new_id)
    status: str = "PROVISIONING"
    created: str = field(default_factory=now)
    started: str = ""
    boot_id: str = ""
    home: Path | None = None
    ssh_port: int = 0
    process: subprocess.Popen[bytes] | None = None
    pid_record: procs.PidRecord | None = None
    boots: int = 0
    ready: bool = False
    boot_error: str = ""
    stopping: bool = False
    # What the guest wrote to its guest attributes (namespace, key) -> value: the host keys, as
    # Google's guest agent publishes them. A new boot starts with none.
    guest_attributes: dict[tuple[str, str], str] = field(default_factory=dict)

    @property
    def guest_attributes_enabled(self) -> bool:
        """Compute Engine keeps guest attributes only with ``enable-guest-attributes=TRUE`` metadata."""
        return self.metadata().get("enable-guest-attributes", "").upper() == "TRUE"

    @property
    def self_link(self) -> str:
        return f"{GOOGLE}/projects/{self.project}/zones/{self.zone}/instances/{self.name}"

    def metadata(self) -> dict[str, str]:
        items = {i["key"]: i.get("value", "") for i in self.template.get("metadata", {}).get("items", [])}
        items.update(self.preserved)
        if self.mig:
            items["created-by"] = f"projects/{PROJECT_NUMBER}/zones/{self.zone}/instanceGroupManagers/{self.mig}"
        return items

    def to_json(self) -> dict[str, Any]:
        props = self.template
        zone_url = f"{GOOGLE}/projects/{self.project}/zones/{self.zone}"
        metadata = [{"key": k, "value": v} for k, v in self.metadata().items()]
        # The port of this local VM's sshd is the emulator's own record (22 on Compute Engine).
        labels = {**props.get("labels", {}), **({SSH_PORT_LABEL: str(self.ssh_port)} if self.ssh_port else {})}
        body: dict[str, Any] = {
            "kind": "compute#instance",
            "id": self.id,
            "name": self.name,
            "zone": zone_url,
            "machineType": f"{zone_url}/machineTypes/{props.get('machineType', 'e2-standard-2')}",
            "status": self.status,
            "creationTimestamp": self.created,
            "selfLink": self.self_link,
            "labels": labels,
            "labelFingerprint": fingerprint(labels),
            "metadata": {"kind": "compute#metadata", "fingerprint": fingerprint(metadata), "items": metadata},
            "tags": {"fingerprint": fingerprint(props.get("tags", {}).get("items", []))},
            "scheduling": dict(props.get("scheduling", {"onHostMaintenance": "MIGRATE", "automaticRestart": True})),
            "networkInterfaces": [
                {
                    "kind": "compute#networkInterface",
                    "name": "nic0",
                    "network": f"{GOOGLE}/projects/{self.project}/global/networks/default",
                    "networkIP": "127.0.0.1",
                    "fingerprint": fingerprint(self.id, "nic0"),
                    "stackType": "IPV4_ONLY",
                }
            ],
            "disks": [self._boot_disk(zone_url)],
            "serviceAccounts": [dict(a) for a in props.get("serviceAccounts", [])],
            "cpuPlatform": "Intel Broadwell" if self.status == "RUNNING" else "Unknown CPU Platform",
            "deletionProtection": False,
            "startRestricted": False,
            "canIpForward": False,
            "fingerprint": fingerprint(self.id, self.status),
        }
        if self.status == "RUNNING":
            body["lastStartTimestamp"] = self.started or self.created
        return body

    def _boot_disk(self, zone_url: str) -> dict[str, Any]:
        template_disks = self.template.get("disks") or [{}]
        params = template_disks[0].get("initializeParams", {})
        return {
            "kind": "compute#attachedDisk",
            "type": "PERSISTENT",
            "mode": "READ_WRITE",
            "source": f"{zone_url}/disks/{self.name}",
            "deviceName": "persistent-disk-0",
            "index": 0,
            "boot": True,
            "autoDelete": True,
            "interface": "SCSI",
            "diskSizeGb": str(params.get("diskSizeGb", "10")),
            "architecture": "X86_64",
        }


@dataclass
class Member:
    name: str
    preserved: dict[str, str]
    current_action: str = "CREATING"
    vm: Vm | None = None
    errors: list[dict[str, str]] = field(default_factory=list)


@dataclass
class Mig:
    project: str
    zone: str
    name: str
    base_instance_name: str
    template_url: str
    target_size: int = 0
    id: str = field(default_factory=new_id)
    created: str = field(default_factory=now)
    members: dict[str, Member] = field(default_factory=dict)
    deleting: bool = False
    list_mode: str = "PAGELESS"
    description: str = ""
    group_id: str = field(default_factory=new_id)

    @property
    def self_link(self) -> str:
        return f"{GOOGLE}/projects/{self.project}/zones/{self.zone}/instanceGroupManagers/{self.name}"

    def to_json(self) -> dict[str, Any]:
        actions = {
            a: 0
            for a in (
                "none",
                "creating",
                "creatingWithoutRetries",
                "verifying",
                "recreating",
                "deleting",
                "abandoning",
                "restarting",
                "refreshing",
            )
        }
        for m in self.members.values():
            key = {"CREATING_WITHOUT_RETRIES": "creatingWithoutRetries"}.get(m.current_action, m.current_action.lower())
            actions[key] = actions.get(key, 0) + 1
        stable = all(m.current_action == "NONE" for m in self.members.values())
        # Per-instance configs (createInstances with preserved state) make a group stateful.
        stateful = any(m.preserved for m in self.members.values())
        zone_url = f"{GOOGLE}/projects/{self.project}/zones/{self.zone}"
        return {
            "kind": "compute#instanceGroupManager",
            "id": self.id,
            "name": self.name,
            "zone": zone_url,
            "selfLink": self.self_link,
            "creationTimestamp": self.created,
            "description": self.description,
            "baseInstanceName": self.base_instance_name,
            "instanceTemplate": self.template_url,
            "instanceGroup": f"{zone_url}/instanceGroups/{self.name}",
            "targetSize": self.target_size,
            "fingerprint": fingerprint(self.id, self.target_size, self.template_url, sorted(self.members)),
            "currentActions": actions,
            "status": {
                "isStable": stable,
                "versionTarget": {"isReached": True},
                "stateful": {
                    "hasStatefulConfig": stateful,
                    "perInstanceConfigs": {"allEffective": True},
                },
            },
            "listManagedInstancesResults": self.list_mode,
            "versions": [{"instanceTemplate": self.template_url, "targetSize": {"calculated": self.target_size}}],
            "updatePolicy": {
                "type": "OPPORTUNISTIC",
                "minimalAction": "REPLACE",
                "maxSurge": {"fixed": 1, "calculated": 1},
                "maxUnavailable": {"fixed": 1, "calculated": 1},
                "replacementMethod": "SUBSTITUTE",
            },
            "instanceLifecyclePolicy": {"forceUpdateOnRepair": "NO", "defaultActionOnFailure": "REPAIR"},
        }


def instance_group(mig: Mig, size: int) -> dict[str, Any]:
    """The unmanaged view of a managed group (``instanceGroups``): its VMs that exist, counted."""
    zone_url = f"{GOOGLE}/projects/{mig.project}/zones/{mig.zone}"
    return {
        "kind": "compute#instanceGroup",
        "id": mig.group_id,
        "name": mig.name,
        "zone": zone_url,
        "selfLink": f"{zone_url}/instanceGroups/{mig.name}",
        "creationTimestamp": mig.created,
        "description": "This instance group is controlled by Instance Group Manager "
        f"'{mig.name}'. To modify instances in this group, use the Instance Group Manager API: "
        "https://cloud.google.com/compute/docs/reference/latest/instanceGroupManagers",
        "fingerprint": fingerprint(mig.group_id, size),
        "network": f"{GOOGLE}/projects/{mig.project}/global/networks/default",
        "size": size,
    }


@dataclass
class Settings:
    """The emulator's knobs; tests and benchmarks change them through /_emulator/config."""

    boot_delay: float = 0.0
    fail_boot: str | None = None  # regex of instance names whose boot fails
    shutdown_grace: float = 5.0  # SIGTERM -> SIGKILL on delete
    preempt_grace: float = 5.0  # SIGTERM -> SIGKILL on preemption (30 s on Google's spot VMs)
    quota_instances: int = 200
    zone_exhausted: bool = False
    retry_interval: float = 1.0  # how often a MIG retries a creation that hit quota or exhaustion
    wait_max: float = 120.0  # zoneOperations.wait returns after this long at most
    op_seconds: float = 0.0  # how long a group operation stays RUNNING (progress rising) before DONE
    # A VM's time from creation to its startup script's end, drawn uniformly from [low, high] per
    # boot and spent PROVISIONING (40 %), STAGING (20 %) and booting while RUNNING (40 %). None: no
    # wait but ``boot_delay`` in the guest.
    boot_seconds: list[float] | None = None

    def update(self, values: dict[str, Any]) -> None:
        for key, value in values.items():
            if not hasattr(self, key):
                raise invalid(f"unknown emulator setting {key!r}")
            setattr(self, key, value)


@dataclass
class Fault:
    """An injected error: the next ``times`` calls of ``method`` fail with it."""

    method: str
    code: int
    reason: str
    message: str
    times: int = 1


class Cloud:
    def __init__(self, state_dir: Path, vm_env: dict[str, str]) -> None:
        self.state_dir = state_dir
        self.vm_root = state_dir / "vms"
        self.console_dir = state_dir / "console"
        self.pid_dir = Path(os.environ.get("LOCALCLOUD_PID_DIR", state_dir / "pids"))
        self.vm_env = vm_env
        self.lock = threading.RLock()
        self.settings = Settings()
        # Compute API calls served, by method (compute.<name>): what the benchmark counts per experiment.
        self.calls: collections.Counter[str] = collections.Counter()
        self.templates: dict[tuple[str, str], dict[str, Any]] = {}
        self.migs: dict[tuple[str, str, str], Mig] = {}
        self.instances: dict[tuple[str, str, str], Vm] = {}
        self.ops: dict[str, Operation] = {}
        self.request_ids: dict[str, Operation] = {}
        self.faults: list[Fault] = []
        self.events: list[dict[str, Any]] = []
        self.mig_errors: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
        self.counter = itertools.count()

    # ------------------------------------------------------------------ helpers
    def event(self, kind: str, **fields: Any) -> None:
        self.events.append({"t": time.time(), "kind": kind, **fields})

    def check_fault(self, method: str) -> None:
        with self.lock:
            for fault in self.faults:
                if fault.times > 0 and re.fullmatch(fault.method, method):
                    fault.times -= 1
                    self.event("fault", method=method, code=fault.code, reason=fault.reason)
                    raise ApiError(fault.code, fault.reason, fault.message)

    def _repeat(self, request_id: str | None) -> Operation | None:
        """The operation an earlier request with this ``requestId`` produced, if any.

        Only requests that were accepted produced one: a rejected request records nothing, so its
        retry is judged afresh, and a retry of an accepted one gets the very same operation back."""
        if not request_id:
            return None
        try:
            parsed = uuid.UUID(request_id)
        except ValueError:
            raise invalid(f"Invalid value for field 'requestId': '{request_id}'") from None
        if parsed.int == 0:
            raise invalid(f"Invalid value for field 'requestId': '{request_id}'")
        return self.request_ids.get(request_id)

    def _accept(
        self, project: str, zone: str | None, op_type: str, target: str, target_id: str, *, request_id: str | None
    ) -> Operation:
        """Record the operation of an accepted request (called once every synchronous check passed)."""
        op = Operation(project, zone, op_type, target, target_id)
        self.ops[op.name] = op
        if request_id:
            self.request_ids[request_id] = op
        return op

    def _finish_soon(self, op: Operation, error: OpError | None = None) -> None:
        """Operations of scheduled changes end on their own thread after the request returned: at
        once by default, after ``op_seconds`` with ``progress`` rising under the gce profile."""
        duration = float(self.settings.op_seconds)

        def run() -> None:
            steps = min(10, max(4, int(duration / 0.25))) if duration > 0 else 1
            for step in range(1, steps):
                time.sleep(duration / steps)
                op.progress = max(op.progress, int(100 * step / steps))
            if duration > 0:
                time.sleep(duration / steps)
            op.finish(error)

        threading.Thread(target=run, daemon=True).start()

    # ------------------------------------------------------------ templates
    def insert_template(self, project: str, body: dict[str, Any], request_id: str | None) -> Operation:
        name = check_name("resource.name", body.get("name"))
        link = f"{GOOGLE}/projects/{project}/global/instanceTemplates/{name}"
        with self.lock:
            repeat = self._repeat(request_id)
            if repeat:
                return repeat
            if (project, name) in self.templates:
                raise already_exists(f"projects/{project}/global/instanceTemplates/{name}")
            props = dict(body.get("properties", {}))
            props.setdefault("machineType", "e2-standard-2")
            sched = dict(props.get("scheduling", {}))
            sched.setdefault("onHostMaintenance", "MIGRATE")
            sched.setdefault("automaticRestart", True)
            props["scheduling"] = sched
            if "metadata" in props:
                items = list(props["metadata"].get("items", []))
                props["metadata"] = {"kind": "compute#metadata", "fingerprint": fingerprint(items), "items": items}
            template = {
                "kind": "compute#instanceTemplate",
                "id": new_id(),
                "name": name,
                "description": body.get("description", ""),
                "creationTimestamp": now(),
                "selfLink": link,
                "properties": props,
            }
            self.templates[(project, name)] = template
            op = self._accept(
                project, None, "compute.instanceTemplates.insert", link, template["id"], request_id=request_id
            )
            op.finish()
            return op

    def get_template(self, project: str, name: str) -> dict[str, Any]:
        with self.lock:
            template = self.templates.get((project, name))
            if template is None:
                raise not_found(f"projects/{project}/global/instanceTemplates/{name}")
            return template

    def list_templates(self, project: str) -> list[dict[str, Any]]:
        with self.lock:
            return [t for (p, _), t in sorted(self.templates.items()) if p == project]

    def delete_template(self, project: str, name: str, request_id: str | None) -> Operation:
        with self.lock:
            repeat = self._repeat(request_id)
            if repeat:
                return repeat
            template = self.get_template(project, name)
            in_use = [m.name for m in self.migs.values() if m.template_url == template["selfLink"]]
            if in_use:
                raise ApiError(
                    400,
                    "resourceInUseByAnotherResource",
                    f"The instance_template resource '{template['selfLink']}' is already being used by '{in_use[0]}'",
                )
            del self.templates[(project, name)]
            op = self._accept(
                project,
                None,
                "compute.instanceTemplates.delete",
                template["selfLink"],
                template["id"],
                request_id=request_id,
            )
            op.finish()
            return op

    # ------------------------------------------------------------------ MIGs
    def _mig(self, project: str, zone: str, name: str) -> Mig:
        mig = self.migs.get((project, zone, name))
        if mig is None:
            raise not_found(f"projects/{project}/zones/{zone}/instanceGroupManagers/{name}")
        return mig

    def insert_mig(self, project: str, zone: str, body: dict[str, Any], request_id: str | None) -> Operation:
        with self.lock:
            repeat = self._repeat(request_id)
            if repeat:
                return repeat
            name = check_name("resource.name", body.get("name"))
            base = check_name("resource.baseInstanceName", body.get("baseInstanceName", name), 58)
            template_ref = body.get("instanceTemplate")
            if not template_ref:
                raise ApiError(400, "required", "Required field 'resource.instanceTemplate' not specified")
            if (project, zone, name) in self.migs:
                raise already_exists(f"projects/{project}/zones/{zone}/instanceGroupManagers/{name}")
            template = self.get_template(project, last_segment(template_ref, "instanceTemplates"))
            size = int(body.get("targetSize", 0))
            if size < 0:
                raise invalid("Invalid value for field 'resource.targetSize': must be >= 0")
            mig = Mig(project, zone, name, base, template["selfLink"], description=str(body.get("description", "")))
            mode = body.get("listManagedInstancesResults")
            if mode:
                mig.list_mode = mode
            self.migs[(project, zone, name)] = mig
            op = self._accept(
                project, zone, "compute.instanceGroupManagers.insert", mig.self_link, mig.id, request_id=request_id
            )
            self.event("mig.insert", mig=name)
            self._resize(mig, size)
            self._finish_soon(op)
            return op

    def get_mig(self, project: str, zone: str, name: str) -> dict[str, Any]:
        with self.lock:
            return self._mig(project, zone, name).to_json()

    def list_migs(self, project: str, zone: str) -> list[dict[str, Any]]:
        with self.lock:
            return [m.to_json() for (p, z, _), m in sorted(self.migs.items()) if (p, z) == (project, zone)]

    def delete_mig(self, project: str, zone: str, name: str, request_id: str | None) -> Operation:
        with self.lock:
            repeat = self._repeat(request_id)
            if repeat:
                return repeat
            mig = self._mig(project, zone, name)
            self.event("mig.delete", mig=name, already_deleting=mig.deleting)
            if mig.deleting:
                raise ApiError(
                    400,
                    "resourceNotReady",
                    f"The resource '{mig.self_link}' is not ready",
                )
            mig.deleting = True
            op = self._accept(
                project, zone, "compute.instanceGroupManagers.delete", mig.self_link, mig.id, request_id=request_id
            )
            members = list(mig.members.values())
            for member in members:
                self._delete_member(mig, member)
        threading.Thread(target=self._finish_mig_delete, args=(mig, op), daemon=True).start()
        return op

    def _finish_mig_delete(self, mig: Mig, op: Operation) -> None:
        deadline = time.monotonic() + self.settings.shutdown_grace + 30
        while time.monotonic() < deadline:
            with self.lock:
                total = len(mig.members)
                if not total:
                    break
            op.progress = max(op.progress, 50)
            time.sleep(0.02)
        with self.lock:
            self.migs.pop((mig.project, mig.zone, mig.name), None)
            self.event("mig.deleted", mig=mig.name)
        op.finish()

    def resize(self, project: str, zone: str, name: str, size: int, request_id: str | None) -> Operation:
        with self.lock:
            repeat = self._repeat(request_id)
            if repeat:
                return repeat
            if size < 0:
                raise invalid("Invalid value for field 'size': must be >= 0")
            mig = self._mig(project, zone, name)
            op = self._accept(
                project, zone, "compute.instanceGroupManagers.resize", mig.self_link, mig.id, request_id=request_id
            )
            self._resize(mig, size)
            self._finish_soon(op)
            return op

    def _resize(self, mig: Mig, size: int) -> None:
        live = [m for m in mig.members.values() if m.current_action != "DELETING"]
        while len(live) < size:
            suffix = "".join(random.choices("abcdefghijklmnopqrstuvwxyz0123456789", k=4))
            name = f"{mig.base_instance_name}-{suffix}"
            if name in mig.members or (mig.project, mig.zone, name) in self.instances:
                continue
            member = Member(name, {})
            mig.members[name] = member
            live.append(member)
            self._create_member(mig, member)
        for member in live[size:]:
            self._delete_member(mig, member)
        mig.target_size = size

    def create_instances(
        self, project: str, zone: str, name: str, body: dict[str, Any], request_id: str | None
    ) -> Operation:
        with self.lock:
            repeat = self._repeat(request_id)
            if repeat:
                return repeat
            mig = self._mig(project, zone, name)
            wanted = body.get("instances") or []
            if not wanted:
                raise ApiError(400, "required", "Required field 'instances' not specified")
            names = []
            for item in wanted:
                instance = check_name("instances.name", item.get("name"))
                if instance in mig.members or (project, zone, instance) in self.instances or instance in names:
                    raise already_exists(f"projects/{project}/zones/{zone}/instances/{instance}")
                names.append(instance)
            op = self._accept(
                project,
                zone,
                "compute.instanceGroupManagers.createInstances",
                mig.self_link,
                mig.id,
                request_id=request_id,
            )
            self.event("mig.createInstances", mig=name, instances=names)
            for item in wanted:
                preserved = dict(item.get("preservedState", {}).get("metadata", {}))
                member = Member(item["name"], preserved)
                mig.members[member.name] = member
                mig.target_size += 1
                self._create_member(mig, member)
            self._finish_soon(op)
            return op

    def _resolve_members(self, mig: Mig, urls: list[str], skip: bool) -> tuple[list[Member], OpError | None]:
        """The members ``urls`` name, or why the operation fails (Compute Engine fails it
        asynchronously: the request is accepted, its operation ends DONE with ``error``)."""
        members = []
        for url in urls:
            parts = url.rstrip("/").split("/")
            if len(parts) < 2 or parts[-2] != "instances":
                return [], OpError(400, "INVALID_USAGE", f"Invalid value for field 'instances': '{url}'.")
            if "zones" in parts and parts[parts.index("zones") + 1] != mig.zone:
                return [], OpError(400, "INVALID_USAGE", f"Instance '{url}' is not in zone '{mig.zone}'.")
            member = mig.members.get(parts[-1])
            if member is None or member.current_action == "DELETING":
                if skip:
                    continue
                link = f"{GOOGLE}/projects/{mig.project}/zones/{mig.zone}/instances/{parts[-1]}"
                if member is None:
                    return [], OpError(
                        400,
                        "RESOURCE_NOT_FOUND",
                        f"The resource '{link}' is not a member of the instance group manager '{mig.self_link}'.",
                    )
                return [], OpError(400, "RESOURCE_NOT_READY", f"The resource '{link}' is already being deleted.")
            members.append(member)
        return members, None

    def delete_instances(
        self, project: str, zone: str, name: str, body: dict[str, Any], request_id: str | None
    ) -> Operation:
        with self.lock:
            repeat = self._repeat(request_id)
            if repeat:
                return repeat
            mig = self._mig(project, zone, name)
            urls = body.get("instances") or []
            if len(urls) > 1000:
                raise invalid("At most 1000 instances can be deleted in one request")
            op = self._accept(
                project,
                zone,
                "compute.instanceGroupManagers.deleteInstances",
                mig.self_link,
                mig.id,
                request_id=request_id,
            )
            members, error = self._resolve_members(mig, urls, bool(body.get("skipInstancesOnValidationError")))
            self.event("mig.deleteInstances", mig=name, instances=[m.name for m in members], error=bool(error))
            for member in members:
                mig.target_size = max(0, mig.target_size - 1)
                self._delete_member(mig, member)
            self._finish_soon(op, error)
            return op

    def recreate_instances(
        self, project: str, zone: str, name: str, body: dict[str, Any], request_id: str | None
    ) -> Operation:
        with self.lock:
            repeat = self._repeat(request_id)
            if repeat:
                return repeat
            mig = self._mig(project, zone, name)
            op = self._accept(
                project,
                zone,
                "compute.instanceGroupManagers.recreateInstances",
                mig.self_link,
                mig.id,
                request_id=request_id,
            )
            members, error = self._resolve_members(mig, body.get("instances") or [], False)
            self.event("mig.recreateInstances", mig=name, instances=[m.name for m in members], error=bool(error))
            for member in members:
                member.current_action = "RECREATING"
                vm = member.vm
                if vm is not None:
                    threading.Thread(target=self._stop_vm, args=(mig, member, vm, "recreate"), daemon=True).start()
                else:
                    self._create_member(mig, member)
            self._finish_soon(op, error)
            return op

    def list_managed(self, project: str, zone: str, name: str) -> list[dict[str, Any]]:
        with self.lock:
            mig = self._mig(project, zone, name)
            items = []
            for member in mig.members.values():
                item: dict[str, Any] = {
                    "instance": f"{GOOGLE}/projects/{project}/zones/{zone}/instances/{member.name}",
                    "name": member.name,
                    "currentAction": member.current_action,
                    "version": {"instanceTemplate": mig.template_url},
                }
                if member.preserved:
                    item["preservedStateFromConfig"] = {"metadata": dict(member.preserved)}
                vm = member.vm
                if vm is not None:
                    item["id"] = vm.id
                    item["instanceStatus"] = vm.status
                if member.errors:
                    item["lastAttempt"] = {"errors": {"errors": list(member.errors)}}
                items.append(item)
            return items

    def list_errors(self, project: str, zone: str, name: str) -> list[dict[str, Any]]:
        with self.lock:
            self._mig(project, zone, name)
            return list(self.mig_errors.get((project, zone, name), []))

    # --------------------------------------------------------------- instances
    def get_instance(self, project: str, zone: str, name: str) -> dict[str, Any]:
        with self.lock:
            vm = self.instances.get((project, zone, name))
            if vm is None:
                raise not_found(f"projects/{project}/zones/{zone}/instances/{name}")
            return vm.to_json()

    def get_guest_attributes(
        self, project: str, zone: str, name: str, query_path: str, variable_key: str
    ) -> dict[str, Any]:
        """``instances.getGuestAttributes``: one key (``variableKey``) or a namespace (``queryPath``)."""
        with self.lock:
            vm = self.instances.get((project, zone, name))
            if vm is None:
                raise not_found(f"projects/{project}/zones/{zone}/instances/{name}")
            link = f"{vm.self_link}/guestAttributes/"
            if variable_key:
                namespace, _, key = variable_key.partition("/")
                value = vm.guest_attributes.get((namespace, key))
                if value is None:
                    raise not_found(f"projects/{project}/zones/{zone}/instances/{name}/guestAttributes/{variable_key}")
                return {
                    "kind": "compute#guestAttributes",
                    "variableKey": variable_key,
                    "variableValue": value,
                    "selfLink": link + variable_key,
                }
            namespace = query_path.strip("/").split("/", 1)[0]
            items = [
                {"namespace": ns, "key": key, "value": value}
                for (ns, key), value in sorted(vm.guest_attributes.items())
                if not namespace or ns == namespace
            ]
            if not items:
                raise not_found(f"projects/{project}/zones/{zone}/instances/{name}/guestAttributes/{query_path}")
            return {
                "kind": "compute#guestAttributes",
                "queryPath": query_path,
                "queryValue": {"items": items},
                "selfLink": link + query_path,
            }

    def list_instances(self, project: str, zone: str) -> list[dict[str, Any]]:
        with self.lock:
            return [v.to_json() for (p, z, _), v in sorted(self.instances.items()) if (p, z) == (project, zone)]

    def list_groups(self, project: str, zone: str) -> list[dict[str, Any]]:
        with self.lock:
            return [
                instance_group(m, sum(1 for x in m.members.values() if x.vm is not None))
                for (p, z, _), m in sorted(self.migs.items())
                if (p, z) == (project, zone)
            ]

    def get_group(self, project: str, zone: str, name: str) -> dict[str, Any]:
        with self.lock:
            mig = self.migs.get((project, zone, name))
            if mig is None:
                raise not_found(f"projects/{project}/zones/{zone}/instanceGroups/{name}")
            return instance_group(mig, sum(1 for x in mig.members.values() if x.vm is not None))

    def zones(self, project: str) -> list[str]:
        """The zones this project has used (an aggregated list has one scope per zone)."""
        with self.lock:
            found = {z for (p, z, _) in self.migs if p == project}
            found |= {z for (p, z, _) in self.instances if p == project}
            found |= {o.zone for o in self.ops.values() if o.project == project and o.zone}
            return sorted(found)

    def list_ops(self, project: str, zone: str | None) -> list[dict[str, Any]]:
        with self.lock:
            return [o.to_json() for o in self.ops.values() if (o.project, o.zone) == (project, zone)]

    # -------------------------------------------------------------- operations
    def get_op(self, project: str, zone: str | None, name: str) -> Operation:
        with self.lock:
            op = self.ops.get(name)
            if op is None or op.project != project or op.zone != zone:
                scope = f"zones/{zone}" if zone else "global"
                raise not_found(f"projects/{project}/{scope}/operations/{name}")
            return op

    def wait_op(self, project: str, zone: str | None, name: str) -> Operation:
        op = self.get_op(project, zone, name)
        op.done.wait(self.settings.wait_max)
        return op

    # ------------------------------------------------------------ VM lifecycle
    def _live_vm_count(self) -> int:
        return sum(1 for v in self.instances.values() if v.status not in ("TERMINATED",))

    def _create_member(self, mig: Mig, member: Member) -> None:
        """Schedule a VM for ``member`` (called with the lock held)."""
        member.current_action = "CREATING" if member.current_action != "RECREATING" else "RECREATING"
        code = None
        if self.settings.zone_exhausted:
            code, message = (
                "ZONE_RESOURCE_POOL_EXHAUSTED",
                f"The zone 'projects/{mig.project}/zones/{mig.zone}' does not have enough resources available "
                "to fulfill the request.",
            )
        elif self._live_vm_count() >= self.settings.quota_instances:
            code, message = (
                "QUOTA_EXCEEDED",
                f"Quota 'INSTANCES' exceeded. Limit: {self.settings.quota_instances} in region.",
            )
        if code:
            member.errors = [{"code": code, "message": message}]
            self.mig_errors.setdefault((mig.project, mig.zone, mig.name), []).append(
                {
                    "timestamp": now(),
                    "error": {"code": code, "message": message},
                    "instanceActionDetails": {
                        "action": "CREATING",
                        "instance": f"{GOOGLE}/projects/{mig.project}/zones/{mig.zone}/instances/{member.name}",
                    },
                }
            )
            timer = threading.Timer(self.settings.retry_interval, self._retry_create, args=(mig, member))
            timer.daemon = True
            timer.start()
            return
        member.errors = []
        template = self.templates.get((mig.project, last_segment(mig.template_url, "instanceTemplates")))
        props = template["properties"] if template else {}
        vm = Vm(mig.project, mig.zone, member.name, mig.name, props, mig.template_url, member.preserved)
        self.instances[(mig.project, mig.zone, member.name)] = vm
        member.vm = vm
        threading.Thread(target=self._boot_vm, args=(mig, member, vm), daemon=True).start()

    def _retry_create(self, mig: Mig, member: Member) -> None:
        with self.lock:
            if mig.deleting or mig.members.get(member.name) is not member or member.current_action == "DELETING":
                return
            if member.vm is None:
                self._create_member(mig, member)

    def _free_port(self) -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])

    def _boot_vm(self, mig: Mig, member: Member, vm: Vm) -> None:  # noqa: PLR0915 - one boot, in its order
        span = self.settings.boot_seconds
        total = random.uniform(float(span[0]), float(span[1])) if span else 0.0
        for phase, share in (("PROVISIONING", 0.4), ("STAGING", 0.2)):
            with self.lock:
                if vm.stopping:
                    return
                vm.status = phase
            if total:
                time.sleep(total * share)
        with self.lock:
            if vm.stopping:
                return
            vm.status = "STAGING"
            vm.boots += 1
            vm.boot_id = f"{vm.id}-{vm.boots}-{secrets.token_hex(4)}"
            vm.home = self.vm_root / vm.zone / vm.name
            vm.ssh_port = self._free_port()
            settings = self.settings
            fail = bool(settings.fail_boot and re.fullmatch(settings.fail_boot, vm.name))
            metadata = vm.metadata()
        home = vm.home
        # A fresh disk for a new VM; a restart after preemption keeps nothing either (DELETE action).
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir(parents=True)
        ssh_keys = [line for line in metadata.get("ssh-keys", "").splitlines() if line.strip()]
        session_env = {
            procs.MARKER: self.vm_env.get(procs.MARKER, ""),
            "LOCALCLOUD_VM": vm.name,
            "SINERGYM_VM_HOME": str(home),
            # The VM's disk is its user's home, as on a VM: the login shell that runs every SSH command
            # reads the VM's own (absent) rc files, never the host user's (a stale `pyenv rehash` lock in
            # the host's ~/.bashrc once hung every SSH command of every VM).
            "HOME": str(home),
        }
        spec = {
            "project": vm.project,
            "zone": vm.zone,
            "name": vm.name,
            "id": vm.id,
            "mig": vm.mig or "",
            "boot_id": vm.boot_id,
            "metadata": metadata,
            "labels": vm.template.get("labels", {}),
            "machine_type": vm.template.get("machineType", "e2-standard-2"),
            "ssh_port": vm.ssh_port,
            "ssh_keys": ssh_keys,
            "session_env": session_env,
            "env": dict(self.vm_env),
            "ready_topic": metadata.get(names.META_READY_TOPIC, names.TOPIC_READY),
            "boot_delay": total * 0.4 if total else settings.boot_delay,
            "fail_boot": fail,
            "shutdown_grace": settings.shutdown_grace,
        }
        (home / "vm.json").write_text(json.dumps(spec, indent=2))
        env = {**os.environ, **self.vm_env, "LOCALCLOUD_VM": vm.name}
        console = open(home / "console.log", "ab")  # noqa: SIM115 - the child owns it
        process = subprocess.Popen(
            [sys.executable, "-m", "localcloud.vm", str(home)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=console,
            env=env,
            start_new_session=True,
        )
        console.close()
        record = procs.PidRecord(f"vm-{vm.zone}-{vm.name}", process.pid, procs.start_time(process.pid) or 0)
        record.save(self.pid_dir / f"{record.name}.json")
        with self.lock:
            vm.process = process
            vm.pid_record = record
            self.event("vm.staging", instance=vm.name, boot_id=vm.boot_id)
        assert process.stdout is not None
        for raw in process.stdout:
            line = raw.decode(errors="replace").strip()
            with self.lock:
                if line == "RUNNING":
                    vm.status = "RUNNING"
                    vm.started = now()
                    if member.current_action in ("CREATING", "RECREATING"):
                        member.current_action = "NONE"
                    self.event("vm.running", instance=vm.name, boot_id=vm.boot_id)
                elif line.startswith("READY"):
                    vm.ready = True
                    self.event("vm.ready", instance=vm.name, boot_id=vm.boot_id)
                elif (attr := GUEST_ATTRIBUTE.match(line)) and vm.guest_attributes_enabled:
                    vm.guest_attributes[(attr["namespace"], attr["key"])] = attr["value"]
                elif line.startswith("BOOT-FAILED"):
                    vm.boot_error = line.partition(" ")[2]
                    self.event("vm.boot_failed", instance=vm.name, reason=vm.boot_error)
        process.wait()

    def _delete_member(self, mig: Mig, member: Member) -> None:
        """Start removing ``member`` and its VM (called with the lock held)."""
        member.current_action = "DELETING"
        vm = member.vm
        if vm is None:
            mig.members.pop(member.name, None)
            return
        threading.Thread(target=self._stop_vm, args=(mig, member, vm, "delete"), daemon=True).start()

    def _stop_vm(self, mig: Mig, member: Member, vm: Vm, why: str) -> None:
        """Shut a VM down like Compute Engine: STOPPING, SIGTERM, a grace period, TERMINATED."""
        with self.lock:
            if vm.stopping:
                return
            vm.stopping = True
            vm.status = "STOPPING"
            grace = self.settings.preempt_grace if why == "preempt" else self.settings.shutdown_grace
            process = vm.process
            self.event(f"vm.{why}", instance=vm.name, boot_id=vm.boot_id)
        if process is not None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(grace + 2)
            procs.kill_tree(process.pid, grace=1.0, sig=signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(5)
        if vm.pid_record is not None:
            (self.pid_dir / f"{vm.pid_record.name}.json").unlink(missing_ok=True)
        if vm.home is not None and (vm.home / "console.log").exists():
            self.console_dir.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(OSError):
                shutil.copy(vm.home / "console.log", self.console_dir / f"{vm.name}-{vm.boot_id}.log")
        with self.lock:
            vm.status = "TERMINATED"
            self.event("vm.terminated", instance=vm.name, boot_id=vm.boot_id, why=why)
            # A delete that arrived while a preemption or recreation was stopping the VM is a delete.
            if why == "delete" or mig.deleting or member.current_action == "DELETING":
                self.instances.pop((vm.project, vm.zone, vm.name), None)
                if mig.members.get(member.name) is member:
                    del mig.members[member.name]
                if vm.home is not None:
                    shutil.rmtree(vm.home, ignore_errors=True)
                return
            # Preempted or recreated: the MIG brings the instance back under the same name.
            member.current_action = "RECREATING"
            fresh = Vm(vm.project, vm.zone, vm.name, vm.mig, vm.template, vm.template_url, vm.preserved, id=vm.id)
            fresh.boots = vm.boots
            self.instances[(vm.project, vm.zone, vm.name)] = fresh
            member.vm = fresh
            threading.Thread(target=self._boot_vm, args=(mig, member, fresh), daemon=True).start()

    def preempt(self, project: str, zone: str, name: str) -> dict[str, Any]:
        with self.lock:
            vm = self.instances.get((project, zone, name))
            if vm is None or vm.mig is None:
                raise not_found(f"projects/{project}/zones/{zone}/instances/{name}")
            mig = self._mig(project, zone, vm.mig)
            member = mig.members[name]
            if vm.status != "RUNNING":
                raise ApiError(400, "resourceNotReady", f"instance {name} is {vm.status}, not RUNNING")
        threading.Thread(target=self._stop_vm, args=(mig, member, vm, "preempt"), daemon=True).start()
        return {"instance": name, "preempted": True}

    def shutdown(self) -> None:
        """Stop every VM (the emulator is going away)."""
        with self.lock:
            vms = [(v, v.process) for v in self.instances.values() if v.process is not None]
            for vm, _ in vms:
                vm.stopping = True
        threads = []
        for vm, process in vms:
            assert process is not None
            t = threading.Thread(target=procs.kill_tree, args=(process.pid, self.settings.shutdown_grace), daemon=True)
            t.start()
            threads.append((t, vm))
        for t, vm in threads:
            t.join(self.settings.shutdown_grace + 10)
            if vm.pid_record is not None:
                (self.pid_dir / f"{vm.pid_record.name}.json").unlink(missing_ok=True)

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "settings": self.settings.__dict__,
                "migs": {f"{z}/{n}": sorted(m.members) for (_, z, n), m in self.migs.items()},
                "instances": {
                    f"{z}/{n}": {
                        "status": v.status,
                        "boot_id": v.boot_id,
                        "ssh_port": v.ssh_port,
                        "pid": v.process.pid if v.process else None,
                        "home": str(v.home) if v.home else None,
                        "ready": v.ready,
                        "boot_error": v.boot_error,
                        "mig": v.mig,
                    }
                    for (_, z, n), v in self.instances.items()
                },
            }

    def add_fault(self, data: dict[str, Any]) -> None:
        with self.lock:
            self.faults.append(
                Fault(
                    method=str(data["method"]),
                    code=int(data.get("code", 503)),
                    reason=str(data.get("reason", "backendError")),
                    message=str(data.get("message", "Injected fault")),
                    times=int(data.get("times", 1)),
                )
            )


def paginate(
    items: list[dict[str, Any]], query: dict[str, str], key: str, predicate: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """A page of ``items`` as Compute Engine lists them: filter, maxResults, pageToken."""
    selected = [i for i in items if predicate(i)]
    try:
        max_results = int(query.get("maxResults", 500))
    except ValueError:
        raise invalid("Invalid value for field 'maxResults'") from None
    if not 0 <= max_results <= 500:
        raise invalid(f"Invalid value for field 'maxResults': {max_results}. Must be in the range [0, 500].")
    max_results = max_results or 500
    try:
        start = int(query.get("pageToken") or 0)
    except ValueError:
        raise invalid("Invalid value for field 'pageToken'") from None
    page = selected[start : start + max_results]
    body: dict[str, Any] = {key: page}
    if start + max_results < len(selected):
        body["nextPageToken"] = str(start + max_results)
    return body


def filter_of(query: dict[str, str]) -> Callable[[dict[str, Any]], bool]:
    try:
        return filters.parse(query.get("filter"))
    except filters.FilterError as exc:
        raise invalid(str(exc)) from None
