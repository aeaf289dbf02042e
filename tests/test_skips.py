"""A clone of the project runs every test of its own: a test is skipped only for something outside
the project (tests/external.py), says what, and the run lists every skip with its reason at the end.
How many tests a bare clone on a bare machine skips is fixed here, need by need."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

from tests.conftest import REPO
from tests.external import NEEDS

# How many tests need each thing outside the project: on a clone with nothing beside it, on a
# machine with none of the tools, exactly these are skipped (a test needing several counts once).
EXPECTED_NEEDS = {
    "gcloud": 9,
    "chromium": 1,
    "terraform": 2,
    "docker": 1,
    "checkov": 1,
    "google-cloud-project": 1,
    "google-credentials": 1,
    "sinergym-originals": 1,
}
EXPECTED_SKIPPED_ON_A_BARE_MACHINE = 13
# The Sinergym users' tests read the project's own fixtures: only the one test of Sinergym's originals may skip.
SINERGYM_MODULES = ("tests/test_sinergym_users.py", "tests/test_sinergym_configs.py")
SKIPPING = {"skip", "skipif", "importorskip", "xfail"}
TEMPORARY = "_skipcheck_"


def test_no_test_skips_by_itself() -> None:
    """Only the conftest skips (for a missing need); a test says what it needs with @pytest.mark.needs."""
    found = []
    for path in sorted((REPO / "tests").rglob("*.py")):
        if path.name in ("conftest.py", "external.py") or path.name.startswith(TEMPORARY):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in SKIPPING:
                found.append(f"{path.relative_to(REPO)}:{node.lineno}: {ast.unparse(node)}")
    assert not found, "skip only through @pytest.mark.needs(NAME) (tests/external.py):\n" + "\n".join(found)


def test_a_bare_clone_skips_the_expected_tests_and_no_sinergym_users_test(tmp_path: Path) -> None:
    report = tmp_path / "needs.json"
    env = {**os.environ, "SINERGYM_TESTS_NEEDS_REPORT": str(report)}
    collected = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "--no-cov", "tests"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert collected.returncode == 0, collected.stdout[-3000:] + collected.stderr[-3000:]
    needs: dict[str, list[str]] = json.loads(report.read_text())
    assert len(needs) > 400  # the whole suite was collected
    counted = Counter(name for names in needs.values() for name in set(names))
    assert dict(counted) == EXPECTED_NEEDS, "a test needs something new from outside: say so here"
    skipped = [nodeid for nodeid, names in needs.items() if names]
    assert len(skipped) == EXPECTED_SKIPPED_ON_A_BARE_MACHINE, skipped
    assert set(counted) <= set(NEEDS)
    sinergym = {nodeid: names for nodeid, names in needs.items() if nodeid.startswith(SINERGYM_MODULES) and names}
    assert sinergym == {
        "tests/test_sinergym_configs.py::test_sinergym_original_examples_pass_dry_run": ["sinergym-originals"]
    }
    runs = [n for n in needs if n.startswith(SINERGYM_MODULES)]
    assert len(runs) > 100, "the Sinergym users' tests are collected, not skipped at import"


def run_pytest(path: Path, missing: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SINERGYM_TESTS_ASSUME_MISSING": missing}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--no-cov", "-q", str(path)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_the_run_lists_each_skip_and_fails_on_a_skip_for_the_projects_own_file() -> None:
    path = REPO / "tests" / f"{TEMPORARY}{uuid.uuid4().hex[:8]}.py"
    needing = '@pytest.mark.needs("gcloud")\ndef test_needs_gcloud() -> None:\n    pass\n'
    own = 'def test_reads_a_file_of_its_own() -> None:\n    pytest.skip("tests/fixtures/x.yaml is missing")\n'
    try:
        path.write_text(f"import pytest\n\n\n{needing}")
        fine = run_pytest(path, "gcloud")
        assert fine.returncode == 0, fine.stdout[-3000:]
        assert "1 skipped: each for something outside the project" in fine.stdout
        assert f"{path.name}::test_needs_gcloud: needs gcloud: the Google Cloud CLI" in fine.stdout
        path.write_text(f"import pytest\n\n\n{needing}\n\n{own}")
        wrong = run_pytest(path, "gcloud")
        assert wrong.returncode == 1, wrong.stdout[-3000:]
        assert "2 skipped: each for something outside the project" in wrong.stdout
        assert f"NOT ALLOWED tests/{path.name}::test_reads_a_file_of_its_own: tests/fixtures/x.yaml" in wrong.stdout
        assert "1 test(s) skipped for something of the project's own" in wrong.stdout
    finally:
        path.unlink(missing_ok=True)
