/*
 * server.c - lab select, an ALTERNATIVE design: epoll (level-triggered)
 *
 * One process, one thread: epoll_wait() waits on the listening socket, standard
 * input and every client at once; each descriptor's interest is changed only
 * when what we want from it changes.  Client sockets are non-blocking, and each
 * client has an input buffer (its partial line) and an output buffer (the
 * echo it is owed), so no client can make the server wait for it.
 * Usage: ./server PORT
 */
#include "netlib.h"
#include <sys/epoll.h>

#define INBUF MAXLINE           /* a partial line this long is echoed as it is */
#define OUTMAX (64 * 1024)      /* stop reading a client that is owed this much */
#define OUTBUF (OUTMAX + INBUF) /* what it may be owed, plus one read's worth */

typedef struct {
    int eof;                    /* the client has closed its sending side */
    uint32_t events;            /* what epoll watches for on it now */
    size_t inlen;               /* bytes in in[] */
    size_t outpos;              /* next byte of out[] to send */
    size_t outlen;              /* bytes in out[], sent or not */
    char in[INBUF];             /* bytes received after the last '\n' */
    char out[OUTBUF];           /* out[outpos..outlen): echo not yet sent */
} client_t;

static client_t *clients[FD_SETSIZE]; /* indexed by descriptor; NULL: not a client */
static int listenfd;            /* the listening socket (non-blocking) */
static int accepting = 1;       /* 0 while we are out of descriptors */
static int stdin_open;          /* standard input is still watched */
static int epfd;                /* the epoll instance */

/* interest - make epoll watch fd for events (op: EPOLL_CTL_ADD, _MOD or _DEL) */
static void interest(int op, int fd, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.fd = fd};

    if (epoll_ctl(epfd, op, fd, &ev) < 0)
        unix_error("epoll_ctl");
}

/* drop_client - close a client's connection and forget it */
static void drop_client(int fd)
{
    interest(EPOLL_CTL_DEL, fd, 0);
    Close(fd);                  /* releases the descriptor; the client sees EOF */
    free(clients[fd]);
    clients[fd] = NULL;
    accepting = 1;              /* a descriptor is free again */
}

/* add_clients - accept every pending connection, without waiting for more */
static void add_clients(void)
{
    for (;;) {
        int fd = accept(listenfd, NULL, NULL);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE)
                accepting = 0;  /* out of descriptors: wait until a client leaves */
            else if (errno != EAGAIN && errno != EWOULDBLOCK)
                perror("accept");
            return;
        }
        client_t *c = fd < FD_SETSIZE ? malloc(sizeof *c) : NULL;
        if (c == NULL) {        /* select cannot watch fd >= FD_SETSIZE; or no memory */
            Close(fd);
            continue;
        }
        set_nonblocking(fd);    /* rule: read and write never wait for one client */
        c->eof = 0;
        c->inlen = c->outpos = c->outlen = 0;
        c->events = EPOLLIN;
        clients[fd] = c;
        interest(EPOLL_CTL_ADD, fd, EPOLLIN);
    }
}

/* flush_client - send what a client is owed, as far as its socket takes it */
static void flush_client(int fd)
{
    client_t *c = clients[fd];

    while (c->outpos < c->outlen) {
        ssize_t n = write(fd, c->out + c->outpos, c->outlen - c->outpos);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                drop_client(fd); /* rule: EPIPE, ECONNRESET drop this client only */
            return;             /* socket full: select says when there is room */
        }
        c->outpos += (size_t)n;
    }
    c->outpos = c->outlen = 0;
    if (c->eof)
        drop_client(fd);        /* rule: after EOF, close once all is sent */
}

/* queue - move the first n bytes of a client's input to its output */
static void queue(client_t *c, size_t n)
{
    c->outlen -= c->outpos;     /* compact out[]: the sent bytes go */
    memmove(c->out, c->out + c->outpos, c->outlen);
    c->outpos = 0;
    memcpy(c->out + c->outlen, c->in, n);
    c->outlen += n;
    c->inlen -= n;
    memmove(c->in, c->in + n, c->inlen);
}

/* read_client - take what a client sent and queue its complete lines */
static void read_client(int fd)
{
    client_t *c = clients[fd];
    ssize_t n = read(fd, c->in + c->inlen, INBUF - c->inlen);

    if (n < 0) {
        if (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK)
            drop_client(fd);    /* rule: a reset drops this client only */
        return;
    }
    if (n == 0)
        c->eof = 1;
    c->inlen += (size_t)n;
    size_t ready = c->inlen;    /* echo up to the last '\n'; all of it at EOF or when full */
    if (!c->eof && c->inlen < INBUF)
        while (ready > 0 && c->in[ready - 1] != '\n')
            ready--;
    queue(c, ready);
    flush_client(fd);
}

