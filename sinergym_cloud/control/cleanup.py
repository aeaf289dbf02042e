"""cleanup: record an experiment's result, remove its VM through the group, tear the batch down once.

On a completion message: the experiment's record moves to its next state (succeeded; failed, or
retried within the failure budget; preempted, resumed by the group's recreated VM within the
preemption budget), its VM is removed with ``deleteInstances`` (never directly), and a failure is
reported to Monitoring. When no experiment of the batch is live any more, the batch's groups are
deleted and the batch-finished metric is written, exactly once: a create-only claim with a lease
decides who does it, and its owner, the message id, lets a redelivery finish a crashed teardown.

Every step is safe to repeat, so duplicate, late and out-of-order completions converge.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from sinergym_cloud import contracts, metrics, names, signing, text
from sinergym_cloud.contracts import BadMessage, Completion
from sinergym_cloud.events import Delivery
from sinergym_cloud.records import TERMINAL, ExperimentRecord, ExperimentState, FinalizeRecord, LaunchRecord
from sinergym_cloud.runtime import Runtime

log = logging.getLogger(__name__)

FINALIZE_LEASE = 300.0


def handle(rt: Runtime, d: Delivery) -> None:
    c = contracts.parse(Completion, d.data)
    complete(rt, c, owner=d.message_id or "cleanup", signature=Signature(d.data, d.attributes.get(SIGNATURE)))


SIGNATURE = signing.SIGNATURE_ATTRIBUTE


@dataclass(frozen=True)
class Signature:
    """The bytes a Completion arrived as, and the HMAC that came with them (a message attribute)."""

    data: bytes
    value: str | None


class Refused(BadMessage):
    """A Completion that does not count: not signed with the key of the boot that is running."""


def authentic(rt: Runtime, rec: ExperimentRecord, c: Completion, signature: Signature | None) -> str:
    """Why the Completion does not come from the boot that runs the experiment ("" if it does)."""
    if rec.boot_id is None or not (rec.terminal or rec.state in ("starting", "running")):
        return f"experiment is {rec.state}, no boot of it is running"
    if c.boot_id != rec.boot_id:
        return f"boot {c.boot_id} is not the running boot {rec.boot_id}"
    if rec.completion_nonce is None or rec.completion_key_sha256 is None:
        return f"boot {rec.boot_id} was given no completion key"
    if signature is None or not signature.value:
        return "the completion is not signed"
    key = signing.completion_key(
        signing.deployment_secret(rt.settings), rec.batch_id, rec.index, rec.boot_id, rec.completion_nonce
    )
    if signing.key_hash(key) != rec.completion_key_sha256 or not signing.verify(key, signature.data, signature.value):
        return "the signature does not verify with the running boot's key"
    return ""


def own_outputs(uris: list[str], bucket: str, batch_id: str, name: str) -> list[str]:
    """The output URIs under the experiment's own prefix; anything else is dropped."""
    prefix = f"gs://{bucket}/{names.results_prefix(batch_id, name)}"
    return [u for u in uris if u.startswith(prefix) and ".." not in u.split("/")]


def _meta(doc: dict[str, Any]) -> dict[str, str]:
    return {"state": str(doc["state"]), "instance": str(doc["instance"])}


