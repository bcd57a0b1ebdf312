/*
 * The machine's copy-on-write fault rate, as a yardstick for pybox's page
 * faults per execution: a parent touches N pages, forks a child that writes
 * one byte to each (N faults), five times over, in P processes at once.
 *
 *     pybox-bench-cow [PROCESSES]
 *
 * Prints the faults per second of all processes together and the time per
 * fault.  A job's faults cost more than these (its mm is larger and shared
 * with more processes), never less.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/banned.h"

#define PAGES  20000
#define ROUNDS 5

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static _Noreturn void writer(char *mem, long page)
{
    for (int r = 0; r < ROUNDS; r++) {
        pid_t c = fork();

        if (c == 0) {
            for (size_t i = 0; i < PAGES; i++)
                mem[i * (size_t)page] = 2;
            _exit(0);
        }
        if (c < 0 || waitpid(c, NULL, 0) != c)
            _exit(1);
    }
    _exit(0);
}

int main(int argc, char **argv)
{
    int procs = argc > 1 ? (int)strtol(argv[1], NULL, 10) : 1;
    long page = sysconf(_SC_PAGESIZE);
    char *mem;
    double t0;
    double dt;
    double faults;
    int status;
    int failed = 0;

    if (procs < 1 || procs > 64) {
        fprintf(stderr, "usage: pybox-bench-cow [PROCESSES (1-64)]\n");
        return 2;
    }
    mem = mmap(NULL, (size_t)PAGES * (size_t)page, PROT_READ | PROT_WRITE,
               MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED)
        return 1;
    memset(mem, 1, (size_t)PAGES * (size_t)page);
    t0 = now_s();
    for (int p = 0; p < procs; p++) {
        pid_t c = fork();

        if (c == 0)
            writer(mem, page);
        if (c < 0)
            return 1;
    }
    while (wait(&status) > 0)
        failed |= !WIFEXITED(status) || WEXITSTATUS(status) != 0;
    dt = now_s() - t0;
    faults = (double)procs * ROUNDS * PAGES;
    printf("%d process(es): %.0f copy-on-write faults/s, %.1f us each per process\n", procs,
           faults / dt, dt * 1e6 * procs / faults);
    return failed;
}
