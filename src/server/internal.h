/*
 * What the files of pybox serve share: the server, one request as it
 * arrives, and the answering functions.  Not an interface for anything
 * outside src/server.
 */
#ifndef PBX_SERVER_INTERNAL_H
#define PBX_SERVER_INTERNAL_H

#include <jansson.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/buf.h"
#include "policy/caller.h"
#include "server/admit.h"
#include "server/request.h"
#include "server/server.h"
#include "server/timing.h"
#include "store/store.h"

enum route {
    R_EXECUTE,
    R_V1_EXECUTE,
    R_HEALTH,
    R_METRICS,
    R_OPENAPI,
    R_ROOT,
    R_INFO,
    R_DOCS,
    R_EXECUTE_FILES, /* POST /execute-with-files, the FastAPI server's upload */
    R_HEALTHY,       /* GET /health, in the FastAPI server's shape */
    R_ASSETS,
    R_SESSIONS, /* /v1/sessions and every path under it, sessions.c */
    R_MCP,      /* /mcp, the Model Context Protocol over Streamable HTTP, mcp_http.c */
    R_READY,    /* /v1/ready: whether this node should get requests (the store answers) */
    R_OTHER,
    R_COUNT,
};

#define NBUCKET 12 /* latency histogram buckets, see metrics.c */
#define NSTATUS 19 /* HTTP statuses counted one by one, see metrics.c */

struct metrics {
    atomic_ulong requests[R_COUNT][NSTATUS + 1]; /* by route and status (last: other) */
    atomic_ulong executions[6];                  /* by enum pbx_status */
    atomic_ulong latency[NBUCKET + 1];           /* execute latency histogram (last: +Inf) */
    atomic_ulong latency_count;                  /* observations */
    atomic_ullong latency_sum_us;                /* their sum */
    atomic_ullong faults_prep;                   /* page faults of jobs before their code */
    atomic_ullong faults_run;                    /* and from their code on */
    atomic_ulong budget_refusals;                /* 503s because the memory budget was spent */
    atomic_ulong deadline_drops;                 /* connections cut at the request deadline */
};

struct watch;        /* the connection watchdog, watch.c */
struct pbx_sessions; /* the sessions, session_table.c */
struct mcp_table;    /* the MCP sessions of /mcp, mcp_http.c */
struct key_cache;    /* the keys served while the store fails, key_cache.c */
struct audit_spool;  /* the audit records kept while the store fails, audit_spool.c */
struct node_claim;   /* the node's claim on its id, node_claim.c */

struct pbx_server {
    const struct pbx_server_config *cfg; /* as given */
    struct pbx_server_executor ex;       /* runs executions */
    struct pbx_store *store;             /* keys, quotas, audit (not owned) */
    struct pbx_admit *admit;             /* client identity, windows, the cap */
    struct pbx_caller_config callers;    /* the anonymous policy and the admin key, from cfg */
    char *anon_modules;                  /* callers.anon_modules, parsed from cfg->modules */
    struct metrics metrics;              /* counters for /metrics */
    atomic_ulong seq;                    /* request ids */
    char id_salt[9];                     /* random per process, in request ids */
    atomic_size_t budget_used;           /* bytes held by requests in flight */
    size_t budget;                       /* their most, cfg->memory_budget */
    size_t max_valid_body;               /* the largest body a valid execute request can be */
    struct pbx_request_caps caps;        /* what the request parser enforces, from cfg->limits */
    struct MHD_Daemon *daemon;           /* the HTTP daemon, once started */
    struct watch *watch;                 /* request deadlines, once started */
    struct pbx_sessions *sessions;       /* the open sessions and the reaper that ends them */
    struct mcp_table *mcp;               /* the MCP sessions of /mcp */
    struct key_cache *keys;              /* the keys seen, for a store outage */
    struct audit_spool *audit;           /* the audit log's writer */
    struct node_claim *node;             /* the claim on cfg->node_id, or NULL (not owned) */
};

/*
 * A request refused: how a step says it, to be answered (an HTTP error,
 * pbx__http_send_refusal()) or told another way (an MCP tool's isError).
 */
