/*
 * server.c - hostile corpus: kill(-1, SIGKILL).
 *
 * It listens, then starts a killer in a session of its own that sends SIGKILL
 * to every process it may signal (kill(-1, ...) spares only the caller and
 * init), every 20 ms, for ever.  Run as the grader's own user, that would be
 * the grader, the shell, everything; run as a uid of its own, only itself.
 * Contained by: a uid per grading (root or a container), removal by uid.
 */
#include "netlib.h"

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s PORT\n", argv[0]);
        exit(EXIT_FAILURE);
    }
    int listenfd = Open_listenfd(argv[1]);
    if (fork() == 0) {
        setsid();
        for (;;) {
            kill(-1, SIGKILL);
            kill(getppid(), SIGKILL);
            usleep(20000);
        }
    }
    for (;;) {
        int connfd = accept(listenfd, NULL, NULL);
        if (connfd >= 0)
            close(connfd);
    }
}
