/*
 * The MCP tools (mcp.h): their table and schemas, their arguments checked,
 * the backend called, and pybox's result object turned into a CallToolResult
 * (structuredContent per the output schema, a compact text block, an image
 * per PNG output, a resource_link per file and per output cut short).
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <sodium.h>

#include "common/buf.h"
#include "common/utf8.h"
#include "common/xalloc.h"
#include "mcp/mcp_internal.h"
#include "common/banned.h"

#define FILES_MAX  64         /* files in one call */
#define IMAGES_MAX 4          /* image items in one result; more are linked */
#define IMAGE_B64  (3u << 20) /* base64 bytes of images in one result; more are linked */

enum tool_id { T_RUN, T_CREATE, T_WRITE, T_READ, T_LIST, T_CLOSE };

#define FILES_SCHEMA                                                                            \
    "{\"type\":\"array\",\"maxItems\":64,\"description\":\"Files to put in /work first.\","     \
    "\"items\":{\"type\":\"object\",\"additionalProperties\":false,\"required\":[\"path\","     \
    "\"content\"],\"properties\":{\"path\":{\"type\":\"string\",\"description\":\"Relative to " \
    "/work, e.g. data.csv.\"},\"content\":{\"type\":\"string\"},\"encoding\":{\"type\":"        \
    "\"string\",\"enum\":[\"utf-8\",\"base64\"],\"default\":\"utf-8\"}}}}"
#define SID_SCHEMA \
    "\"session_id\":{\"type\":\"string\",\"description\":\"A session from create_session.\"}"
#define ERROR_SCHEMA                                                                             \
    "\"status\":{\"type\":\"string\"},\"error\":{\"type\":[\"object\",\"null\"],\"properties\":" \
    "{\"type\":{\"type\":\"string\"},\"message\":{\"type\":\"string\"},\"traceback\":{\"type\":" \
    "[\"string\",\"null\"]}}}"

struct tool {
    const char *name;
    const char *title;
    const char *description;
    const char *input;  /* its input schema, JSON text */
    const char *output; /* its output schema, JSON text */
    bool read_only, destructive, idempotent;
    bool needs_sessions; /* listed only when the backend has sessions */
};

