"""The trainer on real Sinergym + EnergyPlus (one simulated week per episode), against the local cloud."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import pytest
from google.api_core import exceptions

from sinergym_cloud import contracts, names
from sinergym_cloud.contracts import Completion, Experiment, TrainerSpec
from sinergym_cloud.gcp import tokens
from tests.conftest import REPO, Cloud, new_batch_id, wait_for
from trainer import storage

WEEK = (1, 1, 1991, 7, 1, 1991)
CONT = "Eplus-5zone-hot-continuous-v1"
DISC = "Eplus-5zone-hot-discrete-v1"
SMALL = {
    "PPO": {"n_steps": 128, "batch_size": 64},
    "A2C": {"n_steps": 16},
    "DQN": {"learning_starts": 100, "buffer_size": 2000, "batch_size": 32},
    "DDPG": {"learning_starts": 100, "buffer_size": 2000, "batch_size": 64},
    "SAC": {"learning_starts": 100, "buffer_size": 2000, "batch_size": 64},
    "TD3": {"learning_starts": 100, "buffer_size": 2000, "batch_size": 64},
}


@pytest.fixture(scope="module")
def completions(cloud: Cloud) -> str:
    rt = cloud.runtime()
    sub = f"projects/local-project/subscriptions/trainer-tests-{new_batch_id()}"
    rt.clients.subscriber.create_subscription(name=sub, topic=rt.clients.topic_path(names.TOPIC_COMPLETIONS))
    return sub


def completion_of(cloud: Cloud, sub: str, batch_id: str, timeout: float = 30) -> Completion:
    rt = cloud.runtime()
    found: list[Completion] = []

    def pull() -> bool:
        response = rt.clients.subscriber.pull(
            request={"subscription": sub, "max_messages": 50, "return_immediately": True}, timeout=10
        )
        for m in response.received_messages:
            if names.PROBE_ATTRIBUTE in m.message.attributes:
                continue  # trainer check's probe
            c = contracts.parse(Completion, m.message.data)
            if c.batch_id == batch_id:
                found.append(c)
        if response.received_messages:
            rt.clients.subscriber.acknowledge(
                request={"subscription": sub, "ack_ids": [m.ack_id for m in response.received_messages]}
            )
        return bool(found)

    wait_for(pull, timeout, f"the completion of {batch_id}", every=0.3)
    return found[-1]


def spec_for(experiment: Experiment, batch_id: str | None = None, attempt: int = 1) -> TrainerSpec:
    batch_id = batch_id or new_batch_id("tr")
    return TrainerSpec(
        project="local-project",
        batch_id=batch_id,
        experiment_index=0,
        experiment_name=f"{experiment.algorithm}-{batch_id}",
        group_name="trainer-tests",
        experiment=experiment,
        results_bucket="experiments-storage",
        instance="trainer-test-0",
        zone="europe-west1-b",
        boot_id=f"boot-{attempt}",
        attempt=attempt,
        mlflow_experiment=f"trainer-tests.{batch_id}",
        # What dispatch would derive (signing.py): a fresh completion key per boot, one checkpoint
        # key per experiment, so that a replacement VM trusts its predecessor's checkpoint.
        completion_key=secrets.token_hex(32),
        checkpoint_key=hashlib.sha256(f"checkpoint-{batch_id}".encode()).hexdigest(),
    )


def trainer_env(cloud: Cloud) -> dict[str, str]:
    return {**os.environ, **cloud.env, "SINERGYM_HEARTBEAT_SECONDS": "1", "SINERGYM_UPLOAD_SECONDS": "1"}


@contextlib.contextmanager
def trainer(
    cloud: Cloud, spec: TrainerSpec, workdir: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[str]]:
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "spec.json"
    path.write_text(spec.model_dump_json())
    # As on a VM: the trainer's account, and its experiment's storage token from dispatch.
    env = {**(env or trainer_env(cloud)), **cloud.vm_identity(spec, workdir / "storage-token.json")}
    with open(workdir / "trainer.log", "a") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "trainer", "run", "--spec", str(path)],
            cwd=workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def run_to_end(cloud: Cloud, spec: TrainerSpec, workdir: Path, timeout: float = 300) -> int:
    with trainer(cloud, spec, workdir) as process:
        return process.wait(timeout)


def log_of(workdir: Path) -> str:
    return (workdir / "trainer.log").read_text(errors="replace")


CASES = [("PPO", CONT), ("PPO", DISC), ("A2C", CONT), ("DQN", DISC), ("DDPG", CONT), ("SAC", CONT), ("TD3", CONT)]


@pytest.mark.slow
@pytest.mark.parametrize(("algorithm", "environment"), CASES, ids=[f"{a}-{e.split('-')[3]}" for a, e in CASES])
def test_each_algorithm_trains_on_real_energyplus(
    cloud: Cloud, completions: str, tmp_path: Path, algorithm: str, environment: str
) -> None:
    experiment = Experiment.model_validate(
        {
            "environment": environment,
            "algorithm": algorithm,
            "episodes": 1,
            "seed": 5,
            "runperiod": WEEK,
            "logger": True,
            "normalization": True,
            "remote_store": True,
            "hyperparameters": SMALL[algorithm],
        }
    )
    spec = spec_for(experiment)
    code = run_to_end(cloud, spec, tmp_path)
    assert code == 0, log_of(tmp_path)[-3000:]
    assert ("fused Adam: " in log_of(tmp_path)) == (algorithm != "A2C")  # A2C's RMSprop stays as it is
    done = completion_of(cloud, completions, spec.batch_id)
    assert done.status == "succeeded" and done.boot_id == "boot-1"
    assert done.timesteps >= 671
    assert done.metrics["episodes"] == 1.0
    assert done.metrics["checkpoints"] == 1.0  # the first episode's is always taken
    # The CPU time of the process's threads while it learnt (the bench compares it a step with a bare loop's).
    assert 0 < done.metrics["learn_cpu_seconds"] <= (os.cpu_count() or 1) * done.metrics["learn_seconds"] + 0.1
    client = mlflow.MlflowClient(tracking_uri=cloud.env["MLFLOW_TRACKING_URI"])
    run = client.get_run(done.mlflow_run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["algorithm"] == algorithm and run.data.params["episode-timesteps"] == "672"
    assert run.data.params["hp.learning_starts" if algorithm in ("DQN", "DDPG", "SAC", "TD3") else "hp.n_steps"]
    history = client.get_metric_history(run.info.run_id, "train/energy_kwh")
    assert len(history) == 1 and history[0].value > 0
    monitors = {a.path for a in client.list_artifacts(run.info.run_id, "monitors")}
    assert monitors, "Sinergym's CSV monitors are MLflow artifacts"
    bucket = cloud.runtime().clients.storage.bucket("experiments-storage")
    prefix = names.results_prefix(spec.batch_id, spec.experiment_name)
    assert storage.verify_manifest(bucket, prefix) == []
    names_in_bucket = [b.name for b in bucket.list_blobs(prefix=prefix)]
    assert any(n.endswith("/monitor/observations.csv") for n in names_in_bucket)
    assert f"{prefix}models/model.zip" in names_in_bucket


@pytest.mark.slow
def test_sigterm_checkpoints_then_a_new_attempt_resumes(cloud: Cloud, completions: str, tmp_path: Path) -> None:
    experiment = Experiment.model_validate(
        {
            "environment": CONT,
            "algorithm": "SAC",
            "episodes": 3,
            "seed": 1,
            "runperiod": WEEK,
            "normalization": True,
            "checkpoint_every": 1,
            "hyperparameters": SMALL["SAC"],
        }
    )
    spec = spec_for(experiment)
    bucket = cloud.runtime().clients.storage.bucket("experiments-storage")
    meta_name = names.checkpoint_prefix(spec.batch_id, spec.experiment_name) + "meta.json"
    first = tmp_path / "vm1"
    with trainer(cloud, spec, first) as process:
        wait_for(lambda: bucket.get_blob(meta_name) is not None, 240, "the first checkpoint")
        process.send_signal(signal.SIGTERM)
        assert process.wait(120) == 143, log_of(first)[-3000:]
    stopped = completion_of(cloud, completions, spec.batch_id)
    assert stopped.status == "preempted"
    meta = json.loads(bucket.get_blob(meta_name).download_as_bytes())  # type: ignore[union-attr] - waited for above
    assert meta["mlflow_run_id"] == stopped.mlflow_run_id
    assert "replay_buffer.pkl" in meta["files"] and meta["norm_stats"]["count"] > 1
    # The replacement VM: same experiment, next attempt, fresh disk.
    second = tmp_path / "vm2"
    again = spec_for(experiment, batch_id=spec.batch_id, attempt=2)
    assert run_to_end(cloud, again, second) == 0, log_of(second)[-3000:]
    assert "resumed from checkpoint" in log_of(second)
    assert "fused Adam: actor.optimizer, critic.optimizer, ent_coef_optimizer" in log_of(second)
    done = completion_of(cloud, completions, spec.batch_id)
    assert done.status == "succeeded" and done.mlflow_run_id == stopped.mlflow_run_id
    assert done.timesteps >= 3 * 671
    client = mlflow.MlflowClient(tracking_uri=cloud.env["MLFLOW_TRACKING_URI"])
    steps = [m.step for m in client.get_metric_history(done.mlflow_run_id, "train/mean_reward")]
    assert steps == [1, 2, 3], "one continuous history in one MLflow run"


@pytest.mark.slow
def test_ars_runs_count_their_candidates_episodes(cloud: Cloud, completions: str, tmp_path: Path) -> None:
    """ARS learns from whole episodes of perturbed policies (two candidates here, a week each); each
    is an episode of the run: summarised in MLflow, and checkpointed like any other's."""
    experiment = Experiment.model_validate(
        {
            "environment": CONT,
            "algorithm": "ARS",
            "episodes": 1,
            "seed": 5,
            "runperiod": WEEK,
            "algorithm_parameters": {"n_delta": 1, "n_top": 1},
        }
    )
    spec = spec_for(experiment)
    assert run_to_end(cloud, spec, tmp_path) == 0, log_of(tmp_path)[-3000:]
    done = completion_of(cloud, completions, spec.batch_id)
    assert done.status == "succeeded"
    assert done.metrics["episodes"] == 2.0 and done.timesteps == 2 * 672  # one update: two candidates' weeks
    assert done.metrics["checkpoints"] == 1.0
    client = mlflow.MlflowClient(tracking_uri=cloud.env["MLFLOW_TRACKING_URI"])
    history = client.get_metric_history(done.mlflow_run_id, "train/length_timesteps")
    assert sorted((m.step, m.value) for m in history) == [(1, 672.0), (2, 672.0)]


