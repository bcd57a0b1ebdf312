/*
 * An answer as Server-Sent Events (text/event-stream), fed by a worker
 * thread: what POST /v1/execute with `Accept: text/event-stream` answers
 * (execute.c), and any endpoint that streams the same way.
 *
 * Theory of operation.  pbx__stream_start() queues a 200 response of
 * unknown length (chunked) whose content reader, reader(), takes events from
 * a bounded queue, and starts a worker thread that runs the endpoint's work
 * (an execution, whose engine callbacks feed the queue as output arrives),
 * then its done function, then queues `error` and `end`.
 *
 *   connection thread  libmicrohttpd's, one per connection: reader() may
 *                      block there.  It waits with poll() on `notify` and on
 *                      the client's socket (POLLRDHUP: the client closed its
 *                      side or reset), with a timeout for the coalesced
 *                      text's flush and the keepalive comment (after 5 s of
 *                      silence, or half of client_timeout_s when shorter:
 *                      libmicrohttpd drops a connection idle that long);
 *   worker thread      work() (the engine calls on_output and on_display on
 *                      it), done(), the last events;
 *   notify             an eventfd the worker writes when it queues an event,
 *                      starts pending text, or ends: the reader's wake-up;
 *   cancel             an eventfd written once the client is gone: the
 *                      execution's cancel_fd, so the engine kills it.
 *
 * Memory: the queue holds at most QUEUE_BYTES and one more event; the
 * worker waits for room (the engine then stops reading the cell's pipes and
 * the code blocks on its writes: backpressure, never a growing buffer).  An
 * event is bounded by the engine's caps (stdout, stderr, each output) and
 * `end` by the answer's reserve in the memory budget.  A client that takes
 * nothing for client_timeout_s while the queue is full is dropped, as
 * libmicrohttpd drops one that stalls.
 *
 * The connection's request deadline (watch.c) is lifted while the work runs,
 * as for an execution (the engine bounds it); once the work is over what is
 * left must leave within the deadline, as any answer.
 *
 * The end: libmicrohttpd ends the request (pbx__http_on_completed() frees
 * its request_ctx) and then frees the response, which calls free_stream().
 * There the work is cancelled if it is still running, the worker joined,
 * the descriptors closed and the request's share of the memory budget
 * (taken over from its request_ctx at the start, so that it outlives it)
 * given back: the same whether the client stayed to `end` or left.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/utf8.h"
#include "common/xalloc.h"
#include "server/internal.h"
#include "common/banned.h"

#define QUEUE_BYTES  (64u << 10) /* events queued before the worker waits (and one more) */
#define TEXT_BYTES   4096        /* stdout or stderr coalesced into one event, at most */
#define TEXT_MS      20          /* and for at most this long */
#define KEEPALIVE_MS 5000        /* a comment after this long without a byte sent, at most */
#define BLOCK_BYTES  16384       /* the reader's block, as libmicrohttpd is told */

/* One event as sent: head, data, "\n\n"; or a comment (head only). */
struct event {
    struct event *next; /* the queue's next */
    char head[48];      /* "event: NAME\ndata: ", or the comment line with its blank line */
    size_t head_len;    /* its bytes */
    char *data;         /* the JSON text, one line (owned), or NULL for a comment */
    size_t data_len;    /* its bytes */
    size_t len;         /* all the event's bytes */
};

