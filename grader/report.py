"""From pytest-json-report's document to the summary, and from summaries to what people and tools
read: the terminal table, Gradescope's results.json, and a class's CSV gradebook, JUnit XML and
terminal gradebook."""
from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from xml.etree import ElementTree as ET

from . import catalogue
from .atomic import write_atomic
from .errors import ReportError
from .results import CheckResult, Summary

if TYPE_CHECKING:
    from .roster import Student

# A class's results: (student, the summary of one of their labs), in the gradebook's order.
Graded = tuple[str, Summary]


def summarize(*, lab: str, submission: str, pytest_report: dict[str, Any], seconds: float) -> Summary:
    """The summary of DESIGN.md, checks in catalogue order (extra checks after)."""
    order = {c.id: i for i, c in enumerate(catalogue.checks(lab))}
    rows = []
    for t in pytest_report.get("tests", []):
        meta = t.get("metadata") or {}
        check, verdict = meta.get("check"), meta.get("verdict") or {}
        if not check:
            continue
        status: Any = verdict.get("status")
        feedback = verdict.get("feedback", "")
        if status not in ("passed", "failed", "error"):
            status, feedback = "error", f"Internal grader error (not charged): outcome {t.get('outcome')!r}"
        elif status == "passed" and t.get("outcome") != "passed":
            status, feedback = "error", f"Internal grader error (not charged): pytest outcome {t.get('outcome')}"
        secs = sum(float((t.get(ph) or {}).get("duration", 0.0)) for ph in ("setup", "call", "teardown"))
        rows.append(CheckResult(id=check["id"], status=status, score=check["points"] if status == "passed" else 0,
                                max_score=check["points"], visibility=check["visibility"], feedback=feedback,
                                seconds=round(secs, 2), metrics=verdict.get("metrics"),
                                details=verdict.get("details")))
    if not rows:
        raise ReportError("the checks produced no results")
    rows.sort(key=lambda r: order.get(r.id, len(order)))
    return Summary.of_checks(lab=lab, submission=submission, seconds=seconds, checks=rows)


def ungradable(*, lab: str, submission: str, reason: str, seconds: float) -> Summary:
    """A summary for a submission the grader could not grade at all (never the student's fault)."""
    return Summary.ungradable(lab=lab, submission=submission, reason=reason, seconds=seconds)


def gradescope(summary: Summary) -> dict[str, Any]:
    """Gradescope's results.json (https://gradescope-autograders.readthedocs.io, 'Output format')."""
    tests = []
    for c in summary.checks:
        tests.append({
            "name": c.id + ("" if c.charged else " (not graded: environment error)"),
            "score": c.score, "max_score": c.max_score if c.charged else 0,
            "status": "passed" if c.status == "passed" else "failed",
            "output": c.feedback,
            "visibility": "visible" if c.visibility == "visible" else "after_published",
        })
    head = f"{summary.lab}: {summary.score}/{summary.max_score}"
    if not summary.gradable:
        head = f"{summary.lab}: could not be graded: {summary.error or ''}"
    elif summary.environment_errors:
        head += (f" ({summary.environment_errors} check(s) hit an environment error and were not charged: "
                 "ask for a regrade)")
    return {"score": summary.score, "execution_time": summary.seconds, "output": head,
            "visibility": "visible", "stdout_visibility": "hidden", "tests": tests}


STATUS_STYLE = {"passed": ("PASS", "green"), "failed": ("FAIL", "red"), "error": ("ERROR", "yellow")}


def render(summary: Summary, *, rerun: str, console: Any = None) -> None:
    """The terminal table and the feedback of every check that did not pass."""
    from rich.console import Console
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    con = console or Console()
    if not summary.gradable:
        con.print(f"[bold red]Could not grade {summary.submission}:[/] {summary.error or ''}")
        return
    t = Table(title=f"{summary.lab} lab: {summary.submission}", title_justify="left")
    for col, just in (("check", "left"), ("result", "left"), ("points", "right"), ("seconds", "right")):
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    for c in summary.checks:
        word, colour = STATUS_STYLE[c.status]
        hidden = " (hidden)" if c.visibility == "hidden" else ""
        t.add_row(c.id + hidden, f"[{colour}]{word}[/]", f"{c.score}/{c.max_score}", f"{c.seconds:.1f}")
    t.add_section()
    t.add_row("[bold]total[/]", "", f"[bold]{summary.score}/{summary.max_score}[/]", f"{summary.seconds:.1f}")
    con.print(t)
    build_failed = any(c.id == "build" and c.status == "failed" for c in summary.checks)
    for c in summary.checks:
        if c.status == "passed" or (build_failed and c.id != "build"):
            continue
        word, colour = STATUS_STYLE[c.status]
        body = c.feedback + f"\n\nRerun just this check: {rerun} --only {c.id}"
        # feedback quotes the server's own output: shown as text, never read as markup
        con.print(Panel(Text(body), title=f"[{colour}]{word}[/] {c.id}", title_align="left", expand=True))
    if build_failed:
        con.print("[red]The build failed: every other check scored 0. Fix the build first.[/]")


