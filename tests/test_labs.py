"""The C side of the labs: skeletons and reference servers build, run and serve.

For each of `assignments/<lab>` (the skeleton a student receives) and
`reference/<lab>` (the instructor's model answer):
- a copy of the directory, alone in an empty folder, builds warning-free with
  `-Wall -Wextra -Werror`, and `make clean` removes what `make` built;
- the helper library (netlib.h, netlib.c) is byte-identical in all six;
- a skeleton listens and closes every connection without echoing;
- a reference echoes exactly (random payloads), byte at a time, the last
  partial line at EOF, and serves 8 clients at once with its own model
  visible in /proc (children, threads, or one thread);
- the thread reference built with ThreadSanitizer gives no report under load.

Servers run in their own session and are killed as a group in teardown.
"""
from __future__ import annotations

import contextlib
import os
import random
import re
import resource
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from grader import catalogue

ROOT = Path(__file__).resolve().parents[1]
LABS = catalogue.LABS
KINDS = ("assignments", "reference")
DIRS = [f"{kind}/{lab}" for kind in KINDS for lab in LABS]
REFERENCES = [f"reference/{lab}" for lab in LABS]
SKELETONS = [f"assignments/{lab}" for lab in LABS]
LIBRARY = ("netlib.h", "netlib.c")
LAB_FILES = ("Makefile", "server.c", *LIBRARY)
STRICT = "CFLAGS=-Wall -Wextra -Werror -O2"
TSAN = ("CFLAGS=-g -O1 -fsanitize=thread", "LDFLAGS=-fsanitize=thread")
TIMEOUT = 5.0  # generous: a correct server answers in milliseconds


# ----------------------------------------------------------------- build helpers

