/*
 * The MCP module (src/mcp/) with a stub backend: every method, the
 * JSON-RPC errors, version negotiation, the tool schemas, run_python's
 * result formatting (isError, images, resource links and resources/read,
 * caps), the resource store's bound, progress and cancellation.
 */
#include <check.h>
#include <stdio.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "common/error.h"
#include "common/xalloc.h"
#include "mcp/mcp.h"
#include "common/banned.h"

/* ---- The stub backend ---- */

static const char *stub_result; /* what run answers */
static bool stub_block;         /* run waits for its cancel */
static unsigned stub_sleep_ms;  /* run sleeps this long, calling alive */
static int stub_hook_calls;     /* how often the cancel hook ran */
static pthread_mutex_t stub_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t stub_cond = PTHREAD_COND_INITIALIZER;
static bool stub_cancelled;

static void stub_describe(void *arg, struct pbx_mcp_limits *l)
{
    l->timeout_s = 10;
    l->max_timeout_s = 60;
    l->memory_mb = 256;
    l->sessions = true;
    snprintf(l->modules, sizeof(l->modules), "math numpy");
}

static void stub_hook(void *arg)
{
    pthread_mutex_lock(&stub_lock);
    stub_hook_calls++;
    stub_cancelled = true;
    pthread_cond_broadcast(&stub_cond);
    pthread_mutex_unlock(&stub_lock);
}

static int stub_run(void *arg, void *ctx, const struct pbx_mcp_run *run, char **result,
                    struct pbx_error **err)
{
    (void)ctx;
    if (strcmp(run->code, "fail") == 0)
        return pbx_error_set(err, PBX_E_ENGINE, "the engine is down");
    if (run->session_id != NULL && strcmp(run->session_id, "ses_gone") == 0)
        return pbx_error_set(err, PBX_E_NOTFOUND, "no session `ses_gone`");
    if (stub_block) {
        if (!pbx_mcp_cancel_set_hook(run->cancel, stub_hook, NULL))
            return pbx_error_set(err, PBX_E_GONE, "cancelled");
        pthread_mutex_lock(&stub_lock);
        while (!stub_cancelled)
            pthread_cond_wait(&stub_cond, &stub_lock);
        pthread_mutex_unlock(&stub_lock);
        pbx_mcp_cancel_set_hook(run->cancel, NULL, NULL);
    }
    for (unsigned t = 0; t < stub_sleep_ms; t += 50) {
        if (run->alive != NULL)
            run->alive(run->alive_arg);
        usleep(50000);
    }
    *result = xstrdup(stub_result);
    return 0;
}

static int stub_create(void *arg, void *ctx, unsigned ttl_s, const struct pbx_mcp_file *files,
                       size_t n, char **info, struct pbx_error **err)
{
    (void)ctx;
    *info = xasprintf("{\"session_id\":\"ses_1\",\"expires_at\":null,\"limits\":{\"ttl\":%u,"
                      "\"files\":%zu}}",
                      ttl_s, n);
    return 0;
}

static int stub_close(void *arg, void *ctx, const char *id, struct pbx_error **err)
{
    (void)ctx;
    if (strcmp(id, "ses_1") != 0)
        return pbx_error_set(err, PBX_E_NOTFOUND, "no session `%s`", id);
    return 0;
}

static int stub_write(void *arg, void *ctx, const char *id, const struct pbx_mcp_file *files,
                      size_t n, struct pbx_error **err)
{
    (void)ctx;
    ck_assert_uint_eq(n, 1);
    ck_assert_uint_eq(files[0].size, 3);
    ck_assert(memcmp(files[0].data, "\x00\x01\x02", 3) == 0);
    return 0;
}

static int stub_read(void *arg, void *ctx, const char *id, const char *path, void **data,
                     size_t *size, struct pbx_error **err)
{
    (void)ctx;
    *data = xstrdup("a,b\n1,2\n");
    *size = 8;
    return 0;
}

static int stub_list(void *arg, void *ctx, const char *id, char **json, struct pbx_error **err)
{
    (void)ctx;
    *json = xstrdup("[{\"path\":\"a.csv\",\"size\":8,\"mtime\":\"2026-01-01T00:00:00.000Z\"}]");
    return 0;
}

