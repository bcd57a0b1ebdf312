/* The zygote: the jail's init process, embedding libpython. */
#ifndef PBX_ENGINE_ZYGOTE_H
#define PBX_ENGINE_ZYGOTE_H

#include "engine/pyfork.h"

#include "sandbox/seccomp.h"

/* The hidden argv[1] that makes the pybox binary act as a zygote. */
#define PBX_ZYGOTE_ARG "__zygote"
/* The control socket's fd number in the zygote. */
#define PBX_ZYGOTE_CTRL_FD 3

enum pbx_zygote_flags {
    PBX_ZYGOTE_PRELOAD = (1 << 0), /* import numpy, PIL, pandas, matplotlib before serving */
};

/*
 * The zygote's main: argv is {"pybox-zygote", PBX_ZYGOTE_ARG, "<flags>:<pages>", [modules]}:
 * enum pbx_zygote_flags, and how many pages each spare copies before its code arrives.
 * Never returns.
 */
_Noreturn void pbx_zygote_main(int argc, char **argv);

/* Handles the zygote gives each cell (all inherited across fork). */
struct pbx_zygote_state {
    const struct pbx_seccomp_prog *seccomp; /* the job filter */
    void *run_fn;                           /* PyObject *: _pybox.run */
    void *module;                           /* PyObject *: _pybox */
    struct pbx_py_forkers forkers;          /* CPython's at-fork hooks, set aside */
};

#endif
