"""The coordinator's rules (grader.swarm.Swarm) against a simulated swarm, in a fraction of a second
each: a dead node's grading goes elsewhere and first, the first valid result wins, lost twice is not
graded, a node without the image grades nothing, a grading past its time is lost, and no more
gradings are under way than the nodes hold. tests/test_swarm.py does the same for real (docker)."""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from grader.batch import Job
from grader.results import Summary
from grader.swarm import coordinator, encode
from grader.swarm.task import fake_summary


class FakeSwarm:
    """Just enough of the Docker API for the coordinator; the test moves the tasks along."""

    def __init__(self, nodes: list[str], cpus: int = 2) -> None:
        self._nodes = {n: {"ID": n, "Spec": {"Labels": {"labgrade": "grader"}, "Availability": "active"},
                           "Status": {"State": "ready"},
                           "Description": {"Hostname": n, "Resources": {"NanoCPUs": cpus * 10**9,
                                                                        "MemoryBytes": 64 << 30}}}
                       for n in nodes}
        self.svc: dict[str, dict[str, Any]] = {}
        self.secret_ids: set[str] = set()
        self.lock = threading.Lock()
        self.api = self
        self.images = self
        self.id = "sha256:" + "1" * 64
        self.peak = 0
        self.made = 0
        self.cpus = cpus

    # the SDK's surface ---------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        return {"Swarm": {"LocalNodeState": "active", "ControlAvailable": True, "NodeID": "manager"}}

    def get(self, name: str) -> FakeSwarm:
        return self

    def close(self) -> None:
        pass

    def nodes(self, filters: Any = None) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(n, Status=dict(n["Status"])) for n in self._nodes.values()]

    def tasks(self, filters: dict[str, list[str]]) -> list[dict[str, Any]]:
        with self.lock:
            return [{"ServiceID": sid, "NodeID": s["node"], "Version": {"Index": s["version"]},
                     "Status": {"State": s["state"], "Err": s["err"]}}
                    for sid, s in self.svc.items() if sid in filters["service"]]

    def services(self, filters: Any = None) -> list[dict[str, str]]:
        with self.lock:
            return [{"ID": sid} for sid in self.svc]

    def secrets(self, filters: Any = None) -> list[dict[str, str]]:
        return [{"ID": x} for x in sorted(self.secret_ids)]

    def create_secret(self, name: str, data: bytes, labels: dict[str, str]) -> dict[str, str]:
        self.secret_ids.add(name)
        return {"ID": name}

    def remove_secret(self, sid: str) -> None:
        self.secret_ids.discard(sid)

    def _url(self, path: str) -> str:
        return path

    def _post_json(self, url: str, data: dict[str, Any]) -> dict[str, Any]:
        return data

    def _result(self, spec: dict[str, Any], json: bool) -> dict[str, str]:
        away = {c.split("!=")[1] for c in spec["TaskTemplate"]["Placement"]["Constraints"] if "node.id!=" in c}
        cmd = spec["TaskTemplate"]["ContainerSpec"]["Command"]
        with self.lock:
            room = {n: self.cpus - sum(1 for x in self.svc.values() if x["node"] == n and x["state"] == "running")
                    for n in self._nodes}
            ready = [n for n in self._nodes
                     if n not in away and self._nodes[n]["Status"]["State"] == "ready" and room[n] > 0]
            self.made += 1
            sid = f"svc{self.made}"
            self.svc[sid] = {"node": ready[0] if ready else "", "state": "running" if ready else "pending",
                                  "err": "", "token": cmd[cmd.index("--token") + 1], "lab": cmd[2], "logs": b"",
                                  "who": spec["Labels"]["labgrade.submission"],
                                  "version": 1}
            self.peak = max(self.peak, len(self.svc))
        return {"ID": sid}

    def remove_service(self, sid: str) -> None:
        with self.lock:
            self.svc.pop(sid, None)

    def service_logs(self, sid: str, **kw: Any) -> Iterator[bytes]:
        with self.lock:
            yield self.svc[sid]["logs"]

    # the test's controls ------------------------------------------------------------------
    def on(self, node: str) -> list[str]:
        with self.lock:
            return [sid for sid, s in self.svc.items() if s["node"] == node and s["state"] == "running"]

    def finish(self, sid: str, submission: Path) -> None:
        with self.lock:
            s = self.svc[sid]
            s["logs"] = "".join(x + "\n" for x in encode({"summary": fake_summary(s["lab"], submission)},
                                                          s["token"])).encode()
            s["state"], s["version"] = "complete", s["version"] + 1

    def set(self, sid: str, state: str, err: str = "") -> None:
        with self.lock:
            self.svc[sid].update(state=state, err=err)
            self.svc[sid]["version"] += 1

    def down(self, node: str) -> None:
        with self.lock:
            self._nodes[node]["Status"]["State"] = "down"



