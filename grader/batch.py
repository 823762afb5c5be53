"""`labgrade batch`: grade ROOT/<student>/<lab>/ for every student, in parallel, resumably.

Each grading runs in its own `labgrade grade` process (its own sandbox, subreaper and
cleanup), so one submission's crash, hang or hostility cannot reach the others or the batch.
This module only schedules; the gradebook, JUnit and terminal writers are grader.report's.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import catalogue, deadlines
from .atomic import write_atomic, write_json
from .classreport import write_report
from .errors import ReportError, UsageError
from .hostpaths import shown_path
from .ownership import RESULTS_OWNER_ENV, results_owner  # noqa: F401 (batch.X for its callers)
from .processes import end_process
from .repeat import flickers, recorded, repeat_path, write_flicker
from .report import gradescope, print_gradebook, ungradable, write_gradebook, write_junit
from .results import Summary, load_summary
from .roster import load_roster, reconcile, say_unmatched
from .run import GRADE_TIMEOUT

# The child's own time limit (GRADE_TIMEOUT) fires first and cleans up after itself; this one
# is the backstop for a child that does not come back at all.
PER_SUBMISSION_TIMEOUT = GRADE_TIMEOUT + 120.0

# Each child `labgrade grade` dies with the batch, however the batch dies (SIGKILL included):
# the kernel sends it SIGINT when its parent goes (PR_SET_PDEATHSIG), and on SIGINT a grading
# stops its pytest process and removes every process of the submission. SIGINT is made to raise
# KeyboardInterrupt even when the batch was started with SIGINT ignored (`cmd &` in a script).
_CHILD_BOOT = (
    "import ctypes, os, signal, sys\n"
    "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
    "try:\n"
    "    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGINT))  # PR_SET_PDEATHSIG\n"
    "except (AttributeError, OSError):\n"
    "    pass  # not Linux: the child outlives a killed batch\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit(130)  # the batch is already gone\n"
    "from grader.cli import main\n"
    "sys.exit(main(sys.argv[2:]))\n"
)
STOP_GRACE = 30.0  # s a stopped child has to clean up (SIGINT) before it is killed
POLL = 0.5  # s between looks at whether the batch is stopping


@dataclass(frozen=True)
class Job:
    student: str
    lab: str
    directory: Path
    commit: str | None = None        # --deadline: the commit graded (directory: its scratch copy)
    committed_at: str | None = None

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


def load_done(out: Path, job: Job) -> Summary | None:
    """A finished, valid, gradable summary of this job, or None (then it is graded again)."""
    try:
        s = load_summary(summary_path(out, job))
    except ReportError:
        return None
    return s if s.gradable and (s.lab, s.submission) == (job.lab, job.label) else None


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
              extra_checks: Path | None = None, stopping: threading.Event | None = None,
              run: int = 0) -> Summary | None:
    """Grade one submission in a child `labgrade grade` process; returns its summary (a valid one,
    or an `ungradable` one saying why), or None when the batch was stopped meanwhile (`stopping`
    set: the child is ended, nothing is written, and a rerun grades it). `run` k > 0: the k-th of
    its repeated gradings (`--repeat`), written beside its summary (see grader.repeat)."""
    stopping = stopping or threading.Event()
    dest = summary_path(out, job) if not run else repeat_path(summary_path(out, job), run)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".json.part")
    tmp.unlink(missing_ok=True)
    argv = [sys.executable, "-c", _CHILD_BOOT, str(os.getpid()), "grade", job.lab, str(job.directory),
            "--json", str(tmp), "--isolation", isolation, "--quiet"]
    if reference_root:
        argv += ["--reference-root", str(reference_root)]
    if extra_checks:
        argv += ["--extra-checks", str(extra_checks)]
    if stopping.is_set():
        return None
    t0 = time.monotonic()
    reason = ""
    try:
        rc, err = _run_child(argv, t0 + PER_SUBMISSION_TIMEOUT, stopping)
        if stopping.is_set() and rc != 0:
            tmp.unlink(missing_ok=True)
            return None
        reason = (err or b"").decode(errors="replace").strip()[-2000:]
        summary = load_summary(tmp).replace(submission=job.label, commit=job.commit, committed_at=job.committed_at)
    except TimeoutError as e:
        summary = ungradable(lab=job.lab, submission=job.label, seconds=time.monotonic() - t0, reason=str(e))
    except (OSError, ReportError) as e:
        summary = ungradable(lab=job.lab, submission=job.label, seconds=time.monotonic() - t0,
                             reason=reason or f"no valid report: {e}")
    tmp.unlink(missing_ok=True)
    return record(out, job, run, summary)


def record(out: Path, job: Job, run: int, summary: Summary) -> Summary:
    """Write a grading's summary (and, unless one of --repeat's, its Gradescope results) atomically."""
    dest = summary_path(out, job) if not run else repeat_path(summary_path(out, job), run)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not run:
        write_json(dest.parent / f"{job.lab}.results.json", gradescope(summary))
    summary.write(dest)
    return summary


def load_runs(out: Path, job: Job, repeat: int) -> list[Summary | None]:
    """The repeated gradings of `job` already made (None: to make), for --repeat."""
    runs: list[Summary | None] = []
    for k in range(1, repeat + 1):
        try:
            s: Summary | None = load_summary(repeat_path(summary_path(out, job), k))
        except ReportError:
            s = None
        runs.append(s if s and s.gradable and (s.lab, s.submission) == (job.lab, job.label) else None)
    return runs


def record_repeated(out: Path, job: Job, runs: list[Summary | None]) -> Summary | None:
    """Once every repeated grading of `job` is made: its recorded summary (grader.repeat's rule),
    written where a single grading's goes. None while some are still to make."""
    if not all(runs):
        return None
    s = recorded([r for r in runs if r])
    dest = summary_path(out, job)
    write_json(dest.parent / f"{job.lab}.results.json", gradescope(s))
    s.write(dest)
    return s


def _run_child(argv: list[str], deadline: float, stopping: threading.Event) -> tuple[int, bytes | None]:
    """Run one child grading to its end: its exit status and standard error. It is stopped when
    `stopping` is set, and when it has not finished by `deadline` (then TimeoutError)."""
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err: bytes | None
    try:
        while True:
            try:
                _, err = p.communicate(timeout=max(0.0, min(POLL, deadline - time.monotonic())))
                return p.returncode, err
            except subprocess.TimeoutExpired:
                pass
            if stopping.is_set():
                # the child stops its checks and removes their processes (SIGINT), or is killed
                _, err = end_process(p, first=signal.SIGINT, grace=STOP_GRACE)
                return p.returncode, err
            if time.monotonic() >= deadline:
                end_process(p, first=signal.SIGINT, grace=STOP_GRACE)
                raise TimeoutError(f"grading did not finish within {PER_SUBMISSION_TIMEOUT:.0f} s")
    finally:
        if p.returncode is None:  # an error of our own: the child never outlives its thread
            end_process(p, first=signal.SIGINT, grace=STOP_GRACE)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def run_batch(*, root: Path, out: Path, labs: list[str], jobs: int = 0, isolation: str = "auto",
              force: bool = False, reference_root: Path | None = None, extra_checks: Path | None = None,
              repeat: int = 1, roster: Path | None = None, deadline: str | None = None,
              late_days: Path | None = None, swarm: bool = False, fake: float | None = None,
              swarm_cpus: float = 1.0) -> int:
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
    students = load_roster(roster) if roster is not None else None  # refused before any grading
    out.mkdir(parents=True, exist_ok=True)
    if roster is not None:
        write_atomic(out / "roster.csv", roster.read_bytes())  # `labgrade export canvas` reads it there
    picks = None
    if deadline is not None:  # each lab at its last commit before the deadline (grader.deadlines)
        due, allowances = deadlines.parse_deadline(deadline), deadlines.load_allowances(late_days)
        picks = deadlines.plan(todo_all, due, allowances, out / ".commits")
        todo_all = [p.job for p in picks]
    if extra_checks is not None and isolation == "auto":
        con.print("labgrade: --extra-checks grades with the `local` isolation (the grader image holds only "
                  "the checks built into it)")
    sw = open_swarm(out, swarm, fake, swarm_cpus, isolation, reference_root, extra_checks, con.print, jobs)
    iso = "docker, on the swarm" if sw else \
        choose_isolation("local" if extra_checks is not None and isolation == "auto" else isolation)
    jobs = jobs or (sw.capacity() if sw else os.cpu_count() or 1)
    stopping = threading.Event()  # set: every grading still running is ended by its own thread

    def grade(j: Job, k: int = 0) -> Summary | None:
        if sw is None:
            return grade_one(j, out, iso, reference_root, extra_checks, stopping, k)
        s = sw.grade(j, stopping)
        return None if s is None else record(out, j, k, s)
    if repeat < 1:
        raise UsageError(f"--repeat {repeat}: at least 1")
    results: dict[Job, Summary] = {}
    runs: dict[Job, list[Summary | None]] = {}  # --repeat: each job's gradings, made or to make
    todo = []
    for j in todo_all:
        if picks is not None and j.commit is None:
            results[j] = deadlines.no_commit(j, due)
            summary_path(out, j).parent.mkdir(parents=True, exist_ok=True)
            results[j].write(summary_path(out, j))
            con.print(f"  {j.label}: nothing to grade: no commit touching it at or before the deadline")
            continue
        done = None if force else load_done(out, j)
        if repeat > 1:
            runs[j] = [None] * repeat if force else load_runs(out, j, repeat)
            done = done if all(runs[j]) else None
        if done:
            results[j] = done
        else:
            todo.append(j)
    work = [(j, k) for j in todo for k in (range(1, repeat + 1) if repeat > 1 else [0])
            if not k or runs[j][k - 1] is None]
    con.print(f"Grading {len(todo)} submission(s) ({len(results)} already graded) with {jobs} job(s), "
              f"isolation {iso}" + (f", each {repeat} times ({len(work)} gradings)" if repeat > 1 else ""))
    if iso == "local" and todo:
        from .isolation.local import local_protection

        con.print(f"local isolation: {local_protection()}", highlight=False)
    t0 = time.monotonic()
    # SIGTERM (a scheduler, `kill`) stops the batch the way Ctrl-C does
    old_term = signal.signal(signal.SIGTERM, _raise_interrupt) if threading.current_thread() is \
        threading.main_thread() else None
    pool = ThreadPoolExecutor(max_workers=jobs)
    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      TextColumn("ETA"), TimeRemainingColumn(), console=con, transient=False) as bar:
            task = bar.add_task("grading", total=len(work))
            futures: dict[Future[Summary | None], tuple[Job, int]] = {
                pool.submit(grade, j, k): (j, k)
                for j, k in work}
            for f in as_completed(futures):
                j, k = futures[f]
                try:
                    s = f.result()
                except Exception as e:  # never stop the class for one submission
                    s = ungradable(lab=j.lab, submission=j.label, seconds=0.0, reason=f"batch error: {e!r}")
                if s is None:
                    continue
                if k:
                    runs[j][k - 1] = s
                    s = record_repeated(out, j, runs[j])
                    if s is None:
                        bar.advance(task)
                        continue
                results[j] = s
                note = f"{s.score}/{s.max_score}" if s.gradable else "NOT GRADED"
                bar.console.print(f"  {j.label}: {note} ({s.seconds:.1f} s)")
                bar.advance(task)
    except KeyboardInterrupt:
        pool.shutdown(wait=False, cancel_futures=True)
        stopping.set()
        pool.shutdown(wait=True)
        if sw is not None:
            sw.close()  # no service or secret of the batch is left on the swarm
        left = len(todo_all) - len(results)
        con.print(f"[yellow]Interrupted[/]: {len(results)} of {len(todo_all)} submissions graded; "
                  f"rerun the same command to grade the {left} left.")
        return 130
    finally:
        pool.shutdown(wait=True)
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
        hand_over(out, todo_all)
    if picks is not None:
        todo_all = deadlines.finish(picks, results, grade,
                                    out / "late-days.csv", due, allowances)
        shutil.rmtree(out / ".commits", ignore_errors=True)  # the copies graded: their commits say what they were
    if sw is not None:
        sw.close()
        con.print(sw.report(time.monotonic() - t0), highlight=False)
    ordered = [(j.student, results[j]) for j in todo_all]
    if repeat > 1:
        rows = [r for j in todo_all for r in flickers(j.student, [x for x in load_runs(out, j, repeat) if x])]
        write_flicker(out / "flicker.csv", rows)
        con.print(f"Flicker over {repeat} gradings each: {len(rows)} (submission, check) pair(s) not the same "
                  f"every time; see {shown_path(out / 'flicker.csv')}", highlight=False)
    write_gradebook(out / "gradebook.csv", ordered, students)
    write_junit(out / "junit.xml", ordered)
    write_report(out / "report.html", ordered)
    hand_over(out, todo_all)
    print_gradebook(ordered)
    if students is not None:
        say_unmatched(*reconcile(students, [j.student for j in todo_all]), students, "kept, without a name")
    con.print(f"Graded {len(todo)} in {time.monotonic() - t0:.1f} s; results in {shown_path(out)}", highlight=False)
    return 0 if all(s.gradable for _, s in ordered) else 1


