/*
 * pybox serve's HTTP side: libmicrohttpd's callbacks for each request
 * (framing checked and bodies refused early, bodies taken into capped
 * buffers charged to the memory budget, the request routed, then counted
 * and logged), the routes other than the execute endpoints (execute.c) and
 * /metrics (metrics.c), and the answers every route sends: CORS and the
 * other headers, JSON bodies with the request id, the error shape both
 * dialects share and the table from error type to HTTP status.
 */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "common/clock.h"
#include "common/errtable.h"
#include "common/log.h"
#include "common/utf8.h"
#include "common/xalloc.h"
#include "openapi_json.h"
#include "server/internal.h"
#include "server/web.h"
#include "pybox/version.h"
#include "common/banned.h"

/* The path of each route, by enum route; R_ASSETS is a prefix, R_OTHER anything else. */
static const char *const route_names[R_COUNT] = {
    "/execute", "/v1/execute",   "/v1/health",
    "/metrics", "/openapi.json", "/",
    "/v1/info", "/docs",         "/execute-with-files",
    "/health",  "/assets/",      "/v1/sessions",
    "/mcp",     "/v1/ready",     "other",
};

/* The routes that run code. */
static bool executes(enum route r)
{
    return r == R_EXECUTE || r == R_V1_EXECUTE || r == R_EXECUTE_FILES;
}

const char *pbx__http_route_name(enum route r)
{
    return route_names[r];
}

void pbx__http_iso_time(uint64_t ms, char *out, size_t len)
{
    pbx_clock_iso(ms, out, len);
}

/* ---- responses ---- */

/*
 * The Access-Control-Allow-Origin to send: "*", or the request's Origin when
 * it is one of the configured (comma-separated) origins, or NULL for none.
 */
static const char *allowed_origin(const struct pbx_server *s, struct MHD_Connection *c)
{
    const char *list = s->cfg->cors_origins;
    const char *origin = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Origin");
    size_t olen;

    if (strcmp(list, "*") == 0)
        return "*";
    if (origin == NULL)
        return NULL;
    olen = strlen(origin);
    for (const char *p = list; *p;) {
        size_t n = strcspn(p, ", ");

        if (n == olen && strncmp(p, origin, n) == 0)
            return origin;
        p += n;
        p += strspn(p, ", ");
    }
    return NULL;
}

void pbx__http_add_headers(struct MHD_Response *r, struct MHD_Connection *c,
                           const struct request_ctx *ctx, const struct pbx_server *s)
{
    MHD_add_response_header(r, "X-Request-Id", ctx->id);
    if (allowed_origin(s, c) != NULL)
        MHD_add_response_header(r, "Access-Control-Allow-Origin", allowed_origin(s, c));
    MHD_add_response_header(r, "Access-Control-Expose-Headers",
                            "X-Request-Id, Retry-After, Mcp-Session-Id");
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    if (strcmp(s->cfg->cors_origins, "*") != 0)
        MHD_add_response_header(r, "Vary", "Origin");
    if (ctx->close)
        MHD_add_response_header(r, "Connection", "close");
}

enum MHD_Result pbx__http_send_bytes(struct MHD_Connection *c, struct request_ctx *ctx,
                                     const struct pbx_server *s, int status, char *data, size_t len,
                                     const char *content_type, unsigned retry_after,
                                     const char *const *headers)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(
        len, data, data != NULL ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    enum MHD_Result ret;

    if (content_type != NULL)
        MHD_add_response_header(r, "Content-Type", content_type);
    MHD_add_response_header(r, "Cache-Control", "no-store");
    pbx__http_add_headers(r, c, ctx, s);
    /* RFC 9110 section 11.6.1: a 401 names the scheme that authenticates (RFC 6750's). */
    if (status == 401)
        MHD_add_response_header(r, "WWW-Authenticate", "Bearer realm=\"pybox\"");
    /* Section 15.5.6: a 405 names the methods the resource takes. */
    if (status == 405 && ctx->allow != NULL)
        MHD_add_response_header(r, "Allow", ctx->allow);
    if (retry_after > 0) {
        char ra[16];

        snprintf(ra, sizeof(ra), "%u", retry_after);
        MHD_add_response_header(r, "Retry-After", ra);
    }
    for (size_t i = 0; headers != NULL && headers[i] != NULL && headers[i + 1] != NULL; i += 2)
        MHD_add_response_header(r, headers[i], headers[i + 1]);
    if (ctx->timing.on) {
        /* Last: its `answer` phase ends as the answer is queued. */
        char v[PBX_SERVER_TIMING_MAX];

        pbx__server_timing_format(&ctx->timing, ctx->start_ns, pbx_clock_ns(CLOCK_MONOTONIC), v,
                                  sizeof(v));
        MHD_add_response_header(r, "Server-Timing", v);
        ctx->timing.on = false;
    }
    ret = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    ctx->answered = true;
    ctx->status = status;
    return ret;
}

