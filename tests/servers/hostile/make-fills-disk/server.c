/*
 * server.c - lab fork: a process-based concurrent echo server (skeleton)
 *
 * As given, it listens on PORT, accepts each connection and closes it at
 * once, serving nobody.  Fill in the TODOs: each names the rule of the
 * handout it serves.  Build with `make`, run `./server PORT`, and test
 * yourself with `make check`.  The helpers (rio_readlineb, rio_writen,
 * install_handler, Close, ...) are in netlib.h.
 */
#include "netlib.h"

void sigchld_handler(int sig);
void echo(int connfd);

/* sigchld_handler - runs when children end */
void sigchld_handler(int sig)
{
    (void)sig;
    /* TODO (handout: "children that end are reaped within 1 s, also when many
     * end at the same moment and while others still run"): reap every child
     * that has ended, one SIGCHLD may stand for many, and never wait for
     * one still running.  A handler must leave errno as it found it. */
}

/* echo - send back to the client every byte it sends, until it is done */
void echo(int connfd)
{
    (void)connfd;
    /* TODO (handout: "every byte a client sends comes back to that client,
     * unchanged and in order"): read the client line by line (rio_readinitb,
     * rio_readlineb) and write each line back (rio_writen).  Lines can hold
     * any byte: use the counts, not strlen.  At EOF the last line may have
     * no '\n': it comes back too. */
    /* TODO (handout: "a client that resets its connection ... never stops
     * the server"): when a write fails, stop serving this client. */
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s PORT\n", argv[0]);
        exit(EXIT_FAILURE);
    }
    /* TODO (handout: "SIGPIPE and ECONNRESET are handled"): writing to a
     * client that has gone must not kill the server. */
    install_handler(SIGCHLD, sigchld_handler, 0);
    int listenfd = Open_listenfd(argv[1]);

    for (;;) {
        /* TODO (handout: "accept interrupted by a signal (EINTR) is simply
         * tried again"): Accept exits on any error, and every child that
         * ends sends a SIGCHLD that can interrupt it.  Call accept yourself
         * and go around the loop when it fails with EINTR. */
        int connfd = Accept(listenfd, NULL, NULL);

        /* TODO (handout: "every accepted connection is served by a new child
         * made with fork; the parent only accepts"): fork here.  (If fork
         * fails, close connfd and keep serving the others.) */

        /* In the child:
         * TODO (handout: "the child closes its copy of the listening socket
         * before it serves"), then echo(connfd), then
         * TODO (handout: "a child ends (exit) when its client is done; it
         * never returns into the accept loop"). */

        /* In the parent:
         * TODO (handout: "the parent closes its copy of the connected socket
         * right after fork"). */

        /* As given, nobody is served: the connection is closed at once. */
        Close(connfd);
    }
}
