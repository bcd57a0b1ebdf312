/*
 * The job's records: JSON lines the bootstrap writes to fd 3.  The first
 * record is written before any user code runs ({"check": "ok"} or
 * {"check": "rejected", "error": {...}}), the last one after it
 * ({"done": true, "exit_code": N, "error": ..., "result": "<JSON text>"}).
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
};

/*
 * Parse `len` bytes of records into *meta (zeroed first), main()'s value
 * only within pbx_limits_result_max() of `limits` (NULL: the default
 * limits).  Never fails: bad lines, and lines of more values than any record
 * of the bootstrap holds, are skipped before they are parsed.
 */
void pbx__meta_parse(const char *data, size_t len, const struct pbx_limits *limits,
                     struct pbx_meta *meta);

void pbx__meta_release(struct pbx_meta *meta);

#endif
