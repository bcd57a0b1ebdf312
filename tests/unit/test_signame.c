/* Unit tests for src/common/signame.c: signal names and numbers, both ways. */
#include <check.h>
#include <signal.h>
#include <stddef.h>

#include "common/signame.h"
#include "common/banned.h"

START_TEST(test_names)
{
    ck_assert_str_eq(pbx_signal_name(SIGKILL), "SIGKILL");
    ck_assert_str_eq(pbx_signal_name(SIGSEGV), "SIGSEGV");
    ck_assert_str_eq(pbx_signal_name(SIGXCPU), "SIGXCPU");
    ck_assert_str_eq(pbx_signal_name(SIGSYS), "SIGSYS");
    ck_assert_str_eq(pbx_signal_name(0), "SIGUNKNOWN");
    ck_assert_str_eq(pbx_signal_name(-9), "SIGUNKNOWN");
    ck_assert_str_eq(pbx_signal_name(99), "SIGUNKNOWN");
}
END_TEST

START_TEST(test_round_trip)
{
    for (int s = 1; s < 32; s++)
        ck_assert_int_eq(pbx_signal_number(pbx_signal_name(s)), s);
    ck_assert_int_eq(pbx_signal_number("SIGUNKNOWN"), 0);
    ck_assert_int_eq(pbx_signal_number("SIGFOO"), 0);
    ck_assert_int_eq(pbx_signal_number("KILL"), 0);
    ck_assert_int_eq(pbx_signal_number(""), 0);
    ck_assert_int_eq(pbx_signal_number(NULL), 0);
}
END_TEST

static Suite *signame_suite(void)
{
    Suite *s = suite_create("signame");
    TCase *tc = tcase_create("signame");

    tcase_add_test(tc, test_names);
    tcase_add_test(tc, test_round_trip);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(signame_suite());
    int failed;

    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
