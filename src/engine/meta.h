/*
 * The job's records: JSON lines the bootstrap writes to fd 3.  The first
 * record is written before any user code runs ({"check": "ok"} or
 * {"check": "rejected", "error": {...}}), the last one after it
 * ({"done": true, "exit_code": N, "error": ..., "result": "<JSON text>"}).
 * Between them come the rich outputs, one record each, in the order produced:
 * {"output": {"type": "display"|"result", "data": {MIME: value}, "metadata": {}},
 *  "at": [stdout bytes, stderr bytes the code had written before it]}
 * (docs/api.md, "The result object"; sessions and streaming read the same
 * records one line at a time).
 * Everything after the check record may have been forged by user code, so it
 * only ever describes that code's own outcome, never the status.
 */
#ifndef PBX_ENGINE_META_H
#define PBX_ENGINE_META_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "policy/limits.h"

enum pbx_meta_check {
    PBX_META_CHECK_NONE = 0, /* the job died before checking */
    PBX_META_CHECK_OK = 1,
    PBX_META_CHECK_REJECTED = 2,
};

struct pbx_meta {
    enum pbx_meta_check check; /* from the first record */
    json_t *reject_error;      /* the rejection's error object (owned) */
    bool done;                 /* a done record was seen */
    int exit_code;             /* its exit_code */
    json_t *error;             /* its error object, or NULL (owned) */
    json_t *result;            /* main()'s value parsed from its JSON text (owned) */
    bool result_invalid;       /* a result was present but was not valid JSON */
    size_t result_text_len;    /* the length of main()'s value as JSON text */
    bool result_too_large;     /* a result was present but over the limits: not parsed */
    json_t *outputs;           /* the outputs kept, markers included: an array (owned) */
    json_t *outputs_at;        /* for each, [stdout, stderr] bytes written before it, as its */
                               /* record's "at" said ([0, 0] when it did not; owned) */
    uint64_t outputs_bytes;    /* their records' bytes as written, taken from main()'s room */
    size_t outputs_values;     /* JSON values in them */
    size_t outputs_dropped;    /* output records past the count: one marker at the end */
    /* The parse so far (pbx__meta_feed()). */
    struct pbx_result_max caps_result;   /* main()'s value's caps */
    struct pbx_outputs_max caps_outputs; /* the outputs' caps */
    size_t parsed;                       /* bytes of the records parsed: whole lines */
    size_t lines;                        /* lines parsed */
    bool stopped;                        /* a rejection: nothing after it is read */
    bool ended;                          /* pbx__meta_end() was called */
};

/*
 * Parse `len` bytes of records into *meta (zeroed first), main()'s value
 * only within pbx_limits_result_max() of `limits` (NULL: the default
 * limits), less what the outputs took.  Never fails: bad lines, and lines of
 * more values than any record of the bootstrap holds, are skipped before
 * they are parsed.  An output record (one that starts `{"output"`, or any
 * object with an "output" member) is kept only within
 * pbx_limits_outputs_max() and only in a valid shape (a known type, a string
 * text/plain, strings for text/html and image/svg+xml, a PNG in base64 for
 * image/png; other MIME types are dropped); one that is not, and one that
 * does not parse, becomes a marker in its place: {"type": "display", "data":
 * {"text/plain": "[output omitted: ...]"}, "metadata": {"omitted": true}}.
 * Output records after a done record are ignored.
 */
void pbx__meta_parse(const char *data, size_t len, const struct pbx_limits *limits,
                     struct pbx_meta *meta);

/*
 * The same parse, as the records arrive (sessions and streaming read them
 * so): begin, then feed the whole of the records read so far each time more
 * came (only the lines completed since the last feed are parsed; the bytes
 * before meta->parsed must not change), then end, which adds the marker for
 * outputs past the count.  A kept output is appended to meta->outputs as its
 * line is fed: a caller watching the array's size sees each one once, in
 * order, as pbx__meta_parse() would keep it.
 */
void pbx__meta_begin(struct pbx_meta *meta, const struct pbx_limits *limits);
void pbx__meta_feed(struct pbx_meta *meta, const char *data, size_t len);
void pbx__meta_end(struct pbx_meta *meta);

void pbx__meta_release(struct pbx_meta *meta);

#endif
