/*
 * Unit tests for src/engine/verdict.c: the status, exit code and signal of an
 * execution from observed facts, on values.  Every rule of verdict.h has a
 * test, and so has every precedence between two rules that can hold at once.
 * The job's word (its check record, its error type, its result) only ever
 * picks between verdicts the facts allow.
 */
#include <check.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>

#include "engine/verdict.h"
#include "common/banned.h"

#define MIB (1024u * 1024u)

/* Wait statuses as wait4() reports them. */
static int exited(int code)
{
    return (code & 0xff) << 8;
}

static int signaled(int sig)
{
    return sig & 0x7f;
}

/* An execution that checked ok and exited 0: 10 s of CPU allowed, 256 MiB of memory. */
static struct pbx_verdict_facts base(void)
{
    struct pbx_verdict_facts f;

    memset(&f, 0, sizeof(f));
    f.wait_status = exited(0);
    f.cpu_us = 20000;
    f.cpu_limit_ms = 10000;
    f.mem_peak = 20 * MIB;
    f.max_rss_kb = 18 * 1024;
    f.mem_limit = 256 * MIB;
    f.check = PBX_META_CHECK_OK;
    return f;
}

static struct pbx_verdict decide(const struct pbx_verdict_facts *f)
{
    struct pbx_verdict v;

    memset(&v, 0xa5, sizeof(v)); /* every field is set, whatever it held */
    pbx__verdict_decide(f, &v);
    return v;
}

/* Decide `f`, check its status and error kind, and return the rest for more checks. */
static struct pbx_verdict assert_verdict(const struct pbx_verdict_facts *f, enum pbx_status status,
                                         enum pbx_verdict_error error)
{
    struct pbx_verdict v = decide(f);

    ck_assert_msg(v.status == status, "status %s, want %s", pbx_status_name(v.status),
                  pbx_status_name(status));
    ck_assert_int_eq(v.error, error);
    return v;
}

START_TEST(test_exit_zero_is_ok)
{
    struct pbx_verdict_facts f = base();
    struct pbx_verdict v = assert_verdict(&f, PBX_STATUS_OK, PBX_VERDICT_ERROR_NONE);
    ck_assert(v.has_exit_code);
    ck_assert_int_eq(v.exit_code, 0);
    ck_assert_int_eq(v.signal, 0);
    ck_assert(!v.take_result);
}
END_TEST

/* Exit status 0 is ok whatever error the records claim: the bootstrap exits 1 on each. */
START_TEST(test_job_error_with_exit_zero_is_ok)
{
    struct pbx_verdict_facts f = base();

    f.job_error_type = "MemoryError";
    assert_verdict(&f, PBX_STATUS_OK, PBX_VERDICT_ERROR_NONE);
    /* Even with the memory at its limit: the job did not fail. */
    f.mem_peak = f.mem_limit;
    f.max_rss_kb = f.mem_limit / 1024;
    assert_verdict(&f, PBX_STATUS_OK, PBX_VERDICT_ERROR_NONE);
    f.job_error_type = "ZeroDivisionError";
    assert_verdict(&f, PBX_STATUS_OK, PBX_VERDICT_ERROR_NONE);
    f.job_error_type = "TimeoutError";
    assert_verdict(&f, PBX_STATUS_OK, PBX_VERDICT_ERROR_NONE);
}
END_TEST

START_TEST(test_exit_nonzero_is_error)
{
    struct pbx_verdict_facts f = base();
    struct pbx_verdict v;

    f.wait_status = exited(3);
    v = assert_verdict(&f, PBX_STATUS_ERROR, PBX_VERDICT_ERROR_EXIT);
    ck_assert(v.has_exit_code);
    ck_assert_int_eq(v.exit_code, 3);
    ck_assert_int_eq(v.signal, 0);
    /* With the job's own account, that is the error's detail. */
    f.wait_status = exited(1);
    f.job_error_type = "ZeroDivisionError";
    v = assert_verdict(&f, PBX_STATUS_ERROR, PBX_VERDICT_ERROR_JOB);
    ck_assert_int_eq(v.exit_code, 1);
    f.wait_status = exited(255);
    ck_assert_int_eq(decide(&f).exit_code, 255);
}
END_TEST

