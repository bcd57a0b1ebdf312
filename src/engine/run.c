/*
 * One execution, supervisor side: the request checked, its fds made, the job
 * message sent, the execution watched until the cell reports, and the result
 * put together.  (src/server/execute.c is the HTTP side of an execution.)
 *
 * Theory of operation: pbx_engine_execute() prepares, per execution: a sealed
 * memfd with the code and input files, a sealed memfd with stdin, three pipes
 * (stdout, stderr, the job's records), a memfd for returned files, a status
 * socketpair, and the cell's cgroups with fds of their cgroup.procs.  It
 * sends all of it to the zygote in one message (or, to a spare from the
 * pool, the code's place and the job's fds straight to its job on the
 * job's GO socket, then the request and output memfds to its cell on the
 * spare's status socket), keeps the read ends, and multiplexes them until the cell
 * reports DONE: output is kept up to its cap and the rest drained and
 * dropped, so a flood never blocks the job or the supervisor.  A backstop
 * deadline (wall limit plus grace) kills the job, the cell and the cgroup if
 * the cell itself stops answering.  Then the cgroup's OOM count is read, the
 * cell handed to the reaper (cells.c), and the result put together.
 *
 * Many threads may execute at once: each execution owns its fds and cgroup,
 * and SOCK_SEQPACKET keeps their job messages whole.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/cleanup.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/signame.h"
#include "common/xalloc.h"
#include "engine/engine.h"
#include "engine/engine_internal.h"
#include "engine/meta.h"
#include "engine/proto.h"
#include "engine/verdict.h"
#include "sandbox/cgroup.h"
#include "sandbox/files.h"
#include "common/banned.h"

#define GRACE_MS 3000 /* past the wall limit before the backstop fires */
/* Records beyond main()'s value and the outputs: errors, tracebacks. */
#define META_EXTRA (1u << 20)
/* The most a marker record of the bootstrap takes, for an output it left out. */
#define META_MARKER 256

void pbx_exec_request_init(struct pbx_exec_request *req)
{
    memset(req, 0, sizeof(*req));
    pbx_limits_default(&req->limits);
    req->cancel_fd = -1;
}

bool pbx_engine_check_name(const char *name, struct pbx_error **err)
{
    if (name == NULL || !pbx_files_name_ok(name, strlen(name))) {
        pbx_error_set(err, PBX_E_INVAL,
                      "invalid file name `%s`: use 1-255 bytes, no `/`, not `.` or `..`",
                      name ? name : "(null)");
        return false;
    }
    return true;
}

int pbx__run_check(const struct pbx_exec_request *req, struct pbx_error **err)
{
    const struct pbx_limits *l = &req->limits;

    if (pbx_limits_check(l, err) < 0)
        return -1;
    if (req->code == NULL)
        return pbx_error_set(err, PBX_E_INVAL, "no code");
    if (req->code_len > l->code_bytes)
        return pbx_error_set(err, PBX_E_TOO_LARGE, "code is %zu bytes; the limit is %" PRIu64,
                             req->code_len, l->code_bytes);
    if (req->stdin_len > l->stdin_bytes)
        return pbx_error_set(err, PBX_E_TOO_LARGE, "stdin is %zu bytes; the limit is %" PRIu64,
                             req->stdin_len, l->stdin_bytes);
    if (req->nfiles > l->input_files)
        return pbx_error_set(err, PBX_E_TOO_LARGE, "%zu input files; the limit is %u", req->nfiles,
                             l->input_files);
    if (req->nreturn > l->output_files)
        return pbx_error_set(err, PBX_E_TOO_LARGE, "%zu returned files asked; the limit is %u",
                             req->nreturn, l->output_files);
    for (size_t i = 0; i < req->nfiles; i++) {
        if (!pbx_engine_check_name(req->files[i].name, err))
            return -1;
        if (req->files[i].size > l->input_file_bytes)
            return pbx_error_set(err, PBX_E_TOO_LARGE,
                                 "input file `%s` is %zu bytes; the limit is %" PRIu64,
                                 req->files[i].name, req->files[i].size, l->input_file_bytes);
        for (size_t j = 0; j < i; j++) {
            if (strcmp(req->files[i].name, req->files[j].name) == 0)
                return pbx_error_set(err, PBX_E_INVAL, "input file `%s` given twice",
                                     req->files[i].name);
        }
    }
    for (size_t i = 0; i < req->nreturn; i++) {
        if (!pbx_engine_check_name(req->return_files[i], err))
            return -1;
    }
    if (req->extra_modules != NULL && strlen(req->extra_modules) > PBX_PROTO_MAX_MODULES)
        return pbx_error_set(err, PBX_E_TOO_LARGE, "the extra module list is over %d bytes",
                             PBX_PROTO_MAX_MODULES);
    return 0;
}

