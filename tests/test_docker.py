"""The Docker side: the engine, the images, and the grading container's confinement.

Every test here needs a running engine and the images of `docker compose build`;
they are marked `docker` and FAIL (never skip) when the engine does not answer:
the fast local loop deselects them with `-m 'not docker'`, CI runs them
(`.ci/run`, i.e. `docker compose run --rm test`, which reaches the host's engine
through its socket).

The confinement tests start containers with exactly the options `grade_in_container`
uses (`container_options`), so what they prove holds for real gradings. No test
sends traffic anywhere: network facts are read from /sys.
"""
from __future__ import annotations

import hashlib
import json
import os
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from grader.errors import IsolationError, UsageError
from grader.isolation import docker as dockeriso
from grader.schema import validate_summary

pytestmark = [
    pytest.mark.docker,
    # Debian's python3-docker 5.0 compares versions with distutils
    pytest.mark.filterwarnings("ignore:distutils Version classes:DeprecationWarning"),
]

ROOT = Path(__file__).resolve().parents[1]
GRADER_IMAGE = os.environ.get("LABGRADE_IMAGE", dockeriso.DEFAULT_IMAGE)
LAB_IMAGE = os.environ.get("LABGRADE_LAB_IMAGE", "labgrade-lab:latest")
STUDENT_UID = 61234  # in the grader's pool of unprivileged uids (61000-61999)
REFERENCE_ROOT = "/opt/labgrade/reference"
BUILD_HINT = "build the images first: `docker compose build` (or run .ci/run)"


# ----------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    if not dockeriso.engine_available():
        where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        pytest.fail(
            f"no Docker engine answers at {where}. Start one (`dockerd >/var/log/dockerd.log 2>&1 &`, "
            "or .ci/run does everything), or deselect these tests with -m 'not docker'.",
            pytrace=False,
        )
    c = dockeriso.client()
    yield c
    c.close()


_BUILT: set[str] = set()


def ensure_image(client: Any, tag: str, target: str) -> str:
    """The image, (re)built from this checkout (images/Dockerfile, stage `target`) once per test
    session: a second from the engine's cache when nothing changed, and never a stale grader
    tested in place of this one. `docker compose run --rm test` thus works on a fresh clone."""
    if tag in _BUILT:
        return tag
    # .ci/run has just built every image of docker-compose.yml from this checkout and names their
    # ids: a build here would repeat it (the engine's classic builder, which this API drives, does
    # not share BuildKit's cache: 80 s on a fresh machine)
    fresh = dict(x.split("=", 1) for x in os.environ.get("LABGRADE_BUILT_IMAGES", "").split(",") if "=" in x)
    if tag in fresh and dockeriso.image_present(tag) and client.images.get(tag).id == fresh[tag]:
        _BUILT.add(tag)
        return tag
    root = Path(__file__).resolve().parent.parent
    log = []
    try:
        for chunk in client.api.build(path=str(root), dockerfile="images/Dockerfile", target=target, tag=tag,
                                      rm=True, decode=True):
            log.append(str(chunk.get("stream") or chunk.get("error") or ""))
            if "error" in chunk:
                raise RuntimeError(chunk["error"])
    except Exception as e:
        pytest.fail(f"the image {tag} is missing and building it failed ({e}): {BUILD_HINT}\n"
                    + "".join(log)[-3000:], pytrace=False)
    _BUILT.add(tag)
    return tag


@pytest.fixture(scope="module")
def grader_image(client: Any) -> str:
    return ensure_image(client, GRADER_IMAGE, "grader")


@pytest.fixture(scope="module")
def lab_image(client: Any) -> str:
    return ensure_image(client, LAB_IMAGE, "lab")


def run_grading_like(client: Any, image: str, script: str, *,
                     timeout: float = 120) -> tuple[int, str, dict[str, Any]]:
    """Run a Python script as root in a container created with the grading options;
    returns (exit status, output, container attrs); the container is always removed."""
    session = dockeriso.new_session()
    opts = dockeriso.container_options(session=session, role="test",
                                       command=["python3", "-c", textwrap.dedent(script)])
    ct = client.containers.create(image, **opts)
    try:
        ct.start()
        status = ct.wait(timeout=timeout)
        status = status["StatusCode"] if isinstance(status, dict) else int(status)
        ct.reload()
        return status, ct.logs().decode(errors="replace"), ct.attrs
    finally:
        ct.remove(force=True, v=True)


def run_lab(client: Any, image: str, command: list[str]) -> str:
    """Run a command in the student image, as its default user; returns its output."""
    out = client.containers.run(image, command, remove=True, network_mode="none",
                                stdout=True, stderr=True)
    return out.decode(errors="replace")


