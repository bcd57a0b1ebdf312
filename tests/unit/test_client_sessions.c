/*
 * libpybox's sessions, streaming and rich outputs through its public API, in
 * local mode and against a real `pybox serve`: each test does the same to a
 * local session (or run) and a remote one, and the two must give the same
 * results (their result objects equal but for timings and the session's id,
 * the same events, the same codes and error types).
 *
 * Env: PYBOX (the binary; ctest sets it) serves, PYBOX_BIN is what local mode
 * execs as the zygote.  main() starts one server for the whole run.
 */
#include <check.h>
#include <dirent.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "pybox/pybox.h"
#include "client_server.h"
#include "session_procs.h"
#include "common/banned.h"

static struct server main_server;

/* The two modes, in the order each test runs them. */
#define NMODES 2
static const char *mode_name[NMODES] = {"local", "remote"};

/* ---- helpers ---- */

static struct pybox_client *client_of(int mode)
{
    struct pybox_config cfg;
    struct pybox_client *c = NULL;
    struct pybox_error *err = NULL;

    pybox_config_init(&cfg);
    cfg.server = mode == 1 ? main_server.url : NULL;
    ck_assert_msg(pybox_client_new(&cfg, &c, &err) == PYBOX_OK, "client: %s",
                  pybox_error_message(err));
    return c;
}

static struct pybox_session *open_with(struct pybox_client *c,
                                       const struct pybox_session_options *opts)
{
    struct pybox_session *s = NULL;
    struct pybox_error *err = NULL;
    enum pybox_code rc = pybox_session_open(c, opts, &s, &err);

    ck_assert_msg(rc == PYBOX_OK, "%s session: %s: %s",
                  pybox_client_is_remote(c) ? "remote" : "local", pybox_code_name(rc),
                  pybox_error_message(err));
    ck_assert_ptr_nonnull(s);
    ck_assert_msg(strncmp(pybox_session_id(s), "ses_", 4) == 0 && strlen(pybox_session_id(s)) == 36,
                  "id %s", pybox_session_id(s));
    return s;
}

static void close_ok(struct pybox_session *s)
{
    struct pybox_error *err = NULL;
    enum pybox_code rc = pybox_session_close(s, &err);

    ck_assert_msg(rc == PYBOX_OK, "close: %s: %s", pybox_code_name(rc), pybox_error_message(err));
}

/* What the events of one run were. */
struct events {
    char out[4096];      /* the stdout events put together */
    char err[4096];      /* the stderr ones */
    json_t *outputs;     /* the display and result events' objects, in order */
    double first_out_ms; /* when the first stdout event came */
    double last_out_ms;  /* and the last */
    int nout;            /* how many stdout events */
    bool split_char;     /* an event began with a UTF-8 continuation byte */
};

static void on_event(enum pybox_event_kind kind, const char *data, size_t len, void *arg)
{
    struct events *ev = arg;

    ck_assert_uint_eq(strlen(data), len); /* NUL-terminated (no NUL in these tests' output) */
    if (kind == PYBOX_EVENT_STDOUT || kind == PYBOX_EVENT_STDERR) {
        char *to = kind == PYBOX_EVENT_STDOUT ? ev->out : ev->err;

        ck_assert_uint_gt(len, 0);
        if (((unsigned char)data[0] & 0xc0) == 0x80)
            ev->split_char = true;
        ck_assert_uint_lt(strlen(to) + len, sizeof(ev->out));
        strncat(to, data, len);
        if (kind == PYBOX_EVENT_STDOUT) {
            ev->last_out_ms = now_ms();
            if (ev->nout++ == 0)
                ev->first_out_ms = ev->last_out_ms;
        }
    } else {
        json_t *o = json_loadb(data, len, 0, NULL);
        const char *type = json_string_value(json_object_get(o, "type"));

        ck_assert_ptr_nonnull(o);
        ck_assert(kind == PYBOX_EVENT_DISPLAY || kind == PYBOX_EVENT_RESULT);
        ck_assert_str_eq(type, kind == PYBOX_EVENT_RESULT ? "result" : "display");
        json_array_append_new(ev->outputs, o);
    }
}

/* A request of `code` whose events go to `ev` (when not NULL). */
static struct pybox_exec *exec_of(const char *code, struct events *ev)
{
    struct pybox_exec *e = pybox_exec_new();

    ck_assert_ptr_nonnull(e);
    ck_assert_int_eq(pybox_exec_set_code(e, code, (size_t)-1), PYBOX_OK);
    if (ev != NULL) {
        memset(ev, 0, sizeof(*ev));
        ev->outputs = json_array();
        ck_assert_int_eq(pybox_exec_set_event_callback(e, on_event, ev), PYBOX_OK);
    }
    return e;
}

/* The events put together are the result: its stdout, stderr and outputs. */
static void check_events_are_result(const struct events *ev, const struct pybox_result *r)
{
    json_t *outputs = json_loads(pybox_result_outputs_json(r), 0, NULL);

    ck_assert_str_eq(ev->out, pybox_result_stdout(r, NULL));
    ck_assert_str_eq(ev->err, pybox_result_stderr(r, NULL));
    ck_assert_msg(json_equal(outputs, ev->outputs), "events %s, result %s",
                  json_dumps(ev->outputs, JSON_COMPACT), pybox_result_outputs_json(r));
    ck_assert(!ev->split_char);
    json_decref(outputs);
}

/*
 * The result object without what differs from run to run and mode to mode:
 * timings, the session's id (a new reference).
 */
static json_t *comparable(const struct pybox_result *r)
{
    json_t *o = json_loads(pybox_result_to_json(r), 0, NULL);

    ck_assert_ptr_nonnull(o);
    json_object_del(o, "duration_ms");
    json_object_del(o, "cpu_ms");
    json_object_del(o, "max_rss_kb");
    json_object_del(json_object_get(o, "session"), "id");
    return o;
}

static void check_same(const struct pybox_result *a, const struct pybox_result *b, const char *what)
{
    json_t *ja = comparable(a);
    json_t *jb = comparable(b);
    char *ta = json_dumps(ja, JSON_COMPACT | JSON_SORT_KEYS);
    char *tb = json_dumps(jb, JSON_COMPACT | JSON_SORT_KEYS);

    ck_assert_msg(json_equal(ja, jb), "%s:\n local  %s\n remote %s", what, ta, tb);
    free(ta);
    free(tb);
    json_decref(ja);
    json_decref(jb);
}

static struct pybox_result *run_in(struct pybox_session *s, const struct pybox_exec *e)
{
    struct pybox_result *r = NULL;
    struct pybox_error *err = NULL;
    enum pybox_code rc = pybox_session_run(s, e, &r, &err);

    ck_assert_msg(rc == PYBOX_OK, "session run: %s: %s", pybox_code_name(rc),
                  pybox_error_message(err));
    return r;
}

