/* libFuzzer driver: both dialects of the execution request parser. */
#include <stdint.h>
#include <stdlib.h>

#include "server/request.h"
#include "common/banned.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const struct pbx_request_caps caps = {
        .max_files = 2, .max_file_bytes = 4096, .max_return = 4, .max_stdin = 4096};
    struct pbx_http_request r;
    struct pbx_error *err = NULL;
    const char *etype = NULL;

    if (pbx__request_parse_compat((const char *)data, size, &caps, &r, &etype, &err) == 0)
        pbx__request_release(&r);
    pbx_error_free(&err);
    if (pbx__request_parse_v1((const char *)data, size, &caps, &r, &etype, &err) == 0)
        pbx__request_release(&r);
    pbx_error_free(&err);
    return 0;
}
