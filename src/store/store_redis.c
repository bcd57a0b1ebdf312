/*
 * The Redis store's frame, for several servers that share their keys,
 * quotas and audit log ("redis://[[USER]:PASSWORD@]HOST[:PORT][/DB][?timeout_ms=N&pool=N]"):
 * its layout, the Lua scripts it runs, its opening and first call's
 * preparation, and one command's or script's call, its reply's type checked.
 * The operations are store_redis_keys.c's (keys, the audit log) and
 * store_redis_admit.c's (quotas, windows, admissions, leases, node ids'
 * claims); reaching the server (the pool, deadlines, backoff, retries) is
 * redis_conn.c's.
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
 * - pbx:quota:{<client>}:<day>:once:<idempotency key>  a mark that a
 *   request of that key was charged to that counter, for a day;
 * - pbx:window:{<client>}  a sorted set: the client's per-minute window
 *   shared by every server, its members the requests' tickets, their scores
 *   the time (ms, Redis's clock) each took its place, trimmed to the last
 *   60 s at each hold and expiring 61 s after the last;
 * - pbx:lease:{<client>}  a sorted set: the client's executions running on
 *   every server, its members the requests' tickets, their scores the time
 *   (ms, Redis's clock) each lease ends unless given back first;
 * - pbx:audit  a stream of the audit records, the newest 100000 or so kept;
 * - pbx:node:{<node id>}  a hash: the claim on a node id (pybox serve
 *   --node-id) of one running server, its token, pid, host and when it
 *   last renewed (ms, Redis's clock), expiring when the claim lapses.
 * The keys' names share one Redis Cluster hash tag, so that a key's creation
 * (one Lua script: the name's uniqueness, the record, the order) touches one
 * slot; a quota counter and the stream are one key each.  A client's
 * window, lease, counters and marks share the hash tag {<client>}, so that
 * its admission (one script: the window, the day's quota and the lease)
 * touches one slot too.
 *
 * Opening connects to nothing: the first call connects, loads the scripts and checks (or, for a
 * store opened to create, writes) the layout's version, so a server that starts after pybox does is
 * used once it answers.
 *
 * Everything read from Redis is untrusted: each reply's type is checked, as
 * are every field's presence, length and number syntax.  What does not fit
 * is an error (PBX_E_PROTO), never a guess.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>
#include <sodium.h>

#include "common/cleanup.h"
#include "common/xalloc.h"
#include "store/redis_conn.h"
#include "store/store_impl.h"
#include "store/store_redis_internal.h"
#include "common/banned.h"

/* The layout of the keys written here; a newer one is refused. */
#define LAYOUT_VERSION 1

#define K_SCHEMA "pbx:{keys}:schema"

/*
 * Lua: `c`, the count of the quota counter named by the Lua expression `k`
 * (0 when there is none); a value that is not a count fails the script.
 */
#define LUA_COUNT(k)                                                      \
    "local v = redis.call('GET', " k ")\n"                                \
    "local c = 0\n"                                                       \
    "if v then\n"                                                         \
    "  if not string.match(v, '^[0-9]+$') or string.len(v) > 18 then\n"   \
    "    return redis.error_reply('PBXBAD the counter is not a count')\n" \
    "  end\n"                                                             \
    "  c = tonumber(v)\n"                                                 \
    "end\n"

