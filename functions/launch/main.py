"""Cloud Function ``launch`` (2nd gen, CloudEvent from Pub/Sub).

On a batch message: validate, record, create the group and one VM per experiment.

A thin entry point: decoding, the error policy and the work live in ``sinergym_cloud``.
"""

import logging

import functions_framework
from cloudevents.http import CloudEvent

from sinergym_cloud import names
from sinergym_cloud.control import events
from sinergym_cloud.control import launch as core
from sinergym_cloud.gcp import runtime

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@functions_framework.cloud_event
def launch(cloud_event: CloudEvent) -> None:
    rt = runtime.get()
    try:
        events.handle(cloud_event, names.TOPIC_BATCHES, lambda d: core.handle(rt, d), rt.clients.publish)
    finally:
        rt.drain()  # the events published beside the work (batch-events)
