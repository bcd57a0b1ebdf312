/* Per-execution limits: defaults, parsing of "NAME=VALUE", the timeout, bounds. */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/xalloc.h"
#include "policy/limits.h"
#include "common/banned.h"

#define KIB (UINT64_C(1024))
#define MIB (KIB * 1024)
#define GIB (MIB * 1024)

void pbx_limits_default(struct pbx_limits *l)
{
    *l = (struct pbx_limits){
        .wall_ms = 10000,
        .cpu_ms = 10000,
        .memory_bytes = 256 * MIB,
        .pids = 10,
        .disk_bytes = 64 * MIB,
        .disk_inodes = 2048,
        .stdout_bytes = 1 * MIB,
        .stderr_bytes = 1 * MIB,
        .code_bytes = 1 * MIB,
        .stdin_bytes = 8 * MIB,
        .input_files = 2,
        .input_file_bytes = 8 * MIB,
        .output_files = 10,
        .output_file_bytes = 8 * MIB,
        .answer_bytes = 24 * MIB,
        .nofile = 256,
        .stack_bytes = 8 * MIB,
    };
}

void pbx_limits_result_max(const struct pbx_limits *l, struct pbx_result_max *m)
{
    uint64_t outputs = l->stdout_bytes + l->stderr_bytes;

    m->bytes = l->answer_bytes > outputs ? l->answer_bytes - outputs : 0;
    m->values = l->answer_bytes / 64 + 16;
    m->record = m->bytes + (64u << 10);
}

void pbx_limits_outputs_max(const struct pbx_limits *l, struct pbx_outputs_max *m)
{
    struct pbx_result_max r;

    pbx_limits_result_max(l, &r);
    m->total = r.bytes;
    m->each = r.bytes < PBX_LIMITS_OUTPUT_MAX_BYTES ? r.bytes : PBX_LIMITS_OUTPUT_MAX_BYTES;
    m->count = PBX_LIMITS_OUTPUTS_MAX;
    m->values = r.values;
}

enum unit { U_COUNT, U_BYTES, U_MS };

struct limit_desc {
    const char *name; /* the NAME of NAME=VALUE */
    enum unit unit;
    size_t offset; /* into struct pbx_limits */
    int wide;      /* 1: uint64_t, 0: uint32_t */
    uint64_t min;
    uint64_t max;
    const char *what;
};

#define F32(f) offsetof(struct pbx_limits, f), 0
#define F64(f) offsetof(struct pbx_limits, f), 1

static const struct limit_desc descs[] = {
    {"wall", U_MS, F32(wall_ms), 1, 3600 * 1000, "wall-clock time"},
    {"cpu", U_MS, F32(cpu_ms), 1, 3600 * 1000, "CPU time per process"},
    {"memory", U_BYTES, F64(memory_bytes), 16 * MIB, 64 * GIB, "memory, swap and tmpfs included"},
    {"pids", U_COUNT, F32(pids), 1, 4096, "processes and threads"},
    {"disk", U_BYTES, F64(disk_bytes), 64 * KIB, 16 * GIB, "size of /work + /tmp + /dev/shm"},
    {"inodes", U_COUNT, F32(disk_inodes), 16, 1000000, "files in /work + /tmp + /dev/shm"},
    {"stdout", U_BYTES, F64(stdout_bytes), 0, 1 * GIB, "stdout kept"},
    {"stderr", U_BYTES, F64(stderr_bytes), 0, 1 * GIB, "stderr kept"},
    {"code", U_BYTES, F64(code_bytes), 1, 64 * MIB, "size of the code"},
    {"stdin", U_BYTES, F64(stdin_bytes), 0, 1 * GIB, "size of stdin"},
    {"files", U_COUNT, F32(input_files), 0, 1000, "input files"},
    {"file-size", U_BYTES, F64(input_file_bytes), 0, 1 * GIB, "size of each input file"},
    {"return-files", U_COUNT, F32(output_files), 0, 256, "returned files"},
    {"return-size", U_BYTES, F64(output_file_bytes), 0, 1 * GIB, "size of each returned file"},
    {"answer", U_BYTES, F64(answer_bytes), 64 * KIB, 4 * GIB,
     "all an execution returns: outputs, main() value, files"},
    {"nofile", U_COUNT, F32(nofile), 16, 65536, "open files per process"},
    {"stack", U_BYTES, F64(stack_bytes), 256 * KIB, 1 * GIB, "stack per process"},
};

