"""The class's distribution of the figures checks measure (a check's `metrics`, such as
`vs-reference`'s throughput and latency): per lab and metric, how many submissions measured it
and its minimum, quartiles and maximum. `labgrade batch` prints it and report.html shows it."""
from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence

from .results import Summary

# printed by `labgrade batch` (report.html shows every metric); the submission's best round
SHOWN = ("slowdown", "submission_lines_per_s", "submission_mb_per_s", "submission_latency_p50_ms",
         "submission_latency_p99_ms", "submission_cpu_s")

def readable(x: float) -> str:
    """A measured number as a person reads it: 18,710 rather than 1.871e+04."""
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.4g}"


Row = tuple[str, str, str, int, float, float, float, float, float]  # lab, check, metric, n, min, q1, median, q3, max


def distribution(summaries: Iterable[Summary]) -> list[Row]:
    """Per (lab, check, metric) measured by at least one submission: n, min, q1, median, q3, max."""
    values: dict[tuple[str, str, str], list[float]] = {}
    for s in summaries:
        for c in s.checks:
            for k, v in (c.metrics or {}).items():
                values.setdefault((s.lab, c.id, k), []).append(float(v))
    rows: list[Row] = []
    for (lab, check, k), vs in values.items():
        q1, med, q3 = statistics.quantiles(vs, n=4, method="inclusive") if len(vs) > 1 else (vs[0],) * 3
        rows.append((lab, check, k, len(vs), min(vs), q1, med, q3, max(vs)))
    return rows


def table(summaries: Sequence[Summary], shown: Sequence[str] = SHOWN) -> str:
    """The distribution of `shown` metrics as text lines, a block per lab; "" when nothing was measured."""
    out: list[str] = []
    for lab in dict.fromkeys(s.lab for s in summaries):
        rows = [r for r in distribution(s for s in summaries if s.lab == lab) if r[2] in shown]
        if not rows:
            continue
        rows.sort(key=lambda r: shown.index(r[2]))
        out.append(f"Measured in lab {lab} (n submissions; min, quartiles, max):")
        w = max(len(f"{r[1]} {r[2]}") for r in rows)
        out += [f"  {f'{r[1]} {r[2]}':<{w}}  n={r[3]:<3} "
                + "  ".join(f"{readable(x):>9}" for x in r[4:]) for r in rows]
    return "\n".join(out)
