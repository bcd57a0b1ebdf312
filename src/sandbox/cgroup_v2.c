/*
 * The cgroup v2 backend: one tree, mounted at <fs_root> itself (a pure v2
 * host) or at <fs_root>/unified (a hybrid host, usually with no controllers).
 *
 *   memory  memory.max and memory.swap.max = 0 (so memory.max caps memory
 *           plus swap), OOM kills from "oom_kill N" in memory.events, peak
 *           from memory.peak (Linux 5.19+);
 *   pids    pids.max;
 *   cpu     cpu.max "quota period".
 *
 * The no-internal-process rule shapes the layout: a non-root cgroup that has
 * processes cannot enable controllers for its children.  The parent
 * "pybox-<pid>" never holds a process, so it can enable them for the cells;
 * but to give the parent the controllers at all, the supervisor's own cgroup
 * must enable them in its cgroup.subtree_control, which the kernel refuses
 * (EBUSY) while the supervisor lives in it.
 *
 * So when that write fails with EBUSY and the supervisor is the only process
 * of its cgroup <own> (a systemd service with Delegate=yes: the subtree is
 * the service's to arrange), it moves itself into a leaf child,
 * <own>/pybox-supervisor, the layout systemd documents for delegated units
 * ("Control Group APIs and Delegation": a unit's processes in a leaf, its
 * own children beside it), and the parents go beside the leaf, in <own>,
 * which now holds no process and may enable the controllers.  Moving a
 * process is one write of its pid to the leaf's cgroup.procs, which takes
 * every thread along.  Processes pybox did not start are never moved: when
 * <own> holds any, the controllers stay NONE and the reason names them.  A
 * later setup (another engine of the same supervisor) finds itself in the
 * leaf and uses its parent as the base directly.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sandbox/cgroup_internal.h"
#include "common/cleanup.h"
#include "common/log.h"
#include "common/xalloc.h"
#include "common/banned.h"

static const char *const control_file[PBX_CGROUP_NCTL] = {"memory.max", "pids.max", "cpu.max"};

/* The CFS period of cpu.max: 100 ms, the kernel default. */
#define CPU_PERIOD_US 100000

bool pbx__cgroup_v2_lists(const char *controllers, const char *ctl)
{
    size_t n = strlen(ctl);
    const char *p = controllers;

    while (*p) {
        size_t len;

        p += strspn(p, " \t\n");
        len = strcspn(p, " \t\n");
        if (len == n && memcmp(p, ctl, n) == 0)
            return true;
        p += len;
    }
    return false;
}

char *pbx__cgroup_v2_probe(struct pbx_cgroups *cg, const char *self_cgroup)
{
    cleanup_free char *unified = pbx__cgroup_path(cg->fs_root, "unified");
    cleanup_free char *own = NULL;
    cleanup_free char *path = NULL;
    char *controllers = NULL;

    if (pbx__cgroup_exists(cg->fs_root, "cgroup.controllers"))
        cg->v2_root = xstrdup(cg->fs_root);
    else if (pbx__cgroup_exists(unified, "cgroup.controllers"))
        cg->v2_root = steal_pointer(&unified);
    else
        return NULL;
    path = pbx__cgroup_path(cg->v2_root, "cgroup.controllers");
    if (pbx__cgroup_read(path, &controllers, NULL) < 0)
        controllers = xstrdup("");
    if (pbx__cgroup_parse_proc(self_cgroup, strlen(self_cgroup), NULL, &own) == 0) {
        const char *leaf = strrchr(own, '/');

        cg->v2_self =
            strcmp(own, "/") == 0 ? xstrdup(cg->v2_root) : xasprintf("%s%s", cg->v2_root, own);
        /* Already in the leaf (an earlier engine moved us there): the parents go beside it. */
        if (leaf != NULL && leaf != own && strcmp(leaf + 1, PBX_CGROUP_V2_LEAF) == 0)
            cg->v2_base = xasprintf("%s%.*s", cg->v2_root, (int)(leaf - own), own);
        else
            cg->v2_base = xstrdup(cg->v2_self);
    }
    return controllers;
}

/* Whether <dir>/cgroup.controllers lists `ctl`. */
static bool offered(const char *dir, const char *ctl)
{
    cleanup_free char *path = pbx__cgroup_path(dir, "cgroup.controllers");
    cleanup_free char *text = NULL;

    return pbx__cgroup_read(path, &text, NULL) == 0 && pbx__cgroup_v2_lists(text, ctl);
}

