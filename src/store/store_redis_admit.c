/*
 * The Redis store's shared counting of clients' requests: quotas per UTC day
 * (with idempotency keys' marks), per-minute windows, admissions in one
 * script (the window, the day's quota and the lease), leases, and node ids'
 * claims (the layout is described in store_redis.c, the scripts are there).
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "common/cleanup.h"
#include "store/redis_conn.h"
#include "store/store_impl.h"
#include "store/store_redis_internal.h"
#include "common/banned.h"

/* A quota counter's life after its last charge, and an idempotency key's mark's. */
#define QUOTA_TTL_S "345600" /* 4 days */
#define ONCE_TTL_S  "86400"  /* a day */

/* A shared window's span, and its set's life after the last place taken (ms). */
#define WINDOW_MS     60000
#define WINDOW_TTL_MS "61000"

#define STR_(x) #x
#define STR(x)  STR_(x)

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

int pbx__store_redis_quota_take(struct pbx_store *base, const char *client, const char *day,
                                int64_t limit, const char *once, int64_t *count,
                                struct pbx_error **err)
{
    struct pbx_redis_store *rs = (struct pbx_redis_store *)base;
    char key[PBX_STORE_CLIENT_MAX + 32];
    char mark[PBX_STORE_CLIENT_MAX + PBX_STORE_ONCE_MAX + 40];
    char lim[24];
    const char *argv_once[5] = {key, mark, lim, QUOTA_TTL_S, ONCE_TTL_S};
    const char *argv[4] = {key, lim, QUOTA_TTL_S, ONCE_TTL_S};
    const struct pbx_redis_store_call one = {.what = "charge a quota",
                                             .id = PBX_REDIS_SC_QUOTA,
                                             .nkeys = once != NULL ? 2 : 1,
                                             .argc = once != NULL ? 5 : 4,
                                             .argv = once != NULL ? argv_once : argv,
                                             .type = REDIS_REPLY_ARRAY};
    cleanup_reply redisReply *reply = NULL;
    int64_t taken;
    int r;

    quota_key(key, sizeof(key), client, day);
    /* The same hash tag as the counter's: one slot for the script's two keys. */
    if (once != NULL)
        snprintf(mark, sizeof(mark), "%s:once:%s", key, once);
    snprintf(lim, sizeof(lim), "%" PRId64, limit < 0 ? -1 : limit);
    r = pbx__store_redis_run(rs, &one, &reply, err);
    if (r < 0)
        return r;
    if (reply->elements != 2 || !count_of(reply->element[0], &taken) || taken > 1 ||
        !count_of(reply->element[1], count))
        return pbx_error_set(err, PBX_E_PROTO,
                             "store `%s`: charge a quota: unexpected reply from Redis",
                             rs->pool.shown);
    return taken == 1 ? 1 : 0;
}

int pbx__store_redis_quota_get(struct pbx_store *base, const char *client, const char *day,
                               int64_t *count, struct pbx_error **err)
{
    struct pbx_redis_store *rs = (struct pbx_redis_store *)base;
    char key[PBX_STORE_CLIENT_MAX + 32];
    const char *argv[2] = {"GET", key};
    const struct pbx_redis_store_call one = {.what = "read a quota",
                                             .may_retry = true,
                                             .id = PBX_REDIS_SC_COUNT,
                                             .argc = 2,
                                             .argv = argv,
                                             .type = -1};
    cleanup_reply redisReply *reply = NULL;
    int r;

    quota_key(key, sizeof(key), client, day);
    r = pbx__store_redis_run(rs, &one, &reply, err);
    if (r < 0)
        return r;
    if (reply->type == REDIS_REPLY_NIL) {
        *count = 0;
        return 0;
    }
    if (!pbx__redis_conn_parse_i64(reply, count) || *count < 0)
        return pbx_error_set(err, PBX_E_PROTO,
                             "store `%s`: the quota counter of `%s` on %s is not a count",
                             rs->pool.shown, client, day);
    return 0;
}

static void window_key(char *buf, size_t size, const char *client)
{
    snprintf(buf, size, "pbx:window:{%s}", client);
}

/* Whole seconds of `ms`, rounded up, at least one. */
static unsigned seconds_of(int64_t ms)
{
    int64_t s = (ms + 999) / 1000;

    return s < 1 ? 1 : (unsigned)s;
}

