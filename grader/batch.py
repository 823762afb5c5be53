"""`labgrade batch`: grade ROOT/<student>/<lab>/ for every student, in parallel, resumably.

Each grading runs in its own `labgrade grade` process (its own sandbox, subreaper and
cleanup), so one submission's crash, hang or hostility cannot reach the others or the batch.
"""
from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

from . import catalogue
from .errors import ReportError, UsageError
from .report import gradescope, ungradable
from .run import GRADE_TIMEOUT
from .schema import validate_summary

# Whose the results are when the batch runs as root: the owner of --out when that is not root,
# else the owner of the path this names (docker-compose.yml: the class it mounts, which belongs to
# whoever cloned the repository), so that `docker compose run --rm grade` leaves the user's files.
RESULTS_OWNER_ENV = "LABGRADE_RESULTS_OWNER"

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


class _Children:
    """The running child gradings, so an interrupted batch can stop them all."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.procs: set[subprocess.Popen[bytes]] = set()
        self.stopping = threading.Event()

    @contextlib.contextmanager
    def track(self, p: subprocess.Popen[bytes]) -> Iterator[None]:
        with self.lock:
            self.procs.add(p)
        try:
            yield
        finally:
            with self.lock:
                self.procs.discard(p)

    def stop(self, grace: float = 30.0) -> None:
        """SIGINT every running grading (each cleans up), SIGKILL what is left after `grace` s."""
        self.stopping.set()
        with self.lock:
            procs = list(self.procs)
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGINT)
        deadline = time.monotonic() + grace
        for p in procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    p.kill()


_CHILDREN = _Children()


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
              extra_checks: Path | None = None, children: _Children | None = None) -> dict[str, Any] | None:
    """Grade one submission in a child `labgrade grade` process; returns its summary (a valid one,
    or an `ungradable` one saying why), or None when the batch was interrupted meanwhile (then
    nothing is written and a rerun grades it)."""
    children = children or _CHILDREN
    dest = summary_path(out, job)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".json.part")
    tmp.unlink(missing_ok=True)
    argv = [sys.executable, "-c", _CHILD_BOOT, str(os.getpid()), "grade", job.lab, str(job.directory),
            "--json", str(tmp), "--isolation", isolation, "--quiet"]
    if reference_root:
        argv += ["--reference-root", str(reference_root)]
    if extra_checks:
        argv += ["--extra-checks", str(extra_checks)]
    if children.stopping.is_set():
        return None
    t0 = time.monotonic()
    reason = ""
    timed_out = False
    try:
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        with children.track(p):
            try:
                _, err = p.communicate(timeout=PER_SUBMISSION_TIMEOUT)
            except subprocess.TimeoutExpired:
                timed_out = True
                p.send_signal(signal.SIGINT)  # the child stops its checks and removes their processes
                try:
                    _, err = p.communicate(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    _, err = p.communicate()
        if children.stopping.is_set() and p.returncode != 0:
            tmp.unlink(missing_ok=True)
            return None
        reason = err.decode(errors="replace").strip()[-2000:]
        if timed_out:
            raise TimeoutError(f"grading did not finish within {PER_SUBMISSION_TIMEOUT:.0f} s")
        summary = validate_summary(json.loads(tmp.read_text()))
        summary["submission"] = job.label
    except TimeoutError as e:
        summary = ungradable(lab=job.lab, submission=job.label, seconds=time.monotonic() - t0, reason=str(e))
    except (OSError, ValueError, ReportError) as e:
        summary = ungradable(lab=job.lab, submission=job.label, seconds=time.monotonic() - t0,
                             reason=reason or f"no valid report: {e}")
    tmp.unlink(missing_ok=True)
    (dest.parent / f"{job.lab}.results.json").write_text(json.dumps(gradescope(summary), indent=2) + "\n")
    part = dest.with_suffix(".json.tmp")
    part.write_text(json.dumps(summary, indent=2) + "\n")
    os.replace(part, dest)  # atomic: a killed batch never leaves a half-written summary
    return summary


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


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
    if extra_checks is not None and isolation == "auto":
        con.print("labgrade: --extra-checks grades with the `local` isolation (the grader image holds only "
                  "the checks built into it)")
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
    if iso == "local" and todo:
        from .isolation.local import local_protection

        con.print(f"local isolation: {local_protection()}", highlight=False)
    t0 = time.monotonic()
    children = _Children()
    # SIGTERM (a scheduler, `kill`) stops the batch the way Ctrl-C does
    old_term = signal.signal(signal.SIGTERM, _raise_interrupt) if threading.current_thread() is \
        threading.main_thread() else None
    pool = ThreadPoolExecutor(max_workers=jobs)
    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      TextColumn("ETA"), TimeRemainingColumn(), console=con, transient=False) as bar:
            task = bar.add_task("grading", total=len(todo))
            futures: dict[Future[dict[str, Any] | None], Job] = {
                pool.submit(grade_one, j, out, iso, reference_root, extra_checks, children): j for j in todo}
            for f in as_completed(futures):
                j = futures[f]
                try:
                    s = f.result()
                except Exception as e:  # never stop the class for one submission
                    s = ungradable(lab=j.lab, submission=j.label, seconds=0.0, reason=f"batch error: {e!r}")
                if s is None:
                    continue
                results[j] = s
                note = f"{s['score']}/{s['max_score']}" if s["gradable"] else "NOT GRADED"
                bar.console.print(f"  {j.label}: {note} ({s['seconds']:.1f} s)")
                bar.advance(task)
    except KeyboardInterrupt:
        pool.shutdown(wait=False, cancel_futures=True)
        children.stop()
        pool.shutdown(wait=True)
        left = len(todo_all) - len(results)
        con.print(f"[yellow]Interrupted[/]: {len(results)} of {len(todo_all)} submissions graded; "
                  f"rerun the same command to grade the {left} left.")
        return 130
    finally:
        pool.shutdown(wait=True)
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
        hand_over(out, todo_all)
    ordered = [(j, results[j]) for j in todo_all]
    write_gradebook(out / "gradebook.csv", ordered)
    write_junit(out / "junit.xml", ordered)
    hand_over(out, todo_all)
    print_gradebook(ordered)
    con.print(f"Graded {len(todo)} in {time.monotonic() - t0:.1f} s; results in {shown_path(out)}", highlight=False)
    return 0 if all(s["gradable"] for _, s in ordered) else 1


def results_owner(out: Path) -> tuple[int, int] | None:
    """(uid, gid) the results should belong to, or None when they stay the batch's own: only a
    batch run as root hands them over, to the owner of `out` or else of $LABGRADE_RESULTS_OWNER,
    whichever first is not root."""
    if os.geteuid() != 0:
        return None
    for p in (str(out), os.environ.get(RESULTS_OWNER_ENV)):
        try:
            st = os.stat(p) if p else None
        except OSError:
            continue
        if st is not None and st.st_uid != 0:
            return st.st_uid, st.st_gid
    return None


def hand_over(out: Path, jobs: Iterable[Job]) -> None:
    """Give what the batch writes in `out` (out itself, a directory per student, each job's two
    files, gradebook.csv, junit.xml) to `results_owner`; nothing else in `out` is touched, and
    symbolic links are never followed."""
    owner = results_owner(out)
    if owner is None:
        return
    paths = [out, out / "gradebook.csv", out / "junit.xml"]
    for j in jobs:
        dest = summary_path(out, j)
        paths += [dest.parent, dest, dest.parent / f"{j.lab}.results.json"]
    for p in dict.fromkeys(paths):
        with contextlib.suppress(OSError):
            if os.lstat(p).st_uid != owner[0]:
                os.chown(p, *owner, follow_symlinks=False)


def shown_path(p: Path) -> str:
    """`p` as the user sees it: in a container (`docker compose run --rm grade`), the host's
    path of the bind mount that holds it, when the engine says."""
    host = host_path(p)
    return f"{host} (on the host; {p} in this container)" if host else str(p)


def own_container_id() -> str | None:
    """The id of the container this process runs in, from the engine's bind mounts of
    /etc/hostname and friends in /proc/self/mountinfo; None outside a container."""
    if not Path("/.dockerenv").exists():
        return None
    try:
        text = Path("/proc/self/mountinfo").read_text()
    except OSError:
        return None
    m = re.search(r"/containers/([0-9a-f]{64})/", text)
    return m.group(1) if m else None


def host_path(path: Path) -> Path | None:
    """Where `path` of this container is on the engine's host: inside the source of the bind
    mount that holds it, asked of the engine about this very container. None outside a
    container, without an engine, or for a path on no bind mount."""
    cid = own_container_id()
    if cid is None:
        return None
    try:
        from .isolation import docker as dockeriso

        c = dockeriso.client(timeout=10)
        try:
            mounts = c.api.inspect_container(cid).get("Mounts") or []
        finally:
            c.close()
    except Exception:  # only a message depends on it
        return None
    p = Path(os.path.abspath(path))
    found: tuple[Path, Path] | None = None
    for m in mounts:
        dest = Path(m.get("Destination") or "/nonexistent")
        if m.get("Type") == "bind" and m.get("Source") and (p == dest or dest in p.parents) \
                and (found is None or len(dest.parts) > len(found[0].parts)):
            found = (dest, Path(m["Source"]))
    return found[1] / p.relative_to(found[0]) if found else None


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
