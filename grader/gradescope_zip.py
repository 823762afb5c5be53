"""`labgrade gradescope LAB --out autograder.zip`: this grader as a Gradescope autograder.

The zip (Gradescope unpacks it into /autograder/source):

    setup.sh                  installs gcc/make/Python when missing, then the grader (see the script)
    run_autograder            grades /autograder/submission into /autograder/results/results.json
    labgrade/config.json      the lab, where the reference and hidden checks are, the time limit
    labgrade/requirements.txt the grader's dependencies (from its wheel's metadata; not the Docker SDK)
    labgrade/wheels/          the grader's wheel, and the wheels of images/wheels/ when present
    reference/<lab>/          the reference server (root-only once set up): `vs-reference` runs
    extra-checks/             the instructor's hidden check modules, when --extra-checks is given

In the container, `python -m grader.gradescope_zip run` finds the lab in the submission (its
top, a `LAB/` directory, or one level down), runs `labgrade grade LAB DIR --gradescope ...` as
root, and always leaves a valid results.json: a failure to grade gives score 0 with the reason.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

from . import catalogue
from .atomic import write_json
from .errors import ReportError, UsageError
from .processes import end_process

SOURCE = Path("/autograder/source")
SUBMISSION = Path("/autograder/submission")
RESULTS = Path("/autograder/results/results.json")
DEFAULT_TIMEOUT = 540.0  # under Gradescope's default limit of 10 minutes per submission
NOT_NEEDED = {"docker"}  # the Docker SDK: Gradescope grades in its own container, isolation `local`
VISIBILITIES = ("hidden", "after_due_date", "after_published", "visible")
STOP_GRACE = 30.0  # s a grading out of time has to remove its processes (SIGINT) before SIGKILL


# ----------------------------------------------------------------------------- building the zip

def _copy_package_source(root: Path, dest: Path) -> None:
    from .handout import is_build_product

    dest.mkdir(parents=True)
    shutil.copy2(root / "pyproject.toml", dest / "pyproject.toml")
    readme = root / "README.md"
    if readme.is_file():
        shutil.copy2(readme, dest / "README.md")
    else:
        (dest / "README.md").write_text("labgrade\n")
    shutil.copytree(root / "grader", dest / "grader",
                    ignore=lambda d, names: [n for n in names if is_build_product(Path(d) / n)])


def build_wheel(root: Path, dest: Path) -> Path:
    """The grader's wheel, built from a copy of its source (the checkout is left untouched)."""
    with tempfile.TemporaryDirectory(prefix="labgrade-wheel-") as tmp:
        src = Path(tmp) / "src"
        _copy_package_source(root, src)
        base = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir", "--disable-pip-version-check",
                "-q", "-w", str(dest), str(src)]
        # offline with the build backend installed here; else pip fetches setuptools and wheel
        for argv in ([*base[:4], "--no-build-isolation", *base[4:]], base):
            r = subprocess.run(argv, capture_output=True, text=True, cwd=tmp)
            if r.returncode == 0:
                break
        else:
            raise UsageError(f"could not build the grader's wheel:\n{(r.stdout + r.stderr)[-3000:]}")
    wheels = sorted(dest.glob("labgrade-*.whl"))
    if not wheels:
        raise UsageError("pip built no labgrade wheel")
    return wheels[-1]


def wheel_requirements(wheel: Path) -> list[str]:
    """Requires-Dist of the wheel, without extras and without what Gradescope does not need."""
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        text = z.read(meta).decode()
    reqs = []
    for line in text.splitlines():
        if not line.startswith("Requires-Dist:"):
            continue
        req, _, marker = line.split(":", 1)[1].partition(";")
        m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", req)
        if m is None or "extra" in marker or m.group(1).lower() in NOT_NEEDED:
            continue
        # `name (>=1.0)` (older setuptools) and `name>=1.0` alike become `name>=1.0`
        spec = re.sub(r"[\s()]", "", req)
        reqs.append(spec + (f"; {marker.strip()}" if marker.strip() else ""))
    return reqs


def _add(z: zipfile.ZipFile, arcname: str, data: bytes, mode: int = 0o644) -> None:
    info = zipfile.ZipInfo(arcname, date_time=time.localtime()[:6])
    info.external_attr = (0o100000 | mode) << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    z.writestr(info, data)


