"""How many experiments of a batch may run at once, and what the batch costs in time and VM-hours.

A Google Cloud project cannot run every experiment of a study at once: a new project commonly has
24 vCPUs of regional CPU quota, three ``n2-highcpu-8`` VMs. Asking the group for more VMs than the
quota allows does not fail the request: the group keeps retrying the creations that are over quota
(listErrors shows ``QUOTA_EXCEEDED``), and those experiments would time out. So a batch runs at most
``parallelism`` VMs; the rest wait, ``queued``, and start as others end.

The parallelism comes from what Compute Engine says (``regions.get`` quotas less their usage,
``machineTypes.get`` for the template's vCPUs), or from the batch's ``max_parallel`` if lower. Which
quotas a VM counts against:

- vCPUs: its machine family's own quota where the region has one (``N2_CPUS`` for ``n2-*``),
  otherwise ``CPUS`` (N1, E2 and shared-core types);
- a spot VM counts against ``PREEMPTIBLE_CPUS`` instead, where the project has that quota (a limit
  of 0 means it has none, and spot VMs use the regular CPU quota);
- ``INSTANCES``, one per VM; ``IN_USE_ADDRESSES``, one per VM whose template gives it an external IP.

Pure functions: the Compute calls that feed them are in ``compute.py``.
"""

from __future__ import annotations

import heapq
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Quota:
    """One regional quota, as ``regions.get`` returns it."""

    metric: str
    limit: float
    usage: float = 0.0

    @property
    def free(self) -> float:
        return max(0.0, self.limit - self.usage)


@dataclass(frozen=True)
class VmShape:
    """What one VM of the instance template asks of the region's quotas."""

    machine_type: str
    vcpus: int
    spot: bool = False
    external_ip: bool = False


@dataclass(frozen=True)
class Limit:
    """How many more VMs one quota allows."""

    metric: str
    free: float
    per_vm: float
    vms: int


@dataclass(frozen=True)
class Parallelism:
    """How many experiments of a batch run at once, and why."""

    value: int
    reason: str
    asked: int | None = None
    limits: tuple[Limit, ...] = ()


def family(machine_type: str) -> str:
    """The machine family of a machine type: ``n2`` for ``n2-highcpu-8``, ``e2`` for ``e2-medium``."""
    return machine_type.split("-", 1)[0].lower()


def cpu_metric(shape: VmShape, quotas: Mapping[str, Quota]) -> str:
    """The quota a VM's vCPUs count against (see the module docstring)."""
    preemptible = quotas.get("PREEMPTIBLE_CPUS")
    if shape.spot and preemptible is not None and preemptible.limit > 0:
        return "PREEMPTIBLE_CPUS"
    own = f"{family(shape.machine_type).upper()}_CPUS"
    return own if own in quotas else "CPUS"


def limits(shape: VmShape, quotas: Mapping[str, Quota]) -> list[Limit]:
    """Each quota that bounds how many more VMs of this shape the region takes."""
    wanted: list[tuple[str, float]] = [(cpu_metric(shape, quotas), float(max(shape.vcpus, 1))), ("INSTANCES", 1.0)]
    if shape.external_ip:
        wanted.append(("IN_USE_ADDRESSES", 1.0))
    found = []
    for metric, per_vm in wanted:
        quota = quotas.get(metric)
        if quota is not None:
            found.append(Limit(metric, quota.free, per_vm, math.floor(quota.free / per_vm)))
    return found


def by_metric(quotas: Iterable[Quota]) -> dict[str, Quota]:
    return {q.metric: q for q in quotas}


def parallelism(
    experiments: int, shape: VmShape | None, quotas: Iterable[Quota] | None, asked: int | None = None
) -> Parallelism:
    """How many of ``experiments`` to run at once: the quota's room, or ``asked`` if lower; at least 1.

    Without a shape or quotas (they could not be read), only ``asked`` and the batch size bound it.
    At least one VM is always asked for, even with no room left: the group then reports the quota
    error, and the batch waits instead of failing.
    """
    found = limits(shape, by_metric(quotas)) if shape is not None and quotas is not None else []
    tightest = min(found, key=lambda lim: lim.vms, default=None)
    candidates: list[tuple[int, str]] = [(max(experiments, 1), f"the batch has {experiments} experiment(s)")]
    if asked is not None:
        candidates.append((asked, f"max_parallel {asked}"))
    if tightest is not None and shape is not None:
        per_vm = f"{tightest.per_vm:g} {'vCPUs' if tightest.metric.endswith('CPUS') else 'unit'} per VM"
        candidates.append(
            (max(tightest.vms, 1), f"quota {tightest.metric}: {tightest.free:g} free / {per_vm} ({shape.machine_type})")
        )
    value, reason = min(candidates, key=lambda c: c[0])
    return Parallelism(value=max(value, 1), reason=reason, asked=asked, limits=tuple(found))


@dataclass(frozen=True)
class Schedule:
    """What running a batch at a given parallelism takes, experiments started in queue order."""

    parallelism: int
    waves: int
    makespan_hours: float
    vm_hours: float


def schedule(hours: Sequence[float], parallel: int) -> Schedule:
    """The makespan of running experiments of these durations ``parallel`` at a time, in order.

    Each experiment starts as soon as a VM slot frees (that is what the queue does), so the
    makespan is the list-scheduling finish time, not ``waves * max(hours)``.
    """
    parallel = max(1, parallel)
    slots = [0.0] * min(parallel, max(len(hours), 1))
    heapq.heapify(slots)
    end = 0.0
    for h in hours:
        start = heapq.heappop(slots)
        finish = start + h
        end = max(end, finish)
        heapq.heappush(slots, finish)
    return Schedule(
        parallelism=parallel,
        waves=math.ceil(len(hours) / parallel) if hours else 0,
        makespan_hours=end,
        vm_hours=sum(hours),
    )


def simulations_at_full_speed(vcpus: int) -> int:
    """How many simulations (``--n-envs``) one VM of ``vcpus`` runs at full speed: one per vCPU.

    Each EnergyPlus simulation runs in a process of its own and keeps a vCPU busy; past the VM's
    vCPUs they share them and add nothing. Below that the gain per environment is well under one
    (measured 1.3x for two on two vCPUs: the environments step in lockstep and the learner is
    serial; ``make bench`` measures --n-envs 1, 2 and, with 4 cores, 4; docs/design.md, "Machine
    type and --n-envs"). A managed instance group makes every VM from its template, so the machine
    type is the batch's template's; this rule says which template an experiment wants.
    """
    return max(1, vcpus)


def crowded(shape: VmShape, n_envs: Sequence[int]) -> list[int]:
    """The indices of the experiments whose ``--n-envs`` is above what a VM of ``shape`` runs at full speed."""
    fit = simulations_at_full_speed(shape.vcpus)
    return [i for i, n in enumerate(n_envs) if n > fit]


_MACHINE_TYPE = re.compile(r"(?:^|/)machineTypes/([a-z0-9-]+)$|^([a-z0-9-]+)$")


def machine_type_name(url_or_name: str) -> str:
    """``n2-highcpu-8`` from a template's ``machineType`` (a name, or a URL ending in it)."""
    m = _MACHINE_TYPE.search(url_or_name.strip())
    if not m:
        raise ValueError(f"not a machine type: {url_or_name!r}")
    return m.group(1) or m.group(2)


def region_of(zone: str) -> str:
    """``europe-west1`` from ``europe-west1-b``."""
    return zone.rsplit("-", 1)[0]
