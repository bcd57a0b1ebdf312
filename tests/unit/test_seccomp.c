/*
 * Unit tests for src/sandbox/seccomp.c.
 *
 * The filter is built once, in main(); building is harmless, loading is not
 * (STYLE §8: a filtered process that LeakSanitizer later inspects hangs it).
 * Two kinds of test use it:
 *
 * - "bpf" tests run the exported program in a small classic-BPF interpreter,
 *   which covers every denied name and argument pattern, including calls no
 *   test could safely make for real (reboot, kexec_load, swapoff).
 * - "kernel" tests fork a grandchild of the test runner that installs the
 *   filter and makes the call for real, then _exits with 0 or the errno value
 *   (so LeakSanitizer never runs in it).  The Check child asserts on the wait
 *   status.  Arguments are chosen, as in bubblewrap's and flatpak's
 *   try-syscall, so that an unfiltered call fails harmlessly with EBADF,
 *   ENOENT, EFAULT or similar; where that result does not depend on privilege,
 *   the test first runs the call unfiltered to prove that the EPERM comes from
 *   the filter.
 *
 * The i386 test needs int 0x80 to work unfiltered (IA32 emulation); main()
 * registers it only then, and the program exits 77 (skipped) when every test
 * that ran passed but that one could not run.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <sched.h>
#include <seccomp.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sandbox/seccomp.h"
#include "common/banned.h"

/* Built in main() before the runner forks; read-only afterwards. */
static struct pbx_seccomp_prog prog;

/* Exit codes of a probe grandchild besides 0 and errno values. */
#define PROBE_INSTALL_FAILED 200 /* pbx_seccomp_install() failed */
#define PROBE_UNEXPECTED     201 /* the call returned something impossible */

#define RET_EPERM  (SECCOMP_RET_ERRNO | EPERM)
#define RET_ENOSYS (SECCOMP_RET_ERRNO | ENOSYS)

/*
 * The calls the design denies with EPERM whatever their arguments
 * (docs/design/seccomp.md); kept apart from seccomp.c's table on purpose.
 */
static const char *const denied[] = {
    "socket",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "process_madvise",
    "kcmp",
    "pidfd_getfd",
    "unshare",
    "setns",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "move_mount",
    "open_tree",
    "mount_setattr",
    "keyctl",
    "add_key",
    "request_key",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "init_module",
    "finit_module",
    "delete_module",
    "kexec_load",
    "kexec_file_load",
    "reboot",
    "swapon",
    "swapoff",
    "acct",
    "quotactl",
    "quotactl_fd",
    "nfsservctl",
    "lookup_dcookie",
    "open_by_handle_at",
    "name_to_handle_at",
    "syslog",
    "vhangup",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    "iopl",
    "ioperm",
    "modify_ldt",
    "uselib",
    "ustat",
    "sysfs",
    "_sysctl",
    "create_module",
    "query_module",
    "get_kernel_syms",
};

/* Calls a Python job needs, with arguments where they matter. */
static const char *const allowed[] = {
    "read",      "write", "openat", "close",   "mmap",         "munmap",
    "mprotect",  "brk",   "futex",  "getpid",  "exit_group",   "rt_sigreturn",
    "execve",    "wait4", "prctl",  "seccomp", "memfd_create", "arch_prctl",
    "getrandom", "pipe2", "fcntl",  "rseq",
};

/* ---- a classic-BPF interpreter for the opcodes libseccomp emits ---- */

