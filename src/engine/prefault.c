/*
 * Copy-on-write faults moved before the code arrives.  A spare's job makes a dry run of the run
 * path (bootstrap.py's prepare_job()), yet the run that follows its code still wrote some 140
 * pages it shared with the zygote (the objects print, the streams and the records touch, the
 * interpreter's own state): 140 copy-on-write faults, half of a print(1)'s time in Python.
 * Which pages those are depends on the zygote's layout, not on the code, so the zygote learns
 * them once: a child of it does what a spare's job does, runs a few fixed programs through the
 * same run(), and compares its page map (/proc/self/pagemap: present, mapped only here) before
 * and after.  Every spare's job then copies exactly those pages after its dry run, with
 * MADV_POPULATE_WRITE, which copies a page as a write would without writing it.
 */
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "engine/maps.h"
#include "engine/prefault.h"
#include "engine/pyfork.h"
#include "engine/zygote.h"
#include "common/banned.h"

#ifndef MADV_POPULATE_WRITE
#    define MADV_POPULATE_WRITE 23
#endif

#define PAGE             4096u
#define PM_PRESENT       ((uint64_t)1 << 63)
#define PM_EXCLUSIVE     ((uint64_t)1 << 56)
#define LEARN_TIMEOUT_MS 10000
/* What the child reads of its own mappings: larger ones are reservations (a sanitizer's). */
#define MAX_RANGE_PAGES ((size_t)1 << 16)
#define MAX_PAGES       ((size_t)1 << 20)
#define MAX_RANGES      4096

/* The programs the child runs: what nearly every execution does (print, main()'s value). */
static const struct {
    const char *code;
    int main_mode;
    const char *preloaded; /* run only when the zygote imported this module */
} programs[] = {
    {"print(1)\n", 0, NULL},
    {"def main():\n    return {\"ok\": True, \"values\": [1, 2.5, \"x\"]}\n", 1, NULL},
    {"import numpy as np\nprint(np.arange(10).mean(), np.ones((4, 4)).dot(np.ones(4)).sum())\n", 0,
     "numpy"},
    {"import pandas as pd\nprint(pd.DataFrame({\"a\": [1, 2]}).sum())\n", 0, "pandas"},
};

/* The learned pages, as runs of consecutive pages; the zygote's, inherited by every cell. */
struct run {
    uintptr_t lo;
    size_t pages;
};
static struct run learned[PBX_PREFAULT_MAX_PAGES];
static size_t nlearned;

int pbx__prefault_open_proc(void)
{
    return open("/proc", O_PATH | O_DIRECTORY | O_CLOEXEC);
}

struct range {
    uintptr_t lo, hi;
};

