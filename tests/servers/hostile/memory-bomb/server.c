/*
 * server.c - hostile corpus: a memory bomb.
 *
 * It listens, then allocates and touches memory as fast as it can; when an
 * allocation fails (address-space limit) it forks and the child goes on, so
 * that a per-process limit alone does not bound it.  Nothing is ever echoed.
 * Contained by: the grader's watch on the memory of the submission's processes,
 * the memory cgroup of the container (the kernel's OOM killer), oom_score_adj.
 */
#include "netlib.h"

#define CHUNK (16u << 20)

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s PORT\n", argv[0]);
        exit(EXIT_FAILURE);
    }
    int listenfd = Open_listenfd(argv[1]);
    (void)listenfd;
    printf("memory bomb armed\n");
    fflush(stdout);
    for (;;) {
        char *p = malloc(CHUNK);
        if (p == NULL) {
            if (fork() < 0)
                pause();
            continue;
        }
        memset(p, 0xa5, CHUNK);
    }
}
