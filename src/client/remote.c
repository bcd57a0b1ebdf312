/*
 * libpybox, remote mode: `POST {server}/v1/execute` over libcurl.
 *
 * One easy handle per run, so runs on one client share nothing and may go
 * on in many threads; curl_global_init() runs once, through pthread_once().
 * The request is JSON (files in base64) with `Authorization: Bearer KEY`.
 * The answer is read into a buffer capped at MAX_ANSWER bytes; a 200 must be
 * a result object, any other status becomes an error code with the server's
 * type and message: the code is the error table's for that type, or for the
 * status when the type is not the table's (common/errtable.h; docs/api.md
 * lists the types), and for 429 and 503 the error keeps the Retry-After.  Signals are never used
 * (CURLOPT_NOSIGNAL), redirects never followed, and only http and https are spoken.
 *
 * Sessions are `/v1/sessions` (docs/api.md, "Sessions"): one request per
 * operation, each on its own handle as a run is.  A file's path goes into
 * the URL percent-encoded, sent as it is (CURLOPT_PATH_AS_IS: curl would
 * otherwise resolve a `..` of it, and ask for another resource).
 *
 * Streaming: with an event callback on the request, a run asks for
 * `Accept: text/event-stream`.  An answer of that type is read as Server-Sent
 * Events as it arrives (on_body() feeds sse_line()): stdout, stderr, display
 * and result become the callback's events, `end` carries the result object,
 * comments (keepalives) are skipped.  Any other answer is read whole as
 * before; a result that came so gives its events once it is in.
 *
 * Cancelling: a run whose request carries a cancel is streamed too (a plain
 * JSON /v1/execute runs to its end whoever waits for it; a streamed one is
 * killed once its client has gone), and its transfer runs on a multi handle
 * that also polls the cancel's eventfd (perform_cancellable()): when it
 * fires the handles are cleaned up, which closes the connection.
 */
#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <limits.h>
#include <pthread.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "client/client.h"
#include "common/errtable.h"
#include "common/banned.h"

#define MAX_ANSWER         (256u << 20) /* 10 files of 8 MiB in base64 and the output fit */
#define CONNECT_TIMEOUT_MS 10000L
#define DEFAULT_RUN_S      60.0 /* when no timeout is set: the server's own may be longer */
#define MARGIN_S           30.0 /* past the run's timeout: queueing, start-up, transfer */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc = CURLE_FAILED_INIT;

