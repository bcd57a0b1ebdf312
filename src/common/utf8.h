/* UTF-8 checks for text that comes from clients and from user code. */
#ifndef PBX_COMMON_UTF8_H
#define PBX_COMMON_UTF8_H

#include <stdbool.h>
#include <stddef.h>

/* Whether `s` is well-formed UTF-8 (no overlong forms, no surrogates, at most U+10FFFF). */
bool pbx_utf8_valid(const char *s, size_t len);

/*
 * A copy of `s` that is well-formed UTF-8: every byte that does not belong to
 * a well-formed sequence becomes U+FFFD (NUL bytes are kept).  The copy is
 * NUL-terminated; its length goes to *outlen when that is not NULL.  The
 * caller frees it.
 */
char *pbx_utf8_sanitize(const char *s, size_t len, size_t *outlen);

/*
 * How many bytes at the end of [s, s+len) begin a UTF-8 character whose
 * other bytes have not come yet (0 to 3): what a reader of output as it
 * arrives holds back, so that it never cuts a character in two.
 */
size_t pbx_utf8_partial_tail(const char *s, size_t len);

#endif
