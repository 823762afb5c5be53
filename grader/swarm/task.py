"""`labgrade swarm-task`: what one Swarm task runs, in the grader image, on the node Swarm chose.

A trusted launcher, never student code: it holds the node's Docker socket and grades the
submission (the task's secret: a gzip of the tar the coordinator made) exactly as
`labgrade grade --isolation docker` does on that node's engine, in today's grading container with
every one of its limits. The summary leaves on standard output, framed (grader.swarm.frames);
an environment failure leaves as an error frame, never as a score.

SIGTERM (the service removed: a stopped batch, a lost attempt) raises KeyboardInterrupt, so the
grading container and its volume are removed before the task ends (its stop grace is long enough).

`--fake SECONDS`: no grading; a canned summary (every check passed, the submission's real
provenance) after SECONDS, through the same secret, logs and frames: the coordinator's
simulation mode.
"""
from __future__ import annotations

import gzip
import io
import signal
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

from .frames import encode

ARCNAME = "submission"


def unpack(blob: bytes, dest: Path) -> Path:
    """Extract the coordinator's tar (gzip) under `dest`; returns the submission's directory.
    Only directories, regular files and symbolic links under `submission/`, never through a link."""
    links: set[str] = set()
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob)), mode="r:") as tar:
        members = tar.getmembers()
        for m in members:
            parts = m.name.split("/")
            if parts[0] != ARCNAME or m.name.startswith("/") or ".." in parts or not (m.isdir() or m.isfile()
                                                                                    or m.issym()):
                raise ValueError(f"unexpected member {m.name!r} in the submission's archive")
            if any("/".join(parts[:k]) in links for k in range(1, len(parts))):
                raise ValueError(f"member {m.name!r} lies under a symbolic link")
            if m.issym():
                links.add(m.name)
        tar.extractall(dest, members=members)  # every member checked above
    return dest / ARCNAME


def fake_summary(lab: str, submission: Path) -> dict[str, Any]:
    from .. import catalogue
    from ..run import provenance

    rows = [{"id": c.id, "status": "passed", "score": c.points, "max_score": c.points, "visibility": c.visibility,
             "feedback": "fake grading (labgrade batch --swarm --fake): not graded", "seconds": 0.0}
            for c in catalogue.checks(lab)]
    total = sum(c.points for c in catalogue.checks(lab))
    return {"lab": lab, "submission": "", "gradable": True, "score": total, "max_score": total, "seconds": 0.0,
            "checks": rows, **provenance(lab, submission, 0)}


def _term(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def run_task(lab: str, secret: Path, token: str, fake: float | None = None) -> int:
    from ..errors import GraderError
    from ..run import GRADE_TIMEOUT, grade

    signal.signal(signal.SIGTERM, _term)
    t0 = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="labgrade-swarm-") as tmp:
            submission = unpack(secret.read_bytes(), Path(tmp))
            if fake is not None:
                time.sleep(max(0.0, fake))
                out: dict[str, Any] = {"summary": {**fake_summary(lab, submission), "seconds": time.monotonic() - t0}}
            else:
                out = {"summary": grade(lab=lab, submission=submission, isolation="docker",
                                        timeout=GRADE_TIMEOUT).to_json()}
    except KeyboardInterrupt:
        return 143
    except (GraderError, OSError, ValueError, tarfile.TarError) as e:
        out = {"error": f"{type(e).__name__}: {e}"}
    sys.stdout.write("".join(line + "\n" for line in encode(out, token)))
    sys.stdout.flush()
    return 0
