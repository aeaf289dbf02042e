"""Lists as Compute Engine pages them: ``filter``, ``maxResults`` and ``pageToken``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from localcloud.compute import filters
from localcloud.compute.errors import invalid


def paginate(
    items: list[dict[str, Any]], query: dict[str, str], key: str, predicate: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """A page of ``items`` as Compute Engine lists them: filter, maxResults, pageToken."""
    selected = [i for i in items if predicate(i)]
    try:
        max_results = int(query.get("maxResults", 500))
    except ValueError:
        raise invalid("Invalid value for field 'maxResults'") from None
    if not 0 <= max_results <= 500:
        raise invalid(f"Invalid value for field 'maxResults': {max_results}. Must be in the range [0, 500].")
    max_results = max_results or 500
    try:
        start = int(query.get("pageToken") or 0)
    except ValueError:
        raise invalid("Invalid value for field 'pageToken'") from None
    page = selected[start : start + max_results]
    body: dict[str, Any] = {key: page}
    if start + max_results < len(selected):
        body["nextPageToken"] = str(start + max_results)
    return body


def filter_of(query: dict[str, str]) -> Callable[[dict[str, Any]], bool]:
    try:
        return filters.parse(query.get("filter"))
    except filters.FilterError as exc:
        raise invalid(str(exc)) from None
