"""Sinergym's training configs and W&B sweep files as its users write them: every key mapped or
refused by name, the Python expressions of its examples read as data (never evaluated), the files a
config names read beside it, the project's fixtures covering every algorithm and wrapper it accepts,
all of them through ``--dry-run``, and TD3 and DDPG trained with their exploration noise.

The configs are the project's own (tests/fixtures/sinergym, written in Sinergym's format); Sinergym's
original files go through the same code in the one test that needs them beside the checkout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import mlflow
import pytest
import yaml

from sinergym_cloud import catalog, contracts
from sinergym_cloud.contracts import Batch, Experiment
from sinergym_cloud.inputs import batchfile, expressions, sinergym_config, wandb_sweep
from tests.conftest import REPO
from tests.external import SINERGYM_ORIGINALS

FIXTURES = REPO / "tests" / "fixtures" / "sinergym"
CONFIG_FILES = sorted(FIXTURES.glob("train_agent_*.yaml"))
SWEEP_FILES = sorted((FIXTURES / "sweeps").glob("*.yaml"))
WEEK = (1, 1, 1991, 7, 1, 1991)
# The algorithm arguments Sinergym's users give as Python expressions, and those the mapping moves.
EXPRESSION_KEYS = ("action_noise", "policy_kwargs", "train_freq")
MOVED_KEYS = ("_init_setup_model", "seed", "tensorboard_log")


def raw(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    return data


def experiment_of(name: str) -> Experiment:
    return Experiment.model_validate(batchfile.load_config(FIXTURES / f"train_agent_{name}.yaml").fields)


def class_name(reference: str) -> str:
    return reference.rsplit(":", maxsplit=1)[-1]


def listed_wrappers(path: Path, data: dict[str, Any]) -> list[str]:
    """The wrappers a config names, in the order Sinergym builds them: an included file's first, the
    config's own laid over them, a ``wandb`` section's logger last."""
    names: list[str] = []
    if data.get("wrappers_yaml_config"):
        names += [class_name(k) for k in raw(path.parent / data["wrappers_yaml_config"])]
    for item in data.get("wrappers") or []:
        name = class_name(next(iter(item)))
        names += [] if name in names else [name]
    if data.get("wandb") and "WandBLogger" not in names:
        names += [] if "LoggerWrapper" in names else ["LoggerWrapper"]
        names.append("WandBLogger")
    return names


# ------------------------------------------------------------------------- the fixtures, mapped
@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.stem)
def test_each_config_maps_onto_an_experiment_that_travels(path: Path) -> None:
    data = raw(path)
    experiment = Experiment.model_validate(batchfile.load_config(path).fields)
    assert experiment.label == data["experiment_name"]
    assert experiment.algorithm == class_name(data["algorithm"]["name"])
    assert (experiment.environment, experiment.episodes) == (data["environment"], data["episodes"])
    assert experiment.wrappers is not None
    assert [w.name for w in experiment.wrappers] == listed_wrappers(path, data)
    # Every algorithm argument that is set is carried (null is the library's default): the plain ones
    # as they are, the expressions as data (test_the_expressions_become_data).
    assert experiment.algorithm_parameters is not None
    given = experiment.algorithm_parameters.given()
    parameters = {k: v for k, v in data["algorithm"]["parameters"].items() if v is not None and k not in MOVED_KEYS}
    assert set(given) == set(parameters)
    plain = {k: v for k, v in parameters.items() if k not in EXPRESSION_KEYS}
    assert {k: given[k] for k in plain} == plain
    # It travels in a Batch message and back unchanged.
    batch = Batch(batch_id="cfg-fixture", experiments=[experiment])
    assert contracts.parse(Batch, contracts.dump(batch)) == batch


def test_the_fixtures_cover_every_algorithm_and_wrapper_the_project_accepts() -> None:
    experiments = [Experiment.model_validate(batchfile.load_config(p).fields) for p in CONFIG_FILES]
    assert {e.algorithm for e in experiments} == set(catalog.ALGORITHM_MODULES)
    assert {w.name for e in experiments for w in e.wrappers or []} == catalog.WRAPPER_CLASSES
    # And TD3 and DDPG give their noise as expressions, as Sinergym's examples do.
    for name in ("TD3", "DDPG"):
        assert isinstance(raw(FIXTURES / f"train_agent_{name}.yaml")["algorithm"]["parameters"]["action_noise"], str)


def test_the_expressions_become_data() -> None:
    td3 = experiment_of("TD3").algorithm_parameters
    assert td3 is not None and td3.action_noise is not None
    assert td3.given()["action_noise"] == {"kind": "normal", "mean": [0.0], "sigma": [0.15]}
    assert td3.train_freq == (1, "episode")
    assert td3.given()["policy_kwargs"] == {"net_arch": [64, 64], "activation_fn": "ReLU"}
    ddpg = experiment_of("DDPG").algorithm_parameters
    assert ddpg is not None
    assert ddpg.given()["action_noise"] == {
        "kind": "ornstein_uhlenbeck", "mean": [0.0, 0.0], "sigma": 0.2, "theta": 0.1, "dt": 0.05,
    }  # fmt: skip
    assert ddpg.train_freq == (1, "episode")  # from the string "(1, 'episode')"
    crossq = experiment_of("CrossQ").algorithm_parameters  # positional arguments
    assert crossq is not None and crossq.given()["action_noise"]["sigma"] == [1.0] * 4
    ppo = experiment_of("PPO").algorithm_parameters
    assert ppo is not None
    assert ppo.given()["policy_kwargs"] == {"net_arch": {"pi": [32, 32], "vf": [64, 64]}, "activation_fn": "Tanh"}
    context = experiment_of("PPO_context")
    assert context.algorithm_parameters is not None
    assert context.algorithm_parameters.given()["policy_kwargs"] == {"net_arch": [64, 64], "activation_fn": "ReLU"}
    assert context.wrappers is not None
    probabilistic = next(w for w in context.wrappers if w.name == "ProbabilisticContextWrapper")
    assert probabilistic.kwargs["context_space"] == {
        "gym.spaces.Box": {"low": 18.5, "high": 22.0, "shape": [3], "dtype": "float32"}
    }


def test_included_files_are_merged_as_sinergym_merges_them() -> None:
    sac = experiment_of("SAC")
    assert sac.seed == 21  # from env_yaml_config
    assert sac.env_params is not None
    # The config's reward_kwargs deep-update the file's (lambda_temperature 1.0 -> 0.8).
    assert sac.env_params.reward_kwargs == {"energy_weight": 0.35, "lambda_temperature": 0.8}
    assert sac.env_params.weather_variability == {"Dry Bulb Temperature": (0.8, 0.0, 12.0)}
    assert sac.wrappers is not None
    assert [(w.name, w.kwargs) for w in sac.wrappers] == [
        ("NormalizeAction", {}),
        ("NormalizeObservation", {"epsilon": 1e-6}),
        ("LoggerWrapper", {"storage_class": "sinergym.utils.logger:LoggerStorage"}),
        ("CSVLogger", {"monitor": True}),
        ("WandBLogger", {"entity": "fixture-entity", "project_name": "fixture-project", "tags": ["sac", "mixed"]}),
    ]


def test_a_wrapper_in_both_keeps_its_place_with_its_arguments_updated(tmp_path: Path) -> None:
    (tmp_path / "wrappers.yaml").write_text(
        "sinergym.utils.wrappers:NormalizeObservation: {epsilon: 1.0e-6}\nsinergym.utils.wrappers:LoggerWrapper: {}\n"
    )
    config = {**raw(FIXTURES / "train_agent_PPO.yaml"), "wrappers_yaml_config": "wrappers.yaml"}
    config["wrappers"] = [{"NormalizeObservation": {"automatic_update": True}}, {"CSVLogger": {}}]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    experiment = Experiment.model_validate(batchfile.load_config(tmp_path / "config.yaml").fields)
    assert experiment.wrappers is not None
    assert [(w.name, w.kwargs) for w in experiment.wrappers] == [
        ("NormalizeObservation", {"epsilon": 1e-6, "automatic_update": True}),
        ("LoggerWrapper", {}),
        ("CSVLogger", {}),
    ]


@pytest.mark.parametrize(
    ("files", "change", "named"),
    [
        ({}, {"env_yaml_config": "missing.yaml"}, "env_yaml_config: "),
        ({"env.yaml": "building_file: x.epJSON\n"}, {"env_yaml_config": "env.yaml"},
         "env_yaml_config env.yaml: env_params.building_file"),
        ({"env.yaml": "[1, 2]\n"}, {"env_yaml_config": "env.yaml"}, "env_yaml_config env.yaml: expected a mapping"),
        ({"w.yaml": "os:system: {}\n"}, {"wrappers_yaml_config": "w.yaml"}, "wrappers[0] 'os:system'"),
        ({"w.yaml": "- a\n"}, {"wrappers_yaml_config": "w.yaml"}, "wrappers_yaml_config w.yaml: expected a mapping"),
    ],
)  # fmt: skip
def test_included_files_refused_with_the_key_and_file_named(
    tmp_path: Path, files: dict[str, str], change: dict[str, Any], named: str
) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({**raw(FIXTURES / "train_agent_PPO.yaml"), **change}))
    with pytest.raises(batchfile.BatchFileError) as info:
        batchfile.load_config(tmp_path / "config.yaml")
    assert named in str(info.value)
    # Parsed YAML with no file beside it: the file cannot be read, and the refusal says why.
    with pytest.raises(sinergym_config.ConfigError, match="read beside the config's own file"):
        sinergym_config.map_config({**raw(FIXTURES / "train_agent_PPO.yaml"), **change})


# ------------------------------------------------------------------- expressions: data, never code
@pytest.mark.parametrize(
    ("text", "data"),
    [
        ("NormalActionNoise(mean=np.array([0]), sigma=np.array([0.1]))", {"kind": "normal", "mean": [0.0], "sigma": [0.1]}),
        ("NormalActionNoise(np.zeros(2), 0.3)", {"kind": "normal", "mean": [0.0, 0.0], "sigma": 0.3}),
        ("stable_baselines3.common.noise.NormalActionNoise(mean=0, sigma=numpy.ones(3))",
         {"kind": "normal", "mean": 0.0, "sigma": [1.0, 1.0, 1.0]}),
        ("OrnsteinUhlenbeckActionNoise(mean=np.zeros((2,)), sigma=np.array([0.1, 0.2], dtype=np.float32), "
         "theta=0.15, dt=1e-2, initial_noise=np.ones(2))",
         {"kind": "ornstein_uhlenbeck", "mean": [0.0, 0.0], "sigma": [0.1, 0.2], "theta": 0.15, "dt": 0.01,
          "initial_noise": [1.0, 1.0]}),
        ("dict(net_arch=dict(pi=[64], qf=[400, 300]), activation_fn=th.nn.LeakyReLU)",
         {"net_arch": {"pi": [64], "qf": [400, 300]}, "activation_fn": "torch.nn.LeakyReLU"}),
        ("{'net_arch': [32], 'ortho_init': False, 'log_std_init': -2}",
         {"net_arch": [32], "ortho_init": False, "log_std_init": -2}),
        ("(4, 'step')", (4, "step")),
        ("gym.spaces.Box(low=np.array([12.0, 23.25], dtype=np.float32), high=np.array([23.25, 30.0]), shape=(2,), "
         "dtype=np.float32)",
         {"gym.spaces.Box": {"low": [12.0, 23.25], "high": [23.25, 30.0], "shape": [2], "dtype": "float32"}}),
        ("gymnasium.spaces.Discrete(10)", {"gym.spaces.Discrete": {"n": 10, "start": 0}}),
    ],
)  # fmt: skip
def test_expressions_read_as_data(text: str, data: Any) -> None:
    assert expressions.evaluate(text, "here") == data


@pytest.mark.parametrize(
    ("text", "token"),
    [
        ("__import__('os').system('id')", "`__import__`"),
        ("os.system('id')", "`os.system`"),
        ("NormalActionNoise(mean=0, sigma=open('/etc/passwd').read())", "`open`"),
        ("np.random.normal(0, 1)", "`np.random.normal`"),
        ("0.1 * np.ones(2)", "`*` in `0.1 * np.ones(2)`"),
        ("NormalActionNoise(mean=np.zeros(2), sigma=0.1 * np.ones(2))", "`*` in `0.1 * np.ones(2)`"),
        ("lambda: 0", "`lambda: 0`"),
        ("[x for x in range(3)]", "`[x for x in range(3)]`"),
        ("NormalActionNoise(**kw)", "`**kw`"),
        ("NormalActionNoise(*args)", "`*args`"),
        ("dict(a=n_actions)", "`n_actions`"),
        ("np.zeros(2)[0]", "`np.zeros(2)[0]`"),
        ("f'{1}'", "`f'{1}'`"),
        ("NormalActionNoise(mean=0, sigma=0.1).__class__", "`NormalActionNoise(mean=0, sigma=0.1).__class__`"),
        ("b'x'", "`b'x'`"),
    ],
)  # fmt: skip
def test_anything_else_in_an_expression_is_refused_naming_the_token(text: str, token: str) -> None:
    with pytest.raises(expressions.ExpressionError) as info:
        expressions.evaluate(text, "algorithm.parameters.action_noise")
    message = str(info.value)
    assert message.startswith("algorithm.parameters.action_noise: ") and token in message, message


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("NormalActionNoise(mean=0)", "NormalActionNoise: missing sigma"),
        ("NormalActionNoise(mean=0, sigma=0.1, scale=2)", "unexpected argument `scale`"),
        ("NormalActionNoise(0, 0.1, 'float32', 4)", "at most 3 positional arguments"),
        ("np.zeros(0)", "a size from 1 to 1000"),
        ("np.ones(10**9)", "`**` in `10**9`"),
        ("NormalActionNoise(mean=[[0]], sigma=1)", "expected a finite number"),
        ("NormalActionNoise(mean=True, sigma=1)", "expected a finite number"),
        ("NormalActionNoise(mean=0, sigma=1e999)", "expected a finite number"),
        ("NormalActionNoise(mean=0 sigma=1)", "not a Python expression"),
        ("(" * 300 + ")" * 300, "too many nested parentheses"),
        ("[" + "0," * 2000 + "]", "characters (at most 2000)"),
    ],
)  # fmt: skip
def test_a_wrong_expression_says_what_is_wrong(text: str, said: str) -> None:
    with pytest.raises(expressions.ExpressionError, match=None) as info:
        expressions.evaluate(text, "where")
    assert said in str(info.value), str(info.value)


@pytest.mark.parametrize(
    ("parameters", "named"),
    [
        ({"action_noise": "os.system('id')"}, "algorithm.parameters.action_noise: `os.system`"),
        ({"action_noise": "np.zeros(2)"}, "algorithm.parameters.action_noise: expected NormalActionNoise"),
        ({"action_noise": 0.1}, "algorithm.parameters.action_noise: expected NormalActionNoise"),
        ({"policy_kwargs": "dict(activation_fn=torch.nn.Hardtanh)"}, "`torch.nn.Hardtanh`"),
        ({"policy_kwargs": "[64, 64]"}, "algorithm.parameters.policy_kwargs: expected a mapping"),
        ({"train_freq": "(1, eval('2'))"}, "`eval`"),
    ],
)  # fmt: skip
def test_a_config_expression_refused_with_its_key_named(parameters: dict[str, Any], named: str) -> None:
    data = raw(FIXTURES / "train_agent_TD3.yaml")
    data["algorithm"]["parameters"].update(parameters)
    with pytest.raises(sinergym_config.ConfigError) as info:
        sinergym_config.map_config({**data, "env_yaml_config": None})
    assert named in str(info.value), str(info.value)


# -------------------------------------------------------------------------- the contract's checks
@pytest.mark.parametrize(
    ("change", "said"),
    [
        ({"algorithm_parameters": {"action_noise": {"kind": "normal", "sigma": -0.1}}}, "must not be negative"),
        ({"algorithm_parameters": {"action_noise": {"kind": "normal", "sigma": 0.1, "theta": 0.2}}},
         "theta belong to OrnsteinUhlenbeckActionNoise"),
        ({"algorithm_parameters": {"action_noise": {"kind": "normal", "mean": [0, 0, 0], "sigma": [0.1, 0.2]}}},
         "different sizes [2, 3]"),
        ({"algorithm_parameters": {"action_noise": {"kind": "brownian", "sigma": 0.1}}}, "action_noise.kind"),
        ({"algorithm": "PPO", "algorithm_parameters": {"action_noise": {"kind": "normal", "sigma": 0.1}}},
         "PPO takes none (it applies to CrossQ, DDPG, SAC, TD3, TQC)"),
        ({"hyperparameters": {"sigma": 0.1}, "algorithm_parameters": {"action_noise": {"kind": "normal", "sigma": 0.1}}},
         "give the action noise once"),
        ({"wrappers": [{"name": "ProbabilisticContextWrapper",
                        "kwargs": {"context_space": {"gym.spaces.Box": {"low": 0, "high": 1, "dtype": "complex64"}}}}]},
         "ProbabilisticContextWrapper.context_space (gym.spaces.Box): dtype"),
        ({"wrappers": [{"name": "ProbabilisticContextWrapper",
                        "kwargs": {"context_space": {"gym.spaces.Tuple": {"spaces": []}}}}]},
         "gym.spaces.Tuple is not a space this project builds"),
        ({"wrappers": [{"name": "CSVLogger", "kwargs": {"info_excluded_keys": "os:system"}}]},
         "names Python code to import"),
        ({"wrappers": [{"name": "DiscretizeEnv"}]}, "action_mapping is a Python function"),
        ({"wrappers": [{"name": "RadiantLoggerWrapper"}]}, f"not a wrapper of Sinergym {catalog.SINERGYM_VERSION}"),
        ({"environment": "Eplus-radiant_case1_heating-stockholm-continuous-stochastic-v1"},
         f"not registered by Sinergym {catalog.SINERGYM_VERSION}"),
    ],
)  # fmt: skip
def test_the_contract_refuses_what_cannot_be_built(change: dict[str, Any], said: str) -> None:
    base = {"environment": "Eplus-5zone-hot-continuous-v1", "algorithm": "TD3"}
    with pytest.raises(ValueError) as info:
        Experiment.model_validate({**base, **change})
    assert said in str(info.value), str(info.value)


# ------------------------------------------------------------------------- the trainer builds them
def test_the_trainer_sizes_the_noise_to_the_action_space_and_builds_spaces() -> None:
    from trainer import noise
    from trainer.envs import build_space

    normal = noise.build({"kind": "normal", "mean": [0.0], "sigma": [0.15]}, 2, "Eplus-5zone-hot-continuous-v1")
    assert repr(normal) == "NormalActionNoise(mu=[0. 0.], sigma=[0.15 0.15])"
    ou = noise.build({"kind": "ornstein_uhlenbeck", "mean": 0.0, "sigma": [0.1, 0.2], "theta": 0.3, "dt": 0.5}, 2, "E")
    assert repr(ou) == "OrnsteinUhlenbeckActionNoise(mu=[0. 0.], sigma=[0.1 0.2])"
    assert (ou._theta, ou._dt) == (0.3, 0.5)
    assert normal().shape == (2,) and ou().shape == (2,)
    with pytest.raises(ValueError, match="sigma has 3 values; the action space of E has 2 dimensions"):
        noise.build({"kind": "normal", "sigma": [0.1, 0.1, 0.1]}, 2, "E")
    box = build_space("gym.spaces.Box", {"low": 18.5, "high": 22.0, "shape": [3], "dtype": "float32"})
    assert box.shape == (3,) and box.dtype.name == "float32" and float(box.low[0]) == 18.5
    assert build_space("gym.spaces.Discrete", {"n": 4, "start": 1}).start == 1


# ------------------------------------------------------------------------------ W&B sweep files
def test_the_sweep_fixtures_map_onto_sweeps() -> None:
    def load(name: str) -> tuple[Experiment, dict[str, Any]]:
        path = FIXTURES / "sweeps" / name
        mapped, section = wandb_sweep.map_sweep(raw(path), batchfile.reader(path.parent))
        return Experiment.model_validate(mapped.fields), section

    ppo, grid = load("PPO_grid_sweep.yaml")
    assert grid["method"] == "grid" and grid["objective"] == {
        "metric": "best_eval_mean_reward",
        "direction": "maximize",
    }
    assert grid["parameters"] == {
        "algorithm_parameters.learning_rate": {"grid": [0.0003, 0.001]},
        "algorithm_parameters.n_steps": {"grid": [256, 512]},
    }
    assert ppo.algorithm_parameters is not None and ppo.algorithm_parameters.policy_kwargs is not None
    assert ppo.algorithm_parameters.policy_kwargs.activation_fn == "ReLU"
    dqn, bayes = load("DQN_bayes_sweep.yaml")
    assert (bayes["method"], bayes["trials"], bayes["seeds"]) == ("tpe", 6, [1, 2, 3])
    assert bayes["pruner"] == {"name": "successive_halving", "min_episodes": 2}
    assert bayes["parameters"]["algorithm_parameters.learning_rate"] == {"loguniform": [0.00005, 0.005]}
    assert bayes["parameters"]["algorithm_parameters.learning_starts"] == {"int": [100, 1000]}
    assert dqn.algorithm_parameters is not None and dqn.algorithm_parameters.train_freq == (4, "step")
    _, noises = load("TD3_noise_sweep.yaml")
    assert noises["parameters"]["algorithm_parameters.action_noise"] == {
        "grid": [
            {"kind": "normal", "mean": [0.0], "sigma": [0.1]},
            {"kind": "ornstein_uhlenbeck", "mean": [0.0, 0.0], "sigma": [1.0, 1.0], "theta": 0.2},
        ]
    }


# --------------------------------------------------------------------------- the publisher's word
def bare_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a user with no cloud running: --dry-run plans without starting one."""
    cloud = ("PUBSUB_", "STORAGE_EMULATOR", "SINERGYM_", "MLFLOW_", "GOOGLE_CLOUD_PROJECT", "CLOUDSDK_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(cloud)}
    return {**env, "LOCALCLOUD_DIR": str(tmp_path / "no-cloud")}


def dry_run(batch_file: Path, tmp_path: Path) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "publisher.py", "--batch-file", str(batch_file), "--dry-run", "--json"],
        cwd=REPO, env=bare_env(tmp_path), capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    plan = json.loads(result.stdout[result.stdout.index("{") :])
    assert isinstance(plan, dict)
    return plan


