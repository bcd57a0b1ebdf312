/*
 * pybox's data directory and store: one rule for every command that opens the
 * store (`pybox serve`, `pybox keys ...`, `pybox audit`), so that a key `pybox
 * keys create` makes is the key `pybox serve` finds, whoever runs them.
 */
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "common/xalloc.h"
#include "store/store.h"
#include "common/banned.h"

/*
 * The data directory when neither an option nor the environment names one:
 * root's is the system's, /var/lib/pybox (the FHS place of a service's state,
 * which pybox serve as root is); any other user's is their own, as the XDG Base
 * Directory specification puts it: $XDG_DATA_HOME/pybox when that variable is
 * an absolute path (a relative one is invalid and ignored), else
 * ~/.local/share/pybox, HOME falling back to the passwd entry.  It depends on
 * who runs pybox, never on what exists, so two commands of one user agree.
 */
char *pbx__cli_default_data_dir(void)
{
    const char *xdg = getenv("XDG_DATA_HOME");
    const char *home = getenv("HOME");
    struct passwd pw;
    struct passwd *found = NULL;
    char buf[16384];

    if (geteuid() == 0)
        return xstrdup(PBX_CLI_SYSTEM_DATA_DIR);
    if (xdg != NULL && xdg[0] == '/')
        return xasprintf("%s/pybox", xdg);
    if (home == NULL || home[0] != '/') {
        if (getpwuid_r(getuid(), &pw, buf, sizeof(buf), &found) != 0 || found == NULL)
            return NULL;
        home = found->pw_dir;
    }
    if (home == NULL || home[0] != '/')
        return NULL;
    return xasprintf("%s/.local/share/pybox", home);
}

/* `uri` with a relative sqlite path made absolute against the current directory; frees `uri`. */
static char *absolute(char *uri)
{
    const char *path;
    char cwd[4096];
    char *out;

    if (strncmp(uri, "sqlite:", 7) != 0)
        return uri;
    path = uri + 7;
    if (path[0] == '\0' || path[0] == '/' || strcmp(path, ":memory:") == 0)
        return uri;
    if (getcwd(cwd, sizeof(cwd)) == NULL)
        return uri; /* the store reports what it cannot open, relative as given */
    out = xasprintf("sqlite:%s/%s", strcmp(cwd, "/") == 0 ? "" : cwd, path);
    free(uri);
    return out;
}

char *pbx__cli_store_uri(const char *cmd, const char *data, const char *store)
{
    const char *env_store = getenv("PYBOX_STORE");
    const char *env_data = getenv("PYBOX_DATA");
    char *dir;
    char *uri;

    if (data != NULL && data[0] == '\0')
        pbx_usage_error(cmd, "--data needs a directory");
    if (store != NULL)
        return absolute(xstrdup(store));
    if (data != NULL)
        return absolute(xasprintf("sqlite:%s/pybox.db", data));
    if (env_store != NULL && env_store[0] != '\0')
        return absolute(xstrdup(env_store));
    if (env_data != NULL && env_data[0] != '\0')
        return absolute(xasprintf("sqlite:%s/pybox.db", env_data));
    dir = pbx__cli_default_data_dir();
    if (dir == NULL)
        pbx_usage_error(cmd, "no data directory: HOME is not set; give --data DIR or PYBOX_DATA");
    uri = xasprintf("sqlite:%s/pybox.db", dir);
    free(dir);
    return uri;
}

struct pbx_store *pbx__cli_open_store(const char *cmd, const char *data, const char *store,
                                      bool create, int status, char **shown)
{
    struct pbx_store *st = NULL;
    struct pbx_error *err = NULL;
    char *uri = pbx__cli_store_uri(cmd, data, store);

    if ((create ? pbx_store_open : pbx_store_open_existing)(uri, &st, &err) < 0) {
        /* A URI pybox cannot use is bad usage; a store that fails is not. */
        if (strncmp(uri, "sqlite:", 7) != 0 || uri[7] == '\0') {
            if (err->code == PBX_E_UNSUPPORTED || err->code == PBX_E_INVAL)
                pbx_usage_error(cmd, "%s", err->msg);
        }
        pbx_die(status, "%s", err->msg);
    }
    *shown = pbx_store_uri_redact(uri);
    free(uri);
    return st;
}
