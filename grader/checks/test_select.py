"""Lab `select`: an event-based concurrent echo server (I/O multiplexing)."""
from __future__ import annotations

import time

from .. import probes
from ..clients import Client, close_all, connect_many, echo_many, random_line, random_lines, rng
from ..harness import Server
from ..output import MiB
from ..verdict import fail
from . import common, graded
from .blocked import Watch
from .common import PATIENCE, Start, expect_echo, served, state
from .slow_reader import Flood, expect_read_back, keeps_partial_lines, server_rx_queue

LAB = "select"


(test_build, test_echo, test_eof, test_concurrency, test_fd_leak, test_robust_disconnect,
 test_vs_reference, test_memory) = common.shared_checks(LAB, fd_leak_flood=True)


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


def _other_client_served(s: Server, did: str, rule: str, hint: str) -> None:
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
        keeps_partial = keeps_partial_lines(s, flood)
        stream = Flood()
        sent = stream.send(flood.sock, limit=256 * MiB, seconds=3.0, stall=0.5)
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
        if keeps_partial:  # a server that loses bytes even to a client that reads is `echo`'s to judge
            expect_read_back(s, flood, stream)
    finally:
        flood.reset()


@graded(LAB, "stdin")
def test_stdin(server: Start) -> None:
    s = server()
    clients = served(s, 2, what="they stay connected while a line is typed on the server's terminal")
    try:
        token = "typed-" + rng().randbytes(6).hex()
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
    watch = Watch(s)
    clients = connect_many(s.port, n, timeout=15, judge=watch)
    try:
        lines = random_lines(n)
        got = echo_many(clients, lines, 15.0, stall=PATIENCE, judge=watch)
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


# idle-cpu: the server's CPU time is read in each idle state it can reach, one short window per state.
# A sleeping server uses nothing: /proc, which counts in ticks of 10 ms, shows 0. A window that shows a
# tick or more is measured IDLE_EXTEND longer, so that a spinner starved by a loaded machine still
# shows its share, and one stray tick (work that ended just as the window began) is forgiven.
IDLE_WINDOWS = {"none": 0.2, "idle": 0.6, "left": 0.2, "reader-owed": 0.2, "reader-gone": 0.2,
                "stdin-end": 0.2}  # 1.6 s
IDLE_EXTEND = 1.0
IDLE_SHARE = 0.02   # the rule: under 2% of a core
TICK = 1 / probes.CLK_TCK
IDLE_RULE = "while no client sends anything, the server sleeps in the multiplexing call: under 2% of a core"
IDLE_HINTS = {
    "none": "with no client the server still sleeps in select/poll/epoll, on the listening socket and standard "
            "input; do not loop on accept with a non-blocking listening socket, or call select with a zero "
            "timeout",
    "idle": "call select/poll/epoll with no timeout (NULL / -1) instead of polling in a loop; non-blocking "
            "sockets are for reads and writes, not for waiting",
    "left": "when a client leaves, close its descriptor and take it out of the set: a closed descriptor left in "
            "a poll array is reported at once (POLLNVAL), every time; set its entry's fd to -1",
    "reader-owed": "while a client's echo waits for room, wait for it in select (its descriptor in the write set), "
                   "with no timeout: retrying the write with a zero timeout spins until the client reads",
    "reader-gone": "a write that fails with EPIPE or ECONNRESET (not EAGAIN) ends that client: close it and stop "
                   "watching it; a socket in error is always writable, so select returns at once, forever",
    "stdin-end": "when read on standard input returns 0, stop watching STDIN_FILENO: take it out of the set "
                 "(with poll, set its entry's fd to -1: a closed descriptor left in the array is reported at "
                 "once, every time)",
}


