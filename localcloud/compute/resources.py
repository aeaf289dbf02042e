"""The Compute Engine resources the emulator holds, each with Google's JSON shape.

An ``Operation`` per accepted request, a ``Vm`` per instance (a real local process tree once it
boots, see lifecycle.py), a ``Mig`` per managed instance group with a ``Member`` per instance it
manages, and the unmanaged ``instanceGroups`` view of a group. Shapes follow Compute Engine's REST
reference and its discovery document (tests/test_compute_conformance.py checks every response).
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import secrets
import subprocess
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from localcloud import procs
from localcloud.compute.errors import HTTP_ERROR_MESSAGES, OpError, not_found

GOOGLE = "https://www.googleapis.com/compute/v1"
PROJECT_NUMBER = "123456789012"
SSH_PORT_LABEL = "localcloud-ssh-port"


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def new_id() -> str:
    return str(random.randint(10**18, 9 * 10**18))


def fingerprint(*parts: Any) -> str:
    """A Compute Engine fingerprint: 8 bytes, base64 (``format: byte`` in the discovery document),
    derived from the content it fingerprints so that it changes when the content does."""
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).digest()[:8]
    return base64.b64encode(digest).decode()


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

    def guest_attributes_json(self, query_path: str, variable_key: str) -> dict[str, Any]:
        """``instances.getGuestAttributes``: one key (``variableKey``) or a namespace (``queryPath``)."""
        link = f"{self.self_link}/guestAttributes/"
        path = f"projects/{self.project}/zones/{self.zone}/instances/{self.name}/guestAttributes/"
        if variable_key:
            namespace, _, key = variable_key.partition("/")
            value = self.guest_attributes.get((namespace, key))
            if value is None:
                raise not_found(path + variable_key)
            return {
                "kind": "compute#guestAttributes",
                "variableKey": variable_key,
                "variableValue": value,
                "selfLink": link + variable_key,
            }
        namespace = query_path.strip("/").split("/", 1)[0]
        items = [
            {"namespace": ns, "key": key, "value": value}
            for (ns, key), value in sorted(self.guest_attributes.items())
            if not namespace or ns == namespace
        ]
        if not items:
            raise not_found(path + query_path)
        return {
            "kind": "compute#guestAttributes",
            "queryPath": query_path,
            "queryValue": {"items": items},
            "selfLink": link + query_path,
        }

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

    def managed_instance(self, member: Member) -> dict[str, Any]:
        """``member`` as listManagedInstances shows it."""
        item: dict[str, Any] = {
            "instance": f"{GOOGLE}/projects/{self.project}/zones/{self.zone}/instances/{member.name}",
            "name": member.name,
            "currentAction": member.current_action,
            "version": {"instanceTemplate": self.template_url},
        }
        if member.preserved:
            item["preservedStateFromConfig"] = {"metadata": dict(member.preserved)}
        vm = member.vm
        if vm is not None:
            item["id"] = vm.id
            item["instanceStatus"] = vm.status
        if member.errors:
            item["lastAttempt"] = {"errors": {"errors": list(member.errors)}}
        return item

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
