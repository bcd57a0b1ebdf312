/* libpybox: codes and errors, configuration, the client and execution requests. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "client/client.h"
#include "engine/engine.h"
#include "common/banned.h"

#ifndef PYBOX_DEFAULT_BIN
#    define PYBOX_DEFAULT_BIN "/usr/local/bin/pybox"
#endif

/* ---- codes and errors ---- */

static const struct {
    const char *name;
    const char *text;
} codes[] = {
    [PYBOX_OK] = {"PYBOX_OK", "success"},
    [PYBOX_E_INVALID] = {"PYBOX_E_INVALID", "invalid argument or request"},
    [PYBOX_E_NOMEM] = {"PYBOX_E_NOMEM", "out of memory"},
    [PYBOX_E_CONNECT] = {"PYBOX_E_CONNECT", "the server could not be reached"},
    [PYBOX_E_TIMEOUT] = {"PYBOX_E_TIMEOUT", "the server did not answer in time"},
    [PYBOX_E_UNAUTHORIZED] = {"PYBOX_E_UNAUTHORIZED", "the API key is not valid"},
    [PYBOX_E_FORBIDDEN] = {"PYBOX_E_FORBIDDEN", "not allowed for this API key"},
    [PYBOX_E_RATE_LIMITED] = {"PYBOX_E_RATE_LIMITED", "rate limit or daily quota reached"},
    [PYBOX_E_BUSY] = {"PYBOX_E_BUSY", "the server is busy"},
    [PYBOX_E_TOO_LARGE] = {"PYBOX_E_TOO_LARGE", "the request is over a size limit"},
    [PYBOX_E_UNSUPPORTED] = {"PYBOX_E_UNSUPPORTED", "not supported here"},
    [PYBOX_E_SERVER] = {"PYBOX_E_SERVER", "the server failed"},
    [PYBOX_E_PROTOCOL] = {"PYBOX_E_PROTOCOL", "the server's answer is not a pybox result"},
    [PYBOX_E_ENGINE] = {"PYBOX_E_ENGINE", "the local pybox engine failed"},
    [PYBOX_E_TRANSPORT] = {"PYBOX_E_TRANSPORT", "the connection to the server failed"},
    [PYBOX_E_GONE] = {"PYBOX_E_GONE", "the session has ended"},
    [PYBOX_E_NOT_FOUND] = {"PYBOX_E_NOT_FOUND", "no such session or file"},
    [PYBOX_E_CANCELLED] = {"PYBOX_E_CANCELLED", "the run was cancelled"},
};

_Static_assert(sizeof(codes) / sizeof(codes[0]) == PYBOX_CODE_MAX + 1,
               "every code has a name and a text");

const char *pybox_strerror(int code)
{
    if (code < 0 || code > PYBOX_CODE_MAX)
        return "unknown error";
    return codes[code].text;
}

const char *pybox_code_name(int code)
{
    if (code < 0 || code > PYBOX_CODE_MAX)
        return "PYBOX_E_UNKNOWN";
    return codes[code].name;
}

/* What an error is when not even it could be allocated. */
static struct pybox_error nomem_error = {PYBOX_E_NOMEM, "out of memory", NULL, 0, 0};

enum pybox_code pbx__client_fail_type(struct pybox_error **err, enum pybox_code code,
                                      const char *type, int http_status, unsigned retry_after,
                                      const char *fmt, ...)
{
    struct pybox_error *e;
    va_list ap;
    int n = -1;

    if (err == NULL)
        return code;
    e = calloc(1, sizeof(*e));
    if (e != NULL) {
        va_start(ap, fmt);
        n = vasprintf(&e->message, fmt, ap);
        va_end(ap);
    }
    if (e != NULL && n < 0) {
        free(e); /* vasprintf() leaves e->message undefined when it fails */
        e = NULL;
    }
    if (e != NULL && type != NULL) {
        e->type = strdup(type);
        if (e->type == NULL) {
            pybox_error_free(e);
            e = NULL;
        }
    }
    if (e == NULL) {
        *err = &nomem_error;
        return code;
    }
    /* One line: a server's message must not spread over the caller's log. */
    for (char *p = e->message; *p; p++) {
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    }
    e->code = code;
    e->http_status = http_status;
    e->retry_after = retry_after;
    *err = e;
    return code;
}

