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

#define MAXLINE 8200        /* line buffer: a line of 8 KiB, its '\n' and a NUL */
#define RIO_BUFSIZE 8192    /* read buffer inside a rio_t */
#define LISTENQ 1024        /* backlog of the listening socket */

/***********************************************************************
 * Error reporting: "what: reason" on stderr, exit(EXIT_FAILURE)
 **********************************************************************/
void unix_error(const char *what);              /* reason from errno */
void posix_error(int code, const char *what);   /* reason from an error number (pthread_*) */
void gai_error(int code, const char *what);     /* reason from a getaddrinfo code */
void app_error(const char *msg);                /* msg alone */

/***********************************************************************
 * Processes and signals
 **********************************************************************/
typedef void handler_t(int);
pid_t Fork(void);
/* sigaction(signum) with handler h (or SIG_IGN, SIG_DFL) and sa_flags flags
 * (0, SA_RESTART, ...); returns the previous handler */
handler_t *install_handler(int signum, handler_t *h, int flags);

/***********************************************************************
 * Unix I/O
 **********************************************************************/
void Close(int fd);
void set_nonblocking(int fd);   /* read, write, accept on fd fail with EAGAIN, never wait */

/***********************************************************************
 * Dynamic memory
 **********************************************************************/
void *Malloc(size_t size);

/***********************************************************************
 * Threads
 **********************************************************************/
void Pthread_detach(pthread_t tid);
void Pthread_mutex_lock(pthread_mutex_t *mutex);
void Pthread_mutex_unlock(pthread_mutex_t *mutex);

/***********************************************************************
 * Sockets
 **********************************************************************/
/* a socket listening on every local address (IPv4 first) with SO_REUSEADDR,
 * or -1 with errno set */
int open_listenfd(const char *port);
int Open_listenfd(const char *port);
/* exits on ANY error, EINTR included: not for a loop a signal can interrupt */
int Accept(int listenfd, struct sockaddr *addr, socklen_t *addrlen);

/***********************************************************************
 * Robust I/O: short counts and EINTR are dealt with here
 **********************************************************************/
typedef struct {
    int fd;                 /* descriptor this buffer reads from */
    ssize_t cnt;            /* unread bytes left in buf */
    char *bufptr;           /* next unread byte in buf */
    char buf[RIO_BUFSIZE];  /* bytes read from fd, not yet handed out */
} rio_t;

/* all n bytes, or -1 (EPIPE, ECONNRESET, ...) */
ssize_t rio_writen(int fd, const void *usrbuf, size_t n);
void rio_readinitb(rio_t *rp, int fd);
/* one line with its '\n' (the last may lack it), NUL-terminated; returns its
 * length (at most maxlen - 1), 0 at EOF, -1 on error */
ssize_t rio_readlineb(rio_t *rp, void *usrbuf, size_t maxlen);

#endif /* NETLIB_H */
