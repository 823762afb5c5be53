"""The limits of student code: rlimits of each process, the watchdog's limits on all of them
together, and the size of a submission (the same in both isolations)."""
from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import stat
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import SubmissionTooLarge
from ...output import MiB

IDLE_ENV = "LABGRADE_IDLE_CPU"  # "1": student code runs as SCHED_IDLE (set by the docker isolation)
ADDR_NO_RANDOMIZE = 0x0040000
# A submission larger than this is no lab directory: not copied (local), not sent (docker).
MAX_SUBMISSION_BYTES = 50 * MiB
MAX_SUBMISSION_FILES = 2000
NOT_SUBMITTED = (".git", "__pycache__")  # directories neither counted nor copied


@dataclass(frozen=True)
class Limits:
    """rlimits of every student process, and the watchdog's limits on the sandbox's processes
    together (the cgroup limits of the docker isolation come on top)."""

    nofile: int = 1024           # LABS.md: at most 1024 open descriptors
    # processes and threads of our own uid (without root: on top of what the user runs). A
    # container's pids limit (512) also counts the grader: half of it stays the grader's.
    # Legal designs need at most about 65 (a thread per client, or 64 workers and the main thread).
    nproc: int = 256
    address_space: int = 4 << 30  # virtual memory per process; not set for sanitizer builds
    cpu_seconds: int = 300       # CPU time per process
    file_size: int = 256 * MiB   # largest file a build or server may write
    memory: int = 1024 * MiB     # resident memory of all the sandbox's processes together (watchdog)
    scratch: int = 64 * MiB      # each private /tmp, /var/tmp, /dev/shm (root, outside containers)
    # SCHED_IDLE and nice 19: student code gets the CPU only when the grader does not want it.
    # For a container, where every task shares one CPU group: 256 spinning processes would
    # otherwise leave the grader 1/257 of it. On the machine itself autogroup (a CPU group per
    # session) already keeps the grader's share, and SCHED_IDLE would let anyone else's work
    # starve a correct server: off there.
    idle_cpu: bool = field(default_factory=lambda: os.environ.get(IDLE_ENV) == "1")

    def apply(self, *, nproc: int, sanitized: bool, own_uid: bool) -> None:
        """In a child between fork and exec: the CPU priority and rlimits of student code.
        `nproc` is its RLIMIT_NPROC; `own_uid`: it runs as a uid of its own (root), where that
        limit may be set above the current hard one."""
        if self.idle_cpu:
            os.setpriority(os.PRIO_PROCESS, 0, 19)  # kept if it ever leaves SCHED_IDLE: RLIMIT_NICE is 0
            resource.setrlimit(resource.RLIMIT_NICE, (0, 0))
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, self.nofile))
        resource.setrlimit(resource.RLIMIT_CPU, (self.cpu_seconds, self.cpu_seconds + 5))
        resource.setrlimit(resource.RLIMIT_FSIZE, (self.file_size, self.file_size))
        if sanitized:
            # Thread- and AddressSanitizer map huge shadow regions (no RLIMIT_AS); TSan needs a fixed layout
            ctypes.CDLL(None).personality(ADDR_NO_RANDOMIZE)
        else:
            resource.setrlimit(resource.RLIMIT_AS, (self.address_space, self.address_space))
        hard_nproc = resource.getrlimit(resource.RLIMIT_NPROC)[1]
        if own_uid or hard_nproc == resource.RLIM_INFINITY or nproc <= hard_nproc:
            resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))


def raise_nofile(want: int = 8192) -> None:
    """The load driver holds 500+ connections: lift our own descriptor limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def check_submission_size(source: Path, max_bytes: int = MAX_SUBMISSION_BYTES,
                          max_files: int = MAX_SUBMISSION_FILES) -> None:
    """SubmissionTooLarge when the tree under `source` holds more than `max_files` files or
    `max_bytes` bytes of regular files (symlinks not followed)."""
    total = files = 0
    for dirpath, dirnames, filenames in os.walk(source):
        dirnames[:] = [d for d in dirnames if d not in NOT_SUBMITTED]
        for f in filenames:
            files += 1
            try:
                st = os.lstat(os.path.join(dirpath, f))
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                total += st.st_size
            if files > max_files or total > max_bytes:
                raise SubmissionTooLarge(max_files, max_bytes)
