/*
 * A cell: one execution, forked from the zygote; and the parts of one that a
 * session's cell (session_cell.c) shares.
 */
#ifndef PBX_ENGINE_CELL_H
#define PBX_ENGINE_CELL_H

#include "engine/proto.h"
#include "engine/zygote.h"

/*
 * Run one execution in the calling process, a fresh fork of the zygote:
 * `job` and its fds (indexed by enum pbx_proto_fd, owned) come from the
 * supervisor.  Reports on fds[PBX_FD_STATUS] and never returns.
 */
_Noreturn void pbx__cell_main(const struct pbx_zygote_state *zs, const struct pbx_proto_job *job,
                              int *fds, int nfds);

/*
 * A spare cell: set up ahead of demand with the limits of `spare`, its job
 * forked, isolated and waiting.  fds[0] is the status socket, fds[1] the
 * job's GO socket (the job's alone), the rest cgroup.procs fds (and the
 * holder's pids.current).  Reports READY; the job then gets its execution from
 * the supervisor and the cell one PBX_JOB_GO message on the status socket,
 * after which it watches the job as pbx__cell_main() would.  Never returns.
 */
_Noreturn void pbx__cell_spare_main(const struct pbx_zygote_state *zs,
                                    const struct pbx_proto_job *spare, int *fds, int nfds);

/*
 * A session's cell (session_cell.c): fds[0] is the status socket, fds[1] the
 * request memfd with the input files, the rest cgroup.procs fds.  Reports
 * STARTED once its interpreter waits for calls, then serves the supervisor's
 * messages until the status socket closes or the interpreter dies.  Never
 * returns.
 */
_Noreturn void pbx__session_cell_main(const struct pbx_zygote_state *zs,
                                      const struct pbx_proto_job *start, int *fds, int nfds);

/* ---- the parts a session's cell shares (cell.c) ---- */

/* The names of the request's input files, as the cell placed them in /work. */
struct pbx_cell_inputs {
    char (*names)[PBX_PROTO_MAX_NAME + 1]; /* ninput of them, NUL-terminated, owned */
    uint32_t n;                            /* how many were placed */
};

/* The request as a cell reads it: pointers into the mapped request memfd. */
struct pbx_cell_request {
    struct pbx_proto_request req;  /* code, names to return, extra modules */
    uint64_t code_offset;          /* the code's offset in the request memfd */
    struct pbx_cell_inputs inputs; /* the input files' names, which globs leave out */
};

/* The cell's status socket, where every report goes. */
extern int pbx__cell_status_fd;

/* Write all `n` bytes (retrying EINTR): 0, or -1 with errno. */
int pbx__cell_write_all(int fd, const void *p, size_t n);

/* Report FAILED at `stage` (errno `errnum`, 0 for none; `what` says what) and exit. */
_Noreturn void pbx__cell_fail(int stage, int errnum, const char *what);

/* Join the cgroups (fds closed), unshare mount and IPC namespaces, mount the capped tmpfs. */
void pbx__cell_enter(const struct pbx_limits *limits, int *cgfds, int ncg);

/* Map the request memfd, write its input files into /work, keep the rest in *rv. */
void pbx__cell_take_request(int reqfd, const struct pbx_proto_job *job, int workfd,
                            struct pbx_cell_request *rv);

/*
 * In the job, before any code: a new session, rlimits, /work, no privileges,
 * no_new_privs and the seccomp filter, then CPython's after-fork hooks.
 * Returns only when all of it held (else exits 125).
 */
void pbx__cell_become_job(const struct pbx_zygote_state *zs, const struct pbx_limits *limits,
                          uint32_t flags);

/* SIGCHLD blocked and read through the signalfd returned (or -1). */
int pbx__cell_block_sigchld(void);

/*
 * In a job: map the request memfd `fd` read-only, whole, and check that the code's `len` bytes
 * at `offset` lie within it.  The mapping, its length in *size; NULL when they do not.
 */
const uint8_t *pbx__cell_map_code(int fd, uint64_t offset, uint64_t len, size_t *size);

/* Report STARTED with pidfds of the job and of the cell. */
void pbx__cell_send_started(pid_t job);

/* Reap children other than `job`: orphans reparented to the cell, as pid 1. */
void pbx__cell_reap_orphans(pid_t job);

/*
 * Append the returned-file record of `name` in /work (`workfd`) to the
 * output memfd `out`, within job->limits' per-file cap and the room the
 * answer limit leaves; count it in d->nfiles.
 */
void pbx__cell_collect_one(int workfd, int out, const char *name, const struct pbx_proto_job *job,
                           struct pbx_proto_done *d);

/* The same for each entry of /work that `pattern` matches but the inputs, in name order. */
void pbx__cell_collect_glob(int workfd, int out, const char *pattern,
                            const struct pbx_proto_job *job, const struct pbx_cell_inputs *inputs,
                            struct pbx_proto_done *d);

#endif
