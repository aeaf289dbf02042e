"""Resumable checkpoints in the results bucket: model, replay buffer, normalization statistics.

Saved every ``checkpoint_every`` episodes (no sooner than ``checkpoint_min_seconds`` after the
last) and on SIGTERM, under
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

Writing one does not stop the learner longer than a copy: ``snapshot`` (on the training thread)
serializes the model into memory as SB3 saves it and copies the replay buffer's filled rows only,
and ``write`` (on the background worker, trainer/background.py) puts the files on disk, hashes and
uploads them, meta.json last. A checkpoint's replay buffer holds only its filled rows (a 1,000,000
transition buffer after one simulated week holds 672), marked so that ``load_replay_buffer``
gives it back its full size on resume; the final outputs' ``models/replay_buffer.pkl`` stays SB3's
own, full format.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

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


def due(episode: int, every: int, min_seconds: float, last: float | None, now: float | None = None) -> bool:
    """Whether the end of episode ``episode`` saves a checkpoint: every ``every`` episodes (0: never),
    but not sooner than ``min_seconds`` after the last one (``last``, ``time.monotonic()`` when it
    was queued; None: none yet, so the first is always due). A checkpoint's write (serializing,
    hashing, uploading) takes CPU from training, several percent of it with short episodes and a
    large model; the floor bounds that to one write a period, and a crash without notice loses at
    most one period more. The stop's checkpoint at SIGTERM does not ask."""
    if not every or episode % every:
        return False
    return last is None or (time.monotonic() if now is None else now) - last >= min_seconds


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


COMPACTED = "_sinergym_compacted"  # on a checkpoint's replay buffer: {"rows": n, "fields": [...]}


def compact_replay_buffer(buffer: Any) -> Any:
    """A copy of ``buffer`` holding only its filled rows (one more when not full: with
    ``optimize_memory_usage`` the last next-observation is in the row after the last transition)."""
    size = int(buffer.buffer_size)
    rows = size if buffer.full else min(int(buffer.pos) + 1, size)
    compact = copy.copy(buffer)
    fields = []
    for name, value in vars(buffer).items():
        if isinstance(value, np.ndarray) and value.ndim and value.shape[0] == size:
            setattr(compact, name, value[:rows].copy())
            fields.append(name)
        elif (
            isinstance(value, dict)
            and value
            and all(isinstance(v, np.ndarray) and v.ndim and v.shape[0] == size for v in value.values())
        ):
            setattr(compact, name, {k: v[:rows].copy() for k, v in value.items()})
            fields.append(name)
    setattr(compact, COMPACTED, {"rows": rows, "fields": fields})
    return compact


def expand_replay_buffer(buffer: Any) -> Any:
    """Give a compacted buffer back its full size (zeros after the kept rows), in place."""
    marker = vars(buffer).pop(COMPACTED, None)
    if not marker:
        return buffer
    size, rows = int(buffer.buffer_size), int(marker["rows"])

    def grow(value: np.ndarray) -> np.ndarray:
        full = np.zeros((size, *value.shape[1:]), dtype=value.dtype)
        full[:rows] = value[:rows]
        return full

    for name in marker["fields"]:
        value = getattr(buffer, name)
        setattr(buffer, name, {k: grow(v) for k, v in value.items()} if isinstance(value, dict) else grow(value))
    return buffer


def load_replay_buffer(model: Any, path: Path) -> None:
    """SB3's ``load_replay_buffer``, then the checkpoint's compacted rows back to the buffer's size."""
    model.load_replay_buffer(path)
    expand_replay_buffer(model.replay_buffer)


@dataclass(frozen=True)
class ModelCopy:
    """What SB3's ``save`` writes of a model, copied: the attributes it keeps, the state dicts of its
    networks and optimizers, its torch variables (SAC's entropy coefficient). Deep copies of a
    policy's tensors take a few milliseconds; the serialization ``save`` spends most of its time on
    (every attribute pickled and base64-encoded, the state dicts torch-saved into a zip) is left to
    ``zip_bytes``, on the background worker."""

    data: dict[str, Any]
    params: dict[str, Any]
    pytorch_variables: dict[str, Any]

    @classmethod
    def of(cls, model: Any) -> ModelCopy:
        """The copy, chosen as ``BaseAlgorithm.save`` chooses (its exclusions and the algorithm's own)."""
        from stable_baselines3.common.save_util import recursive_getattr

        state_dicts, torch_variables = model._get_torch_save_params()
        excluded = set(model._excluded_save_params())
        excluded |= {name.split(".")[0] for name in [*state_dicts, *torch_variables]}
        data = {k: v for k, v in vars(model).items() if k not in excluded}
        variables = {name: recursive_getattr(model, name) for name in torch_variables}
        return cls(copy.deepcopy(data), copy.deepcopy(model.get_parameters()), copy.deepcopy(variables))

    def zip_bytes(self) -> bytes:
        """The model.zip SB3's ``save`` would have written when the copy was taken."""
        from stable_baselines3.common.save_util import save_to_zip_file

        buffer = io.BytesIO()
        save_to_zip_file(buffer, data=self.data, params=self.params, pytorch_variables=self.pytorch_variables)
        return buffer.getvalue()