struct pbx_refusal {
    const char *type;     /* the error type (static): the status, by the error table */
    char *msg;            /* what was wrong and what to do (owned) */
    unsigned retry_after; /* seconds, for Retry-After (0: none) */
    json_t *extra;        /* fields added to error_details (owned), or NULL */
};

/*
 * A multipart/form-data body of POST /v1/execute being read (multipart.c):
 * libmicrohttpd's parser, and the form reader of request_form.c it feeds.
 */
struct multipart {
    struct MHD_PostProcessor *pp; /* the parser, or NULL when the body is not a form */
    struct pbx_request_form form; /* the fields and files so far */
};

/* Per connection: the request as it arrives, and what was answered. */
struct request_ctx {
    char id[72];           /* X-Request-Id: this server's, or a trusted proxy's */
    bool id_forwarded;     /* id is the proxy's: the same for a request the proxy sends again */
    struct pbx_buf body;   /* capped body */
    bool too_large;        /* the body passed the cap */
    bool over_budget;      /* the server's memory budget could not hold it */
    size_t held;           /* bytes of the budget this request holds */
    size_t discarded;      /* bytes received past the cap (or all, for multipart) */
    bool answered;         /* a response was queued */
    bool close;            /* close the connection after the answer */
    int status;            /* HTTP status answered */
    enum route route;      /* for metrics and the log */
    uint64_t start_ms;     /* arrival */
    uint64_t start_ns;     /* and on CLOCK_MONOTONIC, in ns, for Server-Timing */
    char client[64];       /* client address */
    char method[16];       /* request method, for the log */
    struct multipart form; /* a multipart/form-data body, as its parts arrive */
    bool s4;               /* it follows the FastAPI server's rules: errors carry `detail` */
    char path[160];        /* request path, cut at 159 bytes, for the log */
    const char *allow;     /* the methods the route takes, named by a 405's Allow header */
    size_t body_cap;       /* the most body bytes kept, by route and method (0: none kept) */
    /* An execution's step times, answered in Server-Timing when `on` (--server-timing). */
    struct pbx_server_timing timing;
};

/* ---- server.c: the server's life and its memory budget ---- */

/*
 * Take `n` more bytes of the server's memory budget for `ctx`; false (and
 * nothing taken) when the budget cannot hold them.  Everything taken is given
 * back by pbx__server_budget_release(), once the request is over.
 */
bool pbx__server_budget_take(struct pbx_server *s, struct request_ctx *ctx, size_t n);
void pbx__server_budget_release(struct pbx_server *s, struct request_ctx *ctx);

/*
 * The most an answer can hold in the server while it is built, taken from
 * the budget for every admitted execution: for /v1/execute the result (at
 * most the answer limit), its JSON tree (files in base64, 4/3 of their size)
 * and the JSON text (as much again); for the compatible dialect (`compat`),
 * whose answer carries stdout and stderr three times and the files twice,
 * as server.c counts it.
 */
size_t pbx__server_answer_reserve(const struct pbx_limits *l, bool compat);

/* Answer 503: the budget cannot hold the request (counted in the metrics). */
enum MHD_Result pbx__server_budget_spent(struct pbx_server *s, struct MHD_Connection *c,
                                         struct request_ctx *ctx);

/* The same refusal, in *no (counted too). */
void pbx__server_budget_refusal(struct pbx_server *s, struct pbx_refusal *no);

/* ---- http.c: libmicrohttpd's callbacks, the routes, the answers ---- */

/* libmicrohttpd's access handler: each request's headers, then its body, then its answer. */
enum MHD_Result pbx__http_on_request(void *cls, struct MHD_Connection *c, const char *url,
                                     const char *method, const char *version,
                                     const char *upload_data, size_t *upload_size, void **con_cls);

/* A request is over, answered or not: counted, logged and freed. */
void pbx__http_on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                            enum MHD_RequestTerminationCode toe);

/* libmicrohttpd's own messages, into pybox's log. */
void pbx__http_log(void *cls, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));

/* The path of a route, as /metrics labels it ("other" for R_OTHER). */
const char *pbx__http_route_name(enum route r);

/* `ms` (Unix time, milliseconds) as "YYYY-MM-DDTHH:MM:SS.mmmZ". */
void pbx__http_iso_time(uint64_t ms, char *out, size_t len);

