/*
 * Reading of execution requests, JSON and multipart/form-data, through one
 * table of fields per dialect (untrusted input: see fuzz/fuzz_request.c).
 *
 * A JSON body is parsed whole, then each of its keys goes to its field's
 * taker; a form hands each text part to the same taker once the part is
 * complete, and adds file parts as input files as their bytes arrive.  A
 * taker reads either kind of value (struct value) into struct
 * pbx_http_request; the checks that need every field (the code) run once
 * the body has ended, in finish_code().
 */
#include <ctype.h>
#include <jansson.h>
#include <math.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "common/cleanup.h"
#include "common/jsonlimit.h"
#include "common/utf8.h"
#include "common/xalloc.h"
#include "policy/limits.h"
#include "server/request.h"
#include "common/banned.h"

#define INVALID     "InvalidRequest"
#define VALIDATION  "ValidationError"
#define UNPROCESSED "UnprocessableEntity"

void pbx__request_release(struct pbx_http_request *r)
{
    free(r->code);
    free(r->stdin_data);
    for (size_t i = 0; i < r->nfiles; i++) {
        free((void *)r->files[i].name);
        free((void *)r->files[i].data);
    }
    free(r->files);
    for (size_t i = 0; i < r->nreturn; i++)
        free(r->return_files[i]);
    free(r->return_files);
    free(r->api_key);
    memset(r, 0, sizeof(*r));
}

int pbx__request_base64(const char *text, size_t len, size_t max, char **out, size_t *outlen)
{
    size_t cap = len / 4 * 3 + 3;
    const char *end = NULL;
    unsigned char *bin;

    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=";
    size_t decoded_min = len / 4 * 3 >= 2 ? len / 4 * 3 - 2 : 0;

    /* libsodium decodes bytes >= 0x80 as if they were '/': check the alphabet first. */
    if (len % 4 != 0 || strspn(text, alphabet) < len)
        return -1;
    if (decoded_min > max)
        return -2;
    bin = xmalloc(cap ? cap : 1);
    if (sodium_base642bin(bin, cap, text, len, NULL, outlen, &end,
                          sodium_base64_VARIANT_ORIGINAL) != 0 ||
        end != text + len) {
        free(bin);
        return -1;
    }
    if (*outlen > max) {
        free(bin);
        return -2;
    }
    *out = (char *)bin;
    return 0;
}

static size_t utf8_chars(const char *s, size_t len)
{
    size_t n = 0;

    for (size_t i = 0; i < len; i++) {
        if (((unsigned char)s[i] & 0xc0) != 0x80)
            n++;
    }
    return n;
}

int pbx__request_add_file(struct pbx_http_request *r, const struct pbx_request_caps *caps,
                          const char *name, const void *data, size_t size, struct pbx_error **err)
{
    if (!pbx_engine_check_name(name, err))
        return -1;
    for (size_t i = 0; i < r->nfiles; i++) {
        if (strcmp(r->files[i].name, name) == 0)
            return pbx_error_set(err, PBX_E_INVAL, "file `%s` is given twice", name);
    }
    if (r->nfiles >= caps->max_files)
        return pbx_error_set(err, PBX_E_TOO_LARGE, "at most %zu files may be attached",
                             caps->max_files);
    if (size > caps->max_file_bytes)
        return pbx_error_set(err, PBX_E_TOO_LARGE, "file `%s` is %zu bytes; the limit is %zu", name,
                             size, caps->max_file_bytes);
    r->files = xrealloc(r->files, (r->nfiles + 1) * sizeof(*r->files));
    r->files[r->nfiles].name = xstrdup(name);
    r->files[r->nfiles].data = xmemdup(data, size);
    r->files[r->nfiles].size = size;
    r->nfiles++;
    return 0;
}

/* The refusal of a file over the size cap, whichever way its bytes came. */
static int file_too_large(const char *name, const struct pbx_request_caps *caps,
                          struct pbx_error **err)
{
    return pbx_error_set(err, PBX_E_TOO_LARGE, "file `%s` is larger than %zu bytes", name,
                         caps->max_file_bytes);
}

static int add_b64_file(struct pbx_http_request *r, const struct pbx_request_caps *caps,
                        const char *name, json_t *b64, const char *where, struct pbx_error **err)
{
    char *data = NULL;
    size_t size = 0;
    int rc;

    if (!json_is_string(b64))
        return pbx_error_set(err, PBX_E_INVAL, "%s must be a base64 string", where);
    rc = pbx__request_base64(json_string_value(b64), json_string_length(b64), caps->max_file_bytes,
                             &data, &size);
    if (rc == -2)
        return file_too_large(name, caps, err);
    if (rc < 0)
        return pbx_error_set(err, PBX_E_INVAL,
                             "%s is not valid base64 (standard alphabet, with padding, no "
                             "whitespace)",
                             where);
    rc = pbx__request_add_file(r, caps, name, data, size, err);
    free(data);
    return rc;
}

/* ---- the fields ---- */

/*
 * One field's value as the body gave it: a JSON body's value, or the text of
 * a form part (NUL-terminated, its length counting every byte).  A taker
 * may steal the text.
 */
struct value {
    json_t *json;         /* the JSON value, or NULL for a form part */
    struct pbx_buf *text; /* the form part's bytes, or NULL for JSON */
};

