"""The trainer against a bare loop, for every algorithm the project accepts, and ``--n-envs`` scaling.

Both are measured the way a VM-hour is spent: the trainer as dispatch starts it on a VM (``python -m
trainer run --spec``: MLflow, TensorBoard synced live, signed checkpoints at the defaults (every
episode, at most one a minute), the heartbeat, the CSV logger, every output uploaded, against the
local cloud's bucket and MLflow server), and the bare loop (``bench/bare.py``) with the same
algorithm, environment, wrappers, hyperparameters and seed, and nothing else.

A segment is ``EPISODES`` one-week episodes in a fresh process: the first episode's checkpoint is
written while the next one trains, as in a run of many episodes. Machine noise (other jobs on a
shared machine, CPU frequency, the page cache) drifts over minutes, so the two are measured in pairs
of segments run back to back, the order alternating from pair to pair (trainer first, then bare
first; an even number of pairs has as many of each), and the figure is the median of the per-pair
ratios, not a ratio of averages. Each segment's steps/s is over ``learn`` only, so process start-up
(imports, EnergyPlus's first start) counts for neither. What the trainer does only once a run ends
is reported apart, beside start-up: the wait for its background worker after ``learn`` (the drain:
the last episode's metrics and a checkpoint still queued, which no training can overlap), the final
model, the upload and verification of every output.

The heartbeat and the TensorBoard sync run every ``upload_seconds`` (5 s here, 30 s on a VM), so
that a segment of a few seconds sees several of them: a stricter test than a VM's.
"""

from __future__ import annotations

import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.figures import (
    REPO,
    WEEK,
    ZONE,
    cpu_seconds,
    events,
    local_cloud,
    row,
    runtime,
    say,
    server_pids,
    wait_for,
)

CONTINUOUS = "Eplus-5zone-hot-continuous-v1"
DISCRETE = "Eplus-5zone-hot-discrete-v1"

# Every algorithm the contracts accept (catalog.ALGORITHM_ACTION_SPACES), with what a one-week
# segment needs: an on-policy rollout shorter than the week, the library's or the trainer's YAML
# defaults otherwise (replay buffers of 1,000,000 transitions included).
ALGORITHMS: dict[str, dict[str, Any]] = {
    "PPO": {"hyperparameters": {"n_steps": 256, "batch_size": 64}},
    "A2C": {},
    "DQN": {"environment": DISCRETE},
    "SAC": {},
    "TD3": {},
    "DDPG": {},
    "TQC": {"algorithm_parameters": {"learning_starts": 100}},
    "RecurrentPPO": {"algorithm_parameters": {"policy": "MlpLstmPolicy", "n_steps": 128, "batch_size": 64}},
    "QRDQN": {"environment": DISCRETE, "algorithm_parameters": {"learning_starts": 100}},
    "TRPO": {"algorithm_parameters": {"n_steps": 256, "batch_size": 64}},
    # CrossQ's default critic (1024 x 1024, batch renormalization, a gradient step every step) learns
    # a few steps a second here: its segments simulate two days.
    "CrossQ": {"algorithm_parameters": {"learning_starts": 100}, "runperiod": (1, 1, 1991, 2, 1, 1991)},
    "ARS": {"algorithm_parameters": {"n_delta": 1, "n_top": 1}},
}
EPISODES = 3  # one-week episodes per segment (CrossQ: two-day ones)
RATIO_GOAL = 0.97
LONGEST_PAUSE_GOAL = 0.2  # seconds
PAUSE_SHARE_GOAL = 1.0  # percent of learn's wall time


def experiment(algorithm: str, **extra: Any) -> Any:
    """The experiment of one segment, configured as a VM runs it."""
    from sinergym_cloud.contracts import Experiment

    fields = {
        "environment": CONTINUOUS,
        "algorithm": algorithm,
        "episodes": EPISODES,
        "seed": 1,
        "runperiod": WEEK,
        "normalization": True,
        "logger": True,
        "tensorboard": "tensorboard_log",
        "remote_store": True,
        "checkpoint_every": 1,
        "log_interval": 1,
        **ALGORITHMS.get(algorithm, {}),
        **extra,
    }
    return Experiment.model_validate(fields)


