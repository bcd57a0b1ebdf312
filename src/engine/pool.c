/*
 * The warm pool: spare cells forked and isolated ahead of demand, so that an
 * execution with the pool's limits finds its cell ready.
 *
 * Theory of operation: the refill thread keeps `target` spares.  For each it
 * takes cgroups (cells.c) and a reference to the current zygote (zygotes.c),
 * and sends the zygote a PBX_JOB_SPARE message carrying the spare's status
 * socket, its job's GO socket and its cgroup.procs fds; the zygote forks the
 * cell, which forks its job, and the cell reports READY once the job is
 * isolated and waiting (cell.c).  The supervisor keeps, per spare, its ends of
 * both sockets.  pbx__pool_take() hands the oldest spare to an execution,
 * which sends the job its execution and the cell PBX_JOB_GO (run.c); closing
 * the sockets instead makes the cell and its job exit.
 * A refill waits POOL_REFILL_AFTER_MS after an execution in a spare ends while a spare
 * is left, so that it does not slow that execution's answer on its way out.
 * The target adapts to misses and hits, between spares_min and spares_max;
 * every POOL_SWEEP_MS the refill thread drops spares whose zygote is past its
 * time, so a retired zygote does not live on in an idle pool.
 */
#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/log.h"
#include "engine/engine_internal.h"
#include "engine/proto.h"
#include "sandbox/cgroup.h"
#include "common/banned.h"

#define POOL_SWEEP_MS 1000 /* the refill thread looks for spares past their zygote's time */
/*
 * After an execution in a spare ends, the refill waits this long while a spare is left: its
 * forks and the new job's warm-up would otherwise compete for the CPUs with that execution's
 * answer on its way out (the result, the audit row, the HTTP write, the client's wake-up).
 * Measured paced over HTTP on 2 vCPUs: print(1) p50 2.9-3.2 ms without, 2.2-2.6 ms with it.
 */
#define POOL_REFILL_AFTER_MS 5

/* Whether an execution with limits `r` can run in a spare made with limits `s`. */
static bool spare_fits(const struct pbx_limits *r, const struct pbx_limits *s)
{
    return r->wall_ms == s->wall_ms && r->cpu_ms == s->cpu_ms &&
           r->memory_bytes == s->memory_bytes && r->pids == s->pids &&
           r->disk_bytes == s->disk_bytes && r->disk_inodes == s->disk_inodes &&
           r->output_files == s->output_files && r->output_file_bytes == s->output_file_bytes &&
           r->nofile == s->nofile && r->stack_bytes == s->stack_bytes &&
           /* What main()'s value and the files may take of the answer, in the cell. */
           r->answer_bytes == s->answer_bytes && r->stdout_bytes == s->stdout_bytes &&
           r->stderr_bytes == s->stderr_bytes;
}

static void spare_release(struct pbx_engine *e, struct pbx_spare *sp)
{
    if (sp->go >= 0)
        close(sp->go);
    sp->go = -1;
    if (sp->status >= 0)
        close(sp->status); /* the cell sees EOF and exits, its job with it */
    sp->status = -1;
    /* Its processes may still be exiting: then the cgroups are removed, not pooled. */
    pbx__cells_put(e, sp->cell);
    sp->cell = NULL;
    pbx__zygotes_put(e, sp->z);
    sp->z = NULL;
}

