/*
 * Sessions, supervisor side: a session's cell started, each call sent to it
 * and watched as an execution's flight is (run.c), its files moved, its end
 * noticed and everything of it freed.  (session_cell.c is the cell's side.)
 *
 * Theory of operation: pbx_session_open() takes a reference on the current
 * zygote (the session's cell lives in its jail, so a retired zygote stays
 * until its sessions end) and a cell cgroup of the session's limits, and
 * sends PBX_JOB_SESSION with the input files; the cell answers STARTED with
 * pidfds of its interpreter and of itself.  A call is a flight: its fds go
 * to the cell in a PBX_JOB_CALL message on the status socket, and the flight
 * reads stdout, stderr, the records and the cell's DONE as for an execution.
 * DONE carries PBX_DONE_ENDED when the session ended with the call; an
 * ENDED report (or EOF) on the status socket between calls says the cell
 * went on its own.  An ended session is freed at once (its cell killed and
 * waited for, its cgroup removed); the struct stays until pbx_session_close().
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/utf8.h"
#include "common/xalloc.h"
#include "engine/engine_internal.h"
#include "engine/proto.h"
#include "engine/session.h"
#include "sandbox/files.h"
#include "common/banned.h"

/*
 * z, cell, status and the pidfds are used by whoever holds the session (one
 * operation at a time, take()), and let go by free_cell() under `lock`, which
 * pbx_session_interrupt() and pbx_session_state() hold to read them.
 */
struct pbx_session {
    struct pbx_engine *e;
    struct pbx_zygote *z;         /* a reference, until the session is freed */
    struct pbx_cgroup_cell *cell; /* its cgroups, or NULL */
    struct pbx_limits limits;     /* as opened */
    uint64_t id;                  /* for logs */
    int status;                   /* our end of the cell's status socket, -1 once freed */
    int job_pidfd;                /* the interpreter */
    int cell_pidfd;               /* the cell */
    uint64_t oom_seen;            /* the cgroup's OOM kills before the running call */
    pthread_mutex_t lock;         /* guards the fields below */
    enum pbx_session_end ended;   /* ALIVE, or why it ended */
    bool busy;                    /* a call, restart or file operation runs */
    bool calling;                 /* of those, a call: an interrupt reaches it */
    uint64_t count;               /* calls run */
};

const char *pbx_session_end_name(enum pbx_session_end why)
{
    switch (why) {
    case PBX_SESSION_ALIVE:
        return "alive";
    case PBX_SESSION_CLOSED:
        return "closed";
    case PBX_SESSION_TIMEOUT:
        return "timeout";
    case PBX_SESSION_MEMORY:
        return "memory_limit";
    case PBX_SESSION_CPU:
        return "cpu_limit";
    case PBX_SESSION_CRASHED:
        return "crashed";
    case PBX_SESSION_LOST:
        return "lost";
    case PBX_SESSION_PIDS:
        return "pids_limit";
    }
    return "unknown";
}

/* Kill the cell, wait for it, give back its cgroup and zygote: nothing of it is left. */
static void free_cell(struct pbx_session *s)
{
    struct pbx_cgroup_cell *cell;
    struct pbx_zygote *z;
    int status;
    int job_pidfd;
    int cell_pidfd;

    /* Taken from the session under its lock: pbx_session_state() and _interrupt() may look. */
    pthread_mutex_lock(&s->lock);
    status = s->status;
    cell = s->cell;
    z = s->z;
    job_pidfd = s->job_pidfd;
    cell_pidfd = s->cell_pidfd;
    s->status = s->job_pidfd = s->cell_pidfd = -1;
    s->cell = NULL;
    s->z = NULL;
    pthread_mutex_unlock(&s->lock);
    if (status < 0)
        return;
    if (cell_pidfd >= 0) {
        struct pollfd p = {.fd = cell_pidfd, .events = POLLIN};

        (void)syscall(SYS_pidfd_send_signal, cell_pidfd, SIGKILL, NULL, 0);
        while (poll(&p, 1, PBX_ENGINE_DRAIN_MS) < 0 && errno == EINTR)
            ;
    }
    if (cell != NULL)
        pbx_cgroup_cell_kill(cell);
    close(status);
    if (job_pidfd >= 0)
        close(job_pidfd);
    if (cell_pidfd >= 0)
        close(cell_pidfd);
    pbx__cells_put(s->e, cell);
    pbx__zygotes_put(s->e, z);
}

