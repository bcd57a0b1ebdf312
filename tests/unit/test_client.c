/*
 * libpybox through its public API: one table of cases run in local mode and
 * against a real `pybox serve`, whose results must be equal; and every error
 * path against real servers (closed port, bad key, 403, 413, 400, 429, 503).
 *
 * Env: PYBOX (the binary; ctest sets it) serves, PYBOX_BIN (ctest sets it too)
 * is what local mode execs as the zygote.  main() starts one server for the
 * whole run (the test children inherit its URL) and stops it at the end:
 * SIGTERM must make it exit 0.  The 429/503 test starts its own.
 */
#include <check.h>
#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "pybox/pybox.h"
#include "client_server.h"
#include "session_procs.h"
#include "common/banned.h"

static struct server main_server;

/* ---- helpers ---- */

static struct pybox_client *client_for(const char *server, const char *key)
{
    struct pybox_config cfg;
    struct pybox_client *c = NULL;
    struct pybox_error *err = NULL;

    pybox_config_init(&cfg);
    cfg.server = server;
    cfg.api_key = key;
    ck_assert_msg(pybox_client_new(&cfg, &c, &err) == PYBOX_OK, "client: %s",
                  pybox_error_message(err));
    ck_assert_int_eq(pybox_client_is_remote(c), server != NULL);
    return c;
}

static struct pybox_exec *exec_of(const char *code)
{
    struct pybox_exec *e = pybox_exec_new();

    ck_assert_ptr_nonnull(e);
    ck_assert_int_eq(pybox_exec_set_code(e, code, (size_t)-1), PYBOX_OK);
    return e;
}

/* Run and expect PYBOX_OK. */
static struct pybox_result *run_ok(struct pybox_client *c, const struct pybox_exec *e)
{
    struct pybox_result *r = NULL;
    struct pybox_error *err = NULL;
    enum pybox_code rc = pybox_run(c, e, &r, &err);

    ck_assert_msg(rc == PYBOX_OK, "%s run: %s: %s", pybox_client_is_remote(c) ? "remote" : "local",
                  pybox_code_name(rc), pybox_error_message(err));
    ck_assert_ptr_nonnull(r);
    return r;
}

/* Run and expect the error `want`; returns the error for more checks (caller frees). */
static struct pybox_error *run_fails(struct pybox_client *c, const struct pybox_exec *e,
                                     enum pybox_code want)
{
    struct pybox_result *r = NULL;
    struct pybox_error *err = NULL;
    enum pybox_code rc = pybox_run(c, e, &r, &err);

    ck_assert_msg(rc == want, "got %s (%s), want %s", pybox_code_name(rc),
                  err ? pybox_error_message(err) : "", pybox_code_name(want));
    ck_assert_ptr_null(r);
    ck_assert_ptr_nonnull(err);
    ck_assert_int_eq(pybox_error_code(err), want);
    ck_assert_str_ne(pybox_error_message(err), "");
    return err;
}

