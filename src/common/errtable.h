/*
 * The one error table (docs/design/error-handling.md): every error type a pybox
 * server answers, and every failure a client meets without such an answer, with
 * the name each vocabulary of pybox gives it.  The server takes its HTTP statuses
 * and its types from here, libpybox its codes (by the answer's type, falling back
 * to its status, in remote mode; by the internal code in local mode), `pybox run`
 * its exit statuses, and python/pybox/errors.py copies the types and exception
 * classes, which tests/client/test_error_table.py holds to this table.
 *
 * XX(id, type, status, remote, local, exit, python, from)
 *
 *   id      the row's name: PBX_ERRTABLE_<id> (internal; rows are looked up by
 *           type, status or code, never by number)
 *   type    the answer's `error.type` (docs/api.md), or NULL for a failure that
 *           is no answer of a pybox server
 *   status  its HTTP status, or 0
 *   remote  libpybox's enum pybox_code for it in remote mode
 *   local   the same in local mode, or PBX_ERRTABLE_NONE when local mode cannot
 *           meet it (no keys, no policy, no HTTP, no transport)
 *   exit    `pybox run`'s exit status when the request failed so
 *   python  the Python package's exception class (python/pybox/errors.py), or
 *           NULL when it has none
 *   from    the internal code (common/error.h) of a refused request that selects
 *           this row in pbx_errtable_of_code(), PBX_ERRTABLE_ANY for the row of
 *           every other code, or 0
 *
 * The first row with a status is what that status means when an answer has no
 * type this table knows; a 5xx without a row is an InternalServerError, any
 * other status an UNEXPECTED_STATUS.
 */
#ifndef PBX_COMMON_ERRTABLE_H
#define PBX_COMMON_ERRTABLE_H

#include <stdbool.h>
#include <stddef.h>

#include "common/error.h"
#include "pybox/pybox.h"

/* `pybox run`'s exit statuses when a request did not run (sysexits.h numbers where they fit). */
#define PBX_EXIT_USAGE       2   /* bad usage, or a request refused as invalid or too large */
#define PBX_EXIT_UNAVAILABLE 69  /* the server could not be reached or did not answer */
#define PBX_EXIT_TEMPFAIL    75  /* the server is busy or a rate limit was reached: retry later */
#define PBX_EXIT_NOPERM      77  /* the API key is not valid or not allowed this */
#define PBX_EXIT_FAILURE     125 /* pybox itself failed */

#define PBX_ERRTABLE_NONE 0  /* `local`: local mode has no equivalent */
#define PBX_ERRTABLE_ANY  -1 /* `from`: every internal code no other row names */

