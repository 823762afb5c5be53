"""Proof, during a wait, that a server will not answer: a check then stops waiting for it.

The checks wait PATIENCE (3 s) for an answer, more than the contract's 2 s, because on a loaded
machine a correct server can wait that long for the CPU. A server that is not waiting for the CPU
needs no such patience. `Watch` proves a server asleep for good: every process and thread of the
submission's uid sleeps in a system call without a time limit (a read, a write to a socket, accept,
select/poll/epoll, a lock, waitpid... with no timeout), none is runnable, none uses CPU time, and a
client that is owed an answer (its echo, or the close after its end of input) has nothing in flight
towards it, and nothing the server printed waits in its terminal, all unchanged for BLOCKED_FOR
seconds in samples never far apart. Such a task wakes only on an event (a byte or a connection
from a client, a child that ends, a signal); the kernel would already have woken one for the bytes
or the end of input of that client if any waited on them, the clients are the grader's and send
nothing while it waits, and the server's own processes all sleep. (A timer the server set, with
alarm or a timerfd, could still wake it: no server of these labs needs one to answer a client.)
Load cannot explain it: a task that waits for the CPU is runnable, not asleep.

Which call a task sleeps in is read from /proc/PID/task/TID/syscall, which needs CAP_SYS_PTRACE or
the task's own uid: without the capability (a container, the docker isolation, Gradescope), root
reads it from a helper that takes the submission's uid. Without a uid of the submission's own (a
grading not run as root), or where even that helper may not read it (a Yama ptrace scope that
forbids it), nothing is ever proved and waits run to their time limit, as before.
"""
from __future__ import annotations

import fcntl
import os
import platform
import struct
import termios
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from .. import probes
from ..errors import ProbeError
from ..harness import Server

BLOCKED_FOR = 0.5   # seconds the proof must hold
MAX_GAP = 0.25      # samples further apart prove nothing: the grader itself was starved of the CPU
MIN_SAMPLES = 4
INTERVAL = 0.08     # between samples

ESTABLISHED, CLOSE_WAIT = "01", "08"

# Calls a task sleeps in until an event, by number: (name, index of the timeout argument or None,
# "ptr" when a NULL pointer there means no timeout, "ms" when a negative int means none).
_COMMON = {"readv": (None, ""), "writev": (None, ""), "pselect6": (4, "ptr"), "ppoll": (2, "ptr"),
           "accept": (None, ""), "accept4": (None, ""), "sendto": (None, ""), "recvfrom": (None, ""),
           "sendmsg": (None, ""), "recvmsg": (None, ""), "recvmmsg": (4, "ptr"), "sendmmsg": (None, ""),
           "wait4": (None, ""), "waitid": (None, ""), "semop": (None, ""), "semtimedop": (3, "ptr"),
           "msgsnd": (None, ""), "msgrcv": (None, ""), "futex": (3, "ptr"), "futex_waitv": (3, "ptr"),
           "epoll_pwait": (3, "ms"), "epoll_pwait2": (3, "ptr"), "mq_timedsend": (4, "ptr"),
           "mq_timedreceive": (4, "ptr"), "flock": (None, ""), "read": (None, ""), "write": (None, ""),
           "pause": (None, ""), "rt_sigsuspend": (None, "")}
