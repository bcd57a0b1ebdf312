/*
 * pybox serve: the server's life (its configuration, start, quiesce and
 * free, and pbx_server_run() with the engines behind it) and its memory
 * budget.  The HTTP side is http.c, the execute endpoints execute.c.
 *
 * Theory of operation: one process holds the secrets (the admin key, the
 * store) and two engines (each a jail whose zygote forks a cell per
 * execution, see src/engine/engine.c): one for anonymous callers, one for
 * key holders, so that callers of different trust never share a zygote's
 * address-space layout.  libmicrohttpd runs a thread per connection, at most
 * per_ip_connections from one address; a watchdog thread cuts a connection
 * whose request does not arrive whole (or whose answer does not leave)
 * within request_deadline_s.  A request body is read into a capped buffer
 * charged to the server's memory budget: bodies announced larger than the
 * largest valid request are refused before they are read, and bodies the
 * budget cannot hold get 503.  Then the request is routed; executions are
 * handled in src/server/execute.c, on the connection's thread.  Sessions
 * (session_table.c) are cells kept alive between calls, each on the engine
 * of its caller's trust class; a reaper thread ends those whose idle time
 * or lifetime ran out, and when the server stops every session is closed
 * once the daemon has stopped, before the engines are freed.
 * SIGTERM or SIGINT: stop accepting, let running executions finish for up
 * to drain_s, stop (kill) those still running then, so that every
 * connection's thread returns, stop the engines, exit 0.  With a node id
 * (--node-id), the server claims it in the store before anything else and
 * renews the claim while it runs (node_claim.c); a clean exit gives it back
 * once the engines are stopped.  SIGHUP: replace both zygotes (new
 * jails, so a view of the Python installation as it is now), running
 * executions finishing on the old ones.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/xalloc.h"
#include "engine/prefault.h"
#include "server/internal.h"
#include "server/audit_spool.h"
#include "server/key_cache.h"
#include "server/node_claim.h"
#include "server/session_table.h"
#include "sandbox/uidmap.h"
#include "common/banned.h"

void pbx_server_config_default(struct pbx_server_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->listen = "127.0.0.1:8080";
    cfg->data_dir = "/var/lib/pybox";
    cfg->max_concurrency = 5;
    cfg->queue_max = 16;
    cfg->queue_wait_ms = 5000;
    cfg->anon_rpm = 5;
    cfg->anon_rpd = 30;
    cfg->anon_code_chars = 2000;
    pbx_limits_default(&cfg->limits);
    cfg->cors_origins = "*";
    cfg->max_body = 32u << 20;
    cfg->client_timeout_s = 30;
    cfg->request_deadline_s = 60;
    cfg->per_ip_connections = 64;
    cfg->memory_budget = 0;
    cfg->drain_s = 30;
    cfg->preload = true;
    cfg->spares_min = 2;
    cfg->spares_max = 6;
    cfg->prefault_pages = PBX_PREFAULT_PAGES;
    cfg->zygote_max_execs = 5000;
    cfg->zygote_max_age_s = 600;
    cfg->jail_id_base = PBX_UIDMAP_DEFAULT_BASE;
    cfg->jail_id_count = PBX_UIDMAP_DEFAULT_COUNT;
    cfg->jail_ids_auto = true;
    cfg->session_idle_ttl_s = 600;
    cfg->session_lifetime_s = 3600;
    cfg->session_max_idle_ttl_s = 3600;
    cfg->session_max_lifetime_s = 86400;
    cfg->sessions_per_client = 4;
    cfg->sessions_per_key = 16;
    cfg->sessions_max = 64;
    cfg->node_ttl_s = PBX_SERVER_NODE_TTL_S;
}

/* ---- bodies and the memory budget ---- */

/*
 * The largest body a valid execution request can be, from the limits every
 * caller shares: code and stdin as JSON strings (each byte at most a six-byte
 * escape), input files in base64, the names to return escaped likewise, and
 * room for the other fields.  A body announced larger cannot be valid, so it
 * is refused before it is read, whoever sends it.
 */
