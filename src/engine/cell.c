/*
 * A cell: one execution.
 *
 * Theory of operation: the zygote forks the cell and hands it the job
 * message's fds.  The cell (root of the jail's user namespace, never running
 * user code) joins its cgroups by writing "0" to the cgroup.procs fds the
 * supervisor opened, unshares a mount and an IPC namespace, mounts its own
 * capped tmpfs on /work, /tmp and /dev/shm, writes the input files, then
 * forks the job.  The zygote forked the cell into a fresh pid namespace, so
 * the cell is its pid 1 and the job its only child: the user's code signals
 * itself as it would under python3 (an init ignores its own signals), and
 * when the job ends the cell kills every process left in the namespace with
 * kill(-1), reaping orphans as they come meanwhile.  Were the cell to die,
 * the kernel would kill the whole namespace.
 *
 * The job puts stdin (a sealed memfd), stdout and stderr (pipes read by the
 * supervisor) on fds 0-2 and its record pipe on fd 3, closes everything else,
 * sets rlimits, drops to uid/gid 1000 with no capabilities, sets
 * no_new_privs, installs the seccomp filter, and only then enters Python to
 * run the user's code.
 *
 * The cell sends the supervisor pidfds of itself and the job (STARTED), waits
 * for the job with the wall-clock deadline, collects the returned files from
 * /work with openat2 into the output memfd, reports DONE and exits; its mount
 * namespace, and the tmpfs with it, go away with it.
 *
 * A spare cell does all of it ahead of demand, up to a job that waits on a GO
 * socket of its own: the supervisor sends the execution straight there, and
 * the cell learns of it from PBX_JOB_GO on its status socket while the job
 * already runs (or, with input files, waits for the cell to place them).
 */
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <dirent.h>
#include <fnmatch.h>
#include <grp.h>
#include <linux/capability.h>
#include <sched.h>
#include <time.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/clock.h"
#include "engine/cell.h"
#include "engine/holder.h"
#include "engine/prefault.h"
#include "engine/proto.h"
#include "sandbox/files.h"
#include "sandbox/rlimit.h"
#include "sandbox/rootfs.h"
#include "sandbox/seccomp.h"
#include "common/banned.h"

int pbx__cell_status_fd = -1;
static uint64_t prep_faults; /* a spare job's faults before its code arrived */
static pid_t holder;         /* the spare job's holder of its memory (holder.c), or 0 */
static int count_fd = -1;    /* the spare cell's pids.current, with a holder */

/* What a spare's job tells its cell once it is ready, before any user code. */
struct spare_ready {
    uint64_t faults; /* its page faults so far */
    int64_t holder;  /* its holder's pid, or 0 */
};

_Noreturn void pbx__cell_fail(int stage, int errnum, const char *what)
{
    char msg[PBX_PROTO_MSG_MAX];

    snprintf(msg, sizeof(msg), "%s%s%s", what, errnum ? ": " : "", errnum ? strerror(errnum) : "");
    pbx__proto_send_failed(pbx__cell_status_fd, stage, errnum, msg);
    _exit(1);
}

/* In the job: shed every privilege the jail's root had.  Returns 0 or -errno. */
static int drop_privileges(void)
{
    struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
    struct __user_cap_data_struct data[2];

    for (int cap = 0; cap <= 63; cap++) {
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL)
            return -errno;
    }
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
        return -errno;
    if (setgroups(0, NULL) < 0)
        return -errno;
    if (setresgid(PBX_JOB_GID, PBX_JOB_GID, PBX_JOB_GID) < 0)
        return -errno;
    /* Leaving uid 0 clears the permitted and effective capability sets. */
    if (setresuid(PBX_JOB_UID, PBX_JOB_UID, PBX_JOB_UID) < 0)
        return -errno;
    memset(data, 0, sizeof(data));
    if (syscall(SYS_capset, &hdr, data) < 0)
        return -errno;
    if (syscall(SYS_capget, &hdr, data) < 0)
        return -errno;
    if (data[0].permitted || data[1].permitted || data[0].effective || data[1].effective)
        return -EPERM;
    return 0;
}

