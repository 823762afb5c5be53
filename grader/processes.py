"""Ending a child process, one way everywhere: ask, wait, kill, reap."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from typing import AnyStr

REAP_TIMEOUT = 5.0  # after SIGKILL: for the pipes to close (a grandchild may hold them open)


def end_process(proc: subprocess.Popen[AnyStr], first: int | None = signal.SIGTERM, grace: float = 10.0, *,
                group: bool = False) -> tuple[AnyStr | None, AnyStr | None]:
    """End `proc` and reap it: send it `first` (None: it was asked already), give it `grace` seconds
    to exit, then SIGKILL. With `group`, the signals go to its process group (it leads one:
    start_new_session=True). Returns what `communicate()` read from its pipes, its output before
    this call included (None for a stream not piped).

    However this is interrupted (a second Ctrl-C), the process is killed and reaped before the
    exception goes on."""
    out: tuple[AnyStr | None, AnyStr | None] = (None, None)
    exited = False
    try:
        if first != signal.SIGKILL:
            if first is not None:
                _send(proc, first, group)
            with contextlib.suppress(subprocess.TimeoutExpired):
                out = proc.communicate(timeout=grace)
                exited = True
    finally:
        if not exited:  # not reaped yet: its pid, and so its group, are still its own
            _send(proc, signal.SIGKILL, group)
            out = _reap(proc)
    return out


def _send(proc: subprocess.Popen[AnyStr], sig: int, group: bool) -> None:
    if proc.returncode is not None:  # reaped: its pid may be another process's by now
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if group:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)


def _reap(proc: subprocess.Popen[AnyStr]) -> tuple[AnyStr | None, AnyStr | None]:
    try:
        return proc.communicate(timeout=REAP_TIMEOUT)
    except (subprocess.TimeoutExpired, ValueError, OSError):
        # something outside it holds its pipes open, or they were closed: stop reading, only reap
        for f in (proc.stdout, proc.stderr):
            if f is not None:
                with contextlib.suppress(OSError):
                    f.close()
        proc.wait()
        return None, None
