/*
 * Unit tests for src/server/request.c, request_json.c and request_form.c:
 * the parsers of both request dialects (`POST /execute` and `POST
 * /v1/execute`, JSON and multipart/form-data), strict base64 and input
 * files.  Bodies are untrusted: every malformed or oversized one must be
 * refused with the error type its dialect reports ("InvalidRequest" when the
 * body is not a JSON object, "ValidationError" otherwise), the right code,
 * and nothing left allocated (the asan preset runs these with leak
 * detection).  A form is fed to the form reader as libmicrohttpd's post
 * processor hands its parts over, whole and byte by byte, and must be
 * refused as the JSON body that asks the same, word for word.
 *
 * Bodies in the tables are written with single quotes, which json() turns
 * into double quotes, so they read like JSON; none needs a literal quote.
 */
#include <check.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sodium.h>

#include "common/error.h"
#include "common/xalloc.h"
#include "server/request.h"
#include "common/banned.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

#define INV "InvalidRequest"
#define VAL "ValidationError"
/*
 * Either type: a string with \u0000 is refused as malformed JSON today
 * (jansson without JSON_ALLOW_NUL), and as invalid by the parser's own NUL
 * checks should that flag be passed.  Refused with PBX_E_INVAL either way.
 */
#define ANY NULL

#define INVAL     PBX_E_INVAL
#define TOO_LARGE PBX_E_TOO_LARGE

enum dialect { COMPAT, V1 };

/* Small caps, so every limit is easy to reach. */
static const struct pbx_request_caps caps = {
    .max_files = 4,
    .max_file_bytes = 16,
    .max_return = 3,
    .max_stdin = 32,
};

/* A body with single quotes turned into double quotes (a new string). */
static char *json(const char *s)
{
    char *out = xstrdup(s);

    for (char *p = out; *p != '\0'; p++) {
        if (*p == '\'')
            *p = '"';
    }
    return out;
}

static int parse(enum dialect d, const char *body, size_t len, struct pbx_http_request *r,
                 const char **etype, struct pbx_error **err)
{
    if (d == COMPAT)
        return pbx__request_json_parse_compat(body, len, &caps, r, etype, err);
    return pbx__request_json_parse_v1(body, len, &caps, r, etype, err);
}

/* A refused request holds nothing: the parser released and cleared it. */
static void assert_cleared(const struct pbx_http_request *r)
{
    ck_assert_ptr_null(r->code);
    ck_assert_uint_eq(r->code_len, 0);
    ck_assert_ptr_null(r->stdin_data);
    ck_assert_ptr_null(r->files);
    ck_assert_uint_eq(r->nfiles, 0);
    ck_assert_ptr_null(r->return_files);
    ck_assert_uint_eq(r->nreturn, 0);
    ck_assert_ptr_null(r->api_key);
    ck_assert(!r->has_timeout);
    ck_assert(!r->has_memory);
    ck_assert(!r->network);
    ck_assert(!r->main_mode);
}

/* Parse `text` (single-quoted, see json()) and require success. */
static void parse_ok(enum dialect d, const char *text, struct pbx_http_request *r)
{
    char *body = json(text);
    struct pbx_error *err = NULL;
    const char *etype = NULL;
    int rc;

    memset(r, 0xa5, sizeof(*r));
    rc = parse(d, body, strlen(body), r, &etype, &err);
    ck_assert_msg(rc == 0, "%s refused: %s", body, err ? err->msg : "(no error)");
    ck_assert_ptr_null(err);
    free(body);
}

/* Parse `len` bytes of `body` as is and require the given refusal. */
static void expect_error_raw(enum dialect d, const char *body, size_t len, const char *etype,
                             int code, const char *msg)
{
    struct pbx_http_request r;
    struct pbx_error *err = NULL;
    const char *et = NULL;
    int rc;

    memset(&r, 0xa5, sizeof(r));
    rc = parse(d, body, len, &r, &et, &err);
    ck_assert_msg(rc < 0, "%s: accepted", body);
    ck_assert_ptr_nonnull(err);
    ck_assert_ptr_nonnull(err->msg);
    ck_assert_msg(err->code == code, "%s: code %s, wanted %s (%s)", body, pbx_err_name(err->code),
                  pbx_err_name(code), err->msg);
    ck_assert_ptr_nonnull(et);
    if (etype != ANY)
        ck_assert_msg(strcmp(et, etype) == 0, "%s: type %s, wanted %s (%s)", body, et, etype,
                      err->msg);
    else
        ck_assert_msg(strcmp(et, INV) == 0 || strcmp(et, VAL) == 0, "%s: type %s", body, et);
    if (msg != NULL)
        ck_assert_msg(strstr(err->msg, msg) != NULL, "%s: message `%s` lacks `%s`", body, err->msg,
                      msg);
    assert_cleared(&r);
    pbx_error_free(&err);
    ck_assert_ptr_null(err);
}

static void expect_error(enum dialect d, const char *text, const char *etype, int code,
                         const char *msg)
{
    char *body = json(text);

    expect_error_raw(d, body, strlen(body), etype, code, msg);
    free(body);
}

/* Base64 of `n` bytes of `c` (a new string). */
static char *b64_of(char c, size_t n)
{
    unsigned char *bin = xmalloc(n + 1);
    size_t len = sodium_base64_encoded_len(n, sodium_base64_VARIANT_ORIGINAL);
    char *out = xmalloc(len);

    memset(bin, c, n);
    sodium_bin2base64(out, len, bin, n, sodium_base64_VARIANT_ORIGINAL);
    free(bin);
    return out;
}

/* A name of `n` bytes of 'n' (a new string). */
static char *name_of(size_t n)
{
    char *s = xmalloc(n + 1);

    memset(s, 'n', n);
    s[n] = '\0';
    return s;
}

struct bad {
    const char *body;  /* single-quoted, see json() */
    const char *etype; /* INV, VAL or ANY */
    int code;
    const char *msg; /* a part of the message, or NULL */
};

/* Refusals both dialects share, written with `code` and `return_files`. */
static const struct bad common_bad[] = {
    /* Not a JSON object. */
    {"", INV, INVAL, "empty"},
    {"{", INV, INVAL, "malformed JSON"},
    {"   ", INV, INVAL, "malformed JSON"},
    {"{'code': 'x',}", INV, INVAL, "malformed JSON"},
    {"{'code': 'x'} trailing", INV, INVAL, "malformed JSON"},
    {"{'code': 'x'}{}", INV, INVAL, "malformed JSON"},
    {"{code: 'x'}", INV, INVAL, "malformed JSON"},
    {"null", INV, INVAL, NULL},
    {"'print(1)'", INV, INVAL, NULL},
    {"42", INV, INVAL, NULL},
    {"true", INV, INVAL, NULL},
    {"[]", INV, INVAL, "JSON object"},
    {"[{'code': 'x'}]", INV, INVAL, "JSON object"},
    {"{'code': 'x', 'code': 'y'}", INV, INVAL, "duplicate"},
    {"{'code': 'x', 'return_files': ['a'], 'return_files': ['b']}", INV, INVAL, "duplicate"},
    {"{'code': 'x', 'timeout': 1e400}", INV, INVAL, NULL},
    {"{'code': 'x', 'timeout': 99999999999999999999}", INV, INVAL, NULL},
    {"{'code': 'x', 'timeout': NaN}", INV, INVAL, NULL},
    {"{'code': 'x', 'timeout': Infinity}", INV, INVAL, NULL},
    {"{'code': '\\ud800'}", INV, INVAL, NULL},
    {"{'code': '\xff\xfe'}", INV, INVAL, NULL},
    {"{'code': 'x', 'a\\u0000b': 1}", INV, INVAL, NULL},
    /* The code. */
    {"{}", VAL, INVAL, "missing `code`"},
    {"{'return_files': ['a']}", VAL, INVAL, "missing `code`"},
    {"{'code': null}", VAL, INVAL, "`code` must be a string"},
    {"{'code': 1}", VAL, INVAL, "`code` must be a string"},
    {"{'code': 1.5}", VAL, INVAL, "`code` must be a string"},
    {"{'code': true}", VAL, INVAL, "`code` must be a string"},
    {"{'code': ['print(1)']}", VAL, INVAL, "`code` must be a string"},
    {"{'code': {}}", VAL, INVAL, "`code` must be a string"},
    {"{'code': ''}", VAL, INVAL, "`code` is empty"},
    {"{'code': ' '}", VAL, INVAL, "`code` is empty"},
    {"{'code': ' \\t\\r\\n \\n'}", VAL, INVAL, "`code` is empty"},
    {"{'code': 'print(1)\\u0000'}", ANY, INVAL, NULL},
    {"{'code': '\\u0000print(1)'}", ANY, INVAL, NULL},
    {"{'code': '\\u0000'}", ANY, INVAL, NULL},
    /* Unknown fields. */
    {"{'code': 'x', 'language': 'python'}", VAL, INVAL, "unknown field `language`"},
    {"{'language': 'python', 'code': 'x'}", VAL, INVAL, "unknown field `language`"},
    {"{'code': 'x', 'Code': 'y'}", VAL, INVAL, "unknown field `Code`"},
    {"{'code': 'x', '': 1}", VAL, INVAL, "unknown field"},
    /* return_files. */
    {"{'code': 'x', 'return_files': 'a'}", VAL, INVAL, "`return_files` must be an array"},
    {"{'code': 'x', 'return_files': {}}", VAL, INVAL, "`return_files` must be an array"},
    {"{'code': 'x', 'return_files': null}", VAL, INVAL, "`return_files` must be an array"},
    {"{'code': 'x', 'return_files': [1]}", VAL, INVAL, "`return_files[0]` must be a string"},
    {"{'code': 'x', 'return_files': ['a', null]}", VAL, INVAL,
     "`return_files[1]` must be a string"},
    {"{'code': 'x', 'return_files': [['a']]}", VAL, INVAL, "`return_files[0]` must be a string"},
    {"{'code': 'x', 'return_files': ['']}", VAL, INVAL,
     "`return_files[0]` is not a valid file name"},
    {"{'code': 'x', 'return_files': ['.']}", VAL, INVAL, "not a valid file name"},
    {"{'code': 'x', 'return_files': ['..']}", VAL, INVAL, "not a valid file name"},
    {"{'code': 'x', 'return_files': ['a/b']}", VAL, INVAL, "not a valid file name"},
    {"{'code': 'x', 'return_files': ['/abs']}", VAL, INVAL, "not a valid file name"},
    {"{'code': 'x', 'return_files': ['dir/']}", VAL, INVAL, "not a valid file name"},
    {"{'code': 'x', 'return_files': ['ok', 'a\\u0000b']}", ANY, INVAL, NULL},
    {"{'code': 'x', 'return_files': ['a\\u0000']}", ANY, INVAL, NULL},
    {"{'code': 'x', 'return_files': ['a', 'b', 'a']}", VAL, INVAL, "names `a` twice"},
    {"{'code': 'x', 'return_files': ['a', 'b', 'c', 'd']}", VAL, TOO_LARGE, "at most 3"},
    /* timeout. */
    {"{'code': 'x', 'timeout': '5'}", VAL, INVAL, "`timeout` must be a number"},
    {"{'code': 'x', 'timeout': true}", VAL, INVAL, "`timeout` must be a number"},
    {"{'code': 'x', 'timeout': false}", VAL, INVAL, "`timeout` must be a number"},
    {"{'code': 'x', 'timeout': null}", VAL, INVAL, "`timeout` must be a number"},
    {"{'code': 'x', 'timeout': [5]}", VAL, INVAL, "`timeout` must be a number"},
    {"{'code': 'x', 'timeout': {}}", VAL, INVAL, "`timeout` must be a number"},
    {"{'code': 'x', 'timeout': 0}", VAL, INVAL, "between 0 and 3600"},
    {"{'code': 'x', 'timeout': -0}", VAL, INVAL, "between 0 and 3600"},
    {"{'code': 'x', 'timeout': 0.0}", VAL, INVAL, "between 0 and 3600"},
    {"{'code': 'x', 'timeout': -1}", VAL, INVAL, "between 0 and 3600"},
    {"{'code': 'x', 'timeout': -0.5}", VAL, INVAL, "between 0 and 3600"},
    {"{'code': 'x', 'timeout': 1e-400}", VAL, INVAL, "between 0 and 3600"},
    {"{'code': 'x', 'timeout': 3600.001}", VAL, INVAL, "between 0 and 3600"},
    {"{'code': 'x', 'timeout': 3601}", VAL, INVAL, "between 0 and 3600"},
    {"{'code': 'x', 'timeout': 1e300}", VAL, INVAL, "between 0 and 3600"},
    {"{'code': 'x', 'timeout': 9223372036854775807}", VAL, INVAL, "between 0 and 3600"},
    {"{'code': 'x', 'timeout': -9223372036854775808}", VAL, INVAL, "between 0 and 3600"},
};