static void curl_init(void)
{
    curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* Server-Sent Events as they arrive (docs/api.md, "Streaming"). */
struct sse {
    char *line;        /* the line so far */
    size_t line_len;   /* its bytes */
    size_t line_alloc; /* allocated */
    char event[32];    /* the event's name, "message" when none */
    char *data;        /* its data lines, joined by \n */
    size_t data_len;   /* their bytes */
    size_t data_alloc; /* allocated */
    bool has_data;     /* a data line came */
    char *end;         /* the `end` event's data (the result object), once it came */
    size_t end_len;    /* its bytes */
};

struct answer {
    char *data;                    /* body so far, NUL-terminated when not NULL */
    size_t len;                    /* its length */
    size_t alloc;                  /* bytes allocated */
    size_t total;                  /* bytes received, whichever way they are kept */
    bool too_large;                /* the body went over MAX_ANSWER */
    bool nomem;                    /* growing failed */
    unsigned retry_after;          /* Retry-After in seconds, 0 when absent */
    const struct pybox_exec *exec; /* a run that wants events, or NULL */
    bool streamed;                 /* the answer is text/event-stream: `sse` reads it */
    struct sse sse;                /* when streamed */
};

static void answer_release(struct answer *a)
{
    free(a->data);
    free(a->sse.line);
    free(a->sse.data);
    free(a->sse.end);
}

/* Append [p, p+n) to the buffer *buf of *len bytes (*alloc allocated), NUL-terminated. */
static bool grow_append(char **buf, size_t *len, size_t *alloc, const char *p, size_t n)
{
    if (*len + n + 1 > *alloc) {
        size_t want = (*len + n + 1) * 2;
        char *grown = realloc(*buf, want);

        if (grown == NULL)
            return false;
        *buf = grown;
        *alloc = want;
    }
    memcpy(*buf + *len, p, n);
    *len += n;
    (*buf)[*len] = '\0';
    return true;
}

/* An event is complete: stdout and stderr ({text}), display and result go to the callback. */
static void sse_dispatch(struct answer *a)
{
    struct sse *e = &a->sse;
    const struct pybox_exec *x = a->exec;
    const char *name = e->event[0] ? e->event : "message";
    const char *data = e->data ? e->data : "";

    if (!e->has_data)
        return;
    if (strcmp(name, "end") == 0) {
        free(e->end);
        e->end = e->data;
        e->end_len = e->data_len;
        e->data = NULL;
        e->data_len = e->data_alloc = 0;
    } else if (strcmp(name, "stdout") == 0 || strcmp(name, "stderr") == 0) {
        json_t *o = json_loadb(data, e->data_len, JSON_ALLOW_NUL, NULL);
        json_t *text = json_object_get(o, "text");

        if (json_is_string(text) && json_string_length(text) > 0 && x->on_event != NULL)
            x->on_event(name[3] == 'o' ? PYBOX_EVENT_STDOUT : PYBOX_EVENT_STDERR,
                        json_string_value(text), json_string_length(text), x->on_event_arg);
        json_decref(o);
    } else if ((strcmp(name, "display") == 0 || strcmp(name, "result") == 0) &&
               x->on_event != NULL) {
        x->on_event(name[0] == 'd' ? PYBOX_EVENT_DISPLAY : PYBOX_EVENT_RESULT, data, e->data_len,
                    x->on_event_arg);
    }
    /* `start`, `error` (the end's error, repeated) and names of later versions: nothing. */
    e->event[0] = '\0';
    e->data_len = 0;
    e->has_data = false;
}

/* One line of the stream, without its line break. */
static bool sse_line(struct answer *a, char *line, size_t n)
{
    struct sse *e = &a->sse;
    const char *value;
    size_t field;
    size_t vlen;

    if (n > 0 && line[n - 1] == '\r')
        n--;
    if (n == 0) {
        sse_dispatch(a);
        return true;
    }
    if (line[0] == ':')
        return true; /* a comment: the keepalive */
    field = 0;
    while (field < n && line[field] != ':')
        field++;
    value = field < n ? line + field + 1 : line + n;
    vlen = field < n ? n - field - 1 : 0;
    if (vlen > 0 && value[0] == ' ') {
        value++;
        vlen--;
    }
    if (field == 5 && memcmp(line, "event", 5) == 0) {
        snprintf(e->event, sizeof(e->event), "%.*s", (int)vlen, value);
    } else if (field == 4 && memcmp(line, "data", 4) == 0) {
        if (e->has_data && !grow_append(&e->data, &e->data_len, &e->data_alloc, "\n", 1))
            return false;
        if (!grow_append(&e->data, &e->data_len, &e->data_alloc, value, vlen))
            return false;
        e->has_data = true;
    }
    return true;
}

/* Feed the stream's bytes, line by line. */
static bool sse_feed(struct answer *a, const char *p, size_t n)
{
    struct sse *e = &a->sse;

    while (n > 0) {
        const char *nl = memchr(p, '\n', n);
        size_t take = nl != NULL ? (size_t)(nl - p) : n;

        if (!grow_append(&e->line, &e->line_len, &e->line_alloc, p, take))
            return false;
        p += take;
        n -= take;
        if (nl != NULL) {
            if (!sse_line(a, e->line, e->line_len))
                return false;
            e->line_len = 0;
            p++;
            n--;
        }
    }
    return true;
}

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
    struct answer *a = arg;
    size_t add = size * n;

    if (add > MAX_ANSWER - a->total) {
        a->too_large = true;
        return 0; /* makes curl fail with CURLE_WRITE_ERROR */
    }
    a->total += add;
    if (a->streamed) {
        if (!sse_feed(a, p, add)) {
            a->nomem = true;
            return 0;
        }
        return add;
    }
    if (!grow_append(&a->data, &a->len, &a->alloc, p, add)) {
        a->nomem = true;
        return 0;
    }
    return add;
}

static size_t on_header(char *p, size_t size, size_t n, void *arg)
{
    struct answer *a = arg;
    size_t len = size * n;
    char line[64];

    if (len >= 5 && strncmp(p, "HTTP/", 5) == 0) {
        /* A new answer's head (after a 100 Continue, say): what the last one said is gone. */
        a->streamed = false;
        a->retry_after = 0;
    }
    if (len < sizeof(line) && len > 12 && strncasecmp(p, "Retry-After:", 12) == 0) {
        unsigned long v;
        char *end = NULL;

        memcpy(line, p + 12, len - 12);
        line[len - 12] = '\0';
        v = strtoul(line, &end, 10); /* the HTTP-date form is left at 0 */
        if (end != line && v <= UINT_MAX)
            a->retry_after = (unsigned)v;
    }
    if (a->exec != NULL && len > 13 && strncasecmp(p, "Content-Type:", 13) == 0) {
        const char *v = p + 13;
        size_t vlen = len - 13;

        while (vlen > 0 && (*v == ' ' || *v == '\t')) {
            v++;
            vlen--;
        }
        a->streamed = vlen >= 17 && strncasecmp(v, "text/event-stream", 17) == 0;
    }
    return len;
}

/* A new JSON string of base64 text; NULL when out of memory. */
static json_t *base64_string(const void *data, size_t size)
{
    size_t len = sodium_base64_encoded_len(size, sodium_base64_VARIANT_ORIGINAL);
    char *b64 = malloc(len);
    json_t *s;

    if (b64 == NULL)
        return NULL;
    sodium_bin2base64(b64, len, data, size, sodium_base64_VARIANT_ORIGINAL);
    s = json_string(b64);
    free(b64);
    return s;
}

