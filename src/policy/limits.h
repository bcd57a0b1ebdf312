/*
 * Per-execution limits.  Every field is settable per execution; the defaults
 * are those of README.md's "Limits" table, except the code size: 1 MiB here for
 * local runs, while the server's anonymous policy caps code at 2000 characters.
 */
#ifndef PBX_POLICY_LIMITS_H
#define PBX_POLICY_LIMITS_H

#include <stdint.h>

#include "common/error.h"

struct pbx_limits {
    uint32_t wall_ms;           /* wall-clock time of the user's code */
    uint32_t cpu_ms;            /* CPU time (user + system) of each process */
    uint64_t memory_bytes;      /* memory including swap and the cell's tmpfs pages */
    uint32_t pids;              /* processes and threads, the first one included */
    uint64_t disk_bytes;        /* /work + /tmp + /dev/shm, one shared tmpfs */
    uint32_t disk_inodes;       /* inodes of that tmpfs */
    uint64_t stdout_bytes;      /* stdout kept; the rest is dropped and flagged */
    uint64_t stderr_bytes;      /* stderr kept; likewise */
    uint64_t code_bytes;        /* size of the code */
    uint64_t stdin_bytes;       /* size of stdin */
    uint32_t input_files;       /* number of input files */
    uint64_t input_file_bytes;  /* size of each input file */
    uint32_t output_files;      /* number of returned files asked for */
    uint64_t output_file_bytes; /* size of each returned file */
    uint64_t answer_bytes;      /* all an execution sends back: kept stdout and stderr,
                                 * main()'s value and returned files, by bytes carried */
    uint32_t nofile;            /* open file descriptors per process */
    uint64_t stack_bytes;       /* stack size per process */
};

/*
 * The most main()'s value may be: as JSON text, what the answer limit leaves
 * after the kept stdout and stderr (bytes); a value for every 64 bytes of the
 * answer limit (a parsed value costs tens of bytes, so the tree stays a small
 * multiple of the limit: values); and the record that carries it, escaped
 * as a JSON string, at most `bytes` and 64 KiB (record).  The bootstrap
 * refuses a bigger value itself; the supervisor never parses one.
 */
struct pbx_result_max {
    uint64_t bytes;  /* JSON text of the value */
    uint64_t values; /* values in it */
    uint64_t record; /* the done record that carries it, as written */
};

void pbx_limits_result_max(const struct pbx_limits *l, struct pbx_result_max *m);

/*
 * The caps on rich outputs (display(), matplotlib figures), each output
 * counted by its record's bytes as written (newline excluded).  They take
 * from the room main()'s value has (pbx_result_max's `bytes`), first come
 * first served: main()'s value gets what the outputs left of it, and the
 * returned files what both left of the answer limit.  Each record is at most
 * `each` bytes, all of them together at most `total`, and at most `count`
 * come back (markers of outputs left out included), holding at most `values`
 * JSON values together.  The bootstrap applies the same caps from the
 * result_bytes it is given (its _OUTPUT_MAX and _MAX_OUTPUTS).
 */
#define PBX_LIMITS_OUTPUT_MAX_BYTES (UINT64_C(4) << 20)
#define PBX_LIMITS_OUTPUTS_MAX      1000
struct pbx_outputs_max {
    uint64_t each;   /* one output's record, as written */
    uint64_t total;  /* all of them: the room of main()'s value */
    uint32_t count;  /* outputs kept, markers included */
    uint64_t values; /* JSON values in all of them */
};

void pbx_limits_outputs_max(const struct pbx_limits *l, struct pbx_outputs_max *m);

/* Fill `l` with the defaults. */
void pbx_limits_default(struct pbx_limits *l);

/*
 * Set one limit from "NAME=VALUE" text as the CLI and the environment give it,
 * e.g. "memory=128M", "wall=2.5s", "pids=20".  Returns < 0 with a message that
 * names the accepted forms on bad input.
 */
int pbx_limits_set(struct pbx_limits *l, const char *assignment, struct pbx_error **err);

/*
 * A timeout: the one reading of `timeout` in both dialects of the server,
 * of `pybox run --timeout` and of libpybox's timeout.  It sets the
 * wall-clock limit and the CPU limit alike, in whole milliseconds rounded up
 * (at least 1, so a positive timeout never reads as none; an excess below a
 * nanosecond, a float's noise, does not round up).  More than 0 and at most
 * PBX_LIMITS_TIMEOUT_MAX_S seconds; anything else, NaN and infinities
 * included, is PBX_E_INVAL with "`timeout` must be between 0 and 3600
 * seconds", and `l` is left as it was.
 */
#define PBX_LIMITS_TIMEOUT_MAX_S 3600
int pbx_limits_set_timeout(struct pbx_limits *l, double seconds, struct pbx_error **err);

/*
 * pbx_limits_set_timeout() from text as `pybox run --timeout` and the
 * environment give it: seconds ("2.5", "2.5s") or milliseconds ("300ms").
 */
int pbx_limits_set_timeout_text(struct pbx_limits *l, const char *text, struct pbx_error **err);

/* Only the check of pbx_limits_set_timeout(): for a parser that sets nothing yet. */
int pbx_limits_check_timeout(double seconds, struct pbx_error **err);

/* Refuse values outside sane bounds (zero, absurdly large). */
int pbx_limits_check(const struct pbx_limits *l, struct pbx_error **err);

/* A one-line-per-limit table for --help and doctor; caller frees. */
char *pbx_limits_describe(const struct pbx_limits *l);

#endif
