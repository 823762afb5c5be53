"""The instructor's workflow: the student bundle (`labgrade handout`), the Gradescope autograder
(`labgrade gradescope`), GitHub Classroom's points (`labgrade classroom`), and a class graded by
`labgrade batch`: parallel, resumable after a kill, the same scores as grading one by one, and
outputs (gradebook.csv, junit.xml, Gradescope JSON) that parse.

Markers: unmarked tests take seconds; `slow` ones grade submissions; `docker` ones need the
engine and `labgrade-grader:latest` (the Compose test also needs the `docker compose` CLI, which
the test image does not have: there the workspace is brought up through the engine's API).
"""
from __future__ import annotations

import base64
import contextlib
import csv
import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import uuid
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import pytest
from support import ROOT, copy_lab, lab_files

from grader import batch, catalogue
from grader.gradescope_zip import build_wheel, failure_results, find_lab_dir, validate_results
from grader.gradescope_zip import run as gradescope_run
from grader.handout import (
    build_handout,
    classroom_result,
    dockerfile_stages,
    is_build_product,
    is_hidden_check,
    tree_sha256,
    visible_points,
)
from grader.schema import validate_summary

GRADER_IMAGE = os.environ.get("LABGRADE_IMAGE", "labgrade-grader:latest")
# Debian's python3-docker 5.0 compares versions with distutils
DOCKER_WARNINGS = pytest.mark.filterwarnings("ignore:distutils Version classes:DeprecationWarning")
# Lines of a reference server that the public grader quotes on purpose in its feedback (a hint
# is not a leak); each must really be in grader/checks/, so this list cannot hide a leak elsewhere.
QUOTED_IN_HINTS = {"while (waitpid(-1, NULL, WNOHANG) > 0)"}


def _cli(*args: str, cwd: Path | None = None, timeout: float = 600,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "grader", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout, env=env)


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("handout") / "bundle"
    t0 = time.monotonic()
    build_handout(out)
    print(f"bundle built in {time.monotonic() - t0:.2f} s")
    return out


# ====================================================================== the student bundle

def test_bundle_layout(bundle: Path) -> None:
    for lab in catalogue.LABS:
        for name in ("README.md", "Makefile", "server.c", "netlib.c", "netlib.h"):
            assert (bundle / "assignments" / lab / name).is_file(), (lab, name)
            assert (bundle / "assignments" / lab / name).read_bytes() == \
                (ROOT / "assignments" / lab / name).read_bytes()
    for f in ("README.md", "docker-compose.yml", ".github/workflows/classroom.yml", "images/Dockerfile",
              "images/lab-entrypoint", "images/bootstrap-base", "images/labgrade/pyproject.toml",
              "images/labgrade/grader/checks/test_fork.py"):
        assert (bundle / f).is_file(), f
    assert os.access(bundle / "images" / "lab-entrypoint", os.X_OK)
    readme = (bundle / "README.md").read_text()
    for lab in catalogue.LABS:  # the visible checks' points, from the catalogue
        assert f"| `{lab}` |" in readme and f"| {visible_points(lab)} |" in readme
    assert "{{" not in readme
    # only what students need: no tests, no demo class, no instructor material
    tops = {p.name for p in bundle.iterdir()}
    assert tops == {"README.md", "docker-compose.yml", "assignments", "images", ".github", ".gitignore",
                    ".labgrade-handout"}


def test_workspace_image_is_the_repositorys_lab_stage(bundle: Path) -> None:
    repo = dockerfile_stages((ROOT / "images" / "Dockerfile").read_text())
    ours = dockerfile_stages((bundle / "images" / "Dockerfile").read_text())
    assert ours["system"] == repo["system"] and ours["lab"] == repo["lab"]
    assert set(ours) == {"public-src", "system", "lab"}  # no grader stage: no reference, no hidden checks
    assert not re.search(r"(?im)^\s*COPY\s+(\S+\s+)*reference", (bundle / "images" / "Dockerfile").read_text())


def _reference_only_files() -> list[Path]:
    """Reference files that differ from what students get (the helper library and the Makefile are
    handed out as they are)."""
    out = []
    for f in _files(ROOT / "reference"):
        if is_build_product(f):
            continue
        rel = f.relative_to(ROOT / "reference")
        handed_out = ROOT / "assignments" / rel
        if not handed_out.is_file() or handed_out.read_bytes() != f.read_bytes():
            out.append(f)
    return out


def _distinctive_lines(lab: str) -> set[str]:
    """Lines of reference/LAB/server.c that nothing students get contains (not even as part of a line)."""
    public = "\n".join(f.read_text(errors="replace") for f in _files(ROOT / "assignments"))
    lines = {line.strip() for line in (ROOT / "reference" / lab / "server.c").read_text().splitlines()}
    return {line for line in lines if len(line) >= 16 and line not in public} - QUOTED_IN_HINTS


def test_bundle_contains_no_reference_source(bundle: Path) -> None:
    ref_files = _reference_only_files()
    assert {f.name for f in ref_files} >= {"server.c"} and len(ref_files) >= 3
    ref_hashes = {_sha(f.read_bytes()): f for f in ref_files}
    distinctive = {lab: _distinctive_lines(lab) for lab in catalogue.LABS}
    for lab, lines in distinctive.items():  # the detector has something to detect
        assert len(lines) >= 20, lab
    checks_text = "".join(f.read_text() for f in (ROOT / "grader" / "checks").glob("*.py"))
    assert all(q in checks_text for q in QUOTED_IN_HINTS)
    for f in _files(bundle):
        data = f.read_bytes()
        assert _sha(data) not in ref_hashes, f"{f} is {ref_hashes[_sha(data)]}"
        text = data.decode(errors="replace")
        for ref in ref_files:
            assert ref.read_bytes() not in data, f"{f} embeds {ref}"
        for lab, lines in distinctive.items():
            hits = sorted(line for line in lines if line in text)
            assert not hits, f"{f.relative_to(bundle)} holds lines of reference/{lab}/server.c: {hits[:3]}"
        assert "reference" not in f.relative_to(bundle).parts


