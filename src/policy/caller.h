/*
 * Callers and what they may do.  A request of pybox serve comes from one of
 * three kinds of caller: anonymous (no key), a key holder (a key of the
 * store, with its own policy) or the admin (the admin key, or a key whose
 * policy says admin).  The server asks this module two things: who sent a
 * request (pbx_caller_resolve(), from the token it carried) and what that
 * caller may do with it (pbx_caller_limits(): the request's asks checked
 * against the caller's policy, and the limits its execution gets).
 *
 * The keys themselves live in the store, a module above this one: it is
 * reached through the lookup the server hands in.  No syscalls, no state.
 */
#ifndef PBX_POLICY_CALLER_H
#define PBX_POLICY_CALLER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "policy/limits.h"

/* A key's policy, as the store keeps it; it overrides the anonymous one field by field. */
struct pbx_key_policy {
    int64_t rpm;           /* requests per minute, 0 = the anonymous default, -1 = unlimited */
    int64_t rpd;           /* requests per UTC day, same conventions */
    uint32_t timeout_ms;   /* wall limit, 0 = default */
    uint64_t memory_bytes; /* memory limit, 0 = default */
    bool all_modules;      /* no import allowlist */
    char *modules;         /* extra allowed modules, space-separated, or NULL (owned) */
    bool network;          /* may ask for network access */
    bool admin;            /* bypasses rates, quotas and import restrictions */
    uint32_t sessions;     /* sessions open at once, 0 = the server's per-key cap */
    uint32_t session_idle_ttl_s; /* the longest idle time a session may ask, 0 = the server's */
    uint32_t session_lifetime_s; /* the longest lifetime a session may ask, 0 = the server's */
    int64_t concurrency;         /* executions at once, every node together; rpm's conventions */
};

/* The most open sessions a key's policy may give, as `pybox serve --sessions` takes them. */
#define PBX_CALLER_SESSIONS_MAX 100000

/* The longest span (idle time, lifetime) of a session, in seconds: a year. */
#define PBX_CALLER_SPAN_MAX_S 31536000

/* What a caller's sessions may be (POST /v1/sessions): how many at once, and their spans. */
struct pbx_caller_sessions {
    unsigned open;           /* sessions open at once (of one client address, when anonymous) */
    uint32_t idle_ttl_s;     /* the idle time of a session that asks none */
    uint32_t max_idle_ttl_s; /* the longest idle time a session may ask */
    uint32_t lifetime_s;     /* the lifetime of a session that asks none */
    uint32_t max_lifetime_s; /* the longest lifetime a session may ask */
};

/* What callers without a key may do, and the admin key: the server's configuration. */
struct pbx_caller_config {
    int64_t anon_rpm;         /* anonymous requests per minute per client (< 0: unlimited) */
    int64_t anon_rpd;         /* anonymous requests per UTC day per client (< 0: unlimited) */
    int64_t anon_concurrency; /* anonymous executions at once per client (0: unlimited) */
    size_t anon_code_chars;   /* anonymous code length limit, in characters */
    const struct pbx_limits *limits; /* of anonymous executions; the base of every other */
    const char *admin_key;           /* the admin's token, or NULL or "" for no admin */
    bool anon_all_modules;           /* anonymous callers have no import allowlist (so no one) */
    const char *anon_modules;        /* modules every caller may import besides the default */
                                     /* allowlist, one space apart (pbx_caller_parse_modules()), */
                                     /* or NULL */
    struct pbx_caller_sessions anon_sessions; /* of anonymous callers; the base of every other */
    unsigned key_sessions; /* sessions open at once of one key, or the admin, unless its key says */
};

/* The longest module list a server's configuration may give, in bytes once parsed. */
#define PBX_CALLER_MODULES_MAX 2048

/*
 * Parse a module list as `pybox keys create --modules` and `pybox serve
 * --modules` take it: `all` (*all set: no import allowlist), or modules
 * allowed besides the default allowlist, dotted Python identifiers separated
 * by commas or spaces.  *out is those names one space apart, each once (the
 * caller frees it; NULL for `all` and for a list of no names).  Returns 0, or
 * < 0 with *err (PBX_E_INVAL: a name that is not one, a list over
 * PBX_CALLER_MODULES_MAX).  No syscalls.
 */
int pbx_caller_parse_modules(const char *list, bool *all, char **out, struct pbx_error **err);

