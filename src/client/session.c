/*
 * libpybox: sessions (include/pybox/pybox.h, "Sessions"), both modes.
 *
 * Theory of operation, local mode: a session is the engine's
 * (src/engine/session.h) on the client's engine, started on first use as
 * pybox_run() starts it: one cell kept alive between calls, its processes
 * stopped between them, its input files given at its opening.  This file
 * holds one call at a time on it (`busy`, the server's rule: a second call
 * is a SessionBusy) and checks pybox_session_extend() by PATCH's rules; the
 * client's reaper (reaper.c) ends it when its idle time or lifetime runs
 * out (a call that finds it so just before the reaper does ends it the
 * same way); and this file turns each call's result into
 * the JSON that `POST /v1/sessions/{id}/execute` answers: the result object,
 * then execution_count, state_preserved and session {id, status,
 * dead_reason}, made as src/server/sessions.c makes them, then parsed by the
 * function that parses the server's answer.  A failure is named by the
 * error table as the server names it (PBX_E_GONE a SessionDead, PBX_E_BUSY a
 * SessionBusy, PBX_E_NOTFOUND a NotFound), with the server's words where the
 * server has its own.  The id is made as the server makes one ("ses_" and
 * 128 random bits in hex), so a program never tells the modes apart by it.
 *
 * Remote mode is `/v1/sessions` (remote.c); this file only dispatches.
 */
#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "client/client.h"
#include "common/clock.h"
#include "common/errtable.h"
#include "engine/session.h"
#include "common/banned.h"

/* The server's words for its refusals (src/server/sessions.c, src/server/request.c). */
#define BUSY_MESSAGE   "another call of this session is running; a session runs one at a time"
#define MEMORY_MESSAGE "`memory_mb` is the session's, fixed when it is made (POST /v1/sessions)"

void pybox_session_options_init(struct pybox_session_options *opts)
{
    memset(opts, 0, sizeof(*opts));
    opts->size = sizeof(*opts);
}

/* How much of a caller's options to take: whole fields within its `size` (as config_bytes()). */
static size_t options_bytes(size_t size)
{
#define END(f) \
    (offsetof(struct pybox_session_options, f) + sizeof(((struct pybox_session_options *)0)->f))
    static const size_t ends[] = {
        END(size),           END(timeout_s), END(memory_mb), END(idle_ttl_s),
        END(max_lifetime_s), END(files),     END(nfiles),
    };
#undef END
    size_t n = 0;

    for (size_t i = 0; i < sizeof(ends) / sizeof(ends[0]); i++)
        if (ends[i] <= size)
            n = ends[i];
    return n;
}

void pbx__client_session_dead(struct pybox_session *s, const char *reason)
{
    pthread_mutex_lock(&s->lock);
    if (s->dead_reason == NULL)
        s->dead_reason = strdup(reason); /* NULL when out of memory: then it is not known */
    pthread_mutex_unlock(&s->lock);
}

static void session_free(struct pybox_session *s)
{
    pthread_mutex_destroy(&s->lock);
    free(s->dead_reason);
    free(s->url);
    free(s->shown_url);
    free(s);
}

/* The failure of an error table row, `id`, with its local code and type. */
static enum pybox_code fail_row(struct pybox_error **err, enum pbx_errtable_id id, unsigned retry,
                                const char *msg)
{
    const struct pbx_errtable_row *row = pbx_errtable_get(id);
    enum pybox_code code =
        row->local != PBX_ERRTABLE_NONE ? (enum pybox_code)row->local : row->remote;

    return pbx__client_fail_type(err, code, row->type, 0, retry, "%s", msg);
}

/* An ended session's refusal, as the server answers it (410 SessionDead). */
static enum pybox_code fail_gone(struct pybox_session *s, const char *reason,
                                 struct pybox_error **err)
{
    char msg[128];

    pbx__client_session_dead(s, reason);
    snprintf(msg, sizeof(msg), "the session has ended (%s); open a new one", reason);
    return fail_row(err, PBX_ERRTABLE_SESSION_DEAD, 0, msg);
}

/* ---- local mode ---- */

