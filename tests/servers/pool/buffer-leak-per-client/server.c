/*
 * server.c - lab pool, one bug: a line buffer malloc'd per client is never
 * freed (a leak per client).  Otherwise the model answer, model answer: a prethreaded echo server with a
 * bounded buffer of connections
 *
 * WORKERS threads are made before the first accept.  The main thread only
 * accepts and inserts each connected descriptor into a bounded FIFO (sbuf);
 * a worker removes one, echoes its client's lines until EOF, closes it and
 * goes back for the next.  Two counting semaphores count (free slots,
 * waiting descriptors), a binary one excludes.
 * Usage: ./server PORT [WORKERS]
 */
#include <semaphore.h>

#include "netlib.h"

#define DEFAULT_WORKERS 8
#define MAX_WORKERS 64
#define SBUFSIZE 16     /* rule: the buffer holds at most 16 descriptors */

/* sbuf - the bounded buffer between the main thread (producer) and the workers (consumers) */
typedef struct {
    int buf[SBUFSIZE];  /* descriptors waiting for a worker, a circular queue */
    int front;          /* buf[front] is the oldest (next to remove) */
    int rear;           /* buf[rear] is the next free slot */
    sem_t mutex;        /* 1: exclusive access to buf, front and rear */
    sem_t slots;        /* free slots */
    sem_t items;        /* descriptors waiting */
} sbuf_t;

static sbuf_t sbuf;

/* P - wait on s (a signal may interrupt sem_wait: wait again) */
static void P(sem_t *s)
{
    while (sem_wait(s) < 0)
        if (errno != EINTR)
            unix_error("sem_wait");
}

/* V - post s */
static void V(sem_t *s)
{
    if (sem_post(s) < 0)
        unix_error("sem_post");
}

static void sbuf_init(sbuf_t *sp)
{
    sp->front = sp->rear = 0;
    if (sem_init(&sp->mutex, 0, 1) < 0 || sem_init(&sp->slots, 0, SBUFSIZE) < 0
        || sem_init(&sp->items, 0, 0) < 0)
        unix_error("sem_init");
}

/* sbuf_insert - put fd at the rear; when the buffer is full, sleep until a slot frees */
static void sbuf_insert(sbuf_t *sp, int fd)
{
    P(&sp->slots);              /* rule: full buffer, the main thread waits (asleep, holding fd) */
    P(&sp->mutex);              /* count first, then lock: a sleeper never holds the lock */
    sp->buf[sp->rear] = fd;
    sp->rear = (sp->rear + 1) % SBUFSIZE;
    V(&sp->mutex);
    V(&sp->items);
}

/* sbuf_remove - take the oldest descriptor; when there is none, sleep until one comes */
static int sbuf_remove(sbuf_t *sp)
{
    P(&sp->items);              /* rule: nothing busy-waits; and P(items) before P(mutex), or deadlock */
    P(&sp->mutex);
    int fd = sp->buf[sp->front]; /* rule: first in, first out */
    sp->front = (sp->front + 1) % SBUFSIZE;
    V(&sp->mutex);
    V(&sp->slots);
    return fd;
}

/* echo - echo each line of connfd until EOF, or until the client is gone */
static void echo(int connfd)
{
    rio_t rio;
    char *buf = malloc(MAXLINE);    /* BUG: never freed: a buffer lost per client */
    ssize_t n;

    if (buf == NULL)
        return;
    rio_readinitb(&rio, connfd);
    while ((n = rio_readlineb(&rio, buf, MAXLINE)) > 0)
        if (rio_writen(connfd, buf, (size_t)n) != n)
            return;             /* reset or gone (EPIPE, ECONNRESET): this client only */
}

/* worker - serve one client after another, for the server's whole life */
static void *worker(void *vargp)
{
    (void)vargp;
    for (;;) {
        int connfd = sbuf_remove(&sbuf);
        echo(connfd);
        Close(connfd);          /* rule: no descriptor leaks; then the next client */
    }
    return NULL;
}

/* workers - WORKERS from argv[2], or the default; exits on a bad value */
static int workers(int argc, char **argv)
{
    if (argc < 3)
        return DEFAULT_WORKERS;
    char *end;
    errno = 0;
    long n = strtol(argv[2], &end, 10);
    if (errno || *end || end == argv[2] || n < 1 || n > MAX_WORKERS) {
        fprintf(stderr, "WORKERS must be a number from 1 to %d, not %s\n", MAX_WORKERS, argv[2]);
        exit(EXIT_FAILURE);
    }
    return (int)n;
}

int main(int argc, char **argv)
{
    if (argc != 2 && argc != 3) {
        fprintf(stderr, "usage: %s PORT [WORKERS]\n", argv[0]);
        exit(EXIT_FAILURE);
    }
    int nworkers = workers(argc, argv);
    install_handler(SIGPIPE, SIG_IGN, 0);   /* a vanished client gives EPIPE, not death */
    sbuf_init(&sbuf);
    for (int i = 0; i < nworkers; i++) {    /* rule: the whole pool, before the first accept */
        pthread_t tid;
        int rc = pthread_create(&tid, NULL, worker, NULL);
        if (rc != 0)
            posix_error(rc, "pthread_create");
        Pthread_detach(tid);
    }
    int listenfd = Open_listenfd(argv[1]);

    for (;;) {                  /* rule: the main thread only accepts and inserts */
        int connfd = accept(listenfd, NULL, NULL);
        if (connfd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            unix_error("accept");
        }
        sbuf_insert(&sbuf, connfd);
    }
}
