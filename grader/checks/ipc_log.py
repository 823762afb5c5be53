"""Lab `ipc`, what its checks share: the logger noted at start (`loggers`, `client_children`),
echo.log read and matched against the lines sent, and the server's message queues found and removed."""
from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from .. import mqueues, probes
from ..clients import Client, close_all, compare, connect_many, echo_many, random_lines
from ..errors import GradingEnvironmentError, ProbeError
from ..harness import BuildResult, Server
from ..isolation.local import message_queues_in
from ..verdict import fail
from . import processes
from .blocked import Watch
from .common import PATIENCE, state, wait_until
from .fd_leak import Held

LOG = "echo.log"


LOGGER_WAIT = 0.5   # after it listens, how long a server may take to make its logger


LOG_PATIENCE = 2.0  # LABS.md: a line is in the log 1 s after its echo; we wait longer (a loaded machine)


END_PATIENCE = 3.0  # LABS.md: every process has ended 2 s after SIGTERM; likewise


# server pid -> the children it had before its first client: its logger (one, if all is well)
LOGGERS: dict[int, frozenset[int]] = {}


def loggers(pid: int) -> frozenset[int]:
    return LOGGERS.get(pid, frozenset())


def client_children(pid: int) -> list[probes.Proc]:
    """The server's live children but its logger: those that serve clients."""
    return [p for p in processes.live_children(pid) if p.pid not in loggers(pid)]


def clients_children_ended(s: Server) -> None:
    """Wait (at most PATIENCE s) until the children of the clients served so far have ended, before more
    clients come: a server that ends with a child (accept's EINTR fatal: `accept-eintr`) has then ended
    every time, not only when the signal happened to find it in accept."""
    wait_until(lambda: not client_children(s.pid), PATIENCE, give_up=lambda: not s.alive())


@contextlib.contextmanager
def logger_stopped(s: Server) -> Iterator[list[int]]:
    """The logger noted at start stopped (SIGSTOP), so nothing empties the channel, and continued
    (SIGCONT) on the way out whatever happens; yields the pids it stopped (none: the channel stays
    as it is, a full one is then only as likely as the server's speed makes it)."""
    stopped: list[int] = []
    try:
        for pid in sorted(loggers(s.pid)):
            with contextlib.suppress(OSError):  # gone, or not ours to signal
                os.kill(pid, signal.SIGSTOP)
                stopped.append(pid)
        yield stopped
    finally:
        for pid in stopped:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGCONT)


def stalled(s: Server, seconds: float) -> Callable[[], bool]:
    """A condition: every process of the server but its logger has slept (state S), its CPU time
    unchanged, for `seconds`: what children blocked on a full channel do, and children still
    reading what their clients sent never do."""
    last: tuple[tuple[int, float], ...] | None = None
    since = 0.0

    def cond() -> bool:
        nonlocal last, since
        procs = [p for p in map(probes.proc, process_tree(s.pid)) if p is not None and p.pid not in loggers(s.pid)]
        now = time.monotonic()
        sig = tuple((p.pid, p.cpu_seconds) for p in procs)
        if not procs or any(p.state != "S" for p in procs) or sig != last:
            last, since = (sig if procs and all(p.state == "S" for p in procs) else None), now
            return False
        return now - since >= seconds

    return cond


def process_tree(pid: int) -> list[int]:
    return [p.pid for p in [probes.proc(pid), *probes.descendants(pid)] if p is not None and not p.zombie]


def queues_of(pids: list[int]) -> set[str]:
    """The message queues the processes hold open (their /proc/PID/fd)."""
    out = set()
    for pid in pids:
        mounts = mqueues.mount_ids(pid)
        with contextlib.suppress(ProbeError):
            for e in probes.fd_entries(pid).values():
                name = mqueues.message_queue(e, mounts)
                if name:
                    out.add(name)
    return out


def log_path(s: Server) -> Path:
    return s.build.directory / LOG


def seed_log(b: BuildResult, content: bytes | None) -> None:
    """Before a server starts in b's directory: no echo.log there, or one holding `content`, owned by
    the uid the server runs as (it must be able to append), made anew (never through a link left there)."""
    path = b.directory / LOG
    try:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        if content is None:
            return
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        try:
            sb = b.sandbox
            if sb is not None and sb.uid is not None:
                os.fchown(fd, sb.uid, sb.gid if sb.gid is not None else sb.uid)
            rest = memoryview(content)
            while rest:
                rest = rest[os.write(fd, rest):]
        finally:
            os.close(fd)
    except OSError as e:
        raise GradingEnvironmentError(f"cannot prepare {path}: {e}") from e


def read_log(s: Server) -> bytes:
    try:
        return log_path(s).read_bytes()
    except FileNotFoundError:
        return b""
    except OSError as e:
        raise GradingEnvironmentError(f"cannot read {log_path(s)}: {e}") from e


def counts(log: bytes, lines: list[bytes]) -> tuple[list[int], list[int]]:
    """For each sent line (with its '\\n'): how many records of the log hold it whole, and the index
    of the first (-1: none). A record is a line of the log; it holds a line when it is that line,
    or ends with it (something may stand before each line: a time, a pid; nothing after)."""
    records = log.split(b"\n")
    exact: dict[bytes, list[int]] = {}
    for i, r in enumerate(records):
        exact.setdefault(r, []).append(i)
    n, first = [], []
    for line in lines:
        key = line[:-1]
        at = exact.get(key, [])
        if len(at) < sum(1 for r in records if r.endswith(key)):  # prefixed records too
            at = [i for i, r in enumerate(records) if r.endswith(key)]
        n.append(len(at))
        first.append(at[0] if at else -1)
    return n, first


