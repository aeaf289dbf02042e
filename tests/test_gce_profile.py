"""The Google-like profile (``LOCALCLOUD_PROFILE=gce``): Compute Engine's boot and operation times,
so that the product's waits and "not yet" branches run. ``make test-gce`` runs the ``gce`` tier (these
tests, the seed example batch, the fault suite's lifecycle scenarios) under it with
``LOCALCLOUD_SCALE`` shrinking every time alike; in ``make test`` these tests bring up a local cloud
of their own with the profile.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from localcloud import profiles
from localcloud.cloud import LocalCloud, Options
from sinergym_cloud.gcp.compute import ComputeApi
from tests.conftest import PROFILE, Cloud, new_batch_id, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.gce]

PROJECT = "local-project"
ZONE = "europe-west1-b"
SCALE = PROFILE[1] if PROFILE[0] == "gce" else 0.2


@pytest.fixture(scope="module")
def gce(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    if PROFILE[0] == "gce":
        yield request.getfixturevalue("cloud")
        return
    local = LocalCloud(
        tmp_path_factory.mktemp("gce-cloud"),
        Options(port_base=0, sweep_interval=0, profile="gce", scale=SCALE, strict=True),
    )
    env = local.up()
    try:
        yield Cloud(local, env)
    finally:
        local.down()


def test_the_profile_takes_compute_engines_times() -> None:
    gce = profiles.settings("gce", 0.5)
    assert gce["boot_seconds"] == [10.0, 30.0]  # 20-60 s, scaled
    assert gce["preempt_grace"] == 15.0  # the spot VM's 30 s notice, scaled
    assert gce["op_seconds"] > 0
    assert profiles.settings("fast")["boot_seconds"] is None
    with pytest.raises(ValueError, match="LOCALCLOUD_PROFILE"):
        profiles.settings("slowest")


def _post(cloud: Cloud, path: str, **kwargs: Any) -> dict[str, Any]:
    response = cloud.http.post(f"{cloud.compute_url}/compute/v1/projects/{PROJECT}/{path}", timeout=30, **kwargs)
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_a_group_goes_through_the_states_compute_engine_shows(gce: Cloud) -> None:
    group = f"g-{new_batch_id()}"
    base = f"zones/{ZONE}/instanceGroupManagers"
    body = {"name": group, "baseInstanceName": group, "instanceTemplate": "global/instanceTemplates/sinergym-template"}
    _post(gce, base, json=body, params={"requestId": str(uuid.uuid4())})
    op = _post(gce, f"{base}/{group}/createInstances", json={"instances": [{"name": f"{group}-0"}]})
    assert op["status"] == "RUNNING"  # still running after the request returned
    progress = []
    while op["status"] != "DONE":
        op = gce.http.get(
            f"{gce.compute_url}/compute/v1/projects/{PROJECT}/zones/{ZONE}/operations/{op['name']}", timeout=10
        ).json()
        progress.append(op["progress"])
        time.sleep(0.1)
    assert progress == sorted(progress) and progress[-1] == 100
    assert any(0 < p < 100 for p in progress), progress
    seen: list[tuple[str, str]] = []

    def running() -> bool:
        items = _post(gce, f"{base}/{group}/listManagedInstances").get("managedInstances", [])
        state = (items[0]["currentAction"], items[0].get("instanceStatus", "")) if items else ("", "")
        if not seen or seen[-1] != state:
            seen.append(state)
        return state == ("NONE", "RUNNING")

    wait_for(running, 120 * SCALE + 60, "the VM RUNNING", every=0.1)
    assert ("CREATING", "PROVISIONING") in seen and ("CREATING", "STAGING") in seen, seen
    assert seen.index(("CREATING", "PROVISIONING")) < seen.index(("CREATING", "STAGING")), seen
    assert ComputeApi(gce.runtime().clients, PROJECT).delete_group(ZONE, group)
