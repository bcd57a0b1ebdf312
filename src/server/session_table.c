/*
 * The sessions table of pybox serve (session_table.h says what it holds and
 * how routes hold an entry).
 *
 * Theory of operation: one list under one mutex holds every session of the
 * server, open or ended.  A session's processes are the engine's (one cell
 * per session, src/engine/session.c); this file starts none, it only
 * decides when each session ends and makes sure it is closed exactly once,
 * outside the lock, by whoever holds it last: an entry is closed only when no
 * route holds it (no call, no reader), so pbx_session_close() never races
 * anything on its session, as session.h requires.
 *
 * The reaper thread sleeps on a condition variable (CLOCK_MONOTONIC) until
 * the nearest deadline of the table: a session's idle time (from the end of
 * its last call; it does not run during a call), its lifetime (from its
 * creation; a call running then finishes first), a tombstone's end.  Every
 * change of a deadline (a call ends, a session opens, PATCH) wakes it, so it
 * never polls.  An ended session stays as a tombstone of its id, owner and
 * reason for TOMBSTONE_MS (at most TOMBSTONE_MAX of them, the oldest dropped
 * first), so that a call on it is answered 410 with the reason, not 404.
 *
 * Ids are 128 random bits from libsodium (randombytes_buf(), the kernel's
 * CSPRNG), compared in constant time: knowing the id is what lets its owner
 * in, and the owner must match too.
 */
#include <errno.h>
#include <pthread.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"
#include "common/xalloc.h"
#include "server/session_table.h"
#include "common/banned.h"

#define TOMBSTONE_MS  (15u * 60 * 1000) /* how long an ended session is remembered */
#define TOMBSTONE_MAX 4096              /* and how many at most */

struct pbx_sessions {
    pthread_mutex_t lock;     /* guards everything below and the (lock) fields of entries */
    pthread_cond_t wake;      /* the reaper's: a deadline changed, or stop */
    pthread_cond_t closed;    /* a session was closed (DELETE waits for its own) */
    struct session *list;     /* every entry, newest first */
    struct session_caps caps; /* the server's total (a caller's own cap comes with each reserve) */
    unsigned open;            /* entries open or being opened */
    unsigned tombstones;      /* entries closed */
    unsigned long created;    /* sessions opened so far */
    unsigned long ended[SESSION_WHY_COUNT]; /* sessions ended so far, by why */
    pthread_t reaper;                       /* the reaper thread, once started */
    bool started;                           /* it was started */
    bool stopping;                          /* it is to stop */
};

_Static_assert(SESSION_IDLE == PBX_SESSION_LOST + 1, "the server's reasons follow the engine's");

const char *pbx__session_table_why_name(unsigned why)
{
    switch (why) {
    case SESSION_IDLE:
        return "idle_timeout";
    case SESSION_LIFETIME:
        return "max_lifetime";
    case SESSION_DELETED:
        return "deleted";
    case SESSION_SHUTDOWN:
        return "shutdown";
    default:
        return pbx_session_end_name((enum pbx_session_end)why);
    }
}

struct pbx_sessions *pbx__session_table_new(const struct session_caps *caps)
{
    struct pbx_sessions *t = xcalloc(1, sizeof(*t));
    pthread_condattr_t ca;

    pthread_mutex_init(&t->lock, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&t->wake, &ca);
    pthread_cond_init(&t->closed, &ca);
    pthread_condattr_destroy(&ca);
    t->caps = *caps;
    return t;
}

static uint64_t now_ms(void)
{
    return pbx_clock_ms(CLOCK_MONOTONIC);
}

/* When `e`, open, is due to end: its lifetime's end, or its idle time's when no call runs. */
static uint64_t deadline_of(const struct session *e)
{
    uint64_t life = e->created_ms + (uint64_t)e->lifetime_s * 1000;
    uint64_t idle = e->last_ms + (uint64_t)e->idle_ttl_s * 1000;

    return e->busy || idle > life ? life : idle;
}