def dry_run_configs(configs: list[Path], tmp_path: Path) -> None:
    study = tmp_path / "configs.yaml"
    study.write_text(yaml.safe_dump({"experiments": [{"config": str(p)} for p in configs]}))
    assert dry_run(study, tmp_path)["vms"] == len(configs)


def dry_run_sweep(sweep: Path, tmp_path: Path) -> None:
    study = tmp_path / f"{sweep.stem}-batch.yaml"
    study.write_text(yaml.safe_dump({"sweep_config": str(sweep), "experiments": [{"runperiod": list(WEEK)}]}))
    assert dry_run(study, tmp_path)["vms"] >= 1


def test_every_fixture_config_passes_dry_run(tmp_path: Path) -> None:
    dry_run_configs(CONFIG_FILES, tmp_path)


@pytest.mark.parametrize("sweep", SWEEP_FILES, ids=lambda p: p.stem)
def test_every_fixture_sweep_passes_dry_run(sweep: Path, tmp_path: Path) -> None:
    dry_run_sweep(sweep, tmp_path)


@pytest.mark.needs("sinergym-originals")
def test_sinergym_original_examples_pass_dry_run(tmp_path: Path) -> None:
    """Sinergym's own files, unchanged, through the same code as the fixtures."""
    configs = sorted(SINERGYM_ORIGINALS.glob("train_agent_*.yaml"))
    sweeps = sorted(SINERGYM_ORIGINALS.glob("*_sweep_example.yaml"))
    assert configs and sweeps, f"no train_agent_*.yaml or *_sweep_example.yaml in {SINERGYM_ORIGINALS}"
    dry_run_configs(configs, tmp_path)
    for sweep in sweeps:
        dry_run_sweep(sweep, tmp_path)


