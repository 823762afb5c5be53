"""The `tsan` check of the thread-based labs: rebuild with -fsanitize=thread, load, read the reports."""
from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from ..errors import GradingEnvironmentError
from ..harness import TSAN_FLAGS, Server
from ..session import GradingSession
from ..verdict import fail
from .common import Start

MAKE = f"make {' '.join(f'{k}={v!r}' for k, v in TSAN_FLAGS.items())}"
REPRODUCE = "make clean && make CFLAGS='-g -O1 -fsanitize=thread' LDFLAGS=-fsanitize=thread"


def check_tsan(grading: GradingSession, server: Start, load: Callable[[Server], None], *, did: str, hint: str,
               args: Sequence[str] = ()) -> None:
    """Rebuild the submission with ThreadSanitizer, start it (`./server PORT ARGS...`), run `load`
    on it (`did` says what that was), and fail with the first report if there is any."""
    b = grading.tsan_build()
    if not b.ok:
        toolchain_works(grading, "-fsanitize=thread")
        fail(f"rebuilt your lab with `{MAKE}`",
             f"{b.problem}:\n{b.output.strip()}", rule="the Makefile uses $(CC), $(CFLAGS), $(LDFLAGS), $(LDLIBS)",
             hint="build with `$(CC) $(CFLAGS) $(LDFLAGS) -o server ... $(LDLIBS)`")
    if not _links_tsan(b.binary):
        fail(f"rebuilt your lab with `{MAKE}`",
             "the resulting server is not instrumented by ThreadSanitizer: your Makefile ignored CFLAGS or LDFLAGS",
             rule="the Makefile uses $(CC), $(CFLAGS), $(LDFLAGS), $(LDLIBS) so the grader can rebuild it",
             hint="build with `$(CC) $(CFLAGS) $(LDFLAGS) -o server ... $(LDLIBS)`")
    logs = b.directory / "tsan-report"
    env = {"TSAN_OPTIONS": f"log_path={logs} halt_on_error=0 report_signal_unsafe=0 history_size=4"}
    try:
        s = server(b, sanitized=True, env=env, args=args, what="the ThreadSanitizer build")
    except Exception:
        _tsan_runtime_failed(b.directory, None)
        raise
    _tsan_runtime_failed(b.directory, s)
    load(s)
    time.sleep(0.3)
    races = _reports(b.directory)
    if races:
        fail(did, f"ThreadSanitizer reported {len(races)} data race(s); the first:\n{races[0]}",
             rule="built with -fsanitize=thread and put under load, the server produces no ThreadSanitizer report",
             hint=f"{hint}; reproduce with `{REPRODUCE}`")


def _links_tsan(binary: Path) -> bool:
    try:
        out = subprocess.run(["readelf", "-d", "-s", "--wide", str(binary)], capture_output=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired) as e:
        raise GradingEnvironmentError(f"cannot run readelf: {e}") from e
    return b"libtsan" in out or b"__tsan_init" in out


def toolchain_works(grading: GradingSession, flag: str) -> None:
    """A sanitizer build that failed: whether the machine can build with `flag` at all (if not,
    the environment's error, never the student's)."""
    d = grading.sandbox.workdir("probe-" + "".join(c if c.isalnum() else "-" for c in flag.lstrip("-")))
    (d / "t.c").write_text("int main(void) { return 0; }\n")
    r = subprocess.run(["gcc", flag, "-o", str(d / "t"), str(d / "t.c")], capture_output=True)
    if r.returncode != 0:
        raise GradingEnvironmentError(f"this machine cannot build with {flag}: "
                                      + r.stderr.decode(errors="replace")[-500:])


def _tsan_runtime_failed(directory: Path, s: Server | None) -> None:
    """A TSan runtime that cannot start is the machine's problem, never the student's race."""
    text = (s.output.text(4000) if s else "") + "".join(
        p.read_text(errors="replace") for p in directory.glob("tsan-report*"))
    if "FATAL: ThreadSanitizer" in text or "unexpected memory mapping" in text:
        raise GradingEnvironmentError("the ThreadSanitizer runtime cannot start on this machine "
                                      f"(address-space layout): {text.strip()[:300]}")


def _reports(directory: Path) -> list[str]:
    out = []
    for p in sorted(directory.glob("tsan-report*")):
        text = p.read_text(errors="replace")
        for block in text.split("==================")[1:]:
            if "WARNING: ThreadSanitizer: data race" in block:
                lines = [ln for ln in block.strip().splitlines() if ln.strip()][:14]
                out.append("\n".join(lines))
    return out
