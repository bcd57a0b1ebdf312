/*
 * Unit tests for src/policy/limits.c: the defaults, "NAME=VALUE" parsing for
 * every limit and unit, every kind of bad input, the timeout (wall and CPU
 * from one number of seconds), the bounds check and the --help table.
 */
#include <check.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy/limits.h"
#include "common/banned.h"

#define KIB (UINT64_C(1024))
#define MIB (KIB * 1024)
#define GIB (MIB * 1024)

/* Where a limit lives in struct pbx_limits and how wide it is. */
struct field {
    const char *name; /* NAME of NAME=VALUE */
    size_t offset;    /* into struct pbx_limits */
    int wide;         /* 1: uint64_t, 0: uint32_t */
    uint64_t min;     /* the documented bounds */
    uint64_t max;
};

#define F32(f) offsetof(struct pbx_limits, f), 0
#define F64(f) offsetof(struct pbx_limits, f), 1

static const struct field fields[] = {
    {"wall", F32(wall_ms), 1, 3600 * 1000},
    {"cpu", F32(cpu_ms), 1, 3600 * 1000},
    {"memory", F64(memory_bytes), 16 * MIB, 64 * GIB},
    {"pids", F32(pids), 1, 4096},
    {"disk", F64(disk_bytes), 64 * KIB, 16 * GIB},
    {"inodes", F32(disk_inodes), 16, 1000000},
    {"stdout", F64(stdout_bytes), 0, 1 * GIB},
    {"stderr", F64(stderr_bytes), 0, 1 * GIB},
    {"code", F64(code_bytes), 1, 64 * MIB},
    {"stdin", F64(stdin_bytes), 0, 1 * GIB},
    {"files", F32(input_files), 0, 1000},
    {"file-size", F64(input_file_bytes), 0, 1 * GIB},
    {"return-files", F32(output_files), 0, 256},
    {"return-size", F64(output_file_bytes), 0, 1 * GIB},
    {"answer", F64(answer_bytes), 64 * KIB, 4 * GIB},
    {"nofile", F32(nofile), 16, 65536},
    {"stack", F64(stack_bytes), 256 * KIB, 1 * GIB},
};

#define NFIELDS (sizeof(fields) / sizeof(fields[0]))

static const struct field *field(const char *name)
{
    for (size_t i = 0; i < NFIELDS; i++) {
        if (strcmp(fields[i].name, name) == 0)
            return &fields[i];
    }
    ck_abort_msg("no field `%s`", name);
    return NULL;
}

static uint64_t get(const struct pbx_limits *l, const struct field *f)
{
    const char *p = (const char *)l + f->offset;
    uint64_t v64;
    uint32_t v32;

    if (f->wide) {
        memcpy(&v64, p, sizeof(v64));
        return v64;
    }
    memcpy(&v32, p, sizeof(v32));
    return v32;
}

static void put(struct pbx_limits *l, const struct field *f, uint64_t v)
{
    char *p = (char *)l + f->offset;
    uint32_t v32 = (uint32_t)v;

    if (f->wide)
        memcpy(p, &v, sizeof(v));
    else
        memcpy(p, &v32, sizeof(v32));
}

/* Field by field: the struct has padding, which assignment need not copy. */
static void assert_same(const struct pbx_limits *a, const struct pbx_limits *b, const char *what)
{
    for (size_t i = 0; i < NFIELDS; i++)
        ck_assert_msg(get(a, &fields[i]) == get(b, &fields[i]), "`%s` changed %s", what,
                      fields[i].name);
}

