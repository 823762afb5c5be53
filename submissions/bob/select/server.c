/*
 * server.c - lab select: an event-based concurrent echo server (skeleton)
 *
 * As given, it listens on PORT, accepts each connection and closes it at
 * once, serving nobody.  Fill in the TODOs: each names the rule of the
 * handout it serves.  Build with `make`, run `./server PORT`, and test
 * yourself with `make check`.  The helpers (set_nonblocking, Close,
 * Malloc, install_handler, ...) are in netlib.h.
 *
 * The whole server is one loop: watch() says what to wait for, select()
 * waits, and the loop hands each ready descriptor to the function for it.
 * No function may wait for one client: every socket a client has is
 * non-blocking, and what a client is owed lives in its client_t.
 */
#include "netlib.h"

#define OUTMAX (64 * 1024)      /* a bound on the echo one client may be owed */

/* One connected client: all it needs between two calls of select.
 * TODO (handout: "a client that connects and sends nothing, or sends part
 * of a line and stalls, delays no one else"): a buffer for the bytes it
 * sent after its last '\n' (room for a line of 8 KiB and its '\n').
 * TODO (handout: "a client that sends a lot and never reads its echo
 * delays no one else, and the server's memory for it stays bounded"): a
 * buffer for the echo it is owed but not sent yet (about OUTMAX). */
typedef struct {
    int eof;                    /* the client has closed its sending side */
} client_t;

client_t *clients[FD_SETSIZE];  /* indexed by descriptor; NULL: not a client */

void add_client(int listenfd);
void drop_client(int fd);
void read_client(int fd);
void write_client(int fd);
void read_stdin(void);
int watch(int listenfd, fd_set *rset, fd_set *wset);

/* add_client - accept a connection and make it a client */
void add_client(int listenfd)
{
    int fd = accept(listenfd, NULL, NULL);

    if (fd < 0) {
        if (errno == EINTR || errno == ECONNABORTED || errno == EAGAIN)
            return;
        unix_error("accept");
    }
    /* TODO (handout: "at least 500 clients connected at once are all
     * served"): select watches descriptors below FD_SETSIZE only: close
     * any other at once. */
    /* TODO (handout: "a client that connects and sends nothing ... delays
     * no one else"): make fd non-blocking (set_nonblocking), then give it
     * a client_t in clients[fd]. */

    /* As given, nobody is served: the connection is closed at once. */
    Close(fd);
}

/* drop_client - close a client's connection and forget it */
void drop_client(int fd)
{
    Close(fd);
    free(clients[fd]);
    clients[fd] = NULL;
}

/* read_client - the client fd has sent something, or closed, or reset */
void read_client(int fd)
{
    (void)fd;
    /* TODO (handout: "a client that ... sends part of a line and stalls
     * delays no one else"): read ONCE, whatever is there, into its input
     * buffer (never loop until a whole line has come), then move every
     * complete line to its output buffer and try to send it (write_client). */
    /* TODO (handout: "when a client closes its sending side, the server
     * sends back what is still owed (including a last line with no \n)"):
     * read returns 0: the partial line is owed too; remember eof. */
    /* TODO (handout: "a client that resets its connection ... never stops
     * the server from serving the others"): read fails (but not with
     * EAGAIN or EINTR): drop this client. */
}

/* write_client - send what the client fd is owed, as far as its socket takes it */
void write_client(int fd)
{
    (void)fd;
    /* TODO (handout: "a client that sends a lot and never reads its echo
     * delays no one else"): write until all is sent or write fails with
     * EAGAIN (the socket is full: select will say when there is room).
     * Any other failure (EPIPE, ECONNRESET): drop this client. */
    /* TODO (handout: "... and then closes that connection, releasing its
     * descriptor"): all sent after eof: drop the client. */
}

/* read_stdin - a line is being typed on standard input */
void read_stdin(void)
{
    /* TODO (handout: "each line typed on the server's standard input is
     * printed back on its standard output, within 1 s"): read once, print
     * each complete line, fflush(stdout).  (Remember that printf("%s")
     * stops at a NUL and that read does not end what it reads with one.) */
    /* TODO (handout: "at end of input it stops watching standard input and
     * keeps serving"): read returns 0. */
}

/* watch - fill the sets select waits on; returns select's nfds argument */
int watch(int listenfd, fd_set *rset, fd_set *wset)
{
    int nfds = listenfd + 1;

    FD_ZERO(rset);
    FD_ZERO(wset);
    FD_SET(listenfd, rset);
    /* TODO (handout: "it waits on the listening socket, every client and
     * standard input at once"): watch standard input until its end. */
    for (int fd = 0; fd < FD_SETSIZE; fd++) {
        if (clients[fd] == NULL)
            continue;
        /* TODO (handout: "a client that sends a lot and never reads its
         * echo ... the server's memory for it stays bounded"): read from a
         * client only while it is owed less than OUTMAX (and not after its
         * eof); watch it for writing while it is owed anything. */
        FD_SET(fd, rset);
        nfds = fd + 1 > nfds ? fd + 1 : nfds;
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
    /* TODO (handout: "SIGPIPE and ECONNRESET are handled"): writing to a
     * client that has gone must not kill the server. */
    int listenfd = Open_listenfd(argv[1]);

    for (;;) {
        int nfds = watch(listenfd, &rset, &wset);
        /* handout: "while no client sends anything, the server sleeps in the
         * multiplexing call": keep select without a timeout. */
        if (select(nfds, &rset, &wset, NULL, NULL) < 0) {
            if (errno == EINTR)
                continue;
            unix_error("select");
        }
        for (int fd = 0; fd < nfds; fd++) {
            if (clients[fd] != NULL && FD_ISSET(fd, &rset))
                read_client(fd);
            if (clients[fd] != NULL && FD_ISSET(fd, &wset))
                write_client(fd);   /* clients[fd] may have been dropped */
        }
        if (FD_ISSET(STDIN_FILENO, &rset))
            read_stdin();
        if (FD_ISSET(listenfd, &rset))
            add_client(listenfd);   /* last: a descriptor freed above is not mistaken */
    }
}
