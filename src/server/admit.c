/* Admission: client identity, per-minute windows, clients' leases, the concurrency cap. */
#include <arpa/inet.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "common/clock.h"
#include "common/error.h"
#include "common/log.h"
#include "common/xalloc.h"
#include "server/admit.h"
#include "store/store.h"
#include "common/banned.h"

#define WINDOW_MS 60000u
#define MAX_PROXY 32
#define NBUCKETS  1024

struct proxy {
    int family;             /* AF_INET or AF_INET6 */
    unsigned char addr[16]; /* network address */
    unsigned bits;          /* prefix length */
};

/* One client's recent requests: a ring of timestamps, oldest first. */
struct window {
    char *client;        /* owned */
    uint64_t *stamps;    /* ring of charge times (ms) */
    size_t cap;          /* ring size */
    size_t head;         /* index of the oldest */
    size_t len;          /* stamps held */
    uint64_t last;       /* newest charge, for eviction */
    unsigned held;       /* requests checked and admitted to wait, not charged yet */
    unsigned running;    /* leases held: the client's executions admitted and not ended */
    struct window *next; /* bucket chain */
};

struct pbx_admit {
    struct proxy proxies[MAX_PROXY];  /* trusted proxies */
    size_t nproxies;                  /* their count */
    atomic_uint active;               /* executions in flight (written under slot_lock) */
    unsigned capacity;                /* the cap */
    pthread_mutex_t slot_lock;        /* guards active's changes and the queue */
    struct waiter *head;              /* the queue of requests waiting for a slot, oldest first */
    struct waiter *tail;              /* its newest */
    unsigned queued;                  /* its length */
    unsigned queue_max;               /* the most that may wait; 0: refuse at once */
    unsigned queue_wait_ms;           /* how long one may wait */
    atomic_ulong queue_timeouts;      /* requests that waited their whole time in vain */
    unsigned nodes;                   /* nodes sharing the store's windows (set before serving) */
    pthread_mutex_t lock;             /* guards buckets */
    struct window *buckets[NBUCKETS]; /* rate windows by client hash */
    uint64_t last_sweep;              /* when idle windows were last dropped */
};

/* One request waiting for a slot; lives on its thread's stack. */
struct waiter {
    pthread_cond_t cond; /* signalled when granted */
    bool granted;        /* a leaving execution handed its slot over */
    struct waiter *next; /* the next newer waiter */
};

struct pbx_admit *pbx__admit_new(unsigned max_concurrency)
{
    struct pbx_admit *a = xcalloc(1, sizeof(*a));

    a->capacity = max_concurrency;
    a->nodes = 1;
    pthread_mutex_init(&a->lock, NULL);
    pthread_mutex_init(&a->slot_lock, NULL);
    return a;
}

void pbx__admit_set_queue(struct pbx_admit *a, unsigned max_waiting, unsigned wait_ms)
{
    pthread_mutex_lock(&a->slot_lock);
    a->queue_max = max_waiting;
    a->queue_wait_ms = wait_ms;
    pthread_mutex_unlock(&a->slot_lock);
}

static void window_free(struct window *w)
{
    free(w->client);
    free(w->stamps);
    free(w);
}

void pbx__admit_free(struct pbx_admit *a)
{
    if (a == NULL)
        return;
    for (size_t i = 0; i < NBUCKETS; i++) {
        while (a->buckets[i] != NULL) {
            struct window *w = a->buckets[i];

            a->buckets[i] = w->next;
            window_free(w);
        }
    }
    pthread_mutex_destroy(&a->lock);
    pthread_mutex_destroy(&a->slot_lock);
    free(a);
}

static bool parse_addr(const char *text, int *family, unsigned char *addr)
{
    if (inet_pton(AF_INET, text, addr) == 1) {
        *family = AF_INET;
        return true;
    }
    if (inet_pton(AF_INET6, text, addr) == 1) {
        *family = AF_INET6;
        return true;
    }
    return false;
}

