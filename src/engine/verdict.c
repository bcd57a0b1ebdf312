/*
 * The verdict of an execution from observed facts (see verdict.h for the
 * rule and docs/design/error-handling.md for why).
 */
#include <signal.h>
#include <string.h>
#include <sys/wait.h>

#include "engine/verdict.h"
#include "common/banned.h"

bool pbx__verdict_memory_reached(const struct pbx_verdict_facts *facts)
{
    uint64_t limit = facts->mem_limit;
    uint64_t peak = facts->mem_peak;
    uint64_t rss = facts->max_rss_kb > UINT64_MAX / 1024 ? UINT64_MAX : facts->max_rss_kb * 1024;

    if (limit == 0)
        return false;
    /*
     * Both are lower bounds of what the execution held: the cgroup's peak
     * counts every process and its page cache, the RSS one process.  Without
     * a memory cgroup (the RLIMIT_AS fallback of sandbox/rlimit.c) the RSS is
     * all there is; a job there fails an allocation only once its address
     * space reaches the limit plus the fallback's headroom, by when its RSS is
     * normally well past the limit.
     */
    if (rss > peak)
        peak = rss;
    return peak >= limit - limit / PBX_VERDICT_MEM_NEAR_DIV;
}

bool pbx__verdict_cpu_reached(const struct pbx_verdict_facts *facts)
{
    uint64_t limit_us = facts->cpu_limit_ms * 1000;

    return facts->cpu_us >= limit_us / PBX_VERDICT_CPU_NEAR_DIV;
}

/* The job's own account says it failed on an allocation. */
static bool job_memory_error(const struct pbx_verdict_facts *facts)
{
    return facts->job_error_type != NULL && strcmp(facts->job_error_type, "MemoryError") == 0;
}

void pbx__verdict_decide(const struct pbx_verdict_facts *facts, struct pbx_verdict *v)
{
    int ws = facts->wait_status;
    bool exited = WIFEXITED(ws);
    int code = exited ? WEXITSTATUS(ws) : 0;
    int sig = WIFSIGNALED(ws) ? WTERMSIG(ws) : 0;

    memset(v, 0, sizeof(*v));
    /*
     * Only the bootstrap writes the first record, before any user code runs,
     * and a rejection then returns 1 without running any.  A job that was
     * killed, or left with another status, ran past its check: whatever its
     * first line says, it was not rejected.
     */
    if (facts->check == PBX_META_CHECK_REJECTED && !facts->timed_out && !facts->backstop &&
        exited && code == 1) {
        v->status = PBX_STATUS_REJECTED;
        v->error = PBX_VERDICT_ERROR_REJECTED;
        return;
    }
    v->has_exit_code = exited;
    v->exit_code = code;
    v->signal = sig;

    if (facts->timed_out || facts->backstop) {
        v->status = PBX_STATUS_TIMEOUT;
        v->error = PBX_VERDICT_ERROR_WALL;
    } else if (sig == SIGXCPU && pbx__verdict_cpu_reached(facts)) {
        /* RLIMIT_CPU's soft limit; a SIGXCPU the job sent itself early is rule 6. */
        v->status = PBX_STATUS_TIMEOUT;
        v->error = PBX_VERDICT_ERROR_CPU;
    } else if (facts->oom_kills > 0 || (exited && code != 0 && job_memory_error(facts) &&
                                        pbx__verdict_memory_reached(facts))) {
        /*
         * The kernel's count is a fact.  A MemoryError is the job's word, so it
         * counts only with a failed exit and a peak that shows the limit was
         * near; one raised far below the limit (by the code itself, or for a
         * request no machine could grant) stays an error of the code.
         */
        v->status = PBX_STATUS_MEMORY_LIMIT;
        v->error = PBX_VERDICT_ERROR_MEMORY;
    } else if (sig == SIGKILL && pbx__verdict_cpu_reached(facts)) {
        /*
         * RLIMIT_CPU's hard limit (the job ignored SIGXCPU).  After the OOM
         * rule: an OOM kill is a SIGKILL too, and the CPU limit is rounded up
         * to whole seconds, so a job OOM-killed past a limit of 1.5 s of CPU
         * was not stopped for its CPU time.
         */
        v->status = PBX_STATUS_TIMEOUT;
        v->error = PBX_VERDICT_ERROR_CPU;
    } else if (sig != 0) {
        v->status = PBX_STATUS_KILLED;
        v->error = PBX_VERDICT_ERROR_SIGNAL;
    } else if (code != 0) {
        v->status = PBX_STATUS_ERROR;
        if (facts->job_error_type != NULL)
            v->error = PBX_VERDICT_ERROR_JOB;
        else if (facts->check == PBX_META_CHECK_NONE && code == 125)
            v->error = PBX_VERDICT_ERROR_SANDBOX;
        else
            v->error = PBX_VERDICT_ERROR_EXIT;
    } else {
        /* The bootstrap exits 1 on every error it reports: an error record with 0 is forged. */
        v->status = PBX_STATUS_OK;
        v->error = PBX_VERDICT_ERROR_NONE;
        v->take_result = facts->main_mode && facts->job_result;
    }
}