/*
 * The headers every answer carries: X-Request-Id, CORS (the allowed origin,
 * the headers exposed, Vary), nosniff, and Connection: close when the
 * request is to close the connection.
 */
void pbx__http_add_headers(struct MHD_Response *r, struct MHD_Connection *c,
                           const struct request_ctx *ctx, const struct pbx_server *s);

/*
 * Queue `len` bytes of `data` (malloc'ed, taken over; NULL for no body) as
 * the answer: Content-Type `content_type` (NULL: none), Cache-Control:
 * no-store, the usual headers, WWW-Authenticate on a 401, Allow (ctx->allow)
 * on a 405, Retry-After when `retry_after`, and `headers`, a NULL-terminated
 * list of names and values (or NULL).
 */
enum MHD_Result pbx__http_send_bytes(struct MHD_Connection *c, struct request_ctx *ctx,
                                     const struct pbx_server *s, int status, char *data, size_t len,
                                     const char *content_type, unsigned retry_after,
                                     const char *const *headers);

/* Queue `text` (taken over) as the answer. */
enum MHD_Result pbx__http_send_text(struct MHD_Connection *c, struct request_ctx *ctx,
                                    const struct pbx_server *s, int status, char *text,
                                    const char *content_type, unsigned retry_after);

/* Queue `body` (a reference taken over), with the request id added, as JSON. */
enum MHD_Result pbx__http_send_json(struct MHD_Connection *c, struct request_ctx *ctx,
                                    const struct pbx_server *s, int status, json_t *body,
                                    unsigned retry_after);

/*
 * An error in the shape every route shares: {status: "error", timestamp_utc,
 * error_details: {type, message, ...}, error}, where `error` is the message
 * itself on the compatible endpoints (/execute, /execute-with-files: the
 * minimal Flask runner and the main() runner document a string there) and
 * the same object as error_details elsewhere.  `message` may hold any
 * bytes: what is not UTF-8 is replaced.  `extra` (taken over) adds fields to
 * error_details.  A new reference.
 */
json_t *pbx__http_error_body(const struct request_ctx *ctx, const char *type, const char *message,
                             json_t *extra);

/*
 * Queue pbx__http_error_body() with the request id and the HTTP status of
 * its type; a request under the FastAPI server's rules also gets its
 * `detail`, the message.
 */
enum MHD_Result pbx__http_send_error(struct MHD_Connection *c, struct request_ctx *ctx,
                                     const struct pbx_server *s, const char *type,
                                     const char *message, unsigned retry_after, json_t *extra);

/* Fill *no (released first): `msg` copied, `extra` taken over. */
void pbx__refusal_set(struct pbx_refusal *no, const char *type, const char *msg,
                      unsigned retry_after, json_t *extra);
void pbx__refusal_release(struct pbx_refusal *no);

/* Answer the refusal `no` as pbx__http_send_error() does, and release it. */
enum MHD_Result pbx__http_send_refusal(struct MHD_Connection *c, struct request_ctx *ctx,
                                       const struct pbx_server *s, struct pbx_refusal *no);

/* ---- metrics.c: the counters and GET /metrics ---- */

/* Count a finished request of `route` answered with `status`. */
void pbx__metrics_count(struct pbx_server *s, enum route route, int status);

/* Count a finished execution that took `ms`. */
void pbx__metrics_observe(struct pbx_server *s, const struct pbx_exec_result *res, uint64_t ms);

/* The requests answered, the executions run and those of them that ended ok, so far. */
void pbx__metrics_totals(struct pbx_server *s, unsigned long *requests, unsigned long *executions,
                         unsigned long *ok);

/* GET /metrics. */
enum MHD_Result pbx__metrics_handle(struct pbx_server *s, struct MHD_Connection *c,
                                    struct request_ctx *ctx);

/* ---- watch.c: the connection watchdog (request deadlines) ---- */

/* Start the watchdog thread: each connection's request must arrive, and its answer leave, within
 * `span_s`. */
int pbx__watch_start(struct pbx_server *s, unsigned span_s, struct pbx_error **err);

/* Stop it and free it; nothing when it was not started. */
void pbx__watch_stop(struct pbx_server *s);

