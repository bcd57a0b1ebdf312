/*
 * Unit tests for src/policy/: the shape of the default import allowlist
 * (policy.c), and callers (caller.c): who a token makes a request's caller,
 * with the key store replaced by a table, and what each kind of caller may
 * ask.  The allowlist's check runs in the sandboxed interpreter
 * (src/engine/bootstrap.py) and is tested through the binary, with the list
 * the README documents, by tests/security/test_policy.py.
 */
#include <check.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/xalloc.h"
#include "policy/caller.h"
#include "policy/policy.h"
#include "common/banned.h"

/* A Python identifier of ASCII letters, digits and '_' (what a top-level module is named). */
static bool is_identifier(const char *s)
{
    if (s[0] == '\0' || (s[0] >= '0' && s[0] <= '9'))
        return false;
    return strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") ==
           strlen(s);
}

START_TEST(test_list_shape)
{
    size_t n = 0;

    /*
     * bootstrap.py compares the top-level part of an import with each entry: an entry with a
     * dot, a space or nothing in it would never match anything.
     */
    for (size_t i = 0; pbx_policy_default_modules[i] != NULL; i++) {
        const char *m = pbx_policy_default_modules[i];

        ck_assert_msg(is_identifier(m), "`%s` is not a top-level module name", m);
        for (size_t j = 0; j < i; j++)
            ck_assert_msg(strcmp(pbx_policy_default_modules[j], m) != 0, "`%s` twice", m);
        n++;
    }
    ck_assert_uint_gt(n, 0);
}
END_TEST

/* ---- callers ---- */

#define MIB (UINT64_C(1) << 20)

static struct pbx_limits limits;
static struct pbx_caller_config cfg;

static void setup(void)
{
    pbx_limits_default(&limits);
    cfg = (struct pbx_caller_config){
        .anon_rpm = 5,
        .anon_rpd = 30,
        .anon_code_chars = 2000,
        .limits = &limits,
        .admin_key = "the-admin-key",
        .anon_sessions = {.open = 4,
                          .idle_ttl_s = 600,
                          .max_idle_ttl_s = 3600,
                          .lifetime_s = 3600,
                          .max_lifetime_s = 86400},
        .key_sessions = 16,
    };
}

/* The store, as a table: "k-plain" a plain key, "k-rich" one with every field, "k-admin" admin. */
static int lookups;

static int lookup(void *arg, const char *token, char **name, struct pbx_key_policy *policy,
                  struct pbx_error **err)
{
    (void)arg;
    lookups++;
    memset(policy, 0, sizeof(*policy));
    if (strcmp(token, "k-broken") == 0)
        return pbx_error_set(err, PBX_E_ENGINE, "the key store failed");
    if (strcmp(token, "k-plain") == 0) {
        *name = xstrdup("plain");
    } else if (strcmp(token, "k-rich") == 0) {
        *name = xstrdup("rich");
        *policy = (struct pbx_key_policy){.rpm = 100,
                                          .rpd = -1,
                                          .timeout_ms = 60000,
                                          .memory_bytes = 1024 * MIB,
                                          .all_modules = true,
                                          .modules = xstrdup("requests lxml"),
                                          .network = true};
    } else if (strcmp(token, "k-tight") == 0) {
        *name = xstrdup("tight");
        *policy = (struct pbx_key_policy){.timeout_ms = 2000, .memory_bytes = 64 * MIB};
    } else if (strcmp(token, "k-admin") == 0) {
        *name = xstrdup("boss");
        *policy = (struct pbx_key_policy){.rpm = 3, .rpd = 3, .admin = true};
    } else if (strcmp(token, "k-sessions") == 0) {
        *name = xstrdup("agent");
        *policy = (struct pbx_key_policy){
            .sessions = 1, .session_idle_ttl_s = 7200, .session_lifetime_s = 5};
    } else if (strcmp(token, "k-admin-sessions") == 0) {
        *name = xstrdup("boss2");
        *policy = (struct pbx_key_policy){.admin = true, .sessions = 2, .session_idle_ttl_s = 30};
    } else {
        return 0;
    }
    return 1;
}

