"""The benchmark table's bookkeeping (the figures themselves come from `make bench`)."""

from __future__ import annotations

import json
from pathlib import Path

from bench.__main__ import previous_values, render


def _run(path: Path, rows: dict[str, float]) -> None:
    path.write_text(json.dumps({"rows": [{"figure": f, "value": v} for f, v in rows.items()]}))


def test_previous_takes_each_figure_from_the_newest_run_that_measured_it(tmp_path: Path) -> None:
    _run(tmp_path / "bench-20261101T000000Z.json", {"cold start": 9.0, "boot": 0.4})
    _run(tmp_path / "bench-20261102T000000Z.json", {"boot": 0.3})  # a run with --only
    (tmp_path / "bench-20261103T000000Z.json").write_text('{"rows": [')  # cut short
    before = previous_values(tmp_path)
    assert before == {"cold start": 9.0, "boot": 0.3}
    table = render(
        [
            {"figure": "cold start", "value": 8.5, "unit": "s", "goal": "< 15 s", "met": True},
            {"figure": "new figure", "value": 1.0, "unit": "s", "goal": "-", "met": None},
        ],
        before,
    )
    cold, new = table.splitlines()[2:]
    assert cold.split()[-1] == "9" and "yes" in cold
    assert new.split()[-1] == "-"
