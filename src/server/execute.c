/*
 * POST /execute, POST /execute-with-files and POST /v1/execute: one request
 * as a pipeline of steps, each a function of this file, run by
 * pbx__execute_handle() in this order:
 *
 *   parse    the body into a request: JSON, or the form read part by part
 *            as it arrived (src/server/request.c holds one validator for
 *            both);
 *   resolve  who is calling (its key's header or `api_key`) and what its
 *            policy lets it ask, which gives its execution's limits
 *            (src/policy/caller.c);
 *   admit    its rate window, daily quota and executions at once checked
 *            before it may take a slot or a place in the queue: with a
 *            shared store (Redis) all three charged in one call to it, with
 *            SQLite the request held against this server's window and its
 *            quota read; a slot; the server's memory budget for its answer;
 *            with SQLite the window and the quota charged then;
 *   build    the engine's request;
 *   run      the execution;
 *   audit    its record in the store, and the metrics;
 *   answer   in the dialect the request came in (src/server/compat.c holds
 *            the compatible endpoints' answers).
 *
 * A step that refuses answers at once and ends the pipeline; finish() then
 * gives back what the steps took (the slot, the hold), whatever the outcome.
 *
 * A refusal is recorded (struct pbx_refusal) and answered once the steps
 * are over, so the pipeline also runs code that came another way: MCP's
 * run_python (pbx__execute_direct(), for mcp_backend.c) enters at resolve's
 * limits with a caller its transport resolved, and gets the result object
 * or the refusal back instead of an answer.
 *
 * A call of a session (POST /v1/sessions/{id}/execute, sessions.c) is the
 * same pipeline with hooks (struct pbx_execute_hooks): its body read by the
 * session call's fields, a claim of the session between resolve and admit,
 * the run in the session instead of a fresh cell, and fields of its own in
 * the answer.
 *
 * POST /v1/execute with `Accept: text/event-stream` is answered as a stream
 * of Server-Sent Events (src/server/stream.c): parse, resolve, admit and
 * build refuse as ever, with a JSON error; an admitted execution gets the
 * stream, and run, audit and answer (the result object as the `end` event)
 * happen on the stream's thread, which calls finish() after them.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sodium.h>
#include <strings.h>

#include "common/clock.h"
#include "common/errtable.h"
#include "common/log.h"
#include "common/xalloc.h"
#include "server/audit_spool.h"
#include "server/internal.h"
#include "common/banned.h"

/* How long the mark of a proxy's request id, the idempotency key of a retry, is kept (s). */
#define RID_MARK_S 600

/* The refusal of a request whose quota cannot be checked: the daily quota fails closed. */
#define STORE_DOWN "the store of daily quotas does not answer; retry in a moment"

/* One request as it goes through the steps; each step fills its part. */
struct execution {
    struct pbx_server *s;           /* the server */
    struct MHD_Connection *c;       /* the connection the request came on (direct: NULL) */
    struct request_ctx *ctx;        /* the request as the server read it (streamed: a copy) */
    bool ctx_copied;                /* ctx is the execution's own copy (to free) */
    bool v1;                        /* POST /v1/execute; else the compatible dialect */
    bool streamed;                  /* /v1/execute asked for text/event-stream */
    bool upload;                    /* POST /execute-with-files, a form in S4's shape */
    bool session;                   /* a call of a session: `hooks` hold its steps */
    struct pbx_execute_hooks hooks; /* the session's steps (session only) */
    enum MHD_Result ret;            /* what the handler gives libmicrohttpd */
    struct pbx_http_request req;    /* parse: what the body asks */
    struct pbx_request_shape shape; /* parse: whose rules the compatible dialect follows */
    struct pbx_caller who;          /* resolve: who asks, and what it may */
    bool who_borrowed;              /* direct: `who` is the transport's (not released here) */
    struct pbx_limits limits;       /* resolve: the limits its execution gets */
    char client[300];               /* admit: whose window and quota it counts against */
    bool held;                      /* admit: held in the window, not charged (to let go) */
    bool has_once;                  /* admit: an Idempotency-Key (the client's or the proxy's) */
    char once[129];                 /* admit: that key, charged once a day */
    bool once_rid;                  /* admit: that key is the proxy's request id */
    struct pbx_store_admit ask;     /* admit: the shared store's admission asked */
    struct pbx_store_admission adm; /* admit: its answer */
    char ticket[33];                /* admit: the request's window place and lease there */
    bool shared;                    /* admit: charged in the shared store (to undo, or end) */
    bool leased;                    /* admit: holds a lease of this server's own (to end) */
    bool started;                   /* run: the execution began, so its charge stands */
    bool slot;                      /* admit: holds an execution slot (to leave) */
    int64_t today;                  /* admit: the caller's requests today */
    unsigned active;                /* admit: executions running when it asked for a slot */
    bool clamped;                   /* resolve: the timeout asked was over the caller's limit */
    struct pbx_exec_request ereq;   /* build: what the engine runs */
    bool all_files;                 /* build: no return_files, so every file ("*") is asked */
    struct pbx_exec_result res;     /* run: what the engine gave */
    bool ran;                       /* run: res holds a result (to release) */
    uint64_t t0;                    /* run: when it started, wall clock, ms */
    bool refused;                   /* a step refused: `no` says how, to answer */
    struct pbx_refusal no;          /* that refusal */
};

