"""Measuring a server for `vs-reference`: a round of concurrent clients in a closed loop (each
keeps WINDOW lines in flight, sending the next once the oldest one's echo is back), timed per line, with the CPU time
the server's processes spent on it. Every figure of the check's `metrics` comes from here."""
from __future__ import annotations

import math
import selectors
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .. import probes
from ..clients import Client, Judge, close_all, connect_many, random_lines
from ..harness import Server

CLIENTS = 16
BATCH = 100  # lines per client between two looks at the clock (the calibrating round's step)
WINDOW = 8  # lines a client has in flight: the next goes once the oldest one's echo is back
TARGET = 1.0  # the calibrating round of the reference lasts at least this long (seconds)
QUIET = 0.1  # the server is asked whether it will ever answer only after nothing moved for this long
MAX_BATCHES = 200  # a reference faster than 16 x 100 x 200 lines a second still stops there


@dataclass
class Round:
    """One server's round: `seconds` None when it did not finish (cut by its limit, or `lost`)."""
    seconds: float | None
    lines: int = 0  # lines whose echo came back whole
    nbytes: int = 0
    batches: int = 0
    latencies: list[float] = field(default_factory=list)
    cpu: float = 0.0
    lost: str = ""  # why some client will never get its echo ("" when only the limit ran out)
    estimate: float = math.inf  # `seconds`, or for a round stopped early the whole workload's time at its pace
    total: int = 0  # lines of the whole workload (0: the calibrating round, until it ends)
    elapsed: float = 0.0


def _tree_cpu(pid: int) -> float:
    """CPU seconds the server's processes have run: every live thread's run time to the
    nanosecond (/proc/PID/task/TID/schedstat), plus the children each live process has reaped
    (cutime and cstime of /proc/PID/stat: a reaped child's time moves there, once)."""
    total = 0.0
    for p in [pid, *(q.pid for q in probes.descendants(pid))]:
        try:
            total += sum(int(x) for x in Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[13:15]) \
                / probes.CLK_TCK
            for task in Path(f"/proc/{p}/task").iterdir():
                total += int((task / "schedstat").read_text().split()[0]) / 1e9
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
    return total


def _batch(clients: list[Client], lines: list[list[bytes]], deadline: float, stall: float | None,
           judge: Judge | None, r: Round, give_up: Callable[[], bool]) -> bool:
    """Every client sends its lines keeping WINDOW of them in flight: the next goes once the
    oldest one's echo came back whole. Adds to `r` what came back, and each line's time from its
    sending to its whole echo; False when not all came back (`lost` set when it never will)."""
    sel = selectors.DefaultSelector()
    queued = [0] * len(clients)  # lines handed to the socket's outgoing buffer, or waiting in `out`
    out = [bytearray() for _ in clients]  # bytes still to send
    flight: list[deque[tuple[bytes, float]]] = [deque() for _ in clients]
    got = [bytearray() for _ in clients]
    total = [0] * len(clients)

    def top_up(i: int) -> None:
        while len(flight[i]) < WINDOW and queued[i] < len(lines[i]):
            line = lines[i][queued[i]]
            queued[i] += 1
            out[i] += line
            flight[i].append((line, time.monotonic()))

    for i, c in enumerate(clients):
        assert c.sock is not None
        c.sock.setblocking(False)
        top_up(i)
        sel.register(c.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, i)
    moved = time.monotonic()
    ok = True
    while ok and sel.get_map():
        now = time.monotonic()
        if now >= deadline or give_up():
            ok = False
            break
        for key, ev in sel.select(max(0.0, min(0.05, deadline - now))):
            i, s = key.data, clients[key.data].sock
            assert s is not None
            try:
                if ev & selectors.EVENT_WRITE and out[i]:
                    del out[i][:s.send(out[i])]
                    moved = time.monotonic()
                chunk = s.recv(65536) if ev & selectors.EVENT_READ else b""
                if ev & selectors.EVENT_READ and not chunk:
                    r.lost, ok = "the server closed a client's connection before its echo", False
                    break
            except BlockingIOError:
                chunk = b""
            except OSError as e:
                r.lost, ok = f"a client's connection failed: {e.strerror or e}", False
                break
            if chunk:
                moved = time.monotonic()
                got[i] += chunk
                total[i] += len(chunk)
            while flight[i] and len(got[i]) >= len(flight[i][0][0]):
                line, since = flight[i].popleft()
                if got[i][:len(line)] != line:
                    r.lost, ok = "a line's echo differed from the line", False
                    break
                del got[i][:len(line)]
                r.latencies.append(moved - since)
                r.lines += 1
                r.nbytes += len(line)
            if not ok:
                break
            if got[i] and not flight[i]:
                r.lost, ok = "the server sent more than the lines", False
                break
            top_up(i)
            if not flight[i]:
                sel.unregister(s)
            else:
                sel.modify(s, selectors.EVENT_READ | (selectors.EVENT_WRITE if out[i] else 0), i)
        if not ok:
            break
        waiting = {k.data for k in sel.get_map().values() if not out[k.data]}
        if not waiting or len(waiting) < len(sel.get_map()):
            continue  # the server may be waiting for what is still to be sent
        if stall is not None and time.monotonic() - moved > stall:
            r.lost, ok = f"nothing came back for {stall:.0f} s: the server stopped answering", False
            break
        if judge is not None and time.monotonic() - moved > QUIET:  # its samples cost the clients' time
            why = judge.owed({i: (clients[i].local_port, total[i]) for i in waiting})
            if why:
                r.lost, ok = next(iter(why.values())), False
    sel.close()
    return ok


