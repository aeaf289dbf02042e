"""Google's published limits on the local cloud (localcloud/limits.py), tripped through the clients
the product uses, and answered in Google's own shape so those clients' retry logic reacts.

Each test lowers or switches on one limit for itself (``cloud.local.set_limits``); the session's
limits come back after it (conftest)."""

from __future__ import annotations

import threading
import time

import pytest
import requests
from google.api_core import exceptions
from google.cloud import monitoring_v3

from localcloud import limits
from localcloud.delivery import Instances
from sinergym_cloud import errors
from sinergym_cloud.gcp import compute as compute_module
from sinergym_cloud.gcp import metrics
from tests.conftest import Cloud, new_batch_id

PROJECT = "local-project"
ZONE = "europe-west1-b"


@pytest.mark.gce  # also under Google's timings (make test-gce)
def test_three_back_to_back_uploads_of_one_object_meet_a_429_without_the_clients_retry(cloud: Cloud) -> None:
    cloud.local.set_limits(limits.GOOGLE)
    bucket = cloud.runtime().clients.storage.bucket(cloud.settings.results_bucket)
    blob = bucket.blob(f"limits/{new_batch_id()}.json")
    refused = []
    for i in range(3):
        try:
            blob.upload_from_string(f'{{"i": {i}}}', retry=None)
        except exceptions.TooManyRequests as exc:
            refused.append(exc)
    assert refused, "three writes of one object within a second: Cloud Storage refuses at least one"
    assert errors.is_transient(refused[0]), "the product's own retry takes it as transient too"
    # Other objects are not held back by it, and the object takes a write again a second later.
    bucket.blob(f"limits/{new_batch_id()}.json").upload_from_string("{}", retry=None)
    time.sleep(1.1)
    blob.upload_from_string('{"i": 3}', retry=None)
    # With the client's own retry (its default for a conditional write) the burst just takes longer.
    for i in range(3):
        blob.upload_from_string(f'{{"j": {i}}}', if_generation_match=blob.generation)
    assert blob.download_as_bytes() == b'{"j": 2}'


def test_the_front_counts_writes_per_object_and_what_it_refused(cloud: Cloud) -> None:
    cloud.local.set_limits(limits.GOOGLE)
    front = cloud.env["STORAGE_EMULATOR_HOST"]
    requests.post(f"{front}/_front/stats/reset", timeout=10).raise_for_status()
    bucket = cloud.runtime().clients.storage.bucket(cloud.settings.results_bucket)
    name = f"limits/{new_batch_id()}"
    bucket.blob(name).upload_from_string("a", retry=None)
    with pytest.raises(exceptions.TooManyRequests):
        bucket.blob(name).upload_from_string("b", retry=None)
    # Google's envelope, as a client that reads it (gcloud, the JSON API) sees it.
    raw = cloud.http.post(
        f"{front}/upload/storage/v1/b/{bucket.name}/o",
        params={"uploadType": "media", "name": name},
        data=b"c",
        timeout=10,
    )
    assert raw.status_code == 429
    assert raw.json()["error"]["errors"][0] | {"message": ""} == {
        "message": "",
        "domain": "usageLimits",
        "reason": "rateLimitExceeded",
    }
    stats = requests.get(f"{front}/_front/stats", timeout=10).json()
    assert stats["refused"] == {"object": 2}
    assert stats["max_writes_per_object_per_second"] == 1
    assert stats["busiest_object"].endswith(name)


def test_the_product_state_store_stays_under_one_write_per_second_per_object(cloud: Cloud) -> None:
    cloud.local.set_limits(limits.GOOGLE)
    front = cloud.env["STORAGE_EMULATOR_HOST"]
    requests.post(f"{front}/_front/stats/reset", timeout=10).raise_for_status()
    state = cloud.runtime().state
    path = f"limits/{new_batch_id()}.json"
    assert state.create(path, {"n": 0})
    for _ in range(3):  # a chain of compare-and-swaps, as one function's steps on one record
        state.update(path, lambda doc: {"n": doc["n"] + 1})
    assert state.read(path).data == {"n": 3}  # type: ignore[union-attr]
    stats = requests.get(f"{front}/_front/stats", timeout=10).json()
    assert stats["refused"] == {}, "the store paces its own writes of one object"
    assert stats["max_writes_per_object_per_second"] == 1


@pytest.mark.gce  # also under Google's timings (make test-gce)
def test_two_points_one_second_apart_on_one_series_are_refused(cloud: Cloud) -> None:
    cloud.local.set_limits(limits.GOOGLE)
    rt = cloud.runtime()
    labels = {"batch_id": new_batch_id(), "experiment": "e", "reason": "r"}

    def point(seconds: float, **more: str) -> monitoring_v3.TimeSeries:
        series = monitoring_v3.TimeSeries()
        series.metric.type = "custom.googleapis.com/sinergym/limits_probe"
        series.metric.labels.update({**labels, **more})
        series.resource.type = "global"
        series.resource.labels["project_id"] = PROJECT
        whole = int(seconds)
        series.points = [
            monitoring_v3.Point(
                {
                    "interval": {"end_time": {"seconds": whole, "nanos": int((seconds - whole) * 1e9)}},
                    "value": {"double_value": 1.0},
                }
            )
        ]
        return series

    now = time.time()
    rt.clients.metrics.create_time_series(name=f"projects/{PROJECT}", time_series=[point(now)])
    with pytest.raises(exceptions.InvalidArgument) as refused:
        rt.clients.metrics.create_time_series(name=f"projects/{PROJECT}", time_series=[point(now + 1)])
    assert "maximum sampling period" in str(refused.value)
    rt.clients.metrics.create_time_series(name=f"projects/{PROJECT}", time_series=[point(now + 1, experiment="f")])
    rt.clients.metrics.create_time_series(name=f"projects/{PROJECT}", time_series=[point(now + 5)])
    too_many = [point(now + 10, experiment=str(i)) for i in range(201)]
    with pytest.raises(exceptions.InvalidArgument):
        rt.clients.metrics.create_time_series(name=f"projects/{PROJECT}", time_series=too_many)


