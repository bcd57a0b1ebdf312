/*
 * The Redis store's keys and audit log: a key's creation, listing,
 * revocation and lookup, its record read back and checked field by field,
 * and the audit stream's entries appended and read back (the layout is
 * described in store_redis.c).
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <hiredis/hiredis.h>
#include <sodium.h>

#include "common/cleanup.h"
#include "common/xalloc.h"
#include "store/redis_conn.h"
#include "store/store_impl.h"
#include "store/store_redis_internal.h"
#include "common/banned.h"

/* The audit stream's approximate length. */
#define AUDIT_MAXLEN "100000"

#define HASH_HEX (2 * PBX_STORE_HASH_BYTES)

#define K_NAMES   "pbx:{keys}:names"
#define K_CREATED "pbx:{keys}:created"
#define K_SEQ     "pbx:{keys}:seq"
#define K_KEY     "pbx:{keys}:key:"
#define K_AUDIT   "pbx:audit"

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

/* ---- Keys ---- */

int pbx__store_redis_key_create(struct pbx_store *base, const char *name,
                                const struct pbx_key_policy *policy, char **token,
                                struct pbx_error **err)
{
    struct pbx_redis_store *rs = (struct pbx_redis_store *)base;
    const struct pbx_key_policy *p = pbx__store_policy(policy);
    cleanup_new_key struct pbx_store_new_key key = {0};
    cleanup_reply redisReply *reply = NULL;
    char hex[HASH_HEX + 1];
    char record[sizeof(K_KEY) + HASH_HEX];
    char nums[12][24];
    const char *argv[44];
    int argc = 0;
    int n = 0;
    struct pbx_redis_store_call one = {.what = "create a key",
                                       .id = PBX_REDIS_SC_CREATE,
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
    r = pbx__store_redis_run(rs, &one, &reply, err);
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
static int read_listed(struct pbx_redis_store *rs, struct pbx_redis_call *call,
                       const redisReply *ids, struct pbx_key_info *out, size_t *count, bool *drop,
                       struct pbx_error **err)
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

int pbx__store_redis_key_list(struct pbx_store *base, struct pbx_key_info **keys, size_t *n,
                              struct pbx_error **err)
{
    struct pbx_redis_store *rs = (struct pbx_redis_store *)base;
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

int pbx__store_redis_key_revoke(struct pbx_store *base, const char *name, struct pbx_error **err)
{
    struct pbx_redis_store *rs = (struct pbx_redis_store *)base;
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

        done =
            pbx__store_redis_eval(rs, &call, PBX_REDIS_SC_REVOKE, 1, 2, argv, "revoke a key", err);
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

int pbx__store_redis_key_lookup(struct pbx_store *base, const char *token,
                                struct pbx_key_info *info, struct pbx_error **err)
{
    struct pbx_redis_store *rs = (struct pbx_redis_store *)base;
    unsigned char hash[PBX_STORE_HASH_BYTES];
    unsigned char stored[PBX_STORE_HASH_BYTES];
    char record[sizeof(K_KEY) + HASH_HEX];
    char hex[HASH_HEX + 1];
    const char *argv[2] = {"HGETALL", record};
    const struct pbx_redis_store_call one = {.what = "look up a key",
                                             .may_retry = true,
                                             .id = PBX_REDIS_SC_COUNT,
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
    r = pbx__store_redis_run(rs, &one, &reply, err);
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

/* ---- The audit log ---- */

int pbx__store_redis_audit(struct pbx_store *base, const struct pbx_audit *rec,
                           struct pbx_error **err)
{
    struct pbx_redis_store *rs = (struct pbx_redis_store *)base;
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
    return pbx__store_redis_run(
        rs,
        &(const struct pbx_redis_store_call){.what = "append to the audit log",
                                             .id = PBX_REDIS_SC_COUNT,
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
                bool text = pbx__redis_conn_is_text(v, PBX_REDIS_FIELD_MAX);

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

int pbx__store_redis_audit_tail(struct pbx_store *base, size_t max, char **text,
                                struct pbx_error **err)
{
    struct pbx_redis_store *rs = (struct pbx_redis_store *)base;
    char count[24];
    const char *argv[6] = {"XREVRANGE", K_AUDIT, "+", "-", "COUNT", count};
    const struct pbx_redis_store_call one = {.what = "read the audit log",
                                             .may_retry = true,
                                             .id = PBX_REDIS_SC_COUNT,
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
    r = pbx__store_redis_run(rs, &one, &reply, err);
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
