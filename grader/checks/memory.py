"""The `memory` check of every lab: the submission rebuilt with AddressSanitizer and
UndefinedBehaviorSanitizer (uninitialised stack variables filled with a pattern), started, put
through the workloads of the echo checks (lines in one segment, byte by byte, every byte value,
8 KiB lines, end of input after a partial line, resets mid-line and while owed echo, clients at
once, short connections one after another), then asked for leaks: LeakSanitizer runs in every
process that exits (a client's child in the process labs, everything after SIGTERM in lab ipc)
and, in the server's first process, which never exits by itself, when the grader asks it to
(leakcheck.c, preloaded). Any report fails the check; the feedback names its kind and the first
frames in the student's own files, the summary's `details` hold the reports in full.

A runtime that cannot start is the machine's problem (an environment error). A submission that
switches the sanitizers off (no_sanitize attributes, its own __asan_*/__lsan_* options or calls,
the *SAN_OPTIONS variables, -fno-sanitize in its Makefile) fails: the check cannot vouch for it."""
from __future__ import annotations

import contextlib
import os
import re
import stat
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from .. import probes
from ..clients import Client, close_all, connect_many, echo_many, random_line, random_lines
from ..errors import GradingEnvironmentError
from ..harness import ASAN_FLAGS, BuildResult, Server
from ..session import GradingSession
from ..verdict import fail
from . import preload
from .blocked import Watch
from .common import PATIENCE, Start, state, wait_until
from .tsan import toolchain_works

MAKE = f"make {' '.join(f'{k}={v!r}' for k, v in ASAN_FLAGS.items())}"
REPRODUCE = ("make clean && make CFLAGS='-g -O1 -fsanitize=address,undefined -ftrivial-auto-var-init=pattern' "
             "LDFLAGS='-fsanitize=address,undefined'")
RULE = ("built with -fsanitize=address,undefined and put through the echo workloads, no process of the server "
        "reads or writes memory it does not own, uses freed memory, hits undefined behaviour, or loses memory "
        "(a block no pointer reaches: a leak per client)")
LEAKCHECK = Path(__file__).with_name("leakcheck.c")
SHORT = 20   # short connections one after another, before the leak check: a leak per client shows 20 times
CONNECTIONS = 4 + 8 + SHORT  # all the workload makes: a leak per client shows as a multiple of it
LOGS = "memory-report"

DID = (f"rebuilt your lab with `{MAKE}` and started it{{how}}; one client sent 5 lines in one segment, a line byte by "
       "byte, a line of every byte value and an 8 KiB line; one sent 2 lines and a partial one, then ended its "
       "input; two reset (mid-line, and while owed echo); 8 clients echoed at once; {short} clients connected one "
       "after another{then}; then LeakSanitizer looked for memory no pointer reaches")

# what disables or steers a sanitizer from inside the submission
TAMPER = re.compile(rb"no_sanitize|fno-sanitize|__(?:asan|lsan|ubsan|sanitizer)_\w+|[ALU]SAN_OPTIONS")
TAMPER_SYMBOLS = re.compile(rb"\b__(?:asan|lsan|ubsan)_default_(?:options|suppressions)\b")
# a sanitizer runtime that could not run here: the machine's fault
RUNTIME_FAILED = re.compile(r"AddressSanitizer:? (?:CHECK failed|failed to allocate)|"
                            r"ReserveShadowMemoryRange failed|Shadow memory range interleaves|"
                            r"LeakSanitizer has encountered a fatal error|LeakSanitizer does not work under ptrace|"
                            r"Sanitizer: failed to|unable to map|mmap.*failed")
FRAME = re.compile(r"#\d+ 0x[0-9a-f]+ in (\S+) (\S+?):(\d+)")


