/*
 * pybox repl --jsonl: one session driven one JSON request per line (the
 * protocol `pybox repl --help` describes; the Python package's local mode
 * holds its sessions so).
 *
 * Theory of operation: the main thread reads requests (poll() on stdin and
 * on the wake pipe a signal writes to), answers the quick ones itself
 * (files, extend, interrupt, restart) and hands a run to the worker thread,
 * one at a time: while it runs, every request but extend, interrupt and
 * close is a SessionBusy, as the server answers a second call, so a request never
 * overtakes the run asked before it.  Every line written to stdout is whole,
 * under `out_lock`.  EOF on stdin, {"op": "close"} or a signal interrupts a
 * running call, waits for it, and ends the session.
 */
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/repl.h"
#include "common/buf.h"
#include "common/xalloc.h"
#include "pybox/pybox.h"
#include "common/banned.h"

#define MAX_LINE (256u << 20) /* a request line, base64 files included */
/* One line each, ASCII, numbers as the result object has them. */
#define JSON_FLAGS (JSON_COMPACT | JSON_ENSURE_ASCII | JSON_REAL_PRECISION(12))

struct jsonl {
    struct repl *r;           /* the client and the session */
    pthread_mutex_t out_lock; /* one whole line at a time on stdout */
    pthread_mutex_t lock;     /* guards busy */
    bool busy;                /* the worker runs a call */
    bool worker_started;      /* a worker was started and not joined yet */
    pthread_t worker;         /* it */
};

/* A run handed to the worker. */
struct jsonl_call {
    struct jsonl *j;         /* whose */
    json_t *id;              /* the request's id (owned) */
    struct pybox_exec *exec; /* the run (owned) */
    bool stream;             /* its events are wanted */
};

/* Write `o` (taken over) as one line. */
static void emit(struct jsonl *j, json_t *o)
{
    char *text = json_dumps(o, JSON_FLAGS);

    json_decref(o);
    if (text == NULL)
        pbx_die(PBX_EXIT_FAILURE, "an answer could not be encoded");
    pthread_mutex_lock(&j->out_lock);
    fputs(text, stdout);
    fputc('\n', stdout);
    fflush(stdout);
    pthread_mutex_unlock(&j->out_lock);
    free(text);
}

/* {"type", "message", "code", "retry_after", "reason"} of a failure (a new reference). */
static json_t *error_json(enum pybox_code rc, const struct pybox_error *err,
                          const struct pybox_session *s)
{
    const char *reason = rc == PYBOX_E_GONE && s != NULL ? pybox_session_dead_reason(s) : NULL;
    unsigned retry = pybox_error_retry_after(err);

    return json_pack("{s:s?, s:s, s:s, s:o, s:s?}", "type", pybox_error_type(err), "message",
                     pybox_error_message(err), "code", pybox_code_name(rc), "retry_after",
                     retry > 0 ? json_integer(retry) : json_null(), "reason", reason);
}

static void answer(struct jsonl *j, json_t *id, json_t *fields)
{
    json_t *o = json_pack("{s:O, s:b}", "id", id != NULL ? id : json_null(), "ok", true);

    if (fields != NULL) {
        json_object_update(o, fields);
        json_decref(fields);
    }
    emit(j, o);
}

static void answer_failure(struct jsonl *j, json_t *id, enum pybox_code rc, struct pybox_error *err)
{
    emit(j, json_pack("{s:O, s:b, s:o}", "id", id != NULL ? id : json_null(), "ok", false, "error",
                      error_json(rc, err, j->r->session)));
    pybox_error_free(err);
}

