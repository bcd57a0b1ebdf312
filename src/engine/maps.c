/*
 * Reading the process's own mappings from /proc/self/maps (maps.h): the text into an mmap'd
 * buffer, then one line at a time.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "engine/maps.h"
#include "common/banned.h"

#define MAPS_MAX ((size_t)1 << 20) /* the text at most */

int pbx__maps_read(int fd, struct pbx_maps *m)
{
    size_t len = 0;

    memset(m, 0, sizeof(*m));
    if (fd < 0)
        return -1;
    m->buf = mmap(NULL, MAPS_MAX, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m->buf == MAP_FAILED) {
        m->buf = NULL;
        return -1;
    }
    for (;;) {
        ssize_t n = pread(fd, m->buf + len, MAPS_MAX - 1 - len, (off_t)len);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 || (n > 0 && len + (size_t)n >= MAPS_MAX - 1)) {
            /* Unreadable, or more mappings than expected: leave them be. */
            pbx__maps_free(m);
            return -1;
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    m->buf[len] = '\0';
    m->next = m->buf;
    return 0;
}

bool pbx__maps_next(struct pbx_maps *m, struct pbx_mapping *out)
{
    while (m->next != NULL && *m->next != '\0') {
        char *line = m->next;
        char *end = strchr(line, '\n');
        unsigned long lo, hi, inode;
        int name = -1;

        if (end != NULL)
            *end = '\0';
        m->next = end != NULL ? end + 1 : NULL;
        memset(out, 0, sizeof(*out));
        if (sscanf(line, "%lx-%lx %4s %*s %*s %lu %n", &lo, &hi, out->perms, &inode, &name) < 4 ||
            lo >= hi)
            continue;
        out->lo = lo;
        out->hi = hi;
        out->inode = inode;
        out->name = name > 0 ? line + name : "";
        return true;
    }
    return false;
}

bool pbx__maps_owns(const struct pbx_maps *m, uintptr_t lo, uintptr_t hi)
{
    uintptr_t b = (uintptr_t)m->buf;

    return m->buf != NULL && lo < b + MAPS_MAX && b < hi;
}

void pbx__maps_free(struct pbx_maps *m)
{
    if (m->buf != NULL)
        munmap(m->buf, MAPS_MAX);
    memset(m, 0, sizeof(*m));
}
