/*
 * The Model Context Protocol server of pybox (issue 15), independent of its
 * transport: JSON-RPC 2.0 messages in, JSON-RPC messages out.  `pybox mcp`
 * (src/cli/cmd_mcp.c) carries them over stdio; `pybox serve` is to carry
 * them over Streamable HTTP.  The module reaches pybox only through a
 * backend (struct pbx_mcp_backend), so it sits above src/common/ alone: the
 * CLI's backend is libpybox, the server's is to be its admission pipeline.
 *
 * One struct pbx_mcp is one MCP connection: the negotiated version, the
 * requests in flight (for notifications/cancelled) and the files and
 * outputs its results link to (resources/read), in a store capped in bytes
 * that forgets the oldest first.
 *
 * Threads: pbx_mcp_accept() is called by the one thread that reads the
 * connection; it answers every method at once except tools/call, which it
 * hands back as a struct pbx_mcp_call that any thread may then run with
 * pbx_mcp_call_run(), many at once.  Everything else is thread-safe.
 */
#ifndef PBX_MCP_MCP_H
#define PBX_MCP_MCP_H

#include <stdbool.h>
#include <stddef.h>

struct pbx_error;

/* The protocol revisions spoken, newest first: asked one of them, that one is answered. */
#define PBX_MCP_VERSION_LATEST "2025-11-25"
#define PBX_MCP_VERSION_OLDER  "2025-06-18"

/* JSON-RPC 2.0 error codes. */
#define PBX_MCP_PARSE_ERROR      (-32700)
#define PBX_MCP_INVALID_REQUEST  (-32600)
#define PBX_MCP_METHOD_NOT_FOUND (-32601)
#define PBX_MCP_INVALID_PARAMS   (-32602)
#define PBX_MCP_INTERNAL_ERROR   (-32603)

/* The bound of one message: bytes, JSON values and nesting (a run's files ride in it). */
#define PBX_MCP_MAX_MESSAGE (64u << 20)
#define PBX_MCP_MAX_VALUES  100000u
#define PBX_MCP_MAX_DEPTH   32u

/* A file going in: `path` relative to /work (UTF-8), `size` bytes of `data`. */
struct pbx_mcp_file {
    const char *path; /* e.g. "data.csv" or "in/data.csv" */
    const void *data; /* its bytes (not NUL-terminated necessarily) */
    size_t size;      /* their number */
};

/*
 * A cancellable call's cancel.  The backend sets a hook while the code runs;
 * notifications/cancelled calls it from the reading thread.
 */
struct pbx_mcp_cancel;

/*
 * Have `fn(arg)` called when the call is cancelled (fn NULL: no more).  False
 * when it was cancelled already (the hook is not set then: do not start, or
 * stop).  fn runs on another thread, under a lock that
 * pbx_mcp_cancel_set_hook() takes too, so after fn NULL is set it is never
 * called again.
 */
bool pbx_mcp_cancel_set_hook(struct pbx_mcp_cancel *c, void (*fn)(void *arg), void *arg);

/* Whether the call was cancelled. */
bool pbx_mcp_cancel_requested(struct pbx_mcp_cancel *c);

/* One run of Python (run_python), as the backend is given it. */
struct pbx_mcp_run {
    const char *code;                 /* the source (UTF-8, NUL-terminated) */
    size_t code_len;                  /* its length */
    const char *session_id;           /* the session to run in, or NULL: a one-shot run */
    const void *stdin_data;           /* what it reads on stdin, or NULL */
    size_t stdin_len;                 /* its length */
    const struct pbx_mcp_file *files; /* files put in /work first */
    size_t nfiles;                    /* their number */
    const char *const *returns;       /* names or globs of files to return */
    size_t nreturns;                  /* their number (0: the backend's default) */
    double timeout_s;                 /* the wall-clock limit; 0: the default */
    void (*alive)(void *arg);         /* the backend calls it whenever the run shows life */
    void *alive_arg;                  /* (any thread; it may be called never) */
    struct pbx_mcp_cancel *cancel;    /* the call's cancel (never NULL) */
};

/* What the tool descriptions and instructions say of the limits in force. */
struct pbx_mcp_limits {
    double timeout_s;     /* a run's default wall-clock limit */
    double max_timeout_s; /* the longest a run may ask (0: not known) */
    unsigned memory_mb;   /* a run's memory limit (0: not known) */
    bool network;         /* whether code has a network */
    bool sessions;        /* whether sessions may be opened */
    char modules[2048];   /* the importable modules, one space apart ("" unknown; "*" all) */
};

/*
 * Fill l->modules with `names` (NULL-terminated) and then the names of
 * `more` (space-separated; NULL for none), one space apart, as many as fit.
 */
void pbx_mcp_limits_modules(struct pbx_mcp_limits *l, const char *const *names, const char *more);

/*
 * How the module reaches pybox.  Every function but describe gets the
 * backend's `arg` and the call's `ctx` (pbx_mcp_call_set_context(): the
 * transport's word on who asks, for a server that serves many callers) and
 * follows the error contract
 * (< 0 with *err set); an error is shown to the model as an isError result
 * with its message, so it should say what to do.  Codes: PBX_E_NOTFOUND
 * for a session or file not found (the model is told to make a new
 * session), PBX_E_INVAL for bad arguments, any other for the rest.  All may
 * be called from many threads at once.
 */
