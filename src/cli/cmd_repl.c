/*
 * pybox repl: an interactive Python prompt whose every entry runs in one
 * sandbox session (libpybox: the local engine, or a server with --server),
 * and, with --jsonl, the same session driven by a program one JSON request
 * per line (what the Python package's local mode holds a session with).
 * This file is the command: its options, the session's opening and end,
 * the signals and the interrupter thread, and each entry handed to the
 * session under its lock.  The entries are read by repl_input.c, run and
 * shown by repl_session.c; --jsonl is repl_jsonl.c.
 *
 * Theory of operation.  Threads and descriptors of the interactive REPL:
 *
 *   main thread     reads an entry (libedit on a terminal, the whole script
 *                   otherwise), runs it with pybox_session_run(), shows what
 *                   it gave; holds `session_lock` while it uses the session;
 *   interrupter     waits on `wake` (a pipe): the SIGINT handler writes 'i'
 *                   there, SIGTERM and SIGHUP 'q'.  An 'i' while a call runs
 *                   becomes pybox_session_interrupt() (again every 200 ms
 *                   until the call is interrupted: it may not have begun);
 *                   a 'q' interrupts the call too and, once the main thread
 *                   lets go of the session, closes it and exits;
 *   libedit         edits with ISIG off (`setty -d -isig`), so Ctrl-C at the
 *                   prompt is a key, bound to clearing the entry, and only a
 *                   running call sees SIGINT.  The zygote and cells are in
 *                   sessions of their own (setsid): the terminal's SIGINT
 *                   never reaches them.
 *
 * The session ends with the REPL (Ctrl-D, the end of the script, SIGTERM):
 * pybox_session_close() then pybox_client_free(), which in local mode stops
 * the engine; in local mode the zygote also dies with this process
 * (PR_SET_PDEATHSIG) whatever happens.  A call that ends the session (a
 * timeout it did not survive, the memory limit) is said so, and a new
 * session takes its place; so does a session that ended between entries
 * (its idle time or lifetime: locally the library's reaper ends it at once),
 * before the next entry runs in the new one.
 *
 * --jsonl: the main thread reads requests, answers the quick ones itself
 * (files, extend, interrupt, restart) and hands a run to the worker thread,
 * one at a time (a second meanwhile is a SessionBusy, as the server answers it);
 * every line written to stdout is whole, under `out_lock`.  EOF on stdin or
 * {"op": "close"} ends the session and the process.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/repl.h"
#include "common/buf.h"
#include "common/errtable.h"
#include "common/xalloc.h"
#include "pybox/pybox.h"
#include "common/banned.h"

#define MAX_LOCAL_FILE (64u << 20) /* %put reads at most this much (the session caps it lower) */

