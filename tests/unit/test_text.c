/*
 * Unit tests for src/common/utf8.c and src/common/jsonlimit.c, the two checks
 * of untrusted text before it goes into JSON: UTF-8 well-formedness and its
 * repair, and the bound on values and depth found before a parser runs.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "common/jsonlimit.h"
#include "common/utf8.h"
#include "common/banned.h"

#define S(lit) lit, sizeof(lit) - 1

START_TEST(test_utf8_valid)
{
    ck_assert(pbx_utf8_valid(S("")));
    ck_assert(pbx_utf8_valid(S("plain ascii")));
    ck_assert(pbx_utf8_valid(S("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x90\x8d")));
    ck_assert(pbx_utf8_valid(S("\xef\xbf\xbd")));
    ck_assert(pbx_utf8_valid(S("\xf4\x8f\xbf\xbf"))); /* U+10FFFF */
    ck_assert(pbx_utf8_valid(S("a\0b")));             /* NUL is a character */
    ck_assert(!pbx_utf8_valid(S("\xff")));
    ck_assert(!pbx_utf8_valid(S("\xc3")));             /* cut short */
    ck_assert(!pbx_utf8_valid(S("\xc0\xaf")));         /* overlong '/' */
    ck_assert(!pbx_utf8_valid(S("\xe0\x80\xaf")));     /* overlong, three bytes */
    ck_assert(!pbx_utf8_valid(S("\xed\xa0\x80")));     /* a surrogate */
    ck_assert(!pbx_utf8_valid(S("\xf4\x90\x80\x80"))); /* beyond U+10FFFF */
    ck_assert(!pbx_utf8_valid(S("\xe2\x82")));
    ck_assert(!pbx_utf8_valid(S("ok\x80")));
}
END_TEST

START_TEST(test_utf8_sanitize)
{
    size_t n = 0;
    char *s = pbx_utf8_sanitize(S("a\xff"
                                  "b\xc3\xa9\xed\xa0\x80"),
                                &n);

    ck_assert_str_eq(s, "a\xef\xbf\xbd"
                        "b\xc3\xa9\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
    ck_assert_uint_eq(n, strlen(s));
    ck_assert(pbx_utf8_valid(s, n));
    free(s);
    /* NUL bytes stay, and the length says where the text ends. */
    s = pbx_utf8_sanitize(S("x\0y"), &n);
    ck_assert_uint_eq(n, 3);
    ck_assert_mem_eq(s, "x\0y", 3);
    free(s);
    s = pbx_utf8_sanitize("", 0, NULL);
    ck_assert_str_eq(s, "");
    free(s);
}
END_TEST

START_TEST(test_json_within_counts)
{
    struct pbx_json_shape sh;

    ck_assert(pbx_json_within(S("{}"), 10, 8, &sh));
    ck_assert_uint_eq(sh.values, 2);
    ck_assert_uint_eq(sh.depth, 1);
    ck_assert(pbx_json_within(S("{\"a\": [1, 2, {\"b\": null}]}"), 100, 8, &sh));
    ck_assert_uint_ge(sh.values, 6); /* an upper bound: a, [, 1, 2, {, b, null */
    ck_assert_uint_eq(sh.depth, 3);
    /* Separators and brackets inside strings, escaped quotes too, are not values. */
    ck_assert(pbx_json_within(S("[\"[,:{\\\"]}\"]"), 100, 8, &sh));
    ck_assert_uint_eq(sh.values, 2);
    ck_assert_uint_eq(sh.depth, 1);
}
END_TEST

START_TEST(test_json_within_refuses)
{
    struct pbx_json_shape sh;
    size_t n = 3 * 100000 + 2;
    char *bomb = malloc(n);

    bomb[0] = '[';
    for (size_t i = 0; i < 100000; i++)
        memcpy(bomb + 1 + 3 * i, "[],", 3);
    bomb[n - 2] = '0';
    bomb[n - 1] = ']';
    ck_assert(!pbx_json_within(bomb, n, 1000, 8, &sh));
    ck_assert_uint_gt(sh.values, 1000);
    ck_assert(pbx_json_within(bomb, n, 300000, 8, &sh));
    memset(bomb, '[', n);
    ck_assert(!pbx_json_within(bomb, n, 1u << 30, 64, &sh));
    ck_assert_uint_gt(sh.depth, 64);
    free(bomb);
    /* Unterminated strings and stray closers end the scan without reading past the end. */
    ck_assert(pbx_json_within(S("\"abc\\"), 10, 8, &sh));
    ck_assert(pbx_json_within(S("]]]}"), 10, 8, &sh));
    ck_assert_uint_eq(sh.depth, 0);
}
END_TEST

static Suite *text_suite(void)
{
    Suite *s = suite_create("text");
    TCase *tc = tcase_create("text");

    tcase_add_test(tc, test_utf8_valid);
    tcase_add_test(tc, test_utf8_sanitize);
    tcase_add_test(tc, test_json_within_counts);
    tcase_add_test(tc, test_json_within_refuses);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(text_suite());
    int failed;

    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
