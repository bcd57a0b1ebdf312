/*
 * Unit tests for src/engine/meta.c: the job's JSON-lines records.  Only the
 * first line can be the check record (written before user code runs); every
 * later line may have been forged by user code and must never change the
 * check.  Bad lines are skipped, never fatal.
 */
#include <check.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/meta.h"
#include "common/banned.h"

/* Parse a NUL-terminated text (its length is strlen). */
static void parse(const char *text, struct pbx_meta *m)
{
    pbx__meta_parse(text, strlen(text), NULL, m);
}

static void assert_empty(const struct pbx_meta *m)
{
    ck_assert_int_eq(m->check, PBX_META_CHECK_NONE);
    ck_assert_ptr_null(m->reject_error);
    ck_assert(!m->done);
    ck_assert_int_eq(m->exit_code, 0);
    ck_assert_ptr_null(m->error);
    ck_assert_ptr_null(m->result);
    ck_assert(!m->result_invalid);
}

static const char *error_type(const json_t *e)
{
    return json_string_value(json_object_get(e, "type"));
}

START_TEST(test_ok_and_done)
{
    struct pbx_meta m;

    memset(&m, 0xa5, sizeof(m)); /* zeroed by the parser, whatever it held */
    parse("{\"check\": \"ok\"}\n"
          "{\"done\": true, \"exit_code\": 0, \"error\": null}\n",
          &m);
    ck_assert_int_eq(m.check, PBX_META_CHECK_OK);
    ck_assert(m.done);
    ck_assert_int_eq(m.exit_code, 0);
    ck_assert_ptr_null(m.error);
    ck_assert_ptr_null(m.result);
    ck_assert(!m.result_invalid);
    ck_assert_ptr_null(m.reject_error);
    pbx__meta_release(&m);
    assert_empty(&m);
    pbx__meta_release(&m); /* twice is fine */
}
END_TEST

START_TEST(test_done_with_error_and_result)
{
    struct pbx_meta m;
    json_t *want;

    parse("{\"check\":\"ok\"}\n"
          "{\"done\":true,\"exit_code\":1,\"error\":{\"type\":\"ZeroDivisionError\","
          "\"message\":\"division by zero\",\"traceback\":\"...\",\"line\":3}}\n",
          &m);
    ck_assert_int_eq(m.check, PBX_META_CHECK_OK);
    ck_assert(m.done);
    ck_assert_int_eq(m.exit_code, 1);
    ck_assert_ptr_nonnull(m.error);
    ck_assert_str_eq(error_type(m.error), "ZeroDivisionError");
    ck_assert_str_eq(json_string_value(json_object_get(m.error, "message")), "division by zero");
    ck_assert_int_eq(json_integer_value(json_object_get(m.error, "line")), 3);
    pbx__meta_release(&m);

    parse("{\"check\":\"ok\"}\n"
          "{\"done\":true,\"exit_code\":0,\"error\":null,"
          "\"result\":\"{\\\"a\\\": [1, 2.5, \\\"x\\\", null, true]}\"}\n",
          &m);
    ck_assert(m.done);
    ck_assert_ptr_nonnull(m.result);
    ck_assert(!m.result_invalid);
    want = json_loads("{\"a\": [1, 2.5, \"x\", null, true]}", 0, NULL);
    ck_assert(json_equal(m.result, want));
    json_decref(want);
    pbx__meta_release(&m);

    /* Any JSON value is a result, scalars and null too. */
    parse("{\"check\":\"ok\"}\n{\"done\":true,\"exit_code\":0,\"result\":\"42\"}\n", &m);
    ck_assert(json_is_integer(m.result));
    ck_assert_int_eq(json_integer_value(m.result), 42);
    pbx__meta_release(&m);
    parse("{\"check\":\"ok\"}\n{\"done\":true,\"exit_code\":0,\"result\":\"null\"}\n", &m);
    ck_assert(json_is_null(m.result));
    ck_assert(!m.result_invalid);
    pbx__meta_release(&m);
    parse("{\"check\":\"ok\"}\n{\"done\":true,\"exit_code\":0,\"result\":\"\\\"s\\\"\"}\n", &m);
    ck_assert_str_eq(json_string_value(m.result), "s");
    pbx__meta_release(&m);
}
END_TEST

/* What json.dumps() writes: a space after ':' and ',', non-ASCII escaped. */
START_TEST(test_python_spelling)
{
    struct pbx_meta m;

    parse("{\"check\": \"ok\"}\n"
          "{\"done\": true, \"exit_code\": 0, \"error\": null, \"result\": \"[\\\"\\\\u00e9\\\"]\"}"
          "\n",
          &m);
    ck_assert(m.done);
    ck_assert(json_is_array(m.result));
    ck_assert_str_eq(json_string_value(json_array_get(m.result, 0)), "\xc3\xa9");
    pbx__meta_release(&m);
}
END_TEST

