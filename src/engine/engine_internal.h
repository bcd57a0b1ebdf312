/*
 * The engine's parts, supervisor side, and the state each one owns.  engine.c
 * puts them together (its theory of operation says how they work at run time):
 *
 *   engine.c   start, free, describe, configuration defaults
 *   zygotes.c  the zygotes, from the supervisor's side: started on the keeper
 *              thread, referenced, replaced (zygote.c is the code inside one)
 *   pool.c     the warm pool of spare cells and its refill thread
 *   cells.c    the cells' cgroups (a pool of them for reuse), the reaper of
 *              finished cells, the remover of dead supervisors' cgroups
 *   run.c      one execution, from the request to the result
 *
 * Each part keeps its state in its own struct below, embedded in struct
 * pbx_engine; another part reads or writes it only through the part's pbx__
 * functions.  The lock order is written at struct pbx_engine.
 */
#ifndef PBX_ENGINE_ENGINE_INTERNAL_H
#define PBX_ENGINE_ENGINE_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/buf.h"
#include "common/error.h"
#include "engine/engine.h"
#include "engine/meta.h"
#include "engine/proto.h"
#include "sandbox/cgroup.h"

#define PBX_ENGINE_SETUP_TIMEOUT_MS \
    30000                          /* from the job message to STARTED, or to a spare's READY */
#define PBX_ENGINE_DRAIN_MS   2000 /* pipes still open after DONE; a cell or zygote exiting */
#define PBX_ENGINE_MAX_SPARES 64   /* spares in the pool at most */

/*
 * One zygote (zygotes.c).  The engine has a current one; a zygote that died,
 * or served its share of executions or of time, is retired: it stays alive
 * until the last execution and spare using it let go (refs), so no admitted
 * execution is lost when zygotes are replaced.
 */
struct pbx_zygote {
    pid_t pid;        /* host pid of the jail's init */
    int pidfd;        /* to notice its death without reaping it */
    int ctrl;         /* control socket */
    unsigned refs;    /* executions and spares using it, plus one while it is current */
    uint64_t execs;   /* executions handed to it */
    uint64_t born_ms; /* when it became ready (CLOCK_MONOTONIC) */
};

/*
 * The zygotes (zygotes.c).  `lock` is never held across a start: the thread
 * that starts the next current zygote sets `starting` and lets go of the
 * lock; other getters wait on `started` meanwhile.
 */
struct pbx_zygotes {
    pthread_mutex_t lock;         /* guards the fields below up to `count`, every zygote's */
                                  /* refs and execs */
    pthread_cond_t started;       /* a start ended: `starting` went false */
    struct pbx_zygote *cur;       /* the zygote new work goes to, or NULL (then maybe starting) */
    bool starting;                /* a thread is starting the next current zygote */
    bool stopping;                /* the engine is being freed: no zygote is started any more */
    atomic_ulong count;           /* zygotes started so far (read by pbx_engine_pool_stats()) */
    pthread_t keeper;             /* the parent thread of every zygote (see keeper_main) */
    bool keeper_running;          /* it exists */
    pthread_mutex_t keeper_lock;  /* guards the fields below */
    pthread_cond_t keeper_cond;   /* a request posted, or its answer */
    bool keeper_asked;            /* a zygote is wanted */
    bool keeper_answered;         /* keeper_z / keeper_err hold the answer */
    bool keeper_stop;             /* the engine is being freed */
    struct pbx_zygote *keeper_z;  /* the zygote started, or NULL */
    struct pbx_error *keeper_err; /* why not */
};

/* A cell forked and isolated ahead of demand, its job waiting for code (pool.c). */
struct pbx_spare {
    int status;                   /* our end of its status socket */
    int go;                       /* our end of its job's GO socket */
    struct pbx_cgroup_cell *cell; /* its cgroups, or NULL */
    struct pbx_zygote *z;         /* the zygote it was forked from (a reference) */
};

/* The warm pool of spare cells (pool.c). */
struct pbx_pool {
    pthread_mutex_t lock;                           /* guards the fields below up to `hits` */
    pthread_cond_t cond;                            /* wakes the refill thread */
    struct pbx_spare spares[PBX_ENGINE_MAX_SPARES]; /* ready spares, oldest first */
    unsigned n;                                     /* their count */
    unsigned making;                                /* spares being made */
    unsigned serving;    /* executions running in spares taken: refills wait for them */
    unsigned target;     /* spares wanted, between spares_min and spares_max */
    unsigned streak;     /* executions served by a spare since the last miss */
    uint64_t served_ns;  /* when an execution in a spare last ended (CLOCK_MONOTONIC) */
    bool stopping;       /* the engine is being freed */
    bool refill_running; /* the refill thread exists */
    pthread_t refill;    /* makes spares up to target */
    atomic_ulong hits;   /* executions that found a spare */
    atomic_ulong misses; /* executions that had to fork on demand */
};

