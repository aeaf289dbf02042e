"""The benchmark table's bookkeeping (the figures themselves come from `make bench`), its refusal of
an unknown group, and the optimizer group's figures on a small run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.__main__ import main, previous_values, render


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


def test_trainer_figures_are_the_median_of_per_pair_ratios() -> None:
    from bench.trainer_speed import Paired, Segment

    def trainer(sps: float, longest: float = 0.05, share: float = 0.4) -> Segment:
        metrics = {"trainer_pause_longest_seconds": longest, "trainer_pause_share_pct": share, "drain_seconds": 0.1,
                   "background_cpu_seconds": sps / 1000, "checkpoints": 2.0, "process_seconds": 40.0,
                   "servers_cpu_seconds": sps / 100}  # fmt: skip
        return Segment("trainer", sps * 10, 10.0, metrics, cpu_seconds=12.0)  # 1.2x the bare loop's CPU a step

    paired = Paired("PPO", [(trainer(190), Segment("bare", 2000, 10.0, cpu_seconds=10.0)),  # 0.95
                            (trainer(300), Segment("bare", 3000, 10.0, cpu_seconds=10.0)),  # 1.00: a faster minute
                            (trainer(98, longest=0.25), Segment("bare", 1000, 10.0, cpu_seconds=10.0))])  # fmt: skip
    ratio, steps, pauses, worker, servers, cpu = paired.rows()
    assert ratio["value"] == 0.98 and ratio["met"] is True  # the median pair, not 588 / 600
    assert steps["value"] == "190 | 200; 0.950, 1.000, 0.980"
    assert pauses["value"] == "250.0 ms | 0.40 % | 0.10 s" and pauses["met"] is False
    # The worker's CPU time over learn's 10 s: 1.9 %, 3.0 %, 0.98 %; the median pair's.
    assert worker["value"] == "1.90 % | 2" and worker["met"] is None
    # The local cloud's servers' CPU over each trainer process's 40 s: 4.75 %, 7.5 %, 2.45 %.
    assert servers["value"] == "4.8 %" and servers["met"] is None
    # CPU a step: bare 10 s / 2000, 3000, 1000 steps; trainer 12 s / 1900, 3000, 980 steps.
    assert cpu["value"] == "0.817; 0.792, 0.833, 0.817" and cpu["met"] is None


def test_the_optimizer_figures_time_both_kinds_of_adam() -> None:
    from bench import optimizer

    rows = optimizer.optimizer(rounds=1)
    assert [r["figure"].split(",")[0] for r in rows[::2]] == [
        "Adam fused: PPO's update",
        "Adam fused: SAC's gradient step",
    ]
    for timed, ratio in zip(rows[::2], rows[1::2], strict=True):
        looped, fused = (float(v) for v in timed["value"].split(" | "))
        assert looped > 0 and fused > 0
        assert abs(ratio["value"] - looped / fused) < 0.02  # from the unrounded times


def test_an_unknown_group_is_refused_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--only", "optimiser,trainer"])
    assert exit_.value.code == 2
    assert "unknown group(s) 'optimiser'; the groups: cloud, control" in capsys.readouterr().err
