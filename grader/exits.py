"""Why a server ended, for feedback: its exit status or signal, and who sent the signal (the
watchdog, the kernel's OOM killer, the grader stopping it, or the submission itself)."""
from __future__ import annotations

import signal
import time

from . import probes
from .isolation.local import Sandbox, cgroup_memory_limit, cgroup_oom_kills
from .output import size


def still_running(p: probes.Proc, since: float) -> str:
    """'still running', and how busy when it spent most of its time since `since` on the CPU."""
    elapsed = time.monotonic() - since
    if elapsed > 1 and p.cpu_seconds > 0.25 * elapsed:
        return f"still running, and busy: {p.cpu_seconds:.1f} s of CPU time in its {elapsed:.1f} s"
    return "still running"


def ended(sig: int | None, code: int | None, *, sandbox: Sandbox, since: float, oom_kills: int | None,
          stopping: bool) -> str:
    """How a server started at `since` (monotonic) ended, from its wait status ('killed by SIGPIPE',
    'exited with status 1'), with the reason when a limit ended it ('killed by the grader (SIGKILL):
    its processes used 1100 MiB of memory, more than the limit of 1024 MiB'). `oom_kills`: the
    cgroup's OOM-kill count when it started; `stopping`: the grader was ending it."""
    if sig is None:
        return f"exited with status {code}"
    name = signal.Signals(sig).name
    if sig == signal.SIGKILL:
        why = sandbox.watchdog.violation(since)
        if why:
            return f"killed by the grader (SIGKILL): {why}"
        oom = cgroup_oom_kills()
        if oom is not None and oom_kills is not None and oom > oom_kills:
            limit = cgroup_memory_limit()
            return ("killed by the kernel's out-of-memory killer (SIGKILL) after using "
                    f"{size(sandbox.watchdog.peak_memory)}"
                    + (f": the grading's memory limit of {size(limit)} was reached" if limit else ""))
        if stopping:
            return "killed by SIGKILL (stopped by the grader)"
        return ("killed by SIGKILL, which the grader did not send: a process of the submission sent it "
                "(kill(-1, SIGKILL)?), or the kernel did")
    lim = sandbox.limits
    reasons = {
        signal.SIGXCPU: f": it used more than the limit of {lim.cpu_seconds} s of CPU time",
        signal.SIGXFSZ: f": it tried to write a file larger than the limit of {size(lim.file_size)}",
        signal.SIGSEGV: " (a segmentation fault: an invalid memory access)",
        signal.SIGBUS: " (a bus error: an invalid memory access)",
        signal.SIGABRT: " (abort(): a failed assert, or the C library found its heap corrupted)",
        signal.SIGPIPE: " (it wrote to a connection its client had closed, with SIGPIPE not ignored)",
    }
    return f"killed by {name}{reasons.get(signal.Signals(sig), '')}"
