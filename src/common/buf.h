/*
 * Capped byte buffers for untrusted input (sandbox output, request bodies).
 * A buffer never grows past `max`; pbx_buf_append() refuses what would not
 * fit, pbx_buf_append_trunc() keeps the prefix that fits and raises the
 * `truncated` flag.  The data is always NUL-terminated (not counted in len).
 */
#ifndef PBX_COMMON_BUF_H
#define PBX_COMMON_BUF_H

#include <stdbool.h>
#include <stddef.h>

struct pbx_buf {
    char *data;     /* owned, NUL-terminated, NULL until the first append */
    size_t len;     /* bytes held */
    size_t alloc;   /* bytes allocated */
    size_t max;     /* the cap on len */
    bool truncated; /* something was dropped by pbx_buf_append_trunc() */
};

void pbx_buf_init(struct pbx_buf *b, size_t max);
void pbx_buf_release(struct pbx_buf *b);

/* Append all of [p, p+n) or nothing: returns -PBX_E_TOO_LARGE past the cap. */
int pbx_buf_append(struct pbx_buf *b, const void *p, size_t n);

/* Append what fits of [p, p+n); returns the number of bytes kept. */
size_t pbx_buf_append_trunc(struct pbx_buf *b, const void *p, size_t n);

/* Take the data out (caller frees); the buffer is empty afterwards. Never NULL. */
char *pbx_buf_steal(struct pbx_buf *b, size_t *len);

#endif
