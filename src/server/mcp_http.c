/*
 * /mcp: the Model Context Protocol over Streamable HTTP (docs/mcp.md).
 * src/mcp/ speaks the protocol; this file carries it over HTTP, keeps the
 * MCP sessions, and checks every request before a byte of it is read as
 * MCP:
 *
 *   Host, Origin  a Host that is no IP address, no loopback name, not the
 *                 listen address and not one of --mcp-allowed-hosts is
 *                 refused 403, and so is an Origin whose host is none of
 *                 those either (unless --cors-origin names it): a web page
 *                 cannot reach a pybox on this machine by rebinding its own
 *                 name's DNS to 127.0.0.1;
 *   the caller    its key (Authorization: Bearer), as every route resolves
 *                 it: 401 for a bad one (or none, with --mcp keyed);
 *   the session   Mcp-Session-Id, made at initialize (`mcp_` and 128 random
 *                 bits) and bound to the caller: required afterwards (400),
 *                 another caller's or an ended one is a 404;
 *   the version   MCP-Protocol-Version, when sent, one this server speaks.
 *
 * POST carries one JSON-RPC message: a notification or a response is
 * answered 202; a request 200 with its response as application/json, but
 * a tools/call that asked for progress, as text/event-stream (the
 * notifications, then the response, each a `message` event, on the
 * stream's thread).  A tools/call runs on the thread of its connection
 * (libmicrohttpd's thread per connection), so a notifications/cancelled
 * that comes on another connection reaches it.  GET is 405: the server
 * starts no stream of its own.  DELETE ends the MCP session.
 *
 * An MCP session ends at DELETE, an hour after its last request, when the
 * caller opens more than MCP_PER_OWNER (its least recently used one), or
 * at shutdown; the sessions of /v1/sessions opened through it end with it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/clock.h"
#include "common/errtable.h"
#include "common/log.h"
#include "common/xalloc.h"
#include "pybox/version.h"
#include "server/ids.h"
#include "server/mcp_server.h"
#include "server/session_ops.h"
#include "common/banned.h"

#define MCP_ID_LEN    PBX_ID_MAX          /* "mcp_", the node's id and "_", 32 hex digits */
#define MCP_IDLE_MS   (60u * 60u * 1000u) /* an MCP session ends this long after its last request */
#define MCP_EVICT_MS  (5u * 60u * 1000u)  /* a full table ends one idle this long, the oldest */
#define MCP_PER_OWNER 16u                 /* MCP sessions of one caller */
#define MCP_TOTAL     64u                 /* of the server */
#define MCP_STORE_MAX (16u << 20)         /* bytes of results each keeps for resources/read */

/* One MCP session. */
struct mcp_conn {
    struct mcp_conn *next;   /* (table lock) the table's list */
    char id[MCP_ID_LEN + 1]; /* its Mcp-Session-Id */
    char owner[320];         /* whose: "key:NAME", "admin" or "ip:ADDRESS" */
    struct pbx_mcp *mcp;     /* the protocol's state */
    struct mcp_link *link;   /* the backend's */
    unsigned refs;           /* (table lock) requests holding it, and the table's while listed */
    bool listed;             /* (table lock) in the table */
    uint64_t last_ms;        /* (table lock) its last request's end, monotonic */
};

struct mcp_table {
    pthread_mutex_t lock;  /* guards the list and every entry's (table lock) fields */
    struct mcp_conn *head; /* the MCP sessions */
    unsigned count;        /* their number */
};

/* ---- the table ---- */

struct mcp_table *pbx__mcp_table_new(void)
{
    struct mcp_table *t = xcalloc(1, sizeof(*t));

    pthread_mutex_init(&t->lock, NULL);
    return t;
}

static struct mcp_conn *conn_new(struct pbx_server *s, const struct pbx_caller *who,
                                 const char *client, const char *owner)
{
    const struct pbx_mcp_options opts = {
        .server_name = "pybox",
        .server_version = PBX_VERSION_STRING,
        .store_max = MCP_STORE_MAX,
    };
    struct mcp_conn *k = xcalloc(1, sizeof(*k));
    struct pbx_mcp_backend be;

    pbx__id_make("mcp", s->cfg->node_id, k->id, sizeof(k->id));
    snprintf(k->owner, sizeof(k->owner), "%s", owner);
    k->link = pbx__mcp_link_new(s, who, client);
    be = pbx__mcp_link_backend(k->link);
    k->mcp = pbx_mcp_new(&be, &opts);
    k->refs = 1;
    return k;
}