def _fake_course(tmp: Path) -> Path:
    """A copy of the course repository with build products and hidden checks planted in it."""
    root = tmp / "course"
    for d in ("assignments", "grader", "images", "reference"):
        shutil.copytree(ROOT / d, root / d, ignore=shutil.ignore_patterns("__pycache__", "server", "*.o"))
    for f in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / f, root / f)
    fork = root / "assignments" / "fork"
    shutil.copy2("/bin/true", fork / "server")
    (fork / "server.o").write_bytes(b"\x7fELF object")
    (fork / "a.out").write_bytes(b"\x7fELF")
    (fork / "mystery").write_bytes(b"\x7fELF executable without a telling name")
    (fork / "__pycache__").mkdir()
    (fork / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"")
    hidden = root / "grader" / "checks" / "hidden"
    hidden.mkdir()
    (hidden / "test_secret.py").write_text("SECRET_HIDDEN_CHECK = 1\n")
    (root / "grader" / "checks" / "test_fork_hidden.py").write_text("SECRET_HIDDEN_CHECK = 2\n")
    (root / "grader" / "checks" / "more_hidden").mkdir()
    (root / "grader" / "checks" / "more_hidden" / "x.py").write_text("SECRET_HIDDEN_CHECK = 3\n")
    return root


def test_no_build_products_and_no_hidden_checks(tmp_path: Path) -> None:
    course = _fake_course(tmp_path)
    out = tmp_path / "bundle"
    build_handout(out, source=course)
    names = {p.relative_to(out).as_posix() for p in _files(out)}
    assert "assignments/fork/server.c" in names
    for planted in ("assignments/fork/server", "assignments/fork/server.o", "assignments/fork/a.out",
                    "assignments/fork/mystery"):
        assert planted not in names
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    assert not any("hidden" in n for n in names if "/checks/" in n), sorted(n for n in names if "hidden" in n)
    assert all("SECRET_HIDDEN_CHECK" not in f.read_text(errors="replace") for f in _files(out))
    # the convention, as images/Dockerfile states it
    assert is_hidden_check(Path("grader/checks/hidden/test_x.py"))
    assert is_hidden_check(Path("grader/checks/test_fork_hidden.py"))
    assert is_hidden_check(Path("grader/checks/sub/hidden_thing/x.py"))
    assert not is_hidden_check(Path("grader/checks/test_fork.py"))
    assert not is_hidden_check(Path("grader/hidden.py"))
    # a second run refuses to overwrite, --force replaces a bundle (and only a bundle)
    r = _cli("handout", str(out), "--source", str(course))
    assert r.returncode == 2 and "not empty" in r.stderr
    assert _cli("handout", str(out), "--source", str(course), "--force").returncode == 0
    other = tmp_path / "precious"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    r = _cli("handout", str(other), "--source", str(course), "--force")
    assert r.returncode == 2 and (other / "keep.txt").is_file()
    r = _cli("handout", str(course / "grader" / "x"), "--source", str(course))
    assert r.returncode == 2


@pytest.mark.slow  # builds the grader's wheel with pip (6-7 s): not for the edit-test loop
def test_bundle_public_grader_builds_a_wheel_without_hidden_material(bundle: Path, tmp_path: Path) -> None:
    wheel = build_wheel(bundle / "images" / "labgrade", tmp_path)
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        assert "grader/checks/test_fork.py" in names
        assert not any("hidden" in n or "reference" in n for n in names)
        entry = next(n for n in names if n.endswith("entry_points.txt"))
        assert "labgrade = grader.cli:main" in z.read(entry).decode()


# ---------------------------------------------------------------- the bundle's Compose file

@pytest.mark.docker
@DOCKER_WARNINGS
def test_bundle_compose_brings_up_a_workspace(bundle: Path, tmp_path: Path) -> None:
    if shutil.which("docker") is None or subprocess.run(["docker", "compose", "version"],
                                                        capture_output=True).returncode != 0:
        # Inside the test container there is no Compose CLI, and Compose's bind mounts would name
        # paths of this container that the engine cannot see: bring the workspace up with the
        # engine's API instead, exactly as the compose file describes it.
        _bundle_workspace_through_the_api(bundle)
        return
    ws = tmp_path / "bundle"
    shutil.copytree(bundle, ws)  # the workspace writes into the lab directory
    compose = ["docker", "compose", "-f", str(ws / "docker-compose.yml"),
               "-p", f"labgrade-handout-{uuid.uuid4().hex[:8]}"]
    cfg = subprocess.run([*compose, "config", "--format", "json"], capture_output=True, text=True, timeout=60)
    assert cfg.returncode == 0, cfg.stderr
    services = json.loads(cfg.stdout)["services"]
    assert set(services) == set(catalogue.LABS)
    for lab, svc in services.items():
        assert svc["network_mode"] == "none" and svc["build"]["target"] == "lab"
        (vol,) = svc["volumes"]
        assert vol["target"] == "/home/student/lab" and Path(vol["source"]) == ws / "assignments" / lab
    t0 = time.monotonic()
    b = subprocess.run([*compose, "build", "fork"], capture_output=True, text=True, timeout=1800,
                       env={**os.environ, "COMPOSE_BAKE": "false"})
    assert b.returncode == 0, (b.stdout + b.stderr)[-3000:]
    build_s = time.monotonic() - t0
    r = subprocess.run([*compose, "run", "--rm", "-T", "fork", "sh", "-c", "make && make check"],
                       capture_output=True, text=True, timeout=600)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    assert re.search(r"build\s+.\s*PASS", out) and re.search(rf"total\s.*5/{visible_points('fork')}", out), out[-3000:]
    assert (ws / "assignments" / "fork" / "server").is_file()  # built inside, visible outside
    who = subprocess.run([*compose, "run", "--rm", "-T", "select", "sh", "-c",
                          "id -un; ls /opt/labgrade 2>&1; python3 -c 'import grader, os; "
                          "print(os.path.dirname(grader.__file__))'"],
                         capture_output=True, text=True, timeout=300)
    assert who.returncode == 0, who.stderr
    assert who.stdout.splitlines()[0] == "student" and "No such file" in who.stdout
    print(f"workspace image build (from cache when warm) {build_s:.1f} s")


