/*
 * pybox repl: an interactive Python prompt whose every entry runs in one
 * sandbox session (libpybox: the local engine, or a server with --server),
 * and, with --jsonl, the same session driven by a program one JSON request
 * per line (what the Python package's local mode holds a session with).
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
#include <histedit.h>
#include <jansson.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <sodium.h>
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

#define MAX_LOCAL_FILE (64u << 20)  /* %put reads at most this much (the session caps it lower) */
#define MAX_LINE       (256u << 20) /* an entry */
#define HISTORY_SIZE   1000

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

/* ---- entries ---- */

/* How far an entry is: complete, or needing more lines. */
enum entry_state {
    ENTRY_SIMPLE, /* complete: no block */
    ENTRY_BLOCK,  /* a compound statement (or decorator): complete at an empty line */
    ENTRY_OPEN,   /* a bracket, a string or a backslash continues it */
};

/*
 * Python's rules, roughly as its REPL applies them: brackets, strings
 * (triple-quoted ones across lines) and comments are followed; a logical
 * line ending with `:` or starting with `@` opens a block.  `last_at` (if
 * not NULL) gets whether the last logical line starts with `@`.
 */
static enum entry_state scan(const char *code, bool *last_at)
{
    int depth = 0;
    char quote = 0;       /* the open string's quote, or 0 */
    bool triple = false;  /* it is triple-quoted */
    bool comment = false; /* in a comment */
    bool block = false;   /* a logical line opened a block */
    char last = 0;        /* the logical line's last significant character */
    char first = 0;       /* and its first */
    bool escaped = false; /* a backslash before this character */

    if (last_at != NULL)
        *last_at = false;
    for (const char *p = code; *p != '\0'; p++) {
        char c = *p;

        if (quote != 0) {
            if (escaped) {
                escaped = false;
            } else if (c == '\\') {
                escaped = true;
            } else if (c == quote && (!triple || (p[1] == quote && p[2] == quote))) {
                if (triple)
                    p += 2;
                quote = 0;
                last = c;
            } else if (c == '\n' && !triple) {
                quote = 0; /* an unterminated string: Python will say so */
            }
            continue;
        }
        if (comment) {
            if (c != '\n')
                continue;
            comment = false;
        }
        if (c == '#') {
            comment = true;
            continue;
        }
        if (c == '\\' && p[1] == '\n') {
            p++;
            if (p[1] == '\0')
                return ENTRY_OPEN;
            continue;
        }
        if (c == '\\' && p[1] == '\0')
            return ENTRY_OPEN;
        if (c == '\'' || c == '"') {
            quote = c;
            triple = p[1] == c && p[2] == c;
            if (triple)
                p += 2;
            if (first == 0)
                first = c;
            continue;
        }
        if (c == '(' || c == '[' || c == '{')
            depth++;
        else if ((c == ')' || c == ']' || c == '}') && depth > 0)
            depth--;
        if (c == '\n') {
            if (depth == 0) {
                if (last == ':' || first == '@')
                    block = true;
                if (last_at != NULL && first != 0)
                    *last_at = first == '@';
                last = first = 0;
            }
            continue;
        }
        if (c != ' ' && c != '\t' && c != '\r' && c != '\f') {
            last = c;
            if (first == 0)
                first = c;
        }
    }
    if (quote != 0 && triple)
        return ENTRY_OPEN;
    if (depth > 0)
        return ENTRY_OPEN;
    if (last == ':' || first == '@')
        block = true;
    if (last_at != NULL && first != 0)
        *last_at = first == '@';
    return block ? ENTRY_BLOCK : ENTRY_SIMPLE;
}

/* Whether `line` has nothing but blanks (and a comment, with `comments`). */
static bool blank(const char *line, bool comments)
{
    line += strspn(line, " \t\r\f\n");
    return *line == '\0' || (comments && *line == '#');
}

