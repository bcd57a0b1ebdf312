/* Parsing of execution requests (untrusted input: see fuzz/fuzz_request.c). */
#include <jansson.h>
#include <sodium.h>
#include <string.h>

#include "common/jsonlimit.h"
#include "common/xalloc.h"
#include "policy/limits.h"
#include "server/request.h"
#include "common/banned.h"

#define INVALID    "InvalidRequest"
#define VALIDATION "ValidationError"

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
        return pbx_error_set(err, PBX_E_TOO_LARGE, "file `%s` is larger than %zu bytes", name,
                             caps->max_file_bytes);
    if (rc < 0)
        return pbx_error_set(err, PBX_E_INVAL,
                             "%s is not valid base64 (standard alphabet, with padding, no "
                             "whitespace)",
                             where);
    rc = pbx__request_add_file(r, caps, name, data, size, err);
    free(data);
    return rc;
}

static int take_string(json_t *v, const char *field, char **out, size_t *len,
                       struct pbx_error **err)
{
    if (!json_is_string(v))
        return pbx_error_set(err, PBX_E_INVAL, "`%s` must be a string", field);
    *len = json_string_length(v);
    *out = xmemdup(json_string_value(v), *len + 1);
    return 0;
}

static int take_return_files(json_t *v, const struct pbx_request_caps *caps,
                             struct pbx_http_request *r, struct pbx_error **err)
{
    size_t i;
    json_t *item;

    if (!json_is_array(v))
        return pbx_error_set(err, PBX_E_INVAL, "`return_files` must be an array of file names");
    if (json_array_size(v) > caps->max_return)
        return pbx_error_set(err, PBX_E_TOO_LARGE, "at most %zu files may be returned",
                             caps->max_return);
    r->return_files = xcalloc(json_array_size(v) + 1, sizeof(char *));
    json_array_foreach(v, i, item)
    {
        if (!json_is_string(item))
            return pbx_error_set(err, PBX_E_INVAL, "`return_files[%zu]` must be a string", i);
        if (strlen(json_string_value(item)) != json_string_length(item) ||
            !pbx_engine_check_name(json_string_value(item), NULL))
            return pbx_error_set(err, PBX_E_INVAL,
                                 "`return_files[%zu]` is not a valid file name: use 1-255 bytes, "
                                 "no `/`, not `.` or `..`",
                                 i);
        for (size_t j = 0; j < r->nreturn; j++) {
            if (strcmp(r->return_files[j], json_string_value(item)) == 0)
                return pbx_error_set(err, PBX_E_INVAL, "`return_files` names `%s` twice",
                                     json_string_value(item));
        }
        r->return_files[r->nreturn++] = xstrdup(json_string_value(item));
    }
    return 0;
}

int pbx__request_set_timeout(struct pbx_http_request *r, double seconds, struct pbx_error **err)
{
    /* Only checked here; the caller's policy turns it into limits (pbx_caller_limits()). */
    if (pbx_limits_check_timeout(seconds, err) < 0)
        return -1;
    r->has_timeout = true;
    r->timeout_s = seconds;
    return 0;
}

static int take_timeout(json_t *v, struct pbx_http_request *r, struct pbx_error **err)
{
    if (!json_is_number(v) || json_is_true(v) || json_is_false(v))
        return pbx_error_set(err, PBX_E_INVAL, "`timeout` must be a number of seconds");
    return pbx__request_set_timeout(r, json_number_value(v), err);
}

static int take_bool(json_t *v, const char *field, bool *out, struct pbx_error **err)
{
    if (!json_is_boolean(v))
        return pbx_error_set(err, PBX_E_INVAL, "`%s` must be true or false", field);
    *out = json_is_true(v);
    return 0;
}

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

static int finish_code(struct pbx_http_request *r, const char *field, struct pbx_error **err)
{
    if (r->code == NULL)
        return pbx_error_set(err, PBX_E_INVAL, "missing `%s`", field);
    if (strlen(r->code) != r->code_len)
        return pbx_error_set(err, PBX_E_INVAL, "`%s` contains a NUL character", field);
    if (r->code_len == 0 || strspn(r->code, " \t\r\n") == r->code_len)
        return pbx_error_set(err, PBX_E_INVAL, "`%s` is empty", field);
    r->code_chars = utf8_chars(r->code, r->code_len);
    return 0;
}

int pbx__request_finish(struct pbx_http_request *r, struct pbx_error **err)
{
    return finish_code(r, "code", err);
}

int pbx__request_parse_compat(const char *body, size_t len, const struct pbx_request_caps *caps,
                              struct pbx_http_request *out, const char **etype,
                              struct pbx_error **err)
{
    json_t *root;
    const char *key;
    json_t *v;
    int rc = 0;
    const char *code_field = "code";

