"""Push delivery as Pub/Sub does it in the cloud, from Google's Pub/Sub emulator to the functions.

The emulator stays the broker: it stores the messages, leases them, counts delivery attempts,
applies the subscription's retry policy to what is nacked and moves a message to the dead-letter
topic after ``max_delivery_attempts`` (its pull path implements all of that). What it does not do
like the cloud is *push*: its push path sends at most two requests at a time per subscription (a
constant in its jar) and retries without backoff. So the local cloud's subscriptions are pull
subscriptions carrying the deployment's ack deadline, retry policy and dead-letter policy, and this
process does the pushing:

- it pulls with the official client (unary ``Pull``, as many messages as its window has room for,
  so the window is the flow control). Not ``StreamingPull``: the emulator's streaming pull resets
  the stream on a message near Pub/Sub's 10 MB limit (a ``NoSuchMethodError`` inside its jar, seen
  with a 4 MB message), and the messages of that response stay leased until their ack deadline,
  again and again;
- it POSTs the push envelope the cloud posts (``message`` with ``data``, ``attributes``,
  ``messageId``/``message_id``, ``publishTime``/``publish_time``; ``subscription``;
  ``deliveryAttempt`` when the subscription has a dead-letter policy) to the function's
  functions-framework endpoint ``.../projects/<p>/topics/<t>``, which turns it into the same
  CloudEvent Eventarc sends, with the subscription's ack deadline as the request deadline;
- it acknowledges on the status codes Pub/Sub push takes as success (102, 200, 201, 202, 204)
  and nacks on anything else, a timeout or a refused connection, so the broker redelivers with
  the subscription's backoff and eventually dead-letters;
- its concurrency per subscription starts at ``--initial-window`` (16) and grows by one with each
  success up to ``--max-outstanding``, and halves (not below the initial window) on a failure: the
  slow-start-like behaviour Pub/Sub push documents, with the emulator's ceiling of two removed;
- with Google's limits on (limits.py) it is also Cloud Run's front end for each function
  (``Instances``): at most ``function_max_instances`` instances, each serving one request at a
  time; a push that finds them all busy waits a moment for one and is then answered 429, which
  Pub/Sub takes as a nack (redelivered with the subscription's backoff); a new instance pays a
  cold start first; a request runs at most ``function_timeout_seconds`` (540 s for an event
  function). So a burst of a thousand events is handled at the rate twenty instances handle it.

A test (or the soak, tests/soak) can make it misbehave as Pub/Sub may: ``<LOCALCLOUD_DIR>/delivery-faults.json``
(``Faults``, read again when it changes, as limits.json is) lists rules, each for the next ``count``
messages of one subscription (``"*"``: any): ``duplicate`` pushes each twice at once (at-least-once
delivery: a redelivery racing the first), ``delay`` holds each ``seconds`` before pushing it, and
``reorder`` holds them until ``count`` have arrived (or ``seconds`` passed) and pushes them last
first. Every applied rule is logged with its id.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import random
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests
from google.api_core import exceptions
from google.cloud import pubsub_v1  # type: ignore[attr-defined]  # the package declares no such name to mypy

from localcloud.limits import Source

log = logging.getLogger("localcloud.delivery")

FAULTS_FILE = "delivery-faults.json"
FAULT_KINDS = ("duplicate", "delay", "reorder")

# https://cloud.google.com/pubsub/docs/push#receive_push: these acknowledge; anything else is a nack.
ACK_CODES = frozenset({102, 200, 201, 202, 204})


class Window:
    """How many pushes may be in flight: grows by one per success, halves on a failure."""

    def __init__(self, initial: int, ceiling: int) -> None:
        self.floor = initial
        self.ceiling = max(ceiling, initial)
        self.size = initial
        self.busy = 0
        self.peak = 0
        self.cond = threading.Condition()

    def room(self, wait: float) -> int:
        """How many more pushes may start (waiting up to ``wait`` seconds for at least one)."""
        with self.cond:
            self.cond.wait_for(lambda: self.busy < self.size, timeout=wait)
            return max(0, self.size - self.busy)

    def acquire(self) -> None:
        with self.cond:
            self.cond.wait_for(lambda: self.busy < self.size)
            self.busy += 1
            self.peak = max(self.peak, self.busy)

    def release(self, ok: bool) -> None:
        with self.cond:
            self.busy -= 1
            self.size = min(self.ceiling, self.size + 1) if ok else max(self.floor, self.size // 2)
            self.cond.notify_all()


class Instances:
    """A function's instances as Cloud Run keeps them: each serves one request at a time; an idle one
    is kept ``function_idle_seconds``; a request that finds none idle starts a new one (a cold start)
    while there are fewer than ``function_max_instances``, else waits ``function_pending_seconds``
    for one to free and is refused (429)."""

    def __init__(self, limits: Source, time_scale: float = 1.0) -> None:
        self.limits = limits
        self.scale = time_scale
        self.cond = threading.Condition()
        self.busy = 0
        self.idle: list[float] = []  # when each idle instance became idle
        self.started = 0  # instances started (cold starts), for the figures
        self.refused = 0

    def enter(self) -> float | None:
        """Take an instance for one request: the cold start to wait first (0 for a warm one), or
        None if every instance stayed busy (answer 429)."""
        limits = self.limits.get()
        cap = limits.function_max_instances
        with self.cond:
            deadline = time.monotonic() + limits.function_pending_seconds * self.scale
            while True:
                now = time.monotonic()
                self.idle = [t for t in self.idle if now - t < limits.function_idle_seconds]
                if self.idle:
                    self.idle.pop()
                    self.busy += 1
                    return 0.0
                if cap is None or self.busy < cap:
                    self.busy += 1
                    self.started += 1
                    cold = limits.function_cold_start_seconds
                    return random.uniform(*cold) * self.scale if cold else 0.0
                if now >= deadline or not self.cond.wait(deadline - now):
                    self.refused += 1
                    return None

    def leave(self) -> None:
        with self.cond:
            self.busy -= 1
            self.idle.append(time.monotonic())
            self.cond.notify()


class Reorder:
    """Messages held together and pushed in reverse order of arrival: the last first."""

    GAP = 0.2  # seconds between two of them, so the order in which they reach the function is the reversed one

    def __init__(self, size: int, wait: float) -> None:
        self.size = max(1, size)
        self.wait = wait
        self.cond = threading.Condition()
        self.arrived = 0
        self.released = False
        self.started = time.monotonic()

    def hold(self) -> None:
        """Wait for the group to fill (or its time to pass), then for this message's turn."""
        with self.cond:
            rank = self.arrived
            self.arrived += 1
            if self.arrived >= self.size:
                self.released = True
                self.cond.notify_all()
            deadline = self.started + self.wait
            while not self.released:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self.released = True
                    self.cond.notify_all()
                    break
                self.cond.wait(remaining)
            held = self.arrived
        time.sleep((held - 1 - rank) * self.GAP)


