"""dispatch: an instance-ready message becomes a trainer running on that VM.

The message is only a hint: any VM may publish one. The experiment is found from the instance name
alone (``<group>-<index>``, see names.py) and cross-checked against its record; then Compute, not
the message, says who the VM is: it must be RUNNING, a member of the experiment's group, and the
boot must be one of this instance (its id). The address is the instance's ``networkIP``, the host
keys are those its guest agent published in its guest attributes. Dispatch connects (short
timeouts: a hostile endpoint costs seconds), verifies the host key before authenticating, asks the
VM agent which boot it is on, and only then claims the boot in the record (compare-and-swap). The
TrainerSpec it hands over the verified session carries the boot's completion key and the
experiment's checkpoint key (signing.py). A running experiment is re-claimed only when Compute
shows its VM was recreated. A redelivered message finds the boot already claimed and the agent
already running a trainer: no second trainer is ever started.

Beside the spec, the VM gets its experiment's Cloud Storage token (gcp/tokens.py): dispatch's own
credential downscoped to the experiment's prefixes, the only way a VM reaches the results bucket.
A ``token-refresh`` message (the sweeper's, at half the token's life) has a fresh one handed to
the same boot over a new verified session.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import paramiko

from sinergym_cloud import contracts, lifecycle, names, signing
from sinergym_cloud.contracts import InstanceReady, TokenRefresh, TrainerSpec
from sinergym_cloud.control import batches, sweep_runs, sweeps
from sinergym_cloud.control.events import Delivery
from sinergym_cloud.errors import BadMessage
from sinergym_cloud.gcp import compute, retry, ssh, tokens
from sinergym_cloud.gcp.runtime import Runtime
from sinergym_cloud.lifecycle import BOOTED
from sinergym_cloud.records import ExperimentRecord

log = logging.getLogger(__name__)


def ssh_deadline(rt: Runtime) -> float:
    """How long dispatch keeps retrying a VM whose sshd refuses connections (at most 20 s): longer
    waits are Pub/Sub's redelivery, so one slow VM never holds a delivery slot for minutes."""
    return min(20.0, rt.settings.call_deadline)


def handle(rt: Runtime, d: Delivery) -> None:
    if d.attributes.get("kind") == names.TOKEN_REFRESH_KIND:
        refresh(rt, contracts.parse(TokenRefresh, d.data))
        return
    dispatch(rt, contracts.parse(InstanceReady, d.data))


def storage_token(rt: Runtime, rec: ExperimentRecord, results_bucket: str) -> tuple[str, float]:
    """A token for the experiment's own objects (tokens.rules_for_experiment), and when it expires
    (epoch seconds)."""
    rules = tokens.rules_for_experiment(results_bucket, rec.batch_id, rec.name, rec.spec)
    token, expiry = retry.call(
        lambda: tokens.mint(rt.settings.storage_endpoint, rt.settings.local_token, rules),
        what=f"storage token for {rec.name}",
        deadline=rt.settings.call_deadline,
    )
    return token, expiry.timestamp()


def refresh(rt: Runtime, ask: TokenRefresh) -> str:
    """Hand the running boot ``ask.boot_id`` a fresh storage token, if it still runs there."""
    rec = _record(rt, ask.batch_id, ask.experiment_index)
    if rec.state != "running" or rec.boot_id != ask.boot_id:
        return f"ignored: experiment is {rec.state} on boot {rec.boot_id}"
    if not tokens.needs_refresh(rec.token_issued_at, rec.token_expires_at, time.time()):
        return "ignored: its token is fresh"
    try:
        host = verified_host(rt, rec, ask.boot_id)
    except BadMessage as exc:
        return f"ignored: {exc}"
    if not host.host_keys:
        return f"ignored: instance {rec.instance} has published no host key"
    launch = batches.read_launch(rt, ask.batch_id)
    if launch is None:
        raise BadMessage(f"batch {ask.batch_id} has no launch record")
    token, expires = storage_token(rt, rec, launch.results_bucket)
    client = connect(rt, host, [ssh.public_key_fingerprint(k) for k in host.host_keys])
    try:
        body = {"batch_id": rec.batch_id, "experiment_index": rec.index, "boot_id": ask.boot_id,
                "storage_token": {"token": token, "expires_at": expires}}  # fmt: skip
        result = ssh.execute(client, [*rt.settings.vm_agent, "token"], json.dumps(body).encode(), timeout=60)
    finally:
        client.close()
    answer = _answer(rec.instance, result)
    if answer.get("status") != "refreshed":
        return f"ignored: VM agent on {rec.instance} answered {answer}"
    now = time.time()
    batches.transition(rt, rec.batch_id, rec.index, lambda r: lifecycle.token_handed(r, ask.boot_id, now, expires))
    log.info("%s: storage token refreshed on %s (until %s)", rec.name, rec.instance, time.ctime(expires))
    return "token refreshed"


