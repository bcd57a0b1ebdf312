/*
 * End-to-end tests of the engine (src/engine/engine.c and the files it
 * names): a real jail, zygote, cells and jobs.  Needs root (user namespaces
 * with an id range mapped).
 *
 * The zygote is this very binary, re-executed through /proc/self/exe with
 * argv[1] == PBX_ZYGOTE_ARG, so main() hands over to pbx_zygote_main() first
 * as the pybox binary does (after HOLD_FILE, if any, is gone).  Each test
 * starts its own engine in its Check child (about 50 ms) and frees it; a
 * failing test's child exits and the zygote, which has PR_SET_PDEATHSIG, dies
 * with it.
 *
 * The program exits 77 (skipped) when not root, and when every test passed
 * but the stalled zygote test could not run (no cgroup v1 pids hierarchy).
 */
#include <check.h>
#include <dirent.h>
#include <fcntl.h>
#include <glob.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/xalloc.h"
#include "engine/engine.h"
#include "engine/zygote.h"
#include "sandbox/cgroup.h"
#include "sandbox/cgroup_internal.h"
#include "asan.h"
#include "common/banned.h"

/*
 * While a file of this name is in the working directory, a zygote starting
 * waits before it becomes one, as a slow start would (numpy's first import
 * on a cold cache): the zygote inherits the directory, and the file is
 * looked up relative to it.
 */
#define HOLD_FILE "pybox-test-hold"

/* The engine of the running test, started by setup(). */
static struct pbx_engine *engine;

static void setup(void)
{
    struct pbx_engine_config cfg;
    struct pbx_error *err = NULL;

    pbx_engine_config_default(&cfg);
    if (pbx_engine_start(&cfg, &engine, &err) < 0)
        ck_abort_msg("pbx_engine_start: %s", err ? err->msg : "(no error)");
    ck_assert_ptr_null(err);
    ck_assert_ptr_nonnull(engine);
}

static void teardown(void)
{
    pbx_engine_free(engine);
    engine = NULL;
}

/* Run `code` with `req` (code fields are filled here); the execution must run. */
static void run(struct pbx_exec_request *req, const char *code, struct pbx_exec_result *res)
{
    struct pbx_error *err = NULL;
    int r;

    req->code = code;
    req->code_len = strlen(code);
    r = pbx_engine_execute(engine, req, res, &err);
    if (r < 0)
        ck_abort_msg("pbx_engine_execute(%s): %s", code, err ? err->msg : "(no error)");
    ck_assert_ptr_null(err);
}

static void run_simple(const char *code, struct pbx_exec_result *res)
{
    struct pbx_exec_request req;

    pbx_exec_request_init(&req);
    run(&req, code, res);
}

/* pbx_engine_execute() must refuse `req` with `code` and leave *res empty. */
static void expect_refused(const struct pbx_exec_request *req, int code, const char *what)
{
    struct pbx_exec_result res;
    struct pbx_error *err = NULL;
    int r;

    memset(&res, 0xa5, sizeof(res));
    r = pbx_engine_execute(engine, req, &res, &err);
    ck_assert_msg(r < 0, "%s: accepted", what);
    ck_assert_msg(err != NULL, "%s: no error set", what);
    ck_assert_msg(err->code == code, "%s: code %d (%s), want %d", what, err->code, err->msg, code);
    ck_assert_ptr_nonnull(err->msg);
    ck_assert_ptr_null(res.stdout_data);
    ck_assert_ptr_null(res.files);
    pbx_exec_result_release(&res);
    pbx_error_free(&err);
}

static const char *error_type(const struct pbx_exec_result *res)
{
    return json_string_value(json_object_get(res->error, "type"));
}

START_TEST(test_print)
{
    struct pbx_exec_result res;

    run_simple("print(1)", &res);
    ck_assert_int_eq(res.status, PBX_STATUS_OK);
    ck_assert(res.has_exit_code);
    ck_assert_int_eq(res.exit_code, 0);
    ck_assert_int_eq(res.signal, 0);
    ck_assert_ptr_nonnull(res.stdout_data);
    ck_assert_uint_eq(res.stdout_len, 2);
    ck_assert_str_eq(res.stdout_data, "1\n");
    ck_assert_uint_eq(res.stderr_len, 0);
    ck_assert_str_eq(res.stderr_data, "");
    ck_assert(!res.stdout_truncated);
    ck_assert(!res.stderr_truncated);
    ck_assert_ptr_null(res.error);
    ck_assert_ptr_null(res.result);
    ck_assert_uint_eq(res.nfiles, 0);
    ck_assert(res.duration_ms > 0);
    pbx_exec_result_release(&res);
    ck_assert_ptr_null(res.stdout_data);
    ck_assert_ptr_null(res.files);

    /* The engine serves more than one execution. */
    run_simple("import sys\nsys.stderr.write('to stderr')\nprint('again')", &res);
    ck_assert_int_eq(res.status, PBX_STATUS_OK);
    ck_assert_str_eq(res.stdout_data, "again\n");
    ck_assert_str_eq(res.stderr_data, "to stderr");
    pbx_exec_result_release(&res);
}
END_TEST

