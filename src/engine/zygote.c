/*
 * The zygote itself: the code that runs inside the jail.  (Its supervisor's
 * side, which starts it and sends it work, is zygotes.c.)
 *
 * Theory of operation: the supervisor clone()s a child into new user, mount,
 * pid, net, ipc, uts and cgroup namespaces, maps uid/gid 0 of the new user
 * namespace to an unprivileged host range, and the child execs the pybox
 * binary as "pybox-zygote __zygote FLAGS" with an empty environment (only
 * what Python needs) and one fd, the control socket (fd 3, SOCK_SEQPACKET).
 * Being freshly exec'd, the zygote holds none of the supervisor's memory: no
 * key, no environment, no database handle.
 *
 * The zygote is pid 1 of the jail's pid namespace.  It pivot_roots into the
 * read-only Python view (rootfs.c), initialises libpython once (preloading
 * numpy, PIL, pandas and matplotlib when asked, with a scratch tmpfs on /tmp
 * meanwhile), builds the seccomp filter once, fills the holes of its malloc
 * heap so that cells allocate from pages of their own, maps its anonymous
 * memory with huge pages so that a fork copies few page-table entries
 * (hugepage.c, which also gives CPython's arenas one region), reports READY,
 * then loops: each message on the control socket is one execution or one
 * spare cell, for which it forks a cell (cell.c) and goes back to waiting.
 * It never runs user code.  When the control socket closes the zygote exits,
 * and the kernel kills every process of the jail with it.
 *
 * Processes: supervisor -> zygote (jail pid 1) -> cell (one per execution,
 * pid 1 of its own pid namespace) -> job (the user's code, the cell's child).
 */
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <poll.h>
#include <sched.h>
#include <unistd.h>

#include "bootstrap_py.h"
#include "common/cleanup.h"
#include "common/error.h"
#include "engine/cell.h"
#include "engine/hugepage.h"
#include "engine/prefault.h"
#include "engine/proto.h"
#include "engine/zygote.h"
#include "policy/policy.h"
#include "sandbox/rootfs.h"
#include "sandbox/seccomp.h"
#include "common/banned.h"

static _Noreturn void fail(int stage, struct pbx_error *err)
{
    pbx__proto_send_failed(PBX_ZYGOTE_CTRL_FD, stage, err ? err->code : 0,
                           err ? err->msg : "failed");
    _exit(1);
}

static _Noreturn void fail_python(const char *what)
{
    char msg[PBX_PROTO_MSG_MAX];
    PyObject *type = NULL;
    PyObject *value = NULL;
    PyObject *tb = NULL;
    PyObject *str = NULL;
    const char *text = NULL;

    PyErr_Fetch(&type, &value, &tb);
    if (value != NULL)
        str = PyObject_Str(value);
    if (str != NULL)
        text = PyUnicode_AsUTF8(str);
    snprintf(msg, sizeof(msg), "%s: %s", what, text ? text : "unknown Python error");
    pbx__proto_send_failed(PBX_ZYGOTE_CTRL_FD, PBX_STAGE_PYTHON, 0, msg);
    _exit(1);
}

static void init_python(void)
{
    PyPreConfig pre;
    PyConfig cfg;
    PyStatus st;

    /*
     * SIGINT at its default, whatever the supervisor inherited (a server started
     * in the background of a shell ignores it): Python installs its
     * KeyboardInterrupt handler only over the default, and a session's interrupt
     * and timeout depend on it.  The zygote has no terminal: nothing else sends it.
     */
    {
        struct sigaction dfl = {.sa_handler = SIG_DFL};

        sigemptyset(&dfl.sa_mask);
        (void)sigaction(SIGINT, &dfl, NULL);
    }
    pbx__hugepage_arenas_install();
    PyPreConfig_InitIsolatedConfig(&pre);
    pre.utf8_mode = 1;
    st = Py_PreInitialize(&pre);
    if (PyStatus_Exception(st))
        fail_python("Python pre-initialisation");
    PyConfig_InitIsolatedConfig(&cfg);
    /* Behave like the python3 command: SIGPIPE and SIGXFSZ ignored, KeyboardInterrupt. */
    cfg.install_signal_handlers = 1;
    cfg.write_bytecode = 0;
    cfg.site_import = 1; /* Debian's site adds /usr/lib/python3/dist-packages */
    cfg.user_site_directory = 0;
    cfg.parse_argv = 0;
    st = PyConfig_SetString(&cfg, &cfg.program_name, L"/usr/bin/python3");
    if (!PyStatus_Exception(st))
        st = PyConfig_SetString(&cfg, &cfg.executable, L"/usr/bin/python3");
    if (!PyStatus_Exception(st))
        st = PyConfig_SetString(&cfg, &cfg.home, L"/usr");
    if (!PyStatus_Exception(st))
        st = Py_InitializeFromConfig(&cfg);
    PyConfig_Clear(&cfg);
    if (PyStatus_Exception(st)) {
        char msg[PBX_PROTO_MSG_MAX];

        snprintf(msg, sizeof(msg), "Python initialisation: %s", st.err_msg ? st.err_msg : "failed");
        pbx__proto_send_failed(PBX_ZYGOTE_CTRL_FD, PBX_STAGE_PYTHON, 0, msg);
        _exit(1);
    }
}

