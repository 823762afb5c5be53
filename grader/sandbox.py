"""The `local` isolation: where student code runs and how everything it starts is removed.

As root, each grading gets its own unprivileged uid (from a locked pool, so parallel
gradings never share one: `kill(-1)` or RLIMIT_NPROC of one cannot touch another),
its own work directory, rlimits, and no core dumps; teardown kills every process of
that uid, escaped daemons included. Without root (a student's self-check) the code
runs as the caller with the same rlimits, and teardown kills every descendant of the
grader, which is a child subreaper so that double-forked daemons stay its descendants.
"""
from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import random
import resource
import shutil
import signal
import stat
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import probes
from .errors import GradingEnvironmentError, IsolationError

UID_BASE, UID_COUNT = 61000, 1000
PORT_LOW, PORT_HIGH = 20000, 59999
PR_SET_CHILD_SUBREAPER = 36
ADDR_NO_RANDOMIZE = 0x0040000
MiB = 1 << 20


@dataclass(frozen=True)
class Limits:
    """rlimits of every student process (the cgroup limits of the docker isolation come on top)."""

    nofile: int = 1024           # LABS.md: at most 1024 open descriptors
    nproc: int = 512             # processes of our own uid (without root: on top of what the user runs)
    address_space: int = 4 << 30  # virtual memory per process; not set for ThreadSanitizer builds
    cpu_seconds: int = 300       # CPU time per process
    file_size: int = 256 * MiB   # largest file a build or server may write


def _lock_dir() -> Path:
    d = Path(tempfile.gettempdir()) / "labgrade-locks"
    d.mkdir(mode=0o1777, exist_ok=True)
    with contextlib.suppress(PermissionError):
        os.chmod(d, 0o1777)
    return d


def _try_lock(name: str) -> int | None:
    """An exclusive, non-blocking lock held as long as the returned descriptor is open."""
    path = _lock_dir() / name
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


def set_subreaper() -> None:
    """Orphans of our descendants come back to us, so nothing escapes the tree."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def raise_nofile(want: int = 8192) -> None:
    """The load driver holds 500+ connections: lift our own descriptor limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


