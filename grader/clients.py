"""Clients that drive a server: one at a time or hundreds at once, polite or hostile.

Nothing here raises on what a server does (resets, silence, garbage): results are
returned and judged by the checks, so a hostile server cannot crash the grader.
"""
from __future__ import annotations

import contextlib
import errno
import os
import random
import selectors
import socket
import struct
import time
from typing import Protocol

HOST = "127.0.0.1"


# Every payload of a check comes from here, seeded per check from the grading's seed (the plugin
# calls seed_payloads before each check): a grading is replayed by its seed (`--seed`), and a
# seed drawn at random for each grading keeps answers from being hard-coded. Clients that run in
# threads draw in the order the threads run, so a replay sends the same bytes, not always to the
# same client.
_rng = random.Random()


def seed_payloads(seed: str) -> None:
    _rng.seed(seed)


def rng() -> random.Random:
    """The payloads' generator: for orderings and choices a check makes at random."""
    return _rng


def random_line(length: int) -> bytes:
    """A random printable line of exactly `length` bytes, '\\n' included (length >= 1)."""
    body = _rng.randbytes(length).hex()[: length - 1].encode()
    return body + b"\n"


def random_lines(count: int, lo: int = 8, hi: int = 120) -> list[bytes]:
    """count random lines of lo..hi bytes each."""
    return [random_line(_rng.randint(lo, hi)) for _ in range(count)]


def show(data: bytes, limit: int = 60) -> str:
    """A short printable rendering of bytes for feedback."""
    text = repr(data[:limit])
    return text + (f"... ({len(data)} bytes)" if len(data) > limit else "")


def compare(expected: bytes, got: bytes) -> str:
    """What differs between an expected and a received byte stream, in one sentence."""
    if got == expected:
        return "identical"
    n = next((i for i, (a, b) in enumerate(zip(expected, got, strict=False)) if a != b), min(len(expected), len(got)))
    if not got:
        return f"nothing came back (expected {len(expected)} bytes: {show(expected, 40)})"
    if n == len(got) < len(expected):
        return (f"received {len(got)} of {len(expected)} bytes, all correct so far; the rest never came "
                f"(next expected: {show(expected[n:n + 40])})")
    if n == len(expected) < len(got):
        return f"received {len(got)} bytes for {len(expected)} sent: extra bytes {show(got[n:n + 40])}"
    return (f"first difference at byte {n}: expected {show(expected[n:n + 40])}, "
            f"received {show(got[n:n + 40])}")


