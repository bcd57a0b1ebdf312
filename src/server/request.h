/*
 * Reading of execution requests: the compatible `POST /execute` (JSON) and
 * pybox's own `POST /v1/execute`, as JSON or as multipart/form-data.  One
 * validator for every body: each field of a dialect has one taker, which
 * reads a JSON value or a form part's text into the same fields of struct
 * pbx_http_request with the same checks (names, duplicates, sizes, the
 * timeout's range, booleans, unknown fields) and the same messages.  Pure
 * functions over bytes, no syscalls (fuzzed by fuzz/fuzz_request.c).  On
 * failure they name the error type the dialect reports ("InvalidRequest",
 * "ValidationError") and a message that says what was wrong and where.
 * request.c holds the fields and their takers, request_json.c reads JSON
 * bodies, request_form.c multipart/form-data ones.
 */
#ifndef PBX_SERVER_REQUEST_H
#define PBX_SERVER_REQUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "engine/engine.h"

struct pbx_http_request {
    char *code;                /* Python source (owned), NUL-terminated */
    const char *code_field;    /* the field it came in, "code" or "script" (static), or NULL */
    size_t code_len;           /* bytes */
    size_t code_chars;         /* Unicode characters, for the character limit */
    char *stdin_data;          /* owned, or NULL */
    size_t stdin_len;          /* bytes */
    struct pbx_file_in *files; /* input files (names and data owned) */
    size_t nfiles;             /* their count */
    char **return_files;       /* names to return (owned) */
    size_t nreturn;            /* their count */
    bool main_mode;            /* call main() */
    bool has_timeout;          /* a timeout was given */
    double timeout_s;          /* that timeout, seconds (pbx_limits_check_timeout() passed it) */
    bool has_memory;           /* memory_mb was given */
    uint64_t memory_mb;        /* asked memory limit */
    bool network;              /* network access asked for */
    char *api_key;             /* key given in the body (owned), or NULL */
    bool has_idle_ttl;         /* a session's idle_ttl_s was given */
    uint32_t idle_ttl_s;       /* that idle time, seconds */
    bool has_lifetime;         /* a session's max_lifetime_s was given */
    uint32_t max_lifetime_s;   /* that lifetime, seconds */
};

/* The longest idle time or lifetime a session's request may name, seconds (a year). */
#define PBX_REQUEST_SPAN_MAX_S 31536000

/* Limits the parser enforces itself, before anything is decoded in full. */
struct pbx_request_caps {
    size_t max_files;      /* input files */
    size_t max_file_bytes; /* decoded size of each */
    size_t max_return;     /* returned files asked */
    size_t max_stdin;      /* stdin bytes */
};

/*
 * Parse a body of `POST /execute` (`code` or `script`, `api_key`,
 * `stdin_data`, `attachments`, `files`, `return_files`, `timeout`,
 * `allow_network`).  Returns 0, or < 0 with *etype and *err set.
 */
int pbx__request_json_parse_compat(const char *body, size_t len,
                                   const struct pbx_request_caps *caps,
                                   struct pbx_http_request *out, const char **etype,
                                   struct pbx_error **err);

/*
 * Whose rules a request of the compatible endpoints follows (docs/api.md,
 * "Which rules answer"): the FastAPI server's (S4) when a `POST /execute`
 * body names `timeout`, `allow_network` or `files` at its top level, as that
 * server's client always does, and for every `POST /execute-with-files`;
 * otherwise the "Python Sandbox API"'s (S1), whose minimal request is also
 * the minimal Flask runner's.  S4's rules add its schema: `code` a string,
 * `timeout` a whole number from 1 to 300, `allow_network` a boolean, `files`
 * an object of strings, each refused as FastAPI refuses it (422, in
 * pydantic's words) before any other check.
 */
struct pbx_request_shape {
    bool s4;           /* S4's rules: every execution a 200, its schema, `detail` in errors */
    const char *field; /* the field S4's schema refused (static), or NULL */
    const char *kind;  /* how, as pydantic names it ("missing", "int_type", ...) (static) */
    const char *msg;   /* and in its words ("Field required", ...) (static) */
    char key[256];     /* for `files`, the name whose value was refused, or "" */
};

/*
 * Parse a body of `POST /execute` as pbx__request_json_parse_compat() does, and
 * say whose rules it follows in *shape (cleared first).  Under S4's rules, a
 * refusal of its schema comes first, with *etype "UnprocessableEntity" and
 * shape->field set.  *shape is filled on failure too.
 */
int pbx__request_json_parse_execute(const char *body, size_t len,
                                    const struct pbx_request_caps *caps,
                                    struct pbx_http_request *out, struct pbx_request_shape *shape,
                                    const char **etype, struct pbx_error **err);

/* Parse a JSON body of `POST /v1/execute` (`code`, `stdin`, `files`, `return_files`, `main`,
 * `timeout`, `memory_mb`, `network`). */
int pbx__request_json_parse_v1(const char *body, size_t len, const struct pbx_request_caps *caps,
                               struct pbx_http_request *out, const char **etype,
                               struct pbx_error **err);

