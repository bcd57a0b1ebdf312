/* The embedded docs page, playground and API reference (see web.h). */
#include <string.h>

#include "server/web.h"
#include "web_assets.h"
#include "common/banned.h"

/*
 * Scripts and styles come only from this server's own files: no inline
 * script, no eval, no third-party origin.  Images may also be blob: and data:
 * URLs, which is how the playground shows the images an execution returned;
 * an SVG shown through <img> cannot run scripts.  connect-src 'self' keeps the
 * page talking to the server that served it and nothing else.
 */
const char pbx__web_csp[] = "default-src 'none'; script-src 'self'; style-src 'self'; "
                            "img-src 'self' blob: data:; connect-src 'self'; "
                            "base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

static const struct pbx_web_asset *find(const char *name)
{
    for (size_t i = 0; pbx_web_assets[i].name != NULL; i++) {
        if (strcmp(pbx_web_assets[i].name, name) == 0)
            return &pbx_web_assets[i];
    }
    return NULL;
}

const struct pbx_web_asset *pbx__web_lookup(const char *url)
{
    if (strcmp(url, "/") == 0)
        return find("index.html");
    if (strcmp(url, "/docs") == 0)
        return find("docs.html");
    if (strncmp(url, "/assets/", 8) == 0 && strchr(url + 8, '/') == NULL)
        return find(url + 8);
    return NULL;
}
