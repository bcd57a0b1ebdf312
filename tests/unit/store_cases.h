/*
 * The cases of the store's contract that hold whatever its backend: keys
 * (create, list, revoke, lookup, names, policies, tokens), daily quotas
 * (limits, unlimited, bad input, atomicity under threads and under several
 * connections), the audit log, persistence across close and reopen, and the
 * claims on node ids (claim, renewal, conflict, release, expiry, bad input); and
 * what every backend's test needs: open_ok(), create_ok(), store_cases_run().
 * Included by test_store.c (SQLite) and test_store_redis.c (Redis), each of
 * which defines, after including it:
 *   static struct pbx_store *new_store(const char *name, char **uri_out);
 * new_store() giving a new, empty store, and *uri_out (if not NULL) its URI.
 */
#ifndef PBX_TESTS_STORE_CASES_H
#define PBX_TESTS_STORE_CASES_H

static struct pbx_store *new_store(const char *name, char **uri_out);

static struct pbx_store *open_ok(const char *uri)
{
    struct pbx_store *store = NULL;
    struct pbx_error *err = NULL;
    int r = pbx_store_open(uri, &store, &err);

    ck_assert_msg(r == 0, "open %s: %s", uri, err ? err->msg : "?");
    ck_assert_ptr_null(err);
    ck_assert_ptr_nonnull(store);
    return store;
}

