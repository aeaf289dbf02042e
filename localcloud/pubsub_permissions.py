"""The IAM permission each Pub/Sub method needs, and on what, as Pub/Sub checks it
(https://cloud.google.com/pubsub/docs/access-control): what the Pub/Sub front asks the identity
gate for each call (a stream's first request)."""

from __future__ import annotations

from typing import Any

from google.pubsub_v1 import types

from localcloud.iam import Resource

PUBLISHER = "/google.pubsub.v1.Publisher/"
SUBSCRIBER = "/google.pubsub.v1.Subscriber/"

Needs = list[tuple[str, Resource]]


def _topic(name: str) -> Resource:
    return Resource("topic", name.rsplit("/", 1)[-1])


def _subscription(name: str) -> Resource:
    return Resource("subscription", name.rsplit("/", 1)[-1])


# method -> (request type, the field naming the subscription, the permission)
_ON_SUBSCRIPTION: dict[str, tuple[Any, str, str]] = {
    "Pull": (types.PullRequest, "subscription", "pubsub.subscriptions.consume"),
    "StreamingPull": (types.StreamingPullRequest, "subscription", "pubsub.subscriptions.consume"),
    "Acknowledge": (types.AcknowledgeRequest, "subscription", "pubsub.subscriptions.consume"),
    "ModifyAckDeadline": (types.ModifyAckDeadlineRequest, "subscription", "pubsub.subscriptions.consume"),
    "Seek": (types.SeekRequest, "subscription", "pubsub.subscriptions.consume"),
    "GetSubscription": (types.GetSubscriptionRequest, "subscription", "pubsub.subscriptions.get"),
    "DeleteSubscription": (types.DeleteSubscriptionRequest, "subscription", "pubsub.subscriptions.delete"),
    "ModifyPushConfig": (types.ModifyPushConfigRequest, "subscription", "pubsub.subscriptions.update"),
}
_ON_TOPIC: dict[str, tuple[Any, str, str]] = {
    "Publish": (types.PublishRequest, "topic", "pubsub.topics.publish"),
    "GetTopic": (types.GetTopicRequest, "topic", "pubsub.topics.get"),
    "DeleteTopic": (types.DeleteTopicRequest, "topic", "pubsub.topics.delete"),
    "ListTopicSubscriptions": (types.ListTopicSubscriptionsRequest, "topic", "pubsub.topics.get"),
}


def needs(method: str, raw: bytes) -> Needs:  # noqa: PLR0911 - one return per kind of method
    """Every (permission, resource) a call of ``method`` with request ``raw`` needs."""
    name = method.rsplit("/", 1)[-1]
    if method.startswith(SUBSCRIBER) and name in _ON_SUBSCRIPTION:
        kind, field, permission = _ON_SUBSCRIPTION[name]
        return [(permission, _subscription(getattr(kind.deserialize(raw), field)))]
    if method.startswith(PUBLISHER) and name in _ON_TOPIC:
        kind, field, permission = _ON_TOPIC[name]
        return [(permission, _topic(getattr(kind.deserialize(raw), field)))]
    if name == "CreateTopic":
        return [("pubsub.topics.create", Resource("project"))]
    if name == "ListTopics":
        return [("pubsub.topics.list", Resource("project"))]
    if name == "ListSubscriptions":
        return [("pubsub.subscriptions.list", Resource("project"))]
    if name == "CreateSubscription":
        created = types.Subscription.deserialize(raw)
        return [
            ("pubsub.subscriptions.create", Resource("project")),
            ("pubsub.topics.attachSubscription", _topic(created.topic)),
        ]
    if name == "UpdateSubscription":
        update = types.UpdateSubscriptionRequest.deserialize(raw)
        return [("pubsub.subscriptions.update", _subscription(update.subscription.name))]
    if name == "UpdateTopic":
        return [("pubsub.topics.update", _topic(types.UpdateTopicRequest.deserialize(raw).topic.name))]
    return [(f"pubsub.{name}", Resource("project"))]  # snapshots, schemas: not the product's
