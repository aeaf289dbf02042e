"""The message contracts, names and batch files (pure code, no cloud)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from sinergym_cloud import catalog, contracts, names, tensorboard
from sinergym_cloud.contracts import Batch, Completion, Experiment, InstanceReady
from sinergym_cloud.errors import BadMessage
from sinergym_cloud.inputs import batchfile

EXP = {"environment": "Eplus-5zone-hot-continuous-v1", "algorithm": "PPO", "episodes": 1}


def batch(**fields: object) -> dict[str, object]:
    return {"batch_id": "b1", "experiments": [EXP], **fields}


def test_batch_round_trips_through_the_wire_form() -> None:
    b = Batch.model_validate(batch(group_name="study", zone="us-central1-a"))
    assert contracts.parse(Batch, contracts.dump(b)) == b


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\xff\xfe not utf-8", "not UTF-8"),
        (b"{not json", "not JSON"),
        (b"[1, 2]", "JSON object"),
        (json.dumps(batch(schema_version=5)).encode(), "unsupported schema_version 5"),
        (
            json.dumps(batch(retry_of={"batch_id": "old-1", "experiments": [1]})).encode(),
            "retry_of needs schema_version 4",
        ),
        (
            json.dumps(batch(schema_version=4, retry_of={"batch_id": "old-1", "experiments": [1, 2]})).encode(),
            "retry_of.experiments names 2 experiment",
        ),
        (json.dumps(batch(schema_version=1, max_parallel=2)).encode(), "max_parallel needs schema_version 2"),
        (json.dumps(batch(schema_version=2, max_vm_hours=5)).encode(), "max_vm_hours needs schema_version 3"),
        (json.dumps(batch(max_vm_hours=0)).encode(), "max_vm_hours"),
        (json.dumps(batch(experiments=[])).encode(), "experiments"),
        (json.dumps(batch(surprise=1)).encode(), "surprise"),
        (json.dumps(batch(batch_id="Bad Id!")).encode(), "batch_id"),
        (json.dumps(batch(group_name="x" * 41)).encode(), "group_name"),
        (json.dumps(batch(zone="europe-west1-b; rm -rf /")).encode(), "zone"),
        (json.dumps(batch(experiments=[{**EXP, "tensorboard": "$(id)"}])).encode(), "tensorboard"),
        (json.dumps(batch(experiments=[{**EXP, "episodes": 0}])).encode(), "episodes"),
        (b"x" * (contracts.MAX_MESSAGE_BYTES + 1), "limit"),
    ],
)
def test_bad_batches_are_rejected_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(BadMessage) as info:
        contracts.parse(Batch, data)
    assert reason in str(info.value)


def test_version_1_batches_are_still_read() -> None:
    old = contracts.parse(Batch, json.dumps(batch(schema_version=1)).encode())
    assert (old.schema_version, old.max_parallel) == (1, None)
    v2 = contracts.parse(Batch, json.dumps(batch(schema_version=2, max_parallel=3)).encode())
    assert (v2.schema_version, v2.max_parallel, v2.zones, v2.all_zones) == (2, 3, None, ["europe-west1-b"])
    assert v2.max_vm_hours is None
    new = contracts.parse(Batch, json.dumps(batch(max_parallel=3, max_vm_hours=12.5)).encode())
    assert (new.schema_version, new.max_parallel, new.max_vm_hours) == (3, 3, 12.5)
    assert contracts.schema_versions(Batch) == (1, 2, 3, 4)


def test_zones_of_one_region_in_failover_order() -> None:
    b = contracts.parse(Batch, json.dumps(batch(zones=["europe-west1-c", "europe-west1-b"])).encode())
    assert (b.zone, b.all_zones) == ("europe-west1-c", ["europe-west1-c", "europe-west1-b"])
    assert contracts.parse(Batch, contracts.dump(b)) == b
    for fields, reason in (
        ({"zones": ["europe-west1-b", "us-central1-a"]}, "all in the region of europe-west1-b"),
        ({"zones": ["europe-west1-b", "europe-west1-b"]}, "each zone once"),
        ({"zone": "europe-west1-d", "zones": ["europe-west1-b", "europe-west1-c"]}, "the first zone must be zone"),
        ({"schema_version": 2, "zones": ["europe-west1-b", "europe-west1-c"]}, "zones needs schema_version 3"),
        ({"zones": []}, "zones"),
    ):
        with pytest.raises(BadMessage, match=reason):
            contracts.parse(Batch, json.dumps(batch(**fields)).encode())


def test_batch_size_limit_and_group_split() -> None:
    big = Batch.model_validate(batch(experiments=[EXP] * 2500))
    assert big.mig_parts == 3
    with pytest.raises(BadMessage, match="experiments"):
        contracts.parse(Batch, batch(experiments=[EXP] * (contracts.MAX_EXPERIMENTS + 1)))


def test_names_are_deterministic_and_exact() -> None:
    mig = names.mig_name("sinergym-group", "my-batch")
    assert mig == names.mig_name("sinergym-group", "my-batch")
    assert names.GCE_NAME.match(mig)
    assert names.instance_name("sinergym-group", "my-batch", 7) == f"{mig}-7"
    assert names.experiment_index(mig, f"{mig}-7") == 7
    for other in (f"{mig}-07", f"{mig}-7x", f"{mig}7", f"x{mig}-7", f"{mig}-", mig):
        assert names.experiment_index(mig, other) is None
    # Part 2 of a huge batch has its own group; the longest names still fit Compute Engine's limit.
    longest = names.instance_name("g" * 40, "b" * 63, 4999)
    assert len(longest) <= 63 and names.GCE_NAME.match(longest)
    assert names.experiment_index(names.mig_name("g" * 40, "b" * 63, 4), longest) == 4999


def test_an_instance_in_the_group_its_experiment_failed_over_to_still_names_its_experiment() -> None:
    """An experiment keeps its instance name when it moves to another zone's group (the batch's group
    plus the zone's letter): dispatch refused every ready of a moved experiment's VM ("not an
    experiment instance of group ...-c") until the sweeper gave the experiment up; the soak found it."""
    mig = names.mig_name("sinergym-group", "my-batch")
    moved = names.zone_mig_name(mig, "europe-west1-c")
    assert names.base_group(moved) == mig and names.base_group(mig) == mig
    assert names.experiment_index(moved, names.instance_name("sinergym-group", "my-batch", 3)) == 3
    part = names.mig_name("sinergym-group", "my-batch", 2)
    assert names.base_group(part) == part
    assert names.experiment_index(names.zone_mig_name(part, "europe-west1-d"), f"{part}-2001") == 2001
    for other in (f"{moved}-x", f"{mig}-07", f"{mig}c-3", "other-3"):
        assert names.experiment_index(moved, other) is None


def test_experiment_names_are_safe_and_stable() -> None:
    exp = Experiment.model_validate({**EXP, "seed": 3})
    when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    name = contracts.experiment_name(exp, when, 4)
    assert name == "PPO-Eplus-5zone-hot-continuous-v1-episodes-1-seed-3-20260102T030405Z-4"
    assert contracts.experiment_name(exp, when, 4) == name


def test_instance_ready_and_completion_validate() -> None:
    ready = InstanceReady(
        instance="g-abc-0",
        zone="europe-west1-b",
        mig="g-abc",
        batch_id="b1",
        address="127.0.0.1",
        ssh_port=2222,
        host_key_fingerprint="SHA256:" + "A" * 43,
        boot_id="1-2-3",
    )
    assert contracts.parse(InstanceReady, contracts.dump(ready)) == ready
    with pytest.raises(BadMessage, match="host_key_fingerprint"):
        contracts.parse(InstanceReady, {**ready.model_dump(), "host_key_fingerprint": "MD5:aa"})
    done = Completion(
        batch_id="b1",
        experiment_index=0,
        experiment_name="x",
        instance="g-abc-0",
        zone="europe-west1-b",
        boot_id="1",
        status="succeeded",
    )
    assert contracts.parse(Completion, contracts.dump(done)).status == "succeeded"
    with pytest.raises(BadMessage, match="status"):
        contracts.parse(Completion, {**done.model_dump(), "status": "exploded"})


def test_every_environment_id_has_a_known_action_space_kind() -> None:
    for env_id in catalog.ENVIRONMENTS:
        assert catalog.action_space_kind(env_id) in ("discrete", "continuous")
    assert catalog.resolve_environment("EPLUS-5ZONE-HOT-DISCRETE-V1") == "Eplus-5zone-hot-discrete-v1"


def test_schema_in_docs_matches_the_model() -> None:
    path = Path(__file__).resolve().parent.parent / "docs" / "batch.schema.json"
    assert json.loads(path.read_text()) == Batch.model_json_schema(), (
        "run: python publisher.py schema > docs/batch.schema.json"
    )


def test_example_message_in_docs_is_a_valid_batch() -> None:
    path = Path(__file__).resolve().parent.parent / "docs" / "batch.example.json"
    contracts.parse(Batch, path.read_bytes())


def test_batch_file_expands_seeds_and_legacy_commands(tmp_path: Path) -> None:
    f = tmp_path / "study.yaml"
    f.write_text(
        """
batch_id: study-1
defaults: {episodes: 2, runperiod: [1, 1, 1991, 7, 1, 1991]}
experiments:
  - {environment: Eplus-5zone-hot-continuous-v1, algorithm: SAC, seeds: [1, 2, 3]}
  - command: python3 DRL_battery.py --environment Eplus-5zone-mixed-discrete-v1 --algorithm DQN --seed 9
"""
    )
    fields = batchfile.load(f)
    assert fields["batch_id"] == "study-1"
    exps = fields["experiments"]
    assert [e.seed for e in exps] == [1, 2, 3, 9]
    assert all(e.episodes == 2 and e.runperiod == (1, 1, 1991, 7, 1, 1991) for e in exps[:3])
    assert exps[3].algorithm == "DQN"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("experiments: []", "non-empty"),
        ("experimentz: [1]", "unknown key"),
        (
            "experiments: [{command: 'python3 DRL_battery.py --environment Eplus-5zone-hot-continuous-v1; id'}]",
            "not allowed",
        ),
        ("experiments: [{environment: Eplus-5zone-hot-continuous-v1, seeds: []}]", "seeds"),
        ("[1, 2", "expected"),
    ],
)
def test_bad_batch_files_say_why(tmp_path: Path, text: str, reason: str) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(batchfile.BatchFileError) as info:
        batchfile.load(f)
    assert reason in str(info.value)


