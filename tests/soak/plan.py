"""The faults of a soak, drawn from its seed alone: kinds, moments, windows and parameters.

A fault is planned against the workload's clock (seconds after the first batch was launched), never
the wall clock, so a replay of the same seed injects the same faults at the same points of the
workload. Each fault also carries a sub-seed of its own, from which the nemesis picks its target
when it fires (among the candidates of that moment, in a fixed order), so one fault's choice never
shifts another's. Pure: ``plan`` only computes (tests/test_soak.py checks it without a cloud).
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import asdict, dataclass, field
from typing import Any

from tests.soak.settings import ZONES, Soak

# Every kind the nemesis injects. VM faults target a live experiment's VM; the others hit a service.
KINDS = (
    "vm_killed",  # the VM's whole process tree killed: the machine died, Compute still says RUNNING
    "vm_preempted",  # a spot preemption with its notice (SIGTERM to the guest, the grace period)
    "vm_preempted_no_notice",  # a preemption whose notice never reached the guest
    "vm_never_boots",  # its VM's startup never finishes (fail_boot) while the window lasts
    "guest_hang",  # every process of the VM stopped (SIGSTOP): heartbeats stop, SSH hangs
    "zone_stockout",  # ZONE_RESOURCE_POOL_EXHAUSTED in one zone, then the stock comes back
    "quota_lowered",  # the region's INSTANCES quota lowered below what runs, then raised
    "compute_errors",  # the next calls of a Compute method answer 5xx
    "compute_rate_limit",  # Compute's per-minute rate quotas lowered: 403 rateLimitExceeded
    "gcs_errors",  # Cloud Storage answers a burst of 503, 429 or 500
    "pubsub_duplicate",  # the next messages of a subscription pushed twice at once
    "pubsub_delay",  # the next messages of a subscription held seconds before their push
    "pubsub_reorder",  # the next messages of a subscription pushed last first
    "function_killed",  # a function's worker processes killed in the middle of a handler
    "emulator_restarted",  # a service of the local cloud stopped and started again
    "publisher_killed",  # the publisher's own process killed during --wait
)
VM_KINDS = frozenset({"vm_killed", "vm_preempted", "vm_preempted_no_notice", "vm_never_boots", "guest_hang"})
FUNCTIONS = ("dispatch", "cleanup", "launch")
SUBSCRIPTIONS = ("dispatch-push", "cleanup-push", "launch-push", "sweeper-push")
# Services whose restart the product must ride out: their state outlives them (fake-gcs-server's
# files, MLflow's SQLite) or they hold none (the front). The Pub/Sub and Compute emulators keep
# their state in memory: restarting them would lose what Google's services never lose.
RESTARTABLE = ("gcs", "gcs-front", "mlflow")
COMPUTE_METHODS = (
    "instanceGroupManagers.createInstances",
    "instanceGroupManagers.deleteInstances",
    "instanceGroupManagers.recreateInstances",
    "instanceGroupManagers.listManagedInstances",
    "instances.get",
    "instances.getGuestAttributes",
    "instanceGroupManagers.delete",
)
STORM = 3  # faults started together at least once per plan (several things go wrong at once)


@dataclass(frozen=True)
class Fault:
    number: int
    kind: str
    at: float  # seconds after the first batch was launched
    window: float  # seconds its effect lasts (or the product is given to notice a one-shot fault)
    seed: int  # the nemesis picks the fault's target with random.Random(seed)
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def end(self) -> float:
        return self.at + self.window

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def count(soak: Soak) -> int:
    """How many faults a run of ``soak.minutes`` gets: about four and a half a minute of injection."""
    minutes = (soak.inject_until - soak.inject_from) / 60
    return max(4, round(minutes * 4.5))


def _params(kind: str, rng: random.Random, soak: Soak) -> tuple[float, dict[str, Any]]:
    """(window, parameters) of one fault of ``kind``."""
    silent = soak.heartbeat_timeout + 2 * soak.sweep_interval + 10
    # VM faults strike at a point of a trainer's life (seconds since it started): its start-up, its
    # first episodes before and after its first checkpoint, not only wherever wall time falls.
    age = round(rng.uniform(0, 3 * soak.episode_seconds), 1)
    if kind in ("vm_killed", "guest_hang"):
        return silent, {"trainer_age": age}
    if kind in ("vm_preempted", "vm_preempted_no_notice"):
        return 15.0, {"trainer_age": age}
    if kind == "vm_never_boots":
        return soak.boot_timeout * 0.75, {}  # lifted before the sweeper's retry boots it again
    if kind == "zone_stockout":
        return round(rng.uniform(15, 35), 1), {"zone": rng.choice([ZONES[0], ZONES[0], ZONES[1]])}
    if kind == "quota_lowered":
        return round(rng.uniform(20, 40), 1), {"below_live": rng.choice([1, 2])}
    if kind == "compute_errors":
        method = rng.choice(COMPUTE_METHODS)
        return 10.0, {"method": method, "code": rng.choice([500, 503]), "times": rng.randint(2, 6)}
    if kind == "compute_rate_limit":
        per_minute = rng.choice([20, 30, 45])
        return round(rng.uniform(20, 40), 1), {"per_minute": per_minute}
    if kind == "gcs_errors":
        return 5.0, {"status": rng.choice([503, 503, 429, 500]), "count": rng.randint(5, 30)}
    if kind in ("pubsub_duplicate", "pubsub_delay", "pubsub_reorder"):
        params: dict[str, Any] = {"subscription": rng.choice(SUBSCRIPTIONS), "count": rng.randint(2, 5)}
        if kind == "pubsub_delay":
            params["seconds"] = round(rng.uniform(2, 8), 1)
        if kind == "pubsub_reorder":
            params["seconds"] = 6.0
        return 20.0, params
    if kind == "function_killed":
        return 10.0, {"function": rng.choice(FUNCTIONS)}
    if kind == "emulator_restarted":
        return 10.0, {"service": rng.choice(RESTARTABLE)}
    if kind == "publisher_killed":
        return 5.0, {}
    raise ValueError(f"unknown fault kind {kind!r}")


def plan(soak: Soak) -> list[Fault]:
    """The run's faults, in the order they fire. Every kind at least once when there are as many
    faults as kinds, the rest drawn at random; their moments spread over the injection period, and
    once STORM of them started within three seconds of each other."""
    if not soak.faults:
        return []
    rng = random.Random(soak.seed)
    n = count(soak)
    kinds = list(KINDS)
    rng.shuffle(kinds)
    chosen = kinds[:n] + [rng.choice(KINDS) for _ in range(n - len(kinds))]
    start, end = soak.inject_from, soak.inject_until
    moments = sorted(round(rng.uniform(start, end), 1) for _ in range(n))
    if n >= STORM:  # a storm: STORM faults at nearly the same moment, somewhere in the period
        first = rng.randrange(0, n - STORM + 1)
        base = moments[first]
        for k in range(STORM):
            moments[first + k] = round(base + k * rng.uniform(0.2, 1.0), 1)
        moments.sort()
    faults = []
    for number, (kind, at) in enumerate(zip(chosen, moments, strict=True), 1):
        window, params = _params(kind, rng, soak)
        faults.append(Fault(number, kind, at, window, rng.randrange(2**31), params))
    return faults


def digest(faults: list[Fault]) -> str:
    """A short fingerprint of a plan: two runs with the same one injected the same faults."""
    text = json.dumps([f.as_json() for f in faults], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def most_overlapping(windows: list[tuple[float, float]]) -> int:
    """The largest number of windows (start, end) that hold at one moment."""
    edges = sorted([(s, 1) for s, _ in windows] + [(e, -1) for _, e in windows], key=lambda x: (x[0], x[1]))
    best = now = 0
    for _, step in edges:
        now += step
        best = max(best, now)
    return best
