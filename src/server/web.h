/*
 * The docs page, the playground and the API reference: static files embedded
 * in the binary at build time (cmake/embed_web.cmake), so a server with no
 * internet serves them as they were built.
 */
#ifndef PBX_SERVER_WEB_H
#define PBX_SERVER_WEB_H

#include <stddef.h>

struct pbx_web_asset {
    const char *name;          /* file name under src/server/web/ */
    const char *content_type;  /* the Content-Type to send */
    const unsigned char *data; /* its bytes (static storage) */
    size_t len;                /* their count */
    const char *etag;          /* quoted strong ETag, from the file's SHA-256 */
};

/*
 * The asset served at `url` ("/" is index.html, "/docs" docs.html,
 * "/assets/NAME" the file NAME), or NULL when `url` names none.  The result is
 * static; the function is thread-safe.
 */
const struct pbx_web_asset *pbx__web_lookup(const char *url);

/* The Content-Security-Policy every asset is served with. */
extern const char pbx__web_csp[];

#endif
