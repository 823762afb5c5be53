"""What a test leaves behind, and the autouse fixture that fails the test for it (a pytest plugin,
loaded by tests/conftest.py; `-p leaks` loads it in a pytester run).

Before each test and after its teardown the fixture looks at:
- processes: new ones under the pytest process (which is made a child subreaper, so that a
  double-forked daemon stays under it), and new orphans of the grader's uid pool
  (grader/isolation/local's UID_BASE, UID_COUNT; those of a grading elsewhere on the machine are
  that grading's, under its own subreaper, and are not counted);
- uid (and port) locks of grader/isolation/local/locks.py still held open by the pytest process;
- containers and volumes labelled by the docker isolation for this test run (their session
  starts with $LABGRADE_SESSION_PREFIX, set for the run), when a Docker engine answers its
  local socket within DOCKER_TIMEOUT (asked once per run).
It fails the test naming each thing left, then removes processes and Docker objects, so that
the next test starts clean (locks belong to objects it cannot close for them).
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import http.client
import json
import os
import signal
import socket
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from grader.isolation.docker import LABEL_SESSION, SESSION_PREFIX_ENV
from grader.isolation.local import UID_BASE, UID_COUNT
from grader.isolation.local.locks import lock_dir as _lock_dir

POOL = range(UID_BASE, UID_BASE + UID_COUNT)
DOCKER_TIMEOUT = 0.5  # s: an engine slower than this to answer is not looked at
GONE_WITHIN = 2.0     # s a process may take to finish dying after the test (SIGKILL sent, not yet reaped)
PR_SET_CHILD_SUBREAPER = 36


@dataclass(frozen=True)
class Look:
    """What exists at one moment."""

    pids: frozenset[int]
    locks: frozenset[str]   # "uid-61234.lock (fd 12)": lock files this process holds open
    docker: frozenset[str]  # "container 3f2a... (labgrade.session=...)", "volume labgrade-..."


def look() -> Look:
    return Look(frozenset(_pids()), frozenset(_held_locks()), frozenset(_docker_objects()))


def left_behind(before: Look) -> list[str]:
    """What exists now that did not before, and should not outlive a test; [] when clean."""
    procs = _leaked_processes(before.pids)
    if procs:  # one that is being killed gets a moment to go
        deadline = time.monotonic() + GONE_WITHIN
        while procs and time.monotonic() < deadline:
            time.sleep(0.05)
            procs = _leaked_processes(before.pids)
    return ([f"process {p.describe()}" for p in procs]
            + [f"held lock {lock}" for lock in sorted(set(_held_locks()) - before.locks)]
            + sorted(set(_docker_objects()) - before.docker))


def remove_leaks(before: Look) -> None:
    """Kill (and reap) the processes left since `before`; remove the Docker objects."""
    for p in _leaked_processes(before.pids):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(p.pid, signal.SIGKILL)
    for _ in range(100):
        left = _leaked_processes(before.pids)
        for p in left:
            if p.ppid == os.getpid():
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(p.pid, os.WNOHANG)
        if not left:
            break
        time.sleep(0.02)
    for obj in sorted(set(_docker_objects()) - before.docker):
        kind, name = obj.split()[:2]
        with contextlib.suppress(OSError, http.client.HTTPException):
            _docker_get(f"/{kind}s/{name}?force=1" + ("&v=1" if kind == "container" else ""), method="DELETE")


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """Fail a test that leaves a process, a grading container or volume, or a held uid lock."""
    before = look()
    yield
    left = left_behind(before)
    if left:
        remove_leaks(before)
        pytest.fail("the test left behind (processes killed, Docker objects removed):\n  " + "\n  ".join(left),
                    pytrace=False)


def pytest_configure(config: pytest.Config) -> None:
    # orphans of the test's processes come back to pytest (instead of init): never out of sight
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    # this run's containers and volumes carry a session label of their own (docker isolation)
    os.environ.setdefault(SESSION_PREFIX_ENV, f"pytest-{os.getpid()}-")


# ----------------------------------------------------------------------------- processes

@dataclass(frozen=True)
class _Proc:
    pid: int
    ppid: int
    state: str
    comm: str
    uid: int

    def describe(self) -> str:
        try:
            cmd = Path(f"/proc/{self.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            cmd = ""
        return (f"{self.pid} ({self.comm}, uid {self.uid}, parent {self.ppid})"
                + (f": {cmd.strip()[:120]}" if cmd.strip() else ""))


def _pids() -> set[int]:
    return {int(n) for n in os.listdir("/proc") if n.isdigit()}


def _proc(pid: int) -> _Proc | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode(errors="replace")
        uid = os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None
    rest = raw[raw.rindex(")") + 2:].split()
    return _Proc(pid, int(rest[1]), rest[0], raw[raw.index("(") + 1:raw.rindex(")")], uid)


def _leaked_processes(before: frozenset[int]) -> list[_Proc]:
    """Live processes new since `before`: under the pytest process, or orphans of the uid pool.
    Only new pids are read, and their ancestors: a look costs little on a busy machine."""
    me = os.getpid()
    known: dict[int, _Proc | None] = {}

    def get(pid: int) -> _Proc | None:
        if pid not in known:
            known[pid] = _proc(pid)
        return known[pid]

    def under_me(p: _Proc) -> bool:
        seen = 0
        while p.ppid > 1 and seen < 64:
            if p.ppid == me:
                return True
            parent = get(p.ppid)
            if parent is None:
                return False
            p, seen = parent, seen + 1
        return False

    out = []
    for pid in sorted(_pids() - before):
        p = get(pid)
        if p is None or p.state in ("Z", "X"):
            continue
        if under_me(p) or (p.uid in POOL and p.ppid == 1):
            out.append(p)
    return out


# ----------------------------------------------------------------------------- locks

def _held_locks() -> list[str]:
    """grader/isolation/local/locks.py's lock files (uid-N.lock, port-N.lock) this process holds open."""
    lock_dir = str(_lock_dir()) + "/"
    out = []
    with contextlib.suppress(OSError):
        for fd in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/self/fd/{fd}")
                if target.startswith(lock_dir):
                    out.append(f"{target[len(lock_dir):]} (fd {fd})")
    return out


