/*
 * Cell cgroups: the common part (parsing /proc/self/cgroup, choosing a
 * backend per controller, dispatch) of the interface in cgroup.h.
 *
 * Theory of operation
 * -------------------
 * Processes: none are created here.  The supervisor (host root) makes the
 * directories and writes the limits; the cell joins by itself, writing "0"
 * to fds of the cell cgroups' cgroup.procs that the supervisor opened; after
 * the cell is gone the supervisor SIGKILLs whatever is still listed as a
 * member and removes the directories.
 *
 * Directories, per hierarchy serving at least one controller:
 *   <mount>/<supervisor's own cgroup>/pybox-<pid>/           the "parent"
 *   <mount>/<supervisor's own cgroup>/pybox-<pid>/cell-<id>/ one per cell
 * v1 has one mount per controller (memory, pids, cpu or cpu,cpuacct); v2 has
 * one tree, so all v2 controllers of a cell share one directory.  On v2 the
 * supervisor may first move itself into the leaf <own>/pybox-supervisor, so
 * that <own> holds no process and may enable controllers (cgroup_v2.c).
 *
 * Fds: pbx_cgroup_cell_procs_fds() hands out O_WRONLY|O_CLOEXEC fds of the
 * cells' cgroup.procs; no other fd outlives a call.
 *
 * Stale parents: a supervisor that was SIGKILLed never ran its teardown, so
 * its "pybox-<pid>-<n>" parents (and their cells) stay behind.  Setup reaps
 * them from the directory where it is about to create its own parent, but
 * only those whose <pid> is not a live process (cgroup_stale.c); those
 * still holding a member that has not finished exiting are reaped later by
 * pbx_cgroup_reap_stale(), which the engine calls until none is left.
 *
 * Ordering, which the security argument rests on: limits are written in
 * pbx_cgroup_cell_create(), before any fd to cgroup.procs exists, so no
 * member of a cell ever runs without its limits.
 *
 * Threads: struct pbx_cgroups is read-only after setup and a cell touches only
 * its own directories, so different cells may be used from different threads
 * with no lock and no global mutable state.  One cell must not be used from
 * two threads at once; setup and teardown must not race with cell calls.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "sandbox/cgroup.h"
#include "sandbox/cgroup_internal.h"
#include "common/cleanup.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/xalloc.h"
#include "common/banned.h"

/* Cap on files read from cgroupfs; cgroup.procs of a cell is far smaller. */
#define CGROUP_READ_MAX (4u << 20)

/* Between tries of removing a cgroup whose killed members have not left yet. */
#define REMOVE_PAUSE_NS (5 * 1000 * 1000L)

static const char *const ctl_names[PBX_CGROUP_NCTL] = {"memory", "pids", "cpu"};

const char *pbx__cgroup_ctl_name(enum pbx_cgroup_ctl ctl)
{
    return (unsigned)ctl < PBX_CGROUP_NCTL ? ctl_names[ctl] : "unknown";
}

/* Parsers: no syscalls, fuzzed by fuzz/fuzz_proc_cgroup.c. */

/* Whether the comma-separated list [list, list+len) contains `name`. */
static bool list_has(const char *list, size_t len, const char *name)
{
    size_t want = strlen(name);
    const char *end = list + len;

    while (list < end) {
        const char *comma = memchr(list, ',', (size_t)(end - list));
        size_t n = (size_t)((comma ? comma : end) - list);

        if (n == want && memcmp(list, name, n) == 0)
            return true;
        list = comma ? comma + 1 : end;
    }
    return false;
}

/*
 * Accept a path only if it is absolute, holds no NUL and no ".." component:
 * it is appended to the cgroup mount, and ".." (which /proc/self/cgroup shows
 * for a cgroup outside our cgroup namespace) would point outside it.
 */
static bool path_ok(const char *p, size_t n)
{
    size_t i = 0;

    if (n == 0 || p[0] != '/' || memchr(p, '\0', n) != NULL)
        return false;
    while (i < n) {
        size_t start = ++i;

        while (i < n && p[i] != '/')
            i++;
        if (i - start == 2 && p[start] == '.' && p[start + 1] == '.')
            return false;
    }
    return true;
}

