/*
 * pybox repl's two faces: the prompt (cmd_repl.c, which reads entries with
 * repl_input.c and runs them with repl_session.c) and the machine protocol
 * of --jsonl (repl_jsonl.c), on one client and one session.
 */
#ifndef PBX_CLI_REPL_H
#define PBX_CLI_REPL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <termios.h>

#include "pybox/pybox.h"

struct repl {
    struct pybox_client *client;       /* local or remote */
    struct pybox_session_options opts; /* of every session it opens */
    struct pybox_session *session;     /* the session, or NULL after one ended */
    pthread_mutex_t session_lock;      /* held by whoever uses `session` */
    pthread_mutex_t call_lock;         /* guards running, and `session` while it is set */
    atomic_bool running;               /* a call runs (set under call_lock) */
    atomic_bool quit;                  /* SIGTERM or SIGHUP came: end when the call is over */
    atomic_bool interrupted;           /* the running call was interrupted */
    bool interactive;                  /* a terminal, with libedit */
    struct termios saved_tty;          /* the terminal as it was, to restore on a signal */
    bool have_tty;                     /* saved_tty is set */
    const char *out_dir;               /* where images go */
    unsigned entry;                    /* entries run, for image names */
    unsigned images;                   /* images of this entry */
    bool out_open;                     /* stdout's last byte was not a newline */
    const char *shown_server;          /* the server without user:password@, or NULL */
};

/* Close the session (if any) and forget it. */
void pbx__cli_repl_end_session(struct repl *r);

/*
 * Run one entry, a %command or code, under session_lock.  When the REPL is
 * to quit (a signal came meanwhile) it does not return: the interrupter
 * ends the session and the process.
 */
void pbx__cli_repl_entry(struct repl *r, const char *code);

/*
 * The host file `path` whole, in a new buffer the caller frees (*len bytes,
 * at most a session's file may be), or NULL, said on stderr.
 */
char *pbx__cli_repl_read_local(const char *path, size_t *len);

/* The last component of `path` (within it), or `path` when it ends with `/`. */
const char *pbx__cli_repl_base_name(const char *path);

/* Read a script on stdin, each top-level statement an entry, until EOF.  Returns 0. */
int pbx__cli_repl_input_script(struct repl *r);

/* Read entries at the prompt (libedit), until Ctrl-D.  Returns 0. */
int pbx__cli_repl_input_prompt(struct repl *r);

/* The %command `line` done; false when it is none (then it is code). */
bool pbx__cli_repl_session_command(struct repl *r, const char *line);

/* Run the entry `code` in a live session and show what it gave. */
void pbx__cli_repl_session_run(struct repl *r, const char *code);

/*
 * --jsonl: answer requests on stdin until EOF, {"op": "close"} or a byte on
 * `wake_fd` (a signal came), then end the session.  Returns the exit status.
 */
int pbx__cli_repl_jsonl(struct repl *r, int wake_fd);

/* --jsonl's first line when the session could not be opened: {"ready": false, "error"}. */
void pbx__cli_repl_jsonl_not_ready(enum pybox_code rc, const struct pybox_error *err);

#endif
