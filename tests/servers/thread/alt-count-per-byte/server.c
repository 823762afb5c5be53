/*
 * server.c - lab thread, model answer: a thread-based concurrent echo server
 *
 * The main thread only accepts; each connection is served by a detached
 * thread of its own, which echoes its client's lines and adds their lengths
 * to a count shared by all threads.  Alternative design: the count goes up
 * one byte at a time under the lock (slow, and correct: the grader's counter
 * rebuild, which pauses inside read-modify-writes of globals, must not make a
 * correct design too slow to pass).
 * Usage: ./server PORT
 */
#include "netlib.h"

static volatile unsigned long byte_cnt;  /* every byte received; guarded by cnt_mutex (volatile: one
                                         * load and store per byte, the loop kept as written) */
static pthread_mutex_t cnt_mutex = PTHREAD_MUTEX_INITIALIZER;

/* count_bytes - add n to the shared count and return its new value */
static unsigned long count_bytes(size_t n)
{
    Pthread_mutex_lock(&cnt_mutex);         /* rule: the lock covers only the addition */
    for (size_t i = 0; i < n; i++)          /* one read-modify-write per byte */
        byte_cnt++;
    unsigned long total = byte_cnt;         /* read inside the lock: T just after adding N */
    Pthread_mutex_unlock(&cnt_mutex);
    return total;
}

/* echo_cnt - echo each line of connfd and report it, until EOF */
static void echo_cnt(int connfd)
{
    rio_t rio;
    char buf[MAXLINE];
    ssize_t n;

    rio_readinitb(&rio, connfd);
    while ((n = rio_readlineb(&rio, buf, MAXLINE)) > 0) {
        int sent = rio_writen(connfd, buf, (size_t)n) == n;
        unsigned long total = count_bytes((size_t)n);
        /* one printf per line: stdio's lock keeps lines of different threads whole */
        printf("server received %zd (%lu total) bytes on fd %d\n", n, total, connfd);
        fflush(stdout);
        if (!sent)
            return;             /* client reset or gone (EPIPE, ECONNRESET): stop */
    }
}

/* thread - serve the client whose descriptor vargp carries, as a value */
static void *thread(void *vargp)
{
    int connfd = (int)(intptr_t)vargp;  /* rule: a copy, not main's variable that accept reuses */

    Pthread_detach(pthread_self()); /* rule: its resources go back when it returns */
    echo_cnt(connfd);
    Close(connfd);              /* rule: release the descriptor when the client is done */
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s PORT\n", argv[0]);
        exit(EXIT_FAILURE);
    }
    install_handler(SIGPIPE, SIG_IGN, 0);   /* a vanished client gives EPIPE, not death */
    int listenfd = Open_listenfd(argv[1]);

    for (;;) {
        int connfd = accept(listenfd, NULL, NULL);
        if (connfd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            unix_error("accept");
        }
        /* rule: a thread per client, given connfd by value.  (A malloc'd copy
         * that the thread frees is race-free too, but then each thread's
         * first free sets up a malloc arena: 64 MiB more address space.) */
        pthread_t tid;
        int rc = pthread_create(&tid, NULL, thread, (void *)(intptr_t)connfd);
        if (rc != 0) {          /* out of threads: drop this client, keep serving */
            errno = rc;
            perror("pthread_create");
            Close(connfd);
        }
    }
}
