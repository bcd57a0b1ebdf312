/*
 * The cell's seccomp filter.  It is built once, in the zygote, with libseccomp
 * and exported as a classic BPF program; every job installs that program with
 * one prctl() after fork, without allocating and without libseccomp.
 */
#ifndef PBX_SANDBOX_SECCOMP_H
#define PBX_SANDBOX_SECCOMP_H

#include <linux/filter.h>
#include <stddef.h>

#include "common/error.h"

struct pbx_seccomp_prog {
    struct sock_filter *filter; /* owned; NULL before build */
    unsigned short len;         /* instructions in filter */
};

/*
 * Build the deny-list filter documented in docs/design/threat-model.md into
 * *prog (caller-allocated, released with pbx__seccomp_release()).
 */
int pbx_seccomp_build(struct pbx_seccomp_prog *prog, struct pbx_error **err);

/*
 * Install *prog on the calling thread (and, with TSYNC, its process), after
 * setting no_new_privs.  Async-signal-safe: no allocation.  Returns 0 or -errno.
 */
int pbx_seccomp_install(const struct pbx_seccomp_prog *prog);

void pbx__seccomp_release(struct pbx_seccomp_prog *prog);

#endif
