/*
 * pybox run: one execution in a local sandbox, or on a pybox server with
 * --server (through libpybox's remote mode), with the same output and exit
 * status either way.  A request that does not run exits with the status the
 * error table (common/errtable.h) gives its failure, and with --json prints
 * the error object the server answers, local and remote alike.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "common/buf.h"
#include "common/cleanup.h"
#include "common/errtable.h"
#include "common/utf8.h"
#include "common/xalloc.h"
#include "engine/engine.h"
#include "pybox/pybox.h"
#include "common/banned.h"

#define MAX_ARGS_FILES 256

static void help(void)
{
    printf(
        "usage: pybox run [FILE|-] [OPTIONS]\n\n"
        "Run a Python script in a fresh sandbox and behave like `python3 FILE`: its stdout and\n"
        "stderr pass through and its exit status becomes pybox's. FILE `-` (or no FILE with\n"
        "stdin not a terminal) reads the code from stdin.\n\n"
        "Options:\n"
        "  --stdin FILE          give the script FILE (or - for pybox's stdin) as its stdin;\n"
        "                        without it, pybox's stdin is the script's when it is not a\n"
        "                        terminal and the code is not read from it, as with python3\n"
        "                        (read whole before the script starts, up to the stdin limit;\n"
        "                        --stdin /dev/null gives none)\n"
        "  --file [NAME=]PATH    put the host file PATH in /work/NAME, NAME being PATH's last\n"
        "                        component when not given (repeatable)\n"
        "  --return NAME         return /work/NAME after the run (repeatable; NAME may be a\n"
        "                        pattern such as *.png); without --json it is written to --out\n"
        "  --out DIR             where returned files go without --json (default: .); a NAME\n"
        "                        that exists there already is refused before the run (exit 2)\n"
        "  --force               replace files that exist in --out DIR\n"
        "  --timeout S           wall-clock and CPU limit in seconds, as the server's `timeout`\n"
        "                        (default 10; env PYBOX_TIMEOUT); --limit cpu sets CPU apart\n"
        "  --memory MB           memory limit in MiB (default 256; env PYBOX_MEMORY_MB)\n"
        "  --limit NAME=VALUE    set any limit, e.g. --limit pids=20 --limit disk=128M\n"
        "                        (repeatable; env PYBOX_LIMITS=\"NAME=VALUE ...\"); see below\n"
        "  --main                call main() and report its JSON-encoded return value\n"
        "  --json                print the result object (docs/api.md) instead\n"
        "  --stream              with --json: first, as the run goes on, one JSON line per\n"
        "                        event, {\"event\": \"stdout\"|\"stderr\"|\"display\"|\"result\",\n"
        "                        \"data\"}, as POST /v1/execute streams them (docs/api.md)\n"
        "  --allow-all-imports   do not apply the import allowlist (env PYBOX_ALLOW_ALL_IMPORTS=1)\n"
        "  --preload             import numpy, PIL, pandas and matplotlib first (as the server)\n"
        "  --jail-ids BASE[:COUNT]  the ids the jail's 0..COUNT-1 map to, as for `pybox serve`\n"
        "                        (env PYBOX_JAIL_IDS; default auto)\n"
        "  --server URL          run on the pybox server at URL (env PYBOX_SERVER) instead of\n"
        "                        here: same output and exit status; --limit and\n"
        "                        --allow-all-imports are the server's to decide\n"
        "  --api-key KEY         with --server: the API key to send (env PYBOX_API_KEY)\n"
        "  -h, --help            show this help\n\n"
        "Exit statuses: the script's; 124 timeout; 125 pybox failed, or a returned file could\n"
        "not be saved after a run that succeeded; 126 rejected by policy; 128+N killed by\n"
        "signal N (137 when the memory limit was hit); 2 bad usage.\n"
        "With --json the same statuses apply after the object is printed.\n"
        "When the request did not run: 2 it is invalid or over a limit (here, or the server's\n"
        "400, 413); 125 pybox failed. With --server also: 69 the server could not be reached\n"
        "or did not answer; 75 it was busy (503) or a rate limit or quota was reached (429);\n"
        "77 the API key was refused (401, 403); 125 any other failure. With --json it then\n"
        "prints the server's error object, {\"status\": \"error\", \"error\": {\"type\",\n"
        "\"message\"}, \"error_details\": ...}, with the type the server gives the same failure.\n\n"
        "Limits (NAME default meaning):\n");
    {
        struct pbx_limits l;
        char *text;

        pbx_limits_default(&l);
        text = pbx_limits_describe(&l);
        fputs(text, stdout);
        free(text);
    }
}

/*
 * A request that did not run: "pybox: MESSAGE" on stderr (with the help hint
 * when `usage`), and with --json first the error object the server answers,
 * {"status": "error", "error": {"type", "message"}} with "error_details" the
 * same, `type` NULL for none.  Exits with `status`, the error table's.
 */
