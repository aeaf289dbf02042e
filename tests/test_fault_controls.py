"""The local cloud's controls the soak's nemesis injects faults with (tests/soak): Cloud Storage's
front answering bursts of Google's errors, the push delivery duplicating, delaying and reordering
messages, a preemption without notice, a service restarted, and what Compute's state shows of a VM
(its group's action, its creation time, the templates)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from google.api_core import exceptions

from localcloud import procs
from localcloud.delivery import FAULTS_FILE, Faults, Reorder
from sinergym_cloud.gcp.compute import ComputeApi
from tests.conftest import REPO, Cloud, new_batch_id, wait_for
from tests.test_delivery import PROJECT, Sink

ZONE = "europe-west1-b"


# ------------------------------------------------------------------------------ Cloud Storage
def test_the_front_answers_a_burst_of_googles_errors_then_serves_again(cloud: Cloud) -> None:
    front = cloud.env["STORAGE_EMULATOR_HOST"]
    listing = f"{front}/storage/v1/b/{cloud.settings.results_bucket}/o"
    assert requests.post(f"{front}/_front/faults", json={"status": 503, "count": 2}, timeout=10).json() == {
        "pending": [{"status": 503, "count": 2}]
    }
    requests.post(f"{front}/_front/faults", json={"status": 429, "count": 1}, timeout=10)
    answers = [cloud.http.get(listing, timeout=10) for _ in range(4)]
    assert [a.status_code for a in answers] == [503, 503, 429, 200]
    assert answers[0].json()["error"]["errors"][0] == {
        "message": "Backend Error", "domain": "global", "reason": "backendError",
    }  # fmt: skip
    assert answers[2].json()["error"]["errors"][0]["reason"] == "rateLimitExceeded"
    # The client library's own retry rides a burst out (a read: retried by default).
    blob = cloud.runtime().clients.storage.bucket(cloud.settings.results_bucket).blob(f"burst/{new_batch_id()}")
    blob.upload_from_string(b"x")
    requests.post(f"{front}/_front/faults", json={"status": 503, "count": 3}, timeout=10)
    assert blob.download_as_bytes() == b"x"
    assert requests.get(f"{front}/_front/stats", timeout=10).json()["refused"]["injected 503"] >= 5
    requests.post(f"{front}/_front/faults", json={"clear": True}, timeout=10)
    assert requests.post(f"{front}/_front/faults", json={"status": 418}, timeout=10).status_code == 400


# ------------------------------------------------------------------------------ push delivery
def test_delivery_faults_apply_to_their_subscription_for_their_count(tmp_path: Path) -> None:
    (tmp_path / FAULTS_FILE).write_text(json.dumps({"rules": [
        {"id": "1", "kind": "duplicate", "subscription": "cleanup-push", "count": 2},
        {"id": "2", "kind": "delay", "subscription": "*", "count": 1, "seconds": 3},
    ]}))  # fmt: skip
    faults = Faults(str(tmp_path))
    taken = [faults.take("projects/p/subscriptions/cleanup-push") for _ in range(4)]
    assert [t[0] if t else None for t in taken] == ["1", "1", "2", None]
    assert faults.take("projects/p/subscriptions/dispatch-push") is None  # the delay was used up
    # A rule added later counts from when it appears; one removed stops.
    (tmp_path / FAULTS_FILE).write_text(json.dumps({"rules": [{"id": "3", "kind": "reorder", "count": 2}]}))
    os.utime(tmp_path / FAULTS_FILE, (time.time() + 5, time.time() + 5))
    found = faults.take("projects/p/subscriptions/launch-push")
    assert found is not None and found[0] == "3" and isinstance(found[2], Reorder)


def test_a_reorder_group_lets_the_last_arrival_go_first() -> None:
    import threading

    group = Reorder(3, wait=10.0)
    order: list[int] = []
    lock = threading.Lock()

    def arrive(n: int) -> None:
        group.hold()
        with lock:
            order.append(n)

    threads = []
    for n in range(3):
        t = threading.Thread(target=arrive, args=(n,))
        t.start()
        threads.append(t)
        time.sleep(0.1)
    for t in threads:
        t.join(10)
    assert order == [2, 1, 0]


@pytest.fixture
def delivered(cloud: Cloud) -> Iterator[tuple[Sink, str, Path]]:
    """A topic whose subscription a delivery process of the test's own pushes to a Sink, with its own
    faults file (LOCALCLOUD_DIR of its own)."""
    rt = cloud.runtime()
    topic = f"t-{new_batch_id()}"
    rt.clients.publisher.create_topic(name=rt.clients.topic_path(topic))
    subscription = f"projects/{PROJECT}/subscriptions/{topic}-push"
    rt.clients.subscriber.create_subscription(
        request={"name": subscription, "topic": rt.clients.topic_path(topic), "ack_deadline_seconds": 30}
    )
    sink = Sink()
    folder = Path(os.environ.get("TMPDIR", "/tmp")) / f"faults-{topic}"
    folder.mkdir()
    process = subprocess.Popen(
        [sys.executable, "-m", "localcloud.delivery", f"--route={subscription}={sink.url}/projects/{PROJECT}/topics/{topic}"],
        env={**os.environ, **cloud.env, "LOCALCLOUD_DIR": str(folder), "LOCALCLOUD_TOKEN": cloud.local.token("pubsub")},
        cwd=REPO,
    )  # fmt: skip
    try:
        yield sink, topic, folder
    finally:
        process.terminate()
        process.wait(30)
        sink.server.shutdown()


def test_the_delivery_duplicates_delays_and_reorders_as_its_faults_file_says(
    cloud: Cloud, delivered: tuple[Sink, str, Path]
) -> None:
    sink, topic, folder = delivered
    rt = cloud.runtime()
    short = f"{topic}-push"
    rules = [
        {"id": "dup", "kind": "duplicate", "subscription": short, "count": 1},
        {"id": "late", "kind": "delay", "subscription": short, "count": 1, "seconds": 3},
        {"id": "turn", "kind": "reorder", "subscription": short, "count": 3, "seconds": 20},
    ]
    (folder / FAULTS_FILE).write_text(json.dumps({"rules": rules}))

    def ids() -> list[str]:
        return [b["message"]["messageId"] for _, b in sink.bodies]

    first = rt.clients.publish(topic, b"one")
    wait_for(lambda: ids().count(first) == 2, 30, "the message pushed twice")
    sent = time.monotonic()
    second = rt.clients.publish(topic, b"two")
    wait_for(lambda: second in ids(), 30, "the delayed message")
    assert next(t for t, b in sink.bodies if b["message"]["messageId"] == second) - sent >= 2.5
    held = []
    for word in (b"a", b"b", b"c"):
        held.append(rt.clients.publish(topic, word))
        time.sleep(0.7)
    wait_for(lambda: all(m in ids() for m in held), 30, "the held messages")
    assert [m for m in ids() if m in held] == held[::-1]


# ------------------------------------------------------------------------------------ Compute
def test_a_preemption_without_notice_kills_the_guest_at_once_and_the_group_recreates_it(cloud: Cloud) -> None:
    cloud.emulator("config", {"preempt_grace": 30.0})  # a notice would give the guest 30 s
    rt = cloud.runtime()
    api = ComputeApi(rt.clients, PROJECT)
    group = f"g-{new_batch_id()}"
    api.ensure_group(ZONE, group, "sinergym-template")
    name = f"{group}-0"
    api.create_instances(ZONE, group, {name: {"sinergym-batch-id": "x", "sinergym-experiment-index": "0"}})
    vm = wait_for(lambda: (v := cloud.instances().get(f"{ZONE}/{name}")) and v["ready"] and v, 60, "VM ready")
    assert vm["action"] == "NONE" and vm["created"] and "sinergym-template" in cloud.emulator("state")["templates"]
    since = time.time()
    cloud.emulator(f"projects/{PROJECT}/zones/{ZONE}/instances/{name}/preempt?notice=false", {})
    wait_for(lambda: procs.start_time(vm["pid"]) is None or procs.is_zombie(vm["pid"]), 5, "the guest killed at once")
    assert [e["notice"] for e in cloud.events(since, "vm.preempt")] == [False]
    again = wait_for(lambda: (v := cloud.instances().get(f"{ZONE}/{name}")) and v["ready"] and v, 60, "recreated")
    assert again["boot_id"] != vm["boot_id"]
    api.delete_instances(ZONE, group, [name])
    wait_for(lambda: (cloud.instances().get(f"{ZONE}/{name}") or {}).get("action") in ("DELETING", None), 10,
             "its deletion shown as the group's action")  # fmt: skip
    api.delete_group(ZONE, group)


# --------------------------------------------------------------------------------- restarts
def test_a_restarted_service_answers_again_on_its_port_with_its_state(cloud: Cloud) -> None:
    rt = cloud.runtime()
    bucket = rt.clients.storage.bucket(rt.settings.results_bucket)
    name = f"restart/{new_batch_id()}"
    bucket.blob(name).upload_from_string(b"kept")
    generation = bucket.get_blob(name).generation
    before = procs.PidRecord.load(cloud.local.pid_dir / "gcs.json")
    pid = cloud.local.restart("gcs")
    assert before is not None and pid != before.pid
    assert bucket.blob(name).download_as_bytes() == b"kept"  # fake-gcs-server's files outlive it
    # and so do the generations the state store's compare-and-swap rests on
    assert bucket.get_blob(name).generation == generation
    bucket.blob(name).upload_from_string(b"swapped", if_generation_match=generation)
    with pytest.raises(exceptions.PreconditionFailed):
        bucket.blob(name).upload_from_string(b"lost", if_generation_match=generation)
    cloud.local.restart("gcs-front")
    assert bucket.blob(name).download_as_bytes() == b"swapped"
    with pytest.raises(ValueError, match="no service 'nope'"):
        cloud.local.restart("nope")
    with pytest.raises(exceptions.NotFound):
        bucket.blob(f"{name}-missing").download_as_bytes()
