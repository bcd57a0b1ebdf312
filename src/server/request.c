/*
 * The request and its fields: what each dialect of execution request may
 * hold (one table of fields per dialect), each field's taker, which reads a
 * JSON value or a form part's text into struct pbx_http_request with the
 * same checks and messages, S4's schema, and the checks that need every
 * field (the code).  The readers of bodies are request_json.c (JSON) and
 * request_form.c (multipart/form-data); untrusted input, see
 * fuzz/fuzz_request.c.
 */
#include <ctype.h>
#include <jansson.h>
#include <math.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "common/utf8.h"
#include "common/xalloc.h"
#include "policy/limits.h"
#include "server/request.h"
#include "server/request_internal.h"
#include "common/banned.h"

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

int pbx__request_refuse_large(const char *name, const struct pbx_request_caps *caps,
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
        return pbx__request_refuse_large(name, caps, err);
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
const struct field pbx__request_compat_fields[] = {
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
const struct field pbx__request_v1_fields[] = {
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
const struct field pbx__request_session_fields[] = {
    {"timeout", take_timeout, FORM_NONE, false},
    {"memory_mb", take_memory, FORM_NONE, false},
    {"idle_ttl_s", take_idle_ttl, FORM_NONE, false},
    {"max_lifetime_s", take_lifetime, FORM_NONE, false},
    {"files", take_files_array, FORM_NONE, false},
    {NULL, NULL, FORM_NONE, false},
};

/* The fields of `PATCH /v1/sessions/{id}`. */
const struct field pbx__request_session_patch_fields[] = {
    {"idle_ttl_s", take_idle_ttl, FORM_NONE, false},
    {"max_lifetime_s", take_lifetime, FORM_NONE, false},
    {NULL, NULL, FORM_NONE, false},
};

/* The fields of `POST /v1/sessions/{id}/execute`, JSON only: /v1/execute's but the session's. */
const struct field pbx__request_session_call_fields[] = {
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
const struct field pbx__request_upload_fields[] = {
    {"code", take_code, FORM_CODE, false},
    {"timeout", take_timeout, FORM_SHORT, false},
    {"allow_network", take_s4_network, FORM_SHORT, false},
    {"files", take_files_array, FORM_SHORT, false}, /* file parts; a text part is refused */
    {NULL, NULL, FORM_NONE, false},
};

/* ---- S4's schema ---- */

int pbx__request_s4_refuse(struct pbx_request_shape *shape, const char *field, const char *kind,
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
        return pbx__request_s4_refuse(shape, "code", "string_type",
                                      "Input should be a valid string", err);
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
    return kind != NULL ? pbx__request_s4_refuse(shape, "timeout", kind, msg, err) : 0;
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
        return pbx__request_s4_refuse(shape, "allow_network", "bool_parsing",
                                      "Input should be a valid boolean, unable to interpret input",
                                      err);
    return pbx__request_s4_refuse(shape, "allow_network", "bool_type",
                                  "Input should be a valid boolean", err);
}

/* `files`: an object whose every value is a string (its base64 is checked later, as S4 does). */
static int s4_files(const struct value *v, struct pbx_request_shape *shape, struct pbx_error **err)
{
    const char *name;
    json_t *b64;

    /* A text part of a form is no file: FastAPI's List[UploadFile] refuses it, a 422. */
    if (v->text != NULL)
        return pbx__request_s4_refuse(shape, "files", "value_error",
                                      "Value error, Expected UploadFile, received: <class 'str'>",
                                      err);
    if (v->json == NULL)
        return 0; /* file parts of a form */
    if (!json_is_object(v->json))
        return pbx__request_s4_refuse(shape, "files", "dict_type",
                                      "Input should be a valid dictionary", err);
    json_object_foreach(v->json, name, b64)
    {
        if (!json_is_string(b64)) {
            /* Named in the answer only when the whole name fits. */
            if (strlen(name) < sizeof(shape->key))
                snprintf(shape->key, sizeof(shape->key), "%s", name);
            return pbx__request_s4_refuse(shape, "files", "string_type",
                                          "Input should be a valid string", err);
        }
    }
    return 0;
}

int pbx__request_s4_check(const char *name, const struct value *v, struct pbx_request_shape *shape,
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

int pbx__request_refuse_unknown(const struct field *fields, const char *name,
                                struct pbx_error **err)
{
    const char *meant = suggestion(fields, name);
    int shown = (int)strnlen(name, 200);

    if (meant == NULL)
        return pbx_error_set(err, PBX_E_INVAL, "unknown field `%.*s`", shown, name);
    return pbx_error_set(err, PBX_E_INVAL, "unknown field `%.*s`; did you mean `%s`?", shown, name,
                         meant);
}

const struct field *pbx__request_find_field(const struct field *fields, const char *name)
{
    for (const struct field *f = fields; f->name != NULL; f++) {
        if (strcmp(f->name, name) == 0)
            return f;
    }
    return NULL;
}

/* ---- the request once every field is in ---- */

int pbx__request_finish_code(struct pbx_http_request *r, struct pbx_error **err)
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

int pbx__request_set_code(struct pbx_http_request *r, const char *code, size_t len,
                          struct pbx_error **err)
{
    free(r->code);
    r->code = xstrndup(code, len);
    r->code_len = len;
    return pbx__request_finish_code(r, err);
}

int pbx__request_add_return(struct pbx_http_request *r, const struct pbx_request_caps *caps,
                            const char *name, struct pbx_error **err)
{
    return add_return_name(r, caps, r->nreturn, name, strlen(name), err);
}
