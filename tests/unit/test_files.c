/*
 * Unit tests for src/sandbox/files.c: file names, writing input files and
 * opening returned files in a cell's /work.  Each test works in a fresh
 * temporary directory standing in for /work, with symlinks, FIFOs, sockets
 * and directories planted the way user code could plant them (Judge0
 * CVE-2024-28185 and -28189 followed such links on the host).
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "engine/proto.h"
#include "sandbox/files.h"
#include "common/banned.h"

/* The temporary tree: top/work stands in for /work, top/outside for the host. */
static char top[PATH_MAX];
static char work[PATH_MAX + 16];
static char outside[PATH_MAX + 16];
static int workfd = -1;

static void setup(void)
{
    char tmpl[] = "/tmp/pbx-test-files-XXXXXX";

    ck_assert_ptr_nonnull(mkdtemp(tmpl));
    snprintf(top, sizeof(top), "%s", tmpl);
    snprintf(work, sizeof(work), "%s/work", top);
    snprintf(outside, sizeof(outside), "%s/outside", top);
    umask(022);
    ck_assert_int_eq(mkdir(work, 0755), 0);
    ck_assert_int_eq(mkdir(outside, 0755), 0);
    /* As the cell opens /work. */
    workfd = open(work, O_PATH | O_DIRECTORY | O_CLOEXEC);
    ck_assert_int_ge(workfd, 0);
    /* A FIFO open that blocked would hang: fail the test instead. */
    alarm(30);
}

static void teardown(void)
{
    pid_t pid;

    if (workfd >= 0)
        close(workfd);
    workfd = -1;
    if (top[0] == '\0')
        return;
    pid = fork();
    if (pid == 0) {
        execl("/bin/rm", "rm", "-rf", "--", top, (char *)NULL);
        _exit(127);
    }
    if (pid > 0)
        (void)waitpid(pid, NULL, 0);
}

static void path_of(char *buf, size_t size, const char *dir, const char *name)
{
    ck_assert_int_lt(snprintf(buf, size, "%s/%s", dir, name), (int)size);
}

/* Write `text` to `dir/name` with plain libc calls (test fixtures only). */
static void plant(const char *dir, const char *name, const char *text)
{
    char path[PATH_MAX * 2];
    FILE *f;

    path_of(path, sizeof(path), dir, name);
    f = fopen(path, "we");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(text, 1, strlen(text), f), strlen(text));
    ck_assert_int_eq(fclose(f), 0);
}

static void plant_symlink(const char *target, const char *name)
{
    ck_assert_int_eq(symlinkat(target, workfd, name), 0);
}

/* The content of `dir/name` (NUL-terminated, at most 64 KiB), or NULL when it cannot be opened. */
static char *slurp(const char *dir, const char *name, size_t *len)
{
    char path[PATH_MAX * 2];
    char *buf = calloc(1, 65537);
    ssize_t n;
    int fd;

    ck_assert_ptr_nonnull(buf);
    path_of(path, sizeof(path), dir, name);
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0) {
        free(buf);
        return NULL;
    }
    n = read(fd, buf, 65536);
    close(fd);
    ck_assert_int_ge(n, 0);
    if (len != NULL)
        *len = (size_t)n;
    return buf;
}

static bool exists(const char *dir, const char *name)
{
    char path[PATH_MAX * 2];
    struct stat st;

    path_of(path, sizeof(path), dir, name);
    return lstat(path, &st) == 0;
}

static bool name_ok(const char *s)
{
    return pbx_files_name_ok(s, strlen(s));
}

/* pbx_files_open_return() on `name`: the fd (closed here) or -state; *size as returned. */
static int open_return(const char *name, uint64_t max, uint64_t *size)
{
    int fd = pbx_files_open_return(workfd, name, max, size);

    if (fd >= 0) {
        int flags = fcntl(fd, F_GETFD);

        ck_assert_int_ge(flags, 0);
        ck_assert_msg(flags & FD_CLOEXEC, "the returned fd is not close-on-exec");
        close(fd);
        return 0;
    }
    return fd;
}

