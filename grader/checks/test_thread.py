"""Lab `thread`: a thread-based concurrent echo server with shared state."""
from __future__ import annotations

import re
import subprocess
import time
from collections import Counter
from pathlib import Path

from .. import probes
from ..clients import Client, close_all, connect_many, echo_many, random_line, random_lines, rng
from ..errors import GradingEnvironmentError
from ..harness import BuildResult, Server
from ..output import MiB
from ..session import GradingSession
from ..verdict import fail
from . import common, graded, preload, tsan
from .blocked import Watch
from .common import PATIENCE, Start, served, state, wait_until
from .slow_reader import Flood

LAB = "thread"
# A prethreaded pool of 32 workers is legal: never more clients at once than that. The other
# checks stay a little below it; thread-per-client uses exactly POOL to require the 32 workers.
POOL = 32
WAVE = 28
SLOW_LINE = 8000  # counter's slow reader's lines: no other line it sends is as long
LOG = re.compile(r"server received (\d+) \((\d+) total\) bytes on fd (\d+)\s*$")
UNSAFE = {"inet_ntoa": "inet_ntop", "gethostbyname": "getaddrinfo", "gethostbyaddr": "getnameinfo",
          "strtok": "strtok_r", "ctime": "ctime_r", "asctime": "asctime_r", "localtime": "localtime_r",
          "gmtime": "gmtime_r", "rand": "rand_r or a per-thread generator"}


LATESTART = Path(__file__).with_name("latestart.c")
WIDEN = Path(__file__).with_name("widen.c")
LATE = ("each new thread of the server starting late, as a busy machine may start it: once the next thread "
        "was being created, or once its creator had blocked")


def late_start(grading: GradingSession) -> tuple[dict[str, str], str, str]:
    """A server whose threads start late (latestart.c, preloaded): a thread that reads main's connfd
    reads the next client's every time clients arrive together, not when the scheduler happens to
    run main first. With the words and the hint for the feedback of the checks it is used by
    (`concurrency`, `fd-leak`, `robust-disconnect`, `thread-per-client`, `unsafe-calls`, `memory`)."""
    return ({"LD_PRELOAD": str(preload.library(grading, LATESTART, "-pthread", "-ldl"))}, f" ({LATE})",
            "; threads that serve another client's descriptor leave their own client waiting: give each thread "
            "its own copy of connfd (by value, or a malloc'd int the thread frees), never &connfd")


(test_build, test_echo, test_eof, test_concurrency, test_fd_leak, test_robust_disconnect,
 test_vs_reference, test_memory) = common.shared_checks(LAB, race_env=late_start)


def binary_line() -> bytes:
    """A line of 3-200 bytes ('\\n' included) of random byte values, a NUL and one >= 0x80 among
    them at random places."""
    r = rng()
    body = [r.choice([b for b in range(256) if b != 10]) for _ in range(r.randint(0, 197))]
    for byte in (0, r.randint(0x80, 0xFF)):
        body.insert(r.randrange(len(body) + 1), byte)
    return bytes(body) + b"\n"


@graded(LAB, "thread-per-client")
def test_thread_per_client(grading: GradingSession, server: Start) -> None:
    # its 32 clients come at once: threads started late, so that &connfd's race shows every time here too
    s = server(env=late_start(grading)[0])
    rule = "every connection is served by its own thread (or a pool of at least 32 workers); no fork"
    hint = "after accept, pthread_create a thread for the connection and go back to accept"
    clients = connect_many(s.port, POOL)
    try:
        lines = random_lines(POOL)
        got = echo_many(clients, lines, PATIENCE, judge=Watch(s))
        silent = [i for i, (g, ln) in enumerate(zip(got, lines, strict=True)) if g != ln]
        threads, kids = probes.thread_count(s.pid), probes.children(s.pid)
        did = (f"connected {POOL} clients at once ({LATE}), each sent a line, and waited up to {PATIENCE:.0f} s "
               f"for the {POOL} echoes at once; then read /proc/PID/task and the children")
        if silent:
            why = clients[silent[0]].error
            fail(did, f"{len(silent)} of the {POOL} clients got no echo while the others stayed connected"
                 + (f" (client {silent[0] + 1}: {why})" if why else "")
                 + f"; the server had {threads} threads; {state(s)}", rule=rule,
                 hint=hint + ("; a prethreaded pool needs at least 32 workers" if 1 < threads <= POOL else ""))
        if threads < POOL + 1 or kids:
            fail(did, f"the server had {threads} threads and {len(kids)} child processes", rule=rule, hint=hint)
    finally:
        close_all(clients)


