/*
 * The store on SQLite: one database file in WAL mode holding API keys, daily
 * quotas and the audit log.
 *
 * One connection per struct pbx_store, opened SQLITE_OPEN_FULLMUTEX and also
 * guarded by our own mutex: the prepared statements are cached on the handle,
 * and a statement's bindings, steps and columns must not interleave between
 * threads.  Several processes (`pybox serve` and `pybox keys`) may open the
 * same file: WAL lets readers run beside the writer, and busy_timeout makes a
 * writer wait for another instead of failing.
 *
 * Security choices:
 * - Only the BLAKE2b-256 hash of a token is stored (store_common.c), so a
 *   copy of the database does not let anyone authenticate (GitHub and Stripe
 *   store API tokens hashed the same way).
 * - A lookup finds the row by hash through the index, then compares the hashes
 *   again with sodium_memcmp(), in constant time.
 * - The database file is created 0600 and its directory 0700: SQLite gives the
 *   -wal and -shm files the mode of the database file.
 * - Every value reaches SQL as a bound parameter, never through the SQL text.
 * - SQLITE_DBCONFIG_DEFENSIVE and trusted_schema=OFF: a tampered database file
 *   cannot run SQL functions with side effects from its schema.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <sodium.h>
#include <sqlite3.h>

#include "common/cleanup.h"
#include "common/clock.h"
#include "common/xalloc.h"
#include "store/store_impl.h"
#include "common/banned.h"

/* The schema this code reads and writes; older ones are migrated, newer ones refused. */
#define SCHEMA_VERSION 3

/* How long a writer waits for another process's write transaction. */
#define BUSY_TIMEOUT_MS 5000

#define HASH_BYTES PBX_STORE_HASH_BYTES

enum stmt_id {
    ST_KEY_INSERT,
    ST_KEY_LIST,
    ST_KEY_REVOKE,
    ST_KEY_BY_HASH,
    ST_QUOTA_TAKE,
    ST_QUOTA_GET,
    ST_ONCE_GET,
    ST_ONCE_PUT,
    ST_AUDIT_INSERT,
    ST_AUDIT_TAIL,
    ST_COUNT,
};

/* The columns read_key() expects, in order; ST_KEY_BY_HASH adds the hash. */
#define KEY_COLUMNS                                                                         \
    "id, name, prefix, created, revoked, rpm, rpd, timeout_ms, memory_bytes, all_modules, " \
    "modules, network, admin, sessions, session_idle_ttl_s, session_lifetime_s, concurrency"

/* The column of ST_KEY_BY_HASH's hash, after KEY_COLUMNS. */
#define KEY_HASH_COLUMN 17

static const char *const stmt_sql[ST_COUNT] = {
    [ST_KEY_INSERT] = "INSERT INTO keys (name, prefix, hash, created, revoked, rpm, rpd, "
                      "timeout_ms, memory_bytes, all_modules, modules, network, admin, sessions, "
                      "session_idle_ttl_s, session_lifetime_s, concurrency) "
                      "VALUES (?1, ?2, ?3, ?4, 0, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, "
                      "?15, ?16)",
    [ST_KEY_LIST] = "SELECT " KEY_COLUMNS " FROM keys ORDER BY id",
    /* A second revoke keeps the first revocation time. */
    [ST_KEY_REVOKE] = "UPDATE keys SET revoked = CASE WHEN revoked = 0 THEN ?2 ELSE revoked END "
                      "WHERE name = ?1",
    [ST_KEY_BY_HASH] = "SELECT " KEY_COLUMNS ", hash FROM keys WHERE hash = ?1 AND revoked = 0",
    /*
     * One statement, so one atomic step under SQLite's write lock whatever the
     * number of threads and processes: the first request of the day inserts
     * the row, later ones add one only while the count is below the limit
     * (?3 >= 1).  No row comes back when the limit is reached.
     */
    [ST_QUOTA_TAKE] = "INSERT INTO quota (client, day, count) VALUES (?1, ?2, 1) "
                      "ON CONFLICT (client, day) DO UPDATE SET count = quota.count + 1 "
                      "WHERE quota.count < ?3 RETURNING count",
    [ST_QUOTA_GET] = "SELECT count FROM quota WHERE client = ?1 AND day = ?2",
    [ST_ONCE_GET] = "SELECT 1 FROM quota_once WHERE client = ?1 AND day = ?2 AND once = ?3",
    [ST_ONCE_PUT] = "INSERT OR IGNORE INTO quota_once (client, day, once) VALUES (?1, ?2, ?3)",
    [ST_AUDIT_INSERT] = "INSERT INTO audit (time_ms, client, key_name, route, code_sha256, "
                        "status, duration_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    [ST_AUDIT_TAIL] = "SELECT time_ms, client, key_name, route, code_sha256, status, duration_ms "
                      "FROM (SELECT * FROM audit ORDER BY id DESC LIMIT ?1) ORDER BY id",
};