# ----------------------------------------------------------------------------- Docker

class _UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=DOCKER_TIMEOUT)
        self.path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(DOCKER_TIMEOUT)
        try:
            s.connect(self.path)
        except OSError:
            s.close()
            raise
        self.sock = s


def _socket_path() -> str | None:
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    return host[len("unix://"):] if host.startswith("unix://") else None  # tcp: not looked at


def _docker_get(url: str, method: str = "GET") -> object:
    path = _socket_path()
    assert path is not None
    c = _UnixHTTP(path)
    try:
        c.request(method, url)
        r = c.getresponse()
        body = r.read()
        if r.status >= 300:
            raise http.client.HTTPException(f"{method} {url}: {r.status}")
        return json.loads(body) if r.getheader("Content-Type", "").startswith("application/json") else body
    finally:
        c.close()


@functools.cache
def docker_answers() -> bool:
    """Whether a Docker engine answers its local socket quickly (asked once per run)."""
    path = _socket_path()
    if path is None or not os.path.exists(path):
        return False
    try:
        _docker_get("/_ping")
        return True
    except (OSError, ValueError, http.client.HTTPException):
        return False


def _docker_objects() -> list[str]:
    """This run's containers and volumes of the docker isolation (by their session label)."""
    if not docker_answers():
        return []
    prefix = os.environ.get(SESSION_PREFIX_ENV, "")
    filters = urllib.parse.quote(json.dumps({"label": [LABEL_SESSION]}))
    try:
        cts = _docker_get(f"/containers/json?all=1&filters={filters}")
        vols = _docker_get(f"/volumes?filters={filters}")
    except (OSError, ValueError, http.client.HTTPException):
        return []  # the engine went away meanwhile: nothing to say about it
    out = []
    for ct in cts if isinstance(cts, list) else []:
        session = (ct.get("Labels") or {}).get(LABEL_SESSION, "")
        if session.startswith(prefix):
            out.append(f"container {ct['Id'][:12]} ({LABEL_SESSION}={session}, {ct.get('State', '?')})")
    for vol in (vols.get("Volumes") or []) if isinstance(vols, dict) else []:
        session = (vol.get("Labels") or {}).get(LABEL_SESSION, "")
        if session.startswith(prefix):
            out.append(f"volume {vol['Name']} ({LABEL_SESSION}={session})")
    return out
