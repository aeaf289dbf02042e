"""What a local cloud is: its fixed names (project, buckets, functions), the settings of its
subscriptions as infra/terraform deploys them, its ports, and the ``Options`` a caller chooses."""

from __future__ import annotations

import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from localcloud.ports import free_port

REPO = Path(__file__).resolve().parent.parent
PROJECT = "local-project"
STATE_BUCKET = "sinergym-state"
RESULTS_BUCKET = "experiments-storage"
FUNCTIONS = ("launch", "dispatch", "cleanup", "sweeper")
# Push request deadline (the subscription's ack deadline) per function, in seconds.
ACK_DEADLINES = {"launch": 120, "dispatch": 180, "cleanup": 120, "sweeper": 300}
# Redelivery backoff of the functions' subscriptions, (min, max) seconds: infra/terraform deploys
# 10 s to 600 s (modules/function retry_backoff_seconds) and 10 attempts (functions.max_delivery_attempts).
# The gce profile uses those (times LOCALCLOUD_SCALE); the fast one 1 s to 30 s, so that tests of
# redelivery take seconds.
RETRY_BACKOFF = {"fast": (1, 30), "gce": (10, 600)}
MAX_DELIVERY_ATTEMPTS = 10
STOP_ORDER = (
    "scheduler", "delivery", "fn-launch", "fn-dispatch", "fn-cleanup", "fn-sweeper", "compute", "pubsub-front"
)  # fmt: skip
SERVICE_ORDER = (
    "pubsub",
    "pubsub-front",
    "gcs",
    "gcs-front",
    "mlflow",
    "monitoring",
    "compute",
    *(f"fn-{f}" for f in FUNCTIONS),
    "scheduler",
)
# "pubsub" is what PUBSUB_EMULATOR_HOST names: the gRPC front (pubsub_front.py); the emulator
# itself listens on "pubsub-emulator" (REST clients such as gcloud talk to it there).
PORT_OFFSETS = {
    "pubsub": 0,
    "gcs-front": 1,  # what every client is pointed at (STORAGE_EMULATOR_HOST)
    "pubsub-emulator": 6,
    "compute": 2,
    "monitoring": 3,
    "mlflow": 4,
    "gcs": 5,  # fake-gcs-server, behind the front
    "fn-launch": 10,
    "fn-dispatch": 11,
    "fn-cleanup": 12,
    "fn-sweeper": 13,
}
DEFAULT_PORT_BASE = 18080
FUNCTION_SLOTS = 20  # requests a function serves at once: infra/terraform's functions.max_instances
VENV_BIN = Path(sys.executable).parent


def choose_ports(base: int | None) -> dict[str, int]:
    """Ports per service: ``base + offset``, or free ports picked at random when ``base`` is 0."""
    if base == 0:
        return {name: free_port() for name in PORT_OFFSETS}
    base = DEFAULT_PORT_BASE if base is None else base
    ports = {name: base + offset for name, offset in PORT_OFFSETS.items()}
    for name in PORT_OFFSETS:
        override = os.environ.get(f"LOCALCLOUD_PORT_{name.upper().replace('-', '_')}")
        if override:
            ports[name] = int(override)
    return ports


@dataclass
class Options:
    """How a local cloud is set up. Every field has an environment variable (see ``from_env``)."""

    port_base: int | None = None  # None: 18080; 0: pick free ports
    sweep_interval: float = 60.0  # seconds between sweeper ticks; 0 disables the scheduler
    webhook: str | None = None  # also POST alerts here
    boot_delay: float = 0.0  # simulated VM boot time
    heartbeat_seconds: float = 10.0  # trainer heartbeat period
    heartbeat_timeout: float = 120.0  # sweeper: a trainer silent this long is dead
    boot_timeout: float = 300.0  # sweeper: a VM not ready this long after creation is broken
    profile: str = "fast"  # Compute Engine's timings: "fast", or "gce" (Google's; see profiles.py)
    scale: float = 1.0  # the gce profile's times are multiplied by this
    strict: bool = False  # the Compute emulator checks each response against the discovery document
    # Google's published limits (limits.py): "google" or "none"; None: google under the gce profile,
    # none under the fast one (LOCALCLOUD_LIMITS).
    limits: str | None = field(default_factory=lambda: os.environ.get("LOCALCLOUD_LIMITS") or None)
    # Identities (localcloud/identity.py): "enforce" the roles of infra/terraform/iam.tf, "audit" them
    # (record what each call would need, refuse nothing), or "off" (LOCALCLOUD_IAM).
    iam: str = field(default_factory=lambda: os.environ.get("LOCALCLOUD_IAM") or "enforce")
    # Test-only: more environment for the function processes (e.g. a PYTHONPATH whose sitecustomize
    # breaks one step on purpose, to show that the soak's checker sees it). No environment variable.
    function_env: dict[str, str] = field(default_factory=dict)

    @property
    def limits_choice(self) -> str:
        return self.limits or ("google" if self.profile == "gce" else "none")

    @classmethod
    def from_env(cls) -> Options:
        env = os.environ
        base = env.get("LOCALCLOUD_PORT_BASE")
        return cls(
            port_base=int(base) if base else None,
            sweep_interval=float(env.get("LOCALCLOUD_SWEEP_INTERVAL", 60)),
            webhook=env.get("LOCALCLOUD_ALERT_WEBHOOK") or None,
            boot_delay=float(env.get("LOCALCLOUD_BOOT_DELAY", 0)),
            heartbeat_seconds=float(env.get("LOCALCLOUD_HEARTBEAT_SECONDS", 10)),
            heartbeat_timeout=float(env.get("LOCALCLOUD_HEARTBEAT_TIMEOUT", 120)),
            boot_timeout=float(env.get("LOCALCLOUD_BOOT_TIMEOUT", 300)),
            profile=env.get("LOCALCLOUD_PROFILE", "fast") or "fast",
            scale=float(env.get("LOCALCLOUD_SCALE", 1) or 1),
            strict=env.get("LOCALCLOUD_STRICT", "") not in ("", "0", "false"),
            limits=env.get("LOCALCLOUD_LIMITS") or None,
            iam=env.get("LOCALCLOUD_IAM") or "enforce",
        )


def default_state_dir() -> Path:
    return Path(os.environ.get("LOCALCLOUD_DIR", REPO / ".local")).resolve()


def as_dict(options: Options) -> dict[str, Any]:
    return asdict(options)
