"""`labgrade similarity`: a planted near-copy (comments stripped, every name changed) tops the
ranking; untouched skeletons share nothing but the skeleton, which never counts, and appear in
no pair; a past term's archive is compared too; no score changes, and the command says so."""
from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support import ROOT, copy_lab

from grader.results import Summary

pytestmark = pytest.mark.slow  # copydetect and its report: a few seconds


def labgrade(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "grader", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=300, env={**__import__("os").environ, "MPLCONFIGDIR": "/tmp"})


def near_copy(src: Path, dest: Path) -> None:
    """What a student who copied does: the comments go, every name of their own changes."""
    shutil.copytree(src, dest)
    text = re.sub(r"/\*.*?\*/", "", (dest / "server.c").read_text(), flags=re.S)
    for old, new in [("clients", "conns"), ("drop_client", "close_conn"), ("flush_client", "send_pending"),
                     ("read_client", "take_input"), ("accepting", "can_accept"), ("client_t", "conn_t")]:
        text = text.replace(old, new)
    (dest / "server.c").write_text(text)


@pytest.fixture
def term(tmp_path: Path) -> Path:
    root = tmp_path / "class"
    shutil.copytree(ROOT / "reference" / "select", root / "alice" / "select")
    near_copy(ROOT / "reference" / "select", root / "carol" / "select")
    for untouched in ("bob", "erin"):
        shutil.copytree(ROOT / "assignments" / "select", root / untouched / "select")
    copy_lab(ROOT / "tests" / "servers" / "select" / "busy-poll", root / "dave" / "select", "select")
    past = tmp_path / "term1"
    copy_lab(ROOT / "tests" / "servers" / "select" / "alt-epoll", past / "zed" / "select", "select")
    near_copy(past / "zed" / "select", root / "frank" / "select")
    return root


def test_planted_copies_top_the_list_and_skeletons_count_for_nothing(term: Path, tmp_path: Path) -> None:
    out = tmp_path / "sim"
    r = labgrade("similarity", str(term), "--lab", "select", "--out", str(out),
                 "--archive", str(tmp_path / "term1"))
    assert r.returncode == 0, r.stderr
    assert "changes no score" in r.stdout
    rows = [row for row in csv.reader((out / "pairs.csv").open()) if row and not row[0].startswith("#")][1:]
    pairs = [(row[1], row[2], float(row[3])) for row in rows]
    top2 = {frozenset(p[:2]) for p in pairs[:2]}
    assert top2 == {frozenset({"alice", "carol"}), frozenset({"archive:term1/zed", "frank"})}, pairs[:4]
    assert all(p[2] > 0.9 for p in pairs[:2])
    assert not [p for p in pairs if {"bob", "erin"} & set(p[:2])]  # nothing beyond the skeleton
    assert "changes no score" in (out / "pairs.csv").read_text()
    html = (out / "similarity.html").read_text()
    assert "carol/select/server.c" in html and "alice/select/server.c" in html


def test_similarity_refuses_what_it_cannot_compare(tmp_path: Path) -> None:
    (tmp_path / "one" / "alice" / "select").mkdir(parents=True)
    (tmp_path / "one" / "alice" / "select" / "server.c").write_text("int main(void) { return 0; }\n")
    r = labgrade("similarity", str(tmp_path / "one"), "--lab", "select", "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "fewer than 2 submissions" in r.stderr
    r = labgrade("similarity", str(ROOT / "submissions"), "--lab", "select", "--out", str(tmp_path / "o"),
                 "--skeleton", str(tmp_path / "nowhere"))
    assert r.returncode == 2 and "no skeleton" in r.stderr


def test_graded_compares_the_commit_each_summary_records(term: Path, tmp_path: Path) -> None:
    """With --graded, a student whose repository moved on after the deadline is compared as graded:
    carol copied alice, then rewrote her server after the deadline; her graded commit is the copy."""
    carol = term / "carol"
    env = {**__import__("os").environ, "GIT_AUTHOR_NAME": "c", "GIT_AUTHOR_EMAIL": "c@x", "GIT_COMMITTER_NAME": "c",
           "GIT_COMMITTER_EMAIL": "c@x"}

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(carol), *args], check=True, capture_output=True, text=True,
                              env=env).stdout.strip()

    git("init", "-q")
    git("add", "-A")
    git("commit", "-qm", "the copy")
    graded = git("rev-parse", "HEAD")
    (carol / "select" / "server.c").write_text("int main(void) { return 1; }\n")
    git("commit", "-qam", "after the deadline")
    results = tmp_path / "results"
    (results / "carol").mkdir(parents=True)
    s = Summary.of_checks(lab="select", submission="carol/select", seconds=1.0, checks=[]).replace(commit=graded)
    (results / "carol" / "select.json").write_text(json.dumps(s.to_json()))

    def top_pair(*extra: str) -> tuple[str, str, float]:
        out = tmp_path / f"sim{len(extra)}"
        r = labgrade("similarity", str(term), "--lab", "select", "--out", str(out), *extra)
        assert r.returncode == 0, r.stderr
        rows = [row for row in csv.reader((out / "pairs.csv").open()) if row and not row[0].startswith("#")][1:]
        return rows[0][1], rows[0][2], float(rows[0][3])

    assert top_pair()[:2] != ("alice", "carol")  # the working tree: her rewrite shares nothing
    assert top_pair("--graded", str(results)) == ("alice", "carol", pytest.approx(1.0, abs=0.1))
    assert git("status", "--porcelain") == "" and git("rev-parse", "HEAD") != graded  # her repository untouched