/*
 * In the job, before any code: a new session, rlimits, /work, no privileges,
 * no_new_privs and the seccomp filter, then CPython's after-fork hooks.
 * Returns only when all of it held.
 */
void pbx__cell_become_job(const struct pbx_zygote_state *zs, const struct pbx_limits *limits,
                          uint32_t flags)
{
    int r;

    (void)setsid();
    r = pbx_rlimit_apply(limits, flags & PBX_JOB_NO_CGROUP);
    if (r < 0)
        _exit(125);
    if (chdir("/work") < 0)
        _exit(125);
    r = drop_privileges();
    if (r < 0)
        _exit(125);
    (void)prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    r = pbx_seccomp_install(zs->seccomp);
    if (r < 0)
        _exit(125);
    PyOS_AfterFork_Child();
    pbx__py_forkers_restore(&zs->forkers);
}

/* Put the four fds on 0-3 and close every other one. */
static void place_fds(const int *four)
{
    int high[4];

    /* Move them above the range they go to, then into place. */
    for (int i = 0; i < 4; i++) {
        high[i] = fcntl(four[i], F_DUPFD_CLOEXEC, 64);
        if (high[i] < 0)
            _exit(125);
    }
    for (int i = 0; i < 4; i++) {
        if (dup2(high[i], i) < 0)
            _exit(125);
    }
    /* Nothing else stays open: the status socket and every cell fd are closed. */
    if (syscall(SYS_close_range, 4, ~0U, 0) < 0)
        _exit(125);
}

/* Run the user's code through the bootstrap and leave with its status. */
static _Noreturn void run_code(const struct pbx_zygote_state *zs, uint32_t flags,
                               const struct pbx_limits *limits, const uint8_t *code,
                               size_t code_len, const char *extra_modules, bool reseed)
{
    struct pbx_result_max max;
    PyObject *ret;
    PyObject *arg;
    long rc = 1;

    pbx_limits_result_max(limits, &max);
    arg = PyBytes_FromStringAndSize((const char *)code, (Py_ssize_t)code_len);
    ret = arg ? PyObject_CallFunction((PyObject *)zs->run_fn, "OiisiKKKi", arg,
                                      (flags & PBX_JOB_MAIN) != 0, (flags & PBX_JOB_ALLOW_ALL) != 0,
                                      extra_modules, reseed, (unsigned long long)max.bytes,
                                      (unsigned long long)max.values,
                                      (unsigned long long)max.record, (flags & PBX_JOB_LIVE) != 0)
              : NULL;
    if (ret == NULL) {
        PyErr_Print();
    } else {
        rc = PyLong_AsLong(ret);
        if (rc == -1 && PyErr_Occurred())
            rc = 1;
    }
    /* Leave without finalising: nothing of the zygote's state is ours to tear down. */
    _exit((int)(rc & 0xff));
}

static _Noreturn void job_main(const struct pbx_zygote_state *zs, const struct pbx_proto_job *job,
                               const int *fds, const uint8_t *code, size_t code_len,
                               const char *extra_modules)
{
    const int four[4] = {fds[PBX_FD_STDIN], fds[PBX_FD_STDOUT], fds[PBX_FD_STDERR],
                         fds[PBX_FD_META]};
    sigset_t none;

    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    (void)prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    place_fds(four);
    pbx__cell_become_job(zs, &job->limits, job->flags);
    run_code(zs, job->flags, &job->limits, code, code_len, extra_modules, true);
}

const uint8_t *pbx__cell_map_code(int fd, uint64_t offset, uint64_t len, size_t *size)
{
    struct stat st;
    void *map;

    if (fstat(fd, &st) < 0 || offset + len < offset || (uint64_t)st.st_size < offset + len)
        return NULL;
    *size = st.st_size > 0 ? (size_t)st.st_size : 1;
    map = mmap(NULL, *size, PROT_READ, MAP_PRIVATE, fd, 0);
    return map == MAP_FAILED ? NULL : map;
}