static size_t max_valid_body(const struct pbx_server_config *cfg)
{
    const struct pbx_limits *l = &cfg->limits;
    uint64_t n = 64u << 10;

    n += l->code_bytes * 6 + l->stdin_bytes * 6;
    n += (uint64_t)l->input_files * ((l->input_file_bytes + 2) / 3 * 4 + 255 * 6 + 64);
    n += (uint64_t)l->output_files * (255 * 6 + 8);
    return n < cfg->max_body ? (size_t)n : cfg->max_body;
}

size_t pbx__server_answer_reserve(const struct pbx_limits *l, bool compat)
{
    uint64_t a = l->answer_bytes;
    uint64_t o = l->stdout_bytes + l->stderr_bytes;

    if (!compat)
        return (size_t)a * 4 + (64u << 10);
    /*
     * The compatible answer carries the output several times over, each copy
     * in the dumped text: stdout as execution_details.stdout, `stdout` and
     * S2's `output`; stderr as execution_details.stderr, S4's `stderr` and
     * S2's `error`; the files as S1's content_base64 and S4's output_files.
     * Of `a`, the answer limit, at most `o` is stdout and stderr:
     *   the result itself                                      a
     *   its tree: the output's strings and the two new copies  3o
     *     (S4's stderr, S2's error; S3's stdout in their place)
     *   and the files' base64, shared by both maps             4/3 a
     *   the text: 3 copies of each output, a byte at most a    18o
     *     six-byte escape (\u0000)
     *   and 2 copies of the files' base64                      8/3 a
     * plus S4's notes (in `stderr` and `error`) and S2's forbidden-import
     * message, escaped, and room for the other fields.
     */
    if (o > a)
        o = a;
    return (size_t)(a + 3 * o + a * 4 / 3 + 18 * o + a * 8 / 3 +
                    6 * (2 * (64u << 10) + (1u << 20)) + (64u << 10));
}

bool pbx__server_budget_take(struct pbx_server *s, struct request_ctx *ctx, size_t n)
{
    size_t used = atomic_load(&s->budget_used);

    do {
        if (n > s->budget || used > s->budget - n)
            return false;
    } while (!atomic_compare_exchange_weak(&s->budget_used, &used, used + n));
    ctx->held += n;
    return true;
}

enum MHD_Result pbx__server_budget_spent(struct pbx_server *s, struct MHD_Connection *c,
                                         struct request_ctx *ctx)
{
    struct pbx_refusal no = {0};

    pbx__server_budget_refusal(s, &no);
    return pbx__http_send_refusal(c, ctx, s, &no);
}

void pbx__server_budget_refusal(struct pbx_server *s, struct pbx_refusal *no)
{
    atomic_fetch_add(&s->metrics.budget_refusals, 1);
    pbx__refusal_set(no, "ServerBusy",
                     "the server's memory for requests in flight is spent; retry in a moment", 1,
                     NULL);
}

void pbx__server_budget_release(struct pbx_server *s, struct request_ctx *ctx)
{
    atomic_fetch_sub(&s->budget_used, ctx->held);
    ctx->held = 0;
}

/* ---- the server's life ---- */

int pbx__server_new(const struct pbx_server_config *cfg, struct pbx_store *store,
                    const struct pbx_server_executor *ex, struct pbx_server **out,
                    struct pbx_error **err)
{
    struct pbx_server *s = xcalloc(1, sizeof(*s));
    unsigned char salt[4];

