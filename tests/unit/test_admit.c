/*
 * Unit tests for src/server/admit.c: who the client is (the peer, or
 * X-Forwarded-For when the peer is a trusted proxy), the concurrency cap
 * under racing threads, and the per-minute rate windows driven by an
 * artificial clock (the now_ms parameter), checked against a simple model.
 */
#include <check.h>
#include <arpa/inet.h>
#include <inttypes.h>
#include <malloc.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>

#include "common/error.h"
#include "common/xalloc.h"
#include "server/admit.h"
#include "asan.h"
#include "common/banned.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* An epoch time in milliseconds, as the server passes (CLOCK_REALTIME). */
#define T0 UINT64_C(1767225600000)

#if TEST_ASAN
/* From <sanitizer/allocator_interface.h>, which gcc does not install. */
size_t __sanitizer_get_current_allocated_bytes(void);
#endif

/* Bytes the process holds on the heap now. */
static size_t heap_in_use(void)
{
#if TEST_ASAN
    return __sanitizer_get_current_allocated_bytes();
#else
    struct mallinfo2 mi = mallinfo2();

    return mi.uordblks + mi.hblkhd;
#endif
}

/* A peer address from text, IPv4 or IPv6, with some port. */
static void make_peer(const char *text, struct sockaddr_storage *ss)
{
    struct sockaddr_in *sin = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

    memset(ss, 0, sizeof(*ss));
    if (inet_pton(AF_INET, text, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
        sin->sin_port = htons(40000);
        return;
    }
    ck_assert_msg(inet_pton(AF_INET6, text, &sin6->sin6_addr) == 1, "bad peer `%s`", text);
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons(40001);
}

/* The client pbx__admit_client() names for `peer` and `xff`. */
static void expect_client(const struct pbx_admit *a, const char *peer, const char *xff,
                          const char *want)
{
    struct sockaddr_storage ss;
    char out[64];

    make_peer(peer, &ss);
    memset(out, 'X', sizeof(out));
    pbx__admit_client(a, (const struct sockaddr *)&ss, xff, out, sizeof(out));
    ck_assert_msg(memchr(out, '\0', sizeof(out)) != NULL, "unterminated");
    ck_assert_msg(strcmp(out, want) == 0, "peer %s, X-Forwarded-For `%s`: `%s`, wanted `%s`", peer,
                  xff ? xff : "(none)", out, want);
}

static struct pbx_admit *admit_with(const char *const *proxies, size_t n)
{
    struct pbx_admit *a = pbx__admit_new(4);
    struct pbx_error *err = NULL;

    for (size_t i = 0; i < n; i++) {
        ck_assert_msg(pbx__admit_add_proxy(a, proxies[i], &err) == 0, "%s: %s", proxies[i],
                      err ? err->msg : "");
        ck_assert_ptr_null(err);
    }
    return a;
}

START_TEST(test_new_free)
{
    struct pbx_admit *a = pbx__admit_new(7);

    ck_assert_uint_eq(pbx__admit_capacity(a), 7);
    ck_assert_uint_eq(pbx__admit_active(a), 0);
    pbx__admit_free(a);
    pbx__admit_free(NULL);
}
END_TEST

START_TEST(test_add_proxy_valid)
{
    static const char *const ok[] = {
        "10.0.0.0/8", "127.0.0.1",     "127.0.0.1/32", "192.168.0.0/16", "0.0.0.0/0",
        "1.2.3.4/0",  "10.1.2.3/8",    "::1",          "::1/128",        "fd00::/8",
        "::/0",       "2001:db8::/32", "fe80::/10",    "::ffff:0:0/96",  "2001:db8::1/127",
    };
    struct pbx_admit *a = pbx__admit_new(1);
    struct pbx_error *err = NULL;

    for (size_t i = 0; i < ARRAY_SIZE(ok); i++) {
        ck_assert_msg(pbx__admit_add_proxy(a, ok[i], &err) == 0, "`%s` refused: %s", ok[i],
                      err ? err->msg : "");
        ck_assert_ptr_null(err);
    }
    pbx__admit_free(a);
}
END_TEST

START_TEST(test_add_proxy_invalid)
{
    static const char *const bad[] = {
        "",
        "garbage",
        "10.0.0",
        "10.0.0.256",
        "1.2.3.4.5",
        "10.0.0.0/33",
        "10.0.0.0/-1",
        "10.0.0.0/",
        "10.0.0.0/8x",
        "10.0.0.0/8/8",
        "10.0.0.0/x",
        "10.0.0.0/99999999999999999999",
        "/8",
        "/",
        "::1/129",
        "::1/",
        "fd00::/1000",
        ":::1",
        "fd00::g",
        "10.0.0.0 /8",
        " 10.0.0.1",
        "localhost",
        "[::1]",
        "fe80::1%eth0",
        "10.0.0.1:80",
        /* Far too long to be an address. */
        "1111111111111111111111111111111111111111111111111111111111111111111111111",
    };
    struct pbx_admit *a = pbx__admit_new(1);
    struct pbx_error *err = NULL;

    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        ck_assert_msg(pbx__admit_add_proxy(a, bad[i], &err) < 0, "`%s` accepted", bad[i]);
        ck_assert_ptr_nonnull(err);
        ck_assert_msg(err->code == PBX_E_INVAL, "`%s`: %s", bad[i], pbx_err_name(err->code));
        pbx_error_free(&err);
    }
    /* None of them was added: a header from 10.0.0.1 still changes nothing. */
    expect_client(a, "10.0.0.1", "1.2.3.4", "10.0.0.1");
    expect_client(a, "::1", "1.2.3.4", "::1");
    pbx__admit_free(a);
}
END_TEST

START_TEST(test_add_proxy_too_many)
{
    struct pbx_admit *a = pbx__admit_new(1);
    struct pbx_error *err = NULL;
    char cidr[32];

    for (int i = 0; i < 32; i++) {
        snprintf(cidr, sizeof(cidr), "10.0.%d.0/24", i);
        ck_assert_int_eq(pbx__admit_add_proxy(a, cidr, &err), 0);
    }
    ck_assert_int_lt(pbx__admit_add_proxy(a, "10.0.32.0/24", &err), 0);
    ck_assert_int_eq(err->code, PBX_E_TOO_LARGE);
    pbx_error_free(&err);
    ck_assert_int_lt(pbx__admit_add_proxy(a, "::1", &err), 0);
    ck_assert_int_eq(err->code, PBX_E_TOO_LARGE);
    pbx_error_free(&err);
    /* The 32 first are in force; the refused one is not. */
    expect_client(a, "10.0.0.1", "1.2.3.4", "1.2.3.4");
    expect_client(a, "10.0.31.9", "1.2.3.4", "1.2.3.4");
    expect_client(a, "10.0.32.1", "1.2.3.4", "10.0.32.1");
    pbx__admit_free(a);
}
END_TEST

