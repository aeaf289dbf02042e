"""Push delivery as Pub/Sub does it (localcloud/delivery.py), against Google's Pub/Sub emulator and
a real HTTP endpoint: the envelope, concurrency beyond the emulator's two, the cloud's ack codes,
redelivery with the subscription's backoff and dead-lettering after max_delivery_attempts."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from localcloud.delivery import Window
from tests.conftest import REPO, Cloud, new_batch_id, wait_for

PROJECT = "local-project"


class Sink:
    """An endpoint that answers ``status`` after ``delay`` seconds and records what it got."""

    def __init__(self) -> None:
        self.status = 200
        self.delay = 0.0
        self.bodies: list[tuple[float, dict[str, Any]]] = []
        self.busy = 0
        self.peak = 0
        self.lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class names it
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with sink.lock:
                    sink.busy += 1
                    sink.peak = max(sink.peak, sink.busy)
                    sink.bodies.append((time.monotonic(), {"path": self.path, **body}))
                time.sleep(sink.delay)
                with sink.lock:
                    sink.busy -= 1
                self.send_response(sink.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def pushed(cloud: Cloud) -> Iterator[tuple[Sink, str, str]]:
    """A topic with a dead-letter topic, its subscription pushed to a Sink by a delivery process."""
    rt = cloud.runtime()
    topic = f"t-{new_batch_id()}"
    dead = f"{topic}-dead"
    for t in (topic, dead):
        rt.clients.publisher.create_topic(name=rt.clients.topic_path(t))
    subscription = f"projects/{PROJECT}/subscriptions/{topic}-push"
    rt.clients.subscriber.create_subscription(
        request={
            "name": subscription,
            "topic": rt.clients.topic_path(topic),
            "ack_deadline_seconds": 10,
            "retry_policy": {"minimum_backoff": {"seconds": 1}, "maximum_backoff": {"seconds": 2}},
            "dead_letter_policy": {"dead_letter_topic": rt.clients.topic_path(dead), "max_delivery_attempts": 5},
        }
    )
    rt.clients.subscriber.create_subscription(
        name=f"projects/{PROJECT}/subscriptions/{dead}-inspect", topic=rt.clients.topic_path(dead)
    )
    sink = Sink()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "localcloud.delivery",
            f"--route={subscription}={sink.url}/projects/{PROJECT}/topics/{topic}",
        ],
        env={**os.environ, **cloud.env, "LOCALCLOUD_TOKEN": cloud.local.token("pubsub")},  # Pub/Sub's own agent
        cwd=REPO,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield sink, topic, dead
    finally:
        process.terminate()
        process.wait(30)
        sink.server.shutdown()


def test_window_grows_with_successes_and_halves_on_failure() -> None:
    w = Window(16, 64)
    assert w.room(wait=0) == 16

    def push(ok: bool) -> None:
        w.acquire()
        w.release(ok)

    for _ in range(10):
        push(True)
    assert w.size == 26 and w.room(wait=0) == 26
    push(False)
    assert w.size == 16  # halved, but never below where it started
    for _ in range(100):
        push(True)
    assert w.size == 64
    for _ in range(64):
        w.acquire()
    assert w.room(wait=0.05) == 0 and w.peak == 64


def test_the_cloud_envelope_and_more_than_two_pushes_at_once(cloud: Cloud, pushed: tuple[Sink, str, str]) -> None:
    sink, topic, _ = pushed
    sink.delay = 1.0
    rt = cloud.runtime()
    ids = [rt.clients.publish(topic, f"m{i}".encode(), n=str(i)) for i in range(40)]
    wait_for(lambda: len({b["message"]["messageId"] for _, b in sink.bodies}) == 40, 120, "40 deliveries")
    # Google's emulator pushes two at a time; Pub/Sub in the cloud (and this delivery) many more.
    assert sink.peak >= 16
    _, body = next((t, b) for t, b in sink.bodies if b["message"]["messageId"] == ids[0])
    assert body["path"] == f"/projects/{PROJECT}/topics/{topic}"
    assert body["subscription"] == f"projects/{PROJECT}/subscriptions/{topic}-push"
    message = body["message"]
    assert base64.b64decode(message["data"]) == b"m0" and message["attributes"]["n"] == "0"
    assert message["message_id"] == message["messageId"] and message["publish_time"] == message["publishTime"]
    assert body["deliveryAttempt"] == 1
    time.sleep(3)  # acknowledged: nothing comes again
    assert len(sink.bodies) == 40


@pytest.mark.parametrize(("status", "acked"), [(202, True), (204, True), (404, False), (429, False)])
def test_acknowledged_only_on_the_codes_pubsub_push_takes_as_success(
    cloud: Cloud, pushed: tuple[Sink, str, str], status: int, acked: bool
) -> None:
    sink, topic, _ = pushed
    sink.status = status
    cloud.runtime().clients.publish(topic, b"x")
    wait_for(lambda: sink.bodies, 60, "the first delivery")
    time.sleep(4)  # beyond the 1-2 s backoff: a nacked message is back by now
    assert (len(sink.bodies) == 1) is acked, [b["deliveryAttempt"] for _, b in sink.bodies]


def test_failures_are_redelivered_with_backoff_then_dead_lettered(cloud: Cloud, pushed: tuple[Sink, str, str]) -> None:
    sink, topic, dead = pushed
    sink.status = 500
    rt = cloud.runtime()
    rt.clients.publish(topic, b"poison")
    wait_for(lambda: len(sink.bodies) >= 5, 120, "five delivery attempts")
    sub = f"projects/{PROJECT}/subscriptions/{dead}-inspect"
    letters = wait_for(
        lambda: rt.clients.subscriber.pull(subscription=sub, max_messages=5, timeout=10).received_messages,
        60,
        "the dead letter",
    )
    assert letters[0].message.data == b"poison"
    assert letters[0].message.attributes["CloudPubSubDeadLetterSourceDeliveryCount"] == "5"
    times = [t for t, _ in sink.bodies]
    assert [b["deliveryAttempt"] for _, b in sink.bodies] == [1, 2, 3, 4, 5]
    # The subscription's backoff (1-2 s) separates the attempts; without it they would follow at once.
    assert times[-1] - times[0] >= 3.0


def test_the_local_cloud_pushes_through_the_delivery_not_the_emulator(cloud: Cloud) -> None:
    # The functions' subscriptions carry the deployment's policies but no push endpoint: the emulator
    # (two pushes at a time, no backoff) must not push them; localcloud/delivery.py does.
    from sinergym_cloud import names

    rt = cloud.runtime()
    assert cloud.local.running().get("delivery") is True
    for function in names.FUNCTION_TOPICS:
        sub = rt.clients.subscriber.get_subscription(
            subscription=f"projects/{PROJECT}/subscriptions/{names.push_subscription(function)}"
        )
        assert sub.push_config.push_endpoint == ""
        assert sub.dead_letter_policy.max_delivery_attempts == 10
        assert sub.retry_policy.maximum_backoff.seconds > sub.retry_policy.minimum_backoff.seconds > 0