/*
 * What a preloading zygote imports, so that no execution pays for it (bench/preload.py
 * measures each candidate: the import time an execution saves against the memory an idle warm
 * cell adds and the zygote's start time).  matplotlib.pyplot brings the font list, built once
 * here from the fonts the jail sees (see with_scratch_tmp()), and the Agg backend is what every
 * figure is drawn with (MPLBACKEND=Agg in the zygote's environment, zygotes.c).
 */
static const char *const default_preload[] = {
    "numpy",
    "PIL.Image",
    "PIL.ImageDraw",
    "PIL.ImageFilter",
    "pandas",
    "matplotlib.pyplot",
    "matplotlib.backends.backend_agg",
    NULL,
};

static void append_str(PyObject *list, const char *s, Py_ssize_t len)
{
    PyObject *o = PyUnicode_FromStringAndSize(s, len);

    if (o == NULL || PyList_Append(list, o) < 0)
        fail_python("build a list of module names");
    Py_DECREF(o);
}

/*
 * The modules to preload: none without PBX_ZYGOTE_PRELOAD, else `names` (space-separated,
 * PYBOX_PRELOAD_MODULES passed on by zygotes.c) when given, else default_preload.  New reference.
 */
static PyObject *preload_list(int preload, const char *names)
{
    PyObject *list = PyList_New(0);

    if (list == NULL)
        fail_python("build the preload list");
    if (!preload)
        return list;
    if (names == NULL) {
        for (size_t i = 0; default_preload[i] != NULL; i++)
            append_str(list, default_preload[i], (Py_ssize_t)strlen(default_preload[i]));
        return list;
    }
    while (*names != '\0') {
        size_t len = strcspn(names, " ");

        if (len > 0)
            append_str(list, names, (Py_ssize_t)len);
        names += len;
        names += strspn(names, " ");
    }
    return list;
}

/* Load the embedded bootstrap as module _pybox, prepare it, return _pybox.run. */
static PyObject *load_bootstrap(PyObject *preload, PyObject **module)
{
    PyObject *code;
    PyObject *mod;
    PyObject *allowed;
    PyObject *ret;
    PyObject *run;

    code = Py_CompileString((const char *)pbx_bootstrap_py, "<pybox>", Py_file_input);
    if (code == NULL)
        fail_python("compile the bootstrap");
    mod = PyImport_ExecCodeModule("_pybox", code);
    Py_DECREF(code);
    if (mod == NULL)
        fail_python("load the bootstrap");
    allowed = PyList_New(0);
    for (size_t i = 0; pbx_policy_default_modules[i] != NULL; i++) {
        PyObject *s = PyUnicode_FromString(pbx_policy_default_modules[i]);

        PyList_Append(allowed, s);
        Py_DECREF(s);
    }
    ret = PyObject_CallMethod(mod, "prepare", "OO", preload, allowed);
    Py_DECREF(allowed);
    if (ret == NULL)
        fail_python("prepare the bootstrap");
    Py_DECREF(ret);
    run = PyObject_GetAttrString(mod, "run");
    if (run == NULL)
        fail_python("find the bootstrap's run()");
    *module = mod;
    return run;
}

/*
 * The jail's root is read-only and the zygote has no writable directory, but matplotlib's
 * import wants one for its config and cache directory (MPLCONFIGDIR=/tmp): without it, it makes
 * a temporary one and warns, and with no writable temporary directory at all it fails.  So the
 * preload runs with a small tmpfs on /tmp, where matplotlib writes the font list it builds, and
 * the tmpfs is detached before any cell exists.  What stays is in memory: the font list, and
 * "/tmp" as matplotlib's cached directory, which in every cell is that cell's own writable
 * /tmp (rootfs.c, pbx_rootfs_cell_mounts()).  Nothing the preload wrote reaches a cell.
 */