@graded(LAB, "thread-leak")
def test_thread_leak(server: Start) -> None:
    s = server()

    def wave() -> None:
        clients = served(s, WAVE, what="a wave of clients, to see whether their threads are released")
        close_all(clients)

    def settled() -> tuple[int, int]:
        last = (-1, -1)
        for _ in range(50):  # until the counts stop moving
            now = (probes.thread_count(s.pid), probes.kib(s.pid, "VmSize"))
            if now == last:
                break
            last = now
            time.sleep(0.06)
        return last

    wave()  # warm up: the C library keeps a cache of stacks and arenas; measure after it is filled
    base_threads, base_vm = settled()
    for _ in range(3):
        wave()
    wait_until(lambda: probes.thread_count(s.pid) <= base_threads, PATIENCE)
    threads, vm = settled()
    grown = (vm - base_vm) * 1024
    if threads > base_threads or grown > 96 * MiB:
        fail(f"served a warm-up wave of {WAVE} clients, then 3 more waves of {WAVE} (all connected at once, then all "
             "left); compared threads and VmSize after the warm-up and after the waves",
             f"threads went from {base_threads} to {threads}; virtual memory from {base_vm // 1024} MiB to "
             f"{vm // 1024} MiB ({grown / MiB:+.0f} MiB)",
             rule="threads are detached (or joined) and release their descriptor when their client is done; "
                  "after clients leave, the thread count and the virtual memory return to where they were",
             hint=("threads that never return stay: each thread must return when its client is done "
                   "(watch `ls /proc/PID/task`)" if threads > base_threads else
                   "call pthread_detach(pthread_self()) at the start of the thread routine: a joinable thread "
                   "that nobody joins keeps its 8 MiB stack after it returns (watch `grep VmSize "
                   "/proc/PID/status`); also free what each connection allocates"))


@graded(LAB, "connfd-race")
def test_connfd_race(server: Start) -> None:
    s = server()
    bursts = 5
    for burst in range(bursts):
        clients = connect_many(s.port, WAVE)
        try:
            lines = random_lines(WAVE, 20, 60)
            got = echo_many(clients, lines, PATIENCE, judge=Watch(s))
        finally:
            close_all(clients)
        wrong = [i for i in range(WAVE) if got[i] and got[i] != lines[i]]
        silent = [i for i in range(WAVE) if not got[i]]
        if wrong or silent:
            others = {ln: j for j, ln in enumerate(lines)}
            detail = []
            for i in wrong[:3]:
                j = others.get(got[i])
                detail.append(f"client {i + 1} received " + (f"client {j + 1}'s line" if j is not None
                                                             else f"{got[i][:40]!r}"))
            why = next((clients[i].error for i in silent if clients[i].error), "")
            fail(f"burst {burst + 1} of {bursts}: {WAVE} clients connected at the same moment, each sent its own line; "
                 f"the grader waited up to {PATIENCE:.0f} s for the {WAVE} echoes at once",
                 f"{len(wrong)} got wrong data and {len(silent)} got no answer"
                 + (": " + "; ".join(detail) if detail else "") + (f" ({why})" if why else "") + f"; {state(s)}",
                 rule="the connected descriptor reaches its thread without a race (not through a variable "
                      "that the next accept overwrites)",
                 hint=("pass each thread its own copy of connfd (by value through the void * argument, or a "
                       "malloc'd int the thread frees), never &connfd" if wrong else
                       "clients that get no answer at all: a thread that receives another thread's descriptor "
                       "leaves its own client unserved (pass connfd by value or in a malloc'd int, never "
                       "&connfd); also look for fewer than 32 workers or a lock held while serving"))


