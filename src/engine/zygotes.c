/*
 * The zygotes, supervisor side: starting them, holding references to them,
 * replacing the current one when it dies or is due.  (The code that runs
 * inside a zygote, in the jail, is zygote.c.)
 *
 * Theory of operation: spawn_zygote() opens the pybox binary (O_PATH), a
 * SOCK_SEQPACKET control socketpair and a sync pipe, and raw-clone()s the
 * zygote into new user, mount, pid, net, ipc, uts and cgroup namespaces.  The
 * child waits on the pipe while the supervisor maps the jail's uid/gid 0..N
 * to the unprivileged host range cfg.uid_base..; released, it becomes uid/gid
 * 0 of the jail, keeps only the control socket (as fd 3) and stderr, and
 * execs the binary as "pybox-zygote __zygote FLAGS [MODULES]" with a fixed
 * environment (MODULES: what to preload instead of the default, from the
 * supervisor's PYBOX_PRELOAD_MODULES, a tuning and benchmarking knob).
 * The supervisor then waits for READY on the control socket, up to
 * START_TIMEOUT_MS.
 *
 * Processes: one zygote per jail, a child of the keeper thread (keeper_main
 * says why), which has PR_SET_PDEATHSIG: it dies with that thread.  Fds kept
 * by the supervisor per zygote: its end of the control socket and a pidfd.
 *
 * The engine keeps a current zygote, reference-counted; pbx__zygotes_get()
 * replaces it when it died or is due for recycling, and the last reference
 * to a retired one destroys it (its jail dies with it).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/xalloc.h"
#include "engine/engine_internal.h"
#include "engine/prefault.h"
#include "engine/proto.h"
#include "engine/zygote.h"
#include "common/banned.h"

#define START_TIMEOUT_MS 60000 /* numpy's first import on a cold cache is slow */

static int write_proc_file(pid_t pid, const char *file, const char *text, struct pbx_error **err)
{
    char path[64];
    cleanup_close int fd = -1;
    size_t len = strlen(text);

    snprintf(path, sizeof(path), "/proc/%d/%s", (int)pid, file);
    fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0 || write(fd, text, len) != (ssize_t)len)
        return pbx_error_set(err, errno, "write %s", path);
    return 0;
}

static char *const zygote_env[] = {
    "PATH=/usr/bin:/bin",
    "LANG=C.UTF-8",
    "LC_ALL=C.UTF-8",
    "HOME=/work",
    "TMPDIR=/tmp",
    /* matplotlib: no display, and its config and cache directory the cell's own /tmp (zygote.c). */
    "MPLCONFIGDIR=/tmp",
    "MPLBACKEND=Agg",
    /* One thread per BLAS, set before numpy is imported: a raw clone skips pthread_atfork. */
    "OPENBLAS_NUM_THREADS=1",
    "OMP_NUM_THREADS=1",
    "MKL_NUM_THREADS=1",
    "NUMEXPR_NUM_THREADS=1",
    /* For the loader and malloc only; the zygote removes them before Python starts. */
    "LD_BIND_NOW=1",
    "GLIBC_TUNABLES=glibc.malloc.mxfast=0",
    NULL,
};

/*
 * `modules`, when not NULL, is the space-separated list of modules a preloading zygote imports
 * instead of its default (PYBOX_PRELOAD_MODULES; bench/preload.py measures candidates with it).
 */
