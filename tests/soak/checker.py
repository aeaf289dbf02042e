"""The invariant checker: on its own thread, every second, for the whole run, from the clouds' own state.

Each tick reads Compute, the state bucket, the alerts and the stand-in's markers (observe.py) and
holds every batch the workload submitted to these invariants (a violation is recorded once per thing
that broke it, with the faults active at that moment):

- ``max_parallel``: a batch never has more live VMs than its ``max_parallel``. A live VM is one
  Compute holds for the batch that is PROVISIONING, STAGING or RUNNING and whose group is not
  already deleting it (a VM whose deletion was asked and that is still stopping is not live).
- ``one_trainer``: never two trainer processes of one experiment alive at once (the per-boot
  markers; a stopped, hung process is alive).
- ``transitions``: every record's history is a legal path of the lifecycle (transitions.py).
- ``progress``: no experiment stays pending or starting longer than ``boot_bound``, nor running
  longer than ``silence_bound`` after its trainer's last heartbeat, counted from the end of the
  last fault that could hold it back; and a batch with queued experiments never sits with none
  live that long: so each experiment ends within its attempts' bounds.
- ``dispatched``: a VM that became ready (Compute's ``vm.ready`` event for a boot) while its
  experiment waited for a boot is claimed for that boot within ``dispatch_bound``, unless the boot
  ended first (the VM stopped or was recreated) or the experiment moved on (ended, re-queued).
- ``vm_lingers``: a VM of an ended (or re-queued) experiment is being deleted within ``linger_bound``.
- ``budget``: a batch's VM-hours (Compute's VM lifetimes, and for each live experiment what its
  estimate says it still needs) stay within ``max_vm_hours`` plus one experiment's estimate.
- ``outputs``: a succeeded experiment's outputs in the bucket match its manifest.
- ``mlflow_once``: never two MLflow runs of one experiment (checked every few seconds).
- ``one_alert``: never two batch-finished alerts for one batch.

The end of the run adds what only holds at the end (final.py).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from sinergym_cloud import names
from tests.soak import transitions
from tests.soak.ledger import BatchInfo, Ledger
from tests.soak.observe import Unreadable, View
from tests.soak.settings import Soak

log = logging.getLogger("soak")

ALIVE = ("PROVISIONING", "STAGING", "RUNNING")
INVARIANTS = ("max_parallel", "one_trainer", "transitions", "progress", "dispatched", "vm_lingers", "budget",
              "outputs", "mlflow_once", "one_alert")  # fmt: skip


def parse_time(text: str) -> float:
    return dt.datetime.fromisoformat(text).timestamp()


def live_vm(vm: dict[str, Any]) -> bool:
    return vm.get("status") in ALIVE and vm.get("action") != "DELETING"


@dataclass
class Observation:
    t: float
    instances: dict[str, dict[str, Any]]
    records: dict[tuple[str, int], dict[str, Any]]
    launches: dict[str, dict[str, Any]]
    finalized: dict[str, dict[str, Any]]
    markers: list[dict[str, Any]]
    alerts: list[dict[str, Any]]
    migs: dict[str, list[str]] = field(default_factory=dict)


class Checker:
    def __init__(self, soak: Soak, view: View, ledger: Ledger, every: float = 1.0) -> None:
        self.soak, self.view, self.ledger, self.every = soak, view, ledger, every
        self.checks: Counter[str] = Counter()
        self.ticks = 0
        self.unreadable = 0
        self.latest: Observation | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, name="checker", daemon=True)
        self.since: dict[tuple[str, int], tuple[tuple[Any, ...], float]] = {}
        self.stalled: dict[str, float] = {}
        self.lifetimes: dict[tuple[str, float], float] = {}  # (zone/name, created) -> last seen alive (wall)
        self.verified: set[tuple[str, int]] = set()
        self.mlflow_checked = 0.0
        self.replayed: dict[tuple[str, int], int] = {}
        self.readies: dict[str, tuple[float, str, tuple[str, int]]] = {}  # boot -> (seen, zone/name, experiment)
        self.events_seen = 0.0

    # ------------------------------------------------------------------- loop
    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(30)

    def run(self) -> None:
        while not self.stop.wait(self.every):
            try:
                self.tick()
            except Unreadable as exc:
                self.unreadable += 1
                log.debug("tick skipped: %s", exc)
            except Exception as exc:  # a checker that breaks must fail the run, not go quiet
                log.exception("checker tick failed")
                self.ledger.violation(f"checker:{type(exc).__name__}:{exc}", "checker", f"the checker failed: {exc!r}")

    def observe(self) -> Observation:
        state = self.view.compute_state()
        docs = self.view.state_documents()
        batches = {b.batch_id for b in self.ledger.known_batches()}
        records: dict[tuple[str, int], dict[str, Any]] = {}
        launches: dict[str, dict[str, Any]] = {}
        finalized: dict[str, dict[str, Any]] = {}
        for name, doc in docs.items():
            parts = name.split("/")  # batches/<id>/...
            if len(parts) < 3 or parts[1] not in batches:
                continue
            if parts[2] == "experiments" and len(parts) == 4:
                records[(parts[1], int(parts[3].removesuffix(".json")))] = doc
            elif parts[2] == "launch.json":
                launches[parts[1]] = doc
            elif parts[2] == "finalize.json":
                finalized[parts[1]] = doc
        return Observation(self.ledger.clock.now(), state["instances"], records, launches, finalized,
                           self.view.markers(), self.view.alerts(), state["migs"])  # fmt: skip

    def tick(self) -> None:
        obs = self.observe()
        self.latest = obs
        self.ticks += 1
        batches = self.ledger.known_batches()
        self._lifetimes(obs)
        for b in batches:
            self.max_parallel(obs, b)
            self.budget(obs, b)
            self.stalled_queue(obs, b)
        self.one_trainer(obs)
        self.dispatched(obs, batches)
        for key, rec in obs.records.items():
            self.transitions(key, rec)
            self.progress(obs, key, rec)
            self.lingers(obs, key, rec)
            self.outputs(key, rec)
        self.one_alert(obs, batches)
        if time.monotonic() - self.mlflow_checked > 10:
            self.mlflow_checked = time.monotonic()
            for b in batches:
                self.mlflow_once(obs, b, final=False)

    # ------------------------------------------------------------- invariants
    def _vms_of(self, obs: Observation, b: BatchInfo) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in obs.instances.items() if k.split("/", 1)[1].startswith(b.instance_prefix)}

    def max_parallel(self, obs: Observation, b: BatchInfo) -> None:
        if b.max_parallel is None:
            return
        self.checks["max_parallel"] += 1
        live = sorted(k for k, v in self._vms_of(obs, b).items() if live_vm(v))
        if len(live) > b.max_parallel:
            self.ledger.violation(
                f"max_parallel:{b.batch_id}:{','.join(live)}", "max_parallel",
                f"{len(live)} live VMs, max_parallel {b.max_parallel}: "
                + ", ".join(f"{k} {obs.instances[k]['status']}/{obs.instances[k]['action']}" for k in live),
                b.batch_id,
            )  # fmt: skip

    def one_trainer(self, obs: Observation) -> None:
        self.checks["one_trainer"] += 1
        alive: dict[tuple[str, int], list[str]] = defaultdict(list)
        for m in obs.markers:
            if m["alive"]:
                alive[(m["batch_id"], int(m["index"]))].append(f"{m['boot_id']} pid {m['pid']} in {m['zone']}")
        for (batch, index), boots in alive.items():
            if len(boots) > 1:
                self.ledger.violation(f"one_trainer:{batch}:{index}:{sorted(boots)}", "one_trainer",
                                      f"{len(boots)} trainers alive: {'; '.join(sorted(boots))}", batch, index)  # fmt: skip

    def transitions(self, key: tuple[str, int], rec: dict[str, Any]) -> None:
        size = len(rec.get("history") or [])
        if self.replayed.get(key) == size and not transitions.terminal(str(rec.get("state"))):
            return
        self.replayed[key] = size
        self.checks["transitions"] += 1
        why = transitions.replay(rec)
        if why:
            events = [h.get("event") for h in rec.get("history") or []]
            self.ledger.violation(f"transitions:{key}:{why}", "transitions", f"{why}; history {events}", *key)

    def progress(self, obs: Observation, key: tuple[str, int], rec: dict[str, Any]) -> None:
        signature = (rec.get("state"), rec.get("boot_id"), len(rec.get("history") or []), rec.get("zone"))
        known = self.since.get(key)
        if known is None or known[0] != signature:
            self.since[key] = (signature, obs.t)
            return
        state = str(rec.get("state"))
        if state not in transitions.LIVE:
            return
        self.checks["progress"] += 1
        since = max(known[1], self.ledger.blocking_end(obs.t, key))
        bound, sign = self.soak.boot_bound, "unchanged"
        if state == "running":
            bound, sign = self.soak.silence_bound, "without a heartbeat"
            if obs.t - since <= bound:
                return
            beat = self.view.heartbeat(key[0], str(rec.get("name")))
            since = max(since, self.ledger.clock.at(beat) if beat else since)
        if obs.t - since > bound:
            self.ledger.violation(
                f"progress:{key}:{known[1]}", "progress",
                f"{state} (boot {rec.get('boot_id')}) for {obs.t - known[1]:.0f}s, {obs.t - since:.0f}s {sign} "
                f"since anything held it back (bound {bound:.0f}s)",
                *key,
            )  # fmt: skip

    def dispatched(self, obs: Observation, batches: list[BatchInfo]) -> None:
        for event in self.view.events(self.events_seen):
            self.events_seen = max(self.events_seen, float(event["t"]))
            if event.get("kind") != "vm.ready" or event.get("boot_id") in self.readies:
                continue
            name = str(event.get("instance"))
            for b in batches:
                tail = name.removeprefix(b.instance_prefix)
                if tail != name and tail.isdigit():
                    zone = next((k.split("/", 1)[0] for k, v in obs.instances.items()
                                 if k.endswith(f"/{name}") and v.get("boot_id") == event["boot_id"]), "")  # fmt: skip
                    self.readies[str(event["boot_id"])] = (self.ledger.clock.at(float(event["t"])), f"{zone}/{name}",
                                                           (b.batch_id, int(tail)))  # fmt: skip
        for boot, (seen, vm_key, key) in list(self.readies.items()):
            rec = obs.records.get(key)
            vm = obs.instances.get(vm_key, {})
            claimed = rec is not None and any(
                h.get("event") == "dispatch" and boot in str(h.get("detail")) for h in rec.get("history") or []
            )
            gone = vm.get("boot_id") != boot or vm.get("status") != "RUNNING" or vm.get("action") == "DELETING"
            moved_on = rec is not None and str(rec.get("state")) not in ("pending", "starting", "running")
            if claimed or gone or moved_on:
                del self.readies[boot]
                continue
            self.checks["dispatched"] += 1
            since = max(seen, self.ledger.blocking_end(obs.t, key))
            if obs.t - since > self.soak.dispatch_bound:
                del self.readies[boot]
                self.ledger.violation(
                    f"dispatched:{boot}", "dispatched",
                    f"{vm_key} ready (boot {boot}) {obs.t - seen:.0f}s ago and not claimed: the experiment is "
                    f"{rec.get('state') if rec else 'unknown'} on boot {rec.get('boot_id') if rec else None} "
                    f"(bound {self.soak.dispatch_bound:.0f}s)",
                    *key,
                )  # fmt: skip

    def stalled_queue(self, obs: Observation, b: BatchInfo) -> None:
        launch = obs.launches.get(b.batch_id)
        states = [str(r.get("state")) for (bid, _), r in obs.records.items() if bid == b.batch_id]
        waiting = states.count("queued")
        live = sum(1 for s in states if s in transitions.LIVE)
        if launch is None or launch.get("status") != "launched" or not waiting or live:
            self.stalled.pop(b.batch_id, None)
            return
        self.checks["progress"] += 1
        since = self.stalled.setdefault(b.batch_id, obs.t)
        held = max(since, self.ledger.blocking_end(obs.t, (b.batch_id, -1)))
        if obs.t - held > self.soak.step_bound:
            self.ledger.violation(f"progress:queue:{b.batch_id}:{since}", "progress",
                                  f"{waiting} queued and none live for {obs.t - since:.0f}s", b.batch_id)  # fmt: skip

    def lingers(self, obs: Observation, key: tuple[str, int], rec: dict[str, Any]) -> None:
        state = str(rec.get("state"))
        if state == "queued":
            requeued = [h["at"] for h in rec.get("history") or [] if h.get("event") == "requeued"]
            if not requeued:
                return
            ended = requeued[-1]
        elif transitions.terminal(state):
            ended = float(rec.get("finished_at") or 0)
        else:
            return
        self.checks["vm_lingers"] += 1
        wall = time.time()
        for name, vm in obs.instances.items():
            if name.split("/", 1)[1] != rec.get("instance") or not live_vm(vm):
                continue
            if ended and wall - ended > self.soak.linger_bound:
                self.ledger.violation(
                    f"vm_lingers:{key}:{name}:{vm.get('created')}", "vm_lingers",
                    f"{name} is {vm['status']} ({vm['action']}) {wall - ended:.0f}s after its experiment became "
                    f"{state} (bound {self.soak.linger_bound:.0f}s)",
                    *key,
                )  # fmt: skip

    def _lifetimes(self, obs: Observation) -> None:
        wall = time.time()
        for name, vm in obs.instances.items():
            if vm.get("status") != "TERMINATED" and vm.get("created"):
                self.lifetimes[(name, parse_time(vm["created"]))] = wall

    def vm_hours(self, instance_prefix: str, exact: bool = False) -> float:
        """VM-hours of the VMs whose name starts with (or, ``exact``, is) the given name."""
        total = 0.0
        for (name, created), last in self.lifetimes.items():
            vm = name.split("/", 1)[1]
            if vm == instance_prefix or (not exact and vm.startswith(instance_prefix)):
                total += max(0.0, last - created) / 3600
        return total

    def budget(self, obs: Observation, b: BatchInfo) -> None:
        if b.max_vm_hours is None:
            return
        self.checks["budget"] += 1
        used = self.vm_hours(b.instance_prefix)
        ahead = 0.0
        for (bid, _), rec in obs.records.items():
            if bid == b.batch_id and rec.get("state") in transitions.LIVE:
                ahead += max(0.0, b.estimate - self.vm_hours(str(rec.get("instance")), exact=True))
        if used + ahead > b.max_vm_hours + b.estimate + 1e-9:
            self.ledger.violation(
                f"budget:{b.batch_id}", "budget",
                f"{used:.4f} VM-hours used and {ahead:.4f} expected of the live ones pass max_vm_hours "
                f"{b.max_vm_hours:.4f} plus one estimate ({b.estimate:.4f})",
                b.batch_id,
            )  # fmt: skip

    def outputs(self, key: tuple[str, int], rec: dict[str, Any]) -> None:
        if rec.get("state") != "succeeded" or key in self.verified:
            return
        self.checks["outputs"] += 1
        problems = self.view.output_problems(key[0], str(rec["name"]))  # Unreadable: next tick again
        self.verified.add(key)
        if problems:
            self.ledger.violation(f"outputs:{key}", "outputs", "; ".join(problems[:3]), *key)

    def mlflow_once(self, obs: Observation, b: BatchInfo, final: bool) -> dict[int, list[dict[str, str]]]:
        launch = obs.launches.get(b.batch_id)
        if launch is None:
            return {}
        self.checks["mlflow_once"] += 1
        try:
            runs = self.view.mlflow_runs(str(launch.get("mlflow_experiment")), b.batch_id)
        except Unreadable:
            if final:
                raise
            return {}
        by_index: dict[int, list[dict[str, str]]] = defaultdict(list)
        for run in runs:
            if "experiment_index" in run:
                by_index[int(run["experiment_index"])].append(run)
        for index, found in by_index.items():
            if len(found) > 1:
                ids = sorted(r["run_id"] for r in found)
                self.ledger.violation(f"mlflow_once:{b.batch_id}:{index}:{ids}", "mlflow_once",
                                      f"{len(found)} MLflow runs: {', '.join(ids)}", b.batch_id, index)  # fmt: skip
        return by_index

    def one_alert(self, obs: Observation, batches: list[BatchInfo]) -> None:
        self.checks["one_alert"] += 1
        for b in batches:
            found = finished_alerts(obs.alerts, b.batch_id)
            if len(found) > 1:
                self.ledger.violation(f"one_alert:{b.batch_id}", "one_alert",
                                      f"{len(found)} batch-finished alerts", b.batch_id)  # fmt: skip


def finished_alerts(alerts: list[dict[str, Any]], batch_id: str) -> list[dict[str, Any]]:
    """The batch-finished incidents of one batch, as the Monitoring emulator delivered them."""
    return [
        a
        for a in alerts
        if a.get("metric", {}).get("type") == names.METRIC_BATCH_FINISHED
        and a.get("metric", {}).get("labels", {}).get("batch_id") == batch_id
    ]
