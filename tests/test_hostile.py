"""Hostile student code: whatever a submission does, grading ends within a bound, the verdict is
right and explained, nothing of it keeps running, and the report is intact.

Each directory tests/servers/hostile/<name>/ holds what its program changes of the lab (the rest
comes from reference/<lab>, see support.copy_lab) and a `hostile.json`:
    {"lab": "fork", "why": "...",
     "max_score": 5 | 0 | null,     # null: it serves correctly while misbehaving, then
     "passes": [ids],               #   these checks must pass
     "feedback": {id: "text"},      # the feedback of check `id` must say this
     "feedback_any": ["text"],      # some failed check's feedback must say this (which one
                                    #   sees it first is a matter of scheduling)
     "forbidden": ["LEAKED"],       # no feedback may say this (what the program managed to steal)
     "generate": {"files": N, "bytes": B},  # made at run time (a tree too large to commit)
     "shared": ["thief.c"],         # sources kept once in tests/servers/hostile/, shared by cases
     "listen": PORT,                # the test listens on this TCP port of the machine meanwhile:
                                    #   no connection may reach it (the grading has no network)
     "local": true | false, "local_why": "..."}  # false: not contained by the local isolation
     "local_requires": "private-fs" | "private-net"}  # contained locally only with root's private
                                      #   view of the file system, or network namespace (not
                                      #   inside a container without CAP_SYS_ADMIN)

Every case is graded by the command line (`python3 -m grader grade LAB DIR --json ... --quiet`)
in the docker isolation, and in the local one when the tests run as root and "local" is true.
The gradings run three at a time (this machine has 2 cores; most cases mostly wait) the first time a test needs one.
A mixed batch then shows that one hostile submission among normal ones changes none of
their scores.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import pytest
from support import ROOT, copy_lab, lab_files, student_processes

from grader.errors import ReportError
from grader.isolation.local import private_fs_supported, private_network_supported
from grader.schema import validate_summary

HOSTILE = ROOT / "tests" / "servers" / "hostile"
BOUND = 180.0   # seconds: a grading of one lab, whatever the submission does
# most cases wait (for a build's time limit, a socket that never comes): 3 keep 2 cores busy (4 saved only
# 11 s in CI, 285 s against 296, and beside a heavy load memory-bomb's OOM once came too late for the
# feedback its case expects)
JOBS = 3
IS_ROOT = os.geteuid() == 0
CANARY = {"lab": "fork", "submission": "canary/fork", "gradable": True, "score": 42, "max_score": 100,
          "seconds": 1.0, "checks": []}


def cases() -> list[Path]:
    return sorted(p.parent for p in HOSTILE.glob("*/hostile.json"))


def load(case: Path) -> dict[str, Any]:
    return json.loads((case / "hostile.json").read_text())  # type: ignore[no-any-return]


def materialize(case: Path, lab_dir: Path) -> Path:
    """A copy of the case at lab_dir (a student's lab directory), with what it generates at run time."""
    meta = load(case)
    copy_lab(case, lab_dir, meta["lab"])
    gen = meta.get("generate")
    if gen:
        junk = lab_dir / "junk"
        junk.mkdir()
        block = os.urandom(gen["bytes"] // 2).hex().encode()
        for i in range(gen["files"]):
            (junk / f"part{i:05d}.c").write_bytes(block)
    return lab_dir


def world_readable_dir(prefix: str) -> Path:
    """A directory under the machine's temp dir that anyone may enter (0755, root's when root)."""
    d = Path(tempfile.mkdtemp(prefix=prefix))
    d.chmod(0o755)
    return d


def plant_canary(where: Path) -> Path:
    """A report-like file that student code may read but must not be able to change."""
    c = where / "summary.json"
    c.write_text(json.dumps(CANARY))
    c.chmod(0o644)
    return c


def labelled(prefix: str) -> list[str]:
    """Containers and volumes of the docker isolation whose session starts with prefix."""
    from grader.isolation import docker as dockeriso

    c = dockeriso.client()
    try:
        mine = {"label": dockeriso.LABEL_SESSION}
        names = [ct.name for ct in c.containers.list(all=True, ignore_removed=True, filters=mine)
                 if ct.labels.get(dockeriso.LABEL_SESSION, "").startswith(prefix)]
        names += [v.name for v in c.volumes.list(filters={"label": dockeriso.LABEL_SESSION})
                  if (v.attrs.get("Labels") or {}).get(dockeriso.LABEL_SESSION, "").startswith(prefix)]
        return names
    finally:
        c.close()


def orphans() -> list[str]:
    """Processes of the grader's uid pool adopted by init: escaped from some grading."""
    from grader import probes
    from grader.isolation.local import UID_BASE, UID_COUNT

    return [p.describe() for p in probes.all_procs()
            if UID_BASE <= p.uid < UID_BASE + UID_COUNT and p.ppid == 1 and not p.zombie]


def run_cli(argv: list[str], *, env: dict[str, str] | None = None, limit: float = BOUND + 60) -> dict[str, Any]:
    """Run a grader command in its own session, killed past `limit`; its exit status, seconds, output."""
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "grader", *argv], cwd=ROOT, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, **(env or {})})
    try:
        out, err = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGINT)  # the grader tears its sandbox down on SIGINT
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
        return {"rc": None, "seconds": time.monotonic() - t0, "stderr": f"killed after {limit:.0f} s\n{err}"}
    return {"rc": proc.returncode, "seconds": time.monotonic() - t0, "stderr": err[-3000:], "stdout": out[-3000:]}