def as_student(body: str) -> str:
    """A script whose `body` runs in a child that dropped to the unprivileged uid."""
    return f"""
import os, sys
pid = os.fork()
if pid == 0:
    os.setgroups([])
    os.setresgid({STUDENT_UID}, {STUDENT_UID}, {STUDENT_UID})
    os.setresuid({STUDENT_UID}, {STUDENT_UID}, {STUDENT_UID})
{textwrap.indent(textwrap.dedent(body), "    ")}
    sys.stdout.flush()
    os._exit(0)
_, st = os.waitpid(pid, 0)
print("child-status", st, flush=True)
"""


# ----------------------------------------------------------------- the engine

def test_engine_answers(client: Any) -> None:
    assert client.ping()
    version = client.version()
    assert version.get("ApiVersion"), version


def test_images_are_built(grader_image: str, lab_image: str) -> None:
    assert dockeriso.image_present(grader_image)
    assert dockeriso.image_present(lab_image)
    assert not dockeriso.image_present("labgrade-no-such-image:never")


# ----------------------------------------------------------------- confinement

def test_only_loopback_inside(client: Any, grader_image: str) -> None:
    status, out, attrs = run_grading_like(client, grader_image, """
        import os
        print(sorted(os.listdir("/sys/class/net")))
        print(open("/sys/class/net/lo/operstate").read().strip())
    """)
    assert status == 0, out
    assert out.splitlines()[0] == "['lo']", out
    assert attrs["HostConfig"]["NetworkMode"] == "none"


def test_container_options_as_promised(client: Any, grader_image: str) -> None:
    status, out, attrs = run_grading_like(client, grader_image, """
        import os
        st = open("/proc/self/status").read()
        print([l for l in st.splitlines() if l.startswith(("CapEff", "NoNewPrivs"))])
        try:
            open("/usr/lib/labgrade-probe", "w")
            print("root-writable")
        except OSError as e:
            print("root-readonly", e.errno)
        for line in open("/proc/mounts"):
            if " /tmp " in line:
                print(line.strip())
    """)
    assert status == 0, out
    hc = attrs["HostConfig"]
    assert hc["ReadonlyRootfs"] is True
    assert hc["PidsLimit"] == dockeriso.PIDS_LIMIT
    assert hc["Memory"] == hc["MemorySwap"] == dockeriso.MEMORY
    assert hc["NanoCpus"] == dockeriso.NANO_CPUS
    assert hc["CapDrop"] == ["ALL"]
    assert "root-readonly" in out
    tmp = next(line for line in out.splitlines() if " /tmp " in line)
    assert "noexec" not in tmp and "size=" in tmp, tmp  # the build runs there
    assert "NoNewPrivs:\\t1" in out
    labels = attrs["Config"]["Labels"]
    assert labels[dockeriso.LABEL_ROLE] == "test" and labels[dockeriso.LABEL_SESSION]


def test_pids_limit_stops_a_fork_loop(client: Any, grader_image: str) -> None:
    removed_in: list[float] = []

    script = as_student("""
        import errno, time
        n = 0
        try:
            while n < 5000:
                p = os.fork()
                if p == 0:
                    os.execv("/bin/sleep", ["sleep", "300"])
                n += 1
            print("unbounded", n)
        except OSError as e:
            print("stopped", n, errno.errorcode.get(e.errno), flush=True)
        time.sleep(300)  # hold the processes: the container must still be removable
    """)
    session = dockeriso.new_session()
    ct = client.containers.create(grader_image, **dockeriso.container_options(
        session=session, role="test", command=["python3", "-c", script]))
    try:
        ct.start()
        deadline = time.monotonic() + 60
        out = ""
        while time.monotonic() < deadline:
            out = ct.logs().decode(errors="replace")
            if "stopped" in out or "unbounded" in out:
                break
            time.sleep(0.2)
    finally:
        t0 = time.monotonic()
        ct.remove(force=True, v=True)
        removed_in.append(time.monotonic() - t0)
    words = out.split()
    assert "stopped" in words, f"the fork loop was not stopped: {out!r}"
    n = int(words[words.index("stopped") + 1])
    assert words[words.index("stopped") + 2] == "EAGAIN", out
    # the cgroup's limit, not RLIMIT_NPROC or memory: it got close to the limit, not beyond
    assert dockeriso.PIDS_LIMIT - 20 <= n < dockeriso.PIDS_LIMIT, out
    assert removed_in[0] < 20, f"removing a container full of processes took {removed_in[0]:.1f} s"
    assert not client.containers.list(all=True, filters={"label": f"{dockeriso.LABEL_SESSION}={session}"})


