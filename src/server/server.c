/*
 * pybox serve.
 *
 * Theory of operation: one process holds the secrets (the admin key, the
 * store) and one engine (a jail whose zygote forks a cell per execution, see
 * src/engine/engine.c).  libmicrohttpd runs a thread per connection; a
 * request body is read into a capped buffer (bodies announced larger than
 * the cap are refused before they are read), then routed.  An execution
 * request is parsed (src/server/request.c), authenticated (Bearer header or
 * `api_key`), checked against the caller's policy, admitted (a concurrency
 * slot or 503 at once; the per-minute window; the daily quota in the store,
 * charged only for admitted valid requests), run by the engine on the
 * connection's thread, audited, and answered in the dialect it came in.
 * SIGTERM or SIGINT: stop accepting, let running executions finish (bounded
 * by drain_s), stop the engine, exit 0.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/log.h"
#include "common/xalloc.h"
#include "engine/engine.h"
#include "openapi_json.h"
#include "policy/policy.h"
#include "server/admit.h"
#include "server/request.h"
#include "server/server.h"
#include "server/web.h"
#include "store/store.h"
#include "pybox/version.h"
#include "common/banned.h"

enum route {
    R_EXECUTE,
    R_V1_EXECUTE,
    R_HEALTH,
    R_METRICS,
    R_OPENAPI,
    R_ROOT,
    R_INFO,
    R_DOCS,
    R_ASSETS,
    R_OTHER,
    R_COUNT,
};

static const char *const route_names[R_COUNT] = {
    "/execute", "/v1/execute", "/v1/health", "/metrics", "/openapi.json",
    "/",        "/v1/info",    "/docs",      "/assets/", "other",
};

static const int statuses[] = {200, 204, 304, 400, 401, 403, 404, 405,
                               408, 413, 415, 429, 500, 501, 503};
#define NSTATUS (sizeof(statuses) / sizeof(statuses[0]))

static const double buckets_ms[] = {5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000};
#define NBUCKET (sizeof(buckets_ms) / sizeof(buckets_ms[0]))

struct metrics {
    atomic_ulong requests[R_COUNT][NSTATUS + 1]; /* by route and status (last: other) */
    atomic_ulong executions[6];                  /* by enum pbx_status */
    atomic_ulong latency[NBUCKET + 1];           /* execute latency histogram (last: +Inf) */
    atomic_ulong latency_count;                  /* observations */
    atomic_ullong latency_sum_us;                /* their sum */
    atomic_ullong faults_prep;                   /* page faults of jobs before their code */
    atomic_ullong faults_run;                    /* and from their code on */
};

struct server {
    const struct pbx_server_config *cfg; /* as given */
    struct pbx_engine *engine;           /* the jail */
    struct pbx_store *store;             /* keys, quotas, audit */
    struct pbx_admit *admit;             /* client identity, windows, the cap */
    struct metrics metrics;              /* counters for /metrics */
    atomic_ulong seq;                    /* request ids */
    char id_salt[9];                     /* random per process, in request ids */
};

/* Per connection: the request as it arrives, and what was answered. */
struct request_ctx {
    char id[32];                  /* X-Request-Id */
    struct pbx_buf body;          /* capped body */
    bool too_large;               /* the body passed the cap */
    size_t discarded;             /* bytes received past the cap (or all, for multipart) */
    bool answered;                /* a response was queued */
    int status;                   /* HTTP status answered */
    enum route route;             /* for metrics and the log */
    uint64_t start_ms;            /* arrival */
    char client[64];              /* client address */
    char method[16];              /* request method, for the log */
    struct server *server;        /* the server, for the multipart callback */
    struct MHD_PostProcessor *pp; /* multipart/form-data parser, or NULL */
    struct pbx_http_request mp;   /* the request as multipart parts arrive */
    size_t mp_alloc;              /* bytes allocated for the last file part */
    char field[32];               /* name of the form field being read */
    struct pbx_buf value;         /* its value so far */
    bool mp_failed;               /* a part was refused; mp_error says why */
    char mp_error[200];           /* the refusal */
    char path[160];               /* request path, cut at 159 bytes, for the log */
};

static uint64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void iso_time(uint64_t ms, char *out, size_t len)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;

    gmtime_r(&t, &tm);
    snprintf(out, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03uZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (unsigned)(ms % 1000));
}

void pbx_server_config_default(struct pbx_server_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->listen = "127.0.0.1:8080";
    cfg->data_dir = "/var/lib/pybox";
    cfg->max_concurrency = 5;
    cfg->queue_max = 16;
    cfg->queue_wait_ms = 5000;
    cfg->anon_rpm = 5;
    cfg->anon_rpd = 30;
    cfg->anon_code_chars = 2000;
    pbx_limits_default(&cfg->limits);
    cfg->cors_origins = "*";
    cfg->max_body = 32u << 20;
    cfg->client_timeout_s = 30;
    cfg->drain_s = 30;
    cfg->preload = true;
    cfg->spares_min = 2;
    cfg->spares_max = 6;
    cfg->zygote_max_execs = 5000;
    cfg->zygote_max_age_s = 3600;
}

static size_t status_index(int status)
{
    for (size_t i = 0; i < NSTATUS; i++) {
        if (statuses[i] == status)
            return i;
    }
    return NSTATUS;
}

/* ---- responses ---- */

/*
 * The Access-Control-Allow-Origin to send: "*", or the request's Origin when
 * it is one of the configured (comma-separated) origins, or NULL for none.
 */
static const char *allowed_origin(const struct server *s, struct MHD_Connection *c)
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

static enum MHD_Result send_text(struct MHD_Connection *c, struct request_ctx *ctx,
                                 const struct server *s, int status, char *text,
                                 const char *content_type, unsigned retry_after)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
    enum MHD_Result ret;

    MHD_add_response_header(r, "Content-Type", content_type);
    MHD_add_response_header(r, "X-Request-Id", ctx->id);
    if (allowed_origin(s, c) != NULL)
        MHD_add_response_header(r, "Access-Control-Allow-Origin", allowed_origin(s, c));
    MHD_add_response_header(r, "Access-Control-Expose-Headers", "X-Request-Id, Retry-After");
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(r, "Cache-Control", "no-store");
    if (strcmp(s->cfg->cors_origins, "*") != 0)
        MHD_add_response_header(r, "Vary", "Origin");
    if (retry_after > 0) {
        char ra[16];

        snprintf(ra, sizeof(ra), "%u", retry_after);
        MHD_add_response_header(r, "Retry-After", ra);
    }
    ret = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    ctx->answered = true;
    ctx->status = status;
    return ret;
}

static enum MHD_Result send_json(struct MHD_Connection *c, struct request_ctx *ctx,
                                 const struct server *s, int status, json_t *body,
                                 unsigned retry_after)
{
    char *text;

    json_object_set_new(body, "request_id", json_string(ctx->id));
    text = json_dumps(body, PBX_JSON_FLAGS);
    json_decref(body);
    return send_text(c, ctx, s, status, text ? text : xstrdup("{}"), "application/json",
                     retry_after);
}

