"""Operating batches end to end, as a user and another team's service do it, through the real CLI:
``list``, ``logs`` (``--follow`` too), ``retry``, the ``batch-events`` topic read by a subscriber with a
filter, a malformed batch refused with an event, and the alerts' text.

The VMs run the bench workload (bench/workload.py: the trainer's stand-in towards the control
plane, started by the same VM agent under the same log shipper), one experiment of three failing as
a trainer fails (a traceback, a failed completion). Everything else is real: Pub/Sub (through the
local cloud's front, which applies the subscription's filter), the functions, Compute, the bucket,
Monitoring. One test runs the real trainer failing, on the session's cloud.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest

from localcloud.cloud import Options
from sinergym_cloud import names
from sinergym_cloud.contracts import Experiment, event_schema
from sinergym_cloud.gcp.runtime import Runtime
from tests.conftest import REPO, Cloud, new_batch_id, own_cloud, wait_for
from tests.control_helpers import WEEK, make_batch, ppo, publish_batch, wait_batch

WORK = 20.0  # seconds each experiment "trains": long enough to follow its log while it does, on a loaded machine too
PROJECT = "local-project"


@pytest.fixture(scope="module")
def ocloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    workload = {
        "SINERGYM_TRAINER_MODULE": "bench.workload",
        "BENCH_WORK_SECONDS": str(WORK),
        "BENCH_FAIL": "[1]",  # experiment 1 of a batch fails, as a trainer does (a retry's 0 succeeds)
        "SINERGYM_LOG_CHUNK_SECONDS": "2",
    }
    options = Options(port_base=0, sweep_interval=0, heartbeat_seconds=2, heartbeat_timeout=120, boot_timeout=120,
                      strict=True)  # fmt: skip
    with own_cloud(tmp_path_factory.mktemp("operations-cloud"), workload, options) as cloud:
        yield cloud


def cli(cloud: Cloud, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``python publisher.py ARGS`` against the cloud, as a user runs it with .local/env sourced."""
    env = {**os.environ, **cloud.env, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, str(REPO / "publisher.py"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )


def subscribe(rt: Runtime, name: str, filter_: str = "") -> str:
    path = f"projects/{PROJECT}/subscriptions/{name}"
    rt.clients.subscriber.create_subscription(
        request={"name": path, "topic": rt.clients.topic_path(names.TOPIC_EVENTS), "filter": filter_}
    )
    return path


def drain(
    rt: Runtime, sub: str, quiet: float = 3.0, timeout: float = 60.0
) -> list[tuple[dict[str, Any], dict[str, str]]]:
    """Every message of ``sub`` until none came for ``quiet`` seconds: (body, attributes), acknowledged."""
    got: list[tuple[dict[str, Any], dict[str, str]]] = []
    last = time.monotonic()
    deadline = time.monotonic() + timeout
    while time.monotonic() - last < quiet and time.monotonic() < deadline:
        response = rt.clients.subscriber.pull(
            request={"subscription": sub, "max_messages": 100, "return_immediately": True}, timeout=10
        )
        if response.received_messages:
            last = time.monotonic()
            got += [(json.loads(m.message.data), dict(m.message.attributes)) for m in response.received_messages]
            rt.clients.subscriber.acknowledge(
                request={"subscription": sub, "ack_ids": [m.ack_id for m in response.received_messages]}
            )
        else:
            time.sleep(0.3)
    return got


class Follower:
    """``logs BATCH INDEX --follow`` in its own process; every line it printed, with when."""

    def __init__(self, cloud: Cloud, batch_id: str, index: int) -> None:
        env = {**os.environ, **cloud.env}
        self.process = subprocess.Popen(
            [sys.executable, str(REPO / "publisher.py"), "logs", batch_id, str(index), "--follow"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        self.lines: list[tuple[float, str]] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append((time.time(), line.rstrip("\n")))

    def wait(self, timeout: float) -> int:
        code = self.process.wait(timeout)
        self.reader.join(10)
        return code


def test_a_week_of_operations_list_logs_retry_events_and_alerts(ocloud: Cloud) -> None:
    rt = ocloud.runtime()
    finished_sub = subscribe(rt, f"finished-{new_batch_id()}", 'attributes.event = "batch.finished"')
    every_sub = subscribe(rt, f"every-{new_batch_id()}")
    batch = make_batch(*(ppo(seed=s) for s in range(3)), submitted_by="alice")
    bid = batch.batch_id
    publish_batch(rt, batch)
    wait_batch(rt, bid, 120, until="launched")

    # While it runs: it is listed as running; a retry is refused with the reason; its log streams.
    running = json.loads(cli(ocloud, "list", "--json", "--state", "running").stdout)
    assert [b["batch_id"] for b in running if b["batch_id"] == bid] == [bid]
    refused = cli(ocloud, "retry", bid, "--failed")
    assert refused.returncode == 2 and "still has experiments that have not ended" in refused.stderr, refused.stderr
    follower = Follower(ocloud, bid, 0)
    info = wait_batch(rt, bid, 300)
    assert follower.wait(90) == 0
    ended_at = info["experiments"][0]["finished_at"]
    streamed = [(at, line) for at, line in follower.lines if line.startswith("workload: second")]
    assert streamed, follower.lines
    assert streamed[0][0] < ended_at - 2, "the log streamed while the experiment trained, not only at its end"
    assert any("workload: experiment 0 succeeded" in line for _, line in follower.lines), follower.lines
    assert any("startup: sshd listens" in line for _, line in follower.lines), "the VM's startup log comes first"

    # After: the batch is listed with its counts, by its sender, with its VM-hours and MLflow experiment.
    listed = {b["batch_id"]: b for b in json.loads(cli(ocloud, "list", "--json").stdout)}
    line = listed[bid]
    assert line["state"] == "ended" and line["counts"] == {"succeeded": 2, "failed": 1}, line
    assert line["submitted_by"] == "alice" and line["vm_hours"] > 0 and line["mlflow_experiment"].endswith(bid)
    assert bid not in {b["batch_id"] for b in json.loads(cli(ocloud, "list", "--json", "--state", "running").stdout)}
    table = cli(ocloud, "list").stdout
    assert bid in table and "2 succeeded, 1 failed" in table

    # The failed experiment's log, read after its VM is gone: the traceback.
    failed_vm = info["experiments"][1]["instance"]
    wait_for(lambda: not any(k.endswith(f"/{failed_vm}") for k in ocloud.instances()), 60, "the failed VM gone")
    log = cli(ocloud, "logs", bid, "1")
    assert log.returncode == 0, log.stderr
    assert "Traceback (most recent call last)" in log.stdout
    assert "RuntimeError: the workload of experiment 1 failed on purpose" in log.stdout
    status = cli(ocloud, "status", bid)
    assert "#1 failed: RuntimeError: the workload of experiment 1 failed on purpose" in " ".join(status.stdout.split())
    assert f"python publisher.py retry {bid} --failed" in " ".join(status.stdout.split())

    # A subscriber with a filter on batch.finished gets exactly one message, valid, with the counts.
    finished = drain(rt, finished_sub)
    assert len(finished) == 1, finished
    body, attributes = finished[0]
    jsonschema.validate(body, event_schema())
    assert attributes["event"] == "batch.finished" and attributes["batch_id"] == bid
    assert body["counts"] == {"succeeded": 2, "failed": 1} and body["experiments"] == 3
    assert body["output_prefix"] == f"gs://{ocloud.settings.results_bucket}/{bid}/" and body["vm_hours"] > 0
    assert [(f["index"], f["reason"]) for f in body["failures"]] == [
        (1, "RuntimeError: the workload of experiment 1 failed on purpose")
    ]
    assert body["mlflow"]["experiment"].endswith(bid)
    # Every state change of every experiment, each valid against the schema.
    events = sorted(((b, a) for b, a in drain(rt, every_sub) if a.get("batch_id") == bid), key=lambda e: e[0]["time"])
    for b, _ in events:
        jsonschema.validate(b, event_schema())
    states = {i: [b["state"] for b, a in events if a.get("experiment_index") == str(i)] for i in range(3)}
    assert states == {0: ["requested", "running", "succeeded"], 1: ["requested", "running", "failed"],
                      2: ["requested", "running", "succeeded"]}, states  # fmt: skip
    failed_event = next(b for b, a in events if a.get("state") == "failed")
    assert failed_event["reason"].startswith("RuntimeError") and failed_event["vm_hours"] > 0

    # The alerts: the batch's end names the failure and what to run; the failure rate paged at once.
    def incidents() -> dict[str, dict[str, Any]]:
        found = {}
        for alert in ocloud.alerts():
            incident = alert["incident"]
            if incident["metric"]["labels"].get("batch_id") == bid and incident["state"] == "open":
                found[incident["policy_name"]] = incident
        return found

    raised = wait_for(lambda: (i := incidents()) and len(i) >= 3 and i, 30, "three alerts")
    done = raised["Sinergym batch finished"]["documentation"]["content"]
    assert "2 succeeded, 1 failed, 0 cancelled" in done
    assert "#1 RuntimeError: the workload of experiment 1 failed on purpose" in done
    assert f"python publisher.py retry {bid} --failed" in done and f"python publisher.py logs {bid}" in done
    assert "VM-hours" in done and "USD" in done
    links = raised["Sinergym batch finished"]["documentation"]["links"]
    assert any(f"labels.batch_id%3D%22{bid}%22" in link["url"] for link in links)
    failing = raised["Sinergym batch failing"]["documentation"]["content"]
    assert "1 of its 3 experiments (33%) have failed" in failing
    one = raised["Sinergym experiment failed"]["documentation"]["content"]
    assert "failed on purpose" in one and f"python publisher.py logs {bid} 1" in one

    # Rerun the failed one: a new batch of one experiment, linked to the old one, printed as a submission.
    retried = cli(ocloud, "retry", bid, "--failed")
    assert retried.returncode == 0, retried.stderr
    new_id = f"{bid}-r1"
    assert f"batch {new_id}: 1 experiment(s) submitted (a retry of batch {bid}, experiment(s) 1)" in retried.stdout
    again = wait_batch(rt, new_id, 300)
    assert [e["state"] for e in again["experiments"]] == ["succeeded"]
    assert again["retry_of"] == {"batch_id": bid, "experiments": [1]}
    assert again["experiments"][0]["seed"] == 1, "the same configuration, its own seed"
    listed = {b["batch_id"]: b for b in json.loads(cli(ocloud, "list", "--json").stdout)}
    assert listed[new_id]["retry_of"] == bid


def test_a_malformed_batch_published_straight_to_pubsub_is_announced_rejected(ocloud: Cloud) -> None:
    rt = ocloud.runtime()
    rejected_sub = subscribe(rt, f"rejected-{new_batch_id()}", 'attributes.event = "batch.rejected"')
    bad = {"batch_id": "from-a-service-1", "experiments": [{"environment": "Eplus-5zone-hot-continuous-v1",
                                                             "algorithm": "NOPE"}]}  # fmt: skip
    rt.clients.publish(names.TOPIC_BATCHES, json.dumps(bad).encode())
    got = wait_for(lambda: drain(rt, rejected_sub, quiet=2.0), 60, "the batch.rejected event")
    assert len(got) == 1, got
    body, attributes = got[0]
    jsonschema.validate(body, event_schema())
    assert attributes["batch_id"] == "from-a-service-1" and body["batch_id"] == "from-a-service-1"
    assert [e["field"] for e in body["errors"]] == ["experiments.0.algorithm"]
    assert "experiments.0.algorithm" in body["reason"]
    dead = ocloud.dead_letters(names.TOPIC_BATCHES)
    assert any(json.loads(d["data"]).get("batch_id") == "from-a-service-1" for d in dead), "still dead-lettered"
    assert rt.state.read(names.launch_object("from-a-service-1")) is None, "nothing was made for it"


@pytest.mark.slow
def test_the_real_trainer_failing_its_traceback_in_logs_and_status(cloud: Cloud) -> None:
    """The real trainer (Sinergym + EnergyPlus): NormalizedLinearReward does not take the 5-zone
    building's reward arguments, so the trainer fails as it builds the environment."""
    rt = cloud.runtime()
    experiment = Experiment(
        environment="Eplus-5zone-hot-continuous-v1", runperiod=WEEK, reward="NormalizedLinearReward"
    )
    batch = make_batch(experiment)
    publish_batch(rt, batch)
    info = wait_batch(rt, batch.batch_id, 600)
    assert [e["state"] for e in info["experiments"]] == ["failed"], info["experiments"]
    assert info["experiments"][0]["reason"].startswith("TypeError")
    log = cli(cloud, "logs", batch.batch_id, "0")
    assert "Traceback (most recent call last)" in log.stdout and "TypeError" in log.stdout, log.stdout[-3000:]
    assert "startup: sshd listens" in log.stdout
    status = " ".join(cli(cloud, "status", batch.batch_id).stdout.split())
    assert "#0 failed: TypeError" in status