static const struct pbx_caller_keys keys = {.lookup = lookup, .arg = NULL};

static void resolve_ok(const char *token, struct pbx_caller *who)
{
    struct pbx_error *err = NULL;
    const char *etype = NULL;

    ck_assert_int_eq(pbx_caller_resolve(&cfg, &keys, token, who, &etype, &err), 0);
    ck_assert_ptr_null(err);
    ck_assert_ptr_null(etype);
}

START_TEST(test_resolve_anonymous)
{
    struct pbx_caller who;

    lookups = 0;
    resolve_ok(NULL, &who);
    ck_assert(!who.admin && !who.keyed && !who.all_modules && !who.network);
    ck_assert_ptr_null(who.key_name);
    ck_assert_int_eq(who.rpm, 5);
    ck_assert_int_eq(who.rpd, 30);
    ck_assert_uint_eq(who.code_chars, 2000);
    ck_assert_uint_eq(who.max_timeout_ms, limits.wall_ms);
    ck_assert_uint_eq(who.max_memory, limits.memory_bytes);
    ck_assert_int_eq(lookups, 0);
    pbx_caller_release(&who);
}
END_TEST

START_TEST(test_resolve_admin_key)
{
    static const char *const not_admin[] = {"the-admin-ke", "the-admin-key ", "The-admin-key",
                                            "the-admin-kez", ""};
    struct pbx_caller who;
    struct pbx_error *err = NULL;
    const char *etype = NULL;

    lookups = 0;
    resolve_ok("the-admin-key", &who);
    ck_assert(who.admin && !who.keyed && who.all_modules && who.network);
    ck_assert_int_eq(who.rpm, -1);
    ck_assert_int_eq(who.rpd, -1);
    ck_assert_uint_eq(who.code_chars, limits.code_bytes);
    ck_assert_int_eq(lookups, 0); /* the admin key never reaches the store */
    pbx_caller_release(&who);

    /* Anything else is a key to look up, and unknown. */
    for (size_t i = 0; i < sizeof(not_admin) / sizeof(not_admin[0]); i++) {
        ck_assert_int_lt(pbx_caller_resolve(&cfg, &keys, not_admin[i], &who, &etype, &err), 0);
        ck_assert_str_eq(etype, "Unauthorized");
        ck_assert_str_eq(err->msg, "the API key is not valid or was revoked");
        pbx_error_free(&err);
        pbx_caller_release(&who);
    }
    /* Without an admin key configured, not even an empty token is the admin. */
    cfg.admin_key = "";
    ck_assert_int_lt(pbx_caller_resolve(&cfg, &keys, "", &who, &etype, &err), 0);
    ck_assert_str_eq(etype, "Unauthorized");
    pbx_error_free(&err);
    cfg.admin_key = NULL;
    ck_assert_int_lt(pbx_caller_resolve(&cfg, &keys, "the-admin-key", &who, &etype, &err), 0);
    pbx_error_free(&err);
    pbx_caller_release(&who);
}
END_TEST

START_TEST(test_resolve_keys)
{
    struct pbx_caller who;
    struct pbx_error *err = NULL;
    const char *etype = NULL;

    /* A key with a default policy: anonymous rates, the code limit in characters. */
    resolve_ok("k-plain", &who);
    ck_assert(who.keyed && !who.admin && !who.all_modules && !who.network);
    ck_assert_str_eq(who.key_name, "plain");
    ck_assert_int_eq(who.rpm, 5);
    ck_assert_int_eq(who.rpd, 30);
    ck_assert_uint_eq(who.code_chars, limits.code_bytes);
    ck_assert_uint_eq(who.max_timeout_ms, limits.wall_ms);
    ck_assert_uint_eq(who.max_memory, limits.memory_bytes);
    pbx_caller_release(&who);
    ck_assert_ptr_null(who.key_name);

    /* Every field of a key's policy overrides the anonymous one. */
    resolve_ok("k-rich", &who);
    ck_assert(who.keyed && !who.admin && who.all_modules && who.network);
    ck_assert_int_eq(who.rpm, 100);
    ck_assert_int_eq(who.rpd, -1);
    ck_assert_uint_eq(who.max_timeout_ms, 60000);
    ck_assert_uint_eq(who.max_memory, 1024 * MIB);
    ck_assert_str_eq(who.key.modules, "requests lxml");
    pbx_caller_release(&who);

    /* An admin key: its own rates do not apply. */
    resolve_ok("k-admin", &who);
    ck_assert(who.keyed && who.admin && who.all_modules && who.network);
    ck_assert_str_eq(who.key_name, "boss");
    ck_assert_int_eq(who.rpm, -1);
    ck_assert_int_eq(who.rpd, -1);
    pbx_caller_release(&who);

    /* A store that fails: its message; the key cannot be checked, so it is refused, to retry. */
    ck_assert_int_lt(pbx_caller_resolve(&cfg, &keys, "k-broken", &who, &etype, &err), 0);
    ck_assert_str_eq(etype, "StoreUnavailable");
    ck_assert_str_eq(err->msg, "the key store failed");
    pbx_error_free(&err);
    pbx_caller_release(&who);
}
END_TEST

