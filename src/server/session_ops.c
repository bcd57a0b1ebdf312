/*
 * The operations on a caller's sessions that /v1/sessions (sessions.c) and
 * MCP's tools (mcp_backend.c) share, each saying its refusal as a struct
 * pbx_refusal for its caller to answer: open, take, end, the files' checks,
 * and the hooks of a call into execute.c's pipeline.
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
#include "server/session_ops.h"
#include "common/banned.h"

void pbx__sessions_owner(const struct pbx_caller *who, const char *client, char *out, size_t len)
{
    if (who->keyed)
        snprintf(out, len, "key:%s", who->key_name);
    else if (who->admin)
        snprintf(out, len, "admin");
    else
        snprintf(out, len, "ip:%s", client);
}

const char *pbx__sessions_unknown(const char *id)
{
    char node[PBX_NODE_ID_MAX + 1];

    /* A well-formed id may be of an earlier run of the server: nothing tells it from a forged one.
     */
    if (pbx__id_parse("ses", id, node))
        return "no such session: sessions end when the server restarts";
    return "no such session: that is not a session id";
}

static json_t *time_or_null(uint64_t ms)
{
    char t[64];

    if (ms == 0)
        return json_null();
    pbx__http_iso_time(ms, t, sizeof(t));
    return json_string(t);
}

/* The refusal of a request for a session of the node `node`, which is not this one. */
static void elsewhere(const char *node, struct pbx_refusal *no)
{
    char msg[200];

    snprintf(msg, sizeof(msg),
             "this session lives on node `%s`, not this one: send its requests there (a proxy "
             "routes /v1/sessions/ses_%s_... to it)",
             node, node);
    pbx__refusal_set(no, "MisdirectedRequest", msg, 0, json_pack("{s:s}", "node", node));
}

bool pbx__sessions_misdirected(const struct pbx_server *s, const char *id, struct pbx_refusal *no)
{
    char node[PBX_NODE_ID_MAX + 1];

    if (!pbx__id_elsewhere("ses", id, s->cfg->node_id, node))
        return false;
    elsewhere(node, no);
    return true;
}

json_t *pbx__sessions_json(const struct session_view *v)
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

json_t *pbx__sessions_show(struct pbx_server *s, struct session *e)
{
    struct session_view v;
    json_t *body;

    pbx__session_table_view(s->sessions, e, &v);
    body = pbx__sessions_json(&v);
    pbx__session_table_put(s->sessions, e, SESSION_READ, 0);
    return body;
}

/* {"reason": why} for a SessionDead (a new reference). */
static json_t *gone_extra(unsigned why)
{
    return json_pack("{s:s}", "reason", pbx__session_table_why_name(why));
}

void pbx__sessions_gone(struct pbx_server *s, struct session *e, enum session_take how,
                        struct pbx_refusal *no)
{
    unsigned why = pbx__session_table_why(s->sessions, e);
    char msg[160];

    pbx__session_table_put(s->sessions, e, how, 0);
    snprintf(msg, sizeof(msg), "the session has ended (%s); open a new one",
             pbx__session_table_why_name(why));
    pbx__refusal_set(no, "SessionDead", msg, 0, gone_extra(why));
}

int pbx__sessions_take(struct pbx_server *s, const char *id, const char *owner,
                       enum session_take how, struct session **out, struct pbx_refusal *no)
{
    int rc;

    if (pbx__sessions_misdirected(s, id, no))
        return -1;
    rc = pbx__session_table_take(s->sessions, id, owner, how, out);

    if (rc == -PBX_E_NOTFOUND)
        pbx__refusal_set(no, "NotFound", pbx__sessions_unknown(id), 0, NULL);
    else if (rc == -PBX_E_BUSY)
        pbx__refusal_set(no, "SessionBusy",
                         "another call of this session is running; a session runs one at a time", 1,
                         NULL);
    else if (rc == -PBX_E_GONE)
        pbx__sessions_gone(s, *out, SESSION_READ, no);
    return rc < 0 ? -1 : 0;
}