    s->cfg = cfg;
    s->store = store;
    s->ex = *ex;
    randombytes_buf(salt, sizeof(salt));
    sodium_bin2hex(s->id_salt, sizeof(s->id_salt), salt, sizeof(salt));
    s->admit = pbx__admit_new(cfg->max_concurrency);
    s->sessions = pbx__session_table_new(&(struct session_caps){
        .total = cfg->sessions_max,
        .node = cfg->node_id,
    });
    s->mcp = pbx__mcp_table_new();
    s->keys = pbx__key_cache_new();
    s->audit = pbx__audit_spool_new();
    pbx__admit_set_queue(s->admit, cfg->queue_max, cfg->queue_wait_ms);
    pbx__admit_set_nodes(s->admit, cfg->nodes);
    for (size_t i = 0; i < cfg->nproxies; i++) {
        if (pbx__admit_add_proxy(s->admit, cfg->proxies[i], err) < 0) {
            pbx__server_free(s);
            return -1;
        }
    }
    s->callers = (struct pbx_caller_config){
        .anon_rpm = cfg->anon_rpm,
        .anon_rpd = cfg->anon_rpd,
        .anon_concurrency = cfg->anon_concurrency,
        .anon_code_chars = cfg->anon_code_chars,
        .limits = &cfg->limits,
        .admin_key = cfg->admin_key,
        .anon_sessions =
            {
                .open = cfg->sessions_per_client,
                .idle_ttl_s = cfg->session_idle_ttl_s,
                .max_idle_ttl_s = cfg->session_max_idle_ttl_s,
                .lifetime_s = cfg->session_lifetime_s,
                .max_lifetime_s = cfg->session_max_lifetime_s,
            },
        .key_sessions = cfg->sessions_per_key,
    };
    if (cfg->modules != NULL && pbx_caller_parse_modules(cfg->modules, &s->callers.anon_all_modules,
                                                         &s->anon_modules, err) < 0) {
        pbx_error_prefix(err, "--modules");
        pbx__server_free(s);
        return -1;
    }
    s->callers.anon_modules = s->anon_modules;
    s->max_valid_body = max_valid_body(cfg);
    s->caps = (struct pbx_request_caps){
        .max_files = cfg->limits.input_files,
        .max_file_bytes = cfg->limits.input_file_bytes,
        .max_return = cfg->limits.output_files,
        .max_stdin = cfg->limits.stdin_bytes,
    };
    s->budget = cfg->memory_budget;
    if (s->budget == 0) {
        /* Room for every slot's largest answer (the compatible dialect's), and the largest body
         * of every slot and place in the queue. */
        s->budget = (size_t)cfg->max_concurrency * pbx__server_answer_reserve(&cfg->limits, true) +
                    (size_t)(cfg->max_concurrency + cfg->queue_max) * 2 * s->max_valid_body;
    }
    *out = s;
    return 0;
}

/*
 * libmicrohttpd's decoding of the URL's %XX escapes (and of the query's), but
 * for one thing: an escaped NUL (%00) becomes the byte 0x01.  A NUL would
 * cut the path the routes are given where it stands, so that
 * /v1/sessions/{id}/files/a%00b named the file `a`; a control byte is
 * refused there as what it is.
 */
static size_t unescape(void *cls, struct MHD_Connection *c, char *s)
{
    size_t n = MHD_http_unescape(s);

    (void)cls;
    (void)c;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\0')
            s[i] = '\x01';
    }
    return n;
}

