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

from sinergym_cloud import contracts, lifecycle
from sinergym_cloud.contracts import Completion
from sinergym_cloud.control import batches, queue
from sinergym_cloud.errors import BadMessage
from sinergym_cloud.events import Delivery
from sinergym_cloud.lifecycle import Budgets, Ending
from sinergym_cloud.records import ExperimentRecord
from sinergym_cloud.runtime import Runtime

log = logging.getLogger(__name__)


def handle(rt: Runtime, d: Delivery) -> None:
    complete(rt, contracts.parse(Completion, d.data), owner=d.message_id or "cleanup")


def complete(rt: Runtime, c: Completion, owner: str) -> ExperimentRecord:
    """Apply a completion to its experiment, then do what the transition asks (see lifecycle.completed)."""
    settings = rt.settings
    budgets = Budgets(max_failures=settings.max_failures, max_preemptions=settings.max_preemptions)
    vm_created = batches.vm_creation_time(rt, c.zone, c.instance)  # the VM of this boot, before it is removed
    end = Ending(
        status=c.status,
        boot_id=c.boot_id,
        exit_reason=c.exit_reason,
        error_type=c.error_type or "",
        mlflow_run_id=c.mlflow_run_id,
        output_uris=tuple(c.output_uris),
        metrics=dict(c.metrics),
        timesteps=c.timesteps,
        finished_at=c.finished_at.timestamp() if c.finished_at is not None else None,
    )

    def step(rec: ExperimentRecord) -> lifecycle.Transition:
        if rec.instance != c.instance:
            raise BadMessage(
                f"completion for experiment {c.experiment_index} of {c.batch_id} names instance {c.instance}, "
                f"but that experiment runs on {rec.instance}"
            )
        return lifecycle.completed(rec, end, budgets, vm_created, time.time())

    rec, t = batches.transition(rt, c.batch_id, c.experiment_index, step)
    if rec is None:
        raise BadMessage(f"no experiment {c.experiment_index} in batch {c.batch_id}")
    if t.outcome == "stale":
        log.info("ignoring a %s completion of %s from an earlier boot", c.status, rec.instance)
    if "recreate" in t.effects:
        log.info("%s failed (%d/%d allowed); recreating its VM", rec.instance, rec.failures, settings.max_failures)
        rt.compute.recreate_instance(rec.zone, rec.mig, rec.instance)
    if rec.terminal:  # also for a duplicate: the follow-up steps are each done once
        batches.settle(rt, rec)
        queue.start_next(rt, rec)
        batches.finalize_if_done(rt, rec.batch_id, owner)
    return rec