def check_memory(grading: GradingSession, server: Start, *, args: Sequence[str] = (), terminate: bool = False,
                 preload_also: str = "", how: str = "") -> None:
    """`preload_also`: a library preloaded beside the leak check's (lab thread: latestart.so, so
    that a server that dies of a race between a new thread and its creator dies every time), and
    `how` the words for it."""
    b = grading.asan_build()
    did = DID.format(short=SHORT, then=", then the server was sent SIGTERM" if terminate else "", how=how)
    if not b.ok:
        toolchain_works(grading, "-fsanitize=address,undefined")
        fail(f"rebuilt your lab with `{MAKE}`", f"{b.problem}:\n{b.output.strip()}",
             rule="the Makefile uses $(CC), $(CFLAGS), $(LDFLAGS), $(LDLIBS)",
             hint="build with `$(CC) $(CFLAGS) $(LDFLAGS) -o server ... $(LDLIBS)`")
    _not_tampered(grading.submission, b)
    logs = b.directory / LOGS
    fifo = b.directory / "memory-leakcheck"
    with contextlib.suppress(FileNotFoundError):
        fifo.unlink()
    os.mkfifo(fifo, 0o666)
    os.chmod(fifo, 0o666)  # the server's uid opens it to read; umask aside
    opts = f"log_path={logs}"
    env = {"ASAN_OPTIONS": f"{opts}:halt_on_error=1:detect_leaks=1:leak_check_at_exit=1:exitcode=86:"
                           "verify_asan_link_order=0:quarantine_size_mb=32:malloc_context_size=12:"
                           "detect_stack_use_after_return=0:allocator_may_return_null=1:abort_on_error=0:"
                           "max_malloc_fill_size=16777216:malloc_fill_byte=190",
           "LSAN_OPTIONS": f"{opts}:max_leaks=8:report_objects=0",
           "UBSAN_OPTIONS": f"{opts}:print_stacktrace=1:halt_on_error=0:report_error_type=1",
           "LD_PRELOAD": ":".join(filter(None, (str(preload.library(grading, LEAKCHECK, "-pthread")), preload_also))),
           "LABGRADE_LEAKCHECK_FIFO": str(fifo)}
    s = server(b, sanitized=True, env=env, args=args, what="the AddressSanitizer build")
    _runtime_failed(b.directory, s)
    first_echo = _workload(s)
    lived = s.alive()  # through the workload (lab ipc's SIGTERM below ends it on purpose)
    asked = _ask_for_leaks(s, fifo) if first_echo and lived else True  # a broken build fails below
    if terminate:
        s.terminate()
        settle(s.pid, 0, first_too=True)
    # (no wait for reports: a child's is written before it exits, and the children are gone or were
    # waited for while they worked; the first process's before it answers the leak check)
    _runtime_failed(b.directory, s, died=first_echo and not lived)
    reports = _reports(b.directory)
    if reports:
        kind, where = reports[0]
        more = f" ({len(reports) - 1} more report(s) in the summary's details)" if len(reports) > 1 else ""
        fail(did, f"{kind}{more}\n{where}", rule=RULE,
             hint=f"{_hint(kind)}; reproduce with `{REPRODUCE}`, run ./server and repeat what the grader did: "
                  f"the report goes to standard error", details=_full(b.directory))
    if first_echo and not lived:
        fail(did, f"the server ended before the workload was over, and no sanitizer reported why; {state(s)}",
             rule=RULE, hint="the echo checks and `robust-disconnect` say more: this check needs a server that "
                             "keeps serving while its clients come and go")
    if not first_echo:
        fail(did, f"the first client's lines did not come back from the AddressSanitizer build, and no sanitizer "
             f"reported anything; {state(s)}", rule=RULE,
             hint="the echo checks say more; if they pass, memory read before it is set is likely: this build fills "
                  "uninitialised stack variables with 0xFE bytes and new malloc blocks with 0xBE, where yours "
                  "happened to hold zeros (set every field of what you allocate, or use calloc)")
    if not asked:
        fail(did, "the server's first process never took the grader's request for a leak check (its library, "
             f"preloaded, listens on a FIFO in its directory); {state(s)}", rule=RULE,
             hint="the server must keep running while its clients come and go; do not close descriptors you did "
                  "not open, nor remove files you did not make")


def _workload(s: Server) -> bool:
    """The echo checks' scenarios, each waited for with the echo checks' patience. Not judged here
    (the echo checks do), but for the first client's first lines: whether the build serves at all.
    One that does not is not put through the rest, nor waited for again and again."""
    with Client(s.port) as c:
        block = b"".join(random_lines(5))
        if c.echo(block, PATIENCE) != block:
            return False
        line = random_line(40)
        c.send_bytewise(line, gap=0.001)
        c.recv_exactly(len(line), PATIENCE)
        for data in (bytes(b for b in range(256) if b != 10) + b"\n", random_line(8192)):
            c.echo(data, PATIENCE)
    with Client(s.port) as c:
        c.send(b"".join(random_lines(2)) + random_line(30)[:-1])
        c.shutdown_write()
        c.read_until_eof(PATIENCE)
    with Client(s.port) as c:  # vanishes mid-line
        c.send(random_line(64)[:40])
        time.sleep(0.05)
        c.reset()
    with Client(s.port) as c:  # resets while owed echo
        c.send(b"".join(random_lines(200, 100, 200)))
        time.sleep(0.05)
        c.reset()
    watch = Watch(s)
    clients = connect_many(s.port, 8, judge=watch)
    try:
        echo_many(clients, [b"".join(random_lines(2)) for _ in clients], PATIENCE, judge=watch)
    finally:
        close_all(clients)
    for _ in range(SHORT):
        with Client(s.port) as c:
            line = random_line(32)
            if c.echo(line, PATIENCE) != line:
                break  # it stopped serving: the reports say why, if any
    return True


