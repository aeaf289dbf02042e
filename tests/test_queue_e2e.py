"""The queue's end-to-end tests (a quota, a quota error at run time, a budget) on a local cloud whose VMs run the bench workload.

The workload (bench/workload.py) is started on each VM by the same VM agent from the same
TrainerSpec as the trainer, and publishes the same signed Completion after ``WORK`` seconds; the
control plane cannot tell it from a trainer. It stands in for the real one-week trainer because six
EnergyPlus simulations two at a time, three times over (quota, run-time quota, budget), would take
far longer than the rest of the suite on two cores. Everything else is real: Pub/Sub push
deliveries (at least once), the functions, the sweeper on its scheduler tick, Compute's quota.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from rich.console import Console

from localcloud.cloud import Options
from sinergym_cloud import names
from sinergym_cloud.control import batches
from sinergym_cloud.publisher import render, report, views
from sinergym_cloud.publisher.arguments import EXIT_FAILED
from sinergym_cloud.records import LIVE
from tests.conftest import Cloud, own_cloud, wait_for
from tests.control_helpers import ZONE, make_batch, ppo, publish_batch, wait_batch

WORK = 30.0  # seconds each experiment "trains": long enough that the queued wait far passes BOOT_TIMEOUT
# The sweeper's: a VM asked for and not ready this long is lost. Lowered from 300 s, but still well
# above a local VM's boot on a loaded machine (a few seconds, twice that with the load doubled).
BOOT_TIMEOUT = 30.0
QUOTA_GRACE = 2.0  # the sweeper's: a quota refusal this long lowers the parallelism


@pytest.fixture(scope="module")
def wcloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    workload = {
        "SINERGYM_TRAINER_MODULE": "bench.workload",
        "BENCH_WORK_SECONDS": str(WORK),
        "SINERGYM_QUOTA_GRACE": str(QUOTA_GRACE),
    }
    options = Options(
        port_base=0,
        sweep_interval=1,
        heartbeat_seconds=2,
        heartbeat_timeout=120,  # the workload sends no heartbeat
        boot_timeout=BOOT_TIMEOUT,
        strict=True,
    )
    with own_cloud(tmp_path_factory.mktemp("workload-cloud"), workload, options) as cloud:
        yield cloud


@pytest.fixture
def quota(wcloud: Cloud) -> Iterator[Any]:
    """Set the emulator's regional instance quota for one test; put it back after."""
    yield lambda n: wcloud.emulator("config", {"quota_instances": n})
    wcloud.emulator("config", {"quota_instances": 200})


class Sampler:
    """Samples, throughout a batch, the VMs Compute holds for it and its experiments' states."""

    def __init__(self, cloud: Cloud, batch_id: str, group: str) -> None:
        self.cloud, self.batch_id = cloud, batch_id
        self.prefix = names.instance_name(group, batch_id, 0).rsplit("-", 1)[0] + "-"
        self.vms: list[int] = []
        self.live: list[int] = []
        self.queued: list[int] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.rt = cloud.runtime()

    def run(self) -> None:
        while not self.stop.is_set():
            instances = self.cloud.instances()
            self.vms.append(
                sum(
                    1
                    for k, v in instances.items()
                    if k.split("/", 1)[1].startswith(self.prefix) and v["status"] != "TERMINATED"
                )
            )
            states = list(batches.experiment_states(self.rt, self.batch_id).values())
            self.live.append(sum(1 for s in states if s in LIVE))
            self.queued.append(states.count("queued"))
            time.sleep(0.2)

    def __enter__(self) -> Sampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)


def leaks(cloud: Cloud, batch_id: str, group: str) -> list[str]:
    prefix = names.instance_name(group, batch_id, 0).rsplit("-", 1)[0]
    vms = [k for k in cloud.instances() if k.split("/", 1)[1].startswith(prefix)]
    groups = [k for k in cloud.migs() if k.endswith(names.mig_name(group, batch_id))]
    return vms + groups