/* The refusal of the local session that has ended (s->ps NULL), with why when it is known. */
static enum pybox_code fail_ended(struct pybox_session *s, struct pybox_error **err)
{
    char *reason;

    pthread_mutex_lock(&s->lock);
    reason = s->dead_reason != NULL ? strdup(s->dead_reason) : NULL;
    pthread_mutex_unlock(&s->lock);
    if (reason == NULL)
        return fail_row(err, PBX_ERRTABLE_SESSION_DEAD, 0, "the session has ended; open a new one");
    fail_gone(s, reason, err);
    free(reason);
    return PYBOX_E_GONE;
}

/*
 * (s->lock held) End the local session if its idle time or lifetime has run
 * out and no call holds it, as the reaper would the moment it looks: its
 * engine's session in *closing, for the caller to close once it lets go of
 * the lock (NULL when it lives on).
 */
static void expire_locked(struct pybox_session *s, struct pbx_session **closing)
{
    const char *why = NULL;

    *closing = NULL;
    if (s->ps != NULL && !s->busy)
        why = pbx__client_session_expired(s, pbx_clock_ms(CLOCK_MONOTONIC), NULL);
    if (why == NULL)
        return;
    *closing = s->ps;
    s->ps = NULL;
    if (s->dead_reason == NULL)
        s->dead_reason = strdup(why); /* NULL when out of memory: then it is not known */
}

/*
 * Take the local session for one call: PYBOX_OK, or the refusal of a session
 * that ended (the reaper's work, or found here just as it runs out) or is busy.
 */
static enum pybox_code take_local(struct pybox_session *s, struct pybox_error **err)
{
    struct pbx_session *closing;

    pthread_mutex_lock(&s->lock);
    if (s->busy) {
        pthread_mutex_unlock(&s->lock);
        return fail_row(err, PBX_ERRTABLE_SESSION_BUSY, 1, BUSY_MESSAGE);
    }
    expire_locked(s, &closing);
    if (s->ps == NULL) {
        pthread_mutex_unlock(&s->lock);
        pbx_session_close(closing); /* nothing else holds it now */
        return fail_ended(s, err);
    }
    s->busy = true;
    pthread_mutex_unlock(&s->lock);
    return PYBOX_OK;
}

/* The call is over: the idle time runs from now, and the reaper looks again. */
static void give_back_local(struct pybox_session *s)
{
    pthread_mutex_lock(&s->lock);
    s->busy = false;
    s->last_ms = pbx_clock_ms(CLOCK_MONOTONIC);
    pthread_mutex_unlock(&s->lock);
    pbx__client_reaper_poke(s->client);
}

/*
 * (s->lock held) Whether the lifetime of the session, held by a call, has
 * run out: then it has ended as the server's reaper ends one, the call going
 * on to its end (the reaper closes it once the call gives it back).
 */
static bool lifetime_over_locked(struct pybox_session *s)
{
    const char *why = pbx__client_session_expired(s, pbx_clock_ms(CLOCK_MONOTONIC), NULL);

    if (why == NULL || strcmp(why, "max_lifetime") != 0)
        return false;
    if (s->dead_reason == NULL)
        s->dead_reason = strdup(why);
    return true;
}

static bool lifetime_over(struct pybox_session *s)
{
    bool over;

    pthread_mutex_lock(&s->lock);
    over = lifetime_over_locked(s);
    pthread_mutex_unlock(&s->lock);
    return over;
}

/*
 * The engine refused an operation on the session: PBX_E_GONE as the server
 * answers an ended session (with why, from the engine), the rest by the table.
 */
static enum pybox_code fail_engine(struct pybox_session *s, struct pbx_error **perr,
                                   struct pybox_error **err)
{
    if ((*perr)->code == PBX_E_GONE) {
        struct pbx_session_state st;

        pbx_session_state(s->ps, &st);
        pbx_error_free(perr);
        return fail_gone(
            s, pbx_session_end_name(st.ended != PBX_SESSION_ALIVE ? st.ended : PBX_SESSION_LOST),
            err);
    }
    return pbx__client_local_fail(err, perr, NULL);
}

