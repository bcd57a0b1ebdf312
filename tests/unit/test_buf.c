/*
 * Unit tests for src/common/buf.c: capped buffers for untrusted bytes.  The
 * cap is never exceeded, pbx_buf_append() is all or nothing, the truncating
 * append keeps the prefix that fits, and the data stays NUL-terminated.
 */
#include <check.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/error.h"
#include "common/banned.h"

static void assert_terminated(const struct pbx_buf *b)
{
    ck_assert_ptr_nonnull(b->data);
    ck_assert_uint_le(b->len, b->max);
    ck_assert_uint_lt(b->len, b->alloc);
    ck_assert_int_eq(b->data[b->len], '\0');
}

START_TEST(test_init)
{
    struct pbx_buf b;

    memset(&b, 0xa5, sizeof(b));
    pbx_buf_init(&b, 100);
    ck_assert_ptr_null(b.data);
    ck_assert_uint_eq(b.len, 0);
    ck_assert_uint_eq(b.alloc, 0);
    ck_assert_uint_eq(b.max, 100);
    ck_assert(!b.truncated);
    /* Releasing an unused buffer is fine, twice too. */
    pbx_buf_release(&b);
    pbx_buf_release(&b);
    ck_assert_uint_eq(b.max, 100);
}
END_TEST

START_TEST(test_append)
{
    struct pbx_buf b;

    pbx_buf_init(&b, 10);
    ck_assert_int_eq(pbx_buf_append(&b, "hello", 5), 0);
    assert_terminated(&b);
    ck_assert_str_eq(b.data, "hello");
    ck_assert_int_eq(pbx_buf_append(&b, "", 0), 0);
    ck_assert_int_eq(pbx_buf_append(&b, "world", 5), 0);
    ck_assert_uint_eq(b.len, 10);
    ck_assert_str_eq(b.data, "helloworld");
    assert_terminated(&b);
    ck_assert(!b.truncated);
    pbx_buf_release(&b);
    ck_assert_ptr_null(b.data);
    ck_assert_uint_eq(b.len, 0);
    ck_assert_uint_eq(b.max, 10);
}
END_TEST

START_TEST(test_append_all_or_nothing)
{
    struct pbx_buf b;

    pbx_buf_init(&b, 8);
    ck_assert_int_eq(pbx_buf_append(&b, "abcdef", 6), 0);
    /* Three more would pass the cap: nothing is appended. */
    ck_assert_int_eq(pbx_buf_append(&b, "xyz", 3), -PBX_E_TOO_LARGE);
    ck_assert_uint_eq(b.len, 6);
    ck_assert_str_eq(b.data, "abcdef");
    ck_assert(!b.truncated);
    /* Exactly to the cap is fine; one byte more is not. */
    ck_assert_int_eq(pbx_buf_append(&b, "gh", 2), 0);
    ck_assert_str_eq(b.data, "abcdefgh");
    ck_assert_int_eq(pbx_buf_append(&b, "i", 1), -PBX_E_TOO_LARGE);
    ck_assert_int_eq(pbx_buf_append(&b, "", 0), 0);
    ck_assert_uint_eq(b.len, 8);
    assert_terminated(&b);
    pbx_buf_release(&b);
}
END_TEST

/* Lengths that would overflow `len + n` are refused before anything is read. */
START_TEST(test_append_huge_length)
{
    struct pbx_buf b;

    pbx_buf_init(&b, 16);
    ck_assert_int_eq(pbx_buf_append(&b, "x", SIZE_MAX), -PBX_E_TOO_LARGE);
    ck_assert_int_eq(pbx_buf_append(&b, "ab", 2), 0);
    ck_assert_int_eq(pbx_buf_append(&b, "x", SIZE_MAX - 1), -PBX_E_TOO_LARGE);
    ck_assert_int_eq(pbx_buf_append(&b, "x", 15), -PBX_E_TOO_LARGE);
    ck_assert_uint_eq(b.len, 2);
    ck_assert_str_eq(b.data, "ab");
    /* The truncating append reads only what fits. */
    ck_assert_uint_eq(pbx_buf_append_trunc(&b, "0123456789abcdefXYZ", SIZE_MAX), 14);
    ck_assert(b.truncated);
    ck_assert_str_eq(b.data, "ab0123456789abcd");
    pbx_buf_release(&b);
}
END_TEST

