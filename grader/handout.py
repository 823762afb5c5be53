"""`labgrade handout OUT`: the student bundle, and `labgrade classroom`: its GitHub Classroom points.

The bundle is what students receive, built from the course repository:

    OUT/README.md                        how to use the workspaces, the labs, the visible checks' points
    OUT/docker-compose.yml               a workspace service per lab (as the repository's, with its own image name)
    OUT/assignments/<lab>/               the handouts and skeletons, without build products
    OUT/images/Dockerfile                the workspace image: the `system` and `lab` stages of images/Dockerfile
    OUT/images/labgrade/                 the grader's public source (no hidden check), installed in the image
    OUT/images/lab-entrypoint, bootstrap-base, fetch-wheels, wheels/   what that build uses
    OUT/.github/workflows/classroom.yml  GitHub Classroom: the visible checks on every push, a step per lab

Every lab of the catalogue (`catalogue.LABS`) is in it: the README, the compose file and the
workflow are written from the templates of grader/classroom/ for those labs (`expand`).

Never in it: reference/, tests/, the demo class, hidden checks (grader/checks/hidden/ and any
file under a `checks` directory whose path there contains "hidden", the Dockerfile's rule).
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from . import catalogue
from .errors import ReportError, UsageError
from .results import Summary, load_summary

MARKER = ".labgrade-handout"  # marks a directory as a bundle, so --force may replace it
TEMPLATES = "classroom"
BUILD_SUFFIXES = (".o", ".a", ".so", ".d", ".gch", ".pyc", ".pyo")
BUILD_NAMES = {"server", "core", "a.out", "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache"}
WORKSPACE_STAGES = ("system", "lab")  # taken verbatim from images/Dockerfile
WHEELS_LOCK = "requirements.txt"  # in images/wheels/: the wheels' pins and SHA-256 hashes


# ----------------------------------------------------------------------------- sources

def _is_source_root(d: Path) -> bool:
    return (d / "assignments").is_dir() and (d / "grader").is_dir() and (d / "pyproject.toml").is_file()


def find_source_root(explicit: Path | None = None) -> Path:
    """The course repository: `explicit`, else the checkout this grader runs from, else the
    current directory."""
    if explicit is not None:
        if not _is_source_root(explicit):
            raise UsageError(f"{explicit} is not the course repository (it needs assignments/, grader/ "
                             "and pyproject.toml)")
        return explicit.resolve()
    for d in (Path(__file__).resolve().parent.parent, Path.cwd()):
        if _is_source_root(d):
            return d.resolve()
    raise UsageError("run this in the course repository (with assignments/, grader/ and pyproject.toml), "
                     "or name it with --source")


def template(name: str, source_root: Path | None = None) -> str:
    """A file of grader/classroom/: from this package, else from the course repository (an
    installation that left the templates out)."""
    for base in (Path(__file__).resolve().parent, *([source_root / "grader"] if source_root else [])):
        p = base / TEMPLATES / name
        if p.is_file():
            return p.read_text()
    raise UsageError(f"template {TEMPLATES}/{name} not found (install the grader from the course repository)")


def tree_sha256(root: Path) -> str:
    """A digest of a directory tree as a build sees it: every file's path, executable bit and bytes
    (a link: its target), dotfiles included. Two bundles with the same digest build the same image:
    .ci/run names the workspace image it built with Compose from a bundle by this digest, and the
    suite's bundle reuses it when its own has the same (LABGRADE_BUILT_WORKSPACE)."""
    h = hashlib.sha256()
    for d, dirs, names in os.walk(root):
        dirs.sort()
        for name in sorted(names):
            f = Path(d) / name
            body = os.readlink(f).encode() if f.is_symlink() else f.read_bytes()
            mode = "l" if f.is_symlink() else "x" if os.access(f, os.X_OK) else "-"
            h.update(f"{f.relative_to(root).as_posix()}\0{mode}\0{len(body)}\0".encode() + body)
    return h.hexdigest()


def is_build_product(p: Path) -> bool:
    """What `make` (or Python) leaves behind: never handed out."""
    if p.name in BUILD_NAMES or p.name.endswith(BUILD_SUFFIXES) or p.name.startswith("core."):
        return True
    if p.is_file() and not p.is_symlink():
        with p.open("rb") as f:
            return f.read(4) == b"\x7fELF"
    return False


def is_hidden_check(rel: Path) -> bool:
    """The hidden-check convention of images/Dockerfile, for a path relative to the repository:
    grader/checks/hidden/..., or anything under a `checks` directory whose path below it
    contains "hidden"."""
    parts = rel.parts
    if parts[:3] == ("grader", "checks", "hidden"):
        return True
    return any(part == "checks" and "hidden" in "/".join(parts[i + 1:]) for i, part in enumerate(parts[:-1]))


