/*
 * The MCP server's messages (mcp.h): JSON-RPC 2.0 framing, the methods, the
 * in-flight table for notifications/cancelled and the resource store.  The
 * tools and their results are in tools.c.
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <sodium.h>

#include "common/jsonlimit.h"
#include "common/xalloc.h"
#include "mcp/mcp_internal.h"
#include "common/banned.h"

bool pbx_mcp_cancel_set_hook(struct pbx_mcp_cancel *c, void (*fn)(void *arg), void *arg)
{
    bool ok;

    pthread_mutex_lock(&c->lock);
    ok = !c->cancelled || fn == NULL;
    if (ok) {
        c->fn = fn;
        c->arg = arg;
    }
    pthread_mutex_unlock(&c->lock);
    return ok;
}

bool pbx_mcp_cancel_requested(struct pbx_mcp_cancel *c)
{
    bool v;

    pthread_mutex_lock(&c->lock);
    v = c->cancelled;
    pthread_mutex_unlock(&c->lock);
    return v;
}

static void cancel_fire(struct pbx_mcp_cancel *c)
{
    pthread_mutex_lock(&c->lock);
    if (!c->cancelled) {
        c->cancelled = true;
        if (c->fn != NULL)
            c->fn(c->arg);
    }
    pthread_mutex_unlock(&c->lock);
}

/* Append `n` bytes of `name` to l->modules at *off, when they fit with their space. */
static bool add_module(struct pbx_mcp_limits *l, size_t *off, const char *name, size_t n)
{
    size_t need = n + (*off > 0);

    if (n == 0 || *off + need >= sizeof(l->modules))
        return n == 0;
    if (*off > 0)
        l->modules[(*off)++] = ' ';
    memcpy(l->modules + *off, name, n);
    *off += n;
    l->modules[*off] = '\0';
    return true;
}

void pbx_mcp_limits_modules(struct pbx_mcp_limits *l, const char *const *names, const char *more)
{
    size_t off = 0;

    l->modules[0] = '\0';
    for (size_t i = 0; names != NULL && names[i] != NULL; i++) {
        if (!add_module(l, &off, names[i], strlen(names[i])))
            return;
    }
    while (more != NULL && *more != '\0') {
        size_t n;

        more += strspn(more, " ");
        n = strcspn(more, " ");
        if (!add_module(l, &off, more, n))
            return;
        more += n;
    }
}

struct pbx_mcp *pbx_mcp_new(const struct pbx_mcp_backend *backend,
                            const struct pbx_mcp_options *opts)
{
    struct pbx_mcp *m = xcalloc(1, sizeof(*m));

    m->backend = *backend;
    if (opts != NULL)
        m->opts = *opts;
    if (m->opts.server_name == NULL)
        m->opts.server_name = "pybox";
    if (m->opts.server_version == NULL)
        m->opts.server_version = "0";
    if (m->opts.store_max == 0)
        m->opts.store_max = 64u << 20;
    if (m->opts.text_max == 0)
        m->opts.text_max = 20000;
    pthread_mutex_init(&m->lock, NULL);
    if (m->backend.describe != NULL)
        m->backend.describe(m->backend.arg, &m->limits);
    m->limits.modules[sizeof(m->limits.modules) - 1] = '\0';
    m->tools = pbx__mcp_tools_new(&m->limits);
    return m;
}

void pbx_mcp_free(struct pbx_mcp *m)
{
    struct pbx__mcp_resource *r;

    if (m == NULL)
        return;
    PBX_ASSERT(m->calls == NULL);
    while ((r = m->store) != NULL) {
        m->store = r->next;
        free(r->uri);
        free(r->mime);
        free(r->data);
        free(r);
    }
    json_decref(m->tools);
    pthread_mutex_destroy(&m->lock);
    free(m);
}

/* ---- The resource store ---- */

char *pbx__mcp_store_put(struct pbx_mcp *m, const char *name, const char *mime, void *data,
                         size_t size)
{
    struct pbx__mcp_resource *r, **pp;
    char *uri;

    if (size > m->opts.store_max) {
        free(data);
        return NULL;
    }
    r = xcalloc(1, sizeof(*r));
    pthread_mutex_lock(&m->lock);
    uri = xasprintf("pybox://results/%llu/%s", (unsigned long long)++m->store_seq, name);
    r->uri = xstrdup(uri);
    r->mime = xstrdup(mime != NULL ? mime : "application/octet-stream");
    r->data = data;
    r->size = size;
    /* Newest last; evict from the front (the oldest) until it fits. */
    while (m->store != NULL && m->store_bytes + size > m->opts.store_max) {
        struct pbx__mcp_resource *old = m->store;

        m->store = old->next;
        m->store_bytes -= old->size;
        free(old->uri);
        free(old->mime);
        free(old->data);
        free(old);
    }
    for (pp = &m->store; *pp != NULL; pp = &(*pp)->next)
        ;
    *pp = r;
    m->store_bytes += size;
    pthread_mutex_unlock(&m->lock);
    return uri;
}