/* Routes hold `e` (a call or readers). */
static bool held(const struct session *e)
{
    return e->busy || e->readers > 0;
}

/* `e` ends as `why` (locked; nothing if it already ended). */
static void end_locked(struct pbx_sessions *t, struct session *e, unsigned why)
{
    if (e->why != SESSION_LIVE)
        return;
    e->why = why;
    e->ended_ms = now_ms();
    t->ended[why]++;
}

/*
 * Close `e` if it ended and nobody holds it (locked).  The lock is let go
 * while the engine closes it: the list may change meanwhile, `e` stays.
 * Returns whether it closed it.
 */
static bool close_locked(struct pbx_sessions *t, struct session *e)
{
    struct pbx_session *ps = e->ps;

    if (e->why == SESSION_LIVE || ps == NULL || e->closing || held(e))
        return false;
    e->closing = true;
    pthread_mutex_unlock(&t->lock);
    pbx_session_close(ps);
    pthread_mutex_lock(&t->lock);
    e->ps = NULL;
    e->closing = false;
    t->open--;
    t->tombstones++;
    pthread_cond_broadcast(&t->closed);
    return true;
}

/* Unlink and free the tombstone `e` (locked). */
static void drop_locked(struct pbx_sessions *t, struct session *e)
{
    for (struct session **p = &t->list; *p != NULL; p = &(*p)->next) {
        if (*p == e) {
            *p = e->next;
            t->tombstones--;
            free(e);
            return;
        }
    }
    PBX_ASSERT(!"a tombstone in the table");
}

/* A tombstone that may go: closed, nobody holding or waiting for it. */
static bool droppable(const struct session *e)
{
    return e->ps == NULL && !e->opening && !held(e) && e->pins == 0;
}

/* The oldest tombstones past TOMBSTONE_MAX (locked). */
static void trim_locked(struct pbx_sessions *t)
{
    while (t->tombstones > TOMBSTONE_MAX) {
        struct session *oldest = NULL;

        for (struct session *e = t->list; e != NULL; e = e->next) {
            if (droppable(e) && (oldest == NULL || e->ended_ms <= oldest->ended_ms))
                oldest = e;
        }
        if (oldest == NULL)
            return;
        drop_locked(t, oldest);
    }
}

/*
 * One pass of the reaper (locked): end what expired, close what ended and
 * nobody holds, drop old tombstones.  Returns the next deadline (UINT64_MAX
 * for none).  It starts over whenever it let go of the lock.
 */
static uint64_t reap_locked(struct pbx_sessions *t)
{
    uint64_t next;

again:
    next = UINT64_MAX;
    for (struct session *e = t->list, *nx; e != NULL; e = nx) {
        uint64_t now = now_ms();

        nx = e->next;
        if (e->opening)
            continue;
        if (e->why == SESSION_LIVE) {
            uint64_t due = deadline_of(e);

            if (now >= due)
                end_locked(t, e,
                           now >= e->created_ms + (uint64_t)e->lifetime_s * 1000 ? SESSION_LIFETIME
                                                                                 : SESSION_IDLE);
            else if (due < next)
                next = due;
        }
        if (close_locked(t, e))
            goto again;
        if (e->ps == NULL && droppable(e)) {
            if (now >= e->ended_ms + TOMBSTONE_MS)
                drop_locked(t, e);
            else if (e->ended_ms + TOMBSTONE_MS < next)
                next = e->ended_ms + TOMBSTONE_MS;
        }
    }
    trim_locked(t);
    return next;
}

static void *reaper_main(void *arg)
{
    struct pbx_sessions *t = arg;

    pthread_mutex_lock(&t->lock);
    while (!t->stopping) {
        uint64_t next = reap_locked(t);
        struct timespec ts;

        if (t->stopping)
            break;
        if (next == UINT64_MAX) {
            pthread_cond_wait(&t->wake, &t->lock);
            continue;
        }
        ts.tv_sec = (time_t)(next / 1000);
        ts.tv_nsec = (long)(next % 1000) * 1000000L;
        pthread_cond_timedwait(&t->wake, &t->lock, &ts);
    }
    pthread_mutex_unlock(&t->lock);
    return NULL;
}