static void help(void)
{
    printf(
        "usage: pybox repl [OPTIONS]\n\n"
        "An interactive Python prompt whose every entry runs in one sandbox session: variables,\n"
        "imports and the files of /work stay from one entry to the next, as in python3's REPL,\n"
        "and each entry is sandboxed as `pybox run` sandboxes a script. Without --server the\n"
        "session runs here; with it, on a pybox server (POST /v1/sessions).\n\n"
        "An entry is a line, or more while it is incomplete: a line ending with `:` or `\\`, or\n"
        "brackets or a triple-quoted string left open, continue on the `... ` prompt, and a\n"
        "block ends at an empty line. The value of a final expression is shown (a trailing `;`\n"
        "hides it, `_` holds it); stdout and stderr are shown as they are written; an image a\n"
        "call displays (a matplotlib figure, a PIL image) is written to a file it names,\n"
        "./pybox-out-ENTRY-N.png. Ctrl-C interrupts the running call (KeyboardInterrupt, the\n"
        "state kept) or clears the entry at the prompt; Ctrl-D ends the REPL and its session.\n"
        "With stdin not a terminal the whole input is read as a script of entries, each top-\n"
        "level statement one, with no prompt.\n\n"
        "Commands (at the start of an entry):\n"
        "  %%restart              a fresh interpreter: variables gone, /work kept\n"
        "  %%files                list the files of /work\n"
        "  %%put LOCAL [REMOTE]   copy the file LOCAL into /work (as REMOTE, default its name)\n"
        "  %%get REMOTE [LOCAL]   copy /work/REMOTE here (as LOCAL, default its name)\n"
        "  %%rm REMOTE            delete /work/REMOTE\n"
        "  %%ttl IDLE [LIFETIME]  the session's idle time and lifetime from now on, in seconds\n"
        "                        (`-` keeps one as it is; the lifetime counts from its start)\n"
        "  %%help                 this list\n\n"
        "Options:\n"
        "  --timeout S           each entry's wall-clock and CPU limit in seconds (default 10;\n"
        "                        env PYBOX_TIMEOUT); past it the call is interrupted, and the\n"
        "                        session lives on if the code stops within a second\n"
        "  --memory MB           the session's memory limit in MiB (default 256; env\n"
        "                        PYBOX_MEMORY_MB)\n"
        "  --idle-ttl S          end the session after S seconds without an entry (default:\n"
        "                        the server's; here none, at most 3600)\n"
        "  --max-lifetime S      end it S seconds after it began (likewise; here at most\n"
        "                        86400); an ended session is freed at once, and the next\n"
        "                        entry starts a new one\n"
        "  --file [NAME=]PATH    put the host file PATH in /work/NAME when the session opens\n"
        "                        (and each new one), NAME being PATH's last component when\n"
        "                        not given (repeatable)\n"
        "  --out DIR             where images go (default .)\n"
        "  --preload             import numpy, PIL, pandas and matplotlib first (local)\n"
        "  --server URL          run the session on the pybox server at URL (env PYBOX_SERVER)\n"
        "  --api-key KEY         with --server: the API key to send (env PYBOX_API_KEY)\n"
        "  --jsonl               a machine protocol instead of a prompt: one JSON request per\n"
        "                        line on stdin, one JSON answer per line on stdout (below)\n"
        "  -h, --help            show this help\n\n"
        "--jsonl: first {\"ready\": true, \"session\": {\"id\", \"mode\"}} (or {\"ready\": false,\n"
        "\"error\": {...}} and exit), then per request {\"op\": OP, \"id\": ANY, ...} an answer\n"
        "{\"id\", \"ok\": true, ...} or {\"id\", \"ok\": false, \"error\": {\"type\", \"message\",\n"
        "\"code\", \"retry_after\", \"reason\"}}. OPs: execute {code, stdin, timeout, files: [{name,\n"
        "content_base64}], return_files, main, stream} -> {result} (with stream, first\n"
        "{\"id\", \"event\": \"stdout\"|\"stderr\"|\"display\"|\"result\", \"data\"} lines); put {path,\n"
        "content_base64}; get {path} -> {content_base64, size}; delete {path}; list -> {files};\n"
        "extend {idle_ttl_s, max_lifetime_s} (either; answered while a run goes on); interrupt\n"
        "-> {interrupted} (likewise); restart; close (then exit).\n"
        "EOF on stdin closes the session too.\n\n"
        "Exit status: 0; 2 bad usage; when the session cannot be opened, that of `pybox run`\n"
        "for the same failure (69 no server, 75 busy or rate-limited, 77 key refused, 125).\n");
}

/* ---- the signals and the interrupter thread ---- */

static int wake_pipe[2] = {-1, -1};

/* Write `c` to the wake pipe (from a signal handler too: write() is async-signal-safe). */
static void wake(char c)
{
    int saved = errno;
    ssize_t n = write(wake_pipe[1], &c, 1);

    (void)n; /* a full pipe already holds a word for the interrupter */
    errno = saved;
}

static void on_signal(int sig)
{
    wake(sig == SIGINT ? 'i' : 'q');
}

void pbx__cli_repl_end_session(struct repl *r)
{
    struct pybox_error *err = NULL;

    if (r->session != NULL && pybox_session_close(r->session, &err) != PYBOX_OK) {
        fprintf(stderr, "pybox: the session could not be closed: %s\n", pybox_error_message(err));
        pybox_error_free(err);
    }
    r->session = NULL;
}

