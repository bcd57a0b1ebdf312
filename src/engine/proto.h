/*
 * Messages between the supervisor, the zygote and cells: the one wire format.
 *
 * supervisor -> zygote (control socket, SOCK_SEQPACKET): one struct
 * pbx_proto_job per execution (PBX_JOB_RUN) or spare cell (PBX_JOB_SPARE),
 * with the fds of enum pbx_proto_fd as SCM_RIGHTS; supervisor -> spare cell
 * (its status socket): one PBX_JOB_GO, and supervisor -> a spare's job (its GO
 * socket, made with the spare): one struct pbx_proto_go, the same execution
 * for the job itself, sent first.  zygote -> supervisor (control
 * socket): READY once started, or FAILED.  cell -> supervisor (the job's own
 * status socketpair): READY for a spare, then a PBX_PROTO_STARTED message
 * carrying pidfds of the job and the cell, then DONE; FAILED at any point.
 * Every report is a struct pbx_proto_done.  Every message is fixed-size so it
 * can be built without allocating, as crun's sync messages are.
 *
 * The request memfd holds the code, the input files and the names to return;
 * the output memfd receives the returned files.  Both are framed by the
 * functions below, which never trust a length.  A cell is not trusted: the
 * supervisor reads its reports and its output memfd through the decoders
 * here only, which fuzz/fuzz_proto_request.c drives.
 */
#ifndef PBX_ENGINE_PROTO_H
#define PBX_ENGINE_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sys/types.h>

#include "common/error.h"
#include "policy/limits.h"
#include "sandbox/files.h"

#define PBX_PROTO_MAGIC   0x70796278u /* "pybx" */
#define PBX_PROTO_VERSION 4u

enum pbx_proto_fd {
    PBX_FD_STATUS = 0, /* the cell's end of the status socketpair */
    PBX_FD_REQUEST,    /* sealed memfd: code, input files, names to return */
    PBX_FD_STDIN,      /* sealed memfd: stdin */
    PBX_FD_STDOUT,     /* pipe write end */
    PBX_FD_STDERR,     /* pipe write end */
    PBX_FD_META,       /* pipe write end: the job's JSON records */
    PBX_FD_OUTPUT,     /* memfd for returned files */
    PBX_FD_FIXED,      /* number of fixed fds; cgroup.procs fds follow */
};

#define PBX_PROTO_MAX_CGROUP_FDS 4
#define PBX_PROTO_MAX_FDS        (PBX_FD_FIXED + PBX_PROTO_MAX_CGROUP_FDS)

enum pbx_job_flags {
    PBX_JOB_MAIN = (1 << 0),      /* call main() */
    PBX_JOB_ALLOW_ALL = (1 << 1), /* no import allowlist */
    PBX_JOB_NO_CGROUP = (1 << 2), /* apply the rlimit fallbacks (RLIMIT_AS, RLIMIT_NPROC) */
    PBX_JOB_LIVE = (1 << 3),      /* someone watches the output live: stdout line-buffered */
    /*
     * A spare whose job keeps a holder of its memory (holder.c): the SPARE
     * message's fds end with the cell's pids.current, read-only.
     */
    PBX_JOB_HOLDER = (1 << 4),
};

/* What a message to the zygote, or to a spare cell, asks for. */
enum pbx_job_kind {
    PBX_JOB_RUN = 0,   /* to the zygote: fork a cell and run this execution in it */
    PBX_JOB_SPARE = 1, /* to the zygote: fork a spare cell (fds: status, the job's GO */
                       /* socket, cgroup.procs...) */
    PBX_JOB_GO = 2,    /* to a spare cell: this execution runs (fds: REQUEST, OUTPUT) */
    /* Sessions (session_cell.c): */
    PBX_JOB_SESSION = 3,   /* to the zygote: fork a session's cell (fds: status, REQUEST with */
                           /* the input files, cgroup.procs...) */
    PBX_JOB_CALL = 4,      /* to a session's cell: run this call (fds: REQUEST..OUTPUT) */
    PBX_JOB_INTERRUPT = 5, /* to a session's cell: KeyboardInterrupt in the running call */
    PBX_JOB_RESTART = 6,   /* to a session's cell: a fresh interpreter, /work kept */
    PBX_JOB_FILE = 7,      /* to a session's cell: a file operation, enum pbx_file_op in */
                           /* `flags` (fds: REQUEST with the path and data, OUTPUT) */
};

