/*
 * latestart.c - preloaded by lab thread's checks whose clients come at once or close behind each
 * other (`concurrency`, `fd-leak`, `robust-disconnect`, `thread-per-client`, `unsafe-calls`,
 * `memory`): each thread the server creates starts its routine late, as a busy machine may start
 * it, so that a race between a new thread and the code that created it shows every time.
 *
 * The classic one: main passes &connfd to the thread, goes back to accept, and the next client's
 * descriptor overwrites connfd before the thread has read it. Whether the thread reads first is the
 * scheduler's choice; here it never does while main keeps accepting: a new thread's routine starts
 * only once the process has begun creating its next thread (main has then stored the next
 * descriptor), or once the creating thread has used no CPU for ASLEEP_MS (it is blocked: waiting
 * for a client, or for this very thread in a design that hands connfd over and waits for the copy),
 * and at the latest after CAP_MS. A server that gives each thread its own copy is not affected:
 * its threads start a few milliseconds late, nothing more.
 *
 * By hand:  cc -shared -fPIC -O2 -pthread -o latestart.so latestart.c
 *           LD_PRELOAD=$PWD/latestart.so ./server 5000
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define ASLEEP_MS 30
#define CAP_MS 1000
#define LOOK_MS 1

typedef int (*create_fn)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *);

static atomic_uint created;     /* pthread_create calls begun in this process */

struct start {
    void *(*routine)(void *);
    void *arg;
    unsigned k;                 /* the value of `created` its own creation set */
    clockid_t creator;          /* the creating thread's CPU clock */
};

static int64_t ns(clockid_t clock)
{
    struct timespec t;
    if (clock_gettime(clock, &t) != 0)
        return -1;              /* the creator has ended */
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static void *late(void *p)
{
    struct start s = *(struct start *)p;
    free(p);
    int64_t begun = ns(CLOCK_MONOTONIC), still = begun, cpu = ns(s.creator);
    while (atomic_load(&created) == s.k) {
        int64_t now = ns(CLOCK_MONOTONIC), c = ns(s.creator);
        if (c < 0 || now - begun >= (int64_t)CAP_MS * 1000000)
            break;
        if (c != cpu) {
            cpu = c;
            still = now;
        } else if (now - still >= (int64_t)ASLEEP_MS * 1000000) {
            break;
        }
        struct timespec look = {0, LOOK_MS * 1000000L};
        syscall(SYS_futex, &created, FUTEX_WAIT_PRIVATE, s.k, &look, NULL, 0);
    }
    return s.routine(s.arg);
}

int pthread_create(pthread_t *t, const pthread_attr_t *attr, void *(*routine)(void *), void *arg)
{
    static create_fn real;
    if (real == NULL)
        real = (create_fn)dlsym(RTLD_NEXT, "pthread_create");
    unsigned k = atomic_fetch_add(&created, 1) + 1;
    syscall(SYS_futex, &created, FUTEX_WAKE_PRIVATE, INT32_MAX, NULL, NULL, 0);  /* the one before may start */
    struct start *s = malloc(sizeof *s);
    if (s == NULL || pthread_getcpuclockid(pthread_self(), &s->creator) != 0) {
        free(s);
        return real(t, attr, routine, arg);
    }
    s->routine = routine;
    s->arg = arg;
    s->k = k;
    int rc = real(t, attr, late, s);
    if (rc != 0)
        free(s);
    return rc;
}
