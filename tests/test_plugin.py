"""The plugin classifies outcomes: a CheckFailed is the student's loss, an environment error
or a grader bug is not charged; --only and --visible-only select by marker."""
from __future__ import annotations

import json

import pytest

PLUGINS = ("-p", "grader.plugin", "-p", "pytest_jsonreport.plugin", "--json-report", "--json-report-file=r.json")


@pytest.fixture(autouse=True)
def only_our_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    """The checks' pytest loads the plugins it names and no other, as in a grading (grader.run):
    those installed beside (hypothesis's costs 3 s a start) are not part of what is tested."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")


CHECKS = '''
import pytest
from grader.errors import GradingEnvironmentError
from grader.verdict import fail

@pytest.mark.check(id="good", points=5, visibility="visible")
def test_good(): pass

@pytest.mark.check(id="bad", points=10, visibility="visible")
def test_bad(): fail("did a thing", "saw another", rule="the rule", hint="the hint")

@pytest.mark.check(id="env", points=7, visibility="visible")
def test_env(): raise GradingEnvironmentError("no free port")

@pytest.mark.check(id="bug", points=3, visibility="hidden")
def test_bug(): {}["missing"]

def test_not_a_check(): pass
'''


def run(pytester: pytest.Pytester, *args: str) -> dict[str, dict]:
    pytester.makepyfile(test_checks=CHECKS)
    pytester.runpytest_subprocess(*PLUGINS, *args)
    rep = json.loads((pytester.path / "r.json").read_text())
    return {t["metadata"]["check"]["id"]: t["metadata"]["verdict"] for t in rep["tests"]}


def test_outcomes_are_classified(pytester: pytest.Pytester) -> None:
    v = run(pytester)
    assert set(v) == {"good", "bad", "env", "bug"}  # the unmarked test is not a check
    assert v["good"]["status"] == "passed"
    assert v["bad"]["status"] == "failed"
    assert v["bad"]["feedback"] == ("What the grader did: did a thing\nWhat it saw: saw another\n"
                                    "The rule: the rule\nHint: the hint")
    assert v["env"]["status"] == "error" and "no free port" in v["env"]["feedback"]
    assert v["bug"]["status"] == "error" and "Internal grader error" in v["bug"]["feedback"]


def test_only_and_visible_only_select(pytester: pytest.Pytester) -> None:
    assert set(run(pytester, "--only", "bad,bug")) == {"bad", "bug"}


BUDGET = '''
import time
import pytest
import grader.session
from grader.session import GradingSession
from grader.verdict import fail

grader.session.GRADING_BUDGET = 1.0

@pytest.fixture(scope="session")
def grading():
    s = GradingSession.__new__(GradingSession)  # no sandbox: these checks never build
    s.failed_seconds, s.failed_checks, s.measured = 0.0, [], {}
    def built():
        raise LookupError("would build and start")
    s.built = built
    return s

def start(grading):
    try:
        grading.start()
    except LookupError:
        pass

@pytest.mark.check(id="slow-pass", points=1, visibility="visible")
def test_slow_pass(grading): time.sleep(1.3)

@pytest.mark.check(id="starts-after-slow-pass", points=1, visibility="visible")
def test_start_1(grading): start(grading)

@pytest.mark.check(id="slow-fail", points=1, visibility="visible")
def test_slow_fail(grading):
    time.sleep(1.2)
    fail("waited", "no answer")

@pytest.mark.check(id="starts-after-slow-fail", points=1, visibility="visible")
def test_start_2(grading): start(grading)

@pytest.mark.check(id="and-the-next", points=1, visibility="visible")
def test_start_3(grading): start(grading)
'''


def test_budget_counts_only_the_time_of_failed_checks(pytester: pytest.Pytester) -> None:
    """Past the grading budget the checks left are failed unrun, but only the seconds spent in
    checks the server failed count: a slow machine never costs a correct server a check."""
    pytester.makepyfile(test_checks=BUDGET)
    pytester.runpytest_subprocess(*PLUGINS)
    rep = json.loads((pytester.path / "r.json").read_text())
    v = {t["metadata"]["check"]["id"]: t["metadata"]["verdict"] for t in rep["tests"]}
    assert v["slow-pass"]["status"] == "passed"
    assert v["starts-after-slow-pass"]["status"] == "passed"  # 1.3 s of passing checks: not charged
    assert v["slow-fail"]["status"] == "failed"
    for cid in ("starts-after-slow-fail", "and-the-next"):
        assert v[cid]["status"] == "failed", v[cid]
        assert "the checks your server failed (slow-fail) had already taken 1 s" in v[cid]["feedback"]
        assert "budget of 1 s" in v[cid]["feedback"]


def test_visible_only_drops_hidden(pytester: pytest.Pytester) -> None:
    assert set(run(pytester, "--visible-only")) == {"good", "bad", "env"}


MALFORMED = {
    "missing-points": ('@pytest.mark.check(id="a", visibility="hidden")', "missing points"),
    "missing-visibility": ('@pytest.mark.check(id="a", points=5)', "missing visibility"),
    "missing-id": ('@pytest.mark.check(points=5, visibility="hidden")', "missing id"),
    "points-not-a-number": ('@pytest.mark.check(id="a", points="5", visibility="hidden")',
                            "points must be a whole number, 0 or more, got '5'"),
    "negative-points": ('@pytest.mark.check(id="a", points=-1, visibility="hidden")', "got -1"),
    "unknown-visibility": ('@pytest.mark.check(id="a", points=5, visibility="secret")',
                           "visibility must be 'visible' or 'hidden', got 'secret'"),
    "id-not-a-string": ('@pytest.mark.check(id=7, points=5, visibility="hidden")', "id must be a non-empty string"),
    "misspelt-argument": ('@pytest.mark.check(id="a", point=5, visibility="hidden")', "unknown argument(s) point"),
}


def test_malformed_check_markers_are_a_usage_error_naming_each_file(pytester: pytest.Pytester) -> None:
    """An instructor's extra checks with a broken marker: one usage error that names the file, the
    line and the problem of each, never a KeyError out of the grading."""
    for case, (marker, _) in MALFORMED.items():
        pytester.makepyfile(**{f"test_{case.replace('-', '_')}": f"import pytest\n\n{marker}\ndef test_mine(): pass\n"})
    check = '@pytest.mark.check(id="long-session", points=5, visibility="hidden")'
    pytester.makepyfile(test_one=f"import pytest\n\n{check}\ndef test_a(): pass\n",
                        test_two=f"import pytest\n\n{check}\ndef test_b(): pass\n")
    r = pytester.runpytest_subprocess(*PLUGINS)
    assert r.ret == pytest.ExitCode.USAGE_ERROR
    err = r.stderr.str()
    assert "KeyError" not in err + r.stdout.str()
    for case, (_, said) in MALFORMED.items():
        f = pytester.path / f"test_{case.replace('-', '_')}.py"
        assert f"ERROR: malformed check marker in {f}, line 3 (test_mine): " in err, (case, err)
        line = next(ln for ln in err.splitlines() if str(f) in ln)
        assert said in line, (case, line)
    assert (f"ERROR: malformed check marker in {pytester.path / 'test_two.py'}, line 3 (test_b): duplicate id "
            f"'long-session', already the id of test_a in {pytester.path / 'test_one.py'}") in err, err


def test_a_check_of_another_lab_is_not_a_duplicate(pytester: pytest.Pytester) -> None:
    check = '@pytest.mark.check(id="x", points=5, visibility="hidden")'
    pytester.makepyfile(test_one=f"import pytest\nLAB = 'fork'\n{check}\ndef test_a(): pass\n",
                        test_two=f"import pytest\nLAB = 'thread'\n{check}\ndef test_b(): pass\n")
    r = pytester.runpytest_subprocess(*PLUGINS,
                                      "--lab", "fork")
    assert r.ret == 0 and "1 passed, 1 deselected" in r.stdout.str()
