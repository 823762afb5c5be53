/*
 * server.c - lab ipc: a process-based echo server that logs every line
 * through one logger process (skeleton)
 *
 * As given, it listens on PORT, accepts each connection and closes it at
 * once, serving nobody and logging nothing.  Fill in the TODOs: each names
 * the rule of the handout it serves.  The process part is lab fork's; the
 * logger and its channel (a pipe, or a POSIX message queue) are new.  Build
 * with `make`, run `./server PORT`, and test yourself with `make check`.
 * The helpers (rio_readlineb, rio_writen, install_handler, Close, ...) are
 * in netlib.h.
 */
#include "netlib.h"
#include <limits.h>             /* PIPE_BUF */

#define LOGFILE "echo.log"

void sigchld_handler(int sig);
void logger(int readfd);
void echo(int connfd, int logfd);

/* sigchld_handler - runs when children end */
void sigchld_handler(int sig)
{
    (void)sig;
    /* TODO (handout: "children that end are reaped within 1 s, also when many
     * end at the same moment and while others still run"): as in lab fork. */
}

/* logger - the logger process: appends to echo.log every line the children send */
void logger(int readfd)
{
    (void)readfd;
    /* TODO (handout: "every complete line a client sends ... is appended by
     * the logger to the file echo.log ... exactly once, as one unbroken
     * record, within 1 s of its echo"): open echo.log (O_WRONLY | O_CREAT |
     * O_APPEND), then read the channel and write what comes to the file,
     * until end-of-file (a pipe) or a stop message (a queue). */
    exit(EXIT_SUCCESS);
}

/* echo - send back to the client every byte it sends; send each line to the logger */
void echo(int connfd, int logfd)
{
    (void)connfd;
    (void)logfd;
    /* TODO (handout: "every byte a client sends comes back to that client,
     * unchanged and in order"): as in lab fork (rio_readlineb, rio_writen). */
    /* TODO (handout: "a line must travel whole"): send each complete line to
     * the logger in one write (at most PIPE_BUF bytes) or one mq_send, before
     * its echo. */
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s PORT\n", argv[0]);
        exit(EXIT_FAILURE);
    }
    /* TODO (handout: "before it accepts anything, the server makes exactly
     * one logger process and one channel to it"): pipe (or mq_open), then
     * fork the logger, which runs logger(...) and never returns. */
    /* TODO (handout: "each process holds only the channel ends it uses"):
     * the logger closes the write end, the parent the read end. */
    install_handler(SIGCHLD, sigchld_handler, 0);
    /* TODO (handout: "on SIGTERM ... it stops accepting"): a SIGTERM handler
     * that makes the accept loop end. */
    int listenfd = Open_listenfd(argv[1]);

    for (;;) {
        /* TODO (handout: "all rules of lab fork hold"): accept, retried on
         * EINTR; fork a child per connection, which closes listenfd, calls
         * echo and exits; the parent closes connfd. */
        int connfd = Accept(listenfd, NULL, NULL);

        /* As given, nobody is served: the connection is closed at once. */
        Close(connfd);
    }
    /* TODO (handout: "every line already echoed is in echo.log ... every
     * process of the server has ended within 2 s; a message queue it made is
     * unlinked"): after the loop, close the channel, wait for the logger
     * (waitpid), mq_unlink a queue, and return. */
}