_NUMBERS = {
    "x86_64": {"read": 0, "write": 1, "poll": 7, "readv": 19, "writev": 20, "select": 23, "pselect6": 270,
               "ppoll": 271, "accept": 43, "accept4": 288, "sendto": 44, "recvfrom": 45, "sendmsg": 46,
               "recvmsg": 47, "recvmmsg": 299, "sendmmsg": 307, "wait4": 61, "waitid": 247, "semop": 65,
               "semtimedop": 220, "msgsnd": 69, "msgrcv": 70, "futex": 202, "futex_waitv": 449,
               "epoll_wait": 232, "epoll_pwait": 281, "epoll_pwait2": 441, "mq_timedsend": 242,
               "mq_timedreceive": 243, "flock": 73, "pause": 34, "rt_sigsuspend": 130},
    "aarch64": {"read": 63, "write": 64, "readv": 65, "writev": 66, "pselect6": 72, "ppoll": 73, "accept": 202,
                "accept4": 242, "sendto": 206, "recvfrom": 207, "sendmsg": 211, "recvmsg": 212, "recvmmsg": 243,
                "sendmmsg": 269, "wait4": 260, "waitid": 95, "semop": 193, "semtimedop": 192, "msgsnd": 189,
                "msgrcv": 188, "futex": 98, "futex_waitv": 449, "epoll_pwait": 22, "epoll_pwait2": 441,
                "mq_timedsend": 182, "mq_timedreceive": 183, "flock": 32, "rt_sigsuspend": 133},
}
_TIMEOUTS = {**_COMMON, "poll": (2, "ms"), "select": (4, "ptr"), "epoll_wait": (3, "ms")}
UNTIMED = {nr: (name, *_TIMEOUTS[name]) for name, nr in _NUMBERS.get(platform.machine(), {}).items()}
WRITES = {"write", "writev", "sendto", "sendmsg", "sendmmsg"}
DESCRIPTOR_FIRST = {"read", "write", "readv", "writev", "accept", "accept4", "sendto", "recvfrom", "sendmsg",
                    "recvmsg", "recvmmsg", "sendmmsg"}
LOCK = {"futex": "a lock (futex)", "futex_waitv": "a lock (futex)", "semop": "a semaphore",
        "flock": "a file lock", "wait4": "waitpid", "waitid": "waitid"}


def untimed_sleep(syscall_line: str) -> str | None:
    """What a task sleeps in, described ("read on fd 4"), when `syscall_line` (the text of
    /proc/PID/task/TID/syscall) is a call that only an event ends; else None (running, a
    timed wait such as sleep or select with a timeout, or a write to the terminal: the grader's)."""
    f = syscall_line.split()
    if not f or not f[0].isdigit() or int(f[0]) not in UNTIMED or len(f) < 7:
        return None
    name, arg, kind = UNTIMED[int(f[0])]
    args = [int(a, 16) for a in f[1:7]]
    if arg is not None:
        v = args[arg]
        if (kind == "ptr" and v != 0) or (kind == "ms" and not v & 0x80000000):
            return None
    if name in WRITES and args[0] <= 2:
        return None  # the terminal: the grader drains it
    if name in LOCK:
        return LOCK[name]
    return f"{name} on fd {args[0]}" if name in DESCRIPTOR_FIRST else name


@dataclass(frozen=True)
class Conn:
    state: str
    tx: int     # bytes sent and not yet acknowledged
    rx: int     # bytes received and not yet read
    inode: int  # 0 while the connection waits in the listening socket's queue (not accepted)


def connections(port: int) -> tuple[dict[int, Conn], dict[int, Conn]]:
    """The TCP connections of a server port, by client port: (server sides, client sides)."""
    server: dict[int, Conn] = {}
    client: dict[int, Conn] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            f = line.split()
            local, remote = int(f[1].rsplit(":", 1)[1], 16), int(f[2].rsplit(":", 1)[1], 16)
            tx, rx = (int(x, 16) for x in f[4].split(":"))
            side, key = (server, remote) if local == port else (client, local) if remote == port else (None, 0)
            if side is not None and (key not in side or f[3] in (ESTABLISHED, CLOSE_WAIT)):
                side[key] = Conn(f[3], tx, rx, int(f[9]))  # a live connection over an old one in TIME_WAIT
    return server, client


@dataclass(frozen=True)
class Sample:
    at: float
    tasks: dict[tuple[int, int], str]  # (pid, tid) -> the untimed call it sleeps in
    cpu: float
    asleep: bool  # every task sleeps in an untimed call (and there is at least one)