int pbx__run_sealed_memfd(const char *name, const void *data, size_t len, struct pbx_error **err)
{
    cleanup_close int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
    const char *p = data;
    size_t left = len;

    if (fd < 0)
        return pbx_error_set(err, errno, "memfd_create");
    while (left > 0) {
        ssize_t n = write(fd, p, left);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return pbx_error_set(err, errno, "write memfd");
        p += n;
        left -= (size_t)n;
    }
    if (lseek(fd, 0, SEEK_SET) < 0 ||
        fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) < 0)
        return pbx_error_set(err, errno, "seal memfd");
    return steal_fd(&fd);
}

/* Read what `fd` has into `b` (within its cap), counting every byte read in *got. */
static void drain(int *fd, struct pbx_buf *b, uint64_t *got)
{
    char chunk[65536];

    for (;;) {
        ssize_t n = read(*fd, chunk, sizeof(chunk));

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return;
        if (n <= 0) {
            close(*fd);
            *fd = -1;
            return;
        }
        (void)pbx_buf_append_trunc(b, chunk, (size_t)n);
        *got += (uint64_t)n;
    }
}

/* Hand on_output the text of `stream` read up to byte `upto` (what the cap kept of it). */
static void give_text(struct pbx_flight *f, const struct pbx_exec_request *req,
                      enum pbx_stream stream, uint64_t upto)
{
    const struct pbx_buf *b = stream == PBX_STREAM_STDOUT ? &f->out : &f->errb;
    uint64_t from = f->given[stream];
    uint64_t to = upto < f->got[stream] ? upto : f->got[stream];
    uint64_t kept = to < b->len ? to : b->len;

    if (to <= from)
        return;
    if (kept > from && req->on_output != NULL)
        req->on_output(stream, b->data + from, (size_t)(kept - from), req->on_output_arg);
    f->given[stream] = to;
}

/*
 * Parse the records read so far, and hand the live callbacks what came, in
 * the order the code wrote it: an output after the stdout and stderr its
 * record says preceded it ("at"), the text after it held back until then.
 * The bootstrap flushes both and writes the record before any later text,
 * so text read already means its record is in the records' pipe: each poll
 * round reads all three before this runs.  With `all` (the flight is over),
 * everything left goes.
 */
static void give(struct pbx_flight *f, const struct pbx_exec_request *req, bool all)
{
    size_t n;

    pbx__meta_feed(&f->parsed, f->meta.data ? f->meta.data : "", f->meta.len);
    n = f->parsed.outputs_at != NULL ? json_array_size(f->parsed.outputs_at) : 0;
    while (f->shown < n) {
        json_t *at = json_array_get(f->parsed.outputs_at, f->shown);
        uint64_t at_out = (uint64_t)json_integer_value(json_array_get(at, 0));
        uint64_t at_err = (uint64_t)json_integer_value(json_array_get(at, 1));

        give_text(f, req, PBX_STREAM_STDOUT, at_out);
        give_text(f, req, PBX_STREAM_STDERR, at_err);
        if (!all && (f->got[PBX_STREAM_STDOUT] < at_out || f->got[PBX_STREAM_STDERR] < at_err))
            return; /* the text before it is on its way */
        if (req->on_display != NULL)
            req->on_display(json_array_get(f->parsed.outputs, f->shown), req->on_output_arg);
        f->shown++;
    }
    give_text(f, req, PBX_STREAM_STDOUT, UINT64_MAX);
    give_text(f, req, PBX_STREAM_STDERR, UINT64_MAX);
}

void pbx__run_interrupt(int status)
{
    struct pbx_proto_job m;
    struct pbx_error *err = NULL;

    pbx__proto_job_init(&m, PBX_JOB_INTERRUPT, 0);
    if (pbx__proto_send_job(status, &m, NULL, 0, &err) < 0)
        pbx_error_free(&err);
}

