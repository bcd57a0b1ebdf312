/*
 * Unit tests of src/sandbox/cgroup*.c.
 *
 * Most tests run against fake trees built in a mkdtemp() directory: plain
 * directories and files shaped like v1 controller mounts (memory/, pids/,
 * cpu,cpuacct/) and a v2 tree (cgroup.controllers, cgroup.subtree_control).
 * The fake mkdir/rmdir/write operations play the kernel's part: a new
 * directory gets the control files of its hierarchy, rmdir drops them, and
 * "+ctl" written to cgroup.subtree_control is merged and propagated; with
 * no_internal, v2's no-internal-process rule holds and a pid written to a
 * cgroup.procs moves there.
 *
 * Two tests run against this machine's /sys/fs/cgroup (a third, the move
 * into the supervisor's leaf, on its cgroup2 mount).  The program exits 77
 * (skipped) when every fake-tree test passed but that test could not run:
 * not root, or no cgroup filesystem.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/magic.h>

#include <check.h>

#include "sandbox/cgroup.h"
#include "sandbox/cgroup_internal.h"
#include "common/xalloc.h"
#include "common/banned.h"

/* The fake kernel: what it creates, and one injected failure. */
struct fake {
    char *root;              /* the mkdtemp() directory */
    bool memsw;              /* v1 memory has memory.memsw.limit_in_bytes */
    bool swap;               /* v2 memory has memory.swap.max */
    bool kill_file;          /* v2 has cgroup.kill */
    bool no_pids_max;        /* v1 pids cgroups lack pids.max */
    bool busy_members;       /* rmdir refuses a cgroup whose cgroup.procs lists a pid */
    bool no_internal;        /* v2's rule: "+ctl" in a non-root cgroup with members is EBUSY; */
                             /* a pid written to cgroup.procs leaves its old cgroup */
    char fail_op;            /* 'm'kdir or 'w'rite fails for fail_suffix, 0 = none */
    const char *fail_suffix; /* path ending that fails */
    int fail_errno;          /* errno of that failure */
    char log[8192];          /* "relative/path=value\n" per write, in order */
};

static struct fake F;

static void put(const char *dir, const char *file, const char *text)
{
    char *path = xasprintf("%s/%s", dir, file);
    FILE *f = fopen(path, "we");

    ck_assert_msg(f != NULL, "create %s: %s", path, strerror(errno));
    fputs(text, f);
    fclose(f);
    free(path);
}

static char *slurp(const char *dir, const char *file)
{
    char *path = xasprintf("%s/%s", dir, file);
    char *text = NULL;
    int r = pbx__cgroup_read(path, &text, NULL);

    free(path);
    return r < 0 ? NULL : text;
}

static bool exists(const char *path)
{
    return access(path, F_OK) == 0;
}

static bool fails_here(char op, const char *path)
{
    size_t n = strlen(path);
    size_t m = F.fail_suffix ? strlen(F.fail_suffix) : 0;

    return F.fail_op == op && m <= n && strcmp(path + n - m, F.fail_suffix) == 0;
}

/* Create the control files of `ctl` in a new v2 cgroup `dir`. */
static void v2_files(const char *dir, const char *ctl)
{
    if (strcmp(ctl, "memory") == 0) {
        put(dir, "memory.max", "max\n");
        put(dir, "memory.events", "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n");
        put(dir, "memory.peak", "0\n");
        if (F.swap)
            put(dir, "memory.swap.max", "max\n");
    } else if (strcmp(ctl, "pids") == 0) {
        put(dir, "pids.max", "max\n");
    } else if (strcmp(ctl, "cpu") == 0) {
        put(dir, "cpu.max", "max 100000\n");
    }
}

static int fake_mkdir(void *data, const char *path)
{
    char *parent = xstrdup(path);
    char *enabled;

    if (fails_here('m', path)) {
        free(parent);
        errno = F.fail_errno;
        return -1;
    }
    if (mkdir(path, 0755) < 0) {
        free(parent);
        return -1;
    }
    *strrchr(parent, '/') = '\0';
    put(path, "cgroup.procs", "");
    enabled = slurp(parent, "cgroup.subtree_control");
    if (enabled) { /* v2: the parent's enabled controllers */
        char *save = NULL;

        put(path, "cgroup.controllers", enabled);
        put(path, "cgroup.subtree_control", "");
        if (F.kill_file)
            put(path, "cgroup.kill", "");
        for (char *t = strtok_r(enabled, " \n", &save); t; t = strtok_r(NULL, " \n", &save))
            v2_files(path, t);
    } else if (strstr(path, "/memory/")) {
        put(path, "memory.limit_in_bytes", "9223372036854771712\n");
        put(path, "memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n");
        put(path, "memory.max_usage_in_bytes", "0\n");
        put(path, "memory.swappiness", "60\n");
        put(path, "memory.force_empty", "");
        if (F.memsw) {
            put(path, "memory.memsw.limit_in_bytes", "9223372036854771712\n");
            put(path, "memory.memsw.max_usage_in_bytes", "0\n");
        }
    } else if (strstr(path, "/pids/")) {
        if (!F.no_pids_max)
            put(path, "pids.max", "max\n");
    } else if (strstr(path, "/cpu,cpuacct/")) {
        put(path, "cpu.cfs_period_us", "100000\n");
        put(path, "cpu.cfs_quota_us", "-1\n");
    }
    free(enabled);
    free(parent);
    return 0;
}

/* Like cgroupfs: the control files go with the directory, sub-cgroups block it. */
static int fake_rmdir(void *data, const char *path)
{
    DIR *d = opendir(path);
    struct dirent *de;
    bool busy = false;

    if (d == NULL)
        return -1;
    while ((de = readdir(d)) != NULL)
        busy |= de->d_type == DT_DIR && strcmp(de->d_name, ".") && strcmp(de->d_name, "..");
    if (F.busy_members) {
        char *procs = slurp(path, "cgroup.procs");

        busy |= procs != NULL && procs[0] != '\0';
        free(procs);
    }
    rewinddir(d);
    while (!busy && (de = readdir(d)) != NULL) {
        if (de->d_type == DT_REG)
            unlinkat(dirfd(d), de->d_name, 0);
    }
    closedir(d);
    if (busy) {
        errno = EBUSY;
        return -1;
    }
    return rmdir(path);
}

/* A controller newly enabled in `dir`: its files appear in every child cgroup. */
static void propagate(const char *dir, const char *ctl)
{
    DIR *d = opendir(dir);
    struct dirent *de;

    ck_assert_ptr_nonnull(d);
    while ((de = readdir(d)) != NULL) {
        char *child;
        char *ctls;
        char *grown;

        if (de->d_type != DT_DIR || de->d_name[0] == '.')
            continue;
        child = xasprintf("%s/%s", dir, de->d_name);
        ctls = slurp(child, "cgroup.controllers");
        grown = xasprintf("%s %s", ctls ? ctls : "", ctl);
        put(child, "cgroup.controllers", grown);
        v2_files(child, ctl);
        free(grown);
        free(ctls);
        free(child);
    }
    closedir(d);
}

/* "+a +b" merged into a cgroup.subtree_control, as the kernel does. */
static void merge_subtree(const char *path, const char *buf, size_t len)
{
    char *dir = xstrdup(path);
    char *text;
    char *req = xstrndup(buf, len);
    char *save = NULL;

    *strrchr(dir, '/') = '\0';
    text = slurp(dir, "cgroup.subtree_control");
    for (char *t = strtok_r(req, " \n", &save); t; t = strtok_r(NULL, " \n", &save)) {
        char *grown;

        if (t[0] != '+' || pbx__cgroup_v2_lists(text, t + 1))
            continue;
        grown = xasprintf("%s%s%s", text, text[0] ? " " : "", t + 1);
        free(text);
        text = grown;
        propagate(dir, t + 1);
    }
    put(dir, "cgroup.subtree_control", text);
    free(text);
    free(req);
    free(dir);
}

/* A v1 memory limit as the kernel parses it: "-1" is no limit. */
static uint64_t v1_limit_value(const char *text)
{
    return strncmp(text, "-1", 2) == 0 ? UINT64_MAX : strtoull(text, NULL, 10);
}

/*
 * The v1 kernel's rule (mem_cgroup_resize_max()): memory.memsw.limit_in_bytes
 * may never be below memory.limit_in_bytes, so a write that would make it so
 * fails with EINVAL.  False when the write at `path` of `value` breaks it.
 */
static bool v1_memsw_order_ok(const char *path, const char *value)
{
    static const char lim[] = "/memory.limit_in_bytes";
    static const char sw[] = "/memory.memsw.limit_in_bytes";
    size_t n = strlen(path);
    char *dir;
    char *other;
    bool ok = true;

    if (n > strlen(lim) && strcmp(path + n - strlen(lim), lim) == 0) {
        dir = xstrndup(path, n - strlen(lim));
        other = slurp(dir, sw + 1);
        ok = other == NULL || v1_limit_value(value) <= v1_limit_value(other);
    } else if (n > strlen(sw) && strcmp(path + n - strlen(sw), sw) == 0) {
        dir = xstrndup(path, n - strlen(sw));
        other = slurp(dir, lim + 1);
        ok = other == NULL || v1_limit_value(value) >= v1_limit_value(other);
    } else {
        return true;
    }
    free(other);
    free(dir);
    return ok;
}

static int v2_rules(const char *path, const char *buf, size_t len);

static int fake_write(void *data, const char *path, const char *buf, size_t len)
{
    int fd;
    size_t used = strlen(F.log);
    char *value;
    bool order_ok;
    int rule;

    if (fails_here('w', path)) {
        errno = F.fail_errno;
        return -1;
    }
    rule = v2_rules(path, buf, len);
    if (rule < 0)
        return -1;
    if (rule > 0) {
        snprintf(F.log + used, sizeof(F.log) - used, "%s=%.*s\n", path + strlen(F.root) + 1,
                 (int)len, buf);
        return 0;
    }
    value = xstrndup(buf, len);
    order_ok = v1_memsw_order_ok(path, value);
    free(value);
    if (!order_ok) {
        errno = EINVAL;
        return -1;
    }
    snprintf(F.log + used, sizeof(F.log) - used, "%s=%.*s\n", path + strlen(F.root) + 1, (int)len,
             buf);
    if (strstr(path, "/cgroup.subtree_control")) {
        merge_subtree(path, buf, len);
        return 0;
    }
    fd = open(path, O_WRONLY | O_TRUNC | O_CLOEXEC); /* no O_CREAT: like cgroupfs */
    if (fd < 0)
        return -1;
    if (write(fd, buf, len) != (ssize_t)len) {
        close(fd);
        return -1;
    }
    close(fd);
    return 0;
}

static const struct pbx__cgroup_ops fake_ops = {fake_mkdir, fake_rmdir, fake_write, NULL};

/* The pid being moved, for drop_pid(). */
static char moving_pid[24];

/* nftw(): drop moving_pid from every cgroup.procs (its old cgroup). */
static int drop_pid(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    size_t n = strlen(path);
    char *dir;
    char *text;
    char *kept;
    char *save = NULL;

    if (type != FTW_F || n < 13 || strcmp(path + n - 13, "/cgroup.procs") != 0)
        return 0;
    dir = xstrndup(path, n - 13);
    text = slurp(dir, "cgroup.procs");
    kept = xstrdup("");
    for (char *t = strtok_r(text, "\n", &save); t; t = strtok_r(NULL, "\n", &save)) {
        char *grown;

        if (strcmp(t, moving_pid) == 0)
            continue;
        grown = xasprintf("%s%s\n", kept, t);
        free(kept);
        kept = grown;
    }
    put(dir, "cgroup.procs", kept);
    free(kept);
    free(text);
    free(dir);
    return 0;
}

/*
 * v2's rules (with F.no_internal): whether a write of `buf` to `path` is one
 * the kernel refuses with EBUSY, and moving a pid written to a cgroup.procs.
 * Returns 1 when the write was handled here, -1 with errno for EBUSY, 0 else.
 */
static int v2_rules(const char *path, const char *buf, size_t len)
{
    size_t n = strlen(path);
    char *dir;
    char *up;
    char *members;
    char *text;
    bool root;

    if (!F.no_internal)
        return 0;
    if (n > 13 && strcmp(path + n - 13, "/cgroup.procs") == 0) {
        snprintf(moving_pid, sizeof(moving_pid), "%.*s", (int)len, buf);
        nftw(F.root, drop_pid, 16, FTW_PHYS);
        dir = xstrndup(path, n - 13);
        text = slurp(dir, "cgroup.procs");
        members = xasprintf("%s%s\n", text ? text : "", moving_pid);
        put(dir, "cgroup.procs", members);
        free(members);
        free(text);
        free(dir);
        return 1;
    }
    if (n <= 23 || strcmp(path + n - 23, "/cgroup.subtree_control") != 0)
        return 0;
    dir = xstrndup(path, n - 23);
    up = xstrdup(dir);
    *strrchr(up, '/') = '\0';
    text = slurp(up, "cgroup.procs");
    root = text == NULL; /* the tree's root has no cgroup above it */
    free(text);
    members = slurp(dir, "cgroup.procs");
    if (!root && members != NULL && members[0] != '\0') {
        free(members);
        free(up);
        free(dir);
        errno = EBUSY;
        return -1;
    }
    free(members);
    free(up);
    free(dir);
    return 0;
}

