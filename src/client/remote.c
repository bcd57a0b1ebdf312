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
 */
#include <curl/curl.h>
#include <errno.h>
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

struct answer {
    char *data;           /* body so far, NUL-terminated when not NULL */
    size_t len;           /* its length */
    size_t alloc;         /* bytes allocated */
    bool too_large;       /* the body went over MAX_ANSWER */
    bool nomem;           /* growing failed */
    unsigned retry_after; /* Retry-After in seconds, 0 when absent */
};

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
    struct answer *a = arg;
    size_t add = size * n;

    if (add > MAX_ANSWER - a->len) {
        a->too_large = true;
        return 0; /* makes curl fail with CURLE_WRITE_ERROR */
    }
    if (a->len + add + 1 > a->alloc) {
        size_t want = (a->len + add + 1) * 2;
        char *grown = realloc(a->data, want);

        if (grown == NULL) {
            a->nomem = true;
            return 0;
        }
        a->data = grown;
        a->alloc = want;
    }
    memcpy(a->data + a->len, p, add);
    a->len += add;
    a->data[a->len] = '\0';
    return add;
}

static size_t on_header(char *p, size_t size, size_t n, void *arg)
{
    struct answer *a = arg;
    size_t len = size * n;
    char line[64];

    if (len < sizeof(line) && len > 12 && strncasecmp(p, "Retry-After:", 12) == 0) {
        unsigned long v;
        char *end = NULL;

        memcpy(line, p + 12, len - 12);
        line[len - 12] = '\0';
        v = strtoul(line, &end, 10); /* the HTTP-date form is left at 0 */
        if (end != line && v <= UINT_MAX)
            a->retry_after = (unsigned)v;
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

/* The JSON body of the request in *out (caller frees). */
static enum pybox_code request_body(const struct pybox_client *c, const struct pybox_exec *e,
                                    char **out, struct pybox_error **err)
{
    double timeout = pbx__client_timeout(c, e);
    unsigned memory = pbx__client_memory(c, e);
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
    if (ok && c->network)
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
 * The message and type of an error body ({"error": {"type", "message"}}, or
 * "error_details" as the compatible dialect also names it) in *msg and *type,
 * each NULL when absent (caller frees both).
 */
static void server_error(const struct answer *a, char **msg, char **type)
{
    json_t *o = a->data ? json_loadb(a->data, a->len, 0, NULL) : NULL;
    json_t *e = json_object_get(o, "error");
    json_t *m;
    json_t *t;

    if (!json_is_object(e))
        e = json_object_get(o, "error_details");
    m = json_object_get(e, "message");
    t = json_object_get(e, "type");
    *msg = json_is_string(m) ? strdup(json_string_value(m)) : NULL;
    *type =
        json_is_string(t) && type_like(json_string_value(t)) ? strdup(json_string_value(t)) : NULL;
    json_decref(o);
}

/* An answer that is not a result: its code by its type, else by its status (common/errtable.h). */
static enum pybox_code http_error(long status, const struct answer *a, struct pybox_error **err)
{
    const struct pbx_errtable_row *row;
    enum pybox_code rc;
    char *type;
    char *msg;

    server_error(a, &msg, &type);
    row = pbx_errtable_of_answer(type, (int)status);
    rc = pbx__client_fail_type(err, row->remote, type, (int)status, a->retry_after, "HTTP %ld: %s",
                               status, msg ? msg : pybox_strerror(row->remote));
    free(msg);
    free(type);
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

enum pybox_code pbx__client_run_remote(struct pybox_client *client, const struct pybox_exec *exec,
                                       struct pybox_result **out, struct pybox_error **err)
{
    char detail[CURL_ERROR_SIZE] = "";
    struct answer a = {0};
    struct curl_slist *headers = NULL;
    struct curl_slist *h;
    double run_s = pbx__client_timeout(client, exec);
    enum pybox_code rc;
    char *body = NULL;
    long status = 0;
    CURLcode cc;
    CURL *curl;

    pthread_once(&curl_once, curl_init);
    if (curl_init_rc != CURLE_OK)
        return pbx__client_fail(err, PYBOX_E_TRANSPORT, 0, 0, "curl_global_init: %s",
                                curl_easy_strerror(curl_init_rc));
    rc = request_body(client, exec, &body, err);
    if (rc != PYBOX_OK)
        return rc;
    curl = curl_easy_init();
    /* curl_slist_append() returns NULL and leaves the list alone when out of memory. */
    headers = curl_slist_append(NULL, "Content-Type: application/json");
    h = headers ? curl_slist_append(headers, "Accept: application/json") : NULL;
    if (h != NULL && client->auth_header != NULL)
        h = curl_slist_append(headers, client->auth_header);
    if (curl == NULL || h == NULL) {
        curl_slist_free_all(headers);
        curl_easy_cleanup(curl);
        free(body);
        return pbx__client_fail(err, PYBOX_E_NOMEM, 0, 0, "out of memory");
    }
    if (run_s <= 0)
        run_s = DEFAULT_RUN_S;
    curl_easy_setopt(curl, CURLOPT_URL, client->execute_url);
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(curl, CURLOPT_USERAGENT, "libpybox/" PYBOX_VERSION_STRING);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(body));
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &a);
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, &a);
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, detail);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, CONNECT_TIMEOUT_MS);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, (long)((run_s + MARGIN_S) * 1000));
    cc = curl_easy_perform(curl);
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(curl);
    curl_slist_free_all(headers);
    free(body);

    /* A server may answer (413 before the body is read) and close while we still send. */
    if (cc != CURLE_OK && !(status >= 400 && (cc == CURLE_SEND_ERROR || cc == CURLE_RECV_ERROR)))
        rc = transport_error(cc, detail, &a, client->shown_url, err);
    else if (status != 200)
        rc = http_error(status, &a, err);
    else
        rc = pbx__client_result_parse(a.data ? a.data : "", a.len, exec, out, err);
    free(a.data);
    return rc;
}
