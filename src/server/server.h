/* pybox serve: the HTTP front over one engine, one store and admission. */
#ifndef PBX_SERVER_SERVER_H
#define PBX_SERVER_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sys/socket.h>

#include "common/error.h"
#include "engine/engine.h"
#include "policy/limits.h"

#define PBX_SERVER_MAX_PROXIES 32

/* Who may use /mcp. */
enum pbx_mcp_access {
    PBX_MCP_ON,    /* every caller, as its policy says (the anonymous one without a key) */
    PBX_MCP_KEYED, /* callers with a key (or the admin key) only */
    PBX_MCP_OFF,   /* nobody: /mcp is a 404 */
};

/* A node id's characters, at most (pybox serve --node-id). */
#define PBX_SERVER_NODE_ID_MAX 16

/* The life of a node id's claim in the store, seconds (pybox serve --node-ttl): default, range. */
#define PBX_SERVER_NODE_TTL_S     15
#define PBX_SERVER_NODE_TTL_MIN_S 3
#define PBX_SERVER_NODE_TTL_MAX_S 3600

/* Whether `id` is a node id: 1 to PBX_SERVER_NODE_ID_MAX of [a-z0-9]. */
bool pbx_server_node_id_valid(const char *id);

struct pbx_server_config {
    const char *listen;                          /* "HOST:PORT"; port 0 picks a free one */
    const char *data_dir;                        /* holds pybox.db unless store_uri is set */
    const char *store_uri;                       /* "sqlite:PATH", or NULL for DATA/pybox.db */
    const char *proxies[PBX_SERVER_MAX_PROXIES]; /* trusted proxy CIDRs */
    size_t nproxies;                             /* their count */
    unsigned max_concurrency;                    /* executions at once */
    unsigned queue_max;                          /* beyond them, requests that may wait */
    unsigned queue_wait_ms;                      /* for at most this long each, then 503 */
    int64_t anon_rpm;                            /* anonymous requests per minute per client */
    int64_t anon_rpd;                            /* anonymous requests per UTC day per client */
    int64_t anon_concurrency;    /* anonymous executions at once per client (0: no limit) */
    size_t anon_code_chars;      /* anonymous code length limit, in characters */
    struct pbx_limits limits;    /* limits of anonymous executions */
    const char *admin_key;       /* bypasses rates and import restrictions, or NULL */
    const char *modules;         /* anonymous callers' imports (and so every caller's): "all" */
                                 /* for no allowlist, or modules allowed besides the default */
                                 /* allowlist (pbx_caller_parse_modules()); NULL: none more */
    const char *cors_origins;    /* Access-Control-Allow-Origin value, "*" by default */
    size_t max_body;             /* request bodies beyond this are refused unread */
    unsigned client_timeout_s;   /* a client that stalls this long is dropped */
    unsigned request_deadline_s; /* a request must arrive whole, and its answer leave, within */
                                 /* this long (0: no deadline); idle keep-alive time counts */
    unsigned per_ip_connections; /* connections at once from one address (0: no limit) */
    size_t memory_budget;        /* bytes all requests in flight may hold; beyond it 503 */
    unsigned drain_s;            /* on SIGTERM, how long running executions may finish; */
                                 /* those still running then are stopped */
    bool preload;                /* import numpy and PIL in the zygote */
    unsigned spares_min;         /* warm pool: pre-forked cells kept ready at least */
    unsigned spares_max;         /* and at most; 0 disables the pool */
    unsigned prefault_pages;     /* pages each spare copies before its code (engine.h) */
    uint64_t zygote_max_execs;   /* replace the zygote after this many executions (0: never) */
    unsigned zygote_max_age_s;   /* or after this many seconds (0: never) */
    uint32_t jail_id_base;       /* the jails' ids (struct pbx_engine_config's uid_base, */
    uint32_t jail_id_count;      /* uid_count and uid_auto; pbx__cli_jail_ids() sets them) */
    bool jail_ids_auto;          /* the default, or one picked when it does not fit */
    const char *url_file;        /* write the listening URL here once ready, or NULL */
    bool quiet;                  /* no access log on stderr (the fuzzer) */
    bool server_timing;          /* executions' answers carry a Server-Timing header */

