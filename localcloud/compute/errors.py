"""Compute Engine's errors as the emulator answers them, and the checks that raise them.

A rejected request gets Google's envelope (``ApiError``: ``{"error": {"code", "message", "errors"}}``,
with a reason such as ``notFound``); a failure Compute Engine reports on an accepted request's
operation has the operation's own shape instead (``OpError``: an HTTP status plus a Compute error
code such as ``RESOURCE_NOT_FOUND`` or ``QUOTA_EXCEEDED``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

NAME = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")

HTTP_ERROR_MESSAGES = {
    400: "BAD REQUEST",
    403: "FORBIDDEN",
    404: "NOT FOUND",
    409: "CONFLICT",
    412: "PRECONDITION FAILED",
    429: "TOO MANY REQUESTS",
    500: "INTERNAL SERVER ERROR",
    503: "SERVICE UNAVAILABLE",
}


class ApiError(Exception):
    """An error answered in Google's envelope: ``{"error": {"code", "message", "errors": [...]}}``."""

    def __init__(
        self, code: int, reason: str, message: str, domain: str = "global", details: list[dict[str, Any]] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.domain = domain
        self.details = details or []

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {
            "code": self.code,
            "message": self.message,
            "errors": [{"message": self.message, "domain": self.domain, "reason": self.reason}],
        }
        if self.details:
            error["details"] = self.details
        return {"error": error}


def not_found(path: str) -> ApiError:
    return ApiError(404, "notFound", f"The resource '{path}' was not found")


def already_exists(path: str) -> ApiError:
    return ApiError(409, "alreadyExists", f"The resource '{path}' already exists")


def invalid(message: str) -> ApiError:
    return ApiError(400, "invalid", message)


def not_implemented(method: str) -> ApiError:
    return ApiError(501, "notImplemented", f"the local cloud does not emulate {method}")


@dataclass(frozen=True)
class OpError:
    """Why an operation failed, in the operation's own shape: an HTTP status plus Compute's error
    code (``RESOURCE_NOT_FOUND``, ``QUOTA_EXCEEDED``, ...), unlike the request envelope's reasons."""

    http_code: int
    code: str
    message: str


def check_name(field_name: str, value: Any, max_length: int = 63) -> str:
    if not isinstance(value, str) or not value:
        raise ApiError(400, "required", f"Required field '{field_name}' not specified")
    if len(value) > max_length or not NAME.match(value):
        raise invalid(
            f"Invalid value for field '{field_name}': '{value}'. Must be a match of regex "
            "'(?:[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?)'"
        )
    return value


def last_segment(url: str, kind: str) -> str:
    """The resource name from a full URL, a ``projects/...`` path or a short form."""
    parts = url.rstrip("/").split("/")
    if len(parts) < 2 or parts[-2] != kind:
        raise invalid(f"Invalid value for field 'resource': '{url}'. The URL is malformed.")
    return parts[-1]
