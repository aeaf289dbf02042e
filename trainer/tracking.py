"""MLflow for one experiment: one run per experiment, resumed (not restarted) after a preemption,
and after a boot that died before its first checkpoint (the run found by its tags).

While training, metric points are not sent from the training thread: ``Metrics`` collects them and
the background worker sends all that are waiting in one ``log_batch`` call (1,000 points a call,
MLflow's limit), retried on transient errors. MLflow's own asynchronous logging
(``synchronous=False``) batches too, but does not retry a failed batch and can only be flushed
without a deadline; the trainer's worker does both, and drains before the run ends.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sinergym_cloud import errors
from sinergym_cloud.gcp import retry

if TYPE_CHECKING:
    from trainer.context import Context

log = logging.getLogger(__name__)


def _transient(exc: BaseException) -> bool:
    """A lost creation race or a server hiccup; MLflow's HTTP client already retries connection errors."""
    from mlflow.exceptions import MlflowException

    if isinstance(exc, MlflowException):
        return exc.error_code in ("RESOURCE_ALREADY_EXISTS", "TEMPORARILY_UNAVAILABLE", "INTERNAL_ERROR")
    return errors.is_transient(exc)  # connection errors and timeouts included


def uri_problem(uri: str | None, env: Mapping[str, str]) -> str | None:
    """Why MLflow would refuse this tracking URI, said before any training, or None.

    MLflow 3 refuses to start a run on its file store (``file://...`` or a plain path, the old
    default many researchers still have set) unless ``MLFLOW_ALLOW_FILE_STORE`` opts in.
    """
    if not uri:
        return None
    scheme = uri.split("://", 1)[0] if "://" in uri else ("file" if not uri.startswith("sqlite:") else "sqlite")
    if scheme != "file" or env.get("MLFLOW_ALLOW_FILE_STORE", "").strip().lower() in ("1", "true", "yes"):
        return None
    folder = uri.removeprefix("file://").removeprefix("file:") or "."
    return (
        f"MLFLOW_TRACKING_URI={uri} is MLflow's file store, on which MLflow 3 refuses to start a run. "
        f"Use a database instead: MLFLOW_TRACKING_URI=sqlite:///{Path(folder).resolve() / 'mlflow.db'} "
        "(or unset it: the trainer then keeps a SQLite store beside its outputs), "
        "or keep the file store with MLFLOW_ALLOW_FILE_STORE=true."
    )


def queue_tags(ctx: Context) -> dict[str, str]:
    """The run's tags about the queue: whether the experiment waited ``queued`` (beyond its batch's
    parallelism) before its VM, for how long, and what gave it its slot."""
    return {
        "queue": "queued" if ctx.queued_seconds > 0 else "started at launch",
        "queued_seconds": f"{ctx.queued_seconds:.1f}",
        "started_by": ctx.started_by,
    }


def previous_run(ctx: Context) -> str | None:
    """The run an earlier boot of this experiment started, on a VM: one that died before its first
    checkpoint (which carries the run's id) left a run behind, and a retry that made a new one would
    give the experiment two. Found by the experiment's tags, the oldest first."""
    import mlflow
    from mlflow.entities import ViewType

    if not ctx.on_vm:
        return None
    runs = retry.call(
        lambda: mlflow.search_runs(
            experiment_names=[ctx.mlflow_experiment],
            filter_string=f"tags.batch_id = '{ctx.batch_id}' and tags.experiment_index = '{ctx.index}'",
            run_view_type=ViewType.ALL,
            order_by=["attributes.start_time ASC"],
            max_results=1,
            output_format="list",
        ),
        what="find the experiment's mlflow run",
        deadline=60,
        transient=_transient,
    )
    return str(runs[0].info.run_id) if runs else None


def start(ctx: Context, run_id: str | None) -> Any:
    import mlflow

    problem = uri_problem(os.environ.get("MLFLOW_TRACKING_URI"), os.environ)
    if problem:
        raise RuntimeError(problem)

    if not os.environ.get("MLFLOW_TRACKING_URI"):
        # No server: a local SQLite store beside the outputs (browse it with `mlflow ui --backend-store-uri ...`).
        mlflow.set_tracking_uri(f"sqlite:///{Path.cwd().parent / 'mlflow.db'}")
    retry.call(
        lambda: mlflow.set_experiment(ctx.mlflow_experiment),
        what="mlflow experiment",
        deadline=60,
        transient=_transient,
    )
    if not run_id:
        run_id = previous_run(ctx)
        if run_id:
            log.info("MLflow run %s was started by an earlier boot that left no checkpoint: resuming it", run_id)
    if run_id:
        run = retry.call(
            lambda: mlflow.start_run(run_id=run_id), what="resume mlflow run", deadline=60, transient=_transient
        )
        mlflow.set_tag("attempt", str(ctx.attempt))
        log.info("resumed MLflow run %s", run.info.run_id)
        return run
    tags = {
        "batch_id": ctx.batch_id,
        "experiment_index": str(ctx.index),
        "group": ctx.group,
        "instance": ctx.instance or "local",
        "attempt": str(ctx.attempt),
        "algorithm": ctx.experiment.algorithm,
        "environment": ctx.experiment.environment,
        **queue_tags(ctx),
    }
    if ctx.trial is not None:
        tags["sweep.trial"] = str(ctx.trial)
    if ctx.mlflow_parent_run_id:
        tags["mlflow.parentRunId"] = ctx.mlflow_parent_run_id  # the sweep's run: this trial is its child
    run = retry.call(
        lambda: mlflow.start_run(run_name=ctx.name, tags=tags),
        what="start mlflow run",
        deadline=60,
        transient=_transient,
    )
    log.info("MLflow run %s in experiment %s", run.info.run_id, ctx.mlflow_experiment)
    return run


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "unknown"


