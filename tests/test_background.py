"""The trainer's background worker, its per-object write pacing, the checkpoint's copy and MLflow's
batched metrics: what keeps the training thread free (no EnergyPlus here; the trainer tests run it)."""

from __future__ import annotations

import io
import pickle
import threading
import time
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest

from trainer import checkpoint, storage, tracking
from trainer.background import Background
from trainer.episodes import EpisodeCallback
from trainer.pauses import PauseClock


def test_submit_returns_at_once_while_the_worker_is_busy_and_keeps_the_order() -> None:
    bg = Background()
    gate = threading.Event()
    done: list[str] = []
    bg.submit("slow", gate.wait)

    def submit_all() -> None:
        for i in range(200):
            bg.submit(f"task {i}", lambda i=i: done.append(f"task {i}"))

    submitter = threading.Thread(target=submit_all)
    submitter.start()
    submitter.join(30)
    assert not submitter.is_alive(), "submit waited for the blocked worker"
    assert done == []
    gate.set()
    assert bg.drain(10)
    assert done == [f"task {i}" for i in range(200)]
    assert bg.close(5)


def test_the_worker_counts_its_cpu_apart_from_its_waits() -> None:
    bg = Background()

    def compute() -> None:
        end = time.thread_time() + 0.05
        while time.thread_time() < end:
            sum(range(1000))

    bg.submit("compute", compute)
    bg.submit("wait", lambda: time.sleep(0.3))
    assert bg.close(30)
    metrics = bg.stats.metrics()
    assert metrics["background_cpu_seconds"] >= 0.05
    # The 0.3 s sleep is in the worker's busy time, not in its CPU time (two clocks: a margin).
    assert metrics["background_busy_seconds"] - metrics["background_cpu_seconds"] >= 0.25
    assert metrics["background_busy_seconds"] >= 0.35 - 0.01


def test_a_keyed_task_replaces_its_pending_twin_in_place() -> None:
    bg = Background()
    gate = threading.Event()
    done: list[str] = []
    bg.submit("blocker", gate.wait)
    bg.submit("checkpoint 1", lambda: done.append("checkpoint 1"), key="checkpoint")
    bg.submit("progress 1", lambda: done.append("progress 1"))
    bg.submit("checkpoint 2", lambda: done.append("checkpoint 2"), key="checkpoint")
    bg.submit("progress 2", lambda: done.append("progress 2"))
    gate.set()
    assert bg.drain(10)
    # The newer checkpoint took the older one's place: every report still follows a checkpoint at
    # least as new as its episode, and the superseded checkpoint was never written.
    assert done == ["checkpoint 2", "progress 1", "progress 2"]
    assert bg.stats.coalesced == 1
    bg.close(5)


def test_keyless_tasks_are_capped_without_blocking() -> None:
    bg = Background(max_pending=3)
    gate = threading.Event()
    done: list[int] = []
    bg.submit("blocker", gate.wait, key="blocker")
    for i in range(6):
        bg.submit(f"report {i}", lambda i=i: done.append(i))
    gate.set()
    assert bg.drain(10)
    assert done == [3, 4, 5] and bg.stats.dropped == 3
    bg.close(5)


def test_drain_has_a_deadline_and_close_says_what_was_left() -> None:
    bg = Background()
    gate = threading.Event()
    bg.submit("stuck upload", gate.wait)
    assert not bg.drain(0.2)
    assert bg.pending() == ["stuck upload"]
    assert not bg.close(0.2)
    gate.set()


def test_a_failed_critical_task_is_raised_on_the_training_thread() -> None:
    bg = Background()

    def broken() -> None:
        raise OSError("bucket unreachable")

    bg.submit("metrics", broken)  # not critical: counted and logged only
    bg.submit("checkpoint", broken, critical=True)
    assert bg.drain(5)
    assert bg.stats.failed == 2
    with pytest.raises(OSError, match="bucket unreachable"):
        bg.raise_failure()
    bg.raise_failure()  # raised once
    bg.close(5)


def test_periodic_tasks_run_until_cancelled() -> None:
    bg = Background()
    ticks: list[float] = []
    bg.every(0.05, "sync", lambda: ticks.append(time.monotonic()), key="sync")
    time.sleep(0.4)
    bg.cancel_periodic("sync")
    seen = len(ticks)
    time.sleep(0.2)
    assert 3 <= seen == len(ticks)
    bg.close(5)


