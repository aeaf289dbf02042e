"""The queue's benchmark: a batch far beyond its parallelism, and launch at scale.

- A batch of N experiments of the bench workload (bench/workload.py, ``WORK`` seconds each) at
  ``max_parallel`` P: the makespan (publish -> the last experiment's end) against the ideal
  ceil(N/P) x T, T the workload's time; the latency from the end of an experiment to the VM request
  of the queued one it starts (its completion, as the workload stamped it, to the group's
  ``createInstances`` that names the new VM); Compute API calls (counted by the emulator) and
  state-object writes (counted from the functions' ``sinergym_cloud.gcp.state.writes`` log) per
  experiment, at each N: a queue that costs the same per experiment at N = 20 and 200 scales.
  Each N runs at P = N/10 (at most ``PARALLEL``, 20: N=20 at 2, N=200 at 20), so nine in ten of
  its experiments wait queued at every N: a queued start costs what a start at launch does not (its
  own ``createInstances``, its promotion's write), and at N=20 with P=20 nothing would be queued,
  a difference that says nothing about N. What differs between the sizes then is what grows with N.
- Launch: publish -> every VM of a 1000-experiment batch requested (no parallelism limit). The
  emulator's zones are out of stock meanwhile (its quotas admit them all: launch reads them), so the
  group records every VM as asked for and boots none (1000 sshd on two cores would measure the
  machine, not launch); the batch is then cancelled.

Figures only; nothing is asserted (``make bench``).
"""

from __future__ import annotations

import functools
import math
import re
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any

import requests

from bench.figures import WEEK, events, group_deleted, local_cloud, pct, row, runtime, say, wait_for
from sinergym_cloud import contracts, names

WORK = 5.0  # seconds of "training" per experiment
PARALLEL = 20
WORKLOAD = {
    "SINERGYM_TRAINER_MODULE": "bench.workload",
    "BENCH_WORK_SECONDS": str(WORK),
    "SINERGYM_DEBUG_LOGGERS": "sinergym_cloud.gcp.state.writes",
}


def _calls(env: dict[str, str], which: str = "calls") -> Counter[str]:
    """Compute API calls so far, by method, as the emulator counts them (``refused``: those a rate
    quota refused)."""
    got = requests.get(f"{env['SINERGYM_COMPUTE_ENDPOINT']}/_emulator/calls", timeout=30).json().get(which, {})
    return Counter({str(k): int(v) for k, v in got.items()})


def _state_writes(cloud: Any, batch_id: str) -> Counter[str]:
    """State-object writes for the batch, by kind of object (the file name without its index), from
    the functions' logs (one line per write attempt)."""
    kinds: Counter[str] = Counter()
    prefix = f"batches/{batch_id}/"
    for log in Path(cloud.dir, "logs").glob("fn-*.log"):
        with log.open(errors="replace") as f:
            for line in f:
                if "state write" in line and prefix in line:
                    path = line.split(prefix, 1)[1].split()[0]
                    kinds[re.sub(r"\d+", "N", path)] += 1
    return kinds


def _per(counts: Counter[str], n: int) -> str:
    return ", ".join(f"{k} {v / n:.2f}" for k, v in counts.most_common())


def _emulator(env: dict[str, str], settings: dict[str, Any]) -> None:
    requests.post(f"{env['SINERGYM_COMPUTE_ENDPOINT']}/_emulator/config", json=settings, timeout=30).raise_for_status()


