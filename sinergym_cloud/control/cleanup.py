"""cleanup: record an experiment's result, remove its VM through the group, tear the batch down once.

On a completion message: the experiment's record moves to its next state (succeeded; failed, or
retried within the failure budget; preempted, resumed by the group's recreated VM within the
preemption budget), its VM is removed with ``deleteInstances`` (never directly), and a failure is
reported to Monitoring. When no experiment of the batch is live any more, the batch is torn down
once (``batches.finalize_if_done``). The transitions themselves are in ``lifecycle``.

Every step is safe to repeat, so duplicate, late and out-of-order completions converge.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from sinergym_cloud import contracts, lifecycle, names, signing, text
from sinergym_cloud.contracts import Completion, Progress
from sinergym_cloud.control import batches, queue, sweeps
from sinergym_cloud.control.events import Delivery
from sinergym_cloud.errors import BadMessage
from sinergym_cloud.gcp.runtime import Runtime
from sinergym_cloud.lifecycle import Budgets, Ending
from sinergym_cloud.records import ExperimentRecord, LaunchRecord

log = logging.getLogger(__name__)


def handle(rt: Runtime, d: Delivery) -> None:
    signature = Signature(d.data, d.attributes.get(SIGNATURE))
    if d.attributes.get("kind") == "progress":  # a sweep trial's episode report, for its pruner
        p = contracts.parse(Progress, d.data)
        pruned = sweeps.progress(rt, p, lambda rec: authentic(rt, rec, p, signature))
        if pruned is not None:  # the VM is given back at the decision
            queue.end(rt, pruned, owner=f"prune-{p.batch_id}-{p.experiment_index}")
        return
    c = contracts.parse(Completion, d.data)
    complete(rt, c, owner=d.message_id or "cleanup", signature=signature)


SIGNATURE = signing.SIGNATURE_ATTRIBUTE


@dataclass(frozen=True)
class Signature:
    """The bytes a Completion arrived as, and the HMAC that came with them (a message attribute)."""

    data: bytes
    value: str | None


class Refused(BadMessage):
    """A Completion that does not count: not signed with the key of the boot that is running."""


def authentic(rt: Runtime, rec: ExperimentRecord, c: Completion | Progress, signature: Signature | None) -> str:
    """Why the Completion (or Progress) does not come from the boot that runs the experiment ("" if it does)."""
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


def own_outputs(uris: list[str], bucket: str, batch_id: str, name: str, tensorboard: str | None = None) -> list[str]:
    """The output URIs under the experiment's own prefix, or its own subfolder of a gs:// TensorBoard
    folder (contracts.run_folder); anything else is dropped."""
    prefixes = [f"gs://{bucket}/{names.results_prefix(batch_id, name)}"]
    if tensorboard and tensorboard.startswith(f"gs://{bucket}/"):
        prefixes.append(contracts.run_folder(tensorboard, batch_id, name))
    return [u for u in uris if u.startswith(tuple(prefixes)) and ".." not in u.split("/")]


def ending(c: Completion, rec: ExperimentRecord, bucket: str) -> Ending:
    """What the Completion says about its boot's end, cleaned, its outputs only the experiment's own."""
    return Ending(
        status=c.status,
        boot_id=c.boot_id,
        exit_reason=text.clean(c.exit_reason, 1000),
        error_type=text.clean(c.error_type or "", 200),
        mlflow_run_id=c.mlflow_run_id,
        output_uris=tuple(own_outputs(c.output_uris, bucket, rec.batch_id, rec.name, rec.spec.tensorboard)),
        metrics=dict(c.metrics),
        timesteps=c.timesteps,
        finished_at=c.finished_at.timestamp() if c.finished_at is not None else None,
        log_tail=tuple(text.clean(line, 300) for line in c.log_tail[-lifecycle.LOG_TAIL_KEPT :]),
    )


def fail_over(rt: Runtime, launch: LaunchRecord, rec: ExperimentRecord) -> None:
    """A preempted experiment that is retried: after ``zone_failover_preemptions`` in its zone, the
    batch moves on to its next zone (at its last zone it stays)."""
    preempted_here = lifecycle.preemptions_in_zone(rec)
    limit = rt.settings.zone_failover_preemptions
    if limit and preempted_here >= limit:
        batches.move_to_next_zone(rt, launch, rec, f"preempted {preempted_here} times in {rec.zone}")


def complete(rt: Runtime, c: Completion, owner: str, signature: Signature | None = None) -> ExperimentRecord:
    """Apply a Completion, if it is signed with the key of the boot that is running the experiment,
    then do what the transition asks (see lifecycle.completed).

    Anything else (unsigned, forged, a boot that already ended, a replay) changes nothing: no budget
    spent, no VM deleted, no alert. A redelivery of the Completion that ended the experiment finds it
    terminal and only re-runs the idempotent follow-up (VM removal, the queue, teardown)."""
    settings = rt.settings
    budgets = Budgets(max_failures=settings.max_failures, max_preemptions=settings.max_preemptions)
    # Read beside the record's own read: the batch's launch record, and the listing an ending
    # chooses the next queued experiment from (queue.hand_over_in_ending).
    launch_read = rt.soon(batches.read_launch, rt, c.batch_id)
    states_read = rt.soon(batches.experiment_states, rt, c.batch_id)
    # A sweep trial's completion repeats its episode reports: the pruner needs them in the record.
    repeated_read = rt.soon(sweeps.repeated_reports, rt, c.batch_id, c.progress) if c.progress else None
    reads: queue.Reads = {}
    refusal: list[str] = []
    read_created: dict[str, float | None] = {}

    def vm_created(rec: ExperimentRecord) -> float | None:
        """When this boot's VM was created: as dispatch saw it when it claimed the boot, or (a record
        from before dispatch kept it) read from Compute, before the VM is removed."""
        if rec.vm_created_at is not None:
            return rec.vm_created_at
        if "t" not in read_created:
            read_created["t"] = batches.vm_creation_time(rt, c.zone, c.instance)
        return read_created["t"]

    def step(rec: ExperimentRecord) -> lifecycle.Transition:
        refusal.clear()
        if rec.instance != c.instance:
            raise BadMessage(
                f"completion for experiment {c.experiment_index} of {c.batch_id} names instance {c.instance}, "
                f"but that experiment runs on {rec.instance}"
            )
        why = authentic(rt, rec, c, signature)
        if why:
            refusal.append(f"experiment is {rec.state}: {why}" if rec.terminal else why)
            return lifecycle.NOT_APPLIED
        launch = launch_read.result()
        end = ending(c, rec, launch.results_bucket if launch else settings.results_bucket)
        if repeated_read is not None and rec.report_progress:
            lifecycle.reports_repeated(rec, c.boot_id, repeated_read.result())
        t = lifecycle.completed(rec, end, budgets, vm_created(rec), time.time())
        if t.applied and rec.terminal:
            try:
                states = states_read.result()
            except Exception as exc:  # noqa: BLE001 - follow_up lists again
                log.info("%s: no listing to hand its slot on with its end (%s)", rec.instance, exc)
            else:
                queue.hand_over_in_ending(rt, rec, launch, states, reads)
        return t

    rec, t = batches.transition(rt, c.batch_id, c.experiment_index, step)
    launch = launch_read.result()
    if rec is None:
        raise BadMessage(f"no experiment {c.experiment_index} in batch {c.batch_id}")
    if refusal:
        log.warning("refused a %s completion of %s: %s", c.status, rec.instance, refusal[0])
        raise Refused(f"completion refused: {refusal[0]}")
    if "recreate" in t.effects:
        log.info("%s failed (%d/%d allowed); recreating its VM", rec.instance, rec.failures, settings.max_failures)
        rt.compute.recreate_instance(rec.zone, rec.mig, rec.instance)
    if t.outcome == "retried" and c.status == "preempted" and launch is not None:
        fail_over(rt, launch, rec)
    # Also for a duplicate: the follow-up steps are each done once. An ending that started another
    # experiment cannot be the batch's last: that one is live (its own ending tears the batch down).
    if rec.terminal:
        queue.end(rt, rec, owner, launch, reads)
    return rec
