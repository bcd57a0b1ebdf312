/*
 * The backend /mcp gives src/mcp/: each tool through the server's own
 * pipeline, as the HTTP routes run it.  run_python is execute.c's pipeline
 * (pbx__execute_direct(): the caller's limits, the window and the quota,
 * a slot, the memory budget, the audit, the metrics), in a session through
 * the hooks of its calls; the session tools are session_ops.c's
 * operations.  A refusal becomes the tool's error, with what to do.
 *
 * One struct mcp_link per MCP session: the policy it was described with,
 * and the sessions opened through it, ended when it ends.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/xalloc.h"
#include "policy/policy.h"
#include "server/mcp_server.h"
#include "server/session_ops.h"
#include "common/banned.h"

/* A session opened through the MCP session. */
struct opened {
    struct opened *next;
    char id[SESSION_ID_LEN + 1];
    char owner[320]; /* whose it is, to end it */
};

struct mcp_link {
    struct pbx_server *s;         /* the server */
    struct pbx_mcp_limits limits; /* what the tools' descriptions say */
    pthread_mutex_t lock;         /* guards `opened` */
    struct opened *opened;        /* the sessions opened through it */
};

/* ---- refusals as errors ---- */

/*
 * The refusal `no` (released here) as the error the tool shows: NotFound
 * and SessionDead as PBX_E_NOTFOUND (the model is told to open a new
 * session), a request's fault as PBX_E_INVAL, the rest as they are, with
 * when to retry.
 */
static int refused(struct pbx_refusal *no, struct pbx_error **err)
{
    const char *type = no->type != NULL ? no->type : "InternalServerError";
    int code = PBX_E_ENGINE;
    int rc;

    if (strcmp(type, "NotFound") == 0 || strcmp(type, "SessionDead") == 0)
        code = PBX_E_NOTFOUND;
    else if (strcmp(type, "ValidationError") == 0 || strcmp(type, "PayloadTooLarge") == 0 ||
             strcmp(type, "Forbidden") == 0)
        code = PBX_E_INVAL;
    else if (strcmp(type, "SessionBusy") == 0 || strcmp(type, "ServerBusy") == 0 ||
             strcmp(type, "RateLimitExceeded") == 0 || strcmp(type, "SessionLimitExceeded") == 0)
        code = PBX_E_BUSY;
    if (no->retry_after > 0)
        rc = pbx_error_set(err, code, "%s: %s; retry in %u s", type, no->msg ? no->msg : "",
                           no->retry_after);
    else
        rc = pbx_error_set(err, code, "%s: %s", type, no->msg ? no->msg : "");
    pbx__refusal_release(no);
    return rc;
}

/* ---- run_python ---- */

static void fire(void *arg)
{
    const uint64_t one = 1;

    /* The eventfd is the run's cancel_fd: readable, the code is killed. */
    if (write(*(int *)arg, &one, sizeof(one)) < 0 && errno != EAGAIN)
        pbx_log(PBX_LOG_WARN, "mcp: cancel: %s", strerror(errno));
}

static void on_output(enum pbx_stream which, const char *data, size_t len, void *arg)
{
    const struct pbx_mcp_run *run = arg;

    (void)which;
    (void)data;
    (void)len;
    if (run->alive != NULL)
        run->alive(run->alive_arg);
}

/* The request of a run: its code, stdin, files, names to return and timeout, checked. */
static int build(struct pbx_server *s, const struct pbx_mcp_run *run, struct pbx_http_request *req,
                 struct pbx_error **err)
{
    if (pbx__request_set_code(req, run->code, run->code_len, err) < 0)
        return -1;
    if (run->stdin_data != NULL) {
        if (run->stdin_len > s->caps.max_stdin)
            return pbx_error_set(err, PBX_E_INVAL, "stdin is %zu bytes; the limit is %zu",
                                 run->stdin_len, s->caps.max_stdin);
        req->stdin_data = xmemdup(run->stdin_data, run->stdin_len);
        req->stdin_len = run->stdin_len;
    }
    for (size_t i = 0; i < run->nfiles; i++) {
        if (pbx__request_add_file(req, &s->caps, run->files[i].path, run->files[i].data,
                                  run->files[i].size, err) < 0)
            return -1;
    }
    for (size_t i = 0; i < run->nreturns; i++) {
        if (pbx__request_add_return(req, &s->caps, run->returns[i], err) < 0)
            return -1;
    }
    if (run->timeout_s > 0) {
        struct pbx_limits probe = s->cfg->limits;

        if (pbx_limits_set_timeout(&probe, run->timeout_s, err) < 0)
            return -1;
        req->has_timeout = true;
        req->timeout_s = run->timeout_s;
    }
    return 0;
}

