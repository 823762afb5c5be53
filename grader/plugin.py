"""The pytest plugin that turns pytest tests into graded checks.

A check is a test carrying the registered marker
`@pytest.mark.check(id=..., points=..., visibility="visible"|"hidden")`;
catalogue checks get it from `grader.checks.graded(ID)`. The plugin gives checks the
`grading` session and the `server` fixture, selects (--only, --visible-only), and
classifies each outcome: passed, failed (CheckFailed: the student's loss, with
feedback), or error (the environment or the grader failed: not charged). The
classification travels in pytest-json-report's metadata.
"""
from __future__ import annotations

import secrets
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from . import catalogue
from .clients import seed_payloads
from .errors import GradingEnvironmentError
from .harness import Server
from .isolation.local import private_network
from .session import GradingSession, default_reference_root
from .verdict import CheckFailed, NotGraded

Verdict = dict[str, Any]
VERDICT = pytest.StashKey[Verdict]()


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("labgrade")
    g.addoption("--lab", help=f"lab being graded: one of {', '.join(catalogue.LABS)}")
    g.addoption("--submission", help="the lab directory to grade")
    g.addoption("--reference-root", default=None, help="directory holding reference/<lab>")
    g.addoption("--only", default="", help="comma-separated check ids to run")
    g.addoption("--visible-only", action="store_true", help="run only the checks students see")
    g.addoption("--private-network", action="store_true",
                help="as root: grade in a network namespace of its own (loopback only)")
    g.addoption("--seed", type=int, default=None,
                help="the grading's seed: each check's payloads derive from it and the check's id")


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--private-network", default=False):
        private_network()  # first, before any thread: threads made later share the namespace
    config.addinivalue_line(
        "markers", "check(id, points, visibility): a graded check: stable id, points, "
        "visibility 'visible' (self-check) or 'hidden' (instructor grading only)")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Each check's payloads from the grading's seed and its own id: the same whatever ran before
    it (`--only` replays one check as it ran in the whole grading)."""
    meta = check_marker(item)
    seed = item.config.getoption("--seed", default=None)
    if meta is not None:
        seed_payloads(f"{secrets.randbits(63) if seed is None else seed}:{meta['id']}")


MALFORMED = "malformed check marker"  # how a refused marker's usage error begins (grader.run reads it)
VISIBILITIES = ("visible", "hidden")


def _where(item: pytest.Item) -> str:
    path, line, _ = item.reportinfo()
    return f"{MALFORMED} in {path}" + (f", line {line + 1}" if isinstance(line, int) else "") + f" ({item.name})"


def marker_problem(item: pytest.Item) -> str | None:
    """What is wrong with the item's `check` marker (a usage error naming its file), or None."""
    m = item.get_closest_marker("check")
    if m is None:
        return None
    where = _where(item)
    if len(m.args) > 1:
        return f"{where}: give points and visibility by name: check(id=..., points=..., visibility=...)"
    kw = dict(m.kwargs)
    if m.args:
        kw.setdefault("id", m.args[0])
    unknown = sorted(set(kw) - {"id", "points", "visibility"})
    if unknown:
        return f"{where}: unknown argument(s) {', '.join(unknown)} (a check takes id, points and visibility)"
    missing = [k for k in ("id", "points", "visibility") if k not in kw]
    if missing:
        return f"{where}: missing {', '.join(missing)} (a check needs id, points and visibility)"
    cid, points, visibility = kw["id"], kw["points"], kw["visibility"]
    if not isinstance(cid, str) or not cid.strip():
        return f"{where}: id must be a non-empty string, got {cid!r}"
    if isinstance(points, bool) or not isinstance(points, int) or points < 0:
        return f"{where}: points must be a whole number, 0 or more, got {points!r}"
    if visibility not in VISIBILITIES:
        return f"{where}: visibility must be 'visible' or 'hidden', got {visibility!r}"
    return None