START_TEST(test_client_untrusted_peer)
{
    static const char *const proxies[] = {"10.0.0.0/8"};
    struct pbx_admit *none = pbx__admit_new(1);
    struct pbx_admit *a = admit_with(proxies, 1);

    /* Without trusted proxies the header is never read. */
    expect_client(none, "5.6.7.8", "1.2.3.4", "5.6.7.8");
    expect_client(none, "10.0.0.1", "1.2.3.4", "10.0.0.1");
    expect_client(none, "2001:db8::7", "1.2.3.4", "2001:db8::7");
    /* A peer outside the trusted ranges cannot name another client. */
    expect_client(a, "5.6.7.8", "1.2.3.4", "5.6.7.8");
    expect_client(a, "5.6.7.8", "10.0.0.2", "5.6.7.8");
    expect_client(a, "11.0.0.1", "1.2.3.4, 10.0.0.2", "11.0.0.1");
    expect_client(a, "9.255.255.255", "1.2.3.4", "9.255.255.255");
    expect_client(a, "2001:db8::7", "1.2.3.4", "2001:db8::7");
    /* An IPv4-compatible (not mapped) IPv6 address is not IPv4. */
    expect_client(a, "::10.0.0.1", "1.2.3.4", "::10.0.0.1");
    pbx__admit_free(none);
    pbx__admit_free(a);
}
END_TEST

START_TEST(test_client_trusted_peer)
{
    static const char *const proxies[] = {"10.0.0.0/8", "fd00::/8"};
    struct pbx_admit *a = admit_with(proxies, ARRAY_SIZE(proxies));

    expect_client(a, "10.0.0.1", "1.2.3.4", "1.2.3.4");
    expect_client(a, "10.255.255.255", "1.2.3.4", "1.2.3.4");
    expect_client(a, "10.0.0.1", "2001:db8::1", "2001:db8::1");
    expect_client(a, "fd00::1", "1.2.3.4", "1.2.3.4");
    expect_client(a, "fd12:3456::9", "2001:db8::1", "2001:db8::1");
    /* The client's address is printed in canonical form. */
    expect_client(a, "10.0.0.1", "2001:0db8:0000::0001", "2001:db8::1");
    /* No header, or one without addresses: the peer. */
    expect_client(a, "10.0.0.1", NULL, "10.0.0.1");
    expect_client(a, "10.0.0.1", "", "10.0.0.1");
    expect_client(a, "10.0.0.1", ",", "10.0.0.1");
    expect_client(a, "10.0.0.1", " , ,", "10.0.0.1");
    expect_client(a, "fd00::1", NULL, "fd00::1");
    /* Spaces and tabs around hops are not part of them. */
    expect_client(a, "10.0.0.1", " \t1.2.3.4\t ", "1.2.3.4");
    expect_client(a, "10.0.0.1", "9.9.9.9 ,\t1.2.3.4 , 10.0.0.2 ", "1.2.3.4");
    pbx__admit_free(a);
}
END_TEST

START_TEST(test_client_chain)
{
    static const char *const proxies[] = {"10.0.0.0/8"};
    struct pbx_admit *a = admit_with(proxies, 1);

    /* The right-most hop that is not a trusted proxy; what is left of it is the client's. */
    expect_client(a, "10.0.0.1", "spoofed, 1.2.3.4, 10.0.0.2", "1.2.3.4");
    expect_client(a, "10.0.0.1", "9.9.9.9, 1.2.3.4, 10.0.0.2", "1.2.3.4");
    expect_client(a, "10.0.0.1", "9.9.9.9, 1.2.3.4, 10.0.0.2, 10.0.0.3, 10.9.9.9", "1.2.3.4");
    expect_client(a, "10.0.0.1", "10.0.0.5, 1.2.3.4", "1.2.3.4");
    expect_client(a, "10.0.0.1", "1.2.3.4, 5.6.7.8", "5.6.7.8");
    /* Every hop trusted: the left-most valid one. */
    expect_client(a, "10.0.0.1", "10.0.0.3, 10.0.0.2", "10.0.0.3");
    expect_client(a, "10.0.0.1", "10.0.0.3", "10.0.0.3");
    expect_client(a, "10.0.0.1", "junk, 10.0.0.3, 10.0.0.2", "10.0.0.3");
    /* A malformed hop stops the walk at the last good one. */
    expect_client(a, "10.0.0.1", "junk", "10.0.0.1");
    expect_client(a, "10.0.0.1", "1.2.3.4, junk", "10.0.0.1");
    expect_client(a, "10.0.0.1", "1.2.3.4, junk, 10.0.0.2", "10.0.0.2");
    expect_client(a, "10.0.0.1", "1.2.3.4, 1.2.3.4:5678, 10.0.0.2", "10.0.0.2");
    expect_client(a, "10.0.0.1", "1.2.3.4, [2001:db8::1], 10.0.0.2", "10.0.0.2");
    expect_client(a, "10.0.0.1", "1.2.3.4, 1.2.3, 10.0.0.2", "10.0.0.2");
    expect_client(a, "10.0.0.1", "1.2.3.4, 1.2.3.4 5.6.7.8, 10.0.0.2", "10.0.0.2");
    expect_client(a, "10.0.0.1", "1.2.3.4, unknown", "10.0.0.1");
    pbx__admit_free(a);
}
END_TEST

START_TEST(test_client_prefixes)
{
    static const char *const proxies[] = {"192.168.0.0/23", "172.16.5.9", "2001:db8:ab00::/40",
                                          "10.0.0.0/31"};
    struct pbx_admit *a = admit_with(proxies, ARRAY_SIZE(proxies));
    static const char *const all[] = {"0.0.0.0/0"};
    struct pbx_admit *any = admit_with(all, 1);

    expect_client(a, "192.168.0.0", "1.2.3.4", "1.2.3.4");
    expect_client(a, "192.168.1.255", "1.2.3.4", "1.2.3.4");
    expect_client(a, "192.168.2.0", "1.2.3.4", "192.168.2.0");
    expect_client(a, "192.167.255.255", "1.2.3.4", "192.167.255.255");
    expect_client(a, "172.16.5.9", "1.2.3.4", "1.2.3.4");
    expect_client(a, "172.16.5.8", "1.2.3.4", "172.16.5.8");
    expect_client(a, "172.16.5.10", "1.2.3.4", "172.16.5.10");
    expect_client(a, "10.0.0.1", "1.2.3.4", "1.2.3.4");
    expect_client(a, "10.0.0.2", "1.2.3.4", "10.0.0.2");
    expect_client(a, "2001:db8:abff:ffff::1", "1.2.3.4", "1.2.3.4");
    expect_client(a, "2001:db8:ab00::", "1.2.3.4", "1.2.3.4");
    expect_client(a, "2001:db8:ac00::1", "1.2.3.4", "2001:db8:ac00::1");
    expect_client(a, "2001:db8:aa00::1", "1.2.3.4", "2001:db8:aa00::1");
    /* /0 trusts every IPv4 peer, and no IPv6 one. */
    expect_client(any, "8.8.8.8", "1.2.3.4", "1.2.3.4");
    expect_client(any, "255.255.255.255", "1.2.3.4", "1.2.3.4");
    expect_client(any, "2001:db8::1", "1.2.3.4", "2001:db8::1");
    pbx__admit_free(a);
    pbx__admit_free(any);
}
END_TEST

