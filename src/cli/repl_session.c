/*
 * pybox repl's entries in the session: code run with pybox_session_run()
 * and what it gives shown as it comes (stdout and stderr, images written to
 * files, the final expression's value), a %command done with the session's
 * calls, and the session replaced when it has ended.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/repl.h"
#include "common/xalloc.h"
#include "pybox/pybox.h"
#include "common/banned.h"

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

void pbx__cli_repl_session_run(struct repl *r, const char *code)
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

bool pbx__cli_repl_session_command(struct repl *r, const char *line)
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
        char *data = pbx__cli_repl_read_local(a, &len);
        const char *to = b != NULL ? b : pbx__cli_repl_base_name(a);

        if (data != NULL && pybox_session_put_file(r->session, to, data, len, &err) != PYBOX_OK)
            command_failed("%put", err);
        else if (data != NULL)
            printf("%s -> /work/%s (%zu bytes)\n", a, to, len);
        free(data);
    } else if (strcmp(name, "%get") == 0 && a != NULL && extra == NULL) {
        const char *to = b != NULL ? b : pbx__cli_repl_base_name(a);
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
