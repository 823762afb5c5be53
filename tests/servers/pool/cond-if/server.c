/*
 * server.c - lab pool, one bug: pool/alt-condvar (one mutex and two
 * condition variables) with the main thread's wait for a free slot in an
 * `if` instead of a `while` loop: a spurious wake-up (POSIX allows them)
 * goes on as though a slot had freed, and inserts into the full buffer.
 * (The main thread is the only producer: no other thread can steal its
 * wake-up, so only a spurious one shows the bug, and every run is alike.
 * The workers' `if` would also lose stolen wake-ups, by the scheduler's
 * chance: see expect.json.)
 *
 * WORKERS threads are made before the first accept.  The main thread only
 * accepts and inserts each connected descriptor into a bounded FIFO (sbuf);
 * a worker removes one, echoes its client's lines until EOF, closes it and
 * goes back for the next.
 * Usage: ./server PORT [WORKERS]
 */

#include "netlib.h"

#define DEFAULT_WORKERS 8
#define MAX_WORKERS 64
#define SBUFSIZE 16     /* rule: the buffer holds at most 16 descriptors */

/* sbuf - the bounded buffer between the main thread (producer) and the workers (consumers) */
typedef struct {
    int buf[SBUFSIZE];  /* descriptors waiting for a worker, a circular queue */
    int front;          /* buf[front] is the oldest (next to remove) */
    int count;          /* descriptors waiting; buf[(front + count) % SBUFSIZE] is the next free slot */
    pthread_mutex_t lock;       /* guards buf, front and count */
    pthread_cond_t not_full;    /* signalled when a slot frees */
    pthread_cond_t not_empty;   /* signalled when a descriptor comes */
} sbuf_t;

static sbuf_t sbuf;

static void sbuf_init(sbuf_t *sp)
{
    sp->front = sp->count = 0;
    int rc;
    if ((rc = pthread_mutex_init(&sp->lock, NULL)) != 0 || (rc = pthread_cond_init(&sp->not_full, NULL)) != 0
        || (rc = pthread_cond_init(&sp->not_empty, NULL)) != 0)
        posix_error(rc, "sbuf_init");
}

/* sbuf_insert - put fd at the rear; when the buffer is full, sleep until a slot frees */
static void sbuf_insert(sbuf_t *sp, int fd)
{
    Pthread_mutex_lock(&sp->lock);
    if (sp->count == SBUFSIZE)          /* if, not while: the bug */
        pthread_cond_wait(&sp->not_full, &sp->lock);
    sp->buf[(sp->front + sp->count) % SBUFSIZE] = fd;
    sp->count++;
    pthread_cond_signal(&sp->not_empty);
    Pthread_mutex_unlock(&sp->lock);
}

/* sbuf_remove - take the oldest descriptor; when there is none, sleep until one comes */
static int sbuf_remove(sbuf_t *sp)
{
    Pthread_mutex_lock(&sp->lock);
    while (sp->count == 0)
        pthread_cond_wait(&sp->not_empty, &sp->lock);
    int fd = sp->buf[sp->front];
    sp->front = (sp->front + 1) % SBUFSIZE;
    sp->count--;
    pthread_cond_signal(&sp->not_full);
    Pthread_mutex_unlock(&sp->lock);
    return fd;
}

/* echo - echo each line of connfd until EOF, or until the client is gone */
static void echo(int connfd)
{
    rio_t rio;
    char buf[MAXLINE];
    ssize_t n;

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