enum pybox_code pybox_error_code(const struct pybox_error *err)
{
    return err ? err->code : PYBOX_E_INVALID;
}

const char *pybox_error_message(const struct pybox_error *err)
{
    return err ? err->message : "";
}

const char *pybox_error_type(const struct pybox_error *err)
{
    return err ? err->type : NULL;
}

int pybox_error_http_status(const struct pybox_error *err)
{
    return err ? err->http_status : 0;
}

unsigned pybox_error_retry_after(const struct pybox_error *err)
{
    return err ? err->retry_after : 0;
}

void pybox_error_free(struct pybox_error *err)
{
    if (err == NULL || err == &nomem_error)
        return;
    free(err->message);
    free(err->type);
    free(err);
}

void pybox_free(void *p)
{
    free(p);
}

const char *pybox_version(void)
{
    return PYBOX_VERSION_STRING;
}

/* ---- configuration ---- */

void pybox_config_init(struct pybox_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->size = sizeof(*cfg);
}

static const char *env_value(const char *name)
{
    const char *v = getenv(name);

    return v != NULL && v[0] != '\0' ? v : NULL;
}

/* 0 (none: the default applies) or a timeout the server and the engine accept. */
static bool valid_timeout(double t)
{
    return t == 0 || pbx_limits_check_timeout(t, NULL) == 0;
}

static bool valid_memory(unsigned mb)
{
    return mb == 0 || (mb >= 16 && mb <= 65536);
}

enum pybox_code pybox_config_from_env(struct pybox_config *cfg, struct pybox_error **err)
{
    const char *v;
    char *end = NULL;

    if ((v = env_value("PYBOX_SERVER")) != NULL)
        cfg->server = v;
    if ((v = env_value("PYBOX_API_KEY")) != NULL)
        cfg->api_key = v;
    if ((v = env_value("PYBOX_BIN")) != NULL)
        cfg->pybox_bin = v;
    if ((v = env_value("PYBOX_TIMEOUT")) != NULL) {
        double t;

        errno = 0;
        t = strtod(v, &end);
        if (errno != 0 || end == v || *end != '\0' || !valid_timeout(t) || t == 0)
            return pbx__client_fail(err, PYBOX_E_INVALID, 0, 0,
                                    "PYBOX_TIMEOUT `%s` is not a number of seconds from 0 to 3600",
                                    v);
        cfg->timeout_s = t;
    }
    if ((v = env_value("PYBOX_MEMORY_MB")) != NULL) {
        unsigned long m;

        errno = 0;
        m = strtoul(v, &end, 10);
        if (errno != 0 || end == v || *end != '\0' || !isdigit((unsigned char)v[0]) || m > 65536 ||
            !valid_memory((unsigned)m) || m == 0)
            return pbx__client_fail(err, PYBOX_E_INVALID, 0, 0,
                                    "PYBOX_MEMORY_MB `%s` is not a whole number from 16 to 65536",
                                    v);
        cfg->memory_mb = (unsigned)m;
    }
    if ((v = env_value("PYBOX_NETWORK")) != NULL) {
        if (strcmp(v, "1") == 0 || strcasecmp(v, "true") == 0 || strcasecmp(v, "yes") == 0)
            cfg->network = true;
        else if (strcmp(v, "0") == 0 || strcasecmp(v, "false") == 0 || strcasecmp(v, "no") == 0)
            cfg->network = false;
        else
            return pbx__client_fail(err, PYBOX_E_INVALID, 0, 0,
                                    "PYBOX_NETWORK `%s` is not 1/true/yes or 0/false/no", v);
    }
    return PYBOX_OK;
}

/* ---- the client ---- */

/*
 * How much of a caller's struct pybox_config to take: the whole fields that fit in its
 * `size`, never part of one (a size that ends inside a pointer must not copy half of it).
 */
