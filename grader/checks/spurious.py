"""Spurious wake-ups for `bounded` (lab `pool`): a library preloaded into the server whose
pthread_cond_wait returns at once on every other call of each thread (spurious.c), as POSIX allows.
A wait in a `while` loop waits again and loses nothing; one in an `if` goes on with its condition
false, which no client can force from outside the process. Semaphore designs never call it."""
from __future__ import annotations

import subprocess
from pathlib import Path

from ..harness import BuildResult
from ..session import GradingSession
from . import preload

SOURCE = Path(__file__).with_name("spurious.c")
NOTE = ("this check ran your server with pthread_cond_wait waking up spuriously on every other call of each "
        "thread, as POSIX allows (the grader preloads a library whose pthread_cond_wait returns at once); a "
        "condition variable's wait must be in a `while` loop that tests its condition again after every return, "
        "never in an `if`. `make check` reproduces it; by hand, the library is grader/checks/spurious.c in the "
        "grader's package (its first lines say how to build and preload it)")


def env(grading: GradingSession) -> dict[str, str]:
    return {"LD_PRELOAD": str(preload.library(grading, SOURCE, "-ldl"))}


def uses_condvars(b: BuildResult) -> bool:
    """Whether the server calls pthread_cond_wait (its dynamic symbols): then NOTE explains a failure."""
    try:
        out = subprocess.run(["readelf", "--dyn-syms", "--wide", str(b.binary)], capture_output=True,
                             timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return True  # unknown: the note is true of any server
    return b"pthread_cond_wait" in out