START_TEST(test_rejected_first)
{
    struct pbx_meta m;

    parse("{\"check\":\"rejected\",\"error\":{\"type\":\"ForbiddenImportError\","
          "\"message\":\"import of 'os' not allowed\",\"disallowed\":[\"os\"]}}\n"
          "{\"check\":\"ok\"}\n"
          "{\"done\":true,\"exit_code\":0,\"error\":{\"type\":\"X\"},\"result\":\"1\"}\n",
          &m);
    ck_assert_int_eq(m.check, PBX_META_CHECK_REJECTED);
    ck_assert_ptr_nonnull(m.reject_error);
    ck_assert_str_eq(error_type(m.reject_error), "ForbiddenImportError");
    /* Nothing after the rejection counts. */
    ck_assert(!m.done);
    ck_assert_ptr_null(m.error);
    ck_assert_ptr_null(m.result);
    pbx__meta_release(&m);

    /* A rejection whose error has the wrong shape keeps the verdict, drops the object. */
    parse("{\"check\":\"rejected\",\"error\":{\"type\":5}}\n", &m);
    ck_assert_int_eq(m.check, PBX_META_CHECK_REJECTED);
    ck_assert_ptr_null(m.reject_error);
    pbx__meta_release(&m);
    parse("{\"check\":\"rejected\"}\n", &m);
    ck_assert_int_eq(m.check, PBX_META_CHECK_REJECTED);
    ck_assert_ptr_null(m.reject_error);
    pbx__meta_release(&m);
}
END_TEST

/* User code can write to fd 3: a rejection after the check is a forgery. */
START_TEST(test_forged_rejection_ignored)
{
    struct pbx_meta m;

    parse("{\"check\":\"ok\"}\n"
          "{\"check\":\"rejected\",\"error\":{\"type\":\"SyntaxError\",\"message\":\"forged\"}}\n"
          "{\"done\":true,\"exit_code\":0,\"error\":null}\n",
          &m);
    ck_assert_int_eq(m.check, PBX_META_CHECK_OK);
    ck_assert_ptr_null(m.reject_error);
    ck_assert(m.done);
    ck_assert_ptr_null(m.error);
    pbx__meta_release(&m);

    /* Forged after the done record too, and as the last, unterminated line. */
    parse("{\"check\":\"ok\"}\n"
          "{\"done\":true,\"exit_code\":0}\n"
          "{\"check\":\"rejected\"}\n"
          "{\"check\":\"rejected\"}",
          &m);
    ck_assert_int_eq(m.check, PBX_META_CHECK_OK);
    ck_assert_ptr_null(m.reject_error);
    pbx__meta_release(&m);

    /* A check line that also claims done does not finish the job. */
    parse("{\"check\":\"ok\",\"done\":true,\"exit_code\":7}\n", &m);
    ck_assert_int_eq(m.check, PBX_META_CHECK_OK);
    ck_assert(!m.done);
    ck_assert_int_eq(m.exit_code, 0);
    pbx__meta_release(&m);
}
END_TEST

/* The first line must be the check record: a done record there is ignored, and so is any later
 * check. */
START_TEST(test_done_first_ignored)
{
    struct pbx_meta m;

    parse("{\"done\":true,\"exit_code\":0,\"result\":\"1\"}\n", &m);
    assert_empty(&m);
    pbx__meta_release(&m);

    parse("{\"done\":true,\"exit_code\":0}\n{\"check\":\"ok\"}\n{\"check\":\"rejected\"}\n", &m);
    ck_assert_int_eq(m.check, PBX_META_CHECK_NONE);
    ck_assert_ptr_null(m.reject_error);
    ck_assert(!m.done);
    pbx__meta_release(&m);

    /* A garbage first line: no check, whatever follows. */
    parse("garbage\n{\"check\":\"rejected\"}\n{\"done\":true,\"exit_code\":0}\n", &m);
    ck_assert_int_eq(m.check, PBX_META_CHECK_NONE);
    ck_assert(m.done);
    pbx__meta_release(&m);

    /* An empty first line counts as the first line. */
    parse("\n{\"check\":\"ok\"}\n", &m);
    ck_assert_int_eq(m.check, PBX_META_CHECK_NONE);
    pbx__meta_release(&m);

    /* A check with a value that is neither ok nor rejected. */
    parse("{\"check\":\"maybe\"}\n{\"check\":\"ok\"}\n", &m);
    ck_assert_int_eq(m.check, PBX_META_CHECK_NONE);
    pbx__meta_release(&m);
    parse("{\"check\":true}\n", &m);
    ck_assert_int_eq(m.check, PBX_META_CHECK_NONE);
    pbx__meta_release(&m);
    parse("{\"check\":\"OK\"}\n", &m);
    ck_assert_int_eq(m.check, PBX_META_CHECK_NONE);
    pbx__meta_release(&m);
}
END_TEST

START_TEST(test_result_invalid)
{
    static const char *const bad[] = {
        "{not json", "NaN", "Infinity", "-Infinity",   "nan",
        "",          " ",   "[1,",      "{\"a\":1} x", "undefined",
        "'x'",       "01",  "1.",       "+1",          "{\"a\":1,\"a\":2}",
    };
    struct pbx_meta m;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        json_t *rec = json_pack("{s:b, s:i, s:s}", "done", 1, "exit_code", 0, "result", bad[i]);
        char *line = json_dumps(rec, JSON_COMPACT);
        char *text = NULL;

        ck_assert_ptr_nonnull(line);
        ck_assert_int_gt(asprintf(&text, "{\"check\":\"ok\"}\n%s\n", line), 0);
        parse(text, &m);
        ck_assert_msg(m.done, "result `%s`: done record dropped", bad[i]);
        ck_assert_msg(m.result == NULL && m.result_invalid, "result `%s` accepted", bad[i]);
        pbx__meta_release(&m);
        free(text);
        free(line);
        json_decref(rec);
    }
}
END_TEST