/* The resource's bytes copied, or NULL when the store has no such URI (any more). */
static void *store_get(struct pbx_mcp *m, const char *uri, size_t *size, char **mime)
{
    struct pbx__mcp_resource *r;
    void *out = NULL;

    pthread_mutex_lock(&m->lock);
    for (r = m->store; r != NULL; r = r->next) {
        if (strcmp(r->uri, uri) == 0) {
            out = xmalloc(r->size + 1);
            memcpy(out, r->data, r->size);
            ((char *)out)[r->size] = '\0';
            *size = r->size;
            *mime = xstrdup(r->mime);
            break;
        }
    }
    pthread_mutex_unlock(&m->lock);
    return out;
}

/* ---- JSON-RPC framing ---- */

static char *dump(json_t *msg)
{
    char *s = json_dumps(msg, JSON_COMPACT | JSON_ENCODE_ANY);

    PBX_ASSERT(s != NULL);
    json_decref(msg);
    return s;
}

/* A response to `id` (borrowed; NULL: null) with `result` (stolen). */
char *pbx__mcp_result(json_t *id, json_t *result)
{
    return dump(json_pack("{s:s, s:O, s:o}", "jsonrpc", "2.0", "id", id ? id : json_null(),
                          "result", result));
}

static char *rpc_error(json_t *id, int code, const char *msg)
{
    return dump(json_pack("{s:s, s:O, s:{s:i, s:s}}", "jsonrpc", "2.0", "id", id ? id : json_null(),
                          "error", "code", code, "message", msg));
}

/* Whether a protocol version is one spoken. */
static const char *negotiate(const char *asked)
{
    if (asked != NULL && strcmp(asked, PBX_MCP_VERSION_OLDER) == 0)
        return PBX_MCP_VERSION_OLDER;
    return PBX_MCP_VERSION_LATEST;
}

static char *do_initialize(struct pbx_mcp *m, json_t *id, json_t *params)
{
    const char *asked = json_string_value(json_object_get(params, "protocolVersion"));
    const char *ver;
    char *instr;
    json_t *res;

    if (asked == NULL)
        return rpc_error(id, PBX_MCP_INVALID_PARAMS, "initialize: protocolVersion is required");
    ver = negotiate(asked);
    pthread_mutex_lock(&m->lock);
    m->version = ver;
    pthread_mutex_unlock(&m->lock);
    instr = pbx__mcp_instructions(&m->limits);
    res =
        json_pack("{s:s, s:{s:{s:b}, s:{s:b, s:b}}, s:{s:s, s:s, s:s}, s:s}", "protocolVersion",
                  ver, "capabilities", "tools", "listChanged", 0, "resources", "subscribe", 0,
                  "listChanged", 0, "serverInfo", "name", m->opts.server_name, "title",
                  "pybox Python sandbox", "version", m->opts.server_version, "instructions", instr);
    free(instr);
    PBX_ASSERT(res != NULL);
    return pbx__mcp_result(id, res);
}

static char *do_resources_read(struct pbx_mcp *m, json_t *id, json_t *params)
{
    const char *uri = json_string_value(json_object_get(params, "uri"));
    char *mime = NULL, *b64;
    void *data;
    size_t size, b64len;
    json_t *item;
    char *out;

    if (uri == NULL)
        return rpc_error(id, PBX_MCP_INVALID_PARAMS, "resources/read: uri is required");
    data = store_get(m, uri, &size, &mime);
    if (data == NULL) {
        /* The MCP specification's code for a resource not found. */
        return rpc_error(id, -32002,
                         "resource not found (results are kept a while only: run "
                         "the code again)");
    }
    if (pbx__mcp_is_text(mime, data, size)) {
        item =
            json_pack("{s:s, s:s, s:s%}", "uri", uri, "mimeType", mime, "text", (char *)data, size);
    } else {
        b64len = sodium_base64_ENCODED_LEN(size, sodium_base64_VARIANT_ORIGINAL);
        b64 = xmalloc(b64len);
        sodium_bin2base64(b64, b64len, data, size, sodium_base64_VARIANT_ORIGINAL);
        item = json_pack("{s:s, s:s, s:s}", "uri", uri, "mimeType", mime, "blob", b64);
        free(b64);
    }
    free(data);
    free(mime);
    if (item == NULL)
        return rpc_error(id, PBX_MCP_INTERNAL_ERROR, "resource not encodable");
    out = pbx__mcp_result(id, json_pack("{s:[o]}", "contents", item));
    return out;
}