static void read_status(struct pbx_flight *f)
{
    struct pbx_proto_done d;
    int fds[2];
    int nfds;
    ssize_t n = pbx__proto_recv_done(f->status, &d, fds, &nfds);

    if (n == -EAGAIN)
        return;
    if (n <= 0) {
        f->cell_gone = true;
        for (int i = 0; i < nfds; i++)
            close(fds[i]);
        return;
    }
    if (d.kind == PBX_PROTO_STARTED) {
        f->started = true;
        f->started_ns = pbx_clock_ns(CLOCK_MONOTONIC);
        if (nfds == 2) {
            f->job_pidfd = fds[0];
            f->cell_pidfd = fds[1];
            nfds = 0;
        }
    } else if (d.kind == PBX_PROTO_DONE) {
        f->finished = true;
        f->done_ns = pbx_clock_ns(CLOCK_MONOTONIC);
        f->done = d;
    } else if (d.kind == PBX_PROTO_FAILED) {
        f->failed = true;
        f->done = d;
    }
    for (int i = 0; i < nfds; i++)
        close(fds[i]);
}

static void backstop_kill(struct pbx_flight *f, struct pbx_cgroup_cell *cell)
{
    f->backstop = true;
    if (f->job_pidfd >= 0)
        syscall(SYS_pidfd_send_signal, f->job_pidfd, SIGKILL, NULL, 0);
    if (f->cell_pidfd >= 0)
        syscall(SYS_pidfd_send_signal, f->cell_pidfd, SIGKILL, NULL, 0);
    if (cell != NULL)
        pbx_cgroup_cell_kill(cell);
}

void pbx__run_flight(struct pbx_flight *f, const struct pbx_exec_request *req,
                     struct pbx_cgroup_cell *cell)
{
    uint64_t begin = pbx_clock_ms(CLOCK_MONOTONIC);
    uint64_t deadline = begin + PBX_ENGINE_SETUP_TIMEOUT_MS;
    uint64_t drain_until = 0;

    for (;;) {
        struct pollfd p[6];
        bool text;
        int np = 0;
        uint64_t now = pbx_clock_ms(CLOCK_MONOTONIC);
        int timeout;
        bool ended = f->finished || f->failed || f->cell_gone;

        if (ended && f->out_r < 0 && f->err_r < 0 && f->meta_r < 0)
            break;
        if (ended && drain_until == 0)
            drain_until = now + PBX_ENGINE_DRAIN_MS;
        if (drain_until != 0 && now >= drain_until)
            break;
        if (!ended && f->started && deadline == begin + PBX_ENGINE_SETUP_TIMEOUT_MS)
            deadline = now + req->limits.wall_ms + GRACE_MS;
        if (!ended && now >= deadline) {
            backstop_kill(f, cell);
            deadline = now + GRACE_MS;
            if (f->backstop &&
                now >= begin + PBX_ENGINE_SETUP_TIMEOUT_MS + req->limits.wall_ms + 4 * GRACE_MS)
                break; /* nothing answers: give up on this cell */
        }
        timeout = (int)((drain_until ? drain_until : deadline) - now);
        if (f->out_r >= 0)
            p[np++] = (struct pollfd){.fd = f->out_r, .events = POLLIN};
        if (f->err_r >= 0)
            p[np++] = (struct pollfd){.fd = f->err_r, .events = POLLIN};
        if (f->meta_r >= 0)
            p[np++] = (struct pollfd){.fd = f->meta_r, .events = POLLIN};
        if (!ended)
            p[np++] = (struct pollfd){.fd = f->status, .events = POLLIN};
        if (!ended && !f->cancelled && req->cancel_fd >= 0)
            p[np++] = (struct pollfd){.fd = req->cancel_fd, .events = POLLIN};
        if (!ended && !f->stopped && f->stop_fd >= 0)
            p[np++] = (struct pollfd){.fd = f->stop_fd, .events = POLLIN};
        if (poll(p, (nfds_t)np, timeout > 0 ? timeout : 0) < 0 && errno != EINTR)
            break;
        text = false;
        for (int i = 0; i < np; i++) {
            if (p[i].revents == 0)
                continue;
            if (p[i].fd == f->out_r || p[i].fd == f->err_r || p[i].fd == f->meta_r) {
                text = true;
            } else if (p[i].fd == f->stop_fd && !f->stopped) {
                /* The engine stops every execution, a session's call too: kill the cell. */
                f->stopped = true;
                f->stop_sent_started = f->started;
                backstop_kill(f, cell);
            } else if (p[i].fd == req->cancel_fd && !f->cancelled) {
                f->cancelled = true;
                if (f->session)
                    pbx__run_interrupt(f->status);
                else
                    backstop_kill(f, cell);
            } else if (p[i].fd == f->status) {
                read_status(f);
            }
        }
        /* Stopped before the cell said STARTED: its pids are known now, kill it again. */
        if (f->stopped && f->started && !f->stop_sent_started) {
            f->stop_sent_started = true;
            backstop_kill(f, cell);
        }
        if (text) {
            /* All three, then the records: see give(). */
            uint64_t records = 0;

            if (f->out_r >= 0)
                drain(&f->out_r, &f->out, &f->got[PBX_STREAM_STDOUT]);
            if (f->err_r >= 0)
                drain(&f->err_r, &f->errb, &f->got[PBX_STREAM_STDERR]);
            if (f->meta_r >= 0)
                drain(&f->meta_r, &f->meta, &records);
            give(f, req, false);
            if (f->parsed.done && f->code_done_ns == 0)
                f->code_done_ns = pbx_clock_ns(CLOCK_MONOTONIC);
        }
    }
}