@pytest.mark.parametrize("field", ["episodes", "seed", "eval_freq"])
def test_booleans_are_not_numbers(field: str) -> None:
    with pytest.raises(BadMessage, match="not a boolean"):
        contracts.parse(Batch, batch(experiments=[{**EXP, field: True}]))
    with pytest.raises(BadMessage, match="not a boolean"):
        contracts.parse(Batch, batch(experiments=[{**EXP, "hyperparameters": {"learning_rate": False}}]))


def test_vm_hours_count_each_vm_from_its_creation() -> None:
    from sinergym_cloud.publisher.report import vm_hours

    # Two VMs: the first preempted (replaced at t=1000), the second deleted at t=4600.
    e = {"created_at": 0.0, "vm_created": {"b1": 100.0, "b2": 1000.0}, "running_at": 1100.0,
         "finished_at": 4500.0, "delete_requested_at": 4600.0}  # fmt: skip
    alive, idle = vm_hours(e, now=9999.0)
    assert alive == pytest.approx((900 + 3600) / 3600)
    assert idle == pytest.approx((900 + 3600 - 3400) / 3600)
    # No VM reached dispatch: from the record's creation; still running: until now.
    assert vm_hours({"created_at": 10.0}, now=3610.0) == (1.0, 1.0)
    # Two boots, only the second VM's time known (the first vanished): the record's creation stands in.
    e = {"created_at": 0.0, "attempts": 2, "vm_created": {"b2": 1800.0}, "delete_requested_at": 3600.0}
    assert vm_hours(e, now=9999.0)[0] == pytest.approx(1.0)
    assert vm_hours({}, now=1.0) == (None, None)


