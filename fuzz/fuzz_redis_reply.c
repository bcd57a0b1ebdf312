/*
 * Fuzz target: the Redis store's handling of what Redis answers
 * (src/store/store_redis*.c, redis_conn.c and hiredis's reader under them),
 * reached through the store's own operations.  The store is opened as any
 * Redis store, with one connection; connecting is the one thing faked:
 * redisConnectWithTimeout() is wrapped at link time (-Wl,--wrap, for this
 * target alone) to give hiredis one end of a socketpair whose other end
 * holds the input's replies and then reads as closed.  So every reply is
 * read from a socket by hiredis as one from a server, and the input's end
 * is the server's hang-up: no network, no thread, nothing waits.
 *
 * The input: a first line of at most HEADER_MAX bytes naming the operations,
 * one a byte (see ops[]; any other byte picks one by its value), then the
 * replies, RESP bytes.  In the line, '!' opens the store to create (the
 * layout's version is written: one more reply), and '*' has the input
 * answer the first call's preparation (its scripts' SHA-1s and the
 * layout's version) too, which the target answers itself otherwise.  The
 * operations stop at the first that fails; an input without that line runs
 * them all, in the order of ops[].  With PYBOX_FUZZ it is a
 * libFuzzer binary; otherwise fuzz/replay.c runs it over
 * fuzz/corpus/redis_reply/.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <jansson.h>

#include "common/error.h"
#include "store/store.h"
#include "store/store_redis_internal.h"
#include "common/banned.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
redisContext *__wrap_redisConnectWithTimeout(const char *ip, int port, const struct timeval tv);

/* The longest first line, and the most replies an input may hold (a larger one is skipped). */
#define HEADER_MAX  16
#define REPLIES_MAX 32768

/* The store: one connection, and a deadline no call here comes near. */
#define URI "redis://fuzz?pool=1&timeout_ms=1000"

/* A token of the right shape for a lookup (the corpus's records may hold its hash). */
#define TOKEN "pbx_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"

/* The peer of the store's connections: what the next one is answered, and the ends kept open. */
static struct fake_peer {
    const char *replies; /* for the next connection; NULL: it reads as closed at once */
    size_t len;
    int ends[8]; /* the peer's ends, closed once the store is */
    int nends;
} peer;