def _bundle_workspace_through_the_api(bundle: Path) -> None:
    import docker

    from grader.isolation import docker as dockeriso

    text = (bundle / "docker-compose.yml").read_text()
    for lab in catalogue.LABS:  # the three services, each mounting its lab at the workspace
        assert re.search(rf"^  {lab}:\n(    .*\n)*?      - ./assignments/{lab}:/home/student/lab$", text, re.M), lab
    assert "network_mode: none" in text and "target: lab" in text
    client = docker.from_env()
    tag = f"labgrade-workspace-test:{uuid.uuid4().hex[:8]}"
    # .ci/run built the workspace image of a bundle with Compose, as students do, and names it by that
    # bundle's digest: the same digest is the same build, which the classic builder would repeat in 80 s
    # (from the same checkout, `labgrade handout` writes the same bundle: a digest that differs is a bug)
    digest, _, built = os.environ.get("LABGRADE_BUILT_WORKSPACE", "").partition("=")
    if built:
        assert digest == tree_sha256(bundle), "the bundle .ci/run built from this checkout is not this one"
    reuse = bool(built) and dockeriso.image_present(built)
    print(f"workspace image: {'built by .ci/run from the same bundle, ' + built[:19] if reuse else 'built here'}")
    try:
        if reuse:
            client.images.get(built).tag(tag)  # a tag of its own, removed below; the image stays
        else:
            client.images.build(path=str(bundle), dockerfile="images/Dockerfile", target="lab", tag=tag, rm=True)
        ct = client.containers.create(tag, ["sh", "-c", "cp -r /tmp/in/lab/. . && make && make check"],
                                      user="student", network_mode="none", working_dir="/home/student/lab")
        try:
            ct.put_archive("/tmp", _tar_in(bundle / "assignments" / "fork"))
            ct.start()
            ct.wait(timeout=600)
            out = ct.logs().decode(errors="replace")
        finally:
            ct.remove(force=True)
        total = rf"total\s.*5/{visible_points('fork')}"
        assert re.search(r"build\s+.\s*PASS", out) and re.search(total, out), out[-3000:]
    finally:
        client.images.remove(tag, force=not reuse)


def _tar_in(lab: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("in")
        info.type, info.mode = tarfile.DIRTYPE, 0o777
        tar.addfile(info)
        for p in sorted(lab.rglob("*")):
            ti = tar.gettarinfo(str(p), arcname=f"in/lab/{p.relative_to(lab)}")
            ti.uid = ti.gid = 1000
            ti.mode |= 0o044
            if p.is_file():
                with p.open("rb") as f:
                    tar.addfile(ti, f)
            else:
                tar.addfile(ti)
    return buf.getvalue()


# ====================================================================== GitHub Classroom

def _workflow_steps(text: str) -> list[dict[str, str]]:
    """The steps of the workflow (name, id, if, run, uses): with PyYAML when present, else by
    reading the simple layout this workflow keeps."""
    try:
        import yaml

        doc = yaml.safe_load(text)
        (job,) = doc["jobs"].values()
        return [{k: str(v) for k, v in step.items() if isinstance(v, str)} for step in job["steps"]]
    except ImportError:
        pass
    steps: list[dict[str, str]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("      - "):  # a new step; its first key follows the dash
            steps.append({})
            line = "        " + line[8:]
        m = re.match(r"^ {8}([\w-]+):(?: (.*))?$", line)
        i += 1
        if not (steps and m):
            continue
        key, val = m.group(1), (m.group(2) or "").strip()
        if val == "|":  # a block scalar: the lines indented deeper than the key
            block = []
            while i < len(lines) and (not lines[i].strip() or lines[i].startswith(" " * 10)):
                block.append(lines[i][10:])
                i += 1
            steps[-1][key] = "\n".join(block).strip() + "\n"
        elif val:
            steps[-1][key] = val[1:-1] if len(val) > 1 and val[0] == val[-1] == '"' else val
    return steps


def _student_repo(tmp: Path, bundle: Path, source: str) -> Path:
    """A student's repository: every lab at the top but the last, which stays under assignments/
    (the workflow finds both), with the bundle's images/ (the checks' source)."""
    repo = tmp / f"repo-{source}"
    shutil.copytree(bundle / "images", repo / "images")
    shutil.copytree(bundle / ".github", repo / ".github")
    for lab in catalogue.LABS:
        dest = f"assignments/{lab}" if lab == catalogue.LABS[-1] else lab
        src = ROOT / ("assignments" if source == "skeleton" else "reference") / lab
        shutil.copytree(src, repo / dest, ignore=shutil.ignore_patterns("server", "*.o"))
    return repo


@pytest.mark.slow
@pytest.mark.parametrize("source", ["skeleton", "reference"])
def test_classroom_workflow_commands_run_locally(bundle: Path, tmp_path: Path, source: str) -> None:
    """The workflow's own `run:` steps, in order, in a student repository, with the bundle's public
    grader as `labgrade` (what its install step installs): the skeletons get the build points and
    fail the run; the references pass with full (visible) marks."""
    wf = (bundle / ".github" / "workflows" / "classroom.yml").read_text()
    steps = _workflow_steps(wf)
    assert [s.get("id") for s in steps if s.get("id")] == list(catalogue.LABS)
    reporter = next(s for s in steps if "uses" in s and "autograding-grading-reporter" in s["uses"])
    assert reporter.get("if") == "always()"
    assert "env:" in wf and all(f"{lab.upper()}_RESULTS" in wf for lab in catalogue.LABS)
    assert f"runners: {','.join(catalogue.LABS)}" in wf
    assert "name: Autograding Tests" in wf  # the check run the reporter updates
    install = next(s for s in steps if s.get("name") == "Install the checks")
    assert "$LABGRADE_SOURCE" in install["run"] and "LABGRADE_SOURCE: ./images/labgrade" in wf

    repo = _student_repo(tmp_path, bundle, source)
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "labgrade").write_text(f"#!/bin/sh\nexec {sys.executable} -m grader \"$@\"\n")
    (shim / "labgrade").chmod(0o755)
    runner_temp = tmp_path / "runner-temp"
    runner_temp.mkdir()
    gh_out = tmp_path / "github-output"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABGRADE_", "PYTEST"))}
    env.update(PATH=f"{shim}:{env['PATH']}", PYTHONPATH=str(repo / "images" / "labgrade"),
               RUNNER_TEMP=str(runner_temp), GITHUB_OUTPUT=str(gh_out), LABGRADE_SOURCE="./images/labgrade")
    log = ""
    last_rc = None
    for step in steps:
        if "run" not in step or step is install:
            continue
        r = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]], cwd=repo,
                           env=env, capture_output=True, text=True, timeout=900)
        log += r.stdout + r.stderr
        if step.get("id") in catalogue.LABS:
            assert r.returncode == 0, (step["id"], r.stdout[-2000:], r.stderr[-2000:])
        last_rc = r.returncode
    # the checks that ran are the bundle's copy, never this checkout's
    where = subprocess.run([sys.executable, "-c", "import grader; print(grader.__file__)"], cwd=repo, env=env,
                           capture_output=True, text=True).stdout.strip()
    assert Path(where) == repo / "images" / "labgrade" / "grader" / "__init__.py"
    full = sum(visible_points(lab) for lab in catalogue.LABS)
    got = sum(catalogue.checks(lab)[0].points for lab in catalogue.LABS) if source == "skeleton" else full
    assert f"Points {got}/{full}" in log, log[-3000:]
    assert last_rc == (1 if source == "skeleton" else 0)
    results = [json.loads(base64.b64decode(line.split("=", 1)[1])) for line in gh_out.read_text().splitlines()
               if line.startswith("result=")]
    per_lab = results[:len(catalogue.LABS)]
    for lab, res in zip(catalogue.LABS, per_lab, strict=True):
        assert res["version"] == 1 and res["max_score"] == visible_points(lab)
        assert {t["name"] for t in res["tests"]} == {f"{lab}: {c.id}" for c in catalogue.checks(lab)
                                                     if c.visibility == "visible"}
        assert not any("environment error" in t["name"] for t in res["tests"]), res
        if source == "skeleton":
            assert res["status"] == "fail" and sum(t["score"] for t in res["tests"]) == 5
            assert [t["name"] for t in res["tests"] if t["status"] == "pass"] == [f"{lab}: build"]
        else:
            assert res["status"] == "pass" and all(t["status"] == "pass" for t in res["tests"])