/* The session ended (`why`): mark it and free its cell.  Called with the lock not held. */
static void end(struct pbx_session *s, enum pbx_session_end why)
{
    pthread_mutex_lock(&s->lock);
    if (s->ended == PBX_SESSION_ALIVE)
        s->ended = why;
    pthread_mutex_unlock(&s->lock);
    free_cell(s);
}

/* Whether the cell ended between calls (an ENDED report, or EOF): then the session ended. */
static bool ended_idle(struct pbx_session *s)
{
    struct pbx_proto_done d;
    int fds[2];
    int nfds = 0;
    ssize_t n;

    if (s->status < 0)
        return true;
    n = pbx__proto_recv_done(s->status, &d, fds, &nfds);
    for (int i = 0; i < nfds; i++)
        close(fds[i]);
    if (n == -EAGAIN)
        return false;
    end(s, n > 0 && d.kind == PBX_PROTO_ENDED && pbx_cgroup_cell_oom_kills(s->cell) > s->oom_seen
               ? PBX_SESSION_MEMORY
           : n > 0 && d.kind == PBX_PROTO_ENDED ? PBX_SESSION_CRASHED
                                                : PBX_SESSION_LOST);
    return true;
}

/*
 * Take the session for one operation: 0, or < 0 with *err when it ended
 * (PBX_E_GONE) or is busy (PBX_E_BUSY).
 */
static int take(struct pbx_session *s, bool call, struct pbx_error **err)
{
    enum pbx_session_end why;

    pthread_mutex_lock(&s->lock);
    why = s->ended;
    if (why == PBX_SESSION_ALIVE && s->busy) {
        pthread_mutex_unlock(&s->lock);
        return pbx_error_set(err, PBX_E_BUSY, "the session is running a call");
    }
    if (why == PBX_SESSION_ALIVE) {
        s->busy = true;
        s->calling = call;
    }
    pthread_mutex_unlock(&s->lock);
    if (why == PBX_SESSION_ALIVE && ended_idle(s)) {
        pthread_mutex_lock(&s->lock);
        s->busy = s->calling = false;
        why = s->ended;
        pthread_mutex_unlock(&s->lock);
    }
    if (why != PBX_SESSION_ALIVE)
        return pbx_error_set(err, PBX_E_GONE, "the session has ended (%s)",
                             pbx_session_end_name(why));
    return 0;
}

static void give_back(struct pbx_session *s)
{
    pthread_mutex_lock(&s->lock);
    s->busy = s->calling = false;
    pthread_mutex_unlock(&s->lock);
}

/* Wait for STARTED with the pidfds of the interpreter and the cell (a restart waits too). */
static int wait_started(struct pbx_session *s, struct pbx_error **err)
{
    uint64_t deadline = pbx_clock_ms(CLOCK_MONOTONIC) + PBX_ENGINE_SETUP_TIMEOUT_MS;

    for (;;) {
        struct pollfd p = {.fd = s->status, .events = POLLIN};
        uint64_t now = pbx_clock_ms(CLOCK_MONOTONIC);
        struct pbx_proto_done d;
        int fds[2];
        int nfds = 0;
        ssize_t n;

        if (now >= deadline)
            return pbx_error_set(err, PBX_E_ENGINE, "the session's cell did not start in time");
        if (poll(&p, 1, (int)(deadline - now)) < 0 && errno != EINTR)
            return pbx_error_set(err, errno, "poll");
        n = pbx__proto_recv_done(s->status, &d, fds, &nfds);
        if (n == -EAGAIN)
            continue;
        if (n > 0 && d.kind == PBX_PROTO_STARTED && nfds == 2) {
            if (s->job_pidfd >= 0)
                close(s->job_pidfd);
            if (s->cell_pidfd >= 0)
                close(s->cell_pidfd);
            s->job_pidfd = fds[0];
            s->cell_pidfd = fds[1];
            return 0;
        }
        for (int i = 0; i < nfds; i++)
            close(fds[i]);
        if (n > 0 && d.kind == PBX_PROTO_FAILED)
            return pbx__proto_failed_error(&d, err);
        return pbx_error_set(err, PBX_E_ENGINE, "the session's cell ended before it started");
    }
}

