/*
 * The answers of the compatible endpoints, POST /execute and POST
 * /execute-with-files: one body that carries the fields of every documented
 * system pybox stands in for (docs/api.md, "POST /execute"), so that each
 * one's client finds what its documentation promised:
 *
 *   S1, the "Python Sandbox API": status, timestamp_utc, user_info,
 *       server_status, request_context and execution_details on success;
 *       error_details (its type and message) when the run failed;
 *   S2, the minimal Flask runner: output, error (a string), returncode,
 *       execution_time ("0.0023 seconds");
 *   S4, the FastAPI server: stdout, stderr, return_code, output_files
 *       ({name: base64}), and on /execute-with-files execution_time in
 *       seconds;
 *   S3, the main() runner, for `script`: result and stdout (what main()
 *       printed, without its trailing line breaks).
 *
 * The HTTP status follows the rules the request follows (struct
 * pbx_request_shape): S1's table (a run that failed is a 400 of its type),
 * or S4's "every execution is a 200".  The same file answers S4's GET
 * /health and its 422.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/cleanup.h"
#include "common/clock.h"
#include "common/errtable.h"
#include "common/xalloc.h"
#include "server/internal.h"
#include "pybox/version.h"
#include "common/banned.h"

/* What S2 and S3 answer in `error` for the refusals they document. */
#define S2_FORBIDDEN "Code is not safe: Disallowed import: "
#define S3_NO_MAIN   "Script must contain a 'def main():' function"
#define S3_NOT_JSON  "main() must return a JSON-serializable object"

/* The most of S4's stderr notes about files not returned, so the answer stays bounded. */
#define MAX_FILE_NOTES 16

/* Room for the lines pybox adds to S4's stderr, and for S2's list of forbidden imports. */
#define NOTES_MAX   (64u << 10)
#define MESSAGE_MAX (1u << 20)

/*
 * The type S1 answers a run with: NULL when it succeeded, else SyntaxError
 * or ForbiddenImportError (a subclass of SyntaxError, IndentationError or
 * TabError, is a SyntaxError; its own name stays in `exception_type`),
 * TimeoutError, or RuntimeError for any other failure.
 */
static const char *s1_type(const struct pbx_exec_result *res)
{
    const char *t = json_string_value(json_object_get(res->error, "type"));

    switch (res->status) {
    case PBX_STATUS_OK:
        return NULL;
    case PBX_STATUS_REJECTED:
        return t != NULL && strcmp(t, "ForbiddenImportError") == 0 ? t : "SyntaxError";
    case PBX_STATUS_TIMEOUT:
        return "TimeoutError";
    default:
        return "RuntimeError";
    }
}

/*
 * S4's return_code, as sandbox_executor's local mode reads a result: -1 for
 * a timeout, 1 for code refused before it ran, minus the signal for a kill
 * (SIGKILL for the memory limit), else the exit status.
 */
static int return_code(const struct pbx_exec_result *res)
{
    switch (res->status) {
    case PBX_STATUS_TIMEOUT:
        return -1;
    case PBX_STATUS_REJECTED:
        return 1;
    case PBX_STATUS_MEMORY_LIMIT:
        return -(res->signal > 0 ? res->signal : SIGKILL);
    case PBX_STATUS_KILLED:
        return res->signal > 0 ? -res->signal : 1;
    default:
        if (res->has_exit_code)
            return res->exit_code;
        return res->status == PBX_STATUS_OK ? 0 : 1;
    }
}

/* What the engine says of a name that names no regular file: nothing there, or not a file. */
static bool not_a_file(const char *error)
{
    return error != NULL &&
           (strcmp(error, "not found") == 0 || strcmp(error, "not a regular file") == 0 ||
            strcmp(error, "is a symbolic link") == 0);
}

/* Whether `name` is one of the request's input files. */
static bool is_input(const struct compat_run *run, const char *name)
{
    for (size_t i = 0; i < run->req->nfiles; i++) {
        if (strcmp(run->req->files[i].name, name) == 0)
            return true;
    }
    return false;
}

/* Append the text `s`; what passes the buffer's cap is dropped. */
static void append(struct pbx_buf *b, const char *s)
{
    (void)pbx_buf_append_trunc(b, s, strlen(s));
}

/*
 * Append the JSON string `v` whole, by its length: a script's output may hold
 * NUL bytes, which strlen() would stop at.
 */
static void append_json(struct pbx_buf *b, const json_t *v)
{
    (void)pbx_buf_append_trunc(b, json_string_value(v), json_string_length(v));
}

/* The answer's files, in S1's shape and in S4's, and S4's notes of the ones not returned. */
struct files {
    json_t *s1;           /* {name: {content_base64, size_bytes} | {error}} */
    json_t *s4;           /* {name: base64} */
    struct pbx_buf notes; /* "pybox: output file `NAME` not returned: REASON\n" lines */
    unsigned nnotes;      /* how many */
};

