/*
 * End-to-end tests of sessions (src/engine/session.c, session_cell.c): a
 * real jail, zygote, session cells and their interpreters.  Needs root.
 * The zygote is this binary re-executed, as in test_engine.c.
 */
#include <check.h>
#include <dirent.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "engine/engine.h"
#include "engine/session.h"
#include "engine/zygote.h"
#include "session_procs.h"
#include "common/banned.h"

static struct pbx_engine *engine;
static struct pbx_session *session;
static bool allow_all; /* calls skip the import allowlist (threading, os) */

static void setup(void)
{
    struct pbx_engine_config cfg;
    struct pbx_error *err = NULL;
    struct pbx_limits l;
    const struct pbx_file_in in = {.name = "in.txt", .data = "hello", .size = 5};

    pbx_engine_config_default(&cfg);
    if (pbx_engine_start(&cfg, &engine, &err) < 0)
        ck_abort_msg("pbx_engine_start: %s", err->msg);
    pbx_limits_default(&l);
    if (pbx_session_open(engine, &l, &in, 1, &session, &err) < 0)
        ck_abort_msg("pbx_session_open: %s", err->msg);
}

static void teardown(void)
{
    pbx_session_close(session);
    session = NULL;
    pbx_engine_free(engine);
    engine = NULL;
}

/* Run `code` in the session with a wall limit of `wall_ms` (0: the default). */
static void call(const char *code, uint32_t wall_ms, struct pbx_exec_result *res,
                 struct pbx_session_call *c)
{
    struct pbx_exec_request req;
    struct pbx_error *err = NULL;

    pbx_exec_request_init(&req);
    req.code = code;
    req.code_len = strlen(code);
    if (wall_ms)
        req.limits.wall_ms = wall_ms;
    req.allow_all_imports = allow_all;
    if (pbx_session_execute(session, &req, res, c, &err) < 0)
        ck_abort_msg("pbx_session_execute(%s): %s", code, err->msg);
}

/* The text/plain of the last output of `res` of type `type`, or NULL. */
static const char *output_text(const struct pbx_exec_result *res, const char *type)
{
    const char *text = NULL;
    size_t i;
    json_t *o;

    json_array_foreach(res->outputs, i, o)
    {
        if (strcmp(json_string_value(json_object_get(o, "type")), type) == 0)
            text = json_string_value(json_object_get(json_object_get(o, "data"), "text/plain"));
    }
    return text;
}

START_TEST(test_state_across_calls)
{
    struct pbx_exec_result res;
    struct pbx_session_call c;

    call("x = 41\nimport json\n", 0, &res, &c);
    ck_assert_int_eq(res.status, PBX_STATUS_OK);
    ck_assert_int_eq((int)c.execution_count, 1);
    ck_assert(c.state_preserved);
    pbx_exec_result_release(&res);
    call("x += 1\nprint(json.dumps(x), open('in.txt').read())\n", 0, &res, &c);
    ck_assert_int_eq(res.status, PBX_STATUS_OK);
    ck_assert_str_eq(res.stdout_data, "42 hello\n");
    ck_assert_int_eq((int)c.execution_count, 2);
    pbx_exec_result_release(&res);
}
END_TEST

START_TEST(test_repl_rules)
{
    struct pbx_exec_result res;
    struct pbx_session_call c;
    const char *tb;

    call("y = 6\ny * 7\n", 0, &res, &c);
    ck_assert_str_eq(output_text(&res, "result"), "42");
    pbx_exec_result_release(&res);
    call("_ + 1\n", 0, &res, &c);
    ck_assert_str_eq(output_text(&res, "result"), "43");
    pbx_exec_result_release(&res);
    call("y * 2;  # suppressed\n", 0, &res, &c);
    ck_assert_ptr_null(output_text(&res, "result"));
    pbx_exec_result_release(&res);
    call("a = 1\n\nraise ValueError('bad')\n", 0, &res, &c);
    ck_assert_int_eq(res.status, PBX_STATUS_ERROR);
    tb = json_string_value(json_object_get(res.error, "traceback"));
    ck_assert_ptr_nonnull(tb);
    ck_assert_msg(strstr(tb, "File \"<cell 4>\", line 3") != NULL, "traceback: %s", tb);
    ck_assert_msg(strstr(tb, "raise ValueError('bad')") != NULL, "traceback: %s", tb);
    ck_assert(c.state_preserved);
    pbx_exec_result_release(&res);
}
END_TEST

