"""`labgrade batch`: grade ROOT/<student>/<lab>/ for every student, in parallel, resumably.

Each grading runs in its own `labgrade grade` process (its own sandbox, subreaper and
cleanup), so one submission's crash, hang or hostility cannot reach the others or the batch.
"""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

from . import catalogue
from .errors import ReportError, UsageError
from .report import gradescope, ungradable
from .schema import validate_summary

PER_SUBMISSION_TIMEOUT = 900.0


@dataclass(frozen=True)
class Job:
    student: str
    lab: str
    directory: Path

    @property
    def label(self) -> str:
        return f"{self.student}/{self.lab}"


def find_jobs(root: Path, labs: Iterable[str]) -> list[Job]:
    if not root.is_dir():
        raise UsageError(f"{root} is not a directory")
    labs = list(labs)
    bad = [lab for lab in labs if lab not in catalogue.LABS]
    if bad:
        raise UsageError(f"unknown lab(s) {', '.join(bad)}")
    return [Job(s.name, lab, s / lab) for s in sorted(root.iterdir()) if s.is_dir() and not s.name.startswith(".")
            for lab in labs if (s / lab).is_dir()]


def summary_path(out: Path, job: Job) -> Path:
    return out / job.student / f"{job.lab}.json"


def load_done(out: Path, job: Job) -> dict[str, Any] | None:
    """A finished, valid, gradable summary of this job, or None (then it is graded again)."""
    try:
        s = validate_summary(json.loads(summary_path(out, job).read_text()))
    except (OSError, ValueError, ReportError):
        return None
    return s if s["gradable"] else None


def choose_isolation(isolation: str) -> str:
    if isolation != "auto":
        return isolation
    try:
        from .isolation import docker as dockeriso

        if dockeriso.engine_available() and dockeriso.image_present(dockeriso.DEFAULT_IMAGE):
            return "docker"
    except Exception:
        pass
    print("labgrade: no Docker engine or grader image: grading with the weaker `local` isolation",
          file=sys.stderr)
    return "local"


def grade_one(job: Job, out: Path, isolation: str, reference_root: Path | None,
              extra_checks: Path | None = None) -> dict[str, Any]:
    """Grade one submission in a child `labgrade grade` process; always returns a summary."""
    dest = summary_path(out, job)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".json.part")
    argv = [sys.executable, "-m", "grader", "grade", job.lab, str(job.directory), "--json", str(tmp),
            "--isolation", isolation, "--quiet"]
    if reference_root:
        argv += ["--reference-root", str(reference_root)]
    if extra_checks:
        argv += ["--extra-checks", str(extra_checks)]
    t0 = time.monotonic()
    reason = ""
    try:
        r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=PER_SUBMISSION_TIMEOUT)
        reason = r.stderr.decode(errors="replace").strip()[-2000:]
        summary = validate_summary(json.loads(tmp.read_text()))
        summary["submission"] = job.label
    except subprocess.TimeoutExpired:
        summary = ungradable(lab=job.lab, submission=job.label, seconds=time.monotonic() - t0,
                             reason=f"grading did not finish within {PER_SUBMISSION_TIMEOUT:.0f} s")
    except (OSError, ValueError, ReportError) as e:
        summary = ungradable(lab=job.lab, submission=job.label, seconds=time.monotonic() - t0,
                             reason=reason or f"no valid report: {e}")
    tmp.unlink(missing_ok=True)
    (dest.parent / f"{job.lab}.results.json").write_text(json.dumps(gradescope(summary), indent=2) + "\n")
    part = dest.with_suffix(".json.tmp")
    part.write_text(json.dumps(summary, indent=2) + "\n")
    os.replace(part, dest)  # atomic: a killed batch never leaves a half-written summary
    return summary


def run_batch(*, root: Path, out: Path, labs: list[str], jobs: int = 0, isolation: str = "auto",
              force: bool = False, reference_root: Path | None = None, extra_checks: Path | None = None) -> int:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    con = Console(stderr=True)
    todo_all = find_jobs(root, labs or catalogue.LABS)
    if not todo_all:
        raise UsageError(f"no submissions under {root} (expected {root}/<student>/<lab>/)")
    out.mkdir(parents=True, exist_ok=True)
    iso = choose_isolation("local" if extra_checks is not None and isolation == "auto" else isolation)
    jobs = jobs or os.cpu_count() or 1
    results: dict[Job, dict[str, Any]] = {}
    todo = []
    for j in todo_all:
        done = None if force else load_done(out, j)
        if done:
            results[j] = done
        else:
            todo.append(j)
    con.print(f"Grading {len(todo)} submission(s) ({len(results)} already graded) with {jobs} job(s), "
              f"isolation {iso}")
    t0 = time.monotonic()
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("ETA"), TimeRemainingColumn(), console=con, transient=False) as bar:
        task = bar.add_task("grading", total=len(todo))
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            futures = {pool.submit(grade_one, j, out, iso, reference_root, extra_checks): j for j in todo}
            for f in as_completed(futures):
                j = futures[f]
                results[j] = f.result()
                s = results[j]
                note = f"{s['score']}/{s['max_score']}" if s["gradable"] else "NOT GRADED"
                bar.console.print(f"  {j.label}: {note} ({s['seconds']:.1f} s)")
                bar.advance(task)
    ordered = [(j, results[j]) for j in todo_all]
    write_gradebook(out / "gradebook.csv", ordered)
    write_junit(out / "junit.xml", ordered)
    print_gradebook(ordered)
    con.print(f"Graded {len(todo)} in {time.monotonic() - t0:.1f} s; results in {out}")
    return 0 if all(s["gradable"] for _, s in ordered) else 1


