"""What one soak run is: its seed and length, the local cloud's short times, and the bounds the
checker holds the product to, all derived from a few numbers so that they stay consistent."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from localcloud.cloud import Options

REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO / "soak-results"
ZONES = ("europe-west1-b", "europe-west1-c")
ROUND_SIZE = 14  # experiments in a round of batches: what two cores keep running beside the control plane


@dataclass(frozen=True)
class Soak:
    seed: int
    minutes: float = 10.0
    experiments: int | None = None  # in all, in rounds of ROUND_SIZE (None: rounds until the time is up)
    max_parallel: int = 2  # the --max-parallel batch's (also the cancelled batch's and the sweep's)
    out: Path = DEFAULT_OUT
    faults: bool = True  # False: the same workload and checker, no nemesis
    # The local cloud: Compute Engine's times (gce profile) scaled down, Google's limits on.
    scale: float = 0.1
    heartbeat_seconds: float = 2.0
    heartbeat_timeout: float = 60.0  # a VM's trainer starts at the lowest priority on two busy cores
    boot_timeout: float = 45.0
    sweep_interval: float = 5.0
    zone_failover_seconds: float = 15.0
    quota_grace: float = 5.0
    max_failures: int = 2  # trainer deaths retried (the product's default is 0)
    max_preemptions: int = 3
    # The trainer's stand-in: episodes of a few seconds each.
    episodes: int = 4
    episode_seconds: float = 2.5
    # Test-only: more environment for the function processes (a deliberately broken build).
    function_env: dict[str, str] = field(default_factory=dict)
    stop_on_violation: bool = False  # end the run at the first violation (a test of the checker)

    def least(self) -> dict[str, int]:
        """The fewest experiments each kind of batch of a round has: one; two for a budget (so that it
        can be reached) and a cancel (so that one may be cut); a queue for the --max-parallel batch
        and the sweep (max_parallel and one more)."""
        queue = self.max_parallel + 1
        return {"plain": 1, "waited": 1, "parallel": queue, "budget": 2, "sweep": queue, "zones": 1, "cancel": 2}

    @property
    def min_round(self) -> int:
        return sum(self.least().values())

    def round_sizes(self) -> list[int]:
        """How many experiments each round of batches has: ROUND_SIZE each (at least ``min_round``),
        the last one what is left. Without a number of experiments, as many rounds as could start in
        the time (a round takes at least 20 s)."""
        full, least = max(ROUND_SIZE, self.min_round), self.min_round
        if self.experiments is None:
            return [full] * (int(self.rounds_until // 20) + 1)
        left, sizes = self.experiments, []
        while left > 0:
            size = min(full, left)
            if left - size < least:
                size = left if left <= full + least // 2 else left - least
            sizes.append(max(least, size))
            left -= size
        return sizes

    @property
    def duration(self) -> float:
        """Seconds from the first batch's launch to the end of the workload (the drain comes after)."""
        return self.minutes * 60.0

    @property
    def inject_from(self) -> float:
        return min(10.0, self.duration / 10)

    @property
    def inject_until(self) -> float:
        """The nemesis stops here, leaving the last batches time to end without new faults."""
        return max(self.inject_from + 10.0, self.duration - 30.0)

    @property
    def rounds_until(self) -> float:
        """No new round of batches starts after this."""
        return max(0.0, self.duration - 60.0)

    @property
    def work_seconds(self) -> float:
        """How long one boot of the stand-in takes, its start-up and uploads included, on a loaded machine."""
        return self.episodes * self.episode_seconds + 25.0

    @property
    def boot_bound(self) -> float:
        """How long an experiment may stay pending or starting once nothing holds it back: its VM is
        ready and dispatched, or the sweeper gives the boot up after boot_timeout and retries it (a
        sweep every sweep_interval); plus a margin for two loaded cores (the functions' retries,
        Pub/Sub's backoff)."""
        return self.boot_timeout + 2 * self.sweep_interval + 60.0

    @property
    def silence_bound(self) -> float:
        """How long an experiment may stay running after its trainer's last heartbeat: the sweeper
        retries a trainer silent for heartbeat_timeout, at its next sweep; plus the same margin.
        (A trainer that beats is training: how long is its own business, max_runtime_hours.)"""
        return self.heartbeat_timeout + 2 * self.sweep_interval + 60.0

    @property
    def step_bound(self) -> float:
        """The longest an experiment may stay in one live state without a sign of life."""
        return max(self.boot_bound, self.silence_bound)

    @property
    def drain_bound(self) -> float:
        """How long the last batches get to end after the workload's time is up."""
        attempts = self.max_failures + self.max_preemptions + 1
        return min(900.0, attempts * self.step_bound)

    @property
    def dispatch_bound(self) -> float:
        """How long a ready VM may wait to be claimed: dispatch's deliveries retried with Pub/Sub's
        backoff (the gce profile's 10-600 s, scaled) and its own SSH retries, on two loaded cores."""
        return 90.0

    @property
    def linger_bound(self) -> float:
        """How long a VM may outlive its experiment's end before its deletion is asked: the ending's
        follow-up asks at once; a redelivery or a sweep within seconds; Compute's rate limits retried."""
        return 45.0 + 2 * self.sweep_interval

    def cloud_options(self) -> Options:
        return Options(
            port_base=0,
            sweep_interval=self.sweep_interval,
            heartbeat_seconds=self.heartbeat_seconds,
            heartbeat_timeout=self.heartbeat_timeout,
            boot_timeout=self.boot_timeout,
            profile="gce",
            scale=self.scale,
            limits="google",
            function_env=dict(self.function_env),
        )

    def objective(self, batch_ids: dict[str, list[float]]) -> str:
        """BENCH_OBJECTIVE: every experiment runs ``episodes`` episodes; a sweep's trials as scripted."""
        script: dict[str, list[float]] = {"*": [1.0] * self.episodes}
        script.update(batch_ids)
        return json.dumps(script)

    def vm_environment(self, markers: Path, objective: str) -> dict[str, str]:
        """What the local cloud's processes see (the VMs and the functions): the stand-in, its script,
        the control plane's budgets and times."""
        return {
            "SINERGYM_TRAINER_MODULE": "bench.workload",
            "BENCH_LIKE_TRAINER": "1",
            "BENCH_MARKERS": str(markers),
            "BENCH_OBJECTIVE": objective,
            "BENCH_EPISODE_SECONDS": str(self.episode_seconds),
            "SINERGYM_MAX_FAILURES": str(self.max_failures),
            "SINERGYM_MAX_PREEMPTIONS": str(self.max_preemptions),
            "SINERGYM_ZONE_FAILOVER_SECONDS": str(self.zone_failover_seconds),
            "SINERGYM_QUOTA_GRACE": str(self.quota_grace),
        }
