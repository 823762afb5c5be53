"""The checks: one pytest module per lab, shared checks in `common`.

`graded(lab, id)` marks a test as the catalogue's check `id`, with its points and
visibility taken from `grader.catalogue` (the single source of the weights).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import pytest

from ..catalogue import check

F = TypeVar("F", bound=Callable[..., Any])


def graded(lab: str, check_id: str) -> Callable[[F], F]:
    c = check(lab, check_id)
    return pytest.mark.check(id=c.id, points=c.points, visibility=c.visibility)