START_TEST(test_client_mapped)
{
    static const char *const proxies[] = {"10.0.0.0/8", "::1"};
    struct pbx_admit *a = admit_with(proxies, ARRAY_SIZE(proxies));

    /* A dual-stack socket shows IPv4 peers as ::ffff:a.b.c.d; IPv4 ranges cover them. */
    expect_client(a, "::ffff:10.0.0.1", "1.2.3.4", "1.2.3.4");
    expect_client(a, "::ffff:10.0.0.1", "9.9.9.9, 1.2.3.4, 10.0.0.2", "1.2.3.4");
    expect_client(a, "::ffff:10.0.0.1", NULL, "::ffff:10.0.0.1");
    expect_client(a, "::ffff:11.0.0.1", "1.2.3.4", "::ffff:11.0.0.1");
    /* Mapped hops in the header are IPv4 hops too. */
    expect_client(a, "10.0.0.1", "1.2.3.4, ::ffff:10.0.0.2", "1.2.3.4");
    expect_client(a, "10.0.0.1", "::ffff:1.2.3.4", "::ffff:1.2.3.4");
    /* IPv6 loopback is not IPv4 loopback, nor the reverse. */
    expect_client(a, "::1", "1.2.3.4", "1.2.3.4");
    expect_client(a, "::ffff:127.0.0.1", "1.2.3.4", "::ffff:127.0.0.1");
    pbx__admit_free(a);
}
END_TEST

START_TEST(test_client_no_peer)
{
    static const char *const proxies[] = {"0.0.0.0/0", "::/0"};
    struct pbx_admit *a = admit_with(proxies, ARRAY_SIZE(proxies));
    struct sockaddr_un un;
    char out[64];

    pbx__admit_client(a, NULL, "1.2.3.4", out, sizeof(out));
    ck_assert_str_eq(out, "unknown");
    memset(&un, 0, sizeof(un));
    un.sun_family = AF_UNIX;
    pbx__admit_client(a, (const struct sockaddr *)&un, "1.2.3.4", out, sizeof(out));
    ck_assert_str_eq(out, "unknown");
    pbx__admit_free(a);
}
END_TEST

/* A long chain of trusted proxies: the walk goes through every one of them. */
START_TEST(test_client_long_chain)
{
    static const char *const proxies[] = {"10.0.0.0/8"};
    struct pbx_admit *a = admit_with(proxies, 1);
    char xff[2048];
    size_t len = 0;

    /* 64 hops in all: a client-written one, the client, 62 trusted proxies. */
    len += (size_t)snprintf(xff + len, sizeof(xff) - len, "6.6.6.6, 1.2.3.4");
    for (int i = 0; i < 62; i++)
        len += (size_t)snprintf(xff + len, sizeof(xff) - len, ", 10.0.0.%d", i + 2);
    expect_client(a, "10.0.0.1", xff, "1.2.3.4");
    /* All 64 trusted: the left-most. */
    len = 0;
    for (int i = 0; i < 64; i++)
        len += (size_t)snprintf(xff + len, sizeof(xff) - len, "%s10.1.0.%d", i ? ", " : "", i);
    expect_client(a, "10.0.0.1", xff, "10.1.0.0");
    pbx__admit_free(a);
}
END_TEST

/*
 * X-Forwarded-For with more than 64 hops: pbx__admit_client() keeps the 64
 * LEFT-most items and walks those from the right, so the hops the trusted
 * proxies appended (the only ones to believe) are dropped and a client
 * picks its own address by sending 64 fake hops.  It must read the header
 * from the right, where the trusted hops are.
 */
START_TEST(test_client_spoof_past_64_hops)
{
    static const char *const proxies[] = {"10.0.0.0/8"};
    struct pbx_admit *a = admit_with(proxies, 1);
    size_t cap = 64 * 1024;
    char *xff = xmalloc(cap);
    size_t len = 0;

    /* What the client sent: 64 hops naming 9.9.9.9. */
    for (int i = 0; i < 64; i++)
        len += (size_t)snprintf(xff + len, cap - len, "%s9.9.9.9", i ? ", " : "");
    /* What the trusted proxy appended: the real peer it saw. */
    snprintf(xff + len, cap - len, ", 1.2.3.4");
    expect_client(a, "10.0.0.1", xff, "1.2.3.4");

    /* Likewise with a second trusted proxy in the chain. */
    len = 0;
    for (int i = 0; i < 70; i++)
        len += (size_t)snprintf(xff + len, cap - len, "%s9.9.9.%d", i ? ", " : "", i);
    snprintf(xff + len, cap - len, ", 1.2.3.4, 10.0.0.2");
    expect_client(a, "10.0.0.1", xff, "1.2.3.4");

    /* And with thousands of client-written hops. */
    len = 0;
    for (int i = 0; i < 3000; i++)
        len +=
            (size_t)snprintf(xff + len, cap - len, "%s6.6.%d.%d", i ? ", " : "", i / 250, i % 250);
    snprintf(xff + len, cap - len, ", 1.2.3.4");
    expect_client(a, "10.0.0.1", xff, "1.2.3.4");
    free(xff);
    pbx__admit_free(a);
}
END_TEST

START_TEST(test_enter_leave)
{
    struct pbx_admit *a = pbx__admit_new(3);

    ck_assert(pbx__admit_enter(a));
    ck_assert(pbx__admit_enter(a));
    ck_assert(pbx__admit_enter(a));
    ck_assert_uint_eq(pbx__admit_active(a), 3);
    ck_assert(!pbx__admit_enter(a));
    ck_assert(!pbx__admit_enter(a));
    ck_assert_uint_eq(pbx__admit_active(a), 3);
    pbx__admit_leave(a);
    ck_assert_uint_eq(pbx__admit_active(a), 2);
    ck_assert(pbx__admit_enter(a));
    ck_assert(!pbx__admit_enter(a));
    pbx__admit_leave(a);
    pbx__admit_leave(a);
    pbx__admit_leave(a);
    ck_assert_uint_eq(pbx__admit_active(a), 0);
    ck_assert_uint_eq(pbx__admit_capacity(a), 3);
    pbx__admit_free(a);

    /* A cap of 0 admits nobody; a cap of 1 one at a time. */
    a = pbx__admit_new(0);
    ck_assert(!pbx__admit_enter(a));
    ck_assert_uint_eq(pbx__admit_active(a), 0);
    pbx__admit_free(a);
    a = pbx__admit_new(1);
    ck_assert(pbx__admit_enter(a));
    ck_assert(!pbx__admit_enter(a));
    pbx__admit_leave(a);
    ck_assert(pbx__admit_enter(a));
    pbx__admit_leave(a);
    pbx__admit_free(a);
}
END_TEST