int pbx__admit_add_proxy(struct pbx_admit *a, const char *cidr, struct pbx_error **err)
{
    char buf[64];
    char *slash;
    struct proxy p;
    unsigned max;

    if (a->nproxies == MAX_PROXY)
        return pbx_error_set(err, PBX_E_TOO_LARGE, "at most %d trusted proxies", MAX_PROXY);
    if (snprintf(buf, sizeof(buf), "%s", cidr) >= (int)sizeof(buf))
        return pbx_error_set(err, PBX_E_INVAL, "trusted proxy `%s` is not an address or CIDR",
                             cidr);
    slash = strchr(buf, '/');
    if (slash != NULL)
        *slash = '\0';
    memset(&p, 0, sizeof(p));
    if (!parse_addr(buf, &p.family, p.addr))
        return pbx_error_set(err, PBX_E_INVAL, "trusted proxy `%s` is not an address or CIDR",
                             cidr);
    max = p.family == AF_INET ? 32 : 128;
    p.bits = max;
    /* An IPv4-mapped range ("::ffff:10.0.0.1") is an IPv4 one: peers are compared so. */
    if (p.family == AF_INET6 && memcmp(p.addr, "\0\0\0\0\0\0\0\0\0\0\xff\xff", 12) == 0) {
        memmove(p.addr, p.addr + 12, 4);
        memset(p.addr + 4, 0, 12);
        p.family = AF_INET;
        max = 32;
        p.bits = 32;
        if (slash != NULL) {
            long bits = strtol(slash + 1, NULL, 10);

            if (bits < 96 || bits > 128)
                return pbx_error_set(err, PBX_E_INVAL, "trusted proxy `%s`: bad prefix length",
                                     cidr);
            p.bits = (unsigned)(bits - 96);
            slash = NULL;
        }
    }
    if (slash != NULL) {
        char *end = NULL;
        long bits = strtol(slash + 1, &end, 10);

        if (end == slash + 1 || *end != '\0' || bits < 0 || bits > (long)max)
            return pbx_error_set(err, PBX_E_INVAL, "trusted proxy `%s`: bad prefix length", cidr);
        p.bits = (unsigned)bits;
    }
    a->proxies[a->nproxies++] = p;
    return 0;
}

static bool in_prefix(const unsigned char *addr, const struct proxy *p)
{
    unsigned full = p->bits / 8;
    unsigned rest = p->bits % 8;

    if (memcmp(addr, p->addr, full) != 0)
        return false;
    if (rest == 0)
        return true;
    return ((addr[full] ^ p->addr[full]) & (unsigned char)(0xff << (8 - rest))) == 0;
}

static bool trusted(const struct pbx_admit *a, int family, const unsigned char *addr)
{
    unsigned char v4[4];

    /* An IPv4-mapped IPv6 peer matches IPv4 ranges. */
    if (family == AF_INET6 && memcmp(addr, "\0\0\0\0\0\0\0\0\0\0\xff\xff", 12) == 0) {
        memcpy(v4, addr + 12, 4);
        family = AF_INET;
        addr = v4;
    }
    for (size_t i = 0; i < a->nproxies; i++) {
        if (a->proxies[i].family == family && in_prefix(addr, &a->proxies[i]))
            return true;
    }
    return false;
}

/* The peer's family and address: false for one of neither IPv4 nor IPv6. */
static bool peer_addr(const struct sockaddr *peer, int *family, unsigned char addr[16])
{
    *family = peer ? peer->sa_family : AF_UNSPEC;
    if (*family == AF_INET)
        memcpy(addr, &((const struct sockaddr_in *)(const void *)peer)->sin_addr, 4);
    else if (*family == AF_INET6)
        memcpy(addr, &((const struct sockaddr_in6 *)(const void *)peer)->sin6_addr, 16);
    else
        return false;
    return true;
}

bool pbx__admit_from_proxy(const struct pbx_admit *a, const struct sockaddr *peer)
{
    unsigned char addr[16];
    int family;

    return peer_addr(peer, &family, addr) && trusted(a, family, addr);
}

void pbx__admit_client(const struct pbx_admit *a, const struct sockaddr *peer, const char *xff,
                       char *out, size_t outlen)
{
    unsigned char addr[16];
    int family;

    snprintf(out, outlen, "unknown");
    if (!peer_addr(peer, &family, addr))
        return;
    inet_ntop(family, addr, out, (socklen_t)outlen);
    if (xff == NULL || !trusted(a, family, addr))
        return;
    /*
     * Walk X-Forwarded-For from the right: each hop was added by the proxy
     * after it, so the first address that is not one of our proxies is the
     * client.  Anything a client wrote further left is ignored.
     */
    {
        char *copy = xstrdup(xff);

        /* From the end of the header: what a client wrote on the left never pushes it out. */
        for (;;) {
            char *comma = strrchr(copy, ',');
            char *item = comma ? comma + 1 : copy;
            unsigned char ia[16];
            size_t len;
            int ifam;

            item += strspn(item, " \t");
            len = strlen(item);
            while (len > 0 && (item[len - 1] == ' ' || item[len - 1] == '\t'))
                item[--len] = '\0';
            if (!parse_addr(item, &ifam, ia))
                break; /* malformed: keep the last good hop */
            inet_ntop(ifam, ia, out, (socklen_t)outlen);
            if (!trusted(a, ifam, ia) || comma == NULL)
                break;
            *comma = '\0';
        }
        free(copy);
    }
}