/* clang-format off */
#define PBX_ERRTABLE_MAP(XX)                                                                      \
    /* The body is empty, not JSON, not an object, nested too deep or of too many values; */      \
    /* Content-Length and Transfer-Encoding disagree; multipart without a boundary. */            \
    XX(INVALID_REQUEST, "InvalidRequest", 400, PYBOX_E_INVALID, PBX_ERRTABLE_NONE,                \
       PBX_EXIT_USAGE, "InvalidRequest", 0)                                                       \
    /* A field missing, of the wrong type or unknown; bad base64; a bad or duplicate file */      \
    /* name; a timeout or memory over the caller's limit or out of range.  On /execute */         \
    /* also everything over a limit (PBX_E_TOO_LARGE), as that dialect's contract says. */        \
    XX(VALIDATION_ERROR, "ValidationError", 400, PYBOX_E_INVALID, PYBOX_E_INVALID,                \
       PBX_EXIT_USAGE, "InvalidRequest", PBX_E_INVAL)                                             \
    /* /execute only, where a run that did not succeed is an error; on /v1/execute these */       \
    /* are results (status rejected, timeout, error, memory_limit, killed). */                    \
    XX(SYNTAX_ERROR, "SyntaxError", 400, PYBOX_E_INVALID, PBX_ERRTABLE_NONE,                      \
       PBX_EXIT_USAGE, "InvalidRequest", 0)                                                       \
    XX(FORBIDDEN_IMPORT_ERROR, "ForbiddenImportError", 400, PYBOX_E_INVALID, PBX_ERRTABLE_NONE,   \
       PBX_EXIT_USAGE, "InvalidRequest", 0)                                                       \
    XX(TIMEOUT_ERROR, "TimeoutError", 400, PYBOX_E_INVALID, PBX_ERRTABLE_NONE,                    \
       PBX_EXIT_USAGE, "InvalidRequest", 0)                                                       \
    XX(RUNTIME_ERROR, "RuntimeError", 400, PYBOX_E_INVALID, PBX_ERRTABLE_NONE,                    \
       PBX_EXIT_USAGE, "InvalidRequest", 0)                                                       \
    /* An API key that is not valid or was revoked, or a malformed credential header (auth.c): */ \
    /* local mode has no keys. */                                                                 \
    XX(UNAUTHORIZED, "Unauthorized", 401, PYBOX_E_UNAUTHORIZED, PBX_ERRTABLE_NONE,                \
       PBX_EXIT_NOPERM, "Unauthorized", 0)                                                        \
    /* Network asked by a caller whose policy does not allow it, as local mode's (the */          \
    /* anonymous policy) does not. */                                                             \
    XX(NETWORK_NOT_ALLOWED, "NetworkNotAllowed", 403, PYBOX_E_FORBIDDEN, PYBOX_E_FORBIDDEN,       \
       PBX_EXIT_NOPERM, "Forbidden", 0)                                                           \
    /* No such endpoint or method: the URL is not a pybox server's.  No such session (unknown, */ \
    /* another caller's, or of an earlier run of the server) or session file (PBX_E_NOTFOUND). */ \
    XX(NOT_FOUND, "NotFound", 404, PYBOX_E_NOT_FOUND, PYBOX_E_NOT_FOUND,                          \
       PBX_EXIT_FAILURE, "PyboxError", PBX_E_NOTFOUND)                                            \
    XX(METHOD_NOT_ALLOWED, "MethodNotAllowed", 405, PYBOX_E_SERVER, PBX_ERRTABLE_NONE,            \
       PBX_EXIT_FAILURE, "PyboxError", 0)                                                         \
    /* A call on a session while another of its calls runs (PBX_E_BUSY); Retry-After: 1. */       \
    XX(SESSION_BUSY, "SessionBusy", 409, PYBOX_E_BUSY, PYBOX_E_BUSY,                              \
       PBX_EXIT_TEMPFAIL, "SessionBusy", PBX_E_BUSY)                                              \
    /* A call on a session that has ended (PBX_E_GONE): `reason` says why. */                     \
    XX(SESSION_DEAD, "SessionDead", 410, PYBOX_E_GONE, PYBOX_E_GONE,                              \
       PBX_EXIT_FAILURE, "SessionDead", PBX_E_GONE)                                               \
    /* Over a size limit: the body over --max-body or over the largest valid request, and */      \
    /* on /v1/execute the code (its characters over the caller's limit too), stdin, a */          \
    /* file, or the number of files or names; locally the same limits, and input files */         \
    /* that do not fit the disk limit. */                                                         \
    XX(PAYLOAD_TOO_LARGE, "PayloadTooLarge", 413, PYBOX_E_TOO_LARGE, PYBOX_E_TOO_LARGE,           \
       PBX_EXIT_USAGE, "RequestTooLarge", PBX_E_TOO_LARGE)                                        \
    /* A body that is not JSON (or multipart/form-data on /v1/execute). */                        \
    XX(UNSUPPORTED_MEDIA_TYPE, "UnsupportedMediaType", 415, PYBOX_E_SERVER, PBX_ERRTABLE_NONE,    \
       PBX_EXIT_FAILURE, "PyboxError", 0)                                                         \
    /* A session or MCP session whose id names another node (pybox serve --node-id): */           \
    /* error_details.node names it, for the proxy in front that should have routed it. */         \
    XX(MISDIRECTED_REQUEST, "MisdirectedRequest", 421, PYBOX_E_NOT_FOUND, PBX_ERRTABLE_NONE,      \
       PBX_EXIT_FAILURE, "PyboxError", 0)                                                         \
    /* Under the FastAPI server's rules (POST /execute in its shape, POST */                      \
    /* /execute-with-files): a field its schema refuses, answered as it answers it. */            \
    XX(UNPROCESSABLE_ENTITY, "UnprocessableEntity", 422, PYBOX_E_INVALID, PBX_ERRTABLE_NONE,      \
       PBX_EXIT_USAGE, "InvalidRequest", 0)                                                       \
    /* The per-minute window or the daily quota; Retry-After says when to retry. */               \
    XX(RATE_LIMIT_EXCEEDED, "RateLimitExceeded", 429, PYBOX_E_RATE_LIMITED, PBX_ERRTABLE_NONE,    \
       PBX_EXIT_TEMPFAIL, "RateLimited", 0)                                                       \
    /* As many sessions open as the caller (or the server) may have: Retry-After says when */     \
    /* the first of them expires at the latest. */                                                \
    XX(SESSION_LIMIT_EXCEEDED, "SessionLimitExceeded", 429, PYBOX_E_RATE_LIMITED,                 \
       PBX_ERRTABLE_NONE, PBX_EXIT_TEMPFAIL, "TooManySessions", 0)                                \
    /* pybox failed: the store, the engine (every internal code no row above names); in */        \
    /* local mode the engine could not start or failed. */                                        \
    XX(INTERNAL_SERVER_ERROR, "InternalServerError", 500, PYBOX_E_SERVER, PYBOX_E_ENGINE,         \
       PBX_EXIT_FAILURE, "ServerError", PBX_ERRTABLE_ANY)                                         \
    /* Network asked by a caller allowed it: no execution has one.  Local mode has no such */     \
    /* caller. */                                                                                 \
    XX(NETWORK_UNAVAILABLE, "NetworkUnavailable", 501, PYBOX_E_UNSUPPORTED, PBX_ERRTABLE_NONE,    \
       PBX_EXIT_FAILURE, "Unsupported", 0)                                                        \
    /* Every slot busy and the queue full or its wait over, or the memory budget spent. */        \
    XX(SERVER_BUSY, "ServerBusy", 503, PYBOX_E_BUSY, PBX_ERRTABLE_NONE,                           \
       PBX_EXIT_TEMPFAIL, "ServerBusy", 0)                                                        \
    /* The store (keys, quotas) did not answer within its timeout: a request that needs */        \
    /* it is refused (the daily quota fails closed); Retry-After says when to retry. */           \
    XX(STORE_UNAVAILABLE, "StoreUnavailable", 503, PYBOX_E_BUSY, PBX_ERRTABLE_NONE,               \
       PBX_EXIT_TEMPFAIL, "ServerBusy", 0)                                                        \
    /* No answer of a pybox server.  An HTTP status and type no row above has: */                 \
    XX(UNEXPECTED_STATUS, NULL, 0, PYBOX_E_SERVER, PBX_ERRTABLE_NONE,                             \
       PBX_EXIT_FAILURE, "PyboxError", 0)                                                         \
    /* A 200 that is not a result object, or an answer over 256 MiB: */                           \
    XX(PROTOCOL, NULL, 0, PYBOX_E_PROTOCOL, PBX_ERRTABLE_NONE,                                    \
       PBX_EXIT_FAILURE, "ServerError", 0)                                                        \
    /* Connection refused, no such host; no answer in time; reset, TLS and the like: */           \
    XX(CONNECT, NULL, 0, PYBOX_E_CONNECT, PBX_ERRTABLE_NONE,                                      \
       PBX_EXIT_UNAVAILABLE, "ConnectionError", 0)                                                \
    XX(TIMEOUT, NULL, 0, PYBOX_E_TIMEOUT, PBX_ERRTABLE_NONE,                                      \
       PBX_EXIT_UNAVAILABLE, "ConnectionError", 0)                                                \
    XX(TRANSPORT, NULL, 0, PYBOX_E_TRANSPORT, PBX_ERRTABLE_NONE,                                  \
       PBX_EXIT_UNAVAILABLE, "ConnectionError", 0)                                                \
    /* The client ran out of memory (Python raises its own MemoryError). */                       \
    XX(NOMEM, NULL, 0, PYBOX_E_NOMEM, PYBOX_E_NOMEM,                                              \
       PBX_EXIT_FAILURE, NULL, 0)                                                                 \
    /* The caller cancelled the run (pybox_cancel_fire()); Python has KeyboardInterrupt. */       \
    XX(CANCELLED, NULL, 0, PYBOX_E_CANCELLED, PYBOX_E_CANCELLED,                                  \
       PBX_EXIT_FAILURE, NULL, 0)
