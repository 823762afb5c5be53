"""The coordinator of `labgrade batch --swarm`: one Swarm job per submission, results from logs.

    sw = Swarm(out=Path("results"))          # on a manager of a swarm with `labgrade=grader` nodes
    summary = sw.grade(job, stopping)        # a valid summary, an ungradable one saying why, or None
    sw.close()                               # removes every service and secret of the batch

A grading is a one-task service (one replica, restart condition none: a job) whose task runs
`labgrade swarm-task` (grader.swarm.task) on a node labelled `labgrade=grader`, from the same
image id as the coordinator's grader image; the submission is a secret, the result comes back
framed in the task's logs (grader.swarm.frames). One thread polls the manager for the tasks and
nodes of every live attempt (two API calls a round, whatever the number of gradings).

Swarm does not move a job's task off a dead node: this module does. An attempt whose node is
down, or that has run past the grading time limit plus a margin, is lost and the submission is
submitted once more, away from the nodes it was lost on; the lost attempt on a dead node is kept
(its result, should the node come back first, is as good), and the first valid result wins.
Lost twice: "not graded: lost on nodes X and Y". A node that rejects a task for want of the image
(it holds another grader image) is named, grades nothing more, and the attempt goes elsewhere.
"""
from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import IsolationError, ReportError, SubmissionTooLarge, UsageError
from ..isolation.docker import DEFAULT_IMAGE, MEMORY, client, submission_tar, too_large_summary
from ..isolation.docker.engine import library_errors
from ..report import ungradable
from ..results import Summary
from ..run import GRADE_TIMEOUT
from .frames import MalformedResult, decode
from .services import LABEL_BATCH, NODE_LABEL, remove_objects, service_spec

SECRET_LIMIT = 500 * 1024  # bytes: the most a Swarm secret holds
LOST_AFTER = GRADE_TIMEOUT + 120.0  # s running before an attempt counts as lost
POLL = 1.0  # s between looks at the tasks and nodes
FAKE_MEMORY = 64 << 20  # bytes a fake grading reserves: it holds no grading container, only its launcher
LOG_PATIENCE = 8.0  # s a finished task's logs are read again until its result is whole
FINISHED = {"complete", "failed", "shutdown"}


@dataclass
class Attempt:
    token: str
    service: str
    secret: str
    node: str | None = None
    running_since: float | None = None
    slot: bool = False  # it counts among the gradings under way (grader.swarm.Swarm.gate)


