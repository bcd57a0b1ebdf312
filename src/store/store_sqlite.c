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
 * - Tokens are 32 bytes from libsodium's randombytes_buf() (a CSPRNG), and only
 *   their BLAKE2b-256 hash is stored, so a copy of the database does not let
 *   anyone authenticate (GitHub and Stripe store API tokens hashed the same
 *   way).  A fast hash is enough: the input has 256 bits of entropy, so there
 *   is nothing to brute-force, unlike a password.
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
#include "common/xalloc.h"
#include "store/store.h"
#include "common/banned.h"

/* The schema this code reads and writes; older ones are migrated, newer ones refused. */
#define SCHEMA_VERSION 2

/* How long a writer waits for another process's write transaction. */
#define BUSY_TIMEOUT_MS 5000

/* Random bytes in a token, and the length of "pbx_" + their unpadded base64url. */
#define TOKEN_BYTES 32
#define TOKEN_LEN   (4 + 43)

/* Characters of the token kept in clear for display: "pbx_" and 6 more (36 bits). */
#define PREFIX_LEN 10

#define HASH_BYTES crypto_generichash_BYTES /* 32 */

#define NAME_MAX_LEN    64
#define CLIENT_MAX_LEN  256
#define MODULES_MAX_LEN 4096

enum stmt_id {
    ST_KEY_INSERT,
    ST_KEY_LIST,
    ST_KEY_REVOKE,
    ST_KEY_BY_HASH,
    ST_QUOTA_TAKE,
    ST_QUOTA_GET,
    ST_AUDIT_INSERT,
    ST_AUDIT_TAIL,
    ST_COUNT,
};

/* The columns read_key() expects, in order; ST_KEY_BY_HASH adds the hash. */
#define KEY_COLUMNS                                                                         \
    "id, name, prefix, created, revoked, rpm, rpd, timeout_ms, memory_bytes, all_modules, " \
    "modules, network, admin, sessions, session_idle_ttl_s, session_lifetime_s"

/* The column of ST_KEY_BY_HASH's hash, after KEY_COLUMNS. */
#define KEY_HASH_COLUMN 16

static const char *const stmt_sql[ST_COUNT] = {
    [ST_KEY_INSERT] = "INSERT INTO keys (name, prefix, hash, created, revoked, rpm, rpd, "
                      "timeout_ms, memory_bytes, all_modules, modules, network, admin, sessions, "
                      "session_idle_ttl_s, session_lifetime_s) "
                      "VALUES (?1, ?2, ?3, ?4, 0, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, "
                      "?15)",
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
};