static const struct pbx_mcp_backend stub = {
    .describe = stub_describe,
    .run = stub_run,
    .session_create = stub_create,
    .session_close = stub_close,
    .files_write = stub_write,
    .file_read = stub_read,
    .files_list = stub_list,
};

/* ---- Helpers ---- */

static unsigned sent_progress;

static void on_send(const char *json, size_t len, void *arg)
{
    json_error_t e;
    json_t *m = json_loadb(json, len, 0, &e);

    ck_assert_ptr_nonnull(m);
    ck_assert_str_eq(json_string_value(json_object_get(m, "method")), "notifications/progress");
    ck_assert_str_eq(
        json_string_value(json_object_get(json_object_get(m, "params"), "progressToken")), "tok");
    __atomic_add_fetch(&sent_progress, 1, __ATOMIC_SEQ_CST);
    json_decref(m);
}

/* Send one message and parse the answer (NULL when none). */
static json_t *ask(struct pbx_mcp *m, const char *msg)
{
    char *reply = pbx_mcp_handle(m, msg, strlen(msg), on_send, NULL);
    json_error_t e;
    json_t *j;

    if (reply == NULL)
        return NULL;
    j = json_loads(reply, 0, &e);
    ck_assert_msg(j != NULL, "not JSON: %s", reply);
    free(reply);
    return j;
}

static int error_code(json_t *r)
{
    return (int)json_integer_value(json_object_get(json_object_get(r, "error"), "code"));
}

static json_t *call(struct pbx_mcp *m, const char *tool, const char *args)
{
    char *msg = xasprintf("{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"tools/call\",\"params\":{"
                          "\"name\":\"%s\",\"arguments\":%s}}",
                          tool, args);
    json_t *r = ask(m, msg);
    json_t *res;

    free(msg);
    ck_assert_ptr_nonnull(r);
    res = json_incref(json_object_get(r, "result"));
    ck_assert_msg(res != NULL, "no result");
    json_decref(r);
    /* Every result has content and a structuredContent with a status. */
    ck_assert(json_is_array(json_object_get(res, "content")));
    ck_assert(json_is_string(json_object_get(json_object_get(res, "structuredContent"), "status")));
    return res;
}

#define SC(r, k) json_object_get(json_object_get(r, "structuredContent"), k)

/* ---- Tests ---- */

START_TEST(test_initialize)
{
    static const char *const cases[][2] = {
        {"2025-06-18", "2025-06-18"},
        {"2025-11-25", "2025-11-25"},
        {"2024-11-05", "2025-11-25"},
        {"2099-01-01", "2025-11-25"},
    };
    struct pbx_mcp *m = pbx_mcp_new(&stub, NULL);

    for (size_t i = 0; i < 4; i++) {
        char *msg = xasprintf("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\",\"params\":"
                              "{\"protocolVersion\":\"%s\",\"capabilities\":{},\"clientInfo\":{"
                              "\"name\":\"t\",\"version\":\"1\"}}}",
                              cases[i][0]);
        json_t *r = ask(m, msg), *res = json_object_get(r, "result");

        ck_assert_str_eq(json_string_value(json_object_get(res, "protocolVersion")), cases[i][1]);
        ck_assert(json_is_object(json_object_get(json_object_get(res, "capabilities"), "tools")));
        ck_assert(
            json_is_object(json_object_get(json_object_get(res, "capabilities"), "resources")));
        ck_assert_str_eq(
            json_string_value(json_object_get(json_object_get(res, "serverInfo"), "name")),
            "pybox");
        ck_assert_ptr_nonnull(
            strstr(json_string_value(json_object_get(res, "instructions")), "math numpy"));
        ck_assert_ptr_nonnull(
            strstr(json_string_value(json_object_get(res, "instructions")), "256 MiB"));
        json_decref(r);
        free(msg);
    }
    {
        json_t *r =
            ask(m, "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"initialize\",\"params\":{}}");

        ck_assert_int_eq(error_code(r), PBX_MCP_INVALID_PARAMS);
        json_decref(r);
    }
    ck_assert_ptr_null(ask(m, "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}"));
    pbx_mcp_free(m);
}
END_TEST

