/*
 * server.c - hostile corpus: a flood of output, then a crash.
 *
 * It never listens: it writes 96 MiB to stdout and stderr, then a last line
 * made of terminal escape sequences and text that looks like markup, and
 * aborts.  The grader must keep a bounded part of the output, count the rest,
 * say where it was cut, and show the end without letting the escapes through.
 */
#include "netlib.h"

int main(int argc, char **argv)
{
    static char block[65536];

    (void)argc;
    (void)argv;
    for (size_t i = 0; i < sizeof block; i++)
        block[i] = (i % 80 == 79) ? '\n' : (char)('A' + i % 26);
    for (int i = 0; i < 96 * 16; i++)
        if (write(i % 2 ? STDERR_FILENO : STDOUT_FILENO, block, sizeof block) < 0)
            break;
    const char last[] = "\n\033[2J\033[31m[/bold] [red]the last line\033]0;pwned\007\n";
    write(STDOUT_FILENO, last, sizeof last - 1);
    abort();
}
