"""The pool of unprivileged uids student code runs as (root only), one lock per uid.

A uid is held by one grading at a time, on this machine and in its containers alike:
RLIMIT_NPROC and kill(-1) count a uid across every container of the machine, so two
gradings never share one. A container gets the uids reserved for it on the host
(`LABGRADE_UIDS`) and takes them from that list only.
"""
from __future__ import annotations

import os
import random

from ...errors import IsolationError
from .locks import try_lock

UID_BASE, UID_COUNT = 61000, 1000
UIDS_ENV = "LABGRADE_UIDS"  # "61001,61002": the uids this grading may use (a container's, reserved on the host)


def reserve_uids(count: int, given: str = "") -> tuple[list[int], list[int]]:
    """Lock `count` uids: from `given` ("61001,61002", tried in that order) when set, else from the
    pool, tried from a random start. Returns (uids, lock descriptors to close once every process
    of those uids is gone); IsolationError when not enough are free."""
    if given:
        pool = [int(u) for u in given.split(",") if u.strip()]
        none_free = f"every uid of {UIDS_ENV}={given} is in use"
    else:
        start = random.randrange(UID_COUNT)
        pool = [UID_BASE + (start + i) % UID_COUNT for i in range(UID_COUNT)]
        none_free = f"no free unprivileged uid in the pool {UID_BASE}-{UID_BASE + UID_COUNT - 1}"
    uids: list[int] = []
    fds: list[int] = []
    for uid in pool:
        fd = try_lock(f"uid-{uid}.lock")
        if fd is not None:
            uids.append(uid)
            fds.append(fd)
            if len(uids) == count:
                return uids, fds
    for fd in fds:
        os.close(fd)
    raise IsolationError(none_free)


def reserve_uid() -> tuple[int, int]:
    """One uid for a local sandbox: of $LABGRADE_UIDS in a container, else of the pool.
    Returns (uid, lock descriptor)."""
    uids, fds = reserve_uids(1, os.environ.get(UIDS_ENV, ""))
    return uids[0], fds[0]