struct pbx_store {
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

static pthread_mutex_t *lock(struct pbx_store *store)
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
static int db_error(struct pbx_store *store, int rc, struct pbx_error **err, const char *what)
{
    return pbx_error_set(err, code_of(store->db, rc), "store `%s`: %s: %s", store->path, what,
                         store->db != NULL ? sqlite3_errmsg(store->db) : sqlite3_errstr(rc));
}

static sqlite3_stmt *stmt(struct pbx_store *store, enum stmt_id id)
{
    return store->stmts[id];
}

static int exec(struct pbx_store *store, const char *sql, struct pbx_error **err)
{
    int rc = sqlite3_exec(store->db, sql, NULL, NULL, NULL);

    if (rc != SQLITE_OK)
        return db_error(store, rc, err, sql);
    return 0;
}

/* A key name: 1 to 64 of [A-Za-z0-9._@-], so it prints safely in tables and logs. */
static bool valid_name(const char *name)
{
    size_t len = name != NULL ? strlen(name) : 0;

    return len >= 1 && len <= NAME_MAX_LEN &&
           strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._@-") ==
               len;
}

/*
 * Normalise a module list given space- or comma-separated into the stored
 * form, one space between names; NULL for an empty list.  Caller frees *out.
 */
static int normalise_modules(const char *in, char **out, struct pbx_error **err)
{
    static const char seps[] = " ,\t\n";
    cleanup_free char *norm = NULL;
    size_t len = 0;
    const char *p;

    *out = NULL;
    if (in == NULL)
        return 0;
    if (strlen(in) > MODULES_MAX_LEN)
        return pbx_error_set(err, PBX_E_INVAL, "module list is longer than %d characters",
                             MODULES_MAX_LEN);
    norm = xmalloc(strlen(in) + 1);
    p = in + strspn(in, seps);
    while (*p != '\0') {
        size_t n = strcspn(p, seps);

        if (!pbx_caller_module_name(p, n))
            return pbx_error_set(err, PBX_E_INVAL,
                                 "`%.*s` is not a module name (dotted Python identifiers only)",
                                 (int)n, p);
        if (len > 0)
            norm[len++] = ' ';
        memcpy(norm + len, p, n);
        len += n;
        p += n;
        p += strspn(p, seps);
    }
    norm[len] = '\0';
    if (len > 0)
        *out = steal_pointer(&norm);
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

static int schema_version(struct pbx_store *store, int64_t *version, struct pbx_error **err)
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
static int init_schema_locked(struct pbx_store *store, struct pbx_error **err)
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
    return 0;
}

/*
 * Create or migrate the schema.  BEGIN IMMEDIATE takes the write lock first,
 * so two processes opening a new file at once do not both create it.
 */
static int init_schema(struct pbx_store *store, struct pbx_error **err)
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

static int set_wal(struct pbx_store *store, bool memory, struct pbx_error **err)
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
static int setup(struct pbx_store *store, bool memory, bool create, struct pbx_error **err)
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

/* pbx_store_open() and pbx_store_open_existing(). */
static int open_uri(const char *uri, bool create, struct pbx_store **out, struct pbx_error **err)
{
    const char *path;
    struct pbx_store *store;
    bool memory;
    int r;

    *out = NULL;
    if (uri == NULL)
        return pbx_error_set(err, PBX_E_INVAL, "no store given: use sqlite:PATH");
    if (strncmp(uri, "sqlite:", 7) != 0) {
        size_t scheme = strcspn(uri, ":");

        if (uri[scheme] == ':' && scheme == 5 && strncmp(uri, "redis", 5) == 0)
            return pbx_error_set(err, PBX_E_UNSUPPORTED,
                                 "store `%s`: Redis is not supported by this build of pybox; use "
                                 "sqlite:PATH",
                                 uri);
        return pbx_error_set(err, PBX_E_UNSUPPORTED,
                             "store `%s`: unknown kind of store; use sqlite:PATH", uri);
    }
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
    /* A path is a path: builds with SQLITE_USE_URI would read "file:..." as a URI. */
    store->path = strncmp(path, "file:", 5) == 0 ? xasprintf("./%s", path) : xstrdup(path);
    pthread_mutex_init(&store->lock, NULL);
    r = setup(store, memory, create, err);
    if (r < 0) {
        pbx_store_close(store);
        return r;
    }
    *out = store;
    return 0;
}

int pbx_store_open(const char *uri, struct pbx_store **out, struct pbx_error **err)
{
    return open_uri(uri, true, out, err);
}

int pbx_store_open_existing(const char *uri, struct pbx_store **out, struct pbx_error **err)
{
    return open_uri(uri, false, out, err);
}

void pbx_store_close(struct pbx_store *store)
{
    if (store == NULL)
        return;
    for (int i = 0; i < ST_COUNT; i++)
        sqlite3_finalize(store->stmts[i]);
    /* Closing the last connection checkpoints the WAL and removes -wal and -shm. */
    sqlite3_close(store->db);
    pthread_mutex_destroy(&store->lock);
    free(store->path);
    free(store);
}

static void hash_token(const char *token, size_t len, unsigned char hash[HASH_BYTES])
{
    crypto_generichash(hash, HASH_BYTES, (const unsigned char *)token, len, NULL, 0);
}

static char *new_token(void)
{
    unsigned char raw[TOKEN_BYTES];
    char *token = xmalloc(TOKEN_LEN + 1);

    randombytes_buf(raw, sizeof(raw));
    memcpy(token, "pbx_", 4);
    sodium_bin2base64(token + 4, TOKEN_LEN + 1 - 4, raw, sizeof(raw),
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    sodium_memzero(raw, sizeof(raw));
    PBX_ASSERT(strlen(token) == TOKEN_LEN);
    return token;
}

static int check_policy(const struct pbx_key_policy *p, struct pbx_error **err)
{
    if (p->rpm < -1)
        return pbx_error_set(err, PBX_E_INVAL, "rpm %" PRId64 " is not >= -1", p->rpm);
    if (p->rpd < -1)
        return pbx_error_set(err, PBX_E_INVAL, "rpd %" PRId64 " is not >= -1", p->rpd);
    if (p->memory_bytes > INT64_MAX)
        return pbx_error_set(err, PBX_E_INVAL, "memory %" PRIu64 " is too large", p->memory_bytes);
    if (p->sessions > PBX_CALLER_SESSIONS_MAX)
        return pbx_error_set(err, PBX_E_INVAL, "sessions %" PRIu32 " is over %d", p->sessions,
                             PBX_CALLER_SESSIONS_MAX);
    if (p->session_idle_ttl_s > PBX_CALLER_SPAN_MAX_S)
        return pbx_error_set(err, PBX_E_INVAL, "session idle time %" PRIu32 " s is over %d s",
                             p->session_idle_ttl_s, PBX_CALLER_SPAN_MAX_S);
    if (p->session_lifetime_s > PBX_CALLER_SPAN_MAX_S)
        return pbx_error_set(err, PBX_E_INVAL, "session lifetime %" PRIu32 " s is over %d s",
                             p->session_lifetime_s, PBX_CALLER_SPAN_MAX_S);
    return 0;
}

int pbx_store_key_create(struct pbx_store *store, const char *name,
                         const struct pbx_key_policy *policy, char **token, struct pbx_error **err)
{
    static const struct pbx_key_policy defaults = {0};
    const struct pbx_key_policy *p = policy != NULL ? policy : &defaults;
    cleanup_free char *modules = NULL;
    cleanup_free char *tok = NULL;
    unsigned char hash[HASH_BYTES];
    char prefix[PREFIX_LEN + 1];
    int rc;
    int r;

    *token = NULL;
    if (!valid_name(name))
        return pbx_error_set(err, PBX_E_INVAL,
                             "key name `%s` is not 1 to %d of the characters A-Z a-z 0-9 . _ @ -",
                             name ? name : "", NAME_MAX_LEN);
    r = check_policy(p, err);
    if (r == 0)
        r = normalise_modules(p->modules, &modules, err);
    if (r < 0)
        return err != NULL ? pbx_error_prefix(err, "key `%s`", name) : r;
    tok = new_token();
    hash_token(tok, TOKEN_LEN, hash);
    memcpy(prefix, tok, PREFIX_LEN);
    prefix[PREFIX_LEN] = '\0';
    {
        cleanup_unlock pthread_mutex_t *locked = lock(store);
        cleanup_reset sqlite3_stmt *st = stmt(store, ST_KEY_INSERT);

        rc = sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
        if (rc == SQLITE_OK)
            rc = sqlite3_bind_text(st, 2, prefix, -1, SQLITE_STATIC);
        if (rc == SQLITE_OK)
            rc = sqlite3_bind_blob(st, 3, hash, sizeof(hash), SQLITE_STATIC);
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
            rc = sqlite3_step(st);
        if (rc == SQLITE_CONSTRAINT_UNIQUE && strstr(sqlite3_errmsg(store->db), "keys.name"))
            return pbx_error_set(err, EEXIST, "key name `%s` (revoked keys keep their names)",
                                 name);
        if (rc != SQLITE_DONE)
            return db_error(store, rc, err, "create a key");
    }
    *token = steal_pointer(&tok);
    return 0;
}

static char *column_strdup(sqlite3_stmt *st, int col)
{
    const unsigned char *s = sqlite3_column_text(st, col);

    return s != NULL ? xstrdup((const char *)s) : NULL;
}

/*
 * A count of column `col`, 0 to `most`: a stored value out of that range
 * (a database written by hand) reads as 0, the server's setting, rather
 * than as a number the policy never allowed.
 */
static uint32_t column_count(sqlite3_stmt *st, int col, int64_t most)
{
    int64_t v = sqlite3_column_int64(st, col);

    return v >= 0 && v <= most ? (uint32_t)v : 0;
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
                .sessions = column_count(st, 13, PBX_CALLER_SESSIONS_MAX),
                .session_idle_ttl_s = column_count(st, 14, PBX_CALLER_SPAN_MAX_S),
                .session_lifetime_s = column_count(st, 15, PBX_CALLER_SPAN_MAX_S),
            },
    };
    if (info->name == NULL)
        info->name = xstrdup("");
    if (info->prefix == NULL)
        info->prefix = xstrdup("");
}