/* A result that is not a string never becomes a value. */
START_TEST(test_result_not_string)
{
    struct pbx_meta m;

    parse("{\"check\":\"ok\"}\n{\"done\":true,\"exit_code\":0,\"result\":5}\n", &m);
    ck_assert(m.done);
    ck_assert_ptr_null(m.result);
    pbx__meta_release(&m);
    parse("{\"check\":\"ok\"}\n{\"done\":true,\"exit_code\":0,\"result\":{\"a\":1}}\n", &m);
    ck_assert_ptr_null(m.result);
    pbx__meta_release(&m);
}
END_TEST

START_TEST(test_unterminated_last_line)
{
    struct pbx_meta m;

    parse("{\"check\":\"ok\"}\n{\"done\":true,\"exit_code\":0,\"result\":\"1\"}", &m);
    ck_assert_int_eq(m.check, PBX_META_CHECK_OK);
    ck_assert(!m.done);
    ck_assert_ptr_null(m.result);
    pbx__meta_release(&m);

    parse("{\"check\":\"ok\"}", &m);
    ck_assert_int_eq(m.check, PBX_META_CHECK_NONE);
    pbx__meta_release(&m);

    parse("{\"check\":\"rejected\"}", &m);
    ck_assert_int_eq(m.check, PBX_META_CHECK_NONE);
    pbx__meta_release(&m);

    /* A cut-off second done keeps the first. */
    parse("{\"check\":\"ok\"}\n{\"done\":true,\"exit_code\":4}\n{\"done\":true,\"exit_code\":0",
          &m);
    ck_assert(m.done);
    ck_assert_int_eq(m.exit_code, 4);
    pbx__meta_release(&m);
}
END_TEST

START_TEST(test_empty_input)
{
    struct pbx_meta m;

    pbx__meta_parse("", 0, NULL, &m);
    assert_empty(&m);
    pbx__meta_release(&m);
    /* The length wins over a NUL. */
    pbx__meta_parse("{\"check\":\"ok\"}\n", 5, NULL, &m);
    assert_empty(&m);
    pbx__meta_release(&m);
    parse("\n\n\n", &m);
    assert_empty(&m);
    pbx__meta_release(&m);
}
END_TEST

START_TEST(test_garbage_lines)
{
    struct pbx_meta m;
    static const char text[] = "{\"check\":\"ok\"}\n"
                               "garbage\n"
                               "\n"
                               "[1,2,3]\n"
                               "\"just a string\"\n"
                               "42\n"
                               "null\n"
                               "{\n"
                               "}\n"
                               "{\"done\":\"yes\",\"exit_code\":9}\n"
                               "{\"done\":1,\"exit_code\":9}\n"
                               "{\"done\":false,\"exit_code\":9}\n"
                               "{\"exit_code\":9}\n"
                               "\xff\xfe\x00\x01\n"
                               "{\"done\":true,\"exit_code\":2}\n"
                               "{\"done\":true,\"exit_code\":3}} trailing\n"
                               "{\"done\":true,\"exit_code\":3}\x00\n"
                               "\x00\n";

    pbx__meta_parse(text, sizeof(text) - 1, NULL, &m);
    ck_assert_int_eq(m.check, PBX_META_CHECK_OK);
    ck_assert(m.done);
    ck_assert_int_eq(m.exit_code, 2);
    pbx__meta_release(&m);

    /* CR LF line ends and surrounding whitespace are JSON whitespace. */
    parse("  {\"check\":\"ok\"}  \r\n\t{\"done\":true,\"exit_code\":5}\r\n", &m);
    ck_assert_int_eq(m.check, PBX_META_CHECK_OK);
    ck_assert(m.done);
    ck_assert_int_eq(m.exit_code, 5);
    pbx__meta_release(&m);
}
END_TEST

