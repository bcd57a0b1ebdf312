/*
 * The cgroup v1 backend: one hierarchy per controller, mounted at
 * <fs_root>/memory, <fs_root>/pids, <fs_root>/cpu (or a co-mount such as
 * <fs_root>/cpu,cpuacct).
 *
 *   memory  memory.limit_in_bytes, then memory.memsw.limit_in_bytes (memory
 *           plus swap; absent when swap accounting is off), OOM kills from
 *           the "oom_kill N" line of memory.oom_control (Linux 4.13+), peak
 *           from memory.max_usage_in_bytes;
 *   pids    pids.max;
 *   cpu     cpu.cfs_period_us and cpu.cfs_quota_us.
 *
 * v1 has no cgroup.kill, so members are killed one by one from the list in
 * cgroup.procs (pbx__cgroup_kill_listed(), also v2's fallback).
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "sandbox/cgroup_internal.h"
#include "common/cleanup.h"
#include "common/log.h"
#include "common/xalloc.h"
#include "common/banned.h"

/* The file whose writability makes a controller usable in a new cgroup. */
static const char *const control_file[PBX_CGROUP_NCTL] = {
    "memory.limit_in_bytes",
    "pids.max",
    "cpu.cfs_quota_us",
};

/* The CFS period: 100 ms, the kernel default, so 1% of a CPU is 1 ms of quota (its minimum). */
#define CFS_PERIOD_US 100000

/* Memory a reused cgroup may keep charged from its last cell without force_empty. */
#define LEFTOVER_MAX (4u << 20)

/*
 * A directory that looks like a v1 hierarchy: it is a cgroup (cgroup.procs)
 * but not a cgroup2 one (no cgroup.controllers).
 */
static bool is_v1_hierarchy(const char *dir)
{
    struct stat st;

    return stat(dir, &st) == 0 && S_ISDIR(st.st_mode) && pbx__cgroup_exists(dir, "cgroup.procs") &&
           !pbx__cgroup_exists(dir, "cgroup.controllers");
}

/* Whether the comma-separated directory name `entry` names `ctl` ("cpu,cpuacct"). */
static bool names_ctl(const char *entry, const char *ctl)
{
    size_t n = strlen(ctl);

    for (const char *p = entry; *p;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);

        if (len == n && memcmp(p, ctl, n) == 0)
            return true;
        p += len + (comma != NULL);
    }
    return false;
}

char *pbx__cgroup_v1_mount(const char *fs_root, enum pbx_cgroup_ctl ctl)
{
    const char *name = pbx__cgroup_ctl_name(ctl);
    char *dir = pbx__cgroup_path(fs_root, name);
    DIR *d;
    struct dirent *de;

    if (is_v1_hierarchy(dir))
        return dir;
    free(dir);
    /* Co-mounted controllers without the usual symlink, e.g. only "cpu,cpuacct". */
    d = opendir(fs_root);
    if (d == NULL)
        return NULL;
    dir = NULL;
    while (dir == NULL && (de = readdir(d)) != NULL) {
        if (strchr(de->d_name, ',') == NULL || !names_ctl(de->d_name, name))
            continue;
        dir = pbx__cgroup_path(fs_root, de->d_name);
        if (!is_v1_hierarchy(dir)) {
            free(dir);
            dir = NULL;
        }
    }
    closedir(d);
    return dir;
}