enum MHD_Result pbx__http_send_text(struct MHD_Connection *c, struct request_ctx *ctx,
                                    const struct pbx_server *s, int status, char *text,
                                    const char *content_type, unsigned retry_after)
{
    return pbx__http_send_bytes(c, ctx, s, status, text, strlen(text), content_type, retry_after,
                                NULL);
}

enum MHD_Result pbx__http_send_json(struct MHD_Connection *c, struct request_ctx *ctx,
                                    const struct pbx_server *s, int status, json_t *body,
                                    unsigned retry_after)
{
    char *text = NULL;

    if (body != NULL) {
        json_object_set_new(body, "request_id", json_string(ctx->id));
        text = json_dumps(body, PBX_JSON_FLAGS);
        json_decref(body);
    }
    if (text == NULL) {
        /* Every string in a body is checked UTF-8, so only a bug of pybox's lands here. */
        pbx_log(PBX_LOG_ERROR, "request %s: an answer could not be encoded as JSON", ctx->id);
        status = 500;
        text = xasprintf("{\"status\":\"error\",\"error\":{\"type\":\"InternalServerError\","
                         "\"message\":\"the answer could not be encoded\"},\"request_id\":\"%s\"}",
                         ctx->id);
    }
    return pbx__http_send_text(c, ctx, s, status, text, "application/json", retry_after);
}

json_t *pbx__http_error_body(const struct request_ctx *ctx, const char *type, const char *message,
                             json_t *extra)
{
    char *text = pbx_utf8_sanitize(message ? message : "", message ? strlen(message) : 0, NULL);
    json_t *details = json_pack("{s:s, s:s}", "type", type, "message", text);
    bool compat = ctx->route == R_EXECUTE || ctx->route == R_EXECUTE_FILES;
    json_t *body;
    char ts[64];

    pbx__http_iso_time(pbx_clock_ms(CLOCK_REALTIME), ts, sizeof(ts));
    if (extra != NULL) {
        json_object_update(details, extra);
        json_decref(extra);
    }
    body =
        json_pack("{s:s, s:s, s:o, s:o}", "status", "error", "timestamp_utc", ts, "error_details",
                  details, "error", compat ? json_string(text) : json_incref(details));
    free(text);
    return body;
}

enum MHD_Result pbx__http_send_error(struct MHD_Connection *c, struct request_ctx *ctx,
                                     const struct pbx_server *s, const char *type,
                                     const char *message, unsigned retry_after, json_t *extra)
{
    json_t *body = pbx__http_error_body(ctx, type, message, extra);
    int status = pbx_errtable_status(type);

    /* Every 503 says when to retry. */
    if (status == 503 && retry_after == 0)
        retry_after = 1;
    /* FastAPI's HTTPException answers {"detail": "..."}: its client reads that. */
    if (ctx->s4 || ctx->route == R_EXECUTE_FILES)
        json_object_set(body, "detail",
                        json_object_get(json_object_get(body, "error_details"), "message"));
    return pbx__http_send_json(c, ctx, s, status, body, retry_after);
}

void pbx__refusal_set(struct pbx_refusal *no, const char *type, const char *msg,
                      unsigned retry_after, json_t *extra)
{
    pbx__refusal_release(no);
    no->type = type;
    no->msg = xstrdup(msg);
    no->retry_after = retry_after;
    no->extra = extra;
}

