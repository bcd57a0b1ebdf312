/* pybox: the command table. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "common/log.h"
#include "engine/zygote.h"
#include "pybox/version.h"
#include "common/banned.h"

struct command {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *summary;
};

static const struct command commands[] = {
    {"serve", pbx_cmd_serve, "serve the Python Sandbox API over HTTP"},
    {"run", pbx_cmd_run, "run a Python script in the sandbox, here or on a server (--server)"},
    {"repl", pbx_cmd_repl, "an interactive Python prompt in a sandbox session (or --jsonl)"},
    {"doctor", pbx_cmd_doctor, "show which isolation features are in force on this machine"},
    {"mcp", pbx_cmd_mcp, "serve the Model Context Protocol over stdio (agents' code tool)"},
    {"keys", pbx_cmd_keys, "manage API keys and their policies (in the store)"},
    {"audit", pbx_cmd_audit, "print the newest records of the store's audit log"},
};

static void usage(FILE *out)
{
    fprintf(out, "usage: pybox COMMAND [OPTIONS]\n\n"
                 "pybox runs untrusted Python in a Linux kernel sandbox and returns its output.\n\n"
                 "Commands:\n");
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        fprintf(out, "  %-8s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "\nOptions:\n"
                 "  -h, --help     show this help; `pybox COMMAND --help` for a command\n"
                 "  --version      print the version\n\n"
                 "Environment: PYBOX_LOG=error|warning|info|debug sets how much pybox logs.\n\n"
                 "Exit statuses of `pybox run`: the script's own status; 124 after a timeout;\n"
                 "125 when pybox itself failed; 126 when policy rejected the code; 128+N when\n"
                 "the script was killed by signal N (137 for the memory limit); 2 on bad usage.\n");
}

noreturn void pbx_die(int status, const char *fmt, ...)
{
    va_list ap;

    fputs("pybox: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(status);
}

noreturn void pbx_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;

    fputs("pybox: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " (see `pybox %s%s--help`)\n", cmd ? cmd : "", cmd ? " " : "");
    exit(PBX_EXIT_USAGE);
}

int main(int argc, char **argv)
{
    const char *level = getenv("PYBOX_LOG");

    if (argc >= 2 && strcmp(argv[1], PBX_ZYGOTE_ARG) == 0)
        pbx_zygote_main(argc, argv);
    if (level != NULL)
        pbx_log_set_level(strcmp(level, "debug") == 0   ? PBX_LOG_DEBUG
                          : strcmp(level, "info") == 0  ? PBX_LOG_INFO
                          : strcmp(level, "error") == 0 ? PBX_LOG_ERROR
                                                        : PBX_LOG_WARN);
    if (argc < 2) {
        usage(stderr);
        return PBX_EXIT_USAGE;
    }
    if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "version") == 0) {
        printf("pybox %s\n", PBX_VERSION_STRING);
        return 0;
    }
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        if (strcmp(argv[1], commands[i].name) == 0)
            return commands[i].fn(argc - 1, argv + 1);
    }
    pbx_usage_error(NULL, "unknown command `%s`", argv[1]);
}