/*
 * A spare's job: fully isolated ahead of demand, then blocked on `go_sock`
 * until the supervisor hands it the execution (struct pbx_proto_go).  `sock`
 * is its cell's: its first message there says it is ready, and with input
 * files it waits there for the cell's byte saying they are in /work.
 */
static _Noreturn void job_spare_main(const struct pbx_zygote_state *zs,
                                     const struct pbx_proto_job *spare, int sock, int go_sock)
{
    static struct pbx_proto_go go;
    int got[5];
    int ngot = 0;
    const uint8_t *map;
    size_t size;
    sigset_t none;
    ssize_t n;

    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    (void)prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    /* fds 3 and 4, from above 4 so that neither lands on the other. */
    sock = fcntl(sock, F_DUPFD_CLOEXEC, 5);
    go_sock = fcntl(go_sock, F_DUPFD_CLOEXEC, 5);
    if (sock < 0 || go_sock < 0 || dup2(sock, 3) < 0 || dup2(go_sock, 4) < 0 ||
        syscall(SYS_close_range, 5, ~0U, 0) < 0)
        _exit(125);
    sock = 3;
    go_sock = 4;
    pbx__cell_become_job(zs, &spare->limits, spare->flags);
    /* Warm what every run touches, so it is paid before the code arrives. */
    {
        PyObject *r = PyObject_CallMethod((PyObject *)zs->module, "prepare_job", NULL);

        Py_XDECREF(r);
        PyErr_Clear();
    }
    /* And the pages a run still writes after it, as the zygote learned them. */
    pbx__prefault_apply();
    {
        /* Ready: say so with the faults taken so far, for the pool's accounting. */
        struct spare_ready ready = {0};
        struct rusage ru;

        if (spare->flags & PBX_JOB_HOLDER)
            ready.holder = pbx__holder_start();
        if (getrusage(RUSAGE_SELF, &ru) == 0)
            ready.faults = (uint64_t)ru.ru_minflt;
        if (write(sock, &ready, sizeof(ready)) != sizeof(ready))
            _exit(125);
    }
    n = pbx__proto_recv(go_sock, &go, sizeof(go), got, 5, &ngot, 0);
    if (n != (ssize_t)sizeof(go) || ngot != 5)
        _exit(125);
    go.extra_modules[sizeof(go.extra_modules) - 1] = '\0';
    if (go.wait_cell) {
        char placed;

        /* EOF: the cell failed to place them, and exits; the namespace goes with it. */
        if (read(sock, &placed, 1) != 1)
            _exit(125);
    }
    map = pbx__cell_map_code(got[0], go.code_offset, go.code_len, &size);
    if (map == NULL)
        _exit(125);
    place_fds(got + 1);
    run_code(zs, go.flags, &spare->limits, map + go.code_offset, go.code_len, go.extra_modules,
             false);
}

void pbx__cell_send_started(pid_t job)
{
    struct pbx_proto_done d;
    int pfds[2];

    pbx__proto_done_init(&d, PBX_PROTO_STARTED);
    pfds[0] = (int)syscall(SYS_pidfd_open, job, 0);
    pfds[1] = (int)syscall(SYS_pidfd_open, getpid(), 0);
    (void)pbx__proto_send_done(pbx__cell_status_fd, &d, pfds, pfds[0] >= 0 && pfds[1] >= 0 ? 2 : 0);
    if (pfds[0] >= 0)
        close(pfds[0]);
    if (pfds[1] >= 0)
        close(pfds[1]);
}

/* Reap children other than the job: orphans reparented to us, as pid 1. */
void pbx__cell_reap_orphans(pid_t job)
{
    for (;;) {
        siginfo_t si;

        memset(&si, 0, sizeof(si));
        if (waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT) < 0 || si.si_pid == 0 ||
            si.si_pid == job)
            return;
        (void)waitpid(si.si_pid, NULL, 0);
    }
}

