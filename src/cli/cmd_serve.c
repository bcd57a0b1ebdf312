/* pybox serve: the HTTP service. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "common/xalloc.h"
#include "engine/prefault.h"
#include "policy/caller.h"
#include "server/request.h"
#include "server/server.h"
#include "store/store.h"
#include "common/banned.h"

static void help(void)
{
    printf("usage: pybox serve [OPTIONS]\n\n"
           "Serve the Python Sandbox API over HTTP: POST /execute (the compatible dialect),\n"
           "POST /v1/execute, /v1/sessions, GET /v1/health, GET /metrics, GET /openapi.json.\n\n"
           "Options (each also read from the environment variable shown):\n"
           "  --listen HOST:PORT       where to listen (PYBOX_LISTEN; default 127.0.0.1:8080;\n"
           "                           port 0 picks a free one)\n"
           "  --data DIR               data directory holding pybox.db, the keys and quotas\n"
           "                           (PYBOX_DATA; default " PBX_CLI_SYSTEM_DATA_DIR " for root,\n"
           "                           else $XDG_DATA_HOME/pybox or ~/.local/share/pybox, as\n"
           "                           for `pybox keys`)\n"
           "  --store URI              the store, instead of DIR/pybox.db: sqlite:PATH, or\n"
           "                           redis://[:PASSWORD@]HOST[:PORT][/DB] shared by many\n"
           "                           nodes (PYBOX_STORE; --store beats --data, an option\n"
           "                           beats the environment)\n"
           "  --trusted-proxy CIDR     take X-Forwarded-For from peers in CIDR (repeatable;\n"
           "                           PYBOX_TRUSTED_PROXIES, comma-separated)\n"
           "  --max-concurrency N      executions at once (PYBOX_MAX_CONCURRENCY; 5)\n"
           "  --queue N:SECONDS        beyond them, up to N requests wait in order of arrival,\n"
           "                           each for at most SECONDS, then 503 (PYBOX_QUEUE; 16:5;\n"
           "                           0 answers 503 at once)\n"
           "  --rpm N                  anonymous requests per minute per client (PYBOX_RPM; 5)\n"
           "  --rpd N                  anonymous requests per UTC day per client (PYBOX_RPD; 30)\n"
           "  --client-concurrency N   executions one anonymous client may run at once, every\n"
           "                           node of the store together; a key's `--concurrency`\n"
           "                           overrides it (PYBOX_CLIENT_CONCURRENCY; 0: no limit)\n"
           "  --code-chars N           anonymous code length limit (PYBOX_CODE_CHARS; 2000)\n"
           "  --modules all|LIST       modules anonymous callers may import besides the default\n"
           "                           allowlist, comma- or space-separated, as for `pybox keys\n"
           "                           create --modules` (PYBOX_MODULES); a key's modules add to\n"
           "                           these; `all`: no allowlist for any caller\n"
           "  --timeout S              wall limit of executions (PYBOX_TIMEOUT; 10)\n"
           "  --memory MB              memory limit of executions (PYBOX_MEMORY_MB; 256)\n"
           "  --limit NAME=VALUE       any execution limit, as in `pybox run --help`\n"
           "  --cors-origin LIST       origins allowed by CORS, comma-separated, or * (the\n"
           "                           default; PYBOX_CORS_ORIGINS)\n"
           "  --max-body BYTES         request bodies beyond this are refused unread (32M)\n"
           "  --client-timeout S       drop a client that stalls this long (30)\n"
           "  --request-deadline S     a request must arrive whole, and its answer leave, within\n"
           "                           S seconds, however it trickles (60; 0: no deadline)\n"
           "  --per-ip N               connections at once from one client address (64; 0: no\n"
           "                           limit; behind a proxy, all come from the proxy's)\n"
           "  --memory-budget BYTES    memory all requests in flight may hold in the server;\n"
           "                           beyond it, 503 (default: from the slots, the queue and\n"
           "                           the largest valid request)\n"
           "  --no-preload             import nothing ahead in the zygote (default: numpy, PIL,\n"
           "                           pandas, matplotlib; PYBOX_PRELOAD_MODULES replaces them)\n"
           "  --spares MIN:MAX         pre-forked cells kept ready, adapting to load within\n"
           "                           MIN..MAX (PYBOX_SPARES; 2:6; 0:0 disables the pool)\n"
           "  --prefault-pages N       pages each spare copies before its code arrives, of\n"
           "                           those the zygote learned that runs write (print,\n"
           "                           main(), numpy, pandas: in that order): each costs an\n"
           "                           idle spare 4 KiB and a run one fault less\n"
           "                           (PYBOX_PREFAULT_PAGES; 256; 0 to 4096)\n"
           "  --session-idle-ttl S     a session ends after S seconds without a call, unless it\n"
           "                           asks otherwise (PYBOX_SESSION_IDLE_TTL; 600)\n"
           "  --session-lifetime S     and S seconds after it was opened, unless it asks\n"
           "                           (PYBOX_SESSION_LIFETIME; 3600)\n"
           "  --session-max-idle-ttl S the longest idle time a session may ask\n"
           "                           (PYBOX_SESSION_MAX_IDLE_TTL; 3600)\n"
           "  --session-max-lifetime S the longest lifetime a session may ask\n"
           "                           (PYBOX_SESSION_MAX_LIFETIME; 86400)\n"
           "  --sessions CLIENT:KEY:TOTAL  sessions open at once: of one anonymous client\n"
           "                           address, of one key (or the admin), of the server\n"
           "                           (PYBOX_SESSIONS; 4:16:64; a TOTAL of 0: no sessions)\n"
           "  --mcp on|keyed|off       the Model Context Protocol at /mcp: for every caller,\n"
           "                           for callers with an API key only, or off (PYBOX_MCP; on)\n"
           "  --mcp-allowed-hosts LIST host names /mcp answers to besides IP addresses,\n"
           "                           localhost and the --listen host, comma-separated, or *\n"
           "                           (PYBOX_MCP_ALLOWED_HOSTS); a Host or Origin naming any\n"
           "                           other is refused 403, against DNS rebinding\n"
           "  --node-id ID             this node's id among many behind a proxy: 1-16 of\n"
           "                           [a-z0-9], named in its session ids (PYBOX_NODE_ID);\n"
           "                           claimed in the store: a second server with the same\n"
           "                           id and store is refused at start\n"
           "  --node-ttl S             the claim lapses S seconds after its last renewal, a\n"
           "                           third of S apart (PYBOX_NODE_TTL; 15; 3 to 3600): a\n"
           "                           node restarted after a crash waits up to S + 1 s\n"
           "  --nodes N                how many nodes share the store (PYBOX_NODES; 1): while\n"
           "                           the store's shared rate windows fail, each node\n"
           "                           allows 1/N of a per-minute limit on its own\n"
           "  --drain S                on SIGTERM, let running executions finish for up to S\n"
           "                           seconds, then stop them (PYBOX_DRAIN; 30; 0 to 3600)\n"
           "  --url-file PATH          write the URL served to PATH once listening\n"
           "  --recycle EXECS:SECONDS  replace the zygote after EXECS executions or SECONDS\n"
           "                           (PYBOX_RECYCLE; 5000:600; 0 means never)\n"
           "  --jail-ids BASE[:COUNT]  the ids of this user namespace that the jails' ids\n"
           "                           0..COUNT-1 map to (PYBOX_JAIL_IDS; COUNT 65536, at least\n"
           "                           1001; must lie in one range of /proc/self/uid_map and\n"
           "                           gid_map, without 0 or pybox's own ids); default auto:\n"
           "                           1000000000:65536, or, where the namespace lacks it (a\n"
           "                           pod of 65536 ids), the top half of its largest range\n"
           "  --server-timing          answers of POST /v1/execute and /execute carry a\n"
           "                           Server-Timing header: where the request's time went,\n"
           "                           phase by phase, for operators and benchmarks\n"
           "                           (PYBOX_SERVER_TIMING=1|0; off)\n\n"
           "The admin key comes from PYBOX_ADMIN_KEY (or PYTHON_EXE_KEY): it bypasses rate\n"
           "limits, quotas and import restrictions. API keys: `pybox keys --help`.\n"
           "SIGTERM or SIGINT: stop accepting, let running executions finish (--drain), exit 0.\n"
           "SIGHUP: replace the zygotes, so that new executions see packages installed on the\n"
           "host since the start; running executions finish on the old ones.\n");
}

static unsigned long number(const char *v, const char *what, unsigned long max)
{
    char *end = NULL;
    unsigned long n = strtoul(v, &end, 10);

    if (v[0] == '\0' || v[0] == '-' || *end != '\0' || n > max)
        pbx_usage_error("serve", "%s `%s` is not a whole number up to %lu", what, v, max);
    return n;
}

/* A switch from the environment: 1 or 0. */
static bool on_off(const char *v, const char *what)
{
    if (strcmp(v, "1") == 0)
        return true;
    if (strcmp(v, "0") == 0 || *v == '\0')
        return false;
    pbx_usage_error("serve", "%s `%s` is not 1 or 0", what, v);
}