/* The step refuses the request (`extra` taken over). Returns -1 for the step to return. */
static int refuse_with(struct execution *x, const char *type, const char *msg, unsigned retry_after,
                       json_t *extra)
{
    pbx__refusal_set(&x->no, type, msg, retry_after, extra);
    x->refused = true;
    return -1;
}

static int refuse(struct execution *x, const char *type, const char *msg, unsigned retry_after)
{
    return refuse_with(x, type, msg, retry_after, NULL);
}

/*
 * The type a refused request is answered with: the step's own, but the error
 * table's for one over a limit (PayloadTooLarge on /v1/execute, where an input
 * over its limit is a 413 whether the body was cut off early or read; the
 * compatible /execute keeps its contract's ValidationError).
 */
static const char *refusal_type(const struct execution *x, const struct pbx_error *err,
                                const char *etype)
{
    return err->code == PBX_E_TOO_LARGE ? pbx_errtable_of_code(err->code, !x->v1)->type : etype;
}

/* ---- parse ---- */

/*
 * Answer a refused body: a refusal of S4's schema as FastAPI answers it
 * (422), any other with its type.  Returns -1.
 */
static int refuse_body(struct execution *x, struct pbx_error *err, const char *etype)
{
    if (x->shape.field != NULL)
        x->ret = pbx__compat_unprocessable(x->s, x->c, x->ctx, &x->shape, err->msg);
    else
        refuse(x, refusal_type(x, err, etype), err->msg, 0);
    return -1;
}

/* The request, from the form's parts or the JSON body.  Returns 0, or -1 after answering. */
static int parse(struct execution *x)
{
    const char *ctype = MHD_lookup_connection_value(x->c, MHD_HEADER_KIND, "Content-Type");
    struct request_ctx *ctx = x->ctx;
    struct pbx_error *err = NULL;
    const char *etype = "ValidationError";
    int rc;

    if (ctx->form.pp != NULL) {
        rc = pbx__multipart_finish(&ctx->form, &x->req, &x->shape, &err);
    } else if (x->session && (ctype == NULL || strncasecmp(ctype, "application/json", 16) != 0 ||
                              (ctype[16] != '\0' && ctype[16] != ';' && ctype[16] != ' '))) {
        return refuse(x, "UnsupportedMediaType", "send the request as application/json", 0);
    } else if (x->session) {
        rc = pbx__request_json_parse_session_call(ctx->body.data, ctx->body.len, &x->s->caps,
                                                  &x->req, &etype, &err);
    } else if (x->upload) {
        return refuse(x, "UnsupportedMediaType",
                      "send the request as multipart/form-data (fields code, timeout, "
                      "allow_network; file parts named files) or "
                      "application/x-www-form-urlencoded",
                      0);
    } else if (ctype == NULL || strncasecmp(ctype, "application/json", 16) != 0 ||
               (ctype[16] != '\0' && ctype[16] != ';' && ctype[16] != ' ')) {
        return refuse(x, "UnsupportedMediaType",
                      x->v1 ? "send the request as application/json or multipart/form-data"
                            : "send the request as Content-Type: application/json",
                      0);
    } else if (x->v1) {
        rc = pbx__request_json_parse_v1(ctx->body.data, ctx->body.len, &x->s->caps, &x->req, &etype,
                                        &err);
    } else {
        rc = pbx__request_json_parse_execute(ctx->body.data, ctx->body.len, &x->s->caps, &x->req,
                                             &x->shape, &etype, &err);
    }
    /* From here on, every answer to a request in S4's shape carries its `detail`. */
    ctx->s4 = x->shape.s4;
    if (rc < 0) {
        refuse_body(x, err, etype);
        pbx_error_free(&err);
        return -1;
    }
    /* The parsed request holds its own copies; the body's share of the budget stays for them. */
    pbx_buf_release(&ctx->body);
    ctx->timing.parsed_ns = pbx_clock_ns(CLOCK_MONOTONIC);
    return 0;
}