@dataclass
class Segment:
    kind: str
    timesteps: float
    seconds: float
    metrics: dict[str, float] = field(default_factory=dict)
    load: float = 0.0  # 1-minute load average when it ended
    cpu_seconds: float = float("nan")  # the process's threads' CPU time during learn

    @property
    def steps_per_second(self) -> float:
        return self.timesteps / self.seconds if self.seconds > 0 else float("nan")

    @property
    def cpu_per_step(self) -> float:
        return self.cpu_seconds / self.timesteps if self.timesteps > 0 else float("nan")


def bare_segment(exp: Any) -> Segment:
    """One bare-loop segment, in a fresh process."""
    with tempfile.TemporaryDirectory(prefix="bench-bare-") as work:
        path, result_path = Path(work) / "experiment.json", Path(work) / "result.json"
        path.write_text(exp.model_dump_json())
        out = subprocess.run(
            [sys.executable, "-m", "bench.bare", str(path), str(result_path)],
            cwd=work,
            env={**os.environ, "TQDM_DISABLE": "1", "PYTHONPATH": str(REPO)},
            capture_output=True,
            text=True,
            timeout=1800,
            check=False,
        )
        if out.returncode != 0:
            raise RuntimeError(f"bare {exp.algorithm}: {out.stderr[-3000:]}")
        result = json.loads(result_path.read_text())
    return Segment("bare", float(result["timesteps"]), float(result["seconds"]), load=os.getloadavg()[0],
                   cpu_seconds=float(result.get("cpu_seconds", "nan")))  # fmt: skip


class Trainers:
    """Runs trainer segments against one local cloud, as dispatch runs them on a VM."""

    def __init__(self, env: dict[str, str], upload_seconds: float, cloud: Any = None) -> None:
        from sinergym_cloud import names

        self.env = env
        self.cloud = cloud  # localcloud.cloud.LocalCloud: whose servers' CPU a segment costs
        self.upload_seconds = upload_seconds
        self.rt = runtime(env)
        self.sub = f"projects/{self.rt.settings.project}/subscriptions/bench-completions-{int(time.time())}"
        topic = self.rt.clients.topic_path(names.TOPIC_COMPLETIONS)
        self.rt.clients.subscriber.create_subscription(name=self.sub, topic=topic)

    def segment(self, exp: Any) -> Segment:
        from sinergym_cloud.contracts import TrainerSpec

        batch_id = f"bench-tr-{int(time.time() * 1000)}"
        spec = TrainerSpec(
            project=self.rt.settings.project,
            batch_id=batch_id,
            experiment_index=0,
            experiment_name=f"{exp.algorithm.lower()}-{batch_id}",
            group_name="bench",
            experiment=exp,
            results_bucket=self.rt.settings.results_bucket,
            instance="bench-0",
            zone=ZONE,
            boot_id="bench-1",
            mlflow_experiment="bench-trainer",
            completion_key=secrets.token_hex(32),
            checkpoint_key=secrets.token_hex(32),
        )
        every = str(self.upload_seconds)
        env = {**os.environ, **self.env, "TQDM_DISABLE": "1", "SINERGYM_HEARTBEAT_SECONDS": every,
               "SINERGYM_UPLOAD_SECONDS": every}  # fmt: skip
        with tempfile.TemporaryDirectory(prefix="bench-trainer-") as work:
            path = Path(work) / "spec.json"
            path.write_text(spec.model_dump_json())
            servers = server_pids(self.cloud) if self.cloud is not None else []
            servers_cpu = cpu_seconds(servers)
            started = time.monotonic()
            out = subprocess.run(
                [sys.executable, "-m", "trainer", "run", "--spec", str(path)],
                cwd=work,
                env=env,
                capture_output=True,
                text=True,
                timeout=2400,
                check=False,
            )
            wall = time.monotonic() - started
            servers_cpu = cpu_seconds(servers) - servers_cpu
        if out.returncode != 0:
            raise RuntimeError(f"trainer {exp.algorithm}: {(out.stdout + out.stderr)[-3000:]}")
        metrics = self._completion(batch_id)
        metrics["process_seconds"] = wall
        if servers:
            metrics["servers_cpu_seconds"] = servers_cpu
        learnt = metrics.get("learn_timesteps", metrics.get("timesteps", 0.0))
        cpu = metrics.get("learn_cpu_seconds", float("nan"))
        return Segment("trainer", learnt, metrics["learn_seconds"], metrics, os.getloadavg()[0], cpu)

    def _completion(self, batch_id: str) -> dict[str, float]:
        from sinergym_cloud import contracts
        from sinergym_cloud.contracts import Completion

        subscriber = self.rt.clients.subscriber
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            response = subscriber.pull(request={"subscription": self.sub, "max_messages": 10}, timeout=30)
            for m in response.received_messages:
                subscriber.acknowledge(request={"subscription": self.sub, "ack_ids": [m.ack_id]})
                done = contracts.parse(Completion, m.message.data)
                if done.batch_id == batch_id:
                    if done.status != "succeeded":
                        raise RuntimeError(f"trainer segment {done.status}: {done.exit_reason}")
                    return dict(done.metrics)
        raise TimeoutError(f"no completion from the trainer of {batch_id}")


