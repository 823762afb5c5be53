"""A class's roster (who each submission directory is) and Canvas's grade import.

`roster.csv`, one row per student, in any column order (a header names them):

    directory   the student's directory under the batch's ROOT (ROOT/<directory>/<lab>/)   required
    name        as the course lists it ("Liddell, Alice")                                  required
    sis_id      the student's SIS user id                                                   required
    login       the SIS login id                                                            optional
    section     the Canvas section                                                          optional
    canvas_id   Canvas's own user id (the export's "ID" column)                             optional

`labgrade batch --roster` keeps a copy in its output (`roster.csv`), adds `name` and `sis_id` to
`gradebook.csv`, gives a roster student with nothing graded a row of their own, and names every
directory the roster does not know. `labgrade export canvas` writes Canvas's gradebook import
(one column per lab, as an assignment). Nobody is dropped silently: a graded directory the roster
does not know, or a roster student with nothing graded, is listed on the terminal every time.
"""
from __future__ import annotations

import csv
import io
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from . import catalogue
from .atomic import write_atomic
from .errors import UsageError
from .results import Summary

REQUIRED = ("directory", "name", "sis_id")
OPTIONAL = ("login", "section", "canvas_id")
CANVAS_FIXED = ("Student", "ID", "SIS User ID", "SIS Login ID", "Section")


@dataclass(frozen=True)
class Student:
    directory: str
    name: str
    sis_id: str
    login: str = ""
    section: str = ""
    canvas_id: str = ""


def load_roster(path: Path) -> dict[str, Student]:
    """directory -> Student; a roster that cannot be trusted (a column missing, a directory or
    an SIS id twice, an empty required cell) is refused with the line that says so."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # a spreadsheet's BOM is not part of the header
    except OSError as e:
        raise UsageError(f"cannot read the roster {path}: {e.strerror}") from e
    rows = csv.DictReader(io.StringIO(text, newline=""))
    header = [h.strip() for h in rows.fieldnames or []]
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise UsageError(f"{path}: the roster has no column {', '.join(missing)} (its header: {', '.join(header)}; "
                         f"wanted {', '.join(REQUIRED)}, optionally {', '.join(OPTIONAL)})")
    out: dict[str, Student] = {}
    ids: dict[str, str] = {}
    for n, raw in enumerate(rows, 2):
        row = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
        if not any(row.values()):
            continue
        empty = [c for c in REQUIRED if not row.get(c)]
        if empty:
            raise UsageError(f"{path}, line {n}: {', '.join(empty)} empty")
        st = Student(**{k: row.get(k, "") for k in (*REQUIRED, *OPTIONAL)})
        if st.directory in out:
            raise UsageError(f"{path}, line {n}: directory {st.directory} is listed twice")
        if st.sis_id in ids:
            raise UsageError(f"{path}, line {n}: SIS id {st.sis_id} is also {ids[st.sis_id]}'s")
        out[st.directory], ids[st.sis_id] = st, st.directory
    return out


def reconcile(roster: Mapping[str, Student], graded: Sequence[str]) -> tuple[list[str], list[str]]:
    """(graded directories the roster does not know, roster directories with nothing graded)."""
    seen = set(graded)
    return sorted(seen - set(roster)), sorted(set(roster) - seen)


def say_unmatched(unknown: Sequence[str], missing: Sequence[str], roster: Mapping[str, Student],
                  what: str) -> None:
    if unknown:
        print(f"labgrade: {len(unknown)} graded director{'y is' if len(unknown) == 1 else 'ies are'} not in the "
              f"roster ({what}): {', '.join(unknown)}", file=sys.stderr)
    if missing:
        print(f"labgrade: {len(missing)} student(s) of the roster have nothing graded: "
              + ", ".join(f"{roster[d].name} ({d})" for d in missing), file=sys.stderr)


def canvas_rows(results: Mapping[tuple[str, str], Summary], roster: Mapping[str, Student],
                assignments: Mapping[str, str]) -> tuple[list[list[str]], list[str]]:
    """Canvas's import: the header, "Points Possible", a row per roster student (sorted by name);
    a lab not graded (missing, or an environment error) is an empty cell, which Canvas leaves as
    it was. Also the lines worth telling the instructor about each empty cell."""
    labs = [lab for lab in catalogue.LABS if any(k[1] == lab for k in results)]
    header = [*CANVAS_FIXED, *(assignments.get(lab, f"labgrade {lab}") for lab in labs)]
    possible = ["Points Possible", "", "", "", "", *(str(_max(results, lab)) for lab in labs)]
    rows, notes = [header, possible], []
    for st in sorted(roster.values(), key=lambda s: (s.name.casefold(), s.directory)):
        cells = []
        for lab in labs:
            s = results.get((st.directory, lab))
            if s is None:
                cells.append("")
            elif not s.gradable:
                cells.append("")
                notes.append(f"{st.name} ({st.directory}), {lab}: not graded ({(s.error or '').splitlines()[0][:120]})"
                             if s.error else f"{st.name} ({st.directory}), {lab}: not graded")
            else:
                cells.append(_number(s.score))
        rows.append([st.name, st.canvas_id, st.sis_id, st.login, st.section, *cells])
    return rows, notes


def _max(results: Mapping[tuple[str, str], Summary], lab: str) -> float:
    return max((s.max_score for (_, lb), s in results.items() if lb == lab and s.gradable), default=100)


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def export_canvas(results_dir: Path, out: Path, roster_path: Path | None, assignments: Sequence[str]) -> int:
    from .diff import load_results

    roster_path = roster_path or results_dir / "roster.csv"
    if not roster_path.is_file():
        raise UsageError(f"no roster: {roster_path} does not exist (run the batch with --roster, or pass --roster)")
    roster = load_roster(roster_path)
    names: dict[str, str] = {}
    for a in assignments:
        lab, sep, name = a.partition("=")
        if not sep or lab not in catalogue.LABS or not name.strip():
            raise UsageError(f"--assignment {a!r}: wanted LAB=NAME with LAB one of {', '.join(catalogue.LABS)}")
        names[lab] = name.strip()
    results = load_results(results_dir)
    rows, notes = canvas_rows(results, roster, names)
    text = io.StringIO(newline="")
    csv.writer(text, lineterminator="\r\n").writerows(rows)
    write_atomic(out, text.getvalue())
    unknown, missing = reconcile(roster, sorted({st for st, _ in results}))
    say_unmatched(unknown, missing, roster, "left out of the Canvas file: Canvas could not match them")
    for n in notes:
        print(f"labgrade: empty cell: {n}", file=sys.stderr)
    print(f"Wrote {out}: {len(rows) - 2} students x {len(rows[0]) - len(CANVAS_FIXED)} labs for Canvas's "
          "Grades > Import (empty cells leave Canvas's grade as it is).")
    return 0