START_TEST(test_invalid_requests)
{
    static const char *const two_bad[] = {"ok.txt", "../x"};
    static const char *const ret_ok[] = {"out.txt"};
    struct pbx_exec_request req;
    struct pbx_file_in files[3] = {
        {"a.txt", "a", 1},
        {"b.txt", "b", 1},
        {"c.txt", "c", 1},
    };
    struct pbx_exec_result res;
    static const char code[] = "print('x' * 10)";

    /* Input file names: not flat, empty, dot names, too long, NULL. */
    {
        static const char *const bad[] = {"a/b", "", ".", "..", "/etc/passwd", "../escape"};
        char long_name[300];

        memset(long_name, 'n', 256);
        long_name[256] = '\0';
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]) + 2; i++) {
            struct pbx_file_in f = {NULL, "x", 1};

            f.name = i < sizeof(bad) / sizeof(bad[0])    ? bad[i]
                     : i == sizeof(bad) / sizeof(bad[0]) ? long_name
                                                         : NULL;
            pbx_exec_request_init(&req);
            req.code = code;
            req.code_len = strlen(code);
            req.files = &f;
            req.nfiles = 1;
            expect_refused(&req, PBX_E_INVAL, f.name ? f.name : "(null name)");
        }
    }

    /* The same name twice. */
    pbx_exec_request_init(&req);
    req.code = code;
    req.code_len = strlen(code);
    files[1].name = "a.txt";
    req.files = files;
    req.nfiles = 2;
    expect_refused(&req, PBX_E_INVAL, "duplicate input file");
    files[1].name = "b.txt";

    /* More files than the limit (2 by default). */
    req.nfiles = 3;
    expect_refused(&req, PBX_E_TOO_LARGE, "too many input files");
    req.limits.input_files = 1;
    req.nfiles = 2;
    expect_refused(&req, PBX_E_TOO_LARGE, "over input_files");
    pbx_exec_request_init(&req);
    req.code = code;
    req.code_len = strlen(code);

    /* A file over its size limit. */
    req.files = files;
    req.nfiles = 1;
    req.limits.input_file_bytes = 0;
    expect_refused(&req, PBX_E_TOO_LARGE, "input file too large");
    pbx_exec_request_init(&req);
    req.code = code;
    req.code_len = strlen(code);

    /* Returned file names. */
    req.return_files = two_bad;
    req.nreturn = 2;
    expect_refused(&req, PBX_E_INVAL, "bad returned name");
    req.return_files = ret_ok;
    req.nreturn = 1;
    req.limits.output_files = 0;
    expect_refused(&req, PBX_E_TOO_LARGE, "too many returned files");
    pbx_exec_request_init(&req);

    /* Code over the limit, by one byte; no code at all. */
    req.code = code;
    req.code_len = strlen(code);
    req.limits.code_bytes = strlen(code) - 1;
    expect_refused(&req, PBX_E_TOO_LARGE, "code over the limit");
    pbx_exec_request_init(&req);
    expect_refused(&req, PBX_E_INVAL, "no code");

    /* Stdin over the limit. */
    req.code = code;
    req.code_len = strlen(code);
    req.stdin_data = "abcd";
    req.stdin_len = 4;
    req.limits.stdin_bytes = 3;
    expect_refused(&req, PBX_E_TOO_LARGE, "stdin over the limit");

    /* Limits out of their bounds. */
    pbx_exec_request_init(&req);
    req.code = code;
    req.code_len = strlen(code);
    req.limits.wall_ms = 0;
    expect_refused(&req, PBX_E_INVAL, "wall_ms 0");
    pbx_exec_request_init(&req);
    req.code = code;
    req.code_len = strlen(code);
    req.limits.memory_bytes = UINT64_MAX;
    expect_refused(&req, PBX_E_INVAL, "memory UINT64_MAX");

    /* After all that, the engine still works, and exactly at the limits is fine. */
    pbx_exec_request_init(&req);
    req.limits.code_bytes = strlen(code);
    req.files = files;
    req.nfiles = 2;
    run(&req, code, &res);
    ck_assert_int_eq(res.status, PBX_STATUS_OK);
    ck_assert_str_eq(res.stdout_data, "xxxxxxxxxx\n");
    pbx_exec_result_release(&res);
}
END_TEST

START_TEST(test_stdout_cap)
{
    struct pbx_exec_request req;
    struct pbx_exec_result res;

    pbx_exec_request_init(&req);
    req.limits.stdout_bytes = 1024;
    req.limits.stderr_bytes = 100;
    run(&req,
        "import sys\n"
        "sys.stdout.write('x' * (3 << 20))\n"
        "sys.stderr.write('e' * 5000)\n",
        &res);
    ck_assert_int_eq(res.status, PBX_STATUS_OK);
    ck_assert_uint_eq(res.stdout_len, 1024);
    ck_assert(res.stdout_truncated);
    ck_assert_uint_eq(strlen(res.stdout_data), 1024);
    ck_assert_uint_eq(strspn(res.stdout_data, "x"), 1024);
    ck_assert_uint_eq(res.stderr_len, 100);
    ck_assert(res.stderr_truncated);
    ck_assert_uint_eq(strspn(res.stderr_data, "e"), 100);
    pbx_exec_result_release(&res);

    /* Zero keeps nothing but still flags. */
    pbx_exec_request_init(&req);
    req.limits.stdout_bytes = 0;
    run(&req, "print('hidden')", &res);
    ck_assert_int_eq(res.status, PBX_STATUS_OK);
    ck_assert_uint_eq(res.stdout_len, 0);
    ck_assert_str_eq(res.stdout_data, "");
    ck_assert(res.stdout_truncated);
    pbx_exec_result_release(&res);

    /* Exactly at the cap: not truncated. */
    pbx_exec_request_init(&req);
    req.limits.stdout_bytes = 4;
    run(&req, "print('abc')", &res);
    ck_assert_str_eq(res.stdout_data, "abc\n");
    ck_assert(!res.stdout_truncated);
    pbx_exec_result_release(&res);
}
END_TEST

