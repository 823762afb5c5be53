"""Lab `ipc`: a process-based echo server that logs every line through one logger process.

The fork lab's checks (the logger is not a client's child: `client_children`), and the log's:
`logger`, `log-complete`, `log-intact`, `channel-ends`, `shutdown`. The server runs in its build
directory, where it writes `echo.log`; each server of this lab starts without one (the module's
`server` fixture removes it) and with its logger noted: the children it has before any client.
"""
from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .. import probes
from ..clients import Client, close_all, compare, connect_many, echo_many, random_line, random_lines, show
from ..errors import GradingEnvironmentError, ProbeError
from ..harness import Server
from ..isolation.local import message_queues_in
from ..session import GradingSession
from ..verdict import fail
from . import common, graded, processes
from .blocked import Watch
from .common import ECHO_RULE, PATIENCE, Start, served, state, wait_until

LAB = "ipc"
LOG = "echo.log"
LOGGER_WAIT = 0.5   # after it listens, how long a server may take to make its logger
LOG_PATIENCE = 2.0  # LABS.md: a line is in the log 1 s after its echo; we wait longer (a loaded machine)
END_PATIENCE = 3.0  # LABS.md: every process has ended 2 s after SIGTERM; likewise

# server pid -> the children it had before its first client: its logger (one, if all is well)
_loggers: dict[int, frozenset[int]] = {}


def loggers(pid: int) -> frozenset[int]:
    return _loggers.get(pid, frozenset())


def client_children(pid: int) -> list[probes.Proc]:
    """The server's live children but its logger: those that serve clients."""
    return [p for p in processes.live_children(pid) if p.pid not in loggers(pid)]


(test_build, test_echo, test_eof, test_concurrency, test_fd_leak, test_robust_disconnect,
 test_vs_reference) = common.shared_checks(LAB)
(test_process_per_client, test_zombies, test_child_exit, test_listenfd_closed,
 test_accept_eintr) = processes.process_checks(LAB, client_children=client_children)


@pytest.fixture
def server(server: Start, grading: GradingSession) -> Iterator[Start]:
    """The plugin's `server`, for this lab: each server starts with no echo.log in its working
    directory and with its logger noted; queues it leaves are removed after the check."""
    started: list[Server] = []

    def start(*args: Any, **kwargs: Any) -> Server:
        b = args[0] if args and args[0] is not None else kwargs.get("b") or grading.built()
        with contextlib.suppress(FileNotFoundError):
            (b.directory / LOG).unlink()
        s = server(*args, **kwargs)
        started.append(s)
        # LABS.md: the logger is made before anything is accepted; it may come just after listen
        wait_until(lambda: bool(processes.live_children(s.pid)), LOGGER_WAIT)
        time.sleep(0.05)  # a second logger made right after the first is counted too
        _loggers[s.pid] = frozenset(p.pid for p in processes.live_children(s.pid))
        return s

    yield start
    queues = {q for s in started if not s.sandbox.private_ipc for q in _queues_of(_tree(s.pid))}
    left = grading.stop_servers()
    for q in queues:  # in a namespace of its own (root), a queue goes with its last process
        _unlink_queue(q)
    for s in started:
        _loggers.pop(s.pid, None)
    if left:
        raise GradingEnvironmentError("processes of the server survived SIGKILL: "
                                      + ", ".join(p.describe() for p in left))


def _tree(pid: int) -> list[int]:
    return [p.pid for p in [probes.proc(pid), *probes.descendants(pid)] if p is not None and not p.zombie]


def _queues_of(pids: list[int]) -> set[str]:
    """The message queues the processes hold open (their /proc/PID/fd)."""
    out = set()
    for pid in pids:
        mounts = probes.mount_ids(pid)
        with contextlib.suppress(ProbeError):
            for e in probes.fd_entries(pid).values():
                name = probes.message_queue(e, mounts)
                if name:
                    out.add(name)
    return out


def _unlink_queue(name: str) -> None:
    import ctypes

    ctypes.CDLL(None, use_errno=True).mq_unlink(name.encode())


# ----------------------------------------------------------------------------- the log

def log_path(s: Server) -> Path:
    return s.build.directory / LOG


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


def _wait_logged(s: Server, lines: list[bytes], timeout: float) -> None:
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


COMPLETE_RULE = ("every complete line a client sends is appended by the logger to echo.log, exactly once, within 1 s "
                 "of its echo; one client's lines keep their order")
