/*
 * server.c - hostile corpus: a fork bomb.
 *
 * It listens (so the grader sees it ready and starts its checks), then every
 * process forks for ever and spins when fork fails: the process table of its
 * uid fills up and both cores are busy.  Nothing is ever echoed.
 * Contained by: the process limit (RLIMIT_NPROC of its own uid, the cgroup pids
 * limit in a container), the grader's watch on the number of its processes, and
 * removal by uid (kill(-1) as that uid) or by container.
 */
#include "netlib.h"

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s PORT\n", argv[0]);
        exit(EXIT_FAILURE);
    }
    int listenfd = Open_listenfd(argv[1]);
    (void)listenfd;
    printf("fork bomb armed\n");
    fflush(stdout);
    for (;;)
        fork();
}