/* How long a form part's text may grow while it is read. */
enum form_size {
    FORM_SHORT, /* a scalar or a file name: FORM_SHORT_MAX bytes */
    FORM_STDIN, /* stdin: its cap, checked by its taker as in JSON */
    FORM_CODE,  /* the code: bounded by the body alone, as in JSON */
    FORM_NONE,  /* not a text field in a form (a JSON-only field) */
};
#define FORM_SHORT_MAX 1024

struct field {
    const char *name; /* the JSON key, or the form part's name */
    /* Its taker: check `v` and put it into `r`; 0, or < 0 with *err. */
    int (*take)(struct pbx_http_request *r, const struct pbx_request_caps *caps, const char *field,
                const struct value *v, struct pbx_error **err);
    enum form_size size; /* in a form */
    bool repeats;        /* a form gives it once per value (return_files) */
};

/* A text field's value into a new string (*out, *len); a form's text is stolen. */
static int take_string(const struct value *v, const char *field, char **out, size_t *len,
                       struct pbx_error **err)
{
    if (v->text != NULL) {
        *out = pbx_buf_steal(v->text, len);
        return 0;
    }
    if (!json_is_string(v->json))
        return pbx_error_set(err, PBX_E_INVAL, "`%s` must be a string", field);
    *len = json_string_length(v->json);
    *out = xmemdup(json_string_value(v->json), *len + 1);
    return 0;
}

/*
 * `code` (both dialects) and `script` (the compatible one's spelling for
 * main() mode).  Only the compatible dialect can name two of them: a JSON
 * body cannot repeat a key, nor a form a field.
 */
static int take_code(struct pbx_http_request *r, const struct pbx_request_caps *caps,
                     const char *field, const struct value *v, struct pbx_error **err)
{
    (void)caps;
    if (r->code != NULL)
        return pbx_error_set(err, PBX_E_INVAL, "give either `code` or `script`, not both");
    r->code_field = strcmp(field, "script") == 0 ? "script" : "code";
    return take_string(v, field, &r->code, &r->code_len, err);
}

static int take_script(struct pbx_http_request *r, const struct pbx_request_caps *caps,
                       const char *field, const struct value *v, struct pbx_error **err)
{
    r->main_mode = true;
    return take_code(r, caps, field, v, err);
}

/* `stdin` and `stdin_data`; null means absent. */
static int take_stdin(struct pbx_http_request *r, const struct pbx_request_caps *caps,
                      const char *field, const struct value *v, struct pbx_error **err)
{
    if (v->json != NULL && json_is_null(v->json))
        return 0;
    if (take_string(v, field, &r->stdin_data, &r->stdin_len, err) < 0)
        return -1;
    if (r->stdin_len > caps->max_stdin)
        return pbx_error_set(err, PBX_E_TOO_LARGE, "`%s` is over %zu bytes", field,
                             caps->max_stdin);
    return 0;
}

/* The compatible dialect's `api_key`; null means absent. */
static int take_api_key(struct pbx_http_request *r, const struct pbx_request_caps *caps,
                        const char *field, const struct value *v, struct pbx_error **err)
{
    size_t n;

    (void)caps;
    if (v->json != NULL && json_is_null(v->json))
        return 0;
    return take_string(v, field, &r->api_key, &n, err);
}

/* One name to return, the `i`th: count, name and duplicates checked. */
static int add_return_name(struct pbx_http_request *r, const struct pbx_request_caps *caps,
                           size_t i, const char *name, size_t len, struct pbx_error **err)
{
    if (r->nreturn >= caps->max_return)
        return pbx_error_set(err, PBX_E_TOO_LARGE, "at most %zu files may be returned",
                             caps->max_return);
    if (strlen(name) != len || !pbx_engine_check_name(name, NULL))
        return pbx_error_set(err, PBX_E_INVAL,
                             "`return_files[%zu]` is not a valid file name: use 1-255 bytes, "
                             "no `/`, not `.` or `..`",
                             i);
    for (size_t j = 0; j < r->nreturn; j++) {
        if (strcmp(r->return_files[j], name) == 0)
            return pbx_error_set(err, PBX_E_INVAL, "`return_files` names `%s` twice", name);
    }
    r->return_files = xrealloc(r->return_files, (r->nreturn + 1) * sizeof(char *));
    r->return_files[r->nreturn++] = xstrdup(name);
    return 0;
}

/* `return_files`: a JSON array of names, or one name per form part. */
static int take_return_files(struct pbx_http_request *r, const struct pbx_request_caps *caps,
                             const char *field, const struct value *v, struct pbx_error **err)
{
    size_t i;
    json_t *item;

    (void)field;
    if (v->text != NULL)
        return add_return_name(r, caps, r->nreturn, v->text->data ? v->text->data : "",
                               v->text->len, err);
    if (!json_is_array(v->json))
        return pbx_error_set(err, PBX_E_INVAL, "`return_files` must be an array of file names");
    if (json_array_size(v->json) > caps->max_return)
        return pbx_error_set(err, PBX_E_TOO_LARGE, "at most %zu files may be returned",
                             caps->max_return);
    json_array_foreach(v->json, i, item)
    {
        if (!json_is_string(item))
            return pbx_error_set(err, PBX_E_INVAL, "`return_files[%zu]` must be a string", i);
        if (add_return_name(r, caps, i, json_string_value(item), json_string_length(item), err) < 0)
            return -1;
    }
    return 0;
}

