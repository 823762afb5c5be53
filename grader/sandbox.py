"""The `local` isolation: where student code runs and how everything it starts is removed.

As root, each grading gets its own unprivileged uid (from a locked pool, so parallel
gradings never share one: `kill(-1)` or RLIMIT_NPROC of one cannot touch another),
its own work directory, rlimits, and no core dumps; teardown kills every process of
that uid, escaped daemons included, and removes what it wrote into the machine's
scratch directories. Where the kernel lets root make mount namespaces (not in a
container), student code also gets a private view of the file system: the home,
project and other non-system trees, the reference and the grader's own package are
hidden, and /tmp, /var/tmp, /dev/shm are small private tmpfs (its work directory is
mounted back in). Without root (a student's self-check) the code runs as the caller
with the same rlimits, and teardown kills every descendant of the grader, which is a
child subreaper so that double-forked daemons stay its descendants.

Everywhere, a watchdog thread counts the processes (threads included) and the memory
of the sandbox's processes ten times a second and kills them all when they pass the
limits, recording why (`Sandbox.violation`), so that feedback can say it. Student
processes get oom_score_adj 1000: when memory runs out anyway (a container's cgroup),
the kernel's OOM killer takes them before the grader.
"""
from __future__ import annotations

import contextlib
import ctypes
import fcntl
import functools
import os
import random
import resource
import shutil
import signal
import socket
import stat
import struct
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from . import probes
from .errors import GradingEnvironmentError, IsolationError

UID_BASE, UID_COUNT = 61000, 1000
UIDS_ENV = "LABGRADE_UIDS"  # "61001,61002": the uids this grading may use (a container's, reserved on the host)
IDLE_ENV = "LABGRADE_IDLE_CPU"  # "1": student code runs as SCHED_IDLE (set by the docker isolation)
WORK_ROOT_ENV = "LABGRADE_WORK_ROOT"  # where sandboxes make their work directories (default: the temp dir)
PORT_LOW, PORT_HIGH = 20000, 59999
PR_SET_CHILD_SUBREAPER = 36
ADDR_NO_RANDOMIZE = 0x0040000
MiB = 1 << 20
WATCH_INTERVAL = 0.1
# Places every user may write: what a uid leaves there is removed with it.
SCRATCH_DIRS = ("/tmp", "/var/tmp", "/dev/shm")
# Top-level directories student code keeps seeing in its private view (the system it
# compiles and runs with); every other top-level directory (home, root, opt, srv, mnt,
# project trees) is covered by an empty directory.
SYSTEM_DIRS = {"bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr", "etc", "dev", "proc", "sys", "tmp"}

_libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
MS_NOSUID, MS_NODEV, MS_REC, MS_PRIVATE = 0x2, 0x4, 0x4000, 0x40000
# open_tree(2) and move_mount(2) (Linux 5.2; the same numbers on every architecture)
SYS_OPEN_TREE, SYS_MOVE_MOUNT = 428, 429
AT_FDCWD, AT_RECURSIVE, OPEN_TREE_CLONE, MOVE_MOUNT_F_EMPTY_PATH = -100, 0x8000, 1, 0x4


@dataclass(frozen=True)
class Limits:
    """rlimits of every student process, and the watchdog's limits on the sandbox's processes
    together (the cgroup limits of the docker isolation come on top)."""

    nofile: int = 1024           # LABS.md: at most 1024 open descriptors
    # processes and threads of our own uid (without root: on top of what the user runs). A
    # container's pids limit (512) also counts the grader: half of it stays the grader's.
    # The thread lab's legal designs need ~60 (a thread per client, a 32-worker pool).
    nproc: int = 256
    address_space: int = 4 << 30  # virtual memory per process; not set for ThreadSanitizer builds
    cpu_seconds: int = 300       # CPU time per process
    file_size: int = 256 * MiB   # largest file a build or server may write
    memory: int = 1024 * MiB     # resident memory of all the sandbox's processes together (watchdog)
    scratch: int = 64 * MiB      # each private /tmp, /var/tmp, /dev/shm (root, outside containers)
    # SCHED_IDLE and nice 19: student code gets the CPU only when the grader does not want it.
    # For a container, where every task shares one CPU group: 256 spinning processes would
    # otherwise leave the grader 1/257 of it. On the machine itself autogroup (a CPU group per
    # session) already keeps the grader's share, and SCHED_IDLE would let anyone else's work
    # starve a correct server: off there.
    idle_cpu: bool = field(default_factory=lambda: os.environ.get(IDLE_ENV) == "1")


@dataclass
class Violation:
    """The watchdog killed the sandbox's processes: when, and why (for feedback)."""

    at: float  # time.monotonic()
    reason: str


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