/* Whether a line at column 0 continues the statement before it: else, elif, except, finally. */
static bool continues(const char *line)
{
    static const char *const words[] = {"else", "elif", "except", "finally"};

    for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++) {
        size_t n = strlen(words[i]);

        if (strncmp(line, words[i], n) == 0 && strchr(":( \t*", line[n]) != NULL && line[n] != '\0')
            return true;
    }
    return false;
}

/* ---- showing what a call gave ---- */

static void write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);

        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return;
        p += w;
        n -= (size_t)w;
    }
}

static void out_text(struct repl *r, int fd, const char *p, size_t n)
{
    if (n == 0)
        return;
    if (fd == STDOUT_FILENO)
        r->out_open = p[n - 1] != '\n';
    else
        fflush(stdout);
    write_all(fd, p, n);
}

/*
 * Write an image's bytes to a new file of `dir` named for the entry and the
 * image's number (another name when that one exists), and say which.
 */
static void save_image(struct repl *r, const char *mime, const char *ext, const void *data,
                       size_t len)
{
    char *path = NULL;
    int fd = -1;

    r->images++;
    for (int n = 0; n < 100 && fd < 0; n++) {
        free(path);
        path = n == 0
                   ? xasprintf("%s/pybox-out-%u-%u.%s", r->out_dir, r->entry, r->images, ext)
                   : xasprintf("%s/pybox-out-%u-%u-%d.%s", r->out_dir, r->entry, r->images, n, ext);
        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd < 0 && errno != EEXIST)
            break;
    }
    if (fd < 0) {
        fprintf(stderr, "pybox: [%s not saved: %s: %s]\n", mime, path, strerror(errno));
    } else {
        write_all(fd, data, len);
        close(fd);
        printf("[%s: %s]\n", mime, path);
    }
    fflush(stdout);
    free(path);
}

/* One output ({type, data, metadata}): an image to a file, anything else its text/plain. */
static void show_output(struct repl *r, const json_t *o)
{
    json_t *data = json_object_get(o, "data");
    json_t *png = json_object_get(data, "image/png");
    json_t *svg = json_object_get(data, "image/svg+xml");
    json_t *text = json_object_get(data, "text/plain");

    if (json_is_string(png)) {
        size_t max = json_string_length(png) / 4 * 3 + 3;
        unsigned char *bytes = xmalloc(max);
        size_t len = 0;

        if (sodium_base642bin(bytes, max, json_string_value(png), json_string_length(png), NULL,
                              &len, NULL, sodium_base64_VARIANT_ORIGINAL) == 0)
            save_image(r, "image/png", "png", bytes, len);
        free(bytes);
        return;
    }
    if (json_is_string(svg)) {
        save_image(r, "image/svg+xml", "svg", json_string_value(svg), json_string_length(svg));
        return;
    }
    if (json_is_string(text)) {
        if (r->out_open) {
            putchar('\n');
            r->out_open = false;
        }
        fwrite(json_string_value(text), 1, json_string_length(text), stdout);
        putchar('\n');
        fflush(stdout);
    }
}

static void on_event(enum pybox_event_kind kind, const char *data, size_t len, void *arg)
{
    struct repl *r = arg;
    json_t *o;

    switch (kind) {
    case PYBOX_EVENT_STDOUT:
        out_text(r, STDOUT_FILENO, data, len);
        break;
    case PYBOX_EVENT_STDERR:
        out_text(r, STDERR_FILENO, data, len);
        break;
    case PYBOX_EVENT_DISPLAY:
        o = json_loadb(data, len, 0, NULL);
        show_output(r, o);
        json_decref(o);
        break;
    default:
        break; /* the final expression's value is shown after the output, from the result */
    }
}

static bool open_session(struct repl *r)
{
    struct pybox_error *err = NULL;

    if (pybox_session_open(r->client, &r->opts, &r->session, &err) != PYBOX_OK) {
        fprintf(stderr, "pybox: no session: %s\n", pybox_error_message(err));
        pybox_error_free(err);
        r->session = NULL;
        return false;
    }
    return true;
}