/* read_stdin - print back each line typed on standard input */
static void read_stdin(void)
{
    static char buf[MAXLINE];   /* the line typed so far */
    static size_t len;          /* bytes in buf */
    ssize_t n = read(STDIN_FILENO, buf + len, sizeof buf - len);
    char *nl;

    if (n < 0 && (errno == EINTR || errno == EAGAIN))
        return;
    if (n <= 0) {               /* rule: at end of input, stop watching it, keep serving */
        if (len > 0)
            printf("%.*s\n", (int)len, buf);
        stdin_open = 0;
        len = 0;
    } else {
        len += (size_t)n;
        while ((nl = memchr(buf, '\n', len)) != NULL) {
            size_t k = (size_t)(nl - buf) + 1;
            fwrite(buf, 1, k, stdout);
            len -= k;
            memmove(buf, buf + k, len);
        }
        if (len == sizeof buf) { /* a line longer than buf: print it in pieces */
            printf("%.*s\n", (int)len, buf);
            len = 0;
        }
    }
    fflush(stdout);
}

/* rewatch - bring a client's epoll interest up to date with its state */
static void rewatch(int fd)
{
    client_t *c = clients[fd];
    uint32_t events = 0;

    if (c == NULL)
        return;                 /* dropped */
    if (!c->eof && c->outlen - c->outpos < OUTMAX)
        events |= EPOLLIN;      /* rule: a client that does not read stops being read */
    if (c->outpos < c->outlen)
        events |= EPOLLOUT;     /* echo owed: wait for room to send it */
    if (events != c->events) {
        interest(EPOLL_CTL_MOD, fd, events);
        c->events = events;
    }
}

int main(int argc, char **argv)
{
    struct epoll_event ev[64];
    int listening = 0;          /* listenfd is in the epoll set */

    if (argc != 2) {
        fprintf(stderr, "usage: %s PORT\n", argv[0]);
        exit(EXIT_FAILURE);
    }
    install_handler(SIGPIPE, SIG_IGN, 0);   /* a vanished client gives EPIPE, not death */
    stdin_open = fcntl(STDIN_FILENO, F_GETFL) != -1;  /* watch stdin if there is one */
    listenfd = Open_listenfd(argv[1]);
    set_nonblocking(listenfd);  /* accept until EAGAIN, never wait in it */
    if ((epfd = epoll_create1(EPOLL_CLOEXEC)) < 0)
        unix_error("epoll_create1");
    if (stdin_open) {           /* a regular file or /dev/null cannot be watched: skip it */
        struct epoll_event e = {.events = EPOLLIN, .data.fd = STDIN_FILENO};
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, STDIN_FILENO, &e) < 0)
            stdin_open = 0;
    }

    for (;;) {
        if (accepting != listening) {   /* out of descriptors: stop watching listenfd */
            interest(accepting ? EPOLL_CTL_ADD : EPOLL_CTL_DEL, listenfd, EPOLLIN);
            listening = accepting;
        }
        /* rule: no timeout (-1), so an idle server sleeps here; one thread does all */
        int n = epoll_wait(epfd, ev, 64, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            unix_error("epoll_wait");
        }
        int ready_listen = 0;
        for (int i = 0; i < n; i++) {
            int fd = ev[i].data.fd;
            uint32_t e = ev[i].events;
            if (clients[fd] != NULL) {
                /* a hang-up or an error is seen by the read or write it makes fail */
                if ((clients[fd]->events & EPOLLIN) && (e & (EPOLLIN | EPOLLHUP | EPOLLERR)))
                    read_client(fd);
                if (clients[fd] != NULL && (e & (EPOLLOUT | EPOLLHUP | EPOLLERR)))
                    flush_client(fd);
                rewatch(fd);
            } else if (fd == listenfd) {
                ready_listen = 1;
            } else if (fd == STDIN_FILENO && stdin_open) {
                read_stdin();
                if (!stdin_open)
                    interest(EPOLL_CTL_DEL, STDIN_FILENO, 0);
            }
        }
        if (ready_listen && accepting)
            add_clients();      /* last: a descriptor freed above is not mistaken */
    }
}