int pbx__server_start(struct pbx_server *s, const struct sockaddr *addr, socklen_t addrlen,
                      bool external, struct pbx_error **err)
{
    const struct pbx_server_config *cfg = s->cfg;
    unsigned flags = external ? MHD_USE_ERROR_LOG
                              : MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION |
                                    MHD_USE_ERROR_LOG | MHD_USE_ITC;
    const union MHD_DaemonInfo *info;
    struct MHD_OptionItem opts[4];
    size_t nopt = 0;

    if (addr == NULL)
        flags |= MHD_USE_NO_LISTEN_SOCKET;
    else if (addr->sa_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    if (addr != NULL)
        opts[nopt++] = (struct MHD_OptionItem){MHD_OPTION_SOCK_ADDR, 0, (void *)addr};
    if (cfg->per_ip_connections > 0)
        opts[nopt++] = (struct MHD_OptionItem){MHD_OPTION_PER_IP_CONNECTION_LIMIT,
                                               (intptr_t)cfg->per_ip_connections, NULL};
    opts[nopt++] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};
    (void)addrlen;
    if (cfg->request_deadline_s > 0 && !external &&
        pbx__watch_start(s, cfg->request_deadline_s, err) < 0)
        return -1;
    /* The reaper ends expired sessions; a daemon driven from outside (the fuzzer) opens none. */
    if (!external && pbx__session_table_start(s->sessions, err) < 0)
        return -1;
    s->daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, pbx__http_on_request, s, MHD_OPTION_NOTIFY_COMPLETED,
        pbx__http_on_completed, s, MHD_OPTION_NOTIFY_CONNECTION, pbx__watch_on_connection, s,
        MHD_OPTION_CONNECTION_TIMEOUT, cfg->client_timeout_s, MHD_OPTION_CONNECTION_LIMIT, 512u,
        MHD_OPTION_EXTERNAL_LOGGER, pbx__http_log, NULL, MHD_OPTION_STRICT_FOR_CLIENT, 1,
        MHD_OPTION_UNESCAPE_CALLBACK, unescape, NULL, MHD_OPTION_ARRAY, opts, MHD_OPTION_END);
    if (s->daemon == NULL)
        return pbx_error_set(err, EADDRINUSE, "listen on %s", cfg->listen);
    if (addr == NULL)
        return 0;
    info = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
    return info ? (int)info->port : 0;
}

void pbx__server_step(struct pbx_server *s)
{
    MHD_run(s->daemon);
}

int pbx__server_add_connection(struct pbx_server *s, int fd, const struct sockaddr *peer,
                               socklen_t peerlen)
{
    return MHD_add_connection(s->daemon, fd, peer, peerlen) == MHD_YES ? 0 : -1;
}

void pbx__server_quiesce(struct pbx_server *s, unsigned drain_ms)
{
    MHD_socket lsock = MHD_quiesce_daemon(s->daemon);
    uint64_t until = pbx_clock_ms(CLOCK_REALTIME) + drain_ms;

    if (lsock != MHD_INVALID_SOCKET)
        close(lsock);
    while (pbx__admit_active(s->admit) > 0 && pbx_clock_ms(CLOCK_REALTIME) < until)
        usleep(20000);
}

void pbx__server_free(struct pbx_server *s)
{
    if (s == NULL)
        return;
    if (s->daemon != NULL)
        MHD_stop_daemon(s->daemon);
    /*
     * No request runs now: every MCP session ends (and the sessions opened
     * through it), then every other session, before the engines are stopped.
     */
    pbx__mcp_table_free(s->mcp);
    pbx__session_table_free(s->sessions);
    pbx__watch_stop(s);
    pbx__admit_free(s->admit);
    pbx__key_cache_free(s->keys);
    pbx__audit_spool_free(s->audit, s->store);
    free(s->anon_modules);
    free(s);
}

static int parse_listen(const char *listen, struct sockaddr_storage *ss, socklen_t *len,
                        struct pbx_error **err)
{
    char host[128];
    const char *colon = strrchr(listen, ':');
    char *end = NULL;
    long port;
    size_t hlen;

    if (colon == NULL)
        return pbx_error_set(err, PBX_E_INVAL, "--listen `%s` is not HOST:PORT", listen);
    hlen = (size_t)(colon - listen);
    if (hlen >= sizeof(host))
        return pbx_error_set(err, PBX_E_INVAL, "--listen `%s`: host too long", listen);
    memcpy(host, listen, hlen);
    host[hlen] = '\0';
    if (hlen >= 2 && host[0] == '[' && host[hlen - 1] == ']') {
        memmove(host, host + 1, hlen - 2);
        host[hlen - 2] = '\0';
    }
    port = strtol(colon + 1, &end, 10);
    if (end == colon + 1 || *end != '\0' || port < 0 || port > 65535)
        return pbx_error_set(err, PBX_E_INVAL, "--listen `%s`: bad port", listen);
    memset(ss, 0, sizeof(*ss));
    if (inet_pton(AF_INET, host, &((struct sockaddr_in *)ss)->sin_addr) == 1) {
        ((struct sockaddr_in *)ss)->sin_family = AF_INET;
        ((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)port);
        *len = sizeof(struct sockaddr_in);
    } else if (inet_pton(AF_INET6, host, &((struct sockaddr_in6 *)ss)->sin6_addr) == 1) {
        ((struct sockaddr_in6 *)ss)->sin6_family = AF_INET6;
        ((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)port);
        *len = sizeof(struct sockaddr_in6);
    } else {
        return pbx_error_set(err, PBX_E_INVAL, "--listen `%s`: `%s` is not an IP address", listen,
                             host);
    }
    return 0;
}