/* One streamed answer: from pbx__stream_start() to free_stream(). */
struct stream {
    struct pbx_server *s;      /* the server */
    struct MHD_Connection *c;  /* the connection answered */
    int sock;                  /* its socket (libmicrohttpd's), watched for the client leaving */
    int notify;                /* eventfd: the worker's word to the reader */
    int cancel;                /* eventfd: readable once the client is gone */
    pbx_stream_work_fn work;   /* the work */
    pbx_stream_done_fn done;   /* what gives back what it held */
    void *arg;                 /* theirs */
    pthread_t thread;          /* the worker */
    bool threaded;             /* the worker was started (to join) */
    bool bare;                 /* no `start` and no `end`: the work sends every event */
    size_t held;               /* the request's share of the memory budget, taken over */
    unsigned stall_ms;         /* the worker waits this long for room, at most (0: no limit) */
    unsigned keepalive_ms;     /* a comment after this long without a byte sent */
    pthread_mutex_t lock;      /* guards what follows */
    pthread_cond_t room;       /* the reader took an event, or the client left */
    struct event *head;        /* the queue: its first event */
    struct event *tail;        /* its last */
    size_t queued;             /* its bytes */
    enum pbx_stream text_of;   /* whose text is pending (0: none) */
    char text[TEXT_BYTES + 4]; /* the pending text (a character held back first) */
    size_t text_len;           /* its bytes */
    uint64_t text_since;       /* when it is due: its start, or TEXT_MS before (see below) */
    uint64_t text_sent;        /* when text was last queued as an event, monotonic ms */
    char carry[3][4];          /* by enum pbx_stream: a character's start held back */
    size_t carry_len[3];       /* its bytes (0 to 3) */
    bool over;                 /* the work is over: `end` is queued */
    bool gone;                 /* the client is gone (or stalled): events are dropped */
    /* The reader's own, on the connection thread. */
    struct event *sending; /* the event being sent */
    size_t sent;           /* its bytes given to libmicrohttpd */
    uint64_t quiet_since;  /* when bytes were last given, monotonic ms */
    bool lifted;           /* the connection's deadline is lifted */
    bool relaxed;          /* and restarted, the work over */
};

/* ---- events ---- */

/* The event `name` with `data` (`len` bytes, one line, taken over). */
static struct event *event_new(const char *name, char *data, size_t len)
{
    struct event *ev = xcalloc(1, sizeof(*ev));
    int n = snprintf(ev->head, sizeof(ev->head), "event: %s\ndata: ", name);

    /* A name is the caller's constant; a line break in it would forge other fields. */
    PBX_ASSERT(n > 0 && (size_t)n < sizeof(ev->head) && name[strcspn(name, "\r\n")] == '\0');
    ev->head_len = (size_t)n;
    ev->data = data;
    ev->data_len = len;
    ev->len = ev->head_len + len + 2;
    return ev;
}

/*
 * The event `name` with `data` (borrowed) as compact JSON: one line, since
 * every control character in a JSON string is escaped.
 */
static struct event *event_of(const char *name, const json_t *data)
{
    char *text = json_dumps(data, PBX_JSON_FLAGS);

    if (text == NULL) {
        /* Every string the server holds is checked UTF-8: only a bug of pybox's lands here. */
        pbx_log(PBX_LOG_ERROR, "stream: the `%s` event could not be encoded as JSON", name);
        text = xstrdup("{}");
    }
    PBX_ASSERT(strchr(text, '\n') == NULL && strchr(text, '\r') == NULL);
    return event_new(name, text, strlen(text));
}

static struct event *comment_new(const char *text)
{
    struct event *ev = xcalloc(1, sizeof(*ev));
    int n = snprintf(ev->head, sizeof(ev->head), ": %s\n\n", text);

    PBX_ASSERT(n > 0 && (size_t)n < sizeof(ev->head));
    ev->head_len = ev->len = (size_t)n;
    return ev;
}

static void event_free(struct event *ev)
{
    if (ev == NULL)
        return;
    free(ev->data);
    free(ev);
}

/* Copy the event's bytes from `off` into buf (at most `max`); returns how many. */
static size_t event_copy(const struct event *ev, size_t off, char *buf, size_t max)
{
    const char *seg[3] = {ev->head, ev->data, "\n\n"};
    size_t seglen[3] = {ev->head_len, ev->data_len, ev->data != NULL ? 2 : 0};
    size_t n = 0;

    for (int i = 0; i < 3 && n < max; i++) {
        size_t k;

        if (off >= seglen[i]) {
            off -= seglen[i];
            continue;
        }
        k = seglen[i] - off < max - n ? seglen[i] - off : max - n;
        memcpy(buf + n, seg[i] + off, k);
        n += k;
        off = 0;
    }
    return n;
}

