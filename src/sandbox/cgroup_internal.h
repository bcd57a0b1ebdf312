/*
 * Internals shared by cgroup.c (common part and dispatch), cgroup_v1.c and
 * cgroup_v2.c, and by tests/unit/test_cgroup.c, which injects the
 * directory-changing operations to mimic the kernel on fake trees.
 */
#ifndef PBX_SANDBOX_CGROUP_INTERNAL_H
#define PBX_SANDBOX_CGROUP_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/log.h"
#include "sandbox/cgroup.h"

/*
 * The operations that change a cgroup tree.  Each behaves like the system
 * call it is named after: it returns 0, or -1 with errno set.  On cgroupfs
 * the kernel fills a new directory with control files and rmdir() removes a
 * directory that still holds them; a fake tree needs both done by hand, so
 * the unit test passes its own table.  Reads and the cgroup.procs fds use
 * plain open(2) and work on either kind of tree.
 */
struct pbx__cgroup_ops {
    int (*mkdir)(void *data, const char *path);                              /* mode 0755 */
    int (*rmdir)(void *data, const char *path);                              /* an empty cgroup */
    int (*write)(void *data, const char *path, const char *buf, size_t len); /* one write(2) */
    void *data;                                                              /* passed to each */
};

/* What pbx_cgroup_setup() found out about one controller. */
struct pbx__cgroup_ctl_state {
    enum pbx_cgroup_version version; /* backend serving it, NONE when unusable */
    char *parent;                    /* the "pybox-<pid>-<n>" dir; NULL when not created */
    char *why;                       /* plain words, never NULL after setup */
    bool swap_limited;               /* memory: swap is capped too (memsw / memory.swap.max) */
};

/*
 * The manager.  Read-only once pbx_cgroup_setup() returns, which is what
 * makes the per-cell functions safe to call from several threads at once
 * without a lock: they only read it and touch their own cell's directories.
 */
struct pbx_cgroups {
    char *fs_root;              /* "/sys/fs/cgroup" or a fake tree */
    char *name;                 /* parent name, "pybox-<pid>-<n>" */
    struct pbx__cgroup_ops ops; /* tree-changing operations */
    char *v2_root;              /* the cgroup2 mount, or NULL */
    char *v2_self;              /* the supervisor's own v2 cgroup dir */
    char *v2_base;      /* where the v2 parents go: v2_self, or its parent when v2_self is */
                        /* the leaf PBX_CGROUP_V2_LEAF (pbx__cgroup_v2_probe()) */
    bool v2_move_tried; /* this setup tried to move the supervisor into the leaf */
    char *v2_unmoved;   /* and why it did not, or NULL */
    struct pbx__cgroup_ctl_state ctl[PBX_CGROUP_NCTL]; /* indexed by enum pbx_cgroup_ctl */
    char *stale_base[PBX_CGROUP_NCTL]; /* dirs reaped of dead supervisors' parents */
    enum pbx_cgroup_version stale_version[PBX_CGROUP_NCTL]; /* the backend of each */
    size_t stale_waiting; /* parents setup left there, a member still exiting */
};

/* One cell: a directory per usable controller (v2 controllers share one). */
struct pbx_cgroup_cell {
    struct pbx_cgroups *cg;     /* the manager, not owned */
    uint64_t id;                /* the N of "cell-N" */
    char *dir[PBX_CGROUP_NCTL]; /* owned; NULL when the controller is unusable */
    uint64_t oom_base;          /* OOM kills counted before its current use */
};

/* The controller's name as the kernel spells it: "memory", "pids", "cpu". */
const char *pbx__cgroup_ctl_name(enum pbx_cgroup_ctl ctl);

/*
 * Like pbx_cgroup_setup(), with the tree-changing operations injected (NULL
 * for the real system calls).  The table is copied.
 */
int pbx__cgroup_setup_ops(const char *fs_root, const char *self_cgroup, const char *name,
                          const struct pbx__cgroup_ops *ops, struct pbx_cgroups **out,
                          struct pbx_error **err);

/*
 * Find "key N" at the start of a line of `text` (memory.events,
 * memory.oom_control) and store N.  Returns 0 or -PBX_E_NOTFOUND.  No syscalls.
 */
int pbx__cgroup_parse_key(const char *text, size_t len, const char *key, uint64_t *value);

/*
 * The pids of a cgroup.procs text (one decimal per line; other lines are
 * skipped) into a heap array the caller frees; returns the count.  No syscalls.
 */
size_t pbx__cgroup_parse_pids(const char *text, pid_t **out);

/*
 * Whether `name` is a parent's name, "pybox-<pid>-<n>" or the older
 * "pybox-<pid>": decimal, no sign or leading zero, 0 < pid <= INT_MAX,
 * n <= UINT32_MAX.  Stores the pid (pid may be NULL).  No syscalls.
 */
bool pbx__cgroup_parse_parent_name(const char *name, pid_t *pid);

/* How long destroy, teardown and the first reaping wait for killed members to leave. */
#define PBX_CGROUP_REMOVE_WAIT_NS (1000 * 1000 * 1000LL)

/* The backend of version `v` (cgroup.c), or NULL. */
const struct pbx__cgroup_backend *pbx__cgroup_backend_of(enum pbx_cgroup_version v);

/*
 * Kill the members of `dir` with `be` (NULL: none) and remove it, retrying while killed
 * members have not left, for up to `wait_ns` (0: one try).  Returns 0 or -errno (cgroup.c).
 */
