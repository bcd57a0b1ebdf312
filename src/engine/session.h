/*
 * Sessions, supervisor side: a cell kept alive between calls, its
 * interpreter's globals and its /work kept, each call run in it as an
 * execution is (same namespaces, seccomp, cgroups, uid; limits per call).
 *
 * Between calls every process of the session is stopped (SIGSTOP from the
 * cell, pid 1 of its pid namespace): an idle session uses no CPU, and a
 * thread the code started runs only while a call runs.
 *
 * Thread-safety: one call at a time per session (the caller serialises
 * pbx_session_execute(), restart and the file functions); pbx_session_interrupt()
 * and pbx_session_state() may be called from any thread at any time.
 * pbx_session_close() must not race anything else on the session.
 */
#ifndef PBX_ENGINE_SESSION_H
#define PBX_ENGINE_SESSION_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "engine/engine.h"
#include "policy/limits.h"

struct pbx_session;

/* Why a session ended. */
enum pbx_session_end {
    PBX_SESSION_ALIVE = 0, /* it has not */
    PBX_SESSION_CLOSED,    /* pbx_session_close(), or the engine stopped */
    PBX_SESSION_TIMEOUT,   /* a call ran past its timeout and did not stop when interrupted */
    PBX_SESSION_MEMORY,    /* the memory limit was hit */
    PBX_SESSION_CPU,       /* the CPU time limit of a call was hit */
    PBX_SESSION_CRASHED,   /* the interpreter died (a signal, or it exited) */
    PBX_SESSION_PIDS,      /* a call hit the processes-and-threads limit */
    PBX_SESSION_LOST,      /* the cell stopped answering, or its zygote died */
};

/* "timeout", "memory_limit", ... (static text); "alive" for PBX_SESSION_ALIVE. */
const char *pbx_session_end_name(enum pbx_session_end why);

/*
 * Start a session with `limits` (memory, pids, disk are the session's for its
 * whole life; the time and output limits are each call's default) and the
 * input files `files` placed in /work.  Returns 0 with *out, or < 0 with *err
 * (PBX_E_INVAL / PBX_E_TOO_LARGE for a bad file, else the engine's).
 */
int pbx_session_open(struct pbx_engine *engine, const struct pbx_limits *limits,
                     const struct pbx_file_in *files, size_t nfiles, struct pbx_session **out,
                     struct pbx_error **err);

/* What a call did to its session, beyond its result. */
struct pbx_session_call {
    uint64_t execution_count;   /* calls run in the session so far, this one included */
    bool state_preserved;       /* the session lives on with its state (false: it ended) */
    bool interrupted;           /* KeyboardInterrupt was raised in it (timeout or interrupt) */
    enum pbx_session_end ended; /* why the session ended during the call, or ALIVE */
};

/*
 * Run one call: `req`'s code, stdin, return_files, main_mode, import policy
 * and time/output limits (req->limits; memory, pids and disk are the
 * session's).  Input files (req->files) are written to /work first.  The
 * final expression statement's value is the call's "result" output (a
 * trailing `;` suppresses it; `_` holds it afterwards); tracebacks name the
 * code `<cell N>`.  At the timeout the call is interrupted (KeyboardInterrupt);
 * if it returns within a grace of a second the session lives on, else it is
 * killed and the session ends.  req->cancel_fd turning readable interrupts
 * the call the same way.  Returns 0 with *res (status "timeout" for a call
 * stopped at its timeout, with `state_preserved` saying whether its session
 * lived on) and *call; < 0 with *err when the session was not alive
 * (PBX_E_GONE), the request was invalid, or the engine failed.
 */
int pbx_session_execute(struct pbx_session *s, const struct pbx_exec_request *req,
                        struct pbx_exec_result *res, struct pbx_session_call *call,
                        struct pbx_error **err);

/* Raise KeyboardInterrupt in the running call; false when no call runs. */
bool pbx_session_interrupt(struct pbx_session *s);

/* A fresh interpreter in the same cell: globals gone, /work kept.  0, or < 0 with *err. */
int pbx_session_restart(struct pbx_session *s, struct pbx_error **err);

/* What a session is now. */
struct pbx_session_state {
    enum pbx_session_end ended; /* ALIVE, or why it ended */
    bool busy;                  /* a call runs */
    uint64_t execution_count;   /* calls run */
    uint64_t memory_bytes;      /* memory its cgroup holds now (0 without a memory cgroup) */
};

void pbx_session_state(struct pbx_session *s, struct pbx_session_state *st);

/*
 * Files of /work.  A path is relative, of at most 8 components each valid per
 * pbx_engine_check_name() (no "..", no "."), resolved beneath /work with no
 * symlinks; parent directories are made by a put.  Sizes and counts are
 * capped as input and returned files are (the session's limits).  Each
 * returns 0, or < 0 with *err: PBX_E_NOTFOUND for a missing file,
 * PBX_E_INVAL for a bad path, PBX_E_TOO_LARGE over a cap, PBX_E_GONE when the
 * session ended.
 */
int pbx_session_file_put(struct pbx_session *s, const char *path, const void *data, size_t len,
                         struct pbx_error **err);
/* The file's bytes in *data (malloc'd, the caller frees) and *len. */
int pbx_session_file_get(struct pbx_session *s, const char *path, char **data, size_t *len,
                         struct pbx_error **err);
int pbx_session_file_delete(struct pbx_session *s, const char *path, struct pbx_error **err);
/*
 * The regular files of /work, recursively (at most 10000): a JSON array of
 * {path, size, mtime} (a new reference; mtime ISO-8601 UTC, pbx_clock_iso(),
 * as the server shows it, or null); a path that is not UTF-8 has U+FFFD for
 * its bad bytes and "path_not_utf8": true.
 */
int pbx_session_file_list(struct pbx_session *s, json_t **list, struct pbx_error **err);

/* End the session (if alive) and free it: its processes, mounts, cgroups and files gone. NULL is
 * fine. */
void pbx_session_close(struct pbx_session *s);

#endif