void pbx__sessions_engine_refusal(struct pbx_server *s, struct session *e, enum session_take how,
                                  const struct pbx_error *err, struct pbx_refusal *no)
{
    const struct pbx_errtable_row *row = pbx_errtable_of_code(err->code, false);

    if (row->id == PBX_ERRTABLE_SESSION_DEAD) {
        struct pbx_session_state st;

        pbx_session_state(e->ps, &st);
        pbx__session_table_end(s->sessions, e,
                               st.ended != PBX_SESSION_ALIVE ? st.ended : PBX_SESSION_LOST);
        pbx__sessions_gone(s, e, how, no);
        return;
    }
    if (row->id == PBX_ERRTABLE_INTERNAL_SERVER_ERROR)
        pbx_log(PBX_LOG_ERROR, "session %s: %s", e->id, err->msg);
    pbx__session_table_put(s->sessions, e, how, 0);
    pbx__refusal_set(no, row->type,
                     row->id == PBX_ERRTABLE_INTERNAL_SERVER_ERROR ? "the execution engine failed"
                                                                   : err->msg,
                     0, NULL);
}

/* A key's longest span is one a request may ask. */
_Static_assert(PBX_CALLER_SPAN_MAX_S == PBX_REQUEST_SPAN_MAX_S, "a span's bounds are one");

/*
 * Over the caller's most is a refusal, as a timeout over the caller's limit
 * is on /v1/execute, never cut short unasked.
 */