static uint64_t get(const struct pbx_limits *l, const struct limit_desc *d)
{
    const char *p = (const char *)l + d->offset;

    return d->wide ? *(const uint64_t *)(const void *)p : *(const uint32_t *)(const void *)p;
}

static void put(struct pbx_limits *l, const struct limit_desc *d, uint64_t v)
{
    char *p = (char *)l + d->offset;

    if (d->wide)
        *(uint64_t *)(void *)p = v;
    else
        *(uint32_t *)(void *)p = (uint32_t)v;
}

/*
 * Parse "2.5", "2.5s", "300ms" (U_MS, into ms); "128M", "1G", "4096", "64k"
 * (U_BYTES); "10" (U_COUNT), unrounded.
 */
static int parse_number(enum unit unit, const char *s, double *out)
{
    char *end = NULL;
    double v;
    double mul = 1;
    size_t digits = strspn(s, "0123456789.");

    /* Plain decimal only: strtod alone would take hex, exponents, "inf" and "nan". */
    if (digits == 0 || memchr(s, '.', digits) != memrchr(s, '.', digits))
        return -1;
    errno = 0;
    v = strtod(s, &end);
    if (errno != 0 || end != s + digits || !isfinite(v) || v < 0)
        return -1;
    switch (unit) {
    case U_COUNT:
        if (*end != '\0' || v != floor(v))
            return -1;
        break;
    case U_MS:
        if (*end == '\0' || strcmp(end, "s") == 0)
            mul = 1000;
        else if (strcmp(end, "ms") == 0)
            mul = 1;
        else
            return -1;
        break;
    case U_BYTES:
        if (*end == '\0' || strcasecmp(end, "b") == 0)
            mul = 1;
        else if (strcasecmp(end, "k") == 0 || strcasecmp(end, "kb") == 0 ||
                 strcasecmp(end, "kib") == 0)
            mul = (double)KIB;
        else if (strcasecmp(end, "m") == 0 || strcasecmp(end, "mb") == 0 ||
                 strcasecmp(end, "mib") == 0)
            mul = (double)MIB;
        else if (strcasecmp(end, "g") == 0 || strcasecmp(end, "gb") == 0 ||
                 strcasecmp(end, "gib") == 0)
            mul = (double)GIB;
        else
            return -1;
        break;
    }
    v *= mul;
    if (v > 1e18)
        return -1;
    *out = v;
    return 0;
}

/* parse_number(), to the nearest whole unit. */
static int parse_value(enum unit unit, const char *s, uint64_t *out)
{
    double v;

    if (parse_number(unit, s, &v) < 0)
        return -1;
    *out = (uint64_t)llround(v);
    return 0;
}

static const char *unit_hint(enum unit u)
{
    switch (u) {
    case U_MS:
        return "seconds such as 2.5 or 2.5s, or milliseconds such as 300ms";
    case U_BYTES:
        return "bytes with an optional K, M or G suffix, such as 128M";
    case U_COUNT:
    default:
        return "a whole number";
    }
}