static char *do_resources_list(struct pbx_mcp *m, json_t *id)
{
    json_t *list = json_array();
    struct pbx__mcp_resource *r;

    pthread_mutex_lock(&m->lock);
    for (r = m->store; r != NULL; r = r->next) {
        const char *name = strrchr(r->uri, '/');

        json_array_append_new(list,
                              json_pack("{s:s, s:s, s:s, s:I}", "uri", r->uri, "name", name + 1,
                                        "mimeType", r->mime, "size", (json_int_t)r->size));
    }
    pthread_mutex_unlock(&m->lock);
    return pbx__mcp_result(id, json_pack("{s:o}", "resources", list));
}

/* The call whose id dumps as `key`, under m->lock. */
static struct pbx_mcp_call **find_call(struct pbx_mcp *m, const char *key)
{
    struct pbx_mcp_call **pp;

    for (pp = &m->calls; *pp != NULL; pp = &(*pp)->next) {
        if (strcmp((*pp)->key, key) == 0)
            return pp;
    }
    return NULL;
}

static void on_cancelled(struct pbx_mcp *m, json_t *params)
{
    json_t *rid = json_object_get(params, "requestId");
    struct pbx_mcp_call **pp;
    char *key;

    if (rid == NULL || !(json_is_string(rid) || json_is_integer(rid)))
        return;
    key = json_dumps(rid, JSON_COMPACT | JSON_ENCODE_ANY);
    PBX_ASSERT(key != NULL);
    pthread_mutex_lock(&m->lock);
    pp = find_call(m, key);
    if (pp != NULL)
        cancel_fire(&(*pp)->cancel);
    pthread_mutex_unlock(&m->lock);
    free(key);
}

void pbx_mcp_cancel_all(struct pbx_mcp *m)
{
    struct pbx_mcp_call *c;

    pthread_mutex_lock(&m->lock);
    for (c = m->calls; c != NULL; c = c->next)
        cancel_fire(&c->cancel);
    pthread_mutex_unlock(&m->lock);
}

static char *accept_call(struct pbx_mcp *m, json_t *id, json_t *params, struct pbx_mcp_call **out)
{
    const char *name = json_string_value(json_object_get(params, "name"));
    json_t *args = json_object_get(params, "arguments");
    struct pbx_mcp_call *c;
    char *key;
    int tool;

    if (name == NULL)
        return rpc_error(id, PBX_MCP_INVALID_PARAMS, "tools/call: name is required");
    tool = pbx__mcp_tool_find(name);
    if (tool < 0)
        return rpc_error(id, PBX_MCP_INVALID_PARAMS, "tools/call: unknown tool");
    if (args != NULL && !json_is_object(args) && !json_is_null(args))
        return rpc_error(id, PBX_MCP_INVALID_PARAMS, "tools/call: arguments is not an object");
    key = json_dumps(id, JSON_COMPACT | JSON_ENCODE_ANY);
    PBX_ASSERT(key != NULL);
    pthread_mutex_lock(&m->lock);
    if (find_call(m, key) != NULL) {
        pthread_mutex_unlock(&m->lock);
        free(key);
        return rpc_error(id, PBX_MCP_INVALID_REQUEST, "a request with this id is in progress");
    }
    c = xcalloc(1, sizeof(*c));
    c->key = key;
    c->tool = tool;
    c->id = json_incref(id);
    c->args = json_is_object(args) ? json_incref(args) : json_object();
    c->progress = json_incref(json_object_get(json_object_get(params, "_meta"), "progressToken"));
    if (c->progress != NULL && !json_is_string(c->progress) && !json_is_integer(c->progress)) {
        json_decref(c->progress);
        c->progress = NULL;
    }
    pthread_mutex_init(&c->cancel.lock, NULL);
    c->next = m->calls;
    m->calls = c;
    pthread_mutex_unlock(&m->lock);
    *out = c;
    return NULL;
}

const char *pbx_mcp_version(struct pbx_mcp *m)
{
    const char *v;

    pthread_mutex_lock(&m->lock);
    v = m->version;
    pthread_mutex_unlock(&m->lock);
    return v;
}

bool pbx_mcp_call_wants_progress(const struct pbx_mcp_call *c)
{
    return c->progress != NULL;
}

void pbx_mcp_call_set_context(struct pbx_mcp_call *c, void *ctx)
{
    c->ctx = ctx;
}

void pbx_mcp_call_free(struct pbx_mcp *m, struct pbx_mcp_call *c)
{
    struct pbx_mcp_call **pp;

    if (c == NULL)
        return;
    pthread_mutex_lock(&m->lock);
    pp = find_call(m, c->key);
    PBX_ASSERT(pp != NULL && *pp == c);
    *pp = c->next;
    pthread_mutex_unlock(&m->lock);
    pthread_mutex_destroy(&c->cancel.lock);
    json_decref(c->id);
    json_decref(c->args);
    json_decref(c->progress);
    free(c->key);
    free(c);
}

