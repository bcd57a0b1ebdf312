/*
 * GET /metrics: the server's counters in Prometheus' text format, one row
 * of a table per metric family ({name, type, help, getter}), rendered by one
 * loop; and the counting of requests and executions that feeds them.
 */
#include <stdarg.h>
#include <stdio.h>

#include "common/buf.h"
#include "server/audit_spool.h"
#include "server/internal.h"
#include "server/node_claim.h"
#include "server/session_table.h"
#include "common/banned.h"

/* The HTTP statuses counted one by one; any other counts as "other". */
static const int statuses[NSTATUS] = {200, 201, 204, 304, 400, 401, 403, 404, 405, 408,
                                      409, 410, 413, 415, 422, 429, 500, 501, 503};

/* The upper bounds of the latency histogram's buckets, ms. */
static const double buckets_ms[NBUCKET] = {5,   10,   25,   50,   100,   250,
                                           500, 1000, 2500, 5000, 10000, 30000};

static size_t status_index(int status)
{
    for (size_t i = 0; i < NSTATUS; i++) {
        if (statuses[i] == status)
            return i;
    }
    return NSTATUS;
}

void pbx__metrics_count(struct pbx_server *s, enum route route, int status)
{
    atomic_fetch_add(&s->metrics.requests[route][status_index(status)], 1);
}

void pbx__metrics_observe(struct pbx_server *s, const struct pbx_exec_result *res, uint64_t ms)
{
    size_t b = 0;

    atomic_fetch_add(&s->metrics.executions[res->status], 1);
    atomic_fetch_add(&s->metrics.faults_prep, res->prep_faults);
    atomic_fetch_add(&s->metrics.faults_run, res->minor_faults - res->prep_faults);
    while (b < NBUCKET && (double)ms > buckets_ms[b])
        b++;
    atomic_fetch_add(&s->metrics.latency[b], 1);
    atomic_fetch_add(&s->metrics.latency_count, 1);
    atomic_fetch_add(&s->metrics.latency_sum_us, ms * 1000);
}

void pbx__metrics_totals(struct pbx_server *s, unsigned long *requests, unsigned long *executions,
                         unsigned long *ok)
{
    *requests = 0;
    for (int r = 0; r < R_COUNT; r++) {
        for (size_t i = 0; i <= NSTATUS; i++)
            *requests += atomic_load(&s->metrics.requests[r][i]);
    }
    *executions = 0;
    for (size_t i = 0; i < sizeof(s->metrics.executions) / sizeof(s->metrics.executions[0]); i++)
        *executions += atomic_load(&s->metrics.executions[i]);
    *ok = atomic_load(&s->metrics.executions[PBX_STATUS_OK]);
}

/* One family as it is written: where, under which name, from which state. */
struct family {
    struct pbx_buf *out;             /* the page */
    const char *name;                /* the family's name */
    struct pbx_server *s;            /* the server */
    const struct pbx_pool_stats *ps; /* the warm pools, read once per page */
};

