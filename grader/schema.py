"""The summary JSON of DESIGN.md: its shape, checked wherever a report crosses a boundary
(out of a container, into a gradebook), so a forged or broken document is refused."""
from __future__ import annotations

from typing import Any

from .errors import ReportError

STATUSES = ("passed", "failed", "error")
VISIBILITIES = ("visible", "hidden")

_TOP = {"lab": str, "submission": str, "gradable": bool, "score": (int, float), "max_score": (int, float),
        "seconds": (int, float), "checks": list}
_CHECK = {"id": str, "status": str, "score": (int, float), "max_score": (int, float), "visibility": str,
          "feedback": str, "seconds": (int, float)}
# Optional fields (DESIGN.md, "Growing the interfaces"; `error` says why a summary is not gradable):
# absent, or of this type. Per check, `metrics` maps names (units in the key) to numbers, and
# `details` is a failure's evidence in full (a sanitizer's report) for the instructor.
OPTIONAL_TOP = {"error": str, "grader_version": str, "catalogue_sha256": str, "submission_sha256": str,
                "seed": int, "commit": str, "committed_at": str}
OPTIONAL_CHECK = {"metrics": dict, "details": str}


def _fields(obj: Any, spec: dict[str, Any], where: str, optional: dict[str, Any]) -> None:
    if not isinstance(obj, dict):
        raise ReportError(f"{where}: expected an object, got {type(obj).__name__}")
    for key, typ in (*spec.items(), *((k, t) for k, t in optional.items() if k in obj)):
        if key not in obj:
            raise ReportError(f"{where}: missing field {key!r}")
        v = obj[key]
        if isinstance(v, bool) and typ is not bool and bool not in (typ if isinstance(typ, tuple) else (typ,)):
            raise ReportError(f"{where}: field {key!r} must be {typ}, got a boolean")
        if not isinstance(v, typ):
            raise ReportError(f"{where}: field {key!r} has type {type(v).__name__}")


def validate_summary(obj: Any) -> dict[str, Any]:
    """Return obj if it is a valid summary; raise ReportError saying what is wrong otherwise."""
    _fields(obj, _TOP, "summary", OPTIONAL_TOP)
    seen = set()
    score = max_score = 0.0
    for i, c in enumerate(obj["checks"]):
        _fields(c, _CHECK, f"checks[{i}]", OPTIONAL_CHECK)
        for name, v in c.get("metrics", {}).items():
            if not isinstance(v, int | float) or isinstance(v, bool):
                raise ReportError(f"checks[{i}]: metric {name!r} must be a number, got {type(v).__name__}")
        if c["status"] not in STATUSES:
            raise ReportError(f"checks[{i}]: status {c['status']!r} is not one of {STATUSES}")
        if c["visibility"] not in VISIBILITIES:
            raise ReportError(f"checks[{i}]: visibility {c['visibility']!r} is not one of {VISIBILITIES}")
        if c["id"] in seen:
            raise ReportError(f"checks[{i}]: duplicate id {c['id']!r}")
        seen.add(c["id"])
        if not 0 <= c["score"] <= c["max_score"]:
            raise ReportError(f"checks[{i}]: score {c['score']} outside 0..{c['max_score']}")
        if c["status"] != "passed" and c["score"] != 0:
            raise ReportError(f"checks[{i}]: a {c['status']} check cannot score")
        score += c["score"]
        max_score += c["max_score"] if c["status"] != "error" else 0
    if abs(score - obj["score"]) > 1e-9 or abs(max_score - obj["max_score"]) > 1e-9:
        raise ReportError(f"summary: score {obj['score']}/{obj['max_score']} is not the sum of its checks "
                          f"({score}/{max_score})")
    return obj  # type: ignore[no-any-return]