struct pbx_mcp_backend {
    void *arg; /* given to each function first */

    /* The limits and modules (called once, by pbx_mcp_new()). */
    void (*describe)(void *arg, struct pbx_mcp_limits *out);

    /*
     * Run the code and set *result to pybox's result object as JSON text (that
     * of /v1/execute: status, exit_code, stdout, stderr, *_truncated, error,
     * files {name: {content_base64, size} | {error}}, outputs, duration_ms,
     * ...; malloc'ed, the caller frees it), also for a run that failed.
     */
    int (*run)(void *arg, void *ctx, const struct pbx_mcp_run *run, char **result,
               struct pbx_error **err);

    /*
     * Open a session ending after `ttl_s` seconds without a call (0: the
     * default), its /work holding `files`; *info is malloc'ed JSON text
     * {"session_id", "expires_at" (ISO 8601 or null), "limits": {...}}.
     */
    int (*session_create)(void *arg, void *ctx, unsigned ttl_s, const struct pbx_mcp_file *files,
                          size_t nfiles, char **info, struct pbx_error **err);
    int (*session_close)(void *arg, void *ctx, const char *session_id, struct pbx_error **err);
    int (*files_write)(void *arg, void *ctx, const char *session_id,
                       const struct pbx_mcp_file *files, size_t nfiles, struct pbx_error **err);
    /* *data malloc'ed (the caller frees it), *size its bytes. */
    int (*file_read)(void *arg, void *ctx, const char *session_id, const char *path, void **data,
                     size_t *size, struct pbx_error **err);
    /* *json malloc'ed: [{"path", "size", "mtime"}, ...]. */
    int (*files_list)(void *arg, void *ctx, const char *session_id, char **json,
                      struct pbx_error **err);
};

struct pbx_mcp_options {
    const char *server_name;    /* serverInfo.name ("pybox" when NULL) */
    const char *server_version; /* serverInfo.version */
    size_t store_max;           /* bytes the resource store keeps (0: 64 MiB) */
    size_t text_max;            /* stdout/stderr bytes in a text content block (0: 20000) */
};

struct pbx_mcp;

/*
 * A new connection served by `backend` (copied; backend->arg must outlive
 * it).  opts NULL: the defaults.  Free it with pbx_mcp_free() once no call
 * runs.
 */
struct pbx_mcp *pbx_mcp_new(const struct pbx_mcp_backend *backend,
                            const struct pbx_mcp_options *opts);
void pbx_mcp_free(struct pbx_mcp *mcp);

/*
 * Send one message (compact JSON text, no newline) to the client, from the
 * thread of a call while it runs (notifications/progress).
 */
typedef void (*pbx_mcp_send_fn)(const char *json, size_t len, void *arg);

/* A tools/call accepted, to be run by pbx_mcp_call_run(). */
struct pbx_mcp_call;

/*
 * The one entry point of untrusted input: `len` bytes of one message (a
 * JSON-RPC request, notification or response; a batch is refused).  Parsed
 * within PBX_MCP_MAX_* limits.  Returns a tools/call to run, with *reply
 * NULL; or NULL with *reply set to the message to send back (malloc'ed,
 * compact JSON, no newline), or NULL for a message that gets no answer
 * (notifications, responses).  Errors are answered as JSON-RPC errors:
 * -32700 (id null) for bytes that are no JSON object, -32600, -32601,
 * -32602.
 */
struct pbx_mcp_call *pbx_mcp_accept(struct pbx_mcp *mcp, const char *bytes, size_t len,
                                    char **reply);

/*
 * Run an accepted call and free it: progress notifications go through
 * `send` (when the request asked for them, about once a second while the
 * backend says the run is alive).  Returns the response (malloc'ed), or NULL
 * when the call was cancelled (no response is sent then).
 */
char *pbx_mcp_call_run(struct pbx_mcp *mcp, struct pbx_mcp_call *call, pbx_mcp_send_fn send,
                       void *arg);

/*
 * What the backend's functions get as `ctx` while they run this call (NULL
 * unless set): set it before pbx_mcp_call_run().
 */
void pbx_mcp_call_set_context(struct pbx_mcp_call *call, void *ctx);

/* Free a call without running it (its id answered nothing). */
void pbx_mcp_call_free(struct pbx_mcp *mcp, struct pbx_mcp_call *call);

/* pbx_mcp_accept() and, for a call, pbx_mcp_call_run() on this thread. */
char *pbx_mcp_handle(struct pbx_mcp *mcp, const char *bytes, size_t len, pbx_mcp_send_fn send,
                     void *arg);

/* The protocol version initialize settled, or NULL before one succeeded. */
const char *pbx_mcp_version(struct pbx_mcp *mcp);

/* Whether the accepted call asked for progress notifications (_meta.progressToken). */
bool pbx_mcp_call_wants_progress(const struct pbx_mcp_call *call);

/* Cancel every call in flight (the transport is closing). */
void pbx_mcp_cancel_all(struct pbx_mcp *mcp);

#endif
