"""The folder tree says what runs where: each part of sinergym_cloud imports only
the parts its package docstring allows, and every package says what it holds."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

from tests.conftest import REPO

SUBPACKAGES = ("gcp", "control", "vm", "inputs", "publisher")
# Which parts each part may import ("shared": the modules directly in sinergym_cloud/).
ALLOWED = {
    "shared": {"shared"},
    "gcp": {"shared", "gcp"},
    "vm": {"shared", "gcp", "vm"},  # the log shipper stores chunks with gcp's clients
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


def module_graph() -> dict[str, set[str]]:
    """Every module of sinergym_cloud and the modules of it that it imports, lazy imports (inside a
    function) included: ``from package import name`` counts as importing ``package.name`` when that
    is a module, else the package."""
    paths = {
        ".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__"): p
        for p in sorted((REPO / "sinergym_cloud").rglob("*.py"))
    }
    graph: dict[str, set[str]] = {}
    for module, path in paths.items():
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sinergym_cloud"):
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    edges.add(sub if sub in paths else node.module)
            elif isinstance(node, ast.Import):
                edges |= {a.name for a in node.names if a.name in paths}
        graph[module] = edges - {module}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles of ``graph``, each as the path that closes it (depth-first search)."""
    found: list[list[str]] = []
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> None:
        if node in path:
            found.append([*path[path.index(node) :], node])
            return
        if node in done:
            return
        for nxt in sorted(graph.get(node, ())):
            visit(nxt, [*path, node])
        done.add(node)

    for start in sorted(graph):
        visit(start, [])
    return found


def test_no_module_imports_itself_through_others() -> None:
    """No import cycle, lazy imports included: a lazy import that hides a cycle is still a knot (two
    modules that need each other are one idea in two places, or a third idea between them)."""
    # A package's __init__ that re-exports its modules is not a cycle of theirs.
    graph = {m: {e for e in edges if not m.startswith(f"{e}.")} for m, edges in module_graph().items()}
    found = cycles(graph)
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(c) for c in found)


def test_the_cycle_check_sees_a_lazy_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_prose_names_features_not_work_items() -> None:
    """Docs, tests and code speak of features ("zone failover"), never of work-item numbers: a reader
    of the project has no issue list."""
    pattern = re.compile(r"\b(issue|item|turn) #?[0-9]+\b", re.IGNORECASE)
    found = []
    for root in ("docs", "tests", "sinergym_cloud", "localcloud", "trainer", "bench", "functions", "infra", "scripts"):
        for path in sorted((REPO / root).rglob("*")):
            if path.suffix not in (".py", ".md", ".tf", ".sh", ".yaml", ".yml", ".json", ".txt"):
                continue
            for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                if pattern.search(line):
                    found.append(f"{path.relative_to(REPO)}:{number}: {line.strip()[:100]}")
    for name in ("README.md", "Makefile"):
        for number, line in enumerate((REPO / name).read_text().splitlines(), 1):
            if pattern.search(line):
                found.append(f"{name}:{number}: {line.strip()[:100]}")
    assert not found, "\n".join(found)


MAX_MODULE_LINES = 500


def test_no_module_is_several_ideas() -> None:
    """A module of the product or the local cloud over about 500 lines is usually several ideas: split
    it by concern, or say at its top why it is one ("Over 500 lines on purpose: ...")."""
    long = []
    for root in ("sinergym_cloud", "localcloud", "trainer", "functions", "bench"):
        for path in sorted((REPO / root).rglob("*.py")):
            text = path.read_text()
            lines = text.count("\n")
            doc = ast.get_docstring(ast.parse(text)) or ""
            if lines > MAX_MODULE_LINES and "lines on purpose" not in doc:
                long.append(f"{path.relative_to(REPO)}: {lines} lines")
    assert not long, "\n".join(long)
