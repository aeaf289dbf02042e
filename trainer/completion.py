"""The trainer's last word: the Completion message, signed with the boot's key, on every path.

``LogTail`` keeps the last lines logged, so a failed run's message says what happened just before.
"""

from __future__ import annotations

import collections
import datetime as dt
import logging
from typing import Any

from sinergym_cloud import contracts, names
from sinergym_cloud.contracts import Completion
from sinergym_cloud.contracts.messages import MAX_PROGRESS_EPISODES
from trainer.context import Context, Outcome

log = logging.getLogger("trainer")

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class LogTail(logging.Handler):
    """Keeps the last lines logged, for the failure message."""

    def __init__(self, size: int = 30) -> None:
        super().__init__(logging.INFO)
        self.lines: collections.deque[str] = collections.deque(maxlen=size)
        self.setFormatter(logging.Formatter(FORMAT))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record)[:1000])


def setup_logging() -> LogTail:
    """Log to stderr (unless a handler is there already) and into a tail for the completion."""
    tail = LogTail()
    root = logging.getLogger()
    if not any(isinstance(h, logging.StreamHandler) for h in root.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(FORMAT))
        root.addHandler(handler)
    root.addHandler(tail)
    root.setLevel(logging.INFO)
    return tail


def message(ctx: Context, outcome: Outcome, tail: LogTail, started: float) -> Completion:
    """The Completion of this boot's run: the failure's last log lines only when it failed."""
    assert ctx.instance
    assert ctx.zone
    assert ctx.boot_id
    metrics = {k: float(v) for k, v in outcome.metrics.items() if isinstance(v, (int, float))}
    return Completion(
        batch_id=ctx.batch_id,
        experiment_index=ctx.index,
        experiment_name=ctx.name,
        instance=ctx.instance,
        zone=ctx.zone,
        boot_id=ctx.boot_id,
        status=outcome.status,
        exit_reason=outcome.reason[:4000],
        error_type=outcome.error_type,
        log_tail=list(tail.lines)[-20:] if outcome.status == "failed" else [],
        metrics=metrics,
        output_uris=outcome.output_uris[:100],
        mlflow_run_id=outcome.mlflow_run_id,
        timesteps=outcome.timesteps,
        progress=dict(list(outcome.progress.items())[-MAX_PROGRESS_EPISODES:]),
        started_at=dt.datetime.fromtimestamp(started, dt.UTC),
        finished_at=dt.datetime.now(dt.UTC),
    )


def publish(clients: Any, completion: Completion, completion_key: str | None) -> str:
    """Publish the completion (signed when dispatch gave a key), retried for up to two minutes.

    First, everything the run printed is stored by the VM's log shipper (sinergym_cloud/logs.py):
    the completion makes cleanup delete the VM, and a failure's traceback must outlive it."""
    from sinergym_cloud import logs, signing
    from sinergym_cloud.gcp import retry

    log.info("experiment %s: %s; storing the log before reporting it", completion.experiment_name, completion.status)
    logs.request_flush(final=True)
    data = contracts.dump(completion)
    signed: dict[str, Any] = {signing.SIGNATURE_ATTRIBUTE: signing.sign(completion_key, data)} if completion_key else {}
    message_id: str = retry.call(
        lambda: clients.publish(
            names.TOPIC_COMPLETIONS, data, batch_id=completion.batch_id, status=completion.status, **signed
        ),
        what="publish completion",
        deadline=120,
    )
    log.info("completion %s published (message %s)", completion.status, message_id)
    return message_id