START_TEST(test_files_round_trip)
{
    static const char *const ret[] = {"out.txt", "missing.txt", "in.txt"};
    struct pbx_file_in in = {"in.txt", "hello world", 11};
    struct pbx_exec_request req;
    struct pbx_exec_result res;

    pbx_exec_request_init(&req);
    req.files = &in;
    req.nfiles = 1;
    req.return_files = ret;
    req.nreturn = 3;
    run(&req,
        "data = open('in.txt').read()\n"
        "with open('out.txt', 'w') as f:\n"
        "    f.write(data.upper())\n",
        &res);
    ck_assert_msg(res.status == PBX_STATUS_OK, "status %s: %s", pbx_status_name(res.status),
                  res.stderr_data);
    ck_assert_uint_eq(res.nfiles, 3);
    ck_assert_str_eq(res.files[0].name, "out.txt");
    ck_assert_ptr_null(res.files[0].error);
    ck_assert_uint_eq(res.files[0].size, 11);
    ck_assert_mem_eq(res.files[0].data, "HELLO WORLD", 11);
    ck_assert_str_eq(res.files[1].name, "missing.txt");
    ck_assert_ptr_null(res.files[1].data);
    ck_assert_str_eq(res.files[1].error, "not found");
    ck_assert_str_eq(res.files[2].name, "in.txt");
    ck_assert_ptr_null(res.files[2].error);
    ck_assert_mem_eq(res.files[2].data, "hello world", 11);
    pbx_exec_result_release(&res);
}
END_TEST

/* What user code plants in /work is never followed or read past its cap. */
START_TEST(test_returned_files_refused)
{
    static const char *const ret[] = {"link", "big", "dir", "fifo", "ok"};
    struct pbx_exec_request req;
    struct pbx_exec_result res;

    pbx_exec_request_init(&req);
    req.allow_all_imports = true;
    req.return_files = ret;
    req.nreturn = 5;
    req.limits.output_file_bytes = 4;
    run(&req,
        "import os\n"
        "os.symlink('/etc/passwd', 'link')\n"
        "open('big', 'w').write('12345')\n"
        "os.mkdir('dir')\n"
        "os.mkfifo('fifo')\n"
        "open('ok', 'w').write('1234')\n",
        &res);
    ck_assert_msg(res.status == PBX_STATUS_OK, "status %s: %s", pbx_status_name(res.status),
                  res.stderr_data);
    ck_assert_uint_eq(res.nfiles, 5);
    ck_assert_str_eq(res.files[0].error, "is a symbolic link");
    ck_assert_ptr_null(res.files[0].data);
    ck_assert_str_eq(res.files[1].error, "file too large");
    ck_assert_ptr_null(res.files[1].data);
    ck_assert_str_eq(res.files[2].error, "not a regular file");
    ck_assert_str_eq(res.files[3].error, "not a regular file");
    ck_assert_ptr_null(res.files[4].error);
    ck_assert_uint_eq(res.files[4].size, 4);
    ck_assert_mem_eq(res.files[4].data, "1234", 4);
    pbx_exec_result_release(&res);
}
END_TEST

START_TEST(test_stdin)
{
    struct pbx_exec_request req;
    struct pbx_exec_result res;

    pbx_exec_request_init(&req);
    req.stdin_data = "abc";
    req.stdin_len = 3;
    run(&req, "import sys\nprint(sys.stdin.read()[::-1])", &res);
    ck_assert_int_eq(res.status, PBX_STATUS_OK);
    ck_assert_str_eq(res.stdout_data, "cba\n");
    pbx_exec_result_release(&res);
}
END_TEST

START_TEST(test_main_mode)
{
    struct pbx_exec_request req;
    struct pbx_exec_result res;
    json_t *want;

    pbx_exec_request_init(&req);
    req.main_mode = true;
    run(&req,
        "def main():\n"
        "    print('side effect')\n"
        "    return {'a': [1, 2.5, 'x\\u00e9'], 'b': None, 'c': True}\n",
        &res);
    ck_assert_int_eq(res.status, PBX_STATUS_OK);
    ck_assert_str_eq(res.stdout_data, "side effect\n");
    ck_assert_ptr_nonnull(res.result);
    want = json_loads("{\"a\": [1, 2.5, \"x\\u00e9\"], \"b\": null, \"c\": true}", 0, NULL);
    ck_assert(json_equal(res.result, want));
    json_decref(want);
    pbx_exec_result_release(&res);

    /* No main(): an error, no result. */
    pbx_exec_request_init(&req);
    req.main_mode = true;
    run(&req, "x = 1", &res);
    ck_assert_int_eq(res.status, PBX_STATUS_ERROR);
    ck_assert_ptr_null(res.result);
    ck_assert_str_eq(error_type(&res), "MainNotFound");
    pbx_exec_result_release(&res);

    /* A value JSON cannot hold: an error, not a silent null. */
    pbx_exec_request_init(&req);
    req.main_mode = true;
    run(&req, "def main():\n    return float('nan')\n", &res);
    ck_assert_int_eq(res.status, PBX_STATUS_ERROR);
    ck_assert_str_eq(error_type(&res), "ResultNotSerializable");
    pbx_exec_result_release(&res);

    /* Without main mode, main() is not called. */
    pbx_exec_request_init(&req);
    run(&req, "def main():\n    print('called')\n    return 1\n", &res);
    ck_assert_int_eq(res.status, PBX_STATUS_OK);
    ck_assert_str_eq(res.stdout_data, "");
    ck_assert_ptr_null(res.result);
    pbx_exec_result_release(&res);
}
END_TEST

/*
 * main() returning an integer beyond int64 (valid JSON: json.dumps(2**70)
 * writes it) must come back, or at least be reported; "ok" with a null result
 * loses it silently.
 */
START_TEST(test_main_mode_big_integer)
{
    struct pbx_exec_request req;
    struct pbx_exec_result res;

    pbx_exec_request_init(&req);
    req.main_mode = true;
    run(&req, "def main():\n    return 2**70\n", &res);
    ck_assert_msg(res.result != NULL || res.status != PBX_STATUS_OK,
                  "main() returned 2**70: status ok with result null, the value was lost");
    pbx_exec_result_release(&res);
}
END_TEST