START_TEST(test_errors)
{
    struct pbx_mcp *m = pbx_mcp_new(&stub, NULL);
    static const struct {
        const char *msg;
        int code;
        bool id_null;
    } cases[] = {
        {"{not json", PBX_MCP_PARSE_ERROR, true},
        {"", PBX_MCP_PARSE_ERROR, true},
        {"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]"
         "]]]",
         PBX_MCP_PARSE_ERROR, true},
        {"[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}]", PBX_MCP_INVALID_REQUEST, true},
        {"42", PBX_MCP_INVALID_REQUEST, true},
        {"{\"id\":1,\"method\":\"ping\"}", PBX_MCP_INVALID_REQUEST, false},
        {"{\"jsonrpc\":\"2.0\",\"id\":1.5,\"method\":\"ping\"}", PBX_MCP_INVALID_REQUEST, true},
        {"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"nope\"}", PBX_MCP_METHOD_NOT_FOUND, false},
        {"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\",\"params\":[1]}",
         PBX_MCP_INVALID_PARAMS, false},
        {"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"rm\"}}",
         PBX_MCP_INVALID_PARAMS, false},
        {"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{}}",
         PBX_MCP_INVALID_PARAMS, false},
        {"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":"
         "\"run_python\",\"arguments\":[]}}",
         PBX_MCP_INVALID_PARAMS, false},
        {"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"resources/read\",\"params\":{}}",
         PBX_MCP_INVALID_PARAMS, false},
        {"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"resources/read\",\"params\":{\"uri\":"
         "\"pybox://results/9/x\"}}",
         -32002, false},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *r = ask(m, cases[i].msg);

        ck_assert_msg(r != NULL, "no answer to %s", cases[i].msg);
        ck_assert_msg(error_code(r) == cases[i].code, "%s: %d", cases[i].msg, error_code(r));
        ck_assert(json_is_string(json_object_get(json_object_get(r, "error"), "message")));
        if (cases[i].id_null)
            ck_assert(json_is_null(json_object_get(r, "id")));
        json_decref(r);
        /* It keeps serving. */
        r = ask(m, "{\"jsonrpc\":\"2.0\",\"id\":\"p\",\"method\":\"ping\"}");
        ck_assert(json_is_object(json_object_get(r, "result")));
        ck_assert_uint_eq(json_object_size(json_object_get(r, "result")), 0);
        ck_assert_str_eq(json_string_value(json_object_get(r, "id")), "p");
        json_decref(r);
    }
    /* Notifications and responses get no answer. */
    ck_assert_ptr_null(ask(m, "{\"jsonrpc\":\"2.0\",\"method\":\"nope\"}"));
    ck_assert_ptr_null(ask(m, "{\"jsonrpc\":\"2.0\",\"id\":3,\"result\":{}}"));
    ck_assert_ptr_null(ask(m, "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/cancelled\","
                              "\"params\":{\"requestId\":99}}"));
    pbx_mcp_free(m);
}
END_TEST

static void check_schema(json_t *s, bool input)
{
    ck_assert(json_is_object(s));
    ck_assert_str_eq(json_string_value(json_object_get(s, "type")), "object");
    ck_assert(json_is_object(json_object_get(s, "properties")));
    if (input)
        ck_assert(json_is_false(json_object_get(s, "additionalProperties")));
}