/* ---- pbx_server_run: the engines behind the server ---- */

struct engines {
    struct pbx_engine *e[PBX_TRUST_COUNT];  /* one zygote per trust class */
    struct pbx_engine_config cfg;           /* the same for each */
    struct pbx_error *err[PBX_TRUST_COUNT]; /* why one did not start */
};

static int engines_execute(void *arg, enum pbx_trust trust, const struct pbx_exec_request *req,
                           struct pbx_exec_result *res, struct pbx_error **err)
{
    struct engines *en = arg;

    return pbx_engine_execute(en->e[trust], req, res, err);
}

static int engines_session_open(void *arg, enum pbx_trust trust, const struct pbx_limits *limits,
                                const struct pbx_file_in *files, size_t nfiles,
                                struct pbx_session **out, struct pbx_error **err)
{
    struct engines *en = arg;

    return pbx_session_open(en->e[trust], limits, files, nfiles, out, err);
}

static void engines_pool_stats(void *arg, struct pbx_pool_stats *st)
{
    struct engines *en = arg;

    memset(st, 0, sizeof(*st));
    for (int i = 0; i < PBX_TRUST_COUNT; i++) {
        struct pbx_pool_stats one;

        pbx_engine_pool_stats(en->e[i], &one);
        st->idle += one.idle;
        st->target += one.target;
        st->hits += one.hits;
        st->misses += one.misses;
        st->zygotes += one.zygotes;
        st->cgroups_created += one.cgroups_created;
        st->cgroups_reused += one.cgroups_reused;
    }
}

static void *start_keyed(void *arg)
{
    struct engines *en = arg;

    (void)pbx_engine_start(&en->cfg, &en->e[PBX_TRUST_KEYED], &en->err[PBX_TRUST_KEYED]);
    return NULL;
}

/* Start both engines, side by side (each zygote imports numpy on its own). */
static int engines_start(struct engines *en, const struct pbx_server_config *cfg,
                         struct pbx_error **err)
{
    pthread_t keyed;
    bool threaded;

    pbx_engine_config_default(&en->cfg);
    en->cfg.preload = cfg->preload;
    /* The warm pools serve executions with the server's default limits. */
    en->cfg.spares_min = cfg->spares_min;
    en->cfg.spares_max = cfg->spares_max;
    en->cfg.prefault_pages = cfg->prefault_pages;
    en->cfg.spare_limits = cfg->limits;
    en->cfg.zygote_max_execs = cfg->zygote_max_execs;
    en->cfg.zygote_max_age_s = cfg->zygote_max_age_s;
    en->cfg.uid_base = (uid_t)cfg->jail_id_base;
    en->cfg.uid_count = cfg->jail_id_count;
    en->cfg.uid_auto = cfg->jail_ids_auto;
    threaded = pthread_create(&keyed, NULL, start_keyed, en) == 0;
    (void)pbx_engine_start(&en->cfg, &en->e[PBX_TRUST_ANONYMOUS], &en->err[PBX_TRUST_ANONYMOUS]);
    if (threaded)
        pthread_join(keyed, NULL);
    else
        start_keyed(en);
    for (int i = 0; i < PBX_TRUST_COUNT; i++) {
        if (en->e[i] == NULL) {
            *err = en->err[i];
            en->err[i] = NULL;
            pbx_error_free(&en->err[1 - i]);
            return pbx_error_prefix(err, "start the jail");
        }
    }
    return 0;
}