/* clang-format on */

enum pbx_errtable_id {
#define PBX_XX_ID(id, type, status, remote, local, exit, python, from) PBX_ERRTABLE_##id,
    PBX_ERRTABLE_MAP(PBX_XX_ID)
#undef PBX_XX_ID
        PBX_ERRTABLE_COUNT
};

/* One row, as described above. */
struct pbx_errtable_row {
    enum pbx_errtable_id id; /* PBX_ERRTABLE_<id> */
    const char *name;        /* "<id>", e.g. "PAYLOAD_TOO_LARGE" */
    const char *type;        /* the answer's error type, or NULL */
    int status;              /* its HTTP status, or 0 */
    enum pybox_code remote;  /* libpybox's code in remote mode */
    int local;               /* its code in local mode, or PBX_ERRTABLE_NONE */
    int exit;                /* `pybox run`'s exit status */
    const char *python;      /* the Python exception class, or NULL */
    int from;                /* the internal code that selects it, PBX_ERRTABLE_ANY or 0 */
};

/* Row `id`, or NULL past the last (so `for (i = 0; (r = pbx_errtable_get(i)); i++)` walks all). */
const struct pbx_errtable_row *pbx_errtable_get(size_t id);

/* The row of error type `type` (case-sensitive), or NULL when no row has it. */
const struct pbx_errtable_row *pbx_errtable_of_type(const char *type);

