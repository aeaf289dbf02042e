"""``publisher.py list`` (publisher/listing.py) on the local cloud's state bucket: ended batches from
the index alone, active ones from their experiments' listing, the filters, and ``--reindex`` for
batches made before the index."""

from __future__ import annotations

import time

from sinergym_cloud import names
from sinergym_cloud.contracts import Experiment
from sinergym_cloud.control import batch_index
from sinergym_cloud.gcp.runtime import Runtime
from sinergym_cloud.publisher import listing
from sinergym_cloud.records import BatchSummary, ExperimentRecord, FinalizeRecord, LaunchRecord, object_metadata
from tests.conftest import new_batch_id


def launch_record(batch_id: str, submitted_at: float, **fields: object) -> LaunchRecord:
    return LaunchRecord(
        batch_id=batch_id, status="launched", group="g", zone="europe-west1-b", template="t", results_bucket="r",
        migs=["g-x"], experiments=2, mlflow_experiment=f"g.{batch_id}", submitted_by="bob",
        submitted_at=submitted_at, **fields,
    )  # fmt: skip


def experiments(rt: Runtime, batch_id: str, *states: str) -> None:
    for index, state in enumerate(states):
        rec = ExperimentRecord(
            batch_id=batch_id, index=index, name=f"e{index}", group="g", zone="europe-west1-b", mig="g-x",
            instance=f"g-x-{index}", spec=Experiment(environment="Eplus-5zone-hot-continuous-v1"), state=state,  # type: ignore[arg-type]
            started_at=time.time() - 1800 if state != "queued" else None, started_by="launch" if state != "queued" else None,
        )  # fmt: skip
        rt.state.create(names.experiment_object(batch_id, index), rec.doc(), object_metadata(rec.doc()))


def mine(found: list[listing.BatchLine], prefix: str) -> dict[str, listing.BatchLine]:
    return {line.batch_id: line for line in found if line.batch_id.startswith(prefix)}


def test_ended_running_and_queued_batches_and_the_filters(rt: Runtime) -> None:
    prefix = new_batch_id("ls")
    now = time.time()
    ended = launch_record(f"{prefix}-ended", now - 3 * 86400, retry_of={"batch_id": "older", "experiments": [0]})
    batch_index.launched(rt, ended)
    batch_index.finished(rt, ended, BatchSummary(counts={"succeeded": 1, "failed": 1}, vm_hours=0.25), "finished", now)
    running = launch_record(f"{prefix}-running", now - 3600)
    batch_index.launched(rt, running)
    experiments(rt, running.batch_id, "running", "queued")
    waiting = launch_record(f"{prefix}-queued", now - 60)
    batch_index.launched(rt, waiting)
    experiments(rt, waiting.batch_id, "queued", "queued")

    everything = mine(listing.lines(rt), prefix)
    assert list(everything) == [f"{prefix}-queued", f"{prefix}-running", f"{prefix}-ended"], "newest first"
    e = everything[f"{prefix}-ended"]
    assert (e.state, e.counts, e.vm_hours, e.outcome, e.retry_of) == ("ended", {"succeeded": 1, "failed": 1}, 0.25,
                                                                       "finished", "older")  # fmt: skip
    assert (e.submitted_by, e.mlflow_experiment, e.experiments) == ("bob", f"g.{prefix}-ended", 2)
    r = everything[f"{prefix}-running"]
    assert r.state == "running" and r.counts == {"running": 1, "queued": 1}
    assert 0.4 < r.vm_hours < 0.6, "the running experiment's VM-hours so far (asked for half an hour ago)"
    assert everything[f"{prefix}-queued"].state == "queued" and everything[f"{prefix}-queued"].vm_hours == 0
    assert list(mine(listing.lines(rt, state="ended"), prefix)) == [f"{prefix}-ended"]
    assert list(mine(listing.lines(rt, state="running"), prefix)) == [f"{prefix}-running"]
    assert list(mine(listing.lines(rt, since=now - 2 * 86400), prefix)) == [f"{prefix}-queued", f"{prefix}-running"]
    assert everything[f"{prefix}-ended"].as_json()["counts"] == {"succeeded": 1, "failed": 1}
    assert listing.live_state({"succeeded": 2, "failed": 1}) == "ended", "its teardown is under way"
    assert listing.live_state({"queued": 2, "cancelled": 1}) == "queued"


def test_reindex_lists_batches_made_before_the_index(rt: Runtime) -> None:
    prefix = new_batch_id("old")
    launch = launch_record(f"{prefix}-1", time.time() - 600)
    rt.state.create(names.launch_object(launch.batch_id), launch.doc())
    experiments(rt, launch.batch_id, "succeeded", "cancelled")
    claim = FinalizeRecord(owner="x", lease_until=0, alerted=True, finished_at=time.time())
    rt.state.create(names.finalize_object(launch.batch_id), claim.doc())
    assert not mine(listing.lines(rt), prefix), "not indexed yet"
    assert launch.batch_id in listing.reindex(rt)
    line = mine(listing.lines(rt), prefix)[launch.batch_id]
    assert (line.state, line.counts) == ("ended", {"succeeded": 1, "cancelled": 1})
    assert launch.batch_id not in listing.reindex(rt), "indexed once"