int pbx__cgroup_v2_move_into_leaf(struct pbx_cgroups *cg, char **why)
{
    cleanup_free char *procs = pbx__cgroup_path(cg->v2_base, "cgroup.procs");
    cleanup_free char *text = NULL;
    cleanup_free pid_t *pids = NULL;
    cleanup_free char *leaf = NULL;
    struct pbx_error *err = NULL;
    char others[96] = "";
    bool listed = false;
    size_t len = 0;
    size_t n;
    char me[24];
    int r;

    if ((r = pbx__cgroup_read(procs, &text, NULL)) < 0) {
        *why = xasprintf("cannot read %s: %s", procs, strerror(-r));
        return -1;
    }
    n = pbx__cgroup_parse_pids(text, &pids);
    for (size_t i = 0; i < n; i++) {
        listed |= pids[i] == getpid();
        if (pids[i] != getpid() && len < sizeof(others))
            len += (size_t)snprintf(others + len, sizeof(others) - len, "%s%d", len ? " " : "",
                                    (int)pids[i]);
    }
    if (len > 0) {
        *why = xasprintf("it also holds pid %s%s, which pybox does not move", others,
                         len >= sizeof(others) ? " ..." : "");
        return -1;
    }
    if (!listed) {
        /* Another engine of this supervisor may have just moved it: worth a second try. */
        *why = xasprintf("pybox is not listed in %s", procs);
        return 0;
    }
    leaf = pbx__cgroup_path(cg->v2_base, PBX_CGROUP_V2_LEAF);
    if (cg->ops.mkdir(cg->ops.data, leaf) < 0 && errno != EEXIST) {
        *why = xasprintf("cannot create the leaf %s: %s", leaf, strerror(errno));
        return -1;
    }
    snprintf(me, sizeof(me), "%d", (int)getpid());
    if (pbx__cgroup_write(cg, leaf, "cgroup.procs", me, &err) < 0) {
        *why = xasprintf("cannot move into the leaf: %s", err->msg);
        pbx_error_free(&err);
        return -1;
    }
    pbx_log(PBX_LOG_INFO,
            "cgroup v2: moved pybox into %s, so that %s holds no process and may enable "
            "controllers for the cells",
            leaf, cg->v2_base);
    free(cg->v2_self);
    cg->v2_self = steal_pointer(&leaf);
    return 0;
}

/*
 * Enable `ctl` for the children of `dir`; on failure a why text, else NULL.
 * In the supervisor's own cgroup, an EBUSY (the supervisor lives there) gets
 * one move into the leaf per setup, then a second try.
 */
static char *enable(struct pbx_cgroups *cg, const char *dir, const char *ctl)
{
    cleanup_free char *plus = xasprintf("+%s", ctl);
    const char *not_moved;
    struct pbx_error *err = NULL;
    char *why;

    if (pbx__cgroup_write(cg, dir, "cgroup.subtree_control", plus, &err) == 0)
        return NULL;
    if (err->code == EBUSY && strcmp(dir, cg->v2_base) == 0 && strcmp(dir, cg->v2_self) == 0 &&
        !cg->v2_move_tried) {
        cg->v2_move_tried = true;
        if (pbx__cgroup_v2_move_into_leaf(cg, &cg->v2_unmoved) == 0) {
            pbx_error_free(&err);
            if (pbx__cgroup_write(cg, dir, "cgroup.subtree_control", plus, &err) == 0)
                return NULL;
        }
    }
    not_moved = cg->v2_unmoved;
    if (err->code == EBUSY && strcmp(dir, cg->v2_base) == 0)
        why = xasprintf("%s: cannot enable it for the children of the supervisor's cgroup: %s "
                        "(cgroup v2 enables controllers only below a cgroup without processes "
                        "of its own, and pybox lives in %s%s%s: start it alone in a delegated "
                        "cgroup, e.g. systemd Delegate=yes, and it moves itself into a leaf)",
                        ctl, err->msg, dir, not_moved ? "; " : "", not_moved ? not_moved : "");
    else
        why = xasprintf("%s: cannot enable it in %s: %s", ctl, dir, err->msg);
    pbx_error_free(&err);
    return why;
}

