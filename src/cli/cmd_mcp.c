/*
 * pybox mcp: the Model Context Protocol over stdio (src/mcp/ speaks the
 * protocol; this file carries it and is its backend, through libpybox: the
 * local engine, or a server with --server).
 *
 * Theory of operation.  Threads and descriptors:
 *
 *   fd `out`     the original stdout, duplicated O_CLOEXEC before anything
 *                runs; only JSON-RPC lines are written there, one write per
 *                message under `out_lock`.  fd 1 itself is then made a copy
 *                of stderr, so whatever else writes to "stdout" (a library,
 *                the engine's zygote, which inherits fd 1) lands on stderr
 *                and never in the protocol stream.  User code's output is
 *                captured by the sandbox and comes back inside results.
 *   main thread  reads stdin a line at a time (capped), answers everything
 *                but tools/call at once (ping and notifications/cancelled
 *                while calls run), and queues tools/call for the workers.
 *   workers      WORKERS threads run the queued calls (libpybox is
 *                thread-safe) and write their responses.
 *   tickers      src/mcp/ starts one per call that asked progress.
 *
 * Cancels.  notifications/cancelled fires the call's hook (src/mcp/), set
 * while the code runs.  A one-shot run_python is one pybox_run() whose
 * request carries a struct pybox_cancel of its own, which the hook fires:
 * locally the engine kills the code and reaps it before pybox_run()
 * returns; on a server libpybox (which streams a cancellable run) closes the
 * run's connection, on which the server kills it.  A call in a
 * named session is interrupted instead (pybox_session_interrupt()): its
 * state lives on.  A local one-shot whose files are in directories, which
 * pybox_run() does not take, runs in a session of its own opened and closed
 * around it, interrupted the same way; a server's refuses them.
 * At the end of stdin the calls already read are run and answered, the
 * workers joined, every session this process opened is closed and the
 * client freed (the local engine stops with it), so no execution and no
 * session outlives `pybox mcp`.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <pybox/pybox.h>

#include "cli/cli.h"
#include "common/error.h"
#include "common/log.h"
#include "common/xalloc.h"
#include "mcp/mcp.h"
#include "policy/policy.h"
#include "common/banned.h"

#define WORKERS   4   /* tool calls run at once */
#define QUEUE_MAX 256 /* calls waiting for a worker */

/* A session this process opened: looked up by id, freed when the last user lets go. */
struct ses {
    struct ses *next;        /* in state.sessions */
    char *id;                /* pybox_session_id() copied */
    struct pybox_session *s; /* NULL once closed */
    pthread_mutex_t call;    /* held by whoever uses s (one call at a time) */
    unsigned refs;           /* the list's one, and one per user; under state.lock */
    bool throwaway;          /* a one-shot run's own */
};

struct job {
    struct job *next;
    struct pbx_mcp_call *call;
};

static struct {
    struct pybox_client *client;
    double timeout_s;
    unsigned memory_mb;
    pthread_mutex_t lock; /* guards sessions, queue, nqueued, closing */
    pthread_cond_t wake;
    struct ses *sessions;
    struct job *queue, **tail;
    size_t nqueued;
    bool closing;
    struct pbx_mcp *mcp;
    int out;
    pthread_mutex_t out_lock;
} state = {
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .wake = PTHREAD_COND_INITIALIZER,
    .out_lock = PTHREAD_MUTEX_INITIALIZER,
    .out = -1,
};

static void help(void)
{
    printf("usage: pybox mcp [OPTIONS]\n\n"
           "Serve the Model Context Protocol over stdio: an MCP client (a desktop assistant,\n"
           "a coding agent) starts `pybox mcp` and gets the tools run_python, create_session,\n"
           "write_files, read_file, list_files and close_session. One JSON-RPC message per\n"
           "line on stdin and stdout; nothing else is ever written to stdout; logs go to\n"
           "stderr. Runs the local engine, or forwards every call to a server with --server.\n"
           "Exits when stdin closes, closing every session it opened.\n\n"
           "Options:\n"
           "  --server URL          run on a pybox server (else env PYBOX_SERVER; else locally)\n"
           "  --api-key KEY         the server's API key (else env PYBOX_API_KEY)\n"
           "  --timeout SECONDS     a run's default wall-clock limit (default 10)\n"
           "  --memory MB           the memory limit of each run and session\n"
           "  --preload             local mode: import numpy and PIL before the first run\n"
           "  -h, --help            show this help\n\n"
           "Exit status: 0 at the end of stdin; 2 on bad usage; 125 when the client cannot\n"
           "be made.\n");
}