static void set_limit(struct pbx_limits *l, const char *assignment)
{
    struct pbx_error *err = NULL;

    if (pbx_limits_set(l, assignment, &err) < 0)
        pbx_usage_error("serve", "%s", err->msg);
}

static void add_proxies(struct pbx_server_config *cfg, char *list)
{
    char *save = NULL;

    for (char *t = strtok_r(list, ", ", &save); t != NULL; t = strtok_r(NULL, ", ", &save)) {
        if (cfg->nproxies == PBX_SERVER_MAX_PROXIES)
            pbx_usage_error("serve", "at most %d trusted proxies", PBX_SERVER_MAX_PROXIES);
        cfg->proxies[cfg->nproxies++] = t;
    }
}

enum {
    OPT_LISTEN = 256,
    OPT_DATA,
    OPT_STORE,
    OPT_PROXY,
    OPT_CONC,
    OPT_RPM,
    OPT_RPD,
    OPT_CLIENT_CONC,
    OPT_CHARS,
    OPT_TIMEOUT,
    OPT_MEMORY,
    OPT_LIMIT,
    OPT_CORS,
    OPT_BODY,
    OPT_CLIENT_TIMEOUT,
    OPT_NO_PRELOAD,
    OPT_URL_FILE,
    OPT_DEADLINE,
    OPT_PER_IP,
    OPT_BUDGET,
    OPT_SPARES,
    OPT_QUEUE,
    OPT_RECYCLE,
    OPT_MODULES,
    OPT_SESSION_IDLE,
    OPT_SESSION_LIFE,
    OPT_SESSION_MAX_IDLE,
    OPT_SESSION_MAX_LIFE,
    OPT_SESSIONS,
    OPT_MCP,
    OPT_MCP_HOSTS,
    OPT_NODE_ID,
    OPT_NODES,
    OPT_JAIL_IDS,
    OPT_NODE_TTL,
    OPT_DRAIN,
    OPT_SERVER_TIMING,
    OPT_PREFAULT_PAGES,
};

