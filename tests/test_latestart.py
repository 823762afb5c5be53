"""latestart.c, preloaded by lab thread's `concurrency` and `unsafe-calls`: a new thread's routine starts
once the process has begun creating the next thread, or once its creator has blocked. A thread that reads
its creator's loop variable through a pointer (the `&connfd` bug) then reads a later value every time; one
given a copy reads its own; a creator that waits for each thread (a hand-over) is not held for long."""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from grader.checks import test_thread

PROGRAM = r"""
#include <pthread.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define N 6
static sem_t copied;

static void *by_pointer(void *p) { printf("%d\n", *(int *)p); return NULL; }
static void *by_value(void *p) { printf("%d\n", (int)(long)p); return NULL; }
static void *handed_over(void *p) { int v = *(int *)p; sem_post(&copied); printf("%d\n", v); return NULL; }

int main(int argc, char **argv)
{
    pthread_t t[N];
    int i;
    setvbuf(stdout, NULL, _IOLBF, 0);
    sem_init(&copied, 0, 0);
    for (i = 0; i < N; i++) {       /* i plays main's connfd: the next "accept" overwrites it */
        if (strcmp(argv[1], "pointer") == 0)
            pthread_create(&t[i], NULL, by_pointer, &i);
        else if (strcmp(argv[1], "value") == 0)
            pthread_create(&t[i], NULL, by_value, (void *)(long)i);
        else {
            pthread_create(&t[i], NULL, handed_over, &i);
            sem_wait(&copied);      /* main waits for the copy: legal, and blocked */
        }
    }
    for (int k = 0; k < N; k++)
        pthread_join(t[k], NULL);
    return 0;
}
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("latestart")
    (d / "p.c").write_text(PROGRAM)
    lib = d / "latestart.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-o", str(lib), str(test_thread.LATESTART), "-pthread", "-ldl"],
                   check=True)
    subprocess.run(["cc", "-O2", "-pthread", "-o", str(d / "p"), str(d / "p.c")], check=True)
    return d / "p", lib


def run(built: tuple[Path, Path], how: str) -> tuple[list[int], float]:
    program, lib = built
    t = time.monotonic()
    out = subprocess.run([str(program), how], env={"LD_PRELOAD": str(lib)}, capture_output=True, text=True,
                         timeout=30, check=True).stdout
    return sorted(int(x) for x in out.split()), time.monotonic() - t


def test_a_thread_reading_its_creators_variable_reads_a_later_value_every_time(built: tuple[Path, Path]) -> None:
    for _ in range(5):
        got, _ = run(built, "pointer")
        assert len(got) == 6 and all(v >= k + 1 for k, v in enumerate(got)), got  # thread k never reads k


def test_a_thread_given_a_copy_reads_its_own(built: tuple[Path, Path]) -> None:
    got, seconds = run(built, "value")
    assert got == list(range(6)) and seconds < 0.5


def test_a_creator_that_waits_for_each_thread_is_held_only_while_it_blocks(built: tuple[Path, Path]) -> None:
    got, seconds = run(built, "handover")
    assert got == list(range(6))
    assert seconds < 6 * 0.15, seconds  # about 30 ms a thread, not the 1 s cap