/* libmicrohttpd's connection notifications: a connection is watched from its start to its end. */
void pbx__watch_on_connection(void *cls, struct MHD_Connection *c, void **socket_ctx,
                              enum MHD_ConnectionNotificationCode code);

/* Restart the connection's deadline from now, or (`none`) lift it while an execution runs. */
void pbx__watch_deadline(struct pbx_server *s, struct MHD_Connection *c, bool none);

/* ---- auth.c: who sent a request ---- */

/*
 * The API key the request's headers carry: 0 with *token pointing into the
 * request (NULL when none was sent), or < 0 with *err, a message for an
 * Unauthorized answer that says the expected form, when a header tries to
 * authenticate and fails to (see auth.c).
 */
int pbx__auth_token(struct MHD_Connection *c, const char **token, struct pbx_error **err);

/*
 * Resolve the caller of `c`: the key of its headers, else `body_key` (the
 * compatible body's `api_key`, or NULL), through pbx_caller_resolve() and the
 * store.  Returns 0, or < 0 with *etype ("Unauthorized" or
 * "InternalServerError") and *err.  *who needs pbx_caller_release() either way.
 */
int pbx__auth_resolve(struct pbx_server *s, struct MHD_Connection *c, const char *body_key,
                      struct pbx_caller *who, const char **etype, struct pbx_error **err);

/* ---- info.c: GET /v1/info ---- */

/* GET /v1/info: the caller's policy (the anonymous one without a key), or 401 for a bad key. */
enum MHD_Result pbx__info_handle(struct pbx_server *s, struct MHD_Connection *c,
                                 struct request_ctx *ctx);

/* ---- stream.c: an answer as Server-Sent Events, fed by a worker thread ---- */

/* One streamed answer (stream.c). */
struct stream;

/*
 * A stream's work, run on its worker thread: it sends events with
 * pbx__stream_event() and, by giving an execution pbx__stream_on_output(),
 * pbx__stream_on_display() and pbx__stream_cancel_fd() (with the stream as
 * on_output_arg), what the code prints and shows, and that the client left.
 * It returns the data of the `end` event (a new reference, taken over; NULL
 * for {}); when that is an object whose `error` is an object, an `error`
 * event with it goes just before `end`.
 */
typedef json_t *(*pbx_stream_work_fn)(struct stream *st, void *arg);

/*
 * What gives back what the work held (a slot, a hold, the request): called
 * once, on the worker thread, after the work returned and before `error` and
 * `end` are queued, so a client that has `end` sees all of it given back.
 */
typedef void (*pbx_stream_done_fn)(void *arg);

/*
 * Answer the request of `c` with 200 text/event-stream (Cache-Control:
 * no-cache, X-Accel-Buffering: no and the usual headers) whose first event
 * is `start`: `start` (taken over; NULL for {}) with the request id added.
 * Then work(st, arg) runs on a thread of its own and done(arg) after it;
 * the events go out as they come, text coalesced (pbx__stream_on_output()),
 * with a keepalive comment after 5 s of silence (half of client_timeout_s
 * when that is shorter).  A client that closes its connection cancels:
 * pbx__stream_cancel_fd() turns readable and events are dropped from then
 * on.  The stream takes over the request's share of the memory budget and
 * gives it back, the thread joined, once the connection is done with it;
 * nothing of the work may use `ctx` or `c`.
 * Returns 0 with *ret for libmicrohttpd; or < 0 with *err when it could not
 * start, nothing answered and neither work nor done called.
 */
int pbx__stream_start(struct pbx_server *s, struct MHD_Connection *c, struct request_ctx *ctx,
                      json_t *start, pbx_stream_work_fn work, pbx_stream_done_fn done, void *arg,
                      enum MHD_Result *ret, struct pbx_error **err);

/*
 * Send the event `name` (a short token: letters, digits, `_`) with `data` (a
 * reference taken over) as one line of compact JSON, after the text pending.
 * Thread-safe; it waits while the stream's queue is full (dropped once the
 * client is gone).
 */
void pbx__stream_event(struct stream *st, const char *name, json_t *data);