class Watch:
    """Samples a server during one wait; `owed` says which clients it will provably never answer."""

    def __init__(self, s: Server) -> None:
        self.s = s
        uid = s.sandbox.uid
        # the proof needs the submission's own uid (all its processes, escaped ones included) and
        # the right to read which call each sleeps in
        self.usable = bool(UNTIMED) and uid is not None and uid not in (0, os.getuid())
        self.uid = uid
        self.as_owner = False  # the tasks' syscall files are read from a helper of the submission's uid
        self.samples: list[Sample] = []
        self.since: dict[int, tuple[float, tuple[object, ...]]] = {}  # client port -> (start, its state)
        self.last = time.monotonic()  # the first sample comes INTERVAL into the wait: most waits are over by then

    def _terminal_drained(self) -> bool:
        """Nothing the server printed waits in its terminal: no task of it can be blocked printing
        (waiting for the grader, which drains the terminal, and not for a client)."""
        if self.s.child is None:
            return True
        try:
            pending = fcntl.ioctl(self.s.child.child_fd, termios.FIONREAD, b"\0\0\0\0")
        except (OSError, ValueError, TypeError):
            return True  # closed: the server has been stopped
        return int(struct.unpack("i", pending)[0]) == 0

    def _sample(self) -> Sample:
        tasks: dict[tuple[int, int], str] = {}
        cpu, asleep = 0.0, self._terminal_drained()
        found: list[tuple[int, str]] = []  # (pid, tid) of every task of the submission
        for p in probes.all_procs():
            if p.uid != self.uid or p.zombie:
                continue
            cpu += p.cpu_seconds
            try:
                found += [(p.pid, tid) for tid in os.listdir(f"/proc/{p.pid}/task")]
            except OSError:
                continue
        calls = self._syscalls([f"/proc/{pid}/task/{tid}/syscall" for pid, tid in found])
        if calls is None:
            return Sample(time.monotonic(), {}, cpu, False)
        for pid, tid in found:
            try:
                st = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
            except OSError:
                continue  # gone meanwhile
            call = calls.get(f"/proc/{pid}/task/{tid}/syscall")
            if call is None:
                continue  # gone meanwhile
            what = untimed_sleep(call) if st[st.rindex(")") + 2:].startswith("S") else None
            if what is None:
                asleep = False
            else:
                tasks[(pid, int(tid))] = what
        return Sample(time.monotonic(), tasks, cpu, asleep and bool(tasks))

    def owes(self, client_port: int) -> bool | None:
        """Whether the server sleeps (every task in an untimed call) while this client's input waits
        unread on the server's side: it no longer reads that client, so its next call on that
        connection is a write (blocked already, or waiting for room). None when the grader cannot
        tell (not root, or the tasks' calls unreadable)."""
        sample = self._sample() if self.usable else None
        if sample is None or not self.usable:
            return None
        conn = connections(self.s.port)[0].get(client_port)
        return sample.asleep and conn is not None and conn.rx > 0

    def _syscalls(self, paths: list[str]) -> dict[str, str] | None:
        """The text of each task's `syscall` file (those gone are left out). They need CAP_SYS_PTRACE
        or the task's own uid: without the capability (a container, the docker isolation), root reads
        them from a helper that takes the submission's uid (probes.read_files_as). None, and the proof
        given up for this wait, when neither works."""
        if not self.as_owner:
            out = {}
            for path in paths:
                try:
                    out[path] = Path(path).read_text()
                except PermissionError:
                    if os.geteuid() != 0 or self.uid is None:
                        self.usable = False
                        return None
                    self.as_owner = True  # and read them all as the submission's uid, below
                    break
                except OSError:
                    continue  # gone meanwhile
            else:
                return out
        assert self.uid is not None
        try:
            return probes.read_files_as(self.uid, self.uid, paths)
        except ProbeError:  # the helper failed, or the submission kills it: no proof, the wait runs out
            self.usable = False
            return None

    def asleep_for(self) -> float:
        """Seconds the server has been asleep for good so far (in the current run of samples)."""
        if not self.samples or not self.samples[-1].asleep:
            return 0.0
        run = [self.samples[-1]]
        for prev in reversed(self.samples[:-1]):
            if (not prev.asleep or run[-1].at - prev.at > MAX_GAP or prev.tasks != run[-1].tasks
                    or run[-1].cpu - prev.cpu > 0.015):
                break
            run.append(prev)
        return run[0].at - run[-1].at if len(run) >= MIN_SAMPLES else 0.0

    def poll(self) -> bool:
        """Take a sample if one is due; whether one was taken."""
        now = time.monotonic()
        if not self.usable or now - self.last < INTERVAL:
            return False
        self.last = now
        self.samples.append(self._sample())
        del self.samples[:-64]
        return True

    def quiet(self) -> bool:
        """The server has slept for good for BLOCKED_FOR: nothing it does will change until a
        client acts (used to stop waiting for a change, such as descriptors being released)."""
        self.poll()
        return self.asleep_for() >= BLOCKED_FOR

    def never_accepting(self) -> str | None:
        """Why the server will accept no connection until a client acts: connections wait in its
        listen queue (done by the kernel, never accepted) while every task of it has slept for good
        for BLOCKED_FOR (a task in accept, or in a select or poll watching the listening socket,
        would have been woken by the first of them). None: no proof (yet)."""
        self.poll()
        asleep = self.asleep_for()
        if asleep < BLOCKED_FOR:
            return None
        queued = [c for c in connections(self.s.port)[0].values() if c.inode == 0 and c.state == ESTABLISHED]
        if not queued:
            return None
        return (f"{len(queued)} connections waited in the listen queue, never accepted, while the server slept "
                f"for {asleep:.1f} s ({self.sleeping()})")

    def owed(self, pending: dict[int, tuple[int, int]]) -> dict[int, str]:
        """Of the clients waited for (index -> (local port, bytes received so far)), those the
        server will never answer, each with why. Call it often, and only once every byte the
        clients send has been sent: a server may be waiting for those."""
        if not self.poll():
            return {}
        server, client = connections(self.s.port)
        out = {}
        asleep = self.asleep_for()
        for i, (port, received) in pending.items():
            sv, cl = server.get(port), client.get(port)
            ok = (sv is not None and cl is not None and sv.state in (ESTABLISHED, CLOSE_WAIT)
                  and sv.tx == 0 and cl.rx == 0)
            key = (sv, received)
            start, before = self.since.get(port, (0.0, None))
            if not ok or not self.samples[-1].asleep:
                self.since.pop(port, None)
                continue
            if before != key:
                self.since[port] = (self.samples[-1].at, key)
                continue
            held = min(self.samples[-1].at - start, asleep)
            if held >= BLOCKED_FOR:
                assert sv is not None
                out[i] = self.why(sv, held)
        return out

    def why(self, sv: Conn, held: float) -> str:
        """The proof, in words, for feedback."""
        if sv.rx:
            mine = f"its {sv.rx} bytes lay unread" + (" (its connection not yet accepted)" if not sv.inode else "")
        elif sv.state == CLOSE_WAIT:
            mine = "the server had read all it sent and its end of input, yet kept the connection open"
        else:
            mine = "the server had read all it sent and sent nothing back"
        return (f"the grader stopped waiting after {held:.1f} s: {mine}, while every process and thread of the "
                f"server slept in a call that only a client can end ({self.sleeping()}), none waiting for the CPU: "
                "nothing more could come")

    def sleeping(self) -> str:
        """Where the server's tasks sleep: 'pid 12: read on fd 4' or '33 threads: 32 in a lock, ...'."""
        tasks = self.samples[-1].tasks if self.samples else {}
        if len(tasks) <= 3:
            return "; ".join(f"{'pid' if pid == tid else f'thread {tid} of pid'} {pid} in {what}"
                             for (pid, tid), what in sorted(tasks.items()))
        counts = Counter(what.split(" on fd")[0] for what in tasks.values())
        return f"{len(tasks)} threads: " + ", ".join(f"{n} in {w}" for w, n in counts.most_common())
