"""One way to end a child (grader.processes.end_process) and one way to close a grading
(GradingSession.close): whatever fails on the way, nothing is left running and no error is hidden."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from grader import probes, processes, run
from grader.session import GradingSession

STUBBORN = "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); " \
           "signal.signal(signal.SIGINT, signal.SIG_IGN); print('up', flush=True); time.sleep(60)"


def test_a_child_that_stops_when_asked_is_not_killed() -> None:
    p = subprocess.Popen([sys.executable, "-c", "import time; print('hi', flush=True); time.sleep(60)"],
                         stdout=subprocess.PIPE)
    assert p.stdout is not None and p.stdout.readline() == b"hi\n"
    out, err = processes.end_process(p, grace=5)
    assert p.returncode == -signal.SIGTERM and out == b"" and err is None


def test_a_child_that_ignores_the_first_signal_is_killed_after_the_grace_and_its_output_kept() -> None:
    p = subprocess.Popen([sys.executable, "-c", STUBBORN], stdout=subprocess.PIPE, text=True)
    with pytest.raises(subprocess.TimeoutExpired):
        p.communicate(timeout=1.0)  # its output so far is kept by communicate: end_process returns it
    t0 = time.monotonic()
    out, _ = processes.end_process(p, first=signal.SIGINT, grace=0.5)
    assert p.returncode == -signal.SIGKILL and out == "up\n"
    assert time.monotonic() - t0 < 5


def test_group_reaches_the_grandchildren() -> None:
    p = subprocess.Popen(["sh", "-c", "sleep 60 & sleep 60 & wait"], start_new_session=True)
    children = Path(f"/proc/{p.pid}/task/{p.pid}/children")
    deadline = time.monotonic() + 10  # a loaded machine may take its time to start both
    while len(children.read_text().split()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    kids = [int(x) for x in children.read_text().split()]
    assert len(kids) == 2
    processes.end_process(p, first=signal.SIGKILL, group=True)
    assert p.returncode == -signal.SIGKILL

    def dead(k: int) -> bool:  # killed with it, and reparented to pytest (a subreaper) to be reaped, or gone
        q = probes.proc(k)
        return q is None or (q.zombie and q.ppid == os.getpid())

    deadline = time.monotonic() + 5  # SIGKILL is sent; a loaded machine may not have run the exit yet
    while not all(dead(k) for k in kids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(dead(k) for k in kids), [probes.proc(k) for k in kids]
    for k in kids:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(k, 0)


def test_the_exception_path_of_a_local_grading_kills_pytest_and_raises_the_original(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """An interruption while the checks run: the checks' process is asked to stop (SIGINT), killed
    when it does not within the grace, and the caller sees its own exception, not a cleanup error."""
    started: list[subprocess.Popen[bytes]] = []

    class Interrupted(subprocess.Popen[bytes]):
        def __init__(self, argv: list[str], **kw: object) -> None:
            super().__init__([sys.executable, "-c", STUBBORN], **kw)  # type: ignore[call-overload]
            started.append(self)

        def communicate(self, input: bytes | None = None, timeout: float | None = None) -> tuple[bytes, bytes]:
            if timeout is not None and timeout > 100:  # the grading's own wait: interrupted
                time.sleep(0.3)
                raise KeyboardInterrupt("the original")
            return super().communicate(input, timeout)

    monkeypatch.setattr(run.subprocess, "Popen", Interrupted)
    monkeypatch.setattr(run, "STOP_GRACE", 0.5)
    sub = tmp_path / "fork"
    sub.mkdir()
    with pytest.raises(KeyboardInterrupt, match="the original"):
        run.grade(lab="fork", submission=sub)
    assert len(started) == 1
    assert started[0].returncode == -signal.SIGKILL


class _Sandbox:
    def __init__(self, name: str, log: list[str], fails: bool = False) -> None:
        self.name, self.log, self.fails = name, log, fails

    def kill_all(self) -> list[object]:
        self.log.append(f"kill {self.name}")
        return []

    def close(self) -> None:
        self.log.append(f"close {self.name}")
        if self.fails:
            raise RuntimeError(f"{self.name} would not close")


def test_a_failing_close_leaves_no_sandbox_open() -> None:
    log: list[str] = []
    s = GradingSession.__new__(GradingSession)  # no real sandbox: only the order of cleanup is tested
    s.servers = []
    s.sandbox = _Sandbox("submission", log, fails=True)  # type: ignore[assignment]
    s._ref_sandbox = _Sandbox("reference", log, fails=True)  # type: ignore[assignment]
    with pytest.raises(RuntimeError, match="reference would not close") as e, s:
        pass
    assert log == ["kill submission", "kill reference", "close submission", "close reference"]
    assert "submission would not close" in str(e.value.__context__)  # the first failure is not lost
