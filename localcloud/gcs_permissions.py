"""The IAM permissions each Cloud Storage JSON API request needs, as Cloud Storage checks them
(https://cloud.google.com/storage/docs/access-control/iam-json): what ``gcs_front.py`` asks the
identity gate before it forwards a request to fake-gcs-server.

An upload needs ``storage.objects.create`` on its object, and ``storage.objects.delete`` too when it
replaces an object that exists: a conditional upload says which (``ifGenerationMatch=0`` creates only;
another generation replaces); an unconditional one is looked up (``exists``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import unquote

from localcloud.iam import Resource

BUCKETS = re.compile(r"^/storage/v1/b/?$")
BUCKET = re.compile(r"^/storage/v1/b/(?P<bucket>[^/]+)/?$")
OBJECTS = re.compile(r"^/storage/v1/b/(?P<bucket>[^/]+)/o/?$")
OBJECT = re.compile(r"^/(?:download/)?storage/v1/b/(?P<bucket>[^/]+)/o/(?P<name>[^/]+)$")
UPLOAD = re.compile(r"^/upload/storage/v1/b/(?P<bucket>[^/]+)/o$")
TO_DESTINATION = re.compile(
    r"^/storage/v1/b/(?P<sbucket>[^/]+)/o/(?P<source>[^/]+)/(copyTo|rewriteTo)/b/(?P<bucket>[^/]+)/o/(?P<name>[^/]+)$"
)
COMPOSE = re.compile(r"^/storage/v1/b/(?P<bucket>[^/]+)/o/(?P<name>[^/]+)/compose$")

Needs = list[tuple[str, Resource]]


def needs(  # noqa: PLR0911 - one return per kind of request, in the order the API reference lists them
    method: str, path: str, query: dict[str, list[str]], upload_name: str, exists: Callable[[str, str], bool]
) -> Needs:
    """Every (permission, resource) the request needs. ``upload_name``: the object an upload names
    (in its query or its body); ``exists(bucket, name)``: whether an object exists now."""
    if method == "GET" and BUCKETS.match(path):
        return [("storage.buckets.list", Resource("project"))]
    if method == "POST" and BUCKETS.match(path):
        return [("storage.buckets.create", Resource("project"))]
    if (m := BUCKET.match(path)) is not None:
        verb = {"GET": "get", "PATCH": "update", "PUT": "update", "DELETE": "delete"}.get(method, "get")
        return [(f"storage.buckets.{verb}", Resource("bucket", unquote(m["bucket"])))]
    if method == "GET" and (m := OBJECTS.match(path)) is not None:
        return [("storage.objects.list", Resource("bucket", unquote(m["bucket"])))]
    if (m := UPLOAD.match(path)) is not None:
        if "upload_id" in query:
            return []  # a resumable upload's next chunk: its session was authorized when it started
        bucket = unquote(m["bucket"])
        return _writes(bucket, upload_name, query, exists)
    if (m := TO_DESTINATION.match(path)) is not None:
        source = Resource("bucket", unquote(m["sbucket"]), unquote(m["source"]))
        return [("storage.objects.get", source), *_writes(unquote(m["bucket"]), unquote(m["name"]), query, exists)]
    if (m := COMPOSE.match(path)) is not None:
        return _writes(unquote(m["bucket"]), unquote(m["name"]), query, exists)
    if (m := OBJECT.match(path)) is not None:
        target = Resource("bucket", unquote(m["bucket"]), unquote(m["name"]))
        verb = {"GET": "get", "DELETE": "delete"}.get(method, "update")
        return [(f"storage.objects.{verb}", target)]
    if path.startswith(("/storage/", "/upload/", "/download/", "/batch/")):
        return [("storage.admin", Resource("project"))]  # anything else of the API (batch requests): not the product's
    return []  # not the JSON API (a readiness probe of "/"): fake-gcs-server answers it


def _writes(bucket: str, name: str, query: dict[str, list[str]], exists: Callable[[str, str], bool]) -> Needs:
    target = Resource("bucket", bucket, name)
    condition = (query.get("ifGenerationMatch") or [""])[0]
    replaces = condition not in ("", "0") or (condition == "" and exists(bucket, name))
    return [("storage.objects.create", target)] + ([("storage.objects.delete", target)] if replaces else [])