/*
 * A span asked of a local session, checked as the server checks one against
 * its most (src/server/sessions.c, span()): 0, or PYBOX_E_INVALID.
 */
static enum pybox_code check_span(unsigned asked, unsigned most, const char *field,
                                  struct pybox_error **err)
{
    char msg[128];

    if (asked <= most)
        return PYBOX_OK;
    snprintf(msg, sizeof(msg), "`%s` %u is over the most a session may have, %u", field, asked,
             most);
    return fail_row(err, PBX_ERRTABLE_VALIDATION_ERROR, 0, msg);
}

static enum pybox_code open_local(struct pybox_session *s, double timeout, unsigned memory,
                                  const struct pybox_session_options *opts,
                                  struct pybox_error **err)
{
    struct pbx_error *perr = NULL;
    struct pbx_file_in *files = NULL;
    struct pbx_engine *engine;
    unsigned char raw[16];
    enum pybox_code rc;
    int r;

    if (check_span(opts->idle_ttl_s, PYBOX_SESSION_MAX_IDLE_TTL_S, "idle_ttl_s", err) != PYBOX_OK ||
        check_span(opts->max_lifetime_s, PYBOX_SESSION_MAX_LIFETIME_S, "max_lifetime_s", err) !=
            PYBOX_OK)
        return PYBOX_E_INVALID;
    rc = pbx__client_engine(s->client, &engine, err);
    if (rc != PYBOX_OK)
        return rc;
    pbx_limits_default(&s->limits);
    /* As the server reads a session's `timeout` and `memory_mb` (pybox_run()'s rules). */
    if (timeout > 0 && pbx_limits_set_timeout(&s->limits, timeout, NULL) < 0)
        return pbx__client_fail(err, PYBOX_E_INVALID, 0, 0, "the timeout is out of range");
    if (memory > 0)
        s->limits.memory_bytes = (uint64_t)memory << 20;
    if (opts->nfiles > 0) {
        files = calloc(opts->nfiles, sizeof(*files));
        if (files == NULL)
            return pbx__client_fail(err, PYBOX_E_NOMEM, 0, 0, "out of memory");
    }
    for (size_t i = 0; i < opts->nfiles; i++) {
        files[i].name = opts->files[i].name;
        files[i].data = opts->files[i].data != NULL ? opts->files[i].data : "";
        files[i].size = opts->files[i].size;
    }
    r = pbx_session_open(engine, &s->limits, files, opts->nfiles, &s->ps, &perr);
    free(files);
    if (r < 0)
        return pbx__client_local_fail(err, &perr, "open a session");
    randombytes_buf(raw, sizeof(raw));
    memcpy(s->id, "ses_", 4);
    sodium_bin2hex(s->id + 4, sizeof(s->id) - 4, raw, sizeof(raw));
    s->idle_ttl_s = opts->idle_ttl_s;
    s->lifetime_s = opts->max_lifetime_s;
    s->opened_ms = s->last_ms = pbx_clock_ms(CLOCK_MONOTONIC);
    rc = pbx__client_reaper_add(s, err);
    if (rc != PYBOX_OK) {
        pbx_session_close(s->ps);
        s->ps = NULL;
    }
    return rc;
}

/* PATCH's rules (src/server/sessions.c, patch_session()), on the local session. */
static enum pybox_code extend_local(struct pybox_session *s, unsigned idle_ttl_s,
                                    unsigned lifetime_s, struct pybox_error **err)
{
    struct pbx_session *closing;
    uint64_t age;
    char msg[128];

    if (check_span(idle_ttl_s, PYBOX_SESSION_MAX_IDLE_TTL_S, "idle_ttl_s", err) != PYBOX_OK ||
        check_span(lifetime_s, PYBOX_SESSION_MAX_LIFETIME_S, "max_lifetime_s", err) != PYBOX_OK)
        return PYBOX_E_INVALID;
    pthread_mutex_lock(&s->lock);
    expire_locked(s, &closing);
    if (s->ps == NULL || (s->busy && lifetime_over_locked(s))) {
        pthread_mutex_unlock(&s->lock);
        pbx_session_close(closing);
        return fail_ended(s, err);
    }
    age = pbx_clock_ms(CLOCK_MONOTONIC) - s->opened_ms;
    if (lifetime_s > 0 && (uint64_t)lifetime_s * 1000 <= age) {
        pthread_mutex_unlock(&s->lock);
        snprintf(msg, sizeof(msg), "`max_lifetime_s` %u has passed: the session is %llu s old",
                 lifetime_s, (unsigned long long)(age / 1000));
        return fail_row(err, PBX_ERRTABLE_VALIDATION_ERROR, 0, msg);
    }
    if (idle_ttl_s > 0)
        s->idle_ttl_s = idle_ttl_s;
    if (lifetime_s > 0)
        s->lifetime_s = lifetime_s;
    pthread_mutex_unlock(&s->lock);
    pbx__client_reaper_poke(s->client);
    return PYBOX_OK;
}

