"""Bounded capture of a process's output: the head kept whole, the end kept, the rest counted."""
from __future__ import annotations

import re
import threading

# Terminal control characters (escape sequences, bells, backspaces, ...) are shown, never obeyed:
# feedback is printed on terminals and rendered in web pages.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
MiB = 1 << 20  # bytes; the grader's limits are written in it


def size(n: int | float) -> str:
    """A byte count for people: '512 bytes', '64 KiB', '8 MiB', '3.2 GiB'."""
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            v = n / (1 << shift)
            return f"{v:.1f} {unit}" if v < 10 and v != int(v) else f"{v:.0f} {unit}"
    return f"{int(n)} bytes"


def printable(text: str) -> str:
    """text with its control characters (but newlines and tabs) written out: '\\x1b' for ESC,
    '\\x0d' for a carriage return that is not part of a line end."""
    text = text.replace("\r\n", "\n")
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


class BoundedOutput:
    """Keeps the first `head` bytes and the last `tail` bytes; counts everything."""

    def __init__(self, head: int = 8 << 20, tail: int = 64 << 10) -> None:
        self.head_limit, self.tail_limit = head, tail
        self._head = bytearray()
        self._tail = bytearray()
        self.total = 0
        self._lock = threading.Lock()

    def feed(self, data: bytes) -> None:
        with self._lock:
            self.total += len(data)
            room = self.head_limit - len(self._head)
            if room > 0:
                self._head += data[:room]
                data = data[room:]
            if not data:
                return
            if len(data) >= self.tail_limit:  # a flood: only its end is kept, nothing is copied twice
                self._tail[:] = data[-self.tail_limit :]
            else:
                self._tail += data
                if len(self._tail) > 2 * self.tail_limit:  # trim now and then, not on every read
                    del self._tail[: len(self._tail) - self.tail_limit]

    @property
    def head_full(self) -> bool:
        return len(self._head) >= self.head_limit

    @property
    def truncated(self) -> bool:
        return self.total > len(self._head) + min(len(self._tail), self.tail_limit)

    def head(self) -> bytes:
        with self._lock:
            return bytes(self._head)

    def cut_note(self) -> str:
        """'the output was cut after 8 MiB of 3.2 GiB', or '' when all of it was kept."""
        if not self.truncated:
            return ""
        return f"the output was cut after {size(len(self._head))} of {size(self.total)}"

    def text(self, limit: int = 4000) -> str:
        """A readable excerpt for feedback: the start and, if more came, where it was cut, how much
        there was in all, and the end. Control characters are written out, never passed on."""
        with self._lock:
            kept = len(self._head) + min(len(self._tail), self.tail_limit)
            head = bytes(self._head[:limit]).decode(errors="replace")
            if self.total <= limit:
                return printable(head)
            tail = bytes((self._head + self._tail[-self.tail_limit :])[-(limit // 4) :]).decode(errors="replace")
            total = self.total
        if total > kept:
            note = f"[... the output was cut after {size(len(self._head))} of {size(total)}; its end: ...]"
        else:
            note = f"[... {size(total)} in all; its end: ...]"
        return printable(f"{head}\n{note}\n{tail}")

    def lines(self) -> list[str]:
        """Complete lines of the kept head (a pty turns \\n into \\r\\n: both are accepted)."""
        return self.head().decode(errors="replace").replace("\r\n", "\n").split("\n")[:-1]
