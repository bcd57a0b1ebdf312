/*
 * Cleanup-attribute helpers: scope-bound ownership of heap memory, file
 * descriptors and child processes.  Rules (see docs/design/error-handling.md):
 * initialise every cleanup variable at its declaration, transfer ownership
 * only with steal_pointer()/steal_fd(), and never mix these with goto-unwinding
 * in one function.
 */
#ifndef PBX_COMMON_CLEANUP_H
#define PBX_COMMON_CLEANUP_H

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static inline void cleanup_freep(void *p)
{
    free(*(void **)p);
}

static inline void cleanup_closep(int *fd)
{
    if (*fd >= 0) {
        int saved = errno; /* keep the errno a failing caller is returning */
        (void)close(*fd);
        errno = saved;
    }
}

/* Kill and reap a child that was never handed off (an error path after fork). */
static inline void cleanup_pidp(pid_t *pid)
{
    if (*pid > 0) {
        int saved = errno;
        (void)kill(*pid, SIGKILL);
        while (waitpid(*pid, NULL, 0) < 0 && errno == EINTR)
            ;
        errno = saved;
    }
}

#define cleanup_free  __attribute__((cleanup(cleanup_freep)))
#define cleanup_close __attribute__((cleanup(cleanup_closep)))
#define cleanup_pid   __attribute__((cleanup(cleanup_pidp)))

/* Transfer ownership out of a cleanup_free variable. */
#define steal_pointer(pp) ((__typeof__(*(pp)))pbx__steal_pointer(pp))
static inline void *pbx__steal_pointer(void *pp)
{
    void **ptr = (void **)pp;
    void *ref = *ptr;

    *ptr = NULL;
    return ref;
}

/* Transfer ownership out of a cleanup_close variable. */
static inline int steal_fd(int *fd)
{
    int ret = *fd;

    *fd = -1;
    return ret;
}

#endif
