"""Print test coverage per package (and the total) from the .coverage data of the last run.

Coverage is measured in the test process and in every Python subprocess it starts (the local
cloud's functions, emulators and trainers), then combined here. ``coverage_summary.py [ROOT]``: the
data and sources of ROOT (default: this checkout).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

PACKAGES = ("sinergym_cloud", "functions", "localcloud", "trainer")


def main(argv: list[str]) -> int:
    root = Path(argv[0]).resolve() if argv else Path(__file__).resolve().parent.parent
    coverage = [sys.executable, "-m", "coverage"]
    # pytest-cov combined the data of the processes that had ended by then into .coverage. A process
    # that ends later (a VM's trainer, a server of the local cloud stopping) leaves a file of its
    # own, added here. --append: without it, combine starts clean and .coverage would hold only the
    # late files. With nothing to add, combine says so, which would only puzzle a reader of the CI log.
    subprocess.run([*coverage, "combine", "--append", "--quiet"], cwd=root, check=False, capture_output=True)
    out = root / "coverage.json"
    result = subprocess.run([*coverage, "json", "--quiet", "-o", str(out)], cwd=root, check=False)
    if result.returncode != 0 or not out.exists():
        print("coverage: no data (run the tests first)")
        return 0
    data = json.loads(out.read_text())
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for path, info in data["files"].items():
        package = Path(path).parts[0]
        summary = info["summary"]
        totals[package][0] += summary["covered_lines"]
        totals[package][1] += summary["num_statements"]
    print("coverage by package")
    for package in PACKAGES:
        covered, statements = totals.get(package, [0, 0])
        share = 100 * covered / statements if statements else 0.0
        print(f"  {package:16} {share:5.1f}%  ({covered}/{statements} statements)")
    print(f"  {'TOTAL':16} {data['totals']['percent_covered']:5.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
