/*
 * The holder of a job's memory: a process that shares the job's address
 * space and does nothing else, so that the job's exit does not tear that
 * address space down on the request's path (the holder's exit does, after
 * the answer); and the cell's reaping that waits for every process of the
 * execution but it.
 */
#ifndef PBX_ENGINE_HOLDER_H
#define PBX_ENGINE_HOLDER_H

#include <sys/types.h>

/*
 * In the job, once it is isolated (uid, capabilities, no_new_privs,
 * seccomp) and before any user code: start the holder, a child of the cell
 * (CLONE_PARENT) in the job's address space (CLONE_VM) with no fds and
 * every signal blocked, which waits for SIGKILL.  Returns its pid, or 0
 * when it could not start (the job then runs without one).
 */
pid_t pbx__holder_start(void);

/*
 * In the cell (pid 1 of the execution's namespace), once the job is reaped:
 * SIGKILL to every process left, then reap them until `count_fd` (the
 * cell's pids.current) says that only the cell and the holder are left, the
 * holder killed, its teardown going on by itself (reap it later, with
 * pbx__holder_reap_all()).  `sigfd` is the cell's SIGCHLD signalfd.  With
 * no holder (0), or a count it cannot read, it reaps everything.
 */
void pbx__holder_reap_others(pid_t holder, int count_fd, int sigfd);

/* Reap every child left (the holder), waiting for each. */
void pbx__holder_reap_all(void);

#endif
