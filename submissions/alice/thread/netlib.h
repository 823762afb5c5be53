/*
 * netlib.h - the helper library shared by the fork, select and thread labs
 *
 * The same two files (netlib.h, netlib.c) ship with every lab.  Wrappers
 * whose name starts with a capital letter (Close, Malloc, ...) call the
 * function of the same name in lower case and, if it fails, print
 * "what: reason" on stderr and exit(EXIT_FAILURE): use them where a failure
 * means a bug, not where a client can make the call fail.
 */
#ifndef NETLIB_H
#define NETLIB_H

#ifndef _DEFAULT_SOURCE
#define _DEFAULT_SOURCE  /* POSIX and BSD names, even under -std=c11 */
#endif

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAXLINE 8200     /* line buffer: a line of 8 KiB, its '\n' and a NUL fit */
#define RIO_BUFSIZE 8192 /* size of the read buffer inside a rio_t */
#define LISTENQ 1024     /* backlog of the listening socket */

/* Error reporting: print "what: reason" on stderr, then exit(EXIT_FAILURE) */
void unix_error(const char *what);           /* reason from errno */
void posix_error(int code, const char *what); /* reason from an error code (pthreads) */
void gai_error(int code, const char *what);  /* reason from a getaddrinfo code */
void app_error(const char *msg);             /* msg alone */

/* Processes and signals */
typedef void handler_t(int);
pid_t Fork(void);
handler_t *install_handler(int signum, handler_t *h, int flags);

/* Unix I/O */
void Close(int fd);
void set_nonblocking(int fd);

/* Dynamic memory */
void *Malloc(size_t size);

/* Threads */
void Pthread_detach(pthread_t tid);
void Pthread_mutex_lock(pthread_mutex_t *mutex);
void Pthread_mutex_unlock(pthread_mutex_t *mutex);

/* Sockets */
int open_listenfd(const char *port);
int Open_listenfd(const char *port);
int Accept(int listenfd, struct sockaddr *addr, socklen_t *addrlen); /* exits on EINTR too */

/* Robust I/O: short counts and EINTR are dealt with here */
typedef struct {
    int fd;                  /* descriptor this buffer reads from */
    ssize_t cnt;             /* unread bytes left in buf */
    char *bufptr;            /* next unread byte in buf */
    char buf[RIO_BUFSIZE];   /* bytes read from fd, not yet handed out */
} rio_t;

ssize_t rio_writen(int fd, const void *usrbuf, size_t n);
void rio_readinitb(rio_t *rp, int fd);
ssize_t rio_readlineb(rio_t *rp, void *usrbuf, size_t maxlen);

#endif /* NETLIB_H */
