/*
 * /v1/sessions: the HTTP side of sessions (docs/api.md, "Sessions").  Each
 * route resolves its caller as every route does (auth.c), finds the
 * caller's session in the table (session_table.c: another caller's id is as
 * unknown as a forged one) and does one thing with it:
 *
 *   POST   /v1/sessions                   open one (201), within the caller's caps
 *   GET    /v1/sessions                   the caller's sessions
 *   GET    /v1/sessions/{id}              its state
 *   PATCH  /v1/sessions/{id}              its idle time and lifetime
 *   DELETE /v1/sessions/{id}              end it (204 once it is gone)
 *   POST   /v1/sessions/{id}/execute      a call: execute.c's pipeline, with hooks
 *   POST   /v1/sessions/{id}/interrupt    KeyboardInterrupt in the running call
 *   POST   /v1/sessions/{id}/restart      a fresh interpreter, /work kept
 *   GET    /v1/sessions/{id}/files        the files of /work
 *   GET, PUT, DELETE /v1/sessions/{id}/files/{path}   one file, its bytes raw
 *
 * A call (an execution, a restart, a file) takes the session for itself: a
 * second one meanwhile is a 409.  A session that ended answers its calls 410
 * with the reason, and is closed at once by whoever finds it so.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/errtable.h"
#include "common/log.h"
#include "common/utf8.h"
#include "common/xalloc.h"
#include "server/internal.h"
#include "server/session_ops.h"
#include "common/banned.h"

/* What a URL under /v1/sessions names. */
enum op {
    OP_NONE,      /* nothing: 404 */
    OP_LIST,      /* /v1/sessions */
    OP_ONE,       /* /v1/sessions/{id} */
    OP_EXECUTE,   /* .../execute */
    OP_INTERRUPT, /* .../interrupt */
    OP_RESTART,   /* .../restart */
    OP_FILES,     /* .../files */
    OP_FILE,      /* .../files/{path} */
};

/* The methods each op takes, as a 405's Allow header names them. */
static const char *const allowed[] = {
    [OP_NONE] = NULL,
    [OP_LIST] = "GET, HEAD, POST, OPTIONS",
    [OP_ONE] = "GET, HEAD, PATCH, DELETE, OPTIONS",
    [OP_EXECUTE] = "POST, OPTIONS",
    [OP_INTERRUPT] = "POST, OPTIONS",
    [OP_RESTART] = "POST, OPTIONS",
    [OP_FILES] = "GET, HEAD, OPTIONS",
    [OP_FILE] = "GET, HEAD, PUT, DELETE, OPTIONS",
};

/* A URL under /v1/sessions, read. */
struct target {
    enum op op;       /* what it names */
    char id[64];      /* the session id as given (cut at 63 bytes), or "" */
    bool id_too_long; /* it was longer */
    const char *path; /* OP_FILE: the file's path (into the URL) */
};

static void parse_target(const char *url, struct target *t)
{
    static const struct {
        const char *name;
        enum op op;
    } subs[] = {
        {"", OP_ONE},
        {"/execute", OP_EXECUTE},
        {"/interrupt", OP_INTERRUPT},
        {"/restart", OP_RESTART},
        {"/files", OP_FILES},
    };
    const char *rest = url + strlen("/v1/sessions");
    size_t n;

    memset(t, 0, sizeof(*t));
    if (strncmp(url, "/v1/sessions", 12) != 0)
        return;
    if (*rest == '\0') {
        t->op = OP_LIST;
        return;
    }
    if (*rest != '/' || rest[1] == '\0' || rest[1] == '/')
        return;
    rest++;
    n = strcspn(rest, "/");
    t->id_too_long = n >= sizeof(t->id);
    snprintf(t->id, sizeof(t->id), "%.*s", (int)(n < sizeof(t->id) ? n : sizeof(t->id) - 1), rest);
    rest += n;
    for (size_t i = 0; i < sizeof(subs) / sizeof(subs[0]); i++) {
        if (strcmp(rest, subs[i].name) == 0) {
            t->op = subs[i].op;
            return;
        }
    }
    if (strncmp(rest, "/files/", 7) == 0) {
        t->op = OP_FILE;
        t->path = rest + 7;
    }
}