/* ---- resolve ---- */

/*
 * Who is calling, from the credential headers or else the body's `api_key`
 * (auth.c), and what it may do with this request: the limits of its
 * execution.  Returns 0, or -1 after answering (401, 403, 400, 501, 500).
 */
static int limits_of(struct execution *x)
{
    const struct pbx_caller_ask ask = {
        .code_len = x->req.code_len,
        .code_chars = x->req.code_chars,
        .network = x->req.network,
        .has_timeout = x->req.has_timeout,
        .timeout_s = x->req.timeout_s,
        .has_memory = x->req.has_memory,
        .memory_mb = x->req.memory_mb,
        /* The compatible endpoints run a timeout over the caller's limit with that limit. */
        .clamp_timeout = !x->v1,
    };
    struct pbx_error *err = NULL;
    const char *etype = NULL;

    if (pbx_caller_limits(&x->s->callers, &x->who, &ask, &x->limits, &etype, &err) < 0) {
        refuse(x, refusal_type(x, err, etype), err->msg, 0);
        pbx_error_free(&err);
        return -1;
    }
    /* Whether the timeout asked, read as the limits read it, was over what applied. */
    if (x->req.has_timeout) {
        struct pbx_limits asked = x->limits;

        x->clamped = pbx_limits_set_timeout(&asked, x->req.timeout_s, NULL) == 0 &&
                     asked.wall_ms > x->limits.wall_ms;
    }
    return 0;
}

static int resolve(struct execution *x)
{
    struct pbx_error *err = NULL;
    const char *etype = NULL;

    if (pbx__auth_resolve(x->s, x->c, x->req.api_key, &x->who, &etype, &err) < 0) {
        refuse(x, refusal_type(x, err, etype), err->msg, 0);
        pbx_error_free(&err);
        return -1;
    }
    return limits_of(x);
}

/* ---- claim (a session's call) ---- */

/* The session, taken for the call. Returns 0, or -1 after answering (404, 409, 410). */
static int claim(struct execution *x)
{
    struct pbx_error *err = NULL;
    const char *etype = "InternalServerError";
    unsigned retry = 0;

    if (!x->session)
        return 0;
    if (x->hooks.claim(x->hooks.arg, &x->req, &x->who, &x->limits, &etype, &retry, &err) < 0) {
        refuse_with(x, etype, err->msg, retry, x->hooks.refusal(x->hooks.arg, err->code));
        pbx_error_free(&err);
        return -1;
    }
    return 0;
}

/* ---- admit ---- */

static void utc_day(uint64_t ms, char *out, size_t len, unsigned *to_midnight)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;

    gmtime_r(&t, &tm);
    strftime(out, len, "%Y-%m-%d", &tm);
    *to_midnight = (unsigned)(86400 - (t % 86400));
}

/* Whose window and quota a request counts against: "key:NAME" or "ip:ADDRESS". */
static void client_id(struct execution *x)
{
    snprintf(x->client, sizeof(x->client), "%s%s",
             x->who.keyed ? "key:" : "ip:", x->who.keyed ? x->who.key_name : x->ctx->client);
}

static int quota_spent(struct execution *x)
{
    unsigned to_midnight;
    char msg[160];
    char day[16];

    utc_day(pbx_clock_ms(CLOCK_REALTIME), day, sizeof(day), &to_midnight);
    snprintf(msg, sizeof(msg),
             "daily quota of %" PRId64 " requests reached; it resets at 00:00 UTC", x->who.rpd);
    return refuse(x, "RateLimitExceeded", msg, to_midnight);
}

/*
 * The request's idempotency key: the client's Idempotency-Key header (1 to
 * 128 visible ASCII characters), else a trusted proxy's request id, which a
 * request the proxy sends again to another node keeps; none for this
 * server's own ids, new for every request.  A request sent again with the
 * same key is charged to the daily quota once.  Returns 0, or -1 after
 * answering (400).
 */
_Static_assert(PBX_STORE_ONCE_MAX < 129, "struct execution's once holds a key");