@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSwarm]:
    f = FakeSwarm(["nodeA", "nodeB", "nodeC"])
    monkeypatch.setattr(coordinator, "client", lambda timeout=60: f)
    monkeypatch.setattr(coordinator, "POLL", 0.02)
    yield f


def _swarm(tmp_path: Path, said: list[str], **kw: Any) -> coordinator.Swarm:
    sw = coordinator.Swarm(out=tmp_path / "out", say=said.append, log_patience=0.2, **kw)
    return sw


def _job(tmp_path: Path, name: str = "alice") -> Job:
    d = tmp_path / name / "fork"
    d.mkdir(parents=True, exist_ok=True)
    (d / "server.c").write_text(f"int {name};\n")
    return Job(name, "fork", d)


def _grade(sw: coordinator.Swarm, job: Job) -> tuple[threading.Thread, list[Summary | None]]:
    got: list[Summary | None] = []
    t = threading.Thread(target=lambda: got.append(sw.grade(job, threading.Event())), daemon=True)
    t.start()
    return t, got


def _until(what: Any, timeout: float = 5.0) -> Any:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if got := what():
            return got
        time.sleep(0.01)
    raise AssertionError("not within 5 s")


def test_a_dead_nodes_grading_goes_elsewhere_first_and_is_graded_once(fake: FakeSwarm, tmp_path: Path) -> None:
    said: list[str] = []
    sw = _swarm(tmp_path, said)
    job = _job(tmp_path)
    t, got = _grade(sw, job)
    first = _until(lambda: fake.on("nodeA"))[0]
    fake.down("nodeA")
    second = _until(lambda: fake.on("nodeB"))[0]  # away from the dead node
    assert first in fake.svc  # kept: its node may come back first
    fake.finish(second, job.directory)
    t.join(5)
    assert got and got[0] is not None and got[0].gradable and got[0].submission == "alice/fork"
    assert fake.svc == {} and fake.secret_ids == set()  # both attempts removed, their secrets too
    assert sw.lost_on == {"nodeA": 1} and any("attempt lost on node nodeA" in x for x in said)
    sw.close()


def test_the_first_valid_result_wins_and_a_late_one_is_discarded(fake: FakeSwarm, tmp_path: Path) -> None:
    sw = _swarm(tmp_path, [])
    job = _job(tmp_path)
    t, got = _grade(sw, job)
    first = _until(lambda: fake.on("nodeA"))[0]
    fake.down("nodeA")
    second = _until(lambda: fake.on("nodeB"))[0]
    fake.finish(first, job.directory)  # the first node came back and finished first
    t.join(5)
    assert got and got[0] is not None and got[0].gradable
    assert second not in fake.svc  # the other attempt is removed: its result, should it come, is never read
    sw.close()


def test_lost_twice_is_not_graded_and_names_both_nodes(fake: FakeSwarm, tmp_path: Path) -> None:
    sw = _swarm(tmp_path, [])
    t, got = _grade(sw, _job(tmp_path))
    _until(lambda: fake.on("nodeA"))
    fake.down("nodeA")
    _until(lambda: fake.on("nodeB"))
    fake.down("nodeB")
    t.join(5)
    s = got[0]
    assert s is not None and not s.gradable and s.score == 0
    assert s.error == "not graded: lost on nodes nodeA (nodeA) and nodeB (nodeB)"
    assert fake.svc == {}
    sw.close()


def test_a_node_without_the_image_grades_nothing_and_is_named(fake: FakeSwarm, tmp_path: Path) -> None:
    said: list[str] = []
    sw = _swarm(tmp_path, said)
    job = _job(tmp_path)
    t, got = _grade(sw, job)
    first = _until(lambda: fake.on("nodeA"))[0]
    fake.set(first, "rejected", "No such image: sha256:1111")
    second = _until(lambda: fake.on("nodeB"))[0]
    fake.finish(second, job.directory)
    t.join(5)
    assert got[0] is not None and got[0].gradable
    assert "nodeA" in sw.bad_nodes and sw.lost_on == {}  # not a lost attempt: the node is out
    assert any("nodeA (nodeA) grades nothing: it does not hold the grader image" in x for x in said)
    assert "graded nothing" in sw.report(1.0)
    t2, got2 = _grade(sw, _job(tmp_path, "bob"))  # the next submission never goes there
    assert not fake.on("nodeA") and _until(lambda: fake.on("nodeB"))
    fake.finish(fake.on("nodeB")[0], _job(tmp_path, "bob").directory)
    t2.join(5)
    assert got2[0] is not None and got2[0].gradable
    sw.close()


