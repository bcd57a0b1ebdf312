/*
 * CPython's at-fork hooks, set aside in the zygote and given back to each job.
 *
 * os.register_at_fork() hooks (random reseeds, threading and logging reset
 * their locks) exist for processes that fork while other threads may hold
 * locks.  The zygote never has a second thread, and every cell and job forked
 * from it used to run those hooks all the same: a third of a job's
 * copy-on-write faults before its code arrived.  So the zygote takes the hook
 * lists out of the interpreter once everything is imported, forks without
 * them, and each job puts them back right after PyOS_AfterFork_Child(): the
 * user's own code forks exactly as under python3.  What the random hook did
 * the bootstrap does itself (it reseeds random and numpy from the kernel).
 */
#ifndef PBX_ENGINE_PYFORK_H
#define PBX_ENGINE_PYFORK_H

struct pbx_py_forkers {
    void *before; /* PyObject *: the interpreter's before_forkers list, or NULL */
    void *parent; /* after_forkers_parent */
    void *child;  /* after_forkers_child */
};

/* In the zygote, holding the GIL: move the hook lists out of the interpreter into *f. */
void pbx__py_forkers_take(struct pbx_py_forkers *f);

/* In a job, holding the GIL, after PyOS_AfterFork_Child(): put them back. */
void pbx__py_forkers_restore(const struct pbx_py_forkers *f);

#endif
