"""The publisher package's boundaries: who imports it, the one hook into the local cloud, no import cycle."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

PACKAGE = REPO / "sinergym_cloud"
PUBLISHER = PACKAGE / "publisher"


def imported(path: Path) -> set[str]:
    """Every module ``path`` imports, at module level or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_what_runs_in_functions_or_on_vms_never_imports_the_publisher() -> None:
    sources = [p for p in PACKAGE.rglob("*.py") if PUBLISHER not in p.parents]
    sources += [*(REPO / "functions").rglob("*.py"), *(REPO / "trainer").rglob("*.py")]
    assert len(sources) > 30
    offenders = [
        str(p.relative_to(REPO)) for p in sources if any(m.startswith("sinergym_cloud.publisher") for m in imported(p))
    ]
    assert offenders == []


def test_the_product_reaches_into_the_local_cloud_in_one_place() -> None:
    reaching = sorted(
        str(p.relative_to(REPO))
        for p in PACKAGE.rglob("*.py")
        if any(m == "localcloud" or m.startswith("localcloud.") for m in imported(p))
    )
    assert reaching == ["sinergym_cloud/publisher/target.py"]


def test_the_publisher_modules_import_no_cycle() -> None:
    modules = {p.stem: p for p in PUBLISHER.glob("*.py") if p.stem != "__init__"}
    assert {"arguments", "target", "submit", "plan", "views", "render", "commands", "report"} <= set(modules)
    graph = {
        name: {m.removeprefix("sinergym_cloud.publisher.") for m in imported(path)} & set(modules) - {name}
        for name, path in modules.items()
    }
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"import cycle: {' -> '.join((*path, name))}"
        if name in done:
            return
        for dep in graph[name]:
            visit(dep, (*path, name))
        done.add(name)

    for name in graph:
        visit(name, ())


def test_without_the_local_cloud_installed_the_publisher_says_what_to_install(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GOOGLE_", "PUBSUB_", "SINERGYM_", "STORAGE_"))}
    env["LOCALCLOUD_DIR"] = str(tmp_path / "lc")
    probe = (
        "import sys; sys.modules['localcloud'] = None  # as if the package were not installed\n"
        "from sinergym_cloud.publisher.commands import main\n"
        "sys.exit(main(['status', 'b-1']))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=REPO, env=env
    )
    assert result.returncode == 2, result.stderr
    assert "pip install -e '.[local]'" in result.stderr and "--project_id" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "lc").exists(), "nothing was started"