/* What pbx_caller_parse_modules() makes of `list`: the names, "all", or the refusal. */
static void parse_modules(const char *list, const char *want)
{
    struct pbx_error *err = NULL;
    char *out = (char *)"unset";
    bool all = true;
    int rc = pbx_caller_parse_modules(list, &all, &out, &err);

    if (rc < 0) {
        ck_assert_ptr_nonnull(err);
        ck_assert_msg(strstr(err->msg, want) != NULL, "`%s`: %s", list, err->msg);
        pbx_error_free(&err);
        return;
    }
    ck_assert_ptr_null(err);
    if (strcmp(want, "all") == 0) {
        ck_assert(all);
        ck_assert_ptr_null(out);
        return;
    }
    ck_assert(!all);
    if (*want == '\0')
        ck_assert_ptr_null(out);
    else
        ck_assert_str_eq(out, want);
    free(out);
}

/* Sessions: how many at once, and the spans, for each kind of caller. */
START_TEST(test_resolve_sessions)
{
    struct pbx_caller who;

    /* Anonymous: the server's, counted per client address. */
    resolve_ok(NULL, &who);
    ck_assert_uint_eq(who.sessions.open, 4);
    ck_assert_uint_eq(who.sessions.idle_ttl_s, 600);
    ck_assert_uint_eq(who.sessions.max_idle_ttl_s, 3600);
    ck_assert_uint_eq(who.sessions.lifetime_s, 3600);
    ck_assert_uint_eq(who.sessions.max_lifetime_s, 86400);
    pbx_caller_release(&who);
    /* The admin key and a key that sets nothing: the server's per-key cap, the server's spans. */
    for (int i = 0; i < 3; i++) {
        resolve_ok(i == 0 ? "the-admin-key" : i == 1 ? "k-plain" : "k-admin", &who);
        ck_assert_uint_eq(who.sessions.open, 16);
        ck_assert_uint_eq(who.sessions.idle_ttl_s, 600);
        ck_assert_uint_eq(who.sessions.max_idle_ttl_s, 3600);
        ck_assert_uint_eq(who.sessions.lifetime_s, 3600);
        ck_assert_uint_eq(who.sessions.max_lifetime_s, 86400);
        pbx_caller_release(&who);
    }
    /*
     * A key's own: its cap, its longest spans in place of the server's (above
     * them too); the server's default within them.
     */
    resolve_ok("k-sessions", &who);
    ck_assert(who.keyed && !who.admin);
    ck_assert_uint_eq(who.sessions.open, 1);
    ck_assert_uint_eq(who.sessions.max_idle_ttl_s, 7200);
    ck_assert_uint_eq(who.sessions.idle_ttl_s, 600);
    ck_assert_uint_eq(who.sessions.max_lifetime_s, 5);
    ck_assert_uint_eq(who.sessions.lifetime_s, 5);
    pbx_caller_release(&who);
    /* An admin key's session policy is its own too. */
    resolve_ok("k-admin-sessions", &who);
    ck_assert(who.keyed && who.admin);
    ck_assert_uint_eq(who.sessions.open, 2);
    ck_assert_uint_eq(who.sessions.max_idle_ttl_s, 30);
    ck_assert_uint_eq(who.sessions.idle_ttl_s, 30);
    ck_assert_uint_eq(who.sessions.max_lifetime_s, 86400);
    pbx_caller_release(&who);
}
END_TEST