@dataclass
class Paired:
    """One algorithm's paired segments: (trainer, bare) per pair, in the order they ran."""

    algorithm: str
    pairs: list[tuple[Segment, Segment]] = field(default_factory=list)

    @property
    def ratios(self) -> list[float]:
        return [t.steps_per_second / b.steps_per_second for t, b in self.pairs]

    @property
    def cpu_ratios(self) -> list[float]:
        """Per pair, the bare loop's CPU time a step over the trainer's: the trainer's own work on
        the same scale as the ratio of speeds, without the machine's other jobs (time they take from
        the process is not its CPU time) and without the local cloud's servers (not on a VM)."""
        return [b.cpu_per_step / t.cpu_per_step for t, b in self.pairs]

    def rows(self) -> list[dict[str, Any]]:
        a = self.algorithm
        ratio = statistics.median(self.ratios)
        trainer = statistics.median(t.steps_per_second for t, _ in self.pairs)
        bare = statistics.median(b.steps_per_second for _, b in self.pairs)
        longest = max(t.metrics.get("trainer_pause_longest_seconds", float("nan")) for t, _ in self.pairs)
        share = max(t.metrics.get("trainer_pause_share_pct", float("nan")) for t, _ in self.pairs)
        drain = max(t.metrics.get("drain_seconds", 0.0) for t, _ in self.pairs)
        pauses_ok = longest <= LONGEST_PAUSE_GOAL and share <= PAUSE_SHARE_GOAL
        # The worker's CPU shares the cores and the interpreter lock with training: not a pause of
        # the training thread, but a cost the pauses do not show (the drain's is in it too).
        worker = statistics.median(
            100 * t.metrics.get("background_cpu_seconds", float("nan")) / t.seconds for t, _ in self.pairs
        )
        checkpoints = statistics.median(t.metrics.get("checkpoints", float("nan")) for t, _ in self.pairs)
        # The local cloud's servers (the bucket, MLflow, Pub/Sub) answer the trainer on this machine's
        # cores; on a VM they are Google's. Over the whole trainer process (start-up and end included).
        servers = statistics.median(
            100 * t.metrics.get("servers_cpu_seconds", float("nan")) / t.metrics.get("process_seconds", float("nan"))
            for t, _ in self.pairs
        )
        return [
            row(f"trainer / bare, {a} (median of {len(self.pairs)} pairs)", ratio, "x", f">= {RATIO_GOAL}",
                ratio >= RATIO_GOAL),
            row(f"  {a}: trainer | bare steps/s (medians); per-pair ratios", f"{trainer:.0f} | {bare:.0f}; "
                + ", ".join(f"{r:.3f}" for r in self.ratios), "", "-", None),
            row(f"  {a}: trainer's longest pause | its share of learn | drain after learn",
                f"{longest * 1000:.1f} ms | {share:.2f} % | {drain:.2f} s", "",
                f"<= {LONGEST_PAUSE_GOAL * 1000:.0f} ms | <= {PAUSE_SHARE_GOAL:g} %", pauses_ok),
            row(f"  {a}: the background worker's CPU time, as a share of learn | checkpoints a segment",
                f"{worker:.2f} % | {checkpoints:.0f}", "", "reported", None),
            row(f"  {a}: the local cloud's servers' CPU during the trainer's process (not on a VM), share of one core",
                f"{servers:.1f} %", "", "reported", None),
            row(f"  {a}: by CPU time a step (the bare loop's over the trainer's; median; per pair)",
                f"{statistics.median(self.cpu_ratios):.3f}; " + ", ".join(f"{r:.3f}" for r in self.cpu_ratios), "",
                "reported", None),
        ]  # fmt: skip


