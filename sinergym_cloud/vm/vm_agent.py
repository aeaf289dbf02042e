"""``sinergym-vm``: the small agent dispatch talks to over SSH, on the VM (or in its container).

``sinergym-vm session`` is what dispatch runs: it prints the VM's identity (``status``) as its first
line, then reads a TrainerSpec on stdin and starts it as ``start-trainer`` does (an empty stdin:
dispatch decided not to start, and nothing is). One process per dispatch, where a separate
``status`` and ``start-trainer`` took two (each a Python start on the VM).

``sinergym-vm start-trainer`` reads a TrainerSpec on stdin, writes it to the VM's disk and starts
the trainer detached (its own session), under the log shipper (``logship.py``: its output goes to
``trainer.log`` on the disk and, in chunks, to the bucket), so that the SSH session can end while
training goes on. It answers one JSON line. It is idempotent per experiment and boot: a file
lock serialises concurrent calls, and once a trainer was started on this VM, a repeated call
reports it instead of starting a second one (a trainer that died is the sweeper's business, which
retries it within the experiment's budget).

Beside the spec comes the experiment's Cloud Storage token (``storage_token``: dispatch's, confined
to the experiment's prefixes, gcp/tokens.py): it is written to ``storage-token.json`` (0600) in the
experiment's folder, never into the spec on disk, and the trainer and its log shipper read it from
there (``SINERGYM_STORAGE_TOKEN_FILE``). ``sinergym-vm token`` replaces it with a fresh one for the
running boot (dispatch, at half the token's life).

The VM's home is ``$SINERGYM_VM_HOME`` (each local VM's sshd sets it) or ``/var/lib/sinergym``. If
the home holds a ``vm.json`` (written by the local cloud), its ``env`` is the trainer's
environment, as the container's environment is on Google Cloud.
"""

from __future__ import annotations

import argparse
import datetime as dt
import fcntl
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sinergym_cloud import names
from sinergym_cloud.gcp import tokens
from sinergym_cloud.vm import procinfo

DEFAULT_HOME = "/var/lib/sinergym"


def home() -> Path:
    return Path(os.environ.get("SINERGYM_VM_HOME", DEFAULT_HOME))


def vm_env(root: Path) -> dict[str, str]:
    try:
        data: dict[str, Any] = json.loads((root / "vm.json").read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.get("env", {}).items()}


BOOT_ID = re.compile(r"^[A-Za-z0-9-]{1,64}$")


def own_boot_id(root: Path) -> str | None:
    """This VM's boot id, as its boot wrote it (``boot-id`` by the cloud startup script, ``vm.json``
    on the local cloud); None if unknown. Dispatch compares it with the ready message's."""
    try:
        value = (root / "boot-id").read_text().strip()
    except OSError:
        try:
            value = str(json.loads((root / "vm.json").read_text()).get("boot_id", ""))
        except (OSError, ValueError, AttributeError):
            return None
    return value if BOOT_ID.match(value) else None


# The TrainerSpec versions the trainer reads (contracts.TrainerSpec; the agent does not import
# pydantic, and tests/test_contracts.py checks the two agree).
SPEC_VERSIONS = (1, 2)


def check_spec(raw: bytes) -> tuple[dict[str, Any] | None, str]:
    """The few fields the agent itself uses, checked; the trainer validates the whole TrainerSpec.

    The agent runs at every dispatch: it stays light (no pydantic), so that a VM answers fast.
    Nothing of the spec reaches a shell or a path unchecked.
    """
    try:
        spec = json.loads(raw)
    except ValueError as exc:
        return None, f"spec is not JSON: {exc}"
    if not isinstance(spec, dict) or spec.get("schema_version", 1) not in SPEC_VERSIONS:
        got = spec.get("schema_version") if isinstance(spec, dict) else None
        readable = " or ".join(map(str, SPEC_VERSIONS))
        return None, f"spec is not a TrainerSpec this agent reads (version {readable}; got {str(got)[:20]})"
    batch_id, index, boot_id = spec.get("batch_id"), spec.get("experiment_index"), spec.get("boot_id")
    if not isinstance(batch_id, str) or not names.BATCH_ID.match(batch_id):
        return None, "spec has no valid batch_id"
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < 100_000:
        return None, "spec has no valid experiment_index"
    if not isinstance(boot_id, str) or not BOOT_ID.match(boot_id):
        return None, "spec has no valid boot_id"
    return spec, ""


def experiment_dir(root: Path, spec: dict[str, Any]) -> Path:
    return root / "experiments" / f"{spec['batch_id']}-{spec['experiment_index']}"


def _alive(pid_file: Path) -> bool:
    try:
        info = json.loads(pid_file.read_text())
        return procinfo.alive(int(info["pid"]), int(info["start"]))
    except (OSError, ValueError, KeyError):
        return False


def trainer_nice(env: dict[str, str]) -> int:
    """The CPU priority the trainer runs at (``SINERGYM_TRAINER_NICE``, 0-19; default 0): a VM whose
    trainer should yield to the rest of the machine (the local cloud's VMs share the host with the
    control plane) sets it."""
    try:
        return min(19, max(0, int(env.get("SINERGYM_TRAINER_NICE", "0") or 0)))
    except ValueError:
        return 0


def _priority(nice: int) -> Callable[[], None] | None:
    """What the trainer's process runs before its program: ``nice``, for the process and for its
    new session's autogroup (procinfo.lower_priority)."""
    return (lambda: procinfo.lower_priority(nice)) if nice else None


TOKEN_FILE = "storage-token.json"  # noqa: S105 - a file name


