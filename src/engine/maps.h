/*
 * The zygote's own mappings, as its /proc/self/maps lists them: one reader for the huge-page
 * collapse (hugepage.c) and the learning of a run's pages (prefault.c).  The text comes from
 * the kernel, not from a client; it is still read within a fixed buffer and never trusted to
 * fit it.
 */
#ifndef PBX_ENGINE_MAPS_H
#define PBX_ENGINE_MAPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One line of maps. */
struct pbx_mapping {
    uintptr_t lo, hi; /* [lo, hi) */
    char perms[5];    /* "rw-p" and the like */
    uint64_t inode;   /* 0 for anonymous memory */
    const char *name; /* the path or "[heap]" and the like; "" for none */
};

/* The text of maps, in a buffer of its own (mmap'd: the caller's heap stays as it is). */
struct pbx_maps {
    char *buf;  /* NULL when nothing was read */
    char *next; /* the next line */
};

/*
 * Read all of maps from `fd` (from its start, with pread: the fd may be read again; not
 * closed).  Returns 0, or -1 when it cannot be read or holds more than 1 MiB (the zygote's
 * holds about 80 kB): then there is nothing to walk.
 */
int pbx__maps_read(int fd, struct pbx_maps *m);

/* The next mapping into *out: false at the end.  Lines that do not parse are skipped. */
bool pbx__maps_next(struct pbx_maps *m, struct pbx_mapping *out);

/* Whether [lo, hi) overlaps the reader's own buffer (a mapping of its own while it lives). */
bool pbx__maps_owns(const struct pbx_maps *m, uintptr_t lo, uintptr_t hi);

void pbx__maps_free(struct pbx_maps *m);

#endif
