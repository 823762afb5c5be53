"""`labgrade diff OLD NEW`: what a regrade changed, between two `labgrade batch` outputs.

Every student, lab and check whose score changed, with both feedbacks and both grader versions;
the totals that moved; lowered scores first and counted last, so that a regrade that takes points
away cannot be missed. Exit status 0: nothing changed; 1: something did (as diff(1)).
"""
from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path

from .atomic import write_atomic
from .errors import ReportError, UsageError
from .results import Summary, load_summary

_SUMMARY = re.compile(r"^[^.]+\.json$")  # <lab>.json; not .results.json, .runK.json, .json.part


@dataclass(frozen=True)
class Change:
    student: str
    lab: str
    check: str            # a check id, or "(total)" for the lab's score, or "(summary)" when one side lacks it
    old: float | None     # None: absent on that side
    new: float | None
    old_feedback: str
    new_feedback: str
    old_version: str
    new_version: str

    @property
    def lowered(self) -> bool:
        return (self.old or 0) > (self.new or 0)


def load_results(out: Path) -> dict[tuple[str, str], Summary]:
    if not out.is_dir():
        raise UsageError(f"{out} is not a directory of results (`labgrade batch --out`)")
    found = {}
    for f in sorted(out.glob("*/*.json")):
        if _SUMMARY.match(f.name):
            try:
                found[(f.parent.name, f.stem)] = load_summary(f)
            except ReportError as e:
                raise UsageError(f"{f}: not a valid summary ({e})") from e
    if not found:
        raise UsageError(f"no summaries in {out} (expected {out}/<student>/<lab>.json)")
    return found


def changes(old: dict[tuple[str, str], Summary], new: dict[tuple[str, str], Summary]) -> list[Change]:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        va, vb = (a.grader_version or "?") if a else "-", (b.grader_version or "?") if b else "-"
        if a is None or b is None or a.gradable != b.gradable:
            def said(s: Summary | None) -> str:
                return "absent" if s is None else s.error or "" if not s.gradable else f"graded {s.score}/{s.max_score}"
            out.append(Change(*key, "(summary)", a.score if a else None, b.score if b else None, said(a), said(b),
                              va, vb))
            continue
        ca, cb = {c.id: c for c in a.checks}, {c.id: c for c in b.checks}
        for cid in [*ca, *(c for c in cb if c not in ca)]:
            x, y = ca.get(cid), cb.get(cid)
            if (x.score if x else None) != (y.score if y else None):
                out.append(Change(*key, cid, x.score if x else None, y.score if y else None,
                                  x.feedback if x else "(no such check)", y.feedback if y else "(no such check)",
                                  va, vb))
        if a.score != b.score:
            out.append(Change(*key, "(total)", a.score, b.score, f"{a.score}/{a.max_score}",
                              f"{b.score}/{b.max_score}", va, vb))
    return out


def write_csv(path: Path, rows: list[Change]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["student", "lab", "check", "old", "new", "lowered", "old_feedback", "new_feedback",
                "old_grader_version", "new_grader_version"])
    for c in rows:
        w.writerow([c.student, c.lab, c.check, "" if c.old is None else c.old, "" if c.new is None else c.new,
                    "yes" if c.lowered else "", c.old_feedback, c.new_feedback, c.old_version, c.new_version])
    write_atomic(path, buf.getvalue())


def run_diff(old_dir: Path, new_dir: Path, csv_path: Path | None = None) -> int:
    from rich.console import Console

    con = Console()
    rows = changes(load_results(old_dir), load_results(new_dir))
    if csv_path:
        write_csv(csv_path, rows)
    if not rows:
        con.print(f"No score changed between {old_dir} and {new_dir}.")
        return 0

    def num(v: float | None) -> str:
        return "absent" if v is None else f"{v:g}"

    for c in sorted(rows, key=lambda c: not c.lowered):  # lowered first, then as found (a stable sort)
        mark = "[bold red]LOWER[/]" if c.lowered else "[green]higher[/]"
        con.print(f"{mark} {c.student}/{c.lab} {c.check}: {num(c.old)} -> {num(c.new)} "
                  f"(grader {c.old_version} -> {c.new_version})", highlight=False)
        if c.check != "(total)":
            con.print(f"    before: {c.old_feedback.splitlines()[0] if c.old_feedback else '(passed)'}",
                      highlight=False)
            con.print(f"    after:  {c.new_feedback.splitlines()[0] if c.new_feedback else '(passed)'}",
                      highlight=False)
    totals = [c for c in rows if c.check in ("(total)", "(summary)")]
    down = sorted({f"{c.student}/{c.lab}" for c in totals if c.lowered})
    up = sorted({f"{c.student}/{c.lab}" for c in totals if not c.lowered})
    con.print(f"{len(rows)} change(s): {len(down)} submission(s) LOSE points"
              + (f" ({', '.join(down)})" if down else "") + f", {len(up)} gain", style="bold red" if down else None,
              highlight=False)
    return 1