static json_t *error_object(const char *type, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static json_t *error_object(const char *type, const char *fmt, ...)
{
    va_list ap;
    char *msg;
    json_t *o;

    va_start(ap, fmt);
    msg = xvasprintf(fmt, ap);
    va_end(ap);
    o = json_pack("{s:s, s:s}", "type", type, "message", msg);
    free(msg);
    return o;
}

/*
 * Parse the output memfd's returned-file records into res->files: one per
 * name asked, or, for a glob, one per match (or a "not found" for none).
 * Files carry at most `room` bytes together: what the answer limit leaves.
 */
static void read_files(int fd, uint64_t len, uint32_t nrec, const struct pbx_exec_request *req,
                       uint64_t room, struct pbx_exec_result *res)
{
    struct stat st;
    const uint8_t *map = NULL;
    struct pbx_proto_reader rd = {0};

    /* pbx__proto_done_check() refused more; never size by the cell's count alone. */
    PBX_ASSERT(nrec <= req->limits.output_files + 1);
    res->files = xcalloc(nrec ? nrec : 1, sizeof(*res->files));
    res->nfiles = 0;
    if (nrec == 0 || len == 0 || fstat(fd, &st) < 0 || (uint64_t)st.st_size < len)
        return;
    map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED)
        return;
    rd.p = map;
    rd.left = len;
    for (uint32_t i = 0; i < nrec; i++) {
        struct pbx_file_out *f = &res->files[res->nfiles];
        uint32_t state;
        const uint8_t *name;
        uint32_t nlen;
        uint64_t size;
        const uint8_t *data;

        if (!pbx__proto_file_next(&rd, &state, &name, &nlen, &size, &data) ||
            !pbx_files_name_ok((const char *)name, nlen))
            break;
        f->name = xstrndup((const char *)name, nlen);
        if (state == PBX_FILE_OK && size <= req->limits.output_file_bytes && size <= room) {
            f->data = xmemdup(data, size);
            f->size = size;
            room -= size;
        } else if (state == PBX_FILE_OK && size <= req->limits.output_file_bytes) {
            f->error = pbx__proto_file_state_text(PBX_FILE_OVER_ANSWER);
        } else {
            f->error =
                pbx__proto_file_state_text(state == PBX_FILE_OK ? PBX_FILE_TOO_LARGE : state);
        }
        res->nfiles++;
    }
    munmap((void *)map, len);
}

void pbx__run_cell_memory(struct pbx_cgroup_cell *cell, struct pbx_cell_memory *mem)
{
    mem->oom_kills = pbx_cgroup_cell_oom_kills(cell);
    mem->peak = pbx_cgroup_cell_peak_memory(cell);
}

/* The error object `v` calls for, or NULL (a new reference). */
static json_t *verdict_error(const struct pbx_verdict *v, const struct pbx_meta *meta,
                             const struct pbx_exec_request *req)
{
    switch (v->error) {
    case PBX_VERDICT_ERROR_NONE:
        return NULL;
    case PBX_VERDICT_ERROR_REJECTED:
        return meta->reject_error ? json_incref(meta->reject_error)
                                  : error_object("SyntaxError", "the code was rejected");
    case PBX_VERDICT_ERROR_WALL:
        return error_object("TimeoutError", "the execution exceeded the wall time limit of %g s",
                            req->limits.wall_ms / 1000.0);
    case PBX_VERDICT_ERROR_CPU:
        return error_object("TimeoutError", "the execution exceeded the CPU time limit of %g s",
                            req->limits.cpu_ms / 1000.0);
    case PBX_VERDICT_ERROR_MEMORY:
        return error_object("MemoryError",
                            "the execution exceeded the memory limit of %" PRIu64 " MiB",
                            req->limits.memory_bytes >> 20);
    case PBX_VERDICT_ERROR_SIGNAL:
        return error_object("Killed", "the process was killed by %s", pbx_signal_name(v->signal));
    case PBX_VERDICT_ERROR_JOB:
        return json_incref(meta->error);
    case PBX_VERDICT_ERROR_SANDBOX:
        return error_object("SandboxError", "the sandbox could not start the job");
    case PBX_VERDICT_ERROR_EXIT:
        return error_object("ExitError", "the process exited with status %d", v->exit_code);
    }
    /* Not reached: the switch names every kind. */
    return error_object("SandboxError", "no error object for verdict %d", (int)v->error);
}