#define RACE_THREADS 16
#define RACE_CAP     5
#define RACE_ROUNDS  20000

struct race {
    struct pbx_admit *a;       /* the admission under test */
    pthread_barrier_t start;   /* all threads start together */
    atomic_uint inside;        /* threads between enter and leave */
    atomic_uint max_inside;    /* the most ever seen */
    atomic_uint admitted;      /* successful enters */
    atomic_uint over;          /* times active() exceeded the cap */
    atomic_uint once_admitted; /* successful single enters (test_enter_once) */
};

static void *race_thread(void *arg)
{
    struct race *r = arg;

    pthread_barrier_wait(&r->start);
    for (int i = 0; i < RACE_ROUNDS; i++) {
        unsigned now;
        unsigned seen;

        if (!pbx__admit_enter(r->a)) {
            if ((i & 7) == 0)
                sched_yield();
            continue;
        }
        now = atomic_fetch_add(&r->inside, 1) + 1;
        seen = atomic_load(&r->max_inside);
        while (now > seen && !atomic_compare_exchange_weak(&r->max_inside, &seen, now))
            ;
        if (pbx__admit_active(r->a) > RACE_CAP)
            atomic_fetch_add(&r->over, 1);
        atomic_fetch_add(&r->admitted, 1);
        if ((i & 3) == 0)
            sched_yield();
        atomic_fetch_sub(&r->inside, 1);
        pbx__admit_leave(r->a);
    }
    return NULL;
}

START_TEST(test_enter_race)
{
    struct race r;
    pthread_t th[RACE_THREADS];

    memset(&r, 0, sizeof(r));
    r.a = pbx__admit_new(RACE_CAP);
    atomic_init(&r.inside, 0);
    atomic_init(&r.max_inside, 0);
    atomic_init(&r.admitted, 0);
    atomic_init(&r.over, 0);
    pthread_barrier_init(&r.start, NULL, RACE_THREADS);
    for (int i = 0; i < RACE_THREADS; i++)
        ck_assert_int_eq(pthread_create(&th[i], NULL, race_thread, &r), 0);
    for (int i = 0; i < RACE_THREADS; i++)
        pthread_join(th[i], NULL);
    ck_assert_uint_le(atomic_load(&r.max_inside), RACE_CAP);
    ck_assert_uint_ge(atomic_load(&r.max_inside), 1);
    ck_assert_uint_eq(atomic_load(&r.over), 0);
    ck_assert_uint_gt(atomic_load(&r.admitted), 0);
    ck_assert_uint_eq(pbx__admit_active(r.a), 0);
    pthread_barrier_destroy(&r.start);
    pbx__admit_free(r.a);
}
END_TEST

static void *enter_once_thread(void *arg)
{
    struct race *r = arg;

    pthread_barrier_wait(&r->start);
    if (pbx__admit_enter(r->a))
        atomic_fetch_add(&r->once_admitted, 1);
    return NULL;
}

/* N threads try once together and nobody leaves: exactly K get in. */
START_TEST(test_enter_once)
{
    struct race r;
    pthread_t th[RACE_THREADS];

    for (int round = 0; round < 50; round++) {
        memset(&r, 0, sizeof(r));
        r.a = pbx__admit_new(RACE_CAP);
        atomic_init(&r.once_admitted, 0);
        pthread_barrier_init(&r.start, NULL, RACE_THREADS);
        for (int i = 0; i < RACE_THREADS; i++)
            ck_assert_int_eq(pthread_create(&th[i], NULL, enter_once_thread, &r), 0);
        for (int i = 0; i < RACE_THREADS; i++)
            pthread_join(th[i], NULL);
        ck_assert_uint_eq(atomic_load(&r.once_admitted), RACE_CAP);
        ck_assert_uint_eq(pbx__admit_active(r.a), RACE_CAP);
        pthread_barrier_destroy(&r.start);
        pbx__admit_free(r.a);
    }
}
END_TEST

/* The queue in front of the concurrency cap. */

/* Milliseconds on CLOCK_MONOTONIC. */
static double mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

    while (nanosleep(&ts, &ts) < 0)
        ;
}

/* Poll until `n` requests wait in the queue; fails after 2 s. */
static void wait_queued(struct pbx_admit *a, unsigned n)
{
    double start = mono_ms();

    while (pbx__admit_queued(a) != n) {
        ck_assert_msg(mono_ms() - start < 2000, "queued() is %u, never %u", pbx__admit_queued(a),
                      n);
        sleep_ms(1);
    }
}

/* Grants in the order they happened, shared by the waiter threads. */
struct grants {
    pthread_mutex_t lock; /* guards the fields below */
    int order[8];         /* waiter ids, in grant order */
    int n;                /* grants so far */
};

/* One request that enters from its own thread. */
struct waiter_th {
    pthread_t th;          /* its thread */
    struct pbx_admit *a;   /* the admission under test */
    int id;                /* its place in the arrival order */
    bool leave;            /* leave() at once when granted (hands the slot on) */
    struct grants *grants; /* where to record a grant, or NULL */
    atomic_bool done;      /* enter() returned */
    bool got;              /* what enter() returned */
    double waited_ms;      /* how long enter() took */
};

static void *waiter_main(void *arg)
{
    struct waiter_th *w = arg;
    double start = mono_ms();

    w->got = pbx__admit_enter(w->a);
    w->waited_ms = mono_ms() - start;
    if (w->got && w->grants != NULL) {
        pthread_mutex_lock(&w->grants->lock);
        w->grants->order[w->grants->n++] = w->id;
        pthread_mutex_unlock(&w->grants->lock);
    }
    atomic_store(&w->done, true);
    if (w->got && w->leave)
        pbx__admit_leave(w->a);
    return NULL;
}

static void waiter_start(struct waiter_th *w, struct pbx_admit *a, int id, bool leave,
                         struct grants *grants)
{
    memset(w, 0, sizeof(*w));
    w->a = a;
    w->id = id;
    w->leave = leave;
    w->grants = grants;
    atomic_init(&w->done, false);
    ck_assert_int_eq(pthread_create(&w->th, NULL, waiter_main, w), 0);
}

static void waiter_join(struct waiter_th *w)
{
    ck_assert_int_eq(pthread_join(w->th, NULL), 0);
}

START_TEST(test_queue_waits_for_leave)
{
    struct pbx_admit *a = pbx__admit_new(1);
    struct waiter_th w;

    pbx__admit_set_queue(a, 2, 2000);
    ck_assert(pbx__admit_enter(a));
    waiter_start(&w, a, 0, false, NULL);
    wait_queued(a, 1);
    /* It stays blocked while the slot is held... */
    sleep_ms(200);
    ck_assert(!atomic_load(&w.done));
    ck_assert_uint_eq(pbx__admit_queued(a), 1);
    ck_assert_uint_eq(pbx__admit_active(a), 1);
    /* ...and gets it when it is given back. */
    pbx__admit_leave(a);
    waiter_join(&w);
    ck_assert(w.got);
    ck_assert_msg(w.waited_ms >= 190, "waited only %.0f ms", w.waited_ms);
    ck_assert_msg(w.waited_ms < 1500, "waited %.0f ms, past the leave", w.waited_ms);
    /* Handed over: still one execution, nobody waiting, no timeout. */
    ck_assert_uint_eq(pbx__admit_active(a), 1);
    ck_assert_uint_eq(pbx__admit_queued(a), 0);
    ck_assert_uint_eq(pbx__admit_queue_timeouts(a), 0);
    pbx__admit_leave(a);
    ck_assert_uint_eq(pbx__admit_active(a), 0);
    pbx__admit_free(a);
}
END_TEST