static uint32_t bpf_eval_args(int nr, uint32_t arch, const uint64_t args[6])
{
    struct seccomp_data data;
    uint32_t a = 0;
    unsigned int pc;

    memset(&data, 0, sizeof(data));
    data.nr = nr;
    data.arch = arch;
    memcpy(data.args, args, sizeof(data.args));
    for (pc = 0; pc < prog.len; pc++) {
        const struct sock_filter *f = &prog.filter[pc];

        switch (f->code) {
        case BPF_LD | BPF_W | BPF_ABS:
            ck_assert_uint_le(f->k + sizeof(a), sizeof(data));
            memcpy(&a, (const char *)&data + f->k, sizeof(a));
            break;
        case BPF_ALU | BPF_AND | BPF_K:
            a &= f->k;
            break;
        case BPF_JMP | BPF_JA:
            pc += f->k;
            break;
        case BPF_JMP | BPF_JEQ | BPF_K:
            pc += a == f->k ? f->jt : f->jf;
            break;
        case BPF_JMP | BPF_JGT | BPF_K:
            pc += a > f->k ? f->jt : f->jf;
            break;
        case BPF_JMP | BPF_JGE | BPF_K:
            pc += a >= f->k ? f->jt : f->jf;
            break;
        case BPF_JMP | BPF_JSET | BPF_K:
            pc += (a & f->k) != 0 ? f->jt : f->jf;
            break;
        case BPF_RET | BPF_K:
            return f->k;
        default:
            ck_abort_msg("unexpected BPF opcode %#x at %u", f->code, pc);
        }
    }
    ck_abort_msg("the program ran off its end");
    return 0;
}

static uint32_t bpf_eval(const char *name, uint64_t a0, uint64_t a1)
{
    uint64_t args[6] = {a0, a1, 0, 0, 0, 0};
    int nr = seccomp_syscall_resolve_name(name);

    ck_assert_msg(nr >= 0, "`%s` does not exist here", name);
    return bpf_eval_args(nr, seccomp_arch_native(), args);
}

START_TEST(test_build)
{
    struct pbx_seccomp_prog again = {NULL, 0};
    struct pbx_error *err = NULL;

    ck_assert_ptr_nonnull(prog.filter);
    ck_assert_uint_gt(prog.len, 0);
    ck_assert_uint_le(prog.len, BPF_MAXINSNS);

    /* Deterministic: the zygote may rebuild it and get the same program. */
    ck_assert_int_eq(pbx_seccomp_build(&again, &err), 0);
    ck_assert_ptr_null(err);
    ck_assert_uint_eq(again.len, prog.len);
    ck_assert_mem_eq(again.filter, prog.filter, prog.len * sizeof(prog.filter[0]));
    pbx__seccomp_release(&again);
    ck_assert_ptr_null(again.filter);
    ck_assert_uint_eq(again.len, 0);
    pbx__seccomp_release(&again);
}
END_TEST

START_TEST(test_install_rejects_empty_program)
{
    struct pbx_seccomp_prog empty = {NULL, 0};

    /* Refused before prctl(), so nothing is loaded in the test process. */
    ck_assert_int_eq(pbx_seccomp_install(&empty), -EINVAL);
}
END_TEST

START_TEST(test_bpf_denied_names)
{
    uint64_t args[6] = {0};
    size_t i;

    for (i = 0; i < sizeof(denied) / sizeof(denied[0]); i++) {
        int nr = seccomp_syscall_resolve_name(denied[i]);

#if defined(__x86_64__)
        /* All exist on x86_64: a libseccomp that cannot name one would skip it. */
        ck_assert_msg(nr >= 0, "libseccomp does not know `%s`", denied[i]);
#endif
        if (nr < 0)
            continue; /* not on this architecture */
        ck_assert_msg(bpf_eval_args(nr, seccomp_arch_native(), args) == RET_EPERM,
                      "`%s` is not denied with EPERM", denied[i]);
    }
    for (i = 0; i < sizeof(allowed) / sizeof(allowed[0]); i++) {
        int nr = seccomp_syscall_resolve_name(allowed[i]);

        if (nr < 0)
            continue;
        ck_assert_msg(bpf_eval_args(nr, seccomp_arch_native(), args) == SECCOMP_RET_ALLOW,
                      "`%s` is not allowed", allowed[i]);
    }
    ck_assert_uint_eq(bpf_eval("clone3", 0, 0), RET_ENOSYS);
}
END_TEST