class Faults:
    """The delivery faults in force (``delivery-faults.json`` in LOCALCLOUD_DIR): each rule applies to
    the next ``count`` messages of its subscription, counted here from the moment it first appears."""

    def __init__(self, state_dir: str | None = None) -> None:
        base = state_dir or os.environ.get("LOCALCLOUD_DIR")
        self.path = os.path.join(base, FAULTS_FILE) if base else None
        self.lock = threading.Lock()
        self.seen: tuple[float, int] | None = None
        self.rules: dict[str, dict[str, Any]] = {}
        self.left: dict[str, int] = {}
        self.groups: dict[str, Reorder] = {}

    def _read(self) -> None:
        if self.path is None:
            return
        try:
            stat = os.stat(self.path)
        except OSError:
            self.rules = {}
            return
        key = (stat.st_mtime, stat.st_size)
        if key == self.seen:
            return
        try:
            with open(self.path) as f:
                rules = json.load(f).get("rules", [])
            parsed = {str(r["id"]): dict(r) for r in rules if r.get("kind") in FAULT_KINDS}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("delivery faults: cannot read %s (%s); keeping the previous ones", self.path, exc)
            return
        self.seen = key
        self.rules = parsed
        for rid, rule in parsed.items():
            self.left.setdefault(rid, int(rule.get("count", 1)))

    def take(self, subscription: str) -> tuple[str, dict[str, Any], Reorder | None] | None:
        """The fault to apply to the next message of ``subscription`` (its id, rule and, for a
        reorder, its group), or None."""
        short = subscription.rsplit("/", 1)[-1]
        with self.lock:
            self._read()
            for rid, rule in self.rules.items():
                if rule.get("subscription", "*") not in ("*", short) or self.left.get(rid, 0) <= 0:
                    continue
                self.left[rid] -= 1
                group = None
                if rule["kind"] == "reorder":
                    group = self.groups.setdefault(
                        rid, Reorder(int(rule.get("count", 1)), float(rule.get("seconds", 5.0)))
                    )
                return rid, rule, group
        return None


