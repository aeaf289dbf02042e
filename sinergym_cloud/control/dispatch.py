"""dispatch: an instance-ready message becomes a trainer running on that VM.

The experiment is found from the instance name alone (``<group>-<index>``, see names.py) and
cross-checked against its record. The boot is claimed in the record (compare-and-swap), then the
VM is reached over SSH, its host key checked against the fingerprint the VM published, and the VM
agent starts the trainer detached. A redelivered message finds the boot already claimed and the
agent already running a trainer: no second trainer is ever started.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from sinergym_cloud import contracts, lifecycle, names, retry, ssh
from sinergym_cloud.contracts import InstanceReady, TrainerSpec
from sinergym_cloud.control import batches
from sinergym_cloud.errors import BadMessage
from sinergym_cloud.events import Delivery
from sinergym_cloud.records import ExperimentRecord, LaunchRecord
from sinergym_cloud.runtime import Runtime

log = logging.getLogger(__name__)


def ssh_deadline(rt: Runtime) -> float:
    """How long dispatch keeps retrying a VM that refuses or is slow to accept SSH (90 s by default)."""
    return 3 * rt.settings.call_deadline


def handle(rt: Runtime, d: Delivery) -> None:
    dispatch(rt, contracts.parse(InstanceReady, d.data))


def dispatch(rt: Runtime, ready: InstanceReady) -> str:
    """Start the experiment's trainer on the VM that announced itself. Returns what happened."""
    index = names.experiment_index(ready.mig, ready.instance)
    if index is None:
        raise BadMessage(f"instance {ready.instance} is not an experiment instance of group {ready.mig}")
    path = names.experiment_object(ready.batch_id, index)
    current = rt.state.read(path)
    if current is None:
        raise BadMessage(f"no experiment {index} in batch {ready.batch_id}")
    rec = ExperimentRecord.model_validate(current.data)
    if (rec.instance, rec.mig, rec.zone) != (ready.instance, ready.mig, ready.zone):
        raise BadMessage(
            f"instance {ready.instance} in {ready.zone} does not serve experiment {index} of {ready.batch_id}"
        )
    if rec.terminal:
        # A VM of a finished experiment came up (recreated, or a late ready): make sure it goes away.
        batches.settle(rt, rec)
        return f"ignored: experiment is {rec.state}"
    if rec.state == "running" and rec.boot_id == ready.boot_id:
        return "duplicate: trainer already started on this boot"

    claimed, _ = batches.transition(
        rt, ready.batch_id, index, lambda r: lifecycle.claim_boot(r, ready.boot_id, time.time())
    )
    assert claimed is not None, "the record was read above; state objects are never deleted"
    rec = claimed
    if rec.terminal or rec.boot_id != ready.boot_id:
        return f"ignored: experiment is {rec.state} on boot {rec.boot_id}"
    launch_doc = rt.state.read(names.launch_object(ready.batch_id))
    if launch_doc is None:
        raise BadMessage(f"batch {ready.batch_id} has no launch record")
    launch = LaunchRecord.model_validate(launch_doc.data)
    spec = TrainerSpec(
        project=rt.settings.project,
        batch_id=ready.batch_id,
        experiment_index=index,
        experiment_name=rec.name,
        group_name=rec.group,
        experiment=rec.spec,
        results_bucket=launch.results_bucket,
        instance=ready.instance,
        zone=ready.zone,
        boot_id=ready.boot_id,
        attempt=rec.attempts,
        mlflow_experiment=launch.mlflow_experiment,
    )
    try:
        answer = start_trainer(rt, ready, spec)
    except ssh.HostKeyMismatch as exc:
        _note(rt, ready, index, "host-key-mismatch", str(exc))
        log.error("refusing %s: %s", ready.instance, exc)
        return "refused: host key mismatch"
    except ssh.TRANSIENT as exc:
        if rt.compute.instance(ready.zone, ready.instance) is None:
            _note(rt, ready, index, "instance-gone", f"{type(exc).__name__}: {exc}")
            return "ignored: instance no longer exists"
        raise
    status = answer.get("status")
    if status not in ("started", "running", "exited"):
        raise RuntimeError(f"VM agent on {ready.instance} answered {answer}")

    batches.transition(
        rt, ready.batch_id, index, lambda r: lifecycle.trainer_started(r, ready.boot_id, str(status), time.time())
    )
    log.info("%s: trainer %s on %s (boot %s)", rec.name, status, ready.instance, ready.boot_id)
    return f"trainer {status}"


def start_trainer(rt: Runtime, ready: InstanceReady, spec: TrainerSpec) -> dict[str, Any]:
    """Run the VM agent over SSH, retrying connection failures with backoff within a deadline."""
    key = ssh.private_key(rt.settings)
    argv = [*rt.settings.vm_agent, "start-trainer"]

    def attempt() -> ssh.Result:
        return ssh.run(
            ready.address,
            ready.ssh_port,
            user=rt.settings.ssh_user,
            key=key,
            expected_fingerprint=ready.host_key_fingerprint,
            argv=argv,
            stdin=spec.model_dump_json().encode(),
            timeout=60,
        )

    def transient(exc: BaseException) -> bool:
        return isinstance(exc, ssh.TRANSIENT) and not isinstance(exc, ssh.HostKeyMismatch)

    result = retry.call(attempt, what=f"ssh {ready.instance}", deadline=ssh_deadline(rt), transient=transient)
    if result.code != 0:
        raise RuntimeError(f"VM agent on {ready.instance} exited {result.code}: {result.stderr.strip()[-500:]}")
    try:
        answer: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise RuntimeError(f"VM agent on {ready.instance} answered {result.stdout!r}") from None
    return answer


def _note(rt: Runtime, ready: InstanceReady, index: int, event: str, detail: str) -> None:
    batches.transition(rt, ready.batch_id, index, lambda r: lifecycle.noted(r, event, detail))
