"""One experiment, start to finish, in the order the original DRL_battery.py did it, done well.

1. a unique, stable name; 2. an MLflow run (resumed after a preemption); 3. parameters, versions;
4. reward and wrappers; 5. the model from the algorithm registry and the hyperparameter YAML
(or from the checkpoint); 6. timesteps = episodes x the environment's real episode length;
7. evaluation, per-episode metrics, checkpoints, heartbeat, TensorBoard sync; 8. training, with
everything that waits on a network or a disk on the background worker (trainer/background.py),
drained before the run ends;
9. the final model and Sinergym's monitors into MLflow; 10. with --remote_store every output
uploaded and verified; 11. the Completion message, on every path: succeeded, failed (with the
reason and the last log lines) or preempted (SIGTERM: checkpoint first, then the message).
The trainer never deletes its own VM.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import os
import shutil
import signal
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sinergym_cloud import names
from sinergym_cloud.contracts import Experiment, TrainerSpec
from trainer import completion, optimizers, tensorboard_writes
from trainer.context import Context, Outcome
from trainer.heartbeat import Heartbeat

log = logging.getLogger("trainer")

EXIT_OK, EXIT_FAILED, EXIT_PREEMPTED = 0, 1, 143
# How long the end of a run waits for the background worker (checkpoint, metrics, uploads).
DRAIN_SECONDS = float(os.environ.get("SINERGYM_DRAIN_SECONDS", "600"))


def run_spec_file(path: Path) -> int:
    spec = TrainerSpec.model_validate_json(path.read_text())
    return run_trainer_spec(spec, workdir=path.parent / "work")


def run_trainer_spec(spec: TrainerSpec, workdir: Path) -> int:
    """A run dispatch started on a VM: checkpoints, heartbeat and the signed completion."""
    return Runner(Context.from_spec(spec), workdir).run()


def run_experiment(experiment: Experiment, workdir: Path, group: str | None = None) -> int:
    """A run on a laptop: no VM, no completion message; --remote_store uses SINERGYM_RESULTS_BUCKET."""
    return Runner(Context.local(experiment, dt.datetime.now(dt.UTC), group), workdir).run()


@dataclass
class Callbacks:
    """What runs beside ``learn``: the per-episode callback, the evaluator, the TensorBoard syncer."""

    episode: Any  # trainer.episodes.EpisodeCallback
    evaluator: Any  # trainer.evaluation.Evaluator | None
    syncer: Any  # trainer.storage.Syncer | None
    clock: Any  # trainer.pauses.PauseClock


class Runner:
    """One experiment's run. ``_learn`` goes through the phases of rl-baselines3-zoo's
    ExperimentManager: build the model (``_build_model``), its callbacks (``_callbacks``), learn
    (``_fit``), then save what the run made (``_finish``)."""

    def __init__(self, ctx: Context, workdir: Path) -> None:
        self.ctx = ctx
        self.workdir = workdir.resolve()
        self.out = self.workdir / "output"  # Sinergym's current directory
        self.models = self.workdir / "models"
        self.stop_requested = threading.Event()
        self.tail = completion.setup_logging()
        self.outcome = Outcome()
        self.episodes_done = 0
        self.last_checkpoint: float | None = None  # time.monotonic() when this process queued its last
        self.checkpoints = 0  # queued by this process (a newer one may replace one not yet written)
        self.tensorboard_files: list[Any] = []  # storage.Uploaded of a gs:// --tensorboard
        self.last_summary: dict[str, float] = {}
        self._clients: Any = None
        self.started = time.time()
        self.background: Any = None  # trainer.background.Background, while training
        self.metrics: Any = None  # trainer.tracking.Metrics of the run, while training

    # ------------------------------------------------------------------ plumbing
    @property
    def clients(self) -> Any:
        if self._clients is None:
            from sinergym_cloud.config import Settings
            from sinergym_cloud.gcp.clients import Clients

            env = dict(os.environ)
            if self.ctx.project:
                env.setdefault("GOOGLE_CLOUD_PROJECT", self.ctx.project)
            self._clients = Clients(Settings.from_env(env))
        return self._clients

    def bucket(self) -> Any:
        assert self.ctx.results_bucket
        return self.clients.storage.bucket(self.ctx.results_bucket)

    def _on_sigterm(self, signum: int, frame: object) -> None:
        log.warning("SIGTERM received (preemption or shutdown): stopping at the next step, then checkpointing")
        self.stop_requested.set()

    def _progress(self) -> dict[str, Any]:
        """What the heartbeat says: who beats, and how far training is."""
        return {
            "instance": self.ctx.instance,
            "boot_id": self.ctx.boot_id,
            "episodes": self.episodes_done,
            "timesteps": self.outcome.timesteps,
        }

    # ---------------------------------------------------------------------- run
    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_sigterm)
        self.workdir.mkdir(parents=True, exist_ok=True)
        heartbeat = None
        if self.ctx.on_vm:
            # Build and connect the Pub/Sub client now, not after a SIGTERM: the completion then goes
            # out at once.
            try:
                self.clients.open_publisher()
            except Exception as exc:  # noqa: BLE001 - publishing retries at the end anyway
                log.warning("Pub/Sub client not ready yet: %s", exc)
            if self.ctx.results_bucket:
                blob_name = names.heartbeat_object(self.ctx.batch_id, self.ctx.name)
                heartbeat = Heartbeat(self.bucket, blob_name, self._progress)
                heartbeat.start()
        log.info("experiment %s (attempt %d) starting in %s", self.ctx.name, self.ctx.attempt, self.workdir)
        try:
            if self.ctx.experiment.mode == "check":
                from trainer import check

                os.chdir(self.workdir)
                ctx, outcome = self.ctx, self.outcome
                outcome.reason = check.as_experiment(ctx.results_bucket, ctx.prefix, outcome.metrics)
            else:
                self._train()
            if self.stop_requested.is_set():
                self.outcome.status = "preempted"
                self.outcome.reason = "stopped by SIGTERM; checkpoint saved"
        except BaseException as exc:  # noqa: BLE001 - every path must end in a completion message
            self.outcome.status = "failed"
            self.outcome.error_type = type(exc).__name__
            self.outcome.reason = str(exc)[:2000] or type(exc).__name__
            log.error("experiment failed: %s\n%s", exc, traceback.format_exc())
        finally:
            if heartbeat is not None:
                heartbeat.stop()
        self.outcome.metrics.setdefault("wall_time_s", time.time() - self.started)
        if self.ctx.on_vm:
            message = completion.message(self.ctx, self.outcome, self.tail, self.started)
            completion.publish(self.clients, message, self.ctx.completion_key)
        log.info("experiment %s: %s %s", self.ctx.name, self.outcome.status, self.outcome.reason)
        return {"succeeded": EXIT_OK, "preempted": EXIT_PREEMPTED}.get(self.outcome.status, EXIT_FAILED)

    def _train(self) -> None:
        from trainer import checkpoint, envs, storage, tracking
        from trainer.background import Background

        exp = self.ctx.experiment
        envs.ensure_energyplus()
        self.out.mkdir(parents=True, exist_ok=True)
        self.models.mkdir(parents=True, exist_ok=True)
        os.chdir(self.out)  # Sinergym writes <env_name>-res<N>/ into the current directory

        resume = None
        if self.ctx.results_bucket:
            resume = checkpoint.fetch(self.bucket(), self._checkpoint_owner(), self.workdir / "checkpoint")
        run = tracking.start(self.ctx, resume.run_id if resume else None)
        self.outcome.mlflow_run_id = run.info.run_id
        self.background = Background()
        self.metrics = tracking.Metrics(run.info.run_id, self.background)
        failed = True
        try:
            self._learn(resume)
            if not self.stop_requested.is_set():
                tracking.finish(self.models, self.out, exp.mlflow_store, self.outcome.metrics)
            failed = False
        finally:
            # Whatever happened, what was queued goes out before the run ends and the completion.
            if not self.background.close(DRAIN_SECONDS):
                self.outcome.metrics["background_left"] = float(len(self.background.pending()))
            self.outcome.metrics.update(self.background.stats.metrics())
            self.outcome.metrics["checkpoints"] = float(self.checkpoints)
            self.outcome.metrics["mlflow_points_lost"] = float(self.metrics.lost)
            tracking.end("KILLED" if self.stop_requested.is_set() else None, failed)
        if exp.remote_store and self.ctx.results_bucket and not self.stop_requested.is_set():
            trees = [(self.out, "sinergym/"), (self.models, "models/"), (self.workdir / "eval", "eval/")]
            tb_dir = self._tensorboard_dir()
            if tb_dir and not self.tensorboard_files:
                trees.append((tb_dir, "tensorboard/"))
            # A gs:// --tensorboard was synced whole while training: it is in the manifest and verified too.
            uri = storage.store_outputs(self.bucket(), self.ctx.prefix, trees, self.tensorboard_files)
            self.outcome.output_uris.insert(0, uri)

    def _checkpoint_owner(self) -> Any:
        from trainer import checkpoint

        return checkpoint.Owner(self.ctx.batch_id, self.ctx.name, self.ctx.checkpoint_key, self.ctx.attempt)

    def _queue_checkpoint(self, model: Any, vec_env: Any) -> None:
        """Copy a checkpoint now (the learner waits for the copy only) and write it on the background
        worker; a newer checkpoint replaces one still waiting there. A failed write fails the run."""
        from trainer import checkpoint

        self.last_checkpoint = time.monotonic()
        self.checkpoints += 1
        snap = checkpoint.snapshot(
            model, vec_env, episodes=self.episodes_done, normalization=self.ctx.experiment.normalization
        )
        bucket, owner, run_id = self.bucket(), self._checkpoint_owner(), self.outcome.mlflow_run_id
        local = self.workdir / "checkpoint-out"
        self.background.submit(
            f"checkpoint of episode {snap.episodes}",
            lambda: checkpoint.write(bucket, owner, local, snap, run_id=run_id),
            key="checkpoint",
            critical=True,
        )

    def _drain(self) -> None:
        """Wait for the background worker to finish what training queued; its time is the run's."""
        started = time.monotonic()
        if not self.background.drain(DRAIN_SECONDS):
            log.warning("background work still running after %.0fs: %s", DRAIN_SECONDS, self.background.pending())
        self.outcome.metrics["drain_seconds"] = time.monotonic() - started

    def _learn(self, resume: Any) -> None:
        from trainer import envs

        exp = self.ctx.experiment
        start = self._prepare(resume)
        norm = resume.norm_stats if resume else (start.norm_stats if start else None)
        # Factories are pickled into the worker processes: plain functions and data only.
        factories = [functools.partial(envs.make_env, exp, self._env_name(i), norm) for i in range(exp.n_envs)]
        vec_env = envs.vectorize(factories)
        callbacks = None
        model = None
        try:
            episode_len = int(vec_env.env_method("get_wrapper_attr", "timestep_per_episode", indices=[0])[0])
            tb_dir = self._tensorboard_dir()
            model = self._build_model(vec_env, resume, start, episode_len, tb_dir)
            if fused := optimizers.fuse(model):
                log.info("fused Adam: %s", ", ".join(fused))
            callbacks = self._callbacks(model, vec_env, episode_len, tb_dir)
            self._fit(model, callbacks, resume, episode_len)
            if self.stop_requested.is_set() and self.ctx.results_bucket:
                self._queue_checkpoint(model, vec_env)
            self._drain()
            self.background.raise_failure()
            if not self.stop_requested.is_set():
                self._finish(model, vec_env, callbacks.evaluator)
        finally:
            if model is not None:
                try:
                    tensorboard_writes.write_out(model)  # every point recorded, before the final sync
                except Exception as exc:  # noqa: BLE001 - TensorBoard points must not hide the run's own outcome
                    log.warning("TensorBoard points not written: %s", exc)
            if callbacks is not None and callbacks.syncer is not None:
                self.tensorboard_files = callbacks.syncer.close()  # the final, complete sync
            if callbacks is not None and callbacks.evaluator is not None:
                callbacks.evaluator.close()
            vec_env.close()

    def _prepare(self, resume: Any) -> Any:
        """Before the environments: the initial model to start from (not when resuming), W&B, threads."""
        exp = self.ctx.experiment
        start = None
        if exp.initial_model is not None and not resume:
            from trainer import initial_model

            start = initial_model.fetch(
                exp.initial_model,
                self.workdir / "initial-model",
                (lambda: self.clients.storage),
                self.ctx.results_bucket,
            )
        if exp.wrappers is not None and any(w.name == "WandBLogger" for w in exp.wrappers):
            from trainer import wandb_setup

            wandb_setup.prepare(self.out, self.ctx.batch_id)
        from trainer import envs

        envs.tune_torch(exp.n_envs)
        cores = os.cpu_count() or 1
        if exp.n_envs > cores:
            log.warning(
                "--n-envs %d on %d core(s): the simulations share cores and add little speed "
                "(a machine type with %d vCPUs runs them at full speed)",
                exp.n_envs,
                cores,
                exp.n_envs,
            )
        return start

    def _build_model(self, vec_env: Any, resume: Any, start: Any, episode_len: int, tb_dir: Path | None) -> Any:
        """Phase 1: the model, from the checkpoint, the initial model, or the registry and the YAML defaults."""
        from trainer import registry, tracking

        exp = self.ctx.experiment
        params = registry.hyperparameters(exp)
        policy = params.pop("policy", "MlpPolicy")
        sigma = params.pop("sigma", None)
        algo = registry.algos()[exp.algorithm]
        tensorboard_log = str(tb_dir) if tb_dir else None
        noise = params.pop("action_noise", None)
        if noise is None and exp.algorithm in ("DDPG", "TD3", "SAC") and sigma:
            noise = {"kind": "normal", "mean": 0.0, "sigma": sigma}  # the original tool's --sigma
        if noise is not None:
            from trainer import noise as action_noise

            params["action_noise"] = action_noise.build(noise, vec_env.action_space.shape[-1], exp.environment)
            log.info("action noise: %r", params["action_noise"])
        if resume:
            model = algo.load(resume.model_path, env=vec_env, tensorboard_log=tensorboard_log)
            if resume.replay_buffer_path is not None:
                from trainer import checkpoint

                checkpoint.load_replay_buffer(model, resume.replay_buffer_path)
            self.episodes_done = resume.episodes
            log.info("resumed from checkpoint: %d timesteps, %d episodes", model.num_timesteps, resume.episodes)
            return model
        if start is not None:
            from trainer import initial_model

            model = initial_model.load(
                algo, start, vec_env, params | {"policy": policy}, tensorboard_log=tensorboard_log
            )
            if exp.seed is not None:
                model.set_random_seed(exp.seed)
            log.info("starting from %s (%d timesteps trained before)", start.source, model.num_timesteps)
        else:
            model = algo(policy, vec_env, seed=exp.seed, tensorboard_log=tensorboard_log, **params)
        total = exp.episodes * episode_len
        tracking.log_params(self.ctx, params | {"policy": policy, "sigma": sigma}, episode_len, total)
        return model

    def _callbacks(self, model: Any, vec_env: Any, episode_len: int, tb_dir: Path | None) -> Callbacks:
        """Phase 2: per-episode metrics, evaluation and checkpoints; the TensorBoard sync.

        At an episode's end the training thread only copies and queues: metrics, the checkpoint's
        write and the sweep's progress report go to the background worker, in that order."""
        from trainer import checkpoint, evaluation, progress
        from trainer.episodes import EpisodeCallback
        from trainer.pauses import PauseClock

        exp = self.ctx.experiment
        clock = PauseClock()
        evaluator = (
            evaluation.Evaluator(
                exp, self.ctx.name, self.workdir / "eval", episode_len, record=self.metrics.log, clock=clock
            )
            if exp.evaluation
            else None
        )
        syncer = self._start_tensorboard_sync(tb_dir)

        def on_episode(summary: dict[str, float]) -> None:
            with clock.episode_end():
                self.episodes_done += 1
                episode = self.episodes_done
                self.last_summary = summary
                self.outcome.timesteps = int(model.num_timesteps)
                self.metrics.log({f"train/{k}": float(v) for k, v in summary.items()}, episode)
                log.info(
                    "episode %d: reward %.2f, comfort violation %.1f%%, energy %.1f kWh",
                    episode,
                    summary["episode_reward"],
                    summary["comfort_violation_time_pct"],
                    summary["energy_kwh"],
                )
                evaluated = None
                if evaluator and episode % exp.eval_freq == 0:
                    evaluated = evaluator.evaluate(model, vec_env, episode)
                due = checkpoint.due(episode, exp.checkpoint_every, exp.checkpoint_min_seconds, self.last_checkpoint)
                if due and self.ctx.results_bucket:
                    self._queue_checkpoint(model, vec_env)
                if progress.enabled(self.ctx):  # after the checkpoint: the queue keeps the order
                    self.outcome.progress[str(episode)] = progress.values(summary, evaluated)
                    self.background.submit(
                        f"progress of episode {episode}",
                        functools.partial(progress.report, self.ctx, lambda: self.clients, episode, summary, evaluated),
                    )
                self.background.raise_failure()

        if syncer is not None:  # the points recorded so far go to the event files before each upload
            syncer.before_sync = functools.partial(tensorboard_writes.write_out, model)

        def on_start() -> None:  # SB3's logger exists once learn has begun
            if tensorboard_writes.defer(model):
                write = functools.partial(tensorboard_writes.write_out, model)
                self.background.every(tensorboard_writes.WRITE_SECONDS, "tensorboard points", write,
                                      key="tensorboard-points")  # fmt: skip

        episode = EpisodeCallback(on_episode, self.stop_requested.is_set, clock, on_start=on_start if tb_dir else None)
        return Callbacks(episode, evaluator, syncer, clock)

    def _fit(self, model: Any, callbacks: Callbacks, resume: Any, episode_len: int) -> None:
        """Phase 3: learn the episodes asked for (what is left of them after a preemption)."""
        exp = self.ctx.experiment
        # A resumed run restarts the episode it was stopped in (the simulation cannot resume
        # mid-episode), so what is left is counted in whole episodes.
        remaining = (exp.episodes - self.episodes_done) * episode_len if resume else exp.episodes * episode_len
        before = int(model.num_timesteps)
        learn_started, cpu_started = time.monotonic(), time.process_time()
        try:
            if remaining > 0:
                model.learn(
                    total_timesteps=remaining,
                    callback=callbacks.episode,
                    log_interval=exp.log_interval,
                    tb_log_name=self.ctx.name,
                    reset_num_timesteps=resume is None,
                )
        finally:
            learn_seconds = time.monotonic() - learn_started
            # Every thread of this process (the simulation's, the worker's, the heartbeat's), not the
            # --n-envs workers: what the bench compares per step with a bare loop's.
            self.outcome.metrics["learn_cpu_seconds"] = time.process_time() - cpu_started
            self.outcome.metrics.update(callbacks.clock.metrics(learn_seconds))
        self.outcome.timesteps = int(model.num_timesteps)
        self.outcome.metrics["learn_seconds"] = learn_seconds
        self.outcome.metrics["learn_timesteps"] = float(model.num_timesteps - before)
        if learn_seconds > 0:
            self.outcome.metrics["steps_per_second"] = (model.num_timesteps - before) / learn_seconds

    def _finish(self, model: Any, vec_env: Any, evaluator: Any) -> None:
        """Phase 4: the final model and what a continuation needs beside it, the summary metrics."""
        from trainer import envs

        model.save(self.models / "model.zip")
        if self.ctx.experiment.normalization:
            stats = envs.normalization_stats(vec_env)
            if stats:
                (self.models / "normalization.json").write_text(json.dumps(stats))
        if getattr(model, "replay_buffer", None) is not None:  # trainer/initial_model.py reads these
            model.save_replay_buffer(self.models / "replay_buffer.pkl")
        if evaluator and evaluator.best_path.exists():
            shutil.copy(evaluator.best_path, self.models / "best_model.zip")
        self.outcome.metrics.update({f"final_{k}": v for k, v in self.last_summary.items()})
        if evaluator and evaluator.best is not None:
            self.outcome.metrics["best_eval_mean_reward"] = evaluator.best
        self.outcome.metrics["episodes"] = float(self.episodes_done)
        self.outcome.metrics["timesteps"] = float(model.num_timesteps)

    def _env_name(self, i: int) -> str:
        return self.ctx.name if self.ctx.experiment.n_envs == 1 else f"{self.ctx.name}-w{i}"

    def _tensorboard_dir(self) -> Path | None:
        target = self.ctx.experiment.tensorboard
        if not target:
            return None
        if target.startswith("gs://"):
            return self.workdir / "tensorboard"
        return self.workdir / target  # validated: relative, inside the run directory

    def _start_tensorboard_sync(self, tb_dir: Path | None) -> Any:
        """The TensorBoard sync: a gs:// target always, a local path when on a VM or with --remote_store."""
        from trainer import storage

        exp = self.ctx.experiment
        if not tb_dir or not exp.tensorboard:
            return None
        live = bool(self.ctx.results_bucket and (self.ctx.on_vm or exp.remote_store))
        if not exp.tensorboard.startswith("gs://") and not live:
            return None
        syncer, uri = storage.tensorboard_syncer(
            self.clients.storage,
            tb_dir,
            exp.tensorboard,
            self.ctx.results_bucket,
            batch_id=self.ctx.batch_id,
            name=self.ctx.name,
            background=self.background,
        )
        self.outcome.output_uris.append(uri)
        return syncer
