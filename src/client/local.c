/*
 * libpybox, local mode: the sandbox engine inside the calling process.
 *
 * Theory of operation: the first pybox_run() on a local client starts an
 * engine (src/engine/engine.c), which clones a jail and execs the pybox
 * binary in it as the zygote.  The host program is not pybox, so the binary
 * is named by the client (its config, PYBOX_BIN, or the installed one) rather
 * than taken from /proc/self/exe.  The engine is a child process tree of the
 * host (the zygote dies with the host through PR_SET_PDEATHSIG), shared by
 * every thread that runs on the client, and stopped by pybox_client_free().
 * It is started from a keeper thread of the client's own (see keeper_main()).
 *
 * The request gets the limits the server gives an anonymous caller: pybox's
 * defaults, the timeout setting both the wall and the CPU limit, as
 * `POST /v1/execute` does.  A request the engine refuses fails with the code
 * and type the error table gives its internal code, as the server's answer
 * to the same request does.  The engine's result is turned into the result
 * object's JSON text with the server's own function and flags and parsed
 * back, so local and remote results cannot drift apart.
 *
 * Cancelling: the request's cancel (struct pybox_cancel) is the engine's
 * cancel_fd, which it polls with the cell's pipes: once readable the cell is
 * killed and reaped as at a timeout, and the engine's "Cancelled" result
 * becomes PYBOX_E_CANCELLED here.
 *
 * Streaming: the engine calls on_output and on_display on the thread that
 * runs the execution as it reads the cell's pipes and records; they become
 * exec's events here, text cut only between characters and made valid
 * UTF-8 as the result's stdout is (and as the server's stream does), so the
 * events put together are the result's output.
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client/client.h"
#include "common/errtable.h"
#include "common/utf8.h"
#include "engine/engine.h"
#include "sandbox/uidmap.h"
#include "common/banned.h"

/* The error table's row for a local engine that could not start or failed. */
static const struct pbx_errtable_row *engine_failed(void)
{
    return pbx_errtable_get(PBX_ERRTABLE_INTERNAL_SERVER_ERROR);
}

/*
 * PYBOX_JAIL_IDS, as `pybox serve` and `pybox run` read it: the jail's id
 * range, else the default or one picked (the engine checks either).
 */
static int jail_ids(struct pbx_engine_config *cfg, struct pbx_error **err)
{
    const char *v = getenv("PYBOX_JAIL_IDS");
    uint32_t base;

    if (v == NULL || v[0] == '\0')
        return 0;
    if (pbx_uidmap_parse_spec(v, &cfg->uid_auto, &base, &cfg->uid_count, err) < 0)
        return pbx_error_prefix(err, "PYBOX_JAIL_IDS");
    cfg->uid_base = (uid_t)base;
    return 0;
}

/*
 * The keeper thread starts the engine and then only waits for the client to
 * be freed.  Linux sends the parent-death signal that stops the zygote when
 * the *thread* that created it ends, so the engine is started from this
 * thread, which lives as long as the client, rather than from whichever
 * caller's thread ran first and may end long before.
 */
static void *keeper_main(void *arg)
{
    struct pybox_client *c = arg;
    struct pbx_engine_config cfg;
    struct pbx_engine *e = NULL;
    struct pbx_error *perr = NULL;
    sigset_t all;

    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL); /* the host's signals are not ours to take */
    pbx_engine_config_default(&cfg);
    cfg.preload = c->preload;
    cfg.zygote_exe = c->pybox_bin; /* lives as long as the client, hence the engine */
    if (jail_ids(&cfg, &perr) < 0 || pbx_engine_start(&cfg, &e, &perr) < 0)
        e = NULL;
    pthread_mutex_lock(&c->lock);
    c->engine = e;
    c->start_err = perr;
    c->start_done = true;
    pthread_cond_broadcast(&c->cond);
    while (e != NULL && !c->stopping)
        pthread_cond_wait(&c->cond, &c->lock);
    pthread_mutex_unlock(&c->lock);
    return NULL;
}

