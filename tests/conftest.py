"""Shared fixtures: one real local cloud per test session (free ports, its own directory).

Tests reach it through the official Google client libraries, exactly as the product does.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from localcloud import limits, profiles
from localcloud.cloud import LocalCloud, Options
from sinergym_cloud import names
from sinergym_cloud.config import Settings
from sinergym_cloud.gcp.runtime import Runtime
from tests import external

REPO = Path(__file__).resolve().parent.parent
# The Compute emulator's timings for this session: LOCALCLOUD_PROFILE=gce (and LOCALCLOUD_SCALE)
# runs the same tests with Google's boot and operation times (the slow "gce" tier, see
# tests/test_gce_profile.py); the default is fast.
PROFILE = (os.environ.get("LOCALCLOUD_PROFILE") or "fast", float(os.environ.get("LOCALCLOUD_SCALE") or 1))


@dataclass
class Cloud:
    local: LocalCloud
    env: dict[str, str]  # the user's environment: the operator's credential, as `. .local/env` gives it

    @property
    def admin_env(self) -> dict[str, str]:
        """The test harness's environment: the admin's credential (what Terraform may do)."""
        return {**self.env, "LOCALCLOUD_TOKEN": self.local.token("admin")}

    @property
    def settings(self) -> Settings:
        return Settings.from_env(self.admin_env)

    def runtime(self, **overrides: Any) -> Runtime:
        """A runtime like the functions', with the SSH key and agent of the local cloud."""
        from dataclasses import replace

        settings = Settings.from_env(
            {
                **self.admin_env,
                "SINERGYM_SSH_USER": os.environ.get("USER") or __import__("getpass").getuser(),
                "SINERGYM_SSH_KEY_FILE": str(self.local.ssh_key),
                "SINERGYM_CONTROL_SECRET_FILE": str(self.local.control_secret),
                "SINERGYM_VM_AGENT": str(Path(os.sys.executable).parent / "sinergym-vm"),
            }
        )
        return Runtime.from_settings(replace(settings, **overrides))

    @functools.cached_property
    def http(self) -> requests.Session:
        """Raw HTTP to the emulators as the test harness (the admin's credential): for the tests that
        speak the REST APIs themselves rather than through a client library."""
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {self.local.token('admin')}"
        return session

    def vm_identity(self, spec: Any, token_file: Path, rules: list[dict[str, Any]] | None = None) -> dict[str, str]:
        """A VM's credentials for the trainer of ``spec`` (a TrainerSpec), as dispatch sets them up:
        the trainer's service account, and the experiment's downscoped storage token in ``token_file``
        (``rules``: another boundary than the experiment's)."""
        from sinergym_cloud.gcp import tokens

        if rules is None:
            rules = tokens.rules_for_experiment(
                spec.results_bucket, spec.batch_id, spec.experiment_name, spec.experiment
            )
        token, expiry = tokens.mint(self.env["STORAGE_EMULATOR_HOST"], self.local.token("dispatch"), rules)
        tokens.write_token_file(token_file, token, expiry)
        return {"LOCALCLOUD_TOKEN": self.local.token("trainer"), "SINERGYM_STORAGE_TOKEN_FILE": str(token_file)}

    @property
    def compute_url(self) -> str:
        return self.env["SINERGYM_COMPUTE_ENDPOINT"]

    def emulator(self, path: str, body: dict[str, Any] | None = None) -> Any:
        url = f"{self.compute_url}/_emulator/{path}"
        response = (
            requests.post(url, json=body or {}, timeout=30) if body is not None else requests.get(url, timeout=30)
        )
        response.raise_for_status()
        return response.json()

    def events(self, since: float = 0.0, kind: str | None = None) -> list[dict[str, Any]]:
        events = self.emulator(f"events?since={since}")["events"]
        return [e for e in events if kind is None or e["kind"] == kind]

    def alerts(self) -> list[dict[str, Any]]:
        path = self.local.dir / "monitoring" / "alerts.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def dead_letters(self, topic: str, wait: float = 10.0) -> list[dict[str, Any]]:
        """Pull what was dead-lettered from ``topic`` (waiting up to ``wait`` seconds for the first)."""
        rt = self.runtime()
        sub = f"projects/{self.settings.project}/subscriptions/{names.dead_letter_topic(topic)}-inspect"
        deadline = time.monotonic() + wait
        got: list[dict[str, Any]] = []
        while True:
            response = rt.clients.subscriber.pull(
                request={"subscription": sub, "max_messages": 100, "return_immediately": True}, timeout=10
            )
            if response.received_messages:
                rt.clients.subscriber.acknowledge(
                    request={"subscription": sub, "ack_ids": [m.ack_id for m in response.received_messages]}
                )
                got += [
                    {"data": m.message.data, "attributes": dict(m.message.attributes)}
                    for m in response.received_messages
                ]
            if got and not response.received_messages:
                return got
            if time.monotonic() > deadline:
                return got
            time.sleep(0.2)

    def instances(self) -> dict[str, dict[str, Any]]:
        return dict(self.emulator("state")["instances"])

    def migs(self) -> dict[str, list[str]]:
        return dict(self.emulator("state")["migs"])


