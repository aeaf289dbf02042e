"""Google's published limits, as the local cloud enforces them: one table, one switch.

``LOCALCLOUD_LIMITS=google`` (the default under ``LOCALCLOUD_PROFILE=gce``) makes every emulator
refuse what the real service refuses, in the real service's shape, so that the product's own
client libraries' retry logic is what reacts; ``none`` (the default of the fast profile) enforces
nothing. The values below are Google's published figures; each names its source. Tests lower them
to trip a limit in a second: ``LocalCloud.set_limits({...})`` writes ``<state dir>/limits.json``,
which every service reads again when it changes.

Where each limit is enforced, in the path the product's own clients use:

- Cloud Storage: ``gcs_front.py``, in front of fake-gcs-server (``STORAGE_EMULATOR_HOST`` points at
  it), answers 429 ``rateLimitExceeded``;
- Compute Engine: ``compute/server.py`` (the emulator itself), 403 ``rateLimitExceeded`` per quota
  group and minute, and a zonal group's size;
- Cloud Monitoring: ``monitoring.py``, ``INVALID_ARGUMENT``;
- Cloud Functions: ``delivery.py`` (the local push that plays Eventarc and Cloud Run's front end):
  instances per function, one request per instance, cold starts, the event function timeout;
- Pub/Sub: the message and attribute sizes, where the local cloud's Pub/Sub front checks them.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CHOICES = ("google", "none")
FILE = "limits.json"


@dataclass(frozen=True)
class Limits:
    """Each limit, or None where it is not enforced."""

    # Cloud Storage, https://cloud.google.com/storage/quotas ("Maximum rate of writes to the same
    # object name: one write per second"; faster writes get 429). Every mutation of an object
    # counts: an upload, a metadata update, a delete, a copy, rewrite or compose to it. A write
    # refused here does not count.
    gcs_object_writes_per_second: float | None = 1.0
    gcs_object_write_burst: int = 1
    # https://cloud.google.com/storage/docs/request-rate: a bucket starts at about 1,000 object
    # writes and 5,000 object reads per second and ramps up gradually from there.
    gcs_bucket_writes_per_second: float | None = 1000.0
    gcs_bucket_reads_per_second: float | None = 5000.0
    # Compute Engine, https://cloud.google.com/compute/api-quota: per project, per quota group, per
    # minute, in intervals synchronized on the minute (a quota spent at 10:00:15 refills at
    # 10:01:00); over it, 403 with the reason rateLimitExceeded. The groups' published defaults.
    compute_requests_per_minute: dict[str, int] | None = field(
        default_factory=lambda: {
            "read_requests": 1500,  # *.get, getGuestAttributes
            "list_requests": 1500,  # *.list, *.aggregatedList, listManagedInstances, listErrors
            "operation_read_requests": 1500,  # zoneOperations/globalOperations get and wait
            "default": 1500,  # every mutation: insert, delete, createInstances, deleteInstances, ...
        }
    )
    # https://cloud.google.com/compute/docs/instance-groups#limitations: a zonal managed instance
    # group holds at most 1,000 VMs.
    mig_max_instances: int | None = 1000
    # Cloud Monitoring, https://cloud.google.com/monitoring/quotas: one point per time series per
    # 5 s ("points were written more frequently than the maximum sampling period"), at most 200
    # time series per CreateTimeSeries request; both INVALID_ARGUMENT.
    monitoring_seconds_between_points: float | None = 5.0
    monitoring_series_per_request: int | None = 200
    # Cloud Functions (2nd gen, on Cloud Run), https://cloud.google.com/functions/quotas and
    # https://cloud.google.com/run/docs/configuring/max-instances-limits: the deployment's
    # max_instance_count (infra/terraform: functions.max_instances, 20; Google's default 100), one
    # request per instance (max_instance_request_concurrency = 1), 540 s at most for an event
    # function, and a new instance pays a cold start. A push that finds every instance busy is
    # answered 429 and Pub/Sub redelivers it with the subscription's backoff.
    function_max_instances: int | None = 20
    function_concurrency: int = 1
    function_timeout_seconds: float | None = 540.0
    function_cold_start_seconds: tuple[float, float] | None = (1.0, 3.0)
    function_idle_seconds: float = 900.0  # an idle instance is kept about 15 minutes
    # How long Cloud Run holds a request while every instance is busy before it answers 429: not a
    # published figure (Cloud Run queues requests briefly while it scales); the local cloud's choice.
    function_pending_seconds: float = 10.0
    # Pub/Sub, https://cloud.google.com/pubsub/quotas#resource_limits: a message (data and
    # attributes) at most 10 MB, at most 100 attributes, a key at most 256 bytes, a value 1024.
    pubsub_message_bytes: int | None = 10_000_000
    pubsub_attributes: int | None = 100
    pubsub_attribute_key_bytes: int | None = 256
    pubsub_attribute_value_bytes: int | None = 1024

    @property
    def enforced(self) -> bool:
        return self != NONE

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Limits:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown limit(s) {', '.join(unknown)}: known ones are {', '.join(sorted(known))}")
        values = dict(data)
        if isinstance(values.get("function_cold_start_seconds"), list):
            values["function_cold_start_seconds"] = tuple(values["function_cold_start_seconds"])
        return cls(**values)

    def with_(self, **changes: Any) -> Limits:
        """These limits with some changed (a test lowering one to trip it quickly)."""
        return replace(self, **changes)


GOOGLE = Limits()
NONE = Limits(
    gcs_object_writes_per_second=None,
    gcs_bucket_writes_per_second=None,
    gcs_bucket_reads_per_second=None,
    compute_requests_per_minute=None,
    mig_max_instances=None,
    monitoring_seconds_between_points=None,
    monitoring_series_per_request=None,
    function_max_instances=None,
    function_timeout_seconds=None,
    function_cold_start_seconds=None,
    pubsub_message_bytes=None,
    pubsub_attributes=None,
    pubsub_attribute_key_bytes=None,
    pubsub_attribute_value_bytes=None,
)


def named(choice: str) -> Limits:
    if choice == "google":
        return GOOGLE
    if choice == "none":
        return NONE
    raise ValueError(f"unknown LOCALCLOUD_LIMITS {choice!r}: choose one of {', '.join(CHOICES)}")


def default_choice(profile: str) -> str:
    """``LOCALCLOUD_LIMITS``, else Google's limits under the gce profile and none under the fast one."""
    return os.environ.get("LOCALCLOUD_LIMITS") or ("google" if profile == "gce" else "none")


