/*
 * GET /v1/info: what the caller may do here, read from the running
 * configuration and the caller's own policy, so neither the docs page nor a
 * client ever shows limits that are not the ones in force.  Without a key
 * it is the anonymous policy; with a key (or the admin key) that caller's,
 * through the same resolution and the same pbx_caller_limits() that
 * executions go through; a key that is not valid is a 401, as it is there.
 */
#include <string.h>

#include "policy/policy.h"
#include "server/internal.h"
#include "pybox/version.h"
#include "common/banned.h"

/* A rate for JSON: null for unlimited. */
static json_t *rate(int64_t n)
{
    return n >= 0 ? json_integer(n) : json_null();
}

/* The default allowlist, then the modules `who` may import besides it: the server's, its key's. */
static json_t *modules_of(const struct pbx_caller *who)
{
    const char *extra = who->modules;
    json_t *list = json_array();

    for (size_t i = 0; pbx_policy_default_modules[i] != NULL; i++)
        json_array_append_new(list, json_string(pbx_policy_default_modules[i]));
    while (extra != NULL && *extra != '\0') {
        size_t n = strcspn(extra, " ");

        if (n > 0)
            json_array_append_new(list, json_stringn(extra, n));
        extra += n;
        extra += strspn(extra, " ");
    }
    return list;
}

/*
 * The limits of the caller's executions: `l`, those it gets when it asks for
 * nothing, with the longest timeout and the most memory it may ask.
 */
static json_t *limits_of(const struct pbx_server *s, const struct pbx_caller *who,
                         const struct pbx_limits *l)
{
    return json_pack(
        "{s:f, s:f, s:f, s:I, s:I, s:I, s:I, s:I, s:I, s:i, s:I, s:i, s:I, s:I, s:i, "
        "s:I, s:I, s:I}",
        "timeout_s", who->max_timeout_ms / 1000.0, "default_timeout_s", l->wall_ms / 1000.0,
        "cpu_s", l->cpu_ms / 1000.0, "memory_mb", (json_int_t)(who->max_memory >> 20),
        "default_memory_mb", (json_int_t)(l->memory_bytes >> 20), "code_chars",
        (json_int_t)who->code_chars, "stdin_bytes", (json_int_t)l->stdin_bytes, "stdout_bytes",
        (json_int_t)l->stdout_bytes, "stderr_bytes", (json_int_t)l->stderr_bytes, "input_files",
        (int)l->input_files, "input_file_bytes", (json_int_t)l->input_file_bytes, "return_files",
        (int)l->output_files, "return_file_bytes", (json_int_t)l->output_file_bytes, "answer_bytes",
        (json_int_t)l->answer_bytes, "pids", (int)l->pids, "disk_bytes", (json_int_t)l->disk_bytes,
        "disk_inodes", (json_int_t)l->disk_inodes, "body_bytes", (json_int_t)s->cfg->max_body);
}

/*
 * The caller's sessions: how many it may have open, the spans a session gets
 * when it asks none and the longest it may ask; null when the server runs no
 * sessions.
 */
static json_t *sessions_of(const struct pbx_server *s, const struct pbx_caller *who)
{
    const struct pbx_caller_sessions *ses = &who->sessions;

    if (s->ex.session_open == NULL || s->cfg->sessions_max == 0)
        return json_null();
    return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I}", "max_open", (json_int_t)ses->open,
                     "max_open_server", (json_int_t)s->cfg->sessions_max, "idle_ttl_s",
                     (json_int_t)ses->max_idle_ttl_s, "default_idle_ttl_s",
                     (json_int_t)ses->idle_ttl_s, "max_lifetime_s", (json_int_t)ses->max_lifetime_s,
                     "default_max_lifetime_s", (json_int_t)ses->lifetime_s);
}

enum MHD_Result pbx__info_handle(struct pbx_server *s, struct MHD_Connection *c,
                                 struct request_ctx *ctx)
{
    const struct pbx_caller_ask nothing = {0};
    struct pbx_caller who;
    struct pbx_limits l;
    struct pbx_error *err = NULL;
    const char *etype = NULL;
    enum MHD_Result ret;
    json_t *body;

    if (pbx__auth_resolve(s, c, NULL, &who, &etype, &err) < 0 ||
        pbx_caller_limits(&s->callers, &who, &nothing, &l, &etype, &err) < 0) {
        ret = pbx__http_send_error(c, ctx, s, etype, err->msg, 0, NULL);
        pbx_error_free(&err);
        pbx_caller_release(&who);
        return ret;
    }
    body = json_pack("{s:s, s:s, s:s, s:o, s:o, s:o, s:{s:o, s:o}, s:i, s:{s:i, s:f}, s:o, s:b, "
                     "s:b, s:[s,s], s:s, s:s}",
                     "name", "pybox", "version", PBX_VERSION_STRING, "policy",
                     who.admin   ? "admin"
                     : who.keyed ? "key"
                                 : "anonymous",
                     "key_name", who.key_name != NULL ? json_string(who.key_name) : json_null(),
                     "limits", limits_of(s, &who, &l), "sessions", sessions_of(s, &who),
                     "rate_limits", "requests_per_minute", rate(who.rpm), "requests_per_day",
                     rate(who.rpd), "max_concurrency", (int)pbx__admit_capacity(s->admit), "queue",
                     "max_waiting", (int)s->cfg->queue_max, "max_wait_s",
                     s->cfg->queue_wait_ms / 1000.0, "allowed_modules", modules_of(&who),
                     "all_modules", who.all_modules, "network", false, "dialects", "/execute",
                     "/v1/execute", "openapi", "/openapi.json", "docs", "/docs");
    pbx_caller_release(&who);
    return pbx__http_send_json(c, ctx, s, 200, body, 0);
}