def wait_for(condition: Callable[[], Any], timeout: float, what: str, every: float = 0.1) -> Any:
    """Poll ``condition`` until it returns something truthy; fail the test with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


def run_python(script: str, *args: str, cwd: Path) -> str:
    """Run ``script`` in a fresh interpreter with the project importable (a process of its own: one
    EnergyPlus simulation per process), fail the test if it fails, and return what it printed."""
    out = subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO), "TQDM_DISABLE": "1"},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


@contextlib.contextmanager
def own_cloud(state_dir: Path, environment: dict[str, str], options: Options) -> Iterator[Cloud]:
    """A local cloud of a test module's own, whose VMs see ``environment`` (the Compute emulator
    passes its own environment on to them: e.g. the bench workload in place of the trainer)."""
    saved = dict(os.environ)
    os.environ.update(environment)
    local = LocalCloud(state_dir, options)
    try:
        env = local.up()
        yield Cloud(local, env)
    finally:
        local.down()
        os.environ.clear()
        os.environ.update(saved)


def new_batch_id(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    profile, scale = PROFILE
    local = LocalCloud(
        tmp_path_factory.mktemp("localcloud"),
        Options(
            port_base=0,
            sweep_interval=0,
            heartbeat_seconds=2,
            heartbeat_timeout=60,
            boot_timeout=120 if profile == "fast" else 300,
            profile=profile,
            scale=scale,
            # Every response the Compute emulator sends in a test is checked against Google's
            # discovery document: a body Compute Engine would never send is a 500.
            strict=True,
        ),
    )
    env = local.up()
    try:
        yield Cloud(local, env)
    finally:
        local.down()


@pytest.fixture
def rt(cloud: Cloud) -> Runtime:
    return cloud.runtime()


@pytest.fixture(autouse=True)
def _reset_emulator(request: pytest.FixtureRequest) -> Iterator[None]:
    """Tests that change the Compute emulator's settings or inject faults leave it as they found it."""
    yield
    if "cloud" in request.fixturenames:
        c: Cloud = request.getfixturevalue("cloud")
        c.emulator("faults", {"clear": True})
        c.emulator(
            "config",
            {
                **profiles.settings(*PROFILE),
                "fail_boot": None,
                "zone_exhausted": False,
                "quota_instances": 200,
                "quotas": {},
            },
        )
        session_limits = limits.named(c.local.options.limits_choice)
        if c.local.current_limits() != session_limits:  # a test lowered one to trip it
            c.local.set_limits(session_limits)


# ----------------------------------------------------------------- skips: only for what is outside
# A test is skipped only when something outside the project it needs is missing (tests/external.py);
# every skip is listed with its reason at the end of the run, and any other skip fails the run.
_SKIPS: list[tuple[str, str]] = []


def _needs(item: pytest.Item) -> list[str]:
    return [name for mark in item.iter_markers("needs") for name in mark.args]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    report = os.environ.get("SINERGYM_TESTS_NEEDS_REPORT")  # tests/test_skips.py reads what each test needs
    for item in items:
        for name in _needs(item):
            external.missing(name)  # an undeclared name fails here, at collection
    if report:
        Path(report).write_text(json.dumps({item.nodeid: _needs(item) for item in items}))


def pytest_runtest_setup(item: pytest.Item) -> None:
    for name in _needs(item):
        if external.missing(name):
            pytest.skip(external.reason(name))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        longrepr = report.longrepr
        text = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        _SKIPS.append((report.nodeid, text.removeprefix("Skipped: ")))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if any(not external.is_external(why) for _, why in _SKIPS) and exitstatus == 0:
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if not _SKIPS:
        terminalreporter.section("no test skipped: everything the tests need is here")
        return
    wrong = [(nodeid, why) for nodeid, why in _SKIPS if not external.is_external(why)]
    terminalreporter.section(f"{len(_SKIPS)} skipped: each for something outside the project")
    for nodeid, why in _SKIPS:
        terminalreporter.write_line(f"{'NOT ALLOWED ' if (nodeid, why) in wrong else ''}{nodeid}: {why}")
    if wrong:
        terminalreporter.write_line(
            f"{len(wrong)} test(s) skipped for something of the project's own: a test may skip only through "
            "@pytest.mark.needs(NAME) for a NAME of tests/external.py; this run fails",
            red=True,
        )