def complete(  # noqa: PLR0915 - the protocol, in order
    rt: Runtime, c: Completion, owner: str, signature: Signature | None = None
) -> ExperimentRecord:
    """Apply a Completion, if it is signed with the key of the boot that is running the experiment.

    Anything else (unsigned, forged, a boot that already ended, a replay) changes nothing: no budget
    spent, no VM deleted, no alert. A redelivery of the Completion that ended the experiment finds it
    terminal and only re-runs the idempotent follow-up (VM removal, teardown)."""
    path = names.experiment_object(c.batch_id, c.experiment_index)
    settings = rt.settings
    actions: set[str] = set()
    refusal: list[str] = []
    vm_created = vm_creation_time(rt, c.zone, c.instance)  # the VM of this boot, before it is removed
    launch_doc = rt.state.read(names.launch_object(c.batch_id))
    bucket = str(launch_doc.data.get("results_bucket")) if launch_doc else settings.results_bucket

    def change(doc: dict[str, Any]) -> dict[str, Any] | None:
        actions.clear()
        refusal.clear()
        rec = ExperimentRecord.model_validate(doc)
        if rec.instance != c.instance:
            raise BadMessage(
                f"completion for experiment {c.experiment_index} of {c.batch_id} names instance {c.instance}, "
                f"but that experiment runs on {rec.instance}"
            )
        why = authentic(rt, rec, c, signature)
        if why:
            refusal.append(f"experiment is {rec.state}: {why}" if rec.terminal else why)
            return None
        if rec.terminal:
            return None  # a redelivery of its last boot's completion: the follow-up below makes sure of the rest
        rec.vm_booted(c.boot_id, vm_created)
        rec.mlflow_run_id = c.mlflow_run_id or rec.mlflow_run_id
        rec.output_uris = own_outputs(c.output_uris, bucket, rec.batch_id, rec.name) or rec.output_uris
        rec.metrics.update(c.metrics)
        rec.timesteps = max(rec.timesteps, c.timesteps)
        if c.finished_at is not None:
            rec.trainer_finished_at = c.finished_at.timestamp()
        detail = text.clean(c.exit_reason or c.status, 500)
        if c.status == "succeeded":
            rec.state = "succeeded"
            rec.reason = ""
        elif c.status == "failed":
            rec.failures += 1
            if rec.failures > settings.max_failures:
                rec.state = "failed"
                reason = f"{c.error_type + ': ' if c.error_type else ''}{c.exit_reason}"
                rec.reason = text.clean(reason, 1000) or "trainer failed"
            else:
                rec.state = "pending"
                rec.boot_id = None
                actions.add("recreate")
        else:  # preempted
            rec.preemptions += 1
            if rec.preemptions > settings.max_preemptions:
                rec.state = "failed"
                rec.reason = f"preempted {rec.preemptions} times (budget {settings.max_preemptions})"
            else:
                # The group recreates a preempted VM by itself; its new boot resumes from the checkpoint.
                rec.state = "pending"
                rec.boot_id = None
        if rec.terminal:
            rec.finished_at = time.time()
        rec.note(f"completion:{c.status}", detail)
        return rec.doc()

    doc = rt.state.update(path, change, metadata=_meta)
    if doc is None:
        raise BadMessage(f"no experiment {c.experiment_index} in batch {c.batch_id}")
    rec = ExperimentRecord.model_validate(doc)
    if refusal:
        log.warning("refused a %s completion of %s: %s", c.status, rec.instance, refusal[0])
        raise Refused(f"completion refused: {refusal[0]}")
    if "recreate" in actions:
        log.info("%s failed (%d/%d allowed); recreating its VM", rec.instance, rec.failures, settings.max_failures)
        rt.compute.recreate_instance(rec.zone, rec.mig, rec.instance)
    if rec.terminal:
        settle(rt, rec)
        finalize_if_done(rt, rec.batch_id, owner)
    return rec


def vm_creation_time(rt: Runtime, zone: str, instance: str) -> float | None:
    """When the VM was created (Compute Engine's creationTimestamp), for the report's VM-hours;
    None if it is gone or cannot be read. Read when a VM's life ends: its completion, or the sweeper
    giving up on it."""
    try:
        return rt.compute.created_at(zone, instance)
    except Exception as exc:  # noqa: BLE001 - a missing cost figure must not stop the cleanup
        log.warning("could not read the creation time of %s: %s", instance, exc)
        return None


def settle(rt: Runtime, rec: ExperimentRecord) -> None:
    """The follow-up of a terminal experiment: its VM removed through the group, a failure reported.

    Each step is marked in the record when done, so a redelivery redoes only what is missing."""
    if rec.delete_requested_at is None:
        rt.compute.delete_instances(rec.zone, rec.mig, [rec.instance])
        log.info("%s %s: deleteInstances requested for %s", rec.batch_id, rec.state, rec.instance)
        _mark(rt, rec, "delete_requested_at")
    if rec.state == "failed" and rec.alerted_at is None:
        metrics.experiment_failed(rt.clients, rec.batch_id, rec.name, rec.reason)
        _mark(rt, rec, "alerted_at")


def _mark(rt: Runtime, rec: ExperimentRecord, field: str) -> None:
    def change(doc: dict[str, Any]) -> dict[str, Any] | None:
        if doc.get(field):
            return None
        doc[field] = time.time()
        return doc

    rt.state.update(names.experiment_object(rec.batch_id, rec.index), change, metadata=_meta)


