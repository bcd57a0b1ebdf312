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
 * Sessions keep an interpreter between runs (pybox_session_open(), "Sessions"
 * below), in both modes too; a callback set on a request sees its output as
 * it is produced (pybox_exec_set_event_callback(), "Streaming").
 *
 * Conventions, for every function below:
 *
 * - Handles are opaque (struct pybox_client, struct pybox_exec,
 *   struct pybox_result, struct pybox_error, struct pybox_session,
 *   struct pybox_cancel); each has one owner, who frees it
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
struct pybox_session;
struct pybox_cancel;

/*
 * What this header has beyond 0.1's first API, for #if: sessions, streaming
 * and rich outputs.  The ABI only grows: a later version adds functions and
 * codes, never changes one, and a struct the caller fills starts with its
 * `size`, so a program built against an older header keeps working.
 */
#define PYBOX_HAVE_SESSIONS 1

/*
 * And since: pybox_session_extend(), input files in struct
 * pybox_session_options, and local sessions ended at their idle time and
 * lifetime as a server ends its own.
 */
#define PYBOX_HAVE_SESSION_EXTEND 1

/*
 * And since: a run cancelled from another thread (struct pybox_cancel,
 * pybox_exec_set_cancel(), PYBOX_E_CANCELLED).
 */
#define PYBOX_HAVE_CANCEL 1

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
    PYBOX_E_GONE = 15,        /* the session has ended (HTTP 410, or locally); see */
                              /* pybox_session_dead_reason() */
    PYBOX_E_NOT_FOUND = 16,   /* no such session or session file (HTTP 404, or locally); */
                              /* or no such endpoint: the URL is not a pybox server's */
    PYBOX_E_CANCELLED = 17,   /* the caller cancelled the run (pybox_cancel_fire()) */
};

/* The highest code this version of the library returns. */
#define PYBOX_CODE_MAX 17

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

/* Free memory the library gave the caller to free (pybox_session_get_file(), ...); NULL is fine. */
PYBOX_API void pybox_free(void *p);

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
 * Free a client; in local mode this stops its sessions' reaper (waiting for
 * it) and then its engine (the sandbox processes and their cgroups go with
 * it).  No run may be in flight on it, and its sessions must be closed
 * first.  NULL is fine.
 */
PYBOX_API void pybox_client_free(struct pybox_client *client);

/* Whether the client talks to a server (true) or runs pybox in-process (false). */
PYBOX_API bool pybox_client_is_remote(const struct pybox_client *client);

/*
 * What the server lets this client do: the JSON of its `GET /v1/info` in
 * *json (free it with pybox_free()): the policy, the limits and their
 * defaults, the sessions' caps, the rate limits, the importable modules.
 * A local client has no server to ask: PYBOX_E_UNSUPPORTED.
 */
PYBOX_API enum pybox_code pybox_client_info(struct pybox_client *client, char **json,
                                            struct pybox_error **err);

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

/*
 * This run's memory limit in MiB (16 to 65536), over the client's default; 0: default.
 * A session's memory is the session's, set when it is opened: pybox_session_run()
 * refuses a request that sets one (PYBOX_E_INVALID, as the server does).
 */
PYBOX_API enum pybox_code pybox_exec_set_memory(struct pybox_exec *exec, unsigned mb);

/* ---- Streaming ---- */

/* What a streamed event carries. */
enum pybox_event_kind {
    PYBOX_EVENT_STDOUT = 1,  /* text the code wrote to stdout (UTF-8; invalid bytes U+FFFD) */
    PYBOX_EVENT_STDERR = 2,  /* the same of stderr */
    PYBOX_EVENT_DISPLAY = 3, /* a rich output (display(), a figure): its JSON object */
    PYBOX_EVENT_RESULT = 4,  /* a session's final expression's value: its JSON object */
};

/*
 * Called as the execution goes on, in order: `data` is `len` bytes, NUL-
 * terminated, valid only during the call.  For STDOUT and STDERR it is text
 * (a character is never split between events; the events of one stream put
 * together are the result's stdout or stderr); for DISPLAY and RESULT it is
 * the output's compact JSON object, {"type", "data", "metadata"}, the same
 * as the result's outputs then hold, in the same order.  Events come from
 * the thread that called pybox_run() or pybox_session_run(), before that
 * call returns; none come after it.  The callback must not call back into
 * the same session (pybox_session_interrupt() excepted).
 */
