/* Capped byte buffers. */
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/xalloc.h"
#include "common/error.h"
#include "common/banned.h"

void pbx_buf_init(struct pbx_buf *b, size_t max)
{
    memset(b, 0, sizeof(*b));
    b->max = max;
}

void pbx_buf_release(struct pbx_buf *b)
{
    free(b->data);
    pbx_buf_init(b, b->max);
}

static void grow(struct pbx_buf *b, size_t need)
{
    size_t alloc = b->alloc ? b->alloc : 256;

    if (need + 1 <= b->alloc)
        return;
    while (alloc < need + 1)
        alloc *= 2;
    b->data = xrealloc(b->data, alloc);
    b->alloc = alloc;
}

int pbx_buf_append(struct pbx_buf *b, const void *p, size_t n)
{
    if (n > b->max - b->len)
        return -PBX_E_TOO_LARGE;
    grow(b, b->len + n);
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

size_t pbx_buf_append_trunc(struct pbx_buf *b, const void *p, size_t n)
{
    size_t room = b->max - b->len;

    if (n > room) {
        b->truncated = true;
        n = room;
    }
    if (pbx_buf_append(b, p, n) < 0)
        return 0;
    return n;
}

char *pbx_buf_steal(struct pbx_buf *b, size_t *len)
{
    char *d = b->data ? b->data : xstrdup("");

    if (len)
        *len = b->len;
    b->data = NULL;
    b->len = 0;
    b->alloc = 0;
    return d;
}