def set_terminal(
    rt: Runtime, batch_id: str, index: int, state: ExperimentState, reason: str
) -> ExperimentRecord | None:
    """Force an experiment into a terminal state (cancel, rollback, sweeper), unless it already is."""
    assert state in TERMINAL

    def change(doc: dict[str, Any]) -> dict[str, Any] | None:
        rec = ExperimentRecord.model_validate(doc)
        if rec.terminal:
            return None
        rec.state = state
        rec.reason = reason
        rec.finished_at = time.time()
        rec.note(state, reason)
        return rec.doc()

    doc = rt.state.update(names.experiment_object(batch_id, index), change, metadata=_meta)
    return ExperimentRecord.model_validate(doc) if doc else None


def experiment_states(rt: Runtime, batch_id: str) -> dict[int, str]:
    """Every experiment's state, from one listing (the state is in each object's metadata)."""
    states = {}
    prefix = names.experiments_prefix(batch_id)
    for name, meta, _ in rt.state.listing(prefix):
        index = int(name[len(prefix) :].removesuffix(".json"))
        states[index] = meta.get("state", "")
    return states


def finalize_if_done(rt: Runtime, batch_id: str, owner: str) -> bool:  # noqa: PLR0911 - one return per reason to stop
    """If no experiment of the batch is live, delete its groups and raise the alert, once. True if done."""
    launch_doc = rt.state.read(names.launch_object(batch_id))
    if launch_doc is None:
        return False
    launch = LaunchRecord.model_validate(launch_doc.data)
    if launch.status == "launching":
        return False
    states = experiment_states(rt, batch_id)
    if len(states) < launch.experiments or any(s not in TERMINAL for s in states.values()):
        return False
    counts = dict(Counter(states.values()))
    path = names.finalize_object(batch_id)
    now = time.time()
    claim = FinalizeRecord(owner=owner, lease_until=now + FINALIZE_LEASE, counts=counts)
    if not rt.state.create(path, claim.doc()):
        current = rt.state.read(path)
        if current is None:
            return False
        held = FinalizeRecord.model_validate(current.data)
        if held.alerted:
            rt.state.delete(names.active_object(batch_id))
            return True
        if held.owner != owner and held.lease_until > now:
            log.info("batch %s: teardown is being done by %s", batch_id, held.owner)
            return False

        def take_over(doc: dict[str, Any]) -> dict[str, Any] | None:
            if doc.get("alerted") or (doc["owner"] != owner and doc["lease_until"] > time.time()):
                raise _Lost
            doc["owner"] = owner
            doc["lease_until"] = time.time() + FINALIZE_LEASE
            return doc

        try:
            rt.state.update(path, take_over)
        except _Lost:
            return False
        claimed = rt.state.read(path)
        assert claimed is not None, "a claim just written cannot be missing"
        claim = FinalizeRecord.model_validate(claimed.data)
    if not claim.mig_deleted:
        for mig in launch.migs:
            deleted = rt.compute.delete_group(launch.zone, mig)
            log.info("batch %s: group %s %s", batch_id, mig, "deleted" if deleted else "was already gone")
        rt.state.update(path, lambda doc: {**doc, "mig_deleted": True})
    metrics.batch_finished(rt.clients, batch_id, launch.group, counts)
    rt.state.update(path, lambda doc: {**doc, "alerted": True, "finished_at": time.time(), "counts": counts})
    rt.state.delete(names.active_object(batch_id))
    log.info("batch %s finished: %s", batch_id, counts)
    return True


class _Lost(Exception):
    pass


def cancel(rt: Runtime, batch_id: str, reason: str = "cancelled by user") -> dict[str, Any]:
    """Stop a batch: no further launch, every live experiment cancelled, its groups and VMs deleted."""
    launch_doc = rt.state.read(names.launch_object(batch_id))
    if launch_doc is None:
        raise KeyError(f"no batch {batch_id!r}")

    def cancelled(doc: dict[str, Any]) -> dict[str, Any] | None:
        if doc["status"] in ("cancelled", "failed"):
            return None
        doc["status"] = "cancelled"
        doc["error"] = reason
        return doc

    launch = LaunchRecord.model_validate(rt.state.update(names.launch_object(batch_id), cancelled))
    changed = []
    for index, state in sorted(experiment_states(rt, batch_id).items()):
        if state not in TERMINAL and set_terminal(rt, batch_id, index, "cancelled", reason):
            changed.append(index)
    for mig in launch.migs:
        rt.compute.delete_group(launch.zone, mig)
    finalize_if_done(rt, batch_id, owner=f"cancel-{batch_id}")
    return {"batch_id": batch_id, "cancelled": changed, "groups_deleted": launch.migs}