static int idempotency_key(struct execution *x)
{
    const char *v;
    size_t n;

    x->has_once = false;
    v = x->c != NULL ? MHD_lookup_connection_value(x->c, MHD_HEADER_KIND, "Idempotency-Key") : NULL;
    if (v == NULL) {
        /* Only a shared store has another node for the proxy to send a request again to. */
        if (x->ctx->id_forwarded && pbx_store_has_windows(x->s->store)) {
            snprintf(x->once, sizeof(x->once), "rid:%s", x->ctx->id);
            x->has_once = true;
            x->once_rid = true;
        }
        return 0;
    }
    n = strlen(v);
    if (n == 0 || n > PBX_STORE_ONCE_MAX)
        return refuse(x, "ValidationError", "Idempotency-Key must be 1 to 128 characters", 0);
    for (size_t i = 0; i < n; i++)
        if (v[i] < 0x21 || v[i] > 0x7e)
            return refuse(x, "ValidationError",
                          "Idempotency-Key must be visible ASCII characters only", 0);
    memcpy(x->once, v, n + 1);
    x->has_once = true;
    return 0;
}

/* What `share` (>= 0: this server's part of a limit while the store fails) adds to a message. */
static void share_note(char *buf, size_t size, int64_t share)
{
    if (share >= 0)
        snprintf(buf, size, " (%" PRId64 " on this node while the store does not answer)", share);
    else
        buf[0] = '\0';
}

/* The caller's window of `limit` a minute is full (or this server's `share` of it). */
static int rate_spent(struct execution *x, int64_t limit, int64_t share, unsigned retry)
{
    char note[96];
    char msg[256];

    share_note(note, sizeof(note), share);
    snprintf(msg, sizeof(msg), "rate limit of %" PRId64 " requests per minute reached%s", limit,
             note);
    return refuse(x, "RateLimitExceeded", msg, retry);
}

/* The caller's `limit` of executions at once is reached (or this server's `share` of it). */
static int running_spent(struct execution *x, int64_t limit, int64_t share, unsigned retry)
{
    char note[96];
    char msg[256];

    share_note(note, sizeof(note), share);
    snprintf(msg, sizeof(msg),
             "%" PRId64 " execution%s at once reached%s; retry when one has ended", limit,
             limit == 1 ? "" : "s", note);
    return refuse(x, "RateLimitExceeded", msg, retry);
}

/*
 * With a shared store: the window, the day's quota and a lease checked and
 * charged in one call.  Returns 1 when admitted (charged), 0 to fall back
 * to this server's own window and lease (the store failed; *share is the
 * part of each limit this server may give meanwhile), or -1 after
 * answering (429, 503).
 */
static int admit_shared(struct execution *x, bool *share)
{
    struct pbx_server *s = x->s;
    struct pbx_error *err = NULL;
    unsigned char raw[16];

    randombytes_buf(raw, sizeof(raw));
    sodium_bin2hex(x->ticket, sizeof(x->ticket), raw, sizeof(raw));
    x->ask = (struct pbx_store_admit){
        .client = x->client,
        .ticket = x->ticket,
        .once = x->has_once ? x->once : NULL,
        /* A proxy sends a request again within seconds: its id's mark need not last a day. */
        .once_ttl_s = x->once_rid ? RID_MARK_S : 0,
        .rpm = x->who.rpm,
        .rpd = x->who.rpd,
        .concurrency = x->who.concurrency,
        /* A lease lasts as long as the request may: its wait for a slot, its run, a margin. */
        .lease_ms = s->cfg->queue_wait_ms + x->limits.wall_ms + 30000,
    };
    if (pbx_store_admit(s->store, &x->ask, &x->adm, &err) < 0) {
        pbx_log(PBX_LOG_ERROR, "admission: %s", err->msg);
        pbx_error_free(&err);
        /* A caller without a daily quota has nothing to fail closed on. */
        if (x->who.rpd >= 0)
            return refuse(x, "StoreUnavailable", STORE_DOWN, 1);
        *share = true;
        return 0;
    }
    x->today = x->adm.today;
    switch (x->adm.verdict) {
    case PBX_STORE_ADMITTED:
        x->shared = true;
        return 1;
    case PBX_STORE_RATE:
        return rate_spent(x, x->who.rpm, -1, x->adm.retry_after);
    case PBX_STORE_QUOTA:
        return quota_spent(x);
    case PBX_STORE_CONCURRENT:
        return running_spent(x, x->who.concurrency, -1, x->adm.retry_after);
    }
    return refuse(x, "InternalServerError", "the admission could not be decided", 0);
}

/*
 * The per-minute window, the daily quota and the executions at once,
 * checked before the caller may take a slot or a place in the queue, so a
 * caller over its limits cannot crowd others out.  With a shared store all
 * three are charged at once (admit_shared()).  Otherwise the request is
 * held: it counts against the window while it waits (a burst cannot pass
 * the check all at once), its lease is taken, and it is charged only once
 * admitted (charge()) or let go.  Returns 0 (charged or held unless admin),
 * or -1 after answering (429, 503, 500).
 */