/* A cell handed to the reaper (cells.c). */
struct pbx_reap;

/*
 * Cell cgroups kept for reuse (cells.c).  Creating and removing a memory
 * cgroup per execution is slow and leaves dying memcgs behind in the kernel.
 */
struct pbx_cgpool {
    pthread_mutex_t lock;          /* guards the fields below up to `created` */
    struct pbx_cgroup_cell **free; /* cell cgroups with no member left, for reuse */
    size_t nfree;                  /* their count */
    size_t cap;                    /* room in `free` */
    atomic_ulong created;          /* cell cgroups created (read by pbx_engine_pool_stats()) */
    atomic_ulong reused;           /* cell cgroups taken from the pool (likewise) */
};

/* The threads that clean up after cells and after dead supervisors (cells.c). */
struct pbx_reaper {
    pthread_t thread;           /* waits for finished cells to exit (see reaper_main) */
    bool running;               /* it exists */
    pthread_mutex_t lock;       /* guards the fields below up to `stale` */
    pthread_cond_t cond;        /* a cell handed over, or stopping */
    struct pbx_reap *head;      /* cells to wait for, oldest first */
    struct pbx_reap *tail;      /* the newest */
    bool stop;                  /* the engine is being freed: drain and end */
    pthread_t stale;            /* removes dead supervisors' cgroups (see stale_main) */
    bool stale_running;         /* it exists */
    pthread_mutex_t stale_lock; /* guards stale_stop */
    pthread_cond_t stale_cond;  /* stopping (CLOCK_MONOTONIC) */
    bool stale_stop;            /* the engine is being freed */
};

/*
 * The engine: one jail and what serves it, supervisor side.
 *
 * Lock order.  The engine's locks, each in its part's struct:
 *
 *   pool.lock            -> zygotes.lock
 *   zygotes.lock         (a leaf: nothing is taken while holding it)
 *   zygotes.keeper_lock  (a leaf)
 *   cgpool.lock          (a leaf)
 *   reaper.lock          (a leaf)
 *   reaper.stale_lock    (a leaf)
 *
 * The one pair that nests: pbx__pool_take() and drop_stale_spares() (pool.c) ask
 * pbx__zygotes_fresh() about a spare while holding pool.lock, so zygotes.lock
 * may be taken under pool.lock, never the other way round.  No other two
 * nest: a thread holding any other lock takes none; everything else that
 * needs two parts (releasing a spare, giving back cgroups, putting a zygote
 * reference) is done after letting go of the first lock.
 *
 * No lock is held across slow work, that is, anything another thread might
 * wait on for long: starting a zygote (up to START_TIMEOUT_MS; see struct
 * pbx_zygotes), making or releasing a spare, destroying a zygote, waiting
 * for a cell to exit, creating, reusing or removing cgroups, sending a job.
 * A holder reads and writes the fields its lock guards, signals, and at most
 * polls a zygote's pidfd without waiting; condition waits let go of their
 * lock.  So pbx_engine_pool_stats(), which takes pool.lock, answers at once
 * whatever the engine is doing (tests/unit/test_engine.c proves it during a
 * zygote's start).
 */
struct pbx_engine {
    struct pbx_engine_config cfg; /* as started, with the jail ids in force */
    bool uid_picked;              /* the default jail ids did not fit: these were picked */
    struct pbx_cgroups *cg;       /* cell cgroups, NULL when none is usable */
    bool have_memcg;              /* a memory controller is in force */
    bool have_pidscg;             /* a pids controller is in force */
    atomic_uint_fast64_t next;    /* execution ids (spares' and cgroups' too) */
    struct pbx_zygotes zygotes;   /* zygotes.c */
    struct pbx_pool pool;         /* pool.c */
    struct pbx_cgpool cgpool;     /* cells.c */
    struct pbx_reaper reaper;     /* cells.c */
    int stop_fd;                  /* eventfd: readable once pbx_engine_stop_executions() ran */
};

/*
 * Start one of the engine's own threads with every signal blocked: process
 * signals (SIGTERM, SIGINT) are for the program's threads, never the
 * engine's.  Returns whether it started.
 */