def trainer_vs_bare(trainers: Trainers, algorithms: list[str], pairs: int) -> list[Paired]:
    """``pairs`` rounds, each one pair of every algorithm; trainer first in even rounds, bare first
    in odd ones. A noisy minute on a shared machine then touches one pair of several algorithms,
    not every pair of one."""
    results = {a: Paired(a) for a in algorithms}
    for p in range(pairs):
        for algorithm in algorithms:
            exp = experiment(algorithm)
            say(f"trainer vs bare, {algorithm}, pair {p + 1}/{pairs} ({'trainer' if p % 2 == 0 else 'bare'} first)")
            if p % 2 == 0:
                t = trainers.segment(exp)
                b = bare_segment(exp)
            else:
                b = bare_segment(exp)
                t = trainers.segment(exp)
            results[algorithm].pairs.append((t, b))
            say(f"  {algorithm}: trainer {t.steps_per_second:.0f} steps/s, bare {b.steps_per_second:.0f} steps/s, "
                f"ratio {t.steps_per_second / b.steps_per_second:.3f} (load {os.getloadavg()[0]:.1f})")  # fmt: skip
    return list(results.values())


def n_envs_scaling(
    trainers: Trainers, rounds: int, environment: str = CONTINUOUS
) -> tuple[list[dict[str, Any]], dict[int, list[float]]]:
    """PPO at --n-envs 1, 2 and (with 4 cores or more) 4 on ``environment``, each environment
    simulating EPISODES weeks; each round runs every count once, the order rotating, and each
    count's speed-up over --n-envs 1 is taken within its round."""
    cores = os.cpu_count() or 1
    counts = [1, 2] + ([4] if cores >= 4 else [])
    speeds: dict[int, list[float]] = {n: [] for n in counts}
    ups: dict[int, list[float]] = {n: [] for n in counts if n > 1}
    building = environment.removeprefix("Eplus-").split("-")[0]
    for r in range(rounds):
        order = counts[r % len(counts) :] + counts[: r % len(counts)]
        got: dict[int, float] = {}
        for n in order:
            say(f"--n-envs {n} ({building}), round {r + 1}/{rounds}")
            exp = experiment("PPO", n_envs=n, episodes=EPISODES * n, environment=environment)
            got[n] = trainers.segment(exp).steps_per_second
            speeds[n].append(got[n])
        for n, values in ups.items():
            values.append(got[n] / got[1])
    rows = [row(f"--n-envs {n}: trainer steps/s (PPO, {building}, median of {rounds})", statistics.median(v),
                "steps/s", "-", None)
            for n, v in speeds.items()]  # fmt: skip
    for n, values in ups.items():
        goal = 0.9 * n
        up = statistics.median(values)
        rows.append(row(f"--n-envs {n} / --n-envs 1 ({building}, {cores} cores; per round: "
                        + ", ".join(f"{v:.2f}" for v in values) + ")", up, "x",
                        f">= {goal:.1f} ({n} cores)", up >= goal if cores >= n else None))  # fmt: skip
    if cores < 4:
        rows.append(row(f"--n-envs 4 / --n-envs 1 ({building})", "not measured", "",
                        f"needs 4 cores (this machine: {cores})", None))  # fmt: skip
    return rows, speeds


