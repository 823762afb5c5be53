"""`report.html`, the class at a glance: self-contained (no script, nothing fetched), a chart of
scores and of each check's failure rate per lab, every student's feedback one link away from the
gradebook; and, as a person sees it, rendered by headless Chromium (Debian's `chromium`), whose
screenshots are kept in $LABGRADE_ARTIFACTS (default: test-artifacts/ of the checkout)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from support import ROOT
from test_diff import write

from grader import classreport
from grader.diff import load_results
from grader.results import Summary

ARTIFACTS = Path(os.environ.get("LABGRADE_ARTIFACTS") or ROOT / "test-artifacts")


class Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.links: list[str] = []
        self.svgs: list[str] = []
        self.tags: set[str] = set()
        self.external: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.add(tag)
        if a.get("id"):
            self.ids.add(a["id"] or "")
        if tag == "a" and a.get("href"):
            self.links.append(a["href"] or "")
        if tag == "svg":
            self.svgs.append(a.get("aria-label") or "")
        for k in ("src", "href"):
            v = a.get(k) or ""
            if v and not v.startswith("#"):
                self.external.append(v)


@pytest.fixture
def results(tmp_path: Path) -> Path:
    out = tmp_path / "results"
    write(out, "alice", "fork", {"echo": (True, ""), "zombies": (True, "")}, "0.1.0")
    write(out, "bob", "fork", {"echo": (True, ""), "zombies": (False, "3 zombies <defunct> remained 1 s after")},
          "0.1.0")
    write(out, "bob", "select", {"echo": (False, "nothing came back <script>alert(1)</script>")}, "0.1.0")
    write(out, "carol", "select", {}, "0.1.0", gradable=False)
    return out


def rows(out: Path) -> list[tuple[str, Summary]]:
    return [(st, s) for (st, _), s in sorted(load_results(out).items())]


def test_the_report_is_self_contained_with_charts_and_every_feedback_one_link_away(results: Path) -> None:
    classreport.write_report(results / "report.html", rows(results))
    text = (results / "report.html").read_text()
    page = Page()
    page.feed(text)
    assert "script" not in page.tags and not page.external  # opens from disk, fetches nothing
    assert page.svgs == ["lab fork: scores in bins of 10", "lab fork: failed per check",
                         "lab select: scores in bins of 10", "lab select: failed per check"]
    assert "#student-bob-fork" in page.links and "student-bob-fork" in page.ids
    section = text[text.index('id="student-bob-fork"'):]
    assert "3 zombies &lt;defunct&gt; remained 1 s after" in section[:section.index("</h4>") + 2000]
    assert "<script>alert" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "not graded" in text and "the engine did not answer" in text
    assert all(f"#{target}" in page.links for target in ("student-alice", "student-bob", "student-carol"))


@pytest.mark.slow
def test_the_report_renders_in_chromium(results: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    assert browser, "Debian's chromium package is needed (the test image has it): apt-get install chromium"
    classreport.write_report(results / "report.html", rows(results))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "report.png"
    base = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
            f"--user-data-dir={results / 'chromium'}"]
    r = subprocess.run([*base, "--window-size=1000,3000", f"--screenshot={shot}",
                        (results / "report.html").as_uri()], capture_output=True, text=True, timeout=120)
    assert shot.is_file(), r.stderr[-2000:]
    from PIL import Image

    colours = {c for _, c in Image.open(shot).convert("RGB").getcolors(1 << 20) or []}
    hexes = {"#{:02x}{:02x}{:02x}".format(*c) for c in colours}
    assert classreport.BAR in hexes and classreport.FAIL in hexes, "the charts' bars were not drawn"
    # the DOM Chromium built: bob's fork section, where the gradebook's link leads, holds its feedback
    dom = subprocess.run([*base, "--dump-dom", (results / "report.html").as_uri()], capture_output=True,
                         text=True, timeout=120).stdout
    m = re.search(r'<h4 id="student-bob-fork">.*?</section>', dom, re.S)
    assert m and "3 zombies &lt;defunct&gt; remained" in m.group(0)
    print(f"screenshot: {shot}")
