/*
 * The jail's ids: which ids of pybox's own user namespace a jail's uid and
 * gid 0.. map to (its uid_map and gid_map, "0 BASE COUNT").  A range given by
 * hand is checked against the ids this namespace has; the default one is kept
 * when it fits, and replaced by one that does when it does not (a container
 * whose user namespace holds 65536 ids has no 1000000000).
 */
#ifndef PBX_SANDBOX_UIDMAP_H
#define PBX_SANDBOX_UIDMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "sandbox/rootfs.h"

#define PBX_UIDMAP_DEFAULT_BASE  1000000000u
#define PBX_UIDMAP_DEFAULT_COUNT 65536u
/* A jail uses ids 0 (its root: the zygote, the cells' setup) to PBX_JOB_UID (the user's code). */
#define PBX_UIDMAP_MIN_COUNT (PBX_JOB_UID + 1u)
/* An automatic pick takes at most this many ids (the default's count). */
#define PBX_UIDMAP_AUTO_MAX PBX_UIDMAP_DEFAULT_COUNT
/* The kernel's limit on the lines of one uid_map. */
#define PBX_UIDMAP_MAX_EXTENTS 340
/* The last valid id: (uid_t)-1 means "no id" to the kernel. */
#define PBX_UIDMAP_ID_MAX 4294967294u

struct pbx_uidmap_extent {
    uint32_t first; /* the first id of this user namespace the line maps */
    uint32_t count; /* how many, from first */
};

/* The ids the calling process's user namespace has, and the ids a jail must not use. */
struct pbx_uidmap_host {
    struct pbx_uidmap_extent uid[PBX_UIDMAP_MAX_EXTENTS]; /* /proc/self/uid_map */
    unsigned nuid;                                        /* its lines */
    struct pbx_uidmap_extent gid[PBX_UIDMAP_MAX_EXTENTS]; /* /proc/self/gid_map */
    unsigned ngid;                                        /* its lines */
    uint32_t own[7]; /* 0 and the process's real, effective and saved uids and gids */
    unsigned nown;   /* how many of own[] are set */
};

/*
 * Parse a uid_map or gid_map's text ("FIRST LOWER COUNT" lines) into
 * `ext` (room for `max`).  Returns the number of lines, or < 0 with *err.
 */
int pbx_uidmap_parse_map(const char *text, struct pbx_uidmap_extent *ext, size_t max,
                         struct pbx_error **err);

/*
 * Fill `host` from /proc/self/uid_map, /proc/self/gid_map and the process's
 * own ids.  Returns 0, or < 0 with *err.
 */
int pbx_uidmap_host_read(struct pbx_uidmap_host *host, struct pbx_error **err);

/*
 * Parse "BASE[:COUNT]" (COUNT defaults to 65536), or "auto" (*is_auto set:
 * the default range when it fits, else one picked).  Checks the syntax and
 * COUNT's bounds only; pbx_uidmap_check() checks the range against a
 * namespace.  Returns 0, or < 0 with *err.
 */
int pbx_uidmap_parse_spec(const char *spec, bool *is_auto, uint32_t *base, uint32_t *count,
                          struct pbx_error **err);

/*
 * Whether the jail ids BASE..BASE+COUNT-1 may be used here: at least
 * PBX_UIDMAP_MIN_COUNT of them, all inside one line of the uid_map and one of
 * the gid_map (the kernel accepts nothing else), none of them 0 or one of the
 * process's own ids.  Returns 0, or < 0 with *err naming the ranges available.
 */
int pbx_uidmap_check(const struct pbx_uidmap_host *host, uint32_t base, uint32_t count,
                     struct pbx_error **err);

/*
 * Pick jail ids: the largest run of ids that both maps have and that holds
 * no id pbx_uidmap_check() refuses (the highest of equal ones), and of it the
 * top half (rounded up), but at least PBX_UIDMAP_MIN_COUNT and at most PBX_UIDMAP_AUTO_MAX
 * ids.  In a namespace of ids 0-65535 that is 32768-65535: the low ids, where
 * a container image's own users live, are left to them.  Returns 0, or < 0
 * with *err when no run is large enough.
 */
int pbx_uidmap_pick(const struct pbx_uidmap_host *host, uint32_t *base, uint32_t *count,
                    struct pbx_error **err);

/*
 * The ranges this namespace has, for messages: "uids 0-65535, gids 0-65535"
 * (the first lines of each map; a longer list ends in ", ...").  Writes at
 * most `size` bytes, NUL included.
 */
void pbx_uidmap_host_ranges(const struct pbx_uidmap_host *host, char *out, size_t size);

#endif