START_TEST(test_bpf_clone_flags)
{
    static const uint64_t ns[] = {CLONE_NEWNS,  CLONE_NEWUTS, CLONE_NEWIPC,   CLONE_NEWUSER,
                                  CLONE_NEWPID, CLONE_NEWNET, CLONE_NEWCGROUP};
    const uint64_t thread = CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD |
                            CLONE_SYSVSEM | CLONE_SETTLS | CLONE_PARENT_SETTID |
                            CLONE_CHILD_CLEARTID;
    size_t i;

    /* What glibc's fork(), pthread_create() and posix_spawn() pass. */
    ck_assert_uint_eq(bpf_eval("clone", CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID | SIGCHLD, 0),
                      SECCOMP_RET_ALLOW);
    ck_assert_uint_eq(bpf_eval("clone", thread, 0), SECCOMP_RET_ALLOW);
    ck_assert_uint_eq(bpf_eval("clone", CLONE_VM | CLONE_VFORK | SIGCHLD, 0), SECCOMP_RET_ALLOW);
    for (i = 0; i < sizeof(ns) / sizeof(ns[0]); i++) {
        ck_assert_uint_eq(bpf_eval("clone", ns[i] | SIGCHLD, 0), RET_EPERM);
        ck_assert_uint_eq(bpf_eval("clone", ns[i] | thread, 0), RET_EPERM);
    }
}
END_TEST

START_TEST(test_bpf_ioctl_requests)
{
    ck_assert_uint_eq(bpf_eval("ioctl", 0, TIOCSTI), RET_EPERM);
    ck_assert_uint_eq(bpf_eval("ioctl", 0, TIOCLINUX), RET_EPERM);
    /* The kernel ignores the upper half of the request; so must the filter. */
    ck_assert_uint_eq(bpf_eval("ioctl", 0, UINT64_C(0xdeadbeef00000000) | TIOCSTI), RET_EPERM);
    ck_assert_uint_eq(bpf_eval("ioctl", 0, UINT64_C(0x100000000) | TIOCLINUX), RET_EPERM);
    ck_assert_uint_eq(bpf_eval("ioctl", 0, TCGETS), SECCOMP_RET_ALLOW);
    ck_assert_uint_eq(bpf_eval("ioctl", 0, FIONREAD), SECCOMP_RET_ALLOW);
    ck_assert_uint_eq(bpf_eval("ioctl", 0, FIOCLEX), SECCOMP_RET_ALLOW);
}
END_TEST

START_TEST(test_bpf_personality)
{
    uint64_t x = 88172645463325252u;
    unsigned int i;

    ck_assert_uint_eq(bpf_eval("personality", 0, 0), SECCOMP_RET_ALLOW);
    ck_assert_uint_eq(bpf_eval("personality", 0xffffffffu, 0), SECCOMP_RET_ALLOW);
    ck_assert_uint_eq(bpf_eval("personality", ADDR_NO_RANDOMIZE, 0), RET_EPERM);
    ck_assert_uint_eq(bpf_eval("personality", READ_IMPLIES_EXEC, 0), RET_EPERM);
    ck_assert_uint_eq(bpf_eval("personality", PER_LINUX32, 0), RET_EPERM);
    ck_assert_uint_eq(bpf_eval("personality", 0xfffffffeu, 0), RET_EPERM);
    ck_assert_uint_eq(bpf_eval("personality", 0x7fffffffu, 0), RET_EPERM);
    /* The kernel reads an unsigned int: junk above bit 31 changes nothing. */
    ck_assert_uint_eq(bpf_eval("personality", UINT64_C(0x100000000), 0), SECCOMP_RET_ALLOW);
    ck_assert_uint_eq(bpf_eval("personality", UINT64_C(0x100000000) | PER_LINUX32, 0), RET_EPERM);
    for (i = 0; i < 32; i++)
        ck_assert_uint_eq(bpf_eval("personality", UINT64_C(1) << i, 0), RET_EPERM);
    for (i = 0; i < 20000; i++) {
        uint32_t lo;

        x ^= x << 13; /* xorshift64 */
        x ^= x >> 7;
        x ^= x << 17;
        lo = (uint32_t)(x >> (i % 33));
        ck_assert_uint_eq(bpf_eval("personality", lo, 0),
                          lo == 0 || lo == 0xffffffffu ? SECCOMP_RET_ALLOW : RET_EPERM);
    }
}
END_TEST

