"""The roster (`--roster`) and Canvas's grade import (`labgrade export canvas`): names and SIS ids
in the gradebook, one column per lab for Canvas, and nobody dropped silently: a graded directory
the roster does not know and a roster student with nothing graded are named every time."""
from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support import ROOT
from test_diff import write

from grader.errors import UsageError
from grader.report import write_gradebook
from grader.results import load_summary
from grader.roster import load_roster

ROSTER = ("\ufeffsis_id,name,directory,section,login\n"  # a spreadsheet's BOM, its own column order
          "S2,\"Bell, Bob\",bob,B,bbell\n"
          "S1,\"Liddell, Alice\",alice,A,aliddell\n"
          "S3,\"Carrol, Carol\",carol,A,ccarrol\n")


def labgrade(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "grader", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)


@pytest.fixture
def results(tmp_path: Path) -> Path:
    out = tmp_path / "results"
    write(out, "alice", "fork", {"echo": (True, ""), "zombies": (False, "3 zombies")}, "0.1.0")   # 10/20
    write(out, "alice", "select", {}, "0.1.0", gradable=False)                                  # not graded
    write(out, "bob", "fork", {"echo": (True, ""), "zombies": (True, "")}, "0.1.0")             # 20/20
    write(out, "bob", "select", {"echo": (True, "")}, "0.1.0")                                  # 10/10
    write(out, "zed", "fork", {"echo": (False, "")}, "0.1.0")                                   # not in the roster
    (out / "roster.csv").write_text(ROSTER)
    return out


def test_a_roster_is_read_in_any_column_order(tmp_path: Path) -> None:
    (tmp_path / "r.csv").write_text(ROSTER)
    r = load_roster(tmp_path / "r.csv")
    assert sorted(r) == ["alice", "bob", "carol"]
    assert (r["alice"].name, r["alice"].sis_id, r["alice"].section, r["alice"].login, r["alice"].canvas_id) == \
        ("Liddell, Alice", "S1", "A", "aliddell", "")


@pytest.mark.parametrize(("text", "says"), [
    ("directory,name\nalice,A\n", "no column sis_id"),
    ("directory,name,sis_id\nalice,A,S1\nalice,B,S2\n", "line 3: directory alice is listed twice"),
    ("directory,name,sis_id\nalice,A,S1\nbob,B,S1\n", "line 3: SIS id S1 is also alice's"),
    ("directory,name,sis_id\nalice,,S1\n", "line 2: name empty"),
])
def test_a_roster_that_cannot_be_trusted_is_refused_naming_the_line(tmp_path: Path, text: str, says: str) -> None:
    (tmp_path / "r.csv").write_text(text)
    with pytest.raises(UsageError, match=says):
        load_roster(tmp_path / "r.csv")


def test_a_bad_roster_stops_the_batch_before_any_grading(tmp_path: Path) -> None:
    (tmp_path / "r.csv").write_text("directory,name\n")
    r = labgrade("batch", str(ROOT / "submissions"), "--out", str(tmp_path / "out"),
                 "--roster", str(tmp_path / "r.csv"))
    assert r.returncode == 2 and "no column sis_id" in r.stderr, r.stderr
    assert not (tmp_path / "out").exists()


def test_canvas_export_has_a_column_per_lab_and_names_everyone_left_out(results: Path, tmp_path: Path) -> None:
    r = labgrade("export", "canvas", str(results), "--out", str(tmp_path / "canvas.csv"),
                 "--assignment", "fork=Lab 1: fork (4021)")
    assert r.returncode == 0, r.stderr
    rows = list(csv.reader((tmp_path / "canvas.csv").open(newline="")))
    assert rows == [
        ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", "Lab 1: fork (4021)", "labgrade select"],
        ["Points Possible", "", "", "", "", "20", "10"],
        ["Bell, Bob", "", "S2", "bbell", "B", "20", "10"],
        ["Carrol, Carol", "", "S3", "ccarrol", "A", "", ""],     # nothing graded: Canvas keeps what it has
        ["Liddell, Alice", "", "S1", "aliddell", "A", "10", ""],  # select not graded: no 0 for the engine's fault
    ]
    assert "not in the roster" in r.stderr and "zed" in r.stderr
    assert "have nothing graded: Carrol, Carol (carol)" in r.stderr
    assert "Liddell, Alice (alice), select: not graded (the engine did not answer)" in r.stderr


def test_canvas_export_refuses_what_it_cannot_do(results: Path, tmp_path: Path) -> None:
    r = labgrade("export", "canvas", str(results), "--out", str(tmp_path / "c.csv"), "--assignment", "forks=X")
    assert r.returncode == 2 and "wanted LAB=NAME" in r.stderr
    (results / "roster.csv").unlink()
    r = labgrade("export", "canvas", str(results), "--out", str(tmp_path / "c.csv"))
    assert r.returncode == 2 and "no roster" in r.stderr and not (tmp_path / "c.csv").exists()


def test_the_gradebook_gains_names_and_a_row_for_a_student_with_nothing_graded(results: Path) -> None:
    rows = [(st, load_summary(results / st / f"{lab}.json")) for st, lab in
            [("alice", "fork"), ("alice", "select"), ("bob", "fork"), ("bob", "select"), ("zed", "fork")]]
    write_gradebook(results / "gradebook.csv", rows, load_roster(results / "roster.csv"))
    book = {r["student"]: r for r in csv.DictReader((results / "gradebook.csv").open(newline=""))}
    assert list(next(iter(book.values())))[:4] == ["student", "name", "sis_id", "total"]
    assert (book["alice"]["name"], book["alice"]["sis_id"], book["alice"]["fork"], book["alice"]["select"]) == \
        ("Liddell, Alice", "S1", "10", "not graded")
    assert (book["carol"]["name"], book["carol"]["total"], book["carol"]["fork"]) == ("Carrol, Carol", "0", "missing")
    assert (book["zed"]["name"], book["zed"]["fork"]) == ("", "0")  # kept, without a name
    write_gradebook(results / "plain.csv", rows)  # without a roster: the columns it always had
    assert next(csv.reader((results / "plain.csv").open()))[:3] == ["student", "total", "fork"]


@pytest.mark.slow
def test_batch_with_a_roster_keeps_it_and_names_the_unknown(tmp_path: Path) -> None:
    root = tmp_path / "class"
    for st in ("alice", "zed"):  # a build that fails: graded in a second, 0 points
        shutil.copytree(ROOT / "assignments" / "fork", root / st / "fork")
        (root / st / "fork" / "server.c").write_text("int main(void) { return missing; }\n")
    (tmp_path / "r.csv").write_text(ROSTER)
    r = labgrade("batch", str(root), "--out", str(tmp_path / "out"), "--roster", str(tmp_path / "r.csv"),
                 "--isolation", "local", "--jobs", "2")
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "out" / "roster.csv").read_text() == ROSTER
    assert "not in the roster (kept, without a name): zed" in " ".join(r.stderr.split())
    assert "Bell, Bob (bob), Carrol, Carol (carol)" in " ".join(r.stderr.split())
    book = {row["student"]: row for row in csv.DictReader((tmp_path / "out" / "gradebook.csv").open(newline=""))}
    assert book["alice"]["name"] == "Liddell, Alice" and book["alice"]["fork"] == "0"  # its build failed
    assert book["bob"]["fork"] == "missing" and book["zed"]["sis_id"] == ""