bool pbx__engine_start_thread(pthread_t *t, void *(*fn)(void *), void *arg);

/* zygotes.c */

/* Set up the zygotes' state and start the keeper thread. */
void pbx__zygotes_init(struct pbx_engine *e);

/*
 * A reference to the current zygote, replacing it first when it died or is
 * due for recycling (a fresh zygote also means a fresh str hash seed);
 * `count_exec` counts an execution handed to it.  NULL with *err set when no
 * zygote could be started.  The caller gives it back with pbx__zygotes_put().
 */
struct pbx_zygote *pbx__zygotes_get(struct pbx_engine *e, bool count_exec, struct pbx_error **err);

/* Drop a reference (NULL is fine); the last one to a retired zygote destroys it. */
void pbx__zygotes_put(struct pbx_engine *e, struct pbx_zygote *z);

/* Whether a spare of `z` may still serve: its zygote current, alive and not yet due. */
bool pbx__zygotes_fresh(struct pbx_engine *e, const struct pbx_zygote *z);

/* Count an execution handed to `z` (a reference the caller holds), toward its recycling. */
void pbx__zygotes_count_exec(struct pbx_engine *e, struct pbx_zygote *z);

/*
 * Start a new zygote and make it current, retiring the current one as
 * recycling does (pbx_engine_reload()).  Until the new one is ready, work
 * goes to the old one; a zygote that does not start leaves it current.
 * Returns 0, or < 0 with *err.
 */
int pbx__zygotes_replace(struct pbx_engine *e, struct pbx_error **err);

/*
 * Whether a cell that vanished before starting its job went down with its
 * zygote: a dying zygote first kills its whole pid namespace, so give it a
 * moment (PBX_ENGINE_DRAIN_MS) to finish dying.
 */
bool pbx__zygotes_dying(const struct pbx_zygote *z);

/*
 * For pbx_engine_free(): retire the current zygote and kill it now, so a
 * spare being made sees its cell die and gives up.  Returns it with the
 * engine's reference, which the caller puts once the spares are released.
 */
struct pbx_zygote *pbx__zygotes_retire(struct pbx_engine *e);

/* End the keeper thread (every zygote dies with it). */
void pbx__zygotes_stop(struct pbx_engine *e);

/* pool.c */

/* Set up the pool and, when spares_max > 0, start the refill thread (clamping spares_max). */
void pbx__pool_start(struct pbx_engine *e);

/*
 * Take a ready spare for an execution with `limits`: true with *sp filled
 * (the caller owns its status socket, cgroups and zygote reference).  Counts
 * a hit or a miss, and adapts the target.
 */
bool pbx__pool_take(struct pbx_engine *e, const struct pbx_limits *limits, struct pbx_spare *sp);

/*
 * An execution that took a spare is over: when no other runs, the refill
 * thread may make spares again (it waits while executions run, so as not
 * to compete with them for the CPUs, unless the pool is empty).
 */
void pbx__pool_served(struct pbx_engine *e);

/* Wake the refill thread: spares of a retired zygote go, and new ones are made, now. */
void pbx__pool_wake(struct pbx_engine *e);

/* For pbx_engine_free(): tell the refill thread to end, before the zygote is killed. */
void pbx__pool_stopping(struct pbx_engine *e);

/* Then wait for the refill thread, and release every spare. */
void pbx__pool_release(struct pbx_engine *e);

/* cells.c */

/*
 * Set up the cgroup pool and start the reaper and, when a dead supervisor's
 * cgroups are still waiting, the thread that removes them.  e->cg is set.
 */
void pbx__cells_init(struct pbx_engine *e);

/* Create cgroups for the first cells now, rather than on the first requests' path. */
void pbx__cells_prefill(struct pbx_engine *e);

/*
 * Cgroups for cell `id` with the limits `lim`: from the pool, or created.
 * The caller owns *out, and gives it back with pbx__cells_put() or
 * pbx__cells_drop().
 */
int pbx__cells_get(struct pbx_engine *e, uint64_t id, const struct pbx_limits *lim,
                   struct pbx_cgroup_cell **out, struct pbx_error **err);

/*
 * Give back a cell's cgroups (ownership passes; NULL is fine): pooled when
 * nothing is left in them, else removed.  Only for a cell that has joined
 * them or never will: a pooled cgroup must not be joined later by anyone but
 * the cell it is handed to next.
 */
void pbx__cells_put(struct pbx_engine *e, struct pbx_cgroup_cell *cell);

/* Remove a cell's cgroups (ownership passes; NULL is fine), killing what is left in them. */
void pbx__cells_drop(struct pbx_cgroup_cell *cell);

