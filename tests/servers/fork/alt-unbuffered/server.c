/*
 * server.c - lab fork, a legal but slow alternative: a process-based concurrent echo server
 * whose children read their client a byte at a time
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

/*
 * echo - send back every line of connfd, the last one even without '\n', until EOF.
 * Legal but slow: a read(2) per byte (the naive readline, before rio's buffer), so
 * a line costs as many system calls as it has bytes.
 */
static void echo(int connfd)
{
    char buf[MAXLINE];
    size_t len = 0;

    for (;;) {
        char c;
        ssize_t n = read(connfd, &c, 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;              /* EOF, or the client reset */
        buf[len++] = c;
        if (c == '\n' || len == sizeof buf) {
            if (rio_writen(connfd, buf, len) != (ssize_t)len)
                return;         /* client reset or gone (EPIPE, ECONNRESET): stop */
            len = 0;
        }
    }
    if (len > 0)
        (void)rio_writen(connfd, buf, len);
}

/* serve - the child's whole life: it never returns into the accept loop */
static _Noreturn void serve(int listenfd, int connfd)
{
    Close(listenfd);            /* rule: the child does not hold the listening socket */
    echo(connfd);
    Close(connfd);              /* the client sees the connection close */
    exit(EXIT_SUCCESS);         /* rule: a child ends when its client is done */
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
        pid_t pid = fork();     /* rule: one new child per connection */
        if (pid == 0)
            serve(listenfd, connfd);
        if (pid < 0)
            perror("fork");     /* out of processes: drop this client, keep serving */
        Close(connfd);          /* rule: the parent closes its copy right after fork */
    }
}