void pbx__refusal_release(struct pbx_refusal *no)
{
    free(no->msg);
    json_decref(no->extra);
    *no = (struct pbx_refusal){0};
}

enum MHD_Result pbx__http_send_refusal(struct MHD_Connection *c, struct request_ctx *ctx,
                                       const struct pbx_server *s, struct pbx_refusal *no)
{
    enum MHD_Result ret =
        pbx__http_send_error(c, ctx, s, no->type != NULL ? no->type : "InternalServerError",
                             no->msg != NULL ? no->msg : "the request failed", no->retry_after,
                             no->extra != NULL ? json_incref(no->extra) : NULL);

    pbx__refusal_release(no);
    return ret;
}

static void log_request(const struct request_ctx *ctx)
{
    char ts[64];
    json_t *line;
    char *text;

    pbx__http_iso_time(pbx_clock_ms(CLOCK_REALTIME), ts, sizeof(ts));
    line = json_pack("{s:s, s:s, s:s, s:s, s:i, s:s, s:I}", "time", ts, "request_id", ctx->id,
                     "method", ctx->method, "path", ctx->path, "status", ctx->status, "client",
                     ctx->client, "ms", (json_int_t)(pbx_clock_ms(CLOCK_REALTIME) - ctx->start_ms));
    if (line == NULL) /* a path or method that is not UTF-8 */
        line = json_pack("{s:s, s:s, s:s, s:s, s:i, s:s, s:I}", "time", ts, "request_id", ctx->id,
                         "method", "?", "path", "(not UTF-8)", "status", ctx->status, "client",
                         ctx->client, "ms",
                         (json_int_t)(pbx_clock_ms(CLOCK_REALTIME) - ctx->start_ms));
    text = json_dumps(line, JSON_COMPACT);
    if (text != NULL)
        fprintf(stderr, "%s\n", text);
    free(text);
    json_decref(line);
}

/* ---- routes ---- */

/* Whether the store answers now: "ok" or "unavailable" (logged once per change). */
static const char *store_state(struct pbx_server *s)
{
    static atomic_bool down;
    struct pbx_error *err = NULL;
    bool failed = pbx_store_ping(s->store, &err) < 0;

    if (failed && !atomic_exchange(&down, true))
        pbx_log(PBX_LOG_WARN, "the store does not answer: %s", err->msg);
    else if (!failed && atomic_exchange(&down, false))
        pbx_log(PBX_LOG_INFO, "the store answers again");
    pbx_error_free(&err);
    return failed ? "unavailable" : "ok";
}

/* GET /v1/health: liveness, whatever the store says (it is reported, never a failure). */
static enum MHD_Result handle_health(struct pbx_server *s, struct MHD_Connection *c,
                                     struct request_ctx *ctx)
{
    json_t *body = json_pack("{s:s, s:s, s:i, s:i, s:s, s:o}", "status", "ok", "version",
                             PBX_VERSION_STRING, "active_executions",
                             (int)pbx__admit_active(s->admit), "max_concurrent_executions",
                             (int)pbx__admit_capacity(s->admit), "store", store_state(s), "node",
                             s->cfg->node_id != NULL ? json_string(s->cfg->node_id) : json_null());

    return pbx__http_send_json(c, ctx, s, 200, body, 0);
}

/* GET /v1/ready: readiness, 503 while the store does not answer (a proxy sends elsewhere). */
static enum MHD_Result handle_ready(struct pbx_server *s, struct MHD_Connection *c,
                                    struct request_ctx *ctx)
{
    const char *store = store_state(s);
    bool ready = strcmp(store, "ok") == 0;

    return pbx__http_send_json(c, ctx, s, ready ? 200 : 503,
                               json_pack("{s:b, s:s}", "ready", ready, "store", store),
                               ready ? 0 : 1);
}

/*
 * One embedded file of the docs page.  Its ETag is a hash of its content, so
 * a browser revalidates (Cache-Control: no-cache) and gets 304 while the
 * binary is the same.  The CSP allows scripts and styles from this server only.
 */
