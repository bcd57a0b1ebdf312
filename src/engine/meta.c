/* Parsing of the job's JSON-lines records (untrusted: fuzzed by fuzz/fuzz_meta.c). */
#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "common/jsonlimit.h"
#include "common/xalloc.h"
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

/* The caps a parse works within. */
struct caps {
    struct pbx_result_max result;   /* main()'s value */
    struct pbx_outputs_max outputs; /* the rich outputs */
};

/* A marker in the place of an output left out (a new reference). */
static json_t *marker(const char *why)
{
    char text[160];

    snprintf(text, sizeof(text), "[output omitted: %s]", why);
    return json_pack("{s:s, s:{s:s}, s:{s:b}}", "type", "display", "data", "text/plain", text,
                     "metadata", "omitted", 1);
}

/* Whether `s` is strict base64 (the standard alphabet, padded) of a PNG image. */
static bool png_base64(const json_t *s)
{
    static const unsigned char sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    size_t len = json_string_length(s);
    size_t max = len / 4 * 3 + 3;
    unsigned char *bin = xmalloc(max);
    size_t n = 0;
    const char *end = NULL;
    bool ok;

    ok = sodium_base642bin(bin, max, json_string_value(s), len, NULL, &n, &end,
                           sodium_base64_VARIANT_ORIGINAL) == 0 &&
         end == json_string_value(s) + len && n >= sizeof(sig) &&
         memcmp(bin, sig, sizeof(sig)) == 0;
    free(bin);
    return ok;
}

/*
 * The output `o` rebuilt from what its record may carry (a new reference), or
 * NULL with *why saying what was wrong.
 */
static json_t *clean_output(json_t *o, const char **why)
{
    static const char *const texts[] = {"text/plain", "text/html", "image/svg+xml"};
    json_t *type = json_object_get(o, "type");
    json_t *data = json_object_get(o, "data");
    json_t *md = json_object_get(o, "metadata");
    json_t *kept;
    json_t *v;

    *why = "not a valid output record";
    if (!json_is_object(o) || !json_is_string(type) ||
        (strcmp(json_string_value(type), "display") != 0 &&
         strcmp(json_string_value(type), "result") != 0))
        return NULL;
    if (!json_is_object(data) || !json_is_string(json_object_get(data, "text/plain")))
        return NULL;
    if (md != NULL && !json_is_null(md) && !json_is_object(md))
        return NULL;
    kept = json_object();
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        v = json_object_get(data, texts[i]);
        if (v == NULL)
            continue;
        if (!json_is_string(v)) {
            json_decref(kept);
            return NULL;
        }
        json_object_set(kept, texts[i], v);
    }
    v = json_object_get(data, "image/png");
    if (v != NULL) {
        if (!json_is_string(v) || !png_base64(v)) {
            *why = "image/png is not a PNG image in base64";
            json_decref(kept);
            return NULL;
        }
        json_object_set(kept, "image/png", v);
    }
    v = json_object_get(data, "application/json");
    if (v != NULL)
        json_object_set(kept, "application/json", v);
    return json_pack("{s:O, s:o, s:o}", "type", type, "data", kept, "metadata",
                     json_is_object(md) ? json_incref(md) : json_object());
}

/* Whether a line begins as the bootstrap writes output records: `{"output"`. */
static bool looks_like_output(const char *line, size_t len)
{
    static const char prefix[] = "{\"output\"";

    return len >= sizeof(prefix) - 1 && memcmp(line, prefix, sizeof(prefix) - 1) == 0;
}

/* Keep one output record of `len` bytes (o NULL: it did not parse), or a marker for it. */
/* [stdout, stderr] from a record's "at", or [0, 0] when it is not two byte counts. */
static json_t *at_pair(const json_t *at)
{
    json_t *o = json_array_get(at, 0);
    json_t *e = json_array_get(at, 1);

    if (!json_is_array(at) || json_array_size(at) != 2 || !json_is_integer(o) ||
        !json_is_integer(e) || json_integer_value(o) < 0 || json_integer_value(e) < 0)
        return json_pack("[i, i]", 0, 0);
    return json_pack("[I, I]", json_integer_value(o), json_integer_value(e));
}