/* ---- Writing ---- */

static void send_line(const char *json, size_t len, void *arg)
{
    char *line = xmalloc(len + 1);
    size_t off = 0;

    memcpy(line, json, len);
    line[len] = '\n';
    pthread_mutex_lock(&state.out_lock);
    while (off < len + 1) {
        ssize_t n = write(state.out, line + off, len + 1 - off);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        off += (size_t)n;
    }
    pthread_mutex_unlock(&state.out_lock);
    free(line);
}

static void send_reply(char *reply)
{
    if (reply != NULL)
        send_line(reply, strlen(reply), NULL);
    free(reply);
}

/* ---- The backend: libpybox ---- */

static int set_err(struct pbx_error **err, struct pybox_error *perr, const char *what)
{
    enum pybox_code code = pybox_error_code(perr);
    int e = code == PYBOX_E_NOT_FOUND || code == PYBOX_E_GONE ? PBX_E_NOTFOUND
            : code == PYBOX_E_BUSY                            ? PBX_E_BUSY
            : code == PYBOX_E_INVALID                         ? PBX_E_INVAL
            : code == PYBOX_E_CANCELLED                       ? PBX_E_GONE
                                                              : PBX_E_ENGINE;
    int rc = pbx_error_set(err, e, "%s: %s", what, pybox_error_message(perr));

    pybox_error_free(perr);
    return rc;
}

static struct ses *ses_get(const char *id)
{
    struct ses *s;

    pthread_mutex_lock(&state.lock);
    for (s = state.sessions; s != NULL; s = s->next) {
        if (!s->throwaway && strcmp(s->id, id) == 0) {
            s->refs++;
            break;
        }
    }
    pthread_mutex_unlock(&state.lock);
    return s;
}

static void ses_put(struct ses *s)
{
    bool last;

    pthread_mutex_lock(&state.lock);
    last = --s->refs == 0;
    pthread_mutex_unlock(&state.lock);
    if (!last)
        return;
    PBX_ASSERT(s->s == NULL);
    pthread_mutex_destroy(&s->call);
    free(s->id);
    free(s);
}

/* Take `s` out of the list (the list's reference goes to the caller); false if it was not in. */
static bool ses_unlink(struct ses *s)
{
    struct ses **pp;
    bool found = false;

    pthread_mutex_lock(&state.lock);
    for (pp = &state.sessions; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == s) {
            *pp = s->next;
            found = true;
            break;
        }
    }
    pthread_mutex_unlock(&state.lock);
    return found;
}

/* Close the session (the caller holds a reference and not s->call). */
static void ses_close(struct ses *s)
{
    struct pybox_error *perr = NULL;

    pthread_mutex_lock(&s->call);
    if (s->s != NULL && pybox_session_close(s->s, &perr) != PYBOX_OK) {
        pbx_log(PBX_LOG_WARN, "closing session %s: %s", s->id, pybox_error_message(perr));
        pybox_error_free(perr);
    }
    s->s = NULL;
    pthread_mutex_unlock(&s->call);
}

static int ses_open(unsigned ttl_s, bool throwaway, struct ses **out, struct pbx_error **err)
{
    struct pybox_session_options opts;
    struct pybox_error *perr = NULL;
    struct pybox_session *ps = NULL;
    struct ses *s;

    pybox_session_options_init(&opts);
    opts.timeout_s = state.timeout_s;
    opts.memory_mb = state.memory_mb;
    opts.idle_ttl_s = ttl_s;
    if (pybox_session_open(state.client, &opts, &ps, &perr) != PYBOX_OK)
        return set_err(err, perr, "opening a session");
    s = xcalloc(1, sizeof(*s));
    s->id = xstrdup(pybox_session_id(ps));
    s->s = ps;
    s->throwaway = throwaway;
    s->refs = 2;
    pthread_mutex_init(&s->call, NULL);
    pthread_mutex_lock(&state.lock);
    s->next = state.sessions;
    state.sessions = s;
    pthread_mutex_unlock(&state.lock);
    *out = s;
    return 0;
}

