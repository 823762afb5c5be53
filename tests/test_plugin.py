"""The plugin classifies outcomes: a CheckFailed is the student's loss, an environment error
or a grader bug is not charged; --only and --visible-only select by marker."""
from __future__ import annotations

import json

import pytest

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
    pytester.runpytest_subprocess("-p", "grader.plugin", "--json-report", "--json-report-file=r.json", *args)
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


def test_visible_only_drops_hidden(pytester: pytest.Pytester) -> None:
    assert set(run(pytester, "--visible-only")) == {"good", "bad", "env"}