/* The compatible dialect's `attachments`: [{filename, content_base_64}]. */
static int take_attachments(struct pbx_http_request *r, const struct pbx_request_caps *caps,
                            const char *field, const struct value *v, struct pbx_error **err)
{
    size_t i;
    json_t *a;

    (void)field;
    if (!json_is_array(v->json))
        return pbx_error_set(err, PBX_E_INVAL,
                             "`attachments` must be an array of {filename, content_base_64}");
    json_array_foreach(v->json, i, a)
    {
        json_t *fn = json_object_get(a, "filename");
        char where[64];

        if (!json_is_object(a) || !json_is_string(fn))
            return pbx_error_set(err, PBX_E_INVAL,
                                 "`attachments[%zu]` must be an object with a string `filename` "
                                 "and `content_base_64`",
                                 i);
        if (strlen(json_string_value(fn)) != json_string_length(fn))
            return pbx_error_set(err, PBX_E_INVAL,
                                 "`attachments[%zu].filename` contains a NUL character", i);
        snprintf(where, sizeof(where), "`attachments[%zu].content_base_64`", i);
        if (add_b64_file(r, caps, json_string_value(fn), json_object_get(a, "content_base_64"),
                         where, err) < 0)
            return -1;
    }
    return 0;
}

/* The compatible dialect's `files`: {name: base64}. */
static int take_files_object(struct pbx_http_request *r, const struct pbx_request_caps *caps,
                             const char *field, const struct value *v, struct pbx_error **err)
{
    const char *name;
    json_t *b64;

    (void)field;
    if (!json_is_object(v->json))
        return pbx_error_set(err, PBX_E_INVAL, "`files` must be an object {name: base64}");
    json_object_foreach(v->json, name, b64)
    {
        if (add_b64_file(r, caps, name, b64, "a `files` value", err) < 0)
            return -1;
    }
    return 0;
}

/* `POST /v1/execute`'s `files`: [{name, content_base64}] in JSON; file parts in a form. */
static int take_files_array(struct pbx_http_request *r, const struct pbx_request_caps *caps,
                            const char *field, const struct value *v, struct pbx_error **err)
{
    size_t i;
    json_t *f;

    (void)field;
    if (v->text != NULL)
        return pbx_error_set(err, PBX_E_INVAL,
                             "`files` must be file parts, each with a filename, not a text field");
    if (!json_is_array(v->json))
        return pbx_error_set(err, PBX_E_INVAL,
                             "`files` must be an array of {name, content_base64}");
    json_array_foreach(v->json, i, f)
    {
        json_t *name = json_object_get(f, "name");
        char where[64];

        if (!json_is_object(f) || !json_is_string(name) ||
            strlen(json_string_value(name)) != json_string_length(name))
            return pbx_error_set(err, PBX_E_INVAL,
                                 "`files[%zu]` must be an object with a string `name` and "
                                 "`content_base64`",
                                 i);
        snprintf(where, sizeof(where), "`files[%zu].content_base64`", i);
        if (add_b64_file(r, caps, json_string_value(name), json_object_get(f, "content_base64"),
                         where, err) < 0)
            return -1;
    }
    return 0;
}

/*
 * A form part's text as the JSON value it spells, for the fields whose
 * values are numbers (a new reference, or NULL when it is no JSON value).
 */
static json_t *text_as_json(const struct pbx_buf *text)
{
    return json_loadb(text->data ? text->data : "", text->len, JSON_DECODE_ANY, NULL);
}

static int take_timeout(struct pbx_http_request *r, const struct pbx_request_caps *caps,
                        const char *field, const struct value *v, struct pbx_error **err)
{
    json_t *j = v->text != NULL ? text_as_json(v->text) : json_incref(v->json);
    int rc;

    (void)caps;
    (void)field;
    if (!json_is_number(j))
        rc = pbx_error_set(err, PBX_E_INVAL, "`timeout` must be a number of seconds");
    else
        rc = pbx_limits_check_timeout(json_number_value(j), err);
    if (rc == 0) {
        /* Only checked here; the caller's policy turns it into limits (pbx_caller_limits()). */
        r->has_timeout = true;
        r->timeout_s = json_number_value(j);
    }
    json_decref(j);
    return rc < 0 ? -1 : 0;
}

static int take_memory(struct pbx_http_request *r, const struct pbx_request_caps *caps,
                       const char *field, const struct value *v, struct pbx_error **err)
{
    json_t *j = v->text != NULL ? text_as_json(v->text) : json_incref(v->json);
    bool ok = json_is_integer(j) && json_integer_value(j) >= 16 && json_integer_value(j) <= 65536;

    (void)caps;
    (void)field;
    if (ok) {
        r->has_memory = true;
        r->memory_mb = (uint64_t)json_integer_value(j);
    }
    json_decref(j);
    if (!ok)
        return pbx_error_set(err, PBX_E_INVAL,
                             "`memory_mb` must be a whole number from 16 to 65536");
    return 0;
}

/* A boolean: JSON true or false; in a form, as HTML forms and curl -F write them. */
static int take_bool(const struct value *v, const char *field, bool *out, struct pbx_error **err)
{
    const char *t = v->text != NULL && v->text->data != NULL ? v->text->data : "";

    if (v->json != NULL && json_is_boolean(v->json)) {
        *out = json_is_true(v->json);
        return 0;
    }
    if (v->text != NULL && strlen(t) == v->text->len) {
        if (strcmp(t, "true") == 0 || strcmp(t, "1") == 0 || strcmp(t, "on") == 0) {
            *out = true;
            return 0;
        }
        if (strcmp(t, "false") == 0 || strcmp(t, "0") == 0 || strcmp(t, "off") == 0 || *t == '\0') {
            *out = false;
            return 0;
        }
    }
    return pbx_error_set(err, PBX_E_INVAL, "`%s` must be true or false", field);
}

