"""Lab `select`: an event-based concurrent echo server (I/O multiplexing)."""
from __future__ import annotations

import errno
import os
import socket
import time

from .. import probes
from ..clients import Client, close_all, connect_many, echo_many, random_line, random_lines
from ..verdict import fail
from . import common, graded
from .blocked import Watch
from .common import PATIENCE, Start, expect_echo, served, state

LAB = "select"
MiB = 1 << 20


globals().update(common.shared_checks(LAB))  # build, echo, eof, concurrency, fd-leak, robust-disconnect, vs-reference


@graded(LAB, "single-thread")
def test_single_thread(server: Start) -> None:
    s = server()
    clients = served(s, 10, what="to watch the server's threads and children while it serves them")
    try:
        seen_threads, seen_kids = 1, list[probes.Proc]()
        for _ in range(10):
            echo_many(clients, random_lines(len(clients)), PATIENCE)
            seen_threads = max(seen_threads, probes.thread_count(s.pid))
            seen_kids += [k for k in probes.children(s.pid) if k.pid not in {x.pid for x in seen_kids}]
        if seen_threads > 1 or seen_kids:
            fail("served 10 clients at once for 10 rounds, reading /proc/PID/task and the server's children",
                 f"the server had up to {seen_threads} threads and {len(seen_kids)} child processes"
                 + (": " + ", ".join(k.describe() for k in seen_kids[:5]) if seen_kids else ""),
                 rule="one process, one thread: no fork, no threads, at any time",
                 hint="serve every client from one event loop around select/poll/epoll")
    finally:
        close_all(clients)


def _other_client_served(s: object, did: str, rule: str, hint: str) -> None:
    from ..harness import Server

    assert isinstance(s, Server)
    with Client(s.port) as other:
        expect_echo(s, other, random_line(32), did, rule=rule, hint=hint)


@graded(LAB, "slow-idle")
def test_slow_idle(server: Start) -> None:
    s = server()
    with Client(s.port) as idle:
        time.sleep(0.2)
        _other_client_served(
            s, "connected a client that sends nothing; then a second client connected and sent a line",
            rule="a client that connects and sends nothing delays no one else",
            hint="never call read on a socket that select did not report readable; after accept, go back to "
                 "the event loop")
        idle.close()


@graded(LAB, "slow-partial")
def test_slow_partial(server: Start) -> None:
    s = server()
    with Client(s.port) as partial:
        partial.send(random_line(64)[:30])
        time.sleep(0.2)
        _other_client_served(
            s, "a client sent 30 bytes of a line (no newline) and stalled; then a second client sent a line",
            rule="a client that sent part of a line and stalls delays no one else",
            hint="a read-a-whole-line call (rio_readlineb) blocks until the newline comes: read what is "
                 "available once, keep partial lines in a per-client buffer, and go back to select")


@graded(LAB, "slow-reader")
def test_slow_reader(server: Start) -> None:
    s = server()
    rss0 = probes.kib(s.pid, "VmRSS")
    flood = Client(s.port)
    if not flood.connected or flood.sock is None:
        fail(f"connected to port {s.port}", f"{flood.error}; {state(s)}", rule=common.ECHO_RULE)
    try:
        expect_echo(s, flood, random_line(40), "connected a client and sent a line", rule=common.ECHO_RULE)
        sent = _flood(flood.sock, limit=256 * MiB, seconds=3.0)
        rss1 = probes.kib(s.pid, "VmRSS")
        _other_client_served(
            s, f"a client sent {sent / MiB:.1f} MiB of lines and never read its echo; "
               "then a second client sent a line",
            rule="a client that sends a lot and never reads its echo delays no one else",
            hint="a blocking write to a client that does not read blocks everyone: make sockets non-blocking, "
                 "keep unsent echo in a per-client buffer, and watch that socket for writing")
        grown = max(0, rss1 - rss0) * 1024
        if grown > 48 * MiB:
            fail(f"a client sent {sent / MiB:.1f} MiB of lines and never read its echo",
                 f"the server's memory (VmRSS) grew by {grown / MiB:.0f} MiB, "
                 f"from {rss0 // 1024} to {rss1 // 1024} MiB",
                 rule="the server's memory for a client that never reads stays bounded",
                 hint="stop reading from a client (remove it from the read set) while its unsent echo is "
                      "above a bound such as 64 KiB; resume when it drains")
    finally:
        flood.reset()