def copy_tree(src: Path, dest: Path, skip: Callable[[Path], bool]) -> list[Path]:
    """Copy regular files and directories of `src` (no symlinks, no devices), leaving out what
    `skip` names (a directory skipped is skipped whole). Returns the files written."""
    written: list[Path] = []
    dest.mkdir(parents=True, exist_ok=True)
    for entry in sorted(src.iterdir()):
        if entry.is_symlink() or skip(entry):
            continue
        target = dest / entry.name
        if entry.is_dir():
            written += copy_tree(entry, target, skip)
        elif entry.is_file():
            shutil.copy2(entry, target)
            written.append(target)
    return written


# ----------------------------------------------------------------------------- per-lab templates

_MARKER = re.compile(r"^[ \t]*(?:#[ \t]*)?\{\{(for each lab|end)\}\}[ \t]*\r?$")
_PLACEHOLDER = re.compile(r"\{\{[^ {}]+\}\}")  # ours: {{name}}; GitHub's expressions are ${{ ... }}


def expand(text: str, labs: Sequence[str], titles: Mapping[str, str] | None = None) -> str:
    """A template of grader/classroom/ written for `labs`. The lines between the marker lines
    `{{for each lab}}` and `{{end}}` (alone on their line, or as a `#` comment) are written once
    per lab, with {{lab}}, {{LAB}} (upper case) and {{title}} (`titles`) filled in; anywhere,
    {{labs_list}} is `a`, `b`; {{labs_comma}} a,b; {{labs_space}} a b; {{first}} the first lab."""
    out: list[str] = []
    block: list[str] | None = None
    for line in text.splitlines(keepends=True):
        m = _MARKER.match(line.rstrip("\n"))
        if m is None:
            (out if block is None else block).append(line)
        elif m.group(1) == "for each lab" and block is None:
            block = []
        elif m.group(1) == "end" and block is not None:
            for lab in labs:
                values = {"lab": lab, "LAB": re.sub(r"\W", "_", lab.upper()), "title": (titles or {}).get(lab, lab)}
                out += [_fill(b, values) for b in block]
            block = None
        else:
            raise UsageError(f"template: unbalanced {{{{{m.group(1)}}}}}")
    if block is not None:
        raise UsageError("template: {{for each lab}} without {{end}}")
    return _fill("".join(out), {"labs_list": ", ".join(f"`{lab}`" for lab in labs), "labs_comma": ",".join(labs),
                                "labs_space": " ".join(labs), "first": labs[0] if labs else ""})


def _fill(text: str, values: Mapping[str, str]) -> str:
    """{{key}} -> values[key], for the keys of `values` only; in one pass (a value is never re-read)."""
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(0)[2:-2], m.group(0)), text)


def lab_title(root: Path, lab: str) -> str:
    """What the lab builds, from the first line of its handout: "# Lab `LAB`: TITLE"."""
    f = root / "assignments" / lab / "README.md"
    first = f.read_text(errors="replace").partition("\n")[0].strip() if f.is_file() else ""
    m = re.fullmatch(rf"# Lab `{re.escape(lab)}`: (.+)", first)
    if m is None:
        raise UsageError(f"assignments/{lab}/README.md must begin with the line \"# Lab `{lab}`: TITLE\" "
                         f"(the bundle's table of labs shows TITLE); it begins with {first[:80]!r}")
    return m.group(1)


def from_template(name: str, root: Path, labs: Sequence[str], **values: str) -> str:
    """A bundle file from its template, for `labs`, with {{key}} of `values` filled in; a
    placeholder left unfilled is the template's bug, never shipped."""
    text = _fill(expand(template(name, root), labs, {lab: lab_title(root, lab) for lab in labs}), values)
    left = _PLACEHOLDER.findall(text)
    if left:
        raise UsageError(f"template {TEMPLATES}/{name}: placeholders left unfilled: {', '.join(sorted(set(left)))}")
    return text


# ----------------------------------------------------------------------------- Dockerfile

