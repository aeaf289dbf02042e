"""The narrow cloud module: the few Compute Engine verbs the control plane needs.

Cloud-neutral verbs (ensure a group, create named instances, delete instances, delete a group,
list members, wait) with Compute Engine behind them. Every call has a deadline and bounded retries
on transient errors; every operation is waited for with ``ZoneOperationsClient.wait`` and a
deadline (``ExtendedOperation.result()`` would poll Google's real endpoint, whatever endpoint the
client was built with), and a failed operation raises the matching ``google.api_core`` exception.
Instances are only ever removed through their group (``deleteInstances``), never directly.
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from google.api_core import exceptions
from google.cloud import compute_v1

from sinergym_cloud import capacity, errors, names
from sinergym_cloud.gcp import retry
from sinergym_cloud.gcp.clients import Clients

log = logging.getLogger(__name__)

DONE = compute_v1.Operation.Status.DONE


@dataclass(frozen=True)
class Member:
    """One instance of a managed instance group, as the group reports it."""

    name: str
    status: str  # the VM's status ("" before the VM exists)
    action: str  # the group's current action on it (CREATING, NONE, DELETING, ...)
    errors: tuple[str, ...] = field(default=())  # "CODE: message" of the group's last creation attempt
    error_codes: tuple[str, ...] = field(default=())  # the codes alone (QUOTA_EXCEEDED, ...): decide on these


@dataclass(frozen=True)
class Group:
    """A managed instance group, as the sweeper needs it: which batch it serves (its description) and its age."""

    name: str
    description: str
    created: float | None  # epoch seconds (Compute's creationTimestamp); None if it was not given


def epoch(timestamp: str) -> float:
    """A Compute Engine RFC 3339 timestamp (``creationTimestamp``) as epoch seconds."""
    return datetime.fromisoformat(timestamp).timestamp()


def raise_for_operation(op: compute_v1.Operation) -> None:
    """Raise the api_core exception a failed operation stands for."""
    if op.http_error_status_code:
        errors = [{"code": e.code, "message": e.message} for e in op.error.errors] if op.error else []
        message = "; ".join(f"{e['code']}: {e['message']}" for e in errors) or op.http_error_message
        raise exceptions.from_http_status(
            op.http_error_status_code, f"operation {op.name} failed: {message}", errors=errors
        )
    if op.error and op.error.errors:
        # Only one of httpErrorStatusCode/httpErrorMessage is set, or neither: still a failure.
        message = "; ".join(f"{e.code}: {e.message}" for e in op.error.errors)
        raise exceptions.GoogleAPICallError(f"operation {op.name} failed: {message}")


class ComputeApi:
    def __init__(
        self,
        clients: Clients,
        project: str,
        deadline: float = 30.0,
        op_timeout: float = 120.0,
        rate_limit_wait: float | None = None,
    ) -> None:
        self.c = clients
        self.project = project
        self.deadline = deadline  # retries of one call
        self.rate_limit_wait = rate_limit_wait  # of them, once Compute's rate quota refused it
        self.op_timeout = op_timeout  # waiting for one operation

    def call[T](self, fn: Callable[[], T], what: str) -> T:
        """``fn`` with the bounded retries of one Compute call (a rate-quota refusal retried only
        for ``rate_limit_wait``)."""
        return retry.call(fn, what=what, deadline=self.deadline, rate_limited=self.rate_limit_wait)

    # ------------------------------------------------------------- operations
    def wait(self, op: compute_v1.Operation, zone: str | None, timeout: float | None = None) -> None:
        """Wait for ``op`` to finish, at most ``timeout`` seconds, and raise if it failed."""
        limit = timeout or self.op_timeout
        end = time.monotonic() + limit
        while op.status != DONE:
            remaining = end - time.monotonic()
            if remaining <= 0:
                raise exceptions.DeadlineExceeded(f"operation {op.name} not done after {limit}s")
            call_timeout = min(remaining, 150.0)
            if zone:
                op = self.c.zone_operations.wait(
                    project=self.project, zone=zone, operation=op.name, timeout=call_timeout
                )
            else:
                op = self.c.global_operations.wait(project=self.project, operation=op.name, timeout=call_timeout)
        raise_for_operation(op)

    def _mutate(self, what: str, method: Callable[..., compute_v1.Operation], request: Any, zone: str | None) -> None:
        """Issue a mutation and wait for it. Its request id is set once, so a retry of the same call
        is recognised by Compute Engine and never applied twice."""
        request.request_id = str(uuid.uuid4())
        op = self.call(
            functools.partial(method, request=request),
            what=what,
        )
        self.wait(op, zone)

    # ------------------------------------------------------------------ groups
    def ensure_group(self, zone: str, name: str, template: str, batch_id: str | None = None) -> bool:
        """Create the group (empty) unless it exists. True if this call created it. The batch id goes
        into the group's description (groups have no labels), for the sweeper's orphan search."""
        igm = compute_v1.InstanceGroupManager(
            name=name,
            description=names.group_description(batch_id, self.c.settings.state_bucket) if batch_id else None,
            base_instance_name=name,
            instance_template=f"projects/{self.project}/global/instanceTemplates/{template}",
            target_size=0,
        )
        request = compute_v1.InsertInstanceGroupManagerRequest(
            project=self.project, zone=zone, instance_group_manager_resource=igm
        )
        try:
            self._mutate(f"create group {name}", self.c.migs.insert_unary, request, zone)
            return True
        except exceptions.Conflict:
            return False

    def _template_properties(self, template: str) -> compute_v1.InstanceProperties | None:
        """An instance template's properties, or None if it does not exist."""
        try:
            found = self.call(
                lambda: self.c.templates.get(project=self.project, instance_template=template),
                what=f"get template {template}",
            )
        except exceptions.NotFound:
            return None
        return found.properties

    def template_summary(self, template: str) -> dict[str, str] | None:
        """Machine type and provisioning model of an instance template, or None if it does not exist."""
        props = self._template_properties(template)
        if props is None:
            return None
        return {
            "machine_type": props.machine_type.rsplit("/", 1)[-1] or "unknown",
            "provisioning": props.scheduling.provisioning_model or "STANDARD",
        }

    def vm_shape(self, template: str, zone: str) -> capacity.VmShape | None:
        """What one VM of the template counts against quotas: its machine type's vCPUs
        (``machineTypes.get``), spot or not, an external address or not. None if there is no template."""
        props = self._template_properties(template)
        if props is None:
            return None
        machine_type = capacity.machine_type_name(props.machine_type)
        mt = self.call(
            lambda: self.c.machine_types.get(project=self.project, zone=zone, machine_type=machine_type),
            what=f"get machine type {machine_type}",
        )
        scheduling = props.scheduling
        spot = scheduling.provisioning_model == "SPOT" or bool(scheduling.preemptible)
        external = any(nic.access_configs for nic in props.network_interfaces)
        return capacity.VmShape(machine_type, int(mt.guest_cpus), spot=spot, external_ip=external)

    def region_quotas(self, region: str) -> list[capacity.Quota]:
        """The region's quotas with their usage (``regions.get``)."""
        found = self.call(
            lambda: self.c.regions.get(project=self.project, region=region),
            what=f"get region {region}",
        )
        return [capacity.Quota(q.metric, float(q.limit), float(q.usage)) for q in found.quotas]

    def template_exists(self, template: str) -> bool:
        return self.template_summary(template) is not None

    def group_exists(self, zone: str, name: str) -> bool:
        try:
            self.call(
                lambda: self.c.migs.get(project=self.project, zone=zone, instance_group_manager=name),
                what=f"get group {name}",
            )
            return True
        except exceptions.NotFound:
            return False

    def list_groups(self, zone: str, prefix: str = "") -> list[Group]:
        pages = self.call(
            lambda: list(self.c.migs.list(project=self.project, zone=zone)),
            what="list groups",
        )
        return [
            Group(g.name, g.description or "", epoch(g.creation_timestamp) if g.creation_timestamp else None)
            for g in pages
            if g.name.startswith(prefix)
        ]

    def members(self, zone: str, group: str) -> list[Member] | None:
        """The group's instances, or None if the group does not exist."""
        try:
            managed = self.call(
                lambda: list(
                    self.c.migs.list_managed_instances(project=self.project, zone=zone, instance_group_manager=group)
                ),
                what=f"list members of {group}",
            )
        except exceptions.NotFound:
            return None
        result = []
        for m in managed:
            name = m.name or m.instance.rsplit("/", 1)[-1]
            attempt = list(m.last_attempt.errors.errors) if m.last_attempt else []
            errors = tuple(f"{e.code}: {e.message}" for e in attempt)
            codes = tuple(e.code for e in attempt)
            result.append(Member(name, m.instance_status or "", m.current_action or "", errors, codes))
        return result

    def create_instances(self, zone: str, group: str, wanted: dict[str, dict[str, str]]) -> list[str]:
        """Create the named instances that the group does not have yet. Returns the names created.

        ``wanted`` maps instance name to the metadata preserved on it. Safe to repeat: the group
        refuses a name it already has (409), and then its members are listed and only the missing
        names asked for. Asking first and listing only on a refusal saves a listing (of a group of
        up to 1000 members) per call in the usual case, a queued experiment's one new VM.
        """
        existing: set[str] = set()
        for _ in range(3):
            missing = [n for n in wanted if n not in existing]
            if not missing:
                return []
            configs = [
                compute_v1.PerInstanceConfig(name=n, preserved_state=compute_v1.PreservedState(metadata=wanted[n]))
                for n in missing
            ]
            request = compute_v1.CreateInstancesInstanceGroupManagerRequest(
                project=self.project,
                zone=zone,
                instance_group_manager=group,
                instance_group_managers_create_instances_request_resource=(
                    compute_v1.InstanceGroupManagersCreateInstancesRequest(instances=configs)
                ),
            )
            try:
                what = f"create {len(missing)} instance(s) in {group}"
                self._mutate(what, self.c.migs.create_instances_unary, request, zone)
                return missing
            except exceptions.Conflict:
                log.info("%s already has some of %s; listing its members", group, ", ".join(missing[:3]))
                existing = {m.name for m in self.members(zone, group) or []}
        raise exceptions.Conflict(f"could not create instances in {group}: concurrent changes")

    def delete_instances(self, zone: str, group: str, instances: Iterable[str]) -> bool:
        """Remove instances through their group. False if the group no longer exists."""
        urls = [f"zones/{zone}/instances/{name}" for name in instances]
        if not urls:
            return True
        request = compute_v1.DeleteInstancesInstanceGroupManagerRequest(
            project=self.project,
            zone=zone,
            instance_group_manager=group,
            instance_group_managers_delete_instances_request_resource=(
                compute_v1.InstanceGroupManagersDeleteInstancesRequest(
                    instances=urls, skip_instances_on_validation_error=True
                )
            ),
        )
        try:
            self._mutate(
                f"delete {len(urls)} instance(s) of {group}", self.c.migs.delete_instances_unary, request, zone
            )
            return True
        except exceptions.NotFound:
            return False

    def recreate_instance(self, zone: str, group: str, instance: str) -> bool:
        """Replace an instance of the group by a fresh VM of the same name. False if it is not there."""
        request = compute_v1.RecreateInstancesInstanceGroupManagerRequest(
            project=self.project,
            zone=zone,
            instance_group_manager=group,
            instance_group_managers_recreate_instances_request_resource=(
                compute_v1.InstanceGroupManagersRecreateInstancesRequest(
                    instances=[f"zones/{zone}/instances/{instance}"]
                )
            ),
        )
        try:
            self._mutate(f"recreate {instance}", self.c.migs.recreate_instances_unary, request, zone)
            return True
        except (exceptions.NotFound, exceptions.BadRequest):
            return False

    def delete_group(self, zone: str, name: str) -> bool:
        """Delete the group and its instances. False if it did not exist (already deleted)."""
        request = compute_v1.DeleteInstanceGroupManagerRequest(
            project=self.project, zone=zone, instance_group_manager=name
        )
        try:
            self._mutate(f"delete group {name}", self.c.migs.delete_unary, request, zone)
            return True
        except exceptions.NotFound:
            return False
        except exceptions.BadRequest as exc:
            # Compute Engine answers 400 resourceNotReady while the group is being deleted.
            if "resourceNotReady" in errors.reasons(exc):
                return False
            raise

    def created_at(self, zone: str, name: str) -> float | None:
        """When the instance was created (its creationTimestamp, epoch seconds), None if it is gone."""
        found = self.instance(zone, name)
        if found is None or not found.creation_timestamp:
            return None
        return epoch(found.creation_timestamp)

    def instance(self, zone: str, name: str) -> compute_v1.Instance | None:
        try:
            return self.call(
                lambda: self.c.instances.get(project=self.project, zone=zone, instance=name),
                what=f"get instance {name}",
            )
        except exceptions.NotFound:
            return None