/* The one table from error type to HTTP status. */
static int http_status_of(const char *type)
{
    static const struct {
        const char *type;
        int status;
    } table[] = {
        {"InvalidRequest", 400},       {"ValidationError", 400},     {"SyntaxError", 400},
        {"ForbiddenImportError", 400}, {"TimeoutError", 400},        {"RuntimeError", 400},
        {"Unauthorized", 401},         {"NetworkNotAllowed", 403},   {"NotFound", 404},
        {"MethodNotAllowed", 405},     {"PayloadTooLarge", 413},     {"UnsupportedMediaType", 415},
        {"RateLimitExceeded", 429},    {"InternalServerError", 500}, {"NetworkUnavailable", 501},
        {"ServerBusy", 503},
    };

    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
        if (strcmp(table[i].type, type) == 0)
            return table[i].status;
    }
    return 500;
}

/* An error in the compatible shape: {status: "error", timestamp_utc, error_details}. */
static enum MHD_Result send_error(struct MHD_Connection *c, struct request_ctx *ctx,
                                  const struct server *s, const char *type, const char *message,
                                  unsigned retry_after, json_t *extra)
{
    char ts[64];
    json_t *details = json_pack("{s:s, s:s}", "type", type, "message", message);
    json_t *body;

    iso_time(now_ms(), ts, sizeof(ts));
    if (extra != NULL) {
        json_object_update(details, extra);
        json_decref(extra);
    }
    body = json_pack("{s:s, s:s, s:o, s:O}", "status", "error", "timestamp_utc", ts,
                     "error_details", details, "error", details);
    return send_json(c, ctx, s, http_status_of(type), body, retry_after);
}

static void log_request(const struct request_ctx *ctx)
{
    char ts[64];
    json_t *line;
    char *text;

    iso_time(now_ms(), ts, sizeof(ts));
    line = json_pack("{s:s, s:s, s:s, s:s, s:i, s:s, s:I}", "time", ts, "request_id", ctx->id,
                     "method", ctx->method, "path", ctx->path, "status", ctx->status, "client",
                     ctx->client, "ms", (json_int_t)(now_ms() - ctx->start_ms));
    if (line == NULL) /* a path or method that is not UTF-8 */
        line = json_pack("{s:s, s:s, s:s, s:s, s:i, s:s, s:I}", "time", ts, "request_id", ctx->id,
                         "method", "?", "path", "(not UTF-8)", "status", ctx->status, "client",
                         ctx->client, "ms", (json_int_t)(now_ms() - ctx->start_ms));
    text = json_dumps(line, JSON_COMPACT);
    if (text != NULL)
        fprintf(stderr, "%s\n", text);
    free(text);
    json_decref(line);
}

/* ---- execution ---- */

struct caller {
    bool admin;              /* the admin key */
    bool keyed;              /* a store key */
    struct pbx_key_info key; /* when keyed */
    int64_t rpm;             /* effective */
    int64_t rpd;             /* effective; < 0 unlimited */
    bool all_modules;        /* no allowlist */
    bool network;            /* may ask for network */
    size_t code_chars;       /* code limit */
    uint32_t max_timeout_ms; /* the longest wall limit it may ask */
    uint64_t max_memory;     /* the most memory it may ask */
};

static const char *bearer(struct MHD_Connection *c)
{
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");

    if (h == NULL || strncasecmp(h, "Bearer ", 7) != 0)
        return NULL;
    h += 7;
    while (*h == ' ')
        h++;
    return *h ? h : NULL;
}

static bool is_admin_key(const struct server *s, const char *token)
{
    size_t n = strlen(token);

    return s->cfg->admin_key != NULL && *s->cfg->admin_key != '\0' &&
           n == strlen(s->cfg->admin_key) && sodium_memcmp(token, s->cfg->admin_key, n) == 0;
}

/* Resolve who is calling; returns 0, or -1 after answering (401, 500). */
static int authenticate(struct server *s, struct MHD_Connection *c, struct request_ctx *ctx,
                        const char *token, struct caller *who, enum MHD_Result *ret)
{
    struct pbx_error *err = NULL;
    int found;

    memset(who, 0, sizeof(*who));
    who->rpm = s->cfg->anon_rpm;
    who->rpd = s->cfg->anon_rpd;
    who->code_chars = s->cfg->anon_code_chars;
    who->max_timeout_ms = s->cfg->limits.wall_ms;
    who->max_memory = s->cfg->limits.memory_bytes;
    if (token == NULL)
        return 0;
    if (is_admin_key(s, token)) {
        who->admin = true;
        who->network = true;
        who->rpm = -1;
        who->rpd = -1;
        who->all_modules = true;
        who->code_chars = (size_t)s->cfg->limits.code_bytes;
        return 0;
    }
    found = pbx_store_key_lookup(s->store, token, &who->key, &err);
    if (found < 0) {
        pbx_log(PBX_LOG_ERROR, "key lookup: %s", err->msg);
        pbx_error_free(&err);
        *ret = send_error(c, ctx, s, "InternalServerError", "the key store failed", 0, NULL);
        return -1;
    }
    if (found == 0) {
        *ret = send_error(c, ctx, s, "Unauthorized", "the API key is not valid or was revoked", 0,
                          NULL);
        return -1;
    }
    who->keyed = true;
    if (who->key.policy.admin) {
        who->admin = true;
        who->rpm = -1;
        who->rpd = -1;
        who->all_modules = true;
        who->code_chars = (size_t)s->cfg->limits.code_bytes;
    }
    if (who->key.policy.rpm != 0 && !who->admin)
        who->rpm = who->key.policy.rpm;
    if (who->key.policy.rpd != 0 && !who->admin)
        who->rpd = who->key.policy.rpd;
    if (who->key.policy.timeout_ms != 0)
        who->max_timeout_ms = who->key.policy.timeout_ms;
    if (who->key.policy.memory_bytes != 0)
        who->max_memory = who->key.policy.memory_bytes;
    who->all_modules = who->all_modules || who->key.policy.all_modules;
    who->network = who->key.policy.network || who->admin;
    if (!who->admin)
        who->code_chars = (size_t)s->cfg->limits.code_bytes;
    return 0;
}

static void utc_day(uint64_t ms, char *out, size_t len, unsigned *to_midnight)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;

    gmtime_r(&t, &tm);
    strftime(out, len, "%Y-%m-%d", &tm);
    *to_midnight = (unsigned)(86400 - (t % 86400));
}

static json_t *compat_files(const struct pbx_exec_result *res)
{
    json_t *o = json_object();
    json_t *full = pbx_exec_result_to_json(res);
    json_t *files = json_object_get(full, "files");
    const char *name;
    json_t *v;

    json_object_foreach(files, name, v)
    {
        json_t *b64 = json_object_get(v, "content_base64");

        if (b64 != NULL)
            json_object_set_new(o, name,
                                json_pack("{s:O, s:O}", "content_base64", b64, "size_bytes",
                                          json_object_get(v, "size")));
        else
            json_object_set(o, name, v);
    }
    json_decref(full);
    return o;
}

