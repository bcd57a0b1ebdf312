/*
 * The at-fork hook lists live in the interpreter state, which only CPython's
 * internal headers describe; they come with python3-dev and match the
 * libpython they are installed with (see pyfork.h for why).
 */
#define Py_BUILD_CORE 1
#include <Python.h>
#include <internal/pycore_interp.h>

#include "engine/pyfork.h"
#include "common/banned.h"

void pbx__py_forkers_take(struct pbx_py_forkers *f)
{
    PyInterpreterState *interp = PyInterpreterState_Get();

    f->before = interp->before_forkers;
    f->parent = interp->after_forkers_parent;
    f->child = interp->after_forkers_child;
    interp->before_forkers = NULL;
    interp->after_forkers_parent = NULL;
    interp->after_forkers_child = NULL;
}

void pbx__py_forkers_restore(const struct pbx_py_forkers *f)
{
    PyInterpreterState *interp = PyInterpreterState_Get();

    /* The references move back: the zygote's copy in this process is never used again. */
    interp->before_forkers = f->before;
    interp->after_forkers_parent = f->parent;
    interp->after_forkers_child = f->child;
}
