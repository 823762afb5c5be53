"""Lab `pool`: a prethreaded echo server with a bounded buffer of connections.

Every server here is started with a WORKERS the check chooses (`./server PORT WORKERS`), small
where order and bounds must be observable: 1 worker makes the service order the queue's order,
2 workers with 40 waiting clients make the bound on descriptors visible in /proc/PID/fd.
"""
from __future__ import annotations

import time

from .. import probes
from ..clients import Client, close_all, connect_many, echo_many, random_line, random_lines
from ..harness import Server
from ..output import MiB
from ..session import GradingSession
from ..verdict import CheckFailed, NotGraded, fail
from . import common, graded, spurious, tsan
from .common import PATIENCE, Start, served, state, wait_until
from .pool_clients import accepted, next_echoed, numbers, read_all, reset_while_written, send_and_end, settled, unserved

LAB = "pool"
DEFAULT_WORKERS = 8
SLOTS = 16      # the buffer's size (LABS.md)
SHARED = 16     # WORKERS of the shared checks: vs-reference runs 16 clients at once, concurrency as many
HINT_SERVE = "this check needs a server that serves: make `echo` and `concurrency` pass first"

(test_build, test_echo, test_eof, test_concurrency, test_fd_leak, test_robust_disconnect,
 test_vs_reference, test_memory) = common.shared_checks(LAB, args=(str(SHARED),), concurrent=SHARED)


def start(server: Start, workers: int | None, what: str = "the server") -> Server:
    return server(args=() if workers is None else (str(workers),), what=what)


@graded(LAB, "pool-fixed")
def test_pool_fixed(server: Start) -> None:
    rule = ("`./server PORT [WORKERS]` starts exactly WORKERS worker threads (default 8, at most 64) before it "
            "accepts, and never any other thread or any child: WORKERS + 1 threads for the server's whole life")
    s = start(server, None)
    close_all(served(s, 2, what="a check of absence scores only for a server that serves"))
    threads, kids = settled(lambda: probes.thread_count(s.pid)), probes.children(s.pid)
    if threads != DEFAULT_WORKERS + 1 or kids:
        fail(f"started `./server PORT` (no WORKERS: the default, {DEFAULT_WORKERS}), served 2 clients, then read "
             "/proc/PID/task and the server's children",
             f"the server had {threads} threads (expected {DEFAULT_WORKERS + 1}: {DEFAULT_WORKERS} workers and the "
             f"main thread) and {len(kids)} child processes",
             rule=rule, hint="without WORKERS, make 8 workers; create them all in main, before the accept loop")
    s.stop()

    workers, queued = 3, 5
    fill = SLOTS + 2 - queued  # with the queued: 16 in the buffer, one held by the main thread, one in the listen queue
    s = start(server, workers)
    base = probes.fd_count(s.pid)
    seen: list[tuple[str, int, int]] = []  # (when, threads, children)

    def sample(when: str) -> None:
        seen.append((when, settled(lambda: probes.thread_count(s.pid), 2.0, 0.1), len(probes.children(s.pid))))

    sample("after start")
    busy = served(s, workers, what=f"as many as the {workers} workers")
    sample(f"while {workers} clients were served")
    waiting = [Client(s.port) for _ in range(queued)]
    lines = random_lines(queued)
    for c, ln in zip(waiting, lines, strict=True):
        send_and_end(c, ln)
    sample(f"while {workers} clients were served and {queued} more waited")
    filling = connect_many(s.port, fill)
    # the main thread holds the 17th waiting (or a pool that grows when full has grown): 2 s at most
    wait_until(lambda: probes.fd_count(s.pid) >= base + workers + SLOTS + 1
               or probes.thread_count(s.pid) != workers + 1, 2.0, 0.005)
    sample(f"while {workers} clients were served and {queued + fill} more waited (the buffer full)")
    reset_while_written(s, busy[0])
    busy[1].reset()
    send_and_end(busy[2], b"")
    close_all(filling)
    got, _ = read_all(waiting, lines, 4 * PATIENCE)
    close_all(busy)
    lost = unserved(lines, got)
    sample(f"after the {workers} clients left (one reset while its worker wrote, one reset while it read, one "
           f"closed its sending side) and the {queued} waiting ones were served" if not lost
           else f"after the {workers} clients left")
    again = connect_many(s.port, workers)
    lines2 = random_lines(workers)
    got2 = echo_many(again, lines2, PATIENCE)
    silent = [i for i in range(workers) if got2[i] != lines2[i]]
    sample(f"while {workers} new clients were served")
    close_all(again)
    sample("after every client left")
    did = (f"started `./server PORT {workers}`; served {workers} clients while {queued} more waited (each sent a line "
           f"and closed its sending side), then while {fill} more silent ones waited too (the buffer full: {SLOTS} in "
           f"it, one held by the main thread, one in the listen queue); the {workers} left (one sent lines without "
           "reading until its worker was blocked writing their echo, then reset; one reset while its worker read; "
           f"one closed its sending side), and so did the {fill} silent ones; then {workers} new clients at once, "
           "which closed; read /proc/PID/task and the children at each step")
    counts = "; ".join(f"{when}: {t} threads" + (f", {k} children" if k else "") for when, t, k in seen)
    wrong = [(when, t, k) for when, t, k in seen if t != workers + 1 or k]
    if wrong or lost or silent:
        more = ""
        if lost:
            more += f"; {len(lost)} of the {queued} waiting clients were never served"
        if silent:
            more += f"; {len(silent)} of the {workers} new clients got no echo within {PATIENCE:.0f} s"
        if not s.alive():
            more += f"; {state(s)}"
        fewer = any(t < workers + 1 for _, t, _ in wrong) or lost or silent
        fail(did, f"expected {workers + 1} threads and no child at every step; {counts}{more}", rule=rule,
             hint=("a worker never ends: it loops for ever taking the next descriptor, and a client's reset or "
                   "error, reading or writing, ends that client's echo only, and the worker takes the next (look "
                   "for return or pthread_exit in the worker's loop, and for a write tried again after it failed: "
                   "that worker never comes back)"
                   if fewer else "make the workers once, at start; never pthread_create or fork per client, nor "
                   "when the buffer is full (the main thread then waits for a free slot)"))


