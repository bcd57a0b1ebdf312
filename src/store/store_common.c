/*
 * The parts of store.h's contract every backend shares: the checks of a
 * key's name and policy, of a quota's client and day and of an audit record,
 * and the making and hashing of tokens.
 *
 * Tokens are 32 bytes from libsodium's randombytes_buf() (a CSPRNG), and only
 * their BLAKE2b-256 hash is stored, so a copy of the store does not let
 * anyone authenticate.  A fast hash is enough: the input has 256 bits of
 * entropy, so there is nothing to brute-force, unlike a password.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <sodium.h>

#include "common/cleanup.h"
#include "common/xalloc.h"
#include "store/store_impl.h"
#include "common/banned.h"

/* A key name: 1 to 64 of [A-Za-z0-9._@-], so it prints safely in tables and logs. */
static bool valid_name(const char *name)
{
    size_t len = name != NULL ? strlen(name) : 0;

    return len >= 1 && len <= PBX_STORE_NAME_MAX &&
           strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._@-") ==
               len;
}

/*
 * Normalise a module list given space- or comma-separated into the stored
 * form, one space between names; NULL for an empty list.  Caller frees *out.
 */
static int normalise_modules(const char *in, char **out, struct pbx_error **err)
{
    static const char seps[] = " ,\t\n";
    cleanup_free char *norm = NULL;
    size_t len = 0;
    const char *p;

    *out = NULL;
    if (in == NULL)
        return 0;
    if (strlen(in) > PBX_STORE_MODULES_MAX)
        return pbx_error_set(err, PBX_E_INVAL, "module list is longer than %d characters",
                             PBX_STORE_MODULES_MAX);
    norm = xmalloc(strlen(in) + 1);
    p = in + strspn(in, seps);
    while (*p != '\0') {
        size_t n = strcspn(p, seps);

        if (!pbx_caller_module_name(p, n))
            return pbx_error_set(err, PBX_E_INVAL,
                                 "`%.*s` is not a module name (dotted Python identifiers only)",
                                 (int)n, p);
        if (len > 0)
            norm[len++] = ' ';
        memcpy(norm + len, p, n);
        len += n;
        p += n;
        p += strspn(p, seps);
    }
    norm[len] = '\0';
    if (len > 0)
        *out = steal_pointer(&norm);
    return 0;
}

static int check_policy(const struct pbx_key_policy *p, struct pbx_error **err)
{
    if (p->rpm < -1)
        return pbx_error_set(err, PBX_E_INVAL, "rpm %" PRId64 " is not >= -1", p->rpm);
    if (p->rpd < -1)
        return pbx_error_set(err, PBX_E_INVAL, "rpd %" PRId64 " is not >= -1", p->rpd);
    if (p->concurrency < -1 || p->concurrency > PBX_STORE_CONCURRENCY_MAX)
        return pbx_error_set(err, PBX_E_INVAL, "concurrency %" PRId64 " is not -1 to %d",
                             p->concurrency, PBX_STORE_CONCURRENCY_MAX);
    if (p->memory_bytes > INT64_MAX)
        return pbx_error_set(err, PBX_E_INVAL, "memory %" PRIu64 " is too large", p->memory_bytes);
    if (p->sessions > PBX_CALLER_SESSIONS_MAX)
        return pbx_error_set(err, PBX_E_INVAL, "sessions %" PRIu32 " is over %d", p->sessions,
                             PBX_CALLER_SESSIONS_MAX);
    if (p->session_idle_ttl_s > PBX_CALLER_SPAN_MAX_S)
        return pbx_error_set(err, PBX_E_INVAL, "session idle time %" PRIu32 " s is over %d s",
                             p->session_idle_ttl_s, PBX_CALLER_SPAN_MAX_S);
    if (p->session_lifetime_s > PBX_CALLER_SPAN_MAX_S)
        return pbx_error_set(err, PBX_E_INVAL, "session lifetime %" PRIu32 " s is over %d s",
                             p->session_lifetime_s, PBX_CALLER_SPAN_MAX_S);
    return 0;
}