int pbx_session_open(struct pbx_engine *e, const struct pbx_limits *limits,
                     const struct pbx_file_in *files, size_t nfiles, struct pbx_session **out,
                     struct pbx_error **err)
{
    struct pbx_exec_request check;
    struct pbx_proto_writer w = {0};
    struct pbx_proto_job job;
    struct pbx_session *s;
    int fds[2 + PBX_PROTO_MAX_CGROUP_FDS];
    int nfds = 2;
    int sv[2];
    int r;

    pbx_exec_request_init(&check);
    check.limits = *limits;
    check.code = "";
    check.files = files;
    check.nfiles = nfiles;
    if (pbx__run_check(&check, err) < 0)
        return -1;
    s = xcalloc(1, sizeof(*s));
    s->e = e;
    s->limits = *limits;
    s->status = s->job_pidfd = s->cell_pidfd = -1;
    s->id = atomic_fetch_add(&e->next, 1);
    pthread_mutex_init(&s->lock, NULL);
    for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++)
        fds[i] = -1;

    s->z = pbx__zygotes_get(e, false, err);
    if (s->z == NULL)
        goto fail;
    pbx__proto_job_init(&job, PBX_JOB_SESSION, s->id);
    job.limits = *limits;
    job.flags = e->have_memcg && e->have_pidscg ? 0 : PBX_JOB_NO_CGROUP;
    job.ninput = (uint32_t)nfiles;
    pbx__proto_request_code(&w, "", 0);
    for (size_t i = 0; i < nfiles; i++)
        pbx__proto_request_input(&w, files[i].name, files[i].data, files[i].size);
    pbx__proto_request_modules(&w, NULL);
    job.request_len = w.len;
    fds[1] = pbx__run_sealed_memfd("pybox-request", w.data, w.len, err);
    free(w.data);
    if (fds[1] < 0)
        goto fail;
    if (e->cg != NULL) {
        if (pbx__cells_get(e, s->id, limits, &s->cell, err) < 0)
            goto fail;
        r = pbx_cgroup_cell_procs_fds(s->cell, fds + 2, PBX_PROTO_MAX_CGROUP_FDS, err);
        if (r < 0)
            goto fail;
        nfds += r;
        job.ncgroup_fds = (uint32_t)r;
        s->oom_seen = pbx_cgroup_cell_oom_kills(s->cell);
    }
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
        pbx_error_set(err, errno, "socketpair");
        goto fail;
    }
    s->status = sv[0];
    fds[0] = sv[1];
    if (pbx__proto_send_job(s->z->ctrl, &job, fds, nfds, err) < 0)
        goto fail;
    for (int i = 0; i < nfds; i++) {
        close(fds[i]);
        fds[i] = -1;
    }
    if (wait_started(s, err) < 0)
        goto fail;
    *out = s;
    return 0;

fail:
    for (int i = 0; i < nfds; i++) {
        if (fds[i] >= 0)
            close(fds[i]);
    }
    if (s->status >= 0) {
        free_cell(s);
    } else {
        pbx__cells_put(e, s->cell);
        pbx__zygotes_put(e, s->z);
    }
    pthread_mutex_destroy(&s->lock);
    free(s);
    return -1;
}

