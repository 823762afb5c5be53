/*
 * Preloaded into the pool lab's server by the `bounded` check (grader/checks/spurious.py):
 * pthread_cond_wait wakes up spuriously, as POSIX allows, on every other call of each thread,
 * the first included: it releases the mutex, takes it again and returns 0 at once. The other
 * calls are the C library's own. A wait in a `while` loop tests its condition again and waits
 * again; a wait in an `if` goes on as though the condition held.
 *
 * Reproduce: cc -shared -fPIC -O2 -o spurious.so spurious.c -ldl
 *            LD_PRELOAD=$PWD/spurious.so ./server 15213 2
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stddef.h>

typedef int (*wait_fn)(pthread_cond_t *, pthread_mutex_t *);

static __thread unsigned calls;  /* this thread's calls so far */

int pthread_cond_wait(pthread_cond_t *cond, pthread_mutex_t *mutex)
{
    static wait_fn real;
    if (calls++ % 2 == 0) {
        pthread_mutex_unlock(mutex);
        pthread_mutex_lock(mutex);
        return 0;
    }
    if (real == NULL) {
        /* the current ABI's (plain dlsym may give the old one's); one version only on newer ports */
        real = (wait_fn)dlvsym(RTLD_NEXT, "pthread_cond_wait", "GLIBC_2.3.2");
        if (real == NULL)
            real = (wait_fn)dlsym(RTLD_NEXT, "pthread_cond_wait");
    }
    return real(cond, mutex);
}
