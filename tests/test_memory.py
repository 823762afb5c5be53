"""The `memory` check's reading of sanitizer reports: the kind and the student's own frames for
the feedback, a runtime that cannot run as the machine's fault, and what counts as switching a
sanitizer off. (Its verdicts on whole servers, both ways and in every lab, are test_verdicts'.)"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from grader.checks import memory
from grader.errors import GradingEnvironmentError

UAF = """=================================================================
==4242==ERROR: AddressSanitizer: heap-use-after-free on address 0x62d000000410 at pc 0x5 bp 0x7 sp 0x7
WRITE of size 8 at 0x62d000000410 thread T0
    #0 0x55d1 in flush_client /tmp/g/submission-asan/server.c:85
    #1 0x55d2 in read_client /tmp/g/submission-asan/server.c:119
    #2 0x7f00 in __libc_start_call_main ../sysdeps/nptl/libc_start_call_main.h:58

0x62d000000410 is located 16 bytes inside of 82000-byte region
freed by thread T0 here:
    #0 0x7f11 in __interceptor_free ../../../../src/libsanitizer/asan/asan_malloc_linux.cpp:52
    #1 0x55d3 in drop_client /tmp/g/submission-asan/server.c:36

previously allocated by thread T0 here:
    #0 0x7f12 in __interceptor_malloc ../../../../src/libsanitizer/asan/asan_malloc_linux.cpp:69
    #1 0x55d4 in add_clients /tmp/g/submission-asan/server.c:55

SUMMARY: AddressSanitizer: heap-use-after-free /tmp/g/submission-asan/server.c:85 in flush_client
"""
LEAK = """
=================================================================
==77==ERROR: LeakSanitizer: detected memory leaks

Direct leak of 128 byte(s) in 32 object(s) allocated from:
    #0 0x7f in __interceptor_malloc ../../../../src/libsanitizer/asan/asan_malloc_linux.cpp:69
    #1 0x55 in main /w/server.c:74