/* Refusals of `POST /execute` only. */
static const struct bad compat_bad[] = {
    /* code and script. */
    {"{'script': 1}", VAL, INVAL, "`script` must be a string"},
    {"{'script': null}", VAL, INVAL, "`script` must be a string"},
    {"{'script': ''}", VAL, INVAL, "`script` is empty"},
    {"{'script': '\\n\\t'}", VAL, INVAL, "`script` is empty"},
    {"{'script': 'def main():\\u0000'}", ANY, INVAL, NULL},
    {"{'code': 'x', 'script': 'y'}", VAL, INVAL, "not both"},
    {"{'script': 'y', 'code': 'x'}", VAL, INVAL, "not both"},
    {"{'code': 'x', 'script': null}", VAL, INVAL, "not both"},
    {"{'stdin_data': 'x', 'api_key': 'k'}", VAL, INVAL, "missing `code`"},
    /* The v1 spellings are unknown here. */
    {"{'code': 'x', 'stdin': 'a'}", VAL, INVAL, "unknown field `stdin`"},
    {"{'code': 'x', 'network': true}", VAL, INVAL, "unknown field `network`"},
    {"{'code': 'x', 'main': true}", VAL, INVAL, "unknown field `main`"},
    {"{'code': 'x', 'memory_mb': 64}", VAL, INVAL, "unknown field `memory_mb`"},
    /* Scalars. */
    {"{'code': 'x', 'api_key': 5}", VAL, INVAL, "`api_key` must be a string"},
    {"{'code': 'x', 'api_key': true}", VAL, INVAL, "`api_key` must be a string"},
    {"{'code': 'x', 'api_key': ['k']}", VAL, INVAL, "`api_key` must be a string"},
    {"{'code': 'x', 'stdin_data': 5}", VAL, INVAL, "`stdin_data` must be a string"},
    {"{'code': 'x', 'stdin_data': ['a']}", VAL, INVAL, "`stdin_data` must be a string"},
    {"{'code': 'x', 'stdin_data': false}", VAL, INVAL, "`stdin_data` must be a string"},
    {"{'code': 'x', 'stdin_data': '123456789012345678901234567890123'}", VAL, TOO_LARGE,
     "over 32 bytes"},
    {"{'code': 'x', 'allow_network': 'true'}", VAL, INVAL, "`allow_network` must be true or false"},
    {"{'code': 'x', 'allow_network': 1}", VAL, INVAL, "`allow_network` must be true or false"},
    {"{'code': 'x', 'allow_network': null}", VAL, INVAL, "`allow_network` must be true or false"},
    /* attachments. */
    {"{'code': 'x', 'attachments': {}}", VAL, INVAL, "`attachments` must be an array"},
    {"{'code': 'x', 'attachments': 'a'}", VAL, INVAL, "`attachments` must be an array"},
    {"{'code': 'x', 'attachments': null}", VAL, INVAL, "`attachments` must be an array"},
    {"{'code': 'x', 'attachments': [5]}", VAL, INVAL, "`attachments[0]` must be an object"},
    {"{'code': 'x', 'attachments': [null]}", VAL, INVAL, "`attachments[0]` must be an object"},
    {"{'code': 'x', 'attachments': [{}]}", VAL, INVAL, "`attachments[0]` must be an object"},
    {"{'code': 'x', 'attachments': [{'filename': 5, 'content_base_64': 'QUJD'}]}", VAL, INVAL,
     "`attachments[0]` must be an object"},
    {"{'code': 'x', 'attachments': [{'content_base_64': 'QUJD'}]}", VAL, INVAL,
     "`attachments[0]` must be an object"},
    {"{'code': 'x', 'attachments': [{'filename': 'a'}]}", VAL, INVAL,
     "`attachments[0].content_base_64` must be a base64 string"},
    {"{'code': 'x', 'attachments': [{'filename': 'a', 'content_base_64': 5}]}", VAL, INVAL,
     "`attachments[0].content_base_64` must be a base64 string"},
    {"{'code': 'x', 'attachments': [{'filename': 'a', 'content_base_64': null}]}", VAL, INVAL,
     "must be a base64 string"},
    {"{'code': 'x', 'attachments': [{'filename': 'a', 'content_base64': 'QUJD'}]}", VAL, INVAL,
     "must be a base64 string"},
    {"{'code': 'x', 'attachments': [{'filename': 'a', 'content_base_64': 'QUJD'}, 7]}", VAL, INVAL,
     "`attachments[1]` must be an object"},
    {"{'code': 'x', 'attachments': [{'filename': 'a', 'content_base_64': 'QUJ'}]}", VAL, INVAL,
     "`attachments[0].content_base_64` is not valid base64"},
    {"{'code': 'x', 'attachments': [{'filename': 'a', 'content_base_64': 'QU JD'}]}", VAL, INVAL,
     "not valid base64"},
    {"{'code': 'x', 'attachments': [{'filename': 'a\\u0000b', 'content_base_64': 'QUJD'}]}", ANY,
     INVAL, NULL},
    {"{'code': 'x', 'attachments': [{'filename': '', 'content_base_64': 'QUJD'}]}", VAL, INVAL,
     "invalid file name"},
    {"{'code': 'x', 'attachments': [{'filename': '..', 'content_base_64': 'QUJD'}]}", VAL, INVAL,
     "invalid file name"},
    {"{'code': 'x', 'attachments': [{'filename': '/etc/passwd', 'content_base_64': 'QUJD'}]}", VAL,
     INVAL, "invalid file name"},
    {"{'code': 'x', 'attachments': [{'filename': 'a', 'content_base_64': 'QUJD'}, {'filename': "
     "'a', 'content_base_64': 'QUJD'}]}",
     VAL, INVAL, "given twice"},
    {"{'code': 'x', 'attachments': [{'filename': 'a', 'content_base_64': "
     "'QUFBQUFBQUFBQUFBQUFBQUE='}]}",
     VAL, TOO_LARGE, "larger than 16 bytes"},
    {"{'code': 'x', 'attachments': [{'filename': 'a', 'content_base_64': 'QUJD', 'filename': "
     "'b'}]}",
     INV, INVAL, "duplicate"},
    /* files. */
    {"{'code': 'x', 'files': []}", VAL, INVAL, "`files` must be an object"},
    {"{'code': 'x', 'files': 'a'}", VAL, INVAL, "`files` must be an object"},
    {"{'code': 'x', 'files': null}", VAL, INVAL, "`files` must be an object"},
    {"{'code': 'x', 'files': [{'name': 'a', 'content_base64': 'QUJD'}]}", VAL, INVAL,
     "`files` must be an object"},
    {"{'code': 'x', 'files': {'a': 5}}", VAL, INVAL, "must be a base64 string"},
    {"{'code': 'x', 'files': {'a': null}}", VAL, INVAL, "must be a base64 string"},
    {"{'code': 'x', 'files': {'a': ['QUJD']}}", VAL, INVAL, "must be a base64 string"},
    {"{'code': 'x', 'files': {'a': 'QUJD', 'a': 'QUJD'}}", INV, INVAL, "duplicate"},
    {"{'code': 'x', 'files': {'a\\u0000b': 'QUJD'}}", INV, INVAL, NULL},
    {"{'code': 'x', 'files': {'': 'QUJD'}}", VAL, INVAL, "invalid file name"},
    {"{'code': 'x', 'files': {'.': 'QUJD'}}", VAL, INVAL, "invalid file name"},
    {"{'code': 'x', 'files': {'..': 'QUJD'}}", VAL, INVAL, "invalid file name"},
    {"{'code': 'x', 'files': {'a/b': 'QUJD'}}", VAL, INVAL, "invalid file name"},
    {"{'code': 'x', 'files': {'/abs': 'QUJD'}}", VAL, INVAL, "invalid file name"},
    {"{'code': 'x', 'files': {'../up': 'QUJD'}}", VAL, INVAL, "invalid file name"},
    /* Bad base64 in a `files` value. */
    {"{'code': 'x', 'files': {'a': 'QUJ'}}", VAL, INVAL, "not valid base64"},
    {"{'code': 'x', 'files': {'a': 'QQ'}}", VAL, INVAL, "not valid base64"},
    {"{'code': 'x', 'files': {'a': 'QQ='}}", VAL, INVAL, "not valid base64"},
    {"{'code': 'x', 'files': {'a': 'Q==='}}", VAL, INVAL, "not valid base64"},
    {"{'code': 'x', 'files': {'a': '===='}}", VAL, INVAL, "not valid base64"},
    {"{'code': 'x', 'files': {'a': 'QUJDQQ'}}", VAL, INVAL, "not valid base64"},
    {"{'code': 'x', 'files': {'a': 'QU JD'}}", VAL, INVAL, "not valid base64"},
    {"{'code': 'x', 'files': {'a': 'QUJD\\n'}}", VAL, INVAL, "not valid base64"},
    {"{'code': 'x', 'files': {'a': 'QUJD\\nQUJD'}}", VAL, INVAL, "not valid base64"},
    {"{'code': 'x', 'files': {'a': ' QUJD'}}", VAL, INVAL, "not valid base64"},
    {"{'code': 'x', 'files': {'a': 'QUJ-'}}", VAL, INVAL, "not valid base64"},
    {"{'code': 'x', 'files': {'a': 'QUJ_'}}", VAL, INVAL, "not valid base64"},
    {"{'code': 'x', 'files': {'a': 'QU=D'}}", VAL, INVAL, "not valid base64"},
    {"{'code': 'x', 'files': {'a': 'QQ==QUJD'}}", VAL, INVAL, "not valid base64"},
    {"{'code': 'x', 'files': {'a': 'QUJD===='}}", VAL, INVAL, "not valid base64"},
    {"{'code': 'x', 'files': {'a': 'AB=='}}", VAL, INVAL, "not valid base64"},
    {"{'code': 'x', 'files': {'a': 'QUJD\\u0000'}}", ANY, INVAL, NULL},
    {"{'code': 'x', 'files': {'a': 'QUJ\\u0000'}}", ANY, INVAL, NULL},
    /* Non-ASCII is outside the alphabet (libsodium 1.0.18 reads it as `/`: test_base64_strict). */
    {"{'code': 'x', 'files': {'a': '\\u00e9\\u00e9'}}", VAL, INVAL, "not valid base64"},
    /* Sizes and counts of files. */
    {"{'code': 'x', 'files': {'a': 'QUFBQUFBQUFBQUFBQUFBQUE='}}", VAL, TOO_LARGE,
     "larger than 16 bytes"},
    {"{'code': 'x', 'files': {'a': 'QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB'}}", VAL,
     TOO_LARGE, "larger than 16 bytes"},
    {"{'code': 'x', 'files': {'a': 'QUJD', 'b': 'QUJD', 'c': 'QUJD', 'd': 'QUJD', 'e': 'QUJD'}}",
     VAL, TOO_LARGE, "at most 4 files"},
    {"{'code': 'x', 'attachments': [{'filename': 'a', 'content_base_64': 'QUJD'}, {'filename': "
     "'b', 'content_base_64': 'QUJD'}], 'files': {'c': 'QUJD', 'd': 'QUJD', 'e': 'QUJD'}}",
     VAL, TOO_LARGE, "at most 4 files"},
    /* The same name in attachments and files, either way round. */
    {"{'code': 'x', 'attachments': [{'filename': 'a.txt', 'content_base_64': 'QUJD'}], 'files': "
     "{'a.txt': 'QUJD'}}",
     VAL, INVAL, "`a.txt` is given twice"},
    {"{'code': 'x', 'files': {'a.txt': 'QUJD'}, 'attachments': [{'filename': 'a.txt', "
     "'content_base_64': 'QUJD'}]}",
     VAL, INVAL, "`a.txt` is given twice"},
    /* A later error still releases what earlier fields allocated. */
    {"{'code': 'x', 'stdin_data': 'in', 'api_key': 'k', 'files': {'a': 'QUJD'}, 'return_files': "
     "['o'], 'timeout': 1, 'allow_network': true, 'bogus': 1}",
     VAL, INVAL, "unknown field `bogus`"},
    {"{'script': 'def main(): pass', 'stdin_data': 'in', 'api_key': 'k', 'attachments': "
     "[{'filename': 'a', 'content_base_64': 'QUJD'}], 'return_files': ['o', 'o']}",
     VAL, INVAL, "twice"},
};

