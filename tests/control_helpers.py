"""Helpers for control-plane tests: batches, quiet VMs, message capture."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

from google.api_core import exceptions
from google.cloud import compute_v1

from sinergym_cloud import contracts, names, signing
from sinergym_cloud.contracts import Batch, Completion, Experiment, ExperimentStatus, InstanceReady
from sinergym_cloud.control import cleanup
from sinergym_cloud.errors import BatchNotFound
from sinergym_cloud.gcp.runtime import Runtime
from sinergym_cloud.publisher import views
from sinergym_cloud.records import ExperimentRecord
from tests.conftest import Cloud, new_batch_id, wait_for

PROJECT = "local-project"
ZONE = "europe-west1-b"
WEEK = (1, 1, 1991, 7, 1, 1991)
QUIET_TEMPLATE = "quiet-template"
QUIET_TOPIC = "instance-ready-quiet"


def ppo(seed: int = 1, episodes: int = 1, **extra: Any) -> Experiment:
    return Experiment.model_validate(
        {
            "environment": "Eplus-5zone-hot-continuous-v1",
            "algorithm": "PPO",
            "episodes": episodes,
            "seed": seed,
            "runperiod": WEEK,
            "hyperparameters": {"n_steps": 128},
            **extra,
        }
    )


def dqn(seed: int = 2, episodes: int = 1, **extra: Any) -> Experiment:
    return Experiment.model_validate(
        {
            "environment": "Eplus-5zone-hot-discrete-v1",
            "algorithm": "DQN",
            "episodes": episodes,
            "seed": seed,
            "runperiod": WEEK,
            "hyperparameters": {"learning_starts": 100, "buffer_size": 5000},
            **extra,
        }
    )


def make_batch(*experiments: Experiment, template: str = "sinergym-template", **fields: Any) -> Batch:
    return Batch(
        batch_id=fields.pop("batch_id", None) or new_batch_id(),
        template_name=template,
        experiments=list(experiments),
        **fields,
    )


def publish_batch(rt: Runtime, batch: Batch) -> str:
    return rt.clients.publish(names.TOPIC_BATCHES, contracts.dump(batch), batch_id=batch.batch_id)


def batch_status(rt: Runtime, batch_id: str) -> dict[str, Any] | None:
    """The batch's ``status --json`` document (what scripts read), or None while launch has not recorded it."""
    try:
        return views.batch_status(rt, batch_id, with_alerts=False).as_json()
    except BatchNotFound:
        return None


def wait_batch(rt: Runtime, batch_id: str, timeout: float, until: str = "finished") -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        info = batch_status(rt, batch_id)
        if info is None:
            return None
        if until == "finished":
            return info if info["status"] in ("finished", "cancelled", "failed") and info["done"] else None
        if until == "launched":
            return info if info["status"] != "launching" else None
        if until == "running":
            return info if info["experiments"] and all(e["state"] == "running" for e in info["experiments"]) else None
        raise ValueError(until)

    return wait_for(check, timeout, f"batch {batch_id} {until}", every=0.3)


def ensure_quiet_template(cloud: Cloud) -> None:
    """A template whose VMs announce themselves on a test topic: dispatch is left to the test."""
    rt = cloud.runtime()
    with contextlib.suppress(exceptions.AlreadyExists):
        rt.clients.publisher.create_topic(name=rt.clients.topic_path(QUIET_TOPIC))
    with contextlib.suppress(exceptions.AlreadyExists):
        rt.clients.subscriber.create_subscription(
            name=f"projects/{PROJECT}/subscriptions/{QUIET_TOPIC}-pull", topic=rt.clients.topic_path(QUIET_TOPIC)
        )
    base = rt.clients.templates.get(project=PROJECT, instance_template="sinergym-template")
    items = [i for i in base.properties.metadata.items if i.key != names.META_READY_TOPIC]
    items.append(compute_v1.Items(key=names.META_READY_TOPIC, value=QUIET_TOPIC))
    template = compute_v1.InstanceTemplate(
        name=QUIET_TEMPLATE,
        properties=compute_v1.InstanceProperties(
            machine_type=base.properties.machine_type, metadata=compute_v1.Metadata(items=items)
        ),
    )
    with contextlib.suppress(exceptions.Conflict):
        rt.clients.templates.insert_unary(project=PROJECT, instance_template_resource=template)


