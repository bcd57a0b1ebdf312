/* The pybox command line: one function per subcommand. */
#ifndef PBX_CLI_CLI_H
#define PBX_CLI_CLI_H

#include <stdbool.h>
#include <stdint.h>
#include <stdnoreturn.h>

/*
 * Exit statuses of pybox itself (README.md, "pybox run"): PBX_EXIT_USAGE (2),
 * PBX_EXIT_FAILURE (125) and those of a request that did not run come with the
 * error table, which says which failure exits with which.
 */
#include "common/errtable.h"
#include "common/error.h"
#define PBX_EXIT_TIMEOUT  124 /* the wall or CPU limit was hit, as timeout(1) */
#define PBX_EXIT_REJECTED 126 /* policy refused the code before it ran */

int pbx_cmd_run(int argc, char **argv);
int pbx_cmd_doctor(int argc, char **argv);
int pbx_cmd_keys(int argc, char **argv);
int pbx_cmd_serve(int argc, char **argv);
int pbx_cmd_repl(int argc, char **argv);
int pbx_cmd_mcp(int argc, char **argv);
int pbx_cmd_audit(int argc, char **argv);

/* The data directory of root when nothing else is said (pbx__cli_default_data_dir()). */
#define PBX_CLI_SYSTEM_DATA_DIR "/var/lib/pybox"

/*
 * The data directory when no option or variable names one: /var/lib/pybox for
 * root, else $XDG_DATA_HOME/pybox or ~/.local/share/pybox.  NULL when there is
 * no home to put it in.  Caller frees.
 */
char *pbx__cli_default_data_dir(void);

/*
 * The store every command that has one opens, as a URI: `store` (--store),
 * else `data`/pybox.db (--data DIR), else PYBOX_STORE, else
 * $PYBOX_DATA/pybox.db, else pbx__cli_default_data_dir()'s pybox.db.  Options
 * beat the environment and a store beats a data directory; a relative sqlite
 * path is made absolute, so the store a command names on stderr is the one it
 * used.  An empty `data`, or no home for the default, is a usage error of
 * `cmd`.  Caller frees.
 */
char *pbx__cli_store_uri(const char *cmd, const char *data, const char *store);

struct pbx_store;

/*
 * Open the store pbx__cli_store_uri() names for `cmd`: creating it only when
 * `create` (a mistyped --data is then an error).  Its URI goes to *shown
 * (caller frees) as messages show it, without a password, for the line that
 * names it.  A URI pybox cannot use is a usage error; a store that fails
 * exits with `status`.
 */
struct pbx_store *pbx__cli_open_store(const char *cmd, const char *data, const char *store,
                                      bool create, int status, char **shown);

/*
 * Parse a --jail-ids or PYBOX_JAIL_IDS value, "BASE[:COUNT]" or "auto"
 * (src/sandbox/uidmap.h), and check a range against the ids of this user
 * namespace now, so that one it lacks is refused before anything starts,
 * with a message naming the ranges it has.  Returns 0 with the range, or < 0
 * with *err.
 */
int pbx__cli_jail_ids(const char *spec, uint32_t *base, uint32_t *count, bool *is_auto,
                      struct pbx_error **err);

/* Print "pybox: MESSAGE" and exit with `status`. */
noreturn void pbx_die(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Print a one-line usage error naming `cmd`'s help and exit 2. */
noreturn void pbx_usage_error(const char *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
