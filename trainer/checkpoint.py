"""Resumable checkpoints in the results bucket: model, replay buffer, normalization statistics.

Saved every ``checkpoint_every`` episodes and on SIGTERM, under
``gs://<bucket>/<batch>/<experiment>/checkpoint/``. The files go first and ``meta.json`` last, so a
checkpoint is only visible once it is whole. A trainer that finds a checkpoint for its experiment
(a VM replacing a preempted one) resumes it: same MLflow run, same step count.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sinergym_cloud import names, retry

if TYPE_CHECKING:
    from trainer.run import Runner

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Resume:
    run_id: str | None
    model_path: Path
    replay_buffer_path: Path | None
    norm_stats: dict[str, Any] | None
    episodes: int
    timesteps: int


def fetch(runner: Runner, local: Path) -> Resume | None:
    """The experiment's latest checkpoint, downloaded into ``local``, or None."""
    bucket = runner.bucket()
    prefix = names.checkpoint_prefix(runner.ctx.batch_id, runner.ctx.name)
    meta_blob = retry.call(
        lambda: bucket.get_blob(prefix + "meta.json", timeout=30), what="read checkpoint", deadline=60
    )
    if meta_blob is None:
        return None
    meta = json.loads(meta_blob.download_as_bytes(timeout=30))
    shutil.rmtree(local, ignore_errors=True)
    local.mkdir(parents=True)
    for name in meta["files"]:
        _download(bucket.blob(prefix + name), local / name)
    return Resume(
        run_id=meta.get("mlflow_run_id"),
        model_path=local / "model.zip",
        replay_buffer_path=(local / "replay_buffer.pkl") if "replay_buffer.pkl" in meta["files"] else None,
        norm_stats=meta.get("norm_stats"),
        episodes=int(meta.get("episodes", 0)),
        timesteps=int(meta.get("timesteps", 0)),
    )


def _download(blob: Any, target: Path) -> None:
    retry.call(lambda: blob.download_to_filename(str(target), timeout=300), what=f"download {blob.name}", deadline=300)


def save(runner: Runner, model: Any, vec_env: Any) -> None:
    from trainer import envs, storage

    started = time.monotonic()
    local = runner.workdir / "checkpoint-out"
    shutil.rmtree(local, ignore_errors=True)
    local.mkdir(parents=True)
    model.save(local / "model.zip")
    files = ["model.zip"]
    if getattr(model, "replay_buffer", None) is not None:
        model.save_replay_buffer(local / "replay_buffer.pkl")
        files.append("replay_buffer.pkl")
    meta = {
        "files": files,
        "timesteps": int(model.num_timesteps),
        "episodes": runner.episodes_done,
        "mlflow_run_id": runner.outcome.mlflow_run_id,
        "attempt": runner.ctx.attempt,
        "saved_at": time.time(),
        "norm_stats": envs.normalization_stats(vec_env) if runner.ctx.experiment.normalization else None,
    }
    bucket = runner.bucket()
    prefix = names.checkpoint_prefix(runner.ctx.batch_id, runner.ctx.name)
    for name in files:
        storage.upload_file(bucket, local / name, prefix + name)
    blob = bucket.blob(prefix + "meta.json")
    retry.call(
        lambda: blob.upload_from_string(json.dumps(meta), content_type="application/json", timeout=30),
        what="write checkpoint meta",
        deadline=60,
    )
    log.info(
        "checkpoint saved: %d timesteps, %d episodes (%.1fs)",
        meta["timesteps"],
        meta["episodes"],
        time.monotonic() - started,
    )
