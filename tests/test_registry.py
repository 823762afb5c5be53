"""A lab is data plus one checks module: every lab of the catalogue has each piece the house
needs, consistent with the catalogue, and no piece names a lab the catalogue lacks.

Adding a lab touches `assignments/LAB/`, `reference/LAB/`, its rows in `grader/catalogue.py`,
`grader/checks/test_LAB.py`, `tests/servers/LAB/`, and two static files that cannot read the
catalogue: its service in `docker-compose.yml` and its row in the README's table of labs.
Everything else (CLI choices, batch defaults, the student bundle with its compose file, README
and classroom workflow, the Gradescope zip, the images) follows `catalogue.LABS` by itself.

`problems(root, labs)` lists what is missing or inconsistent, each problem naming its lab and
its file; the tests below assert that it finds nothing in this repository, and that it finds,
piece by piece, a lab added to the catalogue alone or left out of a piece. No Docker: YAML
and Python are parsed, the bundle is written to a temporary directory (a fraction of a second).
"""
from __future__ import annotations

import ast
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from support import ROOT

from grader import catalogue, cli
from grader.errors import GraderError
from grader.handout import build_handout, lab_title

Problems = list[str]
NOT_LABS = {"grade", "test"}  # the compose file's services that are no lab's workspace
WORKSPACE = "/home/student/lab"
LAB_IMAGE = "labgrade-lab:${LABGRADE_TAG:-latest}"


def names(line: str, labs: Sequence[str]) -> set[str]:
    """The labs a line names as words of their own (`thread` in "thread-per-client" is not one)."""
    return {lab for lab in labs if re.search(rf"(?<![\w-]){re.escape(lab)}(?![\w-])", line)}


def lab_lists(text: str, labs: Sequence[str], where: str) -> Problems:
    """A line naming two labs or more is a list of labs: it must name every lab."""
    out = []
    for i, line in enumerate(text.splitlines(), 1):
        found = names(line, labs)
        if len(found) >= 2 and len(found) < len(labs):
            missing = [lab for lab in labs if lab not in found]
            out.append(f"{where}:{i}: a list of labs without {', '.join(missing)}: {line.strip()[:120]}")
    return out


def lab_table(text: str, labs: Sequence[str], where: str) -> Problems:
    """The table of labs (its header: `| lab | ... | handout |`): a row per lab of the catalogue, in its
    order, each linking the lab's handout."""
    lines = text.splitlines()
    heads = [i for i, line in enumerate(lines) if re.match(r"^\|\s*lab\s*\|.*\|\s*handout\s*\|\s*$", line)]
    if len(heads) != 1:
        return [f"{where}: {len(heads)} tables of labs (a header `| lab | ... | handout |`); want exactly one"]
    rows = []
    for line in lines[heads[0] + 2:]:
        if not line.startswith("|"):
            break
        rows.append(line)
    got = [m.group(1) if (m := re.match(r"^\|\s*`([^`]+)`\s*\|", r)) else r[:40] for r in rows]
    out = []
    if got != list(labs):
        out.append(f"{where}: the table of labs lists {', '.join(got) or 'nothing'}; the catalogue's labs "
                   f"are {', '.join(labs)}" + "".join(f"; lab {lab}: no row" for lab in labs if lab not in got))
    for lab, row in zip(got, rows, strict=True):
        if lab in labs and f"assignments/{lab}/README.md" not in row:
            out.append(f"{where}: lab {lab}: its row does not link assignments/{lab}/README.md")
    return out


# ----------------------------------------------------------------------------- the pieces

def catalogue_rows(root: Path, labs: Sequence[str]) -> Problems:
    out = []
    for lab in labs:
        try:
            rows = catalogue.checks(lab)
        except KeyError:
            out.append(f"lab {lab}: no rows in grader/catalogue.py (_POINTS, _SPECIFIC)")
            continue
        if sum(c.points for c in rows) != 100:
            out.append(f"lab {lab}: its checks in grader/catalogue.py sum to {sum(c.points for c in rows)}, not 100")
    return out


