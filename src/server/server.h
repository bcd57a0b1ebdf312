/* pybox serve: the HTTP front over one engine, one store and admission. */
#ifndef PBX_SERVER_SERVER_H
#define PBX_SERVER_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "policy/limits.h"

#define PBX_SERVER_MAX_PROXIES 32

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
    size_t anon_code_chars;                      /* anonymous code length limit, in characters */
    struct pbx_limits limits;                    /* limits of anonymous executions */
    const char *admin_key;     /* bypasses rates and import restrictions, or NULL */
    const char *cors_origins;  /* Access-Control-Allow-Origin value, "*" by default */
    size_t max_body;           /* request bodies beyond this are refused unread */
    unsigned client_timeout_s; /* a client that stalls this long is dropped */
    unsigned drain_s;          /* on SIGTERM, how long running executions may finish */
    bool preload;              /* import numpy and PIL in the zygote */
    unsigned spares_min;       /* warm pool: pre-forked cells kept ready at least */
    unsigned spares_max;       /* and at most; 0 disables the pool */
    uint64_t zygote_max_execs; /* replace the zygote after this many executions (0: never) */
    unsigned zygote_max_age_s; /* or after this many seconds (0: never) */
    const char *url_file;      /* write the listening URL here once ready, or NULL */
};

void pbx_server_config_default(struct pbx_server_config *cfg);

/*
 * Start, serve until SIGTERM or SIGINT, drain, stop.  Returns 0 after a clean
 * shutdown, < 0 when the server could not start.
 */
int pbx_server_run(const struct pbx_server_config *cfg, struct pbx_error **err);

#endif
