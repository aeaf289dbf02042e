"""What the soak's parts share while it runs: its clock, the batches the workload submitted, the faults
the nemesis injected, and the violations the checker found. Every line about a fault or a violation
is printed with the run's seed and its time on the workload's clock."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sinergym_cloud import names


class Clock:
    """Seconds since the first batch was launched (before it: since the run began, negative)."""

    def __init__(self) -> None:
        self.origin = time.time()
        self.started = False

    def start(self) -> None:
        if not self.started:
            self.origin, self.started = time.time(), True

    def now(self) -> float:
        return time.time() - self.origin

    def at(self, wall: float) -> float:
        return wall - self.origin


@dataclass
class BatchInfo:
    """A batch the workload submitted, and what the checker holds it to."""

    batch_id: str
    kind: str
    round: int
    experiments: int
    max_parallel: int | None = None
    max_vm_hours: float | None = None
    estimate: float = 0.0  # one experiment's VM-hour estimate (budget.estimate_vm_hours)
    group: str = "sinergym-group"
    submitted_at: float | None = None  # on the soak's clock; None until the publisher accepted it
    cancelled_at: float | None = None
    submit_attempts: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def instance_prefix(self) -> str:
        """Every VM of the batch is named so, in whichever zone's group (names.instance_name)."""
        return names.mig_name(self.group, self.batch_id) + "-"


@dataclass
class Injected:
    """A fault as the nemesis injected it."""

    number: int
    kind: str
    at: float
    end: float
    target: str = ""  # "batch/index instance", a function, a service...
    detail: str = ""
    experiment: tuple[str, int] | None = None  # the experiment a VM fault hit

    @property
    def label(self) -> str:
        return f"#{self.number} {self.kind}"


@dataclass
class Violation:
    t: float
    invariant: str
    detail: str
    faults: list[str]
    batch: str = ""
    index: int | None = None


class Ledger:
    def __init__(self, seed: int, log_dir: Path, clock: Clock) -> None:
        self.seed = seed
        self.clock = clock
        self.lock = threading.Lock()
        self.batches: dict[str, BatchInfo] = {}
        self.injected: list[Injected] = []
        self.skipped: list[dict[str, Any]] = []
        self.violations: list[Violation] = []
        self.seen: set[str] = set()
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_file = log_dir / "soak.jsonl"
        self.first_violation = threading.Event()

    def say(self, text: str) -> None:
        print(f"seed={self.seed} t={self.clock.now():+.1f}s {text}", flush=True)

    def _log(self, kind: str, body: dict[str, Any]) -> None:
        with self.lock, self.log_file.open("a") as f:
            f.write(json.dumps({"record": kind, "seed": self.seed, "t": round(self.clock.now(), 2), **body}) + "\n")

    # batches
    def add_batch(self, info: BatchInfo) -> None:
        with self.lock:
            self.batches[info.batch_id] = info

    def known_batches(self) -> list[BatchInfo]:
        with self.lock:
            return [b for b in self.batches.values() if b.submitted_at is not None]

    # faults
    def injected_fault(self, fault: Injected) -> None:
        with self.lock:
            self.injected.append(fault)
        self.say(f"FAULT {fault.label} target={fault.target or '-'} window={fault.end - fault.at:.0f}s {fault.detail}")
        self._log("fault", asdict(fault))

    def skipped_fault(self, number: int, kind: str, why: str) -> None:
        with self.lock:
            self.skipped.append({"number": number, "kind": kind, "why": why})
        self.say(f"FAULT #{number} {kind} not injected: {why}")
        self._log("skipped", {"number": number, "fault": kind, "why": why})

    def active(self, t: float) -> list[str]:
        with self.lock:
            return [f.label for f in self.injected if f.at <= t <= f.end]

    def blocking_end(self, t: float, experiment: tuple[str, int]) -> float:
        """When the last fault that could hold ``experiment`` back (anything but a VM fault of another
        experiment) ended, among those begun by ``t``; -inf if none."""
        ends = [f.end for f in self.faults_until(t) if f.experiment is None or f.experiment == experiment]
        return max(ends, default=float("-inf"))

    def faults_until(self, t: float) -> list[Injected]:
        with self.lock:
            return [f for f in self.injected if f.at <= t]

    # violations
    def violation(self, key: str, invariant: str, detail: str, batch: str = "", index: int | None = None) -> None:
        """Record a violation once per ``key`` (an invariant broken by the same thing is one finding)."""
        t = self.clock.now()
        with self.lock:
            if key in self.seen:
                return
            self.seen.add(key)
        context = self.active(t)
        with self.lock:  # and the faults that hit this experiment, whenever they did
            context += [f"{f.label} on it at {f.at:.0f}s" for f in self.injected
                        if f.experiment == (batch, index) and f.label not in context]  # fmt: skip
        found = Violation(round(t, 1), invariant, detail, context, batch, index)
        with self.lock:
            self.violations.append(found)
        where = f" {batch}/{index}" if batch and index is not None else (f" {batch}" if batch else "")
        self.say(f"VIOLATION {invariant}{where}: {detail} [faults: {', '.join(found.faults) or 'none'}]")
        self._log("violation", asdict(found))
        self.first_violation.set()
