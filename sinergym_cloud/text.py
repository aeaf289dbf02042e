"""Text that came from a VM or a message, made safe to show: in alerts, logs and terminals.

A trainer's exit reason, an error type or a log line is written by code on a VM that may be
hostile or simply odd: control characters (terminal escapes), bidirectional overrides, megabytes
of text, or square brackets that rich would read as markup (``[/data/weather]`` crashed the status
table, ``[Errno 2]`` vanished from it). ``clean`` bounds and flattens such text; ``markup`` also
escapes it for rich, and is what every rendering point uses for data.
"""

from __future__ import annotations

import unicodedata
from typing import Any

from rich.markup import escape

ELLIPSIS = "…"


def clean(value: Any, limit: int = 500) -> str:
    """One line of printable text of at most ``limit`` characters (control and format characters
    become spaces; anything not a string is shown by its type, never by calling its ``str``)."""
    if value is None:
        return ""
    if not isinstance(value, (str, int, float)):
        return f"<{type(value).__name__}>"
    raw = str(value)[: limit * 4]
    out = "".join(" " if unicodedata.category(ch)[0] in "CZ" and ch != " " else ch for ch in raw)
    out = " ".join(out.split())
    return out if len(out) <= limit else out[: max(limit - 1, 0)].rstrip() + ELLIPSIS


def markup(value: Any, limit: int = 500) -> str:
    """``clean``, then escaped for rich: the text shows as itself, never as markup."""
    return escape(clean(value, limit))
