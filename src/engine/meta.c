/* Parsing of the job's JSON-lines records (untrusted: fuzzed by fuzz/fuzz_meta.c). */
#include <string.h>

#include "common/jsonlimit.h"
#include "engine/meta.h"
#include "common/banned.h"

/* Keep only error objects of a sane shape: string type and message, small. */
static json_t *clean_error(json_t *e)
{
    json_t *type = json_object_get(e, "type");
    json_t *msg = json_object_get(e, "message");

    if (!json_is_object(e) || !json_is_string(type))
        return NULL;
    if (msg != NULL && !json_is_string(msg) && !json_is_null(msg))
        return NULL;
    return json_incref(e);
}

/*
 * A record of the bootstrap holds a few fields, and an error with a list of
 * at most 1000 disallowed modules (its _MAX_DISALLOWED); user code may write
 * anything.
 */
#define LINE_MAX_VALUES 65536
#define LINE_MAX_DEPTH  32
/* jansson's own nesting limit, which the bootstrap checks main()'s value against too. */
#define RESULT_MAX_DEPTH 2048

static void parse_line(const char *line, size_t len, struct pbx_meta *meta, bool first,
                       const struct pbx_result_max *max)
{
    struct pbx_json_shape shape;
    json_t *check;
    json_t *rec;
    json_t *v;

    if (!pbx_json_within(line, len, LINE_MAX_VALUES, LINE_MAX_DEPTH, &shape))
        return;
    rec = json_loadb(line, len, JSON_REJECT_DUPLICATES, NULL);

    if (!json_is_object(rec)) {
        json_decref(rec);
        return;
    }
    check = json_object_get(rec, "check");
    if (first && json_is_string(check)) {
        if (strcmp(json_string_value(check), "ok") == 0) {
            meta->check = PBX_META_CHECK_OK;
        } else if (strcmp(json_string_value(check), "rejected") == 0) {
            meta->check = PBX_META_CHECK_REJECTED;
            meta->reject_error = clean_error(json_object_get(rec, "error"));
        }
    } else if (!first && json_is_true(json_object_get(rec, "done"))) {
        meta->done = true;
        v = json_object_get(rec, "exit_code");
        meta->exit_code = json_is_integer(v) ? (int)(json_integer_value(v) & 0xff) : 1;
        json_decref(meta->error);
        meta->error = clean_error(json_object_get(rec, "error"));
        json_decref(meta->result);
        meta->result = NULL;
        meta->result_invalid = false;
        meta->result_too_large = false;
        v = json_object_get(rec, "result");
        meta->result_text_len = json_is_string(v) ? json_string_length(v) : 0;
        if (json_is_string(v) && (json_string_length(v) > max->bytes ||
                                  !pbx_json_within(json_string_value(v), json_string_length(v),
                                                   max->values, RESULT_MAX_DEPTH, &shape))) {
            meta->result_too_large = true;
        } else if (json_is_string(v)) {
            meta->result =
                json_loadb(json_string_value(v), json_string_length(v),
                           JSON_DECODE_ANY | JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, NULL);
            meta->result_invalid = meta->result == NULL;
        }
    }
    json_decref(rec);
}

void pbx__meta_parse(const char *data, size_t len, const struct pbx_limits *limits,
                     struct pbx_meta *meta)
{
    struct pbx_limits defaults;
    struct pbx_result_max max;
    size_t pos = 0;
    bool first = true;

    if (limits == NULL) {
        pbx_limits_default(&defaults);
        limits = &defaults;
    }
    pbx_limits_result_max(limits, &max);
    memset(meta, 0, sizeof(*meta));
    while (pos < len) {
        const char *nl = memchr(data + pos, '\n', len - pos);
        size_t end = nl ? (size_t)(nl - data) : len;

        /* An unterminated last line was cut short: ignore it. */
        if (nl == NULL)
            break;
        parse_line(data + pos, end - pos, meta, first, &max);
        /* Only the very first line can be the check record. */
        if (first && meta->check == PBX_META_CHECK_REJECTED)
            break;
        first = false;
        pos = end + 1;
    }
}

void pbx__meta_release(struct pbx_meta *meta)
{
    json_decref(meta->reject_error);
    json_decref(meta->error);
    json_decref(meta->result);
    memset(meta, 0, sizeof(*meta));
}