typedef void (*pybox_event_fn)(enum pybox_event_kind kind, const char *data, size_t len, void *arg);

/*
 * Have pybox_run() and pybox_session_run() of `exec` call `fn(kind, data,
 * len, arg)` as output arrives; fn NULL stops it.  Local mode calls it as
 * the engine reads the output; remote mode asks the server for Server-Sent
 * Events (`Accept: text/event-stream`) and calls it as they arrive (from a
 * server that does not stream, once the result is in: its stdout, stderr
 * and outputs).  The result is the same either way.  A request run by
 * several threads at once calls the same fn and arg from each of them.
 */
PYBOX_API enum pybox_code pybox_exec_set_event_callback(struct pybox_exec *exec, pybox_event_fn fn,
                                                        void *arg);

/* ---- Cancelling ---- */

/*
 * A cancel: fired once, from any thread, it stops every pybox_run() of a
 * request that carries it (pybox_exec_set_cancel()), those in progress and
 * those to come, which then return PYBOX_E_CANCELLED (the details say
 * whether the code had started).  A run that ended before the cancel took
 * effect returns its result as usual.  What was cancelled leaves nothing
 * behind: in local mode the sandboxed process is killed and reaped before
 * pybox_run() returns (the engine's kill, as at a timeout); in remote mode
 * the run asks for its answer as Server-Sent Events, and the cancel closes
 * its connection, on which the server kills the execution.  Only the start
 * of a local client's engine (on its first run) is not cut short: the code
 * is killed as soon as it starts.
 *
 *     struct pybox_cancel *cancel = NULL;
 *
 *     pybox_cancel_new(&cancel, NULL);
 *     pybox_exec_set_cancel(exec, cancel);
 *     ... pybox_run(client, exec, &res, &err) on one thread,
 *         pybox_cancel_fire(cancel) from another: pybox_run() returns PYBOX_E_CANCELLED ...
 *     pybox_cancel_free(cancel);                  (once no run of exec is in flight)
 *
 * A cancel stays fired: make a new one for the next run.  One cancel may be
 * carried by many requests, and so stop many runs at once.
 */
struct pybox_cancel;

/*
 * A new cancel, not fired, in *out (the caller owns it).  It holds one file
 * descriptor (an eventfd, close-on-exec).  PYBOX_E_NOMEM when out of memory
 * or of file descriptors.
 */
PYBOX_API enum pybox_code pybox_cancel_new(struct pybox_cancel **out, struct pybox_error **err);

/*
 * Fire it: the runs that carry it stop as soon as they can.  Idempotent.
 * Thread-safe and async-signal-safe (it is an atomic store and a write()),
 * so a SIGINT handler may call it.  NULL does nothing.
 */
PYBOX_API void pybox_cancel_fire(struct pybox_cancel *cancel);

/* Whether it was fired. Thread-safe; NULL is false. */
PYBOX_API bool pybox_cancel_fired(const struct pybox_cancel *cancel);

/*
 * Free it (its descriptor closed); no run that carries it may be in flight.
 * NULL is fine.
 */
PYBOX_API void pybox_cancel_free(struct pybox_cancel *cancel);

/*
 * Have the runs of `exec` stop when `cancel` fires (NULL: not cancellable,
 * the default).  Borrowed: the cancel must outlive every run of `exec` that
 * carries it.  For pybox_run() only: pybox_session_run() refuses a request
 * that carries one (PYBOX_E_INVALID; a session's call is stopped with
 * pybox_session_interrupt(), which keeps the session).
 */
PYBOX_API enum pybox_code pybox_exec_set_cancel(struct pybox_exec *exec,
                                                struct pybox_cancel *cancel);

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
 *   PYBOX_E_NOT_FOUND     HTTP 404: the URL is not that of a pybox server
 *   PYBOX_E_PROTOCOL      an answer that is not a pybox result (or over 256 MiB)
 *   PYBOX_E_ENGINE        the local engine failed to start or run (InternalServerError)
 *   PYBOX_E_CANCELLED     the request's cancel fired (pybox_exec_set_cancel()) before the
 *                         run ended; the code, if it had started, is gone
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
 * truncation flags, result, outputs, files with base64 contents, error,
 * timings; for a session's run also execution_count, state_preserved and
 * session).
 */