class Client:
    """One TCP connection to the server."""

    def __init__(self, port: int, *, connect_timeout: float = 3.0) -> None:
        self.port = port
        self.sock: socket.socket | None = None
        self.error = ""
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.settimeout(connect_timeout)
        try:
            s.connect((HOST, port))
        except OSError as e:
            self.error = f"connect failed: {e.strerror or e}"
            s.close()
            return
        self.sock = s

    @property
    def connected(self) -> bool:
        return self.sock is not None

    @property
    def local_port(self) -> int:
        return self.sock.getsockname()[1] if self.sock else 0

    def send(self, data: bytes, timeout: float = 5.0) -> bool:
        if self.sock is None:
            return False
        self.sock.settimeout(timeout)
        try:
            self.sock.sendall(data)
            return True
        except OSError as e:
            self.error = f"send failed: {e.strerror or e}"
            return False

    def send_bytewise(self, data: bytes, gap: float = 0.002) -> bool:
        """One byte per segment (TCP_NODELAY and a pause between bytes)."""
        for i in range(len(data)):
            if not self.send(data[i : i + 1]):
                return False
            time.sleep(gap)
        return True

    def recv_exactly(self, n: int, timeout: float) -> bytes:
        """Up to n bytes: all of them, or what came before the deadline, EOF or an error."""
        if self.sock is None:
            return b""
        got = bytearray()
        deadline = time.monotonic() + timeout
        while len(got) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(min(n - len(got), 1 << 20))
            except TimeoutError:
                break
            except OSError as e:
                self.error = f"receive failed: {e.strerror or e}"
                break
            if not chunk:
                self.error = "the server closed the connection"
                break
            got += chunk
        return bytes(got)

    def echo(self, data: bytes, timeout: float = 2.0) -> bytes:
        """Send data, return what came back within timeout (as many bytes as were sent, at most)."""
        if not self.send(data):
            return b""
        return self.recv_exactly(len(data), timeout)

    def read_until_eof(self, timeout: float) -> tuple[bytes, bool]:
        """Everything until the server closes; (data, True) on EOF, (data, False) on timeout/error."""
        if self.sock is None:
            return b"", False
        got = bytearray()
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return bytes(got), False
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                return bytes(got), False
            except OSError as e:
                self.error = f"receive failed: {e.strerror or e}"
                return bytes(got), e.errno == errno.ECONNRESET
            if not chunk:
                return bytes(got), True
            got += chunk

    def shutdown_write(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_WR)

    def reset(self) -> None:
        """Abort the connection: close with SO_LINGER 0 sends a RST, not a FIN."""
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close()

    def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
            self.sock = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect_many(port: int, n: int, timeout: float = 10.0, judge: Judge | None = None) -> list[Client]:
    """n connections opened at once (non-blocking connects, then waited for together); with a
    `judge`, the wait ends as soon as it proves the server accepts no more."""
    sel = selectors.DefaultSelector()
    socks: list[socket.socket | None] = []
    errors: dict[int, str] = {}
    for i in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setblocking(False)
        rc = s.connect_ex((HOST, port))
        if rc not in (0, errno.EINPROGRESS):
            errors[i] = os.strerror(rc)
            s.close()
            socks.append(None)
            continue
        socks.append(s)
        sel.register(s, selectors.EVENT_WRITE, i)
    pending = len(sel.get_map())
    deadline = time.monotonic() + timeout
    late = "connect did not complete in time"
    while pending and time.monotonic() < deadline:
        step = deadline - time.monotonic() if judge is None else min(0.05, deadline - time.monotonic())
        for key, _ in sel.select(max(0.0, step)):
            s = key.fileobj  # type: ignore[assignment]  # we registered sockets only
            err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                errors[key.data] = os.strerror(err)
            sel.unregister(s)
            pending -= 1
        why = judge.never_accepting() if judge is not None and pending else None
        if why:
            late = f"connect did not complete, and never will: {why}"
            break
    for key in list(sel.get_map().values()):
        errors[key.data] = late
        sel.unregister(key.fileobj)
    sel.close()
    clients = []
    for i, sk in enumerate(socks):
        c = Client.__new__(Client)
        c.port, c.error = port, errors.get(i, "")
        if sk is not None and i not in errors:
            sk.setblocking(True)
            c.sock = sk
        else:
            c.sock = None
            if sk is not None:
                sk.close()
        clients.append(c)
    return clients


class Judge(Protocol):
    """Proof, during a wait, that the server will never answer some clients (checks.blocked.Watch)."""

    def owed(self, pending: dict[int, tuple[int, int]], /) -> dict[int, str]:
        """Of the clients waited for (index -> (local port, bytes received so far)), those the server
        will never answer, each with why; called only once every byte has been sent."""
        ...

    def never_accepting(self) -> str | None:
        """Why the server will accept no more connections until a client acts, or None (no proof)."""
        ...