@pytest.mark.slow
def test_failure_publishes_failed_with_the_reason(cloud: Cloud, completions: str, tmp_path: Path) -> None:
    # NormalizedLinearReward does not take the 5-zone building's LinearReward arguments.
    experiment = Experiment(environment=CONT, runperiod=WEEK, reward="NormalizedLinearReward")
    spec = spec_for(experiment)
    assert run_to_end(cloud, spec, tmp_path) == 1
    failed = completion_of(cloud, completions, spec.batch_id)
    assert failed.status == "failed"
    assert failed.error_type == "TypeError"
    assert failed.exit_reason
    assert failed.log_tail and any("failed" in line for line in failed.log_tail)
    client = mlflow.MlflowClient(tracking_uri=cloud.env["MLFLOW_TRACKING_URI"])
    assert client.get_run(failed.mlflow_run_id).info.status == "FAILED"


@pytest.mark.slow
def test_parallel_environments_and_tensorboard_in_the_bucket(cloud: Cloud, completions: str, tmp_path: Path) -> None:
    storage_client = cloud.runtime().clients.storage
    batch_id = new_batch_id("tr")
    # TensorBoard synced live into the experiment's own prefix (the only gs:// place allowed).
    live = f"{batch_id}/PPO-{batch_id}/tensorboard_log"
    experiment = Experiment.model_validate(
        {
            "environment": CONT,
            "algorithm": "PPO",
            "episodes": 2,
            "n_envs": 2,
            "runperiod": WEEK,
            "tensorboard": f"gs://experiments-storage/{live}",
            "remote_store": True,
            "evaluation": True,
            "eval_freq": 2,
            "eval_length": 1,
            "hyperparameters": {"n_steps": 64},
        }
    )
    spec = spec_for(experiment, batch_id=batch_id)
    assert run_to_end(cloud, spec, tmp_path) == 0, log_of(tmp_path)[-3000:]
    outputs = sorted(p.name for p in (tmp_path / "work" / "output").iterdir())
    assert any(p.endswith("-w0-res1") for p in outputs) and any(p.endswith("-w1-res1") for p in outputs)
    done = completion_of(cloud, completions, spec.batch_id)
    assert done.status == "succeeded" and done.metrics["episodes"] >= 2
    assert "best_eval_mean_reward" in done.metrics
    bucket = storage_client.bucket("experiments-storage")
    events = [b for b in bucket.list_blobs(prefix=f"{live}/") if "tfevents" in b.name]
    assert events, "TensorBoard event files are uploaded whole"
    local = tmp_path / "work" / "tensorboard"
    local_files = {p.name: p.stat().st_size for p in local.rglob("*tfevents*")}
    assert {b.name.rsplit("/", 1)[-1]: b.size for b in events} == local_files
    # They are in the experiment's manifest, verified like every other output.
    results = storage_client.bucket("experiments-storage")
    prefix = names.results_prefix(spec.batch_id, spec.experiment_name)
    manifest = json.loads(results.blob(prefix + "MANIFEST.json").download_as_bytes())
    listed = {e["path"] for e in manifest}
    assert {b.name for b in events} <= listed
    assert storage.verify_manifest(results, prefix) == []
    events[0].delete()
    assert storage.verify_manifest(results, prefix) == [f"missing: gs://experiments-storage/{events[0].name}"]