/*
 * The engine's on_output and on_display for a stream `arg`: stdout and
 * stderr as `stdout` and `stderr` events {"text"}, each coalesced over at
 * most 20 ms or 4 KiB and never cut inside a UTF-8 character (a chunk of
 * one stream flushes the other's pending text first, so their order is
 * kept); an output as `result` when its type is "result", else `display`.
 */
void pbx__stream_on_output(enum pbx_stream which, const char *data, size_t len, void *arg);
void pbx__stream_on_display(const json_t *output, void *arg);

/*
 * The same without `start` and `end` (a stream of MCP messages): the work
 * sends every event itself and its return value is dropped.
 */
int pbx__stream_start_bare(struct pbx_server *s, struct MHD_Connection *c, struct request_ctx *ctx,
                           pbx_stream_work_fn work, pbx_stream_done_fn done, void *arg,
                           enum MHD_Result *ret, struct pbx_error **err);

/*
 * Send the event `name` whose data is `len` bytes of compact JSON text
 * (copied; one line), as pbx__stream_event() does.
 */
void pbx__stream_text(struct stream *st, const char *name, const char *json, size_t len);

/* The descriptor that turns readable once the client is gone: an execution's cancel_fd. */
int pbx__stream_cancel_fd(const struct stream *st);

/* Whether the client is gone (events are dropped). Thread-safe. */
bool pbx__stream_gone(struct stream *st);

/* ---- execute.c and multipart.c: the execute endpoints ---- */

/* POST /execute, /execute-with-files and /v1/execute, once the body is in (execute.c). */
enum MHD_Result pbx__execute_handle(struct pbx_server *s, struct MHD_Connection *c,
                                    struct request_ctx *ctx);

/*
 * What a call of a session changes in the pipeline of an execution
 * (sessions.c fills it for POST /v1/sessions/{id}/execute): every step is
 * the same (the body read as pbx__request_json_parse_session_call() reads it),
 * but for these.  Each is called with `arg`.
 */
struct pbx_execute_hooks {
    /*
     * After resolve, before admit: take the session for the call (its only
     * one) and make `limits`, the caller's for the call, the call's.  0, or
     * < 0 with *etype, *err and *retry_after: the pipeline answers.
     */
    int (*claim)(void *arg, const struct pbx_http_request *req, const struct pbx_caller *who,
                 struct pbx_limits *limits, const char **etype, unsigned *retry_after,
                 struct pbx_error **err);
    /* The run: pbx_engine_execute()'s contract. */
    int (*run)(void *arg, const struct pbx_exec_request *req, struct pbx_exec_result *res,
               struct pbx_error **err);
    /* Fields added to the error_details of a refusal of code `code` (a new reference), or NULL. */
    json_t *(*refusal)(void *arg, int code);
    /* Fields added to the result object `body` of the answer. */
    void (*answer)(void *arg, json_t *body);
    /*
     * The request is over, however it went (on the stream's thread when it
     * was streamed): give back the session if claim took it, and free `arg`.
     */
    void (*release)(void *arg);
    void *arg; /* lives until release: a streamed call outlives the handler */
};

/*
 * A run of code that came another way than an execute request: MCP's
 * run_python (mcp_backend.c).  Its caller was resolved by its transport.
 */
struct pbx_execute_direct {
    struct request_ctx *ctx;               /* id, client and route (R_MCP); the budget it holds */
    const struct pbx_caller *who;          /* who asks (borrowed) */
    struct pbx_http_request *req;          /* what it asks (taken over: empty afterwards) */
    const struct pbx_execute_hooks *hooks; /* a call of a session, or NULL */
    void (*on_output)(enum pbx_stream which, const char *data, size_t len, void *arg); /* or NULL */
    void *on_output_arg;                                                               /* its arg */
    int cancel_fd; /* the run stops once it turns readable (-1: never) */
};

/*
 * The pipeline of pbx__execute_handle() from the caller's limits on: the
 * limits, the session's claim, admission (window, quota, slot, budget),
 * the run, the audit.  0 with *result (/v1/execute's result object, a new
 * reference), or -1 with *no filled (to release).  ctx->held grows by the
 * answer's reserve: release it with pbx__server_budget_release().
 */
int pbx__execute_direct(struct pbx_server *s, const struct pbx_execute_direct *d, json_t **result,
                        struct pbx_refusal *no);

