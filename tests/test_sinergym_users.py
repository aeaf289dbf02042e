"""Today's Sinergym users: their training YAML as it is, W&B beside MLflow, continuing from a
saved model, evaluation, TensorBoard live from the bucket, and the small things a new user met.

The configs are the project's own, in Sinergym's format (tests/fixtures/sinergym; how each key and
expression is read: tests/test_sinergym_configs.py). The slow tests run real Sinergym + EnergyPlus
on one simulated week, against the local cloud.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import pytest
import requests
import yaml

from localcloud.ports import free_port
from sinergym_cloud import catalog, contracts, names, tensorboard
from sinergym_cloud.contracts import Batch, Experiment, TrainerSpec
from sinergym_cloud.errors import BadMessage
from sinergym_cloud.inputs import batchfile, sinergym_config
from tests.conftest import REPO, Cloud, new_batch_id, wait_for
from tests.control_helpers import wait_batch

CONFIGS = REPO / "tests" / "fixtures" / "sinergym"
WEEK = (1, 1, 1991, 7, 1, 1991)
CONT = "Eplus-5zone-hot-continuous-v1"


def config(name: str) -> dict[str, Any]:
    data = yaml.safe_load((CONFIGS / f"train_agent_{name}.yaml").read_text())
    assert isinstance(data, dict)
    return data


# ----------------------------------------------------------------------------- the config, mapped
@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"surprise": 1}, "surprise"),
        ({"algorithm": {"name": "os:system"}}, "algorithm.name 'os:system'"),
        ({"algorithm": {"name": "stable_baselines3:TQC"}}, "algorithm.name"),
        ({"algorithm": {"name": "stable_baselines3:PPO", "parameters": {"replay_buffer_class": "x:Y"}}},
         "algorithm.parameters.replay_buffer_class"),
        ({"algorithm": {"name": "stable_baselines3:PPO", "parameters": {"warp": 9}}}, "algorithm_parameters.warp"),
        ({"algorithm": {"name": "stable_baselines3:PPO", "parameters": {"policy_kwargs": {"activation_fn": "os.system"}}}},
         "activation_fn"),
        ({"env_params": {"reward": "builtins:eval"}}, "env_params.reward 'builtins:eval'"),
        ({"env_params": {"actuators": {}}}, "env_params.actuators"),
        ({"env_params": {"building_config": {"zones": 3}}}, "env_params.building_config.zones"),
        ({"env_yaml_config": "env.yaml"}, "env_yaml_config"),
        ({"wrappers": [{"subprocess:Popen": {}}]}, "wrappers[0] 'subprocess:Popen'"),
        ({"wrappers": [{"sinergym.utils.wrappers:LoggerWrapper": {"storage_class": "os:system"}}]}, "storage_class"),
        ({"wrappers": [{"sinergym.utils.wrappers:WandBLogger": {"project_name": "p"}}]}, "LoggerWrapper before it"),
        ({"model": {"bucket_path": "gs://b/m.zip", "weights": 1}}, "model.weights"),
        ({"cloud": {"region": "x"}}, "cloud.region"),
        ({"wandb": {"api_key": "secret"}}, "wandb.api_key"),
    ],
)  # fmt: skip
def test_every_key_is_mapped_or_refused_by_name(change: dict[str, Any], named: str) -> None:
    data = {**config("PPO"), **change}
    with pytest.raises((sinergym_config.ConfigError, ValueError)) as info:
        Experiment.model_validate(sinergym_config.map_config(data).fields)
    assert named in str(info.value)


def test_other_sections_map_onto_the_experiment() -> None:
    data = {
        **config("PPO"),
        "algorithm": {"name": "sb3_contrib:TQC", "parameters": {"policy_kwargs": {"net_arch": [64, 64],
                      "activation_fn": "torch.nn.Tanh", "n_quantiles": 10}, "top_quantiles_to_drop_per_net": 1}},
        "env_params": {"seed": 9, "reward": "sinergym.utils.rewards:ExpReward", "reward_kwargs": {"energy_weight": 0.3},
                       "weather_variability": {"Dry Bulb Temperature": [1.0, 0.0, 24.0]},
                       "building_config": {"runperiod": list(WEEK), "timesteps_per_hour": 2}},
        "model": {"bucket_path": "gs://my-results/b1/exp/models/model.zip"},
        "wandb": {"project": "p", "entity": "e", "group": "g", "tags": ["a", "b"], "run_name": "r"},
        "cloud": {"remote_store": "my-results", "auto_delete": {"group_name": "x"}},
    }  # fmt: skip
    data["wrappers"] = [w for w in data["wrappers"] if "WandBLogger" not in next(iter(w))]
    mapped = sinergym_config.map_config(data)
    experiment = Experiment.model_validate(mapped.fields)
    assert experiment.algorithm == "TQC" and experiment.seed == 9 and experiment.reward_class == "ExpReward"
    assert experiment.runperiod == WEEK
    assert experiment.env_params is not None and experiment.env_params.timesteps_per_hour == 2
    assert experiment.env_params.reward_kwargs == {"energy_weight": 0.3}
    assert experiment.env_params.weather_variability == {"Dry Bulb Temperature": (1.0, 0.0, 24.0)}
    assert experiment.algorithm_parameters is not None
    assert experiment.algorithm_parameters.given()["policy_kwargs"] == {
        "net_arch": [64, 64], "activation_fn": "Tanh", "n_quantiles": 10,
    }  # fmt: skip
    assert experiment.initial_model is not None
    assert experiment.initial_model.uri == "gs://my-results/b1/exp/models/model.zip"
    assert experiment.wrappers is not None
    assert experiment.wrappers[-1].name == "WandBLogger"
    assert experiment.wrappers[-1].kwargs == {"project_name": "p", "entity": "e", "group": "g", "tags": ["a", "b"],
                                             "run_name": "r"}  # fmt: skip
    assert experiment.remote_store and mapped.results_bucket == "my-results"


def test_batch_file_config_entries_with_overrides(tmp_path: Path) -> None:
    relative = os.path.relpath(CONFIGS / "train_agent_PPO.yaml", tmp_path)
    (tmp_path / "study.yaml").write_text(
        yaml.safe_dump(
            {
                "batch_id": "cfg-study",
                "defaults": {"runperiod": list(WEEK)},
                "experiments": [
                    {"config": relative, "episodes": 1, "hyperparameters": {"n_steps": 128}},
                    {"config": str(CONFIGS / "train_agent_DQN.yaml"), "seeds": [1, 2]},
                    {"environment": CONT},
                ],
            }
        )
    )
    batch = Batch.model_validate(batchfile.load(tmp_path / "study.yaml"))
    ppo, dqn1, dqn2, plain = batch.experiments
    assert ppo.runperiod == WEEK and ppo.episodes == 1
    assert ppo.algorithm_parameters is not None and ppo.algorithm_parameters.n_steps == 128
    assert ppo.algorithm_parameters.n_epochs == config("PPO")["algorithm"]["parameters"]["n_epochs"]  # the rest
    assert (dqn1.seed, dqn2.seed, dqn1.algorithm) == (1, 2, "DQN")
    assert plain.v2_fields == [] and ppo.v2_fields
    name = contracts.experiment_name(ppo, dt_now(), 0)
    assert name.startswith(f"{config('PPO')['experiment_name']}-PPO-")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"experiments": [{"config": relative, "algorithm_parameters": {"n_steps": -1}}]}))
    with pytest.raises(batchfile.BatchFileError, match=r"(?s)experiment 1: .*algorithm_parameters.n_steps"):
        batchfile.load(bad)


def dt_now() -> Any:
    import datetime as dt

    return dt.datetime.now(dt.UTC)


def test_version_1_messages_still_read_and_cannot_carry_version_2_fields() -> None:
    old = {"schema_version": 1, "batch_id": "old-1", "experiments": [{"environment": CONT, "episodes": 2}]}
    assert contracts.parse(Batch, json.dumps(old).encode()).experiments[0].episodes == 2
    newer = {**old, "experiments": [{"environment": CONT, "label": "mine"}]}
    with pytest.raises(BadMessage, match="label need schema_version 2"):
        contracts.parse(Batch, json.dumps(newer).encode())
    assert contracts.parse(Batch, json.dumps({**newer, "schema_version": 2}).encode()).experiments[0].label == "mine"
    local = {**newer, "schema_version": 2, "experiments": [{"environment": CONT, "initial_model": {"uri": "m.zip"}}]}
    with pytest.raises(BadMessage, match="cannot read a local path"):
        contracts.parse(Batch, json.dumps(local).encode())


@pytest.mark.slow
def test_allowlists_match_the_installed_libraries() -> None:
    code = """
