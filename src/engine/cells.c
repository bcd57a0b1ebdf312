/*
 * The cells' cgroups and the clean-up after cells, supervisor side.
 *
 * The cgroup pool: creating and removing a memory cgroup per execution is
 * slow and leaves dying memcgs behind in the kernel for a while, so a cell's
 * cgroups go back to a pool when its processes are gone, and the next cell
 * takes them with new limits and fresh counters (pbx_cgroup_cell_reuse).
 *
 * Two threads: the reaper waits for cells that reported to finish exiting and
 * then gives their cgroups back; the stale thread, started only when a dead
 * supervisor's cgroups could not all be removed at start, retries them.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/xalloc.h"
#include "engine/engine_internal.h"
#include "sandbox/cgroup.h"
#include "common/banned.h"

/* Cell cgroups kept for reuse beyond the most spares (cells running on demand). */
#define CGROUP_POOL_EXTRA 8

/* Retries of dead supervisors' cgroups whose members are still exiting: the first, the most. */
#define STALE_RETRY_FIRST_MS 100
#define STALE_RETRY_MAX_MS   30000

/* A cell that reported its execution and is exiting: its cgroups go back when it is gone. */
struct pbx_reap {
    int pidfd;                    /* the cell's */
    struct pbx_cgroup_cell *cell; /* its cgroups, or NULL */
    struct pbx_reap *next;        /* the next newer one */
};

void pbx__cells_drop(struct pbx_cgroup_cell *cell)
{
    struct pbx_error *err = NULL;

    if (cell != NULL && pbx_cgroup_cell_destroy(cell, &err) < 0) {
        pbx_log(PBX_LOG_WARN, "%s", err->msg);
        pbx_error_free(&err);
    }
}

int pbx__cells_get(struct pbx_engine *e, uint64_t id, const struct pbx_limits *lim,
                   struct pbx_cgroup_cell **out, struct pbx_error **err)
{
    struct pbx_cgroup_limits cl = {
        .memory_bytes = lim->memory_bytes,
        .pids = lim->pids,
        .cpu_percent = 100,
    };

    for (;;) {
        struct pbx_cgroup_cell *cell = NULL;
        struct pbx_error *rerr = NULL;

        pthread_mutex_lock(&e->cgpool.lock);
        if (e->cgpool.nfree > 0)
            cell = e->cgpool.free[--e->cgpool.nfree];
        pthread_mutex_unlock(&e->cgpool.lock);
        if (cell == NULL)
            break;
        if (pbx_cgroup_cell_reuse(cell, &cl, &rerr) == 0) {
            atomic_fetch_add(&e->cgpool.reused, 1);
            *out = cell;
            return 0;
        }
        pbx_log(PBX_LOG_DEBUG, "%s; removing it", rerr->msg);
        pbx_error_free(&rerr);
        pbx__cells_drop(cell);
    }
    if (pbx_cgroup_cell_create(e->cg, id, &cl, out, err) < 0)
        return -1;
    atomic_fetch_add(&e->cgpool.created, 1);
    return 0;
}

void pbx__cells_put(struct pbx_engine *e, struct pbx_cgroup_cell *cell)
{
    if (cell == NULL)
        return;
    if (pbx_cgroup_cells_reusable(e->cg) && pbx_cgroup_cell_count(cell) == 0) {
        pthread_mutex_lock(&e->cgpool.lock);
        if (e->cgpool.nfree < e->cgpool.cap) {
            e->cgpool.free[e->cgpool.nfree++] = cell;
            cell = NULL;
        }
        pthread_mutex_unlock(&e->cgpool.lock);
    }
    pbx__cells_drop(cell);
}

/*
 * A cell that has reported its execution has already killed and reaped
 * everything in its pid namespace; what is left is its own exit, in which the
 * kernel tears down its mount and IPC namespaces (each waits for an RCU grace
 * period, ~2 ms here).  Callers do not wait for that: the reaper does, then
 * gives the cell's cgroups back (pooled, or removed if anything is left in them).
 */
static void *reaper_main(void *arg)
{
    struct pbx_engine *e = arg;

    pthread_mutex_lock(&e->reaper.lock);
    for (;;) {
        struct pbx_reap *r;

        while (e->reaper.head == NULL && !e->reaper.stop)
            pthread_cond_wait(&e->reaper.cond, &e->reaper.lock);
        r = e->reaper.head;
        if (r == NULL)
            break; /* stopping, and nothing is left */
        e->reaper.head = r->next;
        if (e->reaper.head == NULL)
            e->reaper.tail = NULL;
        pthread_mutex_unlock(&e->reaper.lock);
        {
            struct pollfd p = {.fd = r->pidfd, .events = POLLIN};

            while (poll(&p, 1, PBX_ENGINE_DRAIN_MS) < 0 && errno == EINTR)
                ;
            close(r->pidfd);
            pbx__cells_put(e, r->cell); /* a cell still there: removed, and killed */
            free(r);
        }
        pthread_mutex_lock(&e->reaper.lock);
    }
    pthread_mutex_unlock(&e->reaper.lock);
    return NULL;
}