static bool same_str(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

/* The result object's text up to its timings, which differ from run to run. */
static char *json_without_timings(const struct pybox_result *r)
{
    const char *j = pybox_result_to_json(r);
    const char *t = strstr(j, ",\"duration_ms\":");

    ck_assert_ptr_nonnull(t);
    return strndup(j, (size_t)(t - j));
}

/* ---- one table, both modes ---- */

static const unsigned char binary_in[] = {0, 1, 2, 0xff, 0xfe, '\n', '\r', 0x80, 0, 'z'};

struct client_case {
    const char *name;         /* what it shows */
    const char *code;         /* the script */
    const char *stdin_text;   /* its stdin, or NULL */
    const char *in_name;      /* an input file, or NULL */
    const void *in_data;      /* its contents */
    size_t in_size;           /* and size */
    const char *ret[2];       /* files asked back */
    bool main_mode;           /* call main() */
    double timeout;           /* seconds, 0: default */
    unsigned memory;          /* MiB, 0: default */
    enum pybox_status status; /* expected status */
    int exit_code;            /* expected exit code, -1: none */
    const char *out;          /* expected stdout, NULL: not checked */
    const char *value;        /* expected main() value, NULL: none */
    const char *error_type;   /* expected error type, NULL: none */
};

static const struct client_case cases[] = {
    {.name = "hello", .code = "print('hello')", .out = "hello\n"},
    {.name = "stdin",
     .code = "import sys\nprint(sys.stdin.read().upper(), end='')",
     .stdin_text = "abc\ndef\n",
     .out = "ABC\nDEF\n"},
    {.name = "files round trip",
     .code = "t = open('in.txt').read()\nopen('out.txt', 'w').write(t[::-1])\nprint(len(t))",
     .in_name = "in.txt",
     .in_data = "stressed",
     .in_size = 8,
     .ret = {"out.txt"},
     .out = "8\n"},
    {.name = "binary file",
     .code = "d = open('b.bin', 'rb').read()\nopen('r.bin', 'wb').write(bytes(reversed(d)))",
     .in_name = "b.bin",
     .in_data = binary_in,
     .in_size = sizeof(binary_in),
     .ret = {"r.bin"},
     .out = ""},
    {.name = "main() dict",
     .code = "def main():\n    return {'a': [1, 2.5, None], 's': 'caf\\u00e9', 't': True}",
     .main_mode = true,
     .value = "{\"a\":[1,2.5,null],\"s\":\"caf\xc3\xa9\",\"t\":true}"},
    {.name = "uncaught exception",
     .code = "print('before')\nraise ValueError('boom')",
     .status = PYBOX_STATUS_ERROR,
     .exit_code = 1,
     .out = "before\n",
     .error_type = "ValueError"},
    {.name = "sys.exit(3)",
     .code = "import sys\nsys.exit(3)",
     .status = PYBOX_STATUS_ERROR,
     .exit_code = 3,
     .out = "",
     .error_type = "ExitError"},
    {.name = "timeout",
     .code = "import time\nprint('start', flush=True)\ntime.sleep(5)",
     .timeout = 1,
     .status = PYBOX_STATUS_TIMEOUT,
     .exit_code = -1,
     .out = "start\n",
     .error_type = "TimeoutError"},
    {.name = "memory limit",
     .code = "b = b'x' * (200 << 20)\nprint(len(b))",
     .memory = 64,
     .status = PYBOX_STATUS_MEMORY_LIMIT,
     .exit_code = -1,
     .out = "",
     .error_type = "MemoryError"},
    {.name = "forbidden import",
     .code = "import socket\nprint('never')",
     .status = PYBOX_STATUS_REJECTED,
     .exit_code = -1,
     .out = "",
     .error_type = "ForbiddenImportError"},
    {.name = "syntax error",
     .code = "def broken(:\n    pass",
     .status = PYBOX_STATUS_REJECTED,
     .exit_code = -1,
     .out = "",
     .error_type = "SyntaxError"},
    {.name = "missing returned file",
     .code = "open('here.txt', 'w').write('x')",
     .ret = {"here.txt", "missing.txt"},
     .out = ""},
    {.name = "unicode output",
     .code = "import sys\nprint('h\\u00e9llo w\\u00f6rld \\u2713 \\U0001F600')\n"
             "print('\\u00fcber', file=sys.stderr)",
     .out = "h\xc3\xa9llo w\xc3\xb6rld \xe2\x9c\x93 \xf0\x9f\x98\x80\n"},
};

static struct pybox_exec *exec_of_case(const struct client_case *k)
{
    struct pybox_exec *e = exec_of(k->code);

    if (k->stdin_text != NULL)
        ck_assert_int_eq(pybox_exec_set_stdin(e, k->stdin_text, strlen(k->stdin_text)), PYBOX_OK);
    if (k->in_name != NULL)
        ck_assert_int_eq(pybox_exec_add_file(e, k->in_name, k->in_data, k->in_size), PYBOX_OK);
    for (size_t i = 0; i < 2 && k->ret[i] != NULL; i++)
        ck_assert_int_eq(pybox_exec_add_return(e, k->ret[i]), PYBOX_OK);
    ck_assert_int_eq(pybox_exec_set_main(e, k->main_mode), PYBOX_OK);
    ck_assert_int_eq(pybox_exec_set_timeout(e, k->timeout), PYBOX_OK);
    ck_assert_int_eq(pybox_exec_set_memory(e, k->memory), PYBOX_OK);
    return e;
}

/* What the case itself promises, checked on one mode's result. */
static void check_expected(const struct client_case *k, const struct pybox_result *r,
                           const char *mode)
{
    ck_assert_msg(pybox_result_status(r) == k->status, "%s, %s: status %s, want %s: %s", k->name,
                  mode, pybox_status_name(pybox_result_status(r)), pybox_status_name(k->status),
                  pybox_result_to_json(r));
    ck_assert_int_eq(pybox_result_exit_code(r), k->exit_code);
    ck_assert_int_eq(pybox_result_has_exit_code(r), k->exit_code >= 0);
    if (k->out != NULL)
        ck_assert_str_eq(pybox_result_stdout(r, NULL), k->out);
    ck_assert_msg(same_str(pybox_result_json(r), k->value), "%s, %s: main() value %s", k->name,
                  mode, pybox_result_json(r));
    ck_assert_msg(same_str(pybox_result_error_type(r), k->error_type), "%s, %s: error type %s",
                  k->name, mode, pybox_result_error_type(r));
    if (k->status == PYBOX_STATUS_MEMORY_LIMIT)
        ck_assert_int_eq(pybox_result_signal(r), SIGKILL);
}

START_TEST(test_case_local_equals_remote)
{
    const struct client_case *k = &cases[_i];
    struct pybox_client *local = client_for(NULL, NULL);
    struct pybox_client *remote = client_for(main_server.url, NULL);
    struct pybox_exec *e = exec_of_case(k);
    struct pybox_result *a = run_ok(local, e);
    struct pybox_result *b = run_ok(remote, e);
    size_t alen;
    size_t blen;
    char *ja;
    char *jb;

    check_expected(k, a, "local");
    check_expected(k, b, "remote");
    /* Equal, field by field. */
    ck_assert_int_eq(pybox_result_status(a), pybox_result_status(b));
    ck_assert_int_eq(pybox_result_exit_code(a), pybox_result_exit_code(b));
    ck_assert_int_eq(pybox_result_signal(a), pybox_result_signal(b));
    pybox_result_stdout(a, &alen);
    pybox_result_stdout(b, &blen);
    ck_assert_uint_eq(alen, blen);
    ck_assert_mem_eq(pybox_result_stdout(a, NULL), pybox_result_stdout(b, NULL), alen);
    pybox_result_stderr(a, &alen);
    pybox_result_stderr(b, &blen);
    ck_assert_uint_eq(alen, blen);
    ck_assert_mem_eq(pybox_result_stderr(a, NULL), pybox_result_stderr(b, NULL), alen);
    ck_assert_int_eq(pybox_result_stdout_truncated(a), pybox_result_stdout_truncated(b));
    ck_assert_int_eq(pybox_result_stderr_truncated(a), pybox_result_stderr_truncated(b));
    ck_assert(same_str(pybox_result_json(a), pybox_result_json(b)));
    ck_assert(same_str(pybox_result_error_type(a), pybox_result_error_type(b)));
    ck_assert(same_str(pybox_result_error_message(a), pybox_result_error_message(b)));
    ck_assert_uint_eq(pybox_result_file_count(a), pybox_result_file_count(b));
    for (size_t i = 0; i < pybox_result_file_count(a); i++) {
        const void *da = pybox_result_file_data(a, i, &alen);
        const void *db = pybox_result_file_data(b, i, &blen);

        ck_assert_str_eq(pybox_result_file_name(a, i), pybox_result_file_name(b, i));
        ck_assert(same_str(pybox_result_file_error(a, i), pybox_result_file_error(b, i)));
        ck_assert_uint_eq(alen, blen);
        ck_assert_int_eq(da == NULL, db == NULL);
        if (da != NULL)
            ck_assert_mem_eq(da, db, alen);
    }
    /* And as a whole: the result objects agree up to their timings. */
    ja = json_without_timings(a);
    jb = json_without_timings(b);
    ck_assert_str_eq(ja, jb);
    free(ja);
    free(jb);
    pybox_result_free(a);
    pybox_result_free(b);
    pybox_exec_free(e);
    pybox_client_free(local);
    pybox_client_free(remote);
}
END_TEST

/* The file checks the table cannot express, in both modes. */
START_TEST(test_files_content)
{
    const char *const servers[] = {NULL, main_server.url};

    for (size_t m = 0; m < 2; m++) {
        struct pybox_client *c = client_for(servers[m], NULL);
        struct pybox_exec *e = exec_of_case(&cases[3]); /* binary file */
        struct pybox_result *r = run_ok(c, e);
        unsigned char want[sizeof(binary_in)];
        const void *data;
        size_t size = 0;

        for (size_t i = 0; i < sizeof(binary_in); i++)
            want[i] = binary_in[sizeof(binary_in) - 1 - i];
        ck_assert_int_eq(pybox_result_file_find(r, "r.bin"), 0);
        data = pybox_result_file_data(r, 0, &size);
        ck_assert_uint_eq(size, sizeof(want));
        ck_assert_mem_eq(data, want, size);
        ck_assert_ptr_null(pybox_result_file_error(r, 0));
        pybox_result_free(r);
        pybox_exec_free(e);

        e = exec_of_case(&cases[11]); /* missing returned file */
        r = run_ok(c, e);
        ck_assert_uint_eq(pybox_result_file_count(r), 2);
        ck_assert_str_eq(pybox_result_file_name(r, 0), "here.txt");
        ck_assert_str_eq(pybox_result_file_data(r, 0, &size), "x");
        ck_assert_str_eq(pybox_result_file_name(r, 1), "missing.txt");
        ck_assert_ptr_null(pybox_result_file_data(r, 1, &size));
        ck_assert_str_eq(pybox_result_file_error(r, 1), "not found");
        ck_assert_int_eq(pybox_result_file_find(r, "nothing"), -1);
        pybox_result_free(r);
        pybox_exec_free(e);
        pybox_client_free(c);
    }
}
END_TEST

/* ---- threads ---- */

struct thread_run {
    struct pybox_client *client; /* shared */
    int n;                       /* what to print */
    enum pybox_code rc;          /* the run's code */
    char out[32];                /* its stdout */
    char msg[256];               /* or its error */
};

static void *thread_main(void *arg)
{
    struct thread_run *t = arg;
    struct pybox_exec *e = pybox_exec_new();
    struct pybox_result *r = NULL;
    struct pybox_error *err = NULL;
    char code[64];

    snprintf(code, sizeof(code), "print(%d * 2)", t->n);
    pybox_exec_set_code(e, code, (size_t)-1);
    t->rc = pybox_run(t->client, e, &r, &err);
    if (t->rc == PYBOX_OK)
        snprintf(t->out, sizeof(t->out), "%s", pybox_result_stdout(r, NULL));
    else
        snprintf(t->msg, sizeof(t->msg), "%s", pybox_error_message(err));
    pybox_error_free(err);
    pybox_result_free(r);
    pybox_exec_free(e);
    return NULL;
}

START_TEST(test_threads_share_a_client)
{
    const char *const servers[] = {NULL, main_server.url};

    for (size_t m = 0; m < 2; m++) {
        struct pybox_client *c = client_for(servers[m], NULL);
        struct thread_run runs[4];
        pthread_t tid[4];

        for (int i = 0; i < 4; i++) {
            runs[i] = (struct thread_run){.client = c, .n = i + 10};
            ck_assert_int_eq(pthread_create(&tid[i], NULL, thread_main, &runs[i]), 0);
        }
        for (int i = 0; i < 4; i++) {
            char want[32];

            pthread_join(tid[i], NULL);
            snprintf(want, sizeof(want), "%d\n", (i + 10) * 2);
            ck_assert_msg(runs[i].rc == PYBOX_OK, "%s run %d: %s: %s", m ? "remote" : "local", i,
                          pybox_code_name(runs[i].rc), runs[i].msg);
            ck_assert_str_eq(runs[i].out, want);
        }
        pybox_client_free(c);
    }
}
END_TEST

/* ---- error paths ---- */

START_TEST(test_connect_refused)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct pybox_client *c;
    struct pybox_exec *e = exec_of("print(1)");
    struct pybox_error *err;
    char url[64];

    /* A port that was free a moment ago and has no listener. */
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    close(fd);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", ntohs(sa.sin_port));
    c = client_for(url, NULL);
    err = run_fails(c, e, PYBOX_E_CONNECT);
    ck_assert_int_eq(pybox_error_http_status(err), 0);
    ck_assert_ptr_null(pybox_error_type(err)); /* no answer, no type */
    pybox_error_free(err);
    pybox_client_free(c);
    pybox_exec_free(e);
}
END_TEST

