/*
 * A session's cell: a cell kept alive between calls.
 *
 * Theory of operation: the zygote forks it as it forks a cell (PBX_JOB_SESSION:
 * a pid namespace of its own, whose pid 1 it is).  It joins its cgroups,
 * mounts its /work, places the input files and forks the job, which becomes
 * an unprivileged, seccomp-filtered interpreter exactly as an execution's job
 * does, then waits on its end of a socketpair with the cell for calls.  The
 * cell reports STARTED (pidfds of the job and itself) and serves the
 * supervisor's messages on its status socket, one at a time:
 *
 *   CALL       the call's fds go to the job with a struct pbx_proto_call,
 *              every process of the namespace is continued (SIGCONT), the
 *              job's CPU limit is moved to what it has used plus the call's,
 *              and the wall deadline starts;
 *   INTERRUPT  SIGINT to the job while a call runs;
 *   RESTART    every process killed and reaped, a fresh job forked (the
 *              cell never ran user code: its interpreter is the zygote's);
 *   FILE       put, get, delete or list beneath /work, as collection does.
 *
 * A call ends when the job says so (struct pbx_proto_call_done; user code
 * could say so too, early, which only ends its own call): the cell stops
 * every process of the namespace (kill(-1, SIGSTOP) from pid 1), so nothing
 * of an idle session runs, collects the returned files and reports DONE.  At
 * the deadline the cell sends SIGINT (KeyboardInterrupt) and allows a grace;
 * past it, it kills everything and the session ends.  When the job dies
 * (a memory kill, a crash, a kill at the deadline), the cell reports DONE
 * with PBX_DONE_ENDED during a call, ENDED between calls, kills what is left
 * and exits; the kernel takes the namespace, the supervisor the cgroups.
 */
#include <Python.h>

#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "engine/cell.h"
#include "engine/proto.h"
#include "sandbox/files.h"
#include "sandbox/rootfs.h"
#include "sandbox/rlimit.h"
#include "common/banned.h"

#define INTERRUPT_GRACE_MS 1000  /* from the KeyboardInterrupt of a timeout to the kill */
#define LIST_MAX           10000 /* files a listing names at most */

/* ---- the job: the session's interpreter ---- */

/* Point fds 0-3 at /dev/null: between calls nothing of a call stays open. */
static void detach_fds(void)
{
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);

    if (null < 0)
        _exit(125);
    for (int i = 0; i < 4; i++) {
        if (dup2(null, i) < 0)
            _exit(125);
    }
    close(null);
}

/* Run one call's code in the session's interpreter; its exit status. */
static int run_call(const struct pbx_zygote_state *zs, const struct pbx_limits *limits,
                    const struct pbx_proto_call *go, const uint8_t *code)
{
    struct pbx_result_max max;
    PyObject *arg;
    PyObject *ret;
    long rc = 1;

    /* A KeyboardInterrupt meant for the last call, come too late: not this one's. */
    if (PyErr_CheckSignals() < 0)
        PyErr_Clear();
    pbx_limits_result_max(limits, &max);
    arg = PyBytes_FromStringAndSize((const char *)code, (Py_ssize_t)go->code_len);
    ret = arg ? PyObject_CallMethod((PyObject *)zs->module, "session_run", "OIiisKKK", arg,
                                    (unsigned)go->seq, (go->flags & PBX_JOB_MAIN) != 0,
                                    (go->flags & PBX_JOB_ALLOW_ALL) != 0, go->extra_modules,
                                    (unsigned long long)max.bytes, (unsigned long long)max.values,
                                    (unsigned long long)max.record)
              : NULL;
    Py_XDECREF(arg);
    if (ret == NULL) {
        PyErr_Print();
    } else {
        rc = PyLong_AsLong(ret);
        if (rc == -1 && PyErr_Occurred()) {
            PyErr_Clear();
            rc = 1;
        }
        Py_DECREF(ret);
    }
    return (int)(rc & 0xff);
}

/*
 * The job: isolated as an execution's job is, then one call after another,
 * each on the fds it came with, until the cell closes the socket (fd 4).
 */