/* What a PBX_JOB_FILE message asks of a session's /work. */
enum pbx_file_op {
    PBX_FILE_OP_PUT = 1,    /* write the file (made afresh, parents made) */
    PBX_FILE_OP_GET = 2,    /* its bytes, as one returned-file record in the OUTPUT memfd */
    PBX_FILE_OP_DELETE = 3, /* remove it */
    PBX_FILE_OP_LIST = 4,   /* every regular file, as list records in the OUTPUT memfd */
};

/* A job message: zero but for the fields each kind fills. */
struct pbx_proto_job {
    uint32_t magic;           /* PBX_PROTO_MAGIC */
    uint32_t version;         /* PBX_PROTO_VERSION */
    uint32_t kind;            /* enum pbx_job_kind */
    uint32_t pad;             /* zero */
    uint64_t id;              /* execution id, for logs */
    uint32_t flags;           /* enum pbx_job_flags */
    uint32_t ncgroup_fds;     /* cgroup.procs fds after the fixed ones */
    uint64_t request_len;     /* bytes used in the request memfd */
    uint32_t ninput;          /* input files in the request */
    uint32_t nreturn;         /* names to return in the request */
    struct pbx_limits limits; /* limits of this execution */
    uint64_t sent_ns;         /* PBX_JOB_GO: when the job's own GO was sent (CLOCK_MONOTONIC) */
};

/*
 * Fill `job` for a message of `kind` with execution id `id` (magic, version,
 * the rest zero).
 */
void pbx__proto_job_init(struct pbx_proto_job *job, enum pbx_job_kind kind, uint64_t id);

/*
 * Whether `len` bytes received with `nfds` fds are a whole job message of a
 * known kind with the fds that kind carries: REQUEST..OUTPUT and the
 * cgroup.procs fds for PBX_JOB_RUN, the status socket, the job's GO socket
 * and the cgroup.procs fds for PBX_JOB_SPARE, REQUEST and OUTPUT for
 * PBX_JOB_GO.  The receiver still
 * checks that the kind is one it takes.  Async-signal-safe.
 */
bool pbx__proto_job_valid(const struct pbx_proto_job *job, size_t len, int nfds);

/*
 * Send `job` with `nfds` fds on `sock` (the zygote's control socket, or a
 * spare's status socket).  Returns 0, or < 0 with *err set.
 */
int pbx__proto_send_job(int sock, const struct pbx_proto_job *job, const int *fds, int nfds,
                        struct pbx_error **err);

enum pbx_proto_kind {
    PBX_PROTO_READY = 1,   /* zygote -> supervisor: initialised */
    PBX_PROTO_STARTED = 2, /* cell -> supervisor: job forked, pidfds attached */
    PBX_PROTO_DONE = 3,    /* cell -> supervisor: job finished, files collected */
    PBX_PROTO_FAILED = 4,  /* any -> supervisor: setup failed, see stage/err/msg */
    PBX_PROTO_ENDED = 5,   /* session cell -> supervisor: its interpreter died between calls */
};

/* Flags of a session call's DONE report (pbx_proto_done.flags). */
enum pbx_done_flags {
    PBX_DONE_ENDED = (1 << 0),       /* the session ended with the call: its cell exits */
    PBX_DONE_INTERRUPTED = (1 << 1), /* KeyboardInterrupt was sent to the call */
};

/* Where a cell or zygote failed (reported in pbx_proto_done.stage). */
enum pbx_proto_stage {
    PBX_STAGE_NONE = 0,
    PBX_STAGE_CGROUP,
    PBX_STAGE_NAMESPACE,
    PBX_STAGE_MOUNT,
    PBX_STAGE_INPUT,
    PBX_STAGE_FORK,
    PBX_STAGE_WAIT,
    PBX_STAGE_ROOTFS,
    PBX_STAGE_PYTHON,
    PBX_STAGE_SECCOMP,
};

/*
 * A returned-file record's state beyond enum pbx_file_state (sandbox/files.h):
 * the note, under a pattern's name and with no data, that more files matched
 * it than the output_files limit returns.
 */
#define PBX_PROTO_FILE_MORE 64

#define PBX_PROTO_MSG_MAX 512 /* bytes of a report's failure text, its NUL included */