static char *dispatch(struct pbx_mcp *m, json_t *msg, struct pbx_mcp_call **call)
{
    json_t *id = json_object_get(msg, "id");
    json_t *jm = json_object_get(msg, "method");
    json_t *params = json_object_get(msg, "params");
    const char *method = json_string_value(jm);

    if (!json_is_string(json_object_get(msg, "jsonrpc")) ||
        strcmp(json_string_value(json_object_get(msg, "jsonrpc")), "2.0") != 0)
        return id != NULL && method != NULL
                   ? rpc_error(id, PBX_MCP_INVALID_REQUEST, "jsonrpc must be \"2.0\"")
                   : rpc_error(NULL, PBX_MCP_INVALID_REQUEST, "jsonrpc must be \"2.0\"");
    if (jm == NULL) {
        /* A response (to nothing this server asks) or garbage. */
        if (id != NULL && (json_object_get(msg, "result") || json_object_get(msg, "error")))
            return NULL;
        return rpc_error(NULL, PBX_MCP_INVALID_REQUEST, "not a request: no method");
    }
    if (id != NULL && !json_is_string(id) && !json_is_integer(id))
        return rpc_error(NULL, PBX_MCP_INVALID_REQUEST, "id must be a string or an integer");
    if (method == NULL)
        return id ? rpc_error(id, PBX_MCP_INVALID_REQUEST, "method must be a string") : NULL;
    if (params != NULL && !json_is_object(params)) {
        if (id == NULL)
            return NULL;
        return rpc_error(id, PBX_MCP_INVALID_PARAMS, "params must be an object");
    }
    if (id == NULL) {
        /* Notifications get no answer, not even an error. */
        if (strcmp(method, "notifications/cancelled") == 0)
            on_cancelled(m, params);
        else if (strcmp(method, "notifications/initialized") == 0) {
            pthread_mutex_lock(&m->lock);
            m->initialized = true;
            pthread_mutex_unlock(&m->lock);
        }
        return NULL;
    }
    if (strcmp(method, "initialize") == 0)
        return do_initialize(m, id, params);
    if (strcmp(method, "ping") == 0)
        return pbx__mcp_result(id, json_object());
    if (strcmp(method, "tools/list") == 0)
        return pbx__mcp_result(id, json_pack("{s:O}", "tools", m->tools));
    if (strcmp(method, "tools/call") == 0)
        return accept_call(m, id, params, call);
    if (strcmp(method, "resources/read") == 0)
        return do_resources_read(m, id, params);
    if (strcmp(method, "resources/list") == 0)
        return do_resources_list(m, id);
    if (strcmp(method, "resources/templates/list") == 0)
        return pbx__mcp_result(id, json_pack("{s:[]}", "resourceTemplates"));
    return rpc_error(id, PBX_MCP_METHOD_NOT_FOUND, "method not found");
}

struct pbx_mcp_call *pbx_mcp_accept(struct pbx_mcp *m, const char *bytes, size_t len, char **reply)
{
    struct pbx_mcp_call *call = NULL;
    struct pbx_json_shape shape;
    json_error_t jerr;
    json_t *msg;

    *reply = NULL;
    if (len > PBX_MCP_MAX_MESSAGE) {
        *reply = rpc_error(NULL, PBX_MCP_INVALID_REQUEST, "message too large");
        return NULL;
    }
    if (!pbx_json_within(bytes, len, PBX_MCP_MAX_VALUES, PBX_MCP_MAX_DEPTH, &shape)) {
        *reply = rpc_error(NULL, PBX_MCP_PARSE_ERROR, "message too deep or with too many values");
        return NULL;
    }
    msg = json_loadb(bytes, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    if (msg == NULL) {
        *reply = rpc_error(NULL, PBX_MCP_PARSE_ERROR, "parse error: not JSON");
        return NULL;
    }
    if (json_is_array(msg))
        *reply = rpc_error(NULL, PBX_MCP_INVALID_REQUEST, "batches are not supported");
    else if (!json_is_object(msg))
        *reply = rpc_error(NULL, PBX_MCP_INVALID_REQUEST, "a message is a JSON object");
    else
        *reply = dispatch(m, msg, &call);
    json_decref(msg);
    return call;
}

char *pbx_mcp_handle(struct pbx_mcp *m, const char *bytes, size_t len, pbx_mcp_send_fn send,
                     void *arg)
{
    char *reply = NULL;
    struct pbx_mcp_call *call = pbx_mcp_accept(m, bytes, len, &reply);

    if (call != NULL)
        return pbx_mcp_call_run(m, call, send, arg);
    return reply;
}