/*
 * Send a file operation and wait for its report: 0 with the report in *d and
 * the OUTPUT memfd in *out_fd (the caller closes it), or < 0 with *err.
 */
static int file_op(struct pbx_session *s, enum pbx_file_op op, const char *path, const void *data,
                   size_t len, struct pbx_proto_done *d, int *out_fd, struct pbx_error **err)
{
    struct pbx_proto_writer w = {0};
    struct pbx_proto_job m;
    int fds[2] = {-1, -1};
    int rc = -1;

    *out_fd = -1;
    pbx__proto_job_init(&m, PBX_JOB_FILE, s->id);
    m.flags = op;
    pbx__proto_file_op_write(&w, path, data, len);
    m.request_len = w.len;
    fds[0] = pbx__run_sealed_memfd("pybox-file", w.data, w.len, err);
    free(w.data);
    if (fds[0] < 0)
        return -1;
    fds[1] = memfd_create("pybox-output", MFD_CLOEXEC);
    if (fds[1] < 0) {
        pbx_error_set(err, errno, "memfd_create");
        goto out;
    }
    *out_fd = fcntl(fds[1], F_DUPFD_CLOEXEC, 0);
    if (*out_fd < 0) {
        pbx_error_set(err, errno, "dup the output memfd");
        goto out;
    }
    if (pbx__proto_send_job(s->status, &m, fds, 2, err) < 0)
        goto out;
    close(fds[0]);
    close(fds[1]);
    fds[0] = fds[1] = -1;
    for (;;) {
        struct pollfd p = {.fd = s->status, .events = POLLIN};
        int got[2];
        int ngot = 0;
        ssize_t n;

        if (poll(&p, 1, PBX_ENGINE_SETUP_TIMEOUT_MS) == 0) {
            end(s, PBX_SESSION_LOST);
            pbx_error_set(err, PBX_E_GONE, "the session's cell stopped answering");
            goto out;
        }
        n = pbx__proto_recv_done(s->status, d, got, &ngot);
        for (int i = 0; i < ngot; i++)
            close(got[i]);
        if (n == -EAGAIN || n == -EINTR)
            continue;
        if (n > 0 && d->kind == PBX_PROTO_DONE) {
            rc = 0;
            goto out;
        }
        end(s, n > 0 && d->kind == PBX_PROTO_ENDED ? PBX_SESSION_CRASHED : PBX_SESSION_LOST);
        pbx_error_set(err, PBX_E_GONE, "the session has ended");
        goto out;
    }

out:
    for (int i = 0; i < 2; i++) {
        if (fds[i] >= 0)
            close(fds[i]);
    }
    if (rc < 0 && *out_fd >= 0) {
        close(*out_fd);
        *out_fd = -1;
    }
    return rc;
}

/* The error a file operation's errno stands for. */
static int file_error(int errnum, const char *path, struct pbx_error **err)
{
    switch (errnum) {
    case ENOENT:
        return pbx_error_set(err, PBX_E_NOTFOUND, "no file `%s` in /work", path);
    case EISDIR:
        return pbx_error_set(err, PBX_E_INVAL, "`%s` is a directory", path);
    case ENOTDIR:
        return pbx_error_set(err, PBX_E_INVAL, "a parent of `%s` is not a directory", path);
    case ELOOP:
    case EXDEV:
        return pbx_error_set(err, PBX_E_INVAL, "`%s` goes through a symlink", path);
    case EFBIG:
    case ENOSPC:
    case EDQUOT:
        return pbx_error_set(err, PBX_E_TOO_LARGE, "`%s` does not fit in the session's limits",
                             path);
    case EINVAL:
        return pbx_error_set(err, PBX_E_INVAL, "`%s` is not a valid path beneath /work", path);
    default:
        return pbx_error_set(err, errnum, "`%s`", path);
    }
}

