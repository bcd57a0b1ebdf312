/*
 * The connection watchdog.  libmicrohttpd's timeout is an idle timeout: a
 * client that sends one byte every few seconds holds its connection (and
 * its thread) forever.  Each connection here has a deadline instead: its
 * request must arrive whole, and its answer must leave, within
 * request_deadline_s; an idle keep-alive connection's next request counts
 * from the end of the last one.  While an execution runs the connection has
 * no deadline (the engine bounds it).  A thread cuts connections past their
 * deadline with shutdown(2), which ends the connection thread's blocking
 * read or write; libmicrohttpd then closes it as any connection the client
 * dropped.  A connection is unlinked (under the lock) before libmicrohttpd
 * closes its socket, so a number reused for a new socket is never cut.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/socket.h>

#include "common/clock.h"
#include "common/xalloc.h"
#include "server/internal.h"
#include "common/banned.h"

struct conn {
    int fd;               /* the socket */
    uint64_t deadline_ms; /* cut after this; UINT64_MAX while executing */
    bool cut;             /* shut down already */
    struct conn *prev;    /* the watch's list */
    struct conn *next;
};

struct watch {
    pthread_mutex_t lock; /* guards everything below */
    pthread_cond_t wake;  /* signalled to stop */
    struct conn *head;    /* connections open now */
    bool stop;            /* the thread must end */
    pthread_t thread;     /* the watchdog */
    uint64_t span_ms;     /* request_deadline_s */
    atomic_ulong *drops;  /* connections cut, for the metrics */
};

static void *watch_main(void *arg)
{
    struct watch *w = arg;

    pthread_mutex_lock(&w->lock);
    while (!w->stop) {
        uint64_t now = pbx_clock_ms(CLOCK_MONOTONIC);
        struct timespec until;

        for (struct conn *c = w->head; c != NULL; c = c->next) {
            if (!c->cut && now >= c->deadline_ms) {
                shutdown(c->fd, SHUT_RDWR);
                c->cut = true;
                atomic_fetch_add(w->drops, 1);
            }
        }
        pbx_clock_after(CLOCK_MONOTONIC, 250, &until);
        pthread_cond_timedwait(&w->wake, &w->lock, &until);
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

int pbx__watch_start(struct pbx_server *s, unsigned span_s, struct pbx_error **err)
{
    struct watch *w = xcalloc(1, sizeof(*w));
    pthread_condattr_t attr;

    pthread_mutex_init(&w->lock, NULL);
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&w->wake, &attr);
    pthread_condattr_destroy(&attr);
    w->span_ms = (uint64_t)span_s * 1000u;
    w->drops = &s->metrics.deadline_drops;
    if (pthread_create(&w->thread, NULL, watch_main, w) != 0) {
        free(w);
        return pbx_error_set(err, EAGAIN, "start the connection watchdog");
    }
    s->watch = w;
    return 0;
}

void pbx__watch_stop(struct pbx_server *s)
{
    struct watch *w = s->watch;

    if (w == NULL)
        return;
    pthread_mutex_lock(&w->lock);
    w->stop = true;
    pthread_cond_signal(&w->wake);
    pthread_mutex_unlock(&w->lock);
    pthread_join(w->thread, NULL);
    pthread_mutex_destroy(&w->lock);
    pthread_cond_destroy(&w->wake);
    free(w);
    s->watch = NULL;
}

void pbx__watch_on_connection(void *cls, struct MHD_Connection *c, void **socket_ctx,
                              enum MHD_ConnectionNotificationCode code)
{
    struct pbx_server *s = cls;
    struct watch *w = s->watch;
    struct conn *cn = *socket_ctx;

    if (w == NULL)
        return;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);

        if (ci == NULL)
            return;
        cn = xcalloc(1, sizeof(*cn));
        cn->fd = ci->connect_fd;
        cn->deadline_ms = pbx_clock_ms(CLOCK_MONOTONIC) + w->span_ms;
        pthread_mutex_lock(&w->lock);
        cn->next = w->head;
        if (w->head != NULL)
            w->head->prev = cn;
        w->head = cn;
        pthread_mutex_unlock(&w->lock);
        *socket_ctx = cn;
        return;
    }
    if (cn == NULL)
        return;
    pthread_mutex_lock(&w->lock);
    if (cn->prev != NULL)
        cn->prev->next = cn->next;
    else
        w->head = cn->next;
    if (cn->next != NULL)
        cn->next->prev = cn->prev;
    pthread_mutex_unlock(&w->lock);
    free(cn);
    *socket_ctx = NULL;
}

void pbx__watch_deadline(struct pbx_server *s, struct MHD_Connection *c, bool none)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    struct watch *w = s->watch;
    struct conn *cn;

    if (w == NULL || ci == NULL || ci->socket_context == NULL)
        return;
    cn = ci->socket_context;
    pthread_mutex_lock(&w->lock);
    cn->deadline_ms = none ? UINT64_MAX : pbx_clock_ms(CLOCK_MONOTONIC) + w->span_ms;
    pthread_mutex_unlock(&w->lock);
}