/* Take `w` out of the queue (it gave up). */
static void unqueue(struct pbx_admit *a, struct waiter *w)
{
    struct waiter **pp = &a->head;
    struct waiter *prev = NULL;

    while (*pp != NULL && *pp != w) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    if (*pp == NULL)
        return;
    *pp = w->next;
    if (a->tail == w)
        a->tail = prev;
    a->queued--;
}

bool pbx__admit_enter(struct pbx_admit *a)
{
    struct waiter w = {.granted = false, .next = NULL};
    pthread_condattr_t attr;
    struct timespec deadline;
    bool got;

    pthread_mutex_lock(&a->slot_lock);
    /* A free slot goes to the queue's head first: nobody overtakes a waiter. */
    if (a->head == NULL && atomic_load(&a->active) < a->capacity) {
        atomic_fetch_add(&a->active, 1);
        pthread_mutex_unlock(&a->slot_lock);
        return true;
    }
    if (a->queued >= a->queue_max || a->queue_wait_ms == 0) {
        pthread_mutex_unlock(&a->slot_lock);
        return false;
    }
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&w.cond, &attr);
    pthread_condattr_destroy(&attr);
    if (a->tail != NULL)
        a->tail->next = &w;
    else
        a->head = &w;
    a->tail = &w;
    a->queued++;
    pbx_clock_after(CLOCK_MONOTONIC, a->queue_wait_ms, &deadline);
    while (!w.granted) {
        if (pthread_cond_timedwait(&w.cond, &a->slot_lock, &deadline) != 0 && !w.granted)
            break;
    }
    got = w.granted;
    if (!got) {
        unqueue(a, &w);
        atomic_fetch_add(&a->queue_timeouts, 1);
    }
    pthread_mutex_unlock(&a->slot_lock);
    pthread_cond_destroy(&w.cond);
    return got;
}

void pbx__admit_leave(struct pbx_admit *a)
{
    pthread_mutex_lock(&a->slot_lock);
    if (a->head != NULL) {
        /* The slot passes straight to the oldest waiter: active stays as it is. */
        struct waiter *w = a->head;

        a->head = w->next;
        if (a->head == NULL)
            a->tail = NULL;
        a->queued--;
        w->granted = true;
        pthread_cond_signal(&w->cond);
    } else {
        atomic_fetch_sub(&a->active, 1);
    }
    pthread_mutex_unlock(&a->slot_lock);
}

unsigned pbx__admit_queued(struct pbx_admit *a)
{
    unsigned n;

    pthread_mutex_lock(&a->slot_lock);
    n = a->queued;
    pthread_mutex_unlock(&a->slot_lock);
    return n;
}

unsigned long pbx__admit_queue_timeouts(const struct pbx_admit *a)
{
    return atomic_load(&((struct pbx_admit *)a)->queue_timeouts);
}

unsigned pbx__admit_active(const struct pbx_admit *a)
{
    return atomic_load(&((struct pbx_admit *)a)->active);
}

unsigned pbx__admit_capacity(const struct pbx_admit *a)
{
    return a->capacity;
}

static size_t hash(const char *s)
{
    size_t h = 5381;

    while (*s)
        h = h * 33 + (unsigned char)*s++;
    return h % NBUCKETS;
}

/* Drop windows with nothing in the last minute (caller holds the lock). */
static void sweep(struct pbx_admit *a, uint64_t now)
{
    if (now < a->last_sweep || now - a->last_sweep < WINDOW_MS)
        return;
    a->last_sweep = now;
    for (size_t i = 0; i < NBUCKETS; i++) {
        struct window **pw = &a->buckets[i];

        while (*pw != NULL) {
            struct window *w = *pw;

            if (w->held == 0 && w->running == 0 && now > w->last && now - w->last > WINDOW_MS) {
                *pw = w->next;
                window_free(w);
            } else {
                pw = &w->next;
            }
        }
    }
}

/* The window of `client`, its stamps older than a minute dropped; NULL when it has none. */
static struct window *window_of(struct pbx_admit *a, const char *client, uint64_t now, bool create)
{
    size_t b = hash(client);
    struct window *w;

    sweep(a, now);
    for (w = a->buckets[b]; w != NULL && strcmp(w->client, client) != 0; w = w->next)
        ;
    if (w == NULL && create) {
        w = xcalloc(1, sizeof(*w));
        w->client = xstrdup(client);
        w->next = a->buckets[b];
        a->buckets[b] = w;
    }
    /* Threads read the clock before the lock: a stamp may be a little ahead of now. */
    while (w != NULL && w->len > 0 && now >= w->stamps[w->head] &&
           now - w->stamps[w->head] >= WINDOW_MS) {
        w->head = (w->head + 1) % w->cap;
        w->len--;
    }
    return w;
}