static bool is(const char *method, const char *name)
{
    return strcmp(method, name) == 0;
}

/* Whether `op` takes `method`. */
static bool takes(enum op op, const char *method)
{
    bool get = is(method, "GET") || is(method, "HEAD");

    switch (op) {
    case OP_LIST:
        return get || is(method, "POST");
    case OP_ONE:
        return get || is(method, "PATCH") || is(method, "DELETE");
    case OP_EXECUTE:
    case OP_INTERRUPT:
    case OP_RESTART:
        return is(method, "POST");
    case OP_FILES:
        return get;
    case OP_FILE:
        return get || is(method, "PUT") || is(method, "DELETE");
    default:
        return false;
    }
}

size_t pbx__sessions_body_cap(const struct pbx_server *s, const char *url, const char *method)
{
    struct target t;

    parse_target(url, &t);
    if ((t.op == OP_LIST || t.op == OP_EXECUTE) && is(method, "POST"))
        return s->max_valid_body;
    if (t.op == OP_ONE && is(method, "PATCH"))
        return 64u << 10;
    /* A file's bytes, raw: at most what an input file may be. */
    if (t.op == OP_FILE && is(method, "PUT"))
        return s->cfg->limits.input_file_bytes;
    return 0;
}

/* ---- answers ---- */

/* Queue `len` bytes of `data` (malloc'd, taken over; NULL for none) as the answer. */
static enum MHD_Result send_bytes(struct pbx_server *s, struct MHD_Connection *c,
                                  struct request_ctx *ctx, int status, char *data, size_t len,
                                  const char *content_type)
{
    return pbx__http_send_bytes(c, ctx, s, status, data, len, content_type, 0, NULL);
}

static enum MHD_Result send_error(struct pbx_server *s, struct MHD_Connection *c,
                                  struct request_ctx *ctx, const char *type, const char *msg,
                                  unsigned retry_after, json_t *extra)
{
    return pbx__http_send_error(c, ctx, s, type, msg, retry_after, extra);
}

/* Answer `e` (held, given back here) as it is now, with `status`. */
static enum MHD_Result send_session(struct pbx_server *s, struct MHD_Connection *c,
                                    struct request_ctx *ctx, struct session *e,
                                    enum session_take how, int status)
{
    /* A call held it: over now, so the session is shown as the next caller finds it. */
    if (how == SESSION_CALL)
        pbx__session_table_downgrade(s->sessions, e);
    return pbx__http_send_json(c, ctx, s, status, pbx__sessions_show(s, e), 0);
}

/* Answer 410 for the ended session `e` (held, given back here as `how`). */
static enum MHD_Result send_gone(struct pbx_server *s, struct MHD_Connection *c,
                                 struct request_ctx *ctx, struct session *e, enum session_take how)
{
    struct pbx_refusal no = {0};

    pbx__sessions_gone(s, e, how, &no);
    return pbx__http_send_refusal(c, ctx, s, &no);
}

/* ---- who, and their session ---- */

/*
 * The caller's session `id`, taken `how`: 0 with *out, or -1 after answering
 * (404, 409, 410).
 */
static int take(struct pbx_server *s, struct MHD_Connection *c, struct request_ctx *ctx,
                const struct target *t, const char *owner, enum session_take how,
                struct session **out, enum MHD_Result *ret)
{
    struct pbx_refusal no = {0};

    if (pbx__sessions_take(s, t->id, owner, how, out, &no) == 0)
        return 0;
    *ret = pbx__http_send_refusal(c, ctx, s, &no);
    return -1;
}

/*
 * Answer the engine's refusal `err` of an operation on the session `e`
 * (held as `how`, given back here).
 */
static enum MHD_Result send_engine_error(struct pbx_server *s, struct MHD_Connection *c,
                                         struct request_ctx *ctx, struct session *e,
                                         enum session_take how, struct pbx_error *err)
{
    struct pbx_refusal no = {0};

    pbx__sessions_engine_refusal(s, e, how, err, &no);
    return pbx__http_send_refusal(c, ctx, s, &no);
}