/*
 * What the server adds to a call's result object (sessions.c, call_answer()):
 * the session dead when the call ended it, or when `expired` (the reason its
 * lifetime ran out meanwhile), else idle.
 */
static json_t *call_fields(const struct pybox_session *s, const struct pbx_session_call *call,
                           const char *expired)
{
    bool ended = call->ended != PBX_SESSION_ALIVE || !call->state_preserved;
    bool dead = ended || expired != NULL;
    const char *why =
        !ended ? expired
               : pbx_session_end_name(call->ended != PBX_SESSION_ALIVE ? call->ended
                                                                       : PBX_SESSION_CRASHED);

    return json_pack("{s:I, s:b, s:{s:s, s:s, s:o}}", "execution_count",
                     (json_int_t)call->execution_count, "state_preserved", call->state_preserved,
                     "session", "id", s->id, "status", dead ? "dead" : "idle", "dead_reason",
                     dead ? json_string(why) : json_null());
}

static enum pybox_code run_local(struct pybox_session *s, const struct pybox_exec *exec,
                                 struct pybox_result **out, struct pybox_error **err)
{
    struct pbx_file_in *files = NULL;
    struct pbx_client_events ev;
    struct pbx_exec_request req;
    struct pbx_exec_result res;
    struct pbx_session_call call;
    struct pbx_error *perr = NULL;
    enum pybox_code rc;
    json_t *extra;

    rc = take_local(s, err);
    if (rc != PYBOX_OK)
        return rc;
    rc = pbx__client_local_request(exec, &s->limits, exec->timeout_s, 0, &req, &files, err);
    if (rc != PYBOX_OK) {
        give_back_local(s);
        return rc;
    }
    pbx__client_events_start(&ev, exec, &req);
    if (pbx_session_execute(s->ps, &req, &res, &call, &perr) < 0) {
        free(files);
        rc = fail_engine(s, &perr, err);
        give_back_local(s);
        return rc;
    }
    pbx__client_events_finish(&ev);
    free(files);
    extra = call_fields(s, &call, lifetime_over(s) ? "max_lifetime" : NULL);
    if (json_is_string(json_object_get(json_object_get(extra, "session"), "dead_reason")))
        pbx__client_session_dead(s, json_string_value(json_object_get(
                                        json_object_get(extra, "session"), "dead_reason")));
    rc = pbx__client_local_result(&res, extra, exec, out, err);
    json_decref(extra);
    give_back_local(s);
    return rc;
}

