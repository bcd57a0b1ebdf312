/*
 * Unit tests for src/common/error.c: the error contract (pbx_error_set,
 * pbx_error_prefix, pbx_error_free) and the table of internal codes
 * (pbx_strerror, pbx_err_name) for errno values, PBX_E_* codes and codes that
 * are neither; and for src/common/errtable.c, the one error table and its
 * lookups.
 */
#include <check.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "common/error.h"
#include "common/errtable.h"
#include "common/banned.h"

START_TEST(test_set_errno)
{
    struct pbx_error *err = NULL;

    ck_assert_int_eq(pbx_error_set(&err, EACCES, "open `%s`", "/x"), -EACCES);
    ck_assert_ptr_nonnull(err);
    ck_assert_int_eq(err->code, EACCES);
    /* The system message is appended to errno codes. */
    ck_assert_str_eq(err->msg, "open `/x`: Permission denied");
    pbx_error_free(&err);
    ck_assert_ptr_null(err);
}
END_TEST

START_TEST(test_set_pbx_code)
{
    struct pbx_error *err = NULL;

    ck_assert_int_eq(pbx_error_set(&err, PBX_E_TOO_LARGE, "code is %d bytes", 12),
                     -PBX_E_TOO_LARGE);
    ck_assert_int_eq(err->code, PBX_E_TOO_LARGE);
    /* No suffix for pybox's own codes: the message says it all. */
    ck_assert_str_eq(err->msg, "code is 12 bytes");
    pbx_error_free(&err);

    /* A code >= 1000 that is not in the table is kept as is, without a suffix. */
    ck_assert_int_eq(pbx_error_set(&err, 5000, "future"), -5000);
    ck_assert_int_eq(err->code, 5000);
    ck_assert_str_eq(err->msg, "future");
    pbx_error_free(&err);
}
END_TEST

/* A negative code (a -errno return passed on) means the same positive code. */
START_TEST(test_set_negative_code)
{
    struct pbx_error *err = NULL;

    ck_assert_int_eq(pbx_error_set(&err, -ENOENT, "stat"), -ENOENT);
    ck_assert_int_eq(err->code, ENOENT);
    ck_assert_str_eq(err->msg, "stat: No such file or directory");
    pbx_error_free(&err);

    ck_assert_int_eq(pbx_error_set(&err, -PBX_E_INVAL, "bad"), -PBX_E_INVAL);
    ck_assert_int_eq(err->code, PBX_E_INVAL);
    ck_assert_str_eq(err->msg, "bad");
    pbx_error_free(&err);

    ck_assert_int_eq(pbx_error_set(&err, INT_MAX, "max"), -INT_MAX);
    ck_assert_int_eq(err->code, INT_MAX);
    pbx_error_free(&err);
    ck_assert_int_eq(pbx_error_set(&err, -INT_MAX, "max"), -INT_MAX);
    ck_assert_int_eq(err->code, INT_MAX);
    pbx_error_free(&err);
}
END_TEST

/* Code 0 (errno left unset by a failing call) still yields a failure and a non-zero code. */
START_TEST(test_set_zero_code)
{
    struct pbx_error *err = NULL;
    int r = pbx_error_set(&err, 0, "weird");

    ck_assert_int_lt(r, 0);
    ck_assert_ptr_nonnull(err);
    ck_assert_int_ne(err->code, 0);
    ck_assert_int_eq(r, -err->code);
    ck_assert_ptr_nonnull(err->msg);
    ck_assert_ptr_nonnull(strstr(err->msg, "weird"));
    pbx_error_free(&err);
    ck_assert_int_eq(pbx_error_set(NULL, 0, "weird"), r);
}
END_TEST

START_TEST(test_set_null_err)
{
    ck_assert_int_eq(pbx_error_set(NULL, EINVAL, "dropped %s", "x"), -EINVAL);
    ck_assert_int_eq(pbx_error_set(NULL, -EINVAL, "dropped"), -EINVAL);
    ck_assert_int_eq(pbx_error_set(NULL, PBX_E_PROTO, "dropped"), -PBX_E_PROTO);
}
END_TEST