static unsigned retry_of(const struct window *w, uint64_t now)
{
    uint64_t oldest = w != NULL && w->len ? w->stamps[w->head] : now;
    uint64_t wait = oldest + WINDOW_MS > now ? oldest + WINDOW_MS - now : 0;
    unsigned r = (unsigned)((wait + 999) / 1000);

    return r ? r : 1;
}

bool pbx__admit_hold(struct pbx_admit *a, const char *client, int64_t limit, uint64_t now,
                     unsigned *retry_after, unsigned *held_before)
{
    struct window *w;
    bool ok;

    pthread_mutex_lock(&a->lock);
    w = window_of(a, client, now, true);
    ok = limit < 0 || (int64_t)(w->len + w->held) < limit;
    if (ok) {
        *held_before = w->held++;
        w->last = now;
    } else {
        *retry_after = retry_of(w, now);
    }
    pthread_mutex_unlock(&a->lock);
    return ok;
}

void pbx__admit_release(struct pbx_admit *a, const char *client, bool charge, uint64_t now)
{
    struct window *w;

    pthread_mutex_lock(&a->lock);
    w = window_of(a, client, now, true);
    if (ALWAYS(w->held > 0))
        w->held--;
    if (charge) {
        if (w->len == w->cap) {
            size_t cap = w->cap ? w->cap * 2 : 8;
            uint64_t *st = xcalloc(cap, sizeof(*st));

            for (size_t i = 0; i < w->len; i++)
                st[i] = w->stamps[(w->head + i) % w->cap];
            free(w->stamps);
            w->stamps = st;
            w->cap = cap;
            w->head = 0;
        }
        w->stamps[(w->head + w->len) % w->cap] = now;
        w->len++;
    }
    w->last = now;
    pthread_mutex_unlock(&a->lock);
}

bool pbx__admit_rate(struct pbx_admit *a, const char *client, int64_t limit, uint64_t now,
                     unsigned *retry_after)
{
    unsigned held;

    if (limit < 0)
        return true;
    if (!pbx__admit_hold(a, client, limit, now, retry_after, &held))
        return false;
    pbx__admit_release(a, client, true, now);
    return true;
}

/* ---- Windows shared through the store ---- */

void pbx__admit_set_nodes(struct pbx_admit *a, unsigned n)
{
    a->nodes = n == 0 ? 1 : n;
}

bool pbx__admit_lease(struct pbx_admit *a, const char *client, int64_t limit, uint64_t now)
{
    struct window *w;
    bool ok;

    if (limit < 0)
        return true;
    pthread_mutex_lock(&a->lock);
    w = window_of(a, client, now, true);
    ok = (int64_t)w->running < limit;
    if (ok)
        w->running++;
    w->last = now;
    pthread_mutex_unlock(&a->lock);
    return ok;
}

void pbx__admit_lease_end(struct pbx_admit *a, const char *client, uint64_t now)
{
    struct window *w;

    pthread_mutex_lock(&a->lock);
    w = window_of(a, client, now, false);
    if (ALWAYS(w != NULL && w->running > 0))
        w->running--;
    pthread_mutex_unlock(&a->lock);
}

int64_t pbx__admit_local_share(const struct pbx_admit *a, int64_t limit)
{
    int64_t share;

    if (limit <= 0)
        return limit;
    share = limit / (int64_t)a->nodes;
    return share > 0 ? share : 1;
}

bool pbx__admit_rate_shared(struct pbx_admit *a, struct pbx_store *store, const char *client,
                            int64_t limit, uint64_t now_ms, unsigned *retry_after)
{
    struct pbx_error *err = NULL;
    unsigned char raw[16];
    char ticket[33];
    int r;

    if (limit < 0)
        return true;
    if (store != NULL && pbx_store_has_windows(store)) {
        /* A place in the store's window is its charge: kept, never given back. */
        randombytes_buf(raw, sizeof(raw));
        sodium_bin2hex(ticket, sizeof(ticket), raw, sizeof(raw));
        r = pbx_store_window_hold(store, client, ticket, limit, retry_after, &err);
        if (r >= 0)
            return r == 1;
        pbx_log(PBX_LOG_ERROR,
                "rate window: %s; this node's own window applies, %" PRId64 " a minute", err->msg,
                pbx__admit_local_share(a, limit));
        pbx_error_free(&err);
        limit = pbx__admit_local_share(a, limit);
    }
    return pbx__admit_rate(a, client, limit, now_ms, retry_after);
}
