"""Resumable checkpoints in the results bucket: model, replay buffer, normalization statistics.

Saved every ``checkpoint_every`` episodes and on SIGTERM, under
``gs://<bucket>/<batch>/<experiment>/checkpoint/``. The files go first and ``meta.json`` last, so a
checkpoint is only visible once it is whole. A trainer that finds a checkpoint for its experiment
(a VM replacing a preempted one) resumes it: same MLflow run, same step count.

Every trainer may write under every batch prefix of the bucket (IAM cannot name the experiment),
and resuming unpickles ``model.zip`` and the replay buffer: a checkpoint planted by another VM
would run its code here. So a checkpoint is trusted only if ``meta.json`` carries the HMAC of the
experiment's checkpoint key (derived by the control plane, handed over SSH in the TrainerSpec,
never in the bucket), names this batch and experiment, lists only the allowlisted files, and each
file matches the SHA-256 the signed ``meta.json`` gives. Anything else is refused with the reason,
and training starts from scratch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sinergym_cloud import names, signing
from sinergym_cloud.gcp import retry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Resume:
    run_id: str | None
    model_path: Path
    replay_buffer_path: Path | None
    norm_stats: dict[str, Any] | None
    episodes: int
    timesteps: int


@dataclass(frozen=True)
class Owner:
    """Whose checkpoint: the experiment (batch and name), the key its meta.json is signed with, the
    attempt that saves it."""

    batch_id: str
    name: str
    key: str | None
    attempt: int = 1

    @property
    def prefix(self) -> str:
        return names.checkpoint_prefix(self.batch_id, self.name)


FILES = ("model.zip", "replay_buffer.pkl")  # the only files a checkpoint may name


def _canonical(meta: dict[str, Any]) -> bytes:
    return json.dumps({k: v for k, v in meta.items() if k != "signature"}, sort_keys=True).encode()


def sign_meta(meta: dict[str, Any], key: str) -> dict[str, Any]:
    return {**meta, "signature": signing.sign(key, _canonical(meta))}


def refusal(meta: Any, key: str | None, batch_id: str, name: str) -> str:  # noqa: PLR0911 - one return per reason
    """Why a checkpoint's ``meta.json`` is not this experiment's own ("" if it is)."""
    if key is None:
        return "no checkpoint key was given to this trainer"
    if not isinstance(meta, dict):
        return "meta.json is not a JSON object"
    signature = meta.get("signature")
    if not signing.verify(key, _canonical(meta), signature if isinstance(signature, str) else None):
        return "meta.json is not signed with this experiment's key"
    if (meta.get("batch_id"), meta.get("experiment")) != (batch_id, name):
        return "meta.json names another experiment"
    files, digests = meta.get("files"), meta.get("sha256")
    if not isinstance(files, list) or "model.zip" not in files or not isinstance(digests, dict):
        return "meta.json lists no model"
    for f in files:
        if f not in FILES or not isinstance(digests.get(f), str):
            return f"meta.json names a file that is not allowed: {str(f)[:60]!r}"
    return ""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(bucket: Any, owner: Owner, local: Path) -> Resume | None:
    """The experiment's latest checkpoint in ``bucket``, downloaded into ``local`` and verified, or None."""
    prefix = owner.prefix
    meta_blob = retry.call(
        lambda: bucket.get_blob(prefix + "meta.json", timeout=30), what="read checkpoint", deadline=60
    )
    if meta_blob is None:
        return None
    raw = meta_blob.download_as_bytes(timeout=30)
    try:
        meta = json.loads(raw) if len(raw) < 1_000_000 else None
    except (ValueError, RecursionError):
        meta = None
    why = refusal(meta, owner.key, owner.batch_id, owner.name)
    if why:
        log.warning("checkpoint at gs://%s/%s refused: %s; training starts from scratch", bucket.name, prefix, why)
        return None
    assert isinstance(meta, dict)
    shutil.rmtree(local, ignore_errors=True)
    local.mkdir(parents=True)
    root = local.resolve()
    for name in meta["files"]:
        target = (local / name).resolve()
        if target.parent != root:  # an allowlisted plain name always is; kept in case the list grows
            log.warning("checkpoint refused: %s resolves outside %s; training starts from scratch", name, root)
            return None
        _download(bucket.blob(prefix + name), target)
        if _sha256(target) != meta["sha256"][name]:
            log.warning("checkpoint refused: %s does not match its signed digest; training starts from scratch", name)
            shutil.rmtree(local, ignore_errors=True)
            return None
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


def save(
    bucket: Any,
    owner: Owner,
    local: Path,
    model: Any,
    vec_env: Any,
    *,
    episodes: int,
    run_id: str | None,
    normalization: bool,
) -> None:
    """Write a checkpoint of ``model`` (staged in ``local``): the files first, the signed meta.json last."""
    from trainer import envs, storage

    started = time.monotonic()
    shutil.rmtree(local, ignore_errors=True)
    local.mkdir(parents=True)
    model.save(local / "model.zip")
    files = ["model.zip"]
    if getattr(model, "replay_buffer", None) is not None:
        model.save_replay_buffer(local / "replay_buffer.pkl")
        files.append("replay_buffer.pkl")
    meta: dict[str, Any] = {
        "batch_id": owner.batch_id,
        "experiment": owner.name,
        "files": files,
        "sha256": {name: _sha256(local / name) for name in files},
        "timesteps": int(model.num_timesteps),
        "episodes": episodes,
        "mlflow_run_id": run_id,
        "attempt": owner.attempt,
        "saved_at": time.time(),
        "norm_stats": envs.normalization_stats(vec_env) if normalization else None,
    }
    if owner.key:
        meta = sign_meta(meta, owner.key)
    prefix = owner.prefix
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