START_TEST(test_bad_key_unauthorized)
{
    struct pybox_client *bad = client_for(main_server.url, "not-a-key");
    struct pybox_client *good = client_for(main_server.url, ADMIN_KEY);
    struct pybox_exec *e = exec_of("print('as admin')");
    struct pybox_error *err = run_fails(bad, e, PYBOX_E_UNAUTHORIZED);
    struct pybox_result *r;

    ck_assert_int_eq(pybox_error_http_status(err), 401);
    ck_assert_str_eq(pybox_error_type(err), "Unauthorized");
    pybox_error_free(err);
    /* The key is sent: the right one works. */
    r = run_ok(good, e);
    ck_assert_str_eq(pybox_result_stdout(r, NULL), "as admin\n");
    pybox_result_free(r);
    pybox_exec_free(e);
    pybox_client_free(bad);
    pybox_client_free(good);
}
END_TEST

START_TEST(test_network_forbidden)
{
    struct pybox_config cfg;
    struct pybox_client *c = NULL;
    struct pybox_exec *e = exec_of("print(1)");
    struct pybox_error *err = NULL;

    pybox_config_init(&cfg);
    cfg.network = true;
    cfg.server = main_server.url;
    ck_assert_int_eq(pybox_client_new(&cfg, &c, NULL), PYBOX_OK);
    err = run_fails(c, e, PYBOX_E_FORBIDDEN);
    ck_assert_int_eq(pybox_error_http_status(err), 403);
    ck_assert_str_eq(pybox_error_type(err), "NetworkNotAllowed");
    pybox_error_free(err);
    pybox_client_free(c);
    cfg.server = NULL;
    ck_assert_int_eq(pybox_client_new(&cfg, &c, NULL), PYBOX_OK);
    /* Local mode has the anonymous policy: what a server answers an anonymous caller (403). */
    err = run_fails(c, e, PYBOX_E_FORBIDDEN);
    ck_assert_str_eq(pybox_error_type(err), "NetworkNotAllowed");
    ck_assert_int_eq(pybox_error_http_status(err), 0);
    pybox_error_free(err);
    pybox_client_free(c);
    pybox_exec_free(e);
}
END_TEST

