"""The check catalogue of LABS.md: ids, points and visibility, one place for all.

Ids are an interface (reports, gradebooks, regrades): never rename one.
Weights are ours to choose; each lab sums to 100 (asserted by the tests).
"""
from __future__ import annotations

from dataclasses import dataclass

LABS = ("fork", "select", "thread", "ipc", "pool")


@dataclass(frozen=True)
class Check:
    id: str
    points: int
    visibility: str  # "visible" (self-check) or "hidden" (instructor grading only)
    fails_when: str  # LABS.md's wording, shown in handouts and feedback


def _c(id: str, points: int, fails_when: str, visibility: str = "visible") -> Check:
    return Check(id, points, visibility, fails_when)


_COMMON_HEAD = [
    ("build", "`make` fails or no `server` appears (then every other check scores 0 with one clear message)"),
    ("echo", "a single client's lines do not come back exactly"),
    ("eof", "the last partial line is not echoed at end of input, or the connection is not closed after it"),
    ("concurrency", "clients connected at the same time are not all served while the others stay connected"),
    ("fd-leak", "the server's descriptor count does not return to its baseline after clients leave"),
    ("robust-disconnect", "a client reset or vanishing mid-write stops or kills the server for the others"),
]
# Not in LABS.md's catalogue yet (issue 14 added it; ids are only ever added): every lab's.
_MEMORY = ("memory", "built with -fsanitize=address,undefined and put through the echo workloads, a process of the "
           "server reads or writes memory it does not own, uses freed memory, hits undefined behaviour, or leaks "
           "memory per client")
_VS_REFERENCE = ("vs-reference", "on the same workload, the submission is more than 5 times slower than the "
                 "reference server measured in the same run")

_POINTS = {
    "fork": {"build": 5, "echo": 10, "eof": 5, "concurrency": 10, "fd-leak": 10, "robust-disconnect": 5,
             "vs-reference": 5, "process-per-client": 10, "zombies": 10, "child-exit": 10,
             "listenfd-closed": 10, "accept-eintr": 5, "memory": 5},
    "select": {"build": 5, "echo": 10, "eof": 5, "concurrency": 10, "fd-leak": 5, "robust-disconnect": 5,
               "vs-reference": 5, "single-thread": 5, "slow-idle": 10, "slow-partial": 10,
               "slow-reader": 10, "stdin": 5, "scale": 5, "idle-cpu": 5, "memory": 5},
    "thread": {"build": 5, "echo": 10, "eof": 5, "concurrency": 5, "fd-leak": 5, "robust-disconnect": 5,
               "vs-reference": 5, "thread-per-client": 10, "thread-leak": 10, "connfd-race": 10,
               "counter": 10, "tsan": 10, "unsafe-calls": 5, "memory": 5},
    "ipc": {"build": 5, "echo": 5, "eof": 5, "concurrency": 5, "fd-leak": 5, "robust-disconnect": 5,
            "vs-reference": 5, "process-per-client": 5, "zombies": 5, "child-exit": 5, "listenfd-closed": 5,
            "accept-eintr": 5, "logger": 5, "log-complete": 10, "log-intact": 10, "channel-ends": 5,
            "shutdown": 5, "memory": 5},
    "pool": {"build": 5, "echo": 10, "eof": 5, "concurrency": 5, "fd-leak": 5, "robust-disconnect": 5,
             "vs-reference": 5, "pool-fixed": 10, "bounded": 15, "fifo": 10, "idle-cpu": 10, "tsan": 10, "memory": 5},
}

_SPECIFIC = {
    "fork": [
        ("process-per-client", "clients connected at once are not each served by their own child process"),
        ("zombies", "a zombie child is still there 1 s after its client left, after a burst of clients leaving "
                    "at once, or while other children still run"),
        ("child-exit", "a child is still alive after its client left"),
        ("listenfd-closed", "a child holds the listening socket"),
        ("accept-eintr", "the server stops accepting after children have ended"),
    ],
    "select": [
        ("single-thread", "the server ever has more than one thread or any child process"),
        ("slow-idle", "a client that sends nothing delays another client's echo"),
        ("slow-partial", "a client that sent part of a line and stalls delays another client's echo"),
        ("slow-reader", "a client that never reads delays another client, or grows the server's memory without bound"),
        ("stdin", "a line typed on standard input is not printed back, or standard input's end stops the server"),
        ("scale", "500 clients connected at once are not all served"),
        ("idle-cpu", "the server uses more than 2% of a core while its clients are idle"),
    ],
    "thread": [
        ("thread-per-client", "clients connected at once are not each served by their own thread"),
        ("thread-leak", "threads or their stacks remain after their clients left"),
        ("connfd-race", "under a burst of simultaneous connections a client gets another's data or no answer"),
        ("counter", "the printed totals are not exactly the running sum of every byte received"),
        ("tsan", "ThreadSanitizer reports a data race under load"),
        ("unsafe-calls", "the program calls a thread-unsafe library function"),
    ],
    "pool": [
        ("pool-fixed", "the thread count is ever other than WORKERS + 1, or the server makes a child"),
        ("bounded", "with every worker busy the server holds more than WORKERS + 17 connections (those being "
                    "served, 16 in the buffer, and the one the main thread accepted and waits to insert), or its "
                    "memory grows with the number of waiting clients"),
        ("fifo", "waiting connections are not served in the order they were accepted"),
        ("idle-cpu", "the server uses more than 2% of a core with no client, or with every worker busy and the "
                     "buffer full"),
        ("tsan", "ThreadSanitizer reports a data race under load"),
    ],
}
# lab ipc is lab fork plus a logger: the fork lab's rows, then its own
_SPECIFIC["ipc"] = _SPECIFIC["fork"] + [
    ("logger", "there is not exactly one logger process, made before the first client and alive as long as "
               "the server, or a process other than the logger opens `echo.log`"),
    ("log-complete", "a line echoed to a client is missing from `echo.log` 1 s after its echo, or appears more "
                     "than once, or one client's lines are out of order, or what `echo.log` held before the server "
                     "started is gone"),
    ("log-intact", "lines from clients sending at the same time (byte by byte, and in bursts of lines up to 4096 "
                   "bytes) are torn or interleaved in `echo.log`"),
    ("channel-ends", "a process holds a channel end it does not use (the logger a write end, the parent or a "
                     "child a read end)"),
    ("shutdown", "after SIGTERM a line already echoed is missing from `echo.log`, a process of the server is "
                 "still alive 2 s later, or its message queue is still in `/dev/mqueue`"),
]

# vs-reference needs the reference server, which never ships to students: instructor-only.
HIDDEN = {"vs-reference"}


def checks(lab: str) -> list[Check]:
    """The catalogue of one lab, in report order."""
    if lab not in LABS:
        raise KeyError(f"unknown lab {lab!r}; labs are {', '.join(LABS)}")
    rows = _COMMON_HEAD + [_VS_REFERENCE] + _SPECIFIC[lab] + [_MEMORY]
    return [
        _c(cid, _POINTS[lab][cid], text, "hidden" if cid in HIDDEN else "visible")
        for cid, text in rows
    ]


def check(lab: str, check_id: str) -> Check:
    for c in checks(lab):
        if c.id == check_id:
            return c
    raise KeyError(f"lab {lab} has no check {check_id!r}")