def envelope(received: Any, subscription: str, dead_letter: bool) -> dict[str, Any]:
    """The JSON body Pub/Sub push POSTs for a pulled message (a ``ReceivedMessage``)."""
    message = received.message
    published = message.publish_time.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    body: dict[str, Any] = {
        "data": base64.b64encode(message.data).decode(),
        "messageId": message.message_id,
        "message_id": message.message_id,
        "publishTime": published,
        "publish_time": published,
    }
    if message.attributes:
        body["attributes"] = dict(message.attributes)
    if message.ordering_key:
        body["orderingKey"] = message.ordering_key
    pushed: dict[str, Any] = {"message": body, "subscription": subscription}
    if dead_letter and received.delivery_attempt:
        pushed["deliveryAttempt"] = received.delivery_attempt
    return pushed


class Route:
    """One subscription pushed to one endpoint."""

    def __init__(
        self, subscriber: pubsub_v1.SubscriberClient, subscription: str, endpoint: str, args: Any, faults: Faults
    ) -> None:
        self.subscriber = subscriber
        self.subscription = subscription
        self.endpoint = endpoint
        self.window = Window(args.initial_window, args.max_outstanding)
        self.max_outstanding = args.max_outstanding
        self.session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_maxsize=args.max_outstanding, pool_connections=1)
        self.session.mount("http://", adapter)
        self.deadline = 10.0
        self.dead_letter = False
        self.limits = Source()
        self.instances = Instances(self.limits, args.time_scale)
        self.faults = faults

    def open(self, wait: float) -> None:
        """Read the subscription's settings (it may not exist yet while the local cloud provisions)."""
        end = time.monotonic() + wait
        while True:
            try:
                found = self.subscriber.get_subscription(subscription=self.subscription, timeout=10)
                break
            except exceptions.NotFound:
                if time.monotonic() > end:
                    raise
                time.sleep(0.2)
        if found.push_config.push_endpoint:
            raise SystemExit(f"{self.subscription} is a push subscription: the emulator would push it too")
        self.deadline = float(found.ack_deadline_seconds or 10)
        self.dead_letter = bool(found.dead_letter_policy.dead_letter_topic)
        log.info("pushing %s to %s (deadline %.0fs)", self.subscription, self.endpoint, self.deadline)

    def run(self, stop: threading.Event) -> None:
        """Pull as much as the window has room for and push each message on its own thread."""
        executor = ThreadPoolExecutor(max_workers=self.max_outstanding, thread_name_prefix=self.subscription[-20:])
        while not stop.is_set():
            room = self.window.room(wait=1.0)
            if not room:
                continue
            try:
                response = self.subscriber.pull(
                    request={"subscription": self.subscription, "max_messages": room}, timeout=10, retry=None
                )
            except (exceptions.DeadlineExceeded, exceptions.ServiceUnavailable):
                continue  # nothing arrived within the long poll, or the emulator is busy
            except exceptions.GoogleAPICallError as exc:
                log.warning("%s: pull failed: %s", self.subscription, exc)
                stop.wait(1.0)
                continue
            for received in response.received_messages:
                self.window.acquire()
                executor.submit(self.deliver, received)
        executor.shutdown(wait=False, cancel_futures=True)

    def push(self, received: Any) -> int:
        """POST the message to the function through one of its instances; the HTTP status (0: no
        answer), 429 when no instance took it."""
        cold = self.instances.enter()
        if cold is None:
            log.info("%s: every instance of %s busy: 429", self.subscription, self.endpoint)
            return 429
        try:
            if cold:
                time.sleep(cold)  # the new instance starts
            timeout = self.deadline
            most = self.limits.get().function_timeout_seconds
            if most is not None:
                timeout = min(timeout, most)
            response = self.session.post(
                self.endpoint,
                json=envelope(received, self.subscription, self.dead_letter),
                headers={"User-Agent": "APIs-Google; (+https://developers.google.com/webmasters/APIs-Google.html)"},
                timeout=timeout,
            )
            return response.status_code
        except requests.RequestException as exc:
            log.info("%s: push of %s failed: %s", self.subscription, received.message.message_id, exc)
            return 0
        finally:
            self.instances.leave()

    def misbehave(self, received: Any) -> None:
        """Apply the delivery fault in force for this message, if any (Faults)."""
        fault = self.faults.take(self.subscription)
        if fault is None:
            return
        rid, rule, group = fault
        kind = rule["kind"]
        log.info("fault %s: %s of %s on %s", rid, kind, received.message.message_id, self.subscription)
        if kind == "delay":
            time.sleep(float(rule.get("seconds", 1.0)))
        elif kind == "reorder" and group is not None:
            group.hold()
        elif kind == "duplicate":  # the same message pushed again, at the same time
            threading.Thread(target=self.push, args=(received,), daemon=True).start()

    def deliver(self, received: Any) -> None:
        ok = False
        try:
            started = time.monotonic()
            self.misbehave(received)
            status = self.push(received)
            ok = status in ACK_CODES
            log.debug("%s %s -> %s in %.3fs", self.subscription, received.message.message_id, status,
                      time.monotonic() - started)  # fmt: skip
            if ok:
                self.subscriber.acknowledge(subscription=self.subscription, ack_ids=[received.ack_id], timeout=30)
            else:
                log.info("%s: %s answered %s (attempt %s): nack", self.subscription, received.message.message_id,
                         status, received.delivery_attempt)  # fmt: skip
                # A nack: the broker redelivers after the subscription's backoff.
                self.subscriber.modify_ack_deadline(
                    subscription=self.subscription, ack_ids=[received.ack_id], ack_deadline_seconds=0, timeout=30
                )
        except exceptions.GoogleAPICallError as exc:  # the lease runs out and the broker redelivers
            log.warning("%s: ack/nack of %s failed: %s", self.subscription, received.message.message_id, exc)
        finally:
            self.window.release(ok)