START_TEST(test_too_large_and_invalid)
{
    struct pybox_client *c = client_for(main_server.url, NULL);
    struct pybox_exec *e = exec_of("import sys\nprint(len(sys.stdin.read()))");
    size_t big = 300 * 1024; /* over the server's --max-body 256 KiB */
    char *in = malloc(big);
    struct pybox_error *err;

    memset(in, 'a', big);
    ck_assert_int_eq(pybox_exec_set_stdin(e, in, big), PYBOX_OK);
    err = run_fails(c, e, PYBOX_E_TOO_LARGE);
    ck_assert_int_eq(pybox_error_http_status(err), 413);
    ck_assert_str_eq(pybox_error_type(err), "PayloadTooLarge");
    pybox_error_free(err);
    /* Over the anonymous caller's timeout limit: 400 with the server's own words. */
    ck_assert_int_eq(pybox_exec_set_stdin(e, "", 0), PYBOX_OK);
    ck_assert_int_eq(pybox_exec_set_timeout(e, 100), PYBOX_OK);
    err = run_fails(c, e, PYBOX_E_INVALID);
    ck_assert_int_eq(pybox_error_http_status(err), 400);
    ck_assert_str_eq(pybox_error_type(err), "ValidationError");
    ck_assert_ptr_nonnull(strstr(pybox_error_message(err), "timeout"));
    pybox_error_free(err);
    free(in);
    pybox_exec_free(e);
    pybox_client_free(c);
}
END_TEST

static size_t discard(char *p, size_t size, size_t n, void *arg)
{
    (void)p;
    (void)arg;
    return size * n;
}

/* Whether GET /v1/health reports an execution in flight. */
static bool server_active(const char *url)
{
    struct {
        char buf[512];
        size_t len;
    } body = {.len = 0};
    char health[160];
    CURL *curl = curl_easy_init();
    FILE *mem = fmemopen(body.buf, sizeof(body.buf) - 1, "w");
    bool active;

    snprintf(health, sizeof(health), "%s/v1/health", url);
    curl_easy_setopt(curl, CURLOPT_URL, health);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, 10L);
    if (mem != NULL)
        curl_easy_setopt(curl, CURLOPT_WRITEDATA, mem);
    else
        curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_perform(curl);
    curl_easy_cleanup(curl);
    if (mem != NULL)
        fclose(mem);
    active = strstr(body.buf, "\"active_executions\":1") != NULL;
    return active;
}

struct sleeper {
    struct pybox_client *client; /* remote */
    enum pybox_code rc;          /* its run */
    enum pybox_status status;    /* its result */
};

static void *sleeper_main(void *arg)
{
    struct sleeper *s = arg;
    struct pybox_exec *e = pybox_exec_new();
    struct pybox_result *r = NULL;

    pybox_exec_set_code(e, "import time\ntime.sleep(8)\nprint('slept')", (size_t)-1);
    pybox_exec_set_timeout(e, 10);
    s->rc = pybox_run(s->client, e, &r, NULL);
    if (s->rc == PYBOX_OK)
        s->status = pybox_result_status(r);
    pybox_result_free(r);
    pybox_exec_free(e);
    return NULL;
}

START_TEST(test_busy_then_rate_limited)
{
    static const char *const flags[] = {"--rpm", "2", "--max-concurrency", "1", NULL};
    struct server s;
    struct pybox_client *c;
    struct pybox_exec *e = exec_of("print(1)");
    struct pybox_error *err;
    struct sleeper sl = {0};
    pthread_t tid;
    time_t deadline;
    int status;

    ck_assert_msg(server_start(&s, flags), "the second server did not start");
    c = client_for(s.url, NULL);
    sl.client = c;
    ck_assert_int_eq(pthread_create(&tid, NULL, sleeper_main, &sl), 0);
    deadline = time(NULL) + 60;
    while (!server_active(s.url) && time(NULL) < deadline)
        usleep(100 * 1000);
    /* Its only slot is taken for 8 s: busy (503), and it says when to retry. */
    err = run_fails(c, e, PYBOX_E_BUSY);
    ck_assert_int_eq(pybox_error_http_status(err), 503);
    ck_assert_str_eq(pybox_error_type(err), "ServerBusy");
    ck_assert_uint_gt(pybox_error_retry_after(err), 0);
    pybox_error_free(err);
    pthread_join(tid, NULL);
    ck_assert_int_eq(sl.rc, PYBOX_OK);
    ck_assert_int_eq(sl.status, PYBOX_STATUS_OK);
    /*
     * The sleeper used one of this minute's two requests; the refused one cost
     * nothing, so one more runs, and then the window is full.
     */
    pybox_result_free(run_ok(c, e));
    err = run_fails(c, e, PYBOX_E_RATE_LIMITED);
    ck_assert_int_eq(pybox_error_http_status(err), 429);
    ck_assert_str_eq(pybox_error_type(err), "RateLimitExceeded");
    ck_assert_uint_gt(pybox_error_retry_after(err), 0);
    ck_assert_uint_le(pybox_error_retry_after(err), 60);
    pybox_error_free(err);
    pybox_exec_free(e);
    pybox_client_free(c);
    status = server_stop(&s);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "pybox serve ended with %#x",
                  status);
}
END_TEST

