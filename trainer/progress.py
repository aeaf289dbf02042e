"""A sweep trial's episode reports, for its pruner (control/sweeps.py).

After each episode (its evaluation done, and its checkpoint when it has one: the runner queues
the report on the background worker after the checkpoint's write), a trial whose sweep has a
pruner publishes a Progress on the completions topic (attribute ``kind=progress``), signed with its
completion key like its Completion. A report that cannot be published is logged and training goes
on: the worst case is a trial that is not pruned.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sinergym_cloud import contracts, names, signing
from sinergym_cloud.contracts import Progress
from sinergym_cloud.gcp import retry
from trainer.context import Context

log = logging.getLogger(__name__)


def enabled(ctx: Context) -> bool:
    """Whether this run reports its episodes: a sweep trial with a pruner, started by dispatch."""
    return bool(ctx.progress and ctx.on_vm and ctx.instance and ctx.zone and ctx.boot_id)


def values(summary: dict[str, float], eval_mean: float | None) -> dict[str, float]:
    """An episode's report: its summary, and its evaluation's mean reward if it had one. The
    Completion repeats every report (``Completion.progress``), so one delivered late still counts."""
    metrics = {k: float(v) for k, v in summary.items()}
    if eval_mean is not None:
        metrics["eval_mean_reward"] = float(eval_mean)
    return metrics


def report(
    ctx: Context, clients: Callable[[], Any], episode: int, summary: dict[str, float], eval_mean: float | None
) -> None:
    """Publish episode ``episode``'s metrics (and its evaluation's mean reward) if the run reports
    progress. ``clients`` is asked for only then: a run on a laptop has no cloud to publish to."""
    if not enabled(ctx) or ctx.instance is None or ctx.zone is None or ctx.boot_id is None:
        return
    metrics = values(summary, eval_mean)
    message = Progress(batch_id=ctx.batch_id, experiment_index=ctx.index, instance=ctx.instance, zone=ctx.zone,
                       boot_id=ctx.boot_id, episode=episode, metrics=metrics)  # fmt: skip
    data = contracts.dump(message)
    attributes = {"kind": "progress"}
    if ctx.completion_key:
        attributes[signing.SIGNATURE_ATTRIBUTE] = signing.sign(ctx.completion_key, data)
    try:
        retry.call(
            lambda: clients().publish(names.TOPIC_COMPLETIONS, data, 30.0, **attributes),
            what="publish progress",
            deadline=60,
        )
    except Exception as exc:  # noqa: BLE001 - a lost report costs a pruning decision, never the training
        log.warning("progress of episode %d not published: %s", episode, exc)