/* How long a call of a busy session waits for the call before it (one cancelled, unwinding). */
#define BUSY_WAIT_MS 3000

/*
 * One attempt of the run: 0 with *result, or -1 with *err; *busy when the
 * session was busy (nothing ran, nothing was charged).
 */
static int run_once(const struct mcp_asker *a, const struct pbx_mcp_run *run, int cancel,
                    char **result, bool *busy, struct pbx_error **err)
{
    struct pbx_server *s = a->s;
    struct pbx_http_request req = {0};
    struct pbx_execute_hooks hooks;
    struct pbx_refusal no = {0};
    struct request_ctx rctx = {.route = R_MCP};
    struct pbx_execute_direct d = {
        .ctx = &rctx,
        .who = a->who,
        .req = &req,
        .on_output = on_output,
        .on_output_arg = (void *)run,
        .cancel_fd = cancel,
    };
    json_t *out = NULL;
    int rc;

    *busy = false;
    if (build(s, run, &req, err) < 0) {
        pbx__request_release(&req);
        return -1;
    }
    snprintf(rctx.id, sizeof(rctx.id), "%s", a->request_id);
    snprintf(rctx.client, sizeof(rctx.client), "%s", a->client);
    if (run->session_id != NULL) {
        pbx__sessions_call_hooks(s, a->client, run->session_id, &hooks);
        d.hooks = &hooks; /* released by the pipeline, whatever happens */
    }
    rc = pbx__execute_direct(s, &d, &out, &no);
    pbx__request_release(&req);
    pbx__server_budget_release(s, &rctx);
    if (rc < 0) {
        *busy = no.type != NULL && strcmp(no.type, "SessionBusy") == 0;
        return refused(&no, err);
    }
    *result = json_dumps(out, JSON_COMPACT);
    json_decref(out);
    if (*result == NULL)
        return pbx_error_set(err, PBX_E_ENGINE, "the result could not be encoded");
    return 0;
}

static int be_run(void *arg, void *ctx, const struct pbx_mcp_run *run, char **result,
                  struct pbx_error **err)
{
    uint64_t until = pbx_clock_ms(CLOCK_MONOTONIC) + BUSY_WAIT_MS;
    int cancel = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    bool busy = false;
    int rc;

    (void)arg;
    if (cancel < 0)
        return pbx_error_set(err, errno, "create the run's cancel");
    if (!pbx_mcp_cancel_set_hook(run->cancel, fire, &cancel)) {
        close(cancel);
        return pbx_error_set(err, PBX_E_GONE, "cancelled");
    }
    for (;;) {
        rc = run_once(ctx, run, cancel, result, &busy, err);
        /* A session's call waits for the one before it to give the session back. */
        if (rc == 0 || !busy || pbx_mcp_cancel_requested(run->cancel) ||
            pbx_clock_ms(CLOCK_MONOTONIC) >= until)
            break;
        pbx_error_free(err);
        nanosleep(&(struct timespec){.tv_nsec = 10 * 1000 * 1000}, NULL);
    }
    pbx_mcp_cancel_set_hook(run->cancel, NULL, NULL);
    close(cancel);
    return rc;
}

/* ---- sessions ---- */

static void owner_of(const struct mcp_asker *a, char *out, size_t len)
{
    pbx__sessions_owner(a->who, a->client, out, len);
}

