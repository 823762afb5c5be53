"""Read-only probes of /proc: processes, descriptors, threads, memory, CPU, sockets.

Everything here reads the kernel's view directly, so a server cannot lie about it.
Reading `/proc/PID/fd/*` links of another uid's process needs CAP_SYS_PTRACE
(ENVIRONMENT.md); without it a root grader reads them as the process's own uid (fd_targets).
Probes only observe: what they cannot read raises ProbeError (the environment's failure), and
ProbeInterfered when the submission kept killing the helper; the check that asked decides
whether that is the student's failure (checks.common.fd_targets).
"""
from __future__ import annotations

import contextlib
import os
import select
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .errors import ProbeError, ProbeInterfered

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
LISTEN = "0A"


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    state: str  # one letter: R S D Z T ...
    comm: str
    threads: int
    cpu_seconds: float  # user + system time of this process (not of its children)
    uid: int
    rss: int  # resident memory, bytes

    @property
    def zombie(self) -> bool:
        return self.state == "Z"

    def describe(self) -> str:
        return f"pid {self.pid} ({self.comm}, state {self.state}, parent {self.ppid})"


def proc(pid: int) -> Proc | None:
    """One process, or None when it is gone."""
    try:
        # the one reader of /proc/PID/stat; comm is whatever bytes the process set (prctl)
        raw = Path(f"/proc/{pid}/stat").read_bytes().decode(errors="replace")
        st = os.stat(f"/proc/{pid}")
    except (FileNotFoundError, ProcessLookupError):
        return None
    # comm may hold spaces and parentheses: it ends at the last ')'.
    comm = raw[raw.index("(") + 1 : raw.rindex(")")]
    f = raw[raw.rindex(")") + 2 :].split()
    # fields after comm: state(0) ppid(1) ... utime(11) stime(12) ... num_threads(17) ... rss(21)
    return Proc(pid=pid, ppid=int(f[1]), state=f[0], comm=comm, threads=int(f[17]),
                cpu_seconds=(int(f[11]) + int(f[12])) / CLK_TCK, uid=st.st_uid, rss=int(f[21]) * PAGE)


def pids_of(uid: int) -> list[int]:
    """The pids of uid's processes, zombies included (a stat of each /proc entry, cheaper than
    reading every process's stat file)."""
    out = []
    with os.scandir("/proc") as it:
        for e in it:
            if e.name.isdigit():
                try:
                    if e.stat().st_uid == uid:
                        out.append(int(e.name))
                except OSError:
                    continue
    return out


def all_procs() -> list[Proc]:
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            p = proc(int(name))
            if p is not None:
                out.append(p)
    return out


def children(pid: int) -> list[Proc]:
    """Direct children of pid, zombies included."""
    return [p for p in all_procs() if p.ppid == pid]


def descendants(pid: int, procs: list[Proc] | None = None) -> list[Proc]:
    procs = all_procs() if procs is None else procs
    kids: dict[int, list[Proc]] = {}
    for p in procs:
        kids.setdefault(p.ppid, []).append(p)
    out, todo = [], [pid]
    while todo:
        for k in kids.get(todo.pop(), []):
            out.append(k)
            todo.append(k.pid)
    return out


def status(pid: int) -> dict[str, str]:
    """/proc/PID/status as a dict (values stripped); empty when the process is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return {}
    out = {}
    for line in text.splitlines():
        k, _, v = line.partition(":")
        out[k] = v.strip()
    return out


def kib(pid: int, field: str) -> int:
    """A `kB` field of /proc/PID/status (VmSize, VmRSS, ...) in KiB, 0 when absent."""
    v = status(pid).get(field, "0 kB").split()[0]
    return int(v)


def thread_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except FileNotFoundError:
        return 0


def fd_count(pid: int) -> int:
    """Number of open descriptors (listing the directory needs no capability)."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except (FileNotFoundError, PermissionError):
        return 0  # gone, or dying (a dying process's fd directory is no longer readable by its user)


def fd_targets(pid: int) -> dict[int, str]:
    """fd -> link target (`socket:[123]`, `/dev/pts/3`, ...).

    Reading another uid's links needs CAP_SYS_PTRACE. Without it (Docker's default capabilities,
    Gradescope) a root grader reads them from a forked helper that takes the target's uid: the
    kernel lets a process read its own uid's links, and the helper, made non-dumpable by the uid
    change itself, cannot be traced or altered by the student's processes (it can be signalled:
    ProbeInterfered when it kept being killed). ProbeError when the links cannot be read at all."""
    return {fd: e.target for fd, e in _fds(pid, detail=False).items()}