START_TEST(test_parse_modules)
{
    char *long_list = xmalloc(3000);

    parse_modules("all", "all");
    parse_modules("csv", "csv");
    parse_modules("csv,shelve", "csv shelve");
    parse_modules(" csv ,, shelve\tcsv\nx.y ", "csv shelve x.y");
    parse_modules("_a1, B2", "_a1 B2");
    parse_modules("", "");
    parse_modules(" , ", "");
    parse_modules("a-b", "`a-b` is not a module name");
    parse_modules("1abc", "`1abc` is not a module name");
    parse_modules("x..y", "`x..y` is not a module name");
    parse_modules(".x", "`.x` is not a module name");
    parse_modules("x.", "`x.` is not a module name");
    parse_modules("all,csv", "all csv"); /* `all` only alone, as `pybox keys` reads it */
    parse_modules("caf\xc3\xa9", "is not a module name");
    memset(long_list, 'm', 2999);
    long_list[2999] = '\0';
    parse_modules(long_list, "the module list is over 2048 bytes");
    /* Long, but one name many times: within the limit once parsed. */
    for (size_t i = 0; i + 2 < 2999; i += 2)
        memcpy(long_list + i, "m,", 2);
    parse_modules(long_list, "m");
    free(long_list);
}
END_TEST

/*
 * The modules besides the default allowlist that `token`'s caller may import
 * (`want` NULL: none), and whether it has no allowlist at all.
 */
static void expect_modules(const char *token, const char *want, bool all)
{
    struct pbx_caller who;

    resolve_ok(token, &who);
    if (want == NULL)
        ck_assert_ptr_null(who.modules);
    else
        ck_assert_str_eq(who.modules, want);
    ck_assert(who.all_modules == all);
    pbx_caller_release(&who);
}

START_TEST(test_server_modules_are_every_callers)
{
    cfg.anon_modules = "csv shelve";
    expect_modules(NULL, "csv shelve", false);
    /* A key's modules add to the server's. */
    expect_modules("k-plain", "csv shelve", false);
    expect_modules("k-rich", "csv shelve requests lxml", true);
    /* Without the server's, a key's own. */
    cfg.anon_modules = NULL;
    expect_modules(NULL, NULL, false);
    expect_modules("k-rich", "requests lxml", true);
    /* `all` on the server: no allowlist for anyone. */
    cfg.anon_all_modules = true;
    expect_modules(NULL, NULL, true);
    expect_modules("k-plain", NULL, true);
}
END_TEST

/* What `token`'s caller gets for `ask`: 0 with *out, or the refusal's type (and message). */
static const char *limits_of(const char *token, const struct pbx_caller_ask *ask,
                             struct pbx_limits *out, char *msg, size_t msglen)
{
    struct pbx_caller who;
    struct pbx_error *err = NULL;
    const char *etype = NULL;
    int rc;

    resolve_ok(token, &who);
    memset(out, 0xa5, sizeof(*out));
    rc = pbx_caller_limits(&cfg, &who, ask, out, &etype, &err);
    pbx_caller_release(&who);
    if (rc == 0) {
        ck_assert_ptr_null(err);
        return NULL;
    }
    ck_assert_ptr_nonnull(etype);
    snprintf(msg, msglen, "%s", err->msg);
    pbx_error_free(&err);
    return etype;
}

