"""A TPE sweep with a median pruner, end to end on the local cloud: real Pub/Sub, functions and VMs.

The trainer is bench.workload (SINERGYM_TRAINER_MODULE), whose objective per episode is scripted,
so the test knows which trials the pruner must stop. Every message the workload sends (progress
reports and completions) is published twice.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from rich.console import Console

from localcloud.cloud import Options
from sinergym_cloud import contracts, names, sweep
from sinergym_cloud.contracts import Batch, Experiment
from sinergym_cloud.control import sweep_runs, sweeps
from sinergym_cloud.publisher import render, report, sweep_view, views
from tests.conftest import Cloud, new_batch_id, own_cloud, wait_for

# A bad trial runs twice as many episodes as a good one: if its pruning were late (progress reports
# queue behind each other at the emulator's two push loops on a loaded machine), it still has 9 s
# of episodes left after the report that decides it, instead of 3.
GOOD, BAD = [1.0] * 4, [0.0] * 8
SCRIPT = {"0": GOOD, "1": GOOD, "2": GOOD, "3": BAD, "4": GOOD, "5": BAD, "6": BAD, "7": GOOD}
MUST_BE_PRUNED = {3, 5, 6}  # trials 0 and 1 complete first; a bad trial starts only after one of them ended


@pytest.fixture(scope="module")
def workload_cloud() -> Iterator[Cloud]:
    workload = {
        "SINERGYM_TRAINER_MODULE": "bench.workload",
        "BENCH_OBJECTIVE": json.dumps(SCRIPT),
        "BENCH_EPISODE_SECONDS": "1.5",
        "BENCH_DUPLICATE": "1",
    }
    options = Options(port_base=0, sweep_interval=0)
    with own_cloud(Path(tempfile.mkdtemp(prefix="sweep-cloud-")), workload, options) as cloud:
        yield cloud


def test_a_tpe_sweep_prunes_the_bad_trials_gives_their_vms_back_and_runs_exactly_8(
    workload_cloud: Cloud, tmp_path: Path
) -> None:
    cloud = workload_cloud
    rt = cloud.runtime()
    base = Experiment(environment="Eplus-5zone-hot-continuous-v1", episodes=4, evaluation=True, eval_freq=1,
                      eval_length=1, runperiod=(1, 1, 1991, 7, 1, 1991))  # fmt: skip
    section = {
        "method": "tpe",
        "trials": 8,
        "max_parallel": 2,
        "seed": 11,
        "objective": {"metric": "best_eval_mean_reward", "direction": "maximize"},
        "pruner": {"name": "median", "min_episodes": 2, "min_trials": 1},
        "parameters": {
            "hyperparameters.learning_rate": {"loguniform": [1e-5, 1e-2]},
            "hyperparameters.gamma": {"uniform": [0.9, 0.999]},
        },
    }
    batch = Batch.model_validate({"batch_id": new_batch_id("sweep"), "experiments": [base], "sweep": section})
    rt.clients.publish(names.TOPIC_BATCHES, contracts.dump(batch))
    bid = batch.batch_id

    def finished() -> bool:
        info = views.batch_status(rt, bid, with_compute=False, with_alerts=False)
        return info.done and len(info.experiments) == 8

    wait_for(lambda: rt.state.read(names.launch_object(bid)) is not None, 60, "launch")
    wait_for(finished, 300, "all 8 trials ended", every=1.0)
    recs = sweeps.records(rt, bid)
    assert [r.index for r in recs] == list(range(8)), "exactly 8 trials"
    pruned = {r.index for r in recs if r.state == "pruned"}
    states = {r.index: (r.state, r.intermediate, r.reason) for r in recs}
    assert pruned == MUST_BE_PRUNED, str(states)  # a string: pytest would shorten the dict's repr
    assert {r.state for r in recs if r.index not in pruned} == {"succeeded"}
    for r in recs:
        assert r.attempts == 1, f"experiment {r.index} ran {r.attempts} times"
        assert r.params is not None and set(r.params) == set(section["parameters"])  # type: ignore[arg-type]
        assert r.spec.hyperparameters.learning_rate == r.params["hyperparameters.learning_rate"]
    # Each trial was proposed once (create-only proposals), and each ending started one trial.
    proposals = [n for n, _, _ in rt.state.listing(f"{names.batch_prefix(bid)}trials/")]
    assert len(proposals) == 8
    starters = [r.started_by for r in recs if r.started_by != "launch"]
    assert len(starters) == 6 and len(set(starters)) == 6
    # The same seed proposes the same first trials (nothing had ended when they were proposed).
    assert batch.sweep is not None
    for r in recs[:2]:
        assert r.params == sweep.propose(batch.sweep, r.index, [])[0]
    # A pruned trial stops at min_episodes, and its VM is removed at the decision, not when it would have ended.
    for r in recs:
        if r.index in pruned:
            # Decided on episode 2's report, or on episode 3's where the two were handled at once:
            # reports are pushed by two loops to function instances that scale out, so on a loaded
            # machine episode 3's handler can end the trial before episode 2's gets there. Either
            # way the trial stops before its fourth of eight episodes.
            assert r.reason in {"pruned after episode 2", "pruned after episode 3"}, (r.reason, r.intermediate)
            assert {"1", "2"} <= set(r.intermediate) <= {"1", "2", "3"}
            assert r.delete_requested_at is not None and r.finished_at is not None
            assert r.delete_requested_at - r.finished_at < 5.0
    deleted = {i for e in cloud.events(0, "mig.deleteInstances") for i in e.get("instances", [])}
    assert {r.instance for r in recs if r.index in pruned} <= deleted
    ours = {r.instance for r in recs}
    wait_for(lambda: not ours & {k.split("/", 1)[1] for k in cloud.instances()}, 60, "VMs gone")
    # The status and `best` show the sweep.
    info = sweep_view.status_of(rt, bid, recs)
    assert info is not None and info["pruned"] == 3
    assert info["best"] and set(info["best"]) <= {0, 1, 2, 4, 7}
    assert info["vm_hours_saved_by_pruning"] > 0
    code, text = sweep_view.best_command(rt, bid)
    assert code == 0 and "learning_rate" in text and "seeds:" in text
    console = Console(record=True, width=160)
    render.render_status(views.batch_status(rt, bid, with_compute=False, with_alerts=False), console)
    shown = console.export_text()
    assert "Sweep (tpe)" in shown and "3 trial(s) pruned" in shown and "pruned" in shown
    page = report.write(rt, bid, tmp_path).read_text()
    assert 'id="sweep"' in page and page.count('<td class="state pruned">') >= 3
    assert (tmp_path / "sweep.png").stat().st_size > 1000
    # One MLflow parent run for the sweep, made once by launch.
    parent = sweep_runs.parent_run_id(rt, bid)
    assert parent is not None
    run = mlflow.MlflowClient(tracking_uri=cloud.env["MLFLOW_TRACKING_URI"]).get_run(parent)
    assert (run.info.run_name, run.data.params["method"], run.data.params["trials"]) == (f"sweep-{bid}", "tpe", "8")
    mig = f"{batch.zone}/{names.mig_name(batch.group_name, bid)}"
    wait_for(lambda: mig not in cloud.migs(), 60, "the batch's group deleted")


def test_concurrent_starts_of_a_queued_trial_propose_it_once(workload_cloud: Cloud) -> None:
    import threading

    from sinergym_cloud.control import batches, launch
    from sinergym_cloud.records import ExperimentRecord

    rt = workload_cloud.runtime()
    base = Experiment(environment="Eplus-5zone-hot-continuous-v1", episodes=1, runperiod=(1, 1, 1991, 7, 1, 1991))
    section = {"method": "tpe", "trials": 3, "max_parallel": 1, "seed": 5, "objective": {},
               "parameters": {"hyperparameters.gamma": {"uniform": [0.9, 0.999]}}}  # fmt: skip
    batch = Batch.model_validate({"batch_id": new_batch_id("sweep"), "experiments": [base], "sweep": section})
    launch.launch(rt, batch)
    bid = batch.batch_id
    queued = rt.state.read(names.experiment_object(bid, 2))
    assert queued is not None and queued.data["state"] == "queued" and queued.data["params"] is None
    rec = ExperimentRecord.model_validate(queued.data)
    got: list[ExperimentRecord] = []
    barrier = threading.Barrier(4)

    def start() -> None:
        barrier.wait()
        got.append(sweeps.ensure_params(rt, rec))

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 4 and len({json.dumps(g.params, sort_keys=True) for g in got}) == 1
    stored = rt.state.read(names.trial_object(bid, 2))
    assert stored is not None and stored.data["params"] == got[0].params
    after = rt.state.read(names.experiment_object(bid, 2))
    assert after is not None and after.data["params"] == got[0].params
    assert after.data["spec"]["hyperparameters"]["gamma"] == got[0].params["hyperparameters.gamma"]  # type: ignore[index]
    batches.cancel(rt, bid)


def test_a_proposed_trial_that_is_no_valid_experiment_fails_and_gives_its_slot_on(workload_cloud: Cloud) -> None:
    rt = workload_cloud.runtime()
    base = Experiment(environment="Eplus-5zone-hot-continuous-v1", episodes=1, runperiod=(1, 1, 1991, 7, 1, 1991))
    # Each value is valid alone; n_steps with SAC is not (n_steps is PPO's and A2C's).
    section = {"method": "random", "trials": 6, "max_parallel": 2, "seed": 3,
               "parameters": {"algorithm": {"choice": ["PPO", "SAC"]}, "hyperparameters.n_steps": {"int": [64, 128]}}}  # fmt: skip
    batch = Batch.model_validate({"batch_id": new_batch_id("sweep"), "experiments": [base], "sweep": section})
    planned = sweep.plan(Batch.model_validate(batch.model_dump()).sweep)  # type: ignore[arg-type]
    assert planned is not None and {p["algorithm"] for p in planned} == {"PPO", "SAC"}, "the seed gives both"
    # A random sweep is planned whole: launch refuses a planned point that is no valid experiment.
    with pytest.raises(ValueError, match="n_steps"):
        sweep.expand(batch)
    tpe = {**section, "method": "tpe", "objective": {}}
    batch = Batch.model_validate({"batch_id": new_batch_id("sweep"), "experiments": [base], "sweep": tpe})
    rt.clients.publish(names.TOPIC_BATCHES, contracts.dump(batch))
    bid = batch.batch_id
    wait_for(lambda: rt.state.read(names.launch_object(bid)) is not None, 60, "launch")
    wait_for(lambda: views.batch_status(rt, bid, with_compute=False, with_alerts=False).done, 300, "the sweep ended",
             every=1.0)  # fmt: skip
    recs = sweeps.records(rt, bid)
    assert len(recs) == 6 and all(r.params is not None for r in recs)
    for r in recs:
        assert r.params is not None
        if r.params["algorithm"] == "SAC":
            assert (r.state, r.attempts) == ("failed", 0) and "n_steps" in r.reason
        else:
            assert r.state == "succeeded"
    assert any(r.state == "failed" for r in recs) and any(r.state == "succeeded" for r in recs)