static void take_output(struct pbx_meta *meta, json_t *o, const json_t *at, size_t len,
                        size_t values, const struct caps *caps)
{
    const struct pbx_outputs_max *om = &caps->outputs;
    char why[96];
    const char *bad = NULL;
    json_t *kept = NULL;

    if (meta->done)
        return;
    if (meta->outputs == NULL) {
        meta->outputs = json_array();
        meta->outputs_at = json_array();
    }
    if (json_array_size(meta->outputs) >= om->count) {
        meta->outputs_dropped++;
        return;
    }
    if (o == NULL) {
        bad = "not a valid output record";
    } else if (len > om->each) {
        snprintf(why, sizeof(why), "over %" PRIu64 " bytes", om->each);
        bad = why;
    } else if (meta->outputs_bytes + len > om->total) {
        snprintf(why, sizeof(why), "over the %" PRIu64 " bytes all outputs may carry", om->total);
        bad = why;
    } else if (meta->outputs_values + values > om->values) {
        snprintf(why, sizeof(why), "over the %" PRIu64 " JSON values all outputs may carry",
                 om->values);
        bad = why;
    } else {
        kept = clean_output(o, &bad);
    }
    json_array_append_new(meta->outputs_at, at_pair(at));
    if (kept == NULL) {
        json_array_append_new(meta->outputs, marker(bad));
        return;
    }
    json_array_append_new(meta->outputs, kept);
    meta->outputs_bytes += len;
    meta->outputs_values += values;
}

static void parse_line(const char *line, size_t len, struct pbx_meta *meta, bool first,
                       const struct caps *caps)
{
    const struct pbx_result_max *max = &caps->result;
    struct pbx_json_shape shape;
    uint64_t room;
    json_t *check;
    json_t *rec;
    json_t *v;

    if (!first && looks_like_output(line, len) && len > caps->outputs.each) {
        /* Never parsed: refused by its size alone. */
        take_output(meta, json_null(), NULL, len, 0, caps);
        return;
    }
    if (!pbx_json_within(line, len, LINE_MAX_VALUES, LINE_MAX_DEPTH, &shape)) {
        if (!first && looks_like_output(line, len))
            take_output(meta, NULL, NULL, len, 0, caps);
        return;
    }
    rec = json_loadb(line, len, JSON_REJECT_DUPLICATES, NULL);

    if (!json_is_object(rec)) {
        if (!first && looks_like_output(line, len))
            take_output(meta, NULL, NULL, len, 0, caps);
        json_decref(rec);
        return;
    }
    if (!first && json_object_get(rec, "output") != NULL) {
        take_output(meta, json_object_get(rec, "output"), json_object_get(rec, "at"), len,
                    shape.values, caps);
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
        /* main()'s value has what the outputs before it left. */
        room = max->bytes > meta->outputs_bytes ? max->bytes - meta->outputs_bytes : 0;
        if (json_is_string(v) && (json_string_length(v) > room ||
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

void pbx__meta_begin(struct pbx_meta *meta, const struct pbx_limits *limits)
{
    struct pbx_limits defaults;

    if (limits == NULL) {
        pbx_limits_default(&defaults);
        limits = &defaults;
    }
    memset(meta, 0, sizeof(*meta));
    pbx_limits_result_max(limits, &meta->caps_result);
    pbx_limits_outputs_max(limits, &meta->caps_outputs);
}

void pbx__meta_feed(struct pbx_meta *meta, const char *data, size_t len)
{
    struct caps caps = {.result = meta->caps_result, .outputs = meta->caps_outputs};
    size_t pos = meta->parsed;

    if (meta->stopped)
        return;
    while (pos < len) {
        const char *nl = memchr(data + pos, '\n', len - pos);
        size_t end;

        /* A line not yet whole waits for the rest; one never ended is ignored. */
        if (nl == NULL)
            break;
        end = (size_t)(nl - data);
        parse_line(data + pos, end - pos, meta, meta->lines == 0, &caps);
        meta->lines++;
        pos = end + 1;
        /* Only the very first line can be the check record; a rejection ends the records. */
        if (meta->lines == 1 && meta->check == PBX_META_CHECK_REJECTED) {
            meta->stopped = true;
            break;
        }
    }
    meta->parsed = pos;
}

void pbx__meta_end(struct pbx_meta *meta)
{
    if (meta->outputs_dropped > 0 && !meta->ended) {
        char why[96];

        snprintf(why, sizeof(why), "%zu more, over the %u outputs that may come back",
                 meta->outputs_dropped, (unsigned)meta->caps_outputs.count);
        json_array_append_new(meta->outputs, marker(why));
    }
    meta->ended = true;
}

void pbx__meta_parse(const char *data, size_t len, const struct pbx_limits *limits,
                     struct pbx_meta *meta)
{
    pbx__meta_begin(meta, limits);
    pbx__meta_feed(meta, data, len);
    pbx__meta_end(meta);
}

void pbx__meta_release(struct pbx_meta *meta)
{
    json_decref(meta->reject_error);
    json_decref(meta->error);
    json_decref(meta->result);
    json_decref(meta->outputs);
    json_decref(meta->outputs_at);
    memset(meta, 0, sizeof(*meta));
}