SUMMARY: AddressSanitizer: 128 byte(s) leaked in 32 allocation(s).
"""
UBSAN = "server.c:40:12: runtime error: signed integer overflow: 2147483647 + 1 cannot be represented in type 'int'\n"


@pytest.fixture
def build(tmp_path: Path) -> Path:
    (tmp_path / "server.c").write_text("int main(void) { return 0; }\n")
    (tmp_path / "netlib.c").write_text("")
    return tmp_path


def test_the_feedback_names_the_kind_and_the_students_own_frames(build: Path) -> None:
    (build / f"{memory.LOGS}.4242").write_text(UAF)
    (build / f"{memory.LOGS}.77").write_text(LEAK)
    (build / f"{memory.LOGS}.78").write_text(UBSAN)
    found = memory._reports(build)
    kinds = [k for k, _ in found]
    assert kinds == ["AddressSanitizer: heap-use-after-free, a WRITE of 8 byte(s)",
                     f"LeakSanitizer: Direct leak of 128 byte(s) in 32 object(s) (128 byte(s) leaked in 32 "
                     f"allocation(s) in all); the workload made {memory.CONNECTIONS} connections",
                     "UndefinedBehaviorSanitizer: signed integer overflow: 2147483647 + 1 cannot be represented "
                     "in type 'int' (server.c:40)"]
    uaf = found[0][1].splitlines()
    assert uaf[0] == "  at: flush_client (server.c:85) <- read_client (server.c:119)"  # no libc, no runtime
    assert uaf[1] == "  freed by thread t0 here: drop_client (server.c:36)"
    assert uaf[2] == "  previously allocated by thread t0 here: add_clients (server.c:55)"
    assert found[1][1] == "  at: main (server.c:74)"
    assert "--- memory-report.4242" in memory._full(build) and "asan_malloc_linux" in memory._full(build)


def test_the_details_leave_out_the_leakcheck_threads_phantom(build: Path) -> None:
    warning = "==81==Running thread 80 was not suspended. False leaks are possible.\n\n"
    (build / f"{memory.LOGS}.77").write_text(warning + LEAK)
    (build / f"{memory.LOGS}.81").write_text(warning)  # a child whose check found nothing
    full = memory._full(build)
    assert "--- memory-report.77" in full and "detected memory leaks" in full
    assert "memory-report.81" not in full and "not suspended" not in full
    assert len(memory._reports(build)) == 1


# A "server" whose child works (burns CPU, as LeakSanitizer's exit-time check does) or waits (a child that
# lingers): settle waits for the first past `least`, not for the second.
WORKS = "import time; t = time.process_time(); exec('while time.process_time() - t < 1.5: pass')"
WAITS = "import time; time.sleep(30)"


def tree(child: str) -> subprocess.Popen[bytes]:
    parent = f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {child!r}]); time.sleep(30)"
    p = subprocess.Popen([sys.executable, "-c", parent])
    deadline = time.monotonic() + 5
    while len(memory.probes.descendants(p.pid)) < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    return p


def test_settle_waits_for_a_child_still_working_past_its_least_wait() -> None:
    p = tree(WORKS)
    try:
        t = time.monotonic()
        assert memory.settle(p.pid, 1, least=0.3, idle=0.5)
        assert time.monotonic() - t >= 1.0  # the child's 1.5 s of CPU, not the 0.3 s
    finally:
        p.kill()
        p.wait()


def test_settle_leaves_a_waiting_child_after_its_least_wait() -> None:
    p = tree(WAITS)
    try:
        t = time.monotonic()
        assert not memory.settle(p.pid, 1, least=0.3, idle=0.5)
        assert time.monotonic() - t < 2.0
    finally:
        for c in memory.probes.descendants(p.pid):
            os.kill(c.pid, signal.SIGKILL)
        p.kill()
        p.wait()


@pytest.mark.parametrize("text", [
    "==1==ERROR: AddressSanitizer failed to allocate 0x10000 (65536) bytes of LargeMmapAllocator (error code: 12)",
    "==1==ReserveShadowMemoryRange failed while trying to map 0xdfff0001000 bytes. Perhaps you're using ulimit -v",
    "==1==LeakSanitizer has encountered a fatal error.",
])
def test_a_runtime_that_cannot_run_is_the_machines_fault(build: Path, text: str) -> None:
    (build / f"{memory.LOGS}.1").write_text(text + "\n")
    server = SimpleNamespace(output=SimpleNamespace(text=lambda n: ""))
    with pytest.raises(GradingEnvironmentError, match="cannot run on this machine"):
        memory._runtime_failed(build, server)  # type: ignore[arg-type]


@pytest.mark.parametrize("why", [
    "==24195==Can't read directory entries from /proc/24014/task.\n",
    # the tracer could not attach to a thread on its way out: LeakSanitizer then adds a hint about ptrace
    "==24195==Could not attach to thread 24016 (errno 1).\n==24195==Failed suspending threads.\n",
])
def test_a_leak_check_cut_short_by_the_servers_own_death_is_not_the_machines_fault(build: Path, why: str) -> None:
    """Two of the server's threads calling exit at once (thread/connfd-race's double close): the first
    one's exit-time leak check loses the process under it. The check then fails for the server's death."""
    (build / f"{memory.LOGS}.24014").write_text(why + "==24014==LeakSanitizer has encountered a fatal error.\n"
                                                "==24014==HINT: For debugging, try setting environment variable "
                                                "LSAN_OPTIONS=verbosity=1:log_threads=1\n"
                                                "==24014==HINT: LeakSanitizer does not work under ptrace (strace, "
                                                "gdb, etc)\n")
    server = SimpleNamespace(output=SimpleNamespace(text=lambda n: "close: Bad file descriptor\n"))
    memory._runtime_failed(build, server, died=True)  # type: ignore[arg-type]
    with pytest.raises(GradingEnvironmentError, match="fatal error"):
        memory._runtime_failed(build, server)  # type: ignore[arg-type]
    (build / f"{memory.LOGS}.1").write_text("==1==ReserveShadowMemoryRange failed while trying to map 0xdfff0001000\n")
    with pytest.raises(GradingEnvironmentError, match="ReserveShadowMemoryRange"):
        memory._runtime_failed(build, server, died=True)  # type: ignore[arg-type]


def test_a_real_report_is_not_taken_for_the_machines_fault(build: Path) -> None:
    (build / f"{memory.LOGS}.4242").write_text(UAF + LEAK)
    server = SimpleNamespace(output=SimpleNamespace(text=lambda n: "server started\n"))
    memory._runtime_failed(build, server)  # type: ignore[arg-type]


@pytest.mark.parametrize(("line", "caught"), [
    (b'__attribute__((no_sanitize("address"))) static void echo(int fd)', True),
    (b"__attribute__((no_sanitize_address)) static void echo(int fd)", True),
    (b'const char *__asan_default_options(void) { return "halt_on_error=0"; }', True),
    (b"    __lsan_ignore_object(p);", True),
    (b"    setenv(\"ASAN_OPTIONS\", \"detect_leaks=0\", 1);", True),
    (b"server: CFLAGS += -fno-sanitize=all", True),
    (b"/* AddressSanitizer finds overflows: size the buffer for 8 KiB lines */", False),
    (b"    char buf[MAXLINE];  /* sanitized input */", False),
])
def test_what_switches_a_sanitizer_off(line: bytes, caught: bool) -> None:
    assert bool(memory.TAMPER.search(line)) is caught


@pytest.mark.slow
def test_a_leak_in_every_child_is_reported_by_every_child_on_a_busy_machine(tmp_path: Path) -> None:
    """ipc/line-copy-leak graded twice at a time with a core kept busy: each grading reads a report from
    each of the 31 children that logged a line (the one that vanished mid-line logged none), not the
    few that finished their exit-time check before a fixed wait ran out."""
    from support import ROOT, copy_lab
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        runs = []
        for k in range(2):
            lab = copy_lab(ROOT / "tests/servers/ipc/line-copy-leak", tmp_path / f"s{k}" / "ipc", "ipc")
            runs.append(subprocess.Popen([sys.executable, "-m", "grader", "grade", "ipc", str(lab), "--quiet",
                                          "--only", "memory", "--json", str(tmp_path / f"s{k}.json")], cwd=ROOT))
        for r in runs:
            r.wait(timeout=300)
    finally:
        busy.kill()
        busy.wait()
    for k in range(2):
        check = json.loads((tmp_path / f"s{k}.json").read_text())["checks"][0]
        assert check["status"] == "failed", check["feedback"]
        assert "(30 more report(s)" in check["feedback"], check["feedback"]
        assert "not suspended" not in check["details"]