START_TEST(test_error_shapes)
{
    static const struct {
        const char *error; /* the done record's error member */
        int kept;          /* whether it survives */
    } cases[] = {
        {"null", 0},
        {"\"ValueError\"", 0},
        {"[\"ValueError\"]", 0},
        {"42", 0},
        {"true", 0},
        {"{}", 0},
        {"{\"message\":\"no type\"}", 0},
        {"{\"type\":null}", 0},
        {"{\"type\":5,\"message\":\"x\"}", 0},
        {"{\"type\":[\"X\"]}", 0},
        {"{\"type\":\"X\",\"message\":5}", 0},
        {"{\"type\":\"X\",\"message\":{}}", 0},
        {"{\"type\":\"X\",\"message\":[\"m\"]}", 0},
        {"{\"type\":\"X\"}", 1},
        {"{\"type\":\"X\",\"message\":null}", 1},
        {"{\"type\":\"X\",\"message\":\"m\",\"traceback\":\"t\",\"line\":1}", 1},
    };
    struct pbx_meta m;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *text = NULL;

        ck_assert_int_gt(
            asprintf(&text, "{\"check\":\"ok\"}\n{\"done\":true,\"exit_code\":1,\"error\":%s}\n",
                     cases[i].error),
            0);
        parse(text, &m);
        ck_assert_msg(m.done, "error %s: record dropped", cases[i].error);
        if (cases[i].kept) {
            ck_assert_msg(m.error != NULL, "error %s dropped", cases[i].error);
            ck_assert_str_eq(error_type(m.error), "X");
        } else {
            ck_assert_msg(m.error == NULL, "error %s kept", cases[i].error);
        }
        pbx__meta_release(&m);
        free(text);

        /* The same shapes in a rejection. */
        ck_assert_int_gt(asprintf(&text, "{\"check\":\"rejected\",\"error\":%s}\n", cases[i].error),
                         0);
        parse(text, &m);
        ck_assert_int_eq(m.check, PBX_META_CHECK_REJECTED);
        ck_assert_msg((m.reject_error != NULL) == cases[i].kept, "rejection error %s",
                      cases[i].error);
        pbx__meta_release(&m);
        free(text);
    }
}
END_TEST

/* Records with duplicate keys are dropped whole; so are results with them. */
START_TEST(test_duplicate_keys)
{
    struct pbx_meta m;

    parse("{\"check\":\"ok\",\"check\":\"rejected\"}\n", &m);
    ck_assert_int_eq(m.check, PBX_META_CHECK_NONE);
    pbx__meta_release(&m);
    parse("{\"check\":\"rejected\",\"check\":\"ok\"}\n", &m);
    ck_assert_int_eq(m.check, PBX_META_CHECK_NONE);
    pbx__meta_release(&m);

    parse("{\"check\":\"ok\"}\n"
          "{\"done\":true,\"exit_code\":6}\n"
          "{\"done\":true,\"exit_code\":0,\"exit_code\":1}\n",
          &m);
    ck_assert(m.done);
    ck_assert_int_eq(m.exit_code, 6);
    pbx__meta_release(&m);

    parse("{\"check\":\"ok\"}\n"
          "{\"done\":true,\"exit_code\":1,\"error\":{\"type\":\"A\",\"type\":\"B\"}}\n",
          &m);
    ck_assert(!m.done);
    ck_assert_ptr_null(m.error);
    pbx__meta_release(&m);
}
END_TEST

/* The last done record wins, all of it: a later one without a result clears the earlier result. */
START_TEST(test_last_done_wins)
{
    struct pbx_meta m;

    parse("{\"check\":\"ok\"}\n"
          "{\"done\":true,\"exit_code\":0,\"error\":{\"type\":\"E\"},\"result\":\"1\"}\n"
          "{\"done\":true,\"exit_code\":3}\n",
          &m);
    ck_assert(m.done);
    ck_assert_int_eq(m.exit_code, 3);
    ck_assert_ptr_null(m.error);
    ck_assert_ptr_null(m.result);
    ck_assert(!m.result_invalid);
    pbx__meta_release(&m);

    parse("{\"check\":\"ok\"}\n"
          "{\"done\":true,\"exit_code\":0,\"result\":\"NaN\"}\n"
          "{\"done\":true,\"exit_code\":0,\"result\":\"[2]\"}\n",
          &m);
    ck_assert(!m.result_invalid);
    ck_assert(json_is_array(m.result));
    pbx__meta_release(&m);
}
END_TEST

START_TEST(test_exit_codes)
{
    static const struct {
        const char *value; /* the exit_code member */
        int want;
    } cases[] = {
        {"0", 0},
        {"3", 3},
        {"255", 255},
        {"256", 0},
        {"257", 1},
        {"-1", 255},
        {"\"0\"", 1},
        {"null", 1},
        {"1.0", 1},
        {"1e300", 1},
        {"-1e300", 1},
        {"true", 1},
        {"[0]", 1},
        {"{}", 1},
        {"9223372036854775807", 255},
        {"-9223372036854775808", 0},
    };
    struct pbx_meta m;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *text = NULL;

        ck_assert_int_gt(asprintf(&text, "{\"check\":\"ok\"}\n{\"done\":true,\"exit_code\":%s}\n",
                                  cases[i].value),
                         0);
        parse(text, &m);
        ck_assert_msg(m.done, "exit_code %s: record dropped", cases[i].value);
        ck_assert_msg(m.exit_code == cases[i].want, "exit_code %s gave %d, want %d", cases[i].value,
                      m.exit_code, cases[i].want);
        ck_assert_int_ge(m.exit_code, 0);
        ck_assert_int_le(m.exit_code, 255);
        pbx__meta_release(&m);
        free(text);
    }
    /* No exit_code at all. */
    parse("{\"check\":\"ok\"}\n{\"done\":true}\n", &m);
    ck_assert(m.done);
    ck_assert_int_eq(m.exit_code, 1);
    pbx__meta_release(&m);
}
END_TEST

