/*
 * The keys a node has seen, kept for when its store stops answering: a
 * lookup that succeeded is remembered (by the SHA-256 of the token, never the
 * token), and while the store fails a key seen within KEY_CACHE_TTL_S is
 * served from here.  While the store answers every lookup goes to it, so a
 * revoked key is refused at once; during an outage a key revoked elsewhere
 * may be served for at most that long.  Not an interface for anything
 * outside src/server.
 */
#ifndef PBX_SERVER_KEY_CACHE_H
#define PBX_SERVER_KEY_CACHE_H

#include <stdint.h>

#include "policy/caller.h"

#define KEY_CACHE_TTL_S   60u   /* how long a key is served from here while the store fails */
#define KEY_CACHE_ENTRIES 1024u /* keys remembered, the least recently seen forgotten first */

struct key_cache;

struct key_cache *pbx__key_cache_new(void);
void pbx__key_cache_free(struct key_cache *kc);

/* The store found `token`'s key `name` with `policy` (copied) at `now_ms` (monotonic). */
void pbx__key_cache_put(struct key_cache *kc, const char *token, const char *name,
                        const struct pbx_key_policy *policy, uint64_t now_ms);

/* The store said `token` is no live key: forget it. */
void pbx__key_cache_forget(struct key_cache *kc, const char *token);

/*
 * The store failed: `token`'s key if it was seen within KEY_CACHE_TTL_S of
 * `now_ms` (1, *name and *policy the caller's to free), else 0.
 */
int pbx__key_cache_get(struct key_cache *kc, const char *token, uint64_t now_ms, char **name,
                       struct pbx_key_policy *policy);

#endif