static void *interrupter_main(void *arg)
{
    struct repl *r = arg;
    sigset_t all;
    char c;

    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    while (read(wake_pipe[0], &c, 1) == 1 || errno == EINTR) {
        if (c == 'x')
            break;
        if (c == 'q')
            atomic_store(&r->quit, true);
        if (c == 'i' && !atomic_load(&r->running) && !r->interactive)
            atomic_store(&r->quit, true); /* a script at rest: Ctrl-C ends it */
        /* Until the call is interrupted: a Ctrl-C just as it starts comes before it runs. */
        for (int tries = 0; tries < 25; tries++) {
            struct timespec pause = {0, 200 * 1000 * 1000};
            bool sent = false;
            bool running;

            /* Under call_lock, the session cannot be replaced while it is interrupted. */
            pthread_mutex_lock(&r->call_lock);
            running = atomic_load(&r->running) && !atomic_load(&r->interrupted);
            if (running && pybox_session_interrupt(r->session, &sent, NULL) == PYBOX_OK && sent)
                atomic_store(&r->interrupted, true);
            pthread_mutex_unlock(&r->call_lock);
            if (!running || sent)
                break;
            nanosleep(&pause, NULL);
        }
        if (atomic_load(&r->quit)) {
            /* At the prompt, or once the call is over: end the session, leave. */
            pthread_mutex_lock(&r->session_lock);
            pbx__cli_repl_end_session(r);
            if (r->have_tty)
                tcsetattr(STDIN_FILENO, TCSANOW, &r->saved_tty);
            pybox_client_free(r->client);
            fflush(stdout);
            _exit(c == 'i' ? 128 + SIGINT : 0);
        }
    }
    return NULL;
}

/* ---- one entry ---- */

void pbx__cli_repl_entry(struct repl *r, const char *code)
{
    pthread_mutex_lock(&r->session_lock);
    if (!pbx__cli_repl_session_command(r, code))
        pbx__cli_repl_session_run(r, code);
    if (r->out_open && r->interactive) {
        /* The next prompt starts a line of its own, as the shell's would not. */
        putchar('\n');
        fflush(stdout);
    }
    r->out_open = false;
    pthread_mutex_unlock(&r->session_lock);
    if (atomic_load(&r->quit)) {
        wake('q');
        pause(); /* the interrupter ends the session and the process */
    }
}

/* ---- host files ---- */

char *pbx__cli_repl_read_local(const char *path, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct pbx_buf b;
    char chunk[65536];
    struct stat st;
    ssize_t n;

    *len = 0;
    if (fd < 0) {
        fprintf(stderr, "pybox: %s: %s\n", path, strerror(errno));
        return NULL;
    }
    if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
        fprintf(stderr, "pybox: %s is a directory\n", path);
        close(fd);
        return NULL;
    }
    pbx_buf_init(&b, MAX_LOCAL_FILE);
    while ((n = read(fd, chunk, sizeof(chunk))) != 0) {
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 || pbx_buf_append(&b, chunk, (size_t)n) < 0) {
            fprintf(stderr, "pybox: %s: %s\n", path,
                    n < 0 ? strerror(errno) : "larger than a session's file may be");
            pbx_buf_release(&b);
            close(fd);
            return NULL;
        }
    }
    close(fd);
    return pbx_buf_steal(&b, len);
}

const char *pbx__cli_repl_base_name(const char *path)
{
    const char *slash = strrchr(path, '/');

    return slash != NULL && slash[1] != '\0' ? slash + 1 : path;
}

/* ---- the command ---- */

enum {
    OPT_TIMEOUT = 256,
    OPT_MEMORY,
    OPT_IDLE_TTL,
    OPT_LIFETIME,
    OPT_OUT,
    OPT_PRELOAD,
    OPT_SERVER,
    OPT_API_KEY,
    OPT_JSONL,
    OPT_FILE,
};

static unsigned whole_seconds(const char *opt, const char *v)
{
    char *end = NULL;
    unsigned long n;

    errno = 0;
    n = strtoul(v, &end, 10);
    if (errno != 0 || end == v || *end != '\0' || v[0] == '-' || n == 0 || n > UINT_MAX)
        pbx_usage_error("repl", "%s `%s` is not a whole number of seconds", opt, v);
    return (unsigned)n;
}

