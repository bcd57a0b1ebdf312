/*
 * libpybox, local mode: the reaper that ends a local session when its idle
 * time or lifetime runs out, as the server's (src/server/session_table.c)
 * ends its own.
 *
 * Theory of operation: one thread per client, started with its first local
 * session (pbx__client_reaper_add()) and stopped by pybox_client_free()
 * (pbx__client_reaper_stop()).  It creates no process and takes no signal
 * (all blocked).  It sleeps on `reap_wake`, a condition variable of
 * CLOCK_MONOTONIC, until the nearest deadline of the client's open local
 * sessions, or without a timeout when none has one; whatever moves a
 * deadline wakes it (a call that ends, pybox_session_extend(), a session
 * added), so it never polls.  A session that a call holds has no deadline
 * for it: the idle time does not run during a call, and a lifetime that runs
 * out during one is seen when the call gives the session back.
 *
 * Ending one: under the client's reap_lock and then the session's own lock
 * (always in that order), the reaper takes the engine's session away
 * (s->ps = NULL, the reason recorded), so that every later call finds it
 * ended; then, with no lock held, it closes it with pbx_session_close(),
 * which kills the cell and waits for it and gives back its cgroup: nothing
 * of it is left when that returns.  pybox_session_close() first takes its
 * session out of the list under reap_lock, so the reaper never touches a
 * session once that has returned; the engine's session it may be closing
 * then is its own, and pybox_client_free() waits for that by joining it
 * before the engine stops.
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "client/client.h"
#include "common/clock.h"
#include "common/errtable.h"
#include "engine/session.h"
#include "common/banned.h"

void pbx__client_reaper_init(struct pybox_client *c)
{
    pthread_condattr_t ca;

    pthread_mutex_init(&c->reap_lock, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&c->reap_wake, &ca);
    pthread_condattr_destroy(&ca);
}

void pbx__client_reaper_release(struct pybox_client *c)
{
    pthread_cond_destroy(&c->reap_wake);
    pthread_mutex_destroy(&c->reap_lock);
}

const char *pbx__client_session_expired(const struct pybox_session *s, uint64_t now, uint64_t *due)
{
    uint64_t life = s->lifetime_s > 0 ? s->opened_ms + (uint64_t)s->lifetime_s * 1000 : UINT64_MAX;
    uint64_t idle =
        s->idle_ttl_s > 0 && !s->busy ? s->last_ms + (uint64_t)s->idle_ttl_s * 1000 : UINT64_MAX;

    if (due != NULL)
        *due = life < idle ? life : idle;
    /* The server's order: a lifetime run out is why, even when the idle time ran out too. */
    if (now >= life)
        return "max_lifetime";
    if (now >= idle)
        return "idle_timeout";
    return NULL;
}

/*
 * One look at the sessions (reap_lock held): the engine's session of the
 * first that has ended, taken from it (NULL when none), else the next
 * deadline in *next.
 */
static struct pbx_session *take_expired(struct pybox_client *c, uint64_t *next)
{
    uint64_t now = pbx_clock_ms(CLOCK_MONOTONIC);

    *next = UINT64_MAX;
    for (struct pybox_session *s = c->locals; s != NULL; s = s->next_local) {
        struct pbx_session *ps = NULL;
        const char *why;
        uint64_t due;

        pthread_mutex_lock(&s->lock);
        /* A call holds it: the call's end pokes us. */
        if (s->ps != NULL && !s->busy) {
            why = pbx__client_session_expired(s, now, &due);
            if (why != NULL) {
                ps = s->ps;
                s->ps = NULL;
                if (s->dead_reason == NULL)
                    s->dead_reason = strdup(why); /* NULL when out of memory: not known */
            } else if (due < *next) {
                *next = due;
            }
        }
        pthread_mutex_unlock(&s->lock);
        if (ps != NULL)
            return ps;
    }
    return NULL;
}

static void *reaper_main(void *arg)
{
    struct pybox_client *c = arg;
    sigset_t all;

    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL); /* the host's signals are not ours to take */
    pthread_mutex_lock(&c->reap_lock);
    while (!c->reaper_stop) {
        uint64_t next;
        struct pbx_session *ps = take_expired(c, &next);
        struct timespec ts;

        if (ps != NULL) {
            /* Freed with no lock held: a call on another session goes on meanwhile. */
            pthread_mutex_unlock(&c->reap_lock);
            pbx_session_close(ps);
            pthread_mutex_lock(&c->reap_lock);
            continue;
        }
        if (next == UINT64_MAX) {
            pthread_cond_wait(&c->reap_wake, &c->reap_lock);
            continue;
        }
        ts.tv_sec = (time_t)(next / 1000);
        ts.tv_nsec = (long)(next % 1000) * 1000000L;
        pthread_cond_timedwait(&c->reap_wake, &c->reap_lock, &ts);
    }
    pthread_mutex_unlock(&c->reap_lock);
    return NULL;
}

enum pybox_code pbx__client_reaper_add(struct pybox_session *s, struct pybox_error **err)
{
    struct pybox_client *c = s->client;
    int rc = 0;

    pthread_mutex_lock(&c->reap_lock);
    if (!c->reaper_started && !c->reaper_stop) {
        rc = pthread_create(&c->reaper, NULL, reaper_main, c);
        c->reaper_started = rc == 0;
    }
    if (rc == 0) {
        s->next_local = c->locals;
        c->locals = s;
        pthread_cond_broadcast(&c->reap_wake);
    }
    pthread_mutex_unlock(&c->reap_lock);
    if (rc != 0) {
        const struct pbx_errtable_row *row = pbx_errtable_get(PBX_ERRTABLE_INTERNAL_SERVER_ERROR);

        return pbx__client_fail_type(err, (enum pybox_code)row->local, row->type, 0, 0,
                                     "start the local sessions' reaper: %s", strerror(rc));
    }
    return PYBOX_OK;
}

void pbx__client_reaper_remove(struct pybox_session *s)
{
    struct pybox_client *c = s->client;

    pthread_mutex_lock(&c->reap_lock);
    for (struct pybox_session **p = &c->locals; *p != NULL; p = &(*p)->next_local) {
        if (*p == s) {
            *p = s->next_local;
            break;
        }
    }
    s->next_local = NULL;
    pthread_mutex_unlock(&c->reap_lock);
}

void pbx__client_reaper_poke(struct pybox_client *c)
{
    pthread_mutex_lock(&c->reap_lock);
    pthread_cond_broadcast(&c->reap_wake);
    pthread_mutex_unlock(&c->reap_lock);
}

void pbx__client_reaper_stop(struct pybox_client *c)
{
    bool started;

    pthread_mutex_lock(&c->reap_lock);
    c->reaper_stop = true;
    started = c->reaper_started;
    c->reaper_started = false;
    pthread_cond_broadcast(&c->reap_wake);
    pthread_mutex_unlock(&c->reap_lock);
    if (started)
        pthread_join(c->reaper, NULL);
}