BINARY = bytes(b for b in range(256) if b != ord("\n")) + b"\n"  # every byte value, as `echo` sends
BURST = 16  # round 5: lines of 2000 to 4096 bytes each of clients 1-3 sends in one burst


def _round(rnd: int) -> list[list[bytes]]:
    """What each of the 4 clients sends in a round, as lines (with their '\\n')."""
    if rnd < 3:  # a line per client at once
        return [[line] for line in random_lines(4, 20, 100)]
    if rnd == 3:  # client 1: 5 lines in one segment
        return [random_lines(5, 20, 60), [], [], []]
    # clients 1-3: bursts that fill a channel (a 64 KiB pipe, a queue of 10 messages); client 4: byte by byte
    return [random_lines(BURST, 2000, 4096) for _ in range(3)] + [random_lines(3, 20, 40)]


def _send_round(clients: list[Client], lines: list[list[bytes]], bytewise: bool) -> list[bytes]:
    """Send each client's lines at once (client 4's byte by byte when `bytewise`); what came back."""
    payloads = [b"".join(ls) for ls in lines]
    slow: list[bytes] = [b""]

    def one_by_one() -> None:
        c = clients[3]
        for line in lines[3]:
            c.send_bytewise(line, gap=0.001)
        slow[0] = c.recv_exactly(len(payloads[3]), PATIENCE)

    if not bytewise:
        return echo_many(clients, payloads, PATIENCE)
    t = threading.Thread(target=one_by_one)  # its own socket: echo_many never touches client 4
    t.start()
    got = echo_many(clients[:3], payloads[:3], PATIENCE * 2)
    t.join()
    return [*got, slow[0]]


def check_log_complete(start: Start) -> None:
    s = start()
    clients, greeted = served_lines(s, 4, what="their lines should reach echo.log")
    sent: list[list[bytes]] = [[] for _ in clients]
    rounds = ("a line each", "a line each", "a line each", "client 1 five lines in one segment",
              f"clients 1-3 {BURST} lines of 2000 to 4096 bytes each in one burst, client 4 three lines byte by byte")
    try:
        for rnd, what in enumerate(rounds):
            lines = _round(rnd)
            if rnd == 0:
                lines[0] = [BINARY]  # a line holding NUL and bytes >= 0x80: no string function may log it
            before = len(read_log(s))
            got = _send_round(clients, lines, bytewise=rnd == 4)
            echoed = time.monotonic()
            bad = [i for i in range(4) if got[i] != b"".join(lines[i])]
            if bad:
                fail(f"connected 4 clients; round {rnd + 1}: {what}",
                     f"client {bad[0] + 1} did not get its echo back; {state(s)}", rule=ECHO_RULE)
            new = [(i, k, line) for i, ls in enumerate(lines) for k, line in enumerate(ls)]
            did = (f"connected 4 clients; in {rnd + 1} rounds ({'; '.join(rounds[:rnd + 1])}) each got its echo; "
                   f"after each round read {LOG} until all its lines were there, for at most {LOG_PATIENCE:.0f} s")
            _wait_logged(s, [line for _, _, line in new], LOG_PATIENCE - (time.monotonic() - echoed))
            waited = time.monotonic() - echoed
            no_log(s, did, COMPLETE_RULE)
            log = read_log(s)
            n, _ = counts(log, [line for _, _, line in new])
            missing = [(i, k, line) for (i, k, line), c in zip(new, n, strict=True) if c == 0]
            if missing and rnd == 4 and pieces(log[before:], greeted + [line for _, _, line in new]):
                continue  # torn lines, not lost ones: `log-intact`'s to judge; these lines leave the order aside
            if missing:
                # the binary line is named only when it alone is missing: a string function stopped at a NUL
                binary = [m[2] for m in missing] == [BINARY]
                i, k, line = missing[0] if binary else next(m for m in missing if m[2] != BINARY)
                seen = f"client {i + 1}'s line of the {len(BINARY) - 1} byte values but '\\n'," if binary else \
                    f"client {i + 1}'s line {k + 1}, {show(line, 40)},"
                fail(did, f"round {rnd + 1}: {seen} is not in {LOG} {waited:.1f} s after its echo"
                     + (f"; {len(missing)} of the {len(new)} lines of this round are missing" if len(missing) > 1
                        else "") + f"; {LOG} holds {len(log)} bytes; {state(s)}",
                     rule=COMPLETE_RULE,
                     hint=("a line is bytes, NUL and bytes >= 0x80 included: send and write it with its length "
                           "(write, fwrite), not with strlen, fputs or %s" if binary else
                           "each child sends every line it echoes to the logger, which writes it at once (or "
                           "flushes within the second): a line waiting in a stdio buffer is not in the file; "
                           "a child that drops a line on a full channel (O_NONBLOCK, EAGAIN) loses it"))
            for i, ls in enumerate(lines):
                sent[i] += ls
    finally:
        close_all(clients)
    time.sleep(0.2)  # a late second copy has landed
    log = read_log(s)
    everything = [line for mine in sent for line in mine]
    n, first = counts(log, everything)
    twice = [(line, k) for line, k in zip(everything, n, strict=True) if k > 1]
    did = "connected 4 clients; in 5 rounds each sent lines and got their echo; then read echo.log"
    if twice:
        fail(did, f"{len(twice)} of the {len(everything)} lines are in {LOG} more than once, such as "
             f"{show(twice[0][0], 40)} ({twice[0][1]} times)", rule=COMPLETE_RULE,
             hint="send each line once and write what the logger read once: a buffer written again without "
             "being emptied (an offset not reset) repeats old lines")
    for i, mine in enumerate(sent):
        at = [first[everything.index(line)] for line in mine]
        if at != sorted(at):
            fail(did, f"client {i + 1}'s lines are not in {LOG} in the order it sent them", rule=COMPLETE_RULE,
                 hint="a child sends its client's lines in the order it reads them, each in one message")