def test_classroom_result_for_an_ungradable_or_missing_lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    from grader.handout import classroom_report

    r = classroom_result("select", None)
    assert r["status"] == "error" and r["max_score"] == visible_points("select")
    assert r["tests"][0]["score"] == 0
    gh = tmp_path / "out"
    monkeypatch.setenv("GITHUB_OUTPUT", str(gh))
    (tmp_path / "fork.json").write_text("{not json")
    assert classroom_report(["fork", "select"], tmp_path, check=True) == 1
    printed = capsys.readouterr().out
    assert f"Points 0/{visible_points('fork') + visible_points('select')}" in printed
    (line,) = gh.read_text().splitlines()
    doc = json.loads(base64.b64decode(line.removeprefix("result=")))
    assert doc["status"] == "error" and doc["max_score"] == visible_points("fork") + visible_points("select")


# ====================================================================== Gradescope

@pytest.fixture(scope="module")
def fork_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gradescope") / "autograder.zip"
    t0 = time.monotonic()
    r = _cli("gradescope", "fork", "--out", str(out))
    assert r.returncode == 0, r.stderr
    print(f"autograder.zip built in {time.monotonic() - t0:.2f} s")
    return out


@pytest.mark.slow  # builds the grader's wheel with pip (6-7 s): not for the edit-test loop
def test_gradescope_zip_contents(fork_zip: Path) -> None:
    with zipfile.ZipFile(fork_zip) as z:
        infos = {i.filename: i for i in z.infolist()}
        for script in ("setup.sh", "run_autograder"):
            assert (infos[script].external_attr >> 16) & 0o111, script
            assert z.read(script).startswith(b"#!/usr/bin/env bash\n")
        refs = sorted(n for n in infos if n.startswith("reference/"))
        assert refs == sorted(f"reference/fork/{f.name}" for f in (ROOT / "reference" / "fork").iterdir()
                              if f.is_file() and not is_build_product(f))
        assert z.read("reference/fork/server.c") == (ROOT / "reference" / "fork" / "server.c").read_bytes()
        cfg = json.loads(z.read("labgrade/config.json"))
        assert cfg["lab"] == "fork" and cfg["reference_root"] == "/autograder/source/reference"
        reqs = z.read("labgrade/requirements.txt").decode().split()
        assert "pytest-json-report>=1.5" in reqs and not any(r.startswith("docker") for r in reqs)
        assert len([n for n in infos if re.match(r"labgrade/wheels/labgrade-.*\.whl$", n)]) == 1
        assert not any(n.startswith("extra-checks/") for n in infos)
        assert b"grader.gradescope_zip run" in z.read("run_autograder")
    r = subprocess.run(["bash", "-n", "-c", zipfile.ZipFile(fork_zip).read("setup.sh").decode()])
    assert r.returncode == 0


@pytest.mark.slow  # builds the grader's wheel with pip (6-7 s): not for the edit-test loop
def test_gradescope_zip_carries_extra_checks(tmp_path: Path) -> None:
    extra = tmp_path / "hidden"
    extra.mkdir()
    (extra / "test_more.py").write_text("LAB = 'fork'\n")
    out = tmp_path / "ag.zip"
    r = _cli("gradescope", "fork", "--out", str(out), "--extra-checks", str(extra))
    assert r.returncode == 0, r.stderr
    with zipfile.ZipFile(out) as z:
        assert z.read("extra-checks/test_more.py") == b"LAB = 'fork'\n"
        assert json.loads(z.read("labgrade/config.json"))["extra_checks"] == "/autograder/source/extra-checks"
    assert _cli("gradescope", "fork", "--out", str(out), "--reference-root", str(tmp_path)).returncode == 2


