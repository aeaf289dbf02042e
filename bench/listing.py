"""`python -m bench --only list`: how fast ``publisher.py list`` is with thousands of ended batches.

On a local cloud (fake-gcs-server holds the state bucket), each of N ended batches gets what the
control plane leaves behind: its batch index object (summary in its custom metadata), its launch
record and its teardown claim, and a few running batches get their index object and experiment
records. Then ``list`` (publisher/listing.py: one listing of ``index/``, plus one listing per active
batch) is timed, beside what a listing without the index would cost: a read of each batch's launch
record and teardown claim. Figures are printed, not asserted.
"""

from __future__ import annotations

import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench.figures import local_cloud, row, runtime, say

ACTIVE = 5  # running batches beside the ended ones
EXPERIMENTS = 3  # per batch


def _ended(rt: Any, numbers: range) -> None:
    """Ended batches: each with its launch record, its teardown claim and its index object."""
    from sinergym_cloud import names
    from sinergym_cloud.control import batch_index
    from sinergym_cloud.records import BatchSummary, FinalizeRecord, LaunchRecord

    now = time.time()

    def one(i: int) -> None:
        bid = f"bench-list-{i:05d}"
        launch = LaunchRecord(
            batch_id=bid, status="launched", group="g", zone="europe-west1-b", template="t", results_bucket="r",
            migs=["g-x"], experiments=EXPERIMENTS, mlflow_experiment=f"g.{bid}", submitted_by="bench",
            submitted_at=now - 86400 + i,
        )  # fmt: skip
        rt.state.create(names.launch_object(bid), launch.doc())
        claim = FinalizeRecord(owner="bench", lease_until=now, alerted=True, announced=True, finished_at=now)
        rt.state.create(names.finalize_object(bid), claim.doc())
        summary = BatchSummary(counts={"succeeded": EXPERIMENTS - 1, "failed": 1}, vm_hours=0.3)
        batch_index.finished(rt, launch, summary, "finished", now)

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(one, numbers))


def _active(rt: Any, count: int) -> None:
    """Running batches: their launch record, index object and experiment records."""
    from sinergym_cloud import names
    from sinergym_cloud.contracts import Experiment
    from sinergym_cloud.control import batch_index
    from sinergym_cloud.records import ExperimentRecord, LaunchRecord, object_metadata

    for i in range(count):
        bid = f"bench-list-active-{i}"
        launch = LaunchRecord(
            batch_id=bid, status="launched", group="g", zone="europe-west1-b", template="t", results_bucket="r",
            migs=["g-x"], experiments=EXPERIMENTS, mlflow_experiment=f"g.{bid}", submitted_by="bench",
        )  # fmt: skip
        rt.state.create(names.launch_object(bid), launch.doc())
        batch_index.launched(rt, launch)
        for index in range(EXPERIMENTS):
            rec = ExperimentRecord(
                batch_id=bid, index=index, name=f"e{index}", group="g", zone="europe-west1-b", mig="g-x",
                instance=f"g-x-{index}", spec=Experiment(environment="Eplus-5zone-hot-continuous-v1"), state="running",
            )  # fmt: skip
            rt.state.create(names.experiment_object(bid, index), rec.doc(), object_metadata(rec.doc()))


def _per_batch_reads(rt: Any) -> int:
    """What ``list`` would cost without the index: the launch record and the claim of every batch."""
    from sinergym_cloud import names

    iterator = rt.clients.storage.list_blobs(rt.settings.state_bucket, prefix="batches/", delimiter="/")
    for _ in iterator:
        pass
    ids = [p.removeprefix("batches/").rstrip("/") for p in iterator.prefixes]
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda b: (rt.state.read(names.launch_object(b)), rt.state.read(names.finalize_object(b))), ids))
    return len(ids)


def listing(sizes: list[int] | None = None) -> list[dict[str, Any]]:
    """For each N (ascending, seeded once each): ``list``'s median time, and the per-batch reads' time."""
    from sinergym_cloud.publisher import listing as list_view

    rows: list[dict[str, Any]] = []
    with local_cloud() as (_cloud, env):
        rt = runtime(env)
        _active(rt, ACTIVE)
        seeded = 0
        for n in sorted(sizes or [2000]):
            say(f"list: writing the state of {n - seeded} more ended batch(es)")
            started = time.monotonic()
            _ended(rt, range(seeded, n))
            seeded = n
            say(f"list: seeded in {time.monotonic() - started:.0f}s")
            times = []
            for _ in range(5):
                t0 = time.monotonic()
                found = list_view.lines(rt)
                times.append(time.monotonic() - t0)
            assert len(found) == n + ACTIVE, f"listed {len(found)} of {n + ACTIVE}"
            median = statistics.median(times)
            say(f"list of {n} ended + {ACTIVE} running batches: median {median:.3f}s of {[round(t, 3) for t in times]}")
            rows.append(row(f"list: {n} ended + {ACTIVE} running batches", median, "s", "< 2 s", median < 2.0))
            t0 = time.monotonic()
            count = _per_batch_reads(rt)
            naive = time.monotonic() - t0
            say(f"the same without the index: {2 * count} reads of {count} batches in {naive:.2f}s")
            rows.append(row(f"list without the index ({2 * count} reads)", naive, "s", "-", None))
    return rows
