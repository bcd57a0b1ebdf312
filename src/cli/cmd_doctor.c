/*
 * pybox doctor: which isolation features are in force here, proven by
 * starting a jail and probing from inside a real cell.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <linux/seccomp.h>
#include <unistd.h>

#include "cli/cli.h"
#include "common/xalloc.h"
#include "engine/engine.h"
#include "policy/policy.h"
#include "sandbox/uidmap.h"
#include "common/banned.h"

/* Runs inside a cell with every import allowed; prints "name|ok|detail" lines. */
static const char probe[] =
    "import os, socket, sys\n"
    "def line(name, ok, detail):\n"
    "    print('%s|%s|%s' % (name, 'yes' if ok else 'NO', detail))\n"
    "line('unprivileged uid', os.getuid() != 0, 'uid %d, gid %d inside the jail' % (os.getuid(), "
    "os.getgid()))\n"
    "try:\n"
    "    socket.socket(socket.AF_INET, socket.SOCK_STREAM)\n"
    "    line('no network', False, 'an AF_INET socket could be created')\n"
    "except OSError as e:\n"
    "    line('no network', True, 'socket() refused by seccomp (%s); empty network namespace' % "
    "e.strerror)\n"
    "line('no host /proc or /sys', not os.path.exists('/proc/1') and not os.path.exists('/sys/"
    "kernel'), 'not mounted in the jail')\n"
    "line('no host home or secrets', not any(os.path.exists(p) for p in ('/root', '/home', "
    "'/etc/shadow', '/usr/local')), 'only the Python view is mounted')\n"
    "line('no host environment', 'PYBOX_ADMIN_KEY' not in os.environ and len(os.environ) < 16, "
    "'the code sees only %s, set by pybox' % ', '.join(sorted(os.environ)))\n"
    "try:\n"
    "    open('/usr/lib/python3.11/os.py', 'a')\n"
    "    line('read-only Python view', False, 'the standard library is writable')\n"
    "except OSError:\n"
    "    line('read-only Python view', True, '/usr is read-only')\n"
    "s = os.statvfs('/work')\n"
    "line('private /work tmpfs', True, '%d MiB, %d inodes, shared with /tmp and /dev/shm' % "
    "(s.f_blocks * s.f_frsize >> 20, s.f_files))\n"
    "import platform\n"
    "mods = []\n"
    "for m in MODULES:\n"
    "    try:\n"
    "        __import__(m)\n"
    "        mods.append(m)\n"
    "    except Exception:\n"
    "        mods.append(m + ' (MISSING)')\n"
    "line('python', True, 'Python %s; modules: %s' % (platform.python_version(), ' "
    "'.join(mods)))\n";

static void row(const char *name, bool ok, const char *detail)
{
    printf("  %-26s %-4s %s\n", name, ok ? "yes" : "NO", detail);
}

/* A feature pybox does not use, with the reason. */
static void row_unused(const char *name, const char *detail)
{
    printf("  %-26s %-4s %s\n", name, "-", detail);
}

/* The ids pybox's own user namespace has, which the jail's ids must come from. */
static void user_namespace(void)
{
    struct pbx_uidmap_host *host = xcalloc(1, sizeof(*host));
    struct pbx_error *err = NULL;
    char ranges[256];
    char *detail;

    if (pbx_uidmap_host_read(host, &err) < 0) {
        row("user namespace ids", false, err->msg);
        pbx_error_free(&err);
        free(host);
        return;
    }
    pbx_uidmap_host_ranges(host, ranges, sizeof(ranges));
    detail =
        xasprintf("%s: %s; the jail's ids come from these", ranges,
                  host->nuid == 1 && host->uid[0].first == 0 && host->uid[0].count == UINT32_MAX
                      ? "the host's"
                      : "a user namespace's (a container's?)");
    row("user namespace ids", true, detail);
    free(detail);
    free(host);
}

static void host_checks(void)
{
    long seccomp = prctl(PR_GET_SECCOMP, 0, 0, 0, 0);
    long openat2 = syscall(SYS_openat2, -1, "", NULL, 0);
    int openat2_errno = errno;

    printf("Host:\n");
    row("seccomp filters", seccomp >= 0,
        seccomp >= 0 ? "available; every job installs pybox's deny-list filter"
                     : "the kernel lacks CONFIG_SECCOMP_FILTER: jobs would run unfiltered");
    row("openat2", !(openat2 < 0 && openat2_errno == ENOSYS),
        openat2 < 0 && openat2_errno == ENOSYS
            ? "missing (kernel < 5.6): returned files cannot be collected safely"
            : "returned files are opened with RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS");
    row("running as root", geteuid() == 0,
        geteuid() == 0 ? "pybox maps the jail to an unprivileged uid range"
                       : "pybox needs root to map a uid range and create cgroups");
    user_namespace();
    row_unused("landlock", "not used: the jail's mount namespace is the filesystem boundary");
}