import json, inspect, gymnasium as gym, sb3_contrib, stable_baselines3
import sinergym.utils.wrappers as W
from stable_baselines3.common.base_class import BaseAlgorithm
wrappers = sorted(n for n, c in inspect.getmembers(W, inspect.isclass)
                  if issubclass(c, gym.Wrapper) and c.__module__ == W.__name__ and not inspect.isabstract(c))
contrib = sorted(n for n in sb3_contrib.__all__ if issubclass(getattr(sb3_contrib, n), BaseAlgorithm))
print(json.dumps({"wrappers": wrappers, "contrib": contrib}))
"""
    from trainer.envs import ensure_energyplus

    ensure_energyplus()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, cwd="/tmp")
    data = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(data["wrappers"]) | {"WandBLogger"} >= catalog.WRAPPER_CLASSES
    # The others are refused with a reason (a function argument a config cannot send; the abstract base).
    assert set(data["wrappers"]) - catalog.WRAPPER_CLASSES <= set(catalog.REFUSED_WRAPPERS)
    # Every sb3-contrib algorithm but MaskablePPO (it needs action masks Sinergym does not give).
    assert set(catalog.CONTRIB_ALGORITHMS) == set(data["contrib"]) - {"MaskablePPO"}


# ------------------------------------------------------------------------------- small things
def test_file_store_tracking_uri_is_refused_before_training(tmp_path: Path) -> None:
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"file://{tmp_path}/mlruns"}
    env.pop("MLFLOW_ALLOW_FILE_STORE", None)
    command = [sys.executable, "-m", "trainer", "--config", str(CONFIGS / "train_agent_PPO.yaml"),
               "--workdir", str(tmp_path / "w")]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=REPO, env=env)
    assert result.returncode == 2
    assert "file store" in result.stderr and "sqlite:///" in result.stderr
    assert "MLFLOW_ALLOW_FILE_STORE=true" in result.stderr
    assert not (tmp_path / "w").exists(), "nothing was started"


def test_status_table_is_readable_at_80_columns() -> None:
    from rich.console import Console

    from sinergym_cloud.publisher.render import render_status
    from sinergym_cloud.publisher.views import BatchView, ExperimentView

    run_id = "0123456789abcdef0123456789abcdef"
    experiment = ExperimentView(
        index=0, name="x", environment="Eplus-5zone-hot-continuous-stochastic-v1", algorithm="PPO",
        seed=52, episodes=1, state="running", instance="sinergym-group-b-20261202-0", zone="europe-west1-b", moved_from=[],
        instance_status="RUNNING",
        instance_errors=[], attempts=1, preemptions=0, failures=0, reason="", mlflow_run_id=run_id,
        mlflow_url=f"http://127.0.0.1:18084/#/experiments/1/runs/{run_id}", tensorboard=None, outputs=[],
        metrics={}, timesteps=0, created_at=0.0, running_at=1.0, finished_at=None,
    )  # fmt: skip
    info = BatchView(
        batch_id="b-20261202-0001", status="running", counts={"running": 2}, zone="europe-west1-b",
        error="", experiments=[experiment, dataclasses.replace(experiment, index=1, seed=53)],
        results="gs://r/b/", mlflow_experiment="sinergym.b", mlflow_experiment_url=None,
        groups=[], alerts=[], group="sinergym-group", template="sinergym-template", created_at=0.0,
        launched_at=1.0, finished_at=None, done=False, zones=["europe-west1-b"], limits={}, limit_notes=[],
    )  # fmt: skip
    console = Console(width=80, record=True, color_system=None)
    render_status(info, console)
    text = console.export_text()
    rows = [line for line in text.splitlines() if "PPO" in line]
    assert len(rows) == 2, text  # one line per experiment: nothing wrapped
    assert all(len(line) <= 80 for line in text.splitlines())
    assert run_id[:8] in text and run_id not in text


def test_dry_run_without_credentials_says_how_to_set_them(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GOOGLE_", "CLOUDSDK_", "PUBSUB_", "STORAGE_"))}
    env.update(HOME=str(tmp_path), NO_GCE_CHECK="True", GCE_METADATA_HOST="127.0.0.1:9", CLOUDSDK_CONFIG=str(tmp_path))
    env.pop("SINERGYM_COMPUTE_ENDPOINT", None)
    command = [sys.executable, "publisher.py", "--project_id", "some-project", "--dry-run", "-cmds",
               f"python3 DRL_battery.py --environment {CONT} --episodes 1"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=REPO, env=env)
    assert result.returncode == 0, result.stderr
    out = " ".join((result.stdout + result.stderr).split())
    assert "no Google Cloud credentials" in out and "gcloud auth application-default login" in out
    assert "no cloud running" not in out


def test_submit_hint_names_the_env_file_of_localcloud_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sinergym_cloud.publisher.target import local_env_file

    monkeypatch.setenv("LOCALCLOUD_DIR", str(tmp_path / "lc"))
    assert local_env_file() == str(tmp_path / "lc" / "env")
    monkeypatch.delenv("LOCALCLOUD_DIR")
    monkeypatch.chdir(REPO)
    assert local_env_file() == ".local/env"


# ------------------------------------------------------------------------- real EnergyPlus runs
def wandb_history(run_dir: Path) -> dict[str, list[float]]:
    """The history a W&B offline run recorded: its .wandb file is a log of protobuf records in 32 KiB
    blocks (7-byte record headers: checksum, length, type), as W&B's own reader reads it."""
    from wandb.proto import wandb_internal_pb2

    (path,) = run_dir.glob("run-*.wandb")
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    block, pos, pending, history = 32768, 7, b"", {}
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        pos += 7
        pending += data[pos : pos + length]
        pos += length
        if kind in (1, 4):  # a whole record, or the last part of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            if record.WhichOneof("record_type") == "history":
                for item in record.history.item:
                    key = item.key or "/".join(item.nested_key)
                    history.setdefault(key, []).append(json.loads(item.value_json))
    return history


