"""The framing of a Swarm task's result in its logs (grader.swarm.frames) and the task's unpacking
of its secret (grader.swarm.task.unpack): whole results come through, anything else is refused."""
from __future__ import annotations

import base64
import gzip
import io
import random
import tarfile
from pathlib import Path

import pytest

from grader.isolation.docker import submission_tar
from grader.swarm import frames
from grader.swarm.task import unpack

TOKEN = "0123456789abcdef0123456789abcdef"
BIG = {"summary": {"lab": "fork", "checks": [{"feedback": random.Random(i).randbytes(8000).hex()} for i in range(3)]}}


def test_a_result_survives_noise_and_many_pieces() -> None:
    lines = frames.encode(BIG, TOKEN)
    assert len(lines) > 3 and all(len(x) < 4096 for x in lines)  # short lines: a log driver splits long ones
    noisy = ["[WARN tini] something", *lines[:2], "stray output", *lines[2:], "LGF1 junk"]
    assert frames.decode(noisy, TOKEN) == BIG
    # another attempt's result in the same logs is not this one's
    other = frames.encode({"error": "elsewhere"}, "f" * 32)
    assert frames.decode(other + lines, TOKEN) == BIG
    with pytest.raises(frames.MalformedResult, match="no complete result"):
        frames.decode(other, TOKEN)


@pytest.mark.parametrize("damage", ["truncated", "no-end", "reordered", "forged-hash", "forged-length",
                                    "forged-body", "not-json", "neither"])
def test_a_damaged_or_forged_result_is_refused(damage: str) -> None:
    lines = frames.encode(BIG, TOKEN)
    head, body, end = lines[0], lines[1:-1], lines[-1]
    if damage == "truncated":
        lines = [head, *body[:-1], end]
    elif damage == "no-end":
        lines = [head, *body]
    elif damage == "reordered":
        lines = [head, body[1], body[0], *body[2:], end]
    elif damage == "forged-hash":
        lines = [head[:-64] + "0" * 64, *body, end]
    elif damage == "forged-length":
        m, b, t, n, sha = head.split(" ")
        lines = [" ".join([m, b, t, str(int(n) + 1), sha]), *body, end]
    elif damage == "forged-body":
        k, piece = body[0].rsplit(" ", 1)
        lines = [head, f"{k} {piece[:-4]}AAAA", *body[1:], end]
    else:  # a well-framed blob whose content is not a result
        blob = gzip.compress(b"[1, 2]" if damage == "neither" else b"{not json", mtime=0)
        import hashlib

        text = base64.b64encode(blob).decode()
        lines = [f"LGF1 BEGIN {TOKEN} {len(blob)} {hashlib.sha256(blob).hexdigest()}", f"LGF1 {TOKEN} 0 {text}",
                 f"LGF1 END {TOKEN} 1"]
    with pytest.raises(frames.MalformedResult):
        frames.decode(lines, TOKEN)


def test_the_task_unpacks_the_coordinators_tar_and_nothing_else(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "server.c").write_text("int main(void) { return 0; }\n")
    (src / "sub" / "a.h").write_text("#define A 1\n")
    (src / "link").symlink_to("/etc/passwd")
    got = unpack(gzip.compress(submission_tar(src)), tmp_path / "a")
    assert (got / "server.c").read_text() == (src / "server.c").read_text()
    assert (got / "sub" / "a.h").is_file() and (got / "link").is_symlink()
    assert Path(str(got / "link")).readlink() == Path("/etc/passwd")

    def tar_of(*members: tuple[str, bytes | None, str | None]) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as t:
            for name, data, link in members:
                ti = tarfile.TarInfo(name)
                if link is not None:
                    ti.type, ti.linkname = tarfile.SYMTYPE, link
                    t.addfile(ti)
                else:
                    ti.size = len(data or b"")
                    t.addfile(ti, io.BytesIO(data or b""))
        return gzip.compress(buf.getvalue())

    for bad in (tar_of(("submission/../escape", b"x", None)), tar_of(("/etc/x", b"x", None)),
                tar_of(("elsewhere/x", b"x", None)),
                tar_of(("submission/l", None, "/tmp"), ("submission/l/x", b"through the link", None))):
        with pytest.raises(ValueError):
            unpack(bad, tmp_path / "b")
    assert not (tmp_path / "escape").exists()