static enum MHD_Result answer_compat(struct server *s, struct MHD_Connection *c,
                                     struct request_ctx *ctx, const struct pbx_http_request *req,
                                     const struct caller *who, const struct pbx_exec_result *res,
                                     int64_t today, unsigned active_at_request)
{
    json_t *full = pbx_exec_result_to_json(res);
    json_t *details = json_pack(
        "{s:b, s:O, s:O, s:O, s:f, s:o}", "success", res->status == PBX_STATUS_OK, "stdout",
        json_object_get(full, "stdout"), "stderr", json_object_get(full, "stderr"), "exit_code",
        json_object_get(full, "exit_code"), "execution_duration_sec", res->duration_ms / 1000.0,
        "output_files", compat_files(res));
    const char *etype = NULL;
    char ts[64];
    json_t *body;
    json_t *user;
    json_t *attached;
    double load = 0;

    json_object_set(details, "stdout_truncated", json_object_get(full, "stdout_truncated"));
    json_object_set(details, "stderr_truncated", json_object_get(full, "stderr_truncated"));
    if (res->status == PBX_STATUS_REJECTED) {
        etype = json_string_value(json_object_get(res->error, "type"));
    } else if (res->status == PBX_STATUS_TIMEOUT) {
        etype = "TimeoutError";
    } else if (res->status != PBX_STATUS_OK) {
        etype = "RuntimeError";
    }
    if (etype != NULL) {
        json_t *extra = json_object();
        const char *msg = json_string_value(json_object_get(res->error, "message"));

        if (res->status == PBX_STATUS_REJECTED) {
            json_t *e = json_deep_copy(res->error);

            json_object_del(e, "type");
            json_object_del(e, "message");
            json_object_update(extra, e);
            json_decref(e);
        } else {
            json_object_set(extra, "execution_details", details);
            json_object_set(extra, "exception", res->error);
        }
        json_decref(details);
        json_decref(full);
        return send_error(c, ctx, s, etype ? etype : "RuntimeError",
                          msg ? msg : "the execution failed", 0, extra);
    }
    attached = json_array();
    for (size_t i = 0; i < req->nfiles; i++)
        json_array_append_new(attached, json_pack("{s:s, s:I}", "filename", req->files[i].name,
                                                  "size_bytes", (json_int_t)req->files[i].size));
    if (who->admin)
        user = json_pack("{s:s, s:s, s:b}", "ip_address", ctx->client, "role", "admin",
                         "rate_limits_applied", false);
    else
        user = json_pack("{s:s, s:I, s:I, s:I}", "ip_address", ctx->client, "daily_quota_limit",
                         (json_int_t)who->rpd, "requests_today", (json_int_t)today,
                         "requests_remaining_today",
                         (json_int_t)(who->rpd > today ? who->rpd - today : 0));
    if (who->keyed)
        json_object_set_new(user, "key_name", json_string(who->key.name));
    (void)!getloadavg(&load, 1);
    iso_time(now_ms(), ts, sizeof(ts));
    body = json_pack(
        "{s:s, s:s, s:o, s:{s:f, s:i, s:i}, s:{s:I, s:i, s:b, s:o}, s:o}", "status", "success",
        "timestamp_utc", ts, "user_info", user, "server_status", "load", load,
        "active_processes_at_request", (int)active_at_request, "max_concurrent_processes",
        (int)pbx__admit_capacity(s->admit), "request_context", "code_length",
        (json_int_t)req->code_chars, "attachment_count", (int)req->nfiles, "stdin_provided",
        req->stdin_data != NULL, "processed_attachments", attached, "execution_details", details);
    if (req->main_mode) {
        json_object_set(body, "result", json_object_get(full, "result"));
        json_object_set(body, "stdout", json_object_get(full, "stdout"));
    }
    json_decref(full);
    return send_json(c, ctx, s, 200, body, 0);
}

/* ---- multipart/form-data for /v1/execute ---- */

static struct pbx_request_caps caps_of(const struct server *s)
{
    struct pbx_request_caps caps = {
        .max_files = s->cfg->limits.input_files,
        .max_file_bytes = s->cfg->limits.input_file_bytes,
        .max_return = s->cfg->limits.output_files,
        .max_stdin = s->cfg->limits.stdin_bytes,
    };

    return caps;
}

