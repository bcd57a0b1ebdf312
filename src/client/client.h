/*
 * libpybox internals: the handles behind include/pybox/pybox.h and the two
 * modes behind pybox_run().
 *
 * Both modes end in the same place: the result object of docs/api.md as
 * JSON text, parsed by pbx__client_result_parse().  Remote mode gets that
 * text from the server; local mode makes it from the engine's result with the
 * same function and flags the server uses.  So a result read through the
 * accessors is the same in both modes by construction, down to how floats in
 * main()'s value are rounded and how invalid UTF-8 in the output is replaced.
 *
 * Sessions (session.c) follow the same rule: a local session's call is
 * turned into the JSON that `POST /v1/sessions/{id}/execute` answers, with
 * the server's extra fields made the same way, and parsed by the same
 * function.  Streamed events (pybox_exec_set_event_callback()) come from the
 * engine's callbacks in local mode (local.c) and from Server-Sent Events in
 * remote mode (remote.c), with the same text and the same output objects.
 *
 * Memory: this code runs inside other people's processes, so it never uses
 * xmalloc(); every allocation failure becomes PYBOX_E_NOMEM.  (Local mode
 * calls into the engine, which aborts on OOM as the server does.)
 */
#ifndef PBX_CLIENT_CLIENT_H
#define PBX_CLIENT_CLIENT_H

#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>

#include "engine/engine.h"
#include "pybox/pybox.h"

struct pbx_session;

struct pybox_error {
    enum pybox_code code; /* never PYBOX_OK */
    char *message;        /* one line, owned */
    char *type;           /* the error type (common/errtable.h), owned, or NULL */
    int http_status;      /* the server's answer, or 0 */
    unsigned retry_after; /* seconds from Retry-After, or 0 */
};

struct pybox_client {
    bool remote;                 /* a server URL was given */
    char *execute_url;           /* remote: {server}/v1/execute */
    char *shown_url;             /* the same without user:password@, for messages */
    char *base_url;              /* remote: {server}, no trailing slash */
    char *shown_base;            /* the same without user:password@ */
    char *auth_header;           /* remote: "Authorization: Bearer KEY", or NULL */
    double timeout_s;            /* default wall limit, 0: the other side's default */
    unsigned memory_mb;          /* default memory limit, 0: likewise */
    bool network;                /* ask for network */
    char *pybox_bin;             /* local: the binary that becomes the zygote */
    bool preload;                /* local: import numpy and PIL in the zygote */
    pthread_mutex_t start_lock;  /* local: held by the one thread starting the engine */
    pthread_mutex_t lock;        /* local: guards engine, start_done, stopping, start_err */
    pthread_cond_t cond;         /* local: start_done or stopping changed */
    struct pbx_engine *engine;   /* local: started on the first run, or NULL */
    bool keeper_started;         /* local: the keeper exists (under start_lock; free joins it) */
    pthread_t keeper;            /* local: the thread that started the engine (under start_lock) */
    bool start_done;             /* local: the keeper's start ended, well or not */
    bool stopping;               /* local: the client is being freed */
    struct pbx_error *start_err; /* local: why the keeper's start failed */
    /* Local sessions and their reaper (reaper.c). */
    pthread_mutex_t reap_lock;    /* guards the fields below; taken before a session's lock */
    pthread_cond_t reap_wake;     /* (CLOCK_MONOTONIC) a deadline changed, or stop */
    struct pybox_session *locals; /* the open local sessions, newest first */
    bool reaper_started;          /* the reaper thread was started (joined by _stop()) */
    bool reaper_stop;             /* it is to stop */
    pthread_t reaper;             /* it */
};

struct pbx_client_file {
    char *name;  /* flat name, owned */
    void *data;  /* contents, owned (never NULL) */
    size_t size; /* bytes */
};

struct pybox_exec {
    char *code;                    /* owned, NUL-terminated, or NULL until set */
    size_t code_len;               /* bytes */
    char *stdin_data;              /* owned, or NULL for no stdin */
    size_t stdin_len;              /* bytes */
    struct pbx_client_file *files; /* input files */
    size_t nfiles;                 /* their count */
    char **returns;                /* names asked back, owned */
    size_t nreturn;                /* their count */
    bool main_mode;                /* call main() */
    double timeout_s;              /* 0: the client's */
    unsigned memory_mb;            /* 0: the client's */
    pybox_event_fn on_event;       /* streamed events, or NULL */
    void *on_event_arg;            /* its argument */
    struct pybox_cancel *cancel;   /* borrowed, or NULL: not cancellable */
};

