/*
 * The machine's fork floor, the yardstick of an execution's latency: the
 * time of fork() of a tiny process, its _exit(0) and the parent's waitpid(),
 * one after another, as the median of many.
 *
 *     pybox-bench-fork [RUNS]
 *
 * Prints the median and the 10th and 90th percentiles in microseconds.  An
 * execution forks processes with far larger address spaces, so it costs
 * more than this, never less.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/banned.h"

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int compare(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a;
    uint64_t y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    long runs = argc > 1 ? strtol(argv[1], NULL, 10) : 2000;
    uint64_t *t;

    if (argc > 2 || runs < 10 || runs > 1000000) {
        fprintf(stderr, "usage: pybox-bench-fork [RUNS (10-1000000)]\n");
        return 2;
    }
    t = calloc((size_t)runs, sizeof(*t));
    if (t == NULL)
        return 1;
    for (long i = 0; i < runs; i++) {
        uint64_t t0 = now_ns();
        int status;
        pid_t c = fork();

        if (c == 0)
            _exit(0);
        if (c < 0 || waitpid(c, &status, 0) != c || !WIFEXITED(status)) {
            perror("pybox-bench-fork: fork");
            return 1;
        }
        t[i] = now_ns() - t0;
    }
    qsort(t, (size_t)runs, sizeof(*t), compare);
    printf("fork + _exit + waitpid: median %.1f us (p10 %.1f, p90 %.1f; %ld runs)\n",
           (double)t[runs / 2] / 1e3, (double)t[runs / 10] / 1e3, (double)t[runs * 9 / 10] / 1e3,
           runs);
    free(t);
    return 0;
}