/* How long executions stopped at the drain's end have to answer, at most. */
#define STOPPED_ANSWER_MS 2000

/* Stop every execution running now and from now on (pbx_engine_stop_executions()). */
static void engines_stop_executions(struct engines *en)
{
    for (int i = 0; i < PBX_TRUST_COUNT; i++)
        pbx_engine_stop_executions(en->e[i]);
}

static void engines_stop(struct engines *en)
{
    for (int i = 0; i < PBX_TRUST_COUNT; i++) {
        pbx_engine_free(en->e[i]);
        en->e[i] = NULL;
    }
}

/*
 * SIGHUP: a new zygote for each engine, so that new executions see the host's
 * Python installation as it is now (a jail's view of it is built when its
 * zygote starts, src/sandbox/rootfs.c), while running ones finish on the old
 * zygotes.  One line says how it went.
 */
static void engines_reload(struct engines *en)
{
    struct pbx_error *err = NULL;
    int failed = 0;

    for (int i = 0; i < PBX_TRUST_COUNT; i++) {
        struct pbx_error *e = NULL;

        if (pbx_engine_reload(en->e[i], &e) < 0) {
            failed++;
            if (err == NULL)
                err = e;
            else
                pbx_error_free(&e);
        }
    }
    if (failed == 0)
        fprintf(stderr, "pybox: SIGHUP received: zygotes replaced; new executions see the Python "
                        "installation as it is now\n");
    else
        fprintf(stderr,
                "pybox: SIGHUP received: %d of %d new zygotes did not start (%s); the old "
                "ones serve on\n",
                failed, PBX_TRUST_COUNT, err->msg);
    pbx_error_free(&err);
}

/*
 * The isolation in force, as pbx_engine_describe() has it (a line each),
 * one log line each under a heading, and what --modules changed.
 */
static void log_start(const struct pbx_server_config *cfg, const struct engines *en)
{
    char *desc = pbx_engine_describe(en->e[PBX_TRUST_ANONYMOUS]);

    fprintf(stderr, "pybox: isolation in force:\n");
    for (char *line = desc, *end; *line != '\0'; line = end) {
        end = line + strcspn(line, "\n");
        fprintf(stderr, "pybox:   %.*s\n", (int)(end - line), line);
        if (*end == '\n')
            end++;
    }
    free(desc);
    if (cfg->modules != NULL && strcmp(cfg->modules, "all") == 0)
        fprintf(stderr, "pybox: imports: no allowlist for any caller (--modules all)\n");
    else if (cfg->modules != NULL)
        fprintf(stderr, "pybox: imports: the default allowlist and %s, for every caller\n",
                cfg->modules);
}

/* `ms` as "1h02m03s", "2m03s" or "3.4 s". */
static void format_span(uint64_t ms, char *out, size_t len)
{
    uint64_t s = ms / 1000;

    if (s >= 3600)
        snprintf(out, len, "%" PRIu64 "h%02um%02us", s / 3600, (unsigned)(s / 60 % 60),
                 (unsigned)(s % 60));
    else if (s >= 60)
        snprintf(out, len, "%um%02us", (unsigned)(s / 60), (unsigned)(s % 60));
    else
        snprintf(out, len, "%.1f s", ms / 1000.0);
}

/* The last line: how long it served, and what. */
static void log_stop(struct pbx_server *s, uint64_t started_ms)
{
    unsigned long requests, executions, ok;
    unsigned active = pbx__admit_active(s->admit);
    char span[32];

    pbx__metrics_totals(s, &requests, &executions, &ok);
    format_span(pbx_clock_ms(CLOCK_MONOTONIC) - started_ms, span, sizeof(span));
    fprintf(stderr,
            "pybox: stopped after %s: %lu request%s answered, %lu execution%s run (%lu ok)%s\n",
            span, requests, requests == 1 ? "" : "s", executions, executions == 1 ? "" : "s", ok,
            active > 0 ? "; those still running at the drain's end were stopped" : "");
}

