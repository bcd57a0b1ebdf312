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
#include "server/session_table.h"
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
    struct MHD_Response *r = MHD_create_response_from_buffer(
        len, data, data != NULL ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    enum MHD_Result ret;

    if (content_type != NULL)
        MHD_add_response_header(r, "Content-Type", content_type);
    MHD_add_response_header(r, "Cache-Control", "no-store");
    pbx__http_add_headers(r, c, ctx, s);
    ret = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    ctx->answered = true;
    ctx->status = status;
    return ret;
}

static enum MHD_Result send_error(struct pbx_server *s, struct MHD_Connection *c,
                                  struct request_ctx *ctx, const char *type, const char *msg,
                                  unsigned retry_after, json_t *extra)
{
    return pbx__http_send_error(c, ctx, s, type, msg, retry_after, extra);
}

/* The 404 of a session id the caller has none of. */
static const char *unknown_message(const char *id)
{
    size_t n = strlen(id);

    /* A well-formed id may be of an earlier run of the server: nothing tells it from a forged one.
     */
    if (n == SESSION_ID_LEN && strncmp(id, "ses_", 4) == 0 &&
        strspn(id + 4, "0123456789abcdef") == 32)
        return "no such session: sessions end when the server restarts";
    return "no such session: that is not a session id";
}

static void iso(uint64_t ms, char *out, size_t len)
{
    pbx__http_iso_time(ms, out, len);
}

static json_t *time_or_null(uint64_t ms)
{
    char t[64];

    if (ms == 0)
        return json_null();
    iso(ms, t, sizeof(t));
    return json_string(t);
}

/* A session as every answer shows it (a new reference). */
static json_t *session_json(const struct session_view *v)
{
    const struct pbx_limits *l = v->limits;

    return json_pack(
        "{s:s, s:s, s:o, s:I, s:I, s:o, s:o, s:o, s:o, s:{s:f, s:f, s:I, s:i, s:I, s:i, s:I, s:I, "
        "s:i, s:i}}",
        "id", v->id, "status", v->status, "dead_reason",
        v->reason != NULL ? json_string(v->reason) : json_null(), "execution_count",
        (json_int_t)v->execution_count, "memory_bytes", (json_int_t)v->memory_bytes, "created_at",
        time_or_null(v->created_ms), "expires_at", time_or_null(v->expires_ms), "idle_expires_at",
        time_or_null(v->idle_expires_ms), "ended_at", time_or_null(v->ended_ms), "limits",
        "timeout_s", l->wall_ms / 1000.0, "cpu_s", l->cpu_ms / 1000.0, "memory_mb",
        (json_int_t)(l->memory_bytes >> 20), "pids", (int)l->pids, "disk_bytes",
        (json_int_t)l->disk_bytes, "input_files", (int)l->input_files, "input_file_bytes",
        (json_int_t)l->input_file_bytes, "return_file_bytes", (json_int_t)l->output_file_bytes,
        "idle_ttl_s", (int)v->idle_ttl_s, "max_lifetime_s", (int)v->lifetime_s);
}

/* Answer `e` (held, given back here) as it is now, with `status`. */
static enum MHD_Result send_session(struct pbx_server *s, struct MHD_Connection *c,
                                    struct request_ctx *ctx, struct session *e,
                                    enum session_take how, int status)
{
    struct session_view v;
    json_t *body;

    /* A call held it: over now, so the session is shown as the next caller finds it. */
    if (how == SESSION_CALL)
        pbx__session_table_downgrade(s->sessions, e);
    pbx__session_table_view(s->sessions, e, &v);
    body = session_json(&v);
    pbx__session_table_put(s->sessions, e, SESSION_READ, 0);
    return pbx__http_send_json(c, ctx, s, status, body, 0);
}

/* {"reason": why} for a 410 (a new reference). */
static json_t *gone_extra(unsigned why)
{
    return json_pack("{s:s}", "reason", pbx__session_table_why_name(why));
}

/* Answer 410 for the ended session `e` (held, given back here as `how`). */
static enum MHD_Result send_gone(struct pbx_server *s, struct MHD_Connection *c,
                                 struct request_ctx *ctx, struct session *e, enum session_take how)
{
    unsigned why = pbx__session_table_why(s->sessions, e);
    char msg[160];

    pbx__session_table_put(s->sessions, e, how, 0);
    snprintf(msg, sizeof(msg), "the session has ended (%s); open a new one",
             pbx__session_table_why_name(why));
    return send_error(s, c, ctx, "SessionDead", msg, 0, gone_extra(why));
}

