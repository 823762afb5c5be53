"""Namespaces as root: a private view of the file system and IPC objects of its own for student
code, a network of its own for a grading; each probed once, in a forked child, so this process
keeps its own."""
from __future__ import annotations

import ctypes
import fcntl
import functools
import os
import socket
import struct
from collections.abc import Callable, Iterable

from ...errors import GradingEnvironmentError

# Places every user may write: what a uid leaves there is removed with it.
SCRATCH_DIRS = ("/tmp", "/var/tmp", "/dev/shm")
# Top-level directories student code keeps seeing in its private view (the system it
# compiles and runs with); every other top-level directory (home, root, opt, srv, mnt,
# project trees) is covered by an empty directory.
SYSTEM_DIRS = {"bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr", "etc", "dev", "proc", "sys", "tmp"}

libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
CLONE_NEWIPC = 0x08000000
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
MS_NOSUID, MS_NODEV, MS_REC, MS_PRIVATE = 0x2, 0x4, 0x4000, 0x40000
# open_tree(2) and move_mount(2) (Linux 5.2; the same numbers on every architecture)
SYS_OPEN_TREE, SYS_MOVE_MOUNT = 428, 429
AT_FDCWD, AT_RECURSIVE, OPEN_TREE_CLONE, MOVE_MOUNT_F_EMPTY_PATH = -100, 0x8000, 1, 0x4


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
    return bool(libc.unshare(CLONE_NEWNS) == 0
                and libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) == 0
                and libc.syscall(SYS_OPEN_TREE, AT_FDCWD, b"/tmp", OPEN_TREE_CLONE | AT_RECURSIVE) >= 0)


@functools.cache
def private_fs_supported() -> bool:
    """True when we may give student code a mount namespace of its own (root with
    CAP_SYS_ADMIN, i.e. not inside an ordinary container). Probed once, in a child."""
    return (os.geteuid() == 0 and os.environ.get("LABGRADE_PRIVATE_FS", "1") != "0"
            and _succeeds_in_child(_private_fs_works))


@functools.cache
def private_ipc_supported() -> bool:
    """True when student code may get an IPC namespace of its own (root with CAP_SYS_ADMIN).
    Probed once, in a child (LABGRADE_PRIVATE_IPC=0 turns it off)."""
    return (os.geteuid() == 0 and os.environ.get("LABGRADE_PRIVATE_IPC", "1") != "0"
            and _succeeds_in_child(lambda: libc.unshare(CLONE_NEWIPC) == 0))


def private_ipc() -> None:
    """In a child, as root, before it drops to the student uid: an IPC namespace of its own, as
    every Docker container has. Its POSIX message queues (and System V objects) are seen by no
    other grading, whatever their names, and are destroyed with the namespace, when the last
    process in it (or the last descriptor of /proc/PID/ns/ipc) is gone: nothing is left behind."""
    if libc.unshare(CLONE_NEWIPC) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWIPC)")


def message_queues_in(ns_fd: int) -> list[str]:
    """As root: the names (`/NAME`) of the POSIX message queues of an IPC namespace (ns_fd: an open
    /proc/PID/ns/ipc, which keeps it alive after its processes ended). A forked helper joins it
    and mounts an mqueue file system, which shows the queues of its mounter's namespace, over /tmp
    in a mount namespace of its own: nothing changes outside the helper. OSError when it cannot."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child; only system calls: the grader has threads
        code = 1
        try:
            os.close(r)
            if libc.setns(ns_fd, CLONE_NEWIPC) == 0 and libc.unshare(CLONE_NEWNS) == 0:
                _mount("none", "/", None, MS_REC | MS_PRIVATE, None)
                _mount("none", "/tmp", "mqueue", MS_NOSUID | MS_NODEV, None)
                data = "\0".join(os.listdir("/tmp")).encode()
                while data:
                    data = data[os.write(w, data):]
                code = 0
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    if not (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0):
        raise OSError(f"could not list the message queues of an IPC namespace (helper status {status})")
    return sorted("/" + n for n in data.decode(errors="replace").split("\0") if n)


def local_protection() -> str:
    """What the local isolation holds on this machine, in a few words (README: the table)."""
    if os.geteuid() != 0:
        return ("not root: student code runs as you, unconfined (kill(-1), your files, the network); "
                "grade untrusted code with --isolation docker")
    held = ["a uid of its own per grading"]
    held.append("a private view of the file system" if private_fs_supported() else
                "NO private view of the file system (it needs CAP_SYS_ADMIN)")
    held.append("IPC objects of its own (message queues)" if private_ipc_supported() else
                "the machine's IPC namespace (message queues: one of its own needs CAP_SYS_ADMIN)")
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
        if libc.unshare(CLONE_NEWNET) != 0:
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
            if libc.setns(machine, CLONE_NEWNET) != 0:
                raise GradingEnvironmentError("a network namespace without loopback, and no way back to the "
                                              "machine's: " + os.strerror(ctypes.get_errno())) from None
            return False
    finally:
        os.close(machine)


def _mount(source: str, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    if libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None, flags,
                  data.encode() if data else None) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"mount {target}: {os.strerror(e)}")


def private_view(keep: str, hide: Iterable[str], scratch: int) -> None:
    """In a child, as root, before it drops to the student uid: a mount namespace of its own
    where non-system trees and `hide` are covered, the scratch directories are private tmpfs,
    and `keep` (the sandbox's root) is mounted back where it was."""
    keep_ino = os.stat(keep).st_ino
    if libc.unshare(CLONE_NEWNS) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS)")
    # nothing we mount may propagate back to the machine: fail rather than go on
    _mount("none", "/", None, MS_REC | MS_PRIVATE, None)
    # a detached copy of the sandbox's tree, to be put back after /tmp (or its parent) is covered
    keep_fd = libc.syscall(SYS_OPEN_TREE, AT_FDCWD, keep.encode(), OPEN_TREE_CLONE | AT_RECURSIVE)
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
        if libc.syscall(SYS_MOVE_MOUNT, keep_fd, b"", AT_FDCWD, keep.encode(), MOVE_MOUNT_F_EMPTY_PATH) != 0:
            raise OSError(ctypes.get_errno(), f"move_mount {keep}")
    os.close(keep_fd)
