/*
 * The cell's seccomp filter: a deny list on top of namespaces, the uid drop and
 * an empty capability set (docs/design/seccomp.md).
 *
 * Theory of operation.  pbx_seccomp_build() runs once, in the zygote: it asks
 * libseccomp for a filter whose default action is ALLOW, adds the rules below,
 * and exports the result as classic BPF into a heap array.  Every job then
 * calls pbx_seccomp_install() after fork: one prctl() for no_new_privs and one
 * seccomp() for the program, with no allocation and no libseccomp, so the
 * install is async-signal-safe and costs a fraction of a millisecond.  This
 * module creates no process, fd or pipe that outlives a call; the build uses
 * one memfd that it closes before returning.
 *
 * Only the native ABI is allowed (SCMP_ARCH_NATIVE, the default of
 * seccomp_init()).  Any other ABI a process can reach, i386 through int 0x80
 * and x32 through syscall numbers with bit 30 set on x86_64, is killed by the
 * bad-arch action.  Otherwise a deny list written for x86_64 numbers could be
 * walked around with the other table's numbers.
 *
 * Denied calls return an errno value rather than killing, so that Python code
 * which probes for a feature sees PermissionError (or falls back, for clone3),
 * as it would in Docker.  Names unknown on the build architecture are skipped,
 * so the same list serves x86_64 and aarch64.
 */
#include <errno.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <seccomp.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/xalloc.h"
#include "sandbox/seccomp.h"
#include "common/banned.h"

/* Release a libseccomp context at the end of its scope (crun's cleanup_seccomp). */
static inline void cleanup_seccompp(scmp_filter_ctx *ctx)
{
    if (*ctx != NULL)
        seccomp_release(*ctx);
}
#define cleanup_seccomp __attribute__((cleanup(cleanup_seccompp)))

/*
 * s390 swaps the first two arguments of clone() (flags come second); flatpak's
 * setup_seccomp() makes the same distinction.
 */
#if defined(__s390__) || defined(__s390x__)
#    define CLONE_FLAGS_ARG 1
#else
#    define CLONE_FLAGS_ARG 0
#endif

/* Calls that fail with EPERM whatever their arguments. */
static const char *const deny_eperm[] = {
    /*
     * Networking.  The cell already has an empty network namespace; denying
     * socket() as well keeps the job away from the protocol families that are
     * the kernel's largest attack surface even without a route out: netlink
     * (nf_tables: CVE-2022-32250, CVE-2023-32233), AF_PACKET (CVE-2017-7308),
     * vsock (CVE-2021-26708), and rare families whose modules a socket() call
     * autoloads (DCCP: CVE-2017-6074).  Docker allows socket() because it
     * wants networking; a job does not.  socketcall is the i386 multiplexer
     * and is skipped on x86_64 and aarch64.
     */
    "socket",
    "socketcall",
    /*
     * Debugging and other processes' memory.  ptrace could bypass seccomp
     * before Linux 4.8 and inspects any process with our uid; the others read
     * or duplicate another process's memory or fds.  Docker allows them only
     * with CAP_SYS_PTRACE (and ptrace itself on 4.8 and later); a job never
     * needs to look into another process.
     */
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "process_madvise",
    "kcmp",
    "pidfd_getfd",
    /*
     * Namespaces and mounts.  Creating a user namespace grants a full set of
     * capabilities inside it and opens up code written for root: most recent
     * container escapes went through it (fsconfig heap overflow CVE-2022-0185,
     * overlayfs CVE-2023-0386, nf_tables).  The cell's namespaces and mounts
     * are final once the job runs.  flatpak denies these, as Docker does
     * without CAP_SYS_ADMIN; clone() and clone3() are handled below.
     */
    "unshare",
    "setns",
    "mount",
    "umount",
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
    /*
     * Kernel keyrings are not namespaced (Docker's reason for denying them)
     * and have had use-after-free bugs reachable by any user (CVE-2016-0728).
     * flatpak denies them too.
     */
    "keyctl",
    "add_key",
    "request_key",
    /*
     * Programmable or race-friendly kernel interfaces.  eBPF and perf are rich
     * sources of privilege escalations; userfaultfd is mostly used to stall
     * the kernel inside a race window; io_uring was used by 60% of the
     * kernel exploits submitted to Google's kCTF VRP in 2022, and Docker's
     * default profile has denied it since Docker 25.
     */
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    /*
     * Administration of the whole machine.  All of these already need a
     * capability the job does not have; the filter keeps them shut should a
     * kernel bug hand one out.  The list follows Docker's default profile
     * (which also lists the obsolete create_module, query_module, uselib,
     * ustat, sysfs, _sysctl, vm86 and stime, skipped where unknown).
     * open_by_handle_at is the "shocker" container escape; name_to_handle_at
     * is its reconnaissance half.  iopl, ioperm and modify_ldt reach x86
     * hardware state; glibc and CPython on x86_64 use none of them (flatpak
     * denies modify_ldt as well).
     */
    "init_module",
    "finit_module",
    "delete_module",
    "create_module",
    "query_module",
    "get_kernel_syms",
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
    "stime",
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
    "vm86",
    "vm86old",
};

