/*
 * A session's processes seen from the host, for the tests of sessions
 * (test_session.c, the engine's; test_client_sessions.c and test_client.c,
 * libpybox's): found by a marker file in their /work, whether each is gone,
 * and a wait until all are.  Static, each test binary takes its own copy.
 */
#ifndef PBX_TESTS_UNIT_SESSION_PROCS_H
#define PBX_TESTS_UNIT_SESSION_PROCS_H

#include <check.h>
#include <dirent.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

/*
 * The host pids of the processes named `comm` that see `marker` in their
 * /work (their mount namespace's, through /proc/PID/root): one session's
 * cell and interpreter, whichever process tree holds them (this one's engine
 * or the server's).  At most `max`; their count.
 */
static inline int find_in_session(const char *comm, const char *marker, pid_t *pids, int max)
{
    DIR *d = opendir("/proc");
    struct dirent *de;
    int n = 0;

    ck_assert_ptr_nonnull(d);
    while ((de = readdir(d)) != NULL && n < max) {
        char path[sizeof(de->d_name) + 128];
        char name[32] = "";
        FILE *f;

        snprintf(path, sizeof(path), "/proc/%s/comm", de->d_name);
        f = fopen(path, "r");
        if (f == NULL)
            continue;
        if (fgets(name, sizeof(name), f) != NULL && strncmp(name, comm, strlen(comm)) == 0 &&
            name[strlen(comm)] == '\n') {
            snprintf(path, sizeof(path), "/proc/%s/root/work/%s", de->d_name, marker);
            if (access(path, F_OK) == 0)
                pids[n++] = (pid_t)strtol(de->d_name, NULL, 10);
        }
        fclose(f);
    }
    closedir(d);
    return n;
}

/* Whether `pid` is gone, or a zombie its parent has yet to reap. */
static inline bool pid_gone(pid_t pid)
{
    char path[64];
    char line[256];
    bool dead = true;
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    f = fopen(path, "r");
    if (f == NULL)
        return true;
    if (fgets(line, sizeof(line), f) != NULL) {
        const char *paren = strrchr(line, ')');

        dead = paren != NULL && paren[1] == ' ' && paren[2] == 'Z';
    }
    fclose(f);
    return dead;
}

/* The monotonic clock in milliseconds. */
static inline double now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Wait until every pid is gone, at most `ms` (polled every 10 ms); whether they went. */
static inline bool all_gone(const pid_t *pids, int n, double ms)
{
    double until = now_ms() + ms;

    for (;;) {
        bool gone = true;
        struct timespec ts = {0, 10 * 1000 * 1000};

        for (int i = 0; i < n; i++)
            gone = gone && pid_gone(pids[i]);
        if (gone)
            return true;
        if (now_ms() >= until)
            return false;
        nanosleep(&ts, NULL);
    }
}

#endif