static noreturn void __attribute__((format(printf, 5, 6)))
refuse(bool json, const char *type, int status, bool usage, const char *fmt, ...)
{
    va_list ap;
    char *msg;

    va_start(ap, fmt);
    msg = xvasprintf(fmt, ap);
    va_end(ap);
    if (json) {
        char *text = pbx_utf8_sanitize(msg, strlen(msg), NULL);
        json_t *details = json_pack("{s:s?, s:s}", "type", type, "message", text);
        json_t *o = json_pack("{s:s, s:o, s:O}", "status", "error", "error", details,
                              "error_details", details);
        char *out = json_dumps(o, PBX_JSON_FLAGS);

        PBX_ASSERT(out != NULL);
        puts(out);
        fflush(stdout);
        free(out);
        json_decref(o);
        free(text);
    }
    if (usage) {
        PBX_ASSERT(status == PBX_EXIT_USAGE);
        pbx_usage_error("run", "%s", msg);
    }
    pbx_die(status, "%s", msg);
}

/* refuse() as the error table's row `id` says. */
#define refuse_as(json, id, usage, ...) \
    refuse(json, pbx_errtable_get(id)->type, pbx_errtable_get(id)->exit, usage, __VA_ARGS__)

/* Bad usage, refused as the server refuses a bad request: a ValidationError. */
#define refuse_usage(json, ...) refuse_as(json, PBX_ERRTABLE_VALIDATION_ERROR, true, __VA_ARGS__)

/*
 * Read a whole file (or stdin for "-") into memory, capped at `max` bytes, the
 * limit `limit` (for the message that says how to raise it).
 */
static char *slurp(const char *path, uint64_t max, const char *limit, size_t *len, const char *what,
                   bool json)
{
    bool from_stdin = strcmp(path, "-") == 0;
    int fd = from_stdin ? STDIN_FILENO : open(path, O_RDONLY | O_CLOEXEC);
    struct pbx_buf b;
    char chunk[65536];
    struct stat st;
    ssize_t n;

    if (fd < 0)
        refuse_as(json, PBX_ERRTABLE_VALIDATION_ERROR, false, "cannot open %s `%s`: %s", what, path,
                  strerror(errno));
    if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode))
        refuse_as(json, PBX_ERRTABLE_VALIDATION_ERROR, false, "%s `%s` is a directory", what, path);
    pbx_buf_init(&b, max);
    while ((n = read(fd, chunk, sizeof(chunk))) != 0) {
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            refuse_as(json, PBX_ERRTABLE_VALIDATION_ERROR, false, "cannot read %s `%s`: %s", what,
                      path, strerror(errno));
        if (pbx_buf_append(&b, chunk, (size_t)n) < 0) {
            if (from_stdin)
                refuse_as(json, PBX_ERRTABLE_PAYLOAD_TOO_LARGE, false,
                          "the %s on pybox's stdin is larger than its limit of %" PRIu64
                          " bytes (raise it with --limit %s=SIZE)",
                          what, max, limit);
            refuse_as(json, PBX_ERRTABLE_PAYLOAD_TOO_LARGE, false,
                      "%s `%s` is larger than its limit of %" PRIu64
                      " bytes (raise it with --limit %s=SIZE)",
                      what, path, max, limit);
        }
    }
    if (!from_stdin)
        close(fd);
    return pbx_buf_steal(&b, len);
}

/*
 * Where the last bytes written to stdout and stderr left their lines, so that
 * pybox's own notes start on a line of their own: a script whose output ends
 * without a newline (a 1 MiB cut, print(end="")) does not get a note glued to
 * its last line.
 */
static struct {
    bool out_open; /* stdout's last byte was not a newline */
    bool err_open; /* stderr's last byte was not a newline */
    bool last_out; /* the last write was to stdout */
    int same;      /* stdout and stderr are one file (a terminal): 1, no: 0, unknown: -1 */
} lines = {.same = -1};

static bool same_file(int a, int b)
{
    struct stat sa;
    struct stat sb;

    return fstat(a, &sa) == 0 && fstat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
           sa.st_ino == sb.st_ino;
}

