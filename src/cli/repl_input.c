/*
 * pybox repl's input: where an entry ends (Python's rules for brackets,
 * strings, blocks), read from the prompt (libedit, with history) on a
 * terminal, or from a script on stdin otherwise; each entry goes to
 * pbx__cli_repl_entry().
 */
#include <errno.h>
#include <histedit.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/cli.h"
#include "cli/repl.h"
#include "common/buf.h"
#include "common/xalloc.h"
#include "pybox/pybox.h"
#include "common/banned.h"

#define MAX_LINE     (256u << 20) /* an entry */
#define HISTORY_SIZE 1000

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

/* ---- a script on stdin ---- */

int pbx__cli_repl_input_script(struct repl *r)
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
                pbx__cli_repl_entry(r, cur.data);
            pbx_buf_release(&cur);
            pbx_buf_init(&cur, MAX_LINE);
        }
        if (cur.len == 0 && line[0] == '%') {
            pbx__cli_repl_entry(r, line);
            continue;
        }
        if (pbx_buf_append(&cur, line, (size_t)n) < 0)
            pbx_die(PBX_EXIT_USAGE, "an entry of the script is over %u bytes", MAX_LINE);
    }
    if (cur.len > 0 && !blank(cur.data, false))
        pbx__cli_repl_entry(r, cur.data);
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

int pbx__cli_repl_input_prompt(struct repl *r)
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
            pbx__cli_repl_entry(r, line);
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
        pbx__cli_repl_entry(r, cur.data);
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
