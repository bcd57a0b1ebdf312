/*
 * The store's operations on Redis, for several servers that share their
 * keys, quotas and audit log: its layout, its scripts, and reading its
 * records back ("redis://[[USER]:PASSWORD@]HOST[:PORT][/DB][?timeout_ms=N&pool=N]").
 * Reaching the server (the pool, deadlines, backoff, retries) is
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
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <jansson.h>
#include <sodium.h>

#include "common/cleanup.h"
#include "common/xalloc.h"
#include "store/redis_conn.h"
#include "store/store_impl.h"
#include "common/banned.h"

/* The layout of the keys written here; a newer one is refused. */
#define LAYOUT_VERSION 1

/* The audit stream's approximate length, and a quota counter's life after its last charge. */
#define AUDIT_MAXLEN "100000"
#define QUOTA_TTL_S  "345600" /* 4 days */
#define ONCE_TTL_S   "86400"  /* an idempotency key's mark: a day */

/* A shared window's span, and its set's life after the last place taken (ms). */
#define WINDOW_MS     60000
#define WINDOW_TTL_MS "61000"

/* The longest field of a record read back; a longer one is malformed. */
#define FIELD_MAX 8192

#define HASH_HEX (2 * PBX_STORE_HASH_BYTES)

#define STR_(x) #x
#define STR(x)  STR_(x)

#define K_NAMES   "pbx:{keys}:names"
#define K_CREATED "pbx:{keys}:created"
#define K_SEQ     "pbx:{keys}:seq"
#define K_SCHEMA  "pbx:{keys}:schema"
#define K_KEY     "pbx:{keys}:key:"
#define K_AUDIT   "pbx:audit"

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

enum script_id { SC_CREATE, SC_REVOKE, SC_QUOTA, SC_WINDOW, SC_ADMIT, SC_UNDO, SC_NODE, SC_COUNT };

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
     * KEYS: the counter, and the idempotency key's mark (optional); ARGV:
     * the limit (< 0: none), the counter's life and the mark's in seconds.
     * {1, new count} when charged, {0, count} when the limit is reached,
     * {1, count} uncounted when the mark says it was charged already.
     */
    /* clang-format off */
    [SC_QUOTA] = "if KEYS[2] and redis.call('EXISTS', KEYS[2]) == 1 then\n"
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
    [SC_WINDOW] = "local t = redis.call('TIME')\n"
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
    [SC_ADMIT] = "local t = redis.call('TIME')\n"
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
    [SC_UNDO] = "redis.call('ZREM', KEYS[1], ARGV[1])\n"
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
    [SC_NODE] = "local t = redis.call('TIME')\n"
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

struct redis_store {
    struct pbx_store base;      /* first: what store.c dispatches on */
    struct pbx_redis_pool pool; /* the server and the connections to it */
    bool create;                /* the first call writes the layout's version */
    char sha[SC_COUNT][41];     /* the scripts' SHA-1s, once prepared */
};

/*
 * EVALSHA of script `id` with `nkeys` keys among `argv`; its text once more
 * (SCRIPT LOAD) when Redis lost it (NOSCRIPT: a restart, SCRIPT FLUSH).  An
 * error reply is an error; NULL either way.
 */
static redisReply *eval(struct redis_store *rs, struct pbx_redis_call *call, enum script_id id,
                        int nkeys, int argc, const char **argv, const char *what,
                        struct pbx_error **err)
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

/*
 * One command (script SC_COUNT) or one script of a call of its own: 0 and
 * *reply (caller frees), or < 0 with *err.  A reply not of `type` (-1: any,
 * the caller checks) is malformed and its connection dropped.
 */
struct one_call {
    const char *what;  /* for messages */
    bool may_retry;    /* it only reads, or changes nothing run twice */
    enum script_id id; /* SC_COUNT: argv is a command */
    int nkeys;         /* a script's keys among argv */
    int argc;
    const char **argv;
    int type; /* REDIS_REPLY_* the reply must be, or -1 */
};

