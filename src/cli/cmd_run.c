/* pybox run: one execution in a local sandbox. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "common/buf.h"
#include "common/xalloc.h"
#include "engine/engine.h"
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
        "  --stdin FILE          give the script FILE (or - for pybox's stdin) as its stdin\n"
        "  --file NAME=PATH      put the host file PATH in /work/NAME (repeatable)\n"
        "  --return NAME         return /work/NAME after the run (repeatable); without --json it\n"
        "                        is written to --out DIR, never over an existing file\n"
        "  --out DIR             where returned files go without --json (default: .)\n"
        "  --timeout S           wall-clock limit in seconds (default 10; env PYBOX_TIMEOUT);\n"
        "                        the CPU limit follows a longer one unless --limit cpu is set\n"
        "  --memory MB           memory limit in MiB (default 256; env PYBOX_MEMORY_MB)\n"
        "  --limit NAME=VALUE    set any limit, e.g. --limit pids=20 --limit disk=128M\n"
        "                        (repeatable; env PYBOX_LIMITS=\"NAME=VALUE ...\"); see below\n"
        "  --main                call main() and report its JSON-encoded return value\n"
        "  --json                print the result object (DESIGN.md 4.1.1) instead\n"
        "  --allow-all-imports   do not apply the import allowlist (env PYBOX_ALLOW_ALL_IMPORTS=1)\n"
        "  --preload             import numpy and PIL before the run (what the server does)\n"
        "  -h, --help            show this help\n\n"
        "Exit statuses: the script's; 124 timeout; 125 pybox failed; 126 rejected by policy;\n"
        "128+N killed by signal N (137 when the memory limit was hit); 2 bad usage.\n"
        "With --json the same statuses apply after the object is printed.\n\n"
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

/* Read a whole file (or stdin for "-") into memory, capped. */
static char *slurp(const char *path, uint64_t max, size_t *len, const char *what)
{
    int fd = strcmp(path, "-") == 0 ? STDIN_FILENO : open(path, O_RDONLY | O_CLOEXEC);
    struct pbx_buf b;
    char chunk[65536];
    struct stat st;
    ssize_t n;

    if (fd < 0)
        pbx_die(PBX_EXIT_USAGE, "cannot open %s `%s`: %s", what, path, strerror(errno));
    if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode))
        pbx_die(PBX_EXIT_USAGE, "%s `%s` is a directory", what, path);
    pbx_buf_init(&b, max);
    while ((n = read(fd, chunk, sizeof(chunk))) != 0) {
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            pbx_die(PBX_EXIT_USAGE, "cannot read %s `%s`: %s", what, path, strerror(errno));
        if (pbx_buf_append(&b, chunk, (size_t)n) < 0)
            pbx_die(PBX_EXIT_USAGE, "%s `%s` is larger than its limit of %" PRIu64 " bytes", what,
                    path, max);
    }
    if (fd != STDIN_FILENO)
        close(fd);
    return pbx_buf_steal(&b, len);
}

