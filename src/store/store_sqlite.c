/*
 * The store on SQLite: one database file in WAL mode holding API keys, daily
 * quotas, the audit log and node ids' claims.  This file holds its opening,
 * its schema and their migrations, the connection's setup, what the other
 * files share (the lock, the cached statements, the error mapping), quotas,
 * the audit log and the backend's table; keys are store_sqlite_keys.c's and
 * node ids' claims store_sqlite_nodes.c's.
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
 *   again with sodium_memcmp(), in constant time (store_sqlite_keys.c).
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

#include <jansson.h>
#include <sodium.h>
#include <sqlite3.h>

#include "common/cleanup.h"
#include "common/xalloc.h"
#include "store/store_impl.h"
#include "store/store_sqlite_internal.h"
#include "common/banned.h"

/* The schema this code reads and writes; older ones are migrated, newer ones refused. */
#define SCHEMA_VERSION 3

/* How long a writer waits for another process's write transaction. */
#define BUSY_TIMEOUT_MS 5000

/* The cached statements' SQL, each prepared once at open (setup()). */
static const char *const stmt_sql[PBX_SQLITE_ST_COUNT] = {
    [PBX_SQLITE_ST_KEY_INSERT] =
        "INSERT INTO keys (name, prefix, hash, created, revoked, rpm, rpd, "
        "timeout_ms, memory_bytes, all_modules, modules, network, admin, sessions, "
        "session_idle_ttl_s, session_lifetime_s, concurrency) "
        "VALUES (?1, ?2, ?3, ?4, 0, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, "
        "?15, ?16)",
    [PBX_SQLITE_ST_KEY_LIST] = "SELECT " PBX_SQLITE_KEY_COLUMNS " FROM keys ORDER BY id",
    /* A second revoke keeps the first revocation time. */
    [PBX_SQLITE_ST_KEY_REVOKE] =
        "UPDATE keys SET revoked = CASE WHEN revoked = 0 THEN ?2 ELSE revoked END "
        "WHERE name = ?1",
    [PBX_SQLITE_ST_KEY_BY_HASH] =
        "SELECT " PBX_SQLITE_KEY_COLUMNS ", hash FROM keys WHERE hash = ?1 AND revoked = 0",
    /*
     * One statement, so one atomic step under SQLite's write lock whatever the
     * number of threads and processes: the first request of the day inserts
     * the row, later ones add one only while the count is below the limit
     * (?3 >= 1).  No row comes back when the limit is reached.
     */
    [PBX_SQLITE_ST_QUOTA_TAKE] = "INSERT INTO quota (client, day, count) VALUES (?1, ?2, 1) "
                                 "ON CONFLICT (client, day) DO UPDATE SET count = quota.count + 1 "
                                 "WHERE quota.count < ?3 RETURNING count",
    [PBX_SQLITE_ST_QUOTA_GET] = "SELECT count FROM quota WHERE client = ?1 AND day = ?2",
    [PBX_SQLITE_ST_ONCE_GET] =
        "SELECT 1 FROM quota_once WHERE client = ?1 AND day = ?2 AND once = ?3",
    [PBX_SQLITE_ST_ONCE_PUT] =
        "INSERT OR IGNORE INTO quota_once (client, day, once) VALUES (?1, ?2, ?3)",
    [PBX_SQLITE_ST_AUDIT_INSERT] =
        "INSERT INTO audit (time_ms, client, key_name, route, code_sha256, "
        "status, duration_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    [PBX_SQLITE_ST_AUDIT_TAIL] =
        "SELECT time_ms, client, key_name, route, code_sha256, status, duration_ms "
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

pthread_mutex_t *pbx__store_sqlite_lock(struct pbx_sqlite_store *store)
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
int pbx__store_sqlite_db_error(struct pbx_sqlite_store *store, int rc, struct pbx_error **err,
                               const char *what)
{
    return pbx_error_set(err, code_of(store->db, rc), "store `%s`: %s: %s", store->path, what,
                         store->db != NULL ? sqlite3_errmsg(store->db) : sqlite3_errstr(rc));
}

sqlite3_stmt *pbx__store_sqlite_stmt(struct pbx_sqlite_store *store, enum pbx_sqlite_stmt id)
{
    return store->stmts[id];
}

int pbx__store_sqlite_exec(struct pbx_sqlite_store *store, const char *sql, struct pbx_error **err)
{
    int rc = sqlite3_exec(store->db, sql, NULL, NULL, NULL);

    if (rc != SQLITE_OK)
        return pbx__store_sqlite_db_error(store, rc, err, sql);
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

static int schema_version(struct pbx_sqlite_store *store, int64_t *version, struct pbx_error **err)
{
    cleanup_stmt sqlite3_stmt *st = NULL;
    int rc;

    rc = sqlite3_prepare_v2(store->db, "SELECT max(version) FROM schema_version", -1, &st, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc != SQLITE_ROW)
        return pbx__store_sqlite_db_error(store, rc, err, "read the schema version");
    *version = sqlite3_column_int64(st, 0); /* 0 for NULL: an empty table */
    return 0;
}

/* The body of init_schema(), inside its transaction. */
static int init_schema_locked(struct pbx_sqlite_store *store, struct pbx_error **err)
{
    int64_t version = 0;
    int r;

    r = pbx__store_sqlite_exec(
        store, "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)", err);
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
        r = pbx__store_sqlite_exec(store, schema_v1, err);
        if (r == 0)
            r = pbx__store_sqlite_exec(store, "INSERT INTO schema_version (version) VALUES (1)",
                                       err);
        if (r < 0)
            return r;
        version = 1;
    }
    for (; version < SCHEMA_VERSION; version++) {
        int rc = sqlite3_exec(store->db, migrations[version - 1], NULL, NULL, NULL);
        char what[64];

        if (rc != SQLITE_OK) {
            snprintf(what, sizeof(what), "upgrade the schema from version %" PRId64, version);
            return pbx__store_sqlite_db_error(store, rc, err, what);
        }
    }
    /*
     * The idempotency keys charged (pbx_store_quota_take_once()): a table
     * an older pybox never reads, so it is added without a version of its
     * own.
     */
    return pbx__store_sqlite_exec(store,
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
static int init_schema(struct pbx_sqlite_store *store, struct pbx_error **err)
{
    int r;

    r = pbx__store_sqlite_exec(store, "BEGIN IMMEDIATE", err);
    if (r < 0)
        return r;
    r = init_schema_locked(store, err);
    if (r < 0) {
        sqlite3_exec(store->db, "ROLLBACK", NULL, NULL, NULL);
        return r;
    }
    return pbx__store_sqlite_exec(store, "COMMIT", err);
}

static int set_wal(struct pbx_sqlite_store *store, bool memory, struct pbx_error **err)
{
    cleanup_stmt sqlite3_stmt *st = NULL;
    const char *mode;
    int rc;

    rc = sqlite3_prepare_v2(store->db, "PRAGMA journal_mode = WAL", -1, &st, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc != SQLITE_ROW)
        return pbx__store_sqlite_db_error(store, rc, err, "switch to WAL mode");
    mode = (const char *)sqlite3_column_text(st, 0);
    if (mode == NULL || (strcmp(mode, "wal") != 0 && !(memory && strcmp(mode, "memory") == 0)))
        return pbx_error_set(err, PBX_E_UNSUPPORTED,
                             "store `%s`: SQLite could not switch to WAL mode (journal mode is "
                             "`%s`)",
                             store->path, mode ? mode : "?");
    return 0;
}

/* Everything after the handle exists; on failure the caller closes it. */
static int setup(struct pbx_sqlite_store *store, bool memory, bool create, struct pbx_error **err)
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
        return pbx__store_sqlite_db_error(store, rc, err, "open");
    sqlite3_extended_result_codes(store->db, 1);
    rc = sqlite3_busy_timeout(store->db, BUSY_TIMEOUT_MS);
    if (rc == SQLITE_OK)
        rc = sqlite3_db_config(store->db, SQLITE_DBCONFIG_DEFENSIVE, 1, NULL);
    if (rc != SQLITE_OK)
        return pbx__store_sqlite_db_error(store, rc, err, "configure");
    r = pbx__store_sqlite_exec(store, "PRAGMA trusted_schema = OFF", err);
    if (r == 0)
        r = set_wal(store, memory, err);
    if (r == 0)
        r = pbx__store_sqlite_exec(store, "PRAGMA synchronous = NORMAL", err);
    if (r == 0)
        r = init_schema(store, err);
    if (r < 0)
        return r;
    for (int i = 0; i < PBX_SQLITE_ST_COUNT; i++) {
        rc = sqlite3_prepare_v3(store->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT,
                                &store->stmts[i], NULL);
        if (rc != SQLITE_OK)
            return pbx__store_sqlite_db_error(store, rc, err, "prepare a statement");
    }
    return 0;
}

static void sq_close(struct pbx_store *base);

/* The backend's open: `uri` begins with "sqlite:" (store.c saw to it). */
static int sq_open(const char *uri, bool create, struct pbx_store **out, struct pbx_error **err)
{
    const char *path;
    struct pbx_sqlite_store *store;
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
    struct pbx_sqlite_store *store = (struct pbx_sqlite_store *)base;

    for (int i = 0; i < PBX_SQLITE_ST_COUNT; i++)
        sqlite3_finalize(store->stmts[i]);
    /* Closing the last connection checkpoints the WAL and removes -wal and -shm. */
    sqlite3_close(store->db);
    pthread_mutex_destroy(&store->lock);
    free(store->path);
    free(store);
}

/* quota_get with the lock held. */
static int quota_get_locked(struct pbx_sqlite_store *store, const char *client, const char *day,
                            int64_t *count, struct pbx_error **err)
{
    cleanup_reset sqlite3_stmt *st = pbx__store_sqlite_stmt(store, PBX_SQLITE_ST_QUOTA_GET);
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
        return pbx__store_sqlite_db_error(store, rc, err, "read a quota");
    *count = sqlite3_column_int64(st, 0);
    return 0;
}

/* Run statement `id` on client, day and `once`: SQLITE_ROW, SQLITE_DONE or an error. */
static int once_step(struct pbx_sqlite_store *store, enum pbx_sqlite_stmt id, const char *client,
                     const char *day, const char *once)
{
    cleanup_reset sqlite3_stmt *st = pbx__store_sqlite_stmt(store, id);
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

static int quota_take_locked(struct pbx_sqlite_store *store, const char *client, const char *day,
                             int64_t limit, int64_t *count, struct pbx_error **err);

/*
 * quota_take_locked() at most once for `once`: the mark and the charge in
 * one write transaction, so two processes charging the same key at once
 * count it once.
 */
static int quota_take_once_locked(struct pbx_sqlite_store *store, const char *client,
                                  const char *day, int64_t limit, const char *once, int64_t *count,
                                  struct pbx_error **err)
{
    int rc;
    int r;

    r = pbx__store_sqlite_exec(store, "BEGIN IMMEDIATE", err);
    if (r < 0)
        return r;
    rc = once_step(store, PBX_SQLITE_ST_ONCE_GET, client, day, once);
    if (rc == SQLITE_ROW) {
        r = quota_get_locked(store, client, day, count, err);
        if (r == 0)
            r = 1;
    } else if (rc != SQLITE_DONE) {
        r = pbx__store_sqlite_db_error(store, rc, err, "charge a quota");
    } else {
        r = quota_take_locked(store, client, day, limit, count, err);
        if (r == 1) {
            rc = once_step(store, PBX_SQLITE_ST_ONCE_PUT, client, day, once);
            if (rc != SQLITE_DONE)
                r = pbx__store_sqlite_db_error(store, rc, err, "charge a quota");
        }
    }
    if (r < 0) {
        sqlite3_exec(store->db, "ROLLBACK", NULL, NULL, NULL);
        return r;
    }
    {
        int c = pbx__store_sqlite_exec(store, "COMMIT", err);

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
    struct pbx_sqlite_store *store = (struct pbx_sqlite_store *)base;
    cleanup_unlock pthread_mutex_t *locked = NULL;

    locked = pbx__store_sqlite_lock(store);
    if (once != NULL)
        return quota_take_once_locked(store, client, day, limit, once, count, err);
    return quota_take_locked(store, client, day, limit, count, err);
}

/* The charge of sq_quota_take(), with the lock held. */
static int quota_take_locked(struct pbx_sqlite_store *store, const char *client, const char *day,
                             int64_t limit, int64_t *count, struct pbx_error **err)
{
    int rc;

    /* A limit of 0 refuses everything; the statement below needs a limit >= 1. */
    if (limit == 0)
        return quota_get_locked(store, client, day, count, err);
    {
        cleanup_reset sqlite3_stmt *st = pbx__store_sqlite_stmt(store, PBX_SQLITE_ST_QUOTA_TAKE);

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
                return pbx__store_sqlite_db_error(store, rc, err, "charge a quota");
            return 1;
        }
        if (rc != SQLITE_DONE)
            return pbx__store_sqlite_db_error(store, rc, err, "charge a quota");
    }
    return quota_get_locked(store, client, day, count, err);
}

static int sq_quota_get(struct pbx_store *base, const char *client, const char *day, int64_t *count,
                        struct pbx_error **err)
{
    struct pbx_sqlite_store *store = (struct pbx_sqlite_store *)base;
    cleanup_unlock pthread_mutex_t *locked = NULL;

    locked = pbx__store_sqlite_lock(store);
    return quota_get_locked(store, client, day, count, err);
}

static int sq_audit(struct pbx_store *base, const struct pbx_audit *rec, struct pbx_error **err)
{
    struct pbx_sqlite_store *store = (struct pbx_sqlite_store *)base;
    cleanup_unlock pthread_mutex_t *locked = NULL;
    cleanup_reset sqlite3_stmt *st = NULL;
    int rc;

    if (pbx__store_check_audit(rec, err) < 0)
        return -PBX_E_INVAL;
    locked = pbx__store_sqlite_lock(store);
    st = pbx__store_sqlite_stmt(store, PBX_SQLITE_ST_AUDIT_INSERT);
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
        return pbx__store_sqlite_db_error(store, rc, err, "append to the audit log");
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
    struct pbx_sqlite_store *store = (struct pbx_sqlite_store *)base;
    cleanup_unlock pthread_mutex_t *locked = pbx__store_sqlite_lock(store);
    cleanup_reset sqlite3_stmt *st = pbx__store_sqlite_stmt(store, PBX_SQLITE_ST_AUDIT_TAIL);
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
        return pbx__store_sqlite_db_error(store, rc, err, "read the audit log");
    *text = steal_pointer(&out);
    return 0;
}

static int sq_ping(struct pbx_store *base, struct pbx_error **err)
{
    struct pbx_sqlite_store *store = (struct pbx_sqlite_store *)base;
    cleanup_unlock pthread_mutex_t *locked = pbx__store_sqlite_lock(store);

    return pbx__store_sqlite_exec(store, "SELECT 1 FROM schema_version LIMIT 1", err);
}

const struct pbx_store_backend pbx__store_sqlite = {
    .name = "sqlite",
    .open = sq_open,
    .close = sq_close,
    .key_create = pbx__store_sqlite_key_create,
    .key_list = pbx__store_sqlite_key_list,
    .key_revoke = pbx__store_sqlite_key_revoke,
    .key_lookup = pbx__store_sqlite_key_lookup,
    .quota_take = sq_quota_take,
    .quota_get = sq_quota_get,
    .audit = sq_audit,
    .audit_tail = sq_audit_tail,
    .ping = sq_ping,
    .node_claim = pbx__store_sqlite_node_claim,
    .node_release = pbx__store_sqlite_node_release,
};