/* ---- POST /v1/sessions ---- */

static enum MHD_Result open_session(struct pbx_server *s, struct MHD_Connection *c,
                                    struct request_ctx *ctx, const struct pbx_caller *who)
{
    struct pbx_http_request req;
    struct pbx_error *err = NULL;
    struct pbx_refusal no = {0};
    const char *etype = "ValidationError";
    enum MHD_Result ret;
    json_t *body;

    if (pbx__request_json_parse_session(ctx->body.data, ctx->body.len, false, &s->caps, &req,
                                        &etype, &err) < 0) {
        ret = send_error(s, c, ctx, err->code == PBX_E_TOO_LARGE ? "PayloadTooLarge" : etype,
                         err->msg, 0, NULL);
        pbx_error_free(&err);
        return ret;
    }
    pbx_buf_release(&ctx->body);
    if (pbx__sessions_open(s, who, ctx->client, &req, &body, &no) < 0)
        ret = pbx__http_send_refusal(c, ctx, s, &no);
    else
        ret = pbx__http_send_json(c, ctx, s, 201, body, 0);
    pbx__request_release(&req);
    return ret;
}

/* ---- GET /v1/sessions ---- */

static enum MHD_Result list_sessions(struct pbx_server *s, struct MHD_Connection *c,
                                     struct request_ctx *ctx, const char *owner)
{
    json_t *list = json_array();
    struct session **all = NULL;
    size_t n = 0;

    pbx__session_table_list(s->sessions, owner, &all, &n);
    for (size_t i = 0; i < n; i++) {
        struct session_view v;

        pbx__session_table_view(s->sessions, all[i], &v);
        json_array_append_new(list, pbx__sessions_json(&v));
        pbx__session_table_put(s->sessions, all[i], SESSION_READ, 0);
    }
    free(all);
    return pbx__http_send_json(c, ctx, s, 200, json_pack("{s:o}", "sessions", list), 0);
}

/* ---- PATCH /v1/sessions/{id} ---- */

static enum MHD_Result patch_session(struct pbx_server *s, struct MHD_Connection *c,
                                     struct request_ctx *ctx, const struct target *t,
                                     const struct pbx_caller *who, const char *owner)
{
    struct pbx_http_request req;
    struct pbx_error *err = NULL;
    const char *etype = "ValidationError";
    struct session *e = NULL;
    struct session_view v;
    enum MHD_Result ret;
    uint32_t idle, life;
    char msg[200];

    if (pbx__request_json_parse_session(ctx->body.data, ctx->body.len, true, &s->caps, &req, &etype,
                                        &err) < 0) {
        ret = send_error(s, c, ctx, etype, err->msg, 0, NULL);
        pbx_error_free(&err);
        return ret;
    }
    /* Nothing of it is owned (it holds two numbers), so it needs no release. */
    if (take(s, c, ctx, t, owner, SESSION_READ, &e, &ret) < 0)
        return ret;
    pbx__session_table_view(s->sessions, e, &v);
    if (pbx__sessions_span(req.has_idle_ttl, req.idle_ttl_s, v.idle_ttl_s,
                           who->sessions.max_idle_ttl_s, "idle_ttl_s", &idle, msg,
                           sizeof(msg)) < 0 ||
        pbx__sessions_span(req.has_lifetime, req.max_lifetime_s, v.lifetime_s,
                           who->sessions.max_lifetime_s, "max_lifetime_s", &life, msg,
                           sizeof(msg)) < 0) {
        pbx__session_table_put(s->sessions, e, SESSION_READ, 0);
        return send_error(s, c, ctx, "ValidationError", msg, 0, NULL);
    }
    if (v.reason != NULL)
        return send_gone(s, c, ctx, e, SESSION_READ);
    if (pbx__session_table_set_spans(s->sessions, e, idle, life, &err) < 0) {
        pbx__session_table_put(s->sessions, e, SESSION_READ, 0);
        ret = send_error(s, c, ctx, "ValidationError", err->msg, 0, NULL);
        pbx_error_free(&err);
        return ret;
    }
    return send_session(s, c, ctx, e, SESSION_READ, 200);
}