/*
 * --file [NAME=]PATH: the host file read into `f` (its name checked when the
 * session opens, as the library checks every input file's).
 */
static void input_file(struct pybox_input_file *f, const char *arg)
{
    const char *eq = strchr(arg, '=');
    const char *path = eq != NULL ? eq + 1 : arg;
    size_t len = 0;
    char *data;

    if (eq == arg || (eq != NULL && eq[1] == '\0'))
        pbx_usage_error("repl", "--file `%s` is not [NAME=]PATH", arg);
    data = pbx__cli_repl_read_local(path, &len);
    if (data == NULL)
        pbx_usage_error("repl", "--file `%s`: the file could not be read", arg);
    /* Without NAME=, the file keeps its own name, as `pybox run --file` gives it. */
    f->name =
        eq != NULL ? xstrndup(arg, (size_t)(eq - arg)) : xstrdup(pbx__cli_repl_base_name(path));
    f->data = data;
    f->size = len;
}

static void free_files(struct pybox_input_file *files, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free((char *)files[i].name);
        free((void *)files[i].data);
    }
    free(files);
}

/* `url` without a user:password@ before its host, for the banner. */
static char *shown_url(const char *url)
{
    const char *host = strstr(url, "://");
    const char *at;
    const char *end;

    if (host == NULL)
        return xstrdup(url);
    host += 3;
    end = host + strcspn(host, "/?#");
    at = memchr(host, '@', (size_t)(end - host));
    if (at == NULL)
        return xstrdup(url);
    return xasprintf("%.*s%s", (int)(host - url), url, at + 1);
}