static const struct tool tools[] = {
    [T_RUN] = {"run_python", "Run Python",
               "Run Python 3 code in an isolated sandbox and get its stdout, stderr, exit code, "
               "the value of its last expression (in a session), charts as images and files. "
               "Without session_id each call is a fresh interpreter; with one, variables and "
               "files persist between calls.",
               "{\"type\":\"object\",\"additionalProperties\":false,\"required\":[\"code\"],"
               "\"properties\":{\"code\":{\"type\":\"string\",\"description\":\"Python source, "
               "run as main.py in /work.\"}," SID_SCHEMA ",\"stdin\":{\"type\":\"string\"},"
               "\"files\":" FILES_SCHEMA ",\"return_files\":{\"type\":\"array\",\"maxItems\":64,"
               "\"items\":{\"type\":\"string\"},\"description\":\"Names or globs of files in "
               "/work to return after the run.\"},\"timeout_ms\":{\"type\":\"integer\","
               "\"minimum\":1}}}",
               "{\"type\":\"object\",\"required\":[\"status\"],\"properties\":{" ERROR_SCHEMA
               ",\"exit_code\":{\"type\":[\"integer\",\"null\"]},\"stdout\":{\"type\":"
               "\"string\"},\"stderr\":{\"type\":\"string\"},\"stdout_truncated\":{\"type\":"
               "\"boolean\"},\"stderr_truncated\":{\"type\":\"boolean\"},\"stdout_uri\":{\"type\":"
               "[\"string\",\"null\"]},\"stderr_uri\":{\"type\":[\"string\",\"null\"]},\"value\":"
               "{\"type\":[\"string\",\"null\"]},\"duration_ms\":{\"type\":[\"number\",\"null\"]},"
               "\"files\":{\"type\":\"array\",\"items\":{\"type\":\"object\",\"properties\":{"
               "\"name\":{\"type\":\"string\"},\"size\":{\"type\":\"integer\"},\"mime_type\":{"
               "\"type\":\"string\"},\"uri\":{\"type\":\"string\"},\"error\":{\"type\":"
               "\"string\"}}}},\"session_id\":{\"type\":[\"string\",\"null\"]}}}",
               false, true, false, false},
    [T_CREATE] = {"create_session", "Create a Python session",
                  "Open a persistent Python session: its variables, imports and /work files stay "
                  "between run_python calls that pass its session_id. Close it when done.",
                  "{\"type\":\"object\",\"additionalProperties\":false,\"properties\":{"
                  "\"ttl_seconds\":{\"type\":\"integer\",\"minimum\":1,\"description\":\"End it "
                  "after this long without a call.\"},\"files\":" FILES_SCHEMA "}}",
                  "{\"type\":\"object\",\"required\":[\"status\"],\"properties\":{" ERROR_SCHEMA
                  ",\"session_id\":{\"type\":\"string\"},\"expires_at\":{\"type\":[\"string\","
                  "\"null\"]},\"limits\":{\"type\":\"object\"}}}",
                  false, false, false, true},
    [T_WRITE] = {"write_files", "Write files into a session",
                 "Write files into a session's /work (replacing files of the same path).",
                 "{\"type\":\"object\",\"additionalProperties\":false,\"required\":[\"session_id\","
                 "\"files\"],\"properties\":{" SID_SCHEMA ",\"files\":" FILES_SCHEMA "}}",
                 "{\"type\":\"object\",\"required\":[\"status\"],\"properties\":{" ERROR_SCHEMA
                 ",\"session_id\":{\"type\":\"string\"},\"written\":{\"type\":\"array\","
                 "\"items\":{\"type\":\"string\"}}}}",
                 false, true, true, true},
    [T_READ] = {"read_file", "Read a file of a session",
                "Read one file of a session's /work: its text when it is short UTF-8 text, and a "
                "resource link to its bytes.",
                "{\"type\":\"object\",\"additionalProperties\":false,\"required\":[\"session_id\","
                "\"path\"],\"properties\":{" SID_SCHEMA ",\"path\":{\"type\":\"string\"}}}",
                "{\"type\":\"object\",\"required\":[\"status\"],\"properties\":{" ERROR_SCHEMA
                ",\"session_id\":{\"type\":\"string\"},\"path\":{\"type\":\"string\"},\"size\":{"
                "\"type\":\"integer\"},\"mime_type\":{\"type\":\"string\"},\"uri\":{\"type\":["
                "\"string\",\"null\"]},\"text\":{\"type\":[\"string\",\"null\"]}}}",
                true, false, true, true},
    [T_LIST] = {"list_files", "List the files of a session",
                "List the regular files of a session's /work, recursively, with sizes.",
                "{\"type\":\"object\",\"additionalProperties\":false,\"required\":[\"session_id\"],"
                "\"properties\":{" SID_SCHEMA "}}",
                "{\"type\":\"object\",\"required\":[\"status\"],\"properties\":{" ERROR_SCHEMA
                ",\"session_id\":{\"type\":\"string\"},\"files\":{\"type\":\"array\",\"items\":{"
                "\"type\":\"object\",\"properties\":{\"path\":{\"type\":\"string\"},\"size\":{"
                "\"type\":\"integer\"},\"mtime\":{\"type\":\"string\"}}}}}}",
                true, false, true, true},
    [T_CLOSE] =
        {"close_session", "Close a session",
         "End a session: its interpreter, variables and files are gone.",
         "{\"type\":\"object\",\"additionalProperties\":false,\"required\":[\"session_id\"],"
         "\"properties\":{" SID_SCHEMA "}}",
         "{\"type\":\"object\",\"required\":[\"status\"],\"properties\":{" ERROR_SCHEMA
         ",\"session_id\":{\"type\":\"string\"}}}",
         false, true, true, true},
};

#define NTOOLS (sizeof(tools) / sizeof(tools[0]))

int pbx__mcp_tool_find(const char *name)
{
    for (size_t i = 0; i < NTOOLS; i++) {
        if (strcmp(tools[i].name, name) == 0)
            return (int)i;
    }
    return -1;
}

/* One sentence of the limits in force (malloc'ed). */
static char *limits_text(const struct pbx_mcp_limits *l)
{
    char mem[64] = "", max[64] = "";

    if (l->memory_mb > 0)
        snprintf(mem, sizeof(mem), ", %u MiB of memory", l->memory_mb);
    if (l->max_timeout_s > 0)
        snprintf(max, sizeof(max), " (at most %g s through timeout_ms)", l->max_timeout_s);
    return xasprintf(
        "Limits: %g s of wall-clock time per run by default%s%s, %s; only /work is writable. "
        "Importable modules: %s.",
        l->timeout_s > 0 ? l->timeout_s : 10.0, max, mem,
        l->network ? "network access" : "no network access",
        l->modules[0] == '\0' ? "the Python standard library's safe part and the installed "
                                "scientific packages"
        : strcmp(l->modules, "*") == 0 ? "any installed module"
                                       : l->modules);
}

char *pbx__mcp_instructions(const struct pbx_mcp_limits *l)
{
    char *lim = limits_text(l);
    char *out = xasprintf(
        "pybox runs Python 3 in a kernel sandbox. Use run_python for code; %s%s "
        "Charts (matplotlib plt.show()) come back as images, files as resource links "
        "(resources/read). A result with isError true still has structuredContent: read its "
        "stderr and error.",
        l->sessions ? "create_session keeps state between calls (pass its session_id to "
                      "run_python; close_session when done). "
                    : "",
        lim);

    free(lim);
    return out;
}

