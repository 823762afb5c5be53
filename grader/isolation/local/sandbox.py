"""`Sandbox`: one grading's place to run student code, and the owner of everything started there.

It holds a work directory, a uid of the pool (root), port locks and a watchdog, and makes the
child's setup between fork and exec; `close()` (or leaving `with Sandbox() as sb:`) ends every
process it is responsible for and gives everything back, also when its start failed half-way.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType

from ... import probes
from ...errors import IsolationError
from .limits import (
    MAX_SUBMISSION_BYTES,
    MAX_SUBMISSION_FILES,
    NOT_SUBMITTED,
    Limits,
    check_submission_size,
    raise_nofile,
)
from .locks import lock_dir
from .namespaces import SCRATCH_DIRS, private_fs_supported, private_ipc, private_ipc_supported, private_view
from .ports import reserve_port
from .reaper import end_processes, set_subreaper
from .uids import reserve_uid
from .watchdog import Watchdog

WORK_ROOT_ENV = "LABGRADE_WORK_ROOT"  # where sandboxes make their work directories (default: the temp dir)


class Sandbox:
    """Owns a work directory, a uid (as root), port locks, and every process started inside."""

    def __init__(self, limits: Limits | None = None, *, hide: Iterable[Path] = ()) -> None:
        self.limits = limits or Limits()
        self.hide = [str(Path(h).resolve()) for h in hide]
        self.spawned: set[int] = set()  # our direct children that their owners wait for
        self.uid: int | None = None
        self.gid: int | None = None
        self.private_fs = False
        self.private_ipc = False  # each process started here gets an IPC namespace of its own
        self.watchdog = Watchdog(self.limits, self.processes, self._end_all_now)
        self._locks: list[int] = []
        self._closed = False
        self.root = Path(tempfile.mkdtemp(prefix="labgrade-", dir=os.environ.get(WORK_ROOT_ENV) or None))
        try:
            if os.geteuid() == 0:
                uid, lock = reserve_uid()
                self._locks.append(lock)
                self.uid = self.gid = uid
                self._end_all_now()  # leftovers of a grading that died without cleaning up
            # students' uid must traverse to its work dirs, never list or write ours
            os.chmod(self.root, 0o711)
            self.private_fs = self.uid is not None and private_fs_supported()
            self.private_ipc = self.uid is not None and private_ipc_supported()
            set_subreaper()
            raise_nofile()
        except BaseException:
            self._release()  # nothing of it ran yet: its directory and locks go back
            raise

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- resources ---------------------------------------------------------------
    def allocate_port(self) -> int:
        """A free TCP port, locked until close (ports.reserve_port)."""
        port, lock = reserve_port()
        self._locks.append(lock)
        return port

    def workdir(self, name: str, source: Path | None = None, *, max_bytes: int = MAX_SUBMISSION_BYTES,
                max_files: int = MAX_SUBMISSION_FILES) -> Path:
        """A directory the student uid owns, optionally a copy of `source` (symlinks not followed;
        SubmissionTooLarge past the limits)."""
        dest = self.root / name
        if source is None:
            dest.mkdir()
        else:
            check_submission_size(source, max_bytes, max_files)
            shutil.copytree(source, dest, symlinks=True,
                            ignore=shutil.ignore_patterns("server", "*.o", *NOT_SUBMITTED))
        if self.uid is not None:
            for dirpath, dirnames, filenames in os.walk(dest):
                for n in [dirpath, *(os.path.join(dirpath, f) for f in dirnames + filenames)]:
                    os.lchown(n, self.uid, self.gid if self.gid is not None else self.uid)
        os.chmod(dest, 0o700)  # its uid only: another grading's (or the reference's) uid cannot enter
        return dest

    # -- running student code -----------------------------------------------------
    def env(self, home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8",
               "TERM": "dumb", "TMPDIR": str(home)}
        env.update(extra or {})
        return env

    def preexec(self, *, sanitized: bool = False, new_session: bool = True) -> Callable[[], None]:
        """Runs in the child between fork and exec: limits, a private view of the file system and
        IPC objects of its own (root, outside containers), then the unprivileged uid. Starts the
        watchdog."""
        lim, uid, gid = self.limits, self.uid, self.gid
        # RLIMIT_NPROC counts every process of the real uid: without root, leave room for the user's own
        nproc = lim.nproc if uid is not None else lim.nproc + sum(p.uid == os.getuid() for p in probes.all_procs())
        private, ipc, keep, hide = self.private_fs, self.private_ipc, str(self.root), list(self.hide)
        self.watchdog.start()

        def setup() -> None:
            if new_session:
                with contextlib.suppress(OSError):
                    os.setsid()
            # the OOM killer's first choice, before the grader (root keeps it from being lowered again)
            with contextlib.suppress(OSError), open("/proc/self/oom_score_adj", "w") as f:
                f.write("1000")
            if private:
                private_view(keep, hide, lim.scratch)
            if ipc:
                private_ipc()
            lim.apply(nproc=nproc, sanitized=sanitized, own_uid=uid is not None)
            if uid is not None and gid is not None:
                os.setgroups([])
                os.setresgid(gid, gid, gid)
                os.setresuid(uid, uid, uid)
            os.umask(0o022)
            signal.signal(signal.SIGPIPE, signal.SIG_DFL)

        return setup

    # -- cleanup -------------------------------------------------------------------
    def processes(self) -> list[probes.Proc]:
        """Every live process this sandbox is responsible for: its uid's (root), else every
        descendant of the grader."""
        if self.uid is not None:
            procs = [probes.proc(pid) for pid in probes.pids_of(self.uid)]
            return [p for p in procs if p is not None and not p.zombie]
        return [p for p in probes.descendants(os.getpid()) if not p.zombie]

    def kill_all(self, timeout: float = 5.0) -> list[probes.Proc]:
        """SIGKILL everything and reap it; returns what is still alive after `timeout` (should be
        nothing). Once nothing is left, what the uid left in scratch directories goes too."""
        left = end_processes(self.processes, uid=self.uid, timeout=timeout, spare=self.spawned)
        if not left:
            self.sweep_scratch()
        return left

    def sweep_scratch(self) -> None:
        """Remove what our uid left in the machine's scratch directories (and the lock directory).
        Only as root, where the uid is ours alone; its processes must be gone first. Not where its
        processes have a private view of the file system: their scratch directories were their own
        tmpfs, and the machine's (the lock directory holds a file per port and uid ever used: thousands)
        were out of their reach."""
        if self.uid is None or self.private_fs:
            return
        for d in (*SCRATCH_DIRS, str(lock_dir())):
            try:
                entries = list(os.scandir(d))
            except OSError:
                continue
            for e in entries:
                try:
                    if e.stat(follow_symlinks=False).st_uid != self.uid:
                        continue
                    if e.is_dir(follow_symlinks=False):
                        shutil.rmtree(e.path, ignore_errors=True)
                    else:
                        os.unlink(e.path)
                except OSError:
                    continue

    def _end_all_now(self) -> None:
        """SIGKILL everything, from any thread (the watchdog's: it never reaps)."""
        end_processes(self.processes, uid=self.uid, timeout=1.0, reap=False)

    def close(self) -> None:
        """End every process, stop the watchdog, remove the work directory, give the uid and the
        ports back. Once: the uid may be another grading's afterwards."""
        if self._closed:
            return
        try:
            left = self.kill_all()
        finally:
            self._release()
        if left:
            raise IsolationError("processes survived cleanup: " + ", ".join(p.describe() for p in left))

    def _release(self) -> None:
        self._closed = True
        self.watchdog.stop()
        shutil.rmtree(self.root, ignore_errors=True)
        for fd in self._locks:
            os.close(fd)
        self._locks.clear()
