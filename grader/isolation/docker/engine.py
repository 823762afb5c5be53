"""The Docker engine: the SDK and its errors, the grading container's options and volume,
and removal (of one grading's objects, or of what crashed gradings left)."""
from __future__ import annotations

import contextlib
import os
import time
import uuid
from typing import Any

from ...errors import IsolationError
from ...output import MiB

DEFAULT_IMAGE = os.environ.get("LABGRADE_IMAGE", "labgrade-grader:latest")

LABEL_SESSION = "labgrade.session"
LABEL_ROLE = "labgrade.role"
ROLE_GRADING = "grading"

GRADING_DIR = "/grading"
SUBMISSION_DIR = f"{GRADING_DIR}/submission"
OUT_DIR = f"{GRADING_DIR}/out"
SUMMARY_PATH = f"{OUT_DIR}/summary.json"


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
def sdk() -> Any:
    try:
        import docker
    except ImportError as e:  # pragma: no cover - the package is a dependency
        raise IsolationError("the Python package `docker` is missing (pip install docker)") from e
    return docker


def library_errors() -> tuple[type[BaseException], ...]:
    """Exceptions of docker and requests that we convert into IsolationError."""
    docker = sdk()
    import requests

    return (docker.errors.DockerException, requests.exceptions.RequestException, ConnectionError)


def client(timeout: float = 60) -> Any:
    """A client of the engine named by DOCKER_HOST (default: the local socket)."""
    docker = sdk()
    try:
        return docker.from_env(timeout=int(timeout))
    except library_errors() as e:
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
    docker = sdk()
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



def remove_objects(c: Any, container: Any, volume: Any) -> None:
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
    errors = library_errors()
    c = client()
    removed = 0
    label = f"{LABEL_SESSION}={session}" if session else LABEL_SESSION
    try:
        for ct in c.containers.list(all=True, ignore_removed=True, filters={"label": label}):
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