static int check_path(const char *path, struct pbx_error **err)
{
    if (path == NULL || !pbx_files_path_ok(path, strlen(path)))
        return pbx_error_set(err, PBX_E_INVAL,
                             "`%s` is not a valid path beneath /work: relative, at most %d "
                             "components of 1 to 255 bytes, none of them `.` or `..`",
                             path ? path : "", PBX_FILES_PATH_DEPTH);
    return 0;
}

/* A put while the session is taken. */
static int put_taken(struct pbx_session *s, const char *path, const void *data, size_t len,
                     struct pbx_error **err)
{
    struct pbx_proto_done d;
    int out = -1;

    if (check_path(path, err) < 0)
        return -1;
    if (len > s->limits.input_file_bytes)
        return pbx_error_set(err, PBX_E_TOO_LARGE, "`%s` is %zu bytes; the limit is %llu", path,
                             len, (unsigned long long)s->limits.input_file_bytes);
    if (file_op(s, PBX_FILE_OP_PUT, path, data, len, &d, &out, err) < 0)
        return -1;
    close(out);
    return d.err ? file_error(d.err, path, err) : 0;
}

int pbx_session_file_put(struct pbx_session *s, const char *path, const void *data, size_t len,
                         struct pbx_error **err)
{
    int rc;

    if (take(s, false, err) < 0)
        return -1;
    rc = put_taken(s, path, data, len, err);
    give_back(s);
    return rc;
}

int pbx_session_file_get(struct pbx_session *s, const char *path, char **data, size_t *len,
                         struct pbx_error **err)
{
    struct pbx_proto_done d;
    struct pbx_proto_reader r;
    const uint8_t *map = NULL;
    struct stat st;
    int out = -1;
    int rc = -1;

    *data = NULL;
    *len = 0;
    if (check_path(path, err) < 0 || take(s, false, err) < 0)
        return -1;
    if (file_op(s, PBX_FILE_OP_GET, path, NULL, 0, &d, &out, err) < 0)
        goto out;
    if (d.err) {
        file_error(d.err, path, err);
        goto out;
    }
    if (d.nfiles != 1 || d.output_len == 0 || fstat(out, &st) < 0 ||
        (uint64_t)st.st_size < d.output_len ||
        (map = mmap(NULL, d.output_len, PROT_READ, MAP_PRIVATE, out, 0)) == MAP_FAILED) {
        map = NULL;
        pbx_error_set(err, PBX_E_ENGINE, "the cell's answer is malformed");
        goto out;
    }
    r.p = map;
    r.left = d.output_len;
    {
        uint32_t state;
        const uint8_t *name;
        uint32_t nlen;
        uint64_t size;
        const uint8_t *bytes;

        if (!pbx__proto_file_next(&r, &state, &name, &nlen, &size, &bytes) ||
            size > s->limits.output_file_bytes) {
            pbx_error_set(err, PBX_E_ENGINE, "the cell's answer is malformed");
        } else if (state == PBX_FILE_NOT_FOUND) {
            file_error(ENOENT, path, err);
        } else if (state == PBX_FILE_SYMLINK) {
            file_error(ELOOP, path, err);
        } else if (state == PBX_FILE_TOO_LARGE || state == PBX_FILE_OVER_ANSWER) {
            pbx_error_set(err, PBX_E_TOO_LARGE, "`%s` is over the %llu bytes a file may carry",
                          path, (unsigned long long)s->limits.output_file_bytes);
        } else if (state != PBX_FILE_OK) {
            pbx_error_set(err, PBX_E_INVAL, "`%s`: %s", path, pbx__proto_file_state_text(state));
        } else {
            *data = xmalloc(size ? size : 1);
            memcpy(*data, bytes, size);
            *len = size;
            rc = 0;
        }
    }

out:
    if (map != NULL)
        munmap((void *)map, d.output_len);
    if (out >= 0)
        close(out);
    give_back(s);
    return rc;
}

