"""`grade()`: grade one lab directory, in this machine's sandbox or in a container."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import catalogue, probes
from .errors import GradingEnvironmentError, ReportError, UsageError
from .report import summarize
from .sandbox import set_subreaper
from .schema import validate_summary

GRADE_TIMEOUT = 900.0


def grade(*, lab: str, submission: Path, isolation: str = "local", only: list[str] | None = None,
          visible_only: bool = False, reference_root: Path | None = None, label: str | None = None,
          extra_checks: Path | None = None, timeout: float = GRADE_TIMEOUT) -> dict[str, Any]:
    """Grade `submission` (a lab directory) and return its summary JSON (validated).

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
    if isolation == "docker":
        from .isolation import docker as dockeriso

        if extra_checks is not None:
            raise UsageError("--extra-checks with --isolation docker: build the checks into the grader image "
                             "(grader/checks/hidden/) instead")
        summary = dockeriso.grade_in_container(lab=lab, submission=submission, only=only,
                                               visible_only=visible_only, timeout=timeout)
        summary["submission"] = label
        return validate_summary(summary)
    if isolation != "local":
        raise UsageError(f"unknown isolation {isolation!r}: local or docker")
    if reference_root is None:
        from .session import default_reference_root

        reference_root = default_reference_root()  # resolved here, in the caller's working directory
    return _grade_local(lab, submission.resolve(), only, visible_only, reference_root, label, timeout,
                        Path(extra_checks).resolve() if extra_checks else None)


def default_label(submission: Path) -> str:
    p = submission.resolve()
    return f"{p.parent.name}/{p.name}"


def _grade_local(lab: str, submission: Path, only: list[str] | None, visible_only: bool,
                 reference_root: Path | None, label: str, timeout: float,
                 extra_checks: Path | None = None) -> dict[str, Any]:
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
            os.killpg(proc.pid, signal.SIGINT)  # pytest tears its fixtures down: the sandbox is closed
            try:
                out, _ = proc.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                out, _ = proc.communicate()
            raise GradingEnvironmentError(f"grading did not finish within {timeout:.0f} s") from None
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGINT)
            proc.wait(20)
            raise
        finally:
            _sweep_descendants(before)
        try:
            report = json.loads(report_path.read_text())
        except (OSError, ValueError) as e:
            tail = out.decode(errors="replace")[-3000:]
            raise ReportError(f"the checks did not produce a report ({e}); pytest said:\n{tail}") from e
    return summarize(lab=lab, submission=label, pytest_report=report, seconds=time.monotonic() - t0)


def _sweep_descendants(keep: set[int]) -> None:
    """Kill and reap what this grading left under us (orphans of the pytest process land here),
    sparing the processes the caller had before it started."""
    for _ in range(50):
        procs = probes.all_procs()
        left = [p for p in probes.descendants(os.getpid(), procs) if p.pid not in keep]
        for p in left:
            if not p.zombie:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(p.pid, signal.SIGKILL)
        for p in left:
            if p.ppid == os.getpid():
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(p.pid, os.WNOHANG)
        if not left:
            return
        time.sleep(0.02)
