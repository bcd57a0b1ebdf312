/*
 * A node's claim on its id (pybox serve --node-id), so that two running
 * servers never serve with one id: their session ids would collide, and a
 * proxy routing by them would send one node's sessions to the other.
 *
 * The claim is the store's (pbx_store_node_claim()): a random token made
 * at each start holds the id for a TTL past its last renewal.  At start,
 * before listening:
 * - the id is free, or this token's: claimed, serve;
 * - another token holds it: that is either a server running now, which
 *   renews it every third of the TTL, or one that died (SIGKILL, a crash,
 *   the machine lost) and will never give it back.  So wait, polling, up
 *   to the TTL and a second: seen renewing, the holder is alive and this
 *   server is refused at once; its claim lapsing, the id is this one's (a
 *   `systemctl restart` after a crash starts within a TTL);
 * - the store does not answer: it cannot tell, and a node must start while
 *   Redis is down, so serve, say so, and claim the id at each renewal.
 * While serving, a thread of its own (signals blocked: they are the main
 * thread's) renews the claim every third of the TTL.  A renewal that finds
 * another holder (this node's claim lapsed while the store was out of
 * reach, and another server took the id) is logged as an error and counted
 * (pybox_node_id_conflicts_total), never an exit: the node serves on and
 * takes the id back when the other gives it up.  A clean exit gives the
 * claim back (only if it is still this token's), so the next start need
 * not wait.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "common/clock.h"
#include "common/xalloc.h"
#include "server/node_claim.h"
#include "common/banned.h"

#define TOKEN_BYTES   16  /* random bytes of a start's token: 128 bits, in hex */
#define START_POLL_MS 200 /* how often the start polls a held claim */
#define CONFLICT_LOGS 12  /* while a conflict lasts, log it every this many renewals */

enum claim_state {
    CLAIM_HELD,        /* the last claim was this server's */
    CLAIM_CONFLICT,    /* another server held the id */
    CLAIM_UNREACHABLE, /* the store did not answer */
};

struct node_claim {
    struct pbx_store *store;         /* not owned */
    const char *node;                /* the id, cfg->node_id */
    char token[2 * TOKEN_BYTES + 1]; /* this start's, in hex */
    int64_t ttl_ms;                  /* a claim's life past its renewal */
    unsigned every_ms;               /* the renewals' period: a third of the TTL */
    pthread_mutex_t lock;            /* guards stop */
    pthread_cond_t wake;             /* signalled to stop (CLOCK_MONOTONIC) */
    bool stop;                       /* the thread is to end */
    bool claimed;                    /* the start went on: the claim is to be given back */
    bool started;                    /* the thread runs */
    pthread_t thread;                /* renews */
    atomic_uint_fast64_t conflicts;  /* renewals that found another holder */
    enum claim_state state;          /* the last claim's outcome (the thread's) */
    unsigned streak;                 /* renewals in a row in that state */
};

/* "pid 123 on host x, renewed 2 s ago", from what the store knows of a holder. */
static void describe(const struct pbx_store_node_holder *h, char *out, size_t len)
{
    char who[PBX_STORE_NODE_HOST_MAX + 48];

    if (h->pid > 0 && h->host[0] != '\0')
        snprintf(who, sizeof(who), "pid %" PRId64 " on host %s", h->pid, h->host);
    else if (h->pid > 0)
        snprintf(who, sizeof(who), "pid %" PRId64, h->pid);
    else
        snprintf(who, sizeof(who), "a server the store does not name");
    snprintf(out, len, "%s, renewed %" PRId64 " s ago", who,
             h->age_ms > 0 ? (h->age_ms + 500) / 1000 : 0);
}

static int claim(struct node_claim *nc, struct pbx_store_node_holder *h, struct pbx_error **err)
{
    return pbx_store_node_claim(nc->store, nc->node, nc->token, nc->ttl_ms, h, err);
}

/* The message that refuses the start. */
static int refuse(struct node_claim *nc, const struct pbx_store_node_holder *h,
                  struct pbx_error **err)
{
    char what[PBX_STORE_NODE_HOST_MAX + 96];

    describe(h, what, sizeof(what));
    return pbx_error_set(err, PBX_E_BUSY,
                         "node id %s is held by another running server (%s); give each node its "
                         "own --node-id",
                         nc->node, what);
}

/* One renewal, and a log line when its outcome differs from the last one's. */
static void renew(struct node_claim *nc)
{
    struct pbx_store_node_holder h;
    struct pbx_error *err = NULL;
    enum claim_state was = nc->state;
    char what[PBX_STORE_NODE_HOST_MAX + 96];
    int r = claim(nc, &h, &err);

    nc->state = r == 1 ? CLAIM_HELD : r == 0 ? CLAIM_CONFLICT : CLAIM_UNREACHABLE;
    nc->streak = nc->state == was ? nc->streak + 1 : 0;
    if (r == 0) {
        atomic_fetch_add(&nc->conflicts, 1);
        if (nc->streak % CONFLICT_LOGS == 0) {
            describe(&h, what, sizeof(what));
            fprintf(stderr,
                    "pybox: ERROR: node id %s is held by another running server (%s): two "
                    "servers serve with one --node-id, so their session ids can collide; give "
                    "each node its own --node-id (this server serves on and claims the id again "
                    "every %u s)\n",
                    nc->node, what, nc->every_ms / 1000);
        }
    } else if (r < 0 && was != CLAIM_UNREACHABLE) {
        fprintf(stderr,
                "pybox: node id %s: its claim could not be renewed (%s); trying again every %u s\n",
                nc->node, err->msg, nc->every_ms / 1000);
    } else if (r == 1 && was != CLAIM_HELD) {
        fprintf(stderr, "pybox: node id %s: claimed in the store again\n", nc->node);
    }
    pbx_error_free(&err);
}

