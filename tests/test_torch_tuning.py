"""The trainer process's settings: torch's (trainer.envs.tune_torch: no argument validation of
torch's distributions, and a diverged policy still stops the run, refused by Sinergym) and MLflow's
(no usage telemetry unless asked for)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.conftest import run_python
from trainer import envs


def test_distributions_are_built_without_validation_after_tuning() -> None:
    was = torch.distributions.Distribution._validate_args
    try:
        torch.distributions.Distribution.set_default_validate_args(True)
        with pytest.raises(ValueError, match="loc"):
            torch.distributions.Normal(torch.tensor([float("nan")]), torch.tensor([1.0]))
        envs.tune_torch(1)
        normal = torch.distributions.Normal(torch.tensor([float("nan")]), torch.tensor([1.0]))
        assert torch.isnan(normal.sample()).all()
    finally:
        torch.distributions.Distribution.set_default_validate_args(was)


DIVERGED = r"""
import json, sys
import torch
from stable_baselines3 import PPO
from sinergym_cloud.contracts import Experiment
from trainer import envs

envs.ensure_energyplus()
envs.tune_torch(1)
exp = Experiment.model_validate({"environment": "Eplus-5zone-hot-continuous-v1", "runperiod": (1, 1, 1991, 7, 1, 1991),
                                 "seed": 3, "normalization": True, "logger": False})
vec_env = envs.vectorize([lambda: envs.make_env(exp, "diverged")])
model = PPO("MlpPolicy", vec_env, seed=3, n_steps=64, batch_size=32)
with torch.no_grad():
    for p in model.policy.parameters():
        p.fill_(float("nan"))
try:
    model.learn(total_timesteps=64)
    print(json.dumps({"raised": None}))
except Exception as exc:
    print(json.dumps({"raised": type(exc).__name__, "message": str(exc)}))
finally:
    vec_env.close()
"""


@pytest.mark.slow
def test_a_policy_with_nan_weights_stops_at_its_first_action(tmp_path: Path) -> None:
    printed = run_python(DIVERGED, cwd=tmp_path)
    # Sinergym logs to stdout as the environment closes, after the result.
    result = json.loads(next(line for line in printed.splitlines() if line.startswith('{"raised"')))
    # Without validation the NaN reaches the environment, which refuses it before EnergyPlus sees it.
    assert result["raised"] == "ValueError", result
    assert "nan" in result["message"] and "is not valid" in result["message"], result


TELEMETRY = r"""
import os, sys
# As on a VM: none of the variables by which MLflow recognises a test or a CI run.
for name in ("PYTEST_CURRENT_TEST", "CI", "GITHUB_ACTIONS"):
    os.environ.pop(name, None)
if sys.argv[1] != "unset":
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = sys.argv[1]
from trainer import cli
try:
    cli.main(["check", "--help"])
except SystemExit:
    pass
from mlflow.telemetry.utils import is_telemetry_disabled
print(is_telemetry_disabled())
"""


@pytest.mark.parametrize(("setting", "disabled"), [("unset", "True"), ("false", "False"), ("true", "True")])
def test_mlflow_telemetry_is_off_in_the_trainer_unless_turned_on(tmp_path: Path, setting: str, disabled: str) -> None:
    assert run_python(TELEMETRY, setting, cwd=tmp_path).split()[-1] == disabled