START_TEST(test_local_engine_missing_binary)
{
    struct pybox_config cfg;
    struct pybox_client *c = NULL;
    struct pybox_exec *e = exec_of("print(1)");
    struct pybox_error *err;

    pybox_config_init(&cfg);
    cfg.pybox_bin = "/nonexistent/pybox";
    ck_assert_int_eq(pybox_client_new(&cfg, &c, NULL), PYBOX_OK);
    err = run_fails(c, e, PYBOX_E_ENGINE);
    ck_assert_ptr_nonnull(strstr(pybox_error_message(err), "/nonexistent/pybox"));
    ck_assert_str_eq(pybox_error_type(err), "InternalServerError");
    pybox_error_free(err);
    pybox_client_free(c);
    pybox_exec_free(e);
}
END_TEST

/* ---- configuration, builder and codes ---- */

/* A size that ends inside a field takes only the whole fields before it. */
START_TEST(test_config_size_whole_fields)
{
    struct pybox_config cfg;
    struct pybox_client *c = NULL;

    pybox_config_init(&cfg);
    cfg.server = "http://127.0.0.1:9";
    cfg.size = offsetof(struct pybox_config, server) + 4; /* half the server pointer */
    ck_assert_int_eq(pybox_client_new(&cfg, &c, NULL), PYBOX_OK);
    ck_assert(!pybox_client_is_remote(c)); /* the server field was not taken at all */
    pybox_client_free(c);
    cfg.size = offsetof(struct pybox_config, server) + sizeof(cfg.server);
    ck_assert_int_eq(pybox_client_new(&cfg, &c, NULL), PYBOX_OK);
    ck_assert(pybox_client_is_remote(c));
    pybox_client_free(c);
}
END_TEST

START_TEST(test_config_and_env)
{
    struct pybox_config cfg;
    struct pybox_client *c = NULL;
    struct pybox_error *err = NULL;

    pybox_config_init(&cfg);
    ck_assert_uint_eq(cfg.size, sizeof(cfg));
    setenv("PYBOX_SERVER", "http://127.0.0.1:9/", 1);
    setenv("PYBOX_API_KEY", "k1", 1);
    setenv("PYBOX_TIMEOUT", "2.5", 1);
    setenv("PYBOX_MEMORY_MB", "128", 1);
    setenv("PYBOX_NETWORK", "yes", 1);
    ck_assert_int_eq(pybox_config_from_env(&cfg, NULL), PYBOX_OK);
    ck_assert_str_eq(cfg.server, "http://127.0.0.1:9/");
    ck_assert_str_eq(cfg.api_key, "k1");
    ck_assert(cfg.timeout_s == 2.5);
    ck_assert_uint_eq(cfg.memory_mb, 128);
    ck_assert(cfg.network);
    ck_assert_int_eq(pybox_client_new_from_env(&c, NULL), PYBOX_OK);
    ck_assert(pybox_client_is_remote(c));
    pybox_client_free(c);

    setenv("PYBOX_TIMEOUT", "soon", 1);
    ck_assert_int_eq(pybox_config_from_env(&cfg, &err), PYBOX_E_INVALID);
    ck_assert_ptr_nonnull(strstr(pybox_error_message(err), "PYBOX_TIMEOUT"));
    ck_assert_ptr_null(pybox_error_type(err)); /* the client's own check: no server type */
    pybox_error_free(err);
    err = NULL;
    unsetenv("PYBOX_TIMEOUT");
    setenv("PYBOX_MEMORY_MB", "8", 1);
    ck_assert_int_eq(pybox_config_from_env(&cfg, NULL), PYBOX_E_INVALID);
    unsetenv("PYBOX_MEMORY_MB");
    setenv("PYBOX_NETWORK", "maybe", 1);
    ck_assert_int_eq(pybox_config_from_env(&cfg, NULL), PYBOX_E_INVALID);
    unsetenv("PYBOX_NETWORK");
    unsetenv("PYBOX_SERVER");
    pybox_config_init(&cfg);
    ck_assert_int_eq(pybox_config_from_env(&cfg, NULL), PYBOX_OK);
    ck_assert_ptr_null(cfg.server);

    cfg.server = "ftp://example.org";
    ck_assert_int_eq(pybox_client_new(&cfg, &c, &err), PYBOX_E_INVALID);
    pybox_error_free(err);
    err = NULL;
    cfg.server = "http://127.0.0.1:9";
    cfg.api_key = "line\nbreak";
    ck_assert_int_eq(pybox_client_new(&cfg, &c, NULL), PYBOX_E_INVALID);
    cfg.api_key = NULL;
    cfg.timeout_s = -1;
    ck_assert_int_eq(pybox_client_new(&cfg, &c, NULL), PYBOX_E_INVALID);
    cfg.timeout_s = 0;
    cfg.memory_mb = 1;
    ck_assert_int_eq(pybox_client_new(&cfg, &c, NULL), PYBOX_E_INVALID);
    /* A caller built against a shorter config keeps the later fields' defaults. */
    pybox_config_init(&cfg);
    cfg.memory_mb = 1; /* beyond the size below: ignored */
    cfg.size = offsetof(struct pybox_config, memory_mb);
    ck_assert_int_eq(pybox_client_new(&cfg, &c, NULL), PYBOX_OK);
    ck_assert(!pybox_client_is_remote(c));
    pybox_client_free(c);
}
END_TEST

