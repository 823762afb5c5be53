"""Archives in and out of a grading container: the submission as a tar built in memory, the
summary read back (bounded) from the container's volume."""
from __future__ import annotations

import io
import os
import stat
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ...errors import IsolationError, SubmissionTooLarge
from ...output import MiB
from ..local.limits import MAX_SUBMISSION_BYTES, MAX_SUBMISSION_FILES, NOT_SUBMITTED

MAX_SUMMARY_BYTES = 4 * MiB


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
        dirnames[:] = sorted(d for d in dirnames if d not in NOT_SUBMITTED)
        rel = os.path.relpath(dirpath, submission)
        for n in dirnames + sorted(filenames):
            yield os.path.normpath(os.path.join(rel, n)), Path(dirpath, n)


def submission_tar(submission: Path, *, arcname: str = "submission",
                   max_bytes: int = MAX_SUBMISSION_BYTES, max_files: int = MAX_SUBMISSION_FILES) -> bytes:
    """An in-memory tar of `submission` under `arcname/`: root-owned, modes at most 0755,
    symlinks stored as links (never followed), special files left out.

    Raises SubmissionTooLarge (a UsageError) when the tree holds more than `max_bytes` or `max_files`:
    the same limits as the local isolation's."""
    buf = io.BytesIO()
    total = files = 0
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
                    raise SubmissionTooLarge(max_files, max_bytes)
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



def out_dir_tar() -> bytes:
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

