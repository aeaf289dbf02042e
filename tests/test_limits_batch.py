"""A whole batch under Google's limits, some lowered so that they bite at this size: every experiment
ends, nothing reaches the user, nothing is left behind, one alert.

The VMs run the bench workload (bench/workload.py: the trainer's stand-in toward the control plane),
half of them ending within the same second. The limits are Google's (localcloud/limits.py) with the
Compute read and mutation quotas lowered to what a batch of this size spends in a minute, and two
instances per function, so that each of them refuses something during the batch; the product must
absorb every refusal (client retries, the state store's pacing, Pub/Sub redelivery). A neighbour in
the same project spends the read and list quotas at the end of the batch's first minutes, so that
the product's calls are refused on a slow machine too (where a batch spends less of a minute's quota).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from google.api_core import exceptions

from localcloud import limits
from localcloud.cloud import Options
from sinergym_cloud import names
from sinergym_cloud.errors import BatchNotFound
from sinergym_cloud.gcp import metrics
from sinergym_cloud.publisher import views
from tests.conftest import Cloud, own_cloud, wait_for
from tests.control_helpers import ZONE, make_batch, ppo, publish_batch

N = 24
PARALLEL = 12
WORK = 4.0
LOWERED = limits.GOOGLE.with_(
    compute_requests_per_minute={
        "read_requests": 40,
        "list_requests": 60,
        "operation_read_requests": 200,
        # Mutations: enough to refuse some in a wave's minute, not so few that a completion's
        # redeliveries back off for minutes (Pub/Sub's backoff grows to its maximum).
        "default": 40,
    },
    function_max_instances=2,
    function_pending_seconds=1.0,
    function_cold_start_seconds=(0.2, 0.5),
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lcloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cloud, Path]]:
    schedule = tmp_path_factory.mktemp("schedule") / "schedule.json"
    schedule.write_text("{}")
    workload = {
        "SINERGYM_TRAINER_MODULE": "bench.workload",
        "BENCH_WORK_SECONDS": str(WORK),
        "BENCH_SCHEDULE": str(schedule),
    }
    options = Options(
        # The workload writes no heartbeat: a running experiment counts as lost only after the timeout,
        # and under these limits on a loaded machine a completion can wait minutes for its function.
        port_base=0,
        sweep_interval=5,
        heartbeat_seconds=2,
        heartbeat_timeout=900,
        boot_timeout=300,
        limits="google",
    )
    with own_cloud(tmp_path_factory.mktemp("limits-cloud"), workload, options) as cloud:
        cloud.local.set_limits(LOWERED)
        yield cloud, schedule


class Neighbour(threading.Thread):
    """Another tool of the same project: the rate quotas are the project's. In the last ten seconds
    of each of the batch's first ``minutes`` minutes it spends what is left of the read and list
    quotas (they refill when the minute turns), so that the product's calls of those seconds meet
    rateLimitExceeded however slowly the machine runs the batch. Its own refusals are counted apart."""

    def __init__(self, rt: Any, minutes: int = 2) -> None:
        super().__init__(daemon=True, name="neighbour")
        self.rt, self.minutes, self.refused = rt, minutes, 0

    def run(self) -> None:
        c, project = self.rt.clients, self.rt.settings.project
        calls = (
            lambda: c.instances.get(project=project, zone=ZONE, instance="neighbours-vm", retry=None),
            lambda: list(c.instances.list(project=project, zone=ZONE, retry=None)),
        )
        for _ in range(self.minutes):
            time.sleep((50 - time.time() % 60) % 60)  # the minute's 50th second
            for call in calls:
                for _ in range(2000):  # until the quota refuses one: it is spent
                    try:
                        call()
                    except exceptions.NotFound:
                        continue
                    except exceptions.Forbidden:
                        self.refused += 1
                        break
            time.sleep(max(0.0, 61 - time.time() % 60))  # into the next minute


def test_a_batch_under_lowered_limits_ends_whole_with_one_alert_and_nothing_left(lcloud: tuple[Cloud, Path]) -> None:
    cloud, schedule = lcloud
    rt = cloud.runtime()
    batch = make_batch(*[ppo(seed=i) for i in range(N)], max_parallel=PARALLEL)
    # The first wave ends within one second; the rest, queued, run WORK seconds each.
    schedule.write_text(json.dumps({batch.batch_id: time.time() + 45}))
    print(f"batch {batch.batch_id}: {N} experiments at max_parallel {PARALLEL} under {LOWERED}")
    neighbour = Neighbour(rt)
    publish_batch(rt, batch)
    wait_for(lambda: rt.state.read(names.launch_object(batch.batch_id)) is not None, 120, "launch")
    neighbour.start()

    def ended() -> views.BatchView | None:
        # The records only: the test's own polling must not spend the lowered Compute quota.
        try:
            info = views.batch_status(rt, batch.batch_id, with_compute=False, with_alerts=False)
        except BatchNotFound:
            return None
        return info if info.done and info.status == "finished" else None

    done = wait_for(ended, 900, f"batch {batch.batch_id} to finish", every=1.0)
    counts = {e.index: e.state for e in done.experiments}
    failed = {
        e.index: (e.state, e.reason, e.history[-3:], e.log_tail[-5:])
        for e in done.experiments
        if e.state != "succeeded"
    }
    assert sorted(counts.values()) == ["succeeded"] * N, failed
    # Nothing left: no VM, no group of the batch.
    prefix = names.instance_name(batch.group_name, batch.batch_id, 0).rsplit("-", 1)[0] + "-"
    assert [i for i in cloud.instances() if i.startswith(prefix)] == []
    assert names.mig_name(batch.group_name, batch.batch_id) not in cloud.migs()
    # One alert for the batch, its counts right.
    finished = [a for a in metrics.raised(rt.clients, batch.batch_id) if a["metric"] == "batch_finished"]
    assert len(finished) == 1 and finished[0]["labels"]["succeeded"] == str(N)
    # Nothing dead-lettered: every refusal was absorbed.
    for topic in names.FUNCTION_TOPICS.values():
        assert cloud.dead_letters(topic, wait=0.5) == [], f"{topic}: a message was dead-lettered"
    # The limits did bite.
    front = requests.get(f"{cloud.env['STORAGE_EMULATOR_HOST']}/_front/stats", timeout=10).json()
    neighbour.join()
    refused_compute = sum(cloud.emulator("calls")["refused"].values()) - neighbour.refused
    delivery_log = Path(cloud.local.log_dir / "delivery.log").read_text(errors="replace")
    refused_functions = delivery_log.count("busy: 429")
    print(
        f"refused: Compute {refused_compute} (and {neighbour.refused} of the neighbour's), functions {refused_functions}, Cloud Storage {front['refused']}"
    )
    assert refused_compute > 0 and refused_functions > 0, "the lowered limits should have refused something"
