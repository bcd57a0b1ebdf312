/*
 * The internal error contract (docs/design/error-handling.md).
 *
 * A fallible function is `int f(..., struct pbx_error **err)`: it returns >= 0
 * on success and leaves *err untouched; on failure it returns < 0 and sets *err.
 *
 * A code is either a positive errno value (a system call failed) or one of the
 * pybox-specific codes below, all >= 1000.  Numbers are stable: a code is never
 * renumbered or reused; a retired one becomes PBX_E_OBSOLETEnnnn.  None of this
 * is libpybox's public API (include/pybox/pybox.h has its own codes, which
 * src/common/errtable.h pairs with these).
 */
#ifndef PBX_COMMON_ERROR_H
#define PBX_COMMON_ERROR_H

/* XX(name, number, message) */
#define PBX_ERRNO_MAP(XX)                                        \
    XX(INVAL, 1000, "invalid argument")                          \
    XX(NOMEM, 1001, "out of memory")                             \
    XX(TOO_LARGE, 1002, "input exceeds its limit")               \
    XX(SANDBOX, 1003, "the sandbox could not be set up")         \
    XX(ENGINE, 1004, "the execution engine failed")              \
    XX(PROTO, 1005, "malformed message between pybox processes") \
    XX(UNSUPPORTED, 1006, "not supported on this machine")       \
    XX(NOTFOUND, 1007, "not found")                              \
    XX(POLICY, 1008, "refused by policy")                        \
    XX(GONE, 1009, "the session has ended")                      \
    XX(BUSY, 1010, "a call is running")

enum pbx_code {
#define PBX_XX_ENUM(name, num, msg) PBX_E_##name = num,
    PBX_ERRNO_MAP(PBX_XX_ENUM)
#undef PBX_XX_ENUM
};

/*
 * A heap-allocated error: `code` as above, `msg` a human-readable sentence
 * fragment with context prepended on the way up.  Owned by whoever holds the
 * pointer; release it with pbx_error_free().
 */
struct pbx_error {
    int code;  /* errno value or enum pbx_code */
    char *msg; /* "context: context: cause", never NULL */
};

/* The message for `code` (static storage, never NULL). Thread-safe. */
const char *pbx_strerror(int code);

/* The symbolic name of `code`, e.g. "PBX_E_TOO_LARGE" or "ENOENT". Thread-safe. */
const char *pbx_err_name(int code);

/* Free *err and set it to NULL; a NULL *err is fine. */
void pbx_error_free(struct pbx_error **err);

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
#define PBX_ASSERT(cond)                                \
    do {                                                \
        if (!(cond))                                    \
            pbx_assert_fail(#cond, __FILE__, __LINE__); \
    } while (0)

/* Defensive branches that should never be taken (sqlite's ALWAYS/NEVER). */
#define ALWAYS(x) (x)
#define NEVER(x)  (x)

_Noreturn void pbx_assert_fail(const char *expr, const char *file, int line);

#endif