/* "pybox: MESSAGE" on stderr, after a newline when a line of output was left open. */
static void __attribute__((format(printf, 1, 2))) note(const char *fmt, ...)
{
    va_list ap;

    fflush(stdout);
    if (lines.same < 0)
        lines.same = same_file(STDOUT_FILENO, STDERR_FILENO);
    if (lines.err_open || (lines.same && lines.last_out && lines.out_open))
        fputc('\n', stderr);
    fputs("pybox: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    lines.err_open = false;
    lines.last_out = false;
}

static void write_stream(enum pbx_stream stream, const char *data, size_t len, void *arg)
{
    int fd = stream == PBX_STREAM_STDOUT ? STDOUT_FILENO : STDERR_FILENO;

    (void)arg;
    if (len > 0) {
        bool open_line = data[len - 1] != '\n';

        if (fd == STDOUT_FILENO)
            lines.out_open = open_line;
        else
            lines.err_open = open_line;
        lines.last_out = fd == STDOUT_FILENO;
    }
    while (len > 0) {
        ssize_t n = write(fd, data, len);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return; /* our reader went away: keep running, drop the output */
        data += n;
        len -= (size_t)n;
    }
}

/* pybox's exit status for an execution that ran (or was rejected), local or remote alike. */
static int exit_status(enum pbx_status status, bool has_exit_code, int exit_code, int sig)
{
    switch (status) {
    case PBX_STATUS_OK:
    case PBX_STATUS_ERROR:
        return has_exit_code ? exit_code : 1;
    case PBX_STATUS_TIMEOUT:
        return PBX_EXIT_TIMEOUT;
    case PBX_STATUS_REJECTED:
        return PBX_EXIT_REJECTED;
    case PBX_STATUS_MEMORY_LIMIT:
        return 128 + 9;
    case PBX_STATUS_KILLED:
        return 128 + sig;
    }
    return PBX_EXIT_FAILURE;
}

/* Whether the result's error message is worth a line on stderr (the script said nothing). */
/* The result's error message, or words for its status when it has none. */
static const char *message_or(const char *message, int status)
{
    if (message != NULL)
        return message;
    return status == PBX_STATUS_TIMEOUT        ? "the execution ran out of time"
           : status == PBX_STATUS_MEMORY_LIMIT ? "the execution ran out of memory"
           : status == PBX_STATUS_KILLED       ? "the execution was killed"
                                               : "the execution failed";
}

static bool tell_error(enum pbx_status status, const char *error_type, size_t stderr_len)
{
    return status == PBX_STATUS_TIMEOUT || status == PBX_STATUS_MEMORY_LIMIT ||
           status == PBX_STATUS_KILLED ||
           (error_type != NULL && strcmp(error_type, "ResultNotSerializable") == 0 &&
            stderr_len == 0);
}

/*
 * Write one returned file to DIR, never over an existing one unless `force`,
 * never through a symlink; `error` when it was not returned.  Returns false
 * when a file that came back could not be saved.  The name is the engine's or
 * a server's: only a flat name is saved, and only in DIR itself, opened by
 * openat() on DIR's fd (libpybox already refuses an answer naming another
 * file, src/client/result.c; this holds even if it did not).
 */
static bool save_file(const char *dir, const char *name, const void *data, size_t size,
                      const char *error, bool force)
{
    int flags = O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC | (force ? O_TRUNC : O_EXCL);
    cleanup_close int dirfd = -1;
    bool ok = true;
    char *path;
    int fd;

    if (!pbx_engine_check_name(name, NULL)) {
        note("returned file `%s` not saved: not a flat file name", name);
        return false;
    }
    if (error != NULL) {
        note("returned file `%s`: %s", name, error);
        return true;
    }
    path = xasprintf("%s/%s", dir, name);
    dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    fd = dirfd >= 0 ? openat(dirfd, name, flags, 0644) : -1;
    if (fd < 0) {
        note("returned file `%s` not saved: %s: %s%s", name, path, strerror(errno),
             errno == EEXIST ? " (--force replaces it)" : "");
        ok = false;
    } else {
        if (write(fd, data ? data : "", size) != (ssize_t)size) {
            note("returned file `%s`: short write to %s", name, path);
            ok = false;
        }
        close(fd);
    }
    free(path);
    return ok;
}

/*
 * Before a run: returned files go to a directory, and not over files there
 * unless `force` (a pattern's names are known only after the run).
 */
static void check_out_dir(const char *dir, const char *const *names, size_t n, bool force,
                          bool json)
{
    struct stat st;

    if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode))
        refuse_usage(json, "--out `%s` is not a directory", dir);
    for (size_t i = 0; i < n && !force; i++) {
        char *path;

        if (strpbrk(names[i], "*?[") != NULL)
            continue;
        path = xasprintf("%s/%s", dir, names[i]);
        if (lstat(path, &st) == 0)
            refuse_usage(json,
                         "--return %s: `%s` exists; remove it, choose another --out, or give "
                         "--force to replace it",
                         names[i], path);
        free(path);
    }
}

