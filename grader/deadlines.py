"""Deadlines and late days for submissions that are git repositories (a GitHub Classroom clone per
student): `labgrade batch ROOT --deadline WHEN [--late-days FILE]`.

Each lab is graded at the last commit, among those that touch its directory, made at or before
the deadline (plus the student's extension). A student with late days left, who committed to the
lab after that, is graded at the last such commit within their remaining days instead, and the
whole days it is late are spent from one pool per student, taken lab after lab in the catalogue's
order. Days are spent only when that later commit was graded and gradable: a grading the
environment prevented gives the days back and grades the commit before the deadline instead.

The commit is taken from the repository's objects (`git archive`) into a scratch copy under the
batch's output: the student's repository is never modified (no checkout, no fetch). The summary
records the commit graded and its time (`commit`, `committed_at`); `late-days.csv` holds the
ledger. A commit's time is its committer date, which whoever makes the commit chooses: where that
is not enough, grade the push times of the hosting service instead (GitHub's, not git's)."""
from __future__ import annotations

import csv
import io
import math
import shutil
import subprocess
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from .atomic import write_atomic
from .errors import UsageError

if TYPE_CHECKING:
    from .batch import Job
    from .results import Summary

DAY = 86400


@dataclass(frozen=True)
class Pick:
    job: Job                # as graded: its directory the scratch copy at its commit (job.commit None: none)
    late_days: int          # days spent (0: on time)
    fallback: Pick | None   # the commit before the deadline, should the late one prove ungradable


def parse_deadline(text: str) -> datetime:
    """An ISO 8601 time; without an offset it is this machine's local time."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError as e:
        raise UsageError(f"--deadline {text!r}: not an ISO 8601 time such as 2026-12-10T23:59 ({e})") from e
    return when if when.tzinfo else when.astimezone()


def load_allowances(path: Path | None) -> dict[str, tuple[int, int]]:
    """directory -> (late days in the pool, extension days), from a CSV with a header naming
    `directory`, `late_days` and optionally `extension_days` (the roster may carry them)."""
    if path is None:
        return {}
    try:
        rows = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8-sig"), newline="")))
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror}") from e
    out = {}
    for n, row in enumerate(rows, 2):
        row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
        if "directory" not in row or "late_days" not in row:
            raise UsageError(f"{path}: wanted the columns directory and late_days (and optionally extension_days)")
        try:
            out[row["directory"]] = (int(row["late_days"] or 0), int(row.get("extension_days") or 0))
        except ValueError as e:
            raise UsageError(f"{path}, line {n}: late_days and extension_days are whole days ({e})") from e
    return out


def _git(top: Path, *args: str) -> str:
    r = subprocess.run(["git", "-C", str(top), *args], capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise UsageError(f"git {' '.join(args)} in {top}: {r.stderr.strip()[:300]}")
    return r.stdout


def _history(lab_dir: Path) -> tuple[Path, str, list[tuple[int, str]]]:
    """(the repository's top, the lab's path in it, [(commit time, sha)] of the commits that touch
    the lab, oldest first); UsageError when the lab is in no repository."""
    if shutil.which("git") is None:
        raise UsageError("--deadline needs git on this machine")
    r = subprocess.run(["git", "-C", str(lab_dir), "rev-parse", "--show-toplevel"], capture_output=True, text=True)
    if r.returncode != 0:
        raise UsageError(f"{lab_dir} is not in a git repository: --deadline grades commits")
    top = Path(r.stdout.strip())
    rel = str(lab_dir.resolve().relative_to(top.resolve())) or "."
    log = _git(top, "log", "--format=%ct %H", "--", rel)
    commits = sorted((int(t), sha) for t, sha in (line.split() for line in log.splitlines() if line.strip()))
    return top, rel, commits


def _export(top: Path, rel: str, sha: str, dest: Path) -> Path:
    """The lab's files at `sha`, written under `dest` (read from git's objects; nothing of the
    repository changes). Returns the lab's directory there."""
    data = subprocess.run(["git", "-C", str(top), "archive", "--format=tar", sha, "--", rel],
                          capture_output=True, timeout=120).stdout
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        # files, directories and links inside `dest` only (Python before 3.11.4, Debian's, has no filters)
        safe = [m for m in tar.getmembers() if (m.isfile() or m.isdir() or m.issym())
                and not m.name.startswith("/") and ".." not in Path(m.name).parts]
        kw = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(dest, members=safe, **kw)  # type: ignore[arg-type]
    return dest / rel


