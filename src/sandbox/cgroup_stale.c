/*
 * The stale parents of dead supervisors (the interface is cgroup.h's pbx_cgroup_reap_stale() and
 * pbx_cgroup_stale_waiting(); cgroup.c's setup and teardown call in here): finding the
 * "pybox-<pid>-<n>" directories of supervisors that are gone, killing what their cells still
 * hold and removing them, and the leftover cell-* directories of a parent.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sandbox/cgroup.h"
#include "sandbox/cgroup_internal.h"
#include "common/cleanup.h"
#include "common/error.h"
#include "common/log.h"
#include "common/xalloc.h"
#include "common/banned.h"

/* Listing. */

/* Free a NULL-terminated array of heap strings. */
static void free_names(char **names)
{
    if (names == NULL)
        return;
    for (char **p = names; *p; p++)
        free(*p);
    free(names);
}

/* Whether the entry `de` of the directory `dfd` is a directory, never following a symlink. */
static bool is_subdir(int dfd, const struct dirent *de)
{
    struct stat st;

    if (de->d_type != DT_UNKNOWN)
        return de->d_type == DT_DIR;
    return fstatat(dfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode);
}

/*
 * The names of the subdirectories of `dir` that `match` accepts, as a
 * NULL-terminated heap array the caller frees with free_names(); NULL when
 * `dir` cannot be opened.  Symlinks are never listed (nor `dir` itself
 * followed when `flags` holds O_NOFOLLOW), and nothing below is looked at.
 * Plain opendir() semantics, so fake trees work without an op.
 */
static char **list_subdirs(const char *dir, int flags, bool (*match)(const char *name))
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC | flags);
    char **names = NULL;
    size_t n = 0;
    struct dirent *de;
    DIR *d;

    if (fd < 0)
        return NULL;
    d = fdopendir(fd);
    if (d == NULL) {
        close(fd);
        return NULL;
    }
    names = xcalloc(1, sizeof(*names));
    while ((de = readdir(d)) != NULL) {
        if (!match(de->d_name) || !is_subdir(dirfd(d), de))
            continue;
        names = xrealloc(names, (n + 2) * sizeof(*names));
        names[n++] = xstrdup(de->d_name);
        names[n] = NULL;
    }
    closedir(d);
    return names;
}

static bool is_cell_name(const char *name)
{
    return strncmp(name, "cell-", 5) == 0;
}

/*
 * Remove cell-* directories a failed destroy (or a dead supervisor) left in
 * `parent`, each waiting up to `wait_ns` for its killed members to exit; a
 * directory that stays is logged at `level`.
 */
void pbx__cgroup_stale_remove_cells(const struct pbx_cgroups *cg, const char *parent,
                                    const struct pbx__cgroup_backend *be, long long wait_ns,
                                    enum pbx_log_level level)
{
    char **names = list_subdirs(parent, O_NOFOLLOW, is_cell_name);

    for (size_t i = 0; names && names[i]; i++) {
        cleanup_free char *path = pbx__cgroup_path(parent, names[i]);
        int r = pbx__cgroup_remove_within(cg, path, be, wait_ns);

        if (r < 0)
            pbx_log(level, "cannot remove cgroup %s: %s", path, strerror(-r));
    }
    free_names(names);
}

/* Whether <dir>/cgroup.procs lists a member, or cannot be read (it may list one). */
static bool lists_member(const char *dir)
{
    cleanup_free char *path = pbx__cgroup_path(dir, "cgroup.procs");
    cleanup_free char *text = NULL;
    cleanup_free pid_t *pids = NULL;
    int r = pbx__cgroup_read(path, &text, NULL);

    if (r < 0)
        return r != -ENOENT;
    return pbx__cgroup_parse_pids(text, &pids) > 0;
}

/*
 * Whether the parent `dir` or one of its cell-* children still lists a
 * member: a task that was killed and has not finished exiting (one stuck in
 * the kernel, or frozen) keeps its cgroup busy until it has.
 */
static bool stale_has_member(const char *dir)
{
    char **names = list_subdirs(dir, O_NOFOLLOW, is_cell_name);
    bool found = lists_member(dir);

    for (size_t i = 0; !found && names && names[i]; i++) {
        cleanup_free char *path = pbx__cgroup_path(dir, names[i]);

        found = lists_member(path);
    }
    free_names(names);
    return found;
}

/* Stale parents of dead supervisors. */

/*
 * A decimal at *p with no leading zero (except "0" itself) and at most `max`;
 * advances *p past it.
 */
static bool parse_dec(const char **p, uint64_t max, uint64_t *v)
{
    const char *s = *p;
    uint64_t x = 0;

    if (*s < '0' || *s > '9' || (s[0] == '0' && s[1] >= '0' && s[1] <= '9'))
        return false;
    for (; *s >= '0' && *s <= '9'; s++) {
        x = x * 10 + (uint64_t)(*s - '0'); /* x <= max <= UINT32_MAX: no overflow */
        if (x > max)
            return false;
    }
    *v = x;
    *p = s;
    return true;
}

bool pbx__cgroup_parse_parent_name(const char *name, pid_t *pid)
{
    const char *p = name;
    uint64_t v;
    uint64_t n;

    if (strncmp(p, "pybox-", 6) != 0)
        return false;
    p += 6;
    /* pid 0 (and anything <= 0) must never reach kill(2): it means "my group". */
    if (!parse_dec(&p, 0x7fffffff, &v) || v == 0)
        return false;
    if (*p == '-') {
        p++;
        if (!parse_dec(&p, UINT32_MAX, &n))
            return false;
    }
    if (*p != '\0')
        return false;
    if (pid)
        *pid = (pid_t)v;
    return true;
}