/*
 * The status after saving the returned files: a run that succeeded fails as
 * pybox does when a file it returned could not be saved.
 */
static int status_after_saving(int status, bool saved)
{
    return status == 0 && !saved ? PBX_EXIT_FAILURE : status;
}

/* main()'s value, a line of its own on stdout. */
static void print_line(const char *text)
{
    if (lines.out_open)
        fputc('\n', stdout);
    puts(text);
    lines.out_open = false;
    lines.last_out = true;
}

static void write_all(int fd, const char *data, size_t len)
{
    write_stream(fd == STDOUT_FILENO ? PBX_STREAM_STDOUT : PBX_STREAM_STDERR, data, len, NULL);
}

/*
 * --stream: each event a JSON line on stdout as it happens, {"event", "data"}
 * with the data of POST /v1/execute's Server-Sent Events, before the result
 * object.  Text is held back where a character was cut and made valid UTF-8,
 * as the server's stream and the result make it.
 */
static struct {
    char carry[3][4];    /* by enum pbx_stream: a character's start held back */
    size_t carry_len[3]; /* its bytes */
} streamed;

static void print_event(const char *name, json_t *data)
{
    json_t *o = json_pack("{s:s, s:o}", "event", name, "data", data);
    char *text = json_dumps(o, PBX_JSON_FLAGS);

    PBX_ASSERT(text != NULL);
    puts(text);
    fflush(stdout);
    free(text);
    json_decref(o);
}

static void stream_text(enum pbx_stream which, const char *p, size_t n)
{
    size_t len = 0;
    char *fixed;

    if (n == 0)
        return;
    fixed = pbx_utf8_sanitize(p, n, &len);
    print_event(which == PBX_STREAM_STDERR ? "stderr" : "stdout",
                json_pack("{s:s%}", "text", fixed, len));
    free(fixed);
}

static void stream_output(enum pbx_stream which, const char *data, size_t len, void *arg)
{
    size_t have = streamed.carry_len[which];
    char *joined = xmalloc(have + len + 1);
    size_t keep;

    (void)arg;
    memcpy(joined, streamed.carry[which], have);
    memcpy(joined + have, data, len);
    keep = pbx_utf8_partial_tail(joined, have + len);
    stream_text(which, joined, have + len - keep);
    memcpy(streamed.carry[which], joined + have + len - keep, keep);
    streamed.carry_len[which] = keep;
    free(joined);
}

static void stream_display(const json_t *output, void *arg)
{
    const char *type = json_string_value(json_object_get(output, "type"));

    (void)arg;
    print_event(type != NULL && strcmp(type, "result") == 0 ? "result" : "display",
                json_deep_copy(output));
}

/* The run is over: what was held back goes out. */
static void stream_finish(void)
{
    for (int i = PBX_STREAM_STDOUT; i <= PBX_STREAM_STDERR; i++) {
        stream_text((enum pbx_stream)i, streamed.carry[i], streamed.carry_len[i]);
        streamed.carry_len[i] = 0;
    }
}

/* libpybox's events (remote mode), the same lines. */
static void stream_event(enum pybox_event_kind kind, const char *data, size_t len, void *arg)
{
    (void)arg;
    if (kind == PYBOX_EVENT_STDOUT || kind == PYBOX_EVENT_STDERR)
        print_event(kind == PYBOX_EVENT_STDERR ? "stderr" : "stdout",
                    json_pack("{s:s%}", "text", data, len));
    else
        print_event(kind == PYBOX_EVENT_RESULT ? "result" : "display",
                    json_loadb(data, len, 0, NULL));
}

/*
 * Run `req` on the server at `url` through libpybox and report it as the
 * local path does: the same stdout, stderr, --json object, files and status.
 */