static int run_one(struct redis_store *rs, const struct one_call *one, redisReply **reply,
                   struct pbx_error **err)
{
    struct pbx_redis_call call;
    int r;

    *reply = NULL;
    r = pbx__redis_conn_begin(&rs->pool, &call, one->may_retry, err);
    if (r < 0)
        return r;
    *reply = one->id == SC_COUNT
                 ? pbx__redis_conn_command(&call, one->argc, one->argv, one->what, err)
                 : eval(rs, &call, one->id, one->nkeys, one->argc, one->argv, one->what, err);
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

/* ---- Reading records ---- */

/* A hash's hex: HASH_HEX lowercase hex digits. */
static bool is_hash_hex(const redisReply *r)
{
    return pbx__redis_conn_is_text(r, HASH_HEX) && r->len == HASH_HEX &&
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
    F_CONCURRENCY, /* absent from a record an older pybox wrote: 0, the default */
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
    [F_CONCURRENCY] = "concurrency",
};

/* An integer field within lo..hi. */
static bool field_int(const redisReply *v, int64_t lo, int64_t hi, int64_t *out)
{
    return pbx__redis_conn_parse_i64(v, out) && *out >= lo && *out <= hi;
}

/*
 * Fill `info` from a record's HGETALL reply, and *hash from its hash field.
 * 0 when the record is empty (no such key), 1 when read, < 0 when malformed.
 */
static int read_record(const char *shown, const redisReply *r, struct pbx_key_info *info,
                       unsigned char hash[PBX_STORE_HASH_BYTES], struct pbx_error **err)
{
    const redisReply *f[F_COUNT] = {0};
    int64_t v[F_COUNT] = {0};
    const char *bad = NULL;

    if (r->type != REDIS_REPLY_ARRAY || r->elements % 2 != 0 || r->elements > 2 * 64)
        return pbx_error_set(err, PBX_E_PROTO,
                             "store `%s`: read a key: unexpected reply from Redis", shown);
    if (r->elements == 0)
        return 0;
    for (size_t i = 0; i < r->elements; i += 2) {
        const redisReply *k = r->element[i];

        if (!pbx__redis_conn_is_text(k, 64))
            return pbx_error_set(err, PBX_E_PROTO,
                                 "store `%s`: read a key: unexpected reply from Redis", shown);
        for (int j = 0; j < F_COUNT; j++) {
            if (k->len == strlen(field_names[j]) && memcmp(k->str, field_names[j], k->len) == 0)
                f[j] = r->element[i + 1];
        }
    }
    for (int j = 0; j < F_COUNT && bad == NULL; j++) {
        if (f[j] == NULL && j != F_MODULES && j != F_CONCURRENCY)
            bad = field_names[j];
    }
    if (bad == NULL && !field_int(f[F_ID], 1, INT64_MAX, &v[F_ID]))
        bad = "id";
    if (bad == NULL &&
        (!pbx__redis_conn_is_text(f[F_NAME], PBX_STORE_NAME_MAX) || f[F_NAME]->len == 0))
        bad = "name";
    if (bad == NULL && !pbx__redis_conn_is_text(f[F_PREFIX], PBX_STORE_PREFIX_LEN))
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
        (!pbx__redis_conn_is_text(f[F_MODULES], PBX_STORE_MODULES_MAX) || f[F_MODULES]->len == 0))
        bad = "modules";
    /* Out of range reads as 0, the server's setting, as in SQLite. */
    for (int j = F_SESSIONS; j <= F_LIFETIME && bad == NULL; j++) {
        if (!pbx__redis_conn_parse_i64(f[j], &v[j]))
            bad = field_names[j];
    }
    if (bad == NULL && f[F_CONCURRENCY] != NULL &&
        !field_int(f[F_CONCURRENCY], -1, PBX_STORE_CONCURRENCY_MAX, &v[F_CONCURRENCY]))
        bad = "concurrency";
    if (bad != NULL)
        return pbx_error_set(err, PBX_E_PROTO,
                             "store `%s`: a key's record is malformed: field `%s`", shown, bad);
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
                .concurrency = v[F_CONCURRENCY],
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
    pbx__redis_conn_pool_release(&rs->pool);
    free(rs);
}