/*
 * clone() flags that create a namespace.  CLONE_NEWTIME is absent on purpose:
 * it shares its bit with CSIGNAL, so clone() cannot request it (only clone3()
 * and unshare() can, and both are denied); matching that bit would test the
 * exit signal instead.
 */
static const uint64_t clone_ns_flags[] = {
    CLONE_NEWNS,  CLONE_NEWUTS, CLONE_NEWIPC,    CLONE_NEWUSER,
    CLONE_NEWPID, CLONE_NEWNET, CLONE_NEWCGROUP,
};

/*
 * Add one rule for `name`, or nothing when this architecture lacks the call
 * (libseccomp then returns __NR_SCMP_ERROR or a negative pseudo number).
 */
static int deny(scmp_filter_ctx ctx, const char *name, int errnum, unsigned int argc,
                const struct scmp_arg_cmp *argv, struct pbx_error **err)
{
    int nr = seccomp_syscall_resolve_name(name);
    int ret;

    if (nr < 0)
        return 0;
    ret = seccomp_rule_add_array(ctx, SCMP_ACT_ERRNO(errnum), nr, argc, argv);
    if (ret < 0)
        return pbx_error_set(err, -ret, "seccomp rule for `%s`", name);
    return 0;
}

static int add_rules(scmp_filter_ctx ctx, struct pbx_error **err)
{
    struct scmp_arg_cmp cmp[1];
    size_t i;
    int ret;

    for (i = 0; i < sizeof(deny_eperm) / sizeof(deny_eperm[0]); i++) {
        ret = deny(ctx, deny_eperm[i], EPERM, 0, NULL, err);
        if (ret < 0)
            return ret;
    }

    /*
     * clone() stays, for fork() and threads, except with a namespace flag
     * (one masked rule per flag: the rules of one call are ORed).  This is the
     * check Docker and flatpak make for CLONE_NEWUSER, extended to all the
     * namespaces.
     */
    for (i = 0; i < sizeof(clone_ns_flags) / sizeof(clone_ns_flags[0]); i++) {
        cmp[0] =
            SCMP_CMP(CLONE_FLAGS_ARG, SCMP_CMP_MASKED_EQ, clone_ns_flags[i], clone_ns_flags[i]);
        ret = deny(ctx, "clone", EPERM, 1, cmp, err);
        if (ret < 0)
            return ret;
    }

    /*
     * clone3() passes its flags in memory, which a filter cannot read.  ENOSYS
     * makes glibc (2.34 and later) fall back to clone(), checked above; EPERM
     * would make pthread_create() fail.  Docker, flatpak and Chromium do the
     * same.
     */
    ret = deny(ctx, "clone3", ENOSYS, 0, NULL, err);
    if (ret < 0)
        return ret;

    /*
     * Terminal injection: TIOCSTI pushes input into a terminal the job may
     * still hold (bubblewrap CVE-2017-5226) and TIOCLINUX can do the same on a
     * virtual console (CVE-2023-28100).  The kernel reads the request as a
     * 32-bit int, so only the low 32 bits are compared: a filter comparing all
     * 64 was bypassed with junk in the upper half (flatpak CVE-2019-10063).
     */
    cmp[0] = SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffu, TIOCSTI);
    ret = deny(ctx, "ioctl", EPERM, 1, cmp, err);
    if (ret < 0)
        return ret;
    cmp[0] = SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffu, TIOCLINUX);
    ret = deny(ctx, "ioctl", EPERM, 1, cmp, err);
    if (ret < 0)
        return ret;

    /*
     * personality() may only query (0xffffffff) or set PER_LINUX (0): other
     * personas disable ASLR (ADDR_NO_RANDOMIZE) or make data executable
     * (READ_IMPLIES_EXEC) for the next execve.  Docker allow-lists a few
     * values for the same reason; pybox needs none of them.  libseccomp takes
     * one comparison per argument and rule, and ORs rules, so "neither 0 nor
     * 0xffffffff" is written as: some bit i is set while bit i + 1 (mod 32)
     * is clear.  Every other 32-bit value has such a falling edge when read
     * cyclically, and 0 and 0xffffffff have none.  Only the low 32 bits are
     * compared because the kernel reads the argument as an unsigned int.
     */
    for (i = 0; i < 32; i++) {
        uint64_t bit = UINT64_C(1) << i, next = UINT64_C(1) << ((i + 1) % 32);

        cmp[0] = SCMP_A0(SCMP_CMP_MASKED_EQ, bit | next, bit);
        ret = deny(ctx, "personality", EPERM, 1, cmp, err);
        if (ret < 0)
            return ret;
    }

    /*
     * socketpair() stays for AF_UNIX, which Python's multiprocessing and
     * asyncio use.  Other families either fail anyway or, like AF_TIPC, pull
     * in a protocol module; they get the same EPERM as socket().
     */
    cmp[0] = SCMP_A0(SCMP_CMP_NE, AF_UNIX, 0);
    return deny(ctx, "socketpair", EPERM, 1, cmp, err);
}

