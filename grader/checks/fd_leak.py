"""`fd-leak`: a connection's descriptor is released when its client is done, on every path out
(EOF, reset, a write that fails), in the first process and in the others a lab names (ipc's logger)."""
from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import NamedTuple

from .. import probes
from ..clients import Client, close_all, read_until_eof_many
from ..harness import Server
from ..verdict import fail
from .blocked import BLOCKED_FOR, Watch
from .common import PATIENCE, Start, fd_targets, served, state, wait_until


class Held(NamedTuple):
    """Another process of the server whose descriptors `fd-leak` compares too (a lab's `also`)."""
    pid: int
    who: str   # "the logger"
    rule: str
    hint: str
    settle: Callable[[], None] | None = None  # before each count: returns once it has done the work asked so far


def check_fd_leak(start: Start, also: Callable[[Server], Sequence[Held]] | None = None, *,
                  flood_reset: bool = False, how: str = "") -> None:
    """The first process's descriptors back to their count once 3 waves of clients have left; and those
    of each process `also` names (asked once the server has started), counted, settled, before the waves
    and after. flood_reset: the first wave has one more client, which sends lines without reading until
    the server takes no more (it is owed echo), then resets: the server's next write to it fails. `how`:
    how the server was started, for the feedback."""
    s = start()
    pid = s.pid
    base = fd_targets(pid)
    others = []
    for h in also(s) if also else []:
        if h.settle:
            h.settle()
        others.append((h, fd_targets(h.pid)))
    before_waves = {p.pid for p in probes.children(pid)}  # ipc's logger: not a client's

    def waves_children_gone() -> bool:
        return all(p.zombie or p.pid in before_waves for p in probes.children(pid))

    lingering = False
    unclosed: list[Client] = []  # of the clients that ended their input, those whose connection stayed open
    waves = (f"served 3 waves of 10 clients{how} (each left normally, by reset, or after closing its sending side)"
             + ("; in the first, one more client sent MiBs without reading its echo until the server took no "
                "more, then reset, so that the server's next write to it failed" if flood_reset else ""))
    for wave in range(3):
        if flood_reset and wave == 0:
            from .slow_reader import Flood  # it builds on this module

            flooder = Client(s.port)
            Flood().until_owed(s, flooder, limit=32 * 1024 * 1024)
            flooder.reset()
        clients = served(s, 10, what=f"a wave of clients, to see whether their descriptors are released{how}")
        ending = []
        for k, c in enumerate(clients):
            if k % 3 == 0:
                c.reset()          # some leave abruptly
            elif k % 3 == 1:
                c.shutdown_write()  # some end their input first, and wait for the server to close
                ending.append(c)
            else:
                c.close()
        if not unclosed:  # a server that left them open once is not waited for again
            ends = read_until_eof_many(ending, PATIENCE, judge=Watch(s))
            unclosed = [c for c, (_, closed) in zip(ending, ends, strict=True) if not closed]
        close_all(ending)
        # a process lab's children end before the next wave comes: a server whose accept dies of a child's
        # SIGCHLD (`accept-eintr`) then ends every time, not only when the signal finds it in accept
        # (children that outlive their clients, a bug of their own, are waited for once)
        if not lingering:
            lingering = not wait_until(waves_children_gone, PATIENCE, give_up=lambda: not s.alive())
    watch = Watch(s)
    released = wait_until(lambda: probes.fd_count(pid) <= len(base), PATIENCE, give_up=watch.quiet)
    if not s.alive():  # a dead server holds no descriptor: that is no proof of releasing them
        fail(waves, state(s), rule="the server releases a connection's descriptor when its client is done, and keeps "
             "serving", hint="make `robust-disconnect` pass first: a client's reset must not end the server")
    if not released:
        now = fd_targets(pid)
        extra = {fd: t for fd, t in now.items() if base.get(fd) != t}
        listing = ", ".join(f"fd {fd} -> {t}" for fd, t in sorted(extra.items())[:12])
        waited = (f"waited {PATIENCE:.0f} s" if watch.asleep_for() < BLOCKED_FOR else
                  f"waited {watch.asleep_for():.1f} s, until every process and thread of the server slept in a call "
                  f"that only a client can end ({watch.sleeping()}): nothing more would be released")
        left = (f"; {len(unclosed)} connections whose client had closed its sending side were not closed "
                f"({unclosed[0].error or f'waited {PATIENCE:.0f} s'}), so the waves after it did not wait for theirs"
                if unclosed else "")
        fail(f"{waves}{'; then' if flood_reset else ' and'} {waited}",
             f"the server (pid {pid}) had {len(base)} descriptors before and {len(now)} after: {listing}{left}",
             rule="the server releases a connection's descriptor when its client is done",
             hint="close the connected descriptor on every path out of a connection (EOF, errors, resets"
             + (", a write that fails" if flood_reset else "") + "); see them with `ls -l /proc/PID/fd`")
    for h, before in others:  # the first process released its own: no client is left to wait for
        if h.settle:
            h.settle()
        if wait_until(functools.partial(_at_most, h.pid, len(before)), PATIENCE, give_up=watch.quiet):
            continue
        now = fd_targets(h.pid)
        extra = {fd: t for fd, t in now.items() if before.get(fd) != t}
        kinds: dict[str, list[int]] = {}
        for fd, t in sorted(extra.items()):
            kinds.setdefault(t, []).append(fd)
        listing = "; ".join(f"{len(fds)} to {t} (fd {', '.join(map(str, fds[:6]))}{', ...' if len(fds) > 6 else ''})"
                            for t, fds in sorted(kinds.items(), key=lambda k: -len(k[1]))[:4])
        fail("served 3 waves of 10 clients (each left normally, by reset, or after closing its sending side) "
             f"and waited up to {PATIENCE:.0f} s", f"{h.who} (pid {h.pid}) had {len(before)} descriptors before the "
             f"waves and {len(now)} after: {listing}", rule=h.rule, hint=h.hint)


def _at_most(pid: int, n: int) -> bool:
    return probes.fd_count(pid) <= n
