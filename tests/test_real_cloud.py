"""Opt-in: deploy to a real Google Cloud project, run a check batch, destroy everything it created.

Runs only with SINERGYM_TEST_PROJECT set (a throw-away project), application-default credentials,
terraform and docker. Everything is created under a random prefix and destroyed at the end.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

PROJECT = os.environ.get("SINERGYM_TEST_PROJECT")

pytestmark = [pytest.mark.cloud, pytest.mark.needs("google-cloud-project")]


def run(*argv: str, cwd: Path = REPO, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=3600)
    assert result.returncode == 0, f"{' '.join(argv)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


@pytest.mark.needs("google-credentials", "terraform", "docker", "gcloud")
def test_deploy_check_batch_destroy(tmp_path: Path) -> None:
    assert PROJECT
    prefix = f"sgt{secrets.token_hex(3)}"
    tf = REPO / "infra" / "terraform"
    key = tmp_path / "key"
    run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key))
    variables = {
        "project_id": PROJECT,
        "prefix": prefix,
        "ssh_public_key": (tmp_path / "key.pub").read_text().strip(),
        "mlflow": {"deletion_protection": False},
    }
    (tmp_path / "test.tfvars.json").write_text(json.dumps(variables))
    state = f"-state={tmp_path / 'terraform.tfstate'}"
    var_file = f"-var-file={tmp_path / 'test.tfvars.json'}"
    run(sys.executable, "scripts/build_functions.py")
    run("terraform", "init", "-input=false", cwd=tf)
    try:
        run("terraform", "apply", "-input=false", "-auto-approve", state, var_file, cwd=tf)
        outputs = json.loads(run("terraform", "output", "-json", state, cwd=tf))
        run("gcloud", "secrets", "versions", "add", outputs["ssh_key_secret"]["value"], f"--data-file={key}")
        for image, context in (("trainer_image", "."), ("mlflow_image", "infra/mlflow")):
            tag = outputs[image]["value"]
            dockerfile = ["-f", "infra/docker/Dockerfile"] if image == "trainer_image" else []
            run("docker", "build", *dockerfile, "-t", tag, context)
            run("docker", "push", tag)
        env = {
            **os.environ,
            "GOOGLE_CLOUD_PROJECT": PROJECT or "",
            **{k: v for k, v in outputs["publisher_environment"]["value"].items()},
        }
        out = run(
            sys.executable, "publisher.py", "--project_id", PROJECT or "", "--template_name",
            outputs["instance_template"]["value"], "--check", "--wait", "--timeout", "2400", env=env,
        )  # fmt: skip
        assert "succeeded" in out
    finally:
        run("terraform", "destroy", "-input=false", "-auto-approve", state, var_file, cwd=tf)