static int take_main(struct pbx_http_request *r, const struct pbx_request_caps *caps,
                     const char *field, const struct value *v, struct pbx_error **err)
{
    (void)caps;
    return take_bool(v, field, &r->main_mode, err);
}

/* `network` and `allow_network`. */
static int take_network(struct pbx_http_request *r, const struct pbx_request_caps *caps,
                        const char *field, const struct value *v, struct pbx_error **err)
{
    (void)caps;
    return take_bool(v, field, &r->network, err);
}

/* A session's span, seconds: a whole number from 1 to PBX_REQUEST_SPAN_MAX_S. */
static int take_span(const struct value *v, const char *field, bool *has, uint32_t *out,
                     struct pbx_error **err)
{
    if (v->json == NULL || !json_is_integer(v->json) || json_integer_value(v->json) < 1 ||
        json_integer_value(v->json) > PBX_REQUEST_SPAN_MAX_S)
        return pbx_error_set(err, PBX_E_INVAL,
                             "`%s` must be a whole number of seconds from 1 to %d", field,
                             PBX_REQUEST_SPAN_MAX_S);
    *has = true;
    *out = (uint32_t)json_integer_value(v->json);
    return 0;
}

static int take_idle_ttl(struct pbx_http_request *r, const struct pbx_request_caps *caps,
                         const char *field, const struct value *v, struct pbx_error **err)
{
    (void)caps;
    return take_span(v, field, &r->has_idle_ttl, &r->idle_ttl_s, err);
}

static int take_lifetime(struct pbx_http_request *r, const struct pbx_request_caps *caps,
                         const char *field, const struct value *v, struct pbx_error **err)
{
    (void)caps;
    return take_span(v, field, &r->has_lifetime, &r->max_lifetime_s, err);
}

/* A call of a session asks no memory: the session's is fixed when it is made. */
static int take_call_memory(struct pbx_http_request *r, const struct pbx_request_caps *caps,
                            const char *field, const struct value *v, struct pbx_error **err)
{
    (void)r;
    (void)caps;
    (void)field;
    (void)v;
    return pbx_error_set(err, PBX_E_INVAL,
                         "`memory_mb` is the session's, fixed when it is made (POST /v1/sessions)");
}

/*
 * A boolean in the text of S4's form, as pydantic reads one from a string:
 * 0, off, f, false, n, no or 1, on, t, true, y, yes, in any case; anything
 * else, "" among them, is none (FastAPI's 422 "bool_parsing").  Python's
 * requests sends data={"allow_network": False} as "False".  Returns whether
 * `text` is one, with it in *out.
 */
static bool s4_bool_text(const struct pbx_buf *text, bool *out)
{
    static const char *const no[] = {"0", "off", "f", "false", "n", "no"};
    static const char *const yes[] = {"1", "on", "t", "true", "y", "yes"};
    const char *t = text->data != NULL ? text->data : "";

    if (strlen(t) != text->len)
        return false;
    for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++) {
        if (strcasecmp(t, no[i]) == 0) {
            *out = false;
            return true;
        }
        if (strcasecmp(t, yes[i]) == 0) {
            *out = true;
            return true;
        }
    }
    return false;
}

/* `allow_network` of S4's form (s4_network() passed it): pydantic's booleans, not /v1's. */
static int take_s4_network(struct pbx_http_request *r, const struct pbx_request_caps *caps,
                           const char *field, const struct value *v, struct pbx_error **err)
{
    if (v->text == NULL)
        return take_network(r, caps, field, v, err);
    if (!s4_bool_text(v->text, &r->network))
        return pbx_error_set(err, PBX_E_INVAL, "`%s` must be true or false", field);
    return 0;
}

/* The fields of `POST /execute`, JSON only. */
static const struct field compat_fields[] = {
    {"code", take_code, FORM_NONE, false},
    {"script", take_script, FORM_NONE, false},
    {"api_key", take_api_key, FORM_NONE, false},
    {"stdin_data", take_stdin, FORM_NONE, false},
    {"attachments", take_attachments, FORM_NONE, false},
    {"files", take_files_object, FORM_NONE, false},
    {"return_files", take_return_files, FORM_NONE, false},
    {"timeout", take_timeout, FORM_NONE, false},
    {"allow_network", take_network, FORM_NONE, false},
    {NULL, NULL, FORM_NONE, false},
};

/* The fields of `POST /v1/execute`, JSON and multipart/form-data. */
static const struct field v1_fields[] = {
    {"code", take_code, FORM_CODE, false},
    {"stdin", take_stdin, FORM_STDIN, false},
    {"files", take_files_array, FORM_SHORT, false},
    {"return_files", take_return_files, FORM_SHORT, true},
    {"main", take_main, FORM_SHORT, false},
    {"timeout", take_timeout, FORM_SHORT, false},
    {"memory_mb", take_memory, FORM_SHORT, false},
    {"network", take_network, FORM_SHORT, false},
    {NULL, NULL, FORM_NONE, false},
};

/* The fields of `POST /v1/sessions`, JSON only: no code, the session's limits and files. */
static const struct field session_fields[] = {
    {"timeout", take_timeout, FORM_NONE, false},
    {"memory_mb", take_memory, FORM_NONE, false},
    {"idle_ttl_s", take_idle_ttl, FORM_NONE, false},
    {"max_lifetime_s", take_lifetime, FORM_NONE, false},
    {"files", take_files_array, FORM_NONE, false},
    {NULL, NULL, FORM_NONE, false},
};

