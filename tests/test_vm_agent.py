"""The VM agent's two-turn session, as dispatch speaks to it (over SSH in every other test)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

AGENT = [sys.executable, "-m", "sinergym_cloud.vm.vm_agent"]


def session(home: Path, stdin: bytes) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "SINERGYM_VM_HOME": str(home)}
    return subprocess.run([*AGENT, "session"], input=stdin, env=env, capture_output=True, timeout=60)


def test_a_session_answers_its_identity_first_and_starts_nothing_without_a_spec(tmp_path: Path) -> None:
    (tmp_path / "boot-id").write_text("1234-abcd\n")
    done = session(tmp_path, b"")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.decode().splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0]) == {"home": str(tmp_path), "boot_id": "1234-abcd", "trainers": {}}
    assert not (tmp_path / "experiments").exists()


def test_a_session_refuses_a_bad_spec_after_its_identity(tmp_path: Path) -> None:
    done = session(tmp_path, json.dumps({"schema_version": 1, "batch_id": "Not A Batch"}).encode())
    assert done.returncode == 2
    first, second = done.stdout.decode().splitlines()
    assert json.loads(first)["boot_id"] is None
    assert json.loads(second) == {"status": "rejected", "reason": "spec has no valid batch_id"}


def test_the_trainer_runs_at_the_priority_the_vm_asks_for(tmp_path: Path) -> None:
    from sinergym_cloud.vm import vm_agent

    assert [vm_agent.trainer_nice(e) for e in ({}, {"SINERGYM_TRAINER_NICE": "7"}, {"SINERGYM_TRAINER_NICE": "x"})] == [
        0,
        7,
        0,
    ]
    assert vm_agent.trainer_nice({"SINERGYM_TRAINER_NICE": "40"}) == 19
    assert vm_agent._priority(0) is None
    wanted = max(os.getpriority(os.PRIO_PROCESS, 0), 5)  # a priority can be lowered, not raised
    lower = vm_agent._priority(wanted)
    child = subprocess.Popen(["sleep", "30"], start_new_session=True, preexec_fn=lower)  # noqa: PLW1509 - no threads
    try:
        assert os.getpriority(os.PRIO_PROCESS, child.pid) == wanted
    finally:
        child.kill()
        child.wait()