def echo_many(clients: list[Client], payloads: list[bytes], timeout: float, *, stall: float | None = None,
              judge: Judge | None = None) -> list[bytes]:
    """Send payloads[i] on clients[i], all at once; return what each received before the deadline
    (at most len(payloads[i]) bytes). Clients that are not connected get b''. It stops early when
    nothing has moved (no byte sent or received) for `stall` seconds once all was sent, and gives
    up on the clients that `judge` proves will never be answered; either way it says why in the
    client's `error`."""
    sel = selectors.DefaultSelector()
    out = [bytearray() for _ in clients]
    sent = [0] * len(clients)
    for i, c in enumerate(clients):
        if c.sock is not None and payloads[i]:
            c.sock.setblocking(False)
            sel.register(c.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, i)
    deadline = time.monotonic() + timeout
    moved = time.monotonic()
    step = 0.05 if judge is not None else 0.2
    while sel.get_map() and time.monotonic() < deadline:
        for key, ev in sel.select(max(0.0, min(step, deadline - time.monotonic()))):
            i, s = key.data, clients[key.data].sock
            assert s is not None
            try:
                if ev & selectors.EVENT_WRITE and sent[i] < len(payloads[i]):
                    sent[i] += s.send(payloads[i][sent[i] : sent[i] + 65536])
                    moved = time.monotonic()
                    if sent[i] == len(payloads[i]):
                        sel.modify(s, selectors.EVENT_READ, i)
                if ev & selectors.EVENT_READ:
                    chunk = s.recv(65536)
                    if not chunk:
                        clients[i].error = "the server closed the connection"
                        sel.unregister(s)
                        continue
                    out[i] += chunk
                    moved = time.monotonic()
            except BlockingIOError:
                continue
            except OSError as e:
                clients[i].error = f"{e.strerror or e}"
                sel.unregister(s)
                continue
            if len(out[i]) >= len(payloads[i]):
                sel.unregister(s)
        waiting = {k.data: k.fileobj for k in sel.get_map().values()}
        if not waiting or any(sent[i] < len(payloads[i]) for i in waiting):
            continue  # the server may be waiting for what is still to be sent
        if stall is not None and time.monotonic() - moved > stall:
            for i, sk in waiting.items():
                clients[i].error = f"nothing came back for {stall:.0f} s: the server stopped answering"
                sel.unregister(sk)
            break
        if judge is not None:
            ports = {i: (clients[i].local_port, len(out[i])) for i in waiting}
            for i, why in judge.owed(ports).items():
                clients[i].error = why
                sel.unregister(waiting[i])
    sel.close()
    for c in clients:
        if c.sock is not None:
            c.sock.setblocking(True)
    return [bytes(o) for o in out]


def read_until_eof_many(clients: list[Client], timeout: float, *,
                        judge: Judge | None = None) -> list[tuple[bytes, bool]]:
    """Client.read_until_eof on every client at once: (data, True) for each that saw the server close
    (or reset) the connection before the deadline, (data, False) for the others; `judge` as in
    echo_many (a client is owed the close)."""
    sel = selectors.DefaultSelector()
    out = [bytearray() for _ in clients]
    closed = [False] * len(clients)
    for i, c in enumerate(clients):
        if c.sock is not None:
            c.sock.setblocking(False)
            sel.register(c.sock, selectors.EVENT_READ, i)
    deadline = time.monotonic() + timeout
    step = 0.05 if judge is not None else 0.2
    while sel.get_map() and time.monotonic() < deadline:
        for key, _ in sel.select(max(0.0, min(step, deadline - time.monotonic()))):
            i, s = key.data, clients[key.data].sock
            assert s is not None
            try:
                chunk = s.recv(65536)
            except BlockingIOError:
                continue
            except OSError as e:
                clients[i].error = f"receive failed: {e.strerror or e}"
                closed[i] = e.errno == errno.ECONNRESET
                sel.unregister(s)
                continue
            if chunk:
                out[i] += chunk
            else:
                closed[i] = True
                sel.unregister(s)
        if judge is not None and sel.get_map():
            waiting = {k.data: k.fileobj for k in sel.get_map().values()}
            ports = {i: (clients[i].local_port, len(out[i])) for i in waiting}
            for i, why in judge.owed(ports).items():
                clients[i].error = why
                sel.unregister(waiting[i])
    sel.close()
    for c in clients:
        if c.sock is not None:
            c.sock.setblocking(True)
    return [(bytes(o), cl) for o, cl in zip(out, closed, strict=True)]


def close_all(clients: list[Client]) -> None:
    for c in clients:
        c.close()
