/*
 * server.c - hostile corpus: the fork lab's model answer, flooding its terminal.
 *
 * It serves exactly as the reference does, but two children it starts first
 * write to stdout and stderr without pause (gigabytes over a grading), and the
 * parent prints a line per connection.  A correct server: it must keep every
 * point, while the grader keeps a bounded part of the output and counts the rest.
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

/* serve - the child's whole life: it never returns into the accept loop */
static _Noreturn void serve(int listenfd, int connfd)
{
    Close(listenfd);            /* rule: the child does not hold the listening socket */
    echo(connfd);
    Close(connfd);              /* the client sees the connection close */
    exit(EXIT_SUCCESS);         /* rule: a child ends when its client is done */
}

/* flood - write to fd without end (a pty that is drained never blocks for long) */
static _Noreturn void flood(int fd)
{
    static char block[65536];

    for (size_t i = 0; i < sizeof block; i++)
        block[i] = (i % 64 == 63) ? '\n' : (char)('a' + i % 26);
    for (;;)
        if (write(fd, block, sizeof block) < 0 && errno != EINTR)
            exit(EXIT_FAILURE);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s PORT\n", argv[0]);
        exit(EXIT_FAILURE);
    }
    install_handler(SIGPIPE, SIG_IGN, 0);   /* a vanished client gives EPIPE, not death */
    install_handler(SIGCHLD, sigchld_handler, 0); /* no SA_RESTART: accept handles EINTR */
    /* the flooders start before the listening socket exists: they never hold it */
    if (Fork() == 0)
        flood(STDOUT_FILENO);
    if (Fork() == 0)
        flood(STDERR_FILENO);
    int listenfd = Open_listenfd(argv[1]);

    for (;;) {
        int connfd = accept(listenfd, NULL, NULL);
        if (connfd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;       /* rule: a child ended during accept: just try again */
            unix_error("accept");
        }
        printf("accepted connection %d\n", connfd);
        pid_t pid = fork();     /* rule: one new child per connection */
        if (pid == 0)
            serve(listenfd, connfd);
        if (pid < 0)
            perror("fork");     /* out of processes: drop this client, keep serving */
        Close(connfd);          /* rule: the parent closes its copy right after fork */
    }
}