/* The fields of `PATCH /v1/sessions/{id}`. */
static const struct field session_patch_fields[] = {
    {"idle_ttl_s", take_idle_ttl, FORM_NONE, false},
    {"max_lifetime_s", take_lifetime, FORM_NONE, false},
    {NULL, NULL, FORM_NONE, false},
};

/* The fields of `POST /v1/sessions/{id}/execute`, JSON only: /v1/execute's but the session's. */
static const struct field session_call_fields[] = {
    {"code", take_code, FORM_NONE, false},
    {"stdin", take_stdin, FORM_NONE, false},
    {"files", take_files_array, FORM_NONE, false},
    {"return_files", take_return_files, FORM_NONE, false},
    {"main", take_main, FORM_NONE, false},
    {"timeout", take_timeout, FORM_NONE, false},
    {"memory_mb", take_call_memory, FORM_NONE, false},
    {NULL, NULL, FORM_NONE, false},
};

/* The fields of `POST /execute-with-files`, multipart/form-data only (S4's). */
static const struct field upload_fields[] = {
    {"code", take_code, FORM_CODE, false},
    {"timeout", take_timeout, FORM_SHORT, false},
    {"allow_network", take_s4_network, FORM_SHORT, false},
    {"files", take_files_array, FORM_SHORT, false}, /* file parts; a text part is refused */
    {NULL, NULL, FORM_NONE, false},
};

/* ---- S4's schema ---- */

/*
 * A refusal of S4's schema: its field and pydantic's words for it in *shape
 * (FastAPI answers them as 422 {"detail": [...]}), and the same in *err.
 */
static int schema_fail(struct pbx_request_shape *shape, const char *field, const char *kind,
                       const char *msg, struct pbx_error **err)
{
    shape->field = field;
    shape->kind = kind;
    shape->msg = msg;
    return pbx_error_set(err, PBX_E_INVAL, "`%s`: %s", field, msg);
}

/* `code`: a string (a form part's text always is). */
static int s4_code(const struct value *v, struct pbx_request_shape *shape, struct pbx_error **err)
{
    if (v->text == NULL && !json_is_string(v->json))
        return schema_fail(shape, "code", "string_type", "Input should be a valid string", err);
    return 0;
}

/* `timeout`: a whole number of seconds from 1 to 300 (an integral JSON real counts). */
static int s4_timeout(const struct value *v, struct pbx_request_shape *shape,
                      struct pbx_error **err)
{
    json_t *j = v->text != NULL ? text_as_json(v->text) : json_incref(v->json);
    double t = json_number_value(j);
    const char *kind = NULL;
    const char *msg = NULL;

    if (!json_is_number(j)) {
        kind = v->text != NULL ? "int_parsing" : "int_type";
        msg = v->text != NULL ? "Input should be a valid integer, unable to parse string as an "
                                "integer"
                              : "Input should be a valid integer";
    } else if (json_is_real(j) && floor(t) != t) {
        kind = "int_from_float";
        msg = "Input should be a valid integer, got a number with a fractional part";
    } else if (t < 1) {
        kind = "greater_than_equal";
        msg = "Input should be greater than or equal to 1";
    } else if (t > 300) {
        kind = "less_than_equal";
        msg = "Input should be less than or equal to 300";
    }
    json_decref(j);
    return kind != NULL ? schema_fail(shape, "timeout", kind, msg, err) : 0;
}

/* `allow_network`: a boolean (in a form, as s4_bool_text() reads one). */
static int s4_network(const struct value *v, struct pbx_request_shape *shape,
                      struct pbx_error **err)
{
    struct pbx_error *e = NULL;
    bool b;

    if (v->text != NULL && s4_bool_text(v->text, &b))
        return 0;
    if (v->text == NULL && take_bool(v, "allow_network", &b, &e) == 0)
        return 0;
    pbx_error_free(&e);
    if (v->text != NULL)
        return schema_fail(shape, "allow_network", "bool_parsing",
                           "Input should be a valid boolean, unable to interpret input", err);
    return schema_fail(shape, "allow_network", "bool_type", "Input should be a valid boolean", err);
}

/* `files`: an object whose every value is a string (its base64 is checked later, as S4 does). */
static int s4_files(const struct value *v, struct pbx_request_shape *shape, struct pbx_error **err)
{
    const char *name;
    json_t *b64;

    /* A text part of a form is no file: FastAPI's List[UploadFile] refuses it, a 422. */
    if (v->text != NULL)
        return schema_fail(shape, "files", "value_error",
                           "Value error, Expected UploadFile, received: <class 'str'>", err);
    if (v->json == NULL)
        return 0; /* file parts of a form */
    if (!json_is_object(v->json))
        return schema_fail(shape, "files", "dict_type", "Input should be a valid dictionary", err);
    json_object_foreach(v->json, name, b64)
    {
        if (!json_is_string(b64)) {
            /* Named in the answer only when the whole name fits. */
            if (strlen(name) < sizeof(shape->key))
                snprintf(shape->key, sizeof(shape->key), "%s", name);
            return schema_fail(shape, "files", "string_type", "Input should be a valid string",
                               err);
        }
    }
    return 0;
}

