"""Assemble each Cloud Function's source directory for Terraform (infra/terraform/build/<name>/).

A function's source is its ``main.py``, the shared ``sinergym_cloud`` package (without
``sinergym_cloud/publisher/``, which only the publisher uses) and a
``requirements.txt`` written from pyproject.toml's base dependencies (one source of truth). Run it
before ``terraform apply``; Terraform zips and uploads the result.
"""

from __future__ import annotations

import shutil
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FUNCTIONS = ("launch", "dispatch", "cleanup", "sweeper")
# The publisher runs on a laptop, never in a function: its folder stays out of the bundles.
PUBLISHER = REPO / "sinergym_cloud" / "publisher"


def requirements() -> str:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return "\n".join(project["dependencies"]) + "\n"


def _leave_out(folder: str, entries: list[str]) -> set[str]:
    """What copytree skips in ``folder``: bytecode everywhere, and the publisher's folder."""
    skipped = set(shutil.ignore_patterns("__pycache__", "*.pyc")(folder, entries))
    return skipped | {e for e in entries if Path(folder, e) == PUBLISHER}


def build(out: Path) -> list[Path]:
    built = []
    for name in FUNCTIONS:
        target = out / name
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        shutil.copy(REPO / "functions" / name / "main.py", target / "main.py")
        shutil.copytree(
            REPO / "sinergym_cloud",
            target / "sinergym_cloud",
            ignore=_leave_out,
        )
        (target / "requirements.txt").write_text(requirements())
        built.append(target)
    return built


def main() -> int:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "infra" / "terraform" / "build"
    for path in build(out):
        print(f"built {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
