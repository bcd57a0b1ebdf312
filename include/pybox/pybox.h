/*
 * libpybox: one client interface to pybox, local or remote.
 *
 * A program makes the same calls whether pybox runs in-process on this
 * machine (local mode: no server, the sandbox engine is started inside the
 * calling process on the first run) or as a `pybox serve` somewhere else
 * (remote mode: `POST {server}/v1/execute` over HTTP).  The mode is chosen by
 * the configuration alone: no server URL means local, a URL means remote.
 *
 *     struct pybox_client *client = NULL;
 *     struct pybox_exec *exec = pybox_exec_new();
 *     struct pybox_result *res = NULL;
 *
 *     pybox_client_new_from_env(&client, NULL);         (PYBOX_SERVER unset: local)
 *     pybox_exec_set_code(exec, "print(6*7)", (size_t)-1);
 *     if (pybox_run(client, exec, &res, NULL) == PYBOX_OK)
 *         fputs(pybox_result_stdout(res, NULL), stdout);  (prints 42)
 *     pybox_result_free(res);
 *     pybox_exec_free(exec);
 *     pybox_client_free(client);
 *
 * Conventions, for every function below:
 *
 * - Handles are opaque (struct pybox_client, struct pybox_exec,
 *   struct pybox_result, struct pybox_error); each has one owner, who frees it
 *   with its _free function.  Freeing NULL does nothing.
 * - A fallible function returns enum pybox_code: PYBOX_OK (0) on success, a
 *   positive code otherwise.  Those that take `struct pybox_error **err` also
 *   store the details of a failure there (message, HTTP status, Retry-After)
 *   when err is not NULL; the caller frees it with pybox_error_free().  On
 *   success *err is left untouched.  Nothing is kept in globals or
 *   thread-locals: the details of a failure belong to the call that failed.
 * - An execution that ran to any end (ok, error, timeout, memory_limit,
 *   killed) or was refused by the import policy (rejected) is PYBOX_OK with a
 *   result.  Error codes are for runs that did not happen: a bad request, an
 *   unreachable or refusing server, a failed engine.
 * - Strings are UTF-8 and NUL-terminated unless a length is given; a length of
 *   (size_t)-1 means "up to the NUL".
 * - Out of memory is reported as PYBOX_E_NOMEM, never by aborting, except
 *   inside the local engine itself, which aborts the process on OOM as the
 *   pybox server does.
 */
#ifndef PYBOX_PYBOX_H
#define PYBOX_PYBOX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pybox/version.h"