def test_find_lab_dir_layouts(tmp_path: Path) -> None:
    def lab(d: Path) -> Path:
        d.mkdir(parents=True)
        (d / "Makefile").write_text("all:\n")
        return d

    assert find_lab_dir("fork", lab(tmp_path / "a")) == tmp_path / "a"                       # files at the top
    assert find_lab_dir("fork", (lab(tmp_path / "b" / "fork")).parent) == tmp_path / "b" / "fork"
    assert find_lab_dir("fork", lab(tmp_path / "c" / "assignments" / "fork").parents[1]) == \
        tmp_path / "c" / "assignments" / "fork"                                                  # a whole repository
    assert find_lab_dir("fork", lab(tmp_path / "d" / "my-lab").parent) == tmp_path / "d" / "my-lab"  # zipped folder
    assert find_lab_dir("fork", lab(tmp_path / "e" / "x" / "fork").parents[1]) == tmp_path / "e" / "x" / "fork"
    (tmp_path / "f").mkdir()
    assert find_lab_dir("fork", tmp_path / "f") is None


def test_gradescope_results_validator() -> None:
    ok = {"score": 5, "tests": [{"name": "build", "score": 5, "max_score": 5, "status": "passed", "output": "",
                                 "visibility": "visible"}]}
    assert validate_results(ok) is ok
    assert validate_results(failure_results("why"))["score"] == 0
    from grader.errors import ReportError

    for bad in ({"score": "5", "tests": []}, {"score": 1, "tests": []} | {"tests": [{}]},
                {"score": 6, "tests": ok["tests"]},
                {"score": 0, "tests": [dict(ok["tests"][0], status="error", score=0)]},
                {"score": 0, "tests": [dict(ok["tests"][0], visibility="sometimes", score=0)]}):
        with pytest.raises(ReportError):
            validate_results(bad)


@pytest.mark.slow
def test_gradescope_driver_always_writes_results(tmp_path: Path) -> None:
    """run_autograder's Python part, on this machine: a lab in a subdirectory is found and graded
    against the zip's reference; a missing lab and a grader that cannot start still give a
    results.json (score 0, the reason in `output`)."""
    sub = tmp_path / "submission"
    shutil.copytree(ROOT / "reference" / "fork", sub / "fork", ignore=shutil.ignore_patterns("server", "*.o"))
    res = tmp_path / "results" / "results.json"
    assert gradescope_run(lab="fork", submission=sub, results=res, reference_root=ROOT / "reference") == 0
    doc = validate_results(json.loads(res.read_text()))
    assert doc["score"] == 100 and {t["name"] for t in doc["tests"]} == {c.id for c in catalogue.checks("fork")}
    assert next(t for t in doc["tests"] if t["name"] == "vs-reference")["visibility"] == "after_published"

    empty = tmp_path / "empty"
    (empty / "notes").mkdir(parents=True)
    gradescope_run(lab="fork", submission=empty, results=res)
    doc = validate_results(json.loads(res.read_text()))
    assert doc["score"] == 0 and "No `fork` lab found" in doc["output"] and "notes" in doc["output"]

    gradescope_run(lab="fork", submission=sub, results=res, python="/bin/false")
    doc = validate_results(json.loads(res.read_text()))
    assert doc["score"] == 0 and "could not be graded" in doc["output"]


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _dir_files(d: Path, prefix: str) -> dict[str, bytes]:
    return {f"{prefix}{f.relative_to(d).as_posix()}": f.read_bytes() for f in _files(d) if not is_build_product(f)}


@pytest.fixture(scope="module")
def gradescope_image(fork_zip: Path) -> Iterator[tuple[Any, str, str]]:
    """An image laid out like Gradescope's, made the way Gradescope makes one: the zip unpacked in
    /autograder/source, then setup.sh run as root. The base is our grader image with the grader
    and its reference removed (it has the toolchain and Python's dependencies: there is no network
    here to install them, so setup.sh must find them and skip them). Yields (client, image, setup log)."""
    from grader.isolation import docker as dockeriso

    if not dockeriso.engine_available():
        pytest.fail("no Docker engine answers (start one, or deselect with -m 'not docker')", pytrace=False)
    client = dockeriso.client()
    if not dockeriso.image_present(GRADER_IMAGE):
        pytest.fail(f"{GRADER_IMAGE} is missing: docker compose build", pytrace=False)
    script = (
        "set -e; pip uninstall -y -q --break-system-packages labgrade; rm -rf /opt/labgrade; "
        "python3 -c 'import grader' 2>/dev/null && { echo grader still installed; exit 1; }; "
        "mkdir -p /autograder/source /autograder/submission /autograder/results; "
        "python3 -c \"import zipfile; zipfile.ZipFile('/tmp/autograder.zip').extractall('/autograder/source')\"; "
        "cd /autograder/source; t0=$(date +%s.%N); bash ./setup.sh; "
        "echo setup-seconds $(python3 -c \"print(round($(date +%s.%N) - $t0, 1))\"); "
        "stat -c 'mode %a %U' /autograder/source/reference/fork/server.c /autograder/source/reference")
    ct = client.containers.create(GRADER_IMAGE, entrypoint=["bash", "-c", script], network_mode="none",
                                  user="0", environment={"LABGRADE_REFERENCE_ROOT": ""})
    try:
        ct.put_archive("/tmp", _tar({"autograder.zip": fork_zip.read_bytes()}))
        ct.start()
        status = ct.wait(timeout=600)
        log = ct.logs().decode(errors="replace")
        assert (status["StatusCode"] if isinstance(status, dict) else status) == 0, log[-3000:]
        image = ct.commit(repository="labgrade-gradescope-test", tag=uuid.uuid4().hex[:12])
    finally:
        ct.remove(force=True)
    try:
        yield client, image.id, log
    finally:
        client.images.remove(image.id, force=True)