START_TEST(test_timeout)
{
    struct pbx_exec_request req;
    struct pbx_exec_result res;

    pbx_exec_request_init(&req);
    req.limits.wall_ms = 500;
    run(&req, "print('start', flush=True)\nwhile True:\n    pass\n", &res);
    ck_assert_int_eq(res.status, PBX_STATUS_TIMEOUT);
    ck_assert_str_eq(res.stdout_data, "start\n");
    ck_assert_ptr_nonnull(res.error);
    ck_assert_str_eq(error_type(&res), "TimeoutError");
    ck_assert(!res.has_exit_code);
    ck_assert_int_eq(res.signal, SIGKILL);
    ck_assert_msg(res.duration_ms >= 450 && res.duration_ms < 3000, "duration %g ms",
                  res.duration_ms);
    pbx_exec_result_release(&res);
}
END_TEST

START_TEST(test_exit_code)
{
    struct pbx_exec_result res;

    run_simple("raise SystemExit(3)", &res);
    ck_assert_int_eq(res.status, PBX_STATUS_ERROR);
    ck_assert(res.has_exit_code);
    ck_assert_int_eq(res.exit_code, 3);
    ck_assert_int_eq(res.signal, 0);
    ck_assert_ptr_nonnull(res.error);
    pbx_exec_result_release(&res);

    run_simple("import sys\nsys.exit(0)", &res);
    ck_assert_int_eq(res.status, PBX_STATUS_OK);
    ck_assert_int_eq(res.exit_code, 0);
    pbx_exec_result_release(&res);

    run_simple("1 / 0", &res);
    ck_assert_int_eq(res.status, PBX_STATUS_ERROR);
    ck_assert_int_eq(res.exit_code, 1);
    ck_assert_str_eq(error_type(&res), "ZeroDivisionError");
    ck_assert_ptr_nonnull(strstr(res.stderr_data, "ZeroDivisionError"));
    ck_assert_ptr_nonnull(strstr(res.stderr_data, "main.py"));
    pbx_exec_result_release(&res);
}
END_TEST

START_TEST(test_killed)
{
    struct pbx_exec_request req;
    struct pbx_exec_result res;
    json_t *o;

    pbx_exec_request_init(&req);
    req.allow_all_imports = true;
    /* A real fault: the job is pid 1 of its pid namespace, which ignores kill() of itself. */
    run(&req, "import ctypes\nctypes.string_at(0)\n", &res);
    if (TEST_ASAN) {
        /*
         * In an ASan build the job is this binary (the zygote) too: its SEGV handler reports the
         * fault and exits 1.  The security suite's plain run (ctest's security-plain tests) sees
         * the real SIGSEGV end to end.
         */
        ck_assert_msg(res.status == PBX_STATUS_ERROR, "status %s", pbx_status_name(res.status));
        ck_assert(res.has_exit_code);
        ck_assert_int_eq(res.exit_code, 1);
        ck_assert_ptr_nonnull(strstr(res.stderr_data, "ERROR: AddressSanitizer: SEGV"));
    } else {
        ck_assert_msg(res.status == PBX_STATUS_KILLED, "status %s", pbx_status_name(res.status));
        ck_assert_int_eq(res.signal, SIGSEGV);
        ck_assert(!res.has_exit_code);
        ck_assert_str_eq(error_type(&res), "Killed");
        o = pbx_exec_result_to_json(&res);
        ck_assert_str_eq(json_string_value(json_object_get(o, "status")), "killed");
        ck_assert_str_eq(json_string_value(json_object_get(o, "signal")), "SIGSEGV");
        ck_assert(json_is_null(json_object_get(o, "exit_code")));
        json_decref(o);
    }
    pbx_exec_result_release(&res);
}
END_TEST

START_TEST(test_memory_limit)
{
    struct pbx_exec_request req;
    struct pbx_exec_result res;

    pbx_exec_request_init(&req);
    req.limits.memory_bytes = 64u << 20;
    run(&req, "x = bytearray(512 << 20)\nprint('survived')\n", &res);
    ck_assert_msg(res.status == PBX_STATUS_MEMORY_LIMIT, "status %s", pbx_status_name(res.status));
    ck_assert_str_eq(res.stdout_data, "");
    ck_assert_str_eq(error_type(&res), "MemoryError");
    pbx_exec_result_release(&res);
}
END_TEST

START_TEST(test_rejected)
{
    struct pbx_exec_result res;

    run_simple("import os\nprint('ran')", &res);
    ck_assert_int_eq(res.status, PBX_STATUS_REJECTED);
    ck_assert(!res.has_exit_code);
    ck_assert_str_eq(res.stdout_data, "");
    ck_assert_str_eq(error_type(&res), "ForbiddenImportError");
    pbx_exec_result_release(&res);

    run_simple("def (:", &res);
    ck_assert_int_eq(res.status, PBX_STATUS_REJECTED);
    ck_assert_str_eq(error_type(&res), "SyntaxError");
    pbx_exec_result_release(&res);
}
END_TEST

/* A NUL byte in the code is a rejection, not a crash or a silently shortened script. */
START_TEST(test_code_with_nul)
{
    static const char code[] = "print(1)\0print(2)";
    struct pbx_exec_request req;
    struct pbx_exec_result res;
    struct pbx_error *err = NULL;

    pbx_exec_request_init(&req);
    req.code = code;
    req.code_len = sizeof(code) - 1;
    ck_assert_int_eq(pbx_engine_execute(engine, &req, &res, &err), 0);
    ck_assert_int_eq(res.status, PBX_STATUS_REJECTED);
    ck_assert_str_eq(res.stdout_data, "");
    pbx_exec_result_release(&res);
}
END_TEST

