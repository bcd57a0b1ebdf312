/*
 * What the store's backends share: the table of their functions, which
 * store.c picks by the URI's scheme and forwards every call of store.h to,
 * and the checks and token making of store.h's contract, so that every
 * backend refuses the same input the same way (store_common.c).
 */
#ifndef PBX_STORE_STORE_IMPL_H
#define PBX_STORE_STORE_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sodium.h>

#include "store/store.h"

/* Random bytes in a token, and the length of "pbx_" + their unpadded base64url. */
#define PBX_STORE_TOKEN_BYTES 32
#define PBX_STORE_TOKEN_LEN   (4 + 43)

/* Characters of the token kept in clear for display: "pbx_" and 6 more (36 bits). */
#define PBX_STORE_PREFIX_LEN 10

#define PBX_STORE_HASH_BYTES crypto_generichash_BYTES /* 32 */

#define PBX_STORE_NAME_MAX    64
#define PBX_STORE_CLIENT_MAX  256
#define PBX_STORE_MODULES_MAX 4096

/*
 * Every backend's struct begins with this one: the dispatcher reads `be`,
 * the backend casts the pointer to its own struct.
 */
struct pbx_store {
    const struct pbx_store_backend *be;
};

/* A key about to be created: checked, its modules normalised, its token made. */
struct pbx_store_new_key {
    char *modules;                            /* normalised, or NULL (owned) */
    char *token;                              /* handed to the caller on success (owned) */
    unsigned char hash[PBX_STORE_HASH_BYTES]; /* what the store keeps of the token */
    char prefix[PBX_STORE_PREFIX_LEN + 1];    /* what it shows of it */
};

/*
 * One backend.  `open` is given the whole URI; the others the store it
 * opened, and their arguments: a quota's client, day and idempotency key
 * checked by store.c already, the rest not (each backend calls the helpers
 * below, in the order of store.h's contract).
 */
struct pbx_store_backend {
    const char *name; /* "sqlite", "redis": for messages */
    int (*open)(const char *uri, bool create, struct pbx_store **out, struct pbx_error **err);
    void (*close)(struct pbx_store *store);
    int (*key_create)(struct pbx_store *store, const char *name,
                      const struct pbx_key_policy *policy, char **token, struct pbx_error **err);
    int (*key_list)(struct pbx_store *store, struct pbx_key_info **keys, size_t *n,
                    struct pbx_error **err);
    int (*key_revoke)(struct pbx_store *store, const char *name, struct pbx_error **err);
    int (*key_lookup)(struct pbx_store *store, const char *token, struct pbx_key_info *info,
                      struct pbx_error **err);
    int (*quota_take)(struct pbx_store *store, const char *client, const char *day, int64_t limit,
                      const char *once, int64_t *count, struct pbx_error **err);
    int (*quota_get)(struct pbx_store *store, const char *client, const char *day, int64_t *count,
                     struct pbx_error **err);
    int (*audit)(struct pbx_store *store, const struct pbx_audit *rec, struct pbx_error **err);
    int (*audit_tail)(struct pbx_store *store, size_t max, char **text, struct pbx_error **err);
    int (*ping)(struct pbx_store *store, struct pbx_error **err);
    /* Shared windows; NULL when the backend keeps none. */
    int (*window_hold)(struct pbx_store *store, const char *client, const char *ticket,
                       int64_t limit, unsigned *retry_after, struct pbx_error **err);
    int (*window_release)(struct pbx_store *store, const char *client, const char *ticket,
                          struct pbx_error **err);
    /* Admission in one call, with shared windows; NULL with window_hold. */
    int (*admit)(struct pbx_store *store, const struct pbx_store_admit *a,
                 struct pbx_store_admission *out, struct pbx_error **err);
    int (*admit_undo)(struct pbx_store *store, const struct pbx_store_admit *a,
                      const struct pbx_store_admission *adm, struct pbx_error **err);
    int (*lease_end)(struct pbx_store *store, const char *client, const char *ticket,
                     struct pbx_error **err);
    /* Node ids' claims, their input checked by store.c; `holder` is never NULL. */
    int (*node_claim)(struct pbx_store *store, const char *node, const char *token, int64_t ttl_ms,
                      struct pbx_store_node_holder *holder, struct pbx_error **err);
    int (*node_release)(struct pbx_store *store, const char *node, const char *token,
                        struct pbx_error **err);
};

