"""The newcomer's path on a clean clone: the images build with no step of one's own (the wheels
Debian lacks are in the repository, pinned by hash), `docker compose run --rm grade` says where
the results are on the host and leaves them to the user, and `make` leaves nothing for git.

Fast, no Docker: the parts are checked here; the whole path (a fresh clone, then `docker compose
run --rm grade` by a user of the docker group and by root) needs Compose on the host, and was
tried by hand."""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from support import ROOT

from grader import batch, hostpaths
from grader.errors import IsolationError
from grader.isolation import docker as dockeriso

WHEELS = ROOT / "images" / "wheels"


# ----------------------------------------------------------------------------- the wheels

def test_the_wheels_are_in_the_repository_and_match_their_hashes() -> None:
    pins = [line.split() for line in (WHEELS / "requirements.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    assert {p[0].split("==")[0] for p in pins} == {"pytest-json-report", "pytest-metadata"}
    for req, hash_ in pins:
        name, ver = req.split("==")
        (whl,) = WHEELS.glob(f"{name.replace('-', '_')}-{ver}-*.whl")
        assert hash_ == "--hash=sha256:" + hashlib.sha256(whl.read_bytes()).hexdigest(), whl.name
    dockerfile = (ROOT / "images" / "Dockerfile").read_text()
    install = re.search(r"RUN pip install [^\n]*--require-hashes[^\n]*", dockerfile)
    assert install and "--no-index" in install.group(0), "the images install the wheels offline, hashes checked"


def _ignored_by_gitignore(paths: list[str]) -> set[str]:
    """The paths that .gitignore's patterns ignore, matched as git does for the kinds of pattern it
    holds (a name anywhere, `dir/`, an anchored path with `*` and `**`), for where git is absent
    (the test image has neither git nor .git)."""
    rules = []
    for line in (ROOT / ".gitignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        assert not line.startswith("!"), "negated patterns: teach this matcher, or run the test with git"
        is_dir, pat = line.endswith("/"), line.rstrip("/")
        anchored = pat.startswith("/") or "/" in pat
        rx = "".join(".*" if part == "**" else re.escape(part).replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
                     .replace(r"\[", "[").replace(r"\]", "]") for part in re.split(r"(\*\*)", pat.lstrip("/")))
        rules.append((re.compile(rx + "$"), anchored, is_dir))
    out = set()
    for path in paths:
        parts = path.split("/")
        for rx, anchored, is_dir in rules:
            if anchored:
                hit = any(rx.match("/".join(parts[:i])) for i in range(1, len(parts) + (0 if is_dir else 1)))
            else:
                names = parts[:-1] if is_dir else parts
                hit = any(rx.match(n) for n in names)
            if hit:
                out.add(path)
    return out


def test_git_keeps_the_wheels_and_ignores_build_products() -> None:
    ignored = ["assignments/fork/server", "assignments/fork/server.o", "reference/select/netlib.o",
               "submissions/alice/thread/server", "submissions/bob/fork/server.o",
               "tests/servers/fork/no-reap/server", "tests/servers/select/build-error/echoserver", "results/x.json"]
    kept = ["images/wheels/requirements.txt", *(f"images/wheels/{w.name}" for w in WHEELS.glob("*.whl")),
            "images/wheels-grader/requirements.txt",
            *(f"images/wheels-grader/{w.name}" for w in (ROOT / "images" / "wheels-grader").glob("*.whl")),
            "assignments/fork/server.c", "tests/servers/fork/no-reap/server.c"]
    assert _ignored_by_gitignore([*ignored, *kept]) == set(ignored)
    git = shutil.which("git") and subprocess.run(["git", "-C", str(ROOT), "rev-parse"], capture_output=True)
    if git and git.returncode == 0:
        r = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "--no-index", *ignored, *kept],
                           capture_output=True, text=True)
        assert set(r.stdout.split()) == set(ignored)  # and git itself agrees


# ----------------------------------------------------------------------------- the results

def _job_files(out: Path, jobs: list[batch.Job]) -> list[Path]:
    files = []
    for j in jobs:
        dest = batch.summary_path(out, j)
        dest.parent.mkdir(parents=True, exist_ok=True)
        for f in (dest, dest.parent / f"{j.lab}.results.json"):
            f.write_text("{}\n")
            files.append(f)
    for name in ("gradebook.csv", "junit.xml"):
        (out / name).write_text("x\n")
        files.append(out / name)
    return files


@pytest.mark.skipif(os.geteuid() != 0, reason="a batch hands its results over only when it runs as root")
def test_results_of_a_root_batch_go_to_the_owner_of_out_or_of_the_class(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    jobs = [batch.Job("alice", "fork", tmp_path), batch.Job("bob", "select", tmp_path)]
    monkeypatch.delenv(batch.RESULTS_OWNER_ENV, raising=False)
    # 1. --out belongs to a user: what the batch wrote becomes theirs, and nothing else
    out = tmp_path / "out"
    out.mkdir()
    os.chown(out, 61990, 61990)
    files = _job_files(out, jobs)
    other = out / "notes.txt"
    other.write_text("the instructor's own\n")
    elsewhere = tmp_path / "elsewhere.txt"
    elsewhere.write_text("not the batch's\n")
    (out / "carol").mkdir()
    (out / "carol" / "fork.json").symlink_to(elsewhere)  # never followed
    batch.hand_over(out, [*jobs, batch.Job("carol", "fork", tmp_path)])
    for f in [*files, out / "alice", out / "bob"]:
        assert (f.stat().st_uid, f.stat().st_gid) == (61990, 61990), f
    assert other.stat().st_uid == 0 and elsewhere.stat().st_uid == 0
    # 2. --out is root's (Compose made it): the owner of $LABGRADE_RESULTS_OWNER (the class)
    out2, klass = tmp_path / "out2", tmp_path / "class"
    out2.mkdir()
    klass.mkdir()
    os.chown(klass, 61991, 61992)
    files = _job_files(out2, jobs)
    batch.hand_over(out2, jobs)
    assert all(f.stat().st_uid == 0 for f in files), "no owner named: they stay root's"
    monkeypatch.setenv(batch.RESULTS_OWNER_ENV, str(klass))
    batch.hand_over(out2, jobs)
    assert all((f.stat().st_uid, f.stat().st_gid) == (61991, 61992) for f in [*files, out2])
    # 3. everything root's (root runs it on a root-owned checkout): root's they stay
    out3 = tmp_path / "out3"
    out3.mkdir()
    files = _job_files(out3, jobs)
    monkeypatch.setenv(batch.RESULTS_OWNER_ENV, str(out3))
    assert batch.results_owner(out3) is None
    batch.hand_over(out3, jobs)
    assert all(f.stat().st_uid == 0 for f in files)


def test_the_compose_grade_service_names_the_owner_of_its_results() -> None:
    grade = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["grade"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in grade["volumes"]}
    owner = grade["environment"][batch.RESULTS_OWNER_ENV]
    assert mounts[owner] == "./submissions" and mounts["/results"] == "./results"


class _FakeClient:
    def __init__(self, mounts: list[dict[str, Any]]) -> None:
        self.api = self
        self.mounts = mounts

    def inspect_container(self, cid: str) -> dict[str, Any]:
        assert cid == "c" * 64
        return {"Mounts": self.mounts}

    def close(self) -> None:
        pass


def test_the_batch_names_the_host_path_of_its_results(monkeypatch: pytest.MonkeyPatch) -> None:
    mounts = [{"Type": "bind", "Source": "/home/u/labgrade/results", "Destination": "/results"},
              {"Type": "bind", "Source": "/home/u/labgrade/submissions", "Destination": "/submissions"},
              {"Type": "volume", "Source": "/var/lib/docker/volumes/v/_data", "Destination": "/results/deep"}]
    monkeypatch.setattr(hostpaths, "own_container_id", lambda: "c" * 64)
    monkeypatch.setattr(dockeriso, "client", lambda timeout=60: _FakeClient(mounts))
    assert hostpaths.host_path(Path("/results")) == Path("/home/u/labgrade/results")
    assert hostpaths.host_path(Path("/results/alice/fork.json")) == Path("/home/u/labgrade/results/alice/fork.json")
    assert hostpaths.host_path(Path("/resultsx")) is None and hostpaths.host_path(Path("/tmp")) is None
    assert hostpaths.shown_path(Path("/results")) == \
        "/home/u/labgrade/results (on the host; /results in this container)"
    # outside a container, or when the engine does not answer: the path as it is
    monkeypatch.setattr(hostpaths, "own_container_id", lambda: None)
    assert hostpaths.shown_path(Path("/srv/results")) == "/srv/results"
    monkeypatch.setattr(hostpaths, "own_container_id", lambda: "c" * 64)

    def unreachable(timeout: float = 60) -> Any:
        raise IsolationError("cannot reach the Docker engine")

    monkeypatch.setattr(dockeriso, "client", unreachable)
    assert hostpaths.shown_path(Path("/results")) == "/results"