json_t *pbx__mcp_tools_new(const struct pbx_mcp_limits *l)
{
    json_t *list = json_array();
    char *lim = limits_text(l);

    for (size_t i = 0; i < NTOOLS; i++) {
        const struct tool *t = &tools[i];
        json_error_t jerr;
        json_t *in, *out;
        char *desc;

        if (t->needs_sessions && !l->sessions)
            continue;
        in = json_loads(t->input, 0, &jerr);
        out = json_loads(t->output, 0, &jerr);
        PBX_ASSERT(in != NULL && out != NULL);
        desc = xasprintf("%s %s", t->description, lim);
        json_array_append_new(
            list, json_pack("{s:s, s:s, s:s, s:o, s:o, s:{s:s, s:b, s:b, s:b, s:b}}", "name",
                            t->name, "title", t->title, "description", desc, "inputSchema", in,
                            "outputSchema", out, "annotations", "title", t->title, "readOnlyHint",
                            t->read_only, "destructiveHint", t->destructive, "idempotentHint",
                            t->idempotent, "openWorldHint", l->network));
        free(desc);
    }
    free(lim);
    return list;
}

bool pbx__mcp_is_text(const char *mime, const void *data, size_t size)
{
    if (memchr(data, '\0', size) != NULL || !pbx_utf8_valid(data, size))
        return false;
    return mime == NULL || strncmp(mime, "text/", 5) == 0 || strstr(mime, "json") != NULL ||
           strstr(mime, "xml") != NULL || strstr(mime, "csv") != NULL;
}

static const char *mime_of(const char *name)
{
    static const struct {
        const char *ext, *mime;
    } map[] = {
        {".png", "image/png"},  {".jpg", "image/jpeg"},      {".jpeg", "image/jpeg"},
        {".gif", "image/gif"},  {".svg", "image/svg+xml"},   {".csv", "text/csv"},
        {".txt", "text/plain"}, {".md", "text/markdown"},    {".json", "application/json"},
        {".html", "text/html"}, {".py", "text/x-python"},    {".pdf", "application/pdf"},
        {".log", "text/plain"}, {".xml", "application/xml"}, {".tsv", "text/tab-separated-values"},
    };
    size_t n = strlen(name);

    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
        size_t e = strlen(map[i].ext);

        if (n > e && strcasecmp(name + n - e, map[i].ext) == 0)
            return map[i].mime;
    }
    return "application/octet-stream";
}

/* ---- Results ---- */

/* An isError result with a structuredContent valid under every output schema. */
static json_t *tool_error(const char *type, const char *msg)
{
    return json_pack("{s:[{s:s, s:s}], s:{s:s, s:{s:s, s:s, s:n}}, s:b}", "content", "type", "text",
                     "text", msg, "structuredContent", "status", "error", "error", "type", type,
                     "message", msg, "traceback", "isError", 1);
}

static json_t *backend_error(struct pbx_error **err, const char *what)
{
    char *msg = xasprintf("%s: %s", what, (*err)->msg);
    json_t *res;

    if ((*err)->code == PBX_E_NOTFOUND && strstr(what, "session") != NULL) {
        free(msg);
        msg = xasprintf("%s: %s (the session may have expired or been closed: create a new "
                        "one with create_session)",
                        what, (*err)->msg);
    }
    res = tool_error((*err)->code == PBX_E_NOTFOUND ? "NotFound"
                     : (*err)->code == PBX_E_INVAL  ? "InvalidArguments"
                                                    : "BackendError",
                     msg);
    free(msg);
    pbx_error_free(err);
    return res;
}

static json_t *ok_result(json_t *structured, const char *text)
{
    return json_pack("{s:[{s:s, s:s}], s:o, s:b}", "content", "type", "text", "text", text,
                     "structuredContent", structured, "isError", 0);
}

/* ---- Arguments ---- */

struct files {
    struct pbx_mcp_file v[FILES_MAX];
    void *owned[FILES_MAX];
    size_t n;
};

static void files_release(struct files *f)
{
    for (size_t i = 0; i < f->n; i++)
        free(f->owned[i]);
}

/* Parse a files argument; NULL on success, else the message (static). */
static const char *files_parse(json_t *arr, struct files *f)
{
    size_t i;
    json_t *it;

    f->n = 0;
    if (arr == NULL)
        return NULL;
    if (!json_is_array(arr))
        return "files must be an array of {path, content, encoding}";
    if (json_array_size(arr) > FILES_MAX)
        return "too many files (at most 64)";
    json_array_foreach(arr, i, it)
    {
        const char *path = json_string_value(json_object_get(it, "path"));
        json_t *c = json_object_get(it, "content");
        const char *enc = json_string_value(json_object_get(it, "encoding"));
        const char *k;
        json_t *v;

        if (!json_is_object(it) || path == NULL || !json_is_string(c))
            return "each file needs a string path and a string content";
        json_object_foreach(it, k, v)
        {
            if (strcmp(k, "path") != 0 && strcmp(k, "content") != 0 && strcmp(k, "encoding") != 0)
                return "a file has only path, content and encoding";
        }
        f->v[f->n].path = path;
        if (enc == NULL || strcmp(enc, "utf-8") == 0) {
            f->owned[f->n] = NULL;
            f->v[f->n].data = json_string_value(c);
            f->v[f->n].size = json_string_length(c);
        } else if (strcmp(enc, "base64") == 0) {
            size_t len = json_string_length(c), n = 0;
            unsigned char *bin = xmalloc(len / 4 * 3 + 3);

            if (sodium_base642bin(bin, len / 4 * 3 + 3, json_string_value(c), len, " \n\r", &n,
                                  NULL, sodium_base64_VARIANT_ORIGINAL) != 0) {
                free(bin);
                return "a file's content is not valid base64";
            }
            f->owned[f->n] = bin;
            f->v[f->n].data = bin;
            f->v[f->n].size = n;
        } else {
            return "encoding is utf-8 or base64";
        }
        f->n++;
    }
    return NULL;
}