static int put_files(struct ses *s, const struct pbx_mcp_file *files, size_t n,
                     struct pbx_error **err)
{
    for (size_t i = 0; i < n; i++) {
        struct pybox_error *perr = NULL;

        if (pybox_session_put_file(s->s, files[i].path, files[i].data, files[i].size, &perr) !=
            PYBOX_OK)
            return set_err(err, perr, files[i].path);
    }
    return 0;
}

/*
 * The limits and modules a server's GET /v1/info names for this caller:
 * false when it could not be asked (the descriptions then say less).
 */
static bool describe_remote(struct pbx_mcp_limits *l)
{
    struct pybox_error *perr = NULL;
    const char **names = NULL;
    char *text = NULL;
    json_t *info, *lim, *mods, *m;
    size_t i;

    if (pybox_client_info(state.client, &text, &perr) != PYBOX_OK) {
        pbx_log(PBX_LOG_WARN, "the server's limits are not known: %s", pybox_error_message(perr));
        pybox_error_free(perr);
        return false;
    }
    info = json_loads(text, 0, NULL);
    pybox_free(text);
    lim = json_object_get(info, "limits");
    if (state.timeout_s <= 0 && json_is_number(json_object_get(lim, "default_timeout_s")))
        l->timeout_s = json_number_value(json_object_get(lim, "default_timeout_s"));
    if (json_is_number(json_object_get(lim, "timeout_s")))
        l->max_timeout_s = json_number_value(json_object_get(lim, "timeout_s"));
    if (state.memory_mb == 0 && json_is_integer(json_object_get(lim, "default_memory_mb")))
        l->memory_mb = (unsigned)json_integer_value(json_object_get(lim, "default_memory_mb"));
    l->network = json_is_true(json_object_get(info, "network"));
    l->sessions =
        json_integer_value(json_object_get(json_object_get(info, "sessions"), "max_open")) > 0;
    mods = json_object_get(info, "allowed_modules");
    if (json_is_true(json_object_get(info, "all_modules"))) {
        snprintf(l->modules, sizeof(l->modules), "*");
    } else if (json_is_array(mods)) {
        names = xcalloc(json_array_size(mods) + 1, sizeof(*names));
        json_array_foreach(mods, i, m) names[i] = json_string_value(m) ? json_string_value(m) : "";
        pbx_mcp_limits_modules(l, names, NULL);
        free(names);
    }
    json_decref(info);
    return true;
}

static void describe(void *arg, struct pbx_mcp_limits *l)
{
    (void)arg;
    l->timeout_s = state.timeout_s > 0 ? state.timeout_s : 10;
    l->memory_mb = state.memory_mb;
    l->network = false;
    l->sessions = true;
    if (pybox_client_is_remote(state.client))
        describe_remote(l);
    else
        pbx_mcp_limits_modules(l, pbx_policy_default_modules, NULL);
}

static void on_event(enum pybox_event_kind kind, const char *data, size_t len, void *arg)
{
    const struct pbx_mcp_run *run = arg;

    if (run->alive != NULL)
        run->alive(run->alive_arg);
}

static void interrupt_hook(void *arg)
{
    struct ses *s = arg;
    struct pybox_error *perr = NULL;

    /* s->s stays valid: the running call holds s->call, and close takes it first. */
    if (pybox_session_interrupt(s->s, NULL, &perr) != PYBOX_OK) {
        pbx_log(PBX_LOG_WARN, "interrupting session %s: %s", s->id, pybox_error_message(perr));
        pybox_error_free(perr);
    }
}

/* notifications/cancelled, from the reading thread: fire the one-shot run's cancel. */
static void cancel_hook(void *arg)
{
    pybox_cancel_fire(arg);
}

/* Whether every file of the run has a flat name, which pybox_run() takes. */
static bool flat_files(const struct pbx_mcp_run *run)
{
    for (size_t i = 0; i < run->nfiles; i++) {
        if (strchr(run->files[i].path, '/') != NULL)
            return false;
    }
    return true;
}

/*
 * A one-shot run: one pybox_run() with a cancel of its own, which the call's
 * cancel hook fires.  Locally the engine then kills the code; on a server
 * libpybox streams the run and closes its connection, on which the server
 * kills it (and it costs one request of the caller's rate limit, where a
 * throwaway session would cost three).
 */
