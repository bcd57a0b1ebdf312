/*
 * Unit tests for src/sandbox/uidmap.c: reading id maps, parsing --jail-ids,
 * checking a range against a namespace (the host's, a pod's of 65536 ids,
 * maps of several lines) and picking one when the default does not fit.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sandbox/uidmap.h"
#include "common/banned.h"

/* A namespace from map texts (the same for uids and gids unless gid_text) and one own id. */
static void host_of(struct pbx_uidmap_host *h, const char *uid_text, const char *gid_text,
                    uint32_t own)
{
    struct pbx_error *err = NULL;
    int n;

    memset(h, 0, sizeof(*h));
    n = pbx_uidmap_parse_map(uid_text, h->uid, PBX_UIDMAP_MAX_EXTENTS, &err);
    ck_assert_msg(n >= 0, "%s", err ? err->msg : "");
    h->nuid = (unsigned)n;
    n = pbx_uidmap_parse_map(gid_text ? gid_text : uid_text, h->gid, PBX_UIDMAP_MAX_EXTENTS, &err);
    ck_assert_msg(n >= 0, "%s", err ? err->msg : "");
    h->ngid = (unsigned)n;
    h->own[h->nown++] = 0;
    if (own != 0)
        h->own[h->nown++] = own;
}

/* The message of a refused check, or NULL when it passed (caller frees). */
static char *check_msg(const struct pbx_uidmap_host *h, uint32_t base, uint32_t count)
{
    struct pbx_error *err = NULL;
    char *msg;

    if (pbx_uidmap_check(h, base, count, &err) == 0)
        return NULL;
    ck_assert_int_eq(err->code, PBX_E_INVAL);
    msg = strdup(err->msg);
    pbx_error_free(&err);
    return msg;
}

START_TEST(test_parse_map)
{
    struct pbx_uidmap_extent ext[4];
    struct pbx_error *err = NULL;

    ck_assert_int_eq(pbx_uidmap_parse_map("         0          0 4294967295\n", ext, 4, &err), 1);
    ck_assert_uint_eq(ext[0].first, 0);
    ck_assert_uint_eq(ext[0].count, 4294967295u);
    ck_assert_int_eq(
        pbx_uidmap_parse_map("0 100000 1000\n1000 1000 1\n2000 300000 5\n", ext, 4, &err), 3);
    ck_assert_uint_eq(ext[1].first, 1000);
    ck_assert_uint_eq(ext[1].count, 1);
    ck_assert_uint_eq(ext[2].first, 2000);
    ck_assert_uint_eq(ext[2].count, 5);
    /* No map at all (a namespace whose map was never written) is no line. */
    ck_assert_int_eq(pbx_uidmap_parse_map("", ext, 4, &err), 0);
    ck_assert_int_lt(pbx_uidmap_parse_map("0 0\n", ext, 4, &err), 0);
    ck_assert_ptr_nonnull(strstr(err->msg, "line 1"));
    pbx_error_free(&err);
    ck_assert_int_lt(pbx_uidmap_parse_map("0 0 1\nx 1 1\n", ext, 4, &err), 0);
    ck_assert_ptr_nonnull(strstr(err->msg, "line 2"));
    pbx_error_free(&err);
    ck_assert_int_lt(pbx_uidmap_parse_map("0 0 -1\n", ext, 4, &err), 0);
    pbx_error_free(&err);
    ck_assert_int_lt(pbx_uidmap_parse_map("0 0 1 7\n", ext, 4, &err), 0);
    pbx_error_free(&err);
    ck_assert_int_lt(pbx_uidmap_parse_map("0 0 1\n1 1 1\n2 2 1\n", ext, 2, &err), 0);
    ck_assert_ptr_nonnull(strstr(err->msg, "more than 2"));
    pbx_error_free(&err);
}
END_TEST