/* Both maps from the result object `full` (its strings shared). */
static void collect_files(const struct compat_run *run, json_t *full, struct files *f)
{
    json_t *files = json_object_get(full, "files");
    const char *name;
    json_t *v;

    f->s1 = json_object();
    f->s4 = json_object();
    pbx_buf_init(&f->notes, NOTES_MAX);
    f->nnotes = 0;
    json_object_foreach(files, name, v)
    {
        json_t *b64 = json_object_get(v, "content_base64");
        const char *error = json_string_value(json_object_get(v, "error"));

        /* Every file was asked: what the script did not make there is none of its files. */
        if (run->all_files && (is_input(run, name) || (b64 == NULL && not_a_file(error))))
            continue;
        if (b64 != NULL) {
            json_object_set_new(f->s1, name,
                                json_pack("{s:O, s:O}", "content_base64", b64, "size_bytes",
                                          json_object_get(v, "size")));
            json_object_set(f->s4, name, b64);
            continue;
        }
        json_object_set(f->s1, name, v);
        /* A file that exists but did not come back (too large, ...): S4's reader is told. */
        if (!not_a_file(error) && f->nnotes < MAX_FILE_NOTES) {
            char *line = xasprintf("pybox: output file `%s` not returned: %s\n", name,
                                   error != NULL ? error : "unreadable");

            append(&f->notes, line);
            free(line);
            f->nnotes++;
        }
    }
}

/*
 * S4's stderr: the script's, then a line for each thing pybox did that the
 * script cannot say (why it was stopped, files not returned, output cut),
 * as sandbox_executor's local mode writes it.  A new string of *lenp bytes
 * (NUL bytes of the script's stderr kept), the caller's to free.
 */
static char *s4_stderr(const struct pbx_exec_result *res, json_t *full, const struct files *f,
                       size_t *lenp)
{
    json_t *err = json_object_get(full, "stderr");
    struct pbx_buf out;
    char *line = NULL;

    pbx_buf_init(&out, json_string_length(err) + NOTES_MAX);
    append_json(&out, err);
    if (res->status == PBX_STATUS_TIMEOUT || res->status == PBX_STATUS_MEMORY_LIMIT ||
        res->status == PBX_STATUS_KILLED) {
        const char *type = json_string_value(json_object_get(res->error, "type"));
        const char *msg = json_string_value(json_object_get(res->error, "message"));

        if (res->error != NULL)
            line = xasprintf("%s: %s\n", type != NULL ? type : pbx_status_name(res->status),
                             msg != NULL ? msg : "");
    }
    if (out.len > 0 && out.data[out.len - 1] != '\n' &&
        (line != NULL || f->nnotes > 0 || res->stdout_truncated || res->stderr_truncated))
        append(&out, "\n");
    if (line != NULL)
        append(&out, line);
    free(line);
    if (f->notes.len > 0)
        (void)pbx_buf_append_trunc(&out, f->notes.data, f->notes.len);
    if (res->stdout_truncated)
        append(&out, "pybox: stdout was truncated at its limit\n");
    if (res->stderr_truncated)
        append(&out, "pybox: stderr was truncated at its limit\n");
    return pbx_buf_steal(&out, lenp);
}

/*
 * S2's `error`, always a string: its message for a forbidden import, S3's
 * messages for the main() failures it documents, else S4's stderr (of
 * `stderr_len` bytes at `stderr_text`).
 */
static json_t *s2_error(const struct compat_run *run, const char *stderr_text, size_t stderr_len)
{
    const struct pbx_exec_result *res = run->res;
    const char *type = json_string_value(json_object_get(res->error, "type"));
    json_t *disallowed = json_object_get(res->error, "disallowed");

    if (res->status == PBX_STATUS_REJECTED && type != NULL &&
        strcmp(type, "ForbiddenImportError") == 0 && json_array_size(disallowed) > 0) {
        struct pbx_buf msg;
        json_t *text;
        size_t i;
        json_t *m;

        pbx_buf_init(&msg, MESSAGE_MAX);
        append(&msg, S2_FORBIDDEN);
        json_array_foreach(disallowed, i, m)
        {
            if (i > 0)
                append(&msg, ", ");
            if (json_is_string(m))
                append(&msg, json_string_value(m));
        }
        text = json_stringn(msg.data, msg.len);
        pbx_buf_release(&msg);
        return text;
    }
    if (run->req->main_mode && type != NULL && strcmp(type, "MainNotFound") == 0)
        return json_string(S3_NO_MAIN);
    if (run->req->main_mode && type != NULL && strcmp(type, "ResultNotSerializable") == 0)
        return json_string(S3_NOT_JSON);
    return json_stringn(stderr_text, stderr_len);
}

