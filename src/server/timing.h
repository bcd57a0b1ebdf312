/*
 * The Server-Timing header of an execution's answer (pybox serve
 * --server-timing): where the time of one request went, phase by phase.
 */
#ifndef PBX_SERVER_TIMING_H
#define PBX_SERVER_TIMING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/engine.h"

/*
 * When one request went through each step of the server, CLOCK_MONOTONIC
 * ns, with the engine's times of its execution.  The request arrived at
 * request_ctx's start_ns.
 */
struct pbx_server_timing {
    bool on;                     /* answer with Server-Timing (the execution ran) */
    uint64_t parsed_ns;          /* the body parsed */
    uint64_t resolved_ns;        /* the caller resolved, its limits known */
    uint64_t held_ns;            /* its window, quota and lease held (the store's answer) */
    uint64_t slot_ns;            /* an execution slot taken (after any wait in the queue) */
    uint64_t admitted_ns;        /* the answer's memory reserved, the request charged */
    uint64_t ran_ns;             /* the engine returned the result */
    uint64_t audited_ns;         /* its audit record and metrics written */
    struct pbx_exec_timing exec; /* the engine's times */
};

/* The most a Server-Timing value of pbx__server_timing_format() takes, its NUL included. */
#define PBX_SERVER_TIMING_MAX 640

/*
 * The Server-Timing value (W3C Server Timing: `name;dur=MS` entries, comma
 * separated, in ms with 3 decimals) of a request that arrived at
 * `arrived_ns` and whose answer is queued at `now_ns`: contiguous phases
 * from arrival to now, so they sum to the last entry, `total`; then
 * `cell;desc="warm"` or `"forked"`.  Phases: parse, auth, admit, queue,
 * charge, prep, then the cell's handoff, start, run (or code and exit, when
 * the job's last record was read before its reaping), collect, report (or one
 * `execution` when its report's times were not usable), result, audit, answer.
 * A time out of order (none should be) gives the coarse phases only.
 * Writes at most `len` bytes into `out`, NUL-terminated, whole entries only
 * (PBX_SERVER_TIMING_MAX holds them all).
 */
void pbx__server_timing_format(const struct pbx_server_timing *t, uint64_t arrived_ns,
                               uint64_t now_ns, char *out, size_t len);

#endif
