/*
 * The C side of tests/client/test_error_table.py: one libpybox run, or the
 * error table, as one line of JSON on stdout.
 *
 *   client_driver --table
 *       {"rows": [{"id", "type", "status", "remote", "local", "exit", "python",
 *        "from"}, ...], "by_status": {"100": "ID", ..., "599": "ID"}}: every row
 *       of common/errtable.h (codes by name, "local" null for PBX_ERRTABLE_NONE,
 *       "from" an internal code's name, "ANY" or null), and the row each HTTP
 *       status means without a known type.
 *
 *   client_driver [--server URL] [--api-key KEY] [--network] [--timeout S]
 *                 [--memory MB] [--stdin PATH] [--file NAME=PATH]...
 *                 [--return NAME]... CODE_PATH
 *       Builds the request with libpybox's public API and runs it, in local
 *       mode without --server.  Prints {"setup": NAME} when a setter refused
 *       it (its code's name), else {"rc": NAME, "type", "http_status",
 *       "message"} for a failed run, or {"rc": "PYBOX_OK", "status",
 *       "error_type", "files": {NAME: SIZE or ERROR}} for a result.  Exits 0
 *       whenever it printed.
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/errtable.h"
#include "pybox/pybox.h"
#include "common/banned.h"

#define MAX_FILE (64u << 20)

static void print_json(json_t *o)
{
    char *text = json_dumps(o, JSON_COMPACT);

    if (text == NULL) {
        fprintf(stderr, "client_driver: cannot encode the answer\n");
        exit(1);
    }
    puts(text);
    free(text);
    json_decref(o);
}

static json_t *code_name(int code)
{
    return json_string(pybox_code_name(code));
}

static int dump_table(void)
{
    const struct pbx_errtable_row *r;
    json_t *rows = json_array();
    json_t *by_status = json_object();

    for (size_t i = 0; (r = pbx_errtable_get(i)) != NULL; i++) {
        json_t *from = r->from == PBX_ERRTABLE_ANY ? json_string("ANY")
                       : r->from != 0              ? json_string(pbx_err_name(r->from))
                                                   : json_null();

        json_array_append_new(
            rows, json_pack("{s:s, s:s?, s:i, s:o, s:o, s:i, s:s?, s:o}", "id", r->name, "type",
                            r->type, "status", r->status, "remote", code_name(r->remote), "local",
                            r->local == PBX_ERRTABLE_NONE ? json_null() : code_name(r->local),
                            "exit", r->exit, "python", r->python, "from", from));
    }
    for (int status = 100; status <= 599; status++) {
        char key[16];

        snprintf(key, sizeof(key), "%d", status);
        json_object_set_new(by_status, key, json_string(pbx_errtable_of_status(status)->name));
    }
    print_json(json_pack("{s:o, s:o}", "rows", rows, "by_status", by_status));
    return 0;
}

/* A whole file, or exit 1. */
static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rbe");
    char *data = malloc(MAX_FILE);

    if (f == NULL || data == NULL) {
        fprintf(stderr, "client_driver: %s: %s\n", path, strerror(errno));
        exit(1);
    }
    *len = fread(data, 1, MAX_FILE, f);
    fclose(f);
    return data;
}

/* The returned files' names, {name: size, or the error string}. */
static json_t *file_names(const struct pybox_result *res)
{
    json_t *o = json_object();

    for (size_t i = 0; i < pybox_result_file_count(res); i++) {
        const char *error = pybox_result_file_error(res, i);
        size_t size = 0;

        (void)pybox_result_file_data(res, i, &size);
        json_object_set_new(o, pybox_result_file_name(res, i),
                            error != NULL ? json_string(error) : json_integer((json_int_t)size));
    }
    return o;
}

/* The setter's code when it failed: print it and end. */
static void check_setup(enum pybox_code rc)
{
    if (rc == PYBOX_OK)
        return;
    print_json(json_pack("{s:o}", "setup", code_name(rc)));
    exit(0);
}

enum {
    OPT_TABLE = 256,
    OPT_SERVER,
    OPT_KEY,
    OPT_NETWORK,
    OPT_TIMEOUT,
    OPT_MEMORY,
    OPT_STDIN,
    OPT_FILE,
    OPT_RETURN
};

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"table", no_argument, NULL, OPT_TABLE},
        {"server", required_argument, NULL, OPT_SERVER},
        {"api-key", required_argument, NULL, OPT_KEY},
        {"network", no_argument, NULL, OPT_NETWORK},
        {"timeout", required_argument, NULL, OPT_TIMEOUT},
        {"memory", required_argument, NULL, OPT_MEMORY},
        {"stdin", required_argument, NULL, OPT_STDIN},
        {"file", required_argument, NULL, OPT_FILE},
        {"return", required_argument, NULL, OPT_RETURN},
        {NULL, 0, NULL, 0},
    };
    struct pybox_config cfg;
    struct pybox_client *client = NULL;
    struct pybox_exec *exec = pybox_exec_new();
    struct pybox_result *res = NULL;
    struct pybox_error *err = NULL;
    enum pybox_code rc;
    char *data;
    size_t len;
    int c;

    pybox_config_init(&cfg);
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case OPT_TABLE:
            pybox_exec_free(exec);
            return dump_table();
        case OPT_SERVER:
            cfg.server = optarg;
            break;
        case OPT_KEY:
            cfg.api_key = optarg;
            break;
        case OPT_NETWORK:
            cfg.network = true;
            break;
        case OPT_TIMEOUT:
            check_setup(pybox_exec_set_timeout(exec, strtod(optarg, NULL)));
            break;
        case OPT_MEMORY:
            check_setup(pybox_exec_set_memory(exec, (unsigned)strtoul(optarg, NULL, 10)));
            break;
        case OPT_STDIN:
            data = slurp(optarg, &len);
            check_setup(pybox_exec_set_stdin(exec, data, len));
            free(data);
            break;
        case OPT_FILE: {
            char *eq = strchr(optarg, '=');

            if (eq == NULL)
                return 2;
            *eq = '\0';
            data = slurp(eq + 1, &len);
            check_setup(pybox_exec_add_file(exec, optarg, data, len));
            free(data);
            break;
        }
        case OPT_RETURN:
            check_setup(pybox_exec_add_return(exec, optarg));
            break;
        default:
            return 2;
        }
    }
    if (optind + 1 != argc)
        return 2;
    data = slurp(argv[optind], &len);
    check_setup(pybox_exec_set_code(exec, data, len));
    free(data);
    rc = pybox_client_new(&cfg, &client, &err);
    if (rc == PYBOX_OK)
        rc = pybox_run(client, exec, &res, &err);
    if (rc == PYBOX_OK)
        print_json(json_pack("{s:s, s:s, s:s?, s:o}", "rc", "PYBOX_OK", "status",
                             pybox_status_name(pybox_result_status(res)), "error_type",
                             pybox_result_error_type(res), "files", file_names(res)));
    else
        print_json(json_pack("{s:o, s:s?, s:i, s:s}", "rc", code_name(rc), "type",
                             pybox_error_type(err), "http_status", pybox_error_http_status(err),
                             "message", pybox_error_message(err)));
    pybox_error_free(err);
    pybox_result_free(res);
    pybox_exec_free(exec);
    pybox_client_free(client);
    return 0;
}