/* Set `assignment` on default limits; expect success and `want` in the named field. */
static void expect_set(const char *assignment, uint64_t want)
{
    struct pbx_limits l;
    struct pbx_limits before;
    struct pbx_error *err = NULL;
    char name[32];
    size_t nlen = strcspn(assignment, "=");
    const struct field *f;

    ck_assert_uint_lt(nlen, sizeof(name));
    memcpy(name, assignment, nlen);
    name[nlen] = '\0';
    f = field(name);
    pbx_limits_default(&l);
    before = l;
    ck_assert_msg(pbx_limits_set(&l, assignment, &err) == 0, "`%s` refused: %s", assignment,
                  err ? err->msg : "(no error)");
    ck_assert_ptr_null(err);
    ck_assert_msg(get(&l, f) == want, "`%s` gave %llu, want %llu", assignment,
                  (unsigned long long)get(&l, f), (unsigned long long)want);
    /* Nothing else moved. */
    put(&before, f, want);
    assert_same(&l, &before, assignment);
}

/* Expect `assignment` to be refused with PBX_E_INVAL and the limits untouched. */
static void expect_bad(const char *assignment, const char *msg_part)
{
    struct pbx_limits l;
    struct pbx_limits before;
    struct pbx_error *err = NULL;
    int r;

    pbx_limits_default(&l);
    before = l;
    r = pbx_limits_set(&l, assignment, &err);
    ck_assert_msg(r < 0, "`%s` accepted", assignment);
    ck_assert_int_eq(r, -PBX_E_INVAL);
    ck_assert_ptr_nonnull(err);
    ck_assert_int_eq(err->code, PBX_E_INVAL);
    ck_assert_ptr_nonnull(err->msg);
    if (msg_part != NULL)
        ck_assert_msg(strstr(err->msg, msg_part) != NULL, "`%s`: message `%s` lacks `%s`",
                      assignment, err->msg, msg_part);
    assert_same(&l, &before, assignment);
    pbx_error_free(&err);
}

START_TEST(test_defaults)
{
    struct pbx_limits l;
    struct pbx_error *err = NULL;

    memset(&l, 0xa5, sizeof(l));
    pbx_limits_default(&l);
    /* README.md's "Limits" table, the anonymous policy. */
    ck_assert_uint_eq(l.wall_ms, 10000);
    ck_assert_uint_eq(l.cpu_ms, 10000);
    ck_assert_uint_eq(l.memory_bytes, 256 * MIB);
    ck_assert_uint_eq(l.pids, 10);
    ck_assert_uint_eq(l.disk_bytes, 64 * MIB);
    ck_assert_uint_eq(l.stdout_bytes, 1 * MIB);
    ck_assert_uint_eq(l.stderr_bytes, 1 * MIB);
    ck_assert_uint_eq(l.input_files, 2);
    ck_assert_uint_eq(l.input_file_bytes, 8 * MIB);
    ck_assert_uint_eq(l.output_file_bytes, 8 * MIB);
    /* The rest is not in the table: sane, non-zero values. */
    ck_assert_uint_gt(l.code_bytes, 0);
    ck_assert_uint_gt(l.stdin_bytes, 0);
    ck_assert_uint_gt(l.output_files, 0);
    ck_assert_uint_gt(l.disk_inodes, 0);
    ck_assert_uint_gt(l.nofile, 0);
    ck_assert_uint_gt(l.stack_bytes, 0);
    /* The defaults pass the bounds check. */
    ck_assert_int_eq(pbx_limits_check(&l, &err), 0);
    ck_assert_ptr_null(err);
}
END_TEST

START_TEST(test_set_times)
{
    expect_set("wall=2.5", 2500);
    expect_set("wall=2.5s", 2500);
    expect_set("wall=300ms", 300);
    expect_set("wall=1", 1000);
    expect_set("wall=.5", 500);
    expect_set("wall=1ms", 1);
    expect_set("wall=3600", 3600 * 1000);
    expect_set("wall=3600000ms", 3600 * 1000);
    expect_set("wall=0.001", 1);
    expect_set("cpu=2.5s", 2500);
    expect_set("cpu=300ms", 300);
    expect_set("cpu=60", 60000);
}
END_TEST