/* Expect `rc` to be `want` with error type `type` (NULL: none); frees err. */
static void check_fails(enum pybox_code rc, struct pybox_error *err, enum pybox_code want,
                        const char *type, const char *mode)
{
    ck_assert_msg(rc == want, "%s: got %s (%s), want %s", mode, pybox_code_name(rc),
                  err ? pybox_error_message(err) : "", pybox_code_name(want));
    ck_assert_ptr_nonnull(err);
    ck_assert_int_eq(pybox_error_code(err), want);
    if (type != NULL)
        ck_assert_msg(pybox_error_type(err) != NULL && strcmp(pybox_error_type(err), type) == 0,
                      "%s: type %s, want %s", mode, pybox_error_type(err), type);
    pybox_error_free(err);
}

/* ---- one table of calls, in a session of each mode ---- */

/* A PNG of 1x1 pixel, in base64, as a _repr_png_ returns its bytes. */
#define PNG_B64                                                                                    \
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJg" \
    "gg=="

struct call_case {
    const char *code;         /* the call */
    const char *stdin_text;   /* its stdin, or NULL */
    const char *in_name;      /* an input file, or NULL */
    const char *in_data;      /* its contents */
    const char *ret;          /* a file asked back, or NULL */
    bool main_mode;           /* main() */
    double timeout;           /* its timeout, 0: the session's */
    enum pybox_status status; /* what it does */
    uint64_t count;           /* execution_count after it */
    const char *result_text;  /* the text/plain of its "result" output, NULL: none */
};

static const struct call_case calls[] = {
    {.code = "x = 41", .count = 1},
    {.code = "x += 1\nprint('hi')\nx", .count = 2, .result_text = "42"},
    {.code = "x * 2;", .count = 3},
    {.code = "_ + 1", .count = 4, .result_text = "43"},
    {.code = "display('abc')\nraise ValueError('v')", .status = PYBOX_STATUS_ERROR, .count = 5},
    {.code = "import sys\nprint('to stderr', file=sys.stderr)\nsys.stdin.read().upper()",
     .stdin_text = "in\n",
     .count = 6,
     .result_text = "'IN\\n'"},
    {.code = "open('b.txt', 'w').write(open('a.txt').read() * 2)",
     .in_name = "a.txt",
     .in_data = "ab",
     .ret = "b.txt",
     .count = 7,
     .result_text = "4"},
    {.code = "print(open('a.txt').read())", .count = 8},
    {.code = "class H:\n    def _repr_html_(self):\n        return '<b>x</b>'\n"
             "    def __repr__(self):\n        return 'H()'\nH()",
     .count = 9,
     .result_text = "H()"},
    {.code = "import base64\nclass P:\n    def _repr_png_(self):\n"
             "        return base64.b64decode('" PNG_B64 "')\n"
             "    def __repr__(self):\n        return 'P()'\ndisplay(P())",
     .count = 10},
    {.code = "def (", .status = PYBOX_STATUS_REJECTED, .count = 11}, /* refused calls count */
    {.code = "import socket", .status = PYBOX_STATUS_REJECTED, .count = 12},
    {.code = "def main():\n    return {'x': x}", .main_mode = true, .count = 13},
    {.code = "import time\ntime.sleep(30)",
     .timeout = 1,
     .status = PYBOX_STATUS_TIMEOUT,
     .count = 14},
    {.code = "print(x)", .count = 15},
};

static struct pybox_exec *exec_of_call(const struct call_case *k, struct events *ev)
{
    struct pybox_exec *e = exec_of(k->code, ev);

    if (k->stdin_text != NULL)
        ck_assert_int_eq(pybox_exec_set_stdin(e, k->stdin_text, strlen(k->stdin_text)), PYBOX_OK);
    if (k->in_name != NULL)
        ck_assert_int_eq(pybox_exec_add_file(e, k->in_name, k->in_data, strlen(k->in_data)),
                         PYBOX_OK);
    if (k->ret != NULL)
        ck_assert_int_eq(pybox_exec_add_return(e, k->ret), PYBOX_OK);
    ck_assert_int_eq(pybox_exec_set_main(e, k->main_mode), PYBOX_OK);
    ck_assert_int_eq(pybox_exec_set_timeout(e, k->timeout), PYBOX_OK);
    return e;
}

/* The text/plain of the result's "result" output, or NULL. */
static const char *result_text(const struct pybox_result *r)
{
    for (size_t i = 0; i < pybox_result_output_count(r); i++) {
        if (strcmp(pybox_result_output_type(r, i), "result") == 0)
            return pybox_result_output_text(r, i);
    }
    return NULL;
}

START_TEST(test_calls_local_equal_remote)
{
    struct pybox_client *c[NMODES];
    struct pybox_session *s[NMODES];

    for (int m = 0; m < NMODES; m++) {
        c[m] = client_of(m);
        s[m] = open_with(c[m], NULL);
    }
    for (size_t i = 0; i < sizeof(calls) / sizeof(calls[0]); i++) {
        const struct call_case *k = &calls[i];
        struct pybox_result *r[NMODES];
        struct events ev[NMODES];
        char what[64];

        for (int m = 0; m < NMODES; m++) {
            struct pybox_exec *e = exec_of_call(k, &ev[m]);

            r[m] = run_in(s[m], e);
            pybox_exec_free(e);
            ck_assert_msg(pybox_result_status(r[m]) == k->status, "call %zu, %s: %s", i,
                          mode_name[m], pybox_result_to_json(r[m]));
            ck_assert_uint_eq(pybox_result_execution_count(r[m]), k->count);
            ck_assert(pybox_result_state_preserved(r[m]));
            ck_assert_msg(k->result_text == NULL
                              ? result_text(r[m]) == NULL
                              : result_text(r[m]) != NULL &&
                                    strcmp(result_text(r[m]), k->result_text) == 0,
                          "call %zu, %s: result %s", i, mode_name[m], result_text(r[m]));
            check_events_are_result(&ev[m], r[m]);
            ck_assert_ptr_null(pybox_session_dead_reason(s[m]));
        }
        snprintf(what, sizeof(what), "call %zu", i);
        check_same(r[0], r[1], what);
        /* And the events agree (the text may come in other pieces, not otherwise). */
        ck_assert_str_eq(ev[0].out, ev[1].out);
        ck_assert_str_eq(ev[0].err, ev[1].err);
        ck_assert(json_equal(ev[0].outputs, ev[1].outputs));
        for (int m = 0; m < NMODES; m++) {
            json_decref(ev[m].outputs);
            pybox_result_free(r[m]);
        }
    }
    for (int m = 0; m < NMODES; m++) {
        close_ok(s[m]);
        pybox_client_free(c[m]);
    }
}
END_TEST

