/*
 * The engine, supervisor side: start, free, describe.
 *
 * Theory of operation: an engine is one jail, a zygote in fresh user, mount,
 * pid, net, ipc, uts and cgroup namespaces (zygote.c is what runs there), and
 * every execution runs in a cell forked from it (cell.c).  The supervisor's
 * side has four parts, each owning its state and its locks
 * (engine_internal.h, which also writes down the lock order):
 *
 *   zygotes.c  starts zygotes from the keeper thread and waits for READY on
 *              their control socket (SOCK_SEQPACKET); holds the current one,
 *              replaces it when it dies or is due, and keeps a retired one
 *              alive until its last execution or spare lets go
 *   pool.c     keeps spare cells ready (the refill thread) for executions
 *              with the pool's limits
 *   cells.c    hands out the cells' cgroups from a pool; its reaper thread
 *              waits for finished cells to exit and takes their cgroups back;
 *              its stale thread retries a dead supervisor's cgroups
 *   run.c      one execution: its memfds, pipes and status socket, the job
 *              message, the watch until the cell reports, the result
 *
 * Processes: supervisor -> zygote (pid 1 of the jail) -> cell (pid 1 of its
 * own pid namespace, one per execution) -> job (the user's code).  Threads of
 * the engine: keeper, reaper, refill (with a pool) and stale (while a dead
 * supervisor's cgroups wait), all with every signal blocked; executions run
 * on their callers' threads.
 *
 * pbx_engine_start() sets up the cgroups, the parts and the first zygote;
 * pbx_engine_free() takes them down in the order they need (see there).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/cleanup.h"
#include "common/log.h"
#include "common/xalloc.h"
#include "engine/engine.h"
#include "engine/engine_internal.h"
#include "engine/prefault.h"
#include "sandbox/cgroup.h"
#include "sandbox/uidmap.h"
#include "common/banned.h"

void pbx_engine_config_default(struct pbx_engine_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->preload = false;
    cfg->uid_base = PBX_UIDMAP_DEFAULT_BASE;
    cfg->uid_count = PBX_UIDMAP_DEFAULT_COUNT;
    cfg->uid_auto = true;
    cfg->cgroup_fs = "/sys/fs/cgroup";
    cfg->spares_min = 0;
    cfg->spares_max = 0;
    pbx_limits_default(&cfg->spare_limits);
    cfg->prefault_pages = PBX_PREFAULT_PAGES;
}

static char *read_small_file(const char *path)
{
    cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct pbx_buf b;
    char chunk[4096];
    ssize_t n;

    pbx_buf_init(&b, 1 << 20);
    if (fd < 0)
        return NULL;
    while ((n = read(fd, chunk, sizeof(chunk))) > 0)
        pbx_buf_append_trunc(&b, chunk, (size_t)n);
    return pbx_buf_steal(&b, NULL);
}

/*
 * Start one of the engine's own threads with every signal blocked: process
 * signals (SIGTERM, SIGINT) are for the program's threads, never the engine's.
 */
bool pbx__engine_start_thread(pthread_t *t, void *(*fn)(void *), void *arg)
{
    sigset_t all;
    sigset_t old;
    bool ok;

    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    ok = pthread_create(t, NULL, fn, arg) == 0;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return ok;
}

/*
 * The jail ids in force: the configured ones when this user namespace has
 * them; with uid_auto and a namespace without the default (a container's,
 * of 65536 ids), a range picked inside it.
 */
static int resolve_jail_ids(struct pbx_engine *e, struct pbx_error **err)
{
    cleanup_free struct pbx_uidmap_host *host = xcalloc(1, sizeof(*host));
    struct pbx_error *why = NULL;
    uint32_t base;
    uint32_t count;

    if (pbx_uidmap_host_read(host, err) < 0)
        return pbx_error_prefix(err, "the jail's ids");
    if (pbx_uidmap_check(host, (uint32_t)e->cfg.uid_base, e->cfg.uid_count, &why) == 0)
        return 0;
    if (!e->cfg.uid_auto) {
        *err = why;
        return pbx_error_prefix(err, "the jail's ids");
    }
    pbx_error_free(&why);
    if (pbx_uidmap_pick(host, &base, &count, err) < 0)
        return pbx_error_prefix(err, "the jail's ids");
    e->cfg.uid_base = (uid_t)base;
    e->cfg.uid_count = count;
    e->uid_picked = true;
    return 0;
}