/* Refusals of `POST /v1/execute` only. */
static const struct bad v1_bad[] = {
    /* The compat spellings are unknown here. */
    {"{'script': 'x'}", VAL, INVAL, "unknown field `script`"},
    {"{'code': 'x', 'stdin_data': 'a'}", VAL, INVAL, "unknown field `stdin_data`"},
    {"{'code': 'x', 'api_key': 'k'}", VAL, INVAL, "unknown field `api_key`"},
    {"{'code': 'x', 'allow_network': true}", VAL, INVAL, "unknown field `allow_network`"},
    {"{'code': 'x', 'attachments': []}", VAL, INVAL, "unknown field `attachments`"},
    {"{'main': true}", VAL, INVAL, "missing `code`"},
    /* Scalars. */
    {"{'code': 'x', 'stdin': 5}", VAL, INVAL, "`stdin` must be a string"},
    {"{'code': 'x', 'stdin': ['a']}", VAL, INVAL, "`stdin` must be a string"},
    {"{'code': 'x', 'stdin': '123456789012345678901234567890123'}", VAL, TOO_LARGE,
     "over 32 bytes"},
    {"{'code': 'x', 'main': 'yes'}", VAL, INVAL, "`main` must be true or false"},
    {"{'code': 'x', 'main': 1}", VAL, INVAL, "`main` must be true or false"},
    {"{'code': 'x', 'main': null}", VAL, INVAL, "`main` must be true or false"},
    {"{'code': 'x', 'network': 1}", VAL, INVAL, "`network` must be true or false"},
    {"{'code': 'x', 'network': 'false'}", VAL, INVAL, "`network` must be true or false"},
    {"{'code': 'x', 'memory_mb': 15}", VAL, INVAL, "`memory_mb` must be a whole number"},
    {"{'code': 'x', 'memory_mb': 0}", VAL, INVAL, "`memory_mb`"},
    {"{'code': 'x', 'memory_mb': -1}", VAL, INVAL, "`memory_mb`"},
    {"{'code': 'x', 'memory_mb': -9223372036854775808}", VAL, INVAL, "`memory_mb`"},
    {"{'code': 'x', 'memory_mb': 16.5}", VAL, INVAL, "`memory_mb`"},
    {"{'code': 'x', 'memory_mb': 64.0}", VAL, INVAL, "`memory_mb`"},
    {"{'code': 'x', 'memory_mb': 1e2}", VAL, INVAL, "`memory_mb`"},
    {"{'code': 'x', 'memory_mb': '64'}", VAL, INVAL, "`memory_mb`"},
    {"{'code': 'x', 'memory_mb': true}", VAL, INVAL, "`memory_mb`"},
    {"{'code': 'x', 'memory_mb': null}", VAL, INVAL, "`memory_mb`"},
    {"{'code': 'x', 'memory_mb': 65537}", VAL, INVAL, "`memory_mb`"},
    {"{'code': 'x', 'memory_mb': 9223372036854775807}", VAL, INVAL, "`memory_mb`"},
    /* files. */
    {"{'code': 'x', 'files': {}}", VAL, INVAL, "`files` must be an array"},
    {"{'code': 'x', 'files': {'a': 'QUJD'}}", VAL, INVAL, "`files` must be an array"},
    {"{'code': 'x', 'files': 'a'}", VAL, INVAL, "`files` must be an array"},
    {"{'code': 'x', 'files': null}", VAL, INVAL, "`files` must be an array"},
    {"{'code': 'x', 'files': [5]}", VAL, INVAL, "`files[0]` must be an object"},
    {"{'code': 'x', 'files': [{}]}", VAL, INVAL, "`files[0]` must be an object"},
    {"{'code': 'x', 'files': [{'content_base64': 'QUJD'}]}", VAL, INVAL, "`files[0]`"},
    {"{'code': 'x', 'files': [{'filename': 'a', 'content_base64': 'QUJD'}]}", VAL, INVAL,
     "`files[0]`"},
    {"{'code': 'x', 'files': [{'name': 5, 'content_base64': 'QUJD'}]}", VAL, INVAL, "`files[0]`"},
    {"{'code': 'x', 'files': [{'name': 'a\\u0000b', 'content_base64': 'QUJD'}]}", ANY, INVAL, NULL},
    {"{'code': 'x', 'files': [{'name': 'a', 'content_base64': 'QUJD'}, 'b']}", VAL, INVAL,
     "`files[1]`"},
    {"{'code': 'x', 'files': [{'name': 'a'}]}", VAL, INVAL,
     "`files[0].content_base64` must be a base64 string"},
    {"{'code': 'x', 'files': [{'name': 'a', 'content_base_64': 'QUJD'}]}", VAL, INVAL,
     "must be a base64 string"},
    {"{'code': 'x', 'files': [{'name': 'a', 'content_base64': false}]}", VAL, INVAL,
     "must be a base64 string"},
    {"{'code': 'x', 'files': [{'name': 'a', 'content_base64': 'QUJ'}]}", VAL, INVAL,
     "`files[0].content_base64` is not valid base64"},
    {"{'code': 'x', 'files': [{'name': 'a', 'content_base64': 'QUJD\\r\\n'}]}", VAL, INVAL,
     "not valid base64"},
    {"{'code': 'x', 'files': [{'name': 'a', 'content_base64': 'QUJ-'}]}", VAL, INVAL,
     "not valid base64"},
    {"{'code': 'x', 'files': [{'name': 'a', 'content_base64': 'QQ'}]}", VAL, INVAL,
     "not valid base64"},
    {"{'code': 'x', 'files': [{'name': '', 'content_base64': 'QUJD'}]}", VAL, INVAL,
     "invalid file name"},
    {"{'code': 'x', 'files': [{'name': '.', 'content_base64': 'QUJD'}]}", VAL, INVAL,
     "invalid file name"},
    {"{'code': 'x', 'files': [{'name': '..', 'content_base64': 'QUJD'}]}", VAL, INVAL,
     "invalid file name"},
    {"{'code': 'x', 'files': [{'name': 'a/b', 'content_base64': 'QUJD'}]}", VAL, INVAL,
     "invalid file name"},
    {"{'code': 'x', 'files': [{'name': '/abs', 'content_base64': 'QUJD'}]}", VAL, INVAL,
     "invalid file name"},
    {"{'code': 'x', 'files': [{'name': 'a', 'content_base64': 'QUJD'}, {'name': 'a', "
     "'content_base64': 'QUJD'}]}",
     VAL, INVAL, "`a` is given twice"},
    {"{'code': 'x', 'files': [{'name': 'a', 'content_base64': 'QUFBQUFBQUFBQUFBQUFBQUE='}]}", VAL,
     TOO_LARGE, "larger than 16 bytes"},
    {"{'code': 'x', 'files': [{'name': 'a', 'content_base64': 'QUJD'}, {'name': 'b', "
     "'content_base64': 'QUJD'}, {'name': 'c', 'content_base64': 'QUJD'}, {'name': 'd', "
     "'content_base64': 'QUJD'}, {'name': 'e', 'content_base64': 'QUJD'}]}",
     VAL, TOO_LARGE, "at most 4 files"},
    {"{'code': 'x', 'stdin': 'in', 'files': [{'name': 'a', 'content_base64': 'QUJD'}], "
     "'return_files': ['o'], 'main': true, 'timeout': 2, 'memory_mb': 64, 'network': true, "
     "'bogus': 1}",
     VAL, INVAL, "unknown field `bogus`"},
};

START_TEST(test_common_errors_compat)
{
    expect_error(COMPAT, common_bad[_i].body, common_bad[_i].etype, common_bad[_i].code,
                 common_bad[_i].msg);
}
END_TEST

START_TEST(test_common_errors_v1)
{
    expect_error(V1, common_bad[_i].body, common_bad[_i].etype, common_bad[_i].code,
                 common_bad[_i].msg);
}
END_TEST

START_TEST(test_compat_errors)
{
    expect_error(COMPAT, compat_bad[_i].body, compat_bad[_i].etype, compat_bad[_i].code,
                 compat_bad[_i].msg);
}
END_TEST

START_TEST(test_v1_errors)
{
    expect_error(V1, v1_bad[_i].body, v1_bad[_i].etype, v1_bad[_i].code, v1_bad[_i].msg);
}
END_TEST