int pbx__session_table_start(struct pbx_sessions *t, struct pbx_error **err)
{
    int rc = pthread_create(&t->reaper, NULL, reaper_main, t);

    if (rc != 0)
        return pbx_error_set(err, rc, "start the sessions' reaper");
    t->started = true;
    return 0;
}

void pbx__session_table_free(struct pbx_sessions *t)
{
    if (t == NULL)
        return;
    pthread_mutex_lock(&t->lock);
    t->stopping = true;
    pthread_cond_broadcast(&t->wake);
    pthread_mutex_unlock(&t->lock);
    if (t->started)
        pthread_join(t->reaper, NULL);
    pthread_mutex_lock(&t->lock);
    for (struct session *e = t->list; e != NULL; e = e->next) {
        PBX_ASSERT(!held(e) && !e->opening);
        end_locked(t, e, SESSION_SHUTDOWN);
    }
    /* Nothing else runs now: the list stays as it is while each is closed. */
    for (struct session *e = t->list; e != NULL; e = e->next)
        (void)close_locked(t, e);
    while (t->list != NULL) {
        struct session *e = t->list;

        t->list = e->next;
        free(e);
    }
    pthread_mutex_unlock(&t->lock);
    pthread_cond_destroy(&t->wake);
    pthread_cond_destroy(&t->closed);
    pthread_mutex_destroy(&t->lock);
    free(t);
}

/* Seconds from now until `due` (monotonic ms), rounded up, at least 1. */
static unsigned seconds_until(uint64_t due)
{
    uint64_t now = now_ms();

    return due <= now ? 1 : (unsigned)((due - now + 999) / 1000);
}

struct session *pbx__session_table_reserve(struct pbx_sessions *t, const char *owner,
                                           enum pbx_trust trust, unsigned cap,
                                           unsigned *retry_after, const char **whose)
{
    uint64_t first_mine = UINT64_MAX;
    uint64_t first_any = UINT64_MAX;
    unsigned mine = 0;
    struct session *e;

    pthread_mutex_lock(&t->lock);
    for (e = t->list; e != NULL; e = e->next) {
        uint64_t due;

        if (e->ps == NULL && !e->opening)
            continue;
        due = e->opening || e->why != SESSION_LIVE ? now_ms() : deadline_of(e);
        if (due < first_any)
            first_any = due;
        if (strcmp(e->owner, owner) == 0) {
            mine++;
            if (due < first_mine)
                first_mine = due;
        }
    }
    if (mine >= cap || t->open >= t->caps.total) {
        bool caller = mine >= cap;

        pthread_mutex_unlock(&t->lock);
        *retry_after = seconds_until(caller ? first_mine : first_any);
        *whose = caller ? "the caller" : "the server";
        return NULL;
    }
    e = xcalloc(1, sizeof(*e));
    pbx__id_make("ses", t->caps.node, e->id, sizeof(e->id));
    snprintf(e->owner, sizeof(e->owner), "%s", owner);
    e->trust = trust;
    e->opening = true;
    e->created_ms = now_ms();
    e->last_ms = e->created_ms;
    e->next = t->list;
    t->list = e;
    t->open++;
    pthread_mutex_unlock(&t->lock);
    return e;
}

void pbx__session_table_opened(struct pbx_sessions *t, struct session *e, struct pbx_session *ps,
                               const struct pbx_limits *limits, uint32_t idle_ttl_s,
                               uint32_t lifetime_s)
{
    pthread_mutex_lock(&t->lock);
    PBX_ASSERT(e->opening);
    if (ps == NULL) {
        for (struct session **p = &t->list; *p != NULL; p = &(*p)->next) {
            if (*p == e) {
                *p = e->next;
                break;
            }
        }
        t->open--;
        pthread_mutex_unlock(&t->lock);
        free(e);
        return;
    }
    e->ps = ps;
    e->limits = *limits;
    e->idle_ttl_s = idle_ttl_s;
    e->lifetime_s = lifetime_s;
    /* Its spans run from now, once it is ready. */
    e->created_ms = now_ms();
    e->last_ms = e->created_ms;
    e->readers = 1;
    e->opening = false;
    t->created++;
    pthread_cond_broadcast(&t->wake);
    pthread_mutex_unlock(&t->lock);
}