def trainer_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "WANDB_"))}
    return {**env, "OMP_NUM_THREADS": "1", **extra}


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_sinergym_config_on_a_laptop_logs_wandb_offline(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "trainer", "--config", str(CONFIGS / "train_agent_PPO.yaml"),
               "--runperiod", *map(str, WEEK), "--episodes", "1", "--n_steps", "128", "--workdir", str(tmp_path)]  # fmt: skip
    with open(tmp_path / "trainer.log", "w") as log:
        code = subprocess.call(command, cwd=tmp_path, env=trainer_env(WANDB_MODE="offline"), stdout=log, stderr=log,
                               timeout=600)  # fmt: skip
    text = (tmp_path / "trainer.log").read_text(errors="replace")
    assert code == 0, text[-3000:]
    (run_dir,) = (tmp_path / "output" / "wandb").glob("offline-run-*")
    history = wandb_history(run_dir)
    summaries = {k: v for k, v in history.items() if k.startswith("episode_summaries/")}
    assert summaries["episode_summaries/episode_num"] == [1]
    assert len(summaries["episode_summaries/mean_reward"]) == 1 and summaries["episode_summaries/mean_reward"][0] < 0
    # MLflow beside it (a SQLite store beside the outputs, as with no server): the same episode.
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("sinergym").experiment_id])
    assert run.data.params["hp.n_steps"] == "128"
    assert run.data.params["hp.n_epochs"] == str(config("PPO")["algorithm"]["parameters"]["n_epochs"])
    assert run.data.params["algorithm"] == "PPO"
    mlflow_reward = client.get_metric_history(run.info.run_id, "train/mean_reward")[0].value
    # Sinergym's logger counts the reset as a step of its episode, the trainer does not: one step in 672.
    assert mlflow_reward == pytest.approx(summaries["episode_summaries/mean_reward"][0], rel=0.01)
    assert (tmp_path / "models" / "normalization.json").exists()