/* A file operation, restart or list on the local session. */
static enum pybox_code op_local(struct pybox_session *s, enum pbx_client_session_op op,
                                const char *path, const void *data, size_t size, char **out_body,
                                size_t *out_len, struct pybox_error **err)
{
    struct pbx_error *perr = NULL;
    enum pybox_code rc;
    json_t *list = NULL;
    char *got = NULL;
    size_t len = 0;
    int r = 0;

    rc = take_local(s, err);
    if (rc != PYBOX_OK)
        return rc;
    switch (op) {
    case PBX_CLIENT_SESSION_RESTART:
        r = pbx_session_restart(s->ps, &perr);
        break;
    case PBX_CLIENT_SESSION_PUT:
        r = pbx_session_file_put(s->ps, path, data != NULL ? data : "", size, &perr);
        break;
    case PBX_CLIENT_SESSION_GET:
        r = pbx_session_file_get(s->ps, path, &got, &len, &perr);
        break;
    case PBX_CLIENT_SESSION_DELETE:
        r = pbx_session_file_delete(s->ps, path, &perr);
        break;
    case PBX_CLIENT_SESSION_LIST:
        r = pbx_session_file_list(s->ps, &list, &perr);
        break;
    default:
        r = pbx_error_set(&perr, PBX_E_INVAL, "not a local session operation");
        break;
    }
    if (r < 0) {
        rc = fail_engine(s, &perr, err);
    } else if (op == PBX_CLIENT_SESSION_GET) {
        /* NUL-terminated, as remote mode's answer is. */
        char *copy = malloc(len + 1);

        if (copy == NULL) {
            rc = pbx__client_fail(err, PYBOX_E_NOMEM, 0, 0, "out of memory");
        } else {
            memcpy(copy, got, len);
            copy[len] = '\0';
            *out_body = copy;
            *out_len = len;
        }
    } else if (op == PBX_CLIENT_SESSION_LIST) {
        *out_body = json_dumps(list, JSON_COMPACT);
        if (*out_body == NULL)
            rc = pbx__client_fail(err, PYBOX_E_NOMEM, 0, 0, "out of memory");
        else
            *out_len = strlen(*out_body);
    }
    free(got);
    json_decref(list);
    give_back_local(s);
    return rc;
}

/* ---- the API ---- */

enum pybox_code pybox_session_open(struct pybox_client *client,
                                   const struct pybox_session_options *user,
                                   struct pybox_session **out, struct pybox_error **err)
{
    struct pybox_session_options opts;
    struct pybox_session *s;
    enum pybox_code rc;
    double timeout;
    unsigned memory;

    if (client == NULL || out == NULL)
        return pbx__client_fail(err, PYBOX_E_INVALID, 0, 0, "no client or session");
    pybox_session_options_init(&opts);
    if (user != NULL) {
        if (user->size < sizeof(size_t))
            return pbx__client_fail(err, PYBOX_E_INVALID, 0, 0,
                                    "options not filled by pybox_session_options_init()");
        memcpy(&opts, user, options_bytes(user->size));
    }
    rc = pbx__client_check_limits(opts.timeout_s, opts.memory_mb, err);
    if (rc != PYBOX_OK)
        return rc;
    if (opts.nfiles > 0 && opts.files == NULL)
        return pbx__client_fail(err, PYBOX_E_INVALID, 0, 0, "no files for nfiles %zu", opts.nfiles);
    for (size_t i = 0; i < opts.nfiles; i++) {
        const struct pybox_input_file *f = &opts.files[i];

        /* pybox_exec_add_file()'s rules, and the server's words for a bad name. */
        if (!pbx__client_valid_name(f->name))
            return fail_row(err, PBX_ERRTABLE_VALIDATION_ERROR, 0,
                            "an input file's name is not a flat file name: use 1-255 bytes of "
                            "UTF-8, no `/`, not `.` or `..`");
        if (f->data == NULL && f->size > 0)
            return pbx__client_fail(err, PYBOX_E_INVALID, 0, 0, "no data for file `%s`", f->name);
        for (size_t j = 0; j < i; j++) {
            if (strcmp(opts.files[j].name, f->name) == 0)
                return fail_row(err, PBX_ERRTABLE_VALIDATION_ERROR, 0,
                                "an input file's name is given twice");
        }
    }
    if (client->network) {
        /* As pybox_run() refuses network locally: no execution, and no session, has one. */
        const struct pbx_errtable_row *row = pbx_errtable_get(PBX_ERRTABLE_NETWORK_NOT_ALLOWED);

        return pbx__client_fail_type(err, row->local, row->type, 0, 0,
                                     "sessions run without network");
    }
    timeout = opts.timeout_s > 0 ? opts.timeout_s : client->timeout_s;
    memory = opts.memory_mb > 0 ? opts.memory_mb : client->memory_mb;
    s = calloc(1, sizeof(*s));
    if (s == NULL)
        return pbx__client_fail(err, PYBOX_E_NOMEM, 0, 0, "out of memory");
    pthread_mutex_init(&s->lock, NULL);
    s->client = client;
    if (client->remote)
        rc = pbx__client_session_open_remote(s, timeout, memory, opts.idle_ttl_s,
                                             opts.max_lifetime_s, opts.files, opts.nfiles, err);
    else
        rc = open_local(s, timeout, memory, &opts, err);
    if (rc != PYBOX_OK) {
        if (client->remote && s->url != NULL)
            pbx__client_session_op_remote(s, PBX_CLIENT_SESSION_CLOSE, NULL, NULL, 0, NULL, NULL,
                                          NULL);
        session_free(s);
        return rc;
    }
    *out = s;
    return PYBOX_OK;
}