/* --jail-ids and PYBOX_JAIL_IDS. */
static void set_jail_ids(struct pbx_server_config *cfg, const char *what, const char *v)
{
    struct pbx_error *err = NULL;

    if (pbx__cli_jail_ids(v, &cfg->jail_id_base, &cfg->jail_id_count, &cfg->jail_ids_auto, &err) <
        0)
        pbx_usage_error("serve", "%s %s", what, err->msg);
}

/* --node-id's value, checked. */
static const char *node_id(const char *v, const char *what)
{
    if (!pbx_server_node_id_valid(v))
        pbx_usage_error("serve", "%s `%s` is not 1 to %d of a-z and 0-9", what, v,
                        PBX_SERVER_NODE_ID_MAX);
    return v;
}

/* --nodes' value: 1 to 1024. */
static unsigned nodes_of(const char *v, const char *what)
{
    unsigned long n = number(v, what, 1024);

    if (n == 0)
        pbx_usage_error("serve", "%s must be 1 to 1024", what);
    return (unsigned)n;
}

/* --node-ttl's value: PBX_SERVER_NODE_TTL_MIN_S to PBX_SERVER_NODE_TTL_MAX_S seconds. */
static unsigned node_ttl(const char *v, const char *what)
{
    unsigned long n = number(v, what, PBX_SERVER_NODE_TTL_MAX_S);

    if (n < PBX_SERVER_NODE_TTL_MIN_S)
        pbx_usage_error("serve", "%s must be %d to %d seconds", what, PBX_SERVER_NODE_TTL_MIN_S,
                        PBX_SERVER_NODE_TTL_MAX_S);
    return (unsigned)n;
}