    /* Sessions (POST /v1/sessions): spans in seconds, counts of open sessions. */
    unsigned session_idle_ttl_s;     /* idle time unless a session asks (from a call's end) */
    unsigned session_lifetime_s;     /* lifetime unless it asks (from its opening) */
    unsigned session_max_idle_ttl_s; /* the longest idle time a session may ask */
    unsigned session_max_lifetime_s; /* the longest lifetime */
    unsigned sessions_per_client;    /* open sessions of one anonymous client address */
    unsigned sessions_per_key;       /* of one key (and of the admin) */
    unsigned sessions_max;           /* of the whole server (0: no sessions) */

    const char *node_id; /* this node's id, named in its sessions' ids, or NULL (ids.h) */
    unsigned nodes;      /* nodes sharing the store (0 or 1: this one alone), for the windows */

    /* MCP at /mcp. */
    enum pbx_mcp_access mcp;       /* who may use it */
    const char *mcp_allowed_hosts; /* Host names it answers besides IP addresses, loopback */
                                   /* and the listen host: comma-separated, "*" any, or NULL */
    /* The node's claim on node_id in the store (node_claim.c). */
    unsigned node_ttl_s; /* a claim's life past its last renewal; renewed every third of it */
};

void pbx_server_config_default(struct pbx_server_config *cfg);

/*
 * Callers of different trust never share a zygote (a zygote's children share
 * its address-space layout, stack canary and pointer guard): anonymous
 * callers run on one, key holders and the admin on another.
 */
enum pbx_trust {
    PBX_TRUST_ANONYMOUS = 0,
    PBX_TRUST_KEYED = 1,
    PBX_TRUST_COUNT,
};

struct pbx_session; /* engine/session.h */

/*
 * What runs executions for the server: pybox's engines, or a stub that
 * answers at once (fuzz/fuzz_http.c).  `execute` has the contract of
 * pbx_engine_execute(); `pool_stats` sums the warm pools; `session_open`
 * starts a session (src/engine/session.h).  All are called from many
 * threads at once.
 */
struct pbx_server_executor {
    int (*execute)(void *arg, enum pbx_trust trust, const struct pbx_exec_request *req,
                   struct pbx_exec_result *res, struct pbx_error **err);
    void (*pool_stats)(void *arg, struct pbx_pool_stats *st);
    /* pbx_session_open()'s contract, on the engine of `trust`; NULL: no sessions. */
    int (*session_open)(void *arg, enum pbx_trust trust, const struct pbx_limits *limits,
                        const struct pbx_file_in *files, size_t nfiles, struct pbx_session **out,
                        struct pbx_error **err);
    void *arg;
};

struct pbx_server;
struct pbx_store;

/*
 * A server over `store` and `ex` (neither is taken over; both outlive it),
 * with `cfg` (kept by pointer).  It serves nothing until started.
 */
int pbx__server_new(const struct pbx_server_config *cfg, struct pbx_store *store,
                    const struct pbx_server_executor *ex, struct pbx_server **out,
                    struct pbx_error **err);

/*
 * Start the HTTP daemon listening on `addr`, or, with `addr` NULL, with no
 * listening socket: connections then come only from pbx__server_add_connection().
 * With `external`, the daemon has no threads of its own: the caller drives
 * it with pbx__server_step() (the fuzzer, for speed and determinism).
 * Returns the port listened on (0 without a socket), or < 0.
 */
int pbx__server_start(struct pbx_server *s, const struct sockaddr *addr, socklen_t addrlen,
                      bool external, struct pbx_error **err);

/* One round of an external daemon's work, without blocking. */
void pbx__server_step(struct pbx_server *s);

/* Serve a connected socket (taken over); `peer` is its client's address. */
int pbx__server_add_connection(struct pbx_server *s, int fd, const struct sockaddr *peer,
                               socklen_t peerlen);

/* Stop accepting and wait up to `drain_ms` for running executions. */
void pbx__server_quiesce(struct pbx_server *s, unsigned drain_ms);

/* Stop the daemon (ending every connection) and free. NULL is fine. */
void pbx__server_free(struct pbx_server *s);

/*
 * Start, serve until SIGTERM or SIGINT (replacing the zygotes on SIGHUP,
 * pbx_engine_reload()), drain, stop.  With cfg->node_id, claim it in the
 * store first (node_claim.h): another running server holding it fails the
 * start.  Returns 0 after a clean shutdown, < 0 when the server could not
 * start.
 */
int pbx_server_run(const struct pbx_server_config *cfg, struct pbx_error **err);

#endif