static int run_once(const struct pbx_mcp_run *run, char **result, struct pbx_error **err)
{
    bool remote = pybox_client_is_remote(state.client);
    struct pybox_cancel *cancel = NULL;
    struct pybox_error *perr = NULL;
    struct pybox_result *res = NULL;
    struct pybox_exec *exec;
    int rc = 0;

    if (pybox_cancel_new(&cancel, &perr) != PYBOX_OK)
        return set_err(err, perr, "running the code");
    exec = pybox_exec_new();
    PBX_ASSERT(exec != NULL);
    pybox_exec_set_code(exec, run->code, run->code_len);
    if (run->stdin_data != NULL)
        pybox_exec_set_stdin(exec, run->stdin_data, run->stdin_len);
    for (size_t i = 0; rc == 0 && i < run->nfiles; i++) {
        if (pybox_exec_add_file(exec, run->files[i].path, run->files[i].data, run->files[i].size) ==
            PYBOX_OK)
            continue;
        if (remote)
            rc = pbx_error_set(err, PBX_E_INVAL,
                               "files: `%s` is not a flat file name (one-shot runs on a server "
                               "take flat names; use a session for directories)",
                               run->files[i].path);
        else
            rc = pbx_error_set(err, PBX_E_INVAL, "files: `%s` is not a file name of /work",
                               run->files[i].path);
    }
    for (size_t i = 0; rc == 0 && i < run->nreturns; i++) {
        if (pybox_exec_add_return(exec, run->returns[i]) != PYBOX_OK)
            rc = pbx_error_set(err, PBX_E_INVAL, "return_files: `%s` is not a file name or glob",
                               run->returns[i]);
    }
    if (run->timeout_s > 0)
        pybox_exec_set_timeout(exec, run->timeout_s);
    pybox_exec_set_event_callback(exec, on_event, (void *)run);
    pybox_exec_set_cancel(exec, cancel);
    if (rc == 0 && !pbx_mcp_cancel_set_hook(run->cancel, cancel_hook, cancel))
        rc = pbx_error_set(err, PBX_E_GONE, "cancelled");
    if (rc == 0) {
        if (pybox_run(state.client, exec, &res, &perr) != PYBOX_OK)
            rc = set_err(err, perr, "running the code");
        /* After this the hook is never called again, so the cancel may go. */
        pbx_mcp_cancel_set_hook(run->cancel, NULL, NULL);
    }
    if (rc == 0) {
        *result = xstrdup(pybox_result_to_json(res));
        pybox_result_free(res);
    }
    pybox_exec_free(exec);
    pybox_cancel_free(cancel);
    return rc;
}

static int backend_run(void *arg, void *ctx, const struct pbx_mcp_run *run, char **result,
                       struct pbx_error **err)
{
    struct pybox_error *perr = NULL;
    struct pybox_result *res = NULL;
    struct pybox_exec *exec;
    struct ses *s = NULL;
    int rc = 0;

    (void)ctx;
    if (pbx_mcp_cancel_requested(run->cancel))
        return pbx_error_set(err, PBX_E_GONE, "cancelled");
    if (run->session_id != NULL) {
        s = ses_get(run->session_id);
        if (s == NULL)
            return pbx_error_set(err, PBX_E_NOTFOUND,
                                 "no session `%s` (closed, expired or never made)",
                                 run->session_id);
    } else if (pybox_client_is_remote(state.client) || flat_files(run)) {
        return run_once(run, result, err);
    } else {
        /* A file in a directory: pybox_run() takes flat names, a session any path. */
        rc = ses_open(0, true, &s, err);
        if (rc < 0)
            return rc;
    }
    exec = pybox_exec_new();
    PBX_ASSERT(exec != NULL);
    pybox_exec_set_code(exec, run->code, run->code_len);
    if (run->stdin_data != NULL)
        pybox_exec_set_stdin(exec, run->stdin_data, run->stdin_len);
    for (size_t i = 0; i < run->nreturns; i++) {
        if (pybox_exec_add_return(exec, run->returns[i]) != PYBOX_OK) {
            rc = pbx_error_set(err, PBX_E_INVAL,
                               "return_files: `%s` is not a file name or glob of "
                               "/work",
                               run->returns[i]);
            break;
        }
    }
    if (run->timeout_s > 0)
        pybox_exec_set_timeout(exec, run->timeout_s);
    pybox_exec_set_event_callback(exec, on_event, (void *)run);

