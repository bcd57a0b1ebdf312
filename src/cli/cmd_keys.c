/*
 * pybox keys: create, list and revoke the API keys of `pybox serve`, and set
 * their policies, in the store (src/store/store.h).
 *
 * `create` prints the token alone on stdout, so `KEY=$(pybox keys create
 * --name x)` works; it is shown this once, since the store keeps only its
 * hash.  Nothing here ever prints a token again.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <sodium.h>

#include "cli/cli.h"
#include "common/cleanup.h"
#include "common/xalloc.h"
#include "policy/limits.h"
#include "store/store.h"
#include "common/banned.h"

#define EXIT_STORE 1 /* the store failed or refused the operation */

/* Bounds of --rpm and --rpd. */
#define MAX_RATE 1000000000

static const char store_options_help[] =
    "  --data DIR            pybox's data directory; the store is sqlite:DIR/pybox.db\n"
    "                        (default: env PYBOX_DATA, else " PBX_CLI_SYSTEM_DATA_DIR " for\n"
    "                        root, else $XDG_DATA_HOME/pybox or ~/.local/share/pybox:\n"
    "                        the same as `pybox serve`'s)\n"
    "  --store URI           the store itself, sqlite:PATH or redis://HOST[:PORT][/DB]\n"
    "                        (env PYBOX_STORE); options beat the environment, and\n"
    "                        --store beats --data\n"
    "  -h, --help            show this help\n"
    "Every command names the store it used on stderr.\n";

static void help_keys(void)
{
    printf("usage: pybox keys COMMAND [OPTIONS]\n\n"
           "Manage the API keys of `pybox serve` and their policies, in the store.\n\n"
           "Commands:\n"
           "  create --name NAME [POLICY]  create a key and print its token, shown only once\n"
           "  list [--json]                list the keys (never their tokens)\n"
           "  revoke NAME                  revoke a key: it never authenticates again\n\n"
           "POLICY: rates, limits, modules, sessions (`pybox keys create --help`).\n\n"
           "Options of every command:\n"
           "%s\n"
           "Only `create` creates the store; `list` and `revoke` fail when it does not exist.\n"
           "`pybox keys COMMAND --help` describes a command.\n",
           store_options_help);
}

static void help_create(void)
{
    printf("usage: pybox keys create --name NAME [OPTIONS]\n\n"
           "Create an API key and print its token alone on stdout, e.g.\n"
           "  KEY=$(pybox keys create --name ci --rpd 1000)\n"
           "The token is shown only this once: the store keeps its hash, not the token.\n"
           "Names are 1 to 64 of A-Z a-z 0-9 . _ @ - and stay taken after a revoke.\n\n"
           "Options (the policy; what is not set follows the server's anonymous policy):\n"
           "  --name NAME           the key's unique name (required)\n"
           "  --rpm N               requests per minute: a number, `unlimited`, or `default`\n"
           "  --rpd N               requests per UTC day: likewise\n"
           "  --concurrency N       executions of the key at once, every node sharing the\n"
           "                        store together: 1 to 100000, `unlimited`, or `default`\n"
           "                        (`pybox serve --client-concurrency`)\n"
           "  --timeout S           wall-clock limit of an execution in seconds, e.g. 30 or 2.5\n"
           "  --memory MB           memory limit of an execution in MiB, e.g. 512\n"
           "  --modules all|LIST    `all`: no import allowlist; LIST: modules allowed besides\n"
           "                        the server's allowlist (the default and `pybox serve\n"
           "                        --modules`), comma- or space-separated\n"
           "  --network             the key may ask for network access\n"
           "  --admin               the key bypasses rates, quotas and import restrictions\n"
           "  --sessions N          sessions the key may have open at once, 1 to 100000, in\n"
           "                        place of the server's per-key cap (`pybox serve\n"
           "                        --sessions`); the server's total still applies\n"
           "  --session-idle-ttl S  the longest idle time a session of the key may ask, in\n"
           "                        whole seconds up to a year (31536000), in place of\n"
           "                        `pybox serve --session-max-idle-ttl`\n"
           "  --session-lifetime S  the longest lifetime a session of the key may ask, in\n"
           "                        place of `--session-max-lifetime`; likewise. A session\n"
           "                        that asks none gets the server's default, cut to these\n"
           "%s",
           store_options_help);
}