static _Noreturn void zygote_child(int exe, int ctrl, int sync_fd, int sync_w, char *flags,
                                   char *modules)
{
    char *argv[] = {"pybox-zygote", PBX_ZYGOTE_ARG, flags, modules, NULL};
    char c;
    int devnull;

    /* Only async-signal-safe calls: this is a raw clone of a possibly threaded process. */
    (void)prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    /*
     * A supervisor that died before the line above never sends that signal.  Without our copy
     * of the pipe's write end, its death is EOF on the read below, not a wait for ever.
     */
    close(sync_w);
    {
        /* The keeper thread blocks every signal; the zygote starts with none blocked. */
        sigset_t none;

        sigemptyset(&none);
        (void)syscall(SYS_rt_sigprocmask, SIG_SETMASK, &none, NULL, sizeof(uint64_t));
    }
    if (read(sync_fd, &c, 1) != 1)
        _exit(126); /* the supervisor gave up before mapping our ids */
    /*
     * Our ids are mapped now: become uid/gid 0 of the jail, which is unprivileged outside.
     * Raw system calls: glibc's wrappers would take its thread-list lock to change the ids of
     * every thread, and a thread of the parent may have held that lock at the clone (a host
     * creating threads while it starts the engine), leaving it locked here forever.
     */
    if (syscall(SYS_setresgid, 0, 0, 0) < 0 || syscall(SYS_setgroups, 0, NULL) < 0 ||
        syscall(SYS_setresuid, 0, 0, 0) < 0)
        _exit(126);
    /*
     * Changing ids cleared the parent-death signal: set it again, so that the jail dies with the
     * thread that started it (the engine's keeper thread) even before the control socket says so.
     */
    (void)prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (devnull < 0 || dup2(devnull, 0) < 0 || dup2(devnull, 1) < 0)
        _exit(126);
    /* Move the exe fd out of the way of fd 3 before the control socket takes it. */
    exe = fcntl(exe, F_DUPFD_CLOEXEC, 16);
    if (exe < 0)
        _exit(126);
    if (ctrl == PBX_ZYGOTE_CTRL_FD ? fcntl(ctrl, F_SETFD, 0) < 0
                                   : dup2(ctrl, PBX_ZYGOTE_CTRL_FD) < 0)
        _exit(126);
    /* Everything else is closed on exec; stderr stays for fatal diagnostics. */
    if (syscall(SYS_close_range, 4, ~0U, CLOSE_RANGE_CLOEXEC) < 0)
        _exit(126);
    syscall(SYS_execveat, exe, "", argv, zygote_env, AT_EMPTY_PATH);
    _exit(127);
}

/* Start a zygote in a fresh jail and wait until it is ready; the caller owns *out. */
static int spawn_zygote(const struct pbx_engine_config *cfg, struct pbx_zygote **out,
                        struct pbx_error **err)
{
    cleanup_close int exe = -1;
    cleanup_close int sync_r = -1;
    cleanup_close int sync_w = -1;
    cleanup_close int ctrl = -1;
    cleanup_close int peer = -1;
    cleanup_pid pid_t pid = -1;
    struct pbx_proto_done ready;
    struct pbx_zygote *z;
    /* Read before the clone: the child may call nothing that is not async-signal-safe. */
    char *modules = cfg->preload ? getenv("PYBOX_PRELOAD_MODULES") : NULL;
    char map[64];
    char flags[32]; /* "FLAGS:PAGES": enum pbx_zygote_flags, the pages spares copy ahead */
    int sv[2];
    int p[2];
    int r;

    snprintf(flags, sizeof(flags), "%d:%u", cfg->preload ? PBX_ZYGOTE_PRELOAD : 0,
             cfg->prefault_pages < PBX_PREFAULT_MAX_PAGES ? cfg->prefault_pages
                                                          : PBX_PREFAULT_MAX_PAGES);

    exe = open(cfg->zygote_exe ? cfg->zygote_exe : "/proc/self/exe", O_PATH | O_CLOEXEC);
    if (exe < 0)
        return pbx_error_set(err, errno, "open the zygote binary `%s`",
                             cfg->zygote_exe ? cfg->zygote_exe : "/proc/self/exe");
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
        return pbx_error_set(err, errno, "socketpair");
    ctrl = sv[0];
    peer = sv[1];
    if (pipe2(p, O_CLOEXEC) < 0)
        return pbx_error_set(err, errno, "pipe");
    sync_r = p[0];
    sync_w = p[1];

    pid = (pid_t)syscall(SYS_clone,
                         CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC |
                             CLONE_NEWUTS | CLONE_NEWCGROUP | SIGCHLD,
                         NULL, NULL, NULL, NULL);
    if (pid < 0)
        return pbx_error_set(err, errno, "create the jail's namespaces (user namespaces enabled?)");
    if (pid == 0)
        zygote_child(exe, peer, sync_r, sync_w, flags, modules);