START_TEST(test_set_bytes)
{
    expect_set("memory=128M", 128 * MIB);
    expect_set("memory=1G", 1 * GIB);
    expect_set("memory=128m", 128 * MIB);
    expect_set("memory=128MB", 128 * MIB);
    expect_set("memory=128MiB", 128 * MIB);
    expect_set("memory=1gib", 1 * GIB);
    expect_set("memory=1.5G", 3 * GIB / 2);
    expect_set("memory=16M", 16 * MIB);
    expect_set("memory=64G", 64 * GIB);
    expect_set("memory=134217728", 128 * MIB);
    expect_set("disk=64k", 64 * KIB);
    expect_set("disk=64K", 64 * KIB);
    expect_set("disk=64kb", 64 * KIB);
    expect_set("disk=64KiB", 64 * KIB);
    expect_set("disk=1.5M", 3 * MIB / 2);
    expect_set("disk=16G", 16 * GIB);
    expect_set("stdout=0", 0);
    expect_set("stdout=100b", 100);
    expect_set("stdout=100B", 100);
    expect_set("stdout=1024", 1024);
    expect_set("stdout=1G", 1 * GIB);
    expect_set("stderr=64k", 64 * KIB);
    expect_set("code=1", 1);
    expect_set("code=64M", 64 * MIB);
    expect_set("stdin=0", 0);
    expect_set("stdin=8M", 8 * MIB);
    expect_set("file-size=1M", 1 * MIB);
    expect_set("file-size=0", 0);
    expect_set("return-size=8M", 8 * MIB);
    expect_set("stack=256k", 256 * KIB);
    expect_set("stack=1G", 1 * GIB);
}
END_TEST

START_TEST(test_set_counts)
{
    expect_set("pids=20", 20);
    expect_set("pids=1", 1);
    expect_set("pids=4096", 4096);
    expect_set("inodes=16", 16);
    expect_set("inodes=1000000", 1000000);
    expect_set("files=0", 0);
    expect_set("files=1000", 1000);
    expect_set("return-files=0", 0);
    expect_set("return-files=256", 256);
    expect_set("nofile=16", 16);
    expect_set("nofile=65536", 65536);
    expect_set("pids=007", 7);
}
END_TEST

/* Each limit accepts its own bounds and refuses one past them. */
START_TEST(test_set_bounds_every_name)
{
    for (size_t i = 0; i < NFIELDS; i++) {
        const struct field *f = &fields[i];
        int is_ms = strcmp(f->name, "wall") == 0 || strcmp(f->name, "cpu") == 0;
        const char *unit = is_ms ? "ms" : "";
        char a[128];

        snprintf(a, sizeof(a), "%s=%llu%s", f->name, (unsigned long long)f->min, unit);
        expect_set(a, f->min);
        snprintf(a, sizeof(a), "%s=%llu%s", f->name, (unsigned long long)f->max, unit);
        expect_set(a, f->max);
        snprintf(a, sizeof(a), "%s=%llu%s", f->name, (unsigned long long)f->max + 1, unit);
        expect_bad(a, "out of range");
        if (f->min > 0) {
            snprintf(a, sizeof(a), "%s=%llu%s", f->name, (unsigned long long)f->min - 1, unit);
            expect_bad(a, "out of range");
        }
    }
}
END_TEST

