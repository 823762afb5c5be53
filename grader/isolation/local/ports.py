"""TCP ports for servers under test: free, outside the ephemeral range, one grading's at a time."""
from __future__ import annotations

import os
import random
from pathlib import Path

from ... import probes
from ...errors import GradingEnvironmentError
from .locks import try_lock

PORT_LOW, PORT_HIGH = 20000, 59999


def server_ports() -> range:
    """PORT_LOW..PORT_HIGH without the ephemeral ports (net.ipv4.ip_local_port_range), when
    enough remain."""
    try:
        lo, hi = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        return range(PORT_LOW, PORT_HIGH + 1)
    below, above = range(PORT_LOW, min(lo, PORT_HIGH + 1)), range(max(hi + 1, PORT_LOW), PORT_HIGH + 1)
    best = max(below, above, key=len)
    return best if len(best) >= 2000 else range(PORT_LOW, PORT_HIGH + 1)


def reserve_port() -> tuple[int, int]:
    """A TCP port no one uses and no parallel grading will pick, outside the kernel's range of
    ephemeral ports: a connect() anywhere on the machine (hundreds per check) could otherwise take
    it between this choice and the server's bind. Returns (port, lock descriptor to close after)."""
    ports = server_ports()
    for _ in range(200):
        port = random.choice(ports)
        if probes.port_in_use(port):
            continue
        fd = try_lock(f"port-{port}.lock")
        if fd is None:
            continue
        if probes.port_in_use(port):
            os.close(fd)
            continue
        return port, fd
    raise GradingEnvironmentError("the machine has no free TCP port for the server")