/* One "ID:CONTROLLERS:PATH" line; on a match store the path without trailing '/'. */
static bool match_line(const char *line, size_t len, const char *controller, char **path)
{
    const char *end = line + len;
    const char *c1 = memchr(line, ':', len);
    const char *c2;
    const char *p;
    size_t n;

    if (c1 == NULL || c1 == line)
        return false;
    c2 = memchr(c1 + 1, ':', (size_t)(end - c1 - 1));
    if (c2 == NULL)
        return false;
    if (controller == NULL) {
        if (c1 - line != 1 || line[0] != '0' || c2 != c1 + 1)
            return false;
    } else if (!list_has(c1 + 1, (size_t)(c2 - c1 - 1), controller)) {
        return false;
    }
    p = c2 + 1;
    n = (size_t)(end - p);
    if (!path_ok(p, n))
        return false;
    while (n > 1 && p[n - 1] == '/')
        n--;
    *path = xstrndup(p, n);
    return true;
}

int pbx__cgroup_parse_proc(const char *text, size_t len, const char *controller, char **path)
{
    const char *end;
    const char *p = text;

    if (text == NULL || path == NULL)
        return -PBX_E_NOTFOUND;
    end = text + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *eol = nl ? nl : end;

        if (match_line(p, (size_t)(eol - p), controller, path))
            return 0;
        p = nl ? nl + 1 : end;
    }
    return -PBX_E_NOTFOUND;
}

/* The decimal at the start of [d, end) into *v; false if none or on overflow. */
static bool parse_u64(const char *d, const char *end, uint64_t *v)
{
    const char *start = d;

    *v = 0;
    for (; d < end && *d >= '0' && *d <= '9'; d++) {
        if (*v > (UINT64_MAX - 9) / 10)
            return false;
        *v = *v * 10 + (uint64_t)(*d - '0');
    }
    return d > start;
}

int pbx__cgroup_parse_key(const char *text, size_t len, const char *key, uint64_t *value)
{
    size_t klen = strlen(key);
    const char *end;
    const char *p = text;

    if (text == NULL)
        return -PBX_E_NOTFOUND;
    end = text + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *eol = nl ? nl : end;

        if ((size_t)(eol - p) > klen + 1 && memcmp(p, key, klen) == 0 && p[klen] == ' ')
            return parse_u64(p + klen + 1, eol, value) ? 0 : -PBX_E_NOTFOUND;
        p = nl ? nl + 1 : end;
    }
    return -PBX_E_NOTFOUND;
}

/* The pids of a cgroup.procs text into a heap array; returns the count. */
size_t pbx__cgroup_parse_pids(const char *text, pid_t **out)
{
    size_t cap = 1;
    size_t n = 0;
    pid_t *pids;

    for (const char *p = text; *p; p++)
        cap += *p == '\n';
    pids = xcalloc(cap, sizeof(*pids));
    for (const char *p = text; *p && n < cap;) {
        long long v = 0;

        while (*p >= '0' && *p <= '9' && v <= 0x7fffffff)
            v = v * 10 + (*p++ - '0');
        if (v > 0 && v <= 0x7fffffff && (*p == '\n' || *p == '\0'))
            pids[n++] = (pid_t)v;
        while (*p && *p++ != '\n')
            ;
    }
    *out = pids;
    return n;
}

/* File helpers. */

char *pbx__cgroup_path(const char *dir, const char *file)
{
    return xasprintf("%s/%s", dir, file);
}

bool pbx__cgroup_exists(const char *dir, const char *file)
{
    cleanup_free char *path = pbx__cgroup_path(dir, file);

    return access(path, F_OK) == 0;
}

int pbx__cgroup_read(const char *path, char **text, size_t *len)
{
    cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC);
    cleanup_free char *buf = NULL;
    size_t used = 0;
    size_t alloc = 0;

    if (fd < 0)
        return -errno;
    for (;;) {
        ssize_t n;

        if (alloc - used < 2) {
            if (alloc >= CGROUP_READ_MAX)
                return -EFBIG;
            alloc = alloc ? alloc * 2 : 512;
            buf = xrealloc(buf, alloc);
        }
        n = read(fd, buf + used, alloc - used - 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            break;
        used += (size_t)n;
    }
    if (buf == NULL)
        buf = xmalloc(1);
    buf[used] = '\0';
    *text = steal_pointer(&buf);
    if (len)
        *len = used;
    return 0;
}

