"""The bench workload behaving like the trainer in everything the control plane and the soak check,
without training anything: ``BENCH_LIKE_TRAINER=1`` (bench/workload.py starts it).

What the real trainer does around its training, it does here with the trainer's own modules, so
that the soak (tests/soak) checks the real behaviour and not a copy of it:

- a heartbeat object every ``SINERGYM_HEARTBEAT_SECONDS`` (trainer/heartbeat.py), so a hung guest
  is seen by the sweeper as a silent trainer;
- one MLflow run per experiment (trainer/tracking.py), resumed after a preemption through the
  signed checkpoint (trainer/checkpoint.py) that it saves after every episode, with the run's id in it;
- outputs uploaded and verified against their manifest before the completion (trainer/storage.py);
- on SIGTERM (a preemption's notice, a deletion), a checkpoint, the run ended KILLED and a
  ``preempted`` completion, as the trainer's SIGTERM path does; the completion on every path
  (trainer/completion.py), and a sweep trial's Progress after each episode (trainer/progress.py).

Its "training" is ``BENCH_EPISODE_SECONDS`` per episode; the episodes and their objective values are
``BENCH_OBJECTIVE``'s (bench/workload.py). ``BENCH_MARKERS=DIR`` makes it leave a file per boot
there (its pid and the process's start time, removed when it ends): the soak's checker reads them to
tell how many trainer processes of one experiment are alive at once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from sinergym_cloud import names
from sinergym_cloud.contracts import TrainerSpec
from sinergym_cloud.vm.procinfo import start_time

log = logging.getLogger("trainer")


def _log_episode(value: float, episode: int) -> None:
    """An episode's point in MLflow, from the training thread (the trainer batches them on its worker;
    one point an episode needs no batching)."""
    import mlflow

    try:
        mlflow.log_metrics({"train/mean_reward": value}, step=episode)
    except Exception as exc:  # noqa: BLE001 - a lost metric point must not end the run
        log.warning("episode %d metrics not logged to MLflow: %s", episode, exc)


class _Model:
    """What trainer.checkpoint.save needs of a model: a file to write and a step count."""

    def __init__(self, timesteps: int, episodes: int) -> None:
        self.num_timesteps = timesteps
        self.episodes = episodes
        self.replay_buffer = None

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({"stand-in model": True, "episodes": self.episodes}))


def marker_path(folder: Path, spec: TrainerSpec) -> Path:
    """The file a boot's trainer process leaves in ``BENCH_MARKERS`` while it runs."""
    return folder / f"{spec.batch_id}--{spec.experiment_index}--{spec.boot_id}.json"


def leave_marker(spec: TrainerSpec) -> Path | None:
    folder = os.environ.get("BENCH_MARKERS")
    if not folder:
        return None
    path = marker_path(Path(folder), spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    pid = os.getpid()
    body = {"pid": pid, "start": start_time(pid), "batch_id": spec.batch_id, "index": spec.experiment_index,
            "boot_id": spec.boot_id, "instance": spec.instance, "zone": spec.zone, "at": time.time()}  # fmt: skip
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(body))
    tmp.replace(path)
    return path


