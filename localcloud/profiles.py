"""How fast the local cloud's Compute Engine is: ``LOCALCLOUD_PROFILE`` and ``LOCALCLOUD_SCALE``.

``fast`` (the default) finishes group operations at once and boots a VM as fast as its processes
start, so the suite stays quick. ``gce`` takes Compute Engine's own times: a VM spends 20-60 s from
creation to the end of its startup script (PROVISIONING, STAGING, then RUNNING while the guest
boots), a group operation stays RUNNING for seconds with ``progress`` rising, and a spot VM gets
its 30 s preemption notice. Every time is multiplied by ``LOCALCLOUD_SCALE`` (default 1), so a CI
tier can run the same sequence of states in a fraction of the time.
"""

from __future__ import annotations

from typing import Any

PROFILES = ("fast", "gce")

FAST: dict[str, Any] = {
    "boot_delay": 0.0,
    "boot_seconds": None,
    "op_seconds": 0.0,
    "shutdown_grace": 5.0,
    "preempt_grace": 5.0,
}


def settings(profile: str, scale: float = 1.0) -> dict[str, Any]:
    """The Compute emulator settings (``/_emulator/config``) of a profile."""
    if profile == "fast":
        return dict(FAST)
    if profile == "gce":
        return {
            "boot_delay": 0.0,
            "boot_seconds": [20.0 * scale, 60.0 * scale],
            "op_seconds": 4.0 * scale,
            "shutdown_grace": 5.0,
            "preempt_grace": 30.0 * scale,
        }
    raise ValueError(f"unknown LOCALCLOUD_PROFILE {profile!r}: choose one of {', '.join(PROFILES)}")