@dataclass
class Swarm:
    out: Path
    image: str = DEFAULT_IMAGE
    fake: float | None = None
    cpus: float = 1.0
    memory: int = 0  # reserved per grading; 0: a grading container's (a fake grading's launcher: 64 MiB)
    say: Callable[[str], None] = print
    log_patience: float = LOG_PATIENCE
    limit: int = 0  # gradings under way at most (0: as many as the grading nodes hold)
    batch: str = ""
    image_id: str = ""
    api_calls: int = 0
    bad_nodes: dict[str, str] = field(default_factory=dict)   # node id -> why it grades nothing
    lost_on: dict[str, int] = field(default_factory=dict)     # node id -> attempts lost there

    def __post_init__(self) -> None:
        self.memory = self.memory or (MEMORY if self.fake is None else FAKE_MEMORY)
        self._c = client(timeout=60)
        self._lock = threading.Condition()
        self._live: set[str] = set()
        self._tasks: dict[str, dict[str, Any]] = {}
        self._nodes: dict[str, dict[str, Any]] = {}
        self._round = 0
        self._busy = 0  # attempts under way on live nodes
        self._urgent = 0  # submissions waiting to go again (lost, or refused for the image): they go first
        self._stop = threading.Event()
        try:
            info = self._c.info()
            sw = info.get("Swarm") or {}
            if sw.get("LocalNodeState") != "active" or not sw.get("ControlAvailable"):
                raise UsageError("--swarm: this Docker engine is not a manager of an active swarm (README, "
                                 "\"Grade on a cluster\": `docker swarm init` here, `docker swarm join` on the others)")
            self.image_id = self._c.images.get(self.image).id
            manager = sw.get("NodeID", "")
        except library_errors() as e:
            if "No such image" in str(e) or type(e).__name__ == "ImageNotFound":
                raise UsageError(f"--swarm: the grader image {self.image} is not on this engine") from e
            raise IsolationError(f"--swarm: cannot reach the swarm's manager: {e}") from e
        self.batch = "lg" + hashlib.sha256(f"{manager}:{os.path.abspath(self.out)}".encode()).hexdigest()[:10]
        left = self.cleanup()
        if left:
            self.say(f"swarm: removed {left} service(s) and secret(s) an earlier run of this batch left")
        self._refresh()
        if not self.nodes():
            raise UsageError(f"--swarm: no ready node of this swarm is labelled {NODE_LABEL} "
                             f"(`docker node update --label-add {NODE_LABEL} NODE`)")
        self._poller = threading.Thread(target=self._poll_loop, name="swarm-poll", daemon=True)
        self._poller.start()

    # ----------------------------------------------------------------------------------------
    def nodes(self) -> list[dict[str, Any]]:
        """The ready, active nodes labelled to grade."""
        want = dict([NODE_LABEL.split("=")])
        return [n for n in self._nodes.values()
                if all((n.get("Spec", {}).get("Labels") or {}).get(k) == v for k, v in want.items())
                and n.get("Status", {}).get("State") == "ready" and n.get("Spec", {}).get("Availability") == "active"]

    def capacity(self) -> int:
        """How many gradings the grading nodes run at once, by their CPUs and memory and the reservations."""
        total = 0
        for n in self.nodes():
            if n["ID"] in self.bad_nodes:
                continue
            res = n.get("Description", {}).get("Resources", {})
            total += min(int(res.get("NanoCPUs", 0) // max(1, int(self.cpus * 1e9))),
                         int(res.get("MemoryBytes", 0) // max(1, self.memory)))
        return max(1, total)

    def gate(self) -> int:
        """How many attempts may be under way now: the live grading nodes' capacity, at most `limit`.
        No more are submitted, so that nothing waits in Swarm's queue, where a submission that must
        go again (its node died) would wait behind the others."""
        return min(self.capacity(), self.limit) if self.limit else self.capacity()

    def _admit(self, urgent: bool, stopping: threading.Event) -> bool:
        """Wait for room under `gate` (first come the urgent); False when `stopping` is set meanwhile."""
        with self._lock:
            self._urgent += urgent
            try:
                while not stopping.is_set():
                    if self._busy < self.gate() and (urgent or not self._urgent):
                        self._busy += 1
                        return True
                    self._lock.wait(POLL)
                return False
            finally:
                self._urgent -= urgent

    def _release(self, a: Attempt) -> None:
        with self._lock:
            if a.slot:
                a.slot = False
                self._busy -= 1
                self._lock.notify_all()

    def node_name(self, node: str | None) -> str:
        n = self._nodes.get(node or "", {})
        host = n.get("Description", {}).get("Hostname", "?")
        return f"{host} ({(node or '?')[:12]})"

    # ----------------------------------------------------------------------------------------
    def grade(self, job: Any, stopping: threading.Event) -> Summary | None:
        """Grade `job` (a grader.batch.Job) on the swarm: its summary, an ungradable summary saying
        why it could not be graded, or None when `stopping` was set meanwhile."""
        t0 = time.monotonic()

        def not_graded(why: str) -> Summary:
            return ungradable(lab=job.lab, submission=job.label, seconds=time.monotonic() - t0, reason=why)

        try:
            payload = gzip.compress(submission_tar(job.directory), mtime=0)
        except SubmissionTooLarge as e:
            return too_large_summary(lab=job.lab, why=str(e)).replace(submission=job.label)
        if len(payload) > SECRET_LIMIT:
            return too_large_summary(lab=job.lab, why=f"compressed, it takes {len(payload) // 1024} KiB, over the "
                                     f"{SECRET_LIMIT // 1024} KiB a Swarm secret holds").replace(submission=job.label)
        attempts: list[Attempt] = []
        lost: list[str] = []  # the nodes it was lost on, in order
        moved: set[str] = set()  # attempts on a dead node, kept alive but already replaced
        tries = 0

        def lose(node: str | None, why: str) -> Summary | None:
            lost.append(node or "?")
            self.lost_on[node or "?"] = self.lost_on.get(node or "?", 0) + 1
            self.say(f"swarm: {job.label}: attempt lost on node {self.node_name(node)} ({why})")
            return not_graded(f"not graded: lost on nodes {self._names(lost)}") if len(lost) >= 2 else None

        try:
            while True:
                if stopping.is_set():
                    return None
                if len(attempts) == len(moved):  # none on its way: (re)submit, away from where it went wrong
                    away = set(self.bad_nodes) | set(lost)
                    if not [n for n in self.nodes() if n["ID"] not in away]:
                        return not_graded("not graded: no grading node left to grade it"
                                          + (f" (lost on {self._names(lost)})" if lost else ""))
                    if not self._admit(bool(tries), stopping):
                        return None
                    tries += 1
                    try:
                        attempts.append(self._submit(job, payload, sorted(away)))
                    except BaseException:
                        self._release(Attempt("", "", "", slot=True))  # never submitted: its room back
                        raise
                self._wait_round()
                down = self._down()
                for a in list(attempts):
                    seen = self._look(a)
                    if seen is not None and seen[0] == "result":
                        return self._result(a, job, seen[1], not_graded)
                    if seen is not None:
                        self._remove(a)
                        attempts.remove(a)
                        was_moved = a.token in moved
                        moved.discard(a.token)
                        if seen[0] == "image":
                            if a.node and a.node not in self.bad_nodes:
                                self.bad_nodes[a.node] = seen[1]
                                self.say(f"swarm: node {self.node_name(a.node)} grades nothing: {seen[1]}")
                        elif not was_moved and (gone := lose(a.node, seen[1])):
                            return gone
                    elif a.node in down and a.token not in moved:
                        moved.add(a.token)  # kept: should its node come back first, its result is as good
                        self._release(a)  # its room went with its node
                        if gone := lose(a.node, "the node is down"):
                            return gone
        finally:
            for a in attempts:
                self._remove(a)

    def _names(self, nodes: list[str]) -> str:
        names = [self.node_name(n) for n in nodes]
        return " and ".join(names) if len(names) <= 2 else ", ".join(names[:-1]) + " and " + names[-1]

    def _down(self) -> set[str]:
        return {i for i, n in self._nodes.items() if n.get("Status", {}).get("State") != "ready"}

    def _look(self, a: Attempt) -> tuple[str, str] | None:
        """What became of attempt `a` in the last round: None (still on its way), ("result", ""),
        ("image", why) or ("lost", why)."""
        with self._lock:
            t = self._tasks.get(a.service)
        if t is None:
            return None
        a.node = t.get("NodeID") or a.node
        status = t.get("Status") or {}
        state, err = status.get("State", ""), status.get("Err") or ""
        if state in FINISHED:
            return ("result", state if state == "complete" else f"{state}: {err or 'no reason given'}")
        if state == "rejected":
            if "no such image" in err.lower() or ("not found" in err.lower() and "image" in err.lower()):
                return ("image", f"it does not hold the grader image {self.image_id[:19]} ({err})")
            return ("lost", f"rejected: {err}")
        if state == "running":
            a.running_since = a.running_since or time.monotonic()
            if time.monotonic() - a.running_since > LOST_AFTER:
                return ("lost", f"still running after {LOST_AFTER:.0f} s")
        return None

    def _result(self, a: Attempt, job: Any, state: str, not_graded: Callable[[str], Summary]) -> Summary:
        deadline = time.monotonic() + self.log_patience
        errors: tuple[type[BaseException], ...] = (MalformedResult, *library_errors())
        while True:
            try:
                self.api_calls += 1
                raw = b"".join(self._c.api.service_logs(a.service, stdout=True, stderr=False, follow=False))
                obj = decode(raw.decode(errors="replace").splitlines(), a.token)
                break
            except errors as e:
                if time.monotonic() >= deadline:
                    where = f"node {self.node_name(a.node)}"
                    if state != "complete":  # the task itself ended badly (its launcher killed, say)
                        return not_graded(f"not graded: the grading task on {where} ended {state}")
                    return not_graded(f"not graded: malformed result from {where}: {e}")
                time.sleep(0.5)
        if "error" in obj:
            return not_graded(f"not graded: the grading failed on node {self.node_name(a.node)}: {obj['error']}")
        try:
            s = Summary.from_json(obj["summary"])
        except ReportError as e:
            return not_graded(f"not graded: malformed result from node {self.node_name(a.node)}: {e}")
        if s.lab != job.lab:
            return not_graded(f"not graded: malformed result: a summary of lab {s.lab}, not {job.lab}")
        return s.replace(submission=job.label, commit=job.commit, committed_at=job.committed_at)

    # ----------------------------------------------------------------------------------------
    def _submit(self, job: Any, payload: bytes, away: list[str]) -> Attempt:
        token = secrets.token_hex(16)
        name = f"{self.batch}-{token[:16]}"
        labels = {LABEL_BATCH: self.batch, "labgrade.submission": job.label}
        self.api_calls += 2
        sec = self._c.api.create_secret(name, payload, labels=labels)
        sec_id = sec["ID"] if isinstance(sec, dict) else sec
        spec = service_spec(name=name, labels=labels, image=self.image_id, command=self.command(job.lab, token),
                            secret=(sec_id, name), cpus=self.cpus, memory=self.memory, away=away)
        api = self._c.api
        try:
            svc = api._result(api._post_json(api._url("/services/create"), data=spec), True)
        except BaseException:
            with contextlib.suppress(Exception):
                api.remove_secret(sec_id)
            raise
        a = Attempt(token=token, service=svc["ID"], secret=sec_id, slot=True)
        with self._lock:
            self._live.add(a.service)
        return a

    def command(self, lab: str, token: str) -> list[str]:
        """What the task runs (grader.swarm.task), its result framed for `token`."""
        return ["labgrade", "swarm-task", lab, "--secret", "/run/secrets/submission", "--token", token] + (
            ["--fake", str(self.fake)] if self.fake is not None else [])

    def _remove(self, a: Attempt) -> None:
        with self._lock:
            self._live.discard(a.service)
            self._tasks.pop(a.service, None)
        try:
            for _ in range(2):  # a second Ctrl-C during removal does not leave them behind
                try:
                    self._remove_objects([a.service], [a.secret])
                    return
                except KeyboardInterrupt:
                    continue
        finally:  # its room once its service is gone: never more services than the nodes hold
            self._release(a)

    def _remove_objects(self, services: list[str], secrets_: list[str]) -> None:
        self.api_calls += remove_objects(self._c.api, services, secrets_)

    def cleanup(self) -> int:
        """Remove every service and secret of this batch (left by a killed coordinator, or at the end)."""
        flt = {"label": f"{LABEL_BATCH}={self.batch}"}
        services = [s["ID"] for s in self._c.api.services(filters=flt)]
        secrets_ = [s["ID"] for s in self._c.api.secrets(filters=flt)]
        self._remove_objects(services, secrets_)
        return len(services) + len(secrets_)

    def report(self, seconds: float) -> str:
        """What the batch's end says of the swarm: lost attempts, nodes that graded nothing, API use."""
        lines = [f"swarm: {len(self.nodes())} grading node(s); {self.api_calls} API calls "
                 f"({self.api_calls / max(seconds, 1e-9):.1f} a second)"]
        lines += [f"swarm: {n} attempt(s) lost on node {self.node_name(i)}" for i, n in self.lost_on.items()]
        lines += [f"swarm: node {self.node_name(i)} graded nothing: {why}" for i, why in self.bad_nodes.items()]
        return "\n".join(lines)

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(Exception):
            self.cleanup()
        with contextlib.suppress(Exception):
            self._c.close()

    # ----------------------------------------------------------------------------------------
    def _refresh(self) -> None:
        with self._lock:
            live = sorted(self._live)
        self.api_calls += 1
        nodes = {n["ID"]: n for n in self._c.api.nodes()}
        tasks: dict[str, dict[str, Any]] = {}
        for i in range(0, len(live), 50):
            self.api_calls += 1
            for t in self._c.api.tasks(filters={"service": live[i:i + 50]}):
                old = tasks.get(t["ServiceID"])
                if old is None or t.get("Version", {}).get("Index", 0) > old.get("Version", {}).get("Index", 0):
                    tasks[t["ServiceID"]] = t
        with self._lock:
            self._nodes = nodes
            self._tasks = {k: v for k, v in tasks.items() if k in self._live}
            self._round += 1
            self._lock.notify_all()

    def _poll_loop(self) -> None:
        while not self._stop.wait(POLL):
            try:
                self._refresh()
            except Exception as e:  # the manager did not answer this round: the next one may
                self.say(f"swarm: could not ask the manager ({e}); asking again")

    def _wait_round(self) -> None:
        with self._lock:
            now = self._round
            self._lock.wait_for(lambda: self._round > now or self._stop.is_set(), timeout=POLL * 10)