static const char *const scripts[PBX_REDIS_SC_COUNT] = {
    /*
     * KEYS: names, created, seq, the record; ARGV: name, hash hex, then the
     * record's fields and values.  0: the name is taken; -1: the hash is
     * (never, by chance); else the new id.
     */
    [PBX_REDIS_SC_CREATE] = "if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end\n"
                            "if redis.call('EXISTS', KEYS[4]) == 1 then return -1 end\n"
                            "local id = redis.call('INCR', KEYS[3])\n"
                            "redis.call('HSET', KEYS[4], 'id', id, unpack(ARGV, 3))\n"
                            "redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])\n"
                            "redis.call('ZADD', KEYS[2], id, ARGV[2])\n"
                            "return id\n",
    /* KEYS: the record; ARGV: now.  A second revoke keeps the first time; 0: no record. */
    [PBX_REDIS_SC_REVOKE] = "local r = redis.call('HGET', KEYS[1], 'revoked')\n"
                            "if not r then return 0 end\n"
                            "if r == '0' then redis.call('HSET', KEYS[1], 'revoked', ARGV[1]) end\n"
                            "return 1\n",
    /*
     * KEYS: the counter, and the idempotency key's mark (optional); ARGV:
     * the limit (< 0: none), the counter's life and the mark's in seconds.
     * {1, new count} when charged, {0, count} when the limit is reached,
     * {1, count} uncounted when the mark says it was charged already.
     */
    /* clang-format off */
    [PBX_REDIS_SC_QUOTA] = "if KEYS[2] and redis.call('EXISTS', KEYS[2]) == 1 then\n"
                 "  return {1, tonumber(redis.call('GET', KEYS[1]) or '0') or 0}\n"
                 "end\n"
                 LUA_COUNT("KEYS[1]")
                 "local limit = tonumber(ARGV[1])\n"
                 "if limit >= 0 and c >= limit then return {0, c} end\n"
                 "c = redis.call('INCR', KEYS[1])\n"
                 "redis.call('EXPIRE', KEYS[1], ARGV[2])\n"
                 "if KEYS[2] then redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[3]) end\n"
                 "return {1, c}\n",
    /* clang-format on */
    /*
     * KEYS: the client's window, a sorted set of tickets by the time (ms,
     * Redis's clock) they took their place; ARGV: the ticket, the limit,
     * the window and the set's life (ms).  Places older than the window are
     * trimmed first.  {1, places taken} when held, {0, ms until the oldest
     * leaves} when full.
     */
    [PBX_REDIS_SC_WINDOW] =
        "local t = redis.call('TIME')\n"
        "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
        "local span = tonumber(ARGV[3])\n"
        "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - span)\n"
        "local n = redis.call('ZCARD', KEYS[1])\n"
        "if n >= tonumber(ARGV[2]) then\n"
        "  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')\n"
        "  local wait = span\n"
        "  if oldest[2] then wait = tonumber(oldest[2]) + span - now end\n"
        "  return {0, math.max(wait, 0)}\n"
        "end\n"
        "redis.call('ZADD', KEYS[1], now, ARGV[1])\n"
        "redis.call('PEXPIRE', KEYS[1], ARGV[4])\n"
        "return {1, n + 1}\n",
    /*
     * KEYS: the client's window and its leases; ARGV: the quota counters'
     * prefix (the UTC day, by Redis's clock, completes the name), the
     * ticket, the idempotency key ('' for none), the limits rpm, rpd and
     * concurrency (< 0: none), the lease's life (ms), the window's span and
     * life (ms), the counter's and the mark's lives (s).  Refused, nothing
     * changes: {1 (window) or 3 (leases), ms until room, count, day} or
     * {2 (quota), s until midnight, count, day}.  Admitted: {0, 1 when a
     * repeat of the idempotency key, count, day}.
     */
    /* clang-format off */
    [PBX_REDIS_SC_ADMIT] = "local t = redis.call('TIME')\n"
                 "local s = tonumber(t[1])\n"
                 "local now = s * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
                 /* The civil date of day number z (days since 1970-01-01), proleptic Gregorian. */
                 "local z = math.floor(s / 86400) + 719468\n"
                 "local era = math.floor(z / 146097)\n"
                 "local doe = z - era * 146097\n"
                 "local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)\n"
                 "  - math.floor(doe / 146096)) / 365)\n"
                 "local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))\n"
                 "local mp = math.floor((5 * doy + 2) / 153)\n"
                 "local d = doy - math.floor((153 * mp + 2) / 5) + 1\n"
                 "local m = mp < 10 and mp + 3 or mp - 9\n"
                 "local y = yoe + era * 400\n"
                 "if m <= 2 then y = y + 1 end\n"
                 "local day = string.format('%04d-%02d-%02d', y, m, d)\n"
                 "local midnight = 86400 - s % 86400\n"
                 "local qkey = ARGV[1] .. day\n"
                 "local mark = false\n"
                 "if ARGV[3] ~= '' then mark = qkey .. ':once:' .. ARGV[3] end\n"
                 "local rpm, rpd, conc = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])\n"
                 "local span = tonumber(ARGV[8])\n"
                 LUA_COUNT("qkey")
                 "local rep = mark and redis.call('EXISTS', mark) == 1\n"
                 "if rpm >= 0 then\n"
                 "  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - span)\n"
                 "  if redis.call('ZCARD', KEYS[1]) >= rpm then\n"
                 "    local o = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')\n"
                 "    local wait = span\n"
                 "    if o[2] then wait = tonumber(o[2]) + span - now end\n"
                 "    return {1, math.max(wait, 0), c, day}\n"
                 "  end\n"
                 "end\n"
                 "if rpd >= 0 and not rep and c >= rpd then return {2, midnight, c, day} end\n"
                 "if conc >= 0 then\n"
                 "  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)\n"
                 "  if redis.call('ZCARD', KEYS[2]) >= conc then\n"
                 "    local o = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')\n"
                 "    local wait = 1000\n"
                 "    if o[2] then wait = math.min(tonumber(o[2]) - now, 1000) end\n"
                 "    return {3, math.max(wait, 0), c, day}\n"
                 "  end\n"
                 "  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[7]), ARGV[2])\n"
                 /* The set outlives its longest lease, not the newest: leases' lives differ. */
                 "  local last = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')\n"
                 "  redis.call('PEXPIREAT', KEYS[2], tonumber(last[2]) + 1000)\n"
                 "end\n"
                 "if rpm >= 0 then\n"
                 "  redis.call('ZADD', KEYS[1], now, ARGV[2])\n"
                 "  redis.call('PEXPIRE', KEYS[1], ARGV[9])\n"
                 "end\n"
                 "if not rep then\n"
                 "  c = redis.call('INCR', qkey)\n"
                 "  redis.call('EXPIRE', qkey, ARGV[10])\n"
                 "  if mark then redis.call('SET', mark, '1', 'EX', ARGV[11]) end\n"
                 "end\n"
                 "return {0, rep and 1 or 0, c, day}\n",
    /* clang-format on */
    /*
     * KEYS: the client's window and its leases; ARGV: the ticket, the day's
     * counter ('' when the admission was a repeat: not counted) and the
     * idempotency key's mark ('' for none).  Always 1.
     */
    [PBX_REDIS_SC_UNDO] = "redis.call('ZREM', KEYS[1], ARGV[1])\n"
                          "redis.call('ZREM', KEYS[2], ARGV[1])\n"
                          "if ARGV[2] ~= '' then\n"
                          "  local v = tonumber(redis.call('GET', ARGV[2]) or '0') or 0\n"
                          "  if v > 0 then redis.call('DECR', ARGV[2]) end\n"
                          "  if ARGV[3] ~= '' then redis.call('DEL', ARGV[3]) end\n"
                          "end\n"
                          "return 1\n",
    /*
     * KEYS: a node id's claim, a hash (token, pid, host, renewed_ms) that
     * expires when the claim lapses; ARGV: "claim" or "release", the token,
     * then for a claim its life (ms), pid and host.  A claim: {1, pid,
     * host, renewed_ms, now, ms left} when the token holds it now (claimed
     * or renewed, by Redis's clock), {0, the holder's pid, host,
     * renewed_ms, now, ms left} when another token does.  A release: {1}
     * when the token held it (the claim is gone), else {0}.
     */
    [PBX_REDIS_SC_NODE] =
        "local t = redis.call('TIME')\n"
        "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
        "local cur = redis.call('HMGET', KEYS[1], 'token', 'pid', 'host', 'renewed_ms')\n"
        "if ARGV[1] == 'release' then\n"
        "  if cur[1] == ARGV[2] then redis.call('DEL', KEYS[1]) return {1} end\n"
        "  return {0}\n"
        "end\n"
        "if cur[1] and cur[1] ~= ARGV[2] then\n"
        "  return {0, cur[2] or '', cur[3] or '', cur[4] or '', now,\n"
        "          redis.call('PTTL', KEYS[1])}\n"
        "end\n"
        "redis.call('HSET', KEYS[1], 'token', ARGV[2], 'pid', ARGV[4], 'host', ARGV[5],\n"
        "           'renewed_ms', now)\n"
        "redis.call('PEXPIRE', KEYS[1], ARGV[3])\n"
        "return {1, ARGV[4], ARGV[5], tostring(now), now, tonumber(ARGV[3])}\n",
};