/* 125 before the check record is the cell's "could not start the job"; after it, user code's. */
START_TEST(test_sandbox_error)
{
    struct pbx_verdict_facts f = base();

    f.check = PBX_META_CHECK_NONE;
    f.wait_status = exited(125);
    assert_verdict(&f, PBX_STATUS_ERROR, PBX_VERDICT_ERROR_SANDBOX);
    f.check = PBX_META_CHECK_OK;
    assert_verdict(&f, PBX_STATUS_ERROR, PBX_VERDICT_ERROR_EXIT);
    f.check = PBX_META_CHECK_NONE;
    f.wait_status = exited(1);
    assert_verdict(&f, PBX_STATUS_ERROR, PBX_VERDICT_ERROR_EXIT);
    f.wait_status = exited(0);
    assert_verdict(&f, PBX_STATUS_OK, PBX_VERDICT_ERROR_NONE);
}
END_TEST

START_TEST(test_rejected)
{
    struct pbx_verdict_facts f = base();
    struct pbx_verdict v;

    f.check = PBX_META_CHECK_REJECTED;
    f.wait_status = exited(1);
    v = assert_verdict(&f, PBX_STATUS_REJECTED, PBX_VERDICT_ERROR_REJECTED);
    ck_assert(!v.has_exit_code);
    ck_assert_int_eq(v.exit_code, 0);
    ck_assert_int_eq(v.signal, 0);
    ck_assert(!v.take_result);
}
END_TEST

/* A rejection needs the bootstrap's exit status 1 as well, and a job that ended on its own. */
START_TEST(test_rejected_needs_its_exit)
{
    struct pbx_verdict_facts f = base();
    struct pbx_verdict v;

    f.check = PBX_META_CHECK_REJECTED;
    f.wait_status = exited(0);
    assert_verdict(&f, PBX_STATUS_OK, PBX_VERDICT_ERROR_NONE);
    f.wait_status = exited(2);
    v = assert_verdict(&f, PBX_STATUS_ERROR, PBX_VERDICT_ERROR_EXIT);
    ck_assert(v.has_exit_code);
    ck_assert_int_eq(v.exit_code, 2);
    f.wait_status = signaled(SIGSEGV);
    assert_verdict(&f, PBX_STATUS_KILLED, PBX_VERDICT_ERROR_SIGNAL);
    f.wait_status = exited(1);
    f.timed_out = true;
    assert_verdict(&f, PBX_STATUS_TIMEOUT, PBX_VERDICT_ERROR_WALL);
    f.timed_out = false;
    f.backstop = true;
    assert_verdict(&f, PBX_STATUS_TIMEOUT, PBX_VERDICT_ERROR_WALL);
    /* The rejection comes first: no user code ran, whatever the cgroup counted meanwhile. */
    f.backstop = false;
    f.oom_kills = 1;
    assert_verdict(&f, PBX_STATUS_REJECTED, PBX_VERDICT_ERROR_REJECTED);
}
END_TEST

START_TEST(test_wall_timeout)
{
    struct pbx_verdict_facts f = base();
    struct pbx_verdict v;

    f.wait_status = signaled(SIGKILL);
    f.timed_out = true;
    v = assert_verdict(&f, PBX_STATUS_TIMEOUT, PBX_VERDICT_ERROR_WALL);
    ck_assert(!v.has_exit_code);
    ck_assert_int_eq(v.signal, SIGKILL);
    f.timed_out = false;
    f.backstop = true;
    assert_verdict(&f, PBX_STATUS_TIMEOUT, PBX_VERDICT_ERROR_WALL);
    /* The job exited just as the timer fired: the timer's word, the job's exit status. */
    f.backstop = false;
    f.timed_out = true;
    f.wait_status = exited(0);
    v = decide(&f);
    ck_assert_int_eq(v.status, PBX_STATUS_TIMEOUT);
    ck_assert(v.has_exit_code);
    ck_assert_int_eq(v.exit_code, 0);
    ck_assert_int_eq(v.signal, 0);
    /* A job error type is no timeout without the timer. */
    f.timed_out = false;
    f.wait_status = exited(1);
    f.job_error_type = "TimeoutError";
    assert_verdict(&f, PBX_STATUS_ERROR, PBX_VERDICT_ERROR_JOB);
}
END_TEST

/* The wall limit ended the job: it wins over every other limit seen on the way. */
START_TEST(test_wall_beats_everything)
{
    struct pbx_verdict_facts f = base();

    f.wait_status = signaled(SIGKILL);
    f.timed_out = true;
    f.oom_kills = 2;
    assert_verdict(&f, PBX_STATUS_TIMEOUT, PBX_VERDICT_ERROR_WALL);
    f.cpu_us = f.cpu_limit_ms * 1000 * 2;
    assert_verdict(&f, PBX_STATUS_TIMEOUT, PBX_VERDICT_ERROR_WALL);
    f.wait_status = signaled(SIGXCPU);
    assert_verdict(&f, PBX_STATUS_TIMEOUT, PBX_VERDICT_ERROR_WALL);
    f.oom_kills = 0;
    f.wait_status = exited(1);
    f.job_error_type = "MemoryError";
    f.mem_peak = f.mem_limit;
    assert_verdict(&f, PBX_STATUS_TIMEOUT, PBX_VERDICT_ERROR_WALL);
}
END_TEST