def reserve_uids(count: int) -> tuple[list[int], list[int]]:
    """Lock `count` uids of the pool for a grading that runs elsewhere (a container): the same
    locks as a local sandbox's, so no two gradings of this machine share a uid (RLIMIT_NPROC and
    kill(-1) count a uid across every container). Returns (uids, lock descriptors to close after)."""
    uids: list[int] = []
    fds: list[int] = []
    start = random.randrange(UID_COUNT)
    for i in range(UID_COUNT):
        uid = UID_BASE + (start + i) % UID_COUNT
        fd = _try_lock(f"uid-{uid}.lock")
        if fd is not None:
            uids.append(uid)
            fds.append(fd)
            if len(uids) == count:
                return uids, fds
    for fd in fds:
        os.close(fd)
    raise IsolationError("no free unprivileged uid in the pool 61000-61999")


def _server_ports() -> range:
    """PORT_LOW..PORT_HIGH without the ephemeral ports (net.ipv4.ip_local_port_range), when
    enough remain."""
    try:
        lo, hi = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        return range(PORT_LOW, PORT_HIGH + 1)
    below, above = range(PORT_LOW, min(lo, PORT_HIGH + 1)), range(max(hi + 1, PORT_LOW), PORT_HIGH + 1)
    best = max(below, above, key=len)
    return best if len(best) >= 2000 else range(PORT_LOW, PORT_HIGH + 1)


def set_subreaper() -> None:
    """Orphans of our descendants come back to us, so nothing escapes the tree."""
    _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _succeeds_in_child(attempt: Callable[[], bool]) -> bool:
    """Whether `attempt` returns True in a forked child: namespaces are probed there, so this
    process keeps its own."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            os._exit(0 if attempt() else 1)
        except BaseException:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    return os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def _private_fs_works() -> bool:
    return (_libc.unshare(CLONE_NEWNS) == 0
            and _libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) == 0
            and _libc.syscall(SYS_OPEN_TREE, AT_FDCWD, b"/tmp", OPEN_TREE_CLONE | AT_RECURSIVE) >= 0)


@functools.cache
def private_fs_supported() -> bool:
    """True when we may give student code a mount namespace of its own (root with
    CAP_SYS_ADMIN, i.e. not inside an ordinary container). Probed once, in a child."""
    return (os.geteuid() == 0 and os.environ.get("LABGRADE_PRIVATE_FS", "1") != "0"
            and _succeeds_in_child(_private_fs_works))


def local_protection() -> str:
    """What the local isolation holds on this machine, in a few words (README: the table)."""
    if os.geteuid() != 0:
        return ("not root: student code runs as you, unconfined (kill(-1), your files, the network); "
                "grade untrusted code with --isolation docker")
    held = ["a uid of its own per grading"]
    held.append("a private view of the file system" if private_fs_supported() else
                "NO private view of the file system (it needs CAP_SYS_ADMIN)")
    held.append("a network of its own" if private_network_supported() else
                "the machine's network (a network of its own needs CAP_SYS_ADMIN and CAP_NET_ADMIN)")
    return "root: " + ", ".join(held)


@functools.cache
def private_network_supported() -> bool:
    """True when private_network() would work here. Probed once, in a child."""
    return _succeeds_in_child(private_network)


def private_network() -> bool:
    """Move this process (a grading's pytest, before it starts any thread) into a network namespace
    of its own with only the loopback interface up, as `docker run --network none` does: the
    student's server and the grader's clients meet on 127.0.0.1, and nothing the submission runs
    can reach the machine's network, its services, or another grading's ports. Needs root with
    CAP_SYS_ADMIN and CAP_NET_ADMIN (a host; the grading containers have no network anyway);
    False, with nothing changed, when not possible (LABGRADE_PRIVATE_NET=0 turns it off)."""
    if os.geteuid() != 0 or os.environ.get("LABGRADE_PRIVATE_NET", "1") == "0":
        return False
    try:
        machine = os.open("/proc/self/ns/net", os.O_RDONLY)
    except OSError:
        return False
    try:
        if _libc.unshare(CLONE_NEWNET) != 0:
            return False
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                req = struct.pack("16sH22x", b"lo", 0)
                flags = struct.unpack("16sH22x", fcntl.ioctl(s, SIOCGIFFLAGS, req))[1]
                fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | IFF_UP))
            return True
        except OSError:
            # allowed to make a namespace (CAP_SYS_ADMIN) but not to bring its loopback up (no
            # CAP_NET_ADMIN, as in a container given only the former): go back to the machine's
            if _libc.setns(machine, CLONE_NEWNET) != 0:
                raise GradingEnvironmentError("a network namespace without loopback, and no way back to the "
                                              "machine's: " + os.strerror(ctypes.get_errno())) from None
            return False
    finally:
        os.close(machine)


def _mount(source: str, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    if _libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None, flags,
                   data.encode() if data else None) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"mount {target}: {os.strerror(e)}")


def _private_view(keep: str, hide: Iterable[str], scratch: int) -> None:
    """In a child, as root, before it drops to the student uid: a mount namespace of its own
    where non-system trees and `hide` are covered, the scratch directories are private tmpfs,
    and `keep` (the sandbox's root) is mounted back where it was."""
    keep_ino = os.stat(keep).st_ino
    if _libc.unshare(CLONE_NEWNS) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS)")
    # nothing we mount may propagate back to the machine: fail rather than go on
    _mount("none", "/", None, MS_REC | MS_PRIVATE, None)
    # a detached copy of the sandbox's tree, to be put back after /tmp (or its parent) is covered
    keep_fd = _libc.syscall(SYS_OPEN_TREE, AT_FDCWD, keep.encode(), OPEN_TREE_CLONE | AT_RECURSIVE)
    if keep_fd < 0:
        raise OSError(ctypes.get_errno(), f"open_tree {keep}")
    covered = []
    for name in sorted(os.listdir("/")):
        path = "/" + name
        if name not in SYSTEM_DIRS and os.path.isdir(path) and not os.path.islink(path):
            covered.append(path)
    covered += [h for h in hide if os.path.isdir(h) and not any(h == c or h.startswith(c + "/") for c in covered)]
    for path in covered:
        _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, "size=64k,nr_inodes=256,mode=0755")
    for path in SCRATCH_DIRS:
        os.makedirs(path, mode=0o755, exist_ok=True)
        _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, f"size={scratch},mode=1777")
    try:
        seen = os.stat(keep).st_ino
    except OSError:
        seen = -1
    if seen != keep_ino:  # covered: make the path again (root-owned, traversable) and mount it back
        os.makedirs(keep, mode=0o711, exist_ok=True)
        if _libc.syscall(SYS_MOVE_MOUNT, keep_fd, b"", AT_FDCWD, keep.encode(), MOVE_MOUNT_F_EMPTY_PATH) != 0:
            raise OSError(ctypes.get_errno(), f"move_mount {keep}")
    os.close(keep_fd)