START_TEST(test_queue_in_arrival_order)
{
    for (int round = 0; round < 5; round++) {
        struct pbx_admit *a = pbx__admit_new(1);
        struct grants g = {.n = 0};
        struct waiter_th w[3];

        pthread_mutex_init(&g.lock, NULL);
        pbx__admit_set_queue(a, 3, 3000);
        ck_assert(pbx__admit_enter(a));
        /* 0, 1, 2 queue in that order: each starts once the one before waits. */
        for (int i = 0; i < 3; i++) {
            waiter_start(&w[i], a, i, true, &g);
            wait_queued(a, (unsigned)i + 1);
        }
        /* Each leaves at once, so one leave() lets all three through, one by one. */
        pbx__admit_leave(a);
        for (int i = 0; i < 3; i++)
            waiter_join(&w[i]);
        ck_assert_int_eq(g.n, 3);
        for (int i = 0; i < 3; i++) {
            ck_assert(w[i].got);
            ck_assert_msg(g.order[i] == i, "round %d: grant %d went to waiter %d", round, i,
                          g.order[i]);
        }
        ck_assert_uint_eq(pbx__admit_active(a), 0);
        ck_assert_uint_eq(pbx__admit_queued(a), 0);
        pthread_mutex_destroy(&g.lock);
        pbx__admit_free(a);
    }
}
END_TEST

START_TEST(test_queue_full_refuses_at_once)
{
    struct pbx_admit *a = pbx__admit_new(1);
    struct waiter_th w[2];
    double start;

    pbx__admit_set_queue(a, 2, 2000);
    ck_assert(pbx__admit_enter(a));
    for (int i = 0; i < 2; i++) {
        waiter_start(&w[i], a, i, false, NULL);
        wait_queued(a, (unsigned)i + 1);
    }
    /* The fourth request: the slot is busy and the queue is full. */
    start = mono_ms();
    ck_assert(!pbx__admit_enter(a));
    ck_assert_msg(mono_ms() - start < 100, "refused only after %.0f ms", mono_ms() - start);
    ck_assert_uint_eq(pbx__admit_queued(a), 2);
    ck_assert_uint_eq(pbx__admit_active(a), 1);
    /* A refusal is not a timeout. */
    ck_assert_uint_eq(pbx__admit_queue_timeouts(a), 0);
    /* The two waiters still get their turns. */
    pbx__admit_leave(a);
    waiter_join(&w[0]);
    ck_assert(w[0].got);
    ck_assert(!atomic_load(&w[1].done));
    ck_assert_uint_eq(pbx__admit_queued(a), 1);
    /* With one waiting and the slot busy again, there is room for one more. */
    pbx__admit_leave(a);
    waiter_join(&w[1]);
    ck_assert(w[1].got);
    pbx__admit_leave(a);
    ck_assert_uint_eq(pbx__admit_active(a), 0);
    pbx__admit_free(a);
}
END_TEST

START_TEST(test_queue_deadline)
{
    struct pbx_admit *a = pbx__admit_new(1);
    struct waiter_th w[2];

    pbx__admit_set_queue(a, 2, 300);
    ck_assert(pbx__admit_enter(a));
    waiter_start(&w[0], a, 0, false, NULL);
    wait_queued(a, 1);
    waiter_join(&w[0]);
    ck_assert(!w[0].got);
    ck_assert_msg(w[0].waited_ms >= 290, "gave up after %.0f ms of 300", w[0].waited_ms);
    ck_assert_msg(w[0].waited_ms < 1300, "gave up after %.0f ms of 300", w[0].waited_ms);
    ck_assert_uint_eq(pbx__admit_queue_timeouts(a), 1);
    ck_assert_uint_eq(pbx__admit_queued(a), 0);
    ck_assert_uint_eq(pbx__admit_active(a), 1);
    /* The one that gave up is out of the queue: leave() frees the slot. */
    pbx__admit_leave(a);
    ck_assert_uint_eq(pbx__admit_active(a), 0);
    ck_assert(pbx__admit_enter(a));

    /* Two waiters, the older gives up: the slot goes to the younger, within its own wait. */
    pbx__admit_set_queue(a, 2, 600);
    waiter_start(&w[0], a, 0, false, NULL);
    wait_queued(a, 1);
    sleep_ms(300);
    waiter_start(&w[1], a, 1, false, NULL);
    wait_queued(a, 2);
    waiter_join(&w[0]);
    ck_assert(!w[0].got);
    ck_assert_uint_eq(pbx__admit_queue_timeouts(a), 2);
    ck_assert_uint_eq(pbx__admit_queued(a), 1);
    ck_assert(!atomic_load(&w[1].done));
    pbx__admit_leave(a);
    waiter_join(&w[1]);
    ck_assert(w[1].got);
    ck_assert_uint_eq(pbx__admit_queue_timeouts(a), 2);
    ck_assert_uint_eq(pbx__admit_active(a), 1);
    pbx__admit_leave(a);
    ck_assert_uint_eq(pbx__admit_active(a), 0);
    pbx__admit_free(a);
}
END_TEST

START_TEST(test_queue_off)
{
    struct pbx_admit *a = pbx__admit_new(1);
    double start;

    /* No queue: full means false at once, whatever was set before. */
    pbx__admit_set_queue(a, 2, 2000);
    pbx__admit_set_queue(a, 0, 0);
    ck_assert(pbx__admit_enter(a));
    start = mono_ms();
    ck_assert(!pbx__admit_enter(a));
    ck_assert(!pbx__admit_enter(a));
    ck_assert_msg(mono_ms() - start < 100, "refused only after %.0f ms", mono_ms() - start);
    ck_assert_uint_eq(pbx__admit_queued(a), 0);
    ck_assert_uint_eq(pbx__admit_queue_timeouts(a), 0);
    /* Room in the queue but no time to wait: the same. */
    pbx__admit_set_queue(a, 2, 0);
    start = mono_ms();
    ck_assert(!pbx__admit_enter(a));
    ck_assert_msg(mono_ms() - start < 100, "refused only after %.0f ms", mono_ms() - start);
    ck_assert_uint_eq(pbx__admit_queue_timeouts(a), 0);
    pbx__admit_leave(a);
    ck_assert_uint_eq(pbx__admit_active(a), 0);
    pbx__admit_free(a);
}
END_TEST

