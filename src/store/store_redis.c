/*
 * The store on Redis, for several servers that share their keys, quotas and
 * audit log: "redis://[[USER]:PASSWORD@]HOST[:PORT][/DB][?timeout_ms=N&pool=N]".
 *
 * What lives where (every name begins with "pbx:"):
 * - pbx:{keys}:key:<hex of the token's hash>  a hash: one key's record
 *   (id, name, prefix, hash, created, revoked and its policy's fields);
 * - pbx:{keys}:names  a hash: name -> hex of the hash, never emptied, so
 *   that names stay unique, revoked keys' included;
 * - pbx:{keys}:created  a sorted set of the hashes by id: the keys' order;
 * - pbx:{keys}:seq  the last id given; pbx:{keys}:schema  this layout's version;
 * - pbx:quota:{<client>}:<day>  a counter per client and UTC day, expiring
 *   a few days after its last charge;
 * - pbx:audit  a stream of the audit records, the newest 100000 or so kept.
 * The keys' names share one Redis Cluster hash tag, so that a key's creation
 * (one Lua script: the name's uniqueness, the record, the order) touches one
 * slot; a quota counter and the stream are one key each.
 *
 * Calls: a small pool of connections, each used by one thread at a time.
 * Every call has one deadline (timeout_ms, 200 ms unless the URI says):
 * waiting for a free connection, connecting and each command get what is
 * left of it.  A failed connection makes every connection of the pool
 * reconnect before its next use, and the store refuses calls at once for a
 * backoff (50 ms, doubling to 2 s) rather than have each wait for a dead
 * server; the first call after it tries again.  A call that only reads
 * goes once more on a new connection when its kept one was closed by the
 * server meanwhile; one that writes is never sent twice.
 *
 * Everything read from Redis is untrusted: each reply's type is checked, as
 * are every field's presence, length and number syntax.  What does not fit
 * is an error (PBX_E_PROTO), never a guess.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <hiredis/hiredis.h>
#include <jansson.h>
#include <sodium.h>

#include "common/cleanup.h"
#include "common/xalloc.h"
#include "store/store_impl.h"
#include "common/banned.h"

#define DEFAULT_PORT       6379
#define DEFAULT_TIMEOUT_MS 200
#define TIMEOUT_MAX_MS     60000
#define DEFAULT_POOL       4
#define POOL_MAX           64
#define BACKOFF_MIN_MS     50
#define BACKOFF_MAX_MS     2000

/* The layout of the keys written here; a newer one is refused. */
#define LAYOUT_VERSION 1

/* The audit stream's approximate length, and a quota counter's life after its last charge. */
#define AUDIT_MAXLEN "100000"
#define QUOTA_TTL_S  "345600" /* 4 days */

/* The longest field of a record read back; a longer one is malformed. */
#define FIELD_MAX 8192

#define HASH_HEX (2 * PBX_STORE_HASH_BYTES)

#define K_NAMES   "pbx:{keys}:names"
#define K_CREATED "pbx:{keys}:created"
#define K_SEQ     "pbx:{keys}:seq"
#define K_SCHEMA  "pbx:{keys}:schema"
#define K_KEY     "pbx:{keys}:key:"
#define K_AUDIT   "pbx:audit"

enum script_id { SC_CREATE, SC_REVOKE, SC_QUOTA, SC_COUNT };

static const char *const scripts[SC_COUNT] = {
    /*
     * KEYS: names, created, seq, the record; ARGV: name, hash hex, then the
     * record's fields and values.  0: the name is taken; -1: the hash is
     * (never, by chance); else the new id.
     */
    [SC_CREATE] = "if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end\n"
                  "if redis.call('EXISTS', KEYS[4]) == 1 then return -1 end\n"
                  "local id = redis.call('INCR', KEYS[3])\n"
                  "redis.call('HSET', KEYS[4], 'id', id, unpack(ARGV, 3))\n"
                  "redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])\n"
                  "redis.call('ZADD', KEYS[2], id, ARGV[2])\n"
                  "return id\n",
    /* KEYS: the record; ARGV: now.  A second revoke keeps the first time; 0: no record. */
    [SC_REVOKE] = "local r = redis.call('HGET', KEYS[1], 'revoked')\n"
                  "if not r then return 0 end\n"
                  "if r == '0' then redis.call('HSET', KEYS[1], 'revoked', ARGV[1]) end\n"
                  "return 1\n",
    /*
     * KEYS: the counter; ARGV: the limit (< 0: none), its life in seconds.
     * {1, new count} when charged, {0, count} when the limit is reached.
     */
    [SC_QUOTA] = "local v = redis.call('GET', KEYS[1])\n"
                 "local c = 0\n"
                 "if v then\n"
                 "  if not string.match(v, '^[0-9]+$') or string.len(v) > 18 then\n"
                 "    return redis.error_reply('PBXBAD the counter is not a count')\n"
                 "  end\n"
                 "  c = tonumber(v)\n"
                 "end\n"
                 "local limit = tonumber(ARGV[1])\n"
                 "if limit >= 0 and c >= limit then return {0, c} end\n"
                 "c = redis.call('INCR', KEYS[1])\n"
                 "redis.call('EXPIRE', KEYS[1], ARGV[2])\n"
                 "return {1, c}\n",
};

struct conn {
    pthread_mutex_t lock; /* held by the call using ctx */
    redisContext *ctx;    /* NULL until connected, and after a failure */
    unsigned gen;         /* the store's generation it was made in */
};

struct redis_store {
    struct pbx_store base; /* first: what store.c dispatches on */
    char *shown;           /* the URI without its password, for messages (owned) */
    char *host;            /* (owned) */
    int port;
    int db;
    char *user;     /* or NULL (owned) */
    char *password; /* or NULL (owned, wiped at close) */
    int timeout_ms;
    size_t nconns;
    struct conn *conns;
    atomic_uint next; /* where the search for a free connection starts */
    char sha[SC_COUNT][41];

    pthread_mutex_t state; /* guards what follows */
    unsigned gen;          /* bumped by every failure: older connections are dropped */
    int backoff_ms;        /* 0 while healthy */
    struct timespec retry_at;
    int last_code;
    char last_msg[256];
};

/* One call's hold on a connection, and its deadline. */
struct call {
    struct redis_store *rs;
    struct conn *c;
    struct timespec deadline; /* CLOCK_MONOTONIC */
    sigset_t oldmask;
    bool pipe_pending; /* SIGPIPE was pending before the call */
    int rc;            /* the return of the call's last error */
    bool reused;       /* its connection was open before the call */
    bool may_retry;    /* the command is idempotent: it may go again on a new connection */
};

static struct timespec now_mono(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts;
}

static int64_t ms_between(struct timespec a, struct timespec b)
{
    return (int64_t)(b.tv_sec - a.tv_sec) * 1000 + (b.tv_nsec - a.tv_nsec) / 1000000;
}

static struct timespec add_ms(struct timespec t, int64_t ms)
{
    t.tv_sec += ms / 1000;
    t.tv_nsec += (ms % 1000) * 1000000;
    if (t.tv_nsec >= 1000000000) {
        t.tv_sec++;
        t.tv_nsec -= 1000000000;
    }
    return t;
}

/* What is left of the call's time, in ms (<= 0: none). */
static int64_t remaining_ms(const struct call *call)
{
    return ms_between(now_mono(), call->deadline);
}