/* The session ended (`why`): say so, and start another. */
static void replace_session(struct repl *r, const char *why)
{
    fprintf(stderr, "pybox: the session has ended (%s): its variables are gone; a new one starts\n",
            why != NULL ? why : "unknown");
    pbx__cli_repl_end_session(r);
    open_session(r);
}

/*
 * A session to run in: the one there is, a new one if there is none, or one
 * in place of a session known to have ended (the local reaper ends an idle
 * one between entries).  False when none could be opened.
 */
static bool live_session(struct repl *r)
{
    const char *why;

    if (r->session == NULL)
        return open_session(r);
    why = pybox_session_dead_reason(r->session);
    if (why != NULL)
        replace_session(r, why);
    return r->session != NULL;
}

static void run_entry(struct repl *r, const char *code)
{
    struct pybox_exec *exec = pybox_exec_new();
    struct pybox_result *res = NULL;
    struct pybox_error *err = NULL;
    enum pybox_status status;
    enum pybox_code rc;
    size_t len = 0;

    if (exec == NULL)
        pbx_die(PBX_EXIT_FAILURE, "out of memory");
    if (!live_session(r)) {
        pybox_exec_free(exec);
        return;
    }
    r->entry++;
    r->images = 0;
    if (pybox_exec_set_code(exec, code, (size_t)-1) != PYBOX_OK ||
        pybox_exec_set_event_callback(exec, on_event, r) != PYBOX_OK)
        pbx_die(PBX_EXIT_FAILURE, "out of memory");
    pthread_mutex_lock(&r->call_lock);
    atomic_store(&r->interrupted, false);
    atomic_store(&r->running, true);
    pthread_mutex_unlock(&r->call_lock);
    rc = pybox_session_run(r->session, exec, &res, &err);
    pthread_mutex_lock(&r->call_lock);
    atomic_store(&r->running, false);
    pthread_mutex_unlock(&r->call_lock);
    pybox_exec_free(exec);
    fflush(stdout);
    if (rc == PYBOX_E_GONE) {
        replace_session(r, pybox_session_dead_reason(r->session));
        fprintf(stderr, "pybox: the entry did not run: run it again\n");
        pybox_error_free(err);
        return;
    }
    if (rc != PYBOX_OK) {
        fprintf(stderr, "pybox: %s\n", pybox_error_message(err));
        pybox_error_free(err);
        return;
    }
    status = pybox_result_status(res);
    for (size_t i = 0; i < pybox_result_output_count(res); i++) {
        if (strcmp(pybox_result_output_type(res, i), "result") == 0) {
            json_t *o = json_loads(pybox_result_output_json(res, i), 0, NULL);

            show_output(r, o);
            json_decref(o);
        }
    }
    pybox_result_stderr(res, &len);
    if (status != PYBOX_STATUS_OK && len == 0 && pybox_result_error_type(res) != NULL) {
        /* Refused before it ran, or stopped from outside: the code said nothing of it. */
        if (r->out_open) {
            putchar('\n');
            r->out_open = false;
            fflush(stdout);
        }
        fprintf(stderr, "%s: %s\n", pybox_result_error_type(res),
                pybox_result_error_message(res) ? pybox_result_error_message(res) : "");
    }
    if (pybox_result_stdout_truncated(res) || pybox_result_stderr_truncated(res))
        fprintf(stderr, "pybox: output past the limit was dropped\n");
    if (!pybox_result_state_preserved(res))
        replace_session(r, pybox_session_dead_reason(r->session));
    else if (status == PYBOX_STATUS_TIMEOUT)
        fprintf(stderr, "pybox: interrupted at the time limit; the session kept its state\n");
    pybox_result_free(res);
}

/* ---- commands ---- */

static char *read_local(const char *path, size_t *len)
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

