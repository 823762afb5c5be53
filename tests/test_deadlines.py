"""`labgrade batch --deadline WHEN --late-days FILE` on submissions that are git repositories: each
lab at its last commit before the deadline, a later one graded only with late days left (one pool
per student, spent lab after lab), an extension moves the deadline, the student's repository is
never touched, and a late grading the environment prevented gives its days back."""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from support import ROOT

from grader import deadlines
from grader.batch import Job
from grader.report import ungradable
from grader.results import Summary

DEADLINE = datetime.fromisoformat("2026-12-10T23:59:00+00:00")


def git(repo: Path, *args: str, when: datetime | None = None) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "s", "GIT_AUTHOR_EMAIL": "s@example.org", "GIT_COMMITTER_NAME": "s",
           "GIT_COMMITTER_EMAIL": "s@example.org"}
    if when:
        env["GIT_COMMITTER_DATE"] = env["GIT_AUTHOR_DATE"] = when.isoformat()
    return subprocess.run(["git", "-C", str(repo), *args], env=env, capture_output=True, text=True,
                          check=True).stdout


def commit(repo: Path, lab: str, kind: str, late_hours: float) -> None:
    """Lab `lab` of the repository becomes the skeleton (5 points) or a build that fails (0)."""
    d = repo / lab
    shutil.rmtree(d, ignore_errors=True)
    shutil.copytree(ROOT / "assignments" / lab, d, ignore=shutil.ignore_patterns("server", "*.o"))
    if kind == "broken":
        (d / "server.c").write_text("int main(void) { return missing; }\n")
    git(repo, "add", "-A", lab)
    git(repo, "commit", "-q", "-m", f"{lab} {kind}", when=DEADLINE + timedelta(hours=late_hours))


@pytest.fixture
def term(tmp_path: Path) -> Path:
    root = tmp_path / "class"
    for student in ("alice", "bob", "carol", "dave"):
        (root / student).mkdir(parents=True)
        git(root / student, "init", "-q")
    commit(root / "alice", "fork", "skeleton", -5)   # on time
    commit(root / "alice", "fork", "broken", 20)     # late, no late days: not graded
    commit(root / "bob", "fork", "broken", -1)
    commit(root / "bob", "fork", "skeleton", 36)     # 1.5 days late: 2 of bob's 2 days
    commit(root / "bob", "select", "skeleton", -2)
    commit(root / "bob", "select", "broken", 10)     # late, but bob's days are gone
    commit(root / "carol", "fork", "skeleton", 72)   # 3 days late, 2 days: nothing to grade
    commit(root / "dave", "fork", "skeleton", 48)    # a 3-day extension: on time
    (tmp_path / "late.csv").write_text("directory,late_days,extension_days\nbob,2,0\ncarol,2,0\ndave,0,3\n")
    return root


@pytest.mark.slow
def test_each_lab_is_graded_at_the_commit_its_deadline_and_late_days_allow(term: Path, tmp_path: Path) -> None:
    before = {s: (git(term / s, "rev-parse", "HEAD"), git(term / s, "status", "--porcelain"),
                  (term / s / "fork" / "server.c").read_text()) for s in ("alice", "bob")}
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "grader", "batch", str(term), "--out", str(out), "--labs",
                        "fork,select", "--isolation", "local", "--jobs", "2", "--deadline", "2026-12-10T23:59+00:00",
                        "--late-days", str(tmp_path / "late.csv")], cwd=ROOT, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 1, r.stderr[-3000:]  # carol's fork: nothing to grade
    s = {(st, lab): json.loads((out / st / f"{lab}.json").read_text())
         for st, lab in [("alice", "fork"), ("bob", "fork"), ("bob", "select"), ("carol", "fork"), ("dave", "fork")]}
    assert s["alice", "fork"]["score"] == 5        # the skeleton before the deadline, not the late broken build
    assert s["bob", "fork"]["score"] == 5          # the late skeleton, with 2 late days
    assert s["bob", "select"]["score"] == 5        # on time: no day left for the late broken build
    assert s["dave", "fork"]["score"] == 5         # within the extension
    assert not s["carol", "fork"]["gradable"] and "no commit" in s["carol", "fork"]["error"]
    for key in [("alice", "fork"), ("bob", "fork"), ("dave", "fork")]:
        log = git(term / key[0], "log", "--format=%H %cI", "--", key[1]).split("\n")
        assert f'{s[key]["commit"]} ' in "\n".join(log)
        assert datetime.fromisoformat(s[key]["committed_at"]) <= DEADLINE + timedelta(days=3)
    ledger = {(row["student"], row["lab"]): row for row in csv.DictReader((out / "late-days.csv").open())}
    assert (ledger["bob", "fork"]["late_days_spent"], ledger["bob", "fork"]["late_days_left"]) == ("2", "0")
    assert (ledger["bob", "select"]["late_days_spent"], ledger["bob", "select"]["late_days_left"]) == ("0", "0")
    assert ledger["alice", "fork"]["late_days_spent"] == "0" and ledger["dave", "fork"]["late_days_spent"] == "0"
    assert ledger["carol", "fork"]["commit"] == "none before the deadline"
    after = {st: (git(term / st, "rev-parse", "HEAD"), git(term / st, "status", "--porcelain"),
                  (term / st / "fork" / "server.c").read_text()) for st in ("alice", "bob")}
    assert after == before  # the repositories: not one file, ref or index entry changed
    assert not (out / ".commits").exists()


def test_a_late_grading_the_environment_prevented_gives_its_days_back(term: Path, tmp_path: Path) -> None:
    allowances = deadlines.load_allowances(tmp_path / "late.csv")
    jobs = [Job("bob", "fork", term / "bob" / "fork"), Job("bob", "select", term / "bob" / "select")]
    picks = deadlines.plan(jobs, DEADLINE, allowances, tmp_path / "scratch")
    assert [(p.job.lab, p.late_days) for p in picks] == [("fork", 2), ("select", 0)]
    results: dict[Job, Summary] = {picks[0].job: ungradable(lab="fork", submission="bob/fork", seconds=1.0,
                                                            reason="the engine did not answer")}
    regraded: list[Job] = []

    def regrade(j: Job) -> Summary:
        regraded.append(j)
        return ungradable(lab=j.lab, submission=j.label, seconds=1.0, reason="(stand-in for a grading)")

    final = deadlines.finish(picks, results, regrade, tmp_path / "late.csv.out", DEADLINE, allowances)
    assert regraded == [picks[0].fallback.job] and final[0] == picks[0].fallback.job  # type: ignore[union-attr]
    assert datetime.fromisoformat(final[0].committed_at or "") < DEADLINE
    row = next(csv.DictReader((tmp_path / "late.csv.out").open()))
    assert (row["late_days_spent"], row["late_days_left"]) == ("0", "2")


def test_a_deadline_that_is_not_a_time_or_a_lab_outside_git_is_refused(tmp_path: Path) -> None:
    with pytest.raises(deadlines.UsageError, match="not an ISO 8601 time"):
        deadlines.parse_deadline("next friday")
    (tmp_path / "x" / "fork").mkdir(parents=True)
    with pytest.raises(deadlines.UsageError, match="not in a git repository"):
        deadlines.plan([Job("x", "fork", tmp_path / "x" / "fork")], DEADLINE, {}, tmp_path / "s")
