"""Every check proven both ways: correct servers keep their points, a server with exactly
one bug loses that check's points (and keeps the points its `expect.json` says it keeps).

Each directory tests/servers/<lab>/<name>/ holds what its server changes of the lab (server.c,
sometimes a Makefile; the rest comes from reference/<lab>, see support.copy_lab) and an
`expect.json`: {"why": "...", "fails": [ids], "passes": [ids] | "all"}. `"passes": "all"`
with no fails marks a correct alternative design: it must score full marks.

The selected servers are graded four at a time (this machine has 2 cores; a grading keeps half a
core busy), each in its own
`labgrade grade` process, the first time a test needs a verdict. Every server is graded in the
`local` isolation; in the `docker` isolation (where the scores must equal the `local` ones) a
sample that still proves every check id both ways there: for each id, in the first lab that has
it (an id shared by labs is one piece of code), the server whose expectation fails it with the
fewest other checks, graded there on its failures only, plus one correct alternative per lab,
graded on every check (docker_sample). The mechanics that
differ in a container (descriptors read without CAP_SYS_PTRACE, cgroup memory, uids, tsan, IPC
namespaces) are exercised by every id; grading every server twice cost 6 minutes of CI with three
labs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from verdictlib import Verdicts, cases, kept, load

from grader import catalogue


def test_every_check_has_a_server_that_fails_it_and_each_lab_has_correct_alternatives() -> None:
    for lab in catalogue.LABS:
        mine = [load(d) for d in cases() if d.parent.name == lab]
        failed = {cid for e in mine for cid in e["fails"]}
        missing = [c.id for c in catalogue.checks(lab) if c.id not in failed]
        assert not missing, f"{lab}: no server in tests/servers/{lab} fails {missing}"
        assert sum(1 for e in mine if e["passes"] == "all") >= 2, f"{lab}: fewer than 2 correct alternative designs"


def assert_expected(server: Path, summary: dict[str, Any], isolation: str = "local") -> None:
    assert "cli_error" not in summary, summary.get("cli_error")
    exp = load(server)
    status = {c["id"]: c for c in summary["checks"]}
    errors = {k: v["feedback"] for k, v in status.items() if v["status"] == "error"}
    assert not errors, f"environment errors: {errors}"
    for cid in exp["fails"]:
        assert status[cid]["status"] == "failed", f"{cid} should fail ({exp['why']}) but passed"
        assert status[cid]["score"] == 0
    ids = [c.id for c in catalogue.checks(server.parent.name)]
    keep = ids if exp["passes"] == "all" else sorted(kept(exp)) if isolation == "local" else []
    wrongly = {c: status[c]["feedback"] for c in keep if status[c]["status"] != "passed"}
    assert not wrongly, f"checks that should pass failed: {wrongly}"
    if exp["passes"] == "all":
        assert summary["score"] == summary["max_score"] == 100


# Correct designs whose mechanics differ in a container beyond what the sample shows: a message
# queue lives in the container's own IPC namespace and /dev/mqueue.
# `memory` runs differently in each lab (a child's report at its exit, the first process's leak check on
# request, every process's after SIGTERM): its one-bug server of every lab.
# `counter` runs a rebuild linked with the grader's widen.c: a server whose lost updates only that
# rebuild shows (the sample's counter failure is a wrong N, which any build shows).
DOCKER_ALSO = ("ipc/alt-mqueue", "select/use-after-free", "thread/connfdp-leak", "ipc/line-copy-leak",
               "pool/buffer-leak-per-client", "thread/unlocked-counter")


def docker_sample() -> list[Path]:
    """Per lab: for each check id some server fails, the server that fails it with the fewest
    other failures (unless one already chosen fails it), the first correct alternative, and
    DOCKER_ALSO. An id that several labs share is one piece of code (common.shared_checks, the
    process checks of fork and ipc): it is proven in docker in the first lab that has it."""
    chosen: list[Path] = []
    proven: set[str] = set()
    for lab in catalogue.LABS:
        mine = {d: load(d) for d in cases() if d.parent.name == lab}
        picked: list[Path] = []
        for cid in [c.id for c in catalogue.checks(lab) if c.id not in proven]:
            failing = [d for d in mine if cid in mine[d]["fails"]]
            if failing and not any(cid in mine[d]["fails"] for d in picked):
                picked.append(min(failing, key=lambda d: (len(mine[d]["fails"]), d.name)))
        proven |= {c.id for c in catalogue.checks(lab)}
        picked += [d for d in mine if mine[d]["passes"] == "all"][:1]
        picked += [d for d in mine if f"{lab}/{d.name}" in DOCKER_ALSO and d not in picked]
        chosen += sorted(picked)
    return chosen


PARAMS = [pytest.param(p, id=f"{p.parent.name}/{p.name}") for p in cases()]
DOCKER_PARAMS = [pytest.param(p, id=f"{p.parent.name}/{p.name}") for p in docker_sample()]


def test_the_docker_sample_fails_every_check_and_keeps_a_correct_design() -> None:
    sample = docker_sample()
    assert len(sample) < len(cases())
    seen: set[str] = set()
    for lab in catalogue.LABS:
        mine = [load(d) for d in sample if d.parent.name == lab]
        ids = {c.id for c in catalogue.checks(lab)}
        assert ids - seen <= {cid for e in mine for cid in e["fails"]}, lab  # its own ids, here
        seen |= ids
        assert any(e["passes"] == "all" for e in mine), lab
    assert seen <= {cid for d in sample for cid in load(d)["fails"]}  # every id, in some lab


@pytest.mark.slow
@pytest.mark.parametrize("server", PARAMS)
def test_verdict(server: Path, verdicts: Verdicts) -> None:
    assert_expected(server, verdicts.get(server, "local"))


@pytest.mark.slow
@pytest.mark.docker
@pytest.mark.parametrize("server", DOCKER_PARAMS)
def test_verdict_in_docker_equals_local(server: Path, verdicts: Verdicts) -> None:
    docker = verdicts.get(server, "docker")
    assert_expected(server, docker, "docker")
    local = {c["id"]: c["score"] for c in verdicts.get(server, "local")["checks"]}
    assert {c["id"]: c["score"] for c in docker["checks"]} == {c["id"]: local[c["id"]] for c in docker["checks"]}
