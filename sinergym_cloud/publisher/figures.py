"""A matplotlib figure as PNG bytes, as the report and the sweep view embed them."""

from __future__ import annotations

import io
from typing import Any


def png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()