const char *pybox_session_id(const struct pybox_session *session)
{
    return session != NULL ? session->id : NULL;
}

const char *pybox_session_dead_reason(const struct pybox_session *session)
{
    struct pybox_session *s = (struct pybox_session *)session;
    const char *why;

    if (s == NULL)
        return NULL;
    pthread_mutex_lock(&s->lock);
    why = s->dead_reason; /* set once, freed only by pybox_session_close() */
    pthread_mutex_unlock(&s->lock);
    return why;
}

enum pybox_code pybox_session_run(struct pybox_session *session, const struct pybox_exec *exec,
                                  struct pybox_result **out, struct pybox_error **err)
{
    if (session == NULL || exec == NULL || out == NULL)
        return pbx__client_fail(err, PYBOX_E_INVALID, 0, 0, "no session, request or result");
    if (exec->code == NULL)
        return pbx__client_fail(err, PYBOX_E_INVALID, 0, 0,
                                "no code (set it with pybox_exec_set_code())");
    if (exec->memory_mb > 0) {
        const struct pbx_errtable_row *row = pbx_errtable_get(PBX_ERRTABLE_VALIDATION_ERROR);

        return pbx__client_fail_type(err, row->remote, row->type, 0, 0, "%s", MEMORY_MESSAGE);
    }
    if (exec->cancel != NULL)
        return pbx__client_fail(err, PYBOX_E_INVALID, 0, 0,
                                "a session's call takes no cancel: stop it with "
                                "pybox_session_interrupt(), which keeps the session");
    return session->client->remote ? pbx__client_session_run_remote(session, exec, out, err)
                                   : run_local(session, exec, out, err);
}

enum pybox_code pybox_session_interrupt(struct pybox_session *session, bool *interrupted,
                                        struct pybox_error **err)
{
    enum pybox_code rc;
    char *body = NULL;
    bool sent = false;

    if (interrupted != NULL)
        *interrupted = false;
    if (session == NULL)
        return pbx__client_fail(err, PYBOX_E_INVALID, 0, 0, "no session");
    if (session->client->remote) {
        rc = pbx__client_session_op_remote(session, PBX_CLIENT_SESSION_INTERRUPT, NULL, NULL, 0,
                                           &body, NULL, err);
        sent = rc == PYBOX_OK && body != NULL && strcmp(body, "true") == 0;
        free(body);
    } else {
        pthread_mutex_lock(&session->lock);
        if (session->ps != NULL)
            sent = pbx_session_interrupt(session->ps);
        pthread_mutex_unlock(&session->lock);
        rc = PYBOX_OK;
    }
    if (interrupted != NULL)
        *interrupted = sent;
    return rc;
}

/* A session operation, in the session's mode. */
static enum pybox_code op(struct pybox_session *s, enum pbx_client_session_op what,
                          const char *path, const void *data, size_t size, char **out_body,
                          size_t *out_len, struct pybox_error **err)
{
    if (s == NULL)
        return pbx__client_fail(err, PYBOX_E_INVALID, 0, 0, "no session");
    if (path == NULL && what != PBX_CLIENT_SESSION_RESTART && what != PBX_CLIENT_SESSION_LIST)
        return pbx__client_fail(err, PYBOX_E_INVALID, 0, 0, "no file path");
    if (data == NULL && size > 0)
        return pbx__client_fail(err, PYBOX_E_INVALID, 0, 0, "no data for %zu bytes", size);
    if (s->client->remote)
        return pbx__client_session_op_remote(s, what, path, data, size, out_body, out_len, err);
    return op_local(s, what, path, data, size, out_body, out_len, err);
}