@graded(LAB, "bounded")
def test_bounded(grading: GradingSession, server: Start) -> None:
    """Run with pthread_cond_wait waking up spuriously (spurious.py): the one check whose server waits on
    both sides of the buffer, the workers' at start and the main thread's when it is full."""
    try:
        bounded(grading, server)
    except CheckFailed as e:
        if not isinstance(e, NotGraded) and spurious.uses_condvars(grading.built()):
            e.hint = f"{spurious.NOTE}. Otherwise: {e.hint}" if e.hint else spurious.NOTE
        raise


def bounded(grading: GradingSession, server: Start) -> None:
    workers, more = 2, 40
    bound = workers + SLOTS + 1
    rule = ("the main thread only accepts and inserts; the buffer holds at most 16 descriptors; when it is full "
            "the main thread waits, blocked, with the one descriptor it could not insert, and further clients wait "
            "in the kernel's listen queue, not inside the server")
    s = server(args=(str(workers),), env=spurious.env(grading))
    base = len(common.socket_inodes(s.pid))
    busy = served(s, workers, what=f"as many as the {workers} workers, which then stay busy with them")
    try:
        rss0 = settled(lambda: probes.kib(s.pid, "VmRSS"), 1.0)
        waiting = connect_many(s.port, more)
        lines = random_lines(more)
        for c, ln in zip(waiting, lines, strict=True):
            send_and_end(c, ln)
        settled(lambda: probes.fd_count(s.pid), 3.0, 0.3)
        held = len(common.socket_inodes(s.pid)) - base
        rss1 = probes.kib(s.pid, "VmRSS")
        did = (f"started `./server PORT {workers}`, kept both workers busy with a client each, then connected "
               f"{more} more clients (each sent a line and closed its sending side)")
        if not s.alive():
            fail(did, state(s), rule=rule)
        if held > bound:
            fail(did + "; counted the server's sockets in /proc/PID/fd",
                 f"the server held {held} connections (at most {bound}: {workers} being served, {SLOTS} in the "
                 f"buffer, 1 accepted and waiting to be inserted)",
                 rule=rule, hint="a bounded buffer of 16: when it is full, the main thread sleeps on the free-slot "
                 "semaphore (or condition variable) before accepting again; never queue descriptors in a list "
                 "that grows (see them with `ls -l /proc/PID/fd`)")
        grown = (rss1 - rss0) * 1024
        if grown > 4 * MiB:
            fail(did + "; read VmRSS before and after",
                 f"the server's memory grew by {grown / MiB:.1f} MiB with {more} clients waiting",
                 rule=rule, hint="waiting clients cost the server nothing: they stay in the kernel's listen queue "
                 "until a slot frees; allocate nothing per waiting client")
    finally:
        close_all(busy)
    got, _ = read_all(waiting, lines, 6 * PATIENCE)
    close_all(waiting)
    lost = unserved(lines, got)
    if lost:
        fail(f"started `./server PORT {workers}`, kept both workers busy, connected {more} more clients (each sent "
             "a line and closed its sending side), then let the 2 busy clients leave",
             f"{len(lost)} of the {more} waiting clients were not served (clients {numbers(lost)}); {state(s)}",
             rule=rule, hint="a full buffer makes the main thread wait, never drop or close the connection: "
             "every client is served in its turn")


