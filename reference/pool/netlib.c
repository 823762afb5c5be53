/*
 * netlib.c - the helper library shared by the fork, select and thread labs
 *
 * In the shape of CS:APP's csapp.c, written afresh: checked wrappers that
 * exit with EXIT_FAILURE, a listening-socket helper, and robust I/O.
 * You should not need to change this file; your work goes in server.c.
 */
#include "netlib.h"

/***********************************************************************
 * Error-reporting functions
 **********************************************************************/

void unix_error(const char *what)
{
    perror(what);
    exit(EXIT_FAILURE);
}

void posix_error(int code, const char *what)
{
    errno = code;
    unix_error(what);
}

void gai_error(int code, const char *what)
{
    fprintf(stderr, "%s: %s\n", what, gai_strerror(code));
    exit(EXIT_FAILURE);
}

void app_error(const char *msg)
{
    fprintf(stderr, "%s\n", msg);
    exit(EXIT_FAILURE);
}

/***********************************************************************
 * Process and signal functions
 **********************************************************************/

pid_t Fork(void)
{
    pid_t pid = fork();

    if (pid < 0)
        unix_error("fork");
    return pid;
}

/*
 * install_handler - make h the action for signum, with sa_flags = flags
 * (for example SA_RESTART, or 0); h may be SIG_IGN or SIG_DFL.
 * While h runs, further signals of the same kind are held back.
 * Returns the previous action.
 */
handler_t *install_handler(int signum, handler_t *h, int flags)
{
    struct sigaction action, old;

    memset(&action, 0, sizeof action);
    action.sa_handler = h;
    sigemptyset(&action.sa_mask);
    action.sa_flags = flags;
    if (sigaction(signum, &action, &old) < 0)
        unix_error("sigaction");
    return old.sa_handler;
}

/***********************************************************************
 * Unix I/O functions
 **********************************************************************/

void Close(int fd)
{
    /* On Linux the descriptor is released even when close says EINTR */
    if (close(fd) < 0 && errno != EINTR)
        unix_error("close");
}

/* set_nonblocking - make read, write and accept on fd fail with EAGAIN instead of waiting */
void set_nonblocking(int fd)
{
    int flags = fcntl(fd, F_GETFL);

    if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
        unix_error("fcntl");
}

/***********************************************************************
 * Dynamic memory functions
 **********************************************************************/

void *Malloc(size_t size)
{
    void *p = malloc(size);

    if (p == NULL)
        unix_error("malloc");
    return p;
}

/***********************************************************************
 * Thread functions
 **********************************************************************/

void Pthread_detach(pthread_t tid)
{
    int rc = pthread_detach(tid);

    if (rc != 0)
        posix_error(rc, "pthread_detach");
}

void Pthread_mutex_lock(pthread_mutex_t *mutex)
{
    int rc = pthread_mutex_lock(mutex);

    if (rc != 0)
        posix_error(rc, "pthread_mutex_lock");
}

void Pthread_mutex_unlock(pthread_mutex_t *mutex)
{
    int rc = pthread_mutex_unlock(mutex);

    if (rc != 0)
        posix_error(rc, "pthread_mutex_unlock");
}

/***********************************************************************
 * Socket functions
 **********************************************************************/

/* listen_on - a socket listening on the address ai, or -1 (errno says why) */
static int listen_on(const struct addrinfo *ai)
{
    int fd, optval = 1;

    if ((fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol)) < 0)
        return -1;
    /* SO_REUSEADDR: restart at once on a port that has connections in TIME_WAIT */
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &optval, sizeof optval) == 0
        && bind(fd, ai->ai_addr, ai->ai_addrlen) == 0
        && listen(fd, LISTENQ) == 0)
        return fd;
    int saved = errno;
    close(fd);
    errno = saved;
    return -1;
}

/*
 * open_listenfd - a socket listening on port (a decimal number) on every
 * local address, IPv4 tried first; -1 with errno set if none could be made
 * (EINVAL, after a message on stderr, if port is not a valid port).
 */