/* Add `value` (a new reference, NULL meaning out of memory) to `o` as `key`. */
static bool put(json_t *o, const char *key, json_t *value)
{
    return value != NULL && json_object_set_new(o, key, value) == 0;
}

/*
 * The JSON body of the request in *out (caller frees).  A session's run
 * (`session`) sends the run's own timeout only, never the client's defaults:
 * the session's are its own, and its memory is fixed.
 */
static enum pybox_code request_body(const struct pybox_client *c, const struct pybox_exec *e,
                                    bool session, char **out, struct pybox_error **err)
{
    double timeout = session ? e->timeout_s : pbx__client_timeout(c, e);
    unsigned memory = session ? 0 : pbx__client_memory(c, e);
    json_t *body = json_object();
    json_t *code;
    bool ok;

    if (body == NULL)
        return pbx__client_fail(err, PYBOX_E_NOMEM, 0, 0, "out of memory");
    code = json_stringn(e->code, e->code_len);
    if (code == NULL) {
        json_decref(body);
        return pbx__client_fail(err, PYBOX_E_INVALID, 0, 0, "the code is not valid UTF-8");
    }
    ok = put(body, "code", code);
    if (ok && e->stdin_data != NULL) {
        json_t *in = json_stringn(e->stdin_data, e->stdin_len);

        if (in == NULL) {
            json_decref(body);
            return pbx__client_fail(err, PYBOX_E_UNSUPPORTED, 0, 0,
                                    "remote mode sends stdin as text: it must be valid UTF-8");
        }
        ok = ok && put(body, "stdin", in);
    }
    if (ok && e->nfiles > 0) {
        json_t *files = json_array();

        ok = put(body, "files", files);
        for (size_t i = 0; ok && i < e->nfiles; i++) {
            json_t *f = json_object();

            ok = f != NULL && json_array_append_new(files, f) == 0 &&
                 put(f, "name", json_string(e->files[i].name)) &&
                 put(f, "content_base64", base64_string(e->files[i].data, e->files[i].size));
        }
    }
    if (ok && e->nreturn > 0) {
        json_t *names = json_array();

        ok = put(body, "return_files", names);
        for (size_t i = 0; ok && i < e->nreturn; i++)
            ok = json_array_append_new(names, json_string(e->returns[i])) == 0;
    }
    if (ok && e->main_mode)
        ok = put(body, "main", json_true());
    if (ok && timeout > 0)
        ok = put(body, "timeout", json_real(timeout));
    if (ok && memory > 0)
        ok = put(body, "memory_mb", json_integer(memory));
    if (ok && c->network && !session)
        ok = put(body, "network", json_true());
    *out = ok ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (*out == NULL)
        return pbx__client_fail(err, PYBOX_E_NOMEM, 0, 0, "out of memory");
    return PYBOX_OK;
}

/*
 * Whether `t` can be an error type: 1 to 64 letters, digits, `_`, `.` or `-`.
 * Anything else from a server (or a proxy in front of it) is no type.
 */