/* Input files that do not fit the disk limit: refused as too large, not an engine failure. */
START_TEST(test_input_over_disk)
{
    struct pbx_exec_request req;
    struct pbx_exec_result res;
    struct pbx_error *err = NULL;
    struct pbx_file_in in = {"big.bin", NULL, 256 * 1024};
    char *data = calloc(1, in.size);

    ck_assert_ptr_nonnull(data);
    in.data = data;
    pbx_exec_request_init(&req);
    req.code = "print(1)";
    req.code_len = 8;
    req.files = &in;
    req.nfiles = 1;
    req.limits.disk_bytes = 64 * 1024;
    ck_assert_int_lt(pbx_engine_execute(engine, &req, &res, &err), 0);
    ck_assert_ptr_nonnull(err);
    ck_assert_msg(err->code == PBX_E_TOO_LARGE, "code %d: %s", err->code, err->msg);
    pbx_error_free(&err);
    pbx_exec_result_release(&res);
    free(data);

    /* The engine goes on. */
    run_simple("print(2)", &res);
    ck_assert_str_eq(res.stdout_data, "2\n");
    pbx_exec_result_release(&res);
}
END_TEST

/* User code can write records to fd 3; a forged rejection must not change the status. */
START_TEST(test_forged_records)
{
    struct pbx_exec_result res;

    run_simple("f = open(3, 'w', closefd=False)\n"
               "f.write('{\"check\": \"rejected\", \"error\": {\"type\": \"Forged\"}}\\n')\n"
               "f.flush()\n"
               "print('ran')\n",
               &res);
    ck_assert_msg(res.status == PBX_STATUS_OK, "status %s", pbx_status_name(res.status));
    ck_assert_str_eq(res.stdout_data, "ran\n");
    ck_assert_ptr_null(res.error);
    pbx_exec_result_release(&res);
}
END_TEST

static void count_output(enum pbx_stream stream, const char *data, size_t len, void *arg)
{
    size_t *counts = arg;

    ck_assert(stream == PBX_STREAM_STDOUT || stream == PBX_STREAM_STDERR);
    ck_assert_ptr_nonnull(data);
    counts[stream == PBX_STREAM_STDOUT ? 0 : 1] += len;
}

START_TEST(test_output_callback)
{
    struct pbx_exec_request req;
    struct pbx_exec_result res;
    size_t counts[2] = {0, 0};

    pbx_exec_request_init(&req);
    req.on_output = count_output;
    req.on_output_arg = counts;
    req.limits.stdout_bytes = 1000;
    run(&req, "import sys\nprint('a' * 5000)\nsys.stderr.write('bb')", &res);
    ck_assert_int_eq(res.status, PBX_STATUS_OK);
    /* Only what is kept is passed on. */
    ck_assert_uint_eq(counts[0], 1000);
    ck_assert_uint_eq(counts[1], 2);
    pbx_exec_result_release(&res);
}
END_TEST

START_TEST(test_result_json)
{
    static const char *const keys[] = {
        "status",           "exit_code",        "signal",     "stdout",  "stderr",
        "stdout_truncated", "stderr_truncated", "result",     "files",   "error",
        "duration_ms",      "cpu_ms",           "max_rss_kb", "outputs",
    };
    static const char *const ret[] = {"out.txt", "missing.txt"};
    struct pbx_exec_request req;
    struct pbx_exec_result res;
    json_t *o;
    json_t *files;
    char *text;

    pbx_exec_request_init(&req);
    req.main_mode = true;
    req.return_files = ret;
    req.nreturn = 2;
    run(&req,
        "def main():\n"
        "    open('out.txt', 'wb').write(b'\\x00\\xffhi')\n"
        "    print('\\u00e9')\n"
        "    return [1]\n",
        &res);
    ck_assert_int_eq(res.status, PBX_STATUS_OK);
    o = pbx_exec_result_to_json(&res);
    ck_assert_ptr_nonnull(o);
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        ck_assert_msg(json_object_get(o, keys[i]) != NULL, "no `%s`", keys[i]);
    ck_assert_uint_eq(json_object_size(o), sizeof(keys) / sizeof(keys[0]));
    ck_assert_str_eq(json_string_value(json_object_get(o, "status")), "ok");
    ck_assert_int_eq(json_integer_value(json_object_get(o, "exit_code")), 0);
    ck_assert(json_is_null(json_object_get(o, "signal")));
    ck_assert_str_eq(json_string_value(json_object_get(o, "stdout")), "\xc3\xa9\n");
    ck_assert(json_is_false(json_object_get(o, "stdout_truncated")));
    ck_assert(json_is_array(json_object_get(o, "result")));
    ck_assert(json_is_null(json_object_get(o, "error")));
    ck_assert(json_is_number(json_object_get(o, "duration_ms")));
    ck_assert(json_is_number(json_object_get(o, "cpu_ms")));
    ck_assert(json_is_integer(json_object_get(o, "max_rss_kb")));
    files = json_object_get(o, "files");
    ck_assert(json_is_object(files));
    ck_assert_str_eq(
        json_string_value(json_object_get(json_object_get(files, "out.txt"), "content_base64")),
        "AP9oaQ==");
    ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(files, "out.txt"), "size")),
                     4);
    ck_assert_str_eq(
        json_string_value(json_object_get(json_object_get(files, "missing.txt"), "error")),
        "not found");
    text = json_dumps(o, PBX_JSON_FLAGS);
    ck_assert_ptr_nonnull(text);
    free(text);
    json_decref(o);
    pbx_exec_result_release(&res);

    /* A rejection: exit_code null, the error object, status "rejected". */
    run_simple("import socket", &res);
    o = pbx_exec_result_to_json(&res);
    ck_assert_str_eq(json_string_value(json_object_get(o, "status")), "rejected");
    ck_assert(json_is_null(json_object_get(o, "exit_code")));
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(o, "error"), "type")),
                     "ForbiddenImportError");
    ck_assert_uint_eq(json_object_size(json_object_get(o, "files")), 0);
    json_decref(o);
    pbx_exec_result_release(&res);

    /* Invalid UTF-8 in the output still makes a JSON string. */
    run_simple("import sys\nsys.stdout.buffer.write(b'a\\xffb\\xc3')", &res);
    o = pbx_exec_result_to_json(&res);
    ck_assert(json_is_string(json_object_get(o, "stdout")));
    ck_assert_str_eq(json_string_value(json_object_get(o, "stdout")), "a\xef\xbf\xbd"
                                                                      "b\xef\xbf\xbd");
    json_decref(o);
    pbx_exec_result_release(&res);
}
END_TEST

