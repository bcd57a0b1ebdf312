/*
 * pybox error codes.
 *
 * A code is either a positive errno value (a system call failed) or one of the
 * pybox-specific codes below, all >= 1000.  Numbers are stable: a code is never
 * renumbered or reused; a retired one becomes PBX_E_OBSOLETEnnnn.
 */
#ifndef PYBOX_ERROR_H
#define PYBOX_ERROR_H

#ifdef __cplusplus
extern "C" {
#endif

#ifndef PBX_EXPORT
#    define PBX_EXPORT __attribute__((visibility("default")))
#endif

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
    XX(POLICY, 1008, "refused by policy")

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
PBX_EXPORT const char *pbx_strerror(int code);

/* The symbolic name of `code`, e.g. "PBX_E_TOO_LARGE" or "ENOENT". Thread-safe. */
PBX_EXPORT const char *pbx_err_name(int code);

/* Free *err and set it to NULL; a NULL *err is fine. */
PBX_EXPORT void pbx_error_free(struct pbx_error **err);

#ifdef __cplusplus
}
#endif
#endif
