/*
 * The internal error contract (docs/design/error-handling.md).
 *
 * A fallible function is `int f(..., struct pbx_error **err)`: it returns >= 0
 * on success and leaves *err untouched; on failure it returns < 0 and sets *err.
 */
#ifndef PBX_COMMON_ERROR_H
#define PBX_COMMON_ERROR_H

#include "pybox/error.h"

/*
 * Set *err to a new error with `code` and a printf-style message; when `code`
 * is an errno value its strerror() is appended.  Returns -abs(code), or
 * -PBX_E_ENGINE when code is 0, so call sites read `return pbx_error_set(err, errno, ...)`.
 * A NULL err is allowed: the error is then dropped.
 */
int pbx_error_set(struct pbx_error **err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * Prepend "context: " to (*err)->msg; returns -(*err)->code for chaining.
 * *err must hold an error.
 */
int pbx_error_prefix(struct pbx_error **err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Abort with a message: a broken invariant in a sandbox is a security bug. */
#define PBX_ASSERT(cond)                                 \
    do {                                                 \
        if (!(cond))                                     \
            pbx__assert_fail(#cond, __FILE__, __LINE__); \
    } while (0)

/* Defensive branches that should never be taken (sqlite's ALWAYS/NEVER). */
#define ALWAYS(x) (x)
#define NEVER(x)  (x)

_Noreturn void pbx__assert_fail(const char *expr, const char *file, int line);

#endif