/* Free an MCP session no request holds: its calls are over. */
static void conn_free(struct mcp_conn *k)
{
    pbx_mcp_free(k->mcp);
    pbx__mcp_link_free(k->link);
    free(k);
}

/* Let go of `k`; the last to let go frees it. */
static void conn_put(struct mcp_table *t, struct mcp_conn *k)
{
    bool last;

    pthread_mutex_lock(&t->lock);
    k->last_ms = pbx_clock_ms(CLOCK_MONOTONIC);
    last = --k->refs == 0;
    pthread_mutex_unlock(&t->lock);
    if (last)
        conn_free(k);
}

/* Take `k` out of the table (locked): its calls are cancelled; the table's hold is returned. */
static bool unlist_locked(struct mcp_table *t, struct mcp_conn *k)
{
    for (struct mcp_conn **pp = &t->head; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == k) {
            *pp = k->next;
            k->listed = false;
            t->count--;
            pbx_mcp_cancel_all(k->mcp);
            return --k->refs == 0;
        }
    }
    return false;
}

/*
 * End the MCP sessions idle past MCP_IDLE_MS (locked); the freeing of those
 * nobody holds is left to the caller, in *gone (their `next` chains them).
 */
static void sweep_locked(struct mcp_table *t, uint64_t now, struct mcp_conn **gone)
{
    struct mcp_conn *k = t->head;

    while (k != NULL) {
        struct mcp_conn *next = k->next;

        if (k->refs == 1 && now - k->last_ms > MCP_IDLE_MS && unlist_locked(t, k)) {
            k->next = *gone;
            *gone = k;
        }
        k = next;
    }
}

/* The least recently used MCP session no request holds, of `owner` (NULL: anyone's), or NULL. */
static struct mcp_conn *oldest_locked(struct mcp_table *t, const char *owner, uint64_t idle_ms,
                                      uint64_t now)
{
    struct mcp_conn *best = NULL;

    for (struct mcp_conn *k = t->head; k != NULL; k = k->next) {
        if (k->refs != 1 || now - k->last_ms < idle_ms ||
            (owner != NULL && strcmp(k->owner, owner) != 0))
            continue;
        if (best == NULL || k->last_ms < best->last_ms)
            best = k;
    }
    return best;
}

/*
 * Put the new MCP session `k` in the table, making room as the caps say.
 * False when the table is full of sessions in use or recently used.
 */
static bool conn_list(struct mcp_table *t, struct mcp_conn *k)
{
    uint64_t now = pbx_clock_ms(CLOCK_MONOTONIC);
    struct mcp_conn *gone = NULL;
    struct mcp_conn *old;
    unsigned mine = 0;
    bool ok = true;

    pthread_mutex_lock(&t->lock);
    sweep_locked(t, now, &gone);
    for (struct mcp_conn *e = t->head; e != NULL; e = e->next)
        mine += strcmp(e->owner, k->owner) == 0;
    if (mine >= MCP_PER_OWNER) {
        old = oldest_locked(t, k->owner, 0, now);
        if (old == NULL)
            ok = false;
        else if (unlist_locked(t, old)) {
            old->next = gone;
            gone = old;
        }
    }
    if (ok && t->count >= MCP_TOTAL) {
        old = oldest_locked(t, NULL, MCP_EVICT_MS, now);
        if (old == NULL)
            ok = false;
        else if (unlist_locked(t, old)) {
            old->next = gone;
            gone = old;
        }
    }
    if (ok) {
        k->refs++; /* the table's */
        k->listed = true;
        k->last_ms = now;
        k->next = t->head;
        t->head = k;
        t->count++;
    }
    pthread_mutex_unlock(&t->lock);
    while (gone != NULL) {
        old = gone;
        gone = gone->next;
        conn_free(old);
    }
    return ok;
}

/* The MCP session `id` of `owner`, held; NULL when there is none (or it is another's). */
static struct mcp_conn *conn_find(struct mcp_table *t, const char *id, const char *owner)
{
    struct mcp_conn *found = NULL;

    pthread_mutex_lock(&t->lock);
    for (struct mcp_conn *k = t->head; k != NULL; k = k->next) {
        if (strcmp(k->id, id) == 0) {
            if (strcmp(k->owner, owner) == 0 &&
                pbx_clock_ms(CLOCK_MONOTONIC) - k->last_ms <= MCP_IDLE_MS) {
                found = k;
                k->refs++;
            }
            break;
        }
    }
    pthread_mutex_unlock(&t->lock);
    return found;
}

