"""The local isolation: who student code runs as, its limits, and that nothing survives."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from support import ROOT

from grader import probes
from grader.harness import Server, build
from grader.isolation.local import UID_BASE, UID_COUNT, Sandbox

FLOOD = r'''
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
int main(int argc, char **argv) {
    (void)argc;
    int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET; a.sin_port = htons(atoi(argv[1]));
    if (bind(l, (struct sockaddr *)&a, sizeof a) || listen(l, 8)) return 1;
    char line[4096]; memset(line, 'x', sizeof line - 2); line[sizeof line - 2] = '\n'; line[sizeof line - 1] = 0;
    for (int i = 0; i < 40000; i++) fputs(line, stdout);   /* 160 MB on the terminal */
    fflush(stdout);
    if (fork() == 0) { setsid(); if (fork() == 0) { for (;;) pause(); } _exit(0); }  /* an escaped daemon */
    for (;;) pause();
}
'''


def run_in(sb: Sandbox, cmd: str) -> str:
    w = sb.workdir(f"w{time.monotonic_ns()}")
    return subprocess.run(["sh", "-c", cmd], cwd=w, env=sb.env(w), preexec_fn=sb.preexec(),
                          capture_output=True, text=True, timeout=10).stdout


def test_student_code_runs_unprivileged_with_limits() -> None:
    with Sandbox() as sb:
        out = run_in(sb, "id -u; ulimit -n; ulimit -c").split()
        if os.geteuid() == 0:
            assert sb.uid is not None and UID_BASE <= int(out[0]) < UID_BASE + UID_COUNT
        else:
            assert int(out[0]) == os.geteuid()
        assert out[1:] == ["1024", "0"]
        # the grader's own directory is not listable by student code
        assert "denied" in subprocess.run(["sh", "-c", f"ls {sb.root} 2>&1"], preexec_fn=sb.preexec(),
                                          capture_output=True, text=True).stdout or os.geteuid() != 0


def test_a_flooding_server_with_an_escaped_daemon_is_drained_and_removed(tmp_path: Path) -> None:
    (tmp_path / "server.c").write_text(FLOOD)
    (tmp_path / "Makefile").write_text("server: server.c\n\t$(CC) $(CFLAGS) -o server server.c\n")
    sb = Sandbox()
    try:
        b = build(tmp_path, sb, "flood")
        assert b.ok, b.output
        s = Server(b, sb, sb.allocate_port()).start()
        assert s.wait_ready()
        # the daemon appears only once the flood is printed: printing never blocked the server
        assert _wait(lambda: len(sb.processes()) >= 2, 20), s.output.total
        assert s.output.total >= 160_000_000 and s.output.truncated
        assert len(s.output.head()) <= 8 << 20
        s.stop()
        left = sb.kill_all()
        assert left == [] and sb.processes() == []
    finally:
        sb.close()


def _wait(cond, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return False


def test_ports_are_never_handed_out_twice() -> None:
    a, b = Sandbox(), Sandbox()
    try:
        ports = [a.allocate_port() for _ in range(20)] + [b.allocate_port() for _ in range(20)]
        assert len(set(ports)) == 40
        assert not any(probes.port_in_use(p) for p in ports)
        if os.geteuid() == 0:
            assert a.uid != b.uid
    finally:
        a.close()
        b.close()


NETNS_PROBE = r'''
import json, socket, sys
from grader.isolation.local import private_network
port = int(sys.argv[1])
private = private_network()
out = {"private": private}
try:
    socket.create_connection(("127.0.0.1", port), timeout=2).close()
    out["reached_parent"] = True
except OSError:
    out["reached_parent"] = False
with socket.create_server(("127.0.0.1", 0)) as srv:  # its own loopback works
    c = socket.create_connection(srv.getsockname(), timeout=2)
    a, _ = srv.accept()
    c.sendall(b"ping")
    out["own_loopback"] = a.recv(4) == b"ping"
    c.close(); a.close()
print(json.dumps(out))
'''


def test_a_grading_as_root_has_a_network_of_its_own() -> None:
    """As root where the kernel allows it, private_network() puts the grading (and every process it
    starts) in a network namespace with only its own loopback: a port of the machine is out of reach.
    Where it is not allowed (no root, no CAP_SYS_ADMIN) it says so and changes nothing."""
    import json
    import socket

    from grader.isolation.local import private_network_supported

    with socket.create_server(("127.0.0.1", 0)) as machine:
        port = machine.getsockname()[1]
        r = subprocess.run([sys.executable, "-c", NETNS_PROBE, str(port)], capture_output=True, text=True,
                           timeout=30, cwd=ROOT)
        assert r.returncode == 0, r.stderr
        got = json.loads(r.stdout)
    assert got["own_loopback"]
    assert got["private"] == private_network_supported()
    assert got["reached_parent"] is (not got["private"])
    print(f"private network: {got['private']}")


def test_a_zombies_descriptors_read_as_its_owner_are_none() -> None:
    """(As root, as every test of the sandbox.) A server that ended meanwhile is a zombie until
    reaped: its fd directory is no one's to read (not even its own uid's, without CAP_SYS_PTRACE),
    and it holds no descriptor, which is what the helper's failure then means; not an environment
    error (ipc/eintr-fatal's fd-leak in CI)."""
    from grader import probes

    p = subprocess.Popen(["true"], user=UID_BASE + UID_COUNT - 2, group=UID_BASE + UID_COUNT - 2, extra_groups=[])
    try:
        deadline = time.monotonic() + 5
        while not ((q := probes.proc(p.pid)) and q.zombie) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert probes._fd_targets_as_owner(p.pid, PermissionError(13, "denied")) == {}
    finally:
        p.wait()


def test_fd_links_without_cap_sys_ptrace_are_read_as_the_owner_and_cannot_be_dodged(monkeypatch) -> None:
    """Without CAP_SYS_PTRACE a root grader reads another uid's /proc/PID/fd links from a helper of
    that uid. The submission can signal that helper: killed or stopped by someone else, it is tried
    again, and a submission that keeps at it is told apart (ProbeInterfered), which the checks make
    its failure (a verdict, never an uncharged error); a helper the grader had to end (silent) is
    the environment's failure."""
    import pytest

    from grader import probes
    from grader.checks import common
    from grader.errors import GradingEnvironmentError, ProbeError, ProbeInterfered
    from grader.verdict import CheckFailed

    if os.geteuid() != 0:
        with pytest.raises(GradingEnvironmentError, match="CAP_SYS_PTRACE"):
            probes._fd_targets_as_owner(os.getpid(), PermissionError(13, "denied"))
        return
    p = subprocess.Popen(["sleep", "30"], user=UID_BASE + UID_COUNT - 2, group=UID_BASE + UID_COUNT - 2,
                         extra_groups=[], stdin=subprocess.DEVNULL)
    try:
        time.sleep(0.1)
        real = probes._fd_targets_as_owner(p.pid, PermissionError(13, "denied"))  # the real helper
        assert real[0] == "/dev/null" and len(real) == len(os.listdir(f"/proc/{p.pid}/fd"))

        killed = (9, b"", False, False)  # SIGKILL that the grader did not send
        calls = []
        monkeypatch.setattr(probes, "_links_as", lambda *a: calls.append(a) or killed)
        with pytest.raises(ProbeInterfered, match="killed or stopped 5 times"):
            probes._fd_targets_as_owner(p.pid, PermissionError(13, "denied"))
        assert len(calls) == 5
        monkeypatch.setattr(probes, "fd_targets", lambda pid: probes._fd_targets_as_owner(pid, PermissionError(13, "")))
        for read in (common.fd_targets, common.socket_inodes):  # what the checks see: the student's failure
            with pytest.raises(CheckFailed, match="killed or stopped 5 times by a signal the grader did not send") as e:
                read(p.pid)
            assert e.value.rule == "the server signals only the processes it started"
        stopped_then_ok = iter([(9, b"", True, False), (0, b"0=/dev/null\x001=pipe:[7]", False, False)])
        monkeypatch.setattr(probes, "_links_as", lambda *a: next(stopped_then_ok))
        assert probes._fd_targets_as_owner(p.pid, PermissionError(13, "denied")) == {0: "/dev/null", 1: "pipe:[7]"}
        monkeypatch.setattr(probes, "_links_as", lambda *a: (9, b"", False, True))  # silent: ended by us
        with pytest.raises(ProbeError) as env:
            probes._fd_targets_as_owner(p.pid, PermissionError(13, "denied"))
        assert isinstance(env.value, GradingEnvironmentError) and not isinstance(env.value, ProbeInterfered)
    finally:
        p.kill()
        p.wait()


def test_a_sandbox_whose_start_fails_gives_everything_back(monkeypatch, tmp_path: Path) -> None:
    """A Sandbox that raises half-way through __init__ leaves no work directory and no locked uid;
    one that is closed twice does nothing the second time (the uid may be another grading's by then)."""
    import pytest

    from grader.isolation.local import WORK_ROOT_ENV, locks, sandbox

    taken: list[tuple[int, int]] = []
    real_reserve = sandbox.reserve_uid

    def reserve() -> tuple[int, int]:
        taken.append(real_reserve())
        return taken[-1]

    def broken() -> None:
        raise OSError("prctl failed")

    monkeypatch.setenv(WORK_ROOT_ENV, str(tmp_path))
    monkeypatch.setattr(sandbox, "reserve_uid", reserve)
    monkeypatch.setattr(sandbox, "set_subreaper", broken)
    with pytest.raises(OSError, match="prctl failed"):
        Sandbox()
    assert list(tmp_path.iterdir()) == []
    if os.geteuid() == 0:
        fd = locks.try_lock(f"uid-{taken[0][0]}.lock")  # free again
        assert fd is not None
        os.close(fd)
    monkeypatch.undo()
    with Sandbox() as sb:
        assert sb.root.is_dir()
    sb.close()
    assert not sb.root.exists()