/*
 * What an answer with HTTP `status` means when its type says nothing: the first
 * row with that status, else INTERNAL_SERVER_ERROR for a 5xx, else
 * UNEXPECTED_STATUS.  Never NULL.
 */
const struct pbx_errtable_row *pbx_errtable_of_status(int status);

/* The server's answer: by its type when the table knows it, else by its status. Never NULL. */
const struct pbx_errtable_row *pbx_errtable_of_answer(const char *type, int status);

/*
 * The row that answers an execution request refused with internal `code` (an
 * enum pbx_code or errno value, as pbx_error_set() stores it, by the request's
 * parser, the caller's policy or the engine): the row whose `from` is `code`,
 * else INTERNAL_SERVER_ERROR.  The compatible dialect (`compat`, POST /execute)
 * answers every refused field as a ValidationError, over a limit too, as its
 * contract says; only a body too large to read is a PayloadTooLarge there.
 * Never NULL.
 */
const struct pbx_errtable_row *pbx_errtable_of_code(int code, bool compat);

/*
 * The first row whose libpybox code is `code` in local mode (`local`) or remote
 * mode, for a failure that has no type; NULL for PYBOX_OK and unknown codes.
 */
const struct pbx_errtable_row *pbx_errtable_of_pybox_code(int code, bool local);

/* The HTTP status of error type `type`; 500 when no row has it. */
int pbx_errtable_status(const char *type);

#endif