static int rm_one(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    return remove(path);
}

static void fake_init(void)
{
    char tmpl[] = "/tmp/pbx-cgroup-XXXXXX";

    memset(&F, 0, sizeof(F));
    ck_assert_ptr_nonnull(mkdtemp(tmpl));
    F.root = xstrdup(tmpl);
    F.memsw = true;
    F.swap = true;
    F.kill_file = true;
}

static void fake_fini(void)
{
    nftw(F.root, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    free(F.root);
}

/* A v1 hierarchy root "<root>/<name>" and the supervisor's cgroup `own` in it. */
static void v1_mount(const char *name, const char *own)
{
    char *dir = xasprintf("%s/%s", F.root, name);
    char *cur = xstrdup(dir);

    ck_assert_int_eq(mkdir(dir, 0755), 0);
    put(dir, "cgroup.procs", "");
    for (const char *p = own + 1; *p;) {
        size_t n = strcspn(p, "/");
        char *next = xasprintf("%s/%.*s", cur, (int)n, p);

        ck_assert_int_eq(fake_mkdir(NULL, next), 0);
        free(cur);
        cur = next;
        p += n + (p[n] == '/');
    }
    free(cur);
    free(dir);
}

/* A v2 tree at "<root>/<sub>" offering `ctls`, the supervisor in <sub>/sup. */
static void v2_tree(const char *sub, const char *ctls, const char *delegated)
{
    char *dir = sub ? xasprintf("%s/%s", F.root, sub) : xstrdup(F.root);
    char *sup = xasprintf("%s/sup", dir);

    if (sub)
        ck_assert_int_eq(mkdir(dir, 0755), 0);
    put(dir, "cgroup.controllers", ctls);
    put(dir, "cgroup.subtree_control", delegated);
    put(dir, "cgroup.procs", "");
    ck_assert_int_eq(fake_mkdir(NULL, sup), 0);
    free(sup);
    free(dir);
}

static struct pbx_cgroups *setup(const char *self)
{
    struct pbx_cgroups *cg = NULL;
    struct pbx_error *err = NULL;

    ck_assert_int_eq(pbx__cgroup_setup_ops(F.root, self, "pybox-1", &fake_ops, &cg, &err), 0);
    ck_assert_ptr_null(err);
    return cg;
}

static void assert_file(const char *path, const char *want)
{
    char *text = NULL;

    ck_assert_msg(pbx__cgroup_read(path, &text, NULL) == 0, "read %s", path);
    ck_assert_str_eq(text, want);
    free(text);
}

static char *in_root(const char *rel)
{
    return xasprintf("%s/%s", F.root, rel);
}

#define ASSERT_FILE(rel, want)   \
    do {                         \
        char *p_ = in_root(rel); \
        assert_file(p_, want);   \
        free(p_);                \
    } while (0)

#define ASSERT_GONE(rel)                                   \
    do {                                                   \
        char *p_ = in_root(rel);                           \
        ck_assert_msg(!exists(p_), "%s still exists", p_); \
        free(p_);                                          \
    } while (0)

#define ASSERT_WHY(cg, ctl, fmt, ...)                  \
    do {                                               \
        char *w_ = xasprintf(fmt, __VA_ARGS__);        \
        ck_assert_str_eq(pbx_cgroup_why(cg, ctl), w_); \
        free(w_);                                      \
    } while (0)

static const char self_v1[] = "9:name=systemd:/\n8:pids:/\n4:memory:/a/b\n"
                              "2:cpu,cpuacct:/c/\n0::/\n";

/* Parsers. */

START_TEST(test_parse_proc)
{
    static const char text[] = "12:pids:/user.slice\n4:memory:/a/b\n2:cpu,cpuacct:/c/\n"
                               "3:cpuset:/\n1:name=systemd:/s\n0::/unified/x\n";
    struct {
        const char *ctl;
        const char *want;
    } cases[] = {{"memory", "/a/b"}, {"pids", "/user.slice"}, {"cpu", "/c"},
                 {"cpuacct", "/c"},  {"cpuset", "/"},         {NULL, "/unified/x"}};
    char *path = NULL;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        ck_assert_int_eq(pbx__cgroup_parse_proc(text, strlen(text), cases[i].ctl, &path), 0);
        ck_assert_str_eq(path, cases[i].want);
        free(path);
        path = NULL;
    }
    ck_assert_int_eq(pbx__cgroup_parse_proc(text, strlen(text), "blkio", &path), -PBX_E_NOTFOUND);
    ck_assert_int_eq(pbx__cgroup_parse_proc(text, strlen(text), "systemd", &path), -PBX_E_NOTFOUND);
    ck_assert_ptr_null(path);
}
END_TEST

START_TEST(test_parse_proc_edges)
{
    static const char nul[] = "4:memory:/a\0b\n";
    char *path = NULL;

#define NOTFOUND(t, c) \
    ck_assert_int_eq(pbx__cgroup_parse_proc(t, strlen(t), c, &path), -PBX_E_NOTFOUND)
    NOTFOUND("", "memory");
    NOTFOUND("garbage\n\n::\n:", "memory");
    NOTFOUND("4:memory:/../x\n", "memory");
    NOTFOUND("4:memory:/a/../../x\n", "memory");
    NOTFOUND("4:memory:relative\n", "memory");
    NOTFOUND("4:memory:\n", "memory");
    NOTFOUND("0:memory:/\n", NULL);
    NOTFOUND("10::/x\n", NULL);
    NOTFOUND(":memory:/x\n", "memory");
#undef NOTFOUND
    ck_assert_int_eq(pbx__cgroup_parse_proc(nul, sizeof(nul) - 1, "memory", &path),
                     -PBX_E_NOTFOUND);
    ck_assert_int_eq(pbx__cgroup_parse_proc(NULL, 0, "memory", &path), -PBX_E_NOTFOUND);
    ck_assert_ptr_null(path);
    /* No trailing newline; a colon in the path; the root; "..." is a name. */
    ck_assert_int_eq(pbx__cgroup_parse_proc("4:memory:/x:y", 13, "memory", &path), 0);
    ck_assert_str_eq(path, "/x:y");
    free(path);
    ck_assert_int_eq(pbx__cgroup_parse_proc("0::///\n", 7, NULL, &path), 0);
    ck_assert_str_eq(path, "/");
    free(path);
    ck_assert_int_eq(pbx__cgroup_parse_proc("0::/.../a\n", 10, NULL, &path), 0);
    ck_assert_str_eq(path, "/.../a");
    free(path);
}
END_TEST

START_TEST(test_parse_key_and_pids)
{
    static const char oom[] = "oom_kill_disable 1\nunder_oom 0\noom_kill 3\n";
    static const char big[] = "oom_kill 99999999999999999999\n";
    uint64_t v = 0;
    pid_t *pids = NULL;

    ck_assert_int_eq(pbx__cgroup_parse_key(oom, strlen(oom), "oom_kill", &v), 0);
    ck_assert_uint_eq(v, 3);
    ck_assert_int_eq(pbx__cgroup_parse_key(oom, strlen(oom), "oom_kill_disable", &v), 0);
    ck_assert_uint_eq(v, 1);
    ck_assert_int_eq(pbx__cgroup_parse_key(oom, strlen(oom), "oom", &v), -PBX_E_NOTFOUND);
    ck_assert_int_eq(pbx__cgroup_parse_key(big, strlen(big), "oom_kill", &v), -PBX_E_NOTFOUND);
    ck_assert_int_eq(pbx__cgroup_parse_key("oom_kill x\n", 11, "oom_kill", &v), -PBX_E_NOTFOUND);
    ck_assert_uint_eq(pbx__cgroup_parse_pids("12\n7\nx\n-3\n0\n99999999999\n5", &pids), 3);
    ck_assert_int_eq(pids[0], 12);
    ck_assert_int_eq(pids[1], 7);
    ck_assert_int_eq(pids[2], 5);
    free(pids);
}
END_TEST

START_TEST(test_parse_parent_name)
{
    static const char *const bad[] = {
        "pybox-",    "pybox-abc",        "pybox-123-x",        "pybox-123-", "pybox--1",
        "pybox-0",   "pybox-0-0",        "pybox-01-0",         "pybox-1-01", "pybox-1-0-1",
        "pybox-+1",  "pybox- 1",         "pybox-1 ",           "other-1-0",  "pybox_1-0",
        "Pybox-1-0", "pybox-2147483648", "pybox-1-4294967296", "cell-1",     "",
    };
    pid_t pid = 0;

    ck_assert(pbx__cgroup_parse_parent_name("pybox-1234-0", &pid));
    ck_assert_int_eq(pid, 1234);
    ck_assert(pbx__cgroup_parse_parent_name("pybox-42", &pid));
    ck_assert_int_eq(pid, 42);
    ck_assert(pbx__cgroup_parse_parent_name("pybox-2147483647-4294967295", &pid));
    ck_assert_int_eq(pid, 2147483647);
    ck_assert(pbx__cgroup_parse_parent_name("pybox-7-10", NULL));
    pid = 0;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        ck_assert_msg(!pbx__cgroup_parse_parent_name(bad[i], &pid), "accepted `%s`", bad[i]);
    ck_assert_int_eq(pid, 0);
}
END_TEST

/* cgroup v1. */

