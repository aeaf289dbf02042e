"""The local cloud's Pub/Sub front (localcloud/pubsub_front.py), driven by Google's own client as a
subscriber drives it: filters applied on Pull and StreamingPull, excluded messages acknowledged on the
emulator, bad filters refused with INVALID_ARGUMENT, and everything else passed through as it is."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import requests
from google.api_core import exceptions
from google.protobuf import field_mask_pb2

from sinergym_cloud.gcp.runtime import Runtime
from tests.conftest import Cloud, new_batch_id, wait_for

PROJECT = "local-project"


@pytest.fixture
def topic(rt: Runtime) -> Iterator[str]:
    name = f"front-{new_batch_id()}"
    rt.clients.publisher.create_topic(name=rt.clients.topic_path(name))
    yield name
    rt.clients.publisher.delete_topic(topic=rt.clients.topic_path(name))


def subscription(rt: Runtime, topic: str, name: str, filter_: str = "") -> str:
    path = f"projects/{PROJECT}/subscriptions/{topic}-{name}"
    rt.clients.subscriber.create_subscription(
        request={"name": path, "topic": rt.clients.topic_path(topic), "filter": filter_, "ack_deadline_seconds": 30}
    )
    return path


def publish_mixed(rt: Runtime, topic: str) -> None:
    for n, event in enumerate(("experiment.state_changed", "batch.finished", "experiment.state_changed", "other")):
        rt.clients.publish(topic, f"m{n}".encode(), event=event, n=str(n))


def pull_all(rt: Runtime, sub: str, want: int, timeout: float = 20) -> list[dict[str, str]]:
    got: list[dict[str, str]] = []

    def more() -> bool:
        response = rt.clients.subscriber.pull(request={"subscription": sub, "max_messages": 50}, timeout=5)
        got.extend(dict(m.message.attributes) for m in response.received_messages)
        if response.received_messages:
            rt.clients.subscriber.acknowledge(
                request={"subscription": sub, "ack_ids": [m.ack_id for m in response.received_messages]}
            )
        return len(got) >= want

    wait_for(more, timeout, f"{want} message(s) on {sub}", every=0.2)
    return got


def test_pull_delivers_only_what_the_filter_admits(rt: Runtime, topic: str) -> None:
    everything = subscription(rt, topic, "all")
    finished = subscription(rt, topic, "finished", 'attributes.event = "batch.finished"')
    experiments = subscription(
        rt, topic, "exp", 'hasPrefix(attributes.event, "experiment.") AND NOT attributes.n = "2"'
    )
    publish_mixed(rt, topic)
    assert sorted(a["n"] for a in pull_all(rt, everything, 4)) == ["0", "1", "2", "3"]
    assert [a["n"] for a in pull_all(rt, finished, 1)] == ["1"]
    assert [a["n"] for a in pull_all(rt, experiments, 1)] == ["0"]
    time.sleep(1)  # nothing else comes: the excluded ones were acknowledged, not left to be redelivered
    for sub in (finished, experiments):
        response = rt.clients.subscriber.pull(
            request={"subscription": sub, "max_messages": 50, "return_immediately": True}, timeout=5
        )
        assert not response.received_messages


def test_streaming_pull_delivers_only_what_the_filter_admits(rt: Runtime, topic: str) -> None:
    finished = subscription(rt, topic, "stream", 'attributes.event = "batch.finished"')
    got: list[dict[str, str]] = []
    lock = threading.Lock()

    def received(message: object) -> None:
        with lock:
            got.append(dict(message.attributes))  # type: ignore[attr-defined]
        message.ack()  # type: ignore[attr-defined]

    future = rt.clients.subscriber.subscribe(finished, received)
    try:
        publish_mixed(rt, topic)
        publish_mixed(rt, topic)
        wait_for(lambda: len(got) >= 2, 30, "two batch.finished messages")
        time.sleep(1.5)
    finally:
        future.cancel()
    assert [a["event"] for a in got] == ["batch.finished", "batch.finished"]


def test_excluded_messages_are_acknowledged_on_the_emulator(cloud: Cloud, rt: Runtime, topic: str) -> None:
    """Seen from the emulator's own REST API (which bypasses the front): once the front has pulled
    through the filter, the excluded messages are gone and only the admitted one is leased."""
    sub = subscription(rt, topic, "acked", 'attributes.event = "batch.finished"')
    publish_mixed(rt, topic)
    leased = wait_for(
        lambda: (
            rt.clients.subscriber.pull(request={"subscription": sub, "max_messages": 50}, timeout=5).received_messages
        ),
        20,
        "the admitted message",
    )
    assert [m.message.attributes["n"] for m in leased] == ["1"]
    rest = f"http://{cloud.env['LOCALCLOUD_PUBSUB_REST_HOST']}/v1/{sub}:pull"
    direct = requests.post(rest, json={"maxMessages": 50, "returnImmediately": True}, timeout=10).json()
    assert not direct.get("receivedMessages"), direct
    rt.clients.subscriber.modify_ack_deadline(
        request={"subscription": sub, "ack_ids": [leased[0].ack_id], "ack_deadline_seconds": 0}
    )

    def released() -> list[dict[str, object]]:
        body = requests.post(rest, json={"maxMessages": 50, "returnImmediately": True}, timeout=10).json()
        return list(body.get("receivedMessages", []))

    again = wait_for(released, 20, "the released message, straight from the emulator")
    assert [m["message"]["attributes"]["n"] for m in again] == ["1"]


def test_a_bad_filter_is_refused_and_a_filter_cannot_be_changed(rt: Runtime, topic: str) -> None:
    path = f"projects/{PROJECT}/subscriptions/{topic}-bad"
    with pytest.raises(exceptions.InvalidArgument, match="expected string"):
        rt.clients.subscriber.create_subscription(
            request={"name": path, "topic": rt.clients.topic_path(topic), "filter": "attributes.x = unquoted"}
        )
    with pytest.raises(exceptions.NotFound):  # nothing was created
        rt.clients.subscriber.get_subscription(subscription=path)
    sub = subscription(rt, topic, "fixed", "attributes:x")
    with pytest.raises(exceptions.InvalidArgument, match="cannot be changed"):
        rt.clients.subscriber.update_subscription(
            request={
                "subscription": {"name": sub, "topic": rt.clients.topic_path(topic), "filter": "attributes:y"},
                "update_mask": field_mask_pb2.FieldMask(paths=["filter"]),
            }
        )
    assert rt.clients.subscriber.get_subscription(subscription=sub).filter == "attributes:x"


def test_errors_and_answers_pass_through_unchanged(rt: Runtime, topic: str) -> None:
    with pytest.raises(exceptions.NotFound):
        rt.clients.subscriber.get_subscription(subscription=f"projects/{PROJECT}/subscriptions/none-{topic}")
    with pytest.raises(exceptions.AlreadyExists):
        rt.clients.publisher.create_topic(name=rt.clients.topic_path(topic))
    big = b"x" * (5 * 1024 * 1024)  # over gRPC's 4 MB default, under Pub/Sub's 10 MB
    sub = subscription(rt, topic, "big")
    rt.clients.publish(topic, big, event="big")
    response = wait_for(
        lambda: (
            rt.clients.subscriber.pull(request={"subscription": sub, "max_messages": 1}, timeout=10).received_messages
        ),
        20,
        "the 5 MB message",
    )
    assert response[0].message.data == big
