"""The `docker` isolation: one fresh container per submission, the `local` layer inside it.

    summary = grade_in_container(lab="fork", submission=Path("alice/fork"))

Each call creates a container from the grader image with no network (loopback only),
cgroup limits on processes, memory (no swap) and CPU, a read-only root, a size-limited
tmpfs with exec for /tmp (where the grader copies and builds the submission), every
capability dropped but the few the grader needs as root to run student code as an
unprivileged uid, and `no-new-privileges`. The submission goes in through the engine's
API (`put_archive` of a tar built in memory; no bind mount of a host path, so this
works as well when the grader itself runs in a container that holds the Docker
socket); the summary comes out the same way (`get_archive`) and is schema-checked
before anyone trusts it. Container and volume are removed whatever happens.

Why /grading is a per-container volume and not a tmpfs: Docker 20.10 (Debian
bookworm's engine) refuses `put_archive` into a read-only container unless the path is
a volume, copies into a tmpfs land beside it (in the image's directory underneath),
and a tmpfs disappears with the container before `get_archive` could read the result.
A volume outlives the container's exit. Only root writes there (the submission, 0755
root-owned, at most 50 MiB, and the summary in out/, 0700): student code runs as an
unprivileged uid, in a copy under /tmp, and can neither read nor forge the summary.

The uids student code runs as inside the container are reserved here, on the host, from
the same locked pool as local gradings (`LABGRADE_UIDS`): RLIMIT_NPROC and kill(-1) count
a uid across every container of the machine, so two gradings must never share one.
A submission too large to be a lab directory is not sent at all: it is graded here, with
the `build` check saying why, exactly as the local isolation does.

Works with Docker's Python SDK 5.0 (Debian bookworm's python3-docker) and 7.x.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import stat
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import IsolationError, UsageError
from ..sandbox import IDLE_ENV, UIDS_ENV, reserve_uids

DEFAULT_IMAGE = os.environ.get("LABGRADE_IMAGE", "labgrade-grader:latest")

LABEL_SESSION = "labgrade.session"
LABEL_ROLE = "labgrade.role"
ROLE_GRADING = "grading"

GRADING_DIR = "/grading"
SUBMISSION_DIR = f"{GRADING_DIR}/submission"
OUT_DIR = f"{GRADING_DIR}/out"
SUMMARY_PATH = f"{OUT_DIR}/summary.json"

MiB = 1 << 20
MAX_SUBMISSION_BYTES = 50 * MiB
MAX_SUBMISSION_FILES = 2000
MAX_SUMMARY_BYTES = 4 * MiB
SKIP_NAMES = {".git", "__pycache__"}

# Limits of one grading container. TSan's shadow memory needs a few hundred MB;
# the 500-client load driver needs descriptors (the grader lifts its soft limit
# up to the hard limit the container inherits from the engine).
PIDS_LIMIT = 512
MEMORY = 2 * 1024 * MiB
NANO_CPUS = 2_000_000_000
# /tmp holds the copies, the builds (each stopped past 256 MiB) and what student code writes
# there; it is memory, charged to the container: 512 MiB of it plus the watchdog's 1 GiB for
# the submission's processes leave the grader room within MEMORY.
TMPFS_TMP = "rw,exec,nosuid,nodev,size=512m,mode=1777"
UIDS_PER_GRADING = 2  # the submission's and the reference's

# What the grader, as root inside the container, needs, and nothing more:
#   CHOWN         hand its copy of the submission to the student uid
#   FOWNER        chmod that copy once it belongs to the student uid (0700: no other
#                 grading's uid, nor the reference's, can enter it)
#   DAC_OVERRIDE  list /proc/PID/fd of another uid; read and remove what student code left
#                 behind, whatever its modes
#   SETUID/SETGID drop student code (build, server) to an unprivileged uid
#   KILL          signal and remove the student's processes
# Everything else (NET_RAW, MKNOD, SYS_CHROOT, SETFCAP, SETPCAP, SYS_PTRACE, ...) is dropped:
# the descriptor checks read another uid's /proc/PID/fd links as that uid (probes.fd_targets),
# so the grader needs no CAP_SYS_PTRACE, and nothing in the container can trace. Measured
# by grading the references with one capability less each time: without any one of these,
# checks end in `error`. SYS_RESOURCE is not needed: the grader only lowers limits, or
# lifts a soft limit up to its hard one. tests/test_docker.py grades a reference in a
# container and fails on any `error`, so a change of the grader that needs more shows there.
CAPABILITIES = ["CHOWN", "DAC_OVERRIDE", "FOWNER", "SETUID", "SETGID", "KILL"]


# ---------------------------------------------------------------------------------
# The docker SDK and its errors
def _docker() -> Any:
    try:
        import docker
    except ImportError as e:  # pragma: no cover - the package is a dependency
        raise IsolationError("the Python package `docker` is missing (pip install docker)") from e
    return docker


def _library_errors() -> tuple[type[BaseException], ...]:
    """Exceptions of docker and requests that we convert into IsolationError."""
    docker = _docker()
    import requests

    return (docker.errors.DockerException, requests.exceptions.RequestException, ConnectionError)


def client(timeout: float = 60) -> Any:
    """A client of the engine named by DOCKER_HOST (default: the local socket)."""
    docker = _docker()
    try:
        return docker.from_env(timeout=int(timeout))
    except _library_errors() as e:
        raise IsolationError(f"cannot reach the Docker engine: {e}") from e


def engine_available() -> bool:
    """True when a Docker engine answers a ping within a few seconds."""
    try:
        c = client(timeout=5)
        try:
            return bool(c.ping())
        finally:
            c.close()
    except Exception:
        return False


def image_present(image: str = DEFAULT_IMAGE) -> bool:
    """True when the engine has `image` locally (no pull is attempted); False on any error."""
    try:
        c = client(timeout=10)
    except Exception:
        return False
    try:
        c.images.get(image)
        return True
    except Exception:
        return False
    finally:
        with contextlib.suppress(Exception):
            c.close()


# ---------------------------------------------------------------------------------
# Container options: one place, used by grade_in_container and by the tests
def container_options(*, session: str, role: str = ROLE_GRADING, volume: str | None = None,
                      command: list[str] | None = None,
                      environment: dict[str, str] | None = None) -> dict[str, Any]:
    """Keyword arguments for `client.containers.create(image, **options)`."""
    docker = _docker()
    opts: dict[str, Any] = {
        "command": command,
        "detach": True,
        "user": "0:0",
        "working_dir": "/tmp",
        "hostname": "labgrade",
        "network_mode": "none",
        "pids_limit": PIDS_LIMIT,
        "mem_limit": MEMORY,
        "memswap_limit": MEMORY,  # = mem_limit: no swap on top
        "nano_cpus": NANO_CPUS,
        "read_only": True,
        "tmpfs": {"/tmp": TMPFS_TMP},
        "cap_drop": ["ALL"],
        "cap_add": list(CAPABILITIES),
        "security_opt": ["no-new-privileges"],
        # nofile is left at the engine's default (its own hard limit: 1048576 under systemd):
        # raising it above that needs CAP_SYS_RESOURCE, which the container does not hold.
        "ulimits": [docker.types.Ulimit(name="core", soft=0, hard=0)],
        "labels": {LABEL_SESSION: session, LABEL_ROLE: role},
        "environment": {"HOME": "/tmp", "TMPDIR": "/tmp", **(environment or {})},
        "log_config": docker.types.LogConfig(type="json-file", config={"max-size": "2m", "max-file": "1"}),
        "stdin_open": False,
        "tty": False,
    }
    if volume:
        opts["mounts"] = [docker.types.Mount(target=GRADING_DIR, source=volume, type="volume")]
    return opts


SESSION_PREFIX_ENV = "LABGRADE_SESSION_PREFIX"


def new_session() -> str:
    """A fresh session id (the label of one grading's container and volume), after the caller's
    $LABGRADE_SESSION_PREFIX if set: a batch or a test run can then find exactly its own objects."""
    prefix = "".join(ch for ch in os.environ.get(SESSION_PREFIX_ENV, "") if ch.isalnum() or ch in "-_")[:40]
    return prefix + uuid.uuid4().hex


def create_volume(c: Any, session: str, role: str = ROLE_GRADING) -> Any:
    """The per-container volume mounted at /grading (see the module's docstring)."""
    return c.volumes.create(name=f"labgrade-{session}", driver="local",
                            labels={LABEL_SESSION: session, LABEL_ROLE: role})


# ---------------------------------------------------------------------------------
# Archives in and out
def _tar_info(name: str, st: os.stat_result, kind: bytes) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = "root"
    ti.mtime = int(st.st_mtime)
    return ti


def _walk(submission: Path) -> Iterator[tuple[str, Path]]:
    """(archive-relative name, path) of every entry, parents first; symlinks not followed."""
    for dirpath, dirnames, filenames in os.walk(submission, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_NAMES)
        rel = os.path.relpath(dirpath, submission)
        for n in dirnames + sorted(filenames):
            yield os.path.normpath(os.path.join(rel, n)), Path(dirpath, n)


def submission_tar(submission: Path, *, arcname: str = "submission",
                   max_bytes: int = MAX_SUBMISSION_BYTES, max_files: int = MAX_SUBMISSION_FILES) -> bytes:
    """An in-memory tar of `submission` under `arcname/`: root-owned, modes at most 0755,
    symlinks stored as links (never followed), special files left out.

    Raises UsageError when the tree holds more than `max_bytes` or `max_files`."""
    buf = io.BytesIO()
    total = files = 0
    too_large = SubmissionTooLarge(
        f"the submission holds more than {max_files} files or {max_bytes // MiB} MiB; "
        "a lab directory needs a few sources, a header and a Makefile")
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        top = _tar_info(arcname, submission.stat(), tarfile.DIRTYPE)
        top.mode = 0o755
        tar.addfile(top)
        for rel, path in _walk(submission):
            try:
                st = path.lstat()
            except OSError:
                continue
            name = f"{arcname}/{rel}"
            if stat.S_ISDIR(st.st_mode):
                ti = _tar_info(name, st, tarfile.DIRTYPE)
                ti.mode = 0o755
                tar.addfile(ti)
            elif stat.S_ISLNK(st.st_mode):
                ti = _tar_info(name, st, tarfile.SYMTYPE)
                ti.linkname = os.readlink(path)
                ti.mode = 0o777
                tar.addfile(ti)
            elif stat.S_ISREG(st.st_mode):
                files += 1
                total += st.st_size
                if files > max_files or total > max_bytes:
                    raise too_large
                ti = _tar_info(name, st, tarfile.REGTYPE)
                ti.mode = st.st_mode & 0o755
                try:
                    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
                except OSError:
                    continue  # vanished or replaced by a link since lstat
                with os.fdopen(fd, "rb") as f:
                    data = f.read(max_bytes + 1)
                ti.size = len(data)
                tar.addfile(ti, io.BytesIO(data))
            # fifos, sockets, devices: nothing to grade there
    return buf.getvalue()


class SubmissionTooLarge(UsageError):
    """Raised by submission_tar: the tree is not sent; grade_in_container grades it as a failed build."""


def _out_dir_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        ti = tarfile.TarInfo("out")
        ti.type = tarfile.DIRTYPE
        ti.mode = 0o700
        ti.uid = ti.gid = 0
        ti.uname = ti.gname = "root"
        ti.mtime = int(time.time())
        tar.addfile(ti)
    return buf.getvalue()


def read_file_from(container: Any, path: str, max_bytes: int = MAX_SUMMARY_BYTES) -> bytes:
    """One regular file out of a container (running or exited), at most `max_bytes`."""
    stream, st = container.get_archive(path)
    if st.get("size", 0) > max_bytes:
        raise IsolationError(f"{path} in the container is {st['size']} bytes; refusing more than {max_bytes}")
    raw = bytearray()
    for chunk in stream:
        raw += chunk
        if len(raw) > max_bytes + 64 * 1024:
            raise IsolationError(f"{path} in the container is larger than {max_bytes} bytes")
    with tarfile.open(fileobj=io.BytesIO(bytes(raw))) as tar:
        member = tar.next()
        if member is None or not member.isfile():
            raise IsolationError(f"{path} in the container is not a regular file")
        f = tar.extractfile(member)
        assert f is not None
        return f.read(max_bytes + 1)


# ---------------------------------------------------------------------------------
def grading_command(*, lab: str, only: list[str] | None = None, visible_only: bool = False,
                    extra_args: list[str] | None = None) -> list[str]:
    cmd = ["labgrade", "grade", lab, SUBMISSION_DIR, "--isolation", "local", "--json", SUMMARY_PATH]
    if only:
        cmd += ["--only", ",".join(only)]
    if visible_only:
        cmd.append("--visible-only")
    return cmd + list(extra_args or [])


def _validate(obj: Any) -> dict[str, Any]:
    from ..schema import validate_summary  # lazily: the schema module may evolve independently

    return validate_summary(obj)


def _wait(container: Any, timeout: float) -> int:
    """Exit status of the container's main process; IsolationError after `timeout` seconds."""
    import requests

    try:
        result = container.wait(timeout=timeout)
    except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError) as e:
        # docker-py raises ReadTimeout (7.x) or ConnectionError wrapping a read timeout (5.x)
        if isinstance(e, requests.exceptions.ReadTimeout) or "timed out" in str(e).lower():
            raise IsolationError(f"grading did not finish within {timeout:.0f} s; container stopped") from None
        raise
    if isinstance(result, dict):
        if result.get("Error"):
            raise IsolationError(f"waiting for the grading container failed: {result['Error']}")
        return int(result.get("StatusCode", -1))
    return int(result)  # docker-py < 3 returned the code itself


def _describe_failure(container: Any, status: int) -> str:
    oom = False
    with contextlib.suppress(Exception):
        container.reload()
        oom = bool(container.attrs["State"].get("OOMKilled"))
    tail = ""
    with contextlib.suppress(Exception):
        tail = container.logs(tail=40).decode(errors="replace").strip()
    why = f"the grader in the container exited with status {status}"
    if oom:
        why += f" (killed: out of memory, limit {MEMORY // MiB} MiB)"
    return why + (f"; its last output:\n{tail}" if tail else "")


def too_large_summary(*, lab: str, why: str, only: list[str] | None = None,
                      visible_only: bool = False) -> dict[str, Any]:
    """The summary of a submission refused before it was sent: its build fails (with the same
    feedback as in the local isolation) and every other check is not graded."""
    from .. import catalogue
    from ..verdict import CheckFailed, NotGraded

    build = CheckFailed("copied your lab directory to an empty directory and ran `make` there",
                        f"{why}. Output of make:\n(none)",
                        rule="`make` builds an executable `server` in the lab directory",
                        hint="run `make clean && make` in your lab directory and fix the first error shown")
    rest = NotGraded("Not graded: the build failed, so no server could run (see the `build` check).")
    rows = [{"id": c.id, "status": "failed", "score": 0, "max_score": c.points, "visibility": c.visibility,
             "feedback": (build if c.id == "build" else rest).feedback, "seconds": 0.0}
            for c in catalogue.checks(lab)
            if (not only or c.id in only) and (not visible_only or c.visibility == "visible")]
    return _validate({"lab": lab, "submission": "", "gradable": True, "score": 0,
                      "max_score": sum(r["max_score"] for r in rows), "seconds": 0.0, "checks": rows})


def grade_in_container(*, lab: str, submission: Path, image: str = DEFAULT_IMAGE,
                       only: list[str] | None = None, visible_only: bool = False, timeout: float = 600,
                       extra_args: list[str] | None = None, session: str | None = None) -> dict[str, Any]:
    """Grade `submission` (a lab directory on this machine) in a fresh container of `image`
    and return the summary JSON produced inside it, schema-checked. `session` labels the
    container and its volume (default: a fresh id).

    A submission too large to be a lab directory is not sent: its summary says so in `build`.
    Raises UsageError for a submission that is not a directory,
    IsolationError when the engine, the container or the grader inside failed,
    ReportError (from the schema) when the summary is malformed."""
    submission = Path(submission)
    if not submission.is_dir():
        raise UsageError(f"{submission} is not a directory")
    try:
        payload = submission_tar(submission)  # before touching the engine: refuse early
    except SubmissionTooLarge as e:
        return too_large_summary(lab=lab, why=str(e), only=only, visible_only=visible_only)
    session = session or new_session()
    errors = _library_errors()
    c = client(timeout=max(60.0, timeout + 30))
    container = volume = None
    uids, uid_locks = reserve_uids(UIDS_PER_GRADING)
    try:
        try:
            volume = create_volume(c, session)
            container = c.containers.create(
                image, **container_options(session=session, volume=volume.name,
                                           command=grading_command(lab=lab, only=only,
                                                                   visible_only=visible_only,
                                                                   extra_args=extra_args),
                                           environment={UIDS_ENV: ",".join(map(str, uids)), IDLE_ENV: "1"}))
            # out/ first (root, 0700), then the submission; both before the container starts
            if not container.put_archive(GRADING_DIR, _out_dir_tar()):
                raise IsolationError("could not create the output directory in the container")
            if not container.put_archive(GRADING_DIR, payload):
                raise IsolationError("could not copy the submission into the container")
            container.start()
        except _docker().errors.ImageNotFound as e:
            raise IsolationError(
                f"the grader image {image} is not on this engine: build it with `docker compose build grade`"
            ) from e
        except errors as e:
            raise IsolationError(f"could not start a grading container from {image}: {e}") from e
        try:
            status = _wait(container, timeout)
        except errors as e:
            raise IsolationError(f"lost the grading container: {e}") from e
        try:
            raw = read_file_from(container, SUMMARY_PATH)
        except _docker().errors.NotFound:
            raise IsolationError(_describe_failure(container, status) + "\n(no summary was written)") from None
        except errors as e:
            raise IsolationError(f"could not copy the summary out of the container: {e}") from e
        try:
            obj = json.loads(raw)
        except ValueError as e:
            from ..errors import ReportError

            raise ReportError(f"the summary written in the container is not JSON: {e}") from e
        return _validate(obj)
    finally:
        _remove(c, container, volume)
        for fd in uid_locks:  # the container and every process of its uids are gone
            os.close(fd)
        with contextlib.suppress(Exception):
            c.close()


def _remove(c: Any, container: Any, volume: Any) -> None:
    """Remove the container (killing it if needed) and its volume; never raises.
    Runs in `finally`, so also on KeyboardInterrupt; a second interrupt during removal
    is absorbed so the removal completes (cleanup_stale catches what still escapes)."""
    for _ in range(2):
        try:
            if container is not None:
                with contextlib.suppress(Exception):
                    container.remove(force=True, v=True)
            if volume is not None:
                for _ in range(10):
                    try:
                        volume.remove(force=True)
                        break
                    except Exception as e:
                        if "not found" in str(e).lower() or "no such volume" in str(e).lower():
                            break
                        time.sleep(0.2)
            return
        except KeyboardInterrupt:
            continue


def cleanup_stale(session: str | None = None) -> int:
    """Remove grading containers and volumes left behind (by a crash or a kill -9), all of
    them or those of one session. Returns how many objects were removed."""
    errors = _library_errors()
    c = client()
    removed = 0
    label = f"{LABEL_SESSION}={session}" if session else LABEL_SESSION
    try:
        for ct in c.containers.list(all=True, filters={"label": label}):
            try:
                ct.remove(force=True, v=True)
                removed += 1
            except errors:
                pass
        for vol in c.volumes.list(filters={"label": label}):
            try:
                vol.remove(force=True)
                removed += 1
            except errors:
                pass
    except errors as e:
        raise IsolationError(f"could not list leftover grading containers: {e}") from e
    finally:
        with contextlib.suppress(Exception):
            c.close()
    return removed
