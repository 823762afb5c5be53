"""`vs-reference` measures: the closed-loop clients of grader.checks.perf against small servers
of this process (every line checked, timed and counted; a round cut by its pace), the check's
rule on canned rounds (how many rounds, when the machine is too loaded to measure, what the
summary's metrics and the feedback say), and the class's distribution (grader.metrics)."""
from __future__ import annotations

import contextlib
import math
import os
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from grader import metrics
from grader.checks import perf, speed
from grader.errors import GradingEnvironmentError
from grader.results import CheckResult, Summary
from grader.verdict import CheckFailed

Handler = Callable[[socket.socket], None]


def echo(conn: socket.socket) -> None:
    while data := conn.recv(65536):
        conn.sendall(data)


def serving(handler: Handler) -> Iterator[SimpleNamespace]:
    class H(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            with contextlib.suppress(OSError):
                handler(self.request)

    class S(socketserver.ThreadingTCPServer):
        daemon_threads = True
        allow_reuse_address = True
        request_queue_size = 64  # the 16 clients connect at once

    srv = S(("127.0.0.1", 0), H)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield SimpleNamespace(port=srv.server_address[1], pid=os.getpid())
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.fixture
def echo_server() -> Iterator[SimpleNamespace]:
    yield from serving(echo)


def test_a_round_counts_and_times_every_line(echo_server: SimpleNamespace) -> None:
    r = perf.measure(echo_server, batches=2, limit=20)  # type: ignore[arg-type]
    total = 2 * perf.BATCH * perf.CLIENTS
    assert r.seconds is not None and r.lost == "" and r.batches == 2
    assert r.lines == r.total == total == len(r.latencies)
    assert 60 * total <= r.nbytes <= 120 * total  # lines of 60 to 120 bytes, newline included
    assert all(0 <= x <= r.seconds for x in r.latencies)
    assert r.estimate == r.seconds and r.cpu >= 0
    f = perf.figures("submission", [r, r])
    assert f["submission_lines_per_s"] == pytest.approx(total / r.seconds, rel=0.01)
    assert f["submission_latency_p50_ms"] <= f["submission_latency_p99_ms"]
    assert f["submission_spread_pct"] == 0 and f["submission_rounds_finished"] == 2


def test_the_calibrating_round_lasts_its_target(echo_server: SimpleNamespace) -> None:
    r = perf.measure(echo_server, batches=None, limit=20)  # type: ignore[arg-type]
    assert r.seconds is not None and r.seconds >= perf.TARGET
    assert r.batches >= 1 and r.total == r.batches * perf.BATCH * perf.CLIENTS == r.lines


def test_cpu_seconds_of_a_busy_process_tree() -> None:
    """Read from the threads' schedstat: a thread that spent 0.3 s of CPU shows in this process's
    figure (spinning until its own CPU clock says so, not the wall clock: on a loaded machine 0.3 s
    of wall time may be much less of CPU)."""
    before = perf._tree_cpu(os.getpid())
    stop = time.thread_time() + 0.3
    while time.thread_time() < stop:
        pass
    assert perf._tree_cpu(os.getpid()) - before >= 0.25


@pytest.mark.parametrize(("handler", "lost"), [
    (lambda c: c.sendall(c.recv(65536)[:-1] + b"x\n"), "differed"),
    (lambda c: c.close(), "closed a client's connection"),
    (lambda c: (c.sendall(c.recv(65536) * 2), c.recv(65536)), "more than the lines"),
])
def test_a_wrong_echo_is_lost_at_once(handler: Handler, lost: str) -> None:
    for s in serving(handler):
        t0 = time.monotonic()
        r = perf.measure(s, batches=2, limit=10)  # type: ignore[arg-type]
        assert r.seconds is None and lost in r.lost and time.monotonic() - t0 < 3
        assert r.estimate == math.inf  # no pace, so no slowdown, from a round that lost lines


def test_a_round_stops_once_its_pace_is_hopeless() -> None:
    def slow(conn: socket.socket) -> None:
        buf = b""
        while data := conn.recv(65536):
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                time.sleep(0.01)
                conn.sendall(line + b"\n")

    for s in serving(slow):
        t0 = time.monotonic()
        r = perf.measure(s, batches=4, limit=30, hopeless=2.0)  # type: ignore[arg-type]
        took = time.monotonic() - t0
        # 400 lines per client at 10 ms each: 4 s at the very least, the pace says so after 1 s
        assert r.seconds is None and r.lost == "" and 0 < r.lines < r.total
        assert 1.0 <= took < 2.5 and r.estimate > 3.0


# The rule, on canned rounds: measure() replaced by a script of round times


def rnd(seconds: float | None, lines: int = 1600, estimate: float | None = None) -> perf.Round:
    return perf.Round(seconds, lines=lines if seconds else lines // 4, nbytes=lines * 90, batches=1,
                      latencies=[0.001, 0.002, 0.01], cpu=0.1,
                      estimate=seconds if seconds else (estimate or math.inf), total=lines, elapsed=seconds or 1.0)


def run_check(monkeypatch: pytest.MonkeyPatch, ref: list[float], sub: list[perf.Round]) -> tuple[SimpleNamespace, Any]:
    script = {"ref": [rnd(t) for t in ref], "sub": list(sub)}
    calls: list[str] = []
    grading = SimpleNamespace(reference_build=lambda: "REF", measured={},
                              measure=lambda cid, m, w: grading.measured.__setitem__(cid, (m, w)))

    def start(build: object = None, **_: object) -> SimpleNamespace:
        return SimpleNamespace(who="ref" if build == "REF" else "sub", stop=lambda: None)

    def measure(s: SimpleNamespace, **kw: Any) -> perf.Round:
        calls.append(s.who)
        return script[s.who].pop(0)

    monkeypatch.setattr(speed, "measure", measure)
    monkeypatch.setattr(speed, "Watch", lambda s: None)
    monkeypatch.setattr(speed, "state", lambda s: "the server runs")
    outcome: Any = None
    try:
        speed.check_vs_reference(grading, start)  # type: ignore[arg-type]
    except (CheckFailed, GradingEnvironmentError) as e:
        outcome = e
    return SimpleNamespace(calls=calls, grading=grading), outcome


def test_a_server_within_the_ratio_passes_in_two_rounds_each(monkeypatch: pytest.MonkeyPatch) -> None:
    seen, outcome = run_check(monkeypatch, [1.0, 1.1], [rnd(2.0), rnd(1.8)])
    assert outcome is None and seen.calls == ["ref", "sub", "ref", "sub"]
    m, words = seen.grading.measured["vs-reference"]
    assert m["slowdown"] == 1.8 and m["reference_seconds"] == 1.0 and m["submission_seconds"] == 1.8
    assert m["submission_lines_per_s"] == pytest.approx(1600 / 1.8, abs=0.1)
    assert m["submission_spread_pct"] == pytest.approx(11.1) and m["reference_rounds"] == 2
    assert "your server: 1.80 s" in words and "1.80 times the reference's" in words


def test_far_too_slow_fails_after_two_rounds(monkeypatch: pytest.MonkeyPatch) -> None:
    seen, outcome = run_check(monkeypatch, [1.0, 1.0], [rnd(None, estimate=30), rnd(None, estimate=25)])
    assert isinstance(outcome, CheckFailed) and seen.calls == ["ref", "sub"] * 2
    assert "finished in none of the 2 rounds" in outcome.saw and "would take 25.0 s" in outcome.saw
    assert seen.grading.measured["vs-reference"][0]["slowdown"] == 25.0


@pytest.mark.parametrize(("sub", "passes"), [([6.0, 6.0, 4.5], True), ([6.0, 6.0, 6.0, 5.5], False)])
def test_a_server_near_the_ratio_gets_four_rounds(monkeypatch: pytest.MonkeyPatch, sub: list[float],
                                                  passes: bool) -> None:
    seen, outcome = run_check(monkeypatch, [1.0] * 4, [rnd(t) for t in sub])
    assert seen.calls.count("sub") == len(sub)
    assert (outcome is None) == passes
    if not passes:
        assert "5.5 times slower" in outcome.saw


def test_a_reference_disagreeing_with_itself_is_the_machines_fault_only_near_the_ratio(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # rounds 1.0 and 2.0 apart by 2x: a submission at 4 or 6 times the best could be on either side
    for t in (4.0, 6.0):
        seen, outcome = run_check(monkeypatch, [1.0, 2.0, 2.2, 2.4], [rnd(t)] * 4)
        assert isinstance(outcome, GradingEnvironmentError) and "too loaded to measure" in str(outcome)
        assert "could change the verdict" in str(outcome) and seen.calls.count("ref") == 4
    # the case of a real CI run (select/alt-epoll): the reference's fastest round an outlier, the
    # submission as fast as the reference: a pass whichever round is right, in two rounds each
    seen, outcome = run_check(monkeypatch, [0.54, 1.02, 1.07, 0.93], [rnd(1.0)] * 4)
    assert outcome is None and seen.calls == ["ref", "sub", "ref", "sub"]
    # 12 times the best is more than 5 times even 2x off: a failure, not an error
    seen, outcome = run_check(monkeypatch, [1.0, 2.0, 2.2, 2.4], [rnd(12.0)] * 4)
    assert isinstance(outcome, CheckFailed) and "12.0 times slower" in outcome.saw
    # a submission that finished no round, at a pace of 50 times, fails too
    seen, outcome = run_check(monkeypatch, [1.0, 2.0, 2.2, 2.4], [rnd(None, estimate=50.0)] * 4)
    assert isinstance(outcome, CheckFailed) and "finished in none" in outcome.saw
    # once two of its rounds agree, it measures: a lone spike costs a round, not a verdict
    seen, outcome = run_check(monkeypatch, [1.0, 2.0, 1.1], [rnd(4.0)] * 3)
    assert outcome is None and seen.calls.count("ref") == 3


def test_a_lost_line_fails_with_the_figures(monkeypatch: pytest.MonkeyPatch) -> None:
    lost = perf.Round(None, lines=10, lost="a line's echo differed from the line", total=1600)
    seen, outcome = run_check(monkeypatch, [1.0], [lost])
    assert isinstance(outcome, CheckFailed) and "differed" in outcome.saw and seen.calls == ["ref", "sub"]
    assert "vs-reference" in seen.grading.measured and "slowdown" not in seen.grading.measured["vs-reference"][0]


def summary(lab: str, student: str, lps: float) -> Summary:
    c = CheckResult(id="vs-reference", status="passed", score=5, max_score=5, visibility="hidden",
                    feedback="", seconds=6.0, metrics={"submission_lines_per_s": lps, "slowdown": 20000 / lps})
    return Summary.of_checks(lab=lab, submission=f"{student}/{lab}", seconds=10, checks=[c])


def test_the_class_distribution() -> None:
    s = [summary("fork", f"s{k}", v) for k, v in enumerate([10000, 20000, 30000, 40000, 50000])]
    s.append(summary("select", "s0", 5000))
    rows = {(r[0], r[2]): r for r in metrics.distribution(s)}
    assert rows["fork", "submission_lines_per_s"][3:] == (5, 10000, 20000, 30000, 40000, 50000)
    assert rows["select", "slowdown"][3:] == (1, 4.0, 4.0, 4.0, 4.0, 4.0)
    text = metrics.table(s)
    assert "Measured in lab fork" in text and "Measured in lab select" in text
    assert text.index("slowdown") < text.index("submission_lines_per_s")  # in SHOWN's order
    assert metrics.table([Summary.of_checks(lab="fork", submission="a/fork", seconds=1, checks=[])]) == ""