/* A call of a session (sessions.c): the pipeline of pbx__execute_handle() with `hooks`. */
enum MHD_Result pbx__execute_handle_session(struct pbx_server *s, struct MHD_Connection *c,
                                            struct request_ctx *ctx,
                                            const struct pbx_execute_hooks *hooks);

/* ---- sessions.c: /v1/sessions and everything under it ---- */

/* A request to /v1/sessions or a path under it (`url`, as libmicrohttpd decoded it). */
enum MHD_Result pbx__sessions_handle(struct pbx_server *s, struct MHD_Connection *c,
                                     struct request_ctx *ctx, const char *url, const char *method);

/* The most body bytes a request of `method` to `url` under /v1/sessions keeps (0: none). */
size_t pbx__sessions_body_cap(const struct pbx_server *s, const char *url, const char *method);

/*
 * Start reading the multipart/form-data body of `c` into `m`, as a form of
 * POST /v1/execute or (`upload`) of POST /execute-with-files; false when it
 * has no boundary.
 */
bool pbx__multipart_begin(struct multipart *m, struct MHD_Connection *c,
                          const struct pbx_request_caps *caps, bool upload);

/* Feed body bytes to the parser. */
void pbx__multipart_feed(struct multipart *m, const char *data, size_t size);

/*
 * The body has ended: the request in *out, or < 0 with *err (a
 * "ValidationError", or a refusal of S4's schema when shape->field is set);
 * whose rules it follows in *shape either way.  It destroys the post
 * processor (m->pp is NULL afterwards), and a form it did not see finished
 * (no closing boundary) is refused.
 */
int pbx__multipart_finish(struct multipart *m, struct pbx_http_request *out,
                          struct pbx_request_shape *shape, struct pbx_error **err);

/* ---- mcp_http.c: /mcp ---- */

/* A request to /mcp: the Model Context Protocol over Streamable HTTP. */
enum MHD_Result pbx__mcp_http_handle(struct pbx_server *s, struct MHD_Connection *c,
                                     struct request_ctx *ctx, const char *method);

/* The MCP sessions' table, and its end (every MCP session ended: no request may run). */
struct mcp_table *pbx__mcp_table_new(void);
void pbx__mcp_table_free(struct mcp_table *t);

/* ---- compat.c: the answers of the compatible endpoints ---- */

/* One execution of /execute or /execute-with-files, as its answer needs it. */
struct compat_run {
    const struct pbx_http_request *req;    /* what was asked */
    const struct pbx_request_shape *shape; /* whose rules it follows */
    const struct pbx_caller *who;          /* who asked */
    const struct pbx_exec_result *res;     /* what the engine gave */
    const struct pbx_limits *limits;       /* the limits it ran with */
    int64_t today;                         /* the caller's requests today, this one counted */
    unsigned active;                       /* executions running when it asked for a slot */
    bool all_files;                        /* no return_files: every file ("*") was asked */
    bool timeout_clamped;                  /* the timeout asked was over the caller's limit */
};

/*
 * Answer an execution with the fields of every documented system at once
 * (docs/api.md): the "Python Sandbox API"'s, the minimal Flask runner's, the
 * FastAPI server's and, for `script`, the main() runner's; the status by the
 * rules the request follows.
 */
enum MHD_Result pbx__compat_answer(struct pbx_server *s, struct MHD_Connection *c,
                                   struct request_ctx *ctx, const struct compat_run *run);

/*
 * Answer a refusal of S4's schema (`shape->field` set) with 422, as FastAPI
 * does: {"detail": [{"type", "loc", "msg"}]} besides the error shape.
 */
enum MHD_Result pbx__compat_unprocessable(struct pbx_server *s, struct MHD_Connection *c,
                                          struct request_ctx *ctx,
                                          const struct pbx_request_shape *shape,
                                          const char *message);

/* GET /health, in the FastAPI server's shape. */
enum MHD_Result pbx__compat_health(struct pbx_server *s, struct MHD_Connection *c,
                                   struct request_ctx *ctx);

/* Free the parser and whatever the body held; `m` is empty afterwards. */
void pbx__multipart_release(struct multipart *m);

#endif
