"""`labgrade batch --repeat N`: every submission graded N times, each with its own seed; what
differed between the gradings (`flicker.csv`), and the summary recorded for the gradebook.

The rule for the recorded summary: of the N gradings, the one with the median score (the lower
median when N is even; of equal scores, the earliest). It is one real grading, so its feedback
matches its score, and one unlucky or lucky grading alone never decides it.
"""
from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

from .atomic import write_atomic
from .results import Summary

FLICKER_COLUMNS = ["student", "lab", "check", "verdicts", "scores", "seeds", "feedback_of_first_odd_one"]


def repeat_path(summary_path: Path, k: int) -> Path:
    """Where grading k (1..N) of a submission goes, beside its recorded summary."""
    return summary_path.with_name(f"{summary_path.stem}.run{k}.json")


def recorded(runs: Sequence[Summary]) -> Summary:
    """The summary kept for the gradebook: the median score's grading (see the module's rule)."""
    order = sorted(range(len(runs)), key=lambda i: (runs[i].score if runs[i].gradable else -1, i))
    median = order[(len(runs) - 1) // 2]
    return runs[median]


def flickers(student: str, runs: Sequence[Summary]) -> list[dict[str, str]]:
    """A row per check whose verdict was not the same in every grading (and one for gradability)."""
    lab = runs[0].lab
    seeds = " ".join(str(r.seed) for r in runs)
    rows = []
    if len({r.gradable for r in runs}) > 1:
        rows.append({"student": student, "lab": lab, "check": "(gradable)",
                     "verdicts": " ".join("graded" if r.gradable else "not-graded" for r in runs),
                     "scores": " ".join(str(r.score) for r in runs), "seeds": seeds,
                     "feedback_of_first_odd_one": next((r.error or "" for r in runs if not r.gradable), "")})
    ids = [c.id for c in runs[0].checks]
    for cid in ids:
        per = [next((c for c in r.checks if c.id == cid), None) for r in runs]
        verdicts = [c.status if c else "absent" for c in per]
        if len(set(verdicts)) == 1:
            continue
        majority = max(sorted(set(verdicts)), key=verdicts.count)
        odd = next(c for c, v in zip(per, verdicts, strict=True) if v != majority)
        rows.append({"student": student, "lab": lab, "check": cid, "verdicts": " ".join(verdicts),
                     "scores": " ".join(str(c.score if c else 0) for c in per), "seeds": seeds,
                     "feedback_of_first_odd_one": odd.feedback if odd else ""})
    return rows


def write_flicker(path: Path, rows: list[dict[str, str]]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=FLICKER_COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(sorted(rows, key=lambda r: (r["student"], r["lab"], r["check"])))
    write_atomic(path, buf.getvalue().encode())