/* The details the table cannot check: a traceback's cell, the outputs' accessors. */
START_TEST(test_outputs_and_traceback)
{
    for (int m = 0; m < NMODES; m++) {
        struct pybox_client *c = client_of(m);
        struct pybox_session *s = open_with(c, NULL);
        struct pybox_exec *e = exec_of(calls[9].code, NULL);
        struct pybox_result *r = run_in(s, e);
        const void *data;
        size_t len = 99;

        ck_assert_uint_eq(pybox_result_output_count(r), 1);
        ck_assert_str_eq(pybox_result_output_type(r, 0), "display");
        ck_assert_uint_ge(pybox_result_output_mime_count(r, 0), 2);
        ck_assert_str_eq(pybox_result_output_mime(r, 0, 0), "text/plain");
        ck_assert_ptr_null(pybox_result_output_mime(r, 0, 9));
        data = pybox_result_output_data(r, 0, "image/png", &len);
        ck_assert_ptr_nonnull(data);
        /* The PNG's bytes, decoded: as the code's _repr_png_ returned them. */
        ck_assert_uint_eq(len, 70);
        ck_assert(memcmp(data, "\x89PNG\r\n\x1a\n", 8) == 0);
        ck_assert_ptr_null(pybox_result_output_data(r, 0, "text/html", &len));
        ck_assert_uint_eq(len, 0);
        ck_assert_ptr_null(pybox_result_output_data(r, 5, "text/plain", NULL));
        ck_assert_str_eq(pybox_result_output_metadata(r, 0), "{}");
        ck_assert_str_eq(pybox_result_output_text(r, 0), "P()");
        ck_assert_ptr_nonnull(strstr(pybox_result_output_json(r, 0), "\"image/png\":\"iVBOR"));
        ck_assert_ptr_null(pybox_result_output_json(r, 1));
        ck_assert_ptr_null(pybox_result_output_type(r, 1));
        pybox_result_free(r);
        pybox_exec_free(e);

        e = exec_of("a = 1\n\n1 / 0", NULL);
        r = run_in(s, e);
        ck_assert_int_eq(pybox_result_status(r), PYBOX_STATUS_ERROR);
        ck_assert_str_eq(pybox_result_error_type(r), "ZeroDivisionError");
        ck_assert_ptr_nonnull(strstr(pybox_result_stderr(r, NULL), "File \"<cell 2>\", line 3"));
        ck_assert_str_eq(pybox_result_outputs_json(r), "[]");
        pybox_result_free(r);
        pybox_exec_free(e);
        close_ok(s);
        pybox_client_free(c);
    }
}
END_TEST

/* ---- files ---- */