/* ---- who, and their session ---- */

/* Whose sessions a caller's are: its key's, the admin's, or its address's (`client`). */
static void owner_of(const struct pbx_caller *who, const char *client, char *out, size_t len)
{
    if (who->keyed)
        snprintf(out, len, "key:%s", who->key_name);
    else if (who->admin)
        snprintf(out, len, "admin");
    else
        snprintf(out, len, "ip:%s", client);
}

/*
 * The caller's session `id`, taken `how`: 0 with *out, or -1 after answering
 * (404, 409, 410).
 */
static int take(struct pbx_server *s, struct MHD_Connection *c, struct request_ctx *ctx,
                const struct target *t, const char *owner, enum session_take how,
                struct session **out, enum MHD_Result *ret)
{
    int rc = t->id_too_long ? -PBX_E_NOTFOUND
                            : pbx__session_table_take(s->sessions, t->id, owner, how, out);

    if (rc == -PBX_E_NOTFOUND)
        *ret = send_error(s, c, ctx, "NotFound", unknown_message(t->id), 0, NULL);
    else if (rc == -PBX_E_BUSY)
        *ret = send_error(s, c, ctx, "SessionBusy",
                          "another call of this session is running; a session runs one at a time",
                          1, NULL);
    else if (rc == -PBX_E_GONE)
        *ret = send_gone(s, c, ctx, *out, SESSION_READ);
    return rc < 0 ? -1 : 0;
}

/*
 * Answer the engine's refusal `err` of an operation on the session `e`
 * (held as `how`, given back here): by the error table, the session ended
 * first when the engine says it has.
 */
static enum MHD_Result send_engine_error(struct pbx_server *s, struct MHD_Connection *c,
                                         struct request_ctx *ctx, struct session *e,
                                         enum session_take how, struct pbx_error *err)
{
    const struct pbx_errtable_row *row = pbx_errtable_of_code(err->code, false);
    enum MHD_Result ret;

    if (row->id == PBX_ERRTABLE_SESSION_DEAD) {
        struct pbx_session_state st;

        pbx_session_state(e->ps, &st);
        pbx__session_table_end(s->sessions, e,
                               st.ended != PBX_SESSION_ALIVE ? st.ended : PBX_SESSION_LOST);
        ret = send_gone(s, c, ctx, e, how);
    } else {
        if (row->id == PBX_ERRTABLE_INTERNAL_SERVER_ERROR)
            pbx_log(PBX_LOG_ERROR, "session %s: %s", e->id, err->msg);
        pbx__session_table_put(s->sessions, e, how, 0);
        ret =
            send_error(s, c, ctx, row->type,
                       row->id == PBX_ERRTABLE_INTERNAL_SERVER_ERROR ? "the execution engine failed"
                                                                     : err->msg,
                       0, NULL);
    }
    return ret;
}

/* ---- POST /v1/sessions ---- */

/* Whose per-minute window a request counts against: "key:NAME" or "ip:ADDRESS", as execute.c's. */
static void client_of(const struct pbx_caller *who, const struct request_ctx *ctx, char *out,
                      size_t len)
{
    snprintf(out, len, "%s%s",
             who->keyed ? "key:" : "ip:", who->keyed ? who->key_name : ctx->client);
}

/* A key's longest span is one a request may ask. */
_Static_assert(PBX_CALLER_SPAN_MAX_S == PBX_REQUEST_SPAN_MAX_S, "a span's bounds are one");

/*
 * A span asked (or `dflt`), checked against the caller's most (its key's, or
 * the server's): over it is a 400, as a timeout over the caller's limit is
 * on /v1/execute, never cut short unasked.  0, or -1 with *msg.
 */
static int span(bool has, uint32_t asked, unsigned dflt, unsigned most, const char *field,
                uint32_t *out, char *msg, size_t len)
{
    *out = has ? asked : dflt;
    if (*out > most) {
        snprintf(msg, len, "`%s` %u is over this caller's limit of %u s", field, (unsigned)*out,
                 most);
        return -1;
    }
    return 0;
}