void pbx__client_local_free(struct pybox_client *client)
{
    struct pbx_engine *e;

    /* First the reaper, which may be closing a session on the engine. */
    pbx__client_reaper_stop(client);
    pthread_mutex_lock(&client->lock);
    e = client->engine;
    client->engine = NULL;
    pthread_mutex_unlock(&client->lock);
    pbx_engine_free(e);
    pthread_mutex_lock(&client->lock);
    client->stopping = true;
    pthread_cond_broadcast(&client->cond);
    pthread_mutex_unlock(&client->lock);
    if (client->keeper_started)
        pthread_join(client->keeper, NULL);
    client->keeper_started = false;
}

/*
 * The client's engine in *out, started on first use; a failed start is tried
 * again by the next run.  start_lock lets one thread start it while the
 * others wait for the outcome, so a client never has two engines.
 */
enum pybox_code pbx__client_engine(struct pybox_client *c, struct pbx_engine **out,
                                   struct pybox_error **err)
{
    struct pbx_error *perr = NULL;
    enum pybox_code rc = PYBOX_OK;
    int e;

    pthread_mutex_lock(&c->lock);
    *out = c->engine;
    pthread_mutex_unlock(&c->lock);
    if (*out != NULL)
        return PYBOX_OK;

    pthread_mutex_lock(&c->start_lock);
    pthread_mutex_lock(&c->lock);
    *out = c->engine;
    pthread_mutex_unlock(&c->lock);
    if (*out != NULL) {
        pthread_mutex_unlock(&c->start_lock);
        return PYBOX_OK;
    }
    if (access(c->pybox_bin, X_OK) < 0) {
        rc = pbx__client_fail_type(err, engine_failed()->local, engine_failed()->type, 0, 0,
                                   "no pybox binary at `%s` (%s): install pybox or set PYBOX_BIN",
                                   c->pybox_bin, strerror(errno));
        pthread_mutex_unlock(&c->start_lock);
        return rc;
    }
    c->start_done = false;
    e = pthread_create(&c->keeper, NULL, keeper_main, c);
    if (e != 0) {
        pthread_mutex_unlock(&c->start_lock);
        return pbx__client_fail_type(err, engine_failed()->local, engine_failed()->type, 0, 0,
                                     "start the local sandbox: %s", strerror(e));
    }
    c->keeper_started = true;
    pthread_mutex_lock(&c->lock);
    while (!c->start_done)
        pthread_cond_wait(&c->cond, &c->lock);
    *out = c->engine;
    perr = c->start_err;
    c->start_err = NULL;
    pthread_mutex_unlock(&c->lock);
    if (*out == NULL) {
        /* Whatever stopped it (no user namespaces, no cgroups, ...), the engine did not start. */
        rc = pbx__client_fail_type(err, engine_failed()->local, engine_failed()->type, 0, 0,
                                   "start the local sandbox: %s", perr->msg);
        pbx_error_free(&perr);
        /* That keeper has ended (or is about to). */
        pthread_join(c->keeper, NULL);
        c->keeper_started = false;
    }
    pthread_mutex_unlock(&c->start_lock);
    return rc;
}

enum pybox_code pbx__client_local_fail(struct pybox_error **err, struct pbx_error **perr,
                                       const char *prefix)
{
    const struct pbx_errtable_row *row = pbx_errtable_of_code((*perr)->code, false);
    /* Every row an internal code selects has a local code; the remote one is the same failure. */
    enum pybox_code code =
        row->local != PBX_ERRTABLE_NONE ? (enum pybox_code)row->local : row->remote;
    enum pybox_code rc;

    if (prefix != NULL)
        rc = pbx__client_fail_type(err, code, row->type, 0, 0, "%s: %s", prefix, (*perr)->msg);
    else
        rc = pbx__client_fail_type(err, code, row->type, 0, 0, "%s", (*perr)->msg);
    pbx_error_free(perr);
    return rc;
}

