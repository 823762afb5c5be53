"""The memory cgroup we run in (a container's, or the machine's): its limit and its OOM kills."""
from __future__ import annotations

from pathlib import Path


def _cgroup_files(v1: str, v2: str) -> list[Path]:
    """Where a file of our memory cgroup may be: under the path /proc/self/cgroup names, or at
    the mount's top (a container sees its own cgroup there)."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        rel = path.lstrip("/")
        if "memory" in controllers.split(","):
            out += [Path("/sys/fs/cgroup/memory") / rel / v1, Path("/sys/fs/cgroup/memory") / v1]
        elif controllers == "" and Path("/sys/fs/cgroup/cgroup.controllers").exists():
            out += [Path("/sys/fs/cgroup") / rel / v2, Path("/sys/fs/cgroup") / v2]
    return out


def cgroup_oom_kills() -> int | None:
    """How many processes the kernel's OOM killer has killed in our memory cgroup (None: unknown)."""
    for f in _cgroup_files("memory.oom_control", "memory.events"):
        try:
            for line in f.read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except (OSError, ValueError):
            continue
    return None


def cgroup_memory_limit() -> int | None:
    """The memory limit of our cgroup in bytes (None: none, or unknown)."""
    for f in _cgroup_files("memory.limit_in_bytes", "memory.max"):
        try:
            text = f.read_text().strip()
        except OSError:
            continue
        if text == "max" or not text.isdigit() or int(text) >= 1 << 60:
            return None
        return int(text)
    return None
