"""Compute Engine's API rate quotas: which quota group each method counts against, and the answer
when a group's per-minute quota is spent (403 ``rateLimitExceeded``, as Compute Engine answers).

The groups and their defaults are in limits.py (``compute_requests_per_minute``); the counting is
per project and per minute on the wall clock (throttle.MinuteWindows), as Compute Engine refills a
rate quota at the start of the next synchronized minute.
"""

from __future__ import annotations

from localcloud.compute.errors import ApiError

LIST_METHODS = {"listManagedInstances", "listErrors", "aggregatedList", "list"}
GROUP_TITLES = {
    "read_requests": "Read requests",
    "list_requests": "List requests",
    "operation_read_requests": "Operation read requests",
    "default": "Queries",
}


def group(method: str) -> str:
    """The quota group of a served method, e.g. ``instances.get`` -> ``read_requests``."""
    resource, _, verb = method.partition(".")
    if resource in ("zoneOperations", "globalOperations", "regionOperations") and verb in ("get", "wait"):
        return "operation_read_requests"
    if verb in LIST_METHODS:
        return "list_requests"
    if verb == "get" or verb.startswith("get"):
        return "read_requests"
    return "default"


def exceeded(group_name: str, limit: int, project: str) -> ApiError:
    title = GROUP_TITLES.get(group_name, group_name)
    message = (
        f"Quota exceeded for quota metric '{title}' and limit '{title} per minute' of service "
        f"'compute.googleapis.com' for consumer 'project_number:{abs(hash(project)) % 10**12}'."
    )
    info = {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": "RATE_LIMIT_EXCEEDED",
        "domain": "googleapis.com",
        "metadata": {
            "service": "compute.googleapis.com",
            "consumer": f"projects/{project}",
            "quota_metric": f"compute.googleapis.com/{group_name}",
            "quota_limit_value": str(limit),
        },
    }
    return ApiError(403, "rateLimitExceeded", message, domain="usageLimits", details=[info])