redisContext *__wrap_redisConnectWithTimeout(const char *ip, int port, const struct timeval tv)
{
    redisContext *ctx;
    int sv[2];

    PBX_ASSERT(peer.nends < (int)(sizeof(peer.ends) / sizeof(peer.ends[0])));
    PBX_ASSERT(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    /* All of it fits the socket's buffer: REPLIES_MAX is well below it. */
    for (size_t off = 0; off < peer.len;) {
        ssize_t n = write(sv[1], peer.replies + off, peer.len - off);

        PBX_ASSERT(n > 0 || (n < 0 && errno == EINTR));
        off += n > 0 ? (size_t)n : 0;
    }
    PBX_ASSERT(shutdown(sv[1], SHUT_WR) == 0);
    peer.replies = NULL;
    peer.len = 0;
    peer.ends[peer.nends++] = sv[1];
    ctx = redisConnectFd(sv[0]);
    if (ctx == NULL)
        close(sv[0]);
    return ctx;
}

/* Throw away what the store sent so far, so that its commands never fill the socket. */
static void drain(void)
{
    char buf[4096];

    for (int i = 0; i < peer.nends; i++) {
        while (recv(peer.ends[i], buf, sizeof(buf), MSG_DONTWAIT) > 0)
            ;
    }
}

/* Every line of an audit tail is one JSON object, whatever Redis held. */
static void check_audit_text(const char *text)
{
    while (*text != '\0') {
        const char *nl = strchr(text, '\n');
        json_t *line;

        PBX_ASSERT(nl != NULL);
        line = json_loadb(text, (size_t)(nl - text), 0, NULL);
        PBX_ASSERT(json_is_object(line));
        json_decref(line);
        text = nl + 1;
    }
}

static void check_key(const struct pbx_key_info *k)
{
    PBX_ASSERT(k->id >= 1);
    PBX_ASSERT(k->name != NULL && k->name[0] != '\0' && strlen(k->name) <= PBX_STORE_NAME_MAX);
    PBX_ASSERT(k->prefix != NULL && strlen(k->prefix) <= PBX_STORE_PREFIX_LEN);
    PBX_ASSERT(k->policy.concurrency >= -1 && k->policy.concurrency <= PBX_STORE_CONCURRENCY_MAX);
}

static const struct pbx_store_admit admit_req = {
    .client = "203.0.113.7",
    .ticket = "t-1",
    .once = "idem-1",
    .rpm = 10,
    .rpd = 100,
    .concurrency = 2,
    .lease_ms = 30000,
};

/* One operation of the store: what it returns, its results checked and freed. */
static int run_op(struct pbx_store *store, int op, struct pbx_error **err)
{
    struct pbx_store_admission adm = {0};
    struct pbx_store_node_holder holder = {0};
    struct pbx_key_info info = {0};
    struct pbx_key_info *keys = NULL;
    char *text = NULL;
    unsigned retry_after = 0;
    int64_t count = -1;
    size_t n = 0;
    int r = 0;

    switch (op) {
    case 'c':
        r = pbx_store_key_create(store, "fuzz-key", NULL, &text, err);
        PBX_ASSERT(r < 0 || (text != NULL && strncmp(text, "pbx_", 4) == 0));
        free(text);
        break;
    case 'k':
        r = pbx_store_key_list(store, &keys, &n, err);
        PBX_ASSERT(r < 0 || n == 0 || keys != NULL);
        for (size_t i = 0; r == 0 && i < n; i++)
            check_key(&keys[i]);
        pbx_key_info_free_array(keys, n);
        break;
    case 'r':
        r = pbx_store_key_revoke(store, "fuzz-key", err);
        break;
    case 'l':
        r = pbx_store_key_lookup(store, TOKEN, &info, err);
        PBX_ASSERT(r <= 1);
        if (r == 1) {
            check_key(&info);
            PBX_ASSERT(!info.revoked);
            pbx_key_info_release(&info);
        }
        break;
    case 'q':
    case 'o':
        r = pbx_store_quota_take_once(store, "203.0.113.7", "2026-01-02", 5,
                                      op == 'o' ? "idem-1" : NULL, &count, err);
        PBX_ASSERT(r < 0 || (r <= 1 && count >= 0));
        break;
    case 'g':
        r = pbx_store_quota_get(store, "203.0.113.7", "2026-01-02", &count, err);
        PBX_ASSERT(r < 0 || count >= 0);
        break;
    case 'a':
        r = pbx_store_audit(store,
                            &(const struct pbx_audit){.time_ms = 1767312000000,
                                                      .client = "203.0.113.7",
                                                      .route = "/v1/execute",
                                                      .code_sha256 = "00",
                                                      .status = "ok",
                                                      .duration_ms = 1.5},
                            err);
        break;
    case 't':
        r = pbx_store_audit_tail(store, 8, &text, err);
        PBX_ASSERT(r < 0 || text != NULL);
        if (r == 0)
            check_audit_text(text);
        free(text);
        break;
    case 'p':
        r = pbx_store_ping(store, err);
        break;
    case 'w':
        r = pbx_store_window_hold(store, "203.0.113.7", "t-1", 10, &retry_after, err);
        PBX_ASSERT(r != 0 || (retry_after >= 1 && retry_after <= 60));
        break;
    case 'x':
        r = pbx_store_window_release(store, "203.0.113.7", "t-1", err);
        break;
    case 'A':
        r = pbx_store_admit(store, &admit_req, &adm, err);
        PBX_ASSERT(r < 0 ||
                   (adm.verdict >= PBX_STORE_ADMITTED && adm.verdict <= PBX_STORE_CONCURRENT &&
                    adm.today >= 0 && strlen(adm.day) == 10));
        PBX_ASSERT(r < 0 || adm.verdict == PBX_STORE_ADMITTED || adm.retry_after >= 1);
        break;
    case 'u':
        snprintf(adm.day, sizeof(adm.day), "2026-01-02");
        r = pbx_store_admit_undo(store, &admit_req, &adm, err);
        break;
    case 'e':
        r = pbx_store_lease_end(store, "203.0.113.7", "t-1", err);
        break;
    case 'n':
        r = pbx_store_node_claim(store, "node-1", "token-1", 10000, &holder, err);
        PBX_ASSERT(r <= 1);
        PBX_ASSERT(memchr(holder.host, '\0', sizeof(holder.host)) != NULL);
        break;
    case 'N':
        r = pbx_store_node_release(store, "node-1", "token-1", err);
        PBX_ASSERT(r <= 1);
        break;
    default:
        PBX_ASSERT(!"an operation of ops[]");
    }
    PBX_ASSERT((r < 0) == (*err != NULL));
    return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char ops[] = "ckrlqogatpwxAueNn";
    static const char sha[] = "$40\r\n0123456789abcdef0123456789abcdef01234567\r\n";
    const uint8_t *nl = memchr(data, '\n', size < HEADER_MAX + 1 ? size : HEADER_MAX + 1);
    size_t line = nl != NULL ? (size_t)(nl - data) : 0;
    const char *body = (const char *)data + (nl != NULL ? line + 1 : 0);
    size_t body_len = size - (size_t)(body - (const char *)data);
    bool create = nl != NULL && memchr(data, '!', line) != NULL;
    bool raw = nl != NULL && memchr(data, '*', line) != NULL;
    struct pbx_store *store = NULL;
    struct pbx_error *err = NULL;
    char *replies;
    size_t len = 0;

    if (body_len > REPLIES_MAX)
        return 0;
    replies = malloc(PBX_REDIS_SC_COUNT * strlen(sha) + 32 + body_len);
    PBX_ASSERT(replies != NULL);
    if (!raw) {
        for (int i = 0; i < PBX_REDIS_SC_COUNT; i++) {
            memcpy(replies + len, sha, strlen(sha));
            len += strlen(sha);
        }
        if (create) {
            memcpy(replies + len, "+OK\r\n", 5);
            len += 5;
        }
        memcpy(replies + len, "$1\r\n1\r\n", 7);
        len += 7;
    }
    if (body_len > 0)
        memcpy(replies + len, body, body_len);
    len += body_len;
    peer.replies = replies;
    peer.len = len;

    if (create)
        PBX_ASSERT(pbx_store_open(URI, &store, &err) == 0);
    else
        PBX_ASSERT(pbx_store_open_existing(URI, &store, &err) == 0);
    for (size_t i = 0; i < (nl != NULL ? line : sizeof(ops) - 1); i++) {
        int op = nl != NULL ? data[i] : ops[i];

        if (op == '!' || op == '*')
            continue;
        if (strchr(ops, op) == NULL || op == '\0')
            op = ops[(size_t)op % (sizeof(ops) - 1)];
        if (run_op(store, op, &err) < 0)
            break;
        drain();
    }
    pbx_error_free(&err);
    pbx_store_close(store);
    for (int i = 0; i < peer.nends; i++)
        close(peer.ends[i]);
    peer = (struct fake_peer){0};
    free(replies);
    return 0;
}