int pbx_limits_set(struct pbx_limits *l, const char *assignment, struct pbx_error **err)
{
    const char *eq = strchr(assignment, '=');
    size_t nlen;
    uint64_t v;

    if (eq == NULL)
        return pbx_error_set(err, PBX_E_INVAL, "limit `%s` is not NAME=VALUE", assignment);
    nlen = (size_t)(eq - assignment);
    for (size_t i = 0; i < sizeof(descs) / sizeof(descs[0]); i++) {
        const struct limit_desc *d = &descs[i];

        if (strlen(d->name) != nlen || strncmp(d->name, assignment, nlen) != 0)
            continue;
        if (parse_value(d->unit, eq + 1, &v) < 0)
            return pbx_error_set(err, PBX_E_INVAL, "limit %s: `%s` is not %s", d->name, eq + 1,
                                 unit_hint(d->unit));
        if (v < d->min || v > d->max)
            return pbx_error_set(err, PBX_E_INVAL,
                                 "limit %s: %s is out of range [%" PRIu64 ", %" PRIu64 "]%s",
                                 d->name, eq + 1, d->min, d->max,
                                 d->unit == U_BYTES ? " bytes"
                                 : d->unit == U_MS  ? " ms"
                                                    : "");
        put(l, d, v);
        return 0;
    }
    return pbx_error_set(err, PBX_E_INVAL,
                         "unknown limit `%.*s` (known: wall cpu memory pids disk inodes stdout "
                         "stderr code stdin files file-size return-files return-size nofile stack)",
                         (int)nlen, assignment);
}

int pbx_limits_check_timeout(double seconds, struct pbx_error **err)
{
    if (!isfinite(seconds) || seconds <= 0 || seconds > PBX_LIMITS_TIMEOUT_MAX_S)
        return pbx_error_set(err, PBX_E_INVAL, "`timeout` must be between 0 and %d seconds",
                             PBX_LIMITS_TIMEOUT_MAX_S);
    return 0;
}

int pbx_limits_set_timeout_text(struct pbx_limits *l, const char *text, struct pbx_error **err)
{
    double ms;

    if (text == NULL || parse_number(U_MS, text, &ms) < 0)
        return pbx_error_set(err, PBX_E_INVAL, "`%s` is not %s", text ? text : "", unit_hint(U_MS));
    return pbx_limits_set_timeout(l, ms / 1000, err);
}

int pbx_limits_set_timeout(struct pbx_limits *l, double seconds, struct pbx_error **err)
{
    uint32_t ms;

    if (pbx_limits_check_timeout(seconds, err) < 0)
        return -1;
    ms = (uint32_t)ceil(seconds * 1000 - 1e-6);
    if (ms == 0)
        ms = 1;
    l->wall_ms = ms;
    l->cpu_ms = ms;
    return 0;
}

int pbx_limits_check(const struct pbx_limits *l, struct pbx_error **err)
{
    for (size_t i = 0; i < sizeof(descs) / sizeof(descs[0]); i++) {
        const struct limit_desc *d = &descs[i];
        uint64_t v = get(l, d);

        if (v < d->min || v > d->max)
            return pbx_error_set(err, PBX_E_INVAL,
                                 "limit %s = %" PRIu64 " is out of range [%" PRIu64 ", %" PRIu64
                                 "]",
                                 d->name, v, d->min, d->max);
    }
    return 0;
}

char *pbx_limits_describe(const struct pbx_limits *l)
{
    char *out = xstrdup("");

    for (size_t i = 0; i < sizeof(descs) / sizeof(descs[0]); i++) {
        const struct limit_desc *d = &descs[i];
        uint64_t v = get(l, d);
        char val[64];
        char *next;

        if (d->unit == U_MS)
            snprintf(val, sizeof(val), "%.3gs", (double)v / 1000.0);
        else if (d->unit == U_BYTES && v >= MIB && v % MIB == 0)
            snprintf(val, sizeof(val), "%" PRIu64 "M", v / MIB);
        else if (d->unit == U_BYTES && v >= KIB && v % KIB == 0)
            snprintf(val, sizeof(val), "%" PRIu64 "K", v / KIB);
        else
            snprintf(val, sizeof(val), "%" PRIu64, v);
        next = xasprintf("%s  %-13s %-8s %s\n", out, d->name, val, d->what);
        free(out);
        out = next;
    }
    return out;
}
