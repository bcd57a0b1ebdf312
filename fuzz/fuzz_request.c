/*
 * libFuzzer driver: the execution request validator of src/server/request.c
 * and its readers (request_json.c, request_form.c), through the functions
 * the server calls, over every kind of body.  The input is parsed as a JSON
 * body of both dialects (the compatible one also with the rules of its
 * shape, S4's schema included), then read as a multipart/form-data body of
 * `POST /v1/execute` and of `POST /execute-with-files`: split into parts at
 * each line "--", every part a header line and its value,
 *
 *     code            a text field named `code`, its value what follows
 *     files@a.txt     a file part named `files` with the filename `a.txt`
 *     files@          an empty file input
 *     (empty)         a part without a field name
 *
 * and handed to the form reader in chunks (1 to 13 bytes, from the input's
 * size) as libmicrohttpd's post processor hands them to src/server/multipart.c.
 * The form's parts come from the post processor in the server, which
 * fuzz/fuzz_http.c drives; here the fuzzer reaches the fields themselves.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/xalloc.h"
#include "server/request.h"
#include "common/banned.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const struct pbx_request_caps caps = {
    .max_files = 2, .max_file_bytes = 4096, .max_return = 4, .max_stdin = 4096};

/* Hand one part to the form in chunks of `chunk` bytes, each with its offset. */
static void feed_part(struct pbx_request_form *f, const char *part, size_t len, size_t chunk)
{
    const char *nl = memchr(part, '\n', len);
    size_t hlen = nl != NULL ? (size_t)(nl - part) : len;
    const char *value = nl != NULL ? nl + 1 : part + len;
    size_t vlen = len - (size_t)(value - part);
    char *header = xstrndup(part, hlen);
    char *at = strchr(header, '@');
    const char *filename = NULL;
    size_t off = 0;

    if (at != NULL) {
        *at = '\0';
        filename = at + 1;
    }
    do {
        size_t n = vlen - off < chunk ? vlen - off : chunk;

        pbx__request_form_data(f, header, filename, value + off, off, n);
        off += n;
    } while (off < vlen);
    free(header);
}

static void read_form(const char *text, size_t size, bool upload)
{
    static const char sep[] = "\n--\n";
    struct pbx_request_form f;
    struct pbx_http_request r;
    struct pbx_error *err = NULL;
    size_t chunk = 1 + size % 13;
    const char *p = text;
    const char *end = text + size;

    if (upload)
        pbx__request_form_init_upload(&f, &caps);
    else
        pbx__request_form_init(&f, &caps);
    while (p < end) {
        const char *next = memmem(p, (size_t)(end - p), sep, sizeof(sep) - 1);
        size_t len = next != NULL ? (size_t)(next - p) : (size_t)(end - p);

        feed_part(&f, p, len, chunk);
        p += len + (next != NULL ? sizeof(sep) - 1 : 0);
    }
    if (pbx__request_form_finish(&f, &r, &err) == 0)
        pbx__request_release(&r);
    else if (f.shape.field != NULL && (f.shape.kind == NULL || f.shape.msg == NULL))
        abort(); /* a refusal of S4's schema says how, for the 422 */
    pbx_error_free(&err);
    pbx__request_form_release(&f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct pbx_request_shape shape;
    struct pbx_http_request r;
    struct pbx_error *err = NULL;
    const char *etype = NULL;

    if (pbx__request_json_parse_compat((const char *)data, size, &caps, &r, &etype, &err) == 0)
        pbx__request_release(&r);
    pbx_error_free(&err);
    if (pbx__request_json_parse_v1((const char *)data, size, &caps, &r, &etype, &err) == 0)
        pbx__request_release(&r);
    pbx_error_free(&err);
    if (pbx__request_json_parse_execute((const char *)data, size, &caps, &r, &shape, &etype,
                                        &err) == 0)
        pbx__request_release(&r);
    else if (shape.field != NULL && (!shape.s4 || shape.kind == NULL || shape.msg == NULL))
        abort(); /* only S4's rules refuse by its schema, and they say how */
    pbx_error_free(&err);
    read_form((const char *)data, size, false);
    read_form((const char *)data, size, true);
    return 0;
}
