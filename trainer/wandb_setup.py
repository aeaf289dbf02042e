"""Weights & Biases beside MLflow, through Sinergym's own WandBLogger wrapper.

The API key is never in the image, the instance metadata or a message:

- on a laptop it is ``WANDB_API_KEY`` (or ``wandb login``'s netrc), as W&B always reads it;
- on a VM the trainer reads it from Secret Manager (``SINERGYM_WANDB_SECRET``, a secret version
  resource name that the startup script passes; infra/ grants the trainer's service account
  ``secretAccessor`` on that one secret) into its own process environment only.

With no key (the local cloud has no Secret Manager), the run is logged offline into the
experiment's output (``wandb/offline-run-*``, uploaded with the outputs; ``wandb sync`` sends it
later) instead of failing hours of training. ``WANDB_MODE`` set by the user always wins.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

log = logging.getLogger(__name__)

SECRET_ENV = "SINERGYM_WANDB_SECRET"  # noqa: S105 - the name of a variable holding a secret name, not a secret


def _netrc_has_key() -> bool:
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return "api.wandb.ai" in netrc.read_text()
    except OSError:
        return False


def read_secret(name: str) -> str:
    from google.cloud import secretmanager

    client = secretmanager.SecretManagerServiceClient()
    response = client.access_secret_version(name=name, timeout=30)
    return response.payload.data.decode().strip()


def prepare(run_dir: Path, group: str) -> str:
    """Make W&B able to start in this process; returns the mode it will run in. Runs of one batch
    share a W&B group (the batch id) unless the config names one."""
    os.environ.setdefault("WANDB_DIR", str(run_dir))
    os.environ.setdefault("WANDB_RUN_GROUP", group)
    os.environ.setdefault("WANDB_SILENT", "true")
    mode = os.environ.get("WANDB_MODE")
    if mode in ("offline", "disabled", "dryrun"):
        log.info("W&B %s (WANDB_MODE); run directory under %s/wandb", mode, os.environ["WANDB_DIR"])
        return mode
    if os.environ.get("WANDB_API_KEY") or _netrc_has_key():
        return "online"
    secret = os.environ.get(SECRET_ENV)
    if secret:
        try:
            os.environ["WANDB_API_KEY"] = read_secret(secret)
            log.info("W&B API key read from Secret Manager (%s)", secret.split("/versions/")[0])
            return "online"
        except Exception as exc:  # noqa: BLE001 - W&B is an extra: training goes on, offline, and says why
            log.warning("W&B API key not read from %s (%s): logging W&B offline", secret, type(exc).__name__)
    else:
        log.warning(
            "no W&B API key (WANDB_API_KEY, or %s on a VM): logging W&B offline under %s/wandb (`wandb sync` later)",
            SECRET_ENV,
            os.environ["WANDB_DIR"],
        )
    os.environ["WANDB_MODE"] = "offline"
    return "offline"


def log_eval(mean: float, std: float, episode: int) -> None:
    """Evaluation metrics into the experiment's W&B run, if WandBLogger started one."""
    wandb = sys.modules.get("wandb")
    run = getattr(wandb, "run", None) if wandb else None
    if run is None:
        return
    try:
        run.log({"eval/mean_reward": mean, "eval/std_reward": std, "eval/after_episode": episode})
    except Exception as exc:  # noqa: BLE001 - a lost metric point must not stop training
        log.warning("evaluation metrics not logged to W&B: %s", exc)
