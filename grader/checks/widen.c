/*
 * widen.c - linked into a rebuild of a student's server for the thread lab's `counter` check.
 *
 * The rebuild is compiled with -fsanitize=thread, so the compiler calls __tsan_readN(addr)
 * before every load and __tsan_writeN(addr) before every store of the student's code; it is
 * linked with -fno-sanitize=thread and this object instead of the ThreadSanitizer runtime,
 * so those calls come here. Nothing is reported: the calls only open the windows in which
 * a missing lock shows, the way a busy machine may open them, every time instead of by chance:
 *
 * - a thread that read a 4- or 8-byte global variable and now writes it back (a
 *   read-modify-write such as `count += n`) pauses just before the store: another thread
 *   doing the same without a lock reads the old value meanwhile, and one update is lost;
 * - a thread pauses just after it releases a lock (pthread_mutex_unlock, sem_post,
 *   pthread_spin_unlock, pthread_rwlock_unlock, mtx_unlock): a thread that reads the shared
 *   count only after unlocking reads it after another thread's addition.
 *
 * A thread pauses at most once a millisecond inside read-modify-writes and once every 5 ms
 * after releases, so a correct server is at most about a fifth slower whatever it does per
 * byte (a pause inside its lock is one for every thread waiting on it). Atomics are done as the
 * program asked (sequentially consistent).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdint.h>
#include <string.h>
#include <threads.h>
#include <time.h>

#define RMW_PAUSE_NS    100000L   /* inside a read-modify-write of a global */
#define RMW_EVERY_NS    1000000L  /* at most once in this long, per thread */
#define UNLOCK_PAUSE_NS 500000L   /* after a release; longer than the next holder's whole turn */
#define UNLOCK_EVERY_NS 5000000L

extern char __data_start[], _end[];              /* the executable's .data and .bss */
static __thread uintptr_t last_read;             /* the global this thread read last */
static __thread long long rmw_next, unlock_next; /* when this thread may pause again */
const char labgrade_widen[] = "labgrade widen";  /* the grader looks for it in the binary */

static long long now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

/* pause for ns unless this thread paused less than every_ns ago (*next says until when) */
static void pause_ns(long ns, long every_ns, long long *next)
{
    long long t0 = now_ns();
    if (t0 < *next)
        return;
    *next = t0 + every_ns;
    struct timespec t = {0, ns};
    while (nanosleep(&t, &t) != 0)
        ;
}

static int global(uintptr_t a)
{
    return a >= (uintptr_t)__data_start && a < (uintptr_t)_end;
}

static void on_read(void *p)
{
    uintptr_t a = (uintptr_t)p;
    if (global(a))
        last_read = a;
}

static void on_write(void *p)
{
    uintptr_t a = (uintptr_t)p;
    if (a == last_read && global(a)) {
        last_read = 0;
        pause_ns(RMW_PAUSE_NS, RMW_EVERY_NS, &rmw_next);
    }
}

static void ignore(void *p) { (void)p; }

void __tsan_init(void) {}
void __tsan_func_entry(void *pc) { (void)pc; }
void __tsan_func_exit(void) {}
void __tsan_read1(void *p) { ignore(p); }
void __tsan_read2(void *p) { ignore(p); }
void __tsan_read4(void *p) { on_read(p); }
void __tsan_read8(void *p) { on_read(p); }
void __tsan_read16(void *p) { ignore(p); }
void __tsan_write1(void *p) { ignore(p); }
void __tsan_write2(void *p) { ignore(p); }
void __tsan_write4(void *p) { on_write(p); }
void __tsan_write8(void *p) { on_write(p); }
void __tsan_write16(void *p) { ignore(p); }
void __tsan_unaligned_read2(const void *p) { (void)p; }
void __tsan_unaligned_read4(const void *p) { on_read((void *)p); }
void __tsan_unaligned_read8(const void *p) { on_read((void *)p); }
void __tsan_unaligned_read16(const void *p) { (void)p; }
void __tsan_unaligned_write2(void *p) { ignore(p); }
void __tsan_unaligned_write4(void *p) { on_write(p); }
void __tsan_unaligned_write8(void *p) { on_write(p); }
void __tsan_unaligned_write16(void *p) { ignore(p); }
void __tsan_volatile_read1(void *p) { ignore(p); }
void __tsan_volatile_read2(void *p) { ignore(p); }
void __tsan_volatile_read4(void *p) { on_read(p); }
void __tsan_volatile_read8(void *p) { on_read(p); }
void __tsan_volatile_read16(void *p) { ignore(p); }
void __tsan_volatile_write1(void *p) { ignore(p); }
void __tsan_volatile_write2(void *p) { ignore(p); }
void __tsan_volatile_write4(void *p) { on_write(p); }
void __tsan_volatile_write8(void *p) { on_write(p); }
void __tsan_volatile_write16(void *p) { ignore(p); }
void __tsan_read_range(void *p, unsigned long n) { (void)p; (void)n; }
void __tsan_write_range(void *p, unsigned long n) { (void)p; (void)n; }
void __tsan_vptr_read(void **p) { (void)p; }
void __tsan_vptr_update(void **p, void *v) { (void)p; (void)v; }
void *__tsan_memcpy(void *d, const void *s, size_t n) { return memcpy(d, s, n); }
void *__tsan_memmove(void *d, const void *s, size_t n) { return memmove(d, s, n); }
void *__tsan_memset(void *d, int c, size_t n) { return memset(d, c, n); }
void __tsan_atomic_thread_fence(int mo) { (void)mo; __atomic_thread_fence(__ATOMIC_SEQ_CST); }
void __tsan_atomic_signal_fence(int mo) { (void)mo; __atomic_signal_fence(__ATOMIC_SEQ_CST); }

