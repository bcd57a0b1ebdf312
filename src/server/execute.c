/*
 * POST /execute and POST /v1/execute: who is calling (a Bearer header or
 * `api_key`), what it asks within its policy, admission (its rate window and
 * daily quota checked before it may take a slot or a place in the queue,
 * charged once it has one; the server's memory budget for its answer), the
 * execution, the audit record, and the answer in the dialect it came in.
 * multipart/form-data bodies of /v1/execute are read part by part here too.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sodium.h>
#include <strings.h>

#include "common/cleanup.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/xalloc.h"
#include "server/internal.h"
#include "common/banned.h"

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

/* The store's keys for pbx_caller_resolve(): a failed lookup is logged, and answered 500. */
static int lookup_key(void *arg, const char *token, char **name, struct pbx_key_policy *policy,
                      struct pbx_error **err)
{
    struct pbx_server *s = arg;
    struct pbx_key_info key;
    struct pbx_error *e = NULL;
    int found = pbx_store_key_lookup(s->store, token, &key, &e);

    if (found < 0) {
        pbx_log(PBX_LOG_ERROR, "key lookup: %s", e->msg);
        pbx_error_free(&e);
        return pbx_error_set(err, PBX_E_ENGINE, "the key store failed");
    }
    if (found == 0)
        return 0;
    *name = steal_pointer(&key.name);
    *policy = key.policy;
    key.policy.modules = NULL; /* handed over with the policy */
    pbx_key_info_release(&key);
    return 1;
}