/*
 * Version 1 of the schema, created in one transaction on first open; the
 * migrations below then bring it to SCHEMA_VERSION, so a new store and an
 * upgraded one are made by the same statements.
 */
static const char schema_v1[] =
    "CREATE TABLE keys ("
    "  id INTEGER PRIMARY KEY,"
    "  name TEXT NOT NULL UNIQUE,"
    "  prefix TEXT NOT NULL,"
    "  hash BLOB NOT NULL UNIQUE,"
    "  created INTEGER NOT NULL,"
    "  revoked INTEGER NOT NULL DEFAULT 0," /* Unix time of the revocation, 0 = live */
    "  rpm INTEGER NOT NULL DEFAULT 0,"
    "  rpd INTEGER NOT NULL DEFAULT 0,"
    "  timeout_ms INTEGER NOT NULL DEFAULT 0,"
    "  memory_bytes INTEGER NOT NULL DEFAULT 0,"
    "  all_modules INTEGER NOT NULL DEFAULT 0,"
    "  modules TEXT,"
    "  network INTEGER NOT NULL DEFAULT 0,"
    "  admin INTEGER NOT NULL DEFAULT 0"
    ");"
    "CREATE TABLE quota ("
    "  client TEXT NOT NULL,"
    "  day TEXT NOT NULL,"
    "  count INTEGER NOT NULL,"
    "  PRIMARY KEY (client, day)"
    ") WITHOUT ROWID;"
    "CREATE TABLE audit ("
    "  id INTEGER PRIMARY KEY,"
    "  time_ms INTEGER NOT NULL,"
    "  client TEXT NOT NULL,"
    "  key_name TEXT,"
    "  route TEXT NOT NULL,"
    "  code_sha256 TEXT NOT NULL,"
    "  status TEXT NOT NULL,"
    "  duration_ms REAL NOT NULL"
    ");"
    "CREATE INDEX audit_time ON audit (time_ms);";

/*
 * The migrations: migrations[N - 1] takes version N to N + 1, and records it
 * in schema_version, inside the same transaction as the schema's creation.
 * A key's columns added later default to 0, "the server's setting", so the
 * keys of an older store keep the policy they had.
 */
static const char *const migrations[SCHEMA_VERSION - 1] = {
    /* 2: a key's sessions, open at once, and their longest idle time and lifetime. */
    "ALTER TABLE keys ADD COLUMN sessions INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE keys ADD COLUMN session_idle_ttl_s INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE keys ADD COLUMN session_lifetime_s INTEGER NOT NULL DEFAULT 0;"
    "INSERT INTO schema_version (version) VALUES (2);",
    /* 3: a key's executions at once, every node together. */
    "ALTER TABLE keys ADD COLUMN concurrency INTEGER NOT NULL DEFAULT 0;"
    "INSERT INTO schema_version (version) VALUES (3);",
};

struct sqlite_store {
    struct pbx_store base;         /* first: what store.c dispatches on */
    sqlite3 *db;                   /* the one connection */
    pthread_mutex_t lock;          /* serialises every use of db and stmts */
    sqlite3_stmt *stmts[ST_COUNT]; /* prepared once at open, reset after each use */
    char *path;                    /* the database file, for messages (owned) */
};

static void unlockp(pthread_mutex_t **m)
{
    if (*m != NULL)
        pthread_mutex_unlock(*m);
}
/* The variable only carries the cleanup: `unused` keeps clang quiet about it. */
#define cleanup_unlock __attribute__((cleanup(unlockp), unused))

/* Reset a cached statement and drop its bindings at the end of its scope. */
static void resetp(sqlite3_stmt **st)
{
    if (*st != NULL) {
        sqlite3_reset(*st);
        sqlite3_clear_bindings(*st);
    }
}
#define cleanup_reset __attribute__((cleanup(resetp)))

/* Finalize a one-off statement at the end of its scope. */
static void finalizep(sqlite3_stmt **st)
{
    sqlite3_finalize(*st);
}
#define cleanup_stmt __attribute__((cleanup(finalizep)))

static pthread_mutex_t *lock(struct sqlite_store *store)
{
    PBX_ASSERT(store != NULL);
    pthread_mutex_lock(&store->lock);
    return &store->lock;
}

