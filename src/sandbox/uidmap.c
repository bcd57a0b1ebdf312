/*
 * The jail's ids: reading the ids pybox's own user namespace has, checking a
 * range of jail ids against them, and picking one when the default does not
 * fit.
 *
 * Why the rules are these: the supervisor writes "0 BASE COUNT" to a jail's
 * uid_map and gid_map, and the kernel accepts it only when BASE..BASE+COUNT-1
 * lies inside one line of the writer's own map (map_id_range_down() in
 * kernel/user_namespace.c); a range across two lines, or partly outside, is
 * refused with EPERM, which says nothing of why.  So the check is made first,
 * and its message names what the namespace has.  A jail id must also never be
 * 0 or one of pybox's own ids: a jail process with the server's uid or gid
 * would own the server's files and could signal it (kill(2) compares the
 * real and saved uids, whatever the namespace).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "sandbox/uidmap.h"
#include "common/banned.h"

int pbx_uidmap_parse_map(const char *text, struct pbx_uidmap_extent *ext, size_t max,
                         struct pbx_error **err)
{
    const char *p = text;
    size_t n = 0;

    while (*p != '\0') {
        unsigned long v[3];

        for (int i = 0; i < 3; i++) {
            char *end = NULL;

            while (*p == ' ' || *p == '\t')
                p++;
            errno = 0;
            v[i] = strtoul(p, &end, 10);
            if (end == p || *p == '-' || errno != 0 || v[i] > UINT32_MAX)
                return pbx_error_set(err, PBX_E_INVAL, "unreadable id map line %zu", n + 1);
            p = end;
        }
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p != '\n' && *p != '\0')
            return pbx_error_set(err, PBX_E_INVAL, "unreadable id map line %zu", n + 1);
        if (*p == '\n')
            p++;
        if (n == max)
            return pbx_error_set(err, PBX_E_INVAL, "more than %zu id map lines", max);
        ext[n].first = (uint32_t)v[0];
        ext[n].count = (uint32_t)v[2];
        n++;
    }
    return (int)n;
}

static int read_map(const char *path, struct pbx_uidmap_extent *ext, unsigned *n,
                    struct pbx_error **err)
{
    cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC);
    char text[PBX_UIDMAP_MAX_EXTENTS * 36 + 1]; /* three 10-digit numbers and spaces a line */
    size_t len = 0;
    ssize_t r;
    int lines;

    if (fd < 0)
        return pbx_error_set(err, errno, "open %s", path);
    while ((r = read(fd, text + len, sizeof(text) - 1 - len)) > 0)
        len += (size_t)r;
    if (r < 0)
        return pbx_error_set(err, errno, "read %s", path);
    text[len] = '\0';
    lines = pbx_uidmap_parse_map(text, ext, PBX_UIDMAP_MAX_EXTENTS, err);
    if (lines < 0)
        return pbx_error_prefix(err, "%s", path);
    *n = (unsigned)lines;
    return 0;
}

static void add_own(struct pbx_uidmap_host *host, uint32_t id)
{
    for (unsigned i = 0; i < host->nown; i++) {
        if (host->own[i] == id)
            return;
    }
    host->own[host->nown++] = id;
}

int pbx_uidmap_host_read(struct pbx_uidmap_host *host, struct pbx_error **err)
{
    uid_t ru, eu, su;
    gid_t rg, eg, sg;

    memset(host, 0, sizeof(*host));
    if (read_map("/proc/self/uid_map", host->uid, &host->nuid, err) < 0 ||
        read_map("/proc/self/gid_map", host->gid, &host->ngid, err) < 0)
        return -1;
    if (getresuid(&ru, &eu, &su) < 0 || getresgid(&rg, &eg, &sg) < 0)
        return pbx_error_set(err, errno, "getresuid");
    add_own(host, 0);
    add_own(host, (uint32_t)ru);
    add_own(host, (uint32_t)eu);
    add_own(host, (uint32_t)su);
    add_own(host, (uint32_t)rg);
    add_own(host, (uint32_t)eg);
    add_own(host, (uint32_t)sg);
    return 0;
}

