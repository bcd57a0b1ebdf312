/*
 * pybox serve: the HTTP front.
 *
 * Theory of operation: one process holds the secrets (the admin key, the
 * store) and two engines (each a jail whose zygote forks a cell per
 * execution, see src/engine/engine.c): one for anonymous callers, one for
 * key holders, so that callers of different trust never share a zygote's
 * address-space layout.  libmicrohttpd runs a thread per connection, at most
 * per_ip_connections from one address; a watchdog thread cuts a connection
 * whose request does not arrive whole (or whose answer does not leave)
 * within request_deadline_s.  A request body is read into a capped buffer
 * charged to the server's memory budget: bodies announced larger than the
 * largest valid request are refused before they are read, and bodies the
 * budget cannot hold get 503.  Then the request is routed; executions are
 * handled in src/server/execute.c, on the connection's thread.
 * SIGTERM or SIGINT: stop accepting, let running executions finish (bounded
 * by drain_s), stop the engines, exit 0.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <sodium.h>
#include <strings.h>
#include <sys/socket.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/utf8.h"
#include "common/xalloc.h"
#include "openapi_json.h"
#include "policy/policy.h"
#include "server/internal.h"
#include "server/web.h"
#include "pybox/version.h"
#include "common/banned.h"

static const char *const route_names[R_COUNT] = {
    "/execute", "/v1/execute", "/v1/health", "/metrics", "/openapi.json",
    "/",        "/v1/info",    "/docs",      "/assets/", "other",
};

static const int statuses[NSTATUS] = {200, 204, 304, 400, 401, 403, 404, 405,
                                      408, 413, 415, 429, 500, 501, 503};

static const double buckets_ms[NBUCKET] = {5,   10,   25,   50,   100,   250,
                                           500, 1000, 2500, 5000, 10000, 30000};

void pbx__server_iso_time(uint64_t ms, char *out, size_t len)
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
    cfg->request_deadline_s = 60;
    cfg->per_ip_connections = 64;
    cfg->memory_budget = 0;
    cfg->drain_s = 30;
    cfg->preload = true;
    cfg->spares_min = 2;
    cfg->spares_max = 6;
    cfg->zygote_max_execs = 5000;
    cfg->zygote_max_age_s = 600;
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

enum MHD_Result pbx__server_send_text(struct MHD_Connection *c, struct request_ctx *ctx,
                                      const struct pbx_server *s, int status, char *text,
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
    if (ctx->close)
        MHD_add_response_header(r, "Connection", "close");
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

enum MHD_Result pbx__server_send_json(struct MHD_Connection *c, struct request_ctx *ctx,
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
    return pbx__server_send_text(c, ctx, s, status, text, "application/json", retry_after);
}

/* The one table from error type to HTTP status. */
int pbx__server_http_status(const char *type)
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
enum MHD_Result pbx__server_send_error(struct MHD_Connection *c, struct request_ctx *ctx,
                                       const struct pbx_server *s, const char *type,
                                       const char *message, unsigned retry_after, json_t *extra)
{
    char *text = pbx_utf8_sanitize(message ? message : "", message ? strlen(message) : 0, NULL);
    json_t *details = json_pack("{s:s, s:s}", "type", type, "message", text);
    json_t *body;
    char ts[64];

    free(text);
    pbx__server_iso_time(pbx_clock_ms(CLOCK_REALTIME), ts, sizeof(ts));
    if (extra != NULL) {
        json_object_update(details, extra);
        json_decref(extra);
    }
    body = json_pack("{s:s, s:s, s:o, s:O}", "status", "error", "timestamp_utc", ts,
                     "error_details", details, "error", details);
    return pbx__server_send_json(c, ctx, s, pbx__server_http_status(type), body, retry_after);
}