static const char *base_name(const char *path)
{
    const char *slash = strrchr(path, '/');

    return slash != NULL && slash[1] != '\0' ? slash + 1 : path;
}

static void command_failed(const char *what, struct pybox_error *err)
{
    fprintf(stderr, "pybox: %s: %s\n", what, pybox_error_message(err));
    pybox_error_free(err);
}

static void list_files(struct repl *r)
{
    struct pybox_error *err = NULL;
    char *text = NULL;
    json_t *list;
    size_t i;
    json_t *f;

    if (pybox_session_list_files(r->session, &text, &err) != PYBOX_OK) {
        command_failed("%files", err);
        return;
    }
    list = json_loads(text, 0, NULL);
    pybox_free(text);
    if (json_array_size(list) == 0)
        printf("(no files in /work)\n");
    json_array_foreach(list, i, f)
    {
        const char *mtime = json_string_value(json_object_get(f, "mtime"));

        printf("%10lld  %.19s  %s\n", (long long)json_integer_value(json_object_get(f, "size")),
               mtime != NULL ? mtime : "-", json_string_value(json_object_get(f, "path")));
    }
    json_decref(list);
    fflush(stdout);
}

/* A span of %ttl: a whole number of seconds, or `-` for none (0); false when it is neither. */
static bool span_arg(const char *v, unsigned *out)
{
    char *end = NULL;
    unsigned long n;

    *out = 0;
    if (v == NULL || strcmp(v, "-") == 0)
        return true;
    errno = 0;
    n = strtoul(v, &end, 10);
    if (errno != 0 || end == v || *end != '\0' || v[0] == '-' || n == 0 || n > UINT_MAX)
        return false;
    *out = (unsigned)n;
    return true;
}

/* %ttl IDLE [LIFETIME]: the session's spans, and those of each session that replaces it. */
static void set_spans(struct repl *r, const char *idle_arg, const char *life_arg)
{
    struct pybox_error *err = NULL;
    unsigned idle;
    unsigned life;

    if (!span_arg(idle_arg, &idle) || !span_arg(life_arg, &life) || (idle == 0 && life == 0)) {
        fprintf(stderr, "pybox: %%ttl IDLE [LIFETIME]: whole numbers of seconds (`-` keeps one)\n");
        return;
    }
    if (pybox_session_extend(r->session, idle, life, &err) != PYBOX_OK) {
        command_failed("%ttl", err);
        return;
    }
    if (idle > 0) {
        r->opts.idle_ttl_s = idle;
        fprintf(stderr, "pybox: the session ends after %u s without an entry\n", idle);
    }
    if (life > 0) {
        r->opts.max_lifetime_s = life;
        fprintf(stderr, "pybox: the session ends %u s after it began\n", life);
    }
}