/* --mcp's value. */
static enum pbx_mcp_access mcp_access(const char *v, const char *what)
{
    if (strcmp(v, "on") == 0)
        return PBX_MCP_ON;
    if (strcmp(v, "keyed") == 0)
        return PBX_MCP_KEYED;
    if (strcmp(v, "off") == 0)
        return PBX_MCP_OFF;
    pbx_usage_error("serve", "%s `%s` is not on, keyed or off", what, v);
}

/* A session's span, seconds: 1 to a year, as a session's request may ask. */
static unsigned session_span(const char *v, const char *what)
{
    unsigned long n = number(v, what, PBX_REQUEST_SPAN_MAX_S);

    if (n == 0)
        pbx_usage_error("serve", "%s must be at least 1 second", what);
    return (unsigned)n;
}

/* --sessions CLIENT:KEY:TOTAL and PYBOX_SESSIONS. */
static void set_sessions(struct pbx_server_config *cfg, const char *what, const char *v)
{
    unsigned long n[3];
    const char *p = v;

    for (int i = 0; i < 3; i++) {
        char *end = NULL;

        n[i] = strtoul(p, &end, 10);
        if (end == p || *p == '-' || n[i] > 100000 || *end != (i < 2 ? ':' : '\0'))
            pbx_usage_error("serve", "%s `%s` is not CLIENT:KEY:TOTAL (whole numbers up to 100000)",
                            what, v);
        p = end + 1;
    }
    cfg->sessions_per_client = (unsigned)n[0];
    cfg->sessions_per_key = (unsigned)n[1];
    cfg->sessions_max = (unsigned)n[2];
}

/* --modules and PYBOX_MODULES: checked here, parsed by the server (pbx_caller_parse_modules()). */
static void set_modules(struct pbx_server_config *cfg, const char *what, const char *v)
{
    struct pbx_error *err = NULL;
    char *names = NULL;
    bool all;

    if (pbx_caller_parse_modules(v, &all, &names, &err) < 0)
        pbx_usage_error("serve", "%s: %s", what, err->msg);
    if (!all && names == NULL)
        pbx_usage_error("serve", "%s needs `all` or a list of modules", what);
    free(names);
    cfg->modules = v;
}

static void set_recycle(struct pbx_server_config *cfg, const char *v)
{
    char *end = NULL;
    unsigned long long n = strtoull(v, &end, 10);
    unsigned long secs;
    const char *t;

    if (end == v || *end != ':' || v[0] == '-')
        pbx_usage_error("serve", "--recycle `%s` is not EXECS:SECONDS", v);
    t = end + 1;
    secs = strtoul(t, &end, 10);
    if (end == t || *end != '\0' || t[0] == '-' || secs > 86400u * 365)
        pbx_usage_error("serve", "--recycle `%s` is not EXECS:SECONDS", v);
    cfg->zygote_max_execs = n;
    cfg->zygote_max_age_s = (unsigned)secs;
}