@graded(LAB, "idle-cpu")
def test_idle_cpu(server: Start) -> None:
    s = server()
    base_fds = probes.fd_count(s.pid)
    seen: list[tuple[str, str, float, float]] = []  # (state key, what it was, seconds measured, CPU used)

    def cpu_over(seconds: float) -> float | None:
        before = probes.proc(s.pid)
        time.sleep(seconds)
        after = probes.proc(s.pid)
        if before is None or after is None or not s.alive():
            return None
        return after.cpu_seconds - before.cpu_seconds

    def window(key: str, what: str, settle: float, reading: Client | None = None) -> bool:
        """Let the server settle, then read its CPU time in this state; False if it has died. While
        the server still takes input from `reading` it is working, not idle: measured again."""
        time.sleep(settle)
        deadline = time.monotonic() + 3.0
        while True:
            queued = server_rx_queue(s.port, reading) if reading else None
            t, used = IDLE_WINDOWS[key], cpu_over(IDLE_WINDOWS[key])
            if (not used or queued == (server_rx_queue(s.port, reading) if reading else None)
                    or time.monotonic() > deadline):
                break
        if used is not None and used > 0:
            more = cpu_over(IDLE_EXTEND)
            t, used = t + IDLE_EXTEND, None if more is None else used + more
        if used is None:
            return False
        seen.append((key, what, t, used))
        return True

    def over(t: float, used: float) -> bool:
        return used > IDLE_SHARE * t + TICK

    def judge() -> None:
        total = sum(t for _, _, t, _ in seen)
        used = sum(u for _, _, _, u in seen)
        spins = [x for x in seen if over(x[2], x[3])]
        if not spins and not over(total, used):
            return
        each = "; ".join(f"{w}: {u:.2f} s in {t:g} s" for _, w, t, u in seen)
        if spins:
            k, w, t, u = spins[0]
            saw = f"{w}, the server used {u:.2f} s of CPU in {t:g} s ({min(100, u / t * 100):.0f}% of a core)"
            hint = IDLE_HINTS["idle" if len(spins) == len(seen) else k]  # never asleep: the plain hint
            if len(spins) > 1 and 0 < len(seen) - len(spins) == seen.index(spins[0]):  # slept, then never again
                hint += ("; if it never sleeps again once it has started to spin, look also for a select "
                         "timeout set once, before the loop: Linux counts it down to 0")
        else:
            saw = (f"the server used {used:.2f} s of CPU in the {total:g} s measured "
                   f"({used / total * 100:.1f}% of a core)")
            hint = IDLE_HINTS[max(seen, key=lambda x: x[3])[0]]
        fail("read the server's CPU time (/proc/PID/stat) in each state where no client sends anything: "
             + ", ".join(w for _, w, _, _ in seen),
             f"{saw}. In each state: {each}", rule=IDLE_RULE, hint=hint)

    if not window("none", "before any client connected", 0.05):
        fail("started the server and let it wait for clients", state(s), rule=IDLE_RULE)
    clients = served(s, 5, what="then they stay connected and silent while the server's CPU time is read")
    try:
        if not window("idle", "with 5 clients connected and silent", 0.1):
            fail("kept 5 clients connected and silent", state(s), rule=IDLE_RULE)
    finally:
        close_all(clients)
    # From here a server that dies is judged by the check named for what ended it (fd-leak,
    # robust-disconnect, stdin); the states it reached count.
    common.wait_until(lambda: probes.fd_count(s.pid) <= base_fds, 1.0)
    if not window("left", "after all 5 clients had left", 0.05):
        return judge()
    reader = Client(s.port)
    if reader.sock is not None:
        sent = Flood().send(reader.sock, limit=64 * MiB, seconds=2.0, stall=0.2)
        slow = f"a client that sent {sent / MiB:.1f} MiB without reading its echo"
        alive = window("reader-owed", f"while {slow} stayed connected, its echo owed", 0.1, reader)
        reader.reset()
        if not alive or not window("reader-gone", f"after {slow} had reset its connection", 0.1):
            return judge()
    s.type_eof()
    window("stdin-end", "after standard input reached its end (ctrl-D typed on the server's terminal)", 0.1)
    judge()