static enum MHD_Result handle_asset(struct pbx_server *s, struct MHD_Connection *c,
                                    struct request_ctx *ctx, const struct pbx_web_asset *a)
{
    const char *inm = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "If-None-Match");
    bool fresh = inm != NULL && strstr(inm, a->etag) != NULL;
    struct MHD_Response *r = MHD_create_response_from_buffer(
        fresh ? 0 : a->len, fresh ? NULL : (void *)a->data, MHD_RESPMEM_PERSISTENT);
    enum MHD_Result ret;

    (void)s;
    MHD_add_response_header(r, "Content-Type", a->content_type);
    MHD_add_response_header(r, "ETag", a->etag);
    MHD_add_response_header(r, "Cache-Control", "no-cache");
    MHD_add_response_header(r, "Content-Security-Policy", pbx__web_csp);
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(r, "Referrer-Policy", "no-referrer");
    MHD_add_response_header(r, "X-Frame-Options", "DENY");
    MHD_add_response_header(r, "X-Request-Id", ctx->id);
    ret = MHD_queue_response(c, fresh ? 304 : 200, r);
    MHD_destroy_response(r);
    ctx->answered = true;
    ctx->status = fresh ? 304 : 200;
    return ret;
}

/* Whether the client asked for JSON rather than a page (API clients probing /). */
static bool wants_json(struct MHD_Connection *c)
{
    const char *accept = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Accept");

    return accept != NULL && strstr(accept, "application/json") != NULL &&
           strstr(accept, "text/html") == NULL;
}

static enum MHD_Result handle_root(struct pbx_server *s, struct MHD_Connection *c,
                                   struct request_ctx *ctx)
{
    json_t *body;

    if (!wants_json(c))
        return handle_asset(s, c, ctx, pbx__web_lookup("/"));
    /* `status`, `message` and `version` as the FastAPI server's GET / answers them. */
    body = json_pack("{s:s, s:s, s:s, s:s, s:s, s:[s,s,s,s], s:s}", "status", "ok", "message",
                     "pybox: a kernel sandbox for untrusted Python", "name", "pybox", "version",
                     PBX_VERSION_STRING, "description",
                     "runs untrusted Python in a Linux kernel sandbox", "endpoints",
                     "POST /execute", "POST /execute-with-files", "POST /v1/execute", "GET /health",
                     "openapi", "/openapi.json");

    return pbx__http_send_json(c, ctx, s, 200, body, 0);
}

static enum MHD_Result handle_preflight(struct pbx_server *s, struct MHD_Connection *c,
                                        struct request_ctx *ctx)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
    enum MHD_Result ret;

    if (allowed_origin(s, c) != NULL)
        MHD_add_response_header(r, "Access-Control-Allow-Origin", allowed_origin(s, c));
    if (strcmp(s->cfg->cors_origins, "*") != 0)
        MHD_add_response_header(r, "Vary", "Origin");
    MHD_add_response_header(r, "Access-Control-Allow-Methods",
                            "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS");
    MHD_add_response_header(r, "Access-Control-Allow-Headers",
                            "Content-Type, Authorization, X-API-Key, Accept, Mcp-Session-Id, "
                            "MCP-Protocol-Version, Last-Event-ID");
    MHD_add_response_header(r, "Access-Control-Max-Age", "600");
    MHD_add_response_header(r, "X-Request-Id", ctx->id);
    ret = MHD_queue_response(c, 204, r);
    MHD_destroy_response(r);
    ctx->answered = true;
    ctx->status = 204;
    return ret;
}

static enum route route_of(const char *url)
{
    for (int r = 0; r < R_OTHER; r++) {
        if (strcmp(url, route_names[r]) == 0)
            return (enum route)r;
    }
    if (strncmp(url, "/assets/", 8) == 0)
        return R_ASSETS;
    if (strncmp(url, "/v1/sessions/", 13) == 0)
        return R_SESSIONS;
    return R_OTHER;
}

static enum MHD_Result dispatch(struct pbx_server *s, struct MHD_Connection *c,
                                struct request_ctx *ctx, const char *url, const char *method)
{
    bool get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    bool post = strcmp(method, "POST") == 0;
    char msg[256];