def log_params(ctx: Context, hyper: dict[str, Any], episode_len: int, total: int) -> None:
    import mlflow
    import sinergym

    from trainer.envs import energyplus_version

    exp = ctx.experiment
    params: dict[str, Any] = {
        "env": exp.environment,
        "episodes": exp.episodes,
        "algorithm": exp.algorithm,
        "reward": exp.reward_class,
        "normalization": exp.normalization,
        "multi-observations": exp.multiobs,
        "logger": exp.logger,
        "tensorboard": exp.tensorboard,
        "evaluation": exp.evaluation,
        "evaluation-frequency": exp.eval_freq,
        "evaluation-length": exp.eval_length,
        "log-interval": exp.log_interval,
        "seed": exp.seed,
        "remote-store": exp.remote_store,
        "runperiod": exp.runperiod,
        "n-envs": exp.n_envs,
        "episode-timesteps": episode_len,
        "total-timesteps": total,
        "sinergym-version": sinergym.__version__,
        "energyplus-version": energyplus_version(),
        "sinergym-cloud-version": _version("sinergym-cloud"),
        "stable-baselines3-version": _version("stable-baselines3"),
    }
    params.update({f"hp.{k}": v for k, v in hyper.items()})  # action_noise: SB3's repr, its kind and values
    mlflow.log_params({k: str(v) for k, v in params.items()})


class Metrics:
    """Metric points of one run, sent in batches by ``background`` (trainer.background.Background)."""

    BATCH = 1000  # MLflow's limit of metrics per log_batch

    def __init__(self, run_id: str, background: Any, tracking_uri: str | None = None) -> None:
        import mlflow

        self.run_id = run_id
        self.background = background
        self.tracking_uri = tracking_uri or mlflow.get_tracking_uri()
        self._pending: list[Any] = []
        self._lock = threading.Lock()
        self._client: Any = None
        self.sent = 0
        self.lost = 0

    def log(self, values: Mapping[str, float], step: int) -> None:
        """Queue ``values`` at ``step`` (now as their time); returns at once."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        points = [Metric(key, float(value), now, step) for key, value in values.items()]
        with self._lock:
            self._pending.extend(points)
        self.background.submit("MLflow metrics", self.flush, key=f"mlflow-metrics:{self.run_id}")

    def flush(self) -> None:
        """Send every point waiting, in batches (on the background worker)."""
        from mlflow import MlflowClient

        with self._lock:
            points, self._pending = self._pending, []
        if not points:
            return
        if self._client is None:
            self._client = MlflowClient(tracking_uri=self.tracking_uri)
        client = self._client
        for i in range(0, len(points), self.BATCH):
            chunk = points[i : i + self.BATCH]
            try:
                retry.call(
                    functools.partial(client.log_batch, self.run_id, metrics=chunk, synchronous=True),
                    what="mlflow log_batch",
                    deadline=120,
                    transient=_transient,
                )
                self.sent += len(chunk)
            except Exception as exc:  # noqa: BLE001 - MLflow down must not stop training; the log says so
                self.lost += len(chunk)
                log.warning("%d metric point(s) not logged to MLflow: %s", len(chunk), exc)


def log_eval(mean: float, std: float, episode: int) -> None:
    import mlflow

    try:
        mlflow.log_metrics({"eval/mean_reward": mean, "eval/std_reward": std}, step=episode)
    except Exception as exc:  # noqa: BLE001 - MLflow down must not stop training; the log says so
        log.warning("evaluation metrics not logged to MLflow: %s", exc)


def finish(models: Path, outputs: Path, whole_output: bool, metrics: Mapping[str, Any]) -> None:
    """The final model (in ``models``) and Sinergym's CSV monitors (in ``outputs``) as artifacts, the
    whole output with ``whole_output`` (--mlflow_store), and the run's summary metrics."""
    import mlflow

    for model in ("model.zip", "best_model.zip"):
        path = models / model
        if path.exists():
            mlflow.log_artifact(str(path), artifact_path="models")
    if whole_output:
        mlflow.log_artifacts(str(outputs), artifact_path="sinergym")
    else:
        for csv in sorted(outputs.rglob("*.csv")):
            relative = csv.parent.relative_to(outputs).as_posix()
            mlflow.log_artifact(str(csv), artifact_path=f"monitors/{relative}")
    final = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    if final:
        mlflow.log_metrics({f"summary/{k}": float(v) for k, v in final.items()})


def end(killed: str | None, failed: bool) -> None:
    import mlflow

    status = "FAILED" if failed else (killed or "FINISHED")
    try:
        mlflow.end_run(status=status)
    except Exception as exc:  # noqa: BLE001 - the run's outcome is already decided; the log says so
        log.warning("could not close the MLflow run: %s", exc)
