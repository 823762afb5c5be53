"""Checks every lab shares: build, echo, eof, concurrency, fd-leak, robust-disconnect, vs-reference."""
from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NamedTuple, NoReturn

from .. import probes
from ..clients import (
    Client,
    close_all,
    compare,
    connect_many,
    echo_many,
    random_line,
    random_lines,
    read_until_eof_many,
    rng,
)
from ..errors import ProbeInterfered
from ..harness import Server
from ..session import GradingSession
from ..verdict import fail
from . import graded
from .blocked import Watch

if TYPE_CHECKING:
    from .fd_leak import Held

# The contract promises an echo within 2 s; we wait longer so that a loaded machine never
# fails a correct server, while a server that never answers fails all the same. A wait ends
# sooner only when the server is proved unable to answer (blocked.Watch): asleep for good, not slow.
PATIENCE = 3.0
Start = Callable[..., Server]


def state(s: Server) -> str:
    """The server's condition, for feedback."""
    if s.alive():
        return "the server is still running"
    tail = s.output.text(600).strip()
    return f"the server has died ({s.exit_description()})" + (f"; its last output:\n{tail}" if tail else "")


def fd_targets(pid: int) -> dict[int, str]:
    """probes.fd_targets, where a submission that kept killing the probe's helper loses the check:
    probes only observe, the check decides (it must not turn a verdict into an uncharged error)."""
    try:
        return probes.fd_targets(pid)
    except ProbeInterfered as e:
        _interfered(e)


def fd_entries(pid: int) -> dict[int, probes.FdEntry]:
    """probes.fd_entries (links, open flags, mounts), decided as fd_targets is."""
    try:
        return probes.fd_entries(pid)
    except ProbeInterfered as e:
        _interfered(e)


def socket_inodes(pid: int) -> dict[int, int]:
    """probes.socket_inodes, decided as fd_targets is."""
    try:
        return probes.socket_inodes(pid)
    except ProbeInterfered as e:
        _interfered(e)


def _interfered(e: ProbeInterfered) -> NoReturn:
    fail(f"read the server's descriptors (/proc/{e.pid}/fd) with a helper process of your submission's uid",
         f"the helper was killed or stopped {e.times} times by a signal the grader did not send: a "
         "process of your submission signals processes it did not start (kill(-1, ...)?)",
         rule="the server signals only the processes it started")


def expect_echo(s: Server, c: Client, data: bytes, did: str, *, rule: str,
                hint: str | Callable[[Server], str] = "") -> None:
    """Send `data` on `c` and fail the check unless exactly `data` comes back in time. A callable
    hint is asked at failure time, so it can follow the server's state."""
    got = b""
    if c.connected:
        c.error = ""
        got = echo_many([c], [data], PATIENCE, judge=Watch(s))[0]
    if got != data:
        fail(did, f"{compare(data, got)}; {c.error or f'waited {PATIENCE:.0f} s'}; {state(s)}", rule=rule,
             hint=hint(s) if callable(hint) else hint)


def served(s: Server, n: int, *, what: str) -> list[Client]:
    """n clients connected at once, each echoing one line; fails if any is not served."""
    watch = Watch(s)
    clients = connect_many(s.port, n, judge=watch)
    lines = random_lines(n)
    got = echo_many(clients, lines, PATIENCE, judge=watch)
    bad = [i for i in range(n) if got[i] != lines[i]]
    if bad:
        close_all(clients)
        i = bad[0]
        fail(f"connected {n} clients at once ({what}); each sent one line, and the grader waited up to "
             f"{PATIENCE:.0f} s for the {n} echoes at once",
             f"{len(bad)} of {n} got no correct echo; client {i + 1}: "
             f"{compare(lines[i], got[i])}{'; ' + clients[i].error if clients[i].error else ''}; {state(s)}",
             rule="every client is served while the others stay connected",
             hint="this check needs a server that serves; make `echo` and `concurrency` pass first"
             if s.alive() else "the server died before this check could do its work: its exit status and last "
             "output are above; run it by hand and repeat what the grader did")
    return clients