static void help_list(void)
{
    printf("usage: pybox keys list [--json] [OPTIONS]\n\n"
           "List the keys, oldest first, with their policies; tokens are never shown, only\n"
           "their first characters (PREFIX). `default` means the server's anonymous policy\n"
           "(for SESSIONS, its per-key cap; for IDLE-TTL and LIFETIME, its session maxima).\n\n"
           "Options:\n"
           "  --json                print a JSON array instead of a table; there rpm, rpd and\n"
           "                        concurrency are 0 for the default and -1 for unlimited,\n"
           "                        timeout_ms,\n"
           "                        memory_bytes, sessions, session_idle_ttl_s and\n"
           "                        session_lifetime_s 0 for the default\n"
           "%s",
           store_options_help);
}

static void help_revoke(void)
{
    printf("usage: pybox keys revoke NAME [OPTIONS]\n\n"
           "Revoke the key NAME: it never authenticates again. Its name stays taken, so the\n"
           "audit log stays unambiguous. Revoking a revoked key is not an error.\n\n"
           "Options:\n"
           "%s",
           store_options_help);
}

enum {
    OPT_DATA = 256,
    OPT_STORE,
    OPT_NAME,
    OPT_RPM,
    OPT_RPD,
    OPT_CONCURRENCY,
    OPT_TIMEOUT,
    OPT_MEMORY,
    OPT_MODULES,
    OPT_NETWORK,
    OPT_ADMIN,
    OPT_SESSIONS,
    OPT_SESSION_IDLE,
    OPT_SESSION_LIFE,
    OPT_JSON,
};

/* Where the store is, from the options (pbx__cli_store_uri() adds the environment). */
struct store_choice {
    const char *data;  /* --data DIR, or NULL */
    const char *store; /* --store URI, or NULL */
};

/* Open the store (only `create` may create it), by the rule of every command. */
static struct pbx_store *open_store(const char *cmd, const struct store_choice *c, bool create,
                                    char **uri)
{
    return pbx__cli_open_store(cmd, c->data, c->store, create, EXIT_STORE, uri);
}

/* Handle the options every command takes; returns false for any other. */
static bool common_option(int c, struct store_choice *choice)
{
    switch (c) {
    case OPT_DATA:
        choice->data = optarg;
        return true;
    case OPT_STORE:
        choice->store = optarg;
        return true;
    default:
        return false;
    }
}

/* Report what getopt_long() refused, as one line, and exit 2. */
static noreturn void bad_option(const char *cmd, int c, char **argv)
{
    if (c == ':')
        pbx_usage_error(cmd, "option `%s` needs a value", argv[optind - 1]);
    pbx_usage_error(cmd, "unknown option `%s`", argv[optind - 1]);
}

/* A rate: a whole number >= 0 (0 is the default), `unlimited` (-1) or `default` (0). */
static int64_t parse_rate(const char *cmd, const char *opt, const char *v)
{
    char *end = NULL;
    long long n;

    if (strcmp(v, "unlimited") == 0 || strcmp(v, "-1") == 0)
        return -1;
    if (strcmp(v, "default") == 0)
        return 0;
    if (v[0] < '0' || v[0] > '9')
        pbx_usage_error(cmd, "%s: `%s` is not a whole number, `unlimited` or `default`", opt, v);
    errno = 0;
    n = strtoll(v, &end, 10);
    if (errno != 0 || *end != '\0' || n < 0)
        pbx_usage_error(cmd, "%s: `%s` is not a whole number, `unlimited` or `default`", opt, v);
    if (n > MAX_RATE)
        pbx_usage_error(cmd, "%s: %s is more than %d; use `unlimited`", opt, v, MAX_RATE);
    return n;
}

/*
 * A whole number from 1 to `most`, digits only: --sessions and the session
 * spans, which have no `default` (leaving the option out is the default).
 */