    if (strcmp(method, "OPTIONS") == 0)
        return handle_preflight(s, c, ctx);
    ctx->allow = executes(ctx->route) ? "POST, OPTIONS" : "GET, HEAD, OPTIONS";
    switch (ctx->route) {
    case R_EXECUTE:
    case R_V1_EXECUTE:
    case R_EXECUTE_FILES:
        if (!post)
            break;
        return pbx__execute_handle(s, c, ctx);
    case R_HEALTH:
        if (!get)
            break;
        return handle_health(s, c, ctx);
    case R_HEALTHY:
        if (!get)
            break;
        return pbx__compat_health(s, c, ctx);
    case R_READY:
        if (!get)
            break;
        return handle_ready(s, c, ctx);
    case R_METRICS:
        if (!get)
            break;
        return pbx__metrics_handle(s, c, ctx);
    case R_OPENAPI:
        if (!get)
            break;
        return pbx__http_send_text(c, ctx, s, 200,
                                   xstrndup((const char *)pbx_openapi_json, pbx_openapi_json_len),
                                   "application/json", 0);
    case R_ROOT:
        if (!get)
            break;
        return handle_root(s, c, ctx);
    case R_INFO:
        if (!get)
            break;
        return pbx__info_handle(s, c, ctx);
    case R_SESSIONS:
        return pbx__sessions_handle(s, c, ctx, url, method);
    case R_MCP:
        return pbx__mcp_http_handle(s, c, ctx, method);
    case R_DOCS:
    case R_ASSETS:
        if (pbx__web_lookup(url) == NULL)
            return pbx__http_send_error(c, ctx, s, "NotFound", "no such file", 0, NULL);
        if (!get)
            break;
        return handle_asset(s, c, ctx, pbx__web_lookup(url));
    default:
        return pbx__http_send_error(c, ctx, s, "NotFound", "no such endpoint; see /openapi.json", 0,
                                    NULL);
    }
    snprintf(msg, sizeof(msg), "%s is not allowed here; %s takes %s", ctx->method, ctx->path,
             executes(ctx->route) ? "POST" : "GET and HEAD");
    return pbx__http_send_error(c, ctx, s, "MethodNotAllowed", msg, 0, NULL);
}

/* ---- the request callbacks ---- */

/* What the framing headers of a request say, all of them counted. */
struct framing {
    unsigned lengths;   /* Content-Length headers */
    const char *length; /* the first one's value */
    bool differ;        /* two of them disagree */
    bool chunked;       /* a Transfer-Encoding header */
};

static enum MHD_Result count_framing(void *cls, enum MHD_ValueKind kind, const char *key,
                                     const char *value)
{
    struct framing *f = cls;

    (void)kind;
    if (key == NULL)
        return MHD_YES;
    if (strcasecmp(key, "Content-Length") == 0) {
        if (f->lengths > 0 && (value == NULL || f->length == NULL || strcmp(value, f->length) != 0))
            f->differ = true;
        if (f->lengths++ == 0)
            f->length = value;
    } else if (strcasecmp(key, "Transfer-Encoding") == 0) {
        f->chunked = true;
    }
    return MHD_YES;
}

static enum MHD_Result refuse_early(struct pbx_server *s, struct MHD_Connection *c,
                                    struct request_ctx *ctx, const char *method)
{
    const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
    bool execute = executes(ctx->route) && strcmp(method, "POST") == 0;
    unsigned long long announced = 0;
    struct framing framing = {0};
    char msg[160];

