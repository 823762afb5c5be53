/*
 * server.c - hostile corpus (lab ipc): a server that fills the kernel's IPC
 * tables before it listens.
 *
 * It creates POSIX message queues named /hostile-mq-N until mq_open fails
 * (RLIMIT_MSGQUEUE, the queues_max sysctl) and never unlinks them, then
 * makes pipes until it runs out of descriptors, keeps them all open, and
 * listens without ever accepting.  Queues outlive their process: unless the
 * grading gives the submission an IPC namespace of its own (root, docker) or
 * removes what it made, they would stay on the machine after the grading.
 * Contained by: a private IPC namespace per grading (its queues die with it),
 * the 1024-descriptor limit, and the clients' patience.
 */
#include <fcntl.h>
#include <mqueue.h>
#include "netlib.h"

int main(int argc, char **argv)
{
    struct mq_attr attr = {.mq_maxmsg = 1, .mq_msgsize = 1};
    char name[64];
    int queues = 0, pipes = 0, p[2] = {-1, -1};

    if (argc != 2) {
        fprintf(stderr, "usage: %s PORT\n", argv[0]);
        exit(EXIT_FAILURE);
    }
    for (;;) {  /* as many queues as the kernel lets this uid have */
        snprintf(name, sizeof name, "/hostile-mq-%d", queues);
        if (mq_open(name, O_CREAT | O_RDWR, 0600, &attr) == (mqd_t)-1)
            break;
        queues++;
    }
    while (pipe(p) == 0)  /* and as many pipes as descriptors allow */
        pipes++;
    if (p[0] >= 0) {  /* the last pair back, for the listening socket */
        close(p[0]);
        close(p[1]);
    }
    printf("made %d message queues (%s) and %d pipes\n", queues, strerror(errno), pipes);
    int listenfd = open_listenfd(argv[1]);
    if (listenfd < 0)
        unix_error("open_listenfd");
    for (;;)
        pause();
}