static uint32_t parse_count(const char *cmd, const char *opt, const char *v, unsigned long most,
                            const char *what)
{
    char *end = NULL;
    unsigned long n;

    if (v[0] < '0' || v[0] > '9')
        pbx_usage_error(cmd, "%s: `%s` is not a whole number of %s from 1 to %lu", opt, v, what,
                        most);
    errno = 0;
    n = strtoul(v, &end, 10);
    if (errno != 0 || *end != '\0' || n == 0 || n > most)
        pbx_usage_error(cmd, "%s: `%s` is not a whole number of %s from 1 to %lu", opt, v, what,
                        most);
    return (uint32_t)n;
}

/* --timeout and --memory go through the limits parser, so they read as in `pybox run`. */
static void parse_limit(const char *cmd, const char *opt, const char *assignment,
                        struct pbx_limits *l)
{
    struct pbx_error *err = NULL;

    if (pbx_limits_set(l, assignment, &err) < 0)
        pbx_usage_error(cmd, "%s: %s", opt, err->msg);
}

static int cmd_create(int argc, char **argv)
{
    static const struct option opts[] = {
        {"name", required_argument, NULL, OPT_NAME},
        {"rpm", required_argument, NULL, OPT_RPM},
        {"rpd", required_argument, NULL, OPT_RPD},
        {"concurrency", required_argument, NULL, OPT_CONCURRENCY},
        {"timeout", required_argument, NULL, OPT_TIMEOUT},
        {"memory", required_argument, NULL, OPT_MEMORY},
        {"modules", required_argument, NULL, OPT_MODULES},
        {"network", no_argument, NULL, OPT_NETWORK},
        {"admin", no_argument, NULL, OPT_ADMIN},
        {"sessions", required_argument, NULL, OPT_SESSIONS},
        {"session-idle-ttl", required_argument, NULL, OPT_SESSION_IDLE},
        {"session-lifetime", required_argument, NULL, OPT_SESSION_LIFE},
        {"data", required_argument, NULL, OPT_DATA},
        {"store", required_argument, NULL, OPT_STORE},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    static const char cmd[] = "keys create";
    struct store_choice choice = {0};
    struct pbx_key_policy policy = {0};
    struct pbx_store *store;
    struct pbx_error *err = NULL;
    struct pbx_limits limits;
    const char *name = NULL;
    cleanup_free char *uri = NULL;
    char *token = NULL;
    char *a;
    int c;

    pbx_limits_default(&limits);
    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        if (common_option(c, &choice))
            continue;
        switch (c) {
        case 'h':
            help_create();
            return 0;
        case OPT_NAME:
            name = optarg;
            break;
        case OPT_RPM:
            policy.rpm = parse_rate(cmd, "--rpm", optarg);
            break;
        case OPT_RPD:
            policy.rpd = parse_rate(cmd, "--rpd", optarg);
            break;
        case OPT_CONCURRENCY:
            policy.concurrency = parse_rate(cmd, "--concurrency", optarg);
            if (policy.concurrency > PBX_STORE_CONCURRENCY_MAX)
                pbx_usage_error(cmd, "--concurrency: %s is more than %d; use `unlimited`", optarg,
                                PBX_STORE_CONCURRENCY_MAX);
            break;
        case OPT_TIMEOUT:
            a = xasprintf("wall=%s", optarg);
            parse_limit(cmd, "--timeout", a, &limits);
            free(a);
            policy.timeout_ms = limits.wall_ms;
            break;
        case OPT_MEMORY:
            if (optarg[0] == '\0' || strspn(optarg, "0123456789") != strlen(optarg))
                pbx_usage_error(cmd, "--memory: `%s` is not a whole number of MiB, e.g. 512",
                                optarg);
            a = xasprintf("memory=%sM", optarg);
            parse_limit(cmd, "--memory", a, &limits);
            free(a);
            policy.memory_bytes = limits.memory_bytes;
            break;
        case OPT_MODULES:
            policy.all_modules = strcmp(optarg, "all") == 0;
            policy.modules = policy.all_modules ? NULL : optarg;
            if (!policy.all_modules && optarg[strspn(optarg, " ,")] == '\0')
                pbx_usage_error(cmd, "--modules needs `all` or a list of modules");
            break;
        case OPT_NETWORK:
            policy.network = true;
            break;
        case OPT_ADMIN:
            policy.admin = true;
            break;
        case OPT_SESSIONS:
            policy.sessions =
                parse_count(cmd, "--sessions", optarg, PBX_CALLER_SESSIONS_MAX, "sessions");
            break;
        case OPT_SESSION_IDLE:
            policy.session_idle_ttl_s =
                parse_count(cmd, "--session-idle-ttl", optarg, PBX_CALLER_SPAN_MAX_S, "seconds");
            break;
        case OPT_SESSION_LIFE:
            policy.session_lifetime_s =
                parse_count(cmd, "--session-lifetime", optarg, PBX_CALLER_SPAN_MAX_S, "seconds");
            break;
        default:
            bad_option(cmd, c, argv);
        }
    }
    if (optind < argc)
        pbx_usage_error(cmd, "unexpected argument `%s`", argv[optind]);
    if (name == NULL)
        pbx_usage_error(cmd, "--name is required");

    store = open_store(cmd, &choice, true, &uri);
    if (pbx_store_key_create(store, name, &policy, &token, &err) < 0) {
        /* A bad name or module list is the caller's mistake; a taken name is the store's answer. */
        if (err->code == PBX_E_INVAL)
            pbx_usage_error(cmd, "%s", err->msg);
        pbx_die(EXIT_STORE, "%s", err->msg);
    }
    printf("%s\n", token);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        /* Nobody saw the token: a key nobody holds is only a liability. */
        int saved = errno;

        pbx_error_free(&err);
        if (pbx_store_key_revoke(store, name, &err) < 0)
            pbx_die(EXIT_STORE, "could not print the token (%s), nor revoke key `%s`: %s",
                    strerror(saved), name, err->msg);
        pbx_die(EXIT_STORE, "could not print the token (%s); key `%s` was revoked", strerror(saved),
                name);
    }
    fprintf(stderr,
            "pybox: created key `%s` in %s; its token is shown only this once, keep it now\n", name,
            uri);
    sodium_memzero(token, strlen(token));
    free(token);
    pbx_store_close(store);
    return 0;
}

