"""How a grading starts servers: a submission whose server never listens is started twice, then
the checks left fail at once instead of each waiting out the start timeout; a server that has
listened once is always given its full chance."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from grader.session import START_FAILURES, GradingSession
from grader.verdict import CheckFailed

# Listens on PORT only when LISTEN is set; otherwise exits at once with status 3.
SERVER = r"""
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
int main(int argc, char **argv) {
    if (argc < 2 || !getenv("LISTEN")) return 3;
    int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons(atoi(argv[1]));
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(s, (struct sockaddr *)&a, sizeof a) || listen(s, 8)) return 4;
    pause();
}
"""


@pytest.fixture
def submission(tmp_path: Path) -> Path:
    d = tmp_path / "fork"
    d.mkdir()
    (d / "server.c").write_text(SERVER)
    (d / "Makefile").write_text("server: server.c\n\t$(CC) $(CFLAGS) -o server server.c $(LDFLAGS)\n")
    d.chmod(0o755)
    return d


def start_feedback(grading: GradingSession, **kw: object) -> tuple[str, float]:
    t0 = time.monotonic()
    try:
        grading.start(**kw)  # type: ignore[arg-type]
    except CheckFailed as e:
        return str(e), time.monotonic() - t0
    finally:
        grading.stop_servers()
    return "", time.monotonic() - t0


def test_a_server_that_never_listens_is_not_started_after_two_tries(submission: Path) -> None:
    with GradingSession("fork", submission) as grading:
        for _ in range(START_FAILURES):
            said, _secs = start_feedback(grading)
            assert "no listening socket appeared" in said and "exited with status 3" in said, said
        said, secs = start_feedback(grading)
        assert f"never listened in the {START_FAILURES} checks before this one" in said, said
        assert "exited with status 3" in said  # the first time's reason, named
        assert secs < 0.5


def test_a_server_that_listened_once_is_always_started(submission: Path) -> None:
    with GradingSession("fork", submission) as grading:
        assert start_feedback(grading, env={"LISTEN": "1"})[0] == ""
        for _ in range(START_FAILURES + 1):
            said, _secs = start_feedback(grading)
            assert "no listening socket appeared" in said, said
        assert start_feedback(grading, env={"LISTEN": "1"})[0] == ""


def test_its_thread_sanitizer_build_shares_the_record_of_its_plain_build(submission: Path) -> None:
    """The TSan rebuild is the same source: after two failed starts of the plain build it is not
    started either (the `tsan` check of a server that never listens failed after 15 s before)."""
    with GradingSession("fork", submission) as grading:
        for _ in range(START_FAILURES):
            start_feedback(grading)
        said, secs = start_feedback(grading, b=grading.tsan_build(), sanitized=True)
        assert f"never listened in the {START_FAILURES} checks before this one" in said, said
        assert secs < 0.5


def test_the_thread_sanitizer_build_of_a_server_that_listened_is_started(submission: Path) -> None:
    with GradingSession("fork", submission) as grading:
        assert start_feedback(grading, env={"LISTEN": "1"})[0] == ""
        for _ in range(START_FAILURES):
            start_feedback(grading)
        said, _secs = start_feedback(grading, b=grading.tsan_build(), sanitized=True)
        assert "no listening socket appeared" in said and "exited with status 3" in said, said
        assert start_feedback(grading, b=grading.tsan_build(), sanitized=True, env={"LISTEN": "1"})[0] == ""