def test_the_pacer_holds_writes_of_one_object_to_one_a_second() -> None:
    pacer = storage.Pacer(0.3)
    times: dict[str, list[float]] = {"a": [], "b": []}

    def write(name: str) -> None:
        with pacer.write("bucket", name):
            times[name].append(time.monotonic())

    threads = [threading.Thread(target=write, args=(n,)) for n in ("a", "b", "b", "a")]
    for t in threads:
        t.start()
        t.join()
    for name in ("a", "b"):
        gaps = np.diff(times[name])
        assert (gaps >= 0.3).all(), (name, gaps)
    assert times["b"][0] - times["a"][0] < 0.1, "another object is not held back"


def _sac() -> Any:
    from stable_baselines3 import SAC

    # No gradient steps: the buffer is what is tested, and they cost minutes on a loaded machine.
    model = SAC("MlpPolicy", "Pendulum-v1", buffer_size=100_000, learning_starts=100_000, seed=3)
    model.learn(300)
    return model


def test_checkpoints_every_n_episodes_but_no_sooner_than_the_floor_after_the_last() -> None:
    def taken(every: int, floor: float, ends: list[float]) -> list[int]:
        """The episodes whose end (at the times ``ends``) queues a checkpoint, as the runner asks."""
        last, out = None, []
        for episode, now in enumerate(ends, start=1):
            if checkpoint.due(episode, every, floor, last, now):
                last = now
                out.append(episode)
        return out

    two_seconds_each = [2.0 * e for e in range(1, 101)]  # one-week episodes of PPO: 100 in 200 s
    assert taken(1, 0.0, two_seconds_each) == list(range(1, 101))
    assert taken(1, 60.0, two_seconds_each) == [1, 31, 61, 91]  # the first, then one a minute
    assert taken(5, 60.0, two_seconds_each) == [5, 35, 65, 95]  # due ones only, then the floor
    assert taken(0, 0.0, two_seconds_each) == []
    hours = [3600.0 * e for e in range(1, 4)]  # year-long episodes: the floor changes nothing
    assert taken(1, 60.0, hours) == [1, 2, 3]
    assert checkpoint.due(1, 1, 60.0, None)  # the first, whatever the clock
    assert not checkpoint.due(2, 1, 60.0, time.monotonic())


def test_a_checkpoint_holds_the_filled_rows_and_resumes_at_full_size(tmp_path: Path) -> None:
    from stable_baselines3 import SAC

    model = _sac()
    buffer = model.replay_buffer
    snap = checkpoint.snapshot(model, model.get_env(), episodes=1, normalization=False)
    assert snap.copy_seconds > 0 and snap.timesteps == 300
    compact = snap.replay_buffer
    assert compact.observations.shape[0] == buffer.pos + 1 < buffer.buffer_size
    model.learn(50, reset_num_timesteps=False)  # the learner goes on: the copy is not touched
    assert compact.observations.shape[0] == 301
    path = tmp_path / "replay_buffer.pkl"
    path.write_bytes(pickle.dumps(compact))
    assert path.stat().st_size < buffer.observations.nbytes / 50, "only the filled rows are written"

    restored = SAC.load(io.BytesIO(snap.model_zip()), env=model.get_env())
    assert restored.num_timesteps == 300
    checkpoint.load_replay_buffer(restored, path)
    rb = restored.replay_buffer
    assert rb.observations.shape == buffer.observations.shape and rb.pos == 300
    np.testing.assert_array_equal(rb.observations[:300], buffer.observations[:300])
    np.testing.assert_array_equal(rb.actions[:300], buffer.actions[:300])
    assert not hasattr(rb, checkpoint.COMPACTED)
    restored.learn(100, reset_num_timesteps=False)  # and it trains on
    assert restored.replay_buffer.pos == 400


