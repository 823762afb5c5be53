"""The summary of a grading and its checks' results, as typed values.

`Summary` and `CheckResult` are the summary JSON of DESIGN.md, and nothing else: `from_json`
checks a document against the schema (grader/schema.py) and refuses what does not fit, `to_json`
gives the document back, key for key, with the optional fields ("Growing the interfaces")
present only when set. A summary cannot be built invalid: construction checks the schema too.
Fields this version does not know are dropped on reading.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from .atomic import write_json
from .errors import ReportError
from .schema import OPTIONAL_CHECK, OPTIONAL_TOP, validate_summary

Status = Literal["passed", "failed", "error"]
Visibility = Literal["visible", "hidden"]


@dataclass(frozen=True)
class CheckResult:
    id: str
    status: Status            # passed, failed, or error (the environment's fault: not charged)
    score: float              # points earned (an int unless a check gives fractions)
    max_score: float          # the check's points
    visibility: Visibility    # visible (self-check) or hidden (instructor grading only)
    feedback: str             # what was done, what was seen, the rule, a hint
    seconds: float
    metrics: Mapping[str, float] | None = None  # e.g. throughput_lines_per_s: units in the key
    details: str | None = None  # a failure's evidence in full, for the instructor (not in Gradescope's output)

    def __post_init__(self) -> None:
        if self.metrics is not None:  # frozen all the way down
            object.__setattr__(self, "metrics", MappingProxyType(dict(self.metrics)))

    @property
    def charged(self) -> bool:
        """Counts in max_score: an environment error is not the submission's loss."""
        return self.status != "error"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "status": self.status, "score": self.score,
                               "max_score": self.max_score, "visibility": self.visibility,
                               "feedback": self.feedback, "seconds": self.seconds}
        if self.metrics is not None:
            out["metrics"] = dict(self.metrics)
        if self.details:
            out["details"] = self.details
        return out

    @classmethod
    def _from_valid(cls, c: dict[str, Any]) -> CheckResult:
        return cls(id=c["id"], status=c["status"], score=c["score"], max_score=c["max_score"],
                   visibility=c["visibility"], feedback=c["feedback"], seconds=c["seconds"],
                   **{k: c[k] for k in OPTIONAL_CHECK if k in c})


@dataclass(frozen=True)
class Summary:
    lab: str
    submission: str           # the label, `student/lab`
    gradable: bool            # False: the grader could not grade it at all (never the student's fault)
    score: float
    max_score: float          # of the checks charged (environment errors left out)
    seconds: float
    checks: tuple[CheckResult, ...]
    error: str | None = None  # why it could not be graded
    grader_version: str | None = None
    catalogue_sha256: str | None = None
    submission_sha256: str | None = None
    seed: int | None = None
    commit: str | None = None  # where graded from git
    committed_at: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "checks", tuple(self.checks))
        validate_summary(self.to_json())

    @classmethod
    def from_json(cls, obj: Any) -> Summary:
        """The summary in `obj` (a parsed JSON document); ReportError saying what is wrong otherwise."""
        validate_summary(obj)
        return cls(lab=obj["lab"], submission=obj["submission"], gradable=obj["gradable"], score=obj["score"],
                   max_score=obj["max_score"], seconds=obj["seconds"],
                   checks=tuple(CheckResult._from_valid(c) for c in obj["checks"]),
                   **{k: obj[k] for k in OPTIONAL_TOP if k in obj})

    @classmethod
    def of_checks(cls, *, lab: str, submission: str, seconds: float, checks: list[CheckResult]) -> Summary:
        """A graded summary: its score and max_score are its checks' (errors not charged)."""
        return cls(lab=lab, submission=submission, gradable=True, score=sum(c.score for c in checks),
                   max_score=sum(c.max_score for c in checks if c.charged), seconds=round(seconds, 2),
                   checks=tuple(checks))

    @classmethod
    def ungradable(cls, *, lab: str, submission: str, reason: str, seconds: float) -> Summary:
        """A submission the grader could not grade at all (never the student's fault)."""
        return cls(lab=lab, submission=submission, gradable=False, score=0, max_score=0,
                   seconds=round(seconds, 2), checks=(), error=reason)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"lab": self.lab, "submission": self.submission, "gradable": self.gradable,
                               "score": self.score, "max_score": self.max_score, "seconds": self.seconds,
                               "checks": [c.to_json() for c in self.checks]}
        for k in OPTIONAL_TOP:
            v = getattr(self, k)
            if v is not None:
                out[k] = v
        return out

    def replace(self, **changes: Any) -> Summary:
        return dataclasses.replace(self, **changes)

    @property
    def environment_errors(self) -> int:
        """Checks that hit an environment error (not charged)."""
        return sum(not c.charged for c in self.checks)

    def write(self, path: Path | str) -> None:
        write_json(path, self.to_json())


def load_summary(path: Path | str) -> Summary:
    """The summary in the file `path`; ReportError saying why there is none (unreadable, not JSON,
    not a summary)."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ReportError(f"{path}: cannot read it: {e}") from e
    try:
        obj = json.loads(text)
    except ValueError as e:
        raise ReportError(f"{path}: not JSON: {e}") from e
    try:
        return Summary.from_json(obj)
    except ReportError as e:
        raise ReportError(f"{path}: {e}") from e