START_TEST(test_timeout_keeps_state)
{
    struct pbx_exec_result res;
    struct pbx_session_call c;

    call("kept = 'yes'\n", 0, &res, &c);
    pbx_exec_result_release(&res);
    call("import time\ntime.sleep(30)\n", 500, &res, &c);
    ck_assert_int_eq(res.status, PBX_STATUS_TIMEOUT);
    ck_assert(c.state_preserved);
    ck_assert(c.interrupted);
    ck_assert_msg(res.duration_ms < 5000, "took %g ms", res.duration_ms);
    pbx_exec_result_release(&res);
    call("print(kept)\n", 0, &res, &c);
    ck_assert_str_eq(res.stdout_data, "yes\n");
    pbx_exec_result_release(&res);
}
END_TEST

START_TEST(test_swallowed_interrupt_ends_session)
{
    struct pbx_exec_result res;
    struct pbx_session_call c;
    struct pbx_session_state st;
    struct pbx_exec_request req;
    struct pbx_error *err = NULL;

    call("import time\nwhile True:\n    try:\n        time.sleep(10)\n"
         "    except KeyboardInterrupt:\n        pass\n",
         500, &res, &c);
    ck_assert_int_eq(res.status, PBX_STATUS_TIMEOUT);
    ck_assert(!c.state_preserved);
    ck_assert_int_eq(c.ended, PBX_SESSION_TIMEOUT);
    pbx_exec_result_release(&res);
    pbx_session_state(session, &st);
    ck_assert_int_eq(st.ended, PBX_SESSION_TIMEOUT);
    pbx_exec_request_init(&req);
    req.code = "print(1)";
    req.code_len = 8;
    ck_assert_int_lt(pbx_session_execute(session, &req, &res, &c, &err), 0);
    ck_assert_int_eq(err->code, PBX_E_GONE);
    pbx_error_free(&err);
}
END_TEST

START_TEST(test_memory_kill_ends_session)
{
    struct pbx_exec_result res;
    struct pbx_session_call c;

    call("b = b'\\x01' * (1 << 30)\n", 0, &res, &c);
    ck_assert_int_eq(res.status, PBX_STATUS_MEMORY_LIMIT);
    ck_assert(!c.state_preserved);
    ck_assert_int_eq(c.ended, PBX_SESSION_MEMORY);
    pbx_exec_result_release(&res);
}
END_TEST

START_TEST(test_pids_limit_ends_session)
{
    struct pbx_exec_result res;
    struct pbx_session_call c;
    struct pbx_session_state st;

    allow_all = true;
    call("import threading, time\nts = [threading.Thread(target=time.sleep, args=(5,)) "
         "for _ in range(40)]\nfor t in ts:\n    t.start()\n",
         0, &res, &c);
    ck_assert(!c.state_preserved);
    ck_assert_int_eq(c.ended, PBX_SESSION_PIDS);
    pbx_exec_result_release(&res);
    pbx_session_state(session, &st);
    ck_assert_str_eq(pbx_session_end_name(st.ended), "pids_limit");
}
END_TEST

struct interrupter {
    pthread_t thread;
    bool sent;
};