START_TEST(test_queue_leave_without_waiters)
{
    struct pbx_admit *a = pbx__admit_new(2);

    pbx__admit_set_queue(a, 4, 1000);
    ck_assert(pbx__admit_enter(a));
    ck_assert(pbx__admit_enter(a));
    ck_assert_uint_eq(pbx__admit_active(a), 2);
    /* Nobody waits: the slot is freed, and taken again at once. */
    pbx__admit_leave(a);
    ck_assert_uint_eq(pbx__admit_active(a), 1);
    ck_assert_uint_eq(pbx__admit_queued(a), 0);
    ck_assert(pbx__admit_enter(a));
    ck_assert_uint_eq(pbx__admit_active(a), 2);
    pbx__admit_leave(a);
    pbx__admit_leave(a);
    ck_assert_uint_eq(pbx__admit_active(a), 0);
    ck_assert_uint_eq(pbx__admit_queue_timeouts(a), 0);
    pbx__admit_free(a);
}
END_TEST

#define QRACE_THREADS 8
#define QRACE_ROUNDS  2000

struct qrace {
    struct pbx_admit *a;     /* the admission under test */
    pthread_barrier_t start; /* all threads start together */
    atomic_uint inside;      /* threads between enter and leave */
    atomic_uint over;        /* times more than the cap were inside */
    atomic_uint admitted;    /* successful enters */
};

static void *qrace_thread(void *arg)
{
    struct qrace *r = arg;

    pthread_barrier_wait(&r->start);
    for (int i = 0; i < QRACE_ROUNDS; i++) {
        if (!pbx__admit_enter(r->a))
            continue;
        if (atomic_fetch_add(&r->inside, 1) + 1 > 2)
            atomic_fetch_add(&r->over, 1);
        atomic_fetch_add(&r->admitted, 1);
        if ((i & 3) == 0)
            sched_yield();
        atomic_fetch_sub(&r->inside, 1);
        pbx__admit_leave(r->a);
    }
    return NULL;
}

/* Racing threads with a queue: the cap holds, every wait is served, the count returns to 0. */
START_TEST(test_queue_race)
{
    struct qrace r;
    pthread_t th[QRACE_THREADS];

    memset(&r, 0, sizeof(r));
    r.a = pbx__admit_new(2);
    pbx__admit_set_queue(r.a, QRACE_THREADS, 5000);
    atomic_init(&r.inside, 0);
    atomic_init(&r.over, 0);
    atomic_init(&r.admitted, 0);
    pthread_barrier_init(&r.start, NULL, QRACE_THREADS);
    for (int i = 0; i < QRACE_THREADS; i++)
        ck_assert_int_eq(pthread_create(&th[i], NULL, qrace_thread, &r), 0);
    for (int i = 0; i < QRACE_THREADS; i++)
        pthread_join(th[i], NULL);
    /* The queue holds every thread, and nobody waits 5 s: all get in. */
    ck_assert_uint_eq(atomic_load(&r.admitted), QRACE_THREADS * QRACE_ROUNDS);
    ck_assert_uint_eq(atomic_load(&r.over), 0);
    ck_assert_uint_eq(pbx__admit_active(r.a), 0);
    ck_assert_uint_eq(pbx__admit_queued(r.a), 0);
    ck_assert_uint_eq(pbx__admit_queue_timeouts(r.a), 0);
    pthread_barrier_destroy(&r.start);
    pbx__admit_free(r.a);
}
END_TEST

/* Charge `client` and require the outcome, and on refusal the Retry-After. */
static void expect_rate(struct pbx_admit *a, const char *client, int64_t limit, uint64_t now,
                        bool ok, unsigned retry)
{
    unsigned got = 424242;
    bool r = pbx__admit_rate(a, client, limit, now, &got);

    ck_assert_msg(r == ok, "%s at T0%+" PRId64 " ms (limit %" PRId64 "): %s, wanted %s", client,
                  (int64_t)(now - T0), limit, r ? "admitted" : "refused",
                  ok ? "admitted" : "refused");
    if (!ok)
        ck_assert_msg(got == retry, "%s at T0%+" PRId64 " ms: Retry-After %u, wanted %u", client,
                      (int64_t)(now - T0), got, retry);
}

START_TEST(test_rate_window)
{
    struct pbx_admit *a = pbx__admit_new(1);

    expect_rate(a, "ip:1.2.3.4", 3, T0, true, 0);
    expect_rate(a, "ip:1.2.3.4", 3, T0 + 1, true, 0);
    expect_rate(a, "ip:1.2.3.4", 3, T0 + 2, true, 0);
    /* Full: Retry-After counts from the oldest charge, in whole seconds rounded up. */
    expect_rate(a, "ip:1.2.3.4", 3, T0 + 3, false, 60);
    expect_rate(a, "ip:1.2.3.4", 3, T0 + 30000, false, 30);
    expect_rate(a, "ip:1.2.3.4", 3, T0 + 30001, false, 30);
    expect_rate(a, "ip:1.2.3.4", 3, T0 + 58999, false, 2);
    expect_rate(a, "ip:1.2.3.4", 3, T0 + 59000, false, 1);
    expect_rate(a, "ip:1.2.3.4", 3, T0 + 59999, false, 1);
    /* Refusals are not charged: the oldest leaves at exactly 60 s. */
    expect_rate(a, "ip:1.2.3.4", 3, T0 + 60000, true, 0);
    /* Now T0+1 is the oldest of three again. */
    expect_rate(a, "ip:1.2.3.4", 3, T0 + 60000, false, 1);
    expect_rate(a, "ip:1.2.3.4", 3, T0 + 60001, true, 0);
    expect_rate(a, "ip:1.2.3.4", 3, T0 + 60002, true, 0);
    expect_rate(a, "ip:1.2.3.4", 3, T0 + 60003, false, 60);
    /* After a quiet minute the whole limit is available again. */
    expect_rate(a, "ip:1.2.3.4", 3, T0 + 200000, true, 0);
    expect_rate(a, "ip:1.2.3.4", 3, T0 + 200000, true, 0);
    expect_rate(a, "ip:1.2.3.4", 3, T0 + 200000, true, 0);
    expect_rate(a, "ip:1.2.3.4", 3, T0 + 200000, false, 60);
    pbx__admit_free(a);
}
END_TEST

START_TEST(test_rate_retry_oldest)
{
    struct pbx_admit *a = pbx__admit_new(1);

    expect_rate(a, "key:k", 3, T0, true, 0);
    expect_rate(a, "key:k", 3, T0 + 10000, true, 0);
    expect_rate(a, "key:k", 3, T0 + 20000, true, 0);
    expect_rate(a, "key:k", 3, T0 + 25000, false, 35);
    expect_rate(a, "key:k", 3, T0 + 60000, true, 0);
    /* Oldest is now T0+10000. */
    expect_rate(a, "key:k", 3, T0 + 60500, false, 10);
    expect_rate(a, "key:k", 3, T0 + 69999, false, 1);
    expect_rate(a, "key:k", 3, T0 + 70000, true, 0);
    expect_rate(a, "key:k", 3, T0 + 70000, false, 10);
    pbx__admit_free(a);
}
END_TEST