@pytest.mark.parametrize(
    ("path", "ok"),
    [
        ("./tensorboard_log", True),
        ("tb/run", True),
        ("/an/absolute/dir", False),
        ("tb/../../x", False),
        ("gs://bucket-one", False),
        ("gs://bucket-one/", False),
        ("gs://bucket-one/a-folder", True),
        ("gs://bucket-one/batch/experiment/tb", True),
    ],
)
def test_path_fields_are_relative_or_gs_with_the_field_named(path: str, ok: bool) -> None:
    fields = {"environment": "Eplus-5zone-hot-continuous-v1", "tensorboard": path}
    if ok:
        Experiment.model_validate(fields)
    else:
        with pytest.raises(BadMessage, match="tensorboard"):
            contracts.parse(Batch, {"batch_id": "b1", "experiments": [fields]})


def test_a_gs_tensorboard_folder_is_the_batchs_and_each_experiment_writes_its_own_subfolder() -> None:
    at = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    exp = {"environment": "Eplus-5zone-hot-continuous-v1"}
    name = contracts.experiment_name(Experiment.model_validate(exp), at, 0)
    second = contracts.experiment_name(Experiment.model_validate(exp), at, 1)

    def batch(tb: str, bucket: str | None = None, n: int = 1) -> Batch:
        body = {"batch_id": "b1", "submitted_at": at.isoformat(), "experiments": [{**exp, "tensorboard": tb}] * n}
        return contracts.parse(Batch, {**body, **({"results_bucket": bucket} if bucket else {})})

    # One folder for the batch (as users write it, before any experiment has a name), or for the bucket:
    # each experiment writes into FOLDER/<its name>/.
    for folder in ("gs://results-1/b1/tb", "gs://results-1/b1/tb/", "gs://results-1/tensorboard/runs"):
        batch(folder, n=2).check_paths("results-1")
        base = folder.rstrip("/")
        assert contracts.run_folder(folder, "b1", name) == f"{base}/{name}/"
        assert tensorboard.log_uri(folder, "results-1", "b1", second) == f"{base}/{second}/"
    # A folder in the experiment's own prefix is used as it is (what a message may have said so far).
    batch(f"gs://results-1/b1/{name}/tb").check_paths("results-1")
    assert contracts.run_folder(f"gs://results-1/b1/{name}/tb", "b1", name) == f"gs://results-1/b1/{name}/tb/"
    # Never inside another experiment's own prefix: of this batch, or anything named as experiments are.
    for bad in (f"gs://results-1/b2/{name}/tb", f"gs://results-1/b1/{second}/tb"):
        with pytest.raises(BadMessage, match=r"experiments\.0\.tensorboard: .*another experiment's own prefix"):
            batch(bad, n=2)
    with pytest.raises(BadMessage, match=r"experiments\.0\.tensorboard: .*another experiment's own prefix"):
        contracts.parse(Batch, {"batch_id": "b1", "experiments": [{**exp, "tensorboard": f"gs://r-1/b2/{name}/x"}]})
    with pytest.raises(BadMessage, match="results bucket results-1"):
        batch(f"gs://other-1/b1/{name}/tb").check_paths("results-1")
    with pytest.raises(BadMessage, match="results bucket results-1"):
        batch("gs://other-1/b1/tb", bucket="results-1")