@pytest.mark.slow
def test_runtime_check_passes_against_the_local_cloud(cloud: Cloud, completions: str, tmp_path: Path) -> None:
    # As on a VM: the trainer's account, and a token for the check's prefix (an experiment's, when
    # publisher.py --check launches it).
    rules = tokens.experiment_rules("experiments-storage", "checks/")
    identity = cloud.vm_identity(None, tmp_path.parent / f"{tmp_path.name}-token.json", rules)
    env = {**trainer_env(cloud), "SINERGYM_RESULTS_BUCKET": "experiments-storage", **identity}
    result = subprocess.run(
        [sys.executable, "-m", "trainer", "check"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for name in ("energyplus", "bucket", "mlflow", "pubsub"):
        assert any(line.startswith(name) and "PASS" in line for line in result.stdout.splitlines()), result.stdout
    assert list(tmp_path.iterdir()) == [], "the check leaves no output behind"
    # The probe really went out on the completions topic, and the cleanup function let it be.
    message_id = result.stdout.split("published probe ", 1)[1].split()[0]
    rt = cloud.runtime()
    probes: list[Any] = []

    def pull() -> bool:
        response = rt.clients.subscriber.pull(
            request={"subscription": completions, "max_messages": 50, "return_immediately": True}, timeout=10
        )
        probes.extend(m.message for m in response.received_messages if m.message.message_id == message_id)
        return bool(probes)

    wait_for(pull, 30, "the probe on experiment-completions", every=0.3)
    assert probes[0].attributes[names.PROBE_ATTRIBUTE] == "trainer-check"
    dead = cloud.local.log_dir / "fn-cleanup.log"
    wait_for(lambda: f"probe {message_id}" in dead.read_text(), 30, "cleanup acknowledging the probe")
    assert f"rejected message {message_id}" not in dead.read_text()


@pytest.mark.slow
def test_catalog_matches_the_installed_sinergym() -> None:
    code = """
import json, gymnasium as gym, sinergym, inspect
import sinergym.utils.rewards as R
ids = sorted(e for e in gym.envs.registry if e.startswith('Eplus'))
rewards = sorted(n for n, c in inspect.getmembers(R, inspect.isclass)
                 if issubclass(c, R.BaseReward) and c is not R.BaseReward and c.__module__ == R.__name__)
print(json.dumps({"version": sinergym.__version__, "ids": ids, "rewards": rewards}))
"""
    from trainer.envs import ensure_energyplus

    ensure_energyplus()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd="/tmp")
    data = json.loads(out.stdout.strip().splitlines()[-1])
    from sinergym_cloud import catalog

    assert data["version"] == catalog.SINERGYM_VERSION
    assert data["ids"] == sorted(catalog.ENVIRONMENTS)
    assert data["rewards"] == sorted(catalog.REWARD_CLASSES)


def test_trainer_help_lists_every_original_flag() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "trainer", "--help"], capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert result.returncode == 0
    for flag in ("--environment", "-env", "--episodes", "-ep", "--algorithm", "-alg", "--reward", "-rw", "--normalization",
                 "-norm", "--multiobs", "-mobs", "--logger", "-log", "--tensorboard", "-tens", "--evaluation", "-eval",
                 "--eval_freq", "-evalf", "--eval_length", "-evall", "--log_interval", "-inter", "--seed", "-sd",
                 "--remote_store", "-sto", "--group_name", "-group", "--learning_rate", "--gamma", "--n_steps",
                 "--gae_lambda", "--ent_coef", "--vf_coef", "--max_grad_norm", "--rms_prop_eps", "--buffer_size",
                 "--learning_starts", "--tau", "--sigma", "check", "run --spec"):  # fmt: skip
        assert flag in result.stdout, flag


