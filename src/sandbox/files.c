/*
 * Input and returned files.  Host-side file handling is where comparable
 * systems broke (Judge0 CVE-2024-28185 and -28189 followed symlinks planted by
 * user code): here every open is relative to the cell's /work with
 * openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS), only
 * regular files are read, and a FIFO is opened non-blocking and refused.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "sandbox/files.h"
#include "common/banned.h"

#define RESOLVE_STRICT \
    (RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV)

bool pbx_files_name_ok(const char *name, size_t len)
{
    if (len == 0 || len > 255)
        return false;
    if (memchr(name, '\0', len) != NULL || memchr(name, '/', len) != NULL)
        return false;
    if ((len == 1 && name[0] == '.') || (len == 2 && name[0] == '.' && name[1] == '.'))
        return false;
    return true;
}

static int openat2_strict(int dirfd, const char *name, uint64_t flags, uint64_t mode)
{
    struct open_how how = {
        /* openat2 refuses O_NOCTTY beside O_PATH. */
        .flags = flags | O_CLOEXEC | ((flags & O_PATH) ? 0 : O_NOCTTY),
        .mode = mode,
        .resolve = RESOLVE_STRICT,
    };

    return (int)syscall(SYS_openat2, dirfd, name, &how, sizeof(how));
}

int pbx_files_write(int dirfd, const char *name, const void *data, size_t size, uint32_t uid,
                    uint32_t gid)
{
    cleanup_close int fd =
        openat2_strict(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0644);
    const char *p = data;

    if (fd < 0)
        return -errno;
    while (size > 0) {
        ssize_t n = write(fd, p, size);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return n < 0 ? -errno : -EIO;
        p += n;
        size -= (size_t)n;
    }
    if (fchown(fd, uid, gid) < 0)
        return -errno;
    return 0;
}

int pbx_files_open_return(int dirfd, const char *name, uint64_t max, uint64_t *size)
{
    cleanup_close int fd = -1;
    struct stat st;

    if (!pbx_files_name_ok(name, strlen(name)))
        return -PBX_FILE_BAD_NAME;
    fd = openat2_strict(dirfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK, 0);
    if (fd < 0) {
        switch (errno) {
        case ENOENT:
        case ENOTDIR:
            return -PBX_FILE_NOT_FOUND;
        case ELOOP:
        case EXDEV:
            return -PBX_FILE_SYMLINK;
        case ENXIO: /* a socket */
        case ENODEV:
            return -PBX_FILE_NOT_REGULAR;
        default:
            return -PBX_FILE_UNREADABLE;
        }
    }
    if (fstat(fd, &st) < 0)
        return -PBX_FILE_UNREADABLE;
    if (!S_ISREG(st.st_mode))
        return -PBX_FILE_NOT_REGULAR;
    if ((uint64_t)st.st_size > max)
        return -PBX_FILE_TOO_LARGE;
    *size = (uint64_t)st.st_size;
    return steal_fd(&fd);
}

bool pbx_files_path_ok(const char *path, size_t len)
{
    size_t depth = 0;
    size_t start = 0;

    if (path == NULL || len == 0 || len > PBX_FILES_PATH_MAX)
        return false;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && path[i] != '/')
            continue;
        if (!pbx_files_name_ok(path + start, i - start) || ++depth > PBX_FILES_PATH_DEPTH)
            return false;
        start = i + 1;
    }
    return true;
}

int pbx_files_open_parent(int workfd, char *path, bool make, uint32_t uid, uint32_t gid,
                          const char **leaf)
{
    char *slash = strrchr(path, '/');
    int fd;

    *leaf = path;
    if (slash == NULL) {
        fd = fcntl(workfd, F_DUPFD_CLOEXEC, 0);
        return fd < 0 ? -errno : fd;
    }
    *slash = '\0';
    *leaf = slash + 1;
    fd = openat2_strict(workfd, path, O_PATH | O_DIRECTORY, 0);
    if (fd < 0 && errno == ENOENT && make) {
        /* Make each missing directory in turn, beneath /work and through no symlink. */
        int dir = fcntl(workfd, F_DUPFD_CLOEXEC, 0);
        char *comp = path;

        while (dir >= 0 && comp != NULL) {
            char *next = strchr(comp, '/');
            int sub;

            if (next != NULL)
                *next = '\0';
            /* The job's own, as the files put in it. */
            if (mkdirat(dir, comp, 0755) == 0 &&
                fchownat(dir, comp, uid, gid, AT_SYMLINK_NOFOLLOW) < 0)
                sub = -1;
            else
                sub = openat2_strict(dir, comp, O_PATH | O_DIRECTORY, 0);
            close(dir);
            dir = sub < 0 ? -errno : sub;
            if (next != NULL)
                *next = '/';
            comp = next != NULL ? next + 1 : NULL;
        }
        *slash = '/';
        return dir;
    }
    *slash = '/';
    return fd < 0 ? -errno : fd;
}