START_TEST(test_compat_full)
{
    struct pbx_http_request r;

    parse_ok(COMPAT,
             "{'code': 'print(1)', 'stdin_data': 'hi', 'attachments': [{'filename': 'a.txt', "
             "'content_base_64': 'QUJD'}], 'files': {'b.bin': 'AAE='}, 'return_files': "
             "['out.txt', 'a.txt'], 'timeout': 2.5, 'allow_network': true, 'api_key': 'k-123'}",
             &r);
    ck_assert_str_eq(r.code, "print(1)");
    ck_assert_uint_eq(r.code_len, 8);
    ck_assert_uint_eq(r.code_chars, 8);
    ck_assert(!r.main_mode);
    ck_assert_str_eq(r.stdin_data, "hi");
    ck_assert_uint_eq(r.stdin_len, 2);
    ck_assert_uint_eq(r.nfiles, 2);
    ck_assert_str_eq(r.files[0].name, "a.txt");
    ck_assert_uint_eq(r.files[0].size, 3);
    ck_assert_mem_eq(r.files[0].data, "ABC", 3);
    ck_assert_str_eq(r.files[1].name, "b.bin");
    ck_assert_uint_eq(r.files[1].size, 2);
    ck_assert_mem_eq(r.files[1].data, "\0\1", 2);
    ck_assert_uint_eq(r.nreturn, 2);
    ck_assert_str_eq(r.return_files[0], "out.txt");
    ck_assert_str_eq(r.return_files[1], "a.txt");
    ck_assert(r.has_timeout);
    ck_assert(r.timeout_s == 2.5);
    ck_assert(!r.has_memory);
    ck_assert(r.network);
    ck_assert_str_eq(r.api_key, "k-123");
    pbx__request_release(&r);
    assert_cleared(&r);
    /* Releasing twice is harmless: the request was cleared. */
    pbx__request_release(&r);
}
END_TEST

START_TEST(test_compat_minimal)
{
    struct pbx_http_request r;

    /* Every optional field absent: nothing set, nothing allocated. */
    parse_ok(COMPAT, "{'code': 'x = 1'}", &r);
    ck_assert_str_eq(r.code, "x = 1");
    ck_assert_uint_eq(r.code_len, 5);
    ck_assert_ptr_null(r.stdin_data);
    ck_assert_uint_eq(r.stdin_len, 0);
    ck_assert_uint_eq(r.nfiles, 0);
    ck_assert_uint_eq(r.nreturn, 0);
    ck_assert_ptr_null(r.api_key);
    ck_assert(!r.has_timeout);
    ck_assert(!r.has_memory);
    ck_assert(!r.network);
    ck_assert(!r.main_mode);
    pbx__request_release(&r);

    /* Null api_key and stdin_data mean absent; empty collections are fine. */
    parse_ok(COMPAT,
             "{'api_key': null, 'stdin_data': null, 'attachments': [], 'files': {}, "
             "'return_files': [], 'allow_network': false, 'code': 'pass'}",
             &r);
    ck_assert_str_eq(r.code, "pass");
    ck_assert_ptr_null(r.api_key);
    ck_assert_ptr_null(r.stdin_data);
    ck_assert_uint_eq(r.nfiles, 0);
    ck_assert_uint_eq(r.nreturn, 0);
    ck_assert(!r.network);
    pbx__request_release(&r);

    /* An empty stdin and an empty key are given, not absent. */
    parse_ok(COMPAT, "{'code': 'pass', 'stdin_data': '', 'api_key': ''}", &r);
    ck_assert_ptr_nonnull(r.stdin_data);
    ck_assert_str_eq(r.stdin_data, "");
    ck_assert_uint_eq(r.stdin_len, 0);
    ck_assert_ptr_nonnull(r.api_key);
    ck_assert_str_eq(r.api_key, "");
    pbx__request_release(&r);
}
END_TEST

START_TEST(test_compat_script)
{
    struct pbx_http_request r;

    parse_ok(COMPAT, "{'script': 'def main():\\n    return 1\\n'}", &r);
    ck_assert(r.main_mode);
    ck_assert_str_eq(r.code, "def main():\n    return 1\n");
    ck_assert_uint_eq(r.code_len, strlen("def main():\n    return 1\n"));
    pbx__request_release(&r);

    parse_ok(COMPAT, "{'code': 'print(1)'}", &r);
    ck_assert(!r.main_mode);
    pbx__request_release(&r);
}
END_TEST

START_TEST(test_compat_limits_exact)
{
    struct pbx_http_request r;

    /* Each cap reached exactly is accepted. */
    parse_ok(COMPAT,
             "{'code': 'x', 'stdin_data': '12345678901234567890123456789012', 'files': {'a': "
             "'QUFBQUFBQUFBQUFBQUFBQQ==', 'b': '', 'c': 'QQ==', 'd': 'QUI='}, 'return_files': "
             "['a', 'b', 'c']}",
             &r);
    ck_assert_uint_eq(r.stdin_len, 32);
    ck_assert_uint_eq(r.nfiles, 4);
    ck_assert_uint_eq(r.files[0].size, 16);
    ck_assert_mem_eq(r.files[0].data, "AAAAAAAAAAAAAAAA", 16);
    /* An empty file is a file. */
    ck_assert_str_eq(r.files[1].name, "b");
    ck_assert_uint_eq(r.files[1].size, 0);
    ck_assert_uint_eq(r.files[2].size, 1);
    ck_assert_mem_eq(r.files[2].data, "A", 1);
    ck_assert_uint_eq(r.files[3].size, 2);
    ck_assert_mem_eq(r.files[3].data, "AB", 2);
    ck_assert_uint_eq(r.nreturn, 3);
    pbx__request_release(&r);

    /* Attachments and files together, up to the cap. */
    parse_ok(COMPAT,
             "{'code': 'x', 'attachments': [{'filename': 'a', 'content_base_64': 'QUJD'}, "
             "{'filename': 'b', 'content_base_64': 'QUJD', 'extra': 1}], 'files': {'c': 'QUJD', "
             "'d': 'QUJD'}}",
             &r);
    ck_assert_uint_eq(r.nfiles, 4);
    ck_assert_str_eq(r.files[0].name, "a");
    ck_assert_str_eq(r.files[3].name, "d");
    pbx__request_release(&r);

    /* A name may repeat between input files and returned files. */
    parse_ok(COMPAT, "{'code': 'x', 'files': {'data.csv': 'QUJD'}, 'return_files': ['data.csv']}",
             &r);
    ck_assert_str_eq(r.files[0].name, "data.csv");
    ck_assert_str_eq(r.return_files[0], "data.csv");
    pbx__request_release(&r);
}
END_TEST

/* A timeout is kept in seconds as given; pbx_limits_set_timeout() rounds it (test_limits.c). */
START_TEST(test_timeouts)
{
    static const struct {
        const char *body;
        double seconds;
    } ok[] = {
        {"{'code': 'x', 'timeout': 5}", 5},           {"{'code': 'x', 'timeout': 2.5}", 2.5},
        {"{'code': 'x', 'timeout': 3600}", 3600},     {"{'code': 'x', 'timeout': 3600.0}", 3600},
        {"{'code': 'x', 'timeout': 1e3}", 1000},      {"{'code': 'x', 'timeout': 0.5}", 0.5},
        {"{'code': 'x', 'timeout': 0.0001}", 0.0001}, {"{'code': 'x', 'timeout': 1e-300}", 1e-300},
        {"{'code': 'x', 'timeout': 1.0005}", 1.0005},
    };
    struct pbx_http_request r;

    for (size_t i = 0; i < ARRAY_SIZE(ok); i++) {
        for (int d = COMPAT; d <= V1; d++) {
            parse_ok((enum dialect)d, ok[i].body, &r);
            ck_assert(r.has_timeout);
            ck_assert_msg(r.timeout_s == ok[i].seconds, "%s: %.17g s, wanted %.17g", ok[i].body,
                          r.timeout_s, ok[i].seconds);
            pbx__request_release(&r);
        }
    }
}
END_TEST

START_TEST(test_v1_full)
{
    struct pbx_http_request r;

    parse_ok(V1,
             "{'code': 'def main():\\n    return 1', 'stdin': 'a\\tb', 'files': [{'name': "
             "'x.csv', 'content_base64': 'QUJD'}, {'name': 'e', 'content_base64': ''}], "
             "'return_files': ['y.png'], 'main': true, 'timeout': 1, 'memory_mb': 64, "
             "'network': false}",
             &r);
    ck_assert_str_eq(r.code, "def main():\n    return 1");
    ck_assert(r.main_mode);
    ck_assert_uint_eq(r.stdin_len, 3);
    ck_assert_str_eq(r.stdin_data, "a\tb");
    ck_assert_uint_eq(r.nfiles, 2);
    ck_assert_str_eq(r.files[0].name, "x.csv");
    ck_assert_uint_eq(r.files[0].size, 3);
    ck_assert_mem_eq(r.files[0].data, "ABC", 3);
    ck_assert_uint_eq(r.files[1].size, 0);
    ck_assert_uint_eq(r.nreturn, 1);
    ck_assert_str_eq(r.return_files[0], "y.png");
    ck_assert(r.has_timeout);
    ck_assert(r.timeout_s == 1);
    ck_assert(r.has_memory);
    ck_assert_uint_eq(r.memory_mb, 64);
    ck_assert(!r.network);
    ck_assert_ptr_null(r.api_key);
    pbx__request_release(&r);

    parse_ok(V1, "{'code': 'x', 'network': true, 'main': false, 'stdin': null}", &r);
    ck_assert(r.network);
    ck_assert(!r.main_mode);
    ck_assert_ptr_null(r.stdin_data);
    ck_assert(!r.has_timeout);
    ck_assert(!r.has_memory);
    pbx__request_release(&r);

    /* memory_mb at both ends of its range. */
    parse_ok(V1, "{'code': 'x', 'memory_mb': 16}", &r);
    ck_assert(r.has_memory);
    ck_assert_uint_eq(r.memory_mb, 16);
    pbx__request_release(&r);
    parse_ok(V1, "{'code': 'x', 'memory_mb': 65536}", &r);
    ck_assert_uint_eq(r.memory_mb, 65536);
    pbx__request_release(&r);

    /* stdin exactly at the cap. */
    parse_ok(V1, "{'code': 'x', 'stdin': '12345678901234567890123456789012'}", &r);
    ck_assert_uint_eq(r.stdin_len, 32);
    pbx__request_release(&r);
}
END_TEST

/*
 * stdin with a NUL: refused, or kept whole (stdin_len counts every byte).
 * Never cut short, and never let through past the cap after a NUL.
 */
START_TEST(test_stdin_nul)
{
    static const char *const bodies[][2] = {
        {"{'code': 'x', 'stdin_data': 'a\\u0000b'}",
         "{'code': 'x', 'stdin_data': '\\u0000123456789012345678901234567890123'}"},
        {"{'code': 'x', 'stdin': 'a\\u0000b'}",
         "{'code': 'x', 'stdin': '\\u0000123456789012345678901234567890123'}"},
    };

    for (int d = COMPAT; d <= V1; d++) {
        char *body = json(bodies[d][0]);
        struct pbx_http_request r;
        struct pbx_error *err = NULL;
        const char *etype = NULL;
        int rc;

        rc = parse((enum dialect)d, body, strlen(body), &r, &etype, &err);
        if (rc == 0) {
            ck_assert_msg(r.stdin_len == 3, "%s: stdin of %zu bytes", body, r.stdin_len);
            ck_assert_mem_eq(r.stdin_data, "a\0b", 3);
            pbx__request_release(&r);
        } else {
            ck_assert_int_eq(err->code, PBX_E_INVAL);
            pbx_error_free(&err);
        }
        free(body);

        body = json(bodies[d][1]);
        rc = parse((enum dialect)d, body, strlen(body), &r, &etype, &err);
        ck_assert_msg(rc < 0, "%s: 34 bytes passed a cap of 32 (stdin_len %zu)", body, r.stdin_len);
        ck_assert(err->code == PBX_E_INVAL || err->code == PBX_E_TOO_LARGE);
        assert_cleared(&r);
        pbx_error_free(&err);
        free(body);
    }
}
END_TEST

