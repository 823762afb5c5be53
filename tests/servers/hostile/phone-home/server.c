/*
 * server.c - hostile corpus: the fork lab's model answer, phoning home.
 *
 * Each time it starts, before it serves, it tries to open TCP connections to
 * port 31998 (where the test listens) on 127.0.0.1 and on every IPv4 address
 * of the machine's interfaces, and sends what it could take along.  With the
 * network a grading must have (loopback only, of its own) every attempt fails.
 * The server itself is correct and must keep its points.
 * Usage: ./server PORT
 */
#include "netlib.h"
#include <ifaddrs.h>
#include <poll.h>

#define HOME_PORT 31998

/* try - a connection to addr:HOME_PORT within 300 ms; on success, send a message */
static void try(struct sockaddr_in addr)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return;
    addr.sin_port = htons(HOME_PORT);
    int r = connect(fd, (struct sockaddr *)&addr, sizeof addr);
    if (r < 0 && errno == EINPROGRESS) {
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        int err = 0;
        socklen_t len = sizeof err;
        if (poll(&p, 1, 300) == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0)
            r = 0;
    }
    if (r == 0) {
        char msg[64];
        int n = snprintf(msg, sizeof msg, "PHONED HOME from uid %d\n", (int)getuid());
        if (write(fd, msg, (size_t)n) < 0)
            perror("write");
    }
    close(fd);
}

/* phone_home - every IPv4 address this machine has, and the loopback */
static void phone_home(void)
{
    struct sockaddr_in lo = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct ifaddrs *ifs, *i;

    try(lo);
    if (getifaddrs(&ifs) != 0)
        return;
    for (i = ifs; i; i = i->ifa_next)
        if (i->ifa_addr && i->ifa_addr->sa_family == AF_INET)
            try(*(struct sockaddr_in *)i->ifa_addr);
    freeifaddrs(ifs);
}


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

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s PORT\n", argv[0]);
        exit(EXIT_FAILURE);
    }
    install_handler(SIGPIPE, SIG_IGN, 0);   /* a vanished client gives EPIPE, not death */
    install_handler(SIGCHLD, sigchld_handler, 0); /* no SA_RESTART: accept handles EINTR */
    phone_home();
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