/* The errno-style code for a SQLite result code. */
static int code_of(sqlite3 *db, int rc)
{
    int sys = db != NULL ? sqlite3_system_errno(db) : 0;

    switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return EBUSY;
    case SQLITE_FULL:
        return ENOSPC;
    case SQLITE_READONLY:
        return EROFS;
    case SQLITE_PERM:
    case SQLITE_AUTH:
        return EACCES;
    case SQLITE_NOMEM:
        return PBX_E_NOMEM;
    case SQLITE_TOOBIG:
        return PBX_E_TOO_LARGE;
    case SQLITE_NOTADB:
        return PBX_E_INVAL;
    case SQLITE_CANTOPEN:
        return sys > 0 ? sys : ENOENT;
    case SQLITE_IOERR:
        return sys > 0 ? sys : EIO;
    default:
        return EIO;
    }
}

/* Report the connection's last error as "WHAT: SQLite's message". */
static int db_error(struct sqlite_store *store, int rc, struct pbx_error **err, const char *what)
{
    return pbx_error_set(err, code_of(store->db, rc), "store `%s`: %s: %s", store->path, what,
                         store->db != NULL ? sqlite3_errmsg(store->db) : sqlite3_errstr(rc));
}

static sqlite3_stmt *stmt(struct sqlite_store *store, enum stmt_id id)
{
    return store->stmts[id];
}

static int exec(struct sqlite_store *store, const char *sql, struct pbx_error **err)
{
    int rc = sqlite3_exec(store->db, sql, NULL, NULL, NULL);

    if (rc != SQLITE_OK)
        return db_error(store, rc, err, sql);
    return 0;
}

/* mkdir -p of the directory holding `path`, each new directory 0700. */
static int make_parent(const char *path, struct pbx_error **err)
{
    cleanup_free char *dir = xstrdup(path);
    char *slash = strrchr(dir, '/');

    if (slash == NULL || slash == dir)
        return 0;
    *slash = '\0';
    for (char *p = dir + 1; *p != '\0'; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(dir, 0700) < 0 && errno != EEXIST)
            return pbx_error_set(err, errno, "store: create directory `%s`", dir);
        *p = '/';
    }
    if (mkdir(dir, 0700) < 0 && errno != EEXIST)
        return pbx_error_set(err, errno, "store: create directory `%s`", dir);
    return 0;
}

/* Create the database file 0600 before SQLite does (it would use 0644 less the umask). */
static int create_file(const char *path, struct pbx_error **err)
{
    cleanup_close int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY, 0600);
    struct stat st;

    if (fd < 0)
        return pbx_error_set(err, errno, "store: open `%s`", path);
    if (fstat(fd, &st) < 0)
        return pbx_error_set(err, errno, "store: stat `%s`", path);
    if (!S_ISREG(st.st_mode))
        return pbx_error_set(err, PBX_E_INVAL, "store: `%s` is not a regular file", path);
    return 0;
}

static int schema_version(struct sqlite_store *store, int64_t *version, struct pbx_error **err)
{
    cleanup_stmt sqlite3_stmt *st = NULL;
    int rc;

    rc = sqlite3_prepare_v2(store->db, "SELECT max(version) FROM schema_version", -1, &st, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc != SQLITE_ROW)
        return db_error(store, rc, err, "read the schema version");
    *version = sqlite3_column_int64(st, 0); /* 0 for NULL: an empty table */
    return 0;
}

/* The body of init_schema(), inside its transaction. */
static int init_schema_locked(struct sqlite_store *store, struct pbx_error **err)
{
    int64_t version = 0;
    int r;

    r = exec(store, "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)", err);
    if (r < 0)
        return r;
    r = schema_version(store, &version, err);
    if (r < 0)
        return r;
    if (version > SCHEMA_VERSION)
        return pbx_error_set(err, PBX_E_UNSUPPORTED,
                             "store `%s` has schema version %" PRId64
                             ", newer than this pybox understands (%d): upgrade pybox",
                             store->path, version, SCHEMA_VERSION);
    if (version < 0)
        return pbx_error_set(err, PBX_E_INVAL,
                             "store `%s` has schema version %" PRId64 ", which no pybox writes",
                             store->path, version);
    if (version == 0) {
        r = exec(store, schema_v1, err);
        if (r == 0)
            r = exec(store, "INSERT INTO schema_version (version) VALUES (1)", err);
        if (r < 0)
            return r;
        version = 1;
    }
    for (; version < SCHEMA_VERSION; version++) {
        int rc = sqlite3_exec(store->db, migrations[version - 1], NULL, NULL, NULL);
        char what[64];

        if (rc != SQLITE_OK) {
            snprintf(what, sizeof(what), "upgrade the schema from version %" PRId64, version);
            return db_error(store, rc, err, what);
        }
    }
    /*
     * The idempotency keys charged (pbx_store_quota_take_once()): a table
     * an older pybox never reads, so it is added without a version of its
     * own.
     */
    return exec(store,
                "CREATE TABLE IF NOT EXISTS quota_once ("
                "  client TEXT NOT NULL,"
                "  day TEXT NOT NULL,"
                "  once TEXT NOT NULL,"
                "  PRIMARY KEY (client, day, once)"
                ") WITHOUT ROWID",
                err);
}