/* S3's stdout: what main() printed, without the line breaks that end it. */
static json_t *s3_stdout(json_t *full)
{
    json_t *v = json_object_get(full, "stdout");
    const char *out = json_string_value(v);
    size_t n = json_string_length(v);

    while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == '\r'))
        n--;
    return json_stringn(out, n);
}

/* S1's user_info: the caller's address, its quota (or the admin's bypass), its key's name. */
static json_t *user_info(const struct request_ctx *ctx, const struct compat_run *run)
{
    const struct pbx_caller *who = run->who;
    json_t *user;

    if (who->admin)
        user = json_pack("{s:s, s:s, s:b}", "ip_address", ctx->client, "role", "admin",
                         "rate_limits_applied", false);
    else
        user = json_pack("{s:s, s:I, s:I, s:I}", "ip_address", ctx->client, "daily_quota_limit",
                         (json_int_t)who->rpd, "requests_today", (json_int_t)run->today,
                         "requests_remaining_today",
                         (json_int_t)(who->rpd > run->today ? who->rpd - run->today : 0));
    if (who->keyed)
        json_object_set_new(user, "key_name", json_string(who->key_name));
    return user;
}

/*
 * S1's server_status: `load` is "high" when every execution slot was busy as
 * the request asked for one, else "normal"; the host's load average (one
 * minute) is `load_average`.
 */
static json_t *server_status(const struct pbx_server *s, const struct compat_run *run)
{
    unsigned capacity = pbx__admit_capacity(s->admit);
    double load = 0;

    (void)!getloadavg(&load, 1);
    return json_pack("{s:s, s:f, s:i, s:i}", "load", run->active >= capacity ? "high" : "normal",
                     "load_average", load, "active_processes_at_request", (int)run->active,
                     "max_concurrent_processes", (int)capacity);
}

static json_t *request_context(const struct pbx_http_request *req)
{
    json_t *attached = json_array();

    for (size_t i = 0; i < req->nfiles; i++)
        json_array_append_new(attached, json_pack("{s:s, s:I}", "filename", req->files[i].name,
                                                  "size_bytes", (json_int_t)req->files[i].size));
    return json_pack("{s:I, s:i, s:b, s:o}", "code_length", (json_int_t)req->code_chars,
                     "attachment_count", (int)req->nfiles, "stdin_provided",
                     req->stdin_data != NULL, "processed_attachments", attached);
}

/*
 * S1's answer to a run that failed: its error shape with the type of the
 * failure, the run's output in error_details.execution_details (and the
 * exception in `exception`), or for code refused before it ran the
 * refusal's own fields (`line`, `disallowed`, ...).  `details` is taken over.
 */
static json_t *s1_failure(const struct request_ctx *ctx, const struct pbx_exec_result *res,
                          const char *etype, json_t *details)
{
    const char *msg = json_string_value(json_object_get(res->error, "message"));
    json_t *extra = json_object();
    char nomsg[64];

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
    if (msg == NULL || msg[0] == '\0') {
        /* An exception raised without a message, such as KeyboardInterrupt. */
        const char *type = json_string_value(json_object_get(res->error, "type"));

        snprintf(nomsg, sizeof(nomsg), "%.40s (no message)", type ? type : "the execution failed");
        msg = nomsg;
    }
    return pbx__http_error_body(ctx, etype, msg, extra);
}

/*
 * S1's body for the run: its success, or its error shape for a run that
 * failed, with the caller, the server and the request described either way.
 * `files.s1` is shared.
 */
static json_t *s1_body(const struct pbx_server *s, const struct request_ctx *ctx,
                       const struct compat_run *run, json_t *full, const struct files *files)
{
    const struct pbx_exec_result *res = run->res;
    const char *etype = s1_type(res);
    json_t *details =
        json_pack("{s:b, s:O, s:O, s:O, s:f, s:O, s:O, s:O}", "success",
                  res->status == PBX_STATUS_OK, "stdout", json_object_get(full, "stdout"), "stderr",
                  json_object_get(full, "stderr"), "exit_code", json_object_get(full, "exit_code"),
                  "execution_duration_sec", res->duration_ms / 1000.0, "output_files", files->s1,
                  "stdout_truncated", json_object_get(full, "stdout_truncated"), "stderr_truncated",
                  json_object_get(full, "stderr_truncated"));
    json_t *body;
    char ts[64];

    if (etype != NULL) {
        body = s1_failure(ctx, res, etype, details);
    } else {
        pbx__http_iso_time(pbx_clock_ms(CLOCK_REALTIME), ts, sizeof(ts));
        body = json_pack("{s:s, s:s, s:o}", "status", "success", "timestamp_utc", ts,
                         "execution_details", details);
    }
    json_object_set_new(body, "user_info", user_info(ctx, run));
    json_object_set_new(body, "server_status", server_status(s, run));
    json_object_set_new(body, "request_context", request_context(run->req));
    return body;
}