/*
 * Numbers no int64 holds: such a record is dropped whole (jansson refuses
 * it); a result holding one is flagged invalid, never silently NULL.
 */
START_TEST(test_huge_numbers)
{
    static const char *const results[] = {
        "1180591620717411303424", /* 2**70, what json.dumps(2**70) writes */
        "[9223372036854775808]",  /* 2**63 */
        "-9223372036854775809",   "1e400", "{\"a\": 123456789012345678901234567890}",
    };
    struct pbx_meta m;

    parse("{\"check\":\"ok\"}\n{\"done\":true,\"exit_code\":99999999999999999999999}\n", &m);
    ck_assert_int_eq(m.check, PBX_META_CHECK_OK);
    ck_assert(!m.done);
    pbx__meta_release(&m);

    for (size_t i = 0; i < sizeof(results) / sizeof(results[0]); i++) {
        json_t *rec = json_pack("{s:b, s:i, s:s}", "done", 1, "exit_code", 0, "result", results[i]);
        char *line = json_dumps(rec, JSON_COMPACT);
        char *text = NULL;

        ck_assert_int_gt(asprintf(&text, "{\"check\":\"ok\"}\n%s\n", line), 0);
        parse(text, &m);
        ck_assert(m.done);
        ck_assert_msg(m.result != NULL || m.result_invalid, "result %s: lost without a flag",
                      results[i]);
        pbx__meta_release(&m);
        free(text);
        free(line);
        json_decref(rec);
    }
}
END_TEST

/* Deep nesting in a record or in a result is refused, not a stack overflow. */
START_TEST(test_deep_nesting)
{
    const size_t depth = 200000;
    size_t n = 0;
    char *text = malloc(4 * depth + 256);
    struct pbx_meta m;

    ck_assert_ptr_nonnull(text);
    n += (size_t)snprintf(text, 64, "{\"check\":\"ok\"}\n{\"done\":true,\"exit_code\":0,\"x\":");
    memset(text + n, '[', depth);
    n += depth;
    memset(text + n, ']', depth);
    n += depth;
    text[n++] = '}';
    text[n++] = '\n';
    pbx__meta_parse(text, n, NULL, &m);
    ck_assert_int_eq(m.check, PBX_META_CHECK_OK);
    ck_assert(!m.done);
    pbx__meta_release(&m);

    n = (size_t)snprintf(text, 128,
                         "{\"check\":\"ok\"}\n{\"done\":true,\"exit_code\":0,\"result\":\"");
    memset(text + n, '[', depth);
    n += depth;
    memset(text + n, ']', depth);
    n += depth;
    text[n++] = '"';
    text[n++] = '}';
    text[n++] = '\n';
    pbx__meta_parse(text, n, NULL, &m);
    ck_assert(m.done);
    ck_assert_ptr_null(m.result);
    /* Deeper than the parser goes: refused by the scan before any tree is built. */
    ck_assert(m.result_too_large);
    pbx__meta_release(&m);
    free(text);
}
END_TEST

/* Many lines: linear, and the check stays the first line's. */
START_TEST(test_many_lines)
{
    const size_t lines = 100000;
    const char *first = "{\"check\":\"ok\"}\n";
    const char *line = "{\"check\":\"rejected\"}\n";
    const char *last = "{\"done\":true,\"exit_code\":0}\n";
    size_t n = 0;
    char *text = malloc(strlen(first) + lines * strlen(line) + 64);
    struct pbx_meta m;

    ck_assert_ptr_nonnull(text);
    memcpy(text, first, strlen(first));
    n += strlen(first);
    for (size_t i = 0; i < lines; i++) {
        memcpy(text + n, line, strlen(line));
        n += strlen(line);
    }
    memcpy(text + n, last, strlen(last));
    n += strlen(last);
    pbx__meta_parse(text, n, NULL, &m);
    ck_assert_int_eq(m.check, PBX_META_CHECK_OK);
    ck_assert(m.done);
    pbx__meta_release(&m);
    free(text);
}
END_TEST

START_TEST(test_result_over_the_limits_is_not_parsed)
{
    struct pbx_limits l;
    struct pbx_meta m;
    size_t values = 100000;
    size_t n;
    char *text = malloc(3 * values + 256);

    pbx_limits_default(&l);
    l.answer_bytes = 1u << 20; /* room for 16400 values */
    n = (size_t)snprintf(text, 128,
                         "{\"check\":\"ok\"}\n{\"done\":true,\"exit_code\":0,\"result\":\"[");
    for (size_t i = 0; i < values; i++) {
        memcpy(text + n, "1,", 2);
        n += 2;
    }
    memcpy(text + n, "1]\"}\n", 5);
    n += 5;
    pbx__meta_parse(text, n, &l, &m);
    ck_assert(m.done);
    ck_assert_ptr_null(m.result);
    ck_assert(m.result_too_large);
    ck_assert(!m.result_invalid);
    pbx__meta_release(&m);
    /* The same value within the default limits is parsed. */
    pbx__meta_parse(text, n, NULL, &m);
    ck_assert_ptr_nonnull(m.result);
    ck_assert_uint_eq(json_array_size(m.result), values + 1);
    ck_assert(!m.result_too_large);
    pbx__meta_release(&m);
    /* A line of 200,000 values is skipped unparsed, as if it were not there. */
    n = (size_t)snprintf(text, 128, "{\"check\":\"ok\"}\n[");
    for (size_t i = 0; i < values; i++) {
        memcpy(text + n, "[],", 3);
        n += 3;
    }
    memcpy(text + n, "[]]\n", 4);
    n += 4;
    pbx__meta_parse(text, n, NULL, &m);
    ck_assert_int_eq(m.check, PBX_META_CHECK_OK);
    ck_assert(!m.done);
    pbx__meta_release(&m);
    free(text);
}
END_TEST