def test_memory_limit_kills_an_allocation_beyond_it(client: Any, grader_image: str) -> None:
    chunk = 64 << 20
    steps = (dockeriso.MEMORY + 512 * (1 << 20)) // chunk
    status, out, attrs = run_grading_like(client, grader_image, as_student(f"""
        held = []
        for i in range({steps}):
            held.append(b"x" * {chunk})  # written, so resident
        print("allocated", len(held) * {chunk})
    """))
    assert "allocated" not in out, f"{steps * chunk} bytes fit in a {dockeriso.MEMORY} limit: {out}"
    # the student's process was SIGKILLed by the OOM killer; the grader (parent) saw it
    assert "child-status 9" in out or attrs["State"].get("OOMKilled") or status == 137, (status, out)


def test_student_uid_cannot_read_the_reference(client: Any, grader_image: str) -> None:
    status, out, _ = run_grading_like(client, grader_image, textwrap.dedent(f"""
        import os
        # as root: the reference is there (so the next lines prove something)
        files = sorted(os.path.relpath(os.path.join(d, f), "{REFERENCE_ROOT}")
                       for d, _, fs in os.walk("{REFERENCE_ROOT}") for f in fs)
        print("root-sees", len(files), " ".join(files))
        print("env", os.environ.get("LABGRADE_REFERENCE_ROOT"))
    """) + as_student(f"""
        for path in ["{REFERENCE_ROOT}", "{REFERENCE_ROOT}/fork", "{REFERENCE_ROOT}/fork/server.c"]:
            try:
                if os.path.isdir(path) and not path.endswith(".c"):
                    os.listdir(path)
                else:
                    open(path).read()
                print("READABLE", path)
            except PermissionError:
                print("denied", path)
    """))
    assert status == 0, out
    seen = next(line for line in out.splitlines() if line.startswith("root-sees")).split()
    assert int(seen[1]) >= 3 and "fork/server.c" in seen, out
    assert f"env {REFERENCE_ROOT}" in out
    assert "READABLE" not in out, out
    assert out.count("denied") == 3, out


# ----------------------------------------------------------------- the student's image

def _secret_files() -> dict[int, set[str]]:
    """size -> sha256 of every reference file that differs from the students' copies."""
    handed_out = {hashlib.sha256(p.read_bytes()).hexdigest()
                  for p in (ROOT / "assignments").rglob("*") if p.is_file()}
    secret: dict[int, set[str]] = {}
    for p in (ROOT / "reference").rglob("*"):
        if p.is_file():
            data = p.read_bytes()
            h = hashlib.sha256(data).hexdigest()
            if h not in handed_out:
                secret.setdefault(len(data), set()).add(h)
    return secret


def test_lab_image_runs_as_student_without_reference(client: Any, lab_image: str) -> None:
    secret = _secret_files()
    assert secret, "no reference file differs from the handouts: nothing to look for"
    wanted = json.dumps(json.dumps({k: sorted(v) for k, v in secret.items()}))
    probe = f"""
import hashlib, json, os, pwd
secret = {{int(k): set(v) for k, v in json.loads({wanted}).items()}}
found = []
for top in ["/usr", "/opt", "/home", "/root", "/srv", "/etc", "/var", "/tmp"]:
    for d, dirs, files in os.walk(top):
        for f in files:
            p = os.path.join(d, f)
            try:
                st = os.lstat(p)
                if st.st_size in secret and os.path.isfile(p) and not os.path.islink(p):
                    if hashlib.sha256(open(p, "rb").read()).hexdigest() in secret[st.st_size]:
                        found.append(p)
            except OSError:
                pass
import grader, grader.checks
pkg = os.path.dirname(grader.__file__)
hidden = [os.path.join(d, f) for d, _, fs in os.walk(pkg) for f in fs if "hidden" in f]
print(json.dumps({{"uid": os.getuid(), "user": pwd.getpwuid(os.getuid()).pw_name,
                  "cwd": os.getcwd(), "found": found, "hidden": hidden,
                  "opt": sorted(os.listdir("/opt")),
                  "env": os.environ.get("LABGRADE_REFERENCE_ROOT")}}))
"""
    out = run_lab(client, lab_image, ["python3", "-c", probe])
    facts = json.loads(out.strip().splitlines()[-1])
    assert facts["uid"] == 1000 and facts["user"] == "student", facts
    assert facts["cwd"] == "/home/student/lab", facts
    assert facts["found"] == [], f"reference sources in the student image: {facts['found']}"
    assert facts["hidden"] == [], f"hidden checks in the student image: {facts['hidden']}"
    assert "labgrade" not in facts["opt"] and facts["env"] is None, facts