/* A request refused before anything ran: `type` ValidationError or InvalidRequest. */
static void answer_invalid(struct jsonl *j, json_t *id, const char *type, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void answer_invalid(struct jsonl *j, json_t *id, const char *type, const char *fmt, ...)
{
    va_list ap;
    char *msg;

    va_start(ap, fmt);
    msg = xvasprintf(fmt, ap);
    va_end(ap);
    emit(j, json_pack("{s:O, s:b, s:{s:s, s:s, s:s, s:n}}", "id", id != NULL ? id : json_null(),
                      "ok", false, "error", "type", type, "message", msg, "code",
                      pybox_code_name(PYBOX_E_INVALID), "retry_after"));
    free(msg);
}

static void jsonl_event(enum pybox_event_kind kind, const char *data, size_t len, void *arg)
{
    struct jsonl_call *k = arg;
    static const char *const names[] = {
        [PYBOX_EVENT_STDOUT] = "stdout",
        [PYBOX_EVENT_STDERR] = "stderr",
        [PYBOX_EVENT_DISPLAY] = "display",
        [PYBOX_EVENT_RESULT] = "result",
    };
    json_t *payload;

    if (!k->stream || kind < PYBOX_EVENT_STDOUT || kind > PYBOX_EVENT_RESULT)
        return;
    if (kind == PYBOX_EVENT_STDOUT || kind == PYBOX_EVENT_STDERR)
        payload = json_pack("{s:s%}", "text", data, len);
    else
        payload = json_loadb(data, len, 0, NULL);
    if (payload == NULL)
        return;
    emit(k->j, json_pack("{s:O, s:s, s:o}", "id", k->id, "event", names[kind], "data", payload));
}

static void *worker_main(void *arg)
{
    struct jsonl_call *k = arg;
    struct jsonl *j = k->j;
    struct pybox_result *res = NULL;
    struct pybox_error *err = NULL;
    enum pybox_code rc = pybox_session_run(j->r->session, k->exec, &res, &err);

    /* Free before the answer: the client's next request may come the moment it has it. */
    pthread_mutex_lock(&j->lock);
    j->busy = false;
    pthread_mutex_unlock(&j->lock);
    if (rc == PYBOX_OK)
        answer(j, k->id,
               json_pack("{s:o}", "result", json_loads(pybox_result_to_json(res), 0, NULL)));
    else
        answer_failure(j, k->id, rc, err);
    pybox_result_free(res);
    pybox_exec_free(k->exec);
    json_decref(k->id);
    free(k);
    return NULL;
}

/* Whether the object `o` has only members named in `allowed` (NULL-terminated); else says which. */
static bool only_fields(struct jsonl *j, json_t *id, json_t *o, const char *const *allowed)
{
    const char *key;
    json_t *v;

    json_object_foreach(o, key, v)
    {
        bool known = false;

        for (size_t i = 0; allowed[i] != NULL && !known; i++)
            known = strcmp(key, allowed[i]) == 0;
        if (!known) {
            answer_invalid(j, id, "ValidationError", "unknown field `%s`", key);
            return false;
        }
    }
    return true;
}

/* A file's bytes from base64 in *out (caller frees) and *len; false when it is not base64. */
static bool from_base64(json_t *b64, char **out, size_t *len)
{
    size_t max = json_string_length(b64) / 4 * 3 + 3;

    *out = xmalloc(max + 1);
    if (sodium_base642bin((unsigned char *)*out, max, json_string_value(b64),
                          json_string_length(b64), NULL, len, NULL,
                          sodium_base64_VARIANT_ORIGINAL) != 0) {
        free(*out);
        *out = NULL;
        return false;
    }
    return true;
}

static char *to_base64(const void *data, size_t len)
{
    size_t n = sodium_base64_encoded_len(len, sodium_base64_VARIANT_ORIGINAL);
    char *b64 = xmalloc(n);

    sodium_bin2base64(b64, n, data, len, sodium_base64_VARIANT_ORIGINAL);
    return b64;
}

/* The run an execute request asks, or NULL after answering why not. */
static struct pybox_exec *exec_of_request(struct jsonl *j, json_t *id, json_t *rq, bool *stream)
{
    static const char *const fields[] = {"op",    "id",           "code", "stdin",  "timeout",
                                         "files", "return_files", "main", "stream", NULL};
    json_t *code = json_object_get(rq, "code");
    json_t *in = json_object_get(rq, "stdin");
    json_t *timeout = json_object_get(rq, "timeout");
    json_t *files = json_object_get(rq, "files");
    json_t *returns = json_object_get(rq, "return_files");
    json_t *main_mode = json_object_get(rq, "main");
    json_t *st = json_object_get(rq, "stream");
    struct pybox_exec *exec;
    size_t i;
    json_t *v;

    if (!only_fields(j, id, rq, fields))
        return NULL;
    if (!json_is_string(code)) {
        answer_invalid(j, id, "ValidationError", "`code` must be a string");
        return NULL;
    }
    if ((in != NULL && !json_is_string(in) && !json_is_null(in)) ||
        (timeout != NULL && !json_is_number(timeout) && !json_is_null(timeout)) ||
        (files != NULL && !json_is_array(files)) || (returns != NULL && !json_is_array(returns)) ||
        (main_mode != NULL && !json_is_boolean(main_mode)) ||
        (st != NULL && !json_is_boolean(st))) {
        answer_invalid(j, id, "ValidationError",
                       "`stdin` must be a string, `timeout` a number, `files` and "
                       "`return_files` lists, `main` and `stream` booleans");
        return NULL;
    }
    exec = pybox_exec_new();
    if (exec == NULL)
        pbx_die(PBX_EXIT_FAILURE, "out of memory");
    *stream = json_is_true(st);
    if (pybox_exec_set_code(exec, json_string_value(code), json_string_length(code)) != PYBOX_OK ||
        (json_is_string(in) &&
         pybox_exec_set_stdin(exec, json_string_value(in), json_string_length(in)) != PYBOX_OK) ||
        pybox_exec_set_main(exec, json_is_true(main_mode)) != PYBOX_OK)
        pbx_die(PBX_EXIT_FAILURE, "out of memory");
    if (json_is_number(timeout) &&
        (json_number_value(timeout) <= 0 ||
         pybox_exec_set_timeout(exec, json_number_value(timeout)) != PYBOX_OK)) {
        answer_invalid(j, id, "ValidationError", "`timeout` %g is not between 0 and 3600 seconds",
                       json_number_value(timeout));
        pybox_exec_free(exec);
        return NULL;
    }
    json_array_foreach(files, i, v)
    {
        json_t *name = json_object_get(v, "name");
        json_t *b64 = json_object_get(v, "content_base64");
        char *data = NULL;
        size_t len = 0;
        enum pybox_code rc;

        if (!json_is_string(name) || !json_is_string(b64) || !from_base64(b64, &data, &len)) {
            answer_invalid(j, id, "ValidationError",
                           "`files[%zu]` must be {\"name\", \"content_base64\"} in base64", i);
            pybox_exec_free(exec);
            return NULL;
        }
        rc = pybox_exec_add_file(exec, json_string_value(name), data, len);
        free(data);
        if (rc != PYBOX_OK) {
            answer_invalid(j, id, "ValidationError",
                           "invalid file name `%s`: use 1-255 bytes, no `/`, not `.` or `..`, "
                           "each name once",
                           json_string_value(name));
            pybox_exec_free(exec);
            return NULL;
        }
    }
    json_array_foreach(returns, i, v)
    {
        if (!json_is_string(v) || pybox_exec_add_return(exec, json_string_value(v)) != PYBOX_OK) {
            answer_invalid(j, id, "ValidationError", "`return_files[%zu]` is not a flat file name",
                           i);
            pybox_exec_free(exec);
            return NULL;
        }
    }
    return exec;
}

/*
 * Whether the worker runs a call; then the request is answered as the server
 * answers a second call (409 SessionBusy), as libpybox's local sessions do:
 * a request never overtakes the run asked before it.
 */
static bool refused_busy(struct jsonl *j, json_t *id)
{
    bool busy;

    pthread_mutex_lock(&j->lock);
    busy = j->busy;
    pthread_mutex_unlock(&j->lock);
    if (busy)
        emit(j, json_pack("{s:O, s:b, s:{s:s, s:s, s:s, s:i}}", "id", id != NULL ? id : json_null(),
                          "ok", false, "error", "type", "SessionBusy", "message",
                          "another call of this session is running; a session runs one at a time",
                          "code", pybox_code_name(PYBOX_E_BUSY), "retry_after", 1));
    return busy;
}

static void start_call(struct jsonl *j, json_t *id, json_t *rq)
{
    struct jsonl_call *k;
    struct pybox_exec *exec;
    bool stream = false;

    exec = exec_of_request(j, id, rq, &stream);
    if (exec == NULL)
        return;
    if (j->worker_started)
        pthread_join(j->worker, NULL);
    j->worker_started = false;
    k = xcalloc(1, sizeof(*k));
    k->j = j;
    k->id = json_incref(id != NULL ? id : json_null());
    k->exec = exec;
    k->stream = stream;
    if (pybox_exec_set_event_callback(exec, jsonl_event, k) != PYBOX_OK)
        pbx_die(PBX_EXIT_FAILURE, "out of memory");
    pthread_mutex_lock(&j->lock);
    j->busy = true;
    pthread_mutex_unlock(&j->lock);
    if (pthread_create(&j->worker, NULL, worker_main, k) != 0)
        pbx_die(PBX_EXIT_FAILURE, "cannot start a thread");
    j->worker_started = true;
}

/* The path of a file request, or NULL after answering why not. */
static const char *path_of(struct jsonl *j, json_t *id, json_t *rq, const char *const *fields)
{
    json_t *path = json_object_get(rq, "path");

    if (!only_fields(j, id, rq, fields))
        return NULL;
    if (!json_is_string(path)) {
        answer_invalid(j, id, "ValidationError", "`path` must be a string");
        return NULL;
    }
    return json_string_value(path);
}

/*
 * The spans of an extend request, each a whole number of seconds from 1 (as
 * PATCH /v1/sessions/{id} takes them) or absent (0: left as it is); false
 * after answering why not.
 */
static bool spans_of(struct jsonl *j, json_t *id, json_t *rq, unsigned *idle, unsigned *life)
{
    static const char *const names[] = {"idle_ttl_s", "max_lifetime_s"};
    unsigned *outs[] = {idle, life};

    for (size_t i = 0; i < 2; i++) {
        json_t *v = json_object_get(rq, names[i]);

        *outs[i] = 0;
        if (v == NULL || json_is_null(v))
            continue;
        if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > UINT_MAX) {
            answer_invalid(j, id, "ValidationError",
                           "`%s` must be a whole number of seconds from 1", names[i]);
            return false;
        }
        *outs[i] = (unsigned)json_integer_value(v);
    }
    return true;
}