START_TEST(test_describe)
{
    char *text = pbx_engine_describe(engine);

    ck_assert_ptr_nonnull(text);
    ck_assert_ptr_nonnull(strstr(text, "namespaces"));
    free(text);
}
END_TEST

START_TEST(test_free_null)
{
    pbx_engine_free(NULL);
}
END_TEST

/*
 * This process's cgroup in the cgroup v1 pids hierarchy, where the engine
 * makes its pids parent; heap, or NULL when there is no such hierarchy.
 */
static char *own_pids_cgroup(void)
{
    char *mount = pbx__cgroup_v1_mount("/sys/fs/cgroup", PBX_CGROUP_PIDS);
    char *text = NULL;
    char *path = NULL;
    char *dir = NULL;
    size_t len;

    if (mount != NULL && pbx__cgroup_read("/proc/self/cgroup", &text, &len) == 0 &&
        pbx__cgroup_parse_proc(text, len, "pids", &path) == 0)
        dir = xasprintf("%s%s", mount, strcmp(path, "/") == 0 ? "" : path);
    free(path);
    free(text);
    free(mount);
    return dir;
}

/* The engine's pids parent cgroup, pybox-<pid>-*: the test fails when there is none. */
static char *engine_pids_dir(void)
{
    char *own = own_pids_cgroup();
    char *pattern;
    char *dir = NULL;
    glob_t g;

    ck_assert_ptr_nonnull(own);
    pattern = xasprintf("%s/pybox-%d-*", own, (int)getpid());
    if (glob(pattern, 0, NULL, &g) == 0) {
        if (g.gl_pathc == 1)
            dir = xstrdup(g.gl_pathv[0]);
        globfree(&g);
    }
    ck_assert_msg(dir != NULL, "not one engine pids cgroup %s", pattern);
    free(pattern);
    free(own);
    return dir;
}

/* The cell cgroups under `dir`. */
static unsigned count_cells(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    unsigned n = 0;

    ck_assert_ptr_nonnull(d);
    while ((de = readdir(d)) != NULL)
        n += strncmp(de->d_name, "cell-", 5) == 0;
    closedir(d);
    return n;
}

/* A zygote of the engine other than `other`: a child of this process; -1 when there is none. */
static pid_t find_zygote_but(pid_t other)
{
    DIR *d = opendir("/proc");
    struct dirent *de;
    pid_t found = -1;

    ck_assert_ptr_nonnull(d);
    while ((de = readdir(d)) != NULL) {
        char path[300];
        char line[256];
        FILE *f;
        pid_t pid;

        if (de->d_name[0] < '1' || de->d_name[0] > '9')
            continue;
        pid = (pid_t)strtol(de->d_name, NULL, 10);
        snprintf(path, sizeof(path), "/proc/%s/status", de->d_name);
        f = fopen(path, "re");
        if (f == NULL)
            continue;
        while (fgets(line, sizeof(line), f) != NULL) {
            if (strncmp(line, "PPid:", 5) == 0) {
                if (strtol(line + 5, NULL, 10) == getpid() && pid != other)
                    found = pid;
                break;
            }
        }
        fclose(f);
    }
    closedir(d);
    return found;
}

/* The engine's zygote: the one child of this process. */
static pid_t find_zygote(void)
{
    return find_zygote_but(-1);
}

/*
 * An execution given up on a stalled zygote: its job message, with the
 * cgroup.procs fds in it, still waits in the zygote's queue, so its cgroups
 * must be removed, not pooled for the next execution (a cell forked from the
 * message later would join them).  Counted in the pids hierarchy: main()
 * registers this test only where there is a v1 one.
 */
START_TEST(test_stalled_zygote_cgroups_not_pooled)
{
    struct pbx_exec_request req;
    struct pbx_exec_result res;
    struct pbx_error *err = NULL;
    char *dir = engine_pids_dir();
    unsigned before;
    pid_t zygote;
    int r;

    before = count_cells(dir);
    ck_assert_uint_gt(before, 0); /* cells created at start, in the pool */
    zygote = find_zygote();
    ck_assert_int_gt(zygote, 0);
    pbx_exec_request_init(&req);
    req.code = "import time\ntime.sleep(30)\n";
    req.code_len = strlen(req.code);
    req.limits.wall_ms = 1000;
    ck_assert_int_eq(kill(zygote, SIGSTOP), 0);
    r = pbx_engine_execute(engine, &req, &res, &err);
    ck_assert_int_lt(r, 0);
    ck_assert_ptr_nonnull(err);
    pbx_error_free(&err);
    pbx_exec_result_release(&res);
    /* The cgroups it took from the pool are gone. */
    ck_assert_uint_eq(count_cells(dir), before - 1);
    ck_assert_int_eq(kill(zygote, SIGCONT), 0);
    /* And the next execution runs as usual. */
    run_simple("print('after')", &res);
    ck_assert_int_eq(res.status, PBX_STATUS_OK);
    ck_assert_str_eq(res.stdout_data, "after\n");
    pbx_exec_result_release(&res);
    free(dir);
}
END_TEST

