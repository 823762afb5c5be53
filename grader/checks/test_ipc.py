"""Lab `ipc`: a process-based echo server that logs every line through one logger process.

The fork lab's checks (the logger is not a client's child: `client_children`; `fd-leak` counts the
logger's descriptors too: `logger_fds`), and the log's:
`logger`, `log-complete`, `log-intact`, `channel-ends`, `shutdown`. The server runs in its build
directory, where it writes `echo.log`; each server of this lab starts without one (the module's
`server` fixture removes it; `log-complete`'s starts with one line in it, which must stay) and with
its logger noted: the children it has before any client.
"""
from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest

from .. import mqueues, probes
from ..clients import close_all, echo_many, random_lines
from ..errors import GradingEnvironmentError
from ..harness import Server
from ..session import GradingSession
from ..verdict import fail
from . import common, graded, processes
from .common import ECHO_RULE, PATIENCE, Start, served, state, wait_until
from .ipc_log import (
    END_PATIENCE,
    LOG,
    LOG_PATIENCE,
    LOGGER_WAIT,
    LOGGERS,
    client_children,
    clients_children_ended,
    counts,
    ipc_namespace,
    log_path,
    logger_fds,
    loggers,
    no_log,
    process_tree,
    queues_left,
    queues_of,
    read_log,
    seed_log,
    served_lines,
    wait_logged,
)
from .ipc_records import check_log_complete, check_log_intact

LAB = "ipc"


(test_build, test_echo, test_eof, test_concurrency, test_fd_leak, test_robust_disconnect,
 test_vs_reference, test_memory) = common.shared_checks(LAB, fd_also=logger_fds, memory_terminate=True)
(test_process_per_client, test_zombies, test_child_exit, test_listenfd_closed,
 test_accept_eintr) = processes.process_checks(LAB, client_children=client_children)


@pytest.fixture
def server(server: Start, grading: GradingSession) -> Iterator[Start]:
    """The plugin's `server`, for this lab: each server starts with no echo.log in its working
    directory (or one holding `log`) and with its logger noted; queues it leaves are removed after
    the check."""
    started: list[Server] = []

    def start(*args: Any, log: bytes | None = None, **kwargs: Any) -> Server:
        b = args[0] if args and args[0] is not None else kwargs.get("b") or grading.built()
        seed_log(b, log)
        s = server(*args, **kwargs)
        started.append(s)
        # LABS.md: the logger is made before anything is accepted; it may come just after listen
        wait_until(lambda: bool(processes.live_children(s.pid)), LOGGER_WAIT)
        time.sleep(0.05)  # a second logger made right after the first is counted too
        LOGGERS[s.pid] = frozenset(p.pid for p in processes.live_children(s.pid))
        return s

    yield start
    queues = {q for s in started if not s.sandbox.private_ipc for q in queues_of(process_tree(s.pid))}
    left = grading.stop_servers()
    for q in queues:  # in a namespace of its own (root), a queue goes with its last process
        mqueues.unlink_queue(q)
    for s in started:
        LOGGERS.pop(s.pid, None)
    if left:
        raise GradingEnvironmentError("processes of the server survived SIGKILL: "
                                      + ", ".join(p.describe() for p in left))


# ----------------------------------------------------------------------------- the log


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
        for pid in process_tree(s.pid):
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
    clients_children_ended(s)  # the logger must outlive them
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
    wait_logged(s, lines, LOG_PATIENCE)
    log = str(log_path(s))

    def log_fds() -> dict[int, probes.FdEntry]:  # as the checks read descriptors (CAP_SYS_PTRACE or a helper)
        return {fd: e for fd, e in common.fd_entries(logger).items() if e.target.removesuffix(" (deleted)") == log}

    def offset() -> int | None:
        pos = max((e.pos for e in log_fds().values()), default=-1)
        return pos if pos >= 0 else None

    def size() -> int:
        try:
            return log_path(s).stat().st_size
        except FileNotFoundError:
            return 0

    fds = sorted(log_fds())
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
        tree = process_tree(s.pid)
        roles = {pid: "the parent" if pid == s.pid else "a client's child" if pid in kids else "the logger"
                 for pid in tree}
        fds = {pid: common.fd_entries(pid) for pid in tree}
        mounts = {pid: mqueues.mount_ids(pid) for pid in tree}
        # the channel: pipes whose read end a logger holds; any message queue
        pipes = {e.pipe_inode for pid in tree if roles[pid] == "the logger" for e in fds[pid].values()
                 if e.pipe_inode and e.reads}
        queues = {q for pid in tree for e in fds[pid].values() if (q := mqueues.message_queue(e, mounts[pid]))}
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
                q = mqueues.message_queue(e, mounts[pid])
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
    ns = ipc_namespace(s)
    try:
        before = mqueues.listed_message_queues() if ns is None else None
        clients = served(s, 4, what="their lines must all be in echo.log after SIGTERM")
        try:
            # 8 lines in all (served's and these): fewer than a message queue holds (10, Linux's default
            # msg_max), so a server that drops lines on a full queue, which `log-complete`'s burst catches
            # every time, never loses one here by chance (16 did, when its logger lagged on a busy machine)
            sent = random_lines(4, 20, 80)
            if echo_many(clients, sent, PATIENCE) != sent:
                fail("connected 4 clients, each sent lines", f"not every line came back; {state(s)}",
                     rule=ECHO_RULE)
            queues = queues_of(process_tree(s.pid))
        finally:
            close_all(clients)
        gone = wait_until(lambda: not client_children(s.pid), PATIENCE)
        tree = process_tree(s.pid)
        s.terminate()
        t0 = time.monotonic()
        did = (f"connected 4 clients, each echoed 2 lines, then all left; "
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
        still = queues_left(ns, queues, before)
        if still:
            for q in still if ns is None else []:
                mqueues.unlink_queue(q)
            fail(did, f"the server's message queue{'s' if len(still) > 1 else ''} {', '.join(sorted(still))} "
                 f"{'are' if len(still) > 1 else 'is'} still there after it ended", rule=SHUTDOWN_RULE,
                 hint="mq_unlink(name) once the logger is done (mq_close alone leaves the queue); see them with "
                 "`ls /dev/mqueue`")
    finally:
        if ns is not None:
            os.close(ns)


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

