"""`labgrade batch --swarm`, for real, on this machine's engine (grader.swarm).

- A one-node swarm (made here only when the engine is not in one, and left only when made here):
  a lab of each kind (five servers of test_verdicts' docker sample) graded on it gets the same
  status and score for every check as test_verdicts' `--isolation docker` gradings; a truncated or
  forged result is "not graded: malformed result", never a score; nothing of a batch is left
  after Ctrl-C, or after a SIGKILL of the coordinator and a rerun (which resumes).
- Three nodes (tests/swarmnodes.py: extra engines on this host): one worker holds another grader
  image and is named for it; the other dies in the middle of a batch; every submission is graded
  exactly once, within one grading plus a minute of the death, and every node, engine and file
  made is removed.

Marked `docker`: they need the engine and the grader image, and fail (never skip) without them.
"""
from __future__ import annotations

import contextlib
import csv
import json
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import swarmnodes
from support import ROOT, copy_lab
from test_docker import client, grader_image  # noqa: F401 (fixtures)
from test_verdicts import docker_sample
from verdictlib import SERVERS, Verdicts

from grader import catalogue
from grader.batch import Job
from grader.run import provenance
from grader.schema import validate_summary
from grader.swarm import LABEL_BATCH, Swarm, encode

pytestmark = [
    pytest.mark.docker,
    pytest.mark.filterwarnings("ignore:distutils Version classes:DeprecationWarning"),
]


@pytest.fixture(scope="module")
def swarm(client: Any, grader_image: str) -> Iterator[str]:  # noqa: F811
    """The engine as a one-node swarm whose node grades; as it was afterwards. Yields the manager's id."""
    made = client.info()["Swarm"].get("LocalNodeState") != "active"
    if made:
        client.swarm.init(advertise_addr="127.0.0.1", listen_addr="127.0.0.1:2377")
    manager = client.info()["Swarm"]["NodeID"]
    before = client.api.inspect_node(manager)["Spec"].get("Labels") or {}
    swarmnodes.label(client, manager, {**before, "labgrade": "grader"})
    try:
        yield manager
    finally:
        with contextlib.suppress(Exception):
            swarmnodes.label(client, manager, before)
        if made:
            client.swarm.leave(force=True)


@pytest.fixture(scope="module")
def extra_nodes(swarm: str, client: Any, grader_image: str) -> Iterator[list[swarmnodes.Node]]:  # noqa: F811
    """Nodes 2 (the grader image copied to it) and 3 (another image as labgrade-grader), started
    now and ready later: the copy takes about a minute, during the tests that do not need them
    (unlabelled, they grade nothing meanwhile). Removed by the test that uses them, or here."""
    nodes = [swarmnodes.start(client, 2, grader_image),
             swarmnodes.start(client, 3, grader_image, load="debian:bookworm-slim")]
    try:
        yield nodes
    finally:
        for n in nodes:
            with contextlib.suppress(Exception):
                swarmnodes.remove(client, n, grader_image)


def _labgrade(*args: str, timeout: float = 900) -> tuple[subprocess.CompletedProcess[str], float]:
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "grader", *args], capture_output=True, text=True, cwd=ROOT,
                       timeout=timeout, stdin=subprocess.DEVNULL)
    return r, time.monotonic() - t0


def _popen(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "grader", *args], cwd=ROOT, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _ours(c: Any) -> list[str]:
    """Every service, secret and container of any batch on the engine (tests run one at a time)."""
    flt = {"label": LABEL_BATCH}
    return ([f"service {s['Spec']['Name']}" for s in c.api.services(filters=flt)]
            + [f"secret {s['Spec']['Name']}" for s in c.api.secrets(filters=flt)]
            + [f"container {x.name}" for x in c.containers.list(all=True, ignore_removed=True, filters=flt)]
            + [f"grading container {x.name}" for x in c.containers.list(
                all=True, ignore_removed=True, filters={"label": "labgrade.session"})])


def _until(what: Any, timeout: float, step: float = 0.5) -> Any:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        got = what()
        if got:
            return got
        time.sleep(step)
    return what()


def _checks(out: Path) -> dict[str, list[tuple[str, str, int]]]:
    got = {}
    for f in sorted(out.glob("*/*.json")):
        if not f.name.endswith(".results.json"):
            s = validate_summary(json.loads(f.read_text()))
            assert s["gradable"], f"{f}: {s.get('error')}"
            got[f"{f.parent.name}/{f.stem}"] = [(c["id"], c["status"], c["score"]) for c in s["checks"]]
    return got


def _fake_class(root: Path, n: int) -> dict[str, str]:
    """n tiny submissions of lab fork (a fake grading builds nothing); their provenance hashes."""
    hashes = {}
    for i in range(n):
        d = root / f"s{i:02d}" / "fork"
        d.mkdir(parents=True)
        (d / "server.c").write_text(f"int student_{i} = {i};\n")
        hashes[f"s{i:02d}/fork"] = provenance("fork", d, 0)["submission_sha256"]
    return hashes