START_TEST(test_tools_list)
{
    static const char *const names[] = {"run_python", "create_session", "write_files",
                                        "read_file",  "list_files",     "close_session"};
    struct pbx_mcp *m = pbx_mcp_new(&stub, NULL);
    json_t *r = ask(m, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/list\"}");
    json_t *tools = json_object_get(json_object_get(r, "result"), "tools"), *t;
    size_t i;

    ck_assert_uint_eq(json_array_size(tools), 6);
    json_array_foreach(tools, i, t)
    {
        json_t *ann = json_object_get(t, "annotations");

        ck_assert_str_eq(json_string_value(json_object_get(t, "name")), names[i]);
        ck_assert(json_is_string(json_object_get(t, "title")));
        ck_assert_ptr_nonnull(
            strstr(json_string_value(json_object_get(t, "description")), "math numpy"));
        ck_assert_ptr_nonnull(strstr(json_string_value(json_object_get(t, "description")), "10 s"));
        check_schema(json_object_get(t, "inputSchema"), true);
        check_schema(json_object_get(t, "outputSchema"), false);
        ck_assert(json_is_boolean(json_object_get(ann, "readOnlyHint")));
        ck_assert(json_is_boolean(json_object_get(ann, "destructiveHint")));
        ck_assert(json_is_boolean(json_object_get(ann, "idempotentHint")));
        ck_assert(json_is_false(json_object_get(ann, "openWorldHint")));
    }
    /* The files items forbid other keys too. */
    t = json_object_get(
        json_object_get(json_object_get(json_array_get(tools, 0), "inputSchema"), "properties"),
        "files");
    ck_assert(json_is_false(json_object_get(json_object_get(t, "items"), "additionalProperties")));
    ck_assert(json_is_true(
        json_object_get(json_object_get(json_array_get(tools, 3), "annotations"), "readOnlyHint")));
    json_decref(r);
    pbx_mcp_free(m);
}
END_TEST

START_TEST(test_run_ok_and_error)
{
    struct pbx_mcp *m = pbx_mcp_new(&stub, NULL);
    json_t *r;

    stub_result = "{\"status\":\"ok\",\"exit_code\":0,\"stdout\":\"2\\n\",\"stderr\":\"\","
                  "\"stdout_truncated\":false,\"stderr_truncated\":false,\"outputs\":[{\"type\":"
                  "\"result\",\"data\":{\"text/plain\":\"42\"},\"metadata\":{}}],\"files\":{},"
                  "\"error\":null,\"duration_ms\":3.5}";
    r = call(m, "run_python", "{\"code\":\"print(1+1)\",\"session_id\":\"ses_1\"}");
    ck_assert(json_is_false(json_object_get(r, "isError")));
    ck_assert_str_eq(json_string_value(SC(r, "stdout")), "2\n");
    ck_assert_str_eq(json_string_value(SC(r, "value")), "42");
    ck_assert_str_eq(json_string_value(SC(r, "session_id")), "ses_1");
    ck_assert_int_eq(json_integer_value(SC(r, "exit_code")), 0);
    ck_assert(json_is_null(SC(r, "error")));
    ck_assert_ptr_nonnull(strstr(json_string_value(json_object_get(
                                     json_array_get(json_object_get(r, "content"), 0), "text")),
                                 "2\n"));
    json_decref(r);

    stub_result = "{\"status\":\"error\",\"exit_code\":1,\"stdout\":\"\",\"stderr\":\"Traceback\","
                  "\"outputs\":[],\"files\":{},\"error\":{\"type\":\"ZeroDivisionError\","
                  "\"message\":\"division by zero\",\"traceback\":\"Traceback\"}}";
    r = call(m, "run_python", "{\"code\":\"1/0\"}");
    ck_assert(json_is_true(json_object_get(r, "isError")));
    ck_assert_str_eq(json_string_value(json_object_get(SC(r, "error"), "type")),
                     "ZeroDivisionError");
    ck_assert(json_is_null(SC(r, "session_id")));
    json_decref(r);

    /* A timeout: no exit code, still isError. */
    stub_result = "{\"status\":\"timeout\",\"exit_code\":null,\"stdout\":\"\",\"stderr\":\"\"}";
    r = call(m, "run_python", "{\"code\":\"while 1: pass\",\"timeout_ms\":100}");
    ck_assert(json_is_true(json_object_get(r, "isError")));
    ck_assert_str_eq(json_string_value(SC(r, "status")), "timeout");
    ck_assert(json_is_null(SC(r, "exit_code")));
    json_decref(r);

    /* Bad arguments, a backend error, a gone session: isError with structuredContent. */
    r = call(m, "run_python", "{}");
    ck_assert(json_is_true(json_object_get(r, "isError")));
    ck_assert_str_eq(json_string_value(json_object_get(SC(r, "error"), "type")),
                     "InvalidArguments");
    json_decref(r);
    r = call(m, "run_python", "{\"code\":\"x\",\"bogus\":1}");
    ck_assert(json_is_true(json_object_get(r, "isError")));
    json_decref(r);
    r = call(m, "run_python", "{\"code\":\"x\",\"timeout_ms\":600000}");
    ck_assert(json_is_true(json_object_get(r, "isError")));
    json_decref(r);
    r = call(m, "run_python",
             "{\"code\":\"x\",\"files\":[{\"path\":\"a\",\"content\":\"!!\","
             "\"encoding\":\"base64\"}]}");
    ck_assert(json_is_true(json_object_get(r, "isError")));
    json_decref(r);
    r = call(m, "run_python", "{\"code\":\"fail\"}");
    ck_assert(json_is_true(json_object_get(r, "isError")));
    ck_assert_ptr_nonnull(strstr(json_string_value(json_object_get(SC(r, "error"), "message")),
                                 "the engine is down"));
    json_decref(r);
    r = call(m, "run_python", "{\"code\":\"x\",\"session_id\":\"ses_gone\"}");
    ck_assert(json_is_true(json_object_get(r, "isError")));
    ck_assert_ptr_nonnull(
        strstr(json_string_value(json_object_get(SC(r, "error"), "message")), "create_session"));
    json_decref(r);
    pbx_mcp_free(m);
}
END_TEST

