/*
 * The store: API keys and their policies, daily quotas, the audit log, the
 * claims on node ids.  One interface, two backends chosen by the URI
 * (store.c): the embedded default, a SQLite file in WAL mode
 * (store_sqlite.c), and Redis, which several servers share (store_redis.c).
 * Every function is thread-safe on one store.
 */
#ifndef PBX_STORE_STORE_H
#define PBX_STORE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "policy/caller.h" /* struct pbx_key_policy: what a key may do is policy's */

struct pbx_store;

struct pbx_key_info {
    int64_t id;                   /* row id */
    char *name;                   /* unique name (owned) */
    char *prefix;                 /* first characters of the token, for display (owned) */
    int64_t created;              /* Unix time, seconds */
    bool revoked;                 /* revoked keys never authenticate */
    struct pbx_key_policy policy; /* its policy */
};

/*
 * Open (creating if needed) the store at `uri`: "sqlite:PATH", PATH absolute
 * or relative ("sqlite:///abs/path" also reads as /abs/path; "sqlite::memory:"
 * is a private in-memory store).  Missing directories of PATH are created
 * 0700, the database file 0600.  Or
 * "redis://[[USER]:PASSWORD@]HOST[:PORT][/DB][?timeout_ms=N&pool=N]": a
 * Redis server (port 6379, database 0, 200 ms and 4 connections unless
 * given), not reached at open, so that a server starts while Redis is down:
 * each call connects if it must (its first also loads the scripts and
 * checks the layout's version) and fails rather than wait longer than the
 * timeout, with the errno of an unreachable server (e.g. ECONNREFUSED or
 * ETIMEDOUT), at once during the backoff after a failure; once the server
 * answers, calls succeed.  A URI of another kind (rediss:// among them) fails with
 * PBX_E_UNSUPPORTED, an empty PATH or a malformed redis:// URI with
 * PBX_E_INVAL.  A store of an older
 * pybox is upgraded to this one's schema in place, in one transaction (its
 * keys keep their policies; what they did not have is the server's
 * setting); one of a newer pybox fails with PBX_E_UNSUPPORTED (Redis: each
 * call, until the layout is one this pybox knows).  Close with
 * pbx_store_close().
 */
int pbx_store_open(const char *uri, struct pbx_store **out, struct pbx_error **err);

/*
 * `uri` as messages and logs may show it: a copy (caller frees) without the
 * user and password of a redis:// URI; NULL for NULL.
 */
char *pbx_store_uri_redact(const char *uri);

/*
 * Like pbx_store_open(), but never creates the database file or its
 * directories: PBX_E_NOTFOUND when the file does not exist (a Redis store
 * is opened as by pbx_store_open(), its layout's version not written: the
 * first call of a command against an unreachable one fails).  For commands
 * that only read or change what is there (`pybox keys list`, `revoke`).
 */
int pbx_store_open_existing(const char *uri, struct pbx_store **out, struct pbx_error **err);

/* Close `store` and free it; NULL is fine. */
void pbx_store_close(struct pbx_store *store);

/*
 * Create a key named `name` (unique among keys, revoked ones included) with
 * `policy`.  The token, "pbx_" and 43 base64url characters from libsodium's
 * randombytes, is returned once in *token (caller frees); only its hash is
 * stored.  Names are 1 to 64 of [A-Za-z0-9._@-]; policy->modules may be
 * space- or comma-separated and is stored space-separated; policy->sessions
 * is at most PBX_CALLER_SESSIONS_MAX and the session spans at most
 * PBX_CALLER_SPAN_MAX_S, policy->concurrency -1 to PBX_STORE_CONCURRENCY_MAX;
 * a NULL policy is all defaults.  PBX_E_INVAL for a bad name or policy,
 * EEXIST for a taken name.
 */
#define PBX_STORE_CONCURRENCY_MAX 100000
int pbx_store_key_create(struct pbx_store *store, const char *name,
                         const struct pbx_key_policy *policy, char **token, struct pbx_error **err);

/* All keys, oldest first; free with pbx_key_info_free_array(). */
int pbx_store_key_list(struct pbx_store *store, struct pbx_key_info **keys, size_t *n,
                       struct pbx_error **err);

/* Revoke the key named `name`: PBX_E_NOTFOUND when there is none. */
int pbx_store_key_revoke(struct pbx_store *store, const char *name, struct pbx_error **err);

/*
 * Find the live (not revoked) key whose token is `token`: returns 1 and fills
 * *info, 0 when none matches.  Compares hashes in constant time.
 */
