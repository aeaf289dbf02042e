"""What the Compute emulator holds, under one lock: its resources, settings, faults and event log.

``State`` is shared by the API verbs (verbs.py) and the VM lifecycle (lifecycle.py). Every change
happens with ``lock`` held; VM boots and shutdowns run on their own threads and take the lock only
to change state.
"""

from __future__ import annotations

import collections
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from localcloud import limits as google_limits
from localcloud.compute import quota
from localcloud.compute.errors import ApiError, invalid, not_found
from localcloud.compute.resources import Mig, Operation, Vm


@dataclass
class Settings:
    """The emulator's knobs; tests and benchmarks change them through /_emulator/config."""

    boot_delay: float = 0.0
    fail_boot: str | None = None  # regex of instance names whose boot fails
    shutdown_grace: float = 5.0  # SIGTERM -> SIGKILL on delete
    preempt_grace: float = 5.0  # SIGTERM -> SIGKILL on preemption (30 s on Google's spot VMs)
    quota_instances: int = 200  # the regional INSTANCES limit
    # Other regional limits by metric over quota.DEFAULT_LIMITS, e.g. {"CPUS": 24} (quota.py).
    quotas: dict[str, float] = field(default_factory=dict)
    # Zones out of stock (ZONE_RESOURCE_POOL_EXHAUSTED): a list of zone names, or True for every zone.
    zone_exhausted: bool | list[str] = False
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
            checked = value
            if key == "quotas":
                checked = quota.check_quotas(value)
            elif key == "zone_exhausted":
                checked = quota.check_zone_exhausted(value)
            setattr(self, key, checked)


@dataclass
class Fault:
    """An injected error: the next ``times`` calls of ``method`` fail with it."""

    method: str
    code: int
    reason: str
    message: str
    times: int = 1


class State:
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
        # Google's limits in force (rate quotas, a group's size: localcloud/limits.py), and the calls they refused.
        self.google = google_limits.Source()
        self.refused: collections.Counter[str] = collections.Counter()
        self.templates: dict[tuple[str, str], dict[str, Any]] = {}
        self.migs: dict[tuple[str, str, str], Mig] = {}
        self.instances: dict[tuple[str, str, str], Vm] = {}
        self.ops: dict[str, Operation] = {}
        self.request_ids: dict[str, Operation] = {}
        self.faults: list[Fault] = []
        self.events: list[dict[str, Any]] = []
        self.mig_errors: dict[tuple[str, str, str], list[dict[str, Any]]] = {}

    def event(self, kind: str, **fields: Any) -> None:
        self.events.append({"t": time.time(), "kind": kind, **fields})

    def check_fault(self, method: str) -> None:
        with self.lock:
            for fault in self.faults:
                if fault.times > 0 and re.fullmatch(fault.method, method):
                    fault.times -= 1
                    self.event("fault", method=method, code=fault.code, reason=fault.reason)
                    raise ApiError(fault.code, fault.reason, fault.message)

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

    def mig(self, project: str, zone: str, name: str) -> Mig:
        """The group ``name`` (called with the lock held), or Compute Engine's 404."""
        mig = self.migs.get((project, zone, name))
        if mig is None:
            raise not_found(f"projects/{project}/zones/{zone}/instanceGroupManagers/{name}")
        return mig

    def limits(self) -> dict[str, float]:
        """Every regional quota limit (the same in each region)."""
        return quota.limits(self.settings.quotas, self.settings.quota_instances)

    def region(self, project: str, region: str) -> dict[str, Any]:
        """``regions.get``: the region with its quotas' limits and what the project's VMs use of them."""
        with self.lock:
            limits = self.limits()
            used = quota.usage(self.instances.values(), project, region, limits)
            return quota.region_json(project, region, limits, used)

    def zones(self, project: str) -> list[str]:
        """The zones this project has used (an aggregated list has one scope per zone)."""
        with self.lock:
            found = {z for (p, z, _) in self.migs if p == project}
            found |= {z for (p, z, _) in self.instances if p == project}
            found |= {o.zone for o in self.ops.values() if o.project == project and o.zone}
            return sorted(found)

    def _action(self, vm: Vm) -> str:
        """The current action of ``vm``'s member in its group ("" for a VM outside a group)."""
        mig = self.migs.get((vm.project, vm.zone, vm.mig or ""))
        member = mig.members.get(vm.name) if mig is not None else None
        return member.current_action if member is not None and member.vm is vm else ""

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "settings": self.settings.__dict__,
                "templates": sorted(n for (_, n) in self.templates),
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
                        "created": v.created,
                        # The group's current action on it (DELETING once its deletion was asked).
                        "action": self._action(v),
                    }
                    for (_, z, n), v in self.instances.items()
                },
            }