@pytest.mark.parametrize("algorithm", ["PPO", "SAC", "TD3", "DQN", "TQC", "RecurrentPPO", "CrossQ", "ARS"])
def test_the_checkpoints_copy_writes_the_model_sb3_would_have_saved_then(algorithm: str) -> None:
    """The copy taken at an episode's end, serialized later on the worker while the learner goes on,
    loads as the model ``save`` wrote at that moment: same parameters, optimizer states, attributes."""
    from trainer import registry

    algo = registry.algos()[algorithm]
    env = "CartPole-v1" if algorithm == "DQN" else "Pendulum-v1"
    kwargs: dict[str, Any] = {"seed": 5}
    if algorithm in ("SAC", "TD3", "TQC", "CrossQ", "DQN"):
        kwargs |= {"learning_starts": 50, "buffer_size": 5_000}
    if algorithm in ("PPO", "RecurrentPPO"):
        kwargs |= {"n_steps": 64, "batch_size": 32}
    if algorithm == "TD3":
        from stable_baselines3.common.noise import NormalActionNoise

        kwargs["action_noise"] = NormalActionNoise(np.zeros(1), 0.1 * np.ones(1))
    policy = "MlpLstmPolicy" if algorithm == "RecurrentPPO" else "MlpPolicy"
    model = algo(policy, env, **kwargs)
    model.learn(200)
    steps = model.num_timesteps  # whole rollouts for the on-policy ones
    snap = checkpoint.snapshot(model, model.get_env(), episodes=1, normalization=False)
    assert isinstance(snap.model, checkpoint.ModelCopy), "the copy was taken, not a whole save"
    reference = io.BytesIO()
    model.save(reference)
    model.learn(200, reset_num_timesteps=False)  # the learner goes on before the worker serializes
    copied = algo.load(io.BytesIO(snap.model_zip()))
    saved = algo.load(io.BytesIO(reference.getvalue()))
    assert copied.num_timesteps == saved.num_timesteps == steps < model.num_timesteps
    assert sorted(vars(copied)) == sorted(vars(saved))
    for name, state in saved.get_parameters().items():
        mine = copied.get_parameters()[name]
        flat_saved, flat_mine = _tensors(state), _tensors(mine)
        assert flat_saved.keys() == flat_mine.keys()
        for key, value in flat_saved.items():
            assert np.array_equal(value, flat_mine[key]), f"{name}.{key} differs"
    assert any(not np.array_equal(v, _tensors(model.get_parameters()[n])[k])
               for n, state in saved.get_parameters().items() for k, v in _tensors(state).items()), \
        "the learner changed nothing after the copy: this test would not see a copy that shares its tensors"  # fmt: skip


def _tensors(state: Any, prefix: str = "") -> dict[str, Any]:
    """A state dict's tensors (and numbers), flattened with their paths, as numpy values."""
    import torch

    out: dict[str, Any] = {}
    items = state.items() if isinstance(state, dict) else enumerate(state) if isinstance(state, list) else []
    for key, value in items:
        path = f"{prefix}{key}"
        if isinstance(value, torch.Tensor):
            out[path] = value.detach().cpu().numpy()
        elif isinstance(value, dict | list):
            out |= _tensors(value, path + ".")
        elif isinstance(value, int | float):
            out[path] = np.asarray(value)
    return out


def test_a_full_buffer_is_kept_whole() -> None:
    from gymnasium import spaces
    from stable_baselines3.common.buffers import ReplayBuffer

    rb = ReplayBuffer(8, spaces.Box(-1, 1, (2,)), spaces.Box(-1, 1, (1,)), optimize_memory_usage=True,
                      handle_timeout_termination=False)  # fmt: skip
    for i in range(11):
        obs = np.full((1, 2), i, dtype=np.float32)
        rb.add(obs, obs + 1, np.zeros((1, 1)), np.zeros(1), np.zeros(1), [{}])
    compact = checkpoint.compact_replay_buffer(rb)
    assert compact.observations.shape[0] == 8 and not hasattr(compact, "next_observations")
    again = checkpoint.expand_replay_buffer(pickle.loads(pickle.dumps(compact)))
    np.testing.assert_array_equal(again.observations, rb.observations)


def test_metrics_are_sent_in_batches_from_the_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = mlflow.MlflowClient(tracking_uri=uri)
    run = client.create_run(client.create_experiment("batched"))
    bg = Background()
    metrics = tracking.Metrics(run.info.run_id, bg, tracking_uri=uri)
    calls: list[int] = []
    real = mlflow.MlflowClient.log_batch

    def counting(self: Any, run_id: str, metrics: Any = (), **kwargs: Any) -> Any:
        calls.append(len(metrics))
        return real(self, run_id, metrics=metrics, **kwargs)

    monkeypatch.setattr(mlflow.MlflowClient, "log_batch", counting)
    gate = threading.Event()
    bg.submit("blocker", gate.wait)
    for episode in range(1, 251):
        metrics.log({f"train/m{k}": episode * k for k in range(10)}, episode)
    gate.set()
    assert bg.close(60)
    assert calls == [1000, 1000, 500], "2,500 points waiting: three log_batch calls"
    history = client.get_metric_history(run.info.run_id, "train/m3")
    assert sorted(m.step for m in history) == list(range(1, 251))
    assert metrics.sent == 2500 and metrics.lost == 0