# ----------------------------------------------------------------------------- a class's results

def _labs(rows: Sequence[Graded]) -> list[str]:
    return [lab for lab in catalogue.LABS if any(s.lab == lab for _, s in rows)]


def write_gradebook(path: Path, rows: Sequence[Graded], roster: Mapping[str, Student] | None = None) -> None:
    """One row per student; a column per lab and per lab:check. With a roster: each student's name
    and SIS id, and a row ("missing" labs, total 0) for a roster student with nothing graded."""
    labs = _labs(rows)
    cols = ["student", *(["name", "sis_id"] if roster is not None else []), "total"]
    for lab in labs:
        ids = [c.id for c in catalogue.checks(lab)]
        ids += sorted({c.id for _, s in rows if s.lab == lab for c in s.checks} - set(ids))  # extra checks
        cols += [lab] + [f"{lab}:{cid}" for cid in ids]
    book: dict[str, dict[str, Any]] = {}
    for student, s in rows:
        r = book.setdefault(student, {"student": student, "total": 0})
        r[s.lab] = s.score if s.gradable else "not graded"
        r["total"] += s.score
        for c in s.checks:
            r[f"{s.lab}:{c.id}"] = c.score if c.charged else "error"
    for d, st in (roster or {}).items():
        if d not in book:
            book[d] = {"student": d, "total": 0, **{lab: "missing" for lab in labs}}
        book[d].update(name=st.name, sis_id=st.sis_id)
    text = io.StringIO(newline="")
    w = csv.DictWriter(text, fieldnames=cols, restval="")
    w.writeheader()
    for student in sorted(book):
        w.writerow(book[student])
    write_atomic(path, text.getvalue())


def write_junit(path: Path, rows: Sequence[Graded]) -> None:
    """A test suite per submission, a test case per check (failed: a failure; error: an error)."""
    suites = ET.Element("testsuites", name="labgrade")
    for student, s in rows:
        label = f"{student}/{s.lab}"
        suite = ET.SubElement(suites, "testsuite", name=label, tests=str(len(s.checks)),
                              failures=str(sum(c.status == "failed" for c in s.checks)),
                              errors=str(s.environment_errors + (not s.gradable)), time=f"{s.seconds:.2f}")
        if not s.gradable:
            case = ET.SubElement(suite, "testcase", classname=label, name="grading", time="0")
            ET.SubElement(case, "error", message="could not be graded").text = s.error or ""
        for c in s.checks:
            case = ET.SubElement(suite, "testcase", classname=label, name=c.id, time=f"{c.seconds:.2f}")
            if c.status == "failed":
                ET.SubElement(case, "failure", message=f"0/{c.max_score}").text = c.feedback
            elif c.status == "error":
                ET.SubElement(case, "error", message="environment error").text = c.feedback
    data = io.BytesIO()
    ET.ElementTree(suites).write(data, encoding="utf-8", xml_declaration=True)
    write_atomic(path, data.getvalue())


def print_gradebook(rows: Sequence[Graded], console: Any = None) -> None:
    """The class's table (a row per student, a column per lab) and the checks most failed."""
    from rich.console import Console
    from rich.table import Table

    con = console or Console()
    labs = _labs(rows)
    t = Table(title="Gradebook", title_justify="left")
    t.add_column("student")
    for lab in labs:
        t.add_column(lab, justify="right")
    t.add_column("total", justify="right")
    by = {(student, s.lab): s for student, s in rows}
    for st in sorted({student for student, _ in rows}):
        cells: list[str] = []
        total: float = 0
        for lab in labs:
            s = by.get((st, lab))
            if s is None:
                cells.append("-")
            elif not s.gradable:
                cells.append("[yellow]not graded[/]")
            else:
                cells.append(f"{s.score}/{s.max_score}")
                total += s.score
        t.add_row(st, *cells, str(total))
    con.print(t)
    # the class's distribution per check: which checks most students fail
    d = Table(title="Checks failed, per lab (most failed first)", title_justify="left")
    d.add_column("lab")
    d.add_column("check")
    d.add_column("failed by", justify="right")
    for lab in labs:
        graded = [s for _, s in rows if s.lab == lab and s.gradable]
        counts = {c.id: 0 for c in catalogue.checks(lab)}
        for s in graded:
            for c in s.checks:
                if c.status == "failed":
                    counts[c.id] = counts.get(c.id, 0) + 1
        for cid, n in sorted(counts.items(), key=lambda kv: -kv[1]):
            if n:
                d.add_row(lab, cid, f"{n}/{len(graded)}")
    con.print(d)
    from .metrics import table  # and the distribution of what checks measured (vs-reference's figures)

    if measured := table([s for _, s in rows if s.gradable]):
        con.print(measured, highlight=False, soft_wrap=True)
