"""The catalogue is the single source of ids, points and visibility: each lab's checks module
implements exactly its ids, and every lab sums to 100."""
from __future__ import annotations

import importlib

import pytest

from grader import catalogue


@pytest.mark.parametrize("lab", catalogue.LABS)
def test_points_sum_to_100_and_ids_are_unique(lab: str) -> None:
    checks = catalogue.checks(lab)
    assert sum(c.points for c in checks) == 100
    assert len({c.id for c in checks}) == len(checks)
    assert checks[0].id == "build"


@pytest.mark.parametrize("lab", catalogue.LABS)
def test_checks_module_implements_exactly_the_catalogue(lab: str) -> None:
    mod = importlib.import_module(f"grader.checks.test_{lab}")
    marked = {}
    for name in dir(mod):
        fn = getattr(mod, name)
        for m in getattr(fn, "pytestmark", []):
            if m.name == "check":
                marked[m.kwargs["id"]] = (m.kwargs["points"], m.kwargs["visibility"])
    want = {c.id: (c.points, c.visibility) for c in catalogue.checks(lab)}
    assert marked == want


def test_common_ids_are_in_every_lab_and_vs_reference_is_hidden() -> None:
    for lab in catalogue.LABS:
        ids = {c.id for c in catalogue.checks(lab)}
        assert {"build", "echo", "eof", "concurrency", "fd-leak", "robust-disconnect", "vs-reference"} <= ids
        assert catalogue.check(lab, "vs-reference").visibility == "hidden"
    with pytest.raises(KeyError):
        catalogue.checks("nope")