ECHO_RULE = ("every byte a client sends comes back to that client, unchanged and in order; "
             "each complete line comes back within 2 s")


def check_build(grading: GradingSession) -> None:
    b = grading.build()
    if not b.ok:
        fail("copied your lab directory to an empty directory and ran `make` there",
             f"{b.problem}. Output of make:\n{b.output.strip() or '(none)'}",
             rule="`make` builds an executable `server` in the lab directory",
             hint="run `make clean && make` in your lab directory and fix the first error shown")


def check_echo(start: Start) -> None:
    s = start()
    c = Client(s.port)
    if not c.connected:
        fail(f"connected to port {s.port}", f"{c.error}; {state(s)}", rule=ECHO_RULE)
    with c:
        block = b"".join(random_lines(5))
        expect_echo(s, c, block, "sent 5 lines in one segment", rule=ECHO_RULE,
                    hint="a read can return several lines at once: echo all of them")
        line = random_line(40)
        c.send_bytewise(line)
        got = c.recv_exactly(len(line), PATIENCE)
        if got != line:
            fail("sent a 40-byte line one byte per segment", f"{compare(line, got)}; {state(s)}",
                 rule=ECHO_RULE, hint="a read can return part of a line: keep what came and wait for more")
        binary = bytes(b for b in rng().sample(range(256), 256) if b != 10) + b"\n"
        expect_echo(s, c, binary, "sent one line holding every byte value but '\\n' (NUL and bytes >= 0x80 "
                    "included), 256 bytes with its newline", rule=ECHO_RULE,
                    hint="a line can hold any byte, NUL included: echo the count read returned, never strlen(buf)")
        long = random_line(8192)
        expect_echo(s, c, long, "sent one line of 8 KiB (8192 bytes with its newline)", rule=ECHO_RULE,
                    hint="lines may be up to 8 KiB long: size your buffers for it (8192 + 2 bytes)")


def check_eof(start: Start) -> None:
    s = start()
    with Client(s.port) as c:
        if not c.connected:
            fail(f"connected to port {s.port}", f"{c.error}; {state(s)}", rule=ECHO_RULE)
        lines = b"".join(random_lines(2))
        tail = random_line(30)[:-1]
        c.send(lines + tail)
        c.shutdown_write()
        [(got, closed)] = read_until_eof_many([c], PATIENCE, judge=Watch(s))
        did = "sent 2 lines and a last line without '\\n', then closed the sending side (shutdown(SHUT_WR))"
        rule = ("when a client closes its sending side, the server sends back what is still owed "
                "(including a last line with no '\\n') and then closes that connection")
        if got != lines + tail:
            fail(did, f"{compare(lines + tail, got)}; {state(s)}", rule=rule,
                 hint="at end of input, echo what is left in your buffer even without a newline")
        if not closed:
            fail(did, "the echo came back, but the connection was not closed: "
                 f"{c.error or f'waited {PATIENCE:.0f} s'}; {state(s)}", rule=rule,
                 hint="close the connected socket when read returns 0; in the fork lab the parent must "
                 "also close its copy right after fork, or the connection stays open")


def check_concurrency(start: Start, n: int = 8, how: str = "", hint: str = "") -> None:
    """`how`: how the server was started, for the feedback (after "connected n clients"); `hint`: the
    lab's own words after the hint's."""
    s = start()
    clients = connect_many(s.port, n, judge=Watch(s))
    try:
        down = [i for i, c in enumerate(clients) if not c.connected]
        if down:
            fail(f"connected {n} clients{how}", f"{len(down)} could not connect: {clients[down[0]].error}; {state(s)}",
                 rule="clients connected at the same time are all served")
        for i in reversed(range(n)):  # the last to connect speaks first
            expect_echo(s, clients[i], random_line(32),
                        f"connected {n} clients{how}, then sent a line on client {i + 1} (connected "
                        f"{'last' if i == n - 1 else f'{i + 1}th'}) while all {n} stayed connected",
                        rule="clients connected at the same time are all served while the others stay connected",
                        hint="a server that serves one client until it leaves (or holds a lock for a whole "
                        "connection) makes every other client wait" + hint)
    finally:
        close_all(clients)