static void with_scratch_tmp(int preload, PyObject *modules, PyObject **run, PyObject **module)
{
    struct pbx_error *err = NULL;

    if (preload && mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                         "size=1m,nr_inodes=64,mode=01777") < 0) {
        pbx_error_set(&err, errno, "mount the preload's scratch /tmp");
        fail(PBX_STAGE_ROOTFS, err);
    }
    *run = load_bootstrap(modules, module);
    if (preload && umount2("/tmp", MNT_DETACH) < 0) {
        pbx_error_set(&err, errno, "detach the preload's scratch /tmp");
        fail(PBX_STAGE_ROOTFS, err);
    }
}

/*
 * Fill the holes of the zygote's malloc heap, and keep them filled.  Importing leaves free
 * chunks between the blocks that stay (docstrings, dict tables, type objects: CPython mallocs
 * everything over 512 bytes), and a cell's malloc would carve its blocks out of them, copying
 * a shared page for every one: with pandas preloaded, 390 pages (1.6 MB) of an idle warm cell's
 * private memory, from 320 kB of holes.  Allocated here and never freed, the holes cost the
 * zygote nothing it does not hold already, and a cell's blocks come from the top of the heap,
 * its own pages.  Each request takes the best fit among the free chunks, or the top when none
 * fits: sizes go down from 1 MiB and each is taken until it comes from the top (or from mmap),
 * which mallinfo2() tells.  Only glibc's malloc keeps this account: under a sanitizer's
 * allocator it reads zero and nothing is done.
 */
static void plug_malloc_holes(void)
{
    struct mallinfo2 mi = mallinfo2();
    size_t holes = mi.fordblks - mi.keepcost;
    size_t kept = 0;

    if (mi.arena == 0)
        return;
    for (size_t size = (size_t)1 << 20; size >= 32 && kept < holes; size = size * 3 / 4) {
        for (;;) {
            struct mallinfo2 before = mallinfo2();
            void *p = malloc(size);
            struct mallinfo2 after = mallinfo2();

            if (p == NULL || after.keepcost < before.keepcost || after.hblkhd > before.hblkhd ||
                after.arena > before.arena) {
                free(p);
                break;
            }
            kept += size;
            if (kept >= holes)
                break;
        }
    }
}

static void close_fds(int *fds, int n)
{
    for (int i = 0; i < n; i++) {
        if (fds[i] >= 0)
            close(fds[i]);
        fds[i] = -1;
    }
}

/* Receive one job: returns 1 with the job and fds, 0 on EOF, -1 on a bad message (dropped). */
static int receive_job(int ctrl, struct pbx_proto_job *job, int *fds, int *nfds)
{
    ssize_t n = pbx__proto_recv(ctrl, job, sizeof(*job), fds, PBX_PROTO_MAX_FDS, nfds, 0);

    if (n == 0 || (n < 0 && n != -EAGAIN && n != -EPROTO))
        return 0;
    if (n < 0 || !pbx__proto_job_valid(job, (size_t)n, *nfds) ||
        (job->kind != PBX_JOB_RUN && job->kind != PBX_JOB_SPARE && job->kind != PBX_JOB_SESSION)) {
        if (*nfds > PBX_FD_STATUS)
            pbx__proto_send_failed(fds[PBX_FD_STATUS], PBX_STAGE_FORK, EPROTO,
                                   "malformed job message");
        close_fds(fds, *nfds);
        return -1;
    }
    return 1;
}