def test_a_flag_the_algorithm_does_not_take_is_a_clear_error() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "trainer", "-env", CONT, "-alg", "PPO", "--buffer_size", "10"],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 2
    assert "buffer_size does not apply to PPO" in result.stderr


def test_hyperparameters_come_from_yaml_with_overrides() -> None:
    from trainer import registry

    exp = Experiment(environment=CONT, algorithm="PPO", hyperparameters={"n_steps": 99})  # type: ignore[arg-type] - pydantic validates a plain dict
    values = registry.hyperparameters(exp)
    assert values["n_steps"] == 99 and values["gamma"] == 0.99 and values["policy"] == "MlpPolicy"
    for algorithm in ("PPO", "A2C", "DQN", "DDPG", "SAC", "TD3"):
        assert "default" in registry.load_table(algorithm)


def test_uploads_are_verified(cloud: Cloud, tmp_path: Path) -> None:
    bucket = cloud.runtime().clients.storage.bucket("experiments-storage")
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.csv").write_text("1,2\n")
    (tmp_path / "y.bin").write_bytes(os.urandom(100_000))
    prefix = f"verify-{new_batch_id()}/"
    uploaded = storage.upload_tree(bucket, tmp_path, prefix)
    storage.write_manifest(bucket, prefix, uploaded)
    assert storage.verify_manifest(bucket, prefix) == []
    bucket.blob(prefix + "y.bin").upload_from_string(b"corrupted")
    assert storage.verify_manifest(bucket, prefix) == [f"corrupt: gs://{bucket.name}/{prefix}y.bin"]
    bucket.blob(prefix + "a/x.csv").delete()
    assert f"missing: gs://{bucket.name}/{prefix}a/x.csv" in storage.verify_manifest(bucket, prefix)
    with contextlib.suppress(exceptions.NotFound):
        bucket.blob(prefix + "MANIFEST.json").delete()