uint64_t pbx__cgroup_read_u64(const char *dir, const char *file)
{
    cleanup_free char *path = pbx__cgroup_path(dir, file);
    cleanup_free char *text = NULL;
    size_t len = 0;
    uint64_t v = 0;

    if (pbx__cgroup_read(path, &text, &len) < 0 || !parse_u64(text, text + len, &v))
        return 0;
    return v;
}

uint64_t pbx__cgroup_read_key(const char *dir, const char *file, const char *key)
{
    cleanup_free char *path = pbx__cgroup_path(dir, file);
    cleanup_free char *text = NULL;
    size_t len = 0;
    uint64_t v = 0;

    if (pbx__cgroup_read(path, &text, &len) < 0 || pbx__cgroup_parse_key(text, len, key, &v) < 0)
        return 0;
    return v;
}

int pbx__cgroup_write(const struct pbx_cgroups *cg, const char *dir, const char *file,
                      const char *value, struct pbx_error **err)
{
    cleanup_free char *path = pbx__cgroup_path(dir, file);

    if (cg->ops.write(cg->ops.data, path, value, strlen(value)) < 0)
        return pbx_error_set(err, errno, "write `%s` to %s", value, path);
    return 0;
}

/*
 * The real operations.  Directories are 0755 and owned by the supervisor:
 * nothing inside a cell (an unprivileged or user-namespaced uid) can change a
 * limit or create sub-cgroups; the cell's only handle is the procs fd.
 */
static int sys_mkdir(void *data, const char *path)
{
    return mkdir(path, 0755);
}

static int sys_rmdir(void *data, const char *path)
{
    return rmdir(path);
}

static int sys_write(void *data, const char *path, const char *buf, size_t len)
{
    cleanup_close int fd = open(path, O_WRONLY | O_CLOEXEC);
    ssize_t n;

    if (fd < 0)
        return -1;
    /* cgroupfs parses each write(2) as one value: never split it. */
    do {
        n = write(fd, buf, len);
    } while (n < 0 && errno == EINTR);
    if (n < 0)
        return -1;
    if ((size_t)n != len) {
        errno = EIO;
        return -1;
    }
    return 0;
}

static const struct pbx__cgroup_ops sys_ops = {sys_mkdir, sys_rmdir, sys_write, NULL};

const struct pbx__cgroup_backend *pbx__cgroup_backend_of(enum pbx_cgroup_version v)
{
    if (v == PBX_CGROUP_V1)
        return &pbx__cgroup_v1_backend;
    if (v == PBX_CGROUP_V2)
        return &pbx__cgroup_v2_backend;
    return NULL;
}

/* Killing and removing. */

/*
 * Kill the members of `dir` and remove it.  rmdir(2) fails with EBUSY while
 * a killed task has not finished exiting, so retry with short pauses for up
 * to `wait_ns` (0: one try).  Returns 0 or -errno.
 */
int pbx__cgroup_remove_within(const struct pbx_cgroups *cg, const char *dir,
                              const struct pbx__cgroup_backend *be, long long wait_ns)
{
    const struct timespec pause = {0, REMOVE_PAUSE_NS};
    uint64_t start = pbx_clock_ns(CLOCK_MONOTONIC);

    for (;;) {
        if (be)
            be->kill(cg, dir);
        if (cg->ops.rmdir(cg->ops.data, dir) == 0 || errno == ENOENT)
            return 0;
        if (errno != EBUSY && errno != EINTR)
            return -errno;
        if ((long long)(pbx_clock_ns(CLOCK_MONOTONIC) - start) >= wait_ns)
            return -EBUSY;
        nanosleep(&pause, NULL);
    }
}

/* pbx__cgroup_remove_within() for up to PBX_CGROUP_REMOVE_WAIT_NS. */
static int remove_cgroup(const struct pbx_cgroups *cg, const char *dir,
                         const struct pbx__cgroup_backend *be)
{
    return pbx__cgroup_remove_within(cg, dir, be, PBX_CGROUP_REMOVE_WAIT_NS);
}

/* Where v1 setup creates the parent of `ctl`: <mount><own cgroup>, or NULL. */
static char *v1_base(const char *mount, const char *self_cgroup, enum pbx_cgroup_ctl ctl)
{
    cleanup_free char *own = NULL;

    if (pbx__cgroup_parse_proc(self_cgroup, strlen(self_cgroup), ctl_names[ctl], &own) < 0)
        return NULL;
    return strcmp(own, "/") == 0 ? xstrdup(mount) : xasprintf("%s%s", mount, own);
}