    pthread_mutex_lock(&s->call);
    if (rc == 0 && s->s == NULL)
        rc = pbx_error_set(err, PBX_E_NOTFOUND, "the session `%s` was closed", s->id);
    if (rc == 0)
        rc = put_files(s, run->files, run->nfiles, err);
    if (rc == 0 && !pbx_mcp_cancel_set_hook(run->cancel, interrupt_hook, s))
        rc = pbx_error_set(err, PBX_E_GONE, "cancelled");
    if (rc == 0) {
        if (pybox_session_run(s->s, exec, &res, &perr) != PYBOX_OK)
            rc = set_err(err, perr, "running the code");
        pbx_mcp_cancel_set_hook(run->cancel, NULL, NULL);
    }
    if (rc == 0 && pybox_session_dead_reason(s->s) != NULL && !s->throwaway)
        pbx_log(PBX_LOG_INFO, "session %s ended: %s", s->id, pybox_session_dead_reason(s->s));
    pthread_mutex_unlock(&s->call);
    if (rc == 0) {
        *result = xstrdup(pybox_result_to_json(res));
        pybox_result_free(res);
    }
    pybox_exec_free(exec);
    if (s->throwaway && ses_unlink(s)) {
        ses_close(s);
        ses_put(s);
    }
    ses_put(s);
    return rc;
}

static int backend_session_create(void *arg, void *ctx, unsigned ttl_s,
                                  const struct pbx_mcp_file *files, size_t nfiles, char **info,
                                  struct pbx_error **err)
{
    struct ses *s = NULL;
    char expires[64] = "null";
    int rc;

    (void)ctx;
    rc = ses_open(ttl_s, false, &s, err);
    if (rc < 0)
        return rc;
    pthread_mutex_lock(&s->call);
    rc = put_files(s, files, nfiles, err);
    pthread_mutex_unlock(&s->call);
    if (rc < 0) {
        if (ses_unlink(s)) {
            ses_close(s);
            ses_put(s);
        }
        ses_put(s);
        return rc;
    }
    if (ttl_s > 0) {
        time_t t = time(NULL) + ttl_s;
        struct tm tm;

        gmtime_r(&t, &tm);
        strftime(expires, sizeof(expires), "\"%Y-%m-%dT%H:%M:%SZ\"", &tm);
    }
    *info = xasprintf("{\"session_id\":\"%s\",\"expires_at\":%s,\"limits\":{\"timeout_s\":%g,"
                      "\"memory_mb\":%u,\"idle_ttl_s\":%u}}",
                      s->id, expires, state.timeout_s > 0 ? state.timeout_s : 10, state.memory_mb,
                      ttl_s);
    ses_put(s);
    return 0;
}

static int backend_session_close(void *arg, void *ctx, const char *id, struct pbx_error **err)
{
    struct ses *s = ses_get(id);

    (void)ctx;
    if (s == NULL)
        return pbx_error_set(err, PBX_E_NOTFOUND, "no session `%s` (closed, expired or never made)",
                             id);
    if (ses_unlink(s)) {
        ses_close(s);
        ses_put(s);
    }
    ses_put(s);
    return 0;
}

/* Take the session's call lock, or fail; on success the caller unlocks and puts. */
static struct ses *ses_use(const char *id, struct pbx_error **err)
{
    struct ses *s = ses_get(id);

    if (s == NULL) {
        pbx_error_set(err, PBX_E_NOTFOUND, "no session `%s` (closed, expired or never made)", id);
        return NULL;
    }
    pthread_mutex_lock(&s->call);
    if (s->s == NULL) {
        pthread_mutex_unlock(&s->call);
        ses_put(s);
        pbx_error_set(err, PBX_E_NOTFOUND, "the session `%s` was closed", id);
        return NULL;
    }
    return s;
}

static void ses_done(struct ses *s)
{
    pthread_mutex_unlock(&s->call);
    ses_put(s);
}

static int backend_files_write(void *arg, void *ctx, const char *id,
                               const struct pbx_mcp_file *files, size_t nfiles,
                               struct pbx_error **err)
{
    struct ses *s = ses_use(id, err);
    int rc;

    (void)ctx;
    if (s == NULL)
        return -1;
    rc = put_files(s, files, nfiles, err);
    ses_done(s);
    return rc;
}