START_TEST(test_limits_refusals)
{
    struct pbx_caller_ask ask = {.code_len = 2001, .code_chars = 2001};
    struct pbx_limits out;
    char msg[256];

    /* The code's length, in characters. */
    ck_assert_str_eq(limits_of(NULL, &ask, &out, msg, sizeof(msg)), "ValidationError");
    ck_assert_str_eq(msg, "the code is 2001 characters; the limit is 2000");
    ask.code_chars = 2000;
    ck_assert_ptr_null(limits_of(NULL, &ask, &out, msg, sizeof(msg)));
    ask.code_chars = 3000;
    ck_assert_ptr_null(limits_of("k-plain", &ask, &out, msg, sizeof(msg)));

    /* Network: never here, and the reason depends on who asks. */
    ask = (struct pbx_caller_ask){.code_chars = 1, .network = true};
    ck_assert_str_eq(limits_of(NULL, &ask, &out, msg, sizeof(msg)), "NetworkNotAllowed");
    ck_assert_str_eq(limits_of("k-plain", &ask, &out, msg, sizeof(msg)), "NetworkNotAllowed");
    ck_assert_str_eq(limits_of("k-rich", &ask, &out, msg, sizeof(msg)), "NetworkUnavailable");
    ck_assert_str_eq(msg, "this server runs every execution without network");
    ck_assert_str_eq(limits_of("the-admin-key", &ask, &out, msg, sizeof(msg)),
                     "NetworkUnavailable");

    /* The code is checked first, then network, then the timeout. */
    ask = (struct pbx_caller_ask){
        .code_chars = 2001, .network = true, .has_timeout = true, .timeout_s = 100};
    ck_assert_str_eq(limits_of(NULL, &ask, &out, msg, sizeof(msg)), "ValidationError");
    ck_assert_ptr_nonnull(strstr(msg, "characters"));
    ask.code_chars = 1;
    ck_assert_str_eq(limits_of(NULL, &ask, &out, msg, sizeof(msg)), "NetworkNotAllowed");
    ask.network = false;
    ck_assert_str_eq(limits_of(NULL, &ask, &out, msg, sizeof(msg)), "ValidationError");
    ck_assert_str_eq(msg, "timeout 100 s is over this caller's limit of 10 s");
    ck_assert_str_eq(limits_of("k-rich", &ask, &out, msg, sizeof(msg)), "ValidationError");
    ck_assert_str_eq(msg, "timeout 100 s is over this caller's limit of 60 s");
    ask.timeout_s = 60;
    ck_assert_ptr_null(limits_of("k-rich", &ask, &out, msg, sizeof(msg)));
    /* Just over the limit, by rounding up to a whole millisecond. */
    ask.timeout_s = 10.0001;
    ck_assert_str_eq(limits_of(NULL, &ask, &out, msg, sizeof(msg)), "ValidationError");
    ck_assert_str_eq(msg, "timeout 10 s is over this caller's limit of 10 s");

    /* Memory, by MiB. */
    ask = (struct pbx_caller_ask){.code_chars = 1, .has_memory = true, .memory_mb = 257};
    ck_assert_str_eq(limits_of(NULL, &ask, &out, msg, sizeof(msg)), "ValidationError");
    ck_assert_str_eq(msg, "memory_mb 257 is over this caller's limit of 256");
    ck_assert_ptr_null(limits_of("k-rich", &ask, &out, msg, sizeof(msg)));
}
END_TEST