/* Run `s`, each test in a child of its own: the exit status of main(). */
static int store_cases_run(Suite *s)
{
    SRunner *sr = srunner_create(s);
    int failed;

    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

static char *create_ok(struct pbx_store *store, const char *name,
                       const struct pbx_key_policy *policy)
{
    struct pbx_error *err = NULL;
    char *token = NULL;
    int r = pbx_store_key_create(store, name, policy, &token, &err);

    ck_assert_msg(r == 0, "create %s: %s", name, err ? err->msg : "?");
    ck_assert_ptr_nonnull(token);
    return token;
}

static void check_token_format(const char *token)
{
    regex_t re;

    ck_assert_int_eq(regcomp(&re, "^pbx_[A-Za-z0-9_-]{43}$", REG_EXTENDED | REG_NOSUB), 0);
    ck_assert_msg(regexec(&re, token, 0, NULL, 0) == 0, "bad token `%s`", token);
    regfree(&re);
}

START_TEST(test_create_list_lookup)
{
    struct pbx_store *store = new_store("create", NULL);
    struct pbx_key_policy policy = {
        .rpm = 60,
        .rpd = -1,
        .timeout_ms = 2500,
        .memory_bytes = 512u << 20,
        .modules = "scipy, sympy  networkx",
        .network = true,
        .sessions = 3,
        .session_idle_ttl_s = 30,
        .session_lifetime_s = 5,
        .concurrency = 7,
    };
    struct pbx_error *err = NULL;
    struct pbx_key_info *keys = NULL;
    struct pbx_key_info info;
    size_t n = 99;
    char *t1 = create_ok(store, "alice", &policy);
    char *t2 = create_ok(store, "bob", NULL);
    time_t now = time(NULL);

    check_token_format(t1);
    check_token_format(t2);
    ck_assert_str_ne(t1, t2);

    ck_assert_int_eq(pbx_store_key_list(store, &keys, &n, &err), 0);
    ck_assert_uint_eq(n, 2);
    ck_assert_str_eq(keys[0].name, "alice");
    ck_assert_str_eq(keys[1].name, "bob");
    ck_assert_int_lt(keys[0].id, keys[1].id);
    /* The prefix is the start of the token, and only the start. */
    ck_assert_uint_eq(strlen(keys[0].prefix), 10);
    ck_assert_int_eq(strncmp(keys[0].prefix, t1, 10), 0);
    ck_assert(!keys[0].revoked);
    ck_assert_int_le(llabs(keys[0].created - (int64_t)now), 5);
    ck_assert_int_eq(keys[0].policy.rpm, 60);
    ck_assert_int_eq(keys[0].policy.rpd, -1);
    ck_assert_int_eq(keys[0].policy.concurrency, 7);
    ck_assert_int_eq(keys[1].policy.concurrency, 0);
    ck_assert_uint_eq(keys[0].policy.timeout_ms, 2500);
    ck_assert_uint_eq(keys[0].policy.memory_bytes, 512u << 20);
    ck_assert(!keys[0].policy.all_modules);
    /* Module lists are stored one space apart, whatever the separators given. */
    ck_assert_str_eq(keys[0].policy.modules, "scipy sympy networkx");
    ck_assert(keys[0].policy.network);
    ck_assert(!keys[0].policy.admin);
    ck_assert_uint_eq(keys[0].policy.sessions, 3);
    ck_assert_uint_eq(keys[0].policy.session_idle_ttl_s, 30);
    ck_assert_uint_eq(keys[0].policy.session_lifetime_s, 5);
    /* No policy: every field is the default. */
    ck_assert_int_eq(keys[1].policy.rpm, 0);
    ck_assert_int_eq(keys[1].policy.rpd, 0);
    ck_assert_uint_eq(keys[1].policy.timeout_ms, 0);
    ck_assert_uint_eq(keys[1].policy.memory_bytes, 0);
    ck_assert_ptr_null(keys[1].policy.modules);
    ck_assert(!keys[1].policy.network && !keys[1].policy.admin && !keys[1].policy.all_modules);
    ck_assert_uint_eq(keys[1].policy.sessions, 0);
    ck_assert_uint_eq(keys[1].policy.session_idle_ttl_s, 0);
    ck_assert_uint_eq(keys[1].policy.session_lifetime_s, 0);
    pbx_key_info_free_array(keys, n);

    ck_assert_int_eq(pbx_store_key_lookup(store, t1, &info, &err), 1);
    ck_assert_str_eq(info.name, "alice");
    ck_assert_int_eq(info.policy.rpm, 60);
    ck_assert_str_eq(info.policy.modules, "scipy sympy networkx");
    ck_assert_uint_eq(info.policy.sessions, 3);
    ck_assert_uint_eq(info.policy.session_idle_ttl_s, 30);
    ck_assert_uint_eq(info.policy.session_lifetime_s, 5);
    pbx_key_info_release(&info);
    ck_assert_ptr_null(info.name);
    pbx_key_info_release(&info); /* twice is harmless */
    ck_assert_int_eq(pbx_store_key_lookup(store, t2, &info, &err), 1);
    ck_assert_str_eq(info.name, "bob");
    pbx_key_info_release(&info);
    ck_assert_ptr_null(err);
    free(t1);
    free(t2);
    pbx_store_close(store);
}
END_TEST

START_TEST(test_admin_all_modules)
{
    struct pbx_store *store = new_store("admin", NULL);
    struct pbx_key_policy policy = {.all_modules = true, .admin = true};
    struct pbx_key_info info;
    char *token = create_ok(store, "root", &policy);

    ck_assert_int_eq(pbx_store_key_lookup(store, token, &info, NULL), 1);
    ck_assert(info.policy.all_modules);
    ck_assert(info.policy.admin);
    ck_assert(!info.policy.network);
    ck_assert_ptr_null(info.policy.modules);
    pbx_key_info_release(&info);
    free(token);
    pbx_store_close(store);
}
END_TEST

START_TEST(test_empty_list)
{
    struct pbx_store *store = new_store("empty", NULL);
    struct pbx_error *err = NULL;
    struct pbx_key_info *keys = (struct pbx_key_info *)1;
    size_t n = 7;

    ck_assert_int_eq(pbx_store_key_list(store, &keys, &n, NULL), 0);
    ck_assert_uint_eq(n, 0);
    pbx_key_info_free_array(keys, n);
    /* A store that answers. */
    ck_assert_int_eq(pbx_store_ping(store, &err), 0);
    ck_assert_ptr_null(err);
    pbx_store_close(store);
}
END_TEST

START_TEST(test_revoke)
{
    struct pbx_store *store = new_store("revoke", NULL);
    struct pbx_error *err = NULL;
    struct pbx_key_info *keys = NULL;
    struct pbx_key_info info;
    size_t n = 0;
    char *t1 = create_ok(store, "k1", NULL);
    char *t2 = create_ok(store, "k2", NULL);

    ck_assert_int_eq(pbx_store_key_revoke(store, "k1", &err), 0);
    ck_assert_ptr_null(err);
    /* A revoked key never authenticates; the other one still does. */
    ck_assert_int_eq(pbx_store_key_lookup(store, t1, &info, &err), 0);
    ck_assert_ptr_null(err);
    ck_assert_int_eq(pbx_store_key_lookup(store, t2, &info, &err), 1);
    pbx_key_info_release(&info);
    /* Revoking again is fine; an unknown name is not. */
    ck_assert_int_eq(pbx_store_key_revoke(store, "k1", &err), 0);
    ck_assert_int_eq(pbx_store_key_revoke(store, "nobody", &err), -PBX_E_NOTFOUND);
    ck_assert_int_eq(err->code, PBX_E_NOTFOUND);
    ck_assert_ptr_nonnull(strstr(err->msg, "nobody"));
    pbx_error_free(&err);
    ck_assert_int_eq(pbx_store_key_revoke(store, NULL, &err), -PBX_E_INVAL);
    pbx_error_free(&err);

    ck_assert_int_eq(pbx_store_key_list(store, &keys, &n, &err), 0);
    ck_assert_uint_eq(n, 2);
    ck_assert(keys[0].revoked);
    ck_assert(!keys[1].revoked);
    pbx_key_info_free_array(keys, n);
    free(t1);
    free(t2);
    pbx_store_close(store);
}
END_TEST

START_TEST(test_duplicate_name)
{
    struct pbx_store *store = new_store("dup", NULL);
    struct pbx_error *err = NULL;
    char *token = create_ok(store, "same", NULL);
    char *again = (char *)"untouched";
    size_t n = 0;
    struct pbx_key_info *keys = NULL;

    ck_assert_int_eq(pbx_store_key_create(store, "same", NULL, &again, &err), -EEXIST);
    ck_assert_ptr_null(again);
    ck_assert_int_eq(err->code, EEXIST);
    ck_assert_str_eq(err->msg, "key name `same` (revoked keys keep their names): File exists");
    pbx_error_free(&err);
    /* The name of a revoked key stays taken, so audit records stay unambiguous. */
    ck_assert_int_eq(pbx_store_key_revoke(store, "same", NULL), 0);
    ck_assert_int_eq(pbx_store_key_create(store, "same", NULL, &again, &err), -EEXIST);
    pbx_error_free(&err);
    ck_assert_int_eq(pbx_store_key_list(store, &keys, &n, NULL), 0);
    ck_assert_uint_eq(n, 1);
    pbx_key_info_free_array(keys, n);
    free(token);
    pbx_store_close(store);
}
END_TEST

START_TEST(test_bad_names_and_policies)
{
    static const char *const bad_names[] = {
        "",
        "has space",
        "semi;colon",
        "quote'",
        "new\nline",
        "tab\t",
        "\xc3\xa9t\xc3\xa9",
        "a2345678901234567890123456789012345678901234567890123456789012345" /* 65 */,
    };
    /* Policies refused, and what the message names (NULL: anything). */
    static const struct {
        struct pbx_key_policy policy;
        const char *says;
    } bad_policies[] = {
        {{.modules = (char *)"os;rm"}, "key `m`"},
        {{.modules = (char *)"1abc"}, "key `m`"},
        {{.modules = (char *)"a..b"}, "key `m`"},
        {{.modules = (char *)".a"}, "key `m`"},
        {{.modules = (char *)"a."}, "key `m`"},
        {{.modules = (char *)"numpy/x"}, "key `m`"},
        {{.rpm = -2}, NULL},
        {{.rpd = -5}, NULL},
        {{.sessions = PBX_CALLER_SESSIONS_MAX + 1}, "sessions"},
        {{.session_idle_ttl_s = PBX_CALLER_SPAN_MAX_S + 1}, NULL},
        {{.session_lifetime_s = UINT32_MAX}, NULL},
        {{.concurrency = -2}, "concurrency"},
        {{.concurrency = PBX_STORE_CONCURRENCY_MAX + 1}, "concurrency"},
    };
    struct pbx_store *store = new_store("badnames", NULL);
    struct pbx_error *err = NULL;
    struct pbx_key_policy policy = {0};
    char *token = NULL;
    size_t n = 9;
    struct pbx_key_info *keys = NULL;

    for (size_t i = 0; i < sizeof(bad_names) / sizeof(bad_names[0]); i++) {
        ck_assert_int_eq(pbx_store_key_create(store, bad_names[i], NULL, &token, &err),
                         -PBX_E_INVAL);
        ck_assert_ptr_null(token);
        pbx_error_free(&err);
    }
    ck_assert_int_eq(pbx_store_key_create(store, NULL, NULL, &token, &err), -PBX_E_INVAL);
    pbx_error_free(&err);
    for (size_t i = 0; i < sizeof(bad_policies) / sizeof(bad_policies[0]); i++) {
        ck_assert_int_eq(pbx_store_key_create(store, "m", &bad_policies[i].policy, &token, &err),
                         -PBX_E_INVAL);
        ck_assert_ptr_null(token);
        ck_assert_msg(bad_policies[i].says == NULL || strstr(err->msg, bad_policies[i].says),
                      "policy %zu: %s", i, err->msg);
        pbx_error_free(&err);
    }
    /* Nothing was created by the refused calls. */
    ck_assert_int_eq(pbx_store_key_list(store, &keys, &n, NULL), 0);
    ck_assert_uint_eq(n, 0);
    /* The longest name and the odd allowed characters are fine. */
    token =
        create_ok(store, "a234567890123456789012345678901234567890123456789012345678901234", NULL);
    free(token);
    token = create_ok(store, "ci-bot_2.0@example.org", NULL);
    free(token);
    /* An empty module list is no list. */
    policy.modules = " , ";
    token = create_ok(store, "blank", &policy);
    free(token);
    ck_assert_int_eq(pbx_store_key_list(store, &keys, &n, NULL), 0);
    ck_assert_uint_eq(n, 3);
    ck_assert_ptr_null(keys[2].policy.modules);
    pbx_key_info_free_array(keys, n);
    pbx_store_close(store);
}
END_TEST

START_TEST(test_wrong_token)
{
    struct pbx_store *store = new_store("wrong", NULL);
    struct pbx_error *err = NULL;
    struct pbx_key_info info = {0};
    char *token = create_ok(store, "k", NULL);
    char *longer = xasprintf("%sA", token);

    /* One character off at either end of the random part, truncated, extended, the prefix
     * alone, empty, NULL. */
    char *end_off = xstrdup(token);
    char *start_off = xstrdup(token);
    char *truncated = xstrdup(token);
    const char *const wrong[] = {end_off, start_off, truncated, longer, "pbx_", "", NULL};

    end_off[strlen(token) - 1] = end_off[strlen(token) - 1] == 'A' ? 'B' : 'A';
    start_off[4] = start_off[4] == 'A' ? 'B' : 'A';
    truncated[strlen(token) - 1] = '\0';
    for (size_t i = 0; i < sizeof(wrong) / sizeof(wrong[0]); i++)
        ck_assert_msg(pbx_store_key_lookup(store, wrong[i], &info, &err) == 0, "token %zu", i);
    free(end_off);
    free(start_off);
    free(truncated);
    /* A well-formed token that was never issued. */
    ck_assert_int_eq(
        pbx_store_key_lookup(store, "pbx_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", &info, &err),
        0);
    ck_assert_ptr_null(err);
    ck_assert_ptr_null(info.name);
    free(longer);
    free(token);
    pbx_store_close(store);
}
END_TEST

START_TEST(test_persistence)
{
    char *uri = NULL;
    struct pbx_store *store = new_store("persist", &uri);
    struct pbx_error *err = NULL;
    struct pbx_key_info info;
    struct pbx_key_info *keys = NULL;
    struct pbx_audit rec = {.time_ms = 1700000000123,
                            .client = "10.0.0.1",
                            .route = "/v1/execute",
                            .code_sha256 = "ab",
                            .status = "ok",
                            .duration_ms = 1.5};
    size_t n = 0;
    int64_t count = 0;
    char *live = create_ok(store, "live", NULL);
    char *dead = create_ok(store, "dead", NULL);
    char *text = NULL;

    ck_assert_int_eq(pbx_store_key_revoke(store, "dead", NULL), 0);
    ck_assert_int_eq(pbx_store_quota_take(store, "c", "2026-01-02", 10, &count, NULL), 1);
    ck_assert_int_eq(pbx_store_quota_take(store, "c", "2026-01-02", 10, &count, NULL), 1);
    ck_assert_int_eq(pbx_store_audit(store, &rec, NULL), 0);
    pbx_store_close(store);

    store = open_ok(uri);
    ck_assert_int_eq(pbx_store_key_list(store, &keys, &n, &err), 0);
    ck_assert_uint_eq(n, 2);
    ck_assert(!keys[0].revoked);
    ck_assert(keys[1].revoked);
    pbx_key_info_free_array(keys, n);
    ck_assert_int_eq(pbx_store_key_lookup(store, live, &info, &err), 1);
    pbx_key_info_release(&info);
    ck_assert_int_eq(pbx_store_key_lookup(store, dead, &info, &err), 0);
    ck_assert_int_eq(pbx_store_quota_get(store, "c", "2026-01-02", &count, &err), 0);
    ck_assert_int_eq(count, 2);
    ck_assert_int_eq(pbx_store_audit_tail(store, 10, &text, &err), 0);
    ck_assert_ptr_nonnull(strstr(text, "\"client\":\"10.0.0.1\""));
    free(text);
    /* The name is still taken after reopening. */
    ck_assert_int_eq(pbx_store_key_create(store, "live", NULL, &text, &err), -EEXIST);
    pbx_error_free(&err);
    pbx_store_close(store);
    free(live);
    free(dead);
    free(uri);
}
END_TEST

START_TEST(test_quota_limit)
{
    struct pbx_store *store = new_store("quota", NULL);
    struct pbx_error *err = NULL;
    int64_t count = -1;

    ck_assert_int_eq(pbx_store_quota_get(store, "1.2.3.4", "2026-03-01", &count, &err), 0);
    ck_assert_int_eq(count, 0);
    for (int i = 1; i <= 30; i++) {
        ck_assert_int_eq(pbx_store_quota_take(store, "1.2.3.4", "2026-03-01", 30, &count, &err), 1);
        ck_assert_int_eq(count, i);
    }
    /* Refused at the limit, without counting the refusal. */
    for (int i = 0; i < 3; i++) {
        count = -1;
        ck_assert_int_eq(pbx_store_quota_take(store, "1.2.3.4", "2026-03-01", 30, &count, &err), 0);
        ck_assert_int_eq(count, 30);
    }
    ck_assert_int_eq(pbx_store_quota_get(store, "1.2.3.4", "2026-03-01", &count, &err), 0);
    ck_assert_int_eq(count, 30);
    /* Other days and other clients have their own counts. */
    ck_assert_int_eq(pbx_store_quota_take(store, "1.2.3.4", "2026-03-02", 30, &count, &err), 1);
    ck_assert_int_eq(count, 1);
    ck_assert_int_eq(pbx_store_quota_take(store, "5.6.7.8", "2026-03-01", 30, &count, &err), 1);
    ck_assert_int_eq(count, 1);
    /* A higher limit (a key with its own policy) lets the same client on. */
    ck_assert_int_eq(pbx_store_quota_take(store, "1.2.3.4", "2026-03-01", 31, &count, &err), 1);
    ck_assert_int_eq(count, 31);
    /* A limit of 1 on a fresh day: the first is granted, the second not. */
    ck_assert_int_eq(pbx_store_quota_take(store, "x", "2026-03-01", 1, &count, &err), 1);
    ck_assert_int_eq(pbx_store_quota_take(store, "x", "2026-03-01", 1, &count, &err), 0);
    ck_assert_int_eq(count, 1);
    /* A limit of 0 refuses everything and creates nothing. */
    ck_assert_int_eq(pbx_store_quota_take(store, "zero", "2026-03-01", 0, &count, &err), 0);
    ck_assert_int_eq(count, 0);
    ck_assert_ptr_null(err);
    pbx_store_close(store);
}
END_TEST

/* A charge with an idempotency key counts once per client and day; without one, each counts. */
START_TEST(test_quota_once)
{
    struct pbx_store *store = new_store("once", NULL);
    struct pbx_error *err = NULL;
    char long_key[PBX_STORE_ONCE_MAX + 2];
    int64_t count = -1;

    ck_assert_int_eq(pbx_store_quota_take_once(store, "k", "2026-06-01", 3, "req-1", &count, &err),
                     1);
    ck_assert_int_eq(count, 1);
    ck_assert_int_eq(pbx_store_quota_take_once(store, "k", "2026-06-01", 3, "req-1", &count, &err),
                     1);
    ck_assert_int_eq(count, 1);
    /* Another key, and none, count. */
    ck_assert_int_eq(pbx_store_quota_take_once(store, "k", "2026-06-01", 3, "req-2", &count, &err),
                     1);
    ck_assert_int_eq(count, 2);
    ck_assert_int_eq(pbx_store_quota_take_once(store, "k", "2026-06-01", 3, NULL, &count, &err), 1);
    ck_assert_int_eq(count, 3);
    /* At the limit: a new key is refused (and not remembered), a charged one still passes. */
    ck_assert_int_eq(pbx_store_quota_take_once(store, "k", "2026-06-01", 3, "req-3", &count, &err),
                     0);
    ck_assert_int_eq(count, 3);
    ck_assert_int_eq(pbx_store_quota_take_once(store, "k", "2026-06-01", 4, "req-3", &count, &err),
                     1);
    ck_assert_int_eq(count, 4);
    ck_assert_int_eq(pbx_store_quota_take_once(store, "k", "2026-06-01", 3, "req-1", &count, &err),
                     1);
    ck_assert_int_eq(count, 4);
    /* The same key of another client or day is another charge. */
    ck_assert_int_eq(pbx_store_quota_take_once(store, "j", "2026-06-01", 3, "req-1", &count, &err),
                     1);
    ck_assert_int_eq(count, 1);
    ck_assert_int_eq(pbx_store_quota_take_once(store, "k", "2026-06-02", 3, "req-1", &count, &err),
                     1);
    ck_assert_int_eq(count, 1);
    ck_assert_int_eq(pbx_store_quota_get(store, "k", "2026-06-01", &count, &err), 0);
    ck_assert_int_eq(count, 4);
    ck_assert_ptr_null(err);
    /* Keys that are not 1 to 128 visible ASCII characters. */
    memset(long_key, 'a', sizeof(long_key) - 1);
    long_key[sizeof(long_key) - 1] = '\0';
    {
        const char *bad[] = {"", "a b", "tab\there", "caf\xc3\xa9", long_key};

        for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
            ck_assert_int_eq(
                pbx_store_quota_take_once(store, "k", "2026-06-01", 9, bad[i], &count, &err),
                -PBX_E_INVAL);
            pbx_error_free(&err);
        }
    }
    long_key[PBX_STORE_ONCE_MAX] = '\0';
    ck_assert_int_eq(pbx_store_quota_take_once(store, "k", "2026-06-01", 9, long_key, &count, &err),
                     1);
    ck_assert_int_eq(count, 5);
    pbx_store_close(store);
}
END_TEST