/* Resolve who is calling; returns 0, or -1 after answering (401, 500). */
static int authenticate(struct pbx_server *s, struct MHD_Connection *c, struct request_ctx *ctx,
                        const char *token, struct pbx_caller *who, enum MHD_Result *ret)
{
    const struct pbx_caller_keys keys = {.lookup = lookup_key, .arg = s};
    struct pbx_error *err = NULL;
    const char *etype = NULL;

    if (pbx_caller_resolve(&s->callers, &keys, token, who, &etype, &err) < 0) {
        *ret = pbx__server_send_error(c, ctx, s, etype, err->msg, 0, NULL);
        pbx_error_free(&err);
        return -1;
    }
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

/* The compatible dialect's output_files from the result object `full` (its strings shared). */
static json_t *compat_files(json_t *full)
{
    json_t *o = json_object();
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
    return o;
}

static enum MHD_Result answer_compat(struct pbx_server *s, struct MHD_Connection *c,
                                     struct request_ctx *ctx, const struct pbx_http_request *req,
                                     const struct pbx_caller *who,
                                     const struct pbx_exec_result *res, int64_t today,
                                     unsigned active_at_request)
{
    json_t *full = pbx_exec_result_to_json(res);
    json_t *details = json_pack(
        "{s:b, s:O, s:O, s:O, s:f, s:o}", "success", res->status == PBX_STATUS_OK, "stdout",
        json_object_get(full, "stdout"), "stderr", json_object_get(full, "stderr"), "exit_code",
        json_object_get(full, "exit_code"), "execution_duration_sec", res->duration_ms / 1000.0,
        "output_files", compat_files(full));
    const char *etype = NULL;
    char ts[64];
    json_t *body;
    json_t *user;
    json_t *attached;
    double load = 0;

    json_object_set(details, "stdout_truncated", json_object_get(full, "stdout_truncated"));
    json_object_set(details, "stderr_truncated", json_object_get(full, "stderr_truncated"));
    if (res->status == PBX_STATUS_REJECTED) {
        /*
         * The dialect's rejections are ForbiddenImportError and SyntaxError; a
         * subclass of SyntaxError (IndentationError, TabError) is one, and its
         * own name stays in `exception_type`.
         */
        etype = json_string_value(json_object_get(res->error, "type"));
        if (etype == NULL || strcmp(etype, "ForbiddenImportError") != 0)
            etype = "SyntaxError";
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
            const char *real = json_string_value(json_object_get(res->error, "type"));

            json_object_del(e, "type");
            json_object_del(e, "message");
            json_object_update(extra, e);
            json_decref(e);
            if (real != NULL && strcmp(real, etype) != 0)
                json_object_set_new(extra, "exception_type", json_string(real));
        } else {
            json_object_set(extra, "execution_details", details);
            json_object_set(extra, "exception", res->error);
        }
        json_decref(details);
        json_decref(full);
        if (msg == NULL || msg[0] == '\0') {
            /* An exception raised without a message, such as KeyboardInterrupt. */
            const char *type = json_string_value(json_object_get(res->error, "type"));

            snprintf(ts, sizeof(ts), "%.40s (no message)", type ? type : "the execution failed");
            msg = ts;
        }
        return pbx__server_send_error(c, ctx, s, etype, msg, 0, extra);
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
        json_object_set_new(user, "key_name", json_string(who->key_name));
    (void)!getloadavg(&load, 1);
    pbx__server_iso_time(pbx_clock_ms(CLOCK_REALTIME), ts, sizeof(ts));
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
    return pbx__server_send_json(c, ctx, s, 200, body, 0);
}

/* ---- multipart/form-data for /v1/execute ---- */

static struct pbx_request_caps caps_of(const struct pbx_server *s)
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
        struct pbx_error *err = NULL;
        char *end = NULL;
        double t = strtod(v, &end);

        if (end == v || *end != '\0' || pbx__request_set_timeout(r, t, &err) < 0) {
            mp_fail(ctx, "`timeout` must be between 0 and 3600 seconds");
            pbx_error_free(&err);
            goto out;
        }
    } else if (strcmp(f, "memory_mb") == 0) {
        char *end = NULL;
        unsigned long m = strtoul(v, &end, 10);

        if (end == v || *end != '\0' || *v == '-' || m < 16 || m > 65536) {
            mp_fail(ctx, "`memory_mb` must be a whole number from 16 to 65536");
            goto out;
        }
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
    if (data == NULL)
        size = 0;
    if (filename != NULL) {
        struct pbx_file_in *file;

        if (off == 0) {
            struct pbx_error *err = NULL;

            mp_flush(ctx);
            ctx->mp_in_file = false;
            if (filename[0] == '\0')
                return MHD_YES; /* an empty file input: its data, if any, goes nowhere */
            if (pbx__request_add_file(r, &caps, filename, "", 0, &err) < 0) {
                mp_fail(ctx, "%s", err->msg);
                pbx_error_free(&err);
                return MHD_YES;
            }
            ctx->mp_alloc = 0;
            ctx->mp_in_file = true;
        }
        if (!ctx->mp_in_file || r->nfiles == 0 || size == 0)
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
    /* A part whose headers name no field (or an empty one) cannot be placed. */
    if (key == NULL || key[0] == '\0') {
        mp_fail(ctx, "a form part has no field name (Content-Disposition: form-data; name=...)");
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

/*
 * The request, from the multipart parts or the JSON body.  Returns 0, or -1
 * after answering.
 */
static int take_request(struct pbx_server *s, struct MHD_Connection *c, struct request_ctx *ctx,
                        bool v1, struct pbx_http_request *req, enum MHD_Result *ret)
{
    const char *ctype = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Type");
    struct pbx_request_caps caps = caps_of(s);
    struct pbx_error *err = NULL;
    const char *etype = NULL;
    int rc;

    if (ctx->pp != NULL) {
        mp_flush(ctx);
        if (!ctx->mp_failed && pbx__request_finish(&ctx->mp, &err) < 0) {
            snprintf(ctx->mp_error, sizeof(ctx->mp_error), "%s", err->msg);
            pbx_error_free(&err);
            ctx->mp_failed = true;
        }
        if (ctx->mp_failed) {
            *ret = pbx__server_send_error(c, ctx, s, "ValidationError", ctx->mp_error, 0, NULL);
            return -1;
        }
        *req = ctx->mp;
        memset(&ctx->mp, 0, sizeof(ctx->mp));
        return 0;
    }
    if (ctype == NULL || strncasecmp(ctype, "application/json", 16) != 0 ||
        (ctype[16] != '\0' && ctype[16] != ';' && ctype[16] != ' ')) {
        *ret = pbx__server_send_error(
            c, ctx, s, "UnsupportedMediaType",
            v1 ? "send the request as application/json or multipart/form-data"
               : "send the request as Content-Type: application/json",
            0, NULL);
        return -1;
    }
    rc = v1 ? pbx__request_parse_v1(ctx->body.data, ctx->body.len, &caps, req, &etype, &err)
            : pbx__request_parse_compat(ctx->body.data, ctx->body.len, &caps, req, &etype, &err);
    if (rc < 0) {
        *ret = pbx__server_send_error(c, ctx, s, etype, err->msg, 0, NULL);
        pbx_error_free(&err);
        return -1;
    }
    /* The parsed request holds its own copies; the body's share of the budget stays for them. */
    pbx_buf_release(&ctx->body);
    return 0;
}

/*
 * What the caller asks for within what it may ask, and the limits of its
 * execution in *limits.  Returns 0, or -1 after answering.
 */
static int check_request(struct pbx_server *s, struct MHD_Connection *c, struct request_ctx *ctx,
                         const struct pbx_http_request *req, const struct pbx_caller *who,
                         struct pbx_limits *limits, enum MHD_Result *ret)
{
    const struct pbx_caller_ask ask = {
        .code_len = req->code_len,
        .code_chars = req->code_chars,
        .network = req->network,
        .has_timeout = req->has_timeout,
        .timeout_s = req->timeout_s,
        .has_memory = req->has_memory,
        .memory_mb = req->memory_mb,
    };
    struct pbx_error *err = NULL;
    const char *etype = NULL;

    if (pbx_caller_limits(&s->callers, who, &ask, limits, &etype, &err) < 0) {
        *ret = pbx__server_send_error(c, ctx, s, etype, err->msg, 0, NULL);
        pbx_error_free(&err);
        return -1;
    }
    return 0;
}

/* Whose window and quota a request counts against: "key:NAME" or "ip:ADDRESS". */
static void client_id(const struct request_ctx *ctx, const struct pbx_caller *who, char *out,
                      size_t len)
{
    snprintf(out, len, "%s%s",
             who->keyed ? "key:" : "ip:", who->keyed ? who->key_name : ctx->client);
}

static enum MHD_Result quota_spent(struct pbx_server *s, struct MHD_Connection *c,
                                   struct request_ctx *ctx, const struct pbx_caller *who)
{
    unsigned to_midnight;
    char msg[160];
    char day[16];

    utc_day(pbx_clock_ms(CLOCK_REALTIME), day, sizeof(day), &to_midnight);
    snprintf(msg, sizeof(msg),
             "daily quota of %" PRId64 " requests reached; it resets at 00:00 UTC", who->rpd);
    return pbx__server_send_error(c, ctx, s, "RateLimitExceeded", msg, to_midnight, NULL);
}

/*
 * The per-minute window and the daily quota, checked before the caller may
 * take a slot or a place in the queue, so a caller over its limits cannot
 * crowd others out.  The request is then held: it counts against both while
 * it waits (a burst cannot pass the check all at once), and is charged only
 * once admitted (admission_charge) or let go.  Returns 0 (held unless
 * admin), or -1 after answering (429, 500).
 */
static int admission_hold(struct pbx_server *s, struct MHD_Connection *c, struct request_ctx *ctx,
                          const struct pbx_caller *who, const char *client, int64_t *today,
                          enum MHD_Result *ret)
{
    struct pbx_error *err = NULL;
    uint64_t now = pbx_clock_ms(CLOCK_REALTIME);
    unsigned retry = 0;
    unsigned held = 0;
    unsigned to_midnight;
    char msg[160];
    char day[16];

    if (who->admin)
        return 0;
    if (!pbx__admit_hold(s->admit, client, who->rpm, now, &retry, &held)) {
        snprintf(msg, sizeof(msg), "rate limit of %" PRId64 " requests per minute reached",
                 who->rpm);
        *ret = pbx__server_send_error(c, ctx, s, "RateLimitExceeded", msg, retry, NULL);
        return -1;
    }
    utc_day(now, day, sizeof(day), &to_midnight);
    if (pbx_store_quota_get(s->store, client, day, today, &err) < 0) {
        pbx_log(PBX_LOG_ERROR, "quota: %s", err->msg);
        pbx_error_free(&err);
        pbx__admit_release(s->admit, client, false, now);
        *ret = pbx__server_send_error(c, ctx, s, "InternalServerError", "the quota store failed", 0,
                                      NULL);
        return -1;
    }
    if (who->rpd >= 0 && *today + (int64_t)held >= who->rpd) {
        pbx__admit_release(s->admit, client, false, now);
        *ret = quota_spent(s, c, ctx, who);
        return -1;
    }
    return 0;
}

/* Charge a held request, now admitted. Returns 0, or -1 after answering (429, 500). */
static int admission_charge(struct pbx_server *s, struct MHD_Connection *c, struct request_ctx *ctx,
                            const struct pbx_caller *who, const char *client, int64_t *today,
                            enum MHD_Result *ret)
{
    struct pbx_error *err = NULL;
    uint64_t now = pbx_clock_ms(CLOCK_REALTIME);
    unsigned to_midnight;
    char day[16];
    int rc;

    if (who->admin)
        return 0;
    pbx__admit_release(s->admit, client, true, now);
    utc_day(now, day, sizeof(day), &to_midnight);
    /* Atomic in the store: another node may have spent the quota meanwhile. */
    rc = pbx_store_quota_take(s->store, client, day, who->rpd, today, &err);
    if (rc < 0) {
        pbx_log(PBX_LOG_ERROR, "quota: %s", err->msg);
        pbx_error_free(&err);
        *ret = pbx__server_send_error(c, ctx, s, "InternalServerError", "the quota store failed", 0,
                                      NULL);
        return -1;
    }
    if (rc == 0) {
        *ret = quota_spent(s, c, ctx, who);
        return -1;
    }
    return 0;
}

/* The engine's request for `req` from `who`, with the limits its policy gave. */
static void exec_request_of(const struct pbx_http_request *req, const struct pbx_caller *who,
                            const struct pbx_limits *limits, struct pbx_exec_request *ereq)
{
    pbx_exec_request_init(ereq);
    ereq->limits = *limits;
    ereq->code = req->code;
    ereq->code_len = req->code_len;
    ereq->stdin_data = req->stdin_data;
    ereq->stdin_len = req->stdin_len;
    ereq->files = req->files;
    ereq->nfiles = req->nfiles;
    ereq->return_files = (const char *const *)req->return_files;
    ereq->nreturn = req->nreturn;
    ereq->main_mode = req->main_mode;
    ereq->allow_all_imports = who->all_modules;
    ereq->extra_modules = who->keyed ? who->key.modules : NULL;
}

static void audit(struct pbx_server *s, const struct request_ctx *ctx, bool v1,
                  const struct pbx_http_request *req, const struct pbx_caller *who,
                  const struct pbx_exec_result *res, uint64_t t0)
{
    struct pbx_error *err = NULL;
    unsigned char hash[32];
    char hex[65];
    struct pbx_audit rec = {
        .time_ms = (int64_t)t0,
        .client = ctx->client,
        .key_name = who->keyed ? who->key_name : (who->admin ? "admin" : NULL),
        .route = v1 ? "/v1/execute" : "/execute",
        .code_sha256 = hex,
        .status = pbx_status_name(res->status),
        .duration_ms = res->duration_ms,
    };

    crypto_hash_sha256(hash, (const unsigned char *)req->code, req->code_len);
    sodium_bin2hex(hex, sizeof(hex), hash, sizeof(hash));
    if (pbx_store_audit(s->store, &rec, &err) < 0) {
        pbx_log(PBX_LOG_WARN, "audit: %s", err->msg);
        pbx_error_free(&err);
    }
}

enum MHD_Result pbx__execute_handle(struct pbx_server *s, struct MHD_Connection *c,
                                    struct request_ctx *ctx, bool v1)
{
    struct pbx_http_request req;
    struct pbx_exec_request ereq;
    struct pbx_exec_result res;
    struct pbx_error *err = NULL;
    struct pbx_caller who;
    struct pbx_limits limits;
    const char *token;
    enum MHD_Result ret = MHD_YES;
    char client[300];
    bool held = false;
    unsigned active;
    int64_t today = 0;
    uint64_t t0;
    int rc;

    if (take_request(s, c, ctx, v1, &req, &ret) < 0)
        return ret;
    token = bearer(c);
    if (token == NULL)
        token = req.api_key;
    if (authenticate(s, c, ctx, token, &who, &ret) < 0)
        goto out_key;
    if (check_request(s, c, ctx, &req, &who, &limits, &ret) < 0)
        goto out_key;
    client_id(ctx, &who, client, sizeof(client));
    if (admission_hold(s, c, ctx, &who, client, &today, &ret) < 0)
        goto out_key;
    held = !who.admin;

    active = pbx__admit_active(s->admit);
    if (!pbx__admit_enter(s->admit)) {
        ret = pbx__server_send_error(c, ctx, s, "ServerBusy",
                                     "every execution slot is busy and the queue is full or its "
                                     "wait ran out; retry in a moment",
                                     1, NULL);
        goto out_hold;
    }
    exec_request_of(&req, &who, &limits, &ereq);
    if (!pbx__server_budget_take(s, ctx, pbx__server_answer_reserve(&ereq.limits))) {
        ret = pbx__server_budget_spent(s, c, ctx);
        goto out_slot;
    }
    held = false;
    if (admission_charge(s, c, ctx, &who, client, &today, &ret) < 0)
        goto out_slot;
    t0 = pbx_clock_ms(CLOCK_REALTIME);
    rc = s->ex.execute(s->ex.arg, who.keyed || who.admin ? PBX_TRUST_KEYED : PBX_TRUST_ANONYMOUS,
                       &ereq, &res, &err);
    if (rc < 0) {
        bool bad = err->code == PBX_E_INVAL || err->code == PBX_E_TOO_LARGE;

        if (!bad)
            pbx_log(PBX_LOG_ERROR, "execution: %s", err->msg);
        ret = pbx__server_send_error(c, ctx, s, bad ? "ValidationError" : "InternalServerError",
                                     bad ? err->msg : "the execution engine failed", 0, NULL);
        pbx_error_free(&err);
        goto out_slot;
    }
    audit(s, ctx, v1, &req, &who, &res, t0);
    pbx__server_observe(s, &res, pbx_clock_ms(CLOCK_REALTIME) - t0);
    if (v1)
        ret = pbx__server_send_json(c, ctx, s, 200, pbx_exec_result_to_json(&res), 0);
    else
        ret = answer_compat(s, c, ctx, &req, &who, &res, today, active);
    pbx_exec_result_release(&res);
out_slot:
    pbx__admit_leave(s->admit);
out_hold:
    if (held)
        pbx__admit_release(s->admit, client, false, pbx_clock_ms(CLOCK_REALTIME));
out_key:
    pbx_caller_release(&who);
    pbx__request_release(&req);
    return ret;
}

bool pbx__execute_multipart_begin(struct request_ctx *ctx, struct MHD_Connection *c)
{
    ctx->pp = MHD_create_post_processor(c, 64 * 1024, on_part, ctx);
    return ctx->pp != NULL;
}

void pbx__execute_multipart_feed(struct request_ctx *ctx, const char *data, size_t size)
{
    if (MHD_post_process(ctx->pp, data, size) != MHD_YES)
        mp_fail(ctx, "malformed multipart/form-data body");
}