/* The child's private writable mappings, from procfs's self/maps; how many, or -1. */
static int writable_ranges(int proc_fd, struct range *out, int max)
{
    int fd = openat(proc_fd, "self/maps", O_RDONLY | O_CLOEXEC);
    struct pbx_maps maps;
    struct pbx_mapping m;
    int n = 0;

    if (pbx__maps_read(fd, &maps) < 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    while (n < max && pbx__maps_next(&maps, &m)) {
        if (strcmp(m.perms, "rw-p") == 0 && (m.hi - m.lo) / PAGE <= MAX_RANGE_PAGES &&
            !pbx__maps_owns(&maps, m.lo, m.hi))
            out[n++] = (struct range){m.lo, m.hi};
    }
    pbx__maps_free(&maps);
    return n;
}

/* The page map entries of every range into map (total pages at most MAX_PAGES). */
static int read_map(int pm, const struct range *r, int n, uint64_t *map)
{
    size_t at = 0;

    for (int i = 0; i < n; i++) {
        size_t pages = (r[i].hi - r[i].lo) / PAGE;
        size_t want = pages * sizeof(uint64_t);
        off_t off = (off_t)(r[i].lo / PAGE * sizeof(uint64_t));
        size_t done = 0;

        if (at + pages > MAX_PAGES)
            return -1;
        while (done < want) {
            ssize_t got = pread(pm, (char *)(map + at) + done, want - done, off + (off_t)done);

            if (got <= 0)
                return -1;
            done += (size_t)got;
        }
        at += pages;
    }
    return 0;
}

static void run_program(const struct pbx_zygote_state *zs, const char *code, int main_mode)
{
    PyObject *arg = PyBytes_FromString(code);
    PyObject *ret = arg ? PyObject_CallFunction((PyObject *)zs->run_fn, "OiisiKKKi", arg, main_mode,
                                                0, "", 0, 1ULL << 20, 100000ULL, 1ULL << 21, 0)
                        : NULL;

    Py_XDECREF(ret);
    Py_XDECREF(arg);
    PyErr_Clear();
}

static bool preloaded(const char *name)
{
    PyObject *modules = PyImport_GetModuleDict();

    return modules != NULL && PyDict_GetItemString(modules, name) != NULL;
}

/*
 * Write to `out` the address of each page that was present and shared in `before` and is its
 * own in `after`, at most `max` of them, and mark it in `before` as taken; how many.
 */
static size_t send_new(const struct range *ranges, int n, uint64_t *before, const uint64_t *after,
                       int out, size_t max)
{
    size_t at = 0;
    size_t sent = 0;

    for (int i = 0; i < n && sent < max; i++) {
        size_t pages = (ranges[i].hi - ranges[i].lo) / PAGE;

        for (size_t p = 0; p < pages && sent < max; p++) {
            uint64_t b = before[at + p], a = after[at + p];

            if ((b & PM_PRESENT) && !(b & PM_EXCLUSIVE) && (a & PM_PRESENT) && (a & PM_EXCLUSIVE)) {
                uint64_t addr = ranges[i].lo + p * PAGE;

                if (write(out, &addr, sizeof(addr)) != sizeof(addr))
                    _exit(1);
                before[at + p] |= PM_EXCLUSIVE;
                sent++;
            }
        }
        at += pages;
    }
    return sent;
}

/* The learning child: never returns. */
static _Noreturn void learn_child(const struct pbx_zygote_state *zs, int proc_fd, int out,
                                  size_t max_pages)
{
    static struct range ranges[MAX_RANGES];
    size_t bytes = MAX_PAGES * sizeof(uint64_t);
    uint64_t *before = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
                            MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    uint64_t *after = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    int sink = (int)syscall(SYS_memfd_create, "pybox-learn", 0);
    int pm;
    int n;
    size_t sent = 0;

    PyOS_AfterFork_Child();
    pbx__py_forkers_restore(&zs->forkers);
    /* The run's streams and records go nowhere; fd 3 was the zygote's control socket. */
    if (before == MAP_FAILED || after == MAP_FAILED || sink < 0 || dup2(sink, 1) < 0 ||
        dup2(sink, 2) < 0 || dup2(sink, 3) < 0)
        _exit(1);
    {
        PyObject *r = PyObject_CallMethod((PyObject *)zs->module, "prepare_job", NULL);

        Py_XDECREF(r);
        PyErr_Clear();
    }
    n = writable_ranges(proc_fd, ranges, MAX_RANGES);
    pm = openat(proc_fd, "self/pagemap", O_RDONLY | O_CLOEXEC);
    if (n <= 0 || pm < 0 || read_map(pm, ranges, n, before) < 0)
        _exit(1);
    /* Program by program, so that the cap keeps the pages of the first (the commonest). */
    for (size_t i = 0; i < sizeof(programs) / sizeof(programs[0]); i++) {
        if (sent == max_pages)
            break;
        if (programs[i].preloaded != NULL && !preloaded(programs[i].preloaded))
            continue;
        run_program(zs, programs[i].code, programs[i].main_mode);
        if (read_map(pm, ranges, n, after) < 0)
            _exit(1);
        sent += send_new(ranges, n, before, after, out, max_pages - sent);
    }
    _exit(0);
}

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Read the child's addresses (whole uint64s) until EOF or the deadline; how many. */
static size_t read_pages(int fd, uint64_t *pages)
{
    size_t len = 0;
    size_t cap = PBX_PREFAULT_MAX_PAGES * sizeof(uint64_t);
    int64_t deadline = now_ms() + LEARN_TIMEOUT_MS;

    while (len < cap) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int64_t left = deadline - now_ms();
        ssize_t got;

        if (left <= 0 || poll(&p, 1, (int)left) <= 0)
            return (size_t)-1;
        got = read(fd, (char *)pages + len, cap - len);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            break;
        len += (size_t)got;
    }
    return len / sizeof(uint64_t);
}

static int compare_addr(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

size_t pbx__prefault_learn(const struct pbx_zygote_state *zs, int proc_fd, size_t max_pages)
{
    static uint64_t pages[PBX_PREFAULT_MAX_PAGES];
    int pfd[2];
    size_t n;
    int status = 0;
    pid_t pid;

    nlearned = 0;
    if (proc_fd < 0)
        return 0;
    if (max_pages == 0 || max_pages > PBX_PREFAULT_MAX_PAGES) {
        close(proc_fd);
        return 0;
    }
    if (pipe2(pfd, O_CLOEXEC) < 0) {
        close(proc_fd);
        return 0;
    }
    PyOS_BeforeFork();
    pid = fork();
    if (pid == 0) {
        close(pfd[0]);
        learn_child(zs, proc_fd, pfd[1], max_pages);
    }
    PyOS_AfterFork_Parent();
    close(pfd[1]);
    close(proc_fd);
    if (pid < 0) {
        close(pfd[0]);
        return 0;
    }
    n = read_pages(pfd[0], pages);
    close(pfd[0]);
    if (n == (size_t)-1)
        kill(pid, SIGKILL);
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (n == (size_t)-1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return 0;
    /* In address order, runs of consecutive pages become one range. */
    qsort(pages, n, sizeof(pages[0]), compare_addr);
    for (size_t i = 0; i < n; i++) {
        if (nlearned > 0 &&
            learned[nlearned - 1].lo + learned[nlearned - 1].pages * PAGE == pages[i])
            learned[nlearned - 1].pages++;
        else
            learned[nlearned++] = (struct run){.lo = (uintptr_t)pages[i], .pages = 1};
    }
    return n;
}

void pbx__prefault_apply(void)
{
    for (size_t i = 0; i < nlearned; i++)
        (void)madvise((void *)learned[i].lo, learned[i].pages * PAGE, MADV_POPULATE_WRITE);
}
