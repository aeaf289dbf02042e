"""Which cloud a publisher command talks to, and the one hook into the local cloud.

Choosing the settings of a target stays in ``config``; this module decides between Google Cloud and
the local cloud from the flags and the environment, and starts the local cloud when it is the target.
``local_cloud`` is the only place the publisher imports ``localcloud``: a publisher installed without
it (``pip install sinergym-cloud`` on a laptop that only talks to Google Cloud) says what to install.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from sinergym_cloud import config
from sinergym_cloud.publisher.arguments import die

if TYPE_CHECKING:
    from localcloud.cloud import LocalCloud
    from sinergym_cloud.gcp.runtime import Runtime

INSTALL_HINT = (
    "the local cloud is not installed with this publisher: install it from a checkout of sinergym-cloud "
    "(pip install -e '.[local]'), or give --project_id to use Google Cloud"
)


def local_cloud() -> LocalCloud:
    """The local cloud of this checkout (``LOCALCLOUD_DIR``), not started. Exits with what to install
    when the ``localcloud`` package, or one of its dependencies, is missing."""
    try:
        from localcloud.cloud import LocalCloud
    except ImportError as exc:
        raise SystemExit(die(f"{INSTALL_HINT} ({exc})")) from None
    return LocalCloud()


def target_kind(project: str | None) -> str:
    """Which cloud a command talks to: "google", "emulated" (the local cloud's environment is
    sourced) or "local" (the local cloud of this checkout, started if needed)."""
    env = os.environ
    if env.get("PUBSUB_EMULATOR_HOST") and env.get("SINERGYM_COMPUTE_ENDPOINT"):
        return "emulated"
    if (project or env.get("GOOGLE_CLOUD_PROJECT")) and env.get("SINERGYM_TARGET") != "local":
        return "google"
    return "local"


def target_settings(project: str | None) -> tuple[config.Settings, bool]:
    """Settings for Google Cloud or the local cloud (started if needed). Returns (settings, local)."""
    env = dict(os.environ)
    kind = target_kind(project)
    if kind == "google":
        if project:
            env["GOOGLE_CLOUD_PROJECT"] = project
        return config.Settings.from_env(env), False
    if kind == "local":
        cloud = local_cloud()
        if not cloud.is_up():
            print("publisher: no project given: starting the local cloud (make local-down stops it)", file=sys.stderr)
        try:
            env.update(cloud.up(say=lambda s: print(f"  {s}", file=sys.stderr)))
        except RuntimeError as exc:  # localcloud.cloud.StartupError: what failed to start, and why
            raise SystemExit(die(str(exc))) from None
    if project and project != env.get("GOOGLE_CLOUD_PROJECT"):
        print(
            f"publisher: local cloud: project {project!r} is served by {env.get('GOOGLE_CLOUD_PROJECT')!r}",
            file=sys.stderr,
        )
    return config.Settings.from_env(env), True


def local_env_file() -> str:
    """The env file of the local cloud in use (LOCALCLOUD_DIR's), as short as it can be written."""
    path = local_cloud().env_file
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def runtime(project: str | None = None) -> Runtime:
    """The clients of the target of ``project`` (default GOOGLE_CLOUD_PROJECT; none: the local cloud)."""
    from sinergym_cloud.gcp.runtime import Runtime

    settings, _ = target_settings(project or os.environ.get("GOOGLE_CLOUD_PROJECT"))
    return Runtime.from_settings(settings)