void pbx__server_observe(struct pbx_server *s, const struct pbx_exec_result *res, uint64_t ms)
{
    size_t b = 0;

    atomic_fetch_add(&s->metrics.executions[res->status], 1);
    atomic_fetch_add(&s->metrics.faults_prep, res->prep_faults);
    atomic_fetch_add(&s->metrics.faults_run, res->minor_faults - res->prep_faults);
    while (b < NBUCKET && (double)ms > buckets_ms[b])
        b++;
    atomic_fetch_add(&s->metrics.latency[b], 1);
    atomic_fetch_add(&s->metrics.latency_count, 1);
    atomic_fetch_add(&s->metrics.latency_sum_us, ms * 1000);
}

static void log_request(const struct request_ctx *ctx)
{
    char ts[64];
    json_t *line;
    char *text;

    pbx__server_iso_time(pbx_clock_ms(CLOCK_REALTIME), ts, sizeof(ts));
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

/* ---- other routes ---- */

static enum MHD_Result handle_metrics(struct pbx_server *s, struct MHD_Connection *c,
                                      struct request_ctx *ctx)
{
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
    for (int i = PBX_STATUS_OK; i <= PBX_STATUS_REJECTED; i++)
        OUT("pybox_executions_total{status=\"%s\"} %lu\n", pbx_status_name((enum pbx_status)i),
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
    s->ex.pool_stats(s->ex.arg, &ps);
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
    OUT("# HELP pybox_memory_budget_bytes Memory requests in flight may hold, and hold now.\n");
    OUT("# TYPE pybox_memory_budget_bytes gauge\n");
    OUT("pybox_memory_budget_bytes{state=\"limit\"} %zu\n", s->budget);
    OUT("pybox_memory_budget_bytes{state=\"used\"} %zu\n", atomic_load(&s->budget_used));
    OUT("# HELP pybox_budget_refusals_total Requests answered 503 because the budget was spent.\n");
    OUT("# TYPE pybox_budget_refusals_total counter\n");
    OUT("pybox_budget_refusals_total %lu\n", atomic_load(&s->metrics.budget_refusals));
    OUT("# HELP pybox_deadline_drops_total Connections cut at the request deadline.\n");
    OUT("# TYPE pybox_deadline_drops_total counter\n");
    OUT("pybox_deadline_drops_total %lu\n", atomic_load(&s->metrics.deadline_drops));
#undef OUT
    return pbx__server_send_text(c, ctx, s, 200, pbx_buf_steal(&b, NULL),
                                 "text/plain; version=0.0.4; charset=utf-8", 0);
}

static enum MHD_Result handle_health(struct pbx_server *s, struct MHD_Connection *c,
                                     struct request_ctx *ctx)
{
    json_t *body = json_pack("{s:s, s:s, s:i, s:i}", "status", "ok", "version", PBX_VERSION_STRING,
                             "active_executions", (int)pbx__admit_active(s->admit),
                             "max_concurrent_executions", (int)pbx__admit_capacity(s->admit));

    return pbx__server_send_json(c, ctx, s, 200, body, 0);
}

/*
 * GET /v1/info: what an anonymous caller may do here, read from the running
 * configuration, so the docs page never shows limits that are not in force.
 */
static enum MHD_Result handle_info(struct pbx_server *s, struct MHD_Connection *c,
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
        "{s:f, s:f, s:I, s:I, s:I, s:I, s:I, s:i, s:I, s:i, s:I, s:I, s:i, s:I, s:I, s:I}",
        "timeout_s", l->wall_ms / 1000.0, "cpu_s", l->cpu_ms / 1000.0, "memory_mb",
        (json_int_t)(l->memory_bytes >> 20), "code_chars", (json_int_t)cfg->anon_code_chars,
        "stdin_bytes", (json_int_t)l->stdin_bytes, "stdout_bytes", (json_int_t)l->stdout_bytes,
        "stderr_bytes", (json_int_t)l->stderr_bytes, "input_files", (int)l->input_files,
        "input_file_bytes", (json_int_t)l->input_file_bytes, "return_files", (int)l->output_files,
        "return_file_bytes", (json_int_t)l->output_file_bytes, "answer_bytes",
        (json_int_t)l->answer_bytes, "pids", (int)l->pids, "disk_bytes", (json_int_t)l->disk_bytes,
        "disk_inodes", (json_int_t)l->disk_inodes, "body_bytes", (json_int_t)cfg->max_body);
    body = json_pack(
        "{s:s, s:s, s:s, s:o, s:{s:o, s:o}, s:i, s:{s:i, s:f}, s:o, s:b, s:[s,s], s:s, s:s}",
        "name", "pybox", "version", PBX_VERSION_STRING, "policy", "anonymous", "limits", limits,
        "rate_limits", "requests_per_minute",
        cfg->anon_rpm >= 0 ? json_integer(cfg->anon_rpm) : json_null(), "requests_per_day",
        cfg->anon_rpd >= 0 ? json_integer(cfg->anon_rpd) : json_null(), "max_concurrency",
        (int)pbx__admit_capacity(s->admit), "queue", "max_waiting", (int)cfg->queue_max,
        "max_wait_s", cfg->queue_wait_ms / 1000.0, "allowed_modules", modules, "network", false,
        "dialects", "/execute", "/v1/execute", "openapi", "/openapi.json", "docs", "/docs");
    return pbx__server_send_json(c, ctx, s, 200, body, 0);
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
    body =
        json_pack("{s:s, s:s, s:s, s:[s,s], s:s}", "name", "pybox", "version", PBX_VERSION_STRING,
                  "description", "runs untrusted Python in a Linux kernel sandbox", "endpoints",
                  "POST /execute", "POST /v1/execute", "openapi", "/openapi.json");

    return pbx__server_send_json(c, ctx, s, 200, body, 0);
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

static enum MHD_Result dispatch(struct pbx_server *s, struct MHD_Connection *c,
                                struct request_ctx *ctx, const char *url, const char *method)
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
        return pbx__execute_handle(s, c, ctx, ctx->route == R_V1_EXECUTE);
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
        return pbx__server_send_text(c, ctx, s, 200,
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
            return pbx__server_send_error(c, ctx, s, "NotFound", "no such file", 0, NULL);
        if (!get)
            break;
        return handle_asset(s, c, ctx, pbx__web_lookup(url));
    default:
        return pbx__server_send_error(c, ctx, s, "NotFound", "no such endpoint; see /openapi.json",
                                      0, NULL);
    }
    return pbx__server_send_error(c, ctx, s, "MethodNotAllowed", "this method is not allowed here",
                                  0, NULL);
}

/*
 * The largest body a valid execution request can be, from the limits every
 * caller shares: code and stdin as JSON strings (each byte at most a six-byte
 * escape), input files in base64, the names to return escaped likewise, and
 * room for the other fields.  A body announced larger cannot be valid, so it
 * is refused before it is read, whoever sends it.
 */
static size_t max_valid_body(const struct pbx_server_config *cfg)
{
    const struct pbx_limits *l = &cfg->limits;
    uint64_t n = 64u << 10;

    n += l->code_bytes * 6 + l->stdin_bytes * 6;
    n += (uint64_t)l->input_files * ((l->input_file_bytes + 2) / 3 * 4 + 255 * 6 + 64);
    n += (uint64_t)l->output_files * (255 * 6 + 8);
    return n < cfg->max_body ? (size_t)n : cfg->max_body;
}

size_t pbx__server_answer_reserve(const struct pbx_limits *l)
{
    return (size_t)l->answer_bytes * 4 + (64u << 10);
}

bool pbx__server_budget_take(struct pbx_server *s, struct request_ctx *ctx, size_t n)
{
    size_t used = atomic_load(&s->budget_used);

    do {
        if (n > s->budget || used > s->budget - n)
            return false;
    } while (!atomic_compare_exchange_weak(&s->budget_used, &used, used + n));
    ctx->held += n;
    return true;
}

enum MHD_Result pbx__server_budget_spent(struct pbx_server *s, struct MHD_Connection *c,
                                         struct request_ctx *ctx)
{
    atomic_fetch_add(&s->metrics.budget_refusals, 1);
    return pbx__server_send_error(c, ctx, s, "ServerBusy",
                                  "the server's memory for requests in flight is spent; retry in "
                                  "a moment",
                                  1, NULL);
}

void pbx__server_budget_release(struct pbx_server *s, struct request_ctx *ctx)
{
    atomic_fetch_sub(&s->budget_used, ctx->held);
    ctx->held = 0;
}

/* ---- request deadlines ---- */

/*
 * The connection watchdog.  libmicrohttpd's timeout is an idle timeout: a
 * client that sends one byte every few seconds holds its connection (and
 * its thread) forever.  Each connection here has a deadline instead: its
 * request must arrive whole, and its answer must leave, within
 * request_deadline_s; an idle keep-alive connection's next request counts
 * from the end of the last one.  While an execution runs the connection has
 * no deadline (the engine bounds it).  A thread cuts connections past their
 * deadline with shutdown(2), which ends the connection thread's blocking
 * read or write; libmicrohttpd then closes it as any connection the client
 * dropped.  A connection is unlinked (under the lock) before libmicrohttpd
 * closes its socket, so a number reused for a new socket is never cut.
 */
struct conn {
    int fd;               /* the socket */
    uint64_t deadline_ms; /* cut after this; UINT64_MAX while executing */
    bool cut;             /* shut down already */
    struct conn *prev;    /* the watch's list */
    struct conn *next;
};

struct watch {
    pthread_mutex_t lock; /* guards everything below */
    pthread_cond_t wake;  /* signalled to stop */
    struct conn *head;    /* connections open now */
    bool stop;            /* the thread must end */
    pthread_t thread;     /* the watchdog */
    uint64_t span_ms;     /* request_deadline_s */
};

static void *watch_main(void *arg)
{
    struct pbx_server *s = arg;
    struct watch *w = s->watch;

    pthread_mutex_lock(&w->lock);
    while (!w->stop) {
        uint64_t now = pbx_clock_ms(CLOCK_MONOTONIC);
        struct timespec until;

        for (struct conn *c = w->head; c != NULL; c = c->next) {
            if (!c->cut && now >= c->deadline_ms) {
                shutdown(c->fd, SHUT_RDWR);
                c->cut = true;
                atomic_fetch_add(&s->metrics.deadline_drops, 1);
            }
        }
        pbx_clock_after(CLOCK_MONOTONIC, 250, &until);
        pthread_cond_timedwait(&w->wake, &w->lock, &until);
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_ctx,
                          enum MHD_ConnectionNotificationCode code)
{
    struct pbx_server *s = cls;
    struct watch *w = s->watch;
    struct conn *cn = *socket_ctx;

    if (w == NULL)
        return;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);

        if (ci == NULL)
            return;
        cn = xcalloc(1, sizeof(*cn));
        cn->fd = ci->connect_fd;
        cn->deadline_ms = pbx_clock_ms(CLOCK_MONOTONIC) + w->span_ms;
        pthread_mutex_lock(&w->lock);
        cn->next = w->head;
        if (w->head != NULL)
            w->head->prev = cn;
        w->head = cn;
        pthread_mutex_unlock(&w->lock);
        *socket_ctx = cn;
        return;
    }
    if (cn == NULL)
        return;
    pthread_mutex_lock(&w->lock);
    if (cn->prev != NULL)
        cn->prev->next = cn->next;
    else
        w->head = cn->next;
    if (cn->next != NULL)
        cn->next->prev = cn->prev;
    pthread_mutex_unlock(&w->lock);
    free(cn);
    *socket_ctx = NULL;
}