static struct timeval tv_of(int64_t ms)
{
    if (ms < 1)
        ms = 1;
    return (struct timeval){.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
}

/* ---- URI ---- */

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Percent-decode `n` bytes of `s`; NULL when malformed or holding a NUL. */
static char *pct_decode(const char *s, size_t n)
{
    char *out = xmalloc(n + 1);
    size_t len = 0;

    for (size_t i = 0; i < n; i++) {
        int hi = i + 2 < n ? hexval(s[i + 1]) : -1;
        int lo = i + 2 < n ? hexval(s[i + 2]) : -1;

        if (s[i] != '%') {
            out[len++] = s[i];
            continue;
        }
        if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
            free(out);
            return NULL;
        }
        out[len++] = (char)(hi * 16 + lo);
        i += 2;
    }
    out[len] = '\0';
    return out;
}

/* A decimal number of `s`..`end`, within lo..hi. */
static bool parse_num(const char *s, const char *end, long lo, long hi, long *out)
{
    long v = 0;

    if (s == end || end - s > 9)
        return false;
    for (const char *p = s; p < end; p++) {
        if (*p < '0' || *p > '9')
            return false;
        v = v * 10 + (*p - '0');
    }
    if (v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

static int bad_uri(const char *shown, const char *why, struct pbx_error **err)
{
    return pbx_error_set(err, PBX_E_INVAL,
                         "store `%s`: %s; use redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]"
                         "[?timeout_ms=N&pool=N]",
                         shown, why);
}

/* The query's parameters: timeout_ms=N, pool=N, '&' apart. */
static int parse_query(struct redis_store *rs, const char *q, struct pbx_error **err)
{
    while (*q != '\0') {
        const char *end = q + strcspn(q, "&");
        const char *eq = memchr(q, '=', (size_t)(end - q));
        long v;

        if (eq == NULL)
            return bad_uri(rs->shown, "a query parameter has no value", err);
        if ((size_t)(eq - q) == strlen("timeout_ms") && strncmp(q, "timeout_ms", 10) == 0) {
            if (!parse_num(eq + 1, end, 1, TIMEOUT_MAX_MS, &v))
                return bad_uri(rs->shown, "timeout_ms is not 1 to 60000", err);
            rs->timeout_ms = (int)v;
        } else if ((size_t)(eq - q) == strlen("pool") && strncmp(q, "pool", 4) == 0) {
            if (!parse_num(eq + 1, end, 1, POOL_MAX, &v))
                return bad_uri(rs->shown, "pool is not 1 to 64", err);
            rs->nconns = (size_t)v;
        } else {
            return bad_uri(rs->shown, "unknown query parameter (timeout_ms and pool are known)",
                           err);
        }
        q = *end == '&' ? end + 1 : end;
    }
    return 0;
}

static int parse_uri(struct redis_store *rs, const char *uri, struct pbx_error **err)
{
    const char *p = uri + strlen("redis://");
    /* Everything before the last '@' is the user and password, whatever they hold. */
    const char *auth_end = strrchr(p, '@');
    const char *host;
    const char *host_end;
    const char *rest;
    long v;

    rs->port = DEFAULT_PORT;
    rs->timeout_ms = DEFAULT_TIMEOUT_MS;
    rs->nconns = DEFAULT_POOL;
    rs->shown = pbx_store_uri_redact(uri);
    if (auth_end != NULL) {
        const char *colon = memchr(p, ':', (size_t)(auth_end - p));

        if (colon == NULL)
            return bad_uri(rs->shown, "the part before '@' must be [USER]:PASSWORD", err);
        if (colon > p) {
            rs->user = pct_decode(p, (size_t)(colon - p));
            if (rs->user == NULL)
                return bad_uri(rs->shown, "the user is not percent-encoded right", err);
        }
        rs->password = pct_decode(colon + 1, (size_t)(auth_end - colon - 1));
        if (rs->password == NULL)
            return bad_uri(rs->shown, "the password is not percent-encoded right", err);
        if (rs->password[0] == '\0' && rs->user == NULL) {
            free(rs->password); /* "redis://:@HOST": no password */
            rs->password = NULL;
        }
        host = auth_end + 1;
    } else {
        host = p;
    }
    if (*host == '[') {
        host_end = strchr(host, ']');
        if (host_end == NULL)
            return bad_uri(rs->shown, "an IPv6 address lacks its ']'", err);
        rs->host = xstrndup(host + 1, (size_t)(host_end - host - 1));
        host_end++;
    } else {
        host_end = host + strcspn(host, ":/?");
        rs->host = xstrndup(host, (size_t)(host_end - host));
    }
    if (rs->host[0] == '\0')
        return bad_uri(rs->shown, "no host", err);
    if (strspn(rs->host, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-:") !=
        strlen(rs->host))
        return bad_uri(rs->shown, "the host is not a name or an address", err);
    rest = host_end;
    if (*rest == ':') {
        const char *end = rest + 1 + strcspn(rest + 1, "/?");

        if (!parse_num(rest + 1, end, 1, 65535, &v))
            return bad_uri(rs->shown, "the port is not 1 to 65535", err);
        rs->port = (int)v;
        rest = end;
    }
    if (*rest == '/') {
        const char *end = rest + 1 + strcspn(rest + 1, "?");

        if (end > rest + 1) {
            if (!parse_num(rest + 1, end, 0, 1000000, &v))
                return bad_uri(rs->shown, "the database is not a number", err);
            rs->db = (int)v;
        }
        rest = end;
    }
    if (*rest == '?')
        return parse_query(rs, rest + 1, err);
    if (*rest != '\0')
        return bad_uri(rs->shown, "unexpected characters after the host", err);
    return 0;
}

/* ---- Errors ---- */

/* SIGPIPE of a write to a closed connection is held and dropped, not delivered. */
static void sigpipe_hold(struct call *call)
{
    sigset_t pipe_set;
    sigset_t pending;

    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    sigpending(&pending);
    call->pipe_pending = sigismember(&pending, SIGPIPE) == 1;
    pthread_sigmask(SIG_BLOCK, &pipe_set, &call->oldmask);
}

static void sigpipe_release(struct call *call)
{
    sigset_t pipe_set;
    sigset_t pending;

    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    if (!call->pipe_pending && sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE) == 1) {
        static const struct timespec zero = {0, 0};

        sigtimedwait(&pipe_set, NULL, &zero);
    }
    pthread_sigmask(SIG_SETMASK, &call->oldmask, NULL);
}

/* The code of a context's error; `sys` is errno just after the failing call. */
static int ctx_code(const redisContext *ctx, int sys)
{
    if (ctx == NULL)
        return PBX_E_NOMEM;
    switch (ctx->err) {
    case REDIS_ERR_IO:
        if (sys == EAGAIN || sys == EWOULDBLOCK || sys == EINPROGRESS)
            return ETIMEDOUT;
        return sys > 0 ? sys : EIO;
    case REDIS_ERR_EOF:
        return ECONNRESET;
    case REDIS_ERR_PROTOCOL:
        return PBX_E_PROTO;
    case REDIS_ERR_OOM:
        return PBX_E_NOMEM;
    default:
        return EIO;
    }
}

/* Note a failure of the connection: every connection reconnects, after a backoff. */
static void note_failure(struct redis_store *rs, int code, const char *msg)
{
    pthread_mutex_lock(&rs->state);
    rs->gen++;
    rs->backoff_ms = rs->backoff_ms == 0                   ? BACKOFF_MIN_MS
                     : rs->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS
                                                           : rs->backoff_ms * 2;
    rs->retry_at = add_ms(now_mono(), rs->backoff_ms);
    rs->last_code = code;
    snprintf(rs->last_msg, sizeof(rs->last_msg), "%s", msg);
    pthread_mutex_unlock(&rs->state);
}

static void note_success(struct redis_store *rs)
{
    pthread_mutex_lock(&rs->state);
    rs->backoff_ms = 0;
    pthread_mutex_unlock(&rs->state);
}

/* The connection of `call` failed doing `what`: drop it, note it, report it. */
static int conn_failed(struct call *call, int sys, const char *what, struct pbx_error **err)
{
    struct redis_store *rs = call->rs;
    redisContext *ctx = call->c->ctx;
    int code = ctx_code(ctx, sys);
    char msg[256];
    int r;

    if (ctx != NULL && ctx->err == REDIS_ERR_IO && code != EIO)
        snprintf(msg, sizeof(msg), "%s", what);
    else
        snprintf(msg, sizeof(msg), "%s: %s", what,
                 ctx == NULL                 ? "out of memory"
                 : ctx->err == REDIS_ERR_EOF ? "the server closed the connection"
                                             : ctx->errstr);
    r = pbx_error_set(err, code, "store `%s`: %s", rs->shown, msg);
    call->rc = r;
    note_failure(rs, code, msg);
    if (ctx != NULL)
        redisFree(ctx);
    call->c->ctx = NULL;
    return r;
}

/* A reply that is not what the protocol says: the connection cannot be trusted further. */
static int malformed(struct call *call, const char *what, struct pbx_error **err)
{
    call->rc = pbx_error_set(err, PBX_E_PROTO, "store `%s`: %s: unexpected reply from Redis",
                             call->rs->shown, what);
    return call->rc;
}

/* An error reply: the command failed, the connection is fine. */
static int reply_error_set(struct call *call, const redisReply *reply, const char *what,
                           struct pbx_error **err)
{
    int len = reply->len > 200 ? 200 : (int)reply->len;

    if (reply->len >= 9 && strncmp(reply->str, "WRONGTYPE", 9) == 0)
        return pbx_error_set(err, PBX_E_PROTO,
                             "store `%s`: %s: a key of pybox holds a value of the wrong type "
                             "(Redis: %.*s)",
                             call->rs->shown, what, len, reply->str);
    if (strstr(reply->str != NULL ? reply->str : "", "PBXBAD") != NULL)
        return pbx_error_set(err, PBX_E_PROTO, "store `%s`: %s: a value of pybox is malformed",
                             call->rs->shown, what);
    return pbx_error_set(err, EIO, "store `%s`: %s: Redis: %.*s", call->rs->shown, what, len,
                         reply->str != NULL ? reply->str : "");
}

static int reply_error(struct call *call, const redisReply *reply, const char *what,
                       struct pbx_error **err)
{
    call->rc = reply_error_set(call, reply, what, err);
    return call->rc;
}

/* ---- Connections and calls ---- */

static void free_reply(redisReply **r)
{
    if (*r != NULL)
        freeReplyObject(*r);
}
#define cleanup_reply __attribute__((cleanup(free_reply)))

static int connect_conn(struct call *call, unsigned gen, struct pbx_error **err);

/*
 * Whether a connection that was open before the call failed as one the
 * server had closed meanwhile (its idle timeout, a restart): the command
 * did not run, or ran and ended with the connection.
 */
static bool closed_meanwhile(const redisContext *ctx, int sys)
{
    return ctx->err == REDIS_ERR_EOF ||
           (ctx->err == REDIS_ERR_IO && (sys == ECONNRESET || sys == EPIPE));
}

/*
 * Send one command on the call's connection: NULL (and the connection
 * dropped) on failure.  An idempotent command (call->may_retry) whose kept
 * connection turns out closed goes once more on a new one, within the same
 * deadline; any other is never sent twice.
 */
static redisReply *send_argv(struct call *call, int argc, const char **argv, const size_t *lens,
                             const char *what, struct pbx_error **err)
{
    for (;;) {
        int64_t left = remaining_ms(call);
        redisReply *reply;
        unsigned gen;
        int sys;

        if (left <= 0) {
            errno = ETIMEDOUT;
            call->c->ctx->err = REDIS_ERR_IO;
            conn_failed(call, ETIMEDOUT, what, err);
            return NULL;
        }
        redisSetTimeout(call->c->ctx, tv_of(left));
        errno = 0;
        reply = redisCommandArgv(call->c->ctx, argc, argv, lens);
        if (reply != NULL)
            return reply;
        sys = errno;
        if (!call->may_retry || !call->reused || !closed_meanwhile(call->c->ctx, sys)) {
            conn_failed(call, sys, what, err);
            return NULL;
        }
        /* The pool's other kept connections are likely closed too: they reconnect. */
        redisFree(call->c->ctx);
        call->c->ctx = NULL;
        call->reused = false;
        pthread_mutex_lock(&call->rs->state);
        gen = ++call->rs->gen;
        pthread_mutex_unlock(&call->rs->state);
        if (connect_conn(call, gen, err) < 0)
            return NULL;
    }
}

/* A command of NUL-terminated strings; an error reply comes back as one. */
static redisReply *command(struct call *call, const char *what, struct pbx_error **err, int argc,
                           const char **argv)
{
    size_t lens[32];

    PBX_ASSERT(argc <= 32);
    for (int i = 0; i < argc; i++)
        lens[i] = strlen(argv[i]);
    return send_argv(call, argc, argv, lens, what, err);
}

/* Like command(), but an error reply is an error; NULL either way. */
static redisReply *command_ok(struct call *call, const char *what, struct pbx_error **err, int argc,
                              const char **argv)
{
    redisReply *reply = command(call, what, err, argc, argv);

    if (reply != NULL && reply->type == REDIS_REPLY_ERROR) {
        reply_error(call, reply, what, err);
        freeReplyObject(reply);
        return NULL;
    }
    return reply;
}

/* AUTH, SELECT: what a new connection needs before its first command. */
static int hello(struct call *call, struct pbx_error **err)
{
    struct redis_store *rs = call->rs;
    redisReply *reply;

    if (rs->password != NULL) {
        const char *argv[3] = {"AUTH", rs->user != NULL ? rs->user : rs->password, rs->password};

        reply = command_ok(call, "authenticate", err, rs->user != NULL ? 3 : 2, argv);
        if (reply == NULL)
            return call->rc;
        freeReplyObject(reply);
    }
    if (rs->db != 0) {
        char db[16];
        const char *argv[2] = {"SELECT", db};

        snprintf(db, sizeof(db), "%d", rs->db);
        reply = command_ok(call, "select the database", err, 2, argv);
        if (reply == NULL)
            return call->rc;
        freeReplyObject(reply);
    }
    return 0;
}

static void end_call(struct call *call)
{
    if (call->c != NULL)
        pthread_mutex_unlock(&call->c->lock);
    call->c = NULL;
    sigpipe_release(call);
}

/* Drop a connection that is no longer trusted (a malformed reply) and end the call. */
static void end_call_drop(struct call *call)
{
    if (call->c != NULL && call->c->ctx != NULL) {
        redisFree(call->c->ctx);
        call->c->ctx = NULL;
    }
    end_call(call);
}

/*
 * Begin a call: a connection of the pool, connected, within the deadline.
 * < 0 with *err (and nothing held) when the store is in its backoff, no
 * connection is free in time or connecting fails.
 */
static int begin_call(struct redis_store *rs, struct call *call, struct pbx_error **err)
{
    struct timespec now = now_mono();
    unsigned start;
    unsigned gen;
    int r;

    *call = (struct call){.rs = rs, .deadline = add_ms(now, rs->timeout_ms)};
    pthread_mutex_lock(&rs->state);
    if (rs->backoff_ms != 0 && ms_between(now, rs->retry_at) > 0) {
        int64_t wait = ms_between(now, rs->retry_at);

        r = pbx_error_set(err, rs->last_code,
                          "store `%s`: unreachable (%s); next try in %" PRId64 " ms", rs->shown,
                          rs->last_msg, wait);
        pthread_mutex_unlock(&rs->state);
        return r;
    }
    gen = rs->gen;
    pthread_mutex_unlock(&rs->state);

    start = atomic_fetch_add(&rs->next, 1);
    for (size_t i = 0; i < rs->nconns && call->c == NULL; i++) {
        struct conn *c = &rs->conns[(start + i) % rs->nconns];

        if (pthread_mutex_trylock(&c->lock) == 0)
            call->c = c;
    }
    if (call->c == NULL) {
        struct conn *c = &rs->conns[start % rs->nconns];
        struct timespec abs;

        clock_gettime(CLOCK_REALTIME, &abs);
        abs = add_ms(abs, remaining_ms(call) > 0 ? remaining_ms(call) : 0);
        r = pthread_mutex_timedlock(&c->lock, &abs);
        if (r != 0)
            return pbx_error_set(err, r == ETIMEDOUT ? ETIMEDOUT : r,
                                 "store `%s`: no connection free within %d ms", rs->shown,
                                 rs->timeout_ms);
        call->c = c;
    }
    sigpipe_hold(call);
    if (call->c->ctx != NULL && call->c->gen != gen) {
        redisFree(call->c->ctx);
        call->c->ctx = NULL;
    }
    call->reused = call->c->ctx != NULL;
    if (!call->reused && connect_conn(call, gen, err) < 0) {
        r = call->rc;
        end_call(call);
        return r;
    }
    return 0;
}

/*
 * Connect the call's connection, as of the store's generation `gen`: 0, or
 * < 0 with *err and call->rc (the connection left closed).
 */
static int connect_conn(struct call *call, unsigned gen, struct pbx_error **err)
{
    struct redis_store *rs = call->rs;
    int64_t left = remaining_ms(call);
    bool may_retry = call->may_retry;

    if (left <= 0) {
        call->rc = pbx_error_set(err, ETIMEDOUT, "store `%s`: no time left to connect within %d ms",
                                 rs->shown, rs->timeout_ms);
        return call->rc;
    }
    errno = 0;
    call->c->ctx = redisConnectWithTimeout(rs->host, rs->port, tv_of(left));
    if (call->c->ctx == NULL || call->c->ctx->err != 0)
        return conn_failed(call, errno, "connect", err);
    call->c->gen = gen;
    call->may_retry = false;
    if (hello(call, err) < 0) {
        if (call->c->ctx != NULL) {
            redisFree(call->c->ctx);
            call->c->ctx = NULL;
        }
        call->may_retry = may_retry;
        return call->rc;
    }
    call->may_retry = may_retry;
    return 0;
}

/*
 * EVALSHA of script `id` with `nkeys` keys among `argv`; its text once more
 * (SCRIPT LOAD) when Redis lost it (NOSCRIPT: a restart, SCRIPT FLUSH).
 */
static redisReply *eval(struct call *call, enum script_id id, int nkeys, int argc,
                        const char **argv, const size_t *lens, const char *what,
                        struct pbx_error **err)
{
    const char *full[48];
    size_t full_lens[48];
    char nk[8];
    redisReply *reply;

    PBX_ASSERT(argc + 3 <= 48);
    snprintf(nk, sizeof(nk), "%d", nkeys);
    full[0] = "EVALSHA";
    full[1] = call->rs->sha[id];
    full[2] = nk;
    full_lens[0] = 7;
    full_lens[1] = strlen(full[1]);
    full_lens[2] = strlen(nk);
    for (int i = 0; i < argc; i++) {
        full[3 + i] = argv[i];
        full_lens[3 + i] = lens != NULL ? lens[i] : strlen(argv[i]);
    }
    for (int attempt = 0;; attempt++) {
        reply = send_argv(call, argc + 3, full, full_lens, what, err);
        if (reply == NULL)
            return NULL;
        if (reply->type == REDIS_REPLY_ERROR && attempt == 0 && reply->len >= 8 &&
            strncmp(reply->str, "NOSCRIPT", 8) == 0) {
            const char *load[3] = {"SCRIPT", "LOAD", scripts[id]};
            redisReply *loaded;

            freeReplyObject(reply);
            loaded = command_ok(call, "load a script", err, 3, load);
            if (loaded == NULL)
                return NULL;
            freeReplyObject(loaded);
            continue;
        }
        break;
    }
    if (reply->type == REDIS_REPLY_ERROR) {
        reply_error(call, reply, what, err);
        freeReplyObject(reply);
        return NULL;
    }
    return reply;
}

/* ---- Reading replies ---- */

/* A bulk string of 1 to `max` bytes and no NUL. */
static bool is_text(const redisReply *r, size_t max)
{
    return r != NULL && r->type == REDIS_REPLY_STRING && r->str != NULL && r->len <= max &&
           memchr(r->str, '\0', r->len) == NULL;
}

/* A decimal int64 in a bulk string, nothing else. */
static bool parse_i64(const redisReply *r, int64_t *out)
{
    char buf[24];
    char *end;
    long long v;

    if (!is_text(r, 20) || r->len == 0)
        return false;
    memcpy(buf, r->str, r->len);
    buf[r->len] = '\0';
    if (strspn(buf + (buf[0] == '-'), "0123456789") != r->len - (buf[0] == '-') ||
        r->len == (size_t)(buf[0] == '-'))
        return false;
    errno = 0;
    v = strtoll(buf, &end, 10);
    if (errno != 0 || *end != '\0')
        return false;
    *out = v;
    return true;
}

static bool parse_double(const redisReply *r, double *out)
{
    char buf[64];
    char *end;
    double v;

    if (!is_text(r, sizeof(buf) - 1) || r->len == 0)
        return false;
    memcpy(buf, r->str, r->len);
    buf[r->len] = '\0';
    errno = 0;
    v = strtod(buf, &end);
    if (errno != 0 || *end != '\0' || !isfinite(v))
        return false;
    *out = v;
    return true;
}

/* A hash's hex: HASH_HEX lowercase hex digits. */
static bool is_hash_hex(const redisReply *r)
{
    return is_text(r, HASH_HEX) && r->len == HASH_HEX &&
           strspn(r->str, "0123456789abcdef") >= HASH_HEX;
}

enum field {
    F_ID,
    F_NAME,
    F_PREFIX,
    F_HASH,
    F_CREATED,
    F_REVOKED,
    F_RPM,
    F_RPD,
    F_TIMEOUT,
    F_MEMORY,
    F_ALL_MODULES,
    F_MODULES,
    F_NETWORK,
    F_ADMIN,
    F_SESSIONS,
    F_IDLE,
    F_LIFETIME,
    F_COUNT,
};

static const char *const field_names[F_COUNT] = {
    [F_ID] = "id",
    [F_NAME] = "name",
    [F_PREFIX] = "prefix",
    [F_HASH] = "hash",
    [F_CREATED] = "created",
    [F_REVOKED] = "revoked",
    [F_RPM] = "rpm",
    [F_RPD] = "rpd",
    [F_TIMEOUT] = "timeout_ms",
    [F_MEMORY] = "memory_bytes",
    [F_ALL_MODULES] = "all_modules",
    [F_MODULES] = "modules",
    [F_NETWORK] = "network",
    [F_ADMIN] = "admin",
    [F_SESSIONS] = "sessions",
    [F_IDLE] = "session_idle_ttl_s",
    [F_LIFETIME] = "session_lifetime_s",
};

/* An integer field within lo..hi. */
static bool field_int(const redisReply *v, int64_t lo, int64_t hi, int64_t *out)
{
    return parse_i64(v, out) && *out >= lo && *out <= hi;
}

/*
 * Fill `info` from a record's HGETALL reply, and *hash from its hash field.
 * 0 when the record is empty (no such key), 1 when read, < 0 when malformed.
 */
static int read_record(struct call *call, const redisReply *r, struct pbx_key_info *info,
                       unsigned char hash[PBX_STORE_HASH_BYTES], struct pbx_error **err)
{
    const redisReply *f[F_COUNT] = {0};
    int64_t v[F_COUNT] = {0};
    const char *bad = NULL;

    if (r->type != REDIS_REPLY_ARRAY || r->elements % 2 != 0 || r->elements > 2 * 64)
        return malformed(call, "read a key", err);
    if (r->elements == 0)
        return 0;
    for (size_t i = 0; i < r->elements; i += 2) {
        const redisReply *k = r->element[i];

        if (!is_text(k, 64))
            return malformed(call, "read a key", err);
        for (int j = 0; j < F_COUNT; j++) {
            if (k->len == strlen(field_names[j]) && memcmp(k->str, field_names[j], k->len) == 0)
                f[j] = r->element[i + 1];
        }
    }
    for (int j = 0; j < F_COUNT && bad == NULL; j++) {
        if (f[j] == NULL && j != F_MODULES)
            bad = field_names[j];
    }
    if (bad == NULL && !field_int(f[F_ID], 1, INT64_MAX, &v[F_ID]))
        bad = "id";
    if (bad == NULL && (!is_text(f[F_NAME], PBX_STORE_NAME_MAX) || f[F_NAME]->len == 0))
        bad = "name";
    if (bad == NULL && !is_text(f[F_PREFIX], PBX_STORE_PREFIX_LEN))
        bad = "prefix";
    if (bad == NULL && !is_hash_hex(f[F_HASH]))
        bad = "hash";
    if (bad == NULL && !field_int(f[F_CREATED], 0, INT64_MAX, &v[F_CREATED]))
        bad = "created";
    if (bad == NULL && !field_int(f[F_REVOKED], 0, INT64_MAX, &v[F_REVOKED]))
        bad = "revoked";
    if (bad == NULL && !field_int(f[F_RPM], -1, INT64_MAX, &v[F_RPM]))
        bad = "rpm";
    if (bad == NULL && !field_int(f[F_RPD], -1, INT64_MAX, &v[F_RPD]))
        bad = "rpd";
    if (bad == NULL && !field_int(f[F_TIMEOUT], 0, UINT32_MAX, &v[F_TIMEOUT]))
        bad = "timeout_ms";
    if (bad == NULL && !field_int(f[F_MEMORY], 0, INT64_MAX, &v[F_MEMORY]))
        bad = "memory_bytes";
    for (int j = F_ALL_MODULES; j <= F_ADMIN && bad == NULL; j++) {
        if (j != F_MODULES && !field_int(f[j], 0, 1, &v[j]))
            bad = field_names[j];
    }
    if (bad == NULL && f[F_MODULES] != NULL &&
        (!is_text(f[F_MODULES], PBX_STORE_MODULES_MAX) || f[F_MODULES]->len == 0))
        bad = "modules";
    /* Out of range reads as 0, the server's setting, as in SQLite. */
    for (int j = F_SESSIONS; j <= F_LIFETIME && bad == NULL; j++) {
        if (!parse_i64(f[j], &v[j]))
            bad = field_names[j];
    }
    if (bad != NULL)
        return pbx_error_set(err, PBX_E_PROTO,
                             "store `%s`: a key's record is malformed: field `%s`", call->rs->shown,
                             bad);
    sodium_hex2bin(hash, PBX_STORE_HASH_BYTES, f[F_HASH]->str, HASH_HEX, NULL, NULL, NULL);
    *info = (struct pbx_key_info){
        .id = v[F_ID],
        .name = xstrndup(f[F_NAME]->str, f[F_NAME]->len),
        .prefix = xstrndup(f[F_PREFIX]->str, f[F_PREFIX]->len),
        .created = v[F_CREATED],
        .revoked = v[F_REVOKED] != 0,
        .policy =
            {
                .rpm = v[F_RPM],
                .rpd = v[F_RPD],
                .timeout_ms = (uint32_t)v[F_TIMEOUT],
                .memory_bytes = (uint64_t)v[F_MEMORY],
                .all_modules = v[F_ALL_MODULES] != 0,
                .modules =
                    f[F_MODULES] != NULL ? xstrndup(f[F_MODULES]->str, f[F_MODULES]->len) : NULL,
                .network = v[F_NETWORK] != 0,
                .admin = v[F_ADMIN] != 0,
                .sessions = pbx__store_count(v[F_SESSIONS], PBX_CALLER_SESSIONS_MAX),
                .session_idle_ttl_s = pbx__store_count(v[F_IDLE], PBX_CALLER_SPAN_MAX_S),
                .session_lifetime_s = pbx__store_count(v[F_LIFETIME], PBX_CALLER_SPAN_MAX_S),
            },
    };
    return 1;
}

/* ---- The backend ---- */

static void rd_close(struct pbx_store *base)
{
    struct redis_store *rs = (struct redis_store *)base;

    if (rs == NULL)
        return;
    for (size_t i = 0; rs->conns != NULL && i < rs->nconns; i++) {
        if (rs->conns[i].ctx != NULL)
            redisFree(rs->conns[i].ctx);
        pthread_mutex_destroy(&rs->conns[i].lock);
    }
    free(rs->conns);
    pthread_mutex_destroy(&rs->state);
    if (rs->password != NULL)
        sodium_memzero(rs->password, strlen(rs->password));
    free(rs->password);
    free(rs->user);
    free(rs->host);
    free(rs->shown);
    free(rs);
}

/* At open: the scripts' SHA-1s, and the layout's version (written when `create`). */
static int first_call(struct redis_store *rs, bool create, struct pbx_error **err)
{
    struct call call;
    int r;

    r = begin_call(rs, &call, err);
    if (r < 0)
        return r;
    for (int i = 0; i < SC_COUNT; i++) {
        const char *load[3] = {"SCRIPT", "LOAD", scripts[i]};
        cleanup_reply redisReply *reply = command_ok(&call, "load a script", err, 3, load);

        if (reply == NULL) {
            r = call.rc;
            end_call_drop(&call);
            return r;
        }
        if (!is_text(reply, 40) || reply->len != 40 ||
            strspn(reply->str, "0123456789abcdef") < 40) {
            r = malformed(&call, "load a script", err);
            end_call_drop(&call);
            return r;
        }
        memcpy(rs->sha[i], reply->str, 40);
        rs->sha[i][40] = '\0';
    }
    if (create) {
        const char *set[4] = {"SET", K_SCHEMA, "1", "NX"};
        cleanup_reply redisReply *reply =
            command_ok(&call, "write the layout's version", err, 4, set);

        if (reply == NULL) {
            r = call.rc;
            end_call_drop(&call);
            return r;
        }
    }
    {
        const char *get[2] = {"GET", K_SCHEMA};
        cleanup_reply redisReply *reply =
            command_ok(&call, "read the layout's version", err, 2, get);
        int64_t version = 0;

        if (reply == NULL) {
            r = call.rc;
            end_call_drop(&call);
            return r;
        }
        if (reply->type != REDIS_REPLY_NIL && (!parse_i64(reply, &version) || version < 1)) {
            r = pbx_error_set(err, PBX_E_PROTO,
                              "store `%s`: `" K_SCHEMA "` is not a version of pybox's layout",
                              rs->shown);
            end_call(&call);
            return r;
        }
        if (version > LAYOUT_VERSION) {
            r = pbx_error_set(err, PBX_E_UNSUPPORTED,
                              "store `%s` has layout version %" PRId64
                              ", newer than this pybox understands (%d): upgrade pybox",
                              rs->shown, version, LAYOUT_VERSION);
            end_call(&call);
            return r;
        }
    }
    end_call(&call);
    note_success(rs);
    return 0;
}

static int rd_open(const char *uri, bool create, struct pbx_store **out, struct pbx_error **err)
{
    struct redis_store *rs;
    int r;

    *out = NULL;
    if (sodium_init() < 0)
        return pbx_error_set(err, PBX_E_UNSUPPORTED, "store: libsodium could not be initialised");
    rs = xcalloc(1, sizeof(*rs));
    rs->base.be = &pbx__store_redis;
    pthread_mutex_init(&rs->state, NULL);
    r = parse_uri(rs, uri, err);
    if (r == 0) {
        rs->conns = xcalloc(rs->nconns, sizeof(*rs->conns));
        for (size_t i = 0; i < rs->nconns; i++)
            pthread_mutex_init(&rs->conns[i].lock, NULL);
        r = first_call(rs, create, err);
    }
    if (r < 0) {
        rd_close(&rs->base);
        return r;
    }
    *out = &rs->base;
    return 0;
}

static void new_key_releasep(struct pbx_store_new_key *key)
{
    pbx__store_new_key_release(key);
}

static int rd_key_create(struct pbx_store *base, const char *name,
                         const struct pbx_key_policy *policy, char **token, struct pbx_error **err)
{
    static const struct pbx_key_policy defaults = {0};
    struct redis_store *rs = (struct redis_store *)base;
    const struct pbx_key_policy *p = policy != NULL ? policy : &defaults;
    __attribute__((cleanup(new_key_releasep))) struct pbx_store_new_key key = {0};
    char hex[HASH_HEX + 1];
    char record[sizeof(K_KEY) + HASH_HEX];
    char nums[12][24];
    const char *argv[44];
    int argc = 0;
    int n = 0;
    struct call call;
    redisReply *reply;
    int r;

    *token = NULL;
    r = pbx__store_new_key(name, policy, &key, err);
    if (r < 0)
        return r;
    sodium_bin2hex(hex, sizeof(hex), key.hash, sizeof(key.hash));
    snprintf(record, sizeof(record), K_KEY "%s", hex);
    argv[argc++] = K_NAMES;
    argv[argc++] = K_CREATED;
    argv[argc++] = K_SEQ;
    argv[argc++] = record;
    argv[argc++] = name;
    argv[argc++] = hex;
#define FIELD_STR(k, s) (argv[argc++] = (k), argv[argc++] = (s))
#define FIELD_NUM(k, fmt, v) \
    (snprintf(nums[n], sizeof(nums[n]), fmt, v), FIELD_STR(k, nums[n]), n++)
    FIELD_STR("name", name);
    FIELD_STR("prefix", key.prefix);
    FIELD_STR("hash", hex);
    FIELD_NUM("created", "%" PRId64, (int64_t)time(NULL));
    FIELD_STR("revoked", "0");
    FIELD_NUM("rpm", "%" PRId64, p->rpm);
    FIELD_NUM("rpd", "%" PRId64, p->rpd);
    FIELD_NUM("timeout_ms", "%" PRIu32, p->timeout_ms);
    FIELD_NUM("memory_bytes", "%" PRIu64, p->memory_bytes);
    FIELD_STR("all_modules", p->all_modules ? "1" : "0");
    if (key.modules != NULL)
        FIELD_STR("modules", key.modules);
    FIELD_STR("network", p->network ? "1" : "0");
    FIELD_STR("admin", p->admin ? "1" : "0");
    FIELD_NUM("sessions", "%" PRIu32, p->sessions);
    FIELD_NUM("session_idle_ttl_s", "%" PRIu32, p->session_idle_ttl_s);
    FIELD_NUM("session_lifetime_s", "%" PRIu32, p->session_lifetime_s);
#undef FIELD_NUM
#undef FIELD_STR
    r = begin_call(rs, &call, err);
    if (r < 0)
        return r;
    reply = eval(&call, SC_CREATE, 4, argc, argv, NULL, "create a key", err);
    if (reply == NULL) {
        r = call.rc;
        end_call(&call);
        return r;
    }
    if (reply->type != REDIS_REPLY_INTEGER) {
        r = malformed(&call, "create a key", err);
        freeReplyObject(reply);
        end_call_drop(&call);
        return r;
    }
    r = reply->integer == 0
            ? pbx_error_set(err, EEXIST, "key name `%s` (revoked keys keep their names)", name)
        : reply->integer < 0
            ? pbx_error_set(err, EEXIST, "store `%s`: the new key's hash is taken", rs->shown)
            : 0;
    freeReplyObject(reply);
    end_call(&call);
    note_success(rs);
    if (r < 0)
        return r;
    *token = steal_pointer(&key.token);
    return 0;
}

static int rd_key_list(struct pbx_store *base, struct pbx_key_info **keys, size_t *n,
                       struct pbx_error **err)
{
    struct redis_store *rs = (struct redis_store *)base;
    const char *range[4] = {"ZRANGE", K_CREATED, "0", "-1"};
    cleanup_reply redisReply *ids = NULL;
    struct pbx_key_info *out = NULL;
    size_t count = 0;
    struct call call;
    int r;

    *keys = NULL;
    *n = 0;
    r = begin_call(rs, &call, err);
    if (r < 0)
        return r;
    call.may_retry = true; /* it only reads */
    ids = command_ok(&call, "list keys", err, 4, range);
    if (ids == NULL) {
        r = call.rc;
        end_call(&call);
        return r;
    }
    if (ids->type != REDIS_REPLY_ARRAY) {
        r = malformed(&call, "list keys", err);
        end_call_drop(&call);
        return r;
    }
    for (size_t i = 0; i < ids->elements; i++) {
        if (!is_hash_hex(ids->element[i])) {
            r = pbx_error_set(err, PBX_E_PROTO,
                              "store `%s`: `" K_CREATED "` holds something not a key's hash",
                              rs->shown);
            end_call(&call);
            return r;
        }
    }
    /* One round trip for every record: the commands first, then their replies. */
    redisSetTimeout(call.c->ctx, tv_of(remaining_ms(&call)));
    for (size_t i = 0; i < ids->elements; i++) {
        char record[sizeof(K_KEY) + HASH_HEX];
        const char *argv[2] = {"HGETALL", record};

        snprintf(record, sizeof(record), K_KEY "%.*s", HASH_HEX, ids->element[i]->str);
        if (redisAppendCommandArgv(call.c->ctx, 2, argv, NULL) != REDIS_OK) {
            r = conn_failed(&call, errno, "list keys", err);
            end_call(&call);
            return r;
        }
    }
    out = ids->elements > 0 ? xcalloc(ids->elements, sizeof(*out)) : NULL;
    for (size_t i = 0; i < ids->elements; i++) {
        cleanup_reply redisReply *rec = NULL;
        unsigned char hash[PBX_STORE_HASH_BYTES];
        int got;

        if (remaining_ms(&call) <= 0) {
            errno = ETIMEDOUT;
            call.c->ctx->err = REDIS_ERR_IO;
            r = conn_failed(&call, ETIMEDOUT, "list keys", err);
            goto fail;
        }
        errno = 0;
        if (redisGetReply(call.c->ctx, (void **)&rec) != REDIS_OK || rec == NULL) {
            r = conn_failed(&call, errno, "list keys", err);
            goto fail;
        }
        if (rec->type == REDIS_REPLY_ERROR) {
            r = reply_error(&call, rec, "list keys", err);
            goto fail_drop; /* replies of the rest are still due: start afresh */
        }
        got = read_record(&call, rec, &out[count], hash, err);
        if (got == 0)
            got = pbx_error_set(err, PBX_E_PROTO,
                                "store `%s`: key %.16s... is listed but has no "
                                "record",
                                rs->shown, ids->element[i]->str);
        if (got < 0) {
            r = got;
            goto fail_drop;
        }
        count++;
    }
    end_call(&call);
    note_success(rs);
    *keys = out;
    *n = count;
    return 0;

fail_drop:
    end_call_drop(&call);
    pbx_key_info_free_array(out, count);
    return r;
fail:
    end_call(&call);
    pbx_key_info_free_array(out, count);
    return r;
}

static int rd_key_revoke(struct pbx_store *base, const char *name, struct pbx_error **err)
{
    struct redis_store *rs = (struct redis_store *)base;
    cleanup_reply redisReply *hex = NULL;
    cleanup_reply redisReply *done = NULL;
    char record[sizeof(K_KEY) + HASH_HEX];
    char now[24];
    struct call call;
    int r;

    if (name == NULL)
        return pbx_error_set(err, PBX_E_INVAL, "no key name given");
    r = begin_call(rs, &call, err);
    if (r < 0)
        return r;
    call.may_retry = true; /* a second revocation changes nothing */
    {
        const char *argv[3] = {"HGET", K_NAMES, name};

        hex = command_ok(&call, "revoke a key", err, 3, argv);
    }
    if (hex == NULL) {
        r = call.rc;
        end_call(&call);
        return r;
    }
    if (hex->type == REDIS_REPLY_NIL) {
        end_call(&call);
        note_success(rs);
        return pbx_error_set(err, PBX_E_NOTFOUND, "no key named `%s`", name);
    }
    if (!is_hash_hex(hex)) {
        r = pbx_error_set(err, PBX_E_PROTO,
                          "store `%s`: the name index's entry of `%s` is not a key's hash",
                          rs->shown, name);
        end_call(&call);
        return r;
    }
    snprintf(record, sizeof(record), K_KEY "%.*s", HASH_HEX, hex->str);
    snprintf(now, sizeof(now), "%" PRId64, (int64_t)time(NULL));
    {
        const char *argv[2] = {record, now};

        done = eval(&call, SC_REVOKE, 1, 2, argv, NULL, "revoke a key", err);
    }
    if (done == NULL) {
        r = call.rc;
        end_call(&call);
        return r;
    }
    if (done->type != REDIS_REPLY_INTEGER) {
        r = malformed(&call, "revoke a key", err);
        end_call_drop(&call);
        return r;
    }
    end_call(&call);
    note_success(rs);
    if (done->integer != 1)
        return pbx_error_set(err, PBX_E_PROTO, "store `%s`: key `%s` is named but has no record",
                             rs->shown, name);
    return 0;
}

static int rd_key_lookup(struct pbx_store *base, const char *token, struct pbx_key_info *info,
                         struct pbx_error **err)
{
    struct redis_store *rs = (struct redis_store *)base;
    unsigned char hash[PBX_STORE_HASH_BYTES];
    unsigned char stored[PBX_STORE_HASH_BYTES];
    char record[sizeof(K_KEY) + HASH_HEX];
    char hex[HASH_HEX + 1];
    cleanup_reply redisReply *reply = NULL;
    struct pbx_key_info found;
    struct call call;
    int r;

    if (!pbx__store_token_hash(token, hash))
        return 0;
    sodium_bin2hex(hex, sizeof(hex), hash, sizeof(hash));
    snprintf(record, sizeof(record), K_KEY "%s", hex);
    r = begin_call(rs, &call, err);
    if (r < 0)
        return r;
    call.may_retry = true; /* it only reads */
    {
        const char *argv[2] = {"HGETALL", record};

        reply = command_ok(&call, "look up a key", err, 2, argv);
    }
    if (reply == NULL) {
        r = call.rc;
        end_call(&call);
        return r;
    }
    r = read_record(&call, reply, &found, stored, err);
    if (r < 0 && reply->type != REDIS_REPLY_ARRAY)
        end_call_drop(&call);
    else
        end_call(&call);
    if (r < 0)
        return r;
    note_success(rs);
    if (r == 0)
        return 0;
    if (sodium_memcmp(stored, hash, sizeof(hash)) != 0 || found.revoked) {
        pbx_key_info_release(&found);
        return 0;
    }
    *info = found;
    return 1;
}

static void quota_key(char *buf, size_t size, const char *client, const char *day)
{
    snprintf(buf, size, "pbx:quota:{%s}:%s", client, day);
}

/* A count Redis gave: an integer, 0 or more. */
static bool count_of(const redisReply *r, int64_t *out)
{
    if (r == NULL || r->type != REDIS_REPLY_INTEGER || r->integer < 0)
        return false;
    *out = r->integer;
    return true;
}

static int rd_quota_take(struct pbx_store *base, const char *client, const char *day, int64_t limit,
                         int64_t *count, struct pbx_error **err)
{
    struct redis_store *rs = (struct redis_store *)base;
    char key[PBX_STORE_CLIENT_MAX + 32];
    char lim[24];
    cleanup_reply redisReply *reply = NULL;
    struct call call;
    int64_t taken;
    int r;

    r = pbx__store_check_client_day(client, day, err);
    if (r < 0)
        return r;
    quota_key(key, sizeof(key), client, day);
    snprintf(lim, sizeof(lim), "%" PRId64, limit < 0 ? -1 : limit);
    r = begin_call(rs, &call, err);
    if (r < 0)
        return r;
    {
        const char *argv[3] = {key, lim, QUOTA_TTL_S};

        reply = eval(&call, SC_QUOTA, 1, 3, argv, NULL, "charge a quota", err);
    }
    if (reply == NULL) {
        r = call.rc;
        end_call(&call);
        return r;
    }
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
        !count_of(reply->element[0], &taken) || taken > 1 || !count_of(reply->element[1], count)) {
        r = malformed(&call, "charge a quota", err);
        end_call_drop(&call);
        return r;
    }
    end_call(&call);
    note_success(rs);
    return taken == 1 ? 1 : 0;
}

static int rd_quota_get(struct pbx_store *base, const char *client, const char *day, int64_t *count,
                        struct pbx_error **err)
{
    struct redis_store *rs = (struct redis_store *)base;
    char key[PBX_STORE_CLIENT_MAX + 32];
    cleanup_reply redisReply *reply = NULL;
    struct call call;
    int r;

    r = pbx__store_check_client_day(client, day, err);
    if (r < 0)
        return r;
    quota_key(key, sizeof(key), client, day);
    r = begin_call(rs, &call, err);
    if (r < 0)
        return r;
    call.may_retry = true; /* it only reads */
    {
        const char *argv[2] = {"GET", key};

        reply = command_ok(&call, "read a quota", err, 2, argv);
    }
    if (reply == NULL) {
        r = call.rc;
        end_call(&call);
        return r;
    }
    end_call(&call);
    note_success(rs);
    if (reply->type == REDIS_REPLY_NIL) {
        *count = 0;
        return 0;
    }
    if (!parse_i64(reply, count) || *count < 0)
        return pbx_error_set(err, PBX_E_PROTO,
                             "store `%s`: the quota counter of `%s` on %s is not a count",
                             rs->shown, client, day);
    return 0;
}

static int rd_audit(struct pbx_store *base, const struct pbx_audit *rec, struct pbx_error **err)
{
    struct redis_store *rs = (struct redis_store *)base;
    cleanup_reply redisReply *reply = NULL;
    char time_ms[24];
    char duration[40];
    const char *argv[20];
    int argc = 0;
    struct call call;
    int r;

    r = pbx__store_check_audit(rec, err);
    if (r < 0)
        return r;
    snprintf(time_ms, sizeof(time_ms), "%" PRId64, rec->time_ms);
    snprintf(duration, sizeof(duration), "%.17g",
             isfinite(rec->duration_ms) ? rec->duration_ms : 0);
    argv[argc++] = "XADD";
    argv[argc++] = K_AUDIT;
    argv[argc++] = "MAXLEN";
    argv[argc++] = "~";
    argv[argc++] = AUDIT_MAXLEN;
    argv[argc++] = "*";
    argv[argc++] = "time_ms";
    argv[argc++] = time_ms;
    argv[argc++] = "client";
    argv[argc++] = rec->client;
    if (rec->key_name != NULL) {
        argv[argc++] = "key_name";
        argv[argc++] = rec->key_name;
    }
    argv[argc++] = "route";
    argv[argc++] = rec->route;
    argv[argc++] = "code_sha256";
    argv[argc++] = rec->code_sha256;
    argv[argc++] = "status";
    argv[argc++] = rec->status;
    argv[argc++] = "duration_ms";
    argv[argc++] = duration;
    r = begin_call(rs, &call, err);
    if (r < 0)
        return r;
    reply = command_ok(&call, "append to the audit log", err, argc, argv);
    if (reply == NULL) {
        r = call.rc;
        end_call(&call);
        return r;
    }
    end_call(&call);
    note_success(rs);
    if (reply->type != REDIS_REPLY_STRING)
        return pbx_error_set(err, PBX_E_PROTO,
                             "store `%s`: append to the audit log: unexpected reply from Redis",
                             rs->shown);
    return 0;
}

/* Set `key` of `obj` to the text `v`, or null (missing, too long, not UTF-8). */
static void set_text(json_t *obj, const char *key, const redisReply *v)
{
    json_t *s = is_text(v, FIELD_MAX) ? json_stringn(v->str, v->len) : NULL;

    json_object_set_new(obj, key, s != NULL ? s : json_null());
}

/* One stream entry [id, [field, value, ...]] as a JSON line; NULL when malformed. */
static char *audit_line(const redisReply *entry)
{
    static const char *const names[7] = {"time_ms",     "client", "key_name",   "route",
                                         "code_sha256", "status", "duration_ms"};
    const redisReply *f[7] = {0};
    const redisReply *fields;
    int64_t time_ms = 0;
    double duration = 0;
    json_t *obj;
    char *line;

    if (entry == NULL || entry->type != REDIS_REPLY_ARRAY || entry->elements != 2)
        return NULL;
    fields = entry->element[1];
    if (fields == NULL || fields->type != REDIS_REPLY_ARRAY || fields->elements % 2 != 0)
        return NULL;
    for (size_t i = 0; i < fields->elements; i += 2) {
        const redisReply *k = fields->element[i];

        if (!is_text(k, 64))
            return NULL;
        for (int j = 0; j < 7; j++) {
            if (k->len == strlen(names[j]) && memcmp(k->str, names[j], k->len) == 0)
                f[j] = fields->element[i + 1];
        }
    }
    if (!parse_i64(f[0], &time_ms) || !parse_double(f[6], &duration))
        return NULL;
    obj = json_object();
    json_object_set_new(obj, "time_ms", json_integer(time_ms));
    set_text(obj, "client", f[1]);
    set_text(obj, "key_name", f[2]);
    set_text(obj, "route", f[3]);
    set_text(obj, "code_sha256", f[4]);
    set_text(obj, "status", f[5]);
    json_object_set_new(obj, "duration_ms", json_real(duration));
    line = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(obj);
    if (line == NULL)
        abort(); /* out of memory: the server aborts, as xmalloc does */
    return line;
}

static int rd_audit_tail(struct pbx_store *base, size_t max, char **text, struct pbx_error **err)
{
    struct redis_store *rs = (struct redis_store *)base;
    cleanup_reply redisReply *reply = NULL;
    cleanup_free char *out = xstrdup("");
    size_t len = 0;
    char count[24];
    struct call call;
    int r;

    *text = NULL;
    if (max == 0) {
        *text = steal_pointer(&out);
        return 0;
    }
    snprintf(count, sizeof(count), "%zu", max > (size_t)LLONG_MAX ? (size_t)LLONG_MAX : max);
    r = begin_call(rs, &call, err);
    if (r < 0)
        return r;
    call.may_retry = true; /* it only reads */
    {
        const char *argv[6] = {"XREVRANGE", K_AUDIT, "+", "-", "COUNT", count};

        reply = command_ok(&call, "read the audit log", err, 6, argv);
    }
    if (reply == NULL) {
        r = call.rc;
        end_call(&call);
        return r;
    }
    end_call(&call);
    note_success(rs);
    if (reply->type != REDIS_REPLY_ARRAY)
        return pbx_error_set(err, PBX_E_PROTO,
                             "store `%s`: read the audit log: unexpected reply from Redis",
                             rs->shown);
    /* Newest first from Redis; oldest first out, as SQLite's. */
    for (size_t i = reply->elements; i-- > 0;) {
        char *line = audit_line(reply->element[i]);
        size_t n;

        if (line == NULL)
            return pbx_error_set(err, PBX_E_PROTO,
                                 "store `%s`: an entry of `" K_AUDIT "` is malformed", rs->shown);
        n = strlen(line);
        out = xrealloc(out, len + n + 2);
        memcpy(out + len, line, n);
        out[len + n] = '\n';
        out[len + n + 1] = '\0';
        len += n + 1;
        free(line);
    }
    *text = steal_pointer(&out);
    return 0;
}

static int rd_ping(struct pbx_store *base, struct pbx_error **err)
{
    struct redis_store *rs = (struct redis_store *)base;
    const char *argv[1] = {"PING"};
    cleanup_reply redisReply *reply = NULL;
    struct call call;
    int r;

    r = begin_call(rs, &call, err);
    if (r < 0)
        return r;
    call.may_retry = true; /* it only reads */
    reply = command_ok(&call, "ping", err, 1, argv);
    if (reply == NULL) {
        r = call.rc;
        end_call(&call);
        return r;
    }
    if (reply->type != REDIS_REPLY_STATUS || strcmp(reply->str, "PONG") != 0) {
        r = malformed(&call, "ping", err);
        end_call_drop(&call);
        return r;
    }
    end_call(&call);
    note_success(rs);
    return 0;
}

const struct pbx_store_backend pbx__store_redis = {
    .name = "redis",
    .open = rd_open,
    .close = rd_close,
    .key_create = rd_key_create,
    .key_list = rd_key_list,
    .key_revoke = rd_key_revoke,
    .key_lookup = rd_key_lookup,
    .quota_take = rd_quota_take,
    .quota_get = rd_quota_get,
    .audit = rd_audit,
    .audit_tail = rd_audit_tail,
    .ping = rd_ping,
};
