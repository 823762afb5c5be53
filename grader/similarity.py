"""`labgrade similarity ROOT --lab LAB --out DIR`: every pair of a lab's submissions compared with
copydetect (winnowing over the code's tokens), the lab's skeleton as boilerplate so that starter
code never counts, optionally against archives of past terms. It writes copydetect's HTML report
and `pairs.csv`, the pairs of submissions ranked by how much of one is found in the other. It
never changes a score: a pair is a lead for a person to read, not a verdict.

A pair's similarity is that of its most similar pair of files: for each, copydetect's share of
one file's fingerprints found in the other, the larger of the two directions."""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from . import catalogue
from .atomic import write_atomic
from .errors import ReportError, UsageError

EXTENSIONS = ["c", "h"]
NOTE = "labgrade similarity changes no score: a pair is a lead for a person to read, not a verdict"


@dataclass(frozen=True)
class Pair:
    a: str               # a student (or `archive:<name>/<student>`)
    b: str
    similarity: float    # 0..1, the larger direction of the most similar file pair
    file_a: str
    file_b: str
    tokens: int          # fingerprinted tokens the two files share


def submissions(root: Path, lab: str) -> dict[str, Path]:
    """student -> ROOT/<student>/<lab>, for those who have C files there."""
    out = {}
    for d in sorted(root.iterdir()) if root.is_dir() else []:
        lab_dir = d / lab
        if lab_dir.is_dir() and any(p.suffix in {".c", ".h"} for p in lab_dir.rglob("*")):
            out[d.name] = lab_dir
    return out


def compare(root: Path, lab: str, out: Path, *, skeleton: Path, archives: list[Path] = (),  # type: ignore[assignment]
            top: int = 50) -> list[Pair]:
    try:
        from copydetect import CopyDetector
    except ImportError as e:
        raise UsageError("labgrade similarity needs copydetect (pip install copydetect; the grader image "
                         "has it)") from e
    if lab not in catalogue.LABS:
        raise UsageError(f"unknown lab {lab!r}; labs are {', '.join(catalogue.LABS)}")
    mine = submissions(root, lab)
    if len(mine) < 2:
        raise UsageError(f"fewer than 2 submissions of lab {lab} with C files under {root}")
    if not skeleton.is_dir():
        raise UsageError(f"no skeleton at {skeleton}: starter code would count as copied (--skeleton DIR)")
    past: dict[str, Path] = {}
    for arch in archives:
        if not arch.is_dir():
            raise UsageError(f"--archive {arch}: not a directory")
        for student, d in submissions(arch, lab).items():
            past[f"archive:{arch.name}/{student}"] = d
    out.mkdir(parents=True, exist_ok=True)
    owner = {str(d.resolve()): name for name, d in {**mine, **past}.items()}
    det = CopyDetector(test_dirs=[str(d) for d in mine.values()],
                       ref_dirs=[str(d) for d in [*mine.values(), *past.values()]],
                       boilerplate_dirs=[str(skeleton)], extensions=EXTENSIONS, ignore_leaf=True,
                       display_t=0.0, autoopen=False, silent=True, out_file=str(out / "similarity.html"))
    det.run()
    best: dict[tuple[str, str], Pair] = {}
    for i, fa in enumerate(det.test_files):
        for j, fb in enumerate(det.ref_files):
            sim = det.similarity_matrix[i, j]
            if sim[0] < 0:  # not compared: the same file, or the same directory
                continue
            a, b = _who(owner, fa), _who(owner, fb)
            if a == b:
                continue
            key = (a, b) if b.startswith("archive:") or a < b else (b, a)
            p = Pair(key[0], key[1], float(max(sim)), _short(fa, root), _short(fb, root),
                     int(det.token_overlap_matrix[i, j]))
            if key not in best or p.similarity > best[key].similarity:
                best[key] = p
    # a pair that shares nothing beyond the skeleton is no lead
    pairs = sorted((p for p in best.values() if p.similarity > 0), key=lambda p: (-p.similarity, p.a, p.b))
    det.generate_html_report()
    text = io.StringIO(newline="")
    w = csv.writer(text)
    w.writerow(["rank", "a", "b", "similarity", "file_a", "file_b", "shared_tokens"])
    for k, p in enumerate(pairs[:top], 1):
        w.writerow([k, p.a, p.b, f"{p.similarity:.3f}", p.file_a, p.file_b, p.tokens])
    w.writerow([])
    w.writerow([f"# {NOTE}"])
    write_atomic(out / "pairs.csv", text.getvalue())
    return pairs


def _who(owner: dict[str, str], f: str) -> str:
    path = Path(f).resolve()
    for parent in path.parents:
        if str(parent) in owner:
            return owner[str(parent)]
    return str(path.parent)


def _short(f: str, root: Path) -> str:
    try:
        return str(Path(f).resolve().relative_to(root.resolve()))
    except ValueError:
        return f


def as_graded(root: Path, lab: str, results: Path, scratch: Path) -> tuple[Path, list[str]]:
    """A copy of ROOT's submissions of `lab` as `labgrade batch --deadline` graded them: where a
    student's summary in RESULTS records a commit, the lab's files at that commit (read from git's
    objects: the repository is not touched); the working tree otherwise. Returns the copy's root
    and what was taken from where, one line per student."""
    import shutil

    from .deadlines import _export, _history
    from .results import load_summary

    said = []
    for student, d in submissions(root, lab).items():
        dest = scratch / student / lab
        try:
            commit = load_summary(results / student / f"{lab}.json").commit
        except ReportError:
            commit = None  # not graded, or graded before it recorded commits
        if commit:
            top, rel, _ = _history(d)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(_export(top, rel, commit, scratch / ".git-export" / student)), str(dest))
            said.append(f"{student}: commit {commit[:12]}, as graded")
        else:
            shutil.copytree(d, dest, symlinks=True)
            said.append(f"{student}: its working tree (no commit recorded in {results})")
    shutil.rmtree(scratch / ".git-export", ignore_errors=True)
    return scratch, said


def run_similarity(root: Path, lab: str, out: Path, skeleton: Path | None, archives: list[Path], top: int,
                   graded: Path | None = None) -> int:
    import tempfile

    from .handout import find_source_root

    skel = skeleton or find_source_root(None) / "assignments" / lab
    with tempfile.TemporaryDirectory(prefix="labgrade-similarity-") as tmp:
        said: list[str] = []
        if graded is not None:
            root, said = as_graded(root, lab, graded, Path(tmp))
        pairs = compare(root, lab, out, skeleton=skel, archives=archives, top=top)
        compared = len(submissions(root, lab))  # while a scratch copy (--graded) still exists
    for line in said:
        print(f"  {line}")
    print(f"Compared {compared} submissions of lab {lab}"
          + (f" and {len(archives)} archive(s)" if archives else "") + f"; skeleton {skel} as boilerplate.")
    for p in pairs[:10]:
        print(f"  {p.similarity:6.1%}  {p.a} ~ {p.b}  ({p.file_a} / {p.file_b}, {p.tokens} shared tokens)")
    print(f"Report: {out / 'similarity.html'}; top {min(top, len(pairs))} pairs: {out / 'pairs.csv'}. {NOTE}.")
    return 0
