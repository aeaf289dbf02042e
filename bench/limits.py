"""The scale figures twice, side by side: on a local cloud with no limits, and under Google's
published limits (localcloud/limits.py), for the same workloads (the bench workload, not EnergyPlus).

Per column, one local cloud (fast boots, so the figures measure the control plane under the limits,
not Compute Engine's boot times):

- launch: publish -> every VM of a 1000-experiment batch requested (queue.launch);
- the queue: 200 experiments at ``max_parallel`` 20, queued -> VM requested p95 (queue.run_queue);
- a burst: 200 experiments at once, every VM booting together (instance-ready -> trainer started
  p95), then all 200 ending within the same second (``BENCH_SCHEDULE``): end -> VM deleted p95,
  and the last end -> the batch's alert;
- what the product asked of the services, per experiment: Compute calls; the most writes one
  Cloud Storage object took within a second; the most points one Monitoring series took within
  5 s; the refusals it met (429 and 403 from Cloud Storage, Compute, Monitoring and the functions'
  instances) and how many reached a user: an experiment that did not succeed, a dead-lettered
  message, a batch that did not end cleanly (a VM or group left, not exactly one alert).

``python -m bench --only limits`` prints the side-by-side table (also as Markdown, for the README).
Figures only; nothing is asserted.
"""

from __future__ import annotations

import collections
import functools
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

from bench import queue
from bench.figures import WEEK, events, group_deleted, local_cloud, pct, row, runtime, say, wait_for
from sinergym_cloud import contracts, names

SIZE = 200
PARALLEL = 20
LAUNCH = 1000
COLUMNS = {"none": "no limits", "google": "Google's limits"}


def limits(size: int = SIZE, parallel: int = PARALLEL, launch_size: int = LAUNCH) -> list[dict[str, Any]]:
    columns = {choice: _column(choice, size, parallel, launch_size) for choice in COLUMNS}
    labels = figures(size, parallel, launch_size)
    print(markdown(columns, labels))
    rows = []
    for key, (label, unit, goal) in labels.items():
        for choice, column in COLUMNS.items():
            value = columns[choice].get(key)
            met = value == 0 if key == "user" and isinstance(value, (int, float)) else None
            rows.append(row(f"limits: {label} ({column})", value, unit, goal, met))
    return rows


def figures(size: int, parallel: int, launch_size: int) -> dict[str, tuple[str, str, str]]:
    """Each figure's key -> (its label, unit, goal)."""
    return {
        "launch": (f"launch: publish -> {launch_size} VMs requested", "s", "-"),
        "queue p95": (f"queue of {size} at {parallel}: queued -> VM requested, p95", "s", "< 1 s"),
        "makespan": (f"queue of {size} at {parallel}: makespan", "s", "-"),
        "started p95": (f"burst of {size}: instance-ready -> trainer started, p95", "s", "-"),
        "deleted p95": (f"burst of {size} ending within 1 s: end -> VM deleted, p95", "s", "-"),
        "alert": (f"burst of {size} ending within 1 s: last end -> alert", "s", "-"),
        "calls": ("Compute calls per experiment", "calls", "-"),
        "gcs peak": ("Cloud Storage writes per object per second, max", "writes", "<= 1 (Google)"),
        "monitoring peak": ("Monitoring points per series per 5 s, max", "points", "<= 1 (Google)"),
        "refusals": ("refusals received (429/403)", "", "-"),
        "user": ("of them reached a user", "", "0"),
    }


def markdown(columns: dict[str, dict[str, Any]], labels: dict[str, tuple[str, str, str]]) -> str:
    lines = ["| figure | " + " | ".join(COLUMNS.values()) + " |", "|---|" + "---|" * len(COLUMNS)]
    for figure, (label, unit, _) in labels.items():
        cells = []
        for choice in COLUMNS:
            value = columns[choice].get(figure)
            if isinstance(value, float):
                cells.append(f"{value:.3g} {unit}".strip())
            else:
                cells.append(f"{value} {unit}".strip() if value is not None else "-")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    details = {choice: columns[choice].get("refusals by kind", {}) for choice in COLUMNS}
    lines.append("")
    lines.append("refusals by kind: " + "; ".join(f"{COLUMNS[c]}: {json.dumps(d)}" for c, d in details.items()))
    return "\n".join(lines)