/* ---- the queue (under the lock) ---- */

static void wake(struct stream *st)
{
    uint64_t one = 1;

    /* Nonblocking: a counter that cannot take more has woken the reader already. */
    (void)!write(st->notify, &one, sizeof(one));
}

/* The client is gone: cancel the work, drop events from now on, wake whoever waits. */
static void leave_locked(struct stream *st)
{
    uint64_t one = 1;

    if (st->gone)
        return;
    st->gone = true;
    (void)!write(st->cancel, &one, sizeof(one));
    pthread_cond_broadcast(&st->room);
    wake(st);
}

/*
 * Queue `ev` (taken over).  With `wait`, while the queue is full, wait for
 * the reader to take from it: for at most stall_ms each time, after which
 * the client counts as gone.  Dropped when the client is gone.
 */
static void push_locked(struct stream *st, struct event *ev, bool wait)
{
    while (wait && !st->gone && st->queued > 0 && st->queued + ev->len > QUEUE_BYTES) {
        struct timespec until;

        if (st->stall_ms == 0) {
            pthread_cond_wait(&st->room, &st->lock);
            continue;
        }
        pbx_clock_after(CLOCK_MONOTONIC, st->stall_ms, &until);
        if (pthread_cond_timedwait(&st->room, &st->lock, &until) == ETIMEDOUT && st->queued > 0 &&
            st->queued + ev->len > QUEUE_BYTES) {
            pbx_log(PBX_LOG_INFO, "stream: the client took nothing for %u ms; dropped",
                    st->stall_ms);
            leave_locked(st);
        }
    }
    if (st->gone) {
        event_free(ev);
        return;
    }
    if (st->tail != NULL)
        st->tail->next = ev;
    else
        st->head = ev;
    st->tail = ev;
    st->queued += ev->len;
    wake(st);
}

static struct event *pop_locked(struct stream *st)
{
    struct event *ev = st->head;

    if (ev == NULL)
        return NULL;
    st->head = ev->next;
    if (st->head == NULL)
        st->tail = NULL;
    st->queued -= ev->len;
    ev->next = NULL;
    pthread_cond_broadcast(&st->room);
    return ev;
}

/* ---- stdout and stderr, coalesced ---- */

static struct event *text_event(enum pbx_stream which, const char *p, size_t n)
{
    json_t *text = json_stringn(p, n);
    json_t *data;
    struct event *ev;

    if (text == NULL) {
        size_t fixed_len;
        char *fixed = pbx_utf8_sanitize(p, n, &fixed_len);

        text = json_stringn(fixed, fixed_len);
        free(fixed);
    }
    data = json_pack("{s:o}", "text", text ? text : json_string(""));
    ev = event_of(which == PBX_STREAM_STDERR ? "stderr" : "stdout", data);
    json_decref(data);
    return ev;
}

/*
 * Send the pending text as an event, holding back the start of a character
 * cut at its end (all of it with `all`).  The pending text is empty before
 * the event is queued, so that nobody sends it twice while the worker waits.
 */
static void flush_text_locked(struct stream *st, bool all, bool wait)
{
    enum pbx_stream which = st->text_of;
    size_t keep;
    size_t n;

    if (which == 0)
        return;
    keep = all ? 0 : pbx_utf8_partial_tail(st->text, st->text_len);
    n = st->text_len - keep;
    memcpy(st->carry[which], st->text + n, keep);
    st->carry_len[which] = keep;
    st->text_of = 0;
    st->text_len = 0;
    st->text_sent = pbx_clock_ms(CLOCK_MONOTONIC);
    if (n > 0)
        push_locked(st, text_event(which, st->text, n), wait);
}