def write_gradebook(path: Path, rows: list[tuple[Job, dict[str, Any]]]) -> None:
    """One row per student; a column per lab and per lab:check."""
    labs = [lab for lab in catalogue.LABS if any(j.lab == lab for j, _ in rows)]
    cols = ["student", "total"]
    for lab in labs:
        ids = [c.id for c in catalogue.checks(lab)]
        ids += sorted({c["id"] for j, s in rows if j.lab == lab for c in s["checks"]} - set(ids))  # extra checks
        cols += [lab] + [f"{lab}:{cid}" for cid in ids]
    book: dict[str, dict[str, Any]] = {}
    for j, s in rows:
        r = book.setdefault(j.student, {"student": j.student, "total": 0})
        r[j.lab] = s["score"] if s["gradable"] else "not graded"
        r["total"] += s["score"]
        for c in s["checks"]:
            r[f"{j.lab}:{c['id']}"] = c["score"] if c["status"] != "error" else "error"
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, restval="")
        w.writeheader()
        for student in sorted(book):
            w.writerow(book[student])


def write_junit(path: Path, rows: list[tuple[Job, dict[str, Any]]]) -> None:
    suites = ET.Element("testsuites", name="labgrade")
    for j, s in rows:
        checks = s["checks"]
        suite = ET.SubElement(suites, "testsuite", name=j.label, tests=str(len(checks)),
                              failures=str(sum(c["status"] == "failed" for c in checks)),
                              errors=str(sum(c["status"] == "error" for c in checks) + (not s["gradable"])),
                              time=f"{s['seconds']:.2f}")
        if not s["gradable"]:
            case = ET.SubElement(suite, "testcase", classname=j.label, name="grading", time="0")
            ET.SubElement(case, "error", message="could not be graded").text = s.get("error", "")
        for c in checks:
            case = ET.SubElement(suite, "testcase", classname=j.label, name=c["id"], time=f"{c['seconds']:.2f}")
            if c["status"] == "failed":
                ET.SubElement(case, "failure", message=f"0/{c['max_score']}").text = c["feedback"]
            elif c["status"] == "error":
                ET.SubElement(case, "error", message="environment error").text = c["feedback"]
    ET.ElementTree(suites).write(path, encoding="utf-8", xml_declaration=True)


def print_gradebook(rows: list[tuple[Job, dict[str, Any]]]) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console()
    labs = [lab for lab in catalogue.LABS if any(j.lab == lab for j, _ in rows)]
    t = Table(title="Gradebook", title_justify="left")
    t.add_column("student")
    for lab in labs:
        t.add_column(lab, justify="right")
    t.add_column("total", justify="right")
    students = sorted({j.student for j, _ in rows})
    by = {(j.student, j.lab): s for j, s in rows}
    for st in students:
        cells, total = [], 0
        for lab in labs:
            s = by.get((st, lab))
            if s is None:
                cells.append("-")
            elif not s["gradable"]:
                cells.append("[yellow]not graded[/]")
            else:
                cells.append(f"{s['score']}/{s['max_score']}")
                total += s["score"]
        t.add_row(st, *cells, str(total))
    con.print(t)
    # the class's distribution per check: which checks most students fail
    d = Table(title="Checks failed, per lab (most failed first)", title_justify="left")
    d.add_column("lab")
    d.add_column("check")
    d.add_column("failed by", justify="right")
    for lab in labs:
        graded = [s for j, s in rows if j.lab == lab and s["gradable"]]
        counts = {c.id: 0 for c in catalogue.checks(lab)}
        for s in graded:
            for c in s["checks"]:
                if c["status"] == "failed":
                    counts[c["id"]] = counts.get(c["id"], 0) + 1
        for cid, n in sorted(counts.items(), key=lambda kv: -kv[1]):
            if n:
                d.add_row(lab, cid, f"{n}/{len(graded)}")
    con.print(d)