def spec_for(experiment: Experiment, batch_id: str, name: str) -> TrainerSpec:
    return TrainerSpec(
        project="local-project", batch_id=batch_id, experiment_index=0, experiment_name=name,
        group_name="users-tests", experiment=experiment, results_bucket="experiments-storage",
        instance="users-test-0", zone="europe-west1-b", boot_id="boot-1", attempt=1,
        mlflow_experiment=f"users-tests.{batch_id}",
    )  # fmt: skip


def run_spec(cloud: Cloud, spec: TrainerSpec, workdir: Path) -> str:
    workdir.mkdir(parents=True)
    (workdir / "spec.json").write_text(spec.model_dump_json())
    with open(workdir / "trainer.log", "w") as log:
        code = subprocess.call(
            [sys.executable, "-m", "trainer", "run", "--spec", str(workdir / "spec.json")],
            cwd=workdir, env=trainer_env(**{**cloud.env, **cloud.vm_identity(spec, workdir / "storage-token.json")}),
            stdout=log, stderr=subprocess.STDOUT, timeout=600,
        )  # fmt: skip
    text = (workdir / "trainer.log").read_text(errors="replace")
    assert code == 0, text[-3000:]
    return text


@pytest.fixture(scope="module")
def trained_sac(cloud: Cloud, tmp_path_factory: pytest.TempPathFactory) -> TrainerSpec:
    """One week of SAC with observation normalization, its outputs in the bucket."""
    experiment = Experiment.model_validate(
        {"environment": CONT, "algorithm": "SAC", "episodes": 1, "seed": 3, "runperiod": WEEK, "normalization": True,
         "remote_store": True, "checkpoint_every": 0,
         "hyperparameters": {"learning_starts": 100, "buffer_size": 5000, "batch_size": 64}}
    )  # fmt: skip
    batch_id = new_batch_id("first")
    spec = spec_for(experiment, batch_id, f"sac-{batch_id}")
    run_spec(cloud, spec, tmp_path_factory.mktemp("first") / "vm")
    return spec


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_continue_from_a_previous_batch_experiment(cloud: Cloud, trained_sac: TrainerSpec, tmp_path: Path) -> None:
    bucket = cloud.runtime().clients.storage.bucket("experiments-storage")
    first_models = names.results_prefix(trained_sac.batch_id, trained_sac.experiment_name) + "models/"
    first_stats = json.loads(bucket.blob(first_models + "normalization.json").download_as_bytes())
    assert bucket.get_blob(first_models + "replay_buffer.pkl") is not None
    start = contracts.InitialModel(batch_id=trained_sac.batch_id, experiment=trained_sac.experiment_name)
    experiment = Experiment.model_validate(
        trained_sac.experiment.model_copy(update={"initial_model": start}).model_dump()
    )
    batch_id = new_batch_id("second")
    spec = spec_for(experiment, batch_id, f"sac-{batch_id}")
    text = run_spec(cloud, spec, tmp_path / "vm")
    assert f"starting from gs://experiments-storage/{first_models}model.zip" in text
    restored = int(text.split("replay buffer restored: ", 1)[1].split()[0])
    assert restored == first_timesteps(cloud, trained_sac) >= 671
    # The normalization statistics went on from the first run's, not from scratch.
    second = names.results_prefix(batch_id, spec.experiment_name) + "models/normalization.json"
    stats = json.loads(bucket.blob(second).download_as_bytes())
    assert stats["count"] > first_stats["count"] > 600
    client = mlflow.MlflowClient(tracking_uri=cloud.env["MLFLOW_TRACKING_URI"])
    (run,) = client.search_runs([client.get_experiment_by_name(spec.mlflow_experiment).experiment_id])
    assert len(client.get_metric_history(run.info.run_id, "train/mean_reward")) == 1