START_TEST(test_v1_tree)
{
    struct pbx_cgroup_limits limits = {64u << 20, 16, 50};
    struct pbx_cgroup_cell *cell = NULL;
    struct pbx_error *err = NULL;
    struct pbx_cgroups *cg;
    int fds[4];
    int n;

    v1_mount("memory", "/a/b");
    v1_mount("pids", "/");
    v1_mount("cpu,cpuacct", "/c");
    cg = setup(self_v1);
    for (int i = 0; i < PBX_CGROUP_NCTL; i++)
        ck_assert_msg(pbx_cgroup_version_of(cg, i) == PBX_CGROUP_V1, "%s", pbx_cgroup_why(cg, i));
    ASSERT_WHY(cg, PBX_CGROUP_MEMORY, "memory: cgroup v1 at %s/memory/a/b/pybox-1", F.root);
    ASSERT_WHY(cg, PBX_CGROUP_PIDS, "pids: cgroup v1 at %s/pids/pybox-1", F.root);
    ASSERT_WHY(cg, PBX_CGROUP_CPU, "cpu: cgroup v1 at %s/cpu,cpuacct/c/pybox-1", F.root);

    ck_assert_int_eq(pbx_cgroup_cell_create(cg, 7, &limits, &cell, &err), 0);
    ASSERT_FILE("memory/a/b/pybox-1/cell-7/memory.limit_in_bytes", "67108864");
    ASSERT_FILE("memory/a/b/pybox-1/cell-7/memory.memsw.limit_in_bytes", "67108864");
    ASSERT_FILE("pids/pybox-1/cell-7/pids.max", "16");
    ASSERT_FILE("cpu,cpuacct/c/pybox-1/cell-7/cpu.cfs_period_us", "100000");
    ASSERT_FILE("cpu,cpuacct/c/pybox-1/cell-7/cpu.cfs_quota_us", "50000");
    /* memsw may never be below memory, so memory goes first. */
    ck_assert(strstr(F.log, "cell-7/memory.limit_in_bytes=") <
              strstr(F.log, "cell-7/memory.memsw.limit_in_bytes="));

    /* Counters. */
    ck_assert_uint_eq(pbx_cgroup_cell_oom_kills(cell), 0);
    put(cell->dir[PBX_CGROUP_MEMORY], "memory.oom_control",
        "oom_kill_disable 0\nunder_oom 1\noom_kill 3\n");
    put(cell->dir[PBX_CGROUP_MEMORY], "memory.max_usage_in_bytes", "12345678\n");
    ck_assert_uint_eq(pbx_cgroup_cell_oom_kills(cell), 3);
    ck_assert_uint_eq(pbx_cgroup_cell_peak_memory(cell), 12345678);
    put(cell->dir[PBX_CGROUP_PIDS], "cgroup.procs", "999999998\n999999999\n");
    ck_assert_uint_eq(pbx_cgroup_cell_count(cell), 2);

    /* One procs fd per hierarchy, write-only. */
    n = pbx_cgroup_cell_procs_fds(cell, fds, 4, &err);
    ck_assert_int_eq(n, 3);
    for (int i = 0; i < n; i++) {
        ck_assert_int_eq(fcntl(fds[i], F_GETFL) & O_ACCMODE, O_WRONLY);
        ck_assert_int_eq(fcntl(fds[i], F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
        close(fds[i]);
    }
    /* Too few slots: an error, nothing left open. */
    ck_assert_int_lt(pbx_cgroup_cell_procs_fds(cell, fds, 2, &err), 0);
    ck_assert_int_eq(err->code, PBX_E_INVAL);
    pbx_error_free(&err);

    ck_assert_int_eq(pbx_cgroup_cell_destroy(cell, &err), 0);
    ASSERT_GONE("memory/a/b/pybox-1/cell-7");
    ASSERT_GONE("pids/pybox-1/cell-7");
    ASSERT_GONE("cpu,cpuacct/c/pybox-1/cell-7");
    pbx_cgroup_teardown(cg);
    ASSERT_GONE("memory/a/b/pybox-1");
    ASSERT_GONE("pids/pybox-1");
    ASSERT_GONE("cpu,cpuacct/c/pybox-1");
}
END_TEST

START_TEST(test_v1_no_memsw)
{
    struct pbx_cgroup_limits limits = {1u << 20, 0, 0};
    struct pbx_cgroup_cell *cell = NULL;
    struct pbx_error *err = NULL;
    struct pbx_cgroups *cg;

    F.memsw = false;
    v1_mount("memory", "/a/b");
    cg = setup(self_v1);
    ck_assert_int_eq(pbx_cgroup_version_of(cg, PBX_CGROUP_MEMORY), PBX_CGROUP_V1);
    ASSERT_WHY(cg, PBX_CGROUP_MEMORY,
               "memory: cgroup v1 at %s/memory/a/b/pybox-1; no memory.memsw.limit_in_bytes (swap "
               "accounting is off), so the limit covers memory only, not swap",
               F.root);
    ck_assert_int_eq(pbx_cgroup_cell_create(cg, 1, &limits, &cell, &err), 0);
    ASSERT_FILE("memory/a/b/pybox-1/cell-1/memory.limit_in_bytes", "1048576");
    ASSERT_FILE("memory/a/b/pybox-1/cell-1/memory.swappiness", "0");
    ck_assert_ptr_null(strstr(F.log, "memsw"));
    ck_assert_int_eq(pbx_cgroup_cell_destroy(cell, &err), 0);
    pbx_cgroup_teardown(cg);
    ASSERT_GONE("memory/a/b/pybox-1");
}
END_TEST

START_TEST(test_v1_missing)
{
    struct pbx_cgroups *cg;

    F.no_pids_max = true;
    v1_mount("memory", "/a/b");
    v1_mount("pids", "/");
    /* No cpu mount; memory has no line in /proc/self/cgroup. */
    cg = setup("8:pids:/\n0::/\n");
    for (int i = 0; i < PBX_CGROUP_NCTL; i++)
        ck_assert_int_eq(pbx_cgroup_version_of(cg, i), PBX_CGROUP_NONE);
    ck_assert_str_eq(pbx_cgroup_why(cg, PBX_CGROUP_MEMORY),
                     "memory: /proc/self/cgroup has no line for the cgroup v1 memory controller");
    ASSERT_WHY(cg, PBX_CGROUP_PIDS, "pids: %s/pids/pybox-1/pids.max is not writable: %s", F.root,
               strerror(ENOENT));
    ASSERT_WHY(cg, PBX_CGROUP_CPU,
               "cpu: cgroup v1 cpu controller not mounted at %s/cpu, and no cgroup v2 hierarchy "
               "at %s or %s/unified",
               F.root, F.root, F.root);
    /* The unusable parent was removed again. */
    ASSERT_GONE("pids/pybox-1");
    pbx_cgroup_teardown(cg);
    /* No permission to create the parent. */
    F.fail_op = 'm';
    F.fail_suffix = "/memory/a/b/pybox-1";
    F.fail_errno = EACCES;
    cg = setup(self_v1);
    ASSERT_WHY(cg, PBX_CGROUP_MEMORY, "memory: cannot create %s/memory/a/b/pybox-1: %s", F.root,
               strerror(EACCES));
    pbx_cgroup_teardown(cg);
}
END_TEST

START_TEST(test_cell_failures)
{
    struct pbx_cgroup_limits limits = {1u << 20, 8, 0};
    struct pbx_cgroup_cell *cell = NULL;
    struct pbx_error *err = NULL;
    struct pbx_cgroups *cg;

    v1_mount("memory", "/a/b");
    v1_mount("pids", "/");
    cg = setup(self_v1);
    /* mkdir of the second hierarchy fails: the first is removed again. */
    F.fail_op = 'm';
    F.fail_suffix = "/pids/pybox-1/cell-2";
    F.fail_errno = ENOSPC;
    ck_assert_int_lt(pbx_cgroup_cell_create(cg, 2, &limits, &cell, &err), 0);
    ck_assert_int_eq(err->code, ENOSPC);
    ck_assert_ptr_nonnull(strstr(err->msg, "pybox-1/cell-2"));
    pbx_error_free(&err);
    ASSERT_GONE("memory/a/b/pybox-1/cell-2");
    /* A limit that cannot be written fails the cell: never run without it. */
    F.fail_op = 'w';
    F.fail_suffix = "cell-3/pids.max";
    F.fail_errno = EINVAL;
    ck_assert_int_lt(pbx_cgroup_cell_create(cg, 3, &limits, &cell, &err), 0);
    ck_assert_int_eq(err->code, EINVAL);
    ck_assert_ptr_nonnull(strstr(err->msg, "cgroup pids limit of cell 3: write `8` to "));
    pbx_error_free(&err);
    ASSERT_GONE("memory/a/b/pybox-1/cell-3");
    ASSERT_GONE("pids/pybox-1/cell-3");
    /* An existing cell directory is never reused. */
    F.fail_op = 0;
    ck_assert_int_eq(pbx_cgroup_cell_create(cg, 4, &limits, &cell, &err), 0);
    ck_assert_int_lt(pbx_cgroup_cell_create(cg, 4, &limits, &cell, &err), 0);
    ck_assert_int_eq(err->code, EEXIST);
    pbx_error_free(&err);
    ck_assert_int_eq(pbx_cgroup_cell_destroy(cell, NULL), 0);
    pbx_cgroup_teardown(cg);
    ASSERT_GONE("pids/pybox-1");
}
END_TEST

START_TEST(test_kill_listed)
{
    struct pbx_cgroup_limits limits = {0, 0, 0};
    struct pbx_cgroup_cell *cell = NULL;
    struct pbx_error *err = NULL;
    struct pbx_cgroups *cg;
    pid_t child;
    int status;
    char *procs;

    v1_mount("pids", "/");
    cg = setup(self_v1);
    ck_assert_int_eq(pbx_cgroup_cell_create(cg, 1, &limits, &cell, &err), 0);
    child = fork();
    ck_assert_int_ge(child, 0);
    if (child == 0) {
        pause();
        _exit(0);
    }
    /* Our own pid is listed too: it must be spared. */
    procs = xasprintf("%d\n%d\n", (int)child, (int)getpid());
    put(cell->dir[PBX_CGROUP_PIDS], "cgroup.procs", procs);
    free(procs);
    pbx_cgroup_cell_kill(cell);
    ck_assert_int_eq(waitpid(child, &status, 0), child);
    ck_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    put(cell->dir[PBX_CGROUP_PIDS], "cgroup.procs", "");
    /* A cell never destroyed: teardown removes it with the parent. */
    free(cell->dir[PBX_CGROUP_PIDS]);
    free(cell);
    pbx_cgroup_teardown(cg);
    ASSERT_GONE("pids/pybox-1");
    ck_assert_int_eq(pbx_cgroup_cell_destroy(NULL, NULL), 0);
    pbx_cgroup_teardown(NULL);
    ck_assert_str_eq(pbx_cgroup_why(NULL, PBX_CGROUP_PIDS), "no cgroup manager");
    ck_assert_int_eq(pbx_cgroup_version_of(NULL, PBX_CGROUP_PIDS), PBX_CGROUP_NONE);
}
END_TEST

/* Reuse of a cell's cgroups for another execution. */

#define CELL5_MEM  "memory/a/b/pybox-1/cell-5/"
#define CELL5_PIDS "pids/pybox-1/cell-5/"
#define CELL5_CPU  "cpu,cpuacct/c/pybox-1/cell-5/"

/* The three v1 hierarchies of test_v1_tree, and cell 5 in them with `limits`. */
static struct pbx_cgroups *v1_cell5(const struct pbx_cgroup_limits *limits,
                                    struct pbx_cgroup_cell **cell)
{
    struct pbx_error *err = NULL;
    struct pbx_cgroups *cg;

    v1_mount("memory", "/a/b");
    v1_mount("pids", "/");
    v1_mount("cpu,cpuacct", "/c");
    cg = setup(self_v1);
    for (int i = 0; i < PBX_CGROUP_NCTL; i++)
        ck_assert_msg(pbx_cgroup_version_of(cg, i) == PBX_CGROUP_V1, "%s", pbx_cgroup_why(cg, i));
    ck_assert_int_eq(pbx_cgroup_cell_create(cg, 5, limits, cell, &err), 0);
    ck_assert_ptr_null(err);
    return cg;
}

/* Destroy cell 5 and the manager; nothing of either may be left. */
static void v1_cell5_done(struct pbx_cgroups *cg, struct pbx_cgroup_cell *cell)
{
    struct pbx_error *err = NULL;

    ck_assert_int_eq(pbx_cgroup_cell_destroy(cell, &err), 0);
    ck_assert_ptr_null(err);
    ASSERT_GONE("memory/a/b/pybox-1/cell-5");
    ASSERT_GONE("pids/pybox-1/cell-5");
    ASSERT_GONE("cpu,cpuacct/c/pybox-1/cell-5");
    pbx_cgroup_teardown(cg);
    ASSERT_GONE("memory/a/b/pybox-1");
    ASSERT_GONE("pids/pybox-1");
    ASSERT_GONE("cpu,cpuacct/c/pybox-1");
}

/* The position of `line` in the write log (must be there), for checking write order. */
static const char *logged(const char *line)
{
    const char *at = strstr(F.log, line);

    ck_assert_msg(at != NULL, "no write `%s` in:\n%s", line, F.log);
    return at;
}

START_TEST(test_v1_reuse)
{
    struct pbx_cgroup_limits a = {64u << 20, 16, 50};
    struct pbx_cgroup_limits b = {128u << 20, 32, 200};
    struct pbx_cgroup_cell *cell = NULL;
    struct pbx_error *err = NULL;
    struct pbx_cgroups *cg = v1_cell5(&a, &cell);
    char *mem = xstrdup(cell->dir[PBX_CGROUP_MEMORY]);

    /* What the last execution left: two OOM kills, a peak of its own. */
    put(mem, "memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n");
    put(mem, "memory.max_usage_in_bytes", "60000000\n");
    put(mem, "memory.memsw.max_usage_in_bytes", "61000000\n");
    /* And 40 MB still charged (page cache of files it read): over what may stay. */
    put(mem, "memory.usage_in_bytes", "40000000\n");
    ck_assert_uint_eq(pbx_cgroup_cell_oom_kills(cell), 2);
    ck_assert_uint_eq(pbx_cgroup_cell_peak_memory(cell), 60000000);
    F.log[0] = '\0';

    ck_assert_int_eq(pbx_cgroup_cell_reuse(cell, &b, &err), 0);
    ck_assert_ptr_null(err);
    /* The same directories, now with B's limits. */
    ck_assert_str_eq(cell->dir[PBX_CGROUP_MEMORY], mem);
    ASSERT_FILE(CELL5_MEM "memory.limit_in_bytes", "134217728");
    ASSERT_FILE(CELL5_MEM "memory.memsw.limit_in_bytes", "134217728");
    ASSERT_FILE(CELL5_PIDS "pids.max", "32");
    ASSERT_FILE(CELL5_CPU "cpu.cfs_period_us", "100000");
    ASSERT_FILE(CELL5_CPU "cpu.cfs_quota_us", "200000");
    /* Page cache given back, peaks reset. */
    logged(CELL5_MEM "memory.force_empty=0\n");
    logged(CELL5_MEM "memory.max_usage_in_bytes=0\n");
    logged(CELL5_MEM "memory.memsw.max_usage_in_bytes=0\n");
    ASSERT_FILE(CELL5_MEM "memory.max_usage_in_bytes", "0");
    ASSERT_FILE(CELL5_MEM "memory.memsw.max_usage_in_bytes", "0");
    ck_assert_uint_eq(pbx_cgroup_cell_peak_memory(cell), 0);
    /* The kernel's count goes on; only kills of this use count. */
    ck_assert_uint_eq(pbx_cgroup_cell_oom_kills(cell), 0);
    put(mem, "memory.oom_control", "oom_kill_disable 0\nunder_oom 1\noom_kill 3\n");
    ck_assert_uint_eq(pbx_cgroup_cell_oom_kills(cell), 1);

    /* A third use: the kill of the second is not its either. */
    ck_assert_int_eq(pbx_cgroup_cell_reuse(cell, &a, &err), 0);
    ck_assert_uint_eq(pbx_cgroup_cell_oom_kills(cell), 0);
    ASSERT_FILE(CELL5_MEM "memory.limit_in_bytes", "67108864");
    ASSERT_FILE(CELL5_PIDS "pids.max", "16");
    ASSERT_FILE(CELL5_CPU "cpu.cfs_quota_us", "50000");
    free(mem);
    v1_cell5_done(cg, cell);
}
END_TEST

/* A few kilobytes left charged are left alone: force_empty is slow and only for real leftovers. */
START_TEST(test_v1_reuse_small_leftover)
{
    struct pbx_cgroup_limits a = {64u << 20, 16, 50};
    struct pbx_cgroup_cell *cell = NULL;
    struct pbx_error *err = NULL;
    struct pbx_cgroups *cg = v1_cell5(&a, &cell);

    put(cell->dir[PBX_CGROUP_MEMORY], "memory.usage_in_bytes", "106496\n");
    F.log[0] = '\0';
    ck_assert_int_eq(pbx_cgroup_cell_reuse(cell, &a, &err), 0);
    ck_assert_ptr_null(err);
    ck_assert_msg(strstr(F.log, "memory.force_empty") == NULL, "force_empty written:\n%s", F.log);
    logged(CELL5_MEM "memory.max_usage_in_bytes=0\n");
    ASSERT_FILE(CELL5_MEM "memory.limit_in_bytes", "67108864");
    v1_cell5_done(cg, cell);
}
END_TEST

START_TEST(test_v1_reuse_unlimited)
{
    struct pbx_cgroup_limits a = {64u << 20, 16, 50};
    struct pbx_cgroup_limits none = {0, 0, 0};
    struct pbx_cgroup_cell *cell = NULL;
    struct pbx_error *err = NULL;
    struct pbx_cgroups *cg = v1_cell5(&a, &cell);

    /* No limit asked for: none of the old ones may stay. */
    ck_assert_int_eq(pbx_cgroup_cell_reuse(cell, &none, &err), 0);
    ASSERT_FILE(CELL5_MEM "memory.limit_in_bytes", "-1");
    ASSERT_FILE(CELL5_MEM "memory.memsw.limit_in_bytes", "-1");
    ASSERT_FILE(CELL5_PIDS "pids.max", "max");
    ASSERT_FILE(CELL5_CPU "cpu.cfs_quota_us", "-1");
    /* And from unlimited back to limited. */
    ck_assert_int_eq(pbx_cgroup_cell_reuse(cell, &a, &err), 0);
    ASSERT_FILE(CELL5_MEM "memory.limit_in_bytes", "67108864");
    ASSERT_FILE(CELL5_MEM "memory.memsw.limit_in_bytes", "67108864");
    ASSERT_FILE(CELL5_PIDS "pids.max", "16");
    ASSERT_FILE(CELL5_CPU "cpu.cfs_quota_us", "50000");
    v1_cell5_done(cg, cell);
}
END_TEST

START_TEST(test_v1_reuse_raise_memory)
{
    struct pbx_cgroup_limits small = {64u << 20, 16, 50};
    struct pbx_cgroup_limits big = {256u << 20, 16, 50};
    struct pbx_cgroup_limits tiny = {32u << 20, 16, 50};
    struct pbx_cgroup_cell *cell = NULL;
    struct pbx_error *err = NULL;
    struct pbx_cgroups *cg = v1_cell5(&small, &cell);
    char *limit = in_root(CELL5_MEM "memory.limit_in_bytes");

    /* The fake kernel enforces memsw >= memory, as the real one does. */
    ck_assert_int_eq(fake_write(NULL, limit, "268435456", 9), -1);
    ck_assert_int_eq(errno, EINVAL);
    F.log[0] = '\0';

    /* 64 MiB to 256 MiB, above the old memsw: memsw is lifted before memory. */
    ck_assert_msg(pbx_cgroup_cell_reuse(cell, &big, &err) == 0, "%s", err ? err->msg : "");
    ASSERT_FILE(CELL5_MEM "memory.limit_in_bytes", "268435456");
    ASSERT_FILE(CELL5_MEM "memory.memsw.limit_in_bytes", "268435456");
    ck_assert(logged(CELL5_MEM "memory.memsw.limit_in_bytes=-1\n") <
              logged(CELL5_MEM "memory.limit_in_bytes=-1\n"));
    ck_assert(logged(CELL5_MEM "memory.limit_in_bytes=268435456\n") <
              logged(CELL5_MEM "memory.memsw.limit_in_bytes=268435456\n"));
    /* And down again, below the old memory limit. */
    ck_assert_msg(pbx_cgroup_cell_reuse(cell, &tiny, &err) == 0, "%s", err ? err->msg : "");
    ASSERT_FILE(CELL5_MEM "memory.limit_in_bytes", "33554432");
    ASSERT_FILE(CELL5_MEM "memory.memsw.limit_in_bytes", "33554432");
    free(limit);
    v1_cell5_done(cg, cell);
}
END_TEST

START_TEST(test_v1_reuse_refused_with_member)
{
    struct pbx_cgroup_limits a = {64u << 20, 16, 50};
    struct pbx_cgroup_limits b = {128u << 20, 32, 200};
    struct pbx_cgroup_cell *cell = NULL;
    struct pbx_error *err = NULL;
    struct pbx_cgroups *cg = v1_cell5(&a, &cell);
    pid_t child;
    int status;
    char *procs;

    child = fork();
    ck_assert_int_ge(child, 0);
    if (child == 0) {
        pause();
        _exit(0);
    }
    /* A member left in one hierarchy only (it escaped the kill, or is still exiting). */
    procs = xasprintf("%d\n", (int)child);
    put(cell->dir[PBX_CGROUP_MEMORY], "cgroup.procs", procs);
    free(procs);
    put(cell->dir[PBX_CGROUP_MEMORY], "memory.oom_control",
        "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n");
    F.log[0] = '\0';

    ck_assert_int_lt(pbx_cgroup_cell_reuse(cell, &b, &err), 0);
    ck_assert_ptr_nonnull(err);
    ck_assert_int_eq(err->code, EBUSY);
    pbx_error_free(&err);
    /* Untouched: nothing written, A's limits, its counters. */
    ck_assert_str_eq(F.log, "");
    ASSERT_FILE(CELL5_MEM "memory.limit_in_bytes", "67108864");
    ASSERT_FILE(CELL5_MEM "memory.memsw.limit_in_bytes", "67108864");
    ASSERT_FILE(CELL5_PIDS "pids.max", "16");
    ASSERT_FILE(CELL5_CPU "cpu.cfs_quota_us", "50000");
    ck_assert_uint_eq(pbx_cgroup_cell_oom_kills(cell), 2);

    /* Destroyable: the member is killed and the directories go. */
    v1_cell5_done(cg, cell);
    ck_assert_int_eq(waitpid(child, &status, 0), child);
    ck_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
}
END_TEST

/* A member list that cannot be read is never taken for an empty one (EMFILE, ENOMEM, ...). */
START_TEST(test_v1_reuse_refused_unreadable_procs)
{
    struct pbx_cgroup_limits a = {64u << 20, 16, 50};
    struct pbx_cgroup_limits b = {128u << 20, 32, 200};
    struct pbx_cgroup_cell *cell = NULL;
    struct pbx_error *err = NULL;
    struct pbx_cgroups *cg = v1_cell5(&a, &cell);
    char *procs = in_root(CELL5_PIDS "cgroup.procs");

    /* A directory in its place: open() succeeds, read() fails (EISDIR). */
    ck_assert_int_eq(unlink(procs), 0);
    ck_assert_int_eq(mkdir(procs, 0755), 0);
    ck_assert_uint_eq(pbx_cgroup_cell_count(cell), SIZE_MAX);
    F.log[0] = '\0';
    ck_assert_int_lt(pbx_cgroup_cell_reuse(cell, &b, &err), 0);
    ck_assert_ptr_nonnull(err);
    ck_assert_int_eq(err->code, EBUSY);
    pbx_error_free(&err);
    ck_assert_str_eq(F.log, "");
    ASSERT_FILE(CELL5_PIDS "pids.max", "16");

    ck_assert_int_eq(rmdir(procs), 0);
    put(cell->dir[PBX_CGROUP_PIDS], "cgroup.procs", "");
    ck_assert_uint_eq(pbx_cgroup_cell_count(cell), 0);
    free(procs);
    v1_cell5_done(cg, cell);
}
END_TEST

START_TEST(test_v1_reuse_write_fails)
{
    struct pbx_cgroup_limits a = {64u << 20, 16, 50};
    struct pbx_cgroup_limits b = {128u << 20, 32, 200};
    struct pbx_cgroup_cell *cell = NULL;
    struct pbx_error *err = NULL;
    struct pbx_cgroups *cg = v1_cell5(&a, &cell);

    /* A reset the kernel refuses: no reuse, and the error says which cell. */
    put(cell->dir[PBX_CGROUP_MEMORY], "memory.usage_in_bytes", "40000000\n");
    F.fail_op = 'w';
    F.fail_suffix = "cell-5/memory.force_empty";
    F.fail_errno = EBUSY;
    ck_assert_int_lt(pbx_cgroup_cell_reuse(cell, &b, &err), 0);
    ck_assert_int_eq(err->code, EBUSY);
    ck_assert_msg(strstr(err->msg, "reuse cgroup memory of cell 5") != NULL, "%s", err->msg);
    pbx_error_free(&err);
    F.fail_op = 0;
    v1_cell5_done(cg, cell);
}
END_TEST

/* cgroup v2. */

static const char self_v2[] = "0::/sup\n";

START_TEST(test_v2_tree)
{
    struct pbx_cgroup_limits limits = {64u << 20, 16, 250};
    struct pbx_cgroup_cell *cell = NULL;
    struct pbx_error *err = NULL;
    struct pbx_cgroups *cg;
    int fds[4];

    v2_tree(NULL, "cpuset cpu io memory pids\n", "cpu memory pids");
    cg = setup(self_v2);
    for (int i = 0; i < PBX_CGROUP_NCTL; i++)
        ck_assert_msg(pbx_cgroup_version_of(cg, i) == PBX_CGROUP_V2, "%s", pbx_cgroup_why(cg, i));
    ASSERT_WHY(cg, PBX_CGROUP_PIDS, "pids: cgroup v2 at %s/sup/pybox-1", F.root);
    /* Enabled for the supervisor's children, then for the cells. */
    ASSERT_FILE("sup/cgroup.subtree_control", "memory pids cpu");
    ASSERT_FILE("sup/pybox-1/cgroup.subtree_control", "memory pids cpu");

    ck_assert_int_eq(pbx_cgroup_cell_create(cg, 3, &limits, &cell, &err), 0);
    ASSERT_FILE("sup/pybox-1/cell-3/memory.max", "67108864");
    ASSERT_FILE("sup/pybox-1/cell-3/memory.swap.max", "0");
    ASSERT_FILE("sup/pybox-1/cell-3/pids.max", "16");
    ASSERT_FILE("sup/pybox-1/cell-3/cpu.max", "250000 100000");
    /* The cell's controllers share one directory: one fd. */
    ck_assert_int_eq(pbx_cgroup_cell_procs_fds(cell, fds, 4, &err), 1);
    close(fds[0]);
    put(cell->dir[0], "memory.events", "low 0\nhigh 2\nmax 9\noom 2\noom_kill 2\n");
    put(cell->dir[0], "memory.peak", "4096\n");
    ck_assert_uint_eq(pbx_cgroup_cell_oom_kills(cell), 2);
    ck_assert_uint_eq(pbx_cgroup_cell_peak_memory(cell), 4096);
    pbx_cgroup_cell_kill(cell);
    ASSERT_FILE("sup/pybox-1/cell-3/cgroup.kill", "1");
    ck_assert_int_eq(pbx_cgroup_cell_destroy(cell, &err), 0);
    ASSERT_GONE("sup/pybox-1/cell-3");
    pbx_cgroup_teardown(cg);
    ASSERT_GONE("sup/pybox-1");
}
END_TEST

START_TEST(test_v2_no_swap_partial_delegation)
{
    struct pbx_cgroup_limits limits = {1u << 20, 4, 10};
    struct pbx_cgroup_cell *cell = NULL;
    struct pbx_error *err = NULL;
    struct pbx_cgroups *cg;

    F.swap = false;
    /* cpu exists in the tree but was not delegated to the supervisor's cgroup. */
    v2_tree(NULL, "cpu memory pids\n", "memory pids");
    cg = setup(self_v2);
    ck_assert_int_eq(pbx_cgroup_version_of(cg, PBX_CGROUP_MEMORY), PBX_CGROUP_V2);
    ck_assert_int_eq(pbx_cgroup_version_of(cg, PBX_CGROUP_PIDS), PBX_CGROUP_V2);
    ck_assert_int_eq(pbx_cgroup_version_of(cg, PBX_CGROUP_CPU), PBX_CGROUP_NONE);
    ASSERT_WHY(cg, PBX_CGROUP_MEMORY,
               "memory: cgroup v2 at %s/sup/pybox-1; no memory.swap.max (swap accounting is "
               "off), so the limit covers memory only, not swap",
               F.root);
    ASSERT_WHY(cg, PBX_CGROUP_CPU,
               "cpu: cgroup v2 has it at %s but not for the supervisor's cgroup %s/sup (missing "
               "from its cgroup.controllers: it was not delegated)",
               F.root, F.root);
    ck_assert_int_eq(pbx_cgroup_cell_create(cg, 1, &limits, &cell, &err), 0);
    ASSERT_FILE("sup/pybox-1/cell-1/memory.max", "1048576");
    ck_assert_ptr_null(strstr(F.log, "swap"));
    ck_assert_ptr_null(strstr(F.log, "cpu.max"));
    ck_assert_int_eq(pbx_cgroup_cell_destroy(cell, &err), 0);
    pbx_cgroup_teardown(cg);
    ASSERT_GONE("sup/pybox-1");
}
END_TEST

/* The supervisor's cgroup `rel` lists the supervisor and `others` (a "\n"-ended list). */
static void members(const char *rel, const char *others)
{
    char *dir = in_root(rel);
    char *text = xasprintf("%d\n%s", (int)getpid(), others);

    put(dir, "cgroup.procs", text);
    free(text);
    free(dir);
}

START_TEST(test_v2_busy)
{
    struct pbx_cgroups *cg;
    char *log;

    v2_tree(NULL, "cpu memory pids\n", "cpu memory pids");
    /* Others share the supervisor's cgroup: the kernel refuses children controllers. */
    F.no_internal = true;
    members("sup", "4242\n4343\n");
    cg = setup(self_v2);
    for (int i = 0; i < PBX_CGROUP_NCTL; i++) {
        ck_assert_int_eq(pbx_cgroup_version_of(cg, i), PBX_CGROUP_NONE);
        ck_assert_ptr_nonnull(strstr(pbx_cgroup_why(cg, i), strerror(EBUSY)));
        ck_assert_ptr_nonnull(strstr(pbx_cgroup_why(cg, i), "delegated cgroup"));
        ck_assert_ptr_nonnull(strstr(pbx_cgroup_why(cg, i), "it also holds pid 4242 4343"));
    }
    ASSERT_WHY(cg, PBX_CGROUP_PIDS,
               "pids: cannot enable it for the children of the supervisor's cgroup: write `+pids` "
               "to %s/sup/cgroup.subtree_control: %s (cgroup v2 enables controllers only below a "
               "cgroup without processes of its own, and pybox lives in %s/sup; it also holds "
               "pid 4242 4343, which pybox does not move: start it alone in a delegated cgroup, "
               "e.g. systemd Delegate=yes, and it moves itself into a leaf)",
               F.root, strerror(EBUSY), F.root);
    /* Nobody was moved, and no leaf made. */
    log = xasprintf("%d\n4242\n4343\n", (int)getpid());
    ASSERT_FILE("sup/cgroup.procs", log);
    free(log);
    ck_assert_ptr_null(strstr(F.log, "cgroup.procs"));
    ASSERT_GONE("sup/" PBX_CGROUP_V2_LEAF);
    ASSERT_GONE("sup/pybox-1");
    pbx_cgroup_teardown(cg);
}
END_TEST

/*
 * Alone in its cgroup (systemd Delegate=yes): the supervisor moves into the
 * leaf, its cgroup enables the controllers, the parents go beside the leaf.
 */
START_TEST(test_v2_moves_into_leaf)
{
    struct pbx_cgroup_limits limits = {64u << 20, 16, 100};
    struct pbx_cgroup_cell *cell = NULL;
    struct pbx_error *err = NULL;
    struct pbx_cgroups *cg;
    struct pbx_cgroups *cg2;
    char *me = xasprintf("%d\n", (int)getpid());
    char *moved;
    char *enabled;

    v2_tree(NULL, "cpu memory pids\n", "cpu memory pids");
    F.no_internal = true;
    members("sup", "");
    cg = setup(self_v2);
    for (int i = 0; i < PBX_CGROUP_NCTL; i++)
        ck_assert_msg(pbx_cgroup_version_of(cg, i) == PBX_CGROUP_V2, "%s", pbx_cgroup_why(cg, i));
    ASSERT_WHY(cg, PBX_CGROUP_PIDS,
               "pids: cgroup v2 at %s/sup/pybox-1 (pybox in the leaf %s/sup/" PBX_CGROUP_V2_LEAF
               " beside it)",
               F.root, F.root);
    ASSERT_FILE("sup/cgroup.procs", "");
    ASSERT_FILE("sup/" PBX_CGROUP_V2_LEAF "/cgroup.procs", me);
    ASSERT_FILE("sup/cgroup.subtree_control", "memory pids cpu");
    ASSERT_FILE("sup/pybox-1/cgroup.subtree_control", "memory pids cpu");
    /* The move came first, once, then the controllers. */
    moved = xasprintf("sup/" PBX_CGROUP_V2_LEAF "/cgroup.procs=%d\n", (int)getpid());
    enabled = strstr(F.log, "sup/cgroup.subtree_control=+memory");
    ck_assert_ptr_nonnull(strstr(F.log, moved));
    ck_assert_ptr_nonnull(enabled);
    ck_assert(strstr(F.log, moved) < enabled);
    ck_assert_ptr_null(strstr(strstr(F.log, moved) + 1, moved));
    ck_assert_int_eq(pbx_cgroup_cell_create(cg, 5, &limits, &cell, &err), 0);
    ASSERT_FILE("sup/pybox-1/cell-5/memory.max", "67108864");
    ck_assert_int_eq(pbx_cgroup_cell_destroy(cell, &err), 0);

    /* A second engine of this supervisor finds itself in the leaf: no second move. */
    F.log[0] = '\0';
    {
        struct pbx_error *e2 = NULL;
        char *self = xasprintf("0::/sup/%s\n", PBX_CGROUP_V2_LEAF);

        ck_assert_int_eq(pbx__cgroup_setup_ops(F.root, self, "pybox-2", &fake_ops, &cg2, &e2), 0);
        free(self);
    }
    for (int i = 0; i < PBX_CGROUP_NCTL; i++)
        ck_assert_msg(pbx_cgroup_version_of(cg2, i) == PBX_CGROUP_V2, "%s", pbx_cgroup_why(cg2, i));
    ASSERT_WHY(cg2, PBX_CGROUP_MEMORY,
               "memory: cgroup v2 at %s/sup/pybox-2 (pybox in the leaf %s/sup/" PBX_CGROUP_V2_LEAF
               " beside it)",
               F.root, F.root);
    ck_assert_ptr_null(strstr(F.log, "cgroup.procs"));
    pbx_cgroup_teardown(cg2);
    pbx_cgroup_teardown(cg);
    ASSERT_GONE("sup/pybox-1");
    ASSERT_GONE("sup/pybox-2");
    /* The supervisor stays in its leaf: it lives there. */
    ASSERT_FILE("sup/" PBX_CGROUP_V2_LEAF "/cgroup.procs", me);
    free(moved);
    free(me);
}
END_TEST

/* The leaf cannot be made: nothing moves, and the reason is given. */
START_TEST(test_v2_leaf_fails)
{
    struct pbx_cgroups *cg;
    char *me = xasprintf("%d\n", (int)getpid());

    v2_tree(NULL, "memory pids\n", "memory pids");
    F.no_internal = true;
    members("sup", "");
    F.fail_op = 'm';
    F.fail_suffix = "/" PBX_CGROUP_V2_LEAF;
    F.fail_errno = EACCES;
    cg = setup(self_v2);
    ck_assert_int_eq(pbx_cgroup_version_of(cg, PBX_CGROUP_MEMORY), PBX_CGROUP_NONE);
    ck_assert_ptr_nonnull(strstr(pbx_cgroup_why(cg, PBX_CGROUP_MEMORY), "cannot create the leaf"));
    ck_assert_ptr_nonnull(strstr(pbx_cgroup_why(cg, PBX_CGROUP_PIDS), strerror(EACCES)));
    ASSERT_FILE("sup/cgroup.procs", me);
    pbx_cgroup_teardown(cg);
    free(me);
}
END_TEST

START_TEST(test_v2_reuse)
{
    struct pbx_cgroup_limits a = {64u << 20, 16, 50};
    struct pbx_cgroup_limits b = {128u << 20, 32, 200};
    struct pbx_cgroup_cell *cell = NULL;
    struct pbx_error *err = NULL;
    struct pbx_cgroups *cg;

    /* With a memory controller: never reused (memory.peak cannot be reset for all). */
    v2_tree(NULL, "cpuset cpu io memory pids\n", "cpu memory pids");
    cg = setup(self_v2);
    ck_assert_int_eq(pbx_cgroup_version_of(cg, PBX_CGROUP_MEMORY), PBX_CGROUP_V2);
    ck_assert_int_eq(pbx_cgroup_cell_create(cg, 3, &a, &cell, &err), 0);
    ck_assert_int_lt(pbx_cgroup_cell_reuse(cell, &b, &err), 0);
    ck_assert_ptr_nonnull(err);
    ck_assert_int_eq(err->code, PBX_E_UNSUPPORTED);
    pbx_error_free(&err);
    ck_assert_int_eq(pbx_cgroup_cell_destroy(cell, &err), 0);
    ck_assert_ptr_null(err);
    ASSERT_GONE("sup/pybox-1/cell-3");
    pbx_cgroup_teardown(cg);
    ASSERT_GONE("sup/pybox-1");
}
END_TEST

START_TEST(test_v2_reuse_without_memory)
{
    struct pbx_cgroup_limits a = {64u << 20, 16, 50};
    struct pbx_cgroup_limits b = {128u << 20, 32, 200};
    struct pbx_cgroup_limits none = {0, 0, 0};
    struct pbx_cgroup_cell *cell = NULL;
    struct pbx_error *err = NULL;
    struct pbx_cgroups *cg;

    /* Only pids and cpu delegated: those reset and take the new limits. */
    v2_tree(NULL, "cpu memory pids\n", "cpu pids");
    cg = setup(self_v2);
    ck_assert_int_eq(pbx_cgroup_version_of(cg, PBX_CGROUP_MEMORY), PBX_CGROUP_NONE);
    ck_assert_int_eq(pbx_cgroup_version_of(cg, PBX_CGROUP_PIDS), PBX_CGROUP_V2);
    ck_assert_int_eq(pbx_cgroup_cell_create(cg, 3, &a, &cell, &err), 0);
    ASSERT_FILE("sup/pybox-1/cell-3/pids.max", "16");
    ASSERT_FILE("sup/pybox-1/cell-3/cpu.max", "50000 100000");
    ck_assert_int_eq(pbx_cgroup_cell_reuse(cell, &b, &err), 0);
    ASSERT_FILE("sup/pybox-1/cell-3/pids.max", "32");
    ASSERT_FILE("sup/pybox-1/cell-3/cpu.max", "200000 100000");
    ck_assert_uint_eq(pbx_cgroup_cell_oom_kills(cell), 0);
    ck_assert_int_eq(pbx_cgroup_cell_reuse(cell, &none, &err), 0);
    ASSERT_FILE("sup/pybox-1/cell-3/pids.max", "max");
    ASSERT_FILE("sup/pybox-1/cell-3/cpu.max", "max");
    ck_assert_int_eq(pbx_cgroup_cell_destroy(cell, &err), 0);
    ASSERT_GONE("sup/pybox-1/cell-3");
    pbx_cgroup_teardown(cg);
    ASSERT_GONE("sup/pybox-1");
}
END_TEST

/* Hybrid hierarchies. */

START_TEST(test_mixed)
{
    struct pbx_cgroup_limits limits = {1u << 20, 4, 10};
    struct pbx_cgroup_cell *cell = NULL;
    struct pbx_error *err = NULL;
    struct pbx_cgroups *cg;
    int fds[4];

    /* pids moved to cgroup2, memory stays on v1; no cpu anywhere. */
    v1_mount("memory", "/a/b");
    v2_tree("unified", "pids\n", "pids");
    cg = setup("4:memory:/a/b\n0::/sup\n");
    ck_assert_int_eq(pbx_cgroup_version_of(cg, PBX_CGROUP_MEMORY), PBX_CGROUP_V1);
    ck_assert_int_eq(pbx_cgroup_version_of(cg, PBX_CGROUP_PIDS), PBX_CGROUP_V2);
    ck_assert_int_eq(pbx_cgroup_version_of(cg, PBX_CGROUP_CPU), PBX_CGROUP_NONE);
    ASSERT_WHY(cg, PBX_CGROUP_CPU,
               "cpu: cgroup v1 cpu controller not mounted at %s/cpu, and the cgroup v2 hierarchy "
               "at %s/unified does not offer it",
               F.root, F.root);
    ck_assert_int_eq(pbx_cgroup_cell_create(cg, 5, &limits, &cell, &err), 0);
    ASSERT_FILE("memory/a/b/pybox-1/cell-5/memory.limit_in_bytes", "1048576");
    ASSERT_FILE("unified/sup/pybox-1/cell-5/pids.max", "4");
    ck_assert_int_eq(pbx_cgroup_cell_procs_fds(cell, fds, 4, &err), 2);
    close(fds[0]);
    close(fds[1]);
    ck_assert_int_eq(pbx_cgroup_cell_destroy(cell, &err), 0);
    pbx_cgroup_teardown(cg);
    ASSERT_GONE("memory/a/b/pybox-1");
    ASSERT_GONE("unified/sup/pybox-1");
    /* This machine: v1 controllers, cgroup2 at unified/ without any: all v1. */
    put(F.root, "unified/cgroup.controllers", "");
    put(F.root, "unified/cgroup.subtree_control", "");
    v1_mount("pids", "/");
    v1_mount("cpu,cpuacct", "/c");
    cg = setup(self_v1);
    for (int i = 0; i < PBX_CGROUP_NCTL; i++)
        ck_assert_msg(pbx_cgroup_version_of(cg, i) == PBX_CGROUP_V1, "%s", pbx_cgroup_why(cg, i));
    ASSERT_GONE("unified/sup/pybox-1");
    pbx_cgroup_teardown(cg);
}
END_TEST

START_TEST(test_mixed_reuse)
{
    struct pbx_cgroup_limits a = {1u << 20, 4, 10};
    struct pbx_cgroup_limits b = {2u << 20, 8, 30};
    struct pbx_cgroup_cell *cell = NULL;
    struct pbx_error *err = NULL;
    struct pbx_cgroups *cg;

    /* memory on v1 (reusable), pids and cpu sharing one cgroup2 directory. */
    v1_mount("memory", "/a/b");
    v2_tree("unified", "cpu pids\n", "cpu pids");
    cg = setup("4:memory:/a/b\n0::/sup\n");
    ck_assert_int_eq(pbx_cgroup_version_of(cg, PBX_CGROUP_MEMORY), PBX_CGROUP_V1);
    ck_assert_int_eq(pbx_cgroup_version_of(cg, PBX_CGROUP_PIDS), PBX_CGROUP_V2);
    ck_assert_int_eq(pbx_cgroup_version_of(cg, PBX_CGROUP_CPU), PBX_CGROUP_V2);
    ck_assert_int_eq(pbx_cgroup_cell_create(cg, 5, &a, &cell, &err), 0);
    ASSERT_FILE("unified/sup/pybox-1/cell-5/cpu.max", "10000 100000");
    ck_assert_int_eq(pbx_cgroup_cell_reuse(cell, &b, &err), 0);
    ASSERT_FILE("memory/a/b/pybox-1/cell-5/memory.limit_in_bytes", "2097152");
    ASSERT_FILE("unified/sup/pybox-1/cell-5/pids.max", "8");
    /* Every controller of a shared directory takes its new limit, not only the first. */
    ASSERT_FILE("unified/sup/pybox-1/cell-5/cpu.max", "30000 100000");
    ck_assert_int_eq(pbx_cgroup_cell_destroy(cell, &err), 0);
    pbx_cgroup_teardown(cg);
    ASSERT_GONE("memory/a/b/pybox-1");
    ASSERT_GONE("unified/sup/pybox-1");
}
END_TEST

/* Stale parents of dead supervisors. */

/* A pid no process can have: one above the kernel's pid_max. */
static pid_t dead_pid(void)
{
    char *text = NULL;
    long max;

    ck_assert_int_eq(pbx__cgroup_read("/proc/sys/kernel/pid_max", &text, NULL), 0);
    max = strtol(text, NULL, 10);
    free(text);
    ck_assert(max > 0 && max < 0x7fffffff);
    ck_assert_int_eq(kill((pid_t)(max + 1), 0), -1);
    ck_assert_int_eq(errno, ESRCH);
    return (pid_t)(max + 1);
}

/* mkdir <root>/<rel> as the fake kernel would (control files included). */
static void fake_cgroup(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void fake_cgroup(const char *fmt, ...)
{
    char *rel = NULL;
    char *path;
    va_list ap;

    va_start(ap, fmt);
    ck_assert_int_ge(vasprintf(&rel, fmt, ap), 0);
    va_end(ap);
    path = in_root(rel);
    ck_assert_msg(fake_mkdir(NULL, path) == 0, "mkdir %s: %s", path, strerror(errno));
    free(path);
    free(rel);
}

static bool exists_rel(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static bool exists_rel(const char *fmt, ...)
{
    char *rel = NULL;
    char *path;
    struct stat st;
    bool ok;
    va_list ap;

    va_start(ap, fmt);
    ck_assert_int_ge(vasprintf(&rel, fmt, ap), 0);
    va_end(ap);
    path = in_root(rel);
    ok = lstat(path, &st) == 0;
    free(path);
    free(rel);
    return ok;
}

START_TEST(test_reap_stale_v1)
{
    int dead = (int)dead_pid();
    int live = (int)getppid();
    int self = (int)getpid();
    struct pbx_cgroups *cg;
    char *procs;
    char *path;
    char *target;
    pid_t child;
    int status;

    v1_mount("memory", "/a/b");
    v1_mount("pids", "/");
    v1_mount("cpu,cpuacct", "/c");
    /* Stale, in each hierarchy's base: the new and the old name. */
    fake_cgroup("pids/pybox-%d-0", dead);
    fake_cgroup("pids/pybox-%d-0/cell-1", dead);
    fake_cgroup("pids/pybox-%d-0/cell-2", dead);
    fake_cgroup("cpu,cpuacct/c/pybox-%d", dead);
    fake_cgroup("cpu,cpuacct/c/pybox-%d/cell-1", dead);
    fake_cgroup("memory/a/b/pybox-%d-3", dead);
    /* A process a dead supervisor left in its cell is killed. */
    child = fork();
    ck_assert_int_ge(child, 0);
    if (child == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive a failed test */
        pause();
        _exit(0);
    }
    procs = xasprintf("%d\n", (int)child);
    path = xasprintf("%s/pids/pybox-%d-0/cell-1", F.root, dead);
    put(path, "cgroup.procs", procs);
    free(path);
    free(procs);
    /* Live supervisors (our parent; ourselves, another engine) keep theirs. */
    fake_cgroup("pids/pybox-%d-0", live);
    fake_cgroup("pids/pybox-%d-0/cell-1", live);
    fake_cgroup("pids/pybox-%d", live);
    fake_cgroup("pids/pybox-%d-1", self);
    fake_cgroup("pids/pybox-%d-1/cell-1", self);
    /* Names that are not ours, though their digits name a dead pid. */
    fake_cgroup("pids/pybox-abc");
    fake_cgroup("pids/pybox-123-x");
    fake_cgroup("pids/pybox-%d-x", dead);
    fake_cgroup("pids/pybox-%d-01", dead);
    fake_cgroup("pids/pybox-%d-0-1", dead);
    fake_cgroup("pids/other-%d-0", dead);
    fake_cgroup("pids/pybox-0-0");
    /* Not in a base directory: never looked at. */
    fake_cgroup("pids/elsewhere");
    fake_cgroup("pids/elsewhere/pybox-%d-0", dead);
    fake_cgroup("memory/pybox-%d-0", dead);
    /* A symlink and a file with a stale name are left alone, and so is the link's target. */
    fake_cgroup("pids/target");
    fake_cgroup("pids/target/cell-1");
    target = in_root("pids/target");
    path = xasprintf("%s/pids/pybox-%d-7", F.root, dead);
    ck_assert_int_eq(symlink(target, path), 0);
    free(path);
    free(target);
    path = in_root("pids");
    procs = xasprintf("pybox-%d-8", dead);
    put(path, procs, "");
    free(procs);
    free(path);

    cg = setup(self_v1);
    ck_assert(!exists_rel("pids/pybox-%d-0", dead));
    ck_assert_int_eq(waitpid(child, &status, 0), child);
    ck_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    ck_assert(!exists_rel("cpu,cpuacct/c/pybox-%d", dead));
    ck_assert(!exists_rel("memory/a/b/pybox-%d-3", dead));
    ck_assert(exists_rel("pids/pybox-%d-0/cell-1", live));
    ck_assert(exists_rel("pids/pybox-%d", live));
    ck_assert(exists_rel("pids/pybox-%d-1/cell-1", self));
    ck_assert(exists_rel("pids/pybox-abc"));
    ck_assert(exists_rel("pids/pybox-123-x"));
    ck_assert(exists_rel("pids/pybox-%d-x", dead));
    ck_assert(exists_rel("pids/pybox-%d-01", dead));
    ck_assert(exists_rel("pids/pybox-%d-0-1", dead));
    ck_assert(exists_rel("pids/other-%d-0", dead));
    ck_assert(exists_rel("pids/pybox-0-0"));
    ck_assert(exists_rel("pids/elsewhere/pybox-%d-0", dead));
    ck_assert(exists_rel("memory/pybox-%d-0", dead));
    ck_assert(exists_rel("pids/pybox-%d-7", dead));
    ck_assert(exists_rel("pids/target/cell-1"));
    ck_assert(exists_rel("pids/pybox-%d-8", dead));
    /* Our own parents were made as usual. */
    for (int i = 0; i < PBX_CGROUP_NCTL; i++)
        ck_assert_msg(pbx_cgroup_version_of(cg, i) == PBX_CGROUP_V1, "%s", pbx_cgroup_why(cg, i));
    pbx_cgroup_teardown(cg);
    ASSERT_GONE("pids/pybox-1");
}
END_TEST

START_TEST(test_reap_stale_deep)
{
    int dead = (int)dead_pid();
    struct pbx_cgroups *cg;

    /*
     * Nothing below a cell is touched: the cell and its parent stay (EBUSY
     * until the retry gives up), and the next stale parent is still reaped.
     */
    v1_mount("pids", "/");
    fake_cgroup("pids/pybox-%d-0", dead);
    fake_cgroup("pids/pybox-%d-0/cell-1", dead);
    fake_cgroup("pids/pybox-%d-0/cell-1/inner", dead);
    fake_cgroup("pids/pybox-%d-1", dead);
    fake_cgroup("pids/pybox-%d-1/cell-1", dead);
    cg = setup(self_v1);
    ck_assert(exists_rel("pids/pybox-%d-0/cell-1/inner", dead));
    ck_assert(!exists_rel("pids/pybox-%d-1", dead));
    ck_assert_int_eq(pbx_cgroup_version_of(cg, PBX_CGROUP_PIDS), PBX_CGROUP_V1);
    /* No member holds it: nothing to wait for, and trying again changes nothing. */
    ck_assert_uint_eq(pbx_cgroup_stale_waiting(cg), 0);
    ck_assert_uint_eq(pbx_cgroup_reap_stale(cg), 0);
    ck_assert(exists_rel("pids/pybox-%d-0/cell-1/inner", dead));
    pbx_cgroup_teardown(cg);
}
END_TEST

START_TEST(test_reap_stale_member_exiting)
{
    int dead = (int)dead_pid();
    struct pbx_cgroups *cg;
    char *path;
    char *procs;

    /*
     * A member killed but not yet exited (listed by a pid no process has, so
     * the kill cannot end it) keeps its stale cell busy past setup's wait:
     * setup counts it, and a later pbx_cgroup_reap_stale() removes it once
     * the member is gone.  A stale parent without members goes at once.
     */
    F.busy_members = true;
    v1_mount("pids", "/");
    fake_cgroup("pids/pybox-%d-0", dead);
    fake_cgroup("pids/pybox-%d-0/cell-1", dead);
    fake_cgroup("pids/pybox-%d-0/cell-2", dead);
    fake_cgroup("pids/pybox-%d-1", dead);
    fake_cgroup("pids/pybox-%d-1/cell-1", dead);
    path = xasprintf("%s/pids/pybox-%d-0/cell-1", F.root, dead);
    procs = xasprintf("%d\n", dead);
    put(path, "cgroup.procs", procs);
    cg = setup(self_v1);
    ck_assert(!exists_rel("pids/pybox-%d-1", dead));
    ck_assert(!exists_rel("pids/pybox-%d-0/cell-2", dead));
    ck_assert(exists_rel("pids/pybox-%d-0/cell-1", dead));
    ck_assert_uint_eq(pbx_cgroup_stale_waiting(cg), 1);
    ck_assert_uint_eq(pbx_cgroup_reap_stale(cg), 1);
    ck_assert(exists_rel("pids/pybox-%d-0/cell-1", dead));
    put(path, "cgroup.procs", "");
    ck_assert_uint_eq(pbx_cgroup_reap_stale(cg), 0);
    ck_assert(!exists_rel("pids/pybox-%d-0", dead));
    /* Our own parent was made as usual, and setup's count stays what setup saw. */
    ck_assert_int_eq(pbx_cgroup_version_of(cg, PBX_CGROUP_PIDS), PBX_CGROUP_V1);
    ck_assert_uint_eq(pbx_cgroup_stale_waiting(cg), 1);
    free(procs);
    free(path);
    pbx_cgroup_teardown(cg);
}
END_TEST

START_TEST(test_reap_stale_v2)
{
    int dead = (int)dead_pid();
    struct pbx_cgroups *cg;
    char *want;

    v2_tree(NULL, "cpu memory pids\n", "cpu memory pids");
    fake_cgroup("sup/pybox-%d-0", dead);
    fake_cgroup("sup/pybox-%d-0/cell-4", dead);
    fake_cgroup("sup/pybox-%d-0", (int)getppid());
    cg = setup(self_v2);
    ck_assert(!exists_rel("sup/pybox-%d-0", dead));
    ck_assert(exists_rel("sup/pybox-%d-0", (int)getppid()));
    /* Killed the v2 way, once for the shared directory. */
    want = xasprintf("sup/pybox-%d-0/cell-4/cgroup.kill=1\n", dead);
    ck_assert_msg(strstr(F.log, want) != NULL, "%s", F.log);
    ck_assert_ptr_eq(strstr(strstr(F.log, want) + 1, want), NULL);
    free(want);
    pbx_cgroup_teardown(cg);
}
END_TEST

/* This machine's cgroups. */

static struct pbx_cgroups *real_cg;
static struct pbx_cgroup_cell *real_cell;
static pid_t real_owner;

static char *real_stale[2 * PBX_CGROUP_NCTL]; /* made by hand: cell, then parent, per hierarchy */

/*
 * Leave nothing on the machine when the test stops early.  Registered with
 * atexit(); a failed ck_assert _exit()s in fork mode, so checks that are
 * likely to fail call it themselves first.
 */
static void real_cleanup(void)
{
    if (getpid() != real_owner)
        return;
    pbx_cgroup_cell_destroy(real_cell, NULL);
    pbx_cgroup_teardown(real_cg);
    for (size_t i = 0; i < sizeof(real_stale) / sizeof(real_stale[0]); i++)
        if (real_stale[i])
            rmdir(real_stale[i]);
}

/*
 * Leave what a SIGKILLed supervisor would: pybox-<dead>-0/cell-1 where our
 * setup is about to create its parent in the v1 hierarchy of `ctl`.  Fills
 * two slots of real_stale; nothing when `ctl` is not on v1 here.
 */
static void real_make_stale(const char *self, enum pbx_cgroup_ctl ctl, pid_t dead)
{
    const char *name = pbx__cgroup_ctl_name(ctl);
    char *mount = pbx__cgroup_v1_mount("/sys/fs/cgroup", ctl);
    char *own = NULL;
    char *parent;

    if (mount == NULL || pbx__cgroup_parse_proc(self, strlen(self), name, &own) < 0) {
        free(mount);
        return;
    }
    parent = xasprintf("%s%s/pybox-%d-0", mount, strcmp(own, "/") == 0 ? "" : own, (int)dead);
    real_stale[2 * ctl + 1] = parent;
    real_stale[2 * ctl] = xasprintf("%s/cell-1", parent);
    /* EEXIST: an earlier run that failed before setup left them; stale all the same. */
    for (int i = 1; i >= 0; i--)
        ck_assert_msg(mkdir(real_stale[2 * ctl + i], 0755) == 0 || errno == EEXIST, "mkdir %s: %s",
                      real_stale[2 * ctl + i], strerror(errno));
    free(own);
    free(mount);
}

static bool have_cgroupfs(void)
{
    struct statfs fs;

    if (statfs("/sys/fs/cgroup", &fs) == 0 && fs.f_type == CGROUP2_SUPER_MAGIC)
        return true;
    return (statfs("/sys/fs/cgroup/pids", &fs) == 0 && fs.f_type == CGROUP_SUPER_MAGIC) ||
           (statfs("/sys/fs/cgroup/memory", &fs) == 0 && fs.f_type == CGROUP_SUPER_MAGIC);
}

struct report {
    int forked; /* grandchildren started before fork() failed */
    int err;    /* errno of the failed fork(), 0 if none failed */
};

/* The cell: join through the fds, then fork until the pids limit says no. */
static _Noreturn void real_child(const int *fds, int n, int out, int tries)
{
    struct report r = {0, 0};

    for (int i = 0; i < n; i++)
        if (write(fds[i], "0", 1) != 1)
            _exit(10 + i);
    for (int i = 0; i < n; i++)
        close(fds[i]);
    while (r.forked < tries) {
        pid_t g = fork();

        if (g == 0) {
            pause();
            _exit(0);
        }
        if (g < 0) {
            r.err = errno;
            break;
        }
        r.forked++;
    }
    if (write(out, &r, sizeof(r)) != sizeof(r))
        _exit(20);
    pause();
    _exit(0);
}

/* The cgroup2 mount of this machine ("/sys/fs/cgroup" or its "unified"), or NULL. */
static const char *real_v2_root(void)
{
    if (exists("/sys/fs/cgroup/cgroup.controllers"))
        return "/sys/fs/cgroup";
    if (exists("/sys/fs/cgroup/unified/cgroup.controllers"))
        return "/sys/fs/cgroup/unified";
    return NULL;
}

/* The parked thread: its tid, then it waits for a byte on the pipe. */
struct parked {
    int fd;            /* read end of the pipe */
    _Atomic pid_t tid; /* set once it runs */
};

static void *park(void *arg)
{
    struct parked *p = arg;
    char c;

    atomic_store(&p->tid, (pid_t)syscall(SYS_gettid));
    while (read(p->fd, &c, 1) < 0 && errno == EINTR)
        ;
    return NULL;
}

/* Whether /proc/self/task/<tid>/cgroup has the v2 line "0::<want>". */
static bool task_in(pid_t tid, const char *want)
{
    char *path = xasprintf("/proc/self/task/%d/cgroup", (int)tid);
    char *text = NULL;
    char *line = xasprintf("0::%s\n", want);
    bool in;

    in = pbx__cgroup_read(path, &text, NULL) == 0 && strstr(text, line) != NULL;
    free(text);
    free(line);
    free(path);
    return in;
}

/*
 * The supervisor's move into its leaf, on this machine's kernel.  Setup
 * takes the v2 path only where the cgroup2 tree offers controllers, which a
 * hybrid host's (this project's) does not, so the move is driven directly: a
 * child with a second thread, alone in a fresh cgroup, moves into the leaf;
 * both threads must be there after one write, and a second setup must find
 * the leaf and put parents beside it.  Exits with the step that failed.
 */
static int real_leaf_child(const char *v2, const char *own_rel)
{
    char *own = xasprintf("%s%s", v2, own_rel);
    char *leaf_rel = xasprintf("%s/%s", own_rel, PBX_CGROUP_V2_LEAF);
    char *self = NULL;
    char *why = NULL;
    char *text = NULL;
    char me[24];
    struct pbx_cgroups *cg = NULL;
    struct pbx_cgroups *cg2 = NULL;
    struct pbx_error *err = NULL;
    struct parked parked;
    pthread_t thread;
    char name1[48];
    char name2[48];
    int hold[2];
    pid_t tid = 0;

    /* Parents named as a supervisor's: a later setup reaps them if this child fails. */
    snprintf(name1, sizeof(name1), "pybox-%d-90", (int)getpid());
    snprintf(name2, sizeof(name2), "pybox-%d-91", (int)getpid());
    snprintf(me, sizeof(me), "%d", (int)getpid());
    if (mkdir(own, 0755) < 0)
        return 10;
    {
        char *procs = xasprintf("%s/cgroup.procs", own);
        int fd = open(procs, O_WRONLY | O_CLOEXEC);

        if (fd < 0 || write(fd, me, strlen(me)) < 0)
            return 11;
        close(fd);
        free(procs);
    }
    if (pipe(hold) < 0)
        return 12;
    parked.fd = hold[0];
    atomic_init(&parked.tid, 0);
    if (pthread_create(&thread, NULL, park, &parked) != 0)
        return 12;
    for (int i = 0; i < 5000 && (tid = atomic_load(&parked.tid)) == 0; i++)
        usleep(1000); /* polls for the thread's start, up to 5 s */
    if (tid == 0 || !task_in(tid, own_rel))
        return 13;
    if (pbx__cgroup_read("/proc/self/cgroup", &self, NULL) < 0 ||
        pbx__cgroup_setup_ops("/sys/fs/cgroup", self, name1, NULL, &cg, &err) < 0)
        return 14;
    if (cg->v2_base == NULL || strcmp(cg->v2_base, own) != 0 || strcmp(cg->v2_self, own) != 0)
        return 15;
    if (pbx__cgroup_v2_move_into_leaf(cg, &why) < 0 || why != NULL) {
        fprintf(stderr, "test_cgroup: move: %s\n", why ? why : "?");
        return 16;
    }
    /* One write moved both threads, and the base holds nothing now. */
    if (!task_in(getpid(), leaf_rel) || !task_in(tid, leaf_rel))
        return 17;
    {
        char *procs = xasprintf("%s/cgroup.procs", own);

        if (pbx__cgroup_read(procs, &text, NULL) < 0 || text[0] != '\0')
            return 19;
        free(procs);
    }
    /* A second engine's setup: the parents go beside the leaf. */
    free(self);
    if (pbx__cgroup_read("/proc/self/cgroup", &self, NULL) < 0 ||
        pbx__cgroup_setup_ops("/sys/fs/cgroup", self, name2, NULL, &cg2, &err) < 0)
        return 20;
    if (strcmp(cg2->v2_base, own) != 0 || strcmp(cg2->v2_self + strlen(v2), leaf_rel) != 0)
        return 21;
    /* A second move finds nothing to do: pybox is not in the base any more. */
    if (pbx__cgroup_v2_move_into_leaf(cg2, &why) != 0 || why == NULL ||
        strstr(why, "is not listed") == NULL)
        return 22;
    pbx_cgroup_teardown(cg2);
    pbx_cgroup_teardown(cg);
    if (write(hold[1], "x", 1) != 1)
        return 23;
    pthread_join(thread, NULL);
    return 0;
}

START_TEST(test_real_v2_leaf)
{
    const char *v2 = real_v2_root();
    char *own_rel, *own, *leaf;
    int status;
    pid_t child;

    ck_assert_ptr_nonnull(v2);
    own_rel = xasprintf("/pbx-leaf-test-%d", (int)getpid());
    own = xasprintf("%s%s", v2, own_rel);
    leaf = xasprintf("%s/%s", own, PBX_CGROUP_V2_LEAF);
    child = fork();
    ck_assert_int_ge(child, 0);
    if (child == 0)
        _exit(real_leaf_child(v2, own_rel));
    ck_assert_int_eq(waitpid(child, &status, 0), child);
    /* The child is gone, so are its cgroups' members: remove them before any assert. */
    rmdir(leaf);
    rmdir(own);
    ck_assert_msg(!exists(own), "%s stays", own);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the child failed at step %d",
                  WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status));
    free(leaf);
    free(own);
    free(own_rel);
}
END_TEST

START_TEST(test_real_machine)
{
    struct pbx_cgroup_limits limits = {256u << 20, 4, 50};
    struct pbx_error *err = NULL;
    char *self = NULL;
    char *name = xasprintf("pybox-%d", (int)getpid());
    char *dirs[PBX_CGROUP_NCTL] = {NULL};
    char *parents[PBX_CGROUP_NCTL] = {NULL};
    char *want;
    char *proc;
    char *text = NULL;
    struct report r;
    int fds[PBX_CGROUP_NCTL];
    int pipefd[2];
    int status;
    int n;
    pid_t child;

    real_owner = getpid();
    atexit(real_cleanup);
    ck_assert_int_eq(pbx__cgroup_read("/proc/self/cgroup", &self, NULL), 0);
    real_make_stale(self, PBX_CGROUP_PIDS, dead_pid());
    real_make_stale(self, PBX_CGROUP_CPU, dead_pid());
    ck_assert_int_eq(pbx_cgroup_setup("/sys/fs/cgroup", self, name, &real_cg, &err), 0);
    /*
     * The stale cgroups of a dead supervisor were reaped first.  A failed
     * ck_assert _exit()s in fork mode, skipping atexit: clean up before.
     */
    for (size_t i = 0; i < sizeof(real_stale) / sizeof(real_stale[0]); i++) {
        if (real_stale[i] && exists(real_stale[i])) {
            want = xstrdup(real_stale[i]);
            real_cleanup();
            ck_abort_msg("%s not reaped", want);
        }
        free(real_stale[i]);
        real_stale[i] = NULL;
    }
    for (int i = 0; i < PBX_CGROUP_NCTL; i++) {
        fprintf(stderr, "test_cgroup: %s\n", pbx_cgroup_why(real_cg, i));
        parents[i] = real_cg->ctl[i].parent ? xstrdup(real_cg->ctl[i].parent) : NULL;
    }
    ck_assert_msg(pbx_cgroup_version_of(real_cg, PBX_CGROUP_PIDS) != PBX_CGROUP_NONE, "%s",
                  pbx_cgroup_why(real_cg, PBX_CGROUP_PIDS));
    ck_assert_int_eq(pbx_cgroup_cell_create(real_cg, 1, &limits, &real_cell, &err), 0);
    for (int i = 0; i < PBX_CGROUP_NCTL; i++)
        dirs[i] = real_cell->dir[i] ? xstrdup(real_cell->dir[i]) : NULL;
    want = xasprintf("%s/pids.max", dirs[PBX_CGROUP_PIDS]);
    assert_file(want, "4\n");
    free(want);
    if (pbx_cgroup_version_of(real_cg, PBX_CGROUP_MEMORY) == PBX_CGROUP_V1) {
        want = xasprintf("%s/memory.limit_in_bytes", dirs[PBX_CGROUP_MEMORY]);
        assert_file(want, "268435456\n");
        free(want);
    }

    n = pbx_cgroup_cell_procs_fds(real_cell, fds, PBX_CGROUP_NCTL, &err);
    ck_assert_int_ge(n, 1);
    ck_assert_int_eq(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
    ck_assert_int_eq(pipe2(pipefd, O_CLOEXEC), 0);
    child = fork();
    ck_assert_int_ge(child, 0);
    if (child == 0)
        real_child(fds, n, pipefd[1], 16);
    for (int i = 0; i < n; i++)
        close(fds[i]);
    close(pipefd[1]);
    ck_assert_int_eq(read(pipefd[0], &r, sizeof(r)), sizeof(r));
    close(pipefd[0]);
    /* The cell itself plus three: the fourth fork() hits pids.max. */
    ck_assert_int_eq(r.forked, 3);
    ck_assert_int_eq(r.err, EAGAIN);
    ck_assert_uint_eq(pbx_cgroup_cell_count(real_cell), 4);
    ck_assert_uint_eq(pbx_cgroup_cell_oom_kills(real_cell), 0);
    /* The kernel agrees on where the cell lives. */
    proc = xasprintf("/proc/%d/cgroup", (int)child);
    ck_assert_int_eq(pbx__cgroup_read(proc, &text, NULL), 0);
    want = xasprintf("/%s/cell-1\n", name);
    ck_assert_msg(strstr(text, want) != NULL, "%s", text);

    ck_assert_int_eq(pbx_cgroup_cell_destroy(real_cell, &err), 0);
    real_cell = NULL;
    ck_assert_int_eq(waitpid(child, &status, 0), child);
    ck_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    while (waitpid(-1, NULL, 0) > 0) /* the grandchildren, reparented to us */
        ;
    pbx_cgroup_teardown(real_cg);
    real_cg = NULL;
    for (int i = 0; i < PBX_CGROUP_NCTL; i++) {
        ck_assert_msg(!dirs[i] || !exists(dirs[i]), "%s left behind", dirs[i]);
        ck_assert_msg(!parents[i] || !exists(parents[i]), "%s left behind", parents[i]);
        free(dirs[i]);
        free(parents[i]);
    }
    free(want);
    free(text);
    free(proc);
    free(self);
    free(name);
}
END_TEST

/*
 * A child that joins `cell` through its procs fds, touches `mb` MiB of fresh
 * anonymous memory and exits 0; returns its wait status.
 */
static int real_touch(struct pbx_cgroup_cell *cell, size_t mb)
{
    int fds[PBX_CGROUP_NCTL];
    int n = pbx_cgroup_cell_procs_fds(cell, fds, PBX_CGROUP_NCTL, NULL);
    int status = -1;
    pid_t child;

    ck_assert_int_ge(n, 1);
    child = fork();
    ck_assert_int_ge(child, 0);
    if (child == 0) {
        size_t len = mb << 20;
        volatile char *p;

        for (int i = 0; i < n; i++)
            if (write(fds[i], "0", 1) != 1)
                _exit(10 + i);
        p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
            _exit(20);
        for (size_t off = 0; off < len; off += 4096)
            p[off] = 1;
        _exit(0);
    }
    for (int i = 0; i < n; i++)
        close(fds[i]);
    ck_assert_int_eq(waitpid(child, &status, 0), child);
    return status;
}

/* <dir>/<file> holds `want` exactly; on a mismatch clean up before failing. */
static void real_expect(const char *dir, const char *file, const char *want)
{
    char *text = slurp(dir, file);

    if (text == NULL || strcmp(text, want) != 0) {
        char *got = text ? text : xstrdup("(unreadable)");

        real_cleanup();
        ck_abort_msg("%s/%s: `%s`, want `%s`", dir, file, got, want);
    }
    free(text);
}

START_TEST(test_real_reuse)
{
    struct pbx_cgroup_limits a = {32u << 20, 8, 50};
    struct pbx_cgroup_limits b = {128u << 20, 16, 100};
    struct pbx_cgroup_limits none = {0, 0, 0};
    struct pbx_error *err = NULL;
    char *self = NULL;
    char *name = xasprintf("pybox-%d", (int)getpid());
    char *dirs[PBX_CGROUP_NCTL] = {NULL};
    char *parents[PBX_CGROUP_NCTL] = {NULL};
    bool memsw;
    int status;

    real_owner = getpid();
    atexit(real_cleanup);
    ck_assert_int_eq(pbx__cgroup_read("/proc/self/cgroup", &self, NULL), 0);
    ck_assert_int_eq(pbx_cgroup_setup("/sys/fs/cgroup", self, name, &real_cg, &err), 0);
    for (int i = 0; i < PBX_CGROUP_NCTL; i++)
        parents[i] = real_cg->ctl[i].parent ? xstrdup(real_cg->ctl[i].parent) : NULL;
    ck_assert_msg(pbx_cgroup_version_of(real_cg, PBX_CGROUP_PIDS) != PBX_CGROUP_NONE, "%s",
                  pbx_cgroup_why(real_cg, PBX_CGROUP_PIDS));
    ck_assert_int_eq(pbx_cgroup_cell_create(real_cg, 1, &a, &real_cell, &err), 0);
    for (int i = 0; i < PBX_CGROUP_NCTL; i++)
        dirs[i] = real_cell->dir[i] ? xstrdup(real_cell->dir[i]) : NULL;

    if (pbx_cgroup_version_of(real_cg, PBX_CGROUP_MEMORY) == PBX_CGROUP_V2) {
        /* cgroup v2 memory cgroups are never reused. */
        ck_assert_int_lt(pbx_cgroup_cell_reuse(real_cell, &b, &err), 0);
        ck_assert_int_eq(err->code, PBX_E_UNSUPPORTED);
        pbx_error_free(&err);
    } else if (pbx_cgroup_version_of(real_cg, PBX_CGROUP_MEMORY) == PBX_CGROUP_V1) {
        const char *mem = dirs[PBX_CGROUP_MEMORY];

        memsw = real_cg->ctl[PBX_CGROUP_MEMORY].swap_limited;
        /* The first use: 96 MiB under a 32 MiB limit, killed by the OOM killer. */
        status = real_touch(real_cell, 96);
        if (!(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) && memsw) {
            real_cleanup();
            ck_abort_msg("96 MiB under a 32 MiB limit: wait status %#x, not SIGKILL", status);
        }
        if (memsw)
            ck_assert_uint_eq(pbx_cgroup_cell_oom_kills(real_cell), 1);
        ck_assert_uint_ge(pbx_cgroup_cell_peak_memory(real_cell), 16u << 20);
        ck_assert_uint_eq(pbx_cgroup_cell_count(real_cell), 0);

        /* Reused with B: the kernel shows B's limits and fresh counters. */
        if (pbx_cgroup_cell_reuse(real_cell, &b, &err) < 0) {
            char *msg = xstrdup(err->msg);

            real_cleanup();
            ck_abort_msg("reuse: %s", msg);
        }
        real_expect(mem, "memory.limit_in_bytes", "134217728\n");
        if (memsw)
            real_expect(mem, "memory.memsw.limit_in_bytes", "134217728\n");
        real_expect(dirs[PBX_CGROUP_PIDS], "pids.max", "16\n");
        if (pbx_cgroup_version_of(real_cg, PBX_CGROUP_CPU) == PBX_CGROUP_V1)
            real_expect(dirs[PBX_CGROUP_CPU], "cpu.cfs_quota_us", "100000\n");
        ck_assert_uint_eq(pbx_cgroup_cell_oom_kills(real_cell), 0);
        ck_assert_uint_lt(pbx_cgroup_cell_peak_memory(real_cell), 8u << 20);

        /* The second use: 64 MiB fits under B, far above A's old 32 MiB. */
        status = real_touch(real_cell, 64);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            real_cleanup();
            ck_abort_msg("64 MiB under a 128 MiB limit: wait status %#x", status);
        }
        ck_assert_uint_eq(pbx_cgroup_cell_oom_kills(real_cell), 0);
        ck_assert_uint_ge(pbx_cgroup_cell_peak_memory(real_cell), 60u << 20);

        /* Reused without limits: none of B's is left. */
        ck_assert_int_eq(pbx_cgroup_cell_reuse(real_cell, &none, &err), 0);
        real_expect(mem, "memory.limit_in_bytes", "9223372036854771712\n");
        if (memsw)
            real_expect(mem, "memory.memsw.limit_in_bytes", "9223372036854771712\n");
        real_expect(dirs[PBX_CGROUP_PIDS], "pids.max", "max\n");
        if (pbx_cgroup_version_of(real_cg, PBX_CGROUP_CPU) == PBX_CGROUP_V1)
            real_expect(dirs[PBX_CGROUP_CPU], "cpu.cfs_quota_us", "-1\n");
    } else {
        /* No memory controller: pids (and cpu) are reused all the same. */
        ck_assert_int_eq(pbx_cgroup_cell_reuse(real_cell, &b, &err), 0);
        real_expect(dirs[PBX_CGROUP_PIDS], "pids.max", "16\n");
    }

    ck_assert_int_eq(pbx_cgroup_cell_destroy(real_cell, &err), 0);
    real_cell = NULL;
    pbx_cgroup_teardown(real_cg);
    real_cg = NULL;
    for (int i = 0; i < PBX_CGROUP_NCTL; i++) {
        ck_assert_msg(!dirs[i] || !exists(dirs[i]), "%s left behind", dirs[i]);
        ck_assert_msg(!parents[i] || !exists(parents[i]), "%s left behind", parents[i]);
        free(dirs[i]);
        free(parents[i]);
    }
    free(self);
    free(name);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cgroup");
    TCase *parse = tcase_create("parse");
    TCase *tc = tcase_create("fake");
    TCase *slow = tcase_create("fake-slow");
    TCase *real;
    bool can_real = geteuid() == 0 && have_cgroupfs();
    SRunner *sr;
    int failed;

    tcase_add_test(parse, test_parse_proc);
    tcase_add_test(parse, test_parse_proc_edges);
    tcase_add_test(parse, test_parse_key_and_pids);
    tcase_add_test(parse, test_parse_parent_name);
    suite_add_tcase(s, parse);
    tcase_add_checked_fixture(tc, fake_init, fake_fini);
    tcase_add_test(tc, test_v1_tree);
    tcase_add_test(tc, test_v1_no_memsw);
    tcase_add_test(tc, test_v1_missing);
    tcase_add_test(tc, test_cell_failures);
    tcase_add_test(tc, test_kill_listed);
    tcase_add_test(tc, test_v1_reuse);
    tcase_add_test(tc, test_v1_reuse_small_leftover);
    tcase_add_test(tc, test_v1_reuse_unlimited);
    tcase_add_test(tc, test_v1_reuse_raise_memory);
    tcase_add_test(tc, test_v1_reuse_refused_with_member);
    tcase_add_test(tc, test_v1_reuse_refused_unreadable_procs);
    tcase_add_test(tc, test_v1_reuse_write_fails);
    tcase_add_test(tc, test_v2_tree);
    tcase_add_test(tc, test_v2_no_swap_partial_delegation);
    tcase_add_test(tc, test_v2_busy);
    tcase_add_test(tc, test_v2_moves_into_leaf);
    tcase_add_test(tc, test_v2_leaf_fails);
    tcase_add_test(tc, test_v2_reuse);
    tcase_add_test(tc, test_v2_reuse_without_memory);
    tcase_add_test(tc, test_mixed);
    tcase_add_test(tc, test_mixed_reuse);
    tcase_add_test(tc, test_reap_stale_v1);
    tcase_add_test(tc, test_reap_stale_v2);
    suite_add_tcase(s, tc);
    /* Waits out the bounded rmdir retry (1 s per busy directory) twice. */
    tcase_add_checked_fixture(slow, fake_init, fake_fini);
    tcase_set_timeout(slow, 20);
    tcase_add_test(slow, test_reap_stale_deep);
    tcase_add_test(slow, test_reap_stale_member_exiting);
    suite_add_tcase(s, slow);
    if (can_real) {
        real = tcase_create("real");
        tcase_set_timeout(real, 30);
        tcase_add_test(real, test_real_machine);
        tcase_add_test(real, test_real_reuse);
        if (real_v2_root() != NULL)
            tcase_add_test(real, test_real_v2_leaf);
        suite_add_tcase(s, real);
    }
    sr = srunner_create(s);
    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    if (failed)
        return EXIT_FAILURE;
    if (!can_real) {
        fprintf(stderr, "test_cgroup: skipping the /sys/fs/cgroup test (%s)\n",
                geteuid() ? "not root" : "no cgroup filesystem");
        return 77;
    }
    return EXIT_SUCCESS;
}
