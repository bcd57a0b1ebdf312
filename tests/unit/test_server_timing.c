/*
 * Unit tests for src/server/timing.c: the Server-Timing value of an
 * execution's step times: its phases in order, contiguous, summing exactly
 * to its total however the times round; the fallbacks when the cell's times
 * or the engine's are missing or out of order; a short buffer, which gets
 * whole entries only.
 */
#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/timing.h"
#include "common/banned.h"

#define T0 1000000000ull /* the arrival, ns */

/* Every step 1234 ns after the one before: each phase rounds, the sum must not drift. */
static void fill(struct pbx_server_timing *t)
{
    uint64_t at = T0;
    uint64_t *server[] = {&t->parsed_ns, &t->resolved_ns, &t->held_ns, &t->slot_ns,
                          &t->admitted_ns};
    uint64_t *exec[] = {&t->exec.begin_ns,    &t->exec.taken_ns,     &t->exec.sent_ns,
                        &t->exec.go_ns,       &t->exec.handed_ns,    &t->exec.started_ns,
                        &t->exec.reaped_ns,   &t->exec.collected_ns, &t->exec.done_ns,
                        &t->exec.composed_ns, &t->exec.end_ns};

    memset(t, 0, sizeof(*t));
    for (size_t i = 0; i < sizeof(server) / sizeof(server[0]); i++)
        *server[i] = at += 1234;
    for (size_t i = 0; i < sizeof(exec) / sizeof(exec[0]); i++)
        *exec[i] = at += 1234;
    t->ran_ns = at += 1234;
    t->audited_ns = at += 1234;
    t->exec.known = true;
    t->exec.cell_known = true;
    t->exec.warm = true;
}

/* The names of `v`'s entries with a dur, comma-separated, and their sum and total in us. */
static void entries(const char *v, char *names, size_t len, uint64_t *sum, uint64_t *total)
{
    char *copy = strdup(v);
    char *save = NULL;

    ck_assert_ptr_nonnull(copy);
    names[0] = '\0';
    *sum = 0;
    *total = UINT64_MAX;
    for (char *e = strtok_r(copy, ",", &save); e != NULL; e = strtok_r(NULL, ",", &save)) {
        char name[32];
        unsigned ms;
        unsigned frac;

        while (*e == ' ')
            e++;
        if (sscanf(e, "%31[a-z];dur=%u.%3u", name, &ms, &frac) != 3)
            continue;
        ck_assert_int_eq((int)strlen(strchr(e, '.') + 1), 3); /* 3 decimals, nothing after */
        if (strcmp(name, "total") == 0) {
            *total = (uint64_t)ms * 1000 + frac;
            continue;
        }
        *sum += (uint64_t)ms * 1000 + frac;
        snprintf(names + strlen(names), len - strlen(names), "%s%s", names[0] ? "," : "", name);
    }
    free(copy);
}

START_TEST(test_every_phase)
{
    struct pbx_server_timing t;
    char v[PBX_SERVER_TIMING_MAX];
    char names[256];
    uint64_t sum;
    uint64_t total;
    uint64_t now;

    fill(&t);
    now = t.audited_ns + 1234;
    pbx__server_timing_format(&t, T0, now, v, sizeof(v));
    entries(v, names, sizeof(names), &sum, &total);
    ck_assert_str_eq(names, "parse,auth,admit,queue,charge,prep,handoff,start,run,collect,"
                            "report,result,audit,answer");
    ck_assert_uint_eq(total, (now - T0 + 500) / 1000);
    ck_assert_uint_eq(sum, total); /* exactly: each phase from the rounded end before it */
    ck_assert_ptr_nonnull(strstr(v, "parse;dur=0.001, auth;dur=0.001,"));
    /* prep runs from admitted to sent: begin and taken lie within it. */
    ck_assert_ptr_nonnull(strstr(v, "prep;dur=0.004,"));
    ck_assert_ptr_nonnull(strstr(v, ", cell;desc=\"warm\""));
    t.exec.warm = false;
    pbx__server_timing_format(&t, T0, now, v, sizeof(v));
    ck_assert_ptr_nonnull(strstr(v, ", cell;desc=\"forked\""));

    /* The job's last record read between its handing and its reaping: run split in two. */
    t.exec.code_done_ns = t.exec.handed_ns + 1000;
    pbx__server_timing_format(&t, T0, now, v, sizeof(v));
    entries(v, names, sizeof(names), &sum, &total);
    ck_assert_str_eq(names, "parse,auth,admit,queue,charge,prep,handoff,start,code,exit,"
                            "collect,report,result,audit,answer");
    ck_assert_uint_eq(sum, total);
}
END_TEST

START_TEST(test_without_the_cell)
{
    struct pbx_server_timing t;
    char v[PBX_SERVER_TIMING_MAX];
    char names[256];
    uint64_t sum;
    uint64_t total;

    fill(&t);
    t.exec.cell_known = false; /* its report failed the check */
    pbx__server_timing_format(&t, T0, t.audited_ns + 10, v, sizeof(v));
    entries(v, names, sizeof(names), &sum, &total);
    ck_assert_str_eq(names, "parse,auth,admit,queue,charge,prep,execution,audit,answer");
    ck_assert_uint_eq(sum, total);
    ck_assert_ptr_nonnull(strstr(v, "cell;desc="));

    t.exec.known = false; /* not run by an engine of this server */
    pbx__server_timing_format(&t, T0, t.audited_ns + 10, v, sizeof(v));
    entries(v, names, sizeof(names), &sum, &total);
    ck_assert_str_eq(names, "parse,auth,admit,queue,charge,engine,audit,answer");
    ck_assert_uint_eq(sum, total);
    ck_assert_ptr_null(strstr(v, "cell;desc="));
}
END_TEST

START_TEST(test_out_of_order)
{
    struct pbx_server_timing t;
    char v[PBX_SERVER_TIMING_MAX];
    char names[256];
    uint64_t sum;
    uint64_t total;

    fill(&t);
    t.exec.handed_ns = t.exec.go_ns - 1; /* none of pybox's, but no negative phase ever */
    pbx__server_timing_format(&t, T0, t.audited_ns + 10, v, sizeof(v));
    entries(v, names, sizeof(names), &sum, &total);
    ck_assert_str_eq(names, "parse,auth,admit,queue,charge,engine,audit,answer");
    ck_assert_uint_eq(sum, total);

    fill(&t);
    t.held_ns = t.resolved_ns - 1; /* the server's own out of order: only the total */
    pbx__server_timing_format(&t, T0, t.audited_ns + 10, v, sizeof(v));
    entries(v, names, sizeof(names), &sum, &total);
    ck_assert_str_eq(names, "");
    ck_assert_uint_ne(total, UINT64_MAX);
}
END_TEST

START_TEST(test_short_buffer)
{
    struct pbx_server_timing t;
    char v[40];

    fill(&t);
    memset(v, 'x', sizeof(v));
    pbx__server_timing_format(&t, T0, t.audited_ns + 10, v, sizeof(v));
    /* Whole entries only: the third would not fit. */
    ck_assert_str_eq(v, "parse;dur=0.001, auth;dur=0.001");
}
END_TEST

static Suite *timing_suite(void)
{
    Suite *s = suite_create("server_timing");
    TCase *tc = tcase_create("format");

    tcase_add_test(tc, test_every_phase);
    tcase_add_test(tc, test_without_the_cell);
    tcase_add_test(tc, test_out_of_order);
    tcase_add_test(tc, test_short_buffer);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(timing_suite());
    int failed;

    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
