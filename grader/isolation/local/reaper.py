"""Ending processes: the one loop that signals, waits with a grace, SIGKILLs and reaps.

The grader is a child subreaper, so that double-forked daemons stay its descendants and
their zombies come back to it; as root, every process of a sandbox's uid is killed in one
sweep (kill(-1) as that uid), which a fork bomb cannot outrun.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import time
from collections.abc import Callable, Collection

from ... import probes

PR_SET_CHILD_SUBREAPER = 36


def set_subreaper() -> None:
    """Orphans of our descendants come back to us, so nothing escapes the tree."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def kill_uid(uid: int) -> None:
    """kill(-1, SIGKILL) as that uid: the kernel kills all its processes in one sweep."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            os.kill(-1, signal.SIGKILL)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def reap_children(spare: Collection[int] = ()) -> None:
    """Reap zombies that were reparented to us (we are a subreaper), except those in `spare`,
    whose owner (subprocess, pexpect) waits for them itself."""
    for p in probes.children(os.getpid()):
        if p.zombie and p.pid not in spare:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(p.pid, os.WNOHANG)


def _signal(procs: list[probes.Proc], sig: int) -> None:
    for p in procs:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(p.pid, sig)


def end_processes(find: Callable[[], list[probes.Proc]], *, uid: int | None = None, grace: float = 0.0,
                  timeout: float = 5.0, reap: bool = True, spare: Collection[int] = ()) -> list[probes.Proc]:
    """End the live processes `find()` returns: with a `grace`, SIGTERM first and up to that many
    seconds to exit; then SIGKILL (and every process of `uid` in one sweep, when given), again
    until `find()` returns nothing or `timeout` passes (0: once). With `reap`, zombie children are
    reaped along the way, but those in `spare`: a thread other than the owners' must not reap (the
    watchdog's). Returns what is still alive (should be nothing)."""
    if grace > 0:
        _signal(find(), signal.SIGTERM)
        deadline = time.monotonic() + grace
        while find() and time.monotonic() < deadline:
            time.sleep(0.01)
    deadline = time.monotonic() + timeout
    while True:
        if uid is not None:
            kill_uid(uid)
        _signal(find(), signal.SIGKILL)
        if reap:
            reap_children(spare)
        left = find()
        if not left or time.monotonic() >= deadline:
            if reap:
                reap_children(spare)  # those that died since
            return left
        time.sleep(0.02)