int pbx__store_redis_window_hold(struct pbx_store *base, const char *client, const char *ticket,
                                 int64_t limit, unsigned *retry_after, struct pbx_error **err)
{
    struct pbx_redis_store *rs = (struct pbx_redis_store *)base;
    char key[PBX_STORE_CLIENT_MAX + 16];
    char lim[24];
    const char *argv[5] = {key, ticket, lim, STR(WINDOW_MS), WINDOW_TTL_MS};
    const struct pbx_redis_store_call one = {.what = "hold a place in a rate window",
                                             .id = PBX_REDIS_SC_WINDOW,
                                             .nkeys = 1,
                                             .argc = 5,
                                             .argv = argv,
                                             .type = REDIS_REPLY_ARRAY};
    cleanup_reply redisReply *reply = NULL;
    int64_t held;
    int64_t n;
    int r;

    r = pbx__store_check_ticket(client, ticket, err);
    if (r < 0)
        return r;
    if (limit < 0)
        return 1; /* no limit: nothing to count against */
    window_key(key, sizeof(key), client);
    snprintf(lim, sizeof(lim), "%" PRId64, limit);
    r = pbx__store_redis_run(rs, &one, &reply, err);
    if (r < 0)
        return r;
    if (reply->elements != 2 || !count_of(reply->element[0], &held) || held > 1 ||
        !count_of(reply->element[1], &n) || (held == 0 && n > WINDOW_MS))
        return pbx_error_set(err, PBX_E_PROTO,
                             "store `%s`: hold a place in a rate window: unexpected reply from "
                             "Redis",
                             rs->pool.shown);
    if (held == 1)
        return 1;
    *retry_after = seconds_of(n); /* the oldest has left by then */
    return 0;
}

/* Take `ticket` out of the sorted set `key` (a window's place, a lease); none there is fine. */
static int zrem(struct pbx_redis_store *rs, const char *key, const char *ticket, const char *what,
                struct pbx_error **err)
{
    const char *argv[3] = {"ZREM", key, ticket};
    const struct pbx_redis_store_call one = {.what = what,
                                             .may_retry = true, /* a second ZREM removes nothing */
                                             .id = PBX_REDIS_SC_COUNT,
                                             .argc = 3,
                                             .argv = argv,
                                             .type = REDIS_REPLY_INTEGER};
    cleanup_reply redisReply *reply = NULL;

    return pbx__store_redis_run(rs, &one, &reply, err);
}

int pbx__store_redis_window_release(struct pbx_store *base, const char *client, const char *ticket,
                                    struct pbx_error **err)
{
    char key[PBX_STORE_CLIENT_MAX + 16];
    int r;

    r = pbx__store_check_ticket(client, ticket, err);
    if (r < 0)
        return r;
    window_key(key, sizeof(key), client);
    return zrem((struct pbx_redis_store *)base, key, ticket, "release a place in a rate window",
                err);
}

static void lease_key(char *buf, size_t size, const char *client)
{
    snprintf(buf, size, "pbx:lease:{%s}", client);
}

/* A day as the admission script names it: "YYYY-MM-DD". */
static bool day_of(const redisReply *r, char out[11])
{
    if (!pbx__redis_conn_is_text(r, 10) || r->len != 10 ||
        pbx__store_check_client_day("-", r->str, NULL) < 0)
        return false;
    memcpy(out, r->str, 10);
    out[10] = '\0';
    return true;
}

int pbx__store_redis_admit(struct pbx_store *base, const struct pbx_store_admit *a,
                           struct pbx_store_admission *out, struct pbx_error **err)
{
    struct pbx_redis_store *rs = (struct pbx_redis_store *)base;
    char window[PBX_STORE_CLIENT_MAX + 16];
    char lease[PBX_STORE_CLIENT_MAX + 16];
    char prefix[PBX_STORE_CLIENT_MAX + 16];
    char rpm[24];
    char rpd[24];
    char conc[24];
    char life[24];
    char once_ttl[24];
    const char *argv[13] = {window,
                            lease,
                            prefix,
                            a->ticket,
                            a->once != NULL ? a->once : "",
                            rpm,
                            rpd,
                            conc,
                            life,
                            STR(WINDOW_MS),
                            WINDOW_TTL_MS,
                            QUOTA_TTL_S,
                            a->once_ttl_s != 0 ? once_ttl : ONCE_TTL_S};
    const struct pbx_redis_store_call one = {.what = "admit a request",
                                             .id = PBX_REDIS_SC_ADMIT,
                                             .nkeys = 2,
                                             .argc = 13,
                                             .argv = argv,
                                             .type = REDIS_REPLY_ARRAY};
    cleanup_reply redisReply *reply = NULL;
    int64_t verdict;
    int64_t n;
    int r;

