"""The server under test: built with make under a time limit, started on a pty, drained,
seen ready from its listening socket, and torn down with everything it started."""
from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pexpect

from . import probes
from .errors import GradingEnvironmentError
from .output import BoundedOutput
from .sandbox import Sandbox, SubmissionTooLarge

BUILD_TIMEOUT = 60.0
BUILD_DISK_LIMIT = 256 << 20
READY_TIMEOUT = 5.0        # LABS.md promises 3 s; we wait longer so a loaded machine never fails a correct server
TSAN_READY_TIMEOUT = 15.0
TSAN_FLAGS = {"CFLAGS": "-g -O1 -fsanitize=thread", "LDFLAGS": "-fsanitize=thread"}


@dataclass
class BuildResult:
    ok: bool
    directory: Path
    output: str
    seconds: float
    problem: str = ""  # why it failed, in one sentence
    sandbox: Sandbox | None = None  # where it was built, and where its server runs

    @property
    def binary(self) -> Path:
        return self.directory / "server"


def build(source: Path, sandbox: Sandbox, name: str, *, make_vars: dict[str, str] | None = None,
          timeout: float = BUILD_TIMEOUT) -> BuildResult:
    """Copy `source` into the sandbox and run `make` there as the student uid."""
    t0 = time.monotonic()
    try:
        work = sandbox.workdir(name, source)
    except SubmissionTooLarge as e:
        return BuildResult(False, sandbox.root / name, "", 0.0, str(e), sandbox)
    argv = ["make", "--no-print-directory"] + [f"{k}={v}" for k, v in (make_vars or {}).items()]
    out = BoundedOutput(head=64 << 10, tail=8 << 10)
    try:
        proc = subprocess.Popen(argv, cwd=work, env=sandbox.env(work), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                preexec_fn=sandbox.preexec())
    except OSError as e:
        raise GradingEnvironmentError(f"cannot run make: {e}") from e
    assert proc.stdout is not None
    sandbox.spawned.add(proc.pid)
    reader = threading.Thread(target=_pump, args=(proc.stdout.fileno(), out), daemon=True)
    reader.start()
    try:
        problem = _wait_build(proc, work, timeout)
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        sandbox.kill_all()
        proc.wait()
        sandbox.spawned.discard(proc.pid)
        reader.join(2)
        proc.stdout.close()
    binary = work / "server"
    if not problem and not (binary.is_file() and os.access(binary, os.X_OK)):
        problem = "`make` succeeded but no executable `server` appeared in the lab directory"
    text = out.text(8000)
    if out.truncated:
        text += f"\n[build output cut: {out.total:,} bytes in all]"
    return BuildResult(not problem, work, text, time.monotonic() - t0, problem, sandbox)


def _wait_build(proc: subprocess.Popen[bytes], work: Path, timeout: float) -> str:
    """Wait for make; the reason it failed, or "" when it exited 0."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            rc = proc.wait(min(0.5, max(0.01, deadline - time.monotonic())))
            return "" if rc == 0 else f"`make` exited with status {rc}"
        except subprocess.TimeoutExpired:
            pass
        if time.monotonic() >= deadline:
            return f"the build did not finish within {timeout:.0f} s and was stopped"
        used = _disk_usage(work)
        if used > BUILD_DISK_LIMIT:
            return (f"the build wrote more than {BUILD_DISK_LIMIT >> 20} MiB into the lab directory "
                    f"({used >> 20} MiB) and was stopped")


def _disk_usage(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, f)).st_blocks * 512
    return total


def _pump(fd: int, sink: BoundedOutput) -> None:
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:
            return
        if not data:
            return
        sink.feed(data)


@dataclass
class Server:
    """One running `./server PORT` on a pty, its output drained continuously."""

    build: BuildResult
    sandbox: Sandbox
    port: int
    tsan: bool = False
    env_extra: dict[str, str] = field(default_factory=dict)
    output: BoundedOutput = field(default_factory=BoundedOutput)
    child: pexpect.spawn | None = None
    started_at: float = 0.0
    _drain: threading.Thread | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    @property
    def pid(self) -> int:
        assert self.child is not None
        return int(self.child.pid)

    def start(self) -> Server:
        work = self.build.directory
        try:
            self.child = pexpect.spawn(
                str(self.build.binary), [str(self.port)], cwd=str(work),
                env=self.sandbox.env(work, self.env_extra), echo=False, encoding=None,
                preexec_fn=self.sandbox.preexec(tsan=self.tsan, new_session=False),
                dimensions=(24, 200))
        except (pexpect.ExceptionPexpect, OSError) as e:
            raise GradingEnvironmentError(f"cannot start the server on a pty: {e}") from e
        self.started_at = time.monotonic()
        self.sandbox.spawned.add(self.pid)
        self._drain = threading.Thread(target=self._drain_loop, daemon=True)
        self._drain.start()
        return self

    def _drain_loop(self) -> None:
        assert self.child is not None
        fd = self.child.child_fd
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([fd], [], [], 0.05)
                if ready:
                    data = os.read(fd, 65536)
                    if not data:
                        return
                    self.output.feed(data)
            except (OSError, ValueError):
                return  # EIO: every process holding the pty has gone

    def wait_ready(self, timeout: float | None = None) -> bool:
        """True when a socket listens on our port; False if the server died or never listened."""
        timeout = timeout or (TSAN_READY_TIMEOUT if self.tsan else READY_TIMEOUT)
        deadline = self.started_at + timeout
        while time.monotonic() < deadline:
            if probes.listening_inodes(self.port):
                return True
            if not self.alive():
                return False
            time.sleep(0.01)
        return False

    def alive(self) -> bool:
        p = probes.proc(self.pid)
        return p is not None and not p.zombie

    def exit_description(self) -> str:
        """How the server ended, for feedback ('killed by SIGPIPE', 'exited with status 1')."""
        p = probes.proc(self.pid)
        if p is not None and not p.zombie:
            return "still running"
        assert self.child is not None
        with contextlib.suppress(Exception):
            self.child.wait()
        sig, code = self.child.signalstatus, self.child.exitstatus
        if sig is not None:
            return f"killed by {signal.Signals(sig).name}"
        return f"exited with status {code}"

    def type_line(self, text: str) -> None:
        """Type a line on the server's terminal (its standard input)."""
        assert self.child is not None
        self.child.send(text.encode() + b"\n")

    def type_eof(self) -> None:
        assert self.child is not None
        self.child.sendeof()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL, of the server and everything it started."""
        if self.child is None:
            return
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            deadline = time.monotonic() + 0.5
            while self.alive() and time.monotonic() < deadline:
                time.sleep(0.01)
        # this server and what it started; orphans that left its tree are swept by the sandbox
        for p in [*probes.descendants(self.pid), probes.proc(self.pid)]:
            if p is not None and not p.zombie:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(p.pid, signal.SIGKILL)
        self._stop.set()
        if self._drain is not None:
            self._drain.join(1)
        with contextlib.suppress(Exception):
            self.child.close(force=True)
        self.sandbox.spawned.discard(self.pid)