def quiet_ready(cloud: Cloud, instance: str, timeout: float = 60) -> InstanceReady:
    """The instance-ready message a quiet VM published (other messages are put back)."""
    rt = cloud.runtime()
    sub = f"projects/{PROJECT}/subscriptions/{QUIET_TOPIC}-pull"
    found: list[InstanceReady] = []

    def pull() -> bool:
        response = rt.clients.subscriber.pull(
            request={"subscription": sub, "max_messages": 50, "return_immediately": True}, timeout=10
        )
        mine, others = [], []
        for m in response.received_messages:
            ready = contracts.parse(InstanceReady, m.message.data)
            (mine if ready.instance == instance else others).append((m, ready))
        if mine:
            rt.clients.subscriber.acknowledge(request={"subscription": sub, "ack_ids": [m.ack_id for m, _ in mine]})
            found.append(mine[-1][1])
        if others:
            rt.clients.subscriber.modify_ack_deadline(
                request={"subscription": sub, "ack_ids": [m.ack_id for m, _ in others], "ack_deadline_seconds": 0}
            )
        return bool(found)

    wait_for(pull, timeout, f"instance-ready from {instance}", every=0.3)
    return found[0]


def completion(
    rt: Runtime, batch_id: str, index: int, status_: ExperimentStatus = "succeeded", boot_id: str = "boot-1"
) -> Completion:
    record = views.batch_status(rt, batch_id, with_compute=False, with_alerts=False).experiments[index]
    return Completion(
        batch_id=batch_id,
        experiment_index=index,
        experiment_name=record.name,
        instance=record.instance,
        zone=ZONE,
        boot_id=boot_id,
        status=status_,
        exit_reason="" if status_ == "succeeded" else "test",
    )


def start_boot(rt: Runtime, batch_id: str, index: int, boot_id: str = "boot-1") -> str:
    """Leave the experiment as dispatch leaves it (boot claimed, trainer running), without SSH:
    for tests that play the trainer themselves. Returns the boot's completion key."""
    secret = signing.deployment_secret(rt.settings)
    nonce = signing.new_nonce()
    key = signing.completion_key(secret, batch_id, index, boot_id, nonce)

    def change(doc: dict[str, Any]) -> dict[str, Any]:
        r = ExperimentRecord.model_validate(doc)
        r.state, r.boot_id, r.attempts = "running", boot_id, r.attempts + 1
        r.dispatched_at = r.running_at = time.time()
        r.completion_nonce, r.completion_key_sha256 = nonce, signing.key_hash(key)
        return r.doc()

    rt.state.update(
        names.experiment_object(batch_id, index),
        change,
        metadata=lambda d: ExperimentRecord.model_validate(d).object_metadata(),
    )
    return key


def signed(message: Completion, key: str) -> tuple[bytes, dict[str, str]]:
    """A Completion's wire form and attributes, signed as the trainer signs it."""
    data = contracts.dump(message)
    return data, {signing.SIGNATURE_ATTRIBUTE: signing.sign(key, data)}


def deliver(rt: Runtime, message: Completion, key: str | None, owner: str = "m1") -> ExperimentRecord:
    """Run cleanup on a Completion as its function would, signed with ``key`` (None: unsigned)."""
    data, attributes = signed(message, key) if key else (contracts.dump(message), {})
    signature = cleanup.Signature(data, attributes.get(signing.SIGNATURE_ATTRIBUTE))
    return cleanup.complete(rt, message, owner=owner, signature=signature)


def publish_completion(rt: Runtime, message: Completion, key: str) -> str:
    data, attributes = signed(message, key)
    return rt.clients.publish(names.TOPIC_COMPLETIONS, data, **attributes)


def mig_events(cloud: Cloud, mig: str, since: float, kind: str) -> list[dict[str, Any]]:
    return [e for e in cloud.events(since, kind) if e.get("mig") == mig]


@contextlib.contextmanager
def elapsed() -> Iterator[list[float]]:
    box: list[float] = []
    start = time.monotonic()
    yield box
    box.append(time.monotonic() - start)