    close(steal_fd(&peer));
    snprintf(map, sizeof(map), "0 %u %u\n", (unsigned)cfg->uid_base, cfg->uid_count);
    if (write_proc_file(pid, "uid_map", map, err) < 0 ||
        write_proc_file(pid, "gid_map", map, err) < 0)
        return pbx_error_prefix(err, "map the jail's ids");
    if (write(sync_w, "x", 1) != 1)
        return pbx_error_set(err, errno, "release the zygote");

    r = pbx__proto_wait_ready(ctrl, START_TIMEOUT_MS, &ready);
    if (r == -ETIMEDOUT)
        return pbx_error_set(err, PBX_E_ENGINE, "the zygote did not become ready in %d s",
                             START_TIMEOUT_MS / 1000);
    if (r == PBX_PROTO_FAILED) {
        pbx__proto_failed_error(&ready, err);
        return pbx_error_prefix(err, "start the jail");
    }
    if (r != PBX_PROTO_READY)
        return pbx_error_set(err, PBX_E_ENGINE, "the zygote exited during start-up");
    z = xcalloc(1, sizeof(*z));
    z->pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    z->pid = pid;
    pid = -1;
    z->ctrl = steal_fd(&ctrl);
    z->born_ms = pbx_clock_ms(CLOCK_MONOTONIC);
    *out = z;
    return 0;
}

/* Stop a zygote nobody uses any more: every process of its jail dies with it. */
static void zygote_destroy(struct pbx_zygote *z)
{
    close(z->ctrl);
    kill(z->pid, SIGKILL);
    while (waitpid(z->pid, NULL, 0) < 0 && errno == EINTR)
        ;
    if (z->pidfd >= 0)
        close(z->pidfd);
    free(z);
}

static bool zygote_dead(const struct pbx_zygote *z)
{
    struct pollfd p = {.fd = z->pidfd, .events = POLLIN};

    return z->pidfd >= 0 && poll(&p, 1, 0) > 0;
}

bool pbx__zygotes_dying(const struct pbx_zygote *z)
{
    struct pollfd p = {.fd = z->pidfd, .events = POLLIN};

    return z->pidfd >= 0 && poll(&p, 1, PBX_ENGINE_DRAIN_MS) > 0;
}

/* Drop a reference; returns the zygote when that was the last one.  Caller holds the lock. */
static struct pbx_zygote *zygote_unref_locked(struct pbx_zygote *z)
{
    PBX_ASSERT(z->refs > 0);
    return --z->refs == 0 ? z : NULL;
}

void pbx__zygotes_put(struct pbx_engine *e, struct pbx_zygote *z)
{
    struct pbx_zygote *last;

    if (z == NULL)
        return;
    pthread_mutex_lock(&e->zygotes.lock);
    last = zygote_unref_locked(z);
    pthread_mutex_unlock(&e->zygotes.lock);
    if (last != NULL)
        zygote_destroy(last);
}

/*
 * Zygotes are started from one long-lived thread.  A zygote dies with the
 * thread that created it (PR_SET_PDEATHSIG follows the parent thread, not the
 * process), and executions may run on short-lived threads (a connection's, a
 * library caller's): a zygote they started would die as soon as they ended.
 */
static void *keeper_main(void *arg)
{
    struct pbx_engine *e = arg;

    pthread_mutex_lock(&e->zygotes.keeper_lock);
    for (;;) {
        while (!e->zygotes.keeper_asked && !e->zygotes.keeper_stop)
            pthread_cond_wait(&e->zygotes.keeper_cond, &e->zygotes.keeper_lock);
        if (e->zygotes.keeper_stop)
            break;
        e->zygotes.keeper_asked = false;
        pthread_mutex_unlock(&e->zygotes.keeper_lock);
        {
            struct pbx_zygote *z = NULL;
            struct pbx_error *err = NULL;

            (void)spawn_zygote(&e->cfg, &z, &err);
            pthread_mutex_lock(&e->zygotes.keeper_lock);
            e->zygotes.keeper_z = z;
            e->zygotes.keeper_err = err;
        }
        e->zygotes.keeper_answered = true;
        pthread_cond_broadcast(&e->zygotes.keeper_cond);
    }
    pthread_mutex_unlock(&e->zygotes.keeper_lock);
    return NULL;
}

