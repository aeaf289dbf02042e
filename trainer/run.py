"""One experiment, start to finish, in the order the original DRL_battery.py did it, done well.

1. a unique, stable name; 2. an MLflow run (resumed after a preemption); 3. parameters, versions;
4. reward and wrappers; 5. the model from the algorithm registry and the hyperparameter YAML
(or from the checkpoint); 6. timesteps = episodes x the environment's real episode length;
7. evaluation, per-episode metrics, checkpoints, heartbeat, TensorBoard sync; 8. training;
9. the final model and Sinergym's monitors into MLflow; 10. with --remote_store every output
uploaded and verified; 11. the Completion message, on every path: succeeded, failed (with the
reason and the last log lines) or preempted (SIGTERM: checkpoint first, then the message).
The trainer never deletes its own VM.
"""

from __future__ import annotations

import collections
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sinergym_cloud import contracts, names
from sinergym_cloud.contracts import Completion, Experiment, TrainerSpec

log = logging.getLogger("trainer")

EXIT_OK, EXIT_FAILED, EXIT_PREEMPTED = 0, 1, 143
MANUAL_BATCH = "manual"


@dataclass
class Context:
    """Where the experiment runs and where its results go."""

    experiment: Experiment
    name: str
    batch_id: str = MANUAL_BATCH
    index: int = 0
    group: str = "sinergym-group"
    mlflow_experiment: str = "sinergym"
    results_bucket: str | None = None
    project: str | None = None
    instance: str | None = None
    zone: str | None = None
    boot_id: str | None = None
    attempt: int = 1
    completion_key: str | None = None  # signs the Completion (from dispatch, over SSH)
    checkpoint_key: str | None = None  # signs and checks the checkpoints (from dispatch, over SSH)
    progress: bool = False  # a sweep trial with a pruner: report every episode (trainer/progress.py)
    trial: int | None = None  # a sweep trial's number, and its sweep's MLflow parent run
    mlflow_parent_run_id: str | None = None

    @property
    def on_vm(self) -> bool:
        """True when dispatch started us: publish a completion, keep a heartbeat and checkpoints."""
        return self.instance is not None

    @property
    def prefix(self) -> str:
        return names.results_prefix(self.batch_id, self.name)


@dataclass
class Outcome:
    status: str = "succeeded"
    reason: str = ""
    error_type: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    output_uris: list[str] = field(default_factory=list)
    mlflow_run_id: str | None = None
    timesteps: int = 0


class LogTail(logging.Handler):
    """Keeps the last lines logged, for the failure message."""

    def __init__(self, size: int = 30) -> None:
        super().__init__(logging.INFO)
        self.lines: collections.deque[str] = collections.deque(maxlen=size)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record)[:1000])