static void *interrupt_main(void *arg)
{
    struct interrupter *it = arg;
    uint64_t until = pbx_clock_ms(CLOCK_MONOTONIC) + 10000;

    /* Until the call is running: the session says busy once it is. */
    while (pbx_clock_ms(CLOCK_MONOTONIC) < until) {
        struct pbx_session_state st;

        pbx_session_state(session, &st);
        if (st.busy) {
            struct timespec ts = {0, 200000000};

            nanosleep(&ts, NULL); /* let the call get into its sleep */
            it->sent = pbx_session_interrupt(session);
            if (it->sent)
                break;
        }
        sched_yield();
    }
    return NULL;
}

START_TEST(test_interrupt)
{
    struct pbx_exec_result res;
    struct pbx_session_call c;
    struct interrupter it = {0};

    ck_assert(!pbx_session_interrupt(session)); /* no call runs */
    ck_assert_int_eq(pthread_create(&it.thread, NULL, interrupt_main, &it), 0);
    call("import time\nz = 5\ntime.sleep(20)\n", 0, &res, &c);
    pthread_join(it.thread, NULL);
    ck_assert(it.sent);
    ck_assert_int_eq(res.status, PBX_STATUS_ERROR);
    ck_assert_str_eq(json_string_value(json_object_get(res.error, "type")), "KeyboardInterrupt");
    ck_assert(c.state_preserved);
    pbx_exec_result_release(&res);
    call("print(z)\n", 0, &res, &c);
    ck_assert_str_eq(res.stdout_data, "5\n");
    pbx_exec_result_release(&res);
}
END_TEST

START_TEST(test_restart)
{
    struct pbx_exec_result res;
    struct pbx_session_call c;
    struct pbx_error *err = NULL;

    call("gone = 1\nopen('kept.txt', 'w').write('k')\n", 0, &res, &c);
    pbx_exec_result_release(&res);
    ck_assert_int_eq(pbx_session_restart(session, &err), 0);
    call("print('gone' in globals(), open('kept.txt').read())\n", 0, &res, &c);
    ck_assert_str_eq(res.stdout_data, "False k\n");
    ck_assert_int_eq((int)c.execution_count, 1);
    pbx_exec_result_release(&res);
}
END_TEST

START_TEST(test_files)
{
    struct pbx_error *err = NULL;
    struct pbx_exec_result res;
    struct pbx_session_call c;
    json_t *list = NULL;
    char *data = NULL;
    size_t len = 0;

    if (pbx_session_file_put(session, "d/e/f.bin", "\0\1\2", 3, &err) < 0)
        ck_abort_msg("put: %s", err->msg);
    ck_assert_int_eq(pbx_session_file_get(session, "d/e/f.bin", &data, &len, &err), 0);
    ck_assert_int_eq((int)len, 3);
    ck_assert(memcmp(data, "\0\1\2", 3) == 0);
    free(data);
    allow_all = true;
    call("import os\nos.symlink('/etc/passwd', 'link')\nprint(open('d/e/f.bin','rb').read())\n", 0,
         &res, &c);
    ck_assert_str_eq(res.stdout_data, "b'\\x00\\x01\\x02'\n");
    pbx_exec_result_release(&res);
    ck_assert_int_lt(pbx_session_file_get(session, "link", &data, &len, &err), 0);
    ck_assert_ptr_null(data);
    pbx_error_free(&err);
    ck_assert_int_lt(pbx_session_file_get(session, "../etc/passwd", &data, &len, &err), 0);
    ck_assert_int_eq(err->code, PBX_E_INVAL);
    pbx_error_free(&err);
    ck_assert_int_lt(pbx_session_file_put(session, "link/x", "a", 1, &err), 0);
    pbx_error_free(&err);
    ck_assert_int_eq(pbx_session_file_list(session, &list, &err), 0);
    ck_assert_int_eq((int)json_array_size(list), 2); /* in.txt and d/e/f.bin; no link */
    json_decref(list);
    ck_assert_int_eq(pbx_session_file_delete(session, "d/e/f.bin", &err), 0);
    ck_assert_int_lt(pbx_session_file_get(session, "d/e/f.bin", &data, &len, &err), 0);
    ck_assert_int_eq(err->code, PBX_E_NOTFOUND);
    pbx_error_free(&err);
}
END_TEST