static int backend_file_read(void *arg, void *ctx, const char *id, const char *path, void **data,
                             size_t *size, struct pbx_error **err)
{
    struct pybox_error *perr = NULL;
    struct ses *s = ses_use(id, err);
    void *bytes = NULL;
    int rc = 0;

    (void)ctx;
    if (s == NULL)
        return -1;
    if (pybox_session_get_file(s->s, path, &bytes, size, &perr) != PYBOX_OK)
        rc = set_err(err, perr, path);
    ses_done(s);
    if (rc == 0) {
        *data = xmemdup(bytes, *size + 1);
        pybox_free(bytes);
    }
    return rc;
}

static int backend_files_list(void *arg, void *ctx, const char *id, char **json,
                              struct pbx_error **err)
{
    struct pybox_error *perr = NULL;
    struct ses *s = ses_use(id, err);
    char *text = NULL;
    int rc = 0;

    (void)ctx;
    if (s == NULL)
        return -1;
    if (pybox_session_list_files(s->s, &text, &perr) != PYBOX_OK)
        rc = set_err(err, perr, "listing the files");
    ses_done(s);
    if (rc == 0) {
        *json = xstrdup(text);
        pybox_free(text);
    }
    return rc;
}

/* ---- Workers ---- */

static void *worker_main(void *arg)
{
    for (;;) {
        struct job *j;

        pthread_mutex_lock(&state.lock);
        while (state.queue == NULL && !state.closing)
            pthread_cond_wait(&state.wake, &state.lock);
        j = state.queue;
        if (j == NULL) {
            pthread_mutex_unlock(&state.lock);
            return NULL;
        }
        state.queue = j->next;
        if (state.queue == NULL)
            state.tail = &state.queue;
        state.nqueued--;
        pthread_mutex_unlock(&state.lock);
        send_reply(pbx_mcp_call_run(state.mcp, j->call, send_line, NULL));
        free(j);
    }
}

static bool enqueue(struct pbx_mcp_call *call)
{
    struct job *j;

    pthread_mutex_lock(&state.lock);
    if (state.nqueued >= QUEUE_MAX) {
        pthread_mutex_unlock(&state.lock);
        return false;
    }
    j = xcalloc(1, sizeof(*j));
    j->call = call;
    *state.tail = j;
    state.tail = &j->next;
    state.nqueued++;
    pthread_cond_signal(&state.wake);
    pthread_mutex_unlock(&state.lock);
    return true;
}

/* ---- Reading ---- */

static void serve(void)
{
    size_t cap = 65536, len = 0, max = PBX_MCP_MAX_MESSAGE;
    char *buf = xmalloc(cap);
    bool skipping = false, eof = false;

    while (!eof) {
        char *nl;
        ssize_t n;

        if (cap - len < 65536 && cap < max + 65536) {
            cap *= 2;
            buf = xrealloc(buf, cap);
        }
        n = read(STDIN_FILENO, buf + len, cap - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            eof = true;
            if (len == 0 || skipping)
                break;
            buf[len++] = '\n'; /* a last line without its newline */
        } else {
            len += (size_t)n;
        }
        while ((nl = memchr(buf, '\n', len)) != NULL) {
            size_t line = (size_t)(nl - buf);

            if (!skipping && line > 0 && !(line == 1 && buf[0] == '\r')) {
                struct pbx_mcp_call *call;
                char *reply = NULL;

                call = pbx_mcp_accept(state.mcp, buf, line, &reply);
                if (call != NULL && !enqueue(call)) {
                    pbx_mcp_call_free(state.mcp, call);
                    reply = xstrdup("{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32603,"
                                    "\"message\":\"too many calls in progress\"}}");
                }
                send_reply(reply);
            }
            skipping = false;
            memmove(buf, nl + 1, len - line - 1);
            len -= line + 1;
        }
        if (len > max) {
            /* A line over the cap: refuse it, drop it up to its newline. */
            if (!skipping)
                send_reply(xstrdup("{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32600,"
                                   "\"message\":\"message too large\"}}"));
            skipping = true;
            len = 0;
        }
    }
    free(buf);
}