# ---------------------------------------------------------------------------------------------
# A lab of each kind, from test_verdicts' docker sample: three correct alternative designs and the
# bugs of a leak per client and of a blocking write (the demo class's alice/ipc, alice/pool and
# carol/select are copies of three of them). Not carol/thread's connfd-race: its race decides some
# checks outside its expectation by chance, and the two gradings compared are two runs of it. Their
# `--isolation docker` gradings are the verdict tests' own (verdictlib: graded once a session,
# whichever test asks first; for a one-bug server, its failures). The whole demo
# class (15) was compared once (issue 15's note: equal, 74 s in docker, 77 s on the swarm, four at a
# time); the swarm path does not depend on the lab.
GUARD = ("fork/alt-sa-restart", "ipc/alt-mqueue", "select/blocking-write", "thread/connfdp-leak", "pool/alt-condvar")


def test_a_lab_of_each_kind_on_the_swarm_is_graded_as_in_docker(swarm: str, client: Any,  # noqa: F811
                                                               verdicts: Verdicts, tmp_path: Path) -> None:
    root = tmp_path / "submissions"
    servers = {}
    for name in GUARD:
        lab, bug = name.split("/")
        servers[f"{lab}-{bug}/{lab}"] = server = SERVERS / lab / bug
        assert server in docker_sample()
        copy_lab(server, root / f"{lab}-{bug}" / lab, lab)
    in_docker = {sub: {c["id"]: (c["status"], c["score"]) for c in verdicts.get(server, "docker")["checks"]}
                 for sub, server in servers.items()}
    assert not [(sub, c) for sub, cs in in_docker.items() for c, v in cs.items() if v[0] == "error"]  # the machine's
    # four gradings at once, as the verdicts are graded (a grading keeps half a core busy): half a CPU
    # reserved for each of the node's two
    out = tmp_path / "swarm"
    r, took = _labgrade("batch", str(root), "--out", str(out), "--swarm", "--swarm-cpus", "0.5")
    assert r.returncode == 0, r.stdout + r.stderr
    print(f"{len(GUARD)} submissions on the swarm, four at a time: {took:.1f} s")
    said = re.sub(r"\s+", " ", r.stderr)
    assert "with 4 job(s), isolation docker, on the swarm" in said and "swarm: 1 grading node(s)" in said, r.stderr
    on_swarm = _checks(out)
    assert sorted(on_swarm) == sorted(servers)
    for sub, want in in_docker.items():  # every check docker graded; the swarm grades the whole lab
        got = {cid: (status, score) for cid, status, score in on_swarm[sub]}
        assert {cid: got.get(cid) for cid in want} == want, sub
        assert len(got) == len(catalogue.checks(sub.split("/")[1]))
    assert (out / "gradebook.csv").is_file()
    assert _until(lambda: not _ours(client), 30), _ours(client)


def test_a_truncated_or_forged_result_is_never_a_score(swarm: str, client: Any, tmp_path: Path) -> None:  # noqa: F811
    sub = tmp_path / "mallory" / "fork"
    copy_lab(ROOT / "reference" / "fork", sub, "fork")
    full = {"lab": "fork", "submission": "", "gradable": True, "score": 100, "max_score": 100, "seconds": 1.0,
            "checks": [{"id": c.id, "status": "passed", "score": c.points, "max_score": c.points,
                        "visibility": c.visibility, "feedback": "", "seconds": 0.0} for c in catalogue.checks("fork")]}
    said: list[str] = []
    sw = Swarm(out=tmp_path / "out", say=said.append, log_patience=1.0)
    try:
        for how in ("truncated", "forged"):
            def command(lab: str, token: str, how: str = how) -> list[str]:
                lines = encode({"summary": full}, token)
                if how == "truncated":
                    lines = lines[:-2]  # the last piece and the end never came
                else:  # a header announcing other bytes than those sent
                    lines[0] = lines[0][:-64] + "f" * 64
                return ["sh", "-c", "cat <<'EOF'\n" + "\n".join(lines) + "\nEOF\n"]

            sw.command = command  # type: ignore[method-assign]
            s = sw.grade(Job("mallory", "fork", sub), threading.Event())
            assert s is not None and not s.gradable and s.score == 0, s
            assert "not graded: malformed result" in (s.error or ""), s.error
    finally:
        sw.close()
    assert _until(lambda: not _ours(client), 30), _ours(client)


