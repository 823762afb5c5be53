"""From pytest-json-report's document to the summary, Gradescope, CSV and JUnit outputs."""
from __future__ import annotations

import copy
import csv
import json
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from grader.errors import ReportError
from grader.report import gradescope, summarize, write_gradebook, write_junit
from grader.results import Summary
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
    assert [c.id for c in s.checks] == ["build", "echo", "zombies"]
    assert (s.score, s.max_score) == (5, 20)  # the error's 10 points are not charged
    assert s.checks[0].seconds == pytest.approx(0.7)
    assert s.seconds == 1.23


def test_a_passed_verdict_with_a_failed_pytest_outcome_is_an_error_not_a_pass() -> None:
    rep = fake_report({"build": ("passed", 5)})
    rep["tests"][0]["outcome"] = "failed"
    s = summarize(lab="fork", submission="a/fork", pytest_report=rep, seconds=1)
    assert s.checks[0].status == "error" and s.score == 0


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
    lambda s: s.__setitem__("seed", "42"),                    # optional fields keep their types
    lambda s: s.__setitem__("commit", None),                  # absent, never null
    lambda s: s["checks"][0].__setitem__("metrics", {"latency_p99_ms": "fast"}),
    lambda s: s["checks"][0].__setitem__("metrics", [1.0]),
])
def test_schema_refuses_forged_or_broken_summaries(mutate) -> None:
    s = summarize(lab="fork", submission="a/fork", seconds=1,
                  pytest_report=fake_report({"build": ("passed", 5), "echo": ("failed", 10)}))
    bad = copy.deepcopy(s.to_json())
    mutate(bad)
    with pytest.raises(ReportError):
        validate_summary(bad)
    with pytest.raises(ReportError):
        Summary.from_json(bad)


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
        rows.append((student, s))
    write_gradebook(tmp_path / "g.csv", rows)
    book = list(csv.DictReader((tmp_path / "g.csv").open()))
    assert [(r["student"], r["fork"], r["fork:zombies"]) for r in book] == [("alice", "20", "15"), ("bob", "5", "0")]
    write_junit(tmp_path / "j.xml", rows)
    root = ET.parse(tmp_path / "j.xml").getroot()
    assert [s.get("failures") for s in root.iter("testsuite")] == ["0", "1"]
    assert root.find(".//failure").text == "why zombies"


def test_summary_json_round_trips_key_for_key_with_optional_fields_only_when_set(tmp_path: Path) -> None:
    s = summarize(lab="fork", submission="a/fork", seconds=2,
                  pytest_report=fake_report({"build": ("passed", 5), "echo": ("failed", 10)}))
    doc = s.to_json()
    assert list(doc) == ["lab", "submission", "gradable", "score", "max_score", "seconds", "checks"]
    assert list(doc["checks"][0]) == ["id", "status", "score", "max_score", "visibility", "feedback", "seconds"]
    assert Summary.from_json(json.loads(json.dumps(doc))) == s
    grown = json.loads(json.dumps(doc))
    grown.update(grader_version="0.2.0", catalogue_sha256="ab" * 32, submission_sha256="cd" * 32, seed=7,
                 commit="0123abc", committed_at="2025-01-31T12:00:00+00:00")
    grown["checks"][0]["metrics"] = {"throughput_lines_per_s": 12000.5, "latency_p99_ms": 3}
    g = Summary.from_json(grown)
    assert g.seed == 7 and g.checks[0].metrics == {"throughput_lines_per_s": 12000.5, "latency_p99_ms": 3}
    assert g.to_json() == grown and validate_summary(g.to_json())
    g.write(tmp_path / "s.json")
    assert json.loads((tmp_path / "s.json").read_text()) == grown
    assert [p.name for p in tmp_path.iterdir()] == ["s.json"]  # written whole, nothing left beside it
    bad = json.loads(json.dumps(doc))
    bad["score"] = 14
    with pytest.raises(ReportError, match="not the sum"):
        Summary.from_json(bad)
    with pytest.raises(ReportError):  # no summary is built invalid, from JSON or not
        s.replace(score=99)


def test_ungradable_summary_keeps_its_reason() -> None:
    u = Summary.ungradable(lab="select", submission="b/select", reason="grading did not finish", seconds=3.456)
    assert u.to_json() == {"lab": "select", "submission": "b/select", "gradable": False, "score": 0,
                           "max_score": 0, "seconds": 3.46, "checks": [], "error": "grading did not finish"}
    assert gradescope(u)["output"] == "select: could not be graded: grading did not finish"


def test_the_one_writer_replaces_whole_files_writes_through_links_and_into_devices(tmp_path: Path) -> None:
    from grader.atomic import write_atomic, write_json

    target = tmp_path / "s.json"
    target.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    write_json(link, {"a": 1})
    assert link.is_symlink() and target.read_text() == '{\n  "a": 1\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.json", "s.json"]
    write_atomic("/dev/null", "nothing")  # not a regular file: written, never replaced
    assert Path("/dev/null").is_char_device()