int open_listenfd(const char *port)
{
    struct addrinfo hints, *list, *p;
    int rc, fd = -1;

    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_ADDRCONFIG | AI_NUMERICSERV; /* any address, numeric port */
    if ((rc = getaddrinfo(NULL, port, &hints, &list)) != 0) {
        fprintf(stderr, "getaddrinfo %s: %s\n", port, gai_strerror(rc));
        if (rc != EAI_SYSTEM)
            errno = EINVAL;
        return -1;
    }
    for (int pass = 0; pass < 2 && fd < 0; pass++)  /* pass 0: IPv4 only; pass 1: the rest */
        for (p = list; p != NULL && fd < 0; p = p->ai_next)
            if ((p->ai_family == AF_INET) == (pass == 0))
                fd = listen_on(p);
    freeaddrinfo(list);
    return fd;
}

int Open_listenfd(const char *port)
{
    int fd = open_listenfd(port);

    if (fd < 0)
        unix_error("Open_listenfd");
    return fd;
}

/*
 * Accept - accept, exiting on ANY error, EINTR included: fine for a
 * server that handles no signal, wrong for one whose accept a signal
 * can interrupt (call accept and try again on EINTR there).
 */
int Accept(int listenfd, struct sockaddr *addr, socklen_t *addrlen)
{
    int fd = accept(listenfd, addr, addrlen);

    if (fd < 0)
        unix_error("accept");
    return fd;
}

/***********************************************************************
 * Robust I/O (rio)
 **********************************************************************/

/*
 * rio_writen - write all n bytes of usrbuf to fd, despite short counts and
 * EINTR; returns n, or -1 with errno set (EPIPE, ECONNRESET, ...).
 */
ssize_t rio_writen(int fd, const void *usrbuf, size_t n)
{
    const char *p = usrbuf;
    size_t left = n;

    while (left > 0) {
        ssize_t nw = write(fd, p, left);
        if (nw < 0) {
            if (errno == EINTR)
                continue;       /* interrupted before writing anything: again */
            return -1;
        }
        left -= (size_t)nw;
        p += nw;
    }
    return (ssize_t)n;
}

/* rio_readinitb - make rp an empty buffer that reads from fd */
void rio_readinitb(rio_t *rp, int fd)
{
    rp->fd = fd;
    rp->cnt = 0;
    rp->bufptr = rp->buf;
}

/*
 * rio_read - copy up to n bytes from rp's buffer, refilling it with one
 * read when empty; returns the count, 0 at EOF, -1 on error (never EINTR).
 */
static ssize_t rio_read(rio_t *rp, char *usrbuf, size_t n)
{
    while (rp->cnt <= 0) {
        rp->cnt = read(rp->fd, rp->buf, sizeof rp->buf);
        if (rp->cnt < 0) {
            if (errno != EINTR)
                return -1;
        } else if (rp->cnt == 0) {
            return 0;
        } else {
            rp->bufptr = rp->buf;
        }
    }
    size_t cnt = (size_t)rp->cnt < n ? (size_t)rp->cnt : n;
    memcpy(usrbuf, rp->bufptr, cnt);
    rp->bufptr += cnt;
    rp->cnt -= (ssize_t)cnt;
    return (ssize_t)cnt;
}

/*
 * rio_readlineb - read one line, '\n' included, into usrbuf and end it with
 * a NUL; a line longer than maxlen - 1 bytes comes in pieces, and the last
 * line of the input may have no '\n'.  Returns the number of bytes stored
 * (NUL excluded; a line may hold NUL bytes), 0 at EOF, -1 on error.
 */
ssize_t rio_readlineb(rio_t *rp, void *usrbuf, size_t maxlen)
{
    char *p = usrbuf, c;
    size_t n = 0;

    while (n + 1 < maxlen) {
        ssize_t rc = rio_read(rp, &c, 1);
        if (rc < 0)
            return -1;
        if (rc == 0)
            break;              /* EOF: n is 0, or the length of a last line without '\n' */
        p[n++] = c;
        if (c == '\n')
            break;
    }
    if (maxlen > 0)
        p[n] = '\0';
    return (ssize_t)n;
}
