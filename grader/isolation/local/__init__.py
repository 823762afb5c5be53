"""The `local` isolation: where student code runs and how everything it starts is removed.

As root, each grading gets its own unprivileged uid (from a locked pool, so parallel
gradings never share one: `kill(-1)` or RLIMIT_NPROC of one cannot touch another),
its own work directory, rlimits, and no core dumps; teardown kills every process of
that uid, escaped daemons included, and removes what it wrote into the machine's
scratch directories. Where the kernel lets root make mount namespaces (not in a
container), student code also gets a private view of the file system: the home,
project and other non-system trees, the reference and the grader's own package are
hidden, and /tmp, /var/tmp, /dev/shm are small private tmpfs (its work directory is
mounted back in); each process started gets an IPC namespace of its own, so message
queues neither collide between gradings nor outlive the server. Without root (a
student's self-check) the code runs as the caller with the same rlimits, and teardown
kills every descendant of the grader, which is a child subreaper so that double-forked
daemons stay its descendants.

Everywhere, a watchdog thread counts the processes (threads included) and the memory
of the sandbox's processes ten times a second and kills them all when they pass the
limits, recording why (`Watchdog.violation`), so that feedback can say it. Student
processes get oom_score_adj 1000: when memory runs out anyway (a container's cgroup),
the kernel's OOM killer takes them before the grader.

One module per job, `Sandbox` coordinating them:
    uids        the pool of unprivileged uids (and the ones a container is given)
    ports       free TCP ports outside the ephemeral range
    locks       the lock files that keep parallel gradings apart
    namespaces  a private view of the file system, IPC of its own, a network of its own
    limits      rlimits, the watchdog's limits, the size of a submission
    watchdog    the thread that counts processes and memory, and kills past the limits
    reaper      the one loop that ends processes (signal, grace, SIGKILL, reap)
    cgroups     the memory cgroup's limit and OOM kills
"""
from .cgroups import cgroup_memory_limit, cgroup_oom_kills
from .limits import IDLE_ENV, MAX_SUBMISSION_BYTES, MAX_SUBMISSION_FILES, Limits
from .namespaces import (
    local_protection,
    message_queues_in,
    private_fs_supported,
    private_ipc_supported,
    private_network,
    private_network_supported,
)
from .reaper import end_processes, set_subreaper
from .sandbox import WORK_ROOT_ENV, Sandbox
from .uids import UID_BASE, UID_COUNT, UIDS_ENV, reserve_uids
from .watchdog import Violation, Watchdog

__all__ = [
    "IDLE_ENV", "MAX_SUBMISSION_BYTES", "MAX_SUBMISSION_FILES", "UIDS_ENV", "UID_BASE", "UID_COUNT",
    "WORK_ROOT_ENV", "Limits", "Sandbox", "Violation", "Watchdog", "cgroup_memory_limit", "cgroup_oom_kills",
    "end_processes", "local_protection", "message_queues_in", "private_fs_supported", "private_ipc_supported",
    "private_network", "private_network_supported",
    "reserve_uids", "set_subreaper",
]