static void format_rate(char *out, size_t size, int64_t v)
{
    if (v == 0)
        snprintf(out, size, "default");
    else if (v < 0)
        snprintf(out, size, "unlimited");
    else
        snprintf(out, size, "%" PRId64, v);
}

/* A count of the policy (sessions, seconds with `unit` "s"): "default" for 0. */
static void format_count(char *out, size_t size, uint32_t v, const char *unit)
{
    if (v == 0)
        snprintf(out, size, "default");
    else
        snprintf(out, size, "%" PRIu32 "%s", v, unit);
}

static void format_time(char *out, size_t size, int64_t t)
{
    time_t tt = (time_t)t;
    struct tm tm;

    if (gmtime_r(&tt, &tm) == NULL || strftime(out, size, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(out, size, "%" PRId64, t);
}

/* "default", "all", or "+a,b" (the default allowlist plus these); caller frees. */
static char *format_modules(const struct pbx_key_policy *p)
{
    char *s;

    if (p->all_modules)
        return xstrdup("all");
    if (p->modules == NULL || p->modules[0] == '\0')
        return xstrdup("default");
    s = xasprintf("+%s", p->modules);
    for (char *q = s; *q != '\0'; q++) {
        if (*q == ' ')
            *q = ',';
    }
    return s;
}

static void print_table(const struct pbx_key_info *keys, size_t n)
{
    int wname = (int)strlen("NAME");
    int wmod = (int)strlen("MODULES");

    for (size_t i = 0; i < n; i++) {
        cleanup_free char *mods = format_modules(&keys[i].policy);

        if ((int)strlen(keys[i].name) > wname)
            wname = (int)strlen(keys[i].name);
        if ((int)strlen(mods) > wmod)
            wmod = (int)strlen(mods);
    }
    printf("%-*s  %-10s  %-20s  %-7s  %-10s  %-10s  %-11s  %-8s  %-8s  %-8s  %-9s  %-9s  %-*s  "
           "%-7s  %s\n",
           wname, "NAME", "PREFIX", "CREATED (UTC)", "REVOKED", "RPM", "RPD", "CONCURRENCY",
           "TIMEOUT", "MEMORY", "SESSIONS", "IDLE-TTL", "LIFETIME", wmod, "MODULES", "NETWORK",
           "ADMIN");
    for (size_t i = 0; i < n; i++) {
        const struct pbx_key_info *k = &keys[i];
        const struct pbx_key_policy *p = &k->policy;
        cleanup_free char *mods = format_modules(p);
        char created[32];
        char rpm[24];
        char rpd[24];
        char conc[24];
        char timeout[24];
        char memory[32];
        char sessions[16];
        char idle[16];
        char life[16];

        format_time(created, sizeof(created), k->created);
        format_rate(rpm, sizeof(rpm), p->rpm);
        format_rate(rpd, sizeof(rpd), p->rpd);
        format_rate(conc, sizeof(conc), p->concurrency);
        if (p->timeout_ms == 0)
            snprintf(timeout, sizeof(timeout), "default");
        else
            snprintf(timeout, sizeof(timeout), "%gs", p->timeout_ms / 1000.0);
        if (p->memory_bytes == 0)
            snprintf(memory, sizeof(memory), "default");
        else if (p->memory_bytes % (1 << 20) == 0)
            snprintf(memory, sizeof(memory), "%" PRIu64 "M", p->memory_bytes >> 20);
        else
            snprintf(memory, sizeof(memory), "%" PRIu64 "B", p->memory_bytes);
        format_count(sessions, sizeof(sessions), p->sessions, "");
        format_count(idle, sizeof(idle), p->session_idle_ttl_s, "s");
        format_count(life, sizeof(life), p->session_lifetime_s, "s");
        printf("%-*s  %-10s  %-20s  %-7s  %-10s  %-10s  %-11s  %-8s  %-8s  %-8s  %-9s  %-9s  %-*s  "
               "%-7s  %s\n",
               wname, k->name, k->prefix, created, k->revoked ? "yes" : "no", rpm, rpd, conc,
               timeout, memory, sessions, idle, life, wmod, mods, p->network ? "yes" : "no",
               p->admin ? "yes" : "no");
    }
}

static void print_json(const struct pbx_key_info *keys, size_t n)
{
    json_t *arr = json_array();
    char *text;

    for (size_t i = 0; i < n; i++) {
        const struct pbx_key_info *k = &keys[i];
        const struct pbx_key_policy *p = &k->policy;
        json_t *obj = json_object();
        json_t *mods = json_array();
        char created[32];

        format_time(created, sizeof(created), k->created);
        if (p->modules != NULL) {
            cleanup_free char *copy = xstrdup(p->modules);
            char *save = NULL;

            for (char *t = strtok_r(copy, " ", &save); t != NULL; t = strtok_r(NULL, " ", &save))
                json_array_append_new(mods, json_string(t));
        }
        json_object_set_new(obj, "name", json_string(k->name));
        json_object_set_new(obj, "prefix", json_string(k->prefix));
        json_object_set_new(obj, "created", json_string(created));
        json_object_set_new(obj, "revoked", json_boolean(k->revoked));
        json_object_set_new(obj, "rpm", json_integer(p->rpm));
        json_object_set_new(obj, "rpd", json_integer(p->rpd));
        json_object_set_new(obj, "concurrency", json_integer(p->concurrency));
        json_object_set_new(obj, "timeout_ms", json_integer(p->timeout_ms));
        json_object_set_new(obj, "memory_bytes", json_integer((json_int_t)p->memory_bytes));
        json_object_set_new(obj, "all_modules", json_boolean(p->all_modules));
        json_object_set_new(obj, "modules", mods);
        json_object_set_new(obj, "network", json_boolean(p->network));
        json_object_set_new(obj, "admin", json_boolean(p->admin));
        json_object_set_new(obj, "sessions", json_integer(p->sessions));
        json_object_set_new(obj, "session_idle_ttl_s", json_integer(p->session_idle_ttl_s));
        json_object_set_new(obj, "session_lifetime_s", json_integer(p->session_lifetime_s));
        json_array_append_new(arr, obj);
    }
    text = json_dumps(arr, JSON_INDENT(2));
    if (text == NULL)
        pbx_die(EXIT_STORE, "out of memory");
    printf("%s\n", text);
    free(text);
    json_decref(arr);
}

static int cmd_list(int argc, char **argv)
{
    static const struct option opts[] = {
        {"json", no_argument, NULL, OPT_JSON},
        {"data", required_argument, NULL, OPT_DATA},
        {"store", required_argument, NULL, OPT_STORE},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    static const char cmd[] = "keys list";
    struct store_choice choice = {0};
    struct pbx_key_info *keys = NULL;
    struct pbx_error *err = NULL;
    struct pbx_store *store;
    cleanup_free char *uri = NULL;
    bool json = false;
    size_t n = 0;
    int c;

    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        if (common_option(c, &choice))
            continue;
        switch (c) {
        case 'h':
            help_list();
            return 0;
        case OPT_JSON:
            json = true;
            break;
        default:
            bad_option(cmd, c, argv);
        }
    }
    if (optind < argc)
        pbx_usage_error(cmd, "unexpected argument `%s`", argv[optind]);

    store = open_store(cmd, &choice, false, &uri);
    if (pbx_store_key_list(store, &keys, &n, &err) < 0)
        pbx_die(EXIT_STORE, "%s", err->msg);
    fprintf(stderr, "pybox: keys in %s\n", uri);
    if (json)
        print_json(keys, n);
    else
        print_table(keys, n);
    pbx_key_info_free_array(keys, n);
    pbx_store_close(store);
    if (fflush(stdout) != 0)
        pbx_die(EXIT_STORE, "write the list: %s", strerror(errno));
    return 0;
}

static int cmd_revoke(int argc, char **argv)
{
    static const struct option opts[] = {
        {"data", required_argument, NULL, OPT_DATA},
        {"store", required_argument, NULL, OPT_STORE},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    static const char cmd[] = "keys revoke";
    struct store_choice choice = {0};
    struct pbx_error *err = NULL;
    struct pbx_store *store;
    cleanup_free char *uri = NULL;
    const char *name;
    int c;

    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        if (common_option(c, &choice))
            continue;
        switch (c) {
        case 'h':
            help_revoke();
            return 0;
        default:
            bad_option(cmd, c, argv);
        }
    }
    if (optind >= argc)
        pbx_usage_error(cmd, "which key? give its NAME");
    name = argv[optind++];
    if (optind < argc)
        pbx_usage_error(cmd, "unexpected argument `%s`", argv[optind]);

    store = open_store(cmd, &choice, false, &uri);
    if (pbx_store_key_revoke(store, name, &err) < 0)
        pbx_die(EXIT_STORE, "%s", err->msg);
    pbx_store_close(store);
    fprintf(stderr, "pybox: revoked key `%s` in %s\n", name, uri);
    return 0;
}

struct keys_command {
    const char *name;                 /* the word after `pybox keys` */
    int (*fn)(int argc, char **argv); /* argv[0] is that word */
};

static const struct keys_command keys_commands[] = {
    {"create", cmd_create},
    {"list", cmd_list},
    {"revoke", cmd_revoke},
};

int pbx_cmd_keys(int argc, char **argv)
{
    if (argc < 2)
        pbx_usage_error("keys", "which command? create, list or revoke");
    if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 ||
        strcmp(argv[1], "help") == 0) {
        help_keys();
        return 0;
    }
    for (size_t i = 0; i < sizeof(keys_commands) / sizeof(keys_commands[0]); i++) {
        if (strcmp(argv[1], keys_commands[i].name) == 0) {
            opterr = 0;
            optind = 1;
            return keys_commands[i].fn(argc - 1, argv + 1);
        }
    }
    pbx_usage_error("keys", "unknown command `%s` (create, list or revoke)", argv[1]);
}
