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
 * Memory: this code runs inside other people's processes, so it never uses
 * xmalloc(); every allocation failure becomes PYBOX_E_NOMEM.
 */
#ifndef PBX_CLIENT_CLIENT_H
#define PBX_CLIENT_CLIENT_H

#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>

#include "pybox/pybox.h"

struct pbx_engine;

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
};

struct pbx_result_file {
    char *name;  /* owned */
    char *data;  /* decoded contents (NUL-terminated copy), or NULL with error set */
    size_t size; /* bytes */
    char *error; /* why it was not returned, or NULL */
};

struct pybox_result {
    enum pybox_status status;      /* what happened */
    bool has_exit_code;            /* false when killed or rejected */
    int exit_code;                 /* -1 when none */
    int signal;                    /* killing signal or 0 */
    char *out;                     /* stdout, NUL-terminated */
    size_t out_len;                /* its length */
    bool out_truncated;            /* stdout was cut at its limit */
    char *err;                     /* stderr, NUL-terminated */
    size_t err_len;                /* its length */
    bool err_truncated;            /* stderr was cut at its limit */
    char *value;                   /* main()'s value as JSON text, or NULL */
    char *error_type;              /* error.type, or NULL */
    char *error_message;           /* error.message, or NULL */
    struct pbx_result_file *files; /* returned files in the object's order */
    size_t nfiles;                 /* their count */
    double duration_ms;            /* wall time of the code */
    double cpu_ms;                 /* CPU time */
    uint64_t max_rss_kb;           /* peak memory */
    char *json;                    /* the whole result object, compact */
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

/* Run in this process, starting the engine on first use. */
enum pybox_code pbx__client_run_local(struct pybox_client *client, const struct pybox_exec *exec,
                                      struct pybox_result **out, struct pybox_error **err);

/* Stop the engine of a local client, if it was started. */
void pbx__client_local_free(struct pybox_client *client);

/* Run through `POST /v1/execute` on the client's server. */
enum pybox_code pbx__client_run_remote(struct pybox_client *client, const struct pybox_exec *exec,
                                       struct pybox_result **out, struct pybox_error **err);

#endif
