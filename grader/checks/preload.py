"""Libraries the grader preloads into a student's server (LD_PRELOAD), and objects it links into
a rebuild of one: built from C sources kept beside the checks, once per grading, into the
sandbox's root, where the student uid may load them but not change them. One that does not
build is the machine's problem."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

from ..errors import GradingEnvironmentError
from ..session import GradingSession


def library(grading: GradingSession, source: Path, *libs: str) -> Path:
    """`source` (a .c file) built as a shared library, linked with `libs` (e.g. "-ldl")."""
    return _built(grading, source, "so", ["-shared", "-fPIC"], list(libs))


def objfile(grading: GradingSession, source: Path) -> Path:
    """`source` (a .c file) compiled into an object file, for the grader to link into a rebuild."""
    return _built(grading, source, "o", ["-c", "-fPIE"], [])


def _built(grading: GradingSession, source: Path, suffix: str, flags: list[str], libs: list[str]) -> Path:
    d = grading.sandbox.root / source.stem
    lib = d / f"{source.stem}.{suffix}"
    if lib.is_file():
        return lib
    d.mkdir(mode=0o755, exist_ok=True)
    tmp = d / f"{source.stem}.{suffix}.tmp"
    try:
        r = subprocess.run(["cc", "-O2", *flags, "-o", str(tmp), str(source), *libs],
                           capture_output=True, timeout=60, cwd=d)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise GradingEnvironmentError(f"cannot build the grader's library {source.name}: {e}") from e
    if r.returncode != 0 or not tmp.is_file():
        raise GradingEnvironmentError(f"the grader's library {source.name} did not build: "
                                      + r.stderr.decode(errors="replace")[-500:])
    os.chmod(d, 0o755)
    os.chmod(tmp, 0o644)
    os.replace(tmp, lib)
    return lib
