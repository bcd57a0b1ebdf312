/*
 * Cell cgroups behind one interface, with cgroup v1 and v2 backends
 * (cgroup_v1.c, cgroup_v2.c) and a "none" fallback when no controller is
 * usable (the engine then leans on rlimits).
 *
 * Layout: the supervisor's own cgroup in each hierarchy gets a child
 * "pybox-<pid>" (the "parent"), and each cell a grandchild "cell-<id>".  The
 * supervisor (host root) creates them, writes the limits, and hands the cell
 * fds of the cell cgroups' cgroup.procs opened for writing; the cell joins by
 * writing "0" to each (the kernel checks the opener's credentials, so the cell
 * needs no access to /sys).  After the cell is gone the supervisor reads the
 * OOM-kill count, kills any leftover member and removes the directories.
 *
 * The cgroup filesystem root ("/sys/fs/cgroup") and the text of
 * /proc/self/cgroup are injected so tests run against fake trees.
 */
#ifndef PBX_SANDBOX_CGROUP_H
#define PBX_SANDBOX_CGROUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

enum pbx_cgroup_ctl {
    PBX_CGROUP_MEMORY = 0,
    PBX_CGROUP_PIDS = 1,
    PBX_CGROUP_CPU = 2,
    PBX_CGROUP_NCTL = 3,
};

enum pbx_cgroup_version {
    PBX_CGROUP_NONE = 0, /* controller not usable */
    PBX_CGROUP_V1 = 1,
    PBX_CGROUP_V2 = 2,
};

struct pbx_cgroup_limits {
    uint64_t memory_bytes; /* memory + swap cap; 0 = unlimited */
    uint64_t pids;         /* max tasks; 0 = unlimited */
    uint32_t cpu_percent;  /* CPU bandwidth, 100 = one core; 0 = unlimited */
};

/* The manager: which backend serves each controller, and the parent dirs. */
struct pbx_cgroups;
/* One cell's cgroups. */
struct pbx_cgroup_cell;

/*
 * Parse the text of /proc/self/cgroup: for v1 lines ("4:memory:/a/b") put the
 * path for `controller` ("memory", "pids", "cpu") in *path; for the v2 line
 * ("0::/a") use controller NULL.  Returns 0 and a heap path, or -PBX_E_NOTFOUND.
 * No syscalls (fuzzed by fuzz/fuzz_proc_cgroup.c).
 */
int pbx__cgroup_parse_proc(const char *text, size_t len, const char *controller, char **path);

/*
 * Detect the usable backend of every controller under `fs_root` for the
 * process whose /proc/self/cgroup text is `self_cgroup`, and create the parent
 * cgroups named `name` (e.g. "pybox-1234").  Never fails for a missing
 * controller: that controller is PBX_CGROUP_NONE and pbx_cgroup_why() says
 * why.  Returns < 0 only on a hard error (out of memory).
 */
int pbx_cgroup_setup(const char *fs_root, const char *self_cgroup, const char *name,
                     struct pbx_cgroups **out, struct pbx_error **err);

/* Which backend serves `ctl`. */
enum pbx_cgroup_version pbx_cgroup_version_of(const struct pbx_cgroups *cg,
                                              enum pbx_cgroup_ctl ctl);

/* A plain-words reason why `ctl` is PBX_CGROUP_NONE, or where it lives. Never NULL. */
const char *pbx_cgroup_why(const struct pbx_cgroups *cg, enum pbx_cgroup_ctl ctl);

/* Remove the parent cgroups (after every cell is destroyed) and free. NULL is fine. */
void pbx_cgroup_teardown(struct pbx_cgroups *cg);

/*
 * Setup removes the cgroups that dead supervisors left where it creates its
 * own (docs/design/cgroups.md), killing what they still hold.  This is the
 * number it had to leave because a member, though killed, had not finished
 * exiting within its wait; 0 without cgroups.
 */
size_t pbx_cgroup_stale_waiting(const struct pbx_cgroups *cg);