@dataclass(frozen=True)
class FdEntry:
    target: str  # the link: `pipe:[123]`, `socket:[4]`, `/path`, `/queue` (a POSIX message queue)
    flags: int   # /proc/PID/fdinfo/N `flags` (O_ACCMODE: O_RDONLY, O_WRONLY, O_RDWR), -1 unknown
    mnt_id: int  # fdinfo `mnt_id`: the mount the open file lives on, -1 unknown
    pos: int = -1  # fdinfo `pos`: the file offset, -1 unknown

    @property
    def reads(self) -> bool:
        return self.flags >= 0 and self.flags & os.O_ACCMODE in (os.O_RDONLY, os.O_RDWR)

    @property
    def writes(self) -> bool:
        return self.flags >= 0 and self.flags & os.O_ACCMODE in (os.O_WRONLY, os.O_RDWR)

    @property
    def pipe_inode(self) -> int | None:
        return int(self.target[6:-1]) if self.target.startswith("pipe:[") else None


def fd_entries(pid: int) -> dict[int, FdEntry]:
    """fd -> its link target, open flags, mount and offset (fdinfo), read as fd_targets reads links."""
    return _fds(pid, detail=True)


def _fdinfo(pid: int, name: str) -> tuple[int, int, int]:
    flags = mnt = pos = -1
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/fdinfo/{name}").read_text().splitlines():
            key, _, value = line.partition(":")
            if key == "flags":
                flags = int(value.strip(), 8)
            elif key == "mnt_id":
                mnt = int(value.strip())
            elif key == "pos":
                pos = int(value.strip())
    return flags, mnt, pos


def _entry(record: str, detail: bool) -> tuple[int, FdEntry]:
    """One record of the helper's output: `N=TARGET`, with `detail` `N=FLAGS:MNT:POS:TARGET` (TARGET
    last: it may hold ':')."""
    name, _, rest = record.partition("=")
    if not detail:
        return int(name), FdEntry(rest, -1, -1)
    flags, _, rest = rest.partition(":")
    mnt, _, rest = rest.partition(":")
    pos, _, target = rest.partition(":")
    return int(name), FdEntry(target, int(flags), int(mnt), int(pos))


def _record(pid: int, name: str, detail: bool) -> str:
    target = os.readlink(f"/proc/{pid}/fd/{name}")
    if not detail:
        return f"{name}={target}"
    flags, mnt, pos = _fdinfo(pid, name)
    return f"{name}={flags}:{mnt}:{pos}:{target}"


def _fds(pid: int, detail: bool) -> dict[int, FdEntry]:
    out = {}
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except (FileNotFoundError, ProcessLookupError):
        return {}
    for name in names:
        try:
            fd, entry = _entry(_record(pid, name, detail), detail)
        except FileNotFoundError:
            continue
        except PermissionError as e:
            return _fds_as_owner(pid, e, detail)
        out[fd] = entry
    return out


def _fd_targets_as_owner(pid: int, denied: PermissionError) -> dict[int, str]:
    return {fd: e.target for fd, e in _fds_as_owner(pid, denied).items()}


def _fds_as_owner(pid: int, denied: PermissionError, detail: bool = False) -> dict[int, FdEntry]:
    try:
        st = os.stat(f"/proc/{pid}")
    except (FileNotFoundError, ProcessLookupError):
        return {}
    uid, gid = st.st_uid, st.st_gid
    if os.geteuid() != 0 or uid == 0:
        raise ProbeError(
            f"cannot read /proc/{pid}/fd links ({denied}); the grader needs CAP_SYS_PTRACE, or to run as root, "
            "to inspect another user's descriptors (docker run --cap-add SYS_PTRACE)") from denied
    # The helper has the submission's uid, so the submission can signal it (nothing else: the uid
    # change made it non-dumpable, so it cannot be traced or read). Killed or stopped by anyone but
    # us, it is tried again; a submission that keeps doing that is told apart (ProbeInterfered),
    # so that the check can make it the student's failure, not an uncharged error.
    interfered = 0
    while True:
        status, data, stopped, we_killed = _links_as(uid, gid, pid, detail)
        if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
            return dict(_entry(part, detail) for part in data.decode(errors="replace").split("\0") if part)
        if stopped or (os.WIFSIGNALED(status) and not we_killed):
            interfered += 1
            if interfered < 5:
                continue
            raise ProbeInterfered(pid, interfered)
        if _ending(pid):  # it ended meanwhile (a zombie's fd directory is no one's to read): none held
            return {}
        raise ProbeError(
            f"cannot read /proc/{pid}/fd links ({denied}), not even as uid {uid}: the grader needs CAP_SYS_PTRACE "
            "(docker run --cap-add SYS_PTRACE)") from denied


