/* The pybox command line: one function per subcommand. */
#ifndef PBX_CLI_CLI_H
#define PBX_CLI_CLI_H

#include <stdnoreturn.h>

/* Exit statuses of pybox itself (README.md, "pybox run"). */
#define PBX_EXIT_USAGE    2   /* bad usage */
#define PBX_EXIT_TIMEOUT  124 /* the wall or CPU limit was hit, as timeout(1) */
#define PBX_EXIT_FAILURE  125 /* pybox itself failed */
#define PBX_EXIT_REJECTED 126 /* policy refused the code before it ran */
/* `pybox run --server` when the request did not run (sysexits.h numbers). */
#define PBX_EXIT_UNAVAILABLE 69 /* the server could not be reached or did not answer */
#define PBX_EXIT_TEMPFAIL    75 /* the server is busy or the rate limit was reached: retry later */
#define PBX_EXIT_NOPERM      77 /* the API key is not valid or not allowed this */

int pbx_cmd_run(int argc, char **argv);
int pbx_cmd_doctor(int argc, char **argv);
int pbx_cmd_keys(int argc, char **argv);
int pbx_cmd_serve(int argc, char **argv);

/* Print "pybox: MESSAGE" and exit with `status`. */
noreturn void pbx_die(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Print a one-line usage error naming `cmd`'s help and exit 2. */
noreturn void pbx_usage_error(const char *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