/* Set the connection's deadline `span` from now (UINT64_MAX: none). */
static void set_deadline(struct pbx_server *s, struct MHD_Connection *c, bool none)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    struct watch *w = s->watch;
    struct conn *cn;

    if (w == NULL || ci == NULL || ci->socket_context == NULL)
        return;
    cn = ci->socket_context;
    pthread_mutex_lock(&w->lock);
    cn->deadline_ms = none ? UINT64_MAX : pbx_clock_ms(CLOCK_MONOTONIC) + w->span_ms;
    pthread_mutex_unlock(&w->lock);
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
    bool execute =
        (ctx->route == R_EXECUTE || ctx->route == R_V1_EXECUTE) && strcmp(method, "POST") == 0;
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
        return pbx__server_send_error(c, ctx, s, "InvalidRequest",
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
        return pbx__server_send_error(c, ctx, s, "PayloadTooLarge", msg, 0, NULL);
    }
    if (execute && announced > s->max_valid_body) {
        ctx->too_large = true;
        snprintf(msg, sizeof(msg),
                 "the request body is %llu bytes; no valid request to this server is over %zu",
                 announced, s->max_valid_body);
        return pbx__server_send_error(c, ctx, s, "PayloadTooLarge", msg, 0, NULL);
    }
    if (execute && ctx->route == R_V1_EXECUTE) {
        const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Type");

        if (ct != NULL && strncasecmp(ct, "multipart/form-data", 19) == 0 &&
            !pbx__multipart_begin(&ctx->form, c, &s->caps))
            return pbx__server_send_error(c, ctx, s, "InvalidRequest",
                                          "multipart/form-data without a valid boundary", 0, NULL);
    }
    return MHD_YES;
}