PYBOX_API const char *pybox_result_to_json(const struct pybox_result *res);

/*
 * Rich outputs, in the order produced (docs/api.md, "The result object"):
 * display() calls, matplotlib figures, and in a session the value of a final
 * expression statement.  Each has a type, "display" or "result", and data
 * under one or more MIME types: "text/plain" always, and "text/html",
 * "image/png", "image/svg+xml", "application/json" when the object has them.
 */
PYBOX_API size_t pybox_result_output_count(const struct pybox_result *res);

/* The i-th output's type, "display" or "result"; NULL for i >= count. */
PYBOX_API const char *pybox_result_output_type(const struct pybox_result *res, size_t i);

/* How many MIME types the i-th output has, and the j-th of them (NULL past the last). */
PYBOX_API size_t pybox_result_output_mime_count(const struct pybox_result *res, size_t i);
PYBOX_API const char *pybox_result_output_mime(const struct pybox_result *res, size_t i, size_t j);

/*
 * The i-th output's data as `mime`, NUL-terminated, its length in *len (if
 * not NULL); NULL (and 0) when it has none.  "image/png" is the PNG's bytes,
 * decoded from the answer's base64; "application/json" is compact JSON text;
 * the others are their text (UTF-8).
 */
PYBOX_API const void *pybox_result_output_data(const struct pybox_result *res, size_t i,
                                               const char *mime, size_t *len);

/* The i-th output's "text/plain" (every output has one); NULL for i >= count. */
PYBOX_API const char *pybox_result_output_text(const struct pybox_result *res, size_t i);

/* The i-th output's metadata as compact JSON text, e.g. {"image/png":{"width":640,...}}. */
PYBOX_API const char *pybox_result_output_metadata(const struct pybox_result *res, size_t i);

/* The i-th output as its compact JSON object, as an event carried it; NULL for i >= count. */
PYBOX_API const char *pybox_result_output_json(const struct pybox_result *res, size_t i);

/* The outputs as the compact JSON array the result object holds ("[]" when none). */
PYBOX_API const char *pybox_result_outputs_json(const struct pybox_result *res);

/*
 * For a result of pybox_session_run(): the calls run in the session so far,
 * this one included (restart starts again from 0), and whether the session
 * lives on with its state (false: the call ended it, see
 * pybox_session_dead_reason()).  For pybox_run(): 0 and false.
 */
PYBOX_API uint64_t pybox_result_execution_count(const struct pybox_result *res);
PYBOX_API bool pybox_result_state_preserved(const struct pybox_result *res);

/* ---- Sessions ---- */

/*
 * A session is an interpreter kept alive between runs, in the same sandbox
 * as every run: globals, imports and the files of /work stay from one
 * pybox_session_run() to the next.  Local mode keeps it in the client's
 * engine; remote mode is `/v1/sessions` on the server (docs/api.md,
 * "Sessions").  The same calls give the same results in both modes.
 *
 * A run follows Python's REPL (IPython's) rules: the value of a final
 * expression statement is a "result" output (a trailing `;` suppresses
 * it; `_` holds it afterwards), and tracebacks name the code `<cell N>`.
 * At its timeout a run is interrupted (KeyboardInterrupt); if the code
 * stops within a grace of a second the session lives on
 * (pybox_result_state_preserved()), else it is killed and the session
 * ends.  A memory kill or a crash ends it too.  An ended session's calls
 * fail with PYBOX_E_GONE, and pybox_session_dead_reason() says why.
 *
 * A session also ends when its idle time (idle_ttl_s, counted from the end
 * of its last call) or its lifetime (max_lifetime_s, from its opening) runs
 * out, in both modes alike: remotely the server's reaper ends it; locally
 * the client's reaper does, a thread of the client's own (started with its
 * first local session, asleep until the next deadline) that frees the
 * session's processes, cgroups and memory at once.  Its calls then fail
 * with PYBOX_E_GONE and the reason "idle_timeout" or "max_lifetime", as the
 * server's do.  A call in progress is never cut: the idle time does not run
 * during a call, and a lifetime that runs out during one ends the session
 * when the call is over (the call's result says so: state_preserved still
 * true, but pybox_session_dead_reason() "max_lifetime").
 *
 * Thread-safety: one call at a time per session: a second call (a run, a
 * restart, a file) while one is in flight fails with PYBOX_E_BUSY (type
 * "SessionBusy") in both modes.  pybox_session_interrupt(),
 * pybox_session_extend(), pybox_session_id() and pybox_session_dead_reason()
 * may be called from any thread at any time until pybox_session_close(),
 * which must not race anything of the caller's on the session (the reaper
 * it may race: close takes the session from it first, and a session the
 * reaper is ending is closed all the same).  Close every session before
 * freeing its client: pybox_client_free() stops the reaper and waits for it
 * (a session it is ending is freed before it returns).
 */
