/*
 * Unit tests for src/policy/policy.c: the shape of the default import
 * allowlist.  The check that uses it runs in the sandboxed interpreter
 * (src/engine/bootstrap.py) and is tested through the binary, with the list
 * the README documents, by tests/security/test_policy.py.
 */
#include <check.h>
#include <stdbool.h>
#include <string.h>

#include "policy/policy.h"
#include "common/banned.h"

/* A Python identifier of ASCII letters, digits and '_' (what a top-level module is named). */
static bool is_identifier(const char *s)
{
    if (s[0] == '\0' || (s[0] >= '0' && s[0] <= '9'))
        return false;
    return strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") ==
           strlen(s);
}

START_TEST(test_list_shape)
{
    size_t n = 0;

    /*
     * bootstrap.py compares the top-level part of an import with each entry: an entry with a
     * dot, a space or nothing in it would never match anything.
     */
    for (size_t i = 0; pbx_policy_default_modules[i] != NULL; i++) {
        const char *m = pbx_policy_default_modules[i];

        ck_assert_msg(is_identifier(m), "`%s` is not a top-level module name", m);
        for (size_t j = 0; j < i; j++)
            ck_assert_msg(strcmp(pbx_policy_default_modules[j], m) != 0, "`%s` twice", m);
        n++;
    }
    ck_assert_uint_gt(n, 0);
}
END_TEST

static Suite *policy_suite(void)
{
    Suite *s = suite_create("policy");
    TCase *tc = tcase_create("allowlist");

    tcase_add_test(tc, test_list_shape);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(policy_suite());
    int failed;

    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
