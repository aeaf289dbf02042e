"""What a compromised VM can forge, tried on the local cloud as such a VM would.

Every VM may publish on instance-ready and experiment-completions and write under every batch
prefix of the results bucket. Each test below is one finding of the review: it fails on the code
that believed messages, and feeds the fault suite's figures table (scripts/faults_table.py).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from localcloud import vm as local_vm
from localcloud.ports import free_port
from sinergym_cloud import contracts, names, signing
from sinergym_cloud.contracts import Completion, InstanceReady, TrainerSpec
from sinergym_cloud.control import batches, cleanup, dispatch, launch
from sinergym_cloud.errors import BadMessage
from sinergym_cloud.gcp import compute, ssh
from sinergym_cloud.inputs import batchfile
from tests.conftest import REPO, Cloud, wait_for
from tests.control_helpers import (
    QUIET_TEMPLATE,
    ZONE,
    completion,
    deliver,
    ensure_quiet_template,
    make_batch,
    mig_events,
    ppo,
    quiet_ready,
    signed,
    start_boot,
)
from tests.faults.conftest import leaks
from trainer import checkpoint

pytestmark = pytest.mark.faults


def _record_of(cloud: Cloud, batch_id: str, index: int = 0) -> dict[str, Any]:
    """The experiment's record in the state bucket, as the control plane keeps it."""
    found = cloud.runtime().state.read(names.experiment_object(batch_id, index))
    assert found is not None
    return dict(found.data)


def _untouched(rec: dict[str, Any]) -> tuple[Any, ...]:
    return rec["state"], rec["boot_id"], rec["attempts"], rec["preemptions"], rec["failures"]


def _batch_alerts(cloud: Cloud, batch_id: str) -> list[dict[str, Any]]:
    return [a for a in cloud.alerts() if a["incident"]["metric"]["labels"].get("batch_id") == batch_id]


def _spec_on_vm(cloud: Cloud, instance: str) -> TrainerSpec:
    """The TrainerSpec dispatch handed the VM over SSH (the VM agent keeps it on the VM's disk)."""
    home = Path(cloud.instances()[f"{ZONE}/{instance}"]["home"])
    (spec_file,) = list((home / "experiments").glob("*/spec.json"))
    return TrainerSpec.model_validate_json(spec_file.read_text())


class ForgerSshd:
    """A second, real sshd with its own host key that accepts dispatch's key: what a compromised VM
    would point a forged instance-ready at. Its log says whether anyone connected."""

    def __init__(self, cloud: Cloud, home: Path) -> None:
        home.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        public = (cloud.local.ssh_key.parent / "id_ed25519.pub").read_text().strip()
        spec = {"name": "forger", "ssh_port": self.port, "ssh_keys": [f"x:{public}"], "session_env": {}}
        config = local_vm.write_sshd_config(home, spec)
        config.write_text(config.read_text().replace("LogLevel ERROR", "LogLevel VERBOSE"))
        self.log = home / "sshd.log"
        self.fingerprint = ssh.public_key_fingerprint((home / "ssh_host_ed25519_key.pub").read_text())
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [local_vm.sshd_binary(), "-D", "-e", "-f", str(config)], stdin=subprocess.DEVNULL, stderr=out
            )
        assert local_vm.wait_listening(self.port, 10, self.process)
        self.baseline = 0
        self.baseline = wait_for(self.connections, 10, "the forger's sshd logging the listening probe")

    def connections(self) -> int:
        """Connections since the start (the probe that saw it listening excluded)."""
        return self.log.read_text(errors="replace").count("Connection from") - self.baseline

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