static _Noreturn void job_main(const struct pbx_zygote_state *zs, const struct pbx_limits *limits,
                               uint32_t flags, int sock)
{
    sigset_t none;

    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    (void)prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    if (dup2(sock, 4) < 0)
        _exit(125);
    detach_fds();
    if (syscall(SYS_close_range, 5, ~0U, 0) < 0)
        _exit(125);
    pbx__cell_become_job(zs, limits, flags);
    {
        PyObject *r = PyObject_CallMethod((PyObject *)zs->module, "prepare_job", NULL);

        Py_XDECREF(r);
        PyErr_Clear();
    }
    if (write(4, "r", 1) != 1)
        _exit(125);
    for (;;) {
        static struct pbx_proto_call go;
        struct pbx_proto_call_done done = {.magic = PBX_PROTO_MAGIC};
        struct rusage ru;
        const uint8_t *map;
        size_t size;
        int got[5];
        int ngot = 0;
        ssize_t n;

        do {
            n = pbx__proto_recv(4, &go, sizeof(go), got, 5, &ngot, 0);
        } while (n == -EINTR);
        if (n == 0)
            _exit(0);
        if (n != (ssize_t)sizeof(go) || ngot != 5 || go.magic != PBX_PROTO_MAGIC)
            _exit(125);
        go.extra_modules[sizeof(go.extra_modules) - 1] = '\0';
        map = pbx__cell_map_code(got[0], go.code_offset, go.code_len, &size);
        if (map == NULL)
            _exit(125);
        close(got[0]);
        for (int i = 0; i < 4; i++) {
            if (dup2(got[i + 1], i) < 0)
                _exit(125);
            close(got[i + 1]);
        }
        done.seq = go.seq;
        done.exit_code = run_call(zs, limits, &go, map + go.code_offset);
        munmap((void *)map, size);
        detach_fds();
        if (getrusage(RUSAGE_SELF, &ru) == 0)
            done.max_rss_kb = (uint64_t)ru.ru_maxrss;
        if (pbx__proto_send(4, &done, sizeof(done), NULL, 0) < 0)
            _exit(125);
    }
}

/* ---- the cell ---- */

/* The session as its cell keeps it. */
struct session {
    const struct pbx_zygote_state *zs;
    struct pbx_proto_job start; /* the PBX_JOB_SESSION message: the session's limits */
    int workfd;                 /* /work */
    int sigfd;                  /* SIGCHLD */
    pid_t job;                  /* the interpreter, or -1 */
    int jsock;                  /* the cell's end of the job's socket, or -1 */
    uint32_t seq;               /* calls so far */
    /* The call running, when `active`. */
    bool active;
    struct pbx_proto_job call;    /* its message: limits, flags, names to return */
    struct pbx_cell_request view; /* its request */
    int outfd;                    /* its OUTPUT memfd */
    uint64_t start_ns;            /* when it was handed to the job */
    uint64_t deadline_ns;         /* the wall deadline, then the grace's end */
    uint64_t cpu0_ns;             /* the job's CPU time when it started */
    bool interrupted;             /* SIGINT was sent to it */
    bool timed_out;               /* the deadline passed */
    bool killed;                  /* the grace passed: everything was killed */
};