/* Refuse unknown arguments (the schemas say additionalProperties: false). */
static const char *args_known(json_t *args, const char *const *names)
{
    const char *k;
    json_t *v;

    json_object_foreach(args, k, v)
    {
        size_t i;

        for (i = 0; names[i] != NULL; i++) {
            if (strcmp(k, names[i]) == 0)
                break;
        }
        if (names[i] == NULL)
            return k;
    }
    return NULL;
}

/* The error of an argument that `tool` does not have. */
static json_t *bad_args(const char *tool, const char *arg)
{
    char *msg = xasprintf("%s has no argument `%s`", tool, arg);
    json_t *r = tool_error("InvalidArguments", msg);

    free(msg);
    return r;
}

/* ---- Progress ---- */

struct ticker {
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool stop;
    unsigned events; /* how often the backend said the run is alive */
    json_t *token;
    pbx_mcp_send_fn send;
    void *arg;
};

static void on_alive(void *arg)
{
    struct ticker *t = arg;

    pthread_mutex_lock(&t->lock);
    t->events++;
    pthread_mutex_unlock(&t->lock);
}

static void *ticker_main(void *arg)
{
    struct ticker *t = arg;
    struct timespec start, at;
    unsigned n = 0;

    clock_gettime(CLOCK_MONOTONIC, &start);
    pthread_mutex_lock(&t->lock);
    for (;;) {
        char *msg, text[96];
        json_t *note;

        at = start;
        at.tv_sec += ++n;
        while (!t->stop && pthread_cond_timedwait(&t->cond, &t->lock, &at) != ETIMEDOUT)
            ;
        if (t->stop)
            break;
        snprintf(text, sizeof(text), "running for %u s (%u output events)", n, t->events);
        note = json_pack("{s:s, s:s, s:{s:O, s:i, s:s}}", "jsonrpc", "2.0", "method",
                         "notifications/progress", "params", "progressToken", t->token, "progress",
                         n, "message", text);
        msg = json_dumps(note, JSON_COMPACT);
        json_decref(note);
        pthread_mutex_unlock(&t->lock);
        if (msg != NULL)
            t->send(msg, strlen(msg), t->arg);
        free(msg);
        pthread_mutex_lock(&t->lock);
    }
    pthread_mutex_unlock(&t->lock);
    return NULL;
}

static void ticker_start(struct ticker *t, json_t *token, pbx_mcp_send_fn send, void *arg)
{
    pthread_condattr_t ca;

    memset(t, 0, sizeof(*t));
    t->token = token;
    t->send = send;
    t->arg = arg;
    pthread_mutex_init(&t->lock, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&t->cond, &ca);
    pthread_condattr_destroy(&ca);
    PBX_ASSERT(pthread_create(&t->thread, NULL, ticker_main, t) == 0);
}

static void ticker_stop(struct ticker *t)
{
    pthread_mutex_lock(&t->lock);
    t->stop = true;
    pthread_cond_signal(&t->cond);
    pthread_mutex_unlock(&t->lock);
    pthread_join(t->thread, NULL);
    pthread_cond_destroy(&t->cond);
    pthread_mutex_destroy(&t->lock);
}

/* ---- run_python's result ---- */

/*
 * Cut a stream to `max` bytes (at a character boundary) into `out`; the
 * whole kept as a resource when cut, its URI in *uri.
 */
static json_t *cut_stream(struct pbx_mcp *m, const char *name, json_t *s, char **uri)
{
    const char *text = json_string_value(s);
    size_t len = json_string_length(s), n;

    *uri = NULL;
    if (text == NULL)
        return json_string("");
    if (len <= m->opts.text_max)
        return json_stringn(text, len);
    n = m->opts.text_max;
    n -= pbx_utf8_partial_tail(text, n);
    *uri = pbx__mcp_store_put(m, name, "text/plain", xmemdup(text, len), len);
    return json_stringn(text, n);
}

static void link_item(json_t *content, const char *uri, const char *name, const char *mime,
                      size_t size)
{
    json_array_append_new(content,
                          json_pack("{s:s, s:s, s:s, s:s, s:I}", "type", "resource_link", "uri",
                                    uri, "name", name, "mimeType", mime, "size", (json_int_t)size));
}