/* End `k` (held by the caller, who lets go of it afterwards). */
static void conn_end(struct mcp_table *t, struct mcp_conn *k)
{
    bool last = false;

    pthread_mutex_lock(&t->lock);
    if (k->listed)
        last = unlist_locked(t, k);
    pthread_mutex_unlock(&t->lock);
    PBX_ASSERT(!last); /* the caller holds it */
}

void pbx__mcp_table_free(struct mcp_table *t)
{
    if (t == NULL)
        return;
    while (t->head != NULL) {
        struct mcp_conn *k = t->head;
        bool last;

        pthread_mutex_lock(&t->lock);
        last = unlist_locked(t, k);
        pthread_mutex_unlock(&t->lock);
        PBX_ASSERT(last); /* no request runs any more */
        conn_free(k);
    }
    pthread_mutex_destroy(&t->lock);
    free(t);
}

/* ---- Host and Origin ---- */

/* Whether the `n` bytes of `host` are a dotted IPv4 address or a bracketed IPv6 one. */
static bool ip_literal(const char *host, size_t n)
{
    unsigned dots = 0;

    if (n >= 2 && host[0] == '[' && host[n - 1] == ']')
        return n > 2 && strspn(host + 1, "0123456789abcdefABCDEF:.") == n - 2;
    for (size_t i = 0; i < n; i++) {
        if (host[i] == '.')
            dots++;
        else if (host[i] < '0' || host[i] > '9')
            return false;
    }
    return dots == 3;
}

/* Whether `list` (comma-separated names) holds the `n` bytes of `host`, or is "*". */
static bool listed(const char *list, const char *host, size_t n)
{
    if (list == NULL)
        return false;
    for (const char *p = list; *p != '\0';) {
        size_t m;

        p += strspn(p, ", ");
        m = strcspn(p, ", ");
        if ((m == 1 && *p == '*') || (m == n && m > 0 && strncasecmp(p, host, n) == 0))
            return true;
        p += m;
    }
    return false;
}

/* The length of the host part of "HOST[:PORT]" or "[V6][:PORT]" at `p`. */
static size_t host_part(const char *p)
{
    if (*p == '[') {
        const char *end = strchr(p, ']');

        return end != NULL ? (size_t)(end - p) + 1 : strlen(p);
    }
    return strcspn(p, ":/");
}

/*
 * Whether the `n` bytes of `host` may name this server: an IP address, a
 * loopback name, the listen address's host, or one of --mcp-allowed-hosts.
 * A name that may point anywhere is allowed only when configured.
 */
static bool host_ok(const struct pbx_server *s, const char *host, size_t n)
{
    const char *listen = s->cfg->listen != NULL ? s->cfg->listen : "";

    if (n == 0)
        return false;
    if (ip_literal(host, n) || (n == 9 && strncasecmp(host, "localhost", 9) == 0))
        return true;
    if (host_part(listen) == n && strncasecmp(listen, host, n) == 0)
        return true;
    return listed(s->cfg->mcp_allowed_hosts, host, n);
}

/* Whether an Origin may drive /mcp: none, one --cors-origin names, or one of an allowed host. */
static bool origin_ok(const struct pbx_server *s, const char *origin)
{
    const char *p;

    if (origin == NULL)
        return true; /* not a browser's request */
    if (strcmp(s->cfg->cors_origins, "*") != 0 &&
        listed(s->cfg->cors_origins, origin, strlen(origin)))
        return true;
    p = strstr(origin, "://");
    if (p == NULL)
        return false; /* "null", or garbage */
    p += 3;
    return host_ok(s, p, host_part(p));
}

/* ---- answers ---- */

/* A JSON-RPC error to nobody (id null): the body of a refusal at the HTTP level. */
static enum MHD_Result send_rpc_error(struct pbx_server *s, struct MHD_Connection *c,
                                      struct request_ctx *ctx, int status, int code,
                                      const char *msg)
{
    json_t *body = json_pack("{s:s, s:n, s:{s:i, s:s}}", "jsonrpc", "2.0", "id", "error", "code",
                             code, "message", msg);
    char *text = json_dumps(body, JSON_COMPACT);

    json_decref(body);
    return pbx__http_send_text(c, ctx, s, status, text != NULL ? text : xstrdup("{}"),
                               "application/json", 0);
}