START_TEST(test_bpf_socketpair)
{
    ck_assert_uint_eq(bpf_eval("socketpair", AF_UNIX, SOCK_STREAM), SECCOMP_RET_ALLOW);
    ck_assert_uint_eq(bpf_eval("socketpair", AF_INET, SOCK_STREAM), RET_EPERM);
    ck_assert_uint_eq(bpf_eval("socketpair", AF_TIPC, SOCK_STREAM), RET_EPERM);
    ck_assert_uint_eq(bpf_eval("socketpair", UINT64_C(0x100000000) | AF_UNIX, 0), RET_EPERM);
}
END_TEST

START_TEST(test_bpf_foreign_abi)
{
    uint64_t args[6] = {0};
    uint32_t native = seccomp_arch_native();
    uint32_t compat = native == AUDIT_ARCH_X86_64 ? AUDIT_ARCH_I386 : AUDIT_ARCH_ARM;

    ck_assert_uint_eq(bpf_eval_args(20, compat, args), SECCOMP_RET_KILL_PROCESS);
    ck_assert_uint_eq(bpf_eval_args(20, AUDIT_ARCH_PPC64LE, args), SECCOMP_RET_KILL_PROCESS);
    if (native == AUDIT_ARCH_X86_64) {
        /* x32 shares AUDIT_ARCH_X86_64 and sets bit 30 of the number. */
        ck_assert_uint_eq(bpf_eval_args(0x40000000 | 39, native, args), SECCOMP_RET_KILL_PROCESS);
        ck_assert_uint_eq(bpf_eval_args(0x40000000 | 41, native, args), SECCOMP_RET_KILL_PROCESS);
    }
}
END_TEST

/* ---- the same filter in a real, forked grandchild ---- */

/* Fork a grandchild that runs probe(), filtered or not; return its wait status. */
static int run_probe(int (*probe)(void), bool filtered)
{
    pid_t pid = fork();
    int status;

    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        struct rlimit no_core = {0, 0};

        (void)setrlimit(RLIMIT_CORE, &no_core); /* SIGSYS would dump core */
        if (filtered && pbx_seccomp_install(&prog) < 0)
            _exit(PROBE_INSTALL_FAILED);
        _exit(probe());
    }
    while (waitpid(pid, &status, 0) < 0)
        ck_assert_int_eq(errno, EINTR);
    return status;
}

static void expect_exit(const char *what, int status, int code)
{
    ck_assert_msg(!WIFSIGNALED(status), "%s: killed by signal %d", what, WTERMSIG(status));
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == code, "%s: exit %d (%s), want %d",
                  what, WEXITSTATUS(status), strerror(WEXITSTATUS(status)), code);
}

/*
 * Run probe() filtered and expect `errnum`.  With `control`, first run it
 * unfiltered and require a different result.
 */
static void expect_denied(const char *what, int (*probe)(void), int errnum, bool control)
{
    int status;

    if (control) {
        status = run_probe(probe, false);
        ck_assert_msg(!WIFEXITED(status) || WEXITSTATUS(status) != errnum,
                      "%s: fails with %s even unfiltered, so the test proves nothing", what,
                      strerror(errnum));
    }
    expect_exit(what, run_probe(probe, true), errnum);
}

#define EXPECT_DENIED(probe, errnum, control) expect_denied(#probe, probe, errnum, control)
#define EXPECT_WORKS(probe)                   expect_exit(#probe, run_probe(probe, true), 0)

static int result(long ret)
{
    return ret < 0 ? errno : 0;
}