static int hold(struct execution *x)
{
    struct pbx_server *s = x->s;
    struct pbx_error *err = NULL;
    uint64_t now = pbx_clock_ms(CLOCK_REALTIME);
    unsigned retry = 0;
    unsigned held = 0;
    unsigned to_midnight;
    bool share = false;
    int64_t rpm;
    int64_t running;
    char day[16];
    int r;

    if (idempotency_key(x) < 0)
        return -1;
    if (x->who.admin)
        return 0;
    if (pbx_store_has_windows(s->store)) {
        r = admit_shared(x, &share);
        if (r != 0)
            return r < 0 ? -1 : 0;
    }
    rpm = share ? pbx__admit_local_share(s->admit, x->who.rpm) : x->who.rpm;
    running = share ? pbx__admit_local_share(s->admit, x->who.concurrency) : x->who.concurrency;
    if (!pbx__admit_hold(s->admit, x->client, rpm, now, &retry, &held))
        return rate_spent(x, x->who.rpm, share ? rpm : -1, retry);
    if (!pbx__admit_lease(s->admit, x->client, running, now)) {
        pbx__admit_release(s->admit, x->client, false, now);
        return running_spent(x, x->who.concurrency, share ? running : -1, 1);
    }
    x->leased = running >= 0;
    x->held = true; /* from here on finish() lets the hold and the lease go */
    if (share)
        return 0; /* no daily quota to check (admit_shared() refused one) */
    utc_day(now, day, sizeof(day), &to_midnight);
    if (pbx_store_quota_get(s->store, x->client, day, &x->today, &err) < 0) {
        pbx_log(PBX_LOG_ERROR, "quota: %s", err->msg);
        pbx_error_free(&err);
        /* A caller without a daily quota has nothing to fail closed on: it is counted later. */
        if (x->who.rpd >= 0)
            return refuse(x, "StoreUnavailable", STORE_DOWN, 1);
        x->today = 0;
    }
    /*
     * A request with an idempotency key may have been charged already: the
     * charge (atomic in the store) decides, not this check.
     */
    if (x->who.rpd >= 0 && !x->has_once && x->today + (int64_t)held >= x->who.rpd)
        return quota_spent(x);
    return 0;
}

/* An execution slot, at once or after a wait in the queue. Returns 0, or -1 after a 503. */
static int take_slot(struct execution *x)
{
    x->active = pbx__admit_active(x->s->admit);
    if (!pbx__admit_enter(x->s->admit))
        return refuse(x, "ServerBusy",
                      "every execution slot is busy and the queue is full or its wait ran out; "
                      "retry in a moment",
                      1);
    x->slot = true;
    return 0;
}

/* Memory for the answer, from the server's budget. Returns 0, or -1 after a 503. */
static int reserve_answer(struct execution *x)
{
    if (!pbx__server_budget_take(x->s, x->ctx, pbx__server_answer_reserve(&x->limits, !x->v1))) {
        pbx__server_budget_refusal(x->s, &x->no);
        x->refused = true;
        return -1;
    }
    return 0;
}

/* Charge a held request, now admitted. Returns 0, or -1 after answering (429, 500). */
static int charge(struct execution *x)
{
    struct pbx_server *s = x->s;
    struct pbx_error *err = NULL;
    uint64_t now = pbx_clock_ms(CLOCK_REALTIME);
    unsigned to_midnight;
    char day[16];
    int rc;

    if (x->who.admin || x->shared)
        return 0;    /* nothing to charge, or charged in the store already */
    x->held = false; /* charged in the window now, whatever the quota says */
    pbx__admit_release(s->admit, x->client, true, now);
    utc_day(now, day, sizeof(day), &to_midnight);
    /* Atomic in the store: another node may have spent the quota meanwhile. */
    rc = pbx_store_quota_take_once(s->store, x->client, day, x->who.rpd,
                                   x->has_once ? x->once : NULL, &x->today, &err);
    if (rc < 0) {
        pbx_log(PBX_LOG_ERROR, "quota: %s", err->msg);
        pbx_error_free(&err);
        if (x->who.rpd >= 0)
            return refuse(x, "StoreUnavailable", STORE_DOWN, 1);
        return 0; /* no daily quota: its count is lost, not its request */
    }
    if (rc == 0)
        return quota_spent(x);
    return 0;
}

/*
 * Admission: the window and the quota held, a slot, the answer's memory,
 * then the charge.  Returns 0 with a slot, or -1 after answering (429, 503,
 * 500).
 */
