"""The pool lab's client side: clients that hold workers busy, fill the buffer, reset while
their echo is written, and read back in the order they are served (grader/checks/test_pool.py)."""
from __future__ import annotations

import selectors
import time
from collections.abc import Callable

from .. import probes
from ..clients import Client, random_line
from ..harness import Server
from ..output import MiB
from .common import PATIENCE, wait_until
from .slow_reader import Flood


def settled(read: Callable[[], int], timeout: float = 2.0, quiet: float = 0.2) -> int:
    """`read()` once it has not moved for `quiet` seconds (or at `timeout`)."""
    deadline = time.monotonic() + timeout
    last, since = read(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.02)
        now = read()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
    return last


def send_and_end(c: Client, data: bytes) -> None:
    """Send data and close the sending side: the worker that takes this client echoes and is done."""
    c.send(data)
    c.shutdown_write()


def reset_while_written(s: Server, c: Client, quiet: float = 0.2, limit: int = 256 * MiB) -> int:
    """Send lines on `c` without reading until a send makes no progress for `quiet` seconds (`limit` bytes
    at most), then reset: the worker, whose echoes fill both sides' buffers, is then blocked writing one,
    and its write fails whatever it does next (a reset met by a read instead is the other way to leave).
    Returns the bytes sent."""
    if c.sock is None:
        return 0
    # its worker is then seen blocked in the echo's write
    sent = Flood(random_line(1024) * 64).until_owed(s, c, limit=limit, stall=quiet)
    c.reset()
    return sent


def read_all(clients: list[Client], want: list[bytes], timeout: float,
             stall: float = PATIENCE) -> tuple[list[bytes], list[int]]:
    """Read each client until its whole echo (`want[i]`) came or the server closed it, for `timeout`
    at most, and no longer than `stall` after the last byte came (a server that stopped serving is
    not waited for). Returns what each received, and the clients (indexes) in the order their first
    byte came."""
    sel = selectors.DefaultSelector()
    got = [bytearray() for _ in clients]
    order: list[int] = []
    for i, c in enumerate(clients):
        if c.sock is not None:
            c.sock.setblocking(False)
            sel.register(c.sock, selectors.EVENT_READ, i)
    deadline = time.monotonic() + timeout
    moved = time.monotonic()
    while sel.get_map() and time.monotonic() < min(deadline, moved + stall):
        for key, _ in sel.select(max(0.0, min(0.2, deadline - time.monotonic()))):
            moved = time.monotonic()
            i = key.data
            sock = clients[i].sock
            assert sock is not None
            try:
                chunk = sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError as e:
                clients[i].error = f"receive failed: {e.strerror or e}"
                chunk = b""
            if chunk and not got[i]:
                order.append(i)
            got[i] += chunk
            if not chunk or len(got[i]) >= len(want[i]):
                sel.unregister(sock)
    sel.close()
    return [bytes(g) for g in got], order


def accepted(s: Server, fds: int, deadline: float) -> None:
    """Wait (until `deadline` at most) for the server to hold `fds` descriptors."""
    wait_until(lambda: probes.fd_count(s.pid) >= fds, max(0.0, deadline - time.monotonic()), 0.005)


def unserved(lines: list[bytes], got: list[bytes]) -> list[int]:
    return [i for i in range(len(lines)) if got[i] != lines[i]]


def numbers(idx: list[int]) -> str:
    shown = ", ".join(str(i + 1) for i in idx[:12])
    return shown + (f" (and {len(idx) - 12} more)" if len(idx) > 12 else "")


def next_echoed(clients: list[Client], pending: list[int], want: list[bytes], timeout: float) -> list[int]:
    """Read the `pending` clients until one of them has its whole echo (`want[i]`); the ones that
    have it (one, unless several were served at once), or none after `timeout`."""
    sel = selectors.DefaultSelector()
    got = {i: bytearray() for i in pending}
    for i in pending:
        sock = clients[i].sock
        if sock is not None:
            sock.setblocking(False)
            sel.register(sock, selectors.EVENT_READ, i)
    done: list[int] = []
    deadline = time.monotonic() + timeout
    while not done and sel.get_map() and time.monotonic() < deadline:
        for key, _ in sel.select(max(0.0, min(0.2, deadline - time.monotonic()))):
            i = key.data
            try:
                chunk = key.fileobj.recv(65536)  # type: ignore[union-attr]  # we registered sockets only
            except BlockingIOError:
                continue
            except OSError:
                chunk = b""
            got[i] += chunk
            if not chunk:
                sel.unregister(key.fileobj)
            elif len(got[i]) >= len(want[i]):
                done.append(i)
    sel.close()
    return done