int pbx_cmd_doctor(int argc, char **argv)
{
    struct pbx_engine_config cfg;
    struct pbx_engine *engine = NULL;
    struct pbx_exec_request req;
    struct pbx_exec_result res;
    struct pbx_error *err = NULL;
    char *modules;
    char *code;
    char *desc;
    int bad = 0;
    const char *jail_ids = getenv("PYBOX_JAIL_IDS");
    const char *jail_ids_from = "PYBOX_JAIL_IDS";
    uint32_t base;

    if (argc > 1 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
        printf("usage: pybox doctor [--jail-ids BASE[:COUNT]]\n\nStart a jail, probe it from "
               "inside a cell, and print which isolation\nfeatures are in force on this machine "
               "and why any is missing.\nExit status 0 when the sandbox works, 1 otherwise.\n\n"
               "Options:\n"
               "  --jail-ids BASE[:COUNT]  the jail's ids, as for `pybox serve` (env\n"
               "                           PYBOX_JAIL_IDS; default auto)\n");
        return 0;
    }
    if (argc > 1 && strncmp(argv[1], "--jail-ids", 10) == 0 &&
        (argv[1][10] == '\0' || argv[1][10] == '=')) {
        if (argv[1][10] == '=') {
            jail_ids = argv[1] + 11;
        } else if (argv[1][10] == '\0' && argc > 2) {
            jail_ids = argv[2];
            argv++;
            argc--;
        } else {
            pbx_usage_error("doctor", "option `%s` needs a value", argv[1]);
        }
        jail_ids_from = "--jail-ids";
        argv++;
        argc--;
    }
    if (argc > 1)
        pbx_usage_error("doctor", "unexpected argument `%s`", argv[1]);
    pbx_engine_config_default(&cfg);
    if (jail_ids != NULL && *jail_ids != '\0') {
        if (pbx__cli_jail_ids(jail_ids, &base, &cfg.uid_count, &cfg.uid_auto, &err) < 0)
            pbx_usage_error("doctor", "%s %s", jail_ids_from, err->msg);
        cfg.uid_base = (uid_t)base;
    }
    host_checks();
    printf("\nJail:\n");
    if (pbx_engine_start(&cfg, &engine, &err) < 0) {
        row("jail", false, err->msg);
        printf("\nThe sandbox cannot start here: %s\n", err->msg);
        pbx_error_free(&err);
        return 1;
    }
    desc = pbx_engine_describe(engine);
    for (char *line = desc, *nl; *line; line = nl + 1) {
        nl = strchr(line, '\n');
        if (nl == NULL)
            break;
        *nl = '\0';
        printf("  %s\n", line);
    }
    free(desc);

    {
        /* The allowlist as a Python list literal, for the probe. */
        char *list = xstrdup("[");

        for (size_t i = 0; pbx_policy_default_modules[i] != NULL; i++) {
            char *next = xasprintf("%s'%s', ", list, pbx_policy_default_modules[i]);

            free(list);
            list = next;
        }
        modules = xasprintf("%s]", list);
        free(list);
    }
    code = xasprintf("MODULES = %s\n%s", modules, probe);
    free(modules);
    pbx_exec_request_init(&req);
    req.code = code;
    req.code_len = strlen(code);
    req.allow_all_imports = true;
    printf("\nInside a cell:\n");
    if (pbx_engine_execute(engine, &req, &res, &err) < 0) {
        row("cell", false, err->msg);
        pbx_error_free(&err);
        bad = 1;
    } else {
        for (char *line = res.stdout_data, *nl; line && *line; line = nl + 1) {
            char *f1 = line;
            char *f2;
            char *f3;

            nl = strchr(line, '\n');
            if (nl == NULL)
                break;
            *nl = '\0';
            f2 = strchr(f1, '|');
            f3 = f2 ? strchr(f2 + 1, '|') : NULL;
            if (f3 == NULL)
                continue;
            *f2++ = '\0';
            *f3++ = '\0';
            row(f1, strcmp(f2, "yes") == 0, f3);
            if (strcmp(f2, "yes") != 0)
                bad = 1;
        }
        if (res.status != PBX_STATUS_OK) {
            row("probe", false, res.stderr_data ? res.stderr_data : "failed");
            bad = 1;
        }
        pbx_exec_result_release(&res);
    }
    free(code);
    pbx_engine_free(engine);
    printf("\n%s\n", bad ? "Some isolation features are missing (see NO above)."
                         : "Every isolation feature pybox uses is in force.");
    return bad;
}