# ----------------------------------------------------------------------- TD3 and DDPG train, noisy
@pytest.mark.slow
@pytest.mark.timeout(1200)
@pytest.mark.parametrize(
    ("name", "noise"),
    [
        ("TD3", "NormalActionNoise(mu=[0. 0.], sigma=[0.15 0.15])"),  # one value, both setpoints
        ("DDPG", "OrnsteinUhlenbeckActionNoise(mu=[0. 0.], sigma=[0.2 0.2])"),
    ],
)
def test_td3_and_ddpg_configs_train_a_week_with_their_noise(name: str, noise: str, tmp_path: Path) -> None:
    command = [sys.executable, "-m", "trainer", "--config", str(FIXTURES / f"train_agent_{name}.yaml"),
               "--runperiod", *map(str, WEEK), "--episodes", "1", "--workdir", str(tmp_path)]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "WANDB_"))}
    with open(tmp_path / "trainer.log", "w") as log:
        code = subprocess.call(command, cwd=tmp_path, env={**env, "OMP_NUM_THREADS": "1"}, stdout=log, stderr=log,
                               timeout=1000)  # fmt: skip
    text = (tmp_path / "trainer.log").read_text(errors="replace")
    assert code == 0, text[-3000:]
    assert f"action noise: {noise}" in text
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("sinergym").experiment_id])
    assert run.data.params["algorithm"] == name and run.data.params["hp.action_noise"] == noise
    assert run.info.status == "FINISHED"
    (point,) = client.get_metric_history(run.info.run_id, "train/mean_reward")
    assert point.value < 0  # a week of energy and comfort penalties
    assert client.get_run(run.info.run_id).data.metrics["summary/timesteps"] >= 672
    assert (tmp_path / "models" / "model.zip").stat().st_size > 10_000