def wait_logged(s: Server, lines: list[bytes], timeout: float) -> None:
    """Wait until every line is in the log (at most `timeout` seconds)."""
    wait_until(lambda: min(counts(read_log(s), lines)[0]) > 0, timeout, step=0.05)


def served_lines(s: Server, n: int, *, what: str) -> tuple[list[Client], list[bytes]]:
    """common.served, with the lines it echoed (each is logged: a piece of the log they are not)."""
    clients = connect_many(s.port, n)
    lines = random_lines(n)
    got = echo_many(clients, lines, PATIENCE, judge=Watch(s))
    if got != lines:
        close_all(clients)
        i = next(i for i in range(n) if got[i] != lines[i])
        fail(f"connected {n} clients at once ({what}); each sent one line, and the grader waited up to "
             f"{PATIENCE:.0f} s for the {n} echoes at once",
             f"{sum(g != x for g, x in zip(got, lines, strict=True))} of {n} got no correct echo; client {i + 1}: "
             f"{compare(lines[i], got[i])}{'; ' + clients[i].error if clients[i].error else ''}; {state(s)}",
             rule="every client is served while the others stay connected",
             hint="this check needs a server that serves; make `echo` and `concurrency` pass first"
             if s.alive() else "the server died before this check could do its work: its exit status and last "
             "output are above; run it by hand and repeat what the grader did")
    return clients, lines


FD_RULE = ("the logger lives as long as the server, appending every line it is sent; the server runs with at most "
           "1024 open descriptors")


def logger_fds(s: Server) -> list[Held]:
    """`fd-leak`'s `also`: the logger noted at start, counted once a line sent last is in the log (before
    the waves: it then holds what it keeps open, echo.log included, which it may open at its first line;
    after them: it has read every line of the waves, at least once). A leak per read leaves one or more."""
    made = sorted(loggers(s.pid))

    def settle() -> None:
        clients, lines = served_lines(s, 1, what="its line must be in echo.log before the logger's descriptors "
                                      "are counted")
        close_all(clients)
        wait_logged(s, lines, LOG_PATIENCE)

    hint = ("open echo.log once, before the logger's loop (or close it after each write): a descriptor opened per "
            "read and never closed runs out after about 1000 reads, and then nothing more is logged; see them "
            "with `ls -l /proc/LOGGER_PID/fd`")
    return [Held(pid, "the logger", FD_RULE, hint, settle if k == 0 else None) for k, pid in enumerate(made)]


def no_log(s: Server, did: str, rule: str) -> None:
    """Fails the check when the server's working directory has no echo.log."""
    if log_path(s).exists():
        return
    d = s.build.directory
    if not os.access(d, os.W_OK) and os.geteuid() != 0:
        raise GradingEnvironmentError(f"the server's working directory {d} is not writable")
    fail(did, f"no file {LOG} appeared in the server's working directory ({d}); {state(s)}; its output:\n"
         f"{s.output.text(600).strip() or '(nothing)'}", rule=rule,
         hint="the logger opens echo.log (open with O_WRONLY | O_CREAT | O_APPEND) in the directory the server "
         "was started in, before its first line; print the reason when open fails (perror)")


def pieces(log: bytes, sent: list[bytes]) -> list[bytes]:
    """The records of the log that are no sent line (whole, or with a prefix): torn pieces. The last
    record, when the log does not end with '\\n', is left out: a write still under way (a stdio buffer
    flushed in the middle of a line) is a line not yet logged, not a torn one."""
    keys = {line[:-1] for line in sent}
    return [r for r in log.split(b"\n")[:-1] if r and not any(r.endswith(k) for k in keys)]


def show_records(odd: list[bytes], limit: int = 3) -> str:
    """A few torn pieces, shown short."""
    if not odd:
        return ""
    shown = "; ".join(f"{len(r)} bytes {r[:24]!r}...{r[-12:]!r}" for r in odd[:limit])
    return f"; {len(odd)} records of the log are no line any client sent, such as: {shown}"


def ipc_namespace(s: Server) -> int | None:
    """As root with IPC namespaces: an open /proc/PID/ns/ipc of the server, which keeps the namespace
    (and any queue it made) alive after the server ended, to be listed; None otherwise."""
    if not s.sandbox.private_ipc:
        return None
    try:
        return mqueues.open_namespace(s.pid, "ipc")
    except OSError as e:
        raise GradingEnvironmentError(f"cannot open the server's IPC namespace: {e}") from e


def queues_left(ns: int | None, seen: set[str], before: set[str] | None) -> set[str]:
    """The server's queues that still exist: all in its namespace of its own (root); otherwise those
    it held open, and any new in /dev/mqueue when that is mounted."""
    try:
        if ns is not None:
            return set(message_queues_in(ns))
        left = {q for q in seen if mqueues.message_queue_exists(q)}
        now = mqueues.listed_message_queues()
        if now is not None and before is not None:
            left |= now - before
        return left
    except (OSError, ProbeError) as e:
        if not seen and ns is None:
            return set()  # no queue to look for
        raise GradingEnvironmentError(f"cannot look for the server's message queues: {e}") from e