class StandIn:
    """One boot's run of the stand-in: ``len(values)`` episodes of ``episode_seconds`` each."""

    def __init__(self, spec: TrainerSpec, values: list[float], episode_seconds: float) -> None:
        from sinergym_cloud.config import Settings
        from sinergym_cloud.gcp.clients import Clients
        from trainer import checkpoint
        from trainer.context import Context, Outcome

        self.spec, self.values, self.episode_seconds = spec, values, episode_seconds
        self.stop = threading.Event()
        self.ctx = Context.from_spec(spec)
        self.clients = Clients(Settings.from_env({**os.environ, "GOOGLE_CLOUD_PROJECT": spec.project}))
        self.clients.open_publisher()
        self.bucket = self.clients.storage.bucket(spec.results_bucket)
        self.owner = checkpoint.Owner(spec.batch_id, spec.experiment_name, spec.checkpoint_key, spec.attempt)
        self.work = Path(tempfile.mkdtemp(prefix="bench-trainer-", dir=os.environ.get("SINERGYM_VM_HOME")))
        self.outcome = Outcome()
        self.done = 0

    def beat(self) -> dict[str, Any]:
        return {"instance": self.spec.instance, "boot_id": self.spec.boot_id, "episodes": self.done}

    def train(self) -> None:
        """Resume or start the MLflow run, play the episodes left, checkpoint after each."""
        from trainer import checkpoint, progress, tracking

        resume = checkpoint.fetch(self.bucket, self.owner, self.work / "checkpoint")
        self.done = resume.episodes if resume else 0
        mlflow_run = tracking.start(self.ctx, resume.run_id if resume else None)
        self.outcome.mlflow_run_id = mlflow_run.info.run_id
        failed = True
        try:
            for episode in range(self.done + 1, len(self.values) + 1):
                if self.stop.wait(self.episode_seconds):
                    break
                value = self.values[episode - 1]
                self.done = episode
                self.outcome.timesteps = episode * 100
                _log_episode(value, episode)
                model = _Model(self.outcome.timesteps, episode)
                checkpoint.save(self.bucket, self.owner, self.work / "checkpoint-out", model, None, episodes=episode,
                                run_id=self.outcome.mlflow_run_id, normalization=False)  # fmt: skip
                progress.report(self.ctx, lambda: self.clients, episode, {"mean_reward": value}, value)
            if self.stop.is_set():  # as the trainer's SIGTERM path: a checkpoint first, whatever was done
                model = _Model(self.outcome.timesteps, self.done)
                checkpoint.save(self.bucket, self.owner, self.work / "checkpoint-out", model, None, episodes=self.done,
                                run_id=self.outcome.mlflow_run_id, normalization=False)  # fmt: skip
            seen = self.values[: self.done]
            if seen:
                self.outcome.metrics = {"best_eval_mean_reward": max(seen), "final_mean_reward": seen[-1],
                                        "episodes": self.done}  # fmt: skip
            failed = False
        finally:
            tracking.end("KILLED" if self.stop.is_set() else None, failed)

    def store(self) -> None:
        """The outputs, uploaded and verified against their manifest (trainer/storage.py)."""
        from trainer import storage

        out = self.work / "out"
        out.mkdir()
        rows = "".join(f"{i},{v}\n" for i, v in enumerate(self.values[: self.done], 1))
        (out / "progress.csv").write_text("episode,mean_reward\n" + rows)
        (out / "model.json").write_text(json.dumps({"experiment": self.spec.experiment_name, "episodes": self.done}))
        self.outcome.output_uris.insert(0, storage.store_outputs(self.bucket, self.ctx.prefix, [(out, "sinergym/")]))

    def run(self) -> int:
        from trainer import completion
        from trainer.heartbeat import Heartbeat

        tail = completion.setup_logging()
        started = time.time()
        signal.signal(signal.SIGTERM, lambda signum, frame: self.stop.set())
        marker = leave_marker(self.spec)
        heartbeat = Heartbeat(
            lambda: self.bucket, names.heartbeat_object(self.spec.batch_id, self.spec.experiment_name), self.beat
        )
        heartbeat.start()
        outcome = self.outcome
        try:
            self.train()
            if self.stop.is_set():
                outcome.status, outcome.reason = "preempted", "stopped by SIGTERM; checkpoint saved"
            else:
                self.store()
                outcome.reason = "bench stand-in of the trainer"
        except BaseException as exc:
            outcome.status, outcome.error_type = "failed", type(exc).__name__
            outcome.reason = str(exc)[:2000] or type(exc).__name__
            log.exception("stand-in run failed")
        finally:
            heartbeat.stop()
        completion.publish(self.clients, completion.message(self.ctx, outcome, tail, started), self.spec.completion_key)
        if marker is not None:
            with contextlib.suppress(OSError):
                marker.unlink()
        return 0 if outcome.status == "succeeded" else 1


def run(spec: TrainerSpec, values: list[float], episode_seconds: float) -> int:
    """Play the trainer's run for ``spec``: ``len(values)`` episodes of ``episode_seconds`` each."""
    return StandIn(spec, values, episode_seconds).run()