/*
 * A cancel: `fd` an eventfd, written once by pybox_cancel_fire() and never
 * read, so it stays readable (level-triggered) for every run that polls it,
 * in the engine (struct pbx_exec_request's cancel_fd) or in remote.c's
 * transfer loop.
 */
struct pybox_cancel {
    int fd;            /* the eventfd */
    atomic_bool fired; /* set before fd is written */
};

/* The cancel fd of `exec` (-1: none), and whether its cancel has fired. */
int pbx__client_cancel_fd(const struct pybox_exec *exec);
bool pbx__client_cancelled(const struct pybox_exec *exec);

struct pbx_result_file {
    char *name;  /* owned */
    char *data;  /* decoded contents (NUL-terminated copy), or NULL with error set */
    size_t size; /* bytes */
    char *error; /* why it was not returned, or NULL */
};

/* One MIME type's data of an output. */
struct pbx_result_mime {
    char *mime; /* e.g. "image/png", owned */
    char *data; /* decoded (PNG bytes), JSON text or text, NUL-terminated, owned */
    size_t len; /* its bytes */
};

/* One rich output (docs/api.md, "The result object"). */
struct pbx_result_output {
    char *type;                    /* "display" or "result", owned */
    struct pbx_result_mime *mimes; /* its data, in the object's order */
    size_t nmimes;                 /* their count */
    const char *text;              /* its text/plain, into mimes */
    char *metadata;                /* its metadata as compact JSON, owned */
    char *json;                    /* the whole output as compact JSON, owned */
};

struct pybox_result {
    enum pybox_status status;          /* what happened */
    bool has_exit_code;                /* false when killed or rejected */
    int exit_code;                     /* -1 when none */
    int signal;                        /* killing signal or 0 */
    char *out;                         /* stdout, NUL-terminated */
    size_t out_len;                    /* its length */
    bool out_truncated;                /* stdout was cut at its limit */
    char *err;                         /* stderr, NUL-terminated */
    size_t err_len;                    /* its length */
    bool err_truncated;                /* stderr was cut at its limit */
    char *value;                       /* main()'s value as JSON text, or NULL */
    char *error_type;                  /* error.type, or NULL */
    char *error_message;               /* error.message, or NULL */
    struct pbx_result_file *files;     /* returned files in the object's order */
    size_t nfiles;                     /* their count */
    double duration_ms;                /* wall time of the code */
    double cpu_ms;                     /* CPU time */
    uint64_t max_rss_kb;               /* peak memory */
    char *json;                        /* the whole result object, compact */
    struct pbx_result_output *outputs; /* rich outputs, in order */
    size_t noutputs;                   /* their count */
    char *outputs_json;                /* the outputs array, compact */
    uint64_t execution_count;          /* a session's run: calls so far, else 0 */
    bool state_preserved;              /* a session's run: the session lives on */
    char *dead_reason;                 /* a session's run that ended it: why, else NULL */
};

struct pybox_session {
    struct pybox_client *client; /* not owned: outlives the session */
    char id[64];                 /* "ses_..." */
    pthread_mutex_t lock;        /* guards dead_reason and, locally, the times */
    char *dead_reason;           /* why it ended, once known, or NULL */
    /* Local mode: ps, busy, last_ms and the spans under lock. */
    struct pbx_session *ps;           /* the engine's session, NULL once ended (and freed) */
    struct pbx_limits limits;         /* its limits: each run's defaults */
    bool busy;                        /* a call holds it */
    uint64_t opened_ms;               /* monotonic */
    uint64_t last_ms;                 /* the end of the last call, monotonic */
    unsigned idle_ttl_s;              /* 0: none */
    unsigned lifetime_s;              /* 0: none */
    struct pybox_session *next_local; /* the client's list of them (under client->reap_lock) */
    /* Remote mode. */
    char *url;        /* {server}/v1/sessions/{id} */
    char *shown_url;  /* the same without user:password@ */
    double timeout_s; /* each call's timeout as the server gave it (limits.timeout_s), or 0 */
};