static json_t *read_resource(struct pbx_mcp *m, const char *uri)
{
    char *msg = xasprintf("{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"resources/read\",\"params\":"
                          "{\"uri\":\"%s\"}}",
                          uri);
    json_t *r = ask(m, msg);

    free(msg);
    return r;
}

START_TEST(test_images_files_caps)
{
    struct pbx_mcp_options o = {.text_max = 1000};
    struct pbx_mcp *m = pbx_mcp_new(&stub, &o);
    json_t *r, *content, *it, *rr, *c0;
    const char *file_uri = NULL, *out_uri;
    char *big, *result;
    int images = 0, links = 0;
    size_t i;

    big = xmalloc(5001);
    memset(big, 'x', 5000);
    big[5000] = '\0';
    result = xasprintf("{\"status\":\"ok\",\"exit_code\":0,\"stdout\":\"%s\",\"stderr\":\"\","
                       "\"outputs\":[{\"type\":\"display\",\"data\":{\"image/png\":"
                       "\"iVBORw0KGgo=\",\"text/plain\":\"<Figure>\"},\"metadata\":{}}],"
                       "\"files\":{\"out.txt\":{\"content_base64\":\"aGVsbG8=\",\"size\":5},"
                       "\"missing.txt\":{\"error\":\"not found\"}}}",
                       big);
    stub_result = result;
    r = call(m, "run_python", "{\"code\":\"x\",\"return_files\":[\"out.txt\",\"missing.txt\"]}");
    ck_assert(json_is_false(json_object_get(r, "isError")));
    content = json_object_get(r, "content");
    json_array_foreach(content, i, it)
    {
        const char *type = json_string_value(json_object_get(it, "type"));

        if (strcmp(type, "image") == 0) {
            images++;
            ck_assert_str_eq(json_string_value(json_object_get(it, "mimeType")), "image/png");
            ck_assert_str_eq(json_string_value(json_object_get(it, "data")), "iVBORw0KGgo=");
        } else if (strcmp(type, "resource_link") == 0) {
            links++;
            if (strcmp(json_string_value(json_object_get(it, "name")), "out.txt") == 0)
                file_uri = json_string_value(json_object_get(it, "uri"));
        }
    }
    ck_assert_int_eq(images, 1);
    ck_assert_int_eq(links, 2); /* out.txt and the whole stdout */
    ck_assert_ptr_nonnull(file_uri);
    ck_assert_uint_eq(json_array_size(SC(r, "files")), 2);
    /* stdout cut to the cap, the whole behind stdout_uri. */
    ck_assert_uint_eq(json_string_length(SC(r, "stdout")), 1000);
    ck_assert(json_is_true(SC(r, "stdout_truncated")));
    out_uri = json_string_value(SC(r, "stdout_uri"));
    ck_assert_ptr_nonnull(out_uri);
    c0 = json_array_get(content, 0);
    ck_assert_str_eq(json_string_value(json_object_get(c0, "type")), "text");
    ck_assert_uint_lt(json_string_length(json_object_get(c0, "text")), 1500);

    rr = read_resource(m, file_uri);
    it = json_array_get(json_object_get(json_object_get(rr, "result"), "contents"), 0);
    ck_assert_str_eq(json_string_value(json_object_get(it, "text")), "hello");
    ck_assert_str_eq(json_string_value(json_object_get(it, "mimeType")), "text/plain");
    json_decref(rr);
    rr = read_resource(m, out_uri);
    it = json_array_get(json_object_get(json_object_get(rr, "result"), "contents"), 0);
    ck_assert_str_eq(json_string_value(json_object_get(it, "text")), big);
    json_decref(rr);
    rr = ask(m, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"resources/list\"}");
    ck_assert_uint_eq(json_array_size(json_object_get(json_object_get(rr, "result"), "resources")),
                      2);
    json_decref(rr);
    json_decref(r);
    free(result);
    free(big);
    pbx_mcp_free(m);
}
END_TEST