/* Fork one spare and wait until it is ready. */
static int make_spare(struct pbx_engine *e, struct pbx_spare *sp, struct pbx_error **err)
{
    struct pbx_proto_job job;
    struct pbx_proto_done d;
    int fds[2 + PBX_PROTO_MAX_CGROUP_FDS + 1];
    int nfds = 0;
    int sv[2];
    int rc = -1;
    int r;

    sp->status = -1;
    sp->go = -1;
    sp->cell = NULL;
    sp->z = pbx__zygotes_get(e, false, err);
    if (sp->z == NULL)
        return -1;
    pbx__proto_job_init(&job, PBX_JOB_SPARE, atomic_fetch_add(&e->next, 1));
    job.limits = e->cfg.spare_limits;
    job.flags = e->have_memcg && e->have_pidscg ? 0 : PBX_JOB_NO_CGROUP;
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
        pbx_error_set(err, errno, "socketpair");
        spare_release(e, sp);
        return -1;
    }
    sp->status = sv[0];
    fds[nfds++] = sv[1];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
        pbx_error_set(err, errno, "socketpair");
        goto out;
    }
    sp->go = sv[0];
    fds[nfds++] = sv[1];
    if (e->cg != NULL) {
        /*
         * With the cgroups that count processes, the job keeps a holder of
         * its memory (holder.c), one process more than the execution's own.
         */
        struct pbx_limits cgl = job.limits;
        bool holder = !(job.flags & PBX_JOB_NO_CGROUP);

        if (holder && cgl.pids != 0)
            cgl.pids++;
        if (pbx__cells_get(e, job.id, &cgl, &sp->cell, err) < 0)
            goto out;
        r = pbx_cgroup_cell_procs_fds(sp->cell, fds + nfds, PBX_PROTO_MAX_CGROUP_FDS, err);
        if (r < 0)
            goto out;
        nfds += r;
        job.ncgroup_fds = (uint32_t)r;
        if (holder) {
            if (pbx_cgroup_cell_count_fd(sp->cell, &fds[nfds], err) < 0)
                goto out;
            nfds++;
            job.flags |= PBX_JOB_HOLDER;
        }
    }
    r = pbx__proto_send_job(sp->z->ctrl, &job, fds, nfds, err);
    /* Our copies go now: if the cell dies, its end of the socket must read as EOF. */
    for (int i = 0; i < nfds; i++)
        close(fds[i]);
    nfds = 0;
    if (r < 0)
        goto out;
    r = pbx__proto_wait_ready(sp->status, PBX_ENGINE_SETUP_TIMEOUT_MS, &d);
    if (r == -ETIMEDOUT) {
        pbx_error_set(err, PBX_E_ENGINE, "a spare cell did not become ready");
        /* Its cgroup.procs fds may still wait in the zygote's queue: see run.c's execute_once. */
        pbx__cells_drop(sp->cell);
        sp->cell = NULL;
        goto out;
    }
    if (r != PBX_PROTO_READY) {
        if (r == PBX_PROTO_FAILED)
            pbx__proto_failed_error(&d, err);
        else
            pbx_error_set(err, PBX_E_ENGINE, "a spare cell ended while getting ready");
        goto out;
    }
    rc = 0;
out:
    for (int i = 0; i < nfds; i++)
        close(fds[i]);
    if (rc < 0)
        spare_release(e, sp);
    return rc;
}

/*
 * Drop the spares whose zygote is retired, dead or due for recycling: an
 * idle server would otherwise keep a retired zygote (and its address-space
 * layout) alive until its next execution.  The refill that follows forks
 * new spares from a new zygote.  Call with the pool's lock held; it is dropped
 * while spares are released.
 */
static void drop_stale_spares(struct pbx_engine *e)
{
    for (size_t i = 0; i < e->pool.n;) {
        struct pbx_spare sp = e->pool.spares[i];

        if (pbx__zygotes_fresh(e, sp.z)) {
            i++;
            continue;
        }
        memmove(e->pool.spares + i, e->pool.spares + i + 1,
                (e->pool.n - i - 1) * sizeof(e->pool.spares[0]));
        e->pool.n--;
        pthread_mutex_unlock(&e->pool.lock);
        spare_release(e, &sp);
        pthread_mutex_lock(&e->pool.lock);
    }
}

/* Wait on the pool's cond for at most `ms` (its lock held): true when signalled. */
static bool pool_wait(struct pbx_engine *e, unsigned ms)
{
    struct timespec until;

    pbx_clock_after(CLOCK_MONOTONIC, ms, &until);
    return pthread_cond_timedwait(&e->pool.cond, &e->pool.lock, &until) == 0;
}

/*
 * Keep `target` spares ready, in the background.  It also wakes every
 * POOL_SWEEP_MS to drop spares of a zygote past its time.
 */
static void *refill_main(void *arg)
{
    struct pbx_engine *e = arg;
    unsigned failures = 0;

    pthread_mutex_lock(&e->pool.lock);
    while (!e->pool.stopping) {
        struct pbx_spare sp;
        struct pbx_error *err = NULL;
        int r;

        drop_stale_spares(e);
        /*
         * Forking a spare costs the zygote's page tables and the new job's warm-up:
         * it waits while executions run in spares, as long as the pool keeps at least
         * one spare for each of them.
         */
        if (e->pool.n + e->pool.making >= e->pool.target || failures > 3 ||
            (e->pool.serving > 0 && e->pool.n >= e->pool.serving)) {
            /* After failures, only a taken spare (a signal) makes it try again. */
            if (pool_wait(e, POOL_SWEEP_MS))
                failures = 0;
            continue;
        }
        if (e->pool.n > 0) {
            uint64_t now = pbx_clock_ns(CLOCK_MONOTONIC);
            uint64_t after = e->pool.served_ns + (uint64_t)POOL_REFILL_AFTER_MS * 1000000u;

            if (now < after) {
                (void)pool_wait(e, (unsigned)((after - now) / 1000000u) + 1);
                continue;
            }
        }
        e->pool.making++;
        pthread_mutex_unlock(&e->pool.lock);
        r = make_spare(e, &sp, &err);
        pthread_mutex_lock(&e->pool.lock);
        e->pool.making--;
        if (r < 0) {
            if (!e->pool.stopping)
                pbx_log(PBX_LOG_WARN, "warm pool: %s", err->msg);
            pbx_error_free(&err);
            failures++;
            continue;
        }
        failures = 0;
        if (e->pool.stopping || e->pool.n == PBX_ENGINE_MAX_SPARES) {
            pthread_mutex_unlock(&e->pool.lock);
            spare_release(e, &sp);
            pthread_mutex_lock(&e->pool.lock);
            continue;
        }
        e->pool.spares[e->pool.n++] = sp;
    }
    pthread_mutex_unlock(&e->pool.lock);
    return NULL;
}

