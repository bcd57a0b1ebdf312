/*
 * Calls to a Redis server, for the Redis store: the URI's server, a small
 * pool of connections, one deadline a call, the backoff after a failure,
 * one command with its retry rules, and the checks of a reply's type.
 *
 * Each connection is used by one thread at a time.  Every call has one
 * deadline (timeout_ms, 200 ms unless the URI says): waiting for a free
 * connection, connecting and each command get what is left of it.  Nothing
 * connects before the first call, so a store opens while its server is
 * down.  A failed connection makes every connection of the pool reconnect
 * before its next use, and the pool refuses calls at once for a backoff
 * (50 ms, doubling to 2 s) rather than have each wait for a dead server;
 * the first call after it tries again.  A call that only reads goes once
 * more on a new connection when its kept one was closed by the server
 * meanwhile; one that writes is never sent twice.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <hiredis/hiredis.h>
#include <sodium.h>

#include "common/cleanup.h"
#include "common/xalloc.h"
#include "store/redis_conn.h"
#include "store/store.h"
#include "common/banned.h"

#define DEFAULT_PORT       6379
#define DEFAULT_TIMEOUT_MS 200
#define TIMEOUT_MAX_MS     60000
#define DEFAULT_POOL       4
#define POOL_MAX           64
#define BACKOFF_MIN_MS     50
#define BACKOFF_MAX_MS     2000

/*
 * The most array elements one reply may declare, its nested arrays'
 * included.  hiredis allocates an array's element pointers as soon as its
 * header arrives, so without a bound the 13 bytes "*2147483647\r\n" of a
 * broken or hostile server cost 16 GiB, and as much again for each array
 * nested in it.  pybox's largest replies stay far below: `pybox audit
 * --last 100000` is 1.7 million elements, `pybox keys list` one a key.
 */
#define REPLY_ELEMENTS_MAX (1 << 24)

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
static int64_t remaining_ms(const struct pbx_redis_call *call)
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
static int parse_query(struct pbx_redis_pool *pool, const char *q, struct pbx_error **err)
{
    while (*q != '\0') {
        const char *end = q + strcspn(q, "&");
        const char *eq = memchr(q, '=', (size_t)(end - q));
        long v;

        if (eq == NULL)
            return bad_uri(pool->shown, "a query parameter has no value", err);
        if ((size_t)(eq - q) == strlen("timeout_ms") && strncmp(q, "timeout_ms", 10) == 0) {
            if (!parse_num(eq + 1, end, 1, TIMEOUT_MAX_MS, &v))
                return bad_uri(pool->shown, "timeout_ms is not 1 to 60000", err);
            pool->timeout_ms = (int)v;
        } else if ((size_t)(eq - q) == strlen("pool") && strncmp(q, "pool", 4) == 0) {
            if (!parse_num(eq + 1, end, 1, POOL_MAX, &v))
                return bad_uri(pool->shown, "pool is not 1 to 64", err);
            pool->nconns = (size_t)v;
        } else {
            return bad_uri(pool->shown, "unknown query parameter (timeout_ms and pool are known)",
                           err);
        }
        q = *end == '&' ? end + 1 : end;
    }
    return 0;
}