/* A %command line; false when it is not one (then it is code). */
static bool command(struct repl *r, const char *line)
{
    char *copy = xstrdup(line);
    char *save = NULL;
    char *name = strtok_r(copy, " \t\r\n", &save);
    char *a = strtok_r(NULL, " \t\r\n", &save);
    char *b = strtok_r(NULL, " \t\r\n", &save);
    char *extra = strtok_r(NULL, " \t\r\n", &save);
    struct pybox_error *err = NULL;
    bool known = true;

    if (name == NULL || name[0] != '%' || name[1] == '%') {
        free(copy);
        return false;
    }
    if (strcmp(name, "%help") != 0 && !live_session(r)) {
        free(copy);
        return true;
    }
    if (strcmp(name, "%help") == 0) {
        printf("%%restart  %%files  %%put LOCAL [REMOTE]  %%get REMOTE [LOCAL]  %%rm REMOTE  "
               "%%ttl IDLE [LIFETIME]  %%help\n");
    } else if (strcmp(name, "%ttl") == 0 && a != NULL && extra == NULL) {
        set_spans(r, a, b);
    } else if (strcmp(name, "%restart") == 0 && a == NULL) {
        if (pybox_session_restart(r->session, &err) != PYBOX_OK)
            command_failed("%restart", err);
        else
            fprintf(stderr, "pybox: a fresh interpreter; /work is kept\n");
    } else if (strcmp(name, "%files") == 0 && a == NULL) {
        list_files(r);
    } else if (strcmp(name, "%put") == 0 && a != NULL && extra == NULL) {
        size_t len = 0;
        char *data = read_local(a, &len);
        const char *to = b != NULL ? b : base_name(a);

        if (data != NULL && pybox_session_put_file(r->session, to, data, len, &err) != PYBOX_OK)
            command_failed("%put", err);
        else if (data != NULL)
            printf("%s -> /work/%s (%zu bytes)\n", a, to, len);
        free(data);
    } else if (strcmp(name, "%get") == 0 && a != NULL && extra == NULL) {
        const char *to = b != NULL ? b : base_name(a);
        void *data = NULL;
        size_t len = 0;

        if (pybox_session_get_file(r->session, a, &data, &len, &err) != PYBOX_OK) {
            command_failed("%get", err);
        } else {
            int fd = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

            if (fd < 0) {
                fprintf(stderr, "pybox: %%get: %s: %s\n", to, strerror(errno));
            } else {
                write_all(fd, data, len);
                close(fd);
                printf("/work/%s -> %s (%zu bytes)\n", a, to, len);
            }
            pybox_free(data);
        }
    } else if (strcmp(name, "%rm") == 0 && a != NULL && b == NULL) {
        if (pybox_session_delete_file(r->session, a, &err) != PYBOX_OK)
            command_failed("%rm", err);
    } else {
        known = false;
    }
    if (!known)
        fprintf(stderr, "pybox: `%.*s` is not a command or is missing its arguments (see %%help)\n",
                (int)strcspn(line, "\r\n"), line);
    fflush(stdout);
    free(copy);
    return true;
}

