"""One grading of one submission: its sandbox, its builds (made once, shared by the checks)
and the servers the checks start."""
from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

from . import probes
from .errors import GradingEnvironmentError
from .harness import ASAN_FLAGS, TSAN_FLAGS, BuildResult, Server, build
from .isolation.local import Sandbox
from .verdict import NotGraded, fail

# A grading's bound: the checks of a correct server take 5-15 s (40 s on a busy machine); a server
# that makes every check wait out its time limits (one that never listens, or never accepts)
# would take minutes. Once the checks this server failed have taken this many seconds, the checks
# left are not run. Only failed checks count: the time a slow machine adds to passing checks is
# never charged to the student, so a correct server is always graded in full.
GRADING_BUDGET = 150.0
START_FAILURES = 2  # a build that never listened in this many starts (and never once listened) is not started again


def default_reference_root() -> Path | None:
    """Where the reference servers are: $LABGRADE_REFERENCE_ROOT, else the source checkout the
    grader runs from, else ./reference (an instructor working in the course repository)."""
    env = os.environ.get("LABGRADE_REFERENCE_ROOT")
    if env:
        return Path(env)
    for candidate in (Path(__file__).resolve().parent.parent / "reference", Path.cwd() / "reference"):
        if candidate.is_dir():
            return candidate.resolve()
    return None


def hidden_from_students(submission: Path, reference_root: Path | None) -> list[Path]:
    """What student code must not see, wherever it lies (root's private view of the file system
    covers these on top of every non-system tree): the reference, the grader's own package (its
    checks), and the class the submission belongs to (ROOT/<student>/<lab>: ROOT)."""
    out = [Path(__file__).resolve().parent]
    if reference_root is not None:
        out.append(reference_root)
    klass = Path(submission).resolve().parent.parent
    if klass != klass.parent:  # never "/"
        out.append(klass)
    return out