def test_the_products_metric_is_written_again_after_the_sampling_period(cloud: Cloud) -> None:
    cloud.local.set_limits(limits.GOOGLE)
    rt = cloud.runtime()
    batch_id = new_batch_id()
    metrics.experiment_failed(rt.clients, {"batch_id": batch_id, "experiment": "e", "reason": "boom"})
    started = time.monotonic()
    metrics.experiment_failed(rt.clients, {"batch_id": batch_id, "experiment": "e", "reason": "boom"})  # again
    assert time.monotonic() - started >= metrics.SAMPLING_SECONDS
    assert len(metrics.raised(rt.clients, batch_id)) == 2


@pytest.mark.gce  # also under Google's timings (make test-gce)
def test_a_burst_of_instance_reads_over_a_lowered_quota_meets_rate_limit_exceeded(cloud: Cloud) -> None:
    rt = cloud.runtime()
    quotas = {"read_requests": 20, "list_requests": 1500, "operation_read_requests": 1500, "default": 1500}
    calls = cloud.emulator("calls")
    cloud.local.set_limits(limits.GOOGLE.with_(compute_requests_per_minute=quotas))
    answered, refused = 0, []
    for _ in range(50):  # instances.get of a VM that does not exist: a 404 counts against the quota too
        try:
            rt.clients.instances.get(project=PROJECT, zone=ZONE, instance=f"nope-{new_batch_id()}", retry=None)
        except exceptions.NotFound:
            answered += 1
        except exceptions.Forbidden as exc:
            refused.append(exc)
    # The quota is the project's: the local cloud's own readers (the sweeper, the VMs' agents) spend
    # it too, so the burst gets at most the quota, twice if the minute turns during it.
    assert 0 < answered <= 40 and answered + len(refused) == 50, (answered, len(refused))
    assert errors.reasons(refused[0]) >= {"rateLimitExceeded"}
    assert errors.is_transient(refused[0]), "the product retries it"
    after = cloud.emulator("calls")
    assert after["refused"].get("instances.get", 0) - calls["refused"].get("instances.get", 0) >= len(refused)


def test_a_zonal_group_holds_at_most_its_limit(cloud: Cloud) -> None:
    rt = cloud.runtime()
    api = compute_module.ComputeApi(rt.clients, rt.settings.project)
    group = f"lim-{new_batch_id()}"
    api.ensure_group(ZONE, group, "sinergym-template", batch_id="b")
    cloud.local.set_limits(limits.GOOGLE.with_(mig_max_instances=2))
    cloud.emulator("config", {"zone_exhausted": True})  # nothing boots: the count is what matters
    wanted = {f"{group}-{i}": {} for i in range(3)}
    with pytest.raises(exceptions.BadRequest):
        api.create_instances(ZONE, group, wanted)
    api.create_instances(ZONE, group, dict(list(wanted.items())[:2]))
    api.delete_group(ZONE, group)


def test_a_function_serves_one_request_per_instance_and_refuses_past_its_instances(tmp_path: object) -> None:
    source = limits.Source()
    source._limits = limits.GOOGLE.with_(  # no file: the limits are set in hand
        function_max_instances=2, function_cold_start_seconds=(0.2, 0.2), function_pending_seconds=0.3
    )
    pool = Instances(source)
    assert pool.enter() == pytest.approx(0.2)  # the first request starts an instance
    assert pool.enter() == pytest.approx(0.2)  # so does a second one at the same time
    started = time.monotonic()
    assert pool.enter() is None, "a third waits for one to free, then gets 429"
    assert time.monotonic() - started >= 0.3
    freed = threading.Timer(0.1, pool.leave)
    freed.start()
    assert pool.enter() == 0.0, "a request that waits for a busy instance takes it warm"
    freed.join()
    assert (pool.started, pool.refused) == (2, 1)


def test_limits_are_google_under_the_gce_profile_and_named_in_one_table() -> None:
    from localcloud.settings import Options

    assert Options(profile="gce").limits_choice == "google"
    assert Options(profile="fast").limits_choice == "none"
    assert Options(profile="fast", limits="google").limits_choice == "google"
    assert limits.named("google").gcs_object_writes_per_second == 1.0
    assert not limits.NONE.enforced and limits.GOOGLE.enforced
    assert limits.Limits.from_json(limits.GOOGLE.to_json()) == limits.GOOGLE
    with pytest.raises(ValueError, match="unknown limit"):
        limits.Limits.from_json({"gcs_writes": 1})
