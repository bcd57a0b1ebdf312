/*
 * The sessions of pybox serve (session_table.c): each open session of the
 * engine (src/engine/session.h) under an unguessable id, bound to the
 * caller that made it, with its idle time and lifetime; the caps on how many
 * may be open; the reaper thread that ends the expired ones; and, for a
 * while after a session ended, its tombstone, so that a call on it is told
 * why it ended rather than that it never was.  The routes are sessions.c's.
 *
 * A route takes an entry (pbx__session_table_take()) and gives it back
 * (pbx__session_table_put()): as a reader (the state, an interrupt) or for a
 * call (an execution, a restart, a file), one call at a time.  A session is
 * closed (pbx_session_close(): its processes, mounts, cgroups and files
 * gone) by whoever holds it last once it has ended: the reaper when it
 * expired idle, the route that ends it or finds it dead, the call during
 * which it died.  Thread-safe.
 */
#ifndef PBX_SERVER_SESSION_TABLE_H
#define PBX_SERVER_SESSION_TABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/session.h"
#include "policy/limits.h"
#include "server/ids.h"
#include "server/server.h"

/* Why a session of the server ended: the engine's reasons, then the server's own. */
enum session_why {
    SESSION_LIVE = PBX_SESSION_ALIVE, /* it has not */
    /* PBX_SESSION_CLOSED .. PBX_SESSION_LOST: what the engine said */
    SESSION_IDLE = PBX_SESSION_LOST + 1, /* idle longer than its idle time */
    SESSION_LIFETIME,                    /* older than its lifetime */
    SESSION_DELETED,                     /* DELETE /v1/sessions/{id} */
    SESSION_SHUTDOWN,                    /* the server stopped */
    SESSION_WHY_COUNT,
};

/* "idle_timeout", "max_lifetime", "deleted", "shutdown", or the engine's name. */
const char *pbx__session_table_why_name(unsigned why);

#define SESSION_ID_LEN PBX_ID_MAX /* the longest: "ses_", the node's id, "_", 32 hex digits */

/* One session, or its tombstone; the (lock) fields are read and written under the table's lock. */
struct session {
    char id[SESSION_ID_LEN + 1]; /* made by pbx__id_make() (ids.h) */
    char owner[320];             /* whose: "key:NAME", "admin" or "ip:ADDRESS" */
    enum pbx_trust trust;        /* the engine it runs on */
    struct pbx_limits limits;    /* its limits (each call's time limits by default) */
    struct pbx_session *ps;      /* (lock) the engine's session; NULL once closed */
    unsigned why;                /* (lock) enum session_why: SESSION_LIVE, or why it ended */
    bool opening;                /* (lock) being opened: counted, not yet found */
    bool busy;                   /* (lock) a call holds it */
    unsigned readers;            /* (lock) routes reading it */
    unsigned pins;               /* (lock) routes waiting for it to close: the entry stays */
    bool closing;                /* (lock) pbx_session_close() runs */
    uint64_t created_ms;         /* CLOCK_MONOTONIC */
    uint64_t last_ms;            /* (lock) the end of its last call, or its creation */
    uint64_t ended_ms;           /* (lock) when it ended, or 0 */
    uint32_t idle_ttl_s;         /* (lock) idle time allowed after a call */
    uint32_t lifetime_s;         /* (lock) lifetime allowed from its creation */
    uint64_t calls;              /* (lock) its execution count, as its last call said */
    struct session *next;        /* (lock) the table's list */
};

/* What a session is, as its answers show it. */
struct session_view {
    char id[SESSION_ID_LEN + 1];     /* the session */
    const char *status;              /* "idle", "busy" or "dead" */
    const char *reason;              /* why it ended (static text), or NULL */
    uint64_t created_ms;             /* Unix time, ms */
    uint64_t expires_ms;             /* when its lifetime ends */
    uint64_t idle_expires_ms;        /* when its idle time ends, or 0 while a call runs */
    uint64_t ended_ms;               /* when it ended, or 0 */
    uint32_t idle_ttl_s;             /* its idle time */
    uint32_t lifetime_s;             /* its lifetime */
    uint64_t execution_count;        /* calls run */
    uint64_t memory_bytes;           /* memory in use now */
    const struct pbx_limits *limits; /* its limits (the entry's: valid while it is held) */
};

/*
 * What the server allows, from its configuration.  A caller's own cap is its
 * policy's (pbx_caller_resolve(): its key's, or the server's per key or per
 * client) and comes with each reservation.
 */
struct session_caps {
    unsigned total;   /* open sessions of the whole server */
    const char *node; /* the node's id, in each session's (NULL: none) */
};