/*
 * Create or migrate the schema.  BEGIN IMMEDIATE takes the write lock first,
 * so two processes opening a new file at once do not both create it.
 */
static int init_schema(struct sqlite_store *store, struct pbx_error **err)
{
    int r;

    r = exec(store, "BEGIN IMMEDIATE", err);
    if (r < 0)
        return r;
    r = init_schema_locked(store, err);
    if (r < 0) {
        sqlite3_exec(store->db, "ROLLBACK", NULL, NULL, NULL);
        return r;
    }
    return exec(store, "COMMIT", err);
}

static int set_wal(struct sqlite_store *store, bool memory, struct pbx_error **err)
{
    cleanup_stmt sqlite3_stmt *st = NULL;
    const char *mode;
    int rc;

    rc = sqlite3_prepare_v2(store->db, "PRAGMA journal_mode = WAL", -1, &st, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc != SQLITE_ROW)
        return db_error(store, rc, err, "switch to WAL mode");
    mode = (const char *)sqlite3_column_text(st, 0);
    if (mode == NULL || (strcmp(mode, "wal") != 0 && !(memory && strcmp(mode, "memory") == 0)))
        return pbx_error_set(err, PBX_E_UNSUPPORTED,
                             "store `%s`: SQLite could not switch to WAL mode (journal mode is "
                             "`%s`)",
                             store->path, mode ? mode : "?");
    return 0;
}

/* Everything after the handle exists; on failure the caller closes it. */
static int setup(struct sqlite_store *store, bool memory, bool create, struct pbx_error **err)
{
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_FULLMUTEX | SQLITE_OPEN_NOFOLLOW;
    struct stat st;
    int rc;
    int r;

    if (memory) {
        flags |= SQLITE_OPEN_CREATE;
    } else if (create) {
        r = make_parent(store->path, err);
        if (r < 0)
            return r;
        r = create_file(store->path, err);
        if (r < 0)
            return r;
    } else if (lstat(store->path, &st) < 0) {
        if (errno == ENOENT)
            return pbx_error_set(err, PBX_E_NOTFOUND, "store `%s` does not exist", store->path);
        return pbx_error_set(err, errno, "store: stat `%s`", store->path);
    }
    rc = sqlite3_open_v2(store->path, &store->db, flags, NULL);
    if (rc != SQLITE_OK)
        return db_error(store, rc, err, "open");
    sqlite3_extended_result_codes(store->db, 1);
    rc = sqlite3_busy_timeout(store->db, BUSY_TIMEOUT_MS);
    if (rc == SQLITE_OK)
        rc = sqlite3_db_config(store->db, SQLITE_DBCONFIG_DEFENSIVE, 1, NULL);
    if (rc != SQLITE_OK)
        return db_error(store, rc, err, "configure");
    r = exec(store, "PRAGMA trusted_schema = OFF", err);
    if (r == 0)
        r = set_wal(store, memory, err);
    if (r == 0)
        r = exec(store, "PRAGMA synchronous = NORMAL", err);
    if (r == 0)
        r = init_schema(store, err);
    if (r < 0)
        return r;
    for (int i = 0; i < ST_COUNT; i++) {
        rc = sqlite3_prepare_v3(store->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT,
                                &store->stmts[i], NULL);
        if (rc != SQLITE_OK)
            return db_error(store, rc, err, "prepare a statement");
    }
    return 0;
}

static void sq_close(struct pbx_store *base);

