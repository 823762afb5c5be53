"""Failing fast: a wait ends early only on proof that the server will never answer
(grader.checks.blocked.Watch), never for a server that is merely slow or sleeping on a timer."""
from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from grader.checks.blocked import BLOCKED_FOR, Watch, untimed_sleep
from grader.clients import Client, connect_many, echo_many, random_line, read_until_eof_many
from grader.harness import Server, build
from grader.isolation.local import Sandbox

# serves its first client alone, and that one until it leaves: an iterative server
STUCK = r'''
#include <stdlib.h>
#include <unistd.h>
#include <arpa/inet.h>
int main(int argc, char **argv) {
    (void)argc;
    int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET; a.sin_port = htons(atoi(argv[1]));
    if (bind(l, (struct sockaddr *)&a, sizeof a) || listen(l, 8)) return 1;
    for (;;) {
        int c = accept(l, NULL, NULL);
        char buf[4096];
        ssize_t n;
        while ((n = read(c, buf, sizeof buf)) > 0)
            if (write(c, buf, (size_t)n) != n) break;
        close(c);
    }
}
'''
# never closes a connection: at its client's end of input it goes back to accept
NO_CLOSE = STUCK.replace("close(c);", "")
# answers each read after 1.2 s of sleep: slow, but on a timer: never proved stuck
SLEEPY = STUCK.replace("if (write(c, buf, (size_t)n) != n) break;",
                       "{ usleep(1200000); if (write(c, buf, (size_t)n) != n) break; }")
# listens (a queue of 1) and never accepts: it sleeps in pause() for ever
NEVER_ACCEPTS = STUCK.replace("listen(l, 8)", "listen(l, 1)").replace(
    "for (;;) {", "for (;;) pause();\n    for (;;) {")
# a queue of 1, and an accept every 0.3 s: slow, on a timer
SLOW_ACCEPT = STUCK.replace("listen(l, 8)", "listen(l, 1)").replace(
    "int c = accept(l, NULL, NULL);", "usleep(300000); int c = accept(l, NULL, NULL); close(c); continue;")
assert SLEEPY != STUCK != NO_CLOSE != NEVER_ACCEPTS != SLOW_ACCEPT


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    sb = Sandbox()
    try:
        yield sb
    finally:
        sb.kill_all()
        sb.close()


def start(tmp: Path, sb: Sandbox, source: str, name: str) -> Server:
    d = tmp / name
    d.mkdir()
    (d / "server.c").write_text(source)
    (d / "Makefile").write_text("server: server.c\n\t$(CC) $(CFLAGS) -o server server.c\n")
    b = build(d, sb, name)
    assert b.ok, b.output
    s = Server(b, sb, sb.allocate_port()).start()
    assert s.wait_ready()
    return s


def test_untimed_sleeps_are_told_from_timed_ones() -> None:
    if os.uname().machine != "x86_64":
        pytest.skip("syscall numbers of x86_64")
    rest = "0x0 0x0 0x7ffd 0x7f00"
    assert untimed_sleep(f"0 0x4 0x7f00 0x2000 {rest}") == "read on fd 4"
    assert untimed_sleep(f"43 0x3 0x0 0x0 {rest}") == "accept on fd 3"
    assert untimed_sleep(f"202 0x7f00 0x80 0x2 0x0 {rest}") == "a lock (futex)"
    assert untimed_sleep(f"202 0x7f00 0x80 0x2 0x7ffd1000 {rest}") is None  # pthread_cond_timedwait
    assert untimed_sleep(f"23 0x5 0x7ffd 0x0 0x0 0x0 {rest}") == "select"
    assert untimed_sleep(f"23 0x5 0x7ffd 0x0 0x0 0x7ffd2000 {rest}") is None  # select with a timeout
    assert untimed_sleep(f"7 0x7ffd 0x3 0xffffffff {rest}") == "poll"
    assert untimed_sleep(f"7 0x7ffd 0x3 0x3e8 {rest}") is None  # poll for 1000 ms
    assert untimed_sleep(f"230 0x0 0x0 0x7ffd 0x0 {rest}") is None  # clock_nanosleep: usleep
    assert untimed_sleep(f"1 0x1 0x7f00 0x40 {rest}") is None  # a write to the terminal waits for the grader
    assert untimed_sleep(f"1 0x5 0x7f00 0x40 {rest}") == "write on fd 5"
    assert untimed_sleep("running") is None