START_TEST(test_set_bad_syntax)
{
    /* No '='. */
    expect_bad("wall", "NAME=VALUE");
    expect_bad("", "NAME=VALUE");
    expect_bad("memory 128M", "NAME=VALUE");
    /* Unknown names, including near misses and other cases. */
    expect_bad("bogus=1", "unknown limit `bogus`");
    expect_bad("=5", "unknown limit");
    expect_bad("wal=1", "unknown limit");
    expect_bad("walls=1", "unknown limit");
    expect_bad("WALL=1", "unknown limit");
    expect_bad(" wall=1", "unknown limit");
    expect_bad("wall =1", "unknown limit");
    expect_bad("wall_ms=1", "unknown limit");
    /* Empty and malformed values. */
    expect_bad("wall=", "is not seconds");
    expect_bad("memory=", "is not bytes");
    expect_bad("pids=", "is not a whole number");
    expect_bad("wall= 5", NULL);
    expect_bad("wall=5 ", NULL);
    expect_bad("wall=5 s", NULL);
    expect_bad("wall==5", NULL);
    expect_bad("wall=.", NULL);
    expect_bad("wall=s", NULL);
    expect_bad("wall=ms", NULL);
    expect_bad("wall=+5", NULL);
    expect_bad("wall=abc", NULL);
    expect_bad("wall=1.2.3", NULL);
    /* Negative. */
    expect_bad("wall=-1", NULL);
    expect_bad("memory=-128M", NULL);
    expect_bad("pids=-5", NULL);
    expect_bad("stdout=-0", NULL);
    /* Garbage suffixes, and suffixes of the wrong unit. */
    expect_bad("wall=5x", NULL);
    expect_bad("wall=5sec", NULL);
    expect_bad("wall=5S", NULL);
    expect_bad("wall=5m", NULL);
    expect_bad("wall=5M", NULL);
    expect_bad("wall=5us", NULL);
    expect_bad("memory=128Q", NULL);
    expect_bad("memory=128MM", NULL);
    expect_bad("memory=128T", NULL);
    expect_bad("memory=128Mi", NULL);
    expect_bad("memory=1s", NULL);
    expect_bad("pids=5k", NULL);
    expect_bad("pids=5s", NULL);
    expect_bad("pids=1.5", "is not a whole number");
    /* Not numbers at all: strtod's special spellings. */
    expect_bad("wall=nan", NULL);
    expect_bad("wall=NaN", NULL);
    expect_bad("wall=inf", NULL);
    expect_bad("wall=infinity", NULL);
    expect_bad("memory=INF", NULL);
    expect_bad("pids=nan", NULL);
}
END_TEST

START_TEST(test_set_out_of_range)
{
    expect_bad("wall=0", "out of range");
    expect_bad("wall=0s", "out of range");
    expect_bad("wall=0.0001", "out of range");
    expect_bad("wall=3601", "out of range");
    expect_bad("cpu=0ms", "out of range");
    expect_bad("memory=15M", "out of range");
    expect_bad("memory=65G", "out of range");
    expect_bad("memory=0", "out of range");
    expect_bad("pids=0", "out of range");
    expect_bad("pids=4097", "out of range");
    expect_bad("disk=63k", "out of range");
    expect_bad("disk=17G", "out of range");
    expect_bad("inodes=15", "out of range");
    expect_bad("stdout=2G", "out of range");
    expect_bad("code=0", "out of range");
    expect_bad("files=1001", "out of range");
    expect_bad("return-files=257", "out of range");
    expect_bad("nofile=15", "out of range");
    expect_bad("nofile=65537", "out of range");
    expect_bad("stack=255k", "out of range");
    expect_bad("stack=2G", "out of range");
}
END_TEST

/* Values that overflow a double, a uint64_t or a uint32_t field never wrap into range. */
START_TEST(test_set_huge)
{
    expect_bad("wall=1e400", NULL);
    expect_bad("wall=1e308s", NULL);
    expect_bad("wall=4294967.296", NULL); /* 2^32 ms: would wrap to 0 in a uint32_t */
    expect_bad("wall=4294968.296", NULL); /* 2^32 + 1000 ms: would wrap to 1000 */
    expect_bad("wall=4294968296ms", NULL);
    expect_bad("pids=4294967297", NULL); /* 2^32 + 1: would wrap to 1 */
    expect_bad("pids=18446744073709551616", NULL);
    expect_bad("pids=18446744073709551621", NULL); /* 2^64 + 5 */
    expect_bad("pids=99999999999999999999999999999999999999", NULL);
    expect_bad("memory=18446744073709551616", NULL);
    expect_bad("memory=18446744073709551616G", NULL);
    expect_bad("memory=17179869184G", NULL); /* 2^64 bytes */
    expect_bad("memory=1e300G", NULL);
    expect_bad("memory=99999999999999999999999999999999999999999999999999", NULL);
    expect_bad("inodes=4295967296", NULL); /* 2^32 + 1e6 */
    expect_bad("nofile=4294967312", NULL); /* 2^32 + 16 */
}
END_TEST