static bool type_like(const char *t)
{
    size_t n = strspn(t, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-");

    return n > 0 && n <= 64 && t[n] == '\0';
}

/*
 * The message, type and (a SessionDead's) reason of an error body
 * ({"error": {"type", "message", "reason"}}, or "error_details" as the
 * compatible dialect also names it) of `len` bytes in *msg, *type and
 * *reason, each NULL when absent (caller frees them).
 */
static void server_error(const char *body, size_t len, char **msg, char **type, char **reason)
{
    json_t *o = body ? json_loadb(body, len, 0, NULL) : NULL;
    json_t *e = json_object_get(o, "error");
    json_t *m;
    json_t *t;
    json_t *r;

    if (!json_is_object(e))
        e = json_object_get(o, "error_details");
    m = json_object_get(e, "message");
    t = json_object_get(e, "type");
    r = json_object_get(e, "reason");
    if (!json_is_string(r))
        r = json_object_get(o, "reason");
    *msg = json_is_string(m) ? strdup(json_string_value(m)) : NULL;
    *type =
        json_is_string(t) && type_like(json_string_value(t)) ? strdup(json_string_value(t)) : NULL;
    *reason =
        json_is_string(r) && type_like(json_string_value(r)) ? strdup(json_string_value(r)) : NULL;
    json_decref(o);
}

/*
 * An answer that is not a result: its code by its type, else by its status
 * (common/errtable.h).  A session's SessionDead records why it ended.
 */
static enum pybox_code http_error(long status, const char *body, size_t len, unsigned retry_after,
                                  struct pybox_session *session, struct pybox_error **err)
{
    const struct pbx_errtable_row *row;
    enum pybox_code rc;
    char *reason;
    char *type;
    char *msg;

    server_error(body, len, &msg, &type, &reason);
    row = pbx_errtable_of_answer(type, (int)status);
    if (session != NULL && row->id == PBX_ERRTABLE_SESSION_DEAD)
        pbx__client_session_dead(session, reason != NULL ? reason : "ended");
    rc = pbx__client_fail_type(err, row->remote, type, (int)status, retry_after, "HTTP %ld: %s",
                               status, msg ? msg : pybox_strerror(row->remote));
    free(msg);
    free(type);
    free(reason);
    return rc;
}

static enum pybox_code transport_error(CURLcode cc, const char *detail, const struct answer *a,
                                       const char *url, struct pybox_error **err)
{
    enum pybox_code code;
    const char *what = detail[0] ? detail : curl_easy_strerror(cc);

    if (a->too_large)
        return pbx__client_fail(err, PYBOX_E_PROTOCOL, 0, 0, "%s: the answer is over %u bytes", url,
                                MAX_ANSWER);
    switch (cc) {
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
        code = PYBOX_E_CONNECT;
        break;
    case CURLE_OPERATION_TIMEDOUT:
        code = PYBOX_E_TIMEOUT;
        break;
    case CURLE_OUT_OF_MEMORY:
        code = PYBOX_E_NOMEM;
        break;
    case CURLE_WRITE_ERROR:
        code = a->nomem ? PYBOX_E_NOMEM : PYBOX_E_TRANSPORT;
        break;
    case CURLE_URL_MALFORMAT:
    case CURLE_UNSUPPORTED_PROTOCOL:
        code = PYBOX_E_INVALID;
        break;
    default:
        code = PYBOX_E_TRANSPORT;
        break;
    }
    return pbx__client_fail(err, code, 0, 0, "%s: %s", url, what);
}

/* One HTTP request, as every call of this file makes it. */
struct http_request {
    const char *method;                /* "GET", "POST", "PUT", "PATCH", "DELETE" */
    const char *url;                   /* where */
    const char *shown_url;             /* the same for messages (no credentials) */
    const char *content_type;          /* of the body, or NULL for none */
    const char *body;                  /* the body, or NULL */
    size_t body_len;                   /* its bytes */
    double timeout_s;                  /* the whole exchange, at most */
    const struct pybox_exec *stream;   /* a run whose events are wanted: ask for SSE */
    const struct pybox_cancel *cancel; /* fired: drop the connection (NULL: none) */
};

/* What perform_cancellable() returns when the cancel fired: no code curl has. */
#define CANCELLED ((CURLcode)-1)

/*
 * curl_easy_perform() that also watches `cancel_fd`: the transfer runs on a
 * multi handle of its own, waited for with curl_multi_poll() on its sockets
 * and the fd.  Once the fd is readable the transfer is abandoned and the
 * multi handle cleaned up, which closes its connection (a server then stops
 * a streamed execution).  The transfer's code, or CANCELLED.
 */
static CURLcode perform_cancellable(CURL *curl, int cancel_fd)
{
    CURLcode cc = CURLE_OK;
    CURLM *m = curl_multi_init();
    bool done = false;
    int running = 1;

    if (m == NULL)
        return CURLE_OUT_OF_MEMORY;
    if (curl_multi_add_handle(m, curl) != CURLM_OK) {
        curl_multi_cleanup(m);
        return CURLE_OUT_OF_MEMORY;
    }
    while (!done) {
        struct curl_waitfd w = {.fd = cancel_fd, .events = CURL_WAIT_POLLIN};
        CURLMsg *msg;
        int left;

        if (curl_multi_perform(m, &running) != CURLM_OK) {
            cc = CURLE_FAILED_INIT;
            break;
        }
        while ((msg = curl_multi_info_read(m, &left)) != NULL) {
            if (msg->msg == CURLMSG_DONE && msg->easy_handle == curl) {
                cc = msg->data.result;
                done = true;
            }
        }
        if (done || running == 0)
            break;
        /* curl's own timeouts (connect, the whole exchange) end the wait as they come due. */
        if (curl_multi_poll(m, &w, 1, 1000, NULL) != CURLM_OK) {
            cc = CURLE_FAILED_INIT;
            break;
        }
        if (w.revents & CURL_WAIT_POLLIN) {
            cc = CANCELLED;
            break;
        }
    }
    if (!done && cc == CURLE_OK)
        cc = CURLE_FAILED_INIT; /* no transfer left and no word of its end */
    curl_multi_remove_handle(m, curl);
    curl_multi_cleanup(m);
    return cc;
}

/*
 * Make the request; PYBOX_OK when an answer came, whatever its status (in
 * *status, its body or stream in *a, which the caller releases), else the
 * transport's failure.
 */
static enum pybox_code http_do(const struct pybox_client *c, const struct http_request *rq,
                               struct answer *a, long *status, struct pybox_error **err)
{
    char detail[CURL_ERROR_SIZE] = "";
    struct curl_slist *headers = NULL;
    struct curl_slist *h;
    char content_type[64];
    CURLcode cc;
    CURL *curl;

    memset(a, 0, sizeof(*a));
    a->exec = rq->stream;
    *status = 0;
    pthread_once(&curl_once, curl_init);
    if (curl_init_rc != CURLE_OK)
        return pbx__client_fail(err, PYBOX_E_TRANSPORT, 0, 0, "curl_global_init: %s",
                                curl_easy_strerror(curl_init_rc));
    curl = curl_easy_init();
    snprintf(content_type, sizeof(content_type), "Content-Type: %s",
             rq->content_type ? rq->content_type : "application/json");
    /* curl_slist_append() returns NULL and leaves the list alone when out of memory. */
    headers = curl_slist_append(NULL, rq->stream != NULL ? "Accept: text/event-stream"
                                                         : "Accept: application/json");
    h = headers;
    if (h != NULL && rq->content_type != NULL)
        h = curl_slist_append(headers, content_type);
    if (h != NULL && c->auth_header != NULL)
        h = curl_slist_append(headers, c->auth_header);
    if (curl == NULL || h == NULL) {
        curl_slist_free_all(headers);
        curl_easy_cleanup(curl);
        return pbx__client_fail(err, PYBOX_E_NOMEM, 0, 0, "out of memory");
    }
    curl_easy_setopt(curl, CURLOPT_URL, rq->url);
    curl_easy_setopt(curl, CURLOPT_PATH_AS_IS, 1L);
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(curl, CURLOPT_USERAGENT, "libpybox/" PYBOX_VERSION_STRING);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    if (strcmp(rq->method, "GET") == 0) {
        curl_easy_setopt(curl, CURLOPT_HTTPGET, 1L);
    } else {
        /* POST semantics for the body (none: an empty one), the method named. */
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, rq->body != NULL ? rq->body : "");
        curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE,
                         (curl_off_t)(rq->body != NULL ? rq->body_len : 0));
        if (strcmp(rq->method, "POST") != 0)
            curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, rq->method);
    }
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, a);
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, a);
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, detail);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, CONNECT_TIMEOUT_MS);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, (long)(rq->timeout_s * 1000));
    cc = rq->cancel != NULL ? perform_cancellable(curl, rq->cancel->fd) : curl_easy_perform(curl);
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, status);
    curl_easy_cleanup(curl);
    curl_slist_free_all(headers);
    if (cc == CANCELLED)
        return pbx__client_fail(err, PYBOX_E_CANCELLED, 0, 0,
                                "%s: cancelled: the connection was closed, which stops the run",
                                rq->shown_url);
    /* A server may answer (413 before the body is read) and close while we still send. */
    if (cc != CURLE_OK && !(*status >= 400 && (cc == CURLE_SEND_ERROR || cc == CURLE_RECV_ERROR)))
        return transport_error(cc, detail, a, rq->shown_url, err);
    if (a->streamed && a->sse.line_len > 0)
        sse_line(a, a->sse.line, a->sse.line_len); /* a last line without its line break */
    return PYBOX_OK;
}