/*
 * Body bytes as they arrive.  Only execution requests keep theirs (other
 * routes take none, so theirs are counted and dropped).  A body that
 * outgrows the cap or the budget (chunked, so not announced) is discarded
 * as it comes and answered once it ends: the server cannot answer in the
 * middle of an upload.  A client that keeps sending past twice the cap is
 * cut off.
 */
static enum MHD_Result take_body(struct pbx_server *s, struct request_ctx *ctx,
                                 const char *upload_data, size_t size)
{
    bool keep = (ctx->route == R_EXECUTE || ctx->route == R_V1_EXECUTE) && !ctx->answered &&
                !ctx->too_large && !ctx->over_budget;

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
    } else if (ctx->body.len + size > s->max_valid_body ||
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

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_size, void **con_cls)
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
        snprintf(ctx->id, sizeof(ctx->id), "%s-%06lx", s->id_salt,
                 atomic_fetch_add(&s->seq, 1) + 1);
        pbx_buf_init(&ctx->body, s->cfg->max_body);
        ctx->start_ms = pbx_clock_ms(CLOCK_REALTIME);
        ctx->route = route_of(url);
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

        snprintf(msg, sizeof(msg), "the request body is over %zu bytes", s->max_valid_body);
        return pbx__server_send_error(c, ctx, s, "PayloadTooLarge", msg, 0, NULL);
    }
    if (ctx->over_budget)
        return pbx__server_budget_spent(s, c, ctx);
    set_deadline(s, c, true);
    ret = dispatch(s, c, ctx, url, method);
    set_deadline(s, c, false);
    return ret;
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct pbx_server *s = cls;
    struct request_ctx *ctx = *con_cls;

    if (ctx == NULL)
        return;
    if (!ctx->answered && ctx->status == 0 && toe == MHD_REQUEST_TERMINATED_TIMEOUT_REACHED)
        ctx->status = 408;
    atomic_fetch_add(&s->metrics.requests[ctx->route][status_index(ctx->status)], 1);
    if (!s->cfg->quiet)
        log_request(ctx);
    pbx__multipart_release(&ctx->form);
    pbx_buf_release(&ctx->body);
    pbx__server_budget_release(s, ctx);
    free(ctx);
    *con_cls = NULL;
    set_deadline(s, c, false);
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

