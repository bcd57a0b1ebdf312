/* Diagnostics on stderr. */
#include <stdarg.h>
#include <stdio.h>
#include <unistd.h>

#include "common/log.h"
#include "common/banned.h"

static enum pbx_log_level current = PBX_LOG_WARN;

void pbx_log_set_level(enum pbx_log_level level)
{
    current = level;
}

void pbx_log(enum pbx_log_level level, const char *fmt, ...)
{
    static const char *const names[] = {"error", "warning", "info", "debug"};
    char line[1024];
    va_list ap;
    int n;
    int m;

    if (level > current)
        return;
    n = snprintf(line, sizeof(line), "pybox: %s: ", names[level]);
    va_start(ap, fmt);
    m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (m < 0)
        return;
    n += m;
    if ((size_t)n > sizeof(line) - 2)
        n = sizeof(line) - 2;
    line[n++] = '\n';
    /* One write(2) per line so lines from threads and processes never interleave. */
    (void)!write(STDERR_FILENO, line, (size_t)n);
}
