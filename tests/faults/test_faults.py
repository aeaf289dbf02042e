"""Fault injection on the local cloud: duplicates, hostile input, killed trainers, preemption, SSH
and Compute faults, crashes between steps. Every scenario ends with leaks and losses counted."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import mlflow
import pytest

from sinergym_cloud import contracts, names
from sinergym_cloud.contracts import Batch
from sinergym_cloud.control import batches, cleanup, dispatch, launch, sweeper
from sinergym_cloud.gcp import ssh
from sinergym_cloud.gcp.clients import Clients
from sinergym_cloud.gcp.compute import ComputeApi
from tests.conftest import Cloud, wait_for
from tests.control_helpers import (
    QUIET_TEMPLATE,
    ZONE,
    batch_status,
    completion,
    deliver,
    ensure_quiet_template,
    make_batch,
    mig_events,
    ppo,
    publish_batch,
    publish_completion,
    quiet_ready,
    signed,
    start_boot,
    wait_batch,
)
from tests.faults.conftest import leaks, lost_outputs, runs

pytestmark = pytest.mark.faults


def _sweep_until_done(cloud: Cloud, batch_id: str, timeout: float, **settings: Any) -> dict[str, Any]:
    """Run the sweeper (the scheduled function's code) on this batch until it is over."""
    rt = cloud.runtime(**settings)

    def done() -> dict[str, Any] | None:
        sweeper.sweep(rt, only={batch_id})
        info = batch_status(rt, batch_id)
        return info if info and info["done"] and info["status"] in ("finished", "failed", "cancelled") else None

    return wait_for(done, timeout, f"batch {batch_id} swept to its end", every=1.0)


def _trainer_pids(home: str) -> list[int]:
    out = subprocess.run(["pgrep", "-f", f"trainer run --spec {home}"], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


# --------------------------------------------------------------------------- duplicates
@pytest.mark.slow
def test_every_message_three_times_gives_the_same_end_state(cloud: Cloud, record: Any) -> None:
    ensure_quiet_template(cloud)
    rt = cloud.runtime()
    since = time.time()
    batch = make_batch(ppo(remote_store=True), template=QUIET_TEMPLATE)
    for _ in range(3):
        publish_batch(rt, batch)
    launched = wait_batch(rt, batch.batch_id, 60, until="launched")
    instance = launched["experiments"][0]["instance"]
    ready = quiet_ready(cloud, instance)
    for _ in range(3):
        rt.clients.publish(names.TOPIC_READY, contracts.dump(ready))
    done = wait_batch(rt, batch.batch_id, 300)
    assert done["experiments"][0]["state"] == "succeeded"
    end = json.dumps(done["experiments"][0]["metrics"], sort_keys=True)
    mig = names.mig_name(batch.group_name, batch.batch_id)
    counts = {
        k: len(mig_events(cloud, mig, since, k))
        for k in ("mig.insert", "mig.createInstances", "mig.deleteInstances", "mig.delete")
    }
    # Now everything again, out of order: the completion, the ready message, the batch.
    final = completion(rt, batch.batch_id, 0, boot_id=ready.boot_id)
    for message, topic in [
        (final, names.TOPIC_COMPLETIONS),
        (ready, names.TOPIC_READY),
        (batch, names.TOPIC_BATCHES),
    ] * 3:
        rt.clients.publish(topic, contracts.dump(message))
    time.sleep(5)
    again = batch_status(rt, batch.batch_id)
    assert again is not None and again["experiments"][0]["state"] == "succeeded"
    assert json.dumps(again["experiments"][0]["metrics"], sort_keys=True) == end
    assert {k: len(mig_events(cloud, mig, since, k)) for k in counts} == counts == {
        "mig.insert": 1, "mig.createInstances": 1, "mig.deleteInstances": 1, "mig.delete": 1,
    }  # fmt: skip
    alerts = [a for a in cloud.alerts() if a["incident"]["metric"]["labels"].get("batch_id") == batch.batch_id]
    assert len(alerts) == 1
    li, lm = leaks(cloud, [batch])
    record("every message 3x, then out of order", Counter({"same end state": 1}), li, lm, lost_outputs(cloud, again))
    assert (li, lm) == (0, 0)


@pytest.mark.gce  # lifecycle: also run under Google's timings (make test-gce)
def test_completion_before_ready_is_refused(cloud: Cloud, record: Any) -> None:
    """A completion for a boot nobody dispatched (out of order, or forged) changes nothing; the
    ready message that follows still starts the trainer."""
    ensure_quiet_template(cloud)
    rt = cloud.runtime()
    batch = make_batch(ppo(episodes=5), template=QUIET_TEMPLATE)
    launch.launch(rt, batch)
    instance = names.instance_name(batch.group_name, batch.batch_id, 0)
    ready = quiet_ready(cloud, instance)
    early = completion(rt, batch.batch_id, 0, "failed", boot_id=ready.boot_id)
    with pytest.raises(cleanup.Refused, match="no boot of it is running"):
        deliver(rt, early, key=None)
    before = batch_status(rt, batch.batch_id)["experiments"][0]  # type: ignore[index] - the batch exists here
    assert (before["state"], before["failures"], before["attempts"]) == ("pending", 0, 0)
    assert dispatch.dispatch(rt, ready) == "trainer started"
    with pytest.raises(cleanup.Refused, match="not signed"):
        deliver(rt, early, key=None)  # the same, now that a boot runs: unsigned
    assert batch_status(rt, batch.batch_id)["experiments"][0]["state"] == "running"  # type: ignore[index] - the batch exists here
    batches.cancel(rt, batch.batch_id)
    wait_for(lambda: leaks(cloud, [batch]) == (0, 0), 60, "nothing left")
    record("completion before ready (out of order)", Counter({"refused, then dispatched": 1}), *leaks(cloud, [batch]))


# ----------------------------------------------------------------------- hostile input
def _hostile_batches() -> list[tuple[str, bytes]]:
    good = {"batch_id": "ok-batch", "experiments": [{"environment": "Eplus-5zone-hot-continuous-v1"}]}

    def with_(**fields: Any) -> bytes:
        return json.dumps({**good, **fields}).encode()

    def exp(**fields: Any) -> bytes:
        return json.dumps({**good, "experiments": [{**good["experiments"][0], **fields}]}).encode()

    cases: list[tuple[str, bytes]] = [
        ("empty", b""),
        ("not json", b"{{{"),
        ("truncated json", b'{"batch_id": "x", "experiments": ['),
        ("json array", b"[1, 2, 3]"),
        ("json string", b'"batch"'),
        ("json null", b"null"),
        ("non-utf8", b"\xff\xfe\xfd{}"),
        ("latin-1 text", '{"batch_id": "caf\u00e9"}'.encode("latin-1")),
        ("schema version 0", with_(schema_version=0)),
        ("schema version 5 (not yet)", with_(schema_version=5)),
        ("schema version string", with_(schema_version="1")),
        ("no experiments", with_(experiments=[])),
        ("experiments null", with_(experiments=None)),
        ("experiments object", with_(experiments={"a": 1})),
        ("unknown field", with_(extra_field=1)),
        ("unknown environment", exp(environment="Eplus-office-v9")),
        ("unknown algorithm", exp(algorithm="REINFORCE")),
        ("lowercase algorithm", exp(algorithm="ppo")),
        ("negative episodes", exp(episodes=-3)),
        ("zero episodes", exp(episodes=0)),
        ("huge episodes", exp(episodes=10**9)),
        ("float episodes", exp(episodes=1.5)),
        ("negative seed", exp(seed=-1)),
        ("huge seed", exp(seed=2**64)),
        ("bad runperiod", exp(runperiod=[31, 2, 1991, 1, 3, 1991])),
        ("reversed runperiod", exp(runperiod=[7, 1, 1991, 1, 1, 1991])),
        ("short runperiod", exp(runperiod=[1, 1, 1991])),
        ("unknown reward", exp(reward="money")),
        ("hyperparameter for other algorithm", exp(hyperparameters={"buffer_size": 10})),
        ("unknown hyperparameter", exp(hyperparameters={"warp_factor": 9})),
        ("negative learning rate", exp(hyperparameters={"learning_rate": -1})),
        ("DQN on continuous", exp(algorithm="DQN")),
        ("n_envs for SAC", exp(algorithm="SAC", n_envs=4)),
        ("too many experiments", with_(experiments=[good["experiments"][0]] * (contracts.MAX_EXPERIMENTS + 1))),
        ("oversized message", with_(submitted_by="x" * (contracts.MAX_MESSAGE_BYTES + 10))),
        ("oversized batch id", with_(batch_id="b" * 100)),
        ("oversized environment", exp(environment="E" * 10_000)),
        ("oversized tensorboard", exp(tensorboard="a/" * 400)),
        ("tensorboard parent dir", exp(tensorboard="../../etc")),
        ("uppercase group", with_(group_name="Sinergym")),
        ("long group", with_(group_name="g" * 41)),
        ("bad zone", with_(zone="moon-base-1")),
        ("bad bucket", with_(results_bucket="UPPER_case")),
        ("bool as episodes", exp(episodes=True)),
    ]
    shell = ["; rm -rf /", "&& curl x", "| sh", "`id`", "$(id)", "> /etc/passwd", "\nreboot", "' OR 1=1 --"]
    string_fields = [
        ("batch_id", lambda v: with_(batch_id=f"ok{v}")),
        ("group_name", lambda v: with_(group_name=f"g{v}")),
        ("zone", lambda v: with_(zone=f"europe-west1-b{v}")),
        ("template_name", lambda v: with_(template_name=f"t{v}")),
        ("results_bucket", lambda v: with_(results_bucket=f"bucket{v}")),
        ("submitted_by", lambda v: with_(submitted_by=f"me{v}")),
        ("environment", lambda v: exp(environment=f"Eplus-5zone-hot-continuous-v1{v}")),
        ("reward", lambda v: exp(reward=f"linear{v}")),
        ("tensorboard", lambda v: exp(tensorboard=f"./tb{v}")),
        ("algorithm", lambda v: exp(algorithm=f"PPO{v}")),
    ]
    for i, (field, make) in enumerate(string_fields):
        cases.append((f"shell metacharacters in {field}", make(shell[i % len(shell)])))
    return cases


def test_hostile_batches_are_dead_lettered_and_create_nothing(cloud: Cloud, record: Any) -> None:
    rt = cloud.runtime()
    cases = _hostile_batches()
    assert len(cases) >= 50
    cloud.dead_letters(names.TOPIC_BATCHES, wait=0)
    since = time.time()
    for n, (_, data) in enumerate(cases):
        rt.clients.publish(names.TOPIC_BATCHES, data, case=str(n))
    letters: dict[str, dict[str, Any]] = {}

    def collect() -> bool:
        for m in cloud.dead_letters(names.TOPIC_BATCHES, wait=0.5):
            letters[m["attributes"].get("case", "?")] = m
        return len(letters) >= len(cases)

    wait_for(collect, 120, f"{len(cases)} dead letters")
    outcomes: Counter[str] = Counter()
    for n, (label, data) in enumerate(cases):
        letter = letters[str(n)]
        assert letter["data"] == data, label
        assert letter["attributes"]["dead_letter_reason"], label
        outcomes["rejected with a reason"] += 1
    assert cloud.events(since, "mig.insert") == [] and cloud.events(since, "mig.createInstances") == []
    record("hostile or malformed batches", outcomes)


# ---------------------------------------------------------------- trainers killed
@pytest.mark.slow
def test_trainers_killed_at_random_points_end_failed_or_retried(cloud: Cloud, record: Any) -> None:
    rt = cloud.runtime()
    total = runs(fast=3, full=20)
    rng = random.Random(20261125)
    outcomes: Counter[str] = Counter()
    batches: list[Batch] = []
    lost = 0
    done_runs = 0
    wave = 0
    while done_runs < total:
        size = min(2, total - done_runs)
        budget = wave % 2  # every other wave may retry once (resuming from the checkpoint)
        batch = make_batch(*(ppo(seed=done_runs + i, episodes=2, remote_store=True) for i in range(size)))
        batches.append(batch)
        publish_batch(rt, batch)
        info = wait_batch(rt, batch.batch_id, 120, until="running")
        for e in info["experiments"]:
            home = cloud.instances()[f"{ZONE}/{e['instance']}"]["home"]
            pids = wait_for(lambda h=home: _trainer_pids(h), 60, "the trainer process")
            time.sleep(rng.uniform(0.0, 6.0))  # a random point: imports, EnergyPlus start-up, training
            for pid in pids:
                subprocess.run(["kill", "-9", str(pid)], check=False)
        final = _sweep_until_done(cloud, batch.batch_id, 400, heartbeat_timeout=6, max_failures=budget)
        for e in final["experiments"]:
            assert e["state"] in ("failed", "succeeded"), e
            retried = e["failures"] > 0 and e["state"] == "succeeded"
            outcomes["retried, then succeeded" if retried else e["state"]] += 1
        wait_for(lambda b=batch: leaks(cloud, [b]) == (0, 0), 60, "nothing left after the sweeper")
        lost += lost_outputs(cloud, final)
        done_runs += size
        wave += 1
    leaked_i, leaked_m = leaks(cloud, batches)
    record("trainer SIGKILLed at a random point", outcomes, leaked_i, leaked_m, lost)
    assert (leaked_i, leaked_m, lost) == (0, 0, 0)


# ---------------------------------------------------------------------- preemption
@pytest.mark.slow
@pytest.mark.gce  # lifecycle: also run under Google's timings (make test-gce)
def test_preempted_experiment_resumes_on_the_recreated_vm(cloud: Cloud, record: Any) -> None:
    rt = cloud.runtime()
    cloud.emulator("config", {"preempt_grace": 20.0})
    batch = make_batch(ppo(seed=7, episodes=3, remote_store=True, checkpoint_every=1))
    publish_batch(rt, batch)
    info = wait_batch(rt, batch.batch_id, 120, until="running")
    e = info["experiments"][0]
    bucket = rt.clients.storage.bucket(rt.settings.results_bucket)
    meta = names.checkpoint_prefix(batch.batch_id, e["name"]) + "meta.json"
    wait_for(lambda: bucket.get_blob(meta) is not None, 180, "the first checkpoint")
    first_boot = cloud.instances()[f"{ZONE}/{e['instance']}"]["boot_id"]
    cloud.emulator(f"projects/local-project/zones/{ZONE}/instances/{e['instance']}/preempt", {})
    final = wait_batch(rt, batch.batch_id, 420)
    e = final["experiments"][0]
    assert e["state"] == "succeeded", e
    assert e["preemptions"] == 1 and e["attempts"] == 2
    events = [h["event"] for h in e["history"]]
    assert "completion:preempted" in events and events[-1] == "completion:succeeded"
    client = mlflow.MlflowClient(tracking_uri=cloud.env["MLFLOW_TRACKING_URI"])
    steps = [m.step for m in client.get_metric_history(e["mlflow_run_id"], "train/mean_reward")]
    assert steps == [1, 2, 3], "one continuous history"
    boots = {x["boot_id"] for x in cloud.events(0, "vm.running") if x["instance"] == e["instance"]}
    assert first_boot in boots and len(boots) == 2
    # Both VMs are counted in the cost, each from its own creation time.
    stored = rt.state.read(names.experiment_object(batch.batch_id, 0))
    assert stored is not None and set(stored.data["vm_created"]) == boots
    assert stored.data["vm_created"][first_boot] == min(stored.data["vm_created"].values())
    li, lm = leaks(cloud, [batch])
    lost = lost_outputs(cloud, final)
    record("spot preemption (SIGTERM, recreate, resume)", Counter({"resumed, then succeeded": 1}), li, lm, lost)
    assert (li, lm, lost) == (0, 0, 0)


# ------------------------------------------------------------ concurrent completions
@pytest.mark.gce  # lifecycle: also run under Google's timings (make test-gce)
def test_last_ten_completions_at_once_delete_the_group_once(cloud: Cloud, record: Any) -> None:
    ensure_quiet_template(cloud)
    rt = cloud.runtime()
    outcomes: Counter[str] = Counter()
    batches = []
    for _ in range(runs(fast=1, full=5)):
        since = time.time()
        batch = make_batch(*(ppo(seed=i) for i in range(10)), template=QUIET_TEMPLATE)
        batches.append(batch)
        launch.launch(rt, batch)
        keys = [start_boot(rt, batch.batch_id, i, boot_id="b") for i in range(10)]
        messages = [signed(completion(rt, batch.batch_id, i, boot_id="b"), keys[i]) for i in range(10)]
        barrier = threading.Barrier(10)

        def send(message: tuple[bytes, dict[str, str]], barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            rt.clients.publish(names.TOPIC_COMPLETIONS, message[0], **message[1])

        threads = [threading.Thread(target=send, args=(m,)) for m in messages]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wait_batch(rt, batch.batch_id, 120)
        mig = names.mig_name(batch.group_name, batch.batch_id)
        wait_for(lambda m=mig: f"{ZONE}/{m}" not in cloud.migs(), 60, "group deleted")
        deletes = len(mig_events(cloud, mig, since, "mig.delete"))
        alerts = len([a for a in cloud.alerts() if a["incident"]["metric"]["labels"].get("batch_id") == batch.batch_id])
        outcomes[
            "group deleted once, one alert" if (deletes, alerts) == (1, 1) else f"deleted {deletes}x, {alerts} alerts"
        ] += 1
        assert (deletes, alerts) == (1, 1)
    record("last 10 completions delivered at once", outcomes, *leaks(cloud, batches))


# --------------------------------------------------------------------------- SSH faults
@pytest.mark.slow
def test_dispatch_under_ssh_faults(cloud: Cloud, record: Any) -> None:
    ensure_quiet_template(cloud)
    rt = cloud.runtime(call_deadline=3.0)
    outcomes: Counter[str] = Counter()
    batch = make_batch(ppo(episodes=5), ppo(seed=2, episodes=5), template=QUIET_TEMPLATE)
    launch.launch(rt, batch)
    slow_vm, dead_vm = (names.instance_name(batch.group_name, batch.batch_id, i) for i in range(2))
    slow_ready, dead_ready = quiet_ready(cloud, slow_vm), quiet_ready(cloud, dead_vm)

    def sshd_pid(instance: str) -> int:
        home = Path(cloud.instances()[f"{ZONE}/{instance}"]["home"])
        return int((home / "sshd.pid").read_text())

    # sshd slow to answer (stopped for 4 s): dispatch retries with backoff and gets through.
    os.kill(sshd_pid(slow_vm), signal.SIGSTOP)
    threading.Timer(4.0, os.kill, args=(sshd_pid(slow_vm), signal.SIGCONT)).start()
    started = time.monotonic()
    assert dispatch.dispatch(rt, slow_ready) == "trainer started"
    assert time.monotonic() - started >= 3.5
    outcomes["sshd slow: retried, then started"] += 1
    # The VM's sshd now shows another host key than its guest attributes hold: refused before
    # authentication, nothing claimed (the key is rotated on the VM's disk, and sshd re-reads it).
    home = Path(cloud.instances()[f"{ZONE}/{dead_vm}"]["home"])
    for f in (home / "ssh_host_ed25519_key", home / "ssh_host_ed25519_key.pub"):
        f.unlink()
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(home / "ssh_host_ed25519_key")], check=True
    )
    dead_sshd = sshd_pid(dead_vm)  # the same process after SIGHUP (sshd re-executes itself)
    os.kill(dead_sshd, signal.SIGHUP)
    wait_for(lambda: _host_key_served(home), 20, "sshd serving the rotated key")
    assert dispatch.dispatch(rt, dead_ready) == "refused: host key mismatch"
    mismatched = batch_status(rt, batch.batch_id)["experiments"][1]  # type: ignore[index] - the batch exists here
    assert (mismatched["state"], mismatched["attempts"]) == ("pending", 0)
    assert any(h["event"] == "host-key-mismatch" for h in mismatched["history"])
    outcomes["host key changed: refused"] += 1
    # sshd gone: dispatch gives up within its deadline and fails, so Pub/Sub redelivers later.
    os.kill(dead_sshd, signal.SIGKILL)
    with pytest.raises(ssh.TRANSIENT):
        dispatch.dispatch(rt, dead_ready)
    assert batch_status(rt, batch.batch_id)["experiments"][1]["state"] == "pending"  # type: ignore[index] - the batch exists here
    outcomes["SSH refused: failed for redelivery"] += 1
    batches.cancel(rt, batch.batch_id)
    wait_for(lambda: leaks(cloud, [batch]) == (0, 0), 60, "nothing left")
    record("SSH refused / host key changed / sshd slow", outcomes, *leaks(cloud, [batch]))


def _host_key_served(home: Path) -> bool:
    """True once the VM's sshd answers with the host key now on the VM's disk."""
    port = int(
        next(line.split()[1] for line in (home / "sshd_config").read_text().splitlines() if line.startswith("Port "))
    )
    scanned = subprocess.run(
        ["ssh-keyscan", "-t", "ed25519", "-p", str(port), "127.0.0.1"], capture_output=True, text=True
    )
    wanted = (home / "ssh_host_ed25519_key.pub").read_text().split()[1]
    return wanted in scanned.stdout


# ------------------------------------------------------------- crash between two steps
@pytest.mark.gce  # lifecycle: also run under Google's timings (make test-gce)
def test_function_crash_between_steps_is_finished_by_redelivery(cloud: Cloud, record: Any) -> None:
    ensure_quiet_template(cloud)
    rt = cloud.runtime()
    outcomes: Counter[str] = Counter()
    # launch: the group is created, then createInstances fails twice; Pub/Sub redelivers.
    since = time.time()
    cloud.emulator(
        "faults",
        {"method": "instanceGroupManagers.createInstances", "code": 500, "reason": "backendError", "times": 40},
    )
    batch = make_batch(ppo(), template=QUIET_TEMPLATE)
    publish_batch(rt, batch)
    mig = names.mig_name(batch.group_name, batch.batch_id)
    wait_for(lambda: mig_events(cloud, mig, since, "mig.insert"), 60, "the group")
    cloud.emulator("faults", {"clear": True})
    wait_batch(rt, batch.batch_id, 120, until="launched")
    assert len(mig_events(cloud, mig, since, "mig.insert")) == 1
    assert len(mig_events(cloud, mig, since, "mig.createInstances")) == 1
    outcomes["launch: finished by redelivery"] += 1
    # cleanup: the VM is removed, then the group delete fails; the redelivery finishes the teardown.
    cloud.emulator(
        "faults", {"method": "instanceGroupManagers.delete", "code": 503, "reason": "backendError", "times": 40}
    )
    key = start_boot(rt, batch.batch_id, 0, boot_id="b")
    publish_completion(rt, completion(rt, batch.batch_id, 0, boot_id="b"), key)
    wait_for(
        lambda: [e for e in cloud.events(since, "fault") if e["method"] == "instanceGroupManagers.delete"],
        60,
        "the injected crash",
    )
    cloud.emulator("faults", {"clear": True})
    wait_for(lambda: f"{ZONE}/{mig}" not in cloud.migs(), 120, "the group deleted by a redelivery")
    wait_batch(rt, batch.batch_id, 60)
    assert len(mig_events(cloud, mig, since, "mig.delete")) == 1
    assert len([a for a in cloud.alerts() if a["incident"]["metric"]["labels"].get("batch_id") == batch.batch_id]) == 1
    outcomes["cleanup: finished by redelivery"] += 1
    record("function crash between two steps", outcomes, *leaks(cloud, [batch]))


# ---------------------------------------------------------------------- Compute errors
@pytest.mark.gce  # lifecycle: also run under Google's timings (make test-gce)
def test_quota_exceeded_on_launch_rolls_back_after_the_retry_budget(cloud: Cloud, record: Any) -> None:
    ensure_quiet_template(cloud)
    rt = cloud.runtime()
    cloud.emulator("faults", {"method": "instanceGroupManagers.createInstances", "code": 403, "reason": "quotaExceeded",
                              "message": "Quota 'INSTANCES' exceeded. Limit: 0.0 in region europe-west1.", "times": 100})  # fmt: skip
    batch = make_batch(ppo(), ppo(seed=3), template=QUIET_TEMPLATE)
    publish_batch(rt, batch)
    info = wait_for(
        lambda: (i := batch_status(rt, batch.batch_id)) and i["status"] == "failed" and i["done"] and i, 180, "rollback"
    )
    cloud.emulator("faults", {"clear": True})
    assert "Quota" in info["error"] and all(e["state"] == "failed" for e in info["experiments"])
    wait_for(lambda: leaks(cloud, [batch]) == (0, 0), 60, "no half-created batch")
    wait_for(
        lambda: [a for a in cloud.alerts() if a["incident"]["metric"]["labels"].get("batch_id") == batch.batch_id],
        30,
        "the batch alert",
    )
    record("quota exceeded on createInstances", Counter({"rolled back, reported": 1}), *leaks(cloud, [batch]))


@pytest.mark.gce  # lifecycle: also run under Google's timings (make test-gce)
def test_transient_5xx_are_retried_with_backoff(cloud: Cloud, record: Any) -> None:
    ensure_quiet_template(cloud)
    rt = cloud.runtime()
    since = time.time()
    for method in ("instanceGroupManagers.insert", "instanceGroupManagers.createInstances"):
        cloud.emulator("faults", {"method": method, "code": 503, "reason": "backendError", "times": 2})
    batch = make_batch(ppo(), template=QUIET_TEMPLATE)
    launch.launch(rt, batch)  # retried inside the call: no redelivery needed
    assert len(cloud.events(since, "fault")) == 4
    assert wait_batch(rt, batch.batch_id, 10, until="launched")
    batches.cancel(rt, batch.batch_id)
    wait_for(lambda: leaks(cloud, [batch]) == (0, 0), 60, "nothing left")
    record("Compute 503 on insert and createInstances", Counter({"retried, launched": 1}), *leaks(cloud, [batch]))


@pytest.mark.gce  # lifecycle: also run under Google's timings (make test-gce)
def test_zone_exhausted_vms_that_never_come_are_given_up_cleanly(cloud: Cloud, record: Any) -> None:
    ensure_quiet_template(cloud)
    rt = cloud.runtime()
    cloud.emulator("config", {"zone_exhausted": True})
    batch = make_batch(ppo(), template=QUIET_TEMPLATE)
    launch.launch(rt, batch)
    member = wait_for(
        lambda: (
            (m := rt.compute.members(ZONE, names.mig_name(batch.group_name, batch.batch_id))) and m[0].errors and m[0]
        ),
        30,
        "the creation error on the member",
    )
    assert "ZONE_RESOURCE_POOL_EXHAUSTED" in member.errors[0]
    info = _sweep_until_done(cloud, batch.batch_id, 120, boot_timeout=2, max_preemptions=1)
    cloud.emulator("config", {"zone_exhausted": False})
    e = info["experiments"][0]
    assert e["state"] == "failed" and "ZONE_RESOURCE_POOL_EXHAUSTED" in e["reason"] and e["preemptions"] == 2
    wait_for(lambda: leaks(cloud, [batch]) == (0, 0), 60, "nothing left")
    record("zone resource pool exhausted", Counter({"retried, then failed with the reason": 1}), *leaks(cloud, [batch]))


@pytest.mark.gce  # lifecycle: also run under Google's timings (make test-gce)
def test_stalled_launch_is_rolled_back_by_the_sweeper(cloud: Cloud, record: Any) -> None:
    ensure_quiet_template(cloud)
    rt = cloud.runtime()
    batch = make_batch(ppo(), template=QUIET_TEMPLATE)
    # A launch that died after accepting the batch, and whose message Pub/Sub gave up on.
    from sinergym_cloud.records import LaunchRecord

    record_ = LaunchRecord(
        batch_id=batch.batch_id, group=batch.group_name, zone=batch.zone, template=batch.template_name,
        results_bucket=rt.settings.results_bucket, migs=[names.mig_name(batch.group_name, batch.batch_id)],
        experiments=1, mlflow_experiment="x", created_at=time.time() - 3600,
    )  # fmt: skip
    rt.state.create(names.batch_object(batch.batch_id), {"batch": batch.model_dump(mode="json")})
    rt.state.create(names.launch_object(batch.batch_id), record_.doc())
    rt.state.put(names.active_object(batch.batch_id), {})
    info = _sweep_until_done(cloud, batch.batch_id, 60, boot_timeout=60)
    assert info["status"] == "failed" and "did not complete" in info["error"]
    record("launch stalled (message given up)", Counter({"rolled back by the sweeper": 1}), *leaks(cloud, [batch]))


# ------------------------------------------------------------------------ security
@pytest.mark.slow
def test_no_secret_in_logs_messages_state_or_metadata(cloud: Cloud, record: Any) -> None:
    """After a real batch: the dispatch key appears nowhere but its own file."""
    rt = cloud.runtime()
    batch = make_batch(ppo(remote_store=True))
    publish_batch(rt, batch)
    info = wait_batch(rt, batch.batch_id, 300)
    key_text = cloud.local.ssh_key.read_text()
    secret_lines = [line for line in key_text.splitlines() if line and not line.startswith("-----")]
    control_secret = cloud.local.control_secret.read_text().strip()
    needles = [*secret_lines, "PRIVATE KEY", control_secret]
    haystacks: list[tuple[str, str]] = []
    # Files of the local cloud (logs, VM homes, MLflow's database and artifacts), read as bytes.
    for path in cloud.local.dir.rglob("*"):
        # The dispatch key's and the secret's own files, and a VM's own SSH host keys (a private key
        # of the VM, which a VM of an earlier test may still have on its disk).
        own_file = path in (cloud.local.ssh_key, cloud.local.control_secret) or (
            path.name.startswith("ssh_host_") and path.name.endswith("_key") and "vms" in path.parts
        )
        readable = path.is_file() and not own_file and path.suffix not in (".zip", ".pkl")
        if readable and "gcs" not in path.parts and path.stat().st_size < 20_000_000:
            haystacks.append((str(path), path.read_bytes().decode(errors="replace")))
    # The state bucket, and every output of this batch in the results bucket.
    for blob in rt.clients.storage.list_blobs(rt.settings.state_bucket):
        haystacks.append((f"gs://state/{blob.name}", blob.download_as_bytes().decode(errors="replace")))
    results = list(rt.clients.storage.list_blobs(rt.settings.results_bucket, prefix=f"{batch.batch_id}/"))
    for blob in results:
        if not blob.name.endswith((".zip", ".pkl")):
            haystacks.append((f"gs://results/{blob.name}", blob.download_as_bytes().decode(errors="replace")))
    # The instance template's metadata (what every VM is given) and the messages' history.
    template = rt.clients.templates.get(project=rt.settings.project, instance_template=batch.template_name)
    metadata = {item.key: item.value for item in template.properties.metadata.items}
    haystacks.append(("instance template metadata", json.dumps(metadata)))
    instance = info["experiments"][0]["instance"]
    haystacks.append(("completion history", json.dumps(info)))
    assert any(name.startswith("gs://results/") for name, _ in haystacks), "the batch's outputs were searched"
    for name, text in haystacks:
        for needle in needles:
            assert needle not in text, f"secret material in {name}"
    # Every object the trainer wrote is under its experiment's prefix.
    prefix = names.results_prefix(batch.batch_id, info["experiments"][0]["name"])
    written = [b.name for b in rt.clients.storage.list_blobs(rt.settings.results_bucket, prefix=f"{batch.batch_id}/")]
    assert written and all(n.startswith(prefix) for n in written)
    record(
        "secrets in logs/state/messages; trainer writes outside its prefix",
        Counter({f"none found ({len(haystacks)} files and objects, {instance})": 1}),
        *leaks(cloud, [batch]),
    )


@pytest.mark.gce  # lifecycle: also run under Google's timings (make test-gce)
def test_orphan_groups_are_found_in_compute_and_deleted(cloud: Cloud, record: Any) -> None:
    """Groups that outlived their batch (a cancel racing launch, lost state) are found by listing Compute."""
    ensure_quiet_template(cloud)
    rt = cloud.runtime()
    # A cancelled batch whose group came back: launch created it after the cancel's teardown.
    over = make_batch(ppo(), template=QUIET_TEMPLATE)
    launch.launch(rt, over)
    batches.cancel(rt, over.batch_id)
    mig_over = names.mig_name(over.group_name, over.batch_id)
    wait_for(lambda: not rt.compute.group_exists(ZONE, mig_over), 30, "the cancelled batch's group gone")
    rt.compute.ensure_group(ZONE, mig_over, QUIET_TEMPLATE, batch_id=over.batch_id)
    rt.compute.create_instances(ZONE, mig_over, {names.instance_name(over.group_name, over.batch_id, 0): {}})
    # A group of a batch there is no record of at all.
    unknown = make_batch(ppo(), template=QUIET_TEMPLATE)
    mig_unknown = names.mig_name(unknown.group_name, unknown.batch_id)
    rt.compute.ensure_group(ZONE, mig_unknown, QUIET_TEMPLATE, batch_id=unknown.batch_id)
    # A live batch, whose group must be left alone.
    live = make_batch(ppo(), template=QUIET_TEMPLATE)
    launch.launch(rt, live)
    mig_live = names.mig_name(live.group_name, live.batch_id)
    # A group of another deployment (another state bucket) in the same project and zone: not ours.
    other = make_batch(ppo(), template=QUIET_TEMPLATE)
    mig_other = names.mig_name(other.group_name, other.batch_id)
    other_settings = dataclasses.replace(rt.settings, state_bucket="another-deployment-state")
    ComputeApi(Clients(other_settings), rt.settings.project).ensure_group(
        ZONE, mig_other, QUIET_TEMPLATE, batch_id=other.batch_id
    )
    ids = {over.batch_id, unknown.batch_id, live.batch_id, other.batch_id}
    assert sweeper.sweep(rt, only=ids)["orphans"] == [], "younger than the grace period: left alone"
    report = sweeper.sweep(rt, only=ids, orphan_grace=0)
    assert sorted(report["orphans"]) == sorted(
        [f"{ZONE}/{mig_over}: its batch is over", f"{ZONE}/{mig_unknown}: no record of its batch"]
    )
    wait_for(lambda: leaks(cloud, [over, unknown]) == (0, 0), 60, "the orphans and their VMs gone")
    assert rt.compute.group_exists(ZONE, mig_live)
    assert rt.compute.group_exists(ZONE, mig_other)
    batches.cancel(rt, live.batch_id)
    rt.compute.delete_group(ZONE, mig_other)
    wait_for(lambda: leaks(cloud, [over, unknown, live, other]) == (0, 0), 60, "nothing left")
    record(
        "orphan groups (batch over, batch unknown) beside a live one and another deployment's",
        Counter({"orphan found in Compute and deleted": 2, "live group kept": 1, "other deployment's kept": 1}),
        *leaks(cloud, [over, unknown, live, other]),
    )


@pytest.mark.gce  # lifecycle: also run under Google's timings (make test-gce)
def test_a_vanished_group_is_recreated_and_the_experiment_retried(cloud: Cloud, record: Any) -> None:
    ensure_quiet_template(cloud)
    rt = cloud.runtime()
    batch = make_batch(ppo(), template=QUIET_TEMPLATE)
    launch.launch(rt, batch)
    mig = names.mig_name(batch.group_name, batch.batch_id)
    rt.compute.delete_group(ZONE, mig)  # lost behind the control plane's back
    # A sweep right away leaves it alone (its VM may still be on its way: asked for moments ago);
    # one after the functions' call deadline finds it vanished.
    assert sweeper.sweep(cloud.runtime(max_preemptions=1), only={batch.batch_id})["retried"] == []
    later = time.time() + rt.settings.call_deadline + 1
    report = sweeper.sweep(cloud.runtime(max_preemptions=1), now=later, only={batch.batch_id})
    assert len(report["retried"]) == 1 and "vanished" in report["retried"][0]
    members = wait_for(lambda: rt.compute.members(ZONE, mig), 30, "the group made again")
    assert [m.name for m in members] == [names.instance_name(batch.group_name, batch.batch_id, 0)]
    info = batch_status(rt, batch.batch_id)
    assert info is not None and info["experiments"][0]["preemptions"] == 1
    batches.cancel(rt, batch.batch_id)
    wait_for(lambda: leaks(cloud, [batch]) == (0, 0), 60, "nothing left")
    record(
        "instance group deleted behind our back",
        Counter({"group and VM made again, retried": 1}),
        *leaks(cloud, [batch]),
    )