static void mp_fail(struct request_ctx *ctx, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void mp_fail(struct request_ctx *ctx, const char *fmt, ...)
{
    va_list ap;

    if (ctx->mp_failed)
        return;
    ctx->mp_failed = true;
    va_start(ap, fmt);
    vsnprintf(ctx->mp_error, sizeof(ctx->mp_error), fmt, ap);
    va_end(ap);
}

static bool form_bool(const char *v, bool *out)
{
    if (strcmp(v, "true") == 0 || strcmp(v, "1") == 0 || strcmp(v, "on") == 0) {
        *out = true;
        return true;
    }
    if (strcmp(v, "false") == 0 || strcmp(v, "0") == 0 || strcmp(v, "off") == 0 || *v == '\0') {
        *out = false;
        return true;
    }
    return false;
}

/* The field read so far is complete: put it into the request. */
static void mp_flush(struct request_ctx *ctx)
{
    struct pbx_http_request *r = &ctx->mp;
    const char *f = ctx->field;
    const char *v = ctx->value.data ? ctx->value.data : "";
    size_t len = ctx->value.len;
    struct pbx_request_caps caps = caps_of(ctx->server);

    if (f[0] == '\0' || ctx->mp_failed)
        goto out;
    if (strcmp(f, "code") == 0 || strcmp(f, "stdin") == 0) {
        char **dst = f[0] == 'c' ? &r->code : &r->stdin_data;

        if (*dst != NULL) {
            mp_fail(ctx, "field `%s` is given twice", f);
            goto out;
        }
        *dst = xmemdup(v, len + 1);
        if (f[0] == 'c')
            r->code_len = len;
        else
            r->stdin_len = len;
    } else if (strcmp(f, "return_files") == 0) {
        if (r->nreturn >= caps.max_return) {
            mp_fail(ctx, "at most %zu files may be returned", caps.max_return);
            goto out;
        }
        if (strlen(v) != len || !pbx_engine_check_name(v, NULL)) {
            mp_fail(ctx, "`return_files` value is not a valid file name");
            goto out;
        }
        r->return_files = xrealloc(r->return_files, (r->nreturn + 1) * sizeof(char *));
        r->return_files[r->nreturn++] = xstrdup(v);
    } else if (strcmp(f, "main") == 0 || strcmp(f, "network") == 0) {
        if (!form_bool(v, f[0] == 'm' ? &r->main_mode : &r->network))
            mp_fail(ctx, "field `%s` must be true or false", f);
    } else if (strcmp(f, "timeout") == 0) {
        char *end = NULL;
        double t = strtod(v, &end);

        if (end == v || *end != '\0' || !(t > 0 && t <= 3600))
            mp_fail(ctx, "`timeout` must be between 0 and 3600 seconds");
        r->has_timeout = true;
        r->timeout_ms = (uint32_t)(t * 1000 + 0.999);
    } else if (strcmp(f, "memory_mb") == 0) {
        char *end = NULL;
        unsigned long m = strtoul(v, &end, 10);

        if (end == v || *end != '\0' || m < 16 || m > 65536)
            mp_fail(ctx, "`memory_mb` must be a whole number from 16 to 65536");
        r->has_memory = true;
        r->memory_mb = m;
    } else {
        mp_fail(ctx, "unknown form field `%s`", f);
    }
out:
    ctx->field[0] = '\0';
    pbx_buf_release(&ctx->value);
}

static enum MHD_Result on_part(void *cls, enum MHD_ValueKind kind, const char *key,
                               const char *filename, const char *content_type,
                               const char *transfer_encoding, const char *data, uint64_t off,
                               size_t size)
{
    struct request_ctx *ctx = cls;
    struct pbx_http_request *r = &ctx->mp;
    struct pbx_request_caps caps = caps_of(ctx->server);
    size_t cap;

    (void)kind;
    (void)content_type;
    (void)transfer_encoding;
    if (ctx->mp_failed)
        return MHD_YES; /* keep reading; the error is answered at the end */
    if (filename != NULL) {
        struct pbx_file_in *file;

        if (off == 0) {
            struct pbx_error *err = NULL;

            mp_flush(ctx);
            if (filename[0] == '\0')
                return MHD_YES; /* an empty file input */
            if (pbx__request_add_file(r, &caps, filename, "", 0, &err) < 0) {
                mp_fail(ctx, "%s", err->msg);
                pbx_error_free(&err);
                return MHD_YES;
            }
            ctx->mp_alloc = 0;
        }
        if (r->nfiles == 0 || size == 0)
            return MHD_YES;
        file = &r->files[r->nfiles - 1];
        if (file->size + size > caps.max_file_bytes) {
            mp_fail(ctx, "file `%s` is larger than %zu bytes", file->name, caps.max_file_bytes);
            return MHD_YES;
        }
        if (file->size + size > ctx->mp_alloc) {
            ctx->mp_alloc = (file->size + size) * 2;
            file->data = xrealloc((void *)file->data, ctx->mp_alloc);
        }
        memcpy((char *)file->data + file->size, data, size);
        file->size += size;
        return MHD_YES;
    }
    if (off == 0 || strcmp(key, ctx->field) != 0) {
        mp_flush(ctx);
        if (strlen(key) >= sizeof(ctx->field)) {
            mp_fail(ctx, "unknown form field `%.40s`", key);
            return MHD_YES;
        }
        snprintf(ctx->field, sizeof(ctx->field), "%s", key);
        cap = strcmp(key, "code") == 0    ? ctx->server->cfg->limits.code_bytes
              : strcmp(key, "stdin") == 0 ? caps.max_stdin
                                          : 1024;
        pbx_buf_init(&ctx->value, cap);
    }
    if (pbx_buf_append(&ctx->value, data, size) < 0)
        mp_fail(ctx, "form field `%s` is over %zu bytes", key, ctx->value.max);
    return MHD_YES;
}

static enum MHD_Result handle_execute(struct server *s, struct MHD_Connection *c,
                                      struct request_ctx *ctx, bool v1)
{
    const char *ctype = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Type");
    struct pbx_request_caps caps = caps_of(s);
    struct pbx_http_request req;
    struct pbx_exec_request ereq;
    struct pbx_exec_result res;
    struct pbx_error *err = NULL;
    struct caller who;
    const char *etype = NULL;
    const char *token;
    enum MHD_Result ret = MHD_YES;
    unsigned retry = 0;
    unsigned active;
    int64_t today = 0;
    char day[16];
    char msg[160];
    uint64_t t0;
    int rc;

    if (ctx->pp != NULL) {
        mp_flush(ctx);
        if (!ctx->mp_failed && pbx__request_finish(&ctx->mp, &err) < 0) {
            snprintf(ctx->mp_error, sizeof(ctx->mp_error), "%s", err->msg);
            pbx_error_free(&err);
            ctx->mp_failed = true;
        }
        if (ctx->mp_failed)
            return send_error(c, ctx, s, "ValidationError", ctx->mp_error, 0, NULL);
        req = ctx->mp;
        memset(&ctx->mp, 0, sizeof(ctx->mp));
    } else {
        if (ctype == NULL || strncasecmp(ctype, "application/json", 16) != 0 ||
            (ctype[16] != '\0' && ctype[16] != ';' && ctype[16] != ' '))
            return send_error(c, ctx, s, "UnsupportedMediaType",
                              v1 ? "send the request as application/json or multipart/form-data"
                                 : "send the request as Content-Type: application/json",
                              0, NULL);
        rc = v1 ? pbx__request_parse_v1(ctx->body.data, ctx->body.len, &caps, &req, &etype, &err)
                : pbx__request_parse_compat(ctx->body.data, ctx->body.len, &caps, &req, &etype,
                                            &err);
        if (rc < 0) {
            ret = send_error(c, ctx, s, etype, err->msg, 0, NULL);
            pbx_error_free(&err);
            return ret;
        }
    }
    token = bearer(c);
    if (token == NULL)
        token = req.api_key;
    if (authenticate(s, c, ctx, token, &who, &ret) < 0)
        goto out_req;
    if (req.code_chars > who.code_chars) {
        snprintf(msg, sizeof(msg), "the code is %zu characters; the limit is %zu", req.code_chars,
                 who.code_chars);
        ret = send_error(c, ctx, s, "ValidationError", msg, 0, NULL);
        goto out_key;
    }
    if (req.network) {
        ret = who.network ? send_error(c, ctx, s, "NetworkUnavailable",
                                       "this server runs every execution without network", 0, NULL)
                          : send_error(c, ctx, s, "NetworkNotAllowed",
                                       "network access is not allowed for this caller", 0, NULL);
        goto out_key;
    }
    if (req.has_timeout && req.timeout_ms > who.max_timeout_ms) {
        snprintf(msg, sizeof(msg), "timeout %.3g s is over this caller's limit of %.3g s",
                 req.timeout_ms / 1000.0, who.max_timeout_ms / 1000.0);
        ret = send_error(c, ctx, s, "ValidationError", msg, 0, NULL);
        goto out_key;
    }
    if (req.has_memory && (req.memory_mb << 20) > who.max_memory) {
        snprintf(msg, sizeof(msg), "memory_mb %" PRIu64 " is over this caller's limit of %" PRIu64,
                 req.memory_mb, who.max_memory >> 20);
        ret = send_error(c, ctx, s, "ValidationError", msg, 0, NULL);
        goto out_key;
    }

    /* Admission: a slot first, so a refused request is never charged. */
    active = pbx__admit_active(s->admit);
    if (!pbx__admit_enter(s->admit)) {
        ret = send_error(c, ctx, s, "ServerBusy",
                         "every execution slot is busy and the queue is full or its wait ran "
                         "out; retry in a moment",
                         1, NULL);
        goto out_key;
    }
    {
        const char *client_id = who.keyed ? who.key.name : ctx->client;
        char idbuf[300];
        unsigned to_midnight;

        snprintf(idbuf, sizeof(idbuf), "%s%s", who.keyed ? "key:" : "ip:", client_id);
        if (!who.admin && !pbx__admit_rate(s->admit, idbuf, who.rpm, now_ms(), &retry)) {
            snprintf(msg, sizeof(msg), "rate limit of %" PRId64 " requests per minute reached",
                     who.rpm);
            ret = send_error(c, ctx, s, "RateLimitExceeded", msg, retry, NULL);
            goto out_slot;
        }
        utc_day(now_ms(), day, sizeof(day), &to_midnight);
        if (!who.admin) {
            rc = pbx_store_quota_take(s->store, idbuf, day, who.rpd, &today, &err);
            if (rc < 0) {
                pbx_log(PBX_LOG_ERROR, "quota: %s", err->msg);
                pbx_error_free(&err);
                ret =
                    send_error(c, ctx, s, "InternalServerError", "the quota store failed", 0, NULL);
                goto out_slot;
            }
            if (rc == 0) {
                snprintf(msg, sizeof(msg),
                         "daily quota of %" PRId64 " requests reached; it resets at 00:00 UTC",
                         who.rpd);
                ret = send_error(c, ctx, s, "RateLimitExceeded", msg, to_midnight, NULL);
                goto out_slot;
            }
        }
    }

    pbx_exec_request_init(&ereq);
    ereq.limits = s->cfg->limits;
    if (req.has_timeout) {
        ereq.limits.wall_ms = req.timeout_ms;
        ereq.limits.cpu_ms = req.timeout_ms;
    } else if (who.max_timeout_ms > ereq.limits.wall_ms) {
        ereq.limits.cpu_ms = ereq.limits.wall_ms;
    }
    if (req.has_memory)
        ereq.limits.memory_bytes = req.memory_mb << 20;
    ereq.limits.code_bytes =
        req.code_len > ereq.limits.code_bytes ? req.code_len : ereq.limits.code_bytes;
    ereq.code = req.code;
    ereq.code_len = req.code_len;
    ereq.stdin_data = req.stdin_data;
    ereq.stdin_len = req.stdin_len;
    ereq.files = req.files;
    ereq.nfiles = req.nfiles;
    ereq.return_files = (const char *const *)req.return_files;
    ereq.nreturn = req.nreturn;
    ereq.main_mode = req.main_mode;
    ereq.allow_all_imports = who.all_modules;
    ereq.extra_modules = who.keyed ? who.key.policy.modules : NULL;
    t0 = now_ms();
    rc = pbx_engine_execute(s->engine, &ereq, &res, &err);
    if (rc < 0) {
        bool bad = err->code == PBX_E_INVAL || err->code == PBX_E_TOO_LARGE;

        if (!bad)
            pbx_log(PBX_LOG_ERROR, "execution: %s", err->msg);
        ret = send_error(c, ctx, s, bad ? "ValidationError" : "InternalServerError",
                         bad ? err->msg : "the execution engine failed", 0, NULL);
        pbx_error_free(&err);
        goto out_slot;
    }
    {
        uint64_t ms = now_ms() - t0;
        unsigned char hash[32];
        char hex[65];
        struct pbx_audit rec = {
            .time_ms = (int64_t)t0,
            .client = ctx->client,
            .key_name = who.keyed ? who.key.name : (who.admin ? "admin" : NULL),
            .route = v1 ? "/v1/execute" : "/execute",
            .code_sha256 = hex,
            .status = pbx_status_name(res.status),
            .duration_ms = res.duration_ms,
        };
        size_t b = 0;

        crypto_hash_sha256(hash, (const unsigned char *)req.code, req.code_len);
        sodium_bin2hex(hex, sizeof(hex), hash, sizeof(hash));
        if (pbx_store_audit(s->store, &rec, &err) < 0) {
            pbx_log(PBX_LOG_WARN, "audit: %s", err->msg);
            pbx_error_free(&err);
        }
        atomic_fetch_add(&s->metrics.executions[res.status], 1);
        atomic_fetch_add(&s->metrics.faults_prep, res.prep_faults);
        atomic_fetch_add(&s->metrics.faults_run, res.minor_faults - res.prep_faults);
        while (b < NBUCKET && (double)ms > buckets_ms[b])
            b++;
        atomic_fetch_add(&s->metrics.latency[b], 1);
        atomic_fetch_add(&s->metrics.latency_count, 1);
        atomic_fetch_add(&s->metrics.latency_sum_us, ms * 1000);
    }
    if (v1) {
        json_t *body = pbx_exec_result_to_json(&res);

        ret = send_json(c, ctx, s, 200, body, 0);
    } else {
        ret = answer_compat(s, c, ctx, &req, &who, &res, today, active);
    }
    pbx_exec_result_release(&res);
out_slot:
    pbx__admit_leave(s->admit);
out_key:
    if (who.keyed)
        pbx_key_info_release(&who.key);
out_req:
    pbx__request_release(&req);
    return ret;
}

/* ---- other routes ---- */

static enum MHD_Result handle_metrics(struct server *s, struct MHD_Connection *c,
                                      struct request_ctx *ctx)
{
    static const char *const st[] = {"ok",           "error",  "timeout",
                                     "memory_limit", "killed", "rejected"};
    struct pbx_pool_stats ps;
    struct pbx_buf b;
    char line[256];
    unsigned long cum = 0;

    pbx_buf_init(&b, 1 << 20);
#define OUT(...)                                            \
    do {                                                    \
        int n_ = snprintf(line, sizeof(line), __VA_ARGS__); \
        pbx_buf_append_trunc(&b, line, (size_t)n_);         \
    } while (0)
    OUT("# HELP pybox_http_requests_total HTTP requests by route and status.\n");
    OUT("# TYPE pybox_http_requests_total counter\n");
    for (int r = 0; r < R_COUNT; r++) {
        for (size_t i = 0; i <= NSTATUS; i++) {
            unsigned long v = atomic_load(&s->metrics.requests[r][i]);

            if (v == 0)
                continue;
            if (i < NSTATUS)
                OUT("pybox_http_requests_total{route=\"%s\",status=\"%d\"} %lu\n", route_names[r],
                    statuses[i], v);
            else
                OUT("pybox_http_requests_total{route=\"%s\",status=\"other\"} %lu\n",
                    route_names[r], v);
        }
    }
    OUT("# HELP pybox_executions_total Executions by result status.\n");
    OUT("# TYPE pybox_executions_total counter\n");
    for (int i = 0; i < 6; i++)
        OUT("pybox_executions_total{status=\"%s\"} %lu\n", st[i],
            atomic_load(&s->metrics.executions[i]));
    OUT("# HELP pybox_execute_latency_seconds Latency of execution requests.\n");
    OUT("# TYPE pybox_execute_latency_seconds histogram\n");
    for (size_t i = 0; i <= NBUCKET; i++) {
        cum += atomic_load(&s->metrics.latency[i]);
        if (i < NBUCKET)
            OUT("pybox_execute_latency_seconds_bucket{le=\"%g\"} %lu\n", buckets_ms[i] / 1000.0,
                cum);
        else
            OUT("pybox_execute_latency_seconds_bucket{le=\"+Inf\"} %lu\n", cum);
    }
    OUT("pybox_execute_latency_seconds_sum %.6f\n",
        (double)atomic_load(&s->metrics.latency_sum_us) / 1e6);
    OUT("pybox_execute_latency_seconds_count %lu\n", atomic_load(&s->metrics.latency_count));
    OUT("# HELP pybox_cells_busy Cells running an execution.\n");
    OUT("# TYPE pybox_cells_busy gauge\n");
    OUT("pybox_cells_busy %u\n", pbx__admit_active(s->admit));
    OUT("# HELP pybox_job_page_faults_total Page faults of jobs, before and after their code "
        "arrived.\n");
    OUT("# TYPE pybox_job_page_faults_total counter\n");
    OUT("pybox_job_page_faults_total{phase=\"prepare\"} %llu\n",
        (unsigned long long)atomic_load(&s->metrics.faults_prep));
    OUT("pybox_job_page_faults_total{phase=\"run\"} %llu\n",
        (unsigned long long)atomic_load(&s->metrics.faults_run));
    pbx_engine_pool_stats(s->engine, &ps);
    OUT("# HELP pybox_cells_idle Pre-forked cells waiting for work.\n");
    OUT("# TYPE pybox_cells_idle gauge\n");
    OUT("pybox_cells_idle %u\n", ps.idle);
    OUT("# HELP pybox_pool_target Pre-forked cells the pool aims to keep.\n");
    OUT("# TYPE pybox_pool_target gauge\n");
    OUT("pybox_pool_target %u\n", ps.target);
    OUT("# HELP pybox_pool_executions_total Executions by whether a pre-forked cell served them.\n");
    OUT("# TYPE pybox_pool_executions_total counter\n");
    OUT("pybox_pool_executions_total{cell=\"warm\"} %lu\n", ps.hits);
    OUT("pybox_pool_executions_total{cell=\"forked\"} %lu\n", ps.misses);
    OUT("# HELP pybox_zygotes_started_total Zygotes started (replaced when dead or recycled).\n");
    OUT("# TYPE pybox_zygotes_started_total counter\n");
    OUT("pybox_zygotes_started_total %lu\n", ps.zygotes);
    OUT("# HELP pybox_cgroups_total Cell cgroups created, and taken again from the pool.\n");
    OUT("# TYPE pybox_cgroups_total counter\n");
    OUT("pybox_cgroups_total{how=\"created\"} %lu\n", ps.cgroups_created);
    OUT("pybox_cgroups_total{how=\"reused\"} %lu\n", ps.cgroups_reused);
    OUT("# HELP pybox_execution_slots Concurrent executions allowed.\n");
    OUT("# TYPE pybox_execution_slots gauge\n");
    OUT("pybox_execution_slots %u\n", pbx__admit_capacity(s->admit));
    OUT("# HELP pybox_queue_waiting Requests waiting for an execution slot.\n");
    OUT("# TYPE pybox_queue_waiting gauge\n");
    OUT("pybox_queue_waiting %u\n", pbx__admit_queued(s->admit));
    OUT("# HELP pybox_queue_timeouts_total Requests answered 503 after waiting their whole time.\n");
    OUT("# TYPE pybox_queue_timeouts_total counter\n");
    OUT("pybox_queue_timeouts_total %lu\n", pbx__admit_queue_timeouts(s->admit));
#undef OUT
    return send_text(c, ctx, s, 200, pbx_buf_steal(&b, NULL),
                     "text/plain; version=0.0.4; charset=utf-8", 0);
}

static enum MHD_Result handle_health(struct server *s, struct MHD_Connection *c,
                                     struct request_ctx *ctx)
{
    json_t *body = json_pack("{s:s, s:s, s:i, s:i}", "status", "ok", "version", PBX_VERSION_STRING,
                             "active_executions", (int)pbx__admit_active(s->admit),
                             "max_concurrent_executions", (int)pbx__admit_capacity(s->admit));

    return send_json(c, ctx, s, 200, body, 0);
}

/*
 * GET /v1/info: what an anonymous caller may do here, read from the running
 * configuration, so the docs page never shows limits that are not in force.
 */
static enum MHD_Result handle_info(struct server *s, struct MHD_Connection *c,
                                   struct request_ctx *ctx)
{
    const struct pbx_server_config *cfg = s->cfg;
    const struct pbx_limits *l = &cfg->limits;
    json_t *modules = json_array();
    json_t *limits;
    json_t *body;

    for (size_t i = 0; pbx_policy_default_modules[i] != NULL; i++)
        json_array_append_new(modules, json_string(pbx_policy_default_modules[i]));
    limits = json_pack(
        "{s:f, s:f, s:I, s:I, s:I, s:I, s:I, s:i, s:I, s:i, s:I, s:i, s:I, s:I, s:I}", "timeout_s",
        l->wall_ms / 1000.0, "cpu_s", l->cpu_ms / 1000.0, "memory_mb",
        (json_int_t)(l->memory_bytes >> 20), "code_chars", (json_int_t)cfg->anon_code_chars,
        "stdin_bytes", (json_int_t)l->stdin_bytes, "stdout_bytes", (json_int_t)l->stdout_bytes,
        "stderr_bytes", (json_int_t)l->stderr_bytes, "input_files", (int)l->input_files,
        "input_file_bytes", (json_int_t)l->input_file_bytes, "return_files", (int)l->output_files,
        "return_file_bytes", (json_int_t)l->output_file_bytes, "pids", (int)l->pids, "disk_bytes",
        (json_int_t)l->disk_bytes, "disk_inodes", (json_int_t)l->disk_inodes, "body_bytes",
        (json_int_t)cfg->max_body);
    body = json_pack(
        "{s:s, s:s, s:s, s:o, s:{s:o, s:o}, s:i, s:{s:i, s:f}, s:o, s:b, s:[s,s], s:s, s:s}",
        "name", "pybox", "version", PBX_VERSION_STRING, "policy", "anonymous", "limits", limits,
        "rate_limits", "requests_per_minute",
        cfg->anon_rpm >= 0 ? json_integer(cfg->anon_rpm) : json_null(), "requests_per_day",
        cfg->anon_rpd >= 0 ? json_integer(cfg->anon_rpd) : json_null(), "max_concurrency",
        (int)pbx__admit_capacity(s->admit), "queue", "max_waiting", (int)cfg->queue_max,
        "max_wait_s", cfg->queue_wait_ms / 1000.0, "allowed_modules", modules, "network", false,
        "dialects", "/execute", "/v1/execute", "openapi", "/openapi.json", "docs", "/docs");
    return send_json(c, ctx, s, 200, body, 0);
}

/*
 * One embedded file of the docs page.  Its ETag is a hash of its content, so
 * a browser revalidates (Cache-Control: no-cache) and gets 304 while the
 * binary is the same.  The CSP allows scripts and styles from this server only.
 */
static enum MHD_Result handle_asset(struct server *s, struct MHD_Connection *c,
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

static enum MHD_Result handle_root(struct server *s, struct MHD_Connection *c,
                                   struct request_ctx *ctx)
{
    json_t *body;

    if (!wants_json(c))
        return handle_asset(s, c, ctx, pbx__web_lookup("/"));
    body =
        json_pack("{s:s, s:s, s:s, s:[s,s], s:s}", "name", "pybox", "version", PBX_VERSION_STRING,
                  "description", "runs untrusted Python in a Linux kernel sandbox", "endpoints",
                  "POST /execute", "POST /v1/execute", "openapi", "/openapi.json");

    return send_json(c, ctx, s, 200, body, 0);
}

static enum MHD_Result handle_preflight(struct server *s, struct MHD_Connection *c,
                                        struct request_ctx *ctx)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
    enum MHD_Result ret;

    if (allowed_origin(s, c) != NULL)
        MHD_add_response_header(r, "Access-Control-Allow-Origin", allowed_origin(s, c));
    if (strcmp(s->cfg->cors_origins, "*") != 0)
        MHD_add_response_header(r, "Vary", "Origin");
    MHD_add_response_header(r, "Access-Control-Allow-Methods", "GET, POST, OPTIONS");
    MHD_add_response_header(r, "Access-Control-Allow-Headers", "Content-Type, Authorization");
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
    return R_OTHER;
}

static enum MHD_Result dispatch(struct server *s, struct MHD_Connection *c, struct request_ctx *ctx,
                                const char *url, const char *method)
{
    bool get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    bool post = strcmp(method, "POST") == 0;

    if (strcmp(method, "OPTIONS") == 0)
        return handle_preflight(s, c, ctx);
    switch (ctx->route) {
    case R_EXECUTE:
    case R_V1_EXECUTE:
        if (!post)
            break;
        return handle_execute(s, c, ctx, ctx->route == R_V1_EXECUTE);
    case R_HEALTH:
        if (!get)
            break;
        return handle_health(s, c, ctx);
    case R_METRICS:
        if (!get)
            break;
        return handle_metrics(s, c, ctx);
    case R_OPENAPI:
        if (!get)
            break;
        return send_text(c, ctx, s, 200,
                         xstrndup((const char *)pbx_openapi_json, pbx_openapi_json_len),
                         "application/json", 0);
    case R_ROOT:
        if (!get)
            break;
        return handle_root(s, c, ctx);
    case R_INFO:
        if (!get)
            break;
        return handle_info(s, c, ctx);
    case R_DOCS:
    case R_ASSETS:
        if (pbx__web_lookup(url) == NULL)
            return send_error(c, ctx, s, "NotFound", "no such file", 0, NULL);
        if (!get)
            break;
        return handle_asset(s, c, ctx, pbx__web_lookup(url));
    default:
        return send_error(c, ctx, s, "NotFound", "no such endpoint; see /openapi.json", 0, NULL);
    }
    return send_error(c, ctx, s, "MethodNotAllowed", "this method is not allowed here", 0, NULL);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_size, void **con_cls)
{
    struct server *s = cls;
    struct request_ctx *ctx = *con_cls;

    (void)version;
    if (ctx == NULL) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");

        ctx = xcalloc(1, sizeof(*ctx));
        snprintf(ctx->id, sizeof(ctx->id), "%s-%06lx", s->id_salt,
                 atomic_fetch_add(&s->seq, 1) + 1);
        pbx_buf_init(&ctx->body, s->cfg->max_body);
        ctx->start_ms = now_ms();
        ctx->route = route_of(url);
        snprintf(ctx->method, sizeof(ctx->method), "%s", method);
        snprintf(ctx->path, sizeof(ctx->path), "%s", url);
        pbx__admit_client(s->admit, ci ? ci->client_addr : NULL,
                          MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Forwarded-For"),
                          ctx->client, sizeof(ctx->client));
        ctx->server = s;
        *con_cls = ctx;
        if (ctx->route == R_V1_EXECUTE && strcmp(method, "POST") == 0) {
            const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Type");

            if (ct != NULL && strncasecmp(ct, "multipart/form-data", 19) == 0) {
                ctx->pp = MHD_create_post_processor(c, 64 * 1024, on_part, ctx);
                if (ctx->pp == NULL)
                    return send_error(c, ctx, s, "InvalidRequest",
                                      "multipart/form-data without a valid boundary", 0, NULL);
            }
        }
        /* Refuse an announced oversized body before reading any of it. */
        if (cl != NULL && strtoull(cl, NULL, 10) > s->cfg->max_body) {
            char msg[128];

            ctx->too_large = true;
            snprintf(msg, sizeof(msg), "the request body is over %zu bytes", s->cfg->max_body);
            return send_error(c, ctx, s, "PayloadTooLarge", msg, 0, NULL);
        }
        return MHD_YES;
    }
    if (*upload_size != 0 && ctx->pp != NULL) {
        ctx->discarded += *upload_size; /* counted, not kept: the parts are */
        if (ctx->discarded > s->cfg->max_body)
            ctx->too_large = true;
        if (ctx->discarded > 2 * s->cfg->max_body) {
            ctx->status = 413;
            return MHD_NO;
        }
        if (!ctx->too_large && MHD_post_process(ctx->pp, upload_data, *upload_size) != MHD_YES)
            mp_fail(ctx, "malformed multipart/form-data body");
        *upload_size = 0;
        return MHD_YES;
    }
    if (*upload_size != 0) {
        /*
         * A body that outgrows the cap (chunked, so not announced) is
         * discarded as it comes and answered with 413 once it ends: the
         * server cannot answer in the middle of an upload.  A client that
         * keeps sending past twice the cap is cut off.
         */
        if (!ctx->too_large && pbx_buf_append(&ctx->body, upload_data, *upload_size) < 0) {
            ctx->too_large = true;
            ctx->discarded = ctx->body.len;
            pbx_buf_release(&ctx->body);
        }
        if (ctx->too_large) {
            ctx->discarded += *upload_size;
            if (ctx->discarded > 2 * s->cfg->max_body) {
                ctx->status = 413;
                return MHD_NO;
            }
        }
        *upload_size = 0;
        return MHD_YES;
    }
    if (ctx->answered)
        return MHD_YES;
    if (ctx->too_large) {
        char msg[128];

        snprintf(msg, sizeof(msg), "the request body is over %zu bytes", s->cfg->max_body);
        return send_error(c, ctx, s, "PayloadTooLarge", msg, 0, NULL);
    }
    return dispatch(s, c, ctx, url, method);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct server *s = cls;
    struct request_ctx *ctx = *con_cls;

    (void)c;
    if (ctx == NULL)
        return;
    if (!ctx->answered)
        ctx->status = toe == MHD_REQUEST_TERMINATED_TIMEOUT_REACHED ? 408 : 0;
    atomic_fetch_add(&s->metrics.requests[ctx->route][status_index(ctx->status)], 1);
    log_request(ctx);
    if (ctx->pp != NULL)
        MHD_destroy_post_processor(ctx->pp);
    pbx__request_release(&ctx->mp);
    pbx_buf_release(&ctx->value);
    pbx_buf_release(&ctx->body);
    free(ctx);
    *con_cls = NULL;
}

