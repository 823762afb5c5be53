"""The demo class in submissions/ is a copy of servers whose verdicts the suite proves."""
from __future__ import annotations

from pathlib import Path

import pytest
from support import ROOT, lab_files

SOURCES = {
    "alice/fork": "tests/servers/fork/alt-sig-ign", "alice/select": "tests/servers/select/alt-poll",
    "alice/thread": "tests/servers/thread/alt-pool", "alice/ipc": "tests/servers/ipc/alt-mqueue",
    "alice/pool": "tests/servers/pool/alt-condvar",
    "bob/fork": "assignments/fork", "bob/select": "assignments/select", "bob/thread": "assignments/thread",
    "bob/ipc": "assignments/ipc", "bob/pool": "assignments/pool",
    "carol/fork": "tests/servers/fork/no-reap", "carol/select": "tests/servers/select/blocking-write",
    "carol/thread": "tests/servers/thread/connfd-race", "carol/ipc": "tests/servers/ipc/torn-chunks",
    "carol/pool": "tests/servers/pool/stack",
}


def files(d: Path) -> dict[str, bytes]:
    skip = {"expect.json", "README.md", "server"}
    return {p.name: p.read_bytes() for p in d.iterdir() if p.is_file() and p.name not in skip
            and p.suffix != ".o"}


@pytest.mark.parametrize("sub", sorted(SOURCES))
def test_demo_submission_is_a_copy_of_its_source(sub: str) -> None:
    want = {n: b for n, b in lab_files(ROOT / SOURCES[sub], sub.split("/")[1]).items() if n != "README.md"}
    got = files(ROOT / "submissions" / sub)
    assert got == want, f"submissions/{sub} differs from {SOURCES[sub]}: copy it again"


def test_the_demo_class_has_nothing_else() -> None:
    found = {f"{s.name}/{lab.name}" for s in (ROOT / "submissions").iterdir() if s.is_dir() for lab in s.iterdir()}
    assert found == set(SOURCES)