redisReply *pbx__store_redis_eval(struct pbx_redis_store *rs, struct pbx_redis_call *call,
                                  enum pbx_redis_script id, int nkeys, int argc, const char **argv,
                                  const char *what, struct pbx_error **err)
{
    const char *full[48];
    char nk[8];
    redisReply *reply;

    PBX_ASSERT(argc + 3 <= 48);
    snprintf(nk, sizeof(nk), "%d", nkeys);
    full[0] = "EVALSHA";
    full[1] = rs->sha[id];
    full[2] = nk;
    memcpy(&full[3], argv, (size_t)argc * sizeof(*argv));
    for (int attempt = 0;; attempt++) {
        reply = pbx__redis_conn_send(call, argc + 3, full, NULL, what, err);
        if (reply == NULL)
            return NULL;
        if (reply->type == REDIS_REPLY_ERROR && attempt == 0 && reply->len >= 8 &&
            strncmp(reply->str, "NOSCRIPT", 8) == 0) {
            const char *load[3] = {"SCRIPT", "LOAD", scripts[id]};
            redisReply *loaded;

            freeReplyObject(reply);
            loaded = pbx__redis_conn_command(call, 3, load, "load a script", err);
            if (loaded == NULL)
                return NULL;
            freeReplyObject(loaded);
            continue;
        }
        break;
    }
    if (reply->type == REDIS_REPLY_ERROR) {
        pbx__redis_conn_reply_error(call, reply, what, err);
        freeReplyObject(reply);
        return NULL;
    }
    return reply;
}

