/*
 * rlimits of a job.  They hold for root as well: the job runs as an
 * unprivileged uid of the jail's user namespace and has no CAP_SYS_RESOURCE
 * in the host's, so it cannot raise a hard limit.
 */
#include <errno.h>
#include <sys/resource.h>

#include "sandbox/rlimit.h"
#include "common/banned.h"

/*
 * AddressSanitizer reserves terabytes of address space for its shadow memory,
 * so a process of an ASan build (a test build, never a release) cannot live
 * under RLIMIT_AS at all: its allocations fail ("Failed to mmap").  Such a
 * build leaves the address-space fallback out; the memory cgroup, where there
 * is one, still limits it.
 */
#if defined(__SANITIZE_ADDRESS__)
#    define ASAN_BUILD 1
#elif defined(__has_feature)
#    if __has_feature(address_sanitizer)
#        define ASAN_BUILD 1
#    endif
#endif
#ifndef ASAN_BUILD
#    define ASAN_BUILD 0
#endif

static int set(int resource, rlim_t soft, rlim_t hard)
{
    struct rlimit rl = {.rlim_cur = soft, .rlim_max = hard};

    return setrlimit(resource, &rl) < 0 ? -errno : 0;
}

int pbx_rlimit_apply(const struct pbx_limits *l, bool fallback)
{
    /* RLIMIT_CPU counts whole seconds: SIGXCPU at the soft limit, SIGKILL a second later. */
    rlim_t cpu = (l->cpu_ms + 999) / 1000;
    int r;

    r = set(RLIMIT_CPU, cpu, cpu + 1);
    if (r == 0)
        r = set(RLIMIT_FSIZE, l->disk_bytes, l->disk_bytes);
    if (r == 0)
        r = set(RLIMIT_NOFILE, l->nofile, l->nofile);
    if (r == 0)
        r = set(RLIMIT_CORE, 0, 0);
    if (r == 0)
        r = set(RLIMIT_STACK, l->stack_bytes, l->stack_bytes);
    if (r == 0)
        r = set(RLIMIT_MEMLOCK, 64 * 1024, 64 * 1024);
    if (r == 0)
        r = set(RLIMIT_MSGQUEUE, 0, 0);
    if (r == 0 && fallback) {
        /*
         * Without a memory cgroup, address space is the nearest bound; it
         * over-counts (mappings never touched) so it gets headroom.  NPROC
         * counts per uid in the jail's user namespace.
         */
        if (!ASAN_BUILD)
            r = set(RLIMIT_AS, l->memory_bytes + 256 * 1024 * 1024,
                    l->memory_bytes + 256 * 1024 * 1024);
        if (r == 0)
            r = set(RLIMIT_NPROC, l->pids, l->pids);
    }
    return r;
}
