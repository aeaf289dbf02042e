"""The soak's workload: rounds of batches of every kind, submitted as a user submits them, through
``publisher.py`` (a separate process, its own retries, its own view of the cloud).

Each round submits one batch of each kind (``KINDS``), their sizes shares of the round's
experiments (``Soak.round_sizes``: ``--experiments`` in rounds of fourteen):
plain ones as the original tool's command strings (``-cmds``), one followed with ``--wait`` (the
process the nemesis may kill; the workload then follows the batch again with ``publisher.py wait``,
as a user would), one with ``--max-parallel``, one with ``--max-vm-hours`` (a budget that lets only
a part of it run), a sweep with a median pruner (its trials' objectives scripted through
``BENCH_OBJECTIVE``: some bad enough to be pruned), one over two zones, and one cancelled
(``publisher.py cancel``) a seeded number of seconds after it was accepted. A new round starts when
the last is mostly over (a quarter of it left, or all of it ended), until every round was submitted
or the run's time for rounds is up. Batch ids derive from the seed: a replay submits the same batches.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from sinergym_cloud import budget, names
from sinergym_cloud.contracts import Experiment
from tests.soak.checker import Observation
from tests.soak.ledger import BatchInfo, Ledger
from tests.soak.observe import Unreadable, View
from tests.soak.settings import REPO, ZONES, Soak
from tests.soak.transitions import terminal

KINDS = ("plain", "waited", "parallel", "budget", "sweep", "zones", "cancel")
SHARES = {"plain": 4, "waited": 3, "parallel": 5, "budget": 3, "sweep": 4, "zones": 2, "cancel": 3}
ENVIRONMENT = "Eplus-5zone-hot-continuous-v1"
WEEK = [1, 1, 1991, 7, 1, 1991]
ROUND_TIMEOUT = 300.0  # a round that has not ended by then no longer holds the next one back
SUBMIT_ATTEMPTS = 6


def sizes(total: int, least: dict[str, int]) -> dict[str, int]:
    """Each kind's share of a round of ``total`` experiments, summing to it (at least ``least`` of
    each kind: Soak.least), the remainder to the largest fractions."""
    weight = sum(SHARES.values())
    exact = {k: total * SHARES[k] / weight for k in KINDS}
    out = {k: max(least[k], int(exact[k])) for k in KINDS}
    by_fraction = sorted(KINDS, key=lambda k: (exact[k] - int(exact[k]), SHARES[k]), reverse=True)
    while sum(out.values()) < total:
        for k in by_fraction:
            if sum(out.values()) < total:
                out[k] += 1
    while sum(out.values()) > total:
        k = max((k for k in KINDS if out[k] > least[k]), key=lambda k: out[k])
        out[k] -= 1
    return out


def batch_id(seed: int, round_: int, kind: str) -> str:
    return f"soak{seed}-r{round_}-{kind}"


def experiment(seed: int, **extra: Any) -> dict[str, Any]:
    return {"environment": ENVIRONMENT, "algorithm": "PPO", "episodes": 1, "seed": seed, "runperiod": list(WEEK),
            "remote_store": True, **extra}  # fmt: skip


def estimate() -> float:
    return budget.estimate_vm_hours(Experiment.model_validate(experiment(1)))


def sweep_script(soak: Soak) -> dict[str, list[float]]:
    """BENCH_OBJECTIVE's entries for every round's sweep: the first two trials good (they complete
    first and set the median), then good and bad ones as the seed says."""
    rng = random.Random(f"{soak.seed}-sweep")
    good, bad = [1.0] * soak.episodes, [0.0] * soak.episodes
    script = {}
    for r, size in enumerate(soak.round_sizes()):
        bid = batch_id(soak.seed, r, "sweep")
        for i in range(sizes(size, soak.least())["sweep"]):
            script[f"{bid}/{i}"] = good if i < 2 or rng.random() < 0.5 else bad
    return script


class Workload:
    def __init__(
        self, soak: Soak, env: dict[str, str], ledger: Ledger, view: View, observation: Callable[[], Observation | None]
    ) -> None:
        self.soak, self.env, self.ledger, self.view = soak, env, ledger, view
        self.observation = observation
        self.rng = random.Random(f"{soak.seed}-workload")
        self.dir = soak.out / "batches"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()
        self.waiting: tuple[subprocess.Popen[bytes], str] | None = None  # the --wait publisher and its batch
        self.killed_waits = 0
        self.rounds = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, name="workload", daemon=True)
        self.processes: list[subprocess.Popen[bytes]] = []

    # ------------------------------------------------------------- publisher
    def publisher(self, *args: str, timeout: float = 180.0) -> subprocess.CompletedProcess[str]:
        environ = {**os.environ, **self.env}
        environ.pop("PYTHONPATH", None)
        return subprocess.run([sys.executable, "publisher.py", *args], cwd=REPO, env=environ, capture_output=True,
                              text=True, timeout=timeout, check=False)  # fmt: skip

    def spawn(self, *args: str, log_name: str) -> subprocess.Popen[bytes]:
        environ = {**os.environ, **self.env}
        environ.pop("PYTHONPATH", None)
        out = open(self.soak.out / f"{log_name}.log", "ab")  # noqa: SIM115 - the child owns it
        process = subprocess.Popen([sys.executable, "publisher.py", *args], cwd=REPO, env=environ, stdout=out,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)  # fmt: skip
        out.close()
        with self.lock:
            self.processes.append(process)
        return process

    def accepted(self, bid: str) -> bool:
        try:
            return self.view.download(self.view.state_bucket, names.batch_object(bid)) is not None
        except Unreadable:
            return False

    def submit(self, info: BatchInfo, args: list[str]) -> None:
        """Publish a batch, retried as a user would retry a failed submission (same id: a no-op if it
        went through); the ledger knows it from then on."""
        self.ledger.add_batch(info)
        for attempt in range(1, SUBMIT_ATTEMPTS + 1):
            info.submit_attempts = attempt
            try:
                done = self.publisher(*args, "--batch-id", info.batch_id)
                ok = done.returncode == 0
                why = (done.stderr or done.stdout).strip().splitlines()[-1:] if not ok else []
            except subprocess.TimeoutExpired:
                ok, why = False, ["timed out"]
            if ok or self.accepted(info.batch_id):
                info.submitted_at = self.ledger.clock.now()
                self.ledger.say(f"submitted {info.batch_id} ({info.kind}, {info.experiments} experiments)")
                return
            self.ledger.say(f"submitting {info.batch_id} failed (attempt {attempt}): {' '.join(why)[:200]}")
            time.sleep(min(30, 2**attempt))
        info.notes.append("never accepted")
        self.ledger.say(f"gave up submitting {info.batch_id}")

    def write(self, bid: str, body: dict[str, Any]) -> Path:
        path = self.dir / f"{bid}.yaml"
        path.write_text(yaml.safe_dump(body, sort_keys=False))
        return path

    # ----------------------------------------------------------------- rounds
    def round(self, r: int) -> list[BatchInfo]:
        soak = self.soak
        n = sizes(soak.round_sizes()[r], soak.least())
        e = estimate()
        seeds = iter(range(1000 * r + 1, 1000 * (r + 1)))
        made: list[BatchInfo] = []

        def info(kind: str, **fields: Any) -> BatchInfo:
            b = BatchInfo(batch_id(soak.seed, r, kind), kind, r, n[kind], estimate=e, **fields)
            made.append(b)
            return b

        cmds = [
            f"python3 DRL_battery.py --environment {ENVIRONMENT} --episodes 1 --algorithm PPO --seed {next(seeds)} "
            "--runperiod 1 1 1991 7 1 1991 --remote_store"
            for _ in range(n["plain"])
        ]
        self.submit(info("plain"), ["--experiment_commands", *cmds])
        self.start_waited(info("waited", max_parallel=1), [experiment(next(seeds)) for _ in range(n["waited"])])
        path = self.write(
            batch_id(soak.seed, r, "parallel"), {"experiments": [experiment(next(seeds)) for _ in range(n["parallel"])]}
        )
        self.submit(
            info("parallel", max_parallel=soak.max_parallel),
            ["--batch-file", str(path), "--max-parallel", str(soak.max_parallel)],
        )
        hours = round(1.1 * e, 4)  # the first fits; the next once the first has used a tenth of it
        path = self.write(
            batch_id(soak.seed, r, "budget"), {"experiments": [experiment(next(seeds)) for _ in range(n["budget"])]}
        )
        self.submit(info("budget", max_vm_hours=hours), ["--batch-file", str(path), "--max-vm-hours", str(hours)])
        self.submit(
            info("sweep", max_parallel=soak.max_parallel), ["--batch-file", str(self.sweep_file(r, n["sweep"]))]
        )
        cmds = [
            f"python3 DRL_battery.py --environment {ENVIRONMENT} --episodes 1 --algorithm PPO --seed {next(seeds)} "
            "--runperiod 1 1 1991 7 1 1991 --remote_store"
            for _ in range(n["zones"])
        ]
        self.submit(info("zones"), ["--zone", *ZONES, "--experiment_commands", *cmds])
        cancel = info("cancel", max_parallel=soak.max_parallel)
        path = self.write(
            cancel.batch_id,
            {"max_parallel": soak.max_parallel, "experiments": [experiment(next(seeds)) for _ in range(n["cancel"])]},
        )
        self.submit(cancel, ["--batch-file", str(path)])
        threading.Thread(target=self.cancel_later, args=(cancel, self.rng.uniform(20, 45)), daemon=True).start()
        return made  # fmt: skip

    def sweep_file(self, r: int, trials: int) -> Path:
        base = experiment(1, episodes=self.soak.episodes, evaluation=True, eval_freq=1, eval_length=1)
        return self.write(batch_id(self.soak.seed, r, "sweep"), {
            "experiments": [base],
            "sweep": {
                "method": "random", "trials": trials, "max_parallel": self.soak.max_parallel, "seed": self.soak.seed % 1000,
                "objective": {"metric": "best_eval_mean_reward", "direction": "maximize"},
                "pruner": {"name": "median", "min_episodes": 1, "min_trials": 1},
                "parameters": {"hyperparameters.learning_rate": {"loguniform": [1.0e-5, 1.0e-2]}},
            },
        })  # fmt: skip

    def start_waited(self, info: BatchInfo, experiments: list[dict[str, Any]]) -> None:
        """Submit with ``--wait`` and keep the process: the one ``publisher_killed`` kills."""
        self.ledger.add_batch(info)
        path = self.write(
            info.batch_id, {"max_parallel": 1, "experiments": experiments}
        )  # one at a time: a long --wait
        process = self.spawn("--batch-file", str(path), "--batch-id", info.batch_id, "--wait", log_name=info.batch_id)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not self.accepted(info.batch_id):
            if process.poll() is not None and not self.accepted(info.batch_id):
                break
            time.sleep(1)
        if self.accepted(info.batch_id):
            info.submitted_at, info.submit_attempts = self.ledger.clock.now(), 1
            self.ledger.say(f"submitted {info.batch_id} ({info.kind}, {info.experiments} experiments, --wait)")
            with self.lock:
                self.waiting = (process, info.batch_id)
            return
        process.kill()
        process.wait()
        self.ledger.say(f"--wait submission of {info.batch_id} failed; submitting it again")
        self.submit(info, ["--batch-file", str(path)])

    def kill_waiting(self) -> str | None:
        """Kill the publisher following a batch with --wait (SIGKILL, as a crash or a closed laptop
        would), then follow the batch again with ``publisher.py wait``. The batch it was following, or None."""
        with self.lock:
            found, self.waiting = self.waiting, None
        if found is None or found[0].poll() is not None:
            return None
        process, bid = found
        process.kill()
        process.wait()
        self.killed_waits += 1
        self.spawn("wait", bid, log_name=f"{bid}-rewait")
        return bid

    def cancel_later(self, info: BatchInfo, after: float) -> None:
        if self.stop.wait(after) or info.submitted_at is None:
            return
        for attempt in range(1, SUBMIT_ATTEMPTS + 1):
            done = self.publisher("cancel", info.batch_id)
            if done.returncode == 0:
                info.cancelled_at = self.ledger.clock.now()
                self.ledger.say(f"cancelled {info.batch_id} {after:.0f}s after it was accepted")
                return
            self.ledger.say(f"cancel of {info.batch_id} failed (attempt {attempt}): {done.stderr.strip()[-200:]}")
            time.sleep(2**attempt)

    def round_over(self, made: list[BatchInfo], started: float) -> bool:
        """The next round may start: this one is mostly over (at most a quarter of its experiments not
        ended, as the checker last saw, and it has run 45 s), or it has run for ROUND_TIMEOUT."""
        ran = time.monotonic() - started
        if ran > ROUND_TIMEOUT:
            return True
        obs = self.observation()
        if obs is None:
            return False
        size = sum(b.experiments for b in made if b.submitted_at is not None)
        ended = sum(
            1
            for (bid, _), r in obs.records.items()
            if bid in {b.batch_id for b in made} and terminal(str(r.get("state")))
        )
        return ended >= size or (ran > 60 and size - ended <= size / 4)

    def run(self) -> None:
        self.ledger.clock.start()
        rounds = self.soak.round_sizes()
        for r, size in enumerate(rounds):
            if self.stop.is_set() or (r and self.ledger.clock.now() > self.soak.rounds_until):
                return
            started = time.monotonic()
            self.ledger.say(f"round {r + 1}: {len(KINDS)} batches, {size} experiments")
            made = self.round(r)
            self.rounds = r + 1
            while not self.stop.wait(3) and not self.round_over(made, started):
                pass

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(60)
        with self.lock:
            processes = list(self.processes)
        for p in processes:
            if p.poll() is None:
                p.kill()
                p.wait()
