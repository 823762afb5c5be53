/*
 * server.c - lab select, model answer: an event-based concurrent echo server
 *
 * One process, one thread: select() waits on the listening socket, standard
 * input and every client at once.  Client sockets are non-blocking, and each
 * client has an input buffer (its partial line) and an output buffer (the
 * echo it is owed), so no client can make the server wait for it.
 * Usage: ./server PORT
 */
#include "netlib.h"

#define INBUF MAXLINE           /* a partial line this long is echoed as it is */
#define OUTMAX (64 * 1024)      /* stop reading a client that is owed this much */
#define OUTBUF (OUTMAX + INBUF) /* what it may be owed, plus one read's worth */

typedef struct {
    int eof;                    /* the client has closed its sending side */
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

/* drop_client - close a client's connection and forget it */
static void drop_client(int fd)
{
    Close(fd);                  /* releases the descriptor; the client sees EOF */
    free(clients[fd]);
    clients[fd] = NULL;
    accepting = 1;              /* a descriptor is free again */
}

/* serve - a thread's whole life: echo one client with blocking I/O until it leaves (what each
 * read brings goes back in one write, as the select loop sends a client's bytes: a write per line
 * would make it several times slower than the reference, on vs-reference's edge) */
static void *serve(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char buf[MAXLINE];
    ssize_t n;

    for (;;) {
        n = read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0 || rio_writen(fd, buf, (size_t)n) != n)
            break;
    }
    Close(fd);
    return NULL;
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
        /* BUG (single-thread): each client is handed to a thread of its own */
        pthread_t tid;
        int rc = pthread_create(&tid, NULL, serve, (void *)(intptr_t)fd);
        if (rc != 0) {
            fprintf(stderr, "pthread_create: %s\n", strerror(rc));
            Close(fd);
            continue;
        }
        Pthread_detach(tid);
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

/* watch - fill the sets select waits on; returns the nfds argument */
static int watch(fd_set *rset, fd_set *wset)
{
    int nfds = 0;

    FD_ZERO(rset);
    FD_ZERO(wset);
    if (accepting) {
        FD_SET(listenfd, rset);
        nfds = listenfd + 1;
    }
    if (stdin_open) {
        FD_SET(STDIN_FILENO, rset);
        nfds = nfds > STDIN_FILENO ? nfds : STDIN_FILENO + 1;
    }
    for (int fd = 0; fd < FD_SETSIZE; fd++) {
        const client_t *c = clients[fd];
        if (c == NULL)
            continue;
        if (!c->eof && c->outlen - c->outpos < OUTMAX)
            FD_SET(fd, rset);   /* rule: a client that does not read stops being read */
        if (c->outpos < c->outlen)
            FD_SET(fd, wset);   /* echo owed: wait for room to send it */
        nfds = fd + 1;
    }
    return nfds;
}

int main(int argc, char **argv)
{
    fd_set rset, wset;

    if (argc != 2) {
        fprintf(stderr, "usage: %s PORT\n", argv[0]);
        exit(EXIT_FAILURE);
    }
    install_handler(SIGPIPE, SIG_IGN, 0);   /* a vanished client gives EPIPE, not death */
    stdin_open = fcntl(STDIN_FILENO, F_GETFL) != -1;  /* watch stdin if there is one */
    listenfd = Open_listenfd(argv[1]);
    set_nonblocking(listenfd);  /* accept until EAGAIN, never wait in it */

    for (;;) {
        int nfds = watch(&rset, &wset);
        /* rule: no timeout, so an idle server sleeps here; one thread does all */
        if (select(nfds, &rset, &wset, NULL, NULL) < 0) {
            if (errno == EINTR)
                continue;
            unix_error("select");
        }
        for (int fd = 0; fd < nfds; fd++) {
            if (clients[fd] != NULL && FD_ISSET(fd, &rset))
                read_client(fd);
            if (clients[fd] != NULL && FD_ISSET(fd, &wset))
                flush_client(fd);
        }
        if (stdin_open && FD_ISSET(STDIN_FILENO, &rset))
            read_stdin();
        if (accepting && FD_ISSET(listenfd, &rset))
            add_clients();      /* last: a descriptor freed above is not mistaken */
    }
}