/* The events of a result that came whole (a server that does not stream): all at once. */
static void replay_events(const struct pybox_exec *exec, const struct pybox_result *r)
{
    size_t len;
    const char *text;

    text = pybox_result_stdout(r, &len);
    if (len > 0)
        exec->on_event(PYBOX_EVENT_STDOUT, text, len, exec->on_event_arg);
    text = pybox_result_stderr(r, &len);
    if (len > 0)
        exec->on_event(PYBOX_EVENT_STDERR, text, len, exec->on_event_arg);
    for (size_t i = 0; i < pybox_result_output_count(r); i++) {
        const char *o = pybox_result_output_json(r, i);

        exec->on_event(strcmp(pybox_result_output_type(r, i), "result") == 0 ? PYBOX_EVENT_RESULT
                                                                             : PYBOX_EVENT_DISPLAY,
                       o, strlen(o), exec->on_event_arg);
    }
}

/*
 * The result of a run's answer: a 200 is a result object (streamed: the
 * `end` event's), which may also be an error object the stream ended with;
 * any other status an error.
 */
static enum pybox_code run_answer(long status, struct answer *a, const struct pybox_exec *exec,
                                  struct pybox_session *session, const char *url,
                                  struct pybox_result **out, struct pybox_error **err)
{
    const char *text = a->data ? a->data : "";
    size_t len = a->len;
    enum pybox_code rc;