/*
 * Wait for the job until the deadline; kill it there.  Then, as pid 1 of the
 * namespace, kill whatever it left behind and reap it all: nothing the job
 * started outlives it.  Fills the timing fields of *d (reaped_ns among them).
 */
static void wait_job(pid_t job, int sigfd, uint64_t start, uint32_t wall_ms,
                     struct pbx_proto_done *d)
{
    cleanup_close int pidfd = (int)syscall(SYS_pidfd_open, job, 0);
    uint64_t deadline = start + (uint64_t)wall_ms * 1000000u;
    struct rusage ru;
    int status = 0;
    pid_t r;

    while (pidfd >= 0) {
        uint64_t now = pbx_clock_ns(CLOCK_MONOTONIC);
        struct pollfd p[2] = {
            {.fd = pidfd, .events = POLLIN},
            {.fd = sigfd, .events = POLLIN},
        };
        int timeout;

        if (now >= deadline) {
            d->timed_out = 1;
            kill(job, SIGKILL);
            break;
        }
        timeout = (int)((deadline - now + 999999) / 1000000);
        if (poll(p, sigfd >= 0 ? 2 : 1, timeout) < 0 && errno != EINTR)
            break;
        if (p[0].revents)
            break;
        if (sigfd >= 0 && p[1].revents) {
            struct signalfd_siginfo ssi;

            while (read(sigfd, &ssi, sizeof(ssi)) > 0)
                ;
            pbx__cell_reap_orphans(job);
        }
    }
    do {
        r = wait4(job, &status, 0, &ru);
    } while (r < 0 && errno == EINTR);
    if (r < 0)
        pbx__cell_fail(PBX_STAGE_WAIT, errno, "wait for the job");
    d->reaped_ns = pbx_clock_ns(CLOCK_MONOTONIC);
    d->duration_ns = d->reaped_ns - start;
    /* Nothing the job started outlives it (the holder's teardown goes on after the report). */
    pbx__holder_reap_others(holder, count_fd, sigfd);
    d->wait_status = status;
    d->cpu_us = (uint64_t)ru.ru_utime.tv_sec * 1000000u + (uint64_t)ru.ru_utime.tv_usec +
                (uint64_t)ru.ru_stime.tv_sec * 1000000u + (uint64_t)ru.ru_stime.tv_usec;
    d->max_rss_kb = (uint64_t)ru.ru_maxrss;
    d->minor_faults = (uint64_t)ru.ru_minflt;
}