def _column(choice: str, size: int, parallel: int, launch_size: int) -> dict[str, Any]:
    schedule = Path(tempfile.mkdtemp(prefix="bench-schedule-")) / "schedule.json"
    schedule.write_text("{}")
    workload = {**queue.WORKLOAD, "BENCH_SCHEDULE": str(schedule)}
    got: dict[str, Any] = {}
    say(f"limits ({COLUMNS[choice]}): local cloud")
    with local_cloud(workload, limits=choice) as (cloud, env):
        rt = runtime(env)
        front = env["STORAGE_EMULATOR_HOST"]
        requests.post(f"{front}/_front/stats/reset", timeout=30).raise_for_status()
        calls_before = queue._calls(env)
        say(f"limits ({COLUMNS[choice]}): launch of {launch_size}")
        got["launch"] = queue.launch(rt, env, launch_size)
        say(f"limits ({COLUMNS[choice]}): queue of {size} at {parallel}")
        q = queue.run_queue(cloud, env, rt, size, parallel)
        got["queue p95"] = pct(q["latencies"], 0.95)
        got["makespan"] = q["makespan"]
        say(f"limits ({COLUMNS[choice]}): burst of {size}")
        # Quotas that admit the whole burst at once: the figures are about the limits on API calls.
        queue._emulator(env, {"quota_instances": 2000, "quotas": {"IN_USE_ADDRESSES": 2000}})
        burst = _burst(env, rt, size, schedule)
        got.update(burst["figures"])
        experiments = launch_size + 2 * size
        calls = queue._calls(env) - calls_before
        got["calls"] = round(sum(calls.values()) / experiments, 2)
        front_stats = requests.get(f"{front}/_front/stats", timeout=30).json()
        got["gcs peak"] = front_stats["max_writes_per_object_per_second"]
        got["monitoring peak"] = _monitoring_peak(cloud.dir / "monitoring")
        refusals = {
            "Cloud Storage 429": sum(front_stats["refused"].values()),
            "Compute 403": sum(queue._calls(env, "refused").values()),
            "Monitoring INVALID_ARGUMENT": _lines(cloud.dir / "monitoring" / "refused.jsonl"),
            "function instances 429": _delivery_refusals(cloud.dir / "logs" / "delivery.log"),
        }
        got["refusals by kind"] = refusals
        got["refusals"] = sum(refusals.values())
        dead = sum(len(cloud_dead_letters(rt, topic)) for topic in names.FUNCTION_TOPICS.values())
        unsucceeded = (size - q["succeeded"]) + (size - burst["succeeded"])
        got["user"] = dead + unsucceeded + burst["unclean"]
        say(f"limits ({COLUMNS[choice]}): {json.dumps({k: v for k, v in got.items() if k != 'refusals by kind'})}")
    return got