/* ---- the server's life ---- */

int pbx__server_new(const struct pbx_server_config *cfg, struct pbx_store *store,
                    const struct pbx_server_executor *ex, struct pbx_server **out,
                    struct pbx_error **err)
{
    struct pbx_server *s = xcalloc(1, sizeof(*s));
    unsigned char salt[4];

    s->cfg = cfg;
    s->store = store;
    s->ex = *ex;
    randombytes_buf(salt, sizeof(salt));
    sodium_bin2hex(s->id_salt, sizeof(s->id_salt), salt, sizeof(salt));
    s->admit = pbx__admit_new(cfg->max_concurrency);
    pbx__admit_set_queue(s->admit, cfg->queue_max, cfg->queue_wait_ms);
    for (size_t i = 0; i < cfg->nproxies; i++) {
        if (pbx__admit_add_proxy(s->admit, cfg->proxies[i], err) < 0) {
            pbx__server_free(s);
            return -1;
        }
    }
    s->callers = (struct pbx_caller_config){
        .anon_rpm = cfg->anon_rpm,
        .anon_rpd = cfg->anon_rpd,
        .anon_code_chars = cfg->anon_code_chars,
        .limits = &cfg->limits,
        .admin_key = cfg->admin_key,
    };
    s->max_valid_body = max_valid_body(cfg);
    s->caps = (struct pbx_request_caps){
        .max_files = cfg->limits.input_files,
        .max_file_bytes = cfg->limits.input_file_bytes,
        .max_return = cfg->limits.output_files,
        .max_stdin = cfg->limits.stdin_bytes,
    };
    s->budget = cfg->memory_budget;
    if (s->budget == 0) {
        /* Room for every slot's largest answer, and the largest body of every slot and place in the
         * queue. */
        s->budget = (size_t)cfg->max_concurrency * pbx__server_answer_reserve(&cfg->limits) +
                    (size_t)(cfg->max_concurrency + cfg->queue_max) * 2 * s->max_valid_body;
    }
    *out = s;
    return 0;
}