/*
 * Put the result together.  The verdict (status, exit code, signal) comes from
 * what the cell and this supervisor observed, through pbx__verdict_decide();
 * the job's records, which user code can write as well as the bootstrap, only
 * add the error's detail and main()'s value (docs/design/error-handling.md).
 */
void pbx__run_compose(struct pbx_flight *f, const struct pbx_exec_request *req,
                      const struct pbx_cell_memory *mem, int out_fd, struct pbx_exec_result *res)
{
    const struct pbx_proto_done *d = &f->done;
    struct pbx_verdict_facts facts;
    struct pbx_verdict v;
    struct pbx_meta meta;

    give(f, req, true);
    pbx__meta_end(&f->parsed);
    meta = f->parsed;
    memset(&f->parsed, 0, sizeof(f->parsed));
    res->stdout_truncated = f->out.truncated;
    res->stderr_truncated = f->errb.truncated;
    res->stdout_data = pbx_buf_steal(&f->out, &res->stdout_len);
    res->stderr_data = pbx_buf_steal(&f->errb, &res->stderr_len);
    res->duration_ms = (double)d->duration_ns / 1e6;
    res->cpu_ms = (double)d->cpu_us / 1000.0;
    res->max_rss_kb = d->max_rss_kb;
    res->minor_faults = d->minor_faults;
    res->prep_faults = d->prep_faults;

    memset(&facts, 0, sizeof(facts));
    facts.wait_status = d->wait_status;
    facts.timed_out = d->timed_out != 0;
    facts.backstop = f->backstop && !f->cancelled && !f->stopped;
    facts.cpu_us = d->cpu_us;
    facts.cpu_limit_ms = req->limits.cpu_ms;
    facts.oom_kills = mem->oom_kills;
    facts.mem_peak = mem->peak;
    facts.max_rss_kb = d->max_rss_kb;
    facts.mem_limit = req->limits.memory_bytes;
    facts.main_mode = req->main_mode;
    facts.check = meta.check;
    facts.job_error_type =
        meta.error ? json_string_value(json_object_get(meta.error, "type")) : NULL;
    facts.job_result = meta.result != NULL;
    pbx__verdict_decide(&facts, &v);

    res->status = v.status;
    res->has_exit_code = v.has_exit_code;
    res->exit_code = v.exit_code;
    res->signal = v.signal;
    res->error = verdict_error(&v, &meta, req);
    if (f->cancelled && !f->finished && !f->session) {
        /* Stopped on the caller's word, not by a limit: say so. */
        res->status = PBX_STATUS_KILLED;
        res->has_exit_code = false;
        res->signal = SIGKILL;
        json_decref(res->error);
        res->error = error_object("Cancelled", "the execution was cancelled by its caller");
    }
    if (f->stopped && !f->finished) {
        /* Stopped because the server stops, past its drain: say so. */
        res->status = PBX_STATUS_KILLED;
        res->has_exit_code = false;
        res->signal = SIGKILL;
        json_decref(res->error);
        res->error = error_object("Stopped", "the execution was stopped: the server is stopping "
                                             "and its drain time ran out");
    }
    /*
     * A value the bootstrap found pybox cannot carry is its error (and exit
     * status 1); one that fails to parse here under exit status 0 was written
     * by the code itself, and is dropped.
     */
    if (v.take_result)
        res->result = json_incref(meta.result);
    res->outputs = json_incref(meta.outputs);
    if (v.status == PBX_STATUS_REJECTED) {
        res->files = xcalloc(1, sizeof(*res->files));
    } else {
        /*
         * The answer limit holds stdout and stderr kept, the rich outputs and main()'s
         * value first, then the files.
         */
        uint64_t used = res->stdout_len + res->stderr_len + meta.outputs_bytes +
                        (v.take_result && meta.result_text_len > 0 ? meta.result_text_len : 0);
        uint64_t room = used < req->limits.answer_bytes ? req->limits.answer_bytes - used : 0;

        read_files(out_fd, f->finished ? d->output_len : 0, f->finished ? d->nfiles : 0, req, room,
                   res);
    }
    pbx__meta_release(&meta);
}

