"""A grid sweep on the real trainer (Sinergym + EnergyPlus): 2 algorithms x 2 seeds on one-week
episodes is 4 trials, each recorded, and shown by status, the report and `best`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import yaml

from sinergym_cloud.control import sweep_runs, sweeps
from sinergym_cloud.publisher import report, sweep_view, views
from tests.conftest import REPO, Cloud, new_batch_id, wait_for

WEEK = [1, 1, 1991, 7, 1, 1991]


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_a_grid_of_two_algorithms_by_two_seeds_runs_four_recorded_trials(cloud: Cloud, tmp_path: Path) -> None:
    batch_id = new_batch_id("grid")
    study = tmp_path / "grid.yaml"
    study.write_text(
        yaml.safe_dump(
            {
                "batch_id": batch_id,
                "experiments": [{"environment": "Eplus-5zone-hot-continuous-v1", "episodes": 1, "runperiod": WEEK,
                                 "evaluation": True, "eval_freq": 1, "eval_length": 1}],
                "sweep": {"method": "grid", "seeds": [1, 2], "max_parallel": 2,
                          "objective": {"metric": "best_eval_mean_reward", "direction": "maximize"},
                          "parameters": {"algorithm": {"grid": ["PPO", "A2C"]}}},
            }
        )
    )  # fmt: skip
    env = {**os.environ, **cloud.env}
    plan = subprocess.run([sys.executable, "publisher.py", "--batch-file", str(study), "--dry-run"], cwd=REPO,
                          env={**env, "COLUMNS": "160"}, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert plan.returncode == 0, plan.stderr
    assert "grid, 2 trials" in plan.stdout and "2 trials x 2 seed(s) = 4 experiment(s)" in plan.stdout
    submit = subprocess.run([sys.executable, "publisher.py", "--batch-file", str(study)], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert submit.returncode == 0, submit.stderr
    rt = cloud.runtime()
    wait_for(lambda: views.batch_status(rt, batch_id, with_compute=False, with_alerts=False).done
             if rt.state.read(f"batches/{batch_id}/launch.json") else False, 1500, "the grid ended", every=5)  # fmt: skip
    recs = sweeps.records(rt, batch_id)
    assert [r.state for r in recs] == ["succeeded"] * 4, [(r.state, r.reason) for r in recs]
    assert sorted((r.spec.algorithm, r.spec.seed) for r in recs) == [("A2C", 1), ("A2C", 2), ("PPO", 1), ("PPO", 2)]
    for r in recs:
        assert r.params == {"algorithm": r.spec.algorithm} and r.trial == r.index // 2
        assert "best_eval_mean_reward" in r.metrics and r.mlflow_run_id
    # Each trial's MLflow run is a child of the sweep's parent run.
    parent = sweep_runs.parent_run_id(rt, batch_id)
    client = mlflow.MlflowClient(tracking_uri=cloud.env["MLFLOW_TRACKING_URI"])
    for r in recs:
        tags = client.get_run(str(r.mlflow_run_id)).data.tags
        assert (tags.get("mlflow.parentRunId"), tags.get("sweep.trial")) == (parent, str(r.trial))
    info = sweep_view.status_of(rt, batch_id, recs)
    assert info is not None and len(info["trials"]) == 4 and len(info["best"]) == 1
    page = report.write(rt, batch_id, tmp_path / "report").read_text()
    assert 'id="sweep"' in page and page.count('<td class="state succeeded">') >= 8  # both tables
    code, text = sweep_view.best_command(rt, batch_id)
    assert code == 0
    entry = yaml.safe_load(text)["experiments"][0]
    assert entry["algorithm"] in ("PPO", "A2C") and entry["seeds"] and entry["runperiod"] == WEEK
