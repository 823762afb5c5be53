"""The server under test: built with make under a time limit, started on a pty, drained,
seen ready from its listening socket, and torn down with everything it started."""
from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import pexpect

from . import exits, probes
from .errors import GradingEnvironmentError, SubmissionTooLarge
from .isolation.local import Sandbox, cgroup_oom_kills, end_processes
from .output import BoundedOutput, MiB, size

BUILD_TIMEOUT = 30.0  # a lab builds in 1-3 s (TSan included), 10x that on a loaded machine
BUILD_DISK_LIMIT = 256 * MiB
BUILD_FILE_LIMIT = 20000   # files a build may create in the lab directory (each costs the disk check a stat)
READY_TIMEOUT = 5.0        # LABS.md promises 3 s; we wait longer so a loaded machine never fails a correct server
SANITIZED_READY_TIMEOUT = 15.0
TSAN_FLAGS = {"CFLAGS": "-g -O1 -fsanitize=thread", "LDFLAGS": "-fsanitize=thread"}
# AddressSanitizer and UndefinedBehaviorSanitizer; uninitialised stack variables hold a pattern
# (0xFE...), never the zero a lucky stack gives, so a read of one goes wrong the same way every time
ASAN_FLAGS = {"CFLAGS": "-g -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -ftrivial-auto-var-init=pattern",
              "LDFLAGS": "-fsanitize=address,undefined"}


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
    stopped = sandbox.watchdog.violation(t0)
    if stopped:  # the watchdog killed the build: that is why make ended
        problem = f"the build was stopped by the grader: {stopped}"
    if problem.startswith("the build wrote more than") or problem.startswith("the build created more than"):
        shutil.rmtree(work, ignore_errors=True)  # give the space back now: nothing of it will run
    binary = work / "server"
    if not problem and not (binary.is_file() and os.access(binary, os.X_OK)):
        problem = "`make` succeeded but no executable `server` appeared in the lab directory"
    return BuildResult(not problem, work, out.text(8000), time.monotonic() - t0, problem, sandbox)


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
        used, files = _disk_usage(work)
        if used > BUILD_DISK_LIMIT:
            return (f"the build wrote more than {BUILD_DISK_LIMIT // MiB} MiB into the lab directory "
                    f"({size(used)}) and was stopped")
        if files > BUILD_FILE_LIMIT:
            return f"the build created more than {BUILD_FILE_LIMIT} files in the lab directory and was stopped"


def _disk_usage(path: Path) -> tuple[int, int]:
    """(bytes of disk, number of entries) under path; stops counting past the limits."""
    total = count = 0
    for dirpath, dirs, files in os.walk(path):
        for f in files + dirs:
            count += 1
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, f)).st_blocks * 512
        if total > BUILD_DISK_LIMIT or count > BUILD_FILE_LIMIT:
            break
    return total, count


def _pump(fd: int, sink: BoundedOutput) -> None:
    while True:
        try:
            data = os.read(fd, 1 << 20)
        except OSError:
            return
        if not data:
            return
        sink.feed(data)


