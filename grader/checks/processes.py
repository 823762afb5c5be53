"""The process model's checks: process-per-client, zombies, child-exit, listenfd-closed, accept-eintr.

Lab `fork` grades them; a lab built on the same model (`ipc`: the fork lab plus a logger process)
names them from its module too, each explicitly:

    (test_process_per_client, test_zombies, test_child_exit, test_listenfd_closed,
     test_accept_eintr) = processes.process_checks(LAB)

`client_children` says which of the server's live children serve clients (default: all of them;
in `ipc`, all but the logger).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import NamedTuple

from .. import probes
from ..clients import Client, close_all, random_line
from ..harness import Server
from ..verdict import fail
from . import common, graded
from .common import ECHO_RULE, PATIENCE, Start, expect_echo, served, state, wait_until

Children = Callable[[int], list[probes.Proc]]  # pid of the server -> its live children that serve clients


def live_children(pid: int) -> list[probes.Proc]:
    return [p for p in probes.children(pid) if not p.zombie]


def zombies(pid: int) -> list[probes.Proc]:
    return [p for p in probes.children(pid) if p.zombie]


NO_CHILD_RULE = ("every accepted connection is served by a new child made with fork; a check for the absence of a "
                 "bug scores only when the server did that check's work")
NO_CHILD_HINT = "fork right after accept and let the child serve the client; make `process-per-client` pass first"


def require_children(s: Server, did: str, check_work: str,
                     kids_of: Children = live_children) -> list[probes.Proc]:
    """The live children of the server now (those `kids_of` counts); fails the check when there are
    none: without children there is nothing to reap, close or be interrupted by, and an absence check
    scores only for work done."""
    kids = kids_of(s.pid)
    if not kids:
        fail(did, f"the server had no child process, so {check_work}; {state(s)}", rule=NO_CHILD_RULE,
             hint=NO_CHILD_HINT)
    return kids


def check_process_per_client(start: Start, kids_of: Children = live_children) -> None:
    s = start()
    clients = served(s, 6, what="each should be served by its own child")
    try:
        kids = kids_of(s.pid)
        # which process holds each client's connection? (match the connected sockets' inodes)
        owners: dict[int, set[int]] = {}
        conn_inodes = _server_side_inodes(s.port, clients)
        for k in kids:
            for inode in common.socket_inodes(k.pid).values():
                if inode in conn_inodes:
                    owners.setdefault(conn_inodes[inode], set()).add(k.pid)
        if len(kids) < 6 or len({frozenset(v) for v in owners.values()}) < 6:
            fail("connected 6 clients at once and had each echo a line, then looked at the server's children",
                 f"{len(kids)} live children ({', '.join(k.describe() for k in kids) or 'none'}); "
                 f"{len(owners)} of the 6 connections are held by a child",
                 rule="every accepted connection is served by a new child made with fork; the parent only accepts",
                 hint="fork right after accept; the child serves the client, the parent goes back to accept")
    finally:
        close_all(clients)


def _server_side_inodes(port: int, clients: list[Client]) -> dict[int, int]:
    """inode of the server-side socket of each client connection -> client index."""
    mine = {c.local_port: i for i, c in enumerate(clients)}
    return {t.inode: mine[t.remote_port] for t in probes.tcp_sockets()
            if t.local_port == port and t.remote_port in mine and t.inode}


ZOMBIE_RULE = ("children that end are reaped within 1 s, also when many end at the same moment and while "
               "others still run")


def check_zombies(start: Start, kids_of: Children = live_children) -> None:
    s = start()
    # 1. one client comes and goes
    with Client(s.port) as c:
        expect_echo(s, c, random_line(20), "connected one client and sent a line", rule=ECHO_RULE)
        require_children(s, "connected one client, which got its echo; then listed the server's children",
                         "no child could end and be reaped", kids_of)
    _no_zombies(s.pid, "one client was served and left",
                "install a SIGCHLD handler that calls waitpid, or set SIGCHLD to SIG_IGN")
    # 2. a burst: many children end at the same moment (SIGCHLD is not queued)
    burst = served(s, 40, what="a burst whose children all end at once")
    for c in burst:
        c.close()
    _no_zombies(s.pid, "40 clients were served and left at the same moment",
                "signals are not queued: several children can end for one SIGCHLD; reap in a loop: "
                "while (waitpid(-1, NULL, WNOHANG) > 0)")
    # 3. while others still run: a blocking waitpid in the handler stalls the parent
    stay = served(s, 3, what="they stay connected while another client leaves")
    try:
        before = {p.pid for p in kids_of(s.pid)}
        with Client(s.port) as c:
            expect_echo(s, c, random_line(20), "with 3 clients staying connected, a 4th client sent a line",
                        rule=ECHO_RULE)
            fourth = {p.pid for p in kids_of(s.pid)} - before
        _no_zombies(s.pid, "a client left while 3 others stayed connected",
                    "reap with WNOHANG so the handler returns when no child has ended")
        # The 4th child has ended and been reaped (its SIGCHLD was handled) before the 5th client
        # comes: a handler that then blocks in waitpid for the 3 others is caught every time.
        wait_until(lambda: all(probes.proc(k) is None for k in fourth), PATIENCE)
        with Client(s.port) as c:
            expect_echo(s, c, random_line(20),
                        "with 3 clients still connected and a 4th gone, a 5th client connected and sent a line",
                        rule=ZOMBIE_RULE + "; a blocking waitpid in the handler stalls the parent",
                        hint="waitpid without WNOHANG in the SIGCHLD handler waits for the children that are "
                        "still serving, and the parent stops accepting; use WNOHANG")
    finally:
        close_all(stay)
    _no_zombies(s.pid, "the last clients left", "reap every child that ends")


def _no_zombies(pid: int, after: str, hint: str) -> None:
    if not wait_until(lambda: not zombies(pid), 1.5):
        z = zombies(pid)
        fail(f"{after}; waited 1.5 s and listed the server's children (ps -o pid,stat --ppid {pid})",
             f"{len(z)} zombie children remained: " + ", ".join(p.describe() for p in z[:8]),
             rule=ZOMBIE_RULE, hint=hint)


def check_child_exit(start: Start, kids_of: Children = live_children) -> None:
    s = start()
    before = {p.pid for p in kids_of(s.pid)}
    clients = served(s, 3, what="to see their children end when they leave")
    kids = [p for p in kids_of(s.pid) if p.pid not in before]
    close_all(clients)
    if not kids:
        fail("connected 3 clients, each echoed a line; then looked for the children serving them",
             "the server had no new child process while they were connected",
             rule="every accepted connection is served by a new child made with fork")

    def alive() -> list[probes.Proc]:
        return [q for q in (probes.proc(k.pid) for k in kids) if q is not None and not q.zombie]

    if not wait_until(lambda: not alive(), 1.5):
        left = alive()
        fail("connected 3 clients, each echoed a line, then all 3 left; waited 1.5 s",
             f"{len(left)} of the {len(kids)} children that served them are still alive: "
             + ", ".join(p.describe() for p in left),
             rule="a child ends (exit) when its client is done; it never returns into the accept loop",
             hint="call exit(0) at the end of the child's branch, right after it closes the connection")


def check_listenfd_closed(start: Start, kids_of: Children = live_children) -> None:
    s = start()
    listening = probes.listening_inodes(s.port)
    clients = served(s, 3, what="so that their children can be inspected while they serve")
    try:
        holders = []
        for k in require_children(s, "connected 3 clients, each echoed a line; then listed the server's children",
                                  "no child could be checked for a copy of the listening socket", kids_of):
            fds = [fd for fd, ino in common.socket_inodes(k.pid).items() if ino in listening]
            if fds:
                holders.append(f"{k.describe()} holds it as fd {fds[0]}")
        if holders:
            fail("connected 3 clients, each echoed a line; then read /proc/CHILD/fd of each child",
                 f"the listening socket (inode {', '.join(map(str, sorted(listening)))}) is held by children: "
                 + "; ".join(holders),
                 rule="the child closes its copy of the listening socket before it serves",
                 hint="in the child's branch, close(listenfd) first thing")
    finally:
        close_all(clients)


def check_accept_eintr(start: Start, kids_of: Children = live_children) -> None:
    s = start()
    saw_child = False
    for i in range(6):
        with Client(s.port) as c:
            expect_echo(s, c, random_line(20),
                        f"served clients one after another; after {i} of them had left (each ending a child, "
                        f"so SIGCHLD interrupted accept), client {i + 1} connected and sent a line",
                        rule="accept interrupted by a signal (EINTR) is simply tried again",
                        hint="when accept fails with errno == EINTR, loop back to accept instead of exiting")
            saw_child = saw_child or bool(kids_of(s.pid))
        time.sleep(0.1)  # let the child end and SIGCHLD arrive while the parent waits in accept
    if not s.alive():
        fail("served 6 clients one after another", state(s),
             rule="accept interrupted by a signal (EINTR) is simply tried again")
    if not saw_child:
        fail("served 6 clients one after another and listed the server's children while each was connected",
             "the server never had a child process, so no child ended and no SIGCHLD interrupted accept",
             rule=NO_CHILD_RULE, hint=NO_CHILD_HINT)


class ProcessChecks(NamedTuple):
    """The process model's five checks, as pytest test functions marked for one lab."""
    test_process_per_client: Callable[..., None]
    test_zombies: Callable[..., None]
    test_child_exit: Callable[..., None]
    test_listenfd_closed: Callable[..., None]
    test_accept_eintr: Callable[..., None]


def process_checks(lab: str, *, client_children: Children = live_children) -> ProcessChecks:
    """process-per-client, zombies, child-exit, listenfd-closed, accept-eintr, marked for `lab`
    (points and visibility from the catalogue)."""
    kids_of = client_children

    def test_process_per_client(server: Start) -> None:
        check_process_per_client(server, kids_of)

    def test_zombies(server: Start) -> None:
        check_zombies(server, kids_of)

    def test_child_exit(server: Start) -> None:
        check_child_exit(server, kids_of)

    def test_listenfd_closed(server: Start) -> None:
        check_listenfd_closed(server, kids_of)

    def test_accept_eintr(server: Start) -> None:
        check_accept_eintr(server, kids_of)

    return ProcessChecks(
        graded(lab, "process-per-client")(test_process_per_client), graded(lab, "zombies")(test_zombies),
        graded(lab, "child-exit")(test_child_exit), graded(lab, "listenfd-closed")(test_listenfd_closed),
        graded(lab, "accept-eintr")(test_accept_eintr))