/* Answer `text` (taken over; NULL: no body) with `status`, and the session's id when given. */
static enum MHD_Result send_message(struct pbx_server *s, struct MHD_Connection *c,
                                    struct request_ctx *ctx, int status, char *text,
                                    const char *session_id)
{
    const char *const headers[] = {"Mcp-Session-Id", session_id, NULL};

    return pbx__http_send_bytes(c, ctx, s, status, text, text != NULL ? strlen(text) : 0,
                                text != NULL ? "application/json" : NULL, 0,
                                session_id != NULL ? headers : NULL);
}

/*
 * Whether a reply is a JSON-RPC error; with `unaddressed`, one to nobody (id
 * null): the message itself was refused.  Errors are short: a long reply is
 * some request's result, not read again.
 */
static bool is_error(const char *reply, bool unaddressed)
{
    json_t *msg;
    bool yes;

    if (strlen(reply) > 4096)
        return false;
    msg = json_loads(reply, 0, NULL);
    yes = json_object_get(msg, "error") != NULL &&
          (!unaddressed || json_is_null(json_object_get(msg, "id")));
    json_decref(msg);
    return yes;
}

/* ---- a tools/call ---- */

/* A tools/call being run: everything its run needs, owned, as it may outlive the handler. */
struct mcp_run {
    struct pbx_server *s;      /* the server */
    struct mcp_conn *conn;     /* its MCP session (held) */
    struct pbx_mcp_call *call; /* the call, until it runs */
    struct pbx_caller who;     /* the caller (owned) */
    struct mcp_asker asker;    /* the backend's ctx: points into this */
    char client[64];           /* the caller's address */
    char request_id[72];       /* the request's id */
    struct stream *st;         /* streamed: its stream */
};

static void drop_message(const char *json, size_t len, void *arg)
{
    (void)json;
    (void)len;
    (void)arg;
}

static void stream_message(const char *json, size_t len, void *arg)
{
    pbx__stream_text(arg, "message", json, len);
}

static void run_free(struct mcp_run *r)
{
    conn_put(r->s->mcp, r->conn);
    pbx_caller_release(&r->who);
    free(r);
}

static json_t *run_streamed(struct stream *st, void *arg)
{
    struct mcp_run *r = arg;
    char *reply;

    r->st = st;
    reply = pbx_mcp_call_run(r->conn->mcp, r->call, stream_message, st);
    r->call = NULL;
    if (reply != NULL)
        pbx__stream_text(st, "message", reply, strlen(reply));
    free(reply);
    return NULL;
}

static void run_done(void *arg)
{
    run_free(arg);
}

/* Whether the client takes an application/json answer: no Accept, or one that names it. */
static bool takes_json(struct MHD_Connection *c)
{
    const char *accept = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Accept");

    return accept == NULL || strcasestr(accept, "application/json") != NULL ||
           strstr(accept, "*/*") != NULL || strcasestr(accept, "application/*") != NULL;
}

/*
 * Run the call: on this thread, answered as JSON, or (when it asked for
 * progress, or takes only text/event-stream) on a stream's.  A cancelled call is answered 204: its
 * client reads no answer.
 */
static enum MHD_Result run_call(struct pbx_server *s, struct MHD_Connection *c,
                                struct request_ctx *ctx, struct mcp_conn *conn,
                                struct pbx_mcp_call *call, struct pbx_caller *who)
{
    struct mcp_run *r = xcalloc(1, sizeof(*r));
    struct pbx_error *err = NULL;
    enum MHD_Result ret = MHD_NO;
    char *reply;

    r->s = s;
    r->conn = conn;
    r->call = call;
    r->who = *who;
    memset(who, 0, sizeof(*who)); /* the run's now */
    snprintf(r->client, sizeof(r->client), "%s", ctx->client);
    snprintf(r->request_id, sizeof(r->request_id), "%s", ctx->id);
    r->asker = (struct mcp_asker){
        .s = s, .who = &r->who, .client = r->client, .request_id = r->request_id};
    pbx_mcp_call_set_context(call, &r->asker);
    if (pbx_mcp_call_wants_progress(call) || !takes_json(c)) {
        if (pbx__stream_start_bare(s, c, ctx, run_streamed, run_done, r, &ret, &err) == 0)
            return ret; /* r is the stream's now */
        pbx_log(PBX_LOG_ERROR, "mcp: stream: %s", err->msg);
        pbx_error_free(&err);
    }
    reply = pbx_mcp_call_run(conn->mcp, call, drop_message, NULL);
    ret = reply != NULL ? send_message(s, c, ctx, 200, reply, NULL)
                        : send_message(s, c, ctx, 204, NULL, NULL);
    r->call = NULL;
    run_free(r);
    return ret;
}