bool pbx__pool_take(struct pbx_engine *e, const struct pbx_limits *limits, struct pbx_spare *sp)
{
    bool got = false;

    if (!e->pool.refill_running || !spare_fits(limits, &e->cfg.spare_limits))
        return false;
    pthread_mutex_lock(&e->pool.lock);
    while (e->pool.n > 0) {
        *sp = e->pool.spares[0];
        memmove(e->pool.spares, e->pool.spares + 1, (e->pool.n - 1) * sizeof(e->pool.spares[0]));
        e->pool.n--;
        if (!pbx__zygotes_fresh(e, sp->z)) {
            /* Forked from a retired, dead or due zygote: not for new work. */
            pthread_mutex_unlock(&e->pool.lock);
            spare_release(e, sp);
            pthread_mutex_lock(&e->pool.lock);
            continue;
        }
        got = true;
        break;
    }
    if (got) {
        e->pool.serving++;
        /* A long run without misses: one spare fewer, down to the minimum. */
        if (++e->pool.streak >= 200 && e->pool.target > e->cfg.spares_min) {
            e->pool.target--;
            e->pool.streak = 0;
        }
    } else {
        /* A miss: more spares next time, up to the maximum. */
        if (e->pool.target < e->cfg.spares_max)
            e->pool.target++;
        e->pool.streak = 0;
    }
    /* Refill now after a miss, or when fewer spares are left than executions run in spares. */
    if (!got || e->pool.n < e->pool.serving)
        pthread_cond_signal(&e->pool.cond);
    pthread_mutex_unlock(&e->pool.lock);
    atomic_fetch_add(got ? &e->pool.hits : &e->pool.misses, 1);
    return got;
}

void pbx__pool_served(struct pbx_engine *e)
{
    pthread_mutex_lock(&e->pool.lock);
    e->pool.served_ns = pbx_clock_ns(CLOCK_MONOTONIC);
    if (ALWAYS(e->pool.serving > 0) && --e->pool.serving == 0)
        pthread_cond_signal(&e->pool.cond);
    pthread_mutex_unlock(&e->pool.lock);
}

void pbx_engine_pool_stats(struct pbx_engine *e, struct pbx_pool_stats *st)
{
    pthread_mutex_lock(&e->pool.lock);
    st->idle = e->pool.n;
    st->target = e->pool.target;
    pthread_mutex_unlock(&e->pool.lock);
    st->hits = atomic_load(&e->pool.hits);
    st->misses = atomic_load(&e->pool.misses);
    st->zygotes = atomic_load(&e->zygotes.count);
    st->cgroups_created = atomic_load(&e->cgpool.created);
    st->cgroups_reused = atomic_load(&e->cgpool.reused);
}

void pbx__pool_start(struct pbx_engine *e)
{
    pthread_mutex_init(&e->pool.lock, NULL);
    {
        pthread_condattr_t attr;

        /* Timed waits of the refill thread count on the monotonic clock. */
        pthread_condattr_init(&attr);
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
        pthread_cond_init(&e->pool.cond, &attr);
        pthread_condattr_destroy(&attr);
    }
    e->pool.target = e->cfg.spares_min;
    if (e->cfg.spares_max > 0) {
        if (e->cfg.spares_max > PBX_ENGINE_MAX_SPARES)
            e->cfg.spares_max = PBX_ENGINE_MAX_SPARES;
        if (e->pool.target > e->cfg.spares_max)
            e->pool.target = e->cfg.spares_max;
        e->pool.refill_running = pbx__engine_start_thread(&e->pool.refill, refill_main, e);
    }
}

void pbx__pool_wake(struct pbx_engine *e)
{
    if (!e->pool.refill_running)
        return;
    pthread_mutex_lock(&e->pool.lock);
    pthread_cond_signal(&e->pool.cond);
    pthread_mutex_unlock(&e->pool.lock);
}

void pbx__pool_stopping(struct pbx_engine *e)
{
    if (!e->pool.refill_running)
        return;
    pthread_mutex_lock(&e->pool.lock);
    e->pool.stopping = true;
    pthread_cond_signal(&e->pool.cond);
    pthread_mutex_unlock(&e->pool.lock);
}

void pbx__pool_release(struct pbx_engine *e)
{
    if (e->pool.refill_running)
        pthread_join(e->pool.refill, NULL);
    e->pool.refill_running = false;
    for (unsigned i = 0; i < e->pool.n; i++)
        spare_release(e, &e->pool.spares[i]);
    e->pool.n = 0;
}
