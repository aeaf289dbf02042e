"""``python -m tests.soak --seed S --minutes M [--experiments N] [--max-parallel P]``: one seeded soak.

It prints the seed and the fault plan first, every fault and every violation as it happens (with the
seed and the time on the workload's clock), then the table, and last one JSON line. Exit code 0 only
when no invariant was broken. Logs, the batch files and the local cloud's own logs stay under
``--out`` (soak-results/seed-S).
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import shutil
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from localcloud.cloud import LocalCloud
from tests.soak import final, plan, report
from tests.soak.checker import Checker
from tests.soak.ledger import Clock, Ledger
from tests.soak.nemesis import Nemesis
from tests.soak.observe import View
from tests.soak.settings import DEFAULT_OUT, ROUND_SIZE, Soak
from tests.soak.workload import Workload, sweep_script


def run(soak: Soak) -> dict[str, Any]:
    """Run one soak; its summary (the JSON object the run ends with)."""
    out = soak.out / f"seed-{soak.seed}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    soak = replace(soak, out=out)
    faults = plan.plan(soak)
    ledger = Ledger(soak.seed, out, Clock())
    shape = (
        f"{soak.experiments} experiments in rounds of {soak.round_sizes()}"
        if soak.experiments
        else f"rounds of {ROUND_SIZE} experiments until {soak.rounds_until:.0f}s"
    )
    ledger.say(
        f"soak: seed {soak.seed}, {soak.minutes:g} minutes, {shape}, {len(faults)} faults planned "
        f"(plan {plan.digest(faults)}); replay with --seed {soak.seed}"
    )
    for f in faults:
        ledger.say(f"  plan #{f.number} {f.kind} at {f.at:.1f}s for {f.window:.0f}s {f.params or ''}")
    markers = out / "markers"
    environment = soak.vm_environment(markers, soak.objective(sweep_script(soak)))
    saved = dict(os.environ)
    os.environ.update(environment)
    cloud = LocalCloud(out / "cloud", soak.cloud_options())
    try:
        env = cloud.up(say=ledger.say)
        info = cloud.info() or {}
        view = View(env, info["ports"], cloud.dir, markers)
        templates = view.templates()
        checker = Checker(soak, view, ledger)
        workload = Workload(soak, env, ledger, view, lambda: checker.latest)
        nemesis = Nemesis(soak, cloud, env, ledger, view, checker, workload, faults)
        checker.start()
        workload.start()
        deadline = time.monotonic() + 600
        while not ledger.clock.started and time.monotonic() < deadline:
            time.sleep(0.1)
        nemesis.start()
        stopping = soak.stop_on_violation
        while ledger.clock.now() < soak.duration and not (stopping and ledger.first_violation.is_set()):
            time.sleep(1)
        ledger.say("time is up: no new fault, no new round")
        nemesis.close()
        workload.close()
        obs = None
        if not (stopping and ledger.first_violation.is_set()):
            ledger.say(f"draining: waiting up to {soak.drain_bound:.0f}s for every batch to end")
            obs = final.wait_drained(checker, soak.drain_bound, ledger.say)
            checker.close()
            final.check(checker, templates)
        else:
            checker.close()
        obs = checker.latest if obs is None else checker.observe()
        result = report.summary(ledger, checker, workload, faults, obs, soak.minutes)
        print(report.table(result, ledger, checker, workload, faults, obs), flush=True)
    finally:
        cloud.down()
        os.environ.clear()
        os.environ.update(saved)
    return result


def parse(argv: list[str] | None = None) -> Soak:
    parser = argparse.ArgumentParser(
        prog="python -m tests.soak",
        description="A seeded soak of the local cloud: many faults at once for minutes, invariants checked all along.",
    )
    parser.add_argument("--seed", type=int, default=None, help="the run's seed (default: a random one, printed first)")
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the workload (the drain comes after)")
    parser.add_argument("--experiments", type=int, default=None,
                        help="experiments in all, in rounds of 14 (default: rounds until the time is up)")  # fmt: skip
    parser.add_argument("--max-parallel", type=int, default=2, help="the --max-parallel batch's value (default 2)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where logs go (default soak-results/)")
    parser.add_argument("--no-faults", action="store_true", help="the same workload and checks, no nemesis")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 10**6)
    soak = Soak(seed=seed, minutes=args.minutes, experiments=args.experiments, max_parallel=args.max_parallel,
                out=args.out.resolve(), faults=not args.no_faults)  # fmt: skip
    if args.minutes < 1 or args.max_parallel < 1:
        parser.error("--minutes is at least 1, --max-parallel at least 1")
    if args.experiments is not None and args.experiments < soak.min_round:
        parser.error(f"--experiments is at least {soak.min_round} at --max-parallel {args.max_parallel}: a batch of "
                     "every kind, with a queue where a kind needs one")  # fmt: skip
    return soak


def _terminated(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # the local cloud is stopped on the way out (run's finally)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    signal.signal(signal.SIGTERM, _terminated)
    soak = parse(argv)
    result = run(soak)
    print(report.last_line(result), flush=True)
    return 0 if not result["violations"] else 1


if __name__ == "__main__":
    sys.exit(main())