/* Setup and teardown. */

/* Whether some controller before `ctl` has the same parent (a shared v2 or co-mounted dir). */
static bool parent_seen(const struct pbx_cgroups *cg, int ctl)
{
    for (int i = 0; i < ctl; i++)
        if (cg->ctl[i].parent && strcmp(cg->ctl[i].parent, cg->ctl[ctl].parent) == 0)
            return true;
    return false;
}

/* Remove parents made for controllers that turned out unusable, unless shared. */
static void drop_unused_parents(struct pbx_cgroups *cg)
{
    for (int i = 0; i < PBX_CGROUP_NCTL; i++) {
        struct pbx__cgroup_ctl_state *st = &cg->ctl[i];
        bool shared = false;

        if (st->version != PBX_CGROUP_NONE || st->parent == NULL)
            continue;
        for (int j = 0; j < PBX_CGROUP_NCTL; j++)
            if (cg->ctl[j].version != PBX_CGROUP_NONE && strcmp(cg->ctl[j].parent, st->parent) == 0)
                shared = true;
        if (!shared && cg->ops.rmdir(cg->ops.data, st->parent) < 0 && errno != ENOENT)
            pbx_log(PBX_LOG_DEBUG, "cannot remove unused cgroup %s: %s", st->parent,
                    strerror(errno));
        free(st->parent);
        st->parent = NULL;
    }
}

int pbx__cgroup_setup_ops(const char *fs_root, const char *self_cgroup, const char *name,
                          const struct pbx__cgroup_ops *ops, struct pbx_cgroups **out,
                          struct pbx_error **err)
{
    cleanup_free char *v2_ctls = NULL;
    struct pbx_cgroups *cg;
    size_t root_len;