struct pbx_sessions;

/* An empty table; its reaper starts with pbx__session_table_start(). */
struct pbx_sessions *pbx__session_table_new(const struct session_caps *caps);

/* Start the reaper thread. 0, or < 0 with *err. */
int pbx__session_table_start(struct pbx_sessions *t, struct pbx_error **err);

/*
 * Stop the reaper, close every session (ending them as SESSION_SHUTDOWN)
 * and free the table.  No route may hold an entry.  NULL is fine.
 */
void pbx__session_table_free(struct pbx_sessions *t);

/*
 * Room for a new session of `owner` (at most `cap` of its open, the cap of
 * its caller's policy, and the server's total): an entry being opened, counted against both, that
 * no lookup finds, with a new id.  NULL when there is no room, with *retry_after (seconds until the
 * first session in the way expires at the latest) and *whose ("the caller" or "the server").
 */
struct session *pbx__session_table_reserve(struct pbx_sessions *t, const char *owner,
                                           enum pbx_trust trust, unsigned cap,
                                           unsigned *retry_after, const char **whose);

/*
 * The reserved entry `e` opened as `ps` (taken over), with `limits` and its
 * spans: found from now on, held by the caller as a reader; or, `ps` NULL,
 * not opened: gone.
 */
void pbx__session_table_opened(struct pbx_sessions *t, struct session *e, struct pbx_session *ps,
                               const struct pbx_limits *limits, uint32_t idle_ttl_s,
                               uint32_t lifetime_s);

/* How a route takes a session. */
enum session_take {
    SESSION_READ, /* to read its state, to interrupt it, to end it: any time */
    SESSION_CALL, /* for a call: one at a time */
};

/*
 * The session `id` of `owner`, taken `how`: 0 with *out; -PBX_E_NOTFOUND
 * when `owner` has none of that id (whoever else may); -PBX_E_GONE when it
 * ended (a tombstone), with *out still set and taken as a reader, so its
 * reason can be read; -PBX_E_BUSY for a call while another runs.
 */
int pbx__session_table_take(struct pbx_sessions *t, const char *id, const char *owner,
                            enum session_take how, struct session **out);

/*
 * Give back what pbx__session_table_take() (or _opened()) gave.  `how` as it
 * was taken; after a call, `calls` is the session's execution count now.
 * The last to give back an ended session closes it.
 */
void pbx__session_table_put(struct pbx_sessions *t, struct session *e, enum session_take how,
                            uint64_t calls);

/* The call that holds `e` is over: `e` is held as a reader from now on (to be given back so). */
void pbx__session_table_downgrade(struct pbx_sessions *t, struct session *e);

/*
 * End the held session `e` (nothing if it already ended): `why` is kept; it
 * is closed when the last holder gives it back.
 */
void pbx__session_table_end(struct pbx_sessions *t, struct session *e, unsigned why);

/* Why the held session `e` ended: SESSION_LIVE while it lives. */
unsigned pbx__session_table_why(struct pbx_sessions *t, struct session *e);

/*
 * DELETE: end the session `e`, taken as a reader, as SESSION_DELETED,
 * interrupt its call if one runs, give it back, and wait until it is closed.
 */
void pbx__session_table_delete(struct pbx_sessions *t, struct session *e);

/* Raise KeyboardInterrupt in the call running in the held session `e`; false when none runs. */
bool pbx__session_table_interrupt(struct pbx_sessions *t, struct session *e);

/*
 * The held session `e` as its answers show it (the engine's state read, and
 * the session ended at once when the engine says it has).
 */
void pbx__session_table_view(struct pbx_sessions *t, struct session *e, struct session_view *v);

/*
 * Set the spans of the held session `e`.  0, or < 0 with *err
 * (PBX_E_INVAL: a lifetime that has already passed).
 */
int pbx__session_table_set_spans(struct pbx_sessions *t, struct session *e, uint32_t idle_ttl_s,
                                 uint32_t lifetime_s, struct pbx_error **err);

/*
 * Every session of `owner`, tombstones too, each taken as a reader: *out
 * (malloc'd, the caller frees after giving each back), *n.
 */
void pbx__session_table_list(struct pbx_sessions *t, const char *owner, struct session ***out,
                             size_t *n);

/* The counters of /metrics. */
struct session_stats {
    unsigned long open;                     /* sessions open now */
    unsigned long created;                  /* opened so far */
    unsigned long ended[SESSION_WHY_COUNT]; /* ended so far, by why */
};

void pbx__session_table_stats(struct pbx_sessions *t, struct session_stats *st);

#endif
