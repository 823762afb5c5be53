"""From pytest-json-report's document to the summary, Gradescope, CSV and JUnit outputs."""
from __future__ import annotations

import copy
import csv
import json
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from grader.batch import Job, write_gradebook, write_junit
from grader.errors import ReportError
from grader.report import gradescope, summarize
from grader.schema import validate_summary


def fake_report(verdicts: dict[str, tuple[str, int]]) -> dict:
    tests = []
    for cid, (status, points) in verdicts.items():
        tests.append({"nodeid": f"x::{cid}", "outcome": "passed" if status == "passed" else "failed",
                      "setup": {"duration": 0.1}, "call": {"duration": 0.5}, "teardown": {"duration": 0.1},
                      "metadata": {"check": {"id": cid, "points": points, "visibility": "visible"},
                                   "verdict": {"status": status, "feedback": "" if status == "passed" else
                                               f"why {cid}"}}})
    return {"tests": tests}


def test_summary_orders_by_catalogue_and_does_not_charge_errors() -> None:
    rep = fake_report({"zombies": ("failed", 15), "build": ("passed", 5), "echo": ("error", 10)})
    s = summarize(lab="fork", submission="a/fork", pytest_report=rep, seconds=1.234)
    assert [c["id"] for c in s["checks"]] == ["build", "echo", "zombies"]
    assert (s["score"], s["max_score"]) == (5, 20)  # the error's 10 points are not charged
    assert s["checks"][0]["seconds"] == pytest.approx(0.7)
    assert s["seconds"] == 1.23


def test_a_passed_verdict_with_a_failed_pytest_outcome_is_an_error_not_a_pass() -> None:
    rep = fake_report({"build": ("passed", 5)})
    rep["tests"][0]["outcome"] = "failed"
    s = summarize(lab="fork", submission="a/fork", pytest_report=rep, seconds=1)
    assert s["checks"][0]["status"] == "error" and s["score"] == 0


def test_no_results_is_a_report_error() -> None:
    with pytest.raises(ReportError):
        summarize(lab="fork", submission="a", pytest_report={"tests": []}, seconds=0)


@pytest.mark.parametrize("mutate", [
    lambda s: s.pop("checks"),
    lambda s: s.__setitem__("score", 999),
    lambda s: s["checks"][0].__setitem__("status", "great"),
    lambda s: s["checks"][1].__setitem__("score", 10),      # a failed check cannot score
    lambda s: s["checks"].append(dict(s["checks"][0])),     # duplicate id
    lambda s: s.__setitem__("gradable", "yes"),
])
def test_schema_refuses_forged_or_broken_summaries(mutate) -> None:
    s = summarize(lab="fork", submission="a/fork", seconds=1,
                  pytest_report=fake_report({"build": ("passed", 5), "echo": ("failed", 10)}))
    bad = copy.deepcopy(s)
    mutate(bad)
    with pytest.raises(ReportError):
        validate_summary(bad)


def test_gradescope_results_shape() -> None:
    s = summarize(lab="thread", submission="a/thread", seconds=3,
                  pytest_report=fake_report({"build": ("passed", 5), "tsan": ("error", 10), "echo": ("failed", 10)}))
    g = gradescope(s)
    assert g["score"] == 5 and json.loads(json.dumps(g)) == g
    assert {t["status"] for t in g["tests"]} <= {"passed", "failed"}
    tsan = next(t for t in g["tests"] if t["name"].startswith("tsan"))
    assert tsan["max_score"] == 0 and "environment error" in tsan["name"]
    for t in g["tests"]:
        assert set(t) == {"name", "score", "max_score", "status", "output", "visibility"}
        assert t["visibility"] in {"visible", "hidden", "after_due_date", "after_published"}


def test_gradebook_csv_and_junit_parse(tmp_path: Path) -> None:
    rows = []
    for student, verdict in (("alice", "passed"), ("bob", "failed")):
        s = summarize(lab="fork", submission=f"{student}/fork", seconds=1,
                      pytest_report=fake_report({"build": ("passed", 5), "zombies": (verdict, 15)}))
        rows.append((Job(student, "fork", tmp_path), s))
    write_gradebook(tmp_path / "g.csv", rows)
    book = list(csv.DictReader((tmp_path / "g.csv").open()))
    assert [(r["student"], r["fork"], r["fork:zombies"]) for r in book] == [("alice", "20", "15"), ("bob", "5", "0")]
    write_junit(tmp_path / "j.xml", rows)
    root = ET.parse(tmp_path / "j.xml").getroot()
    assert [s.get("failures") for s in root.iter("testsuite")] == ["0", "1"]
    assert root.find(".//failure").text == "why zombies"