INTACT_RULE = ("every complete line a client sends (at most 4096 bytes with its '\\n') is appended to echo.log as one "
               "unbroken record: a pipe write of at most PIPE_BUF bytes is atomic, a write per read chunk is not")
INTACT_HINT = ("a child must send the logger whole lines, each in one write (pipe, at most PIPE_BUF = 4096 bytes) or "
               "one message (mq_send); what read returns is not a line: keep it until the '\\n' has come")


def check_log_intact(start: Start) -> None:
    s = start()
    # 1. 8 clients at once, each sending 3 lines byte by byte
    clients, greeted = served_lines(s, 8, what="they then send lines byte by byte, all at the same time")
    lines = [random_lines(3, 20, 40) for _ in clients]
    echoed: list[bytes] = [b""] * len(clients)

    def bytewise(i: int) -> None:
        c = clients[i]
        for line in lines[i]:
            c.send_bytewise(line, gap=0.001)
        echoed[i] = c.recv_exactly(sum(map(len, lines[i])), PATIENCE)

    threads = [threading.Thread(target=bytewise, args=(i,)) for i in range(len(clients))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    close_all(clients)
    sent = [line for ls in lines for line in ls]
    for i, ls in enumerate(lines):
        if echoed[i] != b"".join(ls):
            fail("8 clients sent 3 lines each, byte by byte, all at the same time",
                 f"client {i + 1} did not get its lines back; {state(s)}", rule=ECHO_RULE)
    known = greeted + sent
    _intact(s, sent, known, "8 clients sent 3 lines each, byte by byte, all at the same time; then read echo.log")
    # 2. bursts: 16 clients at once, each 4 lines of up to 4096 bytes (one of exactly 4096) in one go
    clients = connect_many(s.port, 16)
    bursts = [[random_line(4096), *random_lines(3, 2000, 4096)] for _ in clients]
    payloads = [b"".join(b) for b in bursts]
    got = echo_many(clients, payloads, PATIENCE * 2)
    close_all(clients)
    bad = [i for i in range(len(clients)) if got[i] != payloads[i]]
    if bad:
        fail("16 clients at once each sent 4 lines of 2000 to 4096 bytes in one burst",
             f"{len(bad)} clients did not get their lines back; {state(s)}", rule=ECHO_RULE)
    sent = [line for b in bursts for line in b]
    _intact(s, sent, known + sent,
            "16 clients at once each sent 4 lines of 2000 to 4096 bytes (one of exactly 4096 with its '\\n') in "
            "one burst; then read echo.log")


def _intact(s: Server, sent: list[bytes], known: list[bytes], did: str) -> None:
    """Fails when lines of `sent` are missing and the log has pieces: records that are no line of `known`
    (every line the check sent, `sent` and those before it)."""
    _wait_logged(s, sent, LOG_PATIENCE)
    no_log(s, did, INTACT_RULE)
    log = read_log(s)
    n, _ = counts(log, sent)
    missing = [line for line, k in zip(sent, n, strict=True) if k == 0]
    odd = pieces(log, known)
    # a line missing with no piece of it in the log was lost or not yet written, not torn: `log-complete`'s
    if missing and odd:
        fail(did, f"{len(missing)} of the {len(sent)} lines are not in {LOG} as one unbroken record "
             f"{LOG_PATIENCE:.0f} s after their echo{show_records(odd)}", rule=INTACT_RULE, hint=INTACT_HINT)


LOGGER_RULE = ("before it accepts anything, the server makes exactly one logger process, which lives as long as the "
               "server; only the logger opens echo.log")


def check_logger(start: Start) -> None:
    s = start()
    made = sorted(loggers(s.pid))
    if len(made) != 1:
        fail(f"started the server and listed its children before any client connected (within "
             f"{LOGGER_WAIT:.1f} s of its listening socket appearing)",
             f"{len(made)} child processes" + (f": pids {', '.join(map(str, made))}" if made else ""),
             rule=LOGGER_RULE, hint="fork the logger once, in main, before the accept loop (not per client)")
    logger = made[0]
    clients, lines = served_lines(s, 3, what="to see which processes open echo.log")
    try:
        opened = []
        for pid in _tree(s.pid):
            if pid == logger:
                continue
            for fd, target in common.fd_targets(pid).items():
                if target.removesuffix(" (deleted)") == str(log_path(s)):
                    p = probes.proc(pid)
                    opened.append(f"{p.describe() if p else f'pid {pid}'} as fd {fd}")
        if opened:
            fail(f"connected 3 clients, each echoed a line; read /proc/PID/fd of every process of the server "
                 f"(the logger is pid {logger})", f"{LOG} is open in other processes: " + "; ".join(opened),
                 rule=LOGGER_RULE,
                 hint="children send their lines to the logger; only the logger opens echo.log (after fork, "
                 "in the logger's branch)")
        _offsets(s, logger, lines)
    finally:
        close_all(clients)
    for _ in range(2):
        served_again = served(s, 2, what="the logger should outlive them")
        close_all(served_again)
    p = probes.proc(logger)
    if p is None or p.zombie:
        fail("served clients, then looked at the logger made before the first client",
             f"the logger (pid {logger}) has ended ({'a zombie' if p else 'gone'}); {state(s)}", rule=LOGGER_RULE,
             hint="the logger loops until end-of-file on its channel (pipe) or a stop message (queue); "
             "it must not end with a client")


def _offsets(s: Server, logger: int, lines: list[bytes]) -> None:
    """Once the lines are in the log: the logger's echo.log descriptor must stand at the file's end. Only
    the logger writes it, so each of its writes leaves the offset at the end (O_APPEND, or a fresh file);
    bytes past it were written by another process, which may have held the file for an instant only. A
    logger that holds no echo.log (it opens it per record) or whose fdinfo cannot be read is not judged."""
    _wait_logged(s, lines, LOG_PATIENCE)
    fds = [fd for fd, target in common.fd_targets(logger).items()
           if target.removesuffix(" (deleted)") == str(log_path(s))]

    def offset() -> int | None:
        pos = None
        for fd in fds:
            with contextlib.suppress(OSError, ValueError):
                for row in Path(f"/proc/{logger}/fdinfo/{fd}").read_text().splitlines():
                    if row.startswith("pos:"):
                        pos = max(pos or 0, int(row[4:]))
        return pos

    def size() -> int:
        try:
            return log_path(s).stat().st_size
        except FileNotFoundError:
            return 0

    if not fds or offset() is None:
        return
    if wait_until(lambda: (offset() or 0) >= size(), LOG_PATIENCE, step=0.05):
        return
    pos, total = offset() or 0, size()
    fail(f"connected 3 clients, each echoed a line; once their lines were in {LOG} (or after {LOG_PATIENCE:.0f} s), "
         f"compared the file's size with the offset of the logger's {LOG} descriptor (/proc/{logger}/fdinfo/"
         f"{fds[0]}, pos) for {LOG_PATIENCE:.0f} s", f"{LOG} holds {total} bytes, but the logger (pid {logger}) "
         f"has written up to offset {pos} only: {total - pos} bytes were appended by another process "
         f"(one that opened {LOG} and closed it again: it held it only while writing)", rule=LOGGER_RULE,
         hint="children send their lines to the logger; only the logger opens echo.log (after fork, in the "
         "logger's branch)")


ENDS_RULE = ("each process holds only the channel ends it uses: the logger no write end of a pipe; the parent and the "
             "children no read end (the logger sees end-of-file only when every write end is closed)")


def check_channel_ends(start: Start) -> None:
    s = start()
    clients = served(s, 3, what="to read the channel ends each process holds")
    try:
        kids = {p.pid for p in client_children(s.pid)}
        tree = _tree(s.pid)
        roles = {pid: "the parent" if pid == s.pid else "a client's child" if pid in kids else "the logger"
                 for pid in tree}
        fds = {pid: common.fd_entries(pid) for pid in tree}
        mounts = {pid: probes.mount_ids(pid) for pid in tree}
        # the channel: pipes whose read end a logger holds; any message queue
        pipes = {e.pipe_inode for pid in tree if roles[pid] == "the logger" for e in fds[pid].values()
                 if e.pipe_inode and e.reads}
        queues = {q for pid in tree for e in fds[pid].values() if (q := probes.message_queue(e, mounts[pid]))}
        did = ("connected 3 clients, each echoed a line; read /proc/PID/fd and /proc/PID/fdinfo/N (flags) of the "
               "parent, the logger and the children")
        if not pipes and not queues:
            fail(did, f"no channel to a logger: no process but the parent and the clients' children holds the read "
                 f"end of a pipe, and none has a message queue open ({len(tree)} processes); {state(s)}",
                 rule="before it accepts anything, the server makes exactly one logger process and one channel to "
                 "it: a pipe, or a POSIX message queue", hint="make `logger` pass first")
        wrong = []
        for pid in tree:
            for fd, e in sorted(fds[pid].items()):
                q = probes.message_queue(e, mounts[pid])
                end = "read" if e.reads else "write"
                what = f"pipe:[{e.pipe_inode}]" if e.pipe_inode in pipes else f"queue {q}" if q else ""
                if not what:
                    continue
                if roles[pid] == "the logger" and e.pipe_inode in pipes and e.writes:
                    wrong.append(f"the logger (pid {pid}) holds the write end of {what} as fd {fd}")
                elif roles[pid] != "the logger" and e.reads:
                    wrong.append(f"{roles[pid]} (pid {pid}) holds the {end} end of {what} as fd {fd}"
                                 + (" (opened O_RDWR)" if e.writes else ""))
        if wrong:
            fail(did, "; ".join(wrong[:6]) + (f"; and {len(wrong) - 6} more" if len(wrong) > 6 else ""),
                 rule=ENDS_RULE,
                 hint="after fork, the logger closes the write end (fd[1]) and the parent the read end (fd[0]), "
                 "before the first client: children inherit what the parent holds; a queue is opened O_WRONLY by "
                 "the senders, O_RDONLY by the logger. See them with `ls -l /proc/PID/fd` and "
                 "`cat /proc/PID/fdinfo/N`")
    finally:
        close_all(clients)


SHUTDOWN_RULE = ("on SIGTERM, sent to the server's first process after its clients have left: it stops accepting; "
                 "every line already echoed is in echo.log; every process of the server has ended within 2 s; a "
                 "message queue it made is unlinked")


def check_shutdown(start: Start) -> None:
    s = start()
    ns = _ipc_namespace(s)
    try:
        before = probes.listed_message_queues() if ns is None else None
        clients = served(s, 4, what="their lines must all be in echo.log after SIGTERM")
        sent: list[bytes] = []
        try:
            for _ in range(3):
                payloads = random_lines(4, 20, 80)
                got = echo_many(clients, payloads, PATIENCE)
                if got != payloads:
                    fail("connected 4 clients, each sent lines", f"not every line came back; {state(s)}",
                         rule=ECHO_RULE)
                sent += payloads
            queues = _queues_of(_tree(s.pid))
        finally:
            close_all(clients)
        gone = wait_until(lambda: not client_children(s.pid), PATIENCE)
        tree = _tree(s.pid)
        s.terminate()
        t0 = time.monotonic()
        did = (f"connected 4 clients, each echoed 3 lines, then all left; "
               f"{'when their children had ended' if gone else f'after {PATIENCE:.0f} s'}, sent SIGTERM to the "
               f"server's first process (pid {s.pid}) and waited up to {END_PATIENCE:.0f} s")

        def alive() -> list[probes.Proc]:
            return [p for p in map(probes.proc, tree) if p is not None and not p.zombie]

        wait_until(lambda: not alive(), END_PATIENCE)
        left = alive()
        if left:
            fail(did, f"{len(left)} processes of the server still run {time.monotonic() - t0:.1f} s after SIGTERM: "
                 + ", ".join(p.describe() for p in left[:6]), rule=SHUTDOWN_RULE,
                 hint="on SIGTERM the parent stops accepting, closes its write end (or sends the logger a stop "
                 "message) and waits for the logger; a logger that holds a write end itself never sees end-of-file")
        me = os.getpid()
        orphans = [p for p in map(probes.proc, tree[1:]) if p is not None and p.ppid == me]
        if orphans:
            fail(did, "the server's first process ended before these processes of the server, which it left "
                 "behind: " + ", ".join(p.describe().replace(f"parent {me}", "reaped by no one of the server")
                                        for p in orphans[:6]),
                 rule=SHUTDOWN_RULE + "; the server has ended when its first process has, so that one waits for "
                 "(reaps) its logger before it exits",
                 hint="after closing the channel, waitpid(logger_pid, ...) before returning from main; a SIGCHLD "
                 "handler must not reap it first (set SIGCHLD back to SIG_DFL), or with SIG_IGN waitpid returns "
                 "when it ends")
        no_log(s, did, SHUTDOWN_RULE)
        log = read_log(s)
        n, _ = counts(log, sent)
        lost = [line for line, k in zip(sent, n, strict=True) if k == 0]
        if lost:
            fail(did, f"{len(lost)} of the {len(sent)} lines echoed before SIGTERM are not in {LOG} after the "
                 f"server ended, such as {lost[-1][:40]!r}", rule=SHUTDOWN_RULE,
                 hint="a line in a stdio buffer is lost when the logger is killed: the logger ends only at end-of-file "
                 "(or its stop message), after writing (fflush) what it has")
        still = _queues_left(ns, queues, before)
        if still:
            for q in still if ns is None else []:
                _unlink_queue(q)
            fail(did, f"the server's message queue{'s' if len(still) > 1 else ''} {', '.join(sorted(still))} "
                 f"{'are' if len(still) > 1 else 'is'} still there after it ended", rule=SHUTDOWN_RULE,
                 hint="mq_unlink(name) once the logger is done (mq_close alone leaves the queue); see them with "
                 "`ls /dev/mqueue`")
    finally:
        if ns is not None:
            os.close(ns)


def _ipc_namespace(s: Server) -> int | None:
    """As root with IPC namespaces: an open /proc/PID/ns/ipc of the server, which keeps the namespace
    (and any queue it made) alive after the server ended, to be listed; None otherwise."""
    if not s.sandbox.private_ipc:
        return None
    try:
        return os.open(f"/proc/{s.pid}/ns/ipc", os.O_RDONLY)
    except OSError as e:
        raise GradingEnvironmentError(f"cannot open the server's IPC namespace: {e}") from e


def _queues_left(ns: int | None, seen: set[str], before: set[str] | None) -> set[str]:
    """The server's queues that still exist: all in its namespace of its own (root); otherwise those
    it held open, and any new in /dev/mqueue when that is mounted."""
    try:
        if ns is not None:
            return set(message_queues_in(ns))
        left = {q for q in seen if probes.message_queue_exists(q)}
        now = probes.listed_message_queues()
        if now is not None and before is not None:
            left |= now - before
        return left
    except (OSError, ProbeError) as e:
        if not seen and ns is None:
            return set()  # no queue to look for
        raise GradingEnvironmentError(f"cannot look for the server's message queues: {e}") from e


@graded(LAB, "logger")
def test_logger(server: Start) -> None:
    check_logger(server)


@graded(LAB, "log-complete")
def test_log_complete(server: Start) -> None:
    check_log_complete(server)


@graded(LAB, "log-intact")
def test_log_intact(server: Start) -> None:
    check_log_intact(server)


@graded(LAB, "channel-ends")
def test_channel_ends(server: Start) -> None:
    check_channel_ends(server)


@graded(LAB, "shutdown")
def test_shutdown(server: Start) -> None:
    check_shutdown(server)

