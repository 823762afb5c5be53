/*
 * leakcheck.c - preloaded by the grader's `memory` check into the AddressSanitizer build of a
 * server that never exits by itself: LeakSanitizer then looks for leaks while the server runs,
 * when the grader asks, and not only at exit.
 *
 * A thread of its own, with every signal blocked (signals keep going to the server's threads,
 * as without it), opens the FIFO named by $LABGRADE_LEAKCHECK_FIFO, which blocks until the
 * grader opens it for writing. For each byte the grader writes, it runs
 * __lsan_do_recoverable_leak_check() (LeakSanitizer stops the other threads and reports every
 * block no pointer reaches into ASAN_OPTIONS' log_path) and appends one line, "leaks N", to
 * $LABGRADE_LEAKCHECK_FIFO.done (N: 1 when leaks were reported, 0 when none).
 *
 * By hand:  cc -shared -fPIC -O2 -pthread -o leakcheck.so leakcheck.c
 *           mkfifo /tmp/lc; LABGRADE_LEAKCHECK_FIFO=/tmp/lc ASAN_OPTIONS=verify_asan_link_order=0 \
 *               LD_PRELOAD=$PWD/leakcheck.so ./server 5000 &
 *           ...clients come and go...;  echo > /tmp/lc;  cat /tmp/lc.done
 */
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern int __lsan_do_recoverable_leak_check(void) __attribute__((weak));

static char fifo[4096], done[4096 + 8];
static pid_t owner;

static void note(const char *line)
{
    int fd = open(done, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd >= 0) {
        ssize_t w = write(fd, line, strlen(line));
        (void)w;
        close(fd);
    }
}

static void *waiter(void *arg)
{
    (void)arg;
    for (;;) {
        int fd = open(fifo, O_RDONLY | O_CLOEXEC);  /* blocks until the grader opens it to write */
        if (fd < 0)
            return NULL;
        char c;
        while (read(fd, &c, 1) == 1) {
            if (getpid() != owner)
                break;
            char line[32];
            int n = __lsan_do_recoverable_leak_check ? __lsan_do_recoverable_leak_check() : -1;
            snprintf(line, sizeof line, "leaks %d\n", n);
            note(line);
        }
        close(fd);
    }
}

__attribute__((constructor)) static void start(void)
{
    const char *path = getenv("LABGRADE_LEAKCHECK_FIFO");
    if (path == NULL || strlen(path) >= sizeof fifo)
        return;
    strcpy(fifo, path);
    snprintf(done, sizeof done, "%s.done", path);
    owner = getpid();
    unsetenv("LABGRADE_LEAKCHECK_FIFO");  /* a program the server runs starts no waiter of its own */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);  /* the new thread inherits this mask: it takes no signal */
    pthread_t t;
    if (pthread_create(&t, NULL, waiter, NULL) == 0)
        pthread_detach(t);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
}