static int parse_uri(struct pbx_redis_pool *pool, const char *uri, struct pbx_error **err)
{
    const char *p = uri + strlen("redis://");
    /* Everything before the last '@' is the user and password, whatever they hold. */
    const char *auth_end = strrchr(p, '@');
    const char *host;
    const char *host_end;
    const char *rest;
    long v;

    pool->port = DEFAULT_PORT;
    pool->timeout_ms = DEFAULT_TIMEOUT_MS;
    pool->nconns = DEFAULT_POOL;
    pool->shown = pbx_store_uri_redact(uri);
    if (auth_end != NULL) {
        const char *colon = memchr(p, ':', (size_t)(auth_end - p));

        if (colon == NULL)
            return bad_uri(pool->shown, "the part before '@' must be [USER]:PASSWORD", err);
        if (colon > p) {
            pool->user = pct_decode(p, (size_t)(colon - p));
            if (pool->user == NULL)
                return bad_uri(pool->shown, "the user is not percent-encoded right", err);
        }
        pool->password = pct_decode(colon + 1, (size_t)(auth_end - colon - 1));
        if (pool->password == NULL)
            return bad_uri(pool->shown, "the password is not percent-encoded right", err);
        if (pool->password[0] == '\0' && pool->user == NULL) {
            free(pool->password); /* "redis://:@HOST": no password */
            pool->password = NULL;
        }
        host = auth_end + 1;
    } else {
        host = p;
    }
    if (*host == '[') {
        host_end = strchr(host, ']');
        if (host_end == NULL)
            return bad_uri(pool->shown, "an IPv6 address lacks its ']'", err);
        pool->host = xstrndup(host + 1, (size_t)(host_end - host - 1));
        host_end++;
    } else {
        host_end = host + strcspn(host, ":/?");
        pool->host = xstrndup(host, (size_t)(host_end - host));
    }
    if (pool->host[0] == '\0')
        return bad_uri(pool->shown, "no host", err);
    if (strspn(pool->host, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-:") !=
        strlen(pool->host))
        return bad_uri(pool->shown, "the host is not a name or an address", err);
    rest = host_end;
    if (*rest == ':') {
        const char *end = rest + 1 + strcspn(rest + 1, "/?");

        if (!parse_num(rest + 1, end, 1, 65535, &v))
            return bad_uri(pool->shown, "the port is not 1 to 65535", err);
        pool->port = (int)v;
        rest = end;
    }
    if (*rest == '/') {
        const char *end = rest + 1 + strcspn(rest + 1, "?");

        if (end > rest + 1) {
            if (!parse_num(rest + 1, end, 0, 1000000, &v))
                return bad_uri(pool->shown, "the database is not a number", err);
            pool->db = (int)v;
        }
        rest = end;
    }
    if (*rest == '?')
        return parse_query(pool, rest + 1, err);
    if (*rest != '\0')
        return bad_uri(pool->shown, "unexpected characters after the host", err);
    return 0;
}

/* ---- Errors ---- */

/* SIGPIPE of a write to a closed connection is held and dropped, not delivered. */
static void sigpipe_hold(struct pbx_redis_call *call)
{
    sigset_t pipe_set;
    sigset_t pending;

    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    sigpending(&pending);
    call->pipe_pending = sigismember(&pending, SIGPIPE) == 1;
    pthread_sigmask(SIG_BLOCK, &pipe_set, &call->oldmask);
}

static void sigpipe_release(struct pbx_redis_call *call)
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
static void note_failure(struct pbx_redis_pool *pool, int code, const char *msg)
{
    pthread_mutex_lock(&pool->state);
    pool->gen++;
    pool->backoff_ms = pool->backoff_ms == 0                   ? BACKOFF_MIN_MS
                       : pool->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS
                                                               : pool->backoff_ms * 2;
    pool->retry_at = add_ms(now_mono(), pool->backoff_ms);
    pool->last_code = code;
    snprintf(pool->last_msg, sizeof(pool->last_msg), "%s", msg);
    pthread_mutex_unlock(&pool->state);
}

void pbx__redis_conn_ok(struct pbx_redis_pool *pool)
{
    pthread_mutex_lock(&pool->state);
    pool->backoff_ms = 0;
    pthread_mutex_unlock(&pool->state);
}

/* The connection of `call` failed doing `what`: drop it, note it, report it. */
static int conn_failed(struct pbx_redis_call *call, int sys, const char *what,
                       struct pbx_error **err)
{
    struct pbx_redis_pool *pool = call->pool;
    redisContext *ctx = call->c->ctx;
    int code = ctx_code(ctx, sys);
    char msg[256];
    int r;

    if (call->c->reply_too_large) {
        code = PBX_E_PROTO;
        snprintf(msg, sizeof(msg), "%s: a reply of more than %d array elements", what,
                 REPLY_ELEMENTS_MAX);
    } else if (ctx != NULL && ctx->err == REDIS_ERR_IO && code != EIO)
        snprintf(msg, sizeof(msg), "%s", what);
    else
        snprintf(msg, sizeof(msg), "%s: %s", what,
                 ctx == NULL                 ? "out of memory"
                 : ctx->err == REDIS_ERR_EOF ? "the server closed the connection"
                                             : ctx->errstr);
    r = pbx_error_set(err, code, "store `%s`: %s", pool->shown, msg);
    call->rc = r;
    call->c->reply_too_large = false;
    note_failure(pool, code, msg);
    if (ctx != NULL)
        redisFree(ctx);
    call->c->ctx = NULL;
    return r;
}

int pbx__redis_conn_malformed(struct pbx_redis_call *call, const char *what, struct pbx_error **err)
{
    call->rc = pbx_error_set(err, PBX_E_PROTO, "store `%s`: %s: unexpected reply from Redis",
                             call->pool->shown, what);
    return call->rc;
}

static int reply_error_set(struct pbx_redis_call *call, const redisReply *reply, const char *what,
                           struct pbx_error **err)
{
    int len = reply->len > 200 ? 200 : (int)reply->len;

    if (reply->len >= 9 && strncmp(reply->str, "WRONGTYPE", 9) == 0)
        return pbx_error_set(err, PBX_E_PROTO,
                             "store `%s`: %s: a key of pybox holds a value of the wrong type "
                             "(Redis: %.*s)",
                             call->pool->shown, what, len, reply->str);
    if (strstr(reply->str != NULL ? reply->str : "", "PBXBAD") != NULL)
        return pbx_error_set(err, PBX_E_PROTO, "store `%s`: %s: a value of pybox is malformed",
                             call->pool->shown, what);
    return pbx_error_set(err, EIO, "store `%s`: %s: Redis: %.*s", call->pool->shown, what, len,
                         reply->str != NULL ? reply->str : "");
}

int pbx__redis_conn_reply_error(struct pbx_redis_call *call, const redisReply *reply,
                                const char *what, struct pbx_error **err)
{
    call->rc = reply_error_set(call, reply, what, err);
    return call->rc;
}

/* ---- Connections and calls ---- */

/* The type of an array's length in hiredis's createArray: int before 1.0. */
#if HIREDIS_MAJOR >= 1
#    define ARRAY_LEN size_t
#else
#    define ARRAY_LEN int
#endif

static redisReplyObjectFunctions bounded_fns; /* hiredis's own, createArray bounded */
static void *(*hiredis_create_array)(const redisReadTask *task, ARRAY_LEN elements);
static pthread_once_t bounded_once = PTHREAD_ONCE_INIT;

/*
 * hiredis's createArray within REPLY_ELEMENTS_MAX for the reply: NULL past
 * it, which fails the reply (and the connection) as hiredis's out of memory,
 * reported as the protocol error it is.  The task's privdata is the
 * connection.
 */
static void *create_array_bounded(const redisReadTask *task, ARRAY_LEN elements)
{
    struct pbx_redis_conn *c = task->privdata;

    if (task->parent == NULL)
        c->reply_elements = 0;
    if ((long long)elements < 0 || (size_t)elements > REPLY_ELEMENTS_MAX - c->reply_elements) {
        c->reply_too_large = true;
        return NULL;
    }
    c->reply_elements += (size_t)elements;
    return hiredis_create_array(task, elements);
}

static void bounded_init(void)
{
    redisReader *r = redisReaderCreate();

    PBX_ASSERT(r != NULL && r->fn != NULL && r->fn->createArray != NULL);
    bounded_fns = *r->fn;
    hiredis_create_array = r->fn->createArray;
    bounded_fns.createArray = create_array_bounded;
    redisReaderFree(r);
}

/* A new connection's replies read within REPLY_ELEMENTS_MAX. */
static void bound_replies(struct pbx_redis_conn *c)
{
    pthread_once(&bounded_once, bounded_init);
    c->ctx->reader->fn = &bounded_fns;
    c->ctx->reader->privdata = c;
    c->reply_elements = 0;
    c->reply_too_large = false;
}

void pbx__redis_conn_free_reply(redisReply **r)
{
    if (*r != NULL)
        freeReplyObject(*r);
}

static int connect_conn(struct pbx_redis_call *call, unsigned gen, struct pbx_error **err);

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

/* The call's time is up: its connection fails as one that timed out. */
static int out_of_time(struct pbx_redis_call *call, const char *what, struct pbx_error **err)
{
    errno = ETIMEDOUT;
    call->c->ctx->err = REDIS_ERR_IO;
    return conn_failed(call, ETIMEDOUT, what, err);
}

redisReply *pbx__redis_conn_send(struct pbx_redis_call *call, int argc, const char **argv,
                                 const size_t *lens, const char *what, struct pbx_error **err)
{
    size_t own[48];

    if (lens == NULL) {
        PBX_ASSERT(argc <= 48);
        for (int i = 0; i < argc; i++)
            own[i] = strlen(argv[i]);
        lens = own;
    }
    for (;;) {
        int64_t left = remaining_ms(call);
        redisReply *reply;
        unsigned gen;
        int sys;

        if (left <= 0) {
            out_of_time(call, what, err);
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
        pthread_mutex_lock(&call->pool->state);
        gen = ++call->pool->gen;
        pthread_mutex_unlock(&call->pool->state);
        if (connect_conn(call, gen, err) < 0)
            return NULL;
    }
}

redisReply *pbx__redis_conn_command(struct pbx_redis_call *call, int argc, const char **argv,
                                    const char *what, struct pbx_error **err)
{
    redisReply *reply = pbx__redis_conn_send(call, argc, argv, NULL, what, err);

    if (reply != NULL && reply->type == REDIS_REPLY_ERROR) {
        pbx__redis_conn_reply_error(call, reply, what, err);
        freeReplyObject(reply);
        return NULL;
    }
    return reply;
}

int pbx__redis_conn_append(struct pbx_redis_call *call, int argc, const char **argv,
                           const char *what, struct pbx_error **err)
{
    redisSetTimeout(call->c->ctx, tv_of(remaining_ms(call)));
    if (redisAppendCommandArgv(call->c->ctx, argc, argv, NULL) != REDIS_OK)
        return conn_failed(call, errno, what, err);
    return 0;
}

redisReply *pbx__redis_conn_get_reply(struct pbx_redis_call *call, const char *what,
                                      struct pbx_error **err)
{
    redisReply *reply = NULL;

    if (remaining_ms(call) <= 0) {
        out_of_time(call, what, err);
        return NULL;
    }
    errno = 0;
    if (redisGetReply(call->c->ctx, (void **)&reply) != REDIS_OK || reply == NULL) {
        if (reply != NULL)
            freeReplyObject(reply);
        conn_failed(call, errno, what, err);
        return NULL;
    }
    return reply;
}

/* AUTH, SELECT: what a new connection needs before its first command. */
static int hello(struct pbx_redis_call *call, struct pbx_error **err)
{
    struct pbx_redis_pool *pool = call->pool;
    redisReply *reply;

    if (pool->password != NULL) {
        const char *argv[3] = {"AUTH", pool->user != NULL ? pool->user : pool->password,
                               pool->password};

        reply =
            pbx__redis_conn_command(call, pool->user != NULL ? 3 : 2, argv, "authenticate", err);
        if (reply == NULL)
            return call->rc;
        freeReplyObject(reply);
    }
    if (pool->db != 0) {
        char db[16];
        const char *argv[2] = {"SELECT", db};

        snprintf(db, sizeof(db), "%d", pool->db);
        reply = pbx__redis_conn_command(call, 2, argv, "select the database", err);
        if (reply == NULL)
            return call->rc;
        freeReplyObject(reply);
    }
    return 0;
}

void pbx__redis_conn_end(struct pbx_redis_call *call)
{
    if (call->c != NULL)
        pthread_mutex_unlock(&call->c->lock);
    call->c = NULL;
    sigpipe_release(call);
}

void pbx__redis_conn_end_drop(struct pbx_redis_call *call)
{
    if (call->c != NULL && call->c->ctx != NULL) {
        redisFree(call->c->ctx);
        call->c->ctx = NULL;
    }
    pbx__redis_conn_end(call);
}

int pbx__redis_conn_end_failed(struct pbx_redis_call *call)
{
    int r = call->rc;

    pbx__redis_conn_end(call);
    return r;
}

int pbx__redis_conn_end_malformed(struct pbx_redis_call *call, const char *what,
                                  struct pbx_error **err)
{
    int r = pbx__redis_conn_malformed(call, what, err);

    pbx__redis_conn_end_drop(call);
    return r;
}

/* A mutex, held within the call's deadline: 0, or ETIMEDOUT (or the error). */
static int lock_within(struct pbx_redis_call *call, pthread_mutex_t *lock)
{
    struct timespec abs;

    clock_gettime(CLOCK_REALTIME, &abs);
    abs = add_ms(abs, remaining_ms(call) > 0 ? remaining_ms(call) : 0);
    return pthread_mutex_timedlock(lock, &abs);
}

/*
 * The pool's first use of a server that answers: its prepare, once, by one
 * call at a time (the others wait, within their deadlines).
 */
static int prepare_once(struct pbx_redis_call *call, struct pbx_error **err)
{
    struct pbx_redis_pool *pool = call->pool;
    int r;

    if (pool->prepare == NULL || atomic_load_explicit(&pool->prepared, memory_order_acquire))
        return 0;
    r = lock_within(call, &pool->prepare_lock);
    if (r != 0) {
        call->rc = pbx_error_set(err, r, "store `%s`: not ready within %d ms", pool->shown,
                                 pool->timeout_ms);
        return call->rc;
    }
    r = 0;
    if (!atomic_load_explicit(&pool->prepared, memory_order_acquire)) {
        bool may_retry = call->may_retry;

        call->may_retry = false;
        r = pool->prepare(call, pool->prepare_arg, err);
        call->may_retry = may_retry;
        if (r == 0)
            atomic_store_explicit(&pool->prepared, true, memory_order_release);
    }
    pthread_mutex_unlock(&pool->prepare_lock);
    return r;
}

int pbx__redis_conn_begin(struct pbx_redis_pool *pool, struct pbx_redis_call *call, bool may_retry,
                          struct pbx_error **err)
{
    struct timespec now = now_mono();
    unsigned start;
    unsigned gen;
    int r;

    *call = (struct pbx_redis_call){
        .pool = pool, .deadline = add_ms(now, pool->timeout_ms), .may_retry = may_retry};
    pthread_mutex_lock(&pool->state);
    if (pool->backoff_ms != 0 && ms_between(now, pool->retry_at) > 0) {
        int64_t wait = ms_between(now, pool->retry_at);

        r = pbx_error_set(err, pool->last_code,
                          "store `%s`: unreachable (%s); next try in %" PRId64 " ms", pool->shown,
                          pool->last_msg, wait);
        pthread_mutex_unlock(&pool->state);
        return r;
    }
    gen = pool->gen;
    pthread_mutex_unlock(&pool->state);

    start = atomic_fetch_add(&pool->next, 1);
    for (size_t i = 0; i < pool->nconns && call->c == NULL; i++) {
        struct pbx_redis_conn *c = &pool->conns[(start + i) % pool->nconns];

        if (pthread_mutex_trylock(&c->lock) == 0)
            call->c = c;
    }
    if (call->c == NULL) {
        struct pbx_redis_conn *c = &pool->conns[start % pool->nconns];

        r = lock_within(call, &c->lock);
        if (r != 0)
            return pbx_error_set(err, r == ETIMEDOUT ? ETIMEDOUT : r,
                                 "store `%s`: no connection free within %d ms", pool->shown,
                                 pool->timeout_ms);
        call->c = c;
    }
    sigpipe_hold(call);
    if (call->c->ctx != NULL && call->c->gen != gen) {
        redisFree(call->c->ctx);
        call->c->ctx = NULL;
    }
    call->reused = call->c->ctx != NULL;
    if (!call->reused && connect_conn(call, gen, err) < 0)
        return pbx__redis_conn_end_failed(call);
    if (prepare_once(call, err) < 0) {
        r = call->rc;
        pbx__redis_conn_end_drop(call);
        return r;
    }
    return 0;
}

/*
 * Connect the call's connection, as of the pool's generation `gen`: 0, or
 * < 0 with *err and call->rc (the connection left closed).
 */
static int connect_conn(struct pbx_redis_call *call, unsigned gen, struct pbx_error **err)
{
    struct pbx_redis_pool *pool = call->pool;
    int64_t left = remaining_ms(call);
    bool may_retry = call->may_retry;

    if (left <= 0) {
        call->rc = pbx_error_set(err, ETIMEDOUT, "store `%s`: no time left to connect within %d ms",
                                 pool->shown, pool->timeout_ms);
        return call->rc;
    }
    errno = 0;
    call->c->ctx = redisConnectWithTimeout(pool->host, pool->port, tv_of(left));
    if (call->c->ctx == NULL || call->c->ctx->err != 0)
        return conn_failed(call, errno, "connect", err);
    bound_replies(call->c);
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

int pbx__redis_conn_pool_init(struct pbx_redis_pool *pool, const char *uri,
                              int (*prepare)(struct pbx_redis_call *call, void *arg,
                                             struct pbx_error **err),
                              void *prepare_arg, struct pbx_error **err)
{
    int r;

    *pool = (struct pbx_redis_pool){.prepare = prepare, .prepare_arg = prepare_arg};
    pthread_mutex_init(&pool->state, NULL);
    pthread_mutex_init(&pool->prepare_lock, NULL);
    r = parse_uri(pool, uri, err);
    if (r < 0)
        return r;
    pool->conns = xcalloc(pool->nconns, sizeof(*pool->conns));
    for (size_t i = 0; i < pool->nconns; i++)
        pthread_mutex_init(&pool->conns[i].lock, NULL);
    return 0;
}

void pbx__redis_conn_pool_release(struct pbx_redis_pool *pool)
{
    for (size_t i = 0; pool->conns != NULL && i < pool->nconns; i++) {
        if (pool->conns[i].ctx != NULL)
            redisFree(pool->conns[i].ctx);
        pthread_mutex_destroy(&pool->conns[i].lock);
    }
    free(pool->conns);
    pthread_mutex_destroy(&pool->prepare_lock);
    pthread_mutex_destroy(&pool->state);
    if (pool->password != NULL)
        sodium_memzero(pool->password, strlen(pool->password));
    free(pool->password);
    free(pool->user);
    free(pool->host);
    free(pool->shown);
    *pool = (struct pbx_redis_pool){0};
}

/* ---- Reading replies ---- */

bool pbx__redis_conn_is_text(const redisReply *r, size_t max)
{
    return r != NULL && r->type == REDIS_REPLY_STRING && r->str != NULL && r->len <= max &&
           memchr(r->str, '\0', r->len) == NULL;
}

bool pbx__redis_conn_parse_i64(const redisReply *r, int64_t *out)
{
    char buf[24];
    char *end;
    long long v;

    if (!pbx__redis_conn_is_text(r, 20) || r->len == 0)
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

bool pbx__redis_conn_parse_double(const redisReply *r, double *out)
{
    char buf[64];
    char *end;
    double v;

    if (!pbx__redis_conn_is_text(r, sizeof(buf) - 1) || r->len == 0)
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