static int run_remote(const char *url, const char *key, const struct pbx_exec_request *req,
                      bool timeout_set, bool memory_set, bool json, bool stream,
                      const char *out_dir, bool force)
{
    struct pybox_config cfg;
    struct pybox_client *client = NULL;
    struct pybox_exec *exec = pybox_exec_new();
    struct pybox_result *res = NULL;
    struct pybox_error *err = NULL;
    enum pybox_code rc;
    enum pbx_status status;
    const char *text;
    bool saved = true;
    size_t len;
    int ret;

    if (exec == NULL)
        pbx_die(PBX_EXIT_FAILURE, "out of memory");
    pybox_config_init(&cfg);
    cfg.server = url;
    cfg.api_key = key;
    rc = pybox_client_new(&cfg, &client, &err);
    if (rc != PYBOX_OK)
        refuse_usage(json, "--server: %s", pybox_error_message(err));
    rc = pybox_exec_set_code(exec, req->code, req->code_len);
    if (rc == PYBOX_OK && req->stdin_data != NULL)
        rc = pybox_exec_set_stdin(exec, req->stdin_data, req->stdin_len);
    for (size_t i = 0; rc == PYBOX_OK && i < req->nfiles; i++)
        rc = pybox_exec_add_file(exec, req->files[i].name, req->files[i].data, req->files[i].size);
    for (size_t i = 0; rc == PYBOX_OK && i < req->nreturn; i++)
        rc = pybox_exec_add_return(exec, req->return_files[i]);
    if (rc == PYBOX_OK)
        rc = pybox_exec_set_main(exec, req->main_mode);
    if (rc == PYBOX_OK && stream)
        rc = pybox_exec_set_event_callback(exec, stream_event, NULL);
    if (rc == PYBOX_OK && timeout_set)
        rc = pybox_exec_set_timeout(exec, req->limits.wall_ms / 1000.0);
    if (rc == PYBOX_OK && memory_set)
        rc = pybox_exec_set_memory(exec, (unsigned)(req->limits.memory_bytes >> 20));
    if (rc == PYBOX_E_INVALID)
        refuse_as(json, PBX_ERRTABLE_VALIDATION_ERROR, true,
                  "the request cannot be sent to a server: %s", pybox_strerror(rc));
    if (rc != PYBOX_OK)
        refuse(json, NULL, PBX_EXIT_FAILURE, false, "the request cannot be sent to a server: %s",
               pybox_strerror(rc));

    rc = pybox_run(client, exec, &res, &err);
    if (rc != PYBOX_OK) {
        /* The code's row: each code has one exit status, whichever type brought it. */
        const struct pbx_errtable_row *row = pbx_errtable_of_pybox_code(rc, false);
        int exit_status = row != NULL ? row->exit : PBX_EXIT_FAILURE;

        if (pybox_error_retry_after(err) > 0)
            refuse(json, pybox_error_type(err), exit_status, false, "%s (retry in %u s)",
                   pybox_error_message(err), pybox_error_retry_after(err));
        refuse(json, pybox_error_type(err), exit_status, false, "%s", pybox_error_message(err));
    }
    status = (enum pbx_status)pybox_result_status(res);
    ret = exit_status(status, pybox_result_has_exit_code(res), pybox_result_exit_code(res),
                      pybox_result_signal(res));
    if (json) {
        puts(pybox_result_to_json(res));
    } else {
        text = pybox_result_stdout(res, &len);
        write_all(STDOUT_FILENO, text, len);
        text = pybox_result_stderr(res, &len);
        write_all(STDERR_FILENO, text, len);
        if (pybox_result_stdout_truncated(res))
            note("stdout was truncated at the server's limit");
        if (pybox_result_stderr_truncated(res))
            note("stderr was truncated at the server's limit");
        if (tell_error(status, pybox_result_error_type(res), len))
            note("%s", message_or(pybox_result_error_message(res), status));
        else if (req->main_mode && status == PBX_STATUS_OK)
            print_line(pybox_result_json(res) ? pybox_result_json(res) : "null");
        for (size_t i = 0; i < pybox_result_file_count(res); i++) {
            const void *data = pybox_result_file_data(res, i, &len);

            saved &= save_file(out_dir, pybox_result_file_name(res, i), data, len,
                               pybox_result_file_error(res, i), force);
        }
    }
    fflush(stdout);
    pybox_result_free(res);
    pybox_exec_free(exec);
    pybox_client_free(client);
    return status_after_saving(ret, saved);
}

/*
 * Whether pybox's stdin is the script's when no --stdin says: it is open and
 * not a terminal (a pipe, a file, /dev/null), as python3 FILE reads it.
 * Unlike python3, pybox reads it whole before the script starts, so the
 * sandbox gets it as one capped input.
 */
static bool stdin_passes_through(void)
{
    return fcntl(STDIN_FILENO, F_GETFD) != -1 && !isatty(STDIN_FILENO);
}

static bool env_true(const char *name)
{
    const char *v = getenv(name);

    return v != NULL &&
           (strcmp(v, "1") == 0 || strcasecmp(v, "true") == 0 || strcasecmp(v, "yes") == 0);
}

/* A limit out of range is refused as the server refuses one: a ValidationError. */
static void set_limit(struct pbx_limits *l, const char *assignment, const char *origin, bool json)
{
    struct pbx_error *err = NULL;

    if (pbx_limits_set(l, assignment, &err) < 0)
        refuse_as(json, PBX_ERRTABLE_VALIDATION_ERROR, true, "%s: %s", origin, err->msg);
}