/*
 * Make *err (when err is not NULL) a new error with `code`, an error type (the
 * server's, or the error table's for a failure of local mode; copied, NULL for
 * none), an HTTP status, Retry-After seconds and a printf-style message.
 * Returns `code`.  When even that allocation fails, *err is a static "out of
 * memory" error that pybox_error_free() leaves alone.
 */
enum pybox_code pbx__client_fail_type(struct pybox_error **err, enum pybox_code code,
                                      const char *type, int http_status, unsigned retry_after,
                                      const char *fmt, ...) __attribute__((format(printf, 6, 7)));

/* The same without a type: a failure of the client's own (argument, memory, transport). */
#define pbx__client_fail(err, code, http_status, retry_after, ...) \
    pbx__client_fail_type(err, code, NULL, http_status, retry_after, __VA_ARGS__)

/* The effective limits of `exec` on `client`: 0 means the other side's default. */
double pbx__client_timeout(const struct pybox_client *client, const struct pybox_exec *exec);
unsigned pbx__client_memory(const struct pybox_client *client, const struct pybox_exec *exec);

/*
 * Build a result from the JSON text of a result object (docs/api.md), the
 * answer to `exec`.  PYBOX_E_PROTOCOL when it is not one, or when it returns a
 * file whose name is not flat or that `exec` did not ask back (a name given,
 * a match of a pattern given; none when none was): the names
 * are the caller's to save under, never a server's to choose.  `request_id`,
 * which the server adds, is dropped.  The caller owns *out.
 */
enum pybox_code pbx__client_result_parse(const char *text, size_t len,
                                         const struct pybox_exec *exec, struct pybox_result **out,
                                         struct pybox_error **err);

/*
 * A timeout and a memory limit as the config, an exec or a session's options
 * give them: PYBOX_OK, or PYBOX_E_INVALID with *err saying which is out of range.
 */
enum pybox_code pbx__client_check_limits(double timeout_s, unsigned memory_mb,
                                         struct pybox_error **err);

/* A flat file name the engine takes (pbx_engine_check_name()) in valid UTF-8. */
bool pbx__client_valid_name(const char *name);

/* Run in this process, starting the engine on first use. */
enum pybox_code pbx__client_run_local(struct pybox_client *client, const struct pybox_exec *exec,
                                      struct pybox_result **out, struct pybox_error **err);

/* Stop the engine of a local client, if it was started. */
void pbx__client_local_free(struct pybox_client *client);

/* The client's engine in *engine, started on first use; a failed start is tried again later. */
enum pybox_code pbx__client_engine(struct pybox_client *client, struct pbx_engine **engine,
                                   struct pybox_error **err);

/*
 * A failure of local mode: the internal error `perr` (freed here) as the
 * error table names it (the code local mode has for its row, the row's
 * type), `prefix` (or NULL) before its message.  Returns the code.
 */
enum pybox_code pbx__client_local_fail(struct pybox_error **err, struct pbx_error **perr,
                                       const char *prefix);

/*
 * What local mode hands the engine for `exec`: the request (limits from
 * `base`, `timeout` and `memory` over them when not 0) and its input files
 * in *files (the caller frees the array; the names and bytes are exec's).
 */
enum pybox_code pbx__client_local_request(const struct pybox_exec *exec,
                                          const struct pbx_limits *base, double timeout,
                                          unsigned memory, struct pbx_exec_request *req,
                                          struct pbx_file_in **files, struct pybox_error **err);

/*
 * The engine's callbacks that feed exec's event callback: set on `req` by
 * _start() when exec has one (`ev` must outlive the run), and _finish() after
 * the run sends what was held back (the start of a character cut at the end).
 */
struct pbx_client_events {
    const struct pybox_exec *exec; /* its callback */
    char carry[3][4];              /* by enum pbx_stream: a character's start held back */
    size_t carry_len[3];           /* its bytes */
};

void pbx__client_events_start(struct pbx_client_events *ev, const struct pybox_exec *exec,
                              struct pbx_exec_request *req);
void pbx__client_events_finish(struct pbx_client_events *ev);

/*
 * The result of `exec` from the engine's `res` (released here): its JSON
 * object, `extra`'s members added (a session's fields; borrowed, NULL for
 * none), parsed as remote mode parses the server's.  The caller owns *out.
 */