def lab_directories(root: Path, labs: Sequence[str]) -> Problems:
    out = []
    for lab in labs:
        a, r = root / "assignments" / lab, root / "reference" / lab
        for d, what in ((a, "the skeleton"), (r, "the reference")):
            for name in ("Makefile", "server.c"):
                if not (d / name).is_file():
                    out.append(f"lab {lab}: no {d.relative_to(root)}/{name} ({what})")
        if (a / "Makefile").is_file():
            mk = (a / "Makefile").read_text()
            if not re.search(rf"^LAB\s*=\s*{re.escape(lab)}\s*$", mk, re.M) or "labgrade grade $(LAB)" not in mk:
                out.append(f"lab {lab}: assignments/{lab}/Makefile does not set `LAB = {lab}` for `make check` "
                           "(labgrade grade $(LAB) . --visible-only)")
        try:
            lab_title(root, lab)
        except GraderError as e:
            out.append(f"lab {lab}: {e}")
    for kind in ("assignments", "reference"):
        for d in sorted((root / kind).iterdir()) if (root / kind).is_dir() else []:
            if d.is_dir() and d.name not in labs:
                out.append(f"{kind}/{d.name}: no lab of the catalogue")
    return out


def checks_modules(root: Path, labs: Sequence[str]) -> Problems:
    out = []
    for lab in labs:
        f = root / "grader" / "checks" / f"test_{lab}.py"
        if not f.is_file():
            out.append(f"lab {lab}: no checks module grader/checks/test_{lab}.py")
            continue
        tree = ast.parse(f.read_text())
        consts = {t.id: n.value.value for n in tree.body if isinstance(n, ast.Assign)
                  for t in n.targets if isinstance(t, ast.Name) and isinstance(n.value, ast.Constant)}
        if consts.get("LAB") != lab:
            out.append(f"lab {lab}: grader/checks/test_{lab}.py does not set LAB = {lab!r}")
        if "globals()" in f.read_text():
            out.append(f"lab {lab}: grader/checks/test_{lab}.py adds checks through globals(); name each one")
    for f in sorted((root / "grader" / "checks").glob("test_*.py")):
        if f.stem[len("test_"):] not in labs:
            out.append(f"grader/checks/{f.name}: no lab of the catalogue")
    return out


def fixtures(root: Path, labs: Sequence[str]) -> Problems:
    servers = root / "tests" / "servers"
    out = [f"lab {lab}: no server with known verdicts in tests/servers/{lab}/ (a directory with expect.json)"
           for lab in labs if not any((servers / lab).glob("*/expect.json"))]
    out += [f"tests/servers/{d.name}: no lab of the catalogue" for d in sorted(servers.iterdir())
            if d.is_dir() and d.name != "hostile" and d.name not in labs]
    return out


def compose_workspaces(doc: Any, labs: Sequence[str], where: str, image: str | None) -> Problems:
    """A service per lab, named after it, from the `lab` stage, no network, its directory mounted
    at the workspace; and no other service but those of NOT_LABS."""
    services = (doc or {}).get("services") or {}
    out = [f"{where}: lab {lab}: no service {lab}" for lab in labs if lab not in services]
    for name, svc in services.items():
        if name in NOT_LABS:
            continue
        if name not in labs:
            out.append(f"{where}: service {name} is no lab of the catalogue")
            continue
        vols = [v if isinstance(v, str) else f"{v.get('source')}:{v.get('target')}" for v in svc.get("volumes") or []]
        want = f"./assignments/{name}:{WORKSPACE}"
        if vols != [want]:
            out.append(f"{where}: lab {name}: its service mounts {vols}, not [{want}]")
        build = svc.get("build") or {}
        if build.get("target") != "lab" or build.get("dockerfile") != "images/Dockerfile":
            out.append(f"{where}: lab {name}: its service is not built from images/Dockerfile, target lab")
        if svc.get("network_mode") != "none":
            out.append(f"{where}: lab {name}: its service has a network")
        if image and svc.get("image") != image:
            out.append(f"{where}: lab {name}: its service's image is {svc.get('image')}, not {image}")
    return out


def compose(root: Path, labs: Sequence[str]) -> Problems:
    f = root / "docker-compose.yml"
    text = f.read_text()
    return compose_workspaces(yaml.safe_load(text), labs, "docker-compose.yml", LAB_IMAGE) + \
        lab_lists(text, labs, "docker-compose.yml")


def readme(root: Path, labs: Sequence[str]) -> Problems:
    text = (root / "README.md").read_text()
    return lab_table(text, labs, "README.md") + lab_lists(text, labs, "README.md")