class Sandbox:
    """Owns a work directory, a uid (as root), a port lock, and every process started inside."""

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self.root = Path(tempfile.mkdtemp(prefix="labgrade-"))
        self._locks: list[int] = []
        self.spawned: set[int] = set()  # our direct children that their owners wait for
        self.uid: int | None = None
        self.gid: int | None = None
        if os.geteuid() == 0:
            self.uid = self.gid = self._allocate_uid()
        # students' uid must traverse to its work dirs, never list or write ours
        os.chmod(self.root, 0o711)
        set_subreaper()
        raise_nofile()

    # -- resources ---------------------------------------------------------------
    def _allocate_uid(self) -> int:
        start = random.randrange(UID_COUNT)
        for i in range(UID_COUNT):
            uid = UID_BASE + (start + i) % UID_COUNT
            fd = _try_lock(f"uid-{uid}.lock")
            if fd is None:
                continue
            self._locks.append(fd)
            self._kill_uid(uid)  # leftovers of a grading that died without cleaning up
            return uid
        raise IsolationError("no free unprivileged uid in the pool 61000-61999")

    def allocate_port(self) -> int:
        """A TCP port no one uses and no parallel grading will pick (locked until close)."""
        for _ in range(200):
            port = random.randint(PORT_LOW, PORT_HIGH)
            if probes.port_in_use(port):
                continue
            fd = _try_lock(f"port-{port}.lock")
            if fd is None:
                continue
            if probes.port_in_use(port):
                os.close(fd)
                continue
            self._locks.append(fd)
            return port
        raise GradingEnvironmentError("the machine has no free TCP port for the server")

    def workdir(self, name: str, source: Path | None = None, *, max_bytes: int = 50 * MiB,
                max_files: int = 2000) -> Path:
        """A directory the student uid owns, optionally a copy of `source` (symlinks not followed)."""
        dest = self.root / name
        if source is None:
            dest.mkdir()
        else:
            _check_tree_size(source, max_bytes, max_files)
            shutil.copytree(source, dest, symlinks=True,
                            ignore=shutil.ignore_patterns("server", "*.o", ".git", "__pycache__"))
        if self.uid is not None:
            for dirpath, dirnames, filenames in os.walk(dest):
                for n in [dirpath, *(os.path.join(dirpath, f) for f in dirnames + filenames)]:
                    os.lchown(n, self.uid, self.gid if self.gid is not None else self.uid)
        os.chmod(dest, 0o700)  # its uid only: another grading's (or the reference's) uid cannot enter
        return dest

    # -- running student code -----------------------------------------------------
    def env(self, home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8",
               "TERM": "dumb", "TMPDIR": str(home)}
        env.update(extra or {})
        return env

    def preexec(self, *, tsan: bool = False, new_session: bool = True) -> Callable[[], None]:
        """Runs in the child between fork and exec: limits, then the unprivileged uid."""
        lim, uid, gid = self.limits, self.uid, self.gid
        # RLIMIT_NPROC counts every process of the real uid: without root, leave room for the user's own
        nproc = lim.nproc if uid is not None else lim.nproc + sum(p.uid == os.getuid() for p in probes.all_procs())

        def setup() -> None:
            if new_session:
                with contextlib.suppress(OSError):
                    os.setsid()
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            resource.setrlimit(resource.RLIMIT_NOFILE, (lim.nofile, lim.nofile))
            resource.setrlimit(resource.RLIMIT_CPU, (lim.cpu_seconds, lim.cpu_seconds + 5))
            resource.setrlimit(resource.RLIMIT_FSIZE, (lim.file_size, lim.file_size))
            if tsan:
                # ThreadSanitizer maps huge shadow regions and needs a fixed layout
                ctypes.CDLL(None).personality(ADDR_NO_RANDOMIZE)
            else:
                resource.setrlimit(resource.RLIMIT_AS, (lim.address_space, lim.address_space))
            hard_nproc = resource.getrlimit(resource.RLIMIT_NPROC)[1]
            if uid is not None or hard_nproc == resource.RLIM_INFINITY or nproc <= hard_nproc:
                resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
            if uid is not None and gid is not None:
                os.setgroups([])
                os.setresgid(gid, gid, gid)
                os.setresuid(uid, uid, uid)
            os.umask(0o022)
            signal.signal(signal.SIGPIPE, signal.SIG_DFL)

        return setup

    # -- cleanup -------------------------------------------------------------------
    def processes(self) -> list[probes.Proc]:
        """Every live process this sandbox is responsible for."""
        procs = probes.all_procs()
        if self.uid is not None:
            mine = {p.pid for p in procs if p.uid == self.uid}
        else:
            mine = {p.pid for p in probes.descendants(os.getpid(), procs)}
        return [p for p in procs if p.pid in mine and not p.zombie]

    def kill_all(self, timeout: float = 5.0) -> list[probes.Proc]:
        """SIGKILL everything; returns what is still alive after `timeout` (should be nothing)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.uid is not None:
                self._kill_uid(self.uid)
            for p in self.processes():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(p.pid, signal.SIGKILL)
            reap_children(exclude=self.spawned)
            left = self.processes()
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.02)

    @staticmethod
    def _kill_uid(uid: int) -> None:
        """kill(-1, SIGKILL) as that uid: the kernel kills all its processes in one sweep,
        which a fork bomb cannot outrun."""
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            try:
                os.setresgid(uid, uid, uid)
                os.setresuid(uid, uid, uid)
                os.kill(-1, signal.SIGKILL)
            finally:
                os._exit(0)
        os.waitpid(pid, 0)

    def close(self) -> None:
        left = self.kill_all()
        shutil.rmtree(self.root, ignore_errors=True)
        for fd in self._locks:
            os.close(fd)
        self._locks.clear()
        if left:
            raise IsolationError("processes survived cleanup: " + ", ".join(p.describe() for p in left))


def reap_children(exclude: set[int] = frozenset()) -> None:  # type: ignore[assignment]
    """Reap zombies that were reparented to us (we are a subreaper), except those whose
    owner (subprocess, pexpect) waits for them itself."""
    for p in probes.children(os.getpid()):
        if p.zombie and p.pid not in exclude:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(p.pid, os.WNOHANG)


def _check_tree_size(source: Path, max_bytes: int, max_files: int) -> None:
    total = files = 0
    for dirpath, dirnames, filenames in os.walk(source):
        dirnames[:] = [d for d in dirnames if d not in (".git", "__pycache__")]
        for f in filenames:
            files += 1
            try:
                st = os.lstat(os.path.join(dirpath, f))
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                total += st.st_size
            if files > max_files or total > max_bytes:
                raise SubmissionTooLarge(
                    f"the submission holds more than {max_files} files or {max_bytes // MiB} MiB; "
                    "a lab directory needs a few sources, a header and a Makefile"
                )


class SubmissionTooLarge(Exception):
    """Raised by workdir(); the build check reports it as the student's failure."""


