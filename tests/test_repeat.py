"""Replayable and repeatable gradings: payloads derive from the grading's seed (per check), the
summary records what was graded (grader version, catalogue and submission hashes, seed), and
`labgrade batch --repeat N` grades each submission N times, lists what differed in flicker.csv
and records the median-score grading."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from support import ROOT

from grader import batch, repeat, run
from grader.results import CheckResult, Summary

PAYLOADS = '''
import pytest
from grader.clients import random_line, random_lines, rng

@pytest.mark.check(id="first", points=1, visibility="visible")
def test_first(request):
    with open("payloads.txt", "a") as f:
        f.write("first " + b"".join(random_lines(3)).hex() + "\\n")

@pytest.mark.check(id="second", points=1, visibility="visible")
def test_second(request):
    with open("payloads.txt", "a") as f:
        f.write("second " + random_line(40).hex() + " " + str(rng().sample(range(256), 5)) + "\\n")
'''


@pytest.fixture(autouse=True)
def only_our_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")


def payloads(pytester: pytest.Pytester, *args: str) -> dict[str, str]:
    log = pytester.path / "payloads.txt"
    log.unlink(missing_ok=True)
    r = pytester.runpytest_subprocess("-p", "grader.plugin", "-p", "pytest_jsonreport.plugin", "--json-report",
                                      "--json-report-file=r.json", *args)
    assert r.ret == 0, r.stdout.str()
    return dict(line.split(" ", 1) for line in log.read_text().splitlines())


def test_payloads_derive_from_the_seed_and_the_check(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_checks=PAYLOADS)
    a = payloads(pytester, "--seed", "7")
    assert a == payloads(pytester, "--seed", "7")  # a replay sends the same bytes
    assert payloads(pytester, "--seed", "7", "--only", "second") == {"second": a["second"]}  # whatever ran before
    b = payloads(pytester, "--seed", "8")
    assert a["first"] != b["first"] and a["second"] != b["second"]
    assert payloads(pytester) != payloads(pytester)  # no seed: a fresh one each time


def test_provenance_names_the_sources_not_the_build(tmp_path: Path) -> None:
    lab = tmp_path / "fork"
    shutil.copytree(ROOT / "reference" / "fork", lab, ignore=shutil.ignore_patterns("server", "*.o"))
    p = run.provenance("fork", lab, 42)
    assert p["seed"] == 42 and p["grader_version"]
    assert len(p["submission_sha256"]) == len(p["catalogue_sha256"]) == 64
    (lab / "server.o").write_bytes(b"\x7fELF built")  # what make leaves: not the submission
    (lab / ".server.c.swp").write_bytes(b"an editor's")
    assert run.provenance("fork", lab, 1)["submission_sha256"] == p["submission_sha256"]
    with (lab / "server.c").open("a") as f:
        f.write("\n")
    assert run.provenance("fork", lab, 42)["submission_sha256"] != p["submission_sha256"]
    (lab / "server.c").rename(lab / "main.c")  # the same bytes under another name
    assert run.provenance("fork", lab, 42)["submission_sha256"] != p["submission_sha256"]
    assert run.provenance("select", lab, 42)["catalogue_sha256"] != p["catalogue_sha256"]


@pytest.mark.slow
def test_a_grading_records_its_provenance_and_a_seed_replays_it(tmp_path: Path) -> None:
    lab = tmp_path / "alice" / "fork"
    shutil.copytree(ROOT / "reference" / "fork", lab, ignore=shutil.ignore_patterns("server", "*.o"))
    a = run.grade(lab="fork", submission=lab, only=["echo"], seed=123, reference_root=ROOT / "reference")
    b = run.grade(lab="fork", submission=lab, only=["echo"], reference_root=ROOT / "reference")
    assert a.seed == 123 and b.seed is not None and b.seed != 123
    assert a.submission_sha256 == b.submission_sha256 and a.catalogue_sha256 == b.catalogue_sha256
    assert json.loads(json.dumps(a.to_json()))["seed"] == 123  # in the summary JSON (DESIGN.md)
    assert a.score == a.max_score


def summary(student: str, scores: dict[str, bool], seed: int) -> Summary:
    checks = [CheckResult(id=cid, status="passed" if ok else "failed", score=5 if ok else 0, max_score=5,
                          visibility="visible", feedback="" if ok else f"{cid} lost", seconds=0.1)
              for cid, ok in scores.items()]
    return Summary.of_checks(lab="fork", submission=f"{student}/fork", seconds=1.0, checks=checks).replace(seed=seed)


def test_the_recorded_grading_is_the_median_score_and_flicker_names_what_differed() -> None:
    runs = [summary("bob", {"echo": True, "zombies": ok}, seed=i) for i, ok in enumerate([True, False, True])]
    assert repeat.recorded(runs) is runs[0]  # scores 10, 5, 10: the median is 10, the earliest of those
    assert repeat.recorded(runs[:2]) is runs[1]  # N even: the lower median
    rows = repeat.flickers("bob", runs)
    assert [(r["check"], r["verdicts"], r["seeds"]) for r in rows] == [
        ("zombies", "passed failed passed", "0 1 2")]
    assert rows[0]["feedback_of_first_odd_one"] == "zombies lost"
    assert repeat.flickers("bob", [runs[0], runs[0]]) == []


FAKE_GRADER = '''
import json, os, sys
argv = sys.argv
out, sub = argv[argv.index("--json") + 1], argv[argv.index("grade") + 2]
student = os.path.basename(os.path.dirname(sub))
count = os.path.join(os.path.dirname(os.path.dirname(sub)), f".count-{student}")
n = int(open(count).read()) + 1 if os.path.exists(count) else 1
open(count, "w").write(str(n))
ok = student != "flaky" or n != 2  # flaky loses `zombies` in its second grading
checks = [{"id": "echo", "status": "passed", "score": 5, "max_score": 5, "visibility": "visible",
           "feedback": "", "seconds": 0.1},
          {"id": "zombies", "status": "passed" if ok else "failed", "score": 5 if ok else 0, "max_score": 5,
           "visibility": "visible", "feedback": "" if ok else "3 zombies", "seconds": 0.1}]
json.dump({"lab": "fork", "submission": f"{student}/fork", "gradable": True, "score": 10 if ok else 5,
           "max_score": 10, "seconds": 0.2, "checks": checks, "seed": 1000 + n}, open(out, "w"))
sys.exit(0)
'''


def test_batch_repeat_grades_n_times_records_the_median_and_resumes(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "class"
    for student in ("flaky", "steady"):
        (root / student / "fork").mkdir(parents=True)
    monkeypatch.setattr(batch, "_CHILD_BOOT", FAKE_GRADER)
    out = tmp_path / "out"
    assert batch.run_batch(root=root, out=out, labs=["fork"], jobs=1, isolation="local", repeat=3) == 0
    for student in ("flaky", "steady"):
        assert sorted(p.name for p in (out / student).glob("fork.run*.json")) == [
            "fork.run1.json", "fork.run2.json", "fork.run3.json"]
    assert json.loads((out / "flaky" / "fork.json").read_text())["score"] == 10  # 10, 5, 10: the median
    with (out / "flicker.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["student"], r["check"], r["verdicts"], r["seeds"]) for r in rows] == [
        ("flaky", "zombies", "passed failed passed", "1001 1002 1003")]
    book = {r["student"]: r for r in csv.DictReader((out / "gradebook.csv").open())}
    assert book["flaky"]["fork"] == "10" and book["steady"]["fork"] == "10"
    # a rerun grades nothing; one grading lost is made again, alone
    assert batch.run_batch(root=root, out=out, labs=["fork"], jobs=1, isolation="local", repeat=3) == 0
    assert (root / ".count-steady").read_text() == "3"
    (out / "steady" / "fork.run2.json").unlink()
    assert batch.run_batch(root=root, out=out, labs=["fork"], jobs=1, isolation="local", repeat=3) == 0
    assert (root / ".count-steady").read_text() == "4" and (root / ".count-flaky").read_text() == "3"