static size_t config_bytes(size_t size)
{
#define END(f) (offsetof(struct pybox_config, f) + sizeof(((struct pybox_config *)0)->f))
    static const size_t ends[] = {
        END(size),      END(server),  END(api_key),   END(timeout_s),
        END(memory_mb), END(network), END(pybox_bin), END(preload),
    };
#undef END
    size_t n = 0;

    for (size_t i = 0; i < sizeof(ends) / sizeof(ends[0]); i++)
        if (ends[i] <= size)
            n = ends[i];
    return n;
}

/*
 * `url` without the user:password@ of its authority, for messages: a password
 * in the server URL must never reach a log.  NULL when out of memory.
 */
static char *without_credentials(const char *url)
{
    const char *host = strstr(url, "://");
    const char *end;
    const char *at = NULL;
    char *out;
    size_t head;
    size_t rest;

    if (host == NULL)
        return strdup(url);
    host += 3;
    end = host + strcspn(host, "/?#");
    for (const char *p = host; p < end; p++)
        if (*p == '@')
            at = p;
    if (at == NULL)
        return strdup(url);
    head = (size_t)(host - url);
    rest = strlen(at + 1);
    out = malloc(head + rest + 1);
    if (out == NULL)
        return NULL;
    memcpy(out, url, head);
    memcpy(out + head, at + 1, rest + 1);
    return out;
}

static bool has_control(const char *s)
{
    for (; *s; s++) {
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return true;
    }
    return false;
}

void pybox_client_free(struct pybox_client *client)
{
    if (client == NULL)
        return;
    pbx__client_local_free(client);
    pbx__client_reaper_release(client);
    pthread_cond_destroy(&client->cond);
    pthread_mutex_destroy(&client->lock);
    pthread_mutex_destroy(&client->start_lock);
    free(client->execute_url);
    free(client->shown_url);
    free(client->base_url);
    free(client->shown_base);
    free(client->auth_header);
    free(client->pybox_bin);
    free(client);
}

static enum pybox_code client_remote(struct pybox_client *c, const struct pybox_config *cfg,
                                     struct pybox_error **err)
{
    size_t len = strlen(cfg->server);

    if ((strncasecmp(cfg->server, "http://", 7) != 0 &&
         strncasecmp(cfg->server, "https://", 8) != 0) ||
        has_control(cfg->server) || strchr(cfg->server, ' ') != NULL)
        return pbx__client_fail(err, PYBOX_E_INVALID, 0, 0,
                                "server `%s` is not an http:// or https:// URL", cfg->server);
    while (len > 0 && cfg->server[len - 1] == '/')
        len--;
    if (asprintf(&c->execute_url, "%.*s/v1/execute", (int)len, cfg->server) < 0) {
        c->execute_url = NULL;
        return pbx__client_fail(err, PYBOX_E_NOMEM, 0, 0, "out of memory");
    }
    c->shown_url = without_credentials(c->execute_url);
    c->base_url = strndup(cfg->server, len);
    c->shown_base = c->base_url != NULL ? without_credentials(c->base_url) : NULL;
    if (c->shown_url == NULL || c->shown_base == NULL)
        return pbx__client_fail(err, PYBOX_E_NOMEM, 0, 0, "out of memory");
    if (cfg->api_key != NULL && cfg->api_key[0] != '\0') {
        if (has_control(cfg->api_key))
            return pbx__client_fail(err, PYBOX_E_INVALID, 0, 0,
                                    "the API key contains control characters");
        if (asprintf(&c->auth_header, "Authorization: Bearer %s", cfg->api_key) < 0) {
            c->auth_header = NULL;
            return pbx__client_fail(err, PYBOX_E_NOMEM, 0, 0, "out of memory");
        }
    }
    return PYBOX_OK;
}

enum pybox_code pybox_client_new(const struct pybox_config *user, struct pybox_client **out,
                                 struct pybox_error **err)
{
    struct pybox_config cfg;
    struct pybox_client *c;
    const char *bin;
    enum pybox_code rc;