/*
 * Start a zygote on the keeper thread, and wait for it.  One at a time: only
 * the thread that set `starting` calls it, with no lock held.
 */
static int spawn_on_keeper(struct pbx_engine *e, struct pbx_zygote **out, struct pbx_error **err)
{
    struct pbx_error *kerr;

    if (!e->zygotes.keeper_running)
        return spawn_zygote(&e->cfg, out, err);
    pthread_mutex_lock(&e->zygotes.keeper_lock);
    e->zygotes.keeper_asked = true;
    e->zygotes.keeper_answered = false;
    pthread_cond_broadcast(&e->zygotes.keeper_cond);
    while (!e->zygotes.keeper_answered)
        pthread_cond_wait(&e->zygotes.keeper_cond, &e->zygotes.keeper_lock);
    *out = e->zygotes.keeper_z;
    kerr = e->zygotes.keeper_err;
    e->zygotes.keeper_z = NULL;
    e->zygotes.keeper_err = NULL;
    e->zygotes.keeper_answered = false;
    pthread_mutex_unlock(&e->zygotes.keeper_lock);
    if (*out != NULL)
        return 0;
    if (err != NULL)
        *err = kerr;
    else
        pbx_error_free(&kerr);
    return -1;
}

/* Whether `z` has served its share of executions or of time.  Call with the lock held. */
static bool zygote_due_locked(const struct pbx_engine *e, const struct pbx_zygote *z)
{
    return (e->cfg.zygote_max_execs > 0 && z->execs >= e->cfg.zygote_max_execs) ||
           (e->cfg.zygote_max_age_s > 0 && pbx_clock_ms(CLOCK_MONOTONIC) - z->born_ms >=
                                               (uint64_t)e->cfg.zygote_max_age_s * 1000u);
}

/*
 * Start a zygote and make it current, with the engine's reference; *prev is
 * the one that was current (NULL or a zygote the caller retires).  Called
 * with the lock held and no start running.  The lock is released during the
 * start: a start takes up to START_TIMEOUT_MS, and the pool, the metrics and
 * the executions with a reference of their own need the lock meanwhile;
 * getters wait for `starting` to end.  Returns 0, or < 0 with *err and
 * nothing changed.
 */
static int start_current_locked(struct pbx_engine *e, struct pbx_zygote **prev,
                                struct pbx_error **err)
{
    struct pbx_zygotes *zs = &e->zygotes;
    struct pbx_zygote *z = NULL;
    int r;

    zs->starting = true;
    pthread_mutex_unlock(&zs->lock);
    r = spawn_on_keeper(e, &z, err);
    pthread_mutex_lock(&zs->lock);
    zs->starting = false;
    pthread_cond_broadcast(&zs->started);
    if (r < 0)
        return -1;
    *prev = zs->cur;
    z->refs = 1; /* the engine's, while current */
    zs->cur = z;
    atomic_fetch_add(&zs->count, 1);
    return 0;
}

struct pbx_zygote *pbx__zygotes_get(struct pbx_engine *e, bool count_exec, struct pbx_error **err)
{
    struct pbx_zygotes *zs = &e->zygotes;
    struct pbx_zygote *old = NULL;
    struct pbx_zygote *z;

