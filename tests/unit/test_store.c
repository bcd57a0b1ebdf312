/*
 * Unit tests for src/store/store_sqlite.c: the cases every backend shares
 * (store_cases.h: keys, quotas, the audit log, persistence), then SQLite's
 * own: store URIs, the file and directory it creates, WAL, the token never in
 * the file, the upgrade of a store of an older schema, and node ids' claims
 * in a file of any schema.
 * Every test works in its own directory under one temporary directory.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <pthread.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>
#include <sqlite3.h>

#include "common/xalloc.h"
#include "store/store.h"
#include "common/banned.h"

static char base[] = "/tmp/pybox-test-store-XXXXXX";

static void base_setup(void)
{
    ck_assert_ptr_nonnull(mkdtemp(base));
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void base_teardown(void)
{
    nftw(base, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* A fresh directory for the running test; caller frees. */
static char *test_dir(const char *name)
{
    char *dir = xasprintf("%s/%s", base, name);

    ck_assert_int_eq(mkdir(dir, 0700), 0);
    return dir;
}

#include "store_cases.h"

/* A store in its own directory of the test's; *uri_out (if not NULL) gets its URI. */
static struct pbx_store *new_store(const char *name, char **uri_out)
{
    char *dir = test_dir(name);
    char *uri = xasprintf("sqlite:%s/pybox.db", dir);
    struct pbx_store *store = open_ok(uri);

    free(dir);
    if (uri_out != NULL)
        *uri_out = uri;
    else
        free(uri);
    return store;
}

/* Whether the file at `path` contains `needle` anywhere. */
static bool file_contains(const char *path, const char *needle)
{
    FILE *f = fopen(path, "rb");
    size_t n = strlen(needle);
    char *data = NULL;
    size_t len = 0;
    size_t cap = 0;
    size_t got;
    bool found = false;

    if (f == NULL)
        return false;
    do {
        if (cap - len < 65536) {
            cap = cap * 2 + 65536;
            data = xrealloc(data, cap);
        }
        got = fread(data + len, 1, cap - len, f);
        len += got;
    } while (got > 0);
    fclose(f);
    for (size_t i = 0; i + n <= len && !found; i++)
        found = memcmp(data + i, needle, n) == 0;
    free(data);
    return found;
}

/* The database holds the hash of a token, never the token. */
START_TEST(test_token_not_stored)
{
    char *dir = test_dir("clear");
    char *uri = xasprintf("sqlite:%s/pybox.db", dir);
    char *db = xasprintf("%s/pybox.db", dir);
    char *wal = xasprintf("%s/pybox.db-wal", dir);
    struct pbx_store *store = open_ok(uri);
    char *token = create_ok(store, "secret", NULL);

    /* While open (the row may still be in the WAL) and after the checkpoint at close. */
    ck_assert(!file_contains(db, token));
    ck_assert(!file_contains(wal, token));
    ck_assert(!file_contains(db, token + 4));
    ck_assert(!file_contains(wal, token + 4));
    pbx_store_close(store);
    ck_assert(!file_contains(db, token));
    ck_assert(!file_contains(db, token + 4));
    ck_assert(file_contains(db, "secret"));
    free(token);
    free(db);
    free(wal);
    free(uri);
    free(dir);
}
END_TEST

START_TEST(test_files_and_modes)
{
    char *dir = test_dir("modes");
    char *uri = xasprintf("sqlite:%s/a/b/pybox.db", dir);
    char *sub = xasprintf("%s/a/b", dir);
    char *db = xasprintf("%s/a/b/pybox.db", dir);
    struct pbx_store *store;
    struct stat st;
    mode_t old = umask(0);

    /* Even with umask 0: the directories are 0700 and the database 0600. */
    store = open_ok(uri);
    umask(old);
    ck_assert_int_eq(stat(sub, &st), 0);
    ck_assert(S_ISDIR(st.st_mode));
    ck_assert_int_eq(st.st_mode & 07777, 0700);
    ck_assert_int_eq(stat(db, &st), 0);
    ck_assert_int_eq(st.st_mode & 07777, 0600);
    free(db);
    db = xasprintf("%s/a/b/pybox.db-wal", dir);
    ck_assert_int_eq(stat(db, &st), 0);
    ck_assert_int_eq(st.st_mode & 077, 0);
    pbx_store_close(store);
    free(db);
    free(sub);
    free(uri);
    free(dir);
}
END_TEST