/* ---- the requests ---- */

/* Whether the MCP-Protocol-Version sent (if any) is one this server speaks. */
static bool version_ok(const char *v)
{
    return v == NULL || strcmp(v, PBX_MCP_VERSION_LATEST) == 0 ||
           strcmp(v, PBX_MCP_VERSION_OLDER) == 0 || strcmp(v, "2025-03-26") == 0;
}

/* Whether a Content-Type is application/json (parameters allowed). */
static bool is_json(const char *ct)
{
    return ct != NULL && strncasecmp(ct, "application/json", 16) == 0 &&
           (ct[16] == '\0' || ct[16] == ';' || ct[16] == ' ');
}

/* Whether the MCP session `sid` is another node's: answered 421, naming it, if so. */
static bool misdirected(struct pbx_server *s, struct MHD_Connection *c, struct request_ctx *ctx,
                        const char *sid, enum MHD_Result *ret)
{
    char node[PBX_NODE_ID_MAX + 1];
    char msg[200];

    if (!pbx__id_elsewhere("mcp", sid, s->cfg->node_id, node))
        return false;
    snprintf(msg, sizeof(msg),
             "this MCP session lives on node `%s`, not this one: a proxy routes an "
             "Mcp-Session-Id of mcp_%s_... to it",
             node, node);
    *ret = send_rpc_error(s, c, ctx, 421, PBX_MCP_INVALID_REQUEST, msg);
    return true;
}

/* A message without Mcp-Session-Id: an initialize opens an MCP session; anything else is a 400. */
static enum MHD_Result post_new(struct pbx_server *s, struct MHD_Connection *c,
                                struct request_ctx *ctx, const struct pbx_caller *who,
                                const char *owner)
{
    struct mcp_conn *k = conn_new(s, who, ctx->client, owner);
    char *reply = NULL;
    struct pbx_mcp_call *call =
        pbx_mcp_accept(k->mcp, ctx->body.data ? ctx->body.data : "", ctx->body.len, &reply);
    enum MHD_Result ret;

    if (call != NULL) {
        pbx_mcp_call_free(k->mcp, call);
        conn_put(s->mcp, k);
        return send_rpc_error(s, c, ctx, 400, PBX_MCP_INVALID_REQUEST,
                              "send initialize first: every other message needs the "
                              "Mcp-Session-Id it answers");
    }
    if (pbx_mcp_version(k->mcp) == NULL) {
        /* Garbage or a refused request is answered as refused; anything else needs a session. */
        if (reply != NULL && is_error(reply, false)) {
            ret = send_message(s, c, ctx, 400, reply, NULL);
        } else {
            free(reply);
            ret = send_rpc_error(s, c, ctx, 400, PBX_MCP_INVALID_REQUEST,
                                 "no Mcp-Session-Id: send initialize first, then that header "
                                 "with every message");
        }
        conn_put(s->mcp, k);
        return ret;
    }
    if (!conn_list(s->mcp, k)) {
        free(reply);
        conn_put(s->mcp, k);
        return send_rpc_error(s, c, ctx, 503, PBX_MCP_INTERNAL_ERROR,
                              "as many MCP sessions are open as this server holds; retry later");
    }
    ret = send_message(s, c, ctx, 200, reply, k->id);
    conn_put(s->mcp, k);
    return ret;
}

static enum MHD_Result post(struct pbx_server *s, struct MHD_Connection *c, struct request_ctx *ctx,
                            struct pbx_caller *who, const char *owner)
{
    const char *sid = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Mcp-Session-Id");
    struct pbx_mcp_call *call;
    struct mcp_conn *k;
    enum MHD_Result ret;
    char *reply = NULL;