/* A tiny valid PNG (the 8-byte signature and an IHDR chunk), in base64. */
#define PNG_B64 \
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGNgAAAAAgABSK+kcQAAAABJRU5ErkJggg=="

/* The text/plain of outputs[i]. */
static const char *output_text(const struct pbx_meta *m, size_t i)
{
    return json_string_value(
        json_object_get(json_object_get(json_array_get(m->outputs, i), "data"), "text/plain"));
}

static bool output_omitted(const struct pbx_meta *m, size_t i)
{
    return json_is_true(
        json_object_get(json_object_get(json_array_get(m->outputs, i), "metadata"), "omitted"));
}

START_TEST(test_outputs_kept_in_order)
{
    struct pbx_meta m;
    json_t *o;
    json_t *data;

    parse("{\"check\":\"ok\"}\n"
          "{\"output\": {\"type\": \"display\", \"data\": {\"text/plain\": \"one\", "
          "\"text/html\": \"<b>1</b>\", \"image/png\": \"" PNG_B64 "\", \"image/svg+xml\": "
          "\"<svg/>\", \"application/json\": {\"a\": [1, 2]}, \"text/x-unknown\": \"dropped\"}, "
          "\"metadata\": {\"image/png\": {\"width\": 1, \"height\": 1}}}}\n"
          "{\"output\": {\"type\": \"result\", \"data\": {\"text/plain\": \"two\"}}}\n"
          "{\"done\":true,\"exit_code\":0,\"error\":null}\n",
          &m);
    ck_assert(m.done);
    ck_assert_uint_eq(json_array_size(m.outputs), 2);
    o = json_array_get(m.outputs, 0);
    data = json_object_get(o, "data");
    ck_assert_str_eq(json_string_value(json_object_get(o, "type")), "display");
    ck_assert_str_eq(output_text(&m, 0), "one");
    ck_assert_str_eq(json_string_value(json_object_get(data, "text/html")), "<b>1</b>");
    ck_assert_str_eq(json_string_value(json_object_get(data, "image/png")), PNG_B64);
    ck_assert_str_eq(json_string_value(json_object_get(data, "image/svg+xml")), "<svg/>");
    ck_assert_int_eq(json_integer_value(json_array_get(
                         json_object_get(json_object_get(data, "application/json"), "a"), 1)),
                     2);
    ck_assert_ptr_null(json_object_get(data, "text/x-unknown"));
    ck_assert_int_eq(json_integer_value(json_object_get(
                         json_object_get(json_object_get(o, "metadata"), "image/png"), "width")),
                     1);
    o = json_array_get(m.outputs, 1);
    ck_assert_str_eq(json_string_value(json_object_get(o, "type")), "result");
    ck_assert_str_eq(output_text(&m, 1), "two");
    ck_assert(json_is_object(json_object_get(o, "metadata")));
    ck_assert(m.outputs_bytes > 0);
    pbx__meta_release(&m);
    ck_assert_ptr_null(m.outputs);
    /* No output records: no outputs. */
    parse("{\"check\":\"ok\"}\n{\"done\":true,\"exit_code\":0,\"error\":null}\n", &m);
    ck_assert_ptr_null(m.outputs);
    ck_assert_uint_eq(m.outputs_bytes, 0);
    pbx__meta_release(&m);
}
END_TEST