/* The work is over: the pending text, then what each stream held back. */
static void flush_all_locked(struct stream *st)
{
    flush_text_locked(st, true, true);
    for (int i = PBX_STREAM_STDOUT; i <= PBX_STREAM_STDERR; i++) {
        if (st->carry_len[i] > 0) {
            size_t n = st->carry_len[i];

            st->carry_len[i] = 0;
            push_locked(st, text_event((enum pbx_stream)i, st->carry[i], n), true);
        }
    }
}

void pbx__stream_on_output(enum pbx_stream which, const char *data, size_t len, void *arg)
{
    struct stream *st = arg;

    PBX_ASSERT(which == PBX_STREAM_STDOUT || which == PBX_STREAM_STDERR);
    pthread_mutex_lock(&st->lock);
    /* Output of the other stream came first: it goes first. */
    if (st->text_of != 0 && st->text_of != which)
        flush_text_locked(st, false, true);
    while (len > 0 && !st->gone) {
        size_t n;

        if (st->text_of == 0) {
            st->text_of = which;
            memcpy(st->text, st->carry[which], st->carry_len[which]);
            st->text_len = st->carry_len[which];
            st->carry_len[which] = 0;
            /*
             * Text after a quiet spell goes out at once; text within TEXT_MS
             * of the last event waits out the rest of that window, so a
             * flood makes one event per TEXT_MS, and a lone print no delay.
             */
            st->text_since = pbx_clock_ms(CLOCK_MONOTONIC);
            if (st->text_since >= st->text_sent + TEXT_MS)
                st->text_since -= TEXT_MS;
            else
                st->text_since = st->text_sent;
            wake(st); /* the reader times the flush from text_since */
        }
        n = TEXT_BYTES - st->text_len < len ? TEXT_BYTES - st->text_len : len;
        memcpy(st->text + st->text_len, data, n);
        st->text_len += n;
        data += n;
        len -= n;
        if (st->text_len >= TEXT_BYTES)
            flush_text_locked(st, false, true);
    }
    pthread_mutex_unlock(&st->lock);
}

/* ---- events from the work ---- */

/* Queue `ev` (taken over) after the pending text. */
static void send_event(struct stream *st, struct event *ev)
{
    pthread_mutex_lock(&st->lock);
    flush_text_locked(st, false, true);
    push_locked(st, ev, true);
    pthread_mutex_unlock(&st->lock);
}

void pbx__stream_event(struct stream *st, const char *name, json_t *data)
{
    struct event *ev = event_of(name, data);

    json_decref(data);
    send_event(st, ev);
}

void pbx__stream_text(struct stream *st, const char *name, const char *json, size_t len)
{
    /* Compact JSON is one line: a line break would end the event's data early. */
    PBX_ASSERT(memchr(json, '\n', len) == NULL && memchr(json, '\r', len) == NULL);
    send_event(st, event_new(name, xmemdup(json, len), len));
}

void pbx__stream_on_display(const json_t *output, void *arg)
{
    const char *type = json_string_value(json_object_get(output, "type"));

    send_event(
        arg, event_of(type != NULL && strcmp(type, "result") == 0 ? "result" : "display", output));
}

int pbx__stream_cancel_fd(const struct stream *st)
{
    return st->cancel;
}

bool pbx__stream_gone(struct stream *st)
{
    bool gone;

    pthread_mutex_lock(&st->lock);
    gone = st->gone;
    pthread_mutex_unlock(&st->lock);
    return gone;
}

/* The worker: the work, done, then `error` (when the end has one) and `end`. */
static void *worker(void *arg)
{
    struct stream *st = arg;
    json_t *end = st->work(st, st->arg);
    json_t *error = json_object_get(end, "error");
    struct event *error_ev = json_is_object(error) && !st->bare ? event_of("error", error) : NULL;
    struct event *end_ev = NULL;

    if (end == NULL)
        end = json_object();
    if (!st->bare)
        end_ev = event_of("end", end);
    json_decref(end);
    st->done(st->arg);
    pthread_mutex_lock(&st->lock);
    flush_all_locked(st);
    if (error_ev != NULL)
        push_locked(st, error_ev, true);
    if (end_ev != NULL)
        push_locked(st, end_ev, true);
    st->over = true;
    wake(st);
    pthread_mutex_unlock(&st->lock);
    return NULL;
}