int pbx__server_start(struct pbx_server *s, const struct sockaddr *addr, socklen_t addrlen,
                      bool external, struct pbx_error **err)
{
    const struct pbx_server_config *cfg = s->cfg;
    unsigned flags = external ? MHD_USE_ERROR_LOG
                              : MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION |
                                    MHD_USE_ERROR_LOG | MHD_USE_ITC;
    const union MHD_DaemonInfo *info;
    struct MHD_OptionItem opts[4];
    size_t nopt = 0;

    if (addr == NULL)
        flags |= MHD_USE_NO_LISTEN_SOCKET;
    else if (addr->sa_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    if (addr != NULL)
        opts[nopt++] = (struct MHD_OptionItem){MHD_OPTION_SOCK_ADDR, 0, (void *)addr};
    if (cfg->per_ip_connections > 0)
        opts[nopt++] = (struct MHD_OptionItem){MHD_OPTION_PER_IP_CONNECTION_LIMIT,
                                               (intptr_t)cfg->per_ip_connections, NULL};
    opts[nopt++] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};
    (void)addrlen;
    if (cfg->request_deadline_s > 0 && !external) {
        pthread_condattr_t attr;

        s->watch = xcalloc(1, sizeof(*s->watch));
        pthread_mutex_init(&s->watch->lock, NULL);
        pthread_condattr_init(&attr);
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
        pthread_cond_init(&s->watch->wake, &attr);
        pthread_condattr_destroy(&attr);
        s->watch->span_ms = (uint64_t)cfg->request_deadline_s * 1000u;
        if (pthread_create(&s->watch->thread, NULL, watch_main, s) != 0) {
            free(s->watch);
            s->watch = NULL;
            return pbx_error_set(err, EAGAIN, "start the connection watchdog");
        }
    }
    s->daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, s, MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
        MHD_OPTION_NOTIFY_CONNECTION, on_connection, s, MHD_OPTION_CONNECTION_TIMEOUT,
        cfg->client_timeout_s, MHD_OPTION_CONNECTION_LIMIT, 512u, MHD_OPTION_EXTERNAL_LOGGER,
        mhd_log, NULL, MHD_OPTION_STRICT_FOR_CLIENT, 1, MHD_OPTION_ARRAY, opts, MHD_OPTION_END);
    if (s->daemon == NULL)
        return pbx_error_set(err, EADDRINUSE, "listen on %s", cfg->listen);
    if (addr == NULL)
        return 0;
    info = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
    return info ? (int)info->port : 0;
}