def test_a_server_blocked_on_another_client_is_given_up_on_at_once(tmp_path: Path, sandbox: Sandbox) -> None:
    s = start(tmp_path, sandbox, STUCK, "stuck")
    try:
        with Client(s.port) as first, Client(s.port) as second:
            line = random_line(30)
            assert echo_many([first], [line], 3.0) == [line]
            t0 = time.monotonic()
            watch = Watch(s)
            got = echo_many([second], [line], 3.0, judge=watch)
            took = time.monotonic() - t0
            assert got == [b""]
            if watch.usable:  # root: with CAP_SYS_PTRACE, or through a helper of the submission's uid
                assert took < BLOCKED_FOR + 1.0, took
                assert "stopped waiting" in second.error and "not yet accepted" in second.error
                assert "read on fd" in second.error
            else:
                assert took >= 3.0
            # without a judge, a stall ends the wait too: nothing moved for that long
            t0 = time.monotonic()
            assert echo_many([second], [line], 3.0, stall=0.5) == [b""]
            assert time.monotonic() - t0 < 1.5 and "nothing came back" in second.error
            # at its end of input the first is closed: nothing proves otherwise
            first.shutdown_write()
            [(_, closed)] = read_until_eof_many([first], 3.0, judge=Watch(s))
            assert closed
    finally:
        s.stop()


def test_a_server_sleeping_on_a_timer_is_waited_for(tmp_path: Path, sandbox: Sandbox) -> None:
    s = start(tmp_path, sandbox, SLEEPY, "sleepy")
    try:
        with Client(s.port) as c:
            line = random_line(30)
            t0 = time.monotonic()
            got = echo_many([c], [line], 3.0, judge=Watch(s))
            assert got == [line], c.error
            assert time.monotonic() - t0 >= 1.2
    finally:
        s.stop()


def test_a_connection_the_server_will_never_close_is_given_up_on(tmp_path: Path, sandbox: Sandbox) -> None:
    s = start(tmp_path, sandbox, NO_CLOSE, "no-close")
    try:
        with Client(s.port) as c:
            line = random_line(30)
            c.send(line)
            c.shutdown_write()
            t0 = time.monotonic()
            watch = Watch(s)
            [(got, closed)] = read_until_eof_many([c], 3.0, judge=watch)
            assert got == line and not closed
            if watch.usable:
                assert time.monotonic() - t0 < BLOCKED_FOR + 1.0
                assert "kept the connection open" in c.error and "accept on fd" in c.error
    finally:
        s.stop()


def test_the_proof_holds_through_a_helper_of_the_submissions_uid(tmp_path: Path, sandbox: Sandbox) -> None:
    """Without CAP_SYS_PTRACE (a container, the docker isolation) root reads the tasks' syscall
    files from a helper that takes the submission's uid: forced here, the proof is the same."""
    s = start(tmp_path, sandbox, STUCK, "stuck")
    try:
        with Client(s.port) as first, Client(s.port) as second:
            line = random_line(30)
            assert echo_many([first], [line], 3.0) == [line]
            watch = Watch(s)
            watch.as_owner = True
            t0 = time.monotonic()
            assert echo_many([second], [line], 3.0, judge=watch) == [b""]
            took = time.monotonic() - t0
            if os.geteuid() == 0:
                assert watch.usable and took < BLOCKED_FOR + 1.0, (watch.usable, took)
                assert "read on fd" in second.error
            else:  # no uid of the submission's own: nothing is proved, the wait runs out
                assert not watch.usable and took >= 3.0
    finally:
        s.stop()


def test_connects_to_a_server_that_never_accepts_are_given_up_on(tmp_path: Path, sandbox: Sandbox) -> None:
    s = start(tmp_path, sandbox, NEVER_ACCEPTS, "never-accepts")
    try:
        t0 = time.monotonic()
        watch = Watch(s)
        clients = connect_many(s.port, 8, timeout=5.0, judge=watch)
        took = time.monotonic() - t0
        late = [c for c in clients if not c.connected]
        assert late  # a queue of 1: the kernel completes 2 handshakes, the others wait in SYN
        if watch.usable:
            assert took < BLOCKED_FOR + 1.5, took
            assert "never will" in late[0].error and "never accepted" in late[0].error, late[0].error
            assert "pause" in late[0].error
        else:
            assert took >= 5.0 and late[0].error == "connect did not complete in time"
        for c in clients:
            c.close()
    finally:
        s.stop()


def test_connects_to_a_server_that_accepts_slowly_are_waited_for(tmp_path: Path, sandbox: Sandbox) -> None:
    """A queue of 1 and an accept every 0.3 s (a timed sleep between): connections wait in the
    queue, but the server is not asleep for good, so nothing proves it will never accept them."""
    s = start(tmp_path, sandbox, SLOW_ACCEPT, "slow-accept")
    try:
        clients = connect_many(s.port, 6, timeout=4.0, judge=Watch(s))
        assert not [c.error for c in clients if "never" in c.error]
        assert sum(c.connected for c in clients) >= 3
        for c in clients:
            c.close()
    finally:
        s.stop()