START_TEST(test_builder_refuses_bad_input)
{
    struct pybox_exec *e = pybox_exec_new();
    struct pybox_client *c = client_for(NULL, NULL);
    struct pybox_error *err = NULL;
    struct pybox_result *r = NULL;

    /* No code yet. */
    ck_assert_int_eq(pybox_run(c, e, &r, &err), PYBOX_E_INVALID);
    ck_assert_ptr_null(r);
    pybox_error_free(err);
    ck_assert_int_eq(pybox_exec_add_file(e, "../etc/passwd", "x", 1), PYBOX_E_INVALID);
    ck_assert_int_eq(pybox_exec_add_file(e, "a/b", "x", 1), PYBOX_E_INVALID);
    ck_assert_int_eq(pybox_exec_add_file(e, "", "x", 1), PYBOX_E_INVALID);
    ck_assert_int_eq(pybox_exec_add_file(e, "ok.txt", "x", 1), PYBOX_OK);
    ck_assert_int_eq(pybox_exec_add_file(e, "ok.txt", "y", 1), PYBOX_E_INVALID);
    ck_assert_int_eq(pybox_exec_add_return(e, ".."), PYBOX_E_INVALID);
    /* Names travel as JSON strings: UTF-8 only (remote mode said "out of memory"). */
    ck_assert_int_eq(pybox_exec_add_file(e, "\xff.bin", "x", 1), PYBOX_E_INVALID);
    ck_assert_int_eq(pybox_exec_add_file(e, "\xc0\xae.txt", "x", 1), PYBOX_E_INVALID);
    ck_assert_int_eq(pybox_exec_add_file(e, "\xed\xa0\x80", "x", 1), PYBOX_E_INVALID);
    ck_assert_int_eq(pybox_exec_add_return(e, "out\xe2\x82"), PYBOX_E_INVALID);
    ck_assert_int_eq(pybox_exec_add_file(e, "caf\xc3\xa9 \xf0\x9f\x90\x8d.txt", "x", 1), PYBOX_OK);
    ck_assert_int_eq(pybox_exec_add_return(e, "\xe6\x97\xa5*"), PYBOX_OK);
    ck_assert_int_eq(pybox_exec_set_timeout(e, -1), PYBOX_E_INVALID);
    ck_assert_int_eq(pybox_exec_set_timeout(e, 4000), PYBOX_E_INVALID);
    ck_assert_int_eq(pybox_exec_set_memory(e, 8), PYBOX_E_INVALID);
    ck_assert_int_eq(pybox_exec_set_memory(e, 100000), PYBOX_E_INVALID);
    ck_assert_int_eq(pybox_exec_set_stdin(e, NULL, 3), PYBOX_E_INVALID);
    pybox_exec_free(e);
    pybox_client_free(c);
    pybox_exec_free(NULL);
    pybox_result_free(NULL);
    pybox_error_free(NULL);
    pybox_client_free(NULL);
    ck_assert_ptr_null(pybox_error_type(NULL));
}
END_TEST

START_TEST(test_codes_and_version)
{
    static const struct {
        int code;
        int value;
        const char *name;
    } stable[] = {
        {PYBOX_OK, 0, "PYBOX_OK"},
        {PYBOX_E_INVALID, 1, "PYBOX_E_INVALID"},
        {PYBOX_E_NOMEM, 2, "PYBOX_E_NOMEM"},
        {PYBOX_E_CONNECT, 3, "PYBOX_E_CONNECT"},
        {PYBOX_E_TIMEOUT, 4, "PYBOX_E_TIMEOUT"},
        {PYBOX_E_UNAUTHORIZED, 5, "PYBOX_E_UNAUTHORIZED"},
        {PYBOX_E_FORBIDDEN, 6, "PYBOX_E_FORBIDDEN"},
        {PYBOX_E_RATE_LIMITED, 7, "PYBOX_E_RATE_LIMITED"},
        {PYBOX_E_BUSY, 8, "PYBOX_E_BUSY"},
        {PYBOX_E_TOO_LARGE, 9, "PYBOX_E_TOO_LARGE"},
        {PYBOX_E_UNSUPPORTED, 10, "PYBOX_E_UNSUPPORTED"},
        {PYBOX_E_SERVER, 11, "PYBOX_E_SERVER"},
        {PYBOX_E_PROTOCOL, 12, "PYBOX_E_PROTOCOL"},
        {PYBOX_E_ENGINE, 13, "PYBOX_E_ENGINE"},
        {PYBOX_E_TRANSPORT, 14, "PYBOX_E_TRANSPORT"},
        {PYBOX_E_GONE, 15, "PYBOX_E_GONE"},
        {PYBOX_E_NOT_FOUND, 16, "PYBOX_E_NOT_FOUND"},
        {PYBOX_E_CANCELLED, 17, "PYBOX_E_CANCELLED"},
    };

    /* The numbers are ABI: this table may only grow. */
    for (size_t i = 0; i < sizeof(stable) / sizeof(stable[0]); i++) {
        ck_assert_int_eq(stable[i].code, stable[i].value);
        ck_assert_str_eq(pybox_code_name(stable[i].code), stable[i].name);
        ck_assert_str_ne(pybox_strerror(stable[i].code), "unknown error");
    }
    ck_assert_str_eq(pybox_code_name(999), "PYBOX_E_UNKNOWN");
    ck_assert_str_eq(pybox_strerror(-1), "unknown error");
    ck_assert_str_eq(pybox_status_name(PYBOX_STATUS_MEMORY_LIMIT), "memory_limit");
    ck_assert_str_eq(pybox_status_name(42), "unknown");
    ck_assert_str_eq(pybox_version(), PYBOX_VERSION_STRING);
}
END_TEST

/* ---- cancels ---- */

/*
 * How many descriptors this process has open whose target starts with
 * `kind` ("socket:", "anon_inode:[eventfd]"; "" for all).
 */