START_TEST(test_set_unknown_errno)
{
    struct pbx_error *err = NULL;

    ck_assert_int_eq(pbx_error_set(&err, 999, "odd"), -999);
    ck_assert_str_eq(err->msg, "odd: unknown error");
    pbx_error_free(&err);
}
END_TEST

/* Long messages are not cut. */
START_TEST(test_set_long_message)
{
    struct pbx_error *err = NULL;
    char *big = malloc(100001);

    ck_assert_ptr_nonnull(big);
    memset(big, 'x', 100000);
    big[100000] = '\0';
    pbx_error_set(&err, PBX_E_ENGINE, "%s!", big);
    ck_assert_uint_eq(strlen(err->msg), 100001);
    ck_assert_int_eq(err->msg[100000], '!');
    pbx_error_free(&err);
    free(big);
}
END_TEST

/* Setting over an error that was not handled is a broken invariant: abort. */
START_TEST(test_set_twice_aborts)
{
    struct pbx_error *err = NULL;
    struct rlimit no_core = {0, 0};

    (void)setrlimit(RLIMIT_CORE, &no_core);
    pbx_error_set(&err, EINVAL, "first");
    pbx_error_set(&err, EINVAL, "second");
}
END_TEST

START_TEST(test_prefix)
{
    struct pbx_error *err = NULL;

    pbx_error_set(&err, ENOENT, "bind `%s`", "/usr/lib/python3");
    ck_assert_int_eq(pbx_error_prefix(&err, "root filesystem"), -ENOENT);
    ck_assert_int_eq(pbx_error_prefix(&err, "start the %s", "jail"), -ENOENT);
    ck_assert_int_eq(err->code, ENOENT);
    ck_assert_str_eq(err->msg, "start the jail: root filesystem: bind `/usr/lib/python3`: No "
                               "such file or directory");
    pbx_error_free(&err);

    pbx_error_set(&err, PBX_E_SANDBOX, "cause");
    ck_assert_int_eq(pbx_error_prefix(&err, "%s", ""), -PBX_E_SANDBOX);
    ck_assert_str_eq(err->msg, ": cause");
    pbx_error_free(&err);
}
END_TEST

START_TEST(test_prefix_without_error_aborts)
{
    struct pbx_error *err = NULL;
    struct rlimit no_core = {0, 0};

    (void)setrlimit(RLIMIT_CORE, &no_core);
    pbx_error_prefix(&err, "context");
}
END_TEST

START_TEST(test_free)
{
    struct pbx_error *err = NULL;

    pbx_error_free(NULL);
    pbx_error_free(&err);
    ck_assert_ptr_null(err);
    pbx_error_set(&err, EIO, "x");
    pbx_error_free(&err);
    ck_assert_ptr_null(err);
    pbx_error_free(&err);
}
END_TEST