/* S4's schema of the field `name`, whose value is `v`. */
static int s4_check(const char *name, const struct value *v, struct pbx_request_shape *shape,
                    struct pbx_error **err)
{
    if (strcmp(name, "code") == 0)
        return s4_code(v, shape, err);
    if (strcmp(name, "timeout") == 0)
        return s4_timeout(v, shape, err);
    if (strcmp(name, "allow_network") == 0)
        return s4_network(v, shape, err);
    if (strcmp(name, "files") == 0)
        return s4_files(v, shape, err);
    return 0;
}

/* The longest name a "did you mean" is looked for; longer ones are nobody's typo. */
#define SUGGEST_MAX 32

/* Levenshtein's distance between `a` and `b`, ASCII letters of either case alike. */
static size_t distance(const char *a, size_t alen, const char *b, size_t blen)
{
    size_t row[SUGGEST_MAX + 1];

    PBX_ASSERT(blen <= SUGGEST_MAX);
    for (size_t j = 0; j <= blen; j++)
        row[j] = j;
    for (size_t i = 1; i <= alen; i++) {
        size_t diag = row[0];

        row[0] = i;
        for (size_t j = 1; j <= blen; j++) {
            size_t above = row[j];
            size_t best =
                diag + (tolower((unsigned char)a[i - 1]) != tolower((unsigned char)b[j - 1]));

            if (above + 1 < best)
                best = above + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = above;
        }
    }
    return row[blen];
}

/*
 * The field of `fields` an unknown `name` most likely meant: the same but
 * for case, or at most two edits away (the nearest, the first of the table
 * among equals); NULL when none is that close.
 */
static const char *suggestion(const struct field *fields, const char *name)
{
    size_t len = strlen(name);
    const char *best = NULL;
    size_t best_d = 3;

    if (len > SUGGEST_MAX)
        return NULL;
    for (const struct field *f = fields; f->name != NULL; f++) {
        size_t d = distance(name, len, f->name, strlen(f->name));

        if (d < best_d) {
            best_d = d;
            best = f->name;
        }
    }
    return best;
}

/*
 * Refuse the unknown field `name` (its first 200 bytes said), saying which
 * field of `fields` it may have meant.
 */
static int unknown_field(const struct field *fields, const char *name, struct pbx_error **err)
{
    const char *meant = suggestion(fields, name);
    int shown = (int)strnlen(name, 200);

    if (meant == NULL)
        return pbx_error_set(err, PBX_E_INVAL, "unknown field `%.*s`", shown, name);
    return pbx_error_set(err, PBX_E_INVAL, "unknown field `%.*s`; did you mean `%s`?", shown, name,
                         meant);
}

/* A field of `fields` by name, or NULL. */
static const struct field *field_of(const struct field *fields, const char *name)
{
    for (const struct field *f = fields; f->name != NULL; f++) {
        if (strcmp(f->name, name) == 0)
            return f;
    }
    return NULL;
}

/* ---- JSON bodies ---- */

/*
 * The most values a valid request can hold: a dozen fields, and for each
 * input file and each name to return an object of a few fields.  Nothing a
 * valid request needs nests deeper than 4.
 */
static size_t max_values(const struct pbx_request_caps *caps)
{
    return 4096 + 8 * (caps->max_files + caps->max_return);
}
#define MAX_DEPTH 8