int pbx_store_key_lookup(struct pbx_store *store, const char *token, struct pbx_key_info *info,
                         struct pbx_error **err);

void pbx_key_info_release(struct pbx_key_info *info);
void pbx_key_info_free_array(struct pbx_key_info *keys, size_t n);

/*
 * Charge one request to `client` on UTC day `day` ("YYYY-MM-DD") if its count
 * is below `limit` (limit < 0: unlimited; 0 refuses all): returns 1 and the
 * new count in *count, or 0 and the current count when the limit is reached.
 * Atomic across threads and processes: one SQL statement does the check and
 * the increment.  PBX_E_INVAL for an empty client or a malformed day.
 */
int pbx_store_quota_take(struct pbx_store *store, const char *client, const char *day,
                         int64_t limit, int64_t *count, struct pbx_error **err);

/*
 * Like pbx_store_quota_take(), but charged at most once for `once` (NULL:
 * every call counts): a later call with the same `once` for the same
 * client and day returns 1 and the count without counting again (an
 * idempotency key, 1 to PBX_STORE_ONCE_MAX bytes of visible ASCII, else
 * PBX_E_INVAL).  Redis remembers a key for a day, SQLite as long as the
 * day's counter.
 */
#define PBX_STORE_ONCE_MAX 128
int pbx_store_quota_take_once(struct pbx_store *store, const char *client, const char *day,
                              int64_t limit, const char *once, int64_t *count,
                              struct pbx_error **err);

/*
 * A per-minute window of `client` shared by every server of the store: a
 * sliding 60 s by the store's own clock.  Hold a place for `ticket` (one
 * request's unique id, 1 to 64 of [A-Za-z0-9_-]) when fewer than `limit`
 * places (holds and charges alike) were taken in the last 60 s: returns 1;
 * else 0 and in *retry_after the seconds (1 to 60) until the oldest leaves.
 * A hold is the charge: keep it when the request is admitted, release it
 * (pbx_store_window_release()) when not; one never released (a server that
 * died) leaves the window 60 s after it was taken.  PBX_E_UNSUPPORTED when
 * the store keeps no windows (SQLite: one server keeps its own in memory).
 */
int pbx_store_window_hold(struct pbx_store *store, const char *client, const char *ticket,
                          int64_t limit, unsigned *retry_after, struct pbx_error **err);

/* Give a hold of pbx_store_window_hold() back; none held is fine. */
int pbx_store_window_release(struct pbx_store *store, const char *client, const char *ticket,
                             struct pbx_error **err);

/* Whether the store keeps shared windows (Redis), so pbx_store_window_hold() applies. */
bool pbx_store_has_windows(const struct pbx_store *store);

/*
 * One request's admission in one call to the store: its per-minute window,
 * its daily quota and its concurrency lease, checked and, when all three
 * have room, charged together and atomically, by the store's own clock
 * (the UTC day included).  For a store with shared windows (Redis;
 * PBX_E_UNSUPPORTED otherwise: SQLite's server keeps windows and leases
 * itself and charges with pbx_store_quota_take_once()).
 */
struct pbx_store_admit {
    const char *client;  /* whose: 1 to PBX_STORE_CLIENT_MAX bytes */
    const char *ticket;  /* the request's own id: its window place and its lease (as a window's) */
    const char *once;    /* an idempotency key (as pbx_store_quota_take_once()'s), or NULL */
    uint32_t once_ttl_s; /* how long its mark is kept: 0 for a day, else 1 to 86400 s */
    int64_t rpm;         /* places in the window (< 0: no limit) */
    int64_t rpd;         /* charges in the UTC day (< 0: no limit) */
    int64_t concurrency; /* leases at once (< 0: no limit, and no lease taken) */
    uint32_t lease_ms;   /* how long a lease lasts unless ended: the longest the request may take */
};

enum pbx_store_verdict {
    PBX_STORE_ADMITTED,   /* charged */
    PBX_STORE_RATE,       /* the window is full */
    PBX_STORE_QUOTA,      /* the day's quota is spent */
    PBX_STORE_CONCURRENT, /* as many leases as allowed are held */
};

struct pbx_store_admission {
    enum pbx_store_verdict verdict;
    bool repeat;          /* admitted: `once` was charged before, so the day's count was not */
    bool leased;          /* admitted: a lease is held (pbx_store_lease_end() ends it) */
    int64_t today;        /* the day's count (after the charge) */
    unsigned retry_after; /* refused: seconds (at least 1) until that limit has room */
    char day[11];         /* the UTC day of the charge, "YYYY-MM-DD" */
};

