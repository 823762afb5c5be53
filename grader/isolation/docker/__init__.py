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

Modules: `engine` (the SDK, container options, volumes, removal), `archives` (the tar
in, the summary out), `grading` (grade_in_container).
"""
from ...errors import SubmissionTooLarge
from .archives import MAX_SUMMARY_BYTES, read_file_from, submission_tar
from .engine import (
    CAPABILITIES,
    DEFAULT_IMAGE,
    GRADING_DIR,
    LABEL_ROLE,
    LABEL_SESSION,
    MEMORY,
    NANO_CPUS,
    OUT_DIR,
    PIDS_LIMIT,
    ROLE_GRADING,
    SESSION_PREFIX_ENV,
    SUBMISSION_DIR,
    SUMMARY_PATH,
    TMPFS_TMP,
    UIDS_PER_GRADING,
    cleanup_stale,
    client,
    container_options,
    create_volume,
    engine_available,
    image_present,
    new_session,
)
from .grading import grade_in_container, grading_command, too_large_summary

__all__ = [
    "CAPABILITIES", "DEFAULT_IMAGE", "GRADING_DIR", "LABEL_ROLE", "LABEL_SESSION", "MAX_SUMMARY_BYTES", "MEMORY",
    "NANO_CPUS", "OUT_DIR", "PIDS_LIMIT", "ROLE_GRADING", "SESSION_PREFIX_ENV", "SUBMISSION_DIR", "SUMMARY_PATH",
    "TMPFS_TMP", "UIDS_PER_GRADING", "SubmissionTooLarge", "cleanup_stale", "client", "container_options",
    "create_volume", "engine_available", "grade_in_container", "grading_command", "image_present",
    "new_session", "read_file_from", "submission_tar", "too_large_summary",
]