START_TEST(test_code_chars)
{
    static const struct {
        const char *body;
        size_t bytes;
        size_t chars;
    } cases[] = {
        {"{'code': 'ascii'}", 5, 5},
        {"{'code': '\\u00e9\\u00e9\\u00e9'}", 6, 3},
        {"{'code': '\xc3\xa9\xc3\xa9\xc3\xa9'}", 6, 3},
        {"{'code': '\\u20ac'}", 3, 1},
        {"{'code': '\\ud83d\\ude00'}", 4, 1},
        {"{'code': '\xf0\x9f\x98\x80'}", 4, 1},
        {"{'code': 'a\\u00e9\\u4e2d\\ud83d\\ude00'}", 10, 4},
        {"{'code': 's = \\u0027\\u00e9\\u0027\\n'}", 9, 8},
    };
    struct pbx_http_request r;

    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        for (int d = COMPAT; d <= V1; d++) {
            parse_ok((enum dialect)d, cases[i].body, &r);
            ck_assert_msg(r.code_len == cases[i].bytes, "%s: %zu bytes", cases[i].body, r.code_len);
            ck_assert_msg(r.code_chars == cases[i].chars, "%s: %zu characters, wanted %zu",
                          cases[i].body, r.code_chars, cases[i].chars);
            ck_assert_uint_eq(strlen(r.code), r.code_len);
            pbx__request_release(&r);
        }
    }
    /* script counts the same way. */
    parse_ok(COMPAT, "{'script': '\\u00e9\\u00e9\\u00e9'}", &r);
    ck_assert_uint_eq(r.code_chars, 3);
    pbx__request_release(&r);
}
END_TEST

/* Names of 255 bytes are the longest; 256 are refused everywhere a name goes. */
START_TEST(test_name_length)
{
    char *n255 = name_of(255);
    char *n256 = name_of(256);
    struct pbx_http_request r;
    char *body;

    body = xasprintf("{'code': 'x', 'files': {'%s': 'QUJD'}, 'return_files': ['%s']}", n255, n255);
    parse_ok(COMPAT, body, &r);
    ck_assert_uint_eq(strlen(r.files[0].name), 255);
    ck_assert_uint_eq(strlen(r.return_files[0]), 255);
    pbx__request_release(&r);
    free(body);

    body = xasprintf("{'code': 'x', 'files': [{'name': '%s', 'content_base64': 'QUJD'}]}", n255);
    parse_ok(V1, body, &r);
    ck_assert_uint_eq(strlen(r.files[0].name), 255);
    pbx__request_release(&r);
    free(body);

    body = xasprintf("{'code': 'x', 'files': {'%s': 'QUJD'}}", n256);
    expect_error(COMPAT, body, VAL, INVAL, "invalid file name");
    free(body);
    body = xasprintf(
        "{'code': 'x', 'attachments': [{'filename': '%s', 'content_base_64': 'QUJD'}]}", n256);
    expect_error(COMPAT, body, VAL, INVAL, "invalid file name");
    free(body);
    body = xasprintf("{'code': 'x', 'files': [{'name': '%s', 'content_base64': 'QUJD'}]}", n256);
    expect_error(V1, body, VAL, INVAL, "invalid file name");
    free(body);
    for (int d = COMPAT; d <= V1; d++) {
        body = xasprintf("{'code': 'x', 'return_files': ['%s']}", n256);
        expect_error((enum dialect)d, body, VAL, INVAL, "not a valid file name");
        free(body);
    }
    free(n255);
    free(n256);
}
END_TEST

/* Files just over the cap, and far over it, in every place a file goes. */
START_TEST(test_file_sizes)
{
    static const size_t sizes[] = {15, 16, 17, 18, 19, 20, 64, 4096};
    struct pbx_http_request r;

    for (size_t i = 0; i < ARRAY_SIZE(sizes); i++) {
        char *b64 = b64_of('z', sizes[i]);
        char *compat_files = xasprintf("{'code': 'x', 'files': {'f': '%s'}}", b64);
        char *compat_att = xasprintf(
            "{'code': 'x', 'attachments': [{'filename': 'f', 'content_base_64': '%s'}]}", b64);
        char *v1 =
            xasprintf("{'code': 'x', 'files': [{'name': 'f', 'content_base64': '%s'}]}", b64);

        if (sizes[i] <= caps.max_file_bytes) {
            parse_ok(COMPAT, compat_files, &r);
            ck_assert_uint_eq(r.files[0].size, sizes[i]);
            pbx__request_release(&r);
            parse_ok(COMPAT, compat_att, &r);
            ck_assert_uint_eq(r.files[0].size, sizes[i]);
            pbx__request_release(&r);
            parse_ok(V1, v1, &r);
            ck_assert_uint_eq(r.files[0].size, sizes[i]);
            pbx__request_release(&r);
        } else {
            expect_error(COMPAT, compat_files, VAL, TOO_LARGE, "larger than 16 bytes");
            expect_error(COMPAT, compat_att, VAL, TOO_LARGE, "larger than 16 bytes");
            expect_error(V1, v1, VAL, TOO_LARGE, "larger than 16 bytes");
        }
        free(b64);
        free(compat_files);
        free(compat_att);
        free(v1);
    }
}
END_TEST

/* The parser reads `len` bytes, not up to a NUL, and nothing past them. */
START_TEST(test_body_length)
{
    static const char text[] = "{\"code\": \"x\"}";
    size_t len = sizeof(text) - 1;
    char *exact = xmalloc(len);
    struct pbx_http_request r;
    struct pbx_error *err = NULL;
    const char *etype = NULL;

    /* Exactly `len` bytes, not NUL-terminated: ASan sees any over-read. */
    memcpy(exact, text, len);
    ck_assert_int_eq(pbx__request_json_parse_compat(exact, len, &caps, &r, &etype, &err), 0);
    ck_assert_str_eq(r.code, "x");
    pbx__request_release(&r);
    ck_assert_int_eq(pbx__request_json_parse_v1(exact, len, &caps, &r, &etype, &err), 0);
    pbx__request_release(&r);
    ck_assert_ptr_null(err);
    free(exact);

    /* Bytes after `len` are not part of the body. */
    ck_assert_int_eq(
        pbx__request_json_parse_v1("{\"code\": \"x\"} junk", len, &caps, &r, &etype, &err), 0);
    pbx__request_release(&r);
    /* A cut body is malformed; a zero length is empty whatever follows. */
    expect_error_raw(V1, text, len - 1, INV, INVAL, "malformed JSON");
    expect_error_raw(COMPAT, text, 0, INV, INVAL, "empty");
    /* A raw NUL byte inside or after the object. */
    expect_error_raw(COMPAT, "{\"code\": \"x\"}\0", len + 1, INV, INVAL, NULL);
    expect_error_raw(V1, "{\"code\": \"a\0b\"}", 15, INV, INVAL, NULL);
}
END_TEST

START_TEST(test_base64_valid)
{
    static const struct {
        const char *text;
        const char *data;
        size_t size;
    } ok[] = {
        {"", "", 0},
        {"QQ==", "A", 1},
        {"QUI=", "AB", 2},
        {"QUJD", "ABC", 3},
        {"QUJDRA==", "ABCD", 4},
        {"AAE=", "\0\1", 2},
        {"+/+/", "\xfb\xff\xbf", 3},
        {"////", "\xff\xff\xff", 3},
    };

    for (size_t i = 0; i < ARRAY_SIZE(ok); i++) {
        char *out = NULL;
        size_t outlen = 12345;

        ck_assert_msg(pbx__request_base64(ok[i].text, strlen(ok[i].text), 16, &out, &outlen) == 0,
                      "`%s` refused", ok[i].text);
        ck_assert_ptr_nonnull(out);
        ck_assert_uint_eq(outlen, ok[i].size);
        if (ok[i].size > 0)
            ck_assert_mem_eq(out, ok[i].data, ok[i].size);
        free(out);
    }
}
END_TEST

/*
 * Only the standard alphabet, `=` padding where it belongs, canonical final
 * bits.  The non-ASCII entries fail today: sodium_base642bin() of libsodium
 * 1.0.18 decodes every byte >= 0x80 as `/` (value 63), so "QUJ\xc3" yields
 * "AB\x7f" and "\xc3\xa9\xc3\xa9" (a JSON "éé") yields ff ff ff.
 * pbx__request_base64() has to check the alphabet itself.
 */
START_TEST(test_base64_strict)
{
    static const char *const bad[] = {
        "Q",        "QQ",      "QQ=",      "QUJ",
        "QUJDQ",    "QUJDQQ",  "QUJDQQ=",  "Q===",
        "====",     "=QQ=",    "QU=D",     "QQ==QUJD",
        "QUJD====", "QUJD=",   "QU JD",    " QUJD",
        "QUJD ",    "QUJD\n",  "QU\nJD",   "QUJD\r\n",
        "QU\tJ",    "QUJ-",    "QUJ_",     "QU*D",
        "QU.D",     "QUJ\xc3", "AB==",     "QR==",
        "QUJ\x80",  "QUK=",    "QUJDRB==", "\xff\xff\xff\xff",
    };

    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        char *out = NULL;
        size_t outlen = 0;

        ck_assert_msg(pbx__request_base64(bad[i], strlen(bad[i]), 1024, &out, &outlen) == -1,
                      "`%s` accepted", bad[i]);
        ck_assert_ptr_null(out);
    }
    /* An embedded NUL is not base64 either. */
    {
        char *out = NULL;
        size_t outlen = 0;

        ck_assert_int_eq(pbx__request_base64("QU\0D", 4, 1024, &out, &outlen), -1);
        ck_assert_int_eq(pbx__request_base64("QUJD\0\0\0\0", 8, 1024, &out, &outlen), -1);
        ck_assert_ptr_null(out);
    }
}
END_TEST

