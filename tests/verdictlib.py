"""The verdict gradings of tests/servers, shared by the tests that compare against them
(test_verdicts: every server locally and a sample in docker; test_swarm: the same sample on a
swarm). A pytest plugin (conftest's pytest_plugins), so that the session has one `verdicts`
fixture and every server is graded once per isolation, whichever module asks first."""
from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from support import ROOT, copy_lab

from grader import catalogue

SERVERS = ROOT / "tests" / "servers"
JOBS = 4  # a grading keeps about half a core busy (the rest is its clients waiting, measured): 4 fill 2 cores


def cases() -> list[Path]:
    return sorted(p.parent for p in SERVERS.glob("*/*/expect.json"))


def load(d: Path) -> dict[str, Any]:
    return json.loads((d / "expect.json").read_text())


# Checks that rebuild or re-run the whole server on a workload of their own (the reference side by
# side, ThreadSanitizer, AddressSanitizer): a one-bug server keeps them as the reference it was made
# from does, which the references and the correct alternatives prove every run. They are graded on a
# one-bug server only where its expectation says it fails them (2 minutes of CI saved).
WHOLE_PROGRAM = {"vs-reference", "tsan", "memory"}


def kept(exp: dict[str, Any]) -> set[str]:
    """The checks a one-bug server's grading must pass: its `passes`, but the whole-program ones."""
    return set(exp["passes"]) - WHOLE_PROGRAM


def wanted_checks(server: Path, isolation: str = "local") -> list[str] | None:
    """The checks a server's grading runs: all for a correct design; for a one-bug server its
    `fails` and, locally, what it keeps (in docker, the correct designs of the sample pass every
    check there: a one-bug server shows only that its failures are failures there too)."""
    exp = load(server)
    if exp["passes"] == "all":
        return None
    ids = [c.id for c in catalogue.checks(server.parent.name)]
    keep = set(exp["fails"]) | (kept(exp) if isolation == "local" else set())
    return [c for c in ids if c in keep]


def grade_cli(server: Path, isolation: str, out: Path) -> dict[str, Any]:
    only = wanted_checks(server, isolation)
    lab = server.parent.name
    lab_dir = copy_lab(server, out.parent / f"{isolation}-{lab}-{server.name}" / server.name / lab, lab)
    argv = [sys.executable, "-m", "grader", "grade", lab, str(lab_dir), "--json", str(out),
            "--quiet", "--isolation", isolation, "--reference-root", str(ROOT / "reference")]
    if only:
        argv += ["--only", ",".join(only)]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    if not out.exists():
        return {"cli_error": f"exit {r.returncode}: {r.stderr[-2000:]}"}
    return json.loads(out.read_text())  # type: ignore[no-any-return]


def longest_first(key: tuple[str, str]) -> tuple[bool, bool, str]:
    """Gradings in docker (a container each) and whole gradings (correct designs: every check,
    the whole-program ones included) take longest."""
    server, isolation = key
    return isolation != "docker", wanted_checks(Path(server)) is not None, server


class Verdicts:
    """Gradings of the servers this session selected, made in parallel on first use."""

    def __init__(self, session: pytest.Session, tmp: Path) -> None:
        self.session, self.tmp = session, tmp
        self.cache: dict[tuple[str, str], dict[str, Any]] = {}

    def get(self, server: Path, isolation: str) -> dict[str, Any]:
        key = (str(server), isolation)
        if key not in self.cache:
            todo = {key}
            for item in self.session.items:  # everything the selected tests will ask for
                cs = getattr(item, "callspec", None)
                if cs and "server" in cs.params:
                    todo.add((str(cs.params["server"]), "local"))
                    if item.get_closest_marker("docker"):
                        todo.add((str(cs.params["server"]), "docker"))
            todo -= set(self.cache)
            with ThreadPoolExecutor(JOBS) as pool:  # the longest first: no long grading left for the end
                jobs = {k: pool.submit(grade_cli, Path(k[0]), k[1],
                                       self.tmp / f"{k[1]}-{Path(k[0]).parent.name}-{Path(k[0]).name}.json")
                        for k in sorted(todo, key=longest_first)}
                for k, f in jobs.items():
                    try:
                        self.cache[k] = f.result()
                    except Exception as e:  # that server's test reports it; the others keep their verdicts
                        self.cache[k] = {"cli_error": f"{type(e).__name__}: {e}"}
        return self.cache[key]


@pytest.fixture(scope="session")
def verdicts(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Verdicts:
    return Verdicts(request.session, tmp_path_factory.mktemp("verdicts"))