static json_t *format_run(struct pbx_mcp *m, const char *result_text, const char *session_id)
{
    json_error_t jerr;
    json_t *res = json_loads(result_text, 0, &jerr);
    json_t *st, *content, *files, *outputs, *err, *it, *value = json_null();
    const char *status, *k;
    char *out_uri = NULL, *err_uri = NULL;
    struct pbx_buf text;
    json_t *jout, *jerrs;
    json_int_t exit_code;
    bool is_error;
    size_t i, images = 0, image_bytes = 0;

    if (res == NULL || !json_is_object(res))
        return json_decref(res), tool_error("BackendError", "the backend's result is not JSON");
    status = json_string_value(json_object_get(res, "status"));
    if (status == NULL)
        status = "error";
    exit_code = json_integer_value(json_object_get(res, "exit_code"));
    is_error = strcmp(status, "ok") != 0 || !json_is_integer(json_object_get(res, "exit_code")) ||
               exit_code != 0;
    content = json_array();
    files = json_array();
    jout = cut_stream(m, "stdout.txt", json_object_get(res, "stdout"), &out_uri);
    jerrs = cut_stream(m, "stderr.txt", json_object_get(res, "stderr"), &err_uri);

    outputs = json_object_get(res, "outputs");
    json_array_foreach(outputs, i, it)
    {
        json_t *data = json_object_get(it, "data");
        const char *type = json_string_value(json_object_get(it, "type"));
        const char *png = json_string_value(json_object_get(data, "image/png"));

        if (type != NULL && strcmp(type, "result") == 0 &&
            json_is_string(json_object_get(data, "text/plain")) && json_is_null(value))
            value = json_incref(json_object_get(data, "text/plain"));
        if (png == NULL)
            continue;
        if (images < IMAGES_MAX && image_bytes + strlen(png) <= IMAGE_B64) {
            json_array_append_new(content, json_pack("{s:s, s:s, s:s}", "type", "image", "data",
                                                     png, "mimeType", "image/png"));
            images++;
            image_bytes += strlen(png);
        } else {
            size_t blen = strlen(png), n = 0;
            unsigned char *bin = xmalloc(blen / 4 * 3 + 3);
            char *uri;

            if (sodium_base642bin(bin, blen / 4 * 3 + 3, png, blen, NULL, &n, NULL,
                                  sodium_base64_VARIANT_ORIGINAL) != 0) {
                free(bin);
                continue;
            }
            uri = pbx__mcp_store_put(m, "figure.png", "image/png", bin, n);
            if (uri != NULL)
                link_item(content, uri, "figure.png", "image/png", n);
            free(uri);
        }
    }

    json_object_foreach(json_object_get(res, "files"), k, it)
    {
        const char *b64 = json_string_value(json_object_get(it, "content_base64"));
        const char *ferr = json_string_value(json_object_get(it, "error"));
        const char *mime = mime_of(k);
        size_t blen, n = 0;
        unsigned char *bin;
        char *uri;

        if (b64 == NULL) {
            json_array_append_new(files, json_pack("{s:s, s:s}", "name", k, "error",
                                                   ferr != NULL ? ferr : "not returned"));
            continue;
        }
        blen = strlen(b64);
        bin = xmalloc(blen / 4 * 3 + 3);
        if (sodium_base642bin(bin, blen / 4 * 3 + 3, b64, blen, NULL, &n, NULL,
                              sodium_base64_VARIANT_ORIGINAL) != 0) {
            free(bin);
            json_array_append_new(files, json_pack("{s:s, s:s}", "name", k, "error", "bad base64"));
            continue;
        }
        uri = pbx__mcp_store_put(m, k, mime, bin, n);
        if (uri == NULL) {
            json_array_append_new(files, json_pack("{s:s, s:I, s:s, s:s}", "name", k, "size",
                                                   (json_int_t)n, "mime_type", mime, "error",
                                                   "too large to keep"));
            continue;
        }
        json_array_append_new(files, json_pack("{s:s, s:I, s:s, s:s}", "name", k, "size",
                                               (json_int_t)n, "mime_type", mime, "uri", uri));
        link_item(content, uri, k, mime, n);
        free(uri);
    }
    if (out_uri != NULL)
        link_item(content, out_uri, "stdout.txt", "text/plain",
                  json_string_length(json_object_get(res, "stdout")));
    if (err_uri != NULL)
        link_item(content, err_uri, "stderr.txt", "text/plain",
                  json_string_length(json_object_get(res, "stderr")));

    err = json_object_get(res, "error");
    if (json_is_object(err)) {
        json_t *tb = json_object_get(err, "traceback");

        const char *type = json_string_value(json_object_get(err, "type"));
        const char *emsg = json_string_value(json_object_get(err, "message"));

        err = json_object();
        json_object_set_new(err, "type", json_string(type != NULL ? type : "Error"));
        json_object_set_new(err, "message", json_string(emsg != NULL ? emsg : ""));
        json_object_set(err, "traceback", json_is_string(tb) ? tb : json_null());
    } else {
        err = json_null();
    }

    st = json_pack(
        "{s:s, s:O, s:o, s:o, s:b, s:b, s:s?, s:s?, s:o, s:o, s:O, s:o, s:s?}", "status", status,
        "exit_code",
        json_is_integer(json_object_get(res, "exit_code")) ? json_object_get(res, "exit_code")
                                                           : json_null(),
        "stdout", jout, "stderr", jerrs, "stdout_truncated",
        json_is_true(json_object_get(res, "stdout_truncated")) || out_uri != NULL,
        "stderr_truncated",
        json_is_true(json_object_get(res, "stderr_truncated")) || err_uri != NULL, "stdout_uri",
        out_uri, "stderr_uri", err_uri, "value", value, "error", err, "duration_ms",
        json_is_number(json_object_get(res, "duration_ms")) ? json_object_get(res, "duration_ms")
                                                            : json_null(),
        "files", files, "session_id", session_id);
    PBX_ASSERT(st != NULL);

    /* The compact text block, first. */
    pbx_buf_init(&text, 4 * m->opts.text_max + 4096);
    {
        char *head;
        json_t *e = json_object_get(st, "error");

        if (json_is_integer(json_object_get(st, "exit_code")))
            head = xasprintf("status: %s, exit code %lld", status,
                             (long long)json_integer_value(json_object_get(st, "exit_code")));
        else
            head = xasprintf("status: %s", status);
        pbx_buf_append_trunc(&text, head, strlen(head));
        free(head);
        if (json_is_object(e)) {
            head = xasprintf("\nerror: %s: %s", json_string_value(json_object_get(e, "type")),
                             json_string_value(json_object_get(e, "message")));
            pbx_buf_append_trunc(&text, head, strlen(head));
            free(head);
        }
        if (json_string_length(jout) > 0) {
            pbx_buf_append_trunc(&text, "\n--- stdout ---\n", 16);
            pbx_buf_append_trunc(&text, json_string_value(jout), json_string_length(jout));
            if (out_uri != NULL) {
                head = xasprintf("\n[stdout cut to %zu bytes; the whole is at %s]",
                                 json_string_length(jout), out_uri);
                pbx_buf_append_trunc(&text, head, strlen(head));
                free(head);
            }
        }
        if (json_string_length(jerrs) > 0) {
            pbx_buf_append_trunc(&text, "\n--- stderr ---\n", 16);
            pbx_buf_append_trunc(&text, json_string_value(jerrs), json_string_length(jerrs));
            if (err_uri != NULL) {
                head = xasprintf("\n[stderr cut to %zu bytes; the whole is at %s]",
                                 json_string_length(jerrs), err_uri);
                pbx_buf_append_trunc(&text, head, strlen(head));
                free(head);
            }
        }
        if (json_is_string(value)) {
            pbx_buf_append_trunc(&text, "\n--- value ---\n", 15);
            pbx_buf_append_trunc(&text, json_string_value(value),
                                 json_string_length(value) < m->opts.text_max
                                     ? json_string_length(value)
                                     : m->opts.text_max);
        }
        json_array_foreach(files, i, it)
        {
            head = xasprintf("\nfile %s: %s", json_string_value(json_object_get(it, "name")),
                             json_is_string(json_object_get(it, "uri"))
                                 ? json_string_value(json_object_get(it, "uri"))
                                 : json_string_value(json_object_get(it, "error")));
            pbx_buf_append_trunc(&text, head, strlen(head));
            free(head);
        }
    }
    {
        size_t tlen;
        char *t = pbx_buf_steal(&text, &tlen);

        json_array_insert_new(content, 0,
                              json_pack("{s:s, s:s%}", "type", "text", "text", t ? t : "", tlen));
        free(t);
    }
    free(out_uri);
    free(err_uri);
    json_decref(res);
    return json_pack("{s:o, s:o, s:b}", "content", content, "structuredContent", st, "isError",
                     is_error);
}