/*
 * Admit `a`: 0 with *out (its verdict says whether it was charged), or < 0
 * with *err (nothing charged).  Refused, nothing is charged; a repeat of
 * `once` is charged in the window and leased, not counted in the day again.
 */
int pbx_store_admit(struct pbx_store *store, const struct pbx_store_admit *a,
                    struct pbx_store_admission *out, struct pbx_error **err);

/*
 * Give back all that admitting `a` as `adm` charged (its window place, its
 * day's count unless a repeat, with the idempotency key's mark, and its
 * lease), for a request refused after its admission (no slot).
 */
int pbx_store_admit_undo(struct pbx_store *store, const struct pbx_store_admit *a,
                         const struct pbx_store_admission *adm, struct pbx_error **err);

/* End the lease of `ticket` (none is fine); one never ended lasts its lease_ms. */
int pbx_store_lease_end(struct pbx_store *store, const char *client, const char *ticket,
                        struct pbx_error **err);

/* The count of `client` on `day` (0 when none). */
int pbx_store_quota_get(struct pbx_store *store, const char *client, const char *day,
                        int64_t *count, struct pbx_error **err);

struct pbx_audit {
    int64_t time_ms;         /* Unix time, milliseconds */
    const char *client;      /* client address */
    const char *key_name;    /* NULL when anonymous */
    const char *route;       /* "/execute" or "/v1/execute" */
    const char *code_sha256; /* hex SHA-256 of the code */
    const char *status;      /* result status, or the error type */
    double duration_ms;      /* execution time */
};

/* Append one record to the audit log. */
int pbx_store_audit(struct pbx_store *store, const struct pbx_audit *rec, struct pbx_error **err);

/* The newest `max` audit records as JSON lines (caller frees), for tests and operators. */
int pbx_store_audit_tail(struct pbx_store *store, size_t max, char **text, struct pbx_error **err);

/*
 * Whether the store answers now, for a readiness check: 0, or < 0 with *err
 * (Redis: a PING within the timeout, failing at once during a backoff;
 * SQLite: a query of the open file).
 */
int pbx_store_ping(struct pbx_store *store, struct pbx_error **err);

/*
 * A claim on a node id (pybox serve --node-id), so that two running servers
 * never hold one id: `node` is 1 to PBX_STORE_NODE_MAX of [A-Za-z0-9_-],
 * `token` (1 to PBX_STORE_NODE_TOKEN_MAX of the same) says which server
 * start holds it, a random value made once per start; `ttl_ms` (1 to
 * PBX_STORE_NODE_TTL_MAX_MS) how long the claim lasts past this call.
 * Returns 1 when the claim is this token's now (claimed, or renewed: the
 * same call renews), 0 when another token holds it and its claim has not
 * lapsed, < 0 with *err on failure (PBX_E_INVAL for bad input, the errno of
 * an unreachable store).  *holder (NULL: not wanted) is the claim as the
 * store keeps it, the other's on 0, this call's on 1.  The claim records
 * the calling process's pid and host name, for messages (read back with
 * any byte that is not printable ASCII shown as `?`).
 *
 * Its clock is the store's: Redis's TIME for a Redis store, so that nodes
 * whose clocks disagree still agree on when a claim lapses (the claim is
 * a key that expires); for a SQLite store, which only processes of one
 * machine share, the machine's wall clock (a clock set back by some time
 * keeps a lapsed claim that much longer).
 */
#define PBX_STORE_NODE_MAX        64
#define PBX_STORE_NODE_TOKEN_MAX  64
#define PBX_STORE_NODE_TTL_MAX_MS 3600000
#define PBX_STORE_NODE_HOST_MAX   255

struct pbx_store_node_holder {
    int64_t pid;                            /* the holder's process id (0: not known) */
    char host[PBX_STORE_NODE_HOST_MAX + 1]; /* its host name ("" when not known) */
    int64_t renewed_ms;                     /* when it last claimed or renewed (Unix ms) */
    int64_t age_ms;                         /* how long ago that was, by the store's clock */
    int64_t left_ms;                        /* until the claim lapses unless renewed */
};

int pbx_store_node_claim(struct pbx_store *store, const char *node, const char *token,
                         int64_t ttl_ms, struct pbx_store_node_holder *holder,
                         struct pbx_error **err);

/*
 * Give the claim on `node` up if `token` holds it: 1 when it did, 0 when
 * another token (or none) holds it, which is left as it is.
 */
int pbx_store_node_release(struct pbx_store *store, const char *node, const char *token,
                           struct pbx_error **err);

#endif