def _gradescope_submit(client: Any, image: str, files: dict[str, bytes], *, ptrace: bool) -> dict[str, Any]:
    ct = client.containers.create(image, entrypoint=["/autograder/run_autograder"], network_mode="none", user="0",
                                  cap_add=["SYS_PTRACE"] if ptrace else None)
    try:
        if files:
            ct.put_archive("/autograder/submission", _tar(files))
        ct.start()
        ct.wait(timeout=900)
        bits, _ = ct.get_archive("/autograder/results/results.json")
        with tarfile.open(fileobj=io.BytesIO(b"".join(bits))) as t:
            member = t.extractfile("results.json")
            assert member is not None
            return validate_results(json.loads(member.read()))
    finally:
        ct.remove(force=True)


@pytest.mark.docker
@DOCKER_WARNINGS
def test_gradescope_setup_in_a_gradescope_like_image(gradescope_image: tuple[Any, str, str]) -> None:
    _, _, log = gradescope_image
    assert "labgrade setup: ready: labgrade" in log
    assert "Requirement already satisfied: pytest" in log  # what is there stays: no network needed
    assert "mode 600 root" in log and "mode 700 root" in log  # the reference is root's only
    print(next(line for line in log.splitlines() if line.startswith("setup-seconds")))


@pytest.mark.docker
@DOCKER_WARNINGS
def test_gradescope_zip_grades_like_gradescope(gradescope_image: tuple[Any, str, str]) -> None:
    """/autograder/run_autograder in fresh containers of that image, network none: the reference
    (in a `fork/` folder) gets full marks, the skeleton (files at the top) the build points, an
    empty submission a score of 0 with the reason."""
    client, image, _ = gradescope_image
    ref = _dir_files(ROOT / "reference" / "fork", "fork/")
    doc = _gradescope_submit(client, image, ref, ptrace=True)
    assert doc["score"] == 100 and all(t["status"] == "passed" for t in doc["tests"]), doc
    assert doc["score"] == sum(t["max_score"] for t in doc["tests"])
    skel = _gradescope_submit(client, image, _dir_files(ROOT / "assignments" / "fork", ""), ptrace=True)
    assert skel["score"] == 5 and [t["name"] for t in skel["tests"] if t["status"] == "passed"] == ["build"]
    empty = _gradescope_submit(client, image, {}, ptrace=True)
    assert empty["score"] == 0 and "No `fork` lab found" in empty["output"]


@pytest.mark.docker
@DOCKER_WARNINGS
def test_gradescope_default_capabilities(gradescope_image: tuple[Any, str, str]) -> None:
    """Docker's default capabilities (no SYS_PTRACE, as on Gradescope): the checks that read another
    uid's /proc/PID/fd links still give verdicts, both ways: the reference keeps all 100 points, a
    parent that keeps connfd loses fd-leak, a child that keeps listenfd loses listenfd-closed."""
    client, image, _ = gradescope_image
    doc = _gradescope_submit(client, image, _dir_files(ROOT / "reference" / "fork", "fork/"), ptrace=False)
    assert doc["score"] == 100 and all(t["status"] == "passed" for t in doc["tests"]), doc
    for bug, check in (("parent-keeps-connfd", "fd-leak"), ("child-keeps-listenfd", "listenfd-closed")):
        files = {f"fork/{n}": data for n, data in lab_files(ROOT / "tests" / "servers" / "fork" / bug, "fork").items()}
        doc = _gradescope_submit(client, image, files, ptrace=False)
        lost = {t["name"].split()[0] for t in doc["tests"] if t["status"] == "failed"}
        assert check in lost and not any("error" in t["name"] for t in doc["tests"]), doc


# ====================================================================== labgrade batch

CLASS_LABS = ("fork", "select", "thread")  # the labs of this class; a lab of the catalogue not here is not in it
CLASS = {  # three students, three labs each: references, skeletons, one-bug servers whose verdicts do
    # not depend on the run (not unlocked-counter: whether its lost updates show in the printed totals,
    # and so its `counter` score, varies from run to run; tsan catches it always). Other legal designs
    # are graded by test_verdicts: a batch grades them as it grades the references.
    "ref": ("reference/fork", "reference/select", "reference/thread"),
    "skel": ("assignments/fork", "assignments/select", "assignments/thread"),
    "bugs1": ("tests/servers/fork/no-reap", "tests/servers/select/busy-poll", "tests/servers/thread/no-detach"),
}
N = len(CLASS) * len(CLASS_LABS)  # submissions of the class