def _setup_logging() -> LogTail:
    tail = LogTail()
    root = logging.getLogger()
    if not any(isinstance(h, logging.StreamHandler) for h in root.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    root.addHandler(tail)
    root.setLevel(logging.INFO)
    return tail


def run_spec_file(path: Path) -> int:
    spec = TrainerSpec.model_validate_json(path.read_text())
    return run_trainer_spec(spec, workdir=path.parent / "work")


def run_trainer_spec(spec: TrainerSpec, workdir: Path) -> int:
    ctx = Context(
        experiment=spec.experiment,
        name=spec.experiment_name,
        batch_id=spec.batch_id,
        index=spec.experiment_index,
        group=spec.group_name,
        mlflow_experiment=spec.mlflow_experiment,
        results_bucket=spec.results_bucket,
        project=spec.project,
        instance=spec.instance,
        zone=spec.zone,
        boot_id=spec.boot_id,
        attempt=spec.attempt,
        completion_key=spec.completion_key,
        checkpoint_key=spec.checkpoint_key,
        progress=spec.progress,
        trial=spec.trial,
        mlflow_parent_run_id=spec.mlflow_parent_run_id,
    )
    return Runner(ctx, workdir).run()


def run_experiment(experiment: Experiment, workdir: Path, group: str | None = None) -> int:
    """A run on a laptop: no VM, no completion message; --remote_store uses SINERGYM_RESULTS_BUCKET."""
    name = contracts.experiment_name(experiment, dt.datetime.now(dt.UTC), 0)
    bucket = os.environ.get("SINERGYM_RESULTS_BUCKET")
    if experiment.remote_store and not bucket:
        raise SystemExit("--remote_store needs SINERGYM_RESULTS_BUCKET (the bucket for the outputs)")
    ctx = Context(
        experiment=experiment,
        name=name,
        batch_id=group or MANUAL_BATCH,
        group=group or "sinergym-group",
        mlflow_experiment=group or "sinergym",
        results_bucket=bucket,
        project=os.environ.get("GOOGLE_CLOUD_PROJECT"),
    )
    return Runner(ctx, workdir).run()


class Runner:
    def __init__(self, ctx: Context, workdir: Path) -> None:
        self.ctx = ctx
        self.workdir = workdir.resolve()
        self.out = self.workdir / "output"  # Sinergym's current directory
        self.models = self.workdir / "models"
        self.stop_requested = threading.Event()
        self.tail = _setup_logging()
        self.outcome = Outcome()
        self.episodes_done = 0
        self.tensorboard_files: list[Any] = []  # storage.Uploaded of a gs:// --tensorboard
        self.best_eval: float | None = None
        self.last_summary: dict[str, float] = {}
        self._clients: Any = None
        self._heartbeat_stop = threading.Event()
        self.started = time.time()

    # ------------------------------------------------------------------ plumbing
    @property
    def clients(self) -> Any:
        if self._clients is None:
            from sinergym_cloud.clients import Clients
            from sinergym_cloud.config import Settings

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

    def _heartbeat(self) -> None:
        every = float(os.environ.get("SINERGYM_HEARTBEAT_SECONDS", "30"))
        blob_name = names.heartbeat_object(self.ctx.batch_id, self.ctx.name)
        while True:
            try:
                self.bucket().blob(blob_name).upload_from_string(
                    json.dumps(
                        {
                            "at": time.time(),
                            "instance": self.ctx.instance,
                            "boot_id": self.ctx.boot_id,
                            "episodes": self.episodes_done,
                            "timesteps": self.outcome.timesteps,
                        }
                    ),
                    content_type="application/json",
                    timeout=10,
                )
            except Exception as exc:  # noqa: BLE001 - a missed heartbeat is retried at the next beat
                log.warning("heartbeat not written: %s", exc)
            if self._heartbeat_stop.wait(every):
                return

    # ---------------------------------------------------------------------- run
    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_sigterm)
        os.environ.setdefault("TQDM_DISABLE", "1")  # Sinergym's progress bars would flood the log
        self.workdir.mkdir(parents=True, exist_ok=True)
        heartbeat = None
        if self.ctx.on_vm:
            # Build the Pub/Sub client now, not after a SIGTERM: the completion then goes out at once.
            try:
                self.clients.publisher  # noqa: B018 - a cached property, read for its side effect
            except Exception as exc:  # noqa: BLE001 - publishing retries at the end anyway
                log.warning("Pub/Sub client not ready yet: %s", exc)
            if self.ctx.results_bucket:
                heartbeat = threading.Thread(target=self._heartbeat, name="heartbeat", daemon=True)
                heartbeat.start()
        log.info("experiment %s (attempt %d) starting in %s", self.ctx.name, self.ctx.attempt, self.workdir)
        try:
            if self.ctx.experiment.mode == "check":
                self._check()
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
            self._heartbeat_stop.set()
            if heartbeat is not None:
                heartbeat.join(timeout=15)
        self.outcome.metrics.setdefault("wall_time_s", time.time() - self.started)
        if self.ctx.on_vm:
            self._publish_completion()
        log.info("experiment %s: %s %s", self.ctx.name, self.outcome.status, self.outcome.reason)
        return {"succeeded": EXIT_OK, "preempted": EXIT_PREEMPTED}.get(self.outcome.status, EXIT_FAILED)

    def _check(self) -> None:
        """A runtime self-test launched as an experiment: the completion carries the verdicts."""
        from trainer import check

        os.chdir(self.workdir)
        results = check.run_checks(self.ctx.results_bucket, self.ctx.prefix)
        log.info("runtime check:\n%s", check.render(results))
        self.outcome.metrics.update({f"check_{r.name}": 1.0 if r.ok else 0.0 for r in results if r.ok is not None})
        failed = [f"{r.name}: {r.detail}" for r in results if r.ok is False]
        if failed:
            raise RuntimeError("runtime check failed: " + "; ".join(failed))
        self.outcome.reason = "all runtime checks passed"

    def _train(self) -> None:
        from trainer import checkpoint, envs, tracking

        exp = self.ctx.experiment
        envs.ensure_energyplus()
        self.out.mkdir(parents=True, exist_ok=True)
        self.models.mkdir(parents=True, exist_ok=True)
        os.chdir(self.out)  # Sinergym writes <env_name>-res<N>/ into the current directory

        resume = checkpoint.fetch(self, self.workdir / "checkpoint") if self.ctx.results_bucket else None
        run = tracking.start(self.ctx, resume.run_id if resume else None)
        self.outcome.mlflow_run_id = run.info.run_id
        failed = True
        try:
            self._learn(resume)
            tracking.finish(self, run)
            failed = False
        finally:
            tracking.end("KILLED" if self.stop_requested.is_set() else None, failed)
        if exp.remote_store and self.ctx.results_bucket and not self.stop_requested.is_set():
            self._store_outputs()

    def _learn(self, resume: Any) -> None:  # noqa: PLR0912, PLR0915 - the run in the original's order
        from stable_baselines3.common.noise import NormalActionNoise

        from trainer import checkpoint, envs, evaluation, progress, registry, tracking
        from trainer.episodes import EpisodeCallback

        exp = self.ctx.experiment
        norm = resume.norm_stats if resume else None
        start = None
        if exp.initial_model is not None and not resume:
            from trainer import initial_model

            start = initial_model.fetch(
                exp.initial_model,
                self.workdir / "initial-model",
                (lambda: self.clients.storage),
                self.ctx.results_bucket,
            )
            norm = start.norm_stats
        if exp.wrappers is not None and any(w.name == "WandBLogger" for w in exp.wrappers):
            from trainer import wandb_setup

            wandb_setup.prepare(self.out, self.ctx.batch_id)
        if exp.n_envs > 1:
            # Each simulation has a core of its own; torch's own threads would only fight them.
            import torch

            torch.set_num_threads(max(1, (os.cpu_count() or 1) - exp.n_envs + 1))
        # Factories are pickled into the worker processes: plain functions and data only.
        factories = [functools.partial(envs.make_env, exp, self._env_name(i), norm) for i in range(exp.n_envs)]
        vec_env = envs.vectorize(factories)
        try:
            episode_len = int(vec_env.env_method("get_wrapper_attr", "timestep_per_episode", indices=[0])[0])
            total = exp.episodes * episode_len
            params = registry.hyperparameters(exp)
            policy = params.pop("policy", "MlpPolicy")
            sigma = params.pop("sigma", None)
            algo = registry.algos()[exp.algorithm]
            tb_dir = self._tensorboard_dir()
            if exp.algorithm in ("DDPG", "TD3", "SAC") and sigma:
                n_actions = vec_env.action_space.shape[-1]
                import numpy as np

                params["action_noise"] = NormalActionNoise(np.zeros(n_actions), sigma * np.ones(n_actions))
            if resume:
                model = algo.load(resume.model_path, env=vec_env, tensorboard_log=str(tb_dir) if tb_dir else None)
                if resume.replay_buffer_path is not None:
                    model.load_replay_buffer(resume.replay_buffer_path)
                self.episodes_done = resume.episodes
                log.info("resumed from checkpoint: %d timesteps, %d episodes", model.num_timesteps, resume.episodes)
            elif start is not None:
                from trainer import initial_model

                model = initial_model.load(
                    algo, start, vec_env, params | {"policy": policy}, tensorboard_log=str(tb_dir) if tb_dir else None
                )
                if exp.seed is not None:
                    model.set_random_seed(exp.seed)
                log.info("starting from %s (%d timesteps trained before)", start.source, model.num_timesteps)
            else:
                model = algo(policy, vec_env, seed=exp.seed, tensorboard_log=str(tb_dir) if tb_dir else None, **params)
            if not resume:
                tracking.log_params(self.ctx, params | {"policy": policy, "sigma": sigma}, episode_len, total)
            evaluator = evaluation.Evaluator(self, exp, episode_len) if exp.evaluation else None
            syncer = self._start_tensorboard_sync(tb_dir)

            def on_episode(summary: dict[str, float]) -> None:
                self.episodes_done += 1
                self.last_summary = summary
                self.outcome.timesteps = int(model.num_timesteps)
                tracking.log_episode(summary, self.episodes_done)
                log.info(
                    "episode %d: reward %.2f, comfort violation %.1f%%, energy %.1f kWh",
                    self.episodes_done,
                    summary["episode_reward"],
                    summary["comfort_violation_time_pct"],
                    summary["energy_kwh"],
                )
                evaluated = None
                if evaluator and self.episodes_done % exp.eval_freq == 0:
                    evaluated = evaluator.evaluate(model, vec_env, self.episodes_done)
                if exp.checkpoint_every and self.episodes_done % exp.checkpoint_every == 0 and self.ctx.results_bucket:
                    checkpoint.save(self, model, vec_env)
                progress.report(self, self.episodes_done, summary, evaluated)  # after the checkpoint

            callback = EpisodeCallback(on_episode, self.stop_requested.is_set)
            # Episodes are what was asked for. A resumed run restarts the episode it was stopped in
            # (the simulation cannot resume mid-episode), so what is left is counted in whole episodes.
            remaining = (exp.episodes - self.episodes_done) * episode_len if resume else total
            before = int(model.num_timesteps)
            learn_started = time.monotonic()
            try:
                if remaining > 0:
                    model.learn(
                        total_timesteps=remaining,
                        callback=callback,
                        log_interval=exp.log_interval,
                        tb_log_name=self.ctx.name,
                        reset_num_timesteps=resume is None,
                    )
            finally:
                if syncer is not None:
                    self.tensorboard_files = syncer.close()
                if evaluator is not None:
                    evaluator.close()
            self.outcome.timesteps = int(model.num_timesteps)
            learn_seconds = time.monotonic() - learn_started
            self.outcome.metrics["learn_seconds"] = learn_seconds
            if learn_seconds > 0:
                self.outcome.metrics["steps_per_second"] = (model.num_timesteps - before) / learn_seconds
            if self.stop_requested.is_set():
                if self.ctx.results_bucket:
                    checkpoint.save(self, model, vec_env)
                return
            model.save(self.models / "model.zip")
            self._save_model_companions(model, vec_env)
            if evaluator and evaluator.best_path.exists():
                shutil.copy(evaluator.best_path, self.models / "best_model.zip")
            self.outcome.metrics.update({f"final_{k}": v for k, v in self.last_summary.items()})
            if evaluator and evaluator.best is not None:
                self.outcome.metrics["best_eval_mean_reward"] = evaluator.best
            self.outcome.metrics["episodes"] = float(self.episodes_done)
            self.outcome.metrics["timesteps"] = float(model.num_timesteps)
        finally:
            vec_env.close()

    def _env_name(self, i: int) -> str:
        return self.ctx.name if self.ctx.experiment.n_envs == 1 else f"{self.ctx.name}-w{i}"

    def _tensorboard_dir(self) -> Path | None:
        target = self.ctx.experiment.tensorboard
        if not target:
            return None
        if target.startswith("gs://"):
            return self.workdir / "tensorboard"
        return self.workdir / target  # validated: relative, inside the run directory

    def _save_model_companions(self, model: Any, vec_env: Any) -> None:
        """What a continuation needs beside model.zip (trainer/initial_model.py reads them)."""
        from trainer import envs

        if self.ctx.experiment.normalization:
            stats = envs.normalization_stats(vec_env)
            if stats:
                (self.models / "normalization.json").write_text(json.dumps(stats))
        if getattr(model, "replay_buffer", None) is not None:
            model.save_replay_buffer(self.models / "replay_buffer.pkl")

    def _live_tensorboard(self) -> bool:
        """A local TensorBoard path is synced live to the results bucket on a VM (or with --remote_store)."""
        exp = self.ctx.experiment
        return bool(self.ctx.results_bucket and (self.ctx.on_vm or exp.remote_store))

    def _start_tensorboard_sync(self, tb_dir: Path | None) -> Any:
        """Upload whole event files at a steady interval to where sinergym_cloud.tensorboard says they are."""
        from sinergym_cloud import tensorboard

        target = self.ctx.experiment.tensorboard
        if not tb_dir or not target:
            return None
        if not target.startswith("gs://") and not self._live_tensorboard():
            return None
        from trainer.storage import Syncer

        # Validated (contracts.path_outside): a gs:// target is the experiment's own prefix in the results bucket.
        uri = tensorboard.log_uri(target, self.ctx.results_bucket, self.ctx.batch_id, self.ctx.name)
        assert uri is not None
        bucket_name, _, prefix = uri.removeprefix("gs://").partition("/")
        syncer = Syncer(
            self.clients.storage.bucket(bucket_name),
            tb_dir,
            prefix,
            float(os.environ.get("SINERGYM_UPLOAD_SECONDS", "30")),
        )
        syncer.start()
        self.outcome.output_uris.append(f"gs://{bucket_name}/{prefix}")
        return syncer

    def _store_outputs(self) -> None:
        """Upload every output under gs://<bucket>/<batch>/<experiment>/ and verify it."""
        from trainer import storage

        bucket = self.bucket()
        prefix = self.ctx.prefix
        uploaded = []
        for local, sub in ((self.out, "sinergym/"), (self.models, "models/"), (self.workdir / "eval", "eval/")):
            if local.exists():
                uploaded += storage.upload_tree(bucket, local, prefix + sub)
        tb_dir = self._tensorboard_dir()
        if tb_dir and tb_dir.exists() and not self.tensorboard_files:
            uploaded += storage.upload_tree(bucket, tb_dir, prefix + "tensorboard/")
        uploaded += self.tensorboard_files  # a gs:// --tensorboard: synced whole while training, verified here too
        storage.write_manifest(bucket, prefix, uploaded)
        problems = storage.verify_manifest(bucket, prefix)
        if problems:
            raise storage.VerificationError("; ".join(problems[:5]))
        log.info("stored and verified %d file(s) under gs://%s/%s", len(uploaded), bucket.name, prefix)
        self.outcome.output_uris.insert(0, f"gs://{bucket.name}/{prefix}")

    def _publish_completion(self) -> None:
        ctx = self.ctx
        assert ctx.instance
        assert ctx.zone
        assert ctx.boot_id
        metrics = {k: float(v) for k, v in self.outcome.metrics.items() if isinstance(v, (int, float))}
        message = Completion(
            batch_id=ctx.batch_id,
            experiment_index=ctx.index,
            experiment_name=ctx.name,
            instance=ctx.instance,
            zone=ctx.zone,
            boot_id=ctx.boot_id,
            status=self.outcome.status,
            exit_reason=self.outcome.reason[:4000],
            error_type=self.outcome.error_type,
            log_tail=list(self.tail.lines)[-20:] if self.outcome.status == "failed" else [],
            metrics=metrics,
            output_uris=self.outcome.output_uris[:100],
            mlflow_run_id=self.outcome.mlflow_run_id,
            timesteps=self.outcome.timesteps,
            started_at=dt.datetime.fromtimestamp(self.started, dt.UTC),
            finished_at=dt.datetime.now(dt.UTC),
        )
        from sinergym_cloud import retry, signing

        data = contracts.dump(message)
        signed: dict[str, Any] = (
            {signing.SIGNATURE_ATTRIBUTE: signing.sign(ctx.completion_key, data)} if ctx.completion_key else {}
        )
        message_id = retry.call(
            lambda: self.clients.publish(
                names.TOPIC_COMPLETIONS, data, batch_id=ctx.batch_id, status=message.status, **signed
            ),
            what="publish completion",
            deadline=120,
        )
        log.info("completion %s published (message %s)", message.status, message_id)
