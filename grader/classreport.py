"""`report.html`: a class at a glance, written by `labgrade batch` beside the gradebook. One
self-contained file (no script, no network, no file beside it: it opens from disk anywhere):
per lab the score distribution and each check's failure rate as inline SVG charts, the slowest
gradings, the flicker of `--repeat` and any check's metrics where present; then per student a
section with every lab's every check and its feedback, linked from the gradebook table."""
from __future__ import annotations

import csv
import html
from collections.abc import Sequence
from pathlib import Path

from . import catalogue
from .atomic import write_atomic
from .metrics import distribution, readable
from .results import Summary

Graded = tuple[str, Summary]
BAR, FAIL, PASS, ERROR = "#2b6cb0", "#c53030", "#2f855a", "#b7791f"
STYLE = f"""
body {{ font: 15px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 70em; color: #1a202c; padding: 0 1em }}
h1, h2, h3 {{ line-height: 1.2 }} table {{ border-collapse: collapse; margin: .5em 0 1.5em }}
td, th {{ border: 1px solid #cbd5e0; padding: .2em .6em; text-align: left }} td.n {{ text-align: right }}
.lab {{ display: flex; flex-wrap: wrap; gap: 2em; align-items: flex-start }} .chart {{ margin: .5em 0 }}
.passed {{ color: {PASS} }} .failed {{ color: {FAIL} }} .error {{ color: {ERROR} }}
pre {{ white-space: pre-wrap; background: #f7fafc; border-left: 3px solid #cbd5e0; padding: .5em .8em; margin: .3em 0 }}
section.student {{ border-top: 2px solid #e2e8f0; margin-top: 2em }} :target {{ background: #fffbea }}
.badge {{ display: inline-block; min-width: 4.5em; font-weight: 600 }} .note {{ color: #4a5568 }}
"""


def _e(x: object) -> str:
    return html.escape(str(x), quote=True)


def anchor(student: str) -> str:
    return "student-" + "".join(c if c.isalnum() or c in "-_" else "_" for c in student)