/*
 * Parse a JSON body of `POST /v1/sessions` (`timeout`, `memory_mb`,
 * `idle_ttl_s`, `max_lifetime_s`, `files`) or, with `patch`, of `PATCH
 * /v1/sessions/{id}` (`idle_ttl_s`, `max_lifetime_s`).  Every field is
 * optional, and an empty body is `{}`.
 */
int pbx__request_json_parse_session(const char *body, size_t len, bool patch,
                                    const struct pbx_request_caps *caps,
                                    struct pbx_http_request *out, const char **etype,
                                    struct pbx_error **err);

/*
 * Parse a JSON body of `POST /v1/sessions/{id}/execute`: /v1/execute's
 * fields but `memory_mb` (refused: the session's) and `network` (`code`,
 * `stdin`, `files`, `return_files`, `main`, `timeout`).
 */
int pbx__request_json_parse_session_call(const char *body, size_t len,
                                         const struct pbx_request_caps *caps,
                                         struct pbx_http_request *out, const char **etype,
                                         struct pbx_error **err);

/* Add an input file (takes ownership of nothing: copies). Checks name, duplicates and caps. */
int pbx__request_add_file(struct pbx_http_request *r, const struct pbx_request_caps *caps,
                          const char *name, const void *data, size_t size, struct pbx_error **err);

/*
 * The request's code (copied), checked as a body's is: present, no NUL,
 * UTF-8, not blank; its characters counted.  For a request that arrives
 * another way than a body (MCP's run_python).
 */
int pbx__request_set_code(struct pbx_http_request *r, const char *code, size_t len,
                          struct pbx_error **err);

/* Add a name to return (copied), checked as `return_files`' names are. */
int pbx__request_add_return(struct pbx_http_request *r, const struct pbx_request_caps *caps,
                            const char *name, struct pbx_error **err);

/* Decode strict base64 (standard alphabet, padding required, no whitespace) into a new buffer. */
int pbx__request_base64(const char *text, size_t len, size_t max, char **out, size_t *outlen);

/*
 * A multipart/form-data body of `POST /v1/execute`, read as its parts
 * arrive.  Its fields are those of the JSON body, each text part the value
 * of one: `code`, `stdin`, `main` and `network` (true, 1, on; false, 0, off
 * or empty), `timeout` and `memory_mb` (read as JSON numbers), and
 * `return_files`, the one field given once per value.  Every part with a
 * filename is an input file, its bytes as they are (no base64); an empty
 * filename is an empty file input, which adds nothing.  A field given twice
 * is refused, as a JSON body's duplicate key is.  The first refusal is kept
 * and the rest of the body read and dropped; pbx__request_form_finish()
 * answers it.
 */
struct pbx_request_form {
    struct pbx_http_request req;    /* the request so far */
    struct pbx_request_caps caps;   /* what the parser enforces */
    bool upload;                    /* POST /execute-with-files: its fields, S4's rules */
    struct pbx_request_shape shape; /* whose rules; what S4's schema refused */
    unsigned seen;                  /* fields given so far, one bit per field of the dialect */
    char field[32];                 /* the text field being read, or "" */
    struct pbx_buf value;           /* its value so far */
    bool in_file;                   /* the part being read is the last input file's */
    size_t file_alloc;              /* bytes allocated for that file's data */
    struct pbx_error *err;          /* the first refusal, or NULL */
};

void pbx__request_form_init(struct pbx_request_form *f, const struct pbx_request_caps *caps);

/*
 * The same for a body of `POST /execute-with-files`, under S4's rules: its
 * fields are `code`, `timeout` and `allow_network`, each checked against S4's
 * schema first (a refusal sets f->shape.field, as pbx__request_json_parse_execute()
 * does), and every part with a filename (S4's client names them `files`) is an
 * input file.
 */
void pbx__request_form_init_upload(struct pbx_request_form *f, const struct pbx_request_caps *caps);

/*
 * One chunk of a part, as libmicrohttpd's post processor hands them over:
 * `name` is the part's field name, `filename` its file name or NULL for a
 * text field, `off` the chunk's offset in the part (0 starts a part).
 */
void pbx__request_form_data(struct pbx_request_form *f, const char *name, const char *filename,
                            const char *data, uint64_t off, size_t size);

/* Refuse the body with `msg` (when nothing was refused before): the framing itself failed. */
void pbx__request_form_refuse(struct pbx_request_form *f, const char *msg);

/*
 * The body ended: check the request as a JSON body's is checked once all its
 * fields are in, and hand it to *out.  Returns 0, or < 0 with *err (the
 * first refusal; a "ValidationError", or S4's schema's when f->shape.field
 * is set).  Release `f` after either.
 */
int pbx__request_form_finish(struct pbx_request_form *f, struct pbx_http_request *out,
                             struct pbx_error **err);

void pbx__request_form_release(struct pbx_request_form *f);

void pbx__request_release(struct pbx_http_request *r);

#endif