def _burst(env: dict[str, str], rt: Any, n: int, schedule: Path) -> dict[str, Any]:
    """``n`` experiments at once, ending together; the figures, how many succeeded, and whether the
    batch ended cleanly (no VM or group left, exactly one alert)."""
    from sinergym_cloud.contracts import Batch, Experiment
    from sinergym_cloud.gcp import metrics
    from sinergym_cloud.records import ExperimentRecord

    ready_sub = f"projects/{rt.settings.project}/subscriptions/bench-limits-ready-{int(time.time())}"
    rt.clients.subscriber.create_subscription(name=ready_sub, topic=rt.clients.topic_path(names.TOPIC_READY))
    experiment = Experiment(environment="Eplus-5zone-hot-continuous-v1", runperiod=WEEK)
    batch = Batch(batch_id=f"bench-burst-{n}-{int(time.time())}", experiments=[experiment] * n)
    end_at = time.time() + 90 + n * 0.75  # every VM is up and training by then, on two cores
    schedule.write_text(json.dumps({batch.batch_id: end_at}))
    since = time.time()
    rt.clients.publish(names.TOPIC_BATCHES, contracts.dump(batch))
    mig = names.mig_name(batch.group_name, batch.batch_id)
    wait_for(functools.partial(group_deleted, env, mig, since), 600 + 4 * n, f"burst of {n} to end")
    wait_for(functools.partial(_finished, rt, batch.batch_id), 120, f"burst of {n}: its alert")
    time.sleep(10)  # the group's last VMs stop after its deletion was asked
    evs = events(env, since)
    from bench.figures import _ready_publish_times

    published = _ready_publish_times(rt, ready_sub)
    recs = [
        ExperimentRecord.model_validate(doc.data)
        for i in range(n)
        if (doc := rt.state.read(names.experiment_object(batch.batch_id, i)))
    ]
    started = [r.running_at - published[r.boot_id] for r in recs if r.running_at and r.boot_id in published]
    gone = {e["instance"]: e["t"] for e in evs if e["kind"] == "vm.terminated" and "instance" in e}
    deleted = [gone[r.instance] - r.trainer_finished_at for r in recs if r.trainer_finished_at and r.instance in gone]
    last_end = max((r.trainer_finished_at or 0.0) for r in recs)
    alerts = [a for a in metrics.raised(rt.clients, batch.batch_id) if a["metric"] == "batch_finished"]
    alert_at = _point_received(env, batch.batch_id)
    state = requests.get(f"{env['SINERGYM_COMPUTE_ENDPOINT']}/_emulator/state", timeout=30).json()
    left = [i for i in state["instances"] if batch.batch_id[:8] in i] + [m for m in state["migs"] if m == mig]
    unclean = (1 if left else 0) + (0 if len(alerts) == 1 else 1)
    return {
        "figures": {
            "started p95": pct(started, 0.95),
            "deleted p95": pct(deleted, 0.95),
            "alert": (alert_at - last_end) if alert_at else None,
        },
        "succeeded": sum(1 for r in recs if r.state == "succeeded"),
        "unclean": unclean,
    }


def _finished(rt: Any, batch_id: str) -> bool:
    """The batch's teardown is done: its groups deleted and its alert raised."""
    from sinergym_cloud.publisher import views

    info = views.batch_status(rt, batch_id, with_compute=False, with_alerts=False)
    return info.done and info.status == "finished"


def _point_received(env: dict[str, str], batch_id: str) -> float | None:
    """When the monitoring emulator received the batch's batch-finished point (seconds since the epoch)."""
    path = Path(env["LOCALCLOUD_DIR"]) / "monitoring" / "timeseries.jsonl"
    times = [
        p["received"]
        for p in (json.loads(line) for line in path.read_text().splitlines())
        if p["metric"]["type"] == names.METRIC_BATCH_FINISHED and p["metric"]["labels"].get("batch_id") == batch_id
    ]
    return min(times) if times else None


def _monitoring_peak(folder: Path) -> int:
    """The most points any one series received within 5 s."""
    from localcloud.monitoring import series_key

    by_series: dict[str, list[float]] = collections.defaultdict(list)
    path = folder / "timeseries.jsonl"
    for line in path.read_text().splitlines() if path.exists() else []:
        point = json.loads(line)
        by_series[series_key(point)].append(point["received"])
    peak = 0
    for times in by_series.values():
        times.sort()
        start = 0
        for end, t in enumerate(times):
            while t - times[start] >= 5.0:
                start += 1
            peak = max(peak, end - start + 1)
    return peak


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def _delivery_refusals(log: Path) -> int:
    return sum(1 for line in log.read_text(errors="replace").splitlines() if "busy: 429" in line) if log.exists() else 0


def cloud_dead_letters(rt: Any, topic: str) -> list[Any]:
    """Messages dead-lettered from ``topic`` (pulled and acknowledged)."""
    sub = f"projects/{rt.settings.project}/subscriptions/{names.dead_letter_topic(topic)}-inspect"
    got: list[Any] = []
    while True:
        response = rt.clients.subscriber.pull(
            request={"subscription": sub, "max_messages": 100, "return_immediately": True}, timeout=30
        )
        if not response.received_messages:
            return got
        got += list(response.received_messages)
        rt.clients.subscriber.acknowledge(
            request={"subscription": sub, "ack_ids": [m.ack_id for m in response.received_messages]}
        )
