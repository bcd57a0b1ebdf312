/*
 * The SQLite store's keys: a key's creation, listing, revocation and lookup
 * by its token's hash, and a key's row read back (the schema and the cached
 * statements are store_sqlite.c's).
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>
#include <sqlite3.h>

#include "common/cleanup.h"
#include "common/xalloc.h"
#include "store/store_impl.h"
#include "store/store_sqlite_internal.h"
#include "common/banned.h"

#define HASH_BYTES PBX_STORE_HASH_BYTES

int pbx__store_sqlite_key_create(struct pbx_store *base, const char *name,
                                 const struct pbx_key_policy *policy, char **token,
                                 struct pbx_error **err)
{
    struct pbx_sqlite_store *store = (struct pbx_sqlite_store *)base;
    const struct pbx_key_policy *p = pbx__store_policy(policy);
    cleanup_new_key struct pbx_store_new_key key = {0};
    const char *modules;
    const char *prefix;
    const unsigned char *hash;
    int rc;
    int r;

    *token = NULL;
    r = pbx__store_new_key(name, policy, &key, err);
    if (r < 0)
        return r;
    modules = key.modules;
    prefix = key.prefix;
    hash = key.hash;
    {
        cleanup_unlock pthread_mutex_t *locked = pbx__store_sqlite_lock(store);
        cleanup_reset sqlite3_stmt *st = pbx__store_sqlite_stmt(store, PBX_SQLITE_ST_KEY_INSERT);

        rc = sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
        if (rc == SQLITE_OK)
            rc = sqlite3_bind_text(st, 2, prefix, -1, SQLITE_STATIC);
        if (rc == SQLITE_OK)
            rc = sqlite3_bind_blob(st, 3, hash, PBX_STORE_HASH_BYTES, SQLITE_STATIC);
        if (rc == SQLITE_OK)
            rc = sqlite3_bind_int64(st, 4, (int64_t)time(NULL));
        if (rc == SQLITE_OK)
            rc = sqlite3_bind_int64(st, 5, p->rpm);
        if (rc == SQLITE_OK)
            rc = sqlite3_bind_int64(st, 6, p->rpd);
        if (rc == SQLITE_OK)
            rc = sqlite3_bind_int64(st, 7, p->timeout_ms);
        if (rc == SQLITE_OK)
            rc = sqlite3_bind_int64(st, 8, (int64_t)p->memory_bytes);
        if (rc == SQLITE_OK)
            rc = sqlite3_bind_int(st, 9, p->all_modules);
        if (rc == SQLITE_OK)
            rc = modules != NULL ? sqlite3_bind_text(st, 10, modules, -1, SQLITE_STATIC)
                                 : sqlite3_bind_null(st, 10);
        if (rc == SQLITE_OK)
            rc = sqlite3_bind_int(st, 11, p->network);
        if (rc == SQLITE_OK)
            rc = sqlite3_bind_int(st, 12, p->admin);
        if (rc == SQLITE_OK)
            rc = sqlite3_bind_int64(st, 13, p->sessions);
        if (rc == SQLITE_OK)
            rc = sqlite3_bind_int64(st, 14, p->session_idle_ttl_s);
        if (rc == SQLITE_OK)
            rc = sqlite3_bind_int64(st, 15, p->session_lifetime_s);
        if (rc == SQLITE_OK)
            rc = sqlite3_bind_int64(st, 16, p->concurrency);
        if (rc == SQLITE_OK)
            rc = sqlite3_step(st);
        if (rc == SQLITE_CONSTRAINT_UNIQUE && strstr(sqlite3_errmsg(store->db), "keys.name"))
            return pbx_error_set(err, EEXIST, "key name `%s` (revoked keys keep their names)",
                                 name);
        if (rc != SQLITE_DONE)
            return pbx__store_sqlite_db_error(store, rc, err, "create a key");
    }
    *token = steal_pointer(&key.token);
    return 0;
}

static char *column_strdup(sqlite3_stmt *st, int col)
{
    const unsigned char *s = sqlite3_column_text(st, col);

    return s != NULL ? xstrdup((const char *)s) : NULL;
}

/* A stored concurrency: -1 to the most, or 0 (the default) for anything else. */
static int64_t concurrency_of(int64_t v)
{
    return v >= -1 && v <= PBX_STORE_CONCURRENCY_MAX ? v : 0;
}