def static_files(root: Path, labs: Sequence[str]) -> Problems:
    """Files that serve every lab alike: the Dockerfile names no lab (one `lab` image for all);
    the scripts, the packaging and the grader's sources hold no partial list of labs, in their
    text (the catalogue and the checks, which speak of labs one by one, aside) or as a literal of
    strings (the catalogue aside)."""
    out = []
    dockerfile = (root / "images" / "Dockerfile").read_text()
    for lab in labs:
        if re.search(rf"(assignments|reference)/{re.escape(lab)}\b|test_{re.escape(lab)}\b", dockerfile):
            out.append(f"images/Dockerfile: names lab {lab}; the images serve every lab alike")
    files = [root / "pyproject.toml", root / ".ci" / "run", *sorted((root / "images").glob("*")),
             *sorted(p for p in (root / "grader").rglob("*") if p.is_file())]
    for f in files:
        rel = f.relative_to(root).as_posix()
        if not f.is_file() or f.suffix in (".whl", ".pyc") or rel == "grader/catalogue.py":
            continue
        text = f.read_text(errors="replace")
        if not rel.startswith("grader/checks/"):
            out += lab_lists(text, labs, rel)
        if f.suffix == ".py":
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, ast.List | ast.Tuple | ast.Set):
                    strs = [e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
                    found = set(strs) & set(labs)
                    if len(strs) == len(node.elts) and 2 <= len(found) < len(labs) and found == set(strs):
                        out.append(f"{rel}:{node.lineno}: a literal list of labs {sorted(found)}: use catalogue.LABS")
    return out


def command_line(root: Path, labs: Sequence[str]) -> Problems:
    """Every subcommand that takes a lab takes each lab of the catalogue; batch's default is all."""
    out = []
    for lab in labs:
        for argv in (["grade", lab, "."], ["gradescope", lab, "--out", "x.zip"],
                     ["classroom", lab, "--results-dir", "."]):
            try:
                cli.parser().parse_args(argv)
            except SystemExit:
                out.append(f"lab {lab}: `labgrade {' '.join(argv)}` is refused (grader/cli.py)")
    if cli.parser().parse_args(["batch", ".", "--out", "x"]).labs is not None:
        out.append("grader/cli.py: `labgrade batch --labs` has a default of its own; leave it to the catalogue")
    return out


def bundle(root: Path, labs: Sequence[str]) -> Problems:
    """`labgrade handout`: each lab's directory, a workspace service per lab, a classroom step and
    results variable per lab, its runners and points command naming every lab, a README that
    lists every lab; no partial list of labs anywhere in what it writes."""
    with tempfile.TemporaryDirectory(prefix="registry-bundle-") as tmp:
        out_dir = Path(tmp) / "bundle"
        try:
            build_handout(out_dir, source=root)
        except Exception as e:  # the bundle cannot even be written: that names the missing piece
            return [f"labgrade handout: {type(e).__name__}: {e}"]
        out = [f"bundle: lab {lab}: no assignments/{lab}/" for lab in labs
               if not (out_dir / "assignments" / lab / "Makefile").is_file()]
        text = {f: (out_dir / f).read_text() for f in ("docker-compose.yml", "README.md",
                                                       ".github/workflows/classroom.yml", "images/labgrade/README.md")}
        out += compose_workspaces(yaml.safe_load(text["docker-compose.yml"]), labs, "bundle docker-compose.yml",
                                  None)
        out += lab_table(text["README.md"], labs, "bundle README.md")
        wf = yaml.safe_load(text[".github/workflows/classroom.yml"])
        (job,) = wf["jobs"].values()
        ids = [s["id"] for s in job["steps"] if "id" in s]
        if ids != list(labs):
            out.append(f"bundle classroom.yml: steps for {', '.join(ids)}; the catalogue's labs are {', '.join(labs)}")
        reporter = next((s for s in job["steps"] if "autograding-grading-reporter" in str(s.get("uses"))), {})
        env = reporter.get("env") or {}
        for lab in labs:
            if f"steps.{lab}.outputs.result" not in str(env.get(f"{lab.upper()}_RESULTS")):
                out.append(f"bundle classroom.yml: lab {lab}: the reporter has no {lab.upper()}_RESULTS")
        if (reporter.get("with") or {}).get("runners") != ",".join(labs):
            out.append(f"bundle classroom.yml: runners {(reporter.get('with') or {}).get('runners')!r}, "
                       f"not {','.join(labs)!r}")
        points = next((s for s in job["steps"] if s.get("name") == "Points"), {})
        if f"labgrade classroom {' '.join(labs)} " not in str(points.get("run")):
            out.append(f"bundle classroom.yml: the Points step does not name every lab: {points.get('run')!r}")
        for name, t in text.items():
            out += lab_lists(t, labs, f"bundle {name}")
        return out


PIECES: list[Callable[[Path, Sequence[str]], Problems]] = [
    catalogue_rows, lab_directories, checks_modules, fixtures, compose, readme, static_files, command_line, bundle]


def problems(root: Path, labs: Sequence[str]) -> Problems:
    return [p for piece in PIECES for p in piece(root, labs)]


# ----------------------------------------------------------------------------- the tests

def test_every_lab_has_every_piece_and_nothing_names_another() -> None:
    assert problems(ROOT, catalogue.LABS) == []


NEW = "mmap"  # a lab the catalogue lacks, named nowhere in the repository


def test_a_lab_added_to_the_catalogue_alone_is_reported_piece_by_piece(monkeypatch: pytest.MonkeyPatch) -> None:
    labs = (*catalogue.LABS, NEW)
    monkeypatch.setattr(catalogue, "LABS", labs)
    found = problems(ROOT, labs)
    have = ", ".join(labs[:-1])
    for want in (f"lab {NEW}: no rows in grader/catalogue.py", f"lab {NEW}: no assignments/{NEW}/Makefile",
                 f"lab {NEW}: no reference/{NEW}/Makefile", f"lab {NEW}: no checks module grader/checks/test_{NEW}.py",
                 f"lab {NEW}: no server with known verdicts in tests/servers/{NEW}/",
                 f"docker-compose.yml: lab {NEW}: no service {NEW}", "README.md: the table of labs",
                 f"README.md: the table of labs lists {have}; the catalogue's labs are "
                 f"{have}, {NEW}; lab {NEW}: no row",
                 "labgrade handout: UsageError:"):
        assert any(p.startswith(want) for p in found), (want, found)
    # nothing but the new lab's missing pieces: no sentence, comment or literal elsewhere lists the
    # labs without it (such a line would be reported with its file and line)
    assert all(NEW in p for p in found) and not [p for p in found if "a list of labs" in p], found


def test_a_lab_left_out_of_a_piece_is_reported(tmp_path: Path) -> None:
    """The repository with `thread` taken out of the compose file, out of the README's table of
    labs and of one sentence, with a stale module for a lab the catalogue lacks and a literal
    list of labs in the grader: each is named."""
    root = tmp_path / "repo"
    shutil.copytree(ROOT, root, ignore=shutil.ignore_patterns(".git", "__pycache__", "*.o", "server"))
    compose_file = root / "docker-compose.yml"
    text = compose_file.read_text()
    text = re.sub(r"^  thread:\n(    .*\n)+", "", text, flags=re.M)
    compose_file.write_text(text)
    readme_file = root / "README.md"
    lines = [line for line in readme_file.read_text().splitlines(keepends=True) if not line.startswith("| `thread` |")]
    readme_file.write_text("".join(lines) + "\nThe labs `fork` and `select` differ.\n")
    (root / "grader" / "checks" / "test_retired.py").write_text('LAB = "retired"\n')
    (root / "grader" / "labs_here.py").write_text('LABS = ("fork", "select")\n')
    found = problems(root, catalogue.LABS)
    for want in ("docker-compose.yml: lab thread: no service thread",
                 f"README.md: the table of labs lists {', '.join(lab for lab in catalogue.LABS if lab != 'thread')};",
                 "README.md:", "grader/checks/test_retired.py: no lab of the catalogue",
                 "grader/labs_here.py:1: a literal list of labs ['fork', 'select']"):
        assert any(p.startswith(want) for p in found), (want, found)
    assert any("a list of labs without thread" in p and p.endswith(": The labs `fork` and `select` differ.")
               for p in found), found
    # and the same copy, untouched in those places, is clean: the checker reads the root it is given
    shutil.copy2(ROOT / "docker-compose.yml", compose_file)
    shutil.copy2(ROOT / "README.md", readme_file)
    (root / "grader" / "checks" / "test_retired.py").unlink()
    (root / "grader" / "labs_here.py").unlink()
    assert problems(root, catalogue.LABS) == []