/*
 * The first call's, before its own command: the scripts' SHA-1s, and the
 * layout's version (written when the store was opened to create).
 */
static int prepare(struct pbx_redis_call *call, void *arg, struct pbx_error **err)
{
    struct redis_store *rs = arg;
    const char *shown = rs->pool.shown;
    int64_t version = 0;

    for (int i = 0; i < SC_COUNT; i++) {
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
    struct redis_store *rs;
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

static int rd_key_create(struct pbx_store *base, const char *name,
                         const struct pbx_key_policy *policy, char **token, struct pbx_error **err)
{
    struct redis_store *rs = (struct redis_store *)base;
    const struct pbx_key_policy *p = pbx__store_policy(policy);
    cleanup_new_key struct pbx_store_new_key key = {0};
    cleanup_reply redisReply *reply = NULL;
    char hex[HASH_HEX + 1];
    char record[sizeof(K_KEY) + HASH_HEX];
    char nums[12][24];
    const char *argv[44];
    int argc = 0;
    int n = 0;
    struct one_call one = {.what = "create a key",
                           .id = SC_CREATE,
                           .nkeys = 4,
                           .argv = argv,
                           .type = REDIS_REPLY_INTEGER};
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
    FIELD_NUM("concurrency", "%" PRId64, p->concurrency);
#undef FIELD_NUM
#undef FIELD_STR
    one.argc = argc;
    r = run_one(rs, &one, &reply, err);
    if (r < 0)
        return r;
    if (reply->integer == 0)
        return pbx_error_set(err, EEXIST, "key name `%s` (revoked keys keep their names)", name);
    if (reply->integer < 0)
        return pbx_error_set(err, EEXIST, "store `%s`: the new key's hash is taken",
                             rs->pool.shown);
    *token = steal_pointer(&key.token);
    return 0;
}

/* A list's records in one round trip: the commands first, then their replies. */
static int read_listed(struct redis_store *rs, struct pbx_redis_call *call, const redisReply *ids,
                       struct pbx_key_info *out, size_t *count, bool *drop, struct pbx_error **err)
{
    for (size_t i = 0; i < ids->elements; i++) {
        char record[sizeof(K_KEY) + HASH_HEX];
        const char *argv[2] = {"HGETALL", record};

        snprintf(record, sizeof(record), K_KEY "%.*s", HASH_HEX, ids->element[i]->str);
        if (pbx__redis_conn_append(call, 2, argv, "list keys", err) < 0)
            return call->rc;
    }
    for (size_t i = 0; i < ids->elements; i++) {
        cleanup_reply redisReply *rec = pbx__redis_conn_get_reply(call, "list keys", err);
        unsigned char hash[PBX_STORE_HASH_BYTES];
        int got;

        if (rec == NULL)
            return call->rc;
        /* Past here, the replies of the rest are still due: the connection starts afresh. */
        *drop = true;
        if (rec->type == REDIS_REPLY_ERROR)
            return pbx__redis_conn_reply_error(call, rec, "list keys", err);
        got = read_record(rs->pool.shown, rec, &out[*count], hash, err);
        if (got == 0)
            got = pbx_error_set(err, PBX_E_PROTO,
                                "store `%s`: key %.16s... is listed but has no record",
                                rs->pool.shown, ids->element[i]->str);
        if (got < 0)
            return got;
        *drop = false;
        (*count)++;
    }
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
    bool drop = false;
    struct pbx_redis_call call;
    int r;

    *keys = NULL;
    *n = 0;
    r = pbx__redis_conn_begin(&rs->pool, &call, true, err); /* it only reads */
    if (r < 0)
        return r;
    ids = pbx__redis_conn_command(&call, 4, range, "list keys", err);
    if (ids == NULL)
        return pbx__redis_conn_end_failed(&call);
    if (ids->type != REDIS_REPLY_ARRAY)
        return pbx__redis_conn_end_malformed(&call, "list keys", err);
    for (size_t i = 0; i < ids->elements; i++) {
        if (!is_hash_hex(ids->element[i])) {
            pbx__redis_conn_end(&call);
            return pbx_error_set(err, PBX_E_PROTO,
                                 "store `%s`: `" K_CREATED "` holds something not a key's hash",
                                 rs->pool.shown);
        }
    }
    out = ids->elements > 0 ? xcalloc(ids->elements, sizeof(*out)) : NULL;
    r = read_listed(rs, &call, ids, out, &count, &drop, err);
    if (drop)
        pbx__redis_conn_end_drop(&call);
    else
        pbx__redis_conn_end(&call);
    if (r < 0) {
        pbx_key_info_free_array(out, count);
        return r;
    }
    pbx__redis_conn_ok(&rs->pool);
    *keys = out;
    *n = count;
    return 0;
}

static int rd_key_revoke(struct pbx_store *base, const char *name, struct pbx_error **err)
{
    struct redis_store *rs = (struct redis_store *)base;
    cleanup_reply redisReply *hex = NULL;
    cleanup_reply redisReply *done = NULL;
    char record[sizeof(K_KEY) + HASH_HEX];
    char now[24];
    struct pbx_redis_call call;
    int r;

    if (name == NULL)
        return pbx_error_set(err, PBX_E_INVAL, "no key name given");
    /* A second revocation changes nothing: the call may go again. */
    r = pbx__redis_conn_begin(&rs->pool, &call, true, err);
    if (r < 0)
        return r;
    {
        const char *argv[3] = {"HGET", K_NAMES, name};

        hex = pbx__redis_conn_command(&call, 3, argv, "revoke a key", err);
    }
    if (hex == NULL)
        return pbx__redis_conn_end_failed(&call);
    if (hex->type == REDIS_REPLY_NIL) {
        pbx__redis_conn_end(&call);
        pbx__redis_conn_ok(&rs->pool);
        return pbx_error_set(err, PBX_E_NOTFOUND, "no key named `%s`", name);
    }
    if (!is_hash_hex(hex)) {
        pbx__redis_conn_end(&call);
        return pbx_error_set(err, PBX_E_PROTO,
                             "store `%s`: the name index's entry of `%s` is not a key's hash",
                             rs->pool.shown, name);
    }
    snprintf(record, sizeof(record), K_KEY "%.*s", HASH_HEX, hex->str);
    snprintf(now, sizeof(now), "%" PRId64, (int64_t)time(NULL));
    {
        const char *argv[2] = {record, now};

        done = eval(rs, &call, SC_REVOKE, 1, 2, argv, "revoke a key", err);
    }
    if (done == NULL)
        return pbx__redis_conn_end_failed(&call);
    if (done->type != REDIS_REPLY_INTEGER)
        return pbx__redis_conn_end_malformed(&call, "revoke a key", err);
    pbx__redis_conn_end(&call);
    pbx__redis_conn_ok(&rs->pool);
    if (done->integer != 1)
        return pbx_error_set(err, PBX_E_PROTO, "store `%s`: key `%s` is named but has no record",
                             rs->pool.shown, name);
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
    const char *argv[2] = {"HGETALL", record};
    const struct one_call one = {.what = "look up a key",
                                 .may_retry = true,
                                 .id = SC_COUNT,
                                 .argc = 2,
                                 .argv = argv,
                                 .type = REDIS_REPLY_ARRAY};
    cleanup_reply redisReply *reply = NULL;
    struct pbx_key_info found;
    int r;

    if (!pbx__store_token_hash(token, hash))
        return 0;
    sodium_bin2hex(hex, sizeof(hex), hash, sizeof(hash));
    snprintf(record, sizeof(record), K_KEY "%s", hex);
    r = run_one(rs, &one, &reply, err);
    if (r < 0)
        return r;
    r = read_record(rs->pool.shown, reply, &found, stored, err);
    if (r <= 0)
        return r;
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
                         const char *once, int64_t *count, struct pbx_error **err)
{
    struct redis_store *rs = (struct redis_store *)base;
    char key[PBX_STORE_CLIENT_MAX + 32];
    char mark[PBX_STORE_CLIENT_MAX + PBX_STORE_ONCE_MAX + 40];
    char lim[24];
    const char *argv_once[5] = {key, mark, lim, QUOTA_TTL_S, ONCE_TTL_S};
    const char *argv[4] = {key, lim, QUOTA_TTL_S, ONCE_TTL_S};
    const struct one_call one = {.what = "charge a quota",
                                 .id = SC_QUOTA,
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
    r = run_one(rs, &one, &reply, err);
    if (r < 0)
        return r;
    if (reply->elements != 2 || !count_of(reply->element[0], &taken) || taken > 1 ||
        !count_of(reply->element[1], count))
        return pbx_error_set(err, PBX_E_PROTO,
                             "store `%s`: charge a quota: unexpected reply from Redis",
                             rs->pool.shown);
    return taken == 1 ? 1 : 0;
}

static int rd_quota_get(struct pbx_store *base, const char *client, const char *day, int64_t *count,
                        struct pbx_error **err)
{
    struct redis_store *rs = (struct redis_store *)base;
    char key[PBX_STORE_CLIENT_MAX + 32];
    const char *argv[2] = {"GET", key};
    const struct one_call one = {.what = "read a quota",
                                 .may_retry = true,
                                 .id = SC_COUNT,
                                 .argc = 2,
                                 .argv = argv,
                                 .type = -1};
    cleanup_reply redisReply *reply = NULL;
    int r;

    quota_key(key, sizeof(key), client, day);
    r = run_one(rs, &one, &reply, err);
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

static int rd_window_hold(struct pbx_store *base, const char *client, const char *ticket,
                          int64_t limit, unsigned *retry_after, struct pbx_error **err)
{
    struct redis_store *rs = (struct redis_store *)base;
    char key[PBX_STORE_CLIENT_MAX + 16];
    char lim[24];
    const char *argv[5] = {key, ticket, lim, STR(WINDOW_MS), WINDOW_TTL_MS};
    const struct one_call one = {.what = "hold a place in a rate window",
                                 .id = SC_WINDOW,
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
    r = run_one(rs, &one, &reply, err);
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
static int zrem(struct redis_store *rs, const char *key, const char *ticket, const char *what,
                struct pbx_error **err)
{
    const char *argv[3] = {"ZREM", key, ticket};
    const struct one_call one = {.what = what,
                                 .may_retry = true, /* a second ZREM removes nothing */
                                 .id = SC_COUNT,
                                 .argc = 3,
                                 .argv = argv,
                                 .type = REDIS_REPLY_INTEGER};
    cleanup_reply redisReply *reply = NULL;

    return run_one(rs, &one, &reply, err);
}

static int rd_window_release(struct pbx_store *base, const char *client, const char *ticket,
                             struct pbx_error **err)
{
    char key[PBX_STORE_CLIENT_MAX + 16];
    int r;

    r = pbx__store_check_ticket(client, ticket, err);
    if (r < 0)
        return r;
    window_key(key, sizeof(key), client);
    return zrem((struct redis_store *)base, key, ticket, "release a place in a rate window", err);
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

static int rd_admit(struct pbx_store *base, const struct pbx_store_admit *a,
                    struct pbx_store_admission *out, struct pbx_error **err)
{
    struct redis_store *rs = (struct redis_store *)base;
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
    const struct one_call one = {.what = "admit a request",
                                 .id = SC_ADMIT,
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
    r = run_one(rs, &one, &reply, err);
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

static int rd_admit_undo(struct pbx_store *base, const struct pbx_store_admit *a,
                         const struct pbx_store_admission *adm, struct pbx_error **err)
{
    struct redis_store *rs = (struct redis_store *)base;
    char window[PBX_STORE_CLIENT_MAX + 16];
    char lease[PBX_STORE_CLIENT_MAX + 16];
    char counter[PBX_STORE_CLIENT_MAX + 32];
    char mark[PBX_STORE_CLIENT_MAX + PBX_STORE_ONCE_MAX + 40];
    const char *argv[5] = {window, lease, a->ticket, adm->repeat ? "" : counter, mark};
    const struct one_call one = {.what = "give an admission back",
                                 .id = SC_UNDO,
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
    return run_one(rs, &one, &reply, err);
}

static int rd_lease_end(struct pbx_store *base, const char *client, const char *ticket,
                        struct pbx_error **err)
{
    char key[PBX_STORE_CLIENT_MAX + 16];

    lease_key(key, sizeof(key), client);
    return zrem((struct redis_store *)base, key, ticket, "end a lease", err);
}

static int rd_audit(struct pbx_store *base, const struct pbx_audit *rec, struct pbx_error **err)
{
    struct redis_store *rs = (struct redis_store *)base;
    cleanup_reply redisReply *reply = NULL;
    char time_ms[24];
    char duration[40];
    const char *argv[20];
    int argc = 0;
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
    return run_one(rs,
                   &(const struct one_call){.what = "append to the audit log",
                                            .id = SC_COUNT,
                                            .argc = argc,
                                            .argv = argv,
                                            .type = REDIS_REPLY_STRING},
                   &reply, err);
}

/*
 * One stream entry [id, [field, value, ...]], appended to *out as a JSON
 * line: false when malformed.  A text field missing or too long is null.
 */
static bool audit_append(char **out, size_t *len, const redisReply *entry)
{
    struct pbx_store_audit_row row = {0};
    const redisReply *time_ms = NULL;
    const redisReply *duration = NULL;
    const redisReply *fields;

    if (entry == NULL || entry->type != REDIS_REPLY_ARRAY || entry->elements != 2)
        return false;
    fields = entry->element[1];
    if (fields == NULL || fields->type != REDIS_REPLY_ARRAY || fields->elements % 2 != 0)
        return false;
    for (size_t i = 0; i < fields->elements; i += 2) {
        const redisReply *k = fields->element[i];
        const redisReply *v = fields->element[i + 1];

        if (!pbx__redis_conn_is_text(k, 64))
            return false;
        if (k->len == strlen("time_ms") && memcmp(k->str, "time_ms", k->len) == 0)
            time_ms = v;
        if (k->len == strlen("duration_ms") && memcmp(k->str, "duration_ms", k->len) == 0)
            duration = v;
        for (int j = 0; j < PBX_STORE_AUDIT_TEXTS; j++) {
            const char *name = pbx__store_audit_names[j];

            if (k->len == strlen(name) && memcmp(k->str, name, k->len) == 0) {
                bool text = pbx__redis_conn_is_text(v, FIELD_MAX);

                row.text[j] = text ? v->str : NULL;
                row.len[j] = text ? v->len : 0;
            }
        }
    }
    if (!pbx__redis_conn_parse_i64(time_ms, &row.time_ms) ||
        !pbx__redis_conn_parse_double(duration, &row.duration_ms))
        return false;
    pbx__store_audit_append(out, len, &row);
    return true;
}

static int rd_audit_tail(struct pbx_store *base, size_t max, char **text, struct pbx_error **err)
{
    struct redis_store *rs = (struct redis_store *)base;
    char count[24];
    const char *argv[6] = {"XREVRANGE", K_AUDIT, "+", "-", "COUNT", count};
    const struct one_call one = {.what = "read the audit log",
                                 .may_retry = true,
                                 .id = SC_COUNT,
                                 .argc = 6,
                                 .argv = argv,
                                 .type = REDIS_REPLY_ARRAY};
    cleanup_reply redisReply *reply = NULL;
    cleanup_free char *out = xstrdup("");
    size_t len = 0;
    int r;

    *text = NULL;
    if (max == 0) {
        *text = steal_pointer(&out);
        return 0;
    }
    snprintf(count, sizeof(count), "%zu", max > (size_t)LLONG_MAX ? (size_t)LLONG_MAX : max);
    r = run_one(rs, &one, &reply, err);
    if (r < 0)
        return r;
    /* Newest first from Redis; oldest first out, as SQLite's. */
    for (size_t i = reply->elements; i-- > 0;) {
        if (!audit_append(&out, &len, reply->element[i]))
            return pbx_error_set(err, PBX_E_PROTO,
                                 "store `%s`: an entry of `" K_AUDIT "` is malformed",
                                 rs->pool.shown);
    }
    *text = steal_pointer(&out);
    return 0;
}

static int rd_ping(struct pbx_store *base, struct pbx_error **err)
{
    struct redis_store *rs = (struct redis_store *)base;
    const char *argv[1] = {"PING"};
    const struct one_call one = {.what = "ping",
                                 .may_retry = true,
                                 .id = SC_COUNT,
                                 .argc = 1,
                                 .argv = argv,
                                 .type = REDIS_REPLY_STATUS};
    cleanup_reply redisReply *reply = NULL;
    int r;

    r = run_one(rs, &one, &reply, err);
    if (r < 0)
        return r;
    if (strcmp(reply->str, "PONG") != 0)
        return pbx_error_set(err, PBX_E_PROTO, "store `%s`: ping: unexpected reply from Redis",
                             rs->pool.shown);
    return 0;
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
 * SC_NODE's claim reply into *holder: false when malformed.  A field the
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
    if (!pbx__redis_conn_is_text(pid, 24) || !pbx__redis_conn_is_text(host, FIELD_MAX) ||
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

static int rd_node_claim(struct pbx_store *base, const char *node, const char *token,
                         int64_t ttl_ms, struct pbx_store_node_holder *holder,
                         struct pbx_error **err)
{
    struct redis_store *rs = (struct redis_store *)base;
    char key[PBX_STORE_NODE_MAX + 16];
    char ttl[24];
    char pid[24];
    char host[PBX_STORE_NODE_HOST_MAX + 1];
    const char *argv[6] = {key, "claim", token, ttl, pid, host};
    const struct one_call one = {.what = "claim a node id",
                                 .may_retry = true, /* the same token's claim twice is a renewal */
                                 .id = SC_NODE,
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
    r = run_one(rs, &one, &reply, err);
    if (r < 0)
        return r;
    if (!int_of(reply, 0, &held) || held < 0 || held > 1 || !node_holder_of(reply, holder))
        return pbx_error_set(err, PBX_E_PROTO,
                             "store `%s`: claim a node id: unexpected reply from Redis",
                             rs->pool.shown);
    return (int)held;
}

static int rd_node_release(struct pbx_store *base, const char *node, const char *token,
                           struct pbx_error **err)
{
    struct redis_store *rs = (struct redis_store *)base;
    char key[PBX_STORE_NODE_MAX + 16];
    const char *argv[3] = {key, "release", token};
    const struct one_call one = {.what = "release a node id",
                                 .may_retry = true, /* a second release finds nothing */
                                 .id = SC_NODE,
                                 .nkeys = 1,
                                 .argc = 3,
                                 .argv = argv,
                                 .type = REDIS_REPLY_ARRAY};
    cleanup_reply redisReply *reply = NULL;
    int64_t done;
    int r;

    node_key(key, sizeof(key), node);
    r = run_one(rs, &one, &reply, err);
    if (r < 0)
        return r;
    if (reply->elements != 1 || !int_of(reply, 0, &done) || done < 0 || done > 1)
        return pbx_error_set(err, PBX_E_PROTO,
                             "store `%s`: release a node id: unexpected reply from Redis",
                             rs->pool.shown);
    return (int)done;
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
    .window_hold = rd_window_hold,
    .window_release = rd_window_release,
    .admit = rd_admit,
    .admit_undo = rd_admit_undo,
    .lease_end = rd_lease_end,
    .node_claim = rd_node_claim,
    .node_release = rd_node_release,
};
