"""Verdicts must not flicker: each reference scores full marks 5 times in a row while the
other core is kept busy (this machine has 2 cores)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from support import ROOT

from grader import catalogue, grade

pytestmark = pytest.mark.slow


@pytest.fixture
def busy_core():
    """A process spinning on a CPU for the duration of the test."""
    p = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield p
    finally:
        p.kill()
        p.wait()


@pytest.mark.parametrize("lab", catalogue.LABS)
def test_reference_full_marks_five_times_with_a_busy_core(lab: str, busy_core: subprocess.Popen) -> None:
    seconds = []
    for run in range(5):
        s = grade(lab=lab, submission=ROOT / "reference" / lab, reference_root=ROOT / "reference")
        lost = {c.id: c.feedback for c in s.checks if c.status != "passed"}
        assert not lost, f"run {run + 1}: {lost}"
        assert s.score == s.max_score == 100
        seconds.append(s.seconds)
    assert busy_core.poll() is None  # the load really ran all along
    assert max(seconds) < 20, seconds
    print(f"{lab}: {', '.join(f'{x:.1f}' for x in seconds)} s ({os.cpu_count()} cores, one kept busy)")
