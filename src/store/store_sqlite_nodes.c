/*
 * The SQLite store's claims on node ids (pybox serve --node-id): the nodes
 * table, a claim's or renewal's transaction, the holder read back, and a
 * claim's release.
 */
#include <stdint.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "common/clock.h"
#include "store/store_impl.h"
#include "store/store_sqlite_internal.h"
#include "common/banned.h"

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

/* The claim's statements, inside the transaction of pbx__store_sqlite_node_claim(). */
static int node_claim_locked(struct pbx_sqlite_store *store, const char *node, const char *token,
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

    r = pbx__store_sqlite_exec(store, nodes_table, err);
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
            return pbx__store_sqlite_db_error(store, rc, err, "claim a node id");
        return 1;
    }
    if (rc != SQLITE_DONE)
        return pbx__store_sqlite_db_error(store, rc, err, "claim a node id");
    /* Held by another token: who, for the caller's message. */
    rc = sqlite3_prepare_v2(store->db, node_get_sql, -1, &get, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(get, 1, node, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(get);
    if (rc != SQLITE_ROW)
        return pbx__store_sqlite_db_error(store, rc, err, "read a node id's claim");
    node_read(get, now, holder);
    return 0;
}

int pbx__store_sqlite_node_claim(struct pbx_store *base, const char *node, const char *token,
                                 int64_t ttl_ms, struct pbx_store_node_holder *holder,
                                 struct pbx_error **err)
{
    struct pbx_sqlite_store *store = (struct pbx_sqlite_store *)base;
    cleanup_unlock pthread_mutex_t *locked = pbx__store_sqlite_lock(store);
    int r;

    /* One write transaction: the claim and the read of the holder see one state. */
    r = pbx__store_sqlite_exec(store, "BEGIN IMMEDIATE", err);
    if (r < 0)
        return r;
    r = node_claim_locked(store, node, token, ttl_ms, holder, err);
    if (r >= 0) {
        int c = pbx__store_sqlite_exec(store, "COMMIT", err);

        if (c < 0)
            r = c;
    }
    if (r < 0)
        sqlite3_exec(store->db, "ROLLBACK", NULL, NULL, NULL);
    return r;
}

int pbx__store_sqlite_node_release(struct pbx_store *base, const char *node, const char *token,
                                   struct pbx_error **err)
{
    struct pbx_sqlite_store *store = (struct pbx_sqlite_store *)base;
    cleanup_unlock pthread_mutex_t *locked = pbx__store_sqlite_lock(store);
    cleanup_stmt sqlite3_stmt *st = NULL;
    int rc;
    int r;

    r = pbx__store_sqlite_exec(store, nodes_table, err);
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
        return pbx__store_sqlite_db_error(store, rc, err, "release a node id");
    return sqlite3_changes(store->db) > 0 ? 1 : 0;
}