void pbx__server_step(struct pbx_server *s)
{
    MHD_run(s->daemon);
}

int pbx__server_add_connection(struct pbx_server *s, int fd, const struct sockaddr *peer,
                               socklen_t peerlen)
{
    return MHD_add_connection(s->daemon, fd, peer, peerlen) == MHD_YES ? 0 : -1;
}

void pbx__server_quiesce(struct pbx_server *s, unsigned drain_ms)
{
    MHD_socket lsock = MHD_quiesce_daemon(s->daemon);
    uint64_t until = pbx_clock_ms(CLOCK_REALTIME) + drain_ms;

    if (lsock != MHD_INVALID_SOCKET)
        close(lsock);
    while (pbx__admit_active(s->admit) > 0 && pbx_clock_ms(CLOCK_REALTIME) < until)
        usleep(20000);
}

void pbx__server_free(struct pbx_server *s)
{
    if (s == NULL)
        return;
    if (s->daemon != NULL)
        MHD_stop_daemon(s->daemon);
    if (s->watch != NULL) {
        pthread_mutex_lock(&s->watch->lock);
        s->watch->stop = true;
        pthread_cond_signal(&s->watch->wake);
        pthread_mutex_unlock(&s->watch->lock);
        pthread_join(s->watch->thread, NULL);
        pthread_mutex_destroy(&s->watch->lock);
        pthread_cond_destroy(&s->watch->wake);
        free(s->watch);
    }
    pbx__admit_free(s->admit);
    free(s);
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

/* ---- pbx_server_run: the engines behind the server ---- */

struct engines {
    struct pbx_engine *e[PBX_TRUST_COUNT];  /* one zygote per trust class */
    struct pbx_engine_config cfg;           /* the same for each */
    struct pbx_error *err[PBX_TRUST_COUNT]; /* why one did not start */
};

static int engines_execute(void *arg, enum pbx_trust trust, const struct pbx_exec_request *req,
                           struct pbx_exec_result *res, struct pbx_error **err)
{
    struct engines *en = arg;

    return pbx_engine_execute(en->e[trust], req, res, err);
}

static void engines_pool_stats(void *arg, struct pbx_pool_stats *st)
{
    struct engines *en = arg;

    memset(st, 0, sizeof(*st));
    for (int i = 0; i < PBX_TRUST_COUNT; i++) {
        struct pbx_pool_stats one;

        pbx_engine_pool_stats(en->e[i], &one);
        st->idle += one.idle;
        st->target += one.target;
        st->hits += one.hits;
        st->misses += one.misses;
        st->zygotes += one.zygotes;
        st->cgroups_created += one.cgroups_created;
        st->cgroups_reused += one.cgroups_reused;
    }
}

static void *start_keyed(void *arg)
{
    struct engines *en = arg;

    (void)pbx_engine_start(&en->cfg, &en->e[PBX_TRUST_KEYED], &en->err[PBX_TRUST_KEYED]);
    return NULL;
}

/* Start both engines, side by side (each zygote imports numpy on its own). */
static int engines_start(struct engines *en, const struct pbx_server_config *cfg,
                         struct pbx_error **err)
{
    pthread_t keyed;
    bool threaded;

    pbx_engine_config_default(&en->cfg);
    en->cfg.preload = cfg->preload;
    /* The warm pools serve executions with the server's default limits. */
    en->cfg.spares_min = cfg->spares_min;
    en->cfg.spares_max = cfg->spares_max;
    en->cfg.spare_limits = cfg->limits;
    en->cfg.zygote_max_execs = cfg->zygote_max_execs;
    en->cfg.zygote_max_age_s = cfg->zygote_max_age_s;
    threaded = pthread_create(&keyed, NULL, start_keyed, en) == 0;
    (void)pbx_engine_start(&en->cfg, &en->e[PBX_TRUST_ANONYMOUS], &en->err[PBX_TRUST_ANONYMOUS]);
    if (threaded)
        pthread_join(keyed, NULL);
    else
        start_keyed(en);
    for (int i = 0; i < PBX_TRUST_COUNT; i++) {
        if (en->e[i] == NULL) {
            *err = en->err[i];
            en->err[i] = NULL;
            pbx_error_free(&en->err[1 - i]);
            return pbx_error_prefix(err, "start the jail");
        }
    }
    return 0;
}

static void engines_stop(struct engines *en)
{
    for (int i = 0; i < PBX_TRUST_COUNT; i++) {
        pbx_engine_free(en->e[i]);
        en->e[i] = NULL;
    }
}

static void write_url_file(const char *path, const char *url)
{
    char *tmp = xasprintf("%s.tmp", path);
    FILE *f = fopen(tmp, "we");

    if (f != NULL) {
        fprintf(f, "%s\n", url);
        fclose(f);
        rename(tmp, path);
    }
    free(tmp);
}

int pbx_server_run(const struct pbx_server_config *cfg, struct pbx_error **err)
{
    struct engines en = {0};
    struct pbx_server_executor ex = {
        .execute = engines_execute, .pool_stats = engines_pool_stats, .arg = &en};
    struct pbx_server *s = NULL;
    struct pbx_store *store = NULL;
    struct sockaddr_storage ss;
    socklen_t sslen = 0;
    char *uri = NULL;
    char *desc;
    char url[128];
    char host[64];
    sigset_t sigs;
    int sig = 0;
    int port;
    int rc = -1;

    if (parse_listen(cfg->listen, &ss, &sslen, err) < 0)
        return -1;
    if (cfg->store_uri == NULL) {
        if (mkdir(cfg->data_dir, 0700) < 0 && errno != EEXIST)
            return pbx_error_set(err, errno, "create the data directory `%s`", cfg->data_dir);
        uri = xasprintf("sqlite:%s/pybox.db", cfg->data_dir);
    } else {
        uri = xstrdup(cfg->store_uri);
    }
    if (pbx_store_open(uri, &store, err) < 0) {
        pbx_error_prefix(err, "open the store");
        goto out;
    }
    if (engines_start(&en, cfg, err) < 0)
        goto out;
    desc = pbx_engine_describe(en.e[PBX_TRUST_ANONYMOUS]);
    for (char *p = desc; (p = strchr(p, '\n')) != NULL;)
        *p = ';';
    fprintf(stderr, "pybox: isolation in force: %s\n", desc);
    free(desc);
    if (pbx__server_new(cfg, store, &ex, &s, err) < 0)
        goto out;

    /* Signals are taken by sigwait() below; every thread inherits the block. */
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    port = pbx__server_start(s, (const struct sockaddr *)&ss, sslen, false, err);
    if (port < 0)
        goto out;
    inet_ntop(ss.ss_family,
              ss.ss_family == AF_INET ? (void *)&((struct sockaddr_in *)&ss)->sin_addr
                                      : (void *)&((struct sockaddr_in6 *)&ss)->sin6_addr,
              host, sizeof(host));
    if (ss.ss_family == AF_INET6)
        snprintf(url, sizeof(url), "http://[%s]:%d", host, port);
    else
        snprintf(url, sizeof(url), "http://%s:%d", host, port);
    fprintf(stderr, "pybox: serving on %s\n", url);
    if (cfg->url_file != NULL)
        write_url_file(cfg->url_file, url);

    while (sigwait(&sigs, &sig) == 0 && sig == SIGHUP)
        ;
    fprintf(stderr, "pybox: %s received: draining\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
    pbx__server_quiesce(s, cfg->drain_s * 1000u);
    rc = 0;
out:
    pbx__server_free(s);
    engines_stop(&en);
    pbx_store_close(store);
    free(uri);
    return rc;
}