static bool is_parent_name(const char *name)
{
    return pbx__cgroup_parse_parent_name(name, NULL);
}

/*
 * Remove from `base` the parents ("pybox-<pid>-<n>" or "pybox-<pid>") of
 * supervisors that are gone, with their cell-* children; returns how many
 * were removed.  `be` kills what the cells still hold (a SIGKILLed
 * supervisor's cells may outlive it).
 *
 * A parent is stale only if kill(pid, 0) says ESRCH: a live pid, or EPERM,
 * keeps it, even when the pid may have been reused by an unrelated process,
 * because telling reuse apart is guesswork and a false "stale" would kill
 * another supervisor's cells.  Our own pid is skipped (sibling engines of
 * this process).  The check is repeated just before each removal, leaving a
 * window of one removal for the pid to be reused by a new supervisor that
 * picks the same name; in that rare case its setup or first cell fails
 * rather than anything running unconfined.  Supervisors sharing a base
 * directory must share a pid namespace, or their pids mean nothing here.
 *
 * Symlinks are never followed and nothing deeper than cell-* is touched: a
 * parent holding anything else stays (rmdir says EBUSY) and is logged.
 *
 * Each directory gets up to `wait_ns` for its killed members to exit.  A
 * parent that stays while it (or a cell of it) still lists a member is
 * counted in *waiting: that member has been killed and will exit, and the
 * engine tries again later (pbx_cgroup_reap_stale()).  `retry` logs what
 * stays at DEBUG rather than WARN, as the first attempt already said so.
 */
static size_t reap_stale(const struct pbx_cgroups *cg, const char *base,
                         const struct pbx__cgroup_backend *be, long long wait_ns, bool retry,
                         size_t *waiting)
{
    enum pbx_log_level level = retry ? PBX_LOG_DEBUG : PBX_LOG_WARN;
    char **names = list_subdirs(base, 0, is_parent_name);
    pid_t self = getpid();
    size_t reaped = 0;

    for (size_t i = 0; names && names[i]; i++) {
        cleanup_free char *path = NULL;
        pid_t pid = 0;
        int r;

        if (!pbx__cgroup_parse_parent_name(names[i], &pid) || pid == self)
            continue;
        if (kill(pid, 0) == 0 || errno != ESRCH)
            continue;
        path = pbx__cgroup_path(base, names[i]);
        pbx__cgroup_stale_remove_cells(cg, path, be, wait_ns, level);
        r = pbx__cgroup_remove_within(cg, path, be, wait_ns);
        if (r < 0 && stale_has_member(path)) {
            pbx_log(level, "stale cgroup %s still has a member exiting: trying again later", path);
            (*waiting)++;
            continue;
        }
        if (r < 0) {
            /* No member listed now: the last one may have left since, so once more. */
            pbx__cgroup_stale_remove_cells(cg, path, be, 0, PBX_LOG_DEBUG);
            r = pbx__cgroup_remove_within(cg, path, be, 0);
        }
        if (r < 0) {
            pbx_log(level, "cannot remove stale cgroup %s: %s", path, strerror(-r));
            continue;
        }
        pbx_log(PBX_LOG_DEBUG, "removed stale cgroup %s", path);
        reaped++;
    }
    free_names(names);
    return reaped;
}

/* reap_stale() in cg->stale_base[i]; logs what was removed and counts in *waiting what stays. */
static void reap_base(const struct pbx_cgroups *cg, int i, long long wait_ns, bool retry,
                      size_t *waiting)
{
    size_t n = reap_stale(cg, cg->stale_base[i], pbx__cgroup_backend_of(cg->stale_version[i]),
                          wait_ns, retry, waiting);

    if (n > 0)
        pbx_log(PBX_LOG_INFO, "removed %zu stale cgroup%s of dead supervisors from %s", n,
                n == 1 ? "" : "s", cg->stale_base[i]);
}

/*
 * Reap `base` (heap, taken over) unless an earlier controller did already,
 * and remember it in cg->stale_base for pbx_cgroup_reap_stale().
 */
void pbx__cgroup_stale_reap_once(struct pbx_cgroups *cg, char *base, enum pbx_cgroup_version v)
{
    int i;

    if (base == NULL)
        return;
    for (i = 0; i < PBX_CGROUP_NCTL && cg->stale_base[i]; i++) {
        if (strcmp(cg->stale_base[i], base) == 0) {
            free(base);
            return;
        }
    }
    if (!ALWAYS(i < PBX_CGROUP_NCTL)) {
        free(base);
        return;
    }
    cg->stale_base[i] = base;
    cg->stale_version[i] = v;
    reap_base(cg, i, PBX_CGROUP_REMOVE_WAIT_NS, false, &cg->stale_waiting);
}

size_t pbx_cgroup_stale_waiting(const struct pbx_cgroups *cg)
{
    return cg ? cg->stale_waiting : 0;
}

size_t pbx_cgroup_reap_stale(const struct pbx_cgroups *cg)
{
    size_t waiting = 0;

    if (cg == NULL)
        return 0;
    for (int i = 0; i < PBX_CGROUP_NCTL && cg->stale_base[i]; i++)
        reap_base(cg, i, 0, true, &waiting);
    return waiting;
}
