"""Bounded capture of a process's output: the head kept whole, the rest counted."""
from __future__ import annotations

import threading


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
            if data:
                self._tail += data
                if len(self._tail) > self.tail_limit:
                    del self._tail[: len(self._tail) - self.tail_limit]

    @property
    def truncated(self) -> bool:
        return self.total > len(self._head) + len(self._tail)

    def head(self) -> bytes:
        with self._lock:
            return bytes(self._head)

    def text(self, limit: int = 4000) -> str:
        """A readable excerpt for feedback: the start and, if cut, the end and the count."""
        with self._lock:
            head = bytes(self._head[:limit]).decode(errors="replace")
            if self.total <= limit:
                return head
            tail = bytes((self._head + self._tail)[-limit // 4 :]).decode(errors="replace")
        return f"{head}\n[... {self.total:,} bytes in all; cut here ...]\n{tail}"

    def lines(self) -> list[str]:
        """Complete lines of the kept head (a pty turns \\n into \\r\\n: both are accepted)."""
        return self.head().decode(errors="replace").replace("\r\n", "\n").split("\n")[:-1]