void pbx__cgroup_v1_setup_ctl(struct pbx_cgroups *cg, enum pbx_cgroup_ctl ctl, const char *mount,
                              const char *self_cgroup)
{
    struct pbx__cgroup_ctl_state *st = &cg->ctl[ctl];
    const char *name = pbx__cgroup_ctl_name(ctl);
    cleanup_free char *own = NULL;
    cleanup_free char *control = NULL;
    char *parent;

    if (pbx__cgroup_parse_proc(self_cgroup, strlen(self_cgroup), name, &own) < 0) {
        st->why = xasprintf("%s: /proc/self/cgroup has no line for the cgroup v1 %s controller",
                            name, name);
        return;
    }
    /* The supervisor's own cgroup in this hierarchy is where it may create children. */
    if (strcmp(own, "/") == 0)
        parent = xasprintf("%s/%s", mount, cg->name);
    else
        parent = xasprintf("%s%s/%s", mount, own, cg->name);
    /* EEXIST: left by an earlier supervisor with our pid; it is ours by name now. */
    if (cg->ops.mkdir(cg->ops.data, parent) < 0 && errno != EEXIST) {
        st->why = xasprintf("%s: cannot create %s: %s", name, parent, strerror(errno));
        free(parent);
        return;
    }
    st->parent = parent;
    control = pbx__cgroup_path(parent, control_file[ctl]);
    if (access(control, W_OK) < 0) {
        st->why = xasprintf("%s: %s is not writable: %s", name, control, strerror(errno));
        return;
    }
    st->version = PBX_CGROUP_V1;
    if (ctl == PBX_CGROUP_MEMORY)
        st->swap_limited = pbx__cgroup_exists(parent, "memory.memsw.limit_in_bytes");
    if (ctl == PBX_CGROUP_MEMORY && !st->swap_limited)
        st->why = xasprintf("memory: cgroup v1 at %s; no memory.memsw.limit_in_bytes (swap "
                            "accounting is off), so the limit covers memory only, not swap",
                            parent);
    else
        st->why = xasprintf("%s: cgroup v1 at %s", name, parent);
}

static int v1_limit(const struct pbx_cgroups *cg, enum pbx_cgroup_ctl ctl, const char *dir,
                    const struct pbx_cgroup_limits *limits, struct pbx_error **err)
{
    char value[32];
    int ret;

    switch (ctl) {
    case PBX_CGROUP_MEMORY:
        if (limits->memory_bytes == 0)
            return 0;
        snprintf(value, sizeof(value), "%" PRIu64, limits->memory_bytes);
        ret = pbx__cgroup_write(cg, dir, "memory.limit_in_bytes", value, err);
        if (ret < 0)
            return ret;
        /* memsw must never be below the memory limit, so it goes second. */
        if (cg->ctl[ctl].swap_limited)
            return pbx__cgroup_write(cg, dir, "memory.memsw.limit_in_bytes", value, err);
        /*
         * Without memsw the cell could page out past its limit.  swappiness 0
         * keeps the cell's own reclaim from swapping anonymous memory; it is
         * best effort, the why text already says swap is not capped.
         */
        if (pbx__cgroup_write(cg, dir, "memory.swappiness", "0", NULL) < 0)
            pbx_log(PBX_LOG_DEBUG, "cannot set memory.swappiness in %s", dir);
        return 0;
    case PBX_CGROUP_PIDS:
        if (limits->pids == 0)
            return 0;
        snprintf(value, sizeof(value), "%" PRIu64, limits->pids);
        return pbx__cgroup_write(cg, dir, "pids.max", value, err);
    case PBX_CGROUP_CPU:
        if (limits->cpu_percent == 0)
            return 0;
        snprintf(value, sizeof(value), "%d", CFS_PERIOD_US);
        ret = pbx__cgroup_write(cg, dir, "cpu.cfs_period_us", value, err);
        if (ret < 0)
            return ret;
        snprintf(value, sizeof(value), "%" PRIu64,
                 (uint64_t)limits->cpu_percent * CFS_PERIOD_US / 100);
        return pbx__cgroup_write(cg, dir, "cpu.cfs_quota_us", value, err);
    default:
        return pbx_error_set(err, PBX_E_INVAL, "unknown cgroup controller %d", (int)ctl);
    }
}

static uint64_t v1_oom_kills(const char *dir)
{
    return pbx__cgroup_read_key(dir, "memory.oom_control", "oom_kill");
}

static uint64_t v1_peak_memory(const char *dir)
{
    return pbx__cgroup_read_u64(dir, "memory.max_usage_in_bytes");
}

static void v1_kill(const struct pbx_cgroups *cg, const char *dir)
{
    pbx__cgroup_kill_listed(dir);
}

/*
 * Back to no limits and fresh counters, so that v1_limit() can apply any new
 * ones (memsw goes first when raising: it may never be below the memory
 * limit).  What the last cell left charged is usually a few kilobytes of kernel
 * objects; when it is more (page cache of files it read), force_empty gives it
 * back so that it does not count against the next cell.  force_empty reclaims
 * in rounds of work on every CPU, too slow to pay on every reuse.
 */