enum pybox_code pbx__client_local_request(const struct pybox_exec *exec,
                                          const struct pbx_limits *base, double timeout,
                                          unsigned memory, struct pbx_exec_request *req,
                                          struct pbx_file_in **files, struct pybox_error **err)
{
    struct pbx_file_in *f = NULL;

    *files = NULL;
    pbx_exec_request_init(req);
    if (base != NULL)
        req->limits = *base;
    /* As the server reads `timeout` (pybox_exec_set_timeout() checked its range). */
    if (timeout > 0 && pbx_limits_set_timeout(&req->limits, timeout, NULL) < 0)
        return pbx__client_fail(err, PYBOX_E_INVALID, 0, 0, "the timeout is out of range");
    if (memory > 0)
        req->limits.memory_bytes = (uint64_t)memory << 20;
    if (exec->nfiles > 0) {
        f = calloc(exec->nfiles, sizeof(*f));
        if (f == NULL)
            return pbx__client_fail(err, PYBOX_E_NOMEM, 0, 0, "out of memory");
    }
    for (size_t i = 0; i < exec->nfiles; i++) {
        f[i].name = exec->files[i].name;
        f[i].data = exec->files[i].data;
        f[i].size = exec->files[i].size;
    }
    req->code = exec->code;
    req->code_len = exec->code_len;
    req->stdin_data = exec->stdin_data;
    req->stdin_len = exec->stdin_len;
    req->files = f;
    req->nfiles = exec->nfiles;
    req->return_files = (const char *const *)exec->returns;
    req->nreturn = exec->nreturn;
    req->main_mode = exec->main_mode;
    *files = f;
    return PYBOX_OK;
}

/* ---- streamed events ---- */

/* Send [p, p+n) as a text event, valid UTF-8 (bad bytes become U+FFFD, as in the result). */
static void send_text(const struct pbx_client_events *ev, enum pbx_stream which, const char *p,
                      size_t n)
{
    enum pybox_event_kind kind =
        which == PBX_STREAM_STDERR ? PYBOX_EVENT_STDERR : PYBOX_EVENT_STDOUT;
    size_t len = 0;
    char *text;

    if (n == 0)
        return;
    text = pbx_utf8_sanitize(p, n, &len);
    ev->exec->on_event(kind, text, len, ev->exec->on_event_arg);
    free(text);
}

static void on_output(enum pbx_stream which, const char *data, size_t len, void *arg)
{
    struct pbx_client_events *ev = arg;
    size_t keep;
    size_t have;
    char *joined;

    if (which != PBX_STREAM_STDOUT && which != PBX_STREAM_STDERR)
        return;
    have = ev->carry_len[which];
    joined = malloc(have + len + 1);
    if (joined == NULL)
        return; /* the event is lost, not the result: it has the whole output */
    memcpy(joined, ev->carry[which], have);
    memcpy(joined + have, data, len);
    keep = pbx_utf8_partial_tail(joined, have + len);
    send_text(ev, which, joined, have + len - keep);
    memcpy(ev->carry[which], joined + have + len - keep, keep);
    ev->carry_len[which] = keep;
    free(joined);
}

static void on_display(const json_t *output, void *arg)
{
    struct pbx_client_events *ev = arg;
    const char *type = json_string_value(json_object_get(output, "type"));
    /* The server's stream sends each output with the result object's flags. */
    char *text = json_dumps(output, PBX_JSON_FLAGS);

    if (text == NULL)
        return;
    ev->exec->on_event(type != NULL && strcmp(type, "result") == 0 ? PYBOX_EVENT_RESULT
                                                                   : PYBOX_EVENT_DISPLAY,
                       text, strlen(text), ev->exec->on_event_arg);
    free(text);
}