def _at(job: Job, top: Path, rel: str, commit: tuple[int, str], dest: Path) -> Job:
    """`job` graded at `commit` (time, sha): its files there, copied under `dest`."""
    return replace(job, directory=_export(top, rel, commit[1], dest), commit=commit[1],
                   committed_at=datetime.fromtimestamp(commit[0]).astimezone().isoformat())


def plan(jobs: list[Job], deadline: datetime, allowances: dict[str, tuple[int, int]], scratch: Path) -> list[Pick]:
    """The commit each job is graded at, and the late days each spends (tentatively: see settle)."""
    left = {student: days for student, (days, _) in allowances.items()}
    picks = []
    for job in jobs:  # in the batch's order: student by student, labs in the catalogue's order
        top, rel, commits = _history(job.directory)
        _, extension = allowances.get(job.student, (0, 0))
        due = int((deadline + timedelta(days=extension)).timestamp())
        on_time = [c for c in commits if c[0] <= due]
        pool = left.get(job.student, 0)
        late = [c for c in commits if due < c[0] <= due + pool * DAY]
        base = scratch / job.student / job.lab

        fallback = Pick(_at(job, top, rel, on_time[-1], base / "on-time"), 0, None) if on_time else None
        if late:
            days = math.ceil((late[-1][0] - due) / DAY)
            left[job.student] = pool - days
            picks.append(Pick(_at(job, top, rel, late[-1], base / "late"), days, fallback))
        else:
            picks.append(fallback or Pick(job, 0, None))
    return picks


def settle(picks: list[Pick], gradable: dict[str, bool]) -> list[Pick]:
    """The picks whose late grading the environment prevented, replaced by their on-time commit
    (their days given back): to grade again. `gradable`: label -> the late grading's outcome."""
    return [p.fallback for p in picks if p.late_days and p.fallback and not gradable.get(p.job.label, True)]


def write_ledger(path: Path, picks: list[Pick], allowances: dict[str, tuple[int, int]], deadline: datetime) -> None:
    spent: dict[str, int] = {}
    text = io.StringIO(newline="")
    w = csv.writer(text)
    w.writerow(["student", "lab", "deadline", "commit", "committed_at", "late_days_spent", "late_days_left"])
    for p in picks:
        spent[p.job.student] = spent.get(p.job.student, 0) + p.late_days
        pool, ext = allowances.get(p.job.student, (0, 0))
        due = (deadline + timedelta(days=ext)).isoformat()
        w.writerow([p.job.student, p.job.lab, due, p.job.commit or "none before the deadline",
                    p.job.committed_at or "", p.late_days, pool - spent[p.job.student]])
    write_atomic(path, text.getvalue())


def no_commit(job: Job, deadline: datetime) -> Summary:
    """The summary of a lab with no commit at or before its deadline: nothing to grade."""
    from .report import ungradable

    return ungradable(lab=job.lab, submission=job.label, seconds=0.0,
                      reason=f"no commit touching {job.lab}/ at or before the deadline ({deadline.isoformat()})")


def finish(picks: list[Pick], results: dict[Job, Summary], regrade: Callable[[Job], Summary | None],
           ledger: Path, deadline: datetime, allowances: dict[str, tuple[int, int]]) -> list[Job]:
    """After the gradings: a late commit the environment kept from being graded gives its days back
    and its on-time commit is graded instead; the ledger is written. The jobs, as finally graded."""
    again = {p.job.label: p for p in settle(picks, {j.label: s.gradable for j, s in results.items()})}
    final = []
    for p in picks:
        q = again.get(p.job.label)
        if q is not None:
            s = regrade(q.job)
            if s is not None:
                results[q.job] = s
                p = q
        final.append(p)
    write_ledger(ledger, final, allowances, deadline)
    return [p.job for p in final]
