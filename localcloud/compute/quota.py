"""Compute Engine's regions, zones, machine types and regional quotas, as the emulator keeps them.

What a project may run is bounded per region by quotas Compute Engine reports in ``regions.get``
(``quotas``: metric, limit, usage). The emulator counts a VM as Compute Engine does from the moment
it is created until it is TERMINATED:

- its vCPUs (``machineTypes.get``'s ``guestCpus`` of the template's machine type) against its machine
  family's own quota where the region has one (``N2_CPUS`` for ``n2-*``), otherwise ``CPUS`` (N1,
  E2 and shared-core types); a spot or preemptible VM against ``PREEMPTIBLE_CPUS`` instead, where
  that quota's limit is above 0 (a project without it runs spot VMs on its regular CPU quota);
- one ``INSTANCES``; one ``IN_USE_ADDRESSES`` if its template gives it an external IP.

A creation that would pass a limit fails with ``QUOTA_EXCEEDED`` and the group retries it, as
Compute Engine's does. A zone can be out of stock (``zone_exhausted``): creations there fail with
``ZONE_RESOURCE_POOL_EXHAUSTED`` while the region's other zones create VMs as usual.

The limits are the emulator's settings (``quotas`` by metric, ``quota_instances`` for INSTANCES),
changed per test through ``/_emulator/config``. This module is the emulator's own reading of
Compute Engine's rules, independent of the product's (sinergym_cloud/capacity.py), so a test of
the product against it checks one against the other.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from localcloud.compute.errors import invalid, not_found
from localcloud.compute.resources import GOOGLE, Vm

# Regions the emulator serves, with their zones (as Compute Engine names them).
REGIONS: dict[str, tuple[str, ...]] = {
    "europe-west1": ("b", "c", "d"),
    "europe-west3": ("a", "b", "c"),
    "europe-west4": ("a", "b", "c"),
    "europe-southwest1": ("a", "b", "c"),
    "us-central1": ("a", "b", "c", "f"),
    "us-east1": ("b", "c", "d"),
    "us-west1": ("a", "b", "c"),
    "asia-east1": ("a", "b", "c"),
}

# The limits of a project the emulator starts with: generous, so that only a test that lowers one
# meets it. PREEMPTIBLE_CPUS at 0 is Compute Engine's default (spot VMs use the CPU quotas).
DEFAULT_LIMITS: dict[str, float] = {
    "CPUS": 2400.0,
    "N2_CPUS": 2400.0,
    "N2D_CPUS": 2400.0,
    "C2_CPUS": 2400.0,
    "C2D_CPUS": 2400.0,
    "C3_CPUS": 2400.0,
    "PREEMPTIBLE_CPUS": 0.0,
    "IN_USE_ADDRESSES": 200.0,
}
METRIC = re.compile(r"^[A-Z][A-Z0-9_]*$")

# Predefined machine types: vCPUs and memory (MB) of the shared-core ones, memory per vCPU of the rest.
SHARED_CORE: dict[str, tuple[int, int]] = {
    "e2-micro": (2, 1024),
    "e2-small": (2, 2048),
    "e2-medium": (2, 4096),
    "f1-micro": (1, 614),
    "g1-small": (1, 1740),
}
MB_PER_VCPU: dict[str, dict[str, int]] = {
    "e2": {"standard": 4096, "highcpu": 1024, "highmem": 8192},
    "n1": {"standard": 3840, "highcpu": 922, "highmem": 6656},
    "n2": {"standard": 4096, "highcpu": 1024, "highmem": 8192},
    "n2d": {"standard": 4096, "highcpu": 1024, "highmem": 8192},
    "c2": {"standard": 4096},
    "c2d": {"standard": 4096, "highcpu": 2048, "highmem": 8192},
    "c3": {"standard": 4096, "highcpu": 2048, "highmem": 8192},
}
PREDEFINED = re.compile(r"^(?P<family>[a-z][a-z0-9]*)-(?P<kind>standard|highcpu|highmem)-(?P<cpus>[0-9]{1,3})$")
SIZES = (2, 4, 8, 16, 32, 48, 64, 80, 96)  # the vCPU counts of predefined types (n1-standard-1 besides)
CUSTOM = re.compile(r"^(?:(?P<family>[a-z][a-z0-9]*)-)?custom-(?P<cpus>[1-9][0-9]{0,2})-(?P<memory>[1-9][0-9]{2,6})$")


@dataclass(frozen=True)
class MachineType:
    name: str
    cpus: int
    memory_mb: int
    shared: bool = False

    @property
    def family(self) -> str:
        return "n1" if self.name.startswith("custom-") else self.name.split("-", 1)[0]


@functools.lru_cache(maxsize=256)
def machine_type(name: str) -> MachineType | None:
    """The machine type ``name`` (``n2-highcpu-8``, ``e2-medium``, ``n2-custom-4-8192``), or None."""
    if name in SHARED_CORE:
        cpus, memory = SHARED_CORE[name]
        return MachineType(name, cpus, memory, shared=True)
    if m := PREDEFINED.match(name):
        per_vcpu = MB_PER_VCPU.get(m["family"], {}).get(m["kind"])
        cpus = int(m["cpus"])
        sized = cpus in SIZES or name == "n1-standard-1"
        return MachineType(name, cpus, cpus * per_vcpu) if per_vcpu and sized else None
    if m := CUSTOM.match(name):
        family = m["family"] or "n1"
        return MachineType(name, int(m["cpus"]), int(m["memory"])) if family in MB_PER_VCPU else None
    return None


def machine_type_name(props: Mapping[str, Any]) -> str:
    """The machine type of template properties: a name (``e2-standard-2``) or a URL ending in one."""
    return str(props.get("machineType") or "e2-standard-2").rstrip("/").rsplit("/", 1)[-1]


@functools.lru_cache(maxsize=256)
def region_of(zone: str) -> str:
    """``europe-west1`` from ``europe-west1-b``."""
    return zone.rsplit("-", 1)[0]


def zones_of(region: str) -> list[str]:
    return [f"{region}-{suffix}" for suffix in REGIONS.get(region, ())]


def stable_id(*parts: str) -> str:
    """A uint64 id that stays the same for the same resource (regions and machine types are Google's)."""
    return str(int.from_bytes(hashlib.sha256("/".join(parts).encode()).digest()[:7], "big"))


def check_quotas(value: Any) -> dict[str, float]:
    """The ``quotas`` setting: limits by metric, e.g. ``{"CPUS": 24, "N2_CPUS": 24}``."""
    if not isinstance(value, dict):
        raise invalid(f"emulator setting 'quotas' must map metric names to limits, not {value!r}")
    checked = {}
    for metric, limit in value.items():
        if not isinstance(metric, str) or not METRIC.match(metric):
            raise invalid(f"emulator setting 'quotas': {metric!r} is not a quota metric (like CPUS, N2_CPUS)")
        if metric == "INSTANCES":
            raise invalid("emulator setting 'quotas': set the INSTANCES limit with 'quota_instances'")
        if isinstance(limit, bool) or not isinstance(limit, int | float) or limit < 0:
            raise invalid(f"emulator setting 'quotas': the limit of {metric} must be a number >= 0, not {limit!r}")
        checked[metric] = float(limit)
    return checked


def check_zone_exhausted(value: Any) -> bool | list[str]:
    """The ``zone_exhausted`` setting: True (every zone), False, or the names of the zones out of stock."""
    if isinstance(value, bool):
        return value
    if isinstance(value, list) and all(isinstance(z, str) and z for z in value):
        return list(value)
    raise invalid(f"emulator setting 'zone_exhausted' must be true, false or a list of zone names, not {value!r}")


def is_exhausted(setting: bool | list[str], zone: str) -> bool:
    return setting is True or (isinstance(setting, list) and zone in setting)


def limits(quotas: Mapping[str, float], instances: float) -> dict[str, float]:
    """Every regional limit: the defaults, the ``quotas`` setting over them, and INSTANCES."""
    return {**DEFAULT_LIMITS, **quotas, "INSTANCES": float(instances)}


def needs(props: Mapping[str, Any], limits: Mapping[str, float]) -> dict[str, float] | None:
    """What one VM of these template properties counts against each quota; None if its machine
    type does not exist."""
    mt = machine_type(machine_type_name(props))
    if mt is None:
        return None
    scheduling = props.get("scheduling", {})
    spot = scheduling.get("provisioningModel") == "SPOT" or bool(scheduling.get("preemptible"))
    own = f"{mt.family.upper()}_CPUS"
    cpu = own if own in limits else "CPUS"
    if spot and limits.get("PREEMPTIBLE_CPUS", 0) > 0:
        cpu = "PREEMPTIBLE_CPUS"
    wanted = {cpu: float(mt.cpus), "INSTANCES": 1.0}
    if any(nic.get("accessConfigs") for nic in props.get("networkInterfaces", [])):
        wanted["IN_USE_ADDRESSES"] = 1.0
    return wanted


def usage(vms: Iterable[Vm], project: str, region: str, limits: Mapping[str, float]) -> dict[str, float]:
    """What the project's VMs in ``region`` use of each quota (every VM not TERMINATED counts)."""
    per_template: dict[str, tuple[Mapping[str, Any], int]] = {}
    for vm in vms:
        if vm.project != project or vm.status == "TERMINATED" or region_of(vm.zone) != region:
            continue
        props, n = per_template.get(vm.template_url, (vm.template, 0))
        per_template[vm.template_url] = (props, n + 1)
    used = dict.fromkeys(limits, 0.0)
    for props, n in per_template.values():  # VMs of one template ask the same of each quota
        for metric, amount in (needs(props, limits) or {}).items():
            used[metric] = used.get(metric, 0.0) + amount * n
    return used


def exceeded(
    props: Mapping[str, Any], vms: Iterable[Vm], project: str, zone: str, limits: Mapping[str, float]
) -> tuple[str, float] | None:
    """The first quota one more VM of ``props`` in ``zone`` would pass, with its limit, or None."""
    wanted = needs(props, limits) or {}
    used = usage(vms, project, region_of(zone), limits)
    for metric, amount in wanted.items():
        limit = limits.get(metric)
        if limit is not None and used.get(metric, 0.0) + amount > limit:
            return metric, limit
    return None


# ------------------------------------------------------------------------------ resources as JSON
def region_json(project: str, region: str, limits: Mapping[str, float], used: Mapping[str, float]) -> dict[str, Any]:
    if region not in REGIONS:
        raise not_found(f"projects/{project}/regions/{region}")
    base = f"{GOOGLE}/projects/{project}"
    return {
        "kind": "compute#region",
        "id": stable_id("region", region),
        "creationTimestamp": "1969-12-31T16:00:00.000-08:00",
        "name": region,
        "description": region,
        "status": "UP",
        "zones": [f"{base}/zones/{z}" for z in zones_of(region)],
        "quotas": [
            {"metric": metric, "limit": limit, "usage": used.get(metric, 0.0)}
            for metric, limit in sorted(limits.items())
        ],
        "selfLink": f"{base}/regions/{region}",
        "supportsPzs": False,
    }


def zone_json(project: str, zone: str) -> dict[str, Any]:
    region = region_of(zone)
    if zone not in zones_of(region):
        raise not_found(f"projects/{project}/zones/{zone}")
    base = f"{GOOGLE}/projects/{project}"
    return {
        "kind": "compute#zone",
        "id": stable_id("zone", zone),
        "creationTimestamp": "1969-12-31T16:00:00.000-08:00",
        "name": zone,
        "description": zone,
        "status": "UP",
        "region": f"{base}/regions/{region}",
        "selfLink": f"{base}/zones/{zone}",
        "availableCpuPlatforms": ["Intel Broadwell"],
        "supportsPzs": False,
    }


def machine_type_json(project: str, zone: str, name: str) -> dict[str, Any]:
    mt = machine_type(name)
    if mt is None or zone not in zones_of(region_of(zone)):
        raise not_found(f"projects/{project}/zones/{zone}/machineTypes/{name}")
    memory_gb = mt.memory_mb / 1024
    return {
        "kind": "compute#machineType",
        "id": stable_id("machineType", name),
        "creationTimestamp": "1969-12-31T16:00:00.000-08:00",
        "name": name,
        "description": f"{mt.cpus} vCPU{'s' if mt.cpus > 1 else ''}, {memory_gb:g} GB RAM",
        "guestCpus": mt.cpus,
        "memoryMb": mt.memory_mb,
        "imageSpaceGb": 0,
        "maximumPersistentDisks": 16 if mt.shared else 128,
        "maximumPersistentDisksSizeGb": "3072" if mt.shared else "263168",
        "zone": zone,
        "selfLink": f"{GOOGLE}/projects/{project}/zones/{zone}/machineTypes/{name}",
        "isSharedCpu": mt.shared,
        "architecture": "X86_64",
    }


def machine_type_names() -> list[str]:
    """Every predefined machine type the emulator lists (custom ones are only got by name)."""
    found = list(SHARED_CORE)
    for family, kinds in MB_PER_VCPU.items():
        for kind in kinds:
            found += [f"{family}-{kind}-{cpus}" for cpus in SIZES[:5]]
    return sorted(found)