static void mhd_log(void *cls, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    char line[512];

    (void)cls;
    vsnprintf(line, sizeof(line), fmt, ap);
    line[strcspn(line, "\n")] = '\0';
    pbx_log(PBX_LOG_INFO, "http: %s", line);
}

static int parse_listen(const char *listen, struct sockaddr_storage *ss, socklen_t *len,
                        struct pbx_error **err)
{
    char host[128];
    const char *colon = strrchr(listen, ':');
    char *end = NULL;
    long port;
    size_t hlen;

    if (colon == NULL)
        return pbx_error_set(err, PBX_E_INVAL, "--listen `%s` is not HOST:PORT", listen);
    hlen = (size_t)(colon - listen);
    if (hlen >= sizeof(host))
        return pbx_error_set(err, PBX_E_INVAL, "--listen `%s`: host too long", listen);
    memcpy(host, listen, hlen);
    host[hlen] = '\0';
    if (hlen >= 2 && host[0] == '[' && host[hlen - 1] == ']') {
        memmove(host, host + 1, hlen - 2);
        host[hlen - 2] = '\0';
    }
    port = strtol(colon + 1, &end, 10);
    if (end == colon + 1 || *end != '\0' || port < 0 || port > 65535)
        return pbx_error_set(err, PBX_E_INVAL, "--listen `%s`: bad port", listen);
    memset(ss, 0, sizeof(*ss));
    if (inet_pton(AF_INET, host, &((struct sockaddr_in *)ss)->sin_addr) == 1) {
        ((struct sockaddr_in *)ss)->sin_family = AF_INET;
        ((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)port);
        *len = sizeof(struct sockaddr_in);
    } else if (inet_pton(AF_INET6, host, &((struct sockaddr_in6 *)ss)->sin6_addr) == 1) {
        ((struct sockaddr_in6 *)ss)->sin6_family = AF_INET6;
        ((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)port);
        *len = sizeof(struct sockaddr_in6);
    } else {
        return pbx_error_set(err, PBX_E_INVAL, "--listen `%s`: `%s` is not an IP address", listen,
                             host);
    }
    return 0;
}

