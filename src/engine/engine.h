/*
 * The execution engine, supervisor side: start a jail (a zygote in fresh
 * namespaces), run executions in cells forked from it, stop it.  The CLI uses
 * it directly; the server shares one engine between its request threads.
 *
 * Thread-safety: pbx_engine_execute() may be called from many threads at once
 * on one engine; start and free must not race with anything else.
 */
#ifndef PBX_ENGINE_ENGINE_H
#define PBX_ENGINE_ENGINE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/error.h"
#include "policy/limits.h"

struct pbx_engine;

struct pbx_engine_config {
    bool preload;                   /* import numpy, PIL, pandas, matplotlib in the zygote */
    uid_t uid_base;                 /* the id (uid and gid) of pybox's user namespace that */
                                    /* id 0 of the jail maps to */
    uint32_t uid_count;             /* size of the mapped range (src/sandbox/uidmap.h) */
    bool uid_auto;                  /* uid_base/uid_count are the default: when they do not */
                                    /* fit this user namespace, pick a range that does */
    const char *cgroup_fs;          /* cgroup filesystem root, "/sys/fs/cgroup" */
    bool require_cgroups;           /* fail to start when no memory/pids controller is usable */
    unsigned spares_min;            /* warm pool: spare cells kept ready at least */
    unsigned spares_max;            /* and at most (0: no pool, every execution forks on demand) */
    struct pbx_limits spare_limits; /* the limits spares are made with; others fork on demand */
    uint64_t zygote_max_execs;      /* replace the zygote after this many executions (0: never) */
    unsigned zygote_max_age_s;      /* or after this many seconds (0: never); a new one means a */
                                    /* fresh str hash seed; running executions are not disturbed */
    unsigned prefault_pages;        /* pages each spare copies before its code arrives, as the */
    /* zygote learned them (0: none; at most PBX_PREFAULT_MAX_PAGES) */
    const char *zygote_exe; /* the pybox binary exec'd as the zygote; NULL: /proc/self/exe */
                            /* (a library's host is not pybox); must outlive the engine */
};

/* Fill `cfg` with defaults. */
void pbx_engine_config_default(struct pbx_engine_config *cfg);

/*
 * Start the jail and wait until its zygote is ready. The caller owns *out.
 * The jail's ids are checked first (pbx_uidmap_check(); with uid_auto, the
 * default range or else pbx_uidmap_pick()): a range this user namespace lacks
 * fails here with a message naming what it has.
 */
int pbx_engine_start(const struct pbx_engine_config *cfg, struct pbx_engine **out,
                     struct pbx_error **err);

/* Stop the zygote (every cell dies with it), remove cgroups, free. NULL is fine. */
void pbx_engine_free(struct pbx_engine *engine);

/*
 * Stop every execution of `engine` (a session's call included) running
 * now, and each that starts from now on, at once: its cell is killed and it
 * returns as PBX_STATUS_KILLED with the error type "Stopped".  For a server
 * whose drain ran out (pybox serve --drain).  Thread-safe.
 */
void pbx_engine_stop_executions(struct pbx_engine *engine);

struct pbx_pool_stats {
    unsigned idle;                 /* spares ready now */
    unsigned target;               /* spares wanted now */
    unsigned long hits;            /* executions that found a spare */
    unsigned long misses;          /* executions that forked on demand */
    unsigned long zygotes;         /* zygotes started (the first one included) */
    unsigned long cgroups_created; /* cell cgroups created */
    unsigned long cgroups_reused;  /* cell cgroups taken again from the pool */
};

/* The warm pool's counters. Thread-safe. */
void pbx_engine_pool_stats(struct pbx_engine *engine, struct pbx_pool_stats *st);

/*
 * Replace the zygote by a new one, in a new jail, as recycling does: the jail
 * sees the host's Python installation as it is now (rootfs.c builds the view
 * when a zygote starts), and the new zygote imports its preload afresh.
 * Executions running on the old zygote finish there; new work goes to the
 * new one once it is ready, and to the old one until then.  When the new one
 * does not start, the old one stays.  Returns 0, or < 0 with *err.  Thread-safe
 * (pybox serve calls it on SIGHUP).
 */
int pbx_engine_reload(struct pbx_engine *engine, struct pbx_error **err);

/* A human-readable report of the isolation in force (for doctor and logs); caller frees. */
char *pbx_engine_describe(const struct pbx_engine *engine);

struct pbx_file_in {
    const char *name; /* flat file name, valid per pbx_engine_check_name() */
    const void *data; /* contents */
    size_t size;      /* bytes */
};

enum pbx_stream {
    PBX_STREAM_STDOUT = 1,
    PBX_STREAM_STDERR = 2,
};

/* Called as output arrives (only what is kept, within the cap), from the calling thread. */
typedef void (*pbx_output_fn)(enum pbx_stream stream, const char *data, size_t len, void *arg);

/*
 * Called with each rich output as it is kept ({type, data, metadata}, or an
 * omission's marker; borrowed), in order, from the calling thread: the same
 * outputs, in the same order, as the result's `outputs` (but the marker for
 * outputs past the count, which only the result has).
 */
typedef void (*pbx_display_fn)(const json_t *output, void *arg);

