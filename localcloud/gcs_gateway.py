"""A thin gateway in front of fake-gcs-server for Google's own tools (gcloud storage).

fake-gcs-server differs from Cloud Storage's JSON API in two ways a user of ``gcloud storage`` meets:

- ``DELETE .../o/<object>`` answers ``200`` with the body ``null``; Cloud Storage answers ``204 No
  Content``. gcloud parses the body and reports ``'NoneType' object has no attribute 'items'``
  after the object is gone.
- ``GET /storage/v1/b/<bucket>/storageLayout`` (which ``gcloud storage cp -r`` asks first) is not
  served (404). Cloud Storage answers the bucket's layout; here: a flat namespace, as every bucket
  of the deployment has.

The gateway forwards every other request unchanged. Only gcloud is pointed at it
(``CLOUDSDK_API_ENDPOINT_OVERRIDES_STORAGE``); the product's client library talks to fake-gcs-server
directly (``STORAGE_EMULATOR_HOST``), as it is unaffected by either difference. Each difference has
a test that shows it on fake-gcs-server itself (tests/test_gcloud.py), so a fake-gcs-server that
fixes it shows up.
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import re
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger("localcloud.gcs_gateway")

OBJECT = re.compile(r"^/storage/v1/b/[^/]+/o/.+$")
LAYOUT = re.compile(r"^/storage/v1/b/(?P<bucket>[^/]+)/storageLayout$")
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


class Gateway(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    upstream: tuple[str, int] = ("127.0.0.1", 0)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - BaseHTTPRequestHandler's name
        log.debug(format, *args)

    def _forward(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        path = urlsplit(self.path).path
        layout = LAYOUT.match(path) if method == "GET" else None
        if layout:
            self._layout(layout["bucket"])
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        connection = http.client.HTTPConnection(*self.upstream, timeout=300)
        try:
            connection.request(method, self.path, body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
            status = response.status
            if method == "DELETE" and OBJECT.match(path) and status == 200 and data.strip() in (b"", b"null"):
                status, data = 204, b""  # Cloud Storage: 204 No Content
            self.send_response(status)
            for key, value in response.getheaders():
                if key.lower() not in HOP_BY_HOP | {"content-length"}:
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        finally:
            connection.close()

    def _layout(self, bucket: str) -> None:
        connection = http.client.HTTPConnection(*self.upstream, timeout=30)
        try:
            connection.request("GET", f"/storage/v1/b/{bucket}")
            found = connection.getresponse()
            found.read()
        finally:
            connection.close()
        if found.status != 200:
            self._json(found.status, {"error": {"code": found.status, "message": f"bucket {bucket} not found"}})
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


class Server(ThreadingHTTPServer):
    daemon_threads = True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="gcloud-facing gateway in front of fake-gcs-server")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream-port", type=int, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    handler = type("Handler", (Gateway,), {"upstream": ("127.0.0.1", args.upstream_port)})
    server = Server(("127.0.0.1", args.port), handler)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    signal.signal(signal.SIGINT, lambda signum, frame: stop.set())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    log.info("gcs gateway on 127.0.0.1:%d -> fake-gcs-server on %d", args.port, args.upstream_port)
    stop.wait()
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