/* Run one entry: a command, or code. */
static void entry(struct repl *r, const char *code)
{
    pthread_mutex_lock(&r->session_lock);
    if (!command(r, code))
        run_entry(r, code);
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

/* ---- a script on stdin ---- */

static int run_script(struct repl *r)
{
    struct pbx_buf cur;
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;

    pbx_buf_init(&cur, MAX_LINE);
    while ((n = getline(&line, &cap, stdin)) > 0) {
        bool last_at = false;
        enum entry_state st = cur.len > 0 ? scan(cur.data, &last_at) : ENTRY_SIMPLE;

        /* A top-level statement begins: the one before it is an entry. */
        if (cur.len > 0 && st != ENTRY_OPEN && !last_at && !blank(line, true) && line[0] != ' ' &&
            line[0] != '\t' && !continues(line)) {
            if (!blank(cur.data, false))
                entry(r, cur.data);
            pbx_buf_release(&cur);
            pbx_buf_init(&cur, MAX_LINE);
        }
        if (cur.len == 0 && line[0] == '%') {
            entry(r, line);
            continue;
        }
        if (pbx_buf_append(&cur, line, (size_t)n) < 0)
            pbx_die(PBX_EXIT_USAGE, "an entry of the script is over %u bytes", MAX_LINE);
    }
    if (cur.len > 0 && !blank(cur.data, false))
        entry(r, cur.data);
    pbx_buf_release(&cur);
    free(line);
    return 0;
}

/* ---- the prompt ---- */

static bool continuing; /* the prompt is `... ` */
static bool cancelled;  /* Ctrl-C cleared the entry */

static char *prompt(EditLine *el)
{
    (void)el;
    return continuing ? "... " : ">>> ";
}

static unsigned char on_ctrl_c(EditLine *el, int ch)
{
    (void)el;
    (void)ch;
    cancelled = true;
    return CC_NEWLINE;
}

static char *history_path(void)
{
    const char *p = getenv("PYBOX_HISTORY");
    const char *home = getenv("HOME");

    if (p != NULL)
        return p[0] != '\0' ? xstrdup(p) : NULL;
    return home != NULL && home[0] != '\0' ? xasprintf("%s/.pybox_history", home) : NULL;
}

static int run_interactive(struct repl *r)
{
    EditLine *el = el_init("pybox", stdin, stdout, stderr);
    History *hist = history_init();
    char *hist_file = history_path();
    struct pbx_buf cur;
    HistEvent ev;

    if (el == NULL || hist == NULL)
        pbx_die(PBX_EXIT_FAILURE, "libedit could not start");
    history(hist, &ev, H_SETSIZE, HISTORY_SIZE);
    history(hist, &ev, H_SETUNIQUE, 1);
    if (hist_file != NULL)
        history(hist, &ev, H_LOAD, hist_file);
    el_set(el, EL_EDITOR, "emacs");
    el_set(el, EL_PROMPT, prompt);
    el_set(el, EL_HIST, history, hist);
    /* The wide form: the narrow one copies the two strings and never frees them (eln.c). */
    el_wset(el, EL_ADDFN, L"pybox-interrupt", L"clear the entry (Ctrl-C)", on_ctrl_c);
    el_set(el, EL_BIND, "^C", "pybox-interrupt", NULL);
    /* Ctrl-C while editing is a key (above), not SIGINT: that is for the running call. */
    el_set(el, EL_SETTY, "-d", "-isig", NULL);
    el_source(el, NULL); /* ~/.editrc, as every libedit program reads it */
    fprintf(stderr,
            "pybox %s repl: Python in a sandbox session (%s%s). %%help for commands, Ctrl-D to "
            "leave.\n",
            pybox_version(), r->shown_server != NULL ? "on " : "local",
            r->shown_server != NULL ? r->shown_server : "");
    pbx_buf_init(&cur, MAX_LINE);
    for (;;) {
        int count = 0;
        const char *line;
        enum entry_state st;

        continuing = cur.len > 0;
        cancelled = false;
        line = el_gets(el, &count);
        if (cancelled) {
            fprintf(stderr, "\nKeyboardInterrupt\n");
            pbx_buf_release(&cur);
            pbx_buf_init(&cur, MAX_LINE);
            continue;
        }
        if (line == NULL || count <= 0) {
            if (count < 0 && errno == EINTR)
                continue;
            fputc('\n', stdout);
            break; /* Ctrl-D */
        }
        if (!blank(line, false))
            history(hist, &ev, H_ENTER, line);
        if (cur.len == 0 && blank(line, false))
            continue;
        if (cur.len == 0 && line[0] == '%') {
            entry(r, line);
            continue;
        }
        if (pbx_buf_append(&cur, line, (size_t)count) < 0) {
            fprintf(stderr, "pybox: the entry is over %u bytes: dropped\n", MAX_LINE);
            pbx_buf_release(&cur);
            pbx_buf_init(&cur, MAX_LINE);
            continue;
        }
        st = scan(cur.data, NULL);
        if (st == ENTRY_OPEN || (st == ENTRY_BLOCK && !blank(line, false)))
            continue;
        entry(r, cur.data);
        pbx_buf_release(&cur);
        pbx_buf_init(&cur, MAX_LINE);
    }
    pbx_buf_release(&cur);
    if (hist_file != NULL) {
        history(hist, &ev, H_SAVE, hist_file);
        chmod(hist_file, 0600);
        free(hist_file);
    }
    history_end(hist);
    el_end(el);
    return 0;
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
    data = read_local(path, &len);
    if (data == NULL)
        pbx_usage_error("repl", "--file `%s`: the file could not be read", arg);
    /* Without NAME=, the file keeps its own name, as `pybox run --file` gives it. */
    f->name = eq != NULL ? xstrndup(arg, (size_t)(eq - arg)) : xstrdup(base_name(path));
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
        status = r.interactive ? run_interactive(&r) : run_script(&r);
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