    window_key(window, sizeof(window), a->client);
    lease_key(lease, sizeof(lease), a->client);
    quota_key(prefix, sizeof(prefix), a->client, ""); /* the script adds the day */
    snprintf(rpm, sizeof(rpm), "%" PRId64, a->rpm < 0 ? -1 : a->rpm);
    snprintf(rpd, sizeof(rpd), "%" PRId64, a->rpd < 0 ? -1 : a->rpd);
    snprintf(conc, sizeof(conc), "%" PRId64, a->concurrency < 0 ? -1 : a->concurrency);
    snprintf(life, sizeof(life), "%" PRIu32, a->lease_ms);
    snprintf(once_ttl, sizeof(once_ttl), "%" PRIu32, a->once_ttl_s);
    r = pbx__store_redis_run(rs, &one, &reply, err);
    if (r < 0)
        return r;
    if (reply->elements != 4 || !count_of(reply->element[0], &verdict) || verdict > 3 ||
        !count_of(reply->element[1], &n) || !count_of(reply->element[2], &out->today) ||
        !day_of(reply->element[3], out->day) || (verdict == 0 && n > 1) ||
        (verdict != 0 && n > 86400 * 1000))
        return pbx_error_set(err, PBX_E_PROTO,
                             "store `%s`: admit a request: unexpected reply from Redis",
                             rs->pool.shown);
    switch (verdict) {
    case 0:
        out->verdict = PBX_STORE_ADMITTED;
        out->repeat = n == 1;
        out->leased = a->concurrency >= 0;
        break;
    case 1:
        out->verdict = PBX_STORE_RATE;
        out->retry_after = seconds_of(n);
        break;
    case 2:
        out->verdict = PBX_STORE_QUOTA;
        out->retry_after = n < 1 ? 1 : (unsigned)n;
        break;
    default:
        out->verdict = PBX_STORE_CONCURRENT;
        out->retry_after = seconds_of(n);
        break;
    }
    return 0;
}

int pbx__store_redis_admit_undo(struct pbx_store *base, const struct pbx_store_admit *a,
                                const struct pbx_store_admission *adm, struct pbx_error **err)
{
    struct pbx_redis_store *rs = (struct pbx_redis_store *)base;
    char window[PBX_STORE_CLIENT_MAX + 16];
    char lease[PBX_STORE_CLIENT_MAX + 16];
    char counter[PBX_STORE_CLIENT_MAX + 32];
    char mark[PBX_STORE_CLIENT_MAX + PBX_STORE_ONCE_MAX + 40];
    const char *argv[5] = {window, lease, a->ticket, adm->repeat ? "" : counter, mark};
    const struct pbx_redis_store_call one = {.what = "give an admission back",
                                             .id = PBX_REDIS_SC_UNDO,
                                             .nkeys = 2,
                                             .argc = 5,
                                             .argv = argv,
                                             .type = REDIS_REPLY_INTEGER};
    cleanup_reply redisReply *reply = NULL;

    window_key(window, sizeof(window), a->client);
    lease_key(lease, sizeof(lease), a->client);
    quota_key(counter, sizeof(counter), a->client, adm->day);
    mark[0] = '\0';
    if (a->once != NULL)
        snprintf(mark, sizeof(mark), "%s:once:%s", counter, a->once);
    return pbx__store_redis_run(rs, &one, &reply, err);
}

int pbx__store_redis_lease_end(struct pbx_store *base, const char *client, const char *ticket,
                               struct pbx_error **err)
{
    char key[PBX_STORE_CLIENT_MAX + 16];

    lease_key(key, sizeof(key), client);
    return zrem((struct pbx_redis_store *)base, key, ticket, "end a lease", err);
}

/* ---- Node ids' claims ---- */

static void node_key(char *buf, size_t size, const char *node)
{
    snprintf(buf, size, "pbx:node:{%s}", node);
}

/* A reply's integer element `i`, any sign. */
static bool int_of(const redisReply *r, size_t i, int64_t *out)
{
    if (r->elements <= i || r->element[i] == NULL || r->element[i]->type != REDIS_REPLY_INTEGER)
        return false;
    *out = r->element[i]->integer;
    return true;
}