START_TEST(test_code_table)
{
    /* Every PBX_E_* code has its own name and message, from the one X-macro. */
#define CHECK_CODE(name, num, msg)                       \
    ck_assert_int_eq(PBX_E_##name, num);                 \
    ck_assert_int_ge(num, 1000);                         \
    ck_assert_str_eq(pbx_err_name(num), "PBX_E_" #name); \
    ck_assert_str_eq(pbx_strerror(num), msg);
    PBX_ERRNO_MAP(CHECK_CODE)
#undef CHECK_CODE
    /* The numbers are stable: they are logged and kept in tests, never renumbered. */
    ck_assert_int_eq(PBX_E_INVAL, 1000);
    ck_assert_int_eq(PBX_E_NOMEM, 1001);
    ck_assert_int_eq(PBX_E_TOO_LARGE, 1002);
    ck_assert_int_eq(PBX_E_SANDBOX, 1003);
    ck_assert_int_eq(PBX_E_ENGINE, 1004);
    ck_assert_int_eq(PBX_E_PROTO, 1005);
    ck_assert_int_eq(PBX_E_UNSUPPORTED, 1006);
    ck_assert_int_eq(PBX_E_NOTFOUND, 1007);
    ck_assert_int_eq(PBX_E_POLICY, 1008);
}
END_TEST

START_TEST(test_errno_values)
{
    ck_assert_str_eq(pbx_err_name(EINVAL), "EINVAL");
    ck_assert_str_eq(pbx_err_name(ENOENT), "ENOENT");
    ck_assert_str_eq(pbx_err_name(EPERM), "EPERM");
    ck_assert_str_eq(pbx_err_name(ENOSPC), "ENOSPC");
    ck_assert_str_eq(pbx_strerror(EINVAL), "Invalid argument");
    ck_assert_str_eq(pbx_strerror(ENOENT), "No such file or directory");
    ck_assert_str_eq(pbx_strerror(EACCES), "Permission denied");
    /* Every errno value the C library knows has a name and a message; none is NULL. */
    for (int e = 1; e < 1000; e++) {
        ck_assert_ptr_nonnull(pbx_err_name(e));
        ck_assert_ptr_nonnull(pbx_strerror(e));
        ck_assert_uint_gt(strlen(pbx_err_name(e)), 0);
        ck_assert_uint_gt(strlen(pbx_strerror(e)), 0);
    }
    /* 999 is no errno value. */
    ck_assert_str_eq(pbx_err_name(999), "PBX_E_UNKNOWN");
    ck_assert_str_eq(pbx_strerror(999), "unknown error");
}
END_TEST

/* Zero, negative and unassigned codes are "unknown", never NULL. */
START_TEST(test_unknown_codes)
{
    static const int codes[] = {0, -1, -EINVAL, -PBX_E_INVAL, 1099, 4096, INT_MAX, INT_MIN};

    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
        ck_assert_str_eq(pbx_err_name(codes[i]), "PBX_E_UNKNOWN");
        ck_assert_str_eq(pbx_strerror(codes[i]), "unknown error");
    }
}
END_TEST

/* ---- the error table ---- */

START_TEST(test_table_rows)
{
    const struct pbx_errtable_row *r;
    size_t typed = 0;
    size_t i;

    for (i = 0; (r = pbx_errtable_get(i)) != NULL; i++) {
        ck_assert_int_eq(r->id, (int)i);
        ck_assert_ptr_nonnull(r->name);
        /* A row with a type has a status, one without has none. */
        ck_assert_int_eq(r->type != NULL, r->status != 0);
        ck_assert_int_ne(r->remote, PYBOX_OK);
        ck_assert(r->exit == PBX_EXIT_USAGE || r->exit == PBX_EXIT_UNAVAILABLE ||
                  r->exit == PBX_EXIT_TEMPFAIL || r->exit == PBX_EXIT_NOPERM ||
                  r->exit == PBX_EXIT_FAILURE);
        ck_assert(r->python != NULL || r->id == PBX_ERRTABLE_NOMEM ||
                  r->id == PBX_ERRTABLE_CANCELLED);
        if (r->type == NULL)
            continue;
        typed++;
        /* Types are unique: the type alone finds the row. */
        ck_assert_ptr_eq(pbx_errtable_of_type(r->type), r);
        ck_assert_int_eq(pbx_errtable_status(r->type), r->status);
    }
    ck_assert_uint_eq(i, PBX_ERRTABLE_COUNT);
    ck_assert_ptr_null(pbx_errtable_get(PBX_ERRTABLE_COUNT));
    ck_assert_ptr_null(pbx_errtable_get((size_t)-1));
    /* The 22 types of docs/api.md (tests/client/test_error_table.py compares them one by one). */
    ck_assert_uint_eq(typed, 22);
    ck_assert_int_eq(pbx_errtable_status("ValidationError"), 400);
    ck_assert_int_eq(pbx_errtable_status("PayloadTooLarge"), 413);
    ck_assert_int_eq(pbx_errtable_status("NetworkUnavailable"), 501);
}
END_TEST

/* Each code means one exit status and one Python class, whichever of its rows is found. */
START_TEST(test_table_consistent)
{
    const struct pbx_errtable_row *a;
    const struct pbx_errtable_row *b;

    for (size_t i = 0; (a = pbx_errtable_get(i)) != NULL; i++) {
        for (size_t j = 0; (b = pbx_errtable_get(j)) != NULL; j++) {
            if (a->remote == b->remote || (a->local != PBX_ERRTABLE_NONE && a->local == b->local))
                ck_assert_msg(a->exit == b->exit, "%s and %s: one code, two exit statuses", a->name,
                              b->name);
            /* A row local mode meets gives the code remote mode gives for it, but one. */
            if (i == j && a->local != PBX_ERRTABLE_NONE && a->local != (int)a->remote)
                ck_assert_int_eq(a->id, PBX_ERRTABLE_INTERNAL_SERVER_ERROR);
        }
    }
    /* Every code libpybox returns is in the table. */
    for (int code = 1; code <= PYBOX_CODE_MAX; code++)
        ck_assert_msg(pbx_errtable_of_pybox_code(code, false) != NULL ||
                          pbx_errtable_of_pybox_code(code, true) != NULL,
                      "libpybox code %d has no row", code);
}
END_TEST

START_TEST(test_table_lookups)
{
    ck_assert_ptr_null(pbx_errtable_of_type(NULL));
    ck_assert_ptr_null(pbx_errtable_of_type("BadGateway"));
    ck_assert_ptr_null(pbx_errtable_of_type("validationerror"));
    ck_assert_int_eq(pbx_errtable_status("BadGateway"), 500);
    ck_assert_int_eq(pbx_errtable_status(NULL), 500);

    /* By status: the first row with it, else a 5xx is an internal error. */
    ck_assert_int_eq(pbx_errtable_of_status(400)->id, PBX_ERRTABLE_INVALID_REQUEST);
    ck_assert_int_eq(pbx_errtable_of_status(413)->id, PBX_ERRTABLE_PAYLOAD_TOO_LARGE);
    ck_assert_int_eq(pbx_errtable_of_status(501)->id, PBX_ERRTABLE_NETWORK_UNAVAILABLE);
    ck_assert_int_eq(pbx_errtable_of_status(502)->id, PBX_ERRTABLE_INTERNAL_SERVER_ERROR);
    ck_assert_int_eq(pbx_errtable_of_status(599)->id, PBX_ERRTABLE_INTERNAL_SERVER_ERROR);
    ck_assert_int_eq(pbx_errtable_of_status(418)->id, PBX_ERRTABLE_UNEXPECTED_STATUS);
    ck_assert_int_eq(pbx_errtable_of_status(301)->id, PBX_ERRTABLE_UNEXPECTED_STATUS);
    ck_assert_int_eq(pbx_errtable_of_status(200)->id, PBX_ERRTABLE_UNEXPECTED_STATUS);
    ck_assert_int_eq(pbx_errtable_of_status(0)->id, PBX_ERRTABLE_UNEXPECTED_STATUS);

    /* The type wins over the status; an unknown type falls back to the status. */
    ck_assert_int_eq(pbx_errtable_of_answer("PayloadTooLarge", 400)->id,
                     PBX_ERRTABLE_PAYLOAD_TOO_LARGE);
    ck_assert_int_eq(pbx_errtable_of_answer("BadGateway", 502)->id,
                     PBX_ERRTABLE_INTERNAL_SERVER_ERROR);
    ck_assert_int_eq(pbx_errtable_of_answer(NULL, 503)->id, PBX_ERRTABLE_SERVER_BUSY);

    /* By internal code: the two request errors, and everything else. */
    ck_assert_int_eq(pbx_errtable_of_code(PBX_E_INVAL, false)->id, PBX_ERRTABLE_VALIDATION_ERROR);
    ck_assert_int_eq(pbx_errtable_of_code(-PBX_E_INVAL, false)->id, PBX_ERRTABLE_VALIDATION_ERROR);
    ck_assert_int_eq(pbx_errtable_of_code(PBX_E_TOO_LARGE, false)->id,
                     PBX_ERRTABLE_PAYLOAD_TOO_LARGE);
    ck_assert_int_eq(pbx_errtable_of_code(PBX_E_TOO_LARGE, true)->id,
                     PBX_ERRTABLE_VALIDATION_ERROR);
    ck_assert_int_eq(pbx_errtable_of_code(PBX_E_INVAL, true)->id, PBX_ERRTABLE_VALIDATION_ERROR);
    /* A session's: unknown (or another caller's), busy, ended. */
    ck_assert_int_eq(pbx_errtable_of_code(PBX_E_NOTFOUND, false)->id, PBX_ERRTABLE_NOT_FOUND);
    ck_assert_int_eq(pbx_errtable_of_code(-PBX_E_BUSY, false)->id, PBX_ERRTABLE_SESSION_BUSY);
    ck_assert_int_eq(pbx_errtable_of_code(PBX_E_GONE, false)->id, PBX_ERRTABLE_SESSION_DEAD);
    ck_assert_int_eq(pbx_errtable_of_status(409)->id, PBX_ERRTABLE_SESSION_BUSY);
    ck_assert_int_eq(pbx_errtable_of_status(410)->id, PBX_ERRTABLE_SESSION_DEAD);
    ck_assert_int_eq(pbx_errtable_of_status(429)->id, PBX_ERRTABLE_RATE_LIMIT_EXCEEDED);
    {
        static const int others[] = {0,
                                     ENOENT,
                                     EINVAL,
                                     PBX_E_ENGINE,
                                     PBX_E_NOMEM,
                                     PBX_E_UNSUPPORTED,
                                     PBX_E_POLICY,
                                     5000,
                                     INT_MAX,
                                     INT_MIN,
                                     -1};

        for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++) {
            ck_assert_int_eq(pbx_errtable_of_code(others[i], false)->id,
                             PBX_ERRTABLE_INTERNAL_SERVER_ERROR);
            ck_assert_int_eq(pbx_errtable_of_code(others[i], true)->id,
                             PBX_ERRTABLE_INTERNAL_SERVER_ERROR);
        }
    }

    /* By libpybox code, for failures without a type. */
    ck_assert_ptr_null(pbx_errtable_of_pybox_code(PYBOX_OK, false));
    ck_assert_ptr_null(pbx_errtable_of_pybox_code(PYBOX_CODE_MAX + 1, false));
    ck_assert_ptr_null(pbx_errtable_of_pybox_code(-1, true));
    ck_assert_int_eq(pbx_errtable_of_pybox_code(PYBOX_E_CONNECT, false)->exit,
                     PBX_EXIT_UNAVAILABLE);
    ck_assert_int_eq(pbx_errtable_of_pybox_code(PYBOX_E_TOO_LARGE, true)->id,
                     PBX_ERRTABLE_PAYLOAD_TOO_LARGE);
    ck_assert_int_eq(pbx_errtable_of_pybox_code(PYBOX_E_ENGINE, true)->id,
                     PBX_ERRTABLE_INTERNAL_SERVER_ERROR);
    ck_assert_ptr_null(pbx_errtable_of_pybox_code(PYBOX_E_ENGINE, false));
    ck_assert_ptr_null(pbx_errtable_of_pybox_code(PYBOX_E_UNAUTHORIZED, true));
}
END_TEST