START_TEST(test_rate_unlimited_and_zero)
{
    struct pbx_admit *a = pbx__admit_new(1);
    unsigned retry = 7;

    for (int i = 0; i < 10000; i++)
        ck_assert(pbx__admit_rate(a, "ip:u", -1, T0, &retry));
    ck_assert(pbx__admit_rate(a, "ip:u", INT64_MIN, T0, &retry));
    ck_assert_uint_eq(retry, 7);
    /* Unlimited calls were not charged: a limit applies from scratch. */
    expect_rate(a, "ip:u", 1, T0, true, 0);
    expect_rate(a, "ip:u", 1, T0, false, 60);
    /* Unlimited ignores the window that exists. */
    ck_assert(pbx__admit_rate(a, "ip:u", -1, T0, &retry));

    /* A limit of 0 refuses everything, with a Retry-After of at most a minute. */
    for (int i = 0; i < 5; i++) {
        retry = 0;
        ck_assert(!pbx__admit_rate(a, "ip:zero", 0, T0 + (uint64_t)i * 100000, &retry));
        ck_assert_uint_ge(retry, 1);
        ck_assert_uint_le(retry, 60);
    }
    pbx__admit_free(a);
}
END_TEST

START_TEST(test_rate_clients_independent)
{
    struct pbx_admit *a = pbx__admit_new(1);

    expect_rate(a, "ip:1.1.1.1", 2, T0, true, 0);
    expect_rate(a, "ip:1.1.1.1", 2, T0 + 1000, true, 0);
    expect_rate(a, "ip:1.1.1.1", 2, T0 + 2000, false, 58);
    expect_rate(a, "ip:1.1.1.2", 2, T0 + 2000, true, 0);
    expect_rate(a, "ip:1.1.1.2", 2, T0 + 3000, true, 0);
    expect_rate(a, "ip:1.1.1.2", 2, T0 + 4000, false, 58);
    /* Names are compared whole: no prefix, case or kind confusion. */
    expect_rate(a, "ip:1.1.1.", 2, T0 + 4000, true, 0);
    expect_rate(a, "ip:1.1.1.11", 2, T0 + 4000, true, 0);
    expect_rate(a, "key:1.1.1.1", 2, T0 + 4000, true, 0);
    expect_rate(a, "IP:1.1.1.1", 2, T0 + 4000, true, 0);
    expect_rate(a, "", 2, T0 + 4000, true, 0);
    expect_rate(a, "", 2, T0 + 4000, true, 0);
    expect_rate(a, "", 2, T0 + 4000, false, 60);
    expect_rate(a, "ip:1.1.1.1", 2, T0 + 4000, false, 56);
    /* The limit is the caller's each time: a higher one admits more. */
    expect_rate(a, "ip:1.1.1.1", 3, T0 + 4000, true, 0);
    expect_rate(a, "ip:1.1.1.1", 3, T0 + 4000, false, 56);
    pbx__admit_free(a);
}
END_TEST

/* A naive model of one client's window: every admitted charge, in order. */
struct model {
    uint64_t stamps[4096]; /* admitted charge times */
    size_t n;              /* their count */
};

static bool model_rate(struct model *m, int64_t limit, uint64_t now, unsigned *retry)
{
    size_t in = 0;
    uint64_t oldest = 0;

    for (size_t i = 0; i < m->n; i++) {
        if (now - m->stamps[i] < 60000) {
            if (in == 0)
                oldest = m->stamps[i];
            in++;
        }
    }
    if ((int64_t)in < limit) {
        ck_assert_uint_lt(m->n, ARRAY_SIZE(m->stamps));
        m->stamps[m->n++] = now;
        return true;
    }
    *retry = in == 0 ? 60 : (unsigned)((oldest + 60000 - now + 999) / 1000);
    if (*retry == 0)
        *retry = 1;
    return false;
}

/* Random charges of a few clients against the model (ring growth and wrap-around). */
START_TEST(test_rate_model)
{
    static const int64_t limits[] = {1, 2, 3, 7, 8, 9, 20, 100};
    enum { NCLIENTS = 5 };
    struct pbx_admit *a = pbx__admit_new(1);
    struct model *m = xcalloc(NCLIENTS, sizeof(*m));
    uint32_t seed = 12345;
    uint64_t now = T0;
    int64_t limit = limits[_i];

    for (int step = 0; step < 3000; step++) {
        unsigned got = 0;
        unsigned want = 0;
        int c;
        char client[32];
        bool r;
        bool w;

        seed = seed * 1103515245u + 12345u;
        c = (int)((seed >> 16) % NCLIENTS);
        seed = seed * 1103515245u + 12345u;
        /* Mostly bursts, sometimes long pauses. */
        switch ((seed >> 16) % 4) {
        case 0:
            break;
        case 1:
            now += (seed >> 8) % 200;
            break;
        case 2:
            now += (seed >> 8) % 5000;
            break;
        default:
            now += (seed >> 8) % 70000;
            break;
        }
        snprintf(client, sizeof(client), "ip:10.0.0.%d", c);
        r = pbx__admit_rate(a, client, limit, now, &got);
        w = model_rate(&m[c], limit, now, &want);
        ck_assert_msg(r == w, "step %d, %s, limit %" PRId64 ": %d, model %d", step, client, limit,
                      r, w);
        if (!r)
            ck_assert_msg(got == want, "step %d: Retry-After %u, model %u", step, got, want);
    }
    free(m);
    pbx__admit_free(a);
}
END_TEST

#define MANY 5000

/* Windows idle for over a minute are dropped; recent ones are kept. */
START_TEST(test_rate_many_clients_evicted)
{
    struct pbx_admit *a = pbx__admit_new(1);
    char client[32];
    size_t base;
    size_t full;
    size_t after;

    /* The first call sweeps (nothing yet) and starts the sweep clock. */
    expect_rate(a, "ip:first", 1, T0, true, 0);
    base = heap_in_use();
    for (int i = 0; i < MANY; i++) {
        snprintf(client, sizeof(client), "ip:192.0.%d.%d", i / 256, i % 256);
        expect_rate(a, client, 1, T0 + 1000, true, 0);
    }
    full = heap_in_use();
    ck_assert_uint_gt(full, base + MANY * 32);
    /* Half a minute on, all are still limited: nothing was dropped. */
    for (int i = 0; i < MANY; i += 97) {
        snprintf(client, sizeof(client), "ip:192.0.%d.%d", i / 256, i % 256);
        expect_rate(a, client, 1, T0 + 31000, false, 30);
    }
    /* A client that stays active through the sweep. */
    expect_rate(a, "ip:busy", 1, T0 + 50000, true, 0);
    ck_assert_uint_le(heap_in_use(), full + 4096);

    /* Over a minute after their charges, the next call sweeps them away. */
    expect_rate(a, "ip:late", 1, T0 + 61001, true, 0);
    after = heap_in_use();
    ck_assert_msg(after + MANY * 32 < full, "heap %zu before the sweep, %zu after", full, after);
    /* The busy client's window survived the sweep. */
    expect_rate(a, "ip:busy", 1, T0 + 61001, false, 49);
    /* And the dropped ones start afresh. */
    for (int i = 0; i < MANY; i += 101) {
        snprintf(client, sizeof(client), "ip:192.0.%d.%d", i / 256, i % 256);
        expect_rate(a, client, 1, T0 + 61002, true, 0);
        expect_rate(a, client, 1, T0 + 61002, false, 60);
    }
    pbx__admit_free(a);
}
END_TEST

