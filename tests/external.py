"""What the tests need from outside the project, and the one way a test may be skipped.

Everything a test reads that belongs to the project lives in the project (fixtures under
``tests/fixtures/``), so a clone runs every test of its own. A test may be skipped only for
something outside it: a tool the machine may lack, a Google Cloud project with credentials, or
Sinergym's original example files beside the project's own checkout (for the one test that feeds
them through the same code as the fixtures). Such a test says so with ``@pytest.mark.needs(NAME)``;
no test calls ``pytest.skip`` or ``skipif`` itself (``tests/test_skips.py`` checks that).

The conftest skips a test whose needs are missing, with the reason ``needs NAME: ...``, prints every
skip and its reason at the end of the run, and fails the run when a test was skipped for anything
else, or was not skipped although something it needs is missing.
``SINERGYM_TESTS_ASSUME_MISSING=gcloud,chromium`` (or ``all``) makes the tests behave as on a machine
without those (the skip-count test uses it to see a bare clone on a bare machine).
"""

from __future__ import annotations

import functools
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Sinergym's original example configs: beside the project's own checkout only, never in a clone.
SINERGYM_ORIGINALS = REPO.parent / "shared" / "reference" / "sinergym-configs"


def _credentials() -> bool:
    try:
        import google.auth

        google.auth.default()
        return True
    except Exception:
        return False


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@dataclass(frozen=True)
class Need:
    """Something outside the project a test needs; ``what`` says what it is and where it comes from."""

    what: str
    present: Callable[[], bool]


NEEDS: dict[str, Need] = {
    "gcloud": Need("the Google Cloud CLI (gcloud; make test installs it when it can)", lambda: bool(shutil.which("gcloud"))),
    "chromium": Need("Chromium (make test installs it as root; apt-get install chromium)", lambda: chromium() is not None),
    "terraform": Need("Terraform (terraform on PATH)", lambda: bool(shutil.which("terraform"))),
    "docker": Need("Docker (docker on PATH)", lambda: bool(shutil.which("docker"))),
    "checkov": Need(
        "checkov (make test installs it into .venv-tools)", (REPO / ".venv-tools" / "bin" / "checkov").exists
    ),
    "google-cloud-project": Need(
        "a throw-away Google Cloud project (opt-in: SINERGYM_TEST_PROJECT)",
        lambda: bool(os.environ.get("SINERGYM_TEST_PROJECT")),
    ),
    "google-credentials": Need("Google application-default credentials (gcloud auth application-default login)", _credentials),
    "sinergym-originals": Need(
        f"Sinergym's original example configs at {SINERGYM_ORIGINALS} (beside the project's own checkout only; "
        "the project's tests use tests/fixtures/sinergym)",
        SINERGYM_ORIGINALS.is_dir,
    ),
}  # fmt: skip


def assumed_missing() -> set[str]:
    value = os.environ.get("SINERGYM_TESTS_ASSUME_MISSING", "")
    names = {n.strip() for n in value.split(",") if n.strip()}
    return set(NEEDS) if "all" in names else names


@functools.cache
def _present(name: str) -> bool:
    return NEEDS[name].present()


def missing(name: str) -> bool:
    if name not in NEEDS:
        raise KeyError(f"unknown need {name!r}: declare it in tests/external.py (known: {', '.join(NEEDS)})")
    return name in assumed_missing() or not _present(name)


def reason(name: str) -> str:
    """The skip reason for a missing ``name``: every skip of the suite reads ``needs NAME: ...``."""
    return f"needs {name}: {NEEDS[name].what}, not here"


def is_external(skip_reason: str) -> bool:
    """Whether a skip's reason is one of ours: something outside the project, named."""
    return any(skip_reason.startswith(f"needs {name}: ") for name in NEEDS)
