"""What Terraform creates in the cloud, made on a fresh local cloud: topics with their dead-letter
topics, the batch-events topic, the functions' subscriptions (pulled and pushed by delivery.py),
the buckets, the instance template and the alert policies."""

from __future__ import annotations

import contextlib
import getpass
import json
from typing import TYPE_CHECKING

import requests

from localcloud import profiles
from localcloud.settings import (
    ACK_DEADLINES,
    MAX_DELIVERY_ATTEMPTS,
    PROJECT,
    REPO,
    RESULTS_BUCKET,
    RETRY_BACKOFF,
    STATE_BUCKET,
)
from sinergym_cloud import names

if TYPE_CHECKING:
    from localcloud.cloud import LocalCloud


def provision(cloud: LocalCloud, ports: dict[str, int], env: dict[str, str]) -> None:
    from google.api_core import exceptions
    from google.cloud import compute_v1, monitoring_v3

    from sinergym_cloud.config import Settings
    from sinergym_cloud.gcp.clients import Clients

    clients = Clients(Settings.from_env({**env, "LOCALCLOUD_TOKEN": cloud.token("admin")}))  # Terraform's part
    pub, sub = clients.publisher, clients.subscriber
    for topic in names.TOPICS:
        for t in (topic, names.dead_letter_topic(topic)):
            with contextlib.suppress(exceptions.AlreadyExists):
                pub.create_topic(name=clients.topic_path(t))
    with contextlib.suppress(exceptions.AlreadyExists):  # what other services subscribe to (no function does)
        pub.create_topic(name=clients.topic_path(names.TOPIC_EVENTS))
    backoff = RETRY_BACKOFF[cloud.options.profile]
    for function, topic in names.FUNCTION_TOPICS.items():
        # A pull subscription with the push subscription's settings: localcloud/delivery.py pushes it.
        with contextlib.suppress(exceptions.AlreadyExists):
            sub.create_subscription(
                request={
                    "name": f"projects/{PROJECT}/subscriptions/{names.push_subscription(function)}",
                    "topic": clients.topic_path(topic),
                    "ack_deadline_seconds": ACK_DEADLINES[function],
                    "retry_policy": {
                        "minimum_backoff": {"seconds": round(backoff[0] * cloud.options.scale)},
                        "maximum_backoff": {"seconds": round(backoff[1] * cloud.options.scale)},
                    },
                    "dead_letter_policy": {
                        "dead_letter_topic": clients.topic_path(names.dead_letter_topic(topic)),
                        "max_delivery_attempts": MAX_DELIVERY_ATTEMPTS,
                    },
                }
            )
        # A pull subscription on each dead-letter topic, so that dead letters can be read back.
        dead = names.dead_letter_topic(topic)
        with contextlib.suppress(exceptions.AlreadyExists):
            sub.create_subscription(
                request={
                    "name": f"projects/{PROJECT}/subscriptions/{dead}-inspect",
                    "topic": clients.topic_path(dead),
                }
            )
    for bucket in (STATE_BUCKET, RESULTS_BUCKET):
        with contextlib.suppress(exceptions.Conflict):
            clients.storage.create_bucket(bucket)
    public_key = (cloud.ssh_key.parent / "id_ed25519.pub").read_text().strip()
    template = compute_v1.InstanceTemplate(
        name="sinergym-template",
        description="Local VM template: a real sshd and the trainer runtime of this checkout.",
        properties=compute_v1.InstanceProperties(
            machine_type="e2-standard-2",
            labels={"app": "sinergym"},
            metadata=compute_v1.Metadata(
                items=[
                    compute_v1.Items(key="ssh-keys", value=f"{getpass.getuser()}:{public_key}"),
                    compute_v1.Items(key=names.META_READY_TOPIC, value=names.TOPIC_READY),
                    # The host keys reach dispatch through guest attributes, as on Compute Engine.
                    compute_v1.Items(key="enable-guest-attributes", value="TRUE"),
                ]
            ),
            scheduling=compute_v1.Scheduling(provisioning_model="SPOT", instance_termination_action="DELETE"),
            # As infra/terraform/modules/trainer-vm deploys it (the local VM ignores both).
            disks=[
                compute_v1.AttachedDisk(
                    boot=True,
                    auto_delete=True,
                    initialize_params=compute_v1.AttachedDiskInitializeParams(
                        source_image="projects/cos-cloud/global/images/family/cos-stable",
                        disk_size_gb=20,
                        disk_type="pd-balanced",
                    ),
                )
            ],
            service_accounts=[
                compute_v1.ServiceAccount(
                    email=f"sinergym-trainer@{PROJECT}.iam.gserviceaccount.com",
                    scopes=["https://www.googleapis.com/auth/cloud-platform"],
                )
            ],
        ),
    )
    with contextlib.suppress(exceptions.Conflict):
        clients.templates.insert_unary(project=PROJECT, instance_template_resource=template)
    requests.post(
        f"http://127.0.0.1:{ports['compute']}/_emulator/config",
        json={
            **profiles.settings(cloud.options.profile, cloud.options.scale),
            **({"boot_delay": cloud.options.boot_delay} if cloud.options.boot_delay else {}),
        },
        timeout=5,
    ).raise_for_status()
    policies = json.loads((REPO / "infra" / "monitoring" / "alert_policies.json").read_text())
    docs = (REPO / "docs").as_uri()  # Terraform puts var.docs_url here; locally, this checkout's docs
    for p in policies:
        clients.alert_policies.create_alert_policy(
            name=f"projects/{PROJECT}",
            alert_policy=monitoring_v3.AlertPolicy(
                display_name=p["display_name"],
                combiner=monitoring_v3.AlertPolicy.ConditionCombinerType.OR,
                severity=getattr(monitoring_v3.AlertPolicy.Severity, p["severity"]),
                documentation={
                    "content": p["documentation"],
                    "subject": p["subject"],
                    "mime_type": "text/markdown",
                    "links": [
                        {"display_name": link["display_name"], "url": link["url"].replace("{docs}", docs)}
                        for link in p.get("links", [])
                    ],
                },
                alert_strategy={"auto_close": {"seconds": int(p["auto_close_seconds"])}},
                conditions=[
                    {
                        "display_name": p["display_name"],
                        "condition_threshold": {
                            "filter": f'metric.type = "{p["metric"]}" AND resource.type = "global"',
                            "comparison": getattr(monitoring_v3.ComparisonType, p["comparison"]),
                            "threshold_value": p["threshold"],
                            "duration": {"seconds": 0},
                        },
                    }
                ],
            ),
        )