def _token_problem(token: Any) -> str:
    if not isinstance(token, dict) or not isinstance(token.get("token"), str) or not token["token"]:
        return "storage_token has no token"
    if not isinstance(token.get("expires_at"), (int, float)) or isinstance(token.get("expires_at"), bool):
        return "storage_token has no expires_at"
    return ""


def write_token(workdir: Path, token: dict[str, Any]) -> Path:
    """The experiment's storage token, readable by this user only, replaced whole."""
    path = workdir / TOKEN_FILE
    expiry = dt.datetime.fromtimestamp(float(token["expires_at"]), dt.UTC)
    tokens.write_token_file(path, token["token"], expiry)
    return path


def start_trainer(raw: bytes) -> dict[str, Any]:
    spec, problem = check_spec(raw)
    if spec is None:
        return {"status": "rejected", "reason": problem}
    token = spec.pop("storage_token", None)
    if token is not None and (problem := _token_problem(token)):
        return {"status": "rejected", "reason": problem}
    root = home()
    workdir = experiment_dir(root, spec)
    workdir.mkdir(parents=True, exist_ok=True)
    pid_file = workdir / "trainer.pid"
    with open(workdir / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if pid_file.exists():
            return {"status": "running" if _alive(pid_file) else "exited", "workdir": str(workdir)}
        spec_file = workdir / "spec.json"
        spec_file.write_text(json.dumps(spec))
        env = {**os.environ, **vm_env(root), "SINERGYM_VM_HOME": str(root)}
        if token is not None:
            env["SINERGYM_STORAGE_TOKEN_FILE"] = str(write_token(workdir, token))
        with open(workdir / "logship.log", "ab") as log:
            # The trainer module is fixed by the VM's configuration, never by a message; the local
            # cloud's benchmark swaps in a short synthetic workload this way (bench/workload.py).
            # It runs under the log shipper (logship.py), which keeps its output in trainer.log and
            # stores it in the bucket while it trains.
            module = env.get("SINERGYM_TRAINER_MODULE", "trainer")
            trainer = [sys.executable, "-m", module, "run", "--spec", str(spec_file)]
            process = subprocess.Popen(
                [sys.executable, "-m", "sinergym_cloud.vm.logship", "--spec", str(spec_file), "--", *trainer],
                cwd=workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_priority(trainer_nice(env)),  # noqa: PLW1509 - the agent is single-threaded
            )
        start = procinfo.start_time(process.pid)
        pid_file.write_text(json.dumps({"pid": process.pid, "start": start, "boot_id": spec["boot_id"]}))
        return {"status": "started", "pid": process.pid, "workdir": str(workdir)}


def refresh_token(raw: bytes) -> dict[str, Any]:  # noqa: PLR0911 - one answer per refusal
    """Replace the storage token of the trainer started for this boot (``{"batch_id",
    "experiment_index", "boot_id", "storage_token"}`` on stdin)."""
    ask, problem = check_spec(raw)
    if ask is None:
        return {"status": "rejected", "reason": problem}
    if problem := _token_problem(ask.get("storage_token")):
        return {"status": "rejected", "reason": problem}
    workdir = experiment_dir(home(), ask)
    pid_file = workdir / "trainer.pid"
    if not workdir.is_dir():
        return {"status": "rejected", "reason": "no trainer of this experiment on this VM"}
    with open(workdir / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not pid_file.exists():
            return {"status": "rejected", "reason": "no trainer of this experiment on this VM"}
        try:
            started = json.loads(pid_file.read_text())
        except (OSError, ValueError):
            started = {}
        if started.get("boot_id") != ask["boot_id"]:
            return {"status": "rejected", "reason": f"the trainer here is of boot {started.get('boot_id')}"}
        if not _alive(pid_file):
            return {"status": "exited", "workdir": str(workdir)}
        write_token(workdir, ask["storage_token"])
    return {"status": "refreshed", "workdir": str(workdir)}


def status() -> dict[str, Any]:
    root = home()
    trainers = {}
    for pid_file in sorted((root / "experiments").glob("*/trainer.pid")):
        trainers[pid_file.parent.name] = "running" if _alive(pid_file) else "exited"
    return {"home": str(root), "boot_id": own_boot_id(root), "trainers": trainers}


MAX_SPEC_BYTES = 1024 * 1024


def session() -> int:
    """Identity first (flushed: dispatch waits for it before it claims the boot), then the spec."""
    print(json.dumps(status()), flush=True)
    raw = sys.stdin.buffer.read(MAX_SPEC_BYTES)
    if not raw.strip():
        return 0
    result = start_trainer(raw)
    print(json.dumps(result))
    return 0 if result["status"] != "rejected" else 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sinergym-vm", description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("start-trainer", help="start the trainer for the TrainerSpec read on stdin (idempotent)")
    sub.add_parser("status", help="the trainers of this VM")
    sub.add_parser("session", help="print the status line, then start the TrainerSpec read on stdin, if any")
    sub.add_parser("token", help="replace the storage token of the running trainer of the boot read on stdin")
    args = parser.parse_args(argv)
    if args.command == "session":
        return session()
    if args.command == "token":
        result = refresh_token(sys.stdin.buffer.read(MAX_SPEC_BYTES))
        print(json.dumps(result))
        return 0 if result["status"] != "rejected" else 2
    if args.command == "start-trainer":
        result = start_trainer(sys.stdin.buffer.read(MAX_SPEC_BYTES))
        print(json.dumps(result))
        return 0 if result["status"] != "rejected" else 2
    print(json.dumps(status()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