int pbx_session_file_delete(struct pbx_session *s, const char *path, struct pbx_error **err)
{
    struct pbx_proto_done d;
    int out = -1;
    int rc;

    if (check_path(path, err) < 0 || take(s, false, err) < 0)
        return -1;
    rc = file_op(s, PBX_FILE_OP_DELETE, path, NULL, 0, &d, &out, err);
    if (out >= 0)
        close(out);
    if (rc == 0 && d.err)
        rc = file_error(d.err, path, err);
    give_back(s);
    return rc;
}

int pbx_session_file_list(struct pbx_session *s, json_t **list, struct pbx_error **err)
{
    struct pbx_proto_done d;
    const uint8_t *map = NULL;
    struct stat st;
    int out = -1;
    int rc = -1;

    *list = NULL;
    if (take(s, false, err) < 0)
        return -1;
    if (file_op(s, PBX_FILE_OP_LIST, "", NULL, 0, &d, &out, err) < 0)
        goto out;
    if (d.err) {
        file_error(d.err, "/work", err);
        goto out;
    }
    *list = json_array();
    if (d.output_len > 0) {
        struct pbx_proto_reader r;

        if (fstat(out, &st) < 0 || (uint64_t)st.st_size < d.output_len ||
            (map = mmap(NULL, d.output_len, PROT_READ, MAP_PRIVATE, out, 0)) == MAP_FAILED) {
            map = NULL;
            json_decref(*list);
            *list = NULL;
            pbx_error_set(err, PBX_E_ENGINE, "the cell's answer is malformed");
            goto out;
        }
        r.p = map;
        r.left = d.output_len;
        for (uint32_t i = 0; i < d.nfiles; i++) {
            const uint8_t *path;
            uint32_t plen;
            uint64_t size;
            uint64_t mtime;

            if (!pbx__proto_list_next(&r, &path, &plen, &size, &mtime) ||
                !pbx_files_path_ok((const char *)path, plen))
                break;
            {
                /* A name that is not UTF-8 is listed with U+FFFD for its bad bytes, marked. */
                size_t flen;
                char *fixed = pbx_utf8_sanitize((const char *)path, plen, &flen);
                bool exact = flen == plen && memcmp(fixed, path, plen) == 0;
                char iso[64];
                json_t *o;

                pbx_clock_iso(mtime, iso, sizeof(iso));
                o = json_pack("{s:s%, s:I, s:o}", "path", fixed, flen, "size", (json_int_t)size,
                              "mtime", mtime ? json_string(iso) : json_null());

                free(fixed);
                if (o != NULL && !exact)
                    json_object_set_new(o, "path_not_utf8", json_true());
                if (o != NULL)
                    json_array_append_new(*list, o);
            }
        }
    }
    rc = 0;

out:
    if (map != NULL)
        munmap((void *)map, d.output_len);
    if (out >= 0)
        close(out);
    give_back(s);
    return rc;
}

/* Why the call's session ended, from its result. */
static enum pbx_session_end call_end(const struct pbx_proto_done *d,
                                     const struct pbx_exec_result *res)
{
    if (d->timed_out)
        return PBX_SESSION_TIMEOUT;
    if (res->status == PBX_STATUS_MEMORY_LIMIT)
        return PBX_SESSION_MEMORY;
    if (res->status == PBX_STATUS_TIMEOUT)
        return PBX_SESSION_CPU;
    return PBX_SESSION_CRASHED;
}

/* The call, the session taken: its fds made and sent, its flight watched, its result put together.
 */
static int call_taken(struct pbx_session *s, const struct pbx_exec_request *req,
                      struct pbx_exec_result *res, struct pbx_session_call *call,
                      struct pbx_error **err)
{
    struct pbx_proto_writer w = {0};
    struct pbx_exec_request r = *req;
    struct pbx_cell_memory mem = {0};
    struct pbx_proto_job job;
    struct pbx_flight f;
    int child[PBX_FD_FIXED];
    uint64_t pids_denied = 0;
    int out_fd = -1;
    int rc = -1;