static void line(struct family *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void line(struct family *f, const char *fmt, ...)
{
    char text[256];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    pbx_buf_append_trunc(f->out, text, n < (int)sizeof(text) ? (size_t)n : sizeof(text) - 1);
}

/* One sample: NAME{LABELS} VALUE, or NAME VALUE when `labels` is NULL. */
static void sample(struct family *f, const char *labels, unsigned long long v)
{
    if (labels == NULL)
        line(f, "%s %llu\n", f->name, v);
    else
        line(f, "%s{%s} %llu\n", f->name, labels, v);
}

static void http_requests(struct family *f)
{
    char labels[96];

    for (int r = 0; r < R_COUNT; r++) {
        for (size_t i = 0; i <= NSTATUS; i++) {
            unsigned long v = atomic_load(&f->s->metrics.requests[r][i]);

            if (v == 0)
                continue;
            if (i < NSTATUS)
                snprintf(labels, sizeof(labels), "route=\"%s\",status=\"%d\"",
                         pbx__http_route_name((enum route)r), statuses[i]);
            else
                snprintf(labels, sizeof(labels), "route=\"%s\",status=\"other\"",
                         pbx__http_route_name((enum route)r));
            sample(f, labels, v);
        }
    }
}

static void executions(struct family *f)
{
    char labels[64];

    for (int i = PBX_STATUS_OK; i <= PBX_STATUS_REJECTED; i++) {
        snprintf(labels, sizeof(labels), "status=\"%s\"", pbx_status_name((enum pbx_status)i));
        sample(f, labels, atomic_load(&f->s->metrics.executions[i]));
    }
}

static void latency(struct family *f)
{
    const struct metrics *m = &f->s->metrics;
    unsigned long cum = 0;

    for (size_t i = 0; i <= NBUCKET; i++) {
        cum += atomic_load(&m->latency[i]);
        if (i < NBUCKET)
            line(f, "%s_bucket{le=\"%g\"} %lu\n", f->name, buckets_ms[i] / 1000.0, cum);
        else
            line(f, "%s_bucket{le=\"+Inf\"} %lu\n", f->name, cum);
    }
    line(f, "%s_sum %.6f\n", f->name, (double)atomic_load(&m->latency_sum_us) / 1e6);
    line(f, "%s_count %lu\n", f->name, atomic_load(&m->latency_count));
}

static void cells_busy(struct family *f)
{
    sample(f, NULL, pbx__admit_active(f->s->admit));
}

static void page_faults(struct family *f)
{
    sample(f, "phase=\"prepare\"", atomic_load(&f->s->metrics.faults_prep));
    sample(f, "phase=\"run\"", atomic_load(&f->s->metrics.faults_run));
}

static void cells_idle(struct family *f)
{
    sample(f, NULL, f->ps->idle);
}

static void pool_target(struct family *f)
{
    sample(f, NULL, f->ps->target);
}

static void pool_executions(struct family *f)
{
    sample(f, "cell=\"warm\"", f->ps->hits);
    sample(f, "cell=\"forked\"", f->ps->misses);
}

static void zygotes(struct family *f)
{
    sample(f, NULL, f->ps->zygotes);
}

static void cgroups(struct family *f)
{
    sample(f, "how=\"created\"", f->ps->cgroups_created);
    sample(f, "how=\"reused\"", f->ps->cgroups_reused);
}

static void slots(struct family *f)
{
    sample(f, NULL, pbx__admit_capacity(f->s->admit));
}

static void queue_waiting(struct family *f)
{
    sample(f, NULL, pbx__admit_queued(f->s->admit));
}

static void queue_timeouts(struct family *f)
{
    sample(f, NULL, pbx__admit_queue_timeouts(f->s->admit));
}

static void memory_budget(struct family *f)
{
    sample(f, "state=\"limit\"", f->s->budget);
    sample(f, "state=\"used\"", atomic_load(&f->s->budget_used));
}

static void budget_refusals(struct family *f)
{
    sample(f, NULL, atomic_load(&f->s->metrics.budget_refusals));
}

static void audit_spooled(struct family *f)
{
    uint64_t spooled, dropped;

    pbx__audit_spool_counts(f->s->audit, &spooled, &dropped);
    sample(f, NULL, spooled);
}

static void audit_dropped(struct family *f)
{
    uint64_t spooled, dropped;

    pbx__audit_spool_counts(f->s->audit, &spooled, &dropped);
    sample(f, NULL, dropped);
}

static void deadline_drops(struct family *f)
{
    sample(f, NULL, atomic_load(&f->s->metrics.deadline_drops));
}

static void sessions_open(struct family *f)
{
    struct session_stats st;

    pbx__session_table_stats(f->s->sessions, &st);
    sample(f, NULL, st.open);
}

static void sessions_created(struct family *f)
{
    struct session_stats st;

    pbx__session_table_stats(f->s->sessions, &st);
    sample(f, NULL, st.created);
}

static void sessions_ended(struct family *f)
{
    struct session_stats st;
    char labels[64];

    pbx__session_table_stats(f->s->sessions, &st);
    for (unsigned why = SESSION_LIVE + 1; why < SESSION_WHY_COUNT; why++) {
        snprintf(labels, sizeof(labels), "reason=\"%s\"", pbx__session_table_why_name(why));
        sample(f, labels, st.ended[why]);
    }
}

static void node_id_conflicts(struct family *f)
{
    sample(f, NULL, pbx__node_claim_conflicts(f->s->node));
}

/* Every family, in the order of the page. */
static const struct {
    const char *name;
    const char *type;
    const char *help;
    void (*get)(struct family *f); /* writes the family's samples */
} families[] = {
    {"pybox_http_requests_total", "counter", "HTTP requests by route and status.", http_requests},
    {"pybox_executions_total", "counter", "Executions by result status.", executions},
    {"pybox_execute_latency_seconds", "histogram", "Latency of execution requests.", latency},
    {"pybox_cells_busy", "gauge", "Cells running an execution.", cells_busy},
    {"pybox_job_page_faults_total", "counter",
     "Page faults of jobs, before and after their code arrived.", page_faults},
    {"pybox_cells_idle", "gauge", "Pre-forked cells waiting for work.", cells_idle},
    {"pybox_pool_target", "gauge", "Pre-forked cells the pool aims to keep.", pool_target},
    {"pybox_pool_executions_total", "counter",
     "Executions by whether a pre-forked cell served them.", pool_executions},
    {"pybox_zygotes_started_total", "counter", "Zygotes started (replaced when dead or recycled).",
     zygotes},
    {"pybox_cgroups_total", "counter", "Cell cgroups created, and taken again from the pool.",
     cgroups},
    {"pybox_execution_slots", "gauge", "Concurrent executions allowed.", slots},
    {"pybox_queue_waiting", "gauge", "Requests waiting for an execution slot.", queue_waiting},
    {"pybox_queue_timeouts_total", "counter",
     "Requests answered 503 after waiting their whole time.", queue_timeouts},
    {"pybox_memory_budget_bytes", "gauge", "Memory requests in flight may hold, and hold now.",
     memory_budget},
    {"pybox_budget_refusals_total", "counter",
     "Requests answered 503 because the budget was spent.", budget_refusals},
    {"pybox_deadline_drops_total", "counter", "Connections cut at the request deadline.",
     deadline_drops},
    {"pybox_sessions_open", "gauge", "Sessions open (or being opened).", sessions_open},
    {"pybox_sessions_created_total", "counter", "Sessions opened.", sessions_created},
    {"pybox_sessions_ended_total", "counter", "Sessions ended, by why.", sessions_ended},
    {"pybox_audit_spooled", "gauge", "Audit records kept in memory while the store fails.",
     audit_spooled},
    {"pybox_audit_dropped_total", "counter", "Audit records dropped because the spool was full.",
     audit_dropped},
    {"pybox_node_id_conflicts_total", "counter",
     "Renewals of the node id's claim that found another server holding it.", node_id_conflicts},
};

enum MHD_Result pbx__metrics_handle(struct pbx_server *s, struct MHD_Connection *c,
                                    struct request_ctx *ctx)
{
    struct pbx_pool_stats ps;
    struct pbx_buf b;
    struct family f = {.out = &b, .s = s, .ps = &ps};

    pbx_buf_init(&b, 1 << 20);
    s->ex.pool_stats(s->ex.arg, &ps);
    for (size_t i = 0; i < sizeof(families) / sizeof(families[0]); i++) {
        f.name = families[i].name;
        line(&f, "# HELP %s %s\n", f.name, families[i].help);
        line(&f, "# TYPE %s %s\n", f.name, families[i].type);
        families[i].get(&f);
    }
    return pbx__http_send_text(c, ctx, s, 200, pbx_buf_steal(&b, NULL),
                               "text/plain; version=0.0.4; charset=utf-8", 0);
}
