"""Locks that keep parallel gradings of one machine apart: a uid, a port is held by one at a time."""
from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from pathlib import Path


def lock_dir() -> Path:
    """The machine's directory of labgrade locks (every user may make one there)."""
    # $LABGRADE_LOCK_DIR: a Swarm task shares its node's (grader.swarm: the host's /tmp/labgrade-locks)
    d = Path(os.environ.get("LABGRADE_LOCK_DIR") or Path(tempfile.gettempdir()) / "labgrade-locks")
    d.mkdir(mode=0o1777, exist_ok=True)
    with contextlib.suppress(PermissionError):
        os.chmod(d, 0o1777)
    return d


def try_lock(name: str) -> int | None:
    """An exclusive, non-blocking lock held as long as the returned descriptor is open."""
    path = lock_dir() / name
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)
    except PermissionError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd
