"""The student handouts agree with the catalogue, their lab directory and its Makefile.

Each `assignments/<lab>/README.md` must:
- carry a check table whose ids, points and visibility are `grader.catalogue.checks(lab)`,
  row for row and in the same order;
- name, in its files section, only files that exist in the lab directory;
- run only `make` targets that the lab's Makefile defines;
- point `labgrade grade` at its own lab and `--only` at its own check ids;
- contain the words of every rule that the skeleton's `TODO (handout: "...")` quotes.
"""
from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the tests run from the repo root, installed or not
    sys.path.insert(0, str(ROOT))

from grader.catalogue import LABS, checks  # noqa: E402

ASSIGNMENTS = ROOT / "assignments"


# ----------------------------------------------------------------- parsing helpers

def handout(lab: str) -> str:
    return (ASSIGNMENTS / lab / "README.md").read_text(encoding="utf-8")


def sections(text: str) -> dict[str, str]:
    """`## Title` -> the text up to the next `## ` heading (fenced code is not a heading)."""
    out: dict[str, str] = {}
    title, body, fenced = None, [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        if not fenced and line.startswith("## "):
            if title is not None:
                out[title] = "\n".join(body)
            title, body = line[3:].strip(), []
        elif title is not None:
            body.append(line)
    if title is not None:
        out[title] = "\n".join(body)
    return out


def section(text: str, pattern: str) -> str:
    found = [body for title, body in sections(text).items() if re.search(pattern, title, re.I)]
    assert len(found) == 1, f"expected one section whose title matches {pattern!r}, found {len(found)}"
    return found[0]


def table_rows(text: str) -> list[list[str]]:
    """Every row of every Markdown table in `text`, header included, separator rows dropped."""
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if not (line.startswith("|") and line.endswith("|")):
            continue
        cells = [c.strip() for c in line[1:-1].split("|")]
        if all(re.fullmatch(r":?-{3,}:?", c) for c in cells):
            continue
        rows.append(cells)
    return rows


def check_table(text: str) -> list[tuple[str, int, str]]:
    """(id, points, visibility) of the one table headed `check | points | visibility | fails when`."""
    tables: list[list[tuple[str, int, str]]] = []
    current: list[tuple[str, int, str]] | None = None
    for line in text.splitlines():
        row = table_rows(line)
        if not line.strip().startswith("|"):
            current = None
            continue
        if not row:  # separator
            continue
        cells = row[0]
        if [c.lower() for c in cells] == ["check", "points", "visibility", "fails when"]:
            current = []
            tables.append(current)
        elif current is not None:
            m = re.fullmatch(r"`([a-z-]+)`", cells[0])
            assert m, f"check cell not a backticked id: {cells[0]!r}"
            current.append((m.group(1), int(cells[1]), cells[2]))
    assert len(tables) == 1, f"expected one check table, found {len(tables)}"
    return tables[0]


def code_lines(text: str) -> list[str]:
    """Lines of fenced code blocks, and inline code spans, that look like shell commands."""
    lines, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            lines.append(line.strip())
        else:
            lines.extend(re.findall(r"`([^`]+)`", line))
    return [re.sub(r"^\$\s+", "", line) for line in lines]


def commands(text: str, program: str) -> list[list[str]]:
    """Each simple command (split on && || ; | and `$(`) whose first word is `program`."""
    found = []
    for line in code_lines(text):
        line = line.split(" #", 1)[0]
        for part in re.split(r"&&|\|\||;|\||\$\(|\)", line):
            try:
                words = shlex.split(part)
            except ValueError:
                words = part.split()
            if words and words[0] == program:
                found.append(words)
    return found


def makefile_targets(makefile: Path) -> list[str]:
    """Explicit targets of a Makefile in order of appearance (.PHONY's prerequisites included)."""
    targets: list[str] = []
    for line in makefile.read_text(encoding="utf-8").splitlines():
        if line.startswith("\t") or line.lstrip().startswith("#"):
            continue
        m = re.match(r"^([^:=#\s][^:=#]*?)\s*::?(?!=)(.*)$", line)
        if not m:
            continue
        names = m.group(1).split()
        if names == [".PHONY"]:
            targets += m.group(2).split("#", 1)[0].split()
            continue
        targets += [n for n in names if not n.startswith(".") and "%" not in n and "$" not in n]
    return targets


# ----------------------------------------------------------------- the tests

@pytest.mark.parametrize("lab", LABS)
def test_check_table_matches_catalogue(lab: str) -> None:
    table = check_table(handout(lab))
    expected = [(c.id, c.points, c.visibility) for c in checks(lab)]
    assert table == expected
    assert sum(points for _, points, _ in table) == 100


@pytest.mark.parametrize("lab", LABS)
def test_files_section_names_existing_files(lab: str) -> None:
    body = section(handout(lab), r"\bfiles\b")
    names, in_files_table = [], False
    for line in body.splitlines():  # first column of the table headed `file | ...`
        rows = table_rows(line)
        if not line.strip().startswith("|"):
            in_files_table = False
        elif rows and rows[0][0].lower() == "file":
            in_files_table = True
        elif rows and in_files_table:
            names += re.findall(r"`([^`\s]+)`", rows[0][0])
    assert names, "the files section lists no file"
    missing = [n for n in names if not (ASSIGNMENTS / lab / n).is_file()]
    assert not missing, f"files named in the handout but absent from assignments/{lab}/: {missing}"


@pytest.mark.parametrize("lab", LABS)
def test_make_commands_name_existing_targets(lab: str) -> None:
    targets = makefile_targets(ASSIGNMENTS / lab / "Makefile")
    assert targets, "the Makefile defines no target, so plain `make` builds nothing"
    runs = commands(handout(lab), "make")
    assert runs, "the handout never says how to build"
    for words in runs:
        goals = [w for w in words[1:] if not w.startswith("-") and "=" not in w]
        unknown = [g for g in goals if g not in targets]
        assert not unknown, f"`{' '.join(words)}` names targets the Makefile lacks: {unknown}"


@pytest.mark.parametrize("lab", LABS)
def test_labgrade_commands_name_this_lab_and_its_checks(lab: str) -> None:
    ids = {c.id for c in checks(lab)}
    runs = [w for w in commands(handout(lab), "labgrade") if len(w) > 1]  # not the bare name
    assert runs, "the handout never shows the labgrade command"
    for words in runs:
        assert words[1:3] == ["grade", lab], f"`{' '.join(words)}` does not grade lab {lab}"
        if "--only" in words:
            only = words[words.index("--only") + 1]
            known = only in {"<id>", "CHECK"} or set(only.split(",")) <= ids  # a placeholder, or real ids
            assert known, f"unknown check in `{' '.join(words)}`"


def _words(text: str) -> str:
    """Lower-case words only: punctuation, backticks and line breaks do not count."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.replace("\\n", "n")).lower().split())


@pytest.mark.parametrize("lab", LABS)
def test_todo_quotes_are_in_the_handout(lab: str) -> None:
    """Each `TODO (handout: "...")` of the skeleton quotes words that the handout contains."""
    source = (ASSIGNMENTS / lab / "server.c").read_text(encoding="utf-8")
    joined = re.sub(r"\n\s*\*(?!/)", " ", source)  # one comment, one line
    quotes = re.findall(r'handout: "([^"]*)"', joined)
    assert quotes, "the skeleton quotes no rule of the handout"
    text = _words(handout(lab))
    missing = [piece.strip() for q in quotes for piece in q.split("...") if _words(piece) not in text]
    assert not missing, f"server.c quotes words the handout does not contain: {missing}"


def test_thread_handout_shows_the_exact_log_line() -> None:
    assert "server received N (T total) bytes on fd F" in handout("thread")


def test_helpers_parse_what_they_should() -> None:
    text = ("## The files\n\n| file | role |\n|---|---|\n| `a.c` | x |\n\n"
            "## Other\n```\n$ make clean && make X=1\n```\n")
    assert section(text, "files").count("a.c") == 1
    assert commands(text, "make") == [["make", "clean"], ["make", "X=1"]]
    table = "| check | points | visibility | fails when |\n|---|---|---|---|\n| `a-b` | 5 | visible | x |\n"
    assert check_table(table) == [("a-b", 5, "visible")]