def build_zip(lab: str, out: Path, *, source: Path | None = None, reference_root: Path | None = None,
              extra_checks: Path | None = None, timeout: float = DEFAULT_TIMEOUT) -> list[str]:
    """Write the autograder zip for `lab` to `out`; returns the names it holds."""
    from .handout import find_source_root, is_build_product, template

    if lab not in catalogue.LABS:
        raise UsageError(f"unknown lab {lab!r}: choose one of {', '.join(catalogue.LABS)}")
    root = find_source_root(source)
    if reference_root is None:
        from .session import default_reference_root

        reference_root = default_reference_root() or root / "reference"
    ref = Path(reference_root) / lab
    if not (ref / "Makefile").is_file():
        raise UsageError(f"no reference server in {ref} (give --reference-root): without it `vs-reference` "
                         "could not run on Gradescope")
    if extra_checks is not None and not Path(extra_checks).is_dir():
        raise UsageError(f"--extra-checks {extra_checks} is not a directory")
    config = {"lab": lab, "reference_root": str(SOURCE / "reference"),
              "extra_checks": str(SOURCE / "extra-checks") if extra_checks else None, "timeout": timeout}
    names: list[str] = []
    with tempfile.TemporaryDirectory(prefix="labgrade-zip-") as tmp:
        wheel = build_wheel(root, Path(tmp) / "dist")
        part = Path(str(out) + ".part")
        with zipfile.ZipFile(part, "w") as z:
            def add(arcname: str, data: bytes, mode: int = 0o644) -> None:
                _add(z, arcname, data, mode)
                names.append(arcname)

            add("setup.sh", template("gradescope/setup.sh", root).encode(), 0o755)
            add("run_autograder", template("gradescope/run_autograder", root).encode(), 0o755)
            add("labgrade/config.json", (json.dumps(config, indent=2) + "\n").encode())
            add("labgrade/requirements.txt", ("\n".join(wheel_requirements(wheel)) + "\n").encode())
            add(f"labgrade/wheels/{wheel.name}", wheel.read_bytes())
            wheels_dir = root / "images" / "wheels"
            for w in sorted(wheels_dir.glob("*.whl")) if wheels_dir.is_dir() else []:
                add(f"labgrade/wheels/{w.name}", w.read_bytes())
            for f in sorted(ref.rglob("*")):
                rel = f.relative_to(ref)
                if f.is_file() and not f.is_symlink() and not any(
                        is_build_product(ref.joinpath(*rel.parts[:i + 1])) for i in range(len(rel.parts))):
                    add(f"reference/{lab}/{rel.as_posix()}", f.read_bytes())
            if extra_checks is not None:
                for f in sorted(Path(extra_checks).rglob("*.py")):
                    if "__pycache__" not in f.parts:
                        add(f"extra-checks/{f.relative_to(extra_checks).as_posix()}", f.read_bytes())
        part.replace(out)
    return names


# ----------------------------------------------------------------------------- in the container

def find_lab_dir(lab: str, root: Path) -> Path | None:
    """Where the lab is in a submission: a `LAB/` directory, `assignments/LAB/`, the top itself,
    or those inside the one directory a zip of a folder makes."""
    def is_lab(d: Path) -> bool:
        return d.is_dir() and ((d / "Makefile").is_file() or (d / "makefile").is_file() or any(d.glob("*.c")))

    tops = [root]
    subdirs = [d for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith((".", "__MACOSX"))] \
        if root.is_dir() else []
    if len(subdirs) == 1 and subdirs[0].name != lab:
        tops.append(subdirs[0])
    for top in tops:
        for cand in (top / lab, top / "assignments" / lab, top):
            if is_lab(cand):
                return cand
    return None


def failure_results(message: str, seconds: float = 0.0) -> dict[str, Any]:
    return {"score": 0, "execution_time": round(seconds, 2), "output": message, "visibility": "visible",
            "stdout_visibility": "hidden", "tests": []}


def validate_results(obj: Any) -> dict[str, Any]:
    """Gradescope's results.json as this grader writes it (the specification's fields and values);
    raises ReportError saying what is wrong."""
    if not isinstance(obj, dict):
        raise ReportError("results: expected an object")
    if not isinstance(obj.get("score"), int | float) or isinstance(obj.get("score"), bool):
        raise ReportError("results: `score` must be a number")
    for key in ("output", "visibility", "stdout_visibility"):
        if key in obj and not isinstance(obj[key], str):
            raise ReportError(f"results: `{key}` must be a string")
    if obj.get("visibility", "visible") not in VISIBILITIES:
        raise ReportError(f"results: visibility {obj['visibility']!r}")
    tests = obj.get("tests")
    if not isinstance(tests, list):
        raise ReportError("results: `tests` must be a list")
    for i, t in enumerate(tests):
        if not isinstance(t, dict):
            raise ReportError(f"tests[{i}]: expected an object")
        for key, typ in (("name", str), ("output", str), ("status", str), ("visibility", str)):
            if not isinstance(t.get(key), typ):
                raise ReportError(f"tests[{i}]: `{key}` must be a {typ.__name__}")
        for key in ("score", "max_score"):
            if not isinstance(t.get(key), int | float) or isinstance(t.get(key), bool):
                raise ReportError(f"tests[{i}]: `{key}` must be a number")
        if t["status"] not in ("passed", "failed"):
            raise ReportError(f"tests[{i}]: status {t['status']!r} is not passed or failed")
        if t["visibility"] not in VISIBILITIES:
            raise ReportError(f"tests[{i}]: visibility {t['visibility']!r}")
        if not 0 <= t["score"] <= t["max_score"]:
            raise ReportError(f"tests[{i}]: score {t['score']} outside 0..{t['max_score']}")
    if tests and abs(sum(t["score"] for t in tests) - obj["score"]) > 1e-9:
        raise ReportError("results: `score` is not the sum of the tests' scores")
    return obj