enum pybox_code pybox_session_restart(struct pybox_session *session, struct pybox_error **err)
{
    return op(session, PBX_CLIENT_SESSION_RESTART, NULL, NULL, 0, NULL, NULL, err);
}

enum pybox_code pybox_session_put_file(struct pybox_session *session, const char *path,
                                       const void *data, size_t size, struct pybox_error **err)
{
    return op(session, PBX_CLIENT_SESSION_PUT, path, data, size, NULL, NULL, err);
}

enum pybox_code pybox_session_get_file(struct pybox_session *session, const char *path, void **data,
                                       size_t *size, struct pybox_error **err)
{
    char *body = NULL;
    size_t len = 0;
    enum pybox_code rc;

    if (data == NULL)
        return pbx__client_fail(err, PYBOX_E_INVALID, 0, 0, "nowhere to put the file");
    *data = NULL;
    if (size != NULL)
        *size = 0;
    rc = op(session, PBX_CLIENT_SESSION_GET, path, NULL, 0, &body, &len, err);
    if (rc == PYBOX_OK) {
        *data = body;
        if (size != NULL)
            *size = len;
    }
    return rc;
}

enum pybox_code pybox_session_delete_file(struct pybox_session *session, const char *path,
                                          struct pybox_error **err)
{
    return op(session, PBX_CLIENT_SESSION_DELETE, path, NULL, 0, NULL, NULL, err);
}

enum pybox_code pybox_session_list_files(struct pybox_session *session, char **json,
                                         struct pybox_error **err)
{
    size_t len = 0;

    if (json == NULL)
        return pbx__client_fail(err, PYBOX_E_INVALID, 0, 0, "nowhere to put the list");
    *json = NULL;
    return op(session, PBX_CLIENT_SESSION_LIST, NULL, NULL, 0, json, &len, err);
}

enum pybox_code pybox_session_extend(struct pybox_session *session, unsigned idle_ttl_s,
                                     unsigned max_lifetime_s, struct pybox_error **err)
{
    json_t *body;
    enum pybox_code rc;
    char *text;
    bool ok;

    if (session == NULL)
        return pbx__client_fail(err, PYBOX_E_INVALID, 0, 0, "no session");
    if (!session->client->remote)
        return extend_local(session, idle_ttl_s, max_lifetime_s, err);
    /* PATCH's fields, each only when it is to change. */
    body = json_object();
    ok = body != NULL;
    if (ok && idle_ttl_s > 0)
        ok = json_object_set_new(body, "idle_ttl_s", json_integer(idle_ttl_s)) == 0;
    if (ok && max_lifetime_s > 0)
        ok = json_object_set_new(body, "max_lifetime_s", json_integer(max_lifetime_s)) == 0;
    text = ok ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (text == NULL)
        return pbx__client_fail(err, PYBOX_E_NOMEM, 0, 0, "out of memory");
    rc = pbx__client_session_op_remote(session, PBX_CLIENT_SESSION_PATCH, NULL, text, strlen(text),
                                       NULL, NULL, err);
    free(text);
    return rc;
}

enum pybox_code pybox_session_close(struct pybox_session *session, struct pybox_error **err)
{
    enum pybox_code rc = PYBOX_OK;
    struct pbx_session *ps;

    if (session == NULL)
        return PYBOX_OK;
    if (session->client->remote) {
        rc = pbx__client_session_op_remote(session, PBX_CLIENT_SESSION_CLOSE, NULL, NULL, 0, NULL,
                                           NULL, err);
    } else {
        /* The reaper lets go of it first; then nobody else holds it. */
        pbx__client_reaper_remove(session);
        pthread_mutex_lock(&session->lock);
        ps = session->ps;
        session->ps = NULL;
        pthread_mutex_unlock(&session->lock);
        pbx_session_close(ps);
    }
    session_free(session);
    return rc;
}