enum pybox_code pbx__client_local_result(struct pbx_exec_result *res, json_t *extra,
                                         const struct pybox_exec *exec, struct pybox_result **out,
                                         struct pybox_error **err);

/* ---- local sessions' reaper (reaper.c) ---- */

/* Make the client's reaper fields (pybox_client_new()); _stop() and _release() undo it. */
void pbx__client_reaper_init(struct pybox_client *c);
void pbx__client_reaper_release(struct pybox_client *c);

/*
 * Put the open local session `s` in its client's list, which the reaper
 * watches, starting the reaper with the first one.  PYBOX_OK, or
 * PYBOX_E_ENGINE when the thread could not be started (`s` then is not in).
 */
enum pybox_code pbx__client_reaper_add(struct pybox_session *s, struct pybox_error **err);

/* Take `s` out of the list: once this returns, the reaper never touches `s` again. */
void pbx__client_reaper_remove(struct pybox_session *s);

/* A deadline of a session of `c` moved (a call ended, its spans changed): the reaper looks again.
 */
void pbx__client_reaper_poke(struct pybox_client *c);

/* Stop the reaper and wait for it (a session it is ending is freed first).  Idempotent. */
void pbx__client_reaper_stop(struct pybox_client *c);

/*
 * Why the local session `s` (its lock held) has ended by `now`
 * (monotonic ms): "max_lifetime" or "idle_timeout" (static text), or NULL,
 * with *due (when not NULL) the next moment one of them runs out
 * (UINT64_MAX: never).  The idle time does not run while a call holds it.
 */
const char *pbx__client_session_expired(const struct pybox_session *s, uint64_t now, uint64_t *due);

/* ---- sessions, remote mode (remote.c) ---- */

/* POST /v1/sessions, with `files` in its body: fills s->id and s->url. */
enum pybox_code pbx__client_session_open_remote(struct pybox_session *s, double timeout_s,
                                                unsigned memory_mb, unsigned idle_ttl_s,
                                                unsigned max_lifetime_s,
                                                const struct pybox_input_file *files, size_t nfiles,
                                                struct pybox_error **err);

/* POST .../execute, streamed when exec has an event callback. */
enum pybox_code pbx__client_session_run_remote(struct pybox_session *s,
                                               const struct pybox_exec *exec,
                                               struct pybox_result **out, struct pybox_error **err);

/* What a session operation other than a run does over HTTP. */
enum pbx_client_session_op {
    PBX_CLIENT_SESSION_INTERRUPT, /* POST .../interrupt: *out_body "true"/"false" */
    PBX_CLIENT_SESSION_RESTART,   /* POST .../restart */
    PBX_CLIENT_SESSION_PUT,       /* PUT .../files/{path} */
    PBX_CLIENT_SESSION_GET,       /* GET .../files/{path}: the bytes in *out_body */
    PBX_CLIENT_SESSION_DELETE,    /* DELETE .../files/{path} */
    PBX_CLIENT_SESSION_LIST,      /* GET .../files: the array as JSON text in *out_body */
    PBX_CLIENT_SESSION_CLOSE,     /* DELETE the session */
    PBX_CLIENT_SESSION_PATCH,     /* PATCH the session: `data` is the JSON body */
};

/*
 * Do `op` on the session; *out_body (NUL-terminated, caller frees) and
 * *out_len for GET, LIST and INTERRUPT (out_body may be NULL for the others).
 */
enum pybox_code pbx__client_session_op_remote(struct pybox_session *s,
                                              enum pbx_client_session_op op, const char *path,
                                              const void *data, size_t size, char **out_body,
                                              size_t *out_len, struct pybox_error **err);

/* Record why the session ended (copied; the first reason stays). Thread-safe. */
void pbx__client_session_dead(struct pybox_session *s, const char *reason);

/* `GET /v1/info` of the client's server: its body in *json (malloc'ed). */
enum pybox_code pbx__client_info_remote(struct pybox_client *client, char **json,
                                        struct pybox_error **err);

/* Run through `POST /v1/execute` on the client's server. */
enum pybox_code pbx__client_run_remote(struct pybox_client *client, const struct pybox_exec *exec,
                                       struct pybox_result **out, struct pybox_error **err);

#endif