START_TEST(test_name_ok)
{
    char name[300];

    ck_assert(!pbx_files_name_ok("", 0));
    ck_assert(!pbx_files_name_ok("abc", 0));
    ck_assert(!name_ok("."));
    ck_assert(!name_ok(".."));
    ck_assert(!name_ok("a/b"));
    ck_assert(!name_ok("/"));
    ck_assert(!name_ok("/etc"));
    ck_assert(!name_ok("x/"));
    ck_assert(!name_ok("../x"));
    ck_assert(!name_ok("./x"));
    ck_assert(!pbx_files_name_ok("a\0b", 3));
    ck_assert(!pbx_files_name_ok("ab\0", 3));
    ck_assert(!pbx_files_name_ok("\0", 1));
    ck_assert(!pbx_files_name_ok(".\0", 2));
    ck_assert(!pbx_files_name_ok("..\0", 3));
    ck_assert(name_ok("..."));
    ck_assert(name_ok(".hidden"));
    ck_assert(name_ok("..x"));
    ck_assert(name_ok("x.."));
    ck_assert(name_ok("a"));
    ck_assert(name_ok("out.txt"));
    ck_assert(name_ok("with space"));
    ck_assert(name_ok("-rf"));
    ck_assert(name_ok("\xc3\xa9t\xc3\xa9.txt"));        /* UTF-8 */
    ck_assert(name_ok("\xe6\x97\xa5\xe6\x9c\xac.png")); /* CJK */
    /* Only the first len bytes count. */
    ck_assert(pbx_files_name_ok("a/b", 1));
    ck_assert(!pbx_files_name_ok("..", 1));
    ck_assert(!pbx_files_name_ok("...", 2));
    ck_assert(pbx_files_name_ok("...", 3));

    memset(name, 'n', sizeof(name));
    ck_assert(pbx_files_name_ok(name, 1));
    ck_assert(pbx_files_name_ok(name, 255));
    ck_assert(!pbx_files_name_ok(name, 256));
    ck_assert(!pbx_files_name_ok(name, sizeof(name)));
    /* A multi-byte character at the limit: the limit is in bytes. */
    memcpy(name + 253, "\xc3\xa9", 2);
    ck_assert(pbx_files_name_ok(name, 255));
    memcpy(name + 254, "\xc3\xa9", 2);
    ck_assert(!pbx_files_name_ok(name, 256));
}
END_TEST

START_TEST(test_write_creates)
{
    static const char data[] = "hello\0world";
    char path[PATH_MAX * 2];
    struct stat st;
    char *got;
    size_t len = 0;
    /* As root, another owner proves the chown; otherwise only our own ids are possible. */
    uid_t uid = geteuid() == 0 ? 4242 : getuid();
    gid_t gid = geteuid() == 0 ? 4343 : getgid();

    ck_assert_int_eq(pbx_files_write(workfd, "in.txt", data, sizeof(data), uid, gid), 0);
    path_of(path, sizeof(path), work, "in.txt");
    ck_assert_int_eq(lstat(path, &st), 0);
    ck_assert(S_ISREG(st.st_mode));
    ck_assert_uint_eq((uint64_t)st.st_size, sizeof(data));
    ck_assert_uint_eq(st.st_mode & 07777, 0644);
    /* Owned by the job's uid/gid. */
    ck_assert_uint_eq(st.st_uid, uid);
    ck_assert_uint_eq(st.st_gid, gid);
    got = slurp(work, "in.txt", &len);
    ck_assert_uint_eq(len, sizeof(data));
    ck_assert_mem_eq(got, data, sizeof(data));
    free(got);

    /* An empty file. */
    ck_assert_int_eq(pbx_files_write(workfd, "empty", NULL, 0, getuid(), getgid()), 0);
    path_of(path, sizeof(path), work, "empty");
    ck_assert_int_eq(lstat(path, &st), 0);
    ck_assert_uint_eq((uint64_t)st.st_size, 0);

    /* Unicode and dot names. */
    ck_assert_int_eq(pbx_files_write(workfd, "\xc3\xa9t\xc3\xa9", "x", 1, getuid(), getgid()), 0);
    ck_assert_int_eq(pbx_files_write(workfd, ".hidden", "x", 1, getuid(), getgid()), 0);
    ck_assert_int_eq(pbx_files_write(workfd, "...", "x", 1, getuid(), getgid()), 0);
    ck_assert(exists(work, "\xc3\xa9t\xc3\xa9"));
    ck_assert(exists(work, "..."));
}
END_TEST

