/*
 * server.c - lab thread, model answer: a thread-based concurrent echo server
 *
 * The main thread only accepts; each connection is served by a detached
 * thread of its own, which echoes its client's lines and adds their lengths
 * to a count shared by all threads.  Alternative design: it also logs each
 * client's address (inet_ntop), the time each thread starts (localtime_r)
 * and each line's first word (strtok_r): the reentrant forms of inet_ntoa,
 * localtime and strtok, safe in threads.
 * Usage: ./server PORT
 */
#include <arpa/inet.h>
#include <time.h>

#include "netlib.h"

static unsigned long byte_cnt;  /* bytes received from every client; guarded by cnt_mutex */
static pthread_mutex_t cnt_mutex = PTHREAD_MUTEX_INITIALIZER;

/* count_bytes - add n to the shared count and return its new value */
static unsigned long count_bytes(size_t n)
{
    Pthread_mutex_lock(&cnt_mutex);         /* rule: the lock covers only the addition */
    unsigned long total = byte_cnt += n;    /* read inside the lock: T just after adding N */
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
        /* strtok_r keeps its position in our own variable, not in a static one */
        char copy[MAXLINE], *save;
        memcpy(copy, buf, (size_t)n + 1);
        char *word = strtok_r(copy, " \t\r\n", &save);
        if (word != NULL && strcmp(word, "QUIT") == 0)
            fprintf(stderr, "client on fd %d said QUIT\n", connfd);
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
    time_t now = time(NULL);
    struct tm tm;           /* localtime_r fills our own struct tm, not a static one */
    char when[32];
    strftime(when, sizeof when, "%H:%M:%S", localtime_r(&now, &tm));
    printf("%s: serving fd %d\n", when, connfd);
    fflush(stdout);
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
        struct sockaddr_in addr;
        socklen_t len = sizeof addr;
        int connfd = accept(listenfd, (struct sockaddr *)&addr, &len);
        if (connfd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            unix_error("accept");
        }
        char host[INET_ADDRSTRLEN];  /* inet_ntop writes into our buffer, not a static one */
        printf("connection from %s\n", inet_ntop(AF_INET, &addr.sin_addr, host, sizeof host));
        fflush(stdout);
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
