"""Where the system runs: Google Cloud, or the local cloud. Read from the environment, once.

The same variables drive both targets. On Google Cloud only ``GOOGLE_CLOUD_PROJECT`` and the
bucket names are needed (credentials come from the environment, as always with Google's clients).
On the local cloud, ``make local-up`` writes ``.local/env`` with the emulator endpoints: the
standard ``PUBSUB_EMULATOR_HOST``, ``STORAGE_EMULATOR_HOST`` and ``MLFLOW_TRACKING_URI``, and this
project's own ``SINERGYM_COMPUTE_ENDPOINT`` and ``SINERGYM_MONITORING_ENDPOINT``.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_ZONE = "europe-west1-b"
DEFAULT_TEMPLATE = "sinergym-template"
DEFAULT_GROUP = "sinergym-group"
LOCAL_PROJECT = "local-project"


@dataclass(frozen=True)
class Settings:
    project: str
    pubsub_emulator: str | None = None  # host:port
    storage_endpoint: str | None = None  # http://host:port
    compute_endpoint: str | None = None  # http://host:port
    monitoring_endpoint: str | None = None  # host:port (insecure gRPC)
    mlflow_uri: str | None = None
    state_bucket: str = ""
    results_bucket: str = ""
    ssh_user: str = "sinergym"
    ssh_key_file: str | None = None
    ssh_key_secret: str | None = None  # projects/P/secrets/S/versions/V
    # The deployment secret dispatch and cleanup derive completion and checkpoint keys from (signing.py).
    control_secret_file: str | None = None
    control_secret: str | None = None  # projects/P/secrets/S/versions/V
    vm_agent: tuple[str, ...] = ("sinergym-vm",)
    # The local cloud's credential of this component's service account (LOCALCLOUD_TOKEN: a bearer
    # token its fronts check against infra/terraform/iam.tf); on Google Cloud, the environment's
    # default credentials are used instead.
    local_token: str | None = None
    # A file holding the Cloud Storage token of this VM's experiment (dispatch hands it over SSH and
    # refreshes it): the trainer's storage client uses it instead of the VM's own account.
    storage_token_file: str | None = None
    max_preemptions: int = 3
    max_failures: int = 0
    heartbeat_timeout: float = 600.0
    boot_timeout: float = 900.0
    # A VM its zone cannot create this long (ZONE_RESOURCE_POOL_EXHAUSTED) moves to the batch's next zone.
    zone_failover_seconds: float = 300.0
    # A spot VM preempted this often in one zone moves to the batch's next zone (0: never).
    zone_failover_preemptions: int = 2
    # A VM creation refused for quota this long is a lower parallelism, not a passing moment (a VM
    # being deleted still holds its quota until it is gone, and the group retries by itself).
    quota_grace: float = 60.0
    max_runtime_hours: float = 48.0
    call_deadline: float = 30.0  # retries of one external call stop here (well inside the ack deadline)
    # ... and sooner once Compute's per-minute rate quota refused the call: None waits call_deadline.
    # The functions wait 5 s (runtime.get): a function instance waiting out a quota for half a
    # minute keeps other messages out, and each 429 they meet spends one of their delivery attempts.
    rate_limit_wait: float | None = None
    # A batch whose failed experiments pass this share of all its experiments pages on-call at once
    # (the batch_failing metric, once per batch); 1 or more: never.
    failure_rate_threshold: float = 0.25
    # What one VM-hour costs (USD), for the estimated cost in the alerts and the batch.finished event:
    # the template's machine type at its price (default: a spot e2-standard-2 in europe-west1, roughly).
    vm_hour_price: float = 0.025

    @property
    def local(self) -> bool:
        """True when every Google service is an emulator."""
        return bool(self.pubsub_emulator and self.storage_endpoint and self.compute_endpoint)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        project = env.get("GOOGLE_CLOUD_PROJECT") or env.get("GCP_PROJECT") or env.get("CLOUDSDK_CORE_PROJECT")
        if not project:
            raise RuntimeError(
                "no project: set GOOGLE_CLOUD_PROJECT, or source .local/env to use the local cloud (make local-up)"
            )
        storage = env.get("STORAGE_EMULATOR_HOST")
        if storage and not storage.startswith("http"):
            storage = f"http://{storage}"
        return cls(
            project=project,
            pubsub_emulator=env.get("PUBSUB_EMULATOR_HOST") or None,
            storage_endpoint=storage or None,
            compute_endpoint=env.get("SINERGYM_COMPUTE_ENDPOINT") or None,
            monitoring_endpoint=env.get("SINERGYM_MONITORING_ENDPOINT") or None,
            mlflow_uri=env.get("MLFLOW_TRACKING_URI") or None,
            state_bucket=env.get("SINERGYM_STATE_BUCKET") or f"{project}-sinergym-state",
            results_bucket=env.get("SINERGYM_RESULTS_BUCKET") or f"{project}-sinergym-results",
            ssh_user=env.get("SINERGYM_SSH_USER", "sinergym"),
            ssh_key_file=env.get("SINERGYM_SSH_KEY_FILE") or None,
            ssh_key_secret=env.get("SINERGYM_SSH_KEY_SECRET") or None,
            control_secret_file=env.get("SINERGYM_CONTROL_SECRET_FILE") or None,
            control_secret=env.get("SINERGYM_CONTROL_SECRET") or None,
            vm_agent=tuple(shlex.split(env.get("SINERGYM_VM_AGENT", "sinergym-vm"))),
            local_token=env.get("LOCALCLOUD_TOKEN") or None,
            storage_token_file=env.get("SINERGYM_STORAGE_TOKEN_FILE") or None,
            max_preemptions=int(env.get("SINERGYM_MAX_PREEMPTIONS", 3)),
            max_failures=int(env.get("SINERGYM_MAX_FAILURES", 0)),
            heartbeat_timeout=float(env.get("SINERGYM_HEARTBEAT_TIMEOUT", 600)),
            boot_timeout=float(env.get("SINERGYM_BOOT_TIMEOUT", 900)),
            zone_failover_seconds=float(env.get("SINERGYM_ZONE_FAILOVER_SECONDS", 300)),
            zone_failover_preemptions=int(env.get("SINERGYM_ZONE_FAILOVER_PREEMPTIONS", 2)),
            quota_grace=float(env.get("SINERGYM_QUOTA_GRACE", 60)),
            max_runtime_hours=float(env.get("SINERGYM_MAX_RUNTIME_HOURS", 48)),
            call_deadline=float(env.get("SINERGYM_CALL_DEADLINE", 30)),
            rate_limit_wait=float(env["SINERGYM_RATE_LIMIT_WAIT"]) if env.get("SINERGYM_RATE_LIMIT_WAIT") else None,
            failure_rate_threshold=float(env.get("SINERGYM_FAILURE_RATE_THRESHOLD", 0.25)),
            vm_hour_price=float(env.get("SINERGYM_VM_HOUR_PRICE", 0.025)),
        )


def read_env_file(path: Path) -> dict[str, str]:
    """The variables of a shell-sourceable ``export K=V`` file such as ``.local/env``."""
    values: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.removeprefix("export ").partition("=")
        if sep:
            parts = shlex.split(value)
            values[key.strip()] = parts[0] if parts else ""
    return values
