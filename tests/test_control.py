"""The control plane on the local cloud: launch, dispatch, cleanup, cancel, and their invariants."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import mlflow
import pytest

from sinergym_cloud import contracts, names
from sinergym_cloud.contracts import Batch
from sinergym_cloud.control import batches, cleanup, dispatch, launch
from sinergym_cloud.errors import BadMessage, Permanent
from tests.conftest import REPO, Cloud, new_batch_id, wait_for
from tests.control_helpers import (
    QUIET_TEMPLATE,
    ZONE,
    batch_status,
    completion,
    deliver,
    dqn,
    ensure_quiet_template,
    make_batch,
    mig_events,
    ppo,
    publish_batch,
    publish_completion,
    quiet_ready,
    start_boot,
    wait_batch,
)
from trainer import storage


@pytest.fixture(scope="module")
def finished_batch(cloud: Cloud) -> tuple[Batch, dict[str, Any], float]:
    """A real two-experiment batch (PPO and DQN, real EnergyPlus), run to the end once per module."""
    rt = cloud.runtime()
    since = time.time()
    batch = make_batch(
        ppo(seed=11, remote_store=True, logger=True),
        ppo(seed=13, remote_store=True),
        dqn(seed=12, remote_store=True),
    )
    publish_batch(rt, batch)
    return batch, wait_batch(rt, batch.batch_id, timeout=600), since


@pytest.mark.slow
def test_batch_end_to_end_with_real_trainers(cloud: Cloud, finished_batch: tuple[Batch, dict[str, Any], float]) -> None:
    rt = cloud.runtime()
    batch, info, since = finished_batch
    assert [e["state"] for e in info["experiments"]] == ["succeeded"] * 3, info
    mig = names.mig_name(batch.group_name, batch.batch_id)
    # The group is gone, and each VM was removed through it before the group was deleted.
    assert f"{ZONE}/{mig}" not in cloud.migs()
    deletes = mig_events(cloud, mig, since, "mig.deleteInstances")
    assert sorted(i for e in deletes for i in e["instances"]) == sorted(e["instance"] for e in info["experiments"])
    assert len(mig_events(cloud, mig, since, "mig.delete")) == 1
    assert max(e["t"] for e in deletes) <= mig_events(cloud, mig, since, "mig.delete")[0]["t"]
    assert not [k for k in cloud.instances() if k.startswith(f"{ZONE}/{mig}-")]
    # MLflow has one run per experiment, with parameters, versions, metrics and the model.
    client = mlflow.MlflowClient(tracking_uri=cloud.env["MLFLOW_TRACKING_URI"])
    for e in info["experiments"]:
        run = client.get_run(e["mlflow_run_id"])
        assert run.info.status == "FINISHED"
        assert run.data.params["env"] == e["environment"]
        assert run.data.params["energyplus-version"].startswith("25.")
        assert "sinergym-version" in run.data.params
        assert len(client.get_metric_history(run.info.run_id, "train/mean_reward")) == 1
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "models")}
        assert "models/model.zip" in artifacts
        # Every output is in the bucket and matches its manifest, and was there before the completion.
        bucket = rt.clients.storage.bucket(rt.settings.results_bucket)
        prefix = names.results_prefix(batch.batch_id, e["name"])
        assert storage.verify_manifest(bucket, prefix) == []
        assert bucket.get_blob(prefix + "models/model.zip") is not None
        assert e["outputs"][0] == f"gs://{rt.settings.results_bucket}/{prefix}"
        events = [h["event"] for h in e["history"]]
        assert events.index("completion:succeeded") > events.index("trainer")
    # On-call staff got one alert for the batch, with the counts.
    alerts = [a for a in cloud.alerts() if a["incident"]["metric"]["labels"].get("batch_id") == batch.batch_id]
    assert len(alerts) == 1
    assert alerts[0]["incident"]["metric"]["labels"]["succeeded"] == "3"


@pytest.fixture(scope="module")
def batch_report(cloud: Cloud, finished_batch: tuple[Batch, dict[str, Any], float], tmp_path_factory: Any) -> Path:
    """``publisher.py report`` of the finished batch: the folder it wrote into."""
    batch, _, _ = finished_batch
    out = tmp_path_factory.mktemp("report")
    result = subprocess.run(
        [sys.executable, "publisher.py", "report", batch.batch_id, "--out", str(out)],
        cwd=REPO, env={**os.environ, **cloud.env}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert str((out / "report.html").resolve()) in result.stdout
    return out


@pytest.mark.slow
def test_report_of_the_batch(
    cloud: Cloud, finished_batch: tuple[Batch, dict[str, Any], float], batch_report: Path
) -> None:
    import base64
    import re

    batch, _, _ = finished_batch
    assert (batch_report / "learning_curves.png").stat().st_size > 10_000
    data = json.loads((batch_report / "report.json").read_text())
    ppo_rows = [e for e in data["experiments"] if e["algorithm"] == "PPO"]
    assert len(ppo_rows) == 2 and all(e["curve"] for e in ppo_rows)
    assert data["vm_hours"] > 0 and 0 <= data["idle_hours"] <= data["vm_hours"]
    # VM-hours come from each VM's own creation time (Compute Engine's), recorded at its completion.
    rt = cloud.runtime()
    for e in data["experiments"]:
        rec = rt.state.read(names.experiment_object(batch.batch_id, e["index"]))
        assert rec is not None and len(rec.data["vm_created"]) == 1, rec
        (created,) = rec.data["vm_created"].values()
        assert rec.data["created_at"] < created < rec.data["running_at"]
        assert e["vm_hours"] == pytest.approx((rec.data["delete_requested_at"] - created) / 3600)
    html = (batch_report / "report.html").read_text()
    for encoded in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", html):
        assert base64.b64decode(encoded).startswith(b"\x89PNG")


@pytest.mark.slow
@pytest.mark.needs("chromium")
def test_report_of_the_batch_renders_in_a_real_browser(cloud: Cloud, batch_report: Path, tmp_path: Path) -> None:
    import re

    from tests.external import chromium

    browser = chromium()
    assert browser is not None
    page = batch_report / "report.html"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'chrome'}"]  # fmt: skip
    dom = subprocess.run([browser, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    rows = re.findall(r"<tr><td>(\d+)</td>", dom.stdout)
    assert rows == ["0", "1", "2"]
    assert dom.stdout.count('src="data:image/png;base64,') == 2
    assert "VM-hours" in dom.stdout and "succeeded" in dom.stdout
    assert f'<a href="{cloud.env["MLFLOW_TRACKING_URI"].rstrip("/")}/#/experiments/' in dom.stdout
    shot = tmp_path / "shot.png"
    subprocess.run([browser, *flags, f"--screenshot={shot}", "--window-size=1300,1600", page.as_uri()],
                   capture_output=True, timeout=120)  # fmt: skip
    assert shot.stat().st_size > 20_000


def test_bad_batches_are_dead_lettered_and_create_nothing(cloud: Cloud) -> None:
    rt = cloud.runtime()
    since = time.time()
    cloud.dead_letters(names.TOPIC_BATCHES, wait=0)  # drain
    bad = [
        b"not json",
        b'{"batch_id": "ok-id", "experiments": [{"environment": "Eplus-nope-v1"}]}',
        b'{"schema_version": 9, "batch_id": "ok-id", "experiments": [{"environment": "Eplus-5zone-hot-continuous-v1"}]}',
        json.dumps(
            {"batch_id": "x; rm -rf /", "experiments": [{"environment": "Eplus-5zone-hot-continuous-v1"}]}
        ).encode(),
    ]
    for data in bad:
        rt.clients.publish(names.TOPIC_BATCHES, data)
    letters: list[dict[str, object]] = []

    def collect() -> bool:
        letters.extend(cloud.dead_letters(names.TOPIC_BATCHES, wait=0.5))
        return len(letters) >= len(bad)

    wait_for(collect, 30, "4 dead letters")
    reasons = sorted(str(m["attributes"]["dead_letter_reason"]) for m in letters)  # type: ignore[index] - dead letters are plain dicts
    assert any("not JSON" in r for r in reasons)
    assert any("unknown Sinergym environment" in r for r in reasons)
    assert any("schema_version 9" in r for r in reasons)
    assert any("batch_id" in r for r in reasons)
    assert cloud.events(since, "mig.insert") == []


def test_missing_template_is_permanent_and_creates_nothing(cloud: Cloud) -> None:
    rt = cloud.runtime()
    since = time.time()
    batch = make_batch(ppo(), template="no-such-template")
    with pytest.raises(Permanent, match="does not exist"):
        launch.launch(rt, batch)
    assert cloud.events(since, "mig.insert") == []
    assert rt.state.read(names.launch_object(batch.batch_id)) is None


def test_same_batch_twice_makes_one_group(cloud: Cloud) -> None:
    ensure_quiet_template(cloud)
    rt = cloud.runtime()
    since = time.time()
    batch = make_batch(ppo(), ppo(seed=2), template=QUIET_TEMPLATE)
    publish_batch(rt, batch)
    publish_batch(rt, batch)
    threads = [threading.Thread(target=launch.launch, args=(rt, batch)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # The publisher refuses to resubmit an existing id, and says so.
    env = {**os.environ, **cloud.env}
    again = subprocess.run(
        [sys.executable, "publisher.py", "--batch-id", batch.batch_id, "-cmds",
         "python3 DRL_battery.py --environment Eplus-5zone-hot-continuous-v1"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert again.returncode == 0 and "already exists" in again.stdout
    info = wait_batch(rt, batch.batch_id, 60, until="launched")
    mig = names.mig_name(batch.group_name, batch.batch_id)
    wait_for(lambda: len(cloud.migs().get(f"{ZONE}/{mig}", [])) == 2, 30, "two instances")
    assert len([e for e in cloud.events(since, "mig.insert") if e["mig"] == mig]) == 1
    created = [i for e in mig_events(cloud, mig, since, "mig.createInstances") for i in e["instances"]]
    assert sorted(created) == sorted(e["instance"] for e in info["experiments"])
    batches.cancel(rt, batch.batch_id)


def test_two_last_completions_together_delete_the_group_once(cloud: Cloud) -> None:
    ensure_quiet_template(cloud)
    rt = cloud.runtime()
    since = time.time()
    batch = make_batch(ppo(), ppo(seed=2), template=QUIET_TEMPLATE)
    launch.launch(rt, batch)
    mig = names.mig_name(batch.group_name, batch.batch_id)
    keys = [start_boot(rt, batch.batch_id, i, boot_id="b") for i in range(2)]
    messages = [completion(rt, batch.batch_id, i, boot_id="b") for i in range(2)]
    threads = [
        threading.Thread(target=publish_completion, args=(rt, m, k)) for m, k in zip(messages, keys, strict=True)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    info = wait_batch(rt, batch.batch_id, 60)
    assert info["status"] == "finished"
    wait_for(lambda: f"{ZONE}/{mig}" not in cloud.migs(), 30, "group deleted")
    assert len(mig_events(cloud, mig, since, "mig.delete")) == 1
    alerts = [a for a in cloud.alerts() if a["incident"]["metric"]["labels"].get("batch_id") == batch.batch_id]
    assert len(alerts) == 1


def test_duplicate_and_stale_completions_change_nothing(cloud: Cloud) -> None:
    ensure_quiet_template(cloud)
    rt = cloud.runtime()
    batch = make_batch(ppo(), template=QUIET_TEMPLATE)
    launch.launch(rt, batch)
    key = start_boot(rt, batch.batch_id, 0, boot_id="b")
    done = completion(rt, batch.batch_id, 0, boot_id="b")
    first = deliver(rt, done, key, owner="m1")
    since = time.time()
    again = deliver(rt, done, key, owner="m1")
    late_failure = deliver(rt, completion(rt, batch.batch_id, 0, "failed", boot_id="b"), key, owner="m2")
    assert first.state == again.state == late_failure.state == "succeeded"
    with pytest.raises(cleanup.Refused, match="boot stale is not the running boot b"):
        deliver(rt, completion(rt, batch.batch_id, 0, "failed", boot_id="stale"), key, owner="m3")
    mig = names.mig_name(batch.group_name, batch.batch_id)
    assert mig_events(cloud, mig, since, "mig.deleteInstances") == []
    assert mig_events(cloud, mig, since, "mig.delete") == []


def _programs_under(home: str) -> list[list[str]]:
    """The module and first argument of each Python process started with a spec under ``home``."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue  # ended meanwhile
        if argv[1:2] == ["-m"] and any(a.startswith(f"{home}/") for a in argv):
            found.append(argv[2:4])
    return sorted(found)