/* Whether process `pid` has ended (a zombie, or reaped). */
static bool process_ended(pid_t pid)
{
    char path[64];
    char buf[256];
    const char *state;
    ssize_t n;
    int fd;

    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return true;
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return true;
    buf[n] = '\0';
    state = strrchr(buf, ')');
    return state == NULL || (state[1] == ' ' && (state[2] == 'Z' || state[2] == 'X'));
}

/* An execution on demand (limits unlike the spares'), on a thread of its own. */
struct on_demand {
    pthread_t thread;           /* runs it */
    struct pbx_exec_result res; /* its result */
    struct pbx_error *err;      /* or why not */
    int rc;                     /* pbx_engine_execute()'s */
};

static void *on_demand_main(void *arg)
{
    struct on_demand *od = arg;
    struct pbx_exec_request req;

    pbx_exec_request_init(&req);
    req.code = "print('on demand')";
    req.code_len = strlen(req.code);
    req.limits.wall_ms += 1000; /* no spare fits: it forks on demand */
    od->rc = pbx_engine_execute(engine, &req, &od->res, &od->err);
    return NULL;
}

/* pbx_engine_pool_stats() on a thread of its own, which says when it answered. */
struct stats_call {
    pthread_t thread;         /* makes the call */
    struct pbx_pool_stats st; /* its answer */
    atomic_bool answered;     /* st is filled */
};

static void *stats_main(void *arg)
{
    struct stats_call *sc = arg;

    pbx_engine_pool_stats(engine, &sc->st);
    atomic_store(&sc->answered, true);
    return NULL;
}

/* Wait up to `ms` for `done()`; returns whether it came. */
static bool wait_for(bool (*done)(void *), void *arg, unsigned ms)
{
    uint64_t until = pbx_clock_ms(CLOCK_MONOTONIC) + ms;

    while (!done(arg)) {
        if (pbx_clock_ms(CLOCK_MONOTONIC) >= until)
            return false;
        usleep(10000);
    }
    return true;
}

static bool pool_has_spare(void *arg)
{
    struct pbx_pool_stats st;

    (void)arg;
    pbx_engine_pool_stats(engine, &st);
    return st.idle > 0;
}

static bool has_ended(void *arg)
{
    return process_ended(*(pid_t *)arg);
}

static bool new_zygote_found(void *arg)
{
    pid_t *pids = arg; /* the old one, then the new one found */

    pids[1] = find_zygote_but(pids[0]);
    return pids[1] > 0;
}

static bool stats_answered(void *arg)
{
    return atomic_load(&((struct stats_call *)arg)->answered);
}

/*
 * The pool's counters (what /metrics shows) answer while a zygote is being
 * started.  An execution on demand finds the zygote dead and starts the next
 * one, which HOLD_FILE keeps from becoming ready; meanwhile the refill thread
 * meets the dead zygote's spare in the pool (its sweep runs every second).
 * Neither may hold a lock that pbx_engine_pool_stats() needs while the start
 * lasts.  Once the zygote is let go, the execution runs on it.
 */