def grade_case(case: Path, isolation: str, work: Path) -> dict[str, Any]:
    """Grade one case; the result, plus what it left behind right after."""
    meta = load(case)
    base = work / f"{isolation}-{case.name}"
    base.mkdir(parents=True)
    lab_dir = materialize(case, base / "class" / case.name / meta["lab"])
    out = base / "summary.json"
    canary = plant_canary(world_readable_dir("labgrade-hostile-canary-"))
    # a careless instructor's reference: built, world-readable, world-executable, in the temp dir
    ref = world_readable_dir("labgrade-hostile-reference-")
    shutil.copytree(ROOT / "reference", ref / "reference", dirs_exist_ok=True)
    subprocess.run(["make", "-s", "-C", str(ref / "reference" / meta["lab"])], check=True, capture_output=True)
    for p in [ref, *ref.rglob("*")]:
        p.chmod(p.stat().st_mode | stat.S_IROTH | (stat.S_IXOTH if p.is_dir() or os.access(p, os.X_OK) else 0))
    prefix = f"hostile-{uuid.uuid4().hex[:8]}-"
    argv = ["grade", meta["lab"], str(lab_dir), "--json", str(out), "--quiet", "--isolation", isolation,
            "--reference-root", str(ref / "reference")]
    port, queues = meta.get("listen"), meta.get("queues")
    try:
        # one grading at a time listens on a given port, or makes queues of given names (a queue of one
        # grading must not be taken for another's leftover); the other cases run side by side
        key = port or queues
        with PORT_LOCKS.setdefault(key, threading.Lock()) if key else contextlib.nullcontext():
            listener = Listener(port) if port else None
            try:
                r = run_cli(argv, env={"LABGRADE_SESSION_PREFIX": prefix})
            finally:
                reached = listener.close() if listener else []
            r["reached"] = reached
            r["queues"] = queues_left(queues) if queues else []
        r["orphans"] = orphans()
        r["containers"] = labelled(prefix) if isolation == "docker" else []
        r["canary"] = json.loads(canary.read_text()) if canary.exists() else None
    finally:
        shutil.rmtree(canary.parent, ignore_errors=True)
        shutil.rmtree(ref, ignore_errors=True)
    try:
        r["summary"] = validate_summary(json.loads(out.read_text()))
    except (OSError, ValueError, ReportError) as e:
        r["summary"] = None
        r["stderr"] = f"no valid summary ({e})\n{r['stderr']}"
    return r


PORT_LOCKS: dict[int | str, threading.Lock] = {}


def queues_left(prefix: str, most: int = 4096) -> list[str]:
    """POSIX message queues named prefix0, prefix1, ... that exist in this process's IPC namespace
    (the machine's, or the test container's): left by a grading. Each is removed once seen."""
    from grader import mqueues

    left = [f"{prefix}{i}" for i in range(most) if mqueues.message_queue_exists(f"{prefix}{i}")]
    for name in left:
        mqueues.unlink_queue(name)
    return left