START_TEST(test_bad_outputs_become_markers)
{
    static const char *const bad[] = {
        "{\"output\": 1}",
        "{\"output\": {\"type\": \"evil\", \"data\": {\"text/plain\": \"x\"}}}",
        "{\"output\": {\"type\": 7, \"data\": {\"text/plain\": \"x\"}}}",
        "{\"output\": {\"type\": \"display\", \"data\": [\"text/plain\"]}}",
        "{\"output\": {\"type\": \"display\", \"data\": {}}}",
        "{\"output\": {\"type\": \"display\", \"data\": {\"text/plain\": 5}}}",
        "{\"output\": {\"type\": \"display\", \"data\": {\"text/plain\": \"x\", \"text/html\": "
        "[1]}}}",
        "{\"output\": {\"type\": \"display\", \"data\": {\"text/plain\": \"x\"}, \"metadata\": "
        "[]}}",
        "{\"output\": {\"type\": \"display\", \"data\": {\"text/plain\": \"x\", \"image/png\": "
        "\"not base64!\"}}}",
        "{\"output\": {\"type\": \"display\", \"data\": {\"text/plain\": \"x\", \"image/png\": "
        "\"aGVsbG8gd29ybGQ=\"}}}", /* base64, but of no PNG */
        "{\"output\": {\"type\": \"display\", \"data\": {\"text/plain\": \"x\", \"image/png\": "
        "\"" PNG_B64 "\\n\"}}}", /* a newline in it */
        "{\"output\": {\"type\": \"display\", \"data\": {\"text/plain\": \"\xff\xfe\"}}}",
        "{\"output\": {\"type\": \"display\", \"data\": {\"text/plain\": \"\\ud800\"}}}",
        "{\"output\": {\"type\": \"display\", \"data\": {\"text/plain\": \"x\\u0000y\"}}}",
        "{\"output\": {\"type\": \"display\", \"data\": {\"text/plain\": \"x\", \"text/plain\": "
        "\"y\"}}}",
        "{\"output\": {\"type\": \"display\", \"data\": {\"text/plain\": \"x\"}",
        "{\"output\"",
    };
    char text[1024];
    struct pbx_meta m;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(text, sizeof(text),
                 "{\"check\":\"ok\"}\n%s\n{\"done\":true,\"exit_code\":0,\"error\":null}\n",
                 bad[i]);
        parse(text, &m);
        ck_assert_msg(m.done, "%s", bad[i]);
        ck_assert_msg(json_array_size(m.outputs) == 1, "%s", bad[i]);
        ck_assert_msg(output_omitted(&m, 0), "%s", bad[i]);
        ck_assert_msg(strncmp(output_text(&m, 0), "[output omitted: ", 17) == 0, "%s", bad[i]);
        ck_assert_uint_eq(m.outputs_bytes, 0);
        pbx__meta_release(&m);
    }
    /* Outputs never on the first line, never after a done record. */
    parse("{\"output\": {\"type\": \"display\", \"data\": {\"text/plain\": \"x\"}}}\n"
          "{\"done\":true,\"exit_code\":0,\"error\":null}\n"
          "{\"output\": {\"type\": \"display\", \"data\": {\"text/plain\": \"x\"}}}\n",
          &m);
    ck_assert_ptr_null(m.outputs);
    pbx__meta_release(&m);
}
END_TEST

/* `n` copies of `line` after a check record, then a done record with main()'s value `result`. */
static char *repeat(const char *line, size_t n, const char *result, size_t *len)
{
    size_t ll = strlen(line);
    size_t cap = 64 + n * (ll + 1) + strlen(result) + 128;
    char *text = malloc(cap);
    size_t pos = (size_t)snprintf(text, cap, "{\"check\":\"ok\"}\n");

    for (size_t i = 0; i < n; i++) {
        memcpy(text + pos, line, ll);
        pos += ll;
        text[pos++] = '\n';
    }
    pos += (size_t)snprintf(text + pos, cap - pos,
                            "{\"done\":true,\"exit_code\":0,\"error\":null,\"result\":\"%s\"}\n",
                            result);
    *len = pos;
    return text;
}

START_TEST(test_outputs_capped)
{
    const char *one = "{\"output\": {\"type\": \"display\", \"data\": {\"text/plain\": \"x\"}}}";
    struct pbx_outputs_max om;
    struct pbx_limits l;
    struct pbx_meta m;
    char *line;
    char *text;
    size_t len;

    /* Past the count: the first ones, and one marker that counts the rest. */
    text = repeat(one, PBX_LIMITS_OUTPUTS_MAX + 25, "1", &len);
    pbx__meta_parse(text, len, NULL, &m);
    free(text);
    ck_assert_uint_eq(json_array_size(m.outputs), PBX_LIMITS_OUTPUTS_MAX + 1);
    ck_assert_str_eq(output_text(&m, 0), "x");
    ck_assert(!output_omitted(&m, PBX_LIMITS_OUTPUTS_MAX - 1));
    ck_assert(output_omitted(&m, PBX_LIMITS_OUTPUTS_MAX));
    ck_assert_ptr_nonnull(strstr(output_text(&m, PBX_LIMITS_OUTPUTS_MAX), "25 more"));
    ck_assert_int_eq(json_integer_value(m.result), 1);
    pbx__meta_release(&m);

    /* One output over its cap: a marker, never parsed. */
    pbx_limits_default(&l);
    l.answer_bytes = (2u << 20) + (64u << 10); /* 64 KiB of room */
    pbx_limits_outputs_max(&l, &om);
    ck_assert_uint_eq(om.total, 64u << 10);
    ck_assert_uint_eq(om.each, 64u << 10);
    line = malloc(om.each + 128);
    len = (size_t)snprintf(line, om.each + 128,
                           "{\"output\": {\"type\": \"display\", \"data\": {\"text/plain\": \"");
    memset(line + len, 'a', om.each);
    memcpy(line + len + om.each, "\"}}}", 5);
    text = repeat(line, 1, "1", &len);
    pbx__meta_parse(text, len, &l, &m);
    free(text);
    ck_assert_uint_eq(json_array_size(m.outputs), 1);
    ck_assert(output_omitted(&m, 0));
    ck_assert_ptr_nonnull(strstr(output_text(&m, 0), "over 65536 bytes"));
    ck_assert_uint_eq(m.outputs_bytes, 0);
    ck_assert_int_eq(json_integer_value(m.result), 1);
    pbx__meta_release(&m);

    /* Three of 30000 bytes in 64 KiB: the third is a marker, and main()'s value has the rest. */
    len = (size_t)snprintf(line, om.each + 128,
                           "{\"output\": {\"type\": \"display\", \"data\": {\"text/plain\": \"");
    memset(line + len, 'a', 30000 - len - 4);
    memcpy(line + 30000 - 4, "\"}}}", 5);
    text = repeat(line, 3, "[1, 2, 3, 4, 5, 6, 7, 8, 9]", &len);
    pbx__meta_parse(text, len, &l, &m);
    ck_assert_uint_eq(json_array_size(m.outputs), 3);
    ck_assert(!output_omitted(&m, 1));
    ck_assert(output_omitted(&m, 2));
    ck_assert_ptr_nonnull(strstr(output_text(&m, 2), "all outputs may carry"));
    ck_assert_uint_eq(m.outputs_bytes, 60000);
    ck_assert_uint_eq(json_array_size(m.result), 9);
    pbx__meta_release(&m);
    free(text);
    /* main()'s value over what the outputs left: not parsed. */
    {
        char big[8192];

        memset(big, '1', sizeof(big) - 1);
        big[sizeof(big) - 1] = '\0';
        text = repeat(line, 2, big, &len);
        pbx__meta_parse(text, len, &l, &m);
        ck_assert_uint_eq(json_array_size(m.outputs), 2);
        ck_assert(m.result_too_large);
        ck_assert_ptr_null(m.result);
        pbx__meta_release(&m);
        free(text);
    }
    free(line);
}
END_TEST