void pbx__run_flight_close(struct pbx_flight *f)
{
    int *fds[] = {&f->out_r, &f->err_r, &f->meta_r, &f->status, &f->job_pidfd, &f->cell_pidfd};

    for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++) {
        if (*fds[i] >= 0)
            close(*fds[i]);
        *fds[i] = -1;
    }
    pbx_buf_release(&f->out);
    pbx_buf_release(&f->errb);
    pbx_buf_release(&f->meta);
    pbx__meta_release(&f->parsed);
}

void pbx__run_flight_init(struct pbx_flight *f, const struct pbx_exec_request *req)
{
    struct pbx_result_max max;
    struct pbx_outputs_max om;

    memset(f, 0, sizeof(*f));
    f->out_r = f->err_r = f->meta_r = f->status = f->job_pidfd = f->cell_pidfd = -1;
    f->stop_fd = -1;
    pbx_buf_init(&f->out, req->limits.stdout_bytes);
    pbx_buf_init(&f->errb, req->limits.stderr_bytes);
    /* The outputs share main()'s room, as records; the bootstrap's markers do not. */
    pbx_limits_result_max(&req->limits, &max);
    pbx_limits_outputs_max(&req->limits, &om);
    pbx_buf_init(&f->meta, max.record + META_EXTRA + (size_t)om.count * META_MARKER);
    pbx__meta_begin(&f->parsed, &req->limits);
}

int pbx__run_pipe_pair(int *rd, int *wr, struct pbx_error **err)
{
    int p[2];

    if (pipe2(p, O_CLOEXEC) < 0)
        return pbx_error_set(err, errno, "pipe");
    if (fcntl(p[0], F_SETFL, O_NONBLOCK) < 0) {
        close(p[0]);
        close(p[1]);
        return pbx_error_set(err, errno, "fcntl");
    }
    *rd = p[0];
    *wr = p[1];
    return 0;
}

/*
 * The execution's times into res->timing: the supervisor's, and the cell's
 * when its report passes pbx__proto_done_times_ok() (a cell is not trusted).
 */
static void note_timing(const struct pbx_flight *f, struct pbx_exec_timing *t)
{
    const struct pbx_proto_done *d = &f->done;

    t->known = true;
    t->started_ns = f->started_ns;
    t->done_ns = f->done_ns;
    t->composed_ns = pbx_clock_ns(CLOCK_MONOTONIC);
    t->cell_known = f->finished && pbx__proto_done_times_ok(d, t->sent_ns, t->done_ns);
    if (t->cell_known) {
        t->go_ns = d->go_ns;
        t->handed_ns = d->handed_ns;
        t->reaped_ns = d->reaped_ns;
        t->collected_ns = d->collected_ns;
        /* Read here, so late when this thread was late: a split only when it falls within. */
        if (f->code_done_ns >= d->handed_ns && f->code_done_ns <= d->reaped_ns)
            t->code_done_ns = f->code_done_ns;
    }
}

/*
 * A warm execution, straight to its spare's job on `sock`: the flags, where the
 * code is (at `code_at` in the request memfd) and the extra modules, with the
 * REQUEST..META fds of `child`.
 */
static int send_go(int sock, const struct pbx_proto_job *job, const struct pbx_exec_request *req,
                   uint64_t code_at, const int *child, struct pbx_error **err)
{
    struct pbx_proto_go go;
    int r;

    memset(&go, 0, sizeof(go));
    go.flags = job->flags;
    go.wait_cell = job->ninput > 0;
    go.code_offset = code_at;
    go.code_len = req->code_len;
    if (req->extra_modules != NULL) /* pbx__run_check() bounded it */
        memcpy(go.extra_modules, req->extra_modules, strlen(req->extra_modules));
    r = pbx__proto_send(sock, &go, sizeof(go), child + PBX_FD_REQUEST,
                        PBX_FD_META - PBX_FD_REQUEST + 1);
    return r < 0 ? pbx_error_set(err, -r, "hand the execution to the spare's job") : 0;
}

/*
 * One attempt.  *lost is set when the zygote died before the cell could start
 * the job: nothing ran, so the caller may try again on a fresh zygote.
 */
