"""Decoding Pub/Sub CloudEvents and the two kinds of error.

Cloud Functions (2nd gen) receive a Pub/Sub message as a CloudEvent whose data is
``{"message": {"data": <base64>, "attributes": {...}, "messageId": ..., "publishTime": ...},
"subscription": ...}``; functions-framework turns the emulator's push requests into the same.

Errors are of two kinds. Transient ones (a service briefly unavailable, a lost race) propagate:
the function fails, Pub/Sub redelivers the message later. Permanent ones (a message that can
never be processed) are logged with the reason, published to the topic's dead-letter topic with
the reason attached, and the message is acknowledged, so it is never retried forever.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sinergym_cloud import errors, names
from sinergym_cloud.contracts import check_size
from sinergym_cloud.errors import BadMessage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Delivery:
    message_id: str
    data: bytes
    attributes: dict[str, str] = field(default_factory=dict)
    publish_time: str = ""
    attempt: int | None = None


def delivery(cloud_event: Any) -> Delivery:
    """The Pub/Sub message inside a CloudEvent."""
    body = cloud_event.data if hasattr(cloud_event, "data") else cloud_event
    if not isinstance(body, dict) or not isinstance(body.get("message"), dict):
        raise BadMessage("the event carries no Pub/Sub message")
    message = body["message"]
    try:
        data = base64.b64decode(message.get("data") or "", validate=True)
    except (binascii.Error, ValueError):
        raise BadMessage("message data is not valid base64") from None
    attempt = body.get("deliveryAttempt") or message.get("deliveryAttempt")
    return Delivery(
        message_id=str(message.get("messageId") or message.get("message_id") or ""),
        data=data,
        attributes=dict(message.get("attributes") or {}),
        publish_time=str(message.get("publishTime") or ""),
        attempt=int(attempt) if attempt else None,
    )


def dead_letter(publish: Callable[..., str], topic: str, d: Delivery, reason: str) -> None:
    """Publish the original message to ``<topic>-dead-letter`` with why it was rejected."""
    attributes = {k: v for k, v in d.attributes.items() if not k.startswith("dead_letter_")}
    attributes.update(
        dead_letter_reason=reason[:1000],
        dead_letter_source_topic=topic,
        dead_letter_message_id=d.message_id,
    )
    try:
        publish(names.dead_letter_topic(topic), d.data, **attributes)
    except Exception:
        # Losing the dead letter must not turn a permanent error into an endless redelivery.
        log.exception("could not publish to %s", names.dead_letter_topic(topic))


def handle(cloud_event: Any, topic: str, handler: Callable[[Delivery], None], publish: Callable[..., str]) -> None:
    """Run ``handler`` on the event's message, with the permanent/transient error policy."""
    try:
        d = delivery(cloud_event)
    except BadMessage as exc:
        log.error("rejected an event on %s: %s", topic, exc)
        return
    if names.PROBE_ATTRIBUTE in d.attributes:
        log.info("probe %s on %s from %s: acknowledged", d.message_id, topic, d.attributes[names.PROBE_ATTRIBUTE])
        return
    try:
        check_size(d.data)  # on every topic, before anything decodes the body
        handler(d)
    except Exception as exc:
        if errors.classify(exc) != "permanent":
            raise  # transient or unknown: Pub/Sub redelivers, and dead-letters after max_delivery_attempts
        log.error("rejected message %s on %s: %s", d.message_id, topic, exc)
        dead_letter(publish, topic, d, str(exc))
    except (RecursionError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        # A decoding failure is never transient: redelivering the same bytes fails the same way.
        reason = f"message could not be decoded: {type(exc).__name__}"
        log.error("rejected message %s on %s: %s", d.message_id, topic, reason)
        dead_letter(publish, topic, d, reason)