    memset(out, 0, sizeof(*out));
    root = load_object(body, len, caps, etype, err);
    if (root == NULL)
        return -1;
    *etype = VALIDATION;
    json_object_foreach(root, key, v)
    {
        if (strcmp(key, "code") == 0 || strcmp(key, "script") == 0) {
            if (out->code != NULL) {
                rc = pbx_error_set(err, PBX_E_INVAL, "give either `code` or `script`, not both");
                break;
            }
            code_field = strcmp(key, "script") == 0 ? "script" : "code";
            out->main_mode = strcmp(key, "script") == 0;
            rc = take_string(v, key, &out->code, &out->code_len, err);
        } else if (strcmp(key, "api_key") == 0) {
            size_t n;

            if (json_is_null(v))
                continue;
            rc = take_string(v, key, &out->api_key, &n, err);
        } else if (strcmp(key, "stdin_data") == 0) {
            if (json_is_null(v))
                continue;
            rc = take_string(v, key, &out->stdin_data, &out->stdin_len, err);
            if (rc == 0 && out->stdin_len > caps->max_stdin)
                rc = pbx_error_set(err, PBX_E_TOO_LARGE, "`stdin_data` is over %zu bytes",
                                   caps->max_stdin);
        } else if (strcmp(key, "attachments") == 0) {
            size_t i;
            json_t *a;

            if (!json_is_array(v)) {
                rc = pbx_error_set(err, PBX_E_INVAL,
                                   "`attachments` must be an array of {filename, "
                                   "content_base_64}");
                break;
            }
            json_array_foreach(v, i, a)
            {
                json_t *fn = json_object_get(a, "filename");
                char where[64];

                if (!json_is_object(a) || !json_is_string(fn)) {
                    rc = pbx_error_set(err, PBX_E_INVAL,
                                       "`attachments[%zu]` must be an object with a string "
                                       "`filename` and `content_base_64`",
                                       i);
                    break;
                }
                if (strlen(json_string_value(fn)) != json_string_length(fn)) {
                    rc = pbx_error_set(err, PBX_E_INVAL,
                                       "`attachments[%zu].filename` contains a NUL character", i);
                    break;
                }
                snprintf(where, sizeof(where), "`attachments[%zu].content_base_64`", i);
                rc = add_b64_file(out, caps, json_string_value(fn),
                                  json_object_get(a, "content_base_64"), where, err);
                if (rc < 0)
                    break;
            }
        } else if (strcmp(key, "files") == 0) {
            const char *name;
            json_t *b64;

            if (!json_is_object(v)) {
                rc = pbx_error_set(err, PBX_E_INVAL, "`files` must be an object {name: base64}");
                break;
            }
            json_object_foreach(v, name, b64)
            {
                rc = add_b64_file(out, caps, name, b64, "a `files` value", err);
                if (rc < 0)
                    break;
            }
        } else if (strcmp(key, "return_files") == 0) {
            rc = take_return_files(v, caps, out, err);
        } else if (strcmp(key, "timeout") == 0) {
            rc = take_timeout(v, out, err);
        } else if (strcmp(key, "allow_network") == 0) {
            rc = take_bool(v, key, &out->network, err);
        } else {
            rc = pbx_error_set(err, PBX_E_INVAL, "unknown field `%s`", key);
        }
        if (rc < 0)
            break;
    }
    json_decref(root);
    if (rc == 0)
        rc = finish_code(out, out->code ? code_field : "code", err);
    if (rc < 0) {
        pbx__request_release(out);
        return -1;
    }
    return 0;
}

int pbx__request_parse_v1(const char *body, size_t len, const struct pbx_request_caps *caps,
                          struct pbx_http_request *out, const char **etype, struct pbx_error **err)
{
    json_t *root;
    const char *key;
    json_t *v;
    int rc = 0;

    memset(out, 0, sizeof(*out));
    root = load_object(body, len, caps, etype, err);
    if (root == NULL)
        return -1;
    *etype = VALIDATION;
    json_object_foreach(root, key, v)
    {
        if (strcmp(key, "code") == 0) {
            rc = take_string(v, key, &out->code, &out->code_len, err);
        } else if (strcmp(key, "stdin") == 0) {
            if (json_is_null(v))
                continue;
            rc = take_string(v, key, &out->stdin_data, &out->stdin_len, err);
            if (rc == 0 && out->stdin_len > caps->max_stdin)
                rc = pbx_error_set(err, PBX_E_TOO_LARGE, "`stdin` is over %zu bytes",
                                   caps->max_stdin);
        } else if (strcmp(key, "files") == 0) {
            size_t i;
            json_t *f;

            if (!json_is_array(v)) {
                rc = pbx_error_set(err, PBX_E_INVAL,
                                   "`files` must be an array of {name, content_base64}");
                break;
            }
            json_array_foreach(v, i, f)
            {
                json_t *name = json_object_get(f, "name");
                char where[64];

                if (!json_is_object(f) || !json_is_string(name) ||
                    strlen(json_string_value(name)) != json_string_length(name)) {
                    rc = pbx_error_set(err, PBX_E_INVAL,
                                       "`files[%zu]` must be an object with a string `name` and "
                                       "`content_base64`",
                                       i);
                    break;
                }
                snprintf(where, sizeof(where), "`files[%zu].content_base64`", i);
                rc = add_b64_file(out, caps, json_string_value(name),
                                  json_object_get(f, "content_base64"), where, err);
                if (rc < 0)
                    break;
            }
        } else if (strcmp(key, "return_files") == 0) {
            rc = take_return_files(v, caps, out, err);
        } else if (strcmp(key, "main") == 0) {
            rc = take_bool(v, key, &out->main_mode, err);
        } else if (strcmp(key, "timeout") == 0) {
            rc = take_timeout(v, out, err);
        } else if (strcmp(key, "memory_mb") == 0) {
            if (!json_is_integer(v) || json_integer_value(v) < 16 ||
                json_integer_value(v) > 65536) {
                rc = pbx_error_set(err, PBX_E_INVAL,
                                   "`memory_mb` must be a whole number from 16 to 65536");
                break;
            }
            out->has_memory = true;
            out->memory_mb = (uint64_t)json_integer_value(v);
        } else if (strcmp(key, "network") == 0) {
            rc = take_bool(v, key, &out->network, err);
        } else {
            rc = pbx_error_set(err, PBX_E_INVAL, "unknown field `%s`", key);
        }
        if (rc < 0)
            break;
    }
    json_decref(root);
    if (rc == 0)
        rc = finish_code(out, "code", err);
    if (rc < 0) {
        pbx__request_release(out);
        return -1;
    }
    return 0;
}