def check_marker(item: pytest.Item) -> dict[str, Any] | None:
    """id, points and visibility of a check (validated at collection: see marker_problem)."""
    m = item.get_closest_marker("check")
    if m is None:
        return None
    kw = dict(m.kwargs)
    if m.args:
        kw.setdefault("id", m.args[0])
    return {"id": kw["id"], "points": kw["points"], "visibility": kw["visibility"]}


def _refuse_malformed(checks: list[pytest.Item]) -> None:
    """A usage error naming the file of every malformed marker and of every id given twice (a
    summary holds one result per id)."""
    problems: list[str] = []
    first: dict[str, pytest.Item] = {}
    for item in checks:
        problem = marker_problem(item)
        if problem:
            problems.append(problem)
            continue
        cid = check_marker(item)["id"]  # type: ignore[index]
        other = first.setdefault(cid, item)
        if other is not item:
            problems.append(f"{_where(item)}: duplicate id {cid!r}, already the id of {other.name} in "
                            f"{other.reportinfo()[0]}")
    if problems:
        raise pytest.UsageError(*problems)  # pytest prints each as a line `ERROR: ...`


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    only = {c.strip() for c in (config.getoption("--only") or "").split(",") if c.strip()}
    visible_only = config.getoption("--visible-only")
    lab = config.getoption("--lab")
    # checks of this lab: an extra check module may be written for another (its `LAB`)
    checks = [i for i in items if i.get_closest_marker("check") is not None
              and getattr(getattr(i, "module", None), "LAB", lab) in (lab, None)]
    _refuse_malformed(checks)
    chosen = set(checks)
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        meta = check_marker(item) if item in chosen else None
        ok = meta is not None
        if ok and only and meta["id"] not in only:  # type: ignore[index]
            ok = False
        if ok and visible_only and meta["visibility"] != "visible":  # type: ignore[index]
            ok = False
        (keep if ok else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(scope="session")
def grading(request: pytest.FixtureRequest) -> Iterator[GradingSession]:
    cfg = request.config
    lab, sub = cfg.getoption("--lab"), cfg.getoption("--submission")
    if not lab or not sub:
        raise GradingEnvironmentError("the checks need --lab and --submission")
    ref = cfg.getoption("--reference-root")
    with GradingSession(lab, Path(sub), Path(ref) if ref else default_reference_root()) as session:
        yield session


@pytest.fixture
def server(grading: GradingSession) -> Iterator[Callable[..., Server]]:
    """Start fresh servers (`server()`, `server(sanitized=True)`, `server(build)`); all stopped after."""
    yield grading.start
    left = grading.stop_servers()
    if left:
        raise GradingEnvironmentError(
            "processes of the server survived SIGKILL: " + ", ".join(p.describe() for p in left))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> None:
    verdict = item.stash.setdefault(VERDICT, {"status": "passed", "feedback": ""})
    session = getattr(item, "funcargs", {}).get("grading")
    meta = check_marker(item)
    if call.when == "call" and isinstance(session, GradingSession) and meta and meta["id"] in session.measured:
        verdict["metrics"], words = session.measured.pop(meta["id"])
        verdict["feedback"] = words  # a failure's feedback comes first, the figures after it
    if call.excinfo is None or verdict["status"] != "passed":
        return
    exc = call.excinfo.value
    if isinstance(exc, CheckFailed):
        verdict.update(status="failed", feedback="\n".join(x for x in (exc.feedback, verdict["feedback"]) if x))
        if exc.details:
            verdict["details"] = exc.details
        if isinstance(session, GradingSession) and meta and not isinstance(exc, NotGraded):
            session.charge_failure(meta["id"], call.duration)  # the grading's budget counts only failed checks
    elif isinstance(exc, GradingEnvironmentError):
        verdict.update(status="error", feedback=f"Environment error (not charged): {exc}")
    else:
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__, limit=-3))
        verdict.update(status="error",
                       feedback=f"Internal grader error (not charged): {type(exc).__name__}: {exc}\n{tb}")


def pytest_json_runtest_metadata(item: pytest.Item, call: pytest.CallInfo[None]) -> dict[str, Any]:
    if call.when != "teardown":
        return {}
    return {"check": check_marker(item), "verdict": item.stash.get(VERDICT, None) or {}}
