/*
 * server.c - lab thread, alternative design: a prethreaded concurrent echo server
 *
 * NTHREADS worker threads are created at start.  The main thread only
 * accepts and puts each connected descriptor into a bounded buffer (sbuf);
 * a worker takes one out, echoes its client's lines until EOF, closes it
 * and goes back for the next.  Line lengths go to a count shared by all.
 * Usage: ./server PORT
 */
#include "netlib.h"

static unsigned long byte_cnt;  /* bytes received from every client; guarded by cnt_mutex */
static pthread_mutex_t cnt_mutex = PTHREAD_MUTEX_INITIALIZER;

/* count_bytes - add n to the shared count and return its new value */
static unsigned long count_bytes(size_t n)
{
    Pthread_mutex_lock(&cnt_mutex);         /* rule: the lock covers only the addition */
    unsigned long total = byte_cnt += n;    /* read inside the lock: T just after adding N */
    Pthread_mutex_unlock(&cnt_mutex);
    return total;
}

/* echo_cnt - echo each line of connfd and report it, until EOF */
static void echo_cnt(int connfd)
{
    rio_t rio;
    char buf[MAXLINE];
    ssize_t n;

    rio_readinitb(&rio, connfd);
    while ((n = rio_readlineb(&rio, buf, MAXLINE)) > 0) {
        int sent = rio_writen(connfd, buf, (size_t)n) == n;
        unsigned long total = count_bytes((size_t)n);
        /* one printf per line: stdio's lock keeps lines of different threads whole */
        printf("server received %zd (%lu total) bytes on fd %d\n", n, total, connfd);
        fflush(stdout);
        if (!sent)
            return;             /* client reset or gone (EPIPE, ECONNRESET): stop */
    }
}

/*
 * sbuf - a bounded FIFO of connected descriptors shared by the main thread
 * (producer) and the workers (consumers): a mutex and two condition variables
 */
#define NTHREADS 28     /* BUG (thread-per-client): LABS.md accepts a pool of at least 32 workers */
#define SBUFSIZE 64

typedef struct {
    int buf[SBUFSIZE];  /* descriptors waiting for a worker */
    size_t front;       /* buf[front % SBUFSIZE] is the oldest */
    size_t count;       /* how many are waiting */
    pthread_mutex_t mutex;
    pthread_cond_t not_full;
    pthread_cond_t not_empty;
} sbuf_t;

static sbuf_t sbuf = {
    .mutex = PTHREAD_MUTEX_INITIALIZER,
    .not_full = PTHREAD_COND_INITIALIZER,
    .not_empty = PTHREAD_COND_INITIALIZER,
};

/* sbuf_insert - put fd at the rear, waiting while the buffer is full */
static void sbuf_insert(sbuf_t *sp, int fd)
{
    Pthread_mutex_lock(&sp->mutex);
    while (sp->count == SBUFSIZE)
        pthread_cond_wait(&sp->not_full, &sp->mutex);
    sp->buf[(sp->front + sp->count) % SBUFSIZE] = fd;
    sp->count++;
    pthread_cond_signal(&sp->not_empty);
    Pthread_mutex_unlock(&sp->mutex);
}

/* sbuf_remove - take the descriptor at the front, waiting while the buffer is empty */
static int sbuf_remove(sbuf_t *sp)
{
    Pthread_mutex_lock(&sp->mutex);
    while (sp->count == 0)
        pthread_cond_wait(&sp->not_empty, &sp->mutex);
    int fd = sp->buf[sp->front % SBUFSIZE];
    sp->front++;
    sp->count--;
    pthread_cond_signal(&sp->not_full);
    Pthread_mutex_unlock(&sp->mutex);
    return fd;
}

/* worker - serve one client after another, for ever */
static void *worker(void *vargp)
{
    (void)vargp;
    Pthread_detach(pthread_self());
    for (;;) {
        int connfd = sbuf_remove(&sbuf); /* each descriptor is taken by exactly one worker */
        echo_cnt(connfd);
        Close(connfd);                   /* release the descriptor when the client is done */
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s PORT\n", argv[0]);
        exit(EXIT_FAILURE);
    }
    install_handler(SIGPIPE, SIG_IGN, 0);   /* a vanished client gives EPIPE, not death */
    for (int i = 0; i < NTHREADS; i++) {
        pthread_t tid;
        int rc = pthread_create(&tid, NULL, worker, NULL);
        if (rc != 0)
            posix_error(rc, "pthread_create");
    }
    int listenfd = Open_listenfd(argv[1]);

    for (;;) {
        int connfd = accept(listenfd, NULL, NULL);
        if (connfd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            unix_error("accept");
        }
        sbuf_insert(&sbuf, connfd);
    }
}
