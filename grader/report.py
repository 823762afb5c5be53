"""From pytest-json-report's document to the summary JSON, and from the summary to what
people read: the terminal table, Gradescope's results.json."""
from __future__ import annotations

from typing import Any

from . import catalogue
from .errors import ReportError
from .schema import validate_summary


def summarize(*, lab: str, submission: str, pytest_report: dict[str, Any], seconds: float) -> dict[str, Any]:
    """The summary JSON of DESIGN.md, checks in catalogue order (extra checks after)."""
    order = {c.id: i for i, c in enumerate(catalogue.checks(lab))}
    rows = []
    for t in pytest_report.get("tests", []):
        meta = t.get("metadata") or {}
        check, verdict = meta.get("check"), meta.get("verdict") or {}
        if not check:
            continue
        status = verdict.get("status")
        feedback = verdict.get("feedback", "")
        if status not in ("passed", "failed", "error"):
            status, feedback = "error", f"Internal grader error (not charged): outcome {t.get('outcome')!r}"
        elif status == "passed" and t.get("outcome") != "passed":
            status, feedback = "error", f"Internal grader error (not charged): pytest outcome {t.get('outcome')}"
        secs = sum(float((t.get(ph) or {}).get("duration", 0.0)) for ph in ("setup", "call", "teardown"))
        rows.append({"id": check["id"], "status": status,
                     "score": check["points"] if status == "passed" else 0,
                     "max_score": check["points"], "visibility": check["visibility"],
                     "feedback": feedback, "seconds": round(secs, 2)})
    if not rows:
        raise ReportError("the checks produced no results")
    rows.sort(key=lambda r: order.get(r["id"], len(order)))
    summary = {"lab": lab, "submission": submission, "gradable": True,
               "score": sum(r["score"] for r in rows),
               "max_score": sum(r["max_score"] for r in rows if r["status"] != "error"),
               "seconds": round(seconds, 2), "checks": rows}
    return validate_summary(summary)


def ungradable(*, lab: str, submission: str, reason: str, seconds: float) -> dict[str, Any]:
    """A summary for a submission the grader could not grade at all (never the student's fault)."""
    return {"lab": lab, "submission": submission, "gradable": False, "score": 0, "max_score": 0,
            "seconds": round(seconds, 2), "checks": [], "error": reason}


def gradescope(summary: dict[str, Any]) -> dict[str, Any]:
    """Gradescope's results.json (https://gradescope-autograders.readthedocs.io, 'Output format')."""
    tests = []
    errors = 0
    for c in summary["checks"]:
        error = c["status"] == "error"
        errors += error
        tests.append({
            "name": c["id"] + (" (not graded: environment error)" if error else ""),
            "score": c["score"], "max_score": 0 if error else c["max_score"],
            "status": "passed" if c["status"] == "passed" else "failed",
            "output": c["feedback"],
            "visibility": "visible" if c["visibility"] == "visible" else "after_published",
        })
    head = f"{summary['lab']}: {summary['score']}/{summary['max_score']}"
    if not summary["gradable"]:
        head = f"{summary['lab']}: could not be graded: {summary.get('error', '')}"
    elif errors:
        head += f" ({errors} check(s) hit an environment error and were not charged: ask for a regrade)"
    return {"score": summary["score"], "execution_time": summary["seconds"], "output": head,
            "visibility": "visible", "stdout_visibility": "hidden", "tests": tests}


STATUS_STYLE = {"passed": ("PASS", "green"), "failed": ("FAIL", "red"), "error": ("ERROR", "yellow")}


def render(summary: dict[str, Any], *, rerun: str, console: Any = None) -> None:
    """The terminal table and the feedback of every check that did not pass."""
    from rich.console import Console
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    con = console or Console()
    if not summary["gradable"]:
        con.print(f"[bold red]Could not grade {summary['submission']}:[/] {summary.get('error', '')}")
        return
    t = Table(title=f"{summary['lab']} lab: {summary['submission']}", title_justify="left")
    for col, just in (("check", "left"), ("result", "left"), ("points", "right"), ("seconds", "right")):
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    for c in summary["checks"]:
        word, colour = STATUS_STYLE[c["status"]]
        hidden = " (hidden)" if c["visibility"] == "hidden" else ""
        t.add_row(c["id"] + hidden, f"[{colour}]{word}[/]", f"{c['score']}/{c['max_score']}", f"{c['seconds']:.1f}")
    t.add_section()
    t.add_row("[bold]total[/]", "", f"[bold]{summary['score']}/{summary['max_score']}[/]", f"{summary['seconds']:.1f}")
    con.print(t)
    build_failed = any(c["id"] == "build" and c["status"] == "failed" for c in summary["checks"])
    for c in summary["checks"]:
        if c["status"] == "passed" or (build_failed and c["id"] != "build"):
            continue
        word, colour = STATUS_STYLE[c["status"]]
        body = c["feedback"] + f"\n\nRerun just this check: {rerun} --only {c['id']}"
        # feedback quotes the server's own output: shown as text, never read as markup
        con.print(Panel(Text(body), title=f"[{colour}]{word}[/] {c['id']}", title_align="left", expand=True))
    if build_failed:
        con.print("[red]The build failed: every other check scored 0. Fix the build first.[/]")
