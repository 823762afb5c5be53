"""An instructor's hidden checks: picked up by instructor grading, absent from `make check`."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support import ROOT

from grader import grade

pytestmark = pytest.mark.slow

HIDDEN = '''
import pytest
from grader.clients import Client, random_line
from grader.checks.common import expect_echo, ECHO_RULE

LAB = "fork"

@pytest.mark.check(id="long-session", points=7, visibility="hidden")
def test_long_session(server):
    s = server()
    with Client(s.port) as c:
        for i in range(50):
            expect_echo(s, c, random_line(100), f"line {i + 1} of a 50-line session", rule=ECHO_RULE)
'''

OTHER_LAB = '''
import pytest
LAB = "thread"

@pytest.mark.check(id="thread-only", points=1, visibility="hidden")
def test_thread_only():
    pass
'''


@pytest.fixture
def extra(tmp_path: Path) -> Path:
    d = tmp_path / "hidden-checks"
    d.mkdir()
    (d / "test_hidden_fork.py").write_text(HIDDEN)
    (d / "test_hidden_thread.py").write_text(OTHER_LAB)
    return d


def test_instructor_grading_runs_the_hidden_check(extra: Path) -> None:
    s = grade(lab="fork", submission=ROOT / "reference" / "fork", only=["echo", "long-session"], extra_checks=extra)
    got = {c.id: c for c in s.checks}
    assert set(got) == {"echo", "long-session"}  # the thread lab's module is not collected for fork
    assert got["long-session"].visibility == "hidden" and got["long-session"].status == "passed"
    assert s.score == s.max_score == 17
    bad = grade(lab="fork", submission=ROOT / "assignments" / "fork", only=["long-session"], extra_checks=extra)
    assert bad.checks[0].status == "failed" and bad.score == 0


def test_visible_only_and_make_check_never_run_it(extra: Path, tmp_path: Path) -> None:
    s = grade(lab="fork", submission=ROOT / "reference" / "fork", only=["build", "long-session"],
              visible_only=True, extra_checks=extra)
    assert [c.id for c in s.checks] == ["build"]
    makefile = (ROOT / "assignments" / "fork" / "Makefile").read_text()
    check_rule = makefile[makefile.index("\ncheck:"):].split("\n\n")[0]
    assert "--visible-only" in check_rule and "--extra-checks" not in check_rule


def test_batch_passes_the_extra_checks(extra: Path, tmp_path: Path) -> None:
    root = tmp_path / "class"
    shutil.copytree(ROOT / "reference" / "fork", root / "dora" / "fork")
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "grader", "batch", str(root), "--out", str(out), "--isolation", "local",
                        "--extra-checks", str(extra)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    s = json.loads((out / "dora" / "fork.json").read_text())
    assert "long-session" in {c["id"] for c in s["checks"]} and s["score"] == s["max_score"] == 107


def test_a_malformed_marker_is_a_usage_error_naming_the_file(extra: Path, tmp_path: Path) -> None:
    """Exit 2 and one line saying which file and what is wrong, before anything is built."""
    (extra / "test_hidden_fork.py").write_text(HIDDEN.replace('points=7, visibility="hidden"', 'points=7'))
    r = subprocess.run([sys.executable, "-m", "grader", "grade", "fork", str(ROOT / "reference" / "fork"),
                        "--extra-checks", str(extra), "--json", str(tmp_path / "s.json")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    assert (f"labgrade: malformed check marker in {extra / 'test_hidden_fork.py'}, line 8 (test_long_session): "
            "missing visibility (a check needs id, points and visibility)") in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "s.json").exists()
