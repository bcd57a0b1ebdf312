/*
 * What the files of the SQLite store share: its struct, its cached
 * statements' ids, the cleanups of its lock and statements, the lock, a
 * cached statement, one SQL text's run and the error report (store_sqlite.c),
 * and the operations of its backend table that store_sqlite_keys.c and
 * store_sqlite_nodes.c define.
 */
#ifndef PBX_STORE_STORE_SQLITE_INTERNAL_H
#define PBX_STORE_STORE_SQLITE_INTERNAL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include <sqlite3.h>

#include "common/error.h"
#include "store/store_impl.h"

/* The statements prepared once at open (store_sqlite.c's stmt_sql) and cached on the store. */
enum pbx_sqlite_stmt {
    PBX_SQLITE_ST_KEY_INSERT,   /* a key's creation */
    PBX_SQLITE_ST_KEY_LIST,     /* every key, in their order */
    PBX_SQLITE_ST_KEY_REVOKE,   /* a key's revocation, by name */
    PBX_SQLITE_ST_KEY_BY_HASH,  /* a live key, by its token's hash */
    PBX_SQLITE_ST_QUOTA_TAKE,   /* a charge of a day's quota */
    PBX_SQLITE_ST_QUOTA_GET,    /* a day's count */
    PBX_SQLITE_ST_ONCE_GET,     /* whether an idempotency key was charged */
    PBX_SQLITE_ST_ONCE_PUT,     /* an idempotency key's mark */
    PBX_SQLITE_ST_AUDIT_INSERT, /* an audit record */
    PBX_SQLITE_ST_AUDIT_TAIL,   /* the newest audit records */
    PBX_SQLITE_ST_COUNT,        /* the number of statements */
};

/*
 * The columns store_sqlite_keys.c's read_key() expects, in order;
 * PBX_SQLITE_ST_KEY_BY_HASH adds the hash.
 */
#define PBX_SQLITE_KEY_COLUMNS                                                              \
    "id, name, prefix, created, revoked, rpm, rpd, timeout_ms, memory_bytes, all_modules, " \
    "modules, network, admin, sessions, session_idle_ttl_s, session_lifetime_s, concurrency"

/* The column of PBX_SQLITE_ST_KEY_BY_HASH's hash, after PBX_SQLITE_KEY_COLUMNS. */
#define PBX_SQLITE_KEY_HASH_COLUMN 17

struct pbx_sqlite_store {
    struct pbx_store base;                    /* first: what store.c dispatches on */
    sqlite3 *db;                              /* the one connection */
    pthread_mutex_t lock;                     /* serialises every use of db and stmts */
    sqlite3_stmt *stmts[PBX_SQLITE_ST_COUNT]; /* prepared once at open, reset after each use */
    char *path;                               /* the database file, for messages (owned) */
};

static inline void cleanup_unlockp(pthread_mutex_t **m)
{
    if (*m != NULL)
        pthread_mutex_unlock(*m);
}
/* The variable only carries the cleanup: `unused` keeps clang quiet about it. */
#define cleanup_unlock __attribute__((cleanup(cleanup_unlockp), unused))

/* Reset a cached statement and drop its bindings at the end of its scope. */
static inline void cleanup_resetp(sqlite3_stmt **st)
{
    if (*st != NULL) {
        sqlite3_reset(*st);
        sqlite3_clear_bindings(*st);
    }
}
#define cleanup_reset __attribute__((cleanup(cleanup_resetp)))

/* Finalize a one-off statement at the end of its scope. */
static inline void cleanup_finalizep(sqlite3_stmt **st)
{
    sqlite3_finalize(*st);
}
#define cleanup_stmt __attribute__((cleanup(cleanup_finalizep)))

/* Take the store's lock; returns it for a cleanup_unlock variable to give back. */
pthread_mutex_t *pbx__store_sqlite_lock(struct pbx_sqlite_store *store);

/* Report the connection's last error as "WHAT: SQLite's message"; returns < 0. */
int pbx__store_sqlite_db_error(struct pbx_sqlite_store *store, int rc, struct pbx_error **err,
                               const char *what);

/* Cached statement `id`, for a cleanup_reset variable; the lock must be held. */
sqlite3_stmt *pbx__store_sqlite_stmt(struct pbx_sqlite_store *store, enum pbx_sqlite_stmt id);

/* Run SQL text `sql` (no rows read back): 0, or < 0 with *err. */
int pbx__store_sqlite_exec(struct pbx_sqlite_store *store, const char *sql, struct pbx_error **err);

/* Keys (store_sqlite_keys.c), as struct pbx_store_backend's. */
int pbx__store_sqlite_key_create(struct pbx_store *base, const char *name,
                                 const struct pbx_key_policy *policy, char **token,
                                 struct pbx_error **err);
int pbx__store_sqlite_key_list(struct pbx_store *base, struct pbx_key_info **keys, size_t *n,
                               struct pbx_error **err);
int pbx__store_sqlite_key_revoke(struct pbx_store *base, const char *name, struct pbx_error **err);
int pbx__store_sqlite_key_lookup(struct pbx_store *base, const char *token,
                                 struct pbx_key_info *info, struct pbx_error **err);

/* Node ids' claims (store_sqlite_nodes.c), as struct pbx_store_backend's. */
int pbx__store_sqlite_node_claim(struct pbx_store *base, const char *node, const char *token,
                                 int64_t ttl_ms, struct pbx_store_node_holder *holder,
                                 struct pbx_error **err);
int pbx__store_sqlite_node_release(struct pbx_store *base, const char *node, const char *token,
                                   struct pbx_error **err);

#endif