START_TEST(test_cpu_sigxcpu)
{
    struct pbx_verdict_facts f = base();
    struct pbx_verdict v;

    f.wait_status = signaled(SIGXCPU);
    f.cpu_us = f.cpu_limit_ms * 1000 + 3000;
    v = assert_verdict(&f, PBX_STATUS_TIMEOUT, PBX_VERDICT_ERROR_CPU);
    ck_assert(!v.has_exit_code);
    ck_assert_int_eq(v.signal, SIGXCPU);
    /* Under the limit, as rusage reads the time RLIMIT_CPU counts by ticks. */
    f.cpu_us = f.cpu_limit_ms * 1000 * 84 / 100;
    assert_verdict(&f, PBX_STATUS_TIMEOUT, PBX_VERDICT_ERROR_CPU);
    f.cpu_us = f.cpu_limit_ms * 1000 / PBX_VERDICT_CPU_NEAR_DIV;
    assert_verdict(&f, PBX_STATUS_TIMEOUT, PBX_VERDICT_ERROR_CPU);
    /* A SIGXCPU the job sent itself before its limit is a signal like any other. */
    f.cpu_us = f.cpu_limit_ms * 1000 / PBX_VERDICT_CPU_NEAR_DIV - 1;
    v = assert_verdict(&f, PBX_STATUS_KILLED, PBX_VERDICT_ERROR_SIGNAL);
    ck_assert_int_eq(v.signal, SIGXCPU);
    f.cpu_us = 1000;
    assert_verdict(&f, PBX_STATUS_KILLED, PBX_VERDICT_ERROR_SIGNAL);
}
END_TEST

/* SIGXCPU is the CPU limit's own signal: it wins over an OOM kill seen on the way. */
START_TEST(test_sigxcpu_beats_oom)
{
    struct pbx_verdict_facts f = base();

    f.wait_status = signaled(SIGXCPU);
    f.cpu_us = f.cpu_limit_ms * 1000;
    f.oom_kills = 1;
    assert_verdict(&f, PBX_STATUS_TIMEOUT, PBX_VERDICT_ERROR_CPU);
    /* Before the CPU limit, the OOM kill is what was seen. */
    f.cpu_us = 1000;
    assert_verdict(&f, PBX_STATUS_MEMORY_LIMIT, PBX_VERDICT_ERROR_MEMORY);
}
END_TEST

/* RLIMIT_CPU's hard limit kills with SIGKILL. */
START_TEST(test_cpu_sigkill)
{
    struct pbx_verdict_facts f = base();
    struct pbx_verdict v;

    f.wait_status = signaled(SIGKILL);
    f.cpu_us = (f.cpu_limit_ms + 1000) * 1000;
    v = assert_verdict(&f, PBX_STATUS_TIMEOUT, PBX_VERDICT_ERROR_CPU);
    ck_assert_int_eq(v.signal, SIGKILL);
    f.cpu_us = 5000;
    v = assert_verdict(&f, PBX_STATUS_KILLED, PBX_VERDICT_ERROR_SIGNAL);
    ck_assert_int_eq(v.signal, SIGKILL);
}
END_TEST

/* An OOM kill is a SIGKILL as well: the kernel's count wins over the CPU time inferred. */
START_TEST(test_oom_beats_cpu_sigkill)
{
    struct pbx_verdict_facts f = base();

    f.wait_status = signaled(SIGKILL);
    f.cpu_limit_ms = 1500;
    f.cpu_us = 1700000; /* past 1.5 s, before RLIMIT_CPU's 2 s and its hard 3 s */
    f.oom_kills = 1;
    assert_verdict(&f, PBX_STATUS_MEMORY_LIMIT, PBX_VERDICT_ERROR_MEMORY);
    f.oom_kills = 0;
    assert_verdict(&f, PBX_STATUS_TIMEOUT, PBX_VERDICT_ERROR_CPU);
}
END_TEST

