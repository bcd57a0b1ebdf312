/*
 * Unit tests for src/policy/policy.c: the default import allowlist, matched
 * on the top-level name of a dotted module name.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy/policy.h"
#include "common/banned.h"

START_TEST(test_allowed)
{
    ck_assert(pbx_policy_module_allowed("numpy"));
    ck_assert(pbx_policy_module_allowed("numpy.linalg"));
    ck_assert(pbx_policy_module_allowed("numpy.random.mtrand"));
    ck_assert(pbx_policy_module_allowed("math"));
    ck_assert(pbx_policy_module_allowed("json"));
    ck_assert(pbx_policy_module_allowed("PIL"));
    ck_assert(pbx_policy_module_allowed("PIL.Image"));
    ck_assert(pbx_policy_module_allowed("collections.abc"));
    /* The documented stdin example: `import sys; sys.stdin.read()`. */
    ck_assert(pbx_policy_module_allowed("sys"));
    ck_assert(pbx_policy_module_allowed("io"));
}
END_TEST

START_TEST(test_refused)
{
    static const char *const refused[] = {
        "os",
        "os.path",
        "subprocess",
        "socket",
        "ctypes",
        "importlib",
        "builtins",
        "posix",
        "shutil",
        "pathlib",
        "signal",
        "threading",
        "multiprocessing",
        "numpyx",
        "numpy_",
        "nump",
        "mat",
        "maths",
        "jsonx",
        "pil",
        "Numpy",
        "NUMPY",
        "MATH",
        "sys2",
        "_io",
        " numpy",
        "numpy ",
        "numpy\tx",
        "",
        ".",
        ".numpy",
        "..numpy",
        "os.numpy",
        "xnumpy.numpy",
        "\xc3\xa9tat",
    };

    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++)
        ck_assert_msg(!pbx_policy_module_allowed(refused[i]), "`%s` is allowed", refused[i]);
}
END_TEST

START_TEST(test_list_and_text_agree)
{
    const char *text = pbx_policy_default_modules_text();
    char *joined = calloc(1, strlen(text) + 1);
    size_t n = 0;

    ck_assert_ptr_nonnull(joined);
    for (size_t i = 0; pbx_policy_default_modules[i] != NULL; i++) {
        const char *m = pbx_policy_default_modules[i];
        size_t len = strlen(m);

        /* Every listed module is allowed, alone and with a submodule. */
        ck_assert_msg(pbx_policy_module_allowed(m), "`%s` is listed but not allowed", m);
        ck_assert_uint_gt(len, 0);
        ck_assert_ptr_null(strchr(m, '.'));
        ck_assert_ptr_null(strchr(m, ' '));
        {
            char sub[128];

            snprintf(sub, sizeof(sub), "%s.sub", m);
            ck_assert(pbx_policy_module_allowed(sub));
        }
        ck_assert_uint_le(n + len + 1, strlen(text) + 1);
        if (n > 0)
            joined[n++] = ' ';
        memcpy(joined + n, m, len);
        n += len;
        /* No duplicates. */
        for (size_t j = 0; j < i; j++)
            ck_assert_str_ne(pbx_policy_default_modules[j], m);
    }
    joined[n] = '\0';
    /* The CLI, the server and the docs print the text; it must be the same list. */
    ck_assert_str_eq(joined, text);
    free(joined);
}
END_TEST

static Suite *policy_suite(void)
{
    Suite *s = suite_create("policy");
    TCase *tc = tcase_create("allowlist");

    tcase_add_test(tc, test_allowed);
    tcase_add_test(tc, test_refused);
    tcase_add_test(tc, test_list_and_text_agree);
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