def _chained(step: Callable[[], object]) -> Callable[[type[BaseException] | None, BaseException | None,
                                                   TracebackType | None], None]:
    """`step` as an ExitStack exit callback that keeps the failure before it as its own failure's
    context (a plain callback's failure replaces it: Python 3.11's ExitStack does not chain them)."""
    def exit_(exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        try:
            step()
        except BaseException as e:
            if exc is not None and e is not exc and e.__context__ is None:
                e.__context__ = exc
            raise
    return exit_


class GradingSession:
    """Owns the sandboxes and servers of one grading; `close()` (or leaving `with`) ends them all."""

    def __init__(self, lab: str, submission: Path, reference_root: Path | None = None) -> None:
        self.lab = lab
        self.submission = submission
        self.reference_root = reference_root
        self._hide = hidden_from_students(submission, reference_root)
        self.sandbox = Sandbox(hide=self._hide)
        self._ref_sandbox: Sandbox | None = None  # the reference runs as another uid than student code
        self._builds: dict[str, BuildResult] = {}
        self.servers: list[Server] = []
        self.failed_seconds = 0.0  # spent in checks this submission failed (see charge_failure)
        self.failed_checks: list[str] = []
        self._never_ready: dict[Path, list[str]] = {}  # build directory -> why each start failed, until one works
        self._was_ready: set[Path] = set()
        self._same_source: dict[Path, Path] = {}  # a rebuild of the submission (a sanitizer's) -> its plain build
        self.measured: dict[str, tuple[dict[str, float], str]] = {}  # check id -> (metrics, figures in words)

    def measure(self, check_id: str, metrics: dict[str, float], words: str) -> None:
        """A check's figures, for its `metrics` in the summary and its feedback (passed or failed)."""
        self.measured[check_id] = (metrics, words)

    def charge_failure(self, check_id: str, seconds: float) -> None:
        """A check this submission failed took `seconds`: they count against the grading's budget
        (until it is spent; the checks failed unrun after that add nothing)."""
        if self.failed_seconds <= GRADING_BUDGET:
            self.failed_seconds += seconds
            self.failed_checks.append(check_id)

    # -- builds --------------------------------------------------------------------
    def _build(self, key: str, source: Path, make_vars: dict[str, str] | None = None,
               sandbox: Sandbox | None = None) -> BuildResult:
        if key not in self._builds:
            self._builds[key] = build(source, sandbox or self.sandbox, key, make_vars=make_vars)
        return self._builds[key]

    def build(self) -> BuildResult:
        """The submission as its Makefile builds it."""
        return self._build("submission", self.submission)

    def built(self) -> BuildResult:
        """The build, or the end of this check when it failed (one message, no cascade)."""
        b = self.build()
        if not b.ok:
            raise NotGraded("Not graded: the build failed, so no server could run (see the `build` check).")
        return b

    def tsan_build(self) -> BuildResult:
        return self.rebuild("submission-tsan", TSAN_FLAGS)

    def asan_build(self) -> BuildResult:
        return self.rebuild("submission-asan", ASAN_FLAGS)

    def rebuild(self, key: str, flags: dict[str, str]) -> BuildResult:
        """The submission built again with the grader's CFLAGS and LDFLAGS (a sanitizer, an
        instrumentation), once per grading under `key`."""
        plain = self.built()
        b = self._build(key, self.submission, flags)
        self._same_source[b.directory] = plain.directory  # it starts as the plain build does: they share a record
        return b

    def reference_build(self) -> BuildResult:
        root = self.reference_root
        src = root / self.lab if root else None
        if src is None or not (src / "Makefile").is_file():
            raise GradingEnvironmentError(
                "the reference server is not available to this grader (set LABGRADE_REFERENCE_ROOT "
                "or --reference-root); vs-reference runs only where the instructor grades")
        if self._ref_sandbox is None:
            self._ref_sandbox = Sandbox(hide=self._hide)
        b = self._build("reference", src, sandbox=self._ref_sandbox)
        if not b.ok:
            raise GradingEnvironmentError(f"the reference server did not build: {b.problem}\n{b.output}")
        return b

    # -- servers -------------------------------------------------------------------
    def start(self, b: BuildResult | None = None, *, sanitized: bool = False, env: dict[str, str] | None = None,
              args: Sequence[str] = (), what: str = "the server") -> Server:
        """A fresh server (`./server PORT ARGS...`), ready (listening) or the end of the check with the reason."""
        if self.failed_seconds > GRADING_BUDGET:
            fail("did not start your server for this check",
                 f"the checks your server failed ({', '.join(self.failed_checks)}) had already taken "
                 f"{self.failed_seconds:.0f} s, more than the grading's budget of {GRADING_BUDGET:.0f} s: they waited "
                 "for your server up to their time limits, so the checks left were not run",
                 rule="grading ends within a bound: a server that makes every check wait out its time limit "
                      "loses the checks that no longer fit",
                 hint="make the checks above pass (start with `echo`): a server that answers makes them quick")
        b = b or self.built()
        key = self._same_source.get(b.directory, b.directory)
        failures = self._never_ready.get(key, [])
        if key not in self._was_ready and len(failures) >= START_FAILURES:
            fail("did not start your server for this check",
                 f"it never listened in the {len(failures)} checks before this one (the first time: "
                 f"{failures[0]}), so the grader stopped starting it: each of those checks waited out the "
                 "time a server has to start",
                 rule="the server listens on TCP port PORT on every local address within 3 s of start",
                 hint="run `./server 5000` yourself and look at `ss -ltnp`: fix the start first (the first "
                      "failed check shows the server's output), every other check needs it")
        port = self.sandbox.allocate_port()
        s = Server(b, b.sandbox or self.sandbox, port, sanitized=sanitized, args=tuple(args), env_extra=env or {})
        self.servers.append(s)
        s.start()
        if s.wait_ready():
            self._was_ready.add(key)
        else:
            state = s.exit_description()
            verb = "is" if state.startswith("still") else "was" if state.startswith("killed") else "has"
            self._never_ready.setdefault(key, []).append(f"{what} {verb} {state}")
            out = s.output.text(2000).strip() or "(nothing)"
            fail(f"started `{' '.join(['./server', str(port), *args])}` and waited for a socket listening on port "
                 f"{port}",
                 f"no listening socket appeared ({what} {verb} {state}); its output was:\n{out}",
                 rule="the server listens on TCP port PORT on every local address within 3 s of start",
                 hint="check the port argument, bind/listen errors, and that main does not exit")
        return s

    def stop_servers(self) -> list[probes.Proc]:
        """Stop every server of the current check; returns processes that survived (should be none)."""
        for s in self.servers:
            s.stop()
        self.servers.clear()
        return [p for sb in self._sandboxes() for p in sb.kill_all()]

    def _sandboxes(self) -> list[Sandbox]:
        return [self.sandbox] + ([self._ref_sandbox] if self._ref_sandbox else [])

    def close(self) -> None:
        """Stop the servers, then close every sandbox: each step runs even when one before it
        failed (then the last failure is raised, the earlier ones as its context)."""
        with contextlib.ExitStack() as stack:
            for sb in reversed(self._sandboxes()):  # run last in, first out: the submission's first
                stack.push(_chained(sb.close))
            stack.push(_chained(self.stop_servers))  # first of all: servers end before their sandboxes go

    def __enter__(self) -> GradingSession:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