START_TEST(test_base64_too_large)
{
    char *out = NULL;
    size_t outlen = 0;
    char *big;

    /* Exactly `max` decoded bytes fit; one more is -2, whatever the padding. */
    ck_assert_int_eq(pbx__request_base64("QUJD", 4, 3, &out, &outlen), 0);
    free(out);
    out = NULL;
    ck_assert_int_eq(pbx__request_base64("QUJD", 4, 2, &out, &outlen), -2);
    ck_assert_int_eq(pbx__request_base64("QUI=", 4, 2, &out, &outlen), 0);
    free(out);
    out = NULL;
    ck_assert_int_eq(pbx__request_base64("QUI=", 4, 1, &out, &outlen), -2);
    ck_assert_int_eq(pbx__request_base64("QQ==", 4, 0, &out, &outlen), -2);
    ck_assert_int_eq(pbx__request_base64("", 0, 0, &out, &outlen), 0);
    ck_assert_uint_eq(outlen, 0);
    free(out);
    out = NULL;
    ck_assert_int_eq(pbx__request_base64("QUJDRA==", 8, 3, &out, &outlen), -2);
    ck_assert_int_eq(pbx__request_base64("QUJDRA==", 8, 4, &out, &outlen), 0);
    free(out);
    out = NULL;

    /* Far over: every max below the decoded size is -2. */
    big = b64_of('q', 3000);
    for (size_t max = 0; max < 3000; max += 7) {
        ck_assert_msg(pbx__request_base64(big, strlen(big), max, &out, &outlen) == -2,
                      "3000 bytes with max %zu", max);
        ck_assert_ptr_null(out);
    }
    ck_assert_int_eq(pbx__request_base64(big, strlen(big), 2999, &out, &outlen), -2);
    ck_assert_int_eq(pbx__request_base64(big, strlen(big), 3000, &out, &outlen), 0);
    ck_assert_uint_eq(outlen, 3000);
    free(out);
    free(big);
}
END_TEST

/*
 * An unbounded `max` (SIZE_MAX, and anything within 2 of it) refuses every
 * non-empty input as too large: `max + 2` and `max + 3` in the early size
 * check of pbx__request_base64() wrap around to small numbers.
 */
START_TEST(test_base64_max_wraps)
{
    static const size_t maxes[] = {SIZE_MAX, SIZE_MAX - 1, SIZE_MAX - 2, SIZE_MAX / 2};

    for (size_t i = 0; i < ARRAY_SIZE(maxes); i++) {
        char *out = NULL;
        size_t outlen = 0;
        int rc = pbx__request_base64("QUJD", 4, maxes[i], &out, &outlen);

        ck_assert_msg(rc == 0, "`QUJD` with max SIZE_MAX - %zu: %d", SIZE_MAX - maxes[i], rc);
        ck_assert_uint_eq(outlen, 3);
        ck_assert_mem_eq(out, "ABC", 3);
        free(out);
    }
}
END_TEST

START_TEST(test_add_file)
{
    struct pbx_http_request r;
    struct pbx_error *err = NULL;
    char data[] = "hello";
    char *n256 = name_of(256);

    memset(&r, 0, sizeof(r));
    ck_assert_int_eq(pbx__request_add_file(&r, &caps, "a", data, 5, &err), 0);
    ck_assert_ptr_null(err);
    /* The name and the data are copied. */
    data[0] = 'J';
    ck_assert_mem_eq(r.files[0].data, "hello", 5);
    ck_assert_ptr_ne(r.files[0].data, data);
    ck_assert_uint_eq(r.files[0].size, 5);
    ck_assert_int_eq(pbx__request_add_file(&r, &caps, "empty", "", 0, &err), 0);
    ck_assert_uint_eq(r.files[1].size, 0);
    ck_assert_int_eq(pbx__request_add_file(&r, &caps, "full", "0123456789abcdef", 16, &err), 0);

    /* Refusals leave the request as it was. */
    ck_assert_int_lt(pbx__request_add_file(&r, &caps, "a", "x", 1, &err), 0);
    ck_assert_int_eq(err->code, PBX_E_INVAL);
    pbx_error_free(&err);
    ck_assert_int_lt(pbx__request_add_file(&r, &caps, "big", "0123456789abcdefg", 17, &err), 0);
    ck_assert_int_eq(err->code, PBX_E_TOO_LARGE);
    pbx_error_free(&err);
    ck_assert_int_lt(pbx__request_add_file(&r, &caps, "..", "x", 1, &err), 0);
    ck_assert_int_eq(err->code, PBX_E_INVAL);
    pbx_error_free(&err);
    ck_assert_int_lt(pbx__request_add_file(&r, &caps, "", "x", 1, &err), 0);
    ck_assert_int_eq(err->code, PBX_E_INVAL);
    pbx_error_free(&err);
    ck_assert_int_lt(pbx__request_add_file(&r, &caps, "a/b", "x", 1, &err), 0);
    ck_assert_int_eq(err->code, PBX_E_INVAL);
    pbx_error_free(&err);
    ck_assert_int_lt(pbx__request_add_file(&r, &caps, n256, "x", 1, &err), 0);
    ck_assert_int_eq(err->code, PBX_E_INVAL);
    pbx_error_free(&err);
    ck_assert_uint_eq(r.nfiles, 3);

    ck_assert_int_eq(pbx__request_add_file(&r, &caps, "d", "x", 1, &err), 0);
    ck_assert_int_lt(pbx__request_add_file(&r, &caps, "e", "x", 1, &err), 0);
    ck_assert_int_eq(err->code, PBX_E_TOO_LARGE);
    pbx_error_free(&err);
    ck_assert_uint_eq(r.nfiles, 4);
    /* A NULL err drops the error. */
    ck_assert_int_lt(pbx__request_add_file(&r, &caps, "f", "x", 1, NULL), 0);
    pbx__request_release(&r);
    assert_cleared(&r);
    free(n256);
}
END_TEST

/* ---- multipart/form-data bodies, through the form reader ---- */

/* One part of a form: a text field (filename NULL) or a file. */
struct part {
    const char *name;     /* its field name (NULL: none in its headers) */
    const char *filename; /* NULL for a text field */
    const char *data;     /* its bytes */
    size_t len;           /* their count; 0 with data: strlen(data) */
};

#define PARTS(...) \
    ((const struct part[]){__VA_ARGS__}), ARRAY_SIZE(((const struct part[]){__VA_ARGS__}))

/*
 * Read `n` parts as libmicrohttpd hands them over, in chunks of at most
 * `chunk` bytes (each with its offset in its part), into *r.
 */
static int form_parse(const struct part *parts, size_t n, size_t chunk, struct pbx_http_request *r,
                      struct pbx_error **err)
{
    struct pbx_request_form f;
    int rc;

    pbx__request_form_init(&f, &caps);
    for (size_t i = 0; i < n; i++) {
        const struct part *p = &parts[i];
        size_t len = p->len ? p->len : (p->data ? strlen(p->data) : 0);
        size_t off = 0;

        do {
            size_t k = len - off < chunk ? len - off : chunk;

            pbx__request_form_data(&f, p->name, p->filename, p->data ? p->data + off : NULL, off,
                                   k);
            off += k;
        } while (off < len);
    }
    memset(r, 0xa5, sizeof(*r));
    rc = pbx__request_form_finish(&f, r, err);
    pbx__request_form_release(&f);
    return rc;
}

/* The parts, whole and byte by byte, must be refused with a message holding `msg`. */
static void form_error(const struct part *parts, size_t n, const char *msg)
{
    static const size_t chunks[] = {SIZE_MAX, 1};

    for (size_t c = 0; c < ARRAY_SIZE(chunks); c++) {
        struct pbx_http_request r;
        struct pbx_error *err = NULL;

        ck_assert_msg(form_parse(parts, n, chunks[c], &r, &err) < 0, "accepted; wanted `%s`", msg);
        ck_assert_ptr_nonnull(err);
        ck_assert_msg(strstr(err->msg, msg) != NULL, "message `%s` lacks `%s`", err->msg, msg);
        pbx_error_free(&err);
    }
}

START_TEST(test_form_full)
{
    static const size_t chunks[] = {SIZE_MAX, 1, 3};
    struct pbx_http_request r;
    struct pbx_error *err = NULL;

    for (size_t c = 0; c < ARRAY_SIZE(chunks); c++) {
        ck_assert_int_eq(
            form_parse(PARTS({"code", NULL, "def main():\n    return 1", 0},
                             {"stdin", NULL, "a\0b", 3}, {"main", NULL, "on", 0},
                             {"timeout", NULL, "2.5", 0}, {"memory_mb", NULL, "64", 0},
                             {"network", NULL, "0", 0}, {"return_files", NULL, "y.png", 0},
                             {"return_files", NULL, "z.txt", 0}, {"files", "x.csv", "A,B\n", 0},
                             {"anything", "bin", "\0\1\2", 3}),
                       chunks[c], &r, &err),
            0);
        ck_assert_ptr_null(err);
        ck_assert_str_eq(r.code, "def main():\n    return 1");
        ck_assert_uint_eq(r.code_chars, 24);
        ck_assert_uint_eq(r.stdin_len, 3);
        ck_assert_mem_eq(r.stdin_data, "a\0b", 3);
        ck_assert(r.main_mode);
        ck_assert(r.has_timeout);
        ck_assert(r.timeout_s == 2.5);
        ck_assert(r.has_memory);
        ck_assert_uint_eq(r.memory_mb, 64);
        ck_assert(!r.network);
        ck_assert_uint_eq(r.nreturn, 2);
        ck_assert_str_eq(r.return_files[1], "z.txt");
        ck_assert_uint_eq(r.nfiles, 2);
        ck_assert_str_eq(r.files[0].name, "x.csv");
        ck_assert_uint_eq(r.files[0].size, 4);
        ck_assert_mem_eq(r.files[0].data, "A,B\n", 4);
        ck_assert_str_eq(r.files[1].name, "bin");
        ck_assert_mem_eq(r.files[1].data, "\0\1\2", 3);
        ck_assert_ptr_null(r.api_key);
        pbx__request_release(&r);
    }

    /* Booleans as forms write them; an empty one is false. */
    ck_assert_int_eq(form_parse(PARTS({"code", NULL, "x", 0}, {"main", NULL, "", 0},
                                      {"network", NULL, "true", 0}),
                                SIZE_MAX, &r, &err),
                     0);
    ck_assert(!r.main_mode);
    ck_assert(r.network);
    pbx__request_release(&r);
    /* Numbers as JSON spells them. */
    ck_assert_int_eq(form_parse(PARTS({"code", NULL, "x", 0}, {"timeout", NULL, " 1e-9 ", 0},
                                      {"memory_mb", NULL, "65536", 0}),
                                SIZE_MAX, &r, &err),
                     0);
    ck_assert(r.timeout_s == 1e-9);
    ck_assert_uint_eq(r.memory_mb, 65536);
    pbx__request_release(&r);
    /* stdin and files exactly at their caps. */
    ck_assert_int_eq(form_parse(PARTS({"code", NULL, "x", 0},
                                      {"stdin", NULL, "12345678901234567890123456789012", 0},
                                      {"f", "a", "0123456789abcdef", 0}),
                                1, &r, &err),
                     0);
    ck_assert_uint_eq(r.stdin_len, 32);
    ck_assert_uint_eq(r.files[0].size, 16);
    pbx__request_release(&r);
}
END_TEST

/* The exact refusal of `text` (single-quoted, see json()) in dialect `d`. */
static void expect_message(enum dialect d, const char *text, const char *want)
{
    char *body = json(text);
    struct pbx_http_request r;
    struct pbx_error *err = NULL;
    const char *etype = NULL;

    ck_assert_int_lt(parse(d, body, strlen(body), &r, &etype, &err), 0);
    ck_assert_str_eq(etype, VAL);
    ck_assert_msg(strcmp(err->msg, want) == 0, "%s: `%s`, wanted `%s`", body, err->msg, want);
    pbx_error_free(&err);
    free(body);
}