START_TEST(test_quota_unlimited)
{
    struct pbx_store *store = new_store("unlimited", NULL);
    int64_t count = 0;

    for (int i = 1; i <= 1000; i++) {
        ck_assert_int_eq(pbx_store_quota_take(store, "u", "2026-03-01", -1, &count, NULL), 1);
        ck_assert_int_eq(count, i);
    }
    /* Back under a limit, the count made while unlimited still counts. */
    ck_assert_int_eq(pbx_store_quota_take(store, "u", "2026-03-01", 1000, &count, NULL), 0);
    ck_assert_int_eq(count, 1000);
    pbx_store_close(store);
}
END_TEST

START_TEST(test_quota_bad_input)
{
    /* A client and a day refused together: malformed days, no day, no client. */
    static const char *const bad[][2] = {
        {"c", ""},           {"c", "2026-3-01"},   {"c", "2026/03/01"},
        {"c", "20260301xx"}, {"c", "2026-03-01 "}, {"c", "abcd-ef-gh"},
        {"c", NULL},         {NULL, "2026-03-01"}, {"", "2026-03-01"},
    };
    struct pbx_store *store = new_store("quotabad", NULL);
    struct pbx_error *err = NULL;
    int64_t count = 0;
    char *huge = xmalloc(300);

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ck_assert_msg(pbx_store_quota_take(store, bad[i][0], bad[i][1], 5, &count, &err) ==
                          -PBX_E_INVAL,
                      "case %zu", i);
        pbx_error_free(&err);
    }
    memset(huge, 'a', 299);
    huge[299] = '\0';
    ck_assert_int_eq(pbx_store_quota_get(store, huge, "2026-03-01", &count, &err), -PBX_E_INVAL);
    pbx_error_free(&err);
    /* SQL in a client name is data: it is just a client. */
    ck_assert_int_eq(
        pbx_store_quota_take(store, "x'); DROP TABLE quota; --", "2026-03-01", 5, &count, &err), 1);
    ck_assert_int_eq(pbx_store_quota_take(store, "y", "2026-03-01", 5, &count, &err), 1);
    /* So are a key's braces and separators: every client has its own count. */
    ck_assert_int_eq(pbx_store_quota_take(store, "a}:{b", "2026-03-01", 5, &count, &err), 1);
    ck_assert_int_eq(pbx_store_quota_take(store, "a}:{b", "2026-03-01", 5, &count, &err), 1);
    ck_assert_int_eq(count, 2);
    ck_assert_int_eq(pbx_store_quota_take(store, "a", "2026-03-01", 5, &count, &err), 1);
    ck_assert_int_eq(count, 1);
    ck_assert_int_eq(
        pbx_store_quota_take(store, "a}:{b}:2026-03-01", "2026-03-02", 5, &count, &err), 1);
    ck_assert_int_eq(count, 1);
    free(huge);
    pbx_store_close(store);
}
END_TEST