START_TEST(test_oom_kill)
{
    struct pbx_verdict_facts f = base();
    struct pbx_verdict v;

    f.wait_status = signaled(SIGKILL);
    f.oom_kills = 1;
    v = assert_verdict(&f, PBX_STATUS_MEMORY_LIMIT, PBX_VERDICT_ERROR_MEMORY);
    ck_assert(!v.has_exit_code);
    ck_assert_int_eq(v.signal, SIGKILL);
    /* A child was killed and the job went on: the limit was still hit. */
    f.wait_status = exited(0);
    v = decide(&f);
    ck_assert_int_eq(v.status, PBX_STATUS_MEMORY_LIMIT);
    ck_assert(v.has_exit_code);
    ck_assert_int_eq(v.exit_code, 0);
    f.wait_status = signaled(SIGSEGV);
    assert_verdict(&f, PBX_STATUS_MEMORY_LIMIT, PBX_VERDICT_ERROR_MEMORY);
    /* Whatever the job says it was. */
    f.wait_status = exited(1);
    f.job_error_type = "ValueError";
    assert_verdict(&f, PBX_STATUS_MEMORY_LIMIT, PBX_VERDICT_ERROR_MEMORY);
}
END_TEST

/* A MemoryError the job reports is the memory limit only near the limit, and only if it failed. */
START_TEST(test_memory_error_near_limit)
{
    struct pbx_verdict_facts f = base();

    f.wait_status = exited(1);
    f.job_error_type = "MemoryError";
    /* Far below: the code's own error. */
    assert_verdict(&f, PBX_STATUS_ERROR, PBX_VERDICT_ERROR_JOB);
    f.mem_peak = f.mem_limit;
    assert_verdict(&f, PBX_STATUS_MEMORY_LIMIT, PBX_VERDICT_ERROR_MEMORY);
    f.mem_peak = f.mem_limit - f.mem_limit / PBX_VERDICT_MEM_NEAR_DIV;
    assert_verdict(&f, PBX_STATUS_MEMORY_LIMIT, PBX_VERDICT_ERROR_MEMORY);
    f.mem_peak -= 1;
    assert_verdict(&f, PBX_STATUS_ERROR, PBX_VERDICT_ERROR_JOB);
    /* Another error at the limit is that error. */
    f.mem_peak = f.mem_limit;
    f.job_error_type = "ValueError";
    assert_verdict(&f, PBX_STATUS_ERROR, PBX_VERDICT_ERROR_JOB);
    f.job_error_type = "memoryerror";
    assert_verdict(&f, PBX_STATUS_ERROR, PBX_VERDICT_ERROR_JOB);
    f.job_error_type = NULL;
    assert_verdict(&f, PBX_STATUS_ERROR, PBX_VERDICT_ERROR_EXIT);
    /* No done record survives a signal: a MemoryError then is no account of it. */
    f.job_error_type = "MemoryError";
    f.wait_status = signaled(SIGABRT);
    assert_verdict(&f, PBX_STATUS_KILLED, PBX_VERDICT_ERROR_SIGNAL);
}
END_TEST

/* Without a memory cgroup (the RLIMIT_AS fallback) the largest RSS is the peak. */
START_TEST(test_memory_error_rlimit_fallback)
{
    struct pbx_verdict_facts f = base();

    f.wait_status = exited(1);
    f.job_error_type = "MemoryError";
    f.mem_peak = 0;
    f.max_rss_kb = 20 * 1024;
    assert_verdict(&f, PBX_STATUS_ERROR, PBX_VERDICT_ERROR_JOB);
    /* Measured: a job that fails at the address-space limit holds about limit + 230 MiB. */
    f.max_rss_kb = (f.mem_limit + 230 * MIB) / 1024;
    assert_verdict(&f, PBX_STATUS_MEMORY_LIMIT, PBX_VERDICT_ERROR_MEMORY);
    f.max_rss_kb = (f.mem_limit - f.mem_limit / PBX_VERDICT_MEM_NEAR_DIV) / 1024;
    assert_verdict(&f, PBX_STATUS_MEMORY_LIMIT, PBX_VERDICT_ERROR_MEMORY);
    f.max_rss_kb -= 1;
    assert_verdict(&f, PBX_STATUS_ERROR, PBX_VERDICT_ERROR_JOB);
}
END_TEST

START_TEST(test_memory_reached)
{
    struct pbx_verdict_facts f = base();

    ck_assert(!pbx__verdict_memory_reached(&f));
    f.mem_peak = f.mem_limit;
    ck_assert(pbx__verdict_memory_reached(&f));
    /* No limit, nothing to reach. */
    f.mem_limit = 0;
    ck_assert(!pbx__verdict_memory_reached(&f));
    /* An RSS in kilobytes that overflows as bytes stays the largest. */
    f = base();
    f.max_rss_kb = UINT64_MAX;
    ck_assert(pbx__verdict_memory_reached(&f));
    f.max_rss_kb = UINT64_MAX / 1024 + 1;
    ck_assert(pbx__verdict_memory_reached(&f));
    f.mem_limit = UINT64_MAX;
    f.max_rss_kb = 0;
    f.mem_peak = UINT64_MAX;
    ck_assert(pbx__verdict_memory_reached(&f));
}
END_TEST