/* Each output's "at": the stdout and stderr bytes before it, [0, 0] when not two counts. */
START_TEST(test_outputs_at)
{
    static const char text[] =
        "{\"check\":\"ok\"}\n"
        "{\"output\":{\"type\":\"display\",\"data\":{\"text/plain\":\"a\"}},\"at\":[3,4]}\n"
        "{\"output\":{\"type\":\"display\",\"data\":{\"text/plain\":\"b\"}},\"at\":[-1,2]}\n"
        "{\"output\":{\"type\":\"display\",\"data\":{\"text/plain\":\"c\"}},\"at\":\"x\"}\n"
        "{\"output\":{\"type\":\"bogus\"},\"at\":[7,8]}\n"
        "{\"output\":{\"type\":\"display\",\"data\":{\"text/plain\":\"d\"}}}\n";
    struct pbx_meta m;
    struct pbx_meta live;
    const long want[][2] = {{3, 4}, {0, 0}, {0, 0}, {7, 8}, {0, 0}};

    parse(text, &m);
    ck_assert_int_eq((int)json_array_size(m.outputs), 5);
    ck_assert_int_eq((int)json_array_size(m.outputs_at), 5);
    for (size_t i = 0; i < 5; i++) {
        json_t *at = json_array_get(m.outputs_at, i);

        ck_assert_int_eq(json_integer_value(json_array_get(at, 0)), want[i][0]);
        ck_assert_int_eq(json_integer_value(json_array_get(at, 1)), want[i][1]);
    }
    /* Fed a byte at a time, as records arrive, the parse is the same. */
    pbx__meta_begin(&live, NULL);
    for (size_t n = 1; n <= sizeof(text) - 1; n++)
        pbx__meta_feed(&live, text, n);
    pbx__meta_end(&live);
    ck_assert(json_equal(live.outputs, m.outputs));
    ck_assert(json_equal(live.outputs_at, m.outputs_at));
    pbx__meta_release(&live);
    pbx__meta_release(&m);
}
END_TEST

static Suite *meta_suite(void)
{
    Suite *s = suite_create("meta");
    TCase *tc = tcase_create("records");

    tcase_add_test(tc, test_ok_and_done);
    tcase_add_test(tc, test_done_with_error_and_result);
    tcase_add_test(tc, test_python_spelling);
    tcase_add_test(tc, test_rejected_first);
    tcase_add_test(tc, test_forged_rejection_ignored);
    tcase_add_test(tc, test_done_first_ignored);
    tcase_add_test(tc, test_result_invalid);
    tcase_add_test(tc, test_result_not_string);
    tcase_add_test(tc, test_unterminated_last_line);
    tcase_add_test(tc, test_empty_input);
    tcase_add_test(tc, test_garbage_lines);
    tcase_add_test(tc, test_error_shapes);
    tcase_add_test(tc, test_duplicate_keys);
    tcase_add_test(tc, test_last_done_wins);
    tcase_add_test(tc, test_exit_codes);
    tcase_add_test(tc, test_huge_numbers);
    tcase_add_test(tc, test_deep_nesting);
    tcase_add_test(tc, test_result_over_the_limits_is_not_parsed);
    tcase_add_test(tc, test_many_lines);
    tcase_add_test(tc, test_outputs_kept_in_order);
    tcase_add_test(tc, test_bad_outputs_become_markers);
    tcase_add_test(tc, test_outputs_capped);
    tcase_add_test(tc, test_outputs_at);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(meta_suite());
    int failed;

    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