int pbx_cmd_mcp(int argc, char **argv)
{
    enum { OPT_SERVER = 256, OPT_API_KEY, OPT_TIMEOUT, OPT_MEMORY, OPT_PRELOAD };
    static const struct option opts[] = {
        {"server", required_argument, NULL, OPT_SERVER},
        {"api-key", required_argument, NULL, OPT_API_KEY},
        {"timeout", required_argument, NULL, OPT_TIMEOUT},
        {"memory", required_argument, NULL, OPT_MEMORY},
        {"preload", no_argument, NULL, OPT_PRELOAD},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct pbx_mcp_backend backend = {
        .describe = describe,
        .run = backend_run,
        .session_create = backend_session_create,
        .session_close = backend_session_close,
        .files_write = backend_files_write,
        .file_read = backend_file_read,
        .files_list = backend_files_list,
    };
    struct pbx_mcp_options mopts = {.server_name = "pybox", .server_version = pybox_version()};
    const char *server = NULL, *api_key = NULL;
    struct pybox_error *perr = NULL;
    struct pybox_config cfg;
    pthread_t workers[WORKERS];
    bool preload = false;
    char exe[4096];
    struct ses *s;
    ssize_t n;
    char *end;
    int c;

    pybox_config_init(&cfg);
    n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n > 0) {
        exe[n] = '\0';
        cfg.pybox_bin = exe; /* local mode's zygote is this very binary */
    }
    if (pybox_config_from_env(&cfg, &perr) != PYBOX_OK)
        pbx_usage_error("mcp", "%s", pybox_error_message(perr));
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case OPT_SERVER:
            server = optarg;
            break;
        case OPT_API_KEY:
            api_key = optarg;
            break;
        case OPT_TIMEOUT:
            errno = 0;
            cfg.timeout_s = strtod(optarg, &end);
            if (errno != 0 || *end != '\0' || end == optarg || !(cfg.timeout_s > 0) ||
                cfg.timeout_s > 86400)
                pbx_usage_error("mcp", "--timeout: `%s` is not a number of seconds", optarg);
            break;
        case OPT_MEMORY:
            errno = 0;
            cfg.memory_mb = (unsigned)strtoul(optarg, &end, 10);
            if (errno != 0 || *end != '\0' || end == optarg || cfg.memory_mb < 16 ||
                cfg.memory_mb > 65536)
                pbx_usage_error("mcp", "--memory: `%s` is not 16 to 65536 MiB", optarg);
            break;
        case OPT_PRELOAD:
            preload = true;
            break;
        case 'h':
            help();
            return 0;
        default:
            pbx_usage_error("mcp", "bad option");
        }
    }
    if (optind < argc)
        pbx_usage_error("mcp", "unexpected argument `%s`", argv[optind]);
    if (server != NULL)
        cfg.server = server;
    if (api_key != NULL)
        cfg.api_key = api_key;
    cfg.preload = preload;

    /* The protocol's stdout, then fd 1 pointed at stderr (see the top of this file). */
    fflush(stdout);
    state.out = fcntl(STDOUT_FILENO, F_DUPFD_CLOEXEC, 3);
    if (state.out < 0 || dup2(STDERR_FILENO, STDOUT_FILENO) < 0)
        pbx_die(PBX_EXIT_FAILURE, "mcp: stdout: %s", strerror(errno));
    signal(SIGPIPE, SIG_IGN);

    if (pybox_client_new(&cfg, &state.client, &perr) != PYBOX_OK)
        pbx_die(PBX_EXIT_FAILURE, "mcp: %s", pybox_error_message(perr));
    state.timeout_s = cfg.timeout_s;
    state.memory_mb = cfg.memory_mb;
    state.tail = &state.queue;
    state.mcp = pbx_mcp_new(&backend, &mopts);
    for (int i = 0; i < WORKERS; i++)
        PBX_ASSERT(pthread_create(&workers[i], NULL, worker_main, NULL) == 0);
    pbx_log(PBX_LOG_INFO, "mcp: serving on stdio (%s)",
            pybox_client_is_remote(state.client) ? "remote" : "local engine");

    serve();

    /*
     * The end of stdin: the calls read before it still run and are answered
     * (each within its timeout), then every session is closed.
     */
    pthread_mutex_lock(&state.lock);
    state.closing = true;
    pthread_cond_broadcast(&state.wake);
    pthread_mutex_unlock(&state.lock);
    for (int i = 0; i < WORKERS; i++)
        pthread_join(workers[i], NULL);
    pthread_mutex_lock(&state.lock);
    while ((s = state.sessions) != NULL) {
        state.sessions = s->next;
        pthread_mutex_unlock(&state.lock);
        ses_close(s);
        ses_put(s);
        pthread_mutex_lock(&state.lock);
    }
    pthread_mutex_unlock(&state.lock);
    pbx_mcp_free(state.mcp);
    pybox_client_free(state.client);
    close(state.out);
    return 0;
}