def make(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["make", *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def copy_lab(rel: str, dest: Path) -> Path:
    """Copy the lab's files alone into dest/<lab> (nothing else from the tree)."""
    src, out = ROOT / rel, dest / rel.replace("/", "-")
    out.mkdir(parents=True)
    for name in LAB_FILES:
        shutil.copy2(src / name, out / name)
    return out


def build(rel: str, dest: Path, *flags: str) -> Path:
    out = copy_lab(rel, dest)
    res = make(out, *flags)
    assert res.returncode == 0, f"make {' '.join(flags)} failed in a copy of {rel}:\n{res.stdout}{res.stderr}"
    assert (out / "server").is_file(), f"make succeeded but no ./server in a copy of {rel}"
    return out


# ----------------------------------------------------------------- process helpers

def free_port() -> int:
    """A port free on every address, outside the ephemeral range our clients use."""
    for _ in range(200):
        port = random.randrange(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind(("", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free TCP port found")


def listening(port: int) -> bool:
    """Is some socket in state LISTEN (0A) on this port, per /proc/net/tcp[6]?"""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError), open(table) as f:
            next(f)
            for line in f:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    return True
    return False


def children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:  # after "(comm)": state, ppid
            out.append(int(entry))
    return out


def threads(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^Threads:\s*(\d+)", status, re.M).group(1))


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def wait_for(cond: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    out: Path   # the server's stdout, a file so printing never blocks it
    err: Path

    @property
    def lab(self) -> str:  # the copy's directory is named like reference-fork
        return self.out.parent.name.rsplit("-", 1)[1]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stdout(self) -> str:
        return self.out.read_text(errors="replace")

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group, then SIGKILL; reap the server."""
    for sig, grace in ((signal.SIGTERM, 2.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=grace)
            break
        except subprocess.TimeoutExpired:
            continue
    with contextlib.suppress(ProcessLookupError):  # children of the fork server too
        os.killpg(proc.pid, signal.SIGKILL)


@contextlib.contextmanager
def running(labdir: Path, stdin: int | None = subprocess.DEVNULL, env: dict[str, str] | None = None,
            start_timeout: float = 3.0) -> Iterator[Server]:
    port = free_port()
    out, err = labdir / "stdout.txt", labdir / "stderr.txt"
    with open(out, "wb") as fo, open(err, "wb") as fe:
        proc = subprocess.Popen(["./server", str(port)], cwd=labdir, stdin=stdin, stdout=fo, stderr=fe,
                                start_new_session=True, env=env)
    server = Server(proc, port, out, err)
    try:
        deadline = time.monotonic() + start_timeout
        while not listening(port):
            if not server.alive():
                raise AssertionError(f"server exited ({proc.returncode}) before listening:\n{server.stderr()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"server not listening on {port} after {start_timeout} s:\n{server.stderr()}")
            time.sleep(0.01)
        yield server
    finally:
        stop(proc)


# ----------------------------------------------------------------- client helpers

def connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    s.settimeout(TIMEOUT)
    return s


def recv_exact(s: socket.socket, n: int) -> bytes:
    buf = bytearray()
    deadline = time.monotonic() + TIMEOUT
    while len(buf) < n:
        if time.monotonic() > deadline:
            break
        chunk = s.recv(n - len(buf))
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


def recv_to_eof(s: socket.socket) -> bytes:
    buf = bytearray()
    while chunk := s.recv(65536):
        buf += chunk
    return bytes(buf)


def line(nbytes: int) -> bytes:
    """A random line of 2 * nbytes hex digits and its newline."""
    return os.urandom(nbytes).hex().encode() + b"\n"


# ----------------------------------------------------------------- build tests

@pytest.mark.parametrize("rel", DIRS)
def test_builds_warning_free_and_cleans(rel: str, tmp_path: Path) -> None:
    out = copy_lab(rel, tmp_path)
    res = make(out, STRICT)
    log = res.stdout + res.stderr
    assert res.returncode == 0, f"make failed:\n{log}"
    assert "warning" not in log.lower(), f"compiler warnings:\n{log}"
    assert (out / "server").is_file()
    assert os.access(out / "server", os.X_OK)
    res = make(out, "clean")
    assert res.returncode == 0, res.stdout + res.stderr
    left = sorted(p.name for p in out.iterdir())
    assert left == sorted(LAB_FILES), f"`make clean` left {left}"


@pytest.mark.parametrize("lab", LABS)
def test_makefile_keeps_the_standard_variables(lab: str) -> None:
    for kind in KINDS:
        text = (ROOT / kind / lab / "Makefile").read_text()
        for var in ("$(CC)", "$(CFLAGS)", "$(LDFLAGS)", "$(LDLIBS)"):
            assert var in text, f"{kind}/{lab}/Makefile does not use {var}"
        dry = make(ROOT / kind / lab, "-n", "check")
        assert dry.stdout.strip() == f"labgrade grade {lab} . --visible-only", dry.stdout + dry.stderr


def test_helper_library_is_identical_everywhere() -> None:
    for name in LIBRARY:
        first = (ROOT / DIRS[0] / name).read_bytes()
        differ = [rel for rel in DIRS if (ROOT / rel / name).read_bytes() != first]
        assert not differ, f"{name} differs from {DIRS[0]}/{name} in {differ}"


# ----------------------------------------------------------------- skeletons

@pytest.mark.parametrize("rel", SKELETONS)
def test_skeleton_closes_every_connection_unserved(rel: str, tmp_path: Path) -> None:
    labdir = build(rel, tmp_path, STRICT)
    with running(labdir) as server:
        for _ in range(3):
            with connect(server.port) as s:
                s.settimeout(2.0)
                try:
                    got = s.recv(4096)
                except TimeoutError:
                    pytest.fail("the skeleton kept the connection open for 2 s; it must close it at once")
                assert got == b"", f"the skeleton sent {got!r}; it must close without serving"
        assert server.alive()


# ----------------------------------------------------------------- references

@pytest.fixture
def reference(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    with running(build(request.param, tmp_path, STRICT)) as server:
        yield server


def refs(fn: Callable[..., None]) -> Callable[..., None]:
    """Parametrize a test over the three reference servers."""
    return pytest.mark.parametrize("reference", REFERENCES, indirect=True)(fn)


@refs
def test_reference_echoes_many_lines_in_one_send(reference: Server) -> None:
    lines = [line(random.randrange(1, 200)) for _ in range(50)]
    lines += [line(4096), bytes(range(256)).replace(b"\n", b"") + b"\n", b"\n"]  # 8 KiB + 1, every byte
    data = b"".join(lines)
    with connect(reference.port) as s:
        s.sendall(data)
        assert recv_exact(s, len(data)) == data


@refs
def test_reference_echoes_a_line_sent_byte_by_byte(reference: Server) -> None:
    data = line(12)
    with connect(reference.port) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(len(data)):
            s.sendall(data[i:i + 1])
            time.sleep(0.002)
        assert recv_exact(s, len(data)) == data


@refs
def test_reference_echoes_last_partial_line_then_closes(reference: Server) -> None:
    data = line(20) + line(30)[:-1]  # the last line has no newline
    with connect(reference.port) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        assert recv_to_eof(s) == data  # recv_to_eof returns only once the server closed


# The labs whose model this test knows (one process per client, one thread per client, one
# thread for all); the others' models are the grader's to check (tests/test_verdicts.py).
MODELS = [f"reference/{lab}" for lab in ("fork", "thread", "select") if lab in LABS]


@pytest.mark.parametrize("reference", MODELS, indirect=True)
def test_reference_serves_clients_at_once_in_its_model(reference: Server) -> None:
    lab, pid, fds0 = reference.lab, reference.pid, open_fds(reference.pid)
    clients = [connect(reference.port) for _ in range(8)]
    try:
        for s in reversed(clients):  # the last connected first: none waits for another
            data = line(16)
            s.sendall(data)
            assert recv_exact(s, len(data)) == data
        if lab == "fork":
            assert len(children(pid)) >= 8, f"fork: {len(children(pid))} children for 8 clients"
        elif lab == "thread":
            assert threads(pid) >= 9, f"thread: {threads(pid)} threads for 8 clients"
        elif lab == "select":
            assert threads(pid) == 1 and not children(pid), "select: must be one thread, no child"
    finally:
        for s in clients:
            s.close()
    # after they leave: no child, no extra thread, no extra descriptor
    wait_for(lambda: not children(pid), "the children to end and be reaped")
    wait_for(lambda: threads(pid) == 1, "the threads to end")
    wait_for(lambda: open_fds(pid) == fds0, f"the descriptor count to return to {fds0}")
    assert reference.alive()


@refs
def test_reference_survives_a_client_reset(reference: Server) -> None:
    victim = connect(reference.port)
    victim.settimeout(0.2)
    with contextlib.suppress(TimeoutError):  # plenty of echo owed, unread, when the reset comes
        for _ in range(200):
            victim.sendall(line(1000))
    victim.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    victim.close()  # linger on, time 0: the close sends RST
    with connect(reference.port) as s:
        data = line(64)
        s.sendall(data)
        assert recv_exact(s, len(data)) == data
    assert reference.alive()


def test_select_reference_prints_stdin_lines_and_survives_its_end(tmp_path: Path) -> None:
    labdir = build("reference/select", tmp_path, STRICT)
    with running(labdir, stdin=subprocess.PIPE) as server:
        assert server.proc.stdin is not None
        with connect(server.port) as s:
            typed = os.urandom(8).hex()
            server.proc.stdin.write(f"{typed}\n".encode())
            server.proc.stdin.flush()
            wait_for(lambda: f"{typed}\n" in server.stdout(), "the typed line on stdout")
            server.proc.stdin.close()  # end of input: the server keeps serving
            data = line(32)
            s.sendall(data)
            assert recv_exact(s, len(data)) == data
        assert server.alive()


def rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^VmRSS:\s*(\d+)", status, re.M).group(1))


@contextlib.contextmanager
def nofile_at_least(n: int) -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(n, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_select_reference_serves_500_clients_past_stalled_and_flooding_ones(tmp_path: Path) -> None:
    labdir = build("reference/select", tmp_path, STRICT)
    with nofile_at_least(1200), running(labdir) as server:
        rss0 = rss_kib(server.pid)
        idle = connect(server.port)                  # sends nothing
        staller = connect(server.port)               # sends part of a line, then stalls
        staller.sendall(os.urandom(100).hex().encode())
        flooder = connect(server.port)               # sends a lot and never reads
        flooder.setblocking(False)
        flooded, deadline = 0, time.monotonic() + 0.5
        while time.monotonic() < deadline:
            try:
                flooded += flooder.send(line(4000))
            except BlockingIOError:
                time.sleep(0.005)
        clients = [connect(server.port) for _ in range(500)]
        try:
            payloads = [line(8) for _ in clients]
            for s, data in zip(clients, payloads, strict=True):
                s.sendall(data)
            for i, (s, data) in enumerate(zip(clients, payloads, strict=True)):
                assert recv_exact(s, len(data)) == data, f"client {i} of 500 not served"
            grown = rss_kib(server.pid) - rss0
            assert grown < 16 * 1024, f"RSS grew {grown} KiB while a client flooded {flooded} bytes unread"
            assert threads(server.pid) == 1 and not children(server.pid)
        finally:
            for s in [*clients, idle, staller, flooder]:
                s.close()
        assert server.alive()


def counter_lines(out: str) -> list[tuple[int, int, int]]:
    """(N, T, F) of each `server received N (T total) bytes on fd F` line."""
    pattern = r"^server received (\d+) \((\d+) total\) bytes on fd (\d+)$"
    return [tuple(map(int, m)) for m in re.findall(pattern, out, re.M)]


def assert_counter_consistent(out: str, sent: int) -> None:
    rows = sorted(counter_lines(out), key=lambda r: r[1])
    assert rows, "no `server received ...` line"
    prev = 0
    for n, total, _ in rows:
        assert total == prev + n, f"total {total} is not {prev} + {n}"
        prev = total
    assert prev == sent, f"last total {prev}, but {sent} bytes were sent"


def load(port: int, clients: int, lines_each: int) -> int:
    """clients concurrent connections, each echoing lines_each random lines; returns bytes sent."""
    sent, errors = [0] * clients, []

    def one(i: int) -> None:
        try:
            with connect(port) as s:
                for _ in range(lines_each):
                    data = line(random.randrange(1, 100))
                    s.sendall(data)
                    got = recv_exact(s, len(data))
                    assert got == data, f"client {i}: sent {data!r}, got {got!r}"
                    sent[i] += len(data)
                s.shutdown(socket.SHUT_WR)
                assert recv_to_eof(s) == b""
        except BaseException as e:  # report in the main thread
            errors.append(e)

    workers = [threading.Thread(target=one, args=(i,)) for i in range(clients)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    if errors:
        raise errors[0]
    return sum(sent)


def test_thread_reference_counter_is_the_running_sum(tmp_path: Path) -> None:
    labdir = build("reference/thread", tmp_path, STRICT)
    with running(labdir) as server:
        sent = load(server.port, 8, 50)
        wait_for(lambda: sum(r[0] for r in counter_lines(server.stdout())) == sent, "every line to be reported")
        assert_counter_consistent(server.stdout(), sent)


def test_thread_reference_tsan_gives_no_report_under_load(tmp_path: Path) -> None:
    """ThreadSanitizer: the thread reference, built with -fsanitize=thread and loaded, reports no race."""
    labdir = build("reference/thread", tmp_path, *TSAN)
    env = {**os.environ, "TSAN_OPTIONS": "halt_on_error=0 second_deadlock_stack=1"}
    try:
        with running(labdir, env=env, start_timeout=10.0) as server:
            sent = load(server.port, 16, 200)
            wait_for(lambda: sum(r[0] for r in counter_lines(server.stdout())) == sent, "every line to be reported")
            assert server.alive(), f"the server died under TSan:\n{server.stderr()}"
    except AssertionError:
        err = (labdir / "stderr.txt").read_text(errors="replace")
        if "FATAL: ThreadSanitizer" in err or "unexpected memory mapping" in err:
            pytest.fail(f"the ThreadSanitizer runtime cannot start on this machine (environment, not the code):\n{err}")
        raise
    err = (labdir / "stderr.txt").read_text(errors="replace")
    assert "ThreadSanitizer" not in err, f"ThreadSanitizer reported:\n{err}"
    assert_counter_consistent((labdir / "stdout.txt").read_text(), sent)