static void set_queue(struct pbx_server_config *cfg, const char *v)
{
    char *end = NULL;
    unsigned long n = strtoul(v, &end, 10);
    double secs = 0;

    if (end == v || v[0] == '-' || (*end != '\0' && *end != ':'))
        pbx_usage_error("serve", "--queue `%s` is not N:SECONDS", v);
    if (*end == ':') {
        const char *t = end + 1;

        secs = strtod(t, &end);
        if (end == t || *end != '\0' || !(secs >= 0 && secs <= 3600))
            pbx_usage_error("serve", "--queue `%s`: SECONDS must be between 0 and 3600", v);
    } else if (n != 0) {
        pbx_usage_error("serve", "--queue `%s` is not N:SECONDS", v);
    }
    if (n > 100000)
        pbx_usage_error("serve", "--queue `%s`: at most 100000 may wait", v);
    cfg->queue_max = (unsigned)n;
    cfg->queue_wait_ms = n == 0 ? 0 : (unsigned)(secs * 1000.0);
}

static void set_spares(struct pbx_server_config *cfg, const char *v)
{
    char *end = NULL;
    unsigned long lo = strtoul(v, &end, 10);
    unsigned long hi = lo;

    if (end == v || (*end != '\0' && *end != ':'))
        pbx_usage_error("serve", "--spares `%s` is not MIN:MAX", v);
    if (*end == ':') {
        const char *h = end + 1;

        hi = strtoul(h, &end, 10);
        if (end == h || *end != '\0')
            pbx_usage_error("serve", "--spares `%s` is not MIN:MAX", v);
    }
    if (lo > hi || hi > 64)
        pbx_usage_error("serve", "--spares `%s`: need MIN <= MAX <= 64", v);
    cfg->spares_min = (unsigned)lo;
    cfg->spares_max = (unsigned)hi;
}