static int execute_once(struct pbx_engine *e, const struct pbx_exec_request *req,
                        struct pbx_exec_result *res, bool *lost, struct pbx_error **err)
{
    struct pbx_exec_timing timing = {.begin_ns = pbx_clock_ns(CLOCK_MONOTONIC)};
    struct pbx_zygote *z = NULL;
    struct pbx_proto_writer w = {0};
    struct pbx_proto_job job;
    struct pbx_flight f;
    struct pbx_cgroup_cell *cell = NULL;
    int child[PBX_PROTO_MAX_FDS];
    int out_fd = -1;
    struct pbx_cell_memory mem = {0};
    bool mem_read = false;
    int nchild = PBX_FD_FIXED;
    struct pbx_spare spare;
    uint64_t code_at;
    int sv[2];
    int rc = -1;
    int r;

    memset(res, 0, sizeof(*res));
    if (pbx__run_check(req, err) < 0)
        return -1;
    pbx__run_flight_init(&f, req);
    for (int i = 0; i < PBX_PROTO_MAX_FDS; i++)
        child[i] = -1;

    pbx__proto_job_init(&job, PBX_JOB_RUN, atomic_fetch_add(&e->next, 1));
    job.limits = req->limits;
    job.flags = (req->main_mode ? PBX_JOB_MAIN : 0) |
                (req->allow_all_imports ? PBX_JOB_ALLOW_ALL : 0) |
                (e->have_memcg && e->have_pidscg ? 0 : PBX_JOB_NO_CGROUP) |
                (req->on_output != NULL || req->on_display != NULL ? PBX_JOB_LIVE : 0);
    job.ninput = (uint32_t)req->nfiles;
    job.nreturn = (uint32_t)req->nreturn;
    code_at = pbx__proto_request_code(&w, req->code, req->code_len);
    for (size_t i = 0; i < req->nfiles; i++)
        pbx__proto_request_input(&w, req->files[i].name, req->files[i].data, req->files[i].size);
    for (size_t i = 0; i < req->nreturn; i++)
        pbx__proto_request_return(&w, req->return_files[i]);
    pbx__proto_request_modules(&w, req->extra_modules);
    job.request_len = w.len;

    child[PBX_FD_REQUEST] = pbx__run_sealed_memfd("pybox-request", w.data, w.len, err);
    free(w.data);
    if (child[PBX_FD_REQUEST] < 0)
        goto out_close;
    child[PBX_FD_STDIN] =
        pbx__run_sealed_memfd("pybox-stdin", req->stdin_data, req->stdin_len, err);
    if (child[PBX_FD_STDIN] < 0)
        goto out_close;
    if (pbx__run_pipe_pair(&f.out_r, &child[PBX_FD_STDOUT], err) < 0 ||
        pbx__run_pipe_pair(&f.err_r, &child[PBX_FD_STDERR], err) < 0 ||
        pbx__run_pipe_pair(&f.meta_r, &child[PBX_FD_META], err) < 0)
        goto out_close;
    out_fd = memfd_create("pybox-output", MFD_CLOEXEC);
    if (out_fd < 0) {
        pbx_error_set(err, errno, "memfd_create");
        goto out_close;
    }
    child[PBX_FD_OUTPUT] = fcntl(out_fd, F_DUPFD_CLOEXEC, 0);
    if (child[PBX_FD_OUTPUT] < 0) {
        pbx_error_set(err, errno, "dup the output memfd");
        goto out_close;
    }
    if (pbx__pool_take(e, &req->limits, &spare)) {
        timing.taken_ns = pbx_clock_ns(CLOCK_MONOTONIC);
        timing.warm = true;
        f.status = spare.status;
        cell = spare.cell;
        z = spare.z;
        pbx__zygotes_count_exec(e, z);
        /* Taken before the send: the job may have it before sendmsg() returns here. */
        timing.sent_ns = pbx_clock_ns(CLOCK_MONOTONIC);
        r = send_go(spare.go, &job, req, code_at, child, err);
        close(spare.go);
        if (r < 0)
            goto out_close;
        /* Then its cell: it watches the job, and places the input files when there are. */
        job.kind = PBX_JOB_GO;
        job.sent_ns = timing.sent_ns;
        if (pbx__proto_send_job(f.status, &job,
                                (const int[2]){child[PBX_FD_REQUEST], child[PBX_FD_OUTPUT]}, 2,
                                err) < 0)
            goto out_close;
        goto sent;
    }
    /* A cell forked for it: a status socket of its own. */
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
        pbx_error_set(err, errno, "socketpair");
        goto out_close;
    }
    f.status = sv[0];
    child[PBX_FD_STATUS] = sv[1];
    z = pbx__zygotes_get(e, true, err);
    if (z == NULL)
        goto out_close;
    if (e->cg != NULL) {
        if (pbx__cells_get(e, job.id, &req->limits, &cell, err) < 0)
            goto out_close;
        r = pbx_cgroup_cell_procs_fds(cell, child + PBX_FD_FIXED, PBX_PROTO_MAX_CGROUP_FDS, err);
        if (r < 0)
            goto out_close;
        nchild += r;
        job.ncgroup_fds = (uint32_t)r;
    }
    timing.taken_ns = pbx_clock_ns(CLOCK_MONOTONIC);
    timing.sent_ns = timing.taken_ns;
    if (pbx__proto_send_job(z->ctrl, &job, child, nchild, err) < 0)
        goto out_close;