@graded(LAB, "fifo")
def test_fifo(server: Start) -> None:
    queued = SLOTS + 2  # the buffer full, one held by the main thread, one in the listen queue
    rule = "workers take connections in the order they were accepted (first in, first out)"
    s = start(server, 1)
    base = probes.fd_count(s.pid)
    first = Client(s.port)
    did = "started `./server PORT 1`; a first client connected and sent a line"
    waiting: list[Client] = []
    try:
        with first:
            common.expect_echo(s, first, random_line(24), did, rule=common.ECHO_RULE, hint=HINT_SERVE)
            lines = random_lines(queued)
            deadline = time.monotonic() + 2.0  # a server that leaves them in the listen queue: FIFO too
            for i, ln in enumerate(lines):
                c = Client(s.port)
                c.send(ln)
                waiting.append(c)
                if i < queued - 1:  # the last stays in the listen queue: nothing to wait for
                    accepted(s, base + 2 + i, deadline)
            did = (f"{did}; while the one worker served it, {queued} more clients connected one after the other "
                   f"(each once the server had accepted the one before: {SLOTS} for the buffer, one for the main "
                   "thread to hold, one for the listen queue), each sent a line")
            early = next_echoed(waiting, list(range(queued)), lines, 0.3)  # none: the only worker is busy
            if early:
                were = f"clients {numbers(early)} were" if len(early) > 1 else f"client {early[0] + 1} was"
                fail(did, f"{were} served while the only worker was busy with the first client",
                     rule="the main thread only accepts and inserts; when the buffer is full it waits, blocked, "
                     "with the one descriptor it could not insert", hint="never serve a client from the main "
                     "thread or from a thread of its own, and never add workers: insert it into the buffer, and "
                     "when the buffer is full, sleep until a worker frees a slot")
        did += "; then the first client left, and each waiting client left once it had its echo"
        order: list[int] = []
        pending = list(range(queued))
        while pending:
            done = next_echoed(waiting, pending, lines, PATIENCE)
            if not done:
                fail(did, f"after clients {numbers(order) or 'none'} were served, clients {numbers(pending)} got "
                     f"no echo within {PATIENCE:.0f} s; {state(s)}", rule=rule,
                     hint="a worker whose client is done takes the next descriptor from the buffer")
            for i in done:
                waiting[i].close()  # its worker sees the end of input and takes the next descriptor
                pending.remove(i)
            order += done
    finally:
        close_all(waiting)
    if order != list(range(queued)):
        fail(did, f"the waiting clients were served in the order {numbers(order)} (expected 1 to {queued})",
             rule=rule, hint="remove at the front, insert at the rear (a circular queue: front = (front + 1) % n); "
             "taking the newest first is a stack, and under load the oldest client starves")


