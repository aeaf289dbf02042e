"""Free TCP ports on the loopback interface, for every part of the local cloud that needs one."""

from __future__ import annotations

import random
import socket
import threading
import time
from pathlib import Path

# Below the kernel's ephemeral range (the source ports of outgoing connections): a port the OS hands
# out for bind(0) comes from that range, and any process connecting out meanwhile (the services
# starting, talking to each other) may take it as its source port before the service binds it.
LOW = 20000
# A port handed out is not handed out again for this long: between the pick and the bind (a VM's
# sshd binds its port only when the VM boots) nothing holds it, and two VMs given the same port
# would answer each other's SSH (dispatch refuses the host key, and the experiment waits).
HELD_SECONDS = 3600.0
_handed: dict[int, float] = {}
_lock = threading.Lock()


def ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now, outside the ephemeral range, and not handed
    out by this process within HELD_SECONDS."""
    high = ephemeral_start()
    now = time.monotonic()
    with _lock:
        for port, at in list(_handed.items()):
            if now - at > HELD_SECONDS:
                del _handed[port]
        for _ in range(500):
            port = random.randrange(LOW, high) if high > LOW + 1000 else 0
            if port in _handed:
                continue
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
                got = int(s.getsockname()[1])
            if got not in _handed:
                _handed[got] = now
                return got
    raise OSError("no free port on 127.0.0.1")