    if (user == NULL || out == NULL || user->size < sizeof(size_t))
        return pbx__client_fail(err, PYBOX_E_INVALID, 0, 0,
                                "no configuration (fill it with pybox_config_init())");
    /* A caller built against an older, shorter struct keeps the newer fields' defaults. */
    pybox_config_init(&cfg);
    memcpy(&cfg, user, config_bytes(user->size));
    rc = pbx__client_check_limits(cfg.timeout_s, cfg.memory_mb, err);
    if (rc != PYBOX_OK)
        return rc;
    c = calloc(1, sizeof(*c));
    if (c == NULL)
        return pbx__client_fail(err, PYBOX_E_NOMEM, 0, 0, "out of memory");
    pthread_mutex_init(&c->start_lock, NULL);
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->cond, NULL);
    pbx__client_reaper_init(c);
    c->timeout_s = cfg.timeout_s;
    c->memory_mb = cfg.memory_mb;
    c->network = cfg.network;
    c->preload = cfg.preload;
    c->remote = cfg.server != NULL && cfg.server[0] != '\0';
    if (c->remote) {
        rc = client_remote(c, &cfg, err);
        if (rc != PYBOX_OK) {
            pybox_client_free(c);
            return rc;
        }
    } else {
        bin = cfg.pybox_bin != NULL && cfg.pybox_bin[0] != '\0'               ? cfg.pybox_bin
              : getenv("PYBOX_BIN") != NULL && getenv("PYBOX_BIN")[0] != '\0' ? getenv("PYBOX_BIN")
                                                                              : PYBOX_DEFAULT_BIN;
        c->pybox_bin = strdup(bin);
        if (c->pybox_bin == NULL) {
            pybox_client_free(c);
            return pbx__client_fail(err, PYBOX_E_NOMEM, 0, 0, "out of memory");
        }
    }
    *out = c;
    return PYBOX_OK;
}

enum pybox_code pybox_client_new_from_env(struct pybox_client **out, struct pybox_error **err)
{
    struct pybox_config cfg;
    enum pybox_code rc;

    pybox_config_init(&cfg);
    rc = pybox_config_from_env(&cfg, err);
    if (rc != PYBOX_OK)
        return rc;
    return pybox_client_new(&cfg, out, err);
}

bool pybox_client_is_remote(const struct pybox_client *client)
{
    return client != NULL && client->remote;
}

enum pybox_code pybox_client_info(struct pybox_client *client, char **json,
                                  struct pybox_error **err)
{
    if (json == NULL)
        return pbx__client_fail(err, PYBOX_E_INVALID, 0, 0, "nowhere to put the answer");
    *json = NULL;
    if (client == NULL)
        return pbx__client_fail(err, PYBOX_E_INVALID, 0, 0, "no client");
    if (!client->remote)
        return pbx__client_fail(err, PYBOX_E_UNSUPPORTED, 0, 0,
                                "a local client has no server to ask: its limits are its config's");
    return pbx__client_info_remote(client, json, err);
}

double pbx__client_timeout(const struct pybox_client *client, const struct pybox_exec *exec)
{
    return exec->timeout_s > 0 ? exec->timeout_s : client->timeout_s;
}

unsigned pbx__client_memory(const struct pybox_client *client, const struct pybox_exec *exec)
{
    return exec->memory_mb > 0 ? exec->memory_mb : client->memory_mb;
}

enum pybox_code pybox_run(struct pybox_client *client, const struct pybox_exec *exec,
                          struct pybox_result **out, struct pybox_error **err)
{
    if (client == NULL || exec == NULL || out == NULL)
        return pbx__client_fail(err, PYBOX_E_INVALID, 0, 0, "no client, request or result");
    if (exec->code == NULL)
        return pbx__client_fail(err, PYBOX_E_INVALID, 0, 0,
                                "no code (set it with pybox_exec_set_code())");
    if (pbx__client_cancelled(exec))
        return pbx__client_fail(err, PYBOX_E_CANCELLED, 0, 0,
                                "cancelled before it started: the code did not run");
    return client->remote ? pbx__client_run_remote(client, exec, out, err)
                          : pbx__client_run_local(client, exec, out, err);
}

/* ---- cancels ---- */

enum pybox_code pybox_cancel_new(struct pybox_cancel **out, struct pybox_error **err)
{
    struct pybox_cancel *c;