START_TEST(test_pool_stats_during_zygote_start)
{
    char dir[] = "/tmp/pybox-test-engine-XXXXXX";
    struct pbx_engine_config cfg;
    struct pbx_error *err = NULL;
    struct stats_call sc = {.answered = false};
    struct on_demand od = {.rc = -1};
    struct pbx_pool_stats st;
    pid_t pids[2] = {-1, -1};
    bool in_time;
    int fd;

    ck_assert_ptr_nonnull(mkdtemp(dir));
    /* The zygote, unprivileged on the host, looks up HOLD_FILE from here. */
    ck_assert_int_eq(chmod(dir, 0711), 0);
    ck_assert_int_eq(chdir(dir), 0);
    pbx_engine_config_default(&cfg);
    cfg.spares_min = 1;
    cfg.spares_max = 1;
    if (pbx_engine_start(&cfg, &engine, &err) < 0)
        ck_abort_msg("pbx_engine_start: %s", err ? err->msg : "(no error)");
    ck_assert_msg(wait_for(pool_has_spare, NULL, 30000), "no spare became ready");

    fd = open(HOLD_FILE, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    ck_assert_int_ge(fd, 0);
    close(fd);
    pids[0] = find_zygote();
    ck_assert_int_gt(pids[0], 0);
    ck_assert_int_eq(kill(pids[0], SIGKILL), 0);
    ck_assert(wait_for(has_ended, &pids[0], 10000));
    ck_assert_int_eq(pthread_create(&od.thread, NULL, on_demand_main, &od), 0);
    ck_assert_msg(wait_for(new_zygote_found, pids, 10000), "no new zygote is starting");
    /* Past the refill thread's next sweep. */
    usleep(1500 * 1000);

    ck_assert_int_eq(pthread_create(&sc.thread, NULL, stats_main, &sc), 0);
    in_time = wait_for(stats_answered, &sc, 2000);
    ck_assert_int_eq(unlink(HOLD_FILE), 0);
    pthread_join(sc.thread, NULL);
    pthread_join(od.thread, NULL);
    ck_assert_msg(in_time, "the pool's counters waited for a zygote's start");
    ck_assert_uint_eq(sc.st.zygotes, 1); /* the second one was not ready yet */

    if (od.rc < 0)
        ck_abort_msg("the execution on demand: %s", od.err ? od.err->msg : "(no error)");
    ck_assert_int_eq(od.res.status, PBX_STATUS_OK);
    ck_assert_str_eq(od.res.stdout_data, "on demand\n");
    pbx_exec_result_release(&od.res);
    pbx_engine_pool_stats(engine, &st);
    ck_assert_uint_eq(st.zygotes, 2);
    pbx_engine_free(engine);
    engine = NULL;
    ck_assert_int_eq(chdir("/"), 0);
    ck_assert_int_eq(rmdir(dir), 0);
}
END_TEST

/* Runs one long execution on the shared engine, for test_stop_executions. */
struct long_run {
    struct pbx_exec_result res; /* its result */
    int r;                      /* pbx_engine_execute()'s return */
    atomic_bool up;             /* its first output came: the job runs */
};

static void long_output(enum pbx_stream stream, const char *data, size_t len, void *arg)
{
    struct long_run *lr = arg;

    (void)stream;
    (void)data;
    if (len > 0)
        atomic_store(&lr->up, true);
}

static void *run_long(void *arg)
{
    struct long_run *lr = arg;
    struct pbx_exec_request req;
    struct pbx_error *err = NULL;
    static const char code[] = "import time\nprint('up', flush=True)\ntime.sleep(50)\n";

    pbx_exec_request_init(&req);
    req.limits.wall_ms = 55000;
    req.limits.cpu_ms = 55000;
    req.code = code;
    req.code_len = strlen(code);
    req.on_output = long_output;
    req.on_output_arg = lr;
    lr->r = pbx_engine_execute(engine, &req, &lr->res, &err);
    pbx_error_free(&err);
    return NULL;
}

/*
 * pbx_engine_stop_executions(): a running execution ends at once, killed
 * with error type Stopped, its output so far kept; one that starts later
 * is stopped too.
 */
START_TEST(test_stop_executions)
{
    struct long_run lr = {0};
    struct pbx_exec_result res;
    pthread_t t;
    uint64_t t0;

    atomic_init(&lr.up, false);
    ck_assert_int_eq(pthread_create(&t, NULL, run_long, &lr), 0);
    /* Wait (with a deadline) until the job runs: its first line came. */
    t0 = pbx_clock_ms(CLOCK_MONOTONIC);
    while (!atomic_load(&lr.up)) {
        ck_assert_msg(pbx_clock_ms(CLOCK_MONOTONIC) - t0 < 30000, "the job never printed");
        usleep(10000);
    }
    t0 = pbx_clock_ms(CLOCK_MONOTONIC);
    pbx_engine_stop_executions(engine);
    pthread_join(t, NULL);
    t0 = pbx_clock_ms(CLOCK_MONOTONIC) - t0;
    ck_assert_int_eq(lr.r, 0);
    ck_assert_msg(t0 < 5000, "stopped after %" PRIu64 " ms", t0);
    ck_assert_msg(lr.res.status == PBX_STATUS_KILLED, "status %s", pbx_status_name(lr.res.status));
    ck_assert_str_eq(error_type(&lr.res), "Stopped");
    ck_assert_int_eq(lr.res.signal, SIGKILL);
    ck_assert_str_eq(lr.res.stdout_data, "up\n");
    pbx_exec_result_release(&lr.res);
    /* Later ones are stopped too. */
    run_simple("import time\ntime.sleep(50)\n", &res);
    ck_assert_int_eq(res.status, PBX_STATUS_KILLED);
    ck_assert_str_eq(error_type(&res), "Stopped");
    pbx_exec_result_release(&res);
}
END_TEST

static Suite *engine_suite(bool can_stall)
{
    Suite *s = suite_create("engine");
    TCase *tc = tcase_create("execute");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_print);
    tcase_add_test(tc, test_invalid_requests);
    tcase_add_test(tc, test_stdout_cap);
    tcase_add_test(tc, test_files_round_trip);
    tcase_add_test(tc, test_returned_files_refused);
    tcase_add_test(tc, test_stdin);
    tcase_add_test(tc, test_main_mode);
    tcase_add_test(tc, test_main_mode_big_integer);
    tcase_add_test(tc, test_timeout);
    tcase_add_test(tc, test_exit_code);
    tcase_add_test(tc, test_killed);
    tcase_add_test(tc, test_memory_limit);
    tcase_add_test(tc, test_rejected);
    tcase_add_test(tc, test_code_with_nul);
    tcase_add_test(tc, test_input_over_disk);
    tcase_add_test(tc, test_forged_records);
    tcase_add_test(tc, test_output_callback);
    tcase_add_test(tc, test_result_json);
    tcase_add_test(tc, test_describe);
    tcase_add_test(tc, test_free_null);
    tcase_add_test(tc, test_stop_executions);
    suite_add_tcase(s, tc);

    /* Its own engine, with a warm pool; about 5 s. */
    tc = tcase_create("zygote start");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_pool_stats_during_zygote_start);
    suite_add_tcase(s, tc);

    /* About 50 s: the supervisor gives up on a silent cell after setup, wall and grace times. */
    if (can_stall) {
        tc = tcase_create("stalled");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_set_timeout(tc, 120);
        tcase_add_test(tc, test_stalled_zygote_cgroups_not_pooled);
        suite_add_tcase(s, tc);
    }
    return s;
}

int main(int argc, char **argv)
{
    char *own_pids;
    bool can_stall;
    SRunner *sr;
    int failed;

    /* Re-executed as the zygote through /proc/self/exe; held while HOLD_FILE is there. */
    if (argc >= 2 && strcmp(argv[1], PBX_ZYGOTE_ARG) == 0) {
        while (access(HOLD_FILE, F_OK) == 0)
            usleep(10000);
        pbx_zygote_main(argc, argv);
    }
    if (geteuid() != 0) {
        fprintf(stderr, "not root: skipping the engine tests\n");
        return 77;
    }
    own_pids = own_pids_cgroup();
    can_stall = own_pids != NULL;
    free(own_pids);
    sr = srunner_create(engine_suite(can_stall));
    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    if (failed)
        return 1;
    if (!can_stall) {
        /* Every other test passed; the one that could not run makes the program "skipped". */
        fprintf(stderr, "test_engine: no cgroup v1 pids hierarchy: the stalled zygote test did "
                        "not run\n");
        return 77;
    }
    return 0;
}