/* ---- the connection's side ---- */

/*
 * Wait up to `timeout` ms for the worker's word or the client leaving.
 * Returns false when the client is gone.
 */
static bool wait_for_news(struct stream *st, int timeout)
{
    struct pollfd p[2] = {
        {.fd = st->notify, .events = POLLIN},
        {.fd = st->sock, .events = POLLRDHUP},
    };
    uint64_t count;

    if (poll(p, st->sock >= 0 ? 2 : 1, timeout) <= 0)
        return true;
    if (p[0].revents & POLLIN)
        (void)!read(st->notify, &count, sizeof(count));
    return st->sock < 0 || (p[1].revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) == 0;
}

/*
 * libmicrohttpd's content reader: the next bytes of the stream, blocking
 * until there are some (on the connection's own thread), at least every
 * keepalive_ms.  The end of the stream once the work is over and all of it
 * sent; an error (the connection closed) once the client is gone.
 */
static ssize_t reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct stream *st = cls;

    (void)pos;
    if (!st->lifted) {
        pbx__watch_deadline(st->s, st->c, true);
        st->lifted = true;
    }
    for (;;) {
        uint64_t now = pbx_clock_ms(CLOCK_MONOTONIC);
        uint64_t until = st->quiet_since + st->keepalive_ms;
        bool over;
        bool gone;

        pthread_mutex_lock(&st->lock);
        if (st->sending == NULL && st->head == NULL && st->text_of != 0 &&
            now >= st->text_since + TEXT_MS)
            flush_text_locked(st, false, false);
        if (st->sending == NULL) {
            st->sending = pop_locked(st);
            st->sent = 0;
        }
        if (st->text_of != 0 && st->text_since + TEXT_MS < until)
            until = st->text_since + TEXT_MS;
        over = st->over;
        gone = st->gone;
        pthread_mutex_unlock(&st->lock);
        if (gone)
            return MHD_CONTENT_READER_END_WITH_ERROR;
        if (over && !st->relaxed) {
            pbx__watch_deadline(st->s, st->c, false);
            st->relaxed = true;
        }
        if (st->sending == NULL && over)
            return MHD_CONTENT_READER_END_OF_STREAM;
        if (st->sending == NULL && now >= st->quiet_since + st->keepalive_ms) {
            st->sending = comment_new("keepalive");
            st->sent = 0;
        }
        if (st->sending != NULL && max > 0) {
            size_t n = event_copy(st->sending, st->sent, buf, max);

            st->sent += n;
            if (st->sent == st->sending->len) {
                event_free(st->sending);
                st->sending = NULL;
            }
            st->quiet_since = now;
            return (ssize_t)n;
        }
        if (!wait_for_news(st, until > now ? (int)(until - now) : 0)) {
            pthread_mutex_lock(&st->lock);
            leave_locked(st);
            pthread_mutex_unlock(&st->lock);
        }
    }
}

/*
 * libmicrohttpd's free callback for the response: the connection is done
 * with the stream, or it never started.  A work still running is cancelled
 * and waited for.
 */
static void free_stream(void *cls)
{
    struct stream *st = cls;

    pthread_mutex_lock(&st->lock);
    if (!st->over)
        leave_locked(st);
    pthread_mutex_unlock(&st->lock);
    if (st->threaded)
        pthread_join(st->thread, NULL);
    event_free(st->sending);
    while (st->head != NULL)
        event_free(pop_locked(st));
    close(st->notify);
    close(st->cancel);
    pthread_cond_destroy(&st->room);
    pthread_mutex_destroy(&st->lock);
    /* As pbx__server_budget_release() gives back a request's share. */
    atomic_fetch_sub(&st->s->budget_used, st->held);
    free(st);
}