int pbx_store_key_list(struct pbx_store *store, struct pbx_key_info **keys, size_t *n,
                       struct pbx_error **err)
{
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

int pbx_store_key_revoke(struct pbx_store *store, const char *name, struct pbx_error **err)
{
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

int pbx_store_key_lookup(struct pbx_store *store, const char *token, struct pbx_key_info *info,
                         struct pbx_error **err)
{
    unsigned char hash[HASH_BYTES];
    size_t len = token != NULL ? strnlen(token, TOKEN_LEN + 1) : 0;
    const void *stored;
    int rc;

    /* Only the one token length can match: skip hashing anything else. */
    if (len != TOKEN_LEN)
        return 0;
    hash_token(token, len, hash);
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

void pbx_key_info_release(struct pbx_key_info *info)
{
    if (info == NULL)
        return;
    free(info->name);
    free(info->prefix);
    free(info->policy.modules);
    *info = (struct pbx_key_info){0};
}

void pbx_key_info_free_array(struct pbx_key_info *keys, size_t n)
{
    for (size_t i = 0; keys != NULL && i < n; i++)
        pbx_key_info_release(&keys[i]);
    free(keys);
}

/* "YYYY-MM-DD", digits where digits belong. */
static bool valid_day(const char *day)
{
    static const char pattern[] = "dddd-dd-dd";

    if (day == NULL || strlen(day) != sizeof(pattern) - 1)
        return false;
    for (size_t i = 0; i < sizeof(pattern) - 1; i++) {
        if (pattern[i] == 'd' ? day[i] < '0' || day[i] > '9' : day[i] != pattern[i])
            return false;
    }
    return true;
}

static int check_client_day(const char *client, const char *day, struct pbx_error **err)
{
    if (client == NULL || client[0] == '\0' || strlen(client) > CLIENT_MAX_LEN)
        return pbx_error_set(err, PBX_E_INVAL, "quota: the client must be 1 to %d characters",
                             CLIENT_MAX_LEN);
    if (!valid_day(day))
        return pbx_error_set(err, PBX_E_INVAL, "quota: day `%s` is not YYYY-MM-DD", day ? day : "");
    return 0;
}

/* quota_get with the lock held. */
static int quota_get_locked(struct pbx_store *store, const char *client, const char *day,
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

int pbx_store_quota_take(struct pbx_store *store, const char *client, const char *day,
                         int64_t limit, int64_t *count, struct pbx_error **err)
{
    cleanup_unlock pthread_mutex_t *locked = NULL;
    int rc;
    int r;

    r = check_client_day(client, day, err);
    if (r < 0)
        return r;
    locked = lock(store);
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

int pbx_store_quota_get(struct pbx_store *store, const char *client, const char *day,
                        int64_t *count, struct pbx_error **err)
{
    cleanup_unlock pthread_mutex_t *locked = NULL;
    int r;

    r = check_client_day(client, day, err);
    if (r < 0)
        return r;
    locked = lock(store);
    return quota_get_locked(store, client, day, count, err);
}

int pbx_store_audit(struct pbx_store *store, const struct pbx_audit *rec, struct pbx_error **err)
{
    cleanup_unlock pthread_mutex_t *locked = NULL;
    cleanup_reset sqlite3_stmt *st = NULL;
    int rc;

    if (rec == NULL || rec->client == NULL || rec->route == NULL || rec->code_sha256 == NULL ||
        rec->status == NULL)
        return pbx_error_set(err, PBX_E_INVAL,
                             "audit: client, route, code_sha256 and status are required");
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

/* Set `key` of `obj` to the text of column `col`, or null. */
static void set_text(json_t *obj, const char *key, sqlite3_stmt *st, int col)
{
    const char *s = (const char *)sqlite3_column_text(st, col);
    json_t *v = s != NULL ? json_string(s) : NULL;

    /* Stored text that is not UTF-8 makes json_string() fail: it shows as null. */
    json_object_set_new(obj, key, v != NULL ? v : json_null());
}

/* One audit row as a JSON line; caller frees. */
static char *audit_line(sqlite3_stmt *st)
{
    json_t *obj = json_object();
    char *line;

    json_object_set_new(obj, "time_ms", json_integer(sqlite3_column_int64(st, 0)));
    set_text(obj, "client", st, 1);
    set_text(obj, "key_name", st, 2);
    set_text(obj, "route", st, 3);
    set_text(obj, "code_sha256", st, 4);
    set_text(obj, "status", st, 5);
    json_object_set_new(obj, "duration_ms", json_real(sqlite3_column_double(st, 6)));
    line = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(obj);
    if (line == NULL)
        abort(); /* out of memory: the server aborts, as xmalloc does */
    return line;
}

int pbx_store_audit_tail(struct pbx_store *store, size_t max, char **text, struct pbx_error **err)
{
    cleanup_unlock pthread_mutex_t *locked = lock(store);
    cleanup_reset sqlite3_stmt *st = stmt(store, ST_AUDIT_TAIL);
    cleanup_free char *out = xstrdup("");
    size_t len = 0;
    int rc;

    *text = NULL;
    rc = sqlite3_bind_int64(st, 1, max > INT64_MAX ? INT64_MAX : (int64_t)max);
    while (rc == SQLITE_OK || rc == SQLITE_ROW) {
        char *line;
        size_t n;

        rc = sqlite3_step(st);
        if (rc != SQLITE_ROW)
            break;
        line = audit_line(st);
        n = strlen(line);
        out = xrealloc(out, len + n + 2);
        memcpy(out + len, line, n);
        out[len + n] = '\n';
        out[len + n + 1] = '\0';
        len += n + 1;
        free(line);
    }
    if (rc != SQLITE_DONE)
        return db_error(store, rc, err, "read the audit log");
    *text = steal_pointer(&out);
    return 0;
}