START_TEST(test_parse_spec)
{
    struct pbx_error *err = NULL;
    uint32_t base = 0;
    uint32_t count = 0;
    bool is_auto = true;

    ck_assert_int_eq(pbx_uidmap_parse_spec("32768:32768", &is_auto, &base, &count, &err), 0);
    ck_assert(!is_auto);
    ck_assert_uint_eq(base, 32768);
    ck_assert_uint_eq(count, 32768);
    ck_assert_int_eq(pbx_uidmap_parse_spec("2000000000", &is_auto, &base, &count, &err), 0);
    ck_assert_uint_eq(base, 2000000000u);
    ck_assert_uint_eq(count, PBX_UIDMAP_DEFAULT_COUNT);
    ck_assert_int_eq(pbx_uidmap_parse_spec("100:1001", &is_auto, &base, &count, &err), 0);
    ck_assert_uint_eq(count, PBX_UIDMAP_MIN_COUNT);
    ck_assert_int_eq(pbx_uidmap_parse_spec("auto", &is_auto, &base, &count, &err), 0);
    ck_assert(is_auto);
    ck_assert_uint_eq(base, PBX_UIDMAP_DEFAULT_BASE);
    ck_assert_uint_eq(count, PBX_UIDMAP_DEFAULT_COUNT);

    static const char *const bad[] = {"",     "x",       "-5",    "5:",         ":5",
                                      "5:x",  "5:-1001", "1000 ", "1:2:3",      "99999999999",
                                      "AUTO", "5:1000",  "5:0",   "4294967295", "4294966294:1002"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        base = 7;
        ck_assert_msg(pbx_uidmap_parse_spec(bad[i], &is_auto, &base, &count, &err) < 0,
                      "`%s` accepted", bad[i]);
        ck_assert_int_eq(err->code, PBX_E_INVAL);
        ck_assert_uint_eq(base, 7); /* nothing set */
        pbx_error_free(&err);
    }
    ck_assert_int_lt(pbx_uidmap_parse_spec("5:1000", &is_auto, &base, &count, &err), 0);
    ck_assert_str_eq(err->msg,
                     "`5:1000`: a jail needs at least 1001 ids (its 0 to 1000), not 1000");
    pbx_error_free(&err);
    /* The last id of a range may be 4294967294, never (uid_t)-1. */
    ck_assert_int_eq(pbx_uidmap_parse_spec("4294966294:1001", &is_auto, &base, &count, &err), 0);
}
END_TEST

START_TEST(test_check_host)
{
    struct pbx_uidmap_host h;
    char *msg;

    host_of(&h, "0 0 4294967295\n", NULL, 0);
    ck_assert_ptr_null(check_msg(&h, PBX_UIDMAP_DEFAULT_BASE, PBX_UIDMAP_DEFAULT_COUNT));
    ck_assert_ptr_null(check_msg(&h, 1, 65536));
    msg = check_msg(&h, 0, 65536);
    ck_assert_str_eq(msg, "jail ids 0-65535 include 0 (root): a jail's processes must not share "
                          "an id with pybox");
    free(msg);
    /* Too few ids, whatever the namespace. */
    msg = check_msg(&h, 5000, 1000);
    ck_assert_ptr_nonnull(strstr(msg, "at least 1001"));
    free(msg);
}
END_TEST

START_TEST(test_check_pod)
{
    struct pbx_uidmap_host h;
    char *msg;

    host_of(&h, "0 200000 65536\n", NULL, 0);
    msg = check_msg(&h, PBX_UIDMAP_DEFAULT_BASE, PBX_UIDMAP_DEFAULT_COUNT);
    ck_assert_str_eq(msg, "jail ids 1000000000-1000065535 are not all in one range of this user "
                          "namespace's ids (uids 0-65535; gids 0-65535)");
    free(msg);
    ck_assert_ptr_null(check_msg(&h, 32768, 32768));
    ck_assert_ptr_null(check_msg(&h, 64535, 1001));
    /* One id past the end. */
    msg = check_msg(&h, 64536, 1001);
    ck_assert_ptr_nonnull(strstr(msg, "64536-65536 are not all in one range"));
    free(msg);
}
END_TEST

START_TEST(test_check_own_ids)
{
    struct pbx_uidmap_host h;
    char *msg;

    /* A server running as uid 40000 of a pod: no jail id may be it. */
    host_of(&h, "0 200000 65536\n", NULL, 40000);
    msg = check_msg(&h, 32768, 32768);
    ck_assert_str_eq(msg, "jail ids 32768-65535 include 40000 (pybox's own uid or gid): a jail's "
                          "processes must not share an id with pybox");
    free(msg);
    ck_assert_ptr_null(check_msg(&h, 40001, 25535));
}
END_TEST