def recreated(rec: ExperimentRecord, host: compute.Host) -> bool:
    """True if the VM Compute shows now is not the one the record's boot was claimed on."""
    if rec.vm_id is None:
        return True  # claimed by an older dispatch that did not record it: nothing to compare
    if host.id != rec.vm_id:
        return True
    return host.created_at is not None and rec.vm_created_at is not None and host.created_at > rec.vm_created_at


def _record(rt: Runtime, batch_id: str, index: int) -> ExperimentRecord:
    current = rt.state.read(names.experiment_object(batch_id, index))
    if current is None:
        raise BadMessage(f"no experiment {index} in batch {batch_id}")
    return ExperimentRecord.model_validate(current.data)


def verified_host(rt: Runtime, rec: ExperimentRecord, boot_id: str) -> compute.Host:
    """The VM as Compute describes it, if it runs the boot ``boot_id`` of the experiment's instance in
    its group; BadMessage if not."""
    host = compute.describe_host(rt.compute, rec.zone, rec.instance)
    if host is None:
        raise BadMessage(f"instance {rec.instance} does not exist in {rec.zone}")
    if host.status != "RUNNING":
        raise BadMessage(f"instance {rec.instance} is {host.status}, not RUNNING")
    if host.group != rec.mig:
        raise BadMessage(f"instance {rec.instance} is not a member of group {rec.mig}")
    if not boot_id.startswith(f"{host.id}-"):
        raise BadMessage(f"boot {boot_id} is not a boot of instance {rec.instance} (id {host.id})")
    if not host.address:
        raise BadMessage(f"instance {rec.instance} has no network address")
    return host


def dispatch(rt: Runtime, ready: InstanceReady) -> str:
    """Start the experiment's trainer on the VM that announced itself. Returns what happened."""
    index = names.experiment_index(ready.mig, ready.instance)
    if index is None:
        raise BadMessage(f"instance {ready.instance} is not an experiment instance of group {ready.mig}")
    rec = _record(rt, ready.batch_id, index)
    if (rec.instance, rec.mig, rec.zone) != (ready.instance, ready.mig, ready.zone):
        raise BadMessage(
            f"instance {ready.instance} in {ready.zone} does not serve experiment {index} of {ready.batch_id}"
        )
    if rec.terminal:
        # A VM of a finished experiment came up (recreated, or a late ready): make sure it goes away.
        batches.settle(rt, rec)
        return f"ignored: experiment is {rec.state}"
    if rec.state == "queued":
        # A VM of an experiment waiting in the queue: its request was withdrawn (requeued over quota)
        # but the withdrawal did not reach Compute. Not claimed (it holds no slot): the sweeper
        # withdraws it, and if the experiment is promoted first, this message, redelivered, starts it.
        raise RuntimeError(f"experiment {index} of {ready.batch_id} is queued: its VM {rec.instance} came early")
    if rec.state == "running" and rec.boot_id == ready.boot_id:
        return "duplicate: trainer already started on this boot"
    host = verified_host(rt, rec, ready.boot_id)
    if rec.state in BOOTED and rec.boot_id != ready.boot_id and not recreated(rec, host):
        raise BadMessage(
            f"experiment {index} of {ready.batch_id} is {rec.state} on boot {rec.boot_id} and Compute shows "
            f"its VM was not recreated: boot {ready.boot_id} is refused"
        )
    if not host.host_keys:
        raise RuntimeError(f"instance {rec.instance} has published no host key yet")  # redelivered later
    expected = [ssh.public_key_fingerprint(k) for k in host.host_keys]
    try:
        client = connect(rt, host, expected)
    except ssh.HostKeyMismatch as exc:
        _note(rt, ready, index, "host-key-mismatch", str(exc))
        log.error("refusing %s: %s", rec.instance, exc)
        return "refused: host key mismatch"
    except ssh.TRANSIENT as exc:
        if rt.compute.instance(rec.zone, rec.instance) is None:
            _note(rt, ready, index, "instance-gone", f"{type(exc).__name__}: {exc}")
            return "ignored: instance no longer exists"
        raise
    try:
        return _start(rt, client, ready, host=host, index=index)
    finally:
        client.close()


def _start(rt: Runtime, client: paramiko.SSHClient, ready: InstanceReady, *, host: compute.Host, index: int) -> str:
    """On a verified connection: check the VM's own boot, claim it, hand the trainer its spec. One
    agent command does both turns (``sinergym-vm session``): its first line says which boot the VM
    is on, and the spec goes to its stdin only once the boot is claimed."""
    talk = ssh.Conversation(client, [*rt.settings.vm_agent, "session"], timeout=60)
    try:
        return _converse(rt, talk, ready, host=host, index=index)
    finally:
        talk.close()