/* ---- The tools ---- */

struct run_ctx {
    struct pbx_mcp *m;
    struct pbx_mcp_call *call;
    pbx_mcp_send_fn send;
    void *arg;
};

static const char *opt_string(json_t *args, const char *k, bool *bad)
{
    json_t *v = json_object_get(args, k);

    if (v == NULL || json_is_null(v))
        return NULL;
    if (!json_is_string(v))
        *bad = true;
    return json_string_value(v);
}

static json_t *tool_run(struct run_ctx *x)
{
    static const char *const known[] = {"code",         "session_id", "stdin", "files",
                                        "return_files", "timeout_ms", NULL};
    json_t *args = x->call->args, *rf = json_object_get(args, "return_files"), *tm, *out;
    const char *returns[FILES_MAX];
    struct pbx_mcp_run run = {0};
    struct pbx_error *err = NULL;
    struct files files;
    struct ticker ticker;
    const char *msg, *k;
    char *result = NULL;
    bool bad = false;
    size_t i;
    json_t *it;

    k = args_known(args, known);
    if (k != NULL)
        return bad_args("run_python", k);
    run.code = opt_string(args, "code", &bad);
    run.session_id = opt_string(args, "session_id", &bad);
    run.stdin_data = opt_string(args, "stdin", &bad);
    if (bad || run.code == NULL)
        return tool_error("InvalidArguments", "run_python needs code (a string); session_id and "
                                              "stdin are strings");
    run.code_len = strlen(run.code);
    if (run.stdin_data != NULL)
        run.stdin_len = json_string_length(json_object_get(args, "stdin"));
    if (rf != NULL) {
        if (!json_is_array(rf) || json_array_size(rf) > FILES_MAX)
            return tool_error("InvalidArguments", "return_files is an array of at most 64 names");
        json_array_foreach(rf, i, it)
        {
            if (!json_is_string(it))
                return tool_error("InvalidArguments", "return_files holds names or globs");
            returns[i] = json_string_value(it);
        }
        run.returns = returns;
        run.nreturns = json_array_size(rf);
    }
    tm = json_object_get(args, "timeout_ms");
    if (tm != NULL) {
        if (!json_is_integer(tm) || json_integer_value(tm) < 1)
            return tool_error("InvalidArguments", "timeout_ms is a whole number of milliseconds");
        run.timeout_s = (double)json_integer_value(tm) / 1000.0;
        if (x->m->limits.max_timeout_s > 0 && run.timeout_s > x->m->limits.max_timeout_s) {
            char *t = xasprintf("timeout_ms is over the limit of %.0f ms",
                                x->m->limits.max_timeout_s * 1000);

            out = tool_error("InvalidArguments", t);
            free(t);
            return out;
        }
    }
    msg = files_parse(json_object_get(args, "files"), &files);
    if (msg != NULL) {
        files_release(&files);
        return tool_error("InvalidArguments", msg);
    }
    run.files = files.v;
    run.nfiles = files.n;
    run.cancel = &x->call->cancel;
    if (x->call->progress != NULL && x->send != NULL) {
        ticker_start(&ticker, x->call->progress, x->send, x->arg);
        run.alive = on_alive;
        run.alive_arg = &ticker;
    }
    if (x->m->backend.run(x->m->backend.arg, x->call->ctx, &run, &result, &err) < 0)
        out = backend_error(&err, run.session_id ? "session run" : "run");
    else
        out = format_run(x->m, result, run.session_id);
    if (run.alive != NULL)
        ticker_stop(&ticker);
    free(result);
    files_release(&files);
    return out;
}