# ----------------------------------------------------------------- 1. forged instance-ready
def test_forged_ready_pointing_at_another_sshd_is_refused(cloud: Cloud, record: Any, tmp_path: Path) -> None:
    ensure_quiet_template(cloud)
    rt = cloud.runtime()
    batch = make_batch(ppo(episodes=20), template=QUIET_TEMPLATE)
    launch.launch(rt, batch)
    instance = names.instance_name(batch.group_name, batch.batch_id, 0)
    real = quiet_ready(cloud, instance)
    vm_id = compute.describe_host(rt.compute, ZONE, instance).id  # type: ignore[union-attr] - the VM exists
    forger = ForgerSshd(cloud, tmp_path / "forger")
    outcomes: Counter[str] = Counter()
    try:

        def forged(boot_id: str) -> InstanceReady:
            return real.model_copy(
                update={"ssh_port": forger.port, "host_key_fingerprint": forger.fingerprint, "boot_id": boot_id}
            )

        before = _untouched(_record_of(cloud, batch.batch_id))
        # A made-up boot; then one that looks like this instance's (its id is not secret).
        with pytest.raises(BadMessage, match="is not a boot of instance"):
            dispatch.dispatch(rt, forged("forged-boot"))
        with pytest.raises(BadMessage, match="is on boot"):
            dispatch.dispatch(rt, forged(f"{vm_id}-forged"))
        assert _untouched(_record_of(cloud, batch.batch_id)) == before
        outcomes["before the real ready: refused, record untouched"] += 2
        # The real ready, then a forged one while the experiment runs: not a recreated VM, refused.
        assert dispatch.dispatch(rt, real) == "trainer started"
        running = _untouched(_record_of(cloud, batch.batch_id))
        with pytest.raises(BadMessage, match="was not recreated"):
            dispatch.dispatch(rt, forged(f"{vm_id}-takeover"))
        assert _untouched(_record_of(cloud, batch.batch_id)) == running
        outcomes["while running: takeover refused"] += 1
        assert forger.connections() == 0, "dispatch connected to the forger's sshd"
        # The real trainer's completion, signed with the key it was handed over SSH, is accepted.
        spec = _spec_on_vm(cloud, instance)
        assert spec.boot_id == real.boot_id and spec.completion_key
        done = Completion(
            batch_id=spec.batch_id,
            experiment_index=spec.experiment_index,
            experiment_name=spec.experiment_name,
            instance=spec.instance,
            zone=spec.zone,
            boot_id=spec.boot_id,
            status="succeeded",
        )
        assert deliver(rt, done, spec.completion_key).state == "succeeded"
        outcomes["real completion accepted"] += 1
    finally:
        forger.stop()
    wait_for(lambda: leaks(cloud, [batch]) == (0, 0), 60, "nothing left")
    record("forged instance-ready (second sshd, own key)", outcomes, *leaks(cloud, [batch]))