int pbx_uidmap_parse_spec(const char *spec, bool *is_auto, uint32_t *base, uint32_t *count,
                          struct pbx_error **err)
{
    unsigned long b;
    unsigned long c = PBX_UIDMAP_DEFAULT_COUNT;
    char *end = NULL;

    if (strcmp(spec, "auto") == 0) {
        *is_auto = true;
        *base = PBX_UIDMAP_DEFAULT_BASE;
        *count = PBX_UIDMAP_DEFAULT_COUNT;
        return 0;
    }
    errno = 0;
    b = strtoul(spec, &end, 10);
    if (end == spec || spec[0] == '-' || errno != 0 || b > PBX_UIDMAP_ID_MAX ||
        (*end != '\0' && *end != ':'))
        return pbx_error_set(err, PBX_E_INVAL, "`%s` is not BASE[:COUNT] (whole numbers) or auto",
                             spec);
    if (*end == ':') {
        const char *t = end + 1;

        errno = 0;
        c = strtoul(t, &end, 10);
        if (end == t || t[0] == '-' || errno != 0 || *end != '\0')
            return pbx_error_set(err, PBX_E_INVAL,
                                 "`%s` is not BASE[:COUNT] (whole numbers) or auto", spec);
    }
    if (c < PBX_UIDMAP_MIN_COUNT)
        return pbx_error_set(err, PBX_E_INVAL,
                             "`%s`: a jail needs at least %u ids (its 0 to %u), not %lu", spec,
                             PBX_UIDMAP_MIN_COUNT, PBX_UIDMAP_MIN_COUNT - 1, c);
    if (c > (unsigned long)PBX_UIDMAP_ID_MAX + 1 - b)
        return pbx_error_set(err, PBX_E_INVAL, "`%s` goes beyond the last id, %u", spec,
                             PBX_UIDMAP_ID_MAX);
    *is_auto = false;
    *base = (uint32_t)b;
    *count = (uint32_t)c;
    return 0;
}

/* Append "NAME a-b, c-d" to out (at most four ranges, then ", ..."). */
static void list_ranges(const char *name, const struct pbx_uidmap_extent *ext, unsigned n,
                        char *out, size_t size)
{
    size_t len = strlen(out);

    len += (size_t)snprintf(out + len, len < size ? size - len : 0, "%s", name);
    if (n == 0)
        snprintf(out + len, len < size ? size - len : 0, " none");
    for (unsigned i = 0; i < n && len < size; i++) {
        if (i == 4) {
            snprintf(out + len, size - len, ", ...");
            break;
        }
        len += (size_t)snprintf(out + len, size - len, "%s %u-%u", i ? "," : "", ext[i].first,
                                (uint32_t)((uint64_t)ext[i].first + ext[i].count - 1));
    }
}

void pbx_uidmap_host_ranges(const struct pbx_uidmap_host *host, char *out, size_t size)
{
    size_t len;

    if (size == 0)
        return;
    out[0] = '\0';
    list_ranges("uids", host->uid, host->nuid, out, size);
    len = strlen(out);
    if (len + 2 < size) {
        memcpy(out + len, "; ", 3);
        list_ranges("gids", host->gid, host->ngid, out, size);
    }
}

/* Whether [base, base+count) lies inside one of the extents. */
static bool inside_one(const struct pbx_uidmap_extent *ext, unsigned n, uint64_t base,
                       uint64_t count)
{
    for (unsigned i = 0; i < n; i++) {
        if (base >= ext[i].first && base + count <= (uint64_t)ext[i].first + ext[i].count)
            return true;
    }
    return false;
}

int pbx_uidmap_check(const struct pbx_uidmap_host *host, uint32_t base, uint32_t count,
                     struct pbx_error **err)
{
    uint64_t end = (uint64_t)base + count; /* one past the last */
    char ranges[256];