static int v1_reset(const struct pbx_cgroups *cg, enum pbx_cgroup_ctl ctl, const char *dir,
                    struct pbx_error **err)
{
    int ret;

    switch (ctl) {
    case PBX_CGROUP_MEMORY:
        if (cg->ctl[ctl].swap_limited &&
            (ret = pbx__cgroup_write(cg, dir, "memory.memsw.limit_in_bytes", "-1", err)) < 0)
            return ret;
        if ((ret = pbx__cgroup_write(cg, dir, "memory.limit_in_bytes", "-1", err)) < 0)
            return ret;
        if (pbx__cgroup_read_u64(dir, "memory.usage_in_bytes") > LEFTOVER_MAX &&
            (ret = pbx__cgroup_write(cg, dir, "memory.force_empty", "0", err)) < 0)
            return ret;
        if ((ret = pbx__cgroup_write(cg, dir, "memory.max_usage_in_bytes", "0", err)) < 0)
            return ret;
        if (cg->ctl[ctl].swap_limited)
            return pbx__cgroup_write(cg, dir, "memory.memsw.max_usage_in_bytes", "0", err);
        return 0;
    case PBX_CGROUP_PIDS:
        return pbx__cgroup_write(cg, dir, "pids.max", "max", err);
    case PBX_CGROUP_CPU:
        return pbx__cgroup_write(cg, dir, "cpu.cfs_quota_us", "-1", err);
    default:
        return pbx_error_set(err, PBX_E_INVAL, "unknown cgroup controller %d", (int)ctl);
    }
}

const struct pbx__cgroup_backend pbx__cgroup_v1_backend = {
    v1_limit, v1_oom_kills, v1_peak_memory, v1_kill, v1_reset,
};

/* Killing by list, for v1 and for v2 without cgroup.kill. */

/* A pidfd for `pid`, or -errno. */
static int pidfd_open_(pid_t pid)
{
#ifdef SYS_pidfd_open
    int fd = (int)syscall(SYS_pidfd_open, pid, 0);

    return fd < 0 ? -errno : fd;
#else
    return -ENOSYS;
#endif
}

static int pidfd_kill(int pidfd)
{
#ifdef SYS_pidfd_send_signal
    return (int)syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0);
#else
    errno = ENOSYS;
    return -1;
#endif
}

static bool has_pid(const pid_t *pids, size_t n, pid_t pid)
{
    for (size_t i = 0; i < n; i++)
        if (pids[i] == pid)
            return true;
    return false;
}

void pbx__cgroup_kill_listed(const char *dir)
{
    cleanup_free char *path = pbx__cgroup_path(dir, "cgroup.procs");
    cleanup_free char *before = NULL;
    cleanup_free char *after = NULL;
    cleanup_free pid_t *pids = NULL;
    cleanup_free pid_t *still = NULL;
    cleanup_free int *pidfds = NULL;
    size_t n;
    size_t m;
    pid_t self = getpid();

    if (pbx__cgroup_read(path, &before, NULL) < 0)
        return;
    n = pbx__cgroup_parse_pids(before, &pids);
    if (n == 0)
        return;
    /*
     * A pid read from cgroup.procs may be reused by an unrelated process
     * before kill(2) reaches it.  Pin each process with a pidfd first, then
     * read the list again: a pid still listed after its pidfd was opened is
     * the pinned process, so signalling the pidfd can only hit a member.
     */
    pidfds = xcalloc(n, sizeof(*pidfds));
    for (size_t i = 0; i < n; i++)
        pidfds[i] = pidfd_open_(pids[i]);
    if (pbx__cgroup_read(path, &after, NULL) < 0)
        after = xstrdup("");
    m = pbx__cgroup_parse_pids(after, &still);
    for (size_t i = 0; i < n; i++) {
        /* Never ourselves, even if a bug put the supervisor in a cell. */
        if (pids[i] != self && has_pid(still, m, pids[i])) {
            if (pidfds[i] >= 0)
                (void)pidfd_kill(pidfds[i]);
            else if (pidfds[i] == -ENOSYS)
                (void)kill(pids[i], SIGKILL); /* kernels before 5.3: best effort */
        }
        if (pidfds[i] >= 0)
            close(pidfds[i]);
    }
}
