"""Where an experiment's TensorBoard logs live in Cloud Storage, and serving a batch's logs.

One rule, used by the trainer (which syncs the event files there while it trains) and by
``python publisher.py tensorboard BATCH_ID`` (which points TensorBoard at them):

- ``tensorboard: gs://RESULTS/FOLDER`` (the batch's one folder, e.g. ``gs://RESULTS/<batch>/tb``):
  ``FOLDER/<experiment>/``, so ``tensorboard --logdir gs://RESULTS/FOLDER`` shows every run (a value
  already in the experiment's own prefix is used as it is; validation: contracts.path_outside);
- ``tensorboard: ./local/path`` on a VM: ``gs://<results>/<batch>/<experiment>/tensorboard/``.

TensorBoard reads ``gs://`` through gcsfs with ``--load_fast=false`` (its fast loader does not know
``STORAGE_EMULATOR_HOST``); gcsfs honours ``STORAGE_EMULATOR_HOST``, so the same command serves a
local cloud's bucket.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Mapping

from sinergym_cloud import contracts, names
from sinergym_cloud.config import Settings


def log_uri(tensorboard: str | None, results_bucket: str | None, batch_id: str, name: str) -> str | None:
    """The gs:// folder holding an experiment's event files, or None if they never reach a bucket."""
    if not tensorboard:
        return None
    if tensorboard.startswith("gs://"):
        return contracts.run_folder(tensorboard, batch_id, name)
    if not results_bucket:
        return None
    return f"gs://{results_bucket}/{names.results_prefix(batch_id, name)}tensorboard/"


def run_name(index: int, name: str) -> str:
    """A TensorBoard run name for an experiment: short, unique in the batch, no ',' or ':'."""
    return f"{index}-{name}"[:80].replace(":", "-").replace(",", "-")


def logdir_spec(runs: dict[str, str]) -> str:
    """TensorBoard's ``--logdir_spec``: ``name:uri,name:uri`` (every experiment one run)."""
    return ",".join(f"{name}:{uri}" for name, uri in sorted(runs.items()))


def command(runs: dict[str, str], host: str, port: int, reload_interval: float) -> list[str]:
    """The TensorBoard command line that reads these runs from Cloud Storage."""
    missing = [m for m in ("tensorboard", "gcsfs") if importlib.util.find_spec(m) is None]
    if missing:
        raise SystemExit(
            f"publisher: {' and '.join(missing)} not installed: pip install '.[viewer]' (TensorBoard reads gs:// "
            "through gcsfs)"
        )
    return [
        sys.executable,
        "-m",
        "tensorboard.main",
        "--logdir_spec",
        logdir_spec(runs),
        "--load_fast=false",  # the fast loader has no gcsfs and ignores STORAGE_EMULATOR_HOST
        "--host",
        host,
        "--port",
        str(port),
        "--reload_interval",
        str(reload_interval),
    ]


def environment(settings: Settings, env: Mapping[str, str]) -> dict[str, str]:
    """TensorBoard's environment: on the local cloud, gcsfs pointed at its Cloud Storage emulator."""
    values = dict(env)
    if settings.storage_endpoint:
        values["STORAGE_EMULATOR_HOST"] = settings.storage_endpoint
        if settings.local_token:
            # The caller's credential, as gcsfs takes a raw token (fsspec's FSSPEC_<PROTOCOL>_TOKEN
            # settings); on Google Cloud gcsfs finds the application-default credentials itself.
            values["FSSPEC_GS_TOKEN"] = values["FSSPEC_GCS_TOKEN"] = settings.local_token
            # gcsfs would ask Google's tokeninfo when the local token expires: it does not.
            values["FETCH_RAW_TOKEN_EXPIRY"] = "false"  # noqa: S105 - a switch, not a secret
    values.setdefault("GOOGLE_CLOUD_PROJECT", settings.project)
    return values