/*
 * PBX_REDIS_SC_NODE's claim reply into *holder: false when malformed.  A field the
 * holder's hash lacks (a claim not written by pybox) reads as 0 or "".
 */
static bool node_holder_of(const redisReply *r, struct pbx_store_node_holder *holder)
{
    const redisReply *pid;
    const redisReply *host;
    const redisReply *renewed;
    int64_t now;

    if (r->elements != 6)
        return false;
    pid = r->element[1];
    host = r->element[2];
    renewed = r->element[3];
    if (!pbx__redis_conn_is_text(pid, 24) || !pbx__redis_conn_is_text(host, PBX_REDIS_FIELD_MAX) ||
        !pbx__redis_conn_is_text(renewed, 24) || !int_of(r, 4, &now) ||
        !int_of(r, 5, &holder->left_ms))
        return false;
    if (pid->len > 0 && !pbx__redis_conn_parse_i64(pid, &holder->pid))
        return false;
    if (renewed->len > 0 && !pbx__redis_conn_parse_i64(renewed, &holder->renewed_ms))
        return false;
    /* A host name longer than a host name can be is shown cut. */
    snprintf(holder->host, sizeof(holder->host), "%.*s",
             (int)(host->len < PBX_STORE_NODE_HOST_MAX ? host->len : PBX_STORE_NODE_HOST_MAX),
             host->str);
    holder->age_ms = renewed->len > 0 ? now - holder->renewed_ms : 0;
    return true;
}

int pbx__store_redis_node_claim(struct pbx_store *base, const char *node, const char *token,
                                int64_t ttl_ms, struct pbx_store_node_holder *holder,
                                struct pbx_error **err)
{
    struct pbx_redis_store *rs = (struct pbx_redis_store *)base;
    char key[PBX_STORE_NODE_MAX + 16];
    char ttl[24];
    char pid[24];
    char host[PBX_STORE_NODE_HOST_MAX + 1];
    const char *argv[6] = {key, "claim", token, ttl, pid, host};
    const struct pbx_redis_store_call one = {
        .what = "claim a node id",
        .may_retry = true, /* the same token's claim twice is a renewal */
        .id = PBX_REDIS_SC_NODE,
        .nkeys = 1,
        .argc = 6,
        .argv = argv,
        .type = REDIS_REPLY_ARRAY};
    cleanup_reply redisReply *reply = NULL;
    int64_t held;
    int r;

    node_key(key, sizeof(key), node);
    snprintf(ttl, sizeof(ttl), "%" PRId64, ttl_ms);
    snprintf(pid, sizeof(pid), "%d", (int)getpid());
    if (gethostname(host, sizeof(host)) < 0)
        host[0] = '\0';
    host[sizeof(host) - 1] = '\0';
    r = pbx__store_redis_run(rs, &one, &reply, err);
    if (r < 0)
        return r;
    if (!int_of(reply, 0, &held) || held < 0 || held > 1 || !node_holder_of(reply, holder))
        return pbx_error_set(err, PBX_E_PROTO,
                             "store `%s`: claim a node id: unexpected reply from Redis",
                             rs->pool.shown);
    return (int)held;
}

int pbx__store_redis_node_release(struct pbx_store *base, const char *node, const char *token,
                                  struct pbx_error **err)
{
    struct pbx_redis_store *rs = (struct pbx_redis_store *)base;
    char key[PBX_STORE_NODE_MAX + 16];
    const char *argv[3] = {key, "release", token};
    const struct pbx_redis_store_call one = {.what = "release a node id",
                                             .may_retry = true, /* a second release finds nothing */
                                             .id = PBX_REDIS_SC_NODE,
                                             .nkeys = 1,
                                             .argc = 3,
                                             .argv = argv,
                                             .type = REDIS_REPLY_ARRAY};
    cleanup_reply redisReply *reply = NULL;
    int64_t done;
    int r;

    node_key(key, sizeof(key), node);
    r = pbx__store_redis_run(rs, &one, &reply, err);
    if (r < 0)
        return r;
    if (reply->elements != 1 || !int_of(reply, 0, &done) || done < 0 || done > 1)
        return pbx_error_set(err, PBX_E_PROTO,
                             "store `%s`: release a node id: unexpected reply from Redis",
                             rs->pool.shown);
    return (int)done;
}
