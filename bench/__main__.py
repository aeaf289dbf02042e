"""`python -m bench [--only GROUP,...] [--quick]`: run the benchmarks, print one table.

Each figure is printed with its goal; nothing is asserted. Results are written to
bench-results/bench-<time>.json and bench-results/latest.json; a previous latest.json is compared.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import signal
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import figures  # noqa: E402 - run as a script: sys.path is set first


def machine() -> dict[str, Any]:
    try:
        model = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        model = platform.processor()
    memory = 0
    with contextlib.suppress(OSError, StopIteration):
        meminfo = Path("/proc/meminfo").read_text().splitlines()
        memory = int(next(x for x in meminfo if x.startswith("MemTotal")).split()[1])
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gib": round(memory / 1024 / 1024, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def previous_values(out: Path) -> dict[str, Any]:
    """Each figure's value in the newest earlier run that measured it (runs with --only measure a part)."""
    before: dict[str, Any] = {}
    for path in sorted(out.glob("bench-*.json")):  # names carry a UTC stamp: oldest first
        try:
            before.update({r["figure"]: r["value"] for r in json.loads(path.read_text())["rows"]})
        except (ValueError, KeyError, TypeError):
            continue  # a hand-edited or truncated file is not a reason to fail the run
    return before


def render(rows: list[dict[str, Any]], before: dict[str, Any]) -> str:
    headers = ["figure", "value", "goal", "met", "previous"]
    table = []
    for r in rows:
        prev = before.get(r["figure"])
        table.append(
            [
                r["figure"],
                f"{r['value']:.3g} {r['unit']}" if isinstance(r["value"], (int, float)) else str(r["value"]),
                r["goal"],
                {True: "yes", False: "NO", None: "-"}[r["met"]],
                f"{prev:.3g}" if isinstance(prev, (int, float)) else "-",
            ]
        )
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(headers)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*headers), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*row) for row in table]
    return "\n".join(lines)


GROUPS = ("cloud", "control", "queue", "list", "limits", "optimizer", "trainer")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--only",
        default=",".join(GROUPS),
        help="comma-separated groups: cloud, control, queue, list, limits (the scale figures without and under "
        "Google's limits, side by side), optimizer (Adam fused against its loop: SB3's gradient steps alone), "
        "trainer",
    )
    parser.add_argument(
        "--list-sizes", default="", help="list only: the numbers of ended batches (default 1000,5000; --quick: 500)"
    )
    parser.add_argument(
        "--limits-size",
        type=int,
        default=0,
        help="limits only: the queue's and the burst's batch size (default 200, at max_parallel 20; --quick: 40)",
    )
    parser.add_argument(
        "--queue-sizes",
        default="",
        help="queue only: the batch sizes N, each at max_parallel N/10, at most 20 (default 20,200; --quick: 20), "
        "then the launch of 1000",
    )
    parser.add_argument(
        "--launch-size", type=int, default=1000, help="queue only: the batch whose VM requests launch is timed on"
    )
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and smaller batches")
    parser.add_argument(
        "--sizes", default="", help="control only: the batch sizes N to measure (e.g. 10,50); default 1,10,50"
    )
    parser.add_argument(
        "--algorithms",
        default="",
        help="trainer only: the algorithms measured against a bare loop (default: every one the project accepts; "
        "--quick: PPO,SAC)",
    )
    parser.add_argument(
        "--pairs",
        type=int,
        default=0,
        help="trainer only: trainer/bare pairs per algorithm, the order alternating (default 4; --quick: 1)",
    )
    parser.add_argument(
        "--n-envs-rounds",
        type=int,
        default=-1,
        help="trainer only: rounds of --n-envs 1, 2 (and 4 with 4 cores) (default 3; --quick: 1; 0: skip)",
    )
    parser.add_argument(
        "--n-envs-environments",
        default="",
        help="trainer only: comma-separated Sinergym environments the --n-envs rounds run on, each in turn "
        "(default Eplus-5zone-hot-continuous-v1; a building whose simulation step costs more, such as "
        "Eplus-officegrid-hot-continuous-v1, shows what the learner's serial work leaves of the speed-up)",
    )
    parser.add_argument(
        "--profiles",
        default="fast,gce",
        help="control only: the Compute timings to measure under (fast: every VM at once; gce: Compute Engine's)",
    )
    return parser


def _measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The figures of every group asked for, in order."""
    groups = set(args.only.split(","))
    rows: list[dict[str, Any]] = []
    if "cloud" in groups:
        rows += figures.cloud(quick=args.quick)
    if "control" in groups:
        sizes = [int(n) for n in args.sizes.split(",") if n.strip()]
        profiles = tuple(p for p in args.profiles.split(",") if p.strip())
        rows += figures.control(quick=args.quick, sizes=sizes or None, profiles=profiles)
    if "queue" in groups:
        from bench import queue

        queue_sizes = [int(n) for n in args.queue_sizes.split(",") if n.strip()] or ([20] if args.quick else None)
        rows += queue.queue(sizes=queue_sizes, launch_size=args.launch_size)
    if "list" in groups:
        from bench import listing

        list_sizes = [int(n) for n in args.list_sizes.split(",") if n.strip()]
        rows += listing.listing(sizes=list_sizes or ([500] if args.quick else [1000, 5000]))
    if "limits" in groups:
        from bench import limits

        size = args.limits_size or (40 if args.quick else limits.SIZE)
        rows += limits.limits(size=size, parallel=max(1, size // 10), launch_size=200 if args.quick else limits.LAUNCH)
    if "optimizer" in groups:
        from bench import optimizer

        rows += optimizer.optimizer(rounds=1 if args.quick else 3)
    if "trainer" in groups:
        from bench import trainer_speed

        rows += trainer_speed.trainer(
            quick=args.quick,
            algorithms=[a.strip() for a in args.algorithms.split(",") if a.strip()] or None,
            pairs=args.pairs or None,
            rounds=None if args.n_envs_rounds < 0 else args.n_envs_rounds,
            n_envs_environments=[e.strip() for e in args.n_envs_environments.split(",") if e.strip()] or None,
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    unknown = [g for g in args.only.split(",") if g not in GROUPS]
    if unknown:
        parser.error(f"--only: unknown group(s) {', '.join(map(repr, unknown))}; the groups: {', '.join(GROUPS)}")
    # Stopped (timeout, kill): unwind, so the local clouds and processes the figures started are stopped.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    started = dt.datetime.now(dt.UTC)
    rows = _measure(args)
    out = REPO / "bench-results"
    out.mkdir(exist_ok=True)
    latest = out / "latest.json"
    before = previous_values(out)
    m = machine()
    result = {"date": started.isoformat(), "machine": m, "rows": rows}
    print(f"\nsinergym-cloud benchmarks, {started:%Y-%m-%d %H:%M} UTC")
    print(f"machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, Python {m['python']}\n")
    print(render(rows, before))
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    (out / f"bench-{stamp}.json").write_text(json.dumps(result, indent=2))
    latest.write_text(json.dumps(result, indent=2))
    print(f"\nwritten: {out / f'bench-{stamp}.json'} (and latest.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
