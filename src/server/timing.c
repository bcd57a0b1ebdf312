/*
 * The Server-Timing header's value: an execution's step times as
 * contiguous phases (timing.h).
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "server/timing.h"
#include "common/banned.h"

#define MAX_PHASES 16

/* The phases' ends in order: phase i runs from the end of phase i-1 (the arrival for 0). */
struct phases {
    const char *name[MAX_PHASES];
    uint64_t end[MAX_PHASES];
    int n;
};

static void add(struct phases *p, const char *name, uint64_t end)
{
    p->name[p->n] = name;
    p->end[p->n] = end;
    p->n++;
}

/* Whether every phase ends no earlier than the one before, the first after `from`. */
static bool in_order(const struct phases *p, uint64_t from)
{
    for (int i = 0; i < p->n; i++) {
        if (p->end[i] < (i == 0 ? from : p->end[i - 1]))
            return false;
    }
    return true;
}

/* The server's phases up to the engine, into *p. */
static void server_phases(const struct pbx_server_timing *t, struct phases *p)
{
    p->n = 0;
    add(p, "parse", t->parsed_ns);
    add(p, "auth", t->resolved_ns);
    add(p, "admit", t->held_ns);
    add(p, "queue", t->slot_ns);
    add(p, "charge", t->admitted_ns);
}

/* Round ns to us. */
static uint64_t us_of(uint64_t ns)
{
    return (ns + 500) / 1000;
}

/* One entry of `us` microseconds, in ms with the header's 3 decimals; none that does not fit. */
static void put(char *out, size_t len, size_t *at, const char *name, uint64_t us)
{
    int n;

    if (*at >= len)
        return;
    n = snprintf(out + *at, len - *at, "%s%s;dur=%" PRIu64 ".%03" PRIu64, *at ? ", " : "", name,
                 us / 1000, us % 1000);
    if (n < 0 || (size_t)n >= len - *at) {
        out[*at] = '\0';
        *at = len; /* full: nothing more goes in */
        return;
    }
    *at += (size_t)n;
}

void pbx__server_timing_format(const struct pbx_server_timing *t, uint64_t arrived_ns,
                               uint64_t now_ns, char *out, size_t len)
{
    const struct pbx_exec_timing *e = &t->exec;
    struct phases p;
    size_t at = 0;

    server_phases(t, &p);
    if (e->known && e->cell_known) {
        add(&p, "prep", e->sent_ns);
        add(&p, "handoff", e->go_ns);
        add(&p, "start", e->handed_ns);
        if (e->code_done_ns != 0) {
            add(&p, "code", e->code_done_ns);
            add(&p, "exit", e->reaped_ns);
        } else {
            add(&p, "run", e->reaped_ns);
        }
        add(&p, "collect", e->collected_ns);
        add(&p, "report", e->done_ns);
        add(&p, "result", t->ran_ns);
    } else if (e->known) {
        add(&p, "prep", e->sent_ns);
        add(&p, "execution", t->ran_ns);
    } else {
        add(&p, "engine", t->ran_ns);
    }
    add(&p, "audit", t->audited_ns);
    add(&p, "answer", now_ns);
    if (!in_order(&p, arrived_ns)) {
        /* Not expected: then only what the server's own clock readings say. */
        server_phases(t, &p);
        add(&p, "engine", t->ran_ns);
        add(&p, "audit", t->audited_ns);
        add(&p, "answer", now_ns);
        if (!in_order(&p, arrived_ns))
            p.n = 0;
    }
    out[0] = '\0';
    /* Each phase from the rounded end of the one before, so they sum to the total exactly. */
    for (int i = 0; i < p.n; i++)
        put(out, len, &at, p.name[i],
            us_of(p.end[i] - arrived_ns) - (i == 0 ? 0 : us_of(p.end[i - 1] - arrived_ns)));
    if (now_ns >= arrived_ns)
        put(out, len, &at, "total", us_of(now_ns - arrived_ns));
    if (e->known && at < len) {
        int n = snprintf(out + at, len - at, "%scell;desc=\"%s\"", at ? ", " : "",
                         e->warm ? "warm" : "forked");

        if (n < 0 || (size_t)n >= len - at)
            out[at] = '\0';
    }
}