    if (out == NULL)
        return pbx__client_fail(err, PYBOX_E_INVALID, 0, 0, "no cancel to set");
    c = malloc(sizeof(*c));
    if (c == NULL)
        return pbx__client_fail(err, PYBOX_E_NOMEM, 0, 0, "out of memory");
    c->fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (c->fd < 0) {
        int e = errno;

        free(c);
        return pbx__client_fail(err, PYBOX_E_NOMEM, 0, 0, "a cancel's eventfd: %s", strerror(e));
    }
    atomic_init(&c->fired, false);
    *out = c;
    return PYBOX_OK;
}

void pybox_cancel_fire(struct pybox_cancel *cancel)
{
    uint64_t one = 1;
    int saved;

    if (cancel == NULL || atomic_exchange(&cancel->fired, true))
        return;
    saved = errno; /* a signal handler's caller keeps its errno */
    /* Once only, so the counter never nears its maximum: the write cannot block or fail. */
    (void)!write(cancel->fd, &one, sizeof(one));
    errno = saved;
}

bool pybox_cancel_fired(const struct pybox_cancel *cancel)
{
    return cancel != NULL && atomic_load(&cancel->fired);
}

void pybox_cancel_free(struct pybox_cancel *cancel)
{
    if (cancel == NULL)
        return;
    close(cancel->fd);
    free(cancel);
}

int pbx__client_cancel_fd(const struct pybox_exec *exec)
{
    return exec->cancel != NULL ? exec->cancel->fd : -1;
}

bool pbx__client_cancelled(const struct pybox_exec *exec)
{
    return pybox_cancel_fired(exec->cancel);
}

/* ---- execution requests ---- */

struct pybox_exec *pybox_exec_new(void)
{
    return calloc(1, sizeof(struct pybox_exec));
}

void pybox_exec_free(struct pybox_exec *exec)
{
    if (exec == NULL)
        return;
    free(exec->code);
    free(exec->stdin_data);
    for (size_t i = 0; i < exec->nfiles; i++) {
        free(exec->files[i].name);
        free(exec->files[i].data);
    }
    free(exec->files);
    for (size_t i = 0; i < exec->nreturn; i++)
        free(exec->returns[i]);
    free(exec->returns);
    free(exec);
}

/* A NUL-terminated copy of [p, p+len); NULL when out of memory. */
static char *copy_bytes(const void *p, size_t len)
{
    char *c = len < SIZE_MAX ? malloc(len + 1) : NULL;

    if (c == NULL)
        return NULL;
    if (len > 0)
        memcpy(c, p, len);
    c[len] = '\0';
    return c;
}

enum pybox_code pybox_exec_set_code(struct pybox_exec *exec, const char *code, size_t len)
{
    char *copy;

    if (exec == NULL || code == NULL)
        return PYBOX_E_INVALID;
    if (len == (size_t)-1)
        len = strlen(code);
    copy = copy_bytes(code, len);
    if (copy == NULL)
        return PYBOX_E_NOMEM;
    free(exec->code);
    exec->code = copy;
    exec->code_len = len;
    return PYBOX_OK;
}

enum pybox_code pybox_exec_set_stdin(struct pybox_exec *exec, const void *data, size_t len)
{
    char *copy;

    if (exec == NULL || (data == NULL && len > 0))
        return PYBOX_E_INVALID;
    if (len == (size_t)-1)
        len = strlen(data);
    copy = copy_bytes(data ? data : "", len);
    if (copy == NULL)
        return PYBOX_E_NOMEM;
    free(exec->stdin_data);
    exec->stdin_data = copy;
    exec->stdin_len = len;
    return PYBOX_OK;
}

/* Whether `s` is UTF-8 as jansson checks it: no overlong forms, surrogates or bytes past U+10FFFF.
 */