    if (!is_json(MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Type")))
        return send_rpc_error(s, c, ctx, 415, PBX_MCP_INVALID_REQUEST,
                              "send one JSON-RPC message as Content-Type: application/json");
    if (sid == NULL)
        return post_new(s, c, ctx, who, owner);
    if (misdirected(s, c, ctx, sid, &ret))
        return ret;
    k = conn_find(s->mcp, sid, owner);
    if (k == NULL)
        return send_rpc_error(s, c, ctx, 404, PBX_MCP_INVALID_REQUEST,
                              "no such MCP session (ended, expired, or never made): send "
                              "initialize again without Mcp-Session-Id");
    call = pbx_mcp_accept(k->mcp, ctx->body.data ? ctx->body.data : "", ctx->body.len, &reply);
    pbx_buf_release(&ctx->body);
    if (call != NULL)
        return run_call(s, c, ctx, k, call, who); /* k is the run's */
    conn_put(s->mcp, k);
    if (reply == NULL)
        return send_message(s, c, ctx, 202, NULL, NULL);
    return send_message(s, c, ctx, is_error(reply, true) ? 400 : 200, reply, NULL);
}

enum MHD_Result pbx__mcp_http_handle(struct pbx_server *s, struct MHD_Connection *c,
                                     struct request_ctx *ctx, const char *method)
{
    const char *host = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Host");
    struct pbx_caller who;
    struct pbx_error *err = NULL;
    const char *etype = NULL;
    enum MHD_Result ret;
    char owner[320];
    char msg[256];

    ctx->allow = "POST, DELETE, OPTIONS"; /* named by a 405's Allow */
    if (s->cfg->mcp == PBX_MCP_OFF)
        return pbx__http_send_error(c, ctx, s, "NotFound", "MCP is off on this server", 0, NULL);
    if (host == NULL || !host_ok(s, host, host_part(host))) {
        snprintf(msg, sizeof(msg),
                 "Host `%.64s` is not one this server answers MCP for; name it with "
                 "--mcp-allowed-hosts",
                 host != NULL ? host : "");
        return send_rpc_error(s, c, ctx, 403, PBX_MCP_INVALID_REQUEST, msg);
    }
    if (!origin_ok(s, MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Origin")))
        return send_rpc_error(s, c, ctx, 403, PBX_MCP_INVALID_REQUEST,
                              "this Origin may not drive MCP here; allow it with --cors-origin");
    if (strcmp(method, "POST") != 0 && strcmp(method, "DELETE") != 0)
        return send_rpc_error(s, c, ctx, 405, PBX_MCP_INVALID_REQUEST,
                              "this server opens no stream of its own: POST messages to /mcp");
    if (!version_ok(MHD_lookup_connection_value(c, MHD_HEADER_KIND, "MCP-Protocol-Version")))
        return send_rpc_error(
            s, c, ctx, 400, PBX_MCP_INVALID_REQUEST,
            "unsupported MCP-Protocol-Version: this server speaks " PBX_MCP_VERSION_LATEST
            ", " PBX_MCP_VERSION_OLDER " and 2025-03-26");
    if (pbx__auth_resolve(s, c, NULL, &who, &etype, &err) < 0) {
        ret = send_rpc_error(s, c, ctx, pbx_errtable_status(etype), PBX_MCP_INVALID_REQUEST,
                             err->msg);
        pbx_error_free(&err);
        pbx_caller_release(&who);
        return ret;
    }
    if (s->cfg->mcp == PBX_MCP_KEYED && !who.keyed && !who.admin) {
        pbx_caller_release(&who);
        return send_rpc_error(s, c, ctx, 401, PBX_MCP_INVALID_REQUEST,
                              "this server's MCP needs an API key: send Authorization: Bearer "
                              "<key>");
    }
    pbx__sessions_owner(&who, ctx->client, owner, sizeof(owner));
    if (strcmp(method, "DELETE") == 0) {
        const char *sid = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Mcp-Session-Id");
        struct mcp_conn *k = sid != NULL ? conn_find(s->mcp, sid, owner) : NULL;

        pbx_caller_release(&who);
        if (sid == NULL)
            return send_rpc_error(s, c, ctx, 400, PBX_MCP_INVALID_REQUEST,
                                  "name the MCP session to end in Mcp-Session-Id");
        if (misdirected(s, c, ctx, sid, &ret))
            return ret;
        if (k == NULL)
            return send_rpc_error(s, c, ctx, 404, PBX_MCP_INVALID_REQUEST,
                                  "no such MCP session (ended, expired, or never made)");
        conn_end(s->mcp, k);
        conn_put(s->mcp, k);
        return send_message(s, c, ctx, 204, NULL, NULL);
    }
    ret = post(s, c, ctx, &who, owner);
    pbx_caller_release(&who); /* emptied when a run took it */
    return ret;
}
