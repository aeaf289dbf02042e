"""Least privilege, enforced: each component's credential checked against infra/terraform/*.tf by the
local cloud's fronts, each VM confined to its own experiment's objects, and the audit of what each
account used against what it is granted (docs/iam.md)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.api_core import exceptions

from localcloud import iam, iam_audit, identity
from localcloud.cloud import Options
from sinergym_cloud import errors, names
from sinergym_cloud.config import Settings
from sinergym_cloud.contracts import TrainerSpec
from sinergym_cloud.control import batches, dispatch, launch
from sinergym_cloud.gcp import tokens
from sinergym_cloud.gcp.clients import Clients
from sinergym_cloud.records import ExperimentRecord
from tests.conftest import REPO, Cloud, new_batch_id, own_cloud, wait_for
from tests.control_helpers import QUIET_TEMPLATE, ensure_quiet_template, make_batch, ppo, publish_batch, wait_batch

RESULTS = "experiments-storage"
STATE = "sinergym-state"


def audit_lines(cloud: Cloud, since: float) -> list[dict[str, Any]]:
    trail = iam_audit.read_trail(identity.iam_dir(cloud.local.dir) / "audit.jsonl")
    return [line for line in trail if line["t"] >= since]


# ------------------------------------------------------------------------------- the policy
def test_the_policy_is_terraforms_and_no_vm_holds_a_role_on_the_results_bucket() -> None:
    policy = iam.Policy.load(buckets={"state": STATE, "results": RESULTS})
    assert {"launch", "dispatch", "cleanup", "sweeper", "trainer", "operator"} <= set(policy.members())
    results_object = iam.Resource("bucket", RESULTS, "b/e/checkpoint/model.zip")
    assert policy.allows("trainer", "storage.objects.create", results_object) is None
    assert policy.allows("trainer", "storage.objects.get", results_object) is None
    assert policy.allows("dispatch", "storage.objects.create", results_object) is not None, "the tokens' source"
    assert policy.allows("cleanup", "compute.instanceGroupManagers.update", iam.Resource("project")) is not None
    assert policy.allows("trainer", "pubsub.topics.publish", iam.Resource("topic", names.TOPIC_COMPLETIONS))
    assert policy.allows("trainer", "pubsub.topics.publish", iam.Resource("topic", names.TOPIC_BATCHES)) is None
    assert policy.secrets_of("dispatch") >= {"ssh_key", "control_secret"} and policy.secrets_of("trainer") == {
        "wandb_api_key"
    }


def test_an_experiment_token_holds_its_prefixes_and_nothing_else() -> None:
    experiment = ppo(tensorboard="gs://other-bucket/runs", initial_model={"batch_id": "old", "experiment": "e-7"})
    rules = tokens.rules_for_experiment(RESULTS, "b-1", "PPO-b-1", experiment)
    expressions = {r["availableResource"].rsplit("/", 1)[1] + " " + r["availablePermissions"][0]:
                   r["availabilityCondition"]["expression"] for r in rules}  # fmt: skip
    objects = f"projects/_/buckets/{RESULTS}/objects"
    assert expressions == {
        f"{RESULTS} inRole:roles/storage.objectUser": f"resource.name.startsWith('{objects}/b-1/PPO-b-1/')",
        f"{RESULTS} inRole:roles/storage.objectViewer": f"resource.name.startsWith('{objects}/old/e-7/')",
        "other-bucket inRole:roles/storage.objectUser": (
            "resource.name.startsWith('projects/_/buckets/other-bucket/objects/runs/PPO-b-1/')"
        ),
    }
    for expression in expressions.values():
        assert iam.condition_holds(expression, expression.split("'")[1] + "x")
        assert not iam.condition_holds(expression, f"{objects}/b-1/PPO-b-10/x")


# ------------------------------------------------------------------------------- enforced
def test_cleanup_without_its_group_role_meets_a_403_naming_the_permission(cloud: Cloud) -> None:
    """The cleanup function's account loses the role that grants deleteInstances: its VM removal is
    refused with Compute Engine's 403 naming the permission and the account, not retried in the
    call (the message is redelivered, then dead-lettered), and recorded; with the role back it works."""
    ensure_quiet_template(cloud)
    rt = cloud.runtime()
    batch = make_batch(ppo(), template=QUIET_TEMPLATE)
    launch.launch(rt, batch)
    rec = ExperimentRecord.model_validate(rt.state.read(names.experiment_object(batch.batch_id, 0)).data)  # type: ignore[union-attr]
    as_cleanup = cloud.runtime(local_token=cloud.local.token("cleanup"))
    policy = cloud.local.policy()
    role = next(b.role for b in policy.bindings if b.member == "cleanup" and "operator" in b.role)
    since = time.time()
    cloud.local.set_policy(policy.without("cleanup", role))
    try:
        with pytest.raises(exceptions.Forbidden) as refused:
            batches.remove_vm(as_cleanup, rec)
    finally:
        cloud.local.set_policy(policy)
    message = str(refused.value)
    assert "compute.instanceGroupManagers.update" in message and "cleanup" in message, message
    assert errors.classify(refused.value) == "unknown" and not errors.is_transient(refused.value)
    denied = [a for a in audit_lines(cloud, since) if not a["allowed"] and a["member"] == "cleanup"]
    assert [a["permission"] for a in denied] == ["compute.instanceGroupManagers.update"]
    batches.remove_vm(as_cleanup, rec)  # the role back: allowed
    batches.cancel(rt, batch.batch_id)


def test_a_vm_token_writes_its_own_experiment_only(cloud: Cloud, tmp_path: Path) -> None:
    """A VM's storage token (dispatch's, downscoped to the experiment): its own prefix is writable;
    another experiment's objects, the batch's records and the control plane's state are refused with
    403 and stay as they were, and each attempt is in the audit trail."""
    batch_id = new_batch_id("iam")
    mine, other = f"PPO-{batch_id}", f"PPO-{batch_id}-other"
    spec = TrainerSpec(project="local-project", batch_id=batch_id, experiment_index=0, experiment_name=mine,
                       group_name="g", experiment=ppo(), results_bucket=RESULTS, instance="g-0",
                       zone="europe-west1-b", boot_id="boot-1", attempt=1, mlflow_experiment="m",
                       completion_key="0" * 64, checkpoint_key="1" * 64)  # fmt: skip
    vm = Clients(Settings.from_env({**cloud.env, **cloud.vm_identity(spec, tmp_path / "token.json")})).storage
    admin = cloud.runtime().clients.storage
    theirs = f"{names.results_prefix(batch_id, other)}model.zip"
    admin.bucket(RESULTS).blob(theirs).upload_from_string(b"theirs")
    state_object = names.experiment_object(batch_id, 0)  # of no launched batch: nothing else reads it
    admin.bucket(STATE).blob(state_object).upload_from_string(b"{}")
    since = time.time()

    own = vm.bucket(RESULTS).blob(f"{names.results_prefix(batch_id, mine)}checkpoint/model.zip")
    own.upload_from_string(b"mine")
    assert own.download_as_bytes() == b"mine"
    attempts = {
        "overwrite another experiment's output": lambda: vm.bucket(RESULTS).blob(theirs).upload_from_string(b"x"),
        "delete another experiment's output": lambda: vm.bucket(RESULTS).blob(theirs).delete(),
        "write at the batch's root": lambda: vm.bucket(RESULTS).blob(f"{batch_id}/x").upload_from_string(b"x"),
        "delete a record of the batch": lambda: vm.bucket(STATE).blob(state_object).delete(),
        "read a record of the batch": lambda: vm.bucket(STATE).blob(state_object).download_as_bytes(),
    }
    for what, attempt in attempts.items():
        with pytest.raises(exceptions.Forbidden, match="access boundary") as refused:
            attempt()
        assert refused.value.code == 403, what
    assert admin.bucket(RESULTS).blob(theirs).download_as_bytes() == b"theirs"
    assert admin.bucket(STATE).blob(state_object).download_as_bytes() == b"{}"
    refused = [a for a in audit_lines(cloud, since) if not a["allowed"] and a.get("downscoped")]
    resources = {a["resource"].split("/objects/", 1)[1] for a in refused if "/objects/" in a["resource"]}
    assert resources >= {theirs, f"{batch_id}/x", state_object}, resources
    admin.bucket(STATE).blob(state_object).delete()


# ------------------------------------------------------------------------------- the audit
@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    """A local cloud of its own, so that its audit trail holds its batches and nothing else."""
    options = Options(port_base=0, sweep_interval=5, heartbeat_seconds=2, heartbeat_timeout=300, boot_timeout=300)
    with own_cloud(tmp_path_factory.mktemp("iam-cloud"), {}, options) as cloud:
        yield cloud


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_a_full_batch_uses_no_permission_it_is_not_granted(audited: Cloud) -> None:
    """A batch of two real trainers (one with a TensorBoard folder of the batch) through the deployed
    path: the audit lists, per account, what it used against its grant; nothing used is missing,
    and docs/iam.md's table shows this policy's grants with every permission this batch used."""
    cloud = audited
    operator = cloud.runtime(local_token=cloud.local.token("operator"))  # the user submits and follows it
    batch_id = new_batch_id("audit")
    batch = make_batch(ppo(seed=1), ppo(seed=2, tensorboard=f"gs://{RESULTS}/{batch_id}/tb"), batch_id=batch_id)
    publish_batch(operator, batch)
    done = wait_batch(operator, batch.batch_id, 900)
    assert [e["state"] for e in done["experiments"]] == ["succeeded", "succeeded"], done["experiments"]
    table = iam_audit.accounts(audit_lines(cloud, 0), cloud.local.policy())
    print(iam_audit.report(table))
    assert {a: sorted(t.refused) for a, t in table.items() if t.refused} == {}
    assert {"storage.objects.create", "storage.objects.get"} <= table[iam_audit.EXPERIMENT_TOKEN].used
    for account in ("launch", "dispatch", "cleanup"):
        assert table[account].used, f"{account} made no call"
    # docs/iam.md is this table (python -m localcloud.iam_audit --markdown after such a batch): every
    # account's grants as the Terraform makes them; its "used" column is the run that wrote it.
    documented = (REPO / "docs" / "iam.md").read_text()
    rows = {tuple(c.strip(" `") for c in line.strip("|").split("|")[:2])
            for line in documented.splitlines() if line.startswith("| ") and "`" in line}  # fmt: skip
    expected = {(name, p) for name, account in table.items() for p in account.granted | account.used}
    assert expected - rows == set(), "docs/iam.md lacks these: regenerate it"
    listed = {name for name, _ in rows}
    assert {(n, p) for n, p in rows if n in table and n != iam_audit.EXPERIMENT_TOKEN} <= expected, (
        "docs/iam.md lists grants the Terraform no longer makes: regenerate it"
    )
    assert iam_audit.EXPERIMENT_TOKEN in listed


@pytest.mark.slow
def test_a_token_past_half_its_life_is_replaced_on_the_vm(audited: Cloud) -> None:
    """The sweeper sees a running experiment's token past half its life and asks dispatch, which
    hands the same boot a fresh one over SSH: the file on the VM changes, the record says until when."""
    cloud = audited
    rt = cloud.runtime()
    batch = make_batch(ppo(episodes=500))  # trains well past the test
    publish_batch(rt, batch)
    wait_batch(rt, batch.batch_id, 600, until="running")
    path = names.experiment_object(batch.batch_id, 0)
    rec = ExperimentRecord.model_validate(rt.state.read(path).data)  # type: ignore[union-attr]
    assert rec.token_issued_at is not None and rec.token_expires_at is not None
    home = Path(cloud.instances()[f"{rec.zone}/{rec.instance}"]["home"])
    token_file = next((home / "experiments").glob(f"{batch.batch_id}-0/storage-token.json"))
    first = json.loads(token_file.read_text())
    assert token_file.stat().st_mode & 0o777 == 0o600
    # Half the token's life passes (the record's clock is set back rather than waiting 300 s).
    issued, expires = rec.token_issued_at, rec.token_expires_at
    batches.transition(rt, batch.batch_id, 0, lambda r: _backdate(r, issued - (expires - issued)))
    fresh = wait_for(lambda: (d := json.loads(token_file.read_text()))["token"] != first["token"] and d,
                     120, "a fresh token on the VM", every=1.0)  # fmt: skip
    assert fresh["expires_at"] >= first["expires_at"]

    # Dispatch records the hand-over after the VM agent answers, so the file can change first.
    def recorded() -> ExperimentRecord | None:
        rec = ExperimentRecord.model_validate(rt.state.read(path).data)  # type: ignore[union-attr]
        return rec if rec.token_issued_at is not None and rec.token_issued_at > issued else None

    after = wait_for(recorded, 60, "the record of the fresh token", every=0.5)
    assert after.token_expires_at is not None and after.token_expires_at >= fresh["expires_at"]
    batches.cancel(rt, batch.batch_id)


def _backdate(rec: ExperimentRecord, issued: float) -> Any:
    from sinergym_cloud import lifecycle

    rec.token_issued_at = issued
    return lifecycle.Transition(applied=True, outcome="backdated")


def test_dispatch_refuses_a_refresh_for_a_boot_that_is_not_running(cloud: Cloud) -> None:
    from sinergym_cloud.contracts import TokenRefresh

    ensure_quiet_template(cloud)
    rt = cloud.runtime()
    batch = make_batch(ppo(), template=QUIET_TEMPLATE)
    launch.launch(rt, batch)
    ask = TokenRefresh(batch_id=batch.batch_id, experiment_index=0, boot_id="nobody-1")
    assert dispatch.refresh(rt, ask).startswith("ignored: experiment is pending")
    batches.cancel(rt, batch.batch_id)
