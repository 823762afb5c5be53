/*
 * server.c - lab fork, model answer: a process-based concurrent echo server
 *
 * The parent only accepts; each connection is served by a child of its own,
 * which echoes its client's lines and exits when the client is done.
 * Usage: ./server PORT
 */
#include "netlib.h"

/*
 * sigchld_handler - reap every child that has ended.  SIGCHLD is not queued
 * (many endings may raise one signal), so loop; WNOHANG, so the parent
 * never waits for a child that is still serving.
 */
static void sigchld_handler(int sig)
{
    int saved_errno = errno;    /* waitpid must not clobber the errno main tests */

    (void)sig;
    while (waitpid(-1, NULL, WNOHANG) > 0)
        ;
    errno = saved_errno;
}

/* echo - send back every line of connfd, the last one even without '\n', until EOF */
static void echo(int connfd)
{
    rio_t rio;
    char buf[MAXLINE];
    ssize_t n;

    rio_readinitb(&rio, connfd);
    while ((n = rio_readlineb(&rio, buf, MAXLINE)) > 0)
        if (rio_writen(connfd, buf, (size_t)n) != n)
            return;             /* client reset or gone (EPIPE, ECONNRESET): stop */
}

/* serve - a thread's whole life: serve one client, then end */
static void *serve(void *arg)
{
    int connfd = (int)(intptr_t)arg;

    echo(connfd);
    Close(connfd);              /* the client sees the connection close */
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s PORT\n", argv[0]);
        exit(EXIT_FAILURE);
    }
    install_handler(SIGPIPE, SIG_IGN, 0);   /* a vanished client gives EPIPE, not death */
    install_handler(SIGCHLD, sigchld_handler, 0); /* no SA_RESTART: accept handles EINTR */
    int listenfd = Open_listenfd(argv[1]);

    for (;;) {
        int connfd = accept(listenfd, NULL, NULL);
        if (connfd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;       /* rule: a child ended during accept: just try again */
            unix_error("accept");
        }
        /* BUG (process-per-client): a thread per client instead of a child process */
        pthread_t tid;
        int rc = pthread_create(&tid, NULL, serve, (void *)(intptr_t)connfd);
        if (rc != 0) {
            fprintf(stderr, "pthread_create: %s\n", strerror(rc));
            Close(connfd);
        } else {
            Pthread_detach(tid);
        }
    }
}