def test_nothing_of_a_batch_is_left_after_ctrl_c_or_a_killed_coordinator(
        swarm: str, client: Any, tmp_path: Path, extra_nodes: list[swarmnodes.Node]) -> None:  # noqa: F811
    # (extra_nodes: only started here, for the next test)
    # Ctrl-C while a real grading runs in its container on the node
    real = tmp_path / "real"
    copy_lab(ROOT / "reference" / "fork", real / "alice" / "fork", "fork")
    p = _popen("batch", str(real), "--out", str(tmp_path / "out1"), "--swarm")
    try:
        grading = {"label": "labgrade.role=grading"}
        assert _until(lambda: client.containers.list(ignore_removed=True, filters=grading), 60), \
            "no grading container started"
        p.send_signal(signal.SIGINT)
        out, _ = p.communicate(timeout=120)
    finally:
        p.kill()
    assert p.returncode == 130, out
    assert _until(lambda: not _ours(client), 60), _ours(client)
    assert not (tmp_path / "out1" / "alice" / "fork.json").exists()

    # SIGKILL of the coordinator with gradings under way; the rerun removes what it left and resumes
    fake = tmp_path / "fake"
    hashes = _fake_class(fake, 4)
    cmd = ("batch", str(fake), "--out", str(tmp_path / "out2"), "--swarm", "--swarm-cpus", "0.5")
    p = _popen(*cmd, "--fake", "60")
    try:
        assert _until(lambda: len(client.api.services(filters={"label": LABEL_BATCH})) == 4, 60), \
            client.api.services(filters={"label": LABEL_BATCH})
    finally:
        p.kill()
        p.communicate()
    assert len(_ours(client)) >= 8  # its services and secrets (and their tasks' containers) are left
    r, _ = _labgrade(*cmd, "--fake", "1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "removed 8 service(s) and secret(s) an earlier run of this batch left" in re.sub(r"\s+", " ", r.stderr)
    for sub, sha in hashes.items():
        s = json.loads((tmp_path / "out2" / f"{sub}.json").read_text())
        assert s["gradable"] and s["score"] == s["max_score"] and s["submission_sha256"] == sha
    assert _until(lambda: not _ours(client), 60), _ours(client)


def test_three_nodes_one_with_another_image_one_dying_mid_batch(
        swarm: str, client: Any, grader_image: str, tmp_path: Path,  # noqa: F811
        extra_nodes: list[swarmnodes.Node]) -> None:
    nodes = extra_nodes  # node 3 holds another "grader image"
    try:
        t0 = time.monotonic()
        for n in nodes:
            swarmnodes.wait_ready(client, n)
            swarmnodes.label(client, n.node_id, {"labgrade": "grader"})
        print(f"two nodes ready {time.monotonic() - t0:.0f} s into this test (the grader image copied to one)")
        live, other = nodes
        fake_s = 10
        hashes = _fake_class(tmp_path / "class", 8)
        out = tmp_path / "out"
        p = _popen("batch", str(tmp_path / "class"), "--out", str(out), "--swarm", "--fake", str(fake_s))
        try:
            assert _until(lambda: any(t["Status"]["State"] == "running"
                                      for t in client.api.tasks(filters={"node": live.node_id})), 120), \
                "nothing ran on the live worker"
            time.sleep(3)
            t_kill, wall_kill = time.monotonic(), time.time()
            swarmnodes.kill(live)
            text, _ = p.communicate(timeout=fake_s * 10 + 300)
        finally:
            p.kill()
        t_end = time.monotonic()
        print(f"node killed; the batch ended {t_end - t_kill:.0f} s later\n{text}")
        assert p.returncode == 0, text
        flat = re.sub(r"\s+", " ", text)
        assert f"node vm ({other.node_id[:12]}) grades nothing: it does not hold the grader image" in flat or \
            f"({other.node_id[:12]}) grades nothing: it does not hold the grader image" in flat, text
        assert "attempt lost on node" in flat and live.node_id[:12] in flat, text
        for sub, sha in hashes.items():  # graded once each, its own submission
            s = json.loads((out / f"{sub}.json").read_text())
            assert s["gradable"] and s["score"] == s["max_score"] and s["submission_sha256"] == sha, s
            assert len(re.findall(rf"^\s*{re.escape(sub)}: ", text, re.M)) == 1, text
        with (out / "gradebook.csv").open() as f:
            assert len(list(csv.DictReader(f))) == len(hashes)
        # those lost with the node were graded elsewhere within one grading plus a minute of its death
        lost = sorted(set(re.findall(r"swarm: (s\d\d/fork): attempt lost on node", flat)))
        assert lost, text
        late = {sub: (out / f"{sub}.json").stat().st_mtime - wall_kill for sub in lost}
        print(f"graded again after the kill, seconds after it: {late}")
        assert max(late.values()) <= fake_s + 60, late
    finally:
        for n in nodes:
            swarmnodes.remove(client, n, grader_image)
    assert swarmnodes.leftovers(client) == []
    assert _until(lambda: not _ours(client), 60), _ours(client)