    if (count < PBX_UIDMAP_MIN_COUNT)
        return pbx_error_set(err, PBX_E_INVAL, "a jail needs at least %u ids (its 0 to %u), not %u",
                             PBX_UIDMAP_MIN_COUNT, PBX_UIDMAP_MIN_COUNT - 1, count);
    if (!inside_one(host->uid, host->nuid, base, count) ||
        !inside_one(host->gid, host->ngid, base, count)) {
        pbx_uidmap_host_ranges(host, ranges, sizeof(ranges));
        return pbx_error_set(err, PBX_E_INVAL,
                             "jail ids %u-%u are not all in one range of this user namespace's "
                             "ids (%s)",
                             base, (uint32_t)(end - 1), ranges);
    }
    for (unsigned i = 0; i < host->nown; i++) {
        if (host->own[i] >= base && host->own[i] < end)
            return pbx_error_set(err, PBX_E_INVAL,
                                 "jail ids %u-%u include %u (%s): a jail's processes must not "
                                 "share an id with pybox",
                                 base, (uint32_t)(end - 1), host->own[i],
                                 host->own[i] == 0 ? "root" : "pybox's own uid or gid");
    }
    return 0;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a;
    uint32_t y = *(const uint32_t *)b;

    return x < y ? -1 : x > y;
}

/* Keep [lo, hi) when it is longer than the best so far (or as long and higher). */
static void consider(uint64_t lo, uint64_t hi, uint64_t *best_lo, uint64_t *best_hi)
{
    uint64_t len = hi > lo ? hi - lo : 0;
    uint64_t best = *best_hi - *best_lo;

    if (len > best || (len == best && len > 0 && lo > *best_lo)) {
        *best_lo = lo;
        *best_hi = hi;
    }
}

int pbx_uidmap_pick(const struct pbx_uidmap_host *host, uint32_t *base, uint32_t *count,
                    struct pbx_error **err)
{
    uint32_t own[7];
    uint64_t best_lo = 0;
    uint64_t best_hi = 0;
    uint64_t len;
    uint64_t n;
    char ranges[256];

    memcpy(own, host->own, host->nown * sizeof(own[0]));
    qsort(own, host->nown, sizeof(own[0]), cmp_u32);
    for (unsigned i = 0; i < host->nuid; i++) {
        for (unsigned j = 0; j < host->ngid; j++) {
            uint64_t lo =
                host->uid[i].first > host->gid[j].first ? host->uid[i].first : host->gid[j].first;
            uint64_t hi = (uint64_t)host->uid[i].first + host->uid[i].count;
            uint64_t ghi = (uint64_t)host->gid[j].first + host->gid[j].count;

            if (ghi < hi)
                hi = ghi;
            if (hi > (uint64_t)PBX_UIDMAP_ID_MAX + 1)
                hi = (uint64_t)PBX_UIDMAP_ID_MAX + 1;
            /* Split the run at pybox's own ids, which the jail must not have. */
            for (unsigned k = 0; k < host->nown && lo < hi; k++) {
                if (own[k] < lo || own[k] >= hi)
                    continue;
                consider(lo, own[k], &best_lo, &best_hi);
                lo = (uint64_t)own[k] + 1;
            }
            consider(lo, hi, &best_lo, &best_hi);
        }
    }
    len = best_hi - best_lo;
    if (len < PBX_UIDMAP_MIN_COUNT) {
        pbx_uidmap_host_ranges(host, ranges, sizeof(ranges));
        return pbx_error_set(err, PBX_E_UNSUPPORTED,
                             "no %u ids in a row for a jail in this user namespace, besides root "
                             "and pybox's own (%s)",
                             PBX_UIDMAP_MIN_COUNT, ranges);
    }
    n = (len + 1) / 2; /* rounded up: the top 32768 of ids 1-65535 */
    if (n < PBX_UIDMAP_MIN_COUNT)
        n = PBX_UIDMAP_MIN_COUNT;
    if (n > PBX_UIDMAP_AUTO_MAX)
        n = PBX_UIDMAP_AUTO_MAX;
    *base = (uint32_t)(best_hi - n);
    *count = (uint32_t)n;
    return 0;
}