def write(state_dir: Path, limits: Limits) -> None:
    """Make ``limits`` the local cloud's (every service reads the file again when it changes)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    tmp = state_dir / f".{FILE}.{os.getpid()}"
    tmp.write_text(json.dumps(limits.to_json(), indent=2))
    tmp.replace(state_dir / FILE)


class Source:
    """The limits in force, read from ``<LOCALCLOUD_DIR>/limits.json`` when the file changes (a
    service of the local cloud asks on every request; one ``stat`` when nothing changed)."""

    def __init__(self, state_dir: Path | None = None) -> None:
        base = state_dir or (Path(os.environ["LOCALCLOUD_DIR"]) if os.environ.get("LOCALCLOUD_DIR") else None)
        self.path = base / FILE if base else None
        self._lock = threading.Lock()
        self._seen: tuple[float, int] | None = None
        self._limits = NONE

    def get(self) -> Limits:
        if self.path is None:
            return self._limits
        try:
            stat = self.path.stat()
        except OSError:
            return self._limits
        key = (stat.st_mtime, stat.st_size)
        with self._lock:
            if key != self._seen:
                try:
                    self._limits = Limits.from_json(json.loads(self.path.read_text()))
                    self._seen = key
                except (OSError, ValueError) as exc:
                    log.warning("limits: cannot read %s (%s); keeping the previous ones", self.path, exc)
            return self._limits
