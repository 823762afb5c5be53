"""How a check says what went wrong: a verdict a student can act on."""
from __future__ import annotations

from typing import NoReturn


class CheckFailed(Exception):
    """The submission lost this check's points; the message is the student's feedback."""

    def __init__(self, did: str, saw: str, rule: str = "", hint: str = "", details: str = "") -> None:
        self.did, self.saw, self.rule, self.hint = did, saw, rule, hint
        self.details = details  # the evidence in full (a sanitizer's whole report): the summary's, not the feedback's
        super().__init__(self.feedback)

    @property
    def feedback(self) -> str:
        parts = [f"What the grader did: {self.did}", f"What it saw: {self.saw}"]
        if self.rule:
            parts.append(f"The rule: {self.rule}")
        if self.hint:
            parts.append(f"Hint: {self.hint}")
        return "\n".join(parts)


class NotGraded(CheckFailed):
    """A check that could not run because of the submission (its build failed)."""

    def __init__(self, why: str) -> None:
        Exception.__init__(self, why)
        self.did, self.saw, self.rule, self.hint, self.details = "", why, "", "", ""

    @property
    def feedback(self) -> str:
        return self.saw


def fail(did: str, saw: str, *, rule: str = "", hint: str = "", details: str = "") -> NoReturn:
    raise CheckFailed(did, saw, rule, hint, details)
