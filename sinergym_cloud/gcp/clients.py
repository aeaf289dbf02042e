"""The one place that builds Google clients, for Google Cloud or for the local cloud.

Clients are built lazily and once per ``Clients`` object, and each Google library is imported only
when its first client is built: the trainer, which publishes and uploads, never pays the 1.3 s that
importing ``compute_v1`` costs. Core code receives clients as arguments,
so the functions, the publisher and the tests share the same construction. Against the local
cloud every client gets the emulator's endpoint and this component's local credential
(``LOCALCLOUD_TOKEN``, a bearer token the emulators' fronts check against iam.tf: a header on HTTP,
call metadata on gRPC), or anonymous credentials without one; against Google Cloud, the default
credentials of the environment. A VM's storage client may use its experiment's downscoped token
instead (``SINERGYM_STORAGE_TOKEN_FILE``, gcp/tokens.py), on both clouds.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from sinergym_cloud.config import Settings

if TYPE_CHECKING:
    import grpc
    from google.cloud import compute_v1, monitoring_v3, pubsub_v1, storage  # type: ignore[attr-defined]  # pubsub_v1: see below

# Pub/Sub messages reach 10 MB: gRPC's default 4 MB receive limit would refuse some (Google's own
# channels are unlimited; emulator channels are built here).
GRPC_OPTIONS = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
# One Publish request carries at most 1000 messages and 10 MB (Pub/Sub's quotas); kept under both.
PUBLISH_MAX_MESSAGES = 1000
PUBLISH_MAX_BYTES = 9 * 1024 * 1024


def _anonymous() -> Any:
    from google.auth.credentials import AnonymousCredentials

    return AnonymousCredentials()


def _local_credentials(token: str | None) -> Any:
    """The local cloud's credential: a bearer token that never expires, or anonymous without one."""
    if not token:
        return _anonymous()
    from google.oauth2.credentials import Credentials

    return Credentials(token=token)


def _channel(host: str, options: list[tuple[str, int]] | None = None, token: str | None = None) -> grpc.Channel:
    """An insecure channel to a local emulator that sends ``token`` as every call's credential."""
    import grpc

    channel = grpc.insecure_channel(host, options=options)
    return grpc.intercept_channel(channel, _Bearer(token)) if token else channel


def _bearer_interceptor_base() -> tuple[type, ...]:
    import grpc

    return (grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor, grpc.StreamStreamClientInterceptor)


class _Bearer(*_bearer_interceptor_base()):  # type: ignore[misc]  # grpc's interceptor bases, imported lazily
    """Adds ``authorization: Bearer <token>`` to every call (what Google's channels add from credentials)."""

    def __init__(self, token: str) -> None:
        self.header = ("authorization", f"Bearer {token}")

    def _details(self, details: Any) -> Any:
        metadata = [*(details.metadata or []), self.header]
        return details._replace(metadata=metadata)

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)


