/* The keys kept for a store outage (key_cache.h): a small table, least recently seen out. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "common/xalloc.h"
#include "server/key_cache.h"
#include "common/banned.h"

struct entry {
    unsigned char hash[crypto_hash_sha256_BYTES]; /* of the token */
    char *name;                                   /* the key's (owned), NULL: a free entry */
    struct pbx_key_policy policy;                 /* its policy (modules owned) */
    uint64_t seen_ms;                             /* when the store last found it */
};

struct key_cache {
    pthread_mutex_t lock;
    struct entry entries[KEY_CACHE_ENTRIES];
};

struct key_cache *pbx__key_cache_new(void)
{
    struct key_cache *kc = xcalloc(1, sizeof(*kc));

    pthread_mutex_init(&kc->lock, NULL);
    return kc;
}

static void clear(struct entry *e)
{
    free(e->name);
    free(e->policy.modules);
    memset(e, 0, sizeof(*e));
}

void pbx__key_cache_free(struct key_cache *kc)
{
    if (kc == NULL)
        return;
    for (size_t i = 0; i < KEY_CACHE_ENTRIES; i++)
        clear(&kc->entries[i]);
    pthread_mutex_destroy(&kc->lock);
    free(kc);
}

/* The entry of `hash` (locked), or NULL. */
static struct entry *find_locked(struct key_cache *kc, const unsigned char *hash)
{
    for (size_t i = 0; i < KEY_CACHE_ENTRIES; i++) {
        struct entry *e = &kc->entries[i];

        if (e->name != NULL && sodium_memcmp(e->hash, hash, sizeof(e->hash)) == 0)
            return e;
    }
    return NULL;
}

static void hash_of(const char *token, unsigned char *hash)
{
    crypto_hash_sha256(hash, (const unsigned char *)token, strlen(token));
}

void pbx__key_cache_put(struct key_cache *kc, const char *token, const char *name,
                        const struct pbx_key_policy *policy, uint64_t now_ms)
{
    unsigned char hash[crypto_hash_sha256_BYTES];
    struct entry *e;

    hash_of(token, hash);
    pthread_mutex_lock(&kc->lock);
    e = find_locked(kc, hash);
    if (e == NULL) {
        /* A free entry, else the least recently seen. */
        e = &kc->entries[0];
        for (size_t i = 0; i < KEY_CACHE_ENTRIES && e->name != NULL; i++) {
            struct entry *x = &kc->entries[i];

            if (x->name == NULL || x->seen_ms < e->seen_ms)
                e = x;
        }
    }
    clear(e);
    memcpy(e->hash, hash, sizeof(hash));
    e->name = xstrdup(name);
    e->policy = *policy;
    e->policy.modules = policy->modules != NULL ? xstrdup(policy->modules) : NULL;
    e->seen_ms = now_ms;
    pthread_mutex_unlock(&kc->lock);
    sodium_memzero(hash, sizeof(hash));
}

void pbx__key_cache_forget(struct key_cache *kc, const char *token)
{
    unsigned char hash[crypto_hash_sha256_BYTES];
    struct entry *e;

    hash_of(token, hash);
    pthread_mutex_lock(&kc->lock);
    e = find_locked(kc, hash);
    if (e != NULL)
        clear(e);
    pthread_mutex_unlock(&kc->lock);
}

int pbx__key_cache_get(struct key_cache *kc, const char *token, uint64_t now_ms, char **name,
                       struct pbx_key_policy *policy)
{
    unsigned char hash[crypto_hash_sha256_BYTES];
    struct entry *e;
    int found = 0;

    hash_of(token, hash);
    pthread_mutex_lock(&kc->lock);
    e = find_locked(kc, hash);
    if (e != NULL && now_ms - e->seen_ms <= KEY_CACHE_TTL_S * 1000u) {
        *name = xstrdup(e->name);
        *policy = e->policy;
        policy->modules = e->policy.modules != NULL ? xstrdup(e->policy.modules) : NULL;
        found = 1;
    }
    pthread_mutex_unlock(&kc->lock);
    return found;
}