/* The store's keys, as resolution reaches them. */
struct pbx_caller_keys {
    /*
     * Find the live key whose token is `token`: 1 with *name and *policy
     * filled (both handed over to the caller), 0 when no live key has it,
     * < 0 with *err (a message fit for the client) when the lookup failed.
     */
    int (*lookup)(void *arg, const char *token, char **name, struct pbx_key_policy *policy,
                  struct pbx_error **err);
    void *arg; /* passed to lookup */
};

/* Who sent a request, and the policy that follows. Release with pbx_caller_release(). */
struct pbx_caller {
    bool admin;                /* the admin key, or a key whose policy says admin */
    bool keyed;                /* a key of the store (the admin key is not one) */
    char *key_name;            /* that key's name (owned), or NULL */
    struct pbx_key_policy key; /* that key's policy (modules owned), zero when not keyed */
    int64_t rpm;               /* requests per minute it may send (< 0: unlimited) */
    int64_t rpd;               /* requests per UTC day (< 0: unlimited) */
    int64_t concurrency;       /* executions at once, every node together (< 0: unlimited) */
    bool all_modules;          /* no import allowlist */
    char *modules;             /* modules it may import besides the default allowlist: the */
                               /* server's, then its key's, one space apart (owned), or NULL */
    bool network;              /* may ask for network */
    size_t code_chars;         /* code limit, in characters */
    uint32_t max_timeout_ms;   /* the longest wall limit it may ask */
    uint64_t max_memory;       /* the most memory it may ask, bytes */
    struct pbx_caller_sessions sessions; /* its sessions: how many, their spans (each default */
                                         /* within its maximum) */
};

/*
 * Resolve the caller that sent `token` (NULL: none was sent): anonymous
 * without a token, the admin for the admin key (compared in constant time),
 * else the key of `keys` that has it.  The anonymous policy is the base of
 * every other: a key's modules add to the server's, as its limits replace
 * the server's one by one.  So do its sessions' cap and longest spans: a
 * key's maximum replaces the server's, and the server's default span then
 * applies within it (the lower of the two).  Returns 0 with *who filled, or < 0
 * with *etype and *err set: "Unauthorized" when no live key has the token,
 * "InternalServerError" when the lookup failed.  *who needs
 * pbx_caller_release() either way.
 */
int pbx_caller_resolve(const struct pbx_caller_config *cfg, const struct pbx_caller_keys *keys,
                       const char *token, struct pbx_caller *who, const char **etype,
                       struct pbx_error **err);

/* Free what *who holds and clear it. */
void pbx_caller_release(struct pbx_caller *who);

/* What one request asks that its caller's policy bounds. */
struct pbx_caller_ask {
    size_t code_len;    /* bytes of the code */
    size_t code_chars;  /* its Unicode characters */
    bool network;       /* network access asked */
    bool has_timeout;   /* a timeout was asked */
    double timeout_s;   /* that timeout, seconds (pbx_limits_check_timeout() passed it) */
    bool has_memory;    /* a memory limit was asked */
    uint64_t memory_mb; /* that limit, MiB */
    bool clamp_timeout; /* a timeout over the caller's limit runs with that limit, unrefused */
};

/*
 * What `who` may do with `ask`: the limits of its execution in *out (the
 * configured limits, with the timeout and the memory asked; what is not
 * asked is the configured limit or the caller's own ceiling when that is
 * lower, wall and CPU time alike), or < 0 with
 * *etype and *err when the ask is over the caller's policy, checked in this
 * order: code longer than the caller's character limit ("ValidationError");
 * network asked, by a caller that may not ("NetworkNotAllowed") or by one
 * that may, of a server that runs every execution without network
 * ("NetworkUnavailable"); a timeout or memory over the caller's own
 * ("ValidationError"), but with `clamp_timeout` a timeout over the caller's
 * limit gets that limit (wall and CPU time alike) instead: out->wall_ms then
 * says which limit applied.
 */
int pbx_caller_limits(const struct pbx_caller_config *cfg, const struct pbx_caller *who,
                      const struct pbx_caller_ask *ask, struct pbx_limits *out, const char **etype,
                      struct pbx_error **err);

/*
 * Whether `s` (`len` bytes) is a dotted Python module name, identifiers of
 * ASCII letters, digits and '_': what a key's and the server's module lists hold.
 */
bool pbx_caller_module_name(const char *s, size_t len);

#endif
