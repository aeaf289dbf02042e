"""The life of a Compute Engine VM in the emulator: creation against quota and stock, boot, stop, preemption.

A group's member asks for a VM (``create_member``); over quota or in an exhausted zone the creation
fails as Compute Engine's does (the error in the member's ``lastAttempt`` and the group's
listErrors) and the group retries it every ``retry_interval``. A created VM goes PROVISIONING,
STAGING, then runs as a real local process tree (localcloud/vm.py) that reports RUNNING and READY
on its stdout; it stops like Compute Engine's (STOPPING, SIGTERM, a grace period, TERMINATED), and a
preempted or recreated VM comes back under the same name.

Every method that says so is called with the state's lock held; boots and stops run on their own
threads and take the lock only to change state.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from typing import Any

from localcloud import procs
from localcloud.compute import quota
from localcloud.compute.errors import ApiError, last_segment, not_found
from localcloud.compute.resources import GOOGLE, Member, Mig, Vm, now
from localcloud.compute.state import State
from localcloud.ports import free_port
from sinergym_cloud import names

GUEST_ATTRIBUTE = re.compile(
    r"^GUEST-ATTRIBUTE (?P<namespace>[a-z0-9-]{1,64})/(?P<key>[A-Za-z0-9@._-]{1,64}) (?P<value>\S{1,4096})$"
)


class Lifecycle:
    """The VMs of one emulator's ``State``."""

    def __init__(self, state: State) -> None:
        self.state = state

    def _properties(self, mig: Mig) -> dict[str, Any]:
        template = self.state.templates.get((mig.project, last_segment(mig.template_url, "instanceTemplates")))
        return template["properties"] if template else {}

    def _creation_error(self, mig: Mig) -> tuple[str, str]:
        """Why Compute Engine would not create one more VM of ``mig`` now (code, message), or ("", "")."""
        zone = mig.zone
        if quota.is_exhausted(self.state.settings.zone_exhausted, zone):
            return (
                "ZONE_RESOURCE_POOL_EXHAUSTED",
                f"The zone 'projects/{mig.project}/zones/{zone}' does not have enough resources available "
                "to fulfill the request.",
            )
        props = self._properties(mig)
        limits = self.state.limits()
        if quota.needs(props, limits) is None:
            machine = quota.machine_type_name(props)
            return (
                "RESOURCE_NOT_FOUND",
                f"The resource 'projects/{mig.project}/zones/{zone}/machineTypes/{machine}' was not found",
            )
        over = quota.exceeded(props, self.state.instances.values(), mig.project, zone, limits)
        if over is not None:
            metric, limit = over
            return (
                "QUOTA_EXCEEDED",
                f"Quota '{metric}' exceeded.  Limit: {limit:.1f} in region {quota.region_of(zone)}.",
            )
        return "", ""

    def create_member(self, mig: Mig, member: Member) -> None:
        """Schedule a VM for ``member`` (called with the lock held)."""
        member.current_action = "CREATING" if member.current_action != "RECREATING" else "RECREATING"
        code, message = self._creation_error(mig)
        if code:
            member.errors = [{"code": code, "message": message}]
            self.state.mig_errors.setdefault((mig.project, mig.zone, mig.name), []).append(
                {
                    "timestamp": now(),
                    "error": {"code": code, "message": message},
                    "instanceActionDetails": {
                        "action": "CREATING",
                        "instance": f"{GOOGLE}/projects/{mig.project}/zones/{mig.zone}/instances/{member.name}",
                    },
                }
            )
            timer = threading.Timer(self.state.settings.retry_interval, self._retry_create, args=(mig, member))
            timer.daemon = True
            timer.start()
            return
        member.errors = []
        props = self._properties(mig)
        vm = Vm(mig.project, mig.zone, member.name, mig.name, props, mig.template_url, member.preserved)
        self.state.instances[(mig.project, mig.zone, member.name)] = vm
        member.vm = vm
        threading.Thread(target=self._boot_vm, args=(mig, member, vm), daemon=True).start()

    def _retry_create(self, mig: Mig, member: Member) -> None:
        with self.state.lock:
            if mig.deleting or mig.members.get(member.name) is not member or member.current_action == "DELETING":
                return
            if member.vm is None:
                self.create_member(mig, member)

    def _boot_vm(self, mig: Mig, member: Member, vm: Vm) -> None:  # noqa: PLR0915 - one boot, in its order
        span = self.state.settings.boot_seconds
        total = random.uniform(float(span[0]), float(span[1])) if span else 0.0
        for phase, share in (("PROVISIONING", 0.4), ("STAGING", 0.2)):
            with self.state.lock:
                if vm.stopping:
                    return
                vm.status = phase
            if total:
                time.sleep(total * share)
        with self.state.lock:
            if vm.stopping:
                return
            vm.status = "STAGING"
            vm.boots += 1
            vm.boot_id = f"{vm.id}-{vm.boots}-{secrets.token_hex(4)}"
            vm.home = self.state.vm_root / vm.zone / vm.name
            vm.ssh_port = free_port()
            settings = self.state.settings
            fail = bool(settings.fail_boot and re.fullmatch(settings.fail_boot, vm.name))
            metadata = vm.metadata()
        home = vm.home
        # A fresh disk for a new VM; a restart after preemption keeps nothing either (DELETE action).
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir(parents=True)
        ssh_keys = [line for line in metadata.get("ssh-keys", "").splitlines() if line.strip()]
        session_env = {
            procs.MARKER: self.state.vm_env.get(procs.MARKER, ""),
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
            "env": {**self.state.vm_env, "SINERGYM_TRAINER_NICE": str(procs.VM_NICE)},
            "ready_topic": metadata.get(names.META_READY_TOPIC, names.TOPIC_READY),
            "boot_delay": total * 0.4 if total else settings.boot_delay,
            "fail_boot": fail,
            "shutdown_grace": settings.shutdown_grace,
        }
        (home / "vm.json").write_text(json.dumps(spec, indent=2))
        env = {**os.environ, **self.state.vm_env, "LOCALCLOUD_VM": vm.name}
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
        record.save(self.state.pid_dir / f"{record.name}.json")
        with self.state.lock:
            vm.process = process
            vm.pid_record = record
            self.state.event("vm.staging", instance=vm.name, boot_id=vm.boot_id)
        assert process.stdout is not None
        for raw in process.stdout:
            line = raw.decode(errors="replace").strip()
            with self.state.lock:
                if line == "RUNNING":
                    vm.status = "RUNNING"
                    vm.started = now()
                    if member.current_action in ("CREATING", "RECREATING"):
                        member.current_action = "NONE"
                    self.state.event("vm.running", instance=vm.name, boot_id=vm.boot_id)
                elif line.startswith("READY"):
                    vm.ready = True
                    self.state.event("vm.ready", instance=vm.name, boot_id=vm.boot_id)
                elif (attr := GUEST_ATTRIBUTE.match(line)) and vm.guest_attributes_enabled:
                    vm.guest_attributes[(attr["namespace"], attr["key"])] = attr["value"]
                elif line.startswith("BOOT-FAILED"):
                    vm.boot_error = line.partition(" ")[2]
                    self.state.event("vm.boot_failed", instance=vm.name, reason=vm.boot_error)
        process.wait()

    def delete_member(self, mig: Mig, member: Member) -> None:
        """Start removing ``member`` and its VM (called with the lock held)."""
        member.current_action = "DELETING"
        vm = member.vm
        if vm is None:
            mig.members.pop(member.name, None)
            return
        self.stop_in_background(mig, member, vm, "delete")

    def _stop_vm(self, mig: Mig, member: Member, vm: Vm, why: str, notice: bool = True) -> None:
        """Shut a VM down like Compute Engine: STOPPING, SIGTERM, a grace period, TERMINATED.
        ``notice`` False: the guest gets no ACPI shutdown, every process of it is killed at once (a
        preemption whose notice never reached the guest)."""
        with self.state.lock:
            if vm.stopping:
                return
            vm.stopping = True
            vm.status = "STOPPING"
            grace = self.state.settings.preempt_grace if why == "preempt" else self.state.settings.shutdown_grace
            process = vm.process
            self.state.event(f"vm.{why}", instance=vm.name, boot_id=vm.boot_id, notice=notice)
        if process is not None and not notice:
            procs.kill_tree(process.pid, grace=0.0, sig=signal.SIGKILL)
        if process is not None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(grace + 2)
            # The VM's init ends every process of the VM before it exits (localcloud/vm.py): only an
            # init that outlived its grace needs its tree killed, a scan of every process on the host
            # that twenty VMs stopping at once would otherwise each pay, holding up the API.
            if process.poll() is None:
                procs.kill_tree(process.pid, grace=1.0, sig=signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(5)
        if vm.pid_record is not None:
            (self.state.pid_dir / f"{vm.pid_record.name}.json").unlink(missing_ok=True)
        if vm.home is not None and (vm.home / "console.log").exists():
            self.state.console_dir.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(OSError):
                shutil.copy(vm.home / "console.log", self.state.console_dir / f"{vm.name}-{vm.boot_id}.log")
        with self.state.lock:
            vm.status = "TERMINATED"
            self.state.event("vm.terminated", instance=vm.name, boot_id=vm.boot_id, why=why)
            # A delete that arrived while a preemption or recreation was stopping the VM is a delete.
            if why == "delete" or mig.deleting or member.current_action == "DELETING":
                self.state.instances.pop((vm.project, vm.zone, vm.name), None)
                if mig.members.get(member.name) is member:
                    del mig.members[member.name]
                if vm.home is not None:
                    shutil.rmtree(vm.home, ignore_errors=True)
                return
            # Preempted or recreated: the MIG brings the instance back under the same name.
            member.current_action = "RECREATING"
            fresh = Vm(vm.project, vm.zone, vm.name, vm.mig, vm.template, vm.template_url, vm.preserved, id=vm.id)
            fresh.boots = vm.boots
            self.state.instances[(vm.project, vm.zone, vm.name)] = fresh
            member.vm = fresh
            threading.Thread(target=self._boot_vm, args=(mig, member, fresh), daemon=True).start()

    def stop_in_background(self, mig: Mig, member: Member, vm: Vm, why: str, notice: bool = True) -> None:
        """Start stopping ``vm`` on its own thread (``why``: delete, preempt or recreate)."""
        threading.Thread(target=self._stop_vm, args=(mig, member, vm, why, notice), daemon=True).start()

    def preempt(self, project: str, zone: str, name: str, notice: bool = True) -> dict[str, Any]:
        with self.state.lock:
            vm = self.state.instances.get((project, zone, name))
            if vm is None or vm.mig is None:
                raise not_found(f"projects/{project}/zones/{zone}/instances/{name}")
            mig = self.state.mig(project, zone, vm.mig)
            member = mig.members[name]
            if vm.status != "RUNNING":
                raise ApiError(400, "resourceNotReady", f"instance {name} is {vm.status}, not RUNNING")
        self.stop_in_background(mig, member, vm, "preempt", notice)
        return {"instance": name, "preempted": True, "notice": notice}

    def shutdown(self) -> None:
        """Stop every VM (the emulator is going away)."""
        with self.state.lock:
            vms = [(v, v.process) for v in self.state.instances.values() if v.process is not None]
            for vm, _ in vms:
                vm.stopping = True
        threads = []
        for vm, process in vms:
            assert process is not None
            t = threading.Thread(
                target=procs.kill_tree, args=(process.pid, self.state.settings.shutdown_grace), daemon=True
            )
            t.start()
            threads.append((t, vm))
        for t, vm in threads:
            t.join(self.state.settings.shutdown_grace + 10)
            if vm.pid_record is not None:
                (self.state.pid_dir / f"{vm.pid_record.name}.json").unlink(missing_ok=True)
