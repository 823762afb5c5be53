"""`labgrade grade` end to end: a broken build gives one clear message, `--only` and
`--visible-only` select, usage errors say why, `make check` runs, and nothing of a graded server
is left running. (The references' full marks through the command line are proven in
test_stability.py, three times each under load; the skeletons' `build` points only, lab by lab,
in test_instructor.py's classroom workflow run, which grades them as students do.)"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support import ROOT, student_processes

from grader import catalogue, grade, probes

pytestmark = pytest.mark.slow


def labgrade(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "grader", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def assert_nothing_left() -> None:
    assert student_processes() == []
    assert [p.describe() for p in probes.descendants(os.getpid()) if not p.zombie] == []


def test_a_broken_build_gives_one_clear_message_and_no_cascade(tmp_path: Path) -> None:
    sub = tmp_path / "fork"
    shutil.copytree(ROOT / "assignments" / "fork", sub)
    (sub / "server.c").write_text((sub / "server.c").read_text() + "\nint broken(void) { return missing_name; }\n")
    r = labgrade("grade", "fork", str(sub), "--json", str(tmp_path / "s.json"))
    assert r.returncode == 0, r.stderr
    s = json.loads((tmp_path / "s.json").read_text())
    build = s["checks"][0]
    assert build["id"] == "build" and build["status"] == "failed"
    assert "missing_name" in build["feedback"] and "make" in build["feedback"]
    others = s["checks"][1:]
    assert all(c["status"] == "failed" and c["score"] == 0 for c in others)
    assert {c["feedback"] for c in others} == {
        "Not graded: the build failed, so no server could run (see the `build` check)."}
    assert r.stdout.count("missing_name") >= 1 and "Fix the build first" in r.stdout
    assert s["seconds"] < 10
    assert_nothing_left()


def test_visible_only_and_only_select_checks(tmp_path: Path) -> None:
    s = grade(lab="fork", submission=ROOT / "reference" / "fork", only=["echo", "zombies"])
    both = catalogue.check("fork", "echo").points + catalogue.check("fork", "zombies").points
    assert [c.id for c in s.checks] == ["echo", "zombies"] and s.score == s.max_score == both
    labgrade("grade", "select", "reference/select", "--visible-only", "--only", "build,vs-reference,stdin",
                 "--json", str(tmp_path / "v.json"))
    assert [c["id"] for c in json.loads((tmp_path / "v.json").read_text())["checks"]] == ["build", "stdin"]


def test_usage_errors_exit_2_and_say_why(tmp_path: Path) -> None:
    r = labgrade("grade", "fork", str(tmp_path / "nowhere"))
    assert r.returncode == 2 and "is not a directory" in r.stderr
    r = labgrade("grade", "fork", "reference/fork", "--only", "zombiez")
    assert r.returncode == 2 and "no check zombiez" in r.stderr


def test_make_check_runs_the_visible_checks_on_the_lab_directory(tmp_path: Path) -> None:
    lab = tmp_path / "thread"
    shutil.copytree(ROOT / "assignments" / "thread", lab)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    if shutil.which("labgrade", path=env["PATH"]) is None:
        pytest.fail("labgrade is not installed on PATH: `pip install .` first (make check needs it)")
    r = subprocess.run(["make", "check"], cwd=lab, env=env, capture_output=True, text=True, timeout=300)
    assert "thread lab" in r.stdout and "vs-reference (hidden)" not in r.stdout, r.stdout[-2000:]
    assert "5/95" in r.stdout  # build only, out of the visible checks
