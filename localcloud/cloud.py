"""The local cloud: every Google service the project uses, on 127.0.0.1, under one directory.

``LocalCloud(state_dir).up()`` starts, all at once, then waits for each to answer (readiness is
checked, never slept for):

====================  ==============================================================
pubsub                Google's Pub/Sub emulator (Java), behind ``pubsub-front``
pubsub-front          the gRPC front PUBSUB_EMULATOR_HOST names: applies subscription filters
gcs                   fake-gcs-server (enforces generation preconditions)
gcs-front             Cloud Storage's front: Google's limits, two fake-gcs-server differences bridged
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

The parts: ``settings`` (names, ports, ``Options``), ``services`` (how each service starts and is
seen ready), ``provision`` (what Terraform's resources become locally); each service's own
behaviour lives in its module (compute/, monitoring.py, delivery.py, gcs_front.py, scheduler.py), and
Google's limits they enforce in limits.py.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from localcloud import iam, identity, limits, procs, services
from localcloud.provision import provision
from localcloud.services import StartupError
from localcloud.settings import (
    PROJECT,
    REPO,
    RESULTS_BUCKET,
    STATE_BUCKET,
    STOP_ORDER,
    Options,
    as_dict,
    choose_ports,
    default_state_dir,
)

__all__ = ["PROJECT", "RESULTS_BUCKET", "STATE_BUCKET", "LocalCloud", "Options", "StartupError", "as_dict"]


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

    def service_records(self) -> list[procs.PidRecord]:
        """The recorded processes of the services (not the VMs'), alive or not."""
        records = (procs.PidRecord.load(p) for p in sorted(self.pid_dir.glob("*.json")))  # none if no folder
        return [r for r in records if r is not None and not r.name.startswith("vm-")]

    def running(self) -> dict[str, bool]:
        """Each recorded service and whether its process is alive."""
        return {record.name: record.alive() for record in self.service_records()}

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
        self._identities()
        env = self._client_env(ports)
        limits.write(self.dir, limits.named(self.options.limits_choice))
        self.info_file.write_text(json.dumps({"id": cloud_id, "ports": ports, "env": env, "dir": str(self.dir)}))
        parts = services.services(self, ports, env, cloud_id)
        try:
            for service, service_env in parts:
                service.start(service_env, cwd=REPO)
            say(f"started {len(parts)} services; waiting for them to answer")
            services.wait_ready([s for s, _ in parts], ports)
            say("all services answer; creating topics, subscriptions, buckets, template and alert policies")
            provision(self, ports, env)
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
            # gRPC clients reach the emulator through its front (subscription filters); REST clients
            # (gcloud, the VMs' ready script) reach the emulator itself.
            "PUBSUB_EMULATOR_HOST": f"127.0.0.1:{ports['pubsub']}",
            "LOCALCLOUD_PUBSUB_REST_HOST": f"127.0.0.1:{ports['pubsub-emulator']}",
            "STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{ports['gcs-front']}",
            "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{ports['mlflow']}",
            "SINERGYM_COMPUTE_ENDPOINT": f"http://127.0.0.1:{ports['compute']}",
            "SINERGYM_MONITORING_ENDPOINT": f"127.0.0.1:{ports['monitoring']}",
            "SINERGYM_STATE_BUCKET": STATE_BUCKET,
            "SINERGYM_RESULTS_BUCKET": RESULTS_BUCKET,
            "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
            "LOCALCLOUD_DIR": str(self.dir),
            # gcloud against the emulators (e.g. `gcloud pubsub topics publish`).
            "CLOUDSDK_CORE_PROJECT": PROJECT,
            # The operator's credential (a local token): gcloud sends it, the fronts check it.
            "CLOUDSDK_AUTH_ACCESS_TOKEN_FILE": str(self.operator_token_file),
            "LOCALCLOUD_TOKEN": self.token("operator"),
            "CLOUDSDK_API_ENDPOINT_OVERRIDES_PUBSUB": f"http://127.0.0.1:{ports['pubsub-emulator']}/",
            # Every Cloud Storage client, gcloud too, goes through the front (localcloud/gcs_front.py).
            "CLOUDSDK_API_ENDPOINT_OVERRIDES_STORAGE": f"http://127.0.0.1:{ports['gcs-front']}/storage/v1/",
            "CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE": f"http://127.0.0.1:{ports['compute']}/compute/v1/",
        }

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

    def restart(self, name: str, say: Callable[[str], None] = lambda s: None) -> int:
        """Stop one service and start it again as ``up`` started it (same ports, environment and
        state directory), waiting until it answers: an emulator restarting under the product, as a
        service's front end or backend restarts in the cloud. Returns the new pid."""
        info = self.info()
        if info is None:
            raise RuntimeError(f"no local cloud in {self.dir}: run `make local-up`")
        found = {s.name: (s, env) for s, env in services.services(self, info["ports"], info["env"], info["id"])}
        if name not in found:
            raise ValueError(f"no service {name!r}: the local cloud runs {', '.join(sorted(found))}")
        service, env = found[name]
        record = procs.PidRecord.load(service.pid_file)
        if record is not None and record.alive():
            procs.kill_tree(record.pid)
        service.pid_file.unlink(missing_ok=True)
        started = service.start(env, cwd=REPO)
        services.wait_ready([service], info["ports"])
        say(f"{name} restarted (pid {started.pid})")
        return started.pid

    # ------------------------------------------------------------- identities
    def _identities(self) -> None:
        """A credential per component and the policy infra/terraform/iam.tf makes (localcloud/identity.py),
        and the operator's token in a file for gcloud (CLOUDSDK_AUTH_ACCESS_TOKEN_FILE)."""
        tokens = identity.new_tokens(self.dir)
        policy = iam.Policy.load(buckets={"state": STATE_BUCKET, "results": RESULTS_BUCKET})
        identity.write_policy(self.dir, policy, self.options.iam)
        path = self.operator_token_file
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(tokens["operator"])

    @property
    def operator_token_file(self) -> Path:
        return identity.iam_dir(self.dir) / "operator.token"

    def token(self, member: str) -> str:
        """The credential of a component's service account (``admin``: what Terraform and the test
        harness act as)."""
        registry = json.loads((identity.iam_dir(self.dir) / "tokens.json").read_text())
        for value, entry in registry.items():
            if entry["member"] == member and entry.get("boundary") is None and entry.get("expires") is None:
                return str(value)
        raise KeyError(f"no credential of {member} in {self.dir}")

    def admin_env(self) -> dict[str, str]:
        """The local cloud's environment with the admin's credential: the test harness's and the
        benchmarks' own clients (the user's environment, ``env()``, carries the operator's)."""
        return {**self.env(), "LOCALCLOUD_TOKEN": self.token(identity.ADMIN)}

    def set_policy(self, policy: iam.Policy) -> None:
        """Enforce ``policy`` from now on (a test taking a role away)."""
        identity.write_policy(self.dir, policy, self.options.iam)

    def policy(self) -> iam.Policy:
        return identity.read_policy(self.dir)

    def set_limits(self, new: limits.Limits) -> None:
        """Enforce ``new`` from now on (every service reads the file again when it changes): e.g. a
        test lowering one limit to trip it quickly, then putting the previous ones back."""
        limits.write(self.dir, new)

    def current_limits(self) -> limits.Limits:
        return limits.Source(self.dir).get()

    def wipe(self) -> None:
        """Stop, then delete every file of the local cloud (buckets, MLflow runs, logs)."""
        self.down()
        shutil.rmtree(self.dir, ignore_errors=True)


def _quote(value: str) -> str:
    import shlex

    return shlex.quote(value)