    /* Memory, pids and disk are the session's. */
    r.limits.memory_bytes = s->limits.memory_bytes;
    r.limits.pids = s->limits.pids;
    r.limits.disk_bytes = s->limits.disk_bytes;
    r.limits.disk_inodes = s->limits.disk_inodes;
    if (pbx__run_check(&r, err) < 0)
        return -1;
    for (size_t i = 0; i < r.nfiles; i++) {
        if (put_taken(s, r.files[i].name, r.files[i].data, r.files[i].size, err) < 0)
            return -1;
    }
    pbx__run_flight_init(&f, &r);
    f.session = true;
    for (int i = 0; i < PBX_FD_FIXED; i++)
        child[i] = -1;
    pbx__proto_job_init(&job, PBX_JOB_CALL, s->id);
    job.limits = r.limits;
    job.flags = (r.main_mode ? PBX_JOB_MAIN : 0) | (r.allow_all_imports ? PBX_JOB_ALLOW_ALL : 0);
    job.nreturn = (uint32_t)r.nreturn;
    pbx__proto_request_code(&w, r.code, r.code_len);
    for (size_t i = 0; i < r.nreturn; i++)
        pbx__proto_request_return(&w, r.return_files[i]);
    pbx__proto_request_modules(&w, r.extra_modules);
    job.request_len = w.len;
    child[PBX_FD_REQUEST] = pbx__run_sealed_memfd("pybox-request", w.data, w.len, err);
    free(w.data);
    if (child[PBX_FD_REQUEST] < 0)
        goto out;
    child[PBX_FD_STDIN] = pbx__run_sealed_memfd("pybox-stdin", r.stdin_data, r.stdin_len, err);
    if (child[PBX_FD_STDIN] < 0 || pbx__run_pipe_pair(&f.out_r, &child[PBX_FD_STDOUT], err) < 0 ||
        pbx__run_pipe_pair(&f.err_r, &child[PBX_FD_STDERR], err) < 0 ||
        pbx__run_pipe_pair(&f.meta_r, &child[PBX_FD_META], err) < 0)
        goto out;
    out_fd = memfd_create("pybox-output", MFD_CLOEXEC);
    if (out_fd < 0 || (child[PBX_FD_OUTPUT] = fcntl(out_fd, F_DUPFD_CLOEXEC, 0)) < 0) {
        pbx_error_set(err, errno, "memfd_create");
        goto out;
    }
    if (pbx__proto_send_job(s->status, &job, child + PBX_FD_REQUEST, PBX_FD_FIXED - 1, err) < 0) {
        end(s, PBX_SESSION_LOST);
        goto out;
    }
    for (int i = 0; i < PBX_FD_FIXED; i++) {
        if (child[i] >= 0)
            close(child[i]);
        child[i] = -1;
    }
    /* The flight owns its fds: its own copies of the session's. */
    f.status = fcntl(s->status, F_DUPFD_CLOEXEC, 0);
    f.job_pidfd = fcntl(s->job_pidfd, F_DUPFD_CLOEXEC, 0);
    f.cell_pidfd = fcntl(s->cell_pidfd, F_DUPFD_CLOEXEC, 0);
    f.started = true;
    f.stop_fd = s->e->stop_fd;
    pids_denied = pbx_cgroup_cell_pids_denied(s->cell);
    pbx__run_flight(&f, &r, s->cell);
    if (s->cell != NULL) {
        pbx__run_cell_memory(s->cell, &mem);
        mem.oom_kills = mem.oom_kills > s->oom_seen ? mem.oom_kills - s->oom_seen : 0;
        s->oom_seen += mem.oom_kills;
    }
    if (f.finished && pbx__proto_done_check(&f.done, r.limits.output_files + 1, err) < 0) {
        pbx_log(PBX_LOG_WARN, "%s", (*err)->msg);
        end(s, PBX_SESSION_LOST);
        goto out;
    }
    if (!f.finished && !f.backstop && mem.oom_kills == 0) {
        end(s, PBX_SESSION_LOST);
        pbx_error_set(err, PBX_E_GONE, "the session's cell ended without a report");
        goto out;
    }
    if (!f.finished) {
        /* The OOM killer took the cell itself, or the backstop did. */
        f.done.wait_status = SIGKILL;
        f.done.flags |= PBX_DONE_ENDED;
    }
    pbx__run_compose(&f, &r, &mem, out_fd, res);
    pthread_mutex_lock(&s->lock);
    call->execution_count = ++s->count;
    pthread_mutex_unlock(&s->lock);
    call->interrupted = (f.done.flags & PBX_DONE_INTERRUPTED) != 0;
    call->state_preserved = (f.done.flags & PBX_DONE_ENDED) == 0;
    call->ended = PBX_SESSION_ALIVE;
    if (call->state_preserved && pbx_cgroup_cell_pids_denied(s->cell) > pids_denied) {
        /*
         * A fork refused at the limit leaves processes and threads the code may
         * wait on forever, half made: the session ends, and says why.
         */
        call->state_preserved = false;
        call->ended = PBX_SESSION_PIDS;
        if (res->error == NULL)
            res->error = json_pack("{s:s, s:s}", "type", "PidsLimitError", "message",
                                   "the code hit the limit on processes and threads; the "
                                   "session has ended");
        end(s, call->ended);
    } else if (!call->state_preserved) {
        call->ended = f.backstop ? PBX_SESSION_LOST : call_end(&f.done, res);
        end(s, call->ended);
    }
    rc = 0;

out:
    for (int i = 0; i < PBX_FD_FIXED; i++) {
        if (child[i] >= 0)
            close(child[i]);
    }
    if (out_fd >= 0)
        close(out_fd);
    pbx__run_flight_close(&f);
    return rc;
}