int pbx__store_redis_run(struct pbx_redis_store *rs, const struct pbx_redis_store_call *one,
                         redisReply **reply, struct pbx_error **err)
{
    struct pbx_redis_call call;
    int r;

    *reply = NULL;
    r = pbx__redis_conn_begin(&rs->pool, &call, one->may_retry, err);
    if (r < 0)
        return r;
    *reply = one->id == PBX_REDIS_SC_COUNT
                 ? pbx__redis_conn_command(&call, one->argc, one->argv, one->what, err)
                 : pbx__store_redis_eval(rs, &call, one->id, one->nkeys, one->argc, one->argv,
                                         one->what, err);
    if (*reply == NULL)
        return pbx__redis_conn_end_failed(&call);
    if (one->type >= 0 && (*reply)->type != one->type) {
        freeReplyObject(*reply);
        *reply = NULL;
        return pbx__redis_conn_end_malformed(&call, one->what, err);
    }
    pbx__redis_conn_end(&call);
    pbx__redis_conn_ok(&rs->pool);
    return 0;
}

/* ---- The backend ---- */

static void rd_close(struct pbx_store *base)
{
    struct pbx_redis_store *rs = (struct pbx_redis_store *)base;

    if (rs == NULL)
        return;
    pbx__redis_conn_pool_release(&rs->pool);
    free(rs);
}

/*
 * The first call's, before its own command: the scripts' SHA-1s, and the
 * layout's version (written when the store was opened to create).
 */
