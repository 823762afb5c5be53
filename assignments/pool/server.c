/*
 * server.c - lab pool: a prethreaded echo server with a bounded buffer (skeleton)
 *
 * As given, it listens on PORT, accepts each connection and closes it at
 * once, serving nobody.  Fill in the TODOs: each names the rule of the
 * handout it serves.  Build with `make`, run `./server PORT [WORKERS]`, and
 * test yourself with `make check`.  The helpers (rio_readlineb, rio_writen,
 * Close, posix_error, ...) are in netlib.h; the semaphores in <semaphore.h>.
 */
#include <semaphore.h>

#include "netlib.h"

#define DEFAULT_WORKERS 8
#define MAX_WORKERS 64
#define SBUFSIZE 16

/* TODO (handout: "the buffer holds at most 16 descriptors"): a circular
 * queue of SBUFSIZE descriptors, with the semaphores that count its free
 * slots and its waiting descriptors, and one that guards buf, front and
 * rear.  (Or one mutex and two condition variables: see the handout.) */
typedef struct {
    int buf[SBUFSIZE];  /* descriptors waiting for a worker */
    int front;          /* buf[front] is the oldest */
    int rear;           /* buf[rear] is the next free slot */
    sem_t mutex;        /* 1: exclusive access to buf, front and rear */
    sem_t slots;        /* free slots */
    sem_t items;        /* descriptors waiting */
} sbuf_t;

sbuf_t sbuf;

/* P - wait on s (a signal may interrupt sem_wait: wait again) */
void P(sem_t *s)
{
    while (sem_wait(s) < 0)
        if (errno != EINTR)
            unix_error("sem_wait");
}

/* V - post s */
void V(sem_t *s)
{
    if (sem_post(s) < 0)
        unix_error("sem_post");
}

void sbuf_init(sbuf_t *sp)
{
    sp->front = sp->rear = 0;
    if (sem_init(&sp->mutex, 0, 1) < 0 || sem_init(&sp->slots, 0, SBUFSIZE) < 0
        || sem_init(&sp->items, 0, 0) < 0)
        unix_error("sem_init");
}

/* sbuf_insert - put fd at the rear of the buffer */
void sbuf_insert(sbuf_t *sp, int fd)
{
    (void)sp;
    (void)fd;
    /* TODO (handout: "when it is full the main thread waits, blocked"):
     * wait for a free slot, then take the lock, store fd at rear and move
     * rear on (modulo SBUFSIZE), release the lock, and announce one more
     * waiting descriptor. */
}

/* sbuf_remove - take the descriptor at the front of the buffer */
int sbuf_remove(sbuf_t *sp)
{
    (void)sp;
    /* TODO (handout: "workers take connections in the order they were
     * accepted"): wait for a waiting descriptor, then take the lock, take
     * buf[front] and move front on, release the lock, and announce one more
     * free slot.  Wait for the item before you take the lock: see the
     * handout ("P(mutex) before P(items)"). */
    return -1;
}

/* echo - echo each line of connfd until EOF */
void echo(int connfd)
{
    (void)connfd;
    /* TODO (handout: "every byte a client sends comes back to that client,
     * unchanged and in order"): read line by line (rio_readinitb,
     * rio_readlineb), write each line back (rio_writen).  Lines can hold
     * any byte: use the counts, not strlen.  At EOF the last line may have
     * no '\n': it comes back too.  When a write fails, stop. */
}

/* worker - serve one client after another */
void *worker(void *vargp)
{
    (void)vargp;
    /* TODO (handout: "a worker whose client is done takes the next
     * descriptor"): for ever, remove a descriptor, echo, close it.  A
     * client that resets its connection ends its echo, never the worker. */
    return NULL;
}

/* workers - WORKERS from argv[2], or the default; exits on a bad value */
int workers(int argc, char **argv)
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
    (void)nworkers;
    /* TODO (handout: "SIGPIPE and ECONNRESET are handled"): writing to a
     * client that has gone must not kill the server. */
    sbuf_init(&sbuf);
    /* TODO (handout: "starts exactly WORKERS worker threads ... before it
     * accepts"): create them here (pthread_create, then Pthread_detach).
     * No other thread, no child, ever. */
    int listenfd = Open_listenfd(argv[1]);

    for (;;) {
        int connfd = accept(listenfd, NULL, NULL);
        if (connfd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            unix_error("accept");
        }
        /* TODO (handout: "the main thread only accepts and inserts"):
         * insert connfd into the buffer (sbuf_insert) instead of closing it.
         * Never serve a client here. */

        /* As given, nobody is served: the connection is closed at once. */
        Close(connfd);
    }
}
