"""The shared check `vs-reference`: the submission against the reference server, on the same
workload, in alternate rounds of the same sandbox. (Not named after the check: no file of the
public grader is named like the reference, which never ships to students.)"""
from __future__ import annotations

import math
import time

from ..clients import close_all, connect_many, echo_many, random_lines
from ..harness import Server
from ..session import GradingSession
from ..verdict import fail
from .blocked import Watch
from .common import PATIENCE, Start, state

FLOOR = 0.05  # the reference's time counts as at least this much: below it, timing noise rules
RATIO = 5


def timed_workload(s: Server, clients: int = 16, lines: int = 100, *, limit: float = 30.0,
                   judge: Watch | None = None) -> tuple[float | None, str]:
    """Seconds to echo `lines` lines on each of `clients` concurrent clients; or None and what was
    lost, "" when only `limit` ran out. Without a `judge` it waits for all of it up to `limit` (the
    reference); with one it stops once nothing has come back for PATIENCE, or the judge proves
    that the rest never will."""
    t0 = time.monotonic()
    cs = connect_many(s.port, clients, judge=judge)
    payloads = [b"".join(random_lines(lines, 60, 120)) for _ in cs]
    got = echo_many(cs, payloads, limit, stall=PATIENCE if judge else None, judge=judge)
    close_all(cs)
    if got == payloads:
        return time.monotonic() - t0, ""
    short = [i for i, (g, p) in enumerate(zip(got, payloads, strict=True)) if g != p]
    errors = [cs[i].error for i in short if cs[i].error]
    return None, f"{len(short)} of {clients} clients did not get all their echo: {errors[0]}" if errors else ""


def check_vs_reference(grading: GradingSession, start: Start) -> None:
    ref_build = grading.reference_build()
    did = "ran 16 clients x 100 lines at once on your server and on the reference, alternately"
    rule = f"on the same workload, the submission is at most {RATIO} times slower than the reference"
    sub_t: list[float] = []  # math.inf: a round stopped at RATIO times the reference's best time
    ref_t: list[float] = []
    cut = ""  # what the last stopped round saw

    def too_slow() -> bool:
        return min(sub_t) / max(min(ref_t), FLOOR) > RATIO

    for rounds in range(1, 5):  # alternate, keep the best of each: the machine's noise hits both
        if rounds > 2 and not too_slow():
            break  # a third and fourth round only when the first two look slow: a load spike must not fail it
        ref = start(ref_build, what="the reference server")
        t, _ = timed_workload(ref)
        if t is None:
            from ..errors import GradingEnvironmentError

            raise GradingEnvironmentError("the reference server did not complete the workload")
        ref_t.append(t)
        ref.stop()
        # A round of the submission ends at RATIO times the reference's best so far: past that, this
        # round already counts as too slow (the best only falls), and waiting longer tells nothing.
        # The first lasts at least 1 s: time to prove a server that will never answer (blocked.Watch),
        # which then fails at once instead of being timed out round after round.
        limit = max(RATIO * max(min(ref_t), FLOOR), 1.0 if rounds == 1 else 0.0)
        sub = start()
        t, why = timed_workload(sub, limit=limit, judge=Watch(sub))
        sub.stop()
        if t is None and why:
            fail(did, f"not every line came back: {why}; {state(sub)}", rule=rule)
        if t is None:
            cut = f"it had not finished after {limit:.2f} s"
        sub_t.append(math.inf if t is None else t)
    ref_best = min(ref_t)
    floor = f" (counted as {FLOOR} s, the floor of the comparison)" if ref_best < FLOOR else ""
    if too_slow() and min(sub_t) == math.inf:
        fail(f"{did}, {len(sub_t)} times each; each round of your server stopped at {RATIO} times the "
             "reference's best time so far (the first after 1 s at the least)",
             f"your server finished in none of the {len(sub_t)} rounds (the reference's best: {ref_best:.2f} s"
             f"{floor}); in the last one, {cut}: more than {RATIO} times slower", rule=rule,
             hint="look for sleeps, one-byte reads or writes, a lock held for a whole connection, or clients "
                  "served one after another")
    if too_slow():
        ratio = min(sub_t) / max(ref_best, FLOOR)
        fail(f"{did}, {len(sub_t)} times each",
             f"your server took {min(sub_t):.2f} s at best, the reference {ref_best:.2f} s{floor}: "
             f"{ratio:.1f} times slower", rule=rule,
             hint="look for sleeps, one-byte reads or writes, or a lock held for a whole connection")