START_TEST(test_append_trunc)
{
    struct pbx_buf b;

    pbx_buf_init(&b, 10);
    ck_assert_uint_eq(pbx_buf_append_trunc(&b, "abc", 3), 3);
    ck_assert(!b.truncated);
    ck_assert_uint_eq(pbx_buf_append_trunc(&b, "defghij", 7), 7);
    ck_assert(!b.truncated);
    ck_assert_uint_eq(pbx_buf_append_trunc(&b, "k", 1), 0);
    ck_assert(b.truncated);
    ck_assert_uint_eq(b.len, 10);
    ck_assert_str_eq(b.data, "abcdefghij");
    pbx_buf_release(&b);
    ck_assert(!b.truncated);

    pbx_buf_init(&b, 10);
    ck_assert_uint_eq(pbx_buf_append_trunc(&b, "0123456", 7), 7);
    ck_assert_uint_eq(pbx_buf_append_trunc(&b, "789abc", 6), 3);
    ck_assert(b.truncated);
    ck_assert_str_eq(b.data, "0123456789");
    assert_terminated(&b);
    /* Once full, every append keeps nothing and the flag stays up. */
    ck_assert_uint_eq(pbx_buf_append_trunc(&b, "zz", 2), 0);
    ck_assert_uint_eq(pbx_buf_append_trunc(&b, "", 0), 0);
    ck_assert(b.truncated);
    ck_assert_int_eq(pbx_buf_append(&b, "z", 1), -PBX_E_TOO_LARGE);
    ck_assert_uint_eq(b.len, 10);
    pbx_buf_release(&b);
}
END_TEST

START_TEST(test_zero_cap)
{
    struct pbx_buf b;
    char *s;
    size_t len = 99;

    pbx_buf_init(&b, 0);
    ck_assert_int_eq(pbx_buf_append(&b, "a", 1), -PBX_E_TOO_LARGE);
    ck_assert_uint_eq(pbx_buf_append_trunc(&b, "abc", 3), 0);
    ck_assert(b.truncated);
    ck_assert_uint_eq(b.len, 0);
    s = pbx_buf_steal(&b, &len);
    ck_assert_ptr_nonnull(s);
    ck_assert_uint_eq(len, 0);
    ck_assert_str_eq(s, "");
    free(s);
    pbx_buf_release(&b);
}
END_TEST

/* Many small appends across several reallocations keep every byte in order. */
START_TEST(test_growth)
{
    struct pbx_buf b;
    const size_t total = 1 << 20;
    size_t n = 0;
    char chunk[7];

    pbx_buf_init(&b, total);
    while (n < total) {
        size_t want = total - n < sizeof(chunk) ? total - n : sizeof(chunk);

        for (size_t i = 0; i < want; i++)
            chunk[i] = (char)('a' + (n + i) % 26);
        ck_assert_int_eq(pbx_buf_append(&b, chunk, want), 0);
        n += want;
        if (b.len != n || b.data[b.len] != '\0')
            ck_abort_msg("after %zu bytes: len %zu", n, b.len);
    }
    for (size_t i = 0; i < total; i++) {
        if (b.data[i] != 'a' + (int)(i % 26))
            ck_abort_msg("byte %zu is %#x", i, (unsigned)(unsigned char)b.data[i]);
    }
    ck_assert_uint_ge(b.alloc, total + 1);
    ck_assert_int_eq(pbx_buf_append(&b, "x", 1), -PBX_E_TOO_LARGE);
    pbx_buf_release(&b);
}
END_TEST

/* Binary data with NUL bytes is kept whole; len, not strlen, counts. */
START_TEST(test_binary)
{
    struct pbx_buf b;
    static const char bin[] = {'a', '\0', 'b', '\0', '\xff'};

    pbx_buf_init(&b, 64);
    ck_assert_int_eq(pbx_buf_append(&b, bin, sizeof(bin)), 0);
    ck_assert_uint_eq(b.len, sizeof(bin));
    ck_assert_mem_eq(b.data, bin, sizeof(bin));
    assert_terminated(&b);
    pbx_buf_release(&b);
}
END_TEST

START_TEST(test_steal)
{
    struct pbx_buf b;
    char *s;
    size_t len = 0;

    /* A buffer that never held anything yields an empty heap string. */
    pbx_buf_init(&b, 32);
    s = pbx_buf_steal(&b, &len);
    ck_assert_ptr_nonnull(s);
    ck_assert_str_eq(s, "");
    ck_assert_uint_eq(len, 0);
    free(s);

    ck_assert_int_eq(pbx_buf_append(&b, "data", 4), 0);
    s = pbx_buf_steal(&b, &len);
    ck_assert_str_eq(s, "data");
    ck_assert_uint_eq(len, 4);
    /* Empty afterwards, and usable again with the same cap. */
    ck_assert_ptr_null(b.data);
    ck_assert_uint_eq(b.len, 0);
    ck_assert_uint_eq(b.alloc, 0);
    ck_assert_uint_eq(b.max, 32);
    free(s);
    s = pbx_buf_steal(&b, NULL);
    ck_assert_str_eq(s, "");
    free(s);
    ck_assert_int_eq(pbx_buf_append(&b, "again", 5), 0);
    ck_assert_str_eq(b.data, "again");
    pbx_buf_release(&b);
}
END_TEST

static Suite *buf_suite(void)
{
    Suite *s = suite_create("buf");
    TCase *tc = tcase_create("buf");

    tcase_add_test(tc, test_init);
    tcase_add_test(tc, test_append);
    tcase_add_test(tc, test_append_all_or_nothing);
    tcase_add_test(tc, test_append_huge_length);
    tcase_add_test(tc, test_append_trunc);
    tcase_add_test(tc, test_zero_cap);
    tcase_add_test(tc, test_growth);
    tcase_add_test(tc, test_binary);
    tcase_add_test(tc, test_steal);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(buf_suite());
    int failed;

    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
