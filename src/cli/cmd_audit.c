/*
 * pybox audit: the newest records of the store's audit log, one JSON object
 * per line (when, who, which route, the code's SHA-256, how it ended, how
 * long it ran), from the SQLite file or the Redis stream every node writes.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "store/store.h"
#include "common/banned.h"

#define AUDIT_MAX 100000 /* the most records one call prints */

static void usage(FILE *out)
{
    fprintf(out, "usage: pybox audit [--last N] [--data DIR | --store URI]\n\n"
                 "Print the newest records of the audit log of `pybox serve`'s store, one JSON\n"
                 "object per line: time, client, key_name, route, code_sha256, status,\n"
                 "duration_ms.\n\n"
                 "  --last N      how many records, newest last (20; at most 100000)\n"
                 "  --data DIR    pybox's data directory; the store is sqlite:DIR/pybox.db\n"
                 "  --store URI   the store itself, sqlite:PATH or redis://HOST[:PORT][/DB]\n"
                 "                (env PYBOX_STORE); --store beats --data\n"
                 "  -h, --help    show this help\n");
}

int pbx_cmd_audit(int argc, char **argv)
{
    enum { OPT_LAST = 256, OPT_DATA, OPT_STORE };
    static const struct option opts[] = {
        {"last", required_argument, NULL, OPT_LAST},
        {"data", required_argument, NULL, OPT_DATA},
        {"store", required_argument, NULL, OPT_STORE},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *data = NULL, *store = NULL;
    struct pbx_error *err = NULL;
    struct pbx_store *st;
    unsigned long last = 20;
    char *text = NULL;
    char *shown;
    char *end;
    int c;

    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        switch (c) {
        case OPT_LAST:
            last = strtoul(optarg, &end, 10);
            if (optarg[0] < '0' || optarg[0] > '9' || *end != '\0' || last == 0 || last > AUDIT_MAX)
                pbx_usage_error("audit", "--last `%s` is not a whole number from 1 to %d", optarg,
                                AUDIT_MAX);
            break;
        case OPT_DATA:
            data = optarg;
            break;
        case OPT_STORE:
            store = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        case ':':
            pbx_usage_error("audit", "option `%s` needs a value", argv[optind - 1]);
        default:
            pbx_usage_error("audit", "unknown option `%s`", argv[optind - 1]);
        }
    }
    if (optind < argc)
        pbx_usage_error("audit", "unexpected argument `%s`", argv[optind]);
    st = pbx__cli_open_store("audit", data, store, false, 1, &shown);
    if (pbx_store_audit_tail(st, last, &text, &err) < 0)
        pbx_die(1, "the audit log of %s: %s", shown, err->msg);
    fprintf(stderr, "pybox: audit log of %s\n", shown);
    fputs(text, stdout);
    free(text);
    free(shown);
    pbx_store_close(st);
    return fflush(stdout) == 0 ? 0 : 1;
}
