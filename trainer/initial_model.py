"""Starting an experiment from a saved model: fine-tuning, or ``python -m trainer evaluate``.

Sources (contracts.InitialModel): a ``gs://.../model.zip`` (or a local path on a laptop), a
previous batch's experiment by name (``gs://<results>/<batch>/<experiment>/models/``) or a W&B
artifact (Sinergym's ``model: {entity, project, artifact_name, ...}``).

Beside the policy, what makes a continuation faithful is loaded when it is there: the observation
normalization statistics (``normalization.json`` written by this trainer, a checkpoint's
``meta.json``, or Sinergym's ``mean.txt``/``var.txt``/``count.txt``) and, for off-policy
algorithms, the replay buffer (``replay_buffer.pkl``).

Loading is kept free of unpickling where it can be: every pickled entry of the model's ``data`` is
replaced by a value built here (the spaces from the environment, schedules from the experiment), and
the weights are read by SB3 with ``weights_only``. A replay buffer is a pickle, so it is only read
from the experiment's own results bucket or a local path; elsewhere it is skipped, and the log says so.
"""

from __future__ import annotations

import functools
import json
import logging
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sinergym_cloud import names
from sinergym_cloud.contracts import InitialModel
from sinergym_cloud.gcp import retry

log = logging.getLogger(__name__)

SIDE_FILES = ("normalization.json", "meta.json", "replay_buffer.pkl", "mean.txt", "var.txt", "count.txt")


@dataclass(frozen=True)
class Loaded:
    """A downloaded model and what came with it."""

    source: str
    model_path: Path
    norm_stats: dict[str, Any] | None
    replay_buffer_path: Path | None


def source_uri(model: InitialModel, results_bucket: str | None) -> str:
    """Where the model is, as a gs:// URI, a local path or ``wandb:entity/project/name:tag``."""
    if model.wandb is not None:
        w = model.wandb
        return f"wandb:{w.entity}/{w.project}/{w.artifact_name}:{w.artifact_tag}"
    if model.batch_id is not None and model.experiment is not None:
        if not results_bucket:
            raise ValueError("initial_model by batch and experiment needs a results bucket (SINERGYM_RESULTS_BUCKET)")
        return f"gs://{results_bucket}/{names.results_prefix(model.batch_id, model.experiment)}models/model.zip"
    assert model.uri is not None  # the contract allows exactly one source
    return model.uri


def fetch(
    model: InitialModel,
    local: Path,
    storage_client: Callable[[], Any] | None,
    results_bucket: str | None,
    replay_buffer: bool = True,
) -> Loaded:
    """Download the model (and its side files) into ``local``; ``replay_buffer=False`` for evaluation."""
    uri = source_uri(model, results_bucket)
    local.mkdir(parents=True, exist_ok=True)
    trusted = False
    if uri.startswith("wandb:"):
        assert model.wandb is not None
        model_path = _from_wandb(model, local)
    elif uri.startswith("gs://"):
        if storage_client is None:
            raise ValueError(f"{uri}: no Cloud Storage client")
        bucket_name, _, name = uri.removeprefix("gs://").partition("/")
        model_path = _from_bucket(storage_client().bucket(bucket_name), name, local)
        trusted = bucket_name == results_bucket
    else:
        path = Path(uri)
        model_path = path / "model.zip" if path.is_dir() else path
        if not model_path.exists():
            raise FileNotFoundError(f"initial model {model_path} does not exist")
        trusted = True
    folder = model_path.parent
    buffer: Path | None = folder / "replay_buffer.pkl"
    if not replay_buffer:
        buffer = None
    elif buffer is not None and buffer.exists() and not trusted:
        log.warning("replay buffer beside %s not loaded: a pickle is only read from the results bucket or disk", uri)
        buffer = None
    stats = normalization_stats(folder)
    log.info(
        "initial model %s (normalization statistics: %s, replay buffer: %s)",
        uri,
        "yes" if stats else "no",
        "yes" if buffer is not None and buffer.exists() else "no",
    )
    return Loaded(uri, model_path, stats, buffer if buffer is not None and buffer.exists() else None)