class Clients:
    """Lazily built Google clients for one target."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    # Pub/Sub ---------------------------------------------------------------
    @functools.cached_property
    def publisher(self) -> pubsub_v1.PublisherClient:
        from google.cloud import pubsub_v1  # type: ignore[attr-defined]  # the package declares no such name to mypy

        host = self.settings.pubsub_emulator
        if host:
            from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport

            transport = PublisherGrpcTransport(channel=_channel(host, GRPC_OPTIONS, self.settings.local_token))
            return pubsub_v1.PublisherClient(transport=transport)
        return pubsub_v1.PublisherClient()

    @functools.cached_property
    def subscriber(self) -> pubsub_v1.SubscriberClient:
        from google.cloud import pubsub_v1  # type: ignore[attr-defined]  # the package declares no such name to mypy

        host = self.settings.pubsub_emulator
        if host:
            from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcTransport

            transport = SubscriberGrpcTransport(channel=_channel(host, GRPC_OPTIONS, self.settings.local_token))
            return pubsub_v1.SubscriberClient(transport=transport)
        return pubsub_v1.SubscriberClient()

    def open_publisher(self, timeout: float = 10.0) -> bool:
        """Build the publisher and connect its channel now (gRPC connects on the first call
        otherwise), so that a message sent later, a VM's completion above all, goes out at once.
        True if the channel is ready; False (nothing raised) if it is not within ``timeout``: the
        first publish then connects, as it would have anyway."""
        import grpc

        try:
            grpc.channel_ready_future(self.publisher.transport.grpc_channel).result(timeout=timeout)
        except (grpc.FutureTimeoutError, AttributeError):  # AttributeError: not a gRPC transport
            return False
        return True

    def topic_path(self, topic: str) -> str:
        return f"projects/{self.settings.project}/topics/{topic}"

    def publish(self, topic: str, data: bytes, timeout: float = 30.0, **attributes: str) -> str:
        """Publish one message and wait (with a deadline) until Pub/Sub has it. Returns its id.

        One ``Publish`` call from the caller's thread (the GAPIC method, with its retry policy),
        not the client's batching ``publish``: every caller waits for the id anyway, and batching
        would only add its timer (10 ms) and a thread's hand-off to each message, the hand-off
        that keeps a VM's completion waiting while the VM's CPU is busy."""
        from google.pubsub_v1 import PubsubMessage
        from google.pubsub_v1.services.publisher.client import PublisherClient

        message = PubsubMessage(data=data, attributes=attributes)
        response = PublisherClient.publish(
            self.publisher, topic=self.topic_path(topic), messages=[message], timeout=timeout
        )
        return str(response.message_ids[0])

    def publish_many(
        self, topic: str, messages: list[tuple[bytes, dict[str, str]]], timeout: float = 30.0
    ) -> list[str]:
        """Publish several messages in as few ``Publish`` calls as Pub/Sub takes (at most 1000
        messages and 10 MB a request); the message ids, in order."""
        from google.pubsub_v1 import PubsubMessage
        from google.pubsub_v1.services.publisher.client import PublisherClient

        ids: list[str] = []
        batch: list[PubsubMessage] = []
        size = 0

        def send() -> None:
            if batch:
                response = PublisherClient.publish(
                    self.publisher, topic=self.topic_path(topic), messages=list(batch), timeout=timeout
                )
                ids.extend(str(i) for i in response.message_ids)
                batch.clear()

        for data, attributes in messages:
            weight = len(data) + sum(len(k) + len(v) for k, v in attributes.items())
            if len(batch) >= PUBLISH_MAX_MESSAGES or size + weight > PUBLISH_MAX_BYTES:
                send()
                size = 0
            batch.append(PubsubMessage(data=data, attributes=attributes))
            size += weight
        send()
        return ids

    # Cloud Storage -----------------------------------------------------------
    @functools.cached_property
    def storage(self) -> storage.Client:
        from google.cloud import storage

        endpoint = self.settings.storage_endpoint
        credentials = None
        if self.settings.storage_token_file:  # a VM: its experiment's downscoped token, on both clouds
            from sinergym_cloud.gcp import tokens

            credentials = tokens.file_credentials(self.settings.storage_token_file)
        if endpoint:
            return storage.Client(
                project=self.settings.project,
                credentials=credentials or _local_credentials(self.settings.local_token),
                client_options={"api_endpoint": endpoint},
            )
        return storage.Client(project=self.settings.project, credentials=credentials)

    # Compute Engine ----------------------------------------------------------
    def _compute_kwargs(self) -> dict[str, Any]:
        endpoint = self.settings.compute_endpoint
        if endpoint:
            return {
                "credentials": _local_credentials(self.settings.local_token),
                "client_options": {"api_endpoint": endpoint},
                "transport": "rest",
            }
        return {"transport": "rest"}

    @functools.cached_property
    def migs(self) -> compute_v1.InstanceGroupManagersClient:
        from google.cloud import compute_v1

        return compute_v1.InstanceGroupManagersClient(**self._compute_kwargs())

    @functools.cached_property
    def instances(self) -> compute_v1.InstancesClient:
        from google.cloud import compute_v1

        return compute_v1.InstancesClient(**self._compute_kwargs())

    @functools.cached_property
    def templates(self) -> compute_v1.InstanceTemplatesClient:
        from google.cloud import compute_v1

        return compute_v1.InstanceTemplatesClient(**self._compute_kwargs())

    @functools.cached_property
    def zone_operations(self) -> compute_v1.ZoneOperationsClient:
        from google.cloud import compute_v1

        return compute_v1.ZoneOperationsClient(**self._compute_kwargs())

    @functools.cached_property
    def global_operations(self) -> compute_v1.GlobalOperationsClient:
        from google.cloud import compute_v1

        return compute_v1.GlobalOperationsClient(**self._compute_kwargs())

    @functools.cached_property
    def regions(self) -> compute_v1.RegionsClient:
        from google.cloud import compute_v1

        return compute_v1.RegionsClient(**self._compute_kwargs())

    @functools.cached_property
    def machine_types(self) -> compute_v1.MachineTypesClient:
        from google.cloud import compute_v1

        return compute_v1.MachineTypesClient(**self._compute_kwargs())

    # Cloud Monitoring --------------------------------------------------------
    @functools.cached_property
    def metrics(self) -> monitoring_v3.MetricServiceClient:
        from google.cloud import monitoring_v3

        host = self.settings.monitoring_endpoint
        if host:
            from google.cloud.monitoring_v3.services.metric_service.transports import MetricServiceGrpcTransport

            channel = _channel(host, token=self.settings.local_token)
            return monitoring_v3.MetricServiceClient(transport=MetricServiceGrpcTransport(channel=channel))
        return monitoring_v3.MetricServiceClient()

    @functools.cached_property
    def alert_policies(self) -> monitoring_v3.AlertPolicyServiceClient:
        from google.cloud import monitoring_v3

        host = self.settings.monitoring_endpoint
        if host:
            from google.cloud.monitoring_v3.services.alert_policy_service.transports import (
                AlertPolicyServiceGrpcTransport,
            )

            return monitoring_v3.AlertPolicyServiceClient(
                transport=AlertPolicyServiceGrpcTransport(channel=_channel(host, token=self.settings.local_token))
            )
        return monitoring_v3.AlertPolicyServiceClient()
