"""A slow network between a process under test and one local cloud service: an HTTP proxy that holds
chosen requests back for a while, and records every request it forwards (when, what, which object).

Used to show that work the trainer queued in the background is finished before it says it is done:
with every upload and metric batch slowed down, something is always still queued when the trainer
is told to stop.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import requests

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "content-length", "host"}
_NAME = re.compile(rb'"name"\s*:\s*"([^"]+)"')


@dataclass
class Forwarded:
    at: float  # when the proxy received it (monotonic)
    method: str
    path: str
    status: int
    object_name: str | None  # for a Cloud Storage upload: the object written


@dataclass
class SlowProxy:
    target: str  # e.g. http://127.0.0.1:18081
    slow: Callable[[str, str], bool]  # (method, path) -> hold this request back?
    delay: float
    log: list[Forwarded] = field(default_factory=list)
    url: str = ""

    def writes(self) -> dict[str, list[float]]:
        """Object name -> the times it was written (uploads the target accepted)."""
        out: dict[str, list[float]] = {}
        for f in self.log:
            if f.object_name and f.status < 300:
                out.setdefault(f.object_name, []).append(f.at)
        return out


def _object_name(method: str, path: str, body: bytes) -> str | None:
    if method not in ("POST", "PUT") or "/upload/storage/" not in path:
        return None
    query = parse_qs(urlsplit(path).query)
    if query.get("name"):
        return query["name"][0]
    found = _NAME.search(body[:4096])  # a multipart upload names its object in its metadata part
    return found.group(1).decode() if found else None


@contextmanager
def slow_proxy(target: str, slow: Callable[[str, str], bool], delay: float) -> Iterator[SlowProxy]:
    proxy = SlowProxy(target.rstrip("/"), slow, delay)
    session = requests.Session()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _forward(self) -> None:
            received = time.monotonic()
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            if proxy.slow(self.command, self.path):
                time.sleep(proxy.delay)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            response = session.request(
                self.command, proxy.target + self.path, data=body, headers=headers, timeout=120, allow_redirects=False
            )
            content = response.content
            name = _object_name(self.command, self.path, body)
            with lock:
                proxy.log.append(Forwarded(received, self.command, self.path, response.status_code, name))
            self.send_response(response.status_code)
            for k, v in response.headers.items():
                if k.lower() not in HOP_BY_HOP and k.lower() != "content-encoding":
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward  # noqa: N815 - http.server's names

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - BaseHTTPRequestHandler's name
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    proxy.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        server.shutdown()
        server.server_close()
