/*
 * The real `pybox serve` that libpybox's tests drive (test_client.c,
 * test_client_sessions.c): started on 127.0.0.1:0 in a data directory of
 * its own, its URL read from --url-file, stopped with SIGTERM.  Included by
 * one test file each (its functions are static).
 *
 * Env: PYBOX (the binary; ctest sets it), else PYBOX_BIN.
 */
#ifndef PBX_TESTS_CLIENT_SERVER_H
#define PBX_TESTS_CLIENT_SERVER_H

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define ADMIN_KEY       "adm-test-client-0123456789abcdef"
#define START_TIMEOUT_S 180 /* the ASan build starts slowly on a busy machine */

struct server {
    pid_t pid;     /* the pybox serve process */
    char dir[64];  /* its data directory */
    char url[128]; /* http://127.0.0.1:PORT */
};

static const char *pybox_path(void)
{
    const char *p = getenv("PYBOX");

    return p != NULL ? p : getenv("PYBOX_BIN");
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* Start `pybox serve` on 127.0.0.1:0 with `flags` (NULL-terminated); false when it did not. */
static bool server_start(struct server *s, const char *const *flags)
{
    char url_file[96];
    const char *argv[32];
    size_t n = 0;
    time_t deadline = time(NULL) + START_TIMEOUT_S;

    memset(s, 0, sizeof(*s));
    snprintf(s->dir, sizeof(s->dir), "/tmp/pybox-client-XXXXXX");
    if (mkdtemp(s->dir) == NULL || pybox_path() == NULL)
        return false;
    snprintf(url_file, sizeof(url_file), "%s/url", s->dir);
    argv[n++] = pybox_path();
    argv[n++] = "serve";
    argv[n++] = "--listen";
    argv[n++] = "127.0.0.1:0";
    argv[n++] = "--data";
    argv[n++] = s->dir;
    argv[n++] = "--url-file";
    argv[n++] = url_file;
    argv[n++] = "--no-preload";
    for (size_t i = 0; flags != NULL && flags[i] != NULL && n < 31; i++)
        argv[n++] = flags[i];
    argv[n] = NULL;
    s->pid = fork();
    if (s->pid < 0)
        return false;
    if (s->pid == 0) {
        char log[96];
        int fd;

        /* Dies with its test, whatever happens to the test. */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        snprintf(log, sizeof(log), "%s/stderr.log", s->dir);
        fd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd >= 0)
            dup2(fd, STDERR_FILENO);
        fd = open("/dev/null", O_RDWR | O_CLOEXEC);
        dup2(fd, STDIN_FILENO);
        dup2(fd, STDOUT_FILENO);
        /* The server reads its options from the environment too: only ours count. */
        unsetenv("PYBOX_TIMEOUT");
        unsetenv("PYBOX_MEMORY_MB");
        unsetenv("PYBOX_LIMITS");
        unsetenv("PYBOX_RPM");
        unsetenv("PYBOX_RPD");
        unsetenv("PYBOX_MAX_CONCURRENCY");
        setenv("PYBOX_ADMIN_KEY", ADMIN_KEY, 1);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    while (time(NULL) < deadline) {
        FILE *f = fopen(url_file, "re");
        int status;

        if (f != NULL) {
            bool got = fgets(s->url, sizeof(s->url), f) != NULL;

            fclose(f);
            s->url[strcspn(s->url, "\n")] = '\0';
            if (got && strncmp(s->url, "http://", 7) == 0)
                return true;
        }
        if (waitpid(s->pid, &status, WNOHANG) == s->pid) {
            s->pid = 0;
            return false;
        }
        usleep(50 * 1000);
    }
    return false;
}

/* SIGTERM the server and return its wait status; its data directory goes too. */
static int server_stop(struct server *s)
{
    int status = -1;

    if (s->pid > 0) {
        kill(s->pid, SIGTERM);
        while (waitpid(s->pid, &status, 0) < 0 && errno == EINTR)
            ;
        s->pid = 0;
    }
    if (s->dir[0] != '\0')
        nftw(s->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return status;
}

#endif