def test_a_grading_past_its_time_is_lost_and_goes_again(fake: FakeSwarm, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(coordinator, "LOST_AFTER", 0.3)
    sw = _swarm(tmp_path, [])
    job = _job(tmp_path)
    t, got = _grade(sw, job)
    first = _until(lambda: fake.on("nodeA"))[0]
    second = _until(lambda: fake.on("nodeB"))[0]  # nodeA is alive, but the grading never ended
    assert first not in fake.svc  # removed (its grading container with it), not kept
    fake.finish(second, job.directory)
    t.join(5)
    assert got[0] is not None and got[0].gradable and sw.lost_on == {"nodeA": 1}
    sw.close()


def test_malformed_or_failed_results_are_never_scores(fake: FakeSwarm, tmp_path: Path) -> None:
    sw = _swarm(tmp_path, [])
    for how in ("garbage", "failed"):
        job = _job(tmp_path, how)
        t, got = _grade(sw, job)
        sid = _until(lambda: fake.on("nodeA") or fake.on("nodeB") or fake.on("nodeC"))[0]
        if how == "garbage":
            fake.svc[sid]["logs"] = b"LGF1 BEGIN " + fake.svc[sid]["token"].encode() + b" 5 " + b"0" * 64 + b"\n"
            fake.set(sid, "complete")
        else:
            fake.set(sid, "failed", "task: non-zero exit (137)")
        t.join(5)
        s = got[0]
        assert s is not None and not s.gradable and s.score == 0
        assert ("malformed result" if how == "garbage" else "ended failed: task: non-zero exit (137)") in s.error, s
    sw.close()


def test_no_more_gradings_under_way_than_the_nodes_hold(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    f = FakeSwarm(["nodeA"], cpus=2)  # room for two at 1 CPU each
    monkeypatch.setattr(coordinator, "client", lambda timeout=60: f)
    monkeypatch.setattr(coordinator, "POLL", 0.02)
    sw = _swarm(tmp_path, [])
    assert sw.capacity() == 2 and sw.gate() == 2
    jobs = [_job(tmp_path, f"s{i}") for i in range(5)]
    runs = [_grade(sw, j) for j in jobs]
    for _ in range(5):
        sid = _until(lambda: f.on("nodeA"))[0]
        time.sleep(0.1)
        assert len(f.svc) <= 2
        f.finish(sid, jobs[0].directory)
    for t, got in runs:
        t.join(5)
        assert got and got[0] is not None and got[0].gradable
    assert f.peak == 2
    sw.close()


def test_a_lost_grading_goes_before_those_still_waiting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    f = FakeSwarm(["nodeA", "nodeB"], cpus=1)  # room for one each
    monkeypatch.setattr(coordinator, "client", lambda timeout=60: f)
    monkeypatch.setattr(coordinator, "POLL", 0.02)
    sw = _swarm(tmp_path, [])
    jobs = {n: _job(tmp_path, n) for n in ("s1", "s2", "s3", "s4", "s5", "s6")}
    runs = {n: _grade(sw, j) for n, j in jobs.items()}
    on_a, on_b = _until(lambda: f.on("nodeA"))[0], _until(lambda: f.on("nodeB"))[0]
    time.sleep(0.1)
    lost = f.svc[on_a]["who"].split("/")[0]
    f.down("nodeA")  # room for one now, and `lost` must go again, before the four still waiting
    time.sleep(0.2)
    assert len(f.on("nodeB")) == 1  # nothing more than the live node holds
    order = []
    done = {on_b}
    f.finish(on_b, jobs[f.svc[on_b]["who"].split("/")[0]].directory)
    for _ in range(5):
        nxt = _until(lambda: [x for x in f.on("nodeB") if x not in done])[0]
        done.add(nxt)
        who = f.svc[nxt]["who"].split("/")[0]
        order.append(who)
        f.finish(nxt, jobs[who].directory)
    assert order[0] == lost, order
    for t, got in runs.values():
        t.join(5)
        assert got and got[0] is not None and got[0].gradable
    sw.close()


def test_a_submission_too_large_for_a_secret_gets_the_too_large_summary(fake: FakeSwarm, tmp_path: Path) -> None:
    sw = _swarm(tmp_path, [])
    job = _job(tmp_path)
    (job.directory / "data.bin").write_bytes(os.urandom(coordinator.SECRET_LIMIT + 1))  # incompressible
    s = sw.grade(job, threading.Event())
    assert s is not None and s.gradable and s.score == 0 and s.submission == "alice/fork"
    build = next(c for c in s.checks if c.id == "build")
    assert build.status == "failed" and "over the 500 KiB a Swarm secret holds" in build.feedback
    assert fake.made == 0 and fake.secret_ids == set()  # nothing was sent
    sw.close()