static int open_fds(const char *kind)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *de;
    int n = 0;

    ck_assert_ptr_nonnull(d);
    while ((de = readdir(d)) != NULL) {
        char path[300];
        char target[256] = "";

        if (de->d_name[0] == '.' || strtol(de->d_name, NULL, 10) == dirfd(d))
            continue;
        snprintf(path, sizeof(path), "/proc/self/fd/%s", de->d_name);
        if (readlink(path, target, sizeof(target) - 1) > 0 &&
            strncmp(target, kind, strlen(kind)) == 0)
            n++;
    }
    closedir(d);
    return n;
}

START_TEST(test_cancel_api)
{
    struct pybox_cancel *cancel = NULL;
    struct pybox_error *err = NULL;
    struct pybox_exec *e = exec_of("print(1)");
    struct pybox_client *local = client_for(NULL, NULL);
    struct pybox_client *remote = client_for(main_server.url, NULL);
    struct pybox_session *s = NULL;
    int fds = open_fds("");

    ck_assert_int_eq(pybox_cancel_new(NULL, NULL), PYBOX_E_INVALID);
    ck_assert_int_eq(pybox_cancel_new(&cancel, &err), PYBOX_OK);
    ck_assert_int_eq(open_fds(""), fds + 1);
    ck_assert(!pybox_cancel_fired(cancel));
    ck_assert(!pybox_cancel_fired(NULL));
    pybox_cancel_fire(NULL);
    ck_assert_int_eq(pybox_exec_set_cancel(NULL, cancel), PYBOX_E_INVALID);
    ck_assert_int_eq(pybox_exec_set_cancel(e, cancel), PYBOX_OK);
    ck_assert_str_eq(pybox_code_name(PYBOX_E_CANCELLED), "PYBOX_E_CANCELLED");
    ck_assert_int_eq(PYBOX_CODE_MAX, PYBOX_E_CANCELLED);

    /* Not fired: the request runs as any. */
    pybox_result_free(run_ok(remote, e));
    /* A session's call takes none: it is interrupted instead. */
    ck_assert_int_eq(pybox_session_open(local, NULL, &s, &err), PYBOX_OK);
    {
        struct pybox_result *r = NULL;

        ck_assert_int_eq(pybox_session_run(s, e, &r, &err), PYBOX_E_INVALID);
        ck_assert_ptr_null(r);
        ck_assert_ptr_nonnull(strstr(pybox_error_message(err), "pybox_session_interrupt"));
        pybox_error_free(err);
        err = NULL;
    }
    ck_assert_int_eq(pybox_session_close(s, NULL), PYBOX_OK);

    /* Fired (twice: the same), it stops every run to come, in both modes, before it starts. */
    pybox_cancel_fire(cancel);
    pybox_cancel_fire(cancel);
    ck_assert(pybox_cancel_fired(cancel));
    for (int m = 0; m < 2; m++) {
        err = run_fails(m == 0 ? local : remote, e, PYBOX_E_CANCELLED);
        ck_assert_ptr_null(pybox_error_type(err)); /* the caller's own doing */
        ck_assert_ptr_nonnull(strstr(pybox_error_message(err), "did not run"));
        pybox_error_free(err);
    }

    /* Without it, the same request runs again. */
    ck_assert_int_eq(pybox_exec_set_cancel(e, NULL), PYBOX_OK);
    pybox_result_free(run_ok(local, e));
    pybox_cancel_free(cancel);
    pybox_cancel_free(NULL);
    pybox_exec_free(e);
    pybox_client_free(local);
    pybox_client_free(remote);
}
END_TEST

struct cancelled_run {
    struct pybox_client *client; /* shared */
    const struct pybox_exec *e;  /* carries the cancel */
    enum pybox_code rc;          /* the run's code */
    struct pybox_result *r;      /* its result, if it had one */
    char msg[256];               /* or its error */
    double ended_ms;             /* when pybox_run() returned */
    pthread_t thread;            /* that runs it */
};

static void *cancelled_main(void *arg)
{
    struct cancelled_run *t = arg;
    struct pybox_error *err = NULL;

    t->rc = pybox_run(t->client, t->e, &t->r, &err);
    t->ended_ms = now_ms();
    if (t->rc != PYBOX_OK)
        snprintf(t->msg, sizeof(t->msg), "%s", pybox_error_message(err));
    pybox_error_free(err);
    return NULL;
}

/*
 * A run in progress, cancelled from another thread once its code runs (a
 * marker in its /work says so), in each mode: pybox_run() returns
 * PYBOX_E_CANCELLED at once, the code's processes go (locally before
 * pybox_run() returns, the engine reaps them; on the server once it sees the
 * connection closed) long before its timeout, no descriptor is left, and the
 * client runs on.  A server of its own lets a run ask for 60 s.
 */