START_TEST(test_wal_mode)
{
    char *dir = test_dir("wal");
    char *uri = xasprintf("sqlite:%s/pybox.db", dir);
    char *db = xasprintf("%s/pybox.db", dir);
    struct pbx_store *store = open_ok(uri);
    sqlite3 *raw = NULL;
    sqlite3_stmt *st = NULL;

    ck_assert_int_eq(sqlite3_open_v2(db, &raw, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    ck_assert_int_eq(sqlite3_prepare_v2(raw, "PRAGMA journal_mode", -1, &st, NULL), SQLITE_OK);
    ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
    ck_assert_str_eq((const char *)sqlite3_column_text(st, 0), "wal");
    sqlite3_finalize(st);
    /* A new store is made as an old one is upgraded: version 1, then each migration. */
    ck_assert_int_eq(sqlite3_prepare_v2(raw, "SELECT version FROM schema_version ORDER BY version",
                                        -1, &st, NULL),
                     SQLITE_OK);
    ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
    ck_assert_int_eq(sqlite3_column_int(st, 0), 1);
    ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
    ck_assert_int_eq(sqlite3_column_int(st, 0), 2);
    ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
    ck_assert_int_eq(sqlite3_column_int(st, 0), 3);
    ck_assert_int_eq(sqlite3_step(st), SQLITE_DONE);
    sqlite3_finalize(st);
    sqlite3_close(raw);
    pbx_store_close(store);
    free(db);
    free(uri);
    free(dir);
}
END_TEST

/* A PATH without a directory part is relative to the working directory. */
START_TEST(test_relative_path)
{
    char *dir = test_dir("relative");
    struct pbx_store *store;
    struct stat st;

    ck_assert_int_eq(chdir(dir), 0);
    store = open_ok("sqlite:pybox.db");
    pbx_store_close(store);
    ck_assert_int_eq(stat("pybox.db", &st), 0);
    store = open_ok("sqlite:data/sub/pybox.db");
    pbx_store_close(store);
    ck_assert_int_eq(stat("data/sub/pybox.db", &st), 0);
    free(dir);
}
END_TEST

START_TEST(test_bad_uris)
{
    struct pbx_store *store = (struct pbx_store *)1;
    struct pbx_error *err = NULL;

    /* Redis over TLS: not in this build (hiredis 0.14 has none). */
    ck_assert_int_eq(pbx_store_open("rediss://127.0.0.1:6379", &store, &err), -PBX_E_UNSUPPORTED);
    ck_assert_ptr_null(store);
    ck_assert_int_eq(err->code, PBX_E_UNSUPPORTED);
    ck_assert_msg(strstr(err->msg, "rediss://") && strstr(err->msg, "TLS"), "%s", err->msg);
    pbx_error_free(&err);
    ck_assert_int_eq(pbx_store_open("postgres://x", &store, &err), -PBX_E_UNSUPPORTED);
    ck_assert_msg(strstr(err->msg, "sqlite:PATH") && strstr(err->msg, "redis://HOST:PORT") &&
                      strstr(err->msg, "postgres://x"),
                  "%s", err->msg);
    pbx_error_free(&err);
    ck_assert_int_eq(pbx_store_open("REDIS://x", &store, &err), -PBX_E_UNSUPPORTED);
    pbx_error_free(&err);
    ck_assert_int_eq(pbx_store_open("/var/lib/pybox/pybox.db", &store, &err), -PBX_E_UNSUPPORTED);
    pbx_error_free(&err);
    ck_assert_int_eq(pbx_store_open("SQLITE:x.db", &store, &err), -PBX_E_UNSUPPORTED);
    pbx_error_free(&err);
    ck_assert_int_eq(pbx_store_open("sqlite:", &store, &err), -PBX_E_INVAL);
    ck_assert_ptr_null(store);
    ck_assert_int_eq(err->code, PBX_E_INVAL);
    ck_assert_ptr_nonnull(strstr(err->msg, "empty path"));
    pbx_error_free(&err);
    ck_assert_int_eq(pbx_store_open("sqlite://", &store, &err), -PBX_E_INVAL);
    pbx_error_free(&err);
    ck_assert_int_eq(pbx_store_open("sqlite://host/x.db", &store, &err), -PBX_E_INVAL);
    pbx_error_free(&err);
    ck_assert_int_eq(pbx_store_open(NULL, &store, &err), -PBX_E_INVAL);
    pbx_error_free(&err);
    /* A NULL err is allowed: the error is dropped. */
    ck_assert_int_eq(pbx_store_open("sqlite:", &store, NULL), -PBX_E_INVAL);
}
END_TEST

START_TEST(test_url_spelling_and_memory)
{
    char *dir = test_dir("url");
    char *uri = xasprintf("sqlite://%s/x.db", dir);
    char *db = xasprintf("%s/x.db", dir);
    struct pbx_store *store = open_ok(uri);
    struct stat st;
    char *token;

    pbx_store_close(store);
    ck_assert_int_eq(stat(db, &st), 0);
    store = open_ok("sqlite::memory:");
    token = create_ok(store, "m", NULL);
    free(token);
    pbx_store_close(store);
    pbx_store_close(NULL);
    free(db);
    free(uri);
    free(dir);
}
END_TEST

START_TEST(test_open_errors)
{
    char *dir = test_dir("openerr");
    char *path = xasprintf("%s/notadb", dir);
    char *uri = xasprintf("sqlite:%s", path);
    struct pbx_store *store = NULL;
    struct pbx_error *err = NULL;
    FILE *f = fopen(path, "w");

    ck_assert_ptr_nonnull(f);
    fputs("this is not a database, it is text long enough to have a header..................\n"
          "................................................................................\n",
          f);
    fclose(f);
    ck_assert_int_lt(pbx_store_open(uri, &store, &err), 0);
    ck_assert_ptr_null(store);
    ck_assert_ptr_nonnull(strstr(err->msg, path));
    pbx_error_free(&err);
    free(uri);

    /* A directory where the file should be. */
    uri = xasprintf("sqlite:%s", dir);
    ck_assert_int_lt(pbx_store_open(uri, &store, &err), 0);
    ck_assert_ptr_nonnull(err);
    pbx_error_free(&err);
    free(uri);

    /* A regular file where a directory should be. */
    uri = xasprintf("sqlite:%s/sub/x.db", path);
    ck_assert_int_eq(pbx_store_open(uri, &store, &err), -ENOTDIR);
    pbx_error_free(&err);
    free(uri);

    /* A symlink as the database is refused. */
    free(path);
    path = xasprintf("%s/link.db", dir);
    ck_assert_int_eq(symlink("/etc/passwd", path), 0);
    uri = xasprintf("sqlite:%s", path);
    ck_assert_int_eq(pbx_store_open(uri, &store, &err), -ELOOP);
    pbx_error_free(&err);
    free(uri);
    free(path);
    free(dir);
}
END_TEST

/* open_existing() creates nothing: not the file, not its directories. */
START_TEST(test_open_existing)
{
    char *dir = test_dir("existing");
    char *uri = xasprintf("sqlite:%s/sub/pybox.db", dir);
    char *sub = xasprintf("%s/sub", dir);
    struct pbx_store *store = (struct pbx_store *)1;
    struct pbx_error *err = NULL;
    struct stat st;
    char *token;

    ck_assert_int_eq(pbx_store_open_existing(uri, &store, &err), -PBX_E_NOTFOUND);
    ck_assert_ptr_null(store);
    ck_assert_msg(strstr(err->msg, "does not exist") != NULL, "%s", err->msg);
    pbx_error_free(&err);
    ck_assert_int_eq(stat(sub, &st), -1);
    ck_assert_int_eq(errno, ENOENT);
    ck_assert_int_eq(pbx_store_open_existing("mysql://x", &store, &err), -PBX_E_UNSUPPORTED);
    pbx_error_free(&err);
    ck_assert_int_eq(pbx_store_open_existing("sqlite:", &store, &err), -PBX_E_INVAL);
    pbx_error_free(&err);

    store = open_ok(uri);
    token = create_ok(store, "k", NULL);
    pbx_store_close(store);
    ck_assert_int_eq(pbx_store_open_existing(uri, &store, &err), 0);
    ck_assert_int_eq(pbx_store_key_revoke(store, "k", &err), 0);
    pbx_store_close(store);
    free(token);
    free(sub);
    free(uri);
    free(dir);
}
END_TEST

/*
 * The schema of version 1, as pybox wrote it before keys had session
 * policies, and one key in it: `old`, whose token is OLD_TOKEN.
 */
#define OLD_TOKEN "pbx_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAold"
static const char schema_v1[] =
    "CREATE TABLE schema_version (version INTEGER NOT NULL);"
    "INSERT INTO schema_version (version) VALUES (1);"
    "CREATE TABLE keys (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, prefix TEXT NOT NULL,"
    "  hash BLOB NOT NULL UNIQUE, created INTEGER NOT NULL, revoked INTEGER NOT NULL DEFAULT 0,"
    "  rpm INTEGER NOT NULL DEFAULT 0, rpd INTEGER NOT NULL DEFAULT 0,"
    "  timeout_ms INTEGER NOT NULL DEFAULT 0, memory_bytes INTEGER NOT NULL DEFAULT 0,"
    "  all_modules INTEGER NOT NULL DEFAULT 0, modules TEXT, network INTEGER NOT NULL DEFAULT 0,"
    "  admin INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE quota (client TEXT NOT NULL, day TEXT NOT NULL, count INTEGER NOT NULL,"
    "  PRIMARY KEY (client, day)) WITHOUT ROWID;"
    "CREATE TABLE audit (id INTEGER PRIMARY KEY, time_ms INTEGER NOT NULL, client TEXT NOT NULL,"
    "  key_name TEXT, route TEXT NOT NULL, code_sha256 TEXT NOT NULL, status TEXT NOT NULL,"
    "  duration_ms REAL NOT NULL);"
    "CREATE INDEX audit_time ON audit (time_ms);"
    "INSERT INTO quota (client, day, count) VALUES ('key:old', '2026-01-02', 7);";

/* A store of schema version 1 opens, upgraded in place: its keys, quotas and token kept. */
START_TEST(test_upgrade_from_v1)
{
    char *dir = test_dir("upgrade");
    char *uri = xasprintf("sqlite:%s/pybox.db", dir);
    unsigned char hash[crypto_generichash_BYTES];
    struct pbx_key_policy policy = {.sessions = 2, .session_lifetime_s = 5, .concurrency = 4};
    struct pbx_error *err = NULL;
    struct pbx_key_info *keys = NULL;
    struct pbx_key_info info;
    struct pbx_store *store;
    sqlite3_stmt *st = NULL;
    sqlite3 *raw = NULL;
    int64_t count = 0;
    size_t n = 0;
    char *token;

    crypto_generichash(hash, sizeof(hash), (const unsigned char *)OLD_TOKEN, strlen(OLD_TOKEN),
                       NULL, 0);
    ck_assert_int_eq(sqlite3_open(uri + 7, &raw), SQLITE_OK);
    ck_assert_int_eq(sqlite3_exec(raw, schema_v1, NULL, NULL, NULL), SQLITE_OK);
    ck_assert_int_eq(sqlite3_prepare_v2(raw,
                                        "INSERT INTO keys (name, prefix, hash, created, rpm, "
                                        "timeout_ms, modules) VALUES ('old', 'pbx_AAAAAA', ?1, "
                                        "1700000000, 60, 2500, 'scipy')",
                                        -1, &st, NULL),
                     SQLITE_OK);
    ck_assert_int_eq(sqlite3_bind_blob(st, 1, hash, sizeof(hash), SQLITE_STATIC), SQLITE_OK);
    ck_assert_int_eq(sqlite3_step(st), SQLITE_DONE);
    sqlite3_finalize(st);
    sqlite3_close(raw);

    /* Twice: the second open finds it upgraded and changes nothing. */
    for (int i = 0; i < 2; i++) {
        store = open_ok(uri);
        ck_assert_int_eq(pbx_store_key_list(store, &keys, &n, &err), 0);
        ck_assert_uint_eq(n, 1);
        ck_assert_str_eq(keys[0].name, "old");
        ck_assert_int_eq(keys[0].policy.rpm, 60);
        ck_assert_uint_eq(keys[0].policy.timeout_ms, 2500);
        ck_assert_str_eq(keys[0].policy.modules, "scipy");
        /* What version 1 did not have is the server's setting. */
        ck_assert_uint_eq(keys[0].policy.sessions, 0);
        ck_assert_uint_eq(keys[0].policy.session_idle_ttl_s, 0);
        ck_assert_uint_eq(keys[0].policy.session_lifetime_s, 0);
        ck_assert_int_eq(keys[0].policy.concurrency, 0);
        pbx_key_info_free_array(keys, n);
        ck_assert_int_eq(pbx_store_key_lookup(store, OLD_TOKEN, &info, &err), 1);
        ck_assert_str_eq(info.name, "old");
        pbx_key_info_release(&info);
        ck_assert_int_eq(pbx_store_quota_get(store, "key:old", "2026-01-02", &count, &err), 0);
        ck_assert_int_eq(count, 7);
        pbx_store_close(store);
    }
    /* The upgraded store takes the new columns. */
    store = open_ok(uri);
    token = create_ok(store, "new", &policy);
    ck_assert_int_eq(pbx_store_key_lookup(store, token, &info, &err), 1);
    ck_assert_uint_eq(info.policy.sessions, 2);
    ck_assert_uint_eq(info.policy.session_lifetime_s, 5);
    ck_assert_int_eq(info.policy.concurrency, 4);
    pbx_key_info_release(&info);
    pbx_store_close(store);
    ck_assert_ptr_null(err);

    ck_assert_int_eq(sqlite3_open(uri + 7, &raw), SQLITE_OK);
    ck_assert_int_eq(
        sqlite3_prepare_v2(raw, "SELECT group_concat(version) FROM schema_version", -1, &st, NULL),
        SQLITE_OK);
    ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
    ck_assert_str_eq((const char *)sqlite3_column_text(st, 0), "1,2,3");
    sqlite3_finalize(st);
    sqlite3_close(raw);
    free(token);
    free(uri);
    free(dir);
}
END_TEST

/* A stored session policy out of range (a database written by hand) reads as the default. */
START_TEST(test_out_of_range_session_policy)
{
    char *uri = NULL;
    struct pbx_store *store = new_store("range", &uri);
    struct pbx_key_info info;
    char *token = create_ok(store, "k", NULL);
    sqlite3 *raw = NULL;

    pbx_store_close(store);
    ck_assert_int_eq(sqlite3_open(uri + 7, &raw), SQLITE_OK);
    ck_assert_int_eq(
        sqlite3_exec(raw,
                     "UPDATE keys SET sessions = -1, session_idle_ttl_s = 99999999999, "
                     "session_lifetime_s = 7",
                     NULL, NULL, NULL),
        SQLITE_OK);
    sqlite3_close(raw);
    store = open_ok(uri);
    ck_assert_int_eq(pbx_store_key_lookup(store, token, &info, NULL), 1);
    ck_assert_uint_eq(info.policy.sessions, 0);
    ck_assert_uint_eq(info.policy.session_idle_ttl_s, 0);
    ck_assert_uint_eq(info.policy.session_lifetime_s, 7);
    pbx_key_info_release(&info);
    pbx_store_close(store);
    free(token);
    free(uri);
}
END_TEST

/* A database written by a newer pybox is refused, not misread. */
START_TEST(test_newer_schema)
{
    char *uri = NULL;
    struct pbx_store *store = new_store("newer", &uri);
    struct pbx_error *err = NULL;
    sqlite3 *raw = NULL;

    pbx_store_close(store);
    ck_assert_int_eq(sqlite3_open(uri + 7, &raw), SQLITE_OK);
    ck_assert_int_eq(
        sqlite3_exec(raw, "INSERT INTO schema_version (version) VALUES (99)", NULL, NULL, NULL),
        SQLITE_OK);
    sqlite3_close(raw);
    ck_assert_int_eq(pbx_store_open(uri, &store, &err), -PBX_E_UNSUPPORTED);
    ck_assert_msg(strstr(err->msg, "schema version 99") != NULL, "%s", err->msg);
    pbx_error_free(&err);
    free(uri);
}
END_TEST

/* SQLite keeps no shared windows: its one server keeps its own in memory. */
START_TEST(test_no_windows)
{
    struct pbx_store *store = new_store("windows", NULL);
    struct pbx_error *err = NULL;
    unsigned retry = 7;

    ck_assert(!pbx_store_has_windows(store));
    ck_assert_int_eq(pbx_store_window_hold(store, "key:w", "t1", 5, &retry, &err),
                     -PBX_E_UNSUPPORTED);
    ck_assert_uint_eq(retry, 0);
    pbx_error_free(&err);
    ck_assert_int_eq(pbx_store_window_release(store, "key:w", "t1", &err), -PBX_E_UNSUPPORTED);
    pbx_error_free(&err);
    {
        const struct pbx_store_admit ask = {
            .client = "key:w", .ticket = "t1", .rpm = 5, .rpd = 5, .concurrency = -1};
        struct pbx_store_admission adm;

        /* Nor the admission in one call that goes with them, nor its leases. */
        ck_assert_int_eq(pbx_store_admit(store, &ask, &adm, &err), -PBX_E_UNSUPPORTED);
        ck_assert_ptr_nonnull(strstr(err->msg, "sqlite"));
        pbx_error_free(&err);
        ck_assert_int_eq(pbx_store_lease_end(store, "key:w", "t1", &err), -PBX_E_UNSUPPORTED);
    }
    pbx_error_free(&err);
    pbx_store_close(store);
}
END_TEST

/*
 * Node ids' claims live in a table of their own, made by the first claim
 * in a file of any schema (one of version 1 here), without a new schema
 * version, so that the file still opens in the pybox that wrote it; a claim
 * persists across close and reopen (another process sees it).
 */
START_TEST(test_node_claims_in_an_old_file)
{
    char *dir = test_dir("nodes-old");
    char *uri = xasprintf("sqlite:%s/pybox.db", dir);
    struct pbx_store_node_holder h = {0};
    struct pbx_store *store;
    sqlite3_stmt *st = NULL;
    sqlite3 *raw = NULL;

    ck_assert_int_eq(sqlite3_open(uri + 7, &raw), SQLITE_OK);
    ck_assert_int_eq(sqlite3_exec(raw, schema_v1, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(raw);
    store = open_ok(uri);
    claim_expect(store, "n1", "tokA", 60000, 1, NULL);
    pbx_store_close(store);
    store = open_ok(uri);
    claim_expect(store, "n1", "tokB", 60000, 0, &h);
    ck_assert_int_eq(h.pid, getpid());
    ck_assert_int_eq(pbx_store_node_release(store, "n1", "tokA", NULL), 1);
    pbx_store_close(store);

    ck_assert_int_eq(sqlite3_open(uri + 7, &raw), SQLITE_OK);
    ck_assert_int_eq(
        sqlite3_prepare_v2(raw, "SELECT group_concat(version) FROM schema_version", -1, &st, NULL),
        SQLITE_OK);
    ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
    ck_assert_str_eq((const char *)sqlite3_column_text(st, 0), "1,2,3");
    sqlite3_finalize(st);
    ck_assert_int_eq(sqlite3_prepare_v2(raw, "SELECT count(*) FROM nodes", -1, &st, NULL),
                     SQLITE_OK);
    ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
    ck_assert_int_eq(sqlite3_column_int(st, 0), 0); /* released */
    sqlite3_finalize(st);
    sqlite3_close(raw);
    free(uri);
    free(dir);
}
END_TEST

static Suite *store_suite(void)
{
    Suite *s = suite_create("store");
    TCase *tc = tcase_create("core");

    tcase_add_unchecked_fixture(tc, base_setup, base_teardown);
    tcase_set_timeout(tc, 60);
    store_cases_add(tc);
    tcase_add_test(tc, test_token_not_stored);
    tcase_add_test(tc, test_files_and_modes);
    tcase_add_test(tc, test_wal_mode);
    tcase_add_test(tc, test_no_windows);
    tcase_add_test(tc, test_relative_path);
    tcase_add_test(tc, test_bad_uris);
    tcase_add_test(tc, test_url_spelling_and_memory);
    tcase_add_test(tc, test_open_errors);
    tcase_add_test(tc, test_newer_schema);
    tcase_add_test(tc, test_upgrade_from_v1);
    tcase_add_test(tc, test_out_of_range_session_policy);
    tcase_add_test(tc, test_open_existing);
    tcase_add_test(tc, test_node_claims_in_an_old_file);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return store_cases_run(store_suite());
}