    if (status != 200)
        return http_error(status, a->data, a->len, a->retry_after, session, err);
    if (a->streamed) {
        json_t *o;

        if (a->sse.end == NULL)
            return pbx__client_fail(err, PYBOX_E_TRANSPORT, 0, 0,
                                    "%s: the stream ended before its `end` event", url);
        text = a->sse.end;
        len = a->sse.end_len;
        o = json_loadb(text, len, 0, NULL);
        if (json_is_object(json_object_get(o, "error_details"))) {
            /* Refused once the stream had begun: the error the plain answer would be. */
            const char *type =
                json_string_value(json_object_get(json_object_get(o, "error_details"), "type"));

            json_decref(o);
            return http_error(pbx_errtable_of_answer(type, 500)->status, text, len, 0, session,
                              err);
        }
        json_decref(o);
    }
    rc = pbx__client_result_parse(text, len, exec, out, err);
    if (rc == PYBOX_OK && !a->streamed && exec->on_event != NULL)
        replay_events(exec, *out);
    return rc;
}

enum pybox_code pbx__client_info_remote(struct pybox_client *client, char **json,
                                        struct pybox_error **err)
{
    struct http_request rq = {0};
    enum pybox_code rc;
    struct answer a;
    char *url = NULL;
    long status = 0;
    json_t *body;

    if (asprintf(&url, "%s/v1/info", client->base_url) < 0)
        return pbx__client_fail(err, PYBOX_E_NOMEM, 0, 0, "out of memory");
    rq.method = "GET";
    rq.url = url;
    rq.shown_url = client->shown_base;
    rq.timeout_s = DEFAULT_RUN_S + MARGIN_S;
    rc = http_do(client, &rq, &a, &status, err);
    free(url);
    if (rc == PYBOX_OK && status != 200)
        rc = http_error(status, a.data, a.len, a.retry_after, NULL, err);
    if (rc == PYBOX_OK) {
        /* What the caller is handed is an object, whatever the server sent. */
        body = a.data != NULL ? json_loadb(a.data, a.len, 0, NULL) : NULL;
        if (!json_is_object(body))
            rc =
                pbx__client_fail(err, PYBOX_E_PROTOCOL, 0, 0,
                                 "%s/v1/info: the answer is not a JSON object", client->shown_base);
        else
            *json = json_dumps(body, JSON_COMPACT);
        if (rc == PYBOX_OK && *json == NULL)
            rc = pbx__client_fail(err, PYBOX_E_NOMEM, 0, 0, "out of memory");
        json_decref(body);
    }
    answer_release(&a);
    return rc;
}

enum pybox_code pbx__client_run_remote(struct pybox_client *client, const struct pybox_exec *exec,
                                       struct pybox_result **out, struct pybox_error **err)
{
    double run_s = pbx__client_timeout(client, exec);
    struct http_request rq = {0};
    struct answer a;
    enum pybox_code rc;
    char *body = NULL;
    long status = 0;

    rc = request_body(client, exec, false, &body, err);
    if (rc != PYBOX_OK)
        return rc;
    rq.method = "POST";
    rq.url = client->execute_url;
    rq.shown_url = client->shown_url;
    rq.content_type = "application/json";
    rq.body = body;
    rq.body_len = strlen(body);
    rq.timeout_s = (run_s > 0 ? run_s : DEFAULT_RUN_S) + MARGIN_S;
    /* A cancellable run is streamed: the server stops a streamed execution its client leaves. */
    rq.stream = exec->on_event != NULL || exec->cancel != NULL ? exec : NULL;
    rq.cancel = exec->cancel;
    rc = http_do(client, &rq, &a, &status, err);
    free(body);
    if (rc == PYBOX_OK)
        rc = run_answer(status, &a, exec, NULL, client->shown_url, out, err);
    answer_release(&a);
    return rc;
}

/* ---- sessions ---- */