static void *renewer(void *arg)
{
    struct node_claim *nc = arg;
    struct timespec at;

    pthread_mutex_lock(&nc->lock);
    while (!nc->stop) {
        pbx_clock_after(CLOCK_MONOTONIC, nc->every_ms, &at);
        while (!nc->stop && pthread_cond_timedwait(&nc->wake, &nc->lock, &at) != ETIMEDOUT)
            ;
        if (nc->stop)
            break;
        pthread_mutex_unlock(&nc->lock);
        renew(nc);
        pthread_mutex_lock(&nc->lock);
    }
    pthread_mutex_unlock(&nc->lock);
    return NULL;
}

/*
 * The start's claim: 0 to serve (claimed, or the store cannot tell), or
 * < 0 when another running server holds the id.
 */
static int first_claim(struct node_claim *nc, struct pbx_error **err)
{
    struct pbx_store_node_holder first;
    struct pbx_store_node_holder h;
    struct pbx_error *e = NULL;
    char what[PBX_STORE_NODE_HOST_MAX + 96];
    uint64_t until;
    int r;

    r = claim(nc, &first, &e);
    if (r == 0) {
        describe(&first, what, sizeof(what));
        fprintf(stderr,
                "pybox: node id %s is held by %s; waiting up to %" PRId64 " s for that claim to "
                "lapse, in case that server is gone\n",
                nc->node, what, (nc->ttl_ms + 1000) / 1000);
        until = pbx_clock_ms(CLOCK_MONOTONIC) + (uint64_t)nc->ttl_ms + 1000;
        for (;;) {
            struct timespec nap = {.tv_sec = 0, .tv_nsec = START_POLL_MS * 1000000L};

            nanosleep(&nap, NULL);
            r = claim(nc, &h, &e);
            if (r != 0)
                break;
            /* Renewed since (or taken by yet another): a server runs with the id. */
            if (h.renewed_ms != first.renewed_ms || pbx_clock_ms(CLOCK_MONOTONIC) >= until)
                return refuse(nc, &h, err);
        }
    }
    if (r < 0) {
        nc->state = CLAIM_UNREACHABLE;
        fprintf(stderr,
                "pybox: node id %s: the store cannot tell whether another server holds it (%s); "
                "serving anyway, and claiming it every %u s\n",
                nc->node, e->msg, nc->every_ms / 1000);
        pbx_error_free(&e);
        return 0;
    }
    nc->state = CLAIM_HELD;
    fprintf(stderr,
            "pybox: node id %s claimed in the store, renewed every %u s (a claim lapses %" PRId64
            " s after its last renewal)\n",
            nc->node, nc->every_ms / 1000, nc->ttl_ms / 1000);
    return 0;
}

int pbx__node_claim_start(struct pbx_store *store, const char *node, unsigned ttl_s,
                          struct node_claim **out, struct pbx_error **err)
{
    struct node_claim *nc = xcalloc(1, sizeof(*nc));
    unsigned char raw[TOKEN_BYTES];
    pthread_condattr_t ca;
    sigset_t all, old;
    int r;

    *out = NULL;
    PBX_ASSERT(ttl_s >= 1);
    nc->store = store;
    nc->node = node;
    nc->ttl_ms = (int64_t)ttl_s * 1000;
    nc->every_ms = ttl_s * 1000 / 3;
    randombytes_buf(raw, sizeof(raw));
    sodium_bin2hex(nc->token, sizeof(nc->token), raw, sizeof(raw));
    atomic_init(&nc->conflicts, 0);
    pthread_mutex_init(&nc->lock, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&nc->wake, &ca);
    pthread_condattr_destroy(&ca);
    r = first_claim(nc, err);
    nc->claimed = r == 0;
    if (r == 0) {
        /* The thread starts with every signal blocked: they are the main thread's to take. */
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        r = pthread_create(&nc->thread, NULL, renewer, nc);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        nc->started = r == 0;
        if (r != 0)
            r = pbx_error_set(err, r, "node id %s: start the thread that renews its claim", node);
    }
    if (r < 0) {
        pbx__node_claim_free(nc);
        return r;
    }
    *out = nc;
    return 0;
}

uint64_t pbx__node_claim_conflicts(const struct node_claim *nc)
{
    return nc != NULL ? atomic_load(&nc->conflicts) : 0;
}

void pbx__node_claim_free(struct node_claim *nc)
{
    struct pbx_error *err = NULL;

    if (nc == NULL)
        return;
    if (nc->started) {
        pthread_mutex_lock(&nc->lock);
        nc->stop = true;
        pthread_cond_signal(&nc->wake);
        pthread_mutex_unlock(&nc->lock);
        pthread_join(nc->thread, NULL);
    }
    /* Given back only by the token that holds it: another server's claim stays. */
    if (nc->claimed) {
        if (pbx_store_node_release(nc->store, nc->node, nc->token, &err) < 0)
            fprintf(stderr,
                    "pybox: node id %s: its claim could not be given back (%s); it lapses "
                    "within %" PRId64 " s\n",
                    nc->node, err->msg, nc->ttl_ms / 1000);
        pbx_error_free(&err);
    }
    pthread_cond_destroy(&nc->wake);
    pthread_mutex_destroy(&nc->lock);
    free(nc);
}