def end_of_run_rows(results: list[Paired]) -> list[dict[str, Any]]:
    """What the trainer spends after learning: the final model, every output uploaded and verified."""
    ends = []
    for p in results:
        for t, _ in p.pairs:
            m = t.metrics
            ends.append(m.get("wall_time_s", 0.0) - m["learn_seconds"])
    if not ends:
        return []
    return [row("trainer's start-up and end of run (MLflow, drain, final outputs uploaded and verified), median",
                statistics.median(ends), "s", "reported", None)]  # fmt: skip


def idle_share(env: dict[str, str]) -> list[dict[str, Any]]:
    """VM alive but not training, for a real two-experiment batch of one-week episodes."""
    from sinergym_cloud import contracts, names
    from sinergym_cloud.contracts import Batch, Experiment
    from sinergym_cloud.publisher import report

    say("idle VM share of a real batch")
    rt = runtime(env)
    experiment = Experiment.model_validate(
        {
            "environment": "Eplus-5zone-hot-continuous-v1",
            "episodes": 2,
            "runperiod": WEEK,
            "hyperparameters": {"n_steps": 256},
        }
    )
    batch = Batch(batch_id=f"bench-idle-{int(time.time())}", experiments=[experiment, experiment])
    rt.clients.publish(names.TOPIC_BATCHES, contracts.dump(batch))
    mig = names.mig_name(batch.group_name, batch.batch_id)
    since = time.time() - 5
    wait_for(
        lambda: any(e["kind"] == "mig.delete" and e.get("mig") == mig for e in events(env, since)), 600, "the batch"
    )
    _, rows = report.gather(rt, batch.batch_id)
    vm = sum(r.vm_hours or 0 for r in rows)
    idle = sum(r.idle_hours or 0 for r in rows)
    share = 100 * idle / vm if vm else float("nan")
    return [
        row("VM-hours of a 2-experiment batch (2 one-week episodes each)", vm, "h", "-", None),
        row("idle VM share (boot, dispatch, upload, deletion)", share, "%", "reported (falls as runs grow)", None),
    ]


def trainer(
    *,
    quick: bool = False,
    algorithms: list[str] | None = None,
    pairs: int | None = None,
    rounds: int | None = None,
    upload_seconds: float = 5.0,
    n_envs_environments: list[str] | None = None,
) -> list[dict[str, Any]]:
    """The trainer's figures: trainer / bare per algorithm, --n-envs scaling, the idle VM share."""
    algorithms = algorithms or (["PPO", "SAC"] if quick else list(ALGORITHMS))
    unknown = [a for a in algorithms if a not in ALGORITHMS]
    if unknown:
        raise SystemExit(f"unknown algorithm(s) {', '.join(unknown)}; known: {', '.join(ALGORITHMS)}")
    for environment in n_envs_environments or []:
        try:  # an unknown environment is refused now, not after an hour of pairs
            experiment("PPO", environment=environment)
        except ValueError as error:
            raise SystemExit(f"--n-envs-environments: {error}") from None
    pairs = pairs or (1 if quick else 4)
    rounds = rounds if rounds is not None else (1 if quick else 3)
    load = os.getloadavg()
    rows: list[dict[str, Any]] = []
    with local_cloud() as (cloud, env):
        trainers = Trainers(env, upload_seconds, cloud)
        results = trainer_vs_bare(trainers, algorithms, pairs)
        for paired in results:
            rows += paired.rows()
        rows += end_of_run_rows(results)
        if rounds:
            for environment in n_envs_environments or [CONTINUOUS]:
                rows += n_envs_scaling(trainers, rounds, environment)[0]
        if not quick:
            rows += idle_share(env)
    details = {
        "pairs": {p.algorithm: [[vars(t), vars(b)] for t, b in p.pairs] for p in results},
        "upload_seconds": upload_seconds,
    }
    out = REPO / "bench-results"
    out.mkdir(exist_ok=True)
    (out / "trainer-segments.json").write_text(json.dumps(details, indent=1, default=str))
    after = os.getloadavg()
    rows.append(row("load average (1, 5, 15 min) at the start | at the end of the trainer figures",
                    f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f} | {after[0]:.2f} {after[1]:.2f} {after[2]:.2f}",
                    "", "quiet: below 0.5", None))  # fmt: skip
    return rows
