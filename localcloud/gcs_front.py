"""Cloud Storage's front door on the local cloud: every client (the product's google-cloud-storage,
gcsfs under TensorBoard, gcloud storage) talks to fake-gcs-server through it.

It does four things fake-gcs-server does not:

- **Identities**: each request's credential must hold the IAM permissions it needs (the roles
  infra/terraform/iam.tf grants its account, or a downscoped token's boundary: identity.py,
  gcs_permissions.py); else ``403 forbidden`` naming the principal and the permission.

- **Google's limits** (limits.py), when they are on: a write to an object name less than about a
  second after the last one that changed it, or to a bucket faster than its write rate, is answered ``429`` with
  Google's envelope (``errors[].reason`` ``rateLimitExceeded``, domain ``usageLimits``), so the
  client library's own retry policy is what reacts. Every mutation of an object counts: an upload
  (its name is in the query or in the JSON part of a multipart or resumable start), a metadata
  update, a delete, and the destination of a copy, rewrite or compose. The chunks of a resumable
  upload do not: the upload counted when it started.
- **Two differences bridged**: ``DELETE .../o/<object>`` answers ``200 null`` on fake-gcs-server
  and ``204 No Content`` on Cloud Storage (gcloud fails on the body after the object is gone); and
  ``GET /storage/v1/b/<bucket>/storageLayout`` (which ``gcloud storage cp -r`` asks first) is not
  served there: here it answers a flat namespace, as every bucket of the deployment has. Each
  difference has a test that shows it on fake-gcs-server itself, so a release that fixes it shows up.
- **Injected errors** (a test's or the soak's, ``POST /_front/faults``): ``{"status": 503, "count":
  N}`` answers the next N Cloud Storage requests 503 ``backendError`` (or 429 ``rateLimitExceeded``,
  or 500 ``internalError``) in Google's envelope, as a burst of a backend's errors or of throttling
  would; ``{"clear": true}`` drops what is left. The client libraries' retries are what react.
- **Figures**: ``GET /_front/stats`` tells how many requests it refused and the most writes any one
  object, and any one bucket, took within a second (whether or not limits are on), for the
  benchmarks; ``POST /_front/stats/reset`` starts the count again.

fake-gcs-server's ``-external-url`` is this front, so the resumable-upload sessions it hands out
come back through here too. The front also plays Google's Security Token Service (``POST
/v1/token``): it mints the downscoped tokens dispatch makes for each VM, and holds requests made with
them to their access boundary.
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import os
import re
import signal
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from localcloud import gcs_permissions
from localcloud.identity import Gate, Rule
from localcloud.limits import Source
from localcloud.throttle import Buckets, Peaks

log = logging.getLogger("localcloud.gcs_front")

OBJECT = re.compile(r"^/storage/v1/b/(?P<bucket>[^/]+)/o/(?P<name>[^/]+)$")
LAYOUT = re.compile(r"^/storage/v1/b/(?P<bucket>[^/]+)/storageLayout$")
UPLOAD = re.compile(r"^/upload/storage/v1/b/(?P<bucket>[^/]+)/o$")
TO_DESTINATION = re.compile(r"^/storage/v1/b/[^/]+/o/[^/]+/(copyTo|rewriteTo)/b/(?P<bucket>[^/]+)/o/(?P<name>[^/]+)$")
COMPOSE = re.compile(r"^/storage/v1/b/(?P<bucket>[^/]+)/o/(?P<name>[^/]+)/compose$")
STS_PATH = "/v1/token"  # the local Security Token Service (google.auth.downscoped's token exchange)
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}
OBJECT_RATE_MESSAGE = (
    "The object {bucket}/{name} exceeded the rate limit for object mutation operations (create, update, and "
    "delete). Please reduce your request rate. See https://cloud.google.com/storage/docs/gcs429."
)
BUCKET_RATE_MESSAGE = (
    "The bucket {bucket} exceeded its current rate of object {kind}. Please reduce your request rate. "
    "See https://cloud.google.com/storage/docs/gcs429."
)


def written_object(method: str, path: str, query: dict[str, list[str]], body: bytes) -> tuple[str, str] | None:
    """The (bucket, object name) a request mutates, or None for a request that writes no object."""
    if method == "POST" and (m := UPLOAD.match(path)):
        if "upload_id" in query:
            return None  # a resumable upload's next chunk: counted when it started
        name = (query.get("name") or [""])[0] or _name_in_body(body)
        return (unquote(m["bucket"]), name) if name else None
    if method == "PUT" and UPLOAD.match(path):
        return None  # a resumable upload's chunk
    if method in ("PATCH", "PUT", "DELETE") and (m := OBJECT.match(path)):
        return unquote(m["bucket"]), unquote(m["name"])
    if method == "POST" and ((m := TO_DESTINATION.match(path)) or (m := COMPOSE.match(path))):
        return unquote(m["bucket"]), unquote(m["name"])
    return None


def _name_in_body(body: bytes) -> str:
    """The object name in a multipart upload's JSON part, or a resumable start's JSON body."""
    text = body[:65536].decode("utf-8", "replace")
    start = text.find("{")
    while start != -1:
        try:
            found, _ = json.JSONDecoder().raw_decode(text, start)
        except ValueError:
            start = text.find("{", start + 1)
            continue
        return str(found.get("name") or "") if isinstance(found, dict) else ""
    return ""


# Google's error shapes for the injected bursts (https://cloud.google.com/storage/docs/json_api/v1/status-codes).
INJECTED = {
    429: ("usageLimits", "rateLimitExceeded", "The rate of change requests to the bucket is too high."),
    500: ("global", "internalError", "Internal Error"),
    503: ("global", "backendError", "Backend Error"),
}


class Burst:
    """Injected errors: the next ``count`` storage requests answered with ``status``, in order."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pending: list[list[int]] = []  # [status, requests left]

    def add(self, status: int, count: int) -> None:
        if status not in INJECTED:
            raise ValueError(f"status {status}: the front injects {', '.join(map(str, sorted(INJECTED)))}")
        with self.lock:
            self.pending.append([status, max(0, count)])

    def clear(self) -> None:
        with self.lock:
            self.pending.clear()

    def take(self) -> int | None:
        """The status to answer this request with, or None to serve it."""
        with self.lock:
            while self.pending and self.pending[0][1] <= 0:
                self.pending.pop(0)
            if not self.pending:
                return None
            self.pending[0][1] -= 1
            return self.pending[0][0]

    def left(self) -> list[dict[str, int]]:
        with self.lock:
            return [{"status": s, "count": c} for s, c in self.pending if c > 0]