_Noreturn void pbx_zygote_main(int argc, char **argv)
{
    struct pbx_error *err = NULL;
    struct pbx_seccomp_prog prog = {0};
    struct pbx_zygote_state zs;
    struct pbx_proto_done ready;
    char *pages_at = NULL;
    int preload = argc > 2 && (strtol(argv[2], &pages_at, 10) & PBX_ZYGOTE_PRELOAD);
    unsigned long pages = argc > 2 && *pages_at == ':' ? strtoul(pages_at + 1, NULL, 10) : 0;
    PyObject *modules;
    PyObject *module;
    PyObject *run;
    sigset_t mask;
    struct pbx_hugepage_stats collapsed;
    int maps;
    int proc;
    int pidns;
    int sfd;

    /* Read by the loader and malloc at exec (see zygotes.c); nothing later needs them. */
    unsetenv("LD_BIND_NOW");
    unsetenv("GLIBC_TUNABLES");
    /* No controlling terminal: a Ctrl-C meant for the CLI never reaches the jail. */
    (void)setsid();
    (void)prctl(PR_SET_NAME, "pybox-zygote", 0, 0, 0);
    if (sethostname("pybox", 5) < 0) {
        pbx_error_set(&err, errno, "sethostname");
        fail(PBX_STAGE_NAMESPACE, err);
    }
    /* Our own pid namespace, to return to after creating each cell's (no /proc later). */
    pidns = open("/proc/self/ns/pid", O_RDONLY | O_CLOEXEC);
    if (pidns < 0) {
        pbx_error_set(&err, errno, "open /proc/self/ns/pid");
        fail(PBX_STAGE_NAMESPACE, err);
    }
    maps = pbx__hugepage_open_maps();
    proc = pbx__prefault_open_proc();
    if (pbx_rootfs_enter(&err) < 0)
        fail(PBX_STAGE_ROOTFS, err);
    init_python();
    modules = preload_list(preload, argc > 3 ? argv[3] : NULL);
    with_scratch_tmp(preload, modules, &run, &module);
    Py_DECREF(modules);
    zs.run_fn = run;
    zs.module = module;
    pbx__py_forkers_take(&zs.forkers);
    if (pbx_seccomp_build(&prog, &err) < 0)
        fail(PBX_STAGE_SECCOMP, err);
    zs.seccomp = &prog;

    /* SIGCHLD through a signalfd: reap cells (and orphans of the jail, as its init). */
    sigemptyset(&mask);
    sigaddset(&mask, SIGCHLD);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);

    /* Last before READY: nothing the zygote allocates later may take the holes back. */
    plug_malloc_holes();
    /* Then what the cells will share, in huge pages: a fork copies one entry per 2 MiB. */
    pbx__hugepage_collapse(maps, &collapsed);
    /* And which pages a run writes after a spare's dry run, for spares to copy ahead. */
    (void)pbx__prefault_learn(
        &zs, proc, pages < PBX_PREFAULT_MAX_PAGES ? (size_t)pages : PBX_PREFAULT_MAX_PAGES);
    pbx__proto_done_init(&ready, PBX_PROTO_READY);
    if (pbx__proto_send_done(PBX_ZYGOTE_CTRL_FD, &ready, NULL, 0) < 0)
        _exit(1);

    for (;;) {
        struct pollfd pfd[2] = {
            {.fd = PBX_ZYGOTE_CTRL_FD, .events = POLLIN},
            {.fd = sfd, .events = POLLIN},
        };
        struct pbx_proto_job job;
        int fds[PBX_PROTO_MAX_FDS];
        int nfds = 0;
        int r;
        pid_t pid;

        while (waitpid(-1, NULL, WNOHANG) > 0)
            ;
        if (poll(pfd, sfd >= 0 ? 2 : 1, sfd >= 0 ? -1 : 200) < 0 && errno != EINTR)
            _exit(1);
        if (sfd >= 0 && (pfd[1].revents & POLLIN)) {
            struct signalfd_siginfo si;

            while (read(sfd, &si, sizeof(si)) > 0)
                ;
        }
        if (!(pfd[0].revents & (POLLIN | POLLHUP | POLLERR)))
            continue;
        r = receive_job(PBX_ZYGOTE_CTRL_FD, &job, fds, &nfds);
        if (r == 0)
            _exit(0); /* the supervisor is gone: the jail goes with us */
        if (r < 0)
            continue;
        /* Each cell is pid 1 of a pid namespace of its own. */
        if (unshare(CLONE_NEWPID) < 0) {
            pbx__proto_send_failed(fds[PBX_FD_STATUS], PBX_STAGE_NAMESPACE, errno,
                                   "unshare a pid namespace");
            close_fds(fds, nfds);
            continue;
        }
        PyOS_BeforeFork();
        pid = fork();
        if (pid == 0) {
            close(PBX_ZYGOTE_CTRL_FD);
            close(pidns);
            if (sfd >= 0)
                close(sfd);
            sigprocmask(SIG_UNBLOCK, &mask, NULL);
            if (job.kind == PBX_JOB_SPARE)
                pbx__cell_spare_main(&zs, &job, fds, nfds);
            if (job.kind == PBX_JOB_SESSION)
                pbx__session_cell_main(&zs, &job, fds, nfds);
            pbx__cell_main(&zs, &job, fds, nfds);
        }
        PyOS_AfterFork_Parent();
        if (pid < 0)
            pbx__proto_send_failed(fds[PBX_FD_STATUS], PBX_STAGE_FORK, errno, "fork the cell");
        close_fds(fds, nfds);
        /* Back to our own namespace for children: unshare would refuse a second time. */
        if (setns(pidns, CLONE_NEWPID) < 0)
            _exit(1);
    }
}
