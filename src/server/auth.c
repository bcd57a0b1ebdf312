/*
 * Who sent a request: the API key its headers carry (`Authorization: Bearer
 * KEY`, or `X-API-Key: KEY`, as many APIs take it), else the `api_key` of a
 * compatible body, resolved against the store's keys by src/policy/caller.c.
 *
 * A header that tries to authenticate and fails to is refused, never read
 * as no key: `Authorization: KEY` without its scheme, another scheme
 * (`Basic ...`), an empty token, a header given twice or two headers naming
 * different keys would otherwise run with the anonymous policy, and the
 * caller would believe the key works until the anonymous quota bites.  No
 * refusal repeats what the header held: it may be a key.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/cleanup.h"
#include "common/log.h"
#include "common/clock.h"
#include "server/internal.h"
#include "server/key_cache.h"
#include "common/banned.h"

/* The credential headers of a request, each counted. */
struct credentials {
    unsigned nauth;     /* Authorization headers */
    const char *auth;   /* the first one's value */
    unsigned napikey;   /* X-API-Key headers */
    const char *apikey; /* the first one's value */
};

static enum MHD_Result count_credentials(void *cls, enum MHD_ValueKind kind, const char *key,
                                         const char *value)
{
    struct credentials *cr = cls;

    (void)kind;
    if (key == NULL)
        return MHD_YES;
    if (strcasecmp(key, "Authorization") == 0 && cr->nauth++ == 0)
        cr->auth = value != NULL ? value : "";
    else if (strcasecmp(key, "X-API-Key") == 0 && cr->napikey++ == 0)
        cr->apikey = value != NULL ? value : "";
    return MHD_YES;
}

/* The token of an Authorization value, or NULL when it is not `Bearer TOKEN`. */
static const char *bearer_token(const char *v)
{
    if (strncasecmp(v, "Bearer", 6) != 0 || (v[6] != ' ' && v[6] != '\t'))
        return NULL;
    v += 6;
    v += strspn(v, " \t");
    return v;
}

int pbx__auth_token(struct MHD_Connection *c, const char **token, struct pbx_error **err)
{
    struct credentials cr = {0};
    const char *bearer = NULL;

    *token = NULL;
    MHD_get_connection_values(c, MHD_HEADER_KIND, count_credentials, &cr);
    if (cr.nauth > 1 || cr.napikey > 1)
        return pbx_error_set(err, PBX_E_POLICY,
                             "the request has more than one %s header; send "
                             "the API key once, as `Authorization: Bearer KEY`",
                             cr.nauth > 1 ? "Authorization" : "X-API-Key");
    if (cr.nauth == 1) {
        bearer = bearer_token(cr.auth);
        if (bearer == NULL && strcasecmp(cr.auth, "Bearer") == 0)
            bearer = "";
        if (bearer == NULL)
            return pbx_error_set(err, PBX_E_POLICY,
                                 "the Authorization header is not of the form `Authorization: "
                                 "Bearer KEY`; send the API key so (or as `X-API-Key: KEY`)");
        if (*bearer == '\0')
            return pbx_error_set(err, PBX_E_POLICY,
                                 "the Authorization header's Bearer token is empty; send "
                                 "`Authorization: Bearer KEY`");
    }
    if (cr.napikey == 1 && cr.apikey[strspn(cr.apikey, " \t")] == '\0')
        return pbx_error_set(err, PBX_E_POLICY,
                             "the X-API-Key header is empty; send `X-API-Key: KEY` or "
                             "`Authorization: Bearer KEY`");
    if (bearer != NULL && cr.apikey != NULL && strcmp(bearer, cr.apikey) != 0)
        return pbx_error_set(err, PBX_E_POLICY,
                             "the Authorization and X-API-Key headers name different keys; send "
                             "one, as `Authorization: Bearer KEY`");
    *token = bearer != NULL ? bearer : cr.apikey;
    return 0;
}

/*
 * The store's keys, for pbx_caller_resolve(): a key the store found is
 * remembered; while the store fails, a key seen within KEY_CACHE_TTL_S is
 * served from there (key_cache.h), any other lookup is logged and answered
 * 503.
 */
static int lookup_key(void *arg, const char *token, char **name, struct pbx_key_policy *policy,
                      struct pbx_error **err)
{
    struct pbx_server *s = arg;
    struct pbx_key_info key;
    struct pbx_error *e = NULL;
    uint64_t now = pbx_clock_ms(CLOCK_MONOTONIC);
    int found = pbx_store_key_lookup(s->store, token, &key, &e);

    if (found < 0) {
        pbx_log(PBX_LOG_ERROR, "key lookup: %s", e->msg);
        pbx_error_free(&e);
        if (pbx__key_cache_get(s->keys, token, now, name, policy))
            return 1;
        return pbx_error_set(err, PBX_E_ENGINE,
                             "the store of API keys does not answer; retry in a moment");
    }
    if (found == 0) {
        pbx__key_cache_forget(s->keys, token);
        return 0;
    }
    pbx__key_cache_put(s->keys, token, key.name, &key.policy, now);
    *name = steal_pointer(&key.name);
    *policy = key.policy;
    key.policy.modules = NULL; /* handed over with the policy */
    pbx_key_info_release(&key);
    return 1;
}

int pbx__auth_resolve(struct pbx_server *s, struct MHD_Connection *c, const char *body_key,
                      struct pbx_caller *who, const char **etype, struct pbx_error **err)
{
    const struct pbx_caller_keys keys = {.lookup = lookup_key, .arg = s};
    const char *token = NULL;

    if (pbx__auth_token(c, &token, err) < 0) {
        memset(who, 0, sizeof(*who));
        *etype = "Unauthorized";
        return -1;
    }
    if (token == NULL)
        token = body_key;
    return pbx_caller_resolve(&s->callers, &keys, token, who, etype, err);
}
