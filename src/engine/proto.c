/* Framing of the messages between supervisor, zygote and cells. */
#include <string.h>

#include "common/xalloc.h"
#include "engine/proto.h"
#include "common/banned.h"

const char *pbx__proto_file_state_text(uint32_t state)
{
    switch (state) {
    case PBX_FILE_OK:
        return NULL;
    case PBX_FILE_NOT_FOUND:
        return "not found";
    case PBX_FILE_NOT_REGULAR:
        return "not a regular file";
    case PBX_FILE_SYMLINK:
        return "is a symbolic link";
    case PBX_FILE_TOO_LARGE:
        return "file too large";
    case PBX_FILE_BAD_NAME:
        return "invalid file name";
    case PBX_FILE_UNREADABLE:
    default:
        return "could not be read";
    }
}

bool pbx__proto_get_bytes(struct pbx_proto_reader *r, size_t n, const uint8_t **data)
{
    if (n > r->left)
        return false;
    *data = r->p;
    r->p += n;
    r->left -= n;
    return true;
}

bool pbx__proto_get_u32(struct pbx_proto_reader *r, uint32_t *v)
{
    const uint8_t *p;

    if (!pbx__proto_get_bytes(r, sizeof(*v), &p))
        return false;
    memcpy(v, p, sizeof(*v));
    return true;
}

bool pbx__proto_get_u64(struct pbx_proto_reader *r, uint64_t *v)
{
    const uint8_t *p;

    if (!pbx__proto_get_bytes(r, sizeof(*v), &p))
        return false;
    memcpy(v, p, sizeof(*v));
    return true;
}

bool pbx__proto_get_string(struct pbx_proto_reader *r, size_t max, const uint8_t **s, uint32_t *len)
{
    uint32_t n;

    if (!pbx__proto_get_u32(r, &n) || n > max)
        return false;
    if (!pbx__proto_get_bytes(r, n, s))
        return false;
    *len = n;
    return true;
}

void pbx__proto_put_bytes(struct pbx_proto_writer *w, const void *p, size_t n)
{
    if (w->len + n > w->alloc) {
        size_t alloc = w->alloc ? w->alloc : 4096;

        while (alloc < w->len + n)
            alloc *= 2;
        w->data = xrealloc(w->data, alloc);
        w->alloc = alloc;
    }
    if (n)
        memcpy(w->data + w->len, p, n);
    w->len += n;
}

void pbx__proto_put_u32(struct pbx_proto_writer *w, uint32_t v)
{
    pbx__proto_put_bytes(w, &v, sizeof(v));
}

void pbx__proto_put_u64(struct pbx_proto_writer *w, uint64_t v)
{
    pbx__proto_put_bytes(w, &v, sizeof(v));
}

void pbx__proto_put_string(struct pbx_proto_writer *w, const char *s, size_t n)
{
    pbx__proto_put_u32(w, (uint32_t)n);
    pbx__proto_put_bytes(w, s, n);
}