/* A report to the supervisor: READY, STARTED, DONE or FAILED. */
struct pbx_proto_done {
    uint32_t magic;              /* PBX_PROTO_MAGIC */
    uint32_t kind;               /* enum pbx_proto_kind */
    int32_t stage;               /* enum pbx_proto_stage on failure */
    int32_t err;                 /* errno on failure */
    char msg[PBX_PROTO_MSG_MAX]; /* failure text, NUL-terminated by its sender (not trusted) */
    int32_t wait_status;         /* the job's wait status */
    uint32_t timed_out;          /* the cell killed the job at the wall limit */
    uint64_t duration_ns;        /* fork of the job to its reaping */
    uint64_t cpu_us;             /* user + system time of the job and its reaped children */
    uint64_t max_rss_kb;         /* peak RSS */
    uint64_t minor_faults;       /* minor page faults of the job, all of its life */
    uint64_t prep_faults;        /* of those, taken before the code arrived (warm spares) */
    uint32_t nfiles;             /* returned-file records written to the output memfd */
    uint32_t flags;              /* enum pbx_done_flags (sessions), else zero */
    uint64_t output_len;         /* bytes written to the output memfd */
    /* When the cell did each step of an execution (CLOCK_MONOTONIC ns; DONE only, else 0): */
    uint64_t go_ns;        /* it got GO (a warm spare) or began (a cell forked for the job) */
    uint64_t handed_ns;    /* it handed the job its fds (forked: forked the job) */
    uint64_t reaped_ns;    /* it reaped the job */
    uint64_t collected_ns; /* it killed what the job left and collected the files: DONE sent */
};

/* Fill `d` for a report of `kind` (magic, kind, the rest zero).  Async-signal-safe. */
void pbx__proto_done_init(struct pbx_proto_done *d, enum pbx_proto_kind kind);

/*
 * Send the report `d` on `sock` with `nfds` fds (STARTED: the job's and the
 * cell's pidfds), as pbx__proto_send() does.  Async-signal-safe.
 */
int pbx__proto_send_done(int sock, const struct pbx_proto_done *d, const int *fds, int nfds);

/*
 * Report a failure on `sock`: FAILED with `stage`, `errnum` and `msg` (cut to
 * fit).  Best effort: whoever fails exits or goes on either way.  Async-signal-safe.
 */
void pbx__proto_send_failed(int sock, int stage, int errnum, const char *msg);

/*
 * Receive one report from a zygote or a cell without waiting, with up to two
 * fds into fds[] (their count in *nfds; the caller closes them, whatever the
 * return).  Returns the report's size; 0 at EOF; -EAGAIN when none is
 * waiting; -EPROTO for what is not one whole report (its size or magic wrong,
 * or cut short); another -errno.  The kind is the caller's to check.
 */
ssize_t pbx__proto_recv_done(int sock, struct pbx_proto_done *d, int *fds, int *nfds);

/*
 * The error the FAILED report `d` stands for: PBX_E_TOO_LARGE when the input
 * files did not fit, else PBX_E_SANDBOX, its message naming the stage and
 * carrying the report's text (read within the message, NUL or not).
 * Returns < 0, as pbx_error_set() does.
 */
int pbx__proto_failed_error(const struct pbx_proto_done *d, struct pbx_error **err);

/*
 * Check the DONE report `d` of a cell against what was asked, before anything
 * is sized by it: a cell is not trusted, and its counts must not make the
 * supervisor allocate (or abort on) what it never asked for.  At most
 * `max_files` returned-file records (output_files, and one note of
 * PBX_PROTO_FILE_MORE past them).  0, or < 0 with PBX_E_ENGINE ("the
 * cell's report is malformed") in *err.
 */
int pbx__proto_done_check(const struct pbx_proto_done *d, uint32_t max_files,
                          struct pbx_error **err);

/*
 * Whether the step times of the DONE report `d` are ones a cell could have
 * taken for an execution whose job went out at `sent_ns` and whose DONE
 * arrived at `done_ns` (both the supervisor's CLOCK_MONOTONIC): each step
 * after the one before, all within [sent_ns, done_ns].  A report that fails
 * gives no breakdown of the execution's time; it is no error of the
 * execution.
 */
bool pbx__proto_done_times_ok(const struct pbx_proto_done *d, uint64_t sent_ns, uint64_t done_ns);

/*
 * Wait up to `timeout_ms` for READY on `sock`: the zygote's control socket as
 * it starts, or a spare cell's status socket.  Reports are read with
 * pbx__proto_recv_done(), the fds that come with them closed, and a wake-up
 * with nothing to read waits `timeout_ms` again.  Returns PBX_PROTO_READY;
 * PBX_PROTO_FAILED with the report in *d; 0 when the peer ended, or sent
 * anything else first; -ETIMEDOUT when nothing came in time.
 */