START_TEST(test_unknown_field_suggestions)
{
    char key[300];
    char text[400];
    char want[400];

    /* Two edits or fewer, or only the case apart: the field it may have meant. */
    expect_message(COMPAT, "{'code': 'x', 'timout': 1}",
                   "unknown field `timout`; did you mean `timeout`?");
    expect_message(COMPAT, "{'Code': 'x'}", "unknown field `Code`; did you mean `code`?");
    expect_message(COMPAT, "{'code': 'x', 'return_file': []}",
                   "unknown field `return_file`; did you mean `return_files`?");
    expect_message(COMPAT, "{'code': 'x', 'STDIN_DATA': 'a'}",
                   "unknown field `STDIN_DATA`; did you mean `stdin_data`?");
    expect_message(COMPAT, "{'code': 'x', 'allownetwork': true}",
                   "unknown field `allownetwork`; did you mean `allow_network`?");
    expect_message(V1, "{'code': 'x', 'netwrok': true}",
                   "unknown field `netwrok`; did you mean `network`?");
    expect_message(V1, "{'code': 'x', 'Memory_MB': 1}",
                   "unknown field `Memory_MB`; did you mean `memory_mb`?");
    expect_message(V1, "{'code': 'x', 'file': []}", "unknown field `file`; did you mean `files`?");
    expect_message(V1, "{'cod': 'x'}", "unknown field `cod`; did you mean `code`?");
    /* The nearest of two: `stdn` is one from `stdin`, more from anything else. */
    expect_message(V1, "{'code': 'x', 'stdn': 'a'}", "unknown field `stdn`; did you mean `stdin`?");
    /* Three edits or more: nothing is suggested. */
    expect_message(COMPAT, "{'code': 'x', 'language': 'python'}", "unknown field `language`");
    expect_message(V1, "{'code': 'x', 'memory': 1}", "unknown field `memory`");
    expect_message(V1, "{'code': 'x', 'stdin_data': 'a'}", "unknown field `stdin_data`");
    expect_message(V1, "{'code': 'x', '': 1}", "unknown field ``");
    /* A long name: its first 200 bytes are said, and none is suggested. */
    memset(key, 'k', 250);
    key[250] = '\0';
    snprintf(text, sizeof(text), "{'code': 'x', '%s': 1}", key);
    snprintf(want, sizeof(want), "unknown field `%.200s`", key);
    expect_message(V1, text, want);
    /* Forms alike. */
    form_error(PARTS({"code", NULL, "x", 0}, {"timeuot", NULL, "1", 0}),
               "unknown field `timeuot`; did you mean `timeout`?");
    form_error(PARTS({"Code", NULL, "x", 0}), "unknown field `Code`; did you mean `code`?");
}
END_TEST