def settle(pid: int, most: int, *, first_too: bool = False, least: float = 3.0, idle: float = 1.0,
           cap: float = 30.0) -> bool:
    """Wait until at most `most` processes of pid's tree are alive (zombies aside): `least` seconds,
    and past that as long as one of them still works (running, or its CPU time moved within `idle`
    seconds; pid itself only with `first_too`), at most `cap` seconds in all. Whether they ended.

    A process of the ASan build ends with LeakSanitizer's check, which writes its report last: a
    leak-per-client server's 30 children end at once and share the CPU, all still checking seconds
    after their clients left on a busy machine. A report read before they finish misses theirs (a
    report file holding only the check's first line), so the check waits for the work, not for a
    fixed time; children that wait for something else (a lingering child) are left after `least`."""
    start = last = time.monotonic()
    before: dict[int, float] = {}
    while True:
        procs = [p for p in [probes.proc(pid), *probes.descendants(pid)] if p is not None and not p.zombie]
        if len(procs) <= most:
            return True
        now = time.monotonic()
        cpu = {p.pid: p.cpu_seconds for p in procs if first_too or p.pid != pid}
        if any(p.state in "RD" for p in procs if p.pid in cpu) or cpu != before:
            last, before = now, cpu
        if now - start >= cap or (now - start >= least and now - last >= idle):
            return False
        time.sleep(0.05)


def _ask_for_leaks(s: Server, fifo: Path) -> bool:
    """Once the clients' children have ended (the process labs), ask the first process for a leak
    check (one byte down the FIFO) and wait for its "leaks N" line; False when it never answered."""
    settle(s.pid, 2)  # the first process, and lab ipc's logger
    done = Path(f"{fifo}.done")
    deadline = time.monotonic() + 5.0
    fd = -1
    while fd < 0 and time.monotonic() < deadline and s.alive():
        try:  # no reader yet: ENXIO, try again; never blocks
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            time.sleep(0.05)
    if fd < 0:
        return False
    try:
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            return False
        os.write(fd, b"x")
    except OSError:
        return False
    finally:
        os.close(fd)
    return wait_until(lambda: _answered(done), 5.0, step=0.05)


def _answered(done: Path) -> bool:
    with contextlib.suppress(OSError):
        return done.read_bytes().startswith(b"leaks ")
    return False


def _not_tampered(source: Path, b: BuildResult) -> None:
    did = f"read your lab's files and rebuilt it with `{MAKE}`"
    rule = "the memory check grades the server as the sanitizers see it: a submission may not switch them off"
    for f in sorted(source.rglob("*")):
        if f.is_symlink() or not f.is_file() or f.suffix not in {".c", ".h", ".s", ".S", ".inc", ""}:
            continue
        with contextlib.suppress(OSError):
            for n, line in enumerate(f.read_bytes().splitlines()[:20000], 1):
                m = TAMPER.search(line)
                if m:
                    fail(did, f"{f.relative_to(source)}:{n} says `{m.group().decode(errors='replace')}`", rule=rule,
                         hint="remove it: the sanitizers' reports are what this check grades")
    try:
        out = subprocess.run(["readelf", "-s", "--wide", str(b.binary)], capture_output=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired) as e:
        raise GradingEnvironmentError(f"cannot run readelf: {e}") from e
    if b"__asan_init" not in out and b"libasan" not in out:
        fail(f"rebuilt your lab with `{MAKE}`",
             "the resulting server is not instrumented by AddressSanitizer: your Makefile ignored CFLAGS or LDFLAGS",
             rule="the Makefile uses $(CC), $(CFLAGS), $(LDFLAGS), $(LDLIBS) so the grader can rebuild it",
             hint="build with `$(CC) $(CFLAGS) $(LDFLAGS) -o server ... $(LDLIBS)`")
    for row in out.splitlines():
        m = TAMPER_SYMBOLS.search(row)
        if m and b" UND " not in row:
            fail(did, f"the server defines `{m.group().decode()}`, which sets the sanitizer's options", rule=rule,
                 hint="remove it: the sanitizers' reports are what this check grades")


def _texts(directory: Path) -> list[tuple[str, str]]:
    out = []
    for p in sorted((directory).glob(f"{LOGS}*")):
        with contextlib.suppress(OSError):
            out.append((p.name, p.read_text(errors="replace")[:200_000]))
    return out