int pbx__cell_write_all(int fd, const void *p, size_t n)
{
    const char *c = p;

    while (n > 0) {
        ssize_t w = write(fd, c, n);

        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

/*
 * Append one returned-file record to the output memfd.  A file may carry at
 * most the per-file limit, and all files together at most the answer limit
 * (the supervisor counts the outputs and main()'s value against it too):
 * bytes read are what is counted, so a sparse file counts its full size.
 */
void pbx__cell_collect_one(int workfd, int out, const char *name, const struct pbx_proto_job *job,
                           struct pbx_proto_done *d)
{
    off_t used = lseek(out, 0, SEEK_CUR);
    uint64_t room = used >= 0 && (uint64_t)used < job->limits.answer_bytes
                        ? job->limits.answer_bytes - (uint64_t)used
                        : 0;
    uint64_t max = job->limits.output_file_bytes < room ? job->limits.output_file_bytes : room;
    uint64_t size = 0;
    int fd = pbx_files_open_return(workfd, name, max, &size);
    uint32_t state = fd < 0 ? (uint32_t)-fd : PBX_FILE_OK;
    uint32_t nlen = (uint32_t)strlen(name);
    off_t size_at;
    uint64_t copied = 0;
    char buf[65536];

    size_at = lseek(out, 0, SEEK_CUR);
    if (pbx__cell_write_all(out, &state, 4) < 0 || pbx__cell_write_all(out, &nlen, 4) < 0 ||
        pbx__cell_write_all(out, name, nlen) < 0 || pbx__cell_write_all(out, &copied, 8) < 0)
        pbx__cell_fail(PBX_STAGE_WAIT, errno, "write the returned files");
    if (fd >= 0) {
        for (;;) {
            ssize_t n = read(fd, buf, sizeof(buf));

            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                break;
            if (copied + (uint64_t)n > max) {
                state = PBX_FILE_TOO_LARGE;
                break;
            }
            if (pbx__cell_write_all(out, buf, (size_t)n) < 0)
                pbx__cell_fail(PBX_STAGE_WAIT, errno, "write the returned files");
            copied += (uint64_t)n;
        }
        close(fd);
    }
    if (state == PBX_FILE_TOO_LARGE && max < job->limits.output_file_bytes) {
        struct stat st;

        /* Within its own cap, the file only lacked room in the answer: say which. */
        if (fstatat(workfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
            (uint64_t)st.st_size <= job->limits.output_file_bytes)
            state = PBX_FILE_OVER_ANSWER;
    }
    if (fd >= 0 || state == PBX_FILE_OVER_ANSWER) {
        if (state != PBX_FILE_OK) {
            off_t data_at = size_at + (off_t)pbx__proto_file_head_len(nlen);

            /* Grew past the cap after the check: drop the data, keep the verdict. */
            copied = 0;
            if (ftruncate(out, data_at) < 0 || lseek(out, data_at, SEEK_SET) < 0)
                pbx__cell_fail(PBX_STAGE_WAIT, errno, "rewind the returned files");
        }
        if (pwrite(out, &state, 4, size_at + PBX_PROTO_FILE_STATE_AT) != 4 ||
            pwrite(out, &copied, 8, size_at + (off_t)pbx__proto_file_size_at(nlen)) != 8)
            pbx__cell_fail(PBX_STAGE_WAIT, errno, "write the returned files");
    }
    d->nfiles++;
}

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Whether `name` is one of the request's input files, which the cell placed in /work. */
static bool is_input(const struct pbx_cell_inputs *in, const char *name)
{
    for (uint32_t i = 0; i < in->n; i++) {
        if (strcmp(in->names[i], name) == 0)
            return true;
    }
    return false;
}

/* Append a record of no data in `state` under `name`: a pattern's note. */
static void note_record(int out, const char *name, uint32_t state, struct pbx_proto_done *d)
{
    uint32_t nlen = (uint32_t)strlen(name);
    uint64_t none = 0;

    if (pbx__cell_write_all(out, &state, 4) < 0 || pbx__cell_write_all(out, &nlen, 4) < 0 ||
        pbx__cell_write_all(out, name, nlen) < 0 || pbx__cell_write_all(out, &none, 8) < 0)
        pbx__cell_fail(PBX_STAGE_WAIT, errno, "write the returned files");
    d->nfiles++;
}

/*
 * Return the entries of /work that `pattern` matches, but the input files
 * (the caller gave them; a glob asks for what the code made, and they would
 * take the room of its files), in name order, within the count cap.  Every
 * match is read before the sort, so which files come back does not depend on
 * the directory's order.  When more matched than the cap leaves room for, one
 * more record, under the pattern's name, says so (PBX_PROTO_FILE_MORE): the
 * one record past output_files a cell may write (pbx__proto_done_check()).
 */
void pbx__cell_collect_glob(int workfd, int out, const char *pattern,
                            const struct pbx_proto_job *job, const struct pbx_cell_inputs *inputs,
                            struct pbx_proto_done *d)
{
    int dfd = openat(workfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *dir = dfd >= 0 ? fdopendir(dfd) : NULL;
    char **names = NULL;
    size_t returned = 0;
    size_t n = 0;
    struct dirent *de;

    if (dir == NULL) {
        if (dfd >= 0)
            close(dfd);
        pbx__cell_collect_one(workfd, out, pattern, job, d);
        return;
    }
    /* The disk limit's inodes bound how many entries /work can hold. */
    while ((de = readdir(dir)) != NULL) {
        if (fnmatch(pattern, de->d_name, FNM_PERIOD) != 0 || is_input(inputs, de->d_name))
            continue;
        names = realloc(names, (n + 1) * sizeof(*names));
        if (names == NULL)
            pbx__cell_fail(PBX_STAGE_WAIT, ENOMEM, "collect returned files");
        names[n] = strdup(de->d_name);
        if (names[n] == NULL)
            pbx__cell_fail(PBX_STAGE_WAIT, ENOMEM, "collect returned files");
        n++;
    }
    closedir(dir);
    if (n == 0) /* report the pattern itself as not found */
        pbx__cell_collect_one(workfd, out, pattern, job, d);
    else
        qsort(names, n, sizeof(*names), compare_names);
    for (size_t i = 0; i < n; i++) {
        if (d->nfiles < job->limits.output_files) {
            pbx__cell_collect_one(workfd, out, names[i], job, d);
            returned++;
        }
        free(names[i]);
    }
    free(names);
    if (returned < n)
        note_record(out, pattern, PBX_PROTO_FILE_MORE, d);
}

/* What place_input() needs: where to write, and where to note the name. */
struct placing {
    int workfd;                   /* /work */
    struct pbx_cell_inputs *into; /* the names placed so far */
};

/* Join the cgroups, unshare mount and IPC namespaces, mount the capped tmpfs. */
void pbx__cell_enter(const struct pbx_limits *limits, int *cgfds, int ncg)
{
    int r;

    (void)prctl(PR_SET_NAME, "pybox-cell", 0, 0, 0);
    /* If the zygote dies, so does the cell: nothing outlives the jail. */
    (void)prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    for (int i = 0; i < ncg; i++) {
        if (write(cgfds[i], "0", 1) != 1)
            pbx__cell_fail(PBX_STAGE_CGROUP, errno, "join the cell's cgroup");
        close(cgfds[i]);
        cgfds[i] = -1;
    }
    if (unshare(CLONE_NEWNS | CLONE_NEWIPC) < 0)
        pbx__cell_fail(PBX_STAGE_NAMESPACE, errno, "unshare mount and IPC namespaces");
    r = pbx_rootfs_cell_mounts(limits->disk_bytes, limits->disk_inodes);
    if (r < 0)
        pbx__cell_fail(PBX_STAGE_MOUNT, -r, "mount /work, /tmp and /dev/shm");
}

/* Map the request, write its input files into /work, note the rest in *rv. */
/* Write one input file into /work as the job's. */
static int place_input(void *arg, const char *name, const uint8_t *data, uint64_t size)
{
    struct placing *pl = arg;
    int r = pbx_files_write(pl->workfd, name, data, size, PBX_JOB_UID, PBX_JOB_GID);

    if (r == -ENOSPC || r == -EFBIG || r == -EDQUOT)
        pbx__cell_fail(PBX_STAGE_INPUT, 0, "the input files do not fit in the disk limit");
    if (r < 0)
        pbx__cell_fail(PBX_STAGE_INPUT, -r, "write an input file");
    /* pbx__proto_request_read() gave a name valid per pbx_files_name_ok(): it fits. */
    snprintf(pl->into->names[pl->into->n], sizeof(pl->into->names[0]), "%s", name);
    pl->into->n++;
    return 0;
}

/* Map the request memfd, write its input files into /work, keep the rest in *rv. */
void pbx__cell_take_request(int reqfd, const struct pbx_proto_job *job, int workfd,
                            struct pbx_cell_request *rv)
{
    const char *what = "request";
    struct placing pl = {.workfd = workfd, .into = &rv->inputs};
    const uint8_t *map;

    rv->inputs.n = 0;
    rv->inputs.names = calloc(job->ninput ? job->ninput : 1, sizeof(rv->inputs.names[0]));
    if (rv->inputs.names == NULL)
        pbx__cell_fail(PBX_STAGE_INPUT, ENOMEM, "keep the input files' names");
    map = job->request_len ? mmap(NULL, job->request_len, PROT_READ, MAP_PRIVATE, reqfd, 0) : NULL;
    if (map == MAP_FAILED)
        pbx__cell_fail(PBX_STAGE_INPUT, errno, "map the request");
    if (pbx__proto_request_read(map, job->request_len, job->ninput, job->nreturn, place_input, &pl,
                                &rv->req, &what) < 0) {
        static char msg[64];

        snprintf(msg, sizeof(msg), "malformed request (%s)", what);
        pbx__cell_fail(PBX_STAGE_INPUT, EPROTO, msg);
    }
    rv->code_offset = (uint64_t)(rv->req.code - map);
}

/* SIGCHLD through a signalfd, to reap orphans while the job runs. */
int pbx__cell_block_sigchld(void)
{
    sigset_t chld;

    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    sigprocmask(SIG_BLOCK, &chld, NULL);
    return signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
}

/*
 * The job runs: report STARTED, wait, collect the returned files, report DONE
 * (with when the cell got the execution, `go_ns`, and handed it to the job,
 * `handed_ns`), exit.
 */
static _Noreturn void finish(pid_t pid, int sigfd, uint64_t start, uint64_t go_ns,
                             uint64_t handed_ns, const struct pbx_proto_job *job, int workfd,
                             int outfd, const struct pbx_cell_request *rv)
{
    struct pbx_proto_done done;

    pbx__cell_send_started(pid);
    pbx__proto_done_init(&done, PBX_PROTO_DONE);
    done.go_ns = go_ns;
    done.handed_ns = handed_ns;
    wait_job(pid, sigfd, start, job->limits.wall_ms, &done);
    done.prep_faults = prep_faults;
    for (uint32_t i = 0; i < rv->req.nreturn && done.nfiles < job->limits.output_files; i++) {
        if (strpbrk(rv->req.returns[i], "*?[") != NULL)
            pbx__cell_collect_glob(workfd, outfd, rv->req.returns[i], job, &rv->inputs, &done);
        else
            pbx__cell_collect_one(workfd, outfd, rv->req.returns[i], job, &done);
    }
    done.output_len = (uint64_t)lseek(outfd, 0, SEEK_CUR);
    done.collected_ns = pbx_clock_ns(CLOCK_MONOTONIC);
    if (pbx__proto_send_done(pbx__cell_status_fd, &done, NULL, 0) < 0)
        _exit(1);
    pbx__holder_reap_all();
    _exit(0);
}

static struct pbx_cell_request view;

_Noreturn void pbx__cell_main(const struct pbx_zygote_state *zs, const struct pbx_proto_job *job,
                              int *fds, int nfds)
{
    cleanup_close int workfd = -1;
    uint64_t began = pbx_clock_ns(CLOCK_MONOTONIC);
    uint64_t start;
    int sigfd;
    pid_t pid;

    pbx__cell_status_fd = fds[PBX_FD_STATUS];
    pbx__cell_enter(&job->limits, fds + PBX_FD_FIXED, nfds - PBX_FD_FIXED);
    workfd = open("/work", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (workfd < 0)
        pbx__cell_fail(PBX_STAGE_INPUT, errno, "open /work");
    pbx__cell_take_request(fds[PBX_FD_REQUEST], job, workfd, &view);
    sigfd = pbx__cell_block_sigchld();
    start = pbx_clock_ns(CLOCK_MONOTONIC);
    pid = fork();
    if (pid < 0)
        pbx__cell_fail(PBX_STAGE_FORK, errno, "fork the job");
    if (pid == 0)
        job_main(zs, job, fds, view.req.code, view.req.code_len, view.req.modules);
    for (int i = PBX_FD_REQUEST; i <= PBX_FD_META; i++) {
        close(fds[i]);
        fds[i] = -1;
    }
    finish(pid, sigfd, start, began, start, job, workfd, fds[PBX_FD_OUTPUT], &view);
}

/* Receive the GO message of a spare: the execution and its REQUEST and OUTPUT fds. */
static bool receive_go(struct pbx_proto_job *job, int *reqfd, int *outfd)
{
    int fds[2];
    int n = 0;
    ssize_t r = pbx__proto_recv(pbx__cell_status_fd, job, sizeof(*job), fds, 2, &n, 0);

    if (r < 0 || !pbx__proto_job_valid(job, (size_t)r, n) || job->kind != PBX_JOB_GO) {
        for (int i = 0; i < n; i++)
            close(fds[i]);
        return false;
    }
    *reqfd = fds[0];
    *outfd = fds[1];
    return true;
}

_Noreturn void pbx__cell_spare_main(const struct pbx_zygote_state *zs,
                                    const struct pbx_proto_job *spare, int *fds, int nfds)
{
    static struct pbx_proto_job job;
    struct pbx_proto_done ready;
    cleanup_close int workfd = -1;
    int reqfd = -1;
    int outfd = -1;
    int sv[2];
    uint64_t go_ns;
    uint64_t handed_ns;
    uint64_t start;
    int sigfd;
    pid_t pid;

    pbx__cell_status_fd = fds[0];
    if (spare->flags & PBX_JOB_HOLDER)
        count_fd = fds[--nfds]; /* after the cgroup.procs fds */
    pbx__cell_enter(&spare->limits, fds + 2, nfds - 2);
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
        pbx__cell_fail(PBX_STAGE_FORK, errno, "socketpair");
    sigfd = pbx__cell_block_sigchld();
    pid = fork();
    if (pid < 0)
        pbx__cell_fail(PBX_STAGE_FORK, errno, "fork the job");
    if (pid == 0)
        job_spare_main(zs, spare, sv[1], fds[1]);
    close(sv[1]);
    close(fds[1]); /* the job's GO socket is the job's alone */
    /* Ready when the job is: isolated, warmed, waiting for code. */
    {
        struct spare_ready said;

        if (read(sv[0], &said, sizeof(said)) != sizeof(said))
            pbx__cell_fail(PBX_STAGE_FORK, EPIPE, "the spare's job died while getting ready");
        prep_faults = said.faults;
        holder = said.holder > 0 && said.holder <= INT32_MAX ? (pid_t)said.holder : 0;
    }
    pbx__proto_done_init(&ready, PBX_PROTO_READY);
    if (pbx__proto_send_done(pbx__cell_status_fd, &ready, NULL, 0) < 0)
        _exit(1);
    /*
     * Wait for the execution; EOF means the pool was shut down.  The supervisor sent it to
     * the job first: without input files, the job may be running already.
     */
    if (!receive_go(&job, &reqfd, &outfd))
        _exit(0);
    go_ns = pbx_clock_ns(CLOCK_MONOTONIC);
    /* The wall limit counts from the job's GO (the same clock in every namespace here). */
    start = job.sent_ns != 0 && job.sent_ns <= go_ns ? job.sent_ns : go_ns;
    /* The spare was made for these limits; the supervisor only sends matching executions. */
    job.limits = spare->limits;
    workfd = open("/work", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (workfd < 0)
        pbx__cell_fail(PBX_STAGE_INPUT, errno, "open /work");
    pbx__cell_take_request(reqfd, &job, workfd, &view);
    close(reqfd);
    if (job.ninput > 0) {
        /* The files are in /work: now the job may start (it waits for this byte). */
        handed_ns = pbx_clock_ns(CLOCK_MONOTONIC);
        /* A job that cannot take it is dead: its end is reported as any job's. */
        (void)send(sv[0], "", 1, MSG_NOSIGNAL);
    } else {
        /* Handed when the supervisor sent it. */
        go_ns = handed_ns = start;
    }
    close(sv[0]);
    finish(pid, sigfd, start, go_ns, handed_ns, &job, workfd, outfd, &view);
}