@pytest.fixture(scope="module")
def klass(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("class") / "submissions"
    for student, srcs in CLASS.items():
        for lab, src in zip(CLASS_LABS, srcs, strict=True):
            copy_lab(ROOT / src, root / student / lab, lab)
    return root


def _batch(root: Path, out: Path, *extra: str, timeout: float = 1800) -> tuple[subprocess.CompletedProcess[str], float]:
    t0 = time.monotonic()
    r = _cli("batch", str(root), "--out", str(out), "--isolation", "local", *extra, timeout=timeout)
    return r, time.monotonic() - t0


def _scores(out: Path) -> dict[str, dict[str, Any]]:
    got = {}
    for f in sorted(out.glob("*/*.json")):
        if f.name.endswith(".results.json"):
            continue
        s = validate_summary(json.loads(f.read_text()))
        got[f"{f.parent.name}/{f.stem}"] = {"score": s["score"], "gradable": s["gradable"],
                                            "checks": {c["id"]: c["status"] for c in s["checks"]}}
    return got


def _graded_alone(r: subprocess.CompletedProcess[str], dest: Path) -> str:
    """Why `labgrade grade ... --json dest` did not exit 0: its stderr, and the feedback of each
    check of its summary that is an `error` (exit 3), so that a failure says which check and why."""
    why = r.stderr[-2000:]
    with contextlib.suppress(OSError, ValueError):
        s = json.loads(dest.read_text())
        why += "".join(f"\n{c['id']}: {c['status']}: {c['feedback'][:1500]}" for c in s["checks"]
                       if c["status"] == "error")
    return why


def _feedback(out: Path, sub: str, ids: set[str]) -> dict[str, str]:
    student, lab = sub.split("/")
    s = json.loads((out / student / f"{lab}.json").read_text())
    return {c["id"]: c["feedback"][:400] for c in s["checks"] if c["id"] in ids}


def _settle(klass: Path, tmp: Path, observed: dict[str, list[dict[str, Any]]], got: dict[str, dict[str, Any]],
            got_out: Path) -> list[str]:
    """Submissions whose result `got` differs from every result seen so far are graded alone
    again (twice at most). A result that one of those gradings also gives is the grader's own
    variance on this loaded machine (a timing check on the edge), not the batch's doing: noted
    and returned. A result no lone grading reproduces fails the test."""
    notes = []
    for sub, value in got.items():
        tries = 0
        while value not in observed[sub] and tries < 2:
            tries += 1
            student, lab = sub.split("/")
            dest = tmp / f"again-{tries}" / student / f"{lab}.json"
            dest.parent.mkdir(parents=True, exist_ok=True)
            r = _cli("grade", lab, str(klass / student / lab), "--json", str(dest), "--quiet")
            assert r.returncode == 0, _graded_alone(r, dest)
            observed[sub].append(_scores(dest.parent.parent)[sub])
        differing = {c for c in value["checks"] if any(value["checks"][c] != o["checks"].get(c)
                                                       for o in observed[sub])}
        assert value in observed[sub], (f"{sub}: the batch gave {value}, grading alone gave {observed[sub]}; "
                                        f"checks {_feedback(got_out, sub, differing)}")
        if len({json.dumps(o, sort_keys=True) for o in observed[sub]}) > 1:
            notes.append(f"{sub}: grader variance in {sorted(differing)}")
    return notes


def _validate_outputs(out: Path, students: list[str]) -> None:
    # gradebook.csv: a row per student, a column per lab and per lab:check, totals that add up
    with (out / "gradebook.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
        header = rows[0].keys() if rows else []
    assert [r["student"] for r in rows] == sorted(students)
    expected = ["student", "total"]
    for lab in CLASS_LABS:
        expected += [lab] + [f"{lab}:{c.id}" for c in catalogue.checks(lab)]
    assert list(header) == expected
    for r in rows:
        assert int(r["total"]) == sum(int(r[lab]) for lab in CLASS_LABS)
        for lab in CLASS_LABS:
            checks = [r[f"{lab}:{c.id}"] for c in catalogue.checks(lab)]
            assert sum(int(v) for v in checks if v != "error") == int(r[lab])
    # junit.xml: a suite per submission, a case per check, counts that match
    tree = ET.parse(out / "junit.xml").getroot()
    assert tree.tag == "testsuites"
    suites = tree.findall("testsuite")
    assert len(suites) == len(students) * len(CLASS_LABS)
    for suite in suites:
        cases = suite.findall("testcase")
        student, lab = suite.get("name", "").split("/")
        assert [c.get("name") for c in cases] == [c.id for c in catalogue.checks(lab)]
        assert int(suite.get("tests", -1)) == len(cases)
        assert int(suite.get("failures", -1)) == sum(c.find("failure") is not None for c in cases)
        assert int(suite.get("errors", -1)) == sum(c.find("error") is not None for c in cases)
        float(suite.get("time", "x"))
        summary = json.loads((out / student / f"{lab}.json").read_text())
        gs = validate_results(json.loads((out / student / f"{lab}.results.json").read_text()))
        assert gs["score"] == summary["score"] and len(gs["tests"]) == len(summary["checks"])


def _gradebook(out: Path, lab: str) -> list[dict[str, str]]:
    """gradebook.csv's rows, with the student and lab `lab`'s columns only."""
    with (out / "gradebook.csv").open(newline="") as f:
        return [{k: v for k, v in row.items() if k == "student" or k.split(":")[0] == lab} for row in csv.DictReader(f)]


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # gone meanwhile
        if text in cmd:
            found.append(f"{pid}: {cmd}")
    return found


@pytest.mark.slow
def test_batch_equals_one_by_one_and_resumes_after_a_kill(klass: Path, tmp_path: Path) -> None:
    """The acceptance run: 3 students x 3 labs with --jobs 2 gives, check for check, the scores
    of grading each submission alone, faster than grading them one at a time (the sum of the lone
    gradings' times; they are made two at a time here, each in its own process); a batch killed
    (SIGKILL) after some submissions (of one lab's three, to spare a second whole batch) resumes
    with the missing ones only, and ends with the same gradebook. (On a machine loaded by others,
    a timing check on its edge can vary between two lone gradings too: such a submission is graded
    alone again, and the batch's result must be one that a lone grading gives; see _settle.)"""
    def lone(student: str, lab: str) -> float:
        """One submission graded alone (its own `labgrade grade` process); its wall time."""
        dest = tmp_path / "alone" / student / f"{lab}.json"
        dest.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        r = _cli("grade", lab, str(klass / student / lab), "--json", str(dest), "--quiet")
        assert r.returncode == 0, _graded_alone(r, dest)
        return time.monotonic() - t0

    # two lone gradings at a time (each still its own process and sandbox): one at a time, they would
    # take the sum of their times, which is the baseline the batch is compared with
    with ThreadPoolExecutor(2) as pool:
        t_alone = sum(pool.map(lambda sub: lone(*sub), [(st, lab) for st in CLASS for lab in CLASS_LABS]))
    alone = _scores(tmp_path / "alone")

    full = tmp_path / "full"
    r, t2 = _batch(klass, full, "--jobs", "2")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "ETA" in r.stderr and f"{N}/{N}" in r.stderr  # the progress bar: running count, ETA
    assert "Checks failed, per lab" in r.stdout  # the class's distribution per check
    assert all(f"Measured in lab {lab}" in r.stdout for lab in CLASS_LABS)  # and of vs-reference's figures
    batch_scores = _scores(full)
    assert set(batch_scores) == set(alone)
    observed = {sub: [v] for sub, v in alone.items()}
    notes = _settle(klass, tmp_path, observed, batch_scores, full)
    for sub, v in batch_scores.items():
        observed[sub].append(v)
    _validate_outputs(full, list(CLASS))
    # the references score full marks every time (alone and in the batch; resumed below): with
    # test_stability's, which grades the other labs' references, the guard against flicker
    assert all(o["score"] == 100 for lab in CLASS_LABS for o in observed[f"ref/{lab}"]), \
        {lab: observed[f"ref/{lab}"] for lab in CLASS_LABS}
    assert all(v["score"] == 5 for s, v in batch_scores.items() if s.startswith("skel/"))

    # a rerun grades nothing
    r, t_rerun = _batch(klass, full, "--jobs", "2")
    assert r.returncode == 0 and f"Grading 0 submission(s) ({N} already graded)" in r.stderr
    assert t_rerun < 15

    # killed after some submissions (of lab fork's three: --labs): the rerun grades only the missing ones
    killed = tmp_path / "killed"
    n_fork = len(CLASS)
    p = subprocess.Popen([sys.executable, "-m", "grader", "batch", str(klass), "--out", str(killed), "--labs", "fork",
                          "--isolation", "local", "--jobs", "2"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 900
    while not (_scores(killed) if killed.is_dir() else {}) and time.monotonic() < deadline and p.poll() is None:
        time.sleep(0.2)
    p.send_signal(signal.SIGKILL)
    p.wait()
    # its running gradings get SIGINT from the kernel (PR_SET_PDEATHSIG), stop and clean up
    deadline = time.monotonic() + 60
    while _processes_mentioning(str(killed)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _processes_mentioning(str(killed)), "child gradings outlived the killed batch"
    finished = {f: f.stat().st_mtime_ns for f in killed.glob("*/*.json") if not f.name.endswith(".results.json")}
    assert 1 <= len(finished) < n_fork
    r, t_resume = _batch(klass, killed, "--labs", "fork", "--jobs", "2")
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"Grading {n_fork - len(finished)} submission(s) ({len(finished)} already graded)" in r.stderr
    assert all(f.stat().st_mtime_ns == m for f, m in finished.items())  # not graded again
    resumed = _scores(killed)
    assert sorted(resumed) == sorted(f"{st}/fork" for st in CLASS) and resumed["ref/fork"]["score"] == 100, resumed
    notes += _settle(klass, tmp_path, observed, resumed, killed)
    if resumed == {sub: v for sub, v in batch_scores.items() if sub in resumed}:
        assert _gradebook(killed, "fork") == _gradebook(full, "fork")
    print("\n".join(notes) or "no grader variance: every grading of a submission gave the same result")
    ratio = t_alone / t2
    load = Path("/proc/loadavg").read_text().split()[:3]
    print(f"one by one (sum) {t_alone:.1f} s; batch --jobs 2 {t2:.1f} s ({ratio:.2f}x, cores {os.cpu_count()}, "
          f"load {load}); rerun {t_rerun:.1f} s; resume of {n_fork - len(finished)} {t_resume:.1f} s")
    # --jobs 2 against the same N gradings made one at a time. Other work on this 2-core machine
    # distorts the ratio, so a strict one is asserted only with LABGRADE_ASSERT_SPEEDUP=<ratio>.
    want = float(os.environ.get("LABGRADE_ASSERT_SPEEDUP") or 1.1)
    assert ratio >= want, f"--jobs 2 only {ratio:.2f}x faster than one at a time ({t_alone:.1f} s vs {t2:.1f} s)"


@pytest.mark.slow
def test_one_failing_or_hanging_submission_never_stops_the_batch(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A child grading that crashes, or hangs past the time limit, gives that submission a
    "could not be graded" summary; the others are graded; a rerun grades only the failed ones."""
    root = tmp_path / "class"
    for student in ("crash", "good", "hang"):
        shutil.copytree(ROOT / "assignments" / "fork", root / student / "fork",
                        ignore=shutil.ignore_patterns("server", "*.o"))
    boot = ("import sys, time\n"
            "if any('/crash/' in a for a in sys.argv): sys.exit(1)\n"
            "if any('/hang/' in a for a in sys.argv): time.sleep(120)\n") + batch._CHILD_BOOT
    monkeypatch.setattr(batch, "_CHILD_BOOT", boot)
    monkeypatch.setattr(batch, "PER_SUBMISSION_TIMEOUT", 20.0)
    out = tmp_path / "out"
    t0 = time.monotonic()
    rc = batch.run_batch(root=root, out=out, labs=["fork"], jobs=3, isolation="local")
    assert rc == 1 and time.monotonic() - t0 < 60
    summaries = {s: json.loads((out / s / "fork.json").read_text()) for s in ("crash", "good", "hang")}
    assert summaries["good"]["gradable"] and summaries["good"]["score"] == 5
    assert not summaries["crash"]["gradable"] and not summaries["hang"]["gradable"]
    assert "did not finish within 20 s" in summaries["hang"]["error"]
    for s in ("crash", "hang"):
        validate_results(json.loads((out / s / "fork.results.json").read_text()))
    book = {r["student"]: r for r in csv.DictReader((out / "gradebook.csv").open())}
    assert book["crash"]["fork"] == "not graded" and book["good"]["fork"] == "5"
    monkeypatch.setattr(batch, "_CHILD_BOOT", boot.replace("'/hang/'", "'/nobody/'"))
    monkeypatch.setattr(batch, "PER_SUBMISSION_TIMEOUT", 600.0)
    good_mtime = (out / "good" / "fork.json").stat().st_mtime_ns
    assert batch.run_batch(root=root, out=out, labs=["fork"], jobs=2, isolation="local") == 1  # crash still fails
    assert (out / "good" / "fork.json").stat().st_mtime_ns == good_mtime
    assert json.loads((out / "hang" / "fork.json").read_text())["score"] == 5


@pytest.mark.slow
def test_sigint_stops_the_batch_and_a_rerun_finishes(klass: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    p = subprocess.Popen([sys.executable, "-m", "grader", "batch", str(klass), "--out", str(out), "--isolation",
                          "local", "--jobs", "2", "--labs", "fork"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    while len(_scores(out) if out.is_dir() else {}) < 2 and p.poll() is None:
        time.sleep(0.2)
    t0 = time.monotonic()
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130 and "rerun the same command" in err
    assert time.monotonic() - t0 < 45  # stopped, not finished
    assert not list(out.glob("*/*.part")) and 2 <= len(_scores(out)) < len(CLASS)
    r, _ = _batch(klass, out, "--jobs", "2", "--labs", "fork")
    assert r.returncode == 0 and len(_scores(out)) == len(CLASS)