    /*
     * A body framed two ways (Content-Length values that disagree, or one
     * with Transfer-Encoding) is read one way here and maybe another by a
     * proxy in front: the gap smuggles requests (RFC 9112 section 6.3).  It
     * is refused, and the connection closed after the answer.
     */
    MHD_get_connection_values(c, MHD_HEADER_KIND, count_framing, &framing);
    if (framing.differ || (framing.lengths > 0 && framing.chunked)) {
        ctx->close = true;
        return pbx__http_send_error(c, ctx, s, "InvalidRequest",
                                    framing.differ
                                        ? "the request has Content-Length values that disagree"
                                        : "the request has both Content-Length and "
                                          "Transfer-Encoding",
                                    0, NULL);
    }
    if (cl != NULL) {
        char *end = NULL;

        errno = 0;
        announced = strtoull(cl, &end, 10);
        if (end == cl || *end != '\0' || cl[0] == '-' || errno == ERANGE)
            announced = ULLONG_MAX;
    }
    if (announced > s->cfg->max_body) {
        ctx->too_large = true;
        snprintf(msg, sizeof(msg), "the request body is over %zu bytes", s->cfg->max_body);
        return pbx__http_send_error(c, ctx, s, "PayloadTooLarge", msg, 0, NULL);
    }
    if ((ctx->route == R_SESSIONS || ctx->route == R_MCP) && ctx->body_cap > 0 &&
        announced > ctx->body_cap) {
        ctx->too_large = true;
        snprintf(msg, sizeof(msg), "the request body is %llu bytes; this request takes at most %zu",
                 announced, ctx->body_cap);
        return pbx__http_send_error(c, ctx, s, "PayloadTooLarge", msg, 0, NULL);
    }
    if (execute && announced > s->max_valid_body) {
        ctx->too_large = true;
        snprintf(msg, sizeof(msg),
                 "the request body is %llu bytes; no valid request to this server is over %zu",
                 announced, s->max_valid_body);
        return pbx__http_send_error(c, ctx, s, "PayloadTooLarge", msg, 0, NULL);
    }
    if (execute && ctx->route != R_EXECUTE) {
        const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Type");
        bool upload = ctx->route == R_EXECUTE_FILES;
        /* FastAPI reads its form fields from either encoding; files need multipart. */
        bool form = ct != NULL &&
                    (strncasecmp(ct, "multipart/form-data", 19) == 0 ||
                     (upload && strncasecmp(ct, "application/x-www-form-urlencoded", 33) == 0));

        if (form && !pbx__multipart_begin(&ctx->form, c, &s->caps, upload))
            return pbx__http_send_error(c, ctx, s, "InvalidRequest",
                                        "multipart/form-data without a valid boundary", 0, NULL);
    }
    return MHD_YES;
}

/*
 * Body bytes as they arrive, kept up to ctx->body_cap: execution requests
 * and the session requests that take a body keep theirs (other routes take
 * none, so theirs are counted and dropped).  A body that
 * outgrows the cap or the budget (chunked, so not announced) is discarded
 * as it comes and answered once it ends: the server cannot answer in the
 * middle of an upload.  A client that keeps sending past twice the cap is
 * cut off.
 */
static enum MHD_Result take_body(struct pbx_server *s, struct request_ctx *ctx,
                                 const char *upload_data, size_t size)
{
    bool keep = ctx->body_cap > 0 && !ctx->answered && !ctx->too_large && !ctx->over_budget;

    /*
     * Charged as it comes, never on what a header announces: a client that
     * announces much and sends nothing holds nothing.  A buffer grown by
     * doubling holds at most twice its bytes.
     */
    if (keep && !pbx__server_budget_take(s, ctx, 2 * size)) {
        ctx->over_budget = true;
        keep = false;
    }
    if (!keep) {
        ctx->discarded += size;
    } else if (ctx->form.pp != NULL) {
        ctx->discarded += size; /* the parts are kept, not the body */
        if (ctx->discarded > s->max_valid_body)
            ctx->too_large = true;
        else
            pbx__multipart_feed(&ctx->form, upload_data, size);
    } else if (ctx->body.len + size > ctx->body_cap ||
               pbx_buf_append(&ctx->body, upload_data, size) < 0) {
        ctx->too_large = true;
        ctx->discarded = ctx->body.len + size;
        pbx_buf_release(&ctx->body);
    }
    if (ctx->discarded > 2 * s->cfg->max_body) {
        ctx->status = 413;
        return MHD_NO;
    }
    return MHD_YES;
}

/*
 * The request's id: a trusted proxy's X-Request-Id (1 to 64 of
 * [A-Za-z0-9._-], as nginx's $request_id), so that the proxy's logs and
 * pybox's name one request alike and a request the proxy sends again to
 * another node keeps its id; else this server's own.
 */