int pbx__sessions_span(bool has, uint32_t asked, unsigned dflt, unsigned most, const char *field,
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

int pbx__sessions_open(struct pbx_server *s, const struct pbx_caller *who, const char *client,
                       const struct pbx_http_request *req, json_t **out, struct pbx_refusal *no)
{
    const struct pbx_caller_ask ask = {.has_timeout = req->has_timeout,
                                       .timeout_s = req->timeout_s,
                                       .has_memory = req->has_memory,
                                       .memory_mb = req->memory_mb};
    struct pbx_limits limits;
    struct pbx_error *err = NULL;
    struct pbx_session *ps = NULL;
    const char *etype = "ValidationError";
    const char *whose = NULL;
    struct session *e;
    uint32_t idle, life;
    unsigned retry = 0;
    char owner[320];
    char window[340];
    char msg[200];

    *out = NULL;
    if (pbx_caller_limits(&s->callers, who, &ask, &limits, &etype, &err) < 0) {
        pbx__refusal_set(no, etype, err->msg, 0, NULL);
        pbx_error_free(&err);
        return -1;
    }
    /* The caller's own spans: its key's longest, and the server's defaults within them. */
    if (pbx__sessions_span(req->has_idle_ttl, req->idle_ttl_s, who->sessions.idle_ttl_s,
                           who->sessions.max_idle_ttl_s, "idle_ttl_s", &idle, msg,
                           sizeof(msg)) < 0 ||
        pbx__sessions_span(req->has_lifetime, req->max_lifetime_s, who->sessions.lifetime_s,
                           who->sessions.max_lifetime_s, "max_lifetime_s", &life, msg,
                           sizeof(msg)) < 0) {
        pbx__refusal_set(no, "ValidationError", msg, 0, NULL);
        return -1;
    }
    if (s->ex.session_open == NULL || s->cfg->sessions_max == 0) {
        pbx__refusal_set(no, "NotFound", "this server runs no sessions", 0, NULL);
        return -1;
    }
    /* The caller's cap (its key's, else the server's per key or per client), then the total. */
    pbx__sessions_owner(who, client, owner, sizeof(owner));
    e = pbx__session_table_reserve(s->sessions, owner,
                                   who->keyed || who->admin ? PBX_TRUST_KEYED : PBX_TRUST_ANONYMOUS,
                                   who->sessions.open, &retry, &whose);
    if (e == NULL) {
        snprintf(msg, sizeof(msg),
                 "as many sessions are open as %s may have; end one or wait for one to expire",
                 whose);
        pbx__refusal_set(no, "SessionLimitExceeded", msg, retry, NULL);
        return -1;
    }
    /* Opening one counts in the caller's per-minute window, as a request that runs code. */
    snprintf(window, sizeof(window), "%s%s",
             who->keyed ? "key:" : "ip:", who->keyed ? who->key_name : client);
    if (!who->admin && !pbx__admit_rate_shared(s->admit, s->store, window, who->rpm,
                                               pbx_clock_ms(CLOCK_REALTIME), &retry)) {
        pbx__session_table_opened(s->sessions, e, NULL, NULL, 0, 0);
        snprintf(msg, sizeof(msg), "rate limit of %" PRId64 " requests per minute reached",
                 who->rpm);
        pbx__refusal_set(no, "RateLimitExceeded", msg, retry, NULL);
        return -1;
    }
    if (s->ex.session_open(s->ex.arg, e->trust, &limits, req->files, req->nfiles, &ps, &err) < 0) {
        const struct pbx_errtable_row *row = pbx_errtable_of_code(err->code, false);
        bool internal = row->id == PBX_ERRTABLE_INTERNAL_SERVER_ERROR;

        pbx__session_table_opened(s->sessions, e, NULL, NULL, 0, 0);
        if (internal)
            pbx_log(PBX_LOG_ERROR, "open a session: %s", err->msg);
        pbx__refusal_set(no, row->type, internal ? "the execution engine failed" : err->msg, 0,
                         NULL);
        pbx_error_free(&err);
        return -1;
    }
    pbx__session_table_opened(s->sessions, e, ps, &limits, idle, life);
    *out = pbx__sessions_show(s, e);
    return 0;
}

int pbx__sessions_end(struct pbx_server *s, const char *owner, const char *id,
                      struct pbx_refusal *no)
{
    struct session *e = NULL;
    int rc;

    if (pbx__sessions_misdirected(s, id, no))
        return -1;
    rc = pbx__session_table_take(s->sessions, id, owner, SESSION_READ, &e);
    if (rc == -PBX_E_NOTFOUND) {
        pbx__refusal_set(no, "NotFound", pbx__sessions_unknown(id), 0, NULL);
        return -1;
    }
    /* Ended already: ending it again changes nothing. */
    if (rc == -PBX_E_GONE)
        pbx__session_table_put(s->sessions, e, SESSION_READ, 0);
    else
        pbx__session_table_delete(s->sessions, e);
    return 0;
}

/*
 * Empty, not UTF-8 (the answers name it in JSON), or with a control
 * character (NUL among them).
 */
bool pbx__sessions_path_ok(const char *path, char *msg, size_t len)
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

/* By the list of its files. */
bool pbx__sessions_file_exists(struct pbx_session *ps, const char *path)
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

/* ---- a call: hooks into execute.c's pipeline ---- */

/* One call of a session, as the hooks see it: the handler's, then the stream's if streamed. */
struct call {
    struct pbx_server *s;           /* the server */
    char client[64];                /* the client's address, as the request had it */
    char id[SESSION_ID_LEN + 2];    /* the session's id (cut: one longer is none) */
    struct session *e;              /* claim: the session, taken for the call */
    struct pbx_session_call result; /* run: what the call did to it */
    unsigned gone;                  /* run: why it ended, when it did */
    json_t *refused;                /* claim: the fields of its refusal, or NULL */
};

static int call_claim(void *arg, const struct pbx_http_request *req, const struct pbx_caller *who,
                      struct pbx_limits *limits, const char **etype, unsigned *retry_after,
                      struct pbx_error **err)
{
    struct call *k = arg;
    struct pbx_refusal no = {0};
    char owner[320];
    int rc;

    pbx__sessions_owner(who, k->client, owner, sizeof(owner));
    if (pbx__sessions_take(k->s, k->id, owner, SESSION_CALL, &k->e, &no) < 0) {
        /* The take's refusal, as the pipeline takes it: type, message, Retry-After, fields. */
        k->e = NULL;
        *etype = no.type;
        *retry_after = no.retry_after;
        k->refused = no.extra;
        no.extra = NULL;
        rc = pbx_error_set(err,
                           strcmp(no.type, "SessionDead") == 0   ? PBX_E_GONE
                           : strcmp(no.type, "SessionBusy") == 0 ? PBX_E_BUSY
                                                                 : PBX_E_NOTFOUND,
                           "%s", no.msg);
        pbx__refusal_release(&no);
        return rc;
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

    if (k->refused != NULL)
        return json_incref(k->refused);
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
    json_decref(k->refused);
    free(k);
}

void pbx__sessions_call_hooks(struct pbx_server *s, const char *client, const char *id,
                              struct pbx_execute_hooks *out)
{
    struct call *k = xcalloc(1, sizeof(*k));

    k->s = s;
    snprintf(k->client, sizeof(k->client), "%s", client);
    snprintf(k->id, sizeof(k->id), "%s", id);
    *out = (struct pbx_execute_hooks){
        .claim = call_claim,
        .run = call_run,
        .refusal = call_refusal,
        .answer = call_answer,
        .release = call_release,
        .arg = k, /* freed by call_release() */
    };
}
