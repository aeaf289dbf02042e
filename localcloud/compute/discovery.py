"""Google's own definition of the Compute Engine v1 API: the discovery document.

``google-api-python-client`` ships Compute's discovery document (the file gcloud's and the
discovery client's request and response classes are generated from). The emulator uses it for
three things:

- naming a method it does not serve (``method_for``), so that the request fails with 501
  ``notImplemented`` naming it instead of a 404 the product could take for "already gone";
- the response schema of each method it serves (``response_schema``);
- checking a response body against that schema (``problems``): field names, JSON types, int64 as
  decimal strings, ``format: byte`` as base64, enum values. A strict emulator (``LOCALCLOUD_STRICT``)
  answers 500 instead of a body Compute Engine would never send.

``REVISION`` pins the revision the emulator was checked against; a new package version with a
new document makes the pinning test fail, so the new revision is a reviewed change.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import re
from collections.abc import Callable
from importlib import resources
from typing import Any

REVISION = "20261106"
INT64 = {"int64", "uint64"}


@functools.cache
def document() -> dict[str, Any]:
    path = resources.files("googleapiclient") / "discovery_cache" / "documents" / "compute.v1.json"
    return dict(json.loads(path.read_text()))


def _methods(resource: dict[str, Any]) -> list[dict[str, Any]]:
    found = list(resource.get("methods", {}).values())
    for sub in resource.get("resources", {}).values():
        found += _methods(sub)
    return found


@functools.cache
def _method_table() -> list[tuple[str, re.Pattern[str], dict[str, Any]]]:
    table = []
    for m in _methods(document()):
        pattern = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(m["path"]))
        table.append((m["httpMethod"], re.compile(pattern + "$"), m))
    return table


def method(method_id: str) -> dict[str, Any]:
    """The discovery entry of ``compute.<resource>.<method>``; KeyError if Compute has no such method."""
    for _, _, m in _method_table():
        if m["id"] == method_id:
            return m
    raise KeyError(method_id)


def method_for(http_method: str, path: str) -> str | None:
    """The id of the Compute method a request is for (``path`` after ``/compute/v1/``), if any.

    Literal path segments beat placeholders (``.../instances/{instance}`` vs ``.../aggregated/...``),
    so the match with the fewest placeholders wins.
    """
    best: tuple[int, str] | None = None
    for verb, pattern, m in _method_table():
        if verb == http_method and pattern.match(path):
            score = m["path"].count("{")
            if best is None or score < best[0]:
                best = (score, m["id"])
    return best[1] if best else None


def response_schema(method_id: str) -> str | None:
    ref = method(method_id).get("response", {}).get("$ref")
    return str(ref) if ref else None


def problems(value: Any, schema: str | dict[str, Any], where: str = "$") -> list[str]:
    """Where ``value`` departs from the schema (a schema name or an inline schema): [] if nowhere."""
    spec = document()["schemas"][schema] if isinstance(schema, str) else schema
    if "$ref" in spec:
        return problems(value, spec["$ref"], where)
    check = _CHECKS.get(spec.get("type", ""))
    if check is None:
        return [f"{where}: schema of unknown type {spec.get('type')!r}"]
    return check(value, spec, where)


def _object_problems(value: Any, spec: dict[str, Any], where: str) -> list[str]:
    if not isinstance(value, dict):
        return [f"{where}: expected an object, got {type(value).__name__}"]
    found: list[str] = []
    props = spec.get("properties", {})
    extra = spec.get("additionalProperties")
    for key, item in value.items():
        if key in props:
            found += problems(item, props[key], f"{where}.{key}")
        elif extra is not None:
            found += problems(item, extra, f"{where}[{key!r}]")
        else:
            found.append(f"{where}.{key}: no such field in {spec.get('id', 'the schema')}")
    return found


def _array_problems(value: Any, spec: dict[str, Any], where: str) -> list[str]:
    if not isinstance(value, list):
        return [f"{where}: expected an array, got {type(value).__name__}"]
    return [p for i, item in enumerate(value) for p in problems(item, spec["items"], f"{where}[{i}]")]


def _integer_problems(value: Any, spec: dict[str, Any], where: str) -> list[str]:
    if not isinstance(value, int) or isinstance(value, bool):
        return [f"{where}: expected a number ({spec.get('format')}), got {value!r}"]
    return []


def _number_problems(value: Any, spec: dict[str, Any], where: str) -> list[str]:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return [f"{where}: expected a number, got {value!r}"]
    return []


def _boolean_problems(value: Any, spec: dict[str, Any], where: str) -> list[str]:
    return [] if isinstance(value, bool) else [f"{where}: expected a boolean, got {value!r}"]


def _string_problems(value: Any, spec: dict[str, Any], where: str) -> list[str]:
    fmt = spec.get("format")
    if not isinstance(value, str):
        what = "int64 as a decimal string" if fmt in INT64 else "a string"
        return [f"{where}: expected {what}, got {value!r}"]
    if fmt in INT64 and not re.fullmatch(r"-?[0-9]+", value):
        return [f"{where}: expected an int64 decimal string, got {value!r}"]
    if fmt == "byte":
        try:
            base64.b64decode(value.replace("-", "+").replace("_", "/"), validate=True)
        except (binascii.Error, ValueError):
            return [f"{where}: expected base64 bytes, got {value!r}"]
    if "enum" in spec and value not in spec["enum"]:
        return [f"{where}: {value!r} is not one of {spec['enum']}"]
    return []


_CHECKS: dict[str, Callable[[Any, dict[str, Any], str], list[str]]] = {
    "object": _object_problems,
    "array": _array_problems,
    "string": _string_problems,
    "integer": _integer_problems,
    "number": _number_problems,
    "boolean": _boolean_problems,
    "any": lambda value, spec, where: [],
}