    if (fs_root == NULL || self_cgroup == NULL || name == NULL || out == NULL)
        return pbx_error_set(err, PBX_E_INVAL, "cgroup setup: missing argument");
    /* The name becomes one path component under cgroupfs: no '/', no dot-dirs. */
    if (name[0] == '\0' || strchr(name, '/') || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
        return pbx_error_set(err, PBX_E_INVAL, "cgroup setup: bad cgroup name `%s`", name);
    cg = xcalloc(1, sizeof(*cg));
    root_len = strlen(fs_root);
    while (root_len > 1 && fs_root[root_len - 1] == '/')
        root_len--;
    cg->fs_root = xstrndup(fs_root, root_len);
    cg->name = xstrdup(name);
    cg->ops = ops ? *ops : sys_ops;
    v2_ctls = pbx__cgroup_v2_probe(cg, self_cgroup);
    for (int i = 0; i < PBX_CGROUP_NCTL; i++) {
        const char *ctl = ctl_names[i];
        cleanup_free char *mount = NULL;

        /*
         * v2 when the cgroup2 root lists the controller, else v1 if mounted
         * (a controller is bound to one hierarchy at a time, so at most one
         * of the two can really offer it).  In the directory where the
         * parent goes, stale parents of dead supervisors are reaped first:
         * their cells may still hold processes, and each one left counts
         * against the kernel's limit on cgroups (65535 memory cgroups on v1).
         */
        if (v2_ctls && pbx__cgroup_v2_lists(v2_ctls, ctl)) {
            pbx__cgroup_stale_reap_once(cg, cg->v2_base ? xstrdup(cg->v2_base) : NULL,
                                        PBX_CGROUP_V2);
            pbx__cgroup_v2_setup_ctl(cg, i);
            continue;
        }
        mount = pbx__cgroup_v1_mount(cg->fs_root, i);
        if (mount) {
            pbx__cgroup_stale_reap_once(cg, v1_base(mount, self_cgroup, i), PBX_CGROUP_V1);
            pbx__cgroup_v1_setup_ctl(cg, i, mount, self_cgroup);
            continue;
        }
        if (v2_ctls)
            cg->ctl[i].why = xasprintf("%s: cgroup v1 %s controller not mounted at %s/%s, and the "
                                       "cgroup v2 hierarchy at %s does not offer it",
                                       ctl, ctl, cg->fs_root, ctl, cg->v2_root);
        else
            cg->ctl[i].why = xasprintf("%s: cgroup v1 %s controller not mounted at %s/%s, and no "
                                       "cgroup v2 hierarchy at %s or %s/unified",
                                       ctl, ctl, cg->fs_root, ctl, cg->fs_root, cg->fs_root);
    }
    drop_unused_parents(cg);
    for (int i = 0; i < PBX_CGROUP_NCTL; i++)
        pbx_log(PBX_LOG_DEBUG, "cgroup %s", cg->ctl[i].why);
    *out = cg;
    return 0;
}

int pbx_cgroup_setup(const char *fs_root, const char *self_cgroup, const char *name,
                     struct pbx_cgroups **out, struct pbx_error **err)
{
    return pbx__cgroup_setup_ops(fs_root, self_cgroup, name, NULL, out, err);
}

enum pbx_cgroup_version pbx_cgroup_version_of(const struct pbx_cgroups *cg, enum pbx_cgroup_ctl ctl)
{
    if (cg == NULL || (unsigned)ctl >= PBX_CGROUP_NCTL)
        return PBX_CGROUP_NONE;
    return cg->ctl[ctl].version;
}

const char *pbx_cgroup_why(const struct pbx_cgroups *cg, enum pbx_cgroup_ctl ctl)
{
    if (cg == NULL)
        return "no cgroup manager";
    if ((unsigned)ctl >= PBX_CGROUP_NCTL)
        return "unknown cgroup controller";
    return cg->ctl[ctl].why ? cg->ctl[ctl].why : "not set up";
}

void pbx_cgroup_teardown(struct pbx_cgroups *cg)
{
    if (cg == NULL)
        return;
    for (int i = 0; i < PBX_CGROUP_NCTL; i++) {
        struct pbx__cgroup_ctl_state *st = &cg->ctl[i];
        const struct pbx__cgroup_backend *be = pbx__cgroup_backend_of(st->version);
        int r;

        if (st->parent == NULL || parent_seen(cg, i))
            continue;
        pbx__cgroup_stale_remove_cells(cg, st->parent, be, PBX_CGROUP_REMOVE_WAIT_NS, PBX_LOG_WARN);
        r = remove_cgroup(cg, st->parent, be);
        if (r < 0)
            pbx_log(PBX_LOG_WARN, "cannot remove cgroup %s: %s", st->parent, strerror(-r));
    }
    for (int i = 0; i < PBX_CGROUP_NCTL; i++) {
        free(cg->ctl[i].parent);
        free(cg->ctl[i].why);
        free(cg->stale_base[i]);
    }
    free(cg->v2_root);
    free(cg->v2_self);
    free(cg->v2_base);
    free(cg->v2_unmoved);
    free(cg->fs_root);
    free(cg->name);
    free(cg);
}

/* Cells. */

/* Whether cell->dir[ctl] is set and not shared with an earlier controller. */
static bool own_dir(const struct pbx_cgroup_cell *cell, int ctl)
{
    if (cell->dir[ctl] == NULL)
        return false;
    for (int i = 0; i < ctl; i++)
        if (cell->dir[i] && strcmp(cell->dir[i], cell->dir[ctl]) == 0)
            return false;
    return true;
}

/* Free a cell; with `remove`, rmdir its (still empty) directories first. */
static void cell_free(struct pbx_cgroup_cell *cell, bool remove)
{
    for (int i = PBX_CGROUP_NCTL - 1; i >= 0; i--) {
        if (remove && own_dir(cell, i) && cell->cg->ops.rmdir(cell->cg->ops.data, cell->dir[i]) < 0)
            pbx_log(PBX_LOG_WARN, "cannot remove cgroup %s: %s", cell->dir[i], strerror(errno));
    }
    for (int i = 0; i < PBX_CGROUP_NCTL; i++)
        free(cell->dir[i]);
    free(cell);
}

int pbx_cgroup_cell_create(struct pbx_cgroups *cg, uint64_t id,
                           const struct pbx_cgroup_limits *limits, struct pbx_cgroup_cell **out,
                           struct pbx_error **err)
{
    struct pbx_cgroup_cell *cell;

