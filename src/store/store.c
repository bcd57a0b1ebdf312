/*
 * The store's dispatcher: picks the backend by the URI's scheme and forwards
 * every call of store.h to it.  "sqlite:PATH" is store_sqlite.c, the
 * embedded default; "redis://HOST[:PORT][/DB]" is store_redis.c, a store
 * that several servers share.
 */
#include <stdlib.h>
#include <string.h>

#include "common/xalloc.h"
#include "store/store_impl.h"
#include "common/banned.h"

/* The backend of `uri` in *be, or < 0 with *err set. */
static int backend_of(const char *uri, const struct pbx_store_backend **be, struct pbx_error **err)
{
    *be = NULL;
    if (uri == NULL)
        return pbx_error_set(err, PBX_E_INVAL,
                             "no store given: use sqlite:PATH or redis://HOST:PORT");
    if (strncmp(uri, "sqlite:", 7) == 0)
        *be = &pbx__store_sqlite;
    else if (strncmp(uri, "redis://", 8) == 0)
        *be = &pbx__store_redis;
    else if (strncmp(uri, "rediss://", 9) == 0)
        return pbx_error_set(err, PBX_E_UNSUPPORTED,
                             "store: Redis over TLS (rediss://) is not supported by this build "
                             "of pybox; use redis:// to a local Redis or through a TLS tunnel");
    else
        return pbx_error_set(err, PBX_E_UNSUPPORTED,
                             "store `%s`: unknown kind of store; use sqlite:PATH or "
                             "redis://HOST:PORT",
                             uri);
    return 0;
}

static int open_uri(const char *uri, bool create, struct pbx_store **out, struct pbx_error **err)
{
    const struct pbx_store_backend *be = NULL;
    int r;

    *out = NULL;
    r = backend_of(uri, &be, err);
    if (r == 0)
        r = be->open(uri, create, out, err);
    if (r < 0)
        return r;
    PBX_ASSERT(*out != NULL && (*out)->be == be);
    return 0;
}

char *pbx_store_uri_redact(const char *uri)
{
    const char *auth;
    const char *at;

    if (uri == NULL)
        return NULL;
    if (strncmp(uri, "redis://", 8) != 0 && strncmp(uri, "rediss://", 9) != 0)
        return xstrdup(uri);
    auth = strchr(uri, ':') + 3;
    at = strrchr(auth, '@');
    if (at == NULL)
        return xstrdup(uri);
    return xasprintf("%.*s%s", (int)(auth - uri), uri, at + 1);
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
    if (store != NULL)
        store->be->close(store);
}

int pbx_store_key_create(struct pbx_store *store, const char *name,
                         const struct pbx_key_policy *policy, char **token, struct pbx_error **err)
{
    PBX_ASSERT(store != NULL);
    return store->be->key_create(store, name, policy, token, err);
}

int pbx_store_key_list(struct pbx_store *store, struct pbx_key_info **keys, size_t *n,
                       struct pbx_error **err)
{
    PBX_ASSERT(store != NULL);
    return store->be->key_list(store, keys, n, err);
}

int pbx_store_key_revoke(struct pbx_store *store, const char *name, struct pbx_error **err)
{
    PBX_ASSERT(store != NULL);
    return store->be->key_revoke(store, name, err);
}

int pbx_store_key_lookup(struct pbx_store *store, const char *token, struct pbx_key_info *info,
                         struct pbx_error **err)
{
    PBX_ASSERT(store != NULL);
    return store->be->key_lookup(store, token, info, err);
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

int pbx_store_quota_take(struct pbx_store *store, const char *client, const char *day,
                         int64_t limit, int64_t *count, struct pbx_error **err)
{
    return pbx_store_quota_take_once(store, client, day, limit, NULL, count, err);
}

int pbx_store_quota_take_once(struct pbx_store *store, const char *client, const char *day,
                              int64_t limit, const char *once, int64_t *count,
                              struct pbx_error **err)
{
    int r;

    PBX_ASSERT(store != NULL);
    /* Checked here, once for every backend: a backend is handed only well-formed input. */
    r = pbx__store_check_client_day(client, day, err);
    if (r == 0)
        r = pbx__store_check_once(once, err);
    if (r < 0)
        return r;
    return store->be->quota_take(store, client, day, limit, once, count, err);
}

bool pbx_store_has_windows(const struct pbx_store *store)
{
    PBX_ASSERT(store != NULL);
    return store->be->window_hold != NULL;
}

int pbx_store_window_hold(struct pbx_store *store, const char *client, const char *ticket,
                          int64_t limit, unsigned *retry_after, struct pbx_error **err)
{
    PBX_ASSERT(store != NULL);
    *retry_after = 0;
    if (store->be->window_hold == NULL)
        return pbx_error_set(err, PBX_E_UNSUPPORTED, "the %s store keeps no shared rate windows",
                             store->be->name);
    return store->be->window_hold(store, client, ticket, limit, retry_after, err);
}

int pbx_store_window_release(struct pbx_store *store, const char *client, const char *ticket,
                             struct pbx_error **err)
{
    PBX_ASSERT(store != NULL);
    if (store->be->window_release == NULL)
        return pbx_error_set(err, PBX_E_UNSUPPORTED, "the %s store keeps no shared rate windows",
                             store->be->name);
    return store->be->window_release(store, client, ticket, err);
}

/* What every admission call checks before a backend sees it. */
static int check_admit(const struct pbx_store *store, const struct pbx_store_admit *a,
                       struct pbx_error **err)
{
    int r;