struct pybox_session;

/*
 * An input file of a session, put in /work when it opens: `name` is a flat
 * file name as pybox_exec_add_file() takes one, `data` its `size` bytes.
 * Borrowed: pybox_session_open() reads them and keeps nothing.
 */
struct pybox_input_file {
    const char *name; /* UTF-8, no '/', not "." or "..", 1 to 255 bytes */
    const void *data; /* its contents (NULL for size 0) */
    size_t size;      /* bytes */
};

/*
 * How to open a session: fill it with pybox_session_options_init() first
 * (the same `size` rule as struct pybox_config).  NULL options are the
 * defaults.
 */
struct pybox_session_options {
    size_t size;             /* sizeof(struct pybox_session_options), set by _init() */
    double timeout_s;        /* each run's wall-clock (and CPU) limit when the run sets none; */
                             /* 0: the client's, else pybox's (10 s) or the server's */
    unsigned memory_mb;      /* the session's memory limit for its whole life (16 to 65536); */
                             /* 0: the client's, else the default */
    unsigned idle_ttl_s;     /* end it after this long without a call; 0: the server's */
                             /* default (remote), none (local) */
    unsigned max_lifetime_s; /* end it this long after it was opened; 0: likewise */
    const struct pybox_input_file *files; /* input files for /work (borrowed); NULL: none */
    size_t nfiles;                        /* how many */
};

/*
 * The most idle_ttl_s and max_lifetime_s a local session may have, at its
 * opening and by pybox_session_extend(): those of a pybox server by default
 * (--session-max-idle-ttl, --session-max-lifetime).  A server has its own.
 */
#define PYBOX_SESSION_MAX_IDLE_TTL_S 3600u
#define PYBOX_SESSION_MAX_LIFETIME_S 86400u

/* Fill `opts` with the defaults. */
PYBOX_API void pybox_session_options_init(struct pybox_session_options *opts);

/*
 * Open a session on `client` (local mode starts the client's engine if it
 * has not yet), its input files (opts->files) in /work before its first
 * call: sent in `POST /v1/sessions` remotely, given to the engine's session
 * locally.  PYBOX_OK with *out, which the caller owns and ends with
 * pybox_session_close(); else a code and details: PYBOX_E_INVALID for
 * options out of range (locally a span over PYBOX_SESSION_MAX_*, remotely
 * over the caller's policy) or a bad file name (twice the same, too),
 * PYBOX_E_TOO_LARGE for input files over their caps (as a run's),
 * PYBOX_E_FORBIDDEN for a client that asks network (sessions have none),
 * PYBOX_E_RATE_LIMITED when the caller has as many sessions open as it may
 * (type "SessionLimitExceeded"), PYBOX_E_NOT_FOUND from a server without
 * sessions, and pybox_run()'s codes.
 */
PYBOX_API enum pybox_code pybox_session_open(struct pybox_client *client,
                                             const struct pybox_session_options *opts,
                                             struct pybox_session **out, struct pybox_error **err);

/* The session's id, e.g. "ses_0123...": the server's, or one made locally. Thread-safe. */
PYBOX_API const char *pybox_session_id(const struct pybox_session *session);

/*
 * Why the session ended, once a call found it ended (or ended it), or, in
 * local mode, once the reaper ended it: "timeout", "memory_limit",
 * "cpu_limit", "crashed", "idle_timeout", "max_lifetime", "deleted",
 * "closed", "lost" ...; NULL while it is not known to have ended (a remote
 * session's idle time or lifetime is known at its next call).  The pointer
 * is the session's, set once and valid until it is closed.  Thread-safe.
 */
PYBOX_API const char *pybox_session_dead_reason(const struct pybox_session *session);