START_TEST(test_limits_given)
{
    struct pbx_caller_ask ask = {.code_len = 10, .code_chars = 10};
    struct pbx_limits out;
    char msg[256];

    /* Nothing asked: the configured limits. */
    ck_assert_ptr_null(limits_of(NULL, &ask, &out, msg, sizeof(msg)));
    ck_assert_mem_eq(&out, &limits, sizeof(out));

    /* A timeout sets wall and CPU alike, rounded up to whole milliseconds. */
    ask.has_timeout = true;
    ask.timeout_s = 0.0001;
    ck_assert_ptr_null(limits_of(NULL, &ask, &out, msg, sizeof(msg)));
    ck_assert_uint_eq(out.wall_ms, 1);
    ck_assert_uint_eq(out.cpu_ms, 1);
    ask.timeout_s = 2.5;
    ck_assert_ptr_null(limits_of(NULL, &ask, &out, msg, sizeof(msg)));
    ck_assert_uint_eq(out.wall_ms, 2500);
    ck_assert_uint_eq(out.cpu_ms, 2500);
    ask.timeout_s = 45;
    ck_assert_ptr_null(limits_of("k-rich", &ask, &out, msg, sizeof(msg)));
    ck_assert_uint_eq(out.wall_ms, 45000);
    ck_assert_uint_eq(out.cpu_ms, 45000);

    /* Without one, a caller that may ask longer gets the default wall time, as CPU time too. */
    limits.cpu_ms = 20000;
    ask.has_timeout = false;
    ck_assert_ptr_null(limits_of(NULL, &ask, &out, msg, sizeof(msg)));
    ck_assert_uint_eq(out.cpu_ms, 20000);
    ck_assert_ptr_null(limits_of("k-rich", &ask, &out, msg, sizeof(msg)));
    ck_assert_uint_eq(out.wall_ms, 10000);
    ck_assert_uint_eq(out.cpu_ms, 10000);

    /*
     * A key held below the defaults runs within its ceilings when it asks
     * nothing: the lower of the default and its own, wall and CPU time alike.
     */
    ck_assert_ptr_null(limits_of("k-tight", &ask, &out, msg, sizeof(msg)));
    ck_assert_uint_eq(out.wall_ms, 2000);
    ck_assert_uint_eq(out.cpu_ms, 2000);
    ck_assert_uint_eq(out.memory_bytes, 64 * MIB);
    limits.cpu_ms = 1500;
    ck_assert_ptr_null(limits_of("k-tight", &ask, &out, msg, sizeof(msg)));
    ck_assert_uint_eq(out.wall_ms, 2000);
    ck_assert_uint_eq(out.cpu_ms, 1500);
    limits.cpu_ms = 20000;
    /* Asked within its ceilings, it gets what it asks; over them, it is refused. */
    ask.has_timeout = true;
    ask.timeout_s = 1;
    ck_assert_ptr_null(limits_of("k-tight", &ask, &out, msg, sizeof(msg)));
    ck_assert_uint_eq(out.wall_ms, 1000);
    ck_assert_uint_eq(out.memory_bytes, 64 * MIB);
    ask.timeout_s = 3;
    ck_assert_str_eq(limits_of("k-tight", &ask, &out, msg, sizeof(msg)), "ValidationError");
    ask.has_timeout = false;
    ask.has_memory = true;
    ask.memory_mb = 32;
    ck_assert_ptr_null(limits_of("k-tight", &ask, &out, msg, sizeof(msg)));
    ck_assert_uint_eq(out.memory_bytes, 32 * MIB);
    ck_assert_uint_eq(out.wall_ms, 2000);
    ask.memory_mb = 65;
    ck_assert_str_eq(limits_of("k-tight", &ask, &out, msg, sizeof(msg)), "ValidationError");
    ask.has_memory = false;

    /* Memory asked. */
    ask.has_memory = true;
    ask.memory_mb = 64;
    ck_assert_ptr_null(limits_of(NULL, &ask, &out, msg, sizeof(msg)));
    ck_assert_uint_eq(out.memory_bytes, 64 * MIB);

    /* A code the policy let through by characters fits the byte limit. */
    ask = (struct pbx_caller_ask){.code_len = 3 * MIB, .code_chars = MIB};
    ck_assert_ptr_null(limits_of("k-plain", &ask, &out, msg, sizeof(msg)));
    ck_assert_uint_eq(out.code_bytes, 3 * MIB);
}
END_TEST

static Suite *policy_suite(void)
{
    Suite *s = suite_create("policy");
    TCase *tc = tcase_create("allowlist");
    TCase *tk = tcase_create("callers");

    tcase_add_test(tc, test_list_shape);
    suite_add_tcase(s, tc);
    tcase_add_checked_fixture(tk, setup, NULL);
    tcase_add_test(tk, test_resolve_anonymous);
    tcase_add_test(tk, test_resolve_admin_key);
    tcase_add_test(tk, test_resolve_keys);
    tcase_add_test(tk, test_resolve_sessions);
    tcase_add_test(tk, test_limits_refusals);
    tcase_add_test(tk, test_limits_given);
    tcase_add_test(tk, test_parse_modules);
    tcase_add_test(tk, test_server_modules_are_every_callers);
    suite_add_tcase(s, tk);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(policy_suite());
    int failed;

    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