START_TEST(test_idle_uses_no_cpu)
{
    struct pbx_exec_result res;
    struct pbx_session_call c;
    struct timespec gap = {1, 0};
    char code[256];
    double last;

    allow_all = true;

    call("import threading, time\nticks = []\n"
         "def tick():\n    while True:\n        ticks.append(time.monotonic())\n"
         "        time.sleep(0.01)\n"
         "threading.Thread(target=tick, daemon=True).start()\ntime.sleep(0.1)\n"
         "print(repr(time.monotonic()))\n",
         0, &res, &c);
    ck_assert_int_eq(res.status, PBX_STATUS_OK);
    last = strtod(res.stdout_data, NULL);
    pbx_exec_result_release(&res);
    /* The idle interval itself is what is measured: the thread must make no progress in it. */
    nanosleep(&gap, NULL);
    snprintf(code, sizeof(code),
             "t0 = time.monotonic()\nprint(len(ticks) > 5, t0 - %.6f > 0.9, "
             "len([t for t in ticks if %.6f + 0.1 < t < t0 - 0.1]))\n",
             last, last);
    call(code, 0, &res, &c);
    ck_assert_str_eq(res.stdout_data, "True True 0\n");
    pbx_exec_result_release(&res);
}
END_TEST

START_TEST(test_close_leaves_no_process)
{
    struct pbx_exec_result res;
    struct pbx_session_call c;
    pid_t pids[8];
    int n;

    allow_all = true;
    /* The code leaves a child behind, stopped with the rest between calls. */
    call("import subprocess, sys\nopen('marker-close', 'w').close()\n"
         "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n",
         0, &res, &c);
    ck_assert_int_eq(res.status, PBX_STATUS_OK);
    pbx_exec_result_release(&res);
    /* The cell and its interpreter (both named so: one is a fork of the other), and the child. */
    n = find_in_session("pybox-cell", "marker-close", pids, 8);
    ck_assert_int_eq(n, 2);
    n += find_in_session("python3", "marker-close", pids + n, 8 - n);
    ck_assert_int_eq(n, 3);
    pbx_session_close(session);
    session = NULL;
    /* Closed means gone: the cell was waited for, and the rest died with its namespace. */
    for (int i = 0; i < n; i++) {
        uint64_t until = pbx_clock_ms(CLOCK_MONOTONIC) + 5000;

        while (!pid_gone(pids[i]) && pbx_clock_ms(CLOCK_MONOTONIC) < until)
            sched_yield();
        ck_assert_msg(pid_gone(pids[i]), "process %d of the session is still there", (int)pids[i]);
    }
}
END_TEST

static Suite *session_suite(void)
{
    Suite *s = suite_create("session");
    TCase *tc = tcase_create("session");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_state_across_calls);
    tcase_add_test(tc, test_repl_rules);
    tcase_add_test(tc, test_timeout_keeps_state);
    tcase_add_test(tc, test_swallowed_interrupt_ends_session);
    tcase_add_test(tc, test_memory_kill_ends_session);
    tcase_add_test(tc, test_pids_limit_ends_session);
    tcase_add_test(tc, test_interrupt);
    tcase_add_test(tc, test_restart);
    tcase_add_test(tc, test_files);
    tcase_add_test(tc, test_idle_uses_no_cpu);
    tcase_add_test(tc, test_close_leaves_no_process);
    suite_add_tcase(s, tc);
    return s;
}

int main(int argc, char **argv)
{
    SRunner *sr;
    int failed;

    if (argc >= 2 && strcmp(argv[1], PBX_ZYGOTE_ARG) == 0)
        pbx_zygote_main(argc, argv);
    if (geteuid() != 0) {
        fprintf(stderr, "not root: skipping the session tests\n");
        return 77;
    }
    sr = srunner_create(session_suite());
    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
