"""`grade()`: grade one lab directory, in this machine's sandbox or in a container."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import catalogue, probes
from .errors import GradingEnvironmentError, ReportError, UsageError
from .isolation.local import end_processes, set_subreaper
from .processes import end_process
from .report import summarize
from .results import Summary

GRADE_TIMEOUT = 900.0
STOP_GRACE = 20.0  # s the checks have to tear down (close the sandbox) once asked, before SIGKILL
USAGE_ERROR = 4  # pytest's exit status for a usage error
HASH_BUDGET = 256 << 20  # bytes of a submission hashed at most (a gradable one is far smaller)


def grade(*, lab: str, submission: Path, isolation: str = "local", only: list[str] | None = None,
          visible_only: bool = False, reference_root: Path | None = None, label: str | None = None,
          extra_checks: Path | None = None, timeout: float = GRADE_TIMEOUT, seed: int | None = None) -> Summary:
    """Grade `submission` (a lab directory) and return its summary, which records what was graded
    (provenance): the grader's version, hashes of the lab's catalogue and of the submission's files,
    and the seed every payload derived from (`seed`: replay that grading's workload; default: drawn).

    `extra_checks`: a directory of the instructor's own check modules (pytest modules whose
    tests carry `@pytest.mark.check(id=..., points=..., visibility=...)`; a module-level
    `LAB = "fork"` limits one to a lab); they run after the catalogue's checks.
    """
    if lab not in catalogue.LABS:
        raise UsageError(f"unknown lab {lab!r}: choose one of {', '.join(catalogue.LABS)}")
    submission = Path(submission)
    if not submission.is_dir():
        raise UsageError(f"{submission} is not a directory")
    if extra_checks is not None and not Path(extra_checks).is_dir():
        raise UsageError(f"--extra-checks {extra_checks} is not a directory")
    known = {c.id for c in catalogue.checks(lab)}
    unknown = [c for c in (only or []) if c not in known] if extra_checks is None else []
    if unknown:
        raise UsageError(f"lab {lab} has no check {', '.join(unknown)}; its checks: {', '.join(sorted(known))}")
    label = label or default_label(submission)
    seed = secrets.randbits(31) if seed is None else seed
    if not 0 <= seed < 2**63:
        raise UsageError(f"--seed {seed}: a whole number from 0 to 2**63 - 1")
    whence = provenance(lab, submission, seed)
    if isolation == "docker":
        from .isolation import docker as dockeriso

        if extra_checks is not None:
            raise UsageError("--extra-checks with --isolation docker: build the checks into the grader image "
                             "(grader/checks/hidden/) instead")
        summary = dockeriso.grade_in_container(lab=lab, submission=submission, only=only,
                                               visible_only=visible_only, timeout=timeout, seed=seed)
        return summary.replace(submission=label, **whence)
    if isolation != "local":
        raise UsageError(f"unknown isolation {isolation!r}: local or docker")
    if reference_root is None:
        from .session import default_reference_root

        reference_root = default_reference_root()  # resolved here, in the caller's working directory
    summary = _grade_local(lab, submission.resolve(), only, visible_only, reference_root, label, timeout,
                           Path(extra_checks).resolve() if extra_checks else None, seed)
    return summary.replace(**whence)


def provenance(lab: str, submission: Path, seed: int) -> dict[str, Any]:
    """What a summary records of what it graded: enough to tell two gradings of the same thing
    apart from gradings of different things, and to replay one (`seed`)."""
    from . import __version__
    from .handout import is_build_product

    rows = [[c.id, c.points, c.visibility] for c in catalogue.checks(lab)]
    files, seen, budget = hashlib.sha256(), 0, HASH_BUDGET
    for d, dirs, names in os.walk(submission):  # links not followed: a link is its target's name
        dirs.sort()
        for name in sorted(names):
            f = Path(d) / name
            if name.startswith(".") or is_build_product(f):
                continue
            seen += 1
            if seen > HASH_BUDGET // 4096 or budget <= 0:  # a tree too large to grade: hashed in part
                files.update(b"\0and more")
                break
            body = os.readlink(f).encode() if f.is_symlink() else f.read_bytes()[:budget] if f.is_file() else b""
            budget -= len(body)
            files.update(f"{f.relative_to(submission).as_posix()}\0{len(body)}\0".encode() + body)
    return {"grader_version": __version__, "seed": seed,
            "catalogue_sha256": hashlib.sha256(json.dumps([lab, rows]).encode()).hexdigest(),
            "submission_sha256": files.hexdigest()}


def default_label(submission: Path) -> str:
    p = submission.resolve()
    return f"{p.parent.name}/{p.name}"


def _grade_local(lab: str, submission: Path, only: list[str] | None, visible_only: bool,
                 reference_root: Path | None, label: str, timeout: float,
                 extra_checks: Path | None = None, seed: int | None = None) -> Summary:
    t0 = time.monotonic()
    set_subreaper()  # whatever escapes the pytest process comes back to us, and we remove it
    before = {p.pid for p in probes.descendants(os.getpid())}  # the caller's own, never touched
    with tempfile.TemporaryDirectory(prefix="labgrade-run-") as tmp:
        report_path = Path(tmp) / "report.json"
        argv = [sys.executable, "-m", "pytest", "--pyargs", f"grader.checks.test_{lab}",
                "-p", "grader.plugin", "-p", "pytest_jsonreport.plugin", "-p", "no:cacheprovider",
                "-c", os.devnull, "--rootdir", tmp,
                "-q", "--no-header", "-p", "no:randomly",
                "--json-report", f"--json-report-file={report_path}",
                "--json-report-omit", "collectors", "log", "streams", "warnings", "keywords",
                "--lab", lab, "--submission", str(submission), "--private-network"]
        if seed is not None:
            argv += ["--seed", str(seed)]
        if extra_checks:
            argv.append(str(extra_checks))
        if only:
            argv += ["--only", ",".join(only)]
        if visible_only:
            argv.append("--visible-only")
        if reference_root:
            argv += ["--reference-root", str(Path(reference_root).resolve())]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
        # only the two plugins above: others installed here are not loaded (hypothesis's alone cost 3 s a grading)
        env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
        # the checks import this very package, installed or run from a checkout
        pkg_parent = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join([pkg_parent, *filter(None, [env.get("PYTHONPATH")])])
        proc = subprocess.Popen(argv, cwd=tmp, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            # SIGINT: pytest tears its fixtures down (the sandbox is closed); SIGKILL if it does not
            end_process(proc, first=signal.SIGINT, grace=STOP_GRACE, group=True)
            raise GradingEnvironmentError(f"grading did not finish within {timeout:.0f} s") from None
        except BaseException:  # Ctrl-C, a batch stopping us: the checks end, the exception goes on
            with contextlib.suppress(Exception):
                end_process(proc, first=signal.SIGINT, grace=STOP_GRACE, group=True)
            raise
        finally:
            _sweep_descendants(before)
        if proc.returncode == USAGE_ERROR:
            from .plugin import MALFORMED

            said = [line.removeprefix("ERROR: ") for line in out.decode(errors="replace").splitlines()
                    if line.startswith(f"ERROR: {MALFORMED}")]
            if said:  # the plugin refused a check (an instructor's extra check): the caller's to fix
                raise UsageError("\n".join(said))
        try:
            report = json.loads(report_path.read_text())
        except (OSError, ValueError) as e:
            tail = out.decode(errors="replace")[-3000:]
            raise ReportError(f"the checks did not produce a report ({e}); pytest said:\n{tail}") from e
    return summarize(lab=lab, submission=label, pytest_report=report, seconds=time.monotonic() - t0)


def _sweep_descendants(keep: set[int]) -> None:
    """Kill and reap what this grading left under us (orphans of the pytest process land here),
    sparing the processes the caller had before it started."""
    me = os.getpid()

    def left() -> list[probes.Proc]:
        return [p for p in probes.descendants(me) if p.pid not in keep and not p.zombie]

    end_processes(left, timeout=1.0, spare=keep)
