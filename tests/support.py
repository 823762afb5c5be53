"""Helpers shared by the project's tests."""
from __future__ import annotations

import json
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def student_processes() -> list[str]:
    """Live processes of the grader's unprivileged uid pool (61000-61999) that nobody owns any more:
    orphans adopted by init, or processes under this test run. (A grading running in parallel
    elsewhere on the machine owns its processes through its own subreaper: they are not counted.)"""
    from grader import probes
    from grader.isolation.local import UID_BASE, UID_COUNT

    procs = probes.all_procs()
    ours = {p.pid for p in probes.descendants(os.getpid(), procs)}
    return [p.describe() for p in procs
            if UID_BASE <= p.uid < UID_BASE + UID_COUNT and not p.zombie and (p.ppid == 1 or p.pid in ours)]


# The servers of tests/servers keep only the files that differ from their lab (server.c, a
# Makefile of their own...): the lab's shared files come from reference/<lab>, whose netlib.c and
# netlib.h every lab directory holds identically (tests/test_labs.py).
SHARED = ("Makefile", "netlib.c", "netlib.h")
NOT_LAB_FILES = {"expect.json", "hostile.json", "server"}


def lab_files(src: Path, lab: str) -> dict[str, bytes]:
    """The files of a complete lab directory made from `src`: its own files (relative path ->
    bytes; its expect.json or hostile.json and build products aside) over the shared files of
    reference/<lab> that it does not hold."""
    out = {name: (ROOT / "reference" / lab / name).read_bytes() for name in SHARED}
    meta = src / "hostile.json"  # hostile programs may share a source, kept once beside them
    for name in json.loads(meta.read_text()).get("shared", []) if meta.is_file() else []:
        out[name] = (src.parent / name).read_bytes()
    for p in sorted(src.rglob("*")):
        if p.is_file() and p.name not in NOT_LAB_FILES and p.suffix != ".o":
            out[p.relative_to(src).as_posix()] = p.read_bytes()
    return out


def copy_lab(src: Path, dest: Path, lab: str) -> Path:
    """A complete lab directory at `dest` (see lab_files), ready for `labgrade grade`."""
    for rel, data in lab_files(src, lab).items():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return dest


if __name__ == "__main__":  # python3 tests/support.py tests/servers/fork/no-reap /tmp/no-reap/fork
    import sys

    if len(sys.argv) != 3:
        sys.exit("usage: python3 tests/support.py SERVER_DIR DEST   (a complete lab directory at DEST)")
    src = Path(sys.argv[1]).resolve()
    meta = src / "hostile.json"
    sys.path.insert(0, str(ROOT))  # this checkout's grader, installed or not
    from grader.catalogue import LABS

    lab = json.loads(meta.read_text())["lab"] if meta.is_file() else (
        src.parent.name if src.parent.name in LABS else src.name)
    print(copy_lab(src, Path(sys.argv[2]), lab))