/*
 * Hand a cell that reported to the reaper, which takes `pidfd` and `cell`:
 * it waits for the cell to exit, then gives its cgroups back.  False when
 * there is no reaper; the caller keeps both and waits itself.
 */
bool pbx__cells_reap_later(struct pbx_engine *e, int pidfd, struct pbx_cgroup_cell *cell);

/* Wait for every cell handed over, then end the reaper. */
void pbx__cells_stop_reaper(struct pbx_engine *e);

/* Remove the pooled cgroups and end the remover of stale ones (after pbx__cells_stop_reaper()). */
void pbx__cells_release(struct pbx_engine *e);

/* ---- run.c: one execution's flight, which a session's call shares ---- */

/* The supervisor's view of one execution in flight. */
struct pbx_flight {
    int out_r;                  /* stdout read end, -1 at EOF */
    int err_r;                  /* stderr read end */
    int meta_r;                 /* records read end */
    int status;                 /* status socket */
    int job_pidfd;              /* from STARTED, -1 before */
    int cell_pidfd;             /* from STARTED */
    struct pbx_buf out;         /* kept stdout */
    struct pbx_buf errb;        /* kept stderr */
    struct pbx_buf meta;        /* records */
    struct pbx_meta parsed;     /* the records parsed as they came */
    size_t shown;               /* outputs handed to req->on_display so far */
    uint64_t got[3];            /* by enum pbx_stream: bytes read from stdout, stderr */
    uint64_t given[3];          /* and of those, handed to req->on_output (or dropped) */
    struct pbx_proto_done done; /* the cell's report */
    bool started;               /* STARTED received */
    bool finished;              /* DONE received */
    bool failed;                /* FAILED received */
    bool cell_gone;             /* the status socket reached EOF */
    bool backstop;              /* the supervisor had to kill */
    bool cancelled;             /* req->cancel_fd became readable */
    bool session;               /* a session's call: a cancel interrupts it, on `status` */
    int stop_fd;                /* the engine's stop_fd: readable, the cell is killed (-1: none) */
    bool stopped;               /* it was: the engine stops every execution */
    bool stop_sent_started;     /* the stop's kill reached the started job's pids */
    uint64_t started_ns;        /* when STARTED came (CLOCK_MONOTONIC ns) */
    uint64_t done_ns;           /* when DONE came */
    uint64_t code_done_ns;      /* when the job's done record (its code's end) was read */
};

/* What the memory cgroup of a cell counted, read before the cgroup may be reused. */
struct pbx_cell_memory {
    uint64_t oom_kills; /* OOM kills during this execution */
    uint64_t peak;      /* peak use in bytes, 0 without a memory cgroup */
};

/* Whether `req` is one the engine takes: 0, or < 0 with *err (PBX_E_INVAL, PBX_E_TOO_LARGE). */
int pbx__run_check(const struct pbx_exec_request *req, struct pbx_error **err);

/* A sealed memfd holding `len` bytes of `data`: the fd, or < 0 with *err. */
int pbx__run_sealed_memfd(const char *name, const void *data, size_t len, struct pbx_error **err);

/* A pipe, its read end non-blocking, both O_CLOEXEC.  0, or < 0 with *err. */
int pbx__run_pipe_pair(int *rd, int *wr, struct pbx_error **err);

/* An empty flight for `req`: no fds, buffers capped by its limits. */
void pbx__run_flight_init(struct pbx_flight *f, const struct pbx_exec_request *req);

/*
 * Watch the flight until the cell reports and the pipes are drained (or the
 * backstop gives up): output kept, records parsed as they come, cancel_fd
 * honoured.  A session's call sets f->started first: its deadline starts at once.
 */
void pbx__run_flight(struct pbx_flight *f, const struct pbx_exec_request *req,
                     struct pbx_cgroup_cell *cell);

/* The memory counts of `cell` (NULL: none). */
void pbx__run_cell_memory(struct pbx_cgroup_cell *cell, struct pbx_cell_memory *mem);

/* The result of the flight, from what the cell reported and the records said. */
void pbx__run_compose(struct pbx_flight *f, const struct pbx_exec_request *req,
                      const struct pbx_cell_memory *mem, int out_fd, struct pbx_exec_result *res);

/* Close the flight's fds and free its buffers. */
void pbx__run_flight_close(struct pbx_flight *f);

/* Ask the session's cell on `status` for a KeyboardInterrupt in its running call. */
void pbx__run_interrupt(int status);

#endif