def first_timesteps(cloud: Cloud, spec: TrainerSpec) -> int:
    client = mlflow.MlflowClient(tracking_uri=cloud.env["MLFLOW_TRACKING_URI"])
    (run,) = client.search_runs([client.get_experiment_by_name(spec.mlflow_experiment).experiment_id])
    return int(client.get_run(run.info.run_id).data.metrics["summary/timesteps"])


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_evaluate_a_model_from_the_bucket(cloud: Cloud, trained_sac: TrainerSpec, tmp_path: Path) -> None:
    uri = (
        f"gs://experiments-storage/{names.results_prefix(trained_sac.batch_id, trained_sac.experiment_name)}"
        "models/model.zip"
    )
    command = [sys.executable, "-m", "trainer", "evaluate", "--model", uri, "--environment", CONT, "--algorithm",
               "SAC", "--episodes", "2", "--runperiod", *map(str, WEEK), "--seed", "4", "--workdir", str(tmp_path),
               "--mlflow-experiment", f"users-eval-{trained_sac.batch_id}"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path,
                            env=trainer_env(**cloud.env))  # fmt: skip
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    # The result is the last thing printed: an object opening at the start of a line.
    try:
        out = json.loads(result.stdout[result.stdout.rindex("\n{\n") + 1 :])
    except ValueError:
        raise AssertionError(f"stdout does not end with the JSON result:\n{result.stdout[-4000:]}") from None
    assert out["model"] == uri and len(out["episodes"]) == 2
    assert all(e["length_timesteps"] == 672 for e in out["episodes"])
    assert "normalization statistics: yes" in result.stderr
    client = mlflow.MlflowClient(tracking_uri=cloud.env["MLFLOW_TRACKING_URI"])
    run = client.get_run(out["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.data.params["deterministic"] == "True"
    history = client.get_metric_history(run.info.run_id, "eval/episode_reward")
    assert [m.value for m in sorted(history, key=lambda m: m.step)] == pytest.approx(
        [e["episode_reward"] for e in out["episodes"]]
    )


# ---------------------------------------------------------- a batch of configs, TensorBoard live
@contextlib.contextmanager
def tensorboard_server(cloud: Cloud, batch_id: str, log: Path) -> Iterator[str]:
    port = free_port()
    command = [sys.executable, "publisher.py", "tensorboard", batch_id, "--port", str(port), "--reload-interval", "2"]
    with open(log, "w") as out:
        process = subprocess.Popen(command, cwd=REPO, env={**os.environ, **cloud.env}, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)  # its own session: whatever it started goes too
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def scalar_points(base: str) -> dict[tuple[str, str], int]:
    """(run, tag) -> number of points, read through TensorBoard's HTTP data API."""
    try:
        tags = requests.get(f"{base}/data/plugin/scalars/tags", timeout=10).json()
    except (requests.RequestException, ValueError):
        return {}
    points = {}
    for run, run_tags in tags.items():
        for tag in run_tags:
            got = requests.get(f"{base}/data/plugin/scalars/scalars", params={"run": run, "tag": tag}, timeout=10)
            if got.ok:
                points[(run, tag)] = len(got.json())
    return points


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_a_batch_of_sinergym_configs_end_to_end_with_live_tensorboard(cloud: Cloud, tmp_path: Path) -> None:
    batch_id = new_batch_id("cfg")
    folder = f"gs://experiments-storage/{batch_id}/tb"  # one TensorBoard folder for the batch, as users write it
    raw = config("PPO")
    study = tmp_path / "study.yaml"
    study.write_text(
        yaml.safe_dump(
            {
                "batch_id": batch_id,
                "experiments": [
                    # The PPO config as it is, on one week, its outputs kept, TensorBoard beside them.
                    {"config": str(CONFIGS / "train_agent_PPO.yaml"), "runperiod": list(WEEK), "remote_store": True,
                     "tensorboard": "./tensorboard_log"},
                    # A longer one whose TensorBoard logs are watched while it trains, in the batch's folder
                    # (40 one-week episodes: about a minute of training, for two reads while it runs).
                    {"environment": CONT, "algorithm": "PPO", "episodes": 40, "runperiod": list(WEEK), "seed": 2,
                     "tensorboard": folder, "hyperparameters": {"n_steps": 64}},
                ],
            }
        )
    )  # fmt: skip
    submit = subprocess.run([sys.executable, "publisher.py", "--batch-file", str(study)], cwd=REPO,
                            env={**os.environ, **cloud.env}, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert submit.returncode == 0, submit.stderr
    assert f"local cloud: . {cloud.local.env_file} to use its endpoints" in submit.stdout  # not `. .local/env`
    rt = cloud.runtime()
    launched = wait_batch(rt, batch_id, 120, until="launched")["experiments"]
    names_ = [e["name"] for e in launched]
    # Each experiment's own folder: the batch's folder plus its name; the other's under its own prefix.
    assert launched[1]["tensorboard"] == f"{folder}/{names_[1]}/"
    assert launched[0]["tensorboard"] == f"gs://experiments-storage/{batch_id}/{names_[0]}/tensorboard/"
    with tensorboard_server(cloud, batch_id, tmp_path / "tensorboard.log") as base:
        runs = wait_for(lambda: [r for r in _runs(base) if r.startswith("1-")], 600, "the run in TensorBoard", every=2)
        assert runs == [tensorboard.run_name(1, names_[1])], runs  # named by index and name
        first = wait_for(lambda: {k: n for k, n in scalar_points(base).items() if k[0].startswith(runs[0])}, 120,
                         "scalar tags", every=2)  # fmt: skip
        assert any(tag.startswith(("train/", "rollout/", "time/")) for _, tag in first), first
        status = {e["index"]: e for e in wait_batch(rt, batch_id, 30, until="launched")["experiments"]}
        assert status[1]["state"] in ("starting", "running"), "read while it trains (its record may lag behind)"

        def more() -> bool:
            now = scalar_points(base)
            return any(now.get(key, 0) > count for key, count in first.items())

        wait_for(more, 600, "new points between two reads", every=3)
    info = wait_batch(rt, batch_id, 900)
    assert [e["state"] for e in info["experiments"]] == ["succeeded", "succeeded"], info
    # The folder holds one subfolder per experiment that wrote there: `tensorboard --logdir FOLDER` shows it.
    bucket = rt.clients.storage.bucket(rt.settings.results_bucket)
    in_folder = [b.name for b in bucket.list_blobs(prefix=f"{batch_id}/tb/") if "tfevents" in b.name]
    assert in_folder and all(n.startswith(f"{batch_id}/tb/{names_[1]}/") for n in in_folder), in_folder
    assert f"{folder}/{names_[1]}/" in info["experiments"][1]["outputs"]  # kept by cleanup: the experiment's own
    with tensorboard_server(cloud, batch_id, tmp_path / "tensorboard-after.log") as base:
        both = wait_for(lambda: [r for r in [_runs(base)] if len(r) == 2], 300, "both runs", every=2)[0]
        assert sorted(both) == sorted(tensorboard.run_name(i, n) for i, n in enumerate(names_)), both
    config_run = info["experiments"][0]
    assert config_run["name"].startswith(f"{raw['experiment_name']}-PPO-Eplus-5zone-hot-continuous-stochastic-v1-")
    client = mlflow.MlflowClient(tracking_uri=cloud.env["MLFLOW_TRACKING_URI"])
    run = client.get_run(config_run["mlflow_run_id"])
    parameters = raw["algorithm"]["parameters"]
    assert run.data.params["hp.n_steps"] == str(parameters["n_steps"])
    assert run.data.params["hp.n_epochs"] == str(parameters["n_epochs"])
    assert "'activation_fn': <class 'torch.nn.modules.activation.Tanh'>" in run.data.params["hp.policy_kwargs"]
    assert run.data.params["evaluation-frequency"] == "2" and run.data.params["episodes"] == str(raw["episodes"])
    assert len(client.get_metric_history(run.info.run_id, "train/mean_reward")) >= 3
    assert len(client.get_metric_history(run.info.run_id, "eval/mean_reward")) == 1
    # W&B (no key on the local cloud: offline) ran beside MLflow; its run went up with the outputs.
    prefix = names.results_prefix(batch_id, config_run["name"])
    stored = [b.name for b in bucket.list_blobs(prefix=prefix + "sinergym/wandb/")]
    assert any(n.endswith(".wandb") for n in stored), stored
    (wandb_blob,) = [n for n in stored if n.endswith(".wandb")]
    local = tmp_path / "wandb-run"
    local.mkdir()
    bucket.blob(wandb_blob).download_to_filename(str(local / Path(wandb_blob).name))
    assert len(wandb_history(local)["episode_summaries/episode_num"]) >= 3


def _runs(base: str) -> list[str]:
    """The experiments TensorBoard shows (its runs ``EXPERIMENT/<SB3's log name>``), or none while it
    is not up yet."""
    try:
        got = requests.get(f"{base}/data/runs", timeout=10)
    except requests.RequestException:
        return []
    return sorted({run.split("/")[0] for run in got.json()}) if got.ok else []


@pytest.mark.slow
@pytest.mark.timeout(2000)
def test_the_sac_and_dqn_example_configs_run_through_a_batch(cloud: Cloud, tmp_path: Path) -> None:
    batch_id = new_batch_id("cfg2")
    study = tmp_path / "study.yaml"
    study.write_text(
        yaml.safe_dump(
            {
                "batch_id": batch_id,
                # One week, two episodes (one evaluation). Defaults fill what a config leaves unset (the
                # run period); keys beside `config:` override what it says (episodes). SAC's config takes
                # its environment parameters and most wrappers from the files it names beside it.
                "defaults": {"runperiod": list(WEEK), "episodes": 9},
                "experiments": [{"config": os.path.relpath(CONFIGS / f"train_agent_{n}.yaml", tmp_path),
                                 "episodes": 2} for n in ("SAC", "DQN")],
            }
        )
    )  # fmt: skip
    submit = subprocess.run([sys.executable, "publisher.py", "--batch-file", str(study)], cwd=REPO,
                            env={**os.environ, **cloud.env}, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert submit.returncode == 0, submit.stderr
    assert f"local cloud: . {cloud.local.env_file} to use its endpoints" in submit.stdout  # not `. .local/env`
    info = wait_batch(cloud.runtime(), batch_id, 1500)
    assert [e["state"] for e in info["experiments"]] == ["succeeded", "succeeded"], info
    client = mlflow.MlflowClient(tracking_uri=cloud.env["MLFLOW_TRACKING_URI"])
    for e, name in zip(info["experiments"], ("SAC", "DQN"), strict=True):
        raw = config(name)
        run = client.get_run(e["mlflow_run_id"])
        assert run.data.params["algorithm"] == name and run.data.params["episodes"] == "2"
        assert run.data.params["hp.learning_starts"] == str(raw["algorithm"]["parameters"]["learning_starts"])
        assert run.data.params["hp.buffer_size"] == str(raw["algorithm"]["parameters"]["buffer_size"])
        assert len(client.get_metric_history(run.info.run_id, "train/mean_reward")) == 2
        assert len(client.get_metric_history(run.info.run_id, "eval/mean_reward")) == 1
    # SAC's seed came from its env_yaml_config file, through the batch message, onto the VM.
    assert client.get_run(info["experiments"][0]["mlflow_run_id"]).data.params["seed"] == "21"