# -------------------------------------------------------- 2, 3. forged and replayed completions
def test_forged_and_replayed_completions_change_nothing(cloud: Cloud, record: Any) -> None:
    ensure_quiet_template(cloud)
    rt = cloud.runtime()
    since = time.time()
    batch = make_batch(ppo(), ppo(seed=2), template=QUIET_TEMPLATE)
    launch.launch(rt, batch)
    bid = batch.batch_id
    mig = names.mig_name(batch.group_name, bid)
    key = start_boot(rt, bid, 0, boot_id="boot-a")
    outcomes: Counter[str] = Counter()
    cloud.dead_letters(names.TOPIC_COMPLETIONS, wait=0)
    # Forged: invented metrics, outputs in another bucket, a made-up MLflow run; unsigned, then
    # signed with a key of the forger's choosing. Through Pub/Sub and the real cleanup function.
    forged = completion(rt, bid, 0, boot_id="boot-a").model_copy(
        update={"metrics": {"mean_reward": 1e9}, "output_uris": ["gs://evil/x/"], "mlflow_run_id": "f00"}
    )
    rt.clients.publish(names.TOPIC_COMPLETIONS, contracts.dump(forged), case="unsigned")
    data, attributes = signed(forged, "ab" * 32)
    rt.clients.publish(names.TOPIC_COMPLETIONS, data, case="wrong-key", **attributes)
    letters: dict[str, dict[str, Any]] = {}

    def collect() -> bool:
        for m in cloud.dead_letters(names.TOPIC_COMPLETIONS, wait=0.5):
            letters[m["attributes"].get("case", "?")] = m
        return {"unsigned", "wrong-key"} <= set(letters)

    wait_for(collect, 60, "the forged completions dead-lettered")
    assert "not signed" in letters["unsigned"]["attributes"]["dead_letter_reason"]
    assert "does not verify" in letters["wrong-key"]["attributes"]["dead_letter_reason"]
    rec = _record_of(cloud, bid)
    assert (rec["state"], rec["metrics"], rec["mlflow_run_id"]) == ("running", {}, None)
    outcomes["forged: dead-lettered, record untouched"] += 2
    # A genuine preemption, then the same message four more times (Pub/Sub may do this unaided).
    preempted = completion(rt, bid, 0, "preempted", boot_id="boot-a")
    assert deliver(rt, preempted, key).state == "pending"
    for _ in range(4):
        with pytest.raises(cleanup.Refused):
            deliver(rt, preempted, key)
    start_boot(rt, bid, 0, boot_id="boot-b")  # the recreated VM's boot
    with pytest.raises(cleanup.Refused, match="not the running boot"):
        deliver(rt, preempted, key)
    rec = _record_of(cloud, bid)
    assert (rec["state"], rec["preemptions"], rec["boot_id"]) == ("running", 1, "boot-b")
    outcomes["replayed preemption x5: refused, budget 1/3"] += 1
    # Nothing was deleted, no alert: the VMs and the group are as launch left them.
    assert mig_events(cloud, mig, since, "mig.deleteInstances") == []
    vms = cloud.instances()
    assert all(vms[f"{ZONE}/{names.instance_name(batch.group_name, bid, i)}"]["status"] == "RUNNING" for i in (0, 1))
    assert _batch_alerts(cloud, bid) == []
    # A genuine failure with a hostile reason and foreign outputs: outputs kept only under the
    # experiment's own prefix; the reason sanitised in the record, the alert and the status table.
    key1 = start_boot(rt, bid, 1, boot_id="boot-c")
    name = _record_of(cloud, bid, 1)["name"]
    own = f"gs://{rt.settings.results_bucket}/{names.results_prefix(bid, name)}"
    failed = completion(rt, bid, 1, "failed", boot_id="boot-c").model_copy(
        update={
            "exit_reason": "no file [/data/weather] \x1b[31m[Errno 2]\u202e" + "x" * 3000,
            "output_uris": [own, "gs://evil/elsewhere/", f"gs://{rt.settings.results_bucket}/other-batch/{name}/"],
        }
    )
    after = deliver(rt, failed, key1)
    assert after.state == "failed" and after.output_uris == [own]
    assert "\x1b" not in after.reason and "\u202e" not in after.reason and len(after.reason) <= 1000
    wait_for(lambda: _batch_alerts(cloud, bid), 30, "the failure alert")
    env = {**os.environ, **cloud.env}
    shown = subprocess.run(
        [sys.executable, "publisher.py", "status", bid], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert "[/data/weather]" in shown.stdout and "[Errno 2]" in shown.stdout
    outcomes["hostile reason: sanitised, status renders it"] += 1
    batches.cancel(rt, bid)
    wait_for(lambda: leaks(cloud, [batch]) == (0, 0), 60, "nothing left")
    record("forged / replayed completions", outcomes, *leaks(cloud, [batch]))


# --------------------------------------------------------------------- 4. tarpit readies
class Tarpit:
    """Accepts connections and never says a word."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = int(self.sock.getsockname()[1])
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        for c in self.accepted:
            c.close()
        self.sock.close()


def test_tarpit_readies_do_not_stall_a_real_vm(cloud: Cloud, record: Any) -> None:
    ensure_quiet_template(cloud)
    rt = cloud.runtime()
    batch = make_batch(ppo(episodes=20), template=QUIET_TEMPLATE)
    launch.launch(rt, batch)
    instance = names.instance_name(batch.group_name, batch.batch_id, 0)
    real = quiet_ready(cloud, instance)
    vm_id = compute.describe_host(rt.compute, ZONE, instance).id  # type: ignore[union-attr] - the VM exists
    tarpit = Tarpit()
    try:
        # What one hostile endpoint costs a connection now (it was minutes of retries).
        started = time.monotonic()
        with pytest.raises(ssh.TRANSIENT):
            ssh.connect("127.0.0.1", tarpit.port, user="x", key=ssh.private_key(rt.settings), expected=["SHA256:x"])
        one_tarpit = time.monotonic() - started
        tarpit.accepted.clear()
        # Four forged readies at the tarpit, then the real one, through Pub/Sub to the dispatch function.
        for n in range(4):
            fake = real.model_copy(
                update={
                    "ssh_port": tarpit.port,
                    "host_key_fingerprint": "SHA256:" + "T" * 43,
                    "boot_id": f"{vm_id}-t{n}",
                }
            )
            rt.clients.publish(names.TOPIC_READY, contracts.dump(fake))
        published = time.monotonic()
        rt.clients.publish(names.TOPIC_READY, contracts.dump(real))
        wait_for(lambda: _record_of(cloud, batch.batch_id)["state"] == "running", 120, "the real VM dispatched")
        ready_to_running = time.monotonic() - published
        assert _record_of(cloud, batch.batch_id)["boot_id"] == real.boot_id
        assert tarpit.accepted == [], "dispatch connected to the address a message named"
    finally:
        tarpit.close()
    batches.cancel(rt, batch.batch_id)
    wait_for(lambda: leaks(cloud, [batch]) == (0, 0), 60, "nothing left")
    record(
        "4 tarpit readies, then the real one",
        Counter(
            {
                f"real VM running {ready_to_running:.1f}s after its ready (was 290 s); tarpit connections 0": 1,
                f"one tarpit connection gives up after {one_tarpit:.1f}s": 1,
            }
        ),
        *leaks(cloud, [batch]),
    )


# ---------------------------------------------------------------------- 5. planted checkpoints
def test_planted_checkpoints_are_refused(cloud: Cloud, record: Any, tmp_path: Path) -> None:
    rt = cloud.runtime()
    bucket = rt.clients.storage.bucket(rt.settings.results_bucket)
    secret = signing.deployment_secret(rt.settings)
    batch_id, name = "victim-batch", f"PPO-victim-{time.time_ns()}"
    prefix = names.checkpoint_prefix(batch_id, name)
    key = signing.checkpoint_key(secret, batch_id, name)
    owner = checkpoint.Owner(batch_id, name, key)
    model = b"PK\x03\x04 a model"
    bucket.blob(prefix + "model.zip").upload_from_string(model)
    digest = {"model.zip": __import__("hashlib").sha256(model).hexdigest()}
    good = {"batch_id": batch_id, "experiment": name, "files": ["model.zip"], "sha256": digest, "episodes": 1}
    escape = tmp_path / "escaped"
    plants = {
        "unsigned": good,
        "signed by a neighbour's key": checkpoint.sign_meta(good, signing.checkpoint_key(secret, "other", name)),
        "another experiment's, copied": checkpoint.sign_meta(
            {**good, "experiment": "other"}, signing.checkpoint_key(secret, batch_id, "other")
        ),
        "files outside the directory": {**good, "files": [str(escape), "../../x", "model.zip"]},
        "not JSON": None,
    }
    outcomes: Counter[str] = Counter()
    for label, meta in plants.items():
        body = b"{not json" if meta is None else json.dumps(meta).encode()
        bucket.blob(prefix + "meta.json").upload_from_string(body)
        assert checkpoint.fetch(bucket, owner, tmp_path / "ckpt") is None, label
        outcomes["refused: " + label] += 1
    assert not escape.exists()
    # Signed, but the model swapped afterwards: its digest gives it away.
    bucket.blob(prefix + "meta.json").upload_from_string(json.dumps(checkpoint.sign_meta(good, key)))
    bucket.blob(prefix + "model.zip").upload_from_string(b"PK\x03\x04 a planted pickle")
    assert checkpoint.fetch(bucket, owner, tmp_path / "ckpt") is None
    outcomes["refused: model swapped after signing"] += 1
    # The experiment's own, intact checkpoint is resumed.
    bucket.blob(prefix + "model.zip").upload_from_string(model)
    resumed = checkpoint.fetch(bucket, owner, tmp_path / "ckpt")
    assert resumed is not None and resumed.model_path.read_bytes() == model and resumed.episodes == 1
    outcomes["own checkpoint resumed"] += 1
    record("planted checkpoints", outcomes)


# --------------------------------------------------------------------------- 6. paths
def test_absolute_and_foreign_tensorboard_paths_are_refused_at_validation(cloud: Cloud, record: Any) -> None:
    rt = cloud.runtime()
    results = rt.settings.results_bucket
    base = {"environment": "Eplus-5zone-hot-continuous-v1", "remote_store": True}
    submitted = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)

    def batch_with(tensorboard: str, batch_id: str) -> bytes:
        body = {
            "batch_id": batch_id,
            "submitted_at": submitted.isoformat(),
            "experiments": [{**base, "tensorboard": tensorboard}],
        }
        return json.dumps(body).encode()

    own_name = contracts.experiment_name(contracts.Experiment.model_validate(base), submitted, 0)
    cases = {
        "absolute": "/root/.ssh",
        "dot-dot": "tb/../../../etc",
        "another bucket": f"gs://someone-elses/sec-paths-3/{own_name}/tb",
        "another batch": f"gs://{results}/a-neighbour-batch/{own_name}/tb",
        "another experiment": f"gs://{results}/sec-paths-5/{own_name.replace('-0', '-7')}/tb",
    }
    assert cases["another experiment"] != f"gs://{results}/sec-paths-5/{own_name}/tb"
    cloud.dead_letters(names.TOPIC_BATCHES, wait=0)
    since = time.time()
    for n, (label, path) in enumerate(cases.items(), 1):
        rt.clients.publish(names.TOPIC_BATCHES, batch_with(path, f"sec-paths-{n}"), case=label)
    letters: dict[str, str] = {}

    def collect() -> bool:
        for m in cloud.dead_letters(names.TOPIC_BATCHES, wait=0.5):
            letters[m["attributes"].get("case", "?")] = m["attributes"]["dead_letter_reason"]
        return set(cases) <= set(letters)

    wait_for(collect, 60, "the batches dead-lettered")
    for label in cases:
        assert "tensorboard" in letters[label], (label, letters[label])
    assert cloud.events(since, "mig.insert") == []
    assert all(rt.state.read(names.launch_object(f"sec-paths-{n}")) is None for n in range(1, len(cases) + 1))
    # The experiment's own prefix is accepted, and so is a folder of the batch or of the bucket, where
    # each experiment writes its own subfolder (the trainer's spec is checked the same way).
    for folder in (f"sec-paths-ok/{own_name}/tb", "sec-paths-ok/tb", "tensorboard"):
        own = contracts.parse(contracts.Batch, batch_with(f"gs://{results}/{folder}", "sec-paths-ok"))
        own.check_paths(results)
    record("absolute / foreign TensorBoard paths", Counter({"refused at validation, field named": len(cases)}))


# --------------------------------------------------------------------- 7. bad input
BOMB = "\n".join(
    [
        'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
        *(f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]" for p, c in zip("abcdefgh", "bcdefghi", strict=True)),
        "experiments: [*i]",
    ]
)


def test_alias_bomb_is_refused_fast_in_little_memory(record: Any, tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(BOMB)
    assert len(BOMB) < 600
    tracemalloc.start()
    started = time.perf_counter()
    with pytest.raises(batchfile.BatchFileError, match="aliases"):
        batchfile.load(bomb)
    seconds = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # The publisher says so, with no traceback.
    result = subprocess.run(
        [sys.executable, "publisher.py", "--batch-file", str(bomb), "--dry-run"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode != 0 and "aliases" in result.stderr and "Traceback" not in result.stderr
    record(
        f"YAML alias bomb ({len(BOMB)} bytes)",
        Counter({f"refused in {seconds * 1000:.0f} ms, peak {peak / 1e6:.1f} MB (was 43 s, 3 GB)": 1}),
    )


def test_deep_and_oversize_messages_are_dead_lettered_once(cloud: Cloud, record: Any) -> None:
    rt = cloud.runtime()
    deep = b"[" * 100_000 + b"]" * 100_000
    deep_object = b'{"batch_id": ' * 50_000 + b"1" + b"}" * 50_000
    oversize = json.dumps(
        {"batch_id": "sec-big", "experiments": [{"environment": "Eplus-5zone-hot-continuous-v1"}], "x": "y" * 5_000_000}
    ).encode()
    cases = [
        (names.TOPIC_BATCHES, "deep array", deep, "nested too deeply"),
        (names.TOPIC_BATCHES, "deep object", deep_object, "nested too deeply"),
        (names.TOPIC_BATCHES, "oversize", oversize, "the limit is"),
        (names.TOPIC_READY, "deep array", deep, "nested too deeply"),
        (names.TOPIC_COMPLETIONS, "deep array", deep, "nested too deeply"),
        (names.TOPIC_COMPLETIONS, "oversize", oversize, "the limit is"),
    ]
    for topic in {t for t, *_ in cases}:
        cloud.dead_letters(topic, wait=0)
    since = time.time()
    for topic, label, data, _ in cases:
        rt.clients.publish(topic, data, case=label)
    letters: dict[tuple[str, str], list[str]] = {}

    def collect() -> bool:
        for topic in {t for t, *_ in cases}:
            for m in cloud.dead_letters(topic, wait=0.3):
                letters.setdefault((topic, m["attributes"].get("case", "?")), []).append(
                    m["attributes"]["dead_letter_reason"]
                )
        return len(letters) >= len(cases)

    wait_for(collect, 90, "every message dead-lettered")
    time.sleep(5)  # a redelivery (a 500 answered instead of an acknowledgement) would show up by now
    collect()
    outcomes: Counter[str] = Counter()
    for topic, label, _, reason in cases:
        got = letters[(topic, label)]
        assert len(got) == 1 and reason in got[0], (topic, label, got)
        outcomes[f"{label} on {topic}: dead-lettered once"] += 1
    assert cloud.events(since, "mig.insert") == []
    record("deep JSON / oversize messages", outcomes)