static void write_stream(enum pbx_stream stream, const char *data, size_t len, void *arg)
{
    int fd = stream == PBX_STREAM_STDOUT ? STDOUT_FILENO : STDERR_FILENO;

    (void)arg;
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

static int exit_status(const struct pbx_exec_result *res)
{
    switch (res->status) {
    case PBX_STATUS_OK:
    case PBX_STATUS_ERROR:
        return res->has_exit_code ? res->exit_code : 1;
    case PBX_STATUS_TIMEOUT:
        return PBX_EXIT_TIMEOUT;
    case PBX_STATUS_REJECTED:
        return PBX_EXIT_REJECTED;
    case PBX_STATUS_MEMORY_LIMIT:
        return 128 + 9;
    case PBX_STATUS_KILLED:
        return 128 + res->signal;
    }
    return PBX_EXIT_FAILURE;
}

static void save_files(const struct pbx_exec_result *res, const char *dir)
{
    for (size_t i = 0; i < res->nfiles; i++) {
        const struct pbx_file_out *f = &res->files[i];
        char *path;
        int fd;

        if (f->error != NULL) {
            fprintf(stderr, "pybox: returned file `%s`: %s\n", f->name, f->error);
            continue;
        }
        path = xasprintf("%s/%s", dir, f->name);
        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
        if (fd < 0) {
            fprintf(stderr, "pybox: returned file `%s` not saved: %s: %s\n", f->name, path,
                    strerror(errno));
        } else {
            if (write(fd, f->data ? f->data : "", f->size) != (ssize_t)f->size)
                fprintf(stderr, "pybox: returned file `%s`: short write to %s\n", f->name, path);
            close(fd);
        }
        free(path);
    }
}

static bool env_true(const char *name)
{
    const char *v = getenv(name);

    return v != NULL &&
           (strcmp(v, "1") == 0 || strcasecmp(v, "true") == 0 || strcasecmp(v, "yes") == 0);
}

static void set_limit(struct pbx_limits *l, const char *assignment, const char *origin)
{
    struct pbx_error *err = NULL;

    if (pbx_limits_set(l, assignment, &err) < 0)
        pbx_usage_error("run", "%s: %s", origin, err->msg);
}

static void set_seconds(struct pbx_limits *l, const char *value, const char *origin)
{
    char *a = xasprintf("wall=%s", value);

    set_limit(l, a, origin);
    free(a);
}

static void set_memory(struct pbx_limits *l, const char *value, const char *origin)
{
    char *a = xasprintf("memory=%sM", value);

    set_limit(l, a, origin);
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
};

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
    bool cpu_explicit = false;
    uint32_t default_cpu;
    char *code;
    size_t code_len;
    char *stdin_data = NULL;
    int status;
    int c;

    pbx_engine_config_default(&cfg);
    pbx_exec_request_init(&req);
    default_cpu = req.limits.cpu_ms;
    if (getenv("PYBOX_TIMEOUT") != NULL)
        set_seconds(&req.limits, getenv("PYBOX_TIMEOUT"), "PYBOX_TIMEOUT");
    if (getenv("PYBOX_MEMORY_MB") != NULL)
        set_memory(&req.limits, getenv("PYBOX_MEMORY_MB"), "PYBOX_MEMORY_MB");
    if (getenv("PYBOX_LIMITS") != NULL) {
        char *all = xstrdup(getenv("PYBOX_LIMITS"));
        char *save = NULL;

        for (char *t = strtok_r(all, " ,", &save); t != NULL; t = strtok_r(NULL, " ,", &save)) {
            set_limit(&req.limits, t, "PYBOX_LIMITS");
            if (strncmp(t, "cpu=", 4) == 0)
                cpu_explicit = true;
        }
        free(all);
    }
    req.allow_all_imports = env_true("PYBOX_ALLOW_ALL_IMPORTS");

    opterr = 0;
    optind = 1;
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
                pbx_usage_error("run", "too many --file options");
            file_args[nfiles++] = optarg;
            break;
        case OPT_RETURN:
            if (nreturn == MAX_ARGS_FILES)
                pbx_usage_error("run", "too many --return options");
            if (!pbx_engine_check_name(optarg, &err))
                pbx_usage_error("run", "--return: %s", err->msg);
            returns[nreturn++] = optarg;
            break;
        case OPT_OUT:
            out_dir = optarg;
            break;
        case OPT_TIMEOUT:
            set_seconds(&req.limits, optarg, "--timeout");
            break;
        case OPT_MEMORY:
            set_memory(&req.limits, optarg, "--memory");
            break;
        case OPT_LIMIT:
            set_limit(&req.limits, optarg, "--limit");
            if (strncmp(optarg, "cpu=", 4) == 0)
                cpu_explicit = true;
            break;
        case OPT_MAIN:
            req.main_mode = true;
            break;
        case OPT_JSON:
            json = true;
            break;
        case OPT_ALLOW_ALL:
            req.allow_all_imports = true;
            break;
        case OPT_PRELOAD:
            cfg.preload = true;
            break;
        case ':':
            pbx_usage_error("run", "option `%s` needs a value", argv[optind - 1]);
        default:
            pbx_usage_error("run", "unknown option `%s`", argv[optind - 1]);
        }
    }
    /* CPU time follows a longer wall time unless it was set on its own. */
    if (!cpu_explicit && req.limits.wall_ms > default_cpu)
        req.limits.cpu_ms = req.limits.wall_ms;
    if (optind < argc)
        code_path = argv[optind++];
    if (optind < argc)
        pbx_usage_error("run", "unexpected argument `%s` (script arguments are not supported)",
                        argv[optind]);
    if (code_path == NULL) {
        if (isatty(STDIN_FILENO))
            pbx_usage_error("run", "no script given: pass FILE, or - to read it from stdin");
        code_path = "-";
    }
    if (stdin_path != NULL && strcmp(stdin_path, "-") == 0 && strcmp(code_path, "-") == 0)
        pbx_usage_error("run", "the code and --stdin cannot both come from stdin");

    code = slurp(code_path, req.limits.code_bytes, &code_len, "script");
    req.code = code;
    req.code_len = code_len;
    if (stdin_path != NULL) {
        stdin_data = slurp(stdin_path, req.limits.stdin_bytes, &req.stdin_len, "stdin file");
        req.stdin_data = stdin_data;
    }
    for (size_t i = 0; i < nfiles; i++) {
        const char *eq = strchr(file_args[i], '=');
        char *name;

        if (eq == NULL || eq == file_args[i] || eq[1] == '\0')
            pbx_usage_error("run", "--file `%s` is not NAME=PATH", file_args[i]);
        name = xstrndup(file_args[i], (size_t)(eq - file_args[i]));
        if (!pbx_engine_check_name(name, &err))
            pbx_usage_error("run", "--file: %s", err->msg);
        files[i].name = name;
        files[i].data = slurp(eq + 1, req.limits.input_file_bytes, &files[i].size, "input file");
    }
    req.files = files;
    req.nfiles = nfiles;
    req.return_files = returns;
    req.nreturn = nreturn;
    if (!json)
        req.on_output = write_stream;

    if (pbx_engine_start(&cfg, &engine, &err) < 0)
        pbx_die(PBX_EXIT_FAILURE, "%s", err->msg);
    if (pbx_engine_execute(engine, &req, &res, &err) < 0) {
        pbx_engine_free(engine);
        if (err->code == PBX_E_INVAL || err->code == PBX_E_TOO_LARGE)
            pbx_die(PBX_EXIT_USAGE, "%s", err->msg);
        pbx_die(PBX_EXIT_FAILURE, "%s", err->msg);
    }
    pbx_engine_free(engine);

    status = exit_status(&res);
    if (json) {
        json_t *o = pbx_exec_result_to_json(&res);
        char *text = json_dumps(o, PBX_JSON_FLAGS);

        puts(text);
        free(text);
        json_decref(o);
    } else {
        if (res.stdout_truncated)
            fprintf(stderr, "pybox: stdout was truncated at %" PRIu64 " bytes\n",
                    req.limits.stdout_bytes);
        if (res.stderr_truncated)
            fprintf(stderr, "pybox: stderr was truncated at %" PRIu64 " bytes\n",
                    req.limits.stderr_bytes);
        if (res.status == PBX_STATUS_TIMEOUT || res.status == PBX_STATUS_MEMORY_LIMIT ||
            res.status == PBX_STATUS_KILLED ||
            (res.error != NULL &&
             strcmp(json_string_value(json_object_get(res.error, "type")),
                    "ResultNotSerializable") == 0 &&
             res.stderr_len == 0))
            fprintf(stderr, "pybox: %s\n",
                    json_string_value(json_object_get(res.error, "message")));
        else if (req.main_mode && res.status == PBX_STATUS_OK) {
            char *text =
                json_dumps(res.result ? res.result : json_null(), JSON_COMPACT | JSON_ENCODE_ANY);

            puts(text);
            free(text);
        }
        save_files(&res, out_dir);
    }
    fflush(stdout);
    pbx_exec_result_release(&res);
    for (size_t i = 0; i < nfiles; i++) {
        free((void *)files[i].name);
        free((void *)files[i].data);
    }
    free(stdin_data);
    free(code);
    return status;
}