sent:
    for (int i = 0; i < nchild; i++) {
        close(child[i]);
        child[i] = -1;
    }

    f.stop_fd = e->stop_fd;
    pbx__run_flight(&f, req, cell);
    if (f.cell_pidfd >= 0 && f.finished && !f.failed) {
        /*
         * The cell reported: its job and everything the job started are dead and reaped,
         * so the OOM count and the peak are final (read before the reaper may pool the
         * cgroup, which resets them).  Its own exit goes on without us.
         */
        pbx__run_cell_memory(cell, &mem);
        mem_read = true;
        if (pbx__cells_reap_later(e, f.cell_pidfd, cell)) {
            f.cell_pidfd = -1;
            cell = NULL;
        }
    }
    if (f.cell_pidfd >= 0) {
        /* Let the cell finish exiting, so its cgroups are empty when we remove them. */
        struct pollfd p = {.fd = f.cell_pidfd, .events = POLLIN};

        while (poll(&p, 1, PBX_ENGINE_DRAIN_MS) < 0 && errno == EINTR)
            ;
    }
    if (!mem_read)
        pbx__run_cell_memory(cell, &mem);
    if (!f.started && !f.finished && !f.failed && !f.cell_gone) {
        /*
         * Given up without a word from the cell: the job message, with the
         * cgroup.procs fds in it, may still wait in a stalled zygote's queue.
         * A cell forked from it later would join whatever its cgroups have
         * become, so they are removed (the join then fails), never pooled.
         */
        pbx__cells_drop(cell);
        cell = NULL;
    }
    if (f.failed) {
        pbx__proto_failed_error(&f.done, err);
    } else if (!f.started && !f.finished && pbx__zygotes_dying(z)) {
        *lost = true;
        pbx_error_set(err, PBX_E_ENGINE, "the zygote died before the execution started");
    } else if (!f.finished && mem.oom_kills == 0 && !f.cancelled && !f.stopped) {
        pbx_error_set(err, PBX_E_ENGINE, "the cell ended without a report");
    } else if (f.finished &&
               pbx__proto_done_check(&f.done, req->limits.output_files + 1, err) < 0) {
        /* A report no cell of ours writes: nothing of it is read. */
        pbx_log(PBX_LOG_WARN, "%s", (*err)->msg);
    } else {
        if (!f.finished) /* the OOM killer took the cell itself, or a cancel or stop did */
            f.done.wait_status = SIGKILL;
        pbx__run_compose(&f, req, &mem, out_fd, res);
        note_timing(&f, &timing);
        rc = 0;
    }

out_close:
    for (int i = 0; i < PBX_PROTO_MAX_FDS; i++) {
        if (child[i] >= 0)
            close(child[i]);
    }
    pbx__run_flight_close(&f);
    pbx__cells_put(e, cell);
    if (out_fd >= 0)
        close(out_fd);
    pbx__zygotes_put(e, z);
    if (timing.warm)
        pbx__pool_served(e); /* the refill may go on */
    if (rc == 0) {
        timing.end_ns = pbx_clock_ns(CLOCK_MONOTONIC);
        res->timing = timing;
    }
    return rc;
}

int pbx_engine_execute(struct pbx_engine *e, const struct pbx_exec_request *req,
                       struct pbx_exec_result *res, struct pbx_error **err)
{
    bool lost = false;
    int rc = execute_once(e, req, res, &lost, err);

    /* Nothing of it ran: once more, on the zygote that replaces the dead one. */
    if (rc < 0 && lost) {
        pbx_log(PBX_LOG_WARN, "%s: trying again", (*err)->msg);
        pbx_error_free(err);
        lost = false;
        rc = execute_once(e, req, res, &lost, err);
    }
    return rc;
}