def subscriber_client() -> pubsub_v1.SubscriberClient:
    """The product's own subscriber of the local cloud (a channel that takes messages of any size, as
    Pub/Sub's reach 10 MB, and Pub/Sub's service agent's credential, LOCALCLOUD_TOKEN)."""
    from sinergym_cloud.config import Settings
    from sinergym_cloud.gcp.clients import Clients

    return Clients(Settings.from_env()).subscriber


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Push delivery from the Pub/Sub emulator, as Pub/Sub does it")
    parser.add_argument("--route", action="append", default=[], help="SUBSCRIPTION=ENDPOINT (full paths)")
    parser.add_argument("--max-outstanding", type=int, default=64)
    parser.add_argument("--initial-window", type=int, default=16)
    parser.add_argument("--wait", type=float, default=120.0, help="for the subscriptions to exist")
    parser.add_argument(
        "--time-scale", type=float, default=1.0, help="multiplies cold starts and the pending wait (LOCALCLOUD_SCALE)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    subscriber = subscriber_client()
    routes = []
    faults = Faults()
    for spec in args.route:
        subscription, _, endpoint = spec.partition("=")
        routes.append(Route(subscriber, subscription, endpoint, args, faults))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    signal.signal(signal.SIGINT, lambda signum, frame: stop.set())
    for route in routes:
        route.open(args.wait)
    threads = [threading.Thread(target=route.run, args=(stop,), daemon=True) for route in routes]
    for thread in threads:
        thread.start()
    stop.wait()
    for thread in threads:
        thread.join(15)
    return 0


if __name__ == "__main__":
    sys.exit(main())