START_TEST(test_check_lines)
{
    struct pbx_uidmap_host h;
    char *msg;

    /* Two adjacent lines are still two: the kernel wants a jail's range inside one. */
    host_of(&h, "0 100000 40000\n40000 500000 25536\n", NULL, 0);
    msg = check_msg(&h, 30000, 20000);
    ck_assert_ptr_nonnull(strstr(msg, "(uids 0-39999, 40000-65535; gids 0-39999, 40000-65535)"));
    free(msg);
    ck_assert_ptr_null(check_msg(&h, 40000, 20000));
    /* The uids have it, the gids do not. */
    host_of(&h, "0 100000 65536\n", "0 100000 10000\n", 0);
    msg = check_msg(&h, 20000, 2000);
    ck_assert_ptr_nonnull(strstr(msg, "gids 0-9999"));
    free(msg);
    ck_assert_ptr_null(check_msg(&h, 5000, 2000));
    /* A namespace without maps has nothing to give. */
    host_of(&h, "", NULL, 0);
    msg = check_msg(&h, 5000, 2000);
    ck_assert_ptr_nonnull(strstr(msg, "(uids none; gids none)"));
    free(msg);
}
END_TEST

START_TEST(test_pick)
{
    struct pbx_uidmap_host h;
    struct pbx_error *err = NULL;
    uint32_t base = 0;
    uint32_t count = 0;

    /* A pod's 0-65535: the top half. */
    host_of(&h, "0 200000 65536\n", NULL, 0);
    ck_assert_int_eq(pbx_uidmap_pick(&h, &base, &count, &err), 0);
    ck_assert_uint_eq(base, 32768);
    ck_assert_uint_eq(count, 32768);
    ck_assert_ptr_null(check_msg(&h, base, count));
    /* Running as uid 60000 there: the run 1-59999 is the largest; its top half. */
    host_of(&h, "0 200000 65536\n", NULL, 60000);
    ck_assert_int_eq(pbx_uidmap_pick(&h, &base, &count, &err), 0);
    ck_assert_uint_eq(base, 30000);
    ck_assert_uint_eq(count, 30000);
    ck_assert_ptr_null(check_msg(&h, base, count));
    /* The host: at most 65536 ids, at the top of the id space. */
    host_of(&h, "0 0 4294967295\n", NULL, 0);
    ck_assert_int_eq(pbx_uidmap_pick(&h, &base, &count, &err), 0);
    ck_assert_uint_eq(count, PBX_UIDMAP_AUTO_MAX);
    ck_assert_uint_eq(base, 4294967295u - PBX_UIDMAP_AUTO_MAX);
    ck_assert_ptr_null(check_msg(&h, base, count));
    /* Where only the uids and gids overlap, and a small run: at least 1001 ids. */
    host_of(&h, "0 100000 5000\n", "3000 100000 5000\n", 0);
    ck_assert_int_eq(pbx_uidmap_pick(&h, &base, &count, &err), 0);
    ck_assert_uint_eq(base, 3999);
    ck_assert_uint_eq(count, 1001);
    ck_assert_ptr_null(check_msg(&h, base, count));
    /* Too small everywhere: refused, naming the ranges. */
    host_of(&h, "0 100000 1000\n5000 200000 900\n", NULL, 0);
    ck_assert_int_lt(pbx_uidmap_pick(&h, &base, &count, &err), 0);
    ck_assert_int_eq(err->code, PBX_E_UNSUPPORTED);
    ck_assert_ptr_nonnull(strstr(err->msg, "no 1001 ids in a row"));
    ck_assert_ptr_nonnull(strstr(err->msg, "uids 0-999, 5000-5899"));
    pbx_error_free(&err);
}
END_TEST

START_TEST(test_host_read)
{
    struct pbx_uidmap_host *h = calloc(1, sizeof(*h));
    struct pbx_error *err = NULL;
    bool own_uid = false;

    ck_assert_int_eq(pbx_uidmap_host_read(h, &err), 0);
    ck_assert_uint_ge(h->nuid, 1);
    ck_assert_uint_ge(h->ngid, 1);
    ck_assert_uint_eq(h->own[0], 0);
    for (unsigned i = 0; i < h->nown; i++)
        own_uid |= h->own[i] == (uint32_t)geteuid();
    ck_assert(own_uid);
    free(h);
}
END_TEST

static Suite *uidmap_suite(void)
{
    Suite *s = suite_create("uidmap");
    TCase *tc = tcase_create("uidmap");

    tcase_add_test(tc, test_parse_map);
    tcase_add_test(tc, test_parse_spec);
    tcase_add_test(tc, test_check_host);
    tcase_add_test(tc, test_check_pod);
    tcase_add_test(tc, test_check_own_ids);
    tcase_add_test(tc, test_check_lines);
    tcase_add_test(tc, test_pick);
    tcase_add_test(tc, test_host_read);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(uidmap_suite());
    int failed;

    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
