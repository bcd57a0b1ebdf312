/*
 * The holder of a job's memory, and the reaping that spares it.
 *
 * Theory of operation: a job is a fork of the zygote's interpreter, and the
 * exit of such a process tears down its whole address space (every page
 * table the fork copied, every page's reference dropped) before its files
 * close and its parent hears of it: on this hardware milliseconds, most of
 * what a short execution costs after its code has run.  The kernel tears an
 * address space down when its last user leaves, so a second process in the
 * job's address space moves that work: the job's exit only drops its
 * reference, and the holder, killed once the job is gone, pays the teardown
 * in its own exit while the cell collects the files and reports.
 *
 * The holder is started by the job after the job's isolation is complete,
 * so it has exactly the job's confinement; it closes every fd it got (so it
 * holds no end of the output pipes), blocks every signal (so nothing but
 * SIGKILL reaches it, and it never returns to code user code could have
 * written) and waits in pause().  It is a child of the cell (CLONE_PARENT),
 * which knows its pid from the job before any user code runs.
 *
 * After the job is reaped, the cell kills everything left and reaps until
 * its cgroup's pids.current counts only itself and the holder: every other
 * process is then dead and reaped, its files closed.  The holder, killed,
 * can run no more code; the cell reaps it after its report.
 */
#include <errno.h>
#include <linux/futex.h>
#include <poll.h>
#include <sched.h>
#include <sys/prctl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "engine/holder.h"
#include "common/banned.h"

/* The holder's stack: it only makes system calls. */
static char holder_stack[16384] __attribute__((aligned(64)));
/* Set by the holder once its fds are closed; the job waits for it. */
static atomic_int holder_ready;

static int holder_main(void *arg)
{
    sigset_t all;

    (void)arg;
    syscall(SYS_prctl, PR_SET_NAME, "pybox-holder", 0, 0, 0);
    sigfillset(&all);
    syscall(SYS_rt_sigprocmask, SIG_SETMASK, &all, NULL, sizeof(uint64_t));
    syscall(SYS_close_range, 0, ~0U, 0);
    atomic_store(&holder_ready, 1);
    syscall(SYS_futex, &holder_ready, FUTEX_WAKE, 1, NULL, NULL, 0);
    for (;;)
        syscall(SYS_pause);
    return 0;
}

pid_t pbx__holder_start(void)
{
    pid_t pid =
        clone(holder_main, holder_stack + sizeof(holder_stack), CLONE_VM | CLONE_PARENT, NULL);

    if (pid < 0)
        return 0;
    /* Its copies of the job's fds must be gone before the job gets the execution's. */
    while (atomic_load(&holder_ready) == 0)
        syscall(SYS_futex, &holder_ready, FUTEX_WAIT, 0, NULL, NULL, 0);
    return pid;
}

/* The count pids.current gives, or -1. */
static long read_count(int fd)
{
    char buf[32];
    ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
    char *end = NULL;
    long v;

    if (n <= 0)
        return -1;
    buf[n] = '\0';
    errno = 0;
    v = strtol(buf, &end, 10);
    if (errno != 0 || end == buf || (*end != '\n' && *end != '\0') || v < 0)
        return -1;
    return v;
}

void pbx__holder_reap_all(void)
{
    while (waitpid(-1, NULL, __WALL) > 0 || errno == EINTR)
        ;
}

void pbx__holder_reap_others(pid_t holder, int count_fd, int sigfd)
{
    bool holder_reaped = false;

    /* As init of the namespace, kill(-1) reaches every process left in it. */
    (void)kill(-1, SIGKILL);
    if (holder <= 0 || count_fd < 0 || sigfd < 0) {
        pbx__holder_reap_all();
        return;
    }
    for (;;) {
        struct pollfd p = {.fd = sigfd, .events = POLLIN};
        struct signalfd_siginfo ssi;
        long left;
        pid_t r;

        while ((r = waitpid(-1, NULL, WNOHANG | __WALL)) > 0) {
            if (r == holder)
                holder_reaped = true;
        }
        if (r < 0 && errno == ECHILD)
            return; /* nothing left at all */
        left = read_count(count_fd);
        if (left < 0) {
            pbx__holder_reap_all();
            return;
        }
        /* The cell itself, and the holder until it is reaped. */
        if (left <= 1 + (holder_reaped ? 0 : 1))
            return;
        /* A process still exiting: its SIGCHLD comes once it is a zombie. */
        while (poll(&p, 1, 100) < 0 && errno == EINTR)
            ;
        while (read(sigfd, &ssi, sizeof(ssi)) > 0)
            ;
    }
}