def histogram(scores: list[float], title: str) -> str:
    """Scores in bins of 10 (100 in the last), as SVG bars with their counts."""
    bins = [0] * 10
    for s in scores:
        bins[min(int(s // 10), 9)] += 1
    top = max(bins) or 1
    w, h, bw = 420, 180, 38
    bars = []
    for i, n in enumerate(bins):
        bh = 130 * n / top
        x = 20 + i * (bw + 2)
        bars.append(f'<rect x="{x}" y="{150 - bh:.1f}" width="{bw}" height="{bh:.1f}" fill="{BAR}">'
                    f"<title>{i * 10}-{i * 10 + 9 if i < 9 else 100}: {n}</title></rect>"
                    f'<text x="{x + bw / 2}" y="{145 - bh:.1f}" font-size="11" text-anchor="middle">{n or ""}</text>'
                    f'<text x="{x + bw / 2}" y="166" font-size="10" text-anchor="middle">'
                    f'{i * 10 if i < 9 else "90+"}</text>')
    return (f'<svg class="chart" role="img" aria-label="{_e(title)}" width="{w}" height="{h}" '
            f'viewBox="0 0 {w} {h}"><title>{_e(title)}</title><line x1="18" y1="150" x2="{w - 2}" y2="150" '
            f'stroke="#4a5568"/>{"".join(bars)}</svg>')


def failure_bars(rates: list[tuple[str, int, int]], title: str) -> str:
    """(check, failed, graded) as horizontal SVG bars: the share of graded submissions that failed."""
    rowh, w = 22, 460
    h = rowh * len(rates) + 10
    rows = []
    for i, (cid, failed, graded) in enumerate(rates):
        frac = failed / graded if graded else 0.0
        y = 5 + i * rowh
        rows.append(f'<text x="150" y="{y + 15}" font-size="12" text-anchor="end">{_e(cid)}</text>'
                    f'<rect x="156" y="{y + 3}" width="{240 * frac:.1f}" height="{rowh - 6}" fill="{FAIL}">'
                    f"<title>{_e(cid)}: {failed} of {graded} failed</title></rect>"
                    f'<text x="{162 + 240 * frac:.1f}" y="{y + 15}" font-size="11">{failed}/{graded}</text>')
    return (f'<svg class="chart" role="img" aria-label="{_e(title)}" width="{w}" height="{h}" '
            f'viewBox="0 0 {w} {h}"><title>{_e(title)}</title>{"".join(rows)}</svg>')


def _flicker(out: Path) -> list[dict[str, str]]:
    try:
        with (out / "flicker.csv").open(newline="") as f:
            return list(csv.DictReader(f))
    except OSError:
        return []


def render(rows: Sequence[Graded], out: Path) -> str:
    labs = [lab for lab in catalogue.LABS if any(s.lab == lab for _, s in rows)]
    students = sorted({st for st, _ in rows})
    by = {(st, s.lab): s for st, s in rows}
    parts = [f"<!doctype html><html lang=en><head><meta charset=utf-8><title>labgrade: class report</title>"
             f"<style>{STYLE}</style></head><body><h1>Class report</h1>"
             f'<p class="note">{len(students)} students, {len(rows)} submissions of {", ".join(labs)}. '
             "Scores are the grader's; this page changes none.</p>"]
    # the gradebook, each cell linked to the student's section
    head = "".join(f"<th>{_e(lab)}</th>" for lab in labs)
    body = []
    for st in students:
        cells = []
        for lab in labs:
            s = by.get((st, lab))
            text = "-" if s is None else f"{s.score:g}/{s.max_score:g}" if s.gradable else "not graded"
            cells.append('<td class="n">-</td>' if s is None else
                         f'<td class="n"><a href="#{anchor(st)}-{lab}">{_e(text)}</a></td>')
        body.append(f'<tr><td><a href="#{anchor(st)}">{_e(st)}</a></td>{"".join(cells)}</tr>')
    parts.append(f"<h2>Gradebook</h2><table><tr><th>student</th>{head}</tr>{''.join(body)}</table>")
    for lab in labs:
        graded = [(st, s) for st, s in rows if s.lab == lab and s.gradable]
        scores = [100 * s.score / s.max_score if s.max_score else 0.0 for _, s in graded]  # % of what was graded
        rates = []
        for c in catalogue.checks(lab):
            results = [x for _, s in graded for x in s.checks if x.id == c.id and x.charged]
            rates.append((c.id, sum(x.status == "failed" for x in results), len(results)))
        mean = sum(scores) / len(scores) if scores else 0
        parts.append(f'<h2 id="lab-{_e(lab)}">Lab {_e(lab)}</h2><p class="note">{len(graded)} graded, mean '
                     f"{mean:.1f}%, {sum(s == 100 for s in scores)} at full marks</p><div class=lab><div>"
                     "<h3>Scores (% of the points graded)</h3>"
                     f"{histogram(scores, f'lab {lab}: scores in bins of 10')}</div><div><h3>Failure rate per "
                     f"check</h3>{failure_bars(rates, f'lab {lab}: failed per check')}</div></div>")
        slow = sorted(graded, key=lambda g: -g[1].seconds)[:5]
        parts.append("<h3>Slowest gradings</h3><table><tr><th>student</th><th>seconds</th><th>score</th></tr>"
                     + "".join(f'<tr><td><a href="#{anchor(st)}-{lab}">{_e(st)}</a></td><td class="n">'
                               f"{s.seconds:.1f}</td><td class=n>{s.score:g}</td></tr>" for st, s in slow)
                     + "</table>")
        dist = distribution(s for _, s in graded)
        if dist:
            parts.append("<h3>Measured</h3><table><tr><th>check</th><th>metric</th><th>n</th><th>min</th><th>q1</th>"
                         "<th>median</th><th>q3</th><th>max</th></tr>"
                         + "".join(f"<tr><td>{_e(r[1])}</td><td>{_e(r[2])}</td>"
                                   + "".join(f"<td class=n>{readable(x)}</td>" for x in r[3:]) + "</tr>" for r in dist)
                         + "</table>")
    flick = _flicker(out)
    parts.append("<h2>Flicker</h2>" + (
        "<table><tr><th>student</th><th>lab</th><th>check</th><th>verdicts</th><th>seeds</th></tr>"
        + "".join(f"<tr><td>{_e(r.get('student'))}</td><td>{_e(r.get('lab'))}</td><td>{_e(r.get('check'))}</td>"
                  f"<td>{_e(r.get('verdicts'))}</td><td>{_e(r.get('seeds'))}</td></tr>" for r in flick) + "</table>"
        if flick else '<p class="note">None recorded (`labgrade batch --repeat N` measures it).</p>'))
    parts.append("<h2>Students</h2>")
    for st in students:
        parts.append(f'<section class=student id="{anchor(st)}"><h3>{_e(st)}</h3>')
        for lab in labs:
            s = by.get((st, lab))
            if s is None:
                continue
            parts.append(f'<h4 id="{anchor(st)}-{lab}">{_e(lab)}: '
                         + (f"{s.score:g}/{s.max_score:g}" if s.gradable else "not graded") + "</h4>")
            if not s.gradable:
                parts.append(f"<pre>{_e(s.error or '')}</pre>")
            for r in s.checks:
                word = {"passed": "PASS", "failed": "FAIL", "error": "ERROR"}[r.status]
                parts.append(f'<div><span class="badge {r.status}">{word}</span> <b>{_e(r.id)}</b> '
                             f"{r.score:g}/{r.max_score:g}" + (f"<pre>{_e(r.feedback)}</pre>" if r.feedback else "")
                             + "</div>")
        parts.append("</section>")
    parts.append("</body></html>\n")
    return "".join(parts)


def write_report(path: Path, rows: Sequence[Graded]) -> None:
    write_atomic(path, render(rows, path.parent))