int pbx__session_table_take(struct pbx_sessions *t, const char *id, const char *owner,
                            enum session_take how, struct session **out)
{
    size_t len = strlen(id);
    struct session *found = NULL;
    int rc;

    if (len > SESSION_ID_LEN)
        return -PBX_E_NOTFOUND;
    pthread_mutex_lock(&t->lock);
    for (struct session *e = t->list; e != NULL; e = e->next) {
        if (strlen(e->id) == len && sodium_memcmp(e->id, id, len) == 0) {
            found = e;
            break;
        }
    }
    if (found == NULL || found->opening || strcmp(found->owner, owner) != 0) {
        rc = -PBX_E_NOTFOUND;
    } else if (found->why != SESSION_LIVE) {
        found->readers++;
        *out = found;
        rc = -PBX_E_GONE;
    } else if (how == SESSION_CALL && found->busy) {
        rc = -PBX_E_BUSY;
    } else {
        if (how == SESSION_CALL)
            found->busy = true;
        else
            found->readers++;
        *out = found;
        rc = 0;
        /* A call stops the idle clock: the reaper's deadline moved. */
        if (how == SESSION_CALL)
            pthread_cond_broadcast(&t->wake);
    }
    pthread_mutex_unlock(&t->lock);
    return rc;
}

void pbx__session_table_put(struct pbx_sessions *t, struct session *e, enum session_take how,
                            uint64_t calls)
{
    pthread_mutex_lock(&t->lock);
    if (how == SESSION_CALL) {
        PBX_ASSERT(e->busy);
        e->busy = false;
        e->last_ms = now_ms();
        if (calls > e->calls)
            e->calls = calls;
    } else {
        PBX_ASSERT(e->readers > 0);
        e->readers--;
    }
    (void)close_locked(t, e);
    pthread_cond_broadcast(&t->wake);
    pthread_mutex_unlock(&t->lock);
}

void pbx__session_table_downgrade(struct pbx_sessions *t, struct session *e)
{
    pthread_mutex_lock(&t->lock);
    PBX_ASSERT(e->busy);
    e->busy = false;
    e->readers++;
    e->last_ms = now_ms();
    pthread_cond_broadcast(&t->wake);
    pthread_mutex_unlock(&t->lock);
}

void pbx__session_table_end(struct pbx_sessions *t, struct session *e, unsigned why)
{
    pthread_mutex_lock(&t->lock);
    end_locked(t, e, why);
    pthread_mutex_unlock(&t->lock);
}

unsigned pbx__session_table_why(struct pbx_sessions *t, struct session *e)
{
    unsigned why;

    pthread_mutex_lock(&t->lock);
    why = e->why;
    pthread_mutex_unlock(&t->lock);
    return why;
}

void pbx__session_table_delete(struct pbx_sessions *t, struct session *e)
{
    pthread_mutex_lock(&t->lock);
    end_locked(t, e, SESSION_DELETED);
    /* A reader may interrupt: nothing closes the session while it is held. */
    if (e->busy && e->ps != NULL && !e->closing)
        pbx_session_interrupt(e->ps);
    e->pins++;
    e->readers--;
    (void)close_locked(t, e);
    while (e->ps != NULL)
        pthread_cond_wait(&t->closed, &t->lock);
    e->pins--;
    pthread_cond_broadcast(&t->wake);
    pthread_mutex_unlock(&t->lock);
}

bool pbx__session_table_interrupt(struct pbx_sessions *t, struct session *e)
{
    struct pbx_session *ps;
    bool busy;

    pthread_mutex_lock(&t->lock);
    ps = e->ps;
    busy = e->busy && !e->closing;
    pthread_mutex_unlock(&t->lock);
    /* Held as a reader: nothing closes it meanwhile. */
    return busy && ps != NULL && pbx_session_interrupt(ps);
}

