/*
 * Admission: who the client is (the peer, or X-Forwarded-For from a trusted
 * proxy), per-minute rate windows (in memory), and the concurrency cap.
 * Daily quotas live in the store.  Thread-safe.
 */
#ifndef PBX_SERVER_ADMIT_H
#define PBX_SERVER_ADMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "common/error.h"

struct pbx_admit;

struct pbx_admit *pbx__admit_new(unsigned max_concurrency);
void pbx__admit_free(struct pbx_admit *a);

/* Add a trusted proxy range ("10.0.0.0/8", "::1/128", "127.0.0.1"). */
int pbx__admit_add_proxy(struct pbx_admit *a, const char *cidr, struct pbx_error **err);

/*
 * The client's address as text in `out` (at least 64 bytes): the peer, or,
 * when the peer is a trusted proxy, the right-most address of `xff` that is
 * not itself a trusted proxy.  A header from anyone else changes nothing.
 */
void pbx__admit_client(const struct pbx_admit *a, const struct sockaddr *peer, const char *xff,
                       char *out, size_t outlen);

/* Whether `peer` is one of the trusted proxies (whose X-Request-Id the server adopts). */
bool pbx__admit_from_proxy(const struct pbx_admit *a, const struct sockaddr *peer);

/*
 * When every slot is busy, up to `max_waiting` requests wait for one, in
 * order of arrival, for at most `wait_ms` each (0 and 0: refuse at once).
 * Defaults: no queue.
 */
void pbx__admit_set_queue(struct pbx_admit *a, unsigned max_waiting, unsigned wait_ms);

/*
 * Take an execution slot: at once when one is free and nobody waits;
 * otherwise wait in the queue (when there is room in it) until a leaving
 * execution hands its slot over.  False when the queue is full or the wait
 * ran out: the caller answers 503.
 */
bool pbx__admit_enter(struct pbx_admit *a);
/* Give the slot back, or hand it to the oldest waiter. */
void pbx__admit_leave(struct pbx_admit *a);
/* Requests waiting now, and those whose wait ran out so far. */
unsigned pbx__admit_queued(struct pbx_admit *a);
unsigned long pbx__admit_queue_timeouts(const struct pbx_admit *a);
unsigned pbx__admit_active(const struct pbx_admit *a);
unsigned pbx__admit_capacity(const struct pbx_admit *a);

/*
 * The per-minute window of `client`, as a reservation: a request is held
 * (checked, not charged) before it may take a slot or a place in the queue,
 * and counts against the window while it waits, so a burst of one client's
 * requests cannot fill the queue with requests that will be refused.  True
 * when the window (stamps of the last 60 s and requests held) is below
 * `limit` (< 0: unlimited): the request is held, and *held_before says how
 * many of the client's were held before it (for the daily quota, which
 * counts them too).  False with *retry_after (seconds) until a stamp leaves
 * the window.
 */
bool pbx__admit_hold(struct pbx_admit *a, const char *client, int64_t limit, uint64_t now_ms,
                     unsigned *retry_after, unsigned *held_before);

/* End a hold: charged (a stamp in the window) when the request was admitted, or not. */
void pbx__admit_release(struct pbx_admit *a, const char *client, bool charge, uint64_t now_ms);

/*
 * A lease of this server's own: true (and one more of `client`'s executions
 * counted as running) when fewer than `limit` (< 0: no limit, nothing
 * counted) run; end it with pbx__admit_lease_end().  For a store without
 * shared leases, or one that fails.
 */
bool pbx__admit_lease(struct pbx_admit *a, const char *client, int64_t limit, uint64_t now_ms);
void pbx__admit_lease_end(struct pbx_admit *a, const char *client, uint64_t now_ms);

/* Hold and charge at once: true when `client` had room in its window, and is charged. */
bool pbx__admit_rate(struct pbx_admit *a, const char *client, int64_t limit, uint64_t now_ms,
                     unsigned *retry_after);

/*
 * The servers sharing the store (pybox serve --nodes, PYBOX_NODES; 1 by
 * default), set before serving: while the store's shared windows fail,
 * this server's own window allows 1/N of a limit (at least 1).
 */
void pbx__admit_set_nodes(struct pbx_admit *a, unsigned nodes);

/* This server's share of a shared `limit` while the store fails: 1/N, at least 1 (< 1 kept). */
int64_t pbx__admit_local_share(const struct pbx_admit *a, int64_t limit);

struct pbx_store;

/*
 * pbx__admit_rate() through the store's window shared by every server when
 * the store keeps one (Redis), else the server's own (as for SQLite); when
 * the store fails, the server's own with the limit divided by the nodes.
 * (An execution's admission charges its window with its quota and lease
 * together: execute.c.)
 */
bool pbx__admit_rate_shared(struct pbx_admit *a, struct pbx_store *store, const char *client,
                            int64_t limit, uint64_t now_ms, unsigned *retry_after);

#endif