struct pbx_exec_request {
    const char *code;                /* Python source, UTF-8 */
    size_t code_len;                 /* its length */
    const void *stdin_data;          /* stdin contents or NULL */
    size_t stdin_len;                /* its length */
    const struct pbx_file_in *files; /* input files placed in /work */
    size_t nfiles;                   /* their count */
    const char *const *return_files; /* names in /work to return; globs (*, ?, [) match */
    size_t nreturn;                  /* their count */
    bool main_mode;                  /* call main() and return its JSON value */
    bool allow_all_imports;          /* skip the import allowlist */
    const char *extra_modules;       /* more allowed modules, space-separated, or NULL */
    struct pbx_limits limits;        /* limits of this execution */
    pbx_output_fn on_output;         /* optional live output callback */
    pbx_display_fn on_display;       /* optional live rich-output callback */
    void *on_output_arg;             /* the argument of both */
    int cancel_fd;                   /* -1, or an fd that turns readable to stop the execution */
                                     /* (it is killed: status "killed", error "Cancelled") */
};

/* Fill `req` with an empty request and default limits. */
void pbx_exec_request_init(struct pbx_exec_request *req);

enum pbx_status {
    PBX_STATUS_OK = 0,
    PBX_STATUS_ERROR = 1,
    PBX_STATUS_TIMEOUT = 2,
    PBX_STATUS_MEMORY_LIMIT = 3,
    PBX_STATUS_KILLED = 4,
    PBX_STATUS_REJECTED = 5,
};

struct pbx_file_out {
    char *name;        /* as asked for */
    char *data;        /* contents, NULL on error */
    size_t size;       /* bytes */
    const char *error; /* static text such as "not found", or NULL */
};

/*
 * When one execution went through each step, CLOCK_MONOTONIC ns (the same
 * clock in the cell's pid namespace): the supervisor's own times, and the
 * cell's, as its report said them.  Taken for every execution, at a few tens
 * of ns each; what pybox serve --server-timing answers in Server-Timing.
 */
struct pbx_exec_timing {
    bool known;            /* the times below are set (the execution ran in this engine) */
    bool cell_known;       /* the cell's times (go..collected) passed the supervisor's check */
    bool warm;             /* a warm spare took the execution; else a cell was forked for it */
    uint64_t begin_ns;     /* pbx_engine_execute() began */
    uint64_t taken_ns;     /* the spare taken from the pool, or the forked cell's cgroups got */
    uint64_t sent_ns;      /* GO sent to the spare, or the job to the zygote (as sendmsg began) */
    uint64_t go_ns;        /* the cell: got GO, or (forked) began */
    uint64_t handed_ns;    /* the cell: handed the job its fds, or forked it */
    uint64_t started_ns;   /* STARTED received (the job's and the cell's pidfds) */
    uint64_t code_done_ns; /* the job's last record (its code's end) read, when that was */
                           /* between handed_ns and reaped_ns; else 0 */
    uint64_t reaped_ns;    /* the cell: reaped the job */
    uint64_t collected_ns; /* the cell: killed what was left, collected the files */
    uint64_t done_ns;      /* DONE received */
    uint64_t composed_ns;  /* the result put together */
    uint64_t end_ns;       /* pbx_engine_execute() returns */
};

struct pbx_exec_result {
    enum pbx_status status;
    bool has_exit_code;         /* false when killed by a signal or rejected */
    int exit_code;              /* the process's exit status */
    int signal;                 /* the killing signal, 0 when none */
    char *stdout_data;          /* kept stdout, NUL-terminated */
    size_t stdout_len;          /* its length */
    bool stdout_truncated;      /* output beyond the cap was dropped */
    char *stderr_data;          /* kept stderr, NUL-terminated */
    size_t stderr_len;          /* its length */
    bool stderr_truncated;      /* output beyond the cap was dropped */
    json_t *result;             /* main()'s return value, or NULL */
    json_t *error;              /* {"type", "message", ...} or NULL */
    json_t *outputs;            /* rich outputs, an array of {type, data, metadata}, or NULL */
    struct pbx_file_out *files; /* returned files, in the order asked, globs expanded */
    size_t nfiles;              /* their count */
    double duration_ms;         /* wall time of the user's code */
    double cpu_ms;              /* CPU time (user + system) */
    uint64_t max_rss_kb;        /* peak resident set */
    uint64_t minor_faults;      /* page faults of the job (copy-on-write included) */
    uint64_t prep_faults;       /* of those, taken by a warm spare before the code arrived */
    /* When it went through each step (pybox serve --server-timing answers them). */
    struct pbx_exec_timing timing;
};

/* Whether `name` may name an input or returned file: a flat, portable name. */
bool pbx_engine_check_name(const char *name, struct pbx_error **err);

/*
 * Run one execution.  Returns 0 with *res filled for every execution that ran
 * or was rejected by policy, whatever its status; < 0 when the request was
 * invalid (PBX_E_INVAL, PBX_E_TOO_LARGE) or the engine failed.  The caller
 * releases *res with pbx_exec_result_release().
 */
int pbx_engine_execute(struct pbx_engine *engine, const struct pbx_exec_request *req,
                       struct pbx_exec_result *res, struct pbx_error **err);

void pbx_exec_result_release(struct pbx_exec_result *res);

/* "ok", "error", ... */
const char *pbx_status_name(enum pbx_status status);

/* json_dumps() flags for result objects: compact, ASCII-safe, times to the microsecond. */
#define PBX_JSON_FLAGS (JSON_COMPACT | JSON_ENSURE_ASCII | JSON_REAL_PRECISION(12))
/* And for main()'s value on its own (any JSON value, as the result object carries it). */
#define PBX_JSON_VALUE_FLAGS (JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(12))

/* The result object of docs/api.md (a new reference). */
json_t *pbx_exec_result_to_json(const struct pbx_exec_result *res);

#endif