    if (cg == NULL || limits == NULL || out == NULL)
        return pbx_error_set(err, PBX_E_INVAL, "cgroup cell: missing argument");
    cell = xcalloc(1, sizeof(*cell));
    cell->cg = cg;
    cell->id = id;
    for (int i = 0; i < PBX_CGROUP_NCTL; i++) {
        if (cg->ctl[i].version == PBX_CGROUP_NONE)
            continue;
        cell->dir[i] = xasprintf("%s/cell-%" PRIu64, cg->ctl[i].parent, id);
        if (!own_dir(cell, i))
            continue;
        /*
         * EEXIST is an error: a leftover cgroup of that name may still hold
         * processes, and a cell must never share a cgroup with them.
         */
        if (cg->ops.mkdir(cg->ops.data, cell->dir[i]) < 0) {
            int ret = pbx_error_set(err, errno, "create cgroup `%s`", cell->dir[i]);

            free(cell->dir[i]);
            cell->dir[i] = NULL;
            cell_free(cell, true);
            return ret;
        }
    }
    for (int i = 0; i < PBX_CGROUP_NCTL; i++) {
        int ret;

        if (cell->dir[i] == NULL)
            continue;
        ret = pbx__cgroup_backend_of(cg->ctl[i].version)->limit(cg, i, cell->dir[i], limits, err);
        if (ret < 0) {
            if (err)
                pbx_error_prefix(err, "cgroup %s limit of cell %" PRIu64, ctl_names[i], id);
            cell_free(cell, true);
            return ret;
        }
    }
    *out = cell;
    return 0;
}

/* Open <dir>/cgroup.procs for the cell to write "0" to. */
static int open_procs(const char *dir, int *fd, struct pbx_error **err)
{
    cleanup_free char *path = pbx__cgroup_path(dir, "cgroup.procs");

    *fd = open(path, O_WRONLY | O_CLOEXEC);
    if (*fd < 0)
        return pbx_error_set(err, errno, "open `%s`", path);
    return 0;
}

int pbx_cgroup_cell_procs_fds(struct pbx_cgroup_cell *cell, int *fds, size_t max,
                              struct pbx_error **err)
{
    size_t n = 0;
    int ret;