/* A timeout sets the wall-clock and the CPU limit, as the server's `timeout` does. */
static void set_timeout(struct pbx_limits *l, const char *value, const char *origin, bool json)
{
    struct pbx_error *err = NULL;

    if (pbx_limits_set_timeout_text(l, value, &err) < 0)
        refuse_usage(json, "%s: %s", origin, err->msg);
}

static void set_memory(struct pbx_limits *l, const char *value, const char *origin, bool json)
{
    char *a = xasprintf("memory=%sM", value);

    set_limit(l, a, origin, json);
    free(a);
}

enum {
    OPT_STDIN = 256,
    OPT_FILE,
    OPT_RETURN,
    OPT_OUT,
    OPT_TIMEOUT,
    OPT_MEMORY,
    OPT_LIMIT,
    OPT_MAIN,
    OPT_JSON,
    OPT_ALLOW_ALL,
    OPT_PRELOAD,
    OPT_SERVER,
    OPT_API_KEY,
    OPT_FORCE,
    OPT_STREAM,
    OPT_JAIL_IDS,
};

/* --jail-ids and PYBOX_JAIL_IDS. */
static void set_jail_ids(struct pbx_engine_config *cfg, const char *what, const char *v, bool json)
{
    struct pbx_error *err = NULL;
    uint32_t base;

    if (pbx__cli_jail_ids(v, &base, &cfg->uid_count, &cfg->uid_auto, &err) < 0)
        refuse_usage(json, "%s %s", what, err->msg);
    cfg->uid_base = (uid_t)base;
}

/*
 * Whether the options say --json, looked at before any of them is applied, so
 * that a refused option value (--timeout out of range) is already reported as
 * --json reports it wherever --json comes.
 */
static bool wants_json(int argc, char **argv, const struct option *opts)
{
    bool json = false;
    int c;

    opterr = 0;
    optind = 0; /* a full restart of GNU getopt */
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (c == OPT_JSON)
            json = true;
    }
    return json;
}