#ifdef __cplusplus
extern "C" {
#endif

#ifndef PYBOX_API
#    define PYBOX_API __attribute__((visibility("default")))
#endif

/* The opaque handles, described where their functions are. */
struct pybox_client;
struct pybox_exec;
struct pybox_result;
struct pybox_error;

/* ---- Errors ---- */

/*
 * Result codes.  The numbers are part of the ABI: a code is never renumbered
 * or reused; a retired one becomes PYBOX_E_OBSOLETEnn.
 */
enum pybox_code {
    PYBOX_OK = 0,             /* success */
    PYBOX_E_INVALID = 1,      /* a bad argument or request (HTTP 400, or locally) */
    PYBOX_E_NOMEM = 2,        /* out of memory */
    PYBOX_E_CONNECT = 3,      /* the server could not be reached (refused, no such host) */
    PYBOX_E_TIMEOUT = 4,      /* no answer from the server in time (transport, not the code) */
    PYBOX_E_UNAUTHORIZED = 5, /* HTTP 401: the API key is not valid or was revoked */
    PYBOX_E_FORBIDDEN = 6,    /* HTTP 403: the caller's policy does not allow the request */
    PYBOX_E_RATE_LIMITED = 7, /* HTTP 429: rate limit or daily quota; see retry_after */
    PYBOX_E_BUSY = 8,         /* HTTP 503: every execution slot of the server is busy */
    PYBOX_E_TOO_LARGE = 9,    /* the request is over a size limit (HTTP 413, or locally) */
    PYBOX_E_UNSUPPORTED = 10, /* not available in this mode or on this server (HTTP 501) */
    PYBOX_E_SERVER = 11,      /* the server failed (HTTP 500 or another unexpected status) */
    PYBOX_E_PROTOCOL = 12,    /* the server's answer is not a pybox result */
    PYBOX_E_ENGINE = 13,      /* the local engine could not start or failed */
    PYBOX_E_TRANSPORT = 14,   /* another transport failure (connection reset, TLS, ...) */
};

/* The highest code this version of the library returns. */
#define PYBOX_CODE_MAX 14

/* A one-line description of `code`, e.g. "the server could not be reached". Thread-safe. */
PYBOX_API const char *pybox_strerror(int code);

/* The code's name, e.g. "PYBOX_E_CONNECT"; "PYBOX_E_UNKNOWN" for others. Thread-safe. */
PYBOX_API const char *pybox_code_name(int code);

/*
 * The details of one failed call.  Owned by the caller that received it;
 * read it from any thread, free it once with pybox_error_free().
 */
struct pybox_error;

/* The failure's code (never PYBOX_OK). */
PYBOX_API enum pybox_code pybox_error_code(const struct pybox_error *err);

/*
 * What went wrong, in one line: the server's own message for HTTP errors,
 * the transport's for connection failures.  Valid until the error is freed.
 */
PYBOX_API const char *pybox_error_message(const struct pybox_error *err);

/*
 * The error's type, the name both modes give the same failure: in remote mode
 * the server's `error.type` ("ValidationError", "PayloadTooLarge",
 * "RateLimitExceeded", ..., docs/api.md); in local mode the type the server
 * would answer with ("ValidationError", "PayloadTooLarge", "NetworkNotAllowed",
 * "InternalServerError" for a failed engine).  NULL when the failure is the
 * client's own (a bad argument, out of memory, the connection) or the answer
 * named no type.  The code follows from it (docs/design/error-handling.md has
 * the table).  Valid until the error is freed.
 */
PYBOX_API const char *pybox_error_type(const struct pybox_error *err);

/* The HTTP status the server answered with, or 0 (local mode, transport failures). */
PYBOX_API int pybox_error_http_status(const struct pybox_error *err);

/*
 * Seconds the server asked to wait before retrying (its Retry-After header,
 * on PYBOX_E_RATE_LIMITED and PYBOX_E_BUSY), or 0 when it said nothing.
 */
PYBOX_API unsigned pybox_error_retry_after(const struct pybox_error *err);

/* Free an error; NULL is fine. */
PYBOX_API void pybox_error_free(struct pybox_error *err);

/* ---- Version ---- */

/* The library's version at run time, e.g. "0.1.0" (compare with PYBOX_VERSION_STRING). */
PYBOX_API const char *pybox_version(void);

/* ---- Client ---- */

/*
 * How to build a client.  Always fill it with pybox_config_init() first, then
 * set what you need: fields added by later versions then keep their
 * defaults, and `size` tells the library which fields the caller knows.
 * The strings are copied by pybox_client_new(); the struct may be discarded
 * afterwards.
 */
struct pybox_config {
    size_t size;           /* sizeof(struct pybox_config), set by pybox_config_init() */
    const char *server;    /* remote mode: the server's base URL, e.g. "http://host:8080"; */
                           /* NULL or "" for local mode */
    const char *api_key;   /* remote mode: sent as `Authorization: Bearer KEY`; NULL: none */
    double timeout_s;      /* default wall-clock limit of each run; 0: pybox's (10 s) in */
                           /* local mode, the server's in remote mode */
    unsigned memory_mb;    /* default memory limit in MiB (16 to 65536); 0: the default */
    bool network;          /* ask for network access: the server refuses it (403 or 501); */
                           /* local mode, which has the anonymous policy, as a server */
                           /* refuses an anonymous caller: PYBOX_E_FORBIDDEN */
    const char *pybox_bin; /* local mode: the pybox binary to start the sandbox with; */
                           /* NULL: env PYBOX_BIN, else the installed one */
    bool preload;          /* local mode: import numpy and PIL before the first run */
};

/* Fill `cfg` with the defaults: local mode, no key, default limits. */
PYBOX_API void pybox_config_init(struct pybox_config *cfg);

/*
 * Overlay `cfg` with the environment: PYBOX_SERVER, PYBOX_API_KEY,
 * PYBOX_TIMEOUT (seconds), PYBOX_MEMORY_MB, PYBOX_NETWORK (1/true/yes or
 * 0/false/no) and PYBOX_BIN; a variable that is unset or empty leaves its
 * field alone.  The strings point into the environment, so build the
 * client before changing it.  PYBOX_E_INVALID when a value does not parse.
 * Not thread-safe against concurrent setenv().
 */
PYBOX_API enum pybox_code pybox_config_from_env(struct pybox_config *cfg, struct pybox_error **err);

/*
 * A client: local or remote as `cfg` says.  Runs nothing yet (local mode
 * starts its engine lazily on the first pybox_run()).  PYBOX_E_INVALID for
 * a malformed configuration (a URL that is not http:// or https://, a key
 * with control characters, limits out of range).  The caller owns *out.
 */
PYBOX_API enum pybox_code pybox_client_new(const struct pybox_config *cfg,
                                           struct pybox_client **out, struct pybox_error **err);

/* pybox_config_init(), pybox_config_from_env() and pybox_client_new() in one call. */
PYBOX_API enum pybox_code pybox_client_new_from_env(struct pybox_client **out,
                                                    struct pybox_error **err);

/*
 * Free a client; in local mode this stops its engine (the sandbox processes
 * and their cgroups go with it).  No run may be in flight on it.  NULL is fine.
 */
PYBOX_API void pybox_client_free(struct pybox_client *client);

/* Whether the client talks to a server (true) or runs pybox in-process (false). */
PYBOX_API bool pybox_client_is_remote(const struct pybox_client *client);

/* ---- Execution requests ---- */

/*
 * An execution request, built step by step and then given to pybox_run().
 * One request may be run many times, also by many threads at once, as long
 * as nobody modifies it meanwhile; the setters are not thread-safe.
 * Every setter copies what it is given.
 */
struct pybox_exec;

/* A new, empty request (no code yet); NULL when out of memory. The caller owns it. */
PYBOX_API struct pybox_exec *pybox_exec_new(void);

/* Free a request; NULL is fine. */
PYBOX_API void pybox_exec_free(struct pybox_exec *exec);

/* The Python source to run (UTF-8; run in /work as main.py). Replaces earlier code. */
PYBOX_API enum pybox_code pybox_exec_set_code(struct pybox_exec *exec, const char *code,
                                              size_t len);

/*
 * What the script reads on stdin; none (empty) by default.  Remote mode sends
 * it as JSON text, so there it must be valid UTF-8 (else pybox_run() fails
 * with PYBOX_E_UNSUPPORTED).
 */
PYBOX_API enum pybox_code pybox_exec_set_stdin(struct pybox_exec *exec, const void *data,
                                               size_t len);

/*
 * Put a file in /work before the code runs.  `name` is a flat file name
 * in UTF-8 (no '/', not "." or "..", 1 to 255 bytes): PYBOX_E_INVALID
 * otherwise or when the name is already added.
 */
PYBOX_API enum pybox_code pybox_exec_add_file(struct pybox_exec *exec, const char *name,
                                              const void *data, size_t size);

/*
 * Ask for /work/NAME back after the run (a flat name as above; `*`, `?` and
 * `[...]` match several).  A file that is missing comes back with an error
 * text instead of contents.
 */
PYBOX_API enum pybox_code pybox_exec_add_return(struct pybox_exec *exec, const char *name);

/* main() mode: run the code, call its main() and return its value as JSON. */
PYBOX_API enum pybox_code pybox_exec_set_main(struct pybox_exec *exec, bool main_mode);

/* This run's wall-clock (and CPU) limit in seconds, over the client's default; 0: default. */
PYBOX_API enum pybox_code pybox_exec_set_timeout(struct pybox_exec *exec, double seconds);

/* This run's memory limit in MiB (16 to 65536), over the client's default; 0: default. */
PYBOX_API enum pybox_code pybox_exec_set_memory(struct pybox_exec *exec, unsigned mb);

/* ---- Running ---- */

/*
 * Run `exec` on `client` and wait for its result.  PYBOX_OK with *out set
 * for every execution that ran or was rejected by policy, whatever its
 * status; the caller owns *out and frees it with pybox_result_free().
 * Otherwise a code, *out untouched, and details in *err.  A request that one
 * mode refuses gets the same code and pybox_error_type() from the other when
 * it refuses it too (docs/design/error-handling.md says where they differ):
 *
 *   PYBOX_E_INVALID       bad request (no code, ...; HTTP 400 with the server's message)
 *   PYBOX_E_TOO_LARGE     code, stdin, a file or the request over a size limit (HTTP 413,
 *                         or the same limits locally)
 *   PYBOX_E_CONNECT       the server could not be reached
 *   PYBOX_E_TIMEOUT       the server did not answer within the run's timeout plus 30 s
 *   PYBOX_E_UNAUTHORIZED  HTTP 401          PYBOX_E_FORBIDDEN    HTTP 403, network locally
 *   PYBOX_E_RATE_LIMITED  HTTP 429 (pybox_error_retry_after() says when to retry)
 *   PYBOX_E_BUSY          HTTP 503          PYBOX_E_UNSUPPORTED  HTTP 501, stdin remotely
 *   PYBOX_E_SERVER        HTTP 500 or another status
 *   PYBOX_E_PROTOCOL      an answer that is not a pybox result (or over 256 MiB)
 *   PYBOX_E_ENGINE        the local engine failed to start or run (InternalServerError)
 *   PYBOX_E_NOMEM, PYBOX_E_TRANSPORT
 *
 * Thread-safe: many threads may run on one client at once (local mode shares
 * one engine; remote mode uses one connection per run).
 */
PYBOX_API enum pybox_code pybox_run(struct pybox_client *client, const struct pybox_exec *exec,
                                    struct pybox_result **out, struct pybox_error **err);

/* ---- Results ---- */

/* What happened to an execution (the `status` of the result object). */
enum pybox_status {
    PYBOX_STATUS_OK = 0,           /* exit status 0 */
    PYBOX_STATUS_ERROR = 1,        /* non-zero exit status or an uncaught exception */
    PYBOX_STATUS_TIMEOUT = 2,      /* the wall-clock or CPU limit */
    PYBOX_STATUS_MEMORY_LIMIT = 3, /* the memory limit */
    PYBOX_STATUS_KILLED = 4,       /* another signal */
    PYBOX_STATUS_REJECTED = 5,     /* refused by policy before it ran (syntax, imports) */
};

/* "ok", "error", "timeout", "memory_limit", "killed", "rejected"; "unknown" for others. */
PYBOX_API const char *pybox_status_name(int status);

/*
 * The result of one execution: immutable, readable from any thread, freed
 * once by its owner.  Every pointer an accessor returns is owned by the
 * result and valid until pybox_result_free().
 */
struct pybox_result;

/* Free a result; NULL is fine. */
PYBOX_API void pybox_result_free(struct pybox_result *res);

PYBOX_API enum pybox_status pybox_result_status(const struct pybox_result *res);

/* Whether the script exited by itself (false when killed by a signal or rejected). */
PYBOX_API bool pybox_result_has_exit_code(const struct pybox_result *res);

/* Its exit status, or -1 when it has none. */
PYBOX_API int pybox_result_exit_code(const struct pybox_result *res);

/* The signal that killed it (e.g. 9), or 0. */
PYBOX_API int pybox_result_signal(const struct pybox_result *res);

/*
 * Its stdout and stderr as kept (UTF-8; invalid bytes became U+FFFD), NUL-
 * terminated; the length, which counts NULs inside, goes to *len if not NULL.
 */
PYBOX_API const char *pybox_result_stdout(const struct pybox_result *res, size_t *len);
PYBOX_API const char *pybox_result_stderr(const struct pybox_result *res, size_t *len);

/* Whether output beyond the limit was dropped. */
PYBOX_API bool pybox_result_stdout_truncated(const struct pybox_result *res);
PYBOX_API bool pybox_result_stderr_truncated(const struct pybox_result *res);

/* In main() mode, what main() returned as compact JSON text, e.g. "{\"n\":3}"; else NULL. */
PYBOX_API const char *pybox_result_json(const struct pybox_result *res);

/*
 * Why it failed, if it did: the error's type ("SyntaxError",
 * "ForbiddenImportError", "ZeroDivisionError", "TimeoutError", ...) and
 * message, or NULL for both.
 */
PYBOX_API const char *pybox_result_error_type(const struct pybox_result *res);
PYBOX_API const char *pybox_result_error_message(const struct pybox_result *res);

/* The returned files asked for, in the order asked, patterns expanded. */
PYBOX_API size_t pybox_result_file_count(const struct pybox_result *res);

/* The i-th returned file's name (i < count), else NULL. */
PYBOX_API const char *pybox_result_file_name(const struct pybox_result *res, size_t i);

/* Its contents and size, or NULL when it could not be returned (see _file_error). */
PYBOX_API const void *pybox_result_file_data(const struct pybox_result *res, size_t i,
                                             size_t *size);

/* Why it could not be returned ("not found", ...), or NULL when it was. */
PYBOX_API const char *pybox_result_file_error(const struct pybox_result *res, size_t i);

/* The index of the returned file called `name`, or -1. */
PYBOX_API long pybox_result_file_find(const struct pybox_result *res, const char *name);

/* Wall time and CPU time of the code in milliseconds, and its peak memory in KiB. */
PYBOX_API double pybox_result_duration_ms(const struct pybox_result *res);
PYBOX_API double pybox_result_cpu_ms(const struct pybox_result *res);
PYBOX_API uint64_t pybox_result_max_rss_kb(const struct pybox_result *res);

/*
 * The whole result as the compact JSON object `pybox run --json` prints and
 * `POST /v1/execute` returns (status, exit_code, signal, stdout, stderr,
 * truncation flags, result, files with base64 contents, error, timings).
 */
PYBOX_API const char *pybox_result_to_json(const struct pybox_result *res);

#ifdef __cplusplus
}
#endif
#endif
