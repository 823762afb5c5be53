/*
 * server.c - hostile corpus: a server that listens and never accepts.
 *
 * The kernel completes a few connections into the backlog (1); nobody ever
 * accepts them, reads or writes.  Clients connect and then wait in vain.
 * Contained by: the patience of every client (connect and echo timeouts).
 */
#include "netlib.h"

int main(int argc, char **argv)
{
    struct addrinfo hints = {0}, *res;
    int one = 1;

    if (argc != 2) {
        fprintf(stderr, "usage: %s PORT\n", argv[0]);
        exit(EXIT_FAILURE);
    }
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    if (getaddrinfo(NULL, argv[1], &hints, &res) != 0)
        exit(EXIT_FAILURE);
    int fd = socket(res->ai_family, res->ai_socktype, 0);
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, 1) < 0)
        unix_error("bind/listen");
    for (;;)
        pause();
}