static json_t *tool_create(struct run_ctx *x)
{
    static const char *const known[] = {"ttl_seconds", "files", NULL};
    json_t *args = x->call->args, *ttl = json_object_get(args, "ttl_seconds"), *info, *out;
    struct pbx_error *err = NULL;
    struct files files;
    json_error_t jerr;
    const char *msg, *k = args_known(args, known);
    char *text = NULL, *t;

    if (k != NULL)
        return bad_args("create_session", k);
    if (ttl != NULL && (!json_is_integer(ttl) || json_integer_value(ttl) < 1 ||
                        json_integer_value(ttl) > 365 * 86400))
        return tool_error("InvalidArguments", "ttl_seconds is a whole number of seconds");
    msg = files_parse(json_object_get(args, "files"), &files);
    if (msg != NULL) {
        files_release(&files);
        return tool_error("InvalidArguments", msg);
    }
    if (x->m->backend.session_create(x->m->backend.arg, x->call->ctx,
                                     (unsigned)json_integer_value(ttl), files.v, files.n, &text,
                                     &err) < 0) {
        files_release(&files);
        return backend_error(&err, "create_session");
    }
    files_release(&files);
    info = json_loads(text, 0, &jerr);
    free(text);
    if (!json_is_object(info)) {
        json_decref(info);
        return tool_error("BackendError", "the backend's session is not JSON");
    }
    json_object_set_new(info, "status", json_string("ok"));
    t = xasprintf("session %s opened; pass it as session_id to run_python",
                  json_string_value(json_object_get(info, "session_id")));
    out = ok_result(info, t);
    free(t);
    return out;
}

static const char *session_arg(json_t *args, const char *const *known, json_t **fail,
                               const char *tool)
{
    const char *k = args_known(args, known);
    const char *sid = json_string_value(json_object_get(args, "session_id"));
    char *m;

    *fail = NULL;
    if (k != NULL) {
        m = xasprintf("%s has no argument `%s`", tool, k);
        *fail = tool_error("InvalidArguments", m);
        free(m);
        return NULL;
    }
    if (sid == NULL) {
        m = xasprintf("%s needs session_id (from create_session)", tool);
        *fail = tool_error("InvalidArguments", m);
        free(m);
    }
    return sid;
}