static json_t *load_object(const char *body, size_t len, const struct pbx_request_caps *caps,
                           const char **etype, struct pbx_error **err)
{
    struct pbx_json_shape shape;
    json_error_t jerr;
    json_t *root;

    if (len == 0) {
        *etype = INVALID;
        pbx_error_set(err, PBX_E_INVAL, "the request body is empty; send a JSON object");
        return NULL;
    }
    if (!pbx_json_within(body, len, max_values(caps), MAX_DEPTH, &shape)) {
        *etype = INVALID;
        if (shape.depth > MAX_DEPTH)
            pbx_error_set(err, PBX_E_INVAL, "the request nests deeper than %d levels", MAX_DEPTH);
        else
            pbx_error_set(err, PBX_E_INVAL, "the request holds more than %zu JSON values",
                          max_values(caps));
        return NULL;
    }
    root = json_loadb(body, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
    if (root == NULL) {
        *etype = INVALID;
        pbx_error_set(err, PBX_E_INVAL, "malformed JSON at line %d, column %d: %s", jerr.line,
                      jerr.column, jerr.text);
        return NULL;
    }
    if (!json_is_object(root)) {
        json_decref(root);
        *etype = INVALID;
        pbx_error_set(err, PBX_E_INVAL, "the request body must be a JSON object");
        return NULL;
    }
    return root;
}

/*
 * The checks of the code, once every field is in: present, no NUL, UTF-8
 * (a JSON body's always is; a form's must be too, or its characters could
 * not be counted), not blank.
 */
static int finish_code(struct pbx_http_request *r, struct pbx_error **err)
{
    const char *field = r->code_field != NULL ? r->code_field : "code";

    if (r->code == NULL)
        return pbx_error_set(err, PBX_E_INVAL, "missing `%s`", field);
    if (strlen(r->code) != r->code_len)
        return pbx_error_set(err, PBX_E_INVAL, "`%s` contains a NUL character", field);
    if (!pbx_utf8_valid(r->code, r->code_len))
        return pbx_error_set(err, PBX_E_INVAL, "`%s` is not valid UTF-8", field);
    if (r->code_len == 0 || strspn(r->code, " \t\r\n") == r->code_len)
        return pbx_error_set(err, PBX_E_INVAL, "`%s` is empty", field);
    r->code_chars = utf8_chars(r->code, r->code_len);
    return 0;
}

/*
 * The keys of `root`, each through the taker of its field in `fields`; then
 * the code, when `fields` has one.
 */
static int take_fields(const struct field *fields, json_t *root,
                       const struct pbx_request_caps *caps, struct pbx_http_request *out,
                       struct pbx_error **err)
{
    const char *key;
    json_t *v;
    int rc = 0;

    json_object_foreach(root, key, v)
    {
        const struct field *f = field_of(fields, key);
        const struct value value = {.json = v};

        if (f == NULL)
            rc = unknown_field(fields, key, err);
        else
            rc = f->take(out, caps, f->name, &value, err);
        if (rc < 0)
            return -1;
    }
    return field_of(fields, "code") != NULL ? finish_code(out, err) : 0;
}

/* The fields S4's schema has, in the order FastAPI's model declares them. */
static const char *const s4_fields[] = {"code", "timeout", "allow_network", "files", NULL};

/* S4's schema over a JSON body: its fields' types and ranges, and `code` (or `script`) given. */
static int s4_check_json(json_t *root, struct pbx_request_shape *shape, struct pbx_error **err)
{
    if (json_object_get(root, "code") == NULL && json_object_get(root, "script") == NULL)
        return schema_fail(shape, "code", "missing", "Field required", err);
    for (size_t i = 0; s4_fields[i] != NULL; i++) {
        json_t *v = json_object_get(root, s4_fields[i]);
        const struct value value = {.json = v};

        if (v != NULL && s4_check(s4_fields[i], &value, shape, err) < 0)
            return -1;
    }
    return 0;
}

/*
 * A JSON body, each key through the taker of its field in `fields`.  With
 * `shape`, whose rules it follows too, and under S4's its schema first.
 */
static int parse_json(const struct field *fields, const char *body, size_t len,
                      const struct pbx_request_caps *caps, struct pbx_request_shape *shape,
                      struct pbx_http_request *out, const char **etype, struct pbx_error **err)
{
    json_t *root;
    int rc;

    memset(out, 0, sizeof(*out));
    if (shape != NULL)
        memset(shape, 0, sizeof(*shape));
    root = load_object(body, len, caps, etype, err);
    if (root == NULL)
        return -1;
    /* S4's client sends all three on every request; S1's and S2's send none of them. */
    if (shape != NULL)
        shape->s4 = json_object_get(root, "timeout") != NULL ||
                    json_object_get(root, "allow_network") != NULL ||
                    json_object_get(root, "files") != NULL;
    if (shape != NULL && shape->s4 && s4_check_json(root, shape, err) < 0) {
        *etype = UNPROCESSED;
        rc = -1;
    } else {
        *etype = VALIDATION;
        rc = take_fields(fields, root, caps, out, err);
    }
    json_decref(root);
    if (rc < 0) {
        pbx__request_release(out);
        return -1;
    }
    return 0;
}

int pbx__request_parse_compat(const char *body, size_t len, const struct pbx_request_caps *caps,
                              struct pbx_http_request *out, const char **etype,
                              struct pbx_error **err)
{
    return parse_json(compat_fields, body, len, caps, NULL, out, etype, err);
}

int pbx__request_parse_execute(const char *body, size_t len, const struct pbx_request_caps *caps,
                               struct pbx_http_request *out, struct pbx_request_shape *shape,
                               const char **etype, struct pbx_error **err)
{
    int rc = parse_json(compat_fields, body, len, caps, shape, out, etype, err);

    /* The Python Sandbox API documents a body that is no JSON object as a ValidationError. */
    if (rc < 0 && *etype != NULL && strcmp(*etype, INVALID) == 0)
        *etype = VALIDATION;
    return rc;
}

int pbx__request_parse_v1(const char *body, size_t len, const struct pbx_request_caps *caps,
                          struct pbx_http_request *out, const char **etype, struct pbx_error **err)
{
    return parse_json(v1_fields, body, len, caps, NULL, out, etype, err);
}

int pbx__request_parse_session(const char *body, size_t len, bool patch,
                               const struct pbx_request_caps *caps, struct pbx_http_request *out,
                               const char **etype, struct pbx_error **err)
{
    /* Every field is optional: an empty body asks nothing. */
    if (len == 0) {
        body = "{}";
        len = 2;
    }
    return parse_json(patch ? session_patch_fields : session_fields, body, len, caps, NULL, out,
                      etype, err);
}

int pbx__request_parse_session_call(const char *body, size_t len,
                                    const struct pbx_request_caps *caps,
                                    struct pbx_http_request *out, const char **etype,
                                    struct pbx_error **err)
{
    return parse_json(session_call_fields, body, len, caps, NULL, out, etype, err);
}

/* ---- multipart/form-data bodies ---- */

void pbx__request_form_init(struct pbx_request_form *f, const struct pbx_request_caps *caps)
{
    memset(f, 0, sizeof(*f));
    f->caps = *caps;
}

void pbx__request_form_init_upload(struct pbx_request_form *f, const struct pbx_request_caps *caps)
{
    pbx__request_form_init(f, caps);
    f->upload = true;
    f->shape.s4 = true;
}

/* The fields of the form's dialect. */
static const struct field *form_fields(const struct pbx_request_form *f)
{
    return f->upload ? upload_fields : v1_fields;
}

void pbx__request_form_release(struct pbx_request_form *f)
{
    pbx__request_release(&f->req);
    pbx_buf_release(&f->value);
    pbx_error_free(&f->err);
    memset(f, 0, sizeof(*f));
}

static void form_fail(struct pbx_request_form *f, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Keep the first refusal. */
static void form_fail(struct pbx_request_form *f, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    if (f->err != NULL)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    pbx_error_set(&f->err, PBX_E_INVAL, "%s", msg);
}

void pbx__request_form_refuse(struct pbx_request_form *f, const char *msg)
{
    form_fail(f, "%s", msg);
}

/* The text field read so far is complete: its taker puts it into the request. */
static void form_flush(struct pbx_request_form *f)
{
    const struct field *fd = field_of(form_fields(f), f->field);

    if (fd != NULL && f->err == NULL) {
        const struct value value = {.text = &f->value};

        /* S4's schema first, as FastAPI validates the form before its handler sees it. */
        if (!f->upload || s4_check(fd->name, &value, &f->shape, &f->err) == 0)
            (void)fd->take(&f->req, &f->caps, fd->name, &value, &f->err);
    }
    f->field[0] = '\0';
    pbx_buf_release(&f->value);
}

/* A text part named `name` starts: a field of the dialect, not given before. */
static void form_field_start(struct pbx_request_form *f, const char *name)
{
    const struct field *fd = field_of(form_fields(f), name);
    unsigned bit;
    size_t max;

    if (fd == NULL) {
        if (f->err == NULL)
            (void)unknown_field(form_fields(f), name, &f->err);
        return;
    }
    bit = 1u << (fd - form_fields(f));
    if ((f->seen & bit) != 0 && !fd->repeats) {
        form_fail(f, "field `%s` is given twice", fd->name);
        return;
    }
    f->seen |= bit;
    switch (fd->size) {
    case FORM_CODE:
        max = SIZE_MAX;
        break;
    case FORM_STDIN:
        /* One byte past the cap is kept, so the taker refuses it as it refuses JSON's. */
        max = f->caps.max_stdin < SIZE_MAX ? f->caps.max_stdin + 1 : SIZE_MAX;
        break;
    default:
        max = FORM_SHORT_MAX;
        break;
    }
    snprintf(f->field, sizeof(f->field), "%s", fd->name);
    pbx_buf_init(&f->value, max);
}

/* A file part starts: an input file, or nothing for an empty file input. */
static void form_file_start(struct pbx_request_form *f, const char *filename)
{
    f->in_file = false;
    if (filename[0] == '\0')
        return; /* an empty file input: its data, if any, goes nowhere */
    if (pbx__request_add_file(&f->req, &f->caps, filename, "", 0, &f->err) < 0)
        return;
    f->file_alloc = 0;
    f->in_file = true;
}

static void form_file_data(struct pbx_request_form *f, const char *data, size_t size)
{
    struct pbx_file_in *file;

    if (!f->in_file || size == 0)
        return;
    file = &f->req.files[f->req.nfiles - 1];
    if (file->size + size > f->caps.max_file_bytes) {
        (void)file_too_large(file->name, &f->caps, &f->err);
        return;
    }
    if (file->size + size > f->file_alloc) {
        f->file_alloc = (file->size + size) * 2;
        file->data = xrealloc((void *)file->data, f->file_alloc);
    }
    memcpy((char *)file->data + file->size, data, size);
    file->size += size;
}

void pbx__request_form_data(struct pbx_request_form *f, const char *name, const char *filename,
                            const char *data, uint64_t off, size_t size)
{
    if (f->err != NULL)
        return; /* keep reading; the refusal is answered at the end */
    if (data == NULL)
        size = 0;
    if (filename != NULL) {
        if (off == 0) {
            form_flush(f);
            if (f->err == NULL)
                form_file_start(f, filename);
        }
        if (f->err == NULL)
            form_file_data(f, data, size);
        return;
    }
    /* A part whose headers name no field (or an empty one) cannot be placed. */
    if (name == NULL || name[0] == '\0') {
        form_fail(f, "a form part has no field name (Content-Disposition: form-data; name=...)");
        return;
    }
    if (off == 0 || strcmp(name, f->field) != 0) {
        form_flush(f);
        f->in_file = false;
        if (f->err == NULL)
            form_field_start(f, name);
        if (f->err != NULL)
            return;
    }
    if (pbx_buf_append_trunc(&f->value, data, size) < size &&
        field_of(form_fields(f), f->field)->size == FORM_SHORT)
        form_fail(f, "form field `%s` is over %d bytes", f->field, FORM_SHORT_MAX);
}

int pbx__request_form_finish(struct pbx_request_form *f, struct pbx_http_request *out,
                             struct pbx_error **err)
{
    form_flush(f);
    if (f->err == NULL && f->upload && f->req.code == NULL)
        (void)schema_fail(&f->shape, "code", "missing", "Field required", &f->err);
    if (f->err == NULL)
        (void)finish_code(&f->req, &f->err);
    if (f->err != NULL) {
        *err = steal_pointer(&f->err);
        return -1;
    }
    *out = f->req;
    memset(&f->req, 0, sizeof(f->req));
    return 0;
}

int pbx__request_set_code(struct pbx_http_request *r, const char *code, size_t len,
                          struct pbx_error **err)
{
    free(r->code);
    r->code = xstrndup(code, len);
    r->code_len = len;
    return finish_code(r, err);
}

int pbx__request_add_return(struct pbx_http_request *r, const struct pbx_request_caps *caps,
                            const char *name, struct pbx_error **err)
{
    return add_return_name(r, caps, r->nreturn, name, strlen(name), err);
}
