"""The shared check `vs-reference`: the submission against the reference server, on the same
workload, in alternate rounds of the same sandbox. (Not named after the check: no file of the
public grader is named like the reference, which never ships to students.)"""
from __future__ import annotations

import math

from ..errors import GradingEnvironmentError
from ..session import GradingSession
from ..verdict import fail
from .blocked import Watch
from .common import PATIENCE, Start, state
from .perf import BATCH, CLIENTS, WINDOW, Round, figures, measure

FLOOR = 0.05  # the reference's time counts as at least this much: below it, timing noise rules
RATIO = 5
MARGIN = 0.5  # the reference's two fastest rounds differ by more than this (a fraction): too loaded to measure
REF_LIMIT = 60.0  # a reference round taking longer: the machine is not fit to grade


def _best(rs: list[Round]) -> float:
    """The best finished round's time; math.inf when none finished."""
    return min((r.seconds for r in rs if r.seconds is not None), default=math.inf)


def _pace(sub: list[Round]) -> float:
    """The submission's best time: a round stopped early counts at its pace."""
    return min(r.estimate for r in sub)


def _spread(ref: list[Round]) -> float:
    """The factor the reference's two fastest rounds are apart."""
    a, b = sorted(r.seconds or math.inf for r in ref)[:2]
    return b / a


def unsure(sub: list[Round], ref: list[Round]) -> bool:
    """The machine too loaded to measure: the reference's two fastest rounds more than MARGIN
    apart, and the verdict not the same however they are read: the submission's time against the
    reference's best is on both sides of RATIO when off by that factor (noise, both ways)."""
    spread = _spread(ref)
    ratio = _pace(sub) / max(_best(ref), FLOOR)
    return spread > 1 + MARGIN and ratio * spread > RATIO >= ratio / spread


def _words(sub: list[Round], ref: list[Round]) -> tuple[dict[str, float], str]:
    m = {**figures("submission", sub), **figures("reference", ref)}
    pace = _pace(sub)
    if pace < math.inf:
        m["slowdown"] = round(pace / max(_best(ref), FLOOR), 2)
    lines = [f"Measured (best round of each; {CLIENTS} clients at once, each keeping {WINDOW} lines in flight "
             f"(the next once the oldest one's echo is back), {ref[0].batches * BATCH} lines per client):"]
    for who, name in (("submission", "your server"), ("reference", "the reference")):
        if f"{who}_lines_per_s" not in m:
            lines.append(f"  {name}: finished none of its {len(sub)} rounds" + (
                f"; at its best pace, the whole would take {pace:.1f} s" if pace < math.inf else ""))
            continue
        lines.append(f"  {name}: {m[who + '_seconds']:.2f} s, {m[who + '_lines_per_s']:.0f} lines/s "
                     f"({m[who + '_mb_per_s']:.2f} MB/s), a line's echo in {m[who + '_latency_p50_ms']:.2f} ms "
                     f"(median) / {m[who + '_latency_p99_ms']:.2f} ms (99th percentile), "
                     f"{m[who + '_cpu_s']:.2f} CPU s; rounds within {m[who + '_spread_pct']:.0f}% of the best")
    if "slowdown" in m:
        lines.append(f"  your server's time: {m['slowdown']:.2f} times the reference's")
    return m, "\n".join(lines)


def check_vs_reference(grading: GradingSession, start: Start) -> None:
    ref_build = grading.reference_build()
    rule = f"on the same workload, the submission is at most {RATIO} times slower than the reference"
    sub: list[Round] = []
    ref: list[Round] = []
    cut = ""  # what the last stopped round saw

    def too_slow() -> bool:
        return _best(sub) / max(_best(ref), FLOOR) > RATIO

    def borderline() -> bool:  # not clearly slower: within twice the ratio, at the best round's pace
        return _pace(sub) / max(_best(ref), FLOOR) <= 2 * RATIO

    for rounds in range(1, 5):  # alternate rounds of the same workload: the machine's noise hits both
        if rounds > 2 and not (too_slow() and borderline()) and not unsure(sub, ref):
            break  # more rounds only when the first two look slow but not far off, or the reference's
            # disagree by enough to change the verdict
        r = start(ref_build, what="the reference server")
        # the first round sets the workload: batches of lines until it has lasted TARGET seconds
        got = measure(r, batches=ref[0].batches if ref else None, limit=REF_LIMIT)
        r.stop()
        if got.seconds is None:
            raise GradingEnvironmentError(f"the reference server did not complete the workload: "
                                          f"{got.lost or f'not within {REF_LIMIT:.0f} s'}")
        ref.append(got)
        # A round of the submission ends at RATIO times the reference's best so far: past that, this
        # round already counts as too slow (the best only falls), and waiting longer tells nothing.
        # The first lasts at least 1 s: time to prove a server that will never answer (blocked.Watch).
        limit = max(RATIO * max(_best(ref), FLOOR), 1.0 if rounds == 1 else 0.0)
        s = start()
        got = measure(s, batches=ref[0].batches, limit=limit, stall=PATIENCE, judge=Watch(s),
                      hopeless=2 * RATIO * max(_best(ref), FLOOR))
        s.stop()
        sub.append(got)
        did = (f"ran {CLIENTS} clients at once on your server and on the reference, alternately, each client sending "
               f"{ref[0].batches * BATCH} lines with {WINDOW} in flight at most")
        if got.lost:
            m, words = _words(sub, ref)
            grading.measure("vs-reference", m, words)
            fail(did, f"not every line came back: {got.lost}; {state(s)}", rule=rule)
        if got.seconds is None:
            cut = f"it had echoed {got.lines} of {got.total} lines after {got.elapsed:.2f} s" + (
                f" (at that pace, the whole would take {got.estimate:.1f} s)" if got.lines else "")
    m, words = _words(sub, ref)
    grading.measure("vs-reference", m, words)
    if unsure(sub, ref):
        raise GradingEnvironmentError(
            "the machine is too loaded to measure: the reference's own rounds took "
            + ", ".join(f"{r.seconds:.2f}" for r in ref) + f" s, its two fastest more than {MARGIN:.0%} apart, "
            f"and your server's {_pace(sub):.2f} s is near enough to {RATIO} times the reference's that this "
            "noise could change the verdict")
    ref_best = _best(ref)
    floor = f" (counted as {FLOOR} s, the floor of the comparison)" if ref_best < FLOOR else ""
    if too_slow() and _best(sub) == math.inf:
        fail(f"{did}, {len(sub)} times each; each round of your server stopped at {RATIO} times the "
             f"reference's best time so far (the first after 1 s at the least), or after 1 s once its pace "
             f"said {2 * RATIO} times",
             f"your server finished in none of the {len(sub)} rounds (the reference's best: {ref_best:.2f} s"
             f"{floor}); in the last one, {cut}: more than {RATIO} times slower", rule=rule,
             hint="look for sleeps, one-byte reads or writes, a lock held for a whole connection, or clients "
                  "served one after another")
    if too_slow():
        fail(f"{did}, {len(sub)} times each",
             f"your server took {_best(sub):.2f} s at best, the reference {ref_best:.2f} s{floor}: "
             f"{_best(sub) / max(ref_best, FLOOR):.1f} times slower", rule=rule,
             hint="look for sleeps, one-byte reads or writes, or a lock held for a whole connection")
