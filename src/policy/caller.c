/* Callers and what they may do: resolution of a token, the asks of a request within a policy. */
#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"
#include "common/xalloc.h"
#include "policy/caller.h"
#include "common/banned.h"

bool pbx_caller_module_name(const char *s, size_t len)
{
    bool start = true;

    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];

        if (c == '.') {
            if (start)
                return false;
            start = true;
        } else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_') {
            start = false;
        } else if (c < '0' || c > '9' || start) {
            return false;
        }
    }
    return !start;
}

/* Whether `list` (names one space apart) holds the name of `len` bytes at `name`. */
static bool holds(const char *list, const char *name, size_t len)
{
    for (const char *p = list; *p != '\0'; p += strspn(p, " ")) {
        size_t n = strcspn(p, " ");

        if (n == len && memcmp(p, name, len) == 0)
            return true;
        p += n;
    }
    return false;
}

/* Append the name of `len` bytes at `name` to `list` (of `*used` bytes), unless it holds it. */
static void add_name(char *list, size_t *used, const char *name, size_t len)
{
    if (holds(list, name, len))
        return;
    if (*used > 0)
        list[(*used)++] = ' ';
    memcpy(list + *used, name, len);
    *used += len;
    list[*used] = '\0';
}

int pbx_caller_parse_modules(const char *list, bool *all, char **out, struct pbx_error **err)
{
    static const char seps[] = " ,\t\n";
    cleanup_free char *norm = NULL;
    size_t used = 0;

    *all = false;
    *out = NULL;
    if (strcmp(list, "all") == 0) {
        *all = true;
        return 0;
    }
    norm = xmalloc(strlen(list) + 1);
    norm[0] = '\0';
    for (const char *p = list + strspn(list, seps); *p != '\0'; p += strspn(p, seps)) {
        size_t n = strcspn(p, seps);

        if (!pbx_caller_module_name(p, n))
            return pbx_error_set(err, PBX_E_INVAL,
                                 "`%.*s` is not a module name (dotted Python identifiers only)",
                                 (int)(n < 64 ? n : 64), p);
        add_name(norm, &used, p, n);
        if (used > PBX_CALLER_MODULES_MAX)
            return pbx_error_set(err, PBX_E_INVAL, "the module list is over %d bytes",
                                 PBX_CALLER_MODULES_MAX);
        p += n;
    }
    if (used > 0)
        *out = steal_pointer(&norm);
    return 0;
}

/* The modules of `extra` (one space apart, or NULL) added to who->modules, each once. */
static void add_modules(struct pbx_caller *who, const char *extra)
{
    size_t have = who->modules != NULL ? strlen(who->modules) : 0;
    char *list;

    if (extra == NULL || extra[strspn(extra, " ")] == '\0')
        return;
    list = xmalloc(have + 1 + strlen(extra) + 1);
    memcpy(list, who->modules != NULL ? who->modules : "", have + 1);
    for (const char *p = extra + strspn(extra, " "); *p != '\0'; p += strspn(p, " ")) {
        size_t n = strcspn(p, " ");

        add_name(list, &have, p, n);
        p += n;
    }
    free(who->modules);
    who->modules = list;
}

/* Whether `token` is the admin key, compared in constant time (its length is not a secret). */
static bool is_admin_key(const struct pbx_caller_config *cfg, const char *token)
{
    size_t n = strlen(token);

    return cfg->admin_key != NULL && *cfg->admin_key != '\0' && n == strlen(cfg->admin_key) &&
           sodium_memcmp(token, cfg->admin_key, n) == 0;
}

/* The admin bypasses rates, quotas and the import allowlist, and may ask for network. */
static void make_admin(const struct pbx_caller_config *cfg, struct pbx_caller *who)
{
    who->admin = true;
    who->network = true;
    who->rpm = -1;
    who->rpd = -1;
    who->concurrency = -1;
    who->all_modules = true;
    who->code_chars = (size_t)cfg->limits->code_bytes;
}

/*
 * A key's sessions (policy `p`): its cap and its longest spans in place of
 * the server's, where it sets them; a default span stays the server's, cut
 * to the key's longest.
 */
static void key_sessions(const struct pbx_key_policy *p, struct pbx_caller_sessions *ses)
{
    if (p->sessions != 0)
        ses->open = p->sessions;
    if (p->session_idle_ttl_s != 0)
        ses->max_idle_ttl_s = p->session_idle_ttl_s;
    if (p->session_lifetime_s != 0)
        ses->max_lifetime_s = p->session_lifetime_s;
    if (ses->idle_ttl_s > ses->max_idle_ttl_s)
        ses->idle_ttl_s = ses->max_idle_ttl_s;
    if (ses->lifetime_s > ses->max_lifetime_s)
        ses->lifetime_s = ses->max_lifetime_s;
}

int pbx_caller_resolve(const struct pbx_caller_config *cfg, const struct pbx_caller_keys *keys,
                       const char *token, struct pbx_caller *who, const char **etype,
                       struct pbx_error **err)
{
    const struct pbx_key_policy *p = &who->key;
    int found;