int pbx__proto_wait_ready(int sock, int timeout_ms, struct pbx_proto_done *d);

/* Static text for a state ("not found", ...). */
const char *pbx__proto_file_state_text(uint32_t state);

/* A reader over a byte range; every getter fails (returns false) past the end. */
struct pbx_proto_reader {
    const uint8_t *p;
    size_t left;
};

bool pbx__proto_get_u32(struct pbx_proto_reader *r, uint32_t *v);
bool pbx__proto_get_u64(struct pbx_proto_reader *r, uint64_t *v);
/* Point *data at the next n bytes. */
bool pbx__proto_get_bytes(struct pbx_proto_reader *r, size_t n, const uint8_t **data);
/* Read (u32 length, bytes) with length <= max into *s (not NUL-terminated). */
bool pbx__proto_get_string(struct pbx_proto_reader *r, size_t max, const uint8_t **s,
                           uint32_t *len);

/* A growable writer (supervisor side only; aborts on OOM). */
struct pbx_proto_writer {
    uint8_t *data;
    size_t len;
    size_t alloc;
};

void pbx__proto_put_u32(struct pbx_proto_writer *w, uint32_t v);
void pbx__proto_put_u64(struct pbx_proto_writer *w, uint64_t v);
void pbx__proto_put_bytes(struct pbx_proto_writer *w, const void *p, size_t n);
void pbx__proto_put_string(struct pbx_proto_writer *w, const char *s, size_t n);

/*
 * The request memfd: u64 code length and the code; then, for each input
 * file, u32 name length (at most 255), the name, u64 size and the data; then,
 * for each name to return, u32 length (at most 255) and the name; then u32
 * length (at most PBX_PROTO_MAX_MODULES) and the extra allowed modules.  The counts travel in
 * the job message (ninput, nreturn).  The supervisor writes it with the
 * functions below, in that order; the cell reads it with
 * pbx__proto_request_read(), and so does fuzz/fuzz_proto_request.c.
 */
#define PBX_PROTO_MAX_NAME    255
#define PBX_PROTO_MAX_RETURN  256
#define PBX_PROTO_MAX_MODULES 8192 /* a server's list (2048) and a key's (4096) */

/* The code goes first; returns where its bytes start in the request (for pbx_proto_go). */
uint64_t pbx__proto_request_code(struct pbx_proto_writer *w, const char *code, size_t len);
void pbx__proto_request_input(struct pbx_proto_writer *w, const char *name, const void *data,
                              size_t size);
void pbx__proto_request_return(struct pbx_proto_writer *w, const char *name);
void pbx__proto_request_modules(struct pbx_proto_writer *w, const char *modules);

/* A decoded request: pointers into the bytes read, which must outlive it. */
struct pbx_proto_request {
    const uint8_t *code;                                        /* the code */
    uint64_t code_len;                                          /* its length */
    uint32_t nreturn;                                           /* names to return */
    char returns[PBX_PROTO_MAX_RETURN][PBX_PROTO_MAX_NAME + 1]; /* NUL-terminated */
    char modules[PBX_PROTO_MAX_MODULES + 1]; /* extra allowed modules, NUL-terminated */
};

/*
 * Read a request of `ninput` input files and `nreturn` names from `len`
 * bytes at `p` into *req, calling on_input(arg, name, data, size) for each
 * input file in order (name NUL-terminated and valid per
 * pbx_files_name_ok()).  Names to return and modules may hold no NUL.
 * Never reads outside the bytes.  Returns 0; -EPROTO
 * with *what naming the malformed part; or what on_input returned when it
 * returned < 0.
 */
int pbx__proto_request_read(const uint8_t *p, size_t len, uint32_t ninput, uint32_t nreturn,
                            int (*on_input)(void *arg, const char *name, const uint8_t *data,
                                            uint64_t size),
                            void *arg, struct pbx_proto_request *req, const char **what);

/*
 * What a spare's job gets on its GO socket when its execution comes (with the
 * REQUEST, STDIN, STDOUT, STDERR and META fds): the supervisor sends it
 * straight to the job, then PBX_JOB_GO to the cell, so the job starts without
 * waiting for its cell to wake.  With input files the job first waits for the
 * cell's word that they are in /work (one byte on the socket between them).
 */