@dataclass(frozen=True)
class Host:
    """What Compute Engine itself says about an instance: who it is and how to reach it.

    Read by dispatch instead of believing an instance-ready message: any VM may publish one."""

    name: str
    id: str
    status: str
    created_at: float | None
    group: str | None  # the managed instance group that created it (its ``created-by`` metadata)
    address: str  # networkInterfaces[0].networkIP
    ssh_port: int  # 22 on Compute Engine; a local VM's port is the emulator's label
    host_keys: tuple[str, ...] = ()  # OpenSSH one-line public keys, from the guest attributes


SSH_PORT_LABEL = "localcloud-ssh-port"  # set by the local cloud's Compute emulator only


def describe_host(api: ComputeApi, zone: str, name: str) -> Host | None:
    """The instance as Compute knows it, with the host keys its guest agent published; None if gone."""
    found = api.instance(zone, name)
    if found is None:
        return None
    meta = {item.key: item.value for item in found.metadata.items} if found.metadata else {}
    created_by = meta.get("created-by", "")
    group = created_by.rsplit("/", 1)[-1] if "/instanceGroupManagers/" in created_by else None
    nics = list(found.network_interfaces)
    port = found.labels.get(SSH_PORT_LABEL, "22") if api.c.settings.compute_endpoint else "22"
    return Host(
        name=found.name,
        id=str(found.id),
        status=found.status,
        created_at=epoch(found.creation_timestamp) if found.creation_timestamp else None,
        group=group,
        address=nics[0].network_i_p if nics else "",
        ssh_port=int(port) if port.isdigit() else 22,
        host_keys=host_keys(api, zone, name),
    )


def host_keys(api: ComputeApi, zone: str, name: str) -> tuple[str, ...]:
    """The SSH host keys in the instance's guest attributes (``hostkeys/``, as ``gcloud compute ssh``
    reads them), as OpenSSH public-key lines; empty if the guest has published none (yet)."""
    try:
        found = api.call(
            lambda: api.c.instances.get_guest_attributes(
                request=compute_v1.GetGuestAttributesInstanceRequest(
                    project=api.project, zone=zone, instance=name, query_path="hostkeys/"
                ),
                timeout=10,
            ),
            what=f"get host keys of {name}",
        )
    except exceptions.NotFound:
        return ()
    items = found.query_value.items if found.query_value else []
    return tuple(f"{i.key} {i.value}" for i in items if i.namespace == "hostkeys" and i.key and i.value)