int pbx_server_run(const struct pbx_server_config *cfg, struct pbx_error **err)
{
    struct server *s = xcalloc(1, sizeof(*s));
    struct pbx_engine_config ecfg;
    struct sockaddr_storage ss;
    socklen_t sslen;
    struct MHD_Daemon *d;
    const union MHD_DaemonInfo *info;
    char *uri = NULL;
    char *desc;
    char url[128];
    char host[64];
    sigset_t sigs;
    unsigned char salt[4];
    int sig = 0;
    int rc = -1;

    s->cfg = cfg;
    randombytes_buf(salt, sizeof(salt));
    sodium_bin2hex(s->id_salt, sizeof(s->id_salt), salt, sizeof(salt));
    if (parse_listen(cfg->listen, &ss, &sslen, err) < 0)
        goto out;
    s->admit = pbx__admit_new(cfg->max_concurrency);
    pbx__admit_set_queue(s->admit, cfg->queue_max, cfg->queue_wait_ms);
    for (size_t i = 0; i < cfg->nproxies; i++) {
        if (pbx__admit_add_proxy(s->admit, cfg->proxies[i], err) < 0)
            goto out;
    }
    if (cfg->store_uri == NULL) {
        if (mkdir(cfg->data_dir, 0700) < 0 && errno != EEXIST) {
            pbx_error_set(err, errno, "create the data directory `%s`", cfg->data_dir);
            goto out;
        }
        uri = xasprintf("sqlite:%s/pybox.db", cfg->data_dir);
    } else {
        uri = xstrdup(cfg->store_uri);
    }
    if (pbx_store_open(uri, &s->store, err) < 0) {
        pbx_error_prefix(err, "open the store");
        goto out;
    }
    pbx_engine_config_default(&ecfg);
    ecfg.preload = cfg->preload;
    /* The warm pool serves executions with the server's default limits. */
    ecfg.spares_min = cfg->spares_min;
    ecfg.spares_max = cfg->spares_max;
    ecfg.spare_limits = cfg->limits;
    ecfg.zygote_max_execs = cfg->zygote_max_execs;
    ecfg.zygote_max_age_s = cfg->zygote_max_age_s;
    if (pbx_engine_start(&ecfg, &s->engine, err) < 0) {
        pbx_error_prefix(err, "start the jail");
        goto out;
    }
    desc = pbx_engine_describe(s->engine);
    for (char *p = desc; (p = strchr(p, '\n')) != NULL;)
        *p = ';';
    fprintf(stderr, "pybox: isolation in force: %s\n", desc);
    free(desc);

    /* Signals are taken by sigwait() below; every thread inherits the block. */
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    d = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_ERROR_LOG |
            MHD_USE_ITC | (ss.ss_family == AF_INET6 ? MHD_USE_IPv6 : 0),
        0, NULL, NULL, on_request, s, MHD_OPTION_SOCK_ADDR, &ss, MHD_OPTION_NOTIFY_COMPLETED,
        on_completed, s, MHD_OPTION_CONNECTION_TIMEOUT, cfg->client_timeout_s,
        MHD_OPTION_CONNECTION_LIMIT, 512u, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
        MHD_OPTION_STRICT_FOR_CLIENT, 1, MHD_OPTION_END);
    if (d == NULL) {
        pbx_error_set(err, EADDRINUSE, "listen on %s", cfg->listen);
        goto out;
    }
    info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    inet_ntop(ss.ss_family,
              ss.ss_family == AF_INET ? (void *)&((struct sockaddr_in *)&ss)->sin_addr
                                      : (void *)&((struct sockaddr_in6 *)&ss)->sin6_addr,
              host, sizeof(host));
    snprintf(url, sizeof(url), ss.ss_family == AF_INET6 ? "http://[%s]:%u" : "http://%s:%u", host,
             info ? (unsigned)info->port : 0);
    fprintf(stderr, "pybox: serving on %s\n", url);
    if (cfg->url_file != NULL) {
        char *tmp = xasprintf("%s.tmp", cfg->url_file);
        FILE *f = fopen(tmp, "we");

        if (f != NULL) {
            fprintf(f, "%s\n", url);
            fclose(f);
            rename(tmp, cfg->url_file);
        }
        free(tmp);
    }

    while (sigwait(&sigs, &sig) == 0 && sig == SIGHUP)
        ;
    fprintf(stderr, "pybox: %s received: draining\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
    {
        MHD_socket lsock = MHD_quiesce_daemon(d);
        uint64_t until = now_ms() + (uint64_t)cfg->drain_s * 1000u;

        if (lsock != MHD_INVALID_SOCKET)
            close(lsock);
        while (pbx__admit_active(s->admit) > 0 && now_ms() < until)
            usleep(20000);
    }
    MHD_stop_daemon(d);
    rc = 0;
out:
    pbx_engine_free(s->engine);
    pbx_store_close(s->store);
    pbx__admit_free(s->admit);
    free(uri);
    free(s);
    return rc;
}
