/*
 * What the files of the Redis store share: its struct, its scripts' ids,
 * one command's or script's call (store_redis.c), and the operations of its
 * backend table that store_redis_keys.c and store_redis_admit.c define.
 */
#ifndef PBX_STORE_STORE_REDIS_INTERNAL_H
#define PBX_STORE_STORE_REDIS_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

#include "common/error.h"
#include "store/redis_conn.h"
#include "store/store_impl.h"

/* The longest field of a record read back; a longer one is malformed. */
#define PBX_REDIS_FIELD_MAX 8192

/* The store's Lua scripts (store_redis.c), each loaded once and run by its SHA-1. */
enum pbx_redis_script {
    PBX_REDIS_SC_CREATE, /* a key's record, its name's and its order's entries */
    PBX_REDIS_SC_REVOKE, /* a key's revocation */
    PBX_REDIS_SC_QUOTA,  /* a charge of a day's quota */
    PBX_REDIS_SC_WINDOW, /* a place in a client's shared window */
    PBX_REDIS_SC_ADMIT,  /* an admission: the window, the day's quota and the lease */
    PBX_REDIS_SC_UNDO,   /* an admission given back */
    PBX_REDIS_SC_NODE,   /* a node id's claim or release */
    PBX_REDIS_SC_COUNT,  /* the number of scripts; as a call's id: a plain command */
};

struct pbx_redis_store {
    struct pbx_store base;            /* first: what store.c dispatches on */
    struct pbx_redis_pool pool;       /* the server and the connections to it */
    bool create;                      /* the first call writes the layout's version */
    char sha[PBX_REDIS_SC_COUNT][41]; /* the scripts' SHA-1s, once prepared */
};

/*
 * EVALSHA of script `id` with `nkeys` keys among `argv`; its text once more
 * (SCRIPT LOAD) when Redis lost it (NOSCRIPT: a restart, SCRIPT FLUSH).  An
 * error reply is an error; NULL either way.
 */
redisReply *pbx__store_redis_eval(struct pbx_redis_store *rs, struct pbx_redis_call *call,
                                  enum pbx_redis_script id, int nkeys, int argc, const char **argv,
                                  const char *what, struct pbx_error **err);

/* One command or one script, as pbx__store_redis_run() makes it a call of its own. */
struct pbx_redis_store_call {
    const char *what;         /* for messages */
    bool may_retry;           /* it only reads, or changes nothing run twice */
    enum pbx_redis_script id; /* PBX_REDIS_SC_COUNT: argv is a command */
    int nkeys;                /* a script's keys among argv */
    int argc;
    const char **argv;
    int type; /* REDIS_REPLY_* the reply must be, or -1 */
};

/*
 * One command (id PBX_REDIS_SC_COUNT) or one script of a call of its own:
 * 0 and *reply (caller frees), or < 0 with *err.  A reply not of `type`
 * (-1: any, the caller checks) is malformed and its connection dropped.
 */
int pbx__store_redis_run(struct pbx_redis_store *rs, const struct pbx_redis_store_call *one,
                         redisReply **reply, struct pbx_error **err);

/* Keys and the audit log (store_redis_keys.c), as struct pbx_store_backend's. */
int pbx__store_redis_key_create(struct pbx_store *base, const char *name,
                                const struct pbx_key_policy *policy, char **token,
                                struct pbx_error **err);
int pbx__store_redis_key_list(struct pbx_store *base, struct pbx_key_info **keys, size_t *n,
                              struct pbx_error **err);
int pbx__store_redis_key_revoke(struct pbx_store *base, const char *name, struct pbx_error **err);
int pbx__store_redis_key_lookup(struct pbx_store *base, const char *token,
                                struct pbx_key_info *info, struct pbx_error **err);
int pbx__store_redis_audit(struct pbx_store *base, const struct pbx_audit *rec,
                           struct pbx_error **err);
int pbx__store_redis_audit_tail(struct pbx_store *base, size_t max, char **text,
                                struct pbx_error **err);

/*
 * Quotas, shared windows, admissions, leases and node ids' claims
 * (store_redis_admit.c), as struct pbx_store_backend's.
 */
int pbx__store_redis_quota_take(struct pbx_store *base, const char *client, const char *day,
                                int64_t limit, const char *once, int64_t *count,
                                struct pbx_error **err);
int pbx__store_redis_quota_get(struct pbx_store *base, const char *client, const char *day,
                               int64_t *count, struct pbx_error **err);
int pbx__store_redis_window_hold(struct pbx_store *base, const char *client, const char *ticket,
                                 int64_t limit, unsigned *retry_after, struct pbx_error **err);
int pbx__store_redis_window_release(struct pbx_store *base, const char *client, const char *ticket,
                                    struct pbx_error **err);
int pbx__store_redis_admit(struct pbx_store *base, const struct pbx_store_admit *a,
                           struct pbx_store_admission *out, struct pbx_error **err);
int pbx__store_redis_admit_undo(struct pbx_store *base, const struct pbx_store_admit *a,
                                const struct pbx_store_admission *adm, struct pbx_error **err);
int pbx__store_redis_lease_end(struct pbx_store *base, const char *client, const char *ticket,
                               struct pbx_error **err);
int pbx__store_redis_node_claim(struct pbx_store *base, const char *node, const char *token,
                                int64_t ttl_ms, struct pbx_store_node_holder *holder,
                                struct pbx_error **err);
int pbx__store_redis_node_release(struct pbx_store *base, const char *node, const char *token,
                                  struct pbx_error **err);

#endif