@pytest.mark.slow
def test_dispatch_is_idempotent_and_verifies_the_host_key(cloud: Cloud) -> None:
    ensure_quiet_template(cloud)
    rt = cloud.runtime()
    batch = make_batch(ppo(episodes=3), template=QUIET_TEMPLATE)
    launch.launch(rt, batch)
    instance = names.instance_name(batch.group_name, batch.batch_id, 0)
    ready = quiet_ready(cloud, instance)
    # A forged or stale message (a boot that is not this instance's) is refused before anything runs.
    forged = ready.model_copy(update={"host_key_fingerprint": "SHA256:" + "B" * 43, "boot_id": "forged-boot"})
    with pytest.raises(BadMessage, match="is not a boot of instance"):
        dispatch.dispatch(rt, forged)
    record = batch_status(rt, batch.batch_id)["experiments"][0]  # type: ignore[index] - the batch exists here
    assert record["state"] == "pending" and record["attempts"] == 0
    # The same ready message delivered three times, two of them at once: one trainer.
    outcomes: list[str] = []
    threads = [threading.Thread(target=lambda: outcomes.append(dispatch.dispatch(rt, ready))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    outcomes.append(dispatch.dispatch(rt, ready))
    assert outcomes.count("trainer started") == 1, outcomes
    home = cloud.instances()[f"{ZONE}/{instance}"]["home"]
    pid_files = list((__import__("pathlib").Path(home) / "experiments").glob("*/trainer.pid"))
    assert len(pid_files) == 1
    # One trainer under one log shipper (whose command line holds the trainer's after "--").
    assert _programs_under(home) == [["sinergym_cloud.vm.logship", "--spec"], ["trainer", "run"]]
    batches.cancel(rt, batch.batch_id)


@pytest.mark.slow
def test_cancel_of_a_running_batch_leaves_nothing_behind(cloud: Cloud) -> None:
    rt = cloud.runtime()
    batch = make_batch(ppo(episodes=20))
    publish_batch(rt, batch)
    info = wait_batch(rt, batch.batch_id, 120, until="running")
    instance = info["experiments"][0]["instance"]
    vm = cloud.instances()[f"{ZONE}/{instance}"]
    env = {**os.environ, **cloud.env}
    result = subprocess.run(
        [sys.executable, "publisher.py", "cancel", batch.batch_id],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "cancelled 1 experiment" in result.stdout
    mig = names.mig_name(batch.group_name, batch.batch_id)
    wait_for(lambda: f"{ZONE}/{instance}" not in cloud.instances(), 60, "VM gone")
    assert f"{ZONE}/{mig}" not in cloud.migs()
    from localcloud import procs

    assert procs.start_time(vm["pid"]) is None or procs.is_zombie(vm["pid"])
    assert subprocess.run(["pgrep", "-f", f"trainer run --spec {vm['home']}"], capture_output=True).returncode == 1
    final = batch_status(rt, batch.batch_id)
    assert final is not None and final["status"] == "cancelled"
    assert final["experiments"][0]["state"] == "cancelled"
    # The trainer's SIGTERM completion ("preempted") arrives after the cancel and changes nothing.
    time.sleep(3)
    assert batch_status(rt, batch.batch_id)["experiments"][0]["state"] == "cancelled"  # type: ignore[index] - the batch exists here


def test_launch_function_through_functions_framework(cloud: Cloud, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real functions-framework app: bad input acknowledged (200), transient errors retried (500)."""
    import base64

    from functions_framework import create_app

    from sinergym_cloud.gcp import runtime

    for key, value in cloud.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("SINERGYM_CALL_DEADLINE", "2")
    runtime.get.cache_clear()
    app = create_app("launch", str(REPO / "functions" / "launch" / "main.py"), "cloudevent").test_client()

    def post(data: bytes, message_id: str) -> int:
        event = {
            "specversion": "1.0",
            "type": "google.cloud.pubsub.topic.v1.messagePublished",
            "source": f"//pubsub.googleapis.com/projects/local-project/topics/{names.TOPIC_BATCHES}",
            "id": message_id,
            "datacontenttype": "application/json",
            "data": {"message": {"data": base64.b64encode(data).decode(), "messageId": message_id}},
        }
        return int(app.post("/", json=event, headers={"Content-Type": "application/cloudevents+json"}).status_code)

    assert post(b"{broken", "m-1") == 200
    ensure_quiet_template(cloud)
    batch = make_batch(ppo(), template=QUIET_TEMPLATE)
    cloud.emulator(
        "faults", {"method": "instanceGroupManagers.insert", "code": 503, "reason": "backendError", "times": 50}
    )
    assert post(contracts.dump(batch), "m-2") == 500  # transient: Pub/Sub redelivers
    cloud.emulator("faults", {"clear": True})
    assert post(contracts.dump(batch), "m-2") == 200  # the redelivery finishes the work
    rt = cloud.runtime()
    assert wait_batch(rt, batch.batch_id, 30, until="launched")["status"] == "running"
    batches.cancel(rt, batch.batch_id)
    runtime.get.cache_clear()


def test_batch_without_id_gets_one_from_the_message(cloud: Cloud) -> None:
    ensure_quiet_template(cloud)
    rt = cloud.runtime()
    body = {"template_name": QUIET_TEMPLATE, "experiments": [ppo().model_dump(mode="json", exclude_none=True)]}
    message_id = rt.clients.publish(names.TOPIC_BATCHES, json.dumps(body).encode())
    batch_id = f"msg-{message_id}"
    info = wait_batch(rt, batch_id, 30, until="launched")
    assert info["experiments"][0]["instance"] == names.instance_name("sinergym-group", batch_id, 0)
    batches.cancel(rt, batch_id)


@pytest.mark.gce  # also run under Google's timings (make test-gce)
def test_publisher_seed_example_verbatim_on_the_local_cloud(cloud: Cloud) -> None:
    """The original documentation's command, word for word, with the local cloud's environment sourced."""
    env = {**os.environ, **cloud.env}
    batch_id = new_batch_id("seed")
    command = [
        sys.executable, "publisher.py",
        "--project_id", "sinergym",
        "--zone", "europe-west1-b",
        "--template_name", "sinergym-template",
        "--group_name", "sinergym-group",
        "--experiment_commands",
        "python3 DRL_battery.py --environment Eplus-5Zone-hot-discrete-v1 --episodes 2 --algorithm DQN --logger "
        "--log_interval 1 --seed 58 --evaluation --eval_freq 1 --eval_length 1 --tensorboard ./tensorboard_log "
        "--remote_store",
        "python3 DRL_battery.py --environment Eplus-5Zone-hot-continuous-v1 --episodes 3 --algorithm PPO --logger "
        "--log_interval 300 --seed 52 --evaluation --eval_freq 1 --eval_length 1 --tensorboard ./tensorboard_log "
        "--remote_store",
        "--batch-id", batch_id,
    ]  # fmt: skip
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"batch {batch_id}: 2 experiment(s) submitted" in result.stdout
    rt = cloud.runtime()
    info = wait_batch(rt, batch_id, 60, until="launched")
    assert [e["algorithm"] for e in info["experiments"]] == ["DQN", "PPO"]
    batches.cancel(rt, batch_id)  # a full year of EnergyPlus is not for a test


@pytest.mark.needs("gcloud")
def test_schema_and_gcloud_publish_line_in_docs_work(cloud: Cloud) -> None:
    """docs/batches.md's `gcloud pubsub topics publish` line, run against the local cloud."""
    ensure_quiet_template(cloud)
    doc = (REPO / "docs" / "batches.md").read_text()
    line = next(x for x in doc.splitlines() if x.startswith("gcloud pubsub topics publish"))
    assert "docs/batch.example.json" in line
    example = json.loads((REPO / "docs" / "batch.example.json").read_text())
    batch_id = new_batch_id("doc")
    example.update(batch_id=batch_id, template_name=QUIET_TEMPLATE)
    tmp = REPO / ".local-test-example.json"
    tmp.write_text(json.dumps(example))
    try:
        script = f". {cloud.local.dir / 'env'} && {line.replace('docs/batch.example.json', str(tmp))}"
        result = subprocess.run(["bash", "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    finally:
        tmp.unlink()
    assert result.returncode == 0, result.stderr
    rt = cloud.runtime()
    assert wait_batch(rt, batch_id, 30, until="launched")
    batches.cancel(rt, batch_id)


def test_batch_model_is_what_launch_accepts() -> None:
    example = json.loads((REPO / "docs" / "batch.example.json").read_text())
    assert Batch.model_validate(example).batch_id == "hot-climate-study-1"


def _publisher(args: list[str], env: dict[str, str], script: str = "publisher.py") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, script, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )


LEGACY_PPO = "python3 DRL_battery.py --environment Eplus-5zone-hot-continuous-v1 --algorithm PPO --seed 3"


def test_dry_run_plans_without_a_cloud_and_reads_the_template_with_one(cloud: Cloud, tmp_path: Path) -> None:
    # No cloud to ask (no project, no local cloud in LOCALCLOUD_DIR): the plan, and nothing started.
    bare = {k: v for k, v in os.environ.items() if k not in cloud.env and k != "GOOGLE_CLOUD_PROJECT"}
    bare["LOCALCLOUD_DIR"] = str(tmp_path / "no-cloud")
    result = _publisher(["--dry-run", "--json", "-cmds", LEGACY_PPO, LEGACY_PPO.replace("--seed 3", "--seed 4")], bare)
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["vms"] == 2 and plan["machine_type"] is None and plan["estimated_vm_hours"] > 0
    assert [e["seed"] for e in plan["experiments"]] == [3, 4]
    assert not (tmp_path / "no-cloud").exists(), "a dry run starts no local cloud"
    assert (plan["parallelism"], plan["waves"]) == (2, 1)
    # Three experiments, at most two at once: two waves, and the reason said.
    cmds = [LEGACY_PPO.replace("--seed 3", f"--seed {s}") for s in (3, 4, 5)]
    result = _publisher(["--dry-run", "--max-parallel", "2", "-cmds", *cmds], bare)
    assert result.returncode == 0, result.stderr
    assert "At most 2 at once (max_parallel 2): 2 wave(s)" in " ".join(result.stdout.split())
    # With the local cloud's environment: the template's machine type is read.
    env = {**os.environ, **cloud.env}
    result = _publisher(["--dry-run", "--json", "-cmds", LEGACY_PPO], env)
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert (plan["machine_type"], plan["provisioning"]) == ("e2-standard-2", "SPOT")  # as localcloud/cloud.py makes it
    # A template that does not exist: the plan, then an error saying launch would reject it.
    result = _publisher(["--dry-run", "--template_name", "no-such-template", "-cmds", LEGACY_PPO], env)
    assert result.returncode == 2
    assert "'no-such-template' does not exist" in result.stderr and "would be rejected" in result.stderr


def test_publisher_refuses_a_missing_template_before_publishing(cloud: Cloud) -> None:
    env = {**os.environ, **cloud.env}
    batch_id = new_batch_id("notpl")
    result = _publisher(["--batch-id", batch_id, "--template_name", "no-such-template", "-cmds", LEGACY_PPO], env)
    assert result.returncode == 2
    assert "'no-such-template' does not exist" in result.stderr and "nothing published" in result.stderr
    # Had it been published, launch would have dead-lettered it (the template is missing) by now.
    letters = cloud.dead_letters(names.TOPIC_BATCHES, wait=3)
    assert [m for m in letters if m["attributes"].get("batch_id") == batch_id] == []


def test_cloud_manager_alias_and_subcommands_with_a_project(cloud: Cloud) -> None:
    """`python cloud_manager.py`, the original name, submits; status takes --project_id and links MLflow."""
    ensure_quiet_template(cloud)
    env = {**os.environ, **cloud.env}
    project = cloud.env["GOOGLE_CLOUD_PROJECT"]
    batch_id = new_batch_id("alias")
    args = ["--project_id", project, "--template_name", QUIET_TEMPLATE, "--batch-id", batch_id, "-cmds", LEGACY_PPO]
    result = _publisher(args, env, script="cloud_manager.py")
    assert result.returncode == 0, result.stderr
    mlflow_uri = cloud.env["MLFLOW_TRACKING_URI"].rstrip("/")
    assert f"MLflow:   {mlflow_uri}/#/experiments/" in result.stdout, result.stdout
    assert f"python publisher.py status {batch_id}" in result.stdout
    wait_batch(cloud.runtime(), batch_id, 30, until="launched")
    status = _publisher(["status", batch_id, "--json", "-id", project], env)
    assert status.returncode == 0, status.stderr
    info = json.loads(status.stdout)
    assert info["mlflow_experiment_url"] and info["mlflow_experiment_url"] in result.stdout
    assert info["experiments"][0]["seed"] == 3
    assert _publisher(["cancel", batch_id, "--project_id", project], env).returncode == 0