/* An id the server may give: what goes into its URLs unescaped. */
static bool id_like(const char *id)
{
    size_t n = strspn(id, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-");

    return n > 0 && n < sizeof(((struct pybox_session *)0)->id) && id[n] == '\0';
}

/* `files` as `POST /v1/execute` and `POST /v1/sessions` take them: [{name, content_base64}]. */
static bool put_files(json_t *body, const struct pybox_input_file *files, size_t nfiles)
{
    json_t *list = json_array();
    bool ok = put(body, "files", list);

    for (size_t i = 0; ok && i < nfiles; i++) {
        json_t *f = json_object();

        ok = f != NULL && json_array_append_new(list, f) == 0 &&
             put(f, "name", json_string(files[i].name)) &&
             put(f, "content_base64",
                 base64_string(files[i].data != NULL ? files[i].data : "", files[i].size));
    }
    return ok;
}

enum pybox_code pbx__client_session_open_remote(struct pybox_session *s, double timeout_s,
                                                unsigned memory_mb, unsigned idle_ttl_s,
                                                unsigned max_lifetime_s,
                                                const struct pybox_input_file *files, size_t nfiles,
                                                struct pybox_error **err)
{
    const struct pybox_client *c = s->client;
    struct http_request rq = {0};
    json_t *body = json_object();
    enum pybox_code rc;
    struct answer a;
    char *text = NULL;
    char *url = NULL;
    long status = 0;
    bool ok = body != NULL;
    json_t *o;
    json_t *id;

    if (ok && timeout_s > 0)
        ok = put(body, "timeout", json_real(timeout_s));
    if (ok && memory_mb > 0)
        ok = put(body, "memory_mb", json_integer(memory_mb));
    if (ok && idle_ttl_s > 0)
        ok = put(body, "idle_ttl_s", json_integer(idle_ttl_s));
    if (ok && max_lifetime_s > 0)
        ok = put(body, "max_lifetime_s", json_integer(max_lifetime_s));
    if (ok && nfiles > 0)
        ok = put_files(body, files, nfiles);
    text = ok ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (text == NULL || asprintf(&url, "%s/v1/sessions", c->base_url) < 0) {
        free(text);
        return pbx__client_fail(err, PYBOX_E_NOMEM, 0, 0, "out of memory");
    }
    rq.method = "POST";
    rq.url = url;
    rq.shown_url = c->shown_base;
    rq.content_type = "application/json";
    rq.body = text;
    rq.body_len = strlen(text);
    rq.timeout_s = DEFAULT_RUN_S + MARGIN_S;
    rc = http_do(c, &rq, &a, &status, err);
    free(text);
    free(url);
    if (rc != PYBOX_OK) {
        answer_release(&a);
        return rc;
    }
    if (status != 201 && status != 200) {
        rc = http_error(status, a.data, a.len, a.retry_after, NULL, err);
        answer_release(&a);
        return rc;
    }
    o = a.data ? json_loadb(a.data, a.len, 0, NULL) : NULL;
    id = json_object_get(o, "id");
    if (!json_is_string(id) || !id_like(json_string_value(id))) {
        json_decref(o);
        answer_release(&a);
        return pbx__client_fail(err, PYBOX_E_PROTOCOL, 0, 0,
                                "%s: the answer to POST /v1/sessions is not a session",
                                c->shown_base);
    }
    snprintf(s->id, sizeof(s->id), "%s", json_string_value(id));
    /* How long a call may take when it sets no timeout: the server's word, to wait that long. */
    if (json_is_number(json_object_get(json_object_get(o, "limits"), "timeout_s")))
        s->timeout_s =
            json_number_value(json_object_get(json_object_get(o, "limits"), "timeout_s"));
    json_decref(o);
    answer_release(&a);
    if (asprintf(&s->url, "%s/v1/sessions/%s", c->base_url, s->id) < 0) {
        s->url = NULL;
        return pbx__client_fail(err, PYBOX_E_NOMEM, 0, 0, "out of memory");
    }
    if (asprintf(&s->shown_url, "%s/v1/sessions/%s", c->shown_base, s->id) < 0) {
        s->shown_url = NULL;
        return pbx__client_fail(err, PYBOX_E_NOMEM, 0, 0, "out of memory");
    }
    return PYBOX_OK;
}

enum pybox_code pbx__client_session_run_remote(struct pybox_session *s,
                                               const struct pybox_exec *exec,
                                               struct pybox_result **out, struct pybox_error **err)
{
    struct http_request rq = {0};
    double run_s = exec->timeout_s > 0 ? exec->timeout_s : s->timeout_s;
    enum pybox_code rc;
    struct answer a;
    char *body = NULL;
    char *url = NULL;
    long status = 0;

    rc = request_body(s->client, exec, true, &body, err);
    if (rc != PYBOX_OK)
        return rc;
    if (asprintf(&url, "%s/execute", s->url) < 0) {
        free(body);
        return pbx__client_fail(err, PYBOX_E_NOMEM, 0, 0, "out of memory");
    }
    rq.method = "POST";
    rq.url = url;
    rq.shown_url = s->shown_url;
    rq.content_type = "application/json";
    rq.body = body;
    rq.body_len = strlen(body);
    /* As long as a run may take: its own timeout, else the session's, then the margin. */
    rq.timeout_s = (run_s > 0 && run_s < 86400 ? run_s : DEFAULT_RUN_S) + MARGIN_S;
    rq.stream = exec->on_event != NULL ? exec : NULL;
    rc = http_do(s->client, &rq, &a, &status, err);
    free(body);
    free(url);
    if (rc == PYBOX_OK)
        rc = run_answer(status, &a, exec, s, s->shown_url, out, err);
    if (rc == PYBOX_OK && (*out)->dead_reason != NULL)
        pbx__client_session_dead(s, (*out)->dead_reason);
    answer_release(&a);
    return rc;
}

/* `path` percent-encoded but for its slashes, in *out (caller frees). */
static bool escape_path(const char *path, char **out)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = strlen(path);
    char *e = n < SIZE_MAX / 3 ? malloc(n * 3 + 1) : NULL;
    size_t k = 0;

    if (e == NULL)
        return false;
    for (const unsigned char *p = (const unsigned char *)path; *p != '\0'; p++) {
        bool plain = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                     (*p >= '0' && *p <= '9') || strchr("-._~/", *p) != NULL;

        if (plain) {
            e[k++] = (char)*p;
        } else {
            e[k++] = '%';
            e[k++] = hex[*p >> 4];
            e[k++] = hex[*p & 15];
        }
    }
    e[k] = '\0';
    *out = e;
    return true;
}