    if (cell == NULL)
        return 0;
    for (int i = 0; i < PBX_CGROUP_NCTL; i++) {
        if (!own_dir(cell, i))
            continue;
        if (n == max) {
            ret = pbx_error_set(err, PBX_E_INVAL, "cgroup: %zu fds are too few for the cell", max);
            goto out_close_fds;
        }
        ret = open_procs(cell->dir[i], &fds[n], err);
        if (ret < 0)
            goto out_close_fds;
        n++;
    }
    return (int)n;

out_close_fds:
    while (n > 0)
        close(fds[--n]);
    return ret;
}

int pbx_cgroup_cell_count_fd(struct pbx_cgroup_cell *cell, int *fd, struct pbx_error **err)
{
    cleanup_free char *path = NULL;

    *fd = -1;
    if (cell == NULL || cell->dir[PBX_CGROUP_PIDS] == NULL)
        return pbx_error_set(err, PBX_E_UNSUPPORTED, "cgroup: the cell has no pids controller");
    path = pbx__cgroup_path(cell->dir[PBX_CGROUP_PIDS], "pids.current");
    *fd = open(path, O_RDONLY | O_CLOEXEC);
    if (*fd < 0)
        return pbx_error_set(err, errno, "open `%s`", path);
    return 0;
}

static uint64_t oom_kills_raw(struct pbx_cgroup_cell *cell)
{
    if (cell == NULL || cell->dir[PBX_CGROUP_MEMORY] == NULL)
        return 0;
    return pbx__cgroup_backend_of(cell->cg->ctl[PBX_CGROUP_MEMORY].version)
        ->oom_kills(cell->dir[PBX_CGROUP_MEMORY]);
}

uint64_t pbx_cgroup_cell_oom_kills(struct pbx_cgroup_cell *cell)
{
    uint64_t n = oom_kills_raw(cell);

    return n > (cell ? cell->oom_base : 0) ? n - cell->oom_base : 0;
}

bool pbx_cgroup_cells_reusable(const struct pbx_cgroups *cg)
{
    return cg != NULL && cg->ctl[PBX_CGROUP_MEMORY].version != PBX_CGROUP_V2;
}

int pbx_cgroup_cell_reuse(struct pbx_cgroup_cell *cell, const struct pbx_cgroup_limits *limits,
                          struct pbx_error **err)
{
    if (cell == NULL || limits == NULL)
        return pbx_error_set(err, PBX_E_INVAL, "cgroup cell: missing argument");
    /* Never hand a cgroup that still has a member to another execution. */
    if (pbx_cgroup_cell_count(cell) != 0)
        return pbx_error_set(err, EBUSY, "cgroup cell %" PRIu64 " still has members", cell->id);
    for (int i = 0; i < PBX_CGROUP_NCTL; i++) {
        const struct pbx__cgroup_backend *be;
        int ret;

        /* Every controller, as at creation: on v2 they share one directory. */
        if (cell->dir[i] == NULL)
            continue;
        be = pbx__cgroup_backend_of(cell->cg->ctl[i].version);
        ret = be->reset(cell->cg, i, cell->dir[i], err);
        if (ret >= 0)
            ret = be->limit(cell->cg, i, cell->dir[i], limits, err);
        if (ret < 0) {
            if (err)
                pbx_error_prefix(err, "reuse cgroup %s of cell %" PRIu64, ctl_names[i], cell->id);
            return ret;
        }
    }
    cell->oom_base = oom_kills_raw(cell);
    return 0;
}

uint64_t pbx_cgroup_cell_peak_memory(struct pbx_cgroup_cell *cell)
{
    if (cell == NULL || cell->dir[PBX_CGROUP_MEMORY] == NULL)
        return 0;
    return pbx__cgroup_backend_of(cell->cg->ctl[PBX_CGROUP_MEMORY].version)
        ->peak_memory(cell->dir[PBX_CGROUP_MEMORY]);
}

uint64_t pbx_cgroup_cell_pids_denied(struct pbx_cgroup_cell *cell)
{
    if (cell == NULL || cell->dir[PBX_CGROUP_PIDS] == NULL)
        return 0;
    return pbx__cgroup_read_key(cell->dir[PBX_CGROUP_PIDS], "pids.events", "max");
}

uint64_t pbx_cgroup_cell_memory_current(struct pbx_cgroup_cell *cell)
{
    if (cell == NULL || cell->dir[PBX_CGROUP_MEMORY] == NULL)
        return 0;
    return pbx__cgroup_read_u64(cell->dir[PBX_CGROUP_MEMORY],
                                cell->cg->ctl[PBX_CGROUP_MEMORY].version == PBX_CGROUP_V2
                                    ? "memory.current"
                                    : "memory.usage_in_bytes");
}

size_t pbx_cgroup_cell_count(struct pbx_cgroup_cell *cell)
{
    size_t most = 0;

    if (cell == NULL)
        return 0;
    /* The largest count over the hierarchies: a process may have joined only some. */
    for (int i = 0; i < PBX_CGROUP_NCTL; i++) {
        cleanup_free char *path = NULL;
        cleanup_free char *text = NULL;
        cleanup_free pid_t *pids = NULL;
        size_t n;

        if (!own_dir(cell, i))
            continue;
        path = pbx__cgroup_path(cell->dir[i], "cgroup.procs");
        /*
         * A list we cannot read (EMFILE, ENOMEM, a vanished directory) may
         * hold members: never report such a cgroup empty, or it would be
         * pooled and handed to another execution with them inside.
         */
        if (pbx__cgroup_read(path, &text, NULL) < 0)
            return SIZE_MAX;
        n = pbx__cgroup_parse_pids(text, &pids);
        if (n > most)
            most = n;
    }
    return most;
}

void pbx_cgroup_cell_kill(struct pbx_cgroup_cell *cell)
{
    if (cell == NULL)
        return;
    for (int i = 0; i < PBX_CGROUP_NCTL; i++)
        if (own_dir(cell, i))
            pbx__cgroup_backend_of(cell->cg->ctl[i].version)->kill(cell->cg, cell->dir[i]);
}

int pbx_cgroup_cell_destroy(struct pbx_cgroup_cell *cell, struct pbx_error **err)
{
    int ret = 0;

    if (cell == NULL)
        return 0;
    for (int i = PBX_CGROUP_NCTL - 1; i >= 0; i--) {
        int r;

        if (!own_dir(cell, i))
            continue;
        r = remove_cgroup(cell->cg, cell->dir[i], pbx__cgroup_backend_of(cell->cg->ctl[i].version));
        if (r < 0) {
            pbx_log(PBX_LOG_WARN, "cgroup %s left behind: %s", cell->dir[i], strerror(-r));
            if (ret == 0)
                ret = pbx_error_set(err, -r, "remove cgroup `%s`", cell->dir[i]);
        }
    }
    cell_free(cell, false);
    return ret;
}
