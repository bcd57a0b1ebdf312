/*
 * Calls to a Redis server for the Redis store (redis_conn.c): the URI's
 * server, a pool of connections, one deadline a call, the backoff after a
 * failure, one command with its retry rules, and the checks of a reply's
 * type.  What the commands mean is the Redis store's (store_redis*.c).
 */
#ifndef PBX_STORE_REDIS_CONN_H
#define PBX_STORE_REDIS_CONN_H

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <hiredis/hiredis.h>

#include "common/error.h"

struct pbx_redis_call;

struct pbx_redis_conn {
    pthread_mutex_t lock;  /* held by the call using ctx */
    redisContext *ctx;     /* NULL until connected, and after a failure */
    unsigned gen;          /* the pool's generation it was made in */
    size_t reply_elements; /* array elements the reply being read declared so far */
    bool reply_too_large;  /* it declared more than the most: the connection failed */
};

struct pbx_redis_pool {
    char *shown; /* the URI without its password, for messages (owned) */
    char *host;  /* (owned) */
    int port;
    int db;
    char *user;     /* or NULL (owned) */
    char *password; /* or NULL (owned, wiped at release) */
    int timeout_ms; /* each call's deadline */
    size_t nconns;
    struct pbx_redis_conn *conns;
    atomic_uint next; /* where the search for a free connection starts */

    /*
     * What a new store does once, on the first connection that answers (its
     * scripts, its layout's version): 0, or < 0 with *err and call->rc.
     * Until it succeeds every call runs it first.  NULL: nothing.
     */
    int (*prepare)(struct pbx_redis_call *call, void *arg, struct pbx_error **err);
    void *prepare_arg;
    pthread_mutex_t prepare_lock; /* held while one call prepares */
    atomic_bool prepared;         /* prepare succeeded (release: what it wrote is seen) */

    pthread_mutex_t state; /* guards what follows */
    unsigned gen;          /* bumped by every failure: older connections are dropped */
    int backoff_ms;        /* 0 while healthy */
    struct timespec retry_at;
    int last_code;
    char last_msg[256];
};

/* One call's hold on a connection, and its deadline. */
struct pbx_redis_call {
    struct pbx_redis_pool *pool;
    struct pbx_redis_conn *c;
    struct timespec deadline; /* CLOCK_MONOTONIC */
    sigset_t oldmask;
    bool pipe_pending; /* SIGPIPE was pending before the call */
    int rc;            /* the return of the call's last error */
    bool reused;       /* its connection was open before the call */
    bool may_retry;    /* the command is idempotent: it may go again on a new connection */
};

/*
 * Read "redis://[[USER]:PASSWORD@]HOST[:PORT][/DB][?timeout_ms=N&pool=N]"
 * into `pool` and make its connections, none connected yet: 0, or
 * PBX_E_INVAL for a malformed URI.  Release with
 * pbx__redis_conn_pool_release() either way.
 */
int pbx__redis_conn_pool_init(struct pbx_redis_pool *pool, const char *uri,
                              int (*prepare)(struct pbx_redis_call *call, void *arg,
                                             struct pbx_error **err),
                              void *prepare_arg, struct pbx_error **err);
void pbx__redis_conn_pool_release(struct pbx_redis_pool *pool);

/*
 * Begin a call: a connection of the pool, connected and prepared, within
 * the deadline; `may_retry` when its commands only read (or change nothing
 * when run twice).  < 0 with *err (and nothing held) when the pool is in
 * its backoff, no connection is free in time or connecting fails.  End it
 * with pbx__redis_conn_end(), or pbx__redis_conn_end_drop() after a reply
 * that does not fit (the connection cannot be trusted further).
 */
int pbx__redis_conn_begin(struct pbx_redis_pool *pool, struct pbx_redis_call *call, bool may_retry,
                          struct pbx_error **err);
void pbx__redis_conn_end(struct pbx_redis_call *call);
void pbx__redis_conn_end_drop(struct pbx_redis_call *call);

/* End a call whose command failed: its error's return (call->rc). */
int pbx__redis_conn_end_failed(struct pbx_redis_call *call);

/* End a call whose reply does not fit `what`: PBX_E_PROTO, the connection dropped. */
int pbx__redis_conn_end_malformed(struct pbx_redis_call *call, const char *what,
                                  struct pbx_error **err);

/* The server answered as it should: the backoff ends. */
void pbx__redis_conn_ok(struct pbx_redis_pool *pool);

/*
 * One command (`lens` NULL: NUL-terminated strings): its reply, or NULL
 * (and the connection dropped) on failure.  An error reply comes back as
 * one.  A command of a call that may retry whose kept connection turns out
 * closed goes once more on a new one, within the same deadline; any other
 * is never sent twice.
 */
redisReply *pbx__redis_conn_send(struct pbx_redis_call *call, int argc, const char **argv,
                                 const size_t *lens, const char *what, struct pbx_error **err);

/* Like pbx__redis_conn_send(), but an error reply is an error; NULL either way. */
redisReply *pbx__redis_conn_command(struct pbx_redis_call *call, int argc, const char **argv,
                                    const char *what, struct pbx_error **err);

/* Pipelining: queue a command, then read its reply (NULL with *err on failure). */
int pbx__redis_conn_append(struct pbx_redis_call *call, int argc, const char **argv,
                           const char *what, struct pbx_error **err);
redisReply *pbx__redis_conn_get_reply(struct pbx_redis_call *call, const char *what,
                                      struct pbx_error **err);

/* A reply that is not what the protocol says: PBX_E_PROTO (call->rc). */
int pbx__redis_conn_malformed(struct pbx_redis_call *call, const char *what,
                              struct pbx_error **err);

/* An error reply: the command failed, the connection is fine (call->rc). */
int pbx__redis_conn_reply_error(struct pbx_redis_call *call, const redisReply *reply,
                                const char *what, struct pbx_error **err);

/* A bulk string of at most `max` bytes and no NUL. */
bool pbx__redis_conn_is_text(const redisReply *r, size_t max);

/* A decimal int64 in a bulk string, nothing else. */
bool pbx__redis_conn_parse_i64(const redisReply *r, int64_t *out);

/* A finite double in a bulk string, nothing else. */
bool pbx__redis_conn_parse_double(const redisReply *r, double *out);

void pbx__redis_conn_free_reply(redisReply **r);
#define cleanup_reply __attribute__((cleanup(pbx__redis_conn_free_reply)))

#endif