START_TEST(test_write_large)
{
    const size_t size = 8u << 20;
    char *data = malloc(size);
    char path[PATH_MAX * 2];
    struct stat st;
    FILE *f;

    ck_assert_ptr_nonnull(data);
    for (size_t i = 0; i < size; i++)
        data[i] = (char)(i * 31 + 7);
    ck_assert_int_eq(pbx_files_write(workfd, "big.bin", data, size, getuid(), getgid()), 0);
    path_of(path, sizeof(path), work, "big.bin");
    ck_assert_int_eq(lstat(path, &st), 0);
    ck_assert_uint_eq((uint64_t)st.st_size, size);
    f = fopen(path, "rbe");
    ck_assert_ptr_nonnull(f);
    for (size_t i = 0; i < size; i++) {
        if (fgetc(f) != (unsigned char)data[i])
            ck_abort_msg("byte %zu differs", i);
    }
    fclose(f);
    free(data);
}
END_TEST

/* O_EXCL: an existing file, whatever it is, is never overwritten or opened. */
START_TEST(test_write_refuses_existing)
{
    char *got;

    plant(work, "in.txt", "original");
    ck_assert_int_eq(pbx_files_write(workfd, "in.txt", "new", 3, getuid(), getgid()), -EEXIST);
    got = slurp(work, "in.txt", NULL);
    ck_assert_str_eq(got, "original");
    free(got);

    /* A second write of the same name fails too. */
    ck_assert_int_eq(pbx_files_write(workfd, "a", "1", 1, getuid(), getgid()), 0);
    ck_assert_int_eq(pbx_files_write(workfd, "a", "2", 1, getuid(), getgid()), -EEXIST);

    /* A directory and a FIFO of that name: refused, and without blocking. */
    ck_assert_int_eq(mkdirat(workfd, "dir", 0755), 0);
    ck_assert_int_lt(pbx_files_write(workfd, "dir", "x", 1, getuid(), getgid()), 0);
    ck_assert_int_eq(mkfifoat(workfd, "fifo", 0644), 0);
    ck_assert_int_eq(pbx_files_write(workfd, "fifo", "x", 1, getuid(), getgid()), -EEXIST);
}
END_TEST

/* A planted symlink is never written through, wherever it points. */
START_TEST(test_write_refuses_symlink)
{
    char target[PATH_MAX * 2];
    char *got;

    /* To a file outside: the file is untouched. */
    plant(outside, "secret", "host data");
    path_of(target, sizeof(target), outside, "secret");
    plant_symlink(target, "in.txt");
    ck_assert_int_lt(pbx_files_write(workfd, "in.txt", "pwned", 5, getuid(), getgid()), 0);
    got = slurp(outside, "secret", NULL);
    ck_assert_str_eq(got, "host data");
    free(got);

    /* Dangling, to a name outside: nothing is created there. */
    path_of(target, sizeof(target), outside, "created");
    plant_symlink(target, "dangling");
    ck_assert_int_lt(pbx_files_write(workfd, "dangling", "pwned", 5, getuid(), getgid()), 0);
    ck_assert(!exists(outside, "created"));

    /* Dangling, relative, inside the directory: not created either. */
    plant_symlink("new.txt", "rel");
    ck_assert_int_lt(pbx_files_write(workfd, "rel", "x", 1, getuid(), getgid()), 0);
    ck_assert(!exists(work, "new.txt"));

    /* /etc/passwd itself. */
    plant_symlink("/etc/passwd", "passwd");
    ck_assert_int_lt(pbx_files_write(workfd, "passwd", "x", 1, getuid(), getgid()), 0);
}
END_TEST

/* The write path itself stays beneath the directory (names are checked by callers, not here). */
START_TEST(test_write_stays_beneath)
{
    char target[PATH_MAX * 2];

    ck_assert_int_lt(pbx_files_write(workfd, "../outside/escaped", "x", 1, getuid(), getgid()), 0);
    ck_assert(!exists(outside, "escaped"));
    path_of(target, sizeof(target), outside, "abs");
    ck_assert_int_lt(pbx_files_write(workfd, target, "x", 1, getuid(), getgid()), 0);
    ck_assert(!exists(outside, "abs"));
    /* Through a symlinked directory. */
    plant_symlink(outside, "link");
    ck_assert_int_lt(pbx_files_write(workfd, "link/through", "x", 1, getuid(), getgid()), 0);
    ck_assert(!exists(outside, "through"));
}
END_TEST

