"""The select lab's slow reader, read back at last: a client that floods the server without
reading (`Flood`), whether the server keeps a partial line for a client that reads
(`keeps_partial_lines`), and the reading back of every byte once that client reads
(`expect_read_back`)."""
from __future__ import annotations

import errno
import select
import socket
import time
from pathlib import Path

from ..clients import Client, random_line, random_lines, show
from ..harness import Server
from ..output import MiB
from ..verdict import fail
from . import common
from .blocked import Watch
from .common import PATIENCE, state


def server_rx_queue(port: int, client: Client) -> int | None:
    """Bytes the server has not yet read from this client's connection (its socket's receive
    queue, /proc/net/tcp); None when the connection is not there."""
    mine = client.local_port
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            f = line.split()
            if int(f[1].rsplit(":", 1)[1], 16) == port and int(f[2].rsplit(":", 1)[1], 16) == mine:
                return int(f[4].split(":")[1], 16)
    return None


def keeps_partial_lines(s: Server, c: Client) -> bool:
    """Send a line in two parts, the second once the server has read the first: does it come back
    whole? A server that throws away a partial line loses bytes whatever its clients do."""
    line = random_line(40)
    c.send(line[:25])
    common.wait_until(lambda: server_rx_queue(s.port, c) == 0, 1.0, step=0.01)
    time.sleep(0.01)
    c.send(line[25:])
    return c.recv_exactly(len(line), PATIENCE) == line


class Flood:
    """A stream of random lines, one chunk repeated, so that what was sent needs no copy to be checked."""

    def __init__(self, chunk: bytes = b"") -> None:
        self.chunk = chunk or b"".join(random_lines(2000, 60, 130))  # lines, the last one whole
        self.sent = 0

    def send(self, sock: socket.socket, *, limit: int, seconds: float, stall: float) -> int:
        """Send as fast as the server takes it, without ever reading; stop when it pushes back for
        `stall` s. Returns the bytes sent so far."""
        sock.setblocking(False)
        n = len(self.chunk)
        last_progress = time.monotonic()
        deadline = last_progress + seconds
        while self.sent < limit and time.monotonic() < deadline:
            try:
                self.sent += sock.send(self.chunk[self.sent % n:])
                last_progress = time.monotonic()
            except BlockingIOError:
                if time.monotonic() - last_progress > stall:
                    break
                time.sleep(0.005)
            except OSError as e:
                if e.errno in (errno.EPIPE, errno.ECONNRESET):
                    break
                raise
        sock.setblocking(True)
        return self.sent

    def until_owed(self, s: Server, c: Client, *, limit: int, stall: float = 0.2, seconds: float = 3.0) -> int:
        """Send on `c` (as `send`) until the server is seen owing it echo it cannot write
        (blocked.Watch.owes) or `seconds` pass: a server paused by a loaded machine also stops taking
        for a moment, and is not yet blocked. Returns the bytes sent so far."""
        if c.sock is None:
            return self.sent
        watch, until, before = Watch(s), time.monotonic() + seconds, -1
        while True:
            sent = self.send(c.sock, limit=limit, seconds=max(0.1, until - time.monotonic()), stall=stall)
            if watch.owes(c.local_port) is not False or time.monotonic() >= until:
                return sent
            if sent == before:  # nothing taken (or the limit reached): no need to look again at once
                time.sleep(0.05)
            before = sent

    def rest_of_line(self) -> bytes:
        """What completes the last line sent (the flood may have stopped in the middle of one)."""
        at = self.sent % len(self.chunk)
        return self.chunk[at:self.chunk.index(b"\n", at) + 1] if at else b""

    def expected(self, at: int, size: int) -> bytes:
        """Bytes at..at+size of the stream."""
        n = len(self.chunk)
        out = bytearray()
        while len(out) < size:
            i = (at + len(out)) % n
            out += self.chunk[i:i + size - len(out)]
        return bytes(out)


READ_BACK_STALL = PATIENCE  # nothing for this long while echo is owed: the rest is lost
READ_BACK_CAP = 5.0         # a correct but slow server still sending when this runs out keeps its points


def expect_read_back(s: Server, c: Client, stream: Flood) -> None:
    """The slow reader completes its last line, ends its input and reads at last: every byte it
    sent must come back, exact and in order. (Reaching the end of input is needed: a server may
    hold lines it has read until its socket is readable again.) A server whose echo is still
    arriving, correct so far, when READ_BACK_CAP runs out is not failed."""
    sock = c.sock
    assert sock is not None
    rest = stream.rest_of_line()
    got = 0
    t0 = last = time.monotonic()
    why = ""
    if not rest:
        c.shutdown_write()  # the flood ended at a line's end
    sock.setblocking(False)
    try:
        while got < stream.sent + len(rest):
            now = time.monotonic()
            if now - t0 > READ_BACK_CAP:
                return
            if now - last > READ_BACK_STALL:
                why = f"nothing more came for {READ_BACK_STALL:.0f} s"
                break
            if rest:
                try:
                    k = sock.send(rest)
                    stream.sent, rest = stream.sent + k, rest[k:]
                    if not rest:
                        c.shutdown_write()
                except BlockingIOError:
                    pass
                except OSError as e:
                    why = f"then sending the rest of its last line failed: {e.strerror or e}"
                    break
            select.select([sock], [sock] if rest else [], [], 0.1)
            try:
                data = sock.recv(1 << 20)
            except BlockingIOError:
                continue
            except OSError as e:
                why = f"then receiving failed: {e.strerror or e}"
                break
            if not data:
                why = "then the server closed the connection"
                break
            want = stream.expected(got, len(data))
            if data != want:
                k = next(i for i in range(len(data)) if data[i] != want[i])
                why = (f"byte {got + k} differs: expected {show(want[k:k + 40])}, received "
                       f"{show(data[k:k + 40])} (bytes lost, reordered or altered)")
                got += k
                break
            got += len(data)
            last = time.monotonic()
    finally:
        sock.setblocking(True)
    owed = stream.sent + len(rest)
    if got < owed:
        fail(f"a client sent {owed / MiB:.1f} MiB of lines without reading its echo (a slow reader); once a "
             "second client had been served, it ended its input (shutdown(SHUT_WR)) and read its echo at last",
             f"the slow reader received {got / MiB:.1f} MiB of the {owed / MiB:.1f} MiB it sent, correct up to "
             f"there; {why}; {state(s)}",
             rule="every byte a client sends comes back to that client, unchanged and in order: a slow "
                  "reader too, once it reads",
             hint="a write to a non-blocking socket may take only part of the data, or none (EAGAIN): keep "
                  "the rest in the client's output buffer and send it when select reports the socket "
                  "writable; to bound memory, stop reading that client while its buffer is full, never "
                  "throw echo away")
