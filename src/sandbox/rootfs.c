/*
 * The jail's root filesystem.
 *
 * Theory of operation: the zygote runs in new user, mount, pid, net, ipc,
 * uts and cgroup namespaces.  It mounts a tmpfs over /tmp (in its own mount
 * namespace only), lays out a skeleton there, bind-mounts read-only the few
 * host paths Python needs, and pivot_roots into it.  The old root is then
 * lazily unmounted, as bubblewrap does with pivot_root(".", ".").  There is
 * no /proc and no /sys: nothing of the host's processes or kernel state is
 * visible, and /proc/self/environ of the supervisor does not exist in the
 * view.  /usr/local is never bound: a .pth file there would run on every
 * start-up.
 *
 * The view is built once per zygote, when it starts.  A bound directory is
 * live (a file added in dist-packages is seen at once), but a path of the
 * list that did not exist then is never bound (matplotlib installed later
 * finds no /usr/share/matplotlib), and a file bound by itself keeps the inode
 * it had (a package manager renames a new file over it).  A new zygote, on
 * recycling or on SIGHUP to pybox serve (pbx_engine_reload()), builds the
 * view afresh: docs/design/process-model.md.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "sandbox/rootfs.h"
#include "common/banned.h"

#define NEWROOT "/tmp"

#if defined(__x86_64__)
#    define MULTIARCH "x86_64-linux-gnu"
#elif defined(__aarch64__)
#    define MULTIARCH "aarch64-linux-gnu"
#else
#    error "unsupported architecture"
#endif

struct bind {
    const char *path; /* host path, also the path inside */
    bool required;    /* fail when missing */
};

/*
 * What Debian's python3 (3.11) with numpy, Pillow, reportlab, pandas, scipy
 * and matplotlib needs: the interpreter, its standard library, dist-packages,
 * the shared libraries (numpy's and scipy's BLAS and LAPACK are reached
 * through /etc/alternatives), the loader and its cache, time zones (pandas,
 * zoneinfo), fonts, and matplotlib's data and its system-wide matplotlibrc
 * (Debian's says TkAgg; MPLBACKEND=Agg in the zygote's environment wins).
 * Nothing of /etc beyond that, no /home, no /root, no /usr/local, no /var.
 */
static const struct bind binds[] = {
    {"/usr/bin/python3.11", true},
    {"/usr/lib/python3.11", true},
    {"/usr/lib/python3/dist-packages", true},
    {"/usr/lib/" MULTIARCH, true},
    {"/usr/lib64", false},
    {"/usr/share/zoneinfo", false},
    {"/usr/share/fonts", false},
    {"/usr/share/matplotlib", false},
    {"/etc/ld.so.cache", false},
    {"/etc/alternatives", false},
    {"/etc/matplotlibrc", false},
};

static const char *const devices[] = {"null", "zero", "full", "random", "urandom"};

static int mkdir_p(const char *path, mode_t mode)
{
    char tmp[4096];
    size_t len = strlen(path);

    if (len >= sizeof(tmp))
        return -ENAMETOOLONG;
    memcpy(tmp, path, len + 1);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(tmp, mode) < 0 && errno != EEXIST)
            return -errno;
        *p = '/';
    }
    if (mkdir(tmp, mode) < 0 && errno != EEXIST)
        return -errno;
    return 0;
}

static int write_file(const char *path, const char *content)
{
    cleanup_close int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    size_t len = strlen(content);

    if (fd < 0)
        return -errno;
    if (write(fd, content, len) != (ssize_t)len)
        return -EIO;
    return 0;
}

/*
 * Remount a bind mount read-only, nosuid and nodev.  Flags the mount already
 * has (such as noexec) are kept: in a user namespace the kernel refuses a
 * remount that would clear a flag locked by the more privileged owner.
 */