/* Threads charging one client at the same instant: exactly `limit` get through. */
#define RATE_THREADS 8
#define RATE_EACH    500
#define RATE_LIMIT   1000

struct rate_race {
    struct pbx_admit *a;     /* the admission under test */
    pthread_barrier_t start; /* all threads start together */
    atomic_uint admitted;    /* charges admitted */
};

static void *rate_thread(void *arg)
{
    struct rate_race *r = arg;
    unsigned retry;

    pthread_barrier_wait(&r->start);
    for (int i = 0; i < RATE_EACH; i++) {
        if (pbx__admit_rate(r->a, "ip:shared", RATE_LIMIT, T0, &retry))
            atomic_fetch_add(&r->admitted, 1);
    }
    return NULL;
}

START_TEST(test_rate_threads)
{
    struct rate_race r;
    pthread_t th[RATE_THREADS];

    memset(&r, 0, sizeof(r));
    r.a = pbx__admit_new(1);
    atomic_init(&r.admitted, 0);
    pthread_barrier_init(&r.start, NULL, RATE_THREADS);
    for (int i = 0; i < RATE_THREADS; i++)
        ck_assert_int_eq(pthread_create(&th[i], NULL, rate_thread, &r), 0);
    for (int i = 0; i < RATE_THREADS; i++)
        pthread_join(th[i], NULL);
    ck_assert_uint_eq(atomic_load(&r.admitted), RATE_LIMIT);
    pthread_barrier_destroy(&r.start);
    pbx__admit_free(r.a);
}
END_TEST

/*
 * The server reads the clock (CLOCK_REALTIME) before pbx__admit_rate() takes
 * its lock, on a thread per connection, so a call can arrive with a time a
 * little before the newest charge (or the clock can step back).  Then
 * `now - stamp` wraps around to a huge value and every charge in the window
 * is dropped as expired: the client is admitted over its limit.
 */
START_TEST(test_rate_clock_behind_window)
{
    struct pbx_admit *a = pbx__admit_new(1);
    unsigned retry = 0;

    /* Another client first, so no sweep runs below (see the next test). */
    expect_rate(a, "ip:other", 2, T0, true, 0);
    expect_rate(a, "ip:1.2.3.4", 2, T0 + 5001, true, 0);
    expect_rate(a, "ip:1.2.3.4", 2, T0 + 5002, true, 0);
    /* A request whose clock was read 1 ms before the oldest charge. */
    ck_assert_msg(!pbx__admit_rate(a, "ip:1.2.3.4", 2, T0 + 5000, &retry),
                  "a third request within the minute was admitted with a limit of 2");
    ck_assert_uint_ge(retry, 60);
    ck_assert_uint_le(retry, 61);
    /* And the window is still full afterwards. */
    expect_rate(a, "ip:1.2.3.4", 2, T0 + 5003, false, 60);
    pbx__admit_free(a);
}
END_TEST

/*
 * Likewise in the sweep: a call with a time before the last sweep makes
 * `now - last_sweep` and `now - w->last` wrap, so every window charged after
 * `now` (all the busy clients) is freed, and their limits start over.
 */
START_TEST(test_rate_clock_behind_sweep)
{
    struct pbx_admit *a = pbx__admit_new(1);

    expect_rate(a, "ip:1.1.1.1", 1, T0 + 5000, true, 0);
    expect_rate(a, "ip:1.1.1.1", 1, T0 + 5000, false, 60);
    /* Another client's request, with its clock read 1 ms earlier. */
    expect_rate(a, "ip:2.2.2.2", 1, T0 + 4999, true, 0);
    /* The first client is still over its limit. */
    expect_rate(a, "ip:1.1.1.1", 1, T0 + 5001, false, 60);
    pbx__admit_free(a);
}
END_TEST

static Suite *admit_suite(void)
{
    Suite *s = suite_create("admit");
    TCase *tp = tcase_create("proxies");
    TCase *tc = tcase_create("client");
    TCase *te = tcase_create("concurrency");
    TCase *tq = tcase_create("queue");
    TCase *tr = tcase_create("rate");

    tcase_add_test(tp, test_new_free);
    tcase_add_test(tp, test_add_proxy_valid);
    tcase_add_test(tp, test_add_proxy_invalid);
    tcase_add_test(tp, test_add_proxy_too_many);
    suite_add_tcase(s, tp);

    tcase_add_test(tc, test_client_untrusted_peer);
    tcase_add_test(tc, test_client_trusted_peer);
    tcase_add_test(tc, test_client_chain);
    tcase_add_test(tc, test_client_prefixes);
    tcase_add_test(tc, test_client_mapped);
    tcase_add_test(tc, test_client_no_peer);
    tcase_add_test(tc, test_client_long_chain);
    tcase_add_test(tc, test_client_spoof_past_64_hops);
    suite_add_tcase(s, tc);

    tcase_add_test(te, test_enter_leave);
    tcase_add_test(te, test_enter_race);
    tcase_add_test(te, test_enter_once);
    tcase_set_timeout(te, 60);
    suite_add_tcase(s, te);

    tcase_add_test(tq, test_queue_waits_for_leave);
    tcase_add_test(tq, test_queue_in_arrival_order);
    tcase_add_test(tq, test_queue_full_refuses_at_once);
    tcase_add_test(tq, test_queue_deadline);
    tcase_add_test(tq, test_queue_off);
    tcase_add_test(tq, test_queue_leave_without_waiters);
    tcase_add_test(tq, test_queue_race);
    tcase_set_timeout(tq, 30);
    suite_add_tcase(s, tq);

    tcase_add_test(tr, test_rate_window);
    tcase_add_test(tr, test_rate_retry_oldest);
    tcase_add_test(tr, test_rate_unlimited_and_zero);
    tcase_add_test(tr, test_rate_clients_independent);
    tcase_add_loop_test(tr, test_rate_model, 0, 8);
    tcase_add_test(tr, test_rate_many_clients_evicted);
    tcase_add_test(tr, test_rate_threads);
    tcase_add_test(tr, test_rate_clock_behind_window);
    tcase_add_test(tr, test_rate_clock_behind_sweep);
    tcase_set_timeout(tr, 60);
    suite_add_tcase(s, tr);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(admit_suite());
    int failed;

    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