def _write(path: Path, obj: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, obj)


def run(*, lab: str, submission: Path = SUBMISSION, results: Path = RESULTS, reference_root: Path | None = None,
        extra_checks: Path | None = None, timeout: float = DEFAULT_TIMEOUT, python: str = sys.executable) -> int:
    """Grade the submission for Gradescope. Always writes `results` (returns 0 once it has)."""
    t0 = time.monotonic()
    results.unlink(missing_ok=True)
    d = find_lab_dir(lab, submission)
    if d is None:
        seen = sorted(p.name for p in submission.iterdir()) if submission.is_dir() else []
        _write(results, failure_results(
            f"No `{lab}` lab found in your submission. Upload the files of your lab directory (Makefile, "
            f"server.c, ...), or a folder named `{lab}` that holds them. Your submission had: "
            f"{', '.join(seen) or 'nothing'}."))
        return 0
    with tempfile.TemporaryDirectory(prefix="labgrade-gs-") as tmp:
        out = Path(tmp) / "results.json"
        argv = [python, "-m", "grader", "grade", lab, str(d), "--gradescope", str(out)]
        if reference_root is not None:
            argv += ["--reference-root", str(reference_root)]
        if extra_checks is not None and Path(extra_checks).is_dir():
            argv += ["--extra-checks", str(extra_checks)]
        print("$ " + " ".join(argv), flush=True)
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, cwd=tmp)
        problem = ""
        try:
            stdout, stderr = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            # the grading stops its checks and removes their processes (SIGINT), or is killed
            out_, err_ = end_process(p, first=signal.SIGINT, grace=STOP_GRACE)
            stdout, stderr = out_ or "", err_ or ""
            problem = f"the grading did not finish within {timeout:.0f} s"
        except BaseException:  # interrupted (Ctrl-C): the grading ends before the exception goes on
            with contextlib.suppress(Exception):
                end_process(p, first=signal.SIGINT, grace=STOP_GRACE)
            raise
        print(stdout, end="", flush=True)
        print(stderr, end="", file=sys.stderr, flush=True)
        doc: dict[str, Any] | None = None
        if not problem:
            try:
                doc = validate_results(json.loads(out.read_text()))
            except (OSError, ValueError, ReportError) as e:
                tail = "\n".join(stderr.strip().splitlines()[-15:])
                problem = f"the grader stopped (exit status {p.returncode}) without results ({e})" + \
                          (f":\n{tail}" if tail else "")
        if doc is None:
            doc = failure_results(f"{lab}: your submission could not be graded: {problem}. This is not a "
                                  "verdict on your code; tell your instructor.", time.monotonic() - t0)
        _write(results, doc)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m grader.gradescope_zip")
    sub = ap.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="grade /autograder/submission (Gradescope's run_autograder)")
    r.add_argument("--config", type=Path, default=SOURCE / "labgrade" / "config.json")
    r.add_argument("--submission", type=Path, default=SUBMISSION)
    r.add_argument("--results", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    try:
        cfg = json.loads(args.config.read_text())
        lab = cfg["lab"]
    except (OSError, ValueError, KeyError) as e:
        _write(args.results, failure_results(f"The autograder is misconfigured ({e}): tell your instructor."))
        return 0
    with contextlib.suppress(KeyboardInterrupt):
        return run(lab=lab, submission=args.submission, results=args.results,
                   reference_root=Path(cfg["reference_root"]) if cfg.get("reference_root") else None,
                   extra_checks=Path(cfg["extra_checks"]) if cfg.get("extra_checks") else None,
                   timeout=float(cfg.get("timeout") or DEFAULT_TIMEOUT))
    return 130


if __name__ == "__main__":
    raise SystemExit(main())