START_TEST(test_cpu_reached)
{
    struct pbx_verdict_facts f = base();

    ck_assert(!pbx__verdict_cpu_reached(&f));
    f.cpu_us = f.cpu_limit_ms * 1000;
    ck_assert(pbx__verdict_cpu_reached(&f));
    f.cpu_us = f.cpu_limit_ms * 1000 / PBX_VERDICT_CPU_NEAR_DIV;
    ck_assert(pbx__verdict_cpu_reached(&f));
    f.cpu_us -= 1;
    ck_assert(!pbx__verdict_cpu_reached(&f));
    /* RLIMIT_CPU's hard limit of a 10 s limit is 11 s by ticks, read as 9.24 s here. */
    f.cpu_us = 9240000;
    ck_assert(pbx__verdict_cpu_reached(&f));
}
END_TEST

/* Any other signal is "killed", with its number. */
START_TEST(test_killed_by_signal)
{
    static const int sigs[] = {SIGSEGV, SIGABRT, SIGILL, SIGTERM, SIGKILL, SIGBUS};

    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
        struct pbx_verdict_facts f = base();
        struct pbx_verdict v;

        f.wait_status = signaled(sigs[i]);
        f.job_error_type = "ZeroDivisionError";
        v = assert_verdict(&f, PBX_STATUS_KILLED, PBX_VERDICT_ERROR_SIGNAL);
        ck_assert(!v.has_exit_code);
        ck_assert_int_eq(v.signal, sigs[i]);
    }
}
END_TEST

/* main()'s value is the result only in main() mode, and only when the status is ok. */
START_TEST(test_result_only_when_ok)
{
    struct pbx_verdict_facts f = base();

    f.main_mode = true;
    f.job_result = true;
    ck_assert(decide(&f).take_result);
    f.main_mode = false;
    ck_assert(!decide(&f).take_result);
    f.main_mode = true;
    f.job_result = false;
    ck_assert(!decide(&f).take_result);
    f.job_result = true;
    f.wait_status = exited(1);
    ck_assert(!decide(&f).take_result);
    f.wait_status = exited(0);
    f.oom_kills = 1;
    ck_assert(!decide(&f).take_result);
    f.oom_kills = 0;
    f.timed_out = true;
    ck_assert(!decide(&f).take_result);
    f.timed_out = false;
    f.check = PBX_META_CHECK_REJECTED;
    f.wait_status = exited(1);
    ck_assert(!decide(&f).take_result);
}
END_TEST

/* The verdict reads its facts and nothing else. */
START_TEST(test_facts_unchanged)
{
    struct pbx_verdict_facts f = base();
    struct pbx_verdict_facts copy;

    f.wait_status = signaled(SIGKILL);
    f.oom_kills = 3;
    f.job_error_type = "MemoryError";
    memcpy(&copy, &f, sizeof(f));
    decide(&f);
    ck_assert(memcmp(&copy, &f, sizeof(f)) == 0);
}
END_TEST

static Suite *verdict_suite(void)
{
    Suite *s = suite_create("verdict");
    TCase *tc = tcase_create("rules");

    tcase_add_test(tc, test_exit_zero_is_ok);
    tcase_add_test(tc, test_job_error_with_exit_zero_is_ok);
    tcase_add_test(tc, test_exit_nonzero_is_error);
    tcase_add_test(tc, test_sandbox_error);
    tcase_add_test(tc, test_rejected);
    tcase_add_test(tc, test_rejected_needs_its_exit);
    tcase_add_test(tc, test_wall_timeout);
    tcase_add_test(tc, test_wall_beats_everything);
    tcase_add_test(tc, test_cpu_sigxcpu);
    tcase_add_test(tc, test_sigxcpu_beats_oom);
    tcase_add_test(tc, test_cpu_sigkill);
    tcase_add_test(tc, test_oom_beats_cpu_sigkill);
    tcase_add_test(tc, test_oom_kill);
    tcase_add_test(tc, test_memory_error_near_limit);
    tcase_add_test(tc, test_memory_error_rlimit_fallback);
    tcase_add_test(tc, test_memory_reached);
    tcase_add_test(tc, test_cpu_reached);
    tcase_add_test(tc, test_killed_by_signal);
    tcase_add_test(tc, test_result_only_when_ok);
    tcase_add_test(tc, test_facts_unchanged);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(verdict_suite());
    int failed;

    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