/* Fill `info` from a row of PBX_SQLITE_KEY_COLUMNS. */
static void read_key(sqlite3_stmt *st, struct pbx_key_info *info)
{
    *info = (struct pbx_key_info){
        .id = sqlite3_column_int64(st, 0),
        .name = column_strdup(st, 1),
        .prefix = column_strdup(st, 2),
        .created = sqlite3_column_int64(st, 3),
        .revoked = sqlite3_column_int64(st, 4) != 0,
        .policy =
            {
                .rpm = sqlite3_column_int64(st, 5),
                .rpd = sqlite3_column_int64(st, 6),
                .timeout_ms = (uint32_t)sqlite3_column_int64(st, 7),
                .memory_bytes = (uint64_t)sqlite3_column_int64(st, 8),
                .all_modules = sqlite3_column_int(st, 9) != 0,
                .modules = column_strdup(st, 10),
                .network = sqlite3_column_int(st, 11) != 0,
                .admin = sqlite3_column_int(st, 12) != 0,
                .sessions = (uint32_t)pbx__store_count(sqlite3_column_int64(st, 13),
                                                       PBX_CALLER_SESSIONS_MAX),
                .session_idle_ttl_s =
                    (uint32_t)pbx__store_count(sqlite3_column_int64(st, 14), PBX_CALLER_SPAN_MAX_S),
                .session_lifetime_s =
                    (uint32_t)pbx__store_count(sqlite3_column_int64(st, 15), PBX_CALLER_SPAN_MAX_S),
                .concurrency = concurrency_of(sqlite3_column_int64(st, 16)),
            },
    };
    if (info->name == NULL)
        info->name = xstrdup("");
    if (info->prefix == NULL)
        info->prefix = xstrdup("");
}

int pbx__store_sqlite_key_list(struct pbx_store *base, struct pbx_key_info **keys, size_t *n,
                               struct pbx_error **err)
{
    struct pbx_sqlite_store *store = (struct pbx_sqlite_store *)base;
    cleanup_unlock pthread_mutex_t *locked = pbx__store_sqlite_lock(store);
    cleanup_reset sqlite3_stmt *st = pbx__store_sqlite_stmt(store, PBX_SQLITE_ST_KEY_LIST);
    struct pbx_key_info *out = NULL;
    size_t count = 0;
    size_t alloc = 0;
    int rc;

    *keys = NULL;
    *n = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (count == alloc) {
            alloc = alloc ? alloc * 2 : 8;
            out = xrealloc(out, alloc * sizeof(*out));
        }
        read_key(st, &out[count++]);
    }
    if (rc != SQLITE_DONE) {
        pbx_key_info_free_array(out, count);
        return pbx__store_sqlite_db_error(store, rc, err, "list keys");
    }
    *keys = out;
    *n = count;
    return 0;
}

int pbx__store_sqlite_key_revoke(struct pbx_store *base, const char *name, struct pbx_error **err)
{
    struct pbx_sqlite_store *store = (struct pbx_sqlite_store *)base;
    cleanup_unlock pthread_mutex_t *locked = pbx__store_sqlite_lock(store);
    cleanup_reset sqlite3_stmt *st = pbx__store_sqlite_stmt(store, PBX_SQLITE_ST_KEY_REVOKE);
    int rc;

    if (name == NULL)
        return pbx_error_set(err, PBX_E_INVAL, "no key name given");
    rc = sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(st, 2, (int64_t)time(NULL));
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc != SQLITE_DONE)
        return pbx__store_sqlite_db_error(store, rc, err, "revoke a key");
    if (sqlite3_changes(store->db) == 0)
        return pbx_error_set(err, PBX_E_NOTFOUND, "no key named `%s`", name);
    return 0;
}

int pbx__store_sqlite_key_lookup(struct pbx_store *base, const char *token,
                                 struct pbx_key_info *info, struct pbx_error **err)
{
    struct pbx_sqlite_store *store = (struct pbx_sqlite_store *)base;
    unsigned char hash[HASH_BYTES];
    const void *stored;
    int rc;

    if (!pbx__store_token_hash(token, hash))
        return 0;
    {
        cleanup_unlock pthread_mutex_t *locked = pbx__store_sqlite_lock(store);
        cleanup_reset sqlite3_stmt *st = pbx__store_sqlite_stmt(store, PBX_SQLITE_ST_KEY_BY_HASH);

        rc = sqlite3_bind_blob(st, 1, hash, sizeof(hash), SQLITE_STATIC);
        if (rc == SQLITE_OK)
            rc = sqlite3_step(st);
        if (rc == SQLITE_DONE)
            return 0;
        if (rc != SQLITE_ROW)
            return pbx__store_sqlite_db_error(store, rc, err, "look up a key");
        stored = sqlite3_column_blob(st, PBX_SQLITE_KEY_HASH_COLUMN);
        if (sqlite3_column_bytes(st, PBX_SQLITE_KEY_HASH_COLUMN) != HASH_BYTES || stored == NULL ||
            sodium_memcmp(stored, hash, HASH_BYTES) != 0)
            return 0;
        read_key(st, info);
    }
    return 1;
}
