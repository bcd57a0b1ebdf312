/* --jail-ids and PYBOX_JAIL_IDS: the jail id range of the commands that start an engine. */
#include <stdlib.h>

#include "cli/cli.h"
#include "common/cleanup.h"
#include "common/xalloc.h"
#include "sandbox/uidmap.h"
#include "common/banned.h"

int pbx__cli_jail_ids(const char *spec, uint32_t *base, uint32_t *count, bool *is_auto,
                      struct pbx_error **err)
{
    cleanup_free struct pbx_uidmap_host *host = NULL;
    uint32_t b;
    uint32_t c;
    bool a;

    if (pbx_uidmap_parse_spec(spec, &a, &b, &c, err) < 0)
        return -1;
    /* auto is checked when the engine starts: it always finds a range or says why not. */
    if (!a) {
        host = xcalloc(1, sizeof(*host));
        if (pbx_uidmap_host_read(host, err) < 0 || pbx_uidmap_check(host, b, c, err) < 0)
            return pbx_error_prefix(err, "`%s`", spec);
    }
    *base = b;
    *count = c;
    *is_auto = a;
    return 0;
}