int pbx_cmd_serve(int argc, char **argv)
{
    static const struct option opts[] = {
        {"listen", required_argument, NULL, OPT_LISTEN},
        {"data", required_argument, NULL, OPT_DATA},
        {"store", required_argument, NULL, OPT_STORE},
        {"trusted-proxy", required_argument, NULL, OPT_PROXY},
        {"max-concurrency", required_argument, NULL, OPT_CONC},
        {"rpm", required_argument, NULL, OPT_RPM},
        {"rpd", required_argument, NULL, OPT_RPD},
        {"client-concurrency", required_argument, NULL, OPT_CLIENT_CONC},
        {"code-chars", required_argument, NULL, OPT_CHARS},
        {"timeout", required_argument, NULL, OPT_TIMEOUT},
        {"memory", required_argument, NULL, OPT_MEMORY},
        {"limit", required_argument, NULL, OPT_LIMIT},
        {"cors-origin", required_argument, NULL, OPT_CORS},
        {"max-body", required_argument, NULL, OPT_BODY},
        {"client-timeout", required_argument, NULL, OPT_CLIENT_TIMEOUT},
        {"no-preload", no_argument, NULL, OPT_NO_PRELOAD},
        {"url-file", required_argument, NULL, OPT_URL_FILE},
        {"request-deadline", required_argument, NULL, OPT_DEADLINE},
        {"per-ip", required_argument, NULL, OPT_PER_IP},
        {"memory-budget", required_argument, NULL, OPT_BUDGET},
        {"spares", required_argument, NULL, OPT_SPARES},
        {"queue", required_argument, NULL, OPT_QUEUE},
        {"recycle", required_argument, NULL, OPT_RECYCLE},
        {"modules", required_argument, NULL, OPT_MODULES},
        {"session-idle-ttl", required_argument, NULL, OPT_SESSION_IDLE},
        {"session-lifetime", required_argument, NULL, OPT_SESSION_LIFE},
        {"session-max-idle-ttl", required_argument, NULL, OPT_SESSION_MAX_IDLE},
        {"session-max-lifetime", required_argument, NULL, OPT_SESSION_MAX_LIFE},
        {"sessions", required_argument, NULL, OPT_SESSIONS},
        {"mcp", required_argument, NULL, OPT_MCP},
        {"mcp-allowed-hosts", required_argument, NULL, OPT_MCP_HOSTS},
        {"node-id", required_argument, NULL, OPT_NODE_ID},
        {"nodes", required_argument, NULL, OPT_NODES},
        {"jail-ids", required_argument, NULL, OPT_JAIL_IDS},
        {"node-ttl", required_argument, NULL, OPT_NODE_TTL},
        {"prefault-pages", required_argument, NULL, OPT_PREFAULT_PAGES},
        {"drain", required_argument, NULL, OPT_DRAIN},
        {"server-timing", no_argument, NULL, OPT_SERVER_TIMING},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct pbx_server_config cfg;
    struct pbx_error *err = NULL;
    const char *data = NULL;
    const char *store = NULL;
    char *store_uri, *shown;
    char *admin = NULL;
    char *envproxies = NULL;
    const char *v;
    char *tmp;
    int c;

    pbx_server_config_default(&cfg);
    if ((v = getenv("PYBOX_LISTEN")) != NULL)
        cfg.listen = v;
    if ((v = getenv("PYBOX_TRUSTED_PROXIES")) != NULL) {
        envproxies = xstrdup(v);
        add_proxies(&cfg, envproxies);
    }
    if ((v = getenv("PYBOX_MAX_CONCURRENCY")) != NULL)
        cfg.max_concurrency = (unsigned)number(v, "PYBOX_MAX_CONCURRENCY", 1024);
    if ((v = getenv("PYBOX_RPM")) != NULL)
        cfg.anon_rpm = (int64_t)number(v, "PYBOX_RPM", 1000000000);
    if ((v = getenv("PYBOX_RPD")) != NULL)
        cfg.anon_rpd = (int64_t)number(v, "PYBOX_RPD", 1000000000);
    if ((v = getenv("PYBOX_CLIENT_CONCURRENCY")) != NULL)
        cfg.anon_concurrency =
            (int64_t)number(v, "PYBOX_CLIENT_CONCURRENCY", PBX_STORE_CONCURRENCY_MAX);
    if ((v = getenv("PYBOX_CODE_CHARS")) != NULL)
        cfg.anon_code_chars = number(v, "PYBOX_CODE_CHARS", 64u << 20);
    if ((v = getenv("PYBOX_TIMEOUT")) != NULL) {
        tmp = xasprintf("wall=%s", v);
        set_limit(&cfg.limits, tmp);
        free(tmp);
    }
    if ((v = getenv("PYBOX_MEMORY_MB")) != NULL) {
        tmp = xasprintf("memory=%sM", v);
        set_limit(&cfg.limits, tmp);
        free(tmp);
    }
    if ((v = getenv("PYBOX_CORS_ORIGINS")) != NULL)
        cfg.cors_origins = v;
    if ((v = getenv("PYBOX_MCP")) != NULL)
        cfg.mcp = mcp_access(v, "PYBOX_MCP");
    if ((v = getenv("PYBOX_MCP_ALLOWED_HOSTS")) != NULL)
        cfg.mcp_allowed_hosts = v;
    if ((v = getenv("PYBOX_NODE_ID")) != NULL)
        cfg.node_id = node_id(v, "PYBOX_NODE_ID");
    if ((v = getenv("PYBOX_NODES")) != NULL)
        cfg.nodes = nodes_of(v, "PYBOX_NODES");
    if ((v = getenv("PYBOX_NODE_TTL")) != NULL)
        cfg.node_ttl_s = node_ttl(v, "PYBOX_NODE_TTL");
    if ((v = getenv("PYBOX_DRAIN")) != NULL)
        cfg.drain_s = (unsigned)number(v, "PYBOX_DRAIN", 3600);
    if ((v = getenv("PYBOX_SPARES")) != NULL)
        set_spares(&cfg, v);
    if ((v = getenv("PYBOX_PREFAULT_PAGES")) != NULL)
        cfg.prefault_pages = (unsigned)number(v, "PYBOX_PREFAULT_PAGES", PBX_PREFAULT_MAX_PAGES);
    if ((v = getenv("PYBOX_QUEUE")) != NULL)
        set_queue(&cfg, v);
    if ((v = getenv("PYBOX_RECYCLE")) != NULL)
        set_recycle(&cfg, v);
    if ((v = getenv("PYBOX_MODULES")) != NULL && *v != '\0')
        set_modules(&cfg, "PYBOX_MODULES", v);
    if ((v = getenv("PYBOX_SESSION_IDLE_TTL")) != NULL)
        cfg.session_idle_ttl_s = session_span(v, "PYBOX_SESSION_IDLE_TTL");
    if ((v = getenv("PYBOX_SESSION_LIFETIME")) != NULL)
        cfg.session_lifetime_s = session_span(v, "PYBOX_SESSION_LIFETIME");
    if ((v = getenv("PYBOX_SESSION_MAX_IDLE_TTL")) != NULL)
        cfg.session_max_idle_ttl_s = session_span(v, "PYBOX_SESSION_MAX_IDLE_TTL");
    if ((v = getenv("PYBOX_SESSION_MAX_LIFETIME")) != NULL)
        cfg.session_max_lifetime_s = session_span(v, "PYBOX_SESSION_MAX_LIFETIME");
    if ((v = getenv("PYBOX_SESSIONS")) != NULL)
        set_sessions(&cfg, "PYBOX_SESSIONS", v);
    if ((v = getenv("PYBOX_JAIL_IDS")) != NULL && *v != '\0')
        set_jail_ids(&cfg, "PYBOX_JAIL_IDS", v);
    if ((v = getenv("PYBOX_SERVER_TIMING")) != NULL)
        cfg.server_timing = on_off(v, "PYBOX_SERVER_TIMING");
    /* The admin key: kept in this process only, and out of its environment. */
    v = getenv("PYBOX_ADMIN_KEY");
    if (v == NULL || *v == '\0')
        v = getenv("PYTHON_EXE_KEY");
    if (v != NULL && *v != '\0')
        admin = xstrdup(v);
    unsetenv("PYBOX_ADMIN_KEY");
    unsetenv("PYTHON_EXE_KEY");
    cfg.admin_key = admin;

    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'h':
            help();
            return 0;
        case OPT_LISTEN:
            cfg.listen = optarg;
            break;
        case OPT_DATA:
            data = optarg;
            break;
        case OPT_STORE:
            store = optarg;
            break;
        case OPT_PROXY:
            add_proxies(&cfg, optarg);
            break;
        case OPT_CONC:
            cfg.max_concurrency = (unsigned)number(optarg, "--max-concurrency", 1024);
            if (cfg.max_concurrency == 0)
                pbx_usage_error("serve", "--max-concurrency must be at least 1");
            break;
        case OPT_RPM:
            cfg.anon_rpm = (int64_t)number(optarg, "--rpm", 1000000000);
            break;
        case OPT_RPD:
            cfg.anon_rpd = (int64_t)number(optarg, "--rpd", 1000000000);
            break;
        case OPT_CLIENT_CONC:
            cfg.anon_concurrency =
                (int64_t)number(optarg, "--client-concurrency", PBX_STORE_CONCURRENCY_MAX);
            break;
        case OPT_CHARS:
            cfg.anon_code_chars = number(optarg, "--code-chars", 64u << 20);
            break;
        case OPT_TIMEOUT:
            tmp = xasprintf("wall=%s", optarg);
            set_limit(&cfg.limits, tmp);
            free(tmp);
            break;
        case OPT_MEMORY:
            tmp = xasprintf("memory=%sM", optarg);
            set_limit(&cfg.limits, tmp);
            free(tmp);
            break;
        case OPT_LIMIT:
            set_limit(&cfg.limits, optarg);
            break;
        case OPT_CORS:
            cfg.cors_origins = optarg;
            break;
        case OPT_BODY:
            cfg.max_body = number(optarg, "--max-body", 1ul << 32);
            break;
        case OPT_DEADLINE:
            cfg.request_deadline_s = (unsigned)number(optarg, "--request-deadline", 86400);
            break;
        case OPT_PER_IP:
            cfg.per_ip_connections = (unsigned)number(optarg, "--per-ip", 65536);
            break;
        case OPT_BUDGET:
            cfg.memory_budget = number(optarg, "--memory-budget", 1ul << 40);
            break;
        case OPT_CLIENT_TIMEOUT:
            cfg.client_timeout_s = (unsigned)number(optarg, "--client-timeout", 3600);
            break;
        case OPT_NO_PRELOAD:
            cfg.preload = false;
            break;
        case OPT_URL_FILE:
            cfg.url_file = optarg;
            break;
        case OPT_QUEUE:
            set_queue(&cfg, optarg);
            break;
        case OPT_SPARES:
            set_spares(&cfg, optarg);
            break;
        case OPT_RECYCLE:
            set_recycle(&cfg, optarg);
            break;
        case OPT_MODULES:
            set_modules(&cfg, "--modules", optarg);
            break;
        case OPT_SESSION_IDLE:
            cfg.session_idle_ttl_s = session_span(optarg, "--session-idle-ttl");
            break;
        case OPT_SESSION_LIFE:
            cfg.session_lifetime_s = session_span(optarg, "--session-lifetime");
            break;
        case OPT_SESSION_MAX_IDLE:
            cfg.session_max_idle_ttl_s = session_span(optarg, "--session-max-idle-ttl");
            break;
        case OPT_SESSION_MAX_LIFE:
            cfg.session_max_lifetime_s = session_span(optarg, "--session-max-lifetime");
            break;
        case OPT_SESSIONS:
            set_sessions(&cfg, "--sessions", optarg);
            break;
        case OPT_MCP:
            cfg.mcp = mcp_access(optarg, "--mcp");
            break;
        case OPT_MCP_HOSTS:
            cfg.mcp_allowed_hosts = optarg;
            break;
        case OPT_NODE_ID:
            cfg.node_id = node_id(optarg, "--node-id");
            break;
        case OPT_NODES:
            cfg.nodes = nodes_of(optarg, "--nodes");
            break;
        case OPT_JAIL_IDS:
            set_jail_ids(&cfg, "--jail-ids", optarg);
            break;
        case OPT_NODE_TTL:
            cfg.node_ttl_s = node_ttl(optarg, "--node-ttl");
            break;
        case OPT_DRAIN:
            cfg.drain_s = (unsigned)number(optarg, "--drain", 3600);
            break;
        case OPT_PREFAULT_PAGES:
            cfg.prefault_pages =
                (unsigned)number(optarg, "--prefault-pages", PBX_PREFAULT_MAX_PAGES);
            break;
        case OPT_SERVER_TIMING:
            cfg.server_timing = true;
            break;
        case ':':
            pbx_usage_error("serve", "option `%s` needs a value", argv[optind - 1]);
        default:
            pbx_usage_error("serve", "unknown option `%s`", argv[optind - 1]);
        }
    }
    if (optind < argc)
        pbx_usage_error("serve", "unexpected argument `%s`", argv[optind]);
    if (cfg.session_idle_ttl_s > cfg.session_max_idle_ttl_s)
        pbx_usage_error("serve", "--session-idle-ttl %u is over --session-max-idle-ttl %u",
                        cfg.session_idle_ttl_s, cfg.session_max_idle_ttl_s);
    if (cfg.session_lifetime_s > cfg.session_max_lifetime_s)
        pbx_usage_error("serve", "--session-lifetime %u is over --session-max-lifetime %u",
                        cfg.session_lifetime_s, cfg.session_max_lifetime_s);
    /* CPU time follows a longer wall time, as in pybox run. */
    if (cfg.limits.cpu_ms < cfg.limits.wall_ms)
        cfg.limits.cpu_ms = cfg.limits.wall_ms;
    /* The store by the rule of every command (cli.h), named before anything else is said. */
    store_uri = pbx__cli_store_uri("serve", data, store);
    cfg.store_uri = store_uri;
    shown = pbx_store_uri_redact(store_uri);
    fprintf(stderr, "pybox: store %s\n", shown); /* without a password it may hold */
    free(shown);
    if (pbx_server_run(&cfg, &err) < 0)
        pbx_die(1, "%s", err->msg);
    free(store_uri);
    free(admin);
    free(envproxies);
    return 0;
}