def wait_until(cond: Callable[[], bool], timeout: float, step: float = 0.02,
               give_up: Callable[[], bool] | None = None) -> bool:
    """Whether cond() became true within timeout; it stops sooner, false, once give_up() is true."""
    deadline = time.monotonic() + timeout
    while True:
        if cond():
            return True
        if time.monotonic() > deadline or (give_up is not None and give_up()):
            return False
        time.sleep(step)


def check_robust_disconnect(start: Start, how: str = "", more: str = "") -> None:
    """`how`: how the server was started, for the feedback; `more`: the lab's own words after the hint's."""
    s = start()
    rule = ("a client that resets its connection, or vanishes mid-line or while the server is writing to it, "
            "never stops the server from serving the others (SIGPIPE and ECONNRESET are handled)")
    def hint(s: Server) -> str:
        if s.alive():
            return ("the server is still running but did not answer: something blocks it, such as a blocking "
                    "call in a signal handler (waitpid without WNOHANG), a write to a client that no longer reads, "
                    "or a lock never released" + more)
        return ("ignore SIGPIPE (signal(SIGPIPE, SIG_IGN)) or send with MSG_NOSIGNAL, and treat EPIPE/ECONNRESET "
                "from read or write as the end of that client only, never as a reason to exit" + more)
    with Client(s.port) as keeper:
        expect_echo(s, keeper, random_line(24), f"connected a first client{how} and sent a line", rule=ECHO_RULE)
        scenarios: list[tuple[str, Callable[[], None]]] = []

        def mid_line() -> None:
            with Client(s.port) as c:
                c.send(random_line(64)[:40])
                time.sleep(0.05)
                c.reset()

        def unread_then_close() -> None:
            for _ in range(3):
                c = Client(s.port)
                c.send(b"".join(random_lines(400, 100, 200)))
                c.close()  # unread echo: the kernel answers the server's writes with a reset
                time.sleep(0.02)

        def half_close_then_vanish() -> None:
            # The end of input (FIN) reaches the server first, so its socket is in CLOSE_WAIT when
            # the reset that answers its echo arrives: the kernel then fails the next write with
            # EPIPE and raises SIGPIPE, every time, not just when a race goes that way.
            for _ in range(5):
                c = Client(s.port)
                c.send(b"".join(random_lines(200, 60, 140)) + random_line(40)[:-1])
                c.shutdown_write()
                c.close()
                time.sleep(0.02)

        def mid_write() -> None:
            c = Client(s.port)
            c.sock.settimeout(0.5) if c.sock else None
            c.send(b"".join(random_lines(4000, 200, 400)), timeout=0.5)
            time.sleep(0.1)
            c.reset()

        scenarios = [("a client sent part of a line and reset its connection", mid_line),
                     ("5 times, a client sent 200 lines, closed its sending side and vanished without reading "
                      "any echo (the server's writes are answered by a reset)", half_close_then_vanish),
                     ("3 times, a client sent 400 lines and closed without reading any echo", unread_then_close),
                     ("a client sent about 1 MiB without reading, then reset while the server was writing to it",
                      mid_write)]
        for what, act in scenarios:
            act()
            time.sleep(0.1)
            expect_echo(s, keeper, random_line(24), f"{what}{how}; then the first client sent a line",
                        rule=rule, hint=hint)
            with Client(s.port) as fresh:
                expect_echo(s, fresh, random_line(24), f"{what}{how}; then a new client connected and sent a line",
                            rule=rule, hint=hint)