@dataclass(frozen=True)
class Snapshot:
    """A checkpoint's content, copied on the training thread; written by ``write`` on another."""

    model: ModelCopy | bytes  # the copy, or (when one could not be taken) the model.zip saved at once
    replay_buffer: Any  # a compacted copy, or None
    timesteps: int
    episodes: int
    norm_stats: dict[str, Any] | None
    copy_seconds: float

    def model_zip(self) -> bytes:
        return self.model if isinstance(self.model, bytes) else self.model.zip_bytes()


def snapshot(model: Any, vec_env: Any, *, episodes: int, normalization: bool) -> Snapshot:
    """What a checkpoint holds, copied now: the model's state (``ModelCopy``), the replay buffer's
    filled rows, the normalization statistics. The only part that stops the learner."""
    from trainer import envs

    started = time.perf_counter()
    taken: ModelCopy | bytes
    try:
        taken = ModelCopy.of(model)
    except Exception as exc:  # noqa: BLE001 - an attribute that refuses a deep copy: save whole, now, as SB3 does
        log.debug("model state not copied (%s: %s); saving the model at once", type(exc).__name__, exc)
        buffer = io.BytesIO()
        model.save(buffer)
        taken = buffer.getvalue()
    replay = getattr(model, "replay_buffer", None)
    return Snapshot(
        model=taken,
        replay_buffer=compact_replay_buffer(replay) if replay is not None else None,
        timesteps=int(model.num_timesteps),
        episodes=episodes,
        norm_stats=envs.normalization_stats(vec_env) if normalization else None,
        copy_seconds=time.perf_counter() - started,
    )


def write(bucket: Any, owner: Owner, local: Path, snap: Snapshot, *, run_id: str | None) -> None:
    """Write a snapshot as the checkpoint (staged in ``local``): the files first, the signed meta.json last."""
    from stable_baselines3.common.save_util import save_to_pkl

    from trainer import storage

    started = time.monotonic()
    shutil.rmtree(local, ignore_errors=True)
    local.mkdir(parents=True)
    (local / "model.zip").write_bytes(snap.model_zip())
    files = ["model.zip"]
    if snap.replay_buffer is not None:
        save_to_pkl(local / "replay_buffer.pkl", snap.replay_buffer)
        files.append("replay_buffer.pkl")
    meta: dict[str, Any] = {
        "batch_id": owner.batch_id,
        "experiment": owner.name,
        "files": files,
        "sha256": {name: _sha256(local / name) for name in files},
        "timesteps": snap.timesteps,
        "episodes": snap.episodes,
        "mlflow_run_id": run_id,
        "attempt": owner.attempt,
        "saved_at": time.time(),
        "norm_stats": snap.norm_stats,
    }
    if owner.key:
        meta = sign_meta(meta, owner.key)
    prefix = owner.prefix
    for name in files:
        storage.upload_file(bucket, local / name, prefix + name)
    blob = bucket.blob(prefix + "meta.json")
    body = json.dumps(meta)
    retry.call(
        lambda: storage.paced_write(
            bucket,
            prefix + "meta.json",
            lambda: blob.upload_from_string(body, content_type="application/json", timeout=30),
        ),
        what="write checkpoint meta",
        deadline=60,
    )
    log.info(
        "checkpoint saved: %d timesteps, %d episodes (copied in %.3fs, written in %.1fs)",
        meta["timesteps"],
        meta["episodes"],
        snap.copy_seconds,
        time.monotonic() - started,
    )


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
    """Write a checkpoint of ``model`` now, on this thread (``snapshot`` then ``write``)."""
    snap = snapshot(model, vec_env, episodes=episodes, normalization=normalization)
    write(bucket, owner, local, snap, run_id=run_id)