@pytest.mark.parametrize("stop_after", [None, 30])
def test_ars_hands_the_callback_its_episodes_and_stops_when_asked(stop_after: int | None) -> None:
    """sb3-contrib's ARS evaluates its candidates without giving the callback the step's locals and
    ignores its answer; the trainer's ARS does both, as SB3's own loops (CartPole: no EnergyPlus)."""
    import gymnasium as gym
    from stable_baselines3.common.vec_env import DummyVecEnv

    from trainer import registry

    summaries: list[dict[str, float]] = []
    steps = [0]

    def stop() -> bool:
        steps[0] += 1
        return stop_after is not None and steps[0] >= stop_after

    class Ending(EpisodeCallback):
        ends = 0

        def _on_training_end(self) -> None:
            self.ends += 1

    env = DummyVecEnv([lambda: gym.make("CartPole-v1")])
    model = registry.algos()["ARS"]("LinearPolicy", env, n_delta=1, n_top=1, seed=3)
    callback = Ending(summaries.append, stop)
    model.learn(total_timesteps=2000, callback=callback)
    assert callback.ends == 1, "learn ends with on_training_end, stopped or not"
    if stop_after is None:
        assert model.num_timesteps >= 2000
        assert summaries and sum(s["length_timesteps"] for s in summaries) <= model.num_timesteps
        assert all(s["length_timesteps"] >= 1 and s["episode_reward"] == s["length_timesteps"] for s in summaries)
    else:  # stopped at the step that asked, inside a candidate's episode
        assert model.num_timesteps == stop_after == steps[0]
    env.close()


def test_episode_bookkeeping_is_timed_as_the_trainers_pause() -> None:
    clock = PauseClock()
    summaries: list[dict[str, float]] = []

    def on_episode(summary: dict[str, float]) -> None:
        with clock.episode_end():
            time.sleep(0.02)
            with clock.evaluation():
                time.sleep(0.1)
            summaries.append(summary)

    callback = EpisodeCallback(on_episode, lambda: False, clock)
    info = {"total_power_demand": 1000.0, "total_temperature_violation": 0.5, "time_elapsed(hours)": 0.25}
    for step in range(1, 9):
        callback.locals = {"rewards": np.array([-1.0, -3.0]), "dones": np.array([step % 4 == 0] * 2),
                           "infos": [dict(info, **{"time_elapsed(hours)": 0.25 * step})] * 2}  # fmt: skip
        assert callback._on_step()
    assert len(summaries) == 4 and summaries[0]["length_timesteps"] == 4.0
    assert summaries[1]["mean_reward"] == -3.0 and summaries[1]["std_reward"] == 0.0
    assert summaries[0]["comfort_violation_time_pct"] == 100.0
    figures = clock.metrics(learn_seconds=1.0)
    assert 0.08 <= figures["trainer_pause_seconds"] < 0.4, figures  # 4 x 20 ms, evaluation left out
    assert 0.02 <= figures["trainer_pause_longest_seconds"] < 0.1
    assert figures["evaluation_seconds"] >= 0.4
    assert figures["trainer_step_bookkeeping_seconds"] < 0.05


def test_sb3s_tensorboard_points_wait_for_the_worker_and_every_one_reaches_the_event_file(tmp_path: Path) -> None:
    """A2C dumps every iteration (five steps) at log_interval 1: SB3 wrote each point and flushed the
    event file at every dump on the training thread; deferred, the learner only records them, and
    ``write_out`` (the worker's, before each sync and the final one) writes them all, with their times."""
    from stable_baselines3 import A2C
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from trainer import tensorboard_writes

    model = A2C("MlpPolicy", "Pendulum-v1", seed=2, tensorboard_log=str(tmp_path), device="cpu")
    deferred: list[int] = []
    writes: list[int] = []

    def on_start() -> None:
        deferred.append(tensorboard_writes.defer(model))
        writer = tensorboard_writes._tensorboard_outputs(model)[0].writer.writer
        real_add, real_flush = writer.add_scalar, writer.flush
        writer.add_scalar = lambda *a, **k: (writes.append(1), real_add(*a, **k))[1]
        writer.flush = lambda: (writes.append(0), real_flush())[1]

    started = time.time()
    model.learn(500, log_interval=1, callback=EpisodeCallback(lambda s: None, lambda: False, on_start=on_start))
    assert deferred == [1]
    assert writes == [], "nothing written on the training thread: SB3 wrote 100 dumps and flushed each"
    assert tensorboard_writes.write_out(model) > 100 * 4
    assert writes[-1] == 0 and writes.count(0) == 1  # the points, then one flush
    run = next(tmp_path.iterdir())
    points = EventAccumulator(str(run)).Reload().Scalars("time/fps")  # recorded at every dump
    assert len(points) == 100 and points[-1].step == 500
    assert started <= points[0].wall_time <= points[-1].wall_time  # when recorded, not when written
    assert tensorboard_writes.write_out(model) == 0