class Listener:
    """A TCP port of the machine, listening on every address while a case is graded; what
    connected to it (a grading has no network: nothing may)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_server(("0.0.0.0", port), reuse_port=False)
        self.sock.settimeout(0.2)
        self.reached: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, peer = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(1)
                try:
                    said = conn.recv(200)
                except OSError:
                    said = b""
            self.reached.append(f"{peer[0]}:{peer[1]} said {said!r}")

    def close(self) -> list[str]:
        self.stop.set()
        self.thread.join(5)
        self.sock.close()
        return self.reached


class Gradings:
    """Gradings of the cases this session selected, made JOBS at a time on first use."""

    def __init__(self, session: pytest.Session, work: Path) -> None:
        self.session, self.work = session, work
        self.cache: dict[tuple[str, str], dict[str, Any]] = {}
        self.left_after_all: list[str] = []

    def get(self, case: Path, isolation: str) -> dict[str, Any]:
        key = (case.name, isolation)
        if key not in self.cache:
            todo = {key}
            for item in self.session.items:  # everything the selected tests will ask for
                cs = getattr(item, "callspec", None)
                if cs and getattr(item, "originalname", "") == "test_hostile_case":
                    todo.add((cs.params["case"].name, cs.params["isolation"]))
            todo -= set(self.cache)
            # Local gradings share the CPU of the machine (of this container, in CI: no autogroup), so a
            # local fork bomb or spin costs a local neighbour's timing checks (the README's isolation
            # table). The local servers that must keep their points are graded first, beside docker
            # gradings only (their student code runs SCHED_IDLE in a cgroup of its own); the other
            # local cases start once those are done. (CI once saw flood-local lose `zombies` so.)
            keep = sorted(k for k in todo if k[1] == "local" and load(HOSTILE / k[0])["max_score"] is None)
            docker = sorted(k for k in todo if k[1] == "docker")
            with ThreadPoolExecutor(JOBS) as pool:
                jobs = {k: pool.submit(grade_case, HOSTILE / k[0], k[1], self.work) for k in keep + docker}
                wait([jobs[k] for k in keep])
                jobs |= {k: pool.submit(grade_case, HOSTILE / k[0], k[1], self.work)
                         for k in sorted(todo - set(jobs))}
                for k, f in jobs.items():
                    try:
                        self.cache[k] = f.result()
                    except Exception as e:  # this case's test reports it; the others keep their gradings
                        self.cache[k] = {"exception": e}
            self.left_after_all = wait_for_no_student_processes()
        if "exception" in self.cache[key]:
            raise self.cache[key]["exception"]
        return self.cache[key]


def wait_for_no_student_processes(timeout: float = 10.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        left = student_processes()
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


@pytest.fixture(scope="session")
def gradings(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Gradings:
    return Gradings(request.session, tmp_path_factory.mktemp("hostile"))


def params() -> list[Any]:
    out = []
    for case in cases():
        meta = load(case)
        out.append(pytest.param(case, "docker", id=f"{case.name}-docker",
                                marks=[pytest.mark.slow, pytest.mark.docker]))
        # The local isolation is graded only where it can contain the case (root; a private
        # file-system view where the case needs one); the docker variant above always runs.
        # A case it cannot contain here is not generated at all: no skipped test stands for it.
        needs = {"private-fs": private_fs_supported, "private-net": private_network_supported}
        contained = IS_ROOT and meta["local"] and (
            "local_requires" not in meta or needs[meta["local_requires"]]())
        if contained:
            out.append(pytest.param(case, "local", id=f"{case.name}-local", marks=[pytest.mark.slow]))
    return out


def test_the_corpus_covers_the_issue() -> None:
    names = {c.name for c in cases()}
    wanted = {"fork-bomb", "memory-bomb", "cpu-spin", "flood", "escape-daemon", "kill-all", "search-reference",
              "exec-reference", "overwrite-reports", "listen-no-accept", "make-hangs", "make-fills-disk",
              "too-large", "phone-home", "mqueue-flood"}
    assert wanted <= names, f"missing: {sorted(wanted - names)}"
    from grader import catalogue

    for case in cases():
        meta = load(case)
        assert meta["lab"] in catalogue.LABS and meta["why"], case.name
        ids = {c.id for c in catalogue.checks(meta["lab"])}
        if meta["max_score"] is None:
            assert meta["passes"] and set(meta["passes"]) <= ids, case.name
        else:
            assert meta["max_score"] in (0, 5), case.name
        assert set(meta.get("feedback", {})) <= ids, case.name
        assert meta["local"] or meta.get("local_why"), f"{case.name}: say why the local isolation cannot contain it"
        assert "Makefile" in lab_files(case, meta["lab"]), case.name
        # the huge tree is made at run time: nothing large is committed
        assert sum(p.stat().st_size for p in case.rglob("*") if p.is_file()) < 256 << 10, case.name


def test_queues_left_sees_and_removes_a_queue_a_grading_left() -> None:
    import ctypes

    class Attr(ctypes.Structure):
        _fields_ = [("flags", ctypes.c_long), ("maxmsg", ctypes.c_long), ("msgsize", ctypes.c_long),
                    ("curmsgs", ctypes.c_long), ("pad", ctypes.c_long * 4)]

    libc = ctypes.CDLL(None, use_errno=True)
    prefix = f"/labgrade-test-{uuid.uuid4().hex[:8]}-"
    attr = Attr(0, 1, 1, 0)
    for i in (0, 2):
        mqd = libc.mq_open(f"{prefix}{i}".encode(), os.O_CREAT | os.O_RDWR, 0o600, ctypes.byref(attr))
        assert mqd >= 0, os.strerror(ctypes.get_errno())
        libc.mq_close(mqd)
    assert queues_left(prefix, most=8) == [f"{prefix}0", f"{prefix}2"]
    assert queues_left(prefix, most=8) == []  # removed once seen


@pytest.mark.parametrize(("case", "isolation"), params())
def test_hostile_case(case: Path, isolation: str, gradings: Gradings) -> None:
    meta = load(case)
    r = gradings.get(case, isolation)
    assert r["rc"] is not None and r["seconds"] <= BOUND, (
        f"grading took {r['seconds']:.0f} s, more than {BOUND:.0f} s: {r['stderr']}")
    assert r["rc"] in (0, 3), f"exit status {r['rc']} (0 or 3: graded): {r['stderr']}"
    s = r["summary"]
    assert s is not None, r["stderr"]
    assert s["gradable"] and s["lab"] == meta["lab"]
    checks = {c["id"]: c for c in s["checks"]}
    said = next((checks[cid]["feedback"] for cid in meta.get("feedback", {})), "")
    print(f"{case.name} [{isolation}]: {s['score']}/{s['max_score']} in {r['seconds']:.1f} s; "
          + " ".join(said.split())[:400])  # shown by pytest -rP: the corpus table
    table = "\n".join(f"{c['id']}: {c['status']} {c['score']}/{c['max_score']}: {c['feedback'][:300]}"
                      for c in s["checks"])
    if meta["max_score"] is None:
        wrong = {cid: checks[cid]["feedback"][:600] for cid in meta["passes"] if checks[cid]["status"] != "passed"}
        assert not wrong, f"{case.name} serves correctly and must keep these checks: {wrong}"
    else:
        assert s["score"] <= meta["max_score"], f"{case.name} scored {s['score']} > {meta['max_score']}:\n{table}"
    for cid, text in meta.get("feedback", {}).items():
        assert checks[cid]["status"] == "failed", f"{cid} should fail:\n{table}"
        assert text in checks[cid]["feedback"], f"the feedback of {cid} should say {text!r}:\n{checks[cid]['feedback']}"
    for text in meta.get("feedback_any", []):
        assert any(text in c["feedback"] for c in s["checks"] if c["status"] == "failed"), (
            f"no feedback says {text!r}:\n{table}")
    for word in meta.get("forbidden", []):
        said = [cid for cid, c in checks.items() if word in c["feedback"]]
        assert not said, f"{case.name} reports {word} in {said}:\n{table}"
    assert r["canary"] == CANARY, "a report-like file outside the grading was changed"
    assert r.get("reached", []) == [], f"the submission reached the machine's network: {r['reached']}"
    assert r["orphans"] == [], f"processes escaped the grading: {r['orphans']}"
    assert r["queues"] == [], f"message queues outlived the grading: {len(r['queues'])}, e.g. {r['queues'][:3]}"
    assert r["containers"] == [], f"containers or volumes left: {r['containers']}"
    assert gradings.left_after_all == [], f"student processes left after the gradings: {gradings.left_after_all}"


# ------------------------------------------------------------------------------- a mixed batch
NORMAL = {"normal-ref": ROOT / "reference" / "fork", "normal-no-reap": ROOT / "tests" / "servers" / "fork" / "no-reap"}
HOSTILE_IN_BATCH = {"hostile-bomb": "fork-bomb", "hostile-kill": "kill-all", "hostile-daemon": "escape-daemon"}


def in_root_cpu_cgroup() -> bool:
    """Whether this process is in the root CPU cgroup (v1 `cpu` controller, or v2), where the
    kernel's autogroup shares the CPU between sessions."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        hier, controllers, path = line.split(":", 2)
        if hier == "0" or "cpu" in controllers.split(","):
            return path == "/"
    return True


