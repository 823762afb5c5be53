/*
 * server.c - hostile corpus: the fork lab's model answer, leaving a daemon behind.
 *
 * Before it serves, it double-forks a daemon in a session of its own (setsid)
 * that keeps a copy of the listening socket and a second listening socket on a
 * port of its own, ignores SIGTERM and SIGHUP, and changes its pid every 100 ms
 * (fork, parent exits) so that a kill by pid misses it.  The server itself is
 * correct and must keep its points; the daemon must not survive the grading.
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

/* daemonize - double fork and setsid: the daemon leaves the server's session and tree */
static void daemonize(int listenfd)
{
    if (Fork() != 0)
        return;                 /* the server goes on */
    setsid();
    if (Fork() != 0)
        _exit(0);               /* the daemon is orphaned */
    signal(SIGTERM, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    int own = open_listenfd("0");   /* a port of its own, as well as a copy of listenfd */
    (void)own;
    (void)listenfd;
    for (;;) {
        usleep(100000);
        if (fork() > 0)
            _exit(0);           /* a new pid every 100 ms */
        setsid();
    }
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
    daemonize(listenfd);

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