static bool valid_utf8(const char *str)
{
    const unsigned char *s = (const unsigned char *)str;

    while (*s != '\0') {
        unsigned c = *s++;
        unsigned cp;
        unsigned min;
        int more;

        if (c < 0x80)
            continue;
        if (c >= 0xc2 && c <= 0xdf) {
            more = 1;
            cp = c & 0x1f;
            min = 0x80;
        } else if (c >= 0xe0 && c <= 0xef) {
            more = 2;
            cp = c & 0x0f;
            min = 0x800;
        } else if (c >= 0xf0 && c <= 0xf4) {
            more = 3;
            cp = c & 0x07;
            min = 0x10000;
        } else {
            return false;
        }
        for (; more > 0; more--) {
            if ((*s & 0xc0) != 0x80) /* also stops at the NUL */
                return false;
            cp = (cp << 6) | (*s++ & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
    }
    return true;
}

/*
 * The flat names the engine accepts (pbx_engine_check_name), no error kept,
 * and UTF-8: a result object carries them as JSON strings, and remote mode
 * could not send them otherwise.
 */
bool pbx__client_valid_name(const char *name)
{
    return name != NULL && pbx_engine_check_name(name, NULL) && valid_utf8(name);
}

enum pybox_code pybox_exec_add_file(struct pybox_exec *exec, const char *name, const void *data,
                                    size_t size)
{
    struct pbx_client_file *files;
    struct pbx_client_file f;

    if (exec == NULL || !pbx__client_valid_name(name) || (data == NULL && size > 0))
        return PYBOX_E_INVALID;
    for (size_t i = 0; i < exec->nfiles; i++) {
        if (strcmp(exec->files[i].name, name) == 0)
            return PYBOX_E_INVALID;
    }
    files = realloc(exec->files, (exec->nfiles + 1) * sizeof(*files));
    if (files == NULL)
        return PYBOX_E_NOMEM;
    exec->files = files;
    f.name = strdup(name);
    f.data = copy_bytes(data ? data : "", size);
    f.size = size;
    if (f.name == NULL || f.data == NULL) {
        free(f.name);
        free(f.data);
        return PYBOX_E_NOMEM;
    }
    exec->files[exec->nfiles++] = f;
    return PYBOX_OK;
}

enum pybox_code pybox_exec_add_return(struct pybox_exec *exec, const char *name)
{
    char **returns;
    char *copy;

    if (exec == NULL || !pbx__client_valid_name(name))
        return PYBOX_E_INVALID;
    returns = realloc(exec->returns, (exec->nreturn + 1) * sizeof(*returns));
    if (returns == NULL)
        return PYBOX_E_NOMEM;
    exec->returns = returns;
    copy = strdup(name);
    if (copy == NULL)
        return PYBOX_E_NOMEM;
    exec->returns[exec->nreturn++] = copy;
    return PYBOX_OK;
}

enum pybox_code pybox_exec_set_main(struct pybox_exec *exec, bool main_mode)
{
    if (exec == NULL)
        return PYBOX_E_INVALID;
    exec->main_mode = main_mode;
    return PYBOX_OK;
}

enum pybox_code pybox_exec_set_timeout(struct pybox_exec *exec, double seconds)
{
    if (exec == NULL || !valid_timeout(seconds))
        return PYBOX_E_INVALID;
    exec->timeout_s = seconds;
    return PYBOX_OK;
}

enum pybox_code pybox_exec_set_memory(struct pybox_exec *exec, unsigned mb)
{
    if (exec == NULL || !valid_memory(mb))
        return PYBOX_E_INVALID;
    exec->memory_mb = mb;
    return PYBOX_OK;
}

enum pybox_code pybox_exec_set_event_callback(struct pybox_exec *exec, pybox_event_fn fn, void *arg)
{
    if (exec == NULL)
        return PYBOX_E_INVALID;
    exec->on_event = fn;
    exec->on_event_arg = fn != NULL ? arg : NULL;
    return PYBOX_OK;
}

enum pybox_code pybox_exec_set_cancel(struct pybox_exec *exec, struct pybox_cancel *cancel)
{
    if (exec == NULL)
        return PYBOX_E_INVALID;
    exec->cancel = cancel;
    return PYBOX_OK;
}

enum pybox_code pbx__client_check_limits(double timeout_s, unsigned memory_mb,
                                         struct pybox_error **err)
{
    if (!valid_timeout(timeout_s))
        return pbx__client_fail(err, PYBOX_E_INVALID, 0, 0,
                                "timeout %g s is not between 0 and 3600 seconds", timeout_s);
    if (!valid_memory(memory_mb))
        return pbx__client_fail(err, PYBOX_E_INVALID, 0, 0,
                                "memory %u MiB is not between 16 and 65536", memory_mb);
    return PYBOX_OK;
}