/* The other systems' fields, and pybox's own, added to `body`.  `files.s4` is taken over. */
static void add_others(json_t *body, const struct request_ctx *ctx, const struct compat_run *run,
                       json_t *full, struct files *files)
{
    const struct pbx_exec_result *res = run->res;
    size_t err_len = 0;
    char *err_text = s4_stderr(res, full, files, &err_len);
    double seconds = res->duration_ms / 1000.0;
    char text[64];

    /* S4: the output at the top level, and the files as {name: base64}. */
    json_object_set(body, "stdout", json_object_get(full, "stdout"));
    json_object_set_new(body, "stderr", json_stringn(err_text, err_len));
    json_object_set_new(body, "return_code", json_integer(return_code(res)));
    json_object_set_new(body, "output_files", steal_pointer(&files->s4));

    /* S2: its names for the same, and `error` a string (S3 has one only when main() failed). */
    json_object_set(body, "output", json_object_get(full, "stdout"));
    if (!run->req->main_mode || res->status != PBX_STATUS_OK)
        json_object_set_new(body, "error", s2_error(run, err_text, err_len));
    json_object_set_new(body, "returncode", json_integer(return_code(res)));
    free(err_text);

    /* S2's time as text; S4's upload's a number of seconds. */
    snprintf(text, sizeof(text), "%.4f seconds", seconds);
    json_object_set_new(body, "execution_time",
                        ctx->route == R_EXECUTE_FILES ? json_real(seconds) : json_string(text));

    /* S3: main()'s value, and what it printed. */
    if (run->req->main_mode) {
        json_object_set(body, "result", json_object_get(full, "result"));
        json_object_set_new(body, "stdout", s3_stdout(full));
    }

    /* The timeout that applied, which a timeout over the caller's limit was clamped to. */
    json_object_set_new(body, "timeout_applied", json_real(run->limits->wall_ms / 1000.0));
    json_object_set_new(body, "timeout_clamped", json_boolean(run->timeout_clamped));
}

enum MHD_Result pbx__compat_answer(struct pbx_server *s, struct MHD_Connection *c,
                                   struct request_ctx *ctx, const struct compat_run *run)
{
    json_t *full = pbx_exec_result_to_json(run->res);
    const char *etype = s1_type(run->res);
    struct files files;
    json_t *body;
    /* S1's table, or under S4's rules every execution a 200 (its outcome in return_code). */
    int status = etype == NULL || run->shape->s4 ? 200 : pbx_errtable_status(etype);

    collect_files(run, full, &files);
    body = s1_body(s, ctx, run, full, &files);
    add_others(body, ctx, run, full, &files);
    json_decref(files.s1);
    pbx_buf_release(&files.notes);
    json_decref(full);
    return pbx__http_send_json(c, ctx, s, status, body, 0);
}

enum MHD_Result pbx__compat_unprocessable(struct pbx_server *s, struct MHD_Connection *c,
                                          struct request_ctx *ctx,
                                          const struct pbx_request_shape *shape,
                                          const char *message)
{
    json_t *body = pbx__http_error_body(ctx, "UnprocessableEntity", message, NULL);
    json_t *loc = json_pack("[s, s]", "body", shape->field);

    if (shape->key[0] != '\0')
        json_array_append_new(loc, json_string(shape->key));
    json_object_set_new(
        body, "detail",
        json_pack("[{s:s, s:o, s:s}]", "type", shape->kind, "loc", loc, "msg", shape->msg));
    return pbx__http_send_json(c, ctx, s, pbx_errtable_status("UnprocessableEntity"), body, 0);
}

enum MHD_Result pbx__compat_health(struct pbx_server *s, struct MHD_Connection *c,
                                   struct request_ctx *ctx)
{
    const struct pbx_limits *l = &s->cfg->limits;
    json_t *timeout =
        l->wall_ms % 1000 == 0 ? json_integer(l->wall_ms / 1000) : json_real(l->wall_ms / 1000.0);
    json_t *body =
        json_pack("{s:s, s:s, s:s, s:{s:o, s:b, s:I}}", "status", "healthy", "execution_mode",
                  "secure", "version", PBX_VERSION_STRING, "config", "default_timeout", timeout,
                  "default_allow_network", false, "max_output_size", (json_int_t)l->stdout_bytes);

    return pbx__http_send_json(c, ctx, s, 200, body, 0);
}
