/*
 * server.c - hostile corpus: a CPU spin that never listens.
 *
 * Four threads spin for ever on both cores; no socket is ever opened, so every
 * check waits for a listening socket that never comes.
 * Contained by: the ready timeout of each check, the CPU-time limit, removal.
 */
#include "netlib.h"

static void *spin(void *arg)
{
    volatile unsigned long *n = arg;
    for (;;)
        (*n)++;
    return NULL;
}

int main(int argc, char **argv)
{
    static volatile unsigned long counters[4];
    pthread_t tid;

    (void)argc;
    (void)argv;
    for (int i = 1; i < 4; i++)
        pthread_create(&tid, NULL, spin, (void *)&counters[i]);
    spin((void *)&counters[0]);
    return 0;
}