static int remount_ro(const char *path)
{
    struct statvfs sv;
    unsigned long flags = MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV;

    if (statvfs(path, &sv) < 0)
        return -errno;
    if (sv.f_flag & ST_NOEXEC)
        flags |= MS_NOEXEC;
    if (sv.f_flag & ST_NOATIME)
        flags |= MS_NOATIME;
    if (sv.f_flag & ST_NODIRATIME)
        flags |= MS_NODIRATIME;
    if (sv.f_flag & ST_RELATIME)
        flags |= MS_RELATIME;
    if (mount(NULL, path, NULL, flags, NULL) < 0)
        return -errno;
    return 0;
}

static int bind_ro(const char *src, struct pbx_error **err)
{
    char dst[4096];
    struct stat st;
    int r;

    snprintf(dst, sizeof(dst), NEWROOT "%s", src);
    if (stat(src, &st) < 0)
        return pbx_error_set(err, errno, "stat `%s`", src);
    if (S_ISDIR(st.st_mode)) {
        r = mkdir_p(dst, 0755);
    } else {
        char parent[4096];
        char *slash;

        snprintf(parent, sizeof(parent), "%s", dst);
        slash = strrchr(parent, '/');
        *slash = '\0';
        r = mkdir_p(parent, 0755);
        if (r == 0) {
            cleanup_close int fd = open(dst, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);

            if (fd < 0)
                r = -errno;
        }
    }
    if (r < 0)
        return pbx_error_set(err, -r, "create mount point `%s`", dst);
    if (mount(src, dst, NULL, MS_BIND | MS_REC, NULL) < 0)
        return pbx_error_set(err, errno, "bind `%s`", src);
    r = remount_ro(dst);
    if (r < 0)
        return pbx_error_set(err, -r, "remount `%s` read-only", dst);
    return 0;
}

static int make_dev(struct pbx_error **err)
{
    char path[256];
    int r;

    r = mkdir_p(NEWROOT "/dev/shm", 0755);
    if (r < 0)
        return pbx_error_set(err, -r, "create /dev");
    for (size_t i = 0; i < sizeof(devices) / sizeof(devices[0]); i++) {
        char host[64];
        cleanup_close int fd = -1;

        snprintf(host, sizeof(host), "/dev/%s", devices[i]);
        snprintf(path, sizeof(path), NEWROOT "/dev/%s", devices[i]);
        fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0666);
        if (fd < 0)
            return pbx_error_set(err, errno, "create `%s`", path);
        /*
         * Device nodes cannot be created in a user namespace: bind the host's
         * (bubblewrap does the same).  The bind stays without nodev, or they
         * could not be opened, and needs no read-only flag: the kernel never
         * lets a write reach the host through these five.
         */
        if (mount(host, path, NULL, MS_BIND, NULL) < 0)
            return pbx_error_set(err, errno, "bind `%s`", host);
        if (mount(NULL, path, NULL, MS_BIND | MS_REMOUNT | MS_NOSUID | MS_NOEXEC, NULL) < 0)
            return pbx_error_set(err, errno, "remount `%s` nosuid", path);
    }
    /* No /dev/fd or /dev/std*: they would point into a /proc the jail does not have. */
    return 0;
}

static int make_etc(struct pbx_error **err)
{
    int r = mkdir_p(NEWROOT "/etc", 0755);

    if (r == 0)
        r = write_file(NEWROOT "/etc/passwd",
                       "root:x:0:0:root:/:/usr/sbin/nologin\n"
                       "sandbox:x:1000:1000:sandbox:/work:/usr/sbin/nologin\n"
                       "nobody:x:65534:65534:nobody:/:/usr/sbin/nologin\n");
    if (r == 0)
        r = write_file(NEWROOT "/etc/group", "root:x:0:\nsandbox:x:1000:\nnogroup:x:65534:\n");
    if (r == 0)
        r = write_file(NEWROOT "/etc/hostname", "pybox\n");
    if (r == 0)
        r = write_file(NEWROOT "/etc/hosts", "127.0.0.1 localhost pybox\n");
    if (r == 0 && symlink("/usr/share/zoneinfo/Etc/UTC", NEWROOT "/etc/localtime") < 0)
        r = -errno;
    if (r < 0)
        return pbx_error_set(err, -r, "create /etc");
    return 0;
}