static int start_stream(struct pbx_server *s, struct MHD_Connection *c, struct request_ctx *ctx,
                        bool bare, json_t *start, pbx_stream_work_fn work, pbx_stream_done_fn done,
                        void *arg, enum MHD_Result *ret, struct pbx_error **err)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    struct stream *st;
    struct MHD_Response *r;
    pthread_condattr_t attr;
    int notify = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    int cancel = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    int rc;

    if (notify < 0 || cancel < 0) {
        rc = errno;
        if (notify >= 0)
            close(notify);
        if (cancel >= 0)
            close(cancel);
        json_decref(start);
        return pbx_error_set(err, rc, "create the stream's eventfds");
    }
    st = xcalloc(1, sizeof(*st));
    st->s = s;
    st->c = c;
    st->sock = ci != NULL ? ci->connect_fd : -1;
    st->notify = notify;
    st->cancel = cancel;
    st->work = work;
    st->done = done;
    st->arg = arg;
    st->bare = bare;
    st->stall_ms = s->cfg->client_timeout_s * 1000u;
    /*
     * libmicrohttpd drops a connection idle for client_timeout_s, counted
     * from the last byte sent, and judges it when the reader returns: the
     * reader returns within half of it.
     */
    st->keepalive_ms = KEEPALIVE_MS;
    if (s->cfg->client_timeout_s > 0 && s->cfg->client_timeout_s * 500u < KEEPALIVE_MS)
        st->keepalive_ms = s->cfg->client_timeout_s * 500u;
    st->quiet_since = pbx_clock_ms(CLOCK_MONOTONIC);
    pthread_mutex_init(&st->lock, NULL);
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&st->room, &attr);
    pthread_condattr_destroy(&attr);
    if (!bare) {
        if (start == NULL)
            start = json_object();
        json_object_set_new(start, "request_id", json_string(ctx->id));
        st->head = st->tail = event_of("start", start);
        st->queued = st->head->len;
        json_decref(start);
    }

    r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, BLOCK_BYTES, reader, st, free_stream);
    if (r == NULL) {
        free_stream(st);
        return pbx_error_set(err, ENOMEM, "create the stream's response");
    }
    rc = pthread_create(&st->thread, NULL, worker, st);
    if (rc != 0) {
        MHD_destroy_response(r); /* frees the stream */
        return pbx_error_set(err, rc, "start the stream's thread");
    }
    st->threaded = true;
    st->held = ctx->held;
    ctx->held = 0;
    MHD_add_response_header(r, "Content-Type", "text/event-stream");
    MHD_add_response_header(r, "Cache-Control", "no-cache");
    MHD_add_response_header(r, "X-Accel-Buffering", "no");
    pbx__http_add_headers(r, c, ctx, s);
    *ret = MHD_queue_response(c, 200, r);
    /* Unqueued, the response goes now and cancels the work; queued, at the stream's end. */
    MHD_destroy_response(r);
    if (*ret == MHD_YES) {
        ctx->answered = true;
        ctx->status = 200;
    }
    return 0;
}

int pbx__stream_start(struct pbx_server *s, struct MHD_Connection *c, struct request_ctx *ctx,
                      json_t *start, pbx_stream_work_fn work, pbx_stream_done_fn done, void *arg,
                      enum MHD_Result *ret, struct pbx_error **err)
{
    return start_stream(s, c, ctx, false, start, work, done, arg, ret, err);
}

int pbx__stream_start_bare(struct pbx_server *s, struct MHD_Connection *c, struct request_ctx *ctx,
                           pbx_stream_work_fn work, pbx_stream_done_fn done, void *arg,
                           enum MHD_Result *ret, struct pbx_error **err)
{
    return start_stream(s, c, ctx, true, NULL, work, done, arg, ret, err);
}
