"""Cloud Function ``dispatch`` (2nd gen, CloudEvent from Pub/Sub).

On an instance-ready message: SSH to the VM and start its experiment's trainer.

A thin entry point: decoding, the error policy and the work live in ``sinergym_cloud``.
"""

import logging

import functions_framework
from cloudevents.http import CloudEvent

from sinergym_cloud import names
from sinergym_cloud.control import dispatch as core
from sinergym_cloud.control import events
from sinergym_cloud.gcp import runtime

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@functions_framework.cloud_event
def dispatch(cloud_event: CloudEvent) -> None:
    rt = runtime.get()
    try:
        events.handle(cloud_event, names.TOPIC_READY, lambda d: core.handle(rt, d), rt.clients.publish)
    finally:
        rt.drain()  # the events published beside the work (batch-events)