def _ending(pid: int, within: float = 0.5) -> bool:
    """Whether pid is gone or a zombie, or becomes one within `within` s (a process on its way out has
    already lost the descriptors and memory that make its fd directory readable)."""
    deadline = time.monotonic() + within
    while (p := proc(pid)) is not None and not p.zombie and time.monotonic() < deadline:
        time.sleep(0.02)
    return p is None or p.zombie


def _links_as(uid: int, gid: int, pid: int, detail: bool = False,
              timeout: float = 10.0) -> tuple[int, bytes, bool, bool]:
    """Read pid's fd links (and with `detail` their fdinfo) in a forked child that takes uid/gid."""

    def collect() -> bytes:
        parts = []
        try:
            names = os.listdir(f"/proc/{pid}/fd")
        except FileNotFoundError:
            return b""  # gone meanwhile: no descriptors
        for name in names:
            with contextlib.suppress(OSError):
                parts.append(_record(pid, name, detail))
        return "\0".join(parts).encode()

    return _as_uid(uid, gid, collect, timeout)


def read_files_as(uid: int, gid: int, paths: list[str], timeout: float = 2.0) -> dict[str, str]:
    """The text of each of `paths` that uid/gid may read (those it may not, or gone, are left out),
    read in a forked child that takes uid/gid: how root without CAP_SYS_PTRACE reads files of
    /proc/PID/ that only the process's own uid may (a task's `syscall`). ProbeError when the child
    fails, ProbeInterfered when someone but us killed or stopped it."""

    def collect() -> bytes:
        out = []
        for path in paths:
            try:
                with open(path, "rb") as f:
                    out.append(path.encode() + b"\0" + f.read() + b"\0")
            except OSError:
                continue
        return b"".join(out)

    status, data, stopped, we_killed = _as_uid(uid, gid, collect, timeout)
    if stopped or (os.WIFSIGNALED(status) and not we_killed):
        raise ProbeInterfered(-1, 1)
    if not (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0):
        raise ProbeError(f"a helper of uid {uid} could not read {len(paths)} files of /proc")
    fields = data.split(b"\0")
    return {fields[i].decode(): fields[i + 1].decode(errors="replace") for i in range(0, len(fields) - 1, 2)}


def _as_uid(uid: int, gid: int, collect: Callable[[], bytes], timeout: float) -> tuple[int, bytes, bool, bool]:
    """Run `collect` in a forked child that takes uid/gid, and read what it returns. Returns the
    child's wait status, what it wrote, whether it was found stopped, and whether we had to kill it."""
    r, w = os.pipe()
    try:
        child = os.fork()
    except OSError as e:  # no process left to make (a fork bomb's neighbour in a container)
        os.close(r)
        os.close(w)
        raise ProbeError(f"cannot start a helper of uid {uid}: {e}") from e
    if child == 0:  # only system calls from here to _exit: the grader has threads
        code = 1
        try:
            os.close(r)
            os.setgroups([])
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
            data = collect()
            while data:
                data = data[os.write(w, data):]
            code = 0
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    chunks = []
    stopped = eof = False
    with os.fdopen(r, "rb") as f:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([f], [], [], 0.2)
            if ready:
                chunk = os.read(f.fileno(), 1 << 16)
                if not chunk:
                    eof = True  # its end of the pipe closes only as it exits
                    break
                chunks.append(chunk)
            else:
                p = proc(child)
                if p is not None and p.state in ("T", "t"):  # stopped: not by us
                    stopped = True
                    break
    if not eof:  # stopped, or silent past the timeout: we end it
        os.kill(child, 9)
    _, status = os.waitpid(child, 0)
    return status, b"".join(chunks), stopped, not eof and not stopped


def socket_inodes(pid: int) -> dict[int, int]:
    """fd -> socket inode, sockets only."""
    out = {}
    for fd, target in fd_targets(pid).items():
        if target.startswith("socket:["):
            out[fd] = int(target[8:-1])
    return out


@dataclass(frozen=True)
class TcpSocket:
    local_port: int
    remote_port: int
    state: str
    inode: int


def tcp_sockets() -> list[TcpSocket]:
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            f = line.split()
            out.append(TcpSocket(int(f[1].rsplit(":", 1)[1], 16), int(f[2].rsplit(":", 1)[1], 16),
                                 f[3], int(f[9])))
    return out


def listening_inodes(port: int) -> set[int]:
    """Inodes of sockets in LISTEN state on a local port (IPv4 or IPv6)."""
    return {s.inode for s in tcp_sockets() if s.local_port == port and s.state == LISTEN}


def port_in_use(port: int) -> bool:
    return any(s.local_port == port for s in tcp_sockets())