START_TEST(test_set_null_err)
{
    struct pbx_limits l;

    pbx_limits_default(&l);
    /* A NULL err drops the error but still refuses. */
    ck_assert_int_eq(pbx_limits_set(&l, "bogus=1", NULL), -PBX_E_INVAL);
    ck_assert_int_eq(pbx_limits_set(&l, "wall=x", NULL), -PBX_E_INVAL);
    ck_assert_int_eq(pbx_limits_set(&l, "wall=7", NULL), 0);
    ck_assert_uint_eq(l.wall_ms, 7000);
}
END_TEST

/* The last assignment of a name wins; others are independent. */
START_TEST(test_set_repeated)
{
    struct pbx_limits l;
    struct pbx_error *err = NULL;

    pbx_limits_default(&l);
    ck_assert_int_eq(pbx_limits_set(&l, "wall=1", &err), 0);
    ck_assert_int_eq(pbx_limits_set(&l, "wall=2", &err), 0);
    ck_assert_int_eq(pbx_limits_set(&l, "memory=32M", &err), 0);
    ck_assert_int_lt(pbx_limits_set(&l, "wall=0", &err), 0);
    pbx_error_free(&err);
    ck_assert_uint_eq(l.wall_ms, 2000);
    ck_assert_uint_eq(l.memory_bytes, 32 * MIB);
    ck_assert_int_eq(pbx_limits_check(&l, &err), 0);
}
END_TEST

/* A timeout sets the wall and the CPU limit alike, rounded up to whole milliseconds. */
START_TEST(test_set_timeout)
{
    static const struct {
        double seconds;
        uint32_t ms;
    } ok[] = {
        {5, 5000},
        {2.5, 2500},
        {3600, 3600000},
        {1e3, 1000000},
        {0.5, 500},
        {0.001, 1},
        {0.0015, 2},
        {1.0005, 1001},
        /* Partial milliseconds round up: a positive timeout is never 0 ms. */
        {0.0001, 1},
        {1e-9, 1},
        {1e-300, 1},
        {4.9e-324, 1},
        /* A float's noise above a whole millisecond does not. */
        {0.1 + 0.2, 300},
        {1.1 * 3, 3300},
        {3599.9999999999, 3600000},
    };
    static const double bad[] = {0,    -0.0,  -1,       -1e-300,   3600.001,
                                 3601, 1e300, INFINITY, -INFINITY, NAN};
    struct pbx_limits l;
    struct pbx_error *err = NULL;

    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        pbx_limits_default(&l);
        ck_assert_int_eq(pbx_limits_check_timeout(ok[i].seconds, &err), 0);
        ck_assert_int_eq(pbx_limits_set_timeout(&l, ok[i].seconds, &err), 0);
        ck_assert_ptr_null(err);
        ck_assert_msg(l.wall_ms == ok[i].ms && l.cpu_ms == ok[i].ms,
                      "%.17g s: wall %u ms, cpu %u ms, wanted %u", ok[i].seconds, l.wall_ms,
                      l.cpu_ms, ok[i].ms);
        ck_assert_int_eq(pbx_limits_check(&l, &err), 0);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        pbx_limits_default(&l);
        l.cpu_ms = 12345;
        ck_assert_int_eq(pbx_limits_check_timeout(bad[i], NULL), -PBX_E_INVAL);
        ck_assert_int_eq(pbx_limits_set_timeout(&l, bad[i], &err), -1);
        ck_assert_int_eq(err->code, PBX_E_INVAL);
        ck_assert_str_eq(err->msg, "`timeout` must be between 0 and 3600 seconds");
        pbx_error_free(&err);
        /* Refused: the limits are as they were. */
        ck_assert_uint_eq(l.wall_ms, 10000);
        ck_assert_uint_eq(l.cpu_ms, 12345);
    }
}
END_TEST