START_TEST(test_store_bound)
{
    struct pbx_mcp_options o = {.store_max = 12};
    struct pbx_mcp *m = pbx_mcp_new(&stub, &o);
    json_t *r1, *r2, *rr;
    const char *u1, *u2;

    /* Each read keeps 8 bytes: the second evicts the first. */
    r1 = call(m, "read_file", "{\"session_id\":\"ses_1\",\"path\":\"a.csv\"}");
    ck_assert_str_eq(json_string_value(SC(r1, "text")), "a,b\n1,2\n");
    ck_assert_str_eq(json_string_value(SC(r1, "mime_type")), "text/csv");
    r2 = call(m, "read_file", "{\"session_id\":\"ses_1\",\"path\":\"a.csv\"}");
    u1 = json_string_value(SC(r1, "uri"));
    u2 = json_string_value(SC(r2, "uri"));
    ck_assert_str_ne(u1, u2);
    rr = read_resource(m, u1);
    ck_assert_int_eq(error_code(rr), -32002);
    json_decref(rr);
    rr = read_resource(m, u2);
    ck_assert(json_is_object(json_object_get(rr, "result")));
    json_decref(rr);
    json_decref(r1);
    json_decref(r2);
    pbx_mcp_free(m);
}
END_TEST

START_TEST(test_sessions)
{
    struct pbx_mcp *m = pbx_mcp_new(&stub, NULL);
    json_t *r;

    r = call(m, "create_session",
             "{\"ttl_seconds\":60,\"files\":[{\"path\":\"a\",\"content\":"
             "\"x\"}]}");
    ck_assert(json_is_false(json_object_get(r, "isError")));
    ck_assert_str_eq(json_string_value(SC(r, "session_id")), "ses_1");
    ck_assert_int_eq(json_integer_value(json_object_get(SC(r, "limits"), "ttl")), 60);
    ck_assert_int_eq(json_integer_value(json_object_get(SC(r, "limits"), "files")), 1);
    json_decref(r);
    r = call(m, "write_files",
             "{\"session_id\":\"ses_1\",\"files\":[{\"path\":\"b.bin\","
             "\"content\":\"AAEC\",\"encoding\":\"base64\"}]}");
    ck_assert(json_is_false(json_object_get(r, "isError")));
    ck_assert_str_eq(json_string_value(json_array_get(SC(r, "written"), 0)), "b.bin");
    json_decref(r);
    r = call(m, "list_files", "{\"session_id\":\"ses_1\"}");
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(SC(r, "files"), 0), "path")),
                     "a.csv");
    json_decref(r);
    r = call(m, "close_session", "{\"session_id\":\"ses_1\"}");
    ck_assert(json_is_false(json_object_get(r, "isError")));
    json_decref(r);
    r = call(m, "close_session", "{\"session_id\":\"ses_2\"}");
    ck_assert(json_is_true(json_object_get(r, "isError")));
    json_decref(r);
    r = call(m, "close_session", "{}");
    ck_assert(json_is_true(json_object_get(r, "isError")));
    json_decref(r);
    r = call(m, "create_session", "{\"ttl_seconds\":\"x\"}");
    ck_assert(json_is_true(json_object_get(r, "isError")));
    json_decref(r);
    pbx_mcp_free(m);
}
END_TEST