@dataclass
class Server:
    """One running `./server PORT [ARGS...]` on a pty, its output drained continuously."""

    build: BuildResult
    sandbox: Sandbox
    port: int
    sanitized: bool = False  # a ThreadSanitizer or AddressSanitizer build: no RLIMIT_AS, more time to start
    args: tuple[str, ...] = ()  # after PORT (lab `pool`: WORKERS)
    env_extra: dict[str, str] = field(default_factory=dict)
    output: BoundedOutput = field(default_factory=BoundedOutput)
    child: pexpect.spawn | None = None
    started_at: float = 0.0
    _drain: threading.Thread | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _oom_kills: int | None = None  # the cgroup's OOM-kill count when the server started
    _stopping: bool = False        # the grader is ending it: SIGTERM/SIGKILL from here on are ours

    @property
    def pid(self) -> int:
        assert self.child is not None
        return int(self.child.pid)

    def __enter__(self) -> Server:
        """`with Server(...) as s:` starts it, and stops it on the way out; a start that fails
        midway stops what it started."""
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> Server:
        work = self.build.directory
        self._oom_kills = cgroup_oom_kills()
        self.sandbox.watchdog.peak_memory = 0
        try:
            self.child = pexpect.spawn(
                str(self.build.binary), [str(self.port), *self.args], cwd=str(work),
                env=self.sandbox.env(work, self.env_extra), echo=False, encoding=None,
                preexec_fn=self.sandbox.preexec(sanitized=self.sanitized, new_session=False),
                dimensions=(24, 200))
        except (pexpect.ExceptionPexpect, OSError) as e:
            raise GradingEnvironmentError(f"cannot start the server on a pty: {e}") from e
        self.started_at = time.monotonic()
        self.sandbox.spawned.add(self.pid)
        self._drain = threading.Thread(target=self._drain_loop, daemon=True)
        self._drain.start()
        return self

    def _drain_loop(self) -> None:
        """Read the terminal all the time, so printing never blocks the server. Past the kept
        head, a flood is read in large gulps: a short pause lets the pty's buffer fill, which
        costs the grader little CPU and still lets a flooding server write tens of MB/s."""
        assert self.child is not None
        fd = self.child.child_fd
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([fd], [], [], 0.05)
                if ready:
                    data = os.read(fd, 1 << 20)
                    if not data:
                        return
                    self.output.feed(data)
            except (OSError, ValueError):
                return  # EIO: every process holding the pty has gone

    def wait_ready(self, timeout: float | None = None) -> bool:
        """True when a socket listens on our port; False if the server died or never listened."""
        timeout = timeout or (SANITIZED_READY_TIMEOUT if self.sanitized else READY_TIMEOUT)
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
        if p is not None and not p.zombie and self.sandbox.watchdog.violation(self.started_at):
            # the watchdog has killed it: a process with a lot of memory takes a moment to die
            deadline = time.monotonic() + 1.0
            while p is not None and not p.zombie and time.monotonic() < deadline:
                time.sleep(0.01)
                p = probes.proc(self.pid)
        return p is not None and not p.zombie

    def exit_description(self) -> str:
        """How the server ended, for feedback (exits.ended), or 'still running' (and how busy)."""
        p = probes.proc(self.pid)
        if p is not None and not p.zombie:
            return exits.still_running(p, self.started_at)
        assert self.child is not None
        with contextlib.suppress(Exception):
            self.child.wait()
        return exits.ended(self.child.signalstatus, self.child.exitstatus, sandbox=self.sandbox,
                           since=self.started_at, oom_kills=self._oom_kills, stopping=self._stopping)

    def type_line(self, text: str) -> None:
        """Type a line on the server's terminal (its standard input)."""
        assert self.child is not None
        self.child.send(text.encode() + b"\n")

    def type_eof(self) -> None:
        assert self.child is not None
        self.child.sendeof()

    def terminate(self) -> None:
        """SIGTERM to the server's first process only, as `kill PID` from a shell: the check asks
        for this end, so the signal is the grader's (exit_description)."""
        self._stopping = True
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL, of the server and everything it started."""
        if self.child is None:
            return
        self._stopping = True
        pid = self.pid

        def tree() -> list[probes.Proc]:
            return [p for p in [probes.proc(pid), *probes.descendants(pid)] if p is not None and not p.zombie]

        # this server and what it started (SIGTERM, then SIGKILL after half a second); orphans that
        # left its tree are swept by the sandbox. pexpect reaps the server: no reaping here.
        end_processes(tree, grace=0.5, timeout=0, reap=False)
        self._stop.set()
        if self._drain is not None:
            self._drain.join(1)
        with contextlib.suppress(Exception):
            self.child.ptyproc.delayafterclose = 0  # ptyprocess sleeps 0.1 s "for the kernel": it was killed above
            self.child.close(force=True)
        self.sandbox.spawned.discard(self.pid)