#define THREADS     4
#define PER_THREAD  200
#define QUOTA_LIMIT 500

struct taker {
    struct pbx_store *store; /* shared, or NULL to open its own from uri */
    const char *uri;         /* the store to open when store is NULL */
    int granted;             /* requests granted */
    int refused;             /* requests refused */
    int errors;              /* calls that failed */
};

static void *take_many(void *arg)
{
    struct taker *t = arg;
    struct pbx_store *own = NULL;
    struct pbx_store *store = t->store;
    struct pbx_error *err = NULL;

    if (store == NULL) {
        if (pbx_store_open(t->uri, &own, &err) < 0) {
            pbx_error_free(&err);
            t->errors = PER_THREAD;
            return NULL;
        }
        store = own;
    }
    for (int i = 0; i < PER_THREAD; i++) {
        int64_t count = 0;
        int r = pbx_store_quota_take(store, "hot", "2026-05-05", QUOTA_LIMIT, &count, &err);

        if (r == 1)
            t->granted++;
        else if (r == 0)
            t->refused++;
        else
            t->errors++;
        pbx_error_free(&err);
    }
    pbx_store_close(own);
    return NULL;
}

/* Exactly `limit` granted out of THREADS * PER_THREAD, with `shared` or one store per thread. */
static void run_takers(struct pbx_store *shared, const char *uri)
{
    pthread_t tids[THREADS];
    struct taker takers[THREADS];
    int granted = 0;
    int refused = 0;

    for (int i = 0; i < THREADS; i++) {
        takers[i] = (struct taker){.store = shared, .uri = uri};
        ck_assert_int_eq(pthread_create(&tids[i], NULL, take_many, &takers[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        ck_assert_int_eq(pthread_join(tids[i], NULL), 0);
        ck_assert_int_eq(takers[i].errors, 0);
        granted += takers[i].granted;
        refused += takers[i].refused;
    }
    ck_assert_int_eq(granted, QUOTA_LIMIT);
    ck_assert_int_eq(refused, THREADS * PER_THREAD - QUOTA_LIMIT);
}

START_TEST(test_quota_threads_shared)
{
    struct pbx_store *store = new_store("threads", NULL);
    int64_t count = 0;

    run_takers(store, NULL);
    ck_assert_int_eq(pbx_store_quota_get(store, "hot", "2026-05-05", &count, NULL), 0);
    ck_assert_int_eq(count, QUOTA_LIMIT);
    pbx_store_close(store);
}
END_TEST

/* One connection per thread: the atomicity comes from the store, as between processes. */
START_TEST(test_quota_threads_connections)
{
    char *uri = NULL;
    struct pbx_store *store = new_store("connections", &uri);
    int64_t count = 0;

    run_takers(NULL, uri);
    ck_assert_int_eq(pbx_store_quota_get(store, "hot", "2026-05-05", &count, NULL), 0);
    ck_assert_int_eq(count, QUOTA_LIMIT);
    pbx_store_close(store);
    free(uri);
}
END_TEST

START_TEST(test_audit)
{
    struct pbx_store *store = new_store("audit", NULL);
    struct pbx_error *err = NULL;
    struct pbx_audit rec = {
        .client = "192.0.2.7",
        .route = "/execute",
        .code_sha256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        .status = "ok",
    };
    char *text = NULL;
    char *line;

    ck_assert_int_eq(pbx_store_audit_tail(store, 10, &text, &err), 0);
    ck_assert_str_eq(text, "");
    free(text);
    for (int i = 0; i < 5; i++) {
        rec.time_ms = 1700000000000 + i;
        rec.key_name = i % 2 ? "alice" : NULL;
        rec.status = i == 4 ? "Quote\"d\n" : "ok";
        rec.duration_ms = i + 0.5;
        ck_assert_int_eq(pbx_store_audit(store, &rec, &err), 0);
    }
    /* The newest three, oldest first, one JSON object a line. */
    ck_assert_int_eq(pbx_store_audit_tail(store, 3, &text, &err), 0);
    {
        static const char first[] =
            "{\"time_ms\":1700000000002,\"client\":\"192.0.2.7\",\"key_name\":null,"
            "\"route\":\"/execute\",\"code_sha256\":\"e3b0c44298fc1c149afbf4c8996fb9"
            "2427ae41e4649b934ca495991b7852b855\",\"status\":\"ok\",\"duration_ms\":2.5}\n";

        ck_assert_msg(strncmp(text, first, strlen(first)) == 0, "%s", text);
    }
    line = strchr(text, '\n') + 1;
    ck_assert_int_eq(strncmp(line, "{\"time_ms\":1700000000003,", 25), 0);
    ck_assert_ptr_nonnull(strstr(line, "\"key_name\":\"alice\""));
    line = strchr(line, '\n') + 1;
    ck_assert_int_eq(strncmp(line, "{\"time_ms\":1700000000004,", 25), 0);
    /* Strings are JSON-escaped: a record is always one line. */
    ck_assert_ptr_nonnull(strstr(line, "\"status\":\"Quote\\\"d\\n\""));
    ck_assert_str_eq(strchr(line, '\n'), "\n");
    free(text);
    ck_assert_int_eq(pbx_store_audit_tail(store, 0, &text, &err), 0);
    ck_assert_str_eq(text, "");
    free(text);
    ck_assert_int_eq(pbx_store_audit_tail(store, 1000, &text, &err), 0);
    {
        int lines = 0;

        for (const char *p = text; *p; p++)
            lines += *p == '\n';
        ck_assert_int_eq(lines, 5);
    }
    free(text);
    /* Required fields. */
    rec.client = NULL;
    ck_assert_int_eq(pbx_store_audit(store, &rec, &err), -PBX_E_INVAL);
    pbx_error_free(&err);
    ck_assert_int_eq(pbx_store_audit(store, NULL, &err), -PBX_E_INVAL);
    pbx_error_free(&err);
    pbx_store_close(store);
}
END_TEST

/* ---- Node ids' claims ---- */

/* Claim `node` for `token`, expecting `want` (1 claimed or renewed, 0 held by another). */
static void claim_expect(struct pbx_store *store, const char *node, const char *token,
                         int64_t ttl_ms, int want, struct pbx_store_node_holder *holder)
{
    struct pbx_error *err = NULL;
    int r = pbx_store_node_claim(store, node, token, ttl_ms, holder, &err);

    ck_assert_msg(r == want, "claim %s for %s: %d, not %d (%s)", node, token, r, want,
                  err ? err->msg : "no error");
    ck_assert_ptr_null(err);
}

/* This process's host name, as a claim records it. */
static void self_host(char host[PBX_STORE_NODE_HOST_MAX + 1])
{
    ck_assert_int_eq(gethostname(host, PBX_STORE_NODE_HOST_MAX + 1), 0);
    host[PBX_STORE_NODE_HOST_MAX] = '\0';
}

/*
 * A claim, its renewal by the same token, another token refused while it
 * holds (told who holds it: pid, host, when renewed), through the same
 * store and through a second connection; a release only by the holder;
 * node ids independent of each other.
 */
START_TEST(test_node_claim)
{
    char *uri = NULL;
    struct pbx_store *a = new_store("node-claim", &uri);
    struct pbx_store *b = open_ok(uri);
    struct pbx_store_node_holder h = {0};
    struct pbx_store_node_holder first = {0};
    struct pbx_error *err = NULL;
    char host[PBX_STORE_NODE_HOST_MAX + 1];

    self_host(host);
    claim_expect(a, "n1", "tokA", 60000, 1, &first);
    ck_assert_int_eq(first.pid, getpid());
    ck_assert_str_eq(first.host, host);
    ck_assert_int_gt(first.renewed_ms, 1700000000000);
    ck_assert_int_eq(first.age_ms, 0);
    ck_assert_int_eq(first.left_ms, 60000);
    /* The same token again renews it. */
    claim_expect(a, "n1", "tokA", 60000, 1, &h);
    ck_assert_int_ge(h.renewed_ms, first.renewed_ms);
    first = h;
    /* Another token is refused, on this connection and another, and told who holds it. */
    for (int i = 0; i < 2; i++) {
        memset(&h, 0x55, sizeof(h));
        claim_expect(i == 0 ? a : b, "n1", "tokB", 60000, 0, &h);
        ck_assert_int_eq(h.pid, getpid());
        ck_assert_str_eq(h.host, host);
        ck_assert_int_eq(h.renewed_ms, first.renewed_ms);
        ck_assert_int_ge(h.age_ms, 0);
        ck_assert_int_lt(h.age_ms, 10000);
        ck_assert_int_gt(h.left_ms, 50000);
        ck_assert_int_le(h.left_ms, 60000);
    }
    /* No holder wanted: NULL is fine. */
    claim_expect(b, "n1", "tokB", 60000, 0, NULL);
    /* Another node id is free. */
    claim_expect(b, "n2", "tokB", 60000, 1, NULL);
    /* Only the holder releases. */
    ck_assert_int_eq(pbx_store_node_release(b, "n1", "tokB", &err), 0);
    claim_expect(b, "n1", "tokB", 60000, 0, NULL);
    ck_assert_int_eq(pbx_store_node_release(a, "n1", "tokA", &err), 1);
    ck_assert_int_eq(pbx_store_node_release(a, "n1", "tokA", &err), 0);
    ck_assert_ptr_null(err);
    /* Released, it is the next claimant's at once; the old holder is refused. */
    claim_expect(b, "n1", "tokB", 60000, 1, NULL);
    claim_expect(a, "n1", "tokA", 60000, 0, &h);
    ck_assert_int_eq(h.pid, getpid());
    /* n2 was never touched by any of it. */
    claim_expect(a, "n2", "tokA", 60000, 0, NULL);
    pbx_store_close(b);
    pbx_store_close(a);
    free(uri);
}
END_TEST

/*
 * A claim not renewed lapses after its TTL: another token is refused
 * until then and takes it after (polled, with a deadline), and the first
 * holder, back, finds it taken.
 */
START_TEST(test_node_claim_expiry)
{
    struct pbx_store *store = new_store("node-expiry", NULL);
    struct pbx_store_node_holder h = {0};
    struct pbx_error *err = NULL;
    double start = 0;
    double until;
    int r = 0;

    claim_expect(store, "n1", "old", 400, 1, NULL);
    claim_expect(store, "n1", "new", 400, 0, &h);
    ck_assert_int_gt(h.left_ms, 0);
    ck_assert_int_le(h.left_ms, 400);
    {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        start = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
    }
    until = start + 10.0;
    for (;;) {
        struct timespec ts;
        double now;

        r = pbx_store_node_claim(store, "n1", "new", 400, &h, &err);
        ck_assert_msg(r >= 0, "%s", err ? err->msg : "?");
        clock_gettime(CLOCK_MONOTONIC, &ts);
        now = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
        if (r == 1 || now > until)
            break;
        usleep(20000);
    }
    ck_assert_int_eq(r, 1);
    claim_expect(store, "n1", "old", 400, 0, NULL);
    pbx_store_close(store);
}
END_TEST

/* Bad node ids, tokens and TTLs are PBX_E_INVAL, before the backend sees them. */
START_TEST(test_node_claim_bad_input)
{
    static const char *const bad[] = {"", "n 1", "n:1", "{n1}", "n1\n", "é"};
    struct pbx_store *store = new_store("node-bad", NULL);
    struct pbx_store_node_holder h;
    struct pbx_error *err = NULL;
    char longest[PBX_STORE_NODE_MAX + 2];

    memset(longest, 'a', sizeof(longest) - 1);
    longest[sizeof(longest) - 1] = '\0';
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        memset(&h, 0x55, sizeof(h));
        ck_assert_int_eq(pbx_store_node_claim(store, bad[i], "t", 1000, &h, &err), -PBX_E_INVAL);
        ck_assert_ptr_nonnull(strstr(err->msg, "node id"));
        pbx_error_free(&err);
        ck_assert_int_eq(h.pid, 0); /* told nothing */
        ck_assert_int_eq(pbx_store_node_claim(store, "n1", bad[i], 1000, &h, &err), -PBX_E_INVAL);
        ck_assert_ptr_nonnull(strstr(err->msg, "token"));
        pbx_error_free(&err);
        ck_assert_int_eq(pbx_store_node_release(store, bad[i], "t", &err), -PBX_E_INVAL);
        pbx_error_free(&err);
        ck_assert_int_eq(pbx_store_node_release(store, "n1", bad[i], &err), -PBX_E_INVAL);
        pbx_error_free(&err);
    }
    ck_assert_int_eq(pbx_store_node_claim(store, NULL, "t", 1000, NULL, &err), -PBX_E_INVAL);
    pbx_error_free(&err);
    ck_assert_int_eq(pbx_store_node_claim(store, "n1", NULL, 1000, NULL, &err), -PBX_E_INVAL);
    pbx_error_free(&err);
    ck_assert_int_eq(pbx_store_node_claim(store, longest, "t", 1000, NULL, &err), -PBX_E_INVAL);
    pbx_error_free(&err);
    ck_assert_int_eq(pbx_store_node_claim(store, "n1", longest, 1000, NULL, &err), -PBX_E_INVAL);
    pbx_error_free(&err);
    longest[PBX_STORE_NODE_MAX] = '\0'; /* the longest that is fine */
    claim_expect(store, longest, longest, 1000, 1, NULL);
    ck_assert_int_eq(pbx_store_node_release(store, longest, longest, &err), 1);
    for (int i = 0; i < 3; i++) {
        const int64_t ttl[] = {0, -1, PBX_STORE_NODE_TTL_MAX_MS + 1};

        ck_assert_int_eq(pbx_store_node_claim(store, "n1", "t", ttl[i], NULL, &err), -PBX_E_INVAL);
        ck_assert_ptr_nonnull(strstr(err->msg, "TTL"));
        pbx_error_free(&err);
    }
    /* Nothing of it was claimed. */
    claim_expect(store, "n1", "t", PBX_STORE_NODE_TTL_MAX_MS, 1, NULL);
    pbx_store_close(store);
}
END_TEST

/* The shared cases, added to `tc`. */
static void store_cases_add(TCase *tc)
{
    tcase_add_test(tc, test_create_list_lookup);
    tcase_add_test(tc, test_admin_all_modules);
    tcase_add_test(tc, test_empty_list);
    tcase_add_test(tc, test_revoke);
    tcase_add_test(tc, test_duplicate_name);
    tcase_add_test(tc, test_bad_names_and_policies);
    tcase_add_test(tc, test_wrong_token);
    tcase_add_test(tc, test_persistence);
    tcase_add_test(tc, test_quota_limit);
    tcase_add_test(tc, test_quota_unlimited);
    tcase_add_test(tc, test_quota_once);
    tcase_add_test(tc, test_quota_bad_input);
    tcase_add_test(tc, test_quota_threads_shared);
    tcase_add_test(tc, test_quota_threads_connections);
    tcase_add_test(tc, test_audit);
    tcase_add_test(tc, test_node_claim);
    tcase_add_test(tc, test_node_claim_expiry);
    tcase_add_test(tc, test_node_claim_bad_input);
}

#endif
