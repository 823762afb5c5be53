/*
 * server.c - lab ipc, one bug (fd-leak): the logger opens echo.log per read and never closes it
 * (once open fails, it goes on writing through the last descriptor it opened: the log stays
 * complete and the logger lives, so only the leak shows, whatever the reads' sizes);
 * otherwise the model answer: a process-based echo server that logs
 * every line through a pipe to one logger process
 *
 * Before it listens, the server makes one logger child and one pipe to it.
 * Each connection is served by a child of its own, which echoes its client's
 * lines and writes each complete line to the pipe in one write; the logger
 * appends what it reads to echo.log.  On SIGTERM the parent stops accepting,
 * closes its write end, and waits for the logger, which sees end-of-file
 * once every write end is closed, and ends.
 * Usage: ./server PORT
 */
#include "netlib.h"
#include <limits.h>             /* PIPE_BUF */

#define LOGFILE "echo.log"

static volatile sig_atomic_t stopping;  /* set by SIGTERM: leave the accept loop */
static int listenfd = -1;               /* the listening socket, for the SIGTERM handler */

/* sigchld_handler - reap every child that has ended (a loop: SIGCHLD is not queued) */
static void sigchld_handler(int sig)
{
    int saved_errno = errno;

    (void)sig;
    while (waitpid(-1, NULL, WNOHANG) > 0)
        ;
    errno = saved_errno;
}

/*
 * sigterm_handler - stop accepting.  A flag alone could come just before the
 * loop blocks in accept and be seen only at the next client; shutdown(2) (safe
 * in a handler) makes every accept on the socket fail at once, so the loop
 * always sees it.
 */
static void sigterm_handler(int sig)
{
    int saved_errno = errno;

    (void)sig;
    stopping = 1;
    shutdown(listenfd, SHUT_RDWR);
    errno = saved_errno;
}

/* logger - the logger's whole life: append what the pipe brings until every write end is closed */
static _Noreturn void logger(int readfd)
{
    char buf[1 << 16];
    ssize_t n;
    int logfd = -1;

    /* each record came in one write of at most PIPE_BUF bytes, so the stream
     * holds whole records; the logger alone writes the file, in order */
    while ((n = read(readfd, buf, sizeof buf)) != 0) {
        if (n < 0) {
            if (errno == EINTR)
                continue;
            unix_error("read from the log pipe");
        }
        /* BUG (fd-leak): echo.log is opened for each read and never closed:
         * a descriptor leaks per read; after about 1000 reads open fails, and
         * the last descriptor opened is used from then on */
        int fd = open(LOGFILE, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0)
            logfd = fd;
        else if (logfd < 0)
            unix_error("open " LOGFILE);
        if (rio_writen(logfd, buf, (size_t)n) != n)
            unix_error("write " LOGFILE);
    }
    exit(EXIT_SUCCESS);
}

/* echo - send back every line of connfd until EOF; log each complete line first */
static void echo(int connfd, int logfd)
{
    rio_t rio;
    char buf[MAXLINE];
    ssize_t n;

    rio_readinitb(&rio, connfd);
    while ((n = rio_readlineb(&rio, buf, MAXLINE)) > 0) {
        /* rule: a line travels whole: one write of at most PIPE_BUF bytes is
         * atomic, so no other child's line can cut into it.  (A last line
         * without '\n', or one longer than PIPE_BUF, is not logged.) */
        if (buf[n - 1] == '\n' && n <= PIPE_BUF && rio_writen(logfd, buf, (size_t)n) != n)
            unix_error("write to the log pipe");
        if (rio_writen(connfd, buf, (size_t)n) != n)
            return;             /* client reset or gone (EPIPE, ECONNRESET): stop */
    }
}

/* serve - the child's whole life: it never returns into the accept loop */
static _Noreturn void serve(int connfd, int logfd)
{
    install_handler(SIGTERM, SIG_DFL, 0);   /* the parent's shutdown is not the child's */
    Close(listenfd);            /* rule: the child does not hold the listening socket */
    echo(connfd, logfd);
    Close(connfd);              /* the client sees the connection close */
    exit(EXIT_SUCCESS);         /* rule: a child ends when its client is done */
}

int main(int argc, char **argv)
{
    int fds[2];

    if (argc != 2) {
        fprintf(stderr, "usage: %s PORT\n", argv[0]);
        exit(EXIT_FAILURE);
    }
    install_handler(SIGPIPE, SIG_IGN, 0);   /* a vanished client gives EPIPE, not death */

    /* rule: one logger and one channel, before anything is accepted */
    if (pipe(fds) < 0)
        unix_error("pipe");
    pid_t logger_pid = Fork();
    if (logger_pid == 0) {
        Close(fds[1]);          /* rule: the logger holds no write end, or it never sees EOF */
        logger(fds[0]);
    }
    Close(fds[0]);              /* rule: the parent (and so every child) holds no read end */

    install_handler(SIGCHLD, sigchld_handler, 0); /* no SA_RESTART: accept handles EINTR */
    install_handler(SIGTERM, sigterm_handler, 0); /* no SA_RESTART: accept returns EINTR */
    listenfd = Open_listenfd(argv[1]);

    while (!stopping) {
        int connfd = accept(listenfd, NULL, NULL);
        if (connfd < 0) {
            if (stopping)
                break;
            if (errno == EINTR || errno == ECONNABORTED)
                continue;       /* rule: a child ended (or SIGTERM came) during accept */
            unix_error("accept");
        }
        pid_t pid = fork();     /* rule: one new child per connection */
        if (pid == 0)
            serve(connfd, fds[1]);
        if (pid < 0)
            perror("fork");     /* out of processes: drop this client, keep serving */
        Close(connfd);          /* rule: the parent closes its copy right after fork */
    }

    /* SIGTERM: stop accepting, close the last write end, wait for the logger
     * to drain the pipe and end (SIG_DFL first: the handler must not reap it) */
    Close(listenfd);
    install_handler(SIGCHLD, SIG_DFL, 0);
    Close(fds[1]);
    while (waitpid(logger_pid, NULL, 0) < 0 && errno == EINTR)
        ;
    return EXIT_SUCCESS;
}