int pbx_engine_start(const struct pbx_engine_config *cfg, struct pbx_engine **out,
                     struct pbx_error **err)
{
    static atomic_uint engines;
    cleanup_free char *self_cg = NULL;
    cleanup_free struct pbx_engine *e = NULL;
    struct pbx_zygote *z;
    char name[64];

    e = xcalloc(1, sizeof(*e));
    e->stop_fd = -1;
    e->cfg = *cfg;
    if (resolve_jail_ids(e, err) < 0)
        return -1;
    self_cg = read_small_file("/proc/self/cgroup");
    snprintf(name, sizeof(name), "pybox-%d-%u", (int)getpid(), atomic_fetch_add(&engines, 1));
    if (self_cg != NULL && pbx_cgroup_setup(cfg->cgroup_fs, self_cg, name, &e->cg, err) < 0)
        return pbx_error_prefix(err, "cgroups");
    if (e->cg != NULL) {
        e->have_memcg = pbx_cgroup_version_of(e->cg, PBX_CGROUP_MEMORY) != PBX_CGROUP_NONE;
        e->have_pidscg = pbx_cgroup_version_of(e->cg, PBX_CGROUP_PIDS) != PBX_CGROUP_NONE;
    }
    if (cfg->require_cgroups && !(e->have_memcg && e->have_pidscg)) {
        pbx_cgroup_teardown(e->cg);
        return pbx_error_set(err, PBX_E_UNSUPPORTED,
                             "no usable memory and pids cgroup controllers (see pybox doctor)");
    }
    pbx__zygotes_init(e);
    pbx__cells_init(e);
    z = pbx__zygotes_get(e, false, err);
    if (z == NULL) {
        pbx__cells_stop_reaper(e);
        pbx__cells_release(e);
        pbx__zygotes_stop(e);
        pbx_cgroup_teardown(e->cg);
        return -1;
    }
    pbx__zygotes_put(e, z);
    atomic_init(&e->next, 1);
    pbx__cells_prefill(e);
    pbx__pool_start(e);
    /* -1 when the kernel gives none: then pbx_engine_stop_executions() cannot stop them. */
    e->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    *out = steal_pointer(&e);
    return 0;
}

void pbx_engine_free(struct pbx_engine *e)
{
    struct pbx_zygote *cur;

    if (e == NULL)
        return;
    pbx__pool_stopping(e);
    /* Kill the current zygote now: a spare being made sees its cell die and gives up. */
    cur = pbx__zygotes_retire(e);
    pbx__pool_release(e);
    /* Every execution has returned: wait for the cells still exiting, before the pool goes. */
    pbx__cells_stop_reaper(e);
    pbx__zygotes_put(e, cur);
    pbx__cells_release(e);
    pbx__zygotes_stop(e);
    pbx_cgroup_teardown(e->cg);
    if (e->stop_fd >= 0)
        close(e->stop_fd);
    free(e);
}

void pbx_engine_stop_executions(struct pbx_engine *e)
{
    uint64_t one = 1;

    /* Never read: it stays readable, for every flight polling it now and later. */
    if (e != NULL && e->stop_fd >= 0 && write(e->stop_fd, &one, sizeof(one)) < 0)
        pbx_log(PBX_LOG_WARN, "stop the executions: %s", strerror(errno));
}

int pbx_engine_reload(struct pbx_engine *e, struct pbx_error **err)
{
    if (pbx__zygotes_replace(e, err) < 0)
        return -1;
    /* The spares forked from the old zygote are stale now: the refill thread drops them. */
    pbx__pool_wake(e);
    return 0;
}

char *pbx_engine_describe(const struct pbx_engine *e)
{
    static const char *const ctl[] = {"memory", "pids", "cpu"};
    char *out = xasprintf("namespaces: user (uid 0-%u -> host %u-%u%s), mount, pid, net, ipc, "
                          "uts, cgroup; per cell: mount, ipc, pid\n",
                          e->cfg.uid_count - 1, (unsigned)e->cfg.uid_base,
                          (unsigned)(e->cfg.uid_base + e->cfg.uid_count - 1),
                          e->uid_picked ? ", picked: this user namespace lacks the default "
                                          "1000000000-1000065535"
                                        : "");

    for (int i = 0; i < PBX_CGROUP_NCTL; i++) {
        char *next;

        if (e->cg == NULL)
            next = xasprintf("%scgroup %s: not in force (no cgroup filesystem)\n", out, ctl[i]);
        else
            next = xasprintf("%scgroup %s\n", out, pbx_cgroup_why(e->cg, (enum pbx_cgroup_ctl)i));
        free(out);
        out = next;
    }
    return out;
}