static int admit(struct execution *x)
{
    struct pbx_server_timing *t = &x->ctx->timing;
    int rc;

    client_id(x);
    t->resolved_ns = pbx_clock_ns(CLOCK_MONOTONIC);
    if (hold(x) < 0)
        return -1;
    t->held_ns = pbx_clock_ns(CLOCK_MONOTONIC);
    if (take_slot(x) < 0)
        return -1;
    t->slot_ns = pbx_clock_ns(CLOCK_MONOTONIC);
    if (reserve_answer(x) < 0)
        return -1;
    rc = charge(x);
    t->admitted_ns = pbx_clock_ns(CLOCK_MONOTONIC);
    return rc;
}

/* ---- build, run, audit ---- */

/*
 * The engine's request for the request, with the limits the caller's policy
 * gave.  The compatible endpoints without `return_files` ask for every file
 * at the top of the working directory (the engine's glob), as the FastAPI
 * server returns every file the script created.
 */
static void build(struct execution *x)
{
    static const char *const every_file[] = {"*"};
    const struct pbx_http_request *req = &x->req;
    struct pbx_exec_request *ereq = &x->ereq;

    pbx_exec_request_init(ereq);
    ereq->limits = x->limits;
    ereq->code = req->code;
    ereq->code_len = req->code_len;
    ereq->stdin_data = req->stdin_data;
    ereq->stdin_len = req->stdin_len;
    ereq->files = req->files;
    ereq->nfiles = req->nfiles;
    ereq->return_files = (const char *const *)req->return_files;
    ereq->nreturn = req->nreturn;
    if (!x->v1 && req->nreturn == 0) {
        ereq->return_files = every_file;
        ereq->nreturn = 1;
        x->all_files = true;
    }
    ereq->main_mode = req->main_mode;
    ereq->allow_all_imports = x->who.all_modules;
    ereq->extra_modules = x->who.modules;
}

/*
 * Run it, on the engine of the caller's trust class.  Returns 0 with a
 * result, or -1 with the refusal (400 for a request the engine refused, 500).
 */
static int run(struct execution *x)
{
    struct pbx_server *s = x->s;
    struct pbx_error *err = NULL;
    enum pbx_trust trust = x->who.keyed || x->who.admin ? PBX_TRUST_KEYED : PBX_TRUST_ANONYMOUS;

    x->t0 = pbx_clock_ms(CLOCK_REALTIME);
    x->started = true;
    if ((x->session ? x->hooks.run(x->hooks.arg, &x->ereq, &x->res, &err)
                    : s->ex.execute(s->ex.arg, trust, &x->ereq, &x->res, &err)) < 0) {
        const struct pbx_errtable_row *row = pbx_errtable_of_code(err->code, !x->v1);
        bool internal = row->id == PBX_ERRTABLE_INTERNAL_SERVER_ERROR;

        if (internal)
            pbx_log(PBX_LOG_ERROR, "execution: %s", err->msg);
        refuse_with(x, row->type, internal ? "the execution engine failed" : err->msg, 0,
                    x->session ? x->hooks.refusal(x->hooks.arg, err->code) : NULL);
        pbx_error_free(&err);
        return -1;
    }
    x->ran = true;
    return 0;
}

/* The execution's record in the store's audit log, and its count in the metrics. */
static void audit(struct execution *x)
{
    unsigned char hash[32];
    char hex[65];
    struct pbx_audit rec = {
        .time_ms = (int64_t)x->t0,
        .client = x->ctx->client,
        .key_name = x->who.keyed ? x->who.key_name : (x->who.admin ? "admin" : NULL),
        .route = pbx__http_route_name(x->ctx->route),
        .code_sha256 = hex,
        .status = pbx_status_name(x->res.status),
        .duration_ms = x->res.duration_ms,
    };

    crypto_hash_sha256(hash, (const unsigned char *)x->req.code, x->req.code_len);
    sodium_bin2hex(hex, sizeof(hex), hash, sizeof(hash));
    pbx__audit_spool_write(x->s->audit, x->s->store, &rec); /* kept while the store fails */
    pbx__metrics_observe(x->s, &x->res, pbx_clock_ms(CLOCK_REALTIME) - x->t0);
}

/* ---- answer ---- */

/*
 * /v1/execute's answer to an execution: the result object with the request
 * id, the same JSON as the body of the answer and as the stream's `end`.  A
 * new reference.
 */
static json_t *v1_result(const struct execution *x)
{
    json_t *body = pbx_exec_result_to_json(&x->res);

    if (x->session)
        x->hooks.answer(x->hooks.arg, body);
    json_object_set_new(body, "request_id", json_string(x->ctx->id));
    return body;
}