def _flood(sock: socket.socket, *, limit: int, seconds: float) -> int:
    """Send as fast as the server takes it, without ever reading; stop when it pushes back for 0.5 s."""
    sock.setblocking(False)
    chunk = b"".join(random_lines(2000, 60, 130))
    sent, last_progress = 0, time.monotonic()
    deadline = last_progress + seconds
    while sent < limit and time.monotonic() < deadline:
        try:
            sent += sock.send(chunk)
            last_progress = time.monotonic()
        except BlockingIOError:
            if time.monotonic() - last_progress > 0.5:
                break
            time.sleep(0.005)
        except OSError as e:
            if e.errno in (errno.EPIPE, errno.ECONNRESET):
                break
            raise
    sock.setblocking(True)
    return sent


@graded(LAB, "stdin")
def test_stdin(server: Start) -> None:
    s = server()
    clients = served(s, 2, what="they stay connected while a line is typed on the server's terminal")
    try:
        token = "typed-" + os.urandom(6).hex()
        s.type_line(token)
        if not common.wait_until(lambda: any(token in line for line in s.output.lines()), 2.0):
            fail(f"with 2 clients connected, typed the line {token!r} on the server's terminal (its stdin)",
                 f"it was not printed back within 2 s; {state(s)}; the server printed:\n"
                 f"{s.output.text(800).strip() or '(nothing)'}",
                 rule="each line typed on the server's standard input is printed back on its standard output",
                 hint="watch STDIN_FILENO in the same select set as the sockets; print the line and fflush")
        s.type_eof()
        time.sleep(0.3)
        for i, c in enumerate(clients):
            expect_echo(s, c, random_line(24), f"typed end of input (ctrl-D) on the server's terminal; then "
                        f"connected client {i + 1} sent a line",
                        rule="at end of input the server stops watching standard input and keeps serving",
                        hint="when read on stdin returns 0, remove STDIN_FILENO from the set; do not exit")
        with Client(s.port) as late:
            expect_echo(s, late, random_line(24), "after end of input on the server's terminal, a new client "
                        "connected and sent a line",
                        rule="at end of input the server stops watching standard input and keeps serving")
    finally:
        close_all(clients)


@graded(LAB, "scale")
def test_scale(server: Start) -> None:
    s = server()
    n = 500
    clients = connect_many(s.port, n, timeout=15)
    try:
        lines = random_lines(n)
        got = echo_many(clients, lines, 15.0, stall=PATIENCE, judge=Watch(s))
        bad = [i for i in range(n) if got[i] != lines[i]]
        if bad:
            why = clients[bad[0]].error or "no echo within 15 s"
            fail(f"connected {n} clients at once, all staying connected, each sending one line; the grader waits up "
                 f"to 15 s for all the echoes, as long as some come back at least every {PATIENCE:.0f} s",
                 f"{len(bad)} of {n} were not served (client {bad[0] + 1}: {why}); "
                 f"the server holds {probes.fd_count(s.pid)} descriptors; {state(s)}",
                 rule="at least 500 clients connected at once are all served",
                 hint="size your client table for FD_SETSIZE (1024) descriptors, use a listen backlog of "
                      "at least 500 (or 1024), and never stop accepting")
    finally:
        close_all(clients)


@graded(LAB, "idle-cpu")
def test_idle_cpu(server: Start) -> None:
    s = server()
    clients = served(s, 5, what="then they stay connected and silent while the server's CPU time is read")
    try:
        time.sleep(0.2)
        before = probes.proc(s.pid)
        time.sleep(2.0)
        after = probes.proc(s.pid)
        if before is None or after is None:
            fail("kept 5 clients connected and idle for 2 s", state(s),
                 rule="while no client sends anything, the server sleeps in the multiplexing call")
        used = after.cpu_seconds - before.cpu_seconds
        if used > 0.04:
            fail("kept 5 clients connected and idle for 2 s, reading the server's CPU time (/proc/PID/stat)",
                 f"the server used {used:.2f} s of CPU in 2 s ({used / 2 * 100:.0f}% of a core)",
                 rule="while no client sends anything, the server sleeps in the multiplexing call: "
                      "under 2% of a core",
                 hint="call select/poll/epoll with no timeout (NULL / -1) instead of polling in a loop; "
                      "non-blocking sockets are for reads and writes, not for waiting")
    finally:
        close_all(clients)
