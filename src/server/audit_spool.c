/* The audit log's records, written to the store or spooled while it fails (audit_spool.h). */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/xalloc.h"
#include "server/audit_spool.h"
#include "common/banned.h"

/* A record of the spool: its own copies of the strings. */
struct spooled {
    struct pbx_audit rec; /* pointing into the copies below */
    char *client, *key_name, *route, *code_sha256, *status;
};

struct audit_spool {
    pthread_mutex_t lock; /* guards what follows; held while the spool is written out */
    struct spooled *ring; /* AUDIT_SPOOL_MAX records */
    size_t head;          /* the oldest */
    size_t count;         /* how many */
    uint64_t dropped;     /* records dropped from a full spool */
    bool failing;         /* the last write failed (logged once per outage) */
};

struct audit_spool *pbx__audit_spool_new(void)
{
    struct audit_spool *sp = xcalloc(1, sizeof(*sp));

    pthread_mutex_init(&sp->lock, NULL);
    sp->ring = xcalloc(AUDIT_SPOOL_MAX, sizeof(*sp->ring));
    return sp;
}

static char *dup_or_null(const char *s)
{
    return s != NULL ? xstrdup(s) : NULL;
}

static void release(struct spooled *e)
{
    free(e->client);
    free(e->key_name);
    free(e->route);
    free(e->code_sha256);
    free(e->status);
    memset(e, 0, sizeof(*e));
}

/* Keep a copy of `rec` (locked), the oldest dropped when full. */
static void push_locked(struct audit_spool *sp, const struct pbx_audit *rec)
{
    struct spooled *e;

    if (sp->count == AUDIT_SPOOL_MAX) {
        release(&sp->ring[sp->head]);
        sp->head = (sp->head + 1) % AUDIT_SPOOL_MAX;
        sp->count--;
        sp->dropped++;
    }
    e = &sp->ring[(sp->head + sp->count) % AUDIT_SPOOL_MAX];
    e->client = dup_or_null(rec->client);
    e->key_name = dup_or_null(rec->key_name);
    e->route = dup_or_null(rec->route);
    e->code_sha256 = dup_or_null(rec->code_sha256);
    e->status = dup_or_null(rec->status);
    e->rec = *rec;
    e->rec.client = e->client;
    e->rec.key_name = e->key_name;
    e->rec.route = e->route;
    e->rec.code_sha256 = e->code_sha256;
    e->rec.status = e->status;
    sp->count++;
}

/* Write one record; false (logged when the store starts failing) when it could not. */
static bool write_locked(struct audit_spool *sp, struct pbx_store *store,
                         const struct pbx_audit *rec)
{
    struct pbx_error *err = NULL;

    if (pbx_store_audit(store, rec, &err) == 0) {
        if (sp->failing)
            pbx_log(PBX_LOG_INFO, "audit: the store takes records again");
        sp->failing = false;
        return true;
    }
    if (!sp->failing)
        pbx_log(PBX_LOG_WARN, "audit: %s; records are kept in memory until it answers", err->msg);
    sp->failing = true;
    pbx_error_free(&err);
    return false;
}

/* Write out the spooled records in order until one fails (locked). */
static bool drain_locked(struct audit_spool *sp, struct pbx_store *store)
{
    while (sp->count > 0) {
        struct spooled *e = &sp->ring[sp->head];

        if (!write_locked(sp, store, &e->rec))
            return false;
        release(e);
        sp->head = (sp->head + 1) % AUDIT_SPOOL_MAX;
        sp->count--;
    }
    return true;
}

void pbx__audit_spool_write(struct audit_spool *sp, struct pbx_store *store,
                            const struct pbx_audit *rec)
{
    struct pbx_error *err = NULL;

    pthread_mutex_lock(&sp->lock);
    if (sp->count == 0 && !sp->failing) {
        /* The usual case: nothing waits, so the write needs no lock (the store has its own). */
        pthread_mutex_unlock(&sp->lock);
        if (pbx_store_audit(store, rec, &err) == 0)
            return;
        pthread_mutex_lock(&sp->lock);
        if (!sp->failing)
            pbx_log(PBX_LOG_WARN, "audit: %s; records are kept in memory until it answers",
                    err->msg);
        sp->failing = true;
        pbx_error_free(&err);
        push_locked(sp, rec);
        pthread_mutex_unlock(&sp->lock);
        return;
    }
    /* Once a write fails, the rest wait behind the spool: the log keeps its order. */
    if (!drain_locked(sp, store) || !write_locked(sp, store, rec))
        push_locked(sp, rec);
    pthread_mutex_unlock(&sp->lock);
}

void pbx__audit_spool_counts(struct audit_spool *sp, uint64_t *spooled, uint64_t *dropped)
{
    pthread_mutex_lock(&sp->lock);
    *spooled = sp->count;
    *dropped = sp->dropped;
    pthread_mutex_unlock(&sp->lock);
}

void pbx__audit_spool_free(struct audit_spool *sp, struct pbx_store *store)
{
    if (sp == NULL)
        return;
    pthread_mutex_lock(&sp->lock);
    if (store != NULL && !drain_locked(sp, store))
        pbx_log(PBX_LOG_WARN, "audit: %zu records could not be written before the stop", sp->count);
    pthread_mutex_unlock(&sp->lock);
    for (size_t i = 0; i < AUDIT_SPOOL_MAX; i++)
        release(&sp->ring[i]);
    free(sp->ring);
    pthread_mutex_destroy(&sp->lock);
    free(sp);
}