bool pbx__cells_reap_later(struct pbx_engine *e, int pidfd, struct pbx_cgroup_cell *cell)
{
    struct pbx_reap *r;

    if (!e->reaper.running)
        return false;
    r = xcalloc(1, sizeof(*r));
    r->pidfd = pidfd;
    r->cell = cell;
    pthread_mutex_lock(&e->reaper.lock);
    if (e->reaper.tail != NULL)
        e->reaper.tail->next = r;
    else
        e->reaper.head = r;
    e->reaper.tail = r;
    pthread_cond_signal(&e->reaper.cond);
    pthread_mutex_unlock(&e->reaper.lock);
    return true;
}

void pbx__cells_stop_reaper(struct pbx_engine *e)
{
    if (!e->reaper.running)
        return;
    pthread_mutex_lock(&e->reaper.lock);
    e->reaper.stop = true;
    pthread_cond_signal(&e->reaper.cond);
    pthread_mutex_unlock(&e->reaper.lock);
    pthread_join(e->reaper.thread, NULL);
    e->reaper.running = false;
}

/*
 * Setup left cgroups of a dead supervisor because a member, killed, had not
 * finished exiting (stuck in the kernel, or frozen).  Try again, after
 * STALE_RETRY_FIRST_MS and then twice as long each time up to
 * STALE_RETRY_MAX_MS, until none is left or the engine stops: left for good,
 * each would count against the kernel's limit on cgroups.
 */
static void *stale_main(void *arg)
{
    struct pbx_engine *e = arg;
    long delay_ms = STALE_RETRY_FIRST_MS;
    size_t left = 1;

    pthread_mutex_lock(&e->reaper.stale_lock);
    while (left > 0 && !e->reaper.stale_stop) {
        struct timespec until;

        pbx_clock_after(CLOCK_MONOTONIC, (uint64_t)delay_ms, &until);
        while (!e->reaper.stale_stop &&
               pthread_cond_timedwait(&e->reaper.stale_cond, &e->reaper.stale_lock, &until) !=
                   ETIMEDOUT)
            ;
        if (e->reaper.stale_stop)
            break;
        pthread_mutex_unlock(&e->reaper.stale_lock);
        left = pbx_cgroup_reap_stale(e->cg);
        pthread_mutex_lock(&e->reaper.stale_lock);
        delay_ms = delay_ms * 2 < STALE_RETRY_MAX_MS ? delay_ms * 2 : STALE_RETRY_MAX_MS;
    }
    pthread_mutex_unlock(&e->reaper.stale_lock);
    return NULL;
}

static void stale_start(struct pbx_engine *e)
{
    pthread_condattr_t attr;

    pthread_mutex_init(&e->reaper.stale_lock, NULL);
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&e->reaper.stale_cond, &attr);
    pthread_condattr_destroy(&attr);
    if (pbx_cgroup_stale_waiting(e->cg) > 0)
        e->reaper.stale_running = pbx__engine_start_thread(&e->reaper.stale, stale_main, e);
}

static void stale_stop(struct pbx_engine *e)
{
    if (!e->reaper.stale_running)
        return;
    pthread_mutex_lock(&e->reaper.stale_lock);
    e->reaper.stale_stop = true;
    pthread_cond_signal(&e->reaper.stale_cond);
    pthread_mutex_unlock(&e->reaper.stale_lock);
    pthread_join(e->reaper.stale, NULL);
    e->reaper.stale_running = false;
}

void pbx__cells_init(struct pbx_engine *e)
{
    unsigned spares =
        e->cfg.spares_max < PBX_ENGINE_MAX_SPARES ? e->cfg.spares_max : PBX_ENGINE_MAX_SPARES;

    pthread_mutex_init(&e->cgpool.lock, NULL);
    e->cgpool.cap = spares + CGROUP_POOL_EXTRA;
    e->cgpool.free = xcalloc(e->cgpool.cap, sizeof(*e->cgpool.free));
    pthread_mutex_init(&e->reaper.lock, NULL);
    pthread_cond_init(&e->reaper.cond, NULL);
    e->reaper.running = pbx__engine_start_thread(&e->reaper.thread, reaper_main, e);
    stale_start(e);
}

void pbx__cells_prefill(struct pbx_engine *e)
{
    struct pbx_cgpool *cp = &e->cgpool;

    while (pbx_cgroup_cells_reusable(e->cg) && cp->nfree < cp->cap - CGROUP_POOL_EXTRA + 2) {
        struct pbx_cgroup_cell *cell = NULL;
        struct pbx_cgroup_limits cl = {0};

        if (pbx_cgroup_cell_create(e->cg, atomic_fetch_add(&e->next, 1), &cl, &cell, NULL) < 0)
            break;
        atomic_fetch_add(&cp->created, 1);
        cp->free[cp->nfree++] = cell;
    }
}

void pbx__cells_release(struct pbx_engine *e)
{
    for (size_t i = 0; i < e->cgpool.nfree; i++)
        pbx__cells_drop(e->cgpool.free[i]);
    free(e->cgpool.free);
    e->cgpool.free = NULL;
    e->cgpool.nfree = 0;
    stale_stop(e);
}