class SharedChecks(NamedTuple):
    """The eight checks every lab shares, as pytest test functions marked for one lab. A lab's
    module names each one, in this order:
    `test_build, test_echo, ..., test_vs_reference, test_memory = common.shared_checks(LAB)`."""
    test_build: Callable[..., None]
    test_echo: Callable[..., None]
    test_eof: Callable[..., None]
    test_concurrency: Callable[..., None]
    test_fd_leak: Callable[..., None]
    test_robust_disconnect: Callable[..., None]
    test_vs_reference: Callable[..., None]
    test_memory: Callable[..., None]


def shared_checks(lab: str, *, args: Sequence[str] = (), concurrent: int = 8,
                  fd_leak_flood: bool = False,
                  fd_also: Callable[[Server], Sequence[Held]] | None = None,
                  memory_terminate: bool = False,
                  race_env: Callable[[GradingSession], tuple[dict[str, str], str, str]] | None = None
                  ) -> SharedChecks:
    """build, echo, eof, concurrency, fd-leak, robust-disconnect, vs-reference, marked for `lab`
    (points and visibility from the catalogue). Every server they start, the reference's too, is
    `./server PORT ARGS...`; `concurrency` connects `concurrent` clients at once; with
    `fd_leak_flood`, `fd-leak`'s first wave has a client that resets while it is owed echo
    (check_fd_leak's flood_reset: in lab select, where the server owns each write's failure);
    `fd-leak` also compares the descriptors of the processes `fd_also` names (check_fd_leak's `also`);
    with `memory_terminate`, `memory` ends its server with SIGTERM (lab ipc: every process then exits,
    and LeakSanitizer looks at each); `race_env` gives the server of the checks whose clients come
    together or close behind each other (`concurrency`, `fd-leak`, `robust-disconnect`) an environment
    of its own, with the words that tell the student how it was started and a hint of the lab's (lab
    thread: latestart.c, so that a race between a new thread and its creator shows every time);
    `memory` preloads its library too (a server that such a race kills dies every time there)."""

    def started(server: Start) -> Start:
        return functools.partial(server, args=args) if args else server

    def race(grading: GradingSession) -> tuple[dict[str, str], str, str]:
        return race_env(grading) if race_env else ({}, "", "")

    def raced(grading: GradingSession, server: Start) -> tuple[Start, str, str]:
        env, how, hint = race(grading)
        return (functools.partial(started(server), env=env) if env else started(server)), how, hint

    def test_build(grading: GradingSession) -> None:
        check_build(grading)

    def test_echo(server: Start) -> None:
        check_echo(started(server))

    def test_eof(server: Start) -> None:
        check_eof(started(server))

    def test_concurrency(grading: GradingSession, server: Start) -> None:
        start, how, hint = raced(grading, server)
        check_concurrency(start, concurrent, how, hint)

    def test_fd_leak(grading: GradingSession, server: Start) -> None:
        from .fd_leak import check_fd_leak  # it builds on this module

        start, how, _ = raced(grading, server)
        check_fd_leak(start, fd_also, flood_reset=fd_leak_flood, how=how)

    def test_robust_disconnect(grading: GradingSession, server: Start) -> None:
        check_robust_disconnect(*raced(grading, server))

    def test_vs_reference(grading: GradingSession, server: Start) -> None:
        from .speed import check_vs_reference  # it builds on this module

        check_vs_reference(grading, started(server))

    def test_memory(grading: GradingSession, server: Start) -> None:
        from .memory import check_memory  # it builds on this module

        env, how, _ = race(grading)
        check_memory(grading, server, args=args, terminate=memory_terminate, preload_also=env.get("LD_PRELOAD", ""),
                     how=how)

    return SharedChecks(
        graded(lab, "build")(test_build), graded(lab, "echo")(test_echo), graded(lab, "eof")(test_eof),
        graded(lab, "concurrency")(test_concurrency), graded(lab, "fd-leak")(test_fd_leak),
        graded(lab, "robust-disconnect")(test_robust_disconnect), graded(lab, "vs-reference")(test_vs_reference),
        graded(lab, "memory")(test_memory))