def test_the_mlflow_run_says_whether_the_experiment_waited_queued(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trainer import tracking
    from trainer.run import Context

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    tags = {}
    for by, waited in (("experiment 3", 42.0), ("launch", 0.0)):
        ctx = Context(experiment=Experiment(environment=CONT), name=f"q-{waited:g}", batch_id="b-queue",
                      started_by=by, queued_seconds=waited, mlflow_experiment="queue-tags")  # fmt: skip
        run = tracking.start(ctx, None)
        mlflow.end_run()
        tags[by] = mlflow.get_run(run.info.run_id).data.tags
    assert (tags["experiment 3"]["queue"], tags["experiment 3"]["queued_seconds"]) == ("queued", "42.0")
    assert tags["experiment 3"]["started_by"] == "experiment 3"
    assert (tags["launch"]["queue"], tags["launch"]["started_by"]) == ("started at launch", "launch")
    spec = spec_for(Experiment(environment=CONT)).model_dump()
    with pytest.raises(ValueError, match="started_by"):
        TrainerSpec.model_validate({**spec, "started_by": "rm -rf /"})


def test_a_trainer_that_died_before_its_first_checkpoint_resumes_its_experiments_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A VM killed (or preempted without notice) after its trainer started the MLflow run and before
    the first checkpoint, which carries the run's id: the retried boot resumed nothing and started a
    second run of the same experiment. The soak found it (seed 5: a VM killed 7 s into its trainer's
    life). The run is now found by the experiment's tags."""
    from trainer import tracking
    from trainer.run import Context

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")

    def boot(index: int, attempt: int, instance: str | None = "vm-0") -> str:
        ctx = Context(experiment=Experiment(environment=CONT), name=f"e-{index}", batch_id="b-died", index=index,
                      instance=instance, zone="z", boot_id=f"boot-{attempt}", attempt=attempt,
                      mlflow_experiment="died-early")  # fmt: skip
        run = tracking.start(ctx, None)  # no checkpoint: nothing says which run was this experiment's
        mlflow.end_run("KILLED")
        return str(run.info.run_id)

    first = boot(0, 1)
    assert boot(0, 2) == first and boot(0, 3) == first
    assert mlflow.get_run(first).data.tags["attempt"] == "3"
    assert boot(1, 1) != first, "another experiment of the batch has its own run"
    assert boot(0, 1, instance=None) != first, "a run on a laptop is its own"


@pytest.mark.slow
def test_what_was_queued_in_the_background_is_stored_before_the_completion_even_on_sigterm(
    cloud: Cloud, completions: str, tmp_path: Path
) -> None:
    """Uploads and MLflow batches slowed down by a proxy (1.5 s each), so work is always queued in the
    trainer's background worker; stopped with SIGTERM mid-training, the trainer still has every
    episode's metrics in MLflow, its last checkpoint and every TensorBoard event file in the bucket
    when its completion is published, and never writes one object twice within a second."""
    from tests.slow_proxy import slow_proxy

    batch_id = new_batch_id("tr")
    live = f"{batch_id}/PPO-{batch_id}/tensorboard_log"
    experiment = Experiment.model_validate(
        {
            "environment": CONT,
            "algorithm": "PPO",
            "episodes": 30,
            "seed": 2,
            "runperiod": WEEK,
            "normalization": True,
            "checkpoint_every": 1,
            "tensorboard": f"gs://experiments-storage/{live}",
            "hyperparameters": {"n_steps": 128, "batch_size": 64},
        }
    )
    spec = spec_for(experiment, batch_id=batch_id)
    uploads = slow_proxy(cloud.env["STORAGE_EMULATOR_HOST"], lambda m, p: "/upload/" in p, 1.5)
    batches = slow_proxy(cloud.env["MLFLOW_TRACKING_URI"], lambda m, p: p.endswith("/runs/log-batch"), 1.5)
    with uploads as gcs, batches as tracking:
        env = {**trainer_env(cloud), "STORAGE_EMULATOR_HOST": gcs.url, "MLFLOW_TRACKING_URI": tracking.url}
        with trainer(cloud, spec, tmp_path, env=env) as process:
            wait_for(lambda: "episode 3:" in log_of(tmp_path), 600, "three episodes", every=0.2)
            process.send_signal(signal.SIGTERM)
            assert process.wait(300) == 143, log_of(tmp_path)[-3000:]
        stopped = completion_of(cloud, completions, spec.batch_id)
        writes = gcs.writes()
    assert stopped.status == "preempted"
    assert stopped.metrics["background_failed"] == 0 and "background_left" not in stopped.metrics
    assert stopped.metrics["background_busy_seconds"] >= 3.0, "the slow uploads were on the worker, queued"
    done = sorted({int(line.split("episode ", 1)[1].split(":")[0]) for line in log_of(tmp_path).splitlines()
                   if "trainer: episode " in line})  # fmt: skip
    assert done == list(range(1, len(done) + 1)) and len(done) >= 3
    # MLflow: every finished episode's metrics, the run ended as killed.
    client = mlflow.MlflowClient(tracking_uri=cloud.env["MLFLOW_TRACKING_URI"])
    steps = sorted(m.step for m in client.get_metric_history(stopped.mlflow_run_id, "train/episode_reward"))
    assert steps == done
    assert client.get_run(stopped.mlflow_run_id).info.status == "KILLED"
    # The bucket: the checkpoint taken at the stop, whole and as signed.
    bucket = cloud.runtime().clients.storage.bucket("experiments-storage")
    prefix = names.checkpoint_prefix(spec.batch_id, spec.experiment_name)
    meta = json.loads(bucket.blob(prefix + "meta.json").download_as_bytes())
    assert meta["timesteps"] == stopped.timesteps and meta["episodes"] == len(done)
    # The first episode's, then at most one a minute (checkpoint_min_seconds), and the stop's.
    assert 2 <= stopped.metrics["checkpoints"] <= 2 + stopped.metrics["learn_seconds"] // 60 < len(done) + 1
    model = bucket.blob(prefix + "model.zip").download_as_bytes()
    assert hashlib.sha256(model).hexdigest() == meta["sha256"]["model.zip"]
    # Every TensorBoard event file, as last written.
    local = {p.name: p.stat().st_size for p in (tmp_path / "work" / "tensorboard").rglob("*tfevents*")}
    stored = {b.name.rsplit("/", 1)[-1]: b.size for b in bucket.list_blobs(prefix=f"{live}/") if "tfevents" in b.name}
    assert local and stored == local
    # Cloud Storage's rate for one object name: at most one write a second, whatever was queued.
    assert writes[prefix + "meta.json"] and writes[names.heartbeat_object(spec.batch_id, spec.experiment_name)]
    for name, times in writes.items():
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert all(g >= 0.9 for g in gaps), f"{name} written {len(times)} times, gaps {gaps}"
