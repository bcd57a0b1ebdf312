/*
 * Unit tests for src/common/clock.c: readings agree with each other and move
 * forward, and the end of a timed wait carries nanoseconds into seconds.
 */
#include <check.h>
#include <stdint.h>
#include <time.h>

#include "common/clock.h"
#include "common/banned.h"

START_TEST(test_readings)
{
    uint64_t ms = pbx_clock_ms(CLOCK_MONOTONIC);
    uint64_t ns = pbx_clock_ns(CLOCK_MONOTONIC);
    uint64_t later = pbx_clock_ms(CLOCK_MONOTONIC);

    ck_assert_uint_le(ms, ns / 1000000u);
    ck_assert_uint_le(ns / 1000000u, later);
    /* The wall clock reads a date after 2020. */
    ck_assert_uint_gt(pbx_clock_ms(CLOCK_REALTIME), (uint64_t)1577836800 * 1000u);
}
END_TEST

START_TEST(test_after)
{
    struct timespec now;
    struct timespec end;

    for (uint64_t ms = 0; ms < 3000; ms += 7) {
        int64_t diff_ns;

        clock_gettime(CLOCK_MONOTONIC, &now);
        pbx_clock_after(CLOCK_MONOTONIC, ms, &end);
        ck_assert_int_ge(end.tv_nsec, 0);
        ck_assert_int_lt(end.tv_nsec, 1000000000L);
        diff_ns = (int64_t)(end.tv_sec - now.tv_sec) * 1000000000 + (end.tv_nsec - now.tv_nsec);
        /* `ms` from now, give or take the time between the two readings. */
        ck_assert_int_ge(diff_ns, (int64_t)ms * 1000000);
        ck_assert_int_lt(diff_ns, (int64_t)ms * 1000000 + 50000000);
    }
}
END_TEST

static Suite *clock_suite(void)
{
    Suite *s = suite_create("clock");
    TCase *tc = tcase_create("clock");

    tcase_add_test(tc, test_readings);
    tcase_add_test(tc, test_after);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(clock_suite());
    int failed;

    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
