"""The local cloud's Pub/Sub front: a gRPC pass-through in front of Google's Pub/Sub emulator.

Every gRPC client of the local cloud (the functions, the delivery process, the trainers, the
publisher, a user's ``google-cloud-pubsub`` code) reaches Pub/Sub through ``PUBSUB_EMULATOR_HOST``,
which names this process. It forwards every method to the emulator as raw bytes, with its metadata
and deadline, and the emulator's answer (status, details and trailing metadata included) back. It
does what the emulator does not, as Pub/Sub does it:

- **subscription filters**: the emulator stores a subscription's ``filter`` and ignores it. Here a
  ``Pull`` or ``StreamingPull`` response loses the messages the subscription's filter excludes, and
  those are acknowledged on the emulator, as Pub/Sub acknowledges what it does not deliver;
- a ``CreateSubscription`` whose filter does not parse (or is over 256 bytes) is refused with
  ``INVALID_ARGUMENT``, and an ``UpdateSubscription`` that would change a filter too (a filter is
  fixed when its subscription is made).

It also holds each call to the caller's credential (identity.py: the roles infra/terraform/iam.tf
grants its account, ``PERMISSION_DENIED`` otherwise) and, with Google's limits on (limits.py), a
published message to Pub/Sub's sizes (10 MB, 100 attributes, a key 256 bytes, a value 1024 bytes;
``INVALID_ARGUMENT`` otherwise).

Everything passes through one place, ``Front.inspect``: a request before it goes upstream and a
response before it goes back, with the call (method, metadata, what earlier messages of the same
stream said). A check added there sees every call of every client. ``StreamingPull`` is the one
streaming method of Pub/Sub's API; every other method is unary.

REST clients (gcloud, the VMs' ready script) talk to the emulator directly
(``LOCALCLOUD_PUBSUB_REST_HOST``): filters are applied on the gRPC path only.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.pubsub_v1 import types

from localcloud import pubsub_filter, pubsub_permissions
from localcloud.identity import Gate
from localcloud.limits import Limits, Source

log = logging.getLogger("localcloud.pubsub_front")

SUBSCRIBER = "/google.pubsub.v1.Subscriber/"
PUBLISHER = "/google.pubsub.v1.Publisher/"
STREAMING = frozenset({f"{SUBSCRIBER}StreamingPull"})
UNLIMITED = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
# Headers gRPC sets per hop; everything else a client sends goes upstream.
HOP_HEADERS = frozenset({"grpc-timeout", "grpc-encoding", "grpc-accept-encoding", "content-type", "te", "user-agent"})


class Refused(Exception):
    """What ``inspect`` answers instead of forwarding: a gRPC status and its details."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


@dataclass
class Call:
    """One call through the front: its method, the client's metadata, and what its stream said so far."""

    method: str
    metadata: list[tuple[str, str | bytes]]
    subscription: str = ""  # a Pull's, or a StreamingPull's first request's
    notes: dict[str, Any] = field(default_factory=dict)


class Filters:
    """Each subscription's filter, read from the emulator (which stores it) once and kept."""

    def __init__(self, channel: grpc.Channel) -> None:
        self._get = channel.unary_unary(
            f"{SUBSCRIBER}GetSubscription",
            request_serializer=types.GetSubscriptionRequest.serialize,
            response_deserializer=types.Subscription.deserialize,
        )
        self._known: dict[str, pubsub_filter.Predicate | None] = {}
        self._lock = threading.Lock()

    def of(self, subscription: str) -> pubsub_filter.Predicate | None:
        """The subscription's filter, or None when it has none (or cannot be read: nothing is dropped)."""
        with self._lock:
            if subscription in self._known:
                return self._known[subscription]
        try:
            found = self._get(types.GetSubscriptionRequest(subscription=subscription), timeout=10)
        except grpc.RpcError as exc:
            log.info("%s: no filter read (%s)", subscription, exc.code())
            return None
        predicate = pubsub_filter.parse(found.filter) if found.filter.strip() else None
        with self._lock:
            self._known[subscription] = predicate
        return predicate

    def forget(self, subscription: str) -> None:
        with self._lock:
            self._known.pop(subscription, None)