/*
 * Try once more, without waiting, to remove those cgroups of dead
 * supervisors; returns how many still hold a member (0: nothing is left to
 * wait for).  It only reads `cg`, so it may run on a thread of its own beside
 * cell calls, but not beside setup or teardown.  NULL is fine.
 */
size_t pbx_cgroup_reap_stale(const struct pbx_cgroups *cg);

/*
 * Create the cgroups of cell `id` with `limits` applied (memory including
 * swap: memsw on v1, memory.swap.max=0 on v2; pids; CPU bandwidth).
 * Thread-safe with respect to other cells.
 */
int pbx_cgroup_cell_create(struct pbx_cgroups *cg, uint64_t id,
                           const struct pbx_cgroup_limits *limits, struct pbx_cgroup_cell **out,
                           struct pbx_error **err);

/*
 * Open the cgroup.procs files of the cell's cgroups for writing (O_CLOEXEC)
 * into fds[0..n), at most `max`; returns n (0 when no controller is usable).
 * The caller owns the fds.
 */
/*
 * Open the cell's pids.current for reading (O_CLOEXEC) into *fd: how many
 * processes and threads its cgroup holds, the exited but unreaped ones
 * included.  PBX_E_UNSUPPORTED when the cell has no pids controller.
 */
int pbx_cgroup_cell_count_fd(struct pbx_cgroup_cell *cell, int *fd, struct pbx_error **err);

int pbx_cgroup_cell_procs_fds(struct pbx_cgroup_cell *cell, int *fds, size_t max,
                              struct pbx_error **err);

/*
 * Whether cells of `cg` can be reused (pbx_cgroup_cell_reuse() may succeed):
 * false without cgroups, and with a cgroup v2 memory controller, whose
 * memory.peak cannot be reset for every reader.  NULL is fine.
 */
bool pbx_cgroup_cells_reusable(const struct pbx_cgroups *cg);

/*
 * Make a cell whose processes are all gone ready for another execution: undo
 * its limits, give back what is still charged to it, reset its peak memory,
 * take its OOM-kill count as the new zero and apply `limits`.  Pooled cells
 * spare the kernel a memory cgroup created and removed per execution (each
 * removal leaves a dying memcg behind for a while).  Returns < 0 when the cell
 * cannot be reused (a member left, a write refused, a backend that cannot
 * reset its counters); the caller then destroys it.
 */
int pbx_cgroup_cell_reuse(struct pbx_cgroup_cell *cell, const struct pbx_cgroup_limits *limits,
                          struct pbx_error **err);

/* The number of OOM kills in the cell's memory cgroup during its current use (0 without one). */
uint64_t pbx_cgroup_cell_oom_kills(struct pbx_cgroup_cell *cell);

/* The peak memory use in bytes, or 0 when unknown. */
uint64_t pbx_cgroup_cell_peak_memory(struct pbx_cgroup_cell *cell);

/*
 * How many forks the pids limit refused in the cell's cgroup so far (the
 * "max" count of pids.events; 0 without a pids controller).
 */
uint64_t pbx_cgroup_cell_pids_denied(struct pbx_cgroup_cell *cell);

/* The memory the cell's cgroup holds now, in bytes (0 without a memory controller). */
uint64_t pbx_cgroup_cell_memory_current(struct pbx_cgroup_cell *cell);

/*
 * The number of member processes, as the cgroup lists them (0 without one);
 * SIZE_MAX when a list cannot be read, so that callers never take it for empty.
 */
size_t pbx_cgroup_cell_count(struct pbx_cgroup_cell *cell);

/* SIGKILL every member (cgroup.kill on v2 when present, else each pid listed). */
void pbx_cgroup_cell_kill(struct pbx_cgroup_cell *cell);

/*
 * Kill what is left, wait (bounded) until the cgroups are empty, remove them
 * and free the handle.  Returns < 0 if a directory could not be removed (it is
 * logged and left behind for the parent's teardown).  NULL is fine.
 */
int pbx_cgroup_cell_destroy(struct pbx_cgroup_cell *cell, struct pbx_error **err);

#endif