    memset(who, 0, sizeof(*who));
    who->rpm = cfg->anon_rpm;
    who->rpd = cfg->anon_rpd;
    who->concurrency = cfg->anon_concurrency > 0 ? cfg->anon_concurrency : -1;
    who->code_chars = cfg->anon_code_chars;
    who->max_timeout_ms = cfg->limits->wall_ms;
    who->max_memory = cfg->limits->memory_bytes;
    who->all_modules = cfg->anon_all_modules;
    add_modules(who, cfg->anon_modules);
    who->sessions = cfg->anon_sessions;
    if (token == NULL)
        return 0;
    /* The admin and every key count their sessions against the per-key cap, not the client's. */
    who->sessions.open = cfg->key_sessions;
    if (is_admin_key(cfg, token)) {
        make_admin(cfg, who);
        return 0;
    }
    found = keys->lookup(keys->arg, token, &who->key_name, &who->key, err);
    if (found < 0) {
        *etype = "StoreUnavailable"; /* a key it cannot check is refused, to retry */
        return -1;
    }
    if (found == 0) {
        *etype = "Unauthorized";
        return pbx_error_set(err, PBX_E_POLICY, "the API key is not valid or was revoked");
    }
    /* A key's policy overrides the anonymous one field by field; 0 keeps the default. */
    who->keyed = true;
    if (p->admin)
        make_admin(cfg, who);
    if (p->rpm != 0 && !who->admin)
        who->rpm = p->rpm;
    if (p->rpd != 0 && !who->admin)
        who->rpd = p->rpd;
    if (p->concurrency != 0 && !who->admin)
        who->concurrency = p->concurrency;
    if (p->timeout_ms != 0)
        who->max_timeout_ms = p->timeout_ms;
    if (p->memory_bytes != 0)
        who->max_memory = p->memory_bytes;
    who->all_modules = who->all_modules || p->all_modules;
    add_modules(who, p->modules);
    who->network = p->network || who->admin;
    key_sessions(p, &who->sessions);
    /* Key holders send code up to the code limit, counted in characters, not the anonymous one. */
    who->code_chars = (size_t)cfg->limits->code_bytes;
    return 0;
}

void pbx_caller_release(struct pbx_caller *who)
{
    free(who->key_name);
    free(who->key.modules);
    free(who->modules);
    memset(who, 0, sizeof(*who));
}

int pbx_caller_limits(const struct pbx_caller_config *cfg, const struct pbx_caller *who,
                      const struct pbx_caller_ask *ask, struct pbx_limits *out, const char **etype,
                      struct pbx_error **err)
{
    *etype = "ValidationError";
    if (ask->code_chars > who->code_chars)
        return pbx_error_set(err, PBX_E_TOO_LARGE, "the code is %zu characters; the limit is %zu",
                             ask->code_chars, who->code_chars);
    if (ask->network) {
        *etype = who->network ? "NetworkUnavailable" : "NetworkNotAllowed";
        return pbx_error_set(err, PBX_E_POLICY, "%s",
                             who->network ? "this server runs every execution without network"
                                          : "network access is not allowed for this caller");
    }
    *out = *cfg->limits;
    if (ask->has_timeout) {
        if (pbx_limits_set_timeout(out, ask->timeout_s, err) < 0)
            return -1;
        if (out->wall_ms > who->max_timeout_ms && !ask->clamp_timeout)
            return pbx_error_set(err, PBX_E_POLICY,
                                 "timeout %.3g s is over this caller's limit of %.3g s",
                                 out->wall_ms / 1000.0, who->max_timeout_ms / 1000.0);
        if (out->wall_ms > who->max_timeout_ms) {
            /* A client that sends one timeout whatever its caller runs with the caller's. */
            out->wall_ms = who->max_timeout_ms;
            out->cpu_ms = who->max_timeout_ms;
        }
    } else if (who->max_timeout_ms > out->wall_ms) {
        /*
         * Without a timeout, a caller that may ask for more than the default
         * wall time gets the default, and as much CPU time as wall time.
         */
        out->cpu_ms = out->wall_ms;
    } else if (who->max_timeout_ms < out->wall_ms) {
        /*
         * A caller held below the default (a key made with a lower --timeout)
         * runs within its ceiling whether or not it asks: asking nothing is
         * not a way around it.
         */
        out->wall_ms = who->max_timeout_ms;
        if (out->cpu_ms > who->max_timeout_ms)
            out->cpu_ms = who->max_timeout_ms;
    }
    if (ask->has_memory) {
        if ((ask->memory_mb << 20) > who->max_memory)
            return pbx_error_set(err, PBX_E_POLICY,
                                 "memory_mb %" PRIu64 " is over this caller's limit of %" PRIu64,
                                 ask->memory_mb, who->max_memory >> 20);
        out->memory_bytes = ask->memory_mb << 20;
    } else if (who->max_memory < out->memory_bytes) {
        /* Likewise, a caller held below the default memory gets its ceiling unasked. */
        out->memory_bytes = who->max_memory;
    }
    /*
     * The code was measured against the caller's limit in characters; the
     * execution's byte limit is raised to fit it, so the engine does not
     * refuse by bytes a code the policy let through by characters.
     */
    if (ask->code_len > out->code_bytes)
        out->code_bytes = ask->code_len;
    return 0;
}
