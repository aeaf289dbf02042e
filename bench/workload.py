"""A short synthetic workload for the control-plane benchmark, in place of the trainer.

The benchmark measures the control plane (ready -> trainer started, completion -> deleteInstances,
batch done -> group deleted) for up to 50 experiments at once, which 50 real EnergyPlus trainers
would drown on two cores. This workload behaves like the trainer towards the control plane: it is
started by the same VM agent from the same TrainerSpec, waits a moment, and publishes the same
Completion message. It is only ever used by bench/ and the tests (SINERGYM_TRAINER_MODULE=bench.workload).

While it works it prints a line a second (``workload: second N``), as a trainer logs. ``BENCH_FAIL``
(a JSON list of experiment indices) makes those experiments fail as a trainer does: a traceback on
stderr and a failed Completion with the error.

For sweeps, ``BENCH_OBJECTIVE`` scripts the objective per episode, so a test knows which trials the
pruner must stop: a JSON object of experiment index -> the value after each episode (``"*"`` for
the others), run ``BENCH_EPISODE_SECONDS`` apart. A trial whose spec asks for progress reports
publishes a signed Progress after each episode, as the trainer does; its Completion reports the
best value as ``best_eval_mean_reward`` and the last as ``final_mean_reward``. ``BENCH_DUPLICATE=1``
publishes every message twice (Pub/Sub's at-least-once delivery, made certain). ``BENCH_SCHEDULE``
names a JSON file of batch id -> a moment (seconds since the epoch): every experiment of such a batch
ends at that moment, however long it ran (a burst of completions within one second). A key of
``BENCH_OBJECTIVE`` may name the batch too (``"BATCH/INDEX"``, ``"BATCH/*"``), ahead of the plain ones.

``BENCH_LIKE_TRAINER=1`` makes it behave like the trainer in everything but the training
(bench/trainer_like.py: heartbeat, MLflow run, checkpoints and resume, verified outputs, SIGTERM);
the soak (tests/soak) runs it so.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any


def main(argv: list[str]) -> int:
    # Like the trainer, the Pub/Sub client is built and connected at start, so the completion goes
    # out at once.
    from sinergym_cloud import contracts, logs, names, signing
    from sinergym_cloud.config import Settings
    from sinergym_cloud.contracts import Completion, TrainerSpec
    from sinergym_cloud.gcp.clients import Clients

    spec = TrainerSpec.model_validate_json(Path(argv[argv.index("--spec") + 1]).read_text())
    script = json.loads(os.environ.get("BENCH_OBJECTIVE") or "null")
    if os.environ.get("BENCH_LIKE_TRAINER") == "1":
        from bench import trainer_like

        values = scripted(script, spec.batch_id, spec.experiment_index)
        return trainer_like.run(spec, values or [0.0], float(os.environ.get("BENCH_EPISODE_SECONDS", "1")))
    clients = Clients(Settings.from_env({**os.environ, "GOOGLE_CLOUD_PROJECT": spec.project}))
    clients.open_publisher()
    started = dt.datetime.now(dt.UTC)
    copies = 2 if os.environ.get("BENCH_DUPLICATE") == "1" else 1

    def publish(data: bytes, **attributes: str) -> None:
        if spec.completion_key:
            attributes[signing.SIGNATURE_ATTRIBUTE] = signing.sign(spec.completion_key, data)
        for _ in range(copies):
            clients.publish(names.TOPIC_COMPLETIONS, data, 30.0, **attributes)

    metrics: dict[str, float] = {}
    reported: dict[str, dict[str, float]] = {}
    failing = spec.experiment_index in json.loads(os.environ.get("BENCH_FAIL") or "[]")
    status, reason, error_type = "succeeded", "benchmark workload", None
    print(f"workload: experiment {spec.experiment_index} ({spec.experiment_name}) starts", flush=True)
    schedule = Path(os.environ.get("BENCH_SCHEDULE") or "/nonexistent")
    end_at = json.loads(schedule.read_text()).get(spec.batch_id) if schedule.is_file() else None
    if script is None:
        work = float(os.environ.get("BENCH_WORK_SECONDS", "2"))
        end = time.monotonic() + (max(0.0, float(end_at) - time.time()) if end_at is not None else work)
        second = 0
        while (left := end - time.monotonic()) > 0:
            time.sleep(min(1.0, left))
            second += 1
            print(f"workload: second {second}", flush=True)
        if failing:
            try:
                raise RuntimeError(f"the workload of experiment {spec.experiment_index} failed on purpose")
            except RuntimeError as exc:
                traceback.print_exc()
                status, reason, error_type = "failed", str(exc), type(exc).__name__
    else:
        values = scripted(script, spec.batch_id, spec.experiment_index)
        reported = episodes(spec, values, publish)
        if values:
            metrics = {"best_eval_mean_reward": max(values), "final_mean_reward": values[-1], "episodes": len(values)}
    message = Completion(
        batch_id=spec.batch_id,
        experiment_index=spec.experiment_index,
        experiment_name=spec.experiment_name,
        instance=spec.instance,
        zone=spec.zone,
        boot_id=spec.boot_id,
        status=status,
        exit_reason=reason,
        error_type=error_type,
        log_tail=[f"{error_type}: {reason}"] if error_type else [],
        started_at=started,
        metrics=metrics,
        progress=reported,  # as the trainer: its reports again, for any delivered after this
        finished_at=dt.datetime.now(dt.UTC),  # the latency of cleanup is measured from here
    )
    print(f"workload: experiment {spec.experiment_index} {status}", flush=True)
    logs.request_flush(final=True)  # as the trainer: its log is stored before the completion deletes the VM
    publish(contracts.dump(message))
    return 0


def episodes(spec: Any, values: list[float], publish: Callable[..., None]) -> dict[str, dict[str, float]]:
    """Run the scripted episodes, BENCH_EPISODE_SECONDS each; a trial whose spec asks for progress
    reports publishes a signed Progress after each. Returns the reports, which the Completion repeats."""
    from sinergym_cloud import contracts
    from sinergym_cloud.contracts import Progress

    reported: dict[str, dict[str, float]] = {}
    for episode, value in enumerate(values, 1):
        time.sleep(float(os.environ.get("BENCH_EPISODE_SECONDS", "1")))
        if spec.progress:
            reported[str(episode)] = {"eval_mean_reward": value, "mean_reward": value}
            report = Progress(batch_id=spec.batch_id, experiment_index=spec.experiment_index,
                              instance=spec.instance, zone=spec.zone, boot_id=spec.boot_id, episode=episode,
                              metrics=reported[str(episode)])  # fmt: skip
            publish(contracts.dump(report), kind="progress")
    return reported


def scripted(script: dict[str, list[float]] | None, batch_id: str, index: int) -> list[float]:
    """The objective after each episode for experiment ``index`` of ``batch_id`` (BENCH_OBJECTIVE)."""
    if not script:
        return []
    for key in (f"{batch_id}/{index}", f"{batch_id}/*", str(index), "*"):
        if key in script:
            return [float(v) for v in script[key]]
    return []


if __name__ == "__main__":
    sys.exit(main(sys.argv))