static json_t *tool_write(struct run_ctx *x)
{
    static const char *const known[] = {"session_id", "files", NULL};
    struct pbx_error *err = NULL;
    struct files files;
    json_t *fail, *written;
    const char *sid = session_arg(x->call->args, known, &fail, "write_files"), *msg;
    char *t;

    if (sid == NULL)
        return fail;
    if (json_object_get(x->call->args, "files") == NULL)
        return tool_error("InvalidArguments", "write_files needs files");
    msg = files_parse(json_object_get(x->call->args, "files"), &files);
    if (msg != NULL) {
        files_release(&files);
        return tool_error("InvalidArguments", msg);
    }
    if (x->m->backend.files_write(x->m->backend.arg, x->call->ctx, sid, files.v, files.n, &err) <
        0) {
        files_release(&files);
        return backend_error(&err, "write_files in the session");
    }
    written = json_array();
    for (size_t i = 0; i < files.n; i++)
        json_array_append_new(written, json_string(files.v[i].path));
    files_release(&files);
    t = xasprintf("%zu file(s) written", json_array_size(written));
    fail = ok_result(
        json_pack("{s:s, s:s, s:o}", "status", "ok", "session_id", sid, "written", written), t);
    free(t);
    return fail;
}

static json_t *tool_read(struct run_ctx *x)
{
    static const char *const known[] = {"session_id", "path", NULL};
    struct pbx_error *err = NULL;
    json_t *fail, *st, *content;
    const char *sid = session_arg(x->call->args, known, &fail, "read_file");
    const char *path = json_string_value(json_object_get(x->call->args, "path")), *base, *mime;
    void *data = NULL;
    size_t size = 0;
    char *uri, *t;
    bool text;

    if (sid == NULL)
        return fail;
    if (path == NULL)
        return tool_error("InvalidArguments", "read_file needs path");
    if (x->m->backend.file_read(x->m->backend.arg, x->call->ctx, sid, path, &data, &size, &err) < 0)
        return backend_error(&err, "read_file in the session");
    base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    mime = mime_of(base);
    text =
        size <= x->m->opts.text_max &&
        pbx__mcp_is_text(strcmp(mime, "application/octet-stream") == 0 ? NULL : mime, data, size);
    st = json_pack("{s:s, s:s, s:s, s:I, s:s}", "status", "ok", "session_id", sid, "path", path,
                   "size", (json_int_t)size, "mime_type", mime);
    json_object_set_new(st, "text", text ? json_stringn(data, size) : json_null());
    t = text ? xstrndup(data, size)
             : xasprintf("%s: %zu bytes of %s (see the resource link)", path, size, mime);
    uri = pbx__mcp_store_put(x->m, base, mime, data, size);
    json_object_set_new(st, "uri", uri ? json_string(uri) : json_null());
    content = json_pack("[{s:s, s:s}]", "type", "text", "text", t);
    if (uri != NULL)
        link_item(content, uri, base, mime, size);
    free(uri);
    free(t);
    return json_pack("{s:o, s:o, s:b}", "content", content, "structuredContent", st, "isError", 0);
}

static json_t *tool_list(struct run_ctx *x)
{
    static const char *const known[] = {"session_id", NULL};
    struct pbx_error *err = NULL;
    json_t *fail, *list;
    json_error_t jerr;
    const char *sid = session_arg(x->call->args, known, &fail, "list_files");
    char *json = NULL;

    if (sid == NULL)
        return fail;
    if (x->m->backend.files_list(x->m->backend.arg, x->call->ctx, sid, &json, &err) < 0)
        return backend_error(&err, "list_files of the session");
    list = json_loads(json, 0, &jerr);
    if (!json_is_array(list)) {
        free(json);
        json_decref(list);
        return tool_error("BackendError", "the backend's file list is not JSON");
    }
    fail = ok_result(json_pack("{s:s, s:s, s:o}", "status", "ok", "session_id", sid, "files", list),
                     json);
    free(json);
    return fail;
}

static json_t *tool_close(struct run_ctx *x)
{
    static const char *const known[] = {"session_id", NULL};
    struct pbx_error *err = NULL;
    json_t *fail;
    const char *sid = session_arg(x->call->args, known, &fail, "close_session");

    if (sid == NULL)
        return fail;
    if (x->m->backend.session_close(x->m->backend.arg, x->call->ctx, sid, &err) < 0)
        return backend_error(&err, "close_session");
    return ok_result(json_pack("{s:s, s:s}", "status", "ok", "session_id", sid), "session closed");
}

char *pbx_mcp_call_run(struct pbx_mcp *m, struct pbx_mcp_call *call, pbx_mcp_send_fn send,
                       void *arg)
{
    struct run_ctx x = {m, call, send, arg};
    json_t *res;
    char *out = NULL;

    switch ((enum tool_id)call->tool) {
    case T_RUN:
        res = tool_run(&x);
        break;
    case T_CREATE:
        res = tool_create(&x);
        break;
    case T_WRITE:
        res = tool_write(&x);
        break;
    case T_READ:
        res = tool_read(&x);
        break;
    case T_LIST:
        res = tool_list(&x);
        break;
    case T_CLOSE:
        res = tool_close(&x);
        break;
    default:
        res = tool_error("InvalidArguments", "unknown tool");
    }
    PBX_ASSERT(res != NULL);
    if (pbx_mcp_cancel_requested(&call->cancel))
        json_decref(res);
    else
        out = pbx__mcp_result(call->id, res);
    pbx_mcp_call_free(m, call);
    return out;
}