/*
 * Run `exec` in the session, as pybox_run() runs it on the client: its code,
 * stdin, input files (written to /work first, where they stay), returned
 * files, main() mode, timeout (else the session's) and event callback; the
 * memory is the session's.  PYBOX_OK with *out for every run that ran or was
 * rejected, whatever its status, with execution_count and state_preserved;
 * otherwise pybox_run()'s codes, and PYBOX_E_GONE (the session had ended),
 * PYBOX_E_BUSY (another call of it runs), PYBOX_E_NOT_FOUND (the server does
 * not know it: it was restarted, or the session expired long ago).
 */
PYBOX_API enum pybox_code pybox_session_run(struct pybox_session *session,
                                            const struct pybox_exec *exec,
                                            struct pybox_result **out, struct pybox_error **err);

/*
 * Raise KeyboardInterrupt in the session's running call; the call ends as
 * the code lets it (an uncaught KeyboardInterrupt is an "error" result) and
 * the session keeps its state.  *interrupted (if not NULL) says whether a
 * call was running to be interrupted.  Thread-safe: made to be called from
 * another thread while pybox_session_run() waits (never from a signal
 * handler: remote mode makes an HTTP request).
 */
PYBOX_API enum pybox_code pybox_session_interrupt(struct pybox_session *session, bool *interrupted,
                                                  struct pybox_error **err);

/* A fresh interpreter in the session: globals gone, /work kept, execution_count back to 0. */
PYBOX_API enum pybox_code pybox_session_restart(struct pybox_session *session,
                                                struct pybox_error **err);

/*
 * The files of the session's /work.  A path is relative, of at most 8
 * components, none of them "." or ".." (e.g. "data/in.csv"), resolved beneath
 * /work without following symlinks; a put makes the parent directories.
 * Sizes are capped as input and returned files are.  PYBOX_E_NOT_FOUND for a
 * file that is not there, PYBOX_E_INVALID for a bad path, PYBOX_E_TOO_LARGE
 * over a cap, PYBOX_E_GONE when the session has ended.
 */
PYBOX_API enum pybox_code pybox_session_put_file(struct pybox_session *session, const char *path,
                                                 const void *data, size_t size,
                                                 struct pybox_error **err);

/* The file's bytes in *data (NUL-terminated; free it with pybox_free()) and *size. */
PYBOX_API enum pybox_code pybox_session_get_file(struct pybox_session *session, const char *path,
                                                 void **data, size_t *size,
                                                 struct pybox_error **err);

PYBOX_API enum pybox_code pybox_session_delete_file(struct pybox_session *session, const char *path,
                                                    struct pybox_error **err);

/*
 * The regular files of /work, recursively, as compact JSON text in *json (free
 * it with pybox_free()): [{"path": "data/in.csv", "size": 123, "mtime":
 * "2026-01-02T03:04:05.678Z"}, ...], as `GET /v1/sessions/{id}/files` lists them.
 */
PYBOX_API enum pybox_code pybox_session_list_files(struct pybox_session *session, char **json,
                                                   struct pybox_error **err);

/*
 * Change the session's idle time and lifetime (`PATCH /v1/sessions/{id}`
 * remotely, the same rules locally): each in whole seconds, 0 leaving it as
 * it is; the lifetime still counts from the opening, the idle time from the
 * end of the last call.  Either may grow or shrink.  PYBOX_E_INVALID
 * (type "ValidationError") for a span over the most (the server's, or
 * PYBOX_SESSION_MAX_* locally) or a lifetime the session is already older
 * than; PYBOX_E_GONE when the session has ended.  Thread-safe; answered
 * while a call runs, as the server answers a PATCH then.
 */
PYBOX_API enum pybox_code pybox_session_extend(struct pybox_session *session, unsigned idle_ttl_s,
                                               unsigned max_lifetime_s, struct pybox_error **err);

/*
 * End the session and free it: its processes, mounts, cgroups and files gone
 * (remote mode: `DELETE /v1/sessions/{id}`).  The handle is freed whatever
 * happens; the code says whether the server confirmed it (a session that had
 * ended already is PYBOX_OK).  NULL is fine.
 */
PYBOX_API enum pybox_code pybox_session_close(struct pybox_session *session,
                                              struct pybox_error **err);

#ifdef __cplusplus
}
#endif
#endif
