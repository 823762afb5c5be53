/*
 * server.c - lab ipc, one bug: the message queue is opened O_NONBLOCK "so a
 * slow logger never delays an echo", and a child ignores mq_send's EAGAIN:
 * while the queue is full (10 messages the logger has not read yet), the
 * lines its children send are dropped, never logged.  Everything else is
 * the message-queue alternative's.
 *
 * Each complete line is one message (mq_send), so it arrives whole whatever
 * the other children send.  A queue has no end-of-file: on SIGTERM the parent
 * sends the logger an empty message, waits for it, and unlinks the queue.
 * Usage: ./server PORT
 */
#include "netlib.h"
#include <mqueue.h>

#define LOGFILE "echo.log"
#define MSGSIZE 4096            /* the longest line logged, its '\n' included */

static volatile sig_atomic_t stopping;
static int listenfd = -1;

static void sigchld_handler(int sig)
{
    int saved_errno = errno;

    (void)sig;
    while (waitpid(-1, NULL, WNOHANG) > 0)
        ;
    errno = saved_errno;
}

static void sigterm_handler(int sig)
{
    int saved_errno = errno;

    (void)sig;
    stopping = 1;
    shutdown(listenfd, SHUT_RDWR);  /* every accept fails at once: the loop sees the flag */
    errno = saved_errno;
}

/* logger - append every message to echo.log until the empty one */
static _Noreturn void logger(const char *name)
{
    char buf[MSGSIZE];
    ssize_t n;
    mqd_t q = mq_open(name, O_RDONLY);  /* rule: the logger holds the queue for reading only */
    int logfd = open(LOGFILE, O_WRONLY | O_CREAT | O_APPEND, 0644);

    if (q == (mqd_t)-1)
        unix_error("mq_open (logger)");
    if (logfd < 0)
        unix_error("open " LOGFILE);
    while ((n = mq_receive(q, buf, sizeof buf, NULL)) != 0) {
        if (n < 0) {
            if (errno == EINTR)
                continue;
            unix_error("mq_receive");
        }
        if (rio_writen(logfd, buf, (size_t)n) != n)
            unix_error("write " LOGFILE);
    }
    mq_close(q);
    Close(logfd);
    exit(EXIT_SUCCESS);
}

static void echo(int connfd, mqd_t q)
{
    rio_t rio;
    char buf[MAXLINE];
    ssize_t n;

    rio_readinitb(&rio, connfd);
    while ((n = rio_readlineb(&rio, buf, MAXLINE)) > 0) {
        /* one message per line: it travels whole */
        if (buf[n - 1] == '\n' && n <= MSGSIZE)
            mq_send(q, buf, (size_t)n, 0);   /* BUG: a full queue (EAGAIN) drops the line */
        if (rio_writen(connfd, buf, (size_t)n) != n)
            return;
    }
}

static _Noreturn void serve(int connfd, mqd_t q)
{
    install_handler(SIGTERM, SIG_DFL, 0);
    Close(listenfd);
    echo(connfd, q);
    Close(connfd);
    exit(EXIT_SUCCESS);
}

int main(int argc, char **argv)
{
    char name[64];
    struct mq_attr attr = { .mq_maxmsg = 10, .mq_msgsize = MSGSIZE };

    if (argc != 2) {
        fprintf(stderr, "usage: %s PORT\n", argv[0]);
        exit(EXIT_FAILURE);
    }
    install_handler(SIGPIPE, SIG_IGN, 0);

    /* a name of this server's own: two servers on one machine never share a queue */
    snprintf(name, sizeof name, "/echo-log-%ld", (long)getpid());
    mqd_t q = mq_open(name, O_WRONLY | O_CREAT | O_EXCL | O_NONBLOCK, 0600, &attr);
    if (q == (mqd_t)-1)
        unix_error("mq_open");
    pid_t logger_pid = Fork();
    if (logger_pid == 0) {
        mq_close(q);            /* the logger sends nothing */
        logger(name);
    }

    install_handler(SIGCHLD, sigchld_handler, 0);
    install_handler(SIGTERM, sigterm_handler, 0);
    listenfd = Open_listenfd(argv[1]);

    while (!stopping) {
        int connfd = accept(listenfd, NULL, NULL);
        if (connfd < 0) {
            if (stopping)
                break;
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            unix_error("accept");
        }
        pid_t pid = fork();
        if (pid == 0)
            serve(connfd, q);
        if (pid < 0)
            perror("fork");
        Close(connfd);
    }

    /* SIGTERM: the empty message ends the logger once it has written the rest */
    Close(listenfd);
    struct mq_attr blocking = { .mq_flags = 0 };
    mq_setattr(q, &blocking, NULL);     /* the stop message must not be dropped */
    install_handler(SIGCHLD, SIG_DFL, 0);
    while (mq_send(q, "", 0, 0) < 0)
        if (errno != EINTR)
            unix_error("mq_send (stop)");
    mq_close(q);
    while (waitpid(logger_pid, NULL, 0) < 0 && errno == EINTR)
        ;
    mq_unlink(name);            /* rule: nothing is left in /dev/mqueue */
    return EXIT_SUCCESS;
}