    pthread_mutex_lock(&zs->lock);
    for (;;) {
        z = zs->cur;
        if (z != NULL && (zygote_dead(z) || zygote_due_locked(e, z))) {
            if (zygote_dead(z))
                pbx_log(PBX_LOG_WARN, "the zygote died: starting a new one");
            zs->cur = NULL;
            old = zygote_unref_locked(z);
            z = NULL;
        }
        if (z != NULL || !zs->starting)
            break;
        /* Another thread is starting the next one: wait for it, the lock released meanwhile. */
        pthread_cond_wait(&zs->started, &zs->lock);
    }
    if (z == NULL && zs->stopping) {
        pthread_mutex_unlock(&zs->lock);
        if (old != NULL)
            zygote_destroy(old);
        pbx_error_set(err, PBX_E_ENGINE, "the engine is stopping");
        return NULL;
    }
    if (z == NULL) {
        struct pbx_zygote *none = NULL;

        /* There is no current one (the loop above retired it): `none` stays NULL. */
        if (start_current_locked(e, &none, err) < 0) {
            pthread_mutex_unlock(&zs->lock);
            if (old != NULL)
                zygote_destroy(old);
            return NULL;
        }
        z = zs->cur;
    }
    z->refs++;
    if (count_exec)
        z->execs++;
    pthread_mutex_unlock(&zs->lock);
    if (old != NULL)
        zygote_destroy(old);
    return z;
}

bool pbx__zygotes_fresh(struct pbx_engine *e, const struct pbx_zygote *z)
{
    bool fresh;

    pthread_mutex_lock(&e->zygotes.lock);
    fresh = e->zygotes.cur == z && !zygote_dead(z) && !zygote_due_locked(e, z);
    pthread_mutex_unlock(&e->zygotes.lock);
    return fresh;
}

void pbx__zygotes_count_exec(struct pbx_engine *e, struct pbx_zygote *z)
{
    pthread_mutex_lock(&e->zygotes.lock);
    z->execs++;
    pthread_mutex_unlock(&e->zygotes.lock);
}

int pbx__zygotes_replace(struct pbx_engine *e, struct pbx_error **err)
{
    struct pbx_zygotes *zs = &e->zygotes;
    struct pbx_zygote *prev = NULL;
    struct pbx_zygote *old = NULL;
    int r;

    pthread_mutex_lock(&zs->lock);
    /* One start at a time, as in pbx__zygotes_get(); the current one serves meanwhile. */
    while (zs->starting)
        pthread_cond_wait(&zs->started, &zs->lock);
    if (zs->stopping) {
        pthread_mutex_unlock(&zs->lock);
        return pbx_error_set(err, PBX_E_ENGINE, "the engine is stopping");
    }
    r = start_current_locked(e, &prev, err);
    /* The old one, unless a getter retired it meanwhile (it died, or was due). */
    if (r == 0 && prev != NULL)
        old = zygote_unref_locked(prev);
    pthread_mutex_unlock(&zs->lock);
    if (old != NULL)
        zygote_destroy(old);
    return r;
}

void pbx__zygotes_init(struct pbx_engine *e)
{
    pthread_mutex_init(&e->zygotes.lock, NULL);
    pthread_cond_init(&e->zygotes.started, NULL);
    pthread_mutex_init(&e->zygotes.keeper_lock, NULL);
    pthread_cond_init(&e->zygotes.keeper_cond, NULL);
    e->zygotes.keeper_running = pbx__engine_start_thread(&e->zygotes.keeper, keeper_main, e);
}

struct pbx_zygote *pbx__zygotes_retire(struct pbx_engine *e)
{
    struct pbx_zygote *cur;

    pthread_mutex_lock(&e->zygotes.lock);
    /* A zygote being started becomes current first, and is killed here with the rest. */
    while (e->zygotes.starting)
        pthread_cond_wait(&e->zygotes.started, &e->zygotes.lock);
    e->zygotes.stopping = true;
    cur = e->zygotes.cur;
    e->zygotes.cur = NULL;
    if (cur != NULL)
        kill(cur->pid, SIGKILL);
    pthread_mutex_unlock(&e->zygotes.lock);
    return cur;
}

void pbx__zygotes_stop(struct pbx_engine *e)
{
    if (!e->zygotes.keeper_running)
        return;
    pthread_mutex_lock(&e->zygotes.keeper_lock);
    e->zygotes.keeper_stop = true;
    pthread_cond_broadcast(&e->zygotes.keeper_cond);
    pthread_mutex_unlock(&e->zygotes.keeper_lock);
    pthread_join(e->zygotes.keeper, NULL);
    e->zygotes.keeper_running = false;
}
