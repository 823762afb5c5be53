"""`labgrade diff OLD NEW`: every changed score of a regrade, lowered ones first and impossible to
miss; exit status 0 when nothing changed, 1 when something did."""
from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

from support import ROOT

from grader.results import CheckResult, Summary


def write(out: Path, student: str, lab: str, checks: dict[str, tuple[bool, str]], version: str,
          gradable: bool = True) -> None:
    if not gradable:
        s = Summary.ungradable(lab=lab, submission=f"{student}/{lab}", reason="the engine did not answer",
                               seconds=1.0)
    else:
        rows = [CheckResult(id=cid, status="passed" if ok else "failed", score=10 if ok else 0, max_score=10,
                            visibility="visible", feedback=fb, seconds=0.1) for cid, (ok, fb) in checks.items()]
        s = Summary.of_checks(lab=lab, submission=f"{student}/{lab}", seconds=1.0, checks=rows)
    (out / student).mkdir(parents=True, exist_ok=True)
    s.replace(grader_version=version).write(out / student / f"{lab}.json")
    (out / student / f"{lab}.results.json").write_text("{}")  # batch's other files are not summaries
    (out / student / f"{lab}.run1.json").write_text("{}")


def labgrade(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "grader", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=60)


def test_a_regrade_that_changes_nothing_exits_0(tmp_path: Path) -> None:
    for d in ("old", "new"):
        write(tmp_path / d, "alice", "fork", {"echo": (True, ""), "zombies": (False, "3 zombies")}, "0.1.0")
    r = labgrade("diff", str(tmp_path / "old"), str(tmp_path / "new"))
    assert r.returncode == 0 and "No score changed" in r.stdout, r.stdout + r.stderr


def test_every_change_is_listed_lowered_first_with_both_feedbacks_and_versions(tmp_path: Path) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    write(old, "alice", "fork", {"echo": (True, ""), "zombies": (False, "3 zombies remained")}, "0.1.0")
    write(new, "alice", "fork", {"echo": (True, ""), "zombies": (True, "")}, "0.2.0")
    write(old, "bob", "fork", {"echo": (True, ""), "zombies": (True, "")}, "0.1.0")
    write(new, "bob", "fork", {"echo": (False, "nothing came back"), "zombies": (True, "")}, "0.2.0")
    write(old, "carol", "select", {"echo": (True, "")}, "0.1.0")
    write(new, "carol", "select", {}, "0.2.0", gradable=False)
    write(new, "dave", "fork", {"echo": (True, "")}, "0.2.0")  # only in the new results
    r = labgrade("diff", str(old), str(new), "--csv", str(tmp_path / "changes.csv"))
    assert r.returncode == 1, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    first_higher = next(i for i, ln in enumerate(lines) if ln.startswith("higher"))
    lowered = [ln for ln in lines[:first_higher] if ln.startswith("LOWER")]
    assert lowered == ["LOWER bob/fork echo: 10 -> 0 (grader 0.1.0 -> 0.2.0)",
                       "LOWER bob/fork (total): 20 -> 10 (grader 0.1.0 -> 0.2.0)",
                       "LOWER carol/select (summary): 10 -> 0 (grader 0.1.0 -> 0.2.0)"]
    assert "    after:  nothing came back" in lines
    assert "higher alice/fork zombies: 0 -> 10 (grader 0.1.0 -> 0.2.0)" in lines
    assert "    before: 3 zombies remained" in lines
    assert "higher dave/fork (summary): absent -> 10 (grader - -> 0.2.0)" in lines
    assert lines[-1] == "6 change(s): 2 submission(s) LOSE points (bob/fork, carol/select), 2 gain"
    with (tmp_path / "changes.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert {(r["student"], r["check"], r["lowered"]) for r in rows} == {
        ("alice", "zombies", ""), ("alice", "(total)", ""), ("bob", "echo", "yes"), ("bob", "(total)", "yes"),
        ("carol", "(summary)", "yes"), ("dave", "(summary)", "")}
    carol = next(r for r in rows if r["student"] == "carol")
    assert carol["new_feedback"] == "the engine did not answer" and carol["new_grader_version"] == "0.2.0"


def test_a_directory_without_summaries_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    write(tmp_path / "new", "alice", "fork", {"echo": (True, "")}, "0.1.0")
    r = labgrade("diff", str(tmp_path / "empty"), str(tmp_path / "new"))
    assert r.returncode == 2 and "no summaries in" in r.stderr
