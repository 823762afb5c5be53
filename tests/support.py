"""Helpers shared by the project's tests."""
from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def student_processes() -> list[str]:
    """Live processes of the grader's unprivileged uid pool (61000-61999) that nobody owns any more:
    orphans adopted by init, or processes under this test run. (A grading running in parallel
    elsewhere on the machine owns its processes through its own subreaper: they are not counted.)"""
    from grader import probes
    from grader.sandbox import UID_BASE, UID_COUNT

    procs = probes.all_procs()
    ours = {p.pid for p in probes.descendants(os.getpid(), procs)}
    return [p.describe() for p in procs
            if UID_BASE <= p.uid < UID_BASE + UID_COUNT and not p.zombie and (p.ppid == 1 or p.pid in ours)]