def dockerfile_stages(text: str) -> dict[str, str]:
    """The stages of a Dockerfile by name: each from its FROM line to the next FROM, without the
    comments and blank lines that introduce the next stage."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if re.match(r"(?i)^FROM\s", line)]
    stages: dict[str, str] = {}
    for k, i in enumerate(starts):
        end = starts[k + 1] if k + 1 < len(starts) else len(lines)
        body = lines[i:end]
        while body and (not body[-1].strip() or body[-1].lstrip().startswith("#")):
            body.pop()
        m = re.match(r"(?i)^FROM\s+\S+(?:\s+AS\s+(\S+))?", lines[i])
        if m and m.group(1):
            stages[m.group(1)] = "\n".join(body) + "\n"
    return stages


def workspace_dockerfile(source_root: Path) -> str:
    """images/Dockerfile for the bundle: the repository's `system` and `lab` stages unchanged (so
    the workspace is the same image), fed by a `public-src` stage that copies the public grader
    shipped in images/labgrade instead of filtering the full one."""
    stages = dockerfile_stages((source_root / "images" / "Dockerfile").read_text())
    missing = [s for s in WORKSPACE_STAGES if s not in stages]
    if missing:
        raise UsageError(f"images/Dockerfile has no stage {', '.join(missing)}: cannot derive the workspace image")
    head = (
        "# The lab workspace image (target `lab`), as in the course repository's images/Dockerfile.\n"
        "# Build context: the top of this bundle (`docker compose build` does it).\n"
        "#\n"
        "#   system  Debian bookworm + Python and the grader's dependencies + gcc/make + tini\n"
        "#   lab     your workspace: system + debugging tools + the grader's public source (images/labgrade),\n"
        "#           user `student` (uid 1000); `make check` runs `labgrade grade LAB . --visible-only`\n"
        "#\n"
        "# `FROM debian:bookworm-slim` without a registry: images/bootstrap-base builds that image\n"
        "# offline from Debian's packages. The wheels Debian lacks are in images/wheels/, pinned by their\n"
        "# SHA-256 hashes (images/wheels/requirements.txt): the build needs no PyPI.\n\n"
        "FROM debian:bookworm-slim AS public-src\n"
        "COPY images/labgrade /src\n"
        "RUN find /src -name '__pycache__' -prune -exec rm -rf {} +\n"
    )
    return head + "".join("\n" + stages[s] for s in WORKSPACE_STAGES)


def dockerfile_copy_sources(text: str) -> list[str]:
    """Sources of the COPY/ADD instructions that read the build context (not --from=)."""
    out: list[str] = []
    for line in text.splitlines():
        m = re.match(r"(?i)^\s*(COPY|ADD)\s+(.*)$", line)
        if not m:
            continue
        args = m.group(2).split()
        if any(a.startswith("--from") for a in args):
            continue
        args = [a for a in args if not a.startswith("--")]
        out += args[:-1]
    return out


# ----------------------------------------------------------------------------- the bundle

def checks_table() -> str:
    rows = ["| lab | visible checks (points) | visible total |", "|---|---|---|"]
    for lab in catalogue.LABS:
        vis = [c for c in catalogue.checks(lab) if c.visibility == "visible"]
        rows.append(f"| `{lab}` | {', '.join(f'`{c.id}` ({c.points})' for c in vis)} | "
                    f"{sum(c.points for c in vis)} |")
    return "\n".join(rows)


def build_handout(out: Path, *, source: Path | None = None, force: bool = False) -> list[Path]:
    """Write the student bundle into `out` (absent or empty; with `force`, an earlier bundle is
    replaced). Returns the files written, relative to `out`."""
    root = find_source_root(source)
    out = Path(out)
    o = out.resolve()
    if o == root or o in root.parents or any(o == root / d or root / d in o.parents
                                             for d in ("assignments", "grader", "images", "reference")):
        raise UsageError(f"{out}: choose a directory outside the repository's own sources")
    if out.exists() and any(out.iterdir()):
        if not force:
            raise UsageError(f"{out} is not empty (--force replaces an earlier bundle)")
        if not (out / MARKER).is_file():
            raise UsageError(f"{out} is not empty and is not a bundle made by `labgrade handout`: not replacing it")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def skip_built(p: Path) -> bool:
        return is_build_product(p) or p.name.startswith(".")

    labs = list(catalogue.LABS)
    for lab in labs:
        src = root / "assignments" / lab
        if not (src / "Makefile").is_file():
            raise UsageError(f"{src} has no Makefile: the bundle needs every lab of the catalogue "
                             f"({', '.join(labs)})")
        written += copy_tree(src, out / "assignments" / lab, skip_built)

    images = out / "images"
    # the grader's public source: hidden checks and caches left out, a short README of its own
    pub = images / "labgrade"

    def skip_grader(p: Path) -> bool:
        return skip_built(p) or is_hidden_check(p.relative_to(root))

    written += copy_tree(root / "grader", pub / "grader", skip_grader)
    shutil.copy2(root / "pyproject.toml", pub / "pyproject.toml")
    (pub / "README.md").write_text(template("package-README.md", root))
    written += [pub / "pyproject.toml", pub / "README.md"]

    for helper in ("lab-entrypoint", "bootstrap-base", "fetch-wheels"):
        f = root / "images" / helper
        if f.is_file():
            shutil.copy2(f, images / helper)
            written.append(images / helper)
    # the wheels Debian lacks and their hashes: the workspace builds offline, as the repository's
    wheels = root / "images" / "wheels"
    for w in sorted([*wheels.glob("*.whl"), wheels / WHEELS_LOCK]) if wheels.is_dir() else []:
        if w.is_file():
            (images / "wheels").mkdir(exist_ok=True)
            shutil.copy2(w, images / "wheels" / w.name)
            written.append(images / "wheels" / w.name)
    dockerfile = workspace_dockerfile(root)
    (images / "Dockerfile").write_text(dockerfile)
    written.append(images / "Dockerfile")
    for s in dockerfile_copy_sources(dockerfile):
        if not any(ch in s for ch in "*?[") and not (out / s).exists():
            raise UsageError(f"the workspace image copies {s}, which the bundle does not have")

    (out / "docker-compose.yml").write_text(from_template("docker-compose.yml", root, labs))
    (out / "README.md").write_text(from_template("README.md", root, labs, checks=checks_table()))
    wf = out / ".github" / "workflows" / "classroom.yml"
    wf.parent.mkdir(parents=True, exist_ok=True)
    wf.write_text(from_template("classroom.yml", root, labs))
    (out / ".gitignore").write_text("# what `make` builds in the workspaces\nassignments/*/server\n"
                                    "assignments/*/*.o\nserver\n*.o\n")
    (out / MARKER).write_text("made by `labgrade handout`; `labgrade handout --force` may replace this directory\n")
    written += [out / "docker-compose.yml", out / "README.md", wf, out / ".gitignore", out / MARKER]
    return sorted(p.relative_to(out) for p in written)


# ----------------------------------------------------------------------------- GitHub Classroom

def visible_points(lab: str) -> int:
    return sum(c.points for c in catalogue.checks(lab) if c.visibility == "visible")


def classroom_result(lab: str, summary: Summary | None) -> dict[str, Any]:
    """One runner's result in the format of GitHub Classroom's autograding-grading-reporter
    (version 1: status pass|fail|error, max_score, tests with name/status/score/message)."""
    if summary is None or not summary.gradable:
        why = (summary.error if summary else None) or "the checks did not run (see this step's log)"
        return {"version": 1, "status": "error", "max_score": visible_points(lab),
                "tests": [{"name": f"{lab}: grading", "status": "error", "score": 0, "max_score": visible_points(lab),
                           "message": f"{lab} could not be graded: {why}", "line_no": 0, "test_code": ""}]}
    tests = [{"name": f"{lab}: {c.id}", "status": "pass" if c.status == "passed" else
              ("error" if c.status == "error" else "fail"),
              "score": c.score, "max_score": c.max_score if c.charged else 0,
              "message": c.feedback, "line_no": 0, "test_code": f"labgrade grade {lab} . --only {c.id}",
              "execution_time": f"{c.seconds:.1f}s"} for c in summary.checks]
    full = summary.score >= summary.max_score
    return {"version": 1, "status": "pass" if full else "fail", "max_score": summary.max_score, "tests": tests}


def classroom_report(labs: Iterable[str], results_dir: Path, *, check: bool = False,
                     print_: Callable[[str], None] = print) -> int:
    """Print each lab's points and `Points N/M` (the total), hand GitHub Classroom's reporter
    its `result` output (when $GITHUB_OUTPUT is set); with `check`, exit 1 below full marks."""
    labs = list(labs)
    bad = [lab for lab in labs if lab not in catalogue.LABS]
    if bad or not labs:
        raise UsageError(f"unknown lab(s) {', '.join(bad)}" if bad else "name at least one lab")
    total = maximum = 0
    combined: dict[str, Any] = {"version": 1, "status": "pass", "max_score": 0, "tests": []}
    for lab in labs:
        try:
            summary: Summary | None = load_summary(results_dir / f"{lab}.json")
        except ReportError:
            summary = None  # graded as an error: the checks did not run
        r = classroom_result(lab, summary)
        score = sum(t["score"] for t in r["tests"])
        total += score
        maximum += r["max_score"]
        print_(f"{lab}: {score}/{r['max_score']}" + ("" if summary and summary.gradable else " (not graded)"))
        for t in r["tests"]:
            if t["status"] != "pass":
                first = (t["message"].strip().splitlines() or [""])[0]
                print_(f"  {t['status'].upper()} {t['name']}: {first[:160]}")
        combined["max_score"] += r["max_score"]
        combined["tests"] += r["tests"]
        if r["status"] != "pass" and combined["status"] != "error":
            combined["status"] = r["status"]
    print_(f"Points {total}/{maximum}")
    out = os.environ.get("GITHUB_OUTPUT")
    if out:
        encoded = base64.b64encode(json.dumps(combined).encode()).decode()
        with open(out, "a") as f:
            f.write(f"result={encoded}\n")
    return 1 if check and total < maximum else 0