static int socket_inet(void)
{
    return result(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
}

static int socket_unix(void)
{
    return result(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
}

static int socket_netlink(void)
{
    return result(socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, 0));
}

static int socketpair_unix(void)
{
    int sv[2];
    char c = 'x';

    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        return errno;
    if (write(sv[0], &c, 1) != 1 || read(sv[1], &c, 1) != 1 || c != 'x')
        return PROBE_UNEXPECTED;
    return 0;
}

static int socketpair_inet(void)
{
    int sv[2];

    return result(socketpair(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0, sv));
}

START_TEST(test_sockets)
{
    EXPECT_DENIED(socket_inet, EPERM, true);
    EXPECT_DENIED(socket_unix, EPERM, true);
    EXPECT_DENIED(socket_netlink, EPERM, true);
    EXPECT_WORKS(socketpair_unix);
    EXPECT_DENIED(socketpair_inet, EPERM, true);
}
END_TEST

static int ptrace_traceme(void)
{
    return result(ptrace(PTRACE_TRACEME, 0, NULL, NULL));
}

static int process_vm_readv_self(void)
{
    static const char secret[8] = "secret!";
    char buf[8];
    struct iovec local = {buf, sizeof(buf)};
    struct iovec remote = {(void *)secret, sizeof(secret)};

    return result(process_vm_readv(getpid(), &local, 1, &remote, 1, 0));
}

START_TEST(test_debugging)
{
    EXPECT_DENIED(ptrace_traceme, EPERM, true);
    EXPECT_DENIED(process_vm_readv_self, EPERM, true);
}
END_TEST

static int unshare_user(void)
{
    return result(unshare(CLONE_NEWUSER));
}

/* clone() with each namespace flag; a child, should one appear, leaves at once. */
static int clone_namespaces(void)
{
    static const unsigned long ns[] = {CLONE_NEWNS,  CLONE_NEWUTS, CLONE_NEWIPC,   CLONE_NEWUSER,
                                       CLONE_NEWPID, CLONE_NEWNET, CLONE_NEWCGROUP};
    size_t i;

    for (i = 0; i < sizeof(ns) / sizeof(ns[0]); i++) {
        long pid = syscall(SYS_clone, ns[i] | SIGCHLD, NULL, NULL, NULL, NULL);

        if (pid == 0)
            _exit(0);
        if (pid > 0) {
            (void)waitpid((pid_t)pid, NULL, 0);
            return PROBE_UNEXPECTED;
        }
        if (errno != EPERM)
            return errno;
    }
    return EPERM;
}

/* clone3() with a NULL argument: EFAULT if the kernel ever sees it. */
static int clone3_null(void)
{
    return result(syscall(SYS_clone3, NULL, (size_t)64));
}

static int mount_tmpfs(void)
{
    return result(mount("none", "/nonexistent-pybox-seccomp", "tmpfs", 0, NULL));
}

static int setns_badfd(void)
{
    return result(setns(-1, 0));
}

static int chroot_missing(void)
{
    return result(chroot("/nonexistent-pybox-seccomp"));
}

START_TEST(test_namespaces_and_mounts)
{
    EXPECT_DENIED(unshare_user, EPERM, false);
    EXPECT_DENIED(clone_namespaces, EPERM, false);
    EXPECT_DENIED(clone3_null, ENOSYS, true);
    EXPECT_DENIED(mount_tmpfs, EPERM, true);
    EXPECT_DENIED(setns_badfd, EPERM, true);
    EXPECT_DENIED(chroot_missing, EPERM, true);
}
END_TEST

static int keyctl_badop(void)
{
    return result(syscall(SYS_keyctl, -1L, 0L, 0L, 0L, 0L));
}

static int bpf_badcmd(void)
{
    return result(syscall(SYS_bpf, -1L, NULL, 0L));
}

static int perf_event_open_null(void)
{
    return result(syscall(SYS_perf_event_open, NULL, 0L, -1L, -1L, 0L));
}

/* UFFD_USER_MODE_ONLY (1) plus an undefined flag: EINVAL if the kernel sees it. */
static int userfaultfd_badflags(void)
{
    return result(syscall(SYS_userfaultfd, 1L | (1L << 30)));
}

static int io_uring_setup_null(void)
{
    return result(syscall(SYS_io_uring_setup, 1L, NULL));
}

START_TEST(test_kernel_interfaces)
{
    EXPECT_DENIED(keyctl_badop, EPERM, true);
    EXPECT_DENIED(bpf_badcmd, EPERM, false);
    EXPECT_DENIED(perf_event_open_null, EPERM, true);
    EXPECT_DENIED(userfaultfd_badflags, EPERM, true);
    EXPECT_DENIED(io_uring_setup_null, EPERM, false);
}
END_TEST

/* Terminal ioctls on /dev/null: ENOTTY if the driver is ever reached. */
static int ioctl_on_null(unsigned long request)
{
    int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    char c = 'x';

    if (fd < 0)
        return PROBE_UNEXPECTED;
    return result(syscall(SYS_ioctl, fd, request, &c));
}

static int ioctl_tiocsti(void)
{
    return ioctl_on_null(TIOCSTI);
}

static int ioctl_tiocsti_high_bits(void)
{
    return ioctl_on_null(0xdeadbeef00000000ul | TIOCSTI);
}

static int ioctl_tioclinux(void)
{
    return ioctl_on_null(TIOCLINUX);
}

static int ioctl_tcgets(void)
{
    return ioctl_on_null(TCGETS) == ENOTTY ? 0 : PROBE_UNEXPECTED;
}

static int personality_linux32(void)
{
    return result(personality(PER_LINUX32));
}

static int personality_query(void)
{
    return personality(0xffffffff) == PER_LINUX && personality(PER_LINUX) == PER_LINUX
               ? 0
               : PROBE_UNEXPECTED;
}

START_TEST(test_arguments)
{
    EXPECT_DENIED(ioctl_tiocsti, EPERM, true);
    EXPECT_DENIED(ioctl_tiocsti_high_bits, EPERM, true);
    EXPECT_DENIED(ioctl_tioclinux, EPERM, true);
    EXPECT_WORKS(ioctl_tcgets);
    EXPECT_DENIED(personality_linux32, EPERM, true);
    EXPECT_WORKS(personality_query);
}
END_TEST

#if defined(__x86_64__)
/* getpid through the x32 ABI: bit 30 of the syscall number. */
static int x32_getpid(void)
{
    return result(syscall(0x40000000L | SYS_getpid));
}

/* getpid (20 in the i386 table) through the i386 ABI. */
static int i386_getpid(void)
{
    long ret = 20;

    /* Without IA32 emulation int 0x80 faults: die quietly, not in ASan's handler. */
    (void)signal(SIGSEGV, SIG_DFL);
    __asm__ volatile("int $0x80" : "+a"(ret) : : "memory", "cc", "r8", "r9", "r10", "r11");
    return ret > 0 ? 0 : PROBE_UNEXPECTED;
}

START_TEST(test_x32_is_killed)
{
    int status;

    /* Unfiltered: ENOSYS without CONFIG_X86_X32_ABI, a pid with it.  Filtered: killed. */
    status = run_probe(x32_getpid, true);
    ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGSYS,
                  "x32 getpid: status %#x, want SIGSYS", status);
}
END_TEST