static void request_id(struct pbx_server *s, struct MHD_Connection *c, const struct sockaddr *peer,
                       struct request_ctx *ctx)
{
    static const char ok[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-";
    const char *v = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Request-Id");
    size_t n = v != NULL ? strlen(v) : 0;

    _Static_assert(sizeof(ctx->id) > 64, "a proxy's request id fits");
    if (n >= 1 && n <= 64 && strspn(v, ok) == n && pbx__admit_from_proxy(s->admit, peer)) {
        memcpy(ctx->id, v, n + 1);
        ctx->id_forwarded = true;
        return;
    }
    snprintf(ctx->id, sizeof(ctx->id), "%s-%06lx", s->id_salt, atomic_fetch_add(&s->seq, 1) + 1);
}

enum MHD_Result pbx__http_on_request(void *cls, struct MHD_Connection *c, const char *url,
                                     const char *method, const char *version,
                                     const char *upload_data, size_t *upload_size, void **con_cls)
{
    struct pbx_server *s = cls;
    struct request_ctx *ctx = *con_cls;
    enum MHD_Result ret;

    (void)version;
    if (url == NULL)
        url = "";
    if (method == NULL)
        method = "";
    if (ctx == NULL) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);

        ctx = xcalloc(1, sizeof(*ctx));
        request_id(s, c, ci ? ci->client_addr : NULL, ctx);
        pbx_buf_init(&ctx->body, s->cfg->max_body);
        ctx->start_ms = pbx_clock_ms(CLOCK_REALTIME);
        ctx->start_ns = pbx_clock_ns(CLOCK_MONOTONIC);
        ctx->route = route_of(url);
        /* Execution requests keep their bodies (whatever the method, answered 405 once read). */
        if (executes(ctx->route))
            ctx->body_cap = s->max_valid_body;
        else if (ctx->route == R_SESSIONS)
            ctx->body_cap = pbx__sessions_body_cap(s, url, method);
        else if (ctx->route == R_MCP && strcmp(method, "POST") == 0)
            ctx->body_cap = s->max_valid_body; /* one message: a run's files ride in it */
        snprintf(ctx->method, sizeof(ctx->method), "%s", method);
        snprintf(ctx->path, sizeof(ctx->path), "%s", url);
        pbx__admit_client(s->admit, ci ? ci->client_addr : NULL,
                          MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Forwarded-For"),
                          ctx->client, sizeof(ctx->client));
        *con_cls = ctx;
        return refuse_early(s, c, ctx, method);
    }
    if (*upload_size != 0) {
        size_t n = *upload_size;

        *upload_size = 0;
        return take_body(s, ctx, upload_data, n);
    }
    if (ctx->answered)
        return MHD_YES;
    if (ctx->too_large) {
        char msg[128];

        snprintf(msg, sizeof(msg), "the request body is over %zu bytes", ctx->body_cap);
        return pbx__http_send_error(c, ctx, s, "PayloadTooLarge", msg, 0, NULL);
    }
    if (ctx->over_budget)
        return pbx__server_budget_spent(s, c, ctx);
    pbx__watch_deadline(s, c, true);
    ret = dispatch(s, c, ctx, url, method);
    pbx__watch_deadline(s, c, false);
    return ret;
}

void pbx__http_on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                            enum MHD_RequestTerminationCode toe)
{
    struct pbx_server *s = cls;
    struct request_ctx *ctx = *con_cls;

    if (ctx == NULL)
        return;
    if (!ctx->answered && ctx->status == 0 && toe == MHD_REQUEST_TERMINATED_TIMEOUT_REACHED)
        ctx->status = 408;
    pbx__metrics_count(s, ctx->route, ctx->status);
    if (!s->cfg->quiet)
        log_request(ctx);
    pbx__multipart_release(&ctx->form);
    pbx_buf_release(&ctx->body);
    pbx__server_budget_release(s, ctx);
    free(ctx);
    *con_cls = NULL;
    pbx__watch_deadline(s, c, false);
}

void pbx__http_log(void *cls, const char *fmt, va_list ap)
{
    char line[512];

    (void)cls;
    vsnprintf(line, sizeof(line), fmt, ap);
    line[strcspn(line, "\n")] = '\0';
    pbx_log(PBX_LOG_INFO, "http: %s", line);
}