def cpu_use(s: Server) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of the server over 1 s, or 2 s when the first second is not clearly
    idle: the rule's window is 2 s, and the CPU clock ticks every 10 ms."""
    p0, t0 = probes.proc(s.pid), time.monotonic()
    used = wall = 0.0
    for _ in range(2):
        time.sleep(1.0)
        p1 = probes.proc(s.pid)
        if p0 is None or p1 is None:
            fail("read the server's CPU time (/proc/PID/stat)", state(s), rule="the server keeps running")
        used, wall = p1.cpu_seconds - p0.cpu_seconds, time.monotonic() - t0
        if used <= 0.01 or used > 0.04:
            break  # at most one tick: idle; over 2% of 2 s already: busy
    return used, wall


@graded(LAB, "idle-cpu")
def test_idle_cpu(server: Start) -> None:
    workers = 2
    rule = ("nothing busy-waits: with no client, and with every worker busy and the buffer full, the server uses "
            "under 2% of a core over 2 s")
    s = start(server, workers)
    busy = served(s, workers, what=f"as many as the {workers} workers, which then stay busy with them")
    full = connect_many(s.port, SLOTS + 4)
    try:
        settled(lambda: probes.fd_count(s.pid), 2.0, 0.3)
        used, wall = cpu_use(s)
        if used > 0.02 * max(wall, 2.0):
            fail(f"started `./server PORT {workers}`, kept both workers busy with silent clients and connected "
                 f"{SLOTS + 4} more (the buffer full, the main thread waiting), then read the server's CPU time "
                 "(/proc/PID/stat)",
                 f"the server used {used:.2f} s of CPU in {wall:.1f} s ({used / wall * 100:.0f}% of a core)",
                 rule=rule, hint="with the buffer full the main thread sleeps in sem_wait on the free slots (or "
                 "pthread_cond_wait), never in a loop that tests a count; see it with `top -H -p PID`, and "
                 "`gdb -p PID` then `thread apply all bt`")
    finally:
        close_all(busy + full)
    settled(lambda: probes.fd_count(s.pid), 2.0, 0.3)  # the workers finish the clients that left
    used, wall = cpu_use(s)
    if used > 0.02 * max(wall, 2.0):
        fail(f"started `./server PORT {workers}`, kept both workers busy and the buffer full, let every client "
             "leave, then read the server's CPU time (/proc/PID/stat)",
             f"the server used {used:.2f} s of CPU in {wall:.1f} s ({used / wall * 100:.0f}% of a core) with no client",
             rule=rule,
             hint="a worker with nothing to do sleeps in sem_wait (or pthread_cond_wait), never in a loop that "
             "tests a count; see which thread spins with `top -H -p PID`")


@graded(LAB, "tsan")
def test_tsan(grading: GradingSession, server: Start) -> None:
    workers, burst = 4, 12

    def load(s: Server) -> None:
        close_all(served(s, workers, what="under ThreadSanitizer"))
        for _ in range(2):
            cs = connect_many(s.port, burst)
            data = [b"".join(random_lines(20, 1, 120)) for _ in cs]
            for c, d in zip(cs, data, strict=True):
                send_and_end(c, d)
            got, _ = read_all(cs, data, 20.0)
            close_all(cs)
            lost = unserved(data, got)
            if lost:  # a check of absence scores only for a server that did the work
                fail(f"under ThreadSanitizer, with {workers} workers, {burst} clients at once each sent 20 lines "
                     "and closed its sending side", f"{len(lost)} of them did not get their echo; {state(s)}",
                     rule="every client is served in its turn", hint=HINT_SERVE)

    tsan.check_tsan(grading, server, load, args=(str(workers),),
                    did=f"rebuilt your server with -fsanitize=thread, started it with {workers} workers and ran "
                        f"{workers} clients, then 2 bursts of {burst} clients x 20 lines (most of them waiting "
                        "in the buffer)",
                    hint="every access to the buffer (buf, front, rear, a count) holds the same lock; the "
                         "semaphores count, they do not protect")