def widened(grading: GradingSession) -> tuple[BuildResult | None, str]:
    """The submission rebuilt with widen.c (its read-modify-writes of globals and its unlocks
    pause, so a missing lock loses an update every time, not by chance), and the words for it;
    None when the Makefile would not rebuild with the grader's flags (the plain build is used)."""
    obj = preload.objfile(grading, WIDEN)
    b = grading.rebuild("submission-widen", {"CFLAGS": "-g -O1 -fsanitize=thread",
                                             "LDFLAGS": f"-fno-sanitize=thread {obj}"})
    if b.ok and b.binary.is_file() and b"labgrade widen" in b.binary.read_bytes():
        return b, ("rebuilt your server so that a thread pauses inside each read-modify-write of a global "
                   "variable and after each unlock, as a busy machine may pause it; then ")
    return None, "ran your server as its Makefile builds it (it would not rebuild with the grader's flags); then "


@graded(LAB, "counter")
def test_counter(grading: GradingSession, server: Start) -> None:
    b, how = widened(grading)
    s = server(b, what="the counter's rebuild" if b else "the server")
    # A slow reader first: it sends lines without reading their echo until the server stops taking
    # them (its thread is then blocked writing the echo), and stays connected while the 16 clients
    # are served: a thread that writes while holding the count's lock makes every other thread wait.
    # Its lines are longer than any other, so its log lines are told apart; the line its thread may
    # have counted and not logged (blocked in that echo's write) is allowed as one gap in the totals.
    slow = Client(s.port)
    flooded = Flood(b"".join(random_line(SLOW_LINE) for _ in range(8))).until_owed(s, slow, limit=64 * MiB)
    clients = connect_many(s.port, 16)
    try:
        payloads = [random_lines(30, 1, 200) for _ in clients]
        for p in payloads:  # one line each of bytes a C string cannot hold: N is the count read, not strlen
            p[rng().randrange(len(p))] = binary_line()
        data = [b"".join(p) for p in payloads]
        got = echo_many(clients, data, 10.0, stall=PATIENCE, judge=Watch(s))
        if got != data:
            bad = [i for i, (g, d) in enumerate(zip(got, data, strict=True)) if g != d]
            why = clients[bad[0]].error or "waited 10 s"
            fail(f"{how}a first client sent {flooded / MiB:.1f} MiB of {SLOW_LINE}-byte lines without reading its "
                 "echo, until the server took no more, and stayed connected; then 16 clients at once each sent 30 "
                 "lines (one of them holding NUL bytes and bytes >= 0x80); the grader waits up to 10 s for all the "
                 f"echo, as long as some comes back at least every {PATIENCE:.0f} s",
                 f"{len(bad)} of them did not get their echo back (client {bad[0] + 1}: {why}); {state(s)}",
                 rule="every byte a client sends comes back; holding the lock is kept short",
                 hint="make `echo` and `concurrency` pass first. Then: a thread must not hold the count's lock "
                      "while it writes the echo: the first client never reads, so its thread's write blocks, "
                      "and every thread waiting for the lock waits with it; lock only around the addition")
    except BaseException:
        slow.close()
        raise
    finally:
        close_all(clients)
    lengths = [len(line) for p in payloads for line in p]
    total = sum(lengths)
    did = (f"{how}a first client sent {flooded / MiB:.1f} MiB of {SLOW_LINE}-byte lines without reading; then 16 "
           "clients at once each sent 30 lines of 1-200 bytes, one of them holding NUL bytes and bytes >= 0x80 "
           f"({len(lengths)} lines, {total} bytes in all); "
           "then read every `server received N (T total) bytes on fd F` line the server printed")
    rule = ("after it echoes a line the server prints exactly `server received N (T total) bytes on fd F`, "
            "N the line's length, T the shared count just after adding N, kept under a lock")

    def records() -> list[tuple[int, int, int]]:
        return [(int(m[1]), int(m[2]), int(m[3])) for m in map(LOG.search, s.output.lines()) if m]

    def theirs(recs: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
        return [r for r in recs if r[0] != SLOW_LINE]  # the 16 clients' log lines

    try:  # the slow reader stays until the log is read: at its end its thread may log a partial line
        wait_until(lambda: len(theirs(records())) >= len(lengths), 3.0)
        everything = records()
    finally:
        slow.close()
    recs = theirs(everything)
    if not recs:
        near = [ln for ln in s.output.lines() if "received" in ln][:3]
        fail(did, "no line matching `server received N (T total) bytes on fd F` was printed"
             + (f"; lines that come close: {near}" if near else ""), rule=rule,
             hint="print exactly that text after echoing each line, one line per echo, and fflush(stdout)")
    problems = []
    wrong_count = len(recs) != len(lengths)
    wrong_sizes = Counter(r[0] for r in recs) != Counter(lengths)
    if wrong_count:
        problems.append(f"{len(recs)} log lines for {len(lengths)} lines sent")
    if wrong_sizes:
        problems.append("the N values are not the lengths of the lines sent (N counts the '\\n'; each client "
                        "sent one line holding NUL bytes and bytes >= 0x80)")
    ordered = sorted(everything, key=lambda r: r[1])
    prev, gap = 0, 0
    for n, t, fd in ordered:
        if t == prev + n + SLOW_LINE and not gap:
            gap = SLOW_LINE  # the slow reader's line counted before its echo, which is still blocked
        elif t != prev + n:
            dup = sum(1 for r in ordered if r[1] == t)
            problems.append(f"after total {prev}, the next total printed is {t} for N={n} on fd {fd} (expected "
                            f"{prev + n})" + (f"; total {t} was printed {dup} times" if dup > 1 else ""))
            break
        prev = t
    slow_bytes = SLOW_LINE * (len(everything) - len(recs)) + gap
    if ordered and ordered[-1][1] != total + slow_bytes:
        problems.append(f"the last total is {ordered[-1][1]}, but the clients sent {total} bytes"
                        + (f" and the first client {slow_bytes} bytes in lines it counted" if slow_bytes else ""))
    if problems:
        if wrong_count or wrong_sizes:
            hint = ("print one log line per line echoed, after echoing it, with N the number of bytes of that line "
                    "(as rio_readlineb returned it, '\\n' included, never strlen(buf): a line may hold NUL bytes), "
                    "not one per read or per connection")
        else:
            hint = ("protect the shared count with one global mutex: lock, add N, copy the total into a local, "
                    "unlock, then print the local (a lock per thread or per connection protects nothing)")
        fail(did, "; ".join(problems), rule=rule, hint=hint)


@graded(LAB, "tsan")
def test_tsan(grading: GradingSession, server: Start) -> None:
    def load(s: Server) -> None:
        close_all(served(s, 8, what="under ThreadSanitizer"))
        for _ in range(2):
            cs = connect_many(s.port, 12)
            # load, not judged: a server that stops answering is not waited for
            echo_many(cs, [b"".join(random_lines(20, 1, 120)) for _ in cs], 10.0, stall=PATIENCE, judge=Watch(s))
            close_all(cs)

    tsan.check_tsan(grading, server, load,
                    did="rebuilt your server with -fsanitize=thread and ran 8 clients, then 2 bursts of 12 "
                        "clients x 20 lines",
                    hint="every access to shared data (the byte counter, shared buffers) must hold the same lock")


@graded(LAB, "unsafe-calls")
def test_unsafe_calls(grading: GradingSession, server: Start) -> None:
    s = server(env=late_start(grading)[0])
    close_all(served(s, 2, what=f"a check of absence scores only for a server that serves; {LATE}"))
    binary = grading.built().binary
    try:
        r = subprocess.run(["nm", "-D", "--undefined-only", str(binary)], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise GradingEnvironmentError(f"cannot run nm: {e}") from e
    names = {ln.split()[-1].split("@")[0] for ln in r.stdout.decode(errors="replace").splitlines() if ln.strip()}
    if r.returncode != 0 or not names:
        fail("read the dynamic symbols your server imports (nm -D --undefined-only server)",
             "the binary has no dynamic symbol table (statically linked?), so its calls cannot be verified",
             rule="no thread-unsafe library calls", hint="link dynamically (the default): do not use -static")
    bad = sorted(n for n in names if n in UNSAFE)
    if bad:
        fail("read the dynamic symbols your server imports (nm -D --undefined-only server)",
             "it calls " + ", ".join(f"{n} (use {UNSAFE[n]})" for n in bad),
             rule="no thread-unsafe library calls: they return pointers to static buffers that threads share",
             hint="use the reentrant forms: " + ", ".join(f"{n} -> {UNSAFE[n]}" for n in bad))