void pbx__cgroup_v2_setup_ctl(struct pbx_cgroups *cg, enum pbx_cgroup_ctl ctl)
{
    struct pbx__cgroup_ctl_state *st = &cg->ctl[ctl];
    const char *name = pbx__cgroup_ctl_name(ctl);
    cleanup_free char *control = NULL;
    cleanup_free char *leaf = NULL;

    if (cg->v2_self == NULL) {
        st->why = xasprintf("%s: /proc/self/cgroup has no cgroup v2 (\"0::\") line", name);
        return;
    }
    if (!offered(cg->v2_base, name)) {
        st->why = xasprintf("%s: cgroup v2 has it at %s but not for the supervisor's cgroup %s "
                            "(missing from its cgroup.controllers: it was not delegated)",
                            name, cg->v2_root, cg->v2_base);
        return;
    }
    st->why = enable(cg, cg->v2_base, name);
    if (st->why)
        return;
    st->parent = xasprintf("%s/%s", cg->v2_base, cg->name);
    /* EEXIST: made for an earlier controller, or left by a supervisor with our pid. */
    if (cg->ops.mkdir(cg->ops.data, st->parent) < 0 && errno != EEXIST) {
        st->why = xasprintf("%s: cannot create %s: %s", name, st->parent, strerror(errno));
        free(st->parent);
        st->parent = NULL;
        return;
    }
    st->why = enable(cg, st->parent, name);
    if (st->why)
        return;
    control = pbx__cgroup_path(st->parent, control_file[ctl]);
    if (access(control, W_OK) < 0) {
        st->why = xasprintf("%s: %s is not writable: %s", name, control, strerror(errno));
        return;
    }
    st->version = PBX_CGROUP_V2;
    if (strcmp(cg->v2_base, cg->v2_self) != 0)
        leaf = xasprintf(" (pybox in the leaf %s beside it)", cg->v2_self);
    if (ctl == PBX_CGROUP_MEMORY)
        st->swap_limited = pbx__cgroup_exists(st->parent, "memory.swap.max");
    if (ctl == PBX_CGROUP_MEMORY && !st->swap_limited)
        st->why = xasprintf("memory: cgroup v2 at %s%s; no memory.swap.max (swap accounting is "
                            "off), so the limit covers memory only, not swap",
                            st->parent, leaf ? leaf : "");
    else
        st->why = xasprintf("%s: cgroup v2 at %s%s", name, st->parent, leaf ? leaf : "");
}

static int v2_limit(const struct pbx_cgroups *cg, enum pbx_cgroup_ctl ctl, const char *dir,
                    const struct pbx_cgroup_limits *limits, struct pbx_error **err)
{
    char value[48];
    int ret;

    switch (ctl) {
    case PBX_CGROUP_MEMORY:
        if (limits->memory_bytes == 0)
            return 0;
        /* No swap at all: memory.max alone would let the cell spill into swap. */
        if (cg->ctl[ctl].swap_limited) {
            ret = pbx__cgroup_write(cg, dir, "memory.swap.max", "0", err);
            if (ret < 0)
                return ret;
        }
        snprintf(value, sizeof(value), "%" PRIu64, limits->memory_bytes);
        return pbx__cgroup_write(cg, dir, "memory.max", value, err);
    case PBX_CGROUP_PIDS:
        if (limits->pids == 0)
            return 0;
        snprintf(value, sizeof(value), "%" PRIu64, limits->pids);
        return pbx__cgroup_write(cg, dir, "pids.max", value, err);
    case PBX_CGROUP_CPU:
        if (limits->cpu_percent == 0)
            return 0;
        snprintf(value, sizeof(value), "%" PRIu64 " %d",
                 (uint64_t)limits->cpu_percent * CPU_PERIOD_US / 100, CPU_PERIOD_US);
        return pbx__cgroup_write(cg, dir, "cpu.max", value, err);
    default:
        return pbx_error_set(err, PBX_E_INVAL, "unknown cgroup controller %d", (int)ctl);
    }
}

static uint64_t v2_oom_kills(const char *dir)
{
    return pbx__cgroup_read_key(dir, "memory.events", "oom_kill");
}

static uint64_t v2_peak_memory(const char *dir)
{
    return pbx__cgroup_read_u64(dir, "memory.peak");
}

/*
 * cgroup.kill (Linux 5.14+) kills the whole cgroup in the kernel, with no
 * window for a member to fork or for a pid to be reused; listing is the
 * fallback on older kernels.
 */
static void v2_kill(const struct pbx_cgroups *cg, const char *dir)
{
    if (pbx__cgroup_exists(dir, "cgroup.kill") &&
        pbx__cgroup_write(cg, dir, "cgroup.kill", "1", NULL) == 0)
        return;
    pbx__cgroup_kill_listed(dir);
}

/*
 * Back to no limits.  memory.peak cannot be reset for every reader (a write
 * resets it only for the writer's open file), so a v2 memory cgroup is never
 * reused: its cell gets a fresh one each time.
 */
static int v2_reset(const struct pbx_cgroups *cg, enum pbx_cgroup_ctl ctl, const char *dir,
                    struct pbx_error **err)
{
    switch (ctl) {
    case PBX_CGROUP_MEMORY:
        return pbx_error_set(err, PBX_E_UNSUPPORTED,
                             "a cgroup v2 memory cgroup's peak cannot be reset");
    case PBX_CGROUP_PIDS:
        return pbx__cgroup_write(cg, dir, "pids.max", "max", err);
    case PBX_CGROUP_CPU:
        return pbx__cgroup_write(cg, dir, "cpu.max", "max", err);
    default:
        return pbx_error_set(err, PBX_E_INVAL, "unknown cgroup controller %d", (int)ctl);
    }
}

const struct pbx__cgroup_backend pbx__cgroup_v2_backend = {
    v2_limit, v2_oom_kills, v2_peak_memory, v2_kill, v2_reset,
};