START_TEST(test_check)
{
    for (size_t i = 0; i < NFIELDS; i++) {
        const struct field *f = &fields[i];
        uint64_t bad[3];
        size_t nbad = 0;

        bad[nbad++] = f->max + 1;
        bad[nbad++] = f->wide ? UINT64_MAX : UINT32_MAX;
        if (f->min > 0)
            bad[nbad++] = f->min - 1;
        for (size_t j = 0; j < nbad; j++) {
            struct pbx_limits l;
            struct pbx_error *err = NULL;

            pbx_limits_default(&l);
            put(&l, f, bad[j]);
            ck_assert_msg(pbx_limits_check(&l, &err) == -PBX_E_INVAL, "%s = %llu passes", f->name,
                          (unsigned long long)bad[j]);
            ck_assert_ptr_nonnull(err);
            ck_assert_int_eq(err->code, PBX_E_INVAL);
            ck_assert_msg(strstr(err->msg, f->name) != NULL, "`%s` does not name %s", err->msg,
                          f->name);
            pbx_error_free(&err);
        }
        {
            struct pbx_limits l;
            struct pbx_error *err = NULL;

            pbx_limits_default(&l);
            put(&l, f, f->min);
            ck_assert_int_eq(pbx_limits_check(&l, &err), 0);
            put(&l, f, f->max);
            ck_assert_int_eq(pbx_limits_check(&l, &err), 0);
            ck_assert_ptr_null(err);
        }
    }
}
END_TEST

START_TEST(test_describe)
{
    struct pbx_limits l;
    char *text;
    size_t lines = 0;

    pbx_limits_default(&l);
    text = pbx_limits_describe(&l);
    ck_assert_ptr_nonnull(text);
    ck_assert_uint_gt(strlen(text), 0);
    for (const char *p = text; *p != '\0'; p++)
        lines += *p == '\n';
    ck_assert_uint_eq(lines, NFIELDS);
    for (size_t i = 0; i < NFIELDS; i++) {
        char needle[40];

        snprintf(needle, sizeof(needle), "  %s ", fields[i].name);
        ck_assert_msg(strstr(text, needle) != NULL, "no line for %s in:\n%s", fields[i].name, text);
    }
    ck_assert_ptr_nonnull(strstr(text, "10s"));
    ck_assert_ptr_nonnull(strstr(text, "256M"));
    free(text);

    /* Odd values print too: fractions of a second, KiB, plain bytes, zero. */
    ck_assert_int_eq(pbx_limits_set(&l, "wall=2.5s", NULL), 0);
    ck_assert_int_eq(pbx_limits_set(&l, "disk=100k", NULL), 0);
    ck_assert_int_eq(pbx_limits_set(&l, "stdout=1000", NULL), 0);
    ck_assert_int_eq(pbx_limits_set(&l, "stderr=0", NULL), 0);
    text = pbx_limits_describe(&l);
    ck_assert_ptr_nonnull(strstr(text, "2.5s"));
    ck_assert_ptr_nonnull(strstr(text, "100K"));
    ck_assert_ptr_nonnull(strstr(text, "1000 "));
    free(text);
}
END_TEST

static Suite *limits_suite(void)
{
    Suite *s = suite_create("limits");
    TCase *tc = tcase_create("limits");

    tcase_add_test(tc, test_defaults);
    tcase_add_test(tc, test_set_times);
    tcase_add_test(tc, test_set_bytes);
    tcase_add_test(tc, test_set_counts);
    tcase_add_test(tc, test_set_bounds_every_name);
    tcase_add_test(tc, test_set_bad_syntax);
    tcase_add_test(tc, test_set_out_of_range);
    tcase_add_test(tc, test_set_huge);
    tcase_add_test(tc, test_set_null_err);
    tcase_add_test(tc, test_set_repeated);
    tcase_add_test(tc, test_set_timeout);
    tcase_add_test(tc, test_check);
    tcase_add_test(tc, test_describe);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(limits_suite());
    int failed;

    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