START_TEST(test_i386_is_killed)
{
    int status = run_probe(i386_getpid, false);

    /* Unfiltered it works (main() checked), so the kill below is the filter's. */
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "unfiltered i386 getpid: status %#x", status);
    status = run_probe(i386_getpid, true);
    ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGSYS,
                  "i386 getpid: status %#x, want SIGSYS", status);
}
END_TEST

/*
 * Whether int 0x80 works here.  Without IA32 emulation (ia32_emulation=0, or
 * a hypervisor without it) it faults before seccomp sees it, and
 * test_i386_is_killed cannot run; test_bpf_foreign_abi still covers the
 * filter's side.
 */
static bool i386_works(void)
{
    pid_t pid = fork();
    int status;

    if (pid < 0)
        return false;
    if (pid == 0) {
        struct rlimit no_core = {0, 0};

        (void)setrlimit(RLIMIT_CORE, &no_core); /* a fault would dump core */
        _exit(i386_getpid());
    }
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return false;
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}
#else
static bool i386_works(void)
{
    return false;
}
#endif

static int fork_child(void)
{
    pid_t pid = fork();
    int status;

    if (pid < 0)
        return errno;
    if (pid == 0)
        _exit(42);
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 42)
        return PROBE_UNEXPECTED;
    return 0;
}

static void *thread_main(void *arg)
{
    return arg;
}

static int thread_create(void)
{
    static int token;
    pthread_t t;
    void *out = NULL;
    int ret = pthread_create(&t, NULL, thread_main, &token);

    if (ret != 0)
        return ret;
    if (pthread_join(t, &out) != 0 || out != &token)
        return PROBE_UNEXPECTED;
    return 0;
}