static Suite *error_suite(void)
{
    Suite *s = suite_create("error");
    TCase *set = tcase_create("set");
    TCase *table = tcase_create("table");
    TCase *errtable = tcase_create("errtable");

    tcase_add_test(set, test_set_errno);
    tcase_add_test(set, test_set_pbx_code);
    tcase_add_test(set, test_set_negative_code);
    tcase_add_test(set, test_set_zero_code);
    tcase_add_test(set, test_set_null_err);
    tcase_add_test(set, test_set_unknown_errno);
    tcase_add_test(set, test_set_long_message);
    tcase_add_test_raise_signal(set, test_set_twice_aborts, SIGABRT);
    tcase_add_test(set, test_prefix);
    tcase_add_test_raise_signal(set, test_prefix_without_error_aborts, SIGABRT);
    tcase_add_test(set, test_free);
    suite_add_tcase(s, set);

    tcase_add_test(table, test_code_table);
    tcase_add_test(table, test_errno_values);
    tcase_add_test(table, test_unknown_codes);
    suite_add_tcase(s, table);

    tcase_add_test(errtable, test_table_rows);
    tcase_add_test(errtable, test_table_consistent);
    tcase_add_test(errtable, test_table_lookups);
    suite_add_tcase(s, errtable);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(error_suite());
    int failed;

    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