def raise_nofile(want: int = 8192) -> None:
    """The load driver holds 500+ connections: lift our own descriptor limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


class Sandbox:
    """Owns a work directory, a uid (as root), a port lock, and every process started inside."""

    def __init__(self, limits: Limits | None = None, *, hide: Iterable[Path] = ()) -> None:
        self.limits = limits or Limits()
        self.root = Path(tempfile.mkdtemp(prefix="labgrade-", dir=os.environ.get(WORK_ROOT_ENV) or None))
        self._locks: list[int] = []
        self.spawned: set[int] = set()  # our direct children that their owners wait for
        self.uid: int | None = None
        self.gid: int | None = None
        if os.geteuid() == 0:
            self.uid = self.gid = self._allocate_uid()
        # students' uid must traverse to its work dirs, never list or write ours
        os.chmod(self.root, 0o711)
        self.private_fs = self.uid is not None and private_fs_supported()
        self.hide = [str(Path(h).resolve()) for h in hide]
        self.violations: list[Violation] = []
        self.peak_memory = 0  # the most resident memory the watchdog saw, all processes together
        self._watch_lock = threading.Lock()
        self._watcher: threading.Thread | None = None
        self._closed = threading.Event()
        set_subreaper()
        raise_nofile()

    # -- resources ---------------------------------------------------------------
    def _allocate_uid(self) -> int:
        given = os.environ.get(UIDS_ENV, "")
        if given:  # a container: the uids reserved for it on the host, and no others
            for uid in (int(u) for u in given.split(",") if u.strip()):
                fd = _try_lock(f"uid-{uid}.lock")
                if fd is not None:
                    self._locks.append(fd)
                    self._kill_uid(uid)
                    return uid
            raise IsolationError(f"every uid of {UIDS_ENV}={given} is in use")
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
        """A TCP port no one uses and no parallel grading will pick (locked until close), outside
        the kernel's range of ephemeral ports: a connect() anywhere on the machine (hundreds per
        check) could otherwise take it between this choice and the server's bind."""
        ports = _server_ports()
        for _ in range(200):
            port = random.choice(ports)
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
        """Runs in the child between fork and exec: limits, a private view of the file system
        (root, outside containers), then the unprivileged uid."""
        lim, uid, gid = self.limits, self.uid, self.gid
        # RLIMIT_NPROC counts every process of the real uid: without root, leave room for the user's own
        nproc = lim.nproc if uid is not None else lim.nproc + sum(p.uid == os.getuid() for p in probes.all_procs())
        private, keep, hide = self.private_fs, str(self.root), list(self.hide)
        self.watch()

        def setup() -> None:
            if new_session:
                with contextlib.suppress(OSError):
                    os.setsid()
            # the OOM killer's first choice, before the grader (root keeps it from being lowered again)
            with contextlib.suppress(OSError), open("/proc/self/oom_score_adj", "w") as f:
                f.write("1000")
            if private:
                _private_view(keep, hide, lim.scratch)
            if lim.idle_cpu:
                os.setpriority(os.PRIO_PROCESS, 0, 19)  # kept if it ever leaves SCHED_IDLE: RLIMIT_NICE is 0
                resource.setrlimit(resource.RLIMIT_NICE, (0, 0))
                os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
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

    # -- the watchdog ----------------------------------------------------------------
    def watch(self) -> None:
        """Start the watchdog (once): it stops at close()."""
        with self._watch_lock:
            if self._watcher is None and not self._closed.is_set():
                self._watcher = threading.Thread(target=self._watch_loop, name="labgrade-watchdog", daemon=True)
                self._watcher.start()

    def usage(self) -> tuple[int, int, list[int]]:
        """(processes and threads, resident bytes, pids) of the sandbox's live processes, read from /proc."""
        tasks = rss = 0
        pids: list[int] = []
        if self.uid is not None:
            with os.scandir("/proc") as it:
                cand = []
                for e in it:
                    if e.name.isdigit():
                        with contextlib.suppress(OSError):
                            if e.stat().st_uid == self.uid:
                                cand.append(int(e.name))
        else:
            cand = [p.pid for p in probes.descendants(os.getpid())]
        for pid in cand:
            try:
                with open(f"/proc/{pid}/stat", "rb") as f:
                    raw = f.read()
            except OSError:
                continue
            fields = raw[raw.rindex(b")") + 2 :].split()
            if fields[0] in (b"Z", b"X"):
                continue
            pids.append(pid)
            tasks += int(fields[17])
            rss += int(fields[21]) * PAGE
        return tasks, rss, pids

    def _watch_loop(self) -> None:
        lim = self.limits
        while not self._closed.wait(WATCH_INTERVAL):
            try:
                tasks, rss, pids = self.usage()
            except OSError:
                continue
            self.peak_memory = max(self.peak_memory, rss)
            reason = ""
            if rss > lim.memory:
                reason = (f"its processes used {rss / MiB:.0f} MiB of memory, more than the limit of "
                          f"{lim.memory // MiB} MiB")
            elif tasks >= lim.nproc - 16:
                reason = (f"its processes reached the limit of {lim.nproc} processes and threads at once "
                          f"({len(pids)} processes, {tasks} with their threads): a fork bomb?")
            if reason:
                self.violations.append(Violation(time.monotonic(), reason))
                self._kill_pids(pids)

    def _kill_pids(self, pids: list[int]) -> None:
        """SIGKILL from the watchdog's thread (never reaps: the owners of the processes do)."""
        if self.uid is not None:
            self._kill_uid(self.uid)
        for _ in range(20):
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            if self.uid is not None:
                return
            pids = [p.pid for p in probes.descendants(os.getpid()) if not p.zombie and p.pid not in self.spawned]
            if not pids:
                return

    def violation(self, since: float) -> str | None:
        """Why the watchdog last killed the sandbox's processes after `since` (monotonic), if it did."""
        for v in reversed(self.violations):
            if v.at >= since:
                return v.reason
        return None

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
                if not left:
                    self.sweep_scratch()
                return left
            time.sleep(0.02)

    def sweep_scratch(self) -> None:
        """Remove what our uid left in the machine's scratch directories (and the lock directory).
        Only as root, where the uid is ours alone; its processes must be gone first."""
        if self.uid is None:
            return
        for d in (*SCRATCH_DIRS, str(_lock_dir())):
            try:
                entries = list(os.scandir(d))
            except OSError:
                continue
            for e in entries:
                try:
                    if e.stat(follow_symlinks=False).st_uid != self.uid:
                        continue
                    if e.is_dir(follow_symlinks=False):
                        shutil.rmtree(e.path, ignore_errors=True)
                    else:
                        os.unlink(e.path)
                except OSError:
                    continue

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
        self._closed.set()
        if self._watcher is not None:
            self._watcher.join(2)
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


PAGE = os.sysconf("SC_PAGE_SIZE")


# -- the memory cgroup we run in (a container's, or the machine's) -------------------------
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


class SubmissionTooLarge(Exception):
    """Raised by workdir(); the build check reports it as the student's failure."""