enum pybox_code pbx__client_session_op_remote(struct pybox_session *s,
                                              enum pbx_client_session_op op, const char *path,
                                              const void *data, size_t size, char **out_body,
                                              size_t *out_len, struct pybox_error **err)
{
    static const struct {
        const char *method; /* what it is */
        const char *suffix; /* after the session's URL */
        int ok;             /* its success status */
        int also;           /* or this one */
    } ops[] = {
        [PBX_CLIENT_SESSION_INTERRUPT] = {"POST", "/interrupt", 200, 200},
        [PBX_CLIENT_SESSION_RESTART] = {"POST", "/restart", 200, 200},
        [PBX_CLIENT_SESSION_PUT] = {"PUT", "/files/", 201, 200},
        [PBX_CLIENT_SESSION_GET] = {"GET", "/files/", 200, 200},
        [PBX_CLIENT_SESSION_DELETE] = {"DELETE", "/files/", 204, 200},
        [PBX_CLIENT_SESSION_LIST] = {"GET", "/files", 200, 200},
        [PBX_CLIENT_SESSION_CLOSE] = {"DELETE", "", 204, 200},
        [PBX_CLIENT_SESSION_PATCH] = {"PATCH", "", 200, 200},
    };
    struct http_request rq = {0};
    char *escaped = NULL;
    enum pybox_code rc;
    struct answer a;
    char *url = NULL;
    long status = 0;
    int n;

    if (out_body != NULL)
        *out_body = NULL;
    if (out_len != NULL)
        *out_len = 0;
    if (path != NULL && !escape_path(path, &escaped))
        return pbx__client_fail(err, PYBOX_E_NOMEM, 0, 0, "out of memory");
    n = asprintf(&url, "%s%s%s", s->url, ops[op].suffix, escaped ? escaped : "");
    free(escaped);
    if (n < 0)
        return pbx__client_fail(err, PYBOX_E_NOMEM, 0, 0, "out of memory");
    rq.method = ops[op].method;
    rq.url = url;
    rq.shown_url = s->shown_url;
    rq.content_type = op == PBX_CLIENT_SESSION_PUT     ? "application/octet-stream"
                      : op == PBX_CLIENT_SESSION_PATCH ? "application/json"
                                                       : NULL;
    rq.body = op == PBX_CLIENT_SESSION_PUT || op == PBX_CLIENT_SESSION_PATCH
                  ? (data != NULL ? data : "")
                  : NULL;
    rq.body_len = op == PBX_CLIENT_SESSION_PUT || op == PBX_CLIENT_SESSION_PATCH ? size : 0;
    rq.timeout_s = DEFAULT_RUN_S + MARGIN_S;
    rc = http_do(s->client, &rq, &a, &status, err);
    free(url);
    if (rc != PYBOX_OK) {
        answer_release(&a);
        return rc;
    }
    if (op == PBX_CLIENT_SESSION_CLOSE && (status == 404 || status == 410)) {
        /* Gone already (ended, expired, or the server restarted): closed all the same. */
        answer_release(&a);
        return PYBOX_OK;
    }
    if (status != ops[op].ok && status != ops[op].also) {
        rc = http_error(status, a.data, a.len, a.retry_after, s, err);
        answer_release(&a);
        return rc;
    }
    if (op == PBX_CLIENT_SESSION_GET && out_body != NULL) {
        *out_body = a.data != NULL ? a.data : strdup("");
        if (out_len != NULL)
            *out_len = a.len;
        a.data = NULL;
        if (*out_body == NULL)
            rc = pbx__client_fail(err, PYBOX_E_NOMEM, 0, 0, "out of memory");
    } else if ((op == PBX_CLIENT_SESSION_LIST || op == PBX_CLIENT_SESSION_INTERRUPT) &&
               out_body != NULL) {
        json_t *o = a.data ? json_loadb(a.data, a.len, 0, NULL) : NULL;
        json_t *v = json_object_get(o, op == PBX_CLIENT_SESSION_LIST ? "files" : "interrupted");

        if (op == PBX_CLIENT_SESSION_LIST ? !json_is_array(v) : !json_is_boolean(v))
            rc = pbx__client_fail(err, PYBOX_E_PROTOCOL, 0, 0, "%s%s: the answer is not pybox's",
                                  s->shown_url, ops[op].suffix);
        else if ((*out_body = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY)) == NULL)
            rc = pbx__client_fail(err, PYBOX_E_NOMEM, 0, 0, "out of memory");
        else if (out_len != NULL)
            *out_len = strlen(*out_body);
        json_decref(o);
    }
    answer_release(&a);
    return rc;
}