static void write_url_file(const char *path, const char *url)
{
    char *tmp = xasprintf("%s.tmp", path);
    FILE *f = fopen(tmp, "we");

    if (f != NULL) {
        fprintf(f, "%s\n", url);
        fclose(f);
        rename(tmp, path);
    }
    free(tmp);
}

int pbx_server_run(const struct pbx_server_config *cfg, struct pbx_error **err)
{
    struct engines en = {0};
    struct pbx_server_executor ex = {.execute = engines_execute,
                                     .pool_stats = engines_pool_stats,
                                     .session_open = engines_session_open,
                                     .arg = &en};
    struct pbx_server *s = NULL;
    struct pbx_store *store = NULL;
    struct node_claim *node = NULL;
    struct sockaddr_storage ss;
    socklen_t sslen = 0;
    char *uri = NULL;
    uint64_t started_ms = 0;
    char url[128];
    char host[64];
    sigset_t sigs;
    int sig = 0;
    int port;
    int rc = -1;

    if (parse_listen(cfg->listen, &ss, &sslen, err) < 0)
        return -1;
    if (cfg->store_uri == NULL) {
        if (mkdir(cfg->data_dir, 0700) < 0 && errno != EEXIST)
            return pbx_error_set(err, errno, "create the data directory `%s`", cfg->data_dir);
        uri = xasprintf("sqlite:%s/pybox.db", cfg->data_dir);
    } else {
        uri = xstrdup(cfg->store_uri);
    }
    if (pbx_store_open(uri, &store, err) < 0) {
        pbx_error_prefix(err, "open the store");
        goto out;
    }
    /* The node's id before anything else: a second server with it never starts its jails. */
    if (cfg->node_id != NULL &&
        pbx__node_claim_start(store, cfg->node_id, cfg->node_ttl_s, &node, err) < 0)
        goto out;
    if (engines_start(&en, cfg, err) < 0)
        goto out;
    log_start(cfg, &en);
    if (pbx__server_new(cfg, store, &ex, &s, err) < 0)
        goto out;
    s->node = node;

    /* Signals are taken by sigwait() below; every thread inherits the block. */
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    port = pbx__server_start(s, (const struct sockaddr *)&ss, sslen, false, err);
    if (port < 0)
        goto out;
    inet_ntop(ss.ss_family,
              ss.ss_family == AF_INET ? (void *)&((struct sockaddr_in *)&ss)->sin_addr
                                      : (void *)&((struct sockaddr_in6 *)&ss)->sin6_addr,
              host, sizeof(host));
    if (ss.ss_family == AF_INET6)
        snprintf(url, sizeof(url), "http://[%s]:%d", host, port);
    else
        snprintf(url, sizeof(url), "http://%s:%d", host, port);
    fprintf(stderr, "pybox: serving on %s\n", url);
    started_ms = pbx_clock_ms(CLOCK_MONOTONIC);
    if (cfg->url_file != NULL)
        write_url_file(cfg->url_file, url);

    while (sigwait(&sigs, &sig) == 0 && sig == SIGHUP)
        engines_reload(&en);
    fprintf(stderr, "pybox: %s received: draining\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
    pbx__server_quiesce(s, cfg->drain_s * 1000u);
    log_stop(s, started_ms);
    /*
     * The drain ran out: what still runs is stopped, so that the daemon's
     * threads end now, and given a moment to answer its client (a `Stopped`
     * result) before the daemon closes the connections.
     */
    if (pbx__admit_active(s->admit) > 0) {
        engines_stop_executions(&en);
        pbx__server_quiesce(s, STOPPED_ANSWER_MS);
    }
    rc = 0;
out:
    pbx__server_free(s);
    engines_stop(&en);
    /* The id is given back once nothing of this server runs, so the next start need not wait. */
    pbx__node_claim_free(node);
    pbx_store_close(store);
    free(uri);
    return rc;
}