#define SC __ATOMIC_SEQ_CST
#define ATOMICS(N, T)                                                                           \
    T __tsan_atomic##N##_load(const volatile T *a, int mo) { (void)mo; return __atomic_load_n(a, SC); } \
    void __tsan_atomic##N##_store(volatile T *a, T v, int mo) { (void)mo; __atomic_store_n(a, v, SC); } \
    T __tsan_atomic##N##_exchange(volatile T *a, T v, int mo) { (void)mo; return __atomic_exchange_n(a, v, SC); } \
    T __tsan_atomic##N##_fetch_add(volatile T *a, T v, int mo) { (void)mo; return __atomic_fetch_add(a, v, SC); } \
    T __tsan_atomic##N##_fetch_sub(volatile T *a, T v, int mo) { (void)mo; return __atomic_fetch_sub(a, v, SC); } \
    T __tsan_atomic##N##_fetch_and(volatile T *a, T v, int mo) { (void)mo; return __atomic_fetch_and(a, v, SC); } \
    T __tsan_atomic##N##_fetch_or(volatile T *a, T v, int mo) { (void)mo; return __atomic_fetch_or(a, v, SC); }   \
    T __tsan_atomic##N##_fetch_xor(volatile T *a, T v, int mo) { (void)mo; return __atomic_fetch_xor(a, v, SC); } \
    T __tsan_atomic##N##_fetch_nand(volatile T *a, T v, int mo) { (void)mo; return __atomic_fetch_nand(a, v, SC); } \
    int __tsan_atomic##N##_compare_exchange_strong(volatile T *a, T *c, T v, int mo, int fmo)              \
    { (void)mo; (void)fmo; return __atomic_compare_exchange_n(a, c, v, 0, SC, SC); }                      \
    int __tsan_atomic##N##_compare_exchange_weak(volatile T *a, T *c, T v, int mo, int fmo)                \
    { (void)mo; (void)fmo; return __atomic_compare_exchange_n(a, c, v, 1, SC, SC); }                      \
    T __tsan_atomic##N##_compare_exchange_val(volatile T *a, T c, T v, int mo, int fmo)                    \
    { (void)mo; (void)fmo; __atomic_compare_exchange_n(a, &c, v, 0, SC, SC); return c; }

ATOMICS(8, uint8_t)
ATOMICS(16, uint16_t)
ATOMICS(32, uint32_t)
ATOMICS(64, uint64_t)

/* The releases: the real function, then the pause. */
#define RELEASE(name, type)                                               \
    int name(type *x)                                                     \
    {                                                                     \
        static int (*real)(type *);                                       \
        if (!real)                                                        \
            real = (int (*)(type *))dlsym(RTLD_NEXT, #name);              \
        int rc = real(x);                                                 \
        pause_ns(UNLOCK_PAUSE_NS, UNLOCK_EVERY_NS, &unlock_next);         \
        return rc;                                                        \
    }

RELEASE(pthread_mutex_unlock, pthread_mutex_t)
RELEASE(pthread_spin_unlock, pthread_spinlock_t)
RELEASE(pthread_rwlock_unlock, pthread_rwlock_t)
RELEASE(sem_post, sem_t)
RELEASE(mtx_unlock, mtx_t)
