"""``publisher.py logs`` (publisher/logs_view.py) on chunks in the local cloud's bucket: boots in order
with a header each, ``--since`` by chunk time, every experiment without an index, errors named."""

from __future__ import annotations

import io
import time

import pytest

from sinergym_cloud import names
from sinergym_cloud.contracts import Experiment
from sinergym_cloud.errors import BatchNotFound
from sinergym_cloud.gcp import logs
from sinergym_cloud.gcp.runtime import Runtime
from sinergym_cloud.publisher import logs_view
from sinergym_cloud.records import ExperimentRecord, LaunchRecord
from tests.conftest import new_batch_id


def batch_with_logs(rt: Runtime) -> str:
    bid = new_batch_id("lv")
    bucket_name = rt.settings.results_bucket
    launch = LaunchRecord(batch_id=bid, status="launched", group="g", zone="europe-west1-b", template="t",
                          results_bucket=bucket_name, migs=["g-x"], experiments=2, mlflow_experiment="m")  # fmt: skip
    rt.state.create(names.launch_object(bid), launch.doc())
    bucket = rt.clients.storage.bucket(bucket_name)
    now = time.time()
    for index in range(2):
        rec = ExperimentRecord(
            batch_id=bid, index=index, name=f"exp-{index}", group="g", zone="europe-west1-b", mig="g-x",
            instance=f"g-x-{index}", spec=Experiment(environment="Eplus-5zone-hot-continuous-v1"), state="failed",
        )  # fmt: skip
        rt.state.create(names.experiment_object(bid, index), rec.doc())
    # Experiment 0 ran twice: a boot preempted an hour ago, then a boot that failed just now.
    chunks = [
        (1, "old-boot", 0, "startup: first boot\n", "startup", now - 3700, False),
        (1, "old-boot", 1, "episode 1\n", "trainer", now - 3600, True),
        (2, "new-boot", 0, "startup: second boot\n", "startup", now - 60, False),
        (2, "new-boot", 1, "resumed\nTraceback\nValueError: boom\n", "trainer", now - 30, True),
    ]
    for attempt, boot, seq, text, source, at, final in chunks:
        meta = {"source": source, "first": f"{at - 1:.3f}", "last": f"{at:.3f}", **({"final": "true"} if final else {})}
        logs.write_chunk(bucket, names.log_chunk_object(bid, "exp-0", attempt, boot, seq), text.encode(), meta)
    return bid


def test_boots_in_order_with_headers_and_since(rt: Runtime) -> None:
    bid = batch_with_logs(rt)
    out = io.StringIO()
    assert logs_view.show(rt, bid, 0, out=out) == 4
    text = out.getvalue()
    assert text.index("==> boot old-boot (attempt 1) <==") < text.index("episode 1")
    assert text.index("episode 1") < text.index("==> boot new-boot (attempt 2) <==") < text.index("ValueError: boom")
    recent = io.StringIO()
    logs_view.show(rt, bid, 0, since=time.time() - 600, out=recent)
    assert "episode 1" not in recent.getvalue() and "ValueError: boom" in recent.getvalue()
    follow = io.StringIO()
    assert logs_view.show(rt, bid, 0, follow=True, out=follow, sleep=lambda s: None) == 4, "ended and final: returns"
    every = io.StringIO()
    logs_view.show(rt, bid, None, out=every)
    assert "experiment 0 (exp-0)" in every.getvalue(), "headers name the experiment when several are shown"


def test_unknown_batch_and_index_are_named(rt: Runtime) -> None:
    with pytest.raises(BatchNotFound):
        logs_view.show(rt, new_batch_id("none"), 0, out=io.StringIO())
    bid = batch_with_logs(rt)
    with pytest.raises(ValueError, match="experiments 0 to 1, not 5"):
        logs_view.show(rt, bid, 5, out=io.StringIO())
