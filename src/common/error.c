/* The error contract: heap errors with context, and the table of internal codes. */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/error.h"
#include "common/xalloc.h"
#include "common/banned.h"

const char *pbx_strerror(int code)
{
    switch (code) {
#define PBX_XX_MSG(name, num, msg) \
    case num:                      \
        return msg;
        PBX_ERRNO_MAP(PBX_XX_MSG)
#undef PBX_XX_MSG
    default:
        return code > 0 && code < 1000
                   ? strerrordesc_np(code) ? strerrordesc_np(code) : "unknown error"
                   : "unknown error";
    }
}

const char *pbx_err_name(int code)
{
    const char *name;

    switch (code) {
#define PBX_XX_NAME(name, num, msg) \
    case num:                       \
        return "PBX_E_" #name;
        PBX_ERRNO_MAP(PBX_XX_NAME)
#undef PBX_XX_NAME
    default:
        name = code > 0 && code < 1000 ? strerrorname_np(code) : NULL;
        return name ? name : "PBX_E_UNKNOWN";
    }
}

void pbx_error_free(struct pbx_error **err)
{
    if (err == NULL || *err == NULL)
        return;
    free((*err)->msg);
    free(*err);
    *err = NULL;
}

int pbx_error_set(struct pbx_error **err, int code, const char *fmt, ...)
{
    va_list ap;
    char *msg;
    struct pbx_error *e;

    if (code == INT_MIN)
        code = PBX_E_ENGINE;
    if (code < 0)
        code = -code;
    if (code == 0)
        code = PBX_E_ENGINE;
    if (err == NULL)
        return -code;
    va_start(ap, fmt);
    msg = xvasprintf(fmt, ap);
    va_end(ap);
    if (code < 1000) {
        char *full = xasprintf("%s: %s", msg, pbx_strerror(code));

        free(msg);
        msg = full;
    }
    e = xmalloc(sizeof(*e));
    e->code = code;
    e->msg = msg;
    PBX_ASSERT(*err == NULL);
    *err = e;
    return -code;
}

int pbx_error_prefix(struct pbx_error **err, const char *fmt, ...)
{
    va_list ap;
    char *ctx;
    char *msg;

    PBX_ASSERT(err != NULL && *err != NULL);
    va_start(ap, fmt);
    ctx = xvasprintf(fmt, ap);
    va_end(ap);
    msg = xasprintf("%s: %s", ctx, (*err)->msg);
    free(ctx);
    free((*err)->msg);
    (*err)->msg = msg;
    return -(*err)->code;
}

void pbx_assert_fail(const char *expr, const char *file, int line)
{
    char buf[512];
    int n = snprintf(buf, sizeof(buf), "pybox: assertion failed: %s (%s:%d)\n", expr, file, line);

    if (n > 0)
        (void)!write(STDERR_FILENO, buf, (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf) - 1);
    abort();
}
