/* UTF-8 well-formedness, as RFC 3629 defines it, and repair of text that is not. */
#include <stdint.h>
#include <string.h>

#include "common/utf8.h"
#include "common/xalloc.h"
#include "common/banned.h"

/* The length of the well-formed sequence at s[0..left), or 0 when there is none. */
static size_t sequence(const unsigned char *s, size_t left)
{
    unsigned char c = s[0];
    unsigned char lo = 0x80;
    unsigned char hi = 0xbf;
    size_t n;

    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        n = 2;
    else if (c >= 0xe0 && c <= 0xef)
        n = 3;
    else if (c >= 0xf0 && c <= 0xf4)
        n = 4;
    else
        return 0;
    if (left < n)
        return 0;
    /* The second byte's range excludes overlong forms, surrogates and beyond U+10FFFF. */
    if (c == 0xe0)
        lo = 0xa0;
    else if (c == 0xed)
        hi = 0x9f;
    else if (c == 0xf0)
        lo = 0x90;
    else if (c == 0xf4)
        hi = 0x8f;
    if (s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++) {
        if (s[i] < 0x80 || s[i] > 0xbf)
            return 0;
    }
    return n;
}

bool pbx_utf8_valid(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;

    while (i < len) {
        size_t n = sequence(p + i, len - i);

        if (n == 0)
            return false;
        i += n;
    }
    return true;
}

char *pbx_utf8_sanitize(const char *s, size_t len, size_t *outlen)
{
    static const char replacement[] = "\xef\xbf\xbd";
    const unsigned char *p = (const unsigned char *)s;
    char *out = xmalloc(len * 3 + 1);
    size_t o = 0;
    size_t i = 0;

    while (i < len) {
        size_t n = sequence(p + i, len - i);

        if (n == 0) {
            memcpy(out + o, replacement, 3);
            o += 3;
            i++;
            continue;
        }
        memcpy(out + o, p + i, n);
        o += n;
        i += n;
    }
    out[o] = '\0';
    if (outlen != NULL)
        *outlen = o;
    return out;
}

size_t pbx_utf8_partial_tail(const char *s, size_t len)
{
    for (size_t k = 1; k <= 3 && k <= len; k++) {
        unsigned char c = (unsigned char)s[len - k];
        size_t need;

        if (c < 0x80)
            return 0;
        if (c < 0xc0)
            continue; /* a continuation byte: its lead is further back */
        need = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : 2;
        return need > k ? k : 0;
    }
    return 0;
}
