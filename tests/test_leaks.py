"""The autouse leak check (tests/leaks.py) sees what a test leaves and names it; a clean test passes."""
from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import leaks
import pytest

TESTS = Path(__file__).resolve().parent

LEAKY = '''
import os, subprocess, sys, time

def test_clean():
    p = subprocess.Popen(["sleep", "30"])
    p.kill()
    p.wait()

def test_leaves_a_sleeping_child():
    subprocess.Popen(["sleep", "31"])

def test_leaves_a_daemon():
    # double fork: the daemon's parent exits at once, so it is nobody's child but the subreaper's
    subprocess.run(["sh", "-c", "sleep 32 </dev/null >/dev/null 2>&1 &"], check=True)

def test_leaves_a_uid_lock_held():
    from grader.isolation.local import reserve_uids
    test_leaves_a_uid_lock_held.fds = reserve_uids(1)[1]  # never closed
'''


def test_a_leaked_child_a_daemon_and_a_held_lock_are_named_and_a_clean_test_passes(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), str(TESTS.parent), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")  # the plugin under test, and no other
    pytester.makepyfile(test_leaky=LEAKY)
    r = pytester.runpytest_subprocess("-p", "leaks", "-p", "no:randomly", "-v")
    out = r.stdout.str()
    r.assert_outcomes(passed=4, errors=3)
    assert "test_clean PASSED" in out
    for test, what in (("test_leaves_a_sleeping_child", "(sleep, uid"), ("test_leaves_a_daemon", "sleep 32"),
                       ("test_leaves_a_uid_lock_held", "held lock uid-")):
        error = out[out.index(f"ERROR at teardown of {test}"):]
        assert "the test left behind (processes killed, Docker objects removed):" in error, test
        assert what in error.split("ERROR at teardown")[1], test
    assert "sleep 31" in out


def test_the_helpers_see_a_sleeping_child_and_nothing_once_it_is_reaped() -> None:
    import subprocess

    before = leaks.look()
    assert leaks.left_behind(before) == []
    p = subprocess.Popen(["sleep", "33"])
    try:
        left = leaks.left_behind(before)
        assert len(left) == 1
        assert left[0].startswith(f"process {p.pid} (sleep, uid {os.getuid()}, parent {os.getpid()})")
        assert left[0].endswith(": sleep 33")
    finally:
        p.kill()
        p.wait()
    assert leaks.left_behind(before) == []


def test_a_labelled_volume_of_this_run_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Docker part, against the engine when one answers (a volume only: no image, no container)."""
    if not leaks.docker_answers():
        pytest.skip("no Docker engine answers its local socket")
    from grader.isolation.docker import LABEL_SESSION, SESSION_PREFIX_ENV

    before = leaks.look()
    session = os.environ[SESSION_PREFIX_ENV] + uuid.uuid4().hex
    name = f"labgrade-{session}"
    body = json.dumps({"Name": name, "Labels": {LABEL_SESSION: session, "labgrade.role": "test"}})
    c = leaks._UnixHTTP(leaks._socket_path() or "")
    try:
        c.request("POST", "/volumes/create", body=body, headers={"Content-Type": "application/json"})
        assert c.getresponse().status == 201
    finally:
        c.close()
    try:
        assert leaks.left_behind(before) == [f"volume {name} ({LABEL_SESSION}={session})"]
        monkeypatch.setenv(SESSION_PREFIX_ENV, "another-run-")  # another run's objects are not ours
        assert leaks.left_behind(before) == []
        monkeypatch.undo()
    finally:
        leaks.remove_leaks(before)
    assert leaks.left_behind(before) == []
