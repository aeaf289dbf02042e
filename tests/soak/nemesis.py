"""The nemesis: injects the planned faults (plan.py) at their moments, each on its own thread, so that
several are under way at once; a fault with a window (a stockout, a lowered quota) is undone when its
window ends.

Every fault goes through a control the local cloud has for it, never through the product: the
Compute emulator's (``/_emulator/config``, ``/_emulator/faults``, preemption), Cloud Storage's front
(``/_front/faults``), the push delivery's faults file, the limits file, the services' and VMs'
processes (signals), ``LocalCloud.restart``, and the workload's own ``--wait`` publisher. A fault
that needs a target (a VM, a busy function) picks it with its own seeded generator among the
candidates of that moment, sorted, waiting a little for one if there is none yet.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import requests

from localcloud import limits, procs
from localcloud.cloud import LocalCloud
from localcloud.delivery import FAULTS_FILE
from tests.soak.checker import Checker
from tests.soak.ledger import Injected, Ledger
from tests.soak.observe import Unreadable, View
from tests.soak.plan import VM_KINDS, Fault
from tests.soak.settings import Soak
from tests.soak.workload import Workload

TARGET_WAIT = 30.0  # seconds a fault waits for a target before it is given up


class NoTarget(Exception):
    """Nothing to inject this fault into (no VM running, no publisher waiting)."""


class Nemesis:
    def __init__(
        self, soak: Soak, cloud: LocalCloud, env: dict[str, str], ledger: Ledger, view: View, checker: Checker,
        workload: Workload, faults: list[Fault],
    ) -> None:  # fmt: skip
        self.soak, self.cloud, self.env, self.ledger = soak, cloud, env, ledger
        self.view, self.checker, self.workload, self.faults = view, checker, workload, faults
        self.compute = env["SINERGYM_COMPUTE_ENDPOINT"]
        self.project = env["GOOGLE_CLOUD_PROJECT"]
        self.lock = threading.Lock()
        self.stockouts: dict[int, str] = {}
        self.quotas: dict[int, int] = {}
        self.rates: dict[int, int] = {}
        self.never_boot: dict[int, str] = {}
        self.rules: dict[int, dict[str, Any]] = {}
        self.hit: dict[str, float] = {}  # VM -> when the last fault on it ends (another would be no news)
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.thread = threading.Thread(target=self.run, name="nemesis", daemon=True)

    # ------------------------------------------------------------------ driving
    def start(self) -> None:
        self.thread.start()

    def run(self) -> None:
        for fault in self.faults:
            while not self.stop.is_set() and self.ledger.clock.now() < fault.at:
                self.stop.wait(min(0.5, max(0.01, fault.at - self.ledger.clock.now())))
            if self.stop.is_set():
                return
            thread = threading.Thread(target=self.fire, args=(fault,), name=f"fault-{fault.number}", daemon=True)
            thread.start()
            self.threads.append(thread)

    def close(self) -> None:
        """Stop firing; wait for the faults under way to end their windows (and undo what they changed)."""
        self.stop.set()
        self.thread.join(10)
        for thread in self.threads:
            thread.join(120)

    def fire(self, fault: Fault) -> None:
        rng = random.Random(fault.seed)
        inject: Callable[[Fault, random.Random], Injected] = getattr(self, fault.kind)
        try:
            inject(fault, rng)
        except NoTarget as exc:
            self.ledger.skipped_fault(fault.number, fault.kind, str(exc))
        except Exception as exc:
            self.ledger.skipped_fault(fault.number, fault.kind, f"{type(exc).__name__}: {exc}")

    def record(self, fault: Fault, target: str = "", detail: str = "", experiment: tuple[str, int] | None = None,
               window: float | None = None) -> Injected:  # fmt: skip
        at = self.ledger.clock.now()
        if fault.kind in VM_KINDS and target:
            with self.lock:
                self.hit[target] = at + (window or fault.window)
        found = Injected(fault.number, fault.kind, round(at, 2), round(at + (window or fault.window), 2), target,
                         detail, experiment)  # fmt: skip
        self.ledger.injected_fault(found)
        return found

    def hold(self, fault: Fault) -> None:
        """Wait out a fault's window (also while the nemesis stops: what it changed must be undone)."""
        time.sleep(fault.window)

    # -------------------------------------------------------------- targets
    def _experiment_of(self, key: str) -> tuple[str, int] | None:
        name = key.split("/", 1)[1]
        for b in self.ledger.known_batches():
            tail = name.removeprefix(b.instance_prefix)
            if tail != name and tail.isdigit():
                return b.batch_id, int(tail)
        return None

    def _pick(self, rng: random.Random, find: Callable[[], list[Any]], what: str) -> Any:
        deadline = time.monotonic() + TARGET_WAIT
        while True:
            try:
                found = find()
            except Unreadable:
                found = []
            if found:
                return rng.choice(sorted(found))
            if time.monotonic() > deadline or self.stop.is_set():
                raise NoTarget(f"no {what} within {TARGET_WAIT:.0f}s")
            time.sleep(1.0)

    def running_vms(self, need_trainer: bool = False, younger: float | None = None) -> list[tuple[str, int, float]]:
        """(zone/name, init pid, when its trainer started or 0) of the soak's RUNNING VMs; with
        ``need_trainer`` only those whose trainer runs, with ``younger`` only those whose trainer
        started less than that many seconds ago."""
        state = self.view.compute_state()["instances"]
        training = {(m["zone"], m["instance"]): float(m["at"]) for m in self.view.markers() if m["alive"]}
        out = []
        now = time.time()
        for key, vm in state.items():
            zone, name = key.split("/", 1)
            if vm["status"] != "RUNNING" or vm.get("action") == "DELETING" or not vm.get("pid"):
                continue
            started = training.get((zone, name), 0.0)
            if self._experiment_of(key) is None or ((need_trainer or younger is not None) and not started):
                continue
            if younger is not None and now - started > younger:
                continue
            if self.hit.get(key, float("-inf")) > self.ledger.clock.now():
                continue  # a fault on it is still under way
            out.append((key, int(vm["pid"]), started))
        return out

    def _at_age(self, fault: Fault, rng: random.Random, what: str) -> tuple[str, int, str]:
        """A VM whose trainer is younger than the fault's ``trainer_age``, once it is that old (any
        running VM if none comes): (zone/name, init pid, at what point of its trainer's life)."""
        age = float(fault.params.get("trainer_age", 0.0))
        try:
            key, pid, started = self._pick(rng, lambda: self.running_vms(younger=age), f"{what} younger than {age:g}s")
        except NoTarget:
            key, pid, started = self._pick(rng, self.running_vms, what)
        if started:
            time.sleep(max(0.0, started + age - time.time()))
            return key, pid, f"its trainer {time.time() - started:.1f}s old"
        return key, pid, "no trainer yet"

    # --------------------------------------------------------------- VM faults
    def vm_killed(self, fault: Fault, rng: random.Random) -> None:
        key, pid, when = self._at_age(fault, rng, "running VM")
        procs.kill_tree(pid, grace=0.0, sig=signal.SIGKILL)
        self.record(fault, key, f"killed its processes (init pid {pid}; {when})", self._experiment_of(key))

    def _preempt(self, fault: Fault, rng: random.Random, notice: bool) -> None:
        key, _, when = self._at_age(fault, rng, "running VM")
        zone, name = key.split("/", 1)
        url = f"{self.compute}/_emulator/projects/{self.project}/zones/{zone}/instances/{name}/preempt"
        answer = requests.post(url, params={"notice": str(notice).lower()}, json={}, timeout=30)
        if answer.status_code != 200:
            raise NoTarget(f"{key} could not be preempted: {answer.text[:200]}")
        how = "with the spot notice" if notice else "without notice"
        self.record(fault, key, f"{how} ({when})", self._experiment_of(key))

    def vm_preempted(self, fault: Fault, rng: random.Random) -> None:
        self._preempt(fault, rng, notice=True)

    def vm_preempted_no_notice(self, fault: Fault, rng: random.Random) -> None:
        self._preempt(fault, rng, notice=False)

    def guest_hang(self, fault: Fault, rng: random.Random) -> None:
        key, pid, when = self._at_age(fault, rng, "VM with a trainer")
        stopped = [pid, *procs.descendants(pid)]
        for p in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGSTOP)
        self.record(fault, key, f"stopped its {len(stopped)} processes ({when})", self._experiment_of(key))

    def vm_never_boots(self, fault: Fault, rng: random.Random) -> None:
        def booting() -> list[str]:
            obs = self.checker.latest
            state = self.view.compute_state()["instances"]
            if obs is None:
                return []
            up = {k.split("/", 1)[1] for k, v in state.items() if v["status"] == "RUNNING"}
            # A VM being created; else one that will be when its experiment leaves the queue.
            for wanted in ("pending", "queued"):
                found = [str(r["instance"]) for r in obs.records.values()
                         if r.get("state") == wanted and not r.get("boot_id") and r.get("instance") not in up]  # fmt: skip
                if found:
                    return found
            return []

        instance = self._pick(rng, booting, "VM being created")
        window = fault.window
        with self.lock:
            self.never_boot[fault.number] = instance
            self._set_config({"fail_boot": self._fail_boot()})
        found = next(((b, i) for (b, i), r in (self.checker.latest.records.items() if self.checker.latest else [])
                      if r.get("instance") == instance), None)  # fmt: skip
        self.record(fault, instance, "its startup never finishes", found)
        time.sleep(window)
        with self.lock:
            self.never_boot.pop(fault.number, None)
            self._set_config({"fail_boot": self._fail_boot()})

    def _fail_boot(self) -> str | None:
        names = sorted(set(self.never_boot.values()))
        return "|".join(re.escape(n) for n in names) or None

    # ------------------------------------------------------------ Compute
    def _set_config(self, body: dict[str, Any]) -> None:
        requests.post(f"{self.compute}/_emulator/config", json=body, timeout=30).raise_for_status()

    def zone_stockout(self, fault: Fault, rng: random.Random) -> None:
        zone = str(fault.params["zone"])
        with self.lock:
            self.stockouts[fault.number] = zone
            self._set_config({"zone_exhausted": sorted(set(self.stockouts.values()))})
        self.record(fault, zone, "ZONE_RESOURCE_POOL_EXHAUSTED")
        self.hold(fault)
        with self.lock:
            self.stockouts.pop(fault.number, None)
            self._set_config({"zone_exhausted": sorted(set(self.stockouts.values())) or False})

    def quota_lowered(self, fault: Fault, rng: random.Random) -> None:
        state = self.view.compute_state()["instances"]
        live = sum(1 for v in state.values() if v["status"] != "TERMINATED")
        value = max(1, live - int(fault.params["below_live"]))
        with self.lock:
            self.quotas[fault.number] = value
            self._set_config({"quota_instances": min(self.quotas.values())})
        self.record(fault, f"INSTANCES {value}", f"{live} VMs held when it was lowered")
        self.hold(fault)
        with self.lock:
            self.quotas.pop(fault.number, None)
            self._set_config({"quota_instances": min(self.quotas.values(), default=200)})

    def compute_errors(self, fault: Fault, rng: random.Random) -> None:
        code = int(fault.params["code"])
        body = {"method": fault.params["method"], "code": code, "times": fault.params["times"],
                "reason": "backendError" if code == 503 else "internalError"}  # fmt: skip
        requests.post(f"{self.compute}/_emulator/faults", json=body, timeout=30).raise_for_status()
        self.record(fault, str(fault.params["method"]), f"next {fault.params['times']} calls answer {code}")

    def compute_rate_limit(self, fault: Fault, rng: random.Random) -> None:
        with self.lock:
            self.rates[fault.number] = int(fault.params["per_minute"])
            self._set_rates()
        self.record(fault, f"{fault.params['per_minute']} calls a minute per quota group")
        self.hold(fault)
        with self.lock:
            self.rates.pop(fault.number, None)
            self._set_rates()

    def _set_rates(self) -> None:
        if not self.rates:
            self.cloud.set_limits(limits.GOOGLE)
            return
        lowest = min(self.rates.values())
        groups = dict(limits.GOOGLE.compute_requests_per_minute or {})
        self.cloud.set_limits(limits.GOOGLE.with_(compute_requests_per_minute=dict.fromkeys(groups, lowest)))

    # --------------------------------------------------- Storage and Pub/Sub
    def gcs_errors(self, fault: Fault, rng: random.Random) -> None:
        body = {"status": fault.params["status"], "count": fault.params["count"]}
        requests.post(f"{self.env['STORAGE_EMULATOR_HOST']}/_front/faults", json=body, timeout=30).raise_for_status()
        self.record(fault, "Cloud Storage", f"next {body['count']} requests answer {body['status']}")

    def _write_rules(self) -> None:
        path = self.cloud.dir / FAULTS_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"rules": list(self.rules.values())}))
        tmp.replace(path)

    def _delivery(self, fault: Fault, kind: str) -> None:
        rule = {"id": str(fault.number), "kind": kind, **fault.params}
        with self.lock:
            self.rules[fault.number] = rule
            self._write_rules()
        extra = f", {fault.params['seconds']}s" if "seconds" in fault.params else ""
        self.record(fault, str(fault.params["subscription"]), f"next {fault.params['count']} messages{extra}")
        self.hold(fault)
        with self.lock:
            self.rules.pop(fault.number, None)
            self._write_rules()

    def pubsub_duplicate(self, fault: Fault, rng: random.Random) -> None:
        self._delivery(fault, "duplicate")

    def pubsub_delay(self, fault: Fault, rng: random.Random) -> None:
        self._delivery(fault, "delay")

    def pubsub_reorder(self, fault: Fault, rng: random.Random) -> None:
        self._delivery(fault, "reorder")

    # ------------------------------------------------------------ processes
    def function_killed(self, fault: Fault, rng: random.Random) -> None:
        """Kill a function's worker processes while it is most likely inside a handler: dispatch just
        after a VM became ready, cleanup just after a trainer ended, launch just after a batch was
        accepted. gunicorn starts new workers; Pub/Sub redelivers what they were handling."""
        function = str(fault.params["function"])
        record = procs.PidRecord.load(self.cloud.pid_dir / f"fn-{function}.json")
        if record is None or not record.alive():
            raise NoTarget(f"fn-{function} is not running")
        busy = self._wait_busy(function)
        log_file = self.cloud.log_dir / "delivery.log"
        before = log_file.stat().st_size if log_file.exists() else 0
        workers = procs.descendants(record.pid)
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        injected = self.record(fault, f"fn-{function}", f"{len(workers)} worker(s) killed ({busy})")
        time.sleep(3)
        with contextlib.suppress(OSError), log_file.open("rb") as f:
            f.seek(before)
            lines = f.read().decode(errors="replace").splitlines()
            cut = sum(1 for line in lines if f"{function}-push: push of" in line and "failed" in line)
            injected.detail += f"; {cut} push(es) cut short"

    def _wait_busy(self, function: str) -> str:
        deadline = time.monotonic() + TARGET_WAIT
        since = time.time()
        markers = {m["boot_id"] for m in self.view.markers()}
        while time.monotonic() < deadline and not self.stop.is_set():
            try:
                if function == "dispatch" and any(e["kind"] == "vm.ready" for e in self.view.events(since)):
                    time.sleep(0.3)
                    return "a VM had just become ready"
                if function == "cleanup":
                    now = {m["boot_id"] for m in self.view.markers()}
                    if markers - now:
                        time.sleep(0.2)
                        return "a trainer had just sent its completion"
                    markers = now
                if function == "launch" and any(e["kind"] == "mig.insert" for e in self.view.events(since)):
                    return "a batch was being launched"
            except Unreadable:
                pass
            since = time.time() - 0.5
            time.sleep(0.1)
        return "no handler seen under way"

    def emulator_restarted(self, fault: Fault, rng: random.Random) -> None:
        service = str(fault.params["service"])
        injected = self.record(fault, service, "stopped")
        started = time.monotonic()
        self.cloud.restart(service)
        took = time.monotonic() - started
        injected.end = round(max(injected.end, self.ledger.clock.now() + 5.0), 2)
        injected.detail = f"stopped and started again: back in {took:.1f}s"

    def publisher_killed(self, fault: Fault, rng: random.Random) -> None:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not self.stop.is_set():
            followed = self.workload.kill_waiting()
            if followed is not None:
                self.record(
                    fault, followed, "SIGKILL to `publisher.py --wait`; followed again with `publisher.py wait`"
                )
                return
            time.sleep(1)
        raise NoTarget("no publisher in --wait")