struct pbx_proto_go {
    uint32_t flags;                                /* enum pbx_job_flags */
    uint32_t wait_cell;                            /* 1: input files; wait for the cell */
    uint64_t code_offset;                          /* where the code starts in the request memfd */
    uint64_t code_len;                             /* its length */
    char extra_modules[PBX_PROTO_MAX_MODULES + 1]; /* NUL-terminated */
};

/*
 * A returned-file record in the output memfd: u32 state (enum
 * pbx_file_state), u32 name length, the name, u64 size, the data.  The cell
 * writes the head first and the state and size again once the data is in.
 */
static inline size_t pbx__proto_file_head_len(uint32_t name_len)
{
    return 16 + (size_t)name_len;
}
#define PBX_PROTO_FILE_STATE_AT 0 /* offset of the state in a record */
static inline size_t pbx__proto_file_size_at(uint32_t name_len)
{
    return 8 + (size_t)name_len;
}

/*
 * The next returned-file record of `r`: false at the end or when malformed
 * (a name over PBX_PROTO_MAX_NAME, data past the end).
 */
bool pbx__proto_file_next(struct pbx_proto_reader *r, uint32_t *state, const uint8_t **name,
                          uint32_t *name_len, uint64_t *size, const uint8_t **data);

/*
 * A session's file operation (PBX_JOB_FILE): the request memfd holds u32
 * path length (at most PBX_PROTO_MAX_PATH), the path, u64 data length and
 * the data (empty but for PBX_FILE_OP_PUT).  The reply is a DONE report with
 * `err` 0 or an errno value, `nfiles` records written to the OUTPUT memfd and
 * `output_len` their bytes.  A list record is u32 path length, the path, u64
 * size and u64 mtime (ms since the epoch).
 */
#define PBX_PROTO_MAX_PATH 4095

void pbx__proto_file_op_write(struct pbx_proto_writer *w, const char *path, const void *data,
                              size_t len);
/* Read a file operation's request; false when malformed (the path holds no NUL). */
bool pbx__proto_file_op_read(const uint8_t *p, size_t len, char path[PBX_PROTO_MAX_PATH + 1],
                             const uint8_t **data, uint64_t *data_len);
/* The next list record of `r`: false at the end or when malformed. */
bool pbx__proto_list_next(struct pbx_proto_reader *r, const uint8_t **path, uint32_t *path_len,
                          uint64_t *size, uint64_t *mtime_ms);

/*
 * Inside a session's cell, between the cell and its job (the interpreter, which
 * runs user code, so nothing it sends is trusted): the cell hands each call to
 * the job as one struct pbx_proto_call with 5 fds (REQUEST..META); the job
 * answers one struct pbx_proto_call_done when the call's code has returned.
 */
struct pbx_proto_call {
    uint32_t magic;                                /* PBX_PROTO_MAGIC */
    uint32_t seq;                                  /* the call's number: <cell N> */
    uint32_t flags;                                /* enum pbx_job_flags */
    uint32_t pad;                                  /* zero */
    uint64_t code_offset;                          /* where the code starts in the request memfd */
    uint64_t code_len;                             /* its length */
    char extra_modules[PBX_PROTO_MAX_MODULES + 1]; /* NUL-terminated */
};

struct pbx_proto_call_done {
    uint32_t magic;      /* PBX_PROTO_MAGIC */
    uint32_t seq;        /* the call's number */
    int32_t exit_code;   /* the code's exit status */
    uint32_t pad;        /* zero */
    uint64_t max_rss_kb; /* the interpreter's peak RSS, as it says */
};

/*
 * Send one message of `len` bytes with `nfds` fds (SCM_RIGHTS, at most
 * PBX_PROTO_MAX_FDS) on a SOCK_SEQPACKET socket; retries EINTR, never
 * raises SIGPIPE.  Returns 0 or -errno (-EPROTO for a short send).
 * Async-signal-safe.
 */
int pbx__proto_send(int sock, const void *msg, size_t len, const int *fds, int nfds);

/*
 * Receive one message into `buf` (at most `len` bytes) with up to `maxfds`
 * fds (O_CLOEXEC) into fds[], their count in *nfds; fds beyond `maxfds` are
 * closed.  `flags` are recvmsg flags (MSG_DONTWAIT).  Returns the bytes
 * received, 0 at EOF, or -errno (-EPROTO when the message or its fds were
 * truncated; any fds received are then closed).  Async-signal-safe.
 */
ssize_t pbx__proto_recv(int sock, void *buf, size_t len, int *fds, int maxfds, int *nfds,
                        int flags);

#endif
