"""Cloud Scheduler's part on the local cloud: publish a tick to a topic at a fixed interval."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time

from sinergym_cloud.config import Settings
from sinergym_cloud.gcp.clients import Clients

log = logging.getLogger("localcloud.scheduler")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Publish a message to a topic every N seconds.")
    parser.add_argument("--topic", required=True)
    parser.add_argument("--every", type=float, required=True, help="seconds between messages")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    clients = Clients(Settings.from_env())
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.wait(args.every):
        body = json.dumps({"scheduled_at": time.time()}).encode()
        try:
            clients.publish(args.topic, body, timeout=10)
        except Exception as exc:  # noqa: BLE001 - a missed tick is logged; the next one comes anyway
            log.warning("tick not published: %s", exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
