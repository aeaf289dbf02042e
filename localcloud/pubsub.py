"""Google's Pub/Sub emulator (Java, shipped with google-cloud-cli): finding and starting it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def find_emulator() -> Path:
    """The ``cloud-pubsub-emulator`` launcher, or a RuntimeError saying how to get it."""
    override = os.environ.get("LOCALCLOUD_PUBSUB_EMULATOR")
    candidates = [Path(override)] if override else []
    gcloud = shutil.which("gcloud")
    if gcloud:
        sdk = Path(gcloud).resolve().parent.parent
        candidates.append(sdk / "platform" / "pubsub-emulator" / "bin" / "cloud-pubsub-emulator")
    candidates += [
        Path("/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator"),
        Path("/usr/share/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator"),
        Path("/opt/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator"),
    ]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError(
        "the Pub/Sub emulator was not found: install google-cloud-cli with the emulator "
        "(gcloud components install pubsub-emulator, or apt-get install google-cloud-cli-pubsub-emulator), "
        "or set LOCALCLOUD_PUBSUB_EMULATOR to its cloud-pubsub-emulator launcher"
    )


def argv(port: int) -> list[str]:
    # The launcher script ends in `exec java ...`: one process, which our process group contains.
    return [str(find_emulator()), "--host=127.0.0.1", f"--port={port}"]
