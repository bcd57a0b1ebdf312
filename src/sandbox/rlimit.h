/* Resource limits of a job process. */
#ifndef PBX_SANDBOX_RLIMIT_H
#define PBX_SANDBOX_RLIMIT_H

#include <stdbool.h>

#include "policy/limits.h"

/*
 * Apply CPU, FSIZE, NOFILE, CORE=0, STACK and MEMLOCK limits to the calling
 * process; with `fallback` (no usable cgroup controller) also AS for memory
 * and NPROC for processes.  Async-signal-safe.  Returns 0 or -errno.
 */
int pbx_rlimit_apply(const struct pbx_limits *l, bool fallback);

#endif
