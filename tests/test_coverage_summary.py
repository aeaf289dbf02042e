"""scripts/coverage_summary.py: the per-package summary `make test` prints keeps the data pytest-cov
combined when processes that ended later left files of their own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from coverage import CoverageData

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "coverage_summary.py"


def test_late_data_files_are_added_to_the_combined_data_not_put_in_its_place(tmp_path: Path) -> None:
    source = tmp_path / "trainer" / "mod.py"
    source.parent.mkdir()
    source.write_text("a = 1\nb = 2\nc = 3\nd = 4\n")
    (tmp_path / ".coveragerc").write_text("[run]\nparallel = true\nsource = trainer\n")
    combined = CoverageData(basename=str(tmp_path / ".coverage"))  # what pytest-cov combined
    combined.add_lines({str(source): [1, 2]})
    combined.write()
    late = CoverageData(basename=str(tmp_path / ".coverage"), suffix="host.4242.late")  # a process that ended later
    late.add_lines({str(source): [3]})
    late.write()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COV_", "COVERAGE_"))}
    out = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert "trainer" in out.stdout and "(3/4 statements)" in out.stdout, out.stdout
    assert not list(tmp_path.glob(".coverage.*"))  # the late file was folded in
