/*
 * Unit tests for src/common/error.c: the error contract (pbx_error_set,
 * pbx_error_prefix, pbx_error_free) and the public code table
 * (pbx_strerror, pbx_err_name) for errno values, PBX_E_* codes and codes that
 * are neither.
 */
#include <check.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "common/error.h"
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
    /* The numbers are stable: they are part of the public API. */
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
    static const int codes[] = {0, -1, -EINVAL, -PBX_E_INVAL, 1009, 4096, INT_MAX, INT_MIN};

    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
        ck_assert_str_eq(pbx_err_name(codes[i]), "PBX_E_UNKNOWN");
        ck_assert_str_eq(pbx_strerror(codes[i]), "unknown error");
    }
}
END_TEST

static Suite *error_suite(void)
{
    Suite *s = suite_create("error");
    TCase *set = tcase_create("set");
    TCase *table = tcase_create("table");

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