def oversize(most: Limits, data: bytes, attributes: dict[str, str]) -> str:
    """Why a message is over Pub/Sub's limits ("" if it is not)."""
    size = len(data) + sum(len(k.encode()) + len(v.encode()) for k, v in attributes.items())
    if most.pubsub_message_bytes is not None and size > most.pubsub_message_bytes:
        return f"the message is {size} bytes; the maximum is {most.pubsub_message_bytes}"
    if most.pubsub_attributes is not None and len(attributes) > most.pubsub_attributes:
        return f"{len(attributes)} attributes; the maximum is {most.pubsub_attributes}"
    for key, value in attributes.items():
        if most.pubsub_attribute_key_bytes is not None and len(key.encode()) > most.pubsub_attribute_key_bytes:
            return f"the attribute key {key[:40]!r} is over {most.pubsub_attribute_key_bytes} bytes"
        if most.pubsub_attribute_value_bytes is not None and len(value.encode()) > most.pubsub_attribute_value_bytes:
            return (
                f"the value of attribute {key[:40]!r} is {len(value.encode())} bytes; "
                f"the maximum is {most.pubsub_attribute_value_bytes}"
            )
    return ""


class Front:
    def __init__(self, upstream: str) -> None:
        self.gate = Gate(service="pubsub")
        self.limits = Source()
        self.channel = grpc.insecure_channel(upstream, options=UNLIMITED)
        self.filters = Filters(self.channel)
        self._acknowledge = self.channel.unary_unary(
            f"{SUBSCRIBER}Acknowledge", request_serializer=types.AcknowledgeRequest.serialize
        )

    # ------------------------------------------------------------------ the one place to look
    def inspect(self, call: Call, outgoing: bool, raw: bytes) -> bytes | None:
        """Every request (``outgoing``) and response passes here. Returns the bytes to pass on (None:
        pass nothing on, e.g. a streamed response whose every message was filtered out), or raises
        ``Refused``."""
        name = call.method.removeprefix(SUBSCRIBER)
        if outgoing and not call.notes.get("authorized"):
            self._authorize(call, raw)
        if outgoing and call.method == f"{PUBLISHER}Publish":
            self._within_limits(types.PublishRequest.deserialize(raw))
        if outgoing:
            if name in ("Pull", "StreamingPull") and not call.subscription:
                request = (types.PullRequest if name == "Pull" else types.StreamingPullRequest).deserialize(raw)
                call.subscription = request.subscription
            elif name == "CreateSubscription":
                created = types.Subscription.deserialize(raw)
                self._check_filter(created.filter)
                self.filters.forget(created.name)
            elif name == "UpdateSubscription":
                update = types.UpdateSubscriptionRequest.deserialize(raw)
                if "filter" in update.update_mask.paths:
                    raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "a subscription's filter cannot be changed")
                self.filters.forget(update.subscription.name)
            elif name == "DeleteSubscription":
                self.filters.forget(types.DeleteSubscriptionRequest.deserialize(raw).subscription)
            return raw
        if name == "Pull":
            return self._filtered(call, raw, types.PullResponse, keep_empty=True)
        if name == "StreamingPull":
            return self._filtered(call, raw, types.StreamingPullResponse, keep_empty=False)
        return raw

    def _authorize(self, call: Call, raw: bytes) -> None:
        """The call's credential must hold what its method needs (localcloud/identity.py), else
        ``PERMISSION_DENIED``, as Pub/Sub answers. A stream is checked on its first request."""
        if not self.gate.enforced:
            return
        authorization = next((str(v) for k, v in call.metadata if k == "authorization"), None)
        for permission, resource in pubsub_permissions.needs(call.method, raw):
            decision = self.gate.check(authorization, permission, resource, call.method.rsplit("/", 1)[-1])
            if not decision.allowed:
                why = f"({permission} on {resource.full_name}: {decision.why})"
                raise Refused(grpc.StatusCode.PERMISSION_DENIED, f"User not authorized to perform this action. {why}")
        call.notes["authorized"] = True

    def _within_limits(self, request: types.PublishRequest) -> None:
        """Pub/Sub's limits on a message (limits.py), when they are on: ``INVALID_ARGUMENT`` naming it."""
        for i, message in enumerate(request.messages):
            why = oversize(self.limits.get(), message.data, dict(message.attributes))
            if why:
                raise Refused(grpc.StatusCode.INVALID_ARGUMENT, f"messages[{i}]: {why}")

    @staticmethod
    def _check_filter(text: str) -> None:
        try:
            pubsub_filter.parse(text)
        except pubsub_filter.FilterError as exc:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, f"Invalid filter expression: {exc}") from None

    def _filtered(self, call: Call, raw: bytes, kind: Any, keep_empty: bool) -> bytes | None:
        predicate = self.filters.of(call.subscription) if call.subscription else None
        if predicate is None:
            return raw
        response = kind.pb().FromString(raw)
        kept: list[Any] = []
        dropped: list[Any] = []
        for received in response.received_messages:
            (kept if predicate(dict(received.message.attributes)) else dropped).append(received)
        if not dropped:
            return raw
        self._acknowledge(
            types.AcknowledgeRequest(subscription=call.subscription, ack_ids=[r.ack_id for r in dropped]), timeout=30
        )
        log.debug("%s: %d message(s) filtered out and acknowledged", call.subscription, len(dropped))
        kept = [type(r).FromString(r.SerializeToString()) for r in kept]  # copies: the list is cleared below
        del response.received_messages[:]
        response.received_messages.extend(kept)
        out = bytes(response.SerializeToString())
        return None if not out and not keep_empty else out

    # ------------------------------------------------------------------ the pass-through
    def handler(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        method = details.method
        if method in STREAMING:
            return grpc.stream_stream_rpc_method_handler(lambda it, ctx: self.stream(method, it, ctx))
        return grpc.unary_unary_rpc_method_handler(lambda raw, ctx: self.unary(method, raw, ctx))

    @staticmethod
    def _call(method: str, context: grpc.ServicerContext) -> Call:
        metadata = [(k, v) for k, v in context.invocation_metadata() if k not in HOP_HEADERS and not k.startswith(":")]
        return Call(method, metadata)

    @staticmethod
    def _abort(context: grpc.ServicerContext, exc: BaseException) -> None:
        if isinstance(exc, Refused):
            context.abort(exc.code, exc.details)
        assert isinstance(exc, grpc.Call)
        context.set_trailing_metadata(exc.trailing_metadata() or ())
        context.abort(exc.code(), exc.details() or "")

    def unary(self, method: str, raw: bytes, context: grpc.ServicerContext) -> bytes:
        call = self._call(method, context)
        try:
            request = self.inspect(call, True, raw)
            assert request is not None, "a unary request is always passed on"
            response, upstream = self.channel.unary_unary(method).with_call(
                request, metadata=call.metadata, timeout=context.time_remaining()
            )
            context.set_trailing_metadata(upstream.trailing_metadata() or ())
            answer = self.inspect(call, False, response)
        except (Refused, grpc.RpcError) as exc:
            self._abort(context, exc)
            raise  # not reached: abort raises
        return answer if answer is not None else b""

    def stream(self, method: str, requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        call = self._call(method, context)
        refused: list[Refused] = []

        def outgoing() -> Iterator[bytes]:
            for raw in requests:
                try:
                    passed = self.inspect(call, True, raw)
                except Refused as exc:
                    refused.append(exc)
                    return
                if passed is not None:
                    yield passed

        responses = self.channel.stream_stream(method)(
            outgoing(), metadata=call.metadata, timeout=context.time_remaining()
        )
        context.add_callback(responses.cancel)
        try:
            for raw in responses:
                passed = self.inspect(call, False, raw)
                if passed is not None:
                    yield passed
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.CANCELLED and not context.is_active():
                return  # the client went away: its cancellation reached upstream through the callback
            self._abort(context, refused[0] if refused else exc)
        except Refused as exc:
            responses.cancel()
            self._abort(context, exc)
        if refused:
            self._abort(context, refused[0])


class _Generic(grpc.GenericRpcHandler):  # type: ignore[misc]  # grpc ships no type stubs
    def __init__(self, front: Front) -> None:
        self.front = front

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        return self.front.handler(handler_call_details)


def build_server(port: int, upstream: str, workers: int = 128) -> tuple[grpc.Server, int]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers), options=UNLIMITED)
    server.add_generic_rpc_handlers((_Generic(Front(upstream)),))
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    return server, bound


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="gRPC front of the Pub/Sub emulator (applies subscription filters).")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="the emulator's host:port")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    server, port = build_server(args.port, args.upstream)
    server.start()
    log.info("Pub/Sub front on 127.0.0.1:%d, upstream %s", port, args.upstream)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.stop(grace=2).wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