/* Interrupt the running call (if any) and wait for the worker. */
static void stop_worker(struct jsonl *j)
{
    for (int tries = 0; tries < 100; tries++) {
        struct timespec pause = {0, 100 * 1000 * 1000};
        bool busy;

        pthread_mutex_lock(&j->lock);
        busy = j->busy;
        pthread_mutex_unlock(&j->lock);
        if (!busy)
            break;
        if (tries % 5 == 0)
            pybox_session_interrupt(j->r->session, NULL, NULL);
        nanosleep(&pause, NULL);
    }
    if (j->worker_started)
        pthread_join(j->worker, NULL); /* the call's own timeout ends it at the latest */
    j->worker_started = false;
}

/* One request line; false when it asked to close. */
static bool request(struct jsonl *j, const char *line, size_t len)
{
    static const char *const path_fields[] = {"op", "id", "path", NULL};
    static const char *const put_fields[] = {"op", "id", "path", "content_base64", NULL};
    static const char *const bare_fields[] = {"op", "id", NULL};
    static const char *const extend_fields[] = {"op", "id", "idle_ttl_s", "max_lifetime_s", NULL};
    struct pybox_session *s = j->r->session;
    struct pybox_error *err = NULL;
    json_error_t jerr;
    json_t *rq = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
    json_t *id = json_object_get(rq, "id");
    json_t *op = json_object_get(rq, "op");
    const char *name = json_string_value(op);
    const char *path;
    enum pybox_code rc;
    bool more = true;

    if (!json_is_object(rq)) {
        answer_invalid(j, NULL, "InvalidRequest", "a request is a JSON object on one line%s%s",
                       rq == NULL ? ": " : "", rq == NULL ? jerr.text : "");
    } else if (name == NULL) {
        answer_invalid(j, id, "ValidationError", "`op` must be a string");
    } else if (strcmp(name, "interrupt") != 0 && strcmp(name, "close") != 0 &&
               strcmp(name, "extend") != 0 && refused_busy(j, id)) {
        ;
    } else if (strcmp(name, "execute") == 0) {
        start_call(j, id, rq);
    } else if (strcmp(name, "interrupt") == 0) {
        bool sent = false;

        if (!only_fields(j, id, rq, bare_fields))
            ;
        else if ((rc = pybox_session_interrupt(s, &sent, &err)) != PYBOX_OK)
            answer_failure(j, id, rc, err);
        else
            answer(j, id, json_pack("{s:b}", "interrupted", sent));
    } else if (strcmp(name, "extend") == 0) {
        unsigned idle = 0;
        unsigned life = 0;

        if (only_fields(j, id, rq, extend_fields) && spans_of(j, id, rq, &idle, &life)) {
            rc = pybox_session_extend(s, idle, life, &err);
            if (rc != PYBOX_OK)
                answer_failure(j, id, rc, err);
            else
                answer(j, id, NULL);
        }
    } else if (strcmp(name, "restart") == 0) {
        if (!only_fields(j, id, rq, bare_fields))
            ;
        else if ((rc = pybox_session_restart(s, &err)) != PYBOX_OK)
            answer_failure(j, id, rc, err);
        else
            answer(j, id, NULL);
    } else if (strcmp(name, "list") == 0) {
        char *text = NULL;

        if (!only_fields(j, id, rq, bare_fields))
            ;
        else if ((rc = pybox_session_list_files(s, &text, &err)) != PYBOX_OK)
            answer_failure(j, id, rc, err);
        else
            answer(j, id, json_pack("{s:o}", "files", json_loads(text, 0, NULL)));
        pybox_free(text);
    } else if (strcmp(name, "put") == 0) {
        json_t *b64 = json_object_get(rq, "content_base64");
        char *data = NULL;
        size_t size = 0;

        if ((path = path_of(j, id, rq, put_fields)) == NULL)
            ;
        else if (!json_is_string(b64) || !from_base64(b64, &data, &size))
            answer_invalid(j, id, "ValidationError", "`content_base64` must be base64 text");
        else if ((rc = pybox_session_put_file(s, path, data, size, &err)) != PYBOX_OK)
            answer_failure(j, id, rc, err);
        else
            answer(j, id, json_pack("{s:s, s:I}", "path", path, "size", (json_int_t)size));
        free(data);
    } else if (strcmp(name, "get") == 0) {
        void *data = NULL;
        size_t size = 0;

        if ((path = path_of(j, id, rq, path_fields)) == NULL) {
            ;
        } else if ((rc = pybox_session_get_file(s, path, &data, &size, &err)) != PYBOX_OK) {
            answer_failure(j, id, rc, err);
        } else {
            char *b64 = to_base64(data, size);

            answer(j, id, json_pack("{s:s, s:I}", "content_base64", b64, "size", (json_int_t)size));
            free(b64);
        }
        pybox_free(data);
    } else if (strcmp(name, "delete") == 0) {
        if ((path = path_of(j, id, rq, path_fields)) == NULL)
            ;
        else if ((rc = pybox_session_delete_file(s, path, &err)) != PYBOX_OK)
            answer_failure(j, id, rc, err);
        else
            answer(j, id, NULL);
    } else if (strcmp(name, "close") == 0) {
        if (only_fields(j, id, rq, bare_fields)) {
            stop_worker(j);
            pbx__cli_repl_end_session(j->r);
            answer(j, id, NULL);
            more = false;
        }
    } else {
        answer_invalid(j, id, "ValidationError",
                       "unknown op `%s`: execute, put, get, delete, list, extend, interrupt, "
                       "restart or close",
                       name);
    }
    json_decref(rq);
    return more;
}