def _from_bucket(bucket: Any, name: str, local: Path) -> Path:
    folder, _, filename = name.rpartition("/")
    if not filename.endswith(".zip"):  # a folder holding model.zip
        folder, filename = name.rstrip("/"), "model.zip"
    prefix = f"{folder}/" if folder else ""
    target = local / filename
    blob = retry.call(lambda: bucket.get_blob(prefix + filename, timeout=30), what="find initial model", deadline=60)
    if blob is None:
        raise FileNotFoundError(f"no initial model at gs://{bucket.name}/{prefix}{filename}")
    retry.call(lambda: blob.download_to_filename(str(target), timeout=300), what="download model", deadline=300)
    for side in SIDE_FILES:
        found = retry.call(functools.partial(bucket.get_blob, prefix + side, timeout=30), what=side, deadline=60)
        if found is not None:
            found.download_to_filename(str(local / side), timeout=300)
    return target


def _from_wandb(model: InitialModel, local: Path) -> Path:
    import wandb

    assert model.wandb is not None
    w = model.wandb
    artifact = wandb.Api().artifact(f"{w.entity}/{w.project}/{w.artifact_name}:{w.artifact_tag}", type=w.artifact_type)
    root = Path(artifact.download(root=str(local / "wandb-artifact")))
    path = root / w.model_path
    if not path.exists():
        raise FileNotFoundError(f"W&B artifact {w.artifact_name}:{w.artifact_tag} has no {w.model_path}")
    return path


def normalization_stats(folder: Path) -> dict[str, Any] | None:
    """Observation statistics saved beside a model, in any of the three forms this project reads."""
    own = folder / "normalization.json"
    if own.exists():
        return dict(json.loads(own.read_text()))
    meta = folder / "meta.json"
    if meta.exists():
        stats = json.loads(meta.read_text()).get("norm_stats")
        if stats:
            return dict(stats)
    mean, var = folder / "mean.txt", folder / "var.txt"
    if mean.exists() and var.exists():
        import numpy as np

        count = folder / "count.txt"
        return {
            "mean": np.loadtxt(mean).tolist(),
            "var": np.loadtxt(var).tolist(),
            "count": float(np.loadtxt(count)) if count.exists() else 1e-4,
        }
    return None


def serialized_keys(model_path: Path) -> list[str]:
    """The entries of an SB3 model's ``data`` that SB3 would unpickle."""
    with zipfile.ZipFile(model_path) as archive:
        data = json.loads(archive.read("data"))
    return [k for k, v in data.items() if isinstance(v, dict) and ":serialized:" in v]


def load(algo: Any, loaded: Loaded, env: Any, params: dict[str, Any], **kwargs: Any) -> Any:
    """``algo.load`` with every pickled entry replaced by what the algorithm's own constructor makes of
    this experiment's arguments (an instance built without its networks), so nothing is unpickled."""
    from stable_baselines3.common.utils import ConstantSchedule

    arguments = dict(params)
    policy = arguments.pop("policy", "MlpPolicy")
    fresh = algo(policy, env, _init_setup_model=False, **arguments)
    custom: dict[str, Any] = {}
    for key in serialized_keys(loaded.model_path):
        if key == "lr_schedule":
            rate = fresh.learning_rate
            custom[key] = rate if callable(rate) else ConstantSchedule(float(rate))
        else:
            custom[key] = getattr(fresh, key, None)  # None: rebuilt by the algorithm's set-up
    model = algo.load(str(loaded.model_path), env=env, custom_objects=custom, **kwargs)
    if loaded.replay_buffer_path is not None and hasattr(model, "load_replay_buffer"):
        model.load_replay_buffer(str(loaded.replay_buffer_path))
        log.info("replay buffer restored: %d transitions", model.replay_buffer.size())
    return model