/* The backend's open: `uri` begins with "sqlite:" (store.c saw to it). */
static int sq_open(const char *uri, bool create, struct pbx_store **out, struct pbx_error **err)
{
    const char *path;
    struct sqlite_store *store;
    bool memory;
    int r;

    *out = NULL;
    PBX_ASSERT(strncmp(uri, "sqlite:", 7) == 0);
    path = uri + 7;
    /* sqlite:///abs/path, the URL spelling, means /abs/path. */
    if (strncmp(path, "//", 2) == 0) {
        if (path[2] != '/')
            return pbx_error_set(err, PBX_E_INVAL,
                                 "store `%s`: a host is not allowed; use sqlite:PATH", uri);
        path += 2;
    }
    if (*path == '\0')
        return pbx_error_set(err, PBX_E_INVAL,
                             "store `%s` has an empty path; use sqlite:PATH, e.g. "
                             "sqlite:/var/lib/pybox/pybox.db",
                             uri);
    /* The handle is shared between threads: SQLite must be built thread-safe (Debian's is). */
    if (!sqlite3_threadsafe())
        return pbx_error_set(err, PBX_E_UNSUPPORTED,
                             "store: this SQLite library was built without thread safety");
    /* sodium_init() is thread-safe and idempotent. */
    if (sodium_init() < 0)
        return pbx_error_set(err, PBX_E_UNSUPPORTED, "store: libsodium could not be initialised");

    memory = strcmp(path, ":memory:") == 0;
    store = xcalloc(1, sizeof(*store));
    store->base.be = &pbx__store_sqlite;
    /* A path is a path: builds with SQLITE_USE_URI would read "file:..." as a URI. */
    store->path = strncmp(path, "file:", 5) == 0 ? xasprintf("./%s", path) : xstrdup(path);
    pthread_mutex_init(&store->lock, NULL);
    r = setup(store, memory, create, err);
    if (r < 0) {
        sq_close(&store->base);
        return r;
    }
    *out = &store->base;
    return 0;
}

static void sq_close(struct pbx_store *base)
{
    struct sqlite_store *store = (struct sqlite_store *)base;

    for (int i = 0; i < ST_COUNT; i++)
        sqlite3_finalize(store->stmts[i]);
    /* Closing the last connection checkpoints the WAL and removes -wal and -shm. */
    sqlite3_close(store->db);
    pthread_mutex_destroy(&store->lock);
    free(store->path);
    free(store);
}

static int sq_key_create(struct pbx_store *base, const char *name,
                         const struct pbx_key_policy *policy, char **token, struct pbx_error **err)
{
    struct sqlite_store *store = (struct sqlite_store *)base;
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
        cleanup_unlock pthread_mutex_t *locked = lock(store);
        cleanup_reset sqlite3_stmt *st = stmt(store, ST_KEY_INSERT);

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
            return db_error(store, rc, err, "create a key");
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

/* Fill `info` from a row of KEY_COLUMNS. */
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

static int sq_key_list(struct pbx_store *base, struct pbx_key_info **keys, size_t *n,
                       struct pbx_error **err)
{
    struct sqlite_store *store = (struct sqlite_store *)base;
    cleanup_unlock pthread_mutex_t *locked = lock(store);
    cleanup_reset sqlite3_stmt *st = stmt(store, ST_KEY_LIST);
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
        return db_error(store, rc, err, "list keys");
    }
    *keys = out;
    *n = count;
    return 0;
}

static int sq_key_revoke(struct pbx_store *base, const char *name, struct pbx_error **err)
{
    struct sqlite_store *store = (struct sqlite_store *)base;
    cleanup_unlock pthread_mutex_t *locked = lock(store);
    cleanup_reset sqlite3_stmt *st = stmt(store, ST_KEY_REVOKE);
    int rc;

    if (name == NULL)
        return pbx_error_set(err, PBX_E_INVAL, "no key name given");
    rc = sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(st, 2, (int64_t)time(NULL));
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc != SQLITE_DONE)
        return db_error(store, rc, err, "revoke a key");
    if (sqlite3_changes(store->db) == 0)
        return pbx_error_set(err, PBX_E_NOTFOUND, "no key named `%s`", name);
    return 0;
}

static int sq_key_lookup(struct pbx_store *base, const char *token, struct pbx_key_info *info,
                         struct pbx_error **err)
{
    struct sqlite_store *store = (struct sqlite_store *)base;
    unsigned char hash[HASH_BYTES];
    const void *stored;
    int rc;

    if (!pbx__store_token_hash(token, hash))
        return 0;
    {
        cleanup_unlock pthread_mutex_t *locked = lock(store);
        cleanup_reset sqlite3_stmt *st = stmt(store, ST_KEY_BY_HASH);

        rc = sqlite3_bind_blob(st, 1, hash, sizeof(hash), SQLITE_STATIC);
        if (rc == SQLITE_OK)
            rc = sqlite3_step(st);
        if (rc == SQLITE_DONE)
            return 0;
        if (rc != SQLITE_ROW)
            return db_error(store, rc, err, "look up a key");
        stored = sqlite3_column_blob(st, KEY_HASH_COLUMN);
        if (sqlite3_column_bytes(st, KEY_HASH_COLUMN) != HASH_BYTES || stored == NULL ||
            sodium_memcmp(stored, hash, HASH_BYTES) != 0)
            return 0;
        read_key(st, info);
    }
    return 1;
}