int pbx_rootfs_enter(struct pbx_error **err)
{
    int r;

    /* Nothing mounted from here on may propagate back to the host. */
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
        return pbx_error_set(err, errno, "make / private");
    if (mount("tmpfs", NEWROOT, "tmpfs", MS_NOSUID | MS_NODEV, "size=4m,nr_inodes=4096,mode=0755") <
        0)
        return pbx_error_set(err, errno, "mount the root tmpfs on " NEWROOT);
    for (size_t i = 0; i < sizeof(binds) / sizeof(binds[0]); i++) {
        if (access(binds[i].path, F_OK) < 0 && !binds[i].required)
            continue;
        r = bind_ro(binds[i].path, err);
        if (r < 0)
            return r;
    }
    if (symlink("usr/lib", NEWROOT "/lib") < 0 || symlink("usr/lib64", NEWROOT "/lib64") < 0 ||
        symlink("usr/bin", NEWROOT "/bin") < 0 ||
        symlink("python3.11", NEWROOT "/usr/bin/python3") < 0)
        return pbx_error_set(err, errno, "create symlinks");
    r = make_etc(err);
    if (r < 0)
        return r;
    r = make_dev(err);
    if (r < 0)
        return r;
    /* Mount points of every cell's private tmpfs, and its staging point. */
    if (mkdir(NEWROOT "/work", 0755) < 0 || mkdir(NEWROOT "/tmp", 01777) < 0 ||
        mkdir(NEWROOT "/.cell", 0700) < 0)
        return pbx_error_set(err, errno, "create mount points");

    if (chdir(NEWROOT) < 0)
        return pbx_error_set(err, errno, "chdir " NEWROOT);
    /* pivot_root(".", ".") stacks the old root under the new one; detach it. */
    if (syscall(SYS_pivot_root, ".", ".") < 0)
        return pbx_error_set(err, errno, "pivot_root");
    if (umount2(".", MNT_DETACH) < 0)
        return pbx_error_set(err, errno, "detach the old root");
    if (chdir("/") < 0)
        return pbx_error_set(err, errno, "chdir /");
    if (mount(NULL, "/", NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL) < 0)
        return pbx_error_set(err, errno, "remount / read-only");
    return 0;
}

int pbx_rootfs_cell_mounts(uint64_t size_bytes, uint32_t inodes)
{
    char opts[128];

    /*
     * One tmpfs backs /work, /tmp and /dev/shm, so one size and inode cap
     * bounds all three; it is mounted on a staging point, split by bind
     * mounts, and the staging mount is detached (the binds keep it alive).
     */
    snprintf(opts, sizeof(opts), "size=%llu,nr_inodes=%u,mode=0755", (unsigned long long)size_bytes,
             inodes);
    if (mount("tmpfs", "/.cell", "tmpfs", MS_NOSUID | MS_NODEV, opts) < 0)
        return -errno;
    if (mkdir("/.cell/work", 0755) < 0 || mkdir("/.cell/tmp", 01777) < 0 ||
        mkdir("/.cell/shm", 01777) < 0)
        return -errno;
    /* mkdir applies the umask: set the sticky world-writable modes explicitly. */
    if (chmod("/.cell/tmp", 01777) < 0 || chmod("/.cell/shm", 01777) < 0)
        return -errno;
    if (chown("/.cell/work", PBX_JOB_UID, PBX_JOB_GID) < 0)
        return -errno;
    if (mount("/.cell/work", "/work", NULL, MS_BIND, NULL) < 0 ||
        mount("/.cell/tmp", "/tmp", NULL, MS_BIND, NULL) < 0 ||
        mount("/.cell/shm", "/dev/shm", NULL, MS_BIND, NULL) < 0)
        return -errno;
    if (umount2("/.cell", MNT_DETACH) < 0)
        return -errno;
    return 0;
}