/* ---- DELETE /v1/sessions/{id} ---- */

static enum MHD_Result delete_session(struct pbx_server *s, struct MHD_Connection *c,
                                      struct request_ctx *ctx, const struct target *t,
                                      const char *owner)
{
    struct pbx_refusal no = {0};

    if (pbx__sessions_end(s, owner, t->id, &no) < 0)
        return pbx__http_send_refusal(c, ctx, s, &no);
    return send_bytes(s, c, ctx, 204, NULL, 0, NULL);
}

/* ---- POST /v1/sessions/{id}/interrupt and /restart ---- */

static enum MHD_Result interrupt_session(struct pbx_server *s, struct MHD_Connection *c,
                                         struct request_ctx *ctx, const struct target *t,
                                         const char *owner)
{
    struct session *e = NULL;
    enum MHD_Result ret;
    bool done;

    if (take(s, c, ctx, t, owner, SESSION_READ, &e, &ret) < 0)
        return ret;
    done = pbx__session_table_interrupt(s->sessions, e);
    pbx__session_table_put(s->sessions, e, SESSION_READ, 0);
    return pbx__http_send_json(c, ctx, s, 200, json_pack("{s:b}", "interrupted", done), 0);
}

static enum MHD_Result restart_session(struct pbx_server *s, struct MHD_Connection *c,
                                       struct request_ctx *ctx, const struct target *t,
                                       const char *owner)
{
    struct pbx_error *err = NULL;
    struct session *e = NULL;
    enum MHD_Result ret;

    if (take(s, c, ctx, t, owner, SESSION_CALL, &e, &ret) < 0)
        return ret;
    if (pbx_session_restart(e->ps, &err) < 0) {
        ret = send_engine_error(s, c, ctx, e, SESSION_CALL, err);
        pbx_error_free(&err);
        return ret;
    }
    return send_session(s, c, ctx, e, SESSION_CALL, 200);
}

/* ---- the files of /work ---- */

static enum MHD_Result file_op(struct pbx_server *s, struct MHD_Connection *c,
                               struct request_ctx *ctx, const struct target *t, const char *owner,
                               const char *method)
{
    struct pbx_error *err = NULL;
    struct session *e = NULL;
    enum MHD_Result ret;
    json_t *list = NULL;
    char *data = NULL;
    size_t len = 0;
    char msg[128];
    bool existed;
    int status;

    if (t->op == OP_FILE && !pbx__sessions_path_ok(t->path, msg, sizeof(msg)))
        return send_error(s, c, ctx, "ValidationError", msg, 0, NULL);
    if (take(s, c, ctx, t, owner, SESSION_CALL, &e, &ret) < 0)
        return ret;
    if (t->op == OP_FILES) {
        if (pbx_session_file_list(e->ps, &list, &err) < 0)
            goto fail;
        pbx__session_table_put(s->sessions, e, SESSION_CALL, 0);
        return pbx__http_send_json(c, ctx, s, 200, json_pack("{s:o}", "files", list), 0);
    }
    if (is(method, "PUT")) {
        existed = pbx__sessions_file_exists(e->ps, t->path);
        if (pbx_session_file_put(e->ps, t->path, ctx->body.data ? ctx->body.data : "",
                                 ctx->body.len, &err) < 0)
            goto fail;
        len = ctx->body.len;
        pbx_buf_release(&ctx->body);
        pbx__session_table_put(s->sessions, e, SESSION_CALL, 0);
        status = existed ? 200 : 201;
        return pbx__http_send_json(
            c, ctx, s, status, json_pack("{s:s, s:I}", "path", t->path, "size", (json_int_t)len),
            0);
    }
    if (is(method, "DELETE")) {
        if (pbx_session_file_delete(e->ps, t->path, &err) < 0)
            goto fail;
        pbx__session_table_put(s->sessions, e, SESSION_CALL, 0);
        return send_bytes(s, c, ctx, 204, NULL, 0, NULL);
    }
    if (pbx_session_file_get(e->ps, t->path, &data, &len, &err) < 0)
        goto fail;
    pbx__session_table_put(s->sessions, e, SESSION_CALL, 0);
    /* The answer is held until it has left: it counts in the memory for requests in flight. */
    if (!pbx__server_budget_take(s, ctx, len)) {
        free(data);
        return pbx__server_budget_spent(s, c, ctx);
    }
    return send_bytes(s, c, ctx, 200, data, len, "application/octet-stream");
fail:
    ret = send_engine_error(s, c, ctx, e, SESSION_CALL, err);
    pbx_error_free(&err);
    return ret;
}