def test_deep_and_oversize_messages_are_bad_messages() -> None:
    with pytest.raises(BadMessage, match="nested too deeply"):
        contracts.parse(Batch, b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(BadMessage, match="the limit is"):
        contracts.parse(Batch, b" " * (contracts.MAX_MESSAGE_BYTES + 1))
    with pytest.raises(BadMessage, match="a dict"):
        contracts.parse(Batch, {"schema_version": {"x" * 10_000: 1}, "batch_id": "b"})


def test_signatures_and_sanitised_text() -> None:
    from sinergym_cloud import signing, text

    key = signing.completion_key(b"s" * 32, "b1", 0, "boot-1", "n1")
    assert key != signing.completion_key(b"s" * 32, "b1", 0, "boot-2", "n1")  # bound to the boot
    sig = signing.sign(key, b"body")
    assert signing.verify(key, b"body", sig)
    assert not signing.verify(key, b"body2", sig) and not signing.verify(key, b"body", None)
    assert text.clean("a\x1b[31m\nb\u202ec" + "x" * 100, 10) == "a [31m b…"
    assert text.markup("[/data/weather]") == "\\[/data/weather]"
    assert text.clean({"not": "a string"}) == "<dict>"


def test_max_parallel_from_a_batch_file_and_the_command_line(tmp_path: Path) -> None:
    from sinergym_cloud.publisher.arguments import submit_parser
    from sinergym_cloud.publisher.submit import build_batch

    f = tmp_path / "study.yaml"
    f.write_text(
        "max_parallel: 3\nexperiments:\n  - environment: Eplus-5zone-hot-continuous-v1\n    seeds: [1, 2, 3, 4]\n"
    )
    assert batchfile.load(f)["max_parallel"] == 3
    args = submit_parser().parse_args(["--batch-file", str(f)])
    assert build_batch(args).max_parallel == 3
    args = submit_parser().parse_args(["--batch-file", str(f), "--max-parallel", "2"])
    assert build_batch(args).max_parallel == 2
    args = submit_parser().parse_args(["--batch-file", str(f), "--max-parallel", "0"])
    with pytest.raises(SystemExit):
        build_batch(args)


def test_zones_from_the_command_line_and_a_batch_file(tmp_path: Path) -> None:
    from sinergym_cloud.publisher.arguments import submit_parser
    from sinergym_cloud.publisher.submit import build_batch

    legacy = ["-cmds", "python3 DRL_battery.py --environment Eplus-5zone-hot-continuous-v1"]
    one = build_batch(submit_parser().parse_args(["--zone", "europe-west1-c", *legacy]))
    assert (one.zone, one.zones) == ("europe-west1-c", None)
    for given in (["europe-west1-b", "europe-west1-c"], ["europe-west1-b,europe-west1-c"]):
        b = build_batch(submit_parser().parse_args(["-zo", *given, *legacy]))
        assert (b.zone, b.all_zones) == ("europe-west1-b", ["europe-west1-b", "europe-west1-c"])
    f = tmp_path / "study.yaml"
    f.write_text(
        "zones: [europe-west1-d, europe-west1-b]\nexperiments:\n  - environment: Eplus-5zone-hot-continuous-v1\n"
    )
    from_file = build_batch(submit_parser().parse_args(["--batch-file", str(f)]))
    assert from_file.all_zones == ["europe-west1-d", "europe-west1-b"]
    overridden = build_batch(submit_parser().parse_args(["--batch-file", str(f), "--zone", "us-central1-a"]))
    assert overridden.all_zones == ["us-central1-a"]
    with pytest.raises(SystemExit):
        build_batch(submit_parser().parse_args(["--zone", "europe-west1-b", "us-central1-a", *legacy]))


def trainer_spec(**fields: object) -> dict[str, object]:
    return {
        "project": "local-project",
        "batch_id": "b-1",
        "experiment_index": 0,
        "experiment_name": "PPO-b-1",
        "group_name": "tests",
        "experiment": {"environment": "Eplus-5zone-hot-continuous-v1"},
        "results_bucket": "experiments-storage",
        "instance": "tests-b-1-0",
        "zone": "europe-west1-b",
        "boot_id": "boot-1",
        "mlflow_experiment": "tests.b-1",
        **fields,
    }


def test_trainer_spec_version_2_is_what_dispatch_sends_and_version_1_is_still_read() -> None:
    from sinergym_cloud.contracts import TRAINER_SPEC_V2, TrainerSpec
    from sinergym_cloud.vm import vm_agent

    key = "ab" * 32
    new = contracts.parse(TrainerSpec, json.dumps(trainer_spec(completion_key=key, started_by="experiment 3")))
    assert (new.schema_version, new.completion_key, new.started_by) == (2, key, "experiment 3")
    assert json.loads(contracts.dump(new))["schema_version"] == 2

    old = contracts.parse(TrainerSpec, json.dumps(trainer_spec(schema_version=1)))
    assert (old.schema_version, old.completion_key, old.started_by, old.progress) == (1, None, "launch", False)
    for field, value in [("completion_key", key), ("started_by", "experiment 3"), ("trial", 2)]:
        with pytest.raises(BadMessage, match=f"{field} need schema_version 2"):
            contracts.parse(TrainerSpec, json.dumps(trainer_spec(schema_version=1, **{field: value})))
    with pytest.raises(BadMessage, match="unsupported schema_version 3"):
        contracts.parse(TrainerSpec, json.dumps(trainer_spec(schema_version=3)))
    assert set(TRAINER_SPEC_V2) <= set(TrainerSpec.model_fields)

    # The VM agent (no pydantic) reads the same versions as the trainer.
    assert contracts.schema_versions(TrainerSpec) == vm_agent.SPEC_VERSIONS
    for version in (1, 2):
        assert vm_agent.check_spec(json.dumps(trainer_spec(schema_version=version)).encode())[1] == ""
    assert "version 1 or 2; got 3" in vm_agent.check_spec(json.dumps(trainer_spec(schema_version=3)).encode())[1]