/*
 * And to a run the engine refused: the error shape with the request id, as
 * a refusal is answered (pbx__http_send_refusal()).  A new reference.
 */
static json_t *v1_refusal(const struct execution *x)
{
    json_t *body = pbx__http_error_body(x->ctx, x->no.type, x->no.msg,
                                        x->no.extra != NULL ? json_incref(x->no.extra) : NULL);

    json_object_set_new(body, "request_id", json_string(x->ctx->id));
    return body;
}

/* The result, as /v1/execute's result object or with every documented system's fields. */
static void answer(struct execution *x)
{
    const struct compat_run run = {
        .req = &x->req,
        .shape = &x->shape,
        .who = &x->who,
        .res = &x->res,
        .limits = &x->limits,
        .today = x->today,
        .active = x->active,
        .all_files = x->all_files,
        .timeout_clamped = x->clamped,
    };

    if (x->v1)
        x->ret = pbx__http_send_json(x->c, x->ctx, x->s, 200, v1_result(x), 0);
    else
        x->ret = pbx__compat_answer(x->s, x->c, x->ctx, &run);
}

/*
 * What admission took: a request that did not start gives its charge back
 * (the shared store's, or its hold of this server's window); every one
 * ends its lease.
 */
static void let_go(struct execution *x)
{
    struct pbx_server *s = x->s;
    struct pbx_error *err = NULL;
    uint64_t now = pbx_clock_ms(CLOCK_REALTIME);

    if (x->shared && !x->started) {
        if (pbx_store_admit_undo(s->store, &x->ask, &x->adm, &err) < 0) {
            pbx_log(PBX_LOG_ERROR, "admission: %s; its charge stands", err->msg);
            pbx_error_free(&err);
        }
    } else if (x->shared && x->adm.leased &&
               pbx_store_lease_end(s->store, x->client, x->ticket, &err) < 0) {
        pbx_log(PBX_LOG_ERROR, "admission: %s; the lease ends by itself", err->msg);
        pbx_error_free(&err);
    }
    if (x->held)
        pbx__admit_release(s->admit, x->client, false, now);
    if (x->leased)
        pbx__admit_lease_end(s->admit, x->client, now);
    x->shared = x->held = x->leased = false;
}

/* Give back what the steps took, whatever the outcome, and free the execution. */
static void finish(struct execution *x)
{
    if (x->session)
        x->hooks.release(x->hooks.arg);
    if (x->ran)
        pbx_exec_result_release(&x->res);
    if (x->slot)
        pbx__admit_leave(x->s->admit);
    let_go(x);
    if (!x->who_borrowed)
        pbx_caller_release(&x->who);
    pbx__request_release(&x->req);
    if (x->ctx_copied)
        free(x->ctx);
    pbx__refusal_release(&x->no);
    free(x);
}

/* ---- the streamed answer (stream.c) ---- */

/* Whether the request asks for Server-Sent Events: a media range of Accept is text/event-stream. */
static bool wants_stream(struct MHD_Connection *c)
{
    static const char sse[] = "text/event-stream";
    const char *p = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Accept");

    while (p != NULL && *p != '\0') {
        size_t n;

        p += strspn(p, " \t,");
        n = strcspn(p, ";, \t");
        if (n == sizeof(sse) - 1 && strncasecmp(p, sse, n) == 0)
            return true;
        p += strcspn(p, ",");
    }
    return false;
}

/*
 * The stream's work, on its thread: the engine's request fed to the stream
 * (its output and outputs as events, the client leaving as a cancel), run,
 * audit, and the answer the request would have had, as `end`.
 */
static json_t *run_streamed(struct stream *st, void *arg)
{
    struct execution *x = arg;

    x->ereq.on_output = pbx__stream_on_output;
    x->ereq.on_display = pbx__stream_on_display;
    x->ereq.on_output_arg = st;
    x->ereq.cancel_fd = pbx__stream_cancel_fd(st);
    if (run(x) < 0)
        return v1_refusal(x);
    audit(x);
    return v1_result(x);
}

static void finish_streamed(void *arg)
{
    finish(arg);
}

/*
 * Answer with a stream whose `start` says the limits the execution runs
 * with; run_streamed() and finish() then run on its thread, and the
 * execution is theirs.  The connection's request_ctx may end before them,
 * so from here on the steps read a copy of it.  Returns what libmicrohttpd
 * is given (a 500 when the stream could not start).
 */