def _scores(summary: dict[str, Any]) -> dict[str, int]:
    return {c["id"]: c["score"] for c in summary["checks"]}


@pytest.mark.slow
@pytest.mark.parametrize("isolation", [pytest.param("docker", marks=pytest.mark.docker)]
                         # the local isolation contains kill(-1) and fork bombs only as root
                         + ([pytest.param("local")] if IS_ROOT else []))
def test_a_hostile_submission_changes_nothing_for_the_others_of_its_batch(isolation: str, tmp_path: Path) -> None:
    prefix = f"hostile-batch-{uuid.uuid4().hex[:8]}-"
    env = {"LABGRADE_SESSION_PREFIX": prefix}
    def lone(student: str) -> dict[str, Any]:
        out = tmp_path / f"alone-{student}.json"
        lab_dir = copy_lab(NORMAL[student], tmp_path / "alone" / student / "fork", "fork")
        r = run_cli(["grade", "fork", str(lab_dir), "--json", str(out), "--quiet", "--isolation", isolation], env=env)
        assert r["rc"] == 0, r["stderr"]
        return validate_summary(json.loads(out.read_text()))

    with ThreadPoolExecutor(len(NORMAL)) as pool:  # each alone in its own process; nothing hostile beside them
        alone = dict(zip(NORMAL, pool.map(lone, NORMAL), strict=True))
    # Two at a time where gradings do not share one CPU cgroup: docker (a container each), or local
    # in the machine's root cgroup (the kernel's autogroup gives each session its share). Local
    # gradings inside a container share its cgroup, where autogroup does not apply: a fork bomb
    # beside a correct server takes the CPU its timing checks need (seen: escape-daemon lost
    # `concurrency`), so there the batch runs one at a time and proves what follows a hostile one.
    # One at a time, only what outlives its grading could reach the next: escape-daemon tries to
    # (the corpus's own gradings prove that none of them leaves anything, test_hostile_case); the
    # fork bomb and the killer add 90 s there and nothing a sequential batch could show.
    jobs = "2" if isolation == "docker" or in_root_cpu_cgroup() else "1"
    hostile = HOSTILE_IN_BATCH if jobs == "2" else {"hostile-daemon": HOSTILE_IN_BATCH["hostile-daemon"]}
    root = tmp_path / "class"
    for student, src in NORMAL.items():
        copy_lab(src, root / student / "fork", "fork")
    for student, case in hostile.items():
        materialize(HOSTILE / case, root / student / "fork")
    out = world_readable_dir("labgrade-hostile-batch-")
    try:
        r = run_cli(["batch", str(root), "--out", str(out), "--labs", "fork", "--isolation", isolation,
                     "--jobs", jobs], env=env, limit=3 * BOUND)
        assert r["rc"] == 0, r["stderr"]
        graded = {st: validate_summary(json.loads((out / st / "fork.json").read_text()))
                  for st in [*NORMAL, *hostile]}
    finally:
        shutil.rmtree(out, ignore_errors=True)
    for student in NORMAL:
        assert _scores(graded[student]) == _scores(alone[student]), (
            f"{student}: alone {_scores(alone[student])}, in the batch {_scores(graded[student])}")
    for student, case in hostile.items():
        meta = load(HOSTILE / case)
        if meta["max_score"] is not None:
            assert graded[student]["score"] <= meta["max_score"], graded[student]
        else:
            passed = {c["id"] for c in graded[student]["checks"] if c["status"] == "passed"}
            assert set(meta["passes"]) <= passed, graded[student]
    assert orphans() == []
    assert wait_for_no_student_processes() == []
    if isolation == "docker":
        assert labelled(prefix) == []
