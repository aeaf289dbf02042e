"""The trainer process's settings: torch's (trainer.envs.tune_torch: no argument validation of
torch's distributions, and a diverged policy still stops the run, refused by Sinergym; Adam fused,
trainer.optimizers) and MLflow's (no usage telemetry unless asked for)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gymnasium as gym
import pytest
import torch

from tests.conftest import run_python
from trainer import envs, optimizers


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


def _groups(optimizer: torch.optim.Optimizer) -> list[dict[str, Any]]:
    return [{k: v for k, v in g.items() if k not in ("params", "fused", "foreach")} for g in optimizer.param_groups]


def test_fused_adam_keeps_what_each_policy_chose_and_leaves_other_optimizers() -> None:
    from stable_baselines3 import A2C, PPO, SAC
    from stable_baselines3.common.save_util import recursive_getattr

    ppo = PPO("MlpPolicy", "Pendulum-v1", seed=0, device="cpu")
    before = _groups(ppo.policy.optimizer)
    assert optimizers.fuse(ppo) == ["policy.optimizer"]
    assert type(ppo.policy.optimizer) is torch.optim.Adam
    assert ppo.policy.optimizer.param_groups[0]["fused"] is True
    assert _groups(ppo.policy.optimizer) == before and before[0]["eps"] == 1e-5  # SB3's eps for PPO's Adam
    sac = SAC("MlpPolicy", "Pendulum-v1", seed=0, device="cpu")
    names = ["actor.optimizer", "critic.optimizer", "ent_coef_optimizer"]
    assert optimizers.fuse(sac) == names
    assert all(recursive_getattr(sac, n).param_groups[0]["fused"] for n in names)
    assert sac.actor.optimizer is sac.policy.actor.optimizer  # what SAC's train() steps is the fused one
    a2c = A2C("MlpPolicy", "Pendulum-v1", seed=0, device="cpu")
    rmsprop = a2c.policy.optimizer
    assert optimizers.fuse(a2c) == [] and a2c.policy.optimizer is rmsprop
    for chosen in ({"foreach": True}, {"fused": False}, {"foreach": False}):
        ppo = PPO("MlpPolicy", "Pendulum-v1", seed=0, device="cpu", policy_kwargs={"optimizer_kwargs": chosen})
        assert optimizers.fuse(ppo) == [], chosen
        assert {k: ppo.policy.optimizer.param_groups[0][k] for k in chosen} == chosen


def test_fused_adam_learns_what_the_loop_learns_and_survives_a_checkpoint(tmp_path: Path) -> None:
    from stable_baselines3 import PPO, SAC

    def largest_difference(a: PPO, b: PPO) -> float:
        pairs = zip(a.policy.parameters(), b.policy.parameters(), strict=True)
        return max(float((p - q).detach().abs().max()) for p, q in pairs)

    def ppo(fuse: bool, timesteps: int) -> PPO:  # seeding reseeds torch's global generator: one model at a time
        model = PPO("MlpPolicy", "Pendulum-v1", seed=7, n_steps=64, batch_size=32, device="cpu")
        if fuse:
            optimizers.fuse(model)
        return model.learn(timesteps) if timesteps else model

    start, plain, fused = ppo(False, 0), ppo(False, 256), ppo(True, 256)
    assert largest_difference(start, plain) > 1e-3, "four PPO updates moved the weights"
    differ = largest_difference(plain, fused)
    assert differ < 1e-4, f"fused and looped Adam differ by {differ} after four PPO updates"
    sac = SAC("MlpPolicy", "Pendulum-v1", seed=7, learning_starts=20, device="cpu")
    optimizers.fuse(sac)
    sac.learn(60)
    sac.save(tmp_path / "sac.zip")
    resumed = SAC.load(tmp_path / "sac.zip", env=gym.make("Pendulum-v1"), device="cpu")
    assert optimizers.fuse(resumed) == ["actor.optimizer", "critic.optimizer", "ent_coef_optimizer"]
    steps = float(resumed.critic.optimizer.state_dict()["state"][0]["step"])  # a copy: Adam counts in place
    resumed.learn(30, reset_num_timesteps=False)
    assert resumed.critic.optimizer.state_dict()["state"][0]["step"] > steps