/* ---- POST /v1/sessions/{id}/execute: hooks into execute.c's pipeline ---- */

static enum MHD_Result execute_in(struct pbx_server *s, struct MHD_Connection *c,
                                  struct request_ctx *ctx, const struct target *t)
{
    struct pbx_execute_hooks hooks;

    pbx__sessions_call_hooks(s, ctx->client, t->id, &hooks);
    return pbx__execute_handle_session(s, c, ctx, &hooks);
}

/* ---- the routes ---- */

enum MHD_Result pbx__sessions_handle(struct pbx_server *s, struct MHD_Connection *c,
                                     struct request_ctx *ctx, const char *url, const char *method)
{
    struct pbx_caller who;
    struct pbx_error *err = NULL;
    const char *etype = NULL;
    struct target t;
    enum MHD_Result ret;
    char owner[320];
    char msg[256];

    parse_target(url, &t);
    if (t.op == OP_NONE)
        return send_error(s, c, ctx, "NotFound", "no such endpoint; see /openapi.json", 0, NULL);
    ctx->allow = allowed[t.op];
    if (!takes(t.op, method)) {
        snprintf(msg, sizeof(msg), "%s is not allowed here; %s takes %.*s", ctx->method, ctx->path,
                 (int)(strlen(allowed[t.op]) - strlen(", OPTIONS")), allowed[t.op]);
        return send_error(s, c, ctx, "MethodNotAllowed", msg, 0, NULL);
    }
    /* A call resolves its caller in the pipeline, as an execution does. */
    if (t.op == OP_EXECUTE)
        return execute_in(s, c, ctx, &t);
    if (pbx__auth_resolve(s, c, NULL, &who, &etype, &err) < 0) {
        ret = send_error(s, c, ctx, etype, err->msg, 0, NULL);
        pbx_error_free(&err);
        pbx_caller_release(&who);
        return ret;
    }
    pbx__sessions_owner(&who, ctx->client, owner, sizeof(owner));
    switch (t.op) {
    case OP_LIST:
        ret = is(method, "POST") ? open_session(s, c, ctx, &who) : list_sessions(s, c, ctx, owner);
        break;
    case OP_ONE:
        if (is(method, "PATCH")) {
            ret = patch_session(s, c, ctx, &t, &who, owner);
        } else if (is(method, "DELETE")) {
            ret = delete_session(s, c, ctx, &t, owner);
        } else {
            struct pbx_refusal no = {0};
            struct session *e = NULL;
            bool elsewhere = pbx__sessions_misdirected(s, t.id, &no);
            int rc = t.id_too_long || elsewhere
                         ? -PBX_E_NOTFOUND
                         : pbx__session_table_take(s->sessions, t.id, owner, SESSION_READ, &e);

            /* A session that ended is shown dead, with why, while its tombstone lasts. */
            if (elsewhere)
                ret = pbx__http_send_refusal(c, ctx, s, &no);
            else if (rc == -PBX_E_NOTFOUND)
                ret = send_error(s, c, ctx, "NotFound", pbx__sessions_unknown(t.id), 0, NULL);
            else
                ret = send_session(s, c, ctx, e, SESSION_READ, 200);
        }
        break;
    case OP_INTERRUPT:
        ret = interrupt_session(s, c, ctx, &t, owner);
        break;
    case OP_RESTART:
        ret = restart_session(s, c, ctx, &t, owner);
        break;
    default:
        ret = file_op(s, c, ctx, &t, owner, method);
        break;
    }
    pbx_caller_release(&who);
    return ret;
}