static void hash_token(const char *token, size_t len, unsigned char hash[PBX_STORE_HASH_BYTES])
{
    crypto_generichash(hash, PBX_STORE_HASH_BYTES, (const unsigned char *)token, len, NULL, 0);
}

static char *new_token(void)
{
    unsigned char raw[PBX_STORE_TOKEN_BYTES];
    char *token = xmalloc(PBX_STORE_TOKEN_LEN + 1);

    randombytes_buf(raw, sizeof(raw));
    memcpy(token, "pbx_", 4);
    sodium_bin2base64(token + 4, PBX_STORE_TOKEN_LEN + 1 - 4, raw, sizeof(raw),
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    sodium_memzero(raw, sizeof(raw));
    PBX_ASSERT(strlen(token) == PBX_STORE_TOKEN_LEN);
    return token;
}

const struct pbx_key_policy *pbx__store_policy(const struct pbx_key_policy *policy)
{
    static const struct pbx_key_policy defaults = {0};

    return policy != NULL ? policy : &defaults;
}

int pbx__store_new_key(const char *name, const struct pbx_key_policy *policy,
                       struct pbx_store_new_key *out, struct pbx_error **err)
{
    const struct pbx_key_policy *p = pbx__store_policy(policy);
    int r;

    *out = (struct pbx_store_new_key){0};
    if (!valid_name(name))
        return pbx_error_set(err, PBX_E_INVAL,
                             "key name `%s` is not 1 to %d of the characters A-Z a-z 0-9 . _ @ -",
                             name ? name : "", PBX_STORE_NAME_MAX);
    r = check_policy(p, err);
    if (r == 0)
        r = normalise_modules(p->modules, &out->modules, err);
    if (r < 0)
        return err != NULL ? pbx_error_prefix(err, "key `%s`", name) : r;
    out->token = new_token();
    hash_token(out->token, PBX_STORE_TOKEN_LEN, out->hash);
    memcpy(out->prefix, out->token, PBX_STORE_PREFIX_LEN);
    out->prefix[PBX_STORE_PREFIX_LEN] = '\0';
    return 0;
}

void pbx__store_new_key_release(struct pbx_store_new_key *key)
{
    free(key->modules);
    free(key->token);
    *key = (struct pbx_store_new_key){0};
}

bool pbx__store_token_hash(const char *token, unsigned char hash[PBX_STORE_HASH_BYTES])
{
    size_t len = token != NULL ? strnlen(token, PBX_STORE_TOKEN_LEN + 1) : 0;

    /* Only the one token length can match: skip hashing anything else. */
    if (len != PBX_STORE_TOKEN_LEN)
        return false;
    hash_token(token, len, hash);
    return true;
}

/* "YYYY-MM-DD", digits where digits belong. */
static bool valid_day(const char *day)
{
    static const char pattern[] = "dddd-dd-dd";

    if (day == NULL || strlen(day) != sizeof(pattern) - 1)
        return false;
    for (size_t i = 0; i < sizeof(pattern) - 1; i++) {
        if (pattern[i] == 'd' ? day[i] < '0' || day[i] > '9' : day[i] != pattern[i])
            return false;
    }
    return true;
}

int pbx__store_check_client_day(const char *client, const char *day, struct pbx_error **err)
{
    if (client == NULL || client[0] == '\0' || strlen(client) > PBX_STORE_CLIENT_MAX)
        return pbx_error_set(err, PBX_E_INVAL, "quota: the client must be 1 to %d characters",
                             PBX_STORE_CLIENT_MAX);
    if (!valid_day(day))
        return pbx_error_set(err, PBX_E_INVAL, "quota: day `%s` is not YYYY-MM-DD", day ? day : "");
    return 0;
}

int pbx__store_check_once(const char *once, struct pbx_error **err)
{
    size_t n;

    if (once == NULL)
        return 0;
    n = strlen(once);
    if (n == 0 || n > PBX_STORE_ONCE_MAX)
        return pbx_error_set(err, PBX_E_INVAL, "quota: an idempotency key is 1 to %d characters",
                             PBX_STORE_ONCE_MAX);
    for (size_t i = 0; i < n; i++)
        if (once[i] < 0x21 || once[i] > 0x7e)
            return pbx_error_set(err, PBX_E_INVAL,
                                 "quota: an idempotency key is visible ASCII characters only");
    return 0;
}

int pbx__store_check_ticket(const char *client, const char *ticket, struct pbx_error **err)
{
    size_t n = ticket != NULL ? strlen(ticket) : 0;

    if (client == NULL || client[0] == '\0' || strlen(client) > PBX_STORE_CLIENT_MAX)
        return pbx_error_set(err, PBX_E_INVAL, "window: the client must be 1 to %d characters",
                             PBX_STORE_CLIENT_MAX);
    if (n == 0 || n > 64 ||
        strspn(ticket, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-") != n)
        return pbx_error_set(err, PBX_E_INVAL, "window: a ticket is 1 to 64 of [A-Za-z0-9_-]");
    return 0;
}

int pbx__store_check_audit(const struct pbx_audit *rec, struct pbx_error **err)
{
    if (rec == NULL || rec->client == NULL || rec->route == NULL || rec->code_sha256 == NULL ||
        rec->status == NULL)
        return pbx_error_set(err, PBX_E_INVAL,
                             "audit: client, route, code_sha256 and status are required");
    return 0;
}

uint32_t pbx__store_count(int64_t v, int64_t most)
{
    return v >= 0 && v <= most ? (uint32_t)v : 0;
}

const char *const pbx__store_audit_names[PBX_STORE_AUDIT_TEXTS] = {
    [PBX_STORE_AUDIT_CLIENT] = "client", [PBX_STORE_AUDIT_KEY_NAME] = "key_name",
    [PBX_STORE_AUDIT_ROUTE] = "route",   [PBX_STORE_AUDIT_CODE_SHA256] = "code_sha256",
    [PBX_STORE_AUDIT_STATUS] = "status",
};

void pbx__store_audit_append(char **out, size_t *len, const struct pbx_store_audit_row *row)
{
    json_t *obj = json_object();
    char *line;
    size_t n;

    json_object_set_new(obj, "time_ms", json_integer(row->time_ms));
    for (int i = 0; i < PBX_STORE_AUDIT_TEXTS; i++) {
        /* Text that is not UTF-8 makes json_stringn() fail: it shows as null. */
        json_t *v = row->text[i] != NULL ? json_stringn(row->text[i], row->len[i]) : NULL;

        json_object_set_new(obj, pbx__store_audit_names[i], v != NULL ? v : json_null());
    }
    json_object_set_new(obj, "duration_ms", json_real(row->duration_ms));
    line = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(obj);
    if (line == NULL)
        abort(); /* out of memory: the server aborts, as xmalloc does */
    n = strlen(line);
    *out = xrealloc(*out, *len + n + 2);
    memcpy(*out + *len, line, n);
    (*out)[*len + n] = '\n';
    (*out)[*len + n + 1] = '\0';
    *len += n + 1;
    free(line);
}

/* 1 to `max` of [A-Za-z0-9_-]: safe in a Redis key's name, a SQL value and a log line. */
static bool valid_word(const char *s, size_t max)
{
    size_t n = s != NULL ? strlen(s) : 0;

    return n >= 1 && n <= max &&
           strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-") == n;
}

int pbx__store_check_node(const char *node, const char *token, struct pbx_error **err)
{
    if (!valid_word(node, PBX_STORE_NODE_MAX))
        return pbx_error_set(err, PBX_E_INVAL, "node claim: a node id is 1 to %d of [A-Za-z0-9_-]",
                             PBX_STORE_NODE_MAX);
    if (!valid_word(token, PBX_STORE_NODE_TOKEN_MAX))
        return pbx_error_set(err, PBX_E_INVAL, "node claim: a token is 1 to %d of [A-Za-z0-9_-]",
                             PBX_STORE_NODE_TOKEN_MAX);
    return 0;
}
