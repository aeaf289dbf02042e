"""Sweep batches: the versioned contract, batch files' `sweep:` and W&B `sweep_config:`, and the dry run."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from sinergym_cloud import contracts, sweep
from sinergym_cloud.contracts import Batch, Completion, Experiment
from sinergym_cloud.errors import BadMessage
from sinergym_cloud.inputs import batchfile

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO.parent / "shared" / "reference" / "sinergym-configs"
BASE = {"environment": "Eplus-5zone-hot-continuous-v1", "algorithm": "PPO", "episodes": 2}
GRID = {"parameters": {"algorithm": {"grid": ["PPO", "SAC"]}}, "seeds": [1, 2]}


def batch(**fields: Any) -> dict[str, Any]:
    return {"batch_id": "sweep-1", "experiments": [BASE], **fields}


def test_a_sweep_batch_is_schema_3_and_expands_into_trials_times_seeds() -> None:
    b = contracts.parse(Batch, json.dumps(batch(sweep=GRID)))
    assert b.schema_version == 3
    expanded = sweep.expand(b)
    assert len(expanded.experiments) == 4
    assert sorted((e.algorithm, e.seed) for e in expanded.experiments) == [
        ("PPO", 1), ("PPO", 2), ("SAC", 1), ("SAC", 2)
    ]  # fmt: skip
    assert {e.label for e in expanded.experiments} == {"trial-0", "trial-1"}
    # The expanded batch (what launch stores) reads back as it is.
    assert Batch.model_validate(expanded.model_dump(mode="json")) == expanded
    with pytest.raises(BadMessage, match="sweep needs schema_version 3"):
        contracts.parse(Batch, json.dumps(batch(sweep=GRID, schema_version=2)))
    with pytest.raises(BadMessage, match="one base experiment"):
        contracts.parse(Batch, json.dumps({**batch(sweep=GRID), "experiments": [BASE, BASE]}))


@pytest.mark.parametrize(
    ("section", "named"),
    [
        ({"parameters": {"hyperparameters.learning_rat": {"uniform": [0.1, 0.2]}}}, "learning_rat"),
        ({"parameters": {"algorithm": {"grid": ["PPO", "DQN"]}}}, "sweep.parameters.algorithm = 'DQN'"),
        ({"parameters": {"episodes": {"int": [0, 3]}}, "method": "random", "trials": 2}, "sweep.parameters.episodes"),
        ({"parameters": {"algorithm": {"grid": ["PPO"]}}, "trails": 3}, "trails"),
    ],
)
def test_a_bad_sweep_is_refused_with_the_key_named(section: dict[str, Any], named: str) -> None:
    with pytest.raises(BadMessage) as caught:
        contracts.parse(Batch, json.dumps(batch(sweep=section)))
    assert named in str(caught.value)


def test_completion_version_2_adds_pruned_and_version_1_is_still_read() -> None:
    fields = {"batch_id": "b1", "experiment_index": 0, "experiment_name": "x", "instance": "vm-0",
              "zone": "europe-west1-b", "boot_id": "boot-1"}  # fmt: skip
    assert contracts.parse(Completion, {**fields, "status": "pruned"}).schema_version == 2
    old = contracts.parse(Completion, {**fields, "status": "succeeded", "schema_version": 1})
    assert old.status == "succeeded"
    with pytest.raises(BadMessage, match="pruned needs schema_version 2"):
        contracts.parse(Completion, {**fields, "status": "pruned", "schema_version": 1})


def test_a_batch_file_sweep_section(tmp_path: Path) -> None:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({"experiments": [BASE], "sweep": GRID}))
    b = Batch.model_validate({"batch_id": "x", **batchfile.load(path)})
    assert b.sweep is not None and b.sweep.experiments == 4
    path.write_text(yaml.safe_dump({"experiments": [{**BASE, "seeds": [1, 2]}], "sweep": GRID}))
    with pytest.raises(batchfile.BatchFileError, match="put the seeds in the sweep"):
        batchfile.load(path)


def test_sinergyms_wandb_ppo_sweep_is_its_four_grid_points(tmp_path: Path) -> None:
    shutil.copy(CONFIGS / "PPO_sweep_example.yaml", tmp_path)
    path = tmp_path / "study.yaml"
    path.write_text(
        "batch_id: ppo-sweep\nsweep_config: PPO_sweep_example.yaml\n"
        "experiments:\n  - runperiod: [1, 1, 1991, 7, 1, 1991]\n"
    )
    b = sweep.expand(Batch.model_validate(batchfile.load(path)))
    points = {(e.algorithm_parameters.learning_rate, e.algorithm_parameters.batch_size) for e in b.experiments}
    assert points == {(3e-4, 256), (3e-4, 512), (1e-3, 256), (1e-3, 512)}
    base = b.experiments[0]
    assert (base.environment, base.episodes, base.runperiod) == (
        "Eplus-5zone-hot-continuous-stochastic-v1", 3, (1, 1, 1991, 7, 1, 1991)
    )  # fmt: skip
    assert base.algorithm_parameters.ent_coef == 0.0  # a one-value list is a fixed value
    assert [w.name for w in base.wrappers or []][:2] == ["NormalizeObservation", "NormalizeAction"]

    out = subprocess.run(
        [sys.executable, "publisher.py", "--batch-file", str(path), "--dry-run", "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    assert plan["sweep"]["trials"] == 4 and plan["vms"] == 4
    assert len({json.dumps(t["params"], sort_keys=True) for t in plan["sweep"]["planned"]}) == 4
    assert plan["waves"] == 1 and plan["estimated_vm_hours"] > 0

    human = subprocess.run(
        [sys.executable, "publisher.py", "--batch-file", str(path), "--dry-run", "--max-parallel", "3"],
        cwd=REPO, capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                                                                   "COLUMNS": "200"},
    )  # fmt: skip
    assert human.returncode == 0, human.stderr
    assert "grid, 4 trials" in human.stdout
    assert "2 wave(s)" in human.stdout
    assert "learning_rate=0.001" in human.stdout


def test_a_wandb_sweep_with_bad_keys_is_refused_by_name(tmp_path: Path) -> None:
    config = {"method": "bayes", "metric": {"name": "eval/mean_reward", "goal": "maximize"}, "run_cap": 4,
              "parameters": {"environment": {"value": "Eplus-5zone-hot-continuous-v1"},
                             "algorithm": {"value": "stable_baselines3:PPO"},
                             "algorithm_parameters": {"parameters": {"gamma": {"min": 0.9, "max": 0.99}}}}}  # fmt: skip
    (tmp_path / "wb.yaml").write_text(yaml.safe_dump(config))
    path = tmp_path / "study.yaml"
    path.write_text("sweep_config: wb.yaml\n")
    b = Batch.model_validate({"batch_id": "x", **batchfile.load(path)})
    assert b.sweep is not None
    assert (b.sweep.method, b.sweep.n_trials, b.sweep.goals[0].metric) == ("tpe", 4, "best_eval_mean_reward")
    assert b.sweep.parameters["algorithm_parameters.gamma"].uniform == (0.9, 0.99)
    config["parameters"]["wrappers_yaml"] = {"value": None}
    (tmp_path / "wb.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(batchfile.BatchFileError, match="wrappers_yaml"):
        batchfile.load(path)
    config["parameters"].pop("wrappers_yaml")
    config["parameters"]["episodes"] = {"distribution": "normal", "mu": 2, "sigma": 1}
    (tmp_path / "wb.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(batchfile.BatchFileError, match=r"episodes\.distribution 'normal'"):
        batchfile.load(path)


def test_experiment_still_validates_the_trial_it_becomes() -> None:
    b = Batch.model_validate(batch(sweep={"parameters": {"hyperparameters.n_steps": {"grid": [64, 128]}}}))
    assert [e.hyperparameters.n_steps for e in sweep.expand(b).experiments] in ([64, 128], [128, 64])
    assert isinstance(sweep.expand(b).experiments[0], Experiment)
