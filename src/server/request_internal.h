/*
 * What the readers of execution requests share: a field's value as either
 * kind of body gives it, the table of fields of each dialect with their
 * takers (request.c), and the checks every reader makes.  The readers are
 * request_json.c and request_form.c; not an interface for anything else.
 */
#ifndef PBX_SERVER_REQUEST_INTERNAL_H
#define PBX_SERVER_REQUEST_INTERNAL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "common/buf.h"
#include "common/error.h"
#include "server/request.h"

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
/*
 * The fields of each dialect, each table ended by a field whose name is
 * NULL: `POST /execute` (JSON only), `POST /v1/execute` (JSON and
 * multipart/form-data), `POST /v1/sessions`, `PATCH /v1/sessions/{id}` and
 * `POST /v1/sessions/{id}/execute` (JSON only), and `POST
 * /execute-with-files` (multipart/form-data only, S4's).
 */
extern const struct field pbx__request_compat_fields[];
extern const struct field pbx__request_v1_fields[];
extern const struct field pbx__request_session_fields[];
extern const struct field pbx__request_session_patch_fields[];
extern const struct field pbx__request_session_call_fields[];
extern const struct field pbx__request_upload_fields[];

/* A field of `fields` by name, or NULL. */
const struct field *pbx__request_find_field(const struct field *fields, const char *name);

/*
 * Refuse the unknown field `name` (its first 200 bytes said), saying which
 * field of `fields` it may have meant.
 */
int pbx__request_refuse_unknown(const struct field *fields, const char *name,
                                struct pbx_error **err);

/* The refusal of a file over the size cap, whichever way its bytes came. */
int pbx__request_refuse_large(const char *name, const struct pbx_request_caps *caps,
                              struct pbx_error **err);

/*
 * The checks of the code, once every field is in: present, no NUL, UTF-8
 * (a JSON body's always is; a form's must be too, or its characters could
 * not be counted), not blank.
 */
int pbx__request_finish_code(struct pbx_http_request *r, struct pbx_error **err);

/* S4's schema of the field `name`, whose value is `v`. */
int pbx__request_s4_check(const char *name, const struct value *v, struct pbx_request_shape *shape,
                          struct pbx_error **err);

/*
 * A refusal of S4's schema: its field and pydantic's words for it in *shape
 * (FastAPI answers them as 422 {"detail": [...]}), and the same in *err.
 */
int pbx__request_s4_refuse(struct pbx_request_shape *shape, const char *field, const char *kind,
                           const char *msg, struct pbx_error **err);

#endif