static int by_text(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* A list's "PATH:SIZE " entries in name order (the engine lists them in directory order). */
static char *sorted_paths(json_t *list)
{
    char *items[16];
    char *out = calloc(1, 1024);
    size_t n = json_array_size(list);

    ck_assert_uint_le(n, 16);
    for (size_t i = 0; i < n; i++) {
        json_t *f = json_array_get(list, i);

        ck_assert_int_gt(asprintf(&items[i], "%s:%lld ",
                                  json_string_value(json_object_get(f, "path")),
                                  (long long)json_integer_value(json_object_get(f, "size"))),
                         0);
    }
    qsort(items, n, sizeof(items[0]), by_text);
    for (size_t i = 0; i < n; i++) {
        strncat(out, items[i], 1023 - strlen(out));
        free(items[i]);
    }
    return out;
}

START_TEST(test_files_both_modes)
{
    char *lists[NMODES];

    for (int m = 0; m < NMODES; m++) {
        struct pybox_client *c = client_of(m);
        struct pybox_session *s = open_with(c, NULL);
        static const unsigned char bin[] = {0, 1, 2, 0xff, '\n', 0};
        struct pybox_error *err = NULL;
        struct pybox_exec *e;
        struct pybox_result *r;
        void *data = NULL;
        size_t size = 0;
        char *list = NULL;
        json_t *l;
        size_t i;
        json_t *f;
        enum pybox_code rc;
        char *big;

        ck_assert_int_eq(pybox_session_put_file(s, "d/e/bin.dat", bin, sizeof(bin), &err),
                         PYBOX_OK);
        ck_assert_int_eq(pybox_session_put_file(s, "top.txt", "top", 3, &err), PYBOX_OK);
        ck_assert_int_eq(pybox_session_put_file(s, "top.txt", "again", 5, &err), PYBOX_OK);
        ck_assert_int_eq(pybox_session_put_file(s, "empty", NULL, 0, &err), PYBOX_OK);
        ck_assert_int_eq(pybox_session_get_file(s, "d/e/bin.dat", &data, &size, &err), PYBOX_OK);
        ck_assert_uint_eq(size, sizeof(bin));
        ck_assert(memcmp(data, bin, size) == 0);
        pybox_free(data);
        ck_assert_int_eq(pybox_session_get_file(s, "empty", &data, &size, &err), PYBOX_OK);
        ck_assert_uint_eq(size, 0);
        ck_assert_str_eq(data, "");
        pybox_free(data);
        /* The code sees them, and what it writes is a file too. */
        e = exec_of("print(open('top.txt').read(), len(open('d/e/bin.dat', 'rb').read()))\n"
                    "open('made.txt', 'w').write('by code')",
                    NULL);
        r = run_in(s, e);
        ck_assert_str_eq(pybox_result_stdout(r, NULL), "again 6\n");
        pybox_result_free(r);
        pybox_exec_free(e);
        ck_assert_int_eq(pybox_session_get_file(s, "made.txt", &data, &size, &err), PYBOX_OK);
        ck_assert_str_eq(data, "by code");
        pybox_free(data);
        ck_assert_int_eq(pybox_session_delete_file(s, "made.txt", &err), PYBOX_OK);
        ck_assert_int_eq(pybox_session_list_files(s, &list, &err), PYBOX_OK);
        l = json_loads(list, 0, NULL);
        ck_assert_msg(json_is_array(l), "%s", list);
        json_array_foreach(l, i, f)
        {
            ck_assert(json_is_string(json_object_get(f, "mtime")));
            json_object_del(f, "mtime"); /* differs between the two sessions */
        }
        lists[m] = sorted_paths(l);
        json_decref(l);
        pybox_free(list);

        /* Refusals, named alike in both modes. */
        rc = pybox_session_get_file(s, "made.txt", &data, &size, &err);
        check_fails(rc, err, PYBOX_E_NOT_FOUND, "NotFound", mode_name[m]);
        ck_assert_ptr_null(data);
        err = NULL;
        rc = pybox_session_delete_file(s, "nothing", &err);
        check_fails(rc, err, PYBOX_E_NOT_FOUND, "NotFound", mode_name[m]);
        err = NULL;
        rc = pybox_session_get_file(s, "../etc/passwd", &data, &size, &err);
        check_fails(rc, err, PYBOX_E_INVALID, "ValidationError", mode_name[m]);
        err = NULL;
        rc = pybox_session_put_file(s, "a/./b", "x", 1, &err);
        check_fails(rc, err, PYBOX_E_INVALID, "ValidationError", mode_name[m]);
        err = NULL;
        rc = pybox_session_put_file(s, "", "x", 1, &err);
        check_fails(rc, err, PYBOX_E_INVALID, "ValidationError", mode_name[m]);
        err = NULL;
        rc = pybox_session_put_file(s, "top.txt/x", "x", 1, &err);
        check_fails(rc, err, PYBOX_E_INVALID, "ValidationError", mode_name[m]);
        err = NULL;
        big = calloc(1, (8u << 20) + 1);
        rc = pybox_session_put_file(s, "big.bin", big, (8u << 20) + 1, &err);
        free(big);
        check_fails(rc, err, PYBOX_E_TOO_LARGE, "PayloadTooLarge", mode_name[m]);
        err = NULL;
        /* The library's own checks. */
        ck_assert_int_eq(pybox_session_put_file(s, NULL, "x", 1, NULL), PYBOX_E_INVALID);
        ck_assert_int_eq(pybox_session_put_file(s, "x", NULL, 1, NULL), PYBOX_E_INVALID);
        ck_assert_int_eq(pybox_session_get_file(s, "x", NULL, NULL, NULL), PYBOX_E_INVALID);
        ck_assert_int_eq(pybox_session_list_files(s, NULL, NULL), PYBOX_E_INVALID);
        close_ok(s);
        pybox_client_free(c);
    }
    ck_assert_str_eq(lists[0], lists[1]);
    ck_assert_str_eq(lists[0], "d/e/bin.dat:6 empty:0 top.txt:5 ");
    free(lists[0]);
    free(lists[1]);
}
END_TEST

/* ---- interrupt, restart, busy, death ---- */

struct interrupter {
    struct pybox_session *session; /* to interrupt */
    bool sent;                     /* a running call was interrupted */
    pthread_t thread;              /* the thread doing it */
};

static void *interrupt_main(void *arg)
{
    struct interrupter *it = arg;
    double until = now_ms() + 20000;

    /* Until a call runs to be interrupted: the first tries may come before it started. */
    while (!it->sent && now_ms() < until) {
        struct timespec ts = {0, 300 * 1000 * 1000};

        nanosleep(&ts, NULL);
        ck_assert_int_eq(pybox_session_interrupt(it->session, &it->sent, NULL), PYBOX_OK);
    }
    return NULL;
}

START_TEST(test_interrupt_keeps_state)
{
    for (int m = 0; m < NMODES; m++) {
        struct pybox_client *c = client_of(m);
        struct pybox_session *s = open_with(c, NULL);
        struct interrupter it = {.session = s};
        struct pybox_exec *e = exec_of("import time\nz = 5\ntime.sleep(30)", NULL);
        struct pybox_result *r;
        bool sent = true;
        double t0;

        /* No call runs: nothing to interrupt. */
        ck_assert_int_eq(pybox_session_interrupt(s, &sent, NULL), PYBOX_OK);
        ck_assert(!sent);
        ck_assert_int_eq(pthread_create(&it.thread, NULL, interrupt_main, &it), 0);
        t0 = now_ms();
        r = run_in(s, e);
        pthread_join(it.thread, NULL);
        ck_assert_msg(it.sent, "%s: never interrupted", mode_name[m]);
        ck_assert_msg(now_ms() - t0 < 15000, "%s: the call took %.0f ms", mode_name[m],
                      now_ms() - t0);
        ck_assert_int_eq(pybox_result_status(r), PYBOX_STATUS_ERROR);
        ck_assert_str_eq(pybox_result_error_type(r), "KeyboardInterrupt");
        ck_assert(pybox_result_state_preserved(r));
        pybox_result_free(r);
        pybox_exec_free(e);
        e = exec_of("print(z)", NULL);
        r = run_in(s, e);
        ck_assert_str_eq(pybox_result_stdout(r, NULL), "5\n");
        pybox_result_free(r);
        pybox_exec_free(e);
        close_ok(s);
        pybox_client_free(c);
    }
}
END_TEST

START_TEST(test_restart_keeps_files)
{
    for (int m = 0; m < NMODES; m++) {
        struct pybox_client *c = client_of(m);
        struct pybox_session *s = open_with(c, NULL);
        struct pybox_exec *e = exec_of("gone = 1\nopen('kept.txt', 'w').write('k')", NULL);
        struct pybox_error *err = NULL;
        struct pybox_result *r = run_in(s, e);

        pybox_result_free(r);
        pybox_exec_free(e);
        ck_assert_int_eq(pybox_session_restart(s, &err), PYBOX_OK);
        e = exec_of("print('gone' in globals(), open('kept.txt').read())", NULL);
        r = run_in(s, e);
        ck_assert_str_eq(pybox_result_stdout(r, NULL), "False k\n");
        ck_assert_uint_eq(pybox_result_execution_count(r), 1);
        pybox_result_free(r);
        pybox_exec_free(e);
        close_ok(s);
        pybox_client_free(c);
    }
}
END_TEST

struct sleeper {
    struct pybox_session *session; /* where */
    enum pybox_code rc;            /* its run */
    pthread_t thread;              /* running it */
};

static void *sleeper_main(void *arg)
{
    struct sleeper *sl = arg;
    struct pybox_exec *e = exec_of("import time\ntime.sleep(3)", NULL);
    struct pybox_result *r = NULL;

    sl->rc = pybox_session_run(sl->session, e, &r, NULL);
    pybox_result_free(r);
    pybox_exec_free(e);
    return NULL;
}

START_TEST(test_one_call_at_a_time)
{
    for (int m = 0; m < NMODES; m++) {
        struct pybox_client *c = client_of(m);
        struct pybox_session *s = open_with(c, NULL);
        struct sleeper sl = {.session = s};
        struct pybox_exec *e = exec_of("print(1)", NULL);
        struct pybox_result *r = NULL;
        struct pybox_error *err = NULL;
        struct timespec ts = {1, 0};
        enum pybox_code rc;

        ck_assert_int_eq(pthread_create(&sl.thread, NULL, sleeper_main, &sl), 0);
        nanosleep(&ts, NULL);
        rc = pybox_session_run(s, e, &r, &err);
        ck_assert_ptr_null(r);
        ck_assert_uint_eq(pybox_error_retry_after(err), 1);
        check_fails(rc, err, PYBOX_E_BUSY, "SessionBusy", mode_name[m]);
        err = NULL;
        rc = pybox_session_put_file(s, "f", "x", 1, &err);
        check_fails(rc, err, PYBOX_E_BUSY, "SessionBusy", mode_name[m]);
        pthread_join(sl.thread, NULL);
        ck_assert_int_eq(sl.rc, PYBOX_OK);
        r = run_in(s, e);
        ck_assert_str_eq(pybox_result_stdout(r, NULL), "1\n");
        pybox_result_free(r);
        pybox_exec_free(e);
        close_ok(s);
        pybox_client_free(c);
    }
}
END_TEST

START_TEST(test_swallowed_interrupt_ends_session)
{
    struct pybox_result *r[NMODES];

    for (int m = 0; m < NMODES; m++) {
        struct pybox_client *c = client_of(m);
        struct pybox_session *s = open_with(c, NULL);
        struct pybox_exec *e =
            exec_of("import time\nwhile True:\n    try:\n        time.sleep(10)\n"
                    "    except KeyboardInterrupt:\n        pass\n",
                    NULL);
        struct pybox_result *again = NULL;
        struct pybox_error *err = NULL;
        enum pybox_code rc;
        void *data = NULL;

        ck_assert_int_eq(pybox_exec_set_timeout(e, 1), PYBOX_OK);
        r[m] = run_in(s, e);
        ck_assert_int_eq(pybox_result_status(r[m]), PYBOX_STATUS_TIMEOUT);
        ck_assert(!pybox_result_state_preserved(r[m]));
        ck_assert_str_eq(pybox_session_dead_reason(s), "timeout");
        pybox_exec_free(e);
        e = exec_of("print(1)", NULL);
        rc = pybox_session_run(s, e, &again, &err);
        ck_assert_ptr_null(again);
        ck_assert_ptr_nonnull(strstr(pybox_error_message(err), "timeout"));
        check_fails(rc, err, PYBOX_E_GONE, "SessionDead", mode_name[m]);
        err = NULL;
        rc = pybox_session_get_file(s, "x", &data, NULL, &err);
        check_fails(rc, err, PYBOX_E_GONE, "SessionDead", mode_name[m]);
        err = NULL;
        rc = pybox_session_restart(s, &err);
        check_fails(rc, err, PYBOX_E_GONE, "SessionDead", mode_name[m]);
        pybox_exec_free(e);
        /* Closing a session that ended is fine. */
        close_ok(s);
        pybox_client_free(c);
    }
    check_same(r[0], r[1], "the killed call");
    pybox_result_free(r[0]);
    pybox_result_free(r[1]);
}
END_TEST

START_TEST(test_idle_ttl_ends_session)
{
    for (int m = 0; m < NMODES; m++) {
        struct pybox_client *c = client_of(m);
        struct pybox_session_options o;
        struct pybox_session *s;
        struct pybox_exec *e = exec_of("print(1)", NULL);
        struct pybox_result *r = NULL;
        struct pybox_error *err = NULL;
        struct timespec ts = {2, 500 * 1000 * 1000};
        enum pybox_code rc;

        pybox_session_options_init(&o);
        o.idle_ttl_s = 1;
        s = open_with(c, &o);
        r = run_in(s, e);
        pybox_result_free(r);
        r = NULL;
        nanosleep(&ts, NULL);
        rc = pybox_session_run(s, e, &r, &err);
        check_fails(rc, err, PYBOX_E_GONE, "SessionDead", mode_name[m]);
        ck_assert_str_eq(pybox_session_dead_reason(s), "idle_timeout");
        pybox_exec_free(e);
        close_ok(s);
        pybox_client_free(c);
    }
}
END_TEST

/* ---- the reaper: idle time and lifetime end a session between calls ---- */

/* A marker file in the session's /work, and the pids of its cell and interpreter (2). */
static int mark_session(struct pybox_session *s, char *marker, size_t len, pid_t *pids)
{
    char code[160];
    struct pybox_exec *e;
    int n;

    snprintf(marker, len, "marker-%s", pybox_session_id(s));
    snprintf(code, sizeof(code), "open('%s', 'w').close()", marker);
    e = exec_of(code, NULL);
    pybox_result_free(run_in(s, e));
    pybox_exec_free(e);
    n = find_in_session("pybox-cell", marker, pids, 4);
    ck_assert_msg(n == 2, "the session's cell and interpreter: %d found", n);
    return n;
}

/* The reason the session is known to have ended, polled for at most `ms` (NULL if none came). */
static const char *reason_within(struct pybox_session *s, double ms)
{
    double until = now_ms() + ms;

    while (pybox_session_dead_reason(s) == NULL && now_ms() < until) {
        struct timespec ts = {0, 20 * 1000 * 1000};

        nanosleep(&ts, NULL);
    }
    return pybox_session_dead_reason(s);
}

/* A call now fails with SessionDead, and the session says `why`. */
static void check_dead(struct pybox_session *s, const char *why, const char *mode)
{
    struct pybox_exec *e = exec_of("print(1)", NULL);
    struct pybox_result *r = NULL;
    struct pybox_error *err = NULL;
    enum pybox_code rc = pybox_session_run(s, e, &r, &err);

    ck_assert_ptr_null(r);
    ck_assert_msg(err != NULL && strstr(pybox_error_message(err), why) != NULL, "%s: %s", mode,
                  err ? pybox_error_message(err) : "");
    check_fails(rc, err, PYBOX_E_GONE, "SessionDead", mode);
    ck_assert_str_eq(pybox_session_dead_reason(s), why);
    err = NULL;
    rc = pybox_session_list_files(s, &(char *){NULL}, &err);
    check_fails(rc, err, PYBOX_E_GONE, "SessionDead", mode);
    pybox_exec_free(e);
}

/*
 * Idle time: nothing calls the session, and yet its cell is gone soon after
 * its idle time ran out (the local reaper, as the server's); a call then
 * finds it ended as `idle_timeout`.  A call longer than the idle time is
 * not cut: the idle time runs from a call's end.
 */
START_TEST(test_reaper_ends_idle_session)
{
    for (int m = 0; m < NMODES; m++) {
        struct pybox_client *c = client_of(m);
        struct pybox_session_options o;
        struct pybox_session *s;
        struct pybox_exec *e;
        struct pybox_result *r;
        char marker[64];
        pid_t pids[4];
        int n;

        pybox_session_options_init(&o);
        o.idle_ttl_s = 1;
        o.max_lifetime_s = 600;
        s = open_with(c, &o);
        /* Longer than the idle time: it runs to its end, and the session lives on. */
        e = exec_of("import time\ntime.sleep(2)\nx = 7", NULL);
        r = run_in(s, e);
        ck_assert_int_eq(pybox_result_status(r), PYBOX_STATUS_OK);
        ck_assert(pybox_result_state_preserved(r));
        pybox_result_free(r);
        pybox_exec_free(e);
        e = exec_of("x", NULL);
        r = run_in(s, e);
        ck_assert_str_eq(result_text(r), "7");
        pybox_result_free(r);
        pybox_exec_free(e);
        n = mark_session(s, marker, sizeof(marker), pids);
        /* Then no call: the reaper frees everything of it, and says why. */
        ck_assert_msg(all_gone(pids, n, 15000), "%s: the idle session's cell is still there",
                      mode_name[m]);
        if (m == 0)
            ck_assert_str_eq(reason_within(s, 0), "idle_timeout"); /* known before any call */
        check_dead(s, "idle_timeout", mode_name[m]);
        close_ok(s);
        pybox_client_free(c);
    }
}
END_TEST

/*
 * Lifetime: a call that runs past it finishes (its result says the session
 * is dead, `max_lifetime`, alike in both modes), then the cell goes at once;
 * a session left alone goes at its lifetime too.
 */
START_TEST(test_reaper_ends_at_lifetime)
{
    struct pybox_result *r[NMODES];

    for (int m = 0; m < NMODES; m++) {
        struct pybox_client *c = client_of(m);
        struct pybox_session_options o;
        struct pybox_session *s;
        struct pybox_exec *e;
        char marker[64];
        pid_t pids[4];
        int n;

        pybox_session_options_init(&o);
        o.idle_ttl_s = 600;
        o.max_lifetime_s = 3;
        s = open_with(c, &o);
        n = mark_session(s, marker, sizeof(marker), pids);
        e = exec_of("import time\ntime.sleep(4)\nprint('done')", NULL);
        r[m] = run_in(s, e);
        pybox_exec_free(e);
        ck_assert_int_eq(pybox_result_status(r[m]), PYBOX_STATUS_OK);
        ck_assert_str_eq(pybox_result_stdout(r[m], NULL), "done\n");
        ck_assert_str_eq(pybox_session_dead_reason(s), "max_lifetime");
        ck_assert_msg(all_gone(pids, n, 10000), "%s: the cell outlived the session's lifetime",
                      mode_name[m]);
        check_dead(s, "max_lifetime", mode_name[m]);
        close_ok(s);

        /* Left alone: gone at its lifetime, the idle time notwithstanding. */
        o.max_lifetime_s = 2;
        s = open_with(c, &o);
        n = mark_session(s, marker, sizeof(marker), pids);
        ck_assert_msg(all_gone(pids, n, 15000), "%s: the cell outlived the session's lifetime",
                      mode_name[m]);
        if (m == 0)
            ck_assert_str_eq(reason_within(s, 0), "max_lifetime");
        check_dead(s, "max_lifetime", mode_name[m]);
        close_ok(s);
        pybox_client_free(c);
    }
    check_same(r[0], r[1], "a call past the lifetime");
    pybox_result_free(r[0]);
    pybox_result_free(r[1]);
}
END_TEST

/* One reaper, many sessions: each ends at its own time, the others untouched. */
START_TEST(test_reaper_many_sessions)
{
    struct pybox_client *c = client_of(0);
    struct pybox_session_options o;
    struct pybox_session *s[3];
    char marker[3][64];
    pid_t pids[3][4];
    int n[3];

    pybox_session_options_init(&o);
    o.idle_ttl_s = 1;
    s[0] = open_with(c, &o);
    o.idle_ttl_s = 4;
    s[1] = open_with(c, &o);
    s[2] = open_with(c, NULL); /* no idle time: never reaped */
    for (int i = 0; i < 3; i++)
        n[i] = mark_session(s[i], marker[i], sizeof(marker[i]), pids[i]);
    ck_assert(all_gone(pids[0], n[0], 10000));
    ck_assert_ptr_null(pybox_session_dead_reason(s[1]));
    ck_assert_int_eq(find_in_session("pybox-cell", marker[1], pids[1], 4), 2);
    ck_assert(all_gone(pids[1], n[1], 15000));
    ck_assert_str_eq(reason_within(s[1], 0), "idle_timeout");
    ck_assert_ptr_null(pybox_session_dead_reason(s[2]));
    ck_assert_int_eq(find_in_session("pybox-cell", marker[2], pids[2], 4), 2);
    for (int i = 0; i < 3; i++)
        close_ok(s[i]);
    ck_assert(all_gone(pids[2], n[2], 10000));
    /* A client whose reaper never saw a session, and one freed with its reaper asleep. */
    pybox_client_free(c);
    c = client_of(0);
    o.idle_ttl_s = 60;
    s[0] = open_with(c, &o);
    close_ok(s[0]);
    pybox_client_free(c);
}
END_TEST

/* ---- pybox_session_extend() ---- */

START_TEST(test_extend)
{
    for (int m = 0; m < NMODES; m++) {
        struct pybox_client *c = client_of(m);
        struct pybox_session_options o;
        struct pybox_session *s;
        struct pybox_error *err = NULL;
        struct pybox_exec *e;
        struct pybox_result *r;
        struct timespec ts = {3, 0};
        struct sleeper sl;
        enum pybox_code rc;
        char marker[64];
        pid_t pids[4];
        int n;

        pybox_session_options_init(&o);
        o.idle_ttl_s = 60;
        o.max_lifetime_s = 2;
        s = open_with(c, &o);
        e = exec_of("y = 5", NULL);
        pybox_result_free(run_in(s, e));
        pybox_exec_free(e);
        /* Past its first lifetime, it lives on with its state. */
        rc = pybox_session_extend(s, 0, 120, &err);
        ck_assert_msg(rc == PYBOX_OK, "%s: %s", mode_name[m], pybox_error_message(err));
        nanosleep(&ts, NULL);
        e = exec_of("y", NULL);
        r = run_in(s, e);
        ck_assert_str_eq(result_text(r), "5");
        pybox_result_free(r);
        pybox_exec_free(e);
        ck_assert_ptr_null(pybox_session_dead_reason(s));
        /* Refusals, alike: over the most, a lifetime already past. */
        rc = pybox_session_extend(s, PYBOX_SESSION_MAX_IDLE_TTL_S + 1, 0, &err);
        check_fails(rc, err, PYBOX_E_INVALID, "ValidationError", mode_name[m]);
        err = NULL;
        rc = pybox_session_extend(s, 0, PYBOX_SESSION_MAX_LIFETIME_S + 1, &err);
        check_fails(rc, err, PYBOX_E_INVALID, "ValidationError", mode_name[m]);
        err = NULL;
        rc = pybox_session_extend(s, 0, 1, &err);
        ck_assert_ptr_nonnull(strstr(pybox_error_message(err), "has passed"));
        check_fails(rc, err, PYBOX_E_INVALID, "ValidationError", mode_name[m]);
        err = NULL;
        ck_assert_int_eq(pybox_session_extend(NULL, 1, 1, NULL), PYBOX_E_INVALID);
        /* Answered while a call runs, as PATCH is. */
        sl = (struct sleeper){.session = s};
        ck_assert_int_eq(pthread_create(&sl.thread, NULL, sleeper_main, &sl), 0);
        ts.tv_sec = 1;
        nanosleep(&ts, NULL);
        rc = pybox_session_extend(s, 30, 0, &err);
        ck_assert_msg(rc == PYBOX_OK, "%s: %s", mode_name[m], pybox_error_message(err));
        pthread_join(sl.thread, NULL);
        ck_assert_int_eq(sl.rc, PYBOX_OK);
        /* Shorter: the reaper's next deadline moves nearer, and it keeps it. */
        n = mark_session(s, marker, sizeof(marker), pids);
        rc = pybox_session_extend(s, 1, 0, &err);
        ck_assert_msg(rc == PYBOX_OK, "%s: %s", mode_name[m], pybox_error_message(err));
        ck_assert_msg(all_gone(pids, n, 15000), "%s: the cell outlived its new idle time",
                      mode_name[m]);
        check_dead(s, "idle_timeout", mode_name[m]);
        /* An ended session is not extended. */
        rc = pybox_session_extend(s, 60, 0, &err);
        check_fails(rc, err, PYBOX_E_GONE, "SessionDead", mode_name[m]);
        close_ok(s);
        pybox_client_free(c);
    }
}
END_TEST

/* ---- input files at the opening ---- */

START_TEST(test_files_at_open)
{
    static const unsigned char bin[] = {0, 1, 2, 0xff, '\n'};
    const struct pybox_input_file files[] = {
        {.name = "a.txt", .data = "from the start", .size = 14},
        {.name = "b.bin", .data = bin, .size = sizeof(bin)},
    };
    struct pybox_result *r[NMODES];

    for (int m = 0; m < NMODES; m++) {
        struct pybox_client *c = client_of(m);
        struct pybox_session_options o;
        struct pybox_session *s = NULL;
        struct pybox_error *err = NULL;
        struct pybox_input_file bad[3];
        struct pybox_exec *e;
        enum pybox_code rc;
        char *list = NULL;
        json_t *l;
        char *paths;
        size_t i;
        json_t *f;
        char *big;

        pybox_session_options_init(&o);
        o.files = files;
        o.nfiles = 2;
        s = open_with(c, &o);
        e = exec_of("print(open('a.txt').read(), list(open('b.bin', 'rb').read()))", NULL);
        r[m] = run_in(s, e);
        ck_assert_str_eq(pybox_result_stdout(r[m], NULL), "from the start [0, 1, 2, 255, 10]\n");
        ck_assert_uint_eq(pybox_result_execution_count(r[m]), 1);
        pybox_exec_free(e);
        ck_assert_int_eq(pybox_session_list_files(s, &list, &err), PYBOX_OK);
        l = json_loads(list, 0, NULL);
        json_array_foreach(l, i, f)
        {
            json_object_del(f, "mtime");
        }
        paths = sorted_paths(l);
        ck_assert_str_eq(paths, "a.txt:14 b.bin:5 ");
        free(paths);
        json_decref(l);
        pybox_free(list);
        close_ok(s);
        s = NULL;

        /* Refusals, alike in both modes. */
        bad[0] = files[0];
        bad[1] = files[0];
        o.files = bad;
        o.nfiles = 2; /* the same name twice */
        rc = pybox_session_open(c, &o, &s, &err);
        check_fails(rc, err, PYBOX_E_INVALID, "ValidationError", mode_name[m]);
        err = NULL;
        bad[1].name = "d/x.txt"; /* not a flat name */
        rc = pybox_session_open(c, &o, &s, &err);
        check_fails(rc, err, PYBOX_E_INVALID, "ValidationError", mode_name[m]);
        err = NULL;
        bad[1] = (struct pybox_input_file){.name = "c.txt", .data = NULL, .size = 3};
        ck_assert_int_eq(pybox_session_open(c, &o, &s, NULL), PYBOX_E_INVALID);
        o.files = NULL;
        ck_assert_int_eq(pybox_session_open(c, &o, &s, NULL), PYBOX_E_INVALID);
        /* Over the caps of a run's input files: their size, their count. */
        big = calloc(1, (8u << 20) + 1);
        bad[1] = (struct pybox_input_file){.name = "big.bin", .data = big, .size = (8u << 20) + 1};
        o.files = bad;
        rc = pybox_session_open(c, &o, &s, &err);
        free(big);
        check_fails(rc, err, PYBOX_E_TOO_LARGE, "PayloadTooLarge", mode_name[m]);
        err = NULL;
        bad[1] = files[1];
        bad[2] = (struct pybox_input_file){.name = "c.txt", .data = "c", .size = 1};
        o.nfiles = 3;
        rc = pybox_session_open(c, &o, &s, &err);
        check_fails(rc, err, PYBOX_E_TOO_LARGE, "PayloadTooLarge", mode_name[m]);
        ck_assert_ptr_null(s);
        pybox_client_free(c);
    }
    check_same(r[0], r[1], "a call reading the files given at the opening");
    pybox_result_free(r[0]);
    pybox_result_free(r[1]);
}
END_TEST

START_TEST(test_bad_requests)
{
    for (int m = 0; m < NMODES; m++) {
        struct pybox_client *c = client_of(m);
        struct pybox_session_options o;
        struct pybox_session *s = NULL;
        struct pybox_error *err = NULL;
        struct pybox_exec *e = exec_of("print(1)", NULL);
        struct pybox_result *r = NULL;
        struct pybox_config cfg;
        struct pybox_client *net = NULL;
        enum pybox_code rc;

        pybox_session_options_init(&o);
        o.memory_mb = 1;
        ck_assert_int_eq(pybox_session_open(c, &o, &s, NULL), PYBOX_E_INVALID);
        o.memory_mb = 0;
        o.timeout_s = -1;
        ck_assert_int_eq(pybox_session_open(c, &o, &s, NULL), PYBOX_E_INVALID);
        o.size = 2; /* not filled by _init() */
        ck_assert_int_eq(pybox_session_open(c, &o, &s, NULL), PYBOX_E_INVALID);
        ck_assert_int_eq(pybox_session_open(NULL, NULL, &s, NULL), PYBOX_E_INVALID);
        ck_assert_int_eq(pybox_session_open(c, NULL, NULL, NULL), PYBOX_E_INVALID);
        ck_assert_ptr_null(s);
        /* A shorter struct of an older caller: the later fields keep their defaults. */
        pybox_session_options_init(&o);
        o.idle_ttl_s = 1; /* beyond the size: not taken */
        o.size = offsetof(struct pybox_session_options, idle_ttl_s);
        s = open_with(c, &o);
        /* A session's memory is its own. */
        ck_assert_int_eq(pybox_exec_set_memory(e, 64), PYBOX_OK);
        rc = pybox_session_run(s, e, &r, &err);
        check_fails(rc, err, PYBOX_E_INVALID, "ValidationError", mode_name[m]);
        err = NULL;
        ck_assert_int_eq(pybox_exec_set_memory(e, 0), PYBOX_OK);
        ck_assert_int_eq(pybox_session_run(NULL, e, &r, NULL), PYBOX_E_INVALID);
        ck_assert_int_eq(pybox_session_run(s, NULL, &r, NULL), PYBOX_E_INVALID);
        ck_assert_int_eq(pybox_session_interrupt(NULL, NULL, NULL), PYBOX_E_INVALID);
        ck_assert_ptr_null(pybox_session_id(NULL));
        ck_assert_ptr_null(pybox_session_dead_reason(NULL));
        close_ok(s);
        ck_assert_int_eq(pybox_session_close(NULL, NULL), PYBOX_OK);
        /* Sessions have no network, as no execution has. */
        pybox_config_init(&cfg);
        cfg.server = m == 1 ? main_server.url : NULL;
        cfg.network = true;
        ck_assert_int_eq(pybox_client_new(&cfg, &net, NULL), PYBOX_OK);
        rc = pybox_session_open(net, NULL, &s, &err);
        check_fails(rc, err, PYBOX_E_FORBIDDEN, "NetworkNotAllowed", mode_name[m]);
        err = NULL;
        pybox_client_free(net);
        pybox_exec_free(e);
        pybox_client_free(c);
    }
}
END_TEST

/* ---- streaming, without sessions ---- */

START_TEST(test_stream_run)
{
    struct pybox_result *r[NMODES];
    struct events ev[NMODES];

    for (int m = 0; m < NMODES; m++) {
        struct pybox_client *c = client_of(m);
        struct pybox_exec *e =
            exec_of("import sys, time\nprint(1, flush=True)\ntime.sleep(0.5)\nprint(2)\n"
                    "sys.stdout.flush()\nsys.stdout.buffer.write(b'\\xc3')\nsys.stdout.flush()\n"
                    "time.sleep(0.1)\nsys.stdout.buffer.write(b'\\xa9 \\xff\\n')\n"
                    "print('e', file=sys.stderr)\ndisplay('d')",
                    &ev[m]);
        struct pybox_error *err = NULL;
        enum pybox_code rc = pybox_run(c, e, &r[m], &err);

        ck_assert_msg(rc == PYBOX_OK, "%s: %s", mode_name[m], pybox_error_message(err));
        ck_assert_str_eq(pybox_result_stdout(r[m], NULL), "1\n2\n\xc3\xa9 \xef\xbf\xbd\n");
        check_events_are_result(&ev[m], r[m]);
        ck_assert_int_ge(ev[m].nout, 2);
        ck_assert_msg(ev[m].last_out_ms - ev[m].first_out_ms >= 400,
                      "%s: the stdout events came %.0f ms apart", mode_name[m],
                      ev[m].last_out_ms - ev[m].first_out_ms);
        ck_assert_uint_eq(json_array_size(ev[m].outputs), 1);
        ck_assert_uint_eq(pybox_result_execution_count(r[m]), 0);
        ck_assert(!pybox_result_state_preserved(r[m]));
        pybox_exec_free(e);
        pybox_client_free(c);
    }
    check_same(r[0], r[1], "the streamed run");
    ck_assert_str_eq(ev[0].out, ev[1].out);
    ck_assert(json_equal(ev[0].outputs, ev[1].outputs));
    for (int m = 0; m < NMODES; m++) {
        json_decref(ev[m].outputs);
        pybox_result_free(r[m]);
    }
}
END_TEST

/* A streamed run the server refuses before it starts is the same error as a plain one. */
START_TEST(test_stream_refused)
{
    struct pybox_client *c = client_of(1);
    struct events ev;
    struct pybox_exec *e = exec_of("print(1)", &ev);
    struct pybox_result *r = NULL;
    struct pybox_error *err = NULL;
    enum pybox_code rc;

    ck_assert_int_eq(pybox_exec_set_timeout(e, 100), PYBOX_OK); /* over the anonymous limit */
    rc = pybox_run(c, e, &r, &err);
    ck_assert_int_eq(pybox_error_http_status(err), 400);
    check_fails(rc, err, PYBOX_E_INVALID, "ValidationError", "remote");
    ck_assert_str_eq(ev.out, "");
    json_decref(ev.outputs);
    pybox_exec_free(e);
    pybox_client_free(c);
}
END_TEST

/* A callback taken off again is not called. */
START_TEST(test_stream_callback_removed)
{
    struct pybox_client *c = client_of(0);
    struct events ev;
    struct pybox_exec *e = exec_of("print(1)", &ev);
    struct pybox_result *r = NULL;

    ck_assert_int_eq(pybox_exec_set_event_callback(e, NULL, &ev), PYBOX_OK);
    ck_assert_int_eq(pybox_run(c, e, &r, NULL), PYBOX_OK);
    ck_assert_str_eq(ev.out, ""); /* no callback, no events */
    ck_assert_int_eq(pybox_exec_set_event_callback(NULL, NULL, NULL), PYBOX_E_INVALID);
    json_decref(ev.outputs);
    pybox_result_free(r);
    pybox_exec_free(e);
    pybox_client_free(c);
}
END_TEST

static Suite *sessions_suite(void)
{
    Suite *s = suite_create("client_sessions");
    TCase *calls_tc = tcase_create("calls");
    TCase *life = tcase_create("life");
    TCase *spans = tcase_create("spans");
    TCase *stream = tcase_create("stream");

    tcase_set_timeout(calls_tc, 240);
    tcase_add_test(calls_tc, test_calls_local_equal_remote);
    tcase_add_test(calls_tc, test_outputs_and_traceback);
    tcase_add_test(calls_tc, test_files_both_modes);
    suite_add_tcase(s, calls_tc);

    tcase_set_timeout(life, 240);
    tcase_add_test(life, test_interrupt_keeps_state);
    tcase_add_test(life, test_restart_keeps_files);
    tcase_add_test(life, test_one_call_at_a_time);
    tcase_add_test(life, test_swallowed_interrupt_ends_session);
    tcase_add_test(life, test_idle_ttl_ends_session);
    tcase_add_test(life, test_bad_requests);
    suite_add_tcase(s, life);

    tcase_set_timeout(spans, 240);
    tcase_add_test(spans, test_reaper_ends_idle_session);
    tcase_add_test(spans, test_reaper_ends_at_lifetime);
    tcase_add_test(spans, test_reaper_many_sessions);
    tcase_add_test(spans, test_extend);
    tcase_add_test(spans, test_files_at_open);
    suite_add_tcase(s, spans);

    tcase_set_timeout(stream, 120);
    tcase_add_test(stream, test_stream_run);
    tcase_add_test(stream, test_stream_refused);
    tcase_add_test(stream, test_stream_callback_removed);
    suite_add_tcase(s, stream);
    return s;
}

int main(void)
{
    /* Rates and caps that the tests never reach: each test opens a session or two per mode. */
    static const char *const flags[] = {"--rpm",      "100000",    "--rpd", "1000000",
                                        "--sessions", "64:64:128", NULL};
    SRunner *sr;
    int failed;
    int status;

    if (pybox_path() == NULL) {
        fprintf(stderr, "test_client_sessions: set PYBOX (and PYBOX_BIN) to the pybox binary\n");
        return 1;
    }
    if (getenv("PYBOX_BIN") == NULL)
        setenv("PYBOX_BIN", pybox_path(), 1);
    if (!server_start(&main_server, flags)) {
        fprintf(stderr, "test_client_sessions: pybox serve did not start (see %s/stderr.log)\n",
                main_server.dir);
        return 1;
    }
    sr = srunner_create(sessions_suite());
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    status = server_stop(&main_server);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "test_client_sessions: pybox serve ended with wait status %#x\n", status);
        return 1;
    }
    return failed == 0 ? 0 : 1;
}
