/*
 * Parsing of execution requests, both dialects: the compatible `POST /execute`
 * and pybox's own `POST /v1/execute` (JSON).  Pure functions over bytes, no
 * syscalls (fuzzed by fuzz/fuzz_request.c).  On failure they name the error
 * type the dialect reports ("InvalidRequest", "ValidationError") and a
 * message that says what was wrong and where.
 */
#ifndef PBX_SERVER_REQUEST_H
#define PBX_SERVER_REQUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/engine.h"

struct pbx_http_request {
    char *code;                /* Python source (owned), NUL-terminated */
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
};

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
int pbx__request_parse_compat(const char *body, size_t len, const struct pbx_request_caps *caps,
                              struct pbx_http_request *out, const char **etype,
                              struct pbx_error **err);

/* Parse a JSON body of `POST /v1/execute` (`code`, `stdin`, `files`, `return_files`, `main`,
 * `timeout`, `memory_mb`, `network`). */
int pbx__request_parse_v1(const char *body, size_t len, const struct pbx_request_caps *caps,
                          struct pbx_http_request *out, const char **etype, struct pbx_error **err);

/* Add an input file (takes ownership of nothing: copies). Checks name, duplicates and caps. */
int pbx__request_add_file(struct pbx_http_request *r, const struct pbx_request_caps *caps,
                          const char *name, const void *data, size_t size, struct pbx_error **err);

/* Set the timeout asked, in seconds, once pbx_limits_check_timeout() passes it. */
int pbx__request_set_timeout(struct pbx_http_request *r, double seconds, struct pbx_error **err);

/* Decode strict base64 (standard alphabet, padding required, no whitespace) into a new buffer. */
int pbx__request_base64(const char *text, size_t len, size_t max, char **out, size_t *outlen);

/* Check the code once every field is in (multipart): present, no NUL, not blank. */
int pbx__request_finish(struct pbx_http_request *r, struct pbx_error **err);

void pbx__request_release(struct pbx_http_request *r);

#endif