START_TEST(test_form_errors)
{
    char big[1024 + 2];

    form_error(PARTS({"stdin", NULL, "no code", 0}), "missing `code`");
    form_error(PARTS({"code", NULL, "", 0}), "`code` is empty");
    form_error(PARTS({"code", NULL, " \n\t", 0}), "`code` is empty");
    form_error(PARTS({"code", NULL, "print(1)\0", 9}), "`code` contains a NUL character");
    form_error(PARTS({"code", NULL, "print('\xff')", 0}), "`code` is not valid UTF-8");
    form_error(PARTS({"code", NULL, "\x80\x80\x80", 0}), "`code` is not valid UTF-8");
    form_error(PARTS({"code", NULL, "x", 0}, {"surprise", NULL, "1", 0}),
               "unknown field `surprise`");
    form_error(PARTS({"code", NULL, "x", 0}, {"api_key", NULL, "k", 0}), "unknown field `api_key`");
    form_error(PARTS({"code", NULL, "x", 0}, {NULL, NULL, "x", 0}), "has no field name");
    form_error(PARTS({"code", NULL, "x", 0}, {"", NULL, "x", 0}), "has no field name");
    form_error(PARTS({"code", NULL, "x", 0}, {"files", NULL, "a.txt", 0}),
               "`files` must be file parts");
    /* Every field but return_files is given once, as a JSON key is. */
    form_error(PARTS({"code", NULL, "x", 0}, {"code", NULL, "y", 0}),
               "field `code` is given twice");
    form_error(PARTS({"code", NULL, "x", 0}, {"stdin", NULL, "", 0}, {"stdin", NULL, "", 0}),
               "field `stdin` is given twice");
    form_error(PARTS({"code", NULL, "x", 0}, {"main", NULL, "1", 0}, {"main", NULL, "0", 0}),
               "field `main` is given twice");
    form_error(PARTS({"code", NULL, "x", 0}, {"timeout", NULL, "1", 0}, {"timeout", NULL, "2", 0}),
               "field `timeout` is given twice");
    form_error(
        PARTS({"code", NULL, "x", 0}, {"memory_mb", NULL, "64", 0}, {"memory_mb", NULL, "64", 0}),
        "field `memory_mb` is given twice");
    form_error(PARTS({"code", NULL, "x", 0}, {"network", NULL, "0", 0}, {"network", NULL, "0", 0}),
               "field `network` is given twice");
    /* Scalars. */
    form_error(PARTS({"code", NULL, "x", 0}, {"main", NULL, "maybe", 0}),
               "`main` must be true or false");
    form_error(PARTS({"code", NULL, "x", 0}, {"network", NULL, "yes", 0}),
               "`network` must be true or false");
    form_error(PARTS({"code", NULL, "x", 0}, {"main", NULL, "1\0", 2}),
               "`main` must be true or false");
    form_error(PARTS({"code", NULL, "x", 0}, {"timeout", NULL, "soon", 0}),
               "`timeout` must be a number of seconds");
    form_error(PARTS({"code", NULL, "x", 0}, {"timeout", NULL, "0x10", 0}),
               "`timeout` must be a number of seconds");
    form_error(PARTS({"code", NULL, "x", 0}, {"timeout", NULL, "inf", 0}),
               "`timeout` must be a number of seconds");
    form_error(PARTS({"code", NULL, "x", 0}, {"timeout", NULL, "true", 0}),
               "`timeout` must be a number of seconds");
    form_error(PARTS({"code", NULL, "x", 0}, {"timeout", NULL, "", 0}),
               "`timeout` must be a number of seconds");
    form_error(PARTS({"code", NULL, "x", 0}, {"timeout", NULL, "0", 0}),
               "`timeout` must be between 0 and 3600 seconds");
    form_error(PARTS({"code", NULL, "x", 0}, {"timeout", NULL, "3601", 0}),
               "`timeout` must be between 0 and 3600 seconds");
    form_error(PARTS({"code", NULL, "x", 0}, {"memory_mb", NULL, "8", 0}),
               "`memory_mb` must be a whole number from 16 to 65536");
    form_error(PARTS({"code", NULL, "x", 0}, {"memory_mb", NULL, "64.0", 0}), "`memory_mb`");
    form_error(PARTS({"code", NULL, "x", 0}, {"memory_mb", NULL, "-64", 0}), "`memory_mb`");
    form_error(PARTS({"code", NULL, "x", 0}, {"memory_mb", NULL, "65537", 0}), "`memory_mb`");
    memset(big, '1', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    form_error(PARTS({"code", NULL, "x", 0}, {"timeout", NULL, big, 0}),
               "form field `timeout` is over 1024 bytes");
    /* Names to return. */
    form_error(PARTS({"code", NULL, "x", 0}, {"return_files", NULL, "../x", 0}),
               "`return_files[0]` is not a valid file name");
    form_error(PARTS({"code", NULL, "x", 0}, {"return_files", NULL, "ok", 0},
                     {"return_files", NULL, "", 0}),
               "`return_files[1]` is not a valid file name");
    form_error(PARTS({"code", NULL, "x", 0}, {"return_files", NULL, "a\0b", 3}),
               "not a valid file name");
    form_error(PARTS({"code", NULL, "x", 0}, {"return_files", NULL, "a", 0},
                     {"return_files", NULL, "b", 0}, {"return_files", NULL, "a", 0}),
               "`return_files` names `a` twice");
    form_error(PARTS({"code", NULL, "x", 0}, {"return_files", NULL, "a", 0},
                     {"return_files", NULL, "b", 0}, {"return_files", NULL, "c", 0},
                     {"return_files", NULL, "d", 0}),
               "at most 3 files may be returned");
    /* Sizes. */
    form_error(
        PARTS({"code", NULL, "x", 0}, {"stdin", NULL, "123456789012345678901234567890123", 0}),
        "`stdin` is over 32 bytes");
    form_error(PARTS({"code", NULL, "x", 0}, {"f", "big", "0123456789abcdefg", 0}),
               "file `big` is larger than 16 bytes");
    /* Input files. */
    form_error(PARTS({"code", NULL, "x", 0}, {"f", "..", "x", 0}), "invalid file name");
    form_error(PARTS({"code", NULL, "x", 0}, {"f", "a/b", "x", 0}), "invalid file name");
    form_error(PARTS({"code", NULL, "x", 0}, {"f", "a.txt", "1", 0}, {"f", "a.txt", "2", 0}),
               "file `a.txt` is given twice");
    form_error(PARTS({"code", NULL, "x", 0}, {"f", "a", "", 0}, {"f", "b", "", 0},
                     {"f", "c", "", 0}, {"f", "d", "", 0}, {"f", "e", "", 0}),
               "at most 4 files may be attached");
    /* The first refusal is the one answered. */
    form_error(PARTS({"main", NULL, "maybe", 0}, {"surprise", NULL, "1", 0}),
               "`main` must be true or false");
    form_error(PARTS({"surprise", NULL, "1", 0}, {"main", NULL, "maybe", 0}),
               "unknown field `surprise`");
}
END_TEST

/*
 * A form and a JSON body that ask the same wrong thing are refused with the
 * same message, word for word: one validator serves both.
 */
START_TEST(test_form_json_same_messages)
{
    static const struct {
        const char *json;  /* single-quoted, see json() */
        struct part extra; /* the form: `code` = x, then this part */
    } same[] = {
        {"{'code': 'x', 'main': 'maybe'}", {"main", NULL, "maybe", 0}},
        {"{'code': 'x', 'network': 'yes'}", {"network", NULL, "yes", 0}},
        {"{'code': 'x', 'timeout': 'soon'}", {"timeout", NULL, "soon", 0}},
        {"{'code': 'x', 'timeout': 0}", {"timeout", NULL, "0", 0}},
        {"{'code': 'x', 'timeout': 3601}", {"timeout", NULL, "3601", 0}},
        {"{'code': 'x', 'timeout': -1}", {"timeout", NULL, "-1", 0}},
        {"{'code': 'x', 'memory_mb': 8}", {"memory_mb", NULL, "8", 0}},
        {"{'code': 'x', 'memory_mb': 64.5}", {"memory_mb", NULL, "64.5", 0}},
        {"{'code': 'x', 'memory_mb': '64'}", {"memory_mb", NULL, "'64'", 0}},
        {"{'code': 'x', 'return_files': ['../x']}", {"return_files", NULL, "../x", 0}},
        {"{'code': 'x', 'return_files': ['']}", {"return_files", NULL, "", 0}},
        {"{'code': 'x', 'stdin': '123456789012345678901234567890123'}",
         {"stdin", NULL, "123456789012345678901234567890123", 0}},
        {"{'code': 'x', 'surprise': 1}", {"surprise", NULL, "1", 0}},
        {"{'code': 'x', 'files': [{'name': '..', 'content_base64': 'QUJD'}]}",
         {"files", "..", "ABC", 0}},
        {"{'code': 'x', 'files': [{'name': 'f', 'content_base64': 'MDEyMzQ1Njc4OWFiY2RlZmc='}]}",
         {"files", "f", "0123456789abcdefg", 0}},
        {"{'code': ' '}", {"code", NULL, "", 0}},
    };

    for (size_t i = 0; i < ARRAY_SIZE(same); i++) {
        char *body = json(same[i].json);
        const struct part *extra = &same[i].extra;
        struct part parts[2] = {{"code", NULL, "x", 0}, *extra};
        struct pbx_http_request r;
        struct pbx_error *jerr = NULL;
        struct pbx_error *ferr = NULL;
        const char *etype = NULL;
        bool code_only = strcmp(extra->name, "code") == 0;

        ck_assert_int_lt(parse(V1, body, strlen(body), &r, &etype, &jerr), 0);
        ck_assert_str_eq(etype, VAL);
        if (code_only)
            parts[0] = parts[1];
        ck_assert_int_lt(form_parse(parts, code_only ? 1 : 2, SIZE_MAX, &r, &ferr), 0);
        ck_assert_msg(strcmp(jerr->msg, ferr->msg) == 0, "%s: JSON `%s`, form `%s`", body,
                      jerr->msg, ferr->msg);
        pbx_error_free(&jerr);
        pbx_error_free(&ferr);
        free(body);
    }

    /* A name to return given twice: refused by both (multipart let it through before). */
    {
        char *body = json("{'code': 'x', 'return_files': ['a', 'a']}");
        struct pbx_http_request r;
        struct pbx_error *jerr = NULL;
        struct pbx_error *ferr = NULL;
        const char *etype = NULL;

        ck_assert_int_lt(parse(V1, body, strlen(body), &r, &etype, &jerr), 0);
        ck_assert_int_lt(form_parse(PARTS({"code", NULL, "x", 0}, {"return_files", NULL, "a", 0},
                                          {"return_files", NULL, "a", 0}),
                                    SIZE_MAX, &r, &ferr),
                         0);
        ck_assert_str_eq(jerr->msg, "`return_files` names `a` twice");
        ck_assert_str_eq(ferr->msg, jerr->msg);
        pbx_error_free(&jerr);
        pbx_error_free(&ferr);
        free(body);
    }
}
END_TEST

/* An empty file input (no filename) adds nothing, not even to the file before it. */
START_TEST(test_form_empty_file_input)
{
    struct pbx_http_request r;
    struct pbx_error *err = NULL;

    ck_assert_int_eq(form_parse(PARTS({"code", NULL, "x", 0}, {"files", "a.txt", "a", 0},
                                      {"files", "", "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz", 0}),
                                4, &r, &err),
                     0);
    ck_assert_uint_eq(r.nfiles, 1);
    ck_assert_uint_eq(r.files[0].size, 1);
    ck_assert_mem_eq(r.files[0].data, "a", 1);
    pbx__request_release(&r);
}
END_TEST

/* The framing's refusal, when it comes first, is the one answered; a later one is not. */
/*
 * S4's upload form of `code` and one text field `name` = `text`: 0 with
 * *network, or < 0 with the field and kind S4's schema refused in *shape.
 */
static int upload_parse(const char *name, const char *text, bool *network,
                        struct pbx_request_shape *shape)
{
    struct pbx_request_form f;
    struct pbx_http_request r;
    struct pbx_error *err = NULL;
    int rc;

    pbx__request_form_init_upload(&f, &caps);
    pbx__request_form_data(&f, "code", NULL, "x", 0, 1);
    pbx__request_form_data(&f, name, NULL, text, 0, strlen(text));
    rc = pbx__request_form_finish(&f, &r, &err);
    *shape = f.shape;
    pbx__request_form_release(&f);
    if (rc == 0) {
        *network = r.network;
        pbx__request_release(&r);
    } else {
        pbx_error_free(&err);
    }
    return rc;
}

START_TEST(test_form_upload_s4_schema)
{
    static const char *const no[] = {"0", "off", "f", "false", "n", "no", "False", "OFF", "No"};
    static const char *const yes[] = {"1", "on", "t", "true", "y", "yes", "True", "ON", "YeS"};
    static const char *const neither[] = {"", "maybe", " true", "true ", "2", "nope", "tru"};
    struct pbx_request_shape shape;
    bool network;

    /* allow_network: pydantic's booleans from a string, in any case ("False" is requests'). */
    for (size_t i = 0; i < ARRAY_SIZE(no); i++) {
        network = true;
        ck_assert_msg(upload_parse("allow_network", no[i], &network, &shape) == 0, "%s", no[i]);
        ck_assert_msg(!network, "%s", no[i]);
    }
    for (size_t i = 0; i < ARRAY_SIZE(yes); i++) {
        network = false;
        ck_assert_msg(upload_parse("allow_network", yes[i], &network, &shape) == 0, "%s", yes[i]);
        ck_assert_msg(network, "%s", yes[i]);
    }
    for (size_t i = 0; i < ARRAY_SIZE(neither); i++) {
        ck_assert_msg(upload_parse("allow_network", neither[i], &network, &shape) < 0, "`%s`",
                      neither[i]);
        ck_assert_ptr_nonnull(shape.field);
        ck_assert_str_eq(shape.field, "allow_network");
        ck_assert_str_eq(shape.kind, "bool_parsing");
    }
    /* A text part named `files` is S4's schema's refusal (FastAPI's 422), not a 400. */
    ck_assert_int_lt(upload_parse("files", "abc", &network, &shape), 0);
    ck_assert_ptr_nonnull(shape.field);
    ck_assert_str_eq(shape.field, "files");
    ck_assert_str_eq(shape.kind, "value_error");
}
END_TEST

/* /v1's form booleans are as they were: true, 1, on; false, 0, off and empty. */
START_TEST(test_form_v1_booleans)
{
    struct pbx_http_request r;
    struct pbx_error *err = NULL;

    ck_assert_int_eq(
        form_parse(PARTS({"code", NULL, "x", 0}, {"network", NULL, "", 0}), 1, &r, &err), 0);
    ck_assert(!r.network);
    pbx__request_release(&r);
    form_error(PARTS({"code", NULL, "x", 0}, {"network", NULL, "False", 0}),
               "`network` must be true or false");
    form_error(PARTS({"code", NULL, "x", 0}, {"main", NULL, "yes", 0}),
               "`main` must be true or false");
}
END_TEST

START_TEST(test_form_refuse)
{
    struct pbx_request_form f;
    struct pbx_http_request r;
    struct pbx_error *err = NULL;

    pbx__request_form_init(&f, &caps);
    pbx__request_form_data(&f, "code", NULL, "x", 0, 1);
    pbx__request_form_refuse(&f, "malformed multipart/form-data body");
    pbx__request_form_data(&f, "surprise", NULL, "1", 0, 1);
    ck_assert_int_lt(pbx__request_form_finish(&f, &r, &err), 0);
    ck_assert_str_eq(err->msg, "malformed multipart/form-data body");
    pbx_error_free(&err);
    pbx__request_form_release(&f);

    pbx__request_form_init(&f, &caps);
    pbx__request_form_data(&f, "main", NULL, "maybe", 0, 5);
    pbx__request_form_data(&f, "code", NULL, "x", 0, 1);
    pbx__request_form_refuse(&f, "malformed multipart/form-data body");
    ck_assert_int_lt(pbx__request_form_finish(&f, &r, &err), 0);
    ck_assert_str_eq(err->msg, "`main` must be true or false");
    pbx_error_free(&err);
    pbx__request_form_release(&f);

    /* A form released unfinished frees what it read. */
    pbx__request_form_init(&f, &caps);
    pbx__request_form_data(&f, "code", NULL, "print(1)", 0, 8);
    pbx__request_form_data(&f, "f", "a", "abc", 0, 3);
    pbx__request_form_data(&f, "stdin", NULL, "in", 0, 2);
    pbx__request_form_release(&f);
}
END_TEST

/* A request parsed after a refusal, into the same struct, is whole. */
START_TEST(test_reuse)
{
    struct pbx_http_request r;
    struct pbx_error *err = NULL;
    const char *etype = NULL;
    char *bad = json("{'code': 'x', 'files': {'a': 'QUJD'}, 'timeout': 0}");
    char *good = json("{'code': 'y', 'files': {'a': 'QUJD'}}");

    ck_assert_int_lt(pbx__request_json_parse_compat(bad, strlen(bad), &caps, &r, &etype, &err), 0);
    pbx_error_free(&err);
    ck_assert_int_eq(pbx__request_json_parse_compat(good, strlen(good), &caps, &r, &etype, &err),
                     0);
    ck_assert_str_eq(r.code, "y");
    ck_assert_uint_eq(r.nfiles, 1);
    ck_assert(!r.has_timeout);
    pbx__request_release(&r);
    free(bad);
    free(good);
}
END_TEST

static Suite *request_suite(void)
{
    Suite *s = suite_create("request");
    TCase *tc = tcase_create("parse");
    TCase *tb = tcase_create("base64");
    TCase *tf = tcase_create("files");
    TCase *tm = tcase_create("forms");

    tcase_add_loop_test(tc, test_common_errors_compat, 0, (int)ARRAY_SIZE(common_bad));
    tcase_add_loop_test(tc, test_common_errors_v1, 0, (int)ARRAY_SIZE(common_bad));
    tcase_add_loop_test(tc, test_compat_errors, 0, (int)ARRAY_SIZE(compat_bad));
    tcase_add_loop_test(tc, test_v1_errors, 0, (int)ARRAY_SIZE(v1_bad));
    tcase_add_test(tc, test_compat_full);
    tcase_add_test(tc, test_unknown_field_suggestions);
    tcase_add_test(tc, test_compat_minimal);
    tcase_add_test(tc, test_compat_script);
    tcase_add_test(tc, test_compat_limits_exact);
    tcase_add_test(tc, test_timeouts);
    tcase_add_test(tc, test_v1_full);
    tcase_add_test(tc, test_stdin_nul);
    tcase_add_test(tc, test_code_chars);
    tcase_add_test(tc, test_name_length);
    tcase_add_test(tc, test_file_sizes);
    tcase_add_test(tc, test_body_length);
    tcase_add_test(tc, test_reuse);
    suite_add_tcase(s, tc);

    tcase_add_test(tb, test_base64_valid);
    tcase_add_test(tb, test_base64_strict);
    tcase_add_test(tb, test_base64_too_large);
    tcase_add_test(tb, test_base64_max_wraps);
    suite_add_tcase(s, tb);

    tcase_add_test(tf, test_add_file);
    suite_add_tcase(s, tf);

    tcase_add_test(tm, test_form_full);
    tcase_add_test(tm, test_form_errors);
    tcase_add_test(tm, test_form_json_same_messages);
    tcase_add_test(tm, test_form_empty_file_input);
    tcase_add_test(tm, test_form_refuse);
    tcase_add_test(tm, test_form_upload_s4_schema);
    tcase_add_test(tm, test_form_v1_booleans);
    suite_add_tcase(s, tm);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(request_suite());
    int failed;

    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