def open_swarm(out: Path, swarm: bool, fake: float | None, cpus: float, isolation: str,
               reference_root: Path | None, extra_checks: Path | None, say: Any, jobs: int) -> Any:
    """The coordinator of --swarm (grader.swarm), or None without it; refuses what it cannot do."""
    if not swarm:
        if fake is not None:
            raise UsageError("--fake simulates gradings on a swarm: it goes with --swarm")
        return None
    if extra_checks is not None or reference_root is not None or isolation not in ("auto", "docker"):
        raise UsageError("--swarm grades with the grader image's references and checks, in its docker isolation: "
                         "no --extra-checks, --reference-root or --isolation local")
    if cpus <= 0:
        raise UsageError(f"--swarm-cpus {cpus}: more than 0")
    from .swarm import Swarm

    return Swarm(out=out, fake=fake, cpus=cpus, say=say, limit=max(0, jobs))


def hand_over(out: Path, jobs: Iterable[Job]) -> None:
    """Give what the batch writes in `out` (out itself, a directory per student, each job's two
    files, gradebook.csv, junit.xml) to `results_owner`; nothing else in `out` is touched, and
    symbolic links are never followed."""
    owner = results_owner(out)
    if owner is None:
        return
    paths = [out, out / "gradebook.csv", out / "junit.xml", out / "roster.csv", out / "late-days.csv",
             out / "report.html"]
    for j in jobs:
        dest = summary_path(out, j)
        paths += [dest.parent, dest, dest.parent / f"{j.lab}.results.json"]
    for p in dict.fromkeys(paths):
        with contextlib.suppress(OSError):
            if os.lstat(p).st_uid != owner[0]:
                os.chown(p, *owner, follow_symlinks=False)