int pbx__cli_repl_jsonl(struct repl *r, int wake_fd)
{
    struct jsonl j = {.r = r};
    struct pbx_buf acc;
    bool skipping = false; /* past a line over MAX_LINE: dropping it to its end */
    bool more = true;
    int status = 0;

    pthread_mutex_init(&j.out_lock, NULL);
    pthread_mutex_init(&j.lock, NULL);
    emit(&j, json_pack("{s:b, s:{s:s, s:s}}", "ready", true, "session", "id",
                       pybox_session_id(r->session), "mode",
                       pybox_client_is_remote(r->client) ? "remote" : "local"));
    pbx_buf_init(&acc, MAX_LINE + 65536);
    while (more) {
        struct pollfd p[2] = {{.fd = STDIN_FILENO, .events = POLLIN},
                              {.fd = wake_fd, .events = POLLIN}};
        char chunk[65536];
        ssize_t n;
        char *nl;

        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (p[1].revents != 0) {
            char c = 0;

            if (read(wake_fd, &c, 1) == 1) {
                status = 128 + (c == 'i' ? SIGINT : SIGTERM);
                break;
            }
        }
        if (p[0].revents == 0)
            continue;
        n = read(STDIN_FILENO, chunk, sizeof(chunk));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break; /* EOF: the program that drove us is gone */
        if (pbx_buf_append(&acc, chunk, (size_t)n) < 0)
            pbx_die(PBX_EXIT_FAILURE, "out of room for a request");
        while (more && (nl = memchr(acc.data, '\n', acc.len)) != NULL) {
            size_t len = (size_t)(nl - acc.data);

            if (!skipping && len > 0)
                more = request(&j, acc.data, len);
            skipping = false;
            memmove(acc.data, nl + 1, acc.len - len - 1);
            acc.len -= len + 1;
        }
        if (acc.len > MAX_LINE) {
            if (!skipping)
                answer_invalid(&j, NULL, "PayloadTooLarge", "a request line is over %u bytes",
                               MAX_LINE);
            skipping = true;
            acc.len = 0;
        }
    }
    pbx_buf_release(&acc);
    stop_worker(&j);
    pbx__cli_repl_end_session(r);
    pthread_mutex_destroy(&j.out_lock);
    pthread_mutex_destroy(&j.lock);
    return status;
}

void pbx__cli_repl_jsonl_not_ready(enum pybox_code rc, const struct pybox_error *err)
{
    json_t *o = json_pack("{s:b, s:o}", "ready", false, "error", error_json(rc, err, NULL));
    char *text = json_dumps(o, JSON_FLAGS);

    if (text != NULL)
        puts(text);
    fflush(stdout);
    free(text);
    json_decref(o);
}