def _converse(rt: Runtime, talk: ssh.Conversation, ready: InstanceReady, *, host: compute.Host, index: int) -> str:
    line = talk.first_line()
    if not line:
        raise RuntimeError(f"VM agent on {ready.instance} said nothing: {_answer_text(talk.finish())}")
    identity = _parse_answer(ready.instance, line)
    own = identity.get("boot_id")
    if own is not None and own != ready.boot_id:
        talk.finish()
        raise BadMessage(f"instance {ready.instance} is on boot {own}, not {ready.boot_id}")
    secret = signing.deployment_secret(rt.settings)
    nonce = signing.new_nonce()

    def claim(r: ExperimentRecord) -> lifecycle.Transition:
        verified = lifecycle.VerifiedBoot(
            boot_id=ready.boot_id,
            vm_id=host.id,
            vm_created_at=host.created_at,
            completion_nonce=nonce,
            completion_key_sha256=signing.key_hash(
                signing.completion_key(secret, r.batch_id, r.index, ready.boot_id, nonce)
            ),
        )
        return lifecycle.claim_boot(r, verified, time.time(), vm_recreated=recreated(r, host))

    claimed, _ = batches.transition(rt, ready.batch_id, index, claim)
    assert claimed is not None, "the record was read above; state objects are never deleted"
    rec = sweeps.ensure_params(rt, claimed)  # set before its VM was asked for; again here, if that was cut short
    if rec.terminal or rec.boot_id != ready.boot_id or rec.completion_nonce is None:
        talk.finish()
        return f"ignored: experiment is {rec.state} on boot {rec.boot_id}"
    launch = batches.read_launch(rt, ready.batch_id)
    if launch is None:
        raise BadMessage(f"batch {ready.batch_id} has no launch record")
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
        started_by="launch" if rec.started_by in (None, "launch") else f"experiment {rec.started_by}",
        queued_seconds=max(0.0, (rec.started_at or rec.created_at) - rec.created_at),
        completion_key=signing.completion_key(secret, rec.batch_id, rec.index, ready.boot_id, rec.completion_nonce),
        checkpoint_key=signing.checkpoint_key(secret, rec.batch_id, rec.name),
        progress=rec.report_progress,
        trial=rec.trial,
        mlflow_parent_run_id=sweep_runs.parent_run_id(rt, rec.batch_id) if rec.trial is not None else None,
    )
    token, expires = storage_token(rt, rec, launch.results_bucket)
    issued = time.time()
    payload = {**spec.model_dump(mode="json"), "storage_token": {"token": token, "expires_at": expires}}
    answer = _answer(ready.instance, talk.finish(json.dumps(payload).encode()))
    status = answer.get("status")
    if status not in ("started", "running", "exited"):
        raise RuntimeError(f"VM agent on {ready.instance} answered {answer}")
    batches.transition(rt, ready.batch_id, index, lambda r: lifecycle.token_handed(r, ready.boot_id, issued, expires))

    batches.transition(
        rt, ready.batch_id, index, lambda r: lifecycle.trainer_started(r, ready.boot_id, str(status), time.time())
    )
    log.info("%s: trainer %s on %s (boot %s)", rec.name, status, ready.instance, ready.boot_id)
    return f"trainer {status}"


def connect(rt: Runtime, host: compute.Host, expected: list[str]) -> paramiko.SSHClient:
    """An SSH connection to the verified host. Only a refused connection (sshd restarting) is
    retried here, briefly; a timeout is not: the message is redelivered later instead."""
    key = ssh.private_key(rt.settings)

    def attempt() -> paramiko.SSHClient:
        return ssh.connect(host.address, host.ssh_port, user=rt.settings.ssh_user, key=key, expected=expected)

    def refused(exc: BaseException) -> bool:
        return isinstance(exc, (paramiko.ssh_exception.NoValidConnectionsError, ConnectionRefusedError))

    return retry.call(attempt, what=f"ssh {host.name}", deadline=ssh_deadline(rt), transient=refused)


def _answer_text(result: ssh.Result) -> str:
    return f"exit {result.code}: {(result.stderr.strip() or result.stdout.strip())[-500:]!r}"


def _answer(instance: str, result: ssh.Result) -> dict[str, Any]:
    if result.code != 0:
        raise RuntimeError(f"VM agent on {instance} exited {result.code}: {result.stderr.strip()[-500:]}")
    lines = result.stdout.strip().splitlines()
    if not lines:
        raise RuntimeError(f"VM agent on {instance} answered nothing ({_answer_text(result)})")
    return _parse_answer(instance, lines[-1])


def _parse_answer(instance: str, line: str) -> dict[str, Any]:
    try:
        answer: dict[str, Any] = json.loads(line)
    except ValueError:
        raise RuntimeError(f"VM agent on {instance} answered {line[-500:]!r}") from None
    if not isinstance(answer, dict):
        raise RuntimeError(f"VM agent on {instance} answered {line[-500:]!r}")
    return answer


def _note(rt: Runtime, ready: InstanceReady, index: int, event: str, detail: str) -> None:
    batches.transition(rt, ready.batch_id, index, lambda r: lifecycle.noted(r, event, detail))