START_TEST(test_open_regular)
{
    uint64_t size = 12345;
    char buf[64];
    ssize_t n;
    int fd;

    plant(work, "out.txt", "HELLO WORLD");
    fd = pbx_files_open_return(workfd, "out.txt", 1024, &size);
    ck_assert_int_ge(fd, 0);
    ck_assert_uint_eq(size, 11);
    n = read(fd, buf, sizeof(buf));
    ck_assert_int_eq(n, 11);
    ck_assert_mem_eq(buf, "HELLO WORLD", 11);
    ck_assert_int_ne(fcntl(fd, F_GETFD) & FD_CLOEXEC, 0);
    close(fd);

    /* Exactly at the cap is fine; an empty file is fine with a cap of 0. */
    size = 0;
    ck_assert_int_eq(open_return("out.txt", 11, &size), 0);
    ck_assert_uint_eq(size, 11);
    plant(work, "empty", "");
    size = 99;
    ck_assert_int_eq(open_return("empty", 0, &size), 0);
    ck_assert_uint_eq(size, 0);
    ck_assert_int_eq(open_return("empty", UINT64_MAX, &size), 0);
}
END_TEST

START_TEST(test_open_too_large)
{
    uint64_t size = 77;

    plant(work, "out.txt", "HELLO WORLD");
    ck_assert_int_eq(open_return("out.txt", 10, &size), -PBX_FILE_TOO_LARGE);
    ck_assert_int_eq(open_return("out.txt", 0, &size), -PBX_FILE_TOO_LARGE);
    ck_assert_uint_eq(size, 77);
}
END_TEST

START_TEST(test_open_symlinks)
{
    char target[PATH_MAX * 2];
    uint64_t size = 77;

    plant_symlink("/etc/passwd", "passwd");
    ck_assert_int_eq(open_return("passwd", UINT64_MAX, &size), -PBX_FILE_SYMLINK);

    /* Even to a harmless file in the same directory. */
    plant(work, "real.txt", "data");
    plant_symlink("real.txt", "alias.txt");
    ck_assert_int_eq(open_return("alias.txt", UINT64_MAX, &size), -PBX_FILE_SYMLINK);
    plant_symlink("./real.txt", "alias2.txt");
    ck_assert_int_eq(open_return("alias2.txt", UINT64_MAX, &size), -PBX_FILE_SYMLINK);

    /* Absolute, to a file outside. */
    plant(outside, "secret", "host data");
    path_of(target, sizeof(target), outside, "secret");
    plant_symlink(target, "secret");
    ck_assert_int_eq(open_return("secret", UINT64_MAX, &size), -PBX_FILE_SYMLINK);

    /* Dangling, and a loop. */
    plant_symlink("/nonexistent/pbx", "dangling");
    ck_assert_int_eq(open_return("dangling", UINT64_MAX, &size), -PBX_FILE_SYMLINK);
    plant_symlink("loop", "loop");
    ck_assert_int_eq(open_return("loop", UINT64_MAX, &size), -PBX_FILE_SYMLINK);

    /* To a directory, and to the magic links of /proc. */
    plant_symlink("/", "root");
    ck_assert_int_eq(open_return("root", UINT64_MAX, &size), -PBX_FILE_SYMLINK);
    plant_symlink("/proc/self/root/etc/passwd", "magic");
    ck_assert_int_eq(open_return("magic", UINT64_MAX, &size), -PBX_FILE_SYMLINK);
    ck_assert_uint_eq(size, 77);
}
END_TEST