def parallel_for(n: int, ceiling: int = PARALLEL) -> int:
    """The max_parallel a batch of ``n`` runs at: a tenth of it, at least 1 and at most ``ceiling``."""
    return max(1, min(ceiling, n // 10))


def run_queue(cloud: Any, env: dict[str, str], rt: Any, n: int, parallel: int) -> dict[str, Any]:
    """One batch of ``n`` workload experiments at ``max_parallel`` ``parallel``, to its end: its figures
    (makespan and its ideal, succeeded, queued -> VM requested latencies, Compute calls and
    state-object writes by kind)."""
    from sinergym_cloud.contracts import Batch, Experiment
    from sinergym_cloud.records import ExperimentRecord

    experiment = Experiment(environment="Eplus-5zone-hot-continuous-v1", runperiod=WEEK)
    bid = f"bench-q-{n}-{int(time.time())}"
    batch = Batch(batch_id=bid, experiments=[experiment] * n, max_parallel=parallel)
    calls_before = _calls(env)
    since = time.time()
    rt.clients.publish(names.TOPIC_BATCHES, contracts.dump(batch))
    mig = names.mig_name(batch.group_name, batch.batch_id)
    try:
        evs = wait_for(functools.partial(group_deleted, env, mig, since), 300 + 4 * n, f"queued batch of {n} to end")
    except TimeoutError:
        from sinergym_cloud.publisher import views

        say(f"the batch did not end: {views.batch_status(rt, bid, with_alerts=False).counts}")
        raise
    by_method = _calls(env) - calls_before
    writes = _state_writes(cloud, batch.batch_id)
    recs = [
        ExperimentRecord.model_validate(doc.data)
        for i in range(n)
        if (doc := rt.state.read(names.experiment_object(batch.batch_id, i)))
    ]
    ends = {r.index: r.trainer_finished_at for r in recs}
    asked: dict[str, float] = {}
    for e in evs:
        if e["kind"] == "mig.createInstances" and e.get("mig") == mig:
            for instance in e.get("instances", []):
                asked.setdefault(instance, e["t"])
    latencies = [
        asked[r.instance] - ends[r.started_by]  # type: ignore[operator]  # both known: filtered below
        for r in recs
        if isinstance(r.started_by, int) and ends.get(r.started_by) and r.instance in asked
    ]
    return {
        "batch_id": bid,
        "makespan": max(r.trainer_finished_at or 0.0 for r in recs) - since,
        "ideal": math.ceil(n / parallel) * WORK,
        "succeeded": sum(1 for r in recs if r.state == "succeeded"),
        "terminal": sum(1 for r in recs if r.terminal),
        "latencies": latencies,
        "calls": by_method,
        "writes": writes,
    }


def queue(sizes: list[int] | None = None, launch_size: int = 1000, ceiling: int = PARALLEL) -> list[dict[str, Any]]:
    sizes = sizes or [20, 200]
    rows: list[dict[str, Any]] = []
    with local_cloud(WORKLOAD) as (cloud, env):
        rt = runtime(env)
        for n in sizes:
            parallel = parallel_for(n, ceiling)
            say(f"queue: batch of {n} at max_parallel {parallel}")
            got = run_queue(cloud, env, rt, n, parallel)
            latencies, calls, writes = got["latencies"], sum(got["calls"].values()), got["writes"]
            say(f"Compute calls per experiment at N={n}: {_per(got['calls'], n)}")
            say(f"state-object writes per experiment at N={n}: {_per(writes, n)}")
            makespan, ideal, ok = got["makespan"], got["ideal"], got["succeeded"]
            p95 = pct(latencies, 0.95)
            measured = bool(latencies)  # N <= P queues nothing: no latency to measure
            tag = f"N={n}, P={parallel}, T={WORK:g} s"
            rows += [
                row(f"queue: makespan, {tag}", makespan, "s", f"ideal ceil(N/P) x T = {ideal:g} s", None),
                row(f"queue: makespan / ideal, {tag}", makespan / ideal, "x", "-", None),
                row(f"queue: experiments succeeded, {tag}", ok, f"of {n}", f"{n}", ok == n),
                row(
                    f"queue: queued -> VM requested, {tag}, p50",
                    statistics.median(latencies or [math.nan]),
                    "s",
                    "p95 < 1 s",
                    None,
                ),
                row(
                    f"queue: queued -> VM requested, {tag}, p95",
                    p95,
                    "s",
                    "< 1 s",
                    p95 < 1.0 if measured else None,
                ),
                row(f"queue: Compute API calls per experiment, N={n}", calls / n, "calls", "the same at every N", None),
                row(
                    f"queue: state-object writes per experiment, N={n}",
                    sum(writes.values()) / n,
                    "writes",
                    "the same at every N",
                    None,
                ),
            ]
        took = launch(rt, env, launch_size)
        rows.append(
            row(f"launch: publish -> every VM of a {launch_size}-experiment batch requested", took, "s", "< 30 s",
                took < 30)
        )  # fmt: skip
    return rows


def launch(rt: Any, env: dict[str, str], n: int) -> float:
    """Publish -> every VM of an ``n``-experiment batch requested, with none booting (every zone out
    of stock; the quotas are read by launch, so INSTANCES must admit them all)."""
    from sinergym_cloud.contracts import Batch, Experiment
    from sinergym_cloud.control import batches

    say(f"launch: publish -> every VM of a {n}-experiment batch requested")
    _emulator(env, {"quota_instances": n + 200, "zone_exhausted": True, "retry_interval": 3600.0})
    try:
        experiment = Experiment(environment="Eplus-5zone-hot-continuous-v1", runperiod=WEEK)
        batch = Batch(batch_id=f"bench-launch-{n}-{int(time.time())}", experiments=[experiment] * n)
        wanted = {names.instance_name(batch.group_name, batch.batch_id, i) for i in range(n)}
        since = time.time()
        rt.clients.publish(names.TOPIC_BATCHES, contracts.dump(batch))

        def requested(s: float = since) -> float | None:
            got: set[str] = set()
            last = 0.0
            for e in events(env, s):
                if e["kind"] == "mig.createInstances":
                    mine = wanted.intersection(e.get("instances", []))
                    if mine:
                        got |= mine
                        last = max(last, e["t"])
            return last if got == wanted else None

        last = wait_for(requested, 300 + n / 5, f"every VM of {n} requested")
        batches.cancel(rt, batch.batch_id, reason="benchmark done")
    finally:
        _emulator(env, {"quota_instances": 200, "zone_exhausted": False, "retry_interval": 1.0})
    return float(last - since)