/* posix_spawn(), as Python's subprocess uses: clone3, then clone(CLONE_VFORK). */
static int spawn_true(void)
{
    char *argv[] = {"true", NULL};
    char *envp[] = {NULL};
    pid_t pid;
    int status;
    int ret = posix_spawn(&pid, "/bin/true", NULL, NULL, argv, envp);

    if (ret != 0)
        return ret;
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return PROBE_UNEXPECTED;
    return 0;
}

/* Ordinary calls work, and /proc says the filter is in place. */
static int basics(void)
{
    char buf[4096];
    ssize_t n;
    int fd;
    void *p = mmap(NULL, 1 << 16, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

    if (p == MAP_FAILED)
        return errno;
    memset(p, 1, 1 << 16);
    if (munmap(p, 1 << 16) < 0 || getpid() <= 1)
        return PROBE_UNEXPECTED;
    fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno;
    n = read(fd, buf, sizeof(buf) - 1);
    if (n <= 0)
        return PROBE_UNEXPECTED;
    buf[n] = '\0';
    if (strstr(buf, "\nSeccomp:\t2\n") == NULL || strstr(buf, "\nNoNewPrivs:\t1\n") == NULL)
        return PROBE_UNEXPECTED;
    return close(fd) < 0 ? errno : 0;
}

START_TEST(test_python_needs_still_work)
{
    EXPECT_WORKS(basics);
    EXPECT_WORKS(fork_child);
    EXPECT_WORKS(thread_create);
    EXPECT_WORKS(spawn_true);
}
END_TEST

static Suite *seccomp_suite(bool with_i386)
{
    Suite *s = suite_create("seccomp");
    TCase *build = tcase_create("build");
    TCase *bpf = tcase_create("bpf");
    TCase *kernel = tcase_create("kernel");

    tcase_add_test(build, test_build);
    tcase_add_test(build, test_install_rejects_empty_program);
    suite_add_tcase(s, build);

    tcase_add_test(bpf, test_bpf_denied_names);
    tcase_add_test(bpf, test_bpf_clone_flags);
    tcase_add_test(bpf, test_bpf_ioctl_requests);
    tcase_add_test(bpf, test_bpf_personality);
    tcase_add_test(bpf, test_bpf_socketpair);
    tcase_add_test(bpf, test_bpf_foreign_abi);
    suite_add_tcase(s, bpf);

    tcase_add_test(kernel, test_sockets);
    tcase_add_test(kernel, test_debugging);
    tcase_add_test(kernel, test_namespaces_and_mounts);
    tcase_add_test(kernel, test_kernel_interfaces);
    tcase_add_test(kernel, test_arguments);
#if defined(__x86_64__)
    tcase_add_test(kernel, test_x32_is_killed);
    if (with_i386)
        tcase_add_test(kernel, test_i386_is_killed);
#endif
    tcase_add_test(kernel, test_python_needs_still_work);
    suite_add_tcase(s, kernel);
    return s;
}

/* True when this kernel can load a filter whose bad-arch action is KILL_PROCESS. */
static bool seccomp_available(void)
{
    uint32_t action = SECCOMP_RET_KILL_PROCESS;

    if (prctl(PR_GET_SECCOMP, 0, 0, 0, 0) < 0)
        return false;
    return syscall(SYS_seccomp, SECCOMP_GET_ACTION_AVAIL, 0, &action) == 0;
}

int main(void)
{
    struct pbx_error *err = NULL;
    bool with_i386;
    SRunner *sr;
    int failed;

    if (!seccomp_available()) {
        fprintf(stderr, "seccomp filters are not available: skipping\n");
        return 77;
    }
    if (pbx_seccomp_build(&prog, &err) < 0) {
        fprintf(stderr, "pbx_seccomp_build: %s\n", err->msg);
        pbx_error_free(&err);
        return 1;
    }
    with_i386 = i386_works();
    sr = srunner_create(seccomp_suite(with_i386));
    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    pbx__seccomp_release(&prog);
    if (failed)
        return 1;
#if defined(__x86_64__)
    if (!with_i386) {
        fprintf(stderr, "test_seccomp: int 0x80 does not work here (no IA32 emulation): the i386 "
                        "kill test did not run\n");
        return 77;
    }
#endif
    return 0;
}
