/*
 * The verdict of an execution: its status, exit code and signal, and which
 * error object its result gets, decided from what the supervisor and the cell
 * observed.  User code shares the job's record pipe with the bootstrap, so
 * nothing in the job's records may decide a verdict: they only pick the detail
 * (an exception's type, message and traceback), or pick between verdicts the
 * observed facts already support.  docs/design/error-handling.md states the
 * rule; it is a pure function, tested on values in tests/unit/test_verdict.c.
 */
#ifndef PBX_ENGINE_VERDICT_H
#define PBX_ENGINE_VERDICT_H

#include <stdbool.h>
#include <stdint.h>

#include "engine/engine.h"
#include "engine/meta.h"

/*
 * The observed peak counts as the memory limit reached when it is within this
 * fraction (1/N) of the limit.  A cgroup v1 memory cgroup's peak never passes
 * its limit, so "at the limit" needs some room for the last charge that failed.
 */
#define PBX_VERDICT_MEM_NEAR_DIV 16

/*
 * The CPU time read counts as the CPU limit reached from this fraction (1/N)
 * of the limit.  RLIMIT_CPU is checked against CPU time sampled at each tick,
 * while the rusage the cell reads is scaled to the scheduler's exact runtime,
 * which can be well below it: SIGXCPU at a limit of 1 s has come with 0.84 s
 * read on a virtual machine.  A SIGXCPU or SIGKILL before half of the limit was
 * used was not the limit's.
 */
#define PBX_VERDICT_CPU_NEAR_DIV 2

/* The error object a verdict calls for (the engine builds it). */
enum pbx_verdict_error {
    PBX_VERDICT_ERROR_NONE = 0, /* none: status ok */
    PBX_VERDICT_ERROR_REJECTED, /* the check record's own error object */
    PBX_VERDICT_ERROR_WALL,     /* TimeoutError: the wall time limit */
    PBX_VERDICT_ERROR_CPU,      /* TimeoutError: the CPU time limit */
    PBX_VERDICT_ERROR_MEMORY,   /* MemoryError: the memory limit */
    PBX_VERDICT_ERROR_SIGNAL,   /* Killed: by the signal of the verdict */
    PBX_VERDICT_ERROR_JOB,      /* the job's own error object, from its done record */
    PBX_VERDICT_ERROR_SANDBOX,  /* SandboxError: the job failed before Python ran */
    PBX_VERDICT_ERROR_EXIT,     /* ExitError: a non-zero exit status and no job error */
};

/* What was observed of one execution.  Only the last three fields come from the job. */
struct pbx_verdict_facts {
    int wait_status;            /* the job's wait status, from the cell's wait4() */
    bool timed_out;             /* the cell's wall timer killed the job */
    bool backstop;              /* the supervisor killed the cell (wall limit plus grace) */
    uint64_t cpu_us;            /* the job's CPU time, user + system, from the cell */
    uint64_t cpu_limit_ms;      /* the CPU time limit of each process */
    uint64_t oom_kills;         /* OOM kills the memory cgroup counted during this use */
    uint64_t mem_peak;          /* the memory cgroup's peak in bytes; 0 without one */
    uint64_t max_rss_kb;        /* the largest RSS of the job or a child it reaped */
    uint64_t mem_limit;         /* the memory limit in bytes; 0 for none */
    bool main_mode;             /* main() mode was asked for */
    enum pbx_meta_check check;  /* the first record, written before user code runs */
    const char *job_error_type; /* the type of the done record's error, or NULL */
    bool job_result;            /* the done record carried a value pybox can carry */
};

struct pbx_verdict {
    enum pbx_status status;       /* the status of the result */
    enum pbx_verdict_error error; /* the error object to build */
    bool has_exit_code;           /* the job exited (was neither killed nor rejected) */
    int exit_code;                /* its exit status, from the wait status only */
    int signal;                   /* the signal that killed it, 0 when none */
    bool take_result;             /* carry the done record's value as the result */
};

/*
 * Decide the verdict of `facts` into *v.  In order, the first that holds wins:
 *
 *  1. rejected: the check record says so and the job exited 1 on its own, as
 *     the bootstrap's rejection does;
 *  2. timeout: the cell's wall timer or the supervisor's backstop killed it;
 *  3. timeout: SIGXCPU with the CPU limit reached (see PBX_VERDICT_CPU_NEAR_DIV);
 *  4. memory_limit: the memory cgroup OOM-killed a process, or the job exited
 *     non-zero with a MemoryError while the observed peak (the memory
 *     cgroup's, or the largest RSS) was near the limit;
 *  5. timeout: SIGKILL with the CPU limit reached (RLIMIT_CPU's hard limit);
 *  6. killed: any other signal;
 *  7. error: a non-zero exit status;
 *  8. ok: exit status 0, whatever the records say.
 *
 * A done record's error is the detail of an error only (7); its value is the
 * result only when the status is ok in main() mode.  No syscalls.
 */
void pbx__verdict_decide(const struct pbx_verdict_facts *facts, struct pbx_verdict *v);

/* Whether the observed peak memory of `facts` is near its limit (part of rule 4). */
bool pbx__verdict_memory_reached(const struct pbx_verdict_facts *facts);

/* Whether the CPU time of `facts` reached its limit (part of rules 3 and 5). */
bool pbx__verdict_cpu_reached(const struct pbx_verdict_facts *facts);

#endif