void pbx__client_events_start(struct pbx_client_events *ev, const struct pybox_exec *exec,
                              struct pbx_exec_request *req)
{
    memset(ev, 0, sizeof(*ev));
    ev->exec = exec;
    if (exec->on_event == NULL)
        return;
    req->on_output = on_output;
    req->on_display = on_display;
    req->on_output_arg = ev;
}

void pbx__client_events_finish(struct pbx_client_events *ev)
{
    if (ev->exec == NULL || ev->exec->on_event == NULL)
        return;
    for (int i = PBX_STREAM_STDOUT; i <= PBX_STREAM_STDERR; i++) {
        send_text(ev, (enum pbx_stream)i, ev->carry[i], ev->carry_len[i]);
        ev->carry_len[i] = 0;
    }
}

enum pybox_code pbx__client_local_result(struct pbx_exec_result *res, json_t *extra,
                                         const struct pybox_exec *exec, struct pybox_result **out,
                                         struct pybox_error **err)
{
    enum pybox_code rc;
    json_t *o;
    char *text;

    o = pbx_exec_result_to_json(res);
    pbx_exec_result_release(res);
    if (extra != NULL)
        json_object_update(o, extra);
    text = json_dumps(o, PBX_JSON_FLAGS);
    json_decref(o);
    if (text == NULL)
        return pbx__client_fail(err, PYBOX_E_NOMEM, 0, 0, "out of memory");
    rc = pbx__client_result_parse(text, strlen(text), exec, out, err);
    free(text);
    return rc;
}

/*
 * Whether the engine stopped the run on its cancel_fd: status killed with the
 * error it gives then ("Cancelled").  A run that ended by itself as the
 * cancel fired keeps its result.
 */
static bool killed_by_cancel(const struct pybox_exec *exec, const struct pbx_exec_result *res)
{
    const char *type;

    if (!pbx__client_cancelled(exec) || res->status != PBX_STATUS_KILLED)
        return false;
    type = json_string_value(json_object_get(res->error, "type"));
    return type != NULL && strcmp(type, "Cancelled") == 0;
}

enum pybox_code pbx__client_run_local(struct pybox_client *client, const struct pybox_exec *exec,
                                      struct pybox_result **out, struct pybox_error **err)
{
    struct pbx_file_in *files = NULL;
    struct pbx_client_events ev;
    struct pbx_exec_request req;
    struct pbx_exec_result res;
    struct pbx_error *perr = NULL;
    struct pbx_engine *engine;
    enum pybox_code rc;

    if (client->network) {
        /* Local mode applies the anonymous policy, which a server refuses network (403). */
        const struct pbx_errtable_row *row = pbx_errtable_get(PBX_ERRTABLE_NETWORK_NOT_ALLOWED);

        return pbx__client_fail_type(err, row->local, row->type, 0, 0,
                                     "local mode runs every execution without network");
    }
    rc = pbx__client_engine(client, &engine, err);
    if (rc != PYBOX_OK)
        return rc;
    rc = pbx__client_local_request(exec, NULL, pbx__client_timeout(client, exec),
                                   pbx__client_memory(client, exec), &req, &files, err);
    if (rc != PYBOX_OK)
        return rc;
    pbx__client_events_start(&ev, exec, &req);
    req.cancel_fd = pbx__client_cancel_fd(exec);
    if (pbx_engine_execute(engine, &req, &res, &perr) < 0) {
        /* Named as the server names the same refusal (common/errtable.h). */
        free(files);
        return pbx__client_local_fail(err, &perr, NULL);
    }
    pbx__client_events_finish(&ev);
    free(files);
    if (killed_by_cancel(exec, &res)) {
        /* The engine killed the cell and reaped it before it returned. */
        pbx_exec_result_release(&res);
        return pbx__client_fail(err, PYBOX_E_CANCELLED, 0, 0,
                                "cancelled: the code was killed while it ran");
    }
    return pbx__client_local_result(&res, NULL, exec, out, err);
}