int pbx_cmd_repl(int argc, char **argv)
{
    static const struct option opts[] = {
        {"timeout", required_argument, NULL, OPT_TIMEOUT},
        {"memory", required_argument, NULL, OPT_MEMORY},
        {"idle-ttl", required_argument, NULL, OPT_IDLE_TTL},
        {"max-lifetime", required_argument, NULL, OPT_LIFETIME},
        {"out", required_argument, NULL, OPT_OUT},
        {"preload", no_argument, NULL, OPT_PRELOAD},
        {"server", required_argument, NULL, OPT_SERVER},
        {"api-key", required_argument, NULL, OPT_API_KEY},
        {"jsonl", no_argument, NULL, OPT_JSONL},
        {"file", required_argument, NULL, OPT_FILE},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct repl r = {.out_dir = "."};
    struct pybox_input_file *files = NULL;
    size_t nfiles = 0;
    struct pybox_config cfg;
    struct pybox_error *err = NULL;
    struct sigaction sa;
    pthread_t interrupter;
    char exe[PATH_MAX];
    bool jsonl = false;
    bool api_key_given = false;
    char *shown = NULL;
    struct stat st;
    enum pybox_code rc;
    ssize_t n;
    int status = 0;
    int c;

    pybox_config_init(&cfg);
    rc = pybox_config_from_env(&cfg, &err);
    if (rc != PYBOX_OK)
        pbx_usage_error("repl", "%s", pybox_error_message(err));
    pybox_session_options_init(&r.opts);
    opterr = 0;
    optind = 0;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        char *end = NULL;

        switch (c) {
        case 'h':
            help();
            return 0;
        case OPT_TIMEOUT:
            errno = 0;
            r.opts.timeout_s = strtod(optarg, &end);
            if (errno != 0 || end == optarg || *end != '\0' || !(r.opts.timeout_s > 0) ||
                r.opts.timeout_s > 3600)
                pbx_usage_error("repl", "--timeout `%s` is not a number of seconds from 0 to 3600",
                                optarg);
            break;
        case OPT_MEMORY:
            errno = 0;
            r.opts.memory_mb = (unsigned)strtoul(optarg, &end, 10);
            if (errno != 0 || end == optarg || *end != '\0' || optarg[0] == '-' ||
                r.opts.memory_mb < 16 || r.opts.memory_mb > 65536)
                pbx_usage_error("repl", "--memory `%s` is not a whole number from 16 to 65536",
                                optarg);
            break;
        case OPT_IDLE_TTL:
            r.opts.idle_ttl_s = whole_seconds("--idle-ttl", optarg);
            break;
        case OPT_LIFETIME:
            r.opts.max_lifetime_s = whole_seconds("--max-lifetime", optarg);
            break;
        case OPT_OUT:
            r.out_dir = optarg;
            break;
        case OPT_PRELOAD:
            cfg.preload = true;
            break;
        case OPT_SERVER:
            cfg.server = optarg;
            break;
        case OPT_API_KEY:
            cfg.api_key = optarg;
            api_key_given = true;
            break;
        case OPT_JSONL:
            jsonl = true;
            break;
        case OPT_FILE:
            files = xrealloc(files, (nfiles + 1) * sizeof(*files));
            input_file(&files[nfiles++], optarg);
            break;
        default:
            pbx_usage_error("repl", "unknown option or missing value `%s`", argv[optind - 1]);
        }
    }
    if (optind < argc)
        pbx_usage_error("repl", "unexpected argument `%s`", argv[optind]);
    r.opts.files = files;
    r.opts.nfiles = nfiles;
    if (cfg.server != NULL && cfg.server[0] == '\0')
        cfg.server = NULL;
    if (cfg.server == NULL && api_key_given)
        pbx_usage_error("repl", "--api-key needs --server (or PYBOX_SERVER)");
    if (stat(r.out_dir, &st) < 0 || !S_ISDIR(st.st_mode))
        pbx_usage_error("repl", "--out `%s` is not a directory", r.out_dir);
    /* Local mode's zygote is this very binary. */
    n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n > 0) {
        exe[n] = '\0';
        cfg.pybox_bin = exe;
    }
    cfg.network = false; /* sessions have none: PYBOX_NETWORK would only refuse them */
    rc = pybox_client_new(&cfg, &r.client, &err);
    if (rc != PYBOX_OK)
        pbx_usage_error("repl", "%s", pybox_error_message(err));
    if (cfg.server != NULL)
        r.shown_server = shown = shown_url(cfg.server);
    pthread_mutex_init(&r.session_lock, NULL);
    pthread_mutex_init(&r.call_lock, NULL);
    r.interactive = !jsonl && isatty(STDIN_FILENO);
    if (isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &r.saved_tty) == 0)
        r.have_tty = true;

    if (pipe2(wake_pipe, O_CLOEXEC) < 0)
        pbx_die(PBX_EXIT_FAILURE, "pipe: %s", strerror(errno));
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    rc = pybox_session_open(r.client, &r.opts, &r.session, &err);
    if (rc != PYBOX_OK) {
        const struct pbx_errtable_row *row = pbx_errtable_of_pybox_code(rc, !cfg.server);
        int exit_status = row != NULL ? row->exit : PBX_EXIT_FAILURE;

        if (jsonl)
            pbx__cli_repl_jsonl_not_ready(rc, err);
        fprintf(stderr, "pybox: no session: %s\n", pybox_error_message(err));
        pybox_error_free(err);
        pybox_client_free(r.client);
        free_files(files, nfiles);
        free(shown);
        return exit_status;
    }
    if (jsonl) {
        status = pbx__cli_repl_jsonl(&r, wake_pipe[0]);
    } else {
        if (pthread_create(&interrupter, NULL, interrupter_main, &r) != 0)
            pbx_die(PBX_EXIT_FAILURE, "cannot start a thread");
        status = r.interactive ? pbx__cli_repl_input_prompt(&r) : pbx__cli_repl_input_script(&r);
        pthread_mutex_lock(&r.session_lock);
        pbx__cli_repl_end_session(&r);
        pthread_mutex_unlock(&r.session_lock);
        wake('x');
        pthread_join(interrupter, NULL);
    }
    pybox_client_free(r.client);
    pthread_mutex_destroy(&r.session_lock);
    pthread_mutex_destroy(&r.call_lock);
    free_files(files, nfiles);
    free(shown);
    return status;
}