int pbx_session_execute(struct pbx_session *s, const struct pbx_exec_request *req,
                        struct pbx_exec_result *res, struct pbx_session_call *call,
                        struct pbx_error **err)
{
    int rc;

    memset(res, 0, sizeof(*res));
    memset(call, 0, sizeof(*call));
    if (take(s, true, err) < 0)
        return -1;
    rc = call_taken(s, req, res, call, err);
    give_back(s);
    return rc;
}

bool pbx_session_interrupt(struct pbx_session *s)
{
    bool sent = false;

    pthread_mutex_lock(&s->lock);
    if (s->ended == PBX_SESSION_ALIVE && s->calling && s->status >= 0) {
        pbx__run_interrupt(s->status);
        sent = true;
    }
    pthread_mutex_unlock(&s->lock);
    return sent;
}

int pbx_session_restart(struct pbx_session *s, struct pbx_error **err)
{
    struct pbx_proto_job m;
    int rc;

    if (take(s, false, err) < 0)
        return -1;
    pbx__proto_job_init(&m, PBX_JOB_RESTART, s->id);
    rc = pbx__proto_send_job(s->status, &m, NULL, 0, err);
    if (rc == 0)
        rc = wait_started(s, err);
    if (rc < 0) {
        end(s, PBX_SESSION_LOST);
    } else {
        pthread_mutex_lock(&s->lock);
        s->count = 0;
        pthread_mutex_unlock(&s->lock);
    }
    give_back(s);
    return rc;
}

void pbx_session_state(struct pbx_session *s, struct pbx_session_state *st)
{
    pthread_mutex_lock(&s->lock);
    st->ended = s->ended;
    st->busy = s->busy;
    st->execution_count = s->count;
    /* Under the lock: an end frees the cell's cgroup (free_cell()). */
    st->memory_bytes = st->ended == PBX_SESSION_ALIVE && s->cell != NULL
                           ? pbx_cgroup_cell_memory_current(s->cell)
                           : 0;
    pthread_mutex_unlock(&s->lock);
}

void pbx_session_close(struct pbx_session *s)
{
    if (s == NULL)
        return;
    end(s, PBX_SESSION_CLOSED);
    pthread_mutex_destroy(&s->lock);
    free(s);
}