static enum MHD_Result open_session(struct pbx_server *s, struct MHD_Connection *c,
                                    struct request_ctx *ctx, const struct pbx_caller *who,
                                    const char *owner)
{
    const struct pbx_server_config *cfg = s->cfg;
    struct pbx_http_request req;
    struct pbx_caller_ask ask;
    struct pbx_limits limits;
    struct pbx_error *err = NULL;
    struct pbx_session *ps = NULL;
    const char *etype = "ValidationError";
    const char *whose = NULL;
    struct session *e;
    uint32_t idle, life;
    unsigned retry = 0;
    enum MHD_Result ret;
    char client[340];
    char msg[200];

    if (pbx__request_parse_session(ctx->body.data, ctx->body.len, false, &s->caps, &req, &etype,
                                   &err) < 0) {
        ret = send_error(s, c, ctx, err->code == PBX_E_TOO_LARGE ? "PayloadTooLarge" : etype,
                         err->msg, 0, NULL);
        pbx_error_free(&err);
        return ret;
    }
    pbx_buf_release(&ctx->body);
    ask = (struct pbx_caller_ask){.has_timeout = req.has_timeout,
                                  .timeout_s = req.timeout_s,
                                  .has_memory = req.has_memory,
                                  .memory_mb = req.memory_mb};
    if (pbx_caller_limits(&s->callers, who, &ask, &limits, &etype, &err) < 0) {
        ret = send_error(s, c, ctx, etype, err->msg, 0, NULL);
        goto out;
    }
    /* The caller's own spans: its key's longest, and the server's defaults within them. */
    if (span(req.has_idle_ttl, req.idle_ttl_s, who->sessions.idle_ttl_s,
             who->sessions.max_idle_ttl_s, "idle_ttl_s", &idle, msg, sizeof(msg)) < 0 ||
        span(req.has_lifetime, req.max_lifetime_s, who->sessions.lifetime_s,
             who->sessions.max_lifetime_s, "max_lifetime_s", &life, msg, sizeof(msg)) < 0) {
        ret = send_error(s, c, ctx, "ValidationError", msg, 0, NULL);
        goto out;
    }
    if (s->ex.session_open == NULL || cfg->sessions_max == 0) {
        ret = send_error(s, c, ctx, "NotFound", "this server runs no sessions", 0, NULL);
        goto out;
    }
    /* The caller's cap (its key's, else the server's per key or per client), then the total. */
    e = pbx__session_table_reserve(s->sessions, owner,
                                   who->keyed || who->admin ? PBX_TRUST_KEYED : PBX_TRUST_ANONYMOUS,
                                   who->sessions.open, &retry, &whose);
    if (e == NULL) {
        snprintf(msg, sizeof(msg),
                 "as many sessions are open as %s may have; end one (DELETE /v1/sessions/{id}) or "
                 "wait for one to expire",
                 whose);
        ret = send_error(s, c, ctx, "SessionLimitExceeded", msg, retry, NULL);
        goto out;
    }
    /* Opening one counts in the caller's per-minute window, as a request that runs code. */
    client_of(who, ctx, client, sizeof(client));
    if (!who->admin &&
        !pbx__admit_rate(s->admit, client, who->rpm, pbx_clock_ms(CLOCK_REALTIME), &retry)) {
        pbx__session_table_opened(s->sessions, e, NULL, NULL, 0, 0);
        snprintf(msg, sizeof(msg), "rate limit of %" PRId64 " requests per minute reached",
                 who->rpm);
        ret = send_error(s, c, ctx, "RateLimitExceeded", msg, retry, NULL);
        goto out;
    }
    if (s->ex.session_open(s->ex.arg, e->trust, &limits, req.files, req.nfiles, &ps, &err) < 0) {
        const struct pbx_errtable_row *row = pbx_errtable_of_code(err->code, false);
        bool internal = row->id == PBX_ERRTABLE_INTERNAL_SERVER_ERROR;

        pbx__session_table_opened(s->sessions, e, NULL, NULL, 0, 0);
        if (internal)
            pbx_log(PBX_LOG_ERROR, "open a session: %s", err->msg);
        ret = send_error(s, c, ctx, row->type, internal ? "the execution engine failed" : err->msg,
                         0, NULL);
        goto out;
    }
    pbx__session_table_opened(s->sessions, e, ps, &limits, idle, life);
    ret = send_session(s, c, ctx, e, SESSION_READ, 201);
out:
    pbx_error_free(&err);
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
        json_array_append_new(list, session_json(&v));
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

    if (pbx__request_parse_session(ctx->body.data, ctx->body.len, true, &s->caps, &req, &etype,
                                   &err) < 0) {
        ret = send_error(s, c, ctx, etype, err->msg, 0, NULL);
        pbx_error_free(&err);
        return ret;
    }
    /* Nothing of it is owned (it holds two numbers), so it needs no release. */
    if (take(s, c, ctx, t, owner, SESSION_READ, &e, &ret) < 0)
        return ret;
    pbx__session_table_view(s->sessions, e, &v);
    if (span(req.has_idle_ttl, req.idle_ttl_s, v.idle_ttl_s, who->sessions.max_idle_ttl_s,
             "idle_ttl_s", &idle, msg, sizeof(msg)) < 0 ||
        span(req.has_lifetime, req.max_lifetime_s, v.lifetime_s, who->sessions.max_lifetime_s,
             "max_lifetime_s", &life, msg, sizeof(msg)) < 0) {
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
    struct session *e = NULL;
    int rc = t->id_too_long ? -PBX_E_NOTFOUND
                            : pbx__session_table_take(s->sessions, t->id, owner, SESSION_READ, &e);

    if (rc == -PBX_E_NOTFOUND)
        return send_error(s, c, ctx, "NotFound", unknown_message(t->id), 0, NULL);
    /* Ended already: deleting it again changes nothing. */
    if (rc == -PBX_E_GONE) {
        pbx__session_table_put(s->sessions, e, SESSION_READ, 0);
        return send_bytes(s, c, ctx, 204, NULL, 0, NULL);
    }
    pbx__session_table_delete(s->sessions, e);
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

/*
 * Refuse a path the engine need not see: empty, not UTF-8 (the answers name
 * it in JSON), or with a control character (NUL among them).
 */
static bool path_ok(const char *path, char *msg, size_t len)
{
    if (*path == '\0') {
        snprintf(msg, len, "the file path is empty");
        return false;
    }
    if (!pbx_utf8_valid(path, strlen(path))) {
        snprintf(msg, len, "the file path is not UTF-8");
        return false;
    }
    for (const unsigned char *p = (const unsigned char *)path; *p != '\0'; p++) {
        if (*p < 0x20 || *p == 0x7f) {
            snprintf(msg, len, "the file path holds a control character");
            return false;
        }
    }
    return true;
}

/* Whether /work holds a file at `path`, by the list of its files. */
static bool file_exists(struct pbx_session *ps, const char *path)
{
    struct pbx_error *err = NULL;
    json_t *list = NULL;
    bool found = false;
    size_t i;
    json_t *f;

    if (pbx_session_file_list(ps, &list, &err) < 0) {
        pbx_error_free(&err);
        return false;
    }
    json_array_foreach(list, i, f)
    {
        const char *p = json_string_value(json_object_get(f, "path"));

        if (p != NULL && strcmp(p, path) == 0)
            found = true;
    }
    json_decref(list);
    return found;
}

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

    if (t->op == OP_FILE && !path_ok(t->path, msg, sizeof(msg)))
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
        existed = file_exists(e->ps, t->path);
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

/* One call of a session, as the hooks see it: the handler's, then the stream's if streamed. */
struct call {
    struct pbx_server *s;           /* the server */
    char client[64];                /* the client's address, as the request had it */
    struct target t;                /* its URL */
    struct session *e;              /* claim: the session, taken for the call */
    struct pbx_session_call result; /* run: what the call did to it */
    unsigned gone;                  /* claim, run: why it had ended, when it had */
};

static int call_claim(void *arg, const struct pbx_http_request *req, const struct pbx_caller *who,
                      struct pbx_limits *limits, const char **etype, unsigned *retry_after,
                      struct pbx_error **err)
{
    struct call *k = arg;
    char owner[320];
    int rc;

    owner_of(who, k->client, owner, sizeof(owner));
    rc = k->t.id_too_long
             ? -PBX_E_NOTFOUND
             : pbx__session_table_take(k->s->sessions, k->t.id, owner, SESSION_CALL, &k->e);
    if (rc == -PBX_E_GONE) {
        k->gone = pbx__session_table_why(k->s->sessions, k->e);
        pbx__session_table_put(k->s->sessions, k->e, SESSION_READ, 0);
        k->e = NULL;
        *etype = "SessionDead";
        return pbx_error_set(err, PBX_E_GONE, "the session has ended (%s); open a new one",
                             pbx__session_table_why_name(k->gone));
    }
    if (rc == -PBX_E_BUSY) {
        *etype = "SessionBusy";
        *retry_after = 1;
        return pbx_error_set(err, PBX_E_BUSY,
                             "another call of this session is running; a session runs one at a "
                             "time");
    }
    if (rc < 0) {
        *etype = "NotFound";
        return pbx_error_set(err, PBX_E_NOTFOUND, "%s", unknown_message(k->t.id));
    }
    /* The call's time limits are its own when it asks, else the session's; the rest the session's.
     */
    if (!req->has_timeout) {
        limits->wall_ms = k->e->limits.wall_ms;
        limits->cpu_ms = k->e->limits.cpu_ms;
    }
    limits->memory_bytes = k->e->limits.memory_bytes;
    limits->pids = k->e->limits.pids;
    limits->disk_bytes = k->e->limits.disk_bytes;
    limits->disk_inodes = k->e->limits.disk_inodes;
    return 0;
}

static int call_run(void *arg, const struct pbx_exec_request *req, struct pbx_exec_result *res,
                    struct pbx_error **err)
{
    struct call *k = arg;
    int rc = pbx_session_execute(k->e->ps, req, res, &k->result, err);

    if (rc < 0 && (*err)->code == PBX_E_GONE) {
        struct pbx_session_state st;

        pbx_session_state(k->e->ps, &st);
        k->gone = st.ended != PBX_SESSION_ALIVE ? st.ended : PBX_SESSION_LOST;
        pbx__session_table_end(k->s->sessions, k->e, k->gone);
    } else if (rc == 0 && (k->result.ended != PBX_SESSION_ALIVE || !k->result.state_preserved)) {
        /* It ended during the call: it is closed as the call gives it back. */
        pbx__session_table_end(k->s->sessions, k->e,
                               k->result.ended != PBX_SESSION_ALIVE ? k->result.ended
                                                                    : PBX_SESSION_CRASHED);
    }
    return rc;
}

static json_t *call_refusal(void *arg, int code)
{
    struct call *k = arg;

    return code == PBX_E_GONE || code == -PBX_E_GONE ? gone_extra(k->gone) : NULL;
}

static void call_answer(void *arg, json_t *body)
{
    struct call *k = arg;
    unsigned why;

    why = pbx__session_table_why(k->s->sessions, k->e);
    json_object_set_new(body, "execution_count",
                        json_integer((json_int_t)k->result.execution_count));
    json_object_set_new(body, "state_preserved", json_boolean(k->result.state_preserved));
    json_object_set_new(body, "session",
                        json_pack("{s:s, s:s, s:o}", "id", k->e->id, "status",
                                  why != SESSION_LIVE ? "dead" : "idle", "dead_reason",
                                  why != SESSION_LIVE
                                      ? json_string(pbx__session_table_why_name(why))
                                      : json_null()));
}

static void call_release(void *arg)
{
    struct call *k = arg;

    if (k->e != NULL)
        pbx__session_table_put(k->s->sessions, k->e, SESSION_CALL, k->result.execution_count);
    free(k);
}

static enum MHD_Result execute_in(struct pbx_server *s, struct MHD_Connection *c,
                                  struct request_ctx *ctx, const struct target *t)
{
    struct call *k = xcalloc(1, sizeof(*k));
    const struct pbx_execute_hooks hooks = {
        .claim = call_claim,
        .run = call_run,
        .refusal = call_refusal,
        .answer = call_answer,
        .release = call_release,
        .arg = k, /* freed by call_release() */
    };

    k->s = s;
    k->t = *t;
    snprintf(k->client, sizeof(k->client), "%s", ctx->client);

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
    owner_of(&who, ctx->client, owner, sizeof(owner));
    switch (t.op) {
    case OP_LIST:
        ret = is(method, "POST") ? open_session(s, c, ctx, &who, owner)
                                 : list_sessions(s, c, ctx, owner);
        break;
    case OP_ONE:
        if (is(method, "PATCH")) {
            ret = patch_session(s, c, ctx, &t, &who, owner);
        } else if (is(method, "DELETE")) {
            ret = delete_session(s, c, ctx, &t, owner);
        } else {
            struct session *e = NULL;
            int rc = t.id_too_long
                         ? -PBX_E_NOTFOUND
                         : pbx__session_table_take(s->sessions, t.id, owner, SESSION_READ, &e);

            /* A session that ended is shown dead, with why, while its tombstone lasts. */
            if (rc == -PBX_E_NOTFOUND)
                ret = send_error(s, c, ctx, "NotFound", unknown_message(t.id), 0, NULL);
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