static uint64_t job_cpu_ns(pid_t job)
{
    clockid_t clk;
    struct timespec ts;

    if (clock_getcpuclockid(job, &clk) != 0 || clock_gettime(clk, &ts) != 0)
        return 0;
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Kill every process of the namespace but the cell, and reap them all. */
static void kill_all(void)
{
    (void)kill(-1, SIGKILL);
    while (waitpid(-1, NULL, 0) > 0 || errno == EINTR)
        ;
}

/* Fork the interpreter and wait until it is ready; report STARTED. */
static void start_job(struct session *ss)
{
    int sv[2];
    char c;
    ssize_t n;

    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
        pbx__cell_fail(PBX_STAGE_FORK, errno, "socketpair");
    ss->job = fork();
    if (ss->job < 0)
        pbx__cell_fail(PBX_STAGE_FORK, errno, "fork the job");
    if (ss->job == 0)
        job_main(ss->zs, &ss->start.limits, ss->start.flags, sv[1]);
    close(sv[1]);
    do {
        n = read(sv[0], &c, 1);
    } while (n < 0 && errno == EINTR);
    if (n != 1)
        pbx__cell_fail(PBX_STAGE_FORK, EPIPE, "the session's interpreter died while starting");
    ss->jsock = sv[0];
    /* Idle until the first call: nothing of it runs. */
    (void)kill(ss->job, SIGSTOP);
    pbx__cell_send_started(ss->job);
}

/* Receive a message of the supervisor with up to `max` fds; false at EOF or when malformed. */
static bool receive(struct pbx_proto_job *m, int *fds, int *nfds)
{
    ssize_t r;

    do {
        r = pbx__proto_recv(pbx__cell_status_fd, m, sizeof(*m), fds, PBX_FD_FIXED - 1, nfds, 0);
    } while (r == -EINTR);
    if (r <= 0)
        return false;
    if (!pbx__proto_job_valid(m, (size_t)r, *nfds)) {
        for (int i = 0; i < *nfds; i++)
            close(fds[i]);
        return false;
    }
    return true;
}

/* Move the job's CPU limit to what it has used plus the call's (whole seconds, as rlimit.c). */
static void cpu_limit(struct session *ss)
{
    uint64_t used_s = (ss->cpu0_ns + 999999999u) / 1000000000u;
    uint64_t call_s = ((uint64_t)ss->call.limits.cpu_ms + 999) / 1000;
    struct rlimit rl = {.rlim_cur = used_s + call_s, .rlim_max = used_s + call_s + 1};

    (void)prlimit(ss->job, RLIMIT_CPU, &rl, NULL);
}

/* Unmap a request once taken: what the cell keeps of it was copied out of it. */
static void drop_request(const struct pbx_cell_request *rv, uint64_t len)
{
    if (len > 0 && rv->req.code != NULL)
        munmap((void *)(rv->req.code - rv->code_offset), len);
}

static void begin_call(struct session *ss, const struct pbx_proto_job *m, int *fds)
{
    static struct pbx_proto_call go;
    int r;

    ss->call = *m;
    /* Memory, pids and disk are the session's; time and output limits the call's. */
    ss->call.limits.memory_bytes = ss->start.limits.memory_bytes;
    ss->call.limits.pids = ss->start.limits.pids;
    ss->call.limits.disk_bytes = ss->start.limits.disk_bytes;
    ss->call.limits.disk_inodes = ss->start.limits.disk_inodes;
    ss->call.ninput = 0;
    free(ss->view.inputs.names);
    pbx__cell_take_request(fds[0], &ss->call, ss->workfd, &ss->view);
    memset(&go, 0, sizeof(go));
    go.magic = PBX_PROTO_MAGIC;
    go.seq = ++ss->seq;
    go.flags = m->flags;
    go.code_offset = ss->view.code_offset;
    go.code_len = ss->view.req.code_len;
    memcpy(go.extra_modules, ss->view.req.modules, sizeof(go.extra_modules));
    ss->cpu0_ns = job_cpu_ns(ss->job);
    cpu_limit(ss);
    ss->outfd = fds[PBX_FD_OUTPUT - PBX_FD_REQUEST];
    ss->active = true;
    ss->interrupted = ss->timed_out = ss->killed = false;
    ss->start_ns = pbx_clock_ns(CLOCK_MONOTONIC);
    ss->deadline_ns = ss->start_ns + (uint64_t)ss->call.limits.wall_ms * 1000000u;
    r = pbx__proto_send(ss->jsock, &go, sizeof(go), fds, 5);
    for (int i = 0; i < 5; i++)
        close(fds[i]);
    drop_request(&ss->view, ss->call.request_len);
    (void)kill(-1, SIGCONT);
    if (r < 0) /* the job is gone: its death ends the call */
        (void)kill(ss->job, SIGKILL);
}

/* The call is over (the job alive, or dead with `status`): stop everything, collect, report. */
static void end_call(struct session *ss, int wait_status, bool ended, uint64_t max_rss_kb)
{
    struct pbx_proto_done done;

    if (!ended) {
        siginfo_t si;

        (void)kill(-1, SIGSTOP);
        /*
         * A stop takes effect when each thread next runs: wait until the interpreter's have all
         * stopped (or it died, which the loop then reaps), so that nothing of it runs once the
         * call is answered.
         */
        while (waitid(P_PID, (id_t)ss->job, &si, WSTOPPED | WEXITED | WNOWAIT) < 0 &&
               errno == EINTR)
            ;
    }
    pbx__proto_done_init(&done, PBX_PROTO_DONE);
    done.duration_ns = pbx_clock_ns(CLOCK_MONOTONIC) - ss->start_ns;
    done.wait_status = wait_status;
    done.timed_out = ss->timed_out;
    done.max_rss_kb = max_rss_kb;
    done.flags = (ended ? PBX_DONE_ENDED : 0) | (ss->interrupted ? PBX_DONE_INTERRUPTED : 0);
    if (!ended) {
        uint64_t cpu = job_cpu_ns(ss->job);

        done.cpu_us = cpu > ss->cpu0_ns ? (cpu - ss->cpu0_ns) / 1000 : 0;
    }
    for (uint32_t i = 0; i < ss->view.req.nreturn && done.nfiles < ss->call.limits.output_files;
         i++) {
        if (strpbrk(ss->view.req.returns[i], "*?[") != NULL)
            pbx__cell_collect_glob(ss->workfd, ss->outfd, ss->view.req.returns[i], &ss->call,
                                   &ss->view.inputs, &done);
        else
            pbx__cell_collect_one(ss->workfd, ss->outfd, ss->view.req.returns[i], &ss->call, &done);
    }
    done.output_len = (uint64_t)lseek(ss->outfd, 0, SEEK_CUR);
    close(ss->outfd);
    ss->outfd = -1;
    ss->active = false;
    if (pbx__proto_send_done(pbx__cell_status_fd, &done, NULL, 0) < 0)
        ended = true;
    if (ended) {
        kill_all();
        _exit(0);
    }
}

/* The job's word that its call returned (not trusted: only its own call can end early). */
static void job_said(struct session *ss)
{
    struct pbx_proto_call_done d;
    int fds[2];
    int nfds = 0;
    ssize_t n = pbx__proto_recv(ss->jsock, &d, sizeof(d), fds, 2, &nfds, MSG_DONTWAIT);

    for (int i = 0; i < nfds; i++)
        close(fds[i]);
    if (n == -EAGAIN || n == -EINTR)
        return;
    if (n <= 0) {
        /* It closed its socket: it is dying, or can take no call again. */
        close(ss->jsock);
        ss->jsock = -1;
        (void)kill(ss->job, SIGKILL);
        return;
    }
    if (n != (ssize_t)sizeof(d) || d.magic != PBX_PROTO_MAGIC || !ss->active || d.seq != ss->seq)
        return;
    end_call(ss, (d.exit_code & 0xff) << 8, false, d.max_rss_kb);
}

/* SIGCHLD: reap orphans; when the job died, the session ends with it. */
static void child_exited(struct session *ss)
{
    struct signalfd_siginfo si;
    int status = 0;
    pid_t r;

    while (read(ss->sigfd, &si, sizeof(si)) > 0)
        ;
    pbx__cell_reap_orphans(ss->job);
    do {
        r = waitpid(ss->job, &status, WNOHANG);
    } while (r < 0 && errno == EINTR);
    if (r != ss->job)
        return;
    ss->job = -1;
    if (ss->active) {
        end_call(ss, status, true, 0);
    } else {
        struct pbx_proto_done done;

        pbx__proto_done_init(&done, PBX_PROTO_ENDED);
        done.wait_status = status;
        (void)pbx__proto_send_done(pbx__cell_status_fd, &done, NULL, 0);
    }
    kill_all();
    _exit(0);
}

/* The deadline passed: KeyboardInterrupt first; past the grace, everything killed. */
static void deadline_passed(struct session *ss)
{
    if (!ss->timed_out) {
        ss->timed_out = true;
        ss->interrupted = true;
        (void)kill(ss->job, SIGINT);
        ss->deadline_ns = pbx_clock_ns(CLOCK_MONOTONIC) + INTERRUPT_GRACE_MS * 1000000ull;
        return;
    }
    ss->killed = true;
    (void)kill(-1, SIGKILL); /* the job's death ends the call and the session */
    ss->deadline_ns = UINT64_MAX;
}

/* ---- files ---- */

/* Put one list record (path, size, mtime) in the output memfd. */
static int list_record(int out, const char *path, const struct stat *st)
{
    uint32_t len = (uint32_t)strlen(path);
    uint64_t size = (uint64_t)st->st_size;
    uint64_t mtime =
        (uint64_t)st->st_mtim.tv_sec * 1000u + (uint64_t)st->st_mtim.tv_nsec / 1000000u;

    return pbx__cell_write_all(out, &len, 4) < 0 || pbx__cell_write_all(out, path, len) < 0 ||
                   pbx__cell_write_all(out, &size, 8) < 0 || pbx__cell_write_all(out, &mtime, 8) < 0
               ? -EIO
               : 0;
}

/* List the regular files under `dirfd` (named `prefix`), depth first, in no set order. */
static int list_dir(int dirfd, const char *prefix, int depth, int out, uint32_t *count)
{
    int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *dir = fd >= 0 ? fdopendir(fd) : NULL;
    struct dirent *de;
    int r = 0;

    if (dir == NULL) {
        if (fd >= 0)
            close(fd);
        return -errno;
    }
    while (r == 0 && *count < LIST_MAX && (de = readdir(dir)) != NULL) {
        char path[PBX_PROTO_MAX_PATH + 1];
        struct stat st;

        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if (fstatat(dirfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
            continue;
        if ((size_t)snprintf(path, sizeof(path), "%s%s%s", prefix, *prefix ? "/" : "",
                             de->d_name) >= sizeof(path))
            continue;
        if (S_ISREG(st.st_mode)) {
            r = list_record(out, path, &st);
            (*count)++;
        } else if (S_ISDIR(st.st_mode) && depth < PBX_FILES_PATH_DEPTH) {
            int sub = openat(dirfd, de->d_name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

            if (sub >= 0) {
                r = list_dir(sub, path, depth + 1, out, count);
                close(sub);
            }
        }
    }
    closedir(dir);
    return r;
}

/* Put a file: made afresh (a file of that name replaced), within the per-file cap. */
static int file_put(struct session *ss, int parent, const char *leaf, const uint8_t *data,
                    uint64_t len)
{
    struct stat st;

    if (len > ss->start.limits.input_file_bytes)
        return -EFBIG;
    if (fstatat(parent, leaf, &st, AT_SYMLINK_NOFOLLOW) == 0) {
        if (S_ISDIR(st.st_mode))
            return -EISDIR;
        if (unlinkat(parent, leaf, 0) < 0)
            return -errno;
    }
    return pbx_files_write(parent, leaf, data, (size_t)len, PBX_JOB_UID, PBX_JOB_GID);
}

/* One file operation; its DONE report carries the outcome. */
static void file_op(struct session *ss, const struct pbx_proto_job *m, int *fds)
{
    static char path[PBX_PROTO_MAX_PATH + 1];
    struct pbx_proto_done done;
    const uint8_t *map = NULL;
    const uint8_t *data = NULL;
    uint64_t data_len = 0;
    const char *leaf = NULL;
    int parent = -1;
    int r = 0;

    pbx__proto_done_init(&done, PBX_PROTO_DONE);
    if (m->request_len > 0) {
        map = mmap(NULL, m->request_len, PROT_READ, MAP_PRIVATE, fds[0], 0);
        if (map == MAP_FAILED)
            map = NULL;
    }
    if (map == NULL || !pbx__proto_file_op_read(map, m->request_len, path, &data, &data_len)) {
        r = -EPROTO;
    } else if (m->flags == PBX_FILE_OP_LIST) {
        r = list_dir(ss->workfd, "", 1, fds[1], &done.nfiles);
    } else if (!pbx_files_path_ok(path, strlen(path))) {
        r = -EINVAL;
    } else {
        parent = pbx_files_open_parent(ss->workfd, path, m->flags == PBX_FILE_OP_PUT, PBX_JOB_UID,
                                       PBX_JOB_GID, &leaf);
        r = parent < 0 ? parent : 0;
    }
    if (r == 0 && parent >= 0) {
        switch (m->flags) {
        case PBX_FILE_OP_PUT:
            r = file_put(ss, parent, leaf, data, data_len);
            break;
        case PBX_FILE_OP_GET: {
            struct pbx_proto_job lim = ss->start;

            lim.limits.answer_bytes = ss->start.limits.output_file_bytes;
            pbx__cell_collect_one(parent, fds[1], leaf, &lim, &done);
            break;
        }
        case PBX_FILE_OP_DELETE: {
            struct stat st;

            if (fstatat(parent, leaf, &st, AT_SYMLINK_NOFOLLOW) < 0)
                r = -errno;
            else if (S_ISDIR(st.st_mode))
                r = -EISDIR;
            else if (unlinkat(parent, leaf, 0) < 0)
                r = -errno;
            break;
        }
        default:
            r = -EINVAL;
        }
    }
    if (parent >= 0)
        close(parent);
    if (map != NULL)
        munmap((void *)map, m->request_len);
    done.err = -r;
    done.output_len = (uint64_t)lseek(fds[1], 0, SEEK_CUR);
    close(fds[0]);
    close(fds[1]);
    if (pbx__proto_send_done(pbx__cell_status_fd, &done, NULL, 0) < 0) {
        kill_all();
        _exit(0);
    }
}

/* A message of the supervisor. */
static void serve(struct session *ss)
{
    struct pbx_proto_job m;
    int fds[PBX_FD_FIXED];
    int nfds = 0;

    if (!receive(&m, fds, &nfds)) {
        /* The supervisor ended the session (or sent what it never sends). */
        kill_all();
        _exit(0);
    }
    switch (m.kind) {
    case PBX_JOB_CALL:
        if (!ss->active && ss->job > 0) {
            begin_call(ss, &m, fds);
            return;
        }
        break;
    case PBX_JOB_INTERRUPT:
        if (ss->active && ss->job > 0) {
            ss->interrupted = true;
            (void)kill(ss->job, SIGINT);
        }
        return;
    case PBX_JOB_RESTART:
        if (!ss->active) {
            kill_all();
            close(ss->jsock);
            ss->jsock = -1;
            ss->seq = 0;
            start_job(ss);
            return;
        }
        break;
    case PBX_JOB_FILE:
        file_op(ss, &m, fds);
        return;
    default:
        break;
    }
    for (int i = 0; i < nfds; i++)
        close(fds[i]);
    pbx__proto_send_failed(pbx__cell_status_fd, PBX_STAGE_WAIT, EBUSY,
                           "the session cannot take that now");
}

_Noreturn void pbx__session_cell_main(const struct pbx_zygote_state *zs,
                                      const struct pbx_proto_job *start, int *fds, int nfds)
{
    static struct session ss;

    memset(&ss, 0, sizeof(ss));
    ss.zs = zs;
    ss.start = *start;
    ss.outfd = -1;
    pbx__cell_status_fd = fds[0];
    pbx__cell_enter(&start->limits, fds + 2, nfds - 2);
    ss.workfd = open("/work", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (ss.workfd < 0)
        pbx__cell_fail(PBX_STAGE_INPUT, errno, "open /work");
    pbx__cell_take_request(fds[1], start, ss.workfd, &ss.view);
    drop_request(&ss.view, start->request_len);
    close(fds[1]);
    ss.sigfd = pbx__cell_block_sigchld();
    if (ss.sigfd < 0)
        pbx__cell_fail(PBX_STAGE_FORK, errno, "signalfd");
    start_job(&ss);
    for (;;) {
        struct pollfd p[3] = {
            {.fd = pbx__cell_status_fd, .events = POLLIN},
            {.fd = ss.sigfd, .events = POLLIN},
            {.fd = ss.jsock, .events = POLLIN},
        };
        int timeout = -1;

        if (ss.active && ss.deadline_ns != UINT64_MAX) {
            uint64_t now = pbx_clock_ns(CLOCK_MONOTONIC);

            if (now >= ss.deadline_ns) {
                deadline_passed(&ss);
                continue;
            }
            timeout = (int)((ss.deadline_ns - now + 999999) / 1000000);
        }
        if (poll(p, ss.jsock >= 0 ? 3 : 2, timeout) < 0 && errno != EINTR)
            pbx__cell_fail(PBX_STAGE_WAIT, errno, "poll");
        if (p[1].revents)
            child_exited(&ss);
        if (ss.jsock >= 0 && p[2].revents)
            job_said(&ss);
        if (p[0].revents)
            serve(&ss);
    }
}