def measure(s: Server, *, batches: int | None, limit: float, stall: float | None = None,
            judge: Judge | None = None, hopeless: float | None = None) -> Round:
    """A round on server `s`: CLIENTS clients in a closed loop, `batches` batches of BATCH lines
    each (None: as many as take TARGET seconds, the calibrating round), stopped at `limit`, or
    after a second once its pace says the whole would take longer than `hopeless` seconds."""
    t0 = time.monotonic()
    total = (batches or 0) * BATCH * CLIENTS

    def give_up() -> bool:
        el = time.monotonic() - t0
        return hopeless is not None and el >= 1.0 and r.lines > 0 and el * total / r.lines > hopeless

    deadline = t0 + limit
    cs = connect_many(s.port, CLIENTS, judge=judge)
    r = Round(None)
    broken = [c.error for c in cs if c.sock is None]
    if broken:
        close_all(cs)
        r.lost = f"{len(broken)} of {CLIENTS} clients could not connect: {broken[0]}"
        return r
    lines = [random_lines(BATCH, 60, 120) for _ in cs]
    cpu0 = _tree_cpu(s.pid)
    done = True
    while done and (r.batches < batches if batches is not None
                    else (r.batches == 0 or time.monotonic() - t0 < TARGET) and r.batches < MAX_BATCHES):
        done = _batch(cs, lines, deadline, stall, judge, r, give_up)
        r.batches += done
    r.cpu = _tree_cpu(s.pid) - cpu0
    close_all(cs)
    r.elapsed = el = time.monotonic() - t0
    r.total = total or r.batches * BATCH * CLIENTS
    if done:
        r.seconds = r.estimate = el
    elif r.lines and not r.lost:  # a round that lost lines has no pace worth the name
        r.estimate = el * r.total / r.lines
    return r


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of `values`, nearest rank."""
    v = sorted(values)
    return v[min(len(v) - 1, max(0, math.ceil(q * len(v)) - 1))] if v else math.nan


def figures(who: str, rounds: list[Round]) -> dict[str, float]:
    """The summary's metrics for one server: its best finished round's throughput, latencies and
    CPU time, and the spread of its finished rounds' times (percent of the best)."""
    done = [r for r in rounds if r.seconds is not None]
    if not done:
        return {f"{who}_rounds": len(rounds), f"{who}_rounds_finished": 0}
    best = min(done, key=lambda r: r.seconds or math.inf)
    secs = best.seconds or math.inf
    times = [r.seconds or 0.0 for r in done]
    return {
        f"{who}_lines_per_s": round(best.lines / secs, 1),
        f"{who}_mb_per_s": round(best.nbytes / secs / 1e6, 3),
        f"{who}_latency_p50_ms": round(percentile(best.latencies, 0.5) * 1e3, 3),
        f"{who}_latency_p99_ms": round(percentile(best.latencies, 0.99) * 1e3, 3),
        f"{who}_cpu_s": round(best.cpu, 3),
        f"{who}_seconds": round(secs, 3),
        f"{who}_spread_pct": round((max(times) - min(times)) / min(times) * 100, 1),
        f"{who}_rounds": len(rounds),
        f"{who}_rounds_finished": len(done),
    }
