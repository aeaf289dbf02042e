"""launch: a batch message becomes state records, a managed instance group and one VM per experiment.

Idempotent from top to bottom, so a redelivered or resubmitted batch converges on the same end
state: the batch is claimed by a create-only object, experiment records are create-only, the group
insert treats "already exists" as done, and ``createInstances`` only asks for the names the group
does not have yet. Nothing is created for a batch that fails validation.
"""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from google.api_core import exceptions

from sinergym_cloud import budget, capacity, contracts, errors, names, sweep
from sinergym_cloud.contracts import Batch
from sinergym_cloud.control import announce, batch_index, queue, sweep_runs, sweeps
from sinergym_cloud.control.events import Delivery
from sinergym_cloud.errors import Permanent
from sinergym_cloud.gcp import retry
from sinergym_cloud.gcp.runtime import Runtime
from sinergym_cloud.records import ExperimentRecord, LaunchRecord

log = logging.getLogger(__name__)

MAX_LAUNCH_ATTEMPTS = 5


def parse_batch(d: Delivery) -> Batch:
    """The Batch in a message. A batch without an id gets one derived from the message id, so a
    redelivery of the same message names the same batch."""
    contracts.check_size(d.data)
    try:
        raw: Any = json.loads(d.data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return contracts.parse(Batch, d.data)  # raises BadMessage with the precise reason
    if isinstance(raw, dict) and not raw.get("batch_id") and d.message_id:
        raw["batch_id"] = f"msg-{d.message_id}".lower()[:63]
    return contracts.parse(Batch, raw)


def handle(rt: Runtime, d: Delivery) -> None:
    """A Batch message: launched, or refused before anything is made; a refusal is announced on
    ``batch-events`` (``batch.rejected``, with the fields at fault) besides its dead letter."""
    try:
        batch = parse_batch(d)
    except Permanent as exc:
        announce.rejected(rt, d, exc)
        raise
    launch(rt, batch, message_id=d.message_id, delivery=d)


def mlflow_experiment(batch: Batch) -> str:
    return f"{batch.group_name}.{batch.batch_id}"


def plan(batch: Batch) -> list[tuple[str, list[int]]]:
    """(group name, experiment indices) for each group of the batch: 1000 instances at most each."""
    parts: dict[int, list[int]] = {}
    for index in range(len(batch.experiments)):
        parts.setdefault(names.mig_part(index), []).append(index)
    return [(names.mig_name(batch.group_name, batch.batch_id, p), idx) for p, idx in sorted(parts.items())]


def decide_parallelism(rt: Runtime, batch: Batch) -> capacity.Parallelism:
    """How many experiments of the batch run at once: ``max_parallel``, or what the region's quotas
    allow for the template's VMs, whichever is lower (capacity.py). Quotas that cannot be read
    (permissions, an outage) bound nothing: the group then reports any quota error at run time."""
    shape = quotas = None
    try:
        shape = rt.compute.vm_shape(batch.template_name, batch.zone)
        quotas = rt.compute.region_quotas(capacity.region_of(batch.zone))
    except Exception as exc:  # noqa: BLE001 - quotas are advice; launching without them is still right
        log.warning("batch %s: quotas not read (%s: %s); parallelism from max_parallel only", batch.batch_id,
                    type(exc).__name__, exc)  # fmt: skip
    p = capacity.parallelism(len(batch.experiments), shape, quotas, batch.max_parallel)
    log.info("batch %s: %d experiment(s) at once (%s)", batch.batch_id, p.value, p.reason)
    crowded = capacity.crowded(shape, [e.n_envs for e in batch.experiments]) if shape is not None else []
    if crowded and shape is not None:
        log.warning("batch %s: experiment(s) %s ask for more simulations (--n-envs) than the %d vCPUs of %s "
                    "run at full speed; a template with as many vCPUs as --n-envs would", batch.batch_id,
                    ", ".join(map(str, crowded[:10])), shape.vcpus, shape.machine_type)  # fmt: skip
    return p


def experiment_records(batch: Batch, parallel: int | None = None) -> list[ExperimentRecord]:
    """One record per experiment: the first ``parallel`` start now (pending), the rest wait (queued).

    With a VM-hour budget, the first wave is cut where its estimates would pass it: the experiment
    there and all after it are never started (cancelled, reason ``budget``). A sweep's (an expanded
    batch, sweep.expand) say their trial, and its parameters where planned."""
    submitted = batch.submitted_at or datetime.now(UTC)
    wave = len(batch.experiments) if parallel is None else min(parallel, len(batch.experiments))
    fit = budget.first_wave(batch.max_vm_hours, batch.experiments, wave)
    cut = budget_cut_reason(batch, fit) if fit < wave else ""
    now = time.time()
    trials: dict[str, Any] = {}
    s = batch.sweep
    planned = sweep.plan(s) if s is not None else None
    for i in range(len(batch.experiments) if s is not None else 0):
        assert s is not None
        trial = s.locate(i)[0]
        trials[str(i)] = {
            "trial": trial,
            "params": planned[trial] if planned is not None else None,
            "report_progress": s.pruner is not None,
        }
    records = []
    for i, exp in enumerate(batch.experiments):
        state = "pending" if i < fit else ("cancelled" if cut else "queued")
        rec = ExperimentRecord(
            batch_id=batch.batch_id,
            index=i,
            name=contracts.experiment_name(exp, submitted, i),
            group=batch.group_name,
            zone=batch.zone,
            mig=names.mig_name(batch.group_name, batch.batch_id, names.mig_part(i)),
            instance=names.instance_name(batch.group_name, batch.batch_id, i),
            spec=exp,
            state=state,
            started_by="launch" if i < fit else None,
            **trials.get(str(i), {}),
        )
        if state == "cancelled":
            rec.reason, rec.finished_at = cut, now
            rec.note("cancelled", cut)
        records.append(rec)
    return records


def budget_cut_reason(batch: Batch, fit: int) -> str:
    """Why launch starts only the first ``fit`` experiments: the next one's estimate passes the budget."""
    assert batch.max_vm_hours is not None
    running = sum(budget.estimate_vm_hours(e) for e in batch.experiments[:fit])
    verdict = budget.Verdict(
        fits=False,
        limit=batch.max_vm_hours,
        used=0.0,
        running=running,
        candidate=budget.estimate_vm_hours(batch.experiments[fit]),
    )
    return verdict.reason


def acceptable(rt: Runtime, batch: Batch) -> Batch:
    """The batch as launch will run it (stamped, a sweep expanded), or Permanent naming why it is
    refused: checked before anything is made."""
    if not rt.compute.template_exists(batch.template_name):
        raise Permanent(
            f"instance template {batch.template_name!r} does not exist in project {rt.settings.project}; "
            "nothing was created (deploy infra/ or pass --template_name)"
        )
    if batch.submitted_at is None:
        batch = batch.model_copy(update={"submitted_at": datetime.now(UTC)})
    batch = expand_sweep(batch)
    batch.check_paths(batch.results_bucket or rt.settings.results_bucket)
    return batch


def launch(rt: Runtime, batch: Batch, message_id: str = "", delivery: Delivery | None = None) -> LaunchRecord:
    state = rt.state
    bid = batch.batch_id
    current = state.read(names.launch_object(bid))
    if current is None:
        try:
            batch = acceptable(rt, batch)
        except Permanent as exc:
            if delivery is not None:
                announce.rejected(rt, delivery, exc)
            raise
        accepted = {"batch": batch.model_dump(mode="json"), "accepted_at": time.time(), "message_id": message_id}
        state.create(names.batch_object(bid), accepted)
        stored = state.read(names.batch_object(bid))
        assert stored is not None
        batch = Batch.model_validate(stored.data["batch"])  # the first accepted version wins
        parallel = decide_parallelism(rt, batch)
        record = LaunchRecord(
            batch_id=bid,
            group=batch.group_name,
            zone=batch.zone,
            template=batch.template_name,
            results_bucket=batch.results_bucket or rt.settings.results_bucket,
            migs=[mig for mig, _ in plan(batch)],
            experiments=len(batch.experiments),
            mlflow_experiment=mlflow_experiment(batch),
            message_id=message_id,
            parallelism=parallel.value,
            parallelism_reason=parallel.reason,
            zones=batch.all_zones if batch.zones else [],
            max_vm_hours=batch.max_vm_hours,
            submitted_by=batch.submitted_by or "",
            submitted_at=batch.submitted_at.timestamp() if batch.submitted_at else None,
            retry_of=batch.retry_of.model_dump() if batch.retry_of else None,
        )
        state.create(names.launch_object(bid), record.doc())
    else:
        stored = state.read(names.batch_object(bid))
        if stored is None:
            raise RuntimeError(f"batch {bid}: launch record without batch record")
        if stored.data["batch"] != batch.model_dump(mode="json") and message_id != stored.data.get("message_id"):
            log.info("batch %s was already accepted; the resubmission is ignored", bid)
        batch = Batch.model_validate(stored.data["batch"])
    launched = state.read(names.launch_object(bid))
    assert launched is not None, "the launch record was written above or found"
    record = LaunchRecord.model_validate(launched.data)
    if record.status != "launching":
        log.info("batch %s is already %s: nothing to do", bid, record.status)
        return record
    batch_index.launched(rt, record)

    def count_attempt(doc: dict[str, Any]) -> dict[str, Any]:
        doc["attempts"] = doc.get("attempts", 0) + 1
        return doc

    attempt_doc = state.update(names.launch_object(bid), count_attempt)
    attempts = int((attempt_doc or {}).get("attempts", 1))
    try:
        _create(rt, batch, record)
    except Exception as exc:
        # Compute refusing a creation as asked (400/404: no such template, a bad name) is final too.
        if errors.classify(exc) in ("permanent", "rejected") or attempts >= MAX_LAUNCH_ATTEMPTS:
            reason = f"launch failed after {attempts} attempt(s): {type(exc).__name__}: {exc}"
            log.error("batch %s: %s; rolling back", bid, reason)
            rollback(rt, batch, reason)
            raise Permanent(reason) from exc
        log.warning("batch %s: launch attempt %d failed (%s); Pub/Sub will redeliver", bid, attempts, exc)
        raise
    return _mark_launched(rt, batch)


def _create(rt: Runtime, batch: Batch, record: LaunchRecord) -> None:
    bid = batch.batch_id
    _ensure_bucket(rt, record.results_bucket)
    records = experiment_records(batch, record.parallelism)
    starting = {r.index for r in records if r.state == "pending"}
    cut = next((r.reason for r in records if r.state == "cancelled"), "")
    if cut:
        rt.state.update(
            names.launch_object(bid),
            lambda doc: (
                None if doc.get("budget_reached") else {**doc, "budget_reached": cut, "budget_reached_at": time.time()}
            ),
        )
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(
            pool.map(
                lambda r: rt.state.create(names.experiment_object(bid, r.index), r.doc(), r.object_metadata()),
                records,
            )
        )
    unrunnable: list[ExperimentRecord] = []
    if batch.sweep is not None:  # the first wave's trials get their parameters before their VMs
        sweep_runs.ensure_parent_run(rt, batch, record.mlflow_experiment)
        for r in records:
            if r.index in starting and r.params is None:
                current = rt.state.read(names.experiment_object(bid, r.index))
                assert current is not None, "created above"
                ready = sweeps.ensure_params(rt, ExperimentRecord.model_validate(current.data))
                if ready.terminal:
                    unrunnable.append(ready)
        starting -= {r.index for r in unrunnable}
    rt.state.put(names.active_object(bid), {"batch_id": bid, "since": time.time()})
    for zone in batch.all_zones:  # where the orphan sweep looks, failover zones included
        rt.state.put(names.zone_object(zone), {"zone": zone})
    for mig, indices in plan(batch):
        if _cancelled(rt, bid):
            return
        rt.compute.ensure_group(batch.zone, mig, batch.template_name, batch_id=bid)
        wanted = {
            names.instance_name(batch.group_name, bid, i): names.instance_metadata(bid, i)
            for i in indices
            if i in starting
        }
        created = rt.compute.create_instances(batch.zone, mig, wanted)
        log.info("batch %s: group %s has %d instance(s) (%d created now)", bid, mig, len(wanted), len(created))
    # Once the VMs are asked for (the events never hold them up): each record's state, in one publication.
    announce.created(rt, [r for r in records if r.index not in {u.index for u in unrunnable}])
    for ended in unrunnable:  # their slots go to the next trials, now that the groups exist
        queue.start_next(rt, ended)


def expand_sweep(batch: Batch) -> Batch:
    """A sweep batch's trials (sweep.expand); a planned point that is no valid experiment is refused."""
    try:
        return sweep.expand(batch)
    except ValueError as exc:
        raise Permanent(f"batch {batch.batch_id}: {exc}") from None


def _cancelled(rt: Runtime, batch_id: str) -> bool:
    current = rt.state.read(names.launch_object(batch_id))
    return current is not None and current.data.get("status") == "cancelled"


def _mark_launched(rt: Runtime, batch: Batch) -> LaunchRecord:
    def launched(doc: dict[str, Any]) -> dict[str, Any] | None:
        if doc["status"] != "launching":
            return None
        doc["status"] = "launched"
        doc["launched_at"] = time.time()
        return doc

    doc = rt.state.update(names.launch_object(batch.batch_id), launched)
    record = LaunchRecord.model_validate(doc)
    if record.status == "cancelled":
        # Cancelled while we were creating: undo what we made.
        for zone, mig in record.groups():
            rt.compute.delete_group(zone, mig)
    elif record.status == "launched" and record.max_vm_hours is not None:
        from sinergym_cloud.control import batches

        batches.finalize_if_done(rt, batch.batch_id, owner=f"launch-{batch.batch_id}")  # the budget left none
    log.info("batch %s: %s with %d experiment(s) in %s", batch.batch_id, record.status, record.experiments, record.migs)
    return record


def _ensure_bucket(rt: Runtime, bucket: str) -> None:
    client = rt.clients.storage

    def ensure() -> None:
        if client.lookup_bucket(bucket, timeout=10) is None:
            try:
                client.create_bucket(bucket, timeout=10)
                log.info("created results bucket %s", bucket)
            except exceptions.Conflict:
                pass

    retry.call(ensure, what=f"ensure bucket {bucket}", deadline=60)


def rollback(rt: Runtime, batch: Batch, reason: str) -> None:
    """Undo a launch that cannot succeed: delete its groups, fail its experiments, say so once."""
    from sinergym_cloud.control import batches

    for mig, _ in plan(batch):
        for zone in batch.all_zones:
            rt.compute.delete_group(zone, mig if zone == batch.zone else names.zone_mig_name(mig, zone))

    def failed(doc: dict[str, Any]) -> dict[str, Any] | None:
        if doc["status"] in ("failed", "cancelled"):
            return None
        doc["status"] = "failed"
        doc["error"] = reason
        return doc

    rt.state.update(names.launch_object(batch.batch_id), failed)
    made = []
    for rec in experiment_records(batch):
        # Records a crashed launch never wrote are created failed; existing ones are moved to failed.
        rec.state = "failed"
        rec.reason = reason
        rec.finished_at = time.time()
        if rt.state.create(names.experiment_object(batch.batch_id, rec.index), rec.doc(), rec.object_metadata()):
            made.append(rec)
        else:
            batches.set_terminal(rt, batch.batch_id, rec.index, "failed", reason)
    announce.created(rt, made)
    batches.finalize_if_done(rt, batch.batch_id, owner=f"rollback-{batch.batch_id}")