# LeakSanitizer's exit-time check in a process that another of its threads ends meanwhile (two threads
# calling exit at once: the tracer finds /proc/PID/task gone, or cannot attach to a thread on its way
# out, and then adds its hint about ptrace): the server's own death, not the machine's
TORN_DOWN = ("LeakSanitizer has encountered a fatal error", "LeakSanitizer does not work under ptrace")


def _runtime_failed(directory: Path, s: Server, died: bool = False) -> None:
    """An environment error for a sanitizer runtime that could not run; with `died` (the server ended by
    itself during the workload), not for a leak check that its own end cut short (TORN_DOWN)."""
    for _, text in [("output", s.output.text(4000)), *_texts(directory)]:
        m = next((m for m in RUNTIME_FAILED.finditer(text) if not (died and m.group() in TORN_DOWN)), None)
        if m:
            line = next((ln for ln in text.splitlines() if m.group() in ln), m.group())
            raise GradingEnvironmentError("the AddressSanitizer runtime cannot run on this machine: "
                                          + line.strip()[:300])


def _reports(directory: Path) -> list[tuple[str, str]]:
    """(kind, where) per report, in the order of their files (one per process): where is the first
    frames in the student's own files, as `function (file:line)`."""
    own = {p.name for p in directory.iterdir() if p.suffix in {".c", ".h"}}
    found = []
    for _, text in _texts(directory):
        for block in re.split(r"\n(?==+\n==\d+==ERROR|\S+:\d+:\d+: runtime error)", text):
            kind = _kind(block)
            if kind:
                found.append((kind, _where(block, own)))
    return found


def _kind(block: str) -> str | None:
    m = re.search(r"ERROR: AddressSanitizer: ([\w-]+)(?: on address \S+)?.*?\n(?:.*\n)?(READ|WRITE) of size (\d+)",
                  block)
    if m:
        return f"AddressSanitizer: {m.group(1)}, a {m.group(2)} of {m.group(3)} byte(s)"
    m = re.search(r"ERROR: AddressSanitizer: ([\w-]+)", block)
    if m:
        return f"AddressSanitizer: {m.group(1)}"
    if "ERROR: LeakSanitizer: detected memory leaks" in block:
        summary = re.search(r"SUMMARY: \w+: (\d+ byte\(s\) leaked in \d+ allocation\(s\))", block)
        first = re.search(r"(Direct|Indirect) leak of (\d+) byte\(s\) in (\d+) object\(s\)", block)
        said = first.group(0) if first else "memory leaked"
        return (f"LeakSanitizer: {said}" + (f" ({summary.group(1)} in all)" if summary else "")
                + f"; the workload made {CONNECTIONS} connections")
    m = re.search(r"(\S+):(\d+):\d+: runtime error: (.*)", block)
    if m:
        return f"UndefinedBehaviorSanitizer: {m.group(3).strip()} ({Path(m.group(1)).name}:{m.group(2)})"
    return None


def _where(block: str, own: set[str]) -> str:
    lines: list[str] = []
    for section in re.split(r"\n(?=\S.*(?:by thread|allocated by|freed by|previously allocated)\b)", block):
        head = section.strip().splitlines()[0] if section.strip() else ""
        frames = [f"{fn} ({Path(f).name}:{ln})" for fn, f, ln in FRAME.findall(section) if Path(f).name in own][:4]
        if frames:
            label = "at" if not lines else head.split(":")[0].strip().lower()[:60]
            lines.append(f"  {label}: " + " <- ".join(frames))
    return "\n".join(lines[:3]) or "  (no frame in your files: the details of the summary have the whole report)"


def _hint(kind: str) -> str:
    if "leak" in kind.lower():
        return ("free what you allocate for a client when its client is done (a buffer, a malloc'd copy of connfd "
                "that the thread must free): memory lost per client grows with every connection")
    if "use-after-free" in kind:
        return "a block was used after free: stop using a client's memory once you have freed it (free it last)"
    if "overflow" in kind:
        return ("a buffer is read or written past its end: size line buffers for 8 KiB lines plus what you add "
                "(the '\\n', a NUL), and pass the real size to read and rio_readlineb")
    return "the line above names the file and line where it happened"


# LeakSanitizer's warning in a child of a process that ran leakcheck.c's thread: the child inherits the
# runtime's record of that thread, which it does not have (fork copies one thread). Nothing is lost by
# it (that thread holds none of the server's pointers), and a file holding only it says nothing.
PHANTOM = re.compile(r"^==\d+==Running thread \d+ was not suspended\. False leaks are possible\.\n+", re.M)


def _full(directory: Path) -> str:
    texts = [(name, PHANTOM.sub("", text)) for name, text in _texts(directory)]
    return "\n".join(f"--- {name}\n{text}" for name, text in texts if text.strip())[:100_000]
