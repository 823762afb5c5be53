"""Every check proven both ways: correct servers keep their points, a server with exactly
one bug loses that check's points (and keeps the points its `expect.json` says it keeps).

Each directory tests/servers/<lab>/<name>/ is a lab directory (Makefile, sources) with an
`expect.json`: {"why": "...", "fails": [ids], "passes": [ids] | "all"}. `"passes": "all"`
with no fails marks a correct alternative design: it must score full marks.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from grader import catalogue, grade

ROOT = Path(__file__).resolve().parent.parent
SERVERS = ROOT / "tests" / "servers"


def cases() -> list[Path]:
    return sorted(p.parent for p in SERVERS.glob("*/*/expect.json"))


def load(d: Path) -> dict:
    return json.loads((d / "expect.json").read_text())


def test_every_check_has_a_server_that_fails_it_and_each_lab_has_correct_alternatives() -> None:
    for lab in catalogue.LABS:
        mine = [load(d) for d in cases() if d.parent.name == lab]
        failed = {cid for e in mine for cid in e["fails"]}
        missing = [c.id for c in catalogue.checks(lab) if c.id not in failed]
        assert not missing, f"{lab}: no server in tests/servers/{lab} fails {missing}"
        assert sum(1 for e in mine if e["passes"] == "all") >= 1, f"{lab}: no correct alternative design"


@pytest.mark.slow
@pytest.mark.parametrize("server", [pytest.param(p, id=f"{p.parent.name}/{p.name}") for p in cases()])
def test_verdict(server: Path) -> None:
    lab, exp = server.parent.name, load(server)
    ids = [c.id for c in catalogue.checks(lab)]
    wanted = set(exp["fails"]) | (set() if exp["passes"] == "all" else set(exp["passes"]))
    only = None if exp["passes"] == "all" else [c for c in ids if c in wanted]
    summary = grade(lab=lab, submission=server, only=only, reference_root=ROOT / "reference")
    status = {c["id"]: c for c in summary["checks"]}
    errors = {k: v["feedback"] for k, v in status.items() if v["status"] == "error"}
    assert not errors, f"environment errors: {errors}"
    for cid in exp["fails"]:
        assert status[cid]["status"] == "failed", f"{cid} should fail ({exp['why']}) but passed"
        assert status[cid]["score"] == 0
    keep = ids if exp["passes"] == "all" else exp["passes"]
    wrongly = {c: status[c]["feedback"] for c in keep if status[c]["status"] != "passed"}
    assert not wrongly, f"checks that should pass failed: {wrongly}"
    if exp["passes"] == "all":
        assert summary["score"] == summary["max_score"] == 100
