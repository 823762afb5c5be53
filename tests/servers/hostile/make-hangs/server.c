/*
 * server.c - lab thread: a thread-based concurrent echo server (skeleton)
 *
 * As given, it listens on PORT, accepts each connection and closes it at
 * once, serving nobody.  Fill in the TODOs: each names the rule of the
 * handout it serves.  Build with `make`, run `./server PORT`, and test
 * yourself with `make check`.  The helpers (rio_readlineb, rio_writen,
 * Malloc, Pthread_mutex_lock, ...) are in netlib.h.
 */
#include "netlib.h"

/* TODO (handout: "a global count of every byte received from every client
 * is kept under a lock"): every thread adds to byte_cnt, so every access
 * to it holds cnt_mutex.  (Make both static once you use them.) */
unsigned long byte_cnt;         /* bytes received from every client */
pthread_mutex_t cnt_mutex = PTHREAD_MUTEX_INITIALIZER; /* guards byte_cnt */

void echo_cnt(int connfd);
void *thread(void *vargp);

/* echo_cnt - echo each line the client sends and report it, until EOF */
void echo_cnt(int connfd)
{
    (void)connfd;
    /* TODO (handout: "every byte a client sends comes back to that client,
     * unchanged and in order"): read line by line (rio_readinitb,
     * rio_readlineb), write each line back (rio_writen).  Lines can hold
     * any byte: use the counts, not strlen.  At EOF the last line may have
     * no '\n': it comes back too.  When a write fails, stop. */
    /* TODO (handout: "after it echoes a line the server prints exactly
     * `server received N (T total) bytes on fd F`"): N is the line's length
     * with its '\n', T the count just after adding N (read it while you
     * hold the lock), F is connfd.  Print the whole line in one call. */
    /* TODO (handout: "holding the lock is kept short"): hold cnt_mutex for
     * the addition only, never while reading, writing or printing. */
}

/* thread - serve one client; vargp says which */
void *thread(void *vargp)
{
    (void)vargp;
    /* TODO (handout: "the connected descriptor reaches its thread without a
     * race (not through a variable that the next accept overwrites)"):
     * get connfd from vargp.  main must pass the descriptor's value (cast
     * through intptr_t) or a pointer to memory of this thread's own (a
     * malloc'd int, freed here), never &connfd. */
    /* TODO (handout: "threads are detached (or joined) and release their
     * descriptor when their client is done"): detach, echo_cnt, close. */
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s PORT\n", argv[0]);
        exit(EXIT_FAILURE);
    }
    /* TODO (handout: "SIGPIPE and ECONNRESET are handled"): writing to a
     * client that has gone must not kill the server. */
    int listenfd = Open_listenfd(argv[1]);

    for (;;) {
        int connfd = accept(listenfd, NULL, NULL);
        if (connfd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            unix_error("accept");
        }
        /* TODO (handout: "every connection is served by its own thread"):
         * create a thread running thread() (pthread_create), handing it
         * connfd without a race (see thread() above).  If the thread cannot be created,
         * close connfd and keep serving the others. */

        /* TODO (handout: "no thread-unsafe library calls"): if you log
         * clients, use getnameinfo or inet_ntop, never inet_ntoa or
         * gethostbyaddr. */

        /* As given, nobody is served: the connection is closed at once. */
        Close(connfd);
    }
}
