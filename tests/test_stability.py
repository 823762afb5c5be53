"""Verdicts must not flicker, and `labgrade grade` works end to end: each reference of a lab that
test_instructor's batch class does not grade is graded 2 times through the command line, two
gradings at a time while a third process keeps a core busy (this machine has 2 cores), and scores
full marks every time, with its Gradescope results and its table agreeing. Its gradings also stand
for the CLI's reference test: no reference is graded a sixth time elsewhere for that."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from support import ROOT, student_processes
from test_instructor import CLASS_LABS

from grader import catalogue, probes

pytestmark = pytest.mark.slow

RUNS, JOBS = 2, 2
BOUND = 25.0  # seconds for one grading of a reference, with three processes sharing two cores


@pytest.fixture
def busy_core():
    """A process spinning on a CPU for the duration of the test."""
    p = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield p
    finally:
        p.kill()
        p.wait()


def grade_reference(lab: str, out: Path) -> tuple[subprocess.CompletedProcess[str], dict[str, Any], dict[str, Any]]:
    out.mkdir(parents=True)
    r = subprocess.run([sys.executable, "-m", "grader", "grade", lab, f"reference/{lab}",
                        "--json", str(out / "s.json"), "--gradescope", str(out / "g.json")],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    return r, json.loads((out / "s.json").read_text()), json.loads((out / "g.json").read_text())


# The labs of test_instructor's batch class have their references graded three times there under load
# (alone two at a time, in the batch, in the resumed batch), each required to score full marks: the
# others are graded here.
LABS = [lab for lab in catalogue.LABS if lab not in CLASS_LABS]


@pytest.mark.parametrize("lab", LABS)
def test_reference_full_marks_twice_through_the_cli_with_a_busy_core(
        lab: str, busy_core: subprocess.Popen, tmp_path: Path) -> None:
    figures: list[dict[str, float]] = []
    with ThreadPoolExecutor(JOBS) as pool:
        runs = list(pool.map(lambda k: grade_reference(lab, tmp_path / f"run{k}"), range(RUNS)))
    assert busy_core.poll() is None  # the load really ran all along
    for k, (r, s, g) in enumerate(runs, 1):
        lost = {c["id"]: c["feedback"] for c in s["checks"] if c["status"] != "passed"}
        assert not lost, f"run {k}: {lost}"
        assert s["gradable"] and s["score"] == s["max_score"] == 100
        assert [c["id"] for c in s["checks"]] == [c.id for c in catalogue.checks(lab)]
        assert g["score"] == 100
        assert "total" in r.stdout and "100/100" in r.stdout
        m = next(c for c in s["checks"] if c["id"] == "vs-reference")["metrics"]  # measured, on a busy machine
        assert m["reference_seconds"] >= 0.5 and m["submission_lines_per_s"] > 0 and m["slowdown"] < 5
        assert 0 < m["submission_latency_p50_ms"] <= m["submission_latency_p99_ms"] and m["submission_cpu_s"] > 0
        figures.append(m)
    seconds = [s["seconds"] for _, s, _ in runs]
    assert max(seconds) < BOUND, seconds
    assert student_processes() == []
    assert [p.describe() for p in probes.descendants(os.getpid()) if not p.zombie and p.pid != busy_core.pid] == []
    print(f"{lab}: {', '.join(f'{x:.1f}' for x in seconds)} s "
          f"({JOBS} at a time, {os.cpu_count()} cores, one kept busy); vs-reference: "
          + "; ".join(f"{m['submission_lines_per_s']:.0f} lines/s, p99 {m['submission_latency_p99_ms']:.1f} ms, "
                      f"x{m['slowdown']:.2f}" for m in figures))