    if (store->be->admit == NULL)
        return pbx_error_set(err, PBX_E_UNSUPPORTED, "the %s store keeps no shared rate windows",
                             store->be->name);
    r = pbx__store_check_ticket(a->client, a->ticket, err);
    if (r == 0)
        r = pbx__store_check_once(a->once, err);
    if (r == 0 && a->concurrency >= 0 && a->lease_ms == 0)
        r = pbx_error_set(err, PBX_E_INVAL, "a lease of 0 ms");
    if (r == 0 && a->once_ttl_s > 86400)
        r = pbx_error_set(err, PBX_E_INVAL, "an idempotency key's mark is kept a day at most");
    return r;
}

int pbx_store_admit(struct pbx_store *store, const struct pbx_store_admit *a,
                    struct pbx_store_admission *out, struct pbx_error **err)
{
    int r;

    PBX_ASSERT(store != NULL && a != NULL && out != NULL);
    *out = (struct pbx_store_admission){0};
    r = check_admit(store, a, err);
    if (r < 0)
        return r;
    return store->be->admit(store, a, out, err);
}

int pbx_store_admit_undo(struct pbx_store *store, const struct pbx_store_admit *a,
                         const struct pbx_store_admission *adm, struct pbx_error **err)
{
    int r;

    PBX_ASSERT(store != NULL && a != NULL && adm != NULL);
    r = check_admit(store, a, err);
    if (r == 0)
        r = pbx__store_check_client_day(a->client, adm->day, err);
    if (r < 0)
        return r;
    if (adm->verdict != PBX_STORE_ADMITTED)
        return 0; /* nothing was charged */
    return store->be->admit_undo(store, a, adm, err);
}

int pbx_store_lease_end(struct pbx_store *store, const char *client, const char *ticket,
                        struct pbx_error **err)
{
    int r;

    PBX_ASSERT(store != NULL);
    if (store->be->lease_end == NULL)
        return pbx_error_set(err, PBX_E_UNSUPPORTED, "the %s store keeps no shared leases",
                             store->be->name);
    r = pbx__store_check_ticket(client, ticket, err);
    if (r < 0)
        return r;
    return store->be->lease_end(store, client, ticket, err);
}

int pbx_store_quota_get(struct pbx_store *store, const char *client, const char *day,
                        int64_t *count, struct pbx_error **err)
{
    int r;

    PBX_ASSERT(store != NULL);
    r = pbx__store_check_client_day(client, day, err);
    if (r < 0)
        return r;
    return store->be->quota_get(store, client, day, count, err);
}

int pbx_store_audit(struct pbx_store *store, const struct pbx_audit *rec, struct pbx_error **err)
{
    PBX_ASSERT(store != NULL);
    return store->be->audit(store, rec, err);
}

int pbx_store_audit_tail(struct pbx_store *store, size_t max, char **text, struct pbx_error **err)
{
    PBX_ASSERT(store != NULL);
    return store->be->audit_tail(store, max, text, err);
}

int pbx_store_ping(struct pbx_store *store, struct pbx_error **err)
{
    PBX_ASSERT(store != NULL);
    return store->be->ping(store, err);
}

int pbx_store_node_claim(struct pbx_store *store, const char *node, const char *token,
                         int64_t ttl_ms, struct pbx_store_node_holder *holder,
                         struct pbx_error **err)
{
    struct pbx_store_node_holder unused;
    int r;

    PBX_ASSERT(store != NULL);
    if (holder == NULL)
        holder = &unused;
    *holder = (struct pbx_store_node_holder){0};
    r = pbx__store_check_node(node, token, err);
    if (r < 0)
        return r;
    if (ttl_ms < 1 || ttl_ms > PBX_STORE_NODE_TTL_MAX_MS)
        return pbx_error_set(err, PBX_E_INVAL, "node claim: the TTL must be 1 to %d ms",
                             PBX_STORE_NODE_TTL_MAX_MS);
    r = store->be->node_claim(store, node, token, ttl_ms, holder, err);
    /* The host name comes from the store, to be logged: printable ASCII only. */
    for (char *c = holder->host; *c != '\0'; c++) {
        if (*c < 0x20 || *c > 0x7e)
            *c = '?';
    }
    return r;
}

int pbx_store_node_release(struct pbx_store *store, const char *node, const char *token,
                           struct pbx_error **err)
{
    int r;

    PBX_ASSERT(store != NULL);
    r = pbx__store_check_node(node, token, err);
    if (r < 0)
        return r;
    return store->be->node_release(store, node, token, err);
}