static int prepare(struct pbx_redis_call *call, void *arg, struct pbx_error **err)
{
    struct pbx_redis_store *rs = arg;
    const char *shown = rs->pool.shown;
    int64_t version = 0;

    for (int i = 0; i < PBX_REDIS_SC_COUNT; i++) {
        const char *load[3] = {"SCRIPT", "LOAD", scripts[i]};
        cleanup_reply redisReply *reply =
            pbx__redis_conn_command(call, 3, load, "load a script", err);

        if (reply == NULL)
            return call->rc;
        if (!pbx__redis_conn_is_text(reply, 40) || reply->len != 40 ||
            strspn(reply->str, "0123456789abcdef") < 40)
            return pbx__redis_conn_malformed(call, "load a script", err);
        memcpy(rs->sha[i], reply->str, 40);
        rs->sha[i][40] = '\0';
    }
    if (rs->create) {
        const char *set[4] = {"SET", K_SCHEMA, "1", "NX"};
        cleanup_reply redisReply *reply =
            pbx__redis_conn_command(call, 4, set, "write the layout's version", err);

        if (reply == NULL)
            return call->rc;
    }
    {
        const char *get[2] = {"GET", K_SCHEMA};
        cleanup_reply redisReply *reply =
            pbx__redis_conn_command(call, 2, get, "read the layout's version", err);

        if (reply == NULL)
            return call->rc;
        if (reply->type != REDIS_REPLY_NIL &&
            (!pbx__redis_conn_parse_i64(reply, &version) || version < 1))
            call->rc = pbx_error_set(
                err, PBX_E_PROTO, "store `%s`: `" K_SCHEMA "` is not a version of pybox's layout",
                shown);
        else if (version > LAYOUT_VERSION)
            call->rc = pbx_error_set(err, PBX_E_UNSUPPORTED,
                                     "store `%s` has layout version %" PRId64
                                     ", newer than this pybox understands (%d): upgrade pybox",
                                     shown, version, LAYOUT_VERSION);
        else
            call->rc = 0;
    }
    return call->rc;
}

/* Read the URI and make the pool; nothing connects until the first call. */
static int rd_open(const char *uri, bool create, struct pbx_store **out, struct pbx_error **err)
{
    struct pbx_redis_store *rs;
    int r;

    *out = NULL;
    if (sodium_init() < 0)
        return pbx_error_set(err, PBX_E_UNSUPPORTED, "store: libsodium could not be initialised");
    rs = xcalloc(1, sizeof(*rs));
    rs->base.be = &pbx__store_redis;
    rs->create = create;
    r = pbx__redis_conn_pool_init(&rs->pool, uri, prepare, rs, err);
    if (r < 0) {
        rd_close(&rs->base);
        return r;
    }
    *out = &rs->base;
    return 0;
}

static int rd_ping(struct pbx_store *base, struct pbx_error **err)
{
    struct pbx_redis_store *rs = (struct pbx_redis_store *)base;
    const char *argv[1] = {"PING"};
    const struct pbx_redis_store_call one = {.what = "ping",
                                             .may_retry = true,
                                             .id = PBX_REDIS_SC_COUNT,
                                             .argc = 1,
                                             .argv = argv,
                                             .type = REDIS_REPLY_STATUS};
    cleanup_reply redisReply *reply = NULL;
    int r;

    r = pbx__store_redis_run(rs, &one, &reply, err);
    if (r < 0)
        return r;
    if (strcmp(reply->str, "PONG") != 0)
        return pbx_error_set(err, PBX_E_PROTO, "store `%s`: ping: unexpected reply from Redis",
                             rs->pool.shown);
    return 0;
}

const struct pbx_store_backend pbx__store_redis = {
    .name = "redis",
    .open = rd_open,
    .close = rd_close,
    .key_create = pbx__store_redis_key_create,
    .key_list = pbx__store_redis_key_list,
    .key_revoke = pbx__store_redis_key_revoke,
    .key_lookup = pbx__store_redis_key_lookup,
    .quota_take = pbx__store_redis_quota_take,
    .quota_get = pbx__store_redis_quota_get,
    .audit = pbx__store_redis_audit,
    .audit_tail = pbx__store_redis_audit_tail,
    .ping = rd_ping,
    .window_hold = pbx__store_redis_window_hold,
    .window_release = pbx__store_redis_window_release,
    .admit = pbx__store_redis_admit,
    .admit_undo = pbx__store_redis_admit_undo,
    .lease_end = pbx__store_redis_lease_end,
    .node_claim = pbx__store_redis_node_claim,
    .node_release = pbx__store_redis_node_release,
};
