"""The Compute Engine API verbs the emulator serves: instance templates, managed instance groups,
instances, instance groups and operations.

Operations have Google's semantics: a managed instance group's insert/createInstances/
deleteInstances operation is DONE as soon as the change is scheduled, while the VMs go through
PROVISIONING, STAGING, RUNNING (or STOPPING, TERMINATED) in the background (lifecycle.py), watched
through listManagedInstances. An operation exists only for an accepted request: a rejected one
records nothing, so a retry with the same ``requestId`` is judged afresh, and a retry of an accepted
one gets its operation back (``verb``). Failures Compute Engine reports on the operation
(deleteInstances of a non-member) end it DONE with ``error`` and ``httpErrorStatusCode``. How long
operations run and VMs take to boot comes from the settings (localcloud/profiles.py).

One class of a little over 400 lines: every verb runs under the same lock and records its operation
the same way, and each is short; the shapes live in resources.py, the VMs' life in lifecycle.py.
"""

from __future__ import annotations

import functools
import random
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Concatenate

from localcloud.compute.errors import ApiError, OpError, already_exists, check_name, invalid, last_segment, not_found
from localcloud.compute.lifecycle import Lifecycle
from localcloud.compute.resources import GOOGLE, Member, Mig, Operation, fingerprint, instance_group, new_id, now
from localcloud.compute.state import State


def verb[**P](fn: Callable[Concatenate[Cloud, P], Operation]) -> Callable[Concatenate[Cloud, P], Operation]:
    """The preamble of every verb that changes something: under the lock, a request whose
    ``requestId`` was accepted before gets that operation back, unchanged; anything else runs."""

    @functools.wraps(fn)
    def run(self: Cloud, /, *args: P.args, **kwargs: P.kwargs) -> Operation:
        request_id = kwargs.get("request_id")
        with self.lock:
            repeat = self._repeat(request_id if isinstance(request_id, str) else None)
            if repeat is not None:
                return repeat
            return fn(self, *args, **kwargs)

    return run


class Cloud(State):
    """The emulator: its state, the verbs over it and its VMs' lifecycle (``vms``)."""

    def __init__(self, state_dir: Path, vm_env: dict[str, str]) -> None:
        super().__init__(state_dir, vm_env)
        self.vms = Lifecycle(self)

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
    @verb
    def insert_template(self, project: str, body: dict[str, Any], *, request_id: str | None) -> Operation:
        name = check_name("resource.name", body.get("name"))
        link = f"{GOOGLE}/projects/{project}/global/instanceTemplates/{name}"
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

    @verb
    def delete_template(self, project: str, name: str, *, request_id: str | None) -> Operation:
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
    @verb
    def insert_mig(self, project: str, zone: str, body: dict[str, Any], *, request_id: str | None) -> Operation:
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
        self._within_size(size)
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
            return self.mig(project, zone, name).to_json()

    def list_migs(self, project: str, zone: str) -> list[dict[str, Any]]:
        with self.lock:
            return [m.to_json() for (p, z, _), m in sorted(self.migs.items()) if (p, z) == (project, zone)]

    @verb
    def delete_mig(self, project: str, zone: str, name: str, *, request_id: str | None) -> Operation:
        mig = self.mig(project, zone, name)
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
            self.vms.delete_member(mig, member)
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

    @verb
    def resize(self, project: str, zone: str, name: str, size: int, *, request_id: str | None) -> Operation:
        if size < 0:
            raise invalid("Invalid value for field 'size': must be >= 0")
        mig = self.mig(project, zone, name)
        self._within_size(size)
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
            self.vms.create_member(mig, member)
        for member in live[size:]:
            self.vms.delete_member(mig, member)
        mig.target_size = size

    def _within_size(self, size: int) -> None:
        """A zonal group holds at most ``mig_max_instances`` VMs (Google's limits on)."""
        most = self.google.get().mig_max_instances
        if most is not None and size > most:
            raise invalid(
                f"Invalid value for field 'resource.targetSize': '{size}'. "
                f"A zonal managed instance group can have at most {most} instances."
            )

    @verb
    def create_instances(
        self, project: str, zone: str, name: str, body: dict[str, Any], *, request_id: str | None
    ) -> Operation:
        mig = self.mig(project, zone, name)
        wanted = body.get("instances") or []
        if not wanted:
            raise ApiError(400, "required", "Required field 'instances' not specified")
        names = []
        for item in wanted:
            instance = check_name("instances.name", item.get("name"))
            if instance in mig.members or (project, zone, instance) in self.instances or instance in names:
                raise already_exists(f"projects/{project}/zones/{zone}/instances/{instance}")
            names.append(instance)
        self._within_size(mig.target_size + len(names))
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
            self.vms.create_member(mig, member)
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

    @verb
    def delete_instances(
        self, project: str, zone: str, name: str, body: dict[str, Any], *, request_id: str | None
    ) -> Operation:
        mig = self.mig(project, zone, name)
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
            self.vms.delete_member(mig, member)
        self._finish_soon(op, error)
        return op

    @verb
    def recreate_instances(
        self, project: str, zone: str, name: str, body: dict[str, Any], *, request_id: str | None
    ) -> Operation:
        mig = self.mig(project, zone, name)
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
                self.vms.stop_in_background(mig, member, vm, "recreate")
            else:
                self.vms.create_member(mig, member)
        self._finish_soon(op, error)
        return op

    def list_managed(self, project: str, zone: str, name: str) -> list[dict[str, Any]]:
        with self.lock:
            mig = self.mig(project, zone, name)
            return [mig.managed_instance(member) for member in mig.members.values()]

    def list_errors(self, project: str, zone: str, name: str) -> list[dict[str, Any]]:
        with self.lock:
            self.mig(project, zone, name)
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
            return vm.guest_attributes_json(query_path, variable_key)

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

    def preempt(self, project: str, zone: str, name: str, notice: bool = True) -> dict[str, Any]:
        return self.vms.preempt(project, zone, name, notice)

    def shutdown(self) -> None:
        self.vms.shutdown()
