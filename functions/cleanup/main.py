"""Cloud Function ``cleanup`` (2nd gen, CloudEvent from Pub/Sub).

On a completion message: record the result, remove the VM, tear the batch down when done.

A thin entry point: decoding, the error policy and the work live in ``sinergym_cloud``.
"""

import logging

import functions_framework
from cloudevents.http import CloudEvent

from sinergym_cloud import names
from sinergym_cloud.control import cleanup as core
from sinergym_cloud.control import events
from sinergym_cloud.gcp import runtime

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@functions_framework.cloud_event
def cleanup(cloud_event: CloudEvent) -> None:
    rt = runtime.get()
    try:
        events.handle(cloud_event, names.TOPIC_COMPLETIONS, lambda d: core.handle(rt, d), rt.clients.publish)
    finally:
        rt.drain()  # the events published beside the work (batch-events)