def records(cloud: Cloud, batch_id: str) -> list[dict[str, Any]]:
    rt = cloud.runtime()
    out = []
    for i in sorted(batches.experiment_states(rt, batch_id)):
        doc = rt.state.read(names.experiment_object(batch_id, i))
        assert doc is not None
        out.append(doc.data)
    return out


def test_six_experiments_on_a_quota_of_two_vms_all_succeed_queued_meanwhile(
    wcloud: Cloud, quota: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    quota(2)
    rt = wcloud.runtime()
    batch = make_batch(*(ppo(seed=i) for i in range(6)), max_parallel=2)
    since = time.time()
    with Sampler(wcloud, batch.batch_id, batch.group_name) as sampled:
        publish_batch(rt, batch)
        wait_batch(rt, batch.batch_id, 60, until="launched")
        # While they wait: queued in status (JSON and text), in the --wait table, and in the report.
        shown = views.batch_status(rt, batch.batch_id, with_alerts=False)
        assert [e.state for e in shown.experiments].count("queued") >= 3
        assert any(n.startswith("4 queued: at most 2 at once (max_parallel 2)") for n in shown.limit_notes), shown
        console = Console(file=io.StringIO(), width=120)
        render.render_status(shown, console)
        text = console.file.getvalue()
        assert "queued" in text and "4 queued: at most 2 at once" in text, text
        assert render.wait(rt, batch.batch_id, timeout=1) == EXIT_FAILED  # gives up waiting: the batch goes on
        table = capsys.readouterr().out
        assert table.count("queued") >= 3 and "at most 2 at once" in table
        info, rows = report.gather(rt, batch.batch_id)
        waiting = [r for r in rows if r.state == "queued"]
        assert waiting and all(r.vm_hours == 0 for r in waiting), "a queued experiment costs nothing"
        assert 'class="state queued"' in report.render(info, rows, {}, None)
        done = wait_batch(rt, batch.batch_id, 600)
    assert [e["state"] for e in done["experiments"]] == ["succeeded"] * 6, done["experiments"]
    assert max(sampled.vms) <= 2, f"at most 2 VMs alive at once, sampled {sampled.vms}"
    assert max(sampled.live) <= 2 and max(sampled.queued) >= 3
    assert max(sampled.vms) == 2, "both VMs of the quota were used"

    recs = records(wcloud, batch.batch_id)
    # Queued experiments waited far longer than boot_timeout and were never timed out for it.
    waited = sorted((r["started_at"] or r["created_at"]) - r["created_at"] for r in recs)
    assert waited[-1] > 2 * BOOT_TIMEOUT, waited
    retried = {
        r["index"]: [(round(h["at"] - since, 1), h["event"], h["detail"][:120]) for h in r["history"]]
        for r in recs
        if r["attempts"] != 1 or r["preemptions"] != 0
    }
    assert not retried, f"experiments retried (their history, in seconds since publish): {retried}"
    # Each ending started at most one queued experiment, and each queued one was started once:
    # Pub/Sub delivers each completion at least once, and every VM was asked for exactly once.
    starters = [r["started_by"] for r in recs]
    assert starters[:2] == ["launch", "launch"] and len(set(starters[2:])) == 4, starters
    asked = [i for e in wcloud.events(since, "mig.createInstances") for i in e.get("instances", [])]
    mine = [i for i in asked if i.startswith(sampled.prefix)]
    assert sorted(mine) == sorted(r["instance"] for r in recs), asked
    wait_for(lambda: not leaks(wcloud, batch.batch_id, batch.group_name), 60, "no VM or group left")


def test_a_quota_error_at_run_time_lowers_the_parallelism_and_fails_nothing(wcloud: Cloud, quota: Any) -> None:
    quota(2)  # the batch asks for 3 at once; Compute has room for 2
    # Launch reads the quotas and would start only 2: here it cannot read them (a deployment whose
    # service account lacks compute.regions.get, say), so it starts max_parallel's 3 and Compute
    # refuses the third VM at run time.
    wcloud.emulator("faults", {"method": "regions.get", "code": 403, "reason": "forbidden", "times": 50})
    rt = wcloud.runtime()
    batch = make_batch(*(ppo(seed=i) for i in range(5)), max_parallel=3)
    with Sampler(wcloud, batch.batch_id, batch.group_name) as sampled:
        publish_batch(rt, batch)
        wait_batch(rt, batch.batch_id, 60, until="launched")
        wcloud.emulator("faults", {"clear": True})
        assert rt.state.read(names.launch_object(batch.batch_id)).data["parallelism"] == 3

        def lowered() -> views.BatchView | None:
            info = views.batch_status(rt, batch.batch_id, with_alerts=False)
            return info if info.limits["parallelism_lowered"] else None

        info = wait_for(lowered, 60, "the parallelism lowered")
        note = next(n for n in info.limit_notes if n.startswith("running"))
        assert note.startswith("running 2 of 3 at once: quota INSTANCES exceeded at "), note
        done = wait_batch(rt, batch.batch_id, 600)
    assert [e["state"] for e in done["experiments"]] == ["succeeded"] * 5, done["experiments"]
    assert done["limits"]["parallelism"] == 2 and done["limits"]["parallelism_launched"] == 3
    recs = records(wcloud, batch.batch_id)
    assert any(h["event"] == "requeued" for r in recs for h in r["history"]), "one went back to the queue"
    assert all(r["failures"] == 0 and r["preemptions"] == 0 for r in recs)
    assert max(sampled.vms) <= 2
    wait_for(lambda: not leaks(wcloud, batch.batch_id, batch.group_name), 60, "no VM or group left")


def test_a_budget_reached_cancels_the_rest_with_the_reason_and_the_alert_says_so(wcloud: Cloud) -> None:
    from sinergym_cloud import budget

    rt = wcloud.runtime()
    small, big = ppo(seed=1), ppo(seed=2, episodes=400)
    one, large = budget.estimate_vm_hours(small), budget.estimate_vm_hours(big)
    # Room for the two small ones of the first wave, and never for a big one: whether the other
    # small one still runs when the first ends is a race of two completions, so the test does not
    # rest on it.
    limit = 2 * one + 0.01
    assert large > limit
    batch = make_batch(small, small, big, big, max_parallel=2, max_vm_hours=limit)
    publish_batch(rt, batch)
    done = wait_batch(rt, batch.batch_id, 300)
    states = [e["state"] for e in done["experiments"]]
    assert states == ["succeeded", "succeeded", "cancelled", "cancelled"], done["experiments"]
    for e in done["experiments"][2:]:
        assert e["reason"].startswith("budget: starting it would pass the batch's"), e["reason"]
        assert e["attempts"] == 0
    assert done["limits"]["budget_reached"].startswith("budget")
    assert any("budget of" in n and "reached" in n for n in done["limit_notes"])

    def alerted() -> list[str]:
        docs = [a["incident"]["documentation"] for a in wcloud.alerts()]
        return [d["content"] for d in docs if f"Batch `{batch.batch_id}`" in d["content"]]

    text = wait_for(alerted, 30, "the batch-finished alert")[0]
    assert "2 succeeded, 0 failed, 2 cancelled" in text and "VM-hour budget" in text, text
    # Nothing leaks: no VM was ever asked for the cancelled ones, the group is gone.
    never = {r["instance"] for r in records(wcloud, batch.batch_id)[2:]}
    asked = {i for e in wcloud.events(0, "mig.createInstances") for i in e.get("instances", [])}
    assert not never & asked
    wait_for(lambda: not leaks(wcloud, batch.batch_id, batch.group_name), 60, "no VM or group left")
    assert f"{ZONE}/{names.mig_name(batch.group_name, batch.batch_id)}" not in wcloud.migs()