int pbx__cgroup_remove_within(const struct pbx_cgroups *cg, const char *dir,
                              const struct pbx__cgroup_backend *be, long long wait_ns);

/*
 * Remove the cell-* directories a failed destroy (or a dead supervisor) left in `parent`,
 * each waiting up to `wait_ns`; one that stays is logged at `level` (cgroup_stale.c).
 */
void pbx__cgroup_stale_remove_cells(const struct pbx_cgroups *cg, const char *parent,
                                    const struct pbx__cgroup_backend *be, long long wait_ns,
                                    enum pbx_log_level level);

/*
 * Reap the stale parents in `base` (heap, taken over) unless an earlier controller did already,
 * and remember it in cg->stale_base for pbx_cgroup_reap_stale() (cgroup_stale.c).
 */
void pbx__cgroup_stale_reap_once(struct pbx_cgroups *cg, char *base, enum pbx_cgroup_version v);

/* Helpers of cgroup.c for the backends. */

/* "<dir>/<file>" on the heap. */
char *pbx__cgroup_path(const char *dir, const char *file);

/* Whether <dir>/<file> exists (any type). */
bool pbx__cgroup_exists(const char *dir, const char *file);

/*
 * Read a whole small file (capped at 4 MiB) into a NUL-terminated heap
 * buffer; the caller frees *text.  Returns 0 or -errno.
 */
int pbx__cgroup_read(const char *path, char **text, size_t *len);

/* Read <dir>/<file>, a single decimal number; 0 when absent or unparsable. */
uint64_t pbx__cgroup_read_u64(const char *dir, const char *file);

/* Read "key N" from <dir>/<file>; 0 when absent. */
uint64_t pbx__cgroup_read_key(const char *dir, const char *file, const char *key);

/* Write `value` to <dir>/<file> through cg->ops in one write. */
int pbx__cgroup_write(const struct pbx_cgroups *cg, const char *dir, const char *file,
                      const char *value, struct pbx_error **err);

/*
 * The backends.  setup_ctl() creates the parent of `ctl` and fills
 * cg->ctl[ctl] (version, parent, why); it never fails, an unusable controller
 * just stays PBX_CGROUP_NONE with the reason in why.  limit() writes the
 * limits of `ctl` into a new cell directory.  oom_kills() and peak_memory()
 * read the memory controller's counters (0 when unknown).  kill() SIGKILLs
 * every member of `dir`.
 */
struct pbx__cgroup_backend {
    int (*limit)(const struct pbx_cgroups *cg, enum pbx_cgroup_ctl ctl, const char *dir,
                 const struct pbx_cgroup_limits *limits, struct pbx_error **err);
    uint64_t (*oom_kills)(const char *dir);
    uint64_t (*peak_memory)(const char *dir);
    void (*kill)(const struct pbx_cgroups *cg, const char *dir);
    /* Undo every limit and counter of an empty cgroup, for its reuse; < 0 when it cannot. */
    int (*reset)(const struct pbx_cgroups *cg, enum pbx_cgroup_ctl ctl, const char *dir,
                 struct pbx_error **err);
};

/*
 * SIGKILL every process listed in <dir>/cgroup.procs (cgroup_v1.c; v2 uses it
 * too when cgroup.kill is missing).
 */
void pbx__cgroup_kill_listed(const char *dir);

/* cgroup v1: the mount dir of `ctl` under fs_root, heap, or NULL. */
char *pbx__cgroup_v1_mount(const char *fs_root, enum pbx_cgroup_ctl ctl);
void pbx__cgroup_v1_setup_ctl(struct pbx_cgroups *cg, enum pbx_cgroup_ctl ctl, const char *mount,
                              const char *self_cgroup);
extern const struct pbx__cgroup_backend pbx__cgroup_v1_backend;

/*
 * The v2 leaf the supervisor moves itself into when its own cgroup must
 * enable controllers for the cells' parents (cgroup_v2.c says when); the
 * parents are then made beside it.
 */
#define PBX_CGROUP_V2_LEAF "pybox-supervisor"

/*
 * cgroup v2: find the cgroup2 mount (fs_root itself, or fs_root/unified) and
 * the supervisor's cgroup in it; fills cg->v2_root, cg->v2_self and
 * cg->v2_base.  Returns the heap text of the root's cgroup.controllers, or
 * NULL without cgroup2.
 */
char *pbx__cgroup_v2_probe(struct pbx_cgroups *cg, const char *self_cgroup);
/* Whether the space-separated list `controllers` names `ctl`. */
bool pbx__cgroup_v2_lists(const char *controllers, const char *ctl);
/*
 * Move the supervisor into the leaf <v2_base>/pybox-supervisor (made when
 * missing), when it is the only process of v2_base; cg->v2_self becomes the
 * leaf.  Returns 0 when it moved, or when it is no longer listed there (an
 * engine of the same supervisor moved it; *why then says so), else -1 with
 * *why (heap) saying why it did not.  pbx__cgroup_v2_setup_ctl() calls it.
 */
int pbx__cgroup_v2_move_into_leaf(struct pbx_cgroups *cg, char **why);
void pbx__cgroup_v2_setup_ctl(struct pbx_cgroups *cg, enum pbx_cgroup_ctl ctl);
extern const struct pbx__cgroup_backend pbx__cgroup_v2_backend;

#endif
