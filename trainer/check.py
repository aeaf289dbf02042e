"""``python -m trainer check``: is this runtime able to run experiments?

Four checks, each timed, printed as a pass/fail table (or JSON):

- **energyplus**: Sinergym builds the 5-zone building and EnergyPlus simulates one day;
- **bucket**: an object can be written, read back and deleted in the results bucket;
- **mlflow**: the tracking server answers;
- **pubsub**: a probe message is published on the completions topic (the functions acknowledge
  probes and do nothing else).

Launch it as an experiment with ``python publisher.py --check`` to test a whole deployment.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sinergym_cloud import names


@dataclass
class Result:
    name: str
    ok: bool | None  # None: skipped
    detail: str
    seconds: float


def _energyplus() -> str:
    from sinergym_cloud.contracts import Experiment
    from trainer import envs

    exp = Experiment(environment="Eplus-5zone-hot-continuous-v1", runperiod=(1, 1, 1991, 1, 1, 1991))
    env = envs.make_env(exp, f"check-{uuid.uuid4().hex[:8]}")
    try:
        env.reset(seed=0)
        steps = 0
        while True:
            _, _, terminated, truncated, _ = env.step(env.action_space.sample())
            steps += 1
            if terminated or truncated:
                break
    finally:
        env.close()
    return f"EnergyPlus {envs.energyplus_version()} simulated one day ({steps} steps)"


def _clients() -> Any:
    from sinergym_cloud.config import Settings
    from sinergym_cloud.gcp.clients import Clients

    return Clients(Settings.from_env())


def _bucket(bucket_name: str | None, prefix: str) -> str:
    if not bucket_name:
        raise _Skip("no results bucket (set SINERGYM_RESULTS_BUCKET)")
    bucket = _clients().storage.bucket(bucket_name)
    blob = bucket.blob(f"{prefix}check-{uuid.uuid4().hex}.txt")
    blob.upload_from_string("ok", timeout=30)
    if blob.download_as_bytes(timeout=30) != b"ok":
        raise RuntimeError("read back something else")
    blob.delete(timeout=30)
    return f"wrote, read and deleted gs://{bucket_name}/{blob.name}"


def _mlflow() -> str:
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise _Skip("MLFLOW_TRACKING_URI is not set")
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    client.search_experiments(max_results=1)
    return f"{uri} answers"


def _pubsub() -> str:
    if not os.environ.get("GOOGLE_CLOUD_PROJECT"):
        raise _Skip("GOOGLE_CLOUD_PROJECT is not set")
    # A real publish on the completions topic (the trainer's account may publish, not read topics),
    # marked as a probe so that the cleanup function acknowledges it and does nothing.
    body = json.dumps({"probe": "trainer check", "host": socket.gethostname(), "at": time.time()}).encode()
    message_id = _clients().publish(
        names.TOPIC_COMPLETIONS, body, timeout=30, **{names.PROBE_ATTRIBUTE: "trainer-check"}
    )
    return f"published probe {message_id} on {names.TOPIC_COMPLETIONS}"


class _Skip(Exception):
    pass


def run_checks(bucket: str | None = None, prefix: str = "checks/") -> list[Result]:
    bucket = bucket or os.environ.get("SINERGYM_RESULTS_BUCKET")
    checks: list[tuple[str, Callable[[], str]]] = [
        ("energyplus", _energyplus),
        ("bucket", lambda: _bucket(bucket, prefix)),
        ("mlflow", _mlflow),
        ("pubsub", _pubsub),
    ]
    results = []
    for name, check in checks:
        started = time.monotonic()
        try:
            results.append(Result(name, True, check(), time.monotonic() - started))
        except _Skip as skip:
            results.append(Result(name, None, f"skipped: {skip}", time.monotonic() - started))
        except Exception as exc:  # noqa: BLE001 - a failed check is reported, not raised
            results.append(Result(name, False, f"{type(exc).__name__}: {exc}", time.monotonic() - started))
    return results


def as_experiment(bucket_name: str | None, prefix: str, metrics: dict[str, float]) -> str:
    """A runtime self-test launched as an experiment: each verdict into ``metrics`` (the completion
    carries them), the reason it passed returned, a RuntimeError naming what failed raised."""
    results = run_checks(bucket_name, prefix)
    logging.getLogger("trainer").info("runtime check:\n%s", render(results))
    metrics.update({f"check_{r.name}": 1.0 if r.ok else 0.0 for r in results if r.ok is not None})
    failed = [f"{r.name}: {r.detail}" for r in results if r.ok is False]
    if failed:
        raise RuntimeError("runtime check failed: " + "; ".join(failed))
    return "all runtime checks passed"


def render(results: list[Result]) -> str:
    width = max(len(r.name) for r in results)
    lines = [f"{'check'.ljust(width)}  result  seconds  detail"]
    for r in results:
        verdict = {True: "PASS", False: "FAIL", None: "SKIP"}[r.ok]
        lines.append(f"{r.name.ljust(width)}  {verdict:6}  {r.seconds:7.1f}  {r.detail}")
    failed = [r.name for r in results if r.ok is False]
    lines.append("all checks passed" if not failed else f"FAILED: {', '.join(failed)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m trainer check", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--bucket", help="results bucket to test (default $SINERGYM_RESULTS_BUCKET)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    import tempfile

    here = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="sinergym-check-") as scratch:
        os.chdir(scratch)  # Sinergym writes its output folder into the current directory
        try:
            results = run_checks(args.bucket)
        finally:
            os.chdir(here)
    if args.json:
        print(json.dumps([r.__dict__ for r in results], indent=2))
    else:
        print(render(results))
    return 1 if any(r.ok is False for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
