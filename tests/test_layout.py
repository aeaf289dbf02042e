"""The folder tree says what runs where (issue 15, item 8): each part of sinergym_cloud imports only
the parts its package docstring allows, and every package says what it holds."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from tests.conftest import REPO

SUBPACKAGES = ("gcp", "control", "vm", "inputs", "publisher")
# Which parts each part may import ("shared": the modules directly in sinergym_cloud/).
ALLOWED = {
    "shared": {"shared"},
    "gcp": {"shared", "gcp"},
    "vm": {"shared", "vm"},
    "inputs": {"shared", "inputs"},
    "control": {"shared", "gcp", "control"},
    "publisher": {"shared", "gcp", "control", "inputs", "publisher"},
    "trainer": {"shared", "gcp", "inputs"},
    "functions": {"shared", "gcp", "control"},
}


def part(module: str) -> str:
    pieces = module.split(".")
    if pieces[0] != "sinergym_cloud":
        return pieces[0]
    return pieces[1] if len(pieces) > 1 and pieces[1] in SUBPACKAGES else "shared"


def imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sinergym_cloud"):
            if node.module == "sinergym_cloud":
                found += [f"sinergym_cloud.{a.name}" for a in node.names]
            else:
                found.append(node.module)
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("sinergym_cloud")]
    return found


def sources() -> list[tuple[str, Path]]:
    out = []
    for root in ("sinergym_cloud", "trainer", "functions"):
        for path in sorted((REPO / root).rglob("*.py")):
            module = ".".join(path.relative_to(REPO).with_suffix("").parts)
            out.append((part(module) if root == "sinergym_cloud" else root, path))
    return out


def test_each_part_imports_only_what_it_may() -> None:
    wrong = [
        f"{path.relative_to(REPO)} ({src}) imports {target}"
        for src, path in sources()
        for target in imports(path)
        if part(target) not in ALLOWED[src]
    ]
    assert not wrong, "\n".join(wrong)


def test_the_rule_catches_a_wrong_import(tmp_path: Path) -> None:
    bad = tmp_path / "x.py"
    bad.write_text("from sinergym_cloud.control import launch\nfrom sinergym_cloud import names\n")
    assert [part(t) for t in imports(bad)] == ["control", "shared"]
    assert "control" not in ALLOWED["trainer"] and "publisher" not in ALLOWED["control"]


@pytest.mark.parametrize("package", ["sinergym_cloud", *(f"sinergym_cloud.{p}" for p in SUBPACKAGES)])
def test_every_package_says_what_it_holds_and_who_imports_it(package: str) -> None:
    doc = importlib.import_module(package).__doc__ or ""
    assert len(doc) > 200 and "import" in doc, f"{package}: its docstring should say what it holds and who imports it"
