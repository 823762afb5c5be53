"""A grading's result on its way from a Swarm task to the coordinator: framed in short log lines.

The task prints, on its standard output (which the coordinator reads with the service's logs):

    LGF1 BEGIN <token> <bytes> <sha256>
    LGF1 <token> <k> <base64 of the k-th piece of the gzip of the JSON>
    ...
    LGF1 END <token> <pieces>

`token` is the attempt's own (given to the task by the coordinator), `bytes` and `sha256` those
of the gzip. Lines are short (a log driver splits long ones), and anything else in the logs is
ignored. The JSON is `{"summary": {...}}` (a grading) or `{"error": "..."}` (the environment
failed: not the student's). `decode` returns it only when every piece is there, in order, with
the announced length and hash; anything else is `MalformedResult`: never a score.
"""
from __future__ import annotations

import base64
import gzip
import hashlib
import json
import re
from collections.abc import Iterable
from typing import Any

MAGIC = "LGF1"
PIECE = 3000  # base64 characters per line: far below the 16 KiB at which Docker splits a log line
MAX_RESULT_BYTES = 4 << 20  # a summary is far smaller (grader.isolation.docker: MAX_SUMMARY_BYTES)
_TOKEN = re.compile(r"[0-9a-f]{8,64}\Z")


class MalformedResult(Exception):
    """The logs hold no complete, intact result of this attempt."""


def encode(obj: dict[str, Any], token: str) -> list[str]:
    """The lines that carry `obj` (a JSON object) for the attempt `token`."""
    if not _TOKEN.match(token):
        raise ValueError(f"bad token {token!r}")
    blob = gzip.compress(json.dumps(obj, separators=(",", ":")).encode(), mtime=0)
    text = base64.b64encode(blob).decode()
    pieces = [text[i:i + PIECE] for i in range(0, len(text), PIECE)] or [""]
    return ([f"{MAGIC} BEGIN {token} {len(blob)} {hashlib.sha256(blob).hexdigest()}"]
            + [f"{MAGIC} {token} {k} {p}" for k, p in enumerate(pieces)]
            + [f"{MAGIC} END {token} {len(pieces)}"])


def decode(lines: Iterable[str], token: str) -> dict[str, Any]:
    """The object the task framed for attempt `token`, checked; MalformedResult otherwise.
    A second BEGIN of the same token starts over (a task prints one result; a repeat is its last)."""
    head: tuple[int, str] | None = None
    pieces: list[str] = []
    done: bytes | None = None
    for raw in lines:
        parts = raw.strip().split(" ")
        if len(parts) < 3 or parts[0] != MAGIC:
            continue
        if parts[1] == "BEGIN" and len(parts) == 5 and parts[2] == token:
            if not (parts[3].isdigit() and re.fullmatch(r"[0-9a-f]{64}", parts[4])):
                raise MalformedResult("a result header without a length and a sha256")
            head, pieces, done = (int(parts[3]), parts[4]), [], None
        elif parts[1] == "END" and len(parts) == 4 and parts[2] == token and head is not None:
            if parts[3] != str(len(pieces)):
                raise MalformedResult(f"the result ended after {len(pieces)} of {parts[3]} pieces")
            done = _check("".join(pieces), *head)
        elif parts[1] == token and len(parts) == 4 and head is not None:
            if parts[2] != str(len(pieces)):
                raise MalformedResult(f"result piece {parts[2]} came where {len(pieces)} was due")
            pieces.append(parts[3])
    if done is None:
        raise MalformedResult("no complete result in the task's output" if head is None or not pieces
                              else f"the result stopped after {len(pieces)} pieces (truncated)")
    try:
        obj = json.loads(gzip.decompress(done))
    except (OSError, ValueError, EOFError) as e:
        raise MalformedResult(f"the result is not gzip-compressed JSON: {e}") from None
    if not isinstance(obj, dict) or not (isinstance(obj.get("summary"), dict) or isinstance(obj.get("error"), str)):
        raise MalformedResult("the result holds neither a summary nor an error")
    return obj


def _check(text: str, size: int, sha: str) -> bytes:
    if size > MAX_RESULT_BYTES:
        raise MalformedResult(f"a result of {size} bytes (at most {MAX_RESULT_BYTES})")
    try:
        blob = base64.b64decode(text, validate=True)
    except ValueError:
        raise MalformedResult("a result piece is not base64") from None
    if len(blob) != size:
        raise MalformedResult(f"the result has {len(blob)} bytes, its header said {size}")
    if hashlib.sha256(blob).hexdigest() != sha:
        raise MalformedResult("the result's sha256 is not the one its header announced")
    return blob