START_TEST(test_open_not_regular)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    uint64_t size = 77;
    int sock;
    int r;

    ck_assert_int_eq(mkdirat(workfd, "dir", 0755), 0);
    ck_assert_int_eq(open_return("dir", UINT64_MAX, &size), -PBX_FILE_NOT_REGULAR);

    /* A FIFO with no writer: a blocking open would hang here (alarm() fails the test). */
    ck_assert_int_eq(mkfifoat(workfd, "fifo", 0666), 0);
    ck_assert_int_eq(open_return("fifo", UINT64_MAX, &size), -PBX_FILE_NOT_REGULAR);

    /* A socket: open() says ENXIO. */
    sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(sock, 0);
    path_of(sa.sun_path, sizeof(sa.sun_path), work, "sock");
    ck_assert_int_eq(bind(sock, (struct sockaddr *)&sa, sizeof(sa)), 0);
    ck_assert_int_eq(open_return("sock", UINT64_MAX, &size), -PBX_FILE_NOT_REGULAR);
    close(sock);

    /* A device node: refused whether or not the filesystem honours devices. */
    if (mknodat(workfd, "null", S_IFCHR | 0666, makedev(1, 3)) == 0) {
        r = open_return("null", UINT64_MAX, &size);
        ck_assert_msg(r == -PBX_FILE_NOT_REGULAR || r == -PBX_FILE_UNREADABLE,
                      "a device node gave %d", r);
    }
    ck_assert_uint_eq(size, 77);
}
END_TEST

START_TEST(test_open_missing)
{
    uint64_t size = 77;

    ck_assert_int_eq(open_return("missing.txt", UINT64_MAX, &size), -PBX_FILE_NOT_FOUND);
    ck_assert_uint_eq(size, 77);
}
END_TEST

START_TEST(test_open_bad_names)
{
    static const char *const bad[] = {"",    ".", "..", "a/b", "../outside/secret", "/etc/passwd",
                                      "./x", "x/"};
    char name[300];
    uint64_t size = 77;

    plant(outside, "secret", "host data");
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        ck_assert_msg(open_return(bad[i], UINT64_MAX, &size) == -PBX_FILE_BAD_NAME, "`%s`", bad[i]);
    memset(name, 'n', 256);
    name[256] = '\0';
    ck_assert_int_eq(open_return(name, UINT64_MAX, &size), -PBX_FILE_BAD_NAME);
    /* 255 bytes is a good name (that does not exist). */
    name[255] = '\0';
    ck_assert_int_eq(open_return(name, UINT64_MAX, &size), -PBX_FILE_NOT_FOUND);
    ck_assert_uint_eq(size, 77);
}
END_TEST

/* What pbx_files_write() creates, pbx_files_open_return() reads back. */
START_TEST(test_round_trip)
{
    uint64_t size = 0;
    char buf[16];
    int fd;

    ck_assert_int_eq(pbx_files_write(workfd, "data.bin", "0123456789", 10, getuid(), getgid()), 0);
    fd = pbx_files_open_return(workfd, "data.bin", 10, &size);
    ck_assert_int_ge(fd, 0);
    ck_assert_uint_eq(size, 10);
    ck_assert_int_eq(read(fd, buf, sizeof(buf)), 10);
    ck_assert_mem_eq(buf, "0123456789", 10);
    close(fd);
}
END_TEST

static Suite *files_suite(void)
{
    Suite *s = suite_create("files");
    TCase *names = tcase_create("names");
    TCase *write = tcase_create("write");
    TCase *ret = tcase_create("open_return");

    tcase_add_test(names, test_name_ok);
    suite_add_tcase(s, names);

    tcase_add_checked_fixture(write, setup, teardown);
    tcase_add_test(write, test_write_creates);
    tcase_add_test(write, test_write_large);
    tcase_add_test(write, test_write_refuses_existing);
    tcase_add_test(write, test_write_refuses_symlink);
    tcase_add_test(write, test_write_stays_beneath);
    tcase_add_test(write, test_round_trip);
    suite_add_tcase(s, write);

    tcase_add_checked_fixture(ret, setup, teardown);
    tcase_add_test(ret, test_open_regular);
    tcase_add_test(ret, test_open_too_large);
    tcase_add_test(ret, test_open_symlinks);
    tcase_add_test(ret, test_open_not_regular);
    tcase_add_test(ret, test_open_missing);
    tcase_add_test(ret, test_open_bad_names);
    suite_add_tcase(s, ret);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(files_suite());
    int failed;

    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