def injected_error(status: int) -> dict[str, Any]:
    domain, reason, message = INJECTED[status]
    return {
        "error": {
            "code": status,
            "message": message,
            "errors": [{"message": message, "domain": domain, "reason": reason}],
        }
    }


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.refused: Counter[str] = Counter()
        self.writes = 0
        self.object_peak = Peaks(1.0)
        self.bucket_peak = Peaks(1.0)

    def as_json(self) -> dict[str, Any]:
        with self.lock:
            return {
                "refused": dict(self.refused),
                "writes": self.writes,
                "max_writes_per_object_per_second": self.object_peak.peak,
                "busiest_object": self.object_peak.peak_key,
                "max_writes_per_bucket_per_second": self.bucket_peak.peak,
            }

    def reset(self) -> None:
        with self.lock:
            self.refused.clear()
            self.writes = 0
        self.object_peak.reset()
        self.bucket_peak.reset()


class Front(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    upstream: tuple[str, int] = ("127.0.0.1", 0)
    limits = Source()
    gate = Gate(service="storage")
    objects = Buckets()
    buckets = Buckets()
    stats = Stats()
    burst = Burst()
    _local = threading.local()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - BaseHTTPRequestHandler's name
        log.debug(format, *args)

    # ------------------------------------------------------------------ limits
    def _refusal(self, target: tuple[str, str] | None, path: str) -> dict[str, Any] | None:
        """Google's 429 envelope if the limits refuse this request now, else None. ``target``: the
        object it would change. Its object's write is counted once it has changed the object
        (``_mutated``): a write whose precondition fails changes nothing."""
        limits = self.limits.get()
        bucket = target[0] if target else _bucket_of(path)
        if target is not None:
            rate = limits.gcs_object_writes_per_second
            key = f"{target[0]}/{target[1]}"
            if rate is not None and not self.objects.available(key, rate, limits.gcs_object_write_burst):
                return self._too_many("object", OBJECT_RATE_MESSAGE.format(bucket=target[0], name=target[1]))
        if bucket is not None:
            writing = target is not None
            rate = limits.gcs_bucket_writes_per_second if writing else limits.gcs_bucket_reads_per_second
            burst = max(1, int(rate)) if rate else 1
            if rate is not None and not self.buckets.take(f"{bucket}/{writing}", rate, burst):
                kind = "writes" if writing else "reads"
                return self._too_many(f"bucket {kind}", BUCKET_RATE_MESSAGE.format(bucket=bucket, kind=kind))
        return None

    def _mutated(self, target: tuple[str, str]) -> None:
        """An object changed: it spends its write rate, and the figures count it."""
        limits = self.limits.get()
        key = f"{target[0]}/{target[1]}"
        if limits.gcs_object_writes_per_second is not None:
            self.objects.spend(key, limits.gcs_object_writes_per_second, limits.gcs_object_write_burst)
        with self.stats.lock:
            self.stats.writes += 1
        self.stats.object_peak.record(key)
        self.stats.bucket_peak.record(target[0])

    def _too_many(self, kind: str, message: str) -> dict[str, Any]:
        with self.stats.lock:
            self.stats.refused[kind] += 1
        log.info("429 (%s): %s", kind, message.split(" exceeded", maxsplit=1)[0].removeprefix("The "))
        return {
            "error": {
                "code": 429,
                "message": message,
                "errors": [{"message": message, "domain": "usageLimits", "reason": "rateLimitExceeded"}],
            }
        }

    # --------------------------------------------------------------- identity
    def _forbidden(self, method: str, path: str, query: dict[str, list[str]], body: bytes) -> bool:
        """Answer Cloud Storage's 403 (and True) unless the caller's credential holds every permission
        the request needs (localcloud/identity.py, gcs_permissions.py)."""
        if not self.gate.enforced:
            return False
        name = (query.get("name") or [""])[0] or (_name_in_body(body) if UPLOAD.match(path) else "")
        for needed, resource in gcs_permissions.needs(method, path, query, name, self._exists):
            decision = self.gate.check(self.headers.get("Authorization"), needed, resource, f"{method} {path}")
            if not decision.allowed:
                message = decision.denial(os.environ.get("GOOGLE_CLOUD_PROJECT", ""))
                log.warning("403: %s", message)
                error = {"message": message, "domain": "global", "reason": "forbidden"}
                self._json(403, {"error": {"code": 403, "message": message, "errors": [error]}})
                return True
        return False

    def _exists(self, bucket: str, name: str) -> bool:
        status, _, _ = self._upstream(
            "GET", f"/storage/v1/b/{quote(bucket, safe='')}/o/{quote(name, safe='')}", None, {}
        )
        return status == 200

    # ---------------------------------------------------------------- forward
    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = http.client.HTTPConnection(*self.upstream, timeout=300)
            self._local.conn = conn
        return conn

    def _upstream(self, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> tuple[int, Any, bytes]:
        """One request to fake-gcs-server on this thread's kept-alive connection (opened again once
        if the server closed it meanwhile)."""
        for attempt in (1, 2):
            conn = self._connection()
            try:
                conn.request(method, path, body=body, headers=headers)
                response = conn.getresponse()
                return response.status, response.getheaders(), response.read()
            except (http.client.HTTPException, ConnectionError):
                conn.close()
                self._local.conn = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _forward(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        if url.path.startswith("/_front/"):
            self._own(method, url.path, body)
            return
        if url.path == STS_PATH and method == "POST":
            self._sts(body)
            return
        layout = LAYOUT.match(url.path) if method == "GET" else None
        if layout:
            self._layout(layout["bucket"])
            return
        injected = self.burst.take()
        if injected is not None:
            with self.stats.lock:
                self.stats.refused[f"injected {injected}"] += 1
            log.info("%d (injected) on %s %s", injected, method, url.path)
            self._json(injected, injected_error(injected))
            return
        query = parse_qs(url.query)
        if self._forbidden(method, url.path, query, body):
            return
        target = written_object(method, url.path, query, body)
        refusal = self._refusal(target, url.path)
        if refusal is not None:
            self._json(429, refusal)
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        status, response_headers, data = self._upstream(method, self.path, body or None, headers)
        if target is not None and 200 <= status < 300:
            self._mutated(target)
        if method == "DELETE" and OBJECT.match(url.path) and status == 200 and data.strip() in (b"", b"null"):
            status, data = 204, b""  # Cloud Storage: 204 No Content
        self.send_response(status)
        for key, value in response_headers:
            if key.lower() not in HOP_BY_HOP | {"content-length"}:
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _sts(self, body: bytes) -> None:
        """The Security Token Service's token exchange, as ``google.auth.downscoped`` calls it: the
        subject token's member, restricted to the Credential Access Boundary in ``options``."""
        form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
        source = self.gate.token(f"Bearer {form.get('subject_token', '')}")
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:token-exchange" or source is None:
            self._json(400, {"error": "invalid_grant", "error_description": "The subject token is invalid."})
            return
        try:
            # google-auth quotes the options once more than the form does (as Google's STS reads them).
            options = json.loads(unquote(form.get("options") or "{}"))
            rules = tuple(
                Rule(
                    bucket=r["availableResource"].rsplit("/buckets/", 1)[1],
                    role=r["availablePermissions"][0].removeprefix("inRole:"),
                    expression=(r.get("availabilityCondition") or {}).get("expression"),
                )
                for r in options["accessBoundary"]["accessBoundaryRules"]
            )
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            self._json(400, {"error": "invalid_request", "error_description": f"Invalid access boundary: {exc}"})
            return
        lifetime = float(os.environ.get("LOCALCLOUD_STS_LIFETIME", "3600"))
        token, expires = self.gate.mint(source, rules, lifetime)
        self._json(
            200,
            {
                "access_token": token,
                "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
                "token_type": "Bearer",
                "expires_in": max(1, int(expires - time.time())),
            },
        )

    def _own(self, method: str, path: str, body: bytes = b"") -> None:
        if path == "/_front/faults" and method == "POST":
            try:
                asked = json.loads(body or b"{}")
                if asked.get("clear"):
                    self.burst.clear()
                else:
                    self.burst.add(int(asked["status"]), int(asked.get("count", 1)))
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                self._json(400, {"error": {"code": 400, "message": f"bad fault: {exc}"}})
                return
            self._json(200, {"pending": self.burst.left()})
        elif path == "/_front/stats" and method == "GET":
            self._json(200, self.stats.as_json())
        elif path == "/_front/stats/reset" and method == "POST":
            self.stats.reset()
            self._json(200, {"ok": True})
        else:
            self._json(404, {"error": {"code": 404, "message": f"no route {method} {path}"}})

    def _layout(self, bucket: str) -> None:
        status, _, _ = self._upstream("GET", f"/storage/v1/b/{bucket}", None, {})
        if status != 200:
            self._json(status, {"error": {"code": status, "message": f"bucket {bucket} not found"}})
            return
        self._json(
            200,
            {
                "kind": "storage#storageLayout",
                "bucket": bucket,
                "location": "US-CENTRAL1",
                "locationType": "region",
                "hierarchicalNamespace": {"enabled": False},
            },
        )

    def _json(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._forward("GET")

    def do_POST(self) -> None:
        self._forward("POST")

    def do_PUT(self) -> None:
        self._forward("PUT")

    def do_PATCH(self) -> None:
        self._forward("PATCH")

    def do_DELETE(self) -> None:
        self._forward("DELETE")


def _bucket_of(path: str) -> str | None:
    m = re.match(r"^/(?:upload/|download/)?storage/v1/b/([^/]+)/o", path)
    return unquote(m[1]) if m else None


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Cloud Storage's front on the local cloud, before fake-gcs-server")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream-port", type=int, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    handler = type("Handler", (Front,), {"upstream": ("127.0.0.1", args.upstream_port)})
    server = Server(("127.0.0.1", args.port), handler)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    signal.signal(signal.SIGINT, lambda signum, frame: stop.set())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    log.info("Cloud Storage front on 127.0.0.1:%d -> fake-gcs-server on %d", args.port, args.upstream_port)
    stop.wait()
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