extern const struct pbx_store_backend pbx__store_sqlite;
extern const struct pbx_store_backend pbx__store_redis;

/*
 * Check `name` and `policy` (NULL: all defaults) as pbx_store_key_create()
 * documents, and make the key's token, hash and prefix into *out (release
 * with pbx__store_new_key_release()).  PBX_E_INVAL for a bad name or policy.
 */
int pbx__store_new_key(const char *name, const struct pbx_key_policy *policy,
                       struct pbx_store_new_key *out, struct pbx_error **err);
void pbx__store_new_key_release(struct pbx_store_new_key *key);
#define cleanup_new_key __attribute__((cleanup(pbx__store_new_key_release)))

/* `policy`, or all defaults for NULL. */
const struct pbx_key_policy *pbx__store_policy(const struct pbx_key_policy *policy);

/*
 * The hash a lookup of `token` looks for: false (nothing to look up) when
 * the token cannot be one of ours, by its length.
 */
bool pbx__store_token_hash(const char *token, unsigned char hash[PBX_STORE_HASH_BYTES]);

/* A client of 1 to PBX_STORE_CLIENT_MAX bytes and a day "YYYY-MM-DD", or PBX_E_INVAL. */
int pbx__store_check_client_day(const char *client, const char *day, struct pbx_error **err);

/* An idempotency key of pbx_store_quota_take_once() (NULL is none), or PBX_E_INVAL. */
int pbx__store_check_once(const char *once, struct pbx_error **err);

/* A client and a window's ticket as pbx_store_window_hold() takes them, or PBX_E_INVAL. */
int pbx__store_check_ticket(const char *client, const char *ticket, struct pbx_error **err);

/* The fields pbx_store_audit() requires, or PBX_E_INVAL. */
int pbx__store_check_audit(const struct pbx_audit *rec, struct pbx_error **err);

/* The text fields of an audit record, in the order of its JSON line. */
enum pbx_store_audit_text {
    PBX_STORE_AUDIT_CLIENT,
    PBX_STORE_AUDIT_KEY_NAME,
    PBX_STORE_AUDIT_ROUTE,
    PBX_STORE_AUDIT_CODE_SHA256,
    PBX_STORE_AUDIT_STATUS,
    PBX_STORE_AUDIT_TEXTS,
};

/* An audit record read back from a backend. */
struct pbx_store_audit_row {
    int64_t time_ms;
    const char *text[PBX_STORE_AUDIT_TEXTS]; /* NULL: missing; not UTF-8: shown as null */
    size_t len[PBX_STORE_AUDIT_TEXTS];       /* of each text */
    double duration_ms;
};

/* The name of each text field, as the JSON line and the Redis stream name it. */
extern const char *const pbx__store_audit_names[PBX_STORE_AUDIT_TEXTS];

/*
 * Append `row` as one JSON line ("\n"-terminated) to the text *out of *len
 * bytes (NUL-terminated; reallocated), as pbx_store_audit_tail() returns them.
 */
void pbx__store_audit_append(char **out, size_t *len, const struct pbx_store_audit_row *row);

/* A node id and a token as pbx_store_node_claim() takes them, or PBX_E_INVAL. */
int pbx__store_check_node(const char *node, const char *token, struct pbx_error **err);

/* A count of a stored key's policy out of 0..most reads as 0, the server's setting. */
uint32_t pbx__store_count(int64_t v, int64_t most);

#endif