/*
 * Export the filter as classic BPF into prog->filter.  libseccomp 2.5.4 (Debian
 * 12) has no seccomp_export_bpf_mem(), which arrived in 2.6.0, so the program
 * goes through a memfd.
 */
static int export_bpf(scmp_filter_ctx ctx, struct pbx_seccomp_prog *prog, struct pbx_error **err)
{
    cleanup_close int fd = memfd_create("pbx-seccomp", MFD_CLOEXEC);
    cleanup_free struct sock_filter *filter = NULL;
    struct stat st;
    size_t size, done;
    ssize_t n;
    int ret;

    if (fd < 0)
        return pbx_error_set(err, errno, "memfd_create");
    ret = seccomp_export_bpf(ctx, fd);
    if (ret < 0)
        return pbx_error_set(err, -ret, "seccomp_export_bpf");
    if (fstat(fd, &st) < 0)
        return pbx_error_set(err, errno, "fstat seccomp memfd");
    size = (size_t)st.st_size;
    if (size == 0 || size % sizeof(struct sock_filter) != 0 ||
        size / sizeof(struct sock_filter) > BPF_MAXINSNS)
        return pbx_error_set(err, PBX_E_SANDBOX, "seccomp program of %zu bytes", size);

    filter = xmalloc(size);
    for (done = 0; done < size; done += (size_t)n) {
        n = pread(fd, (char *)filter + done, size - done, (off_t)done);
        if (n < 0 && errno == EINTR) {
            n = 0;
            continue;
        }
        if (n < 0)
            return pbx_error_set(err, errno, "read seccomp memfd");
        if (n == 0)
            return pbx_error_set(err, PBX_E_SANDBOX, "short seccomp program");
    }
    prog->filter = steal_pointer(&filter);
    prog->len = (unsigned short)(size / sizeof(struct sock_filter));
    return 0;
}

int pbx_seccomp_build(struct pbx_seccomp_prog *prog, struct pbx_error **err)
{
    cleanup_seccomp scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
    int ret;

    if (ctx == NULL)
        return pbx_error_set(err, ENOMEM, "seccomp_init");

    /*
     * KILL_PROCESS (Linux 4.14) rather than KILL_THREAD: a thread killed for
     * a foreign-ABI call must not leave the rest of the job running.
     */
    ret = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS);
    if (ret < 0)
        return pbx_error_set(err, -ret, "seccomp bad-arch action");

    /*
     * A binary search over syscall numbers instead of a linear chain: every
     * allowed call, that is nearly every call, otherwise walks the whole list.
     */
    ret = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_OPTIMIZE, 2);
    if (ret < 0)
        return pbx_error_set(err, -ret, "seccomp binary-tree optimisation");

    ret = add_rules(ctx, err);
    if (ret < 0)
        return pbx_error_prefix(err, "seccomp filter");
    return export_bpf(ctx, prog, err);
}

int pbx_seccomp_install(const struct pbx_seccomp_prog *prog)
{
    struct sock_fprog fprog = {.len = prog->len, .filter = prog->filter};
    long ret;

    if (prog->filter == NULL || prog->len == 0)
        return -EINVAL;

    /* Without no_new_privs an unprivileged process may not load a filter. */
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        return -errno;

    ret = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, &fprog);
    if (ret == 0)
        return 0;
    /* With TSYNC, a positive value is a thread that could not be synchronised. */
    if (ret > 0)
        return -EAGAIN;
    if (errno != ENOSYS)
        return -errno;

    /* Linux before 3.17 has no seccomp() and no TSYNC; a job is single-threaded. */
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &fprog, 0, 0) < 0)
        return -errno;
    return 0;
}

void pbx__seccomp_release(struct pbx_seccomp_prog *prog)
{
    free(prog->filter);
    prog->filter = NULL;
    prog->len = 0;
}