static enum MHD_Result stream(struct execution *x)
{
    struct request_ctx *ctx = x->ctx;
    struct pbx_error *err = NULL;
    enum MHD_Result ret = MHD_NO;
    json_t *start = json_pack("{s:{s:f, s:f, s:I}}", "limits", "timeout_s",
                              x->limits.wall_ms / 1000.0, "cpu_s", x->limits.cpu_ms / 1000.0,
                              "memory_mb", (json_int_t)(x->limits.memory_bytes >> 20));

    x->ctx = xmemdup(ctx, sizeof(*ctx));
    /* What the copy must not own: the body and the form stay the connection's. */
    memset(&x->ctx->body, 0, sizeof(x->ctx->body));
    memset(&x->ctx->form, 0, sizeof(x->ctx->form));
    x->ctx_copied = true;
    if (pbx__stream_start(x->s, x->c, ctx, start, run_streamed, finish_streamed, x, &ret, &err) ==
        0)
        return ret; /* x is the stream's now */
    pbx_log(PBX_LOG_ERROR, "stream: %s", err->msg);
    pbx_error_free(&err);
    free(x->ctx);
    x->ctx = ctx;
    x->ctx_copied = false;
    refuse(x, "InternalServerError", "the answer's stream could not start", 0);
    ret = pbx__http_send_refusal(x->c, x->ctx, x->s, &x->no);
    finish(x);
    return ret;
}

/* The pipeline, for an execution or (`hooks`) a call of a session. */
static enum MHD_Result handle(struct pbx_server *s, struct MHD_Connection *c,
                              struct request_ctx *ctx, const struct pbx_execute_hooks *hooks)
{
    struct execution *x = xcalloc(1, sizeof(*x));
    enum MHD_Result ret;

    x->s = s;
    x->c = c;
    x->ctx = ctx;
    x->session = hooks != NULL;
    if (hooks != NULL)
        x->hooks = *hooks;
    x->v1 = ctx->route == R_V1_EXECUTE || x->session;
    x->upload = ctx->route == R_EXECUTE_FILES;
    x->streamed = x->v1 && wants_stream(c); /* the compatible dialect ignores Accept */
    x->ret = MHD_YES;
    if (parse(x) == 0 && resolve(x) == 0 && claim(x) == 0 && admit(x) == 0) {
        build(x);
        if (x->streamed)
            return stream(x); /* run, audit and answer (as `end`) on the stream's thread */
        if (run(x) == 0) {
            ctx->timing.ran_ns = pbx_clock_ns(CLOCK_MONOTONIC);
            audit(x);
            ctx->timing.audited_ns = pbx_clock_ns(CLOCK_MONOTONIC);
            ctx->timing.exec = x->res.timing;
            ctx->timing.on = s->cfg->server_timing && !x->session;
            answer(x);
        }
    }
    if (x->refused)
        x->ret = pbx__http_send_refusal(c, ctx, s, &x->no);
    ret = x->ret;
    finish(x);
    return ret;
}

enum MHD_Result pbx__execute_handle(struct pbx_server *s, struct MHD_Connection *c,
                                    struct request_ctx *ctx)
{
    return handle(s, c, ctx, NULL);
}

enum MHD_Result pbx__execute_handle_session(struct pbx_server *s, struct MHD_Connection *c,
                                            struct request_ctx *ctx,
                                            const struct pbx_execute_hooks *hooks)
{
    return handle(s, c, ctx, hooks);
}

int pbx__execute_direct(struct pbx_server *s, const struct pbx_execute_direct *d, json_t **result,
                        struct pbx_refusal *no)
{
    struct execution *x = xcalloc(1, sizeof(*x));
    int rc = -1;

    *result = NULL;
    x->s = s;
    x->ctx = d->ctx;
    x->v1 = true;
    x->session = d->hooks != NULL;
    if (d->hooks != NULL)
        x->hooks = *d->hooks;
    x->req = *d->req;
    memset(d->req, 0, sizeof(*d->req)); /* the execution's now */
    x->who = *d->who;
    x->who_borrowed = true;
    if (limits_of(x) == 0 && claim(x) == 0 && admit(x) == 0) {
        build(x);
        x->ereq.on_output = d->on_output;
        x->ereq.on_output_arg = d->on_output_arg;
        x->ereq.cancel_fd = d->cancel_fd;
        if (run(x) == 0) {
            audit(x);
            *result = v1_result(x);
            rc = 0;
        }
    }
    if (rc < 0) {
        if (!x->refused)
            refuse(x, "InternalServerError", "the execution could not run", 0);
        *no = x->no;
        memset(&x->no, 0, sizeof(x->no)); /* the caller's now */
    }
    finish(x);
    return rc;
}