def test_lab_image_has_the_tools_and_self_check(client: Any, lab_image: str) -> None:
    out = run_lab(client, lab_image, ["sh", "-c",
                  "for t in gcc make gdb valgrind strace nc lsof man labgrade; do command -v $t >/dev/null "
                  "&& echo have $t || echo MISSING $t; done; labgrade --help >/dev/null && echo cli-ok"])
    assert "MISSING" not in out, out
    assert "cli-ok" in out, out


# ----------------------------------------------------------------- grade_in_container

def test_submission_tar_refuses_large_trees_and_keeps_links(tmp_path: Path) -> None:
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "server.c").write_text("int main(void) { return 0; }\n")
    (sub / "passwd").symlink_to("/etc/passwd")
    (sub / ".git").mkdir()
    (sub / ".git" / "big").write_bytes(b"0" * 1024)
    import io
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(dockeriso.submission_tar(sub))) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert members["submission/passwd"].issym() and members["submission/passwd"].linkname == "/etc/passwd"
    assert members["submission/server.c"].uid == 0
    assert not any(".git" in n for n in members)
    (sub / "huge").write_bytes(b"\0" * 1024)
    with pytest.raises(UsageError):
        dockeriso.submission_tar(sub, max_bytes=1000)


def test_grade_in_a_container_only_the_checks_asked_and_nothing_left(client: Any, grader_image: str) -> None:
    # A whole grading in a container, every check id without an `error`, is test_verdicts' docker
    # sample (a correct design of every lab among it); here the API's `only` and `visible_only`.
    session = dockeriso.new_session()  # other gradings may run on this engine: look at ours only
    summary = dockeriso.grade_in_container(lab="select", submission=ROOT / "reference" / "select",
                                           image=grader_image, only=["build", "echo"], visible_only=True,
                                           session=session)
    validate_summary(summary.to_json())
    assert summary.lab == "select" and summary.gradable is True
    ran = {c.id for c in summary.checks if c.status == "passed"}
    assert ran == {"build", "echo"}, summary
    assert not [c for c in summary.checks if c.status == "error"], summary
    mine = {"label": f"{dockeriso.LABEL_SESSION}={session}"}
    assert client.containers.list(all=True, filters=mine) == [], "the grading container was not removed"
    assert client.volumes.list(filters=mine) == [], "the grading volume was not removed"


def test_timeout_is_an_isolation_error_and_leaves_nothing(client: Any, grader_image: str) -> None:
    session = dockeriso.new_session()  # other gradings may run on this engine: look at ours only
    with pytest.raises(IsolationError, match="did not finish"):
        dockeriso.grade_in_container(lab="fork", submission=ROOT / "reference" / "fork",
                                     image=grader_image, timeout=1, session=session)
    mine = {"label": f"{dockeriso.LABEL_SESSION}={session}"}
    assert client.containers.list(all=True, filters=mine) == []
    assert client.volumes.list(filters=mine) == []


def test_missing_image_is_an_isolation_error(client: Any) -> None:
    with pytest.raises(IsolationError, match="not on this engine"):
        dockeriso.grade_in_container(lab="fork", submission=ROOT / "reference" / "fork",
                                     image="labgrade-no-such-image:never", timeout=30)


def test_cleanup_stale_removes_labelled_leftovers(client: Any, grader_image: str) -> None:
    session = dockeriso.new_session()
    vol = dockeriso.create_volume(client, session)
    ct = client.containers.create(grader_image, **dockeriso.container_options(
        session=session, volume=vol.name, command=["sleep", "300"]))
    ct.start()
    assert dockeriso.cleanup_stale(session=session) == 2
    assert not client.containers.list(all=True, filters={"label": f"{dockeriso.LABEL_SESSION}={session}"})
    assert not client.volumes.list(filters={"label": f"{dockeriso.LABEL_SESSION}={session}"})


def test_lab_workspace_started_as_root_drops_to_student_and_can_write(client: Any, lab_image: str) -> None:
    # What `docker compose run fork` does: user 0:0, the lab directory mounted (here a
    # fresh, root-owned volume, as a checkout owned by root on the host).
    session = dockeriso.new_session()
    vol = dockeriso.create_volume(client, session, role="test")
    try:
        out = client.containers.run(
            lab_image, ["sh", "-c", "id -un; touch made-here && ls -n made-here; grep CapEff /proc/self/status"],
            user="0:0", network_mode="none", remove=True, stdout=True, stderr=True,
            mounts=[docker.types.Mount(target="/home/student/lab", source=vol.name, type="volume")],
        ).decode(errors="replace")
    finally:
        vol.remove(force=True)
    assert out.splitlines()[0] == "student", out
    assert " 1000 1000 " in out, out  # the file belongs to student
    assert "CapEff:\t0000000000000000" in out, out