START_TEST(test_cancel_stops_run)
{
    static const char *const flags[] = {"--rpm",     "100000", "--rpd", "1000000",
                                        "--timeout", "60",     NULL};
    static const char *const mode_name[] = {"local", "remote"};
    struct server srv;
    const char *servers[2] = {NULL, NULL};

    ck_assert_msg(server_start(&srv, flags), "pybox serve did not start (see %s/stderr.log)",
                  srv.dir);
    servers[1] = srv.url;
    for (int m = 0; m < 2; m++) {
        struct pybox_client *c = client_for(servers[m], NULL);
        struct cancelled_run t = {.client = c};
        struct pybox_cancel *cancel = NULL;
        struct pybox_exec *warm = exec_of("print(1)");
        struct pybox_exec *e;
        char marker[64];
        char code[256];
        pid_t pids[4];
        double fired_ms;
        double until;
        int eventfds;
        int sockets;
        int fds;
        int n = 0;

        /* The engine started, curl set up: what a run keeps open from now on is a leak. */
        pybox_result_free(run_ok(c, warm));
        fds = open_fds("");
        sockets = open_fds("socket:");
        eventfds = open_fds("anon_inode:[eventfd]");
        snprintf(marker, sizeof(marker), "cancel-%d-%d", (int)getpid(), m);
        snprintf(code, sizeof(code),
                 "open('/work/%s', 'w').close()\nimport time\ntime.sleep(60)\nprint('not cut')",
                 marker);
        e = exec_of(code);
        ck_assert_int_eq(pybox_exec_set_timeout(e, 60), PYBOX_OK);
        ck_assert_int_eq(pybox_cancel_new(&cancel, NULL), PYBOX_OK);
        ck_assert_int_eq(pybox_exec_set_cancel(e, cancel), PYBOX_OK);
        t.e = e;
        ck_assert_int_eq(pthread_create(&t.thread, NULL, cancelled_main, &t), 0);
        until = now_ms() + 60000;
        while ((n = find_in_session("pybox-cell", marker, pids, 4)) < 2 && now_ms() < until) {
            struct timespec ts = {0, 10 * 1000 * 1000};

            nanosleep(&ts, NULL);
        }
        ck_assert_msg(n == 2, "%s: the run's cell and interpreter: %d found", mode_name[m], n);
        fired_ms = now_ms();
        pybox_cancel_fire(cancel);
        pthread_join(t.thread, NULL);
        ck_assert_msg(t.rc == PYBOX_E_CANCELLED, "%s: %s: %s", mode_name[m], pybox_code_name(t.rc),
                      t.msg);
        ck_assert_ptr_null(t.r);
        ck_assert_msg(t.ended_ms - fired_ms < 2000, "%s: pybox_run() returned %.0f ms after",
                      mode_name[m], t.ended_ms - fired_ms);
        if (m == 0) {
            ck_assert_msg(all_gone(pids, n, 0), "local: the code outlived pybox_run()");
        } else {
            ck_assert_msg(all_gone(pids, n, 3000), "remote: the code outlived the cancel by 3 s");
        }
        ck_assert_int_eq(find_in_session("pybox-cell", marker, pids, 4), 0);
        pybox_cancel_free(cancel);
        /* No socket, no eventfd left; the engine's spare cells' pidfds may come and go. */
        ck_assert_int_eq(open_fds("socket:"), sockets);
        ck_assert_int_eq(open_fds("anon_inode:[eventfd]"), eventfds);
        ck_assert_msg(open_fds("") <= fds, "%s: %d descriptors open, %d before the run",
                      mode_name[m], open_fds(""), fds);
        /* The client runs on, and so does the request without its cancel. */
        pybox_result_free(run_ok(c, warm));
        pybox_exec_free(warm);
        pybox_exec_free(e);
        pybox_client_free(c);
    }
    server_stop(&srv);
}
END_TEST

/* A cancel fired after its run ended changes nothing: the result stands. */
START_TEST(test_cancel_after_the_end)
{
    const char *const servers[] = {NULL, main_server.url};

    for (size_t m = 0; m < 2; m++) {
        struct pybox_client *c = client_for(servers[m], NULL);
        struct pybox_exec *e = exec_of("print(6 * 7)");
        struct pybox_cancel *cancel = NULL;
        struct pybox_result *r;

        ck_assert_int_eq(pybox_cancel_new(&cancel, NULL), PYBOX_OK);
        ck_assert_int_eq(pybox_exec_set_cancel(e, cancel), PYBOX_OK);
        r = run_ok(c, e);
        pybox_cancel_fire(cancel);
        ck_assert_int_eq(pybox_result_status(r), PYBOX_STATUS_OK);
        ck_assert_str_eq(pybox_result_stdout(r, NULL), "42\n");
        pybox_result_free(r);
        pybox_cancel_free(cancel);
        pybox_exec_free(e);
        pybox_client_free(c);
    }
}
END_TEST

static Suite *client_suite(void)
{
    Suite *s = suite_create("client");
    TCase *api = tcase_create("api");
    TCase *modes = tcase_create("modes");
    TCase *errors = tcase_create("errors");
    TCase *cancel = tcase_create("cancel");

    tcase_add_test(api, test_config_size_whole_fields);
    tcase_add_test(api, test_config_and_env);
    tcase_add_test(api, test_builder_refuses_bad_input);
    tcase_add_test(api, test_codes_and_version);
    suite_add_tcase(s, api);

    tcase_set_timeout(modes, 120);
    tcase_add_loop_test(modes, test_case_local_equals_remote, 0,
                        (int)(sizeof(cases) / sizeof(cases[0])));
    tcase_add_test(modes, test_files_content);
    tcase_add_test(modes, test_threads_share_a_client);
    suite_add_tcase(s, modes);

    tcase_set_timeout(errors, 240);
    tcase_add_test(errors, test_connect_refused);
    tcase_add_test(errors, test_bad_key_unauthorized);
    tcase_add_test(errors, test_network_forbidden);
    tcase_add_test(errors, test_too_large_and_invalid);
    tcase_add_test(errors, test_busy_then_rate_limited);
    tcase_add_test(errors, test_local_engine_missing_binary);
    suite_add_tcase(s, errors);

    tcase_set_timeout(cancel, 300);
    tcase_add_test(cancel, test_cancel_api);
    tcase_add_test(cancel, test_cancel_stops_run);
    tcase_add_test(cancel, test_cancel_after_the_end);
    suite_add_tcase(s, cancel);
    return s;
}

int main(void)
{
    static const char *const flags[] = {"--rpm",      "100000", "--rpd", "1000000",
                                        "--max-body", "262144", NULL};
    SRunner *sr;
    int failed;
    int status;

    if (pybox_path() == NULL) {
        fprintf(stderr, "test_client: set PYBOX (and PYBOX_BIN) to the pybox binary\n");
        return 1;
    }
    if (getenv("PYBOX_BIN") == NULL)
        setenv("PYBOX_BIN", pybox_path(), 1);
    if (!server_start(&main_server, flags)) {
        fprintf(stderr, "test_client: pybox serve did not start (see %s/stderr.log)\n",
                main_server.dir);
        return 1;
    }
    sr = srunner_create(client_suite());
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    status = server_stop(&main_server);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "test_client: pybox serve ended with wait status %#x after SIGTERM\n",
                status);
        return 1;
    }
    return failed == 0 ? 0 : 1;
}