static int be_session_create(void *arg, void *ctx, unsigned ttl_s, const struct pbx_mcp_file *files,
                             size_t nfiles, char **info, struct pbx_error **err)
{
    struct mcp_link *link = arg;
    const struct mcp_asker *a = ctx;
    struct pbx_http_request req = {0};
    struct pbx_refusal no = {0};
    struct opened *o;
    json_t *ses = NULL;
    json_t *idle, *life, *ans;
    int rc = -1;

    if (ttl_s > 0) {
        req.has_idle_ttl = true;
        req.idle_ttl_s = ttl_s;
    }
    for (size_t i = 0; i < nfiles; i++) {
        if (pbx__request_add_file(&req, &link->s->caps, files[i].path, files[i].data, files[i].size,
                                  err) < 0)
            goto out;
    }
    if (pbx__sessions_open(link->s, a->who, a->client, &req, &ses, &no) < 0) {
        rc = refused(&no, err);
        goto out;
    }
    o = xcalloc(1, sizeof(*o));
    snprintf(o->id, sizeof(o->id), "%s", json_string_value(json_object_get(ses, "id")));
    owner_of(a, o->owner, sizeof(o->owner));
    pthread_mutex_lock(&link->lock);
    o->next = link->opened;
    link->opened = o;
    pthread_mutex_unlock(&link->lock);
    /* It ends at the first of its idle time and its lifetime. */
    idle = json_object_get(ses, "idle_expires_at");
    life = json_object_get(ses, "expires_at");
    ans = json_pack("{s:s, s:O, s:O}", "session_id", o->id, "expires_at",
                    json_is_string(idle) ? idle : life, "limits", json_object_get(ses, "limits"));
    *info = json_dumps(ans, JSON_COMPACT);
    json_decref(ans);
    rc = *info != NULL ? 0 : pbx_error_set(err, PBX_E_ENGINE, "the session could not be shown");
out:
    json_decref(ses);
    pbx__request_release(&req);
    return rc;
}

/* Forget the session `id` opened through the link (it was ended). */
static void forget(struct mcp_link *link, const char *id)
{
    pthread_mutex_lock(&link->lock);
    for (struct opened **pp = &link->opened; *pp != NULL; pp = &(*pp)->next) {
        if (strcmp((*pp)->id, id) == 0) {
            struct opened *o = *pp;

            *pp = o->next;
            free(o);
            break;
        }
    }
    pthread_mutex_unlock(&link->lock);
}

static int be_session_close(void *arg, void *ctx, const char *id, struct pbx_error **err)
{
    struct mcp_link *link = arg;
    struct pbx_refusal no = {0};
    char owner[320];

    owner_of(ctx, owner, sizeof(owner));
    if (pbx__sessions_end(link->s, owner, id, &no) < 0)
        return refused(&no, err);
    forget(link, id);
    return 0;
}

/* The caller's session `id`, taken for a call: 0 with *e, or -1 with *err. */
static int take(struct mcp_link *link, const struct mcp_asker *a, const char *id,
                struct session **e, struct pbx_error **err)
{
    struct pbx_refusal no = {0};
    char owner[320];

    owner_of(a, owner, sizeof(owner));
    if (pbx__sessions_take(link->s, id, owner, SESSION_CALL, e, &no) < 0)
        return refused(&no, err);
    return 0;
}

/* Give `e` back after the engine's error `perr` (freed), as the error the tool shows. */
static int engine_failed(struct mcp_link *link, struct session *e, struct pbx_error *perr,
                         struct pbx_error **err)
{
    struct pbx_refusal no = {0};

    pbx__sessions_engine_refusal(link->s, e, SESSION_CALL, perr, &no);
    pbx_error_free(&perr);
    return refused(&no, err);
}

static int be_files_write(void *arg, void *ctx, const char *id, const struct pbx_mcp_file *files,
                          size_t nfiles, struct pbx_error **err)
{
    struct mcp_link *link = arg;
    struct pbx_error *perr = NULL;
    struct session *e = NULL;
    char msg[128];

    for (size_t i = 0; i < nfiles; i++) {
        if (!pbx__sessions_path_ok(files[i].path, msg, sizeof(msg)))
            return pbx_error_set(err, PBX_E_INVAL, "%s", msg);
        if (files[i].size > link->s->cfg->limits.input_file_bytes)
            return pbx_error_set(err, PBX_E_INVAL, "`%s` is %zu bytes; the limit is %zu",
                                 files[i].path, files[i].size,
                                 (size_t)link->s->cfg->limits.input_file_bytes);
    }
    if (take(link, ctx, id, &e, err) < 0)
        return -1;
    for (size_t i = 0; i < nfiles; i++) {
        if (pbx_session_file_put(e->ps, files[i].path, files[i].size ? files[i].data : "",
                                 files[i].size, &perr) < 0)
            return engine_failed(link, e, perr, err);
    }
    pbx__session_table_put(link->s->sessions, e, SESSION_CALL, 0);
    return 0;
}