int pbx_cmd_run(int argc, char **argv)
{
    static const struct option opts[] = {
        {"stdin", required_argument, NULL, OPT_STDIN},
        {"file", required_argument, NULL, OPT_FILE},
        {"return", required_argument, NULL, OPT_RETURN},
        {"out", required_argument, NULL, OPT_OUT},
        {"timeout", required_argument, NULL, OPT_TIMEOUT},
        {"memory", required_argument, NULL, OPT_MEMORY},
        {"limit", required_argument, NULL, OPT_LIMIT},
        {"main", no_argument, NULL, OPT_MAIN},
        {"json", no_argument, NULL, OPT_JSON},
        {"allow-all-imports", no_argument, NULL, OPT_ALLOW_ALL},
        {"preload", no_argument, NULL, OPT_PRELOAD},
        {"server", required_argument, NULL, OPT_SERVER},
        {"api-key", required_argument, NULL, OPT_API_KEY},
        {"force", no_argument, NULL, OPT_FORCE},
        {"stream", no_argument, NULL, OPT_STREAM},
        {"jail-ids", required_argument, NULL, OPT_JAIL_IDS},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct pbx_engine_config cfg;
    struct pbx_engine *engine = NULL;
    struct pbx_exec_request req;
    struct pbx_exec_result res;
    struct pbx_error *err = NULL;
    struct pbx_file_in files[MAX_ARGS_FILES];
    const char *file_args[MAX_ARGS_FILES];
    const char *returns[MAX_ARGS_FILES];
    size_t nfiles = 0;
    size_t nreturn = 0;
    const char *stdin_path = NULL;
    const char *out_dir = ".";
    const char *code_path = NULL;
    bool json = false;
    bool stream = false;
    bool force = false;
    bool saved = true;
    bool cpu_explicit = false;
    uint32_t cpu_ms = 0; /* the CPU limit set on its own, when cpu_explicit */
    bool timeout_set = getenv("PYBOX_TIMEOUT") != NULL;
    bool memory_set = getenv("PYBOX_MEMORY_MB") != NULL;
    bool local_only = false; /* an option only local mode has was given */
    const char *server = getenv("PYBOX_SERVER");
    const char *api_key = getenv("PYBOX_API_KEY");
    bool api_key_given = false;
    uint32_t default_cpu;
    char *code;
    size_t code_len;
    char *stdin_data = NULL;
    int status;
    int c;

    json = wants_json(argc, argv, opts);
    pbx_engine_config_default(&cfg);
    pbx_exec_request_init(&req);
    default_cpu = req.limits.cpu_ms;
    if (getenv("PYBOX_TIMEOUT") != NULL)
        set_timeout(&req.limits, getenv("PYBOX_TIMEOUT"), "PYBOX_TIMEOUT", json);
    if (getenv("PYBOX_MEMORY_MB") != NULL)
        set_memory(&req.limits, getenv("PYBOX_MEMORY_MB"), "PYBOX_MEMORY_MB", json);
    if (getenv("PYBOX_LIMITS") != NULL) {
        char *all = xstrdup(getenv("PYBOX_LIMITS"));
        char *save = NULL;

        for (char *t = strtok_r(all, " ,", &save); t != NULL; t = strtok_r(NULL, " ,", &save)) {
            set_limit(&req.limits, t, "PYBOX_LIMITS", json);
            if (strncmp(t, "cpu=", 4) == 0) {
                cpu_explicit = true;
                cpu_ms = req.limits.cpu_ms;
            }
        }
        free(all);
    }
    req.allow_all_imports = env_true("PYBOX_ALLOW_ALL_IMPORTS");
    if (getenv("PYBOX_JAIL_IDS") != NULL && getenv("PYBOX_JAIL_IDS")[0] != '\0')
        set_jail_ids(&cfg, "PYBOX_JAIL_IDS", getenv("PYBOX_JAIL_IDS"), json);

    opterr = 0;
    optind = 0; /* again from the start, for real this time */
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'h':
            help();
            return 0;
        case OPT_STDIN:
            stdin_path = optarg;
            break;
        case OPT_FILE:
            if (nfiles == MAX_ARGS_FILES)
                refuse_usage(json, "too many --file options");
            file_args[nfiles++] = optarg;
            break;
        case OPT_RETURN:
            if (nreturn == MAX_ARGS_FILES)
                refuse_usage(json, "too many --return options");
            if (!pbx_engine_check_name(optarg, &err))
                refuse_as(json, PBX_ERRTABLE_VALIDATION_ERROR, true, "--return: %s", err->msg);
            returns[nreturn++] = optarg;
            break;
        case OPT_OUT:
            out_dir = optarg;
            break;
        case OPT_TIMEOUT:
            set_timeout(&req.limits, optarg, "--timeout", json);
            timeout_set = true;
            break;
        case OPT_MEMORY:
            set_memory(&req.limits, optarg, "--memory", json);
            memory_set = true;
            break;
        case OPT_LIMIT:
            local_only = true;
            set_limit(&req.limits, optarg, "--limit", json);
            if (strncmp(optarg, "cpu=", 4) == 0) {
                cpu_explicit = true;
                cpu_ms = req.limits.cpu_ms;
            }
            break;
        case OPT_MAIN:
            req.main_mode = true;
            break;
        case OPT_JSON:
            break; /* known since wants_json() */
        case OPT_ALLOW_ALL:
            req.allow_all_imports = true;
            local_only = true;
            break;
        case OPT_PRELOAD:
            cfg.preload = true;
            break;
        case OPT_SERVER:
            server = optarg;
            break;
        case OPT_API_KEY:
            api_key = optarg;
            api_key_given = true;
            break;
        case OPT_FORCE:
            force = true;
            break;
        case OPT_STREAM:
            stream = true;
            break;
        case OPT_JAIL_IDS:
            set_jail_ids(&cfg, "--jail-ids", optarg, json);
            local_only = true;
            break;
        case ':':
            refuse_usage(json, "option `%s` needs a value", argv[optind - 1]);
        default:
            refuse_usage(json, "unknown option `%s`", argv[optind - 1]);
        }
    }
    /*
     * --timeout sets the CPU limit too, as `timeout` does in POST /v1/execute and
     * libpybox's local mode, so a run gives the same result here and with
     * --server; a longer wall time from --limit also lifts the CPU limit.  A
     * CPU limit set on its own wins.
     */
    if (cpu_explicit)
        req.limits.cpu_ms = cpu_ms;
    else if (timeout_set || req.limits.wall_ms > default_cpu)
        req.limits.cpu_ms = req.limits.wall_ms;
    if (optind < argc)
        code_path = argv[optind++];
    if (optind < argc)
        refuse_usage(json, "unexpected argument `%s` (script arguments are not supported)",
                     argv[optind]);
    if (code_path == NULL) {
        if (isatty(STDIN_FILENO))
            refuse_usage(json, "no script given: pass FILE, or - to read it from stdin");
        code_path = "-";
    }
    if (stdin_path != NULL && strcmp(stdin_path, "-") == 0 && strcmp(code_path, "-") == 0)
        refuse_usage(json, "the code and --stdin cannot both come from stdin");
    if (server != NULL && server[0] == '\0')
        server = NULL;
    if (server != NULL && local_only)
        refuse_usage(json, "--limit, --allow-all-imports and --jail-ids are for local runs; "
                           "with --server the server sets them");
    if (stream && !json)
        refuse_usage(json, "--stream needs --json: its events are JSON lines");
    if (server == NULL && api_key_given)
        refuse_usage(json, "--api-key needs --server (or PYBOX_SERVER)");

    if (!json && nreturn > 0)
        check_out_dir(out_dir, returns, nreturn, force, json);

    code = slurp(code_path, req.limits.code_bytes, "code", &code_len, "script", json);
    req.code = code;
    req.code_len = code_len;
    if (stdin_path != NULL) {
        stdin_data = slurp(stdin_path, req.limits.stdin_bytes, "stdin", &req.stdin_len,
                           strcmp(stdin_path, "-") == 0 ? "input" : "stdin file", json);
        req.stdin_data = stdin_data;
    } else if (strcmp(code_path, "-") != 0 && stdin_passes_through()) {
        /* Nothing to pass (/dev/null, an empty pipe) is no stdin, as before. */
        stdin_data = slurp("-", req.limits.stdin_bytes, "stdin", &req.stdin_len, "input", json);
        req.stdin_data = req.stdin_len > 0 ? stdin_data : NULL;
    }
    for (size_t i = 0; i < nfiles; i++) {
        const char *eq = strchr(file_args[i], '=');
        const char *path = eq != NULL ? eq + 1 : file_args[i];
        const char *base = strrchr(file_args[i], '/');
        char *name;

        if (eq == file_args[i] || (eq != NULL && eq[1] == '\0'))
            refuse_usage(json, "--file `%s` is not [NAME=]PATH", file_args[i]);
        /* Without NAME=, the file keeps its own name, as cp(1) gives it in a directory. */
        if (eq != NULL)
            name = xstrndup(file_args[i], (size_t)(eq - file_args[i]));
        else
            name = xstrdup(base != NULL ? base + 1 : file_args[i]);
        if (!pbx_engine_check_name(name, &err))
            refuse_as(json, PBX_ERRTABLE_VALIDATION_ERROR, true, "--file `%s`: %s", file_args[i],
                      err->msg);
        files[i].name = name;
        files[i].data = slurp(path, req.limits.input_file_bytes, "file-size", &files[i].size,
                              "input file", json);
    }
    req.files = files;
    req.nfiles = nfiles;
    req.return_files = returns;
    req.nreturn = nreturn;
    if (server != NULL) {
        status = run_remote(server, api_key, &req, timeout_set, memory_set, json, stream, out_dir,
                            force);
        goto out_free;
    }
    if (!json) {
        req.on_output = write_stream;
    } else if (stream) {
        req.on_output = stream_output;
        req.on_display = stream_display;
    }

    if (pbx_engine_start(&cfg, &engine, &err) < 0)
        refuse_as(json, PBX_ERRTABLE_INTERNAL_SERVER_ERROR, false, "%s", err->msg);
    if (pbx_engine_execute(engine, &req, &res, &err) < 0) {
        /* Refused as the server refuses the same request (common/errtable.h). */
        const struct pbx_errtable_row *row = pbx_errtable_of_code(err->code, false);

        pbx_engine_free(engine);
        refuse(json, row->type, row->exit, false, "%s", err->msg);
    }
    pbx_engine_free(engine);
    if (stream)
        stream_finish();

    status = exit_status(res.status, res.has_exit_code, res.exit_code, res.signal);
    if (json) {
        json_t *o = pbx_exec_result_to_json(&res);
        char *text = json_dumps(o, PBX_JSON_FLAGS);

        puts(text);
        free(text);
        json_decref(o);
    } else {
        if (res.stdout_truncated)
            note("stdout was truncated at %" PRIu64 " bytes", req.limits.stdout_bytes);
        if (res.stderr_truncated)
            note("stderr was truncated at %" PRIu64 " bytes", req.limits.stderr_bytes);
        if (tell_error(res.status, json_string_value(json_object_get(res.error, "type")),
                       res.stderr_len))
            note("%s", message_or(json_string_value(json_object_get(res.error, "message")),
                                  (int)res.status));
        else if (req.main_mode && res.status == PBX_STATUS_OK) {
            char *text = json_dumps(res.result ? res.result : json_null(), PBX_JSON_VALUE_FLAGS);

            print_line(text);
            free(text);
        }
        for (size_t i = 0; i < res.nfiles; i++)
            saved &= save_file(out_dir, res.files[i].name, res.files[i].data, res.files[i].size,
                               res.files[i].error, force);
        status = status_after_saving(status, saved);
    }
    fflush(stdout);
    pbx_exec_result_release(&res);
out_free:
    for (size_t i = 0; i < nfiles; i++) {
        free((void *)files[i].name);
        free((void *)files[i].data);
    }
    free(stdin_data);
    free(code);
    return status;
}
