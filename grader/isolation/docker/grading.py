"""One grading in a fresh container: `grade_in_container`, and the summary of a submission
too large to send."""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from ...errors import IsolationError, SubmissionTooLarge, UsageError
from ...output import MiB
from ...results import Summary
from ..local import IDLE_ENV, UIDS_ENV, reserve_uids
from .archives import out_dir_tar, read_file_from, submission_tar
from .engine import (
    DEFAULT_IMAGE,
    GRADING_DIR,
    MEMORY,
    SUBMISSION_DIR,
    SUMMARY_PATH,
    UIDS_PER_GRADING,
    client,
    container_options,
    create_volume,
    library_errors,
    new_session,
    remove_objects,
    sdk,
)


def grading_command(*, lab: str, only: list[str] | None = None, visible_only: bool = False,
                    extra_args: list[str] | None = None, seed: int | None = None) -> list[str]:
    cmd = ["labgrade", "grade", lab, SUBMISSION_DIR, "--isolation", "local", "--json", SUMMARY_PATH]
    if seed is not None:
        cmd += ["--seed", str(seed)]
    if only:
        cmd += ["--only", ",".join(only)]
    if visible_only:
        cmd.append("--visible-only")
    return cmd + list(extra_args or [])


def _validate(obj: Any) -> Summary:
    return Summary.from_json(obj)  # schema-checked: the container's JSON is untrusted until then


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
                      visible_only: bool = False) -> Summary:
    """The summary of a submission refused before it was sent: its build fails (with the same
    feedback as in the local isolation) and every other check is not graded."""
    from ... import catalogue
    from ...verdict import CheckFailed, NotGraded

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
                       extra_args: list[str] | None = None, session: str | None = None,
                       seed: int | None = None) -> Summary:
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
    errors = library_errors()
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
                                                                   extra_args=extra_args, seed=seed),
                                           environment={UIDS_ENV: ",".join(map(str, uids)), IDLE_ENV: "1"}))
            # out/ first (root, 0700), then the submission; both before the container starts
            if not container.put_archive(GRADING_DIR, out_dir_tar()):
                raise IsolationError("could not create the output directory in the container")
            if not container.put_archive(GRADING_DIR, payload):
                raise IsolationError("could not copy the submission into the container")
            container.start()
        except sdk().errors.ImageNotFound as e:
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
        except sdk().errors.NotFound:
            raise IsolationError(_describe_failure(container, status) + "\n(no summary was written)") from None
        except errors as e:
            raise IsolationError(f"could not copy the summary out of the container: {e}") from e
        try:
            obj = json.loads(raw)
        except ValueError as e:
            from ...errors import ReportError

            raise ReportError(f"the summary written in the container is not JSON: {e}") from e
        return _validate(obj)
    finally:
        remove_objects(c, container, volume)
        for fd in uid_locks:  # the container and every process of its uids are gone
            os.close(fd)
        with contextlib.suppress(Exception):
            c.close()