static int be_file_read(void *arg, void *ctx, const char *id, const char *path, void **data,
                        size_t *size, struct pbx_error **err)
{
    struct mcp_link *link = arg;
    struct pbx_error *perr = NULL;
    struct session *e = NULL;
    char *bytes = NULL;
    char msg[128];

    if (!pbx__sessions_path_ok(path, msg, sizeof(msg)))
        return pbx_error_set(err, PBX_E_INVAL, "%s", msg);
    if (take(link, ctx, id, &e, err) < 0)
        return -1;
    if (pbx_session_file_get(e->ps, path, &bytes, size, &perr) < 0)
        return engine_failed(link, e, perr, err);
    pbx__session_table_put(link->s->sessions, e, SESSION_CALL, 0);
    *data = bytes;
    return 0;
}

static int be_files_list(void *arg, void *ctx, const char *id, char **json, struct pbx_error **err)
{
    struct mcp_link *link = arg;
    struct pbx_error *perr = NULL;
    struct session *e = NULL;
    json_t *list = NULL;

    if (take(link, ctx, id, &e, err) < 0)
        return -1;
    if (pbx_session_file_list(e->ps, &list, &perr) < 0)
        return engine_failed(link, e, perr, err);
    pbx__session_table_put(link->s->sessions, e, SESSION_CALL, 0);
    *json = json_dumps(list, JSON_COMPACT);
    json_decref(list);
    return *json != NULL ? 0 : pbx_error_set(err, PBX_E_ENGINE, "the list could not be encoded");
}

/* ---- the link ---- */

static void describe(void *arg, struct pbx_mcp_limits *out)
{
    const struct mcp_link *link = arg;

    *out = link->limits;
}

struct mcp_link *pbx__mcp_link_new(struct pbx_server *s, const struct pbx_caller *who,
                                   const char *client)
{
    const struct pbx_caller_ask ask = {0};
    struct mcp_link *link = xcalloc(1, sizeof(*link));
    struct pbx_mcp_limits *l = &link->limits;
    struct pbx_error *err = NULL;
    struct pbx_limits limits = s->cfg->limits;
    const char *etype = NULL;

    (void)client;
    link->s = s;
    pthread_mutex_init(&link->lock, NULL);
    if (pbx_caller_limits(&s->callers, who, &ask, &limits, &etype, &err) < 0)
        pbx_error_free(&err); /* the server's limits, then */
    l->timeout_s = limits.wall_ms / 1000.0;
    l->max_timeout_s = who->max_timeout_ms / 1000.0;
    l->memory_mb = (unsigned)(limits.memory_bytes >> 20);
    l->network = who->network;
    l->sessions = s->ex.session_open != NULL && s->cfg->sessions_max > 0;
    if (who->all_modules)
        snprintf(l->modules, sizeof(l->modules), "*");
    else
        pbx_mcp_limits_modules(l, pbx_policy_default_modules, who->modules);
    return link;
}

struct pbx_mcp_backend pbx__mcp_link_backend(struct mcp_link *link)
{
    return (struct pbx_mcp_backend){
        .arg = link,
        .describe = describe,
        .run = be_run,
        .session_create = be_session_create,
        .session_close = be_session_close,
        .files_write = be_files_write,
        .file_read = be_file_read,
        .files_list = be_files_list,
    };
}

void pbx__mcp_link_free(struct mcp_link *link)
{
    struct pbx_refusal no = {0};

    if (link == NULL)
        return;
    while (link->opened != NULL) {
        struct opened *o = link->opened;

        link->opened = o->next;
        if (pbx__sessions_end(link->s, o->owner, o->id, &no) < 0)
            pbx__refusal_release(&no); /* ended already, and forgotten */
        free(o);
    }
    pthread_mutex_destroy(&link->lock);
    free(link);
}