/* Unix time (ms) of the monotonic time `mono`. */
static uint64_t wall_of(uint64_t mono)
{
    return pbx_clock_ms(CLOCK_REALTIME) - now_ms() + mono;
}

void pbx__session_table_view(struct pbx_sessions *t, struct session *e, struct session_view *v)
{
    struct pbx_session_state st = {0};
    struct pbx_session *ps;

    pthread_mutex_lock(&t->lock);
    ps = e->why == SESSION_LIVE && !e->closing ? e->ps : NULL;
    pthread_mutex_unlock(&t->lock);
    /* Held: not closed meanwhile. */
    if (ps != NULL) {
        pbx_session_state(ps, &st);
        if (st.ended != PBX_SESSION_ALIVE)
            pbx__session_table_end(t, e, st.ended);
    }
    memset(v, 0, sizeof(*v));
    pthread_mutex_lock(&t->lock);
    if (st.execution_count > e->calls)
        e->calls = st.execution_count;
    memcpy(v->id, e->id, sizeof(v->id));
    v->status = e->why != SESSION_LIVE ? "dead" : e->busy ? "busy" : "idle";
    v->reason = e->why != SESSION_LIVE ? pbx__session_table_why_name(e->why) : NULL;
    v->created_ms = wall_of(e->created_ms);
    v->expires_ms = wall_of(e->created_ms + (uint64_t)e->lifetime_s * 1000);
    if (!e->busy && e->why == SESSION_LIVE)
        v->idle_expires_ms = wall_of(e->last_ms + (uint64_t)e->idle_ttl_s * 1000);
    v->ended_ms = e->why != SESSION_LIVE ? wall_of(e->ended_ms) : 0;
    v->idle_ttl_s = e->idle_ttl_s;
    v->lifetime_s = e->lifetime_s;
    v->execution_count = e->calls;
    v->memory_bytes = e->why == SESSION_LIVE ? st.memory_bytes : 0;
    v->limits = &e->limits;
    pthread_mutex_unlock(&t->lock);
}

int pbx__session_table_set_spans(struct pbx_sessions *t, struct session *e, uint32_t idle_ttl_s,
                                 uint32_t lifetime_s, struct pbx_error **err)
{
    uint64_t age;

    pthread_mutex_lock(&t->lock);
    age = now_ms() - e->created_ms;
    if ((uint64_t)lifetime_s * 1000 <= age) {
        pthread_mutex_unlock(&t->lock);
        return pbx_error_set(err, PBX_E_INVAL,
                             "`max_lifetime_s` %u has passed: the session is %llu s old",
                             (unsigned)lifetime_s, (unsigned long long)(age / 1000));
    }
    e->idle_ttl_s = idle_ttl_s;
    e->lifetime_s = lifetime_s;
    pthread_cond_broadcast(&t->wake);
    pthread_mutex_unlock(&t->lock);
    return 0;
}

void pbx__session_table_list(struct pbx_sessions *t, const char *owner, struct session ***out,
                             size_t *n)
{
    size_t count = 0;
    size_t i = 0;

    pthread_mutex_lock(&t->lock);
    for (struct session *e = t->list; e != NULL; e = e->next)
        count += !e->opening && strcmp(e->owner, owner) == 0;
    *out = xcalloc(count ? count : 1, sizeof(**out));
    for (struct session *e = t->list; e != NULL; e = e->next) {
        if (!e->opening && strcmp(e->owner, owner) == 0) {
            e->readers++;
            (*out)[i++] = e;
        }
    }
    *n = i;
    pthread_mutex_unlock(&t->lock);
}

void pbx__session_table_stats(struct pbx_sessions *t, struct session_stats *st)
{
    pthread_mutex_lock(&t->lock);
    st->open = t->open;
    st->created = t->created;
    memcpy(st->ended, t->ended, sizeof(st->ended));
    pthread_mutex_unlock(&t->lock);
}