struct runner {
    struct pbx_mcp *m;
    struct pbx_mcp_call *call;
    char *reply;
};

static void *runner_main(void *arg)
{
    struct runner *r = arg;

    r->reply = pbx_mcp_call_run(r->m, r->call, on_send, NULL);
    return NULL;
}

START_TEST(test_cancel)
{
    struct pbx_mcp *m = pbx_mcp_new(&stub, NULL);
    const char *msg = "{\"jsonrpc\":\"2.0\",\"id\":\"c1\",\"method\":\"tools/call\",\"params\":{"
                      "\"name\":\"run_python\",\"arguments\":{\"code\":\"x\"}}}";
    struct runner r = {m, NULL, NULL};
    char *reply = NULL;
    pthread_t t;
    json_t *j;

    stub_result = "{\"status\":\"error\",\"exit_code\":1}";
    stub_block = true;
    r.call = pbx_mcp_accept(m, msg, strlen(msg), &reply);
    ck_assert_ptr_nonnull(r.call);
    ck_assert_ptr_null(reply);
    /* The same id again while it runs: refused. */
    j = ask(m, msg);
    ck_assert_int_eq(error_code(j), PBX_MCP_INVALID_REQUEST);
    json_decref(j);
    ck_assert_int_eq(pthread_create(&t, NULL, runner_main, &r), 0);
    /* ping answers while the call runs. */
    j = ask(m, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}");
    ck_assert(json_is_object(json_object_get(j, "result")));
    json_decref(j);
    usleep(100000);
    ck_assert_ptr_null(ask(m, "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/cancelled\","
                              "\"params\":{\"requestId\":\"c1\",\"reason\":\"user\"}}"));
    pthread_join(t, NULL);
    ck_assert_ptr_null(r.reply); /* a cancelled request is not answered */
    ck_assert_int_eq(stub_hook_calls, 1);
    /* Cancelled before it ran: the backend's hook refuses, no answer. */
    stub_cancelled = false;
    r.call = pbx_mcp_accept(m, msg, strlen(msg), &reply);
    ck_assert_ptr_nonnull(r.call);
    pbx_mcp_cancel_all(m);
    ck_assert_ptr_null(pbx_mcp_call_run(m, r.call, on_send, NULL));
    stub_block = false;
    pbx_mcp_free(m);
}
END_TEST

START_TEST(test_progress)
{
    struct pbx_mcp *m = pbx_mcp_new(&stub, NULL);
    json_t *j;

    stub_result = "{\"status\":\"ok\",\"exit_code\":0}";
    stub_sleep_ms = 2300;
    j = ask(m, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":"
               "\"run_python\",\"arguments\":{\"code\":\"x\"},\"_meta\":{\"progressToken\":"
               "\"tok\"}}}");
    ck_assert(json_is_false(json_object_get(json_object_get(j, "result"), "isError")));
    ck_assert_uint_ge(sent_progress, 2);
    ck_assert_uint_le(sent_progress, 3);
    json_decref(j);
    /* No token, no progress. */
    sent_progress = 0;
    stub_sleep_ms = 1200;
    j = ask(m, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":"
               "\"run_python\",\"arguments\":{\"code\":\"x\"}}}");
    ck_assert_uint_eq(sent_progress, 0);
    json_decref(j);
    pbx_mcp_free(m);
}
END_TEST

static Suite *mcp_suite(void)
{
    Suite *s = suite_create("mcp");
    TCase *tc = tcase_create("mcp");

    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_initialize);
    tcase_add_test(tc, test_errors);
    tcase_add_test(tc, test_tools_list);
    tcase_add_test(tc, test_run_ok_and_error);
    tcase_add_test(tc, test_images_files_caps);
    tcase_add_test(tc, test_store_bound);
    tcase_add_test(tc, test_sessions);
    tcase_add_test(tc, test_cancel);
    tcase_add_test(tc, test_progress);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(mcp_suite());
    int failed;

    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