/* quota_get with the lock held. */
static int quota_get_locked(struct sqlite_store *store, const char *client, const char *day,
                            int64_t *count, struct pbx_error **err)
{
    cleanup_reset sqlite3_stmt *st = stmt(store, ST_QUOTA_GET);
    int rc;

    rc = sqlite3_bind_text(st, 1, client, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(st, 2, day, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc == SQLITE_DONE) {
        *count = 0;
        return 0;
    }
    if (rc != SQLITE_ROW)
        return db_error(store, rc, err, "read a quota");
    *count = sqlite3_column_int64(st, 0);
    return 0;
}

/* Run statement `id` on client, day and `once`: SQLITE_ROW, SQLITE_DONE or an error. */
static int once_step(struct sqlite_store *store, enum stmt_id id, const char *client,
                     const char *day, const char *once)
{
    cleanup_reset sqlite3_stmt *st = stmt(store, id);
    int rc;

    rc = sqlite3_bind_text(st, 1, client, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(st, 2, day, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(st, 3, once, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    return rc;
}

static int quota_take_locked(struct sqlite_store *store, const char *client, const char *day,
                             int64_t limit, int64_t *count, struct pbx_error **err);

/*
 * quota_take_locked() at most once for `once`: the mark and the charge in
 * one write transaction, so two processes charging the same key at once
 * count it once.
 */
static int quota_take_once_locked(struct sqlite_store *store, const char *client, const char *day,
                                  int64_t limit, const char *once, int64_t *count,
                                  struct pbx_error **err)
{
    int rc;
    int r;

    r = exec(store, "BEGIN IMMEDIATE", err);
    if (r < 0)
        return r;
    rc = once_step(store, ST_ONCE_GET, client, day, once);
    if (rc == SQLITE_ROW) {
        r = quota_get_locked(store, client, day, count, err);
        if (r == 0)
            r = 1;
    } else if (rc != SQLITE_DONE) {
        r = db_error(store, rc, err, "charge a quota");
    } else {
        r = quota_take_locked(store, client, day, limit, count, err);
        if (r == 1) {
            rc = once_step(store, ST_ONCE_PUT, client, day, once);
            if (rc != SQLITE_DONE)
                r = db_error(store, rc, err, "charge a quota");
        }
    }
    if (r < 0) {
        sqlite3_exec(store->db, "ROLLBACK", NULL, NULL, NULL);
        return r;
    }
    {
        int c = exec(store, "COMMIT", err);

        if (c < 0) {
            sqlite3_exec(store->db, "ROLLBACK", NULL, NULL, NULL);
            return c;
        }
    }
    return r;
}

static int sq_quota_take(struct pbx_store *base, const char *client, const char *day, int64_t limit,
                         const char *once, int64_t *count, struct pbx_error **err)
{
    struct sqlite_store *store = (struct sqlite_store *)base;
    cleanup_unlock pthread_mutex_t *locked = NULL;

    locked = lock(store);
    if (once != NULL)
        return quota_take_once_locked(store, client, day, limit, once, count, err);
    return quota_take_locked(store, client, day, limit, count, err);
}

/* The charge of sq_quota_take(), with the lock held. */
static int quota_take_locked(struct sqlite_store *store, const char *client, const char *day,
                             int64_t limit, int64_t *count, struct pbx_error **err)
{
    int rc;

    /* A limit of 0 refuses everything; the statement below needs a limit >= 1. */
    if (limit == 0)
        return quota_get_locked(store, client, day, count, err);
    {
        cleanup_reset sqlite3_stmt *st = stmt(store, ST_QUOTA_TAKE);

        rc = sqlite3_bind_text(st, 1, client, -1, SQLITE_STATIC);
        if (rc == SQLITE_OK)
            rc = sqlite3_bind_text(st, 2, day, -1, SQLITE_STATIC);
        if (rc == SQLITE_OK)
            rc = sqlite3_bind_int64(st, 3, limit < 0 ? INT64_MAX : limit);
        if (rc == SQLITE_OK)
            rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            *count = sqlite3_column_int64(st, 0);
            /* Run to the end, so the write is known to be committed. */
            rc = sqlite3_step(st);
            if (rc != SQLITE_DONE)
                return db_error(store, rc, err, "charge a quota");
            return 1;
        }
        if (rc != SQLITE_DONE)
            return db_error(store, rc, err, "charge a quota");
    }
    return quota_get_locked(store, client, day, count, err);
}

static int sq_quota_get(struct pbx_store *base, const char *client, const char *day, int64_t *count,
                        struct pbx_error **err)
{
    struct sqlite_store *store = (struct sqlite_store *)base;
    cleanup_unlock pthread_mutex_t *locked = NULL;

    locked = lock(store);
    return quota_get_locked(store, client, day, count, err);
}

static int sq_audit(struct pbx_store *base, const struct pbx_audit *rec, struct pbx_error **err)
{
    struct sqlite_store *store = (struct sqlite_store *)base;
    cleanup_unlock pthread_mutex_t *locked = NULL;
    cleanup_reset sqlite3_stmt *st = NULL;
    int rc;

    if (pbx__store_check_audit(rec, err) < 0)
        return -PBX_E_INVAL;
    locked = lock(store);
    st = stmt(store, ST_AUDIT_INSERT);
    rc = sqlite3_bind_int64(st, 1, rec->time_ms);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(st, 2, rec->client, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = rec->key_name != NULL ? sqlite3_bind_text(st, 3, rec->key_name, -1, SQLITE_STATIC)
                                   : sqlite3_bind_null(st, 3);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(st, 4, rec->route, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(st, 5, rec->code_sha256, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(st, 6, rec->status, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_double(st, 7, rec->duration_ms);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc != SQLITE_DONE)
        return db_error(store, rc, err, "append to the audit log");
    return 0;
}

/* One audit row of the statement, appended to *out as a JSON line. */
static void audit_append(char **out, size_t *len, sqlite3_stmt *st)
{
    struct pbx_store_audit_row row = {
        .time_ms = sqlite3_column_int64(st, 0),
        .duration_ms = sqlite3_column_double(st, 6),
    };

    for (int i = 0; i < PBX_STORE_AUDIT_TEXTS; i++) {
        row.text[i] = (const char *)sqlite3_column_text(st, 1 + i);
        row.len[i] = row.text[i] != NULL ? strlen(row.text[i]) : 0;
    }
    pbx__store_audit_append(out, len, &row);
}

static int sq_audit_tail(struct pbx_store *base, size_t max, char **text, struct pbx_error **err)
{
    struct sqlite_store *store = (struct sqlite_store *)base;
    cleanup_unlock pthread_mutex_t *locked = lock(store);
    cleanup_reset sqlite3_stmt *st = stmt(store, ST_AUDIT_TAIL);
    cleanup_free char *out = xstrdup("");
    size_t len = 0;
    int rc;

    *text = NULL;
    rc = sqlite3_bind_int64(st, 1, max > INT64_MAX ? INT64_MAX : (int64_t)max);
    while (rc == SQLITE_OK || rc == SQLITE_ROW) {
        rc = sqlite3_step(st);
        if (rc != SQLITE_ROW)
            break;
        audit_append(&out, &len, st);
    }
    if (rc != SQLITE_DONE)
        return db_error(store, rc, err, "read the audit log");
    *text = steal_pointer(&out);
    return 0;
}

static int sq_ping(struct pbx_store *base, struct pbx_error **err)
{
    struct sqlite_store *store = (struct sqlite_store *)base;
    cleanup_unlock pthread_mutex_t *locked = lock(store);

    return exec(store, "SELECT 1 FROM schema_version LIMIT 1", err);
}

/* ---- Node ids' claims ---- */

/*
 * The claims on node ids (pbx_store_node_claim()): a table an older pybox
 * never reads, so, like quota_once, it has no schema version of its own (a
 * file holding it still opens in an older pybox), and it is made by the
 * first claim rather than at open.  The clock is this machine's wall clock:
 * only processes of one machine share a SQLite file.
 */
static const char nodes_table[] = "CREATE TABLE IF NOT EXISTS nodes ("
                                  "  node TEXT PRIMARY KEY,"
                                  "  token TEXT NOT NULL,"
                                  "  pid INTEGER NOT NULL,"
                                  "  host TEXT NOT NULL,"
                                  "  renewed_ms INTEGER NOT NULL,"
                                  "  expires_ms INTEGER NOT NULL"
                                  ") WITHOUT ROWID";

/*
 * Claim or renew: one statement, which takes the row when it is this
 * token's or its claim has lapsed (?5 is now) and returns a row when it did.
 */
static const char node_claim_sql[] =
    "INSERT INTO nodes (node, token, pid, host, renewed_ms, expires_ms) "
    "VALUES (?1, ?2, ?3, ?4, ?5, ?5 + ?6) "
    "ON CONFLICT (node) DO UPDATE SET token = excluded.token, pid = excluded.pid, "
    "host = excluded.host, renewed_ms = excluded.renewed_ms, expires_ms = excluded.expires_ms "
    "WHERE nodes.token = excluded.token OR nodes.expires_ms <= excluded.renewed_ms "
    "RETURNING pid, host, renewed_ms, expires_ms";

static const char node_get_sql[] =
    "SELECT pid, host, renewed_ms, expires_ms FROM nodes WHERE node = ?1";

/* This process's pid and host name, as a claim records them. */
static void node_self(int64_t *pid, char host[PBX_STORE_NODE_HOST_MAX + 1])
{
    *pid = (int64_t)getpid();
    if (gethostname(host, PBX_STORE_NODE_HOST_MAX + 1) < 0)
        host[0] = '\0';
    host[PBX_STORE_NODE_HOST_MAX] = '\0';
}

/* A row of node_claim_sql's RETURNING or node_get_sql, into *holder. */
static void node_read(sqlite3_stmt *st, int64_t now, struct pbx_store_node_holder *holder)
{
    const unsigned char *host = sqlite3_column_text(st, 1);

    holder->pid = sqlite3_column_int64(st, 0);
    snprintf(holder->host, sizeof(holder->host), "%s", host != NULL ? (const char *)host : "");
    holder->renewed_ms = sqlite3_column_int64(st, 2);
    holder->age_ms = now - holder->renewed_ms;
    holder->left_ms = sqlite3_column_int64(st, 3) - now;
}

/* The claim's statements, inside the transaction of sq_node_claim(). */
static int node_claim_locked(struct sqlite_store *store, const char *node, const char *token,
                             int64_t ttl_ms, struct pbx_store_node_holder *holder,
                             struct pbx_error **err)
{
    cleanup_stmt sqlite3_stmt *st = NULL;
    cleanup_stmt sqlite3_stmt *get = NULL;
    int64_t now = (int64_t)pbx_clock_ms(CLOCK_REALTIME);
    char host[PBX_STORE_NODE_HOST_MAX + 1];
    int64_t pid;
    int rc;
    int r;

    r = exec(store, nodes_table, err);
    if (r < 0)
        return r;
    node_self(&pid, host);
    rc = sqlite3_prepare_v2(store->db, node_claim_sql, -1, &st, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(st, 1, node, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(st, 2, token, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(st, 3, pid);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(st, 4, host, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(st, 5, now);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(st, 6, ttl_ms);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        node_read(st, now, holder);
        rc = sqlite3_step(st);
        if (rc != SQLITE_DONE)
            return db_error(store, rc, err, "claim a node id");
        return 1;
    }
    if (rc != SQLITE_DONE)
        return db_error(store, rc, err, "claim a node id");
    /* Held by another token: who, for the caller's message. */
    rc = sqlite3_prepare_v2(store->db, node_get_sql, -1, &get, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(get, 1, node, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(get);
    if (rc != SQLITE_ROW)
        return db_error(store, rc, err, "read a node id's claim");
    node_read(get, now, holder);
    return 0;
}

static int sq_node_claim(struct pbx_store *base, const char *node, const char *token,
                         int64_t ttl_ms, struct pbx_store_node_holder *holder,
                         struct pbx_error **err)
{
    struct sqlite_store *store = (struct sqlite_store *)base;
    cleanup_unlock pthread_mutex_t *locked = lock(store);
    int r;

    /* One write transaction: the claim and the read of the holder see one state. */
    r = exec(store, "BEGIN IMMEDIATE", err);
    if (r < 0)
        return r;
    r = node_claim_locked(store, node, token, ttl_ms, holder, err);
    if (r >= 0) {
        int c = exec(store, "COMMIT", err);

        if (c < 0)
            r = c;
    }
    if (r < 0)
        sqlite3_exec(store->db, "ROLLBACK", NULL, NULL, NULL);
    return r;
}

static int sq_node_release(struct pbx_store *base, const char *node, const char *token,
                           struct pbx_error **err)
{
    struct sqlite_store *store = (struct sqlite_store *)base;
    cleanup_unlock pthread_mutex_t *locked = lock(store);
    cleanup_stmt sqlite3_stmt *st = NULL;
    int rc;
    int r;

    r = exec(store, nodes_table, err);
    if (r < 0)
        return r;
    rc = sqlite3_prepare_v2(store->db, "DELETE FROM nodes WHERE node = ?1 AND token = ?2", -1, &st,
                            NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(st, 1, node, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(st, 2, token, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc != SQLITE_DONE)
        return db_error(store, rc, err, "release a node id");
    return sqlite3_changes(store->db) > 0 ? 1 : 0;
}

const struct pbx_store_backend pbx__store_sqlite = {
    .name = "sqlite",
    .open = sq_open,
    .close = sq_close,
    .key_create = sq_key_create,
    .key_list = sq_key_list,
    .key_revoke = sq_key_revoke,
    .key_lookup = sq_key_lookup,
    .quota_take = sq_quota_take,
    .quota_get = sq_quota_get,
    .audit = sq_audit,
    .audit_tail = sq_audit_tail,
    .ping = sq_ping,
    .node_claim = sq_node_claim,
    .node_release = sq_node_release,
};
