"""The watchdog: counts the processes (threads included) and the memory of a sandbox's
processes ten times a second, and kills them all when they pass the limits, recording why
(`Watchdog.violation`), so that feedback can say it."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ... import probes
from ...output import MiB
from .limits import Limits

WATCH_INTERVAL = 0.1


@dataclass
class Violation:
    """The watchdog killed the sandbox's processes: when, and why (for feedback)."""

    at: float  # time.monotonic()
    reason: str


class Watchdog:
    """Watches the live processes `find()` returns; `end_all()` kills them (never reaps: the
    watchdog's thread is not their owners')."""

    def __init__(self, limits: Limits, find: Callable[[], list[probes.Proc]], end_all: Callable[[], None]) -> None:
        self.limits = limits
        self._find = find
        self._end_all = end_all
        self.violations: list[Violation] = []
        self.peak_memory = 0  # the most resident memory seen, all processes together
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self) -> None:
        """Start watching (once; never again after stop())."""
        with self._lock:
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._loop, name="labgrade-watchdog", daemon=True)
                self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)

    def usage(self) -> tuple[int, int, list[int]]:
        """(processes and threads, resident bytes, pids) of the watched processes, read from /proc."""
        procs = [p for p in self._find() if p.state not in ("Z", "X")]
        return sum(p.threads for p in procs), sum(p.rss for p in procs), [p.pid for p in procs]

    def _loop(self) -> None:
        lim = self.limits
        while not self._stop.wait(WATCH_INTERVAL):
            try:
                tasks, rss, pids = self.usage()
            except OSError:
                continue
            self.peak_memory = max(self.peak_memory, rss)
            reason = ""
            if rss > lim.memory:
                reason = (f"its processes used {rss / MiB:.0f} MiB of memory, more than the limit of "
                          f"{lim.memory // MiB} MiB")
            elif tasks >= lim.nproc - 16:
                reason = (f"its processes reached the limit of {lim.nproc} processes and threads at once "
                          f"({len(pids)} processes, {tasks} with their threads): a fork bomb?")
            if reason:
                self.violations.append(Violation(time.monotonic(), reason))
                self._end_all()

    def violation(self, since: float) -> str | None:
        """Why the watchdog last killed the processes after `since` (monotonic), if it did."""
        for v in reversed(self.violations):
            if v.at >= since:
                return v.reason
        return None
